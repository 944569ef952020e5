"""Debug mode: slow callbacks, PYTHONASYNCIODEBUG, source tracebacks."""
import asyncio
import logging
import os
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def test_set_get_debug(loop):
    assert loop.get_debug() is False
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def test_slow_callback_warning(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    def slow():
        time.sleep(0.03)

    loop.call_soon(slow)
    loop.call_soon(loop.stop)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_forever()
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert len(msgs) == 1
    assert msgs[0].startswith("Executing <Handle ")
    assert "slow()" in msgs[0]
    assert " took " in msgs[0] and msgs[0].endswith(" seconds")


def test_slow_task_step_warning_names_task(loop, caplog):
    loop.set_debug(True)
    loop.slow_callback_duration = 0.01

    async def slow_coro():
        time.sleep(0.03)

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_until_complete(slow_coro())
    msgs = [r.getMessage() for r in caplog.records
            if r.name == "asyncio" and r.getMessage().startswith("Executing")]
    assert len(msgs) == 1
    assert msgs[0].startswith("Executing <Task ")
    assert "slow_coro()" in msgs[0]


def test_no_slow_callback_warning_without_debug(loop, caplog):
    loop.slow_callback_duration = 0.001
    loop.call_soon(time.sleep, 0.01)
    loop.call_soon(loop.stop)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.run_forever()
    assert [r for r in caplog.records if r.name == "asyncio"] == []


def test_debug_source_traceback_in_handler_context(loop):
    loop.set_debug(True)
    contexts = []
    loop.set_exception_handler(lambda lp, c: contexts.append(c))

    def boom():
        raise ValueError

    h = loop.call_soon(boom)       # <- this line is the last frame
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert sorted(contexts[0]) == ["exception", "handle", "message", "source_traceback"]
    frame = contexts[0]["source_traceback"][-1]
    assert frame.filename == __file__ and frame.name == "test_debug_source_traceback_in_handler_context"
    assert "h = loop.call_soon(boom)" in frame.line
    assert h._source_traceback[-1].lineno == frame.lineno


def test_debug_timer_source_traceback(loop):
    loop.set_debug(True)
    h = loop.call_later(10, lambda: None)   # <- last frame
    assert "h = loop.call_later(10" in h._source_traceback[-1].line
    h2 = loop.call_at(loop.time() + 10, lambda: None)   # <- last frame
    assert "h2 = loop.call_at(" in h2._source_traceback[-1].line
    h.cancel()
    h2.cancel()


def test_debug_task_source_traceback(loop):
    loop.set_debug(True)

    async def coro():
        pass

    t = loop.create_task(coro())   # <- last frame
    assert "t = loop.create_task(coro())" in t._source_traceback[-1].line
    h = loop.call_soon_threadsafe(lambda: None)   # <- last frame
    assert "h = loop.call_soon_threadsafe(" in h._source_traceback[-1].line
    loop.run_until_complete(t)


def test_debug_call_soon_from_c_callback(loop):
    """call_soon() reached from C code only (a task step run by the loop):
    asyncio's sys._getframe(1) must not fail in debug mode."""
    loop.set_debug(True)

    async def main():
        await asyncio.sleep(0)
        return "done"

    assert loop.run_until_complete(main()) == "done"


def test_debug_cancelled_handle_repr_keeps_callback(loop):
    loop.set_debug(True)

    def cb():
        pass

    h = loop.call_soon(cb)
    h.cancel()
    assert "cancelled" in repr(h) and "cb()" in repr(h)


def test_debug_default_handler_logs_handle_traceback(loop, caplog):
    """In debug mode the default handler adds where the running handle was
    created ('Handle created at')."""
    loop.set_debug(True)

    def cb():
        loop.call_exception_handler({"message": "custom"})

    loop.call_soon(cb)
    loop.call_soon(loop.stop)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.run_forever()
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert len(msgs) == 1
    assert msgs[0].startswith("custom\nhandle_traceback: Handle created at (most recent call last):")


def test_debug_coroutine_origin_tracking(loop):
    loop.set_debug(True)
    depths = []

    async def main():
        depths.append(sys.get_coroutine_origin_tracking_depth())

    before = sys.get_coroutine_origin_tracking_depth()
    loop.run_until_complete(main())
    assert depths[0] > 0
    assert sys.get_coroutine_origin_tracking_depth() == before


_ENV_SCRIPT = r"""
import asyncio, sys
sys.path.insert(0, {root!r})
import zcloop
loop = {factory}
print(loop.get_debug())
async def main():
    return asyncio.get_running_loop().get_debug()
print(loop.run_until_complete(main()))
loop.close()
"""


@pytest.mark.parametrize("factory", ["asyncio.SelectorEventLoop()", "zcloop.new_event_loop()"],
                         ids=["asyncio", "zcloop"])
@pytest.mark.parametrize("env", ["1", ""])
def test_pythonasynciodebug_env(factory, env):
    root = os.path.dirname(HERE)
    script = _ENV_SCRIPT.format(root=root, factory=factory)
    environ = dict(os.environ, PYTHONASYNCIODEBUG=env)
    out = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    want = "True" if env else "False"
    assert out.stdout.split() == [want, want]


def test_python_dev_mode_enables_debug():
    root = os.path.dirname(HERE)
    script = _ENV_SCRIPT.format(root=root, factory="zcloop.new_event_loop()")
    env = dict(os.environ)
    env.pop("PYTHONASYNCIODEBUG", None)
    out = subprocess.run([sys.executable, "-X", "dev", "-c", script], env=env,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "True"]


def test_set_debug_while_running(loop):
    async def main():
        loop.set_debug(True)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return sys.get_coroutine_origin_tracking_depth()

    assert loop.run_until_complete(main()) > 0
    assert loop.get_debug()

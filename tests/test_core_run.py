"""run_forever / run_until_complete / stop / close, futures and tasks,
executors, async generators, and the asyncio.run-style entry points."""
import asyncio
import concurrent.futures
import contextlib
import contextvars
import gc
import os
import subprocess
import sys
import textwrap
import threading
import warnings

import pytest

import zcloop

cv = contextvars.ContextVar("cv", default="unset")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------
# run_forever / run_until_complete / stop / close

def test_run_until_complete_coroutine(loop):
    async def main(x):
        await asyncio.sleep(0)
        return x * 2

    assert loop.run_until_complete(main(21)) == 42
    assert not loop.is_running()


def test_run_until_complete_future(loop):
    fut = loop.create_future()
    loop.call_soon(fut.set_result, "done")
    assert loop.run_until_complete(fut) == "done"


def test_run_until_complete_exception_propagates(loop):
    async def main():
        await asyncio.sleep(0)
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        loop.run_until_complete(main())
    fut = loop.create_future()
    loop.call_soon(fut.set_exception, OSError(3, "x"))
    with pytest.raises(OSError):
        loop.run_until_complete(fut)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_run_until_complete_base_exception_in_coroutine(loop, exc):
    async def main():
        await asyncio.sleep(0)
        raise exc()

    with pytest.raises(exc):
        loop.run_until_complete(main())
    assert not loop.is_running()


def test_run_until_complete_stopped_early(loop):
    async def main():
        loop.stop()
        await asyncio.sleep(10)

    coro = main()
    with pytest.raises(RuntimeError, match="^Event loop stopped before Future completed.$"):
        loop.run_until_complete(coro)
    # The task is still pending; cancel it so the loop closes cleanly.
    for t in asyncio.all_tasks(loop):
        t.cancel()
    loop.run_until_complete(asyncio.sleep(0))


def test_run_until_complete_foreign_future(loop_factory):
    other = loop_factory()
    loop = loop_factory()
    try:
        fut = other.create_future()
        with pytest.raises(ValueError, match="The future belongs to a different loop"):
            loop.run_until_complete(fut)
    finally:
        other.close()
        loop.close()


def test_run_until_complete_not_awaitable(loop):
    with pytest.raises(TypeError):
        loop.run_until_complete(42)


def test_is_running_and_running_loop(loop):
    seen = []

    def cb():
        seen.append((loop.is_running(), asyncio.get_running_loop() is loop,
                     asyncio.get_event_loop() is loop))
        loop.stop()

    assert not loop.is_running()
    loop.call_soon(cb)
    loop.run_forever()
    assert seen == [(True, True, True)]
    assert not loop.is_running()
    assert asyncio._get_running_loop() is None


@pytest.mark.parametrize("how", ["run_forever", "run_until_complete"])
def test_run_forever_already_running(loop, how):
    # One refused call per run (see test_run_while_another_loop_running).
    errors = []
    coro = asyncio.sleep(0)

    def cb():
        try:
            if how == "run_forever":
                loop.run_forever()
            else:
                loop.run_until_complete(coro)
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    coro.close()    # refused before it was wrapped in a task
    assert errors == ["This event loop is already running"]


@pytest.mark.parametrize("how", ["run_forever", "run_until_complete"])
def test_run_while_another_loop_running(loop_factory, how):
    # One refused call per outer run: CPython 3.13.0's run_forever() clears
    # the running loop in its cleanup even when its setup refused to run.
    outer = loop_factory()
    inner = loop_factory()
    errors = []

    def cb():
        try:
            if how == "run_forever":
                inner.run_forever()
            else:
                inner.run_until_complete(inner.create_future())
        except RuntimeError as exc:
            errors.append(str(exc))
        outer.stop()

    try:
        outer.call_soon(cb)
        outer.run_forever()
    finally:
        inner.close()
        outer.close()
    assert errors == ["Cannot run the event loop while another loop is running"]


def test_run_on_closed_loop(loop_factory):
    loop = loop_factory()
    loop.close()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.run_forever()
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.run_until_complete(coro)
    coro.close()
    with pytest.raises(RuntimeError, match="^Event loop is closed$"):
        loop.create_task(coro)


def test_stop_before_run_forever_runs_one_iteration(loop):
    seen = []
    loop.call_soon(seen.append, 1)
    loop.call_soon(lambda: loop.call_soon(seen.append, "next-iteration"))
    loop.stop()
    loop.run_forever()
    assert seen == [1]
    # The stop flag was consumed: a second run_forever needs its own stop.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [1, "next-iteration"]


def test_stop_twice_and_run_again(loop):
    loop.stop()
    loop.stop()
    loop.run_forever()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert loop.run_until_complete(asyncio.sleep(0, "again")) == "again"


def test_stop_does_not_wait_for_timers(loop):
    seen = []
    loop.call_later(3600, seen.append, "far")
    loop.call_soon(loop.stop)
    loop.run_forever()      # returns promptly (hang guard: pytest-timeout)
    assert seen == []


def test_close_running_loop(loop):
    errors = []

    def cb():
        try:
            loop.close()
        except RuntimeError as exc:
            errors.append(str(exc))
        loop.stop()

    loop.call_soon(cb)
    loop.run_forever()
    assert errors == ["Cannot close a running event loop"]
    assert not loop.is_closed()


def test_close_idempotent(loop):
    assert not loop.is_closed()
    loop.close()
    assert loop.is_closed()
    loop.close()
    assert loop.is_closed()


def test_close_with_pending_work(loop_factory):
    loop = loop_factory()
    ran = []
    loop.call_soon(ran.append, 1)
    loop.call_later(0.001, ran.append, 2)
    loop.call_later(3600, ran.append, 3)
    r, w = __import__("socket").socketpair()
    try:
        loop.add_reader(r, ran.append, 4)
        ev = threading.Event()
        fut = loop.run_in_executor(None, ev.wait, 5)
        loop.run_until_complete(asyncio.sleep(0))
        loop.call_soon(ran.append, 5)
        loop.close()        # pending callbacks, timers, executor work, a reader
        ev.set()
        loop.close()
        assert loop.is_closed()
        assert 4 not in ran and 5 not in ran and 3 not in ran
        with pytest.raises(RuntimeError, match="Event loop is closed"):
            loop.call_soon(ran.append, 6)
    finally:
        r.close()
        w.close()


def test_close_with_pending_task_no_error(loop_factory, recwarn):
    loop = loop_factory()

    async def forever():
        await asyncio.sleep(3600)

    task = loop.create_task(forever())
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    assert not task.done()
    # Destroying the pending task logs "Task was destroyed but it is pending!"
    # on both loops; consume it here so it doesn't hit another test.
    task._log_destroy_pending = False


def test_unclosed_loop_resource_warning(loop_factory):
    loop = loop_factory()
    loop.run_until_complete(asyncio.sleep(0))
    r = repr(loop)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        del loop
        gc.collect()
    msgs = [str(x.message) for x in w if issubclass(x.category, ResourceWarning)]
    assert msgs == [f"unclosed event loop {r}"]


def test_loop_repr(loop, is_zcloop):
    r = repr(loop)
    assert "running=False" in r and "closed=False" in r and "debug=False" in r
    loop.close()
    assert "closed=True" in repr(loop)


# ----------------------------------------------------------------------
# Futures and tasks

def test_create_future(loop):
    fut = loop.create_future()
    assert isinstance(fut, asyncio.Future)
    assert fut.get_loop() is loop
    assert not fut.done()
    fut.cancel()


def test_create_task_name_and_context(loop):
    ctx = contextvars.Context()
    ctx.run(cv.set, "task-ctx")

    async def main():
        return cv.get()

    t = loop.create_task(main(), name="my-task")
    assert isinstance(t, asyncio.Task)
    assert t.get_name() == "my-task"
    assert t.get_loop() is loop
    t2 = loop.create_task(main(), context=ctx)
    t3 = loop.create_task(main())
    assert t3.get_name().startswith("Task-")
    loop.run_until_complete(asyncio.gather(t, t2, t3))
    assert (t.result(), t2.result(), t3.result()) == ("unset", "task-ctx", "unset")


def test_task_factory(loop):
    calls = []

    def factory(lp, coro, **kwargs):
        calls.append((lp, sorted(kwargs)))
        return asyncio.Task(coro, loop=lp, **kwargs)

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def main():
        return 1

    # From 3.14 the factory gets name= (and context=) as given and the loop
    # names nothing itself; before, it gets context= only and the loop calls
    # set_name().  asyncio 3.13.3 passed name= too (undone in 3.13.4).
    gets_name = sys.version_info >= (3, 14) or (
        sys.version_info[:3] == (3, 13, 3) and not isinstance(loop, zcloop.Loop))
    t = loop.create_task(main(), name="n")
    assert t.get_name() == "n"
    ctx = contextvars.Context()
    t2 = loop.create_task(main(), context=ctx)
    loop.run_until_complete(asyncio.gather(t, t2))
    assert calls == [(loop, ["name"] if gets_name else []), (loop, ["context"])]

    def bare_factory(lp, coro, **kwargs):
        calls.append((lp, sorted(kwargs)))
        return asyncio.Task(coro, loop=lp)          # ignores name= / context=
    loop.set_task_factory(bare_factory)
    t3 = loop.create_task(main(), name="m")
    t4 = loop.create_task(main())
    loop.run_until_complete(asyncio.gather(t3, t4))
    assert (t3.get_name() == "m") is not gets_name
    if isinstance(loop, zcloop.Loop) or sys.version_info[:2] != (3, 13):
        # asyncio 3.13.0 (up to 3.13.2 at least) names it 'None' (gh-130033)
        assert t4.get_name().startswith("Task-")
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None
    with pytest.raises(TypeError, match="task factory must be a callable or None"):
        loop.set_task_factory(1)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager_task_factory is 3.12+")
def test_eager_task_factory(loop):
    seen = []

    async def main():
        seen.append("started")
        return 5

    loop.set_task_factory(asyncio.eager_task_factory)

    async def outer():
        t = asyncio.create_task(main())
        seen.append("after-create")
        return await t

    assert loop.run_until_complete(outer()) == 5
    assert seen == ["started", "after-create"]


def test_task_cancel_and_gather(run):
    async def main():
        async def sleeper(d):
            await asyncio.sleep(d)
            return d

        t = asyncio.ensure_future(sleeper(3600))
        await asyncio.sleep(0)
        t.cancel()
        res = await asyncio.gather(t, sleeper(0.001), return_exceptions=True)
        return [type(r).__name__ if isinstance(r, BaseException) else r for r in res]

    assert run(main) == ["CancelledError", 0.001]


def test_wait_for_timeout(run):
    async def main():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.sleep(3600), 0.01)
        return "ok"

    assert run(main) == "ok"


# ----------------------------------------------------------------------
# Executors

def test_run_in_executor_default(run):
    async def main():
        loop = asyncio.get_running_loop()
        main_thread = threading.get_ident()
        r = await loop.run_in_executor(None, lambda a, b: (a + b, threading.get_ident()), 2, 3)
        return r[0], r[1] != main_thread

    assert run(main) == (5, True)


def test_run_in_executor_custom(run):
    async def main():
        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="custom") as ex:
            name = await loop.run_in_executor(ex, lambda: threading.current_thread().name)
        return name.startswith("custom")

    assert run(main) is True


def test_run_in_executor_exception(run):
    async def main():
        loop = asyncio.get_running_loop()
        with pytest.raises(ZeroDivisionError):
            await loop.run_in_executor(None, lambda: 1 / 0)
        return True

    assert run(main)


def test_run_in_executor_many(run):
    async def main():
        loop = asyncio.get_running_loop()
        futs = [loop.run_in_executor(None, pow, i, 2) for i in range(200)]
        return await asyncio.gather(*futs)

    assert run(main) == [i * i for i in range(200)]


def test_run_in_executor_after_shutdown(run):
    async def main():
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, int)
        await loop.shutdown_default_executor()
        with pytest.raises(RuntimeError, match="^Executor shutdown has been called$"):
            loop.run_in_executor(None, int)
        # An explicit executor still works.
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            return await loop.run_in_executor(ex, int, "7")

    assert run(main) == 7


def test_shutdown_default_executor_without_executor(run):
    async def main():
        loop = asyncio.get_running_loop()
        await loop.shutdown_default_executor()
        with pytest.raises(RuntimeError, match="^Executor shutdown has been called$"):
            loop.run_in_executor(None, int)
        return True

    assert run(main)


def test_shutdown_default_executor_waits(run):
    async def main():
        loop = asyncio.get_running_loop()
        done = []

        def work():
            import time
            time.sleep(0.05)
            done.append(1)

        loop.run_in_executor(None, work)
        await loop.shutdown_default_executor()
        return done

    assert run(main) == [1]


def test_set_default_executor(loop):
    with pytest.raises(TypeError, match="executor must be ThreadPoolExecutor"):
        loop.set_default_executor(object())
    ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mine")
    loop.set_default_executor(ex)

    async def main():
        return await loop.run_in_executor(None, lambda: threading.current_thread().name)

    try:
        assert loop.run_until_complete(main()).startswith("mine")
    finally:
        ex.shutdown()


def test_run_in_executor_on_closed_loop(loop_factory):
    loop = loop_factory()
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.run_in_executor(None, int)


def test_run_in_executor_coroutine_debug(loop):
    async def coro_func():
        pass

    loop.set_debug(True)
    with pytest.raises(TypeError, match=r"coroutines cannot be used with run_in_executor\(\)"):
        loop.run_in_executor(None, coro_func)


# ----------------------------------------------------------------------
# Async generators

def test_shutdown_asyncgens_finalizes(loop):
    events = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            events.append("finalized")
            await asyncio.sleep(0)
            events.append("after-await")

    async def main():
        g = agen()
        assert await g.__anext__() == 1
        return g        # keep a reference: left suspended in the generator

    g = loop.run_until_complete(main())
    assert events == []
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert events == ["finalized", "after-await"]
    del g


def test_asyncgen_finalizer_hook_on_gc(loop):
    events = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            events.append("finalized")

    async def main():
        g = agen()
        await g.__anext__()
        del g
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert events == ["finalized"]


def test_asyncgen_error_on_shutdown(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, c: contexts.append(c))

    async def agen():
        try:
            yield 1
        finally:
            raise ValueError("in finally")

    async def main():
        g = agen()
        await g.__anext__()
        return g

    g = loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert len(contexts) == 1
    assert sorted(contexts[0]) == ["asyncgen", "exception", "message"]
    assert contexts[0]["message"].startswith("an error occurred during closing of asynchronous generator")
    assert isinstance(contexts[0]["exception"], ValueError)
    del g


def test_asyncgen_firstiter_after_shutdown_warns(loop):
    async def agen():
        yield 1

    loop.run_until_complete(loop.shutdown_asyncgens())

    async def main():
        g = agen()
        with pytest.warns(ResourceWarning, match="was scheduled after loop.shutdown_asyncgens"):
            await g.__anext__()
        await g.aclose()

    loop.run_until_complete(main())


def test_asyncgen_hooks_restored(loop):
    before = sys.get_asyncgen_hooks()
    loop.run_until_complete(asyncio.sleep(0))
    assert sys.get_asyncgen_hooks() == before


# ----------------------------------------------------------------------
# Entry points: asyncio.run, asyncio.Runner, zcloop.run, zcloop.install

async def _which_loop():
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def test_zcloop_run():
    assert zcloop.run(_which_loop()) is zcloop.Loop
    assert asyncio._get_running_loop() is None


def test_zcloop_run_debug():
    async def main():
        return asyncio.get_running_loop().get_debug()

    assert zcloop.run(main(), debug=True) is True
    assert zcloop.run(main(), debug=False) is False


def test_zcloop_run_exception():
    async def main():
        raise LookupError("x")

    with pytest.raises(LookupError):
        zcloop.run(main())


def test_zcloop_run_cancels_leftover_tasks():
    cancelled = []

    async def child():
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def main():
        asyncio.create_task(child())
        await asyncio.sleep(0)

    zcloop.run(main())
    assert cancelled == [True]


def test_asyncio_runner_with_zcloop_factory():
    with asyncio.Runner(loop_factory=zcloop.new_event_loop) as runner:
        assert runner.run(_which_loop()) is zcloop.Loop
        assert isinstance(runner.get_loop(), zcloop.Loop)
        assert runner.run(_which_loop()) is zcloop.Loop


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.run(loop_factory=) is 3.12+")
def test_asyncio_run_loop_factory():
    assert asyncio.run(_which_loop(), loop_factory=zcloop.new_event_loop) is zcloop.Loop


@contextlib.contextmanager
def _policy_api():
    """Around asyncio's get/set_event_loop_policy(): deprecated from 3.14
    on (a DeprecationWarning each call), plain calls before."""
    if sys.version_info >= (3, 14):
        with pytest.deprecated_call():
            yield
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            yield


def test_install_then_asyncio_run():
    with _policy_api():
        old = asyncio.get_event_loop_policy()
    try:
        zcloop.install()
        with _policy_api():
            assert isinstance(asyncio.get_event_loop_policy(), zcloop.EventLoopPolicy)
        assert asyncio.run(_which_loop()) is zcloop.Loop
        loop = asyncio.new_event_loop()
        assert isinstance(loop, zcloop.Loop)
        loop.close()
    finally:
        with _policy_api():
            asyncio.set_event_loop_policy(old)
    assert asyncio.run(_which_loop()) is not zcloop.Loop


def _run_child(code, *python_args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, *python_args, "-c", textwrap.dedent(code)],
                          env=env, capture_output=True, text=True, timeout=60)


def test_import_and_entry_points_warn_nothing():
    """`-W error::DeprecationWarning`: importing zcloop, zcloop.run(), the
    loop_factory entry points, EventLoopPolicy and install() warn nothing on
    any version (3.14 deprecates asyncio.DefaultEventLoopPolicy, which the
    policy no longer names there, and asyncio.iscoroutinefunction, which
    the callback checks no longer call)."""
    done = _run_child("""
        import asyncio, signal, sys
        import zcloop

        async def main():
            loop = asyncio.get_running_loop()
            loop.set_debug(True)
            async def coro_fn():
                pass
            for call in (lambda: loop.call_soon(coro_fn),
                         lambda: loop.call_later(1, coro_fn),
                         lambda: loop.add_signal_handler(signal.SIGUSR1, coro_fn)):
                try:
                    call()
                except TypeError as exc:
                    assert "coroutines cannot be used" in str(exc), exc
                else:
                    raise AssertionError("a coroutine function was accepted")
            loop.add_signal_handler(signal.SIGUSR1, lambda: None)
            loop.remove_signal_handler(signal.SIGUSR1)
            return type(loop).__name__

        assert zcloop.run(main()) == "Loop"
        with asyncio.Runner(loop_factory=zcloop.new_event_loop) as runner:
            assert runner.run(main()) == "Loop"
        if sys.version_info >= (3, 12):
            assert asyncio.run(main(), loop_factory=zcloop.new_event_loop) == "Loop"
        policy = zcloop.EventLoopPolicy()
        loop = policy.new_event_loop()
        assert isinstance(loop, zcloop.Loop)
        loop.close()
        zcloop.install()
        assert asyncio.run(main()) == "Loop"
        print("ok")
        """, "-W", "error::DeprecationWarning")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    assert done.stderr == ""


def test_without_asyncio_policy_system():
    """A Python whose asyncio has no policy classes any more (3.14 plans
    their removal for 3.16), simulated by deleting them before the import:
    zcloop imports, run() / new_event_loop() / loop_factory work, and only
    EventLoopPolicy and install() fail, with a message that says what to
    use instead."""
    done = _run_child("""
        import asyncio, asyncio.events
        for module, name in ((asyncio.events, "_BaseDefaultEventLoopPolicy"),
                             (asyncio, "DefaultEventLoopPolicy")):
            vars(module).pop(name, None)
        import zcloop

        async def main():
            return type(asyncio.get_running_loop()).__name__

        assert zcloop.run(main()) == "Loop"
        with asyncio.Runner(loop_factory=zcloop.new_event_loop) as runner:
            assert runner.run(main()) == "Loop"
        loop = zcloop.new_event_loop()
        assert loop.run_until_complete(main()) == "Loop"
        loop.close()
        assert not hasattr(zcloop, "EventLoopPolicy")
        assert "EventLoopPolicy" not in zcloop.__all__
        ns = {}
        exec("from zcloop import *", ns)
        assert "run" in ns and "EventLoopPolicy" not in ns
        try:
            zcloop.EventLoopPolicy
        except AttributeError as exc:
            print("policy:", exc)
        try:
            zcloop.install()
        except RuntimeError as exc:
            print("install:", exc)
        try:
            zcloop.no_such_name
        except AttributeError as exc:
            print("other:", exc)
        """)
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    for key, name in (("policy", "zcloop.EventLoopPolicy"), ("install", "zcloop.install()")):
        assert lines[key].startswith(f"{name} needs asyncio's event loop policy system"), lines
        assert "loop_factory=zcloop.new_event_loop" in lines[key]
    assert lines["other"] == "module 'zcloop' has no attribute 'no_such_name'"


@pytest.mark.asyncio
async def test_pytest_asyncio_integration():
    """The conftest hook runs @pytest.mark.asyncio tests on both loops."""
    assert await asyncio.sleep(0, 3) == 3


@pytest.mark.asyncio(loop_factories=["zcloop"])
async def test_pytest_asyncio_zcloop_only():
    assert isinstance(asyncio.get_running_loop(), zcloop.Loop)

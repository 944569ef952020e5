"""zcloop's loop type, features() and ring feature switches."""
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import types

import pytest

import zcloop
from zcloop import _ring

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

RING_SWITCHES = ["defer_taskrun", "single_issuer", "coop_taskrun", "submit_all",
                 "registered_ring_fd"]


def test_loop_is_not_an_asyncio_loop_subclass():
    assert not issubclass(zcloop.Loop, asyncio.BaseEventLoop)
    assert not issubclass(zcloop.Loop, asyncio.SelectorEventLoop)
    assert issubclass(zcloop.Loop, asyncio.AbstractEventLoop)
    assert issubclass(zcloop.Loop, _ring.RingLoop)
    loop = zcloop.new_event_loop()
    try:
        assert type(loop) is zcloop.Loop
        assert isinstance(loop, asyncio.AbstractEventLoop)
    finally:
        loop.close()


def test_ringloop_is_an_extension_type():
    RingLoop = _ring.RingLoop
    # Compiled methods, not Python functions.
    for name in ("run_forever", "run_until_complete", "call_soon", "call_later",
                 "call_soon_threadsafe", "add_reader", "close", "time"):
        meth = getattr(RingLoop, name)
        assert type(meth).__name__ in ("method_descriptor", "cython_function_or_method"), name
        assert not isinstance(meth, types.FunctionType), name
    # A static (non-heap) type without an instance __dict__.
    assert not RingLoop.__flags__ & (1 << 9)        # Py_TPFLAGS_HEAPTYPE
    assert "__dict__" not in dir(RingLoop)
    loop = RingLoop()
    try:
        assert not hasattr(loop, "__dict__")
        with pytest.raises(AttributeError):
            loop.some_new_attribute = 1
    finally:
        loop.close()
    assert _ring.__file__.endswith(".so")


def test_features():
    info = zcloop.features()
    assert set(info) >= {"setup_flags", "ops", "ext_arg", "disabled", "send_zc",
                         "sendmsg_zc", "sq_entries", "cq_entries", "kernel"}
    assert "CQSIZE" in info["setup_flags"]
    for op in ("READ", "POLL_ADD", "ASYNC_CANCEL", "ACCEPT", "CONNECT", "SEND", "RECV",
               "SENDMSG", "RECVMSG"):
        assert info["ops"][op] is True, op
    assert info["sq_entries"] >= 1 and info["cq_entries"] >= info["sq_entries"]
    assert info["kernel"] == os.uname().release
    assert info["disabled"] == sorted(filter(None, os.environ.get(
        "ZCLOOP_DISABLE_FEATURES", "").split(",")))
    json.dumps(info)        # plain data
    # This machine (kernel 6.x) gets the full setup.
    if "SINGLE_ISSUER" in info["setup_flags"]:
        assert "DEFER_TASKRUN" in info["setup_flags"] or "COOP_TASKRUN" in info["setup_flags"]


def test_loop_features_method():
    loop = zcloop.Loop()
    try:
        f = loop.features()
        assert f["setup_flags"] == zcloop.features()["setup_flags"]
    finally:
        loop.close()


def test_unknown_feature_name():
    with pytest.raises(ValueError, match="unknown zcloop feature.*nope.*known: "):
        zcloop.Loop(disable_features={"nope"})
    with pytest.raises(ValueError):
        zcloop.Loop(disable_features=["defer_taskrun", "DEFER_TASKRUN"])


EXPECTED_FLAGS = {
    "defer_taskrun": lambda f: "DEFER_TASKRUN" not in f,
    "single_issuer": lambda f: "SINGLE_ISSUER" not in f and "DEFER_TASKRUN" not in f,
    "coop_taskrun": lambda f: "COOP_TASKRUN" not in f,
    "submit_all": lambda f: "SUBMIT_ALL" not in f,
    "registered_ring_fd": lambda f: True,
}


def basic_scenario(loop):
    """Timers, call_soon_threadsafe from a thread, an fd watcher, the
    executor, a signal handler and a task: returns what happened."""
    a, b = socket.socketpair()
    got = []
    try:
        async def main():
            lp = asyncio.get_running_loop()
            # timers
            await asyncio.sleep(0.001)
            lp.call_later(0.002, got.append, "later")
            lp.call_soon(got.append, "soon")
            await asyncio.sleep(0.005)
            # cross-thread wakeup while blocked
            fut = lp.create_future()
            threading.Timer(0.01, lp.call_soon_threadsafe, (fut.set_result, "thread")).start()
            got.append(await asyncio.wait_for(fut, 20))
            # fd watcher
            rfut = lp.create_future()
            lp.add_reader(a, lambda: rfut.done() or rfut.set_result(a.recv(10)))
            b.send(b"data")
            got.append(await asyncio.wait_for(rfut, 20))
            assert lp.remove_reader(a)
            # executor
            got.append(await lp.run_in_executor(None, str, 7))
            # signal
            sfut = lp.create_future()
            lp.add_signal_handler(signal.SIGUSR1, lambda: sfut.done() or sfut.set_result("sig"))
            os.kill(os.getpid(), signal.SIGUSR1)
            got.append(await asyncio.wait_for(sfut, 20))
            lp.remove_signal_handler(signal.SIGUSR1)
            return "ok"

        got.append(loop.run_until_complete(main()))
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
        a.close()
        b.close()
    return got


BASIC_RESULT = ["soon", "later", "thread", b"data", "7", "sig", "ok"]


def test_basic_scenario_reference():
    assert basic_scenario(asyncio.SelectorEventLoop()) == BASIC_RESULT
    assert basic_scenario(zcloop.Loop()) == BASIC_RESULT


@pytest.mark.timeout(60)
@pytest.mark.parametrize("feature", RING_SWITCHES)
def test_disabled_feature_basic_scenario(feature):
    loop = zcloop.Loop(disable_features={feature})
    f = loop.features()
    assert feature in f["disabled"]
    assert EXPECTED_FLAGS[feature](f["setup_flags"]), f["setup_flags"]
    assert basic_scenario(loop) == BASIC_RESULT


@pytest.mark.timeout(60)
def test_all_ring_switches_disabled():
    loop = zcloop.Loop(disable_features=set(RING_SWITCHES))
    assert loop.features()["setup_flags"] == ["CQSIZE"]
    assert basic_scenario(loop) == BASIC_RESULT


@pytest.mark.timeout(60)
@pytest.mark.parametrize("feature", ["defer_taskrun", "single_issuer"])
def test_disabled_feature_threadsafe_hammer(feature):
    loop = zcloop.Loop(disable_features={feature})
    n = 4 * 2000
    count = [0]
    done = loop.create_future()

    def cb():
        count[0] += 1
        if count[0] == n:
            done.set_result(None)

    def producer():
        for _ in range(2000):
            loop.call_soon_threadsafe(cb)

    try:
        threads = [threading.Thread(target=producer) for _ in range(4)]
        loop.call_soon(lambda: [t.start() for t in threads])
        loop.run_until_complete(done)
        for t in threads:
            t.join()
        assert count[0] == n
    finally:
        loop.close()


_ENV_SCRIPT = """
import json, zcloop, asyncio
loop = zcloop.new_event_loop()
print(json.dumps([loop.features()["setup_flags"], loop.features()["disabled"],
                  loop.run_until_complete(asyncio.sleep(0.001, "ran"))]))
loop.close()
"""


@pytest.mark.parametrize("value,absent", [
    ("defer_taskrun", "DEFER_TASKRUN"),
    ("single_issuer, submit_all", "SINGLE_ISSUER"),
    ("coop_taskrun,defer_taskrun,single_issuer", "COOP_TASKRUN"),
])
def test_env_disable_features(value, absent):
    env = dict(os.environ, PYTHONPATH=ROOT, ZCLOOP_DISABLE_FEATURES=value)
    out = subprocess.run([sys.executable, "-c", _ENV_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    flags, disabled, ran = json.loads(out.stdout)
    assert absent not in flags
    assert disabled == sorted(x.strip() for x in value.split(","))
    assert ran == "ran"


def test_env_disable_features_unknown():
    env = dict(os.environ, PYTHONPATH=ROOT, ZCLOOP_DISABLE_FEATURES="bogus")
    out = subprocess.run([sys.executable, "-c", _ENV_SCRIPT], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0
    assert "ValueError: unknown zcloop feature(s): bogus" in out.stderr

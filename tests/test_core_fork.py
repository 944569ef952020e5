"""Loops across fork(): the child makes its own loop; the parent's is intact."""
import asyncio
import os
import socket

import pytest

import zcloop

# Python >= 3.12 warns about fork() in a process with threads (pytest's, the
# executor threads of earlier tests); the children here only run a loop.
pytestmark = pytest.mark.filterwarnings(
    "ignore:This process .* is multi-threaded:DeprecationWarning")


def _in_child(fn):
    """Run fn() in a forked child; return (exit status, what it wrote)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:        # pragma: no cover - child
        os.close(r)
        code = 0
        try:
            msg = repr(fn())
        except BaseException as exc:
            msg = f"{type(exc).__name__}: {exc}"
            code = 1
        os.write(w, msg.encode())
        os._exit(code)
    os.close(w)
    chunks = []
    while True:
        data = os.read(r, 65536)
        if not data:
            break
        chunks.append(data)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode()


@pytest.mark.timeout(60)
def test_child_creates_its_own_loop(loop_factory):
    loop = loop_factory()
    try:
        assert loop.run_until_complete(asyncio.sleep(0.001, "parent")) == "parent"

        def child():
            loop.close()        # the inherited copy: closing must be safe
            lp = loop_factory()
            try:
                return lp.run_until_complete(asyncio.sleep(0.001, "child"))
            finally:
                lp.close()

        assert _in_child(child) == (0, "'child'")
        assert loop.run_until_complete(asyncio.sleep(0.001, "again")) == "again"
    finally:
        loop.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("disable", [set(), {"single_issuer"}], ids=["default", "no-single-issuer"])
def test_child_cannot_run_inherited_ring(disable):
    """Running the parent's zcloop loop in a fork child is refused (the ring
    memory is shared with the parent); the parent's loop keeps working, fd
    watchers included."""
    loop = zcloop.Loop(disable_features=disable)
    a, b = socket.socketpair()
    try:
        assert loop.run_until_complete(asyncio.sleep(0.001, 1)) == 1

        def child():
            loop.add_reader(a, lambda: None)
            coro = asyncio.sleep(0, "ran")
            try:
                return loop.run_until_complete(coro)
            finally:
                coro.close()

        code, msg = _in_child(child)
        assert code == 1
        assert msg.startswith("RuntimeError: this zcloop loop was created in another process")
        assert "fork()" in msg

        got = []
        loop.add_reader(b, lambda: got.append(b.recv(10)))
        a.send(b"hi")

        async def wait():
            while not got:
                await asyncio.sleep(0.001)

        loop.run_until_complete(asyncio.wait_for(wait(), 20))
        assert got == [b"hi"]
        loop.remove_reader(b)
    finally:
        loop.close()
        a.close()
        b.close()


@pytest.mark.timeout(60)
def test_child_cannot_run_never_run_inherited_loop():
    """Even a loop the parent never ran (its ring not yet enabled)."""
    loop = zcloop.new_event_loop()
    try:
        def child():
            coro = asyncio.sleep(0, "ran")
            try:
                return loop.run_until_complete(coro)
            finally:
                coro.close()

        code, msg = _in_child(child)
        assert code == 1 and "created in another process" in msg
        assert loop.run_until_complete(asyncio.sleep(0.001, "parent")) == "parent"
    finally:
        loop.close()

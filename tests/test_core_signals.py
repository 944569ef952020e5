"""Unix signal handlers: in-process (main thread) and in real subprocesses
(Ctrl-C, signal bursts)."""
import asyncio
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _restore_signals():
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)
    assert signal.set_wakeup_fd(-1) == -1, "a loop left its signal wakeup fd installed"


def test_signal_handler_runs(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, lambda *a: (got.append(a), loop.stop()), "x", 2)
    loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
    guard = loop.call_later(20, loop.stop)      # hang guard
    loop.run_forever()
    guard.cancel()
    assert got == [("x", 2)]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_signal_sent_while_loop_not_running(loop):
    """A signal that arrives between runs is handled at the next run."""
    got = []
    loop.add_signal_handler(signal.SIGUSR2, got.append, "late")
    os.kill(os.getpid(), signal.SIGUSR2)
    guard = loop.call_later(20, loop.stop)

    async def wait():
        while not got:
            await asyncio.sleep(0.001)

    loop.run_until_complete(wait())
    guard.cancel()
    assert got == ["late"]
    loop.remove_signal_handler(signal.SIGUSR2)


def test_signal_handler_replace(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "old")
    loop.add_signal_handler(signal.SIGUSR1, got.append, "new")

    async def main():
        os.kill(os.getpid(), signal.SIGUSR1)
        while not got:
            await asyncio.sleep(0.001)

    loop.run_until_complete(asyncio.wait_for(main(), 20))
    assert got == ["new"]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_handler_wakes_blocked_loop(loop):
    """The loop is blocked with nothing scheduled; a signal from another
    thread wakes it."""
    got = []
    loop.add_signal_handler(signal.SIGUSR1, lambda: (got.append(1), loop.stop()))
    t = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1))
    fut_guard = threading.Timer(20, lambda: loop.call_soon_threadsafe(loop.stop))
    loop.call_soon(t.start)
    fut_guard.start()
    try:
        loop.run_forever()
    finally:
        fut_guard.cancel()
        t.join()
    assert got == [1]
    loop.remove_signal_handler(signal.SIGUSR1)


def test_signal_handler_errors(loop):
    async def coro_func():
        pass

    errors = []

    def capture(fn):
        try:
            fn()
        except Exception as exc:
            errors.append((type(exc).__name__, str(exc)))

    capture(lambda: loop.add_signal_handler(signal.SIGUSR1, coro_func))
    coro = coro_func()
    capture(lambda: loop.add_signal_handler(signal.SIGUSR1, coro))
    coro.close()
    capture(lambda: loop.add_signal_handler("SIGUSR1", lambda: None))
    capture(lambda: loop.add_signal_handler(0, lambda: None))
    capture(lambda: loop.add_signal_handler(10_000, lambda: None))
    capture(lambda: loop.add_signal_handler(signal.SIGKILL, lambda: None))
    capture(lambda: loop.add_signal_handler(signal.SIGSTOP, lambda: None))
    capture(lambda: loop.remove_signal_handler("x"))
    capture(lambda: loop.remove_signal_handler(10_000))
    assert errors == [
        ("TypeError", "coroutines cannot be used with add_signal_handler()"),
        ("TypeError", "coroutines cannot be used with add_signal_handler()"),
        ("TypeError", "sig must be an int, not 'SIGUSR1'"),
        ("ValueError", "invalid signal number 0"),
        ("ValueError", "invalid signal number 10000"),
        ("RuntimeError", "sig 9 cannot be caught"),
        ("RuntimeError", "sig 19 cannot be caught"),
        ("TypeError", "sig must be an int, not 'x'"),
        ("ValueError", "invalid signal number 10000"),
    ]
    assert loop.remove_signal_handler(signal.SIGKILL) is False


def test_signal_handler_from_other_thread(loop):
    errors = []

    def other():
        try:
            loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        except RuntimeError as exc:
            errors.append(str(exc))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert errors == ["set_wakeup_fd only works in main thread of the main interpreter"]
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_signal_handler_closed_loop(loop_factory):
    loop = loop_factory()
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)


def test_close_removes_signal_handlers(loop_factory):
    loop = loop_factory()
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) == signal.default_int_handler


def test_remove_sigint_restores_default_int_handler(loop):
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    assert loop.remove_signal_handler(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_wakeup_fd_restored_after_run(loop):
    """zcloop installs its wakeup fd while running (so Ctrl-C wakes the
    ring) and must hand the previous one back."""
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        old = signal.set_wakeup_fd(w)
        assert old == -1
        loop.run_until_complete(asyncio.sleep(0.001))
        assert signal.set_wakeup_fd(-1) == w
    finally:
        os.close(r)
        os.close(w)


def test_foreign_wakeup_fd_left_alone(loop):
    """Someone else's wakeup fd (a GUI toolkit, another loop with signal
    handlers) keeps receiving signal bytes while the loop runs, as with
    asyncio's loop, which doesn't touch it without add_signal_handler()."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.set_blocking(w, False)
    got = []
    try:
        assert signal.set_wakeup_fd(w) == -1
        signal.signal(signal.SIGUSR1, lambda *a: got.append("py-handler"))

        async def main():
            os.kill(os.getpid(), signal.SIGUSR1)
            for _ in range(100):
                if got:
                    break
                await asyncio.sleep(0.001)

        loop.run_until_complete(main())
        assert got == ["py-handler"]
        assert os.read(r, 10) == bytes([signal.SIGUSR1])
        assert signal.set_wakeup_fd(-1) == w
    finally:
        signal.set_wakeup_fd(-1)
        os.close(r)
        os.close(w)


class _Boom(Exception):
    pass


def _raise_boom(*args):
    raise _Boom()


@pytest.mark.timeout(30)
def test_raising_python_signal_handler_keeps_loop_working(loop, caplog):
    """A Python-level signal handler that raises while the loop reaps
    completions (here: the signal byte and a call_soon_threadsafe wakeup
    complete in one batch) must not lose the rest of the batch: afterwards
    call_soon_threadsafe still wakes the loop (hang guard: the test timeout)
    and close() finds no operation left in flight.

    The main thread blocks in a C callback (lock.acquire, no bytecode runs
    after the signal), while another thread sends the signal to itself and
    calls call_soon_threadsafe, then releases the lock."""
    signal.signal(signal.SIGUSR1, _raise_boom)
    signal.siginterrupt(signal.SIGUSR1, False)
    lock = threading.Lock()
    lock.acquire()

    def other():
        time.sleep(0.05)        # the loop thread is in lock.acquire by now
        signal.pthread_kill(threading.get_ident(), signal.SIGUSR1)
        loop.call_soon_threadsafe(int)
        lock.release()

    t = threading.Thread(target=other)
    loop.call_soon(t.start)
    loop.call_soon(lock.acquire)
    # Stop in the next iteration, the one that reaps the batch.
    loop.call_soon(loop.call_soon, loop.stop)      # C callables: no bytecode runs
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        try:
            loop.run_forever()
        except _Boom:
            raised = True       # zcloop: out of run_forever, like KeyboardInterrupt
            loop.run_forever()  # the stop() still pending ends this run
        else:
            raised = False      # asyncio: the handler ran inside a callback
    t.join()
    logged = [r for r in caplog.records if r.exc_info and r.exc_info[0] is _Boom]
    assert raised or logged
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)

    fut = loop.create_future()
    threading.Timer(0.01, loop.call_soon_threadsafe, (fut.set_result, "woken")).start()
    assert loop.run_until_complete(fut) == "woken"
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        loop.close()
    assert [r.getMessage() for r in caplog.records] == []


# ----------------------------------------------------------------------
# Real subprocesses

_SIGINT_SCRIPTS = {
    "asyncio.run": """
import asyncio
async def main():
    print("ready", flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
""",
    "zcloop.run": """
import asyncio, zcloop
async def main():
    print("ready", flush=True)
    await asyncio.sleep(60)
zcloop.run(main())
""",
    "zcloop.run-future": """
import asyncio, zcloop
async def main():
    print("ready", flush=True)
    await asyncio.get_running_loop().create_future()   # no timer at all
zcloop.run(main())
""",
    "zcloop.run-foreign-wakeup-fd": """
import asyncio, os, signal, zcloop
r, w = os.pipe()
os.set_blocking(w, False)
signal.set_wakeup_fd(w)     # not zcloop's: Ctrl-C must still interrupt the wait
async def main():
    print("ready", flush=True)
    await asyncio.sleep(60)
zcloop.run(main())
""",
    "install+asyncio.run": """
import asyncio, zcloop
zcloop.install()
async def main():
    assert type(asyncio.get_running_loop()).__name__ == "Loop"
    print("ready", flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
""",
    "asyncio-run_until_complete": """
import asyncio
loop = asyncio.SelectorEventLoop()
async def main():
    print("ready", flush=True)
    await asyncio.sleep(60)
loop.run_until_complete(main())
""",
    "zcloop-run_until_complete": """
import asyncio, zcloop
loop = zcloop.new_event_loop()
async def main():
    print("ready", flush=True)
    await asyncio.sleep(60)
loop.run_until_complete(main())
""",
}


def _spawn(code):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _readline(proc, timeout=20):
    r, _, _ = select.select([proc.stdout], [], [], timeout)
    if not r:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"child did not answer in {timeout}s; stderr:\n{err}")
    return proc.stdout.readline()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", list(_SIGINT_SCRIPTS))
def test_ctrl_c_raises_keyboard_interrupt(kind):
    proc = _spawn(_SIGINT_SCRIPTS[kind])
    try:
        assert _readline(proc).strip() == "ready"
        time.sleep(0.05)        # let the loop block in its wait
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # Python re-raises SIGINT to die of it after an uncaught KeyboardInterrupt.
    assert proc.returncode == -signal.SIGINT, err
    assert err.rstrip().endswith("KeyboardInterrupt"), err
    # asyncio.run's traceback chains the main task's CancelledError; nothing
    # else (no loop error, no warning at shutdown) may show up.
    for bad in ("OSError", "RuntimeError", "Exception ignored", "Warning", "destroyed",
                "zcloop:"):
        assert bad not in err, err


_BURST_SCRIPT = """
import asyncio, os, signal, sys
import {mod}
SIG = signal.{sig}
count = 0
def on_burst_signal():
    global count
    count += 1
def on_sync():
    print("sync", count, flush=True)
async def main():
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(SIG, on_burst_signal)
    loop.add_signal_handler(signal.SIGUSR2, on_sync)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    # Keep the loop busy with timers too.
    async def ticker():
        while True:
            await asyncio.sleep(0.0005)
    t = asyncio.ensure_future(ticker())
    print("ready", flush=True)
    await stop.wait()
    t.cancel()
{runner}(main())
print("done", count, flush=True)
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("sig", ["SIGUSR1", "SIGRTMIN"])
@pytest.mark.parametrize("mod,runner", [("asyncio", "asyncio.run"), ("zcloop", "zcloop.run")],
                         ids=["asyncio", "zcloop"])
def test_signal_burst_none_lost(mod, runner, sig):
    """B bursts of N signals each into a single-threaded child.

    After each burst the parent sends SIGUSR2 twice, reading the child's
    handler count after each.  A SIGUSR2 may be delivered inside a burst
    signal's C handler and so overtake the last burst bytes in the wakeup
    fd, but by the time the child answers the first sync every burst signal
    has been delivered (pending signals are delivered before the interrupted
    code resumes) and its byte written, so the second sync's count covers
    the whole burst.  Standard signals coalesce: a burst of SIGUSR1 gives
    1..N handler calls, never 0.  Real-time signals queue: exactly N.
    """
    bursts, n = 30, 20
    proc = _spawn(_BURST_SCRIPT.format(mod=mod, runner=runner, sig=sig))
    signum = getattr(signal, sig)

    def sync():
        os.kill(proc.pid, signal.SIGUSR2)
        word, count = _readline(proc).split()
        assert word == "sync"
        return int(count)

    try:
        assert _readline(proc).strip() == "ready"
        last = 0
        per_burst = []
        for _ in range(bursts):
            for _ in range(n):
                os.kill(proc.pid, signum)
            sync()
            count = sync()
            per_burst.append(count - last)
            last = count
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.split() == ["done", str(last)]
    if sig == "SIGRTMIN":
        assert per_burst == [n] * bursts
    else:
        assert all(1 <= k <= n for k in per_burst), per_burst


# A Python child on its own loop, stopped with SIGINT by a parent that runs
# on the loop under test (uvloop's test_signals_sigint_* scenarios): the
# parent waits for a line, sends SIGINT, communicate()s.  The child runs
# the same kind of loop as the parent.  Run under pytest-timeout's SIGALRM,
# with a SIGCHLD handler on the parent's loop (asyncio's 3.11 SafeChildWatcher
# does that in uvloop's AIO test case) so both loops' signal handling and
# wakeup fds are in play.
_CHILD_LOOP = {"asyncio": "asyncio.SelectorEventLoop()", "zcloop": "zcloop.new_event_loop()"}

_SIGINT_CHILDREN = {
    # Blocked in Python code inside a callback: KeyboardInterrupt from there.
    "blocking-callback-stop": """
async def work():
    print("ready", flush=True)
    time.sleep(60)
try:
    loop.run_until_complete(work())
finally:
    loop.close()
""",
    # The callback catches it, and the loop goes on to a clean finish.
    "blocking-callback-continue": """
async def work():
    print("ready", flush=True)
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        print("caught", flush=True)
    await asyncio.sleep(0.05)
    print("done", flush=True)
try:
    loop.run_until_complete(work())
finally:
    loop.close()
""",
    # Waiting in the loop with a listening server; the finally closes it on
    # the same loop after the KeyboardInterrupt.
    "waiting-loop": """
srv = None
async def work():
    global srv
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    print("ready", flush=True)
loop.create_task(work())
try:
    loop.run_forever()
finally:
    srv.close()
    loop.run_until_complete(srv.wait_closed())
    loop.close()
""",
    # The same after a first run_until_complete() on that loop.
    "waiting-loop-second-run": """
srv = None
async def work():
    global srv
    srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
loop.run_until_complete(work())
print("ready", flush=True)
try:
    loop.run_forever()
finally:
    srv.close()
    loop.run_until_complete(srv.wait_closed())
    loop.close()
""",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("child", list(_SIGINT_CHILDREN))
def test_sigint_to_child_of_loop(loop_factory, child):
    kind = "zcloop" if loop_factory is not asyncio.SelectorEventLoop else "asyncio"
    code = ("import asyncio, time, zcloop\n"
            f"loop = {_CHILD_LOOP[kind]}\n"
            "asyncio.set_event_loop(loop)\n" + _SIGINT_CHILDREN[child])
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))

    async def parent():
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env)
        try:
            first = await asyncio.wait_for(proc.stdout.readline(), 20)
            time.sleep(0.1)         # as uvloop's test: the loop thread blocks
            proc.send_signal(signal.SIGINT)
            out, err = await asyncio.wait_for(proc.communicate(), 20)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        return first, out, err, proc.returncode

    loop = loop_factory()
    loop.add_signal_handler(signal.SIGCHLD, lambda: None)
    try:
        first, out, err, rc = loop.run_until_complete(parent())
    finally:
        loop.remove_signal_handler(signal.SIGCHLD)
        loop.close()
    err = err.decode()
    assert first == b"ready\n", err
    if child == "blocking-callback-continue":
        assert (out, rc) == (b"caught\ndone\n", 0), err
    else:
        assert out == b"", err
        assert rc == -signal.SIGINT and err.rstrip().endswith("KeyboardInterrupt"), err

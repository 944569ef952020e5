"""call_soon_threadsafe under load, waking a blocked loop, and loops run in
threads other than the one that created them."""
import asyncio
import collections
import logging
import threading

import pytest

import zcloop


@pytest.mark.timeout(60)
def test_call_soon_threadsafe_hammer(loop):
    """4 threads x 5000 calls while the loop also runs timers: every callback
    runs exactly once, and each thread's calls run in order."""
    nthreads, ncalls = 4, 5000
    counts = collections.Counter()
    order = collections.defaultdict(list)
    timer_ticks = []
    start = threading.Barrier(nthreads + 1)
    remaining = [nthreads * ncalls]
    done = loop.create_future()

    def cb(tid, i):
        counts[(tid, i)] += 1
        order[tid].append(i)
        remaining[0] -= 1
        if remaining[0] == 0:
            done.set_result(None)

    def tick():
        timer_ticks.append(1)
        if not done.done():
            loop.call_later(0.0005, tick)

    def producer(tid):
        start.wait()
        for i in range(ncalls):
            loop.call_soon_threadsafe(cb, tid, i)

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(nthreads)]
    for t in threads:
        t.start()

    async def main():
        loop.call_soon(tick)
        await loop.run_in_executor(None, start.wait)
        await done

    try:
        loop.run_until_complete(main())
    finally:
        for t in threads:
            t.join()
    assert len(counts) == nthreads * ncalls
    assert set(counts.values()) == {1}
    for tid in range(nthreads):
        assert order[tid] == list(range(ncalls))
    assert timer_ticks


@pytest.mark.timeout(30)
def test_call_soon_threadsafe_wakes_blocked_loop(loop):
    """The loop waits on a timer an hour away; another thread's
    call_soon_threadsafe must wake it (hang guard only: 20 s)."""
    results = []
    loop.call_later(3600, results.append, "timer")
    guard = loop.call_later(20, loop.stop)    # hang guard

    def other():
        results.append("thread-started")
        loop.call_soon_threadsafe(results.append, "woken")
        loop.call_soon_threadsafe(loop.stop)

    # Start the thread only once the loop is about to block.
    loop.call_soon(lambda: threading.Thread(target=other).start())
    loop.run_forever()
    guard.cancel()
    assert results == ["thread-started", "woken"]


@pytest.mark.timeout(30)
def test_call_soon_threadsafe_repeated_wakeups(loop):
    """Many separate wakeups, each while the loop is blocked."""
    got = []

    def worker():
        for i in range(200):
            ev = threading.Event()
            loop.call_soon_threadsafe(lambda i=i: (got.append(i), ev.set()))
            assert ev.wait(10)
        loop.call_soon_threadsafe(loop.stop)

    guard = loop.call_later(20, loop.stop)
    t = threading.Thread(target=worker)
    loop.call_soon(t.start)
    loop.run_forever()
    guard.cancel()
    t.join()
    assert got == list(range(200))


@pytest.mark.timeout(30)
def test_call_soon_threadsafe_future_from_thread(run):
    async def main():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        threading.Thread(target=lambda: loop.call_soon_threadsafe(fut.set_result, 99)).start()
        return await asyncio.wait_for(fut, 20)

    assert run(main) == 99


@pytest.mark.timeout(30)
def test_run_coroutine_threadsafe(run):
    async def main():
        loop = asyncio.get_running_loop()

        async def add(a, b):
            await asyncio.sleep(0)
            return a + b

        def worker():
            return asyncio.run_coroutine_threadsafe(add(1, 2), loop).result(20)

        return await loop.run_in_executor(None, worker)

    assert run(main) == 3


def test_call_soon_threadsafe_returns_handle(loop):
    h = loop.call_soon_threadsafe(lambda: None)
    assert not h.cancelled()
    h.cancel()
    assert h.cancelled()
    loop.call_soon(loop.stop)
    loop.run_forever()


def test_debug_non_threadsafe_call_from_other_thread(loop_factory):
    """In debug mode, call_soon/call_later from a non-loop thread while the
    loop runs raise RuntimeError (asyncio's _check_thread)."""
    loop = loop_factory()
    loop.set_debug(True)
    errors = []

    def other():
        for fn in (lambda: loop.call_soon(lambda: None),
                   lambda: loop.call_later(1, lambda: None),
                   lambda: loop.call_at(loop.time() + 1, lambda: None)):
            try:
                fn()
            except RuntimeError as exc:
                errors.append(str(exc))
        loop.call_soon_threadsafe(loop.stop)

    try:
        loop.call_soon(lambda: threading.Thread(target=other).start())
        loop.run_forever()
    finally:
        loop.close()
    assert errors == ["Non-thread-safe operation invoked on an event loop other "
                      "than the current one"] * 3


def test_non_debug_call_soon_from_other_thread_allowed(loop):
    """Without debug mode, there is no thread check (as in asyncio); the
    callback runs once the loop wakes up for another reason."""
    seen = []

    def other():
        loop.call_soon(seen.append, "unsafe")
        loop.call_soon_threadsafe(loop.stop)

    loop.call_soon(lambda: threading.Thread(target=other).start())
    loop.run_forever()
    if not seen:
        loop.call_soon(loop.stop)
        loop.run_forever()
    assert seen == ["unsafe"]


# ----------------------------------------------------------------------
# Loops run in another thread

@pytest.mark.timeout(30)
def test_loop_created_in_one_thread_run_in_another(loop_factory, caplog):
    """The common pattern: loop = new_event_loop(); Thread(target=loop.run_forever),
    then stop it from the main thread, join, and close it from the main thread
    (which cannot touch a SINGLE_ISSUER ring: close must still be clean and
    quiet)."""
    loop = loop_factory()
    t = threading.Thread(target=loop.run_forever)
    t.start()
    try:
        async def work():
            await asyncio.sleep(0.001)
            return threading.get_ident()

        fut = asyncio.run_coroutine_threadsafe(work(), loop)
        assert fut.result(20) == t.ident
        # Timers, executor and wakeups from the main thread all work.
        fut2 = asyncio.run_coroutine_threadsafe(_executor_roundtrip(), loop)
        assert fut2.result(20) == 42
    finally:
        loop.call_soon_threadsafe(loop.stop)
        t.join(20)
        assert not t.is_alive()
        with caplog.at_level(logging.DEBUG, logger="asyncio"):
            loop.close()
    assert loop.is_closed()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    # Another loop in this thread is unaffected.
    other = loop_factory()
    try:
        assert other.run_until_complete(asyncio.sleep(0.001, "ok")) == "ok"
    finally:
        other.close()


@pytest.mark.timeout(30)
def test_close_from_other_thread_while_owner_alive(loop_factory, caplog):
    """Run in the main thread, closed by a helper thread."""
    loop = loop_factory()
    loop.run_until_complete(asyncio.sleep(0.001))
    errors = []

    def closer():
        try:
            loop.close()
        except BaseException as exc:    # pragma: no cover - reported below
            errors.append(exc)

    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        t = threading.Thread(target=closer)
        t.start()
        t.join(20)
    assert errors == []
    assert loop.is_closed()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def _executor_roundtrip():
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, lambda: 42)


@pytest.mark.timeout(30)
def test_loop_run_in_two_threads_sequentially(loop_factory, is_zcloop):
    """A loop first run in thread A and later in thread B: asyncio allows it;
    zcloop's ring is SINGLE_ISSUER so it refuses with a clear RuntimeError
    (unless the ring has no SINGLE_ISSUER)."""
    loop = loop_factory()
    results = {}

    def run_in_thread(key):
        coro = asyncio.sleep(0, key)
        try:
            results[key] = loop.run_until_complete(coro)
        except RuntimeError as exc:
            coro.close()
            results[key] = exc

    try:
        # Thread B starts after A was joined: glibc may give B A's pthread
        # ident, so the check must not rely on it.
        for key in ("A", "B"):
            t = threading.Thread(target=run_in_thread, args=(key,))
            t.start()
            t.join(20)
        assert results["A"] == "A"
        single_issuer = is_zcloop and "SINGLE_ISSUER" in loop.features()["setup_flags"]
        if single_issuer:
            assert isinstance(results["B"], RuntimeError)
            msg = str(results["B"])
            assert "first run in another thread" in msg and "SINGLE_ISSUER" in msg
            # Refused before the coroutine was wrapped in a task.
            assert not asyncio.all_tasks(loop)
            assert not loop.is_running()
        else:
            assert results["B"] == "B"
    finally:
        loop.close()
    assert loop.is_closed()


@pytest.mark.timeout(30)
def test_loop_run_in_other_thread_without_single_issuer():
    loop = zcloop.Loop(disable_features={"single_issuer"})
    try:
        assert "SINGLE_ISSUER" not in loop.features()["setup_flags"]
        out = []
        for key in ("A", "B"):
            t = threading.Thread(target=lambda k=key: out.append(
                loop.run_until_complete(asyncio.sleep(0.001, k))))
            t.start()
            t.join(20)
        assert out == ["A", "B"]
    finally:
        loop.close()


@pytest.mark.timeout(30)
def test_one_loop_per_thread(loop_factory):
    """Several threads each running their own loop concurrently."""
    out = {}

    def worker(i):
        lp = loop_factory()
        try:
            async def main():
                await asyncio.sleep(0.01)
                fut = lp.run_in_executor(None, lambda: i * 10)
                return await fut
            out[i] = lp.run_until_complete(main())
        finally:
            lp.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert out == {i: i * 10 for i in range(6)}

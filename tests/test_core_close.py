"""Closing loops: no fd leak, no drain stall, no noise; unclosed loops warn."""
import asyncio
import gc
import logging
import os
import socket
import threading
import warnings

import pytest

import zcloop


def fd_count():
    return len(os.listdir("/proc/self/fd"))


def map_count():
    """Memory mappings: each ring is mmapped, a leaked ring shows here."""
    with open("/proc/self/maps") as f:
        return sum(1 for _ in f)


def quarantined():
    """Ring operations zcloop could not drain at close (kept forever)."""
    return len(zcloop._ring._quarantine)


@pytest.mark.timeout(120)
def test_no_fd_leak_create_close(loop_factory):
    gc.collect()
    before = fd_count(), map_count(), quarantined()
    for _ in range(2000):
        loop = loop_factory()
        loop.close()
    gc.collect()
    assert (fd_count(), map_count(), quarantined()) == before


@pytest.mark.timeout(120)
def test_no_fd_leak_running_loops(loop_factory):
    async def tiny(i):
        await asyncio.sleep(0)
        fut = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_soon(fut.set_result, i)
        return await fut

    gc.collect()
    before = fd_count(), map_count(), quarantined()
    for i in range(300):
        loop = loop_factory()
        assert loop.run_until_complete(tiny(i)) == i
        loop.close()
    gc.collect()
    assert (fd_count(), map_count(), quarantined()) == before


@pytest.mark.timeout(60)
def test_no_fd_leak_with_threadsafe_signals_executor(loop_factory):
    """Loops that used every internal fd: wakeup eventfd, signal socketpair,
    executor threads, an fd watcher."""
    import signal
    gc.collect()
    before = fd_count(), quarantined()
    for i in range(50):
        loop = loop_factory()
        a, b = socket.socketpair()
        try:
            loop.add_signal_handler(signal.SIGUSR1, lambda: None)
            loop.add_reader(a, lambda: None)

            async def main():
                lp = asyncio.get_running_loop()
                threading.Thread(target=lp.call_soon_threadsafe, args=(lambda: None,)).start()
                return await lp.run_in_executor(None, int, "5")

            assert loop.run_until_complete(main()) == 5
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
            a.close()
            b.close()
    gc.collect()
    assert (fd_count(), quarantined()) == before
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


@pytest.mark.timeout(60)
def test_close_does_not_wait_for_drain_deadline(caplog):
    """After a run, close() must find every ring operation completed: a loop
    whose drain deadline is 30 s must still close at once (the pytest
    timeout is the hang guard; no timing asserted)."""
    class SlowDrainLoop(zcloop.Loop):
        def _close_drain_timeout(self):
            return 30.0

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        for _ in range(3):      # below the test timeout only if close is prompt
            loop = SlowDrainLoop()
            a, b = socket.socketpair()
            loop.add_reader(a, lambda: None)
            loop.add_writer(b, lambda: None)
            loop.run_until_complete(asyncio.sleep(0.001))
            loop.call_soon_threadsafe(lambda: None)
            loop.close()
            a.close()
            b.close()
    assert [r.getMessage() for r in caplog.records] == []


def test_close_with_pending_everything(loop_factory, caplog):
    """Pending callbacks, timers, executor work in flight, registered readers
    and writers: close() is safe, silent and idempotent."""
    loop = loop_factory()
    a, b = socket.socketpair()
    release = threading.Event()
    try:
        loop.call_soon(lambda: None)
        loop.call_later(3600, lambda: None)
        loop.add_reader(a, lambda: None)
        loop.add_writer(b, lambda: None)
        fut = loop.run_in_executor(None, release.wait, 10)
        loop.run_until_complete(asyncio.sleep(0))
        loop.call_soon(lambda: None)
        loop.call_soon_threadsafe(lambda: None)
        q = quarantined()
        with caplog.at_level(logging.WARNING, logger="asyncio"):
            loop.close()
            loop.close()
        assert loop.is_closed()
        assert quarantined() == q
        assert [r.getMessage() for r in caplog.records] == []
    finally:
        release.set()
        a.close()
        b.close()
    del fut


def test_close_never_run_loop(loop_factory):
    loop = loop_factory()
    loop.call_soon(lambda: None)
    loop.call_later(1, lambda: None)
    a, b = socket.socketpair()
    try:
        loop.add_reader(a, lambda: None)
        loop.close()
    finally:
        a.close()
        b.close()
    assert loop.is_closed()


def test_call_soon_threadsafe_after_close_from_thread(loop_factory):
    """A thread racing with close(): either schedules before close or gets
    'Event loop is closed'; nothing else."""
    loop = loop_factory()
    loop.run_until_complete(asyncio.sleep(0))
    errors = []
    stop = threading.Event()

    def hammer():
        while not stop.is_set():
            try:
                loop.call_soon_threadsafe(lambda: None)
            except RuntimeError as exc:
                errors.append(str(exc))
                return

    t = threading.Thread(target=hammer)
    t.start()
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    t.join(10)
    stop.set()
    assert set(errors) <= {"Event loop is closed"}


def test_unclosed_loop_resource_warning_after_run(loop_factory):
    loop = loop_factory()
    loop.run_until_complete(asyncio.sleep(0.001))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        del loop
        gc.collect()
    assert [x.category for x in w] == [ResourceWarning]
    assert str(w[0].message).startswith("unclosed event loop <")


def test_unclosed_loop_resource_warning_never_run(loop_factory):
    loop = loop_factory()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        del loop
        gc.collect()
    assert [x.category for x in w] == [ResourceWarning]


def test_unclosed_loop_collected_in_other_thread_is_safe():
    """A zcloop loop run in a worker thread and dropped unclosed there; the
    GC closes it (from whichever thread) without errors."""
    holder = []

    def worker():
        loop = zcloop.new_event_loop()
        loop.run_until_complete(asyncio.sleep(0.001))
        holder.append(loop)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        holder.clear()
        gc.collect()
    assert [x.category for x in w] == [ResourceWarning]

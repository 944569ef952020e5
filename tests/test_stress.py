"""Stress: many concurrent connections echoing random-size messages checked
byte for byte, connect/disconnect churn, mixed write/write_zc/sendfile into
slow readers, and many timers plus call_soon_threadsafe() from several
threads.  Each test prints its figures (``pytest -s``) and merges them into
bench/out/stress-<form>.json.

Short form (CI): ``pytest tests/test_stress.py``.  Long form:
``ZCLOOP_STRESS=long pytest tests/test_stress.py`` (``make stress``).
"""
import asyncio
import hashlib
import mmap
import os
import random
import threading
import time

import pytest

import zcloop
from helpers.reliability import (
    FORM, LONG, ErrorLog, collect, describe_fds, fd_count, fd_set, raise_nofile, record,
    rss_kib, scale)


def run_zcloop(main, timeout):
    loop = zcloop.new_event_loop()
    errors = ErrorLog()
    loop.set_exception_handler(errors)
    try:
        result = loop.run_until_complete(asyncio.wait_for(main(loop), timeout))
        loop.run_until_complete(loop.shutdown_default_executor())
        return result, errors
    finally:
        loop.close()


# ----------------------------------------------------------------------
# N concurrent connections, each echoing random-size messages


class EchoServer(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        return False


class EchoClient(asyncio.Protocol):
    """Sends ``count`` messages one at a time (random sizes, random write
    method) and checks each echo byte for byte before sending the next."""

    def __init__(self, loop, idx, count, sizes, done, stats, barrier):
        self.loop = loop
        self.rnd = random.Random(idx)
        self.count = count
        self.sizes = sizes
        self.done = done
        self.stats = stats
        self.barrier = barrier
        self.pending = None
        self.got = bytearray()
        self.sent = 0
        self.keep = []           # write_zc buffers: untouched until released

    def connection_made(self, transport):
        self.transport = transport
        self.barrier.append(self)
        self.stats["held_now"] += 1
        self.stats["held_max"] = max(self.stats["held_max"], self.stats["held_now"])

    def start(self):
        self.send_next()

    def send_next(self):
        if self.sent == self.count:
            self.transport.close()
            return
        size = self.rnd.choice(self.sizes)
        data = self.rnd.randbytes(size)
        self.pending = data
        self.got = bytearray()
        how = self.rnd.randrange(4)
        if how == 0:
            self.transport.write(data)
        elif how == 1:
            self.transport.write(bytearray(data))
        elif how == 2:
            third = max(1, size // 3)
            self.transport.writelines([data[:third], memoryview(data)[third:]])
        else:
            buf = bytearray(data)
            h = self.transport.write_zc(buf)
            self.keep.append((h, buf))
        self.sent += 1

    def data_received(self, data):
        self.got += data
        if len(self.got) > len(self.pending):
            self.stats["mismatch"] += 1
            self.transport.abort()
            return
        if len(self.got) == len(self.pending):
            if self.got != self.pending:
                self.stats["mismatch"] += 1
            self.stats["requests"] += 1
            self.stats["bytes"] += len(self.pending)
            self.keep = [(h, b) for h, b in self.keep if not h.released.done()]
            self.send_next()

    def connection_lost(self, exc):
        self.stats["held_now"] -= 1
        if exc is not None:
            self.stats["errors"] += 1
        if self.sent != self.count or len(self.got) != len(self.pending or b""):
            self.stats["incomplete"] += 1
        self.done.set_result(None) if not self.done.done() else None


@pytest.mark.timeout(scale(120, 1800))
def test_concurrent_echo_byte_exact():
    n = scale(500, 5000)
    per_conn = scale(20, 40)
    sizes = [1, 7, 100, 1000, 4096, 16383, 16384, 16385, 65536, 100000, 300000]
    raise_nofile()
    collect()
    fds0, rss0 = fd_count(), rss_kib()

    async def main(loop):
        stats = dict(requests=0, bytes=0, mismatch=0, errors=0, incomplete=0,
                     held_now=0, held_max=0)
        server = await loop.create_server(EchoServer, "127.0.0.1", 0, backlog=4096)
        port = server.sockets[0].getsockname()[1]
        dones = [loop.create_future() for _ in range(n)]
        barrier = []
        t0 = time.monotonic()
        for start in range(0, n, 500):      # don't overflow the backlog
            await asyncio.gather(*(
                loop.create_connection(
                    lambda i=i: EchoClient(loop, i, per_conn, sizes, dones[i], stats, barrier),
                    "127.0.0.1", port)
                for i in range(start, min(n, start + 500))))
        connect_time = time.monotonic() - t0
        held = stats["held_now"]
        fds_held = fd_count()
        t1 = time.monotonic()
        for c in barrier:                    # every connection is open: go
            c.start()
        await asyncio.gather(*dones)
        dt = time.monotonic() - t1
        server.close()
        await server.wait_closed()
        return stats, held, fds_held, dt, connect_time

    (stats, held, fds_held, dt, connect_time), errors = run_zcloop(main, scale(100, 1700))
    collect()
    fds1, rss1 = fd_count(), rss_kib()
    record("concurrent_echo", connections_held=held, requests_served=stats["requests"],
           bytes_echoed=stats["bytes"], mismatches=stats["mismatch"], errors=stats["errors"],
           incomplete=stats["incomplete"], bytes_lost=0 if not stats["mismatch"] else "see mismatches",
           seconds=dt, requests_per_s=stats["requests"] / dt,
           mib_per_s=2 * stats["bytes"] / dt / 2 ** 20, connect_seconds=connect_time,
           fds_before=fds0, fds_while_held=fds_held, fds_after=fds1,
           rss_kib_before=rss0, rss_kib_after=rss1, loop_errors=len(errors.contexts))
    assert held == n
    assert stats["requests"] == n * per_conn
    assert stats["mismatch"] == 0 and stats["errors"] == 0 and stats["incomplete"] == 0
    assert errors.contexts == []
    assert fds1 == fds0


# ----------------------------------------------------------------------
# Connect / disconnect churn


@pytest.mark.timeout(scale(120, 1800))
def test_connect_disconnect_churn():
    total = scale(5000, 100000)
    workers = 50
    raise_nofile()
    collect()
    before = fd_set()
    rss0 = rss_kib()

    async def main(loop):
        stats = dict(ok=0, errors=0, served=0)

        async def handle(reader, writer):
            try:
                data = await reader.readexactly(4)
                writer.write(data.upper())
                await writer.drain()
                stats["served"] += 1
            except (ConnectionError, asyncio.IncompleteReadError):
                stats["errors"] += 1
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
        port = server.sockets[0].getsockname()[1]
        counter = iter(range(total))

        async def worker():
            for i in counter:
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.write(b"ping")
                    assert await reader.readexactly(4) == b"PING"
                    if i % 3 == 0:
                        writer.transport.abort()         # RST half of the time
                    else:
                        writer.close()
                        await writer.wait_closed()
                    stats["ok"] += 1
                except OSError:
                    stats["errors"] += 1
        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(workers)))
        dt = time.monotonic() - t0
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)
        return stats, dt

    (stats, dt), errors = run_zcloop(main, scale(110, 1700))
    collect()
    after = fd_set()
    leaked = {fd: after[fd] for fd in set(after) - set(before)}
    record("churn", connections=stats["ok"], served=stats["served"], errors=stats["errors"],
           seconds=dt, connections_per_s=stats["ok"] / dt, fds_before=len(before),
           fds_after=len(after), fds_leaked=len(leaked), rss_kib_before=rss0,
           rss_kib_after=rss_kib(), loop_errors=len(errors.contexts))
    assert stats["ok"] == total and stats["errors"] == 0
    assert errors.contexts == []
    assert describe_fds(leaked) == {}


# ----------------------------------------------------------------------
# Mixed write / write_zc / sendfile into slow readers


class SlowReader(asyncio.Protocol):
    """Hashes what arrives; pauses reading for a few ms every ~256 KiB."""

    def __init__(self, loop, rnd, done):
        self.loop = loop
        self.rnd = rnd
        self.h = hashlib.sha256()
        self.n = 0
        self.since_pause = 0
        self.done = done
        self.pauses = 0

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.h.update(data)
        self.n += len(data)
        self.since_pause += len(data)
        if self.since_pause > 256 * 1024:
            self.since_pause = 0
            self.pauses += 1
            self.transport.pause_reading()
            self.loop.call_later(self.rnd.uniform(0.001, 0.01), self.transport.resume_reading)

    def eof_received(self):
        self.done.set_result((self.h.hexdigest(), self.n, self.pauses))


@pytest.mark.timeout(scale(120, 1800))
def test_mixed_write_zc_sendfile_slow_readers(tmp_path):
    conns = scale(16, 128)
    ops_per_conn = scale(40, 200)
    path = tmp_path / "file.bin"
    file_data = random.Random(7).randbytes(3 * 1024 * 1024 + 11)
    path.write_bytes(file_data)
    collect()
    fds0, rss0 = fd_count(), rss_kib()

    async def main(loop):
        dones = {}

        def factory():
            i = len(dones)
            dones[i] = loop.create_future()
            return SlowReader(loop, random.Random(1000 + i), dones[i])
        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        counts = dict(write=0, write_bytearray=0, writelines=0, write_zc=0, write_zc_mmap=0,
                      sendfile=0, bytes=0)

        async def sender(i):
            rnd = random.Random(i)
            tr, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
            expect = hashlib.sha256()
            keep = []
            f = open(path, "rb")
            try:
                for _ in range(ops_per_conn):
                    what = rnd.choice(list(counts)[:-1])
                    size = rnd.choice([10, 5000, 20000, 70000, 300000, 1 << 20])
                    if what == "sendfile":
                        off = rnd.randrange(0, len(file_data) - 1)
                        cnt = rnd.randrange(1, len(file_data) - off + 1)
                        n = await loop.sendfile(tr, f, off, cnt)
                        assert n == cnt
                        expect.update(file_data[off:off + cnt])
                        counts["bytes"] += cnt
                    else:
                        data = rnd.randbytes(size)
                        if what == "write":
                            tr.write(data)
                        elif what == "write_bytearray":
                            buf = bytearray(data)
                            tr.write(buf)
                            buf[:] = b"\0" * len(buf)     # snapshot semantics
                        elif what == "writelines":
                            tr.writelines([data[:size // 2], data[size // 2:]])
                        elif what == "write_zc":
                            buf = bytearray(data)
                            keep.append((tr.write_zc(buf), buf))
                        else:
                            m = mmap.mmap(-1, size)
                            m[:] = data
                            keep.append((tr.write_zc(m), m))
                        expect.update(data)
                        counts["bytes"] += size
                    counts[what] += 1
                    # Flow control: don't queue unboundedly ahead of a slow reader.
                    while tr.get_write_buffer_size() > 4 << 20:
                        await asyncio.sleep(0.002)
                    if keep and rnd.random() < 0.2:
                        h, b = keep.pop(0)
                        assert await asyncio.wait_for(h.released, 30) is not None
                        assert h.sent.result() == h.nbytes
                for h, b in keep:
                    await asyncio.wait_for(h.released, 30)
                tr.write_eof()
                while tr.get_write_buffer_size():
                    await asyncio.sleep(0.005)
                assert tr.get_pinned_size() == 0
                tr.close()
            finally:
                f.close()
            return expect.hexdigest()

        t0 = time.monotonic()
        expects = await asyncio.gather(*(sender(i) for i in range(conns)))
        results = await asyncio.wait_for(asyncio.gather(*dones.values()), 60)
        dt = time.monotonic() - t0
        server.close()
        await server.wait_closed()
        got = sorted(r[0] for r in results)
        pinned = loop.zc_stats()["pinned_bytes"]
        return counts, sorted(expects) == got, sum(r[2] for r in results), dt, pinned

    (counts, exact, pauses, dt, pinned), errors = run_zcloop(main, scale(110, 1700))
    collect()
    fds1 = fd_count()
    record("mixed_slow_readers", connections=conns, operations=sum(counts.values()) - counts["bytes"],
           by_method={k: v for k, v in counts.items() if k != "bytes"}, bytes=counts["bytes"],
           byte_exact=exact, bytes_lost=0 if exact else "mismatch", reader_pauses=pauses,
           pinned_after=pinned, seconds=dt, mib_per_s=counts["bytes"] / dt / 2 ** 20,
           fds_before=fds0, fds_after=fds1, rss_kib_before=rss0, rss_kib_after=rss_kib(),
           loop_errors=len(errors.contexts))
    assert exact
    assert pinned == 0
    assert errors.contexts == []
    assert fds1 == fds0


# ----------------------------------------------------------------------
# Many timers + call_soon_threadsafe from several threads


@pytest.mark.timeout(scale(120, 1800))
def test_timers_and_threadsafe_callbacks():
    ntimers = scale(50000, 1000000)
    nthreads = 4
    per_thread = scale(20000, 250000)

    async def main(loop):
        rnd = random.Random(3)
        fired = []
        late = [0]
        cancelled = set()
        res = loop.get_debug() or 0.0

        def on_timer(i, when):
            now = loop.time()
            if now < when - 0.001:
                late[0] += 1             # fired early: never allowed
            fired.append((when, i))

        handles = []
        base = loop.time()
        for i in range(ntimers):
            when = base + rnd.uniform(0, 0.5)
            handles.append(loop.call_at(when, on_timer, i, when))
        for i in rnd.sample(range(ntimers), ntimers // 3):
            handles[i].cancel()
            cancelled.add(i)

        seen = [[] for _ in range(nthreads)]
        finished = loop.create_future()
        remaining = [nthreads * per_thread]

        def cb(t, k):
            seen[t].append(k)
            remaining[0] -= 1
            if remaining[0] == 0:
                finished.set_result(None)

        def producer(t):
            for k in range(per_thread):
                loop.call_soon_threadsafe(cb, t, k)

        t0 = time.monotonic()
        threads = [threading.Thread(target=producer, args=(t,)) for t in range(nthreads)]
        for th in threads:
            th.start()
        await asyncio.wait_for(finished, 100)
        for th in threads:
            th.join()
        dt_threads = time.monotonic() - t0
        while len(fired) < ntimers - len(cancelled):
            await asyncio.sleep(0.05)
            if loop.time() - base > 30:
                break
        await asyncio.sleep(0.05)
        dt_total = time.monotonic() - t0
        ordered = all(fired[k][0] <= fired[k + 1][0] for k in range(len(fired) - 1))
        fired_ids = {i for _, i in fired}
        in_order = all(s == list(range(per_thread)) for s in seen)
        return dict(timers=ntimers, cancelled=len(cancelled), fired=len(fired),
                    fired_cancelled=len(fired_ids & cancelled), fired_early=late[0],
                    ordered=ordered, threadsafe_calls=nthreads * per_thread,
                    threadsafe_in_order=in_order, threadsafe_seconds=dt_threads,
                    threadsafe_calls_per_s=nthreads * per_thread / dt_threads,
                    seconds=dt_total)

    rss0 = rss_kib()
    stats, errors = run_zcloop(main, scale(110, 1700))
    record("timers_threadsafe", rss_kib_before=rss0, rss_kib_after=rss_kib(), **stats)
    assert stats["fired"] == stats["timers"] - stats["cancelled"]
    assert stats["fired_cancelled"] == 0 and stats["fired_early"] == 0
    assert stats["ordered"] and stats["threadsafe_in_order"]
    assert errors.contexts == []


# ----------------------------------------------------------------------
# `make stress` runs this file only (with ZCLOOP_STRESS=long): collect the
# long variants of the other reliability files here too.  In the short
# form they run from their own files.

if LONG:
    from test_badinput import test_huge_writes_in_subprocess  # noqa: F401,E402
    from test_faults import test_buffer_ring_exhaustion_no_data_lost  # noqa: F401,E402
    from test_memory import (  # noqa: F401,E402
        test_every_pinned_buffer_released_and_unreferenced,
        test_no_fd_leak_across_apis,
        test_no_reference_leak_over_100k_operations,
        test_rss_flat_over_long_request_run,
    )
    from test_model import test_transport_model, test_zz_record_model  # noqa: F401,E402

"""Memory: no reference leak over 100k operations (tracemalloc + counts of
zcloop's objects), RSS flat over a long request run, every pinned
zero-copy buffer released (and its reference dropped), no fd leak.

The ASan / valgrind recipes are in docs/reliability.md.
"""
import asyncio
import gc
import os
import random
import socket
import sys
import time
import tracemalloc
from collections import Counter

import pytest

import zcloop
from helpers.reliability import (
    ErrorLog, collect, describe_fds, fd_set, raise_nofile, record, rss_kib, scale)


def zcloop_object_counts():
    """Live objects by type, for zcloop's types and asyncio's futures/handles."""
    counts = Counter()
    for o in gc.get_objects():
        t = type(o)
        mod = t.__dict__.get("__module__", "")
        if not isinstance(mod, str):
            mod = ""
        if mod.startswith("zcloop") or t.__name__ in ("Future", "Task", "TimerHandle",
                                                      "Handle", "StreamReader",
                                                      "StreamWriter"):
            counts[f"{mod}.{t.__name__}"] += 1
    return counts


def run_zcloop(main, timeout=300):
    loop = zcloop.new_event_loop()
    errors = ErrorLog()
    loop.set_exception_handler(errors)
    try:
        result = loop.run_until_complete(asyncio.wait_for(main(loop), timeout))
        loop.run_until_complete(loop.shutdown_default_executor())
        return result, errors
    finally:
        loop.close()


async def _ops_round(loop, env, rnd):
    """About 20 loop operations of many kinds (each returns its count)."""
    n = 0
    # callbacks and timers
    fut = loop.create_future()
    loop.call_soon(fut.set_result, 1)
    h = loop.call_later(10, print)
    h.cancel()
    await fut
    n += 3
    # transport write / recv (echo), all write methods
    tr, q = env["tr"], env["q"]
    size = rnd.choice([10, 1000, 20000, 70000])
    data = rnd.randbytes(size)
    how = rnd.randrange(4)
    if how == 0:
        tr.write(data)
    elif how == 1:
        tr.write(bytearray(data))
    elif how == 2:
        tr.writelines([data[:5], data[5:]])
    else:
        await tr.write_zc(bytearray(data))
    got = bytearray()
    while len(got) < size:
        got += await q.get()
    assert got == data
    n += 2
    # sock_* API
    a, b = env["a"], env["b"]
    await loop.sock_sendall(a, b"x" * 100)
    got = b""
    while len(got) < 100:
        got += await loop.sock_recv(b, 100)
    buf = bytearray(10)
    await loop.sock_sendall(b, b"y" * 10)
    k = 0
    while k < 10:
        k += await loop.sock_recv_into(a, memoryview(buf)[k:])
    n += 4
    # a task, a cancelled task, wait_for
    await loop.create_task(asyncio.sleep(0))
    t = loop.create_task(asyncio.sleep(10))
    await asyncio.sleep(0)
    t.cancel()
    try:
        await t
    except asyncio.CancelledError:
        pass
    await asyncio.wait_for(asyncio.sleep(0), 1)
    n += 3
    # a new connection, every other round
    if rnd.random() < 0.5:
        r, w = await asyncio.open_connection("127.0.0.1", env["port"])
        w.write(b"ping")
        await r.readexactly(4)
        w.close()
        await w.wait_closed()
        n += 4
    return n


async def _setup_env(loop):
    q = asyncio.Queue()

    class Sink(asyncio.Protocol):
        def data_received(self, data):
            q.put_nowait(data)

    sink = await loop.create_server(Sink, "127.0.0.1", 0)
    tr, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1",
                                         sink.sockets[0].getsockname()[1])

    async def echo(r, w):
        w.write(await r.readexactly(4))
        await w.drain()
        w.close()
    srv = await asyncio.start_server(echo, "127.0.0.1", 0)
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    await asyncio.sleep(0.01)
    return dict(q=q, tr=tr, sink=sink, srv=srv, port=srv.sockets[0].getsockname()[1], a=a, b=b)


async def _teardown_env(env):
    env["tr"].close()
    env["a"].close()
    env["b"].close()
    env["sink"].close()
    env["srv"].close()
    await env["srv"].wait_closed()


@pytest.mark.timeout(scale(240, 1800))
def test_no_reference_leak_over_100k_operations():
    target = scale(100_000, 1_000_000)

    async def main(loop):
        env = await _setup_env(loop)
        rnd = random.Random(5)
        done = 0
        while done < target // 10:                      # warm-up: caches, free lists
            done += await _ops_round(loop, env, rnd)
        await asyncio.sleep(0.05)
        collect()
        counts0 = zcloop_object_counts()
        tracemalloc.start(10)
        snap0 = tracemalloc.take_snapshot()
        done = 0
        t0 = time.monotonic()
        while done < target:
            done += await _ops_round(loop, env, rnd)
        dt = time.monotonic() - t0
        await asyncio.sleep(0.05)
        collect()
        snap1 = tracemalloc.take_snapshot()
        tracemalloc.stop()
        counts1 = zcloop_object_counts()
        await _teardown_env(env)
        return done, dt, counts0, counts1, snap0, snap1

    (ops, dt, counts0, counts1, snap0, snap1), errors = run_zcloop(main)
    filters = [tracemalloc.Filter(False, tracemalloc.__file__),
               tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
               tracemalloc.Filter(False, "*/linecache.py")]
    stats = snap1.filter_traces(filters).compare_to(snap0.filter_traces(filters), "traceback")
    growth = sum(s.size_diff for s in stats)
    top = [(s.size_diff, s.count_diff, str(s.traceback[0])) for s in stats[:5]]
    grown_types = {k: counts1[k] - counts0.get(k, 0) for k in counts1
                   if counts1[k] - counts0.get(k, 0) > 0}
    record("reference_leak", operations=ops, seconds=dt, ops_per_s=ops / dt,
           tracemalloc_growth_bytes=growth, top_growth=top, object_count_growth=grown_types,
           loop_errors=len(errors.contexts))
    assert errors.contexts == []
    # One object per 1000 operations would show here; a leak per operation
    # would be ~100k objects.
    assert all(v <= 10 for v in grown_types.values()), grown_types
    assert growth < 512 * 1024, top


@pytest.mark.timeout(scale(240, 3600))
def test_rss_flat_over_long_request_run():
    total = scale(50_000, 1_000_000)
    conns = 50
    raise_nofile()

    async def main(loop):
        async def handle(reader, writer):
            try:
                while True:
                    line = await reader.readline()
                    if not line:
                        break
                    writer.write(line * 4)
            finally:
                writer.close()
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        served = [0]
        samples = []

        async def client(i):
            r, w = await asyncio.open_connection("127.0.0.1", port)
            msg = (b"%06d-" % i) + b"r" * random.Random(i).randrange(10, 2000) + b"\n"
            while served[0] < total:
                w.write(msg)
                assert await r.readexactly(len(msg) * 4) == msg * 4
                served[0] += 1
                if served[0] % (total // 20) == 0:
                    samples.append((served[0], rss_kib()))
            w.close()
            await w.wait_closed()

        t0 = time.monotonic()
        await asyncio.gather(*(client(i) for i in range(conns)))
        dt = time.monotonic() - t0
        server.close()
        await server.wait_closed()
        return served[0], dt, samples

    rss0 = rss_kib()
    (served, dt, samples), errors = run_zcloop(main)
    rss1 = rss_kib()
    # Compare the second half of the run with its first sample after warm-up.
    warm = [kib for n, kib in samples if n >= total // 4]
    drift = (max(warm) - warm[0]) if warm else 0
    record("rss_flat", requests_served=served, seconds=dt, requests_per_s=served / dt,
           rss_kib_before=rss0, rss_kib_after=rss1, rss_kib_samples=[k for _, k in samples],
           rss_drift_kib_after_warmup=drift, loop_errors=len(errors.contexts))
    assert served >= total
    assert errors.contexts == []
    assert drift < 8 * 1024, samples


@pytest.mark.timeout(120)
def test_every_pinned_buffer_released_and_unreferenced():
    """write_zc() buffers to a slow reader: pinned while unread, then
    released; their reference counts return to where they were (no leaked
    Py_buffer or reference), and they are resizable again."""
    nbuf = scale(64, 512)

    async def main(loop):
        a, b = socket.socketpair()
        b.setblocking(False)
        s1, s2 = socket.socket(), None
        lst = socket.create_server(("127.0.0.1", 0))
        s1 = socket.create_connection(lst.getsockname())
        s2, _ = lst.accept()
        lst.close()
        s1.setblocking(False)
        s2.setblocking(False)
        tr, _ = await loop.create_connection(asyncio.Protocol, sock=s1)
        rnd = random.Random(9)
        bufs = [bytearray(rnd.randbytes(rnd.choice([20000, 300000, 1 << 20])))
                for _ in range(nbuf)]
        ref0 = [sys.getrefcount(x) for x in bufs]
        handles = [tr.write_zc(x) for x in bufs]
        for _ in range(10):
            await asyncio.sleep(0.01)
        pinned_peak = max(tr.get_pinned_size(), 0)
        loop_pinned_peak = loop.zc_stats()["pinned_bytes"]
        # Pinned: the kernel holds the first buffers until the peer reads.
        assert any(not h.released.done() for h in handles)
        try:
            bufs[0].extend(b"x")
            resized_while_pinned = True
        except BufferError:
            resized_while_pinned = False
        expect = b"".join(bytes(x) for x in bufs)
        got = bytearray()
        while len(got) < len(expect):
            try:
                got += s2.recv(1 << 20)
            except BlockingIOError:
                await asyncio.sleep(0.001)
        await asyncio.wait_for(asyncio.gather(*(h.released for h in handles)), 30)
        assert got == expect
        state = (tr.get_pinned_size(), loop.zc_stats()["pinned_bytes"])
        del handles
        collect()
        ref1 = [sys.getrefcount(x) for x in bufs]
        for x in bufs:
            x.extend(b"!")          # no export left
        tr.close()
        s2.close()
        a.close()
        b.close()
        await asyncio.sleep(0)
        return ref0, ref1, state, resized_while_pinned, pinned_peak, loop_pinned_peak

    (ref0, ref1, state, resized, peak, loop_peak), errors = run_zcloop(main)
    record("pinned_released", buffers=nbuf, pinned_peak_bytes=peak,
           loop_pinned_peak_bytes=loop_peak, pinned_after=state[0],
           loop_pinned_after=state[1], refcount_leaks=sum(b - a for a, b in zip(ref0, ref1)))
    assert not resized
    assert state == (0, 0)
    assert ref1 == ref0
    assert errors.contexts == []


@pytest.mark.timeout(120)
def test_write_and_sendall_release_references():
    """Data objects passed to write()/writelines()/sock_sendall() are not
    kept once sent."""
    async def main(loop):
        s1, s2 = socket.socketpair()
        s1.setblocking(False)
        s2.setblocking(False)
        c1, c2 = socket.socketpair()
        c1.setblocking(False)
        c2.setblocking(False)
        tr, _ = await loop.create_connection(asyncio.Protocol, sock=c1)
        objs = [os.urandom(n) for n in (10, 1000, 70000, 1 << 20)]
        ref0 = [sys.getrefcount(o) for o in objs]
        for o in objs:
            tr.write(o)
            tr.writelines([o, o])
        total = 3 * sum(len(o) for o in objs)
        got = 0
        while got < total:
            try:
                got += len(c2.recv(1 << 20))
            except BlockingIOError:
                await asyncio.sleep(0.001)
        while tr.get_write_buffer_size():
            await asyncio.sleep(0.001)
        for o in objs:
            task = loop.create_task(loop.sock_sendall(s1, o))
            n = 0
            while n < len(o):
                try:
                    n += len(s2.recv(1 << 20))
                except BlockingIOError:
                    await asyncio.sleep(0.001)
            await task
        del task, o
        await asyncio.sleep(0.01)
        collect()
        ref1 = [sys.getrefcount(o) for o in objs]
        tr.close()
        for s in (s1, s2, c2):
            s.close()
        await asyncio.sleep(0)
        return ref0, ref1

    (ref0, ref1), errors = run_zcloop(main)
    assert ref1 == ref0
    assert errors.contexts == []


@pytest.mark.timeout(120)
def test_no_fd_leak_across_apis(tmp_path):
    """Servers, connections, TLS-less streams, pipes, subprocesses, sendfile,
    datagrams, Unix sockets: every fd comes back after close."""
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(1 << 20))
    rounds = scale(20, 200)
    collect()
    before = fd_set()

    async def main(loop):
        for i in range(rounds):
            async def echo(r, w):
                w.write(await r.read(100))
                await w.drain()
                w.close()
            srv = await asyncio.start_server(echo, "127.0.0.1", 0)
            r, w = await asyncio.open_connection(*srv.sockets[0].getsockname())
            with open(path, "rb") as f:
                await loop.sendfile(w.transport, f, 0, 1000)
            await r.read()
            w.close()
            await w.wait_closed()
            srv.close()
            await srv.wait_closed()
            usrv = await asyncio.start_unix_server(echo, str(tmp_path / f"s{i}.sock"))
            r, w = await asyncio.open_unix_connection(str(tmp_path / f"s{i}.sock"))
            w.write(b"hi")
            await r.read()
            w.close()
            await w.wait_closed()
            usrv.close()
            await usrv.wait_closed()
            proc = await asyncio.create_subprocess_exec(
                "cat", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate(b"abc")
            assert out == b"abc"
            rfd, wfd = os.pipe()
            rt, _ = await loop.connect_read_pipe(asyncio.Protocol, os.fdopen(rfd, "rb", 0))
            wt, _ = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(wfd, "wb", 0))
            wt.write(b"x")
            wt.close()
            await asyncio.sleep(0.001)
            rt.close()
            if hasattr(loop, "create_datagram_endpoint"):
                t1, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                            local_addr=("127.0.0.1", 0))
                t2, _ = await loop.create_datagram_endpoint(
                    asyncio.DatagramProtocol, remote_addr=t1.get_extra_info("sockname"))
                t2.sendto(b"x")
                await asyncio.sleep(0.001)
                t1.close()
                t2.close()
            await asyncio.sleep(0)
        await asyncio.sleep(0.01)

    _, errors = run_zcloop(main)
    collect()
    after = fd_set()
    leaked = {fd: after[fd] for fd in set(after) - set(before)}
    record("fd_leak_across_apis", rounds=rounds, fds_before=len(before), fds_after=len(after),
           fds_leaked=len(leaked))
    assert describe_fds(leaked) == {}
    assert errors.contexts == []

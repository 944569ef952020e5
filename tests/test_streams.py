"""Stream transports: protocols, reading, writing, flow control, errors;
the same scenarios on asyncio's SelectorEventLoop and on zcloop (and on
zcloop's fallback read paths)."""
import array
import asyncio
import gc
import hashlib
import logging
import os
import random
import socket
import struct
import threading
import weakref

import pytest

from streamutil import (
    IS_312, BufferedRecorder, Hasher, LoopFactory, Recorder, digest, echo_server, fd_count, free_port,
    loop_factory_fixture, loop_pair, pattern, raise_nofile, raw_peer,
    recv_all_blocking, recv_exactly_blocking, run, unix_raw_peer,
)

loop_factory = loop_factory_fixture()


@pytest.fixture(params=['asyncio', 'zcloop', 'zcloop-no-buf_ring',
                        'zcloop-no-recv_multishot'])
def read_path_factory(request):
    """Loops including zcloop's fallback read paths (one-shot RECV into a
    private buffer; one-shot RECV from the buffer ring)."""
    kind = request.param
    if kind.startswith('zcloop-no-'):
        return LoopFactory('zcloop', disable_features={kind[len('zcloop-no-'):]})
    return LoopFactory(kind)


def both(coro_fn, *args, **kwargs):
    return (run(LoopFactory('asyncio'), coro_fn, *args, **kwargs),
            run(LoopFactory('zcloop'), coro_fn, *args, **kwargs))


# ----------------------------------------------------------------------
# Protocol callbacks


def test_callback_order(read_path_factory):
    async def main():
        loop = asyncio.get_running_loop()
        sp, tr, pr, srv = await loop_pair(loop)
        payload = pattern(1_000_000)
        tr.write(payload)
        tr.write_eof()
        await sp.eof
        assert bytes(sp.data) == payload
        # Server protocol returned False from eof_received: transport closes.
        assert await sp.lost is None
        assert await pr.lost is None
        srv.close()
        await srv.wait_closed()
        return sp.events, pr.events
    s_events, c_events = run(read_path_factory, main)
    assert s_events == ['made', 'data', 'eof', 'lost']
    assert c_events == ['made', 'eof', 'lost']


def test_buffered_protocol_small_buffer(read_path_factory):
    async def main():
        loop = asyncio.get_running_loop()
        payload = pattern(200_000, seed=1)
        sp, tr, pr, srv = await loop_pair(
            loop, client_factory=lambda: BufferedRecorder(bufsize=7))
        sp.transport.write(payload)
        sp.transport.close()
        await pr.lost
        assert bytes(pr.data) == payload
        assert pr.calls >= len(payload) // 7
        srv.close()
        await srv.wait_closed()
        return pr.events
    assert run(read_path_factory, main) == ['made', 'data', 'eof', 'lost']


def test_buffered_protocol_large_buffer_exact(loop_factory):
    """A get_buffer() larger than the data: buffer_updated gets exact counts."""
    async def main():
        loop = asyncio.get_running_loop()
        payload = pattern(3 * 1024 * 1024, seed=2)
        sp, tr, pr, srv = await loop_pair(
            loop, client_factory=lambda: BufferedRecorder(bufsize=1 << 20))
        sp.transport.write(payload)
        sp.transport.close()
        await pr.lost
        assert bytes(pr.data) == payload
        srv.close()
        await srv.wait_closed()
    run(loop_factory, main)


def test_protocol_errors_are_fatal():
    """data_received raising / get_buffer returning b'': same handler
    message, same connection_lost exception on both loops."""
    class Bad(Recorder):
        def data_received(self, data):
            raise ZeroDivisionError('boom')

    class EmptyBuf(BufferedRecorder):
        def get_buffer(self, sizehint):
            return bytearray()

    async def main():
        loop = asyncio.get_running_loop()
        seen = []
        loop.set_exception_handler(lambda l, ctx: seen.append(ctx['message']))
        out = []
        for factory in (Bad, EmptyBuf):
            sp, tr, pr, srv = await loop_pair(loop, client_factory=factory)
            sp.transport.write(b'data')
            exc = await pr.lost
            out.append((type(exc).__name__, str(exc)))
            sp.transport.close()
            await sp.lost
            srv.close()
            await srv.wait_closed()
        return out, seen
    a, z = both(main)
    assert a == z
    assert a[0][0] == ('ZeroDivisionError', 'boom')


class _EofBuffered(asyncio.BufferedProtocol):
    """Records every callback; get_buffer() behaves as ``mode`` says once
    data has been received (so at EOF when the peer sent nothing)."""
    def __init__(self, mode):
        self.mode = mode
        self.calls = []
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.calls.append('connection_made')

    def get_buffer(self, sizehint):
        self.calls.append('get_buffer')
        if self.mode == 'raise':
            raise ZeroDivisionError('no buffer')
        return bytearray(0 if self.mode == 'empty' else 64)

    def buffer_updated(self, nbytes):
        self.calls.append('buffer_updated')

    def eof_received(self):
        self.calls.append('eof_received')

    def connection_lost(self, exc):
        self.calls.append('connection_lost')
        self.lost.set_result(exc)


@pytest.mark.timeout(30)
@pytest.mark.parametrize('mode', ['ok', 'ok-paused', 'raise', 'empty'])
def test_buffered_protocol_get_buffer_at_eof(read_path_factory, mode):
    """asyncio asks a BufferedProtocol for a buffer before each recv, the one
    that returns EOF included: get_buffer() comes right before eof_received();
    if it raises or returns an empty buffer at that moment, the transport
    fails with 'Fatal error: protocol.get_buffer() call failed.' and
    eof_received() is never called."""
    async def main():
        loop = asyncio.get_running_loop()
        seen = []
        loop.set_exception_handler(lambda l, ctx: seen.append(ctx['message']))
        tr, pr, conn = await raw_peer(loop, lambda: _EofBuffered(mode))
        with conn:
            if mode == 'ok-paused':
                tr.pause_reading()
            conn.shutdown(socket.SHUT_WR)
            if mode == 'ok-paused':
                for _ in range(10):
                    await asyncio.sleep(0.01)
                assert pr.calls == ['connection_made']
                tr.resume_reading()
            exc = await asyncio.wait_for(pr.lost, 10)
        return pr.calls, type(exc).__name__, seen

    calls, exc, seen = run(read_path_factory, main)
    if mode.startswith('ok'):
        assert (calls, exc, seen) == (
            ['connection_made', 'get_buffer', 'eof_received', 'connection_lost'],
            'NoneType', [])
    else:
        assert (calls, exc, seen) == (
            ['connection_made', 'get_buffer', 'connection_lost'],
            'ZeroDivisionError' if mode == 'raise' else 'RuntimeError',
            ['Fatal error: protocol.get_buffer() call failed.'])


def test_eof_received_keep_open_half_close(read_path_factory):
    """Peer shuts down its write side; eof_received returns True; we can
    still write back and the peer reads it before our FIN."""
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop, lambda: Recorder(eof_keep_open=True))
        with conn:
            request = pattern(100_000, seed=3)
            await loop.run_in_executor(None, conn.sendall, request)
            conn.shutdown(socket.SHUT_WR)
            await pr.eof
            assert bytes(pr.data) == request
            assert not tr.is_closing()
            assert tr.is_reading() in (True, False)     # loop specific after EOF
            reply = hashlib.sha256(request).digest() * 1000
            tr.write(reply)
            tr.close()
            got = await loop.run_in_executor(None, recv_all_blocking, conn)
            assert got == reply
            assert await pr.lost is None
        return pr.events
    assert run(read_path_factory, main) == ['made', 'data', 'eof', 'lost']


def test_write_eof(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        with conn:
            assert tr.can_write_eof()
            tr.write(b'before eof')
            tr.write_eof()
            tr.write_eof()       # idempotent
            got = await loop.run_in_executor(None, recv_all_blocking, conn)
            assert got == b'before eof'
            msgs = []
            for call in (lambda: tr.write(b'x'), lambda: tr.writelines([b'x'])):
                with pytest.raises(RuntimeError) as info:
                    call()
                msgs.append(str(info.value))
            # Reading still works after our write side is shut.
            conn.sendall(b'after')
            assert await pr.wait_bytes(5) == b'after'
            conn.close()
            await pr.lost
        return msgs
    # 3.12 gave writelines() its own messages (asyncio's and zcloop's).
    assert run(loop_factory, main) == [
        'Cannot call write() after write_eof()',
        f'Cannot call {"writelines" if IS_312 else "write"}() after write_eof()']


def test_write_eof_after_pending_data(loop_factory):
    """write_eof() with data still queued: the FIN follows all of it."""
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        with conn:
            payload = pattern(8 * 1024 * 1024, seed=4)
            tr.write(payload)
            tr.write_eof()
            got = await loop.run_in_executor(None, recv_all_blocking, conn)
            assert digest(got) == digest(payload)
            tr.close()
            await pr.lost
    run(loop_factory, main)


# ----------------------------------------------------------------------
# pause_reading / resume_reading


class PausingProtocol(Recorder):
    """Pauses on every chunk and resumes an iteration (or a timer) later."""

    def __init__(self):
        super().__init__()
        self.cycles = 0
        self.violations = 0
        self.rng = random.Random(5)

    def data_received(self, data):
        if not self.transport.is_reading():
            self.violations += 1
        super().data_received(data)
        self.transport.pause_reading()
        assert not self.transport.is_reading()
        self.transport.pause_reading()            # no-op when paused
        self.cycles += 1
        if self.rng.random() < 0.2:
            self.loop.call_later(0.001, self._resume)
        else:
            self.loop.call_soon(self._resume)

    def _resume(self):
        if self.transport.is_closing():
            return
        self.transport.resume_reading()
        assert self.transport.is_reading()
        self.transport.resume_reading()           # no-op when reading


def test_pause_resume_reading_no_loss(read_path_factory):
    size = 16 * 1024 * 1024

    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop, PausingProtocol)
        payload = pattern(size, seed=6)
        with conn:
            sender = loop.run_in_executor(None, conn.sendall, payload)
            await pr.wait_bytes(size)
            await sender
            conn.shutdown(socket.SHUT_WR)
            await pr.eof
        await pr.lost
        assert pr.violations == 0
        assert len(pr.data) == size
        assert digest(pr.data) == digest(payload)
        return pr.cycles
    cycles = run(read_path_factory, main)
    assert cycles > 20


def test_pause_reading_holds_eof(loop_factory):
    """EOF arriving while paused is delivered only after resume_reading()."""
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        with conn:
            tr.pause_reading()
            assert not tr.is_reading()
            conn.sendall(b'held data')
            conn.shutdown(socket.SHUT_WR)
            await asyncio.sleep(0.1)
            assert pr.events == ['made']
            tr.resume_reading()
            await pr.eof
            assert bytes(pr.data) == b'held data'
            await pr.lost
        assert not tr.is_reading()          # closed transports don't read
        return pr.events
    assert run(loop_factory, main) == ['made', 'data', 'eof', 'lost']


def test_pause_reading_holds_reset(read_path_factory):
    """A reset arriving while paused is reported only after resume_reading()
    (asyncio does not read a paused socket)."""
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        tr.pause_reading()
        conn.sendall(b'x' * 300_000)
        await asyncio.sleep(0.05)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        conn.close()
        await asyncio.sleep(0.1)
        while_paused = list(pr.events)
        tr.resume_reading()
        exc = await asyncio.wait_for(pr.lost, 5)
        return while_paused, pr.events[-1], type(exc).__name__
    assert run(read_path_factory, main) == (['made'], 'lost', 'ConnectionResetError')


def test_paused_transport_stops_reading(read_path_factory):
    """While paused, a transport does not read without bound: a peer writing
    as fast as it can meets a full window, then gets everything on resume."""
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        tr.pause_reading()
        conn.setblocking(False)
        chunk, sent = b'y' * 65536, 0
        deadline = loop.time() + 5
        while loop.time() < deadline:
            try:
                sent += conn.send(chunk)
            except BlockingIOError:
                await asyncio.sleep(0.05)   # let the loop run: is it reading?
                try:
                    sent += conn.send(chunk)
                except BlockingIOError:
                    break
        blocked = loop.time() < deadline
        assert pr.events == ['made']
        tr.resume_reading()
        await pr.wait_bytes(sent)
        conn.close()
        return blocked, sent < 64 * 1024 * 1024, len(pr.data) == sent
    assert run(read_path_factory, main) == (True, True, True)


# ----------------------------------------------------------------------
# Write path


def _random_sizes(rng, n):
    out = []
    for _ in range(n):
        exp = rng.uniform(0, 22)            # 1 B .. 4 MiB, log-uniform
        out.append(max(1, int(2 ** exp)))
    return out


def test_mixed_size_write_ordering(read_path_factory):
    """Many writes per iteration, sizes 1 B - 4 MiB, write/writelines/
    write_zc (zcloop) interleaved: the peer gets a byte-exact stream."""
    is_zc = read_path_factory.is_zcloop

    async def main():
        loop = asyncio.get_running_loop()
        rng = random.Random(7)
        sp, tr, pr, srv = await loop_pair(loop, server_factory=Hasher)
        expect = hashlib.sha256()
        total = 0
        handles = []
        blob = pattern(4 * 1024 * 1024 + 1, seed=8)
        for it in range(25):
            for size in _random_sizes(rng, rng.randint(1, 12)):
                off = rng.randrange(len(blob) - size)
                chunk = blob[off:off + size]
                kind = rng.random()
                if kind < 0.4:
                    tr.write(chunk)
                elif kind < 0.55:
                    tr.write(bytearray(chunk))
                elif kind < 0.65:
                    tr.write(memoryview(blob)[off:off + size])
                elif kind < 0.8:
                    cut = rng.randint(0, size)
                    tr.writelines([chunk[:cut], bytearray(chunk[cut:])])
                elif is_zc:
                    buf = rng.choice([bytes, bytearray])(chunk)
                    handles.append(tr.write_zc(buf))
                else:
                    tr.write(chunk)
                expect.update(chunk)
                total += size
            if it % 3 == 0:
                await asyncio.sleep(0)
            if tr.get_write_buffer_size() > 16 * 1024 * 1024:
                while tr.get_write_buffer_size() > 1024 * 1024:
                    await asyncio.sleep(0.001)
        tr.write_eof()
        n, h = await sp.done
        assert (n, h) == (total, expect.hexdigest())
        for handle in handles:
            assert await handle.sent == handle.nbytes
            await handle.released
        tr.close()
        await pr.lost
        srv.close()
        await srv.wait_closed()
        return total
    assert run(read_path_factory, main, timeout=60) > 10 * 1024 * 1024


def test_bytearray_mutated_after_write(loop_factory):
    """write() snapshots: mutating the buffer afterwards changes nothing,
    also while earlier data is still queued.  zcloop on every version;
    asyncio only up to 3.11: its selector transport keeps a memoryview of
    what it could not send at once since 3.12 (gh-91166, no copy), so the
    queued buffers go out as mutated (or, were that fixed, as written)."""
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        with conn:
            big = pattern(4 * 1024 * 1024, seed=9)
            tr.write(big)                     # keeps the socket busy
            expected = [big]
            mutated = [big]
            for size in (10, 20_000, 1024 * 1024):
                ba = bytearray(pattern(size, seed=size))
                expected.append(bytes(ba))
                tr.write(ba)
                ba[:] = b'X' * size
                mutated.append(bytes(ba))
                mv_src = bytearray(pattern(size, seed=size + 1))
                expected.append(bytes(mv_src))
                tr.write(memoryview(mv_src))
                mv_src[:] = b'Y' * size
                mutated.append(bytes(mv_src))
            tr.write_eof()
            got = await loop.run_in_executor(None, recv_all_blocking, conn)
            if IS_312 and not loop_factory.is_zcloop:
                assert got in (b''.join(expected), b''.join(mutated))
            else:
                assert got == b''.join(expected)
            tr.close()
            await pr.lost
    run(loop_factory, main)


def test_memoryview_and_array_writes(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        with conn:
            data = pattern(100_000, seed=10)
            mv = memoryview(data)
            arr = array.array('i', range(1000))
            tr.write(mv[:10])
            tr.write(mv[10:50_000])
            tr.write(mv[50_000:])
            tr.write(memoryview(arr))           # itemsize 4: all bytes go
            tr.write(memoryview(b''))           # empty: nothing
            tr.write(b'')
            tr.write_eof()
            got = await loop.run_in_executor(None, recv_all_blocking, conn)
            assert got == data + arr.tobytes()
            tr.close()
            await pr.lost
    run(loop_factory, main)


def test_write_type_errors():
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        out = []
        with conn:
            for bad in ('text', None, 42, [b'x']):
                with pytest.raises(TypeError) as info:
                    tr.write(bad)
                out.append(str(info.value))
            # writelines() is all or nothing (the message is version specific).
            with pytest.raises(TypeError):
                tr.writelines([b'not sent', 'text'])
            tr.write_eof()
            got = await loop.run_in_executor(None, recv_all_blocking, conn)
            out.append(got)
            tr.close()
            await pr.lost
        return out
    a, z = both(main)
    assert a == z
    assert a[0] == "data argument must be a bytes-like object, not 'str'"
    assert a[-1] == b''


def test_write_after_close_dropped_and_warns(caplog):
    """Writes after close / connection loss are dropped silently; asyncio
    logs 'socket.send() raised exception.' past a threshold."""
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        with conn:
            tr.close()
            tr.write(b'dropped while closing')
            await pr.lost
            caplog.clear()
            for _ in range(10):
                tr.write(b'dropped after lost')
            warnings = [r.getMessage() for r in caplog.records
                        if r.name == 'asyncio' and r.levelno == logging.WARNING]
            got = await loop.run_in_executor(None, recv_all_blocking, conn)
            assert got == b''
        return warnings
    with caplog.at_level(logging.WARNING, logger='asyncio'):
        a, z = both(main)
    assert a == z
    assert a and set(a) == {'socket.send() raised exception.'}


def test_write_buffer_limits():
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        out = []
        with conn:
            out.append(tr.get_write_buffer_limits())
            tr.set_write_buffer_limits(high=100)
            out.append(tr.get_write_buffer_limits())
            tr.set_write_buffer_limits(low=100)
            out.append(tr.get_write_buffer_limits())
            tr.set_write_buffer_limits(high=1000, low=10)
            out.append(tr.get_write_buffer_limits())
            tr.set_write_buffer_limits()
            out.append(tr.get_write_buffer_limits())
            for kw in (dict(high=1, low=2), dict(high=-1), dict(low=-1, high=0)):
                with pytest.raises(ValueError) as info:
                    tr.set_write_buffer_limits(**kw)
                out.append(str(info.value))
            out.append(tr.get_write_buffer_size())
            tr.close()
            await pr.lost
        return out
    a, z = both(main)
    assert a == z
    assert a[0] == (16384, 65536)


def test_backpressure_slow_reader(loop_factory):
    """The peer doesn't read: pause_writing fires, the buffer size is
    reported; once the peer reads, resume_writing fires and nothing is lost."""
    total = 8 * 1024 * 1024
    chunk = 64 * 1024

    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        payload = pattern(total, seed=11)
        with conn:
            sent = 0
            while pr.writable.is_set() and sent < total:
                tr.write(payload[sent:sent + chunk])
                sent += chunk
                await asyncio.sleep(0)
            assert pr.pauses == 1
            assert tr.get_write_buffer_size() > tr.get_write_buffer_limits()[1]
            reader = loop.run_in_executor(None, recv_exactly_blocking, conn, total)
            while sent < total:
                await pr.writable.wait()
                tr.write(payload[sent:sent + chunk])
                sent += chunk
            got = await reader
            assert digest(got) == digest(payload)
            while tr.get_write_buffer_size():
                await asyncio.sleep(0.001)
            assert pr.resumes == pr.pauses >= 1
            tr.close()
            await pr.lost
    run(loop_factory, main)


def test_small_writes_behind_a_slow_reader(loop_factory):
    """Thousands of small writes while the peer reads slowly: the send queue
    keeps a backlog that never drains for long (zcloop's queue reuses and
    compacts its slots) and the peer still gets a byte-exact stream."""
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop, rcvbuf=16 * 1024)
        tr.set_write_buffer_limits(high=4 * 1024 * 1024)
        rng = random.Random(5)
        blob = pattern(64 * 1024, seed=12)
        chunks = []
        for _ in range(20000):
            off, size = rng.randrange(60000), rng.randint(1, 300)
            chunks.append(blob[off:off + size])
        payload = b''.join(chunks)

        def slow_reader():
            got = bytearray()
            while len(got) < len(payload):
                got += conn.recv(rng.randint(1, 4096))
            return bytes(got)

        with conn:
            reader = loop.run_in_executor(None, slow_reader)
            for i, chunk in enumerate(chunks):
                tr.write(chunk)
                if i % 2500 == 0:       # more than one request's 1024 iovecs
                    await asyncio.sleep(0)
            got = await reader
            assert len(got) == len(payload) and digest(got) == digest(payload)
            while tr.get_write_buffer_size():
                await asyncio.sleep(0.001)
            tr.close()
            await pr.lost
    run(loop_factory, main)


def test_pause_writing_on_set_limits(loop_factory):
    """set_write_buffer_limits() below the current buffer pauses at once."""
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        with conn:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            tr.set_write_buffer_limits(high=64 * 1024 * 1024)
            tr.write(pattern(6 * 1024 * 1024, seed=12))
            await asyncio.sleep(0.05)
            assert pr.pauses == 0
            assert tr.get_write_buffer_size() > 1000
            pauses = pr.pauses
            tr.set_write_buffer_limits(high=1000)
            assert pr.pauses == pauses + 1
            tr.abort()
            await pr.lost
    run(loop_factory, main)


def test_peer_reset_mid_write(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        block = pattern(1024 * 1024, seed=13)
        for _ in range(8):
            tr.write(block)
        await asyncio.sleep(0.05)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\0\0\0\0\0\0\0')
        conn.close()          # unread data + linger 0: RST
        for _ in range(100):
            if pr.lost.done():
                break
            tr.write(block)
            await asyncio.sleep(0.01)
        exc = await pr.lost
        return type(exc)
    exc_type = run(loop_factory, main)
    assert exc_type in (ConnectionResetError, BrokenPipeError)


def test_close_flushes_then_lost(read_path_factory):
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        with conn:
            payload = pattern(12 * 1024 * 1024, seed=14)
            tr.write(payload)
            tr.close()
            assert tr.is_closing()
            tr.close()     # idempotent
            got = await loop.run_in_executor(None, recv_all_blocking, conn)
            assert digest(got) == digest(payload)
            assert await pr.lost is None
        return pr.events
    assert run(read_path_factory, main) == ['made', 'lost']


def test_abort_drops_queue(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        with conn:
            tr.write(pattern(16 * 1024 * 1024, seed=15))
            tr.abort()
            assert tr.is_closing()
            assert await pr.lost is None
            assert tr.get_extra_info('socket') is not None
            got = await loop.run_in_executor(None, _recv_until_error, conn)
            assert len(got) < 16 * 1024 * 1024
        return pr.events
    assert run(loop_factory, main) == ['made', 'lost']


def _recv_until_error(sock):
    try:
        return recv_all_blocking(sock)
    except ConnectionResetError:
        return b''


def test_set_protocol_switch(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        with conn:
            conn.sendall(b'first')
            await pr.wait_bytes(5)
            second = Recorder()
            tr.set_protocol(second)
            assert tr.get_protocol() is second
            conn.sendall(b'second')
            await second.wait_bytes(6)
            assert bytes(pr.data) == b'first' and bytes(second.data) == b'second'
            conn.close()
            await second.lost
            assert not pr.lost.done()
    run(loop_factory, main)


class _NoDataReceived:
    """A duck-typed protocol without data_received()."""

    def __init__(self):
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        pass

    def connection_lost(self, exc):
        self.lost.set_result(exc)


def test_protocol_without_data_received(loop_factory):
    # A duck-typed protocol without data_received fails at the first data.
    async def main():
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda lp, ctx: errors.append(ctx))
        tr, pr, conn = await raw_peer(loop, _NoDataReceived)
        with conn:
            conn.sendall(b'x')
            exc = await pr.lost
        return type(exc).__name__, [ctx['message'] for ctx in errors]
    assert run(loop_factory, main) == (
        'AttributeError', ['Fatal error: protocol.data_received() call failed.'])


def test_protocol_released_after_connection_lost(loop_factory):
    # The transport drops its protocol once connection_lost() ran: no
    # reference keeps the protocol alive.
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        with conn:
            conn.sendall(b'data')
            await pr.wait_bytes(4)
            conn.close()
            await pr.lost
        await asyncio.sleep(0)
        ref = weakref.ref(pr)
        pr.transport = None
        del pr
        gc.disable()        # no help from the cycle collector
        try:
            alive = ref() is not None
        finally:
            gc.enable()
        return alive, tr.is_closing()
    assert run(loop_factory, main) == (False, True)


def test_data_received_rebound_on_instance(loop_factory):
    # asyncio looks data_received up on every call, so a protocol may rebind
    # it (a handshake phase, then the data phase); uvloop would keep calling
    # the first one.
    class Phased(Recorder):
        def data_received(self, data):
            self.events.append(('hello', bytes(data)))
            self.data_received = self.data_phase

        def data_phase(self, data):
            Recorder.data_received(self, data)

    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop, Phased)
        with conn:
            conn.sendall(b'hi')
            while not pr.events[1:]:
                await asyncio.sleep(0.001)
            conn.sendall(b'payload')
            await pr.wait_bytes(7)
            tr.close()
            await pr.lost
        return pr.events[1], bytes(pr.data)
    assert run(loop_factory, main) == (('hello', b'hi'), b'payload')


def test_unix_transport_roundtrip(read_path_factory, tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await unix_raw_peer(loop, str(tmp_path / 'u'))
        with conn:
            payload = pattern(5 * 1024 * 1024, seed=16)
            tr.write(payload)
            tr.write_eof()
            got = await loop.run_in_executor(None, recv_all_blocking, conn)
            assert digest(got) == digest(payload)
            conn.sendall(b'reply')
            conn.shutdown(socket.SHUT_WR)
            await pr.eof
            assert bytes(pr.data) == b'reply'
            await pr.lost
    run(read_path_factory, main)


# ----------------------------------------------------------------------
# Many connections


def test_1000_concurrent_echo_connections(read_path_factory):
    n = 1000
    raise_nofile(4 * n + 256)

    async def main():
        loop = asyncio.get_running_loop()
        server_protos = []

        def server_factory():
            p = Recorder(echo=True)
            server_protos.append(p)
            return p
        srv = await loop.create_server(server_factory, '127.0.0.1', 0, backlog=n)
        port = srv.sockets[0].getsockname()[1]
        rng = random.Random(17)
        sizes = [rng.randint(1, 16 * 1024) for _ in range(n)]

        async def client(i):
            tr, pr = await loop.create_connection(Recorder, '127.0.0.1', port)
            msg = pattern(sizes[i], seed=i)
            tr.write(msg)
            got = await pr.wait_bytes(len(msg))
            return tr, pr, got == msg

        results = []
        for start in range(0, n, 250):   # connect in waves, stay open together
            results += await asyncio.gather(*(client(i) for i in range(start,
                                                                     min(n, start + 250))))
        assert all(ok for _, _, ok in results)
        # All 1000 are open at once; a second round trip on each.
        for tr, pr, _ in results:
            tr.write(b'!')
        for i, (tr, pr, _) in enumerate(results):
            got = await pr.wait_bytes(sizes[i] + 1)
            assert got == pattern(sizes[i], seed=i) + b'!'
        for tr, pr, _ in results:
            tr.close()
        await asyncio.gather(*(pr.lost for _, pr, _ in results))
        await asyncio.gather(*(p.lost for p in server_protos))
        srv.close()
        await srv.wait_closed()
        return sum(len(pr.data) for _, pr, _ in results)

    before = fd_count()
    run(read_path_factory, main, timeout=60)
    assert fd_count() <= before


# ----------------------------------------------------------------------
# sock_connect / sock_sendall


def test_sock_connect_and_sendall(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        lsock = socket.socket()
        lsock.bind(('127.0.0.1', 0))
        lsock.listen()
        s = socket.socket()
        s.setblocking(False)
        await loop.sock_connect(s, lsock.getsockname())
        conn, _ = lsock.accept()
        payload = pattern(8 * 1024 * 1024, seed=60)
        reader = loop.run_in_executor(None, recv_exactly_blocking, conn, len(payload))
        assert await loop.sock_sendall(s, payload) is None
        assert digest(await reader) == digest(payload)
        # A bytearray / memoryview works the same.
        reader = loop.run_in_executor(None, recv_exactly_blocking, conn, 300_000)
        await loop.sock_sendall(s, memoryview(bytearray(pattern(300_000, seed=61))))
        assert await reader == pattern(300_000, seed=61)
        s.close()
        conn.close()
        lsock.close()
    run(loop_factory, main)


def test_sock_connect_errors():
    async def main():
        loop = asyncio.get_running_loop()
        out = []
        port = free_port()
        s = socket.socket()
        s.setblocking(False)
        with pytest.raises(ConnectionRefusedError) as info:
            await loop.sock_connect(s, ('127.0.0.1', port))
        out.append(str(info.value).replace(str(port), '<X>'))
        s.close()
        loop.set_debug(True)
        b = socket.socket()                # blocking: refused in debug mode
        with pytest.raises(ValueError) as info:
            await loop.sock_connect(b, ('127.0.0.1', port))
        out.append(str(info.value))
        with pytest.raises(ValueError) as info:
            await loop.sock_sendall(b, b'x')
        out.append(str(info.value))
        b.close()
        loop.set_debug(False)
        return out
    a, z = both(main)
    assert a == z
    assert a[0] == "[Errno 111] Connect call failed ('127.0.0.1', <X>)"


def test_sock_sendall_peer_reset(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        b.close()
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            await loop.sock_sendall(a, b'x' * (4 * 1024 * 1024))
        a.close()
    run(loop_factory, main)


def test_sock_sendall_cancel_keeps_buffer_alive(loop_factory):
    """Cancel a sock_sendall blocked on a full socket: no crash, and the
    buffer is usable again once the operation has been cancelled."""
    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        a.setblocking(False)
        data = bytearray(pattern(8 * 1024 * 1024, seed=62))
        task = asyncio.create_task(loop.sock_sendall(a, data))
        await asyncio.sleep(0.05)
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(200):
            try:
                data.append(0)          # BufferError while still exported
                break
            except BufferError:
                await asyncio.sleep(0.01)
        else:
            raise AssertionError('buffer stayed exported after cancellation')
        a.close()
        b.close()
    run(loop_factory, main)


def test_write_after_close_while_buffered_goes_out(loop_factory):
    """asyncio's socket transport keeps accepting write() after close()
    while its buffer is non-empty (the bytes go out before connection_lost);
    with an empty buffer at close() later writes are dropped."""
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, raw = await raw_peer(loop, rcvbuf=4096)
        try:
            head = pattern(4 * 1024 * 1024, seed=1)
            tail = pattern(1000, seed=2)
            tr.write(head)                  # more than the socket takes at once
            assert tr.get_write_buffer_size() > 0
            tr.close()
            tr.write(tail)                  # queued behind head, as asyncio
            received = await loop.run_in_executor(None, recv_all_blocking, raw)
            await pr.lost
            return received == head + tail, len(received)
        finally:
            raw.close()
    assert run(loop_factory, main) == (True, 4 * 1024 * 1024 + 1000)


def test_write_after_close_with_empty_buffer_dropped(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, raw = await raw_peer(loop)
        try:
            tr.write(b'x')
            await asyncio.sleep(0.05)       # sent: the buffer is empty
            tr.close()
            tr.write(b'y')                  # dropped (connection is lost)
            received = await loop.run_in_executor(None, recv_all_blocking, raw)
            await pr.lost
            return received
        finally:
            raw.close()
    assert run(loop_factory, main) == b'x'

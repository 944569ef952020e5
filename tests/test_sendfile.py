"""loop.sendfile() / loop.sock_sendfile() on asyncio's loop and on zcloop.

zcloop splices file -> pipe -> socket on the ring (IORING_OP_SPLICE) and
falls back to read + write for what splice cannot take (BytesIO, pipes,
TLS).  Every scenario is real: a 100 MiB file on disk, loopback TCP or
Unix sockets, a receiver thread hashing what arrives; the same expectations
hold on asyncio's loop (which validates them).
"""
import asyncio
import errno
import hashlib
import io
import os
import random
import socket
import sys
import threading

import pytest

from helpers.loops import run_on
from streamutil import tls_context_pair

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 30            # hang guard for one scenario, never a timing assertion
BIG = 100 << 20
SMALL = (3 << 20) + 123


def _run(loop_factory, main, *, debug=None):
    async def guarded():
        return await asyncio.wait_for(main(), TIMEOUT)
    return run_on(loop_factory, guarded, debug=debug)


def _write_file(path, size, seed):
    h = hashlib.sha256()
    rnd = random.Random(seed)
    with open(path, 'wb') as f:
        left = size
        while left:
            block = rnd.randbytes(min(left, 1 << 20))
            h.update(block)
            f.write(block)
            left -= len(block)
    return h.hexdigest()


@pytest.fixture(scope='module')
def bigfile(tmp_path_factory):
    path = tmp_path_factory.mktemp('sendfile') / 'big.bin'
    return str(path), _write_file(path, BIG, 1)


@pytest.fixture(scope='module')
def smallfile(tmp_path_factory):
    path = tmp_path_factory.mktemp('sendfile') / 'small.bin'
    _write_file(path, SMALL, 2)
    with open(path, 'rb') as f:
        return str(path), f.read()


def tcp_pair():
    """A connected loopback TCP pair: (client, server), both blocking."""
    with socket.socket() as lst:
        lst.bind(('127.0.0.1', 0))
        lst.listen(1)
        client = socket.create_connection(lst.getsockname())
        server, _ = lst.accept()
    return client, server


def _pipe_fds():
    n = 0
    for name in os.listdir('/proc/self/fd'):
        try:
            if os.readlink(f'/proc/self/fd/{name}').startswith('pipe:'):
                n += 1
        except OSError:
            pass
    return n


def _fds():
    return len(os.listdir('/proc/self/fd'))


class Receiver:
    """Reads a blocking socket in a thread until EOF (or `close_after`
    bytes, then resets the connection), hashing what arrives.  With
    `gate`, it reads nothing until the gate (threading.Event) is set."""

    def __init__(self, sock, *, keep=False, gate=None, close_after=None):
        self.sock = sock
        self.keep = keep
        self.gate = gate
        self.close_after = close_after
        self.hash = hashlib.sha256()
        self.nbytes = 0
        self.data = bytearray()
        self.error = None
        self.thread = threading.Thread(target=self._body, daemon=True)
        self.thread.start()

    def _body(self):
        try:
            self.sock.settimeout(TIMEOUT)
            if self.gate is not None:
                self.gate.wait(TIMEOUT)
            while True:
                want = 1 << 20
                if self.close_after is not None:
                    want = min(want, self.close_after - self.nbytes)
                    if want <= 0:
                        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                             b'\x01\x00\x00\x00\x00\x00\x00\x00')
                        break
                chunk = self.sock.recv(want)
                if not chunk:
                    break
                self.hash.update(chunk)
                self.nbytes += len(chunk)
                if self.keep:
                    self.data += chunk
        except OSError as exc:          # pragma: no cover - reported below
            self.error = exc
        finally:
            self.sock.close()

    async def join(self):
        await asyncio.get_running_loop().run_in_executor(None, self.thread.join, TIMEOUT)
        assert not self.thread.is_alive()
        assert self.error is None, self.error
        return self.nbytes, self.hash.hexdigest()


class Proto(asyncio.Protocol):
    def __init__(self):
        loop = asyncio.get_running_loop()
        self.data = bytearray()
        self.lost = loop.create_future()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


async def _connect(loop, client):
    client.setblocking(False)
    return await loop.create_connection(Proto, sock=client)


# ----------------------------------------------------------------------
# 100 MiB, byte-exact


def test_sendfile_transport_100mib(loop_factory, bigfile):
    path, sha = bigfile

    async def main():
        loop = asyncio.get_running_loop()
        client, server = tcp_pair()
        rx = Receiver(server)
        transport, proto = await _connect(loop, client)
        with open(path, 'rb') as f:
            n = await loop.sendfile(transport, f)
            pos = f.tell()
        transport.close()
        await proto.lost
        return n, pos, await rx.join()

    assert _run(loop_factory, main) == (BIG, BIG, (BIG, sha))


def test_sock_sendfile_100mib(loop_factory, bigfile):
    path, sha = bigfile

    async def main():
        loop = asyncio.get_running_loop()
        client, server = tcp_pair()
        client.setblocking(False)
        rx = Receiver(server)
        with open(path, 'rb') as f:
            n = await loop.sock_sendfile(client, f)
            pos = f.tell()
        client.close()
        return n, pos, await rx.join()

    assert _run(loop_factory, main) == (BIG, BIG, (BIG, sha))


def test_sendfile_unix_transport(loop_factory, smallfile, tmp_path):
    path, data = smallfile

    async def main():
        loop = asyncio.get_running_loop()
        got = loop.create_future()
        received = bytearray()

        class Sink(asyncio.Protocol):
            def data_received(self, chunk):
                received.extend(chunk)

            def eof_received(self):
                got.set_result(bytes(received))

        srv = await loop.create_unix_server(Sink, str(tmp_path / 's.sock'))
        transport, proto = await loop.create_unix_connection(Proto, str(tmp_path / 's.sock'))
        with open(path, 'rb') as f:
            n = await loop.sendfile(transport, f, 10)
        transport.write_eof()
        out = await got
        transport.close()
        srv.close()
        await srv.wait_closed()
        return n, out == data[10:]

    assert _run(loop_factory, main) == (SMALL - 10, True)


# ----------------------------------------------------------------------
# offset / count / file position


CASES = [
    # (offset, count)
    (0, None),
    (100, 1000),
    (5, None),
    (0, SMALL),
    (SMALL - 10, 100),          # count past EOF: stops at EOF
    (SMALL - 1, None),
    (SMALL, None),              # nothing left: 0, position untouched
    (SMALL + 10, None),
    (SMALL + 10, 5),
    (1 << 20, (1 << 20) + 1),   # crosses zcloop's 1 MiB splice chunks
]


@pytest.mark.parametrize('api', ['transport', 'sock'])
@pytest.mark.parametrize('offset,count', CASES)
def test_offset_count_and_position(loop_factory, smallfile, api, offset, count):
    """Bytes sent, return value and the file position afterwards, as
    asyncio: the position is offset + sent if anything was sent, else
    unchanged; the position before the call does not matter."""
    path, data = smallfile
    expected = data[offset:offset + count if count is not None else None]

    async def main():
        loop = asyncio.get_running_loop()
        client, server = tcp_pair()
        rx = Receiver(server, keep=True)
        with open(path, 'rb') as f:
            f.seek(7)
            if api == 'transport':
                transport, proto = await _connect(loop, client)
                n = await loop.sendfile(transport, f, offset, count)
                transport.close()
                await proto.lost
            else:
                client.setblocking(False)
                n = await loop.sock_sendfile(client, f, offset, count)
                client.close()
            pos = f.tell()
        await rx.join()
        return n, pos, bytes(rx.data) == expected

    n, pos, same = _run(loop_factory, main)
    assert n == len(expected)
    assert same
    assert pos == (offset + n if n else 7)


def test_empty_file(loop_factory, tmp_path):
    empty = tmp_path / 'empty'
    empty.write_bytes(b'')

    async def main():
        loop = asyncio.get_running_loop()
        client, server = tcp_pair()
        rx = Receiver(server)
        transport, proto = await _connect(loop, client)
        with open(empty, 'rb') as f:
            a = await loop.sendfile(transport, f)
            b = await loop.sendfile(transport, f, 0, 10)
            pos = f.tell()
        transport.close()
        await proto.lost
        return a, b, pos, await rx.join()

    assert _run(loop_factory, main) == (0, 0, 0, (0, hashlib.sha256().hexdigest()))


# ----------------------------------------------------------------------
# Non-regular files: fallback


@pytest.mark.parametrize('api', ['transport', 'sock'])
def test_bytesio(loop_factory, api):
    """A BytesIO has no fileno(): SendfileNotAvailableError('not a regular
    file') without fallback; with it, read + send, position updated."""
    payload = os.urandom(300_000)

    async def main():
        loop = asyncio.get_running_loop()
        client, server = tcp_pair()
        rx = Receiver(server, keep=True)
        if api == 'transport':
            transport, proto = await _connect(loop, client)

            def send(f, *a, **kw):
                return loop.sendfile(transport, f, *a, **kw)
        else:
            client.setblocking(False)

            def send(f, *a, **kw):
                return loop.sock_sendfile(client, f, *a, **kw)
        bio = io.BytesIO(payload)
        bio.seek(3)
        with pytest.raises(asyncio.SendfileNotAvailableError, match='not a regular file'):
            await send(bio, fallback=False)
        pos_after_error = bio.tell()
        n1 = await send(bio, 10, 1000)
        pos1 = bio.tell()
        n2 = await send(bio)
        pos2 = bio.tell()
        if api == 'transport':
            transport.close()
            await proto.lost
        else:
            client.close()
        await rx.join()
        return pos_after_error, n1, pos1, n2, pos2, bytes(rx.data)

    # The fallback seeks only for a non-zero offset: offset=0 continues from
    # the current position, and afterwards seeks to offset + sent, which is
    # not where it stopped (asyncio's semantics, kept).
    assert _run(loop_factory, main) == (3, 1000, 1010, len(payload) - 1010,
                                        len(payload) - 1010, payload[10:])


@pytest.mark.parametrize('api', ['transport', 'sock'])
def test_pipe_source(loop_factory, is_zcloop, api):
    """A pipe as the file.  asyncio (3.11) takes its st_size (0) for the
    file size and returns 0 without sending anything, with or without
    fallback.  zcloop refuses it for splice (SendfileNotAvailableError
    without fallback) and copies it with fallback."""
    payload = os.urandom(200_000)

    async def main():
        loop = asyncio.get_running_loop()
        client, server = tcp_pair()
        rx = Receiver(server, keep=True)
        if api == 'transport':
            transport, proto = await _connect(loop, client)

            def send(f, **kw):
                return loop.sendfile(transport, f, **kw)
        else:
            client.setblocking(False)

            def send(f, **kw):
                return loop.sock_sendfile(client, f, **kw)
        r, w = os.pipe()

        def write():
            try:
                os.write(w, payload)
            except BrokenPipeError:
                pass                # asyncio does not read the pipe
            finally:
                os.close(w)
        writer = threading.Thread(target=write)
        writer.start()
        out = []
        with open(r, 'rb', buffering=0) as pf:
            try:
                out.append(await send(pf, fallback=False))
            except asyncio.SendfileNotAvailableError as exc:
                out.append(str(exc))
            out.append(await send(pf))
        writer.join()
        if api == 'transport':
            transport.close()
            await proto.lost
        else:
            client.close()
        await rx.join()
        out.append(bytes(rx.data) == payload)
        return out

    if is_zcloop:
        assert _run(loop_factory, main) == ['not a regular file', len(payload), True]
    else:
        assert _run(loop_factory, main) == [0, 0, False]


# ----------------------------------------------------------------------
# Parameter errors: asyncio's exception types and messages


BAD_PARAMS = [
    (dict(offset=-1), ValueError, 'offset must be a non-negative integer (got -1)'),
    (dict(offset='1'), TypeError, "offset must be a non-negative integer (got '1')"),
    (dict(offset=1.0), TypeError, 'offset must be a non-negative integer (got 1.0)'),
    (dict(count=0), ValueError, 'count must be a positive integer (got 0)'),
    (dict(count=-5), ValueError, 'count must be a positive integer (got -5)'),
    (dict(count=1.5), TypeError, 'count must be a positive integer (got 1.5)'),
    (dict(count='3'), TypeError, "count must be a positive integer (got '3')"),
]


@pytest.mark.parametrize('api', ['transport', 'sock'])
def test_parameter_errors(loop_factory, smallfile, api):
    path, _ = smallfile

    async def main():
        loop = asyncio.get_running_loop()
        client, server = tcp_pair()
        rx = Receiver(server)
        if api == 'transport':
            transport, proto = await _connect(loop, client)

            def send(f, **kw):
                return loop.sendfile(transport, f, **kw)
        else:
            client.setblocking(False)

            def send(f, **kw):
                return loop.sock_sendfile(client, f, **kw)
        got = []
        for kw, _, _ in BAD_PARAMS:
            with open(path, 'rb') as f:
                f.seek(11)
                try:
                    await send(f, **kw)
                    got.append(None)
                except Exception as exc:        # noqa: BLE001 - compared below
                    got.append((type(exc), str(exc), f.tell()))
        with open(path, 'r') as f:              # text mode
            try:
                await send(f)
            except ValueError as exc:
                got.append(str(exc))
        if api == 'transport':
            transport.close()
            await proto.lost
        else:
            client.close()
        await rx.join()
        return got

    assert _run(loop_factory, main) == [(t, m, 11) for _, t, m in BAD_PARAMS] + [
        'file should be opened in binary mode']


def test_sock_sendfile_socket_errors(loop_factory, smallfile, certs):
    path, _ = smallfile

    async def main():
        loop = asyncio.get_running_loop()
        got = []
        with open(path, 'rb') as f:
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.setblocking(False)
            udp.connect(('127.0.0.1', 9))
            with udp:
                try:
                    await loop.sock_sendfile(udp, f)
                except ValueError as exc:
                    got.append(str(exc))
            client, server = tcp_pair()
            tls = certs['client'].wrap_socket(client, do_handshake_on_connect=False,
                                              server_hostname='localhost')
            with tls, server:
                tls.setblocking(False)
                try:
                    await loop.sock_sendfile(tls, f)
                except TypeError as exc:
                    got.append(str(exc))
        return got

    assert _run(loop_factory, main) == ['only SOCK_STREAM type sockets are supported',
                                        'Socket cannot be of type SSLSocket']


def test_sock_sendfile_blocking_socket_debug(loop_factory, smallfile):
    path, _ = smallfile

    async def main():
        loop = asyncio.get_running_loop()
        client, server = tcp_pair()
        with client, server, open(path, 'rb') as f:
            with pytest.raises(ValueError, match='the socket must be non-blocking'):
                await loop.sock_sendfile(client, f)

    _run(loop_factory, main, debug=True)


def test_sendfile_unsupported_transports(loop_factory, smallfile):
    """Transports asyncio has no sendfile for (datagram, write pipe), and a
    closing transport: RuntimeError with asyncio's messages."""
    path, _ = smallfile

    async def main():
        loop = asyncio.get_running_loop()
        got = []
        with open(path, 'rb') as f:
            dt, dp = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=('127.0.0.1', 0),
                remote_addr=('127.0.0.1', 9))
            r, w = os.pipe()
            pt, pp = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(w, 'wb'))
            for tr in (dt, pt):
                for fb in (True, False):
                    try:
                        await loop.sendfile(tr, f, fallback=fb)
                        got.append(None)
                    except RuntimeError as exc:
                        got.append(str(exc).split(' <')[0])
            dt.close()
            pt.close()
            os.close(r)
            client, server = tcp_pair()
            transport, proto = await _connect(loop, client)
            transport.close()
            try:
                await loop.sendfile(transport, f)
            except RuntimeError as exc:
                got.append(str(exc))
            await proto.lost
            server.close()
            await asyncio.sleep(0)
        return got

    unsupported = 'sendfile is not supported for transport'
    assert _run(loop_factory, main) == [unsupported] * 4 + ['Transport is closing']


# ----------------------------------------------------------------------
# While sendfile runs: writes refused, reading paused, order kept


@pytest.mark.parametrize('native', [True, False])
def test_write_during_sendfile(loop_factory, smallfile, native):
    """Native sendfile: write()/writelines() meanwhile raise RuntimeError(
    'unable to write; sendfile is in progress').  The fallback copy (here a
    BytesIO) does not refuse them (asyncio neither): they go out before the
    first block.  Data written before is sent before the file, data written
    after comes after it; reading is paused meanwhile."""
    path, data = smallfile

    async def main():
        loop = asyncio.get_running_loop()
        client, server = tcp_pair()
        gate = threading.Event()
        server.sendall(b'ping')
        rx = Receiver(server, keep=True, gate=gate)
        transport, proto = await _connect(loop, client)
        while proto.data != b'ping':
            await asyncio.sleep(0.001)
        transport.write(b'head')
        with open(path, 'rb') as f:
            src = f if native else io.BytesIO(f.read())
            task = asyncio.ensure_future(loop.sendfile(transport, src))
            await asyncio.sleep(0)
            errors = []
            for call in (lambda: transport.write(b'x'), lambda: transport.writelines([b'y'])):
                try:
                    call()
                    errors.append(None)
                except RuntimeError as exc:
                    errors.append(str(exc))
            reading = transport.is_reading()
            gate.set()
            n = await task
        reading_after = transport.is_reading()
        transport.write(b'tail')
        transport.close()
        await proto.lost
        await rx.join()
        return errors, reading, reading_after, n, bytes(rx.data)

    errors, reading, reading_after, n, received = _run(loop_factory, main)
    assert (reading, reading_after, n) == (False, True, SMALL)
    if native:
        # 3.12 gave writelines() its own message (asyncio's and zcloop's).
        assert errors == ['unable to write; sendfile is in progress',
                          'unable to %s; sendfile is in progress'
                          % ('writelines' if sys.version_info >= (3, 12) else 'write')]
        assert received == b'head' + data + b'tail'
    else:
        assert errors == [None, None]
        assert received == b'headxy' + data + b'tail'


# ----------------------------------------------------------------------
# Flow control and back-pressure


@pytest.mark.parametrize('api', ['transport', 'sock'])
def test_native_backpressure_keeps_loop_running(loop_factory, bigfile, api):
    """The peer does not read until the loop has run 20 more callbacks of
    another task: sendfile must wait for the socket without blocking the
    loop (and without failing with EAGAIN), then finish byte-exact.  The
    transport's own write buffer stays empty throughout."""
    path, sha = bigfile

    async def main():
        loop = asyncio.get_running_loop()
        client, server = tcp_pair()
        gate = threading.Event()
        rx = Receiver(server, gate=gate)
        f = open(path, 'rb')
        if api == 'transport':
            transport, proto = await _connect(loop, client)
            coro = loop.sendfile(transport, f, 0, 32 << 20)
        else:
            client.setblocking(False)
            coro = loop.sock_sendfile(client, f, 0, 32 << 20)
        task = asyncio.ensure_future(coro)
        ticks = 0
        buffered = 0
        while not task.done() and ticks < 20:
            await asyncio.sleep(0.005)
            ticks += 1
            if api == 'transport':
                buffered = max(buffered, transport.get_write_buffer_size())
        pending = not task.done()
        gate.set()
        n = await task
        f.close()
        if api == 'transport':
            transport.close()
            await proto.lost
        else:
            client.close()
        nbytes, _ = await rx.join()
        return pending, ticks, buffered, n, nbytes

    assert _run(loop_factory, main) == (True, 20, 0, 32 << 20, 32 << 20)


def test_fallback_flow_control_bounded(loop_factory):
    """Fallback copy (BytesIO) to a peer that reads slowly: the copy loop
    waits for resume_writing(), so the transport buffers at most
    high-water + one 16 KiB block.  The bytes arrive intact on zcloop;
    on asyncio only up to 3.11: from 3.12 its selector transport queues a
    memoryview of what it could not send (gh-91166, no copy), and its
    fallback loop refills that same buffer for the next block, so the
    bytes still queued are overwritten (the count stays right)."""
    payload = os.urandom(8 << 20)

    async def main():
        loop = asyncio.get_running_loop()
        client, server = tcp_pair()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        gate = threading.Event()
        rx = Receiver(server, gate=gate)
        transport, proto = await _connect(loop, client)
        low, high = transport.get_write_buffer_limits()
        task = asyncio.ensure_future(loop.sendfile(transport, io.BytesIO(payload)))
        biggest = 0
        ticks = 0
        while not task.done():
            biggest = max(biggest, transport.get_write_buffer_size())
            await asyncio.sleep(0)
            if biggest:
                ticks += 1          # the peer starts reading a while after
            if ticks == 100:        # the buffer filled up
                gate.set()
        gate.set()
        n = await task
        transport.close()
        await proto.lost
        got = await rx.join()
        return n, biggest <= high + 16384, biggest > 0, got[1] == hashlib.sha256(
            payload).hexdigest()

    result = _run(loop_factory, main)
    if sys.version_info >= (3, 12) and loop_factory is asyncio.SelectorEventLoop:
        result = result[:3] + (True,)
    assert result == (8 << 20, True, True, True)


@pytest.fixture(scope='module')
def certs():
    server_ctx, client_ctx = tls_context_pair()
    return dict(server=server_ctx, client=client_ctx)


def test_sendfile_tls_fallback(loop_factory, bigfile, certs):
    """TLS transports take the fallback path: 16 MiB byte-exact to a slowly
    reading TLS server, with the TLS transport's and the socket
    transport's buffers bounded; fallback=False is refused as asyncio."""
    path, _ = bigfile
    size = 16 << 20
    with open(path, 'rb') as f:
        expected = hashlib.sha256(f.read(size)).hexdigest()

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        class SlowSink(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport = transport
                self.h = hashlib.sha256()
                self.n = 0

            def data_received(self, data):
                self.h.update(data)
                self.n += len(data)
                # Read slowly: a pause after every chunk.
                self.transport.pause_reading()
                loop.call_later(0.0005, self.transport.resume_reading)
                if self.n == size:
                    done.set_result(self.h.hexdigest())

        srv = await loop.create_server(SlowSink, '127.0.0.1', 0, ssl=certs['server'])
        port = srv.sockets[0].getsockname()[1]
        transport, proto = await loop.create_connection(
            Proto, '127.0.0.1', port, ssl=certs['client'], server_hostname='localhost')
        raw = transport.get_extra_info('ssl_object') and \
            transport._ssl_protocol._transport
        with open(path, 'rb') as f:
            try:
                await loop.sendfile(transport, f, fallback=False)
                refused = None
            except RuntimeError as exc:
                refused = str(exc).split(' <')[0]
            task = asyncio.ensure_future(loop.sendfile(transport, f, 0, size))
            tls_max = raw_max = 0
            while not task.done():
                tls_max = max(tls_max, transport.get_write_buffer_size())
                raw_max = max(raw_max, raw.get_write_buffer_size())
                await asyncio.sleep(0)
            n = await task
            pos = f.tell()
        digest = await done
        transport.close()
        await proto.lost
        srv.close()
        await srv.wait_closed()
        return refused, n, pos, digest, tls_max, raw_max

    refused, n, pos, digest, tls_max, raw_max = _run(loop_factory, main)
    assert refused == 'fallback is disabled and native sendfile is not supported for transport'
    assert (n, pos, digest) == (size, size, expected)
    # Unbounded buffering would reach the whole 16 MiB.
    assert tls_max <= 1 << 20, tls_max
    assert raw_max <= 1 << 20, raw_max


# ----------------------------------------------------------------------
# Errors and cancellation mid-way


def _written(sock):
    """Bytes the application wrote into a TCP socket it connect()ed so
    far: acknowledged (tcp_info.tcpi_bytes_acked, which counts the SYN on
    the connecting side) plus still queued (SIOCOUTQ)."""
    import fcntl
    import termios
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    acked = int.from_bytes(info[120:128], sys.byteorder)
    outq = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b'\0\0\0\0')
    return acked - 1 + int.from_bytes(outq, sys.byteorder)


@pytest.mark.parametrize('api', ['transport', 'sock'])
def test_position_after_peer_reset(loop_factory, bigfile, api):
    """The peer stops reading, then resets: sendfile fails and the file
    position is offset + exactly the bytes the socket accepted (asyncio
    documents file.tell() as the way to know how much was sent)."""
    path, _ = bigfile
    offset = 12345

    async def main():
        loop = asyncio.get_running_loop()
        client, server = tcp_pair()
        if api == 'transport':
            transport, proto = await _connect(loop, client)
        else:
            client.setblocking(False)
        with open(path, 'rb') as f:
            if api == 'transport':
                task = asyncio.ensure_future(loop.sendfile(transport, f, offset))
            else:
                task = asyncio.ensure_future(loop.sock_sendfile(client, f, offset))
            # Wait until the sender is stuck: nothing moves any more.
            samples = [-1, -2, -3]
            while len(set(samples[-3:])) > 1:
                await asyncio.sleep(0.01)
                samples.append(_written(client))
            accepted = samples[-1]
            assert not task.done()
            # Reset: unread data in the receive queue makes close() an RST.
            server.close()
            try:
                await task
                err = None
            except OSError as exc:
                err = exc
            pos = f.tell()
        if api == 'transport':
            transport.close()
            await proto.lost
        else:
            client.close()
        return err, pos - offset, accepted

    err, sent, accepted = _run(loop_factory, main)
    assert isinstance(err, ConnectionError), err
    assert sent == accepted > 0


@pytest.mark.parametrize('api', ['transport', 'sock'])
def test_peer_closes_mid_sendfile(loop_factory, bigfile, api):
    """The peer resets the connection after 2 MiB: sendfile fails with a
    connection error; the file position says how far it got (< size)."""
    path, _ = bigfile

    async def main():
        loop = asyncio.get_running_loop()
        client, server = tcp_pair()
        rx = Receiver(server, close_after=2 << 20)
        if api == 'transport':
            transport, proto = await _connect(loop, client)
        else:
            client.setblocking(False)
        with open(path, 'rb') as f:
            try:
                if api == 'transport':
                    await loop.sendfile(transport, f)
                else:
                    await loop.sock_sendfile(client, f)
                err = None
            except OSError as exc:
                err = exc
            pos = f.tell()
        if api == 'transport':
            transport.close()
            await proto.lost
        else:
            client.close()
        nbytes, _ = await rx.join()
        return err, pos, nbytes

    err, pos, nbytes = _run(loop_factory, main)
    assert isinstance(err, ConnectionError) and err.errno in (errno.EPIPE, errno.ECONNRESET), err
    assert nbytes == 2 << 20
    assert pos < BIG


@pytest.mark.parametrize('api', ['transport', 'sock'])
def test_file_grows_during_sendfile(loop_factory, tmp_path, api):
    """Without count, sendfile goes on to the end of the file as it is when
    it gets there (asyncio sends until sendfile() returns 0), not to the
    size the file had at the call: bytes appended while the peer is not
    reading are sent too."""
    path = tmp_path / 'growing'
    first = os.urandom(16 << 20)
    more = os.urandom(1 << 20)
    path.write_bytes(first)

    async def main():
        loop = asyncio.get_running_loop()
        client, server = tcp_pair()
        gate = threading.Event()
        rx = Receiver(server, gate=gate)
        if api == 'transport':
            transport, proto = await _connect(loop, client)
        else:
            client.setblocking(False)
        with open(path, 'rb') as f:
            if api == 'transport':
                task = asyncio.ensure_future(loop.sendfile(transport, f))
            else:
                task = asyncio.ensure_future(loop.sock_sendfile(client, f))
            samples = [-1, -2, -3]
            while len(set(samples[-3:])) > 1:
                await asyncio.sleep(0.01)
                samples.append(_written(client))
            assert not task.done()
            with open(path, 'ab') as w:
                w.write(more)
            gate.set()
            n = await task
            pos = f.tell()
        if api == 'transport':
            transport.close()
            await proto.lost
        else:
            client.close()
        return n, pos, await rx.join()

    total = len(first) + len(more)
    assert _run(loop_factory, main) == (
        total, total, (total, hashlib.sha256(first + more).hexdigest()))


@pytest.mark.parametrize('api', ['transport', 'sock'])
def test_cancel_mid_sendfile(loop_factory, bigfile, api):
    """Cancelling sendfile while it waits for a peer that does not read:
    CancelledError, no pipe fd left behind (zcloop's splice pipe), the
    transport can write again, and the loop closes cleanly."""
    path, _ = bigfile
    pipes_before = _pipe_fds()
    fds_before = _fds()

    async def main():
        loop = asyncio.get_running_loop()
        client, server = tcp_pair()
        gate = threading.Event()
        rx = Receiver(server, gate=gate)
        if api == 'transport':
            transport, proto = await _connect(loop, client)
        else:
            client.setblocking(False)
        with open(path, 'rb') as f:
            if api == 'transport':
                task = asyncio.ensure_future(loop.sendfile(transport, f))
            else:
                task = asyncio.ensure_future(loop.sock_sendfile(client, f))
            for _ in range(10):
                await asyncio.sleep(0.005)
            assert not task.done()
            task.cancel()
            try:
                await task
                cancelled = False
            except asyncio.CancelledError:
                cancelled = True
        for _ in range(5):
            await asyncio.sleep(0)
        leaked_pipes = _pipe_fds() - pipes_before
        # The peer reads from now on: what the cancelled sendfile left in the
        # socket (and 'after' behind it) can drain, so close() can finish.
        gate.set()
        if api == 'transport':
            transport.write(b'after')       # no RuntimeError: sendfile is over
            transport.close()
            await proto.lost
        else:
            client.close()
        await rx.join()
        return cancelled, leaked_pipes

    assert _run(loop_factory, main) == (True, 0)
    assert _pipe_fds() == pipes_before
    assert _fds() == fds_before


def test_cancel_many_sendfiles_no_leak(loop_factory, smallfile):
    """Start-and-cancel 30 sendfiles at various points: no fd left."""
    path, _ = smallfile
    fds_before = _fds()

    async def main():
        loop = asyncio.get_running_loop()
        for i in range(30):
            client, server = tcp_pair()
            gate = threading.Event()
            rx = Receiver(server, gate=gate)
            client.setblocking(False)
            with open(path, 'rb') as f:
                task = asyncio.ensure_future(loop.sock_sendfile(client, f))
                for _ in range(i % 5):
                    await asyncio.sleep(0)
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
            client.close()
            gate.set()
            await rx.join()

    _run(loop_factory, main)
    assert _fds() == fds_before

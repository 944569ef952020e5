"""TLS over stream transports (create_connection/create_server with ssl=,
start_tls, handshake errors and timeouts, aiohttp over HTTPS); the same
scenarios on asyncio's SelectorEventLoop and on zcloop."""
import asyncio
import hashlib
import os
import socket
import ssl
import sys
import threading

import pytest

from streamutil import (
    Hasher, LoopFactory, Recorder, digest, fd_count, loop_factory_fixture, pattern, run,
    tcp_listener, tls_context_pair,
)

trustme = pytest.importorskip('trustme')

loop_factory = loop_factory_fixture()


def both(coro_fn, *args, **kwargs):
    return (run(LoopFactory('asyncio'), coro_fn, *args, **kwargs),
            run(LoopFactory('zcloop'), coro_fn, *args, **kwargs))


@pytest.fixture(scope='module')
def certs():
    server_ctx, client_ctx = tls_context_pair()
    other_ca = trustme.CA()
    untrusting_ctx = ssl.create_default_context()
    other_ca.configure_trust(untrusting_ctx)
    return dict(server=server_ctx, client=client_ctx, untrusting=untrusting_ctx)


async def tls_server(loop, certs, factory, **kwargs):
    srv = await loop.create_server(factory, '127.0.0.1', 0, ssl=certs['server'], **kwargs)
    return srv, srv.sockets[0].getsockname()[1]


def test_tls_large_transfer_both_ways(loop_factory, certs):
    """8 MiB each way at the same time."""
    size = 8 * 1024 * 1024

    async def main():
        loop = asyncio.get_running_loop()
        payload = pattern(size, seed=50)
        reply = pattern(size, seed=51)
        got_all = loop.create_future()

        class Server(Hasher):
            def connection_made(self, transport):
                super().connection_made(transport)
                transport.write(reply)          # while the client uploads

            def data_received(self, data):
                super().data_received(data)
                if self.n == size and not got_all.done():
                    got_all.set_result(self.h.hexdigest())

        srv, port = await tls_server(loop, certs, Server)
        tr, pr = await loop.create_connection(Recorder, '127.0.0.1', port, ssl=certs['client'],
                                              server_hostname='localhost')
        for off in range(0, size, 256 * 1024):
            await pr.writable.wait()
            tr.write(payload[off:off + 256 * 1024])
        assert await got_all == digest(payload)
        got = await pr.wait_bytes(size)
        assert digest(got) == digest(reply)
        assert pr.events == ['made', 'data']
        tr.close()
        assert await pr.lost is None
        srv.close()
        await srv.wait_closed()
    run(loop_factory, main, timeout=90)


def test_tls_extra_info(certs):
    async def main():
        loop = asyncio.get_running_loop()
        accepted = loop.create_future()

        def factory():
            p = Recorder()
            accepted.set_result(p)
            return p
        srv, port = await tls_server(loop, certs, factory)
        tr, pr = await loop.create_connection(Recorder, '127.0.0.1', port, ssl=certs['client'],
                                              server_hostname='localhost')
        sp = await accepted
        await sp.made
        out = {}
        obj = tr.get_extra_info('ssl_object')
        assert isinstance(obj, ssl.SSLObject)
        assert obj.server_hostname == 'localhost'
        assert tr.get_extra_info('sslcontext') is certs['client']
        peercert = tr.get_extra_info('peercert')
        out['san'] = sorted(peercert['subjectAltName'])
        out['cipher'] = tr.get_extra_info('cipher')
        out['compression'] = tr.get_extra_info('compression')
        out['version'] = obj.version()
        out['server_peercert'] = sp.transport.get_extra_info('peercert')
        out['server_side'] = sp.transport.get_extra_info('ssl_object').server_side
        sock = tr.get_extra_info('socket')
        out['socket'] = type(sock).__name__
        assert tr.get_extra_info('peername') == ('127.0.0.1', port)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        out['can_write_eof'] = tr.can_write_eof()
        tr.write(b'x' * 10)
        await sp.wait_bytes(10)
        tr.close()
        await pr.lost
        await sp.lost
        srv.close()
        await srv.wait_closed()
        return out
    a, z = both(main)
    assert a == z
    assert a['san'] == [('DNS', 'localhost'), ('IP Address', '127.0.0.1')]
    assert a['server_peercert'] is None and a['server_side'] is True
    assert a['can_write_eof'] is False


def _handshake_failure(certs, ctx_name, server_hostname):
    async def main():
        loop = asyncio.get_running_loop()
        srv, port = await tls_server(loop, certs, Recorder)
        base = fd_count()
        with pytest.raises(ssl.SSLError) as info:
            await loop.create_connection(Recorder, '127.0.0.1', port, ssl=certs[ctx_name],
                                         server_hostname=server_hostname)
        exc = info.value
        srv.close()
        await srv.wait_closed()
        await asyncio.sleep(0.05)
        assert fd_count() <= base
        return (type(exc), getattr(exc, 'verify_message', None), exc.reason)
    return main


def test_bad_certificate_untrusted_ca(certs):
    a, z = both(_handshake_failure(certs, 'untrusting', 'localhost'), allow_errors=True)
    assert a == z
    assert a[0] is ssl.SSLCertVerificationError
    assert issubclass(a[0], ssl.SSLError)


def test_bad_certificate_wrong_hostname(certs):
    a, z = both(_handshake_failure(certs, 'client', 'wrong.example'), allow_errors=True)
    assert a == z
    assert a[0] is ssl.SSLCertVerificationError
    assert 'wrong.example' in a[1]


def test_server_hostname_rules(certs):
    async def main():
        loop = asyncio.get_running_loop()
        out = []
        for kwargs in (dict(ssl=certs['client'], sock=socket.socket()),
                       dict(server_hostname='x', host='127.0.0.1', port=1),
                       dict(ssl_shutdown_timeout=1, host='127.0.0.1', port=1)):
            sock = kwargs.get('sock')
            try:
                await loop.create_connection(Recorder, **kwargs)
            except ValueError as exc:
                out.append(str(exc))
            finally:
                if sock is not None:
                    sock.close()
        return out
    a, z = both(main)
    assert a == z and len(a) == 3


def test_ssl_handshake_timeout_client(certs):
    """The server accepts TCP but never speaks TLS."""
    async def main():
        loop = asyncio.get_running_loop()
        lsock = tcp_listener()
        port = lsock.getsockname()[1]
        try:
            with pytest.raises(Exception) as info:
                await loop.create_connection(Recorder, '127.0.0.1', port, ssl=certs['client'],
                                             server_hostname='localhost',
                                             ssl_handshake_timeout=0.3)
            exc = info.value
            return type(exc), str(exc)
        finally:
            lsock.close()
    a, z = both(main, allow_errors=True)
    assert a == z
    assert issubclass(a[0], ConnectionError)
    assert 'SSL handshake is taking longer than 0.3 seconds' in a[1]


def test_ssl_handshake_timeout_server(certs):
    """A plain TCP client that never starts the handshake is dropped."""
    async def main():
        loop = asyncio.get_running_loop()
        srv, port = await tls_server(loop, certs, Recorder, ssl_handshake_timeout=0.3)
        tr, pr = await loop.create_connection(Recorder, '127.0.0.1', port)
        exc = await pr.lost
        srv.close()
        await srv.wait_closed()
        return pr.events, exc
    a, z = both(main, allow_errors=True)
    assert a == z
    assert a[0][0] == 'made' and a[0][-1] == 'lost'


def test_start_tls_upgrade(loop_factory, certs):
    async def main():
        loop = asyncio.get_running_loop()

        async def handle(reader, writer):
            assert await reader.readline() == b'STARTTLS\n'
            writer.write(b'OK\n')
            await writer.drain()
            await writer.start_tls(certs['server'])
            assert writer.get_extra_info('ssl_object') is not None
            data = await reader.readexactly(1024 * 1024)
            writer.write(hashlib.sha256(data).hexdigest().encode() + b'\n')
            await writer.drain()
            writer.close()
            await writer.wait_closed()

        srv = await asyncio.start_server(handle, '127.0.0.1', 0)
        port = srv.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection('127.0.0.1', port)
        assert writer.get_extra_info('ssl_object') is None
        writer.write(b'STARTTLS\n')
        assert await reader.readline() == b'OK\n'
        await writer.start_tls(certs['client'], server_hostname='localhost')
        assert writer.get_extra_info('ssl_object').version().startswith('TLS')
        data = pattern(1024 * 1024, seed=52)
        writer.write(data)
        await writer.drain()
        assert (await reader.readline()).strip() == digest(data).encode()
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionResetError, ssl.SSLError):
            pass
        srv.close()
        await srv.wait_closed()
    run(loop_factory, main)


def test_start_tls_low_level(loop_factory, certs):
    """loop.start_tls() on a Protocol-level transport, both sides."""
    async def main():
        loop = asyncio.get_running_loop()
        server_tls = loop.create_future()

        class Plain(Recorder):
            def data_received(self, data):
                super().data_received(data)
                if bytes(self.data) == b'UPGRADE':
                    self.data.clear()
                    self.transport.write(b'GO')
                    server_tls.set_result(loop.create_task(loop.start_tls(
                        self.transport, self, certs['server'], server_side=True)))

        srv = await loop.create_server(Plain, '127.0.0.1', 0)
        port = srv.sockets[0].getsockname()[1]
        tr, pr = await loop.create_connection(Recorder, '127.0.0.1', port)
        tr.write(b'UPGRADE')
        await pr.wait_bytes(2)
        pr.data.clear()
        new_tr = await loop.start_tls(tr, pr, certs['client'], server_hostname='localhost')
        server_tr = await (await server_tls)
        assert new_tr.get_extra_info('ssl_object') is not None
        server_tr.write(b'secret')
        assert await pr.wait_bytes(6) == b'secret'
        new_tr.close()
        await pr.lost
        srv.close()
        await srv.wait_closed()
    run(loop_factory, main)


def test_tls_close_during_handshake_by_peer(certs):
    """The server accepts and closes at once: the client's handshake fails
    with the same exception type on both loops; no fd leaks."""
    async def main():
        loop = asyncio.get_running_loop()
        lsock = tcp_listener()
        port = lsock.getsockname()[1]

        def accept_and_close():
            conn, _ = lsock.accept()
            conn.close()
        base = fd_count()
        closer = loop.run_in_executor(None, accept_and_close)
        try:
            with pytest.raises(Exception) as info:
                await loop.create_connection(Recorder, '127.0.0.1', port, ssl=certs['client'],
                                             server_hostname='localhost')
            await closer
        finally:
            lsock.close()
        await asyncio.sleep(0.05)
        assert fd_count() <= base
        return type(info.value)
    a, z = both(main, allow_errors=True)
    assert a == z
    assert issubclass(a, (ConnectionError, ssl.SSLError))


def test_tls_cancel_during_handshake(loop_factory, certs):
    """Cancelling create_connection() while the handshake waits."""
    async def main():
        loop = asyncio.get_running_loop()
        lsock = tcp_listener()
        port = lsock.getsockname()[1]
        base = fd_count()
        task = asyncio.create_task(loop.create_connection(
            Recorder, '127.0.0.1', port, ssl=certs['client'], server_hostname='localhost'))
        conn = await loop.run_in_executor(None, lambda: lsock.accept()[0])
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        data = await loop.run_in_executor(None, _recv_some, conn)
        assert data.startswith(b'\x16\x03')          # a ClientHello arrived
        conn.close()
        lsock.close()
        for _ in range(100):
            if fd_count() <= base:
                break
            await asyncio.sleep(0.01)
        assert fd_count() <= base
    run(loop_factory, main, allow_errors=True)


def _recv_some(sock):
    sock.settimeout(10)
    return sock.recv(65536)


def test_tls_server_close_during_handshake(loop_factory, certs):
    """The server is closed while a connection is still in its handshake.
    Up to 3.12.0 wait_closed() returns once the listener is closed; from
    3.12.1 on it also waits for that connection (asyncio's and zcloop's),
    which ends when its client goes away."""
    async def main():
        loop = asyncio.get_running_loop()
        srv, port = await tls_server(loop, certs, Recorder)
        # A raw TCP client that sends half a ClientHello and waits.
        s = socket.create_connection(('127.0.0.1', port))
        s.sendall(b'\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03')
        await asyncio.sleep(0.05)
        srv.close()
        closed = asyncio.ensure_future(srv.wait_closed())
        await asyncio.sleep(0.05)
        if sys.version_info >= (3, 12, 1):
            assert not closed.done()
            s.close()
        else:
            assert closed.done()
        await closed
        s.close()
    run(loop_factory, main, allow_errors=True)


def test_tls_connect_close_cycles_no_leak(loop_factory, certs):
    async def main():
        loop = asyncio.get_running_loop()
        srv, port = await tls_server(loop, certs, lambda: Recorder(echo=True))
        base = fd_count()
        for _ in range(100):
            tr, pr = await loop.create_connection(Recorder, '127.0.0.1', port,
                                                  ssl=certs['client'],
                                                  server_hostname='localhost')
            tr.write(b'ping')
            await pr.wait_bytes(4)
            tr.close()
            await pr.lost
        for _ in range(200):
            if fd_count() <= base:
                break
            await asyncio.sleep(0.01)
        assert fd_count() <= base
        srv.close()
        await srv.wait_closed()
    run(loop_factory, main, timeout=60)


# ----------------------------------------------------------------------
# aiohttp over HTTPS


def test_aiohttp_https(loop_factory, certs):
    aiohttp = pytest.importorskip('aiohttp')
    from aiohttp import web

    async def main():
        body = pattern(1024 * 1024, seed=53)

        async def get(request):
            return web.Response(body=body)

        async def post(request):
            data = await request.read()
            return web.Response(text=f'{len(data)} {digest(data)}')

        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_get('/blob', get)
        app.router.add_post('/echo', post)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, '127.0.0.1', 0, ssl_context=certs['server'])
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        try:
            connector = aiohttp.TCPConnector(ssl=certs['client'])
            async with aiohttp.ClientSession(connector=connector) as session:
                for _ in range(3):
                    async with session.get(f'https://localhost:{port}/blob') as resp:
                        assert resp.status == 200
                        assert await resp.read() == body
                upload = pattern(2 * 1024 * 1024, seed=54)
                async with session.post(f'https://localhost:{port}/echo', data=upload) as resp:
                    assert await resp.text() == f'{len(upload)} {digest(upload)}'
                with pytest.raises(aiohttp.ClientConnectorCertificateError):
                    await session.get(f'https://localhost:{port}/blob',
                                      ssl=certs['untrusting'])
        finally:
            await runner.cleanup()
    run(loop_factory, main, timeout=60, allow_errors=True)


def test_connect_accepted_socket_tls(loop_factory, certs):
    async def main():
        loop = asyncio.get_running_loop()
        lsock = tcp_listener()
        port = lsock.getsockname()[1]
        client = asyncio.create_task(loop.create_connection(
            Recorder, '127.0.0.1', port, ssl=certs['client'], server_hostname='localhost'))
        conn = await loop.run_in_executor(None, lambda: lsock.accept()[0])
        lsock.close()
        str_, spr = await loop.connect_accepted_socket(
            lambda: Recorder(echo=True), conn, ssl=certs['server'], ssl_handshake_timeout=10)
        tr, pr = await client
        assert str_.get_extra_info('ssl_object').server_side
        tr.write(b'over tls')
        assert await pr.wait_bytes(8) == b'over tls'
        tr.close()
        await pr.lost
        await spr.lost
    run(loop_factory, main)


# ----------------------------------------------------------------------
# The SSL protocol's own behaviour: flow control both ways, BufferedProtocol
# apps, the transport API, shutdown timeouts and aborts (differential).


async def _tls_pair(loop, certs, server_factory, client_factory=Recorder, **client_kwargs):
    accepted = loop.create_future()

    def factory():
        p = server_factory()
        accepted.set_result(p)
        return p
    srv, port = await tls_server(loop, certs, factory)
    tr, pr = await loop.create_connection(client_factory, '127.0.0.1', port,
                                          ssl=certs['client'], server_hostname='localhost',
                                          **client_kwargs)
    return srv, tr, pr, await accepted


class _Streamer(Recorder):
    """Server that writes ``payload`` as fast as flow control allows, then closes."""

    def __init__(self, payload):
        super().__init__()
        self.payload = payload

    def connection_made(self, transport):
        super().connection_made(transport)
        asyncio.ensure_future(self._send())

    async def _send(self):
        for off in range(0, len(self.payload), 64 * 1024):
            await self.writable.wait()
            self.transport.write(self.payload[off:off + 64 * 1024])
        self.transport.close()


def test_tls_app_pause_reading_large_transfer(loop_factory, certs):
    """The app pauses reading after every chunk; while paused nothing is
    delivered, the incoming buffer fills and the raw transport stops reading
    above the read high-water mark."""
    size = 4 * 1024 * 1024
    payload = pattern(size, seed=60)

    async def main():
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        class Client(asyncio.Protocol):
            def __init__(self):
                self.h = hashlib.sha256()
                self.n = 0
                self.paused = False
                self.raw_paused_seen = False
                self.max_buffered = 0
                self.events = []

            def connection_made(self, transport):
                self.transport = transport
                transport.set_read_buffer_limits(high=64 * 1024)
                self.events.append('made')

            def data_received(self, data):
                assert not self.paused
                self.h.update(data)
                self.n += len(data)
                self.transport.pause_reading()
                self.paused = True
                assert not self.transport.is_reading()
                loop.call_later(0.02 if self.n < 256 * 1024 else 0.0005, self.resume)

            def resume(self):
                raw = self.transport._ssl_protocol._transport
                self.max_buffered = max(self.max_buffered,
                                        self.transport.get_read_buffer_size())
                if raw is not None and not raw.is_reading():
                    self.raw_paused_seen = True
                self.paused = False
                self.transport.resume_reading()

            def eof_received(self):
                self.events.append('eof')

            def connection_lost(self, exc):
                self.events.append('lost')
                done.set_result(exc)

        srv, tr, pr, sp = await _tls_pair(loop, certs, lambda: _Streamer(payload), Client)
        assert tr.get_read_buffer_limits() == (16 * 1024, 64 * 1024)
        assert await done is None
        srv.close()
        await srv.wait_closed()
        assert pr.n == size and pr.h.hexdigest() == digest(payload)
        assert pr.raw_paused_seen
        assert 0 < pr.max_buffered < 1024 * 1024, pr.max_buffered
        return pr.events
    assert run(loop_factory, main, timeout=90) == ['made', 'eof', 'lost']


class _MemoryviewBuffered(asyncio.BufferedProtocol):
    def __init__(self, bufsize):
        self.view = memoryview(bytearray(bufsize))
        self.h = hashlib.sha256()
        self.n = 0
        self.calls = 0
        self.events = []
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.events.append('made')

    def get_buffer(self, sizehint):
        return self.view

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= len(self.view)
        self.calls += 1
        self.h.update(self.view[:nbytes])
        self.n += nbytes

    def eof_received(self):
        self.events.append('eof')

    def connection_lost(self, exc):
        self.events.append('lost')
        self.lost.set_result(exc)


@pytest.mark.parametrize('bufsize', [1000, 64 * 1024])
def test_tls_buffered_protocol(loop_factory, certs, bufsize):
    size = 2 * 1024 * 1024 + 17
    payload = pattern(size, seed=61)

    async def main():
        loop = asyncio.get_running_loop()
        srv, tr, pr, sp = await _tls_pair(loop, certs, lambda: _Streamer(payload),
                                          lambda: _MemoryviewBuffered(bufsize))
        assert await pr.lost is None
        srv.close()
        await srv.wait_closed()
        assert (pr.n, pr.h.hexdigest()) == (size, digest(payload))
        assert pr.calls >= size // bufsize
        return pr.events
    assert run(loop_factory, main, timeout=60) == ['made', 'eof', 'lost']


def test_tls_write_flow_control(loop_factory, certs):
    """A peer that does not read: the TLS transport's write buffer grows past
    its high-water mark, pause_writing() follows, and resume_writing() once
    the peer reads again; every byte arrives."""
    size = 8 * 1024 * 1024
    payload = pattern(size, seed=62)

    async def main():
        loop = asyncio.get_running_loop()

        class Sink(Recorder):
            def connection_made(self, transport):
                super().connection_made(transport)
                transport.pause_reading()

        srv, tr, pr, sp = await _tls_pair(loop, certs, Sink)
        await sp.made
        assert tr.get_write_buffer_limits() == (128 * 1024, 512 * 1024)
        tr.set_write_buffer_limits(high=256 * 1024)
        assert tr.get_write_buffer_limits() == (64 * 1024, 256 * 1024)
        for off in range(0, size, 256 * 1024):
            tr.write(payload[off:off + 256 * 1024])
            await asyncio.sleep(0)
        assert pr.pauses == 1 and not pr.writable.is_set()
        assert tr.get_write_buffer_size() > 256 * 1024
        sp.transport.resume_reading()
        await pr.writable.wait()
        assert await sp.wait_bytes(size) == payload
        assert (pr.pauses, pr.resumes) == (1, 1)
        tr.close()
        assert await pr.lost is None
        await sp.lost
        srv.close()
        await srv.wait_closed()
    run(loop_factory, main, timeout=60)


def test_tls_transport_api(certs):
    async def main():
        loop = asyncio.get_running_loop()
        srv, tr, pr, sp = await _tls_pair(loop, certs, Recorder)
        out = {}
        out['keys'] = {k: tr.get_extra_info(k) is not None
                       for k in ('ssl_object', 'peercert', 'cipher', 'sslcontext', 'socket',
                                 'peername', 'sockname')}
        out['compression'] = tr.get_extra_info('compression')
        out['missing'] = tr.get_extra_info('no-such-key', 'dflt')
        out['can_write_eof'] = tr.can_write_eof()
        with pytest.raises(NotImplementedError):
            tr.write_eof()
        with pytest.raises(TypeError) as info:
            tr.write('text')
        out['write_type_error'] = str(info.value)
        with pytest.raises(ValueError) as info:
            tr.set_read_buffer_limits(high=1, low=2)
        out['limits_error'] = str(info.value)
        tr.set_read_buffer_limits(high=1000)
        out['read_limits'] = tr.get_read_buffer_limits()
        out['read_size'] = tr.get_read_buffer_size()
        out['reading'] = [tr.is_reading()]
        tr.pause_reading()
        out['reading'].append(tr.is_reading())
        tr.resume_reading()
        out['reading'].append(tr.is_reading())
        out['protocol_is_pr'] = tr.get_protocol() is pr
        buf = bytearray(b'mutable')
        tr.writelines([b'one ', buf, memoryview(b' three')])
        buf[:] = b'changed'
        tr.write(b'')
        assert await sp.wait_bytes(17) == b'one mutable three'
        tr.close()
        out['closing'] = tr.is_closing()
        tr.write(b'dropped after close')
        out['lost'] = await pr.lost
        await sp.lost
        out['events'] = (pr.events, sp.events)
        out['received'] = bytes(sp.data)
        tr.close()          # a second close() drops the SSL protocol (asyncio)
        with pytest.raises(AttributeError):
            tr.get_extra_info('peername')
        srv.close()
        await srv.wait_closed()
        return out
    a, z = both(main)
    assert a == z
    assert a['reading'] == [True, False, True]
    assert a['read_limits'] == (250, 1000)


def test_tls_abort_during_shutdown(loop_factory, certs):
    """abort() right after close(): connection_lost(None) exactly once."""
    async def main():
        loop = asyncio.get_running_loop()
        srv, tr, pr, sp = await _tls_pair(loop, certs, Recorder)
        await sp.made       # else abort() may drop the client's last handshake flight
        tr.write(b'x' * 100)
        tr.close()
        tr.abort()
        tr.abort()
        assert await pr.lost is None
        await sp.lost
        await asyncio.sleep(0.05)
        srv.close()
        await srv.wait_closed()
        return pr.events, sp.events[0], sp.events[-1]
    assert run(loop_factory, main) == (['made', 'lost'], 'made', 'lost')


def test_tls_abort_server_during_handshake(certs):
    """The accepted connection is aborted mid-handshake: the client's
    create_connection() fails, the server app never sees the connection."""
    async def main():
        loop = asyncio.get_running_loop()
        made = []

        class Server(Recorder):
            def connection_made(self, transport):
                made.append(transport)
                super().connection_made(transport)
        srv, port = await tls_server(loop, certs, Server, ssl_handshake_timeout=0.2)
        # A client that only sends a ClientHello and then nothing more: the
        # server's handshake times out and aborts.
        s = socket.create_connection(('127.0.0.1', port))
        s.sendall(b'\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00')
        data = await loop.run_in_executor(None, recv_all_blocking_, s)
        s.close()
        srv.close()
        await srv.wait_closed()
        return made, data == b'' or data.startswith(b'\x15')
    a, z = both(main, allow_errors=True)
    assert a == z
    assert a == ([], True)


def recv_all_blocking_(sock):
    sock.settimeout(10)
    buf = b''
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return buf
        if not chunk:
            return buf
        buf += chunk


def test_tls_shutdown_timeout(loop_factory, certs):
    """The peer never answers close_notify (its app paused reading): the
    shutdown times out and connection_lost() gets asyncio's TimeoutError."""
    async def main():
        loop = asyncio.get_running_loop()

        class Deaf(Recorder):
            def connection_made(self, transport):
                super().connection_made(transport)
                transport.pause_reading()

        srv, tr, pr, sp = await _tls_pair(loop, certs, Deaf, ssl_shutdown_timeout=0.2)
        await sp.made
        t0 = loop.time()
        tr.close()
        exc = await pr.lost
        elapsed = loop.time() - t0
        sp.transport.abort()
        await sp.lost
        srv.close()
        await srv.wait_closed()
        assert 0.15 < elapsed < 5, elapsed
        return type(exc), str(exc), pr.events
    assert run(loop_factory, main) == (asyncio.TimeoutError, 'SSL shutdown timed out',
                                       ['made', 'lost'])


def test_tls_app_data_received_raises(certs):
    """An exception in the app's data_received() is a fatal error of the
    connection: the exception handler hears of it, connection_lost() gets it."""
    async def main():
        loop = asyncio.get_running_loop()
        contexts = []
        loop.set_exception_handler(lambda _loop, ctx: contexts.append(ctx))

        class Failing(Recorder):
            def data_received(self, data):
                super().data_received(data)
                raise RuntimeError('app bug')

        srv, tr, pr, sp = await _tls_pair(loop, certs, lambda: Recorder(echo=True), Failing)
        tr.write(b'ping')
        exc = await pr.lost
        await sp.lost
        srv.close()
        await srv.wait_closed()
        return ([(c['message'], type(c['exception']).__name__) for c in contexts],
                type(exc).__name__, str(exc), pr.events, tr.is_closing())
    a, z = both(main)
    assert a == z
    assert a[0] == [('Fatal error on SSL protocol', 'RuntimeError')]
    assert a[1:] == ('RuntimeError', 'app bug', ['made', 'data', 'lost'], True)


def _memorybio_peer(sock, sslctx, close_now, client_saw_eof):
    """Blocking TLS server on MemoryBIOs: handshake, then (once told to) a
    close_notify without waiting for the answer, and only then reading
    everything the client sent.  Returns the plaintext byte count."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = sslctx.wrap_bio(incoming, outgoing, server_side=True)
    sock.settimeout(30)

    def pump():
        if outgoing.pending:
            sock.sendall(outgoing.read())
        data = sock.recv(256 * 1024)
        if data:
            incoming.write(data)
        return data

    while True:
        try:
            sslobj.do_handshake()
            break
        except ssl.SSLWantReadError:
            pump()
    sock.sendall(outgoing.read())           # session tickets
    n = 0
    # What came with the handshake's last flight: application data left in
    # the BIO would make unwrap() fail ("application data after close notify").
    while incoming.pending:
        try:
            n += len(sslobj.read(256 * 1024))
        except ssl.SSLWantReadError:
            break
    assert close_now.wait(30)
    with pytest.raises(ssl.SSLWantReadError):
        sslobj.unwrap()                     # sends close_notify, wants the answer
    sock.sendall(outgoing.read())
    assert client_saw_eof.wait(30)
    while True:
        try:
            n += len(sslobj.read(256 * 1024))
        except ssl.SSLZeroReturnError:      # the client's close_notify
            break
        except ssl.SSLWantReadError:
            if not pump():
                break
    sock.close()
    return n


@pytest.mark.timeout(60)
def test_tls_peer_close_notify_while_writes_pending(loop_factory, certs):
    """The peer sends close_notify while the client's writes are still held
    back by flow control (its transport paused writing, so TLS records wait
    in the SSL protocol's buffer): the client gets eof_received() and then
    connection_lost(None), and everything it wrote still reaches the peer
    before its close_notify and the close."""
    async def main():
        loop = asyncio.get_running_loop()
        lsock = tcp_listener()
        close_now, client_saw_eof = threading.Event(), threading.Event()

        def serve():
            conn, _ = lsock.accept()
            return _memorybio_peer(conn, certs['server'], close_now, client_saw_eof)
        peer = loop.run_in_executor(None, serve)

        class Client(Recorder):
            def eof_received(self):
                client_saw_eof.set()
                return super().eof_received()

        tr, pr = await loop.create_connection(
            Client, '127.0.0.1', lsock.getsockname()[1], ssl=certs['client'],
            server_hostname='localhost')
        lsock.close()
        chunk = pattern(64 * 1024, seed=70)
        written = 0
        # The peer reads nothing yet: the socket buffers fill, then the raw
        # transport's, then the TLS transport's, which pauses the app.
        while pr.writable.is_set():
            assert written < 512 * 1024 * 1024
            tr.write(chunk)
            written += len(chunk)
            await asyncio.sleep(0)
        close_now.set()
        # The peer's failure, if any, rather than a wait for an eof that
        # will not come.
        await asyncio.wait([pr.eof, peer], return_when=asyncio.FIRST_COMPLETED)
        if peer.done():
            peer.result()
        assert await pr.lost is None
        return await peer == written, pr.events
    assert run(loop_factory, main) == (True, ['made', 'eof', 'lost'])


@pytest.mark.timeout(60)
@pytest.mark.parametrize('size', [10, 1024 * 1024])
@pytest.mark.parametrize('client', ['protocol', 'paused', 'buffered', 'streams'])
def test_tls_trailing_data_then_close_notify(loop_factory, certs, size, client):
    """The server writes and closes at once, so its last records and its
    close_notify arrive together, possibly while the client app has paused
    reading: the client gets every byte, then eof_received(), then
    connection_lost(None) (a stream reader: the data, then EOF)."""
    payload = pattern(size, seed=71)

    async def main():
        loop = asyncio.get_running_loop()

        class WriteAndClose(asyncio.Protocol):
            def connection_made(self, transport):
                transport.write(payload)
                transport.close()

        srv, port = await tls_server(loop, certs, WriteAndClose)
        try:
            if client == 'streams':
                reader, writer = await asyncio.open_connection(
                    '127.0.0.1', port, ssl=certs['client'], server_hostname='localhost',
                    limit=4096)
                await asyncio.sleep(0.1)    # everything, close_notify too, is here
                got = await reader.read()
                assert reader.at_eof()
                writer.close()
                await writer.wait_closed()
                return got == payload, []
            factory = {'protocol': Recorder, 'paused': Recorder,
                       'buffered': lambda: _MemoryviewBuffered(1000)}[client]
            tr, pr = await loop.create_connection(factory, '127.0.0.1', port,
                                                  ssl=certs['client'],
                                                  server_hostname='localhost')
            if client == 'paused':
                tr.pause_reading()
                await asyncio.sleep(0.1)
                assert not pr.data
                tr.resume_reading()
            assert await pr.lost is None
            if client == 'buffered':
                return pr.h.hexdigest() == digest(payload), pr.events
            return bytes(pr.data) == payload, pr.events
        finally:
            srv.close()
            await srv.wait_closed()

    expected_events = [] if client == 'streams' else (
        ['made', 'eof', 'lost'] if client == 'buffered' else ['made', 'data', 'eof', 'lost'])
    assert run(loop_factory, main) == (True, expected_events)

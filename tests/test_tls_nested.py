"""TLS inside TLS: start_tls() on a transport that is itself TLS, client side
(an HTTPS proxy tunnelling to an HTTPS origin, as aiohttp does) and server
side (a server made with ssl= that accepts a second TLS session inside the
first).  The same scenarios on asyncio's SelectorEventLoop and on zcloop."""
import asyncio
import os
import ssl
import sys

import pytest

from streamutil import BufferedRecorder, Recorder, digest, loop_factory_fixture, pattern, run

trustme = pytest.importorskip('trustme')

loop_factory = loop_factory_fixture()


@pytest.fixture(scope='module')
def certs():
    # Two CAs, so that a session can only complete against the server it
    # was meant for: the outer one (the proxy) or the inner one (the origin).
    proxy_ca, origin_ca = trustme.CA(), trustme.CA()
    ctxs = {}
    for name, ca in (('proxy', proxy_ca), ('origin', origin_ca)):
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert('localhost', '127.0.0.1').configure_cert(server)
        client = ssl.create_default_context()
        ca.configure_trust(client)
        ctxs[name] = server
        ctxs[name + '_client'] = client
    return ctxs


async def _pipe(reader, writer):
    while data := await reader.read(256 * 1024):
        writer.write(data)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def _tunnel_proxy(certs, target_port, seen):
    """A TLS server that forwards the plaintext of each connection, as is,
    over a plain TCP connection to target_port (a CONNECT tunnel without the
    CONNECT)."""
    async def handle(reader, writer):
        up_reader, up_writer = await asyncio.open_connection('127.0.0.1', target_port)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        seen.append('tunnel done')
        writer.close()
        up_writer.close()
    srv = await asyncio.start_server(handle, '127.0.0.1', 0, ssl=certs['proxy'])
    return srv, srv.sockets[0].getsockname()[1]


class _Origin(Recorder):
    """Inner TLS server: answers a length-prefixed upload with its digest,
    then the upload itself."""

    def data_received(self, data):
        super().data_received(data)
        if len(self.data) >= 8:
            n = int.from_bytes(self.data[:8], 'big')
            if len(self.data) == 8 + n:
                upload = bytes(self.data[8:])
                self.transport.write(digest(upload).encode())
                self.transport.write(upload)


class _ViewBuffered(BufferedRecorder):
    """get_buffer() gives a memoryview: asyncio's SSLProtocol slices the
    buffer to fill it with more than one record, and a bytearray's slice is
    a copy (the data would be lost on asyncio)."""

    def get_buffer(self, sizehint):
        return memoryview(self.buf)


@pytest.mark.timeout(60)
@pytest.mark.parametrize('size', [5, 3 * 1024 * 1024])
@pytest.mark.parametrize('app', ['protocol', 'buffered'])
def test_start_tls_over_tls_through_proxy(loop_factory, certs, size, app):
    """Client: TLS to the proxy, then start_tls() on that TLS transport for
    the origin behind it; data both ways (the reply held back a while by the
    inner app pausing reading, which backs up into the outer session), then
    the inner session closes and takes the outer one with it."""
    async def main():
        loop = asyncio.get_running_loop()
        origins = []

        def origin_factory():
            origins.append(_Origin())
            return origins[-1]
        osrv = await loop.create_server(origin_factory, '127.0.0.1', 0, ssl=certs['origin'])
        seen = []
        psrv, pport = await _tunnel_proxy(certs, osrv.sockets[0].getsockname()[1], seen)

        outer_tr, outer_pr = await loop.create_connection(
            Recorder, '127.0.0.1', pport, ssl=certs['proxy_client'],
            server_hostname='localhost')
        inner_pr = Recorder() if app == 'protocol' else _ViewBuffered(bufsize=1000)
        inner_tr = await loop.start_tls(outer_tr, inner_pr, certs['origin_client'],
                                        server_hostname='localhost')
        assert inner_tr is not outer_tr
        assert inner_tr.get_protocol() is inner_pr
        inner_obj = inner_tr.get_extra_info('ssl_object')
        outer_obj = outer_tr.get_extra_info('ssl_object')
        assert inner_obj is not outer_obj
        assert inner_obj.getpeercert() != outer_obj.getpeercert()
        # What the inner session does not know comes from the one below.
        assert inner_tr.get_extra_info('peername') == outer_tr.get_extra_info('peername')

        payload = pattern(size, seed=60)
        inner_tr.pause_reading()
        inner_tr.write(len(payload).to_bytes(8, 'big'))
        inner_tr.write(payload)
        while not origins or len(origins[0].data) < 8 + size:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)        # the reply piles up below the paused app
        assert not inner_pr.data
        inner_tr.resume_reading()
        want = 64 + size
        if app == 'protocol':
            reply = await inner_pr.wait_bytes(want)
        else:
            while len(inner_pr.data) < want:
                await asyncio.sleep(0.01)
            reply = bytes(inner_pr.data)
        assert reply == digest(payload).encode() + payload

        inner_tr.close()
        assert await inner_pr.lost is None
        origin = origins[0]
        assert await origin.lost is None
        # The outer session ends with the inner one; its first protocol was
        # swapped out by start_tls() and hears nothing more.
        while not seen:
            await asyncio.sleep(0.01)
        osrv.close()
        psrv.close()
        await osrv.wait_closed()
        await psrv.wait_closed()
        return inner_pr.events, origin.events, outer_pr.events, outer_tr.is_closing()

    assert run(loop_factory, main) == (['data', 'eof', 'lost'], ['made', 'data', 'eof', 'lost'],
                                       ['made'], True)


class _LateEcho(Recorder):
    """Echoes once it has its transport: start_tls() makes no
    connection_made() call, and data may come before start_tls() returns."""

    def attach(self, transport):
        self.transport = transport
        self.echo = True
        transport.write(bytes(self.data))


@pytest.mark.timeout(60)
@pytest.mark.parametrize('closer', ['client', 'server'])
def test_start_tls_server_side_over_tls(loop_factory, certs, closer):
    """A server made with ssl= takes a second TLS session inside the first
    (start_tls(server_side=True) on its TLS transport) when its client asks;
    either end then closes the inner session: close_notify travels inside
    the outer session, the other end sees eof_received() then
    connection_lost(None)."""
    async def main():
        loop = asyncio.get_running_loop()
        upgraded = loop.create_future()

        class Server(Recorder):
            def data_received(self, data):
                super().data_received(data)
                if bytes(self.data) == b'STARTTLS':
                    self.transport.write(b'GO AHEAD')
                    upgraded.set_result(loop.create_task(loop.start_tls(
                        self.transport, inner_server, certs['origin'], server_side=True)))

        inner_server = _LateEcho()
        srv = await loop.create_server(Server, '127.0.0.1', 0, ssl=certs['proxy'])
        tr, pr = await loop.create_connection(
            Recorder, '127.0.0.1', srv.sockets[0].getsockname()[1],
            ssl=certs['proxy_client'], server_hostname='localhost')
        tr.write(b'STARTTLS')
        assert await pr.wait_bytes(8) == b'GO AHEAD'
        inner = Recorder()
        inner_tr = await loop.start_tls(tr, inner, certs['origin_client'],
                                        server_hostname='localhost')
        inner_server_tr = await (await upgraded)
        inner_server.attach(inner_server_tr)
        assert inner_server_tr.get_extra_info('ssl_object').server_side
        payload = pattern(256 * 1024, seed=61)
        inner_tr.write(payload)
        assert await inner.wait_bytes(len(payload)) == payload
        (inner_tr if closer == 'client' else inner_server_tr).close()
        assert await inner.lost is None
        assert await inner_server.lost is None
        srv.close()
        await srv.wait_closed()
        return inner.events, inner_server.events, pr.events, tr.is_closing()

    assert run(loop_factory, main) == (['data', 'eof', 'lost'], ['data', 'eof', 'lost'],
                                       ['made', 'data'], True)


@pytest.mark.timeout(60)
def test_aiohttp_https_through_https_proxy(loop_factory, certs):
    """aiohttp's client through an HTTPS proxy (CONNECT) to an HTTPS origin:
    it calls start_tls() on the proxy's TLS transport."""
    aiohttp = pytest.importorskip('aiohttp')
    from aiohttp import web

    async def main():
        body = pattern(512 * 1024, seed=62)

        async def get(request):
            return web.Response(body=body)

        app = web.Application()
        app.router.add_get('/blob', get)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, '127.0.0.1', 0, ssl_context=certs['origin'])
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        tunnels = []

        async def connect_proxy(reader, writer):
            head = await reader.readuntil(b'\r\n\r\n')
            method, target, _ = head.split(b'\r\n')[0].split(b' ')
            assert method == b'CONNECT', head
            host, _, tport = target.rpartition(b':')
            up_reader, up_writer = await asyncio.open_connection('127.0.0.1', int(tport))
            writer.write(b'HTTP/1.1 200 Connection established\r\n\r\n')
            tunnels.append(target.decode())
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            writer.close()
            up_writer.close()

        proxy = await asyncio.start_server(connect_proxy, '127.0.0.1', 0, ssl=certs['proxy'])
        pport = proxy.sockets[0].getsockname()[1]
        # aiohttp verifies the proxy with the request's context: one that
        # trusts both CAs.
        both_ctx = ssl.create_default_context()
        for ctx in (certs['proxy_client'], certs['origin_client']):
            for ca in ctx.get_ca_certs(binary_form=True):
                both_ctx.load_verify_locations(cadata=ssl.DER_cert_to_PEM_cert(ca))
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(2):
                    async with session.get(f'https://localhost:{port}/blob',
                                           proxy=f'https://localhost:{pport}',
                                           ssl=both_ctx) as resp:
                        assert resp.status == 200
                        assert await resp.read() == body
        finally:
            await runner.cleanup()
            proxy.close()
        return bool(tunnels) and tunnels == [f'localhost:{port}'] * len(tunnels)
    assert run(loop_factory, main)


def test_start_tls_refuses_pipe_transport(loop_factory, certs):
    """Which transports start_tls() takes is the transport's own say
    (_start_tls_compatible, as asyncio asks): sockets and TLS transports
    yes, pipes no."""
    async def main():
        loop = asyncio.get_running_loop()
        rfd, wfd = os.pipe()
        with open(rfd, 'rb', buffering=0) as rpipe:
            tr, _ = await loop.connect_write_pipe(asyncio.Protocol, open(wfd, 'wb', buffering=0))
            try:
                with pytest.raises(TypeError, match=r'^transport .* is not supported by '
                                                    r'start_tls\(\)$'):
                    await loop.start_tls(tr, asyncio.Protocol(), certs['origin_client'])
            finally:
                tr.close()
                await asyncio.sleep(0)
    run(loop_factory, main)


@pytest.mark.timeout(60)
@pytest.mark.parametrize('tunnel', ['garbage', 'closes', 'silent'])
def test_start_tls_over_tls_handshake_failure(loop_factory, certs, tunnel):
    """The inner handshake fails inside a live outer session: the far end
    answers with something that is not TLS, closes, or says nothing until
    the handshake times out.  start_tls() raises what asyncio 3.13 raises;
    the outer session is torn down with the inner one."""
    if not loop_factory.is_zcloop and sys.version_info < (3, 13):
        # asyncio before 3.13 calls SSLProtocol._abort() with an argument it
        # does not take when the inner session fails (TypeError; the
        # timeout case hangs); zcloop does as 3.13.
        pytest.skip('asyncio < 3.13: nested TLS failures raise TypeError')

    async def main():
        loop = asyncio.get_running_loop()

        class Tunnel(Recorder):
            def data_received(self, data):
                super().data_received(data)
                if tunnel == 'garbage':
                    self.transport.write(b'HTTP/1.1 400 Bad Request\r\n\r\n')
                elif tunnel == 'closes':
                    self.transport.close()

        srv = await loop.create_server(Tunnel, '127.0.0.1', 0, ssl=certs['proxy'])
        tr, pr = await loop.create_connection(
            Recorder, '127.0.0.1', srv.sockets[0].getsockname()[1],
            ssl=certs['proxy_client'], server_hostname='localhost')
        inner = Recorder()
        with pytest.raises(Exception) as info:
            await loop.start_tls(tr, inner, certs['origin_client'], server_hostname='localhost',
                                 ssl_handshake_timeout=0.5)
        srv.close()
        await srv.wait_closed()
        return type(info.value), inner.events, pr.events, tr.is_closing()

    exc_type, inner_events, outer_events, closing = run(loop_factory, main)
    assert exc_type is {'garbage': ssl.SSLError, 'closes': ConnectionResetError,
                        'silent': ConnectionAbortedError}[tunnel]
    # asyncio 3.13 tells the inner protocol connection_lost() when the far
    # end failed the handshake, not when it timed out.
    assert inner_events == ([] if tunnel == 'silent' else ['lost'])
    assert outer_events == ['made'] and closing

"""Datagram endpoints and datagram socket coroutines.

Differential: every scenario runs on asyncio's own loop and on zcloop with
real sockets on loopback, and both must behave the same.  Tests marked
zcloop-only exercise zcloop internals (in-flight sends, zero-copy).
Timings are never asserted; timeouts are hang guards only.
"""
import asyncio
import collections
import gc
import logging
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile

import pytest

import zcloop

pytestmark = pytest.mark.timeout(60)

LOOPS = {
    'asyncio': asyncio.SelectorEventLoop,
    'zcloop': zcloop.Loop,
}

# 3.13: empty datagrams are sent, and 8 bytes of header count per buffered one
PY313 = sys.version_info >= (3, 13)
HDR = 8 if PY313 else 0


@pytest.fixture(params=sorted(LOOPS))
def udp_loop_factory(request):
    return LOOPS[request.param]


def run(factory, coro_fn, *, debug=False, timeout=30):
    loop = factory()
    loop.set_debug(debug)
    try:
        return loop.run_until_complete(asyncio.wait_for(coro_fn(), timeout))
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()


def has_ipv6():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(('::1', 0))
        return True
    except OSError:
        return False


def free_udp_port(host='127.0.0.1', family=socket.AF_INET):
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def unix_path(tmp_path, name='s'):
    # sun_path is short: keep it under /tmp.
    d = tempfile.mkdtemp(prefix='zcu')
    return os.path.join(d, name)


class Recorder(asyncio.DatagramProtocol):
    """Records everything a datagram transport reports."""

    def __init__(self, echo=False):
        self.echo = echo
        self.loop = asyncio.get_running_loop()
        self.events = []
        self.datagrams = asyncio.Queue()
        self.errors = asyncio.Queue()
        self.lost = self.loop.create_future()
        self.transport = None
        self.paused = 0
        self.resumed = 0

    def connection_made(self, transport):
        self.events.append('made')
        self.transport = transport

    def datagram_received(self, data, addr):
        self.events.append('data')
        if self.echo:
            self.transport.sendto(data, addr)
        else:
            self.datagrams.put_nowait((data, addr))

    def error_received(self, exc):
        self.events.append('error')
        self.errors.put_nowait(exc)

    def connection_lost(self, exc):
        self.events.append('lost')
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self):
        self.paused += 1

    def resume_writing(self):
        self.resumed += 1


def asyncio_header_leak(factory, size):
    # asyncio 3.13 adds 8 bytes per buffered datagram to its write buffer
    # size but never takes them off again.
    return PY313 and factory is LOOPS['asyncio'] and size % 8 == 0


def norm_addr(addr):
    return addr[:2] if isinstance(addr, tuple) else addr


# ----------------------------------------------------------------------
# Echo, bulk delivery, sizes


@pytest.mark.parametrize('family,host', [
    (socket.AF_INET, '127.0.0.1'),
    pytest.param(socket.AF_INET6, '::1', marks=pytest.mark.skipif(
        not has_ipv6(), reason='no IPv6 loopback')),
])
def test_echo(udp_loop_factory, family, host):
    async def main():
        loop = asyncio.get_running_loop()
        st, sp = await loop.create_datagram_endpoint(
            lambda: Recorder(echo=True), local_addr=(host, 0))
        server_addr = st.get_extra_info('sockname')
        ct, cp = await loop.create_datagram_endpoint(Recorder, remote_addr=(host, server_addr[1]))
        assert ct.get_extra_info('peername')[:2] == (host, server_addr[1])
        for msg in (b'hello', b'x' * 1000, bytearray(b'ba'), memoryview(b'mv')):
            ct.sendto(msg)
            data, addr = await cp.datagrams.get()
            assert data == bytes(msg)
            assert type(data) is bytes
            assert norm_addr(addr) == (host, server_addr[1])
        # unconnected client, explicit address
        ut, up = await loop.create_datagram_endpoint(Recorder, local_addr=(host, 0))
        ut.sendto(b'unconnected', server_addr)
        data, addr = await up.datagrams.get()
        assert (data, norm_addr(addr)) == (b'unconnected', norm_addr(server_addr))
        for t, p in ((ct, cp), (ut, up), (st, sp)):
            t.close()
            assert t.is_closing()
            assert await p.lost is None
            assert p.events[0] == 'made' and p.events[-1] == 'lost'
            assert p.events.count('lost') == 1
        return True
    assert run(udp_loop_factory, main)


def test_many_datagrams_loss_free(udp_loop_factory):
    # 2000 datagrams of varied sizes, at most WINDOW unanswered at a time so
    # no socket buffer can overflow; every byte must come back.
    N, WINDOW = 2000, 32
    rnd = random.Random(1234)
    payloads = [i.to_bytes(4, 'big') + rnd.randbytes(rnd.randrange(0, 1400))
                for i in range(N)]

    async def main():
        loop = asyncio.get_running_loop()
        st, sp = await loop.create_datagram_endpoint(
            lambda: Recorder(echo=True), local_addr=('127.0.0.1', 0))
        ct, cp = await loop.create_datagram_endpoint(
            Recorder, remote_addr=st.get_extra_info('sockname'))
        received = {}
        sent = 0
        while len(received) < N:
            while sent < N and sent - len(received) < WINDOW:
                ct.sendto(payloads[sent])
                sent += 1
            data, _ = await cp.datagrams.get()
            seq = int.from_bytes(data[:4], 'big')
            assert seq not in received
            received[seq] = data
        assert [received[i] for i in range(N)] == payloads
        ct.close()
        st.close()
        await cp.lost
        await sp.lost
        assert ct.get_write_buffer_size() == 0
        return True
    assert run(udp_loop_factory, main)


@pytest.mark.parametrize('family,host,size', [
    (socket.AF_INET, '127.0.0.1', 65507),
    pytest.param(socket.AF_INET6, '::1', 65527, marks=pytest.mark.skipif(
        not has_ipv6(), reason='no IPv6 loopback')),
])
def test_max_size_datagram_arrives_whole(udp_loop_factory, family, host, size):
    async def main():
        loop = asyncio.get_running_loop()
        st, sp = await loop.create_datagram_endpoint(Recorder, local_addr=(host, 0))
        ct, cp = await loop.create_datagram_endpoint(
            Recorder, remote_addr=st.get_extra_info('sockname')[:2], family=family)
        payload = os.urandom(size)
        ct.sendto(payload)
        data, _ = await sp.datagrams.get()
        assert len(data) == size and data == payload
        # one byte more does not fit into an IP datagram
        ct.sendto(payload + b'!')
        exc = await cp.errors.get()
        assert isinstance(exc, OSError) and exc.errno == errno_EMSGSIZE
        ct.close()
        st.close()
        await cp.lost
        return True
    assert run(udp_loop_factory, main)


errno_EMSGSIZE = __import__('errno').EMSGSIZE
SO_SNDBUFFORCE = getattr(socket, 'SO_SNDBUFFORCE', 32)    # Linux value


def test_unix_datagram_truncated_like_asyncio(udp_loop_factory, tmp_path):
    # asyncio reads with recvfrom(256 KiB): a larger AF_UNIX datagram is cut
    # there, and zcloop cuts it at the same size.
    path = unix_path(tmp_path)

    async def main():
        loop = asyncio.get_running_loop()
        t, p = await loop.create_datagram_endpoint(
            Recorder, local_addr=path, family=socket.AF_UNIX)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 1 << 20)
            payload = os.urandom(300_000)
            s.sendto(payload, path)
            data, addr = await p.datagrams.get()
            small = os.urandom(200_000)
            s.sendto(small, path)
            data2, _ = await p.datagrams.get()
        t.close()
        await p.lost
        return len(data), data == payload[:len(data)], addr, data2 == small
    if os.geteuid() != 0:
        pytest.skip('SO_SNDBUFFORCE needs CAP_NET_ADMIN')
    assert run(udp_loop_factory, main) == (256 * 1024, True, None, True)


# ----------------------------------------------------------------------
# Errors reported to the protocol


def test_icmp_port_unreachable_reaches_error_received(udp_loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        port = free_udp_port()
        t, p = await loop.create_datagram_endpoint(Recorder, remote_addr=('127.0.0.1', port))
        exc = None
        for _ in range(20):
            t.sendto(b'anyone?')
            try:
                exc = await asyncio.wait_for(p.errors.get(), 0.5)
                break
            except asyncio.TimeoutError:
                pass
        assert isinstance(exc, ConnectionRefusedError), exc
        # the endpoint keeps working after the error
        assert not t.is_closing()
        t.close()
        assert await p.lost is None
        return True
    assert run(udp_loop_factory, main)


def test_exception_in_datagram_received_is_logged_and_endpoint_lives(udp_loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        contexts = []
        loop.set_exception_handler(lambda loop, ctx: contexts.append(ctx))

        class Bad(Recorder):
            def datagram_received(self, data, addr):
                if data == b'boom':
                    raise ZeroDivisionError('boom')
                super().datagram_received(data, addr)

        st, sp = await loop.create_datagram_endpoint(Bad, local_addr=('127.0.0.1', 0))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.sendto(b'boom', st.get_extra_info('sockname'))
            c.sendto(b'after', st.get_extra_info('sockname'))
            data, _ = await sp.datagrams.get()
        assert data == b'after'
        assert len(contexts) == 1
        assert isinstance(contexts[0]['exception'], ZeroDivisionError)
        assert not st.is_closing()
        st.close()
        await sp.lost
        return True
    assert run(udp_loop_factory, main)


# ----------------------------------------------------------------------
# create_datagram_endpoint() arguments


def test_sock_argument(udp_loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(('127.0.0.1', 0))
        t, p = await loop.create_datagram_endpoint(Recorder, sock=sock)
        assert not sock.getblocking()
        assert t.get_extra_info('sockname') == sock.getsockname()
        assert t.get_extra_info('peername') is None
        assert t.get_extra_info('socket').fileno() == sock.fileno()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.sendto(b'via sock=', sock.getsockname())
            data, _ = await p.datagrams.get()
        assert data == b'via sock='
        t.close()
        await p.lost
        assert sock.fileno() == -1          # the transport closed it

        # a connected socket passed as sock=: sendto() without an address goes to its peer
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(('127.0.0.1', 0))
        peer.setblocking(False)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect(peer.getsockname())
        t, p = await loop.create_datagram_endpoint(Recorder, sock=sock)
        assert t.get_extra_info('peername') == peer.getsockname()
        t.sendto(b'to peer')
        data, _ = await loop.sock_recvfrom(peer, 100)
        assert data == b'to peer'
        t.close()
        await p.lost
        peer.close()

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            expected = 'A datagram socket was expected' if PY313 else 'A UDP Socket was expected'
            with pytest.raises(ValueError, match=expected + ', got '):
                await loop.create_datagram_endpoint(Recorder, sock=tcp)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            with pytest.raises(ValueError) as info:
                await loop.create_datagram_endpoint(
                    Recorder, sock=s, local_addr=('127.0.0.1', 0), reuse_port=True)
            return str(info.value)
    msg = run(udp_loop_factory, main)
    assert msg == ("socket modifier keyword arguments can not be used when sock is "
                   "specified. (local_addr=('127.0.0.1', 0), reuse_port=True)")


def test_argument_errors(udp_loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        out = []
        for kwargs in (
                {},
                {'local_addr': '127.0.0.1'},
                {'remote_addr': ('127.0.0.1', 1, 2)},
                {'local_addr': ('127.0.0.1', 0), 'family': socket.AF_INET6},
                {'local_addr': ('127.0.0.1', 0), 'reuse_address': True},
                {'family': socket.AF_UNIX, 'local_addr': ('a', 1)},
        ):
            try:
                await loop.create_datagram_endpoint(Recorder, **kwargs)
            except Exception as exc:
                out.append(type(exc).__name__ if isinstance(exc, OSError)
                           else (type(exc).__name__, str(exc).split('(')[-1]))
            else:
                out.append('ok')
        # no address but a family: an unbound socket
        t, p = await loop.create_datagram_endpoint(Recorder, family=socket.AF_INET)
        out.append(t.get_extra_info('peername'))
        t.close()
        await p.lost
        return out
    out = run(udp_loop_factory, main)
    assert out[0] == ('ValueError', 'unexpected address family')
    assert out[1] == ('TypeError', '2-tuple is expected')
    assert out[2] == ('TypeError', '2-tuple is expected')
    assert out[3] in ('gaierror', ('ValueError', 'can not get address information'))
    # reuse_address was removed in 3.11: unknown keyword
    assert out[4][0] == 'TypeError' and 'reuse_address' in out[4][1]
    assert out[5] == ('TypeError', 'string is expected')
    assert out[6] is None


def test_differential_argument_errors_match():
    # The same calls give the same outcome on both loops.
    results = []
    for factory in LOOPS.values():
        async def main():
            loop = asyncio.get_running_loop()
            out = []
            for kwargs in ({}, {'local_addr': ('127.0.0.1', 0), 'family': socket.AF_INET6},
                           {'local_addr': ('no-such-host.invalid', 0)}):
                try:
                    t, p = await loop.create_datagram_endpoint(Recorder, **kwargs)
                except Exception as exc:
                    out.append((type(exc), str(exc)))
                else:
                    t.close()
                    out.append('ok')
            return out
        results.append(run(factory, main))
    assert results[0] == results[1]


def test_reuse_port(udp_loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        t1, p1 = await loop.create_datagram_endpoint(
            Recorder, local_addr=('127.0.0.1', 0), reuse_port=True)
        port = t1.get_extra_info('sockname')[1]
        t2, p2 = await loop.create_datagram_endpoint(
            Recorder, local_addr=('127.0.0.1', port), reuse_port=True)
        for t in (t1, t2):
            s = t.get_extra_info('socket')
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
        with pytest.raises(OSError):
            await loop.create_datagram_endpoint(Recorder, local_addr=('127.0.0.1', port))
        t1.close()
        t2.close()
        await p1.lost
        await p2.lost
        return True
    assert run(udp_loop_factory, main)


def test_allow_broadcast(udp_loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        rt, rp = await loop.create_datagram_endpoint(Recorder, local_addr=('127.0.0.1', 0))
        raddr = rt.get_extra_info('sockname')
        t, p = await loop.create_datagram_endpoint(
            Recorder, local_addr=('127.0.0.1', 0), remote_addr=raddr, allow_broadcast=True)
        s = t.get_extra_info('socket')
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) != 0
        # with allow_broadcast the socket is not connected, but remote_addr
        # is still the default (and only) destination
        assert t.get_extra_info('peername') is None
        t.sendto(b'bcast-default')
        data, _ = await rp.datagrams.get()
        assert data == b'bcast-default'
        with pytest.raises(ValueError, match=r'Invalid address: must be None or'):
            t.sendto(b'x', ('127.0.0.1', 9))
        t2, p2 = await loop.create_datagram_endpoint(
            Recorder, local_addr=('127.0.0.1', 0))
        assert t2.get_extra_info('socket').getsockopt(
            socket.SOL_SOCKET, socket.SO_BROADCAST) == 0
        for tr, pr in ((t, p), (t2, p2), (rt, rp)):
            tr.close()
            await pr.lost
        return True
    assert run(udp_loop_factory, main)


def test_unix_datagram_endpoints(udp_loop_factory, tmp_path):
    server_path = unix_path(tmp_path, 'srv')
    client_path = unix_path(tmp_path, 'cli')

    async def main():
        loop = asyncio.get_running_loop()
        # a stale socket file at local_addr is removed first
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as stale:
            stale.bind(server_path)
        st, sp = await loop.create_datagram_endpoint(
            lambda: Recorder(echo=True), local_addr=server_path, family=socket.AF_UNIX)
        assert st.get_extra_info('sockname') == server_path
        ct, cp = await loop.create_datagram_endpoint(
            Recorder, local_addr=client_path, remote_addr=server_path, family=socket.AF_UNIX)
        assert ct.get_extra_info('peername') == server_path
        ct.sendto(b'over unix')
        data, addr = await cp.datagrams.get()
        assert (data, addr) == (b'over unix', server_path)
        with pytest.raises(ValueError, match='Invalid address: must be None or'):
            ct.sendto(b'x', '/elsewhere')
        # a connected AF_UNIX datagram socket only accepts its peer's datagrams
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as other:
            with pytest.raises(PermissionError):
                other.sendto(b'x', client_path)
        # an unbound sender arrives with address None
        ut, up = await loop.create_datagram_endpoint(
            Recorder, local_addr=client_path + '3', family=socket.AF_UNIX)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as anon:
            anon.sendto(b'anon', client_path + '3')
            data, addr = await up.datagrams.get()
        assert (data, addr) == (b'anon', None)
        ut.close()
        await up.lost
        # abstract namespace
        abstract = '\x00zcloop-test-%d' % os.getpid()
        at, ap = await loop.create_datagram_endpoint(
            Recorder, local_addr=abstract, family=socket.AF_UNIX)
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.bind(client_path + '2')
            s.sendto(b'abs', abstract)
            data, addr = await ap.datagrams.get()
        assert (data, addr) == (b'abs', client_path + '2')
        for tr, pr in ((ct, cp), (st, sp), (at, ap)):
            tr.close()
            await pr.lost
        return True
    assert run(udp_loop_factory, main)


# ----------------------------------------------------------------------
# sendto() semantics


def test_sendto_argument_checks(udp_loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        st, sp = await loop.create_datagram_endpoint(Recorder, local_addr=('127.0.0.1', 0))
        saddr = st.get_extra_info('sockname')
        ct, cp = await loop.create_datagram_endpoint(Recorder, remote_addr=saddr)
        out = []
        for bad in ('str', 1234, None, [b'x']):
            with pytest.raises(TypeError) as info:
                ct.sendto(bad)
            out.append(str(info.value))
        with pytest.raises(ValueError) as info:
            ct.sendto(b'x', ('127.0.0.1', 1))
        out.append(str(info.value))
        ct.sendto(b'ok', saddr)             # the connected address itself is fine
        ct.sendto(b'ok2', None)
        ct.sendto(b'')                      # 3.11/3.12: dropped; 3.13+: empty datagram
        ct.sendto(b'last')
        got = []
        while len(got) < (4 if PY313 else 3):
            got.append((await sp.datagrams.get())[0])
        out.append(got)
        ct.close()
        st.close()
        await cp.lost
        await sp.lost
        return out
    out = run(udp_loop_factory, main)
    assert out[:4] == [
        "data argument must be a bytes-like object, not 'str'",
        "data argument must be a bytes-like object, not 'int'",
        "data argument must be a bytes-like object, not 'NoneType'",
        "data argument must be a bytes-like object, not 'list'",
    ]
    assert out[4].startswith("Invalid address: must be None or ('127.0.0.1', ")
    assert out[5] == ([b'ok', b'ok2', b'', b'last'] if PY313 else [b'ok', b'ok2', b'last'])


def test_sendto_bad_destination(udp_loop_factory):
    # Unresolvable destination: OSError -> error_received(); a destination
    # of the wrong type: fatal error, the endpoint closes (asyncio).
    async def main():
        loop = asyncio.get_running_loop()
        contexts = []
        loop.set_exception_handler(lambda loop, ctx: contexts.append(ctx))
        rt, rp = await loop.create_datagram_endpoint(Recorder, local_addr=('127.0.0.1', 0))
        t, p = await loop.create_datagram_endpoint(Recorder, local_addr=('127.0.0.1', 0))
        t.sendto(b'x', ('no-such-host.invalid', 9))
        exc = await p.errors.get()
        assert isinstance(exc, socket.gaierror)
        # a host name is resolved, as socket.sendto() does
        t.sendto(b'by name', ('localhost', rt.get_extra_info('sockname')[1]))
        data, _ = await rp.datagrams.get()
        assert data == b'by name'
        assert not t.is_closing()
        t.sendto(b'x', 'not-a-tuple')
        exc = await p.lost
        assert isinstance(exc, TypeError)
        assert [c['message'] for c in contexts] == ['Fatal write error on datagram transport']
        rt.close()
        await rp.lost
        return True
    assert run(udp_loop_factory, main)


def test_write_after_close_is_dropped_and_warned(udp_loop_factory, caplog):
    async def main():
        loop = asyncio.get_running_loop()
        st, sp = await loop.create_datagram_endpoint(Recorder, local_addr=('127.0.0.1', 0))
        ct, cp = await loop.create_datagram_endpoint(
            Recorder, remote_addr=st.get_extra_info('sockname'))
        ct.close()
        await cp.lost
        with caplog.at_level(logging.WARNING, logger='asyncio'):
            for _ in range(10):
                ct.sendto(b'late')
        await asyncio.sleep(0.05)
        assert sp.datagrams.empty()
        st.close()
        await sp.lost
        return sum(1 for r in caplog.records if r.getMessage() == 'socket.send() raised exception.')
    # asyncio: conn_lost starts at 1 and each write bumps it; it logs once
    # the counter reached LOG_THRESHOLD_FOR_CONNLOST_WRITES (5).
    assert run(udp_loop_factory, main) == 6


def test_close_waits_for_pending_sends(udp_loop_factory):
    N = 100

    async def main():
        loop = asyncio.get_running_loop()
        st, sp = await loop.create_datagram_endpoint(Recorder, local_addr=('127.0.0.1', 0))
        ct, cp = await loop.create_datagram_endpoint(
            Recorder, remote_addr=st.get_extra_info('sockname'))
        for i in range(N):
            ct.sendto(b'%05d' % i + b'.' * 200)
        ct.close()
        assert ct.is_closing()
        ct.close()                          # idempotent
        assert await cp.lost is None
        assert cp.events.count('lost') == 1
        assert ct.get_extra_info('socket').fileno() == -1
        got = set()
        while len(got) < N:
            got.add((await sp.datagrams.get())[0][:5])
        st.close()
        await sp.lost
        return len(got)
    assert run(udp_loop_factory, main) == N


def test_abort_drops_pending_sends(udp_loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        st, sp = await loop.create_datagram_endpoint(Recorder, local_addr=('127.0.0.1', 0))
        ct, cp = await loop.create_datagram_endpoint(
            Recorder, remote_addr=st.get_extra_info('sockname'))
        for i in range(300):
            ct.sendto(b'%05d' % i)
        ct.abort()
        assert ct.is_closing()
        assert ct.get_write_buffer_size() == 0
        assert await cp.lost is None
        ct.abort()
        ct.close()
        await asyncio.sleep(0.05)
        assert cp.events.count('lost') == 1
        n = 0
        while not sp.datagrams.empty():
            sp.datagrams.get_nowait()
            n += 1
        st.close()
        await sp.lost
        return n <= 300
    assert run(udp_loop_factory, main)


def test_close_right_after_creation(udp_loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        protos = []

        def factory():
            p = Recorder()
            protos.append(p)
            return p
        t, p = await loop.create_datagram_endpoint(factory, local_addr=('127.0.0.1', 0))
        t.close()
        assert await p.lost is None
        return p.events
    assert run(udp_loop_factory, main) == ['made', 'lost']


def test_get_extra_info(udp_loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        st, sp = await loop.create_datagram_endpoint(Recorder, local_addr=('127.0.0.1', 0))
        ct, cp = await loop.create_datagram_endpoint(
            Recorder, local_addr=('127.0.0.1', 0), remote_addr=st.get_extra_info('sockname'))
        info = {}
        for name in ('sockname', 'peername'):
            info[name] = (st.get_extra_info(name), ct.get_extra_info(name))
        sock = ct.get_extra_info('socket')
        info['socket'] = (type(sock).__name__, sock.family, sock.type,
                          sock.getsockname() == ct.get_extra_info('sockname'))
        info['default'] = ct.get_extra_info('nonexistent', 'dflt')
        info['protocol'] = ct.get_protocol() is cp
        info['closing'] = ct.is_closing()
        ct.close()
        st.close()
        await cp.lost
        await sp.lost
        return info
    info = run(udp_loop_factory, main)
    assert info['sockname'][0][0] == '127.0.0.1' and info['peername'][0] is None
    assert info['peername'][1] == info['sockname'][0]
    assert info['socket'] == ('TransportSocket', socket.AF_INET, socket.SOCK_DGRAM, True)
    assert info['default'] == 'dflt'
    assert info['protocol'] and not info['closing']


def test_set_protocol(udp_loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        st, sp = await loop.create_datagram_endpoint(Recorder, local_addr=('127.0.0.1', 0))
        other = Recorder()
        st.set_protocol(other)
        assert st.get_protocol() is other
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.sendto(b'to other', st.get_extra_info('sockname'))
            data, _ = await other.datagrams.get()
        st.close()
        await other.lost
        return data, sp.datagrams.empty()
    assert run(udp_loop_factory, main) == (b'to other', True)


def test_failed_send_does_not_lose_or_reorder_the_next_ones(udp_loop_factory):
    # The middle datagram is too big for IP: error_received(EMSGSIZE), and
    # the datagrams around it still arrive, in order.
    async def main():
        loop = asyncio.get_running_loop()
        st, sp = await loop.create_datagram_endpoint(Recorder, local_addr=('127.0.0.1', 0))
        ct, cp = await loop.create_datagram_endpoint(
            Recorder, remote_addr=st.get_extra_info('sockname'))
        ct.sendto(b'A')
        ct.sendto(b'B')
        ct.sendto(b'x' * 65508)
        ct.sendto(b'C')
        ct.sendto(b'D')
        exc = await cp.errors.get()
        got = [(await sp.datagrams.get())[0] for _ in range(4)]
        assert ct.get_write_buffer_size() == 0
        ct.close()
        st.close()
        await cp.lost
        return type(exc), exc.errno, got
    assert run(udp_loop_factory, main) == (OSError, errno_EMSGSIZE, [b'A', b'B', b'C', b'D'])


@pytest.fixture(scope='module')
def remote_peer():
    """(host, port) of a UDP peer nobody reads, in a private network namespace
    behind a veth pair whose host side is rate-limited (tbf), so a sender's
    buffer really fills up.  Traffic never leaves this machine."""
    ip, tc = shutil.which('ip'), shutil.which('tc')
    if ip is None or tc is None or os.geteuid() != 0:
        pytest.skip('needs root, iproute2 and tc to make a network namespace')
    tag = f'{os.getpid() % 100000}'
    ns, host_if, ns_if = f'zcu{tag}', f'zcu{tag}a', f'zcu{tag}b'
    host_addr, peer_addr = '10.213.78.1', '10.213.78.2'

    def sh(*args, check=True):
        return subprocess.run(list(args), capture_output=True, text=True, check=check)
    try:
        try:
            sh(ip, 'netns', 'add', ns)
            sh(ip, 'link', 'add', host_if, 'type', 'veth', 'peer', 'name', ns_if)
            sh(ip, 'link', 'set', ns_if, 'netns', ns)
            sh(ip, 'addr', 'add', f'{host_addr}/30', 'dev', host_if)
            sh(ip, 'link', 'set', host_if, 'up')
            sh(tc, 'qdisc', 'add', 'dev', host_if, 'root', 'tbf', 'rate', '4mbit',
               'burst', '4kb', 'latency', '200ms')
            sh(ip, 'netns', 'exec', ns, ip, 'addr', 'add', f'{peer_addr}/30', 'dev', ns_if)
            sh(ip, 'netns', 'exec', ns, ip, 'link', 'set', ns_if, 'up')
        except subprocess.CalledProcessError as exc:
            pytest.skip(f'cannot make a network namespace: {exc.stderr.strip()}')
        yield peer_addr, 9
    finally:
        sh(ip, 'netns', 'del', ns, check=False)
        sh(ip, 'link', 'del', host_if, check=False)


def test_udp_sends_wait_for_send_buffer_room(udp_loop_factory, remote_peer):
    REMOTE = remote_peer
    async def main():
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
        t, p = await loop.create_datagram_endpoint(Recorder, sock=sock)
        for i in range(40):
            t.sendto(b'%05d' % i + b'.' * 1395, REMOTE)
        for _ in range(1000):
            if t.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.002)
        size = t.get_write_buffer_size()
        t.close()
        await p.lost
        return size, p.errors.qsize(), p.paused == p.resumed
    size, nerrors, balanced = run(udp_loop_factory, main)
    assert nerrors == 0 and balanced
    assert size == 0 or asyncio_header_leak(udp_loop_factory, size)


def test_sock_sendto_waits_for_udp_send_buffer(udp_loop_factory, remote_peer):
    REMOTE = remote_peer
    # On zcloop the blocked send is a SENDMSG on the ring.
    async def main():
        loop = asyncio.get_running_loop()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)
        s.setblocking(False)
        results = []
        blocked = 0
        for i in range(500):
            try:
                s.sendto(b'p' * 1400, REMOTE)
            except BlockingIOError:
                blocked += 1
                results.append(await loop.sock_sendto(s, b'q' * 1400, REMOTE))
                if blocked == 3:
                    break
        if not blocked:
            s.close()
            pytest.skip('the send buffer never filled up')
        # a cancelled sock_sendto of a blocked socket
        for i in range(500):
            try:
                s.sendto(b'p' * 1400, REMOTE)
            except BlockingIOError:
                break
        task = asyncio.ensure_future(loop.sock_sendto(s, b'r' * 1400, REMOTE))
        await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        s.close()
        return blocked > 0, set(results) <= {1400}
    assert run(udp_loop_factory, main) == (True, True)


# ----------------------------------------------------------------------
# Flow control


def test_write_buffer_size_drains_to_zero(udp_loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        st, sp = await loop.create_datagram_endpoint(Recorder, local_addr=('127.0.0.1', 0))
        ct, cp = await loop.create_datagram_endpoint(
            Recorder, remote_addr=st.get_extra_info('sockname'))
        assert ct.get_write_buffer_limits() == (16384, 65536)
        for _ in range(50):
            ct.sendto(b'x' * 1000)
        size = ct.get_write_buffer_size()
        assert 0 <= size <= 50 * (1000 + HDR)
        for _ in range(100):
            if ct.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.001)
        assert ct.get_write_buffer_size() == 0
        assert cp.paused == cp.resumed
        ct.close()
        st.close()
        await cp.lost
        return True
    assert run(udp_loop_factory, main)


def test_flow_control_with_blocked_peer(udp_loop_factory, tmp_path):
    # A connected AF_UNIX datagram socket blocks once the peer's queue is
    # full: both loops buffer, call pause_writing() above the high-water
    # mark and resume_writing() once the peer drains; nothing is lost.
    path = unix_path(tmp_path)
    N = 200

    async def main():
        loop = asyncio.get_running_loop()
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        peer.bind(path)
        peer.setblocking(False)
        t, p = await loop.create_datagram_endpoint(
            Recorder, remote_addr=path, family=socket.AF_UNIX)
        t.set_write_buffer_limits(high=4000, low=1000)
        for i in range(N):
            t.sendto(b'%05d' % i + b'-' * 995)
        await asyncio.sleep(0.01)
        assert p.paused == 1 and p.resumed == 0
        assert t.get_write_buffer_size() > 4000
        got = []
        while len(got) < N:
            data, _ = await loop.sock_recvfrom(peer, 2000)
            got.append(data[:5])
        for _ in range(100):
            if t.get_write_buffer_size() == 0 and p.resumed:
                break
            await asyncio.sleep(0.001)
        size = t.get_write_buffer_size()
        assert size == 0 or asyncio_header_leak(udp_loop_factory, size)
        assert p.resumed == 1 or (size > 1000 and asyncio_header_leak(udp_loop_factory, size))
        t.close()
        await p.lost
        peer.close()
        return sorted(got) == [b'%05d' % i for i in range(N)], got == sorted(got)
    in_full, in_order = run(udp_loop_factory, main)
    assert in_full
    assert in_order


# ----------------------------------------------------------------------
# sock_sendto / sock_recvfrom / sock_recvfrom_into


def test_sock_datagram_api(udp_loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.bind(('127.0.0.1', 0))
        b.bind(('127.0.0.1', 0))
        a.setblocking(False)
        b.setblocking(False)
        out = []
        # receive posted before the datagram exists (waits on the ring)
        rtask = asyncio.ensure_future(loop.sock_recvfrom(b, 100))
        await asyncio.sleep(0.01)
        assert not rtask.done()
        out.append(await loop.sock_sendto(a, b'one', b.getsockname()))
        out.append(await rtask)
        await loop.sock_sendto(a, memoryview(b'two'), b.getsockname())
        buf = bytearray(10)
        out.append(await loop.sock_recvfrom_into(b, buf))
        out.append(bytes(buf[:3]))
        await loop.sock_sendto(a, b'three!', b.getsockname())
        buf = bytearray(10)
        out.append(await loop.sock_recvfrom_into(b, buf, 4))   # truncated to nbytes
        out.append(bytes(buf))
        # waiting recvfrom_into
        rtask = asyncio.ensure_future(loop.sock_recvfrom_into(b, buf))
        await asyncio.sleep(0.01)
        await loop.sock_sendto(a, b'four', b.getsockname())
        out.append((await rtask)[0])
        a.close()
        b.close()
        return out
    out = run(udp_loop_factory, main)
    assert out[0] == 3
    assert out[1][0] == b'one'
    assert out[2][0] == 3 and out[3] == b'two'
    assert out[4][0] == 4 and out[5] == b'thre' + bytes(6)
    assert out[6] == 4


def test_cancelled_sock_recvfrom_loses_nothing(udp_loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.bind(('127.0.0.1', 0))
        b.bind(('127.0.0.1', 0))
        a.setblocking(False)
        b.setblocking(False)
        results = []
        for i in range(20):
            task = asyncio.ensure_future(loop.sock_recvfrom(b, 100))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            a.sendto(b'msg%d' % i, b.getsockname())
            data, _ = await loop.sock_recvfrom(b, 100)
            results.append(data)
        # also cancelled via wait_for timeout
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(loop.sock_recvfrom_into(b, bytearray(10)), 0.01)
        a.sendto(b'after-timeout', b.getsockname())
        results.append((await loop.sock_recvfrom(b, 100))[0])
        a.close()
        b.close()
        return results
    assert run(udp_loop_factory, main) == [b'msg%d' % i for i in range(20)] + [b'after-timeout']


def test_sock_api_checks(udp_loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        out = []
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(('127.0.0.1', 0))
            for coro in (loop.sock_recvfrom(s, 10),
                         loop.sock_recvfrom_into(s, bytearray(10)),
                         loop.sock_sendto(s, b'x', s.getsockname())):
                with pytest.raises(ValueError) as info:
                    await coro
                out.append(str(info.value))
        ctx = ssl.create_default_context()
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as raw:
            sslsock = ctx.wrap_socket(raw, server_hostname='example.com',
                                      do_handshake_on_connect=False)
            for coro in (loop.sock_recvfrom(sslsock, 10),
                         loop.sock_recvfrom_into(sslsock, bytearray(1)),
                         loop.sock_sendto(sslsock, b'x', ('127.0.0.1', 9))):
                with pytest.raises(TypeError) as info:
                    await coro
                out.append(str(info.value))
            sslsock.close()
        return out
    out = run(udp_loop_factory, main, debug=True)
    assert out == ['the socket must be non-blocking'] * 3 + [
        'Socket cannot be of type SSLSocket'] * 3


def test_sock_sendto_waits_for_room(udp_loop_factory, tmp_path):
    # AF_UNIX datagram peer with a full queue: sendto would block, so
    # sock_sendto() waits (on zcloop: a SENDMSG on the ring).
    path = unix_path(tmp_path)

    async def main():
        loop = asyncio.get_running_loop()
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        peer.bind(path)
        peer.setblocking(False)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.setblocking(False)
        n = 0
        while True:
            try:
                s.sendto(b'fill%d' % n, path)
                n += 1
            except BlockingIOError:
                break
        task = asyncio.ensure_future(loop.sock_sendto(s, b'waited', path))
        await asyncio.sleep(0.02)
        assert not task.done()
        got = []
        for _ in range(n + 1):
            got.append((await loop.sock_recvfrom(peer, 100))[0])
        res = await task
        # cancelling a blocked send
        while True:
            try:
                s.sendto(b'fill', path)
            except BlockingIOError:
                break
        task = asyncio.ensure_future(loop.sock_sendto(s, b'cancelled', path))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        s.close()
        peer.close()
        return res, got[-1]
    assert run(udp_loop_factory, main) == (6, b'waited')


# ----------------------------------------------------------------------
# Resources


def _count_fds():
    return len(os.listdir('/proc/self/fd'))


def test_no_fd_leak(udp_loop_factory, tmp_path):
    path = unix_path(tmp_path)

    async def main():
        loop = asyncio.get_running_loop()
        before = _count_fds()
        for i in range(150):
            st, sp = await loop.create_datagram_endpoint(Recorder, local_addr=('127.0.0.1', 0))
            ct, cp = await loop.create_datagram_endpoint(
                Recorder, remote_addr=st.get_extra_info('sockname'))
            ct.sendto(b'x')
            await sp.datagrams.get()
            # failing creation leaks nothing either
            with pytest.raises(OSError):
                await loop.create_datagram_endpoint(
                    Recorder, local_addr=st.get_extra_info('sockname'))
            if i % 3 == 0:
                ct.abort()
            else:
                ct.close()
            st.close()
            await cp.lost
            await sp.lost
            ut, up = await loop.create_datagram_endpoint(
                Recorder, local_addr=path, family=socket.AF_UNIX)
            ut.close()
            await up.lost
        await asyncio.sleep(0)
        gc.collect()
        return before, _count_fds()
    before, after = run(udp_loop_factory, main)
    assert after <= before


# ----------------------------------------------------------------------
# zcloop only: in-flight sends and zero-copy


def test_zcloop_sends_are_chained_in_order():
    # sendto() only queues; the datagrams of one iteration go to the ring as
    # linked chains of at most 64 SENDMSGs, which the kernel runs in order.
    async def main():
        loop = asyncio.get_running_loop()
        st, sp = await loop.create_datagram_endpoint(Recorder, local_addr=('127.0.0.1', 0))
        ct, cp = await loop.create_datagram_endpoint(
            Recorder, remote_addr=st.get_extra_info('sockname'))
        for i in range(150):
            ct.sendto(b'%05d' % i)
        stats = ct.get_extra_info('zcloop')
        assert stats['inflight'] == 0 and stats['queued'] == 150
        assert ct.get_write_buffer_size() == 150 * (5 + HDR)
        got = [(await sp.datagrams.get())[0] for _ in range(150)]
        stats = ct.get_extra_info('zcloop')
        assert stats['queued'] == 0 and stats['copy_sends'] == 150
        ct.close()
        st.close()
        await cp.lost
        return got
    assert run(zcloop.Loop, main) == [b'%05d' % i for i in range(150)]


def test_zcloop_unix_full_peer_no_empty_datagram(tmp_path):
    # Regression: an io_uring SENDMSG that waits for room on a connected
    # AF_UNIX datagram socket sent an empty datagram (the payload iterator
    # was consumed by the first, failed attempt).
    path = unix_path(tmp_path)

    async def main():
        loop = asyncio.get_running_loop()
        peer = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        peer.bind(path)
        peer.setblocking(False)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.connect(path)
        s.setblocking(False)
        n = 0
        while True:
            try:
                s.send(b'fill%d' % n)
                n += 1
            except BlockingIOError:
                break
        t, p = await loop.create_datagram_endpoint(Recorder, sock=s)
        t.sendto(b'PAYLOAD-1')
        t.sendto(b'PAYLOAD-2')
        await asyncio.sleep(0.02)
        assert t.get_write_buffer_size() == 18 + 2 * HDR
        got = [(await loop.sock_recvfrom(peer, 100))[0] for _ in range(n + 2)]
        t.close()
        await p.lost
        peer.close()
        return got[-2:], t.get_write_buffer_size()
    assert run(zcloop.Loop, main) == ([b'PAYLOAD-1', b'PAYLOAD-2'], 0)


def test_zcloop_zero_copy_demotes_on_loopback():
    # Forced zero-copy to a loopback peer: the kernel copies, reports it in
    # the notification, and the transport goes back to copy sends.
    async def main():
        loop = asyncio.get_running_loop()
        if not loop.features()['sendmsg_zc']:
            pytest.skip('no SENDMSG_ZC')
        st, sp = await loop.create_datagram_endpoint(Recorder, local_addr=('127.0.0.1', 0))
        ct, cp = await loop.create_datagram_endpoint(
            Recorder, remote_addr=st.get_extra_info('sockname'))
        assert ct.get_extra_info('zcloop')['zc_write']
        ct.sendto(b'z' * 20000)                 # local peer: copy, not ZC
        assert (await sp.datagrams.get())[0] == b'z' * 20000
        assert ct.get_extra_info('zcloop')['zc_sends'] == 0
        ct._set_zc_local(True)
        payloads = [bytes([i]) * 20000 for i in range(1, 4)]
        for pl in payloads:
            ct.sendto(pl)
        got = [(await sp.datagrams.get())[0] for _ in range(3)]
        assert got == payloads
        assert ct.get_extra_info('zcloop')['zc_sends'] == 3
        for _ in range(200):
            if ct.get_extra_info('zcloop')['zc_copied']:
                break
            await asyncio.sleep(0.001)
        stats = ct.get_extra_info('zcloop')
        assert stats['zc_copied'] >= 1 and stats['demotions'] == 1
        assert not stats['zc_write']
        ct.sendto(b'y' * 20000)
        assert (await sp.datagrams.get())[0] == b'y' * 20000
        assert ct.get_extra_info('zcloop')['zc_sends'] == 3
        ct.close()
        st.close()
        await cp.lost
        return True
    assert run(zcloop.Loop, main)


def test_zcloop_zero_copy_small_datagrams_use_copy():
    async def main():
        loop = asyncio.get_running_loop()
        st, sp = await loop.create_datagram_endpoint(Recorder, local_addr=('127.0.0.1', 0))
        ct, cp = await loop.create_datagram_endpoint(
            Recorder, remote_addr=st.get_extra_info('sockname'))
        ct._set_zc_local(True)
        ct.sendto(b's' * 16383)
        await sp.datagrams.get()
        stats = ct.get_extra_info('zcloop')
        ct.close()
        st.close()
        await cp.lost
        return stats['zc_sends'], stats['copy_sends']
    assert run(zcloop.Loop, main) == (0, 1)


def test_zcloop_zero_copy_to_remote_peer(remote_peer):
    # A non-local peer (veth into a private namespace): large datagrams go
    # out as SENDMSG_ZC.  Nobody answers; only the send side is checked.
    async def main():
        loop = asyncio.get_running_loop()
        if not loop.features()['sendmsg_zc']:
            pytest.skip('no SENDMSG_ZC')
        t, p = await loop.create_datagram_endpoint(Recorder, family=socket.AF_INET)
        for i in range(4):
            t.sendto(bytes([i]) * 30000, remote_peer)
        t.sendto(b'small', remote_peer)
        for _ in range(200):
            if t.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.005)
        assert t.get_write_buffer_size() == 0
        stats = t.get_extra_info('zcloop')
        assert stats['zc_sends'] == 4 and stats['copy_sends'] == 1
        assert p.errors.empty(), p.errors.get_nowait()
        t.close()
        assert await p.lost is None
        return True
    assert run(zcloop.Loop, main)


def test_zcloop_send_zc_feature_switch():
    async def main():
        loop = asyncio.get_running_loop()
        t, p = await loop.create_datagram_endpoint(Recorder, family=socket.AF_INET)
        enabled = t.get_extra_info('zcloop')['zc_write']
        t.close()
        await p.lost
        return enabled
    assert run(lambda: zcloop.Loop(disable_features={'send_zc'}), main) is False


def test_zcloop_loop_close_with_open_endpoint(caplog):
    # Closing the loop with an endpoint still reading: the armed RECVMSG is
    # cancelled and drained, nothing is left in flight.
    loop = zcloop.Loop()

    async def main():
        t, p = await loop.create_datagram_endpoint(Recorder, local_addr=('127.0.0.1', 0))
        await asyncio.sleep(0.01)
        return t
    t = loop.run_until_complete(main())
    with caplog.at_level(logging.WARNING):
        loop.close()
    assert not [r for r in caplog.records if 'still in flight' in r.getMessage()]
    # like asyncio, loop.close() leaves open transports' sockets alone
    t.get_extra_info('socket')._sock.close()

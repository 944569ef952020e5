"""create_server / create_connection / Server API / Unix sockets / streams,
the same scenarios on asyncio's SelectorEventLoop and on zcloop."""
import asyncio
import errno
import os
import shutil
import socket
import stat
import subprocess
import sys

import pytest

from streamutil import (
    IS_312, IS_313, LoopFactory, Recorder, accept_raw, echo_server, fd_count,
    free_port, has_ipv6, loop_factory_fixture, no_resource_warnings, normalize, run,
    tcp_listener,
)

loop_factory = loop_factory_fixture()

needs_ipv6 = pytest.mark.skipif(not has_ipv6(), reason='no IPv6 loopback')


def both(coro_fn, *args, **kwargs):
    """Run the scenario on both loops; return (asyncio_result, zcloop_result)."""
    return (run(LoopFactory('asyncio'), coro_fn, *args, **kwargs),
            run(LoopFactory('zcloop'), coro_fn, *args, **kwargs))


# ----------------------------------------------------------------------
# Server lifecycle


def test_server_basic_lifecycle(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        srv = await echo_server(loop)
        assert srv.is_serving()
        assert srv.get_loop() is loop
        socks = srv.sockets
        assert len(socks) == 1
        assert type(socks[0]).__name__ == 'TransportSocket'
        host, port = socks[0].getsockname()
        assert host == '127.0.0.1' and port > 0
        tr, pr = await loop.create_connection(Recorder, host, port)
        tr.write(b'hello')
        assert await pr.wait_bytes(5) == b'hello'
        tr.close()
        assert await pr.lost is None
        assert pr.events == ['made', 'data', 'lost']
        srv.close()
        assert not srv.is_serving()
        assert srv.sockets == ()
        await srv.wait_closed()
        srv.close()      # idempotent
        # The port is free again.
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(('127.0.0.1', port))
            s.listen()
    run(loop_factory, main)


def test_server_repr_and_sockets_are_transport_sockets(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        srv = await echo_server(loop)
        ts = srv.sockets[0]
        # TransportSocket exposes the safe subset only.
        assert ts.family == socket.AF_INET and ts.type == socket.SOCK_STREAM
        assert ts.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        assert 'sockets=' in repr(srv)
        srv.close()
        await srv.wait_closed()
    run(loop_factory, main)


@needs_ipv6
def test_server_multiple_hosts(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(lambda: Recorder(echo=True), ['127.0.0.1', '::1'], 0)
        fams = sorted(s.family for s in srv.sockets)
        assert fams == sorted([socket.AF_INET, socket.AF_INET6])
        for s in srv.sockets:
            if s.family == socket.AF_INET6:
                assert s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
            host, port = s.getsockname()[:2]
            tr, pr = await loop.create_connection(Recorder, host, port)
            tr.write(host.encode())
            assert await pr.wait_bytes(len(host)) == host.encode()
            tr.close()
            await pr.lost
        srv.close()
        await srv.wait_closed()
    run(loop_factory, main)


def test_server_from_sock(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        lsock = socket.socket()
        lsock.bind(('127.0.0.1', 0))
        srv = await loop.create_server(lambda: Recorder(echo=True), sock=lsock)
        assert srv.sockets[0].fileno() == lsock.fileno()
        assert lsock.gettimeout() == 0.0          # made non-blocking
        tr, pr = await loop.create_connection(Recorder, *lsock.getsockname())
        tr.write(b'x' * 1000)
        await pr.wait_bytes(1000)
        tr.close()
        await pr.lost
        srv.close()
        await srv.wait_closed()
        assert lsock.fileno() == -1               # the server closed it
    run(loop_factory, main)


def test_server_reuse_port(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        srv1 = await loop.create_server(Recorder, '127.0.0.1', 0, reuse_port=True)
        port = srv1.sockets[0].getsockname()[1]
        srv2 = await loop.create_server(Recorder, '127.0.0.1', port, reuse_port=True)
        for srv in (srv1, srv2):
            s = srv.sockets[0]
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR) == 1
        # Without reuse_port the port is taken: asyncio's message shape.
        with pytest.raises(OSError) as info:
            await loop.create_server(Recorder, '127.0.0.1', port)
        assert info.value.errno == errno.EADDRINUSE
        msg = normalize(str(info.value), port)
        srv1.close()
        srv2.close()
        await srv1.wait_closed()
        await srv2.wait_closed()
        return msg
    a, z = both(main)
    assert a == z
    assert 'error while attempting to bind on address' in a


def test_server_backlog(loop_factory):
    """The backlog reaches listen(): ss shows it as the listener's Send-Q."""
    ss = shutil.which('ss')

    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(Recorder, '127.0.0.1', 0, backlog=7)
        port = srv.sockets[0].getsockname()[1]
        send_q = None
        if ss:
            out = subprocess.run([ss, '-ltnH', f'sport = :{port}'], capture_output=True,
                                 text=True).stdout.split()
            if len(out) >= 3:
                send_q = int(out[2])
        srv.close()
        await srv.wait_closed()
        return send_q
    send_q = run(loop_factory, main)
    if send_q is None:
        pytest.skip('ss not available to read the listen backlog')
    assert send_q == 7


def test_start_serving_false(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(lambda: Recorder(echo=True), '127.0.0.1', 0,
                                       start_serving=False)
        assert not srv.is_serving()
        port = srv.sockets[0].getsockname()[1]
        # Not listening yet: the kernel refuses.
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(Recorder, '127.0.0.1', port)
        await srv.start_serving()
        assert srv.is_serving()
        await srv.start_serving()      # idempotent
        tr, pr = await loop.create_connection(Recorder, '127.0.0.1', port)
        tr.write(b'ping')
        assert await pr.wait_bytes(4) == b'ping'
        tr.close()
        await pr.lost
        srv.close()
        await srv.wait_closed()
    run(loop_factory, main)


def test_serve_forever_cancel(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(lambda: Recorder(echo=True), '127.0.0.1', 0,
                                       start_serving=False)
        port = srv.sockets[0].getsockname()[1]
        task = asyncio.create_task(srv.serve_forever())
        await asyncio.sleep(0)
        assert srv.is_serving()
        tr, pr = await loop.create_connection(Recorder, '127.0.0.1', port)
        tr.write(b'abc')
        assert await pr.wait_bytes(3) == b'abc'
        with pytest.raises(RuntimeError, match='already being awaited on serve_forever'):
            await srv.serve_forever()
        tr.close()
        await pr.lost
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not srv.is_serving()
        assert srv.sockets == ()
        with pytest.raises(RuntimeError, match='is closed'):
            await srv.serve_forever()
    run(loop_factory, main)


def test_server_async_with(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        async with await echo_server(loop) as srv:
            assert srv.is_serving()
            port = srv.sockets[0].getsockname()[1]
            tr, pr = await loop.create_connection(Recorder, '127.0.0.1', port)
            tr.write(b'q')
            await pr.wait_bytes(1)
            tr.close()
            await pr.lost
        assert not srv.is_serving()
        with pytest.raises(ConnectionRefusedError):
            await loop.create_connection(Recorder, '127.0.0.1', port)
    run(loop_factory, main)


def test_wait_closed_semantics():
    """wait_closed() before close(), with a live connection: both loops must
    resolve it at the same points (version dependent)."""
    async def main():
        loop = asyncio.get_running_loop()
        conns = []

        def factory():
            p = Recorder()
            conns.append(p)
            return p
        srv = await loop.create_server(factory, '127.0.0.1', 0)
        port = srv.sockets[0].getsockname()[1]
        tr, pr = await loop.create_connection(Recorder, '127.0.0.1', port)
        while not conns:
            await asyncio.sleep(0.01)
        await conns[0].made
        waiter = asyncio.create_task(srv.wait_closed())
        await asyncio.sleep(0.05)
        states = [waiter.done()]
        srv.close()
        await asyncio.sleep(0.05)
        states.append(waiter.done())
        # A wait_closed() after close() with the connection still open.
        late = asyncio.create_task(srv.wait_closed())
        await asyncio.sleep(0.05)
        states.append(late.done())
        conns[0].transport.close()
        await pr.lost
        await asyncio.wait_for(waiter, 5)
        await asyncio.wait_for(late, 5)
        states.append(True)
        tr.close()
        return states
    a, z = both(main)
    assert a == z
    assert a[0] is False


# ----------------------------------------------------------------------
# create_connection


def test_connection_refused_message():
    def main():
        async def inner():
            loop = asyncio.get_running_loop()
            port = free_port()
            with pytest.raises(ConnectionRefusedError) as info:
                await loop.create_connection(Recorder, '127.0.0.1', port)
            e = info.value
            return type(e), e.errno, normalize(str(e), port), e.args[0]
        return inner
    a, z = both(main())
    assert a == z
    assert a[2] == "[Errno 111] Connect call failed ('127.0.0.1', <X>)"


def _patch_resolver(loop, infos):
    """Make 'multi.test' resolve to ``infos`` (real sockets, stub DNS)."""
    real = loop.getaddrinfo

    async def getaddrinfo(host, port, *, family=0, type=0, proto=0, flags=0):
        if host == 'multi.test':
            return [i for i in infos if family in (0, i[0])]
        return await real(host, port, family=family, type=type, proto=proto, flags=flags)
    loop.getaddrinfo = getaddrinfo


def _ai(host, port):
    fam = socket.AF_INET6 if ':' in host else socket.AF_INET
    addr = (host, port, 0, 0) if fam == socket.AF_INET6 else (host, port)
    return (fam, socket.SOCK_STREAM, socket.IPPROTO_TCP, '', addr)


def test_multiple_addresses_first_refused(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        srv = await echo_server(loop)
        port = srv.sockets[0].getsockname()[1]
        bad = free_port('127.0.0.2')
        _patch_resolver(loop, [_ai('127.0.0.2', bad), _ai('127.0.0.1', port)])
        tr, pr = await loop.create_connection(Recorder, 'multi.test', 0)
        assert tr.get_extra_info('peername') == ('127.0.0.1', port)
        tr.close()
        await pr.lost
        srv.close()
        await srv.wait_closed()
    run(loop_factory, main)


def test_multiple_addresses_all_refused_message():
    async def main():
        loop = asyncio.get_running_loop()
        p1, p2 = free_port('127.0.0.2'), free_port('127.0.0.3')
        _patch_resolver(loop, [_ai('127.0.0.2', p1), _ai('127.0.0.3', p2)])
        with pytest.raises(OSError) as info:
            await loop.create_connection(Recorder, 'multi.test', 0)
        return type(info.value), normalize(str(info.value), p1, p2)
    a, z = both(main)
    assert a == z
    assert a[1].startswith('Multiple exceptions: ')


def test_all_errors_exception_group():
    """all_errors=True (3.12 API, offered by zcloop on every version)."""
    factories = [LoopFactory('zcloop')]
    if IS_312:
        factories.append(LoopFactory('asyncio'))

    async def main():
        loop = asyncio.get_running_loop()
        p1, p2 = free_port('127.0.0.2'), free_port('127.0.0.3')
        _patch_resolver(loop, [_ai('127.0.0.2', p1), _ai('127.0.0.3', p2)])
        with pytest.raises(ExceptionGroup) as info:
            await loop.create_connection(Recorder, 'multi.test', 0, all_errors=True)
        eg = info.value
        assert str(eg).startswith('create_connection failed')
        return [(type(e), normalize(str(e), p1, p2)) for e in eg.exceptions]
    results = [run(f, main) for f in factories]
    assert results[0] == [(ConnectionRefusedError,
                           "[Errno 111] Connect call failed ('127.0.0.2', <X>)"),
                          (ConnectionRefusedError,
                           "[Errno 111] Connect call failed ('127.0.0.3', <X>)")]
    assert all(r == results[0] for r in results)


class _NotAnOSError(Exception):
    """A connect failure create_connection() does not collect (not OSError)."""


def test_happy_eyeballs_all_attempts_fail_without_oserror():
    """gh-135836: with happy_eyeballs_delay, connection attempts that all
    fail with something other than OSError leave no exception collected.
    asyncio then indexed the empty list and an IndexError escaped; since the
    fix (3.13.x/3.14) it raises TimeoutError('create_connection failed').
    zcloop raises that on every version, with all_errors=True too (an
    ExceptionGroup cannot be empty).  Without happy eyeballs the failure
    propagates as it is, on both loops."""
    async def main(delay, all_errors):
        loop = asyncio.get_running_loop()
        _patch_resolver(loop, [_ai('127.0.0.2', free_port('127.0.0.2')),
                               _ai('127.0.0.3', free_port('127.0.0.3'))])

        async def sock_connect(sock, address):
            raise _NotAnOSError(address[0])
        loop.sock_connect = sock_connect
        try:
            await loop.create_connection(Recorder, 'multi.test', 0,
                                         happy_eyeballs_delay=delay,
                                         **({'all_errors': True} if all_errors else {}))
        except Exception as exc:
            return type(exc).__name__, str(exc)
        return 'connected', None

    for all_errors in ([False, True] if IS_312 else [False]):
        a, z = both(main, None, all_errors)
        assert a == z == ('_NotAnOSError', '127.0.0.2')
    fixed = ('TimeoutError', 'create_connection failed')
    assert run(LoopFactory('zcloop'), main, 0.01, False) == fixed
    assert run(LoopFactory('zcloop'), main, 0.01, True) == fixed
    a = run(LoopFactory('asyncio'), main, 0.01, False)
    if a[0] != 'IndexError':        # an asyncio without the fix
        assert a == fixed


def test_happy_eyeballs_skips_black_hole(loop_factory):
    """First address never answers (listener with a full accept queue), the
    second works: happy_eyeballs_delay starts it without waiting for the
    first connect to time out."""
    async def main():
        loop = asyncio.get_running_loop()
        hole = socket.socket()
        hole.bind(('127.0.0.1', 0))
        hole.listen(0)
        filler = socket.socket()
        filler.connect(hole.getsockname())      # fills the accept queue
        srv = await echo_server(loop, host='127.0.0.2')
        port = srv.sockets[0].getsockname()[1]
        _patch_resolver(loop, [_ai('127.0.0.1', hole.getsockname()[1]),
                               _ai('127.0.0.2', port)])
        try:
            tr, pr = await asyncio.wait_for(
                loop.create_connection(Recorder, 'multi.test', 0, happy_eyeballs_delay=0.1),
                10)
            assert tr.get_extra_info('peername') == ('127.0.0.2', port)
            tr.write(b'hi')
            assert await pr.wait_bytes(2) == b'hi'
            tr.close()
            await pr.lost
        finally:
            filler.close()
            hole.close()
            srv.close()
            await srv.wait_closed()
    before = fd_count()
    run(loop_factory, main)
    assert fd_count() <= before


@needs_ipv6
def test_interleave_families(loop_factory):
    """interleave=1 alternates families: v6(refused), v4(ok) is tried before
    the second v6 address, which would also work."""
    async def main():
        loop = asyncio.get_running_loop()
        srv4 = await echo_server(loop, host='127.0.0.1')
        srv6 = await echo_server(loop, host='::1')
        p4 = srv4.sockets[0].getsockname()[1]
        p6 = srv6.sockets[0].getsockname()[1]
        _patch_resolver(loop, [_ai('::1', free_port('::1')), _ai('::1', p6),
                               _ai('127.0.0.1', p4)])
        tr, pr = await loop.create_connection(Recorder, 'multi.test', 0, interleave=1)
        peer = tr.get_extra_info('peername')
        tr.close()
        await pr.lost
        for s in (srv4, srv6):
            s.close()
            await s.wait_closed()
        return peer[:2] == ('127.0.0.1', p4)
    assert run(loop_factory, main)


def test_local_addr(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        srv = await echo_server(loop)
        port = srv.sockets[0].getsockname()[1]
        lport = free_port('127.0.0.3')
        tr, pr = await loop.create_connection(Recorder, '127.0.0.1', port,
                                              local_addr=('127.0.0.3', lport))
        assert tr.get_extra_info('sockname') == ('127.0.0.3', lport)
        # Binding the same local address again fails with asyncio's message.
        with pytest.raises(OSError) as info:
            await loop.create_connection(Recorder, '127.0.0.1', port,
                                         local_addr=('127.0.0.3', lport))
        tr.close()
        await pr.lost
        srv.close()
        await srv.wait_closed()
        return info.value.errno, normalize(str(info.value), lport)
    a, z = both(main)
    assert a == z
    assert a[0] == errno.EADDRINUSE
    assert 'error while attempting to bind on address' in a[1]


@needs_ipv6
def test_family_inet6(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(lambda: Recorder(echo=True), '::1', 0)
        port = srv.sockets[0].getsockname()[1]
        tr, pr = await loop.create_connection(Recorder, '::1', port, family=socket.AF_INET6)
        assert tr.get_extra_info('socket').family == socket.AF_INET6
        assert tr.get_extra_info('peername')[:2] == ('::1', port)
        tr.write(b'six')
        assert await pr.wait_bytes(3) == b'six'
        tr.close()
        await pr.lost
        # family=AF_INET to an IPv6 literal: nothing to resolve.
        with pytest.raises(OSError):
            await loop.create_connection(Recorder, '::1', port, family=socket.AF_INET)
        srv.close()
        await srv.wait_closed()
    run(loop_factory, main)


def test_connection_from_sock(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        srv = await echo_server(loop)
        port = srv.sockets[0].getsockname()[1]
        s = socket.socket()
        s.connect(('127.0.0.1', port))
        tr, pr = await loop.create_connection(Recorder, sock=s)
        assert s.gettimeout() == 0.0
        assert tr.get_extra_info('socket').fileno() == s.fileno()
        tr.write(b'sock')
        assert await pr.wait_bytes(4) == b'sock'
        tr.close()
        await pr.lost
        assert s.fileno() == -1
        srv.close()
        await srv.wait_closed()
    run(loop_factory, main)


def test_argument_errors():
    async def main():
        loop = asyncio.get_running_loop()
        out = []
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s = socket.socket()
        calls = [
            lambda: loop.create_connection(Recorder, '127.0.0.1', 1, sock=s),
            lambda: loop.create_connection(Recorder),
            lambda: loop.create_connection(Recorder, sock=udp),
            lambda: loop.create_connection(Recorder, '127.0.0.1', 1, server_hostname='x'),
            lambda: loop.create_connection(Recorder, '127.0.0.1', 1,
                                           ssl_handshake_timeout=1),
            lambda: loop.create_server(Recorder, '127.0.0.1', 0, sock=s),
            lambda: loop.create_server(Recorder),
            lambda: loop.create_server(Recorder, sock=udp),
            lambda: loop.create_server(Recorder, '127.0.0.1', 0, ssl=True),
            lambda: loop.connect_accepted_socket(Recorder, udp),
        ]
        for call in calls:
            try:
                await call()
            except (ValueError, TypeError) as exc:
                out.append((type(exc).__name__, normalize(str(exc), repr(udp))))
            else:
                out.append(None)
        udp.close()
        s.close()
        return out
    a, z = both(main)
    assert a == z
    assert None not in a


def test_tcp_nodelay_and_extra_info(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        accepted = []

        def factory():
            p = Recorder()
            accepted.append(p)
            return p
        srv = await loop.create_server(factory, '127.0.0.1', 0)
        port = srv.sockets[0].getsockname()[1]
        tr, pr = await loop.create_connection(Recorder, '127.0.0.1', port)
        while not accepted:
            await asyncio.sleep(0.01)
        str_ = await accepted[0].made
        for t in (tr, str_):
            sock = t.get_extra_info('socket')
            assert type(sock).__name__ == 'TransportSocket'
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert t.get_extra_info('sockname') == sock.getsockname()
            assert t.get_extra_info('peername') == sock.getpeername()
            assert t.get_extra_info('nonexistent', 'dflt') == 'dflt'
            assert t.get_protocol() is not None
            assert not t.is_closing()
        assert tr.get_extra_info('peername') == ('127.0.0.1', port)
        assert str_.get_extra_info('peername') == tr.get_extra_info('sockname')
        tr.close()
        assert tr.is_closing()
        await pr.lost
        srv.close()
        await srv.wait_closed()
    run(loop_factory, main)


def test_connect_accepted_socket(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        lsock = tcp_listener()
        client = socket.socket()
        client.connect(lsock.getsockname())
        conn, _ = lsock.accept()
        tr, pr = await loop.connect_accepted_socket(lambda: Recorder(echo=True), conn)
        assert tr.get_extra_info('peername') == client.getsockname()
        assert conn.gettimeout() == 0.0
        client.sendall(b'accepted')
        got = await loop.run_in_executor(None, client.recv, 100)
        assert got == b'accepted'
        client.close()
        await pr.lost
        assert pr.events == ['made', 'data', 'eof', 'lost']
        lsock.close()
    run(loop_factory, main)


# ----------------------------------------------------------------------
# Unix sockets


def test_unix_server_and_connection(loop_factory, tmp_path):
    path = str(tmp_path / 'sock')

    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_unix_server(lambda: Recorder(echo=True), path)
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert srv.sockets[0].family == socket.AF_UNIX
        tr, pr = await loop.create_unix_connection(Recorder, path)
        assert tr.get_extra_info('peername') == path
        assert tr.get_extra_info('sockname') in ('', None, b'')
        payload = os.urandom(300_000)
        tr.write(payload)
        assert await pr.wait_bytes(len(payload)) == payload
        tr.close()
        await pr.lost
        srv.close()
        await srv.wait_closed()
        return os.path.exists(path)
    exists_after_close = run(loop_factory, main)
    # 3.13 removes the socket file on close (cleanup_socket); earlier keep it.
    assert exists_after_close == (not IS_313)


def test_unix_server_removes_stale_socket(loop_factory, tmp_path):
    path = str(tmp_path / 'stale')
    s = socket.socket(socket.AF_UNIX)
    s.bind(path)
    s.close()                    # leaves the socket file behind
    assert os.path.exists(path)

    async def main():
        loop = asyncio.get_running_loop()
        srv = await loop.create_unix_server(Recorder, path)
        tr, pr = await loop.create_unix_connection(Recorder, path)
        tr.close()
        await pr.lost
        srv.close()
        await srv.wait_closed()
    run(loop_factory, main)


@pytest.mark.skipif(not IS_313, reason='cleanup_socket is 3.13+')
@pytest.mark.parametrize('how', ['removed', 'replaced', 'keep'])
def test_unix_server_cleanup_socket(loop_factory, tmp_path, how):
    """3.13's cleanup_socket: the socket file is gone when close() returns
    (no wait_closed() needed) if it is still the one the server bound; a
    file put at the path meanwhile stays, and so does the socket with
    cleanup_socket=False."""
    path = str(tmp_path / 'sock')
    seen = []

    async def main():
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda l, ctx: seen.append(ctx['message']))
        srv = await loop.create_unix_server(Recorder, path,
                                            cleanup_socket=(how != 'keep'))
        other = None
        if how == 'replaced':
            os.unlink(path)
            other = socket.socket(socket.AF_UNIX)
            other.bind(path)
        srv.close()
        exists = os.path.exists(path)
        await srv.wait_closed()
        if other is not None:
            other.close()
        return exists

    assert (run(loop_factory, main), seen) == (how != 'removed', [])


@pytest.mark.skipif(not IS_313, reason='cleanup_socket is 3.13+')
def test_unix_server_reopen_right_after_close(loop_factory, tmp_path):
    """close() and at once a new server at the same path (no wait_closed()):
    the old server's socket-file removal never takes the new socket."""
    path = str(tmp_path / 'sock')

    async def main():
        loop = asyncio.get_running_loop()
        for _ in range(20):
            srv = await loop.create_unix_server(Recorder, path)
            tr, pr = await loop.create_unix_connection(Recorder, path)
            tr.close()
            await pr.lost
            srv.close()
        await srv.wait_closed()
        return os.path.exists(path)

    assert run(loop_factory, main) is False


def test_unix_server_path_errors(tmp_path):
    regular = tmp_path / 'regular'
    regular.write_text('not a socket')

    async def main():
        loop = asyncio.get_running_loop()
        out = []
        with pytest.raises(OSError) as info:
            await loop.create_unix_server(Recorder, str(regular))
        out.append((info.value.errno, normalize(str(info.value), tmp_path)))
        assert regular.read_text() == 'not a socket'   # never removed
        with pytest.raises(OSError) as info:
            await loop.create_unix_connection(Recorder, str(tmp_path / 'missing'))
        out.append((type(info.value), info.value.errno, normalize(str(info.value), tmp_path)))
        # A stale socket file with nobody listening: refused.
        stale = str(tmp_path / 'stale')
        if os.path.exists(stale):
            os.unlink(stale)
        s = socket.socket(socket.AF_UNIX)
        s.bind(stale)
        s.close()
        with pytest.raises(OSError) as info:
            await loop.create_unix_connection(Recorder, stale)
        out.append((type(info.value), info.value.errno, normalize(str(info.value), tmp_path)))
        return out
    a, z = both(main)
    assert a == z
    assert a[0][0] == errno.EADDRINUSE


def test_unix_server_from_sock_and_abstract(loop_factory):
    name = f'\0zcloop-test-{os.getpid()}-{id(loop_factory)}'

    async def main():
        loop = asyncio.get_running_loop()
        lsock = socket.socket(socket.AF_UNIX)
        lsock.bind(name)
        srv = await loop.create_unix_server(lambda: Recorder(echo=True), sock=lsock)
        tr, pr = await loop.create_unix_connection(Recorder, name)
        tr.write(b'abstract')
        assert await pr.wait_bytes(8) == b'abstract'
        tr.close()
        await pr.lost
        srv.close()
        await srv.wait_closed()
    run(loop_factory, main)


# ----------------------------------------------------------------------
# asyncio streams on top


def test_streams_api(loop_factory):
    async def main():
        async def handle(reader, writer):
            line = await reader.readline()
            n = int(line)
            body = await reader.readexactly(n)
            writer.write(b'%d\n' % len(body) + body[::-1])
            await writer.drain()
            assert await reader.read() == b''
            writer.close()
            await writer.wait_closed()

        srv = await asyncio.start_server(handle, '127.0.0.1', 0)
        port = srv.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection('127.0.0.1', port)
        body = os.urandom(3 * 1024 * 1024)
        writer.write(b'%d\n' % len(body))
        writer.write(body)
        await writer.drain()
        writer.write_eof()
        assert int(await reader.readline()) == len(body)
        assert await reader.readexactly(len(body)) == body[::-1]
        with pytest.raises(asyncio.IncompleteReadError):
            await reader.readexactly(1)
        writer.close()
        await writer.wait_closed()
        srv.close()
        await srv.wait_closed()
    run(loop_factory, main)


def test_unix_streams_api(loop_factory, tmp_path):
    path = str(tmp_path / 's')

    async def main():
        async def handle(reader, writer):
            data = await reader.read()
            writer.write(data.upper())
            await writer.drain()
            writer.close()

        srv = await asyncio.start_unix_server(handle, path)
        reader, writer = await asyncio.open_unix_connection(path)
        writer.write(b'abc' * 50000)
        writer.write_eof()
        assert await reader.read() == b'ABC' * 50000
        writer.close()
        await writer.wait_closed()
        srv.close()
        await srv.wait_closed()
    run(loop_factory, main)


# ----------------------------------------------------------------------
# Leaks


def test_connect_close_cycles_no_fd_leak(loop_factory):
    cycles = 2000

    async def main():
        loop = asyncio.get_running_loop()
        srv = await echo_server(loop)
        port = srv.sockets[0].getsockname()[1]
        base = fd_count()
        for i in range(cycles):
            tr, pr = await loop.create_connection(Recorder, '127.0.0.1', port)
            if i % 2:
                tr.write(b'x')
                await pr.wait_bytes(1)
                tr.close()
            else:
                tr.abort()
            await pr.lost
        # The server side closes on EOF; let it finish.
        for _ in range(200):
            if fd_count() <= base:
                break
            await asyncio.sleep(0.01)
        after = fd_count()
        srv.close()
        await srv.wait_closed()
        return base, after
    with no_resource_warnings():
        before = fd_count()
        base, after = run(loop_factory, main, timeout=60)
    assert after <= base
    assert fd_count() <= before


def test_no_resource_warning_for_closed_transports(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        srv = await echo_server(loop)
        port = srv.sockets[0].getsockname()[1]
        for _ in range(20):
            tr, pr = await loop.create_connection(Recorder, '127.0.0.1', port)
            tr.write(b'abc')
            await pr.wait_bytes(3)
            tr.close()
            await pr.lost
            del tr, pr
        srv.close()
        await srv.wait_closed()
    with no_resource_warnings():
        run(loop_factory, main)


def test_debug_mode_connect_from_module_level():
    """Debug mode records source tracebacks; a CQE callback scheduling a
    handle with run_until_complete() called from module level has a
    one-frame stack (sys._getframe(1) used to raise there)."""
    script = (
        'import asyncio, socket, zcloop\n'
        'srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()\n'
        'loop = zcloop.Loop(); loop.set_debug(True)\n'
        'tr, pr = loop.run_until_complete(\n'
        '    loop.create_connection(asyncio.Protocol, *srv.getsockname()))\n'
        'tr.close(); loop.run_until_complete(asyncio.sleep(0.01)); loop.close()\n'
        'srv.close(); print("ok")\n')
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0 and 'ok' in proc.stdout, proc.stderr[-2000:]


def test_protocol_factory_error_closes_connection():
    """A failing protocol_factory: the accepted connection is closed, the
    server keeps serving, nothing reaches the exception handler (non-debug)."""
    async def main():
        loop = asyncio.get_running_loop()
        calls = []

        def factory():
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError('factory failed')
            return Recorder(echo=True)
        srv = await loop.create_server(factory, '127.0.0.1', 0)
        port = srv.sockets[0].getsockname()[1]
        tr, pr = await loop.create_connection(Recorder, '127.0.0.1', port)
        exc = await pr.lost
        first = (pr.events, type(exc).__name__ if exc else None)
        tr2, pr2 = await loop.create_connection(Recorder, '127.0.0.1', port)
        tr2.write(b'second')
        assert await pr2.wait_bytes(6) == b'second'
        tr2.close()
        await pr2.lost
        srv.close()
        await srv.wait_closed()
        assert 'closed' in repr(tr2)
        return first
    a, z = both(main)
    assert a == z

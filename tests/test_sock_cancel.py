"""Cancelling a blocked sock_*() call, then using the socket again, on
asyncio's loop and on zcloop.  asyncio's guarantees: a cancelled receive has
consumed nothing, a cancelled accept has accepted nothing, and a cancelled
sock_sendall() has sent a prefix of its data and sends nothing more, so the
peer sees that prefix followed by exactly the next call's bytes."""
import asyncio
import errno
import os
import socket

import pytest

pytestmark = pytest.mark.timeout(60)

WAIT = 10       # hang guard for the awaits below, never reached when correct


def _pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def _drain(sock):
    """Read what the socket has now, without blocking."""
    got = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return bytes(got)
        if not chunk:
            return bytes(got)
        got += chunk


async def _blocked(coro):
    """Start coro as a task, let it block, cancel it, and wait for it."""
    task = asyncio.ensure_future(coro)
    for _ in range(5):
        await asyncio.sleep(0)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_cancel_sock_recv_keeps_data(run):
    async def main():
        loop = asyncio.get_running_loop()
        a, b = _pair()
        with a, b:
            await _blocked(loop.sock_recv(a, 100))
            b.send(b'hello')
            return await asyncio.wait_for(loop.sock_recv(a, 100), WAIT)
    assert run(main) == b'hello'


def test_cancel_sock_recv_into_keeps_data(run):
    async def main():
        loop = asyncio.get_running_loop()
        a, b = _pair()
        buf = bytearray(100)
        with a, b:
            await _blocked(loop.sock_recv_into(a, buf))
            b.send(b'hello')
            n = await asyncio.wait_for(loop.sock_recv_into(a, buf), WAIT)
            return bytes(buf[:n])
    assert run(main) == b'hello'


def _udp_pair():
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (a, b):
        s.setblocking(False)
        s.bind(('127.0.0.1', 0))
    return a, b


def test_cancel_sock_recvfrom_keeps_datagram(run):
    async def main():
        loop = asyncio.get_running_loop()
        a, b = _udp_pair()
        with a, b:
            await _blocked(loop.sock_recvfrom(a, 100))
            b.sendto(b'dgram', a.getsockname())
            data, addr = await asyncio.wait_for(loop.sock_recvfrom(a, 100), WAIT)
            return data, addr == b.getsockname()
    assert run(main) == (b'dgram', True)


def test_cancel_sock_recvfrom_into_keeps_datagram(run):
    async def main():
        loop = asyncio.get_running_loop()
        a, b = _udp_pair()
        buf = bytearray(100)
        with a, b:
            await _blocked(loop.sock_recvfrom_into(a, buf))
            b.sendto(b'dgram', a.getsockname())
            n, addr = await asyncio.wait_for(loop.sock_recvfrom_into(a, buf), WAIT)
            return bytes(buf[:n]), addr == b.getsockname()
    assert run(main) == (b'dgram', True)


def test_cancel_sock_accept_keeps_connection(run):
    async def main():
        loop = asyncio.get_running_loop()
        with socket.socket() as lsock:
            lsock.bind(('127.0.0.1', 0))
            lsock.listen(5)
            lsock.setblocking(False)
            await _blocked(loop.sock_accept(lsock))
            with socket.create_connection(lsock.getsockname()) as c:
                conn, _ = await asyncio.wait_for(loop.sock_accept(lsock), WAIT)
                with conn:
                    c.sendall(b'ping')
                    return await asyncio.wait_for(loop.sock_recv(conn, 10), WAIT)
    assert run(main) == b'ping'


def _fill(sock):
    """Fill sock's send buffer (the peer reads nothing meanwhile)."""
    while True:
        try:
            sock.send(b'\0' * 65536)
        except BlockingIOError:
            return


DATA = bytes(range(256)) * 4096 * 4        # 4 MiB, far more than a buffer


@pytest.mark.parametrize("drain_before_cancel", [False, True])
def test_cancel_sock_sendall_sends_prefix_only(run, drain_before_cancel):
    """drain_before_cancel: the peer makes room while the cancelled call is
    still waiting, and the next call starts in the same iteration as the
    cancellation: the cancelled call must not use that room."""
    async def main():
        loop = asyncio.get_running_loop()
        a, b = _pair()
        with a, b:
            task = asyncio.ensure_future(loop.sock_sendall(a, DATA))
            for _ in range(5):
                await asyncio.sleep(0)
            assert not task.done()
            got = bytearray()
            if drain_before_cancel:
                # Everything the call has sent so far; it must send no more.
                got += _drain(b)
                sent_before_cancel = len(got)
            task.cancel()
            new = asyncio.ensure_future(loop.sock_sendall(a, b'NEW DATA'))
            with pytest.raises(asyncio.CancelledError):
                await task
            while not new.done():
                got += _drain(b)
                await asyncio.wait([new], timeout=0.01)
            await new
            for _ in range(5):
                await asyncio.sleep(0)
            got += _drain(b)
            prefix = bytes(got[:-len(b'NEW DATA')])
            if drain_before_cancel:
                assert len(prefix) == sent_before_cancel
            return (bytes(got[-len(b'NEW DATA'):]), 0 < len(prefix) < len(DATA),
                    prefix == DATA[:len(prefix)])
    assert run(main) == (b'NEW DATA', True, True)


def test_cancel_sock_sendto_sends_nothing(run):
    """AF_UNIX datagrams: sendto() blocks while the receiver's queue is full."""
    async def main():
        loop = asyncio.get_running_loop()
        name = f'\0zcloop-sock-cancel-{os.getpid()}-{id(loop)}'
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as r, \
                socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            r.bind(name)
            r.setblocking(False)
            s.setblocking(False)
            queued = 0
            while True:
                try:
                    s.sendto(b'fill %d' % queued, name)
                except BlockingIOError:
                    break
                queued += 1
            await _blocked(loop.sock_sendto(s, b'cancelled', name))
            got = [r.recv(100) for _ in range(queued)]
            await asyncio.wait_for(loop.sock_sendto(s, b'after', name), WAIT)
            got.append(await asyncio.wait_for(loop.sock_recv(r, 100), WAIT))
            for _ in range(5):
                await asyncio.sleep(0)
            with pytest.raises(BlockingIOError):
                r.recv(100)
            return got == [b'fill %d' % i for i in range(queued)] + [b'after']
    assert run(main) is True


def test_cancel_sock_connect_then_connect_again(run):
    """A connect() blocks while the listener's accept queue is full (the
    SYN is dropped and retried).  After cancelling sock_connect() the
    connection attempt goes on in the kernel; a new sock_connect() waits for
    it (connect() says EALREADY) instead of failing."""
    async def main():
        loop = asyncio.get_running_loop()
        conns = []

        async def accept_all(lsock):
            while True:
                conns.append((await loop.sock_accept(lsock))[0])

        with socket.socket() as lsock:
            lsock.bind(('127.0.0.1', 0))
            lsock.listen(0)
            lsock.setblocking(False)
            addr = lsock.getsockname()
            with socket.create_connection(addr) as queued, socket.socket() as s:
                s.setblocking(False)
                await _blocked(loop.sock_connect(s, addr))
                acceptor = asyncio.ensure_future(accept_all(lsock))
                try:
                    # The SYN is retried after about a second.
                    await asyncio.wait_for(loop.sock_connect(s, addr), 30)
                    return s.getpeername() == addr
                finally:
                    acceptor.cancel()
                    for conn in conns:
                        conn.close()
    assert run(main) is True


def test_sock_connect_on_a_connected_socket(run, loop_factory):
    """The documented deviation (docs/design.md, sock_connect): a second
    sock_connect() returns None on asyncio only because its first call left
    the kernel's connect half-way and the second connect() finishes it; on
    zcloop the socket is connected and connect() fails with EISCONN.  A
    third call fails with EISCONN on both."""
    async def main():
        loop = asyncio.get_running_loop()
        outcomes = []
        with socket.socket() as lsock, socket.socket() as s:
            lsock.bind(('127.0.0.1', 0))
            lsock.listen()
            s.setblocking(False)
            addr = lsock.getsockname()
            await loop.sock_connect(s, addr)
            for _ in range(2):
                try:
                    outcomes.append(await loop.sock_connect(s, addr))
                except OSError as exc:
                    outcomes.append(exc.errno)
        return outcomes
    second = None if loop_factory is asyncio.SelectorEventLoop else errno.EISCONN
    assert run(main) == [second, errno.EISCONN]

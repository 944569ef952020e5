"""Every public method of asyncio.AbstractEventLoop, called in a real
scenario (servers, connections, pipes, processes, files, signals, datagram
endpoints), on asyncio's loop and on zcloop.

SCENARIOS maps each method name to the scenario that calls it.  The test
fails when AbstractEventLoop grows a method with no scenario here, when a
scenario does not actually call its method, when zcloop.Loop inherits the
abstract (NotImplementedError) version, or when a call raises.
"""
import asyncio
import concurrent.futures
import inspect
import logging
import os
import signal
import socket
import sys
import tempfile
import threading

import pytest

import zcloop
from streamutil import tls_context_pair

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 30        # hang guard per scenario, never a timing assertion
PUBLIC = sorted(n for n in dir(asyncio.AbstractEventLoop) if not n.startswith('_'))


def _run(loop, coro):
    return loop.run_until_complete(asyncio.wait_for(coro, TIMEOUT))


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class Collect(asyncio.Protocol):
    def __init__(self, want=None):
        loop = asyncio.get_running_loop()
        self.data = bytearray()
        self.want = want
        self.got = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data
        if self.want is not None and len(self.data) >= self.want and not self.got.done():
            self.got.set_result(bytes(self.data))

    def eof_received(self):
        if not self.got.done():
            self.got.set_result(bytes(self.data))

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


def _nb_tcp_pair():
    with socket.socket() as lst:
        lst.bind(('127.0.0.1', 0))
        lst.listen(1)
        a = socket.create_connection(lst.getsockname())
        b, _ = lst.accept()
    a.setblocking(False)
    b.setblocking(False)
    return a, b


def _certs():
    return tls_context_pair()


# ----------------------------------------------------------------------
# Running and stopping


def sc_run_forever_stop(loop):
    ran = []
    loop.call_soon(ran.append, 1)
    loop.call_soon(lambda: loop.stop())
    loop.run_forever()
    assert ran == [1]
    assert not loop.is_running()
    # stop() from a timer in a later iteration
    loop.call_later(0.001, loop.stop)
    loop.run_forever()
    # stop() before run_forever(): one iteration, then return
    loop.call_soon(ran.append, 2)
    loop.stop()
    loop.run_forever()
    assert ran == [1, 2]


def sc_run_until_complete(loop):
    async def answer():
        await asyncio.sleep(0)
        return 42
    assert loop.run_until_complete(answer()) == 42
    fut = loop.create_future()
    loop.call_soon(fut.set_result, 'done')
    assert loop.run_until_complete(fut) == 'done'


def sc_is_running(loop):
    assert loop.is_running() is False

    async def inside():
        return loop.is_running()
    assert _run(loop, inside()) is True


def sc_close_is_closed(loop):
    assert loop.is_closed() is False
    loop.close()
    assert loop.is_closed() is True
    loop.close()                    # idempotent
    with pytest.raises(RuntimeError, match='Event loop is closed'):
        loop.call_soon(print)


def sc_shutdown_asyncgens(loop):
    finalized = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            finalized.append(True)

    async def main():
        g = agen()
        assert await g.__anext__() == 1
        return g

    g = _run(loop, main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert finalized == [True]
    del g


def sc_shutdown_default_executor(loop):
    assert _run(loop, loop.run_in_executor(None, sum, [1, 2])) == 3
    loop.run_until_complete(loop.shutdown_default_executor())
    with pytest.raises(RuntimeError, match='Executor shutdown has been called'):
        loop.run_in_executor(None, sum, [1])


# ----------------------------------------------------------------------
# Callbacks, timers, futures, tasks, executors


def sc_call_soon(loop):
    order = []
    h = loop.call_soon(order.append, 'a')
    loop.call_soon(order.append, 'b')
    cancelled = loop.call_soon(order.append, 'never')
    cancelled.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert order == ['a', 'b'] and not h.cancelled() and cancelled.cancelled()


def sc_call_later(loop):
    fired = []
    h = loop.call_later(0.01, fired.append, 'late')
    # (zcloop's handles are compiled classes, not asyncio.TimerHandle.)
    assert h.when() >= loop.time() and not h.cancelled()
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert fired == ['late']


def sc_call_at(loop):
    fired = []
    when = loop.time() + 0.01
    h = loop.call_at(when, fired.append, 'at')
    assert h.when() == when
    loop.call_at(when + 0.01, loop.stop)
    loop.run_forever()
    assert fired == ['at']


def sc_time(loop):
    import time
    t1 = loop.time()
    _run(loop, asyncio.sleep(0.01))
    t2 = loop.time()
    assert t2 > t1
    # Same clock as asyncio's (time.monotonic()).
    assert t1 <= time.monotonic()


def sc_call_soon_threadsafe(loop):
    async def main():
        fut = loop.create_future()

        def other_thread():
            loop.call_soon_threadsafe(fut.set_result, threading.get_ident())
        th = threading.Thread(target=other_thread)
        th.start()
        result = await fut
        th.join()
        return result
    assert _run(loop, main()) != threading.get_ident()


def sc_create_future(loop):
    fut = loop.create_future()
    assert fut.get_loop() is loop and not fut.done()
    loop.call_soon(fut.set_result, 7)
    assert loop.run_until_complete(fut) == 7


def sc_create_task(loop):
    async def coro():
        return 'task result'
    task = loop.create_task(coro(), name='zc-task')
    assert task.get_name() == 'zc-task'
    assert _run(loop, task) == 'task result'


def sc_task_factory(loop):
    made = []

    def factory(lp, coro, **kwargs):
        made.append(coro)
        return asyncio.Task(coro, loop=lp, **kwargs)

    assert loop.get_task_factory() is None
    loop.set_task_factory(factory)
    assert loop.get_task_factory() is factory

    async def coro():
        return 5
    assert _run(loop, loop.create_task(coro())) == 5
    assert len(made) >= 1
    loop.set_task_factory(None)
    assert loop.get_task_factory() is None


def sc_run_in_executor(loop):
    async def main():
        return await loop.run_in_executor(None, threading.get_ident)
    assert _run(loop, main()) != threading.get_ident()
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        assert _run(loop, loop.run_in_executor(ex, pow, 2, 10)) == 1024


def sc_set_default_executor(loop):
    ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='zc-default')
    loop.set_default_executor(ex)
    name = _run(loop, loop.run_in_executor(None, lambda: threading.current_thread().name))
    assert name.startswith('zc-default')
    with pytest.raises(TypeError):
        loop.set_default_executor(object())
    loop.run_until_complete(loop.shutdown_default_executor())


# ----------------------------------------------------------------------
# Errors, debug


def sc_exception_handlers(loop, caplog):
    assert loop.get_exception_handler() is None
    seen = []

    def handler(lp, ctx):
        seen.append(ctx['message'])
    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler
    loop.call_exception_handler({'message': 'custom handler'})
    assert seen == ['custom handler']
    loop.set_exception_handler(None)
    with caplog.at_level(logging.ERROR):
        loop.call_exception_handler({'message': 'to the default handler',
                                     'exception': ZeroDivisionError('x')})
        loop.default_exception_handler({'message': 'called directly'})
    text = caplog.text
    assert 'to the default handler' in text and 'ZeroDivisionError' in text
    assert 'called directly' in text


def sc_debug(loop):
    assert loop.get_debug() in (False, True)
    loop.set_debug(True)
    assert loop.get_debug() is True
    loop.set_debug(False)
    assert loop.get_debug() is False


def sc_signal_handlers(loop):
    got = []
    saved = signal.getsignal(signal.SIGUSR1)
    try:
        loop.add_signal_handler(signal.SIGUSR1, lambda: (got.append('usr1'), loop.stop()))
        loop.call_soon(os.kill, os.getpid(), signal.SIGUSR1)
        guard = loop.call_later(TIMEOUT, loop.stop)
        loop.run_forever()
        guard.cancel()
        assert got == ['usr1']
        assert loop.remove_signal_handler(signal.SIGUSR1) is True
        assert loop.remove_signal_handler(signal.SIGUSR1) is False
    finally:
        signal.signal(signal.SIGUSR1, saved)


# ----------------------------------------------------------------------
# Names


def sc_getaddrinfo(loop):
    infos = _run(loop, loop.getaddrinfo('127.0.0.1', 80, type=socket.SOCK_STREAM))
    assert infos == socket.getaddrinfo('127.0.0.1', 80, type=socket.SOCK_STREAM)
    infos = _run(loop, loop.getaddrinfo('localhost', 'http', family=socket.AF_INET,
                                        type=socket.SOCK_STREAM))
    assert infos[0][4] == ('127.0.0.1', 80)


def sc_getnameinfo(loop):
    flags = socket.NI_NUMERICHOST | socket.NI_NUMERICSERV
    assert _run(loop, loop.getnameinfo(('127.0.0.1', 8080), flags)) == ('127.0.0.1', '8080')


# ----------------------------------------------------------------------
# Streams and servers


def sc_tcp_server_connection(loop):
    async def main():
        srv = await loop.create_server(Echo, '127.0.0.1', 0)
        port = srv.sockets[0].getsockname()[1]
        transport, proto = await loop.create_connection(
            lambda: Collect(want=5), '127.0.0.1', port)
        transport.write(b'hello')
        data = await proto.got
        transport.close()
        await proto.lost
        srv.close()
        await srv.wait_closed()
        return data
    assert _run(loop, main()) == b'hello'


def sc_unix_server_connection(loop):
    async def main():
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, 'sock')
            srv = await loop.create_unix_server(Echo, path)
            transport, proto = await loop.create_unix_connection(
                lambda: Collect(want=4), path)
            transport.write(b'unix')
            data = await proto.got
            transport.close()
            await proto.lost
            srv.close()
            await srv.wait_closed()
            return data
    assert _run(loop, main()) == b'unix'


def sc_connect_accepted_socket(loop):
    async def main():
        a, b = socket.socketpair()
        transport, proto = await loop.connect_accepted_socket(lambda: Collect(), a)
        b.sendall(b'accepted')
        b.shutdown(socket.SHUT_WR)
        data = await proto.got
        transport.close()
        await proto.lost
        b.close()
        return data
    assert _run(loop, main()) == b'accepted'


def sc_start_tls(loop):
    server_ctx, client_ctx = _certs()

    async def main():
        upgraded = loop.create_future()

        class StartTLSServer(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport = transport

            def data_received(self, data):
                assert data == b'STARTTLS'
                self.transport.pause_reading()
                self.transport.write(b'OK')
                loop.create_task(self.upgrade())

            async def upgrade(self):
                proto = Collect(want=6)
                tls = await loop.start_tls(self.transport, proto, server_ctx,
                                           server_side=True)
                got = await proto.got
                tls.write(got.upper())
                upgraded.set_result(tls)

        srv = await loop.create_server(StartTLSServer, '127.0.0.1', 0)
        port = srv.sockets[0].getsockname()[1]
        transport, proto = await loop.create_connection(
            lambda: Collect(want=2), '127.0.0.1', port)
        transport.write(b'STARTTLS')
        assert await proto.got == b'OK'
        proto2 = Collect(want=6)
        tls = await loop.start_tls(transport, proto2, client_ctx,
                                   server_hostname='localhost')
        tls.write(b'secret')
        data = await proto2.got
        cipher = tls.get_extra_info('cipher')
        stls = await upgraded
        tls.close()
        await proto2.lost
        stls.close()
        srv.close()
        await srv.wait_closed()
        return data, cipher is not None
    assert _run(loop, main()) == (b'SECRET', True)


def sc_sendfile(loop):
    async def main():
        with tempfile.TemporaryFile() as f:
            f.write(b'file body ' * 1000)
            f.flush()
            f.seek(0)
            srv = await loop.create_server(Echo, '127.0.0.1', 0)
            port = srv.sockets[0].getsockname()[1]
            transport, proto = await loop.create_connection(
                lambda: Collect(want=10000), '127.0.0.1', port)
            n = await loop.sendfile(transport, f)
            data = await proto.got
            transport.close()
            await proto.lost
            srv.close()
            await srv.wait_closed()
            return n, data
    assert _run(loop, main()) == (10000, b'file body ' * 1000)


# ----------------------------------------------------------------------
# Low-level socket operations


def sc_sock_tcp_ops(loop):
    async def main():
        lst = socket.socket()
        lst.bind(('127.0.0.1', 0))
        lst.listen(1)
        lst.setblocking(False)
        cli = socket.socket()
        cli.setblocking(False)
        accept = loop.create_task(loop.sock_accept(lst))
        await loop.sock_connect(cli, lst.getsockname())
        conn, addr = await accept
        assert addr == cli.getsockname()
        await loop.sock_sendall(cli, b'x' * 100_000)
        got = bytearray()
        while len(got) < 100_000:
            got += await loop.sock_recv(conn, 65536)
        await loop.sock_sendall(conn, b'back')
        buf = bytearray(10)
        n = await loop.sock_recv_into(cli, buf)
        for s in (lst, cli, conn):
            s.close()
        return len(got), bytes(buf[:n])
    assert _run(loop, main()) == (100_000, b'back')


def sc_sock_sendfile(loop):
    async def main():
        a, b = _nb_tcp_pair()
        with tempfile.TemporaryFile() as f:
            f.write(b'0123456789' * 5000)
            f.flush()
            n = await loop.sock_sendfile(a, f, 10, 20000)
            pos = f.tell()
        got = bytearray()
        while len(got) < 20000:
            got += await loop.sock_recv(b, 65536)
        a.close()
        b.close()
        return n, pos, bytes(got[:20])
    assert _run(loop, main()) == (20000, 20010, b'01234567890123456789')


def sc_sock_udp_ops(loop):
    async def main():
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for s in (a, b):
            s.setblocking(False)
            s.bind(('127.0.0.1', 0))
        await loop.sock_sendto(a, b'dgram one', b.getsockname())
        data, addr = await loop.sock_recvfrom(b, 100)
        await loop.sock_sendto(b, b'dgram two', addr)
        buf = bytearray(100)
        n, addr2 = await loop.sock_recvfrom_into(a, buf)
        names = a.getsockname(), b.getsockname()
        a.close()
        b.close()
        return (data, addr, bytes(buf[:n]), addr2) == (b'dgram one', names[0],
                                                       b'dgram two', names[1])
    assert _run(loop, main())


def sc_create_datagram_endpoint(loop):
    class UDPEcho(asyncio.DatagramProtocol):
        def connection_made(self, transport):
            self.transport = transport

        def datagram_received(self, data, addr):
            self.transport.sendto(data.upper(), addr)

    class UDPClient(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = asyncio.get_running_loop().create_future()

        def datagram_received(self, data, addr):
            self.got.set_result(data)

    async def main():
        st, sp = await loop.create_datagram_endpoint(UDPEcho, local_addr=('127.0.0.1', 0))
        ct, cp = await loop.create_datagram_endpoint(
            UDPClient, remote_addr=st.get_extra_info('sockname'))
        ct.sendto(b'ping')
        data = await cp.got
        ct.close()
        st.close()
        await asyncio.sleep(0)
        return data
    assert _run(loop, main()) == b'PING'


# ----------------------------------------------------------------------
# fd watchers


def sc_readers(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        async def main():
            fut = loop.create_future()

            def readable():
                fut.set_result(a.recv(100))
                loop.remove_reader(a)
            loop.add_reader(a, readable)
            b.send(b'ready to read')
            data = await fut
            assert loop.remove_reader(a) is False
            return data
        assert _run(loop, main()) == b'ready to read'
    finally:
        a.close()
        b.close()


def sc_writers(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    try:
        async def main():
            fut = loop.create_future()

            def writable():
                loop.remove_writer(a)
                fut.set_result(a.send(b'written'))
            loop.add_writer(a, writable)
            n = await fut
            assert loop.remove_writer(a) is False
            return n, b.recv(100)
        assert _run(loop, main()) == (7, b'written')
    finally:
        a.close()
        b.close()


# ----------------------------------------------------------------------
# Pipes and subprocesses


def sc_pipes(loop):
    async def main():
        r, w = os.pipe()
        rt, rp = await loop.connect_read_pipe(Collect, os.fdopen(r, 'rb', 0))
        wt, wp = await loop.connect_write_pipe(asyncio.Protocol, os.fdopen(w, 'wb', 0))
        wt.write(b'through a pipe')
        wt.close()
        data = await rp.got
        await rp.lost
        return data
    assert _run(loop, main()) == b'through a pipe'


class ProcProto(asyncio.SubprocessProtocol):
    def __init__(self):
        self.out = bytearray()
        self.done = asyncio.get_running_loop().create_future()

    def pipe_data_received(self, fd, data):
        self.out += data

    def connection_lost(self, exc):
        self.done.set_result(None)


def sc_subprocess_exec(loop):
    async def main():
        transport, proto = await loop.subprocess_exec(
            ProcProto, sys.executable, '-c', 'import sys; print(sys.stdin.read().upper())')
        transport.get_pipe_transport(0).write(b'exec')
        transport.get_pipe_transport(0).close()
        await proto.done
        rc = transport.get_returncode()
        transport.close()
        return bytes(proto.out), rc
    assert _run(loop, main()) == (b'EXEC\n', 0)


def sc_subprocess_shell(loop):
    async def main():
        transport, proto = await loop.subprocess_shell(ProcProto, 'echo shell; exit 3',
                                                       stdin=None)
        await proto.done
        rc = transport.get_returncode()
        transport.close()
        return bytes(proto.out), rc
    assert _run(loop, main()) == (b'shell\n', 3)


# ----------------------------------------------------------------------

SCENARIOS = {
    'add_reader': sc_readers,
    'remove_reader': sc_readers,
    'add_writer': sc_writers,
    'remove_writer': sc_writers,
    'add_signal_handler': sc_signal_handlers,
    'remove_signal_handler': sc_signal_handlers,
    'call_at': sc_call_at,
    'call_later': sc_call_later,
    'call_soon': sc_call_soon,
    'call_soon_threadsafe': sc_call_soon_threadsafe,
    'call_exception_handler': sc_exception_handlers,
    'default_exception_handler': sc_exception_handlers,
    'get_exception_handler': sc_exception_handlers,
    'set_exception_handler': sc_exception_handlers,
    'close': sc_close_is_closed,
    'is_closed': sc_close_is_closed,
    'connect_accepted_socket': sc_connect_accepted_socket,
    'connect_read_pipe': sc_pipes,
    'connect_write_pipe': sc_pipes,
    'create_connection': sc_tcp_server_connection,
    'create_server': sc_tcp_server_connection,
    'create_unix_connection': sc_unix_server_connection,
    'create_unix_server': sc_unix_server_connection,
    'create_datagram_endpoint': sc_create_datagram_endpoint,
    'create_future': sc_create_future,
    'create_task': sc_create_task,
    'get_task_factory': sc_task_factory,
    'set_task_factory': sc_task_factory,
    'get_debug': sc_debug,
    'set_debug': sc_debug,
    'getaddrinfo': sc_getaddrinfo,
    'getnameinfo': sc_getnameinfo,
    'is_running': sc_is_running,
    'run_forever': sc_run_forever_stop,
    'stop': sc_run_forever_stop,
    'run_until_complete': sc_run_until_complete,
    'run_in_executor': sc_run_in_executor,
    'set_default_executor': sc_set_default_executor,
    'sendfile': sc_sendfile,
    'shutdown_asyncgens': sc_shutdown_asyncgens,
    'shutdown_default_executor': sc_shutdown_default_executor,
    'sock_accept': sc_sock_tcp_ops,
    'sock_connect': sc_sock_tcp_ops,
    'sock_recv': sc_sock_tcp_ops,
    'sock_recv_into': sc_sock_tcp_ops,
    'sock_sendall': sc_sock_tcp_ops,
    'sock_recvfrom': sc_sock_udp_ops,
    'sock_recvfrom_into': sc_sock_udp_ops,
    'sock_sendto': sc_sock_udp_ops,
    'sock_sendfile': sc_sock_sendfile,
    'start_tls': sc_start_tls,
    'subprocess_exec': sc_subprocess_exec,
    'subprocess_shell': sc_subprocess_shell,
    'time': sc_time,
}


def test_every_public_method_has_a_scenario():
    """A method added to AbstractEventLoop (new Python) fails here until a
    scenario covers it; a stale entry fails too."""
    assert sorted(SCENARIOS) == PUBLIC


@pytest.mark.parametrize('name', PUBLIC)
def test_scenario_calls_its_method(name):
    scenario = SCENARIOS.get(name)
    assert scenario is not None, f'no scenario for {name}'
    assert f'.{name}(' in inspect.getsource(scenario), \
        f'{scenario.__name__} does not call loop.{name}()'


@pytest.mark.parametrize('name', PUBLIC)
def test_zcloop_overrides(name):
    assert getattr(zcloop.Loop, name) is not getattr(asyncio.AbstractEventLoop, name), \
        f'zcloop.Loop.{name} is AbstractEventLoop\'s (raises NotImplementedError)'


@pytest.mark.parametrize('name', PUBLIC)
def test_scenario(loop_factory, name, caplog):
    scenario = SCENARIOS[name]
    loop = loop_factory()
    try:
        kwargs = {'caplog': caplog} if 'caplog' in inspect.signature(scenario).parameters \
            else {}
        try:
            scenario(loop, **kwargs)
        except NotImplementedError as exc:          # pragma: no cover - the point
            pytest.fail(f'{name}: NotImplementedError on {type(loop).__name__}: {exc!r}')
    finally:
        if not loop.is_closed():
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

"""The contextvars.Context that protocol callbacks run in, and when the
coroutine that made a transport resumes relative to its first data.

asyncio is the reference (selector_events.py): a transport's reader handle
is added with a copy of the context the transport was made in, and every
read-side callback (data_received, get_buffer/buffer_updated, eof_received)
runs in that one copy, so their changes carry over from one call to the
next; connection_made runs in another copy (call_soon); a server makes each
connection in a copy of the context that started serving, where
protocol_factory runs; resume_reading() adds a new reader handle, so later
data comes in the resumer's context; resume_writing() (and connection_lost()
after a close() that waited for the buffer) run in the context of the
write() that started buffering; connection_lost() after close() in the
closer's.  Datagram endpoints and subprocesses use the context of the call
that made them, as uvloop (docs/design.md).
"""
import asyncio
import contextvars
import os
import socket
import sys
import tempfile

import pytest
from streamutil import tls_context_pair

pytestmark = pytest.mark.timeout(60)

var = contextvars.ContextVar('var', default='outer')
counter = contextvars.ContextVar('counter', default=0)
made_mark = contextvars.ContextVar('made_mark', default=None)


@pytest.fixture(autouse=True)
def _outer_context_untouched():
    """Callbacks never change the context of the thread running the loop."""
    yield
    assert (var.get(), counter.get(), made_mark.get()) == ('outer', 0, None)


def _events(log, name):
    return [entry[1:] for entry in log if entry[0] == name]


class _CtxLog:
    """Logs (name, event, var, counter) for every callback; each callback
    bumps `counter`, so the log shows which changes a callback sees."""

    def __init__(self, log, name):
        self.log = log
        self.name = name

    def _record(self, event):
        value = counter.get()
        self.log.append((self.name, event, var.get(), value))
        counter.set(value + 1)


class CtxRecorder(_CtxLog, asyncio.Protocol):

    def __init__(self, log, name, close_on=None):
        super().__init__(log, name)
        self.close_on = close_on
        self.transport = None
        self.received = b''
        self.made_marks = []        # made_mark as each read saw it
        self.data_event = asyncio.Event()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self._record('made')
        made_mark.set('set in connection_made')

    def _got(self, data):
        self.made_marks.append(made_mark.get())
        self.received += data
        self.data_event.set()
        if self.close_on is not None and self.received.endswith(self.close_on):
            self.transport.close()

    def data_received(self, data):
        self._record('data')
        self._got(data)

    def eof_received(self):
        self._record('eof')

    def pause_writing(self):
        self._record('pause')

    def resume_writing(self):
        self._record('resume')

    def connection_lost(self, exc):
        self._record('lost')
        if not self.lost.done():
            self.lost.set_result(exc)


class BufferedCtxRecorder(CtxRecorder, asyncio.BufferedProtocol):

    def get_buffer(self, sizehint):
        self._record('get_buffer')
        self.buf = bytearray(64 * 1024)
        return self.buf

    def buffer_updated(self, nbytes):
        self._record('buffer_updated')
        self._got(bytes(self.buf[:nbytes]))


async def _wait_for_bytes(protocol, n):
    while len(protocol.received) < n:
        protocol.data_event.clear()
        await protocol.data_event.wait()


async def _exchange(client_tr, client_pr, server_pr_future):
    """Three messages to the server, each echoed back, the third closes."""
    server_pr = await server_pr_future
    sent = b''
    for message in (b'one;', b'two;', b'close;'):
        client_tr.write(message)
        sent += message
        await _wait_for_bytes(server_pr, len(sent))
        if message != b'close;':
            server_pr.transport.write(message)
            await _wait_for_bytes(client_pr, len(sent))
    await server_pr.lost
    await client_pr.lost
    # connection_made ran in another copy of the context than the reads
    # (not so with TLS: the app's connection_made comes from a read).
    return server_pr.made_marks + client_pr.made_marks


@pytest.mark.parametrize('protocol_class', [CtxRecorder, BufferedCtxRecorder],
                         ids=['Protocol', 'BufferedProtocol'])
def test_tcp_callbacks_run_in_creators_context(run, protocol_class):
    async def main():
        loop = asyncio.get_running_loop()
        log = []
        server_pr = loop.create_future()

        def factory():
            log.append(('srv', 'factory', var.get(), counter.get()))
            counter.set(100)        # seen by all of this connection's callbacks
            pr = protocol_class(log, 'srv', close_on=b'close;')
            server_pr.set_result(pr)
            return pr

        var.set('server creator')
        srv = await loop.create_server(factory, '127.0.0.1', 0)
        var.set('client creator')
        tr, pr = await loop.create_connection(
            lambda: protocol_class(log, 'cli'), *srv.sockets[0].getsockname())
        var.set('main, later')
        assert set(await _exchange(tr, pr, server_pr)) == {None}
        srv.close()
        await srv.wait_closed()
        # Nothing the callbacks set leaked into this task's context.
        assert (var.get(), counter.get(), made_mark.get()) == ('main, later', 0, None)
        return log

    log = run(main)
    srv = _events(log, 'srv')
    cli = _events(log, 'cli')
    data = 'buffer_updated' if protocol_class is BufferedCtxRecorder else 'data'
    reads = [e for e in srv if e[0] in ('get_buffer', 'buffer_updated', 'data')]
    assert srv[:2] == [('factory', 'server creator', 0), ('made', 'server creator', 100)]
    # All reads share one context (the counter goes on); close() from the
    # last one: connection_lost sees its changes too.
    assert reads == [(event, 'server creator', 100 + i) for i, event in
                     enumerate([e[0] for e in reads])]
    assert [e[0] for e in reads].count(data) == 3
    assert srv[-1] == ('lost', 'server creator', 100 + len(reads))
    # The client: its reads, then EOF and connection_lost (scheduled by the
    # EOF), all in one copy of the context of create_connection().
    assert cli[0] == ('made', 'client creator', 0)
    rest = cli[1:]
    assert [e[1] for e in rest] == ['client creator'] * len(rest)
    assert [e[2] for e in rest] == list(range(len(rest)))
    assert [e[0] for e in rest][-2:] == ['eof', 'lost']


def test_server_context_is_that_of_start_serving(run):
    """start_serving=False: the accepts run in the context of the call that
    starts serving, each connection in its own copy."""
    async def main():
        loop = asyncio.get_running_loop()
        log = []
        protocols = asyncio.Queue()

        def factory():
            log.append(('factory', var.get(), counter.get()))
            counter.set(counter.get() + 1)      # must not reach the next connection
            pr = CtxRecorder(log, 'srv', close_on=b'x')
            protocols.put_nowait(pr)
            return pr

        var.set('creator')
        srv = await loop.create_server(factory, '127.0.0.1', 0, start_serving=False)

        async def start():
            var.set('starter')
            await srv.start_serving()
        await asyncio.create_task(start())
        for _ in range(2):
            tr, pr = await loop.create_connection(
                lambda: CtxRecorder(log, 'cli'), *srv.sockets[0].getsockname())
            server_pr = await protocols.get()
            tr.write(b'x')
            await server_pr.lost
            await pr.lost
        srv.close()
        await srv.wait_closed()
        return log

    log = run(main)
    assert [e for e in log if e[0] == 'factory'] == [('factory', 'starter', 0)] * 2
    assert [e[2] for e in log if e[0] == 'srv' and e[1] == 'data'] == ['starter'] * 2


@pytest.mark.parametrize('kind', ['unix', 'accepted'])
def test_unix_and_accepted_socket_callbacks_context(run, kind):
    async def main():
        loop = asyncio.get_running_loop()
        log = []
        with tempfile.TemporaryDirectory() as tmp:
            if kind == 'unix':
                server_pr = loop.create_future()

                def factory():
                    pr = CtxRecorder(log, 'srv', close_on=b'close;')
                    server_pr.set_result(pr)
                    return pr
                var.set('server creator')
                path = os.path.join(tmp, 'sock')
                srv = await loop.create_unix_server(factory, path)
                var.set('client creator')
                tr, pr = await loop.create_unix_connection(
                    lambda: CtxRecorder(log, 'cli'), path)
                var.set('main, later')
                assert set(await _exchange(tr, pr, server_pr)) == {None}
                srv.close()
                await srv.wait_closed()
            else:
                a, b = socket.socketpair()
                var.set('client creator')
                tr, pr = await loop.connect_accepted_socket(
                    lambda: CtxRecorder(log, 'cli'), a)
                var.set('main, later')
                b.sendall(b'hello')
                await _wait_for_bytes(pr, 5)
                b.shutdown(socket.SHUT_WR)
                await pr.lost
                b.close()
        return log

    log = run(main)
    cli = _events(log, 'cli')
    assert cli[0] == ('made', 'client creator', 0)
    assert cli[1:] == [(event, 'client creator', i) for i, event in
                       enumerate([e[0] for e in cli[1:]])]
    assert [e[0] for e in cli][-2:] == ['eof', 'lost']
    if kind == 'unix':
        assert {e[1] for e in _events(log, 'srv')} == {'server creator'}


def test_flow_control_and_resume_reading_contexts(run):
    """pause_writing() in the context of the write(); resume_writing() in
    that of the write() that started buffering; data after resume_reading()
    in the resumer's; connection_lost() after close() in the closer's."""
    async def main():
        loop = asyncio.get_running_loop()
        log = []
        server_pr = loop.create_future()

        def factory():
            pr = CtxRecorder(log, 'srv')
            server_pr.set_result(pr)
            return pr

        var.set('server creator')
        srv = await loop.create_server(factory, '127.0.0.1', 0)
        var.set('client creator')
        tr, pr = await loop.create_connection(
            lambda: CtxRecorder(log, 'cli'), *srv.sockets[0].getsockname())
        spr = await server_pr
        spr.transport.pause_reading()
        payload = b'x' * (32 * 1024 * 1024)     # more than the kernel buffers
        var.set('writer')
        tr.write(payload)
        var.set('main, later')
        assert tr.get_write_buffer_size() > 0

        async def resume():
            var.set('resumer')
            spr.transport.resume_reading()
        await asyncio.create_task(resume())
        await _wait_for_bytes(spr, len(payload))
        while tr.get_write_buffer_size():       # the last send's completion
            await asyncio.sleep(0.01)

        async def close():
            var.set('closer')
            tr.close()
        await asyncio.create_task(close())
        await pr.lost
        await spr.lost
        srv.close()
        await srv.wait_closed()
        return log

    log = run(main)
    cli = [e[:2] for e in _events(log, 'cli')]
    assert cli == [('made', 'client creator'), ('pause', 'writer'), ('resume', 'writer'),
                   ('lost', 'closer')]
    srv = _events(log, 'srv')
    assert srv[0][:2] == ('made', 'server creator')
    assert {e[:2] for e in srv[1:-2]} == {('data', 'resumer')}
    assert [e[:2] for e in srv[-2:]] == [('eof', 'resumer'), ('lost', 'resumer')]


def test_each_resume_reading_gives_later_data_its_context(run):
    """The protocol pauses in every data_received(); a task resumes it each
    time from another context: the next data comes in that one (also what
    arrived while paused)."""
    async def main():
        loop = asyncio.get_running_loop()
        seen = []
        wants_resume = asyncio.Event()
        server_tr = loop.create_future()

        class Pausing(asyncio.Protocol):
            def connection_made(self, transport):
                self.transport = transport
                self.n = 0
                server_tr.set_result(transport)

            def data_received(self, data):
                seen.append(var.get())
                self.n += len(data)
                self.transport.pause_reading()
                wants_resume.set()

        var.set('server creator')
        srv = await loop.create_server(Pausing, '127.0.0.1', 0)
        var.set('client creator')
        tr, pr = await loop.create_connection(
            asyncio.Protocol, *srv.sockets[0].getsockname())
        str_ = await server_tr
        total = 1024 * 1024
        for _ in range(64):
            tr.write(b'x' * (total // 64))
        i = 0
        while str_.get_protocol().n < total:
            await wants_resume.wait()
            wants_resume.clear()
            var.set(f'resumer {i}')
            i += 1
            str_.resume_reading()
        tr.close()
        str_.close()
        srv.close()
        await srv.wait_closed()
        return seen

    seen = run(main)
    assert seen == ['server creator'] + [f'resumer {i}' for i in range(len(seen) - 1)]


def test_connection_lost_after_buffered_close_in_writers_context(run):
    async def main():
        loop = asyncio.get_running_loop()
        log = []
        server_pr = loop.create_future()

        def factory():
            pr = CtxRecorder(log, 'srv')
            server_pr.set_result(pr)
            return pr

        srv = await loop.create_server(factory, '127.0.0.1', 0)
        var.set('client creator')
        tr, pr = await loop.create_connection(
            lambda: CtxRecorder(log, 'cli'), *srv.sockets[0].getsockname())
        spr = await server_pr
        spr.transport.pause_reading()
        payload = b'x' * (32 * 1024 * 1024)

        async def write():
            var.set('writer')
            tr.write(payload)
        await asyncio.create_task(write())
        var.set('closer')
        tr.close()          # waits for the buffer to drain
        var.set('main, later')
        spr.transport.resume_reading()
        await pr.lost
        await spr.lost
        srv.close()
        await srv.wait_closed()
        return log

    log = run(main)
    assert [e[:2] for e in _events(log, 'cli')] == [
        ('made', 'client creator'), ('pause', 'writer'), ('resume', 'writer'),
        ('lost', 'writer')]


def test_tls_callbacks_context(run, tls_contexts):
    server_ctx, client_ctx = tls_contexts

    async def main():
        loop = asyncio.get_running_loop()
        log = []
        server_pr = loop.create_future()

        def factory():
            log.append(('srv', 'factory', var.get(), counter.get()))
            pr = CtxRecorder(log, 'srv', close_on=b'close;')
            server_pr.set_result(pr)
            return pr

        var.set('server creator')
        srv = await loop.create_server(factory, '127.0.0.1', 0, ssl=server_ctx)
        var.set('client creator')
        host, port = srv.sockets[0].getsockname()
        tr, pr = await loop.create_connection(
            lambda: CtxRecorder(log, 'cli'), host, port, ssl=client_ctx,
            server_hostname='localhost')
        var.set('main, later')
        await _exchange(tr, pr, server_pr)
        srv.close()
        await srv.wait_closed()
        return log

    log = run(main)
    assert {e[1] for e in _events(log, 'srv')} == {'server creator'}
    assert {e[1] for e in _events(log, 'cli')} == {'client creator'}


@pytest.fixture(scope='module')
def tls_contexts():
    return tls_context_pair()


def test_pipe_callbacks_context(run):
    async def main():
        loop = asyncio.get_running_loop()
        log = []
        r, w = os.pipe()
        var.set('read creator')
        rt, rp = await loop.connect_read_pipe(
            lambda: CtxRecorder(log, 'rpipe'), os.fdopen(r, 'rb', 0))
        var.set('write creator')
        wt, wp = await loop.connect_write_pipe(
            lambda: CtxRecorder(log, 'wpipe'), os.fdopen(w, 'wb', 0))
        var.set('writer')
        wt.write(b'abc')
        await _wait_for_bytes(rp, 3)
        var.set('closer')
        wt.close()
        await rp.lost
        await wp.lost
        return log

    log = run(main)
    # EOF schedules eof_received() and connection_lost(), each in a copy.
    assert _events(log, 'rpipe') == [
        ('made', 'read creator', 0), ('data', 'read creator', 0),
        ('eof', 'read creator', 1), ('lost', 'read creator', 1)]
    assert [e[:2] for e in _events(log, 'wpipe')] == [
        ('made', 'write creator'), ('lost', 'closer')]


def test_write_pipe_hangup_context(run):
    """The reader end closes: connection_lost in the write pipe's context."""
    async def main():
        loop = asyncio.get_running_loop()
        log = []
        r, w = os.pipe()
        var.set('write creator')
        wt, wp = await loop.connect_write_pipe(
            lambda: CtxRecorder(log, 'wpipe'), os.fdopen(w, 'wb', 0))
        var.set('main, later')
        os.close(r)
        await wp.lost
        return log

    assert [e[:2] for e in _events(run(main), 'wpipe')] == [
        ('made', 'write creator'), ('lost', 'write creator')]


class SubprocessCtxRecorder(asyncio.SubprocessProtocol):

    def __init__(self, log):
        self.log = log
        self.done = asyncio.get_running_loop().create_future()

    def _record(self, event):
        self.log.append((event, var.get()))

    def connection_made(self, transport):
        self._record('made')

    def pipe_data_received(self, fd, data):
        self._record('data')

    def pipe_connection_lost(self, fd, exc):
        self._record('pipe_lost')

    def process_exited(self):
        self._record('exited')

    def connection_lost(self, exc):
        self._record('lost')
        self.done.set_result(None)


def test_subprocess_callbacks_context(run, is_zcloop):
    async def main():
        loop = asyncio.get_running_loop()
        log = []
        var.set('creator')
        tr, pr = await loop.subprocess_exec(
            lambda: SubprocessCtxRecorder(log), sys.executable, '-c', 'print("hi")',
            stdin=None, stderr=None)
        var.set('main, later')
        await pr.done
        tr.close()
        return log

    log = run(main)
    assert ('made', 'creator') in log and ('data', 'creator') in log
    assert ('pipe_lost', 'creator') in log
    if is_zcloop:
        # asyncio 3.11 reports the exit from its watcher thread (the
        # thread's context), 3.12+ with pidfds in the creator's; zcloop as
        # uvloop: the creator's.
        assert log[-2:] == [('exited', 'creator'), ('lost', 'creator')]


class DatagramCtxRecorder(_CtxLog, asyncio.DatagramProtocol):

    def __init__(self, log, name):
        super().__init__(log, name)
        self.received = asyncio.Queue()
        self.errors = asyncio.Queue()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self._record('made')

    def datagram_received(self, data, addr):
        self._record('datagram')
        self.received.put_nowait((data, addr))

    def error_received(self, exc):
        self._record('error')
        self.errors.put_nowait(exc)

    def connection_lost(self, exc):
        self._record('lost')
        self.lost.set_result(exc)


def test_datagram_callbacks_context(run):
    async def main():
        loop = asyncio.get_running_loop()
        log = []
        var.set('a creator')
        ta, pa = await loop.create_datagram_endpoint(
            lambda: DatagramCtxRecorder(log, 'a'), local_addr=('127.0.0.1', 0))
        var.set('b creator')
        tb, pb = await loop.create_datagram_endpoint(
            lambda: DatagramCtxRecorder(log, 'b'), remote_addr=ta.get_extra_info('sockname'))
        var.set('sender')
        for _ in range(2):
            tb.sendto(b'x')
            await pa.received.get()
        var.set('closer a')
        ta.close()
        await pa.lost
        var.set('sender, later')
        tb.sendto(b'y')         # ECONNREFUSED comes back to error_received()
        await pb.errors.get()
        var.set('closer b')
        tb.close()
        await pb.lost
        return log

    log = run(main)
    assert _events(log, 'a') == [('made', 'a creator', 0), ('datagram', 'a creator', 0),
                                 ('datagram', 'a creator', 1), ('lost', 'closer a', 0)]
    assert _events(log, 'b') == [('made', 'b creator', 0), ('error', 'b creator', 0),
                                 ('lost', 'closer b', 0)]


# ----------------------------------------------------------------------
# The coroutine that made a transport resumes before its first data


class BindingCheck(asyncio.Protocol):
    """Fails if data arrives before the creating coroutine has bound the
    transport (a server that writes at once, data already queued)."""

    def __init__(self, bound):
        self.bound = bound
        self.first_data_seen_bound = None
        self.got = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self.first_data_seen_bound is None:
            self.first_data_seen_bound = bool(self.bound)
        if not self.got.done():
            self.got.set_result(data)

    def eof_received(self):
        pass

    def connection_lost(self, exc):
        pass


class BufferedBindingCheck(BindingCheck, asyncio.BufferedProtocol):

    def get_buffer(self, sizehint):
        self.buf = bytearray(1024)
        return self.buf

    def buffer_updated(self, nbytes):
        self.data_received(bytes(self.buf[:nbytes]))


class WriteAtOnce(asyncio.Protocol):
    def connection_made(self, transport):
        transport.write(b'hello at once')
        transport.close()


@pytest.mark.parametrize('kind', ['tcp', 'unix', 'accepted', 'read_pipe'])
@pytest.mark.parametrize('protocol_class', [BindingCheck, BufferedBindingCheck],
                         ids=['Protocol', 'BufferedProtocol'])
def test_creator_resumes_before_first_data(run, kind, protocol_class):
    async def main():
        loop = asyncio.get_running_loop()
        bound = []
        close = []
        with tempfile.TemporaryDirectory() as tmp:
            if kind == 'tcp':
                srv = await loop.create_server(WriteAtOnce, '127.0.0.1', 0)
                close.append(srv.close)
                tr, pr = await loop.create_connection(
                    lambda: protocol_class(bound), *srv.sockets[0].getsockname())
            elif kind == 'unix':
                path = os.path.join(tmp, 'sock')
                srv = await loop.create_unix_server(WriteAtOnce, path)
                close.append(srv.close)
                tr, pr = await loop.create_unix_connection(
                    lambda: protocol_class(bound), path)
            elif kind == 'accepted':
                a, b = socket.socketpair()
                b.sendall(b'queued before')     # already there when reading starts
                close.append(b.close)
                tr, pr = await loop.connect_accepted_socket(
                    lambda: protocol_class(bound), a)
            else:
                r, w = os.pipe()
                os.write(w, b'queued before')
                close.append(lambda: os.close(w))
                tr, pr = await loop.connect_read_pipe(
                    lambda: protocol_class(bound), os.fdopen(r, 'rb', 0))
            bound.append((tr, pr))
            await pr.got
            tr.close()
            for fn in close:
                fn()
            await asyncio.sleep(0)
        return pr.first_data_seen_bound

    assert run(main) is True


# ----------------------------------------------------------------------
# AF_UNIX SOCK_DGRAM socketpair: sendto(data) without an address


def test_unix_dgram_socketpair_sendto_without_address(run, is_zcloop):
    """The peer is unnamed (getpeername() == ''), so asyncio does not treat
    the socket as connected: its sendto(data) fails the transport with
    TypeError (socket.sendto(data, None)).  zcloop sends to the peer the
    kernel knows, as uvloop (docs/design.md)."""
    async def main():
        loop = asyncio.get_running_loop()
        log = []
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ta, pa = await loop.create_datagram_endpoint(
            lambda: DatagramCtxRecorder(log, 'a'), sock=a)
        tb, pb = await loop.create_datagram_endpoint(
            lambda: DatagramCtxRecorder(log, 'b'), sock=b)
        assert ta.get_extra_info('peername') == ''
        ta.sendto(b'hello')
        # One of them happens, on either loop: never a silent hang.
        received = asyncio.ensure_future(pb.received.get())
        done, _ = await asyncio.wait([received, pa.lost],
                                     return_when=asyncio.FIRST_COMPLETED, timeout=10)
        assert done, 'sendto() neither delivered nor failed'
        if received.done():
            outcome = ('delivered', received.result())
            tb.sendto(b'reply')
            outcome += ('reply', await pa.received.get())
        else:
            received.cancel()
            outcome = ('failed', type(pa.lost.result()).__name__)
        ta.close()
        tb.close()
        await pb.lost
        return outcome

    if is_zcloop:
        assert run(main) == ('delivered', (b'hello', None), 'reply', (b'reply', None))
    else:
        assert run(main) == ('failed', 'TypeError')

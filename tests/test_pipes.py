"""connect_read_pipe / connect_write_pipe on asyncio's loop and on zcloop.

Real pipes (os.pipe), a subprocess at the other end, character devices
(/dev/null, a pty) and a socketpair; the same scenario runs on both loops
and must observe the same protocol callbacks, data and errors.
"""
import asyncio
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import tty

import pytest

from helpers.loops import run_on

pytestmark = pytest.mark.timeout(60)

TIMEOUT = 30        # hang guard for one scenario, never a timing assertion


def _run(loop_factory, main):
    errors = []

    async def guarded():
        asyncio.get_running_loop().set_exception_handler(lambda _l, ctx: errors.append(ctx))
        return await asyncio.wait_for(main(), TIMEOUT)
    result = run_on(loop_factory, guarded)
    assert errors == [], errors
    return result


def _fds():
    return sorted(int(n) for n in os.listdir('/proc/self/fd'))


class Recorder(asyncio.Protocol):
    """Records callbacks (data coalesced) and the bytes received."""

    def __init__(self):
        loop = asyncio.get_running_loop()
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.lost = loop.create_future()
        self.resumed = None

    def connection_made(self, transport):
        self.transport = transport
        self.events.append('connection_made')

    def data_received(self, data):
        assert isinstance(data, bytes)
        self.data += data
        if self.events[-1] != 'data_received':
            self.events.append('data_received')

    def eof_received(self):
        self.events.append('eof_received')

    def pause_writing(self):
        self.events.append('pause_writing')
        self.resumed = asyncio.get_running_loop().create_future()

    def resume_writing(self):
        self.events.append('resume_writing')
        self.resumed.set_result(None)

    def connection_lost(self, exc):
        self.events.append(('connection_lost', type(exc).__name__ if exc else None,
                            exc.args if exc else None))
        self.lost.set_result(exc)

    async def writable(self):
        if self.resumed is not None:
            await self.resumed


def _pipe_files():
    r, w = os.pipe()
    return os.fdopen(r, 'rb', 0), os.fdopen(w, 'wb', 0)


def _drain_thread(fobj, out, chunk=1 << 16, delay=0.0, limit=None):
    """Read fobj until EOF (or `limit` bytes) in a thread, into out (bytearray)."""
    def body():
        while limit is None or len(out) < limit:
            b = os.read(fobj.fileno(), chunk)
            if not b:
                break
            out.extend(b)
            if delay:
                time.sleep(delay)
    th = threading.Thread(target=body, daemon=True)
    th.start()
    return th


# ----------------------------------------------------------------------
# Read pipes


def test_read_pipe_protocol_eof(loop_factory):
    """Data, then EOF when the writer closes: eof_received, connection_lost
    (None); the pipe object is closed by the transport."""
    before = _fds()

    async def main():
        loop = asyncio.get_running_loop()
        rf, wf = _pipe_files()
        transport, proto = await loop.connect_read_pipe(Recorder, rf)
        assert transport.get_extra_info('pipe') is rf
        assert transport.get_extra_info('nope', 'dflt') == 'dflt'
        assert transport.is_reading() and not transport.is_closing()
        payload = os.urandom(300_000)
        th = threading.Thread(target=lambda: (wf.write(payload), wf.close()))
        th.start()
        await proto.lost
        th.join()
        return proto.events, bytes(proto.data) == payload, rf.closed, transport.is_closing()

    assert _run(loop_factory, main) == (
        ['connection_made', 'data_received', 'eof_received', ('connection_lost', None, None)],
        True, True, True)
    assert _fds() == before


def test_read_pipe_stream_reader(loop_factory):
    """A StreamReader over a read pipe: readexactly / readline / EOF."""
    async def main():
        loop = asyncio.get_running_loop()
        rf, wf = _pipe_files()
        reader = asyncio.StreamReader(limit=1 << 16)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), rf)
        blob = os.urandom(2 << 20)

        def write():
            wf.write(b'header line\n')
            wf.write(blob)
            wf.close()
        th = threading.Thread(target=write)
        th.start()
        line = await reader.readline()
        body = await reader.readexactly(len(blob))
        rest = await reader.read()
        th.join()
        return line, body == blob, rest, reader.at_eof()

    assert _run(loop_factory, main) == (b'header line\n', True, b'', True)


def test_read_pipe_close_by_us(loop_factory):
    """transport.close(): connection_lost(None) without eof_received; the
    writer then sees EPIPE."""
    async def main():
        loop = asyncio.get_running_loop()
        rf, wf = _pipe_files()
        transport, proto = await loop.connect_read_pipe(Recorder, rf)
        wf.write(b'abc')
        while not proto.data:
            await asyncio.sleep(0.001)
        transport.close()
        transport.close()
        assert transport.is_closing()
        await proto.lost
        try:
            wf.write(b'x')
            err = None
        except BrokenPipeError:
            err = 'EPIPE'
        wf.close()
        return proto.events, bytes(proto.data), rf.closed, err

    assert _run(loop_factory, main) == (
        ['connection_made', 'data_received', ('connection_lost', None, None)],
        b'abc', True, 'EPIPE')


def test_read_pipe_pause_resume(loop_factory):
    """pause_reading(): nothing is delivered (not even EOF) until
    resume_reading(); then everything, in order."""
    async def main():
        loop = asyncio.get_running_loop()
        rf, wf = _pipe_files()
        transport, proto = await loop.connect_read_pipe(Recorder, rf)
        await asyncio.sleep(0)
        wf.write(b'first')
        while not proto.data:
            await asyncio.sleep(0.001)
        transport.pause_reading()
        transport.pause_reading()           # idempotent
        paused = transport.is_reading()
        wf.write(b'second')
        wf.write(b'third')
        wf.close()                          # EOF while paused
        for _ in range(20):
            await asyncio.sleep(0.005)
        while_paused = (bytes(proto.data), list(proto.events))
        transport.resume_reading()
        transport.resume_reading()
        await proto.lost
        return paused, while_paused, bytes(proto.data), proto.events

    paused, while_paused, data, events = _run(loop_factory, main)
    assert paused is False
    assert while_paused == (b'first', ['connection_made', 'data_received'])
    assert data == b'firstsecondthird'
    assert events == ['connection_made', 'data_received', 'eof_received',
                      ('connection_lost', None, None)]


def test_read_pipe_pause_in_connection_made(loop_factory):
    """Pausing from connection_made() holds back the data already in the
    pipe (asyncio starts reading one callback later)."""
    class Pauser(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.pause_reading()

    async def main():
        loop = asyncio.get_running_loop()
        rf, wf = _pipe_files()
        wf.write(b'early')
        transport, proto = await loop.connect_read_pipe(Pauser, rf)
        for _ in range(10):
            await asyncio.sleep(0.005)
        held = bytes(proto.data)
        transport.resume_reading()
        while not proto.data:
            await asyncio.sleep(0.001)
        wf.close()
        await proto.lost
        return held, bytes(proto.data)

    assert _run(loop_factory, main) == (b'', b'early')


def test_read_pipe_from_subprocess(loop_factory):
    """The write end is a child's stdout (plain subprocess.Popen): its output
    arrives, and EOF when it exits."""
    async def main():
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        proc = subprocess.Popen(
            [sys.executable, '-c',
             'import sys\nfor i in range(1000): sys.stdout.write(f"{i}\\n")'],
            stdout=w)
        os.close(w)
        transport, proto = await loop.connect_read_pipe(Recorder, os.fdopen(r, 'rb', 0))
        await proto.lost
        rc = await loop.run_in_executor(None, proc.wait)
        return proto.events[-2:], bytes(proto.data), rc

    events, data, rc = _run(loop_factory, main)
    assert rc == 0
    assert data == ''.join(f'{i}\n' for i in range(1000)).encode()
    assert events == ['eof_received', ('connection_lost', None, None)]


def test_read_pipe_socket(loop_factory):
    """A socket is accepted as a 'pipe' too (S_ISSOCK)."""
    import socket

    async def main():
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        transport, proto = await loop.connect_read_pipe(Recorder, a)
        b.sendall(b'over a socket')
        b.close()
        await proto.lost
        return proto.events, bytes(proto.data), a.fileno()

    assert _run(loop_factory, main) == (
        ['connection_made', 'data_received', 'eof_received', ('connection_lost', None, None)],
        b'over a socket', -1)


def test_read_pipe_read_error(loop_factory):
    """A read error other than EIO (here a TCP reset on a socket used as a
    read pipe) goes to the exception handler as 'Fatal read error on pipe
    transport', then connection_lost(exc), as asyncio's read pipe does."""
    import socket
    import struct

    async def main():
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda _l, ctx: errors.append(ctx))
        with socket.create_server(('127.0.0.1', 0)) as lsock:
            a = socket.create_connection(lsock.getsockname())
            b, _ = lsock.accept()
        transport, proto = await loop.connect_read_pipe(Recorder, a)
        await asyncio.sleep(0)
        b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
        b.close()                       # RST
        exc = await proto.lost
        return (type(exc), proto.events[:-1],
                [(c['message'], type(c['exception']), c['transport'] is transport)
                 for c in errors])

    assert _run(loop_factory, main) == (
        ConnectionResetError, ['connection_made'],
        [('Fatal read error on pipe transport', ConnectionResetError, True)])


# ----------------------------------------------------------------------
# Write pipes


def test_write_pipe_stream_writer(loop_factory):
    """StreamWriter over a write pipe: 8 MiB through drain() to a reader
    thread, then close() / wait_closed(); byte-exact."""
    async def main():
        loop = asyncio.get_running_loop()
        rf, wf = _pipe_files()
        transport, proto = await loop.connect_write_pipe(
            lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), wf)
        writer = asyncio.StreamWriter(transport, proto, None, loop)
        got = bytearray()
        th = _drain_thread(rf, got)
        h = hashlib.sha256()
        for i in range(128):
            chunk = os.urandom(65536)
            h.update(chunk)
            writer.write(chunk)
            await writer.drain()
        assert writer.can_write_eof()
        writer.close()
        await writer.wait_closed()
        await loop.run_in_executor(None, th.join)
        rf.close()
        return hashlib.sha256(got).hexdigest() == h.hexdigest(), len(got), wf.closed

    assert _run(loop_factory, main) == (True, 8 << 20, True)


def test_write_pipe_flow_control(loop_factory):
    """A slow reader: pause_writing()/resume_writing() alternate, the
    buffer is bounded by the high-water mark we wait on, nothing is lost."""
    async def main():
        loop = asyncio.get_running_loop()
        rf, wf = _pipe_files()
        transport, proto = await loop.connect_write_pipe(Recorder, wf)
        transport.set_write_buffer_limits(high=256 * 1024, low=64 * 1024)
        limits = transport.get_write_buffer_limits()
        got = bytearray()
        th = _drain_thread(rf, got, chunk=16384, delay=0.0005)
        h = hashlib.sha256()
        biggest = 0
        for i in range(64):
            await proto.writable()
            chunk = os.urandom(65536)
            h.update(chunk)
            transport.write(chunk)
            biggest = max(biggest, transport.get_write_buffer_size())
        await proto.writable()
        transport.close()
        await proto.lost
        await loop.run_in_executor(None, th.join)
        rf.close()
        pauses = proto.events.count('pause_writing')
        resumes = proto.events.count('resume_writing')
        return (limits, pauses > 0, pauses == resumes, biggest <= 256 * 1024 + 65536,
                hashlib.sha256(got).hexdigest() == h.hexdigest(), proto.events[-1])

    assert _run(loop_factory, main) == (
        (64 * 1024, 256 * 1024), True, True, True, True, ('connection_lost', None, None))


def test_write_pipe_limits_errors(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        rf, wf = _pipe_files()
        transport, proto = await loop.connect_write_pipe(Recorder, wf)
        default = transport.get_write_buffer_limits()
        with pytest.raises(ValueError, match=r'high \(1\) must be >= low \(2\) must be >= 0'):
            transport.set_write_buffer_limits(high=1, low=2)
        transport.set_write_buffer_limits(low=1000)
        derived = transport.get_write_buffer_limits()
        transport.close()
        await proto.lost
        rf.close()
        return default, derived

    assert _run(loop_factory, main) == ((16384, 65536), (1000, 4000))


@pytest.mark.parametrize('buffered', [False, True])
def test_write_pipe_reader_closes(loop_factory, buffered):
    """The reader closes its end while we write: connection_lost with
    BrokenPipeError() if data was still buffered, None if not; later writes
    are dropped silently (asyncio counts them)."""
    async def main():
        loop = asyncio.get_running_loop()
        rf, wf = _pipe_files()
        transport, proto = await loop.connect_write_pipe(Recorder, wf)
        transport.write(b'x' * (1 << 20 if buffered else 100))
        await asyncio.sleep(0.01)
        size = transport.get_write_buffer_size()
        rf.close()
        exc = await proto.lost
        transport.write(b'dropped')
        transport.write(b'dropped')
        return size > 0, proto.events, transport.is_closing(), \
            transport.get_write_buffer_size(), wf.closed

    events = ['connection_made']
    if buffered:
        events.append('pause_writing')
        lost = ('connection_lost', 'BrokenPipeError', ())
    else:
        lost = ('connection_lost', None, None)
    assert _run(loop_factory, main) == (buffered, events + [lost], True, 0, True)


def test_write_pipe_reader_closed_before_connect(loop_factory):
    """The read end is already closed when we connect: the hang-up is seen
    right away, connection_lost(None) with nothing buffered."""
    async def main():
        loop = asyncio.get_running_loop()
        rf, wf = _pipe_files()
        rf.close()
        transport, proto = await loop.connect_write_pipe(Recorder, wf)
        await proto.lost
        return proto.events

    assert _run(loop_factory, main) == ['connection_made', ('connection_lost', None, None)]


def test_write_pipe_close_flushes(loop_factory):
    """close() with data buffered: everything reaches the reader first,
    then connection_lost(None); write_eof() is close() for pipes."""
    async def main():
        loop = asyncio.get_running_loop()
        out = {}
        for how in ('close', 'write_eof'):
            rf, wf = _pipe_files()
            transport, proto = await loop.connect_write_pipe(Recorder, wf)
            payload = os.urandom(3 << 20)
            got = bytearray()
            th = _drain_thread(rf, got)
            transport.write(payload)
            getattr(transport, how)()
            assert transport.is_closing()
            transport.write(b'after close: dropped')
            await proto.lost
            await loop.run_in_executor(None, th.join)
            rf.close()
            out[how] = (bytes(got) == payload, proto.events, wf.closed)
        return out

    # asyncio resumes the protocol before connection_lost().
    events = ['connection_made', 'pause_writing', 'resume_writing',
              ('connection_lost', None, None)]
    assert _run(loop_factory, main) == {'close': (True, events, True),
                                        'write_eof': (True, events, True)}


def test_write_pipe_abort(loop_factory):
    """abort() drops the buffer: connection_lost(None) right away."""
    async def main():
        loop = asyncio.get_running_loop()
        rf, wf = _pipe_files()
        transport, proto = await loop.connect_write_pipe(Recorder, wf)
        transport.write(b'y' * (1 << 20))
        await asyncio.sleep(0)
        transport.abort()
        await proto.lost
        size = transport.get_write_buffer_size()
        rf.close()
        return proto.events[-1], size, wf.closed

    assert _run(loop_factory, main) == (('connection_lost', None, None), 0, True)


def test_write_pipe_to_subprocess(loop_factory):
    """The read end is a child's stdin (cat), its stdout is our read pipe:
    4 MiB round trip through a real process, byte-exact."""
    async def main():
        loop = asyncio.get_running_loop()
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        proc = subprocess.Popen(['cat'], stdin=in_r, stdout=out_w)
        os.close(in_r)
        os.close(out_w)
        wt, wp = await loop.connect_write_pipe(Recorder, os.fdopen(in_w, 'wb', 0))
        rt, rp = await loop.connect_read_pipe(Recorder, os.fdopen(out_r, 'rb', 0))
        payload = os.urandom(4 << 20)
        for i in range(0, len(payload), 1 << 18):
            await wp.writable()
            wt.write(payload[i:i + (1 << 18)])
        wt.close()
        await wp.lost
        await rp.lost
        rc = await loop.run_in_executor(None, proc.wait)
        return bytes(rp.data) == payload, rp.events[-2:], rc

    assert _run(loop_factory, main) == (
        True, ['eof_received', ('connection_lost', None, None)], 0)


def test_write_pipe_stream_writer_reader_gone(loop_factory):
    """StreamWriter.drain() once the reader is gone: ConnectionResetError
    ('Connection lost'), as asyncio."""
    async def main():
        loop = asyncio.get_running_loop()
        rf, wf = _pipe_files()
        transport, proto = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, wf)
        writer = asyncio.StreamWriter(transport, proto, None, loop)
        rf.close()
        await asyncio.sleep(0.01)
        writer.write(b'z')
        with pytest.raises(ConnectionResetError, match='Connection lost'):
            await writer.drain()
        return transport.is_closing()

    assert _run(loop_factory, main) is True


def _read_now(fd):
    """What is in the pipe/pty right now (never blocks: a missing byte is a
    mismatch, not a hang)."""
    blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1 << 16)
    except BlockingIOError:
        return b''
    finally:
        os.set_blocking(fd, blocking)


@pytest.mark.parametrize('kind', ['pipe', 'pty'])
def test_write_pipe_writes_at_once(loop_factory, kind):
    """write() on an idle write pipe puts the bytes in the pipe (or pty)
    before it returns, as asyncio's os.write() at once: a reader in the
    same thread finds them without the loop running."""
    async def main():
        loop = asyncio.get_running_loop()
        if kind == 'pipe':
            rf, wf = _pipe_files()
            reader = rf.fileno()
        else:
            master, slave = os.openpty()
            tty.setraw(slave)
            rf, wf = os.fdopen(slave, 'rb', 0), os.fdopen(master, 'wb', 0)
            reader = slave
        transport, proto = await loop.connect_write_pipe(Recorder, wf)
        got = []
        for chunk in (b'first', bytearray(b'second'), memoryview(b'third')):
            transport.write(chunk)
            got.append(_read_now(reader))
        size = transport.get_write_buffer_size()
        transport.close()
        await proto.lost
        rf.close()
        return got, size, proto.events

    assert _run(loop_factory, main) == (
        [b'first', b'second', b'third'], 0,
        ['connection_made', ('connection_lost', None, None)])


def test_write_pipe_write_close_loop_close(loop_factory):
    """tr.write(); tr.close(); loop.close() with the loop never run again:
    the bytes are in the pipe (asyncio wrote them inside write())."""
    rf, wf = _pipe_files()
    loop = loop_factory()
    try:
        transport, proto = loop.run_until_complete(
            loop.connect_write_pipe(asyncio.Protocol, wf))
        transport.write(b'last words')
        transport.close()
    finally:
        loop.close()
    try:
        assert _read_now(rf.fileno()) == b'last words'
    finally:
        rf.close()
        wf.close()


def test_pipe_transport_repr(loop_factory):
    """repr() of pipe transports uses asyncio's words through the life of
    the transport: idle/polling, bufsize, closing, closed."""
    async def main():
        loop = asyncio.get_running_loop()
        rf, wf = _pipe_files()
        wf2_r, wf2 = _pipe_files()
        rt, rp = await loop.connect_read_pipe(Recorder, rf)
        wt, wp = await loop.connect_write_pipe(Recorder, wf2)
        fd_r, fd_w = rf.fileno(), wf2.fileno()
        seen = [repr(rt), repr(wt)]
        rt.pause_reading()
        seen.append(repr(rt))
        rt.resume_reading()
        await asyncio.sleep(0)
        seen.append(repr(rt))
        wt.write(b'w' * (1 << 20))       # more than the pipe holds: buffered
        seen.append(repr(wt).replace(str(wt.get_write_buffer_size()), 'N'))
        wt.abort()
        rt.close()
        seen += [repr(rt), repr(wt)]
        await rp.lost
        await wp.lost
        seen += [repr(rt), repr(wt)]
        wf.close()
        wf2_r.close()
        return [r.replace(f'fd={fd_r}', 'fd=R').replace(f'fd={fd_w}', 'fd=W')
                .replace('_UnixReadPipeTransport', 'R').replace('ReadPipeTransport', 'R')
                .replace('_UnixWritePipeTransport', 'W').replace('WritePipeTransport', 'W')
                for r in seen]

    assert _run(loop_factory, main) == [
        '<R fd=R polling>', '<W fd=W idle bufsize=0>',
        '<R fd=R idle>', '<R fd=R polling>',
        '<W fd=W polling bufsize=N>',
        '<R closing fd=R idle>', '<W closing fd=W idle bufsize=0>',
        '<R closed fd=R closed>', '<W closed fd=W closed>']


@pytest.mark.parametrize('echo', ['child', 'line discipline'])
def test_pty_bidirectional(loop_factory, echo):
    """connect_read_pipe() and connect_write_pipe() on the same pty master
    file: what we write comes back (from a child running cat on the raw
    slave, or from the tty's own echo); the hangup ends the reader with
    connection_lost(OSError(EIO)) and no eof_received, as asyncio."""
    async def main():
        loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        proc = None
        if echo == 'child':
            tty.setraw(slave)
            proc = await asyncio.create_subprocess_exec(
                'cat', stdin=slave, stdout=slave, stderr=slave)
        mf = os.fdopen(master, 'r+b', 0)
        rt, rp = await loop.connect_read_pipe(Recorder, mf)
        wt, wp = await loop.connect_write_pipe(Recorder, mf)
        lines = []
        for i in range(3):
            line = b'line %d\n' % i
            start = len(rp.data)
            wt.write(line)
            while b'\n' not in rp.data[start:]:
                await asyncio.sleep(0.001)
            lines.append(bytes(rp.data[start:]))
        if proc is not None:
            proc.kill()
            await proc.wait()
        os.close(slave)
        exc = await rp.lost
        wt.close()
        await wp.lost
        return lines, rp.events, getattr(exc, 'errno', None), wp.events

    import errno
    lines, revents, err, wevents = _run(loop_factory, main)
    crlf = b'\r\n' if echo == 'line discipline' else b'\n'
    assert lines == [b'line %d' % i + crlf for i in range(3)]
    assert revents[0] == 'connection_made' and revents[-1][:2] == ('connection_lost', 'OSError')
    assert 'eof_received' not in revents and err == errno.EIO
    assert wevents == ['connection_made', ('connection_lost', None, None)]


# ----------------------------------------------------------------------
# Character devices, regular files, argument errors


def test_write_pipe_dev_null(loop_factory):
    """/dev/null is a character device: accepted, everything is written
    inside write(), close() -> connection_lost(None)."""
    async def main():
        loop = asyncio.get_running_loop()
        f = open('/dev/null', 'wb', buffering=0)
        transport, proto = await loop.connect_write_pipe(Recorder, f)
        for _ in range(16):
            transport.write(b'n' * 100_000)
            await proto.writable()
        while transport.get_write_buffer_size():
            await asyncio.sleep(0.001)
        transport.close()
        await proto.lost
        return proto.events, f.closed

    assert _run(loop_factory, main) == (
        ['connection_made', ('connection_lost', None, None)], True)


def test_pty_pipes(loop_factory):
    """A pty (character devices both ends): write through the slave, read
    from the master; closing the slave ends the master with EIO, reported
    as connection_lost(OSError(EIO)) without calling the exception handler."""
    async def main():
        loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        tty.setraw(slave)
        mf = os.fdopen(master, 'rb', 0)
        sf = os.fdopen(slave, 'wb', 0)
        rt, rp = await loop.connect_read_pipe(Recorder, mf)
        wt, wp = await loop.connect_write_pipe(Recorder, sf)
        wt.write(b'through the pty\n')
        while len(rp.data) < 16:
            await asyncio.sleep(0.001)
        wt.close()
        await wp.lost
        exc = await rp.lost
        return bytes(rp.data), wp.events, rp.events[-1], getattr(exc, 'errno', None)

    import errno
    data, wevents, rlost, err = _run(loop_factory, main)
    assert data == b'through the pty\n'
    assert wevents == ['connection_made', ('connection_lost', None, None)]
    assert rlost[:2] == ('connection_lost', 'OSError') and err == errno.EIO


def test_read_pipe_dev_zero(loop_factory, is_zcloop):
    """/dev/zero as a read pipe.  asyncio's selector cannot poll it (epoll
    refuses with EPERM, reported to the exception handler); zcloop reads it
    with READ on the ring."""
    async def main():
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda _l, ctx: errors.append(ctx))
        f = open('/dev/zero', 'rb', buffering=0)
        transport, proto = await loop.connect_read_pipe(Recorder, f)
        for _ in range(50):
            if len(proto.data) >= 1 << 20 or errors:
                break
            await asyncio.sleep(0.005)
        transport.close()
        await proto.lost
        return (len(proto.data) >= 1 << 20, set(proto.data) <= {0},
                [type(e.get('exception')) for e in errors])

    if is_zcloop:
        assert _run(loop_factory, main) == (True, True, [])
    else:
        assert _run(loop_factory, main) == (False, True, [PermissionError])


class _FdObject:
    """The least a 'pipe' argument needs: fileno() and close()."""

    def __init__(self, fd):
        self.fd = fd
        self.closed = False

    def fileno(self):
        return self.fd

    def close(self):
        if not self.closed:
            self.closed = True
            os.close(self.fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.mark.parametrize('kind', ['regular', 'directory'])
def test_not_a_pipe(loop_factory, kind, tmp_path):
    """Regular files and directories are refused with asyncio's messages;
    the file object is left open."""
    async def main():
        loop = asyncio.get_running_loop()
        out = []
        if kind == 'regular':
            f = tempfile.TemporaryFile()
        else:
            f = _FdObject(os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY))
        with f:
            for meth in (loop.connect_read_pipe, loop.connect_write_pipe):
                try:
                    await meth(Recorder, f)
                    out.append(None)
                except ValueError as exc:
                    out.append(str(exc))
            out.append(f.closed)
        return out

    assert _run(loop_factory, main) == [
        'Pipe transport is for pipes/sockets only.',
        'Pipe transport is only for pipes, sockets and character devices',
        False]


def test_read_pipe_protocol_error(loop_factory, is_zcloop):
    """data_received() raising: the exception handler is told on both loops.
    Known difference: asyncio's read pipe does not catch the exception (it
    reaches the handler as "Exception in callback" and the pipe stays open);
    zcloop treats it as for sockets (asyncio's socket transports do too):
    fatal error, connection_lost(exc)."""
    class Bad(Recorder):
        def data_received(self, data):
            raise ZeroDivisionError('boom')

    async def main():
        loop = asyncio.get_running_loop()
        errors = []
        loop.set_exception_handler(lambda _l, ctx: errors.append(ctx))
        rf, wf = _pipe_files()
        transport, proto = await loop.connect_read_pipe(Bad, rf)
        wf.write(b'x')
        while not errors:
            await asyncio.sleep(0.001)
        if not is_zcloop:
            transport.close()
        exc = await proto.lost
        wf.close()
        return type(exc), [type(e['exception']) for e in errors], rf.closed

    lost = ZeroDivisionError if is_zcloop else type(None)
    assert _run(loop_factory, main) == (lost, [ZeroDivisionError], True)


def test_pipes_no_fd_leak(loop_factory):
    """Many pipe transports opened and closed: every fd is returned."""
    before = _fds()

    async def main():
        loop = asyncio.get_running_loop()
        for _ in range(50):
            rf, wf = _pipe_files()
            rt, rp = await loop.connect_read_pipe(Recorder, rf)
            wt, wp = await loop.connect_write_pipe(Recorder, wf)
            wt.write(b'ping')
            wt.close()
            await wp.lost
            await rp.lost
            assert bytes(rp.data) == b'ping'

    _run(loop_factory, main)
    assert _fds() == before

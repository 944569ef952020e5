"""Close-order edges of every transport kind (stream, write pipe, datagram)
on asyncio's loop and on zcloop: is_closing() after close()/abort()/a fatal
error, close() then abort() with data buffered, connection_lost() exactly
once, and the count of writes dropped after close behind asyncio's
"... raised exception." warning (docs/design.md "close/abort").
"""
import asyncio
import logging
import os
import socket
import threading

import pytest

from streamutil import Recorder, pattern, raw_peer, recv_all_blocking

pytestmark = pytest.mark.timeout(60)

SOCKET_WARNING = 'socket.send() raised exception.'
PIPE_WARNING = 'pipe closed by peer or os.write(pipe, data) raised exception.'


def _warnings(caplog, message):
    return sum(1 for r in caplog.records
               if r.name == 'asyncio' and r.levelno == logging.WARNING
               and r.getMessage() == message)


async def _settle():
    for _ in range(3):
        await asyncio.sleep(0)


# ----------------------------------------------------------------------
# Stream transports


def test_stream_close_then_abort_with_data_buffered(run):
    """close() while data is buffered leaves the transport closing; abort()
    then drops the buffer at once and connection_lost(None) comes once."""
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop, rcvbuf=4096)
        with conn:
            tr.write(pattern(4 * 1024 * 1024, seed=3))
            await _settle()             # zcloop: a send request is in flight
            buffered = tr.get_write_buffer_size() > 0
            tr.close()
            closing = tr.is_closing()
            tr.abort()
            after_abort = (tr.is_closing(), tr.get_write_buffer_size())
            tr.abort()
            tr.close()
            exc = await pr.lost
            await _settle()
            tr.abort()
            tr.close()
            await _settle()
        return buffered, closing, after_abort, exc, pr.events
    assert run(main) == (True, True, (True, 0), None, ['made', 'lost'])


@pytest.mark.parametrize('how', ['abort', 'fatal'])
def test_stream_writes_after_loss_are_counted(run, caplog, how):
    """asyncio counts the loss and every write after it; it warns from the
    LOG_THRESHOLD_FOR_CONNLOST_WRITES-th count on (6 of 10 writes)."""
    class Failing(Recorder):
        def data_received(self, data):
            super().data_received(data)
            raise ZeroDivisionError('boom')

    async def main():
        loop = asyncio.get_running_loop()
        contexts = []
        loop.set_exception_handler(lambda _loop, ctx: contexts.append(ctx['message']))
        tr, pr, conn = await raw_peer(loop, Failing)
        with conn:
            if how == 'abort':
                tr.abort()
            else:
                conn.sendall(b'x')
                while not tr.is_closing():
                    await asyncio.sleep(0.01)
            closing = tr.is_closing()
            caplog.clear()
            for _ in range(10):
                tr.write(b'dropped')
            before_lost = _warnings(caplog, SOCKET_WARNING)
            exc = await pr.lost
            caplog.clear()
            tr.write(b'dropped after connection_lost')
            after_lost = _warnings(caplog, SOCKET_WARNING)
            tr.close()
            tr.abort()
            await _settle()
            got = await loop.run_in_executor(None, recv_all_blocking, conn)
        return (closing, before_lost, after_lost, type(exc).__name__, pr.events, contexts,
                got)
    with caplog.at_level(logging.WARNING, logger='asyncio'):
        result = run(main)
    if how == 'abort':
        assert result == (True, 6, 1, 'NoneType', ['made', 'lost'], [], b'')
    else:
        assert result == (True, 6, 1, 'ZeroDivisionError', ['made', 'data', 'lost'],
                          ['Fatal error: protocol.data_received() call failed.'], b'')


# ----------------------------------------------------------------------
# Write pipes


def _pipe_files():
    r, w = os.pipe()
    return os.fdopen(r, 'rb', 0), os.fdopen(w, 'wb', 0)


def _drain(fobj):
    out = bytearray()

    def body():
        while True:
            b = os.read(fobj.fileno(), 1 << 16)
            if not b:
                break
            out.extend(b)
    th = threading.Thread(target=body, daemon=True)
    th.start()
    return th, out


class PipeRecorder(asyncio.Protocol):
    def __init__(self):
        self.events = []
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.events.append('made')

    def connection_lost(self, exc):
        self.events.append(('lost', exc))
        if not self.lost.done():
            self.lost.set_result(exc)


@pytest.mark.parametrize('how', ['close', 'close-buffered', 'abort'])
def test_write_pipe_writes_after_close_are_counted(run, caplog, how):
    """asyncio's write pipe counts every write after close() or abort() --
    also while its buffer still drains -- but not the close itself: it
    warns from the 6th dropped write on (5 of 10)."""
    async def main():
        loop = asyncio.get_running_loop()
        rf, wf = _pipe_files()
        tr, pr = await loop.connect_write_pipe(PipeRecorder, wf)
        payload = pattern(1 << 20, seed=4) if how == 'close-buffered' else b''
        if payload:
            tr.write(payload)
            assert tr.get_write_buffer_size() > 0
        if how == 'abort':
            tr.abort()
        else:
            tr.close()
        closing = tr.is_closing()
        th, got = _drain(rf)
        caplog.clear()
        for _ in range(10):
            tr.write(b'dropped')
        warned = _warnings(caplog, PIPE_WARNING)
        exc = await pr.lost
        await loop.run_in_executor(None, th.join)
        rf.close()
        return closing, warned, exc, pr.events, bytes(got) == payload
    with caplog.at_level(logging.WARNING, logger='asyncio'):
        assert run(main) == (True, 5, None, ['made', ('lost', None)], True)


def test_write_pipe_close_then_abort_with_data_buffered(run):
    """abort() after close() drops what close() was waiting for:
    connection_lost(None) once, nothing buffered any more."""
    async def main():
        loop = asyncio.get_running_loop()
        rf, wf = _pipe_files()
        tr, pr = await loop.connect_write_pipe(PipeRecorder, wf)
        tr.write(pattern(1 << 20, seed=5))
        await _settle()                 # zcloop: a write request is in flight
        buffered = tr.get_write_buffer_size() > 0
        tr.close()
        closing = tr.is_closing()
        tr.abort()
        after_abort = (tr.is_closing(), tr.get_write_buffer_size())
        exc = await pr.lost
        await _settle()
        rf.close()
        return buffered, closing, after_abort, exc, pr.events, wf.closed
    assert run(main) == (True, True, (True, 0), None, ['made', ('lost', None)], True)


# ----------------------------------------------------------------------
# Datagram transports


class DgramRecorder(asyncio.DatagramProtocol):
    def __init__(self):
        self.events = []
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.events.append('made')

    def error_received(self, exc):
        self.events.append('error')

    def connection_lost(self, exc):
        self.events.append(('lost', type(exc).__name__ if exc else None))
        if not self.lost.done():
            self.lost.set_result(exc)


def test_datagram_close_then_abort(run):
    async def main():
        loop = asyncio.get_running_loop()
        st, sp = await loop.create_datagram_endpoint(DgramRecorder,
                                                     local_addr=('127.0.0.1', 0))
        ct, cp = await loop.create_datagram_endpoint(
            DgramRecorder, remote_addr=st.get_extra_info('sockname'))
        for i in range(50):
            ct.sendto(b'%05d' % i)
        ct.close()
        closing = ct.is_closing()
        ct.abort()
        after_abort = (ct.is_closing(), ct.get_write_buffer_size())
        await cp.lost
        ct.close()
        ct.abort()
        await _settle()
        st.close()
        await sp.lost
        return closing, after_abort, cp.events
    assert run(main) == (True, (True, 0), ['made', ('lost', None)])


def test_datagram_fatal_error_close_state(run):
    """A fatal sendto() error: closing at once, connection_lost(exc) once,
    close()/abort() afterwards change nothing."""
    async def main():
        loop = asyncio.get_running_loop()
        contexts = []
        loop.set_exception_handler(lambda _loop, ctx: contexts.append(ctx['message']))
        t, p = await loop.create_datagram_endpoint(DgramRecorder,
                                                   local_addr=('127.0.0.1', 0))
        t.sendto(b'x', 'not-a-tuple')
        closing = t.is_closing()
        t.close()
        t.abort()
        await p.lost
        t.close()
        t.abort()
        await _settle()
        return closing, p.events, contexts
    assert run(main) == (True, ['made', ('lost', 'TypeError')],
                         ['Fatal write error on datagram transport'])

"""Shared helpers for the stream / server / TLS / zero-copy tests.

Every scenario runs on real loopback (or Unix) sockets.  Differential tests
run the same coroutine on asyncio.SelectorEventLoop and on zcloop.Loop and
compare what the protocol observed.
"""
import asyncio
import contextlib
import gc
import hashlib
import os
import random
import resource
import socket
import ssl
import sys
import warnings

import pytest

import zcloop

LOOP_KINDS = ('asyncio', 'zcloop')

#: Hang guard for one scenario (never a performance assertion).
TIMEOUT = 30


def new_loop(kind, **kwargs):
    if kind == 'asyncio':
        return asyncio.SelectorEventLoop()
    if kind == 'zcloop':
        return zcloop.Loop(**kwargs)
    raise ValueError(kind)


class LoopFactory:
    """What the ``loop_factory`` fixture hands out: a named loop maker."""

    def __init__(self, kind, **kwargs):
        self.kind = kind
        self.kwargs = kwargs

    def __call__(self):
        return new_loop(self.kind, **self.kwargs)

    @property
    def is_zcloop(self):
        return self.kind == 'zcloop'

    def __repr__(self):
        return f'<LoopFactory {self.kind} {self.kwargs or ""}>'


def loop_factory_fixture():
    """Build a parametrized ``loop_factory`` fixture (ids asyncio / zcloop)."""

    @pytest.fixture(params=LOOP_KINDS)
    def loop_factory(request):
        return LoopFactory(request.param)

    return loop_factory


class RunResult:
    def __init__(self):
        self.errors = []        # exception-handler contexts


def run(factory, coro_fn, *args, timeout=TIMEOUT, allow_errors=False, **kwargs):
    """Run ``coro_fn(*args, **kwargs)`` on a fresh loop from ``factory``.

    Closes the loop afterwards (cancelling leftovers).  Unless
    ``allow_errors``, any call to the loop's exception handler fails the test.
    Returns the coroutine's result.
    """
    if isinstance(factory, str):
        factory = LoopFactory(factory)
    loop = factory()
    errors = []
    loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
    asyncio.set_event_loop(loop)
    try:
        async def guarded():
            return await asyncio.wait_for(coro_fn(*args, **kwargs), timeout)
        result = loop.run_until_complete(guarded())
    finally:
        try:
            _cancel_all(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
    if errors and not allow_errors:
        raise AssertionError(f'exception handler called on {factory!r}: {errors!r}')
    return result


def _cancel_all(loop):
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def fd_count():
    return len(os.listdir('/proc/self/fd'))


def raise_nofile(wanted):
    """Raise RLIMIT_NOFILE's soft limit towards ``wanted``; return the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(wanted, soft)
    if soft < wanted:
        soft = min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def has_ipv6():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(('::1', 0))
        return True
    except OSError:
        return False


def pattern(n, seed=0):
    """n deterministic pseudo-random bytes."""
    return random.Random(seed).randbytes(n)


def digest(data):
    return hashlib.sha256(data).hexdigest()


def tcp_listener(host='127.0.0.1', backlog=128):
    """A plain blocking listening socket (the 'raw peer' side)."""
    srv = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
    srv.bind((host, 0))
    srv.listen(backlog)
    return srv


def free_port(host='127.0.0.1'):
    """A port with nothing listening on it (connects are refused)."""
    with socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


async def accept_raw(loop, srv):
    """Accept one connection on a blocking listener without blocking the loop."""
    conn, _ = await loop.run_in_executor(None, srv.accept)
    return conn


def recv_exactly_blocking(sock, n, timeout=TIMEOUT):
    sock.settimeout(timeout)
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def recv_all_blocking(sock, timeout=TIMEOUT):
    sock.settimeout(timeout)
    buf = bytearray()
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return bytes(buf)
        buf += chunk


class Recorder(asyncio.Protocol):
    """Records every callback; collects received bytes."""

    def __init__(self, eof_keep_open=False, echo=False):
        self.loop = asyncio.get_running_loop()
        self.events = []
        self.data = bytearray()
        self.transport = None
        self.made = self.loop.create_future()
        self.lost = self.loop.create_future()
        self.eof = self.loop.create_future()
        self.eof_keep_open = eof_keep_open
        self.echo = echo
        self._want = None
        self.pauses = 0
        self.resumes = 0
        self.writable = asyncio.Event()
        self.writable.set()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append('made')
        self.made.set_result(transport)

    def data_received(self, data):
        assert type(data) is bytes, type(data)
        if not self.events or self.events[-1] != 'data':
            self.events.append('data')
        self.data += data
        if self.echo:
            self.transport.write(data)
        self._check_want()

    def eof_received(self):
        self.events.append('eof')
        if not self.eof.done():
            self.eof.set_result(None)
        self._check_want()
        return self.eof_keep_open

    def connection_lost(self, exc):
        self.events.append('lost')
        if not self.lost.done():
            self.lost.set_result(exc)
        self._check_want()

    def pause_writing(self):
        self.pauses += 1
        self.writable.clear()

    def resume_writing(self):
        self.resumes += 1
        self.writable.set()

    def _check_want(self):
        if self._want is not None:
            n, fut = self._want
            if len(self.data) >= n or self.lost.done() or self.eof.done():
                self._want = None
                if not fut.done():
                    fut.set_result(None)

    async def wait_bytes(self, n):
        if len(self.data) < n and not self.lost.done() and not self.eof.done():
            fut = self.loop.create_future()
            self._want = (n, fut)
            await fut
        return bytes(self.data[:n])


class BufferedRecorder(asyncio.BufferedProtocol):
    def __init__(self, bufsize=7):
        self.loop = asyncio.get_running_loop()
        self.buf = bytearray(bufsize)
        self.data = bytearray()
        self.calls = 0
        self.events = []
        self.lost = self.loop.create_future()
        self.eof = self.loop.create_future()
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        self.events.append('made')

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        assert 0 < nbytes <= len(self.buf)
        self.calls += 1
        if not self.events or self.events[-1] != 'data':
            self.events.append('data')
        self.data += self.buf[:nbytes]

    def eof_received(self):
        self.events.append('eof')
        self.eof.set_result(None)

    def connection_lost(self, exc):
        self.events.append('lost')
        self.lost.set_result(exc)


async def echo_server(loop, host='127.0.0.1', **kwargs):
    return await loop.create_server(lambda: Recorder(echo=True), host, 0, **kwargs)


def normalize(text, *values):
    """Replace run-specific values (ports, paths) in a message."""
    for v in values:
        text = text.replace(str(v), '<X>')
    return text


@contextlib.contextmanager
def no_resource_warnings():
    gc.collect()      # garbage of earlier tests is not ours
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', ResourceWarning)
        yield caught
        gc.collect()
    bad = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not bad, [str(w.message) for w in bad]


IS_312 = sys.version_info >= (3, 12)
IS_313 = sys.version_info >= (3, 13)


async def raw_peer(loop, protocol_factory=Recorder, host='127.0.0.1', rcvbuf=None):
    """Connect a loop transport to a plain blocking socket (with SO_RCVBUF
    ``rcvbuf``, set before the handshake as TCP wants it).

    Returns (transport, protocol, raw_socket); the caller closes raw_socket.
    """
    srv = tcp_listener(host)
    if rcvbuf is not None:
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        fut = loop.run_in_executor(None, srv.accept)
        tr, pr = await loop.create_connection(protocol_factory, host, srv.getsockname()[1])
        conn, _ = await fut
    finally:
        srv.close()
    return tr, pr, conn


async def unix_raw_peer(loop, path, protocol_factory=Recorder):
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen()
    try:
        fut = loop.run_in_executor(None, srv.accept)
        tr, pr = await loop.create_unix_connection(protocol_factory, path)
        conn, _ = await fut
    finally:
        srv.close()
        os.unlink(path)
    return tr, pr, conn


async def loop_pair(loop, server_factory=Recorder, client_factory=Recorder):
    """Server and client transports of one connection, both on ``loop``.

    Returns (server_protocol, client_transport, client_protocol, server)."""
    accepted = loop.create_future()

    def factory():
        p = server_factory()
        if not accepted.done():
            accepted.set_result(p)
        return p
    server = await loop.create_server(factory, '127.0.0.1', 0)
    port = server.sockets[0].getsockname()[1]
    tr, pr = await loop.create_connection(client_factory, '127.0.0.1', port)
    sp = await accepted
    return sp, tr, pr, server


class Hasher(asyncio.Protocol):
    """Hashes everything received; ``done`` resolves at EOF with
    (nbytes, sha256 hex)."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.h = hashlib.sha256()
        self.n = 0
        self.done = self.loop.create_future()
        self.lost = self.loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.h.update(data)
        self.n += len(data)

    def eof_received(self):
        if not self.done.done():
            self.done.set_result((self.n, self.h.hexdigest()))

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result((self.n, self.h.hexdigest()))
        self.lost.set_result(exc)


def tls_context_pair():
    """(server, client) SSLContexts for 'localhost' / 127.0.0.1 from a fresh
    trustme CA (the test is skipped when trustme is not installed)."""
    import pytest
    trustme = pytest.importorskip('trustme')
    ca = trustme.CA()
    cert = ca.issue_cert('localhost', '127.0.0.1')
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx

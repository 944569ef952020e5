# Listening sockets (multishot ACCEPT); outgoing connects are in futureops.pyx.

cdef class _AcceptOp(UringOp):

    cdef arm(self):
        cdef io_uring_sqe *sqe
        if self.stopped or self.loop._closed:
            return
        sqe = self.loop._sqe()
        if self.loop._feature('accept_multishot'):
            io_uring_prep_multishot_accept(sqe, self.fd, NULL, NULL,
                                           SOCK_NONBLOCK | SOCK_CLOEXEC)
        else:
            io_uring_prep_accept(sqe, self.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)
        self.loop._submit(self, sqe)

    cdef stop(self):
        self.stopped = True
        if self.retry_handle is not None:
            self.retry_handle.cancel()
            self.retry_handle = None
        self.loop._cancel(self)

    def _retry(self):
        self.retry_handle = None
        self.arm()

    cdef int on_cqe(self, RingLoop loop, uint64_t user_data, int32_t res,
                    uint32_t flags) except -1:
        cdef bint final = not (flags & IORING_CQE_F_MORE)
        if res >= 0:
            if self.stopped:
                os.close(res)
            else:
                self._accepted(res)
            if final:
                self.arm()
            return 0
        if self.stopped or res == -ECANCELED:
            return 0
        err = -res
        if err in (EMFILE, ENFILE, ENOBUFS, ENOMEM):
            # Out of fds or memory: as asyncio, log and retry later so the
            # server survives and accepts again once resources free up.
            self.loop.call_exception_handler({
                'message': 'socket.accept() out of system resource',
                'exception': OSError(err, os.strerror(err)),
                'socket': TransportSocket(self.sock),
            })
            self.loop._cancel(self)
            if self.retry_handle is None:
                self.retry_handle = self.loop.call_later(
                    aio_constants.ACCEPT_RETRY_DELAY, self._retry)
            return 0
        if final:
            # ECONNABORTED, EAGAIN, EPERM (firewall), ...: keep accepting.
            self.arm()
        return 0

    def _accepted(self, int fd):
        # asyncio sets each connection up in a task of its own: in a copy
        # of the context that started serving, where protocol_factory()
        # runs and the transport takes its context from.
        context = self.context.copy()
        PyContext_Enter(<PyObject*>context)
        try:
            self._accept_in_context(fd)
        finally:
            PyContext_Exit(<PyObject*>context)

    def _accept_in_context(self, int fd):
        sock = self.sock
        conn = socket.socket(sock.family, sock.type, sock.proto, fileno=fd)
        protocol = None
        transport = None
        try:
            protocol = self.protocol_factory()
            if self.ssl:
                waiter = self.loop.create_future()
                transport = _make_ssl_transport(
                    self.loop, conn, protocol, self.ssl, waiter, server_side=True,
                    server=self.server,
                    ssl_handshake_timeout=self.ssl_handshake_timeout,
                    ssl_shutdown_timeout=self.ssl_shutdown_timeout)
                waiter.add_done_callback(_accept_waiter_done)
            else:
                # No waiter: nobody awaits it, and reading starts sooner.
                transport = _make_stream_transport(self.loop, conn, protocol, None,
                                                   None, self.server)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            if transport is None:
                conn.close()
            else:
                transport.close()
            if self.loop._debug:
                context = {
                    'message': 'Error on transport creation for incoming connection',
                    'exception': exc,
                }
                if protocol is not None:
                    context['protocol'] = protocol
                if transport is not None:
                    context['transport'] = transport
                self.loop.call_exception_handler(context)


def _accept_waiter_done(fut):
    # A failed TLS handshake is the protocol's business; just consume it.
    if not fut.cancelled():
        fut.exception()


class Server(aio_events.AbstractServer):
    """asyncio.Server's behaviour for zcloop's listening sockets."""

    def __init__(self, loop, sockets, protocol_factory, ssl_context, backlog,
                 ssl_handshake_timeout, ssl_shutdown_timeout=None):
        self._loop = loop
        self._sockets = sockets
        self._active_count = 0
        self._waiters = []
        self._protocol_factory = protocol_factory
        self._backlog = backlog
        self._ssl_context = ssl_context
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout
        self._serving = False
        self._serving_forever_fut = None
        self._accepts = {}
        self._clients = weakref.WeakSet()

    def __repr__(self):
        return f'<{self.__class__.__name__} sockets={self.sockets!r}>'

    def _attach(self, transport=None):
        assert self._sockets is not None
        self._active_count += 1
        if transport is not None:
            self._clients.add(transport)

    def _detach(self, transport=None):
        assert self._active_count > 0
        self._active_count -= 1
        if transport is not None:
            self._clients.discard(transport)
        if self._active_count == 0 and self._sockets is None:
            self._wakeup()

    def _wakeup(self):
        waiters = self._waiters
        self._waiters = None
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(waiter)

    def _start_serving(self):
        cdef _AcceptOp op
        if self._serving:
            return
        self._serving = True
        for sock in self._sockets:
            sock.listen(self._backlog)
            op = _AcceptOp()
            op.loop = self._loop
            op.sock = sock
            op.fd = sock.fileno()
            op.protocol_factory = self._protocol_factory
            op.ssl = self._ssl_context
            op.server = self
            op.ssl_handshake_timeout = self._ssl_handshake_timeout
            op.ssl_shutdown_timeout = self._ssl_shutdown_timeout
            op.context = PyContext_CopyCurrent()
            self._accepts[sock] = op
            op.arm()

    def get_loop(self):
        return self._loop

    def is_serving(self):
        return self._serving

    @property
    def sockets(self):
        if self._sockets is None:
            return ()
        return tuple(TransportSocket(s) for s in self._sockets)

    def close(self):
        sockets = self._sockets
        if sockets is None:
            return
        self._sockets = None
        for sock in sockets:
            op = self._accepts.pop(sock, None)
            if op is not None:
                (<_AcceptOp>op).stop()
            _cleanup_unix_socket(self._loop, sock)
            if op is not None:
                # The armed ACCEPT holds the file until its cancel completes
                # (an iteration later): stop listening now, as close() does.
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            sock.close()
        self._serving = False
        if (self._serving_forever_fut is not None and
                not self._serving_forever_fut.done()):
            self._serving_forever_fut.cancel()
            self._serving_forever_fut = None
        if self._active_count == 0:
            self._wakeup()

    def close_clients(self):
        for transport in list(self._clients):
            transport.close()

    def abort_clients(self):
        for transport in list(self._clients):
            transport.abort()

    async def start_serving(self):
        self._start_serving()
        # One iteration so the accepts are armed, as asyncio does.
        await aio_tasks.sleep(0)

    async def serve_forever(self):
        if self._serving_forever_fut is not None:
            raise RuntimeError(
                f'server {self!r} is already being awaited on serve_forever()')
        if self._sockets is None:
            raise RuntimeError(f'server {self!r} is closed')
        self._start_serving()
        self._serving_forever_fut = self._loop.create_future()
        try:
            await self._serving_forever_fut
        except aio_exceptions.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever_fut = None

    async def wait_closed(self):
        # 3.12.1 fixed wait_closed() to wait for the connections too.
        if self._waiters is None:
            return
        if self._sockets is None and sys.version_info < (3, 12, 1):
            return
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self.close()
        await self.wait_closed()


def _cleanup_unix_socket(RingLoop loop, sock):
    # create_unix_server(cleanup_socket=True): remove our socket file, but
    # only if it is still ours (same inode); gone when close() returns, as
    # asyncio's.  Synchronous on purpose (docs/design.md, "Blocking calls").
    inode = loop._unix_server_sockets.pop(sock, None)
    if inode is None:
        return
    path = sock.getsockname()
    try:
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:
        logger.error('Unable to clean up listening UNIX socket %r: %r', path, err)

# Requests a coroutine awaits through a future (_FutureOp: the CQE resolves
# the future, cancelling the future cancels the request), one ring_<op>()
# helper each: ring_poll, ring_connect, ring_splice return the future;
# ring_stat, ring_unlink are coroutines (without the ring op they call os.*).
# Then the one readiness retry of every sock_*() coroutine, over ring_poll.


cdef class _PollWait(_FutureOp):
    # A one-shot IORING_OP_POLL_ADD; the future gets the revents mask.
    pass


cdef object ring_poll(RingLoop loop, int fd, uint32_t events):
    cdef _PollWait op = _PollWait.__new__(_PollWait)
    cdef io_uring_sqe *sqe = loop._sqe()
    io_uring_prep_poll_add(sqe, fd, events)
    return op._track_future(loop, sqe)


cdef class _ConnectOp(_FutureOp):

    cdef object _result(self, int32_t res):
        return None

    cdef object _error(self, int32_t res):
        if isinstance(self.address, (str, bytes)):
            # AF_UNIX: asyncio's connect() fails synchronously, plain message.
            return OSError(-res, os.strerror(-res))
        return OSError(-res, f'Connect call failed {self.address}')


cdef object ring_connect(RingLoop loop, object sock, object address):
    """Connect `sock` (non-blocking) with IORING_OP_CONNECT; return a future."""
    cdef _ConnectOp op = _ConnectOp()
    cdef io_uring_sqe *sqe
    sockaddr_from_py(sock.family, address, &op.addr, &op.addrlen)
    op.address = address
    sqe = loop._sqe()
    io_uring_prep_connect(sqe, sock.fileno(), <sockaddr*>&op.addr, op.addrlen)
    return op._track_future(loop, sqe)


cdef class _SpliceOp(_FutureOp):
    # One SPLICE; the future gets the byte count.
    pass


cdef object ring_splice(RingLoop loop, int fd_in, int64_t off_in, int fd_out, unsigned nbytes):
    cdef _SpliceOp op = _SpliceOp()
    cdef io_uring_sqe *sqe = loop._sqe()
    io_uring_prep_splice(sqe, fd_in, off_in, fd_out, -1, nbytes, SPLICE_F_MOVE)
    return op._track_future(loop, sqe)


cdef class _PathOp(_FutureOp):
    # STATX or UNLINKAT of a path on the ring (create_unix_server): a stat of
    # a socket path can block (network filesystems), and tools that flag
    # blocking calls in the loop thread only forgive asyncio's own frames.
    # The kernel reads `path` and fills `buf` until the final CQE.

    cdef object _result(self, int32_t res):
        return self.buf.stx_mode, self.buf.stx_ino

    cdef object _error(self, int32_t res):
        # os.stat()'s exception: FileNotFoundError etc., with the filename.
        return OSError(-res, os.strerror(-res), self.filename)


cdef _PathOp _path_op(object path):
    cdef _PathOp op = _PathOp()
    op.path = os.fsencode(path)
    op.filename = path
    return op


async def ring_stat(RingLoop loop, path):
    """(st_mode, st_ino) of path, as os.stat() (which it is without STATX)."""
    cdef _PathOp op
    cdef io_uring_sqe *sqe
    if not loop._op_ok(IORING_OP_STATX):
        st = os.stat(path)
        return st.st_mode, st.st_ino
    op = _path_op(path)
    sqe = loop._sqe()
    io_uring_prep_statx(sqe, AT_FDCWD, op.path, 0, STATX_TYPE | STATX_INO, &op.buf)
    return await op._track_future(loop, sqe)


async def ring_unlink(RingLoop loop, path):
    """os.remove(path) on the ring."""
    cdef _PathOp op
    cdef io_uring_sqe *sqe
    if not loop._op_ok(IORING_OP_UNLINKAT):
        os.remove(path)
        return
    op = _path_op(path)
    sqe = loop._sqe()
    io_uring_prep_unlinkat(sqe, AT_FDCWD, op.path, 0)
    await op._track_future(loop, sqe)


# -- The sock_*() coroutines' readiness retry (api_streams.pyx,
# api_datagram.pyx), asyncio's selector-loop semantics: check the socket and
# try the non-blocking call (sock_try); only if it would block, refuse an fd
# that a live transport owns (RuntimeError), then wait for readiness and try
# again until it does not block (sock_retry).  A caller writes
#
#     res = sock_try(loop, sock, call, args)
#     if res is WOULD_BLOCK:
#         res = await sock_retry(loop, sock, POLLIN or POLLOUT, call, args)
#
# so a first try that succeeds costs no coroutine beyond the caller's.  A
# call may also return WOULD_BLOCK itself: it made progress but is not done
# (sock_sendall after a partial send).  The wait is ring_poll(), a one-shot
# POLL_ADD: the ring itself reads and writes nothing, so a cancelled waiter
# has consumed no data and sends nothing more (asyncio's guarantee; a RECV or
# SEND racing a cancellation could).

cdef object WOULD_BLOCK = object()


cdef object sock_check(RingLoop loop, object sock):
    # What every asyncio sock_*() checks first.
    _check_ssl_socket(sock)
    if loop._debug and sock.gettimeout() != 0:
        raise ValueError("the socket must be non-blocking")


cdef object sock_try(RingLoop loop, object sock, object call, tuple args):
    sock_check(loop, sock)
    try:
        return call(*args)
    except (BlockingIOError, InterruptedError):
        return WOULD_BLOCK


async def sock_retry(RingLoop loop, sock, uint32_t events, call, tuple args):
    fd = sock.fileno()
    loop._ensure_fd_no_transport(fd)
    while True:
        await ring_poll(loop, fd, events)
        try:
            res = call(*args)
        except (BlockingIOError, InterruptedError):
            continue
        if res is not WOULD_BLOCK:
            return res


def _sock_connected(sock, address):
    # The outcome of a connect() that would have blocked (POLLOUT came).
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err != 0:
        raise OSError(err, f'Connect call failed {address}')

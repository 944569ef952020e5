# Requests a coroutine awaits through a future (_FutureOp: the CQE resolves
# the future, cancelling the future cancels the request), one ring_<op>()
# helper each, returning the future.
#
# ring_poll(): one-shot readiness wait for the sock_*() coroutines: they try
# the non-blocking syscall first, and only when it would block await
# ring_poll(loop, fd, POLLIN or POLLOUT) and try again.  Nothing is read or
# written by the ring itself, so cancelling a waiter consumes no data (the
# guarantee asyncio's sock_recv*() give).

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

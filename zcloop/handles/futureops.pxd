cdef class _PollWait(_FutureOp):
    pass


# Wait (once) until ``fd`` reports one of ``events`` (POLLIN/POLLOUT/...):
# returns a future resolved with the poll revents mask, or with OSError if
# the poll fails.  Cancelling the future cancels the poll on the ring.
cdef object ring_poll(RingLoop loop, int fd, uint32_t events)


cdef class _ConnectOp(_FutureOp):
    cdef:
        sockaddr_storage addr
        socklen_t addrlen
        object address


cdef class _SpliceOp(_FutureOp):
    pass


cdef class _PathOp(_FutureOp):
    cdef:
        bytes path
        object filename
        statx buf

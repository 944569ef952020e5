# One-shot readiness wait on the ring, for the sock_*() coroutines: try the
# non-blocking syscall first, and only when it would block, await
# wait_fd(loop, fd, POLLIN or POLLOUT) and try again.  Nothing is read or
# written by the ring itself, so cancelling a waiter consumes no data (the
# guarantee asyncio's sock_recv*() give).

cdef class _PollWait(_FutureOp):
    # A one-shot IORING_OP_POLL_ADD; the future gets the revents mask.
    pass


cdef object wait_fd(RingLoop loop, int fd, uint32_t events):
    cdef _PollWait op = _PollWait.__new__(_PollWait)
    cdef io_uring_sqe *sqe = loop._sqe()
    io_uring_prep_poll_add(sqe, fd, events)
    return op._track_future(loop, sqe)

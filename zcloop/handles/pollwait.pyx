# One-shot readiness wait on the ring, for the sock_*() coroutines: try the
# non-blocking syscall first, and only when it would block, await
# wait_fd(loop, fd, POLLIN or POLLOUT) and try again.  Nothing is read or
# written by the ring itself, so cancelling a waiter consumes no data (the
# guarantee asyncio's sock_recv*() give).

@cython.final
cdef class _PollWait(UringOp):
    # A one-shot IORING_OP_POLL_ADD whose completion resolves ``fut``.
    # ud: user_data while the poll is in flight, 0 after its CQE.

    cdef int on_cqe(self, RingLoop loop, uint64_t user_data, int32_t res,
                    uint32_t flags) except -1:
        fut = self.fut
        self.fut = None
        self.loop = None
        self.ud = 0
        if fut is None or fut.done():
            return 0
        if res >= 0:
            fut.set_result(res)
        elif res == -ECANCELED:
            fut.cancel()
        else:
            fut.set_exception(OSError(-res, os.strerror(-res)))
        return 0

    cdef int on_close(self, RingLoop loop) except -1:
        self.fut = None
        self.loop = None
        self.ud = 0
        return 0

    def _fut_done(self, fut):
        # Cancelled (or otherwise finished) while the poll is still armed:
        # take the poll off the ring.  A stale user_data is harmless: the
        # slot generation no longer matches.
        cdef RingLoop loop = self.loop
        if self.ud and loop is not None:
            loop._cancel_op(self.ud)


cdef object wait_fd(RingLoop loop, int fd, uint32_t events):
    cdef _PollWait op = _PollWait.__new__(_PollWait)
    cdef io_uring_sqe *sqe
    fut = aio_futures.Future(loop=loop)
    sqe = loop._sqe()
    io_uring_prep_poll_add(sqe, fd, events)
    op.ud = loop._track(op)
    io_uring_sqe_set_data64(sqe, op.ud)
    op.loop = loop
    op.fut = fut
    fut.add_done_callback(op._fut_done)
    return fut

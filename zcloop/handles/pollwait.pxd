cdef class _PollWait(_FutureOp):
    pass


# Wait (once) until ``fd`` reports one of ``events`` (POLLIN/POLLOUT/...):
# returns a future resolved with the poll revents mask, or with OSError if
# the poll fails.  Cancelling the future cancels the poll on the ring.
cdef object wait_fd(RingLoop loop, int fd, uint32_t events)

cdef class UringOp:
    # One kind of ring request.  The loop keeps the op referenced from
    # submission until its final CQE (one without IORING_CQE_F_MORE).
    # ud: the user_data of the request in flight, set by loop._submit() and
    # cleared by the dispatcher on its final CQE (0: none in flight).
    cdef uint64_t ud
    cdef int on_cqe(self, RingLoop loop, uint64_t user_data, int32_t res,
                    uint32_t flags) except -1
    cdef int on_close(self, RingLoop loop) except -1


cdef class _WakeupRead(UringOp):
    pass


cdef class _SignalRead(UringOp):
    pass


cdef class _FdWatcher(UringOp):
    cdef:
        int fd
        object fileobj
        Handle reader
        Handle writer
        uint32_t armed_mask
        bint queued

    cdef uint32_t wanted_mask(self)


cdef class _FutureOp(UringOp):
    # A ring request awaited through a future.
    cdef:
        RingLoop loop
        object fut

    cdef object _track_future(self, RingLoop loop, io_uring_sqe *sqe)
    cdef object _result(self, int32_t res)
    cdef object _error(self, int32_t res)

cdef class ReadPipeTransport(StreamTransport):
    cdef bint _error_is_quiet(self, object exc)


cdef class _PipeHangupOp(UringOp):
    cdef WritePipeTransport transport


cdef class WritePipeTransport(StreamTransport):
    cdef:
        _PipeHangupOp _hup_op   # the POLL_ADD watching for the hangup, if any

    cdef _watch_hangup(self)
    cdef _drop_write(self)

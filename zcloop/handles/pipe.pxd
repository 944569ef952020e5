cdef class ReadPipeTransport(StreamTransport):
    cdef _fatal_error(self, object exc, str message)


cdef class _PipeHangupOp(UringOp):
    cdef WritePipeTransport transport


cdef class WritePipeTransport(StreamTransport):
    cdef:
        _PipeHangupOp _hup_op
        uint64_t _hup_ud

    cdef _watch_hangup(self)

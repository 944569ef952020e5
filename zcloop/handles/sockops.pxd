cdef class _SendAllOp(UringOp):
    cdef:
        Py_buffer view
        bint has_view
        Py_ssize_t offset
        object fut
        uint64_t ud
        RingLoop loop
        object sock

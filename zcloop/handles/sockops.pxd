cdef class _SendAllOp(_FutureOp):
    cdef:
        Py_buffer view
        bint has_view
        Py_ssize_t offset
        object sock

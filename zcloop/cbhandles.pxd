cdef class Handle:
    cdef:
        object _callback
        object _args
        object _context
        RingLoop _loop
        bint _cancelled
        object _repr
        readonly object _source_traceback
        # asyncio's handles are weak-referenceable (plain Python objects).
        object __weakref__

    cdef _run(self)
    cdef _set_source_traceback(self)


cdef class TimerHandle(Handle):
    cdef:
        readonly double _when
        bint _scheduled

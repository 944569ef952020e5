cdef class RingTransport:
    # What every zcloop transport shares: protocol, extra info, write-buffer
    # flow control, close/abort bookkeeping (asyncio's _SelectorTransport and
    # _FlowControlMixin semantics).
    cdef:
        RingLoop _loop
        object _protocol
        bint _protocol_connected
        # Context the protocol's callbacks run in (asyncio: that of the
        # reader handle, a copy of the creator's; see docs/design.md).
        object _context
        object _sock
        int _fd
        dict _extra
        object _server
        bint _closing
        int _conn_lost
        bint _protocol_paused
        Py_ssize_t _high_water
        Py_ssize_t _low_water
        # zero-copy sends: one admission policy for every transport
        # (docs/design.md "Zero-copy")
        bint _zc_capable                # the socket and the kernel allow SEND(MSG)_ZC
        bint _zc_write                  # plain write()/sendto() data may go zero-copy
        Py_ssize_t _zc_threshold        # smallest payload sent zero-copy; 0 = never
        Py_ssize_t _zc_pinned           # bytes the kernel still references
        str _zc_refused                 # errno name of the socket's zero-copy refusal
        Py_ssize_t _st_demotions
        object __weakref__

    cdef _init_transport(self, RingLoop loop, object sock, object protocol, object extra,
                         object server)
    cdef Py_ssize_t _buffer_size(self)
    cdef list _repr_head(self)
    cdef _maybe_pause_protocol(self)
    cdef _maybe_resume_protocol(self)
    cdef _set_limits(self, object high, object low)
    cdef bint _error_is_quiet(self, object exc)
    cdef _fatal_error(self, object exc, str message)
    cpdef _force_close(self, object exc)
    cdef _schedule_connection_lost(self, object exc)
    cdef _close_socket(self)
    cdef _flush(self)
    cdef bint _zc_admits(self, Py_ssize_t nbytes, bint plain)
    cdef bint _zc_fits(self, Py_ssize_t nbytes)
    cdef _zc_pin(self, Py_ssize_t nbytes, bint fixed)
    cdef _zc_unpin(self, Py_ssize_t nbytes, bint fixed)
    cdef bint _zc_refusal(self, int32_t res, Py_ssize_t held) except -1
    cdef _demote(self)

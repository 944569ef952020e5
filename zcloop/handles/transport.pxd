# A transport's close state (docs/design.md "close/abort"); it only moves
# forward, and only through RingTransport's close path.
cdef enum TransportState:
    TS_OPEN         # reading and writing
    TS_CLOSING      # close(): reading stopped, buffered data still goes out
    TS_LOST         # connection_lost() scheduled: nothing more is sent or delivered
    TS_CLOSED       # the socket is closed (after connection_lost(), or reset by loop.close())


cdef class RingTransport:
    # What every zcloop transport shares: protocol, extra info, write-buffer
    # flow control, the close state and its one path (asyncio's
    # _SelectorTransport and _FlowControlMixin semantics).
    cdef:
        RingLoop _loop
        object _protocol
        # Context the protocol's callbacks run in (asyncio: that of the
        # reader handle, a copy of the creator's; see docs/design.md).
        object _context
        object _sock
        int _fd
        dict _extra
        object _server
        TransportState _state
        # Writes dropped after close, counted for asyncio's warning after
        # LOG_THRESHOLD_FOR_CONNLOST_WRITES of them (_drop_write).
        Py_ssize_t _dropped_writes
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
    # The close path (transport.pyx "close state"); the kinds fill in:
    cdef _stop_recv(self)                   # close(), abort(): no more reading
    cdef bint _sending(self)                # close(): anything left to send?
    cdef _abort_writes(self, object exc)    # abort(): drop the buffer, cancel sends
    cpdef _force_close(self, object exc)
    cdef _schedule_connection_lost(self, object exc)
    cdef _close_socket(self)
    cdef _drop_write(self)
    cdef _on_loop_close(self)
    cdef bint _reset(self)
    cdef _flush(self)
    cdef bint _zc_admits(self, Py_ssize_t nbytes, bint plain)
    cdef bint _zc_fits(self, Py_ssize_t nbytes)
    cdef _zc_pin(self, Py_ssize_t nbytes, bint fixed)
    cdef _zc_unpin(self, Py_ssize_t nbytes, bint fixed)
    cdef bint _zc_refusal(self, int32_t res, Py_ssize_t held) except -1
    cdef _demote(self)

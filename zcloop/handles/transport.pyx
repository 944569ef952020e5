# Bytes one transport may have pinned by zero-copy sends at a time.
cdef Py_ssize_t ZC_MAX_PINNED_PER_TRANSPORT = 4 * 1024 * 1024


@cython.no_gc_clear
cdef class RingTransport:

    def __cinit__(self):
        self._fd = -1
        self._high_water = 64 * 1024
        self._low_water = 16 * 1024

    cdef _init_transport(self, RingLoop loop, object sock, object protocol, object extra,
                         object server):
        self._loop = loop
        self._context = PyContext_CopyCurrent()
        self._extra = dict(extra) if extra else {}
        self._sock = sock
        self._fd = sock.fileno()
        self._extra['socket'] = TransportSocket(sock)
        try:
            self._extra['sockname'] = sock.getsockname()
        except OSError:
            self._extra['sockname'] = None
        if 'peername' not in self._extra:
            try:
                self._extra['peername'] = sock.getpeername()
            except OSError:
                self._extra['peername'] = None
        self.set_protocol(protocol)
        self._server = server
        if server is not None:
            server._attach(self)
        loop._transports[self._fd] = self

    cdef list _repr_head(self):
        """The opening of every transport's repr, as asyncio's: class,
        closed/closing, fd."""
        info = [self.__class__.__name__]
        if self._state == TS_CLOSED:
            info.append('closed')
        elif self._state != TS_OPEN:
            info.append('closing')
        info.append(f'fd={self._fd}')
        return info

    def __repr__(self):
        info = self._repr_head()
        if self._loop is not None and not self._loop.is_closed():
            info.append(f'bufsize={self._buffer_size()}')
        return '<{}>'.format(' '.join(info))

    def __del__(self):
        if self._sock is not None:
            warnings.warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._close_socket()

    # -- BaseTransport API

    def get_extra_info(self, name, default=None):
        """Get optional transport information; 'zcloop' gives zc_stats()."""
        if name == 'zcloop':
            return self.zc_stats()
        return self._extra.get(name, default)

    # -- zero-copy admission (docs/design.md "Zero-copy").  Check first
    # (_zc_admits, _zc_fits: nothing reserved), reserve once the request is
    # on the ring (_zc_pin: nothing can raise between the two), release at
    # its final CQE (_zc_unpin).

    cdef bint _zc_admits(self, Py_ssize_t nbytes, bint plain):
        """May ``nbytes`` go zero-copy on this transport (switches and
        threshold only)?  ``plain``: bytes of write()/sendto(), which stop
        going zero-copy once the transport is demoted."""
        return (self._zc_capable and (self._zc_write or not plain) and
                0 < self._zc_threshold <= nbytes)

    cdef bint _zc_fits(self, Py_ssize_t nbytes):
        """Do the transport's and the loop's pinned budgets have room?"""
        return (self._zc_pinned + nbytes <= ZC_MAX_PINNED_PER_TRANSPORT and
                self._loop._zc_fits(nbytes))

    cdef _zc_pin(self, Py_ssize_t nbytes, bint fixed):
        """A zero-copy request of ``nbytes`` is on the ring.  ``fixed``: from
        a registered buffer, pinned once for its pool (no memlock budget)."""
        self._zc_pinned += nbytes
        if not fixed:
            self._loop._zc_reserve(nbytes)

    cdef _zc_unpin(self, Py_ssize_t nbytes, bint fixed):
        """Its final CQE: the kernel let go of the bytes."""
        self._zc_pinned -= nbytes
        if not fixed:
            self._loop._zc_unreserve(nbytes)

    cdef bint _zc_refusal(self, int32_t res, Py_ssize_t held) except -1:
        """A zero-copy request failed with ``res``.  A refusal (nothing was
        sent) returns True after making sure the retry, which the caller
        sends, cannot be refused the same way; ``held``: the request's bytes
        if they are still reserved (for the ENOMEM budget cut)."""
        cdef RingLoop loop = self._loop
        if res == -EINVAL and loop._zc_report_usage:
            # A kernel before 6.2 rejects the REPORT_USAGE flag.
            loop._zc_report_usage = False
        elif res == -ENOMEM:
            # Memlock: the budget shrinks so the retry goes by copy.
            loop._zc_nomem(held)
        elif res == -EOPNOTSUPP or res == -EINVAL or res == -ENOBUFS:
            # The socket refuses (no SOCK_SUPPORT_ZC: MPTCP, AF_UNIX, ...):
            # no zero-copy on it any more, write_zc() included.
            self._zc_capable = False
            self._zc_refused = _errno_name(-res)
            self._demote()
        else:
            return False
        return True

    cdef _demote(self):
        """Plain data goes by copy from now on (it was copied anyway)."""
        if self._zc_write:
            self._zc_write = False
            self._st_demotions += 1

    # -- zero-copy tuning

    def set_zc_threshold(self, Py_ssize_t nbytes):
        """Smallest payload this transport sends zero-copy (0 disables
        zero-copy here)."""
        if nbytes < 0:
            raise ValueError('threshold must be >= 0')
        self._zc_threshold = nbytes

    def get_zc_threshold(self):
        return self._zc_threshold

    def get_pinned_size(self):
        """Bytes sent zero-copy that the kernel still references."""
        return self._zc_pinned

    def zc_stats(self):
        return {}

    def set_protocol(self, protocol):
        self._protocol = protocol

    def get_protocol(self):
        return self._protocol

    # -- write-buffer flow control (asyncio.transports._FlowControlMixin)

    cdef Py_ssize_t _buffer_size(self):
        return 0

    def get_write_buffer_size(self):
        return self._buffer_size()

    def get_write_buffer_limits(self):
        return (self._low_water, self._high_water)

    cdef _set_limits(self, object high, object low):
        self._high_water, self._low_water = _flowcontrol_defaults(high, low, 64)

    def set_write_buffer_limits(self, high=None, low=None):
        self._set_limits(high, low)
        self._maybe_pause_protocol()

    cdef _maybe_pause_protocol(self):
        if self._buffer_size() <= self._high_water or self._protocol_paused:
            return
        self._protocol_paused = True
        _call_write_flow_control(self._loop, self._protocol, True, self, self._protocol)

    cdef _maybe_resume_protocol(self):
        if self._protocol_paused and self._buffer_size() <= self._low_water:
            self._protocol_paused = False
            _call_write_flow_control(self._loop, self._protocol, False, self, self._protocol)

    # -- errors and teardown

    cdef bint _error_is_quiet(self, object exc):
        # asyncio only logs (in debug mode) a connection's OSErrors; anything
        # else goes to the exception handler.
        return isinstance(exc, OSError)

    cdef _fatal_error(self, object exc, str message):
        if self._error_is_quiet(exc):
            if self._loop._debug:
                logger.debug("%r: %s", self, message, exc_info=True)
        else:
            self._loop.call_exception_handler({
                'message': message,
                'exception': exc,
                'transport': self,
                'protocol': self._protocol,
            })
        self._force_close(exc)

    # -- close state (docs/design.md "close/abort").  _state only moves
    # forward, and only in these methods:
    #   close()                       OPEN -> CLOSING, or -> LOST if nothing is left to send
    #   _schedule_connection_lost()   -> LOST (a drained CLOSING, a read pipe's EOF)
    #   _force_close(): abort(), _fatal_error(), a write pipe's hangup
    #                                 OPEN/CLOSING -> LOST
    #   _call_connection_lost()       connection_lost(), then _close_socket(): -> CLOSED
    #   _reset(): loop.close()        -> CLOSED if zero-copy pages are still pinned
    # The transport kinds fill in _stop_recv(), _sending() and _abort_writes().

    def is_closing(self):
        return self._state != TS_OPEN

    def close(self):
        if self._state != TS_OPEN:
            return
        self._state = TS_CLOSING
        self._stop_recv()
        if not self._sending():
            self._schedule_connection_lost(None)

    def abort(self):
        self._force_close(None)

    cpdef _force_close(self, object exc):
        if self._state >= TS_LOST:
            return
        self._abort_writes(exc)
        if self._state == TS_OPEN:      # else close() stopped reading already
            self._stop_recv()
        self._schedule_connection_lost(exc)

    cdef _stop_recv(self):
        pass

    cdef bint _sending(self):
        return False

    cdef _abort_writes(self, object exc):
        pass

    cdef _schedule_connection_lost(self, object exc):
        self._state = TS_LOST
        self._loop._call_soon(self._call_connection_lost, (exc,), None)

    def _call_connection_lost(self, exc):
        # Scheduled by _schedule_connection_lost(), or called at once where
        # asyncio does (a datagram transport's close() once drained).
        if self._state < TS_LOST:
            self._state = TS_LOST
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._close_socket()
            self._protocol = None
            server = self._server
            if server is not None:
                self._server = None
                server._detach(self)

    cdef _close_socket(self):
        # The kernel keeps its own file reference for operations still in
        # flight, so closing the fd here is safe; nothing is submitted for
        # this fd afterwards.
        if self._state == TS_CLOSED:
            return
        self._state = TS_CLOSED
        if self._loop is not None and self._loop._transports.get(self._fd) is self:
            del self._loop._transports[self._fd]
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    cdef _drop_write(self):
        # A write() after the connection was lost is dropped.  asyncio's
        # socket transports count the loss itself and every such write
        # (their _conn_lost) and warn once the count reaches
        # LOG_THRESHOLD_FOR_CONNLOST_WRITES: from that many dropped writes on.
        self._dropped_writes += 1
        if self._dropped_writes >= LOG_THRESHOLD_FOR_CONNLOST_WRITES:
            logger.warning('socket.send() raised exception.')

    cdef _on_loop_close(self):
        # loop.close(), before the ring is drained: what is queued never goes out.
        pass

    cdef bint _reset(self):
        # loop.close(), after the drain: a transport that the kernel still
        # holds pages of drops its connection (stream.pyx); True if it did.
        return False

    cdef _flush(self):
        # Called by the loop for transports in loop._pending_flush, just
        # before it enters the kernel: submit what was queued meanwhile.
        pass


cdef inline bint _enter_context(object context):
    """Enter a transport's context for the protocol calls of one
    completion (through the C API: no closure, no Context.run()).  False if
    it is current already (entered up the stack): then they run as they are."""
    try:
        PyContext_Enter(<PyObject*>context)
    except RuntimeError:
        return False
    return True


cdef _call_write_flow_control(RingLoop loop, object protocol, bint pause, object transport,
                              object context_protocol):
    """protocol.pause_writing() or resume_writing(); what it raises goes to
    the loop's exception handler, as asyncio does (SystemExit and
    KeyboardInterrupt propagate)."""
    try:
        if pause:
            protocol.pause_writing()
        else:
            protocol.resume_writing()
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        loop.call_exception_handler({
            'message': 'protocol.pause_writing() failed' if pause
                       else 'protocol.resume_writing() failed',
            'exception': exc,
            'transport': transport,
            'protocol': context_protocol,
        })


cdef tuple _flowcontrol_defaults(object high, object low, int kb):
    """asyncio's write/read buffer limits: high defaults to ``kb`` KiB (or
    4 * low), low to high // 4."""
    if high is None:
        if low is None:
            high = kb * 1024
        else:
            high = 4 * low
    if low is None:
        low = high // 4
    if not high >= low >= 0:
        raise ValueError(f'high ({high!r}) must be >= low ({low!r}) must be >= 0')
    return high, low

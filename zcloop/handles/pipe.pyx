# Pipe transports (asyncio's _UnixReadPipeTransport / _UnixWritePipeTransport
# semantics) on the stream machinery: READ into the buffer ring, WRITE/WRITEV
# for the queue.

cdef _init_pipe(StreamTransport transport, RingLoop loop, object pipe, object protocol,
                object waiter, object extra, bint reading):
    fileno = pipe.fileno()
    mode = os.fstat(fileno).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
        if reading:
            raise ValueError("Pipe transport is for pipes/sockets only.")
        raise ValueError("Pipe transport is only for pipes, sockets and character devices")
    os.set_blocking(fileno, False)
    transport._loop = loop
    transport._context = PyContext_CopyCurrent()
    transport._extra = dict(extra) if extra else {}
    transport._extra['pipe'] = pipe
    transport._sock = pipe
    transport._fd = fileno
    transport._is_pipe = True
    transport._zc_threshold = 0
    transport.set_protocol(protocol)
    loop._call_soon(protocol.connection_made, (transport,), None)
    return mode


@cython.no_gc_clear
cdef class ReadPipeTransport(StreamTransport):

    def _init(self, RingLoop loop, pipe, protocol, waiter, extra):
        _init_pipe(self, loop, pipe, protocol, waiter, extra, True)
        _start_reading_after(loop, self, waiter)

    def __repr__(self):
        # asyncio's words: 'polling' while it has a reader registered (from
        # the first read until pause, close or EOF); a closed one says
        # 'closed' twice, as asyncio's does.
        info = self._repr_head()
        if self._state == TS_CLOSED:
            info.append('closed')
        elif (self._recv_op is not None and self._state == TS_OPEN and not self._paused
              and not self._read_eof):
            info.append('polling')
        else:
            info.append('idle')
        return '<{}>'.format(' '.join(info))

    cdef bint _error_is_quiet(self, object exc):
        # asyncio's read pipe reports every error to the exception handler
        # but EIO, which is how a pty's master sees the slave hang up.
        return isinstance(exc, OSError) and exc.errno == errno_mod.EIO

    cdef _on_eof(self):
        # The writer closed its end.
        if self._loop._debug:
            logger.info("%r was closed by peer", self)
        self._read_eof = True
        self._loop._call_soon(self._protocol.eof_received, None, None)
        self._schedule_connection_lost(None)

    # A read pipe has no writing side: asyncio's has no such methods
    # (AttributeError); these raise NotImplementedError, as asyncio's
    # transports do for what a transport does not support.
    def write(self, data):
        raise NotImplementedError

    def writelines(self, list_of_data):
        raise NotImplementedError

    def write_eof(self):
        raise NotImplementedError

    def can_write_eof(self):
        raise NotImplementedError


cdef class _PipeHangupOp(UringOp):
    # The write end of a pipe turns readable (POLLERR/POLLHUP) when the read
    # end closes: asyncio watches it with a reader, we with one POLL_ADD.

    cdef int on_cqe(self, RingLoop loop, uint64_t user_data, int32_t res,
                    uint32_t flags) except -1:
        cdef bint entered
        transport = self.transport
        if transport._hup_op is not self:
            return 0            # the transport stopped watching
        transport._hup_op = None
        if res == -ECANCELED or transport._state >= TS_LOST:
            return 0
        if loop._debug:
            logger.info("%r was closed by peer", transport)
        # asyncio watches the hangup with a reader added at creation.
        context = transport._context
        entered = _enter_context(context)
        try:
            transport._force_close(BrokenPipeError() if transport._buffer_size() else None)
        finally:
            if entered:
                PyContext_Exit(<PyObject*>context)
        return 0


@cython.no_gc_clear
cdef class WritePipeTransport(StreamTransport):

    def _init(self, RingLoop loop, pipe, protocol, waiter, extra):
        mode = _init_pipe(self, loop, pipe, protocol, waiter, extra, False)
        if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode):
            loop._call_soon(self._watch_hangup_cb, None, None)
        if waiter is not None:
            loop._call_soon(aio_futures._set_result_unless_cancelled, (waiter, None), None)

    def _watch_hangup_cb(self):
        self._watch_hangup()

    cdef _watch_hangup(self):
        cdef io_uring_sqe *sqe
        cdef RingLoop loop = self._loop
        if self._state != TS_OPEN:
            return
        self._hup_op = _PipeHangupOp()
        self._hup_op.transport = self
        sqe = loop._sqe()
        io_uring_prep_poll_add(sqe, self._fd, POLLIN)
        loop._submit(self._hup_op, sqe)

    def __repr__(self):
        # asyncio's words: 'polling' while it has a writer registered, which
        # is while anything is buffered.
        info = self._repr_head()
        if self._state == TS_CLOSED:
            info.append('closed')
        else:
            info.append('polling' if self._buffer_size() else 'idle')
            info.append(f'bufsize={self._buffer_size()}')
        return '<{}>'.format(' '.join(info))

    def write(self, data):
        cdef Py_ssize_t n
        cdef ssize_t done
        cdef int err
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f'data argument must be a bytes-like object, '
                                f'not {type(data).__name__!r}')
            data = bytes(data)      # the caller may reuse its buffer
        n = PyBytes_GET_SIZE(data)
        if n == 0:
            return
        if self._state != TS_OPEN:
            # After close()/write_eof() (also while the buffer drains) and
            # abort() asyncio drops the data.
            self._drop_write()
            return
        if self._send_op is not None or self._queue_bytes:
            StreamTransport.write(self, data)       # behind what is queued
            return
        # Nothing buffered: write(2) now, as asyncio does, so the bytes are
        # in the pipe when write() returns (a reader in this thread, or
        # write(); close(); loop.close(), sees them).  The fd is non-blocking.
        done = write(self._fd, PyBytes_AS_STRING(data), n)
        if done < 0:
            err = errno
            if err != EAGAIN and err != EINTR:
                self._dropped_writes += 1       # asyncio counts the failed write
                self._fatal_error(_send_error(-err), 'Fatal write error on pipe transport')
                return
            done = 0
        self._st_inline_sends += 1
        self._st_copy_bytes += done
        if done < n:
            self._queue_offset = done
            self._enqueue(data, n - done)

    def write_eof(self):
        # Closing the write end is the pipe's EOF.
        self.close()

    cdef _drop_write(self):
        # asyncio's write pipe counts the dropped (and a failed) write but
        # not the loss, and warns once the count before this write reached
        # LOG_THRESHOLD_FOR_CONNLOST_WRITES (a socket one write earlier).
        if self._dropped_writes >= LOG_THRESHOLD_FOR_CONNLOST_WRITES:
            logger.warning('pipe closed by peer or os.write(pipe, data) raised exception.')
        self._dropped_writes += 1

    # A write pipe has no reading side: asyncio's inherits ReadTransport's
    # methods, which raise NotImplementedError.
    def is_reading(self):
        raise NotImplementedError

    def pause_reading(self):
        raise NotImplementedError

    def resume_reading(self):
        raise NotImplementedError

    def _call_connection_lost(self, exc):
        if self._hup_op is not None:
            self._loop._cancel(self._hup_op)
            self._hup_op = None
        StreamTransport._call_connection_lost(self, exc)

# Stream transports (TCP, Unix, pipes' socket cousins) on the ring.
#
# Writes (docs/design.md "Write path"): write() on an idle socket send()s at
# once (INLINE_SEND_EVERY_MIN bytes and more always; less once per
# iteration: in a light one, or for INLINE_SEND_ALWAYS_MIN bytes and more in
# any); otherwise the data is queued, and once per loop iteration the queue goes
# out as ONE request (SEND / SENDMSG, or SEND_ZC for a large payload to
# another host or a write_zc() buffer), always with MSG_WAITALL, at most one
# request per socket in flight.
# Reads: a multishot RECV fed from the loop-wide provided-buffer ring; a
# completion under BUF_HANDOVER_MIN is copied into bytes and its buffer
# recycled at once, a larger one hands the buffer's bytes object over
# (RingLoop._buf_take).

cdef Py_ssize_t IOV_MAX_SEGMENTS = 1024
cdef Py_ssize_t QUEUE_SLOTS_KEPT = 64       # free send-queue slots kept for reuse
# write()s this large may send() at once even in a busy iteration: copied
# to the socket while still in cache (10 KiB x 100 echo: 0.88x -> 1.02x).
cdef Py_ssize_t INLINE_SEND_ALWAYS_MIN = 8 * 1024
# write()s this large send() at once on an idle socket however many came
# before them in the iteration: a stream of large writes is not held back an
# iteration per write, and at the default high-water mark a queued one would
# pause the writer anyway, so there is nothing to coalesce it with
# (docs/design.md "Large writes").
cdef Py_ssize_t INLINE_SEND_EVERY_MIN = 64 * 1024
cdef Py_ssize_t ZC_MAX_REQUEST = 1024 * 1024      # memlock is charged up front (docs/design.md "Zero-copy")
_LINGER_RESET = struct.pack('ii', 1, 0)         # struct linger: on, 0 s: close sends RST
cdef Py_ssize_t SEND_MAX_REQUEST = 0x7ffff000      # MAX_RW_COUNT: one request's bytes
cdef int SEND_FLAGS = MSG_WAITALL | MSG_NOSIGNAL
if sys.version_info >= (3, 12):
    _WRITELINES_AFTER_EOF = 'Cannot call writelines() after write_eof()'
    _WRITELINES_DURING_SENDFILE = 'unable to writelines; sendfile is in progress'
else:
    _WRITELINES_AFTER_EOF = 'Cannot call write() after write_eof()'
    _WRITELINES_DURING_SENDFILE = 'unable to write; sendfile is in progress'


@cython.no_gc_clear
cdef class ZeroCopyWrite:
    """Handle returned by transport.write_zc(buffer).

    ``sent`` resolves with the number of bytes once the kernel accepted the
    buffer's last byte (or fails with the connection's error; it is
    cancelled if the transport is aborted, or the loop closed, first).
    ``released`` resolves once the kernel no longer references the memory:
    only then may the buffer be modified.  Its result is True if the bytes
    went out without a copy, False if the kernel (or zcloop) copied them --
    also when the socket refused zero-copy (the transport's
    ``zc_stats()['zc_refused']`` says why) --, None where the kernel cannot
    tell (before Linux 6.2).  ``released`` never raises; it is cancelled
    only when the loop closed while the kernel may still read the buffer
    (which then stays referenced forever).
    """

    def __repr__(self):
        return (f'<ZeroCopyWrite nbytes={self.nbytes} sent={_fut_state(self.sent)} '
                f'released={_fut_state(self.released)}>')

    def __await__(self):
        return self.released.__await__()

    cdef _set_sent(self, object exc):
        if self.sent.done():
            return
        if exc is None:
            _settle(self.sent, self.nbytes)
        else:
            _settle(self.sent, exc)
            if exc is not _CANCELLED:
                # Nobody may be awaiting it: don't log "never retrieved".
                self.sent.exception()

    cdef _set_released(self):
        if self.released.done():
            return
        if self._copied or not self._went_zc:
            result = False
        elif not self._usage_known:
            result = None
        else:
            result = True
        _settle(self.released, result)

    cdef _quarantined(self):
        # The loop closed while the kernel may still read the buffer.
        self._set_sent(_CANCELLED)
        if not self.released.done():
            _settle(self.released, _CANCELLED)


cdef _settle(fut, value):
    """Resolve fut with value (an exception, _CANCELLED or a result).  In
    loop.close() the future's state is set but its done-callbacks cannot
    be scheduled any more (call_soon raises on a closed loop); the futures
    set their state before scheduling, so that error is dropped."""
    try:
        if value is _CANCELLED:
            fut.cancel()
        elif isinstance(value, BaseException):
            fut.set_exception(value)
        else:
            fut.set_result(value)
    except RuntimeError:
        if not (fut.done() and fut.get_loop().is_closed()):
            raise


cdef object _CANCELLED = object()


cdef _fut_state(fut):
    if not fut.done():
        return 'pending'
    if fut.cancelled():
        return 'cancelled'
    if fut.exception() is not None:
        return 'error'
    return repr(fut.result())


@cython.no_gc_clear
cdef class _Pinned:

    def __dealloc__(self):
        if self.has_view:
            self.has_view = False
            PyBuffer_Release(&self.view)

    cdef _unref(self):
        cdef _BlockLease lease
        self.refs -= 1
        if self.refs == 0:
            if self.has_view:
                self.has_view = False
                PyBuffer_Release(&self.view)
            self.handle._set_released()
            if self.lease is not None:
                # The kernel let go: the block goes back to its pool.
                lease, self.lease = self.lease, None
                lease._write_done()


cdef inline Py_ssize_t _entry_len(object entry):
    if type(entry) is bytes:
        return PyBytes_GET_SIZE(entry)
    return (<_Pinned>entry).view.len


cdef inline bint _entry_fixed(object entry):
    # A BufferPool block: sent from its registered buffer (SEND_ZC_FIXED).
    return (type(entry) is _Pinned and (<_Pinned>entry).lease is not None and
            (<_Pinned>entry).lease.pool._buf_index >= 0)


cdef inline char *_entry_ptr(object entry):
    if type(entry) is bytes:
        return PyBytes_AS_STRING(entry)
    return <char*>(<_Pinned>entry).view.buf


@cython.no_gc_clear
cdef class _SendOp(UringOp):

    def __dealloc__(self):
        if self.iov != NULL:
            PyMem_Free(self.iov)
            self.iov = NULL

    cdef int reserve_iov(self, int niov) except -1:
        cdef iovec *iov
        if niov > self.iov_cap:
            iov = <iovec*>PyMem_Realloc(self.iov, niov * sizeof(iovec))
            if iov == NULL:
                raise MemoryError()
            self.iov = iov
            self.iov_cap = niov
        return 0

    cdef int on_cqe(self, RingLoop loop, uint64_t user_data, int32_t res,
                    uint32_t flags) except -1:
        cdef StreamTransport transport = self.transport
        cdef object context
        cdef bint entered
        if flags & IORING_CQE_F_NOTIF:
            transport._on_send_notif(self, res)
            return 0
        # asyncio's writer handle: resume_writing(), and connection_lost()
        # after a close() that waited for the buffer, see the context of
        # the write() that started buffering (set by _enqueue()).
        context = transport._write_context
        entered = _enter_context(context)
        try:
            transport._on_send_done(self, res, flags)
        finally:
            if entered:
                PyContext_Exit(<PyObject*>context)
        return 0

    cdef int on_close(self, RingLoop loop) except -1:
        # loop.close(): either the final CQE came in the drain (the kernel
        # let go) or the op is quarantined with its buffers.
        if self.transport is not None:
            self.transport._on_send_closed(self, loop._quarantining)
            if loop._quarantining:
                self.transport._close_socket()      # see _RecvOp.on_close
        return 0


cdef class _RecvOp(UringOp):

    cdef int on_cqe(self, RingLoop loop, uint64_t user_data, int32_t res,
                    uint32_t flags) except -1:
        cdef StreamTransport transport = self.transport
        cdef object context = transport._context    # resume_reading() may replace it
        cdef bint entered = _enter_context(context)
        try:
            transport._on_recv(res, flags)
        finally:
            if entered:
                PyContext_Exit(<PyObject*>context)
        return 0

    cdef int on_close(self, RingLoop loop) except -1:
        # Quarantined by loop.close(): the request keeps its transport
        # alive forever, so the garbage collector would never close the
        # socket; close it now (the kernel holds its own file reference).
        if loop._quarantining and self.transport is not None:
            self.transport._close_socket()
        return 0


@cython.no_gc_clear
cdef class StreamTransport(RingTransport):

    def __cinit__(self):
        self._queue = []
        self._paused_data = []

    def __dealloc__(self):
        if self._rbuf != NULL:
            PyMem_Free(self._rbuf)
            self._rbuf = NULL

    cdef _init_stream(self, RingLoop loop, object sock, object protocol, object waiter,
                      object extra, object server):
        self._init_transport(loop, sock, protocol, extra, server)
        self._waiter = waiter
        family = sock.family
        if family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            _set_nodelay(sock)
            self._zc_capable = (loop._op_ok(IORING_OP_SEND_ZC) and loop._feature('send_zc'))
            # Local delivery copies zero-copy pages: plain write() only uses
            # SEND_ZC towards other hosts.  Loopback and a peer at our own
            # address are known now; whether the peer is another address of
            # this host is asked at the first write large enough to care
            # (_zc_peer_remote), so connections that never write that much
            # never pay for it.
            self._zc_write = self._zc_capable and not _is_local_peer(
                self._extra.get('peername'), self._extra.get('sockname'), False)
            self._zc_peer_unverified = self._zc_write
        self._zc_threshold = loop.zc_threshold
        loop._call_soon(self._protocol.connection_made, (self,), None)
        _start_reading_after(loop, self, waiter)

    def __repr__(self):
        info = self._repr_head()
        if self._state != TS_CLOSED:
            info.append('read=' + ('paused' if self._paused else 'active'))
            info.append(f'write=<{"busy" if self._send_op is not None else "idle"}, '
                        f'bufsize={self._buffer_size()}>')
        return '<{}>'.format(' '.join(info))

    # ------------------------------------------------------------------
    # Protocol switching and reading

    @property
    def _start_tls_compatible(self):
        # asyncio's socket transports can be upgraded, its pipe transports not.
        return not self._is_pipe

    def set_protocol(self, protocol):
        self._ssl = protocol if type(protocol) is SSLProtocol else None
        self._buffered = (self._ssl is not None
                          or isinstance(protocol, aio_protocols_BufferedProtocol))
        self._protocol = protocol

    def is_reading(self):
        return self._state == TS_OPEN and not self._paused

    def pause_reading(self):
        if self._state != TS_OPEN or self._paused:
            return
        self._paused = True
        self._stop_recv()
        if self._loop._debug:
            logger.debug("%r pauses reading", self)

    def resume_reading(self):
        if self._state != TS_OPEN or not self._paused:
            return
        self._paused = False
        # asyncio adds a new reader handle here: from now on data is
        # delivered in a copy of the context of this call.
        self._context = PyContext_CopyCurrent()
        if self._paused_data:
            self._loop._call_soon(self._deliver_paused, None, self._context)
        self._start_reading()
        if self._loop._debug:
            logger.debug("%r resumes reading", self)

    def _start_reading_cb(self):
        self._start_reading()

    def _start_reading_next(self):
        self._loop._call_soon(self._start_reading_cb, None, None)

    cdef _start_reading(self):
        if self._state != TS_OPEN or self._paused or self._read_eof:
            return
        if self._recv_op is None or self._recv_op.ud == 0:
            self._arm_recv()

    cdef _arm_recv(self):
        cdef RingLoop loop = self._loop
        cdef io_uring_sqe *sqe
        if self._recv_op is None:
            self._recv_op = _RecvOp()
            self._recv_op.transport = self
        sqe = loop._sqe()
        if loop._ensure_buf_ring():
            if self._is_pipe:
                io_uring_prep_read(sqe, self._fd, NULL, loop._buf_size, NO_OFFSET)
            elif loop._feature('recv_multishot'):
                io_uring_prep_recv_multishot(sqe, self._fd, NULL, 0, 0)
            else:
                io_uring_prep_recv(sqe, self._fd, NULL, loop._buf_size, 0)
            io_uring_sqe_set_flags(sqe, IOSQE_BUFFER_SELECT)
            sqe.buf_group = RECV_BGID
        else:
            if self._rbuf == NULL:
                self._rbuf = <char*>PyMem_Malloc(loop._buf_size)
                if self._rbuf == NULL:
                    raise MemoryError()
            if self._is_pipe:
                io_uring_prep_read(sqe, self._fd, self._rbuf, loop._buf_size, NO_OFFSET)
            else:
                io_uring_prep_recv(sqe, self._fd, self._rbuf, loop._buf_size, 0)
        loop._submit(self._recv_op, sqe)
        self._recv_cancelled = False

    cdef _on_recv(self, int32_t res, uint32_t flags):
        cdef RingLoop loop = self._loop
        cdef bint final = not (flags & IORING_CQE_F_MORE)
        cdef unsigned bid
        cdef bint pending_buf = flags & IORING_CQE_F_BUFFER
        cdef bint stash
        cdef const char *data = NULL
        if pending_buf:
            bid = flags >> IORING_CQE_BUFFER_SHIFT
            data = loop._buf_ptr(bid)
        elif res > 0:
            data = self._rbuf
        try:
            if res > 0 and self._state < TS_LOST and self._protocol is not None:
                stash = self._paused or bool(self._paused_data)
                if self._buffered and not stash:
                    self._deliver(data, res, None)
                else:
                    if pending_buf:
                        pending_buf = False
                        obj = loop._buf_take(bid, res)
                    else:
                        obj = PyBytes_FromStringAndSize(data, res)
                    if stash:
                        self._paused_data.append(obj)
                    else:
                        self._deliver(NULL, res, obj)
        finally:
            if pending_buf:
                loop._recycle_buf(bid)
        if not final or self._state >= TS_LOST:
            return
        if res == 0:
            if self._paused or self._paused_data:
                self._paused_data.append(None)
            else:
                self._on_eof()
        elif res > 0 or res == -ENOBUFS or res == -ECANCELED:
            if res == -ENOBUFS:
                loop._grow_buf_ring()
            # Multishot ended (buffer ring empty, fairness, a cancel from
            # pause_reading): re-arm if we still want data.
            self._start_reading()
        else:
            exc = OSError(-res, os.strerror(-res))
            self._fatal_error(exc, 'Fatal read error on pipe transport' if self._is_pipe
                              else 'Fatal read error on socket transport')

    cdef int _deliver(self, const char *data, Py_ssize_t n, object obj) except -1:
        cdef Py_buffer view
        cdef Py_ssize_t chunk
        if not self._buffered:
            if obj is None:
                obj = PyBytes_FromStringAndSize(data, n)
            try:
                # Looked up on every call, as asyncio does (uvloop caches the
                # bound method): a protocol may rebind it on the instance.
                self._protocol.data_received(obj)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, 'Fatal error: protocol.data_received() call failed.')
            return 0
        if self._ssl is not None:
            try:
                self._ssl._feed(data, n)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, 'Fatal error: protocol.buffer_updated() call failed.')
            return 0
        # BufferedProtocol: copy straight into the protocol's buffer(s).
        while n > 0 and self._state < TS_LOST:
            try:
                buf = self._protocol.get_buffer(-1)
                if not len(buf):
                    raise RuntimeError('get_buffer() returned an empty buffer')
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, 'Fatal error: protocol.get_buffer() call failed.')
                return 0
            PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE)
            chunk = min(view.len, n)
            memcpy(view.buf, data, chunk)
            PyBuffer_Release(&view)
            data += chunk
            n -= chunk
            try:
                self._protocol.buffer_updated(chunk)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, 'Fatal error: protocol.buffer_updated() call failed.')
                return 0
        return 0

    def _deliver_paused(self):
        cdef bytes data
        while self._paused_data and not self._paused and self._state < TS_LOST:
            item = self._paused_data.pop(0)
            if item is None:
                self._on_eof()
            else:
                data = item
                self._deliver(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), data)

    cdef _on_eof(self):
        if self._buffered and self._ssl is None and not self._is_pipe:
            # asyncio's socket transport asks a BufferedProtocol for a buffer
            # before every recv, the one that returns EOF included.
            try:
                if not len(self._protocol.get_buffer(-1)):
                    raise RuntimeError('get_buffer() returned an empty buffer')
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, 'Fatal error: protocol.get_buffer() call failed.')
                return
        self._read_eof = True
        if self._loop._debug:
            logger.debug("%r received EOF", self)
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, 'Fatal error: protocol.eof_received() call failed.')
            return
        if not keep_open:
            self.close()

    # ------------------------------------------------------------------
    # Writing

    cdef Py_ssize_t _buffer_size(self):
        return self._queue_bytes + self._inflight_bytes

    def write(self, data):
        """Send data now on an idle socket (_inline_ok), else queue it: it
        goes out with everything else written in this loop iteration, in
        one request (_flush)."""
        cdef Py_ssize_t n
        if type(data) is not bytes:
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f'data argument must be a bytes-like object, '
                                f'not {type(data).__name__!r}')
            # Snapshot: the caller may reuse its buffer as soon as we return.
            data = bytes(data)
        if self._eof:
            raise RuntimeError('Cannot call write() after write_eof()')
        if self._empty_waiter is not None:
            raise RuntimeError('unable to write; sendfile is in progress')
        n = PyBytes_GET_SIZE(data)
        if n == 0:
            return
        if self._state >= TS_LOST:
            self._drop_write()
            return
        # After close() with data still buffered (TS_CLOSING), asyncio keeps
        # queueing: the bytes go out before connection_lost().
        if self._inline_ok(n) and self._send_inline(data, n):
            return
        self._enqueue(data, n)

    cdef bint _inline_ok(self, Py_ssize_t n):
        """May write() send ``n`` bytes now (_send_inline)?  Only on an idle
        socket (nothing queued or in flight), and not when the bytes may go
        zero-copy: INLINE_SEND_EVERY_MIN bytes or more always; fewer once per
        loop iteration, in a light iteration (RingLoop._inline_sends) or for
        INLINE_SEND_ALWAYS_MIN bytes or more."""
        return (self._send_op is None and self._queue_bytes == 0 and not self._is_pipe and
                (n >= INLINE_SEND_EVERY_MIN or
                 ((self._loop._inline_sends or n >= INLINE_SEND_ALWAYS_MIN) and
                  self._inline_iteration != self._loop._iteration)) and
                not (self._zc_admits(n, True) and self._zc_peer_remote()))

    cdef bint _send_inline(self, bytes data, Py_ssize_t n) except -1:
        """The first write() of a light iteration (RingLoop._inline_sends), or
        one of INLINE_SEND_ALWAYS_MIN bytes or more, or any write of
        INLINE_SEND_EVERY_MIN bytes or more, on an idle socket:
        send() it now, as asyncio and uvloop do, and queue what the socket
        does not take.  The peer gets the data while this
        loop goes on with its other callbacks (1 KiB x 10 echo: -11% CPU per
        request against queueing it for the iteration's io_uring_enter()),
        and a large payload is copied to the socket while still in cache
        (100 KiB x 10 echo: 0.82x -> 1.0x uvloop).  Later writes under
        INLINE_SEND_EVERY_MIN of the same iteration are queued and coalesced into one request.  False:
        nothing sent (EAGAIN)."""
        cdef ssize_t sent
        cdef int err
        cdef const char *ptr = PyBytes_AS_STRING(data)
        self._inline_iteration = self._loop._iteration
        # Non-blocking: the GIL stays held (dropping and taking it back was
        # 0.7% of a 10 KiB echo server's CPU; uvloop holds it for writes too).
        sent = send(self._fd, ptr, n, MSG_DONTWAIT | MSG_NOSIGNAL)
        if sent < 0:
            err = errno
            if err == EAGAIN or err == EINTR:
                return False
            self._fatal_error(_send_error(-err), 'Fatal write error on socket transport')
            return True
        self._st_inline_sends += 1
        self._st_copy_bytes += sent
        if sent < n:
            self._queue_offset = sent
            self._enqueue(data, n - sent)
        return True

    def writelines(self, list_of_data):
        """Write a list (or any iterable) of data as one batch."""
        list_of_data = list(list_of_data)
        for data in list_of_data:
            # All or nothing, as asyncio (it joins or wraps them all first).
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise TypeError(f'data argument must be a bytes-like object, '
                                f'not {type(data).__name__!r}')
        if self._eof:
            # asyncio checks even for an empty list (3.11: via write(b'')).
            raise RuntimeError(_WRITELINES_AFTER_EOF)
        if self._empty_waiter is not None:
            raise RuntimeError(_WRITELINES_DURING_SENDFILE)
        for data in list_of_data:
            self.write(data)

    def write_zc(self, data):
        """Send ``data`` without copying it where the kernel allows
        (IORING_OP_SEND_ZC) and return a ZeroCopyWrite handle.

        ``data`` may be any C-contiguous buffer; it must not be modified
        until ``handle.released`` is done.  A block of a BufferPool (or a
        slice of one) is sent from its registered buffer, and goes back to
        its pool when ``released`` resolves.
        """
        cdef _Pinned pinned
        cdef ZeroCopyWrite handle
        if not PyObject_CheckBuffer(data):
            raise TypeError(f'data argument must be a bytes-like object, '
                            f'not {type(data).__name__!r}')
        if self._eof:
            raise RuntimeError('Cannot call write_zc() after write_eof()')
        if self._empty_waiter is not None:
            raise RuntimeError('unable to write; sendfile is in progress')
        pinned = _Pinned()
        try:
            PyObject_GetBuffer(data, &pinned.view, PyBUF_C_CONTIGUOUS)
        except BufferError as exc:
            raise TypeError(f'write_zc() needs a C-contiguous buffer: {exc}') from None
        pinned.has_view = True
        if pinned.view.len:
            pinned.lease = _pool_lease(self._loop, data, <char*>pinned.view.buf,
                                       pinned.view.len)
            if pinned.lease is not None:
                pinned.lease._write_started()
        handle = ZeroCopyWrite()
        handle.sent = aio_futures.Future(loop=self._loop)
        handle.released = aio_futures.Future(loop=self._loop)
        handle.nbytes = pinned.view.len
        handle._usage_known = True
        pinned.handle = handle
        pinned.refs = 1
        if pinned.view.len == 0:
            handle._set_sent(None)
            pinned._unref()
        elif self._state >= TS_LOST:
            self._dropped_writes += 1
            handle._set_sent(ConnectionResetError('Connection lost'))
            pinned._unref()
        else:
            # Also after close() while data is still buffered, as write().
            self._enqueue(pinned, pinned.view.len)
        return handle

    def can_write_eof(self):
        return True

    def write_eof(self):
        if self._state != TS_OPEN or self._eof:
            return
        self._eof = True
        if not self._sending():
            self._shutdown_write()

    cdef _shutdown_write(self):
        # Once: write_eof() with nothing left to send, or the drain after it
        # (no write is accepted after write_eof()).
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    cdef _enqueue(self, object entry, Py_ssize_t n):
        if self._queue_bytes == 0 and self._send_op is None:
            self._write_context = PyContext_CopyCurrent()
        if self._queue_tail < len(self._queue):
            self._queue[self._queue_tail] = entry
        else:
            self._queue.append(entry)
        self._queue_tail += 1
        self._queue_bytes += n
        if not self._flush_queued and self._send_op is None:
            self._flush_queued = True
            self._loop._pending_flush.append(self)
        self._maybe_pause_protocol()

    cdef _queue_pop(self, Py_ssize_t count):
        """Take ``count`` entries off the head of the queue.

        The queue is a list used as a ring: entries live at [_queue_head,
        _queue_tail), free slots hold None and are reused without resizing
        the list.  deque.popleft() is a method call by name from Cython
        (about 220 instructions, 5% of a 1 KiB echo server's), and emptying
        a list with del frees its array for the next append() to allocate."""
        cdef Py_ssize_t i, end = self._queue_head + count
        cdef list queue = self._queue
        for i in range(self._queue_head, end):
            queue[i] = None             # the popped entry is not ours to keep
        if end == self._queue_tail:
            self._queue_head = self._queue_tail = 0
            if len(queue) > QUEUE_SLOTS_KEPT:
                self._queue = []        # after a burst, do not keep its slots
        elif end >= QUEUE_SLOTS_KEPT and end * 2 >= self._queue_tail:
            del queue[:end]             # compact a queue that never drains
            self._queue_head = 0
            self._queue_tail -= end
        else:
            self._queue_head = end

    cdef bint _zc_peer_remote(self):
        """May plain write() use SEND_ZC: is the peer another host?"""
        if self._zc_peer_unverified:
            self._zc_peer_unverified = False
            if _is_host_address(self._extra.get('peername')):
                self._zc_write = False
        return self._zc_write

    cdef bint _entry_zc(self, object entry, Py_ssize_t remaining):
        """May this entry go out as SEND_ZC now (check only: _flush
        reserves once the request is on the ring)?  Plain write() bytes only
        towards other hosts, write_zc() buffers on any TCP socket that has
        not refused zero-copy; within the budgets."""
        if not self._zc_admits(remaining, type(entry) is bytes):
            return False
        if type(entry) is bytes and not self._zc_peer_remote():
            return False
        if _entry_fixed(entry):
            return True     # registered: pinned once for the pool, no memlock budget
        return self._zc_fits(min(remaining, ZC_MAX_REQUEST))

    # The write path, in order (docs/design.md "Write path"):
    #   write() -> _inline_ok() ? _send_inline() : _enqueue()
    #   _enqueue() -> loop._pending_flush -> _flush() once per iteration:
    #     _batch() -> _prep_send() -> loop._submit() -> _submitted()
    #   _on_send_done() at the first CQE (requeues what was not sent),
    #   _release_op() at the final one.

    cdef _flush(self):
        """Put the head of the queue on the ring as one request; at most one
        is in flight per transport."""
        cdef RingLoop loop = self._loop
        cdef _SendOp op
        cdef io_uring_sqe *sqe
        cdef int niov
        self._flush_queued = False
        if self._send_op is not None or self._queue_bytes == 0 or self._state >= TS_LOST:
            return
        op = self._batch()
        niov = len(op.entries)
        if niov > 1:
            # Before taking the SQE: a MemoryError must not leave one unprepared.
            op.reserve_iov(niov)
            _fill_iov(op, niov, op.offset)
        sqe = loop._sqe()
        self._prep_send(op, sqe)
        loop._submit(op, sqe)
        self._submitted(op)

    cdef _SendOp _batch(self):
        """Choose what the next request sends: one entry that goes
        zero-copy (at most ZC_MAX_REQUEST of it, unless registered), or up
        to IOV_MAX_SEGMENTS entries by copy, stopping before one that may go
        zero-copy (it gets its own request).  Nothing is reserved yet."""
        cdef _SendOp op
        cdef list queue = self._queue
        cdef Py_ssize_t head = self._queue_head, offset = self._queue_offset
        cdef Py_ssize_t total = 0, n, i
        cdef int niov = 0
        first = queue[head]
        n = _entry_len(first) - offset
        op = self._spare_send_op
        if op is None:
            op = _SendOp()
            op.transport = self
        else:
            self._spare_send_op = None
            op.implicit_zc = False
            op.popped = False
        op.offset = offset
        op.zc = self._entry_zc(first, n)
        op.fixed = op.zc and _entry_fixed(first)
        if op.zc:
            op.implicit_zc = type(first) is bytes
            op.entries = [first]
            op.nbytes = n if op.fixed else min(n, ZC_MAX_REQUEST)
            return op
        for i in range(head, self._queue_tail):
            entry = queue[i]
            if niov == IOV_MAX_SEGMENTS:
                break
            if niov and self._zc_admits(_entry_len(entry), type(entry) is bytes):
                break       # it may go zero-copy: its own request (_entry_zc)
            total += _entry_len(entry)
            niov += 1
        total -= offset
        if niov == 1 and total > SEND_MAX_REQUEST:
            total = SEND_MAX_REQUEST     # sqe->len is 32 bits; > INT_MAX is EINVAL
        op.entries = queue[head:head + niov]
        op.nbytes = total
        return op

    cdef _prep_send(self, _SendOp op, io_uring_sqe *sqe):
        """Write the request into ``sqe``: WRITE(V) on pipes, else SEND,
        SEND_ZC(_FIXED) for one entry, SENDMSG for several."""
        cdef RingLoop loop = self._loop
        cdef int niov = len(op.entries)
        cdef char *ptr
        if niov > 1:
            if self._is_pipe:
                io_uring_prep_writev(sqe, self._fd, op.iov, niov, NO_OFFSET)
            else:
                memset(&op.msg, 0, sizeof(msghdr))
                op.msg.msg_iov = op.iov
                op.msg.msg_iovlen = niov
                io_uring_prep_sendmsg(sqe, self._fd, &op.msg, SEND_FLAGS)
            return
        first = op.entries[0]
        ptr = _entry_ptr(first) + op.offset
        if self._is_pipe:
            io_uring_prep_write(sqe, self._fd, ptr, op.nbytes, NO_OFFSET)
        elif not op.zc:
            io_uring_prep_send(sqe, self._fd, ptr, op.nbytes, SEND_FLAGS)
        else:
            if op.fixed:
                io_uring_prep_send_zc_fixed(sqe, self._fd, ptr, op.nbytes, SEND_FLAGS, 0,
                                            (<_Pinned>first).lease.pool._buf_index)
                loop._st_fixed_sends += 1
            else:
                io_uring_prep_send_zc(sqe, self._fd, ptr, op.nbytes, SEND_FLAGS, 0)
            if loop._zc_report_usage:
                sqe.ioprio |= IORING_SEND_ZC_REPORT_USAGE

    cdef _submitted(self, _SendOp op):
        """The request is on the ring: it owns its entries, which leave the
        queue (all but a zero-copy entry sent in chunks), and its budget."""
        cdef Py_ssize_t i
        for i in range(len(op.entries)):
            entry = op.entries[i]
            if type(entry) is _Pinned:
                (<_Pinned>entry).refs += 1
        if len(op.entries) == 1 and op.nbytes < _unsent_len(op, 0):
            self._queue_offset += op.nbytes       # more of this entry follows
        else:
            self._queue_pop(len(op.entries))
            self._queue_offset = 0
            op.popped = True
        self._queue_bytes -= op.nbytes
        self._inflight_bytes = op.nbytes
        self._send_op = op
        self._st_sends += 1
        if op.zc:
            self._zc_pin(op.nbytes, op.fixed)

    cdef _on_send_done(self, _SendOp op, int32_t res, uint32_t flags):
        cdef RingLoop loop = self._loop
        cdef Py_ssize_t done, pos, length, covered, i
        if op is self._send_op:
            self._send_op = None
            self._inflight_bytes = 0
        if not (flags & IORING_CQE_F_MORE):
            self._release_op(op)
        if res == -ECANCELED or self._state >= TS_LOST:
            _settle_popped(op, res if res > 0 else 0,
                           ConnectionAbortedError('Transport aborted'))
            self._after_drain()
            return
        if res < 0:
            if op.zc and self._zc_refusal(
                    res, op.nbytes if flags & IORING_CQE_F_MORE and not op.fixed else 0):
                # Zero-copy refused, nothing was sent: go again.
                op.refused = True
                self._requeue(op, 0)
                self._flush()
                return
            exc = _send_error(res)
            _settle_popped(op, 0, exc)
            if self._is_pipe:
                self._dropped_writes += 1       # asyncio's write pipe counts a failed write
                self._fatal_error(exc, 'Fatal write error on pipe transport')
            else:
                self._fatal_error(exc, 'Fatal write error on socket transport')
            return
        done = res
        if op.zc:
            self._st_zc_bytes += done
        else:
            self._st_copy_bytes += done
        if done < op.nbytes:
            self._requeue(op, done)
        # Resolve `sent` for write_zc buffers whose last byte is now out.
        pos = 0
        for i in range(len(op.entries)):
            entry = op.entries[i]
            length = _unsent_len(op, i)
            covered = min(length, op.nbytes - pos)
            if covered < length or pos + covered > done:
                break
            pos += covered
            if type(entry) is _Pinned:
                (<_Pinned>entry).handle._set_sent(None)
                (<_Pinned>entry)._unref()       # drops the queue's hold
        if not op.zc:
            # That was its only CQE: the next _flush() reuses it, iovecs and all.
            op.entries = None
            self._spare_send_op = op
        self._after_drain()

    cdef _requeue(self, _SendOp op, Py_ssize_t done):
        """Put what the request did not send back at the head of the queue."""
        cdef Py_ssize_t pos = 0, length, i = 0, j
        self._queue_bytes += op.nbytes - done
        if not op.popped:
            # A chunk of a zero-copy entry that is still at the queue's head.
            self._queue_offset = op.offset + done
            return
        for i in range(len(op.entries)):
            length = _unsent_len(op, i)
            if pos + length > done:
                break
            pos += length
        for j in range(len(op.entries) - 1, i - 1, -1):
            if self._queue_head:
                self._queue_head -= 1
                self._queue[self._queue_head] = op.entries[j]
            else:
                self._queue.insert(0, op.entries[j])
                self._queue_tail += 1
        self._queue_offset = (op.offset if i == 0 else 0) + (done - pos)

    cdef _after_drain(self):
        if self._state >= TS_LOST:
            return
        if self._queue_bytes:
            if not self._flush_queued:
                self._flush_queued = True
                self._loop._pending_flush.append(self)
        else:
            if self._empty_waiter is not None and self._send_op is None and \
                    not self._empty_waiter.done():
                self._empty_waiter.set_result(None)
            if self._eof:
                self._shutdown_write()
            if self._state == TS_CLOSING and self._send_op is None:
                # asyncio resumes the protocol before connection_lost().
                self._maybe_resume_protocol()
                if self._queue_bytes == 0:  # resume_writing() may write more
                    self._schedule_connection_lost(None)
                return
        self._maybe_resume_protocol()

    cdef _on_send_notif(self, _SendOp op, int32_t res):
        cdef Py_ssize_t i
        cdef _Pinned pinned
        if op.refused:
            # Nothing was sent: its "copied" usage bit says nothing.
            self._release_op(op)
            return
        copied = bool(<uint32_t>res & IORING_NOTIF_USAGE_ZC_COPIED)
        if copied:
            self._st_zc_copied += 1
            if op.implicit_zc and self._zc_write:
                self._demote()
        for i in range(len(op.entries)):
            entry = op.entries[i]
            if type(entry) is _Pinned:
                pinned = <_Pinned>entry
                pinned.handle._went_zc = True
                if copied:
                    pinned.handle._copied = True
                if not self._loop._zc_report_usage:
                    pinned.handle._usage_known = False
        self._release_op(op)

    cdef _release_op(self, _SendOp op):
        """The kernel is done with the request's memory (its final CQE)."""
        cdef Py_ssize_t i
        if op.zc:
            self._zc_unpin(op.nbytes, op.fixed)
        for i in range(len(op.entries)):
            entry = op.entries[i]
            if type(entry) is _Pinned:
                if not op.zc:
                    (<_Pinned>entry).handle._copied = True
                (<_Pinned>entry)._unref()

    cdef _on_send_closed(self, _SendOp op, bint quarantined):
        """loop.close(): settle the handles of a request whose final CQE came
        in the close drain, or that stays quarantined with its buffers."""
        cdef Py_ssize_t i
        if op is self._send_op:
            # Its data CQE never came: what it took off the queue is unsent.
            self._send_op = None
            self._inflight_bytes = 0
            _settle_popped(op, 0, _CANCELLED)
        if not quarantined:
            self._release_op(op)
            return
        for i in range(len(op.entries)):
            entry = op.entries[i]
            if type(entry) is _Pinned:
                (<_Pinned>entry).handle._quarantined()

    cdef _on_loop_close(self):
        # Queued data never goes out now: cancel the write_zc() handles
        # (`released` resolves once no request holds the buffer).
        self._drop_queue(_CANCELLED)

    cdef _drop_queue(self, object exc):
        cdef _Pinned pinned
        cdef Py_ssize_t i
        queue, self._queue = self._queue, []
        for i in range(self._queue_head, self._queue_tail):
            entry = queue[i]
            if type(entry) is _Pinned:
                pinned = <_Pinned>entry
                pinned.handle._copied = True
                pinned.handle._set_sent(exc)
                pinned._unref()
        self._queue_head = self._queue_tail = 0
        self._queue_bytes = 0
        self._queue_offset = 0

    def _make_empty_waiter(self):
        if self._empty_waiter is not None:
            raise RuntimeError('Empty waiter is already set')
        self._empty_waiter = self._loop.create_future()
        if not self._sending():
            self._empty_waiter.set_result(None)
        return self._empty_waiter

    def _reset_empty_waiter(self):
        self._empty_waiter = None

    # ------------------------------------------------------------------
    # Closing

    # The close path is RingTransport's (transport.pyx "close state");
    # here is what a stream adds to it.

    cdef _stop_recv(self):
        if self._recv_op is not None and self._recv_op.ud and not self._recv_cancelled:
            self._recv_cancelled = True
            self._loop._cancel(self._recv_op)

    cdef bint _sending(self):
        return self._send_op is not None or self._queue_bytes != 0

    cdef _abort_writes(self, object exc):
        if self._empty_waiter is not None and not self._empty_waiter.done():
            self._empty_waiter.set_exception(ConnectionError("Connection is closed by peer"))
        self._drop_queue(_CANCELLED if exc is None else exc)
        self._rst_if_pinned()
        if self._send_op is not None:
            self._loop._cancel(self._send_op)
            # Its bytes are dropped too: asyncio's buffer is empty at once.
            self._inflight_bytes = 0

    cdef bint _rst_if_pinned(self):
        """If the peer still holds zero-copy pages of ours, make the close an
        RST (SO_LINGER 0) instead of a FIN, so unacknowledged skbs let go of
        them, also when the request that pinned them has completed
        (docs/design.md "close/abort").  True if it did."""
        if not self._zc_pinned or self._state == TS_CLOSED:
            return False
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
        return True

    cdef bint _reset(self):
        # loop.close(): the notifications of pinned pages come once the
        # connection is gone, and a quarantined request would keep the fd.
        if not self._rst_if_pinned():
            return False
        self._close_socket()
        return True

    def _call_connection_lost(self, exc):
        # Fail what is still waiting for the kernel's first CQE.
        if self._send_op is not None:
            for entry in self._send_op.entries:
                if type(entry) is _Pinned:
                    (<_Pinned>entry).handle._set_sent(
                        exc if exc is not None else ConnectionAbortedError('Transport aborted'))
        self._spare_send_op = None      # it points back at us
        try:
            RingTransport._call_connection_lost(self, exc)
        finally:
            self._ssl = None        # as the base drops _protocol

    # ------------------------------------------------------------------
    # Zero-copy statistics; tuning is in RingTransport

    def zc_stats(self):
        return {
            'zc_capable': self._zc_capable,
            'zc_write': self._zc_write,
            'zc_threshold': self._zc_threshold,
            'zc_bytes': self._st_zc_bytes,
            'copy_bytes': self._st_copy_bytes,
            'zc_copied': self._st_zc_copied,
            'demotions': self._st_demotions,
            'zc_refused': self._zc_refused,
            'pinned_bytes': self._zc_pinned,
            'sends': self._st_sends,
            'inline_sends': self._st_inline_sends,
        }


cdef uint64_t NO_OFFSET = <uint64_t>-1      # read/write at the file position (pipes)


cdef _start_reading_after(RingLoop loop, StreamTransport transport, object waiter):
    """After connection_made() (already scheduled): the waiter's result,
    then reading.  As in asyncio, the coroutine awaiting the waiter
    (create_connection(), connect_read_pipe()...) resumes before the first
    data_received(): its wakeup is scheduled when the waiter is set, so
    reading starts one callback hop after that, and the first recv is only
    submitted once the wakeup ran."""
    if waiter is None:
        loop._call_soon(transport._start_reading_cb, None, None)
    else:
        loop._call_soon(aio_futures._set_result_unless_cancelled, (waiter, None), None)
        loop._call_soon(transport._start_reading_next, None, None)


cdef inline Py_ssize_t _unsent_len(_SendOp op, Py_ssize_t i):
    # Bytes of op.entries[i] from where the request started: the first
    # entry may have been partly sent before (op.offset).
    return _entry_len(op.entries[i]) - (op.offset if i == 0 else 0)


cdef inline void _fill_iov(_SendOp op, int niov, Py_ssize_t offset):
    cdef int i
    for i in range(niov):
        entry = op.entries[i]
        op.iov[i].iov_base = _entry_ptr(entry)
        op.iov[i].iov_len = _entry_len(entry)
    op.iov[0].iov_base = <char*>op.iov[0].iov_base + offset
    op.iov[0].iov_len -= offset


cdef _settle_popped(_SendOp op, Py_ssize_t done, object exc):
    # The request ended without being re-queued (abort, send error): the
    # write_zc() buffers it took off the queue get `sent` resolved (done or
    # failed with exc) and the queue's hold dropped, so `released` resolves
    # at the request's final CQE.  A zero-copy chunk not popped is still at
    # the head of the queue (_drop_queue's business).
    cdef Py_ssize_t pos = 0, i
    if not op.popped:
        return
    for i in range(len(op.entries)):
        entry = op.entries[i]
        pos += _unsent_len(op, i)
        if type(entry) is _Pinned:
            (<_Pinned>entry).handle._set_sent(None if pos <= done else exc)
            (<_Pinned>entry)._unref()


cdef _send_error(int32_t res):
    err = -res
    if err == EPIPE:
        return BrokenPipeError(err, os.strerror(err))
    if err == ECONNRESET:
        return ConnectionResetError(err, os.strerror(err))
    if err == ECONNABORTED:
        return ConnectionAbortedError(err, os.strerror(err))
    return OSError(err, os.strerror(err))


cdef str _errno_name(int err):
    # errno.errorcode names 95 ENOTSUP; the socket calls document EOPNOTSUPP.
    if err == EOPNOTSUPP:
        return 'EOPNOTSUPP'
    return errno_mod.errorcode.get(err, str(err))


cdef _set_nodelay(sock):
    if (sock.family in (socket.AF_INET, socket.AF_INET6) and
            sock.type == socket.SOCK_STREAM and sock.proto == socket.IPPROTO_TCP):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


cdef bint _is_local_peer(object peer, object local, bint probe):
    """Is the peer (a socket address tuple) this host?  Loopback, the
    unspecified address and our own end's address are; with ``probe``, any
    other address of this host is too (_is_host_address)."""
    if not isinstance(peer, tuple) or not peer:
        return True
    host = peer[0]
    if isinstance(local, tuple) and local and local[0] == host:
        return True
    try:
        addr = ipaddress.ip_address(host.split('%', 1)[0])
    except ValueError:
        return False
    if getattr(addr, 'ipv4_mapped', None) is not None:
        addr = addr.ipv4_mapped
    if addr.is_loopback or addr.is_unspecified:
        return True
    return probe and _is_host_address(peer)


cdef bint _is_host_address(object peer):
    """Is the address of ``peer`` (a socket address tuple) one of this
    host's own?  The kernel answers, always current (addresses added or
    removed a moment ago, local routes included): bind() to an address that
    is not local fails with EADDRNOTAVAIL.  A few syscalls, so asked once
    per connection or datagram destination.  Where non-local binds are
    allowed (net.ipv4.ip_nonlocal_bind) every peer looks local: plain
    writes then copy, as they would have after the first notification."""
    cdef bint v6
    try:
        host = peer[0].split('%', 1)[0]
        addr = ipaddress.ip_address(host)
        v6 = addr.version == 6
        if v6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
            v6 = False
        probe = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
    except (ValueError, TypeError, IndexError, OSError):
        return False
    try:
        if v6:
            probe.bind((str(addr), 0, 0, peer[3] if len(peer) > 3 else 0))
        else:
            probe.bind((str(addr), 0))
    except OSError as exc:
        return exc.errno != errno_mod.EADDRNOTAVAIL
    finally:
        probe.close()
    return True

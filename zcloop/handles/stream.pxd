cdef class ZeroCopyWrite:
    cdef:
        readonly object sent
        readonly object released
        readonly Py_ssize_t nbytes
        bint _went_zc          # at least one byte went out as SEND_ZC
        bint _copied           # the kernel copied (COPIED notification or copy send)
        bint _usage_known      # every ZC notification carried usage bits

    cdef _set_sent(self, object exc)
    cdef _set_released(self)
    cdef _quarantined(self)


cdef class _Pinned:
    # A write_zc() buffer, pinned with PyObject_GetBuffer until the kernel
    # no longer references it.  refs = 1 while queued/unsent + 1 per ring
    # request covering it that has not seen its final CQE.
    cdef:
        Py_buffer view
        bint has_view
        ZeroCopyWrite handle
        int refs
        _BlockLease lease       # a BufferPool block: sent from its registered buffer

    cdef _unref(self)


cdef class _SendOp(UringOp):
    cdef:
        StreamTransport transport
        list entries            # bytes / _Pinned objects the request reads from
        Py_ssize_t offset       # bytes of entries[0] sent before this request
        Py_ssize_t nbytes       # bytes in the request
        bint zc
        bint implicit_zc        # ZC chosen for plain write() data
        bint popped             # entries left the queue with this request
        bint refused            # SEND_ZC refused (nothing sent); re-sent by copy
        bint fixed              # SEND_ZC from a registered buffer (no memlock budget)
        iovec *iov
        int iov_cap             # iovecs allocated at iov (kept across reuse)
        msghdr msg

    cdef int reserve_iov(self, int niov) except -1


cdef class _RecvOp(UringOp):
    cdef StreamTransport transport


cdef class StreamTransport(RingTransport):
    cdef:
        list _queue                  # a ring: bytes / _Pinned at [_queue_head, _queue_tail)
        Py_ssize_t _queue_head
        Py_ssize_t _queue_tail
        Py_ssize_t _queue_bytes      # unsent bytes in _queue: 0 exactly when it is empty
                                     # (no entry is empty; tested cheaper than the deque)
        Py_ssize_t _queue_offset     # bytes of _queue[_queue_head] already sent
        _SendOp _send_op             # the one send chain in flight, or None
        _SendOp _spare_send_op       # a finished copying request, for the next _flush()
        Py_ssize_t _inflight_bytes
        bint _flush_queued
        uint64_t _inline_iteration   # loop iteration of the last inline send()
        object _write_context        # context of the write() that found nothing
                                     # buffered: send completions run in it
        bint _eof                    # write_eof() called (half-close, not the
                                     # close state: docs/design.md "close/abort")

        _RecvOp _recv_op
        bint _recv_cancelled
        bint _paused
        bint _read_eof               # EOF read (half-close, as _eof)
        list _paused_data            # data that arrived while paused (None = EOF)
        bint _buffered               # protocol is a BufferedProtocol (or SSLProtocol)
        SSLProtocol _ssl             # the protocol when it is zcloop's TLS: fed directly
        char *_rbuf                  # own receive buffer without a buffer ring
        bint _is_pipe                # READ/WRITE(V) instead of RECV/SEND(MSG)

        bint _zc_peer_unverified     # _zc_write set, _is_host_address not asked yet
        object _waiter
        object _empty_waiter         # sendfile(): resolves when nothing is queued

        # statistics (zc_stats())
        Py_ssize_t _st_zc_bytes
        Py_ssize_t _st_copy_bytes
        Py_ssize_t _st_zc_copied
        Py_ssize_t _st_sends
        Py_ssize_t _st_inline_sends

    cdef _init_stream(self, RingLoop loop, object sock, object protocol, object waiter,
                      object extra, object server)
    cdef _enqueue(self, object entry, Py_ssize_t n)
    # The write path (stream.pyx, docs/design.md "Write path"):
    cdef bint _inline_ok(self, Py_ssize_t n)       # write(): send() now?
    cdef bint _send_inline(self, bytes data, Py_ssize_t n) except -1  # send() now
    cdef _flush(self)                              # once per iteration: one request
    cdef _SendOp _batch(self)                      # choose its entries (checks only)
    cdef bint _entry_zc(self, object entry, Py_ssize_t remaining)  # may it go zero-copy?
    cdef _prep_send(self, _SendOp op, io_uring_sqe *sqe)   # SEND/SENDMSG/SEND_ZC/WRITE(V)
    cdef _submitted(self, _SendOp op)              # entries leave the queue, budget pinned
    cdef bint _zc_peer_remote(self)
    cdef _on_send_done(self, _SendOp op, int32_t res, uint32_t flags)
    cdef _on_send_notif(self, _SendOp op, int32_t res)
    cdef _release_op(self, _SendOp op)
    cdef _requeue(self, _SendOp op, Py_ssize_t done)
    cdef _after_drain(self)
    cdef _drop_queue(self, object exc)
    cdef _queue_pop(self, Py_ssize_t count)
    cdef _shutdown_write(self)
    cdef _start_reading(self)
    cdef _arm_recv(self)
    cdef _on_recv(self, int32_t res, uint32_t flags)
    cdef int _deliver(self, const char *data, Py_ssize_t n, object obj) except -1
    cdef _on_eof(self)
    cdef _on_send_closed(self, _SendOp op, bint quarantined)
    # The close path (RingTransport's, transport.pyx), what a stream adds:
    cdef _stop_recv(self)
    cdef bint _sending(self)
    cdef _abort_writes(self, object exc)
    cdef bint _rst_if_pinned(self)
    cdef bint _reset(self)
    cdef _on_loop_close(self)

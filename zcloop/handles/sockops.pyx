# Low-level sock_* operations on the ring.

@cython.no_gc_clear
cdef class _SendAllOp(_FutureOp):
    # SEND with MSG_WAITALL of a pinned buffer; the buffer is released only
    # at the final CQE, even if the awaiting task was cancelled.

    def __dealloc__(self):
        if self.has_view:
            self.has_view = False
            PyBuffer_Release(&self.view)

    cdef int on_cqe(self, RingLoop loop, uint64_t user_data, int32_t res,
                    uint32_t flags) except -1:
        self.ud = 0
        if 0 < res and not self.fut.done():
            # A short count: the request was capped (SEND_MAX_REQUEST) or an
            # error follows; send the rest, which reports it.
            self.offset += res
            if self.offset < self.view.len:
                if self.sock.fileno() >= 0:
                    _sendall_submit(loop, self)
                    return 0
                res = -EBADF
        if self.has_view:
            self.has_view = False
            PyBuffer_Release(&self.view)
        self.sock = None
        if self.fut.done():
            return 0
        if res < 0:
            self.fut.set_exception(_send_error(res))
        else:
            self.fut.set_result(None)
        return 0



cdef object ring_sendall(RingLoop loop, object sock, object data):
    cdef _SendAllOp op = _SendAllOp()
    cdef io_uring_sqe *sqe
    cdef Py_ssize_t sent = 0
    PyObject_GetBuffer(data, &op.view, PyBUF_SIMPLE)
    op.has_view = True
    # Fast path, as asyncio: the socket usually has room.
    try:
        sent = sock.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except BaseException as exc:
        fut = loop.create_future()
        fut.set_exception(exc)
        return fut
    if sent >= op.view.len:
        fut = loop.create_future()
        fut.set_result(None)
        return fut
    op.sock = sock
    op.offset = sent
    return _sendall_submit(loop, op)


cdef _sendall_submit(RingLoop loop, _SendAllOp op):
    cdef io_uring_sqe *sqe = loop._sqe()
    cdef Py_ssize_t n = op.view.len - op.offset
    if n > SEND_MAX_REQUEST:
        n = SEND_MAX_REQUEST        # sqe->len is 32 bits; > INT_MAX is EINVAL
    io_uring_prep_send(sqe, op.sock.fileno(), <char*>op.view.buf + op.offset, n, SEND_FLAGS)
    return op._track_future(loop, sqe)

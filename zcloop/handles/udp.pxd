from .includes.liburing cimport msghdr, iovec


cdef class DatagramTransport(RingTransport)


cdef class _DgramRecv(UringOp):
    cdef:
        DatagramTransport transport     # set only while the RECVMSG is armed
        char *buf
        size_t bufsize
        msghdr msg
        iovec iov
        sockaddr_storage addr


cdef class _DgramSend(UringOp):
    cdef:
        DatagramTransport transport
        object data                     # bytes, referenced until the final CQE
        msghdr msg
        iovec iov
        sockaddr_storage addr
        socklen_t addrlen
        Py_ssize_t nbytes
        uint64_t seq                    # sendto() order, kept across EAGAIN retries
        bint zc                         # went out as SENDMSG_ZC
        bint zc_pinned                  # counted in the pinned budgets until the final CQE
        bint counted                    # nbytes still in the transport's buffer size
        bint done                       # completion (first CQE) seen


cdef class _DgramWritable(UringOp):
    cdef DatagramTransport transport


cdef class DatagramTransport(RingTransport):
    cdef:
        object _address                 # remote_addr given to create_datagram_endpoint
        bint _connected                 # the socket has a peer: send without a name
        int _family
        Py_ssize_t _buf_bytes           # queued + in flight, for flow control
        object _queue                   # deque of _DgramSend waiting for the next chain
        set _inflight                   # the chain on the ring: completion not seen yet
        uint64_t _send_seq
        bint _flush_queued              # in loop._pending_flush
        int _send_flags
        _DgramWritable _wpoll           # POLLOUT wait after EAGAIN, None if none
        _DgramRecv _recv                # its ud is the armed RECVMSG's (0 if none)
        list _send_errors
        bint _send_cb_pending
        # one-entry cache of the last destination converted to a sockaddr
        object _last_addr
        sockaddr_storage _last_ss
        socklen_t _last_sslen
        # zero-copy sends (docs/udp.md "Zero-copy")
        bint _zc_local_ok               # test hook: allow ZC to local peers
        bint _peer_local
        bytes _host_key                 # last unconnected ZC destination (sockaddr bytes)...
        bint _host_key_local            # ... and whether it is an address of this host
        Py_ssize_t _st_zc_sends
        Py_ssize_t _st_copy_sends
        Py_ssize_t _st_zc_bytes
        Py_ssize_t _st_copy_bytes
        Py_ssize_t _st_zc_copied

    cdef _arm_recv(self)
    cdef _on_recv(self, _DgramRecv op, int32_t res, uint32_t flags)
    cdef _schedule_flush(self)
    cdef _flush(self)
    cdef _submit(self, _DgramSend op, bint link)
    cdef _fill(self)
    cdef _requeue(self, _DgramSend op, uint32_t flags)
    cdef _arm_wpoll(self)
    cdef _on_writable(self, _DgramWritable op, int32_t res)
    cdef Py_ssize_t _buffer_size(self)
    cdef _on_send(self, _DgramSend op, int32_t res, uint32_t flags)
    cdef bint _dest_is_host(self, _DgramSend op)
    cdef _schedule_send_cb(self)
    cdef _stop_recv(self)
    cdef bint _sending(self)
    cdef _abort_writes(self, object exc)

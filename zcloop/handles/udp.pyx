# Datagram transports on the ring (asyncio's _SelectorDatagramTransport
# semantics; design notes in docs/udp.md).
#
# Receive: one RECVMSG in flight per transport, into a buffer owned by the
# _DgramRecv op (64 KiB for IP, asyncio's max_size of 256 KiB otherwise),
# re-armed at each completion.  Send: every sendto() copies the datagram
# into an exact bytes object (as asyncio buffers bytes(data)); the datagrams
# queued during a loop iteration go out as one linked chain of SENDMSGs
# (see _fill).  Large datagrams to non-local peers may go out as
# SENDMSG_ZC; the op then keeps its bytes until the notification CQE.
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

cdef extern from "<errno.h>":
    int ENOTSOCK, EFAULT

# Longest IOSQE_IO_LINK chain of sends; more wait for the next chain.
cdef Py_ssize_t _DGRAM_CHAIN_MAX = 64
# Receive buffer: an IP datagram never exceeds 65535 bytes, so 64 KiB keeps
# every datagram whole; other families (AF_UNIX) get asyncio's max_size and
# are truncated where asyncio's recvfrom(max_size) truncates them.
cdef size_t _DGRAM_RECV_INET = 64 * 1024
cdef size_t _DGRAM_RECV_OTHER = 256 * 1024

# Python 3.13 sends empty datagrams (3.11/3.12 drop them in sendto()) and
# counts 8 bytes of header per buffered datagram in the write buffer size.
cdef bint _DGRAM_SEND_EMPTY = sys.version_info >= (3, 13)
cdef Py_ssize_t _DGRAM_HEADER = 8 if sys.version_info >= (3, 13) else 0


cdef bint _sockaddr_is_local(const sockaddr_storage *ss):
    # Loopback or unspecified peer: the kernel copies zero-copy pages on
    # local delivery, so SENDMSG_ZC would only cost (docs/design.md "Zero-copy").
    cdef const sockaddr_in *sin
    cdef const sockaddr_in6 *sin6
    cdef const unsigned char *a
    cdef int i
    if ss.ss_family == AF_INET:
        sin = <const sockaddr_in*>ss
        a = <const unsigned char*>&sin.sin_addr
        return a[0] == 127 or sin.sin_addr.s_addr == 0
    if ss.ss_family == AF_INET6:
        sin6 = <const sockaddr_in6*>ss
        a = <const unsigned char*>sin6.sin6_addr.s6_addr
        for i in range(10):
            if a[i] != 0:
                return False
        if a[10] == 0 and a[11] == 0:
            # :: or ::1 (or a deprecated v4-compatible address)
            for i in range(12, 15):
                if a[i] != 0:
                    return False
            return a[15] <= 1
        if a[10] == 0xff and a[11] == 0xff:
            # v4-mapped
            return a[12] == 127 or (a[12] == 0 and a[13] == 0 and a[14] == 0 and a[15] == 0)
        return False
    return True


cdef int _dgram_sockaddr(int family, object addr, sockaddr_storage *ss,
                         socklen_t *addrlen, bint *resolved) except -1:
    # Destination for sendto(): numeric hosts are converted directly; names
    # are resolved (blocking) as socket.sendto() itself would do.
    resolved[0] = False
    if family == AF_INET or family == AF_INET6:
        if isinstance(addr, tuple) and len(addr) >= 2:
            host = addr[0]
            if isinstance(host, (bytes, bytearray)):
                host = bytes(host).decode('idna')
            if host == '<broadcast>' and family == AF_INET:
                addr = ('255.255.255.255',) + addr[1:]
            elif host == '':
                addr = ('0.0.0.0' if family == AF_INET else '::',) + addr[1:]
            elif isinstance(host, str):
                try:
                    socket.inet_pton(family, host.partition('%')[0])
                except OSError:
                    infos = socket.getaddrinfo(host, addr[1], family, socket.SOCK_DGRAM)
                    addr = infos[0][4][:2] + tuple(addr[2:])
                    resolved[0] = True
    sockaddr_from_py(family, addr, ss, addrlen)
    return 0


@cython.final
cdef class _DgramRecv(UringOp):

    def __cinit__(self):
        self.buf = NULL

    def __dealloc__(self):
        # Only reached once no RECVMSG references the buffer: the loop holds
        # the op until its final CQE (or forever, if the loop closed first).
        if self.buf != NULL:
            PyMem_Free(self.buf)
            self.buf = NULL

    cdef int on_cqe(self, RingLoop loop, uint64_t user_data, int32_t res,
                    uint32_t flags) except -1:
        cdef DatagramTransport transport = self.transport
        self.transport = None
        if transport is not None:
            transport._on_recv(self, res, flags)
        return 0

    cdef int on_close(self, RingLoop loop) except -1:
        self.transport = None
        return 0


@cython.final
cdef class _DgramSend(UringOp):

    cdef int on_cqe(self, RingLoop loop, uint64_t user_data, int32_t res,
                    uint32_t flags) except -1:
        cdef DatagramTransport transport = self.transport
        if transport is not None:
            transport._on_send(self, res, flags)
        if not (flags & IORING_CQE_F_MORE):
            # Final CQE: the kernel is done with the bytes (they go with
            # the op); drop the back reference.
            self.transport = None
            if self.zc_pinned:
                self.zc_pinned = False
                if transport is not None:
                    transport._zc_unpin(self.nbytes, False)
        return 0

    cdef int on_close(self, RingLoop loop) except -1:
        self.transport = None
        return 0


@cython.final
cdef class _DgramWritable(UringOp):
    # POLLOUT wait after a send came back with EAGAIN.

    cdef int on_cqe(self, RingLoop loop, uint64_t user_data, int32_t res,
                    uint32_t flags) except -1:
        cdef DatagramTransport transport = self.transport
        self.transport = None
        if transport is not None:
            transport._on_writable(self, res)
        return 0

    cdef int on_close(self, RingLoop loop) except -1:
        self.transport = None
        return 0


cdef DatagramTransport _new_datagram_transport(RingLoop loop, object sock, object protocol,
                                               object address, object waiter, object extra):
    cdef DatagramTransport t = DatagramTransport.__new__(DatagramTransport)
    cdef _DgramRecv recv
    t._init_transport(loop, sock, protocol, extra, None)
    t._address = address
    t._family = sock.family
    t._connected = bool(t._extra.get('peername'))
    t._queue = collections.deque()
    t._inflight = set()
    t._send_errors = []
    t._zc_threshold = loop.zc_threshold
    t._send_flags = MSG_NOSIGNAL
    if t._family != AF_INET and t._family != AF_INET6:
        # AF_UNIX datagram sendmsg copies the payload before it finds the
        # peer's queue full and fails with EAGAIN; io_uring's internal retry
        # (after its poll fires) then reuses the consumed iterator and sends
        # an EMPTY datagram (seen on 6.18).  MSG_DONTWAIT makes the ring
        # return EAGAIN instead: the send is requeued and resubmitted from
        # a fresh SQE once POLLOUT fires.
        t._send_flags |= MSG_DONTWAIT
    # Zero-copy only for UDP over IP (AF_UNIX refuses it), towards other
    # hosts (local delivery copies anyway: docs/design.md "Zero-copy").
    t._zc_capable = ((t._family == AF_INET or t._family == AF_INET6) and
                     loop._op_ok(IORING_OP_SENDMSG_ZC) and
                     loop._feature('send_zc') and loop._feature('sendmsg_zc'))
    t._zc_write = t._zc_capable
    t._peer_local = True
    if t._connected and t._zc_capable:
        t._peer_local = _is_local_peer(t._extra.get('peername'), t._extra.get('sockname'), True)
    recv = _DgramRecv.__new__(_DgramRecv)
    recv.bufsize = (_DGRAM_RECV_INET if t._family == AF_INET or t._family == AF_INET6
                    else _DGRAM_RECV_OTHER)
    recv.buf = <char*>PyMem_Malloc(recv.bufsize)
    if recv.buf == NULL:
        raise MemoryError()
    t._recv = recv
    loop._call_soon(protocol.connection_made, (t,), None)
    # Only start reading once connection_made() has run (as asyncio).
    loop._call_soon(t._start_reading, None, None)
    if waiter is not None:
        loop._call_soon(aio_futures._set_result_unless_cancelled, (waiter, None), None)
    return t


@cython.no_gc_clear
cdef class DatagramTransport(RingTransport):
    """Datagram transport on io_uring (asyncio.DatagramTransport API)."""

    def __init__(self, *args, **kwargs):
        raise TypeError('DatagramTransport is created by loop.create_datagram_endpoint()')

    # -- receive

    def _start_reading(self):
        if self._state != TS_OPEN:
            return
        self._arm_recv()

    cdef _arm_recv(self):
        cdef _DgramRecv op = self._recv
        cdef io_uring_sqe *sqe
        if op is None or op.ud or self._state != TS_OPEN:
            return
        op.iov.iov_base = op.buf
        op.iov.iov_len = op.bufsize
        op.msg.msg_name = &op.addr
        op.msg.msg_namelen = sizeof(sockaddr_storage)
        op.msg.msg_iov = &op.iov
        op.msg.msg_iovlen = 1
        op.msg.msg_control = NULL
        op.msg.msg_controllen = 0
        op.msg.msg_flags = 0
        sqe = self._loop._sqe()
        io_uring_prep_recvmsg(sqe, self._fd, &op.msg, 0)
        self._loop._submit(op, sqe)
        op.transport = self

    cdef _on_recv(self, _DgramRecv op, int32_t res, uint32_t flags):
        if self._state != TS_OPEN or res == -ECANCELED:
            return
        if res >= 0:
            # MSG_TRUNC: res is what fit in the buffer, which is what
            # asyncio's recvfrom(max_size) returns too.
            data = PyBytes_FromStringAndSize(op.buf, res)
            addr = sockaddr_to_py(&op.addr, op.msg.msg_namelen)
            self._loop._call_soon(self._deliver, (data, addr), self._context)
        elif res == -EAGAIN or res == -EINTR:
            pass
        elif res == -EBADF or res == -ENOTSOCK or res == -EINVAL or res == -EFAULT:
            # The socket itself is unusable: re-arming would spin.
            self._loop._call_soon(self._read_fatal, (OSError(-res, os.strerror(-res)),),
                                  self._context)
            return
        else:
            # ICMP errors (ECONNREFUSED, EHOSTUNREACH, ...) reported by the
            # socket: asyncio passes recvfrom()'s OSError to error_received().
            self._loop._call_soon(self._deliver_error, (OSError(-res, os.strerror(-res)),),
                                  self._context)
        self._arm_recv()

    def _deliver(self, data, addr):
        if self._state >= TS_LOST:
            return
        self._protocol.datagram_received(data, addr)

    def _deliver_error(self, exc):
        if self._state >= TS_LOST:
            return
        self._protocol.error_received(exc)

    def _read_fatal(self, exc):
        self._fatal_error(exc, 'Fatal read error on datagram transport')

    # -- send

    def sendto(self, data, addr=None):
        """Send ``data`` to ``addr`` (None: the connected peer), without blocking."""
        cdef _DgramSend op
        cdef bint resolved = False
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f'data argument must be a bytes-like object, '
                            f'not {type(data).__name__!r}')
        if not _DGRAM_SEND_EMPTY and not data:
            return

        if self._address:
            if addr not in (None, self._address):
                raise ValueError(
                    f'Invalid address: must be None or {self._address}')
            addr = self._address

        if self._state >= TS_LOST:
            # asyncio counts (and after a threshold, logs) writes to a lost
            # connected endpoint; an unconnected one is treated the same way
            # here instead of failing on its closed socket.
            self._drop_write()
            return

        op = _DgramSend.__new__(_DgramSend)
        if self._connected or (addr is None and self._extra['peername'] is not None):
            # No address: to the connected peer.  An unnamed one (the other
            # end of an AF_UNIX socketpair) reads as '', which _connected
            # (as asyncio) takes for "not connected"; the kernel knows the
            # peer, so send there as uvloop does (asyncio fails the
            # transport with TypeError; docs/design.md).
            op.addrlen = 0
        elif self._last_addr is not None and addr == self._last_addr:
            memcpy(&op.addr, &self._last_ss, sizeof(sockaddr_storage))
            op.addrlen = self._last_sslen
        else:
            try:
                _dgram_sockaddr(self._family, addr, &op.addr, &op.addrlen, &resolved)
            except OSError as exc:
                self._protocol.error_received(exc)
                return
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, 'Fatal write error on datagram transport')
                return
            if not resolved:
                self._last_addr = addr
                memcpy(&self._last_ss, &op.addr, sizeof(sockaddr_storage))
                self._last_sslen = op.addrlen

        # Ensure that what we send is immutable (asyncio buffers bytes(data)).
        if type(data) is not bytes:
            data = bytes(data)
        op.data = data
        op.nbytes = len(<bytes>data)
        op.counted = True
        op.seq = self._send_seq
        self._send_seq += 1
        self._buf_bytes += op.nbytes + _DGRAM_HEADER
        self._queue.append(op)
        self._schedule_flush()
        self._maybe_pause_protocol()

    # Sends go to the ring as one IOSQE_IO_LINK chain at a time, built from
    # everything queued during a loop iteration (the loop calls _flush()
    # just before it enters the kernel).  The kernel runs a chain in order,
    # so datagrams leave in sendto() order even when the socket is full and
    # a send has to wait: AF_UNIX datagram sockets are ordered, and asyncio
    # never reorders either.  A failed send ends the chain; the rest come
    # back with -ECANCELED and are queued again in order.

    cdef _schedule_flush(self):
        if self._flush_queued or self._inflight or self._wpoll is not None or not self._queue:
            return
        self._flush_queued = True
        self._loop._pending_flush.append(self)

    cdef _flush(self):
        self._flush_queued = False
        self._fill()

    cdef _fill(self):
        cdef Py_ssize_t n = 0
        if self._inflight or self._wpoll is not None or self._state >= TS_LOST:
            return
        while self._queue and n < _DGRAM_CHAIN_MAX:
            n += 1
            self._submit(self._queue.popleft(), bool(self._queue) and n < _DGRAM_CHAIN_MAX)

    cdef _submit(self, _DgramSend op, bint link):
        cdef RingLoop loop = self._loop
        cdef io_uring_sqe *sqe
        cdef bint local
        op.iov.iov_base = PyBytes_AS_STRING(op.data)
        op.iov.iov_len = op.nbytes
        if self._connected:
            op.msg.msg_name = NULL
            op.msg.msg_namelen = 0
            local = self._peer_local
        else:
            op.msg.msg_name = &op.addr
            op.msg.msg_namelen = op.addrlen
            local = _sockaddr_is_local(&op.addr)
        op.msg.msg_iov = &op.iov
        op.msg.msg_iovlen = 1
        op.msg.msg_control = NULL
        op.msg.msg_controllen = 0
        op.msg.msg_flags = 0
        # Zero-copy from the threshold up, to other hosts, within the
        # pinned budgets, else copy (RingTransport._zc_admits, docs/udp.md).
        op.zc = (self._zc_admits(op.nbytes, True) and
                 (self._zc_local_ok or not (local or self._dest_is_host(op))) and
                 self._zc_fits(op.nbytes))
        op.done = False
        sqe = loop._sqe()
        if op.zc:
            io_uring_prep_sendmsg_zc(sqe, self._fd, &op.msg, self._send_flags)
            if loop._zc_report_usage:
                sqe.ioprio |= IORING_SEND_ZC_REPORT_USAGE
            self._st_zc_sends += 1
        else:
            io_uring_prep_sendmsg(sqe, self._fd, &op.msg, self._send_flags)
            self._st_copy_sends += 1
        if link:
            # Set at prep time: if _sqe() has to submit a full SQ, the chain
            # is merely split, never a flag written into a recycled SQE.
            sqe.flags |= IOSQE_IO_LINK
        loop._submit(op, sqe)
        if op.zc:
            op.zc_pinned = True
            self._zc_pin(op.nbytes, False)
        op.transport = self
        self._inflight.add(op)

    cdef _on_send(self, _DgramSend op, int32_t res, uint32_t flags):
        cdef RingLoop loop = self._loop
        if flags & IORING_CQE_F_NOTIF:
            # Zero-copy notification: the kernel let go of op.data (the op
            # is released with this CQE).  Copied = local delivery or a
            # device without ZC: stop paying for zero-copy on this socket.
            if op.zc and <uint32_t>res & IORING_NOTIF_USAGE_ZC_COPIED:
                self._st_zc_copied += 1
                self._demote()
            return
        if op.done:
            return
        op.done = True
        self._inflight.discard(op)
        if op.counted:
            if res == -ECANCELED or res == -EAGAIN:
                # -ECANCELED: an earlier send of the chain failed, this one
                # never ran.  -EAGAIN: the socket is non-blocking, so
                # io_uring's fallback gives up where the socket's poll did
                # not wait (unconnected AF_UNIX, a racing writer): wait for
                # POLLOUT first.
                self._requeue(op, flags)
                if res == -EAGAIN:
                    self._arm_wpoll()
            elif op.zc and self._zc_refusal(res, op.nbytes if op.zc_pinned else 0):
                # Zero-copy refused, nothing was sent: go again.
                op.zc = False       # nothing sent: its notification says nothing
                self._requeue(op, flags)
            else:
                op.counted = False
                self._buf_bytes -= op.nbytes + _DGRAM_HEADER
                if res < 0:
                    self._send_errors.append(OSError(-res, os.strerror(-res)))
                elif op.zc:
                    self._st_zc_bytes += res
                else:
                    self._st_copy_bytes += res
        if self._inflight:
            return
        # The chain is done.
        if self._queue:
            self._schedule_flush()
        if (self._send_errors or
                (self._protocol_paused and self._buf_bytes <= self._low_water) or
                (self._state == TS_CLOSING and not self._queue)):
            self._schedule_send_cb()

    cdef _requeue(self, _DgramSend op, uint32_t flags):
        # Back into the queue in sendto() order: requeued sends are older
        # than anything queued since, so they go near the front.
        cdef Py_ssize_t i = 0
        cdef _DgramSend other
        if flags & IORING_CQE_F_MORE:
            # The failed SQE still owns this op until its notification:
            # send the bytes again from a new op.
            other = _DgramSend.__new__(_DgramSend)
            other.data = op.data
            other.nbytes = op.nbytes
            memcpy(&other.addr, &op.addr, sizeof(sockaddr_storage))
            other.addrlen = op.addrlen
            other.seq = op.seq
            other.counted = True
            op.counted = False
            op = other
        for other in self._queue:
            if other.seq > op.seq:
                break
            i += 1
        self._queue.insert(i, op)

    cdef bint _dest_is_host(self, _DgramSend op):
        # An unconnected send to another address of this host (local
        # delivery copies): asked once per destination in a row.
        if self._connected:
            return False
        key = PyBytes_FromStringAndSize(<char*>&op.addr, op.addrlen)
        if key != self._host_key:
            self._host_key = key
            self._host_key_local = _is_host_address(sockaddr_to_py(&op.addr, op.addrlen))
        return self._host_key_local

    cdef _arm_wpoll(self):
        cdef _DgramWritable op
        cdef io_uring_sqe *sqe
        if self._wpoll is not None or self._state >= TS_LOST:
            return
        op = _DgramWritable.__new__(_DgramWritable)
        sqe = self._loop._sqe()
        io_uring_prep_poll_add(sqe, self._fd, POLLOUT)
        self._loop._submit(op, sqe)
        op.transport = self
        self._wpoll = op

    cdef _on_writable(self, _DgramWritable op, int32_t res):
        if self._wpoll is op:
            self._wpoll = None
        if self._state >= TS_LOST:
            return
        # On a poll error, the sends themselves report what is wrong.
        self._schedule_flush()

    cdef _schedule_send_cb(self):
        if not self._send_cb_pending:
            self._send_cb_pending = True
            self._loop._call_soon(self._send_cb, None, self._context)

    def _send_cb(self):
        # Protocol-visible consequences of send completions, run as a
        # callback (as asyncio's _sendto_ready).
        self._send_cb_pending = False
        errors = self._send_errors
        self._send_errors = []
        try:
            for exc in errors:
                if self._state >= TS_LOST:
                    break
                self._protocol.error_received(exc)
        finally:
            if self._state < TS_LOST:
                self._maybe_resume_protocol()
                if self._state == TS_CLOSING and not self._sending():
                    self._call_connection_lost(None)

    cdef Py_ssize_t _buffer_size(self):
        return self._buf_bytes

    # -- closing: RingTransport's path (transport.pyx "close state"), what
    # a datagram transport adds to it

    cdef _stop_recv(self):
        self._loop._cancel(self._recv)

    cdef bint _sending(self):
        return bool(self._inflight) or bool(self._queue)

    cdef _abort_writes(self, object exc):
        # Drop queued datagrams and cancel the ones on the ring (asyncio's
        # abort clears its buffer); their bytes stay with the ops until the
        # final CQEs.
        cdef _DgramSend op
        for op in self._queue:
            op.counted = False
        self._queue.clear()
        if self._wpoll is not None:
            self._loop._cancel(self._wpoll)
            self._wpoll = None
        for op in self._inflight:
            if op.counted:
                op.counted = False
                self._loop._cancel(op)
        self._buf_bytes = 0
        self._send_errors = []

    # -- zero-copy statistics; tuning is in RingTransport

    def zc_stats(self):
        return {
            'zc_capable': self._zc_capable,
            'zc_write': self._zc_write,
            'zc_threshold': self._zc_threshold,
            'zc_sends': self._st_zc_sends,
            'copy_sends': self._st_copy_sends,
            'zc_bytes': self._st_zc_bytes,
            'copy_bytes': self._st_copy_bytes,
            'zc_copied': self._st_zc_copied,
            'demotions': self._st_demotions,
            'zc_refused': self._zc_refused,
            'pinned_bytes': self._zc_pinned,
            'inflight': len(self._inflight),
            'queued': len(self._queue),
        }

    def _set_zc_local(self, bint allowed):
        # Tests: allow SENDMSG_ZC towards local peers (the kernel copies
        # and reports it, which demotes the transport).
        self._zc_local_ok = allowed

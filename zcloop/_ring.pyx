# zcloop's compiled core: asyncio's event loop on one io_uring per loop.
#
# Every wait is an io_uring_enter(): ready callbacks run, everything queued
# during the iteration (sends, poll re-arms, cancels) is submitted together
# with the wait for completions, and all CQEs are reaped in one batch.
cimport cython
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_DECREF
from cpython.mem cimport PyMem_Malloc, PyMem_Calloc, PyMem_Realloc, PyMem_Free
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, uint64_t, int64_t
from libc.string cimport memset, memcpy

from .includes.liburing cimport *
from .includes.system cimport *
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.buffer cimport (
    PyObject_CheckBuffer, PyObject_GetBuffer, PyBuffer_Release,
    PyBUF_SIMPLE, PyBUF_WRITABLE, PyBUF_C_CONTIGUOUS)
from .includes.python cimport (
    PyContext_Enter, PyContext_Exit, PyContext_CopyCurrent, PyErr_CheckSignals,
    PyThread_get_thread_ident, _PyBytes_Resize, PyBytes_AS_STRING_PTR, PyListObject)
from cpython.float cimport PyFloat_CheckExact
from cpython.long cimport PyLong_CheckExact

include "includes/stdlib.pxi"


# Same constants as asyncio.base_events.
cdef int _MIN_SCHEDULED_TIMER_HANDLES = 100
cdef double _MIN_CANCELLED_TIMER_HANDLES_FRACTION = 0.5
cdef double MAXIMUM_SELECT_TIMEOUT = 24 * 3600
# How asyncio's _run_once() treats a NaN timer deadline: min(max(0, NaN), ...)
# gave 0 up to 3.12; 3.13 compares instead and hands NaN to the selector.
cdef bint _NAN_TIMEOUT_RAISES = sys.version_info >= (3, 13)

# Default ring sizes (docs/design.md "The loop"): 2 CQEs per zero-copy send plus
# multishot bursts, so the CQ is 4x the SQ.
cdef unsigned SQ_ENTRIES = 1024
cdef unsigned CQ_ENTRIES = 4096

# Buffer group of the loop-wide provided-buffer ring for receives.
cdef int RECV_BGID = 0
# A write() may send() at once (stream.pyx _send_inline) only in iterations
# that reap at most this many completions (counted before they are
# dispatched, so the writes of their own callbacks see this iteration's count).  In a light iteration sending
# at once gets the data moving while the loop goes on; in a busy one the
# iteration's io_uring_enter() carries all the writes for one syscall.
# Measured: 16 kept the inline gain on the 10-connection echo (1 KiB: 1.14x
# uvloop, was 1.04x) and the batching gain on aiohttp with 50 connections
# (1.18x; 1.02x with inline sends in every iteration).
cdef Py_ssize_t INLINE_SEND_MAX_BATCH = 16
# loop.close(): longest wait for cancelled requests that keep completing.
cdef double DRAIN_MAX = 10.0
# loop.close(): wait for the final CQEs of cancelled requests this long, or
# DRAIN_PINNED while zero-copy notifications (which wait for the peer's ACK)
# are outstanding; DRAIN_AFTER_RESET after resetting connections that still
# pin zero-copy pages.
cdef double DRAIN_TIMEOUT = 0.25
cdef double DRAIN_PINNED = 1.0
cdef double DRAIN_AFTER_RESET = 0.25
# Request ids: slot generation << 32 | slot index.  Generation 0 and this
# one never name a request (cancels use 0; liburing's own timeouts -1).
# A typed constant: a bare 0xFFFFFFFF literal made Cython compare through
# Python ints on every submission and completion.
cdef uint32_t GEN_RESERVED = 0xFFFFFFFF
cdef unsigned BUF_RING_STEP = 16       # buffers provided at first / per ENOBUFS
cdef uint32_t RECV_BUF_COUNT = 256     # most buffers in the ring
cdef uint32_t SLOTS_FIRST = 256        # request slots before the table first grows
# Smallest payload sent zero-copy by default (loop.zc_threshold): below it,
# pinning and the notification cost more than the copy (docs/design.md).
cdef Py_ssize_t ZC_THRESHOLD_DEFAULT = 16 * 1024
# A 100 KiB message arrives in one completion (one data_received(), one
# send) instead of two: 30-50% more throughput on the 100 KiB echo than
# 64 KiB buffers.  Measured on the one-way 1 MiB stream (one connection,
# receive only): buffers of 64-120 KiB give 1.08-1.12x uvloop, buffers of
# 128 KiB or more 0.89x (more contention on the socket lock with the
# sender; no page faults either way), so 120 KiB.  That also keeps the
# bytes object that replaces a handed-over buffer under glibc's 128 KiB mmap
# threshold: it comes from the heap (recently freed, cache-hot), not from a
# fresh mmap (a page fault per 4 KiB).
cdef uint32_t RECV_BUF_SIZE = 120 * 1024
cdef Py_ssize_t BUF_HANDOVER_MIN = 16 * 1024

F_SETPIPE_SZ = getattr(fcntl, 'F_SETPIPE_SZ', 1031)
_CLEANUP_SOCKET_DEFAULT = sys.version_info >= (3, 13)
# loop.create_task(coro, **kwargs) as base_events has it from 3.14 on:
# name= and context= reach a task factory.  (3.13.3 alone did so too, by
# accident; 3.13.4 went back to the older contract.)
cdef bint _TASK_FACTORY_GETS_NAME = sys.version_info >= (3, 14)

# Objects the kernel may still reference when a loop closed without seeing
# their last CQE: never freed (leaking is safe, freeing is not).
_quarantine = []

_FEATURE_NAMES = frozenset({
    'single_issuer', 'defer_taskrun', 'coop_taskrun', 'submit_all',
    'send_zc', 'sendmsg_zc', 'report_usage', 'recv_multishot', 'buf_ring',
    'accept_multishot', 'registered_ring_fd', 'fixed_buffers',
})

include "cbhandles.pyx"
include "ops.pyx"
include "sockaddr.pyx"
include "handles/transport.pyx"
include "handles/stream.pyx"
include "handles/server.pyx"
include "handles/pipe.pyx"
include "handles/futureops.pyx"
include "handles/udp.pyx"
include "pool.pyx"
include "sslproto.pyx"
include "api_streams.pyx"
include "api_subprocess.pyx"
include "api_sendfile.pyx"
include "api_datagram.pyx"
include "errors.pyx"


cdef class RingLoop:
    """The io_uring event loop (compiled part of zcloop.Loop)."""

    def __cinit__(self):
        self._ring_ready = False
        self._slot_op = NULL
        self._slot_gen = NULL
        self._slot_free = NULL
        self._slot_cap = 0
        self._slot_nfree = 0
        self._slot_next_gen = 1
        self._wake_fd = -1
        self._buf_ring = NULL
        self._buf_objs = NULL
        self._thread_id = 0
        memset(self._op_supported, 0, sizeof(self._op_supported))

    def __init__(self, *, disable_features=None):
        disabled = set(_env_disabled_features())
        if disable_features:
            disabled.update(disable_features)
        unknown = disabled - _FEATURE_NAMES
        if unknown:
            raise ValueError(f'unknown zcloop feature(s): {", ".join(sorted(unknown))}; '
                             f'known: {", ".join(sorted(_FEATURE_NAMES))}')
        self._disabled_features = frozenset(disabled)
        self._ready = []
        self._ready_spare = []
        self._timers = []
        self._timer_cancelled_count = 0
        self._call_at_overridden = type(self).call_at is not RingLoop.call_at
        self._stopping = False
        self._closed = False
        self._running = False
        self._debug = aio_coroutines._is_debug_mode()
        self._clock_resolution = time_get_clock_info('monotonic').resolution
        self._exception_handler = None
        self._task_factory = None
        self._default_executor = None
        self._executor_shutdown_called = False
        self._asyncgens = weakref.WeakSet()
        self._asyncgens_shutdown_called = False
        self._current_handle = None
        self.slow_callback_duration = 0.1
        self._signal_handlers = {}
        self._old_wakeup_fd = None
        self._fd_watchers = {}
        self._pending_polls = []
        self._pending_flush = []
        # Weak values, as asyncio: a transport nobody references (after
        # loop.close()) is collected and closes its socket.
        self._transports = weakref.WeakValueDictionary()
        self._unix_server_sockets = {}
        self._buf_size = RECV_BUF_SIZE
        self._buf_count = RECV_BUF_COUNT
        self.zc_threshold = ZC_THRESHOLD_DEFAULT
        self._zc_budget = self._zc_budget_max = _zc_default_budget()
        self._zc_pinned_total = 0
        self._zc_charged = 0
        self._zc_report_usage = self._feature('report_usage')
        self._fixed_slots = None
        self._fixed_reason = None
        self._owner_pid = getpid()
        self._grow_slots()
        self._setup_ring()

        self._wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)
        if self._wake_fd < 0:
            exc = OSError(errno, os.strerror(errno))
            self._close_ring()
            raise exc
        self._wake_pending = False
        self._wake_op = _WakeupRead()
        self._arm_wakeup()
        self._sig_rsock, self._sig_wsock = socket.socketpair()
        self._sig_rsock.setblocking(False)
        self._sig_wsock.setblocking(False)
        self._sig_op = _SignalRead()
        self._arm_signal_read()

    def __dealloc__(self):
        # Only reached without close(): the ring goes, but ops the kernel may
        # still touch are leaked rather than freed.
        cdef uint32_t i
        if self._ring_ready:
            self._ring_ready = False
            io_uring_queue_exit(&self._ring)
        if self._wake_fd >= 0:
            close(self._wake_fd)
            self._wake_fd = -1
        if self._slot_op != NULL:
            PyMem_Free(self._slot_op)
            PyMem_Free(self._slot_gen)
            PyMem_Free(self._slot_free)
            self._slot_op = NULL

    def __del__(self):
        # No ring: __init__ failed (io_uring unavailable, bad arguments), so
        # there is no loop the user could have closed.
        if not self._closed and self._ready is not None and self._ring_ready:
            warnings.warn(f"unclosed event loop {self!r}", ResourceWarning, source=self)
            if not self.is_running():
                self.close()

    def __repr__(self):
        return (f'<{self.__class__.__name__} running={self.is_running()} '
                f'closed={self.is_closed()} debug={self.get_debug()}>')

    # ------------------------------------------------------------------
    # Ring setup, submission and completion dispatch

    cdef bint _feature(self, str name):
        return name not in self._disabled_features

    cdef bint _op_ok(self, int op):
        return 0 <= op < OP_TABLE_SIZE and self._op_supported[op]

    cdef _setup_ring(self):
        cdef io_uring_params params
        cdef io_uring_probe *probe
        cdef int ret = 0
        cdef int op
        cdef uint32_t flags
        cdef unsigned sq
        ladder = []
        if self._feature('single_issuer') and self._feature('defer_taskrun'):
            ladder.append(IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN)
        if self._feature('coop_taskrun'):
            if self._feature('single_issuer'):
                ladder.append(IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN)
            ladder.append(IORING_SETUP_COOP_TASKRUN)
        ladder.append(0)
        submit_all_steps = [IORING_SETUP_SUBMIT_ALL, 0] if self._feature('submit_all') else [0]
        for extra in ladder:
            for submit_all in submit_all_steps:
                # Start disabled: the thread that first runs the loop enables
                # the ring and so becomes its single issuer.
                flags = IORING_SETUP_CQSIZE | IORING_SETUP_R_DISABLED | submit_all | extra
                memset(&params, 0, sizeof(params))
                params.flags = flags
                params.cq_entries = CQ_ENTRIES
                ret = io_uring_queue_init_params(SQ_ENTRIES, &self._ring, &params)
                sq = SQ_ENTRIES
                while ret == -ENOMEM and sq > 32:
                    # Without CAP_IPC_LOCK, recent kernels (6.18 here) charge
                    # the rings to RLIMIT_MEMLOCK again: take smaller ones.
                    sq //= 2
                    memset(&params, 0, sizeof(params))
                    params.flags = flags
                    params.cq_entries = 4 * sq
                    ret = io_uring_queue_init_params(sq, &self._ring, &params)
                if ret == 0:
                    break
                if ret != -EINVAL:
                    raise IoUringUnavailableError(_unavailable_reason(-ret))
            if ret == 0:
                break
        if ret != 0:
            raise IoUringUnavailableError(_unavailable_reason(-ret))
        self._ring_ready = True
        self._ring_enabled = False
        self._setup_flags = flags & ~IORING_SETUP_R_DISABLED
        self._ring_features = params.features

        probe = io_uring_get_probe_ring(&self._ring)
        if probe != NULL:
            for op in range(min(<int>probe.last_op + 1, OP_TABLE_SIZE)):
                self._op_supported[op] = uring_opcode_supported(probe, op)
            io_uring_free_probe(probe)
        missing = [name for name, op in _required_ops() if not self._op_ok(op)]
        if missing:
            self._close_ring()
            raise IoUringUnavailableError(
                f'this kernel ({os.uname().release}) lacks io_uring operations zcloop needs '
                f'({", ".join(missing)}): zcloop needs Linux >= 5.19; use '
                f'zcloop.new_event_loop(fallback=True) or ZCLOOP_FALLBACK=1 to run on '
                f"asyncio's loop instead")

    cdef _enable_ring(self):
        cdef int ret
        # The kernel thread id: pthread idents are reused as soon as a thread
        # is joined, so a new thread could pass for the ring's issuer.
        cdef long thread_id = threading.get_native_id()
        if self._ring_enabled:
            if (self._setup_flags & IORING_SETUP_SINGLE_ISSUER and
                    thread_id != self._ring_thread):
                raise RuntimeError(
                    'this zcloop loop was first run in another thread and its io_uring '
                    '(IORING_SETUP_SINGLE_ISSUER) accepts submissions from that thread '
                    'only; create one loop per thread')
            return
        ret = io_uring_enable_rings(&self._ring)
        if ret < 0:
            raise OSError(-ret, 'io_uring_enable_rings: ' + os.strerror(-ret))
        self._ring_enabled = True
        self._ring_thread = thread_id
        if (self._setup_flags & IORING_SETUP_SINGLE_ISSUER and
                self._feature('registered_ring_fd')):
            # The registered ring fd is per thread, so only for a ring that
            # stays on one thread; saves an fdget/fdput per io_uring_enter.
            io_uring_register_ring_fd(&self._ring)     # best effort: 1 if registered

    cdef _grow_slots(self):
        cdef uint32_t old = self._slot_cap
        cdef uint32_t new = old * 2 if old else SLOTS_FIRST
        cdef uint32_t i
        cdef PyObject **ops = <PyObject**>PyMem_Realloc(self._slot_op, new * sizeof(PyObject*))
        if ops == NULL:
            raise MemoryError()
        self._slot_op = ops
        cdef uint32_t *gens = <uint32_t*>PyMem_Realloc(self._slot_gen, new * sizeof(uint32_t))
        if gens == NULL:
            raise MemoryError()
        self._slot_gen = gens
        cdef uint32_t *free = <uint32_t*>PyMem_Realloc(self._slot_free, new * sizeof(uint32_t))
        if free == NULL:
            raise MemoryError()
        self._slot_free = free
        for i in range(old, new):
            self._slot_op[i] = NULL
            self._slot_gen[i] = 0
        # Hand out low slots first.
        # (i counts down from new to old + 1: "old - 1" would wrap at 0.)
        for i in range(new, old, -1):
            self._slot_free[self._slot_nfree] = i - 1
            self._slot_nfree += 1
        self._slot_cap = new

    cdef io_uring_sqe *_sqe(self) except NULL:
        cdef io_uring_sqe *sqe
        if not self._ring_ready:
            # The ring is gone (loop closed): e.g. resume_reading() on a
            # transport of a closed loop.  asyncio raises the same.
            raise RuntimeError('Event loop is closed')
        sqe = io_uring_get_sqe(&self._ring)
        if sqe == NULL:
            # SQ full: push what is queued to the kernel and take a fresh one.
            io_uring_submit(&self._ring)
            sqe = io_uring_get_sqe(&self._ring)
            if sqe == NULL:
                raise RuntimeError('io_uring submission queue is full')
        return sqe

    cdef uint64_t _submit(self, UringOp op, io_uring_sqe *sqe) except 0:
        """Name the prepared ``sqe`` after ``op``: the slot keeps the op
        referenced until its final CQE, and ``op.ud`` is the user_data of the
        request in flight until then (the dispatcher clears it)."""
        cdef uint32_t idx, gen
        cdef uint64_t ud
        if self._slot_nfree == 0:
            self._grow_slots()
        self._slot_nfree -= 1
        idx = self._slot_free[self._slot_nfree]
        gen = self._slot_next_gen
        self._slot_next_gen += 1
        if self._slot_next_gen == GEN_RESERVED:
            self._slot_next_gen = 1
        Py_INCREF(op)
        self._slot_op[idx] = <PyObject*>op
        self._slot_gen[idx] = gen
        ud = (<uint64_t>gen << 32) | idx
        io_uring_sqe_set_data64(sqe, ud)
        op.ud = ud
        return ud

    cdef _cancel(self, UringOp op):
        """Cancel ``op``'s request in flight, if any; its final CQE still
        comes (usually -ECANCELED)."""
        if op is not None and op.ud:
            self._cancel_op(op.ud)

    cdef _cancel_op(self, uint64_t user_data):
        cdef io_uring_sqe *sqe
        if not self._ring_ready or user_data == 0:
            return
        sqe = self._sqe()
        io_uring_prep_cancel64(sqe, user_data, 0)
        io_uring_sqe_set_data64(sqe, 0)

    cdef int _wait(self, double timeout) except -1:
        """Submit everything queued and wait for completions."""
        cdef __kernel_timespec ts
        cdef io_uring_cqe *cqe = NULL
        cdef int ret
        if timeout == 0:
            with nogil:
                ret = io_uring_submit_and_get_events(&self._ring)
        elif timeout < 0:
            with nogil:
                ret = io_uring_submit_and_wait_timeout(&self._ring, &cqe, 1, NULL, NULL)
        else:
            ts.tv_sec = <long long>timeout
            ts.tv_nsec = <long long>((timeout - <double>ts.tv_sec) * 1e9)
            with nogil:
                ret = io_uring_submit_and_wait_timeout(&self._ring, &cqe, 1, &ts, NULL)
        if ret < 0:
            if ret == -EINTR:
                # A signal interrupted the wait: run Python-level handlers
                # now (KeyboardInterrupt propagates, as with select()).
                PyErr_CheckSignals()
            elif ret != -ETIME and ret != -EAGAIN and ret != -EBUSY:
                raise OSError(-ret, 'io_uring_enter: ' + os.strerror(-ret))
        return 0

    cdef Py_ssize_t _reap(self) except -1:
        """Dispatch every CQE in the ring; return how many there were."""
        cdef unsigned n, i, j
        cdef Py_ssize_t total = 0
        while True:
            n = uring_reap(&self._ring, self._cqes, REAP_BATCH)
            for i in range(n):
                try:
                    self._dispatch(&self._cqes[i])
                except BaseException:
                    # A Python signal handler raised (PyErr_CheckSignals in
                    # _on_signal_bytes).  The rest of the batch is already
                    # consumed from the CQ: dispatch it before propagating,
                    # or its ops would never complete nor free their slots.
                    for j in range(i + 1, n):
                        try:
                            self._dispatch(&self._cqes[j])
                        except BaseException:
                            pass
                    raise
            total += n
            if n < REAP_BATCH:
                return total

    cdef int _dispatch(self, uring_cqe *cqe) except -1:
        cdef uint64_t ud = cqe.user_data
        cdef uint32_t idx = <uint32_t>ud          # low half (C truncation)
        cdef uint32_t gen = <uint32_t>(ud >> 32)
        cdef PyObject *obj
        cdef UringOp op
        if gen == 0 or gen == GEN_RESERVED or idx >= self._slot_cap:
            return 0        # cancel requests, liburing's internal timeouts
        if self._slot_gen[idx] != gen:
            return 0        # stale CQE of a recycled slot
        obj = self._slot_op[idx]
        if obj == NULL:
            return 0
        op = <UringOp>obj
        if not (cqe.flags & IORING_CQE_F_MORE):
            # Final CQE: the kernel is done with this request's memory.
            self._slot_op[idx] = NULL
            self._slot_gen[idx] = 0
            self._slot_free[self._slot_nfree] = idx
            self._slot_nfree += 1
            if op.ud == ud:
                op.ud = 0       # (not if the op was re-submitted meanwhile)
            Py_DECREF(op)
        if self._closed:
            # Draining in close(): only release memory, and what on_close()
            # releases (a child watcher's pidfd) for requests that end here.
            if not (cqe.flags & IORING_CQE_F_MORE):
                op.on_close(self)
            return 0
        return op.on_cqe(self, ud, cqe.res, cqe.flags)

    cdef _drain_ring(self, double deadline):
        cdef io_uring_sqe *sqe
        if self._slot_nfree == self._slot_cap:
            return
        sqe = self._sqe()
        io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL)
        io_uring_sqe_set_data64(sqe, 0)
        # The deadline is for a ring that stopped making progress: thousands
        # of connections cancelled at once on a loaded machine take longer
        # than it, so each completion reaped extends it (up to DRAIN_MAX).
        cdef double timeout = deadline - self._time()
        cdef double limit = self._time() + DRAIN_MAX
        while self._slot_nfree < self._slot_cap:
            now = self._time()
            if now >= deadline:
                break
            self._wait(min(deadline - now, 0.05))
            if self._reap() > 0:
                deadline = min(max(deadline, self._time() + timeout), limit)

    cdef _close_ring(self):
        cdef uint32_t i
        cdef PyObject *obj
        cdef UringOp op
        if not self._ring_ready:
            return
        forked = getpid() != self._owner_pid
        # A ring never enabled has had nothing submitted: its ops are free.
        idle = not self._ring_enabled
        # close() from a thread other than a SINGLE_ISSUER ring's issuer
        # (loop run in a worker thread, closed by the main thread): it can
        # neither submit the cancel nor reap, so closing the ring fd is what
        # cancels everything.
        foreign = (not idle and (self._setup_flags & IORING_SETUP_SINGLE_ISSUER) != 0 and
                   <long>threading.get_native_id() != self._ring_thread)
        if not forked and not idle and not foreign:
            # Cancel everything, then wait for final CQEs so no buffer the
            # kernel still references is freed.  Zero-copy notifications
            # wait for the peer's ACK, hence the longer deadline when any
            # are outstanding.
            try:
                self._drain_ring(self._time() + self._close_drain_timeout())
                if self._slot_nfree < self._slot_cap and self._reset_pinned_transports():
                    self._drain_ring(self._time() + DRAIN_AFTER_RESET)
            except BaseException:
                pass
        leaked = 0
        self._quarantining = not idle
        for i in range(self._slot_cap):
            obj = self._slot_op[i]
            if obj != NULL:
                op = <UringOp>obj
                self._slot_op[i] = NULL
                self._slot_gen[i] = 0
                try:
                    op.on_close(self)
                except BaseException:
                    pass
                if not idle:
                    # Keep the slot's reference forever.
                    _quarantine.append(op)
                    # The loop's own eventfd/signal reads fill buffers inside
                    # the loop and get no data once it is closed: not a leak
                    # worth a warning.
                    if not isinstance(op, (_WakeupRead, _SignalRead)):
                        leaked += 1
                Py_DECREF(op)
        self._quarantining = False
        self._slot_nfree = 0
        for i in range(self._slot_cap):
            self._slot_free[self._slot_nfree] = self._slot_cap - 1 - i
            self._slot_nfree += 1
        if leaked and not forked:
            logger.warning('zcloop: %d io_uring operation(s) still in flight at loop '
                           'close; their buffers are kept alive forever', leaked)
        self._ring_ready = False
        io_uring_queue_exit(&self._ring)
        # With requests left in flight the kernel may still pick and fill a
        # provided buffer: keep them (and the ring memory) forever then.
        self._free_buf_ring(leaked > 0 or forked)

    def _reset_pinned_transports(self):
        # Zero-copy pages sent to a peer that does not read are released
        # only when the connection goes: transports still holding them reset
        # their connections (RingTransport._reset) so the notifications
        # arrive and the fds are not kept forever by quarantined requests.
        n = 0
        for transport in list(self._transports.values()):
            if (<RingTransport>transport)._reset():
                n += 1
        return n

    def _close_drain_timeout(self):
        return DRAIN_PINNED if self._zc_pinned_total or self._pools_inflight() else DRAIN_TIMEOUT

    def _fixed_state(self):
        # 'unused' (no pool yet), 'registered', or why the last pool is not.
        if self._fixed_slots is None:
            return 'unused'
        if self._fixed_reason is not None:
            return self._fixed_reason
        for pool in reversed(_zc_pools):
            if (<BufferPool>pool)._loop is self:
                return (<BufferPool>pool)._fixed
        return 'registered'

    def _pools_inflight(self):
        return sum((<BufferPool>pool)._inflight for pool in _zc_pools
                   if (<BufferPool>pool)._loop is self)

    cdef bint _ensure_buf_ring(self) except -1:
        """Register the loop-wide provided-buffer ring on first use; False
        when it cannot be used (feature off, registration refused)."""
        cdef int err = 0
        if self._buf_ring != NULL:
            return True
        if self._buf_count == 0:
            return False
        if not self._feature('buf_ring'):
            self._buf_count = 0
            return False
        self._buf_ring = buf_ring_register(&self._ring, self._buf_count, RECV_BGID, 0,
                                              &self._buf_map_len, &err)
        if self._buf_ring == NULL:
            logger.info('zcloop: provided-buffer ring unavailable (%s); using one-shot '
                        'receives', os.strerror(-err))
            self._buf_count = 0
            return False
        self._buf_objs = <PyObject**>PyMem_Calloc(self._buf_count, sizeof(PyObject*))
        if self._buf_objs == NULL:
            raise MemoryError()
        self._buf_provided = 0
        self._grow_buf_ring()
        return True

    # The buffers are bytes objects: a receive of BUF_HANDOVER_MIN bytes or
    # more is handed to data_received() as the very object the kernel
    # filled (no copy) and a fresh one takes its place; malloc hands back
    # recently freed memory, so buffers stay cache-hot.  Smaller receives are
    # copied out and the buffer provided again at once.

    cdef _grow_buf_ring(self):
        # The ring is a FIFO, so every provided buffer is cycled through:
        # start with a few and add more only when the kernel ran out
        # (ENOBUFS); with 256 x 64 KiB from the start the 100 KiB echo cost
        # about 40% more CPU.
        cdef unsigned n, i
        if self._buf_ring == NULL or self._buf_provided >= self._buf_count:
            return
        n = min(BUF_RING_STEP, self._buf_count - self._buf_provided)
        for i in range(n):
            self._buf_provide_new(self._buf_provided + i, i)
        buf_ring_commit(self._buf_ring, n)
        self._buf_provided += n

    cdef _buf_provide_new(self, unsigned bid, int offset):
        cdef object obj = PyBytes_FromStringAndSize(NULL, self._buf_size)
        Py_INCREF(obj)
        self._buf_objs[bid] = <PyObject*>obj
        buf_ring_push(self._buf_ring, PyBytes_AS_STRING(obj), self._buf_size, bid,
                         self._buf_count, offset)

    cdef char *_buf_ptr(self, unsigned bid):
        return PyBytes_AS_STRING_PTR(self._buf_objs[bid])

    cdef _recycle_buf(self, unsigned bid):
        if self._buf_ring != NULL:
            buf_ring_push(self._buf_ring, self._buf_ptr(bid), self._buf_size, bid,
                             self._buf_count, 0)
            buf_ring_commit(self._buf_ring, 1)

    cdef bytes _buf_take(self, unsigned bid, Py_ssize_t n):
        """The ``n`` bytes the kernel put in buffer ``bid``, as bytes; the
        buffer is provided again (or replaced) before this returns."""
        cdef PyObject *filled
        cdef object result
        if n < BUF_HANDOVER_MIN:
            result = PyBytes_FromStringAndSize(self._buf_ptr(bid), n)
            self._recycle_buf(bid)
            return result
        filled = self._buf_objs[bid]          # our only reference
        self._buf_objs[bid] = NULL
        self._buf_provide_new(bid, 0)
        buf_ring_commit(self._buf_ring, 1)
        _PyBytes_Resize(&filled, n)           # in place: shrinks the allocation
        result = <object>filled
        Py_DECREF(result)
        return result

    cdef _free_buf_ring(self, bint leak):
        cdef uint32_t i
        if self._buf_ring == NULL:
            return
        if not leak:
            for i in range(self._buf_count):
                if self._buf_objs[i] != NULL:
                    Py_DECREF(<object>self._buf_objs[i])
            PyMem_Free(self._buf_objs)
            munmap(<void*>self._buf_ring, self._buf_map_len)
        self._buf_objs = NULL
        self._buf_ring = NULL

    # The zero-copy budget (docs/design.md "Zero-copy"): memlock bytes as
    # the kernel charges them, so a budget within RLIMIT_MEMLOCK is not
    # refused for its per-request overhead.

    cdef bint _zc_fits(self, Py_ssize_t nbytes):
        """Check only: does the budget have room for ``nbytes`` more?"""
        cdef Py_ssize_t charge = _zc_charge(nbytes)
        cdef double now
        if self._zc_charged + charge > self._zc_budget:
            if self._zc_regrow_at == 0:
                return False
            # Cut by an ENOMEM: double it back (re-reading the limit), at
            # most once a second, so a lasting shortage costs at most one
            # refused request a second.
            now = self._time()
            if now < self._zc_regrow_at:
                return False
            self._zc_budget_max = _zc_default_budget()
            self._zc_budget = min(self._zc_budget_max,
                                  max(2 * self._zc_budget, self._zc_charged + charge))
            self._zc_regrow_at = (0 if self._zc_budget >= self._zc_budget_max
                                  else now + ZC_REGROW_INTERVAL)
            if self._zc_charged + charge > self._zc_budget:
                return False
        return True

    cdef _zc_reserve(self, Py_ssize_t nbytes):
        """Charge ``nbytes`` (admitted by _zc_fits) until _zc_unreserve."""
        self._zc_pinned_total += nbytes
        self._zc_charged += _zc_charge(nbytes)

    cdef _zc_unreserve(self, Py_ssize_t nbytes):
        self._zc_pinned_total -= nbytes
        self._zc_charged -= _zc_charge(nbytes)

    cdef _zc_nomem(self, Py_ssize_t held):
        """The kernel refused a zero-copy request with ENOMEM: memlock held
        elsewhere (other loops or processes of this user, registered
        buffers, a lowered limit) leaves less room than the budget.  Cut the
        budget to what the kernel was holding for this loop's other requests
        when it refused (``held``: payload of the refused request, if it is
        still reserved), so the retry goes by copy; re-read the limit."""
        self._zc_enomem += 1
        self._zc_budget_max = _zc_default_budget()
        self._zc_budget = min(self._zc_budget_max,
                              max(0, self._zc_charged - (_zc_charge(held) if held else 0)))
        self._zc_regrow_at = self._time() + ZC_REGROW_INTERVAL

    def zc_stats(self):
        """Loop-wide zero-copy state: pinned bytes, budget, probe results."""
        return {
            'send_zc': self._op_ok(IORING_OP_SEND_ZC) and self._feature('send_zc'),
            'report_usage': self._zc_report_usage,
            'threshold': self.zc_threshold,
            'pinned_bytes': self._zc_pinned_total,
            'charged_bytes': self._zc_charged,
            'budget': self._zc_budget,
            'budget_max': self._zc_budget_max,
            'enomem': self._zc_enomem,
            'fixed_buffers': self._fixed_state(),
            'fixed_sends': self._st_fixed_sends,
            'pools': sum(1 for pool in _zc_pools if (<BufferPool>pool)._loop is self),
            'recv_buffers': self._buf_provided,
            'recv_buffer_size': self._buf_size,
        }

    def create_zc_pool(self, block_size, blocks):
        """A BufferPool of ``blocks`` blocks of ``block_size`` bytes,
        registered with the ring so write_zc() from it pins nothing per send
        (see zcloop.BufferPool).  OSError(ENOMEM) if it does not fit in
        RLIMIT_MEMLOCK; where the ring refuses the registration the pool
        works unregistered (zc_stats()['fixed_buffers'] says why)."""
        self._check_closed()
        return _new_pool(self, block_size, blocks)

    def features(self):
        """What this loop's ring uses: setup flags, supported ops, switches."""
        flags = []
        for name, bit in _setup_flag_names():
            if self._setup_flags & bit:
                flags.append(name)
        ops = {name: bool(self._op_ok(op)) for name, op in _known_ops()}
        return {
            'setup_flags': flags,
            'ops': ops,
            'ext_arg': bool(self._ring_features & IORING_FEAT_EXT_ARG),
            'disabled': sorted(self._disabled_features),
            'send_zc': ops['SEND_ZC'] and self._feature('send_zc'),
            'sendmsg_zc': ops['SENDMSG_ZC'] and self._feature('sendmsg_zc'),
            'sq_entries': self._ring.sq.ring_entries if self._ring_ready else 0,
            'cq_entries': self._ring.cq.ring_entries if self._ring_ready else 0,
        }

    # ------------------------------------------------------------------
    # Running and stopping

    cdef _run_once(self):
        cdef double timeout = -1
        cdef double end_time, t0, dt
        cdef TimerHandle timer
        cdef Handle handle
        cdef Py_ssize_t ntodo, done
        cdef list ready
        cdef list scheduled = self._timers
        cdef Py_ssize_t sched_count = len(scheduled)

        if (sched_count > _MIN_SCHEDULED_TIMER_HANDLES and
                self._timer_cancelled_count / sched_count >
                _MIN_CANCELLED_TIMER_HANDLES_FRACTION):
            # Remove delayed calls that were cancelled if their number
            # is too high.
            new_scheduled = []
            for timer in scheduled:
                if timer._cancelled:
                    timer._scheduled = False
                else:
                    new_scheduled.append(timer)
            _heap_init(new_scheduled)
            self._timers = scheduled = new_scheduled
            self._timer_cancelled_count = 0
        else:
            # Remove delayed calls that were cancelled from head of queue.
            while scheduled and (<TimerHandle>_heap_items(scheduled)[0])._cancelled:
                self._timer_cancelled_count -= 1
                timer = _heap_pop(scheduled)
                timer._scheduled = False

        self._iteration += 1
        self._flush_pending()
        if self._ready or self._stopping:
            timeout = 0
        elif scheduled:
            timeout = (<TimerHandle>scheduled[0])._when - self._time()
            if not timeout >= 0:
                if _NAN_TIMEOUT_RAISES and timeout != timeout:
                    # 3.13+: asyncio passes a NaN deadline (a NaN timer at the
                    # heap's head, nothing ready) on to selector.select(),
                    # whose rounding to milliseconds raises this out of
                    # run_forever().  Up to 3.12 it waited 0 and ran it.
                    raise ValueError('cannot convert float NaN to integer')
                timeout = 0
            elif timeout > MAXIMUM_SELECT_TIMEOUT:
                timeout = MAXIMUM_SELECT_TIMEOUT
        self._wait(timeout)
        # Decided before the completions are dispatched: their protocol
        # callbacks (data_received(), ...) run inside _reap() and write.
        self._inline_sends = io_uring_cq_ready(&self._ring) <= INLINE_SEND_MAX_BATCH
        self._reap()

        # Handle 'later' callbacks that are ready.
        end_time = self._time() + self._clock_resolution
        while scheduled:
            if _timer_when(_heap_items(scheduled)[0]) >= end_time:
                break
            timer = _heap_pop(scheduled)
            timer._scheduled = False
            self._ready.append(timer)

        # Run only what was ready at this point: callbacks scheduled by
        # callbacks wait for the next iteration (as asyncio does), in the
        # other list.  Two lists, not a deque: deque.popleft() is a method
        # call by name from Cython, about 200 instructions per callback.
        ready = self._ready
        if not ready:
            return
        self._ready = self._ready_spare
        ntodo = len(ready)
        done = 0
        try:
            while done < ntodo:
                handle = <Handle>ready[done]
                ready[done] = None
                done += 1
                if handle._cancelled:
                    continue
                if self._debug:
                    t0 = self._time()
                    handle._run()
                    dt = self._time() - t0
                    if dt >= self.slow_callback_duration:
                        logger.warning('Executing %s took %.3f seconds', _format_handle(handle), dt)
                else:
                    handle._run()
        finally:
            if done < ntodo:
                # A BaseException escaped a callback: what it did not reach
                # stays ready, ahead of what was scheduled since.
                self._ready[0:0] = ready[done:]
            del ready[:]
            self._ready_spare = ready
            handle = None   # Needed to break cycles when an exception occurs.

    cdef _flush_pending(self):
        """Queue the SQEs that wait for the next io_uring_enter."""
        cdef _FdWatcher watcher
        cdef list polls
        cdef list flush
        if self._pending_polls:
            polls = self._pending_polls
            self._pending_polls = []
            for watcher in polls:
                watcher.queued = False
                self._arm_poll(watcher)
        if self._pending_flush:
            flush = self._pending_flush
            self._pending_flush = []
            for transport in flush:
                (<RingTransport>transport)._flush()

    cdef _check_closed(self):
        if self._closed:
            raise RuntimeError('Event loop is closed')

    cdef _check_thread(self):
        if self._thread_id == 0:
            return
        if <long>PyThread_get_thread_ident() != self._thread_id:
            raise RuntimeError(
                "Non-thread-safe operation invoked on an event loop other "
                "than the current one")

    def _check_running(self):
        if getpid() != self._owner_pid:
            # The child of a fork() shares the ring's memory with the parent:
            # submitting from here would corrupt the parent's loop.
            raise RuntimeError('this zcloop loop was created in another process '
                               '(before fork()); create a new loop in the child')
        if self.is_running():
            raise RuntimeError('This event loop is already running')
        if aio_events._get_running_loop() is not None:
            raise RuntimeError(
                'Cannot run the event loop while another loop is running')
        # Refuse a thread that can't drive the ring before
        # run_until_complete() wraps its coroutine in a task.
        self._enable_ring()

    def run_forever(self):
        """Run the event loop until stop() is called."""
        self._check_closed()
        self._check_running()
        self._set_coroutine_origin_tracking(self._debug)
        old_agen_hooks = sys.get_asyncgen_hooks()
        try:
            self._enable_ring()
            self._thread_id = <long>PyThread_get_thread_ident()
            self._running = True
            sys.set_asyncgen_hooks(firstiter=self._asyncgen_firstiter_hook,
                                   finalizer=self._asyncgen_finalizer_hook)
            aio_events._set_running_loop(self)
            self._install_signal_wakeup()
            while True:
                self._run_once()
                if self._stopping:
                    break
        finally:
            self._stopping = False
            self._running = False
            self._thread_id = 0
            self._restore_signal_wakeup()
            aio_events._set_running_loop(None)
            self._set_coroutine_origin_tracking(False)
            sys.set_asyncgen_hooks(*old_agen_hooks)

    def run_until_complete(self, future):
        """Run until the Future is done and return its result."""
        self._check_closed()
        self._check_running()
        new_task = not aio_futures.isfuture(future)
        future = aio_tasks.ensure_future(future, loop=self)
        if new_task:
            # An exception is raised if the future didn't complete, so there
            # is no need to log the "destroy pending task" message.
            future._log_destroy_pending = False
        future.add_done_callback(_run_until_complete_cb)
        try:
            self.run_forever()
        except:
            if new_task and future.done() and not future.cancelled():
                # The coroutine raised a BaseException. Consume the exception
                # to not log a warning, the caller doesn't have access to the
                # local task.
                future.exception()
            raise
        finally:
            future.remove_done_callback(_run_until_complete_cb)
        if not future.done():
            raise RuntimeError('Event loop stopped before Future completed.')
        return future.result()

    def stop(self):
        """Stop running the event loop after the current iteration."""
        self._stopping = True

    def is_running(self):
        """Return whether the event loop is currently running."""
        return self._running

    def is_closed(self):
        """Return True if the event loop was closed."""
        return self._closed

    def close(self):
        """Close the event loop: pending callbacks are dropped, in-flight ring
        operations are cancelled and drained, the default executor is shut
        down without waiting."""
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self._closed:
            return
        if self._debug:
            logger.debug("Close %r", self)
        for sig in list(self._signal_handlers):
            self.remove_signal_handler(sig)
        self._closed = True
        self._ready.clear()
        self._timers.clear()
        self._executor_shutdown_called = True
        executor = self._default_executor
        if executor is not None:
            self._default_executor = None
            executor.shutdown(wait=False)
        self._pending_polls = []
        for transport in list(self._transports.values()) + self._pending_flush:
            (<RingTransport>transport)._on_loop_close()
        self._pending_flush = []
        self._fd_watchers.clear()
        self._close_ring()
        for pool in list(_zc_pools):
            if (<BufferPool>pool)._loop is self:
                (<BufferPool>pool)._on_loop_close()
        if self._wake_fd >= 0:
            close(self._wake_fd)
            self._wake_fd = -1
        if self._sig_rsock is not None:
            self._sig_rsock.close()
            self._sig_wsock.close()
            self._sig_rsock = self._sig_wsock = None

    cdef double _time(self):
        cdef timespec ts
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9

    def time(self):
        """Return the time according to the event loop's clock (monotonic)."""
        return self._time()

    def get_debug(self):
        return self._debug

    def set_debug(self, enabled):
        self._debug = bool(enabled)
        if self.is_running():
            self.call_soon_threadsafe(self._set_coroutine_origin_tracking, self._debug)

    def _set_coroutine_origin_tracking(self, enabled):
        if enabled:
            sys.set_coroutine_origin_tracking_depth(aio_constants_DEBUG_STACK_DEPTH)
        else:
            sys.set_coroutine_origin_tracking_depth(0)

    # ------------------------------------------------------------------
    # Scheduling callbacks

    cdef Handle _call_soon(self, object callback, object args, object context):
        if context is None:
            context = PyContext_CopyCurrent()
        cdef Handle handle = new_handle(self, callback, args, context)
        if self._debug:
            handle._set_source_traceback()
        self._ready.append(handle)
        return handle

    cdef _add_ready(self, Handle handle):
        self._ready.append(handle)

    def call_soon(self, callback, *args, context=None):
        """Arrange for a callback to be called as soon as possible."""
        self._check_closed()
        if self._debug:
            self._check_thread()
            _check_callback(callback, 'call_soon')
        return self._call_soon(callback, args if args else None, context)

    def call_soon_threadsafe(self, callback, *args, context=None):
        """Like call_soon(), but thread-safe: wakes the loop's ring."""
        self._check_closed()
        if self._debug:
            _check_callback(callback, 'call_soon_threadsafe')
        handle = self._call_soon(callback, args if args else None, context)
        self._wakeup()
        return handle

    def call_later(self, delay, callback, *args, context=None):
        """Arrange for a callback to be called at a given time."""
        cdef double when
        if delay is None:
            raise TypeError('delay must not be None')
        if self._call_at_overridden:
            # As asyncio's: a subclass's call_at() sees call_later()'s timers.
            return self.call_at(self._time() + delay, callback, *args, context=context)
        if PyFloat_CheckExact(delay) or PyLong_CheckExact(delay):
            when = self._time() + <double>delay
        else:
            # Other numbers add as asyncio's time() + delay does.
            when = self._time() + delay
        self._check_closed()
        return self._call_at(when, callback, args if args else None, context)

    def call_at(self, when, callback, *args, context=None):
        """Like call_later(), but uses an absolute time (loop.time())."""
        if when is None:
            raise TypeError("when cannot be None")
        self._check_closed()
        return self._call_at(when, callback, args if args else None, context)

    @property
    def _scheduled(self):
        """A copy of the timer heap: asyncio's loop._scheduled, to look at.
        (The heap itself must hold only TimerHandles, so it is not shared.)"""
        return list(self._timers)

    cdef TimerHandle _call_at(self, double when, object callback, object args,
                              object context):
        if self._debug:
            self._check_thread()
            # call_later goes through call_at in asyncio: same message.
            _check_callback(callback, 'call_at')
        if context is None:
            context = PyContext_CopyCurrent()
        cdef TimerHandle timer = new_timer(self, when, callback, args, context)
        if self._debug:
            timer._set_source_traceback()
        _heap_push(self._timers, timer)
        timer._scheduled = True
        return timer

    cdef _timer_handle_cancelled(self, TimerHandle handle):
        if handle._scheduled:
            self._timer_cancelled_count += 1

    cdef _wakeup(self):
        cdef uint64_t one = 1
        if not self._wake_pending and self._wake_fd >= 0:
            self._wake_pending = True
            write(self._wake_fd, &one, sizeof(one))

    def _write_to_self(self):
        # Name kept from asyncio: some libraries call it to wake the loop.
        self._wakeup()

    cdef _arm_wakeup(self):
        cdef io_uring_sqe *sqe = self._sqe()
        io_uring_prep_read(sqe, self._wake_fd, &self._wake_value, sizeof(self._wake_value), 0)
        self._submit(self._wake_op, sqe)

    cdef _on_wakeup(self, int32_t res):
        self._wake_pending = False
        if self._wake_fd >= 0:
            self._arm_wakeup()

    # ------------------------------------------------------------------
    # Futures, tasks, executors

    def create_future(self):
        """Create a Future object attached to the loop."""
        return aio_futures.Future(loop=self)

    def create_task(self, coro, **kwargs):
        """Schedule a coroutine object; return a Task."""
        self._check_closed()
        if _TASK_FACTORY_GETS_NAME:
            # 3.14: every keyword (name and context included) goes to the
            # factory or Task as given; the loop names nothing itself.
            if self._task_factory is None:
                return aio_tasks.Task(coro, loop=self, **kwargs)
            return self._task_factory(self, coro, **kwargs)
        # Up to 3.13: the factory gets context= only when one is given, and
        # the loop names the task afterwards.
        name = kwargs.pop('name', None)
        context = kwargs.pop('context', None)
        if context is not None:
            kwargs['context'] = context
        if self._task_factory is None:
            # No "del task._source_traceback[-1]" as in asyncio: this method
            # has no frame, the last one is already the caller's.
            task = aio_tasks.Task(coro, loop=self, name=name, **kwargs)
        else:
            task = self._task_factory(self, coro, **kwargs)
            if name is not None:
                task.set_name(name)
        return task

    def set_task_factory(self, factory):
        if factory is not None and not callable(factory):
            raise TypeError('task factory must be a callable or None')
        self._task_factory = factory

    def get_task_factory(self):
        return self._task_factory

    def run_in_executor(self, executor, func, *args):
        self._check_closed()
        if self._debug:
            _check_callback(func, 'run_in_executor')
        if executor is None:
            executor = self._default_executor
            if self._executor_shutdown_called:
                raise RuntimeError('Executor shutdown has been called')
            if executor is None:
                executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix='asyncio')
                self._default_executor = executor
        return aio_futures.wrap_future(executor.submit(func, *args), loop=self)

    def set_default_executor(self, executor):
        if not isinstance(executor, concurrent.futures.ThreadPoolExecutor):
            raise TypeError('executor must be ThreadPoolExecutor instance')
        self._default_executor = executor

    async def shutdown_default_executor(self, timeout=None):
        """Wait for the default executor's threads to finish."""
        self._executor_shutdown_called = True
        if self._default_executor is None:
            return
        future = self.create_future()
        thread = threading.Thread(target=self._do_shutdown, args=(future,))
        thread.start()
        try:
            await aio_tasks.wait_for(aio_tasks.shield(future), timeout)
        except aio_exceptions_TimeoutError:
            warnings.warn("The executor did not finishing joining "
                          f"its threads within {timeout} seconds.",
                          RuntimeWarning, stacklevel=2)
            self._default_executor.shutdown(wait=False)
        else:
            thread.join()

    def _do_shutdown(self, future):
        try:
            self._default_executor.shutdown(wait=True)
            if not self.is_closed():
                self.call_soon_threadsafe(aio_futures._set_result_unless_cancelled,
                                          future, None)
        except Exception as ex:
            if not self.is_closed() and not future.cancelled():
                self.call_soon_threadsafe(future.set_exception, ex)

    def _asyncgen_finalizer_hook(self, agen):
        self._asyncgens.discard(agen)
        if not self.is_closed():
            self.call_soon_threadsafe(self.create_task, agen.aclose())

    def _asyncgen_firstiter_hook(self, agen):
        if self._asyncgens_shutdown_called:
            warnings.warn(
                f"asynchronous generator {agen!r} was scheduled after "
                f"loop.shutdown_asyncgens() call",
                ResourceWarning, source=self)
        self._asyncgens.add(agen)

    async def shutdown_asyncgens(self):
        """Shutdown all active asynchronous generators."""
        self._asyncgens_shutdown_called = True
        if not len(self._asyncgens):
            return
        closing_agens = list(self._asyncgens)
        self._asyncgens.clear()
        results = await aio_tasks.gather(
            *[ag.aclose() for ag in closing_agens], return_exceptions=True)
        for result, agen in zip(results, closing_agens):
            if isinstance(result, Exception):
                self.call_exception_handler({
                    'message': f'an error occurred during closing of '
                               f'asynchronous generator {agen!r}',
                    'exception': result,
                    'asyncgen': agen,
                })

    # ------------------------------------------------------------------
    # Error handling

    def get_exception_handler(self):
        return self._exception_handler

    def set_exception_handler(self, handler):
        if handler is not None and not callable(handler):
            raise TypeError(f'A callable object or None is expected, got {handler!r}')
        self._exception_handler = handler

    def default_exception_handler(self, context):
        """Log the error and its context, as asyncio's default handler."""
        message = context.get('message')
        if not message:
            message = 'Unhandled exception in event loop'
        exception = context.get('exception')
        if exception is not None:
            exc_info = (type(exception), exception, exception.__traceback__)
        else:
            exc_info = False
        current = self._current_handle
        if ('source_traceback' not in context and current is not None and
                current._source_traceback):
            context['handle_traceback'] = current._source_traceback
        log_lines = [message]
        for key in sorted(context):
            if key in {'message', 'exception'}:
                continue
            value = context[key]
            if key == 'source_traceback':
                tb = ''.join(format_list(value))
                value = 'Object created at (most recent call last):\n'
                value += tb.rstrip()
            elif key == 'handle_traceback':
                tb = ''.join(format_list(value))
                value = 'Handle created at (most recent call last):\n'
                value += tb.rstrip()
            else:
                value = repr(value)
            log_lines.append(f'{key}: {value}')
        logger.error('\n'.join(log_lines), exc_info=exc_info)

    def call_exception_handler(self, context):
        """Call the current exception handler (or the default one)."""
        if self._exception_handler is None:
            try:
                self.default_exception_handler(context)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error('Exception in default exception handler', exc_info=True)
            return
        try:
            ctx = None
            thing = context.get("task")
            if thing is None:
                thing = context.get("future")
            if thing is None:
                thing = context.get("handle")
            if thing is not None and hasattr(thing, "get_context"):
                ctx = thing.get_context()
            if ctx is not None and hasattr(ctx, "run"):
                ctx.run(self._exception_handler, self, context)
            else:
                self._exception_handler(self, context)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            try:
                self.default_exception_handler({
                    'message': 'Unhandled error in exception handler',
                    'exception': exc,
                    'context': context,
                })
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException:
                logger.error('Exception in default exception handler '
                             'while handling an unexpected error '
                             'in custom exception handler', exc_info=True)

    # ------------------------------------------------------------------
    # add_reader / add_writer: one-shot POLL_ADD, re-armed each iteration

    def _fd_watcher(self, fd):
        cdef _FdWatcher watcher = self._fd_watchers.get(fd)
        if watcher is None:
            watcher = _FdWatcher()
            watcher.fd = fd
            self._fd_watchers[fd] = watcher
        return watcher

    cdef _schedule_poll(self, _FdWatcher watcher):
        if not watcher.queued:
            watcher.queued = True
            self._pending_polls.append(watcher)

    cdef _arm_poll(self, _FdWatcher watcher):
        cdef uint32_t mask = watcher.wanted_mask()
        cdef io_uring_sqe *sqe
        if mask == watcher.armed_mask and mask:
            return
        if watcher.ud:
            # Replace the poll in flight; its CQE becomes stale.
            sqe = self._sqe()
            io_uring_prep_poll_remove(sqe, watcher.ud)
            io_uring_sqe_set_data64(sqe, 0)
            watcher.ud = 0
            watcher.armed_mask = 0
        if mask == 0:
            watcher.fileobj = None
            if self._fd_watchers.get(watcher.fd) is watcher:
                del self._fd_watchers[watcher.fd]
            return
        sqe = self._sqe()
        io_uring_prep_poll_add(sqe, watcher.fd, mask)
        self._submit(watcher, sqe)
        watcher.armed_mask = mask

    def _ensure_fd_no_transport(self, fd):
        fileno = fd
        if not isinstance(fileno, int):
            try:
                fileno = int(fileno.fileno())
            except (AttributeError, TypeError, ValueError):
                # This code matches selectors._fileobj_to_fd function.
                raise ValueError(f"Invalid file object: {fd!r}") from None
        transport = self._transports.get(fileno)
        if transport is not None and not transport.is_closing():
            raise RuntimeError(
                f'File descriptor {fd!r} is used by transport {transport!r}')

    def _add_fd_callback(self, fileobj, bint writer, callback, args):
        cdef _FdWatcher watcher
        self._check_closed()
        fd = _fileobj_to_fd(fileobj)
        if fd not in self._fd_watchers:
            # Fail now on an fd that isn't open, as epoll_ctl() does in
            # asyncio; the POLL_ADD would only report EBADF later.
            os.fstat(fd)
        cdef Handle handle = new_handle(self, callback, args if args else None, None)
        handle._context = PyContext_CopyCurrent()
        watcher = self._fd_watcher(fd)
        watcher.fileobj = fileobj
        old = watcher.writer if writer else watcher.reader
        if writer:
            watcher.writer = handle
        else:
            watcher.reader = handle
        if old is not None:
            old.cancel()
        self._schedule_poll(watcher)
        return handle

    cdef _FdWatcher _lookup_watcher(self, fileobj):
        """The watcher of fileobj's fd, or None.  A file object that has no
        valid fd any more (a socket closed while watched) is found by
        identity, as selectors' _fileobj_lookup does; ValueError if not.
        (A watcher left with no handles is unregistered, even if its poll is
        removed only at the next flush.)"""
        cdef _FdWatcher watcher
        try:
            fd = _fileobj_to_fd(fileobj)
        except ValueError:
            for watcher in self._fd_watchers.values():
                if watcher.fileobj is fileobj and watcher.wanted_mask():
                    return watcher
            raise
        return self._fd_watchers.get(fd)

    def _remove_fd_callback(self, fileobj, bint writer):
        cdef _FdWatcher watcher
        if self.is_closed():
            return False
        watcher = self._lookup_watcher(fileobj)
        if watcher is None:
            return False
        old = watcher.writer if writer else watcher.reader
        if old is None:
            return False
        if writer:
            watcher.writer = None
        else:
            watcher.reader = None
        old.cancel()
        # The poll in flight is removed (or narrowed) before the next
        # io_uring_enter; until then its CQE finds no handle to call.
        self._schedule_poll(watcher)
        return True

    def add_reader(self, fd, callback, *args):
        """Call callback(*args) whenever fd is readable (level-triggered)."""
        self._ensure_fd_no_transport(fd)
        self._add_fd_callback(fd, False, callback, args)

    def remove_reader(self, fd):
        """Stop watching fd for reading; return whether it was watched."""
        self._ensure_fd_no_transport(fd)
        return self._remove_fd_callback(fd, False)

    def add_writer(self, fd, callback, *args):
        """Call callback(*args) whenever fd is writable (level-triggered)."""
        self._ensure_fd_no_transport(fd)
        self._add_fd_callback(fd, True, callback, args)

    def remove_writer(self, fd):
        """Stop watching fd for writing; return whether it was watched."""
        self._ensure_fd_no_transport(fd)
        return self._remove_fd_callback(fd, True)

    # ------------------------------------------------------------------
    # Signals: set_wakeup_fd() into a socketpair read on the ring

    cdef _arm_signal_read(self):
        cdef io_uring_sqe *sqe = self._sqe()
        io_uring_prep_read(sqe, self._sig_rsock.fileno(), self._sig_buf, sizeof(self._sig_buf), 0)
        self._submit(self._sig_op, sqe)

    cdef _on_signal_bytes(self, int32_t res):
        cdef int32_t i
        cdef Handle handle
        if res > 0:
            for i in range(res):
                sig = <unsigned char>self._sig_buf[i]
                handle = self._signal_handlers.get(sig)
                if handle is None:
                    continue
                if handle._cancelled:
                    self.remove_signal_handler(sig)
                else:
                    self._ready.append(handle)
        if self._sig_rsock is not None and res != -ECANCELED:
            self._arm_signal_read()
        # Python-level handlers (KeyboardInterrupt, asyncio.Runner's SIGINT
        # handler) run now, not at some later bytecode boundary.
        PyErr_CheckSignals()

    def _install_signal_wakeup(self):
        if threading.current_thread() is not threading.main_thread():
            return
        if self._old_wakeup_fd is not None:
            return
        try:
            old = signal.set_wakeup_fd(self._sig_wsock.fileno(), warn_on_full_buffer=False)
        except (ValueError, OSError):
            return
        if old != -1:
            # Someone else's wakeup fd (another loop with signal handlers,
            # a GUI toolkit): asyncio leaves it alone, so put it back.
            signal.set_wakeup_fd(old)
            return
        self._old_wakeup_fd = old

    def _restore_signal_wakeup(self):
        if self._old_wakeup_fd is None or self._signal_handlers:
            return
        try:
            signal.set_wakeup_fd(self._old_wakeup_fd)
        except (ValueError, OSError) as exc:
            logger.info('set_wakeup_fd(%s) failed: %s', self._old_wakeup_fd, exc)
        self._old_wakeup_fd = None

    def add_signal_handler(self, sig, callback, *args):
        """Add a handler for a UNIX signal (main thread only)."""
        if (aio_coroutines.iscoroutine(callback) or
                aio_iscoroutinefunction(callback)):
            raise TypeError("coroutines cannot be used with add_signal_handler()")
        _check_signal(sig)
        self._check_closed()
        try:
            # set_wakeup_fd() raises ValueError if this is not the main
            # thread: an event loop in another thread cannot add handlers.
            old = signal.set_wakeup_fd(self._sig_wsock.fileno(), warn_on_full_buffer=False)
        except (ValueError, OSError) as exc:
            raise RuntimeError(str(exc))
        if self._old_wakeup_fd is None:
            self._old_wakeup_fd = old
        cdef Handle handle = new_handle(self, callback, args if args else None, None)
        handle._context = PyContext_CopyCurrent()
        self._signal_handlers[sig] = handle
        try:
            # A no-op Python handler makes CPython write the signal number
            # to the wakeup fd; SA_RESTART limits EINTR elsewhere.
            signal.signal(sig, _sighandler_noop)
            signal.siginterrupt(sig, False)
        except OSError as exc:
            del self._signal_handlers[sig]
            if not self._signal_handlers and not self._running:
                self._restore_signal_wakeup()
            if exc.errno == errno_mod.EINVAL:
                raise RuntimeError(f'sig {sig:d} cannot be caught')
            raise

    def remove_signal_handler(self, sig):
        """Remove a handler for a signal; return True if one was removed."""
        _check_signal(sig)
        try:
            del self._signal_handlers[sig]
        except KeyError:
            return False
        if sig == signal.SIGINT:
            handler = signal.default_int_handler
        else:
            handler = signal.SIG_DFL
        try:
            signal.signal(sig, handler)
        except OSError as exc:
            if exc.errno == errno_mod.EINVAL:
                raise RuntimeError(f'sig {sig:d} cannot be caught')
            raise
        if not self._signal_handlers and not self._running:
            self._restore_signal_wakeup()
        return True

    # ------------------------------------------------------------------
    # Name resolution

    async def getaddrinfo(self, host, port, *, family=0, type=0, proto=0, flags=0):
        # Numeric hosts need no resolver: answer on the loop thread.  The
        # result is socket.getaddrinfo()'s own, so it matches exactly.
        if host is None or isinstance(host, (str, bytes)):
            try:
                return socket.getaddrinfo(host, port, family, type, proto,
                                          flags | socket.AI_NUMERICHOST)
            except socket.gaierror as exc:
                if exc.errno != socket.EAI_NONAME:
                    raise
            except UnicodeError:
                pass
        return await self.run_in_executor(None, socket.getaddrinfo,
                                          host, port, family, type, proto, flags)

    async def getnameinfo(self, sockaddr, flags=0):
        return await self.run_in_executor(None, socket.getnameinfo, sockaddr, flags)


class Loop(RingLoop, _StreamsAPI, _PipesAPI, _SendfileAPI, _DatagramAPI, AbstractEventLoop):
    """asyncio event loop on Linux io_uring (see zcloop's README).

    Loop(*, disable_features=None): ``disable_features`` names ring features
    to leave off (as ZCLOOP_DISABLE_FEATURES does), e.g. {'send_zc'}.
    """


# ----------------------------------------------------------------------
# Module helpers


def _run_until_complete_cb(fut):
    if not fut.cancelled():
        exc = fut.exception()
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            # Issue #22429: run_forever() already finished, no need to
            # stop it.
            return
    aio_futures._get_loop(fut).stop()


def _format_handle(Handle handle):
    cb = handle._callback
    if isinstance(getattr(cb, '__self__', None), aio_tasks.Task):
        return repr(cb.__self__)
    return str(handle)


def _check_callback(callback, method):
    if (aio_coroutines.iscoroutine(callback) or
            aio_iscoroutinefunction(callback)):
        raise TypeError(f"coroutines cannot be used with {method}()")
    if not callable(callback):
        raise TypeError(
            f'a callable object was expected by {method}(), got {callback!r}')


def _check_signal(sig):
    if not isinstance(sig, int):
        raise TypeError(f'sig must be an int, not {sig!r}')
    if sig not in signal.valid_signals():
        raise ValueError(f'invalid signal number {sig}')


def _sighandler_noop(signum, frame):
    """Dummy signal handler."""
    pass


def _fileobj_to_fd(fileobj):
    # Same checks and messages as selectors._fileobj_to_fd.
    if isinstance(fileobj, int):
        fd = fileobj
    else:
        try:
            fd = int(fileobj.fileno())
        except (AttributeError, TypeError, ValueError):
            raise ValueError(f"Invalid file object: {fileobj!r}") from None
    if fd < 0:
        raise ValueError(f"Invalid file descriptor: {fd}")
    return fd


cdef Py_ssize_t _PAGE_SHIFT = (os.sysconf('SC_PAGE_SIZE') - 1).bit_length()
# After an ENOMEM cut, the zero-copy budget may double once per interval.
cdef double ZC_REGROW_INTERVAL = 1.0


cdef inline Py_ssize_t _zc_charge(Py_ssize_t nbytes):
    # What io_uring charges to the user's RLIMIT_MEMLOCK for one SEND_ZC /
    # SENDMSG_ZC request of nbytes until its notification: (len >> PAGE_SHIFT)
    # + 2 pages (io_uring/notif.h io_notif_account_mem), in bytes.
    return ((nbytes >> _PAGE_SHIFT) + 2) << _PAGE_SHIFT


def _zc_default_budget():
    # Memlock bytes: min(64 MiB, half of RLIMIT_MEMLOCK) unless CAP_IPC_LOCK
    # lifts the memlock accounting of SEND_ZC pages.
    budget = 64 * 1024 * 1024
    if _has_cap_ipc_lock():
        return budget
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft != resource.RLIM_INFINITY:
        budget = min(budget, soft // 2)
    return budget


def _has_cap_ipc_lock():
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('CapEff:'):
                    return bool(int(line.split()[1], 16) & (1 << 14))
    except (OSError, ValueError):
        pass
    return False


def _env_disabled_features():
    raw = os.environ.get('ZCLOOP_DISABLE_FEATURES', '')
    return [name.strip() for name in raw.split(',') if name.strip()]

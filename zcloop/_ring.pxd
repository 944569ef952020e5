# Declarations of the compiled core.  Implementation files are textually
# included by _ring.pyx (uvloop-style), so cdef calls between them are direct.
from libc.stdint cimport uint8_t, uint32_t, int32_t, uint64_t
from cpython.object cimport PyObject

from .includes.liburing cimport (
    io_uring, io_uring_sqe, uring_cqe, io_uring_buf_ring, __kernel_timespec, iovec, msghdr,
    sockaddr, statx, REAP_BATCH, OP_TABLE_SIZE)

cdef class RingLoop
cdef class WritePipeTransport
cdef class SSLProtocol
cdef class _BlockLease

include "cbhandles.pxd"
include "ops.pxd"
include "sockaddr.pxd"
include "handles/transport.pxd"
include "handles/stream.pxd"
include "handles/server.pxd"
include "handles/pipe.pxd"
include "handles/futureops.pxd"
include "handles/udp.pxd"
include "sslproto.pxd"
include "pool.pxd"


cdef class RingLoop:
    cdef:
        io_uring _ring
        bint _ring_ready
        bint _ring_enabled
        long _ring_thread
        uint32_t _setup_flags
        uint32_t _ring_features
        uint8_t _op_supported[OP_TABLE_SIZE]
        object _disabled_features       # frozenset of feature names turned off
        int _owner_pid

        # In-flight operations: user_data = generation << 32 | slot.
        PyObject **_slot_op
        uint32_t *_slot_gen
        uint32_t *_slot_free
        uint32_t _slot_cap
        uint32_t _slot_nfree
        uint32_t _slot_next_gen
        uring_cqe _cqes[REAP_BATCH]

        list _ready                     # Handles to run in the next iteration
        list _ready_spare               # the other (empty) list, see _run_once
        list _timers                    # heap of TimerHandle on _when (cbhandles.pyx)
        int _timer_cancelled_count
        bint _call_at_overridden        # by a subclass: call_later() goes through it
        bint _stopping
        readonly bint _closed           # readable as asyncio's BaseEventLoop._closed
        bint _running
        long _thread_id
        bint _debug
        double _clock_resolution
        object _exception_handler
        object _task_factory
        object _default_executor
        bint _executor_shutdown_called
        object _asyncgens
        bint _asyncgens_shutdown_called
        object _current_handle
        public double slow_callback_duration

        # call_soon_threadsafe: an eventfd with a READ kept pending on the ring
        int _wake_fd
        uint64_t _wake_value
        bint _wake_pending
        UringOp _wake_op

        # signals: set_wakeup_fd socketpair, its read end read on the ring
        dict _signal_handlers
        object _sig_rsock
        object _sig_wsock
        char _sig_buf[64]
        UringOp _sig_op
        object _old_wakeup_fd

        # add_reader / add_writer
        dict _fd_watchers
        list _pending_polls

        # streams: transports with queued writes, flushed once per iteration
        list _pending_flush
        uint64_t _iteration            # _run_once() count: one inline send per transport each
        bint _inline_sends             # this iteration's write()s may send() at once

        # loop-wide provided-buffer ring for multishot receives
        io_uring_buf_ring *_buf_ring
        PyObject **_buf_objs            # bid -> the bytes object the kernel fills
        size_t _buf_map_len
        uint32_t _buf_size
        uint32_t _buf_count             # ring capacity
        uint32_t _buf_provided          # buffers handed to the kernel so far

        object _transports              # fd -> transport, weak values as selector_events
        dict _unix_server_sockets       # listening AF_UNIX socket -> inode

        # zero-copy sends (docs/design.md "Zero-copy")
        public Py_ssize_t zc_threshold  # default for new transports
        Py_ssize_t _zc_budget           # max memlock bytes charged for SEND_ZC at once
        Py_ssize_t _zc_budget_max       # the budget RLIMIT_MEMLOCK allows (_zc_default_budget)
        double _zc_regrow_at            # after an ENOMEM cut: next time the budget may grow
        Py_ssize_t _zc_pinned_total     # payload bytes of SEND_ZC requests not yet released
        Py_ssize_t _zc_charged          # what the kernel charges to memlock for them
        Py_ssize_t _zc_enomem           # ENOMEM refusals seen
        bint _zc_report_usage
        bint _quarantining              # close(): on_close() of ops the kernel still holds

        # registered buffers for BufferPool (pool.pyx)
        list _fixed_slots               # free slots of the sparse table; None: not reserved
        str _fixed_reason               # why fixed buffers are unavailable, or None
        Py_ssize_t _st_fixed_sends      # SEND_ZC requests from registered buffers

    # ring plumbing
    cdef _setup_ring(self)
    cdef _enable_ring(self)
    cdef double _time(self)
    cdef io_uring_sqe *_sqe(self) except NULL
    cdef uint64_t _submit(self, UringOp op, io_uring_sqe *sqe) except 0
    cdef _cancel(self, UringOp op)
    cdef _grow_slots(self)
    cdef _cancel_op(self, uint64_t user_data)
    cdef int _wait(self, double timeout) except -1
    cdef Py_ssize_t _reap(self) except -1
    cdef int _dispatch(self, uring_cqe *cqe) except -1
    cdef _drain_ring(self, double deadline)
    cdef _close_ring(self)
    cdef bint _feature(self, str name)
    cdef bint _op_ok(self, int op)

    # scheduling
    cdef _run_once(self)
    cdef _check_closed(self)
    cdef _check_thread(self)
    cdef Handle _call_soon(self, object callback, object args, object context)
    cdef _add_ready(self, Handle handle)
    cdef TimerHandle _call_at(self, double when, object callback, object args,
                              object context)
    cdef _timer_handle_cancelled(self, TimerHandle handle)
    cdef _wakeup(self)
    cdef _arm_wakeup(self)
    cdef _on_wakeup(self, int32_t res)
    cdef _arm_signal_read(self)
    cdef _on_signal_bytes(self, int32_t res)

    # writes flushed once per iteration
    cdef _flush_pending(self)

    # the provided-buffer ring for receives
    cdef bint _ensure_buf_ring(self) except -1
    cdef _recycle_buf(self, unsigned bid)
    cdef _grow_buf_ring(self)
    cdef _buf_provide_new(self, unsigned bid, int offset)
    cdef char *_buf_ptr(self, unsigned bid)
    cdef bytes _buf_take(self, unsigned bid, Py_ssize_t n)
    cdef _free_buf_ring(self, bint leak)

    # the zero-copy memlock budget
    cdef bint _zc_fits(self, Py_ssize_t nbytes)
    cdef _zc_reserve(self, Py_ssize_t nbytes)
    cdef _zc_unreserve(self, Py_ssize_t nbytes)
    cdef _zc_nomem(self, Py_ssize_t held)

    # fd watchers
    cdef _schedule_poll(self, _FdWatcher watcher)
    cdef _arm_poll(self, _FdWatcher watcher)
    cdef _FdWatcher _lookup_watcher(self, fileobj)

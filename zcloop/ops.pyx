# Ring operations owned by the loop itself.  Transports define their own
# UringOp subclasses in handles/.

cdef class UringOp:

    cdef int on_cqe(self, RingLoop loop, uint64_t user_data, int32_t res,
                    uint32_t flags) except -1:
        return 0

    cdef int on_close(self, RingLoop loop) except -1:
        # loop.close(): this op's final CQE came in the close drain, or it
        # never will (loop._quarantining: the op stays referenced forever).
        # Let go of what must not outlive the loop (a transport's socket).
        return 0


cdef class _WakeupRead(UringOp):
    # READ of the loop's eventfd: completes when another thread calls
    # call_soon_threadsafe().
    cdef int on_cqe(self, RingLoop loop, uint64_t user_data, int32_t res,
                    uint32_t flags) except -1:
        loop._on_wakeup(res)
        return 0


cdef class _SignalRead(UringOp):
    # READ of the set_wakeup_fd() socket: one byte per delivered signal.
    cdef int on_cqe(self, RingLoop loop, uint64_t user_data, int32_t res,
                    uint32_t flags) except -1:
        loop._on_signal_bytes(res)
        return 0


cdef class _FdWatcher(UringOp):
    # add_reader()/add_writer() on one fd: a one-shot POLL_ADD for the union
    # of the wanted events, re-armed after the callbacks ran (level-triggered,
    # like a selector).
    # ud: user_data of the poll in flight (0 if none); queued: the
    # watcher sits in loop._pending_polls waiting to be (re-)armed.
    # fileobj: the object last passed to add_*(), so remove_*() still finds
    # the registration once that object is closed (fileno() == -1), as
    # selectors do.

    cdef uint32_t wanted_mask(self):
        cdef uint32_t mask = 0
        if self.reader is not None:
            mask |= POLLIN
        if self.writer is not None:
            mask |= POLLOUT
        return mask

    cdef int on_cqe(self, RingLoop loop, uint64_t user_data, int32_t res,
                    uint32_t flags) except -1:
        if self.ud:
            return 0            # a poll we replaced: the newer one is in flight
        self.armed_mask = 0
        if res == -ECANCELED:
            pass
        elif res == -EBADF:
            # The fd was closed while watched (its number no longer open when
            # the poll was re-armed).  epoll forgets a closed fd silently: so
            # do we, instead of calling the callbacks and re-arming in a busy
            # loop.  The handles stay, so remove_*() still returns True and a
            # new add_*() for this fd number arms a fresh poll.
            return 0
        elif res < 0:
            # EBADF etc.: the fd went away under us; report it through the
            # callbacks as a selector does (they see the error on their call).
            if self.reader is not None:
                loop._add_ready(self.reader)
            if self.writer is not None:
                loop._add_ready(self.writer)
        else:
            if self.reader is not None and res & (POLLIN | POLLERR | POLLHUP | POLLPRI):
                if self.reader._cancelled:
                    self.reader = None
                else:
                    loop._add_ready(self.reader)
            if self.writer is not None and res & (POLLOUT | POLLERR | POLLHUP):
                if self.writer._cancelled:
                    self.writer = None
                else:
                    loop._add_ready(self.writer)
        loop._schedule_poll(self)
        return 0


cdef class _FutureOp(UringOp):
    # One mechanism for every request a coroutine awaits (connect, splice,
    # poll waits, sendto, sendall): the CQE resolves the future, and
    # cancelling the future cancels the request.  Either way the op (and any
    # memory it holds for the kernel) stays referenced until the final CQE.

    cdef object _track_future(self, RingLoop loop, io_uring_sqe *sqe):
        """Track the prepared ``sqe`` and return the future it resolves."""
        self.loop = loop
        loop._submit(self, sqe)
        if self.fut is None:
            self.fut = aio_futures.Future(loop=loop)
            self.fut.add_done_callback(self._fut_done)
        return self.fut

    cdef object _result(self, int32_t res):
        return res

    cdef object _error(self, int32_t res):
        return OSError(-res, os.strerror(-res))

    cdef int on_cqe(self, RingLoop loop, uint64_t user_data, int32_t res,
                    uint32_t flags) except -1:
        fut = self.fut
        if fut is None or fut.done():
            return 0
        if res >= 0:
            fut.set_result(self._result(res))
        elif res == -ECANCELED:
            fut.cancel()
        else:
            fut.set_exception(self._error(res))
        return 0

    def _fut_done(self, fut):
        if fut.cancelled() and self.loop is not None:
            self.loop._cancel(self)

# Pipes and subprocesses.  Child exit is a POLL_ADD on a pidfd in the ring:
# no SIGCHLD handler, no watcher thread.


cdef class _ChildExitOp(UringOp):
    cdef:
        int pidfd
        int pid
        object transport
        object context      # process_exited() runs in it (see docs/design.md)

    def __cinit__(self):
        self.pidfd = -1

    def __dealloc__(self):
        # Final CQE reaped while the loop closes (no on_cqe then): the slot
        # drops the op, and with it the pidfd.
        if self.pidfd >= 0:
            close(self.pidfd)
            self.pidfd = -1

    cdef int on_cqe(self, RingLoop loop, uint64_t user_data, int32_t res,
                    uint32_t flags) except -1:
        if res == -ECANCELED:
            self._close_pidfd()
            return 0
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            # Reaped elsewhere: by Popen.poll() in transport.close(), or by
            # someone else (asyncio's watchers report 255 then, too).
            proc = getattr(self.transport, '_proc', None)
            returncode = proc.returncode if proc is not None else None
            if returncode is None:
                logger.warning("Unknown child process pid %d, will report returncode 255",
                               self.pid)
                returncode = 255
        else:
            if pid == 0:
                # Spurious wakeup: keep waiting.
                self.arm(loop)
                return 0
            returncode = os.waitstatus_to_exitcode(status)
        self._close_pidfd()
        transport = self.transport
        self.transport = None
        # One callback hop, as asyncio's child watchers (call_soon_threadsafe):
        # pipe EOFs completed in the same batch are reported before the exit.
        loop._call_soon(_deliver_exit, (transport, returncode), self.context)
        return 0

    cdef arm(self, RingLoop loop):
        cdef io_uring_sqe *sqe = loop._sqe()
        io_uring_prep_poll_add(sqe, self.pidfd, POLLIN)
        loop._submit(self, sqe)

    def _close_pidfd(self):
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1

    cdef int on_close(self, RingLoop loop) except -1:
        self._close_pidfd()
        return 0


def _deliver_exit(transport, returncode):
    if transport._returncode is None:
        transport._process_exited(returncode)


def _wait_child_thread(loop, pid, transport, context):
    try:
        _, status = os.waitpid(pid, 0)
        returncode = os.waitstatus_to_exitcode(status)
    except ChildProcessError:
        # Reaped by Popen.poll() (transport.close()): it has the code.
        proc = getattr(transport, '_proc', None)
        returncode = proc.returncode if proc is not None else None
        if returncode is None:
            returncode = 255
    try:
        loop.call_soon_threadsafe(_deliver_exit, transport, returncode, context=context)
    except RuntimeError:
        pass        # the loop is closed


class _PipesAPI:

    async def connect_read_pipe(self, protocol_factory, pipe):
        """Register the read end of pipe in the event loop."""
        return await self._connect_pipe(ReadPipeTransport, 'Read', protocol_factory, pipe)

    async def connect_write_pipe(self, protocol_factory, pipe):
        """Register the write end of pipe in the event loop."""
        return await self._connect_pipe(WritePipeTransport, 'Write', protocol_factory, pipe)

    async def _connect_pipe(self, transport_class, kind, protocol_factory, pipe):
        protocol = protocol_factory()
        waiter = self.create_future()
        transport = transport_class.__new__(transport_class)
        transport._init(self, pipe, protocol, waiter, None)
        await _transport_ready(transport, waiter)
        if (<RingLoop>self)._debug:
            logger.debug('%s pipe %r connected: (%r, %r)', kind, pipe.fileno(), transport,
                         protocol)
        return transport, protocol

    # asyncio's own subprocess_shell()/subprocess_exec() (same checks,
    # messages and debug logs): subprocess.Popen reads the child's
    # exec-status pipe with a blocking os.read() until exec() has happened,
    # and tools that flag blocking calls in the loop thread (blockbuster)
    # forgive it only under these functions' frames.  They call back into
    # _make_subprocess_transport() below.
    subprocess_shell = aio_base_events.BaseEventLoop.subprocess_shell
    subprocess_exec = aio_base_events.BaseEventLoop.subprocess_exec
    _log_subprocess = aio_base_events.BaseEventLoop._log_subprocess

    @property
    def _debug(self):
        # What those functions read (the compiled loop keeps it in C).
        return self.get_debug()

    @_debug.setter
    def _debug(self, enabled):
        self.set_debug(enabled)

    async def _make_subprocess_transport(self, protocol, args, shell, stdin, stdout,
                                         stderr, bufsize, extra=None, **kwargs):
        # asyncio's Popen wrapper; its pipes are zcloop pipe transports and
        # the exit comes from a pidfd poll on the ring.
        cdef _ChildExitOp op
        waiter = self.create_future()
        transp = aio_unix_events._UnixSubprocessTransport(
            self, protocol, args, shell, stdin, stdout, stderr, bufsize,
            waiter=waiter, extra=extra, **kwargs)
        op = _ChildExitOp()
        op.pid = transp.get_pid()
        # The context of this call, as uvloop (asyncio's differs with its
        # child watcher: the watcher thread's, or the caller's with pidfds).
        op.context = PyContext_CopyCurrent()
        try:
            op.pidfd = os.pidfd_open(op.pid)
        except OSError:
            # No pidfd (ENOSYS/EPERM in some sandboxes and under valgrind,
            # EMFILE): wait in a thread as asyncio's ThreadedChildWatcher
            # does, rather than leave the child running and unreaped.
            threading.Thread(target=_wait_child_thread,
                             args=(self, op.pid, transp, op.context),
                             name=f'zcloop-waitpid-{op.pid}', daemon=True).start()
        else:
            op.transport = transp
            op.arm(<RingLoop>self)
        try:
            await waiter
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException:
            transp.close()
            await transp._wait()
            raise
        return transp

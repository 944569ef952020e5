# io_uring availability: why it cannot be used here, in one sentence.

class IoUringUnavailableError(RuntimeError):
    """io_uring cannot be used in this process; the message says why and how
    to fall back to asyncio's loop."""


_FALLBACK_HINT = ("use zcloop.new_event_loop(fallback=True) / zcloop.run(..., fallback=True) "
                  "or set ZCLOOP_FALLBACK=1 to run on asyncio's loop instead")


def _read_sysctl(name):
    try:
        with open('/proc/sys/kernel/' + name) as f:
            return f.read().strip()
    except OSError:
        return None


def _unavailable_reason(int err):
    """Explain an io_uring_setup() failure (positive errno)."""
    if err == EPERM:
        disabled = _read_sysctl('io_uring_disabled')
        if disabled not in (None, '0'):
            return (f'io_uring is disabled by the kernel.io_uring_disabled sysctl '
                    f'(value {disabled}); {_FALLBACK_HINT}')
        return ('io_uring_setup() was denied with EPERM: a seccomp filter (Docker >= 25, '
                'containerd and Podman default profiles block io_uring) or an LSM forbids '
                f'io_uring in this process; {_FALLBACK_HINT}')
    if err == ENOSYS:
        return ('this kernel has no io_uring (io_uring_setup() gave ENOSYS: built without '
                f'CONFIG_IO_URING, or a sandbox such as gVisor); {_FALLBACK_HINT}')
    if err == ENOMEM:
        return ('io_uring_setup() failed with ENOMEM (without CAP_IPC_LOCK the rings count '
                'against RLIMIT_MEMLOCK before Linux 5.12 and again on recent kernels: raise '
                f'ulimit -l); {_FALLBACK_HINT}')
    return f'io_uring_setup() failed: {os.strerror(err)} (errno {err}); {_FALLBACK_HINT}'


_unavailable_cache = []


def _probe_unavailable():
    """None if a zcloop loop can be created here, else the reason (cached)."""
    if not _unavailable_cache:
        try:
            loop = Loop()
        except IoUringUnavailableError as exc:
            _unavailable_cache.append(str(exc))
        else:
            loop.close()
            _unavailable_cache.append(None)
    return _unavailable_cache[0]


def features():
    """Describe what zcloop can use on this machine: the ring setup flags it
    got, the io_uring operations the kernel supports, and the zero-copy
    switches.  Raises IoUringUnavailableError where io_uring is unusable."""
    loop = Loop()
    try:
        info = loop.features()
    finally:
        loop.close()
    info['kernel'] = os.uname().release
    return info


def _required_ops():
    return (('READ', IORING_OP_READ), ('POLL_ADD', IORING_OP_POLL_ADD),
            ('ASYNC_CANCEL', IORING_OP_ASYNC_CANCEL), ('ACCEPT', IORING_OP_ACCEPT),
            ('CONNECT', IORING_OP_CONNECT), ('SEND', IORING_OP_SEND),
            ('RECV', IORING_OP_RECV), ('SENDMSG', IORING_OP_SENDMSG),
            ('RECVMSG', IORING_OP_RECVMSG))


def _known_ops():
    return _required_ops() + (
        ('WRITE', IORING_OP_WRITE), ('WRITEV', IORING_OP_WRITEV),
        ('POLL_REMOVE', IORING_OP_POLL_REMOVE), ('SHUTDOWN', IORING_OP_SHUTDOWN),
        ('SPLICE', IORING_OP_SPLICE), ('SEND_ZC', IORING_OP_SEND_ZC),
        ('SENDMSG_ZC', IORING_OP_SENDMSG_ZC), ('READ_MULTISHOT', IORING_OP_READ_MULTISHOT),
        ('WAITID', IORING_OP_WAITID))


def _setup_flag_names():
    return (('SINGLE_ISSUER', IORING_SETUP_SINGLE_ISSUER),
            ('DEFER_TASKRUN', IORING_SETUP_DEFER_TASKRUN),
            ('COOP_TASKRUN', IORING_SETUP_COOP_TASKRUN),
            ('SUBMIT_ALL', IORING_SETUP_SUBMIT_ALL),
            ('CQSIZE', IORING_SETUP_CQSIZE))

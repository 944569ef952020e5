# Registered buffer pools (loop.create_zc_pool): memory registered with the
# ring once, so a write_zc() from it goes out as SEND_ZC with
# IORING_RECVSEND_FIXED_BUF and pins nothing per request (docs/design.md
# "Registered buffer pools").
#
# One registered buffer per pool (its whole mapping), in a sparse table of
# FIXED_TABLE_SLOTS reserved once per loop at the first pool; a send names
# the pool's slot and an address inside it.  Blocks are handed out as
# memoryviews of a _BlockLease, one per acquire(): the lease counts its
# buffer exports, so the mapping is unmapped only once no view of it is
# left (reading through a view of unmapped memory would crash), and a view
# that outlived its lease (block returned, maybe re-acquired) is refused.

from cpython.buffer cimport PyBuffer_FillInfo

cdef extern from "Python.h":
    Py_ssize_t PY_SSIZE_T_MAX

cdef unsigned FIXED_TABLE_SLOTS = 1024
# The kernel registers at most 1 GiB per buffer (iovec).
cdef size_t FIXED_BUFFER_MAX = 1 << 30

# Live pools of every loop (a few): write_zc() finds a buffer's pool by
# address; a pool leaves the list when its mapping goes.
cdef list _zc_pools = []


class PoolExhausted(Exception):
    """BufferPool.acquire_nowait(): every block is in use."""


cdef str _errno_text(int err):
    return f'{errno_mod.errorcode.get(err, str(err))} ({os.strerror(err)})'


cdef BufferPool _new_pool(RingLoop loop, Py_ssize_t block_size, Py_ssize_t blocks):
    cdef BufferPool pool
    cdef size_t size, page = 1 << _PAGE_SHIFT
    cdef void *base
    cdef iovec iov
    cdef int ret
    if block_size <= 0 or blocks <= 0:
        raise ValueError('block_size and blocks must be positive')
    if block_size > SEND_MAX_REQUEST:
        raise ValueError(f'block_size must be at most {SEND_MAX_REQUEST}')
    if blocks > (PY_SSIZE_T_MAX - <Py_ssize_t>page) // block_size:
        raise OverflowError('BufferPool size does not fit in the address space')
    size = ((<size_t>block_size * <size_t>blocks + page - 1) // page) * page
    if not _has_cap_ipc_lock():
        # Registration pins the whole pool and charges it to RLIMIT_MEMLOCK.
        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        if soft != resource.RLIM_INFINITY and size > soft:
            raise OSError(ENOMEM, f'a BufferPool of {size} bytes does not fit in '
                                  f'RLIMIT_MEMLOCK ({soft} bytes): registered buffers are '
                                  f'locked memory; raise the limit (ulimit -l) or use a '
                                  f'smaller pool')
    base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
    if base == MAP_FAILED:
        err = errno
        raise OSError(err, f'mmap of {size} bytes for a BufferPool: {os.strerror(err)}')
    pool = BufferPool.__new__(BufferPool)
    pool._loop = loop
    pool._base = <char*>base
    pool._map_len = size
    pool.block_size = block_size
    pool.blocks = blocks
    pool._buf_index = -1
    pool._free = list(range(blocks - 1, -1, -1))
    pool._leases = [None] * blocks
    pool._waiters = collections.deque()
    _zc_pools.append(pool)
    # Register it, or say why not: the pool then works unregistered.
    if loop._fixed_slots is None:
        if not loop._feature('fixed_buffers'):
            ret = 0
            loop._fixed_reason = 'unavailable: disabled'
        else:
            ret = io_uring_register_buffers_sparse(&loop._ring, FIXED_TABLE_SLOTS)
            if ret < 0:
                loop._fixed_reason = 'unavailable: ' + _errno_text(-ret)
        loop._fixed_slots = [] if loop._fixed_reason else list(range(FIXED_TABLE_SLOTS - 1, -1, -1))
    if size > FIXED_BUFFER_MAX:
        pool._fixed = 'unavailable: pool larger than 1 GiB'
    else:
        if loop._fixed_reason is not None:
            pool._fixed = loop._fixed_reason
        elif not loop._fixed_slots:
            pool._fixed = f'unavailable: all {FIXED_TABLE_SLOTS} registered-buffer slots in use'
        else:
            slot = loop._fixed_slots.pop()
            iov.iov_base = base
            iov.iov_len = size
            ret = io_uring_register_buffers_update_tag(&loop._ring, slot, &iov, NULL, 1)
            if ret < 0:
                loop._fixed_slots.append(slot)
                pool._fixed = 'unavailable: ' + _errno_text(-ret)
            else:
                pool._buf_index = slot
                pool._fixed = 'registered'
    return pool


cdef _BlockLease _pool_lease(RingLoop loop, object data, const char *buf, Py_ssize_t length):
    """The lease of the BufferPool block that ``buf`` lies in, None when it
    is no pool's memory; ValueError / RuntimeError for a pool buffer that
    may not be sent from."""
    cdef BufferPool pool
    cdef Py_ssize_t index, offset
    cdef _BlockLease lease
    for obj in _zc_pools:
        pool = <BufferPool>obj
        if pool._base <= buf < pool._base + pool.block_size * pool.blocks:
            break
    else:
        return None
    if pool._loop is not loop:
        raise RuntimeError('this buffer belongs to a BufferPool of another event loop')
    if pool._closing:
        raise RuntimeError('BufferPool is closed')
    offset = buf - pool._base
    index = offset // pool.block_size
    if offset + length > (index + 1) * pool.block_size:
        raise ValueError('buffer crosses two blocks of a BufferPool')
    lease = pool._leases[index]
    owner = data.obj if type(data) is memoryview else None
    if lease is None or (type(owner) is _BlockLease and owner is not lease):
        raise ValueError('this BufferPool block was returned to the pool')
    return lease


# no_gc_clear: a lease's __releasebuffer__ may run while the garbage
# collector tears down a cycle holding it, and must find its pool intact.
@cython.final
@cython.no_gc_clear
cdef class BufferPool:
    """Blocks of memory registered with the loop's io_uring
    (loop.create_zc_pool(block_size, blocks)).

    ``await acquire()`` / ``acquire_nowait()`` hand out a writable
    memoryview of one free block.  transport.write_zc() of such a view (or
    a slice of it) is sent without pinning pages per request; the block goes
    back to the pool by itself when the ``released`` future of the last
    write from it resolves.  A block never written goes back with
    ``release(view)``.  Do not touch a view once it was passed to
    write_zc(): the block may already be someone else's.
    """

    def __dealloc__(self):
        # A live pool is in _zc_pools, so this is interpreter teardown:
        # unmap only if no view or request may still read the memory.
        if self._base != NULL and not self._unmapped and self._exports == 0 and \
                self._inflight == 0:
            munmap(self._base, self._map_len)
            self._base = NULL

    def __repr__(self):
        state = 'closed' if self._closing else f'free={len(self._free)}'
        return (f'<BufferPool block_size={self.block_size} blocks={self.blocks} {state} '
                f'fixed={self._fixed!r}>')

    @property
    def free(self):
        """Blocks available to acquire() now."""
        return 0 if self._closing else len(self._free)

    @property
    def registered(self):
        """True while the pool is registered with the ring (sends from it
        use IORING_RECVSEND_FIXED_BUF)."""
        return self._buf_index >= 0

    @property
    def closed(self):
        return self._closing

    def acquire_nowait(self):
        """A writable memoryview of a free block; PoolExhausted if none."""
        if self._closing:
            raise RuntimeError('BufferPool is closed')
        if not self._free:
            raise PoolExhausted(f'all {self.blocks} blocks of the BufferPool are in use')
        return self._take()

    async def acquire(self):
        """A writable memoryview of a free block, waiting for one while all
        are in use.  Cancelling the wait takes no block."""
        while True:
            if self._closing:
                raise RuntimeError('BufferPool is closed')
            if self._free:
                return self._take()
            fut = self._loop.create_future()
            self._waiters.append(fut)
            try:
                await fut
            except BaseException:
                if fut.done() and not fut.cancelled():
                    # Woken for a block, then cancelled: wake the next one.
                    self._wake_waiter()
                else:
                    try:
                        self._waiters.remove(fut)
                    except ValueError:
                        pass
                raise

    def release(self, view):
        """Give a block that was never written back to the pool.  A block
        written with write_zc() goes back by itself when the write's
        ``released`` resolves: releasing it is a ValueError, as is releasing
        a block twice."""
        cdef Py_buffer buf
        cdef Py_ssize_t offset, index
        cdef _BlockLease lease
        PyObject_GetBuffer(view, &buf, PyBUF_SIMPLE)
        try:
            offset = <char*>buf.buf - self._base
            if self._unmapped or not (0 <= offset < self.block_size * self.blocks):
                raise ValueError('this buffer is not a block of this BufferPool')
            index = offset // self.block_size
            if offset + buf.len > (index + 1) * self.block_size:
                raise ValueError('buffer crosses two blocks of a BufferPool')
        finally:
            PyBuffer_Release(&buf)
        lease = self._leases[index]
        owner = view.obj if type(view) is memoryview else None
        if lease is None or (type(owner) is _BlockLease and owner is not lease):
            raise ValueError('this BufferPool block was already returned to the pool')
        if lease.written:
            raise ValueError('this block was written with write_zc(): it goes back to the '
                             "pool by itself when the write's released future resolves")
        self._give_back(index)

    def close(self):
        """No more acquire(); pending ones fail with RuntimeError.  The
        registration and the memory go once the kernel let go of every block
        (the last ``released``) and no view of the pool is left."""
        if self._closing:
            return
        self._closing = True
        waiters, self._waiters = self._waiters, collections.deque()
        for fut in waiters:
            if not fut.done():
                _settle(fut, RuntimeError('BufferPool is closed'))
        self._maybe_finish()

    cdef object _take(self):
        cdef _BlockLease lease = _BlockLease.__new__(_BlockLease)
        lease.pool = self
        lease.index = self._free.pop()
        self._leases[lease.index] = lease
        return memoryview(lease)

    cdef _give_back(self, Py_ssize_t index):
        self._leases[index] = None
        if self._closing:
            self._maybe_finish()
            return
        self._free.append(index)
        self._wake_waiter()

    cdef _wake_waiter(self):
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    cdef _maybe_finish(self):
        cdef iovec iov
        cdef RingLoop loop = self._loop
        if not self._closing or self._unmapped or self._inflight:
            return
        if self._buf_index >= 0:
            # The kernel reads no block any more: drop the registration.
            if loop._ring_ready:
                iov.iov_base = NULL
                iov.iov_len = 0
                io_uring_register_buffers_update_tag(&loop._ring, self._buf_index, &iov, NULL, 1)
                loop._fixed_slots.append(self._buf_index)
            self._buf_index = -1
        if self._exports == 0:
            munmap(self._base, self._map_len)
            self._base = NULL
            self._unmapped = True
            _zc_pools.remove(self)

    cdef _on_loop_close(self):
        # After the ring went: its registrations went with it.  What is
        # still in flight is quarantined (_Pinned holds its view, so the
        # mapping is never unmapped).
        self._buf_index = -1
        self.close()


@cython.final
@cython.no_gc_clear
cdef class _BlockLease:

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        cdef BufferPool pool = self.pool
        if pool._closing or pool._leases[self.index] is not self:
            raise BufferError('this BufferPool block is no longer held')
        PyBuffer_FillInfo(buffer, self, pool._base + self.index * pool.block_size,
                          pool.block_size, 0, flags)
        pool._exports += 1

    def __releasebuffer__(self, Py_buffer *buffer):
        self.pool._exports -= 1
        if self.pool._closing:
            self.pool._maybe_finish()

    cdef _write_started(self):
        self.written = True
        self.writes += 1
        if self.writes == 1:
            self.pool._inflight += 1

    cdef _write_done(self):
        self.writes -= 1
        if self.writes == 0:
            self.pool._inflight -= 1
            self.pool._give_back(self.index)

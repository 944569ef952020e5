cdef class BufferPool:
    cdef:
        RingLoop _loop
        char *_base
        size_t _map_len
        readonly Py_ssize_t block_size
        readonly Py_ssize_t blocks
        int _buf_index            # slot in the loop's registered-buffer table, -1: none
        str _fixed                # 'registered', or why not ('unavailable: ...')
        list _free                # indices of the blocks nobody holds
        list _leases              # block index -> its _BlockLease, None when free
        object _waiters           # deque of acquire() futures
        Py_ssize_t _exports       # buffer exports of this pool's leases still alive
        Py_ssize_t _inflight      # blocks with a write_zc() the kernel may still read
        bint _closing
        bint _unmapped

    cdef object _take(self)
    cdef _give_back(self, Py_ssize_t index)
    cdef _wake_waiter(self)
    cdef _maybe_finish(self)
    cdef _on_loop_close(self)


cdef class _BlockLease:
    # One acquire() of one block: what the pool's memoryviews export, so a
    # view outliving its lease is recognised, and exports can be counted.
    cdef:
        BufferPool pool
        Py_ssize_t index
        Py_ssize_t writes         # write_zc() handles not yet released
        bint written

    cdef _write_started(self)
    cdef _write_done(self)

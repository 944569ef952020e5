# Callback handles: what call_soon / call_later return.  Same behaviour and
# repr as asyncio.Handle / asyncio.TimerHandle, with the arguments stored in
# the handle and the context entered through the C API.

# Python >= 3.13 shows a callback's arguments only in debug mode
# (_format_callback_source grew a debug= keyword).
try:
    format_callback_source(len, (), debug=False)
    _FORMAT_HAS_DEBUG = True
except TypeError:
    _FORMAT_HAS_DEBUG = False


cdef object _format_cb(Handle h, object callback, object args):
    if _FORMAT_HAS_DEBUG:
        return format_callback_source(callback, args,
                                      debug=h._loop is not None and h._loop._debug)
    return format_callback_source(callback, args)


@cython.no_gc_clear
cdef class Handle:

    def __cinit__(self):
        self._cancelled = False

    cdef _set_source_traceback(self):
        if self._loop is not None and self._loop._debug:
            # The loop's methods are compiled and have no frames: frame 0
            # is already the caller's (asyncio's Python methods skip theirs).
            try:
                frame = sys_getframe(0)
            except ValueError:      # called with no Python frame at all
                return
            self._source_traceback = extract_stack(frame)

    def _repr_info(self):
        info = [self.__class__.__name__]
        if self._cancelled:
            info.append('cancelled')
        if self._callback is not None:
            info.append(_format_cb(self, self._callback, self._args or ()))
        if self._source_traceback:
            frame = self._source_traceback[-1]
            info.append(f'created at {frame[0]}:{frame[1]}')
        return info

    def __repr__(self):
        if self._repr is not None:
            return self._repr
        info = self._repr_info()
        return '<{}>'.format(' '.join(info))

    def get_context(self):
        return self._context

    def cancel(self):
        if not self._cancelled:
            self._cancelled = True
            if self._loop is not None and self._loop._debug:
                # Keep a representation in debug mode to keep the callback
                # and parameters for debugging purposes.
                self._repr = repr(self)
            self._callback = None
            self._args = None

    def cancelled(self):
        return self._cancelled

    cdef _run(self):
        cdef object callback = self._callback
        cdef object args = self._args
        cdef object context = self._context
        cdef PyObject *ctx = <PyObject*>context
        self._loop._current_handle = self
        try:
            # Leave the context before the exception handler runs: it enters
            # the handle's context itself (and asyncio reports "already
            # entered" to the handler too).
            PyContext_Enter(ctx)
            try:
                if args is None:
                    callback()
                else:
                    callback(*args)
            finally:
                PyContext_Exit(ctx)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            cb = _format_cb(self, callback, args or ())
            context_dict = {
                'message': f'Exception in callback {cb}',
                'exception': exc,
                'handle': self,
            }
            if self._source_traceback:
                context_dict['source_traceback'] = self._source_traceback
            self._loop.call_exception_handler(context_dict)
        finally:
            self._loop._current_handle = None
        # Break reference cycles (exc -> traceback -> frame -> handle).
        self = None


@cython.no_gc_clear
cdef class TimerHandle(Handle):

    def _repr_info(self):
        info = Handle._repr_info(self)
        pos = 2 if self._cancelled else 1
        info.insert(pos, f'when={self._when}')
        return info

    def __hash__(self):
        return hash(self._when)

    def __lt__(self, other):
        if isinstance(other, TimerHandle):
            return self._when < (<TimerHandle>other)._when
        return NotImplemented

    def __le__(self, other):
        if isinstance(other, TimerHandle):
            return self._when < (<TimerHandle>other)._when or self.__eq__(other)
        return NotImplemented

    def __gt__(self, other):
        if isinstance(other, TimerHandle):
            return self._when > (<TimerHandle>other)._when
        return NotImplemented

    def __ge__(self, other):
        if isinstance(other, TimerHandle):
            return self._when > (<TimerHandle>other)._when or self.__eq__(other)
        return NotImplemented

    def __eq__(self, other):
        if isinstance(other, TimerHandle):
            o = <TimerHandle>other
            return (self._when == o._when and self._callback == o._callback and
                    self._args == o._args and self._cancelled == o._cancelled)
        return NotImplemented

    def cancel(self):
        if not self._cancelled and self._loop is not None:
            self._loop._timer_handle_cancelled(self)
        Handle.cancel(self)

    def when(self):
        """Return a scheduled callback time (loop.time() units)."""
        return self._when


cdef inline Handle new_handle(RingLoop loop, object callback, object args, object context):
    cdef Handle h = Handle.__new__(Handle)
    h._loop = loop
    h._callback = callback
    h._args = args
    h._context = context
    return h


cdef inline TimerHandle new_timer(RingLoop loop, double when, object callback, object args,
                                  object context):
    cdef TimerHandle h = TimerHandle.__new__(TimerHandle)
    h._loop = loop
    h._callback = callback
    h._args = args
    h._context = context
    h._when = when
    return h


# The loop's timers: a binary min-heap on TimerHandle._when, stored in a
# Python list (so the GC sees the references) but ordered here in C on the
# double deadlines instead of through heapq's rich comparisons.  Entries are
# only moved between slots, so their references stay owned by the list.
# Comparisons are written `a < b` as TimerHandle.__lt__ does, so a NaN
# deadline places like it would with heapq.

cdef inline double _timer_when(PyObject *timer) noexcept:
    return (<TimerHandle>timer)._when


cdef inline PyObject **_heap_items(list heap) noexcept:
    return (<PyListObject*><PyObject*>heap).ob_item


cdef void _heap_sift_up(PyObject **items, Py_ssize_t start, Py_ssize_t pos,
                        PyObject *item) noexcept:
    """Put item in the hole at pos, moving it up towards start."""
    cdef double when = _timer_when(item)
    cdef Py_ssize_t parent
    while pos > start:
        parent = (pos - 1) >> 1
        if not when < _timer_when(items[parent]):
            break
        items[pos] = items[parent]
        pos = parent
    items[pos] = item


cdef void _heap_sift_down(PyObject **items, Py_ssize_t n, Py_ssize_t pos,
                          PyObject *item) noexcept:
    """Put item in the hole at pos, in the subheap rooted there.

    The hole first travels to a leaf along the earlier children, then item
    moves up from there: the item comes from the end of the heap, so it
    usually belongs near the bottom, and this takes about one comparison per
    level instead of two."""
    cdef Py_ssize_t start = pos
    cdef Py_ssize_t child = 2 * pos + 1
    while child < n:
        if child + 1 < n and not _timer_when(items[child]) < _timer_when(items[child + 1]):
            child += 1
        items[pos] = items[child]
        pos = child
        child = 2 * pos + 1
    _heap_sift_up(items, start, pos, item)


cdef _heap_push(list heap, TimerHandle timer):
    heap.append(timer)
    cdef Py_ssize_t last = len(heap) - 1
    _heap_sift_up(_heap_items(heap), 0, last, <PyObject*>timer)


cdef TimerHandle _heap_pop(list heap):
    """Remove and return the earliest timer; heap must not be empty."""
    cdef PyObject **items
    cdef TimerHandle top
    cdef object last = heap.pop()
    if not heap:
        return <TimerHandle>last
    items = _heap_items(heap)
    top = <TimerHandle>items[0]
    Py_DECREF(top)                  # the list's reference, now ours
    Py_INCREF(last)                 # back in the list, at the hole's end
    _heap_sift_down(items, len(heap), 0, <PyObject*>last)
    return top


cdef _heap_init(list heap):
    """Order a list of timers into a heap."""
    cdef PyObject **items = _heap_items(heap)
    cdef Py_ssize_t n = len(heap)
    cdef Py_ssize_t i
    for i in reversed(range(n // 2)):
        _heap_sift_down(items, n, i, items[i])

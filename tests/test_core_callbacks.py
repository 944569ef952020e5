"""call_soon / call_later / call_at, handles, time() and exception handling:
the same scenario on asyncio's loop and on zcloop."""
import asyncio
import contextvars
import decimal
import fractions
import logging
import random
import re
import sys
import time

import pytest


cv = contextvars.ContextVar("cv", default="unset")

#: Python >= 3.13 shows callback arguments in reprs only in debug mode.
ARGS_IN_REPR = sys.version_info < (3, 13)


# ----------------------------------------------------------------------
# call_soon

def test_call_soon_order_and_args(loop):
    seen = []
    for i in range(50):
        loop.call_soon(seen.append, i)
    loop.call_soon(lambda *a, **kw: seen.append(a), 1, "two", None)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == list(range(50)) + [(1, "two", None)]


def test_call_soon_from_callback_runs_next_iteration(loop):
    seen = []

    def first():
        seen.append("first")
        loop.call_soon(seen.append, "nested")

    loop.call_soon(first)
    loop.call_soon(seen.append, "second")
    loop.call_soon(loop.stop)
    loop.run_forever()
    # stop() lets the current iteration finish: nested was scheduled during
    # it and so does not run yet.
    assert seen == ["first", "second"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["first", "second", "nested"]


def test_call_soon_returns_handle(loop):
    def cb(a, b):
        pass

    h = loop.call_soon(cb, 1, 2)
    assert not h.cancelled()
    if hasattr(asyncio.Handle, "get_context"):      # asyncio >= 3.12
        assert isinstance(h.get_context(), contextvars.Context)
    r = repr(h)
    assert r.startswith("<Handle ")
    assert ("cb(1, 2)" if ARGS_IN_REPR else "cb()") in r
    assert re.search(r"test_core_callbacks\.py:\d+", r)
    h.cancel()
    assert h.cancelled()
    assert repr(h).startswith("<Handle cancelled")
    h.cancel()      # idempotent
    assert h.cancelled()


@pytest.mark.parametrize("debug", [False, True], ids=["nodebug", "debug"])
def test_handle_repr_matches_asyncio(loop_factory, debug):
    def cb(x, y=None):
        pass

    loop = loop_factory()
    loop.set_debug(debug)
    try:
        h = loop.call_soon(cb, 1)
        t = loop.call_at(123.5, cb, "a")
        # Strip source positions (debug mode adds "created at file:line").
        norm = lambda s: re.sub(r"at \S+:\d+", "at X", re.sub(r" created at \S+:\d+", "", s))
        q = "test_handle_repr_matches_asyncio.<locals>.cb"
        args = ARGS_IN_REPR or debug
        assert norm(repr(h)) == f"<Handle {q}({'1' if args else ''}) at X>"
        assert norm(repr(t)) == f"<TimerHandle when=123.5 {q}({repr('a') if args else ''}) at X>"
        t.cancel()
        h.cancel()
        if debug:   # debug mode keeps the repr of a cancelled handle
            assert norm(repr(h)) == f"<Handle cancelled {q}({'1' if args else ''}) at X>"
        else:
            assert repr(h) == "<Handle cancelled>"
            assert repr(t) == "<TimerHandle cancelled when=123.5>"
    finally:
        loop.close()


def test_cancelled_handle_does_not_run(loop):
    seen = []
    h = loop.call_soon(seen.append, 1)
    loop.call_soon(seen.append, 2)
    h.cancel()
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [2]


def test_cancel_later_handle_from_earlier_callback(loop):
    seen = []
    h2 = None

    def first():
        seen.append(1)
        h2.cancel()

    loop.call_soon(first)
    h2 = loop.call_soon(seen.append, 2)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == [1]


def test_call_soon_context_propagates(loop):
    seen = []

    def cb():
        seen.append(cv.get())
        cv.set("changed-in-callback")

    token = cv.set("outer")
    try:
        loop.call_soon(cb)
        cv.set("after-schedule")
        loop.call_soon(cb)
    finally:
        cv.reset(token)
    loop.call_soon(loop.stop)
    loop.run_forever()
    # Each handle runs in a copy taken at scheduling time, and a callback's
    # changes don't leak out of that copy.
    assert seen == ["outer", "after-schedule"]
    assert cv.get() == "unset"


def test_call_soon_explicit_context(loop):
    ctx = contextvars.Context()
    ctx.run(cv.set, "explicit")
    seen = []

    def cb():
        seen.append(cv.get())
        cv.set("mutated")

    h = loop.call_soon(cb, context=ctx)
    if hasattr(asyncio.Handle, "get_context"):      # asyncio >= 3.12
        assert h.get_context() is ctx
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["explicit"]
    # With an explicit context, changes persist in that context.
    assert ctx[cv] == "mutated"


def test_call_soon_entered_context_error(loop, caplog):
    """Running a handle whose context is already entered: the RuntimeError
    goes to the exception handler (asyncio's Context.run raises inside
    Handle._run's try block) and the loop keeps running."""
    ctx = contextvars.Context()
    seen = []

    def inner():
        loop.call_soon(seen.append, "never", context=ctx)
        loop.call_soon(seen.append, "next")
        loop.call_soon(loop.stop)
        with caplog.at_level(logging.ERROR, logger="asyncio"):
            loop.run_forever()

    ctx.run(inner)
    assert seen == ["next"]
    recs = [r for r in caplog.records if r.name == "asyncio"]
    assert len(recs) == 1
    assert recs[0].getMessage().startswith(
        "Exception in callback list.append('never')" if ARGS_IN_REPR
        else "Exception in callback list.append()")
    assert recs[0].exc_info[0] is RuntimeError
    assert "already entered" in str(recs[0].exc_info[1])


def test_call_soon_closed_loop(loop_factory):
    loop = loop_factory()
    loop.close()
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_soon(lambda: None)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_later(1, lambda: None)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_at(1, lambda: None)
    with pytest.raises(RuntimeError, match="Event loop is closed"):
        loop.call_soon_threadsafe(lambda: None)


def test_call_soon_coroutine_in_debug(loop_factory):
    async def coro_func():
        pass

    loop = loop_factory()
    loop.set_debug(True)
    try:
        msgs = []
        for meth in ("call_soon", "call_soon_threadsafe"):
            with pytest.raises(TypeError) as ei:
                getattr(loop, meth)(coro_func)
            msgs.append(str(ei.value))
            coro = coro_func()
            with pytest.raises(TypeError) as ei:
                getattr(loop, meth)(coro)
            coro.close()
            msgs.append(str(ei.value))
        with pytest.raises(TypeError) as ei:
            loop.call_later(1, coro_func)
        msgs.append(str(ei.value))
        with pytest.raises(TypeError) as ei:
            loop.call_soon(42)
        msgs.append(str(ei.value))
    finally:
        loop.close()
    assert msgs == [
        "coroutines cannot be used with call_soon()",
        "coroutines cannot be used with call_soon()",
        "coroutines cannot be used with call_soon_threadsafe()",
        "coroutines cannot be used with call_soon_threadsafe()",
        "coroutines cannot be used with call_at()",
        "a callable object was expected by call_soon(), got 42",
    ]


# ----------------------------------------------------------------------
# call_later / call_at / time()

def test_time_is_monotonic_clock(loop):
    a = time.monotonic()
    t = loop.time()
    b = time.monotonic()
    assert isinstance(t, float)
    assert a - 0.01 <= t <= b + 0.01
    assert loop.time() >= t


def test_call_later_order(loop):
    seen = []
    for delay in (0.03, 0.01, 0.02, 0, -1, 0.01):
        loop.call_later(delay, seen.append, delay)
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    # Equal deadlines keep no particular order in asyncio's heap either,
    # but -1 and 0 are due before the others.
    assert sorted(seen[:2]) == [-1, 0]
    assert seen[2:4] == [0.01, 0.01] and seen[4:] == [0.02, 0.03]


def test_call_later_not_before_deadline(loop):
    t0 = loop.time()
    fired = []
    loop.call_later(0.05, lambda: (fired.append(loop.time()), loop.stop()))
    loop.run_forever()
    # asyncio may fire up to clock_resolution early.
    assert fired[0] - t0 >= 0.05 - 0.002


def test_call_at_order_and_args(loop):
    now = loop.time()
    seen = []
    loop.call_at(now + 0.02, seen.append, "b")
    loop.call_at(now + 0.01, seen.append, "a")
    loop.call_at(now - 5, seen.append, "past")
    h = loop.call_at(now + 0.015, seen.append, "cancelled")
    assert h.when() == now + 0.015
    h.cancel()
    loop.call_at(now + 0.03, loop.stop)
    loop.run_forever()
    assert seen == ["past", "a", "b"]


def test_call_later_none(loop):
    with pytest.raises(TypeError):
        loop.call_later(None, lambda: None)
    with pytest.raises(TypeError):
        loop.call_at(None, lambda: None)


def test_call_later_context(loop):
    ctx = contextvars.Context()
    ctx.run(cv.set, "timer-ctx")
    seen = []
    token = cv.set("copied")
    try:
        h1 = loop.call_later(0, lambda: seen.append(cv.get()))
    finally:
        cv.reset(token)
    h2 = loop.call_later(0, lambda: seen.append(cv.get()), context=ctx)
    if hasattr(asyncio.Handle, "get_context"):      # asyncio >= 3.12
        assert h2.get_context() is ctx
        assert h1.get_context() is not ctx
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert sorted(seen) == ["copied", "timer-ctx"]


def test_timer_handle_comparisons(loop):
    cb = lambda: None
    now = loop.time()
    a = loop.call_at(now + 1, cb)
    b = loop.call_at(now + 2, cb)
    c = loop.call_at(now + 1, cb)
    assert a < b and b > a and a <= c and a >= c and a == c and a != b
    assert hash(a) == hash(c)
    for h in (a, b, c):
        h.cancel()


def test_many_cancelled_timers_cleanup(loop):
    """Cancel most of a big heap: only live timers run and the heap is
    compacted (asyncio's _MIN_CANCELLED_TIMER_HANDLES_FRACTION rule)."""
    seen = []
    handles = [loop.call_later(10 + i * 0.001, seen.append, i) for i in range(1000)]
    for h in handles[:900]:
        h.cancel()
    for i in range(20):
        loop.call_later(0.001 * (i % 5), seen.append, ("live", i))
    loop.call_later(0.02, loop.stop)
    loop.run_forever()
    assert sorted(seen, key=lambda x: x[1]) == [("live", i) for i in range(20)]
    # The heap holds the 100 far timers still pending, not the 900 cancelled.
    if hasattr(loop, "_scheduled"):
        assert len(loop._scheduled) <= 110
    for h in handles[900:]:
        h.cancel()


def test_cancel_timers_head_of_heap(loop):
    seen = []
    hs = [loop.call_later(0.001 * i, seen.append, i) for i in range(10)]
    for h in hs[:5]:
        h.cancel()
    loop.call_later(0.05, loop.stop)
    loop.run_forever()
    assert seen == [5, 6, 7, 8, 9]


def test_timer_cancel_after_run(loop):
    h = loop.call_later(0, loop.stop)
    loop.run_forever()
    h.cancel()      # already ran: must not corrupt the cancelled count
    seen = []
    loop.call_later(0, seen.append, 1)
    loop.call_later(0.005, loop.stop)
    loop.run_forever()
    assert seen == [1]


def _assert_heap_ordered(loop):
    # asyncio's loop and zcloop both expose the timer heap as _scheduled.
    if hasattr(loop, "_scheduled"):
        sched = loop._scheduled
        assert all(sched[(k - 1) // 2].when() <= sched[k].when()
                   for k in range(1, len(sched)))


def test_many_random_timers_fire_in_deadline_order(loop):
    """5000 timers with random deadlines, many equal, some already past: each
    fires exactly once, in deadline order, and not before its deadline (less
    the clock resolution asyncio allows)."""
    rng = random.Random(1234)
    resolution = time.get_clock_info("monotonic").resolution
    now = loop.time()
    fired = []

    def cb(when, i):
        fired.append((when, i, loop.time()))

    for i in range(5000):
        offset = rng.choice((-0.01, 0.0, 0.004, 0.004, rng.uniform(0, 0.03)))
        loop.call_at(now + offset, cb, now + offset, i)
    _assert_heap_ordered(loop)
    loop.call_at(now + 0.05, loop.stop)
    loop.run_forever()
    assert sorted(i for _, i, _ in fired) == list(range(5000))
    deadlines = [when for when, _, _ in fired]
    assert deadlines == sorted(deadlines)
    assert all(t >= when - resolution - 1e-6 for when, _, t in fired)


def test_cancel_half_of_10k_timers(loop):
    rng = random.Random(99)
    now = loop.time()
    fired = []
    handles = [loop.call_at(now + rng.uniform(0, 0.02), fired.append, i)
               for i in range(10000)]
    cancelled = set(rng.sample(range(10000), 5000))
    for i in cancelled:
        handles[i].cancel()
    _assert_heap_ordered(loop)
    loop.call_at(now + 0.04, loop.stop)
    loop.run_forever()
    assert sorted(fired) == sorted(set(range(10000)) - cancelled)
    deadlines = [handles[i].when() for i in fired]
    assert deadlines == sorted(deadlines)
    assert all(handles[i].cancelled() for i in cancelled)
    if hasattr(loop, "_scheduled"):
        assert loop._scheduled == []


def test_timers_cancelled_and_scheduled_by_timer_callbacks(loop):
    """All timers due in one iteration, with distinct deadlines: callbacks
    cancel timers queued behind them (which then never run) and schedule
    past-due timers (which run in the next iteration).  The exact trace is
    known in advance, the same for every loop."""
    now = loop.time()
    handles = {}
    trace = []

    def cb(i):
        trace.append(i)
        if i % 3 == 0 and i + 1 in handles:
            handles[i + 1].cancel()
        if i < 100 and i % 5 == 0:
            handles[1000 + i] = loop.call_at(now - 1 + i * 1e-4, cb, 1000 + i)

    def deadline(i):
        return now - 1 + (i * 7919) % 300 * 1e-3   # a permutation of 0..299 ms

    for i in range(300):
        handles[i] = loop.call_at(deadline(i), cb, i)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()

    expected, cancelled, later = [], set(), []
    for i in sorted(range(300), key=deadline):
        if i in cancelled:
            continue
        expected.append(i)
        if i % 3 == 0:
            cancelled.add(i + 1)
        if i < 100 and i % 5 == 0:
            later.append(1000 + i)
    assert trace == expected + sorted(later)


def test_call_later_delay_types(loop):
    seen = []
    loop.call_later(0, seen.append, "int")
    loop.call_later(fractions.Fraction(1, 1000), seen.append, "fraction")
    loop.call_later(True, seen.append, "bool")      # one second: not reached
    with pytest.raises(TypeError):
        loop.call_later(decimal.Decimal("0.001"), seen.append, "decimal")
    with pytest.raises(TypeError):
        loop.call_later("0.001", seen.append, "str")
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert seen == ["int", "fraction"]


def test_call_later_goes_through_subclass_call_at(loop):
    """asyncio's call_later() calls call_at(): a subclass overriding call_at
    sees every timer."""
    seen = []

    class Sub(type(loop)):
        def call_at(self, when, callback, *args, context=None):
            seen.append(callback)
            return super().call_at(when, callback, *args, context=context)

    sub = Sub()
    try:
        h = sub.call_later(0, sub.stop)
        sub.run_forever()
        assert seen == [sub.stop]
        assert h.when() <= sub.time()
    finally:
        sub.close()


def test_sleep_wakes_at_deadline(run):
    async def main():
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(0.02)
        return loop.time() - t0

    assert run(main) >= 0.02 - 0.002


def test_long_timer_does_not_block_ready(loop):
    """A far timer in the heap must not make the loop sleep when there is
    ready work (timeout 0 with ready callbacks)."""
    loop.call_later(3600, lambda: None)
    seen = []

    def chain(i):
        seen.append(i)
        if i < 100:
            loop.call_soon(chain, i + 1)
        else:
            loop.stop()

    loop.call_soon(chain, 0)
    loop.run_forever()
    assert seen == list(range(101))


# ----------------------------------------------------------------------
# Exception handling

def test_exception_in_callback_goes_to_handler(loop):
    contexts = []

    def handler(lp, context):
        assert lp is loop
        contexts.append(context)

    assert loop.get_exception_handler() is None
    loop.set_exception_handler(handler)
    assert loop.get_exception_handler() is handler

    def boom(x):
        raise ZeroDivisionError(x)

    h = loop.call_soon(boom, 7)
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert len(contexts) == 1
    c = contexts[0]
    assert sorted(c) == ["exception", "handle", "message"]
    assert c["handle"] is h
    assert isinstance(c["exception"], ZeroDivisionError)
    assert re.fullmatch(r"Exception in callback .*boom\((7)?\) at .*test_core_callbacks\.py:\d+",
                        c["message"])
    assert ("boom(7)" in c["message"]) == ARGS_IN_REPR
    loop.set_exception_handler(None)
    assert loop.get_exception_handler() is None


def test_exception_in_timer_callback_goes_to_handler(loop):
    contexts = []
    loop.set_exception_handler(lambda lp, c: contexts.append(c))
    h = loop.call_later(0, lambda: 1 / 0)
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert [sorted(c) for c in contexts] == [["exception", "handle", "message"]]
    assert contexts[0]["handle"] is h


def test_exception_handler_runs_in_handle_context(loop, is_zcloop):
    """Python >= 3.12 runs the exception handler in the handle's context;
    zcloop does so on every version."""
    ctx = contextvars.Context()
    ctx.run(cv.set, "handle-ctx")
    seen = []
    loop.set_exception_handler(lambda lp, c: seen.append(cv.get()))
    loop.call_soon(lambda: 1 / 0, context=ctx)
    loop.call_soon(loop.stop)
    loop.run_forever()
    new = is_zcloop or sys.version_info >= (3, 12)
    assert seen == ["handle-ctx" if new else "unset"]


def test_set_exception_handler_type_error(loop):
    with pytest.raises(TypeError, match="A callable object or None is expected, got 1"):
        loop.set_exception_handler(1)


def test_failing_exception_handler_logged(loop, caplog):
    def handler(lp, context):
        raise ValueError("handler broke")

    loop.set_exception_handler(handler)
    loop.call_soon(lambda: 1 / 0)
    loop.call_soon(loop.stop)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.run_forever()
    msgs = [r.getMessage() for r in caplog.records if r.name == "asyncio"]
    assert len(msgs) == 1
    assert msgs[0].startswith("Unhandled error in exception handler")
    rec = [r for r in caplog.records if r.name == "asyncio"][0]
    assert isinstance(rec.exc_info[1], ValueError)


def test_default_exception_handler_logs(loop, caplog):
    def boom():
        raise KeyError("k")

    loop.call_soon(boom)
    loop.call_soon(loop.stop)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.run_forever()
    recs = [r for r in caplog.records if r.name == "asyncio"]
    assert len(recs) == 1
    rec = recs[0]
    assert rec.levelno == logging.ERROR
    msg = rec.getMessage()
    assert msg.startswith("Exception in callback ")
    assert "boom()" in msg
    assert re.search(r"\nhandle: <Handle .*boom\(\) at ", msg)
    assert rec.exc_info[0] is KeyError


def test_default_exception_handler_direct(loop, caplog):
    """default_exception_handler() formats extra keys the same way."""
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        loop.default_exception_handler({"message": "msg", "zkey": [1, 2], "akey": "s"})
        loop.default_exception_handler({})
        loop.call_exception_handler({"message": "via call", "exception": OSError(5, "x")})
    out = [(r.getMessage(), r.exc_info and r.exc_info[0]) for r in caplog.records]
    assert out == [
        ("msg\nakey: 's'\nzkey: [1, 2]", False),
        ("Unhandled exception in event loop", False),
        ("via call", OSError),
    ]


def test_exception_handler_sees_future_and_task(run):
    """Keys of the context for an unretrieved task exception."""
    async def main():
        loop = asyncio.get_running_loop()
        contexts = []
        loop.set_exception_handler(lambda lp, c: contexts.append(c))

        async def fail():
            raise ValueError("x")

        t = loop.create_task(fail())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        del t
        import gc
        gc.collect()
        await asyncio.sleep(0)
        return [sorted(c) for c in contexts], contexts[0]["message"] if contexts else None

    keys, message = run(main)
    assert keys == [["exception", "future", "message"]]
    assert message == "Task exception was never retrieved"


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_base_exception_from_callback_propagates(loop, exc):
    seen = []

    def cb():
        raise exc()

    loop.call_soon(cb)
    loop.call_soon(seen.append, "after")
    with pytest.raises(exc):
        loop.run_forever()
    assert not loop.is_running()
    assert asyncio._get_running_loop() is None
    # The loop can run again afterwards; the remaining callback still runs.
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["after"]


def test_base_exception_keeps_the_ready_order(loop):
    # What the interrupted iteration did not reach runs first, then what its
    # callbacks scheduled, each once; a cancelled handle stays cancelled.
    seen = []

    def first():
        seen.append("first")
        loop.call_soon(seen.append, "scheduled by first")

    def interrupt():
        raise KeyboardInterrupt

    loop.call_soon(first)
    loop.call_soon(interrupt)
    loop.call_soon(seen.append, "not reached")
    loop.call_soon(seen.append, "cancelled").cancel()
    loop.call_soon(seen.append, "last")
    with pytest.raises(KeyboardInterrupt):
        loop.run_forever()
    assert seen == ["first"]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert seen == ["first", "not reached", "last", "scheduled by first"]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit])
def test_base_exception_from_exception_handler_propagates(loop, exc):
    def handler(lp, c):
        raise exc()

    loop.set_exception_handler(handler)
    loop.call_soon(lambda: 1 / 0)
    with pytest.raises(exc):
        loop.run_forever()
    assert not loop.is_running()



def test_handles_are_weak_referenceable(loop):
    """asyncio's Handle and TimerHandle are plain Python objects: libraries
    keep weak references to them (weakref.ref, WeakSet, WeakValueDictionary)."""
    import gc
    import weakref
    handles = [loop.call_soon(lambda: None), loop.call_later(10, lambda: None),
               loop.call_at(loop.time() + 10, lambda: None)]
    refs = [weakref.ref(h) for h in handles]
    assert [r() for r in refs] == handles
    assert len(weakref.WeakSet(handles)) == 3
    for h in handles[1:]:
        h.cancel()
    loop.run_until_complete(asyncio.sleep(0))   # runs the call_soon handle
    del h, handles
    gc.collect()
    assert refs[0]() is None

"""High-level asyncio APIs on both loops: they only need the loop core
(futures, call_soon, call_at, executors), so results must be identical."""
import asyncio
import contextvars
import gc
import sys
import threading

import pytest

cv = contextvars.ContextVar("cv", default=None)


def test_timeout_context_manager(run):
    async def main():
        out = []
        try:
            async with asyncio.timeout(0.01) as cm:
                out.append(cm.when() is not None)
                await asyncio.sleep(3600)
        except TimeoutError:
            out.append("timeout")
        async with asyncio.timeout(None) as cm:
            cm.reschedule(asyncio.get_running_loop().time() + 3600)
            await asyncio.sleep(0.001)
            out.append("rescheduled-ok")
        async with asyncio.timeout_at(asyncio.get_running_loop().time() + 3600):
            out.append(await asyncio.sleep(0, "inside"))
        return out

    assert run(main) == [True, "timeout", "rescheduled-ok", "inside"]


def test_taskgroup(run):
    async def main():
        async def child(i):
            await asyncio.sleep(0.001 * (3 - i))
            return i

        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(child(i)) for i in range(3)]
        res = [t.result() for t in tasks]

        async def failing():
            await asyncio.sleep(0)
            raise ValueError("child failed")

        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(failing())
                slow = tg.create_task(asyncio.sleep(3600))
        except* ValueError as eg:
            res.append([str(e) for e in eg.exceptions])
        res.append(slow.cancelled())
        return res

    assert run(main) == [0, 1, 2, ["child failed"], True]


def test_to_thread_propagates_context(run):
    async def main():
        cv.set("ctx-value")
        return await asyncio.to_thread(lambda: (cv.get(), threading.current_thread()
                                                is not threading.main_thread()))

    assert run(main) == ("ctx-value", True)


def test_queue_producer_consumer(run):
    async def main():
        q = asyncio.Queue(maxsize=3)
        out = []

        async def producer():
            for i in range(50):
                await q.put(i)
            await q.put(None)

        async def consumer():
            while (item := await q.get()) is not None:
                out.append(item)
                if item % 7 == 0:
                    await asyncio.sleep(0)

        await asyncio.gather(producer(), consumer())
        return out

    assert run(main) == list(range(50))


def test_sync_primitives(run):
    async def main():
        lock, event, cond, sem = asyncio.Lock(), asyncio.Event(), asyncio.Condition(), \
            asyncio.Semaphore(2)
        order = []

        async def locker(i):
            async with lock:
                order.append(("lock", i))
                await asyncio.sleep(0)

        async def waiter(i):
            await event.wait()
            order.append(("event", i))

        async def cond_waiter(i):
            async with cond:
                await cond.wait()
                order.append(("cond", i))

        async def sem_user(i):
            async with sem:
                order.append(("sem", i))
                await asyncio.sleep(0.001)

        waiters = [asyncio.ensure_future(waiter(i)) for i in range(3)]
        conds = [asyncio.ensure_future(cond_waiter(i)) for i in range(3)]
        await asyncio.gather(*(locker(i) for i in range(3)))
        await asyncio.sleep(0)
        event.set()
        async with cond:
            cond.notify_all()
        await asyncio.gather(*waiters, *conds)
        await asyncio.gather(*(sem_user(i) for i in range(4)))
        barrier = asyncio.Barrier(3)
        await asyncio.gather(*(barrier.wait() for _ in range(3)))
        return order

    out = run(main)
    assert out[:3] == [("lock", 0), ("lock", 1), ("lock", 2)]
    assert sorted(out[3:9]) == [("cond", i) for i in range(3)] + [("event", i) for i in range(3)]
    assert out[9:] == [("sem", i) for i in range(4)]


def test_wait_and_as_completed(run):
    async def main():
        async def d(x):
            await asyncio.sleep(x)
            return x

        tasks = [asyncio.ensure_future(d(x)) for x in (0.03, 0.01, 0.02)]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        first = [t.result() for t in done]
        order = [await f for f in asyncio.as_completed(tasks)]
        done, pending = await asyncio.wait([asyncio.ensure_future(d(3600))], timeout=0.01)
        for t in pending:
            t.cancel()
        return first, order, len(done), len(pending)

    assert run(main) == ([0.01], [0.01, 0.02, 0.03], 0, 1)


def test_shield_and_cancel(run):
    async def main():
        inner_done = []

        async def inner():
            await asyncio.sleep(0.01)
            inner_done.append(True)
            return "inner"

        inner_task = asyncio.ensure_future(inner())
        outer = asyncio.ensure_future(asyncio.shield(inner_task))
        await asyncio.sleep(0)
        outer.cancel()
        try:
            await outer
        except asyncio.CancelledError:
            pass
        return await inner_task, inner_done, outer.cancelled()

    assert run(main) == ("inner", [True], True)


def test_uncancel_and_cancel_message(run):
    async def main():
        async def sleeper():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError as exc:
                return ("cancelled", exc.args)

        t = asyncio.ensure_future(sleeper())
        await asyncio.sleep(0)
        t.cancel("why")
        res = await t
        return res, t.cancelling()

    assert run(main) == (("cancelled", ("why",)), 1)


def test_run_coroutine_threadsafe_and_wrap_future(run):
    async def main():
        loop = asyncio.get_running_loop()
        import concurrent.futures
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            cf = ex.submit(lambda: 5)
            a = await asyncio.wrap_future(cf)
            b = await loop.run_in_executor(ex, lambda: asyncio.run_coroutine_threadsafe(
                asyncio.sleep(0.001, 6), loop).result(20))
        return a, b

    assert run(main) == (5, 6)


def test_huge_and_infinite_delays(run):
    async def main():
        loop = asyncio.get_running_loop()
        h1 = loop.call_later(1e12, lambda: None)
        h2 = loop.call_at(float("inf"), lambda: None)
        await asyncio.sleep(0.001)
        h1.cancel()
        h2.cancel()
        try:
            await asyncio.wait_for(asyncio.sleep(1e12), 0.01)
        except TimeoutError:
            return "timed out"

    assert run(main) == "timed out"


def test_create_task_requires_coroutine(loop):
    with pytest.raises(TypeError):
        loop.create_task(42)
    # A generator-based or arbitrary awaitable is not a coroutine either.

    class Awaitable:
        def __await__(self):
            yield

    with pytest.raises(TypeError):
        loop.create_task(Awaitable())


def test_current_task_and_all_tasks(run):
    async def main():
        me = asyncio.current_task()
        other = asyncio.ensure_future(asyncio.sleep(3600))
        await asyncio.sleep(0)
        tasks = asyncio.all_tasks()
        other.cancel()
        return me in tasks and other in tasks, me.get_coro().__name__

    assert run(main) == (True, "main")


def test_many_timers_and_sleepers(run):
    async def main():
        loop = asyncio.get_running_loop()
        out = []
        base = loop.time()
        for i in range(2000):
            loop.call_at(base + (i % 10) * 0.001, out.append, i % 10)

        async def s(i):
            await asyncio.sleep((i % 10) * 0.001)
            return i

        res = await asyncio.gather(*(s(i) for i in range(2000)))
        await asyncio.sleep(0.02)
        return out, res

    out, res = run(main)
    assert out == sorted(out) and len(out) == 2000
    assert res == list(range(2000))


def test_cancelled_timer_handles_are_released(loop):
    """Cancelling most of a large timer heap: the heap is compacted, so the
    cancelled TimerHandle objects are freed (counted through the GC)."""
    def alive(kind):
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) is kind)

    handles = [loop.call_later(3600 + i, lambda: None) for i in range(1000)]
    kind = type(handles[0])
    base = alive(kind) - 1000
    for h in handles[:900]:
        h.cancel()
    del handles[:900]
    loop.call_soon(loop.stop)
    loop.run_forever()
    assert alive(kind) - base <= 110
    for h in handles:
        h.cancel()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="3.12+ API")
def test_eager_start_task(run):
    async def main():
        order = []

        async def child():
            order.append("child")

        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)
        t = asyncio.create_task(child())
        order.append("parent")
        await t
        return order

    assert run(main) == ["child", "parent"]

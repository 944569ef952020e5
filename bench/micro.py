"""Event loop micro benchmarks, run in-process on whatever loop asyncio.run() gives.

    python bench/micro.py {call_soon,call_later,sleep0} [--duration S] [--warmup S]

bench/harness.py selects the loop via ZCLOOP_LOOP + zcloop/_inject.  Prints
"window-start" when measuring starts and then one JSON line:
{"ops": N, "duration": wall seconds, "cpu": process CPU seconds, "loop": class}.
"""
import argparse
import asyncio
import json
import time

BATCH = 1000


async def call_soon_batch():
    """BATCH call_soon callbacks; returns when all have run."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    remaining = BATCH

    def callback():
        nonlocal remaining
        remaining -= 1
        if not remaining:
            done.set_result(None)

    for _ in range(BATCH):
        loop.call_soon(callback)
    await done
    return BATCH


async def call_later_batch():
    """BATCH timers with distinct, already-expiring delays (0-9 µs): timer
    bookkeeping rather than idle waiting dominates."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    remaining = BATCH

    def callback():
        nonlocal remaining
        remaining -= 1
        if not remaining:
            done.set_result(None)

    for i in range(BATCH):
        loop.call_later((i % 10) * 1e-6, callback)
    await done
    return BATCH


async def sleep0_batch():
    """Two tasks taking turns through asyncio.sleep(0), BATCH switches in all."""
    async def player():
        for _ in range(BATCH // 2):
            await asyncio.sleep(0)

    await asyncio.gather(player(), player())
    return BATCH


BENCHMARKS = {"call_soon": call_soon_batch, "call_later": call_later_batch,
              "sleep0": sleep0_batch}


async def measure(batch, duration, warmup):
    deadline = time.perf_counter() + warmup
    while time.perf_counter() < deadline:
        await batch()
    print("window-start", flush=True)
    ops = 0
    cpu_start, start = time.process_time(), time.perf_counter()
    deadline = start + duration
    while time.perf_counter() < deadline:
        ops += await batch()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    loop = type(asyncio.get_running_loop())
    return {"ops": ops, "total_ops": ops, "duration": wall, "cpu": cpu,
            "loop": f"{loop.__module__}.{loop.__qualname__}"}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="event loop micro benchmarks")
    parser.add_argument("name", choices=BENCHMARKS)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--warmup", type=float, default=0.2)
    args = parser.parse_args()
    result = asyncio.run(measure(BENCHMARKS[args.name], args.duration, args.warmup))
    print(json.dumps(result), flush=True)

"""WebSocket load generator: N connections, each sending a message and waiting
for its echo, for D seconds.  Runs on uvloop when available (the client's loop
is the same for every server being measured).

    python bench/ws_client.py --port P [--connections 10] [--size 64] [--duration 3] [--warmup 0.5]

Prints "window-start" when measuring starts and then one JSON line (same keys
as bench/c/echo_client).
"""
import argparse
import asyncio
import json
import statistics
import time

from websockets.asyncio.client import connect


async def ping_pong(uri, message, stats):
    async with connect(uri, compression=None, proxy=None, max_size=None) as websocket:
        while not stats["stop"]:
            started = time.perf_counter()
            await websocket.send(message)
            await websocket.recv()
            stats["total_ops"] += 1
            if stats["measuring"]:
                stats["latencies"].append(time.perf_counter() - started)


async def main(args):
    uri = f"ws://{args.host}:{args.port}/"
    stats = {"stop": False, "measuring": False, "total_ops": 0, "latencies": []}
    message = "x" * args.size
    tasks = [asyncio.create_task(ping_pong(uri, message, stats))
             for _ in range(args.connections)]
    await asyncio.sleep(args.warmup)
    print("window-start", flush=True)
    stats["measuring"] = True
    start = time.perf_counter()
    done, _ = await asyncio.wait(tasks, timeout=args.duration)
    duration = time.perf_counter() - start
    stats["stop"] = True
    latencies = sorted(stats["latencies"])
    errors = sum(1 for task in done if task.exception())

    def percentile_us(p):
        return latencies[int(p * (len(latencies) - 1))] * 1e6 if latencies else 0.0

    print(json.dumps({"ops": len(latencies), "total_ops": stats["total_ops"],
                      "duration": duration, "connections": args.connections,
                      "size": args.size, "p50_us": percentile_us(0.5),
                      "p99_us": percentile_us(0.99), "errors": errors,
                      "mean_us": statistics.fmean(latencies) * 1e6 if latencies else 0.0}),
          flush=True)
    await asyncio.wait(tasks, timeout=5)
    return 1 if errors else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="websockets echo load generator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=0.5)
    args = parser.parse_args()
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    raise SystemExit(runner(main(args)))

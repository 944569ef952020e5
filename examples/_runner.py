"""Shared plumbing of the examples: --host/--port/--loop options, running a
coroutine on the chosen event loop, and stopping on SIGINT/SIGTERM.

The examples themselves are plain asyncio code; only this file knows about
zcloop.  With zcloop installed, the one line that matters is::

    asyncio.run(main(), loop_factory=zcloop.new_event_loop)   # or zcloop.run(main())
"""
import argparse
import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

_T = TypeVar("_T")

LOOPS = ("zcloop", "uvloop", "asyncio")


def make_parser(description: str, default_port: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=default_port,
                        help="port to listen on, 0 picks a free one (default: %(default)s)")
    parser.add_argument("--loop", choices=LOOPS, default="zcloop",
                        help="event loop to run on (default: %(default)s)")
    return parser


def new_event_loop(name: str) -> asyncio.AbstractEventLoop:
    if name == "zcloop":
        import zcloop

        return zcloop.new_event_loop()
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def loop_name() -> str:
    loop = type(asyncio.get_running_loop())
    return f"{loop.__module__}.{loop.__qualname__}"


async def wait_for_shutdown() -> None:
    """Return once SIGINT or SIGTERM arrives (instead of dying mid-request)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def run(main: Coroutine[Any, Any, _T], loop: str) -> _T:
    """asyncio.run(main) on the named loop."""
    with asyncio.Runner(loop_factory=lambda: new_event_loop(loop)) as runner:
        return runner.run(main)

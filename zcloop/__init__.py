"""zcloop: an asyncio event loop on Linux io_uring with a zero-copy write path.

Use it as a drop-in replacement for asyncio's loop::

    zcloop.run(main())
    asyncio.run(main(), loop_factory=zcloop.new_event_loop)   # Python >= 3.12
    zcloop.install()                                         # policy for asyncio.run()
"""
import asyncio as _asyncio
import os as _os
import sys as _sys
import warnings as _warnings

from ._ring import (Loop, IoUringUnavailableError, ZeroCopyWrite, BufferPool, PoolExhausted,
                    StreamTransport, DatagramTransport, features, _probe_unavailable)
from ._version import __version__

__all__ = (
    "Loop", "new_event_loop", "EventLoopPolicy", "install", "run", "features",
    "IoUringUnavailableError", "ZeroCopyWrite", "BufferPool", "PoolExhausted",
    "StreamTransport", "DatagramTransport", "available", "FALLBACK_ENV", "DISABLE_ENV",
)

#: Set to 1 to make every zcloop entry point fall back to asyncio's loop
#: (with one warning) when io_uring cannot be used, instead of raising.
FALLBACK_ENV = "ZCLOOP_FALLBACK"
#: Set to 1 to force asyncio's loop even where io_uring works.
DISABLE_ENV = "ZCLOOP_DISABLE"

_warned = False


def _env_flag(name):
    return _os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def available():
    """Return None when io_uring can be used here, else the reason (a str)."""
    return _probe_unavailable()


def _fallback_loop(reason):
    global _warned
    if not _warned:
        _warned = True
        _warnings.warn(f"zcloop: {reason}; using asyncio's default event loop instead",
                       RuntimeWarning, stacklevel=3)
    return _asyncio.SelectorEventLoop()


def new_event_loop(*, fallback=None):
    """Return a new zcloop event loop.

    When io_uring is unavailable this raises IoUringUnavailableError, unless
    ``fallback`` is true (or ZCLOOP_FALLBACK=1), in which case it warns once
    and returns asyncio's SelectorEventLoop.  ZCLOOP_DISABLE=1 always returns
    asyncio's loop.
    """
    if _env_flag(DISABLE_ENV):
        return _fallback_loop(f"disabled by {DISABLE_ENV}=1")
    if fallback is None:
        fallback = _env_flag(FALLBACK_ENV)
    try:
        return Loop()
    except IoUringUnavailableError as exc:
        if not fallback:
            raise
        return _fallback_loop(str(exc))


def _policy_base():
    """The asyncio policy class zcloop.EventLoopPolicy derives from, or None.

    3.11-3.13: asyncio.DefaultEventLoopPolicy (the Unix policy, whose child
    watcher methods asyncio's own loops still call there).  3.14 deprecates
    that name (a DeprecationWarning on every use, removal planned for 3.16)
    but not its base class, events._BaseDefaultEventLoopPolicy, which is all
    a policy needs there (3.14 has no child watchers).  Where neither exists
    any more there is no policy system to plug into.  vars() rather than
    getattr(): a module __getattr__ that warns must not run at import.
    """
    base = getattr(_asyncio.events, "_BaseDefaultEventLoopPolicy", None)
    if base is None:
        base = vars(_asyncio).get("DefaultEventLoopPolicy")
    return base


_PolicyBase = _policy_base()
_NO_POLICY = (
    "zcloop.EventLoopPolicy needs asyncio's event loop policy system, which "
    "this Python ({}.{}) no longer has; use zcloop.run(main()), "
    "asyncio.run(main(), loop_factory=zcloop.new_event_loop) or "
    "asyncio.Runner(loop_factory=zcloop.new_event_loop)".format(*_sys.version_info[:2]))

if _PolicyBase is not None:
    class EventLoopPolicy(_PolicyBase):
        """Event loop policy whose loops are zcloop loops.

        >>> asyncio.set_event_loop_policy(zcloop.EventLoopPolicy())
        """

        def __init__(self, *, fallback=None):
            super().__init__()
            self._fallback = fallback

        def new_event_loop(self):
            return new_event_loop(fallback=self._fallback)
else:
    __all__ = tuple(name for name in __all__ if name != "EventLoopPolicy")

    def __getattr__(name):
        if name == "EventLoopPolicy":
            raise AttributeError(_NO_POLICY)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def install(*, fallback=None):
    """Make asyncio.run() and asyncio.new_event_loop() create zcloop loops."""
    if _PolicyBase is None:
        raise RuntimeError(_NO_POLICY.replace("zcloop.EventLoopPolicy", "zcloop.install()"))
    with _warnings.catch_warnings():
        # Python 3.14 deprecates the policy system; installing one is still
        # how asyncio.run() without loop_factory picks a loop.
        _warnings.simplefilter("ignore", DeprecationWarning)
        _asyncio.set_event_loop_policy(EventLoopPolicy(fallback=fallback))


def run(main, *, loop_factory=None, debug=None, fallback=None, **run_kwargs):
    """Run coroutine ``main`` on a new zcloop loop, like asyncio.run().

    ``loop_factory`` (as in uvloop.run() and asyncio.run()) replaces
    zcloop.new_event_loop, e.g. to pass Loop(disable_features=...);
    ``fallback`` is new_event_loop's, so it cannot be combined with one.
    Other keyword arguments go to asyncio.Runner.
    """
    if loop_factory is None:
        def loop_factory():
            return new_event_loop(fallback=fallback)
    elif fallback is not None:
        raise TypeError("zcloop.run(): fallback applies to zcloop's own loop factory; "
                        "pass either loop_factory or fallback, not both")

    with _asyncio.Runner(debug=debug, loop_factory=loop_factory, **run_kwargs) as runner:
        return runner.run(main)

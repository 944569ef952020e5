"""Loop factories and a runner for differential tests (asyncio vs zcloop).

Use the ``loop_factory`` fixture from tests/conftest.py in tests; these names
are for code that needs them outside a fixture (subprocess scripts, helpers).
"""
import asyncio

import zcloop

#: id -> callable returning a new event loop.  The ids are the test ids.
LOOP_FACTORIES = {
    "asyncio": asyncio.SelectorEventLoop,
    "zcloop": zcloop.new_event_loop,
}


def run_on(factory, main, *, debug=None):
    """Run ``main`` (a coroutine, or a callable returning one) on a fresh
    loop from ``factory`` and return its result, like asyncio.run() but
    without touching the event loop policy.

    The loop is closed afterwards (after shutdown_asyncgens() and
    shutdown_default_executor()), also when ``main`` raises.
    """
    loop = factory()
    try:
        if debug is not None:
            loop.set_debug(debug)
        coro = main() if callable(main) else main
        return loop.run_until_complete(coro)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

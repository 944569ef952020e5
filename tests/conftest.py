"""Shared fixtures for zcloop's tests.

Differential tests
------------------
Most tests run the same scenario on asyncio's own loop and on zcloop and
expect the same observable behaviour.  Ask for ``loop_factory`` (parametrized,
test ids ``[asyncio]`` / ``[zcloop]``) and either build loops yourself or use
``run``::

    def test_sleep(run):
        async def main():
            await asyncio.sleep(0)
            return 42
        assert run(main) == 42          # runs once per loop factory

    def test_raw(loop_factory):
        loop = loop_factory()
        try:
            ...
        finally:
            loop.close()

``run(main, debug=None)`` creates a loop with the current ``loop_factory``,
runs ``main`` (a coroutine or a zero-argument callable returning one) with
run_until_complete, then shutdown_asyncgens(), shutdown_default_executor()
and close().  Outside fixtures use ``helpers.loops.run_on(factory, main)``.

``loop`` is a ready loop of the current factory, closed after the test.

pytest-asyncio
--------------
The ``pytest_asyncio_loop_factories`` hook below makes every
``@pytest.mark.asyncio`` test run on both loops (ids ``[asyncio]`` and
``[zcloop]``).  Pick one with
``@pytest.mark.asyncio(loop_factories=["zcloop"])``.

Hang guards
-----------
Tests never assert timings.  pytest-timeout (pyproject: 120 s) is the
global hang guard; individual tests use shorter ``@pytest.mark.timeout``.
"""
import asyncio
import functools
import os
import signal
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

# A shell without job control starts background commands (`make test &`)
# with SIGINT ignored, and exec() passes SIG_IGN on: the children that
# tests stop with SIGINT (examples, run_until_complete) would never see it.
# A caught signal is reset to the default on exec(), so catch it here.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import zcloop  # noqa: E402
from helpers.loops import LOOP_FACTORIES, run_on  # noqa: E402,F401


@pytest.fixture(params=list(LOOP_FACTORIES), ids=list(LOOP_FACTORIES))
def loop_factory(request):
    """A callable returning a new event loop: asyncio.SelectorEventLoop or
    zcloop.new_event_loop (test ids "asyncio" / "zcloop")."""
    return LOOP_FACTORIES[request.param]


@pytest.fixture
def run(loop_factory):
    """run(main, debug=None): run a coroutine on a fresh loop of the current
    factory and close it; returns main's result (see module docstring)."""
    return functools.partial(run_on, loop_factory)


@pytest.fixture
def loop(loop_factory):
    """A new, not running loop of the current factory; closed at teardown."""
    lp = loop_factory()
    yield lp
    if not lp.is_closed():
        if lp.is_running():     # pragma: no cover - a broken test
            lp.stop()
        else:
            lp.close()


@pytest.fixture
def is_zcloop(loop_factory):
    """True when the current loop_factory makes zcloop loops."""
    return loop_factory is zcloop.new_event_loop


def pytest_asyncio_loop_factories(config, item):
    """Run @pytest.mark.asyncio tests on asyncio's loop and on zcloop."""
    return dict(LOOP_FACTORIES)


@pytest.fixture(autouse=True)
def _no_running_loop_leak():
    """Each test starts and ends without a running loop in this thread."""
    yield
    assert asyncio._get_running_loop() is None, "a test left a running loop set"

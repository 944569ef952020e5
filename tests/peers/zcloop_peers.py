"""pytest plugin injected (-p zcloop_peers) into the peer suites by scripts/peers/run.py.

It picks the loop under test for uvloop's or anyio's own test suite and writes
one JSON line per finished test, so a run killed by a hang still leaves every
earlier result behind.  Environment (set by the driver):

  ZCLOOP_PEERS_SUITE  uvloop | anyio
  ZCLOOP_PEERS_LOOP   asyncio | uvloop | zcloop
  ZCLOOP_PEERS_OUT    JSON-lines file the results are appended to
  ZCLOOP_PEERS_DONE   optional file of node ids to deselect (already recorded)
"""

import json
import os
import re
import time

import pytest

SUITE = os.environ.get("ZCLOOP_PEERS_SUITE", "")
LOOP = os.environ.get("ZCLOOP_PEERS_LOOP", "asyncio")
OUT = os.environ.get("ZCLOOP_PEERS_OUT")


def _write(record):
    if not OUT:
        return
    with open(OUT, "a") as f:
        f.write(json.dumps(record) + "\n")


# --- uvloop's suite ---------------------------------------------------------
#
# Every test class there comes twice: *UV* (tb.UVTestCase, new_loop() ->
# uvloop) and *AIO* (tb.AIOTestCase, new_loop() -> asyncio).  The asyncio and
# zcloop runs keep the AIO classes; the zcloop run points AIOTestCase's loop
# and policy at zcloop and lets the test code take its asyncio branches
# (is_asyncio_loop() is true, `implementation` stays 'asyncio'), which is the
# treatment uvloop gives asyncio.  The uvloop run keeps the UV classes.
# Classes of neither kind (source-code checks, uvloop's policy, its test base)
# are not about a loop and are left out of every run.

def _setup_uvloop_suite():
    from uvloop import _testbase as tb

    if LOOP == "zcloop":
        import zcloop

        tb.AIOTestCase.new_loop = lambda self: zcloop.new_event_loop()
        if hasattr(zcloop, "EventLoopPolicy"):  # not on Python >= 3.14
            tb.AIOTestCase.new_policy = lambda self: zcloop.EventLoopPolicy()
        tb.BaseTestCase.is_asyncio_loop = lambda self: True
    elif LOOP == "zcloop-uv":
        # Informational: the UV classes (uvloop's own tests) on zcloop.
        import zcloop

        tb.UVTestCase.new_loop = lambda self: zcloop.new_event_loop()
        if hasattr(zcloop, "EventLoopPolicy"):
            tb.UVTestCase.new_policy = lambda self: zcloop.EventLoopPolicy()


# The child processes of test_signals.py build their loop from this string.
_ZCLOOP_CHILD_LOOP = "__import__('zcloop').new_event_loop()"


def _uvloop_keep(item):
    from uvloop import _testbase as tb

    cls = getattr(item, "cls", None)
    if cls is None:
        return False
    if LOOP == "uvloop":
        return issubclass(cls, tb.UVTestCase)
    if LOOP == "zcloop-uv":
        if getattr(cls, "NEW_LOOP", None) == "uvloop.new_event_loop()":
            cls.NEW_LOOP = _ZCLOOP_CHILD_LOOP
        return issubclass(cls, tb.UVTestCase)
    if not issubclass(cls, tb.AIOTestCase):
        return False
    if LOOP == "zcloop" and getattr(cls, "NEW_LOOP", None) == "asyncio.new_event_loop()":
        cls.NEW_LOOP = _ZCLOOP_CHILD_LOOP
    return True


# --- anyio's suite ----------------------------------------------------------
#
# anyio's tests/conftest.py parametrizes the `anyio_backend` fixture over
# asyncio, asyncio+uvloop, (asyncio+eager) and trio, and several modules
# import its `asyncio_params` list for their own parametrize marks.  Both are
# replaced, before pytest reads the conftest's fixtures, by the one asyncio
# backend of this run: stock asyncio, or loop_factory=uvloop/zcloop, with
# anyio's own {"debug": True}.  The id stays "asyncio" so node ids are the
# same in every run.  Tests pinned to trio are left out.

def _anyio_param():
    options = {"debug": True}
    if LOOP == "zcloop":
        import zcloop

        options["loop_factory"] = zcloop.new_event_loop
    elif LOOP == "uvloop":
        import uvloop

        options["loop_factory"] = uvloop.new_event_loop
    return pytest.param(("asyncio", options), id="asyncio")


@pytest.hookimpl(tryfirst=True)
def pytest_plugin_registered(plugin, manager):
    if SUITE != "anyio":
        return
    if not (hasattr(plugin, "asyncio_params") and hasattr(plugin, "anyio_backend")):
        return
    param = _anyio_param()
    plugin.asyncio_params[:] = [param]

    @pytest.fixture(params=[param], name="anyio_backend")
    def anyio_backend(request):
        return request.param

    plugin.anyio_backend = anyio_backend


def _anyio_keep(item):
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return True
    backend = callspec.params.get("anyio_backend")
    if backend is None:
        return True
    name = backend[0] if isinstance(backend, tuple) else backend
    return name == "asyncio"


# --- common -----------------------------------------------------------------

def pytest_configure(config):
    if SUITE == "uvloop":
        _setup_uvloop_suite()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(session, config, items):
    keep = {"uvloop": _uvloop_keep, "anyio": _anyio_keep}.get(SUITE, lambda item: True)
    done = set()
    done_file = os.environ.get("ZCLOOP_PEERS_DONE")
    if done_file and os.path.exists(done_file):
        with open(done_file) as f:
            done = {line.rstrip("\n") for line in f if line.strip()}
    selected, deselected = [], []
    for item in items:
        (selected if keep(item) and item.nodeid not in done else deselected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


def pytest_collection_finish(session):
    _write({"collected": [item.nodeid for item in session.items]})


_reports = {}


def pytest_runtest_logstart(nodeid, location):
    _reports[nodeid] = {"t0": time.monotonic()}
    _write({"start": nodeid})


def pytest_runtest_logreport(report):
    state = _reports.setdefault(report.nodeid, {"t0": time.monotonic()})
    state[report.when] = report


def pytest_runtest_logfinish(nodeid, location):
    state = _reports.pop(nodeid, {})
    outcome, message = _outcome(state)
    _write({
        "test": nodeid,
        "outcome": outcome,
        "duration": round(time.monotonic() - state.get("t0", time.monotonic()), 3),
        "message": message,
    })


def _message(report):
    text = report.longreprtext if hasattr(report, "longreprtext") else str(report.longrepr)
    lines = [line for line in text.splitlines() if line.strip()]
    # The first "E   SomeError: ..." line, else the last "E" line, else (an
    # exception group's tree) the first "| SomeError: ..." line.
    e_lines = [line.strip() for line in lines if line.lstrip().startswith("E ")]
    for line in e_lines:
        if re.match(r"E\s+[\w.]+(Error|Exception|Warning|Exit|Interrupt)\b", line):
            return line[:300]
    if e_lines:
        return e_lines[-1][:300]
    for line in lines:
        if re.match(r"\s*\|\s+[\w.]+(Error|Exception|Warning)\b", line):
            return line.strip(" |")[:300]
    return (lines[-1].strip() if lines else "")[:300]


def _outcome(state):
    setup, call, teardown = state.get("setup"), state.get("call"), state.get("teardown")
    for report in (setup, call):
        if report is None:
            continue
        if report.skipped:
            if hasattr(report, "wasxfail"):
                return "xfailed", report.wasxfail
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            return "skipped", str(reason)[:300]
        if report.failed:
            message = _message(report)
            if "from pytest-timeout" in (report.longreprtext or ""):
                return "timeout", message
            return ("error" if report is setup else "failed"), message
    if teardown is not None and teardown.failed:
        return "error", "teardown: " + _message(teardown)
    if call is not None and call.passed:
        return ("xpassed" if hasattr(call, "wasxfail") else "passed"), ""
    return "error", "no result"

"""Degraded kernels and sandboxes: every optional ring feature switched off,
one at a time and all together, through ``zcloop.Loop(disable_features=...)``
and through ``ZCLOOP_DISABLE_FEATURES`` in a fresh process.  Each runs the
same scenario (echo, write_zc, sendfile, subprocess) and must produce the
same bytes.  (A seccomp-blocked child is tests/test_fallback.py's.)
"""
import asyncio
import json
import os

import pytest

import zcloop
from helpers.reliability import (
    DEGRADED_SCENARIO_TIMEOUT, assert_clean_exit, degraded_scenario, record, run_python)

FEATURES = sorted([
    "single_issuer", "defer_taskrun", "coop_taskrun", "submit_all", "send_zc",
    "sendmsg_zc", "report_usage", "recv_multishot", "buf_ring", "accept_multishot",
    "registered_ring_fd",
])
ALL = ",".join(FEATURES)


def check_features(disabled, info, report):
    """What a disabled feature must visibly change."""
    flags = set(info["setup_flags"])
    assert set(disabled) <= set(info["disabled"])
    if "single_issuer" in disabled:
        assert "SINGLE_ISSUER" not in flags
        assert "DEFER_TASKRUN" not in flags       # needs SINGLE_ISSUER
    if "defer_taskrun" in disabled:
        assert "DEFER_TASKRUN" not in flags
    if "coop_taskrun" in disabled:
        assert "COOP_TASKRUN" not in flags
    if "submit_all" in disabled:
        assert "SUBMIT_ALL" not in flags
    if "sendmsg_zc" in disabled:
        assert info["sendmsg_zc"] is False
    zc = report["zc_stats"]
    if "send_zc" in disabled:
        assert info["send_zc"] is False
        assert zc["zc_capable"] is False and zc["zc_bytes"] == 0
        # Went by copy: released says so.
        assert report["write_zc_released"] == [False] * 4
    else:
        assert zc["zc_capable"] is True and zc["zc_bytes"] > 0
        if "report_usage" in disabled:
            # The kernel cannot tell: None for the zero-copy ones.
            assert None in report["write_zc_released"]
        else:
            # Loopback: always copied.
            assert report["write_zc_released"] == [False] * 4


def test_features_known():
    info = zcloop.features()
    assert info["disabled"] == []
    with pytest.raises(ValueError, match="unknown zcloop feature"):
        zcloop.Loop(disable_features={"no_such_feature"})


@pytest.mark.timeout(60)
@pytest.mark.parametrize("disabled", FEATURES + [ALL])
def test_disable_features_arg(disabled, tmp_path):
    names = set(disabled.split(","))
    loop = zcloop.Loop(disable_features=names)
    try:
        info = loop.features()
        report = loop.run_until_complete(
            asyncio.wait_for(degraded_scenario(str(tmp_path)), DEGRADED_SCENARIO_TIMEOUT))
        check_features(names, info, report)
        loop.run_until_complete(loop.shutdown_default_executor())
    finally:
        loop.close()
    if disabled == ALL:
        record("degraded_all_features_off_in_process", setup_flags=info["setup_flags"],
               echo_bytes=report["echo_bytes"], sendfile_bytes=report["sendfile_bytes"],
               subprocess_bytes=report["subprocess_bytes"])


CHILD = """
import asyncio, json, sys, tempfile
import zcloop
from helpers.reliability import degraded_scenario, DEGRADED_SCENARIO_TIMEOUT

async def main():
    loop = asyncio.get_running_loop()
    info = loop.features()
    with tempfile.TemporaryDirectory() as tmp:
        report = await asyncio.wait_for(degraded_scenario(tmp), DEGRADED_SCENARIO_TIMEOUT)
    return info, report

info, report = zcloop.run(main())
print("RESULT " + json.dumps({"info": info, "report": report}))
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("disabled", FEATURES + [ALL])
def test_disable_features_env(disabled):
    proc = run_python(CHILD, env={"ZCLOOP_DISABLE_FEATURES": disabled}, timeout=60)
    assert_clean_exit(proc)
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    result = json.loads(line[len("RESULT "):])
    check_features(set(disabled.split(",")), result["info"], result["report"])
    assert "Traceback" not in proc.stderr, proc.stderr


def test_env_unknown_feature_is_an_error():
    proc = run_python("import zcloop; zcloop.Loop()",
                      env={"ZCLOOP_DISABLE_FEATURES": "send_zc,bogus"})
    assert proc.returncode == 1
    assert "unknown zcloop feature(s): bogus" in proc.stderr

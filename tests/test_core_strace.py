"""The loop waits in io_uring_enter only: no epoll/select/poll wait at all."""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRACE = shutil.which("strace") or ("/usr/bin/strace" if os.path.exists("/usr/bin/strace") else None)

pytestmark = pytest.mark.skipif(STRACE is None, reason="strace is not installed")

WAIT_SYSCALLS = {"epoll_wait", "epoll_pwait", "epoll_pwait2", "select", "pselect6",
                 "poll", "ppoll", "_newselect"}

SCRIPT = r"""
import asyncio, threading, zcloop

async def main():
    loop = asyncio.get_running_loop()
    assert isinstance(loop, zcloop.Loop)
    fired = []
    for i in range(20):
        loop.call_later(0.001 * i, fired.append, i)
    for _ in range(20):
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.05)
    fut = loop.create_future()
    def worker():
        for i in range(100):
            loop.call_soon_threadsafe(fired.append, -i)
        loop.call_soon_threadsafe(fut.set_result, "done")
    t = threading.Thread(target=worker)
    t.start()
    await fut
    t.join()
    await asyncio.sleep(0.01)
    return len(fired)

print(zcloop.run(main()))
"""


def _strace_counts(tmp_path, script):
    out = tmp_path / "strace.txt"
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([STRACE, "-f", "-c", "-o", str(out), sys.executable, "-c", script],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    calls = {}
    for line in out.read_text().splitlines():
        parts = line.split()
        # "% time  seconds  usecs/call  calls  errors  syscall"
        if len(parts) >= 5 and parts[0][0].isdigit() and not line.startswith("100.00"):
            try:
                calls[parts[-1]] = int(parts[3])
            except ValueError:
                continue
    return proc.stdout, calls


@pytest.mark.timeout(120)
def test_zcloop_waits_only_in_io_uring_enter(tmp_path):
    stdout, calls = _strace_counts(tmp_path, SCRIPT)
    assert stdout.split() == ["120"]
    assert calls.get("io_uring_enter", 0) > 0, calls
    assert "io_uring_setup" in calls, calls
    used = WAIT_SYSCALLS & set(calls)
    assert not used, f"zcloop used {used}: {calls}"


@pytest.mark.timeout(120)
def test_strace_parser_sees_asyncio_epoll(tmp_path):
    """Control: the same parser finds epoll_wait for asyncio's loop."""
    script = SCRIPT.replace("print(zcloop.run(main()))", "print(asyncio.run(main()))").replace(
        "    assert isinstance(loop, zcloop.Loop)\n", "")
    stdout, calls = _strace_counts(tmp_path, script)
    assert stdout.split() == ["120"]
    assert WAIT_SYSCALLS & set(calls), calls
    assert "io_uring_enter" not in calls


SMALL = r"""
import asyncio, zcloop
async def main():
    await asyncio.sleep(0.001)
    return "ok"
print(zcloop.run(main()))
"""


def _strace_calls(tmp_path, script, env_extra):
    out = tmp_path / "trace.txt"
    env = dict(os.environ, PYTHONPATH=ROOT, **env_extra)
    proc = subprocess.run([STRACE, "-f", "-o", str(out), "-e",
                           "trace=io_uring_setup,io_uring_enter,io_uring_register",
                           sys.executable, "-c", script],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ok"]
    return out.read_text()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("disabled", [False, True], ids=["default", "disabled"])
def test_registered_ring_fd_switch(tmp_path, disabled):
    """The ring fd is registered (IORING_REGISTER_RING_FDS, then
    io_uring_enter with IORING_ENTER_REGISTERED_RING) unless
    registered_ring_fd is disabled."""
    env = {"ZCLOOP_DISABLE_FEATURES": "registered_ring_fd"} if disabled else {}
    trace = _strace_calls(tmp_path, SMALL, env)
    enters = [line for line in trace.splitlines() if "io_uring_enter(" in line]
    assert enters
    registered = [line for line in enters if "IORING_ENTER_REGISTERED_RING" in line]
    if disabled:
        assert "IORING_REGISTER_RING_FDS" not in trace
        assert registered == []
    else:
        assert "IORING_REGISTER_RING_FDS" in trace
        assert registered == enters

"""Helpers for the reliability suite (test_stress, test_faults, test_badinput,
test_memory, test_degraded, test_model).

* ``LONG`` / ``FORM``: ``ZCLOOP_STRESS=long`` selects the long form
  (``make stress``); the short form is what CI runs.
* ``scale(ci, long)`` picks a count for the current form.
* ``record(name, **figures)`` prints the figures (visible with ``pytest -s``)
  and merges them into ``bench/out/stress-<form>.json``.
* ``fd_count()``, ``rss_kib()``, ``raise_nofile()``: process resources.
* ``run_python(code, ...)``: run a snippet in a fresh interpreter that
  imports the same zcloop as this process; returns CompletedProcess.
"""
import asyncio
import gc
import json
import os
import resource
import subprocess
import sys
import textwrap
import time

import zcloop

FORM = "long" if os.environ.get("ZCLOOP_STRESS", "").strip().lower() == "long" else "ci"
LONG = FORM == "long"

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO_DIR = os.path.dirname(TESTS_DIR)
OUT_DIR = os.path.join(REPO_DIR, "bench", "out")
#: Directory holding the zcloop package this process imported.
ZCLOOP_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(zcloop.__file__)))


def scale(ci, long):
    return long if LONG else ci


def fd_count():
    return len(os.listdir("/proc/self/fd"))


def fd_set():
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return out


def describe_fds(fds):
    """{fd: "socket:[..] ('127.0.0.1', 4242) -> peer"} for assertion messages."""
    import socket
    out = {}
    for fd, target in fds.items():
        desc = target
        if target.startswith("socket:"):
            try:
                s = socket.socket(fileno=os.dup(fd))
                try:
                    desc += f" {s.family.name} {s.type.name} {s.getsockname()!r}"
                    try:
                        desc += f" -> {s.getpeername()!r}"
                    except OSError:
                        pass
                finally:
                    s.close()
            except OSError:
                pass
        out[fd] = desc
    return out


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def raise_nofile(want=None):
    """Raise RLIMIT_NOFILE's soft limit (to the hard limit by default);
    return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if want is None else min(want, hard)
    if hard == resource.RLIM_INFINITY and want is None:
        target = 1 << 20
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def record(name, **figures):
    """Print ``figures`` and merge them into bench/out/stress-<form>.json."""
    figures = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in figures.items()}
    print(f"\n[{FORM}] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, f"stress-{FORM}.json")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        data = {}
    data.setdefault("meta", {}).update({
        "form": FORM,
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "zcloop": ZCLOOP_ROOT,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    data.setdefault("results", {})[name] = figures
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
    return figures


def child_env(extra=None):
    env = dict(os.environ)
    parts = [ZCLOOP_ROOT, TESTS_DIR]
    if env.get("PYTHONPATH"):
        parts.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env.pop("ZCLOOP_DISABLE_FEATURES", None)
    env.pop("ZCLOOP_DISABLE", None)
    env.pop("ZCLOOP_FALLBACK", None)
    env.pop("ZCLOOP_LOOP", None)
    if extra:
        env.update(extra)
    return env


def run_python(code, *, timeout=60, env=None, argv=(), prefix=(), **kwargs):
    """Run ``code`` (dedented) with this interpreter in a new process.
    ``prefix`` is put before the interpreter (e.g. setpriv ...)."""
    cmd = list(prefix) + [sys.executable, "-c", textwrap.dedent(code)] + list(argv)
    return subprocess.run(cmd, env=child_env(env), capture_output=True, text=True,
                          timeout=timeout, cwd=TESTS_DIR, **kwargs)


def assert_clean_exit(proc, expect=0):
    """A child exited with ``expect`` (never killed by a signal such as
    SIGSEGV/SIGABRT)."""
    detail = f"rc={proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode >= 0 or proc.returncode == expect, "killed by signal: " + detail
    assert proc.returncode == expect, detail


def collect():
    for _ in range(3):
        if not gc.collect():
            break


class ErrorLog:
    """An exception handler that records what the loop reports."""

    def __init__(self):
        self.contexts = []

    def __call__(self, loop, context):
        self.contexts.append(context)

    def messages(self):
        return [c.get("message") for c in self.contexts]


# ----------------------------------------------------------------------
# Scenario shared by test_degraded (in process and in subprocesses): echo,
# write_zc, sendfile and a subprocess, each checked byte for byte.

DEGRADED_SCENARIO_TIMEOUT = 30


async def degraded_scenario(tmpdir):
    """Run echo + write_zc + sendfile + subprocess on the running loop;
    return a dict of what was observed (raises AssertionError on a
    mismatch)."""
    import hashlib
    import random
    loop = asyncio.get_running_loop()
    rnd = random.Random(1234)
    report = {}

    # 1. echo server, several messages of random sizes, both directions.
    async def echo(reader, writer):
        try:
            while True:
                data = await reader.read(1 << 16)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = bytearray()
    for size in [1, 100, 4096, 70000, 300000, 1 << 20] + [rnd.randrange(1, 50000) for _ in range(20)]:
        chunk = rnd.randbytes(size)
        writer.write(chunk)
        sent += chunk
    await writer.drain()
    got = await reader.readexactly(len(sent))
    assert got == sent, "echo mismatch"
    report["echo_bytes"] = len(sent)

    # 2. write_zc of 1 MiB buffers over a raw transport to a reading peer.
    received = bytearray()
    eof = loop.create_future()

    class Sink(asyncio.Protocol):
        def data_received(self, data):
            received.extend(data)

        def eof_received(self):
            eof.set_result(None)

    sink_server = await loop.create_server(Sink, "127.0.0.1", 0)
    sport = sink_server.sockets[0].getsockname()[1]
    tr, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", sport)
    bufs = [bytearray(rnd.randbytes(1 << 20)) for _ in range(3)]
    mv = memoryview(bytearray(rnd.randbytes(100000)))
    expect = bytearray()
    handles = []
    for b in bufs:
        handles.append(tr.write_zc(b))
        expect += b
        tr.write(b"small")
        expect += b"small"
    handles.append(tr.write_zc(mv))
    expect += mv
    released = await asyncio.wait_for(asyncio.gather(*(h.released for h in handles)), 20)
    for h in handles:
        assert h.sent.done() and h.sent.result() == h.nbytes
    assert tr.get_pinned_size() == 0
    tr.write_eof()
    await asyncio.wait_for(eof, 20)
    assert received == expect, "write_zc stream mismatch"
    report["write_zc_released"] = released
    report["zc_stats"] = tr.get_extra_info("zcloop")
    tr.close()
    sink_server.close()

    # 3. sendfile through a transport, checked by hash.
    path = os.path.join(tmpdir, "sendfile.bin")
    payload = rnd.randbytes(3 * 1024 * 1024 + 17)
    with open(path, "wb") as f:
        f.write(payload)
    reader2, writer2 = await asyncio.open_connection("127.0.0.1", port)
    with open(path, "rb") as f:
        n = await loop.sendfile(writer2.transport, f, 5, len(payload) - 10)
    assert n == len(payload) - 10
    got = await reader2.readexactly(n)
    assert hashlib.sha256(got).digest() == hashlib.sha256(payload[5:-5]).digest()
    writer2.close()
    report["sendfile_bytes"] = n

    # 4. a subprocess with stdin/stdout pipes.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; d = sys.stdin.buffer.read(); sys.stdout.buffer.write(d[::-1])",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    data = rnd.randbytes(200000)
    out, _ = await asyncio.wait_for(proc.communicate(data), 20)
    assert out == data[::-1]
    assert proc.returncode == 0
    report["subprocess_bytes"] = len(out)

    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return report

"""Process mechanics of the benchmark: start a server on a given loop (pinned to
the server CPU), run a load generator against it (pinned to the client CPU),
and measure the server's CPU time over exactly the client's measured window.

Every load generator (bench/c/echo_client, wrk with wrk_json.lua,
bench/ws_client.py, bench/micro.py) follows one output convention: optionally a
line "window-start" when the measured window begins, then one JSON line with
at least "ops" and "duration" when it ends.  The server's CPU time is sampled
when each of those lines arrives (or at client start/exit when there is no
"window-start").
"""
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BIN = BENCH / "bin"
INJECT_DIR = ROOT / "zcloop" / "_inject"

#: The C io_uring echo server: a contender on echo rows, not an asyncio loop.
REFERENCE = "c-io_uring"
#: How the READY line of a server names each contender's running loop.
LOOP_PREFIX = {"asyncio": "asyncio.", "uvloop": "uvloop.", "zcloop": "zcloop.",
               REFERENCE: REFERENCE}

_allowed_cpus = sorted(os.sched_getaffinity(0))
#: Servers (and micro benchmarks) run here, load generators and this harness there.
SERVER_CPU, CLIENT_CPU = _allowed_cpus[:2] if len(_allowed_cpus) >= 2 else (None, None)


class BenchError(Exception):
    """A failure to record in a table cell (the run goes on)."""


def loop_env(loop):
    """Environment that starts a Python child on `loop`: the mechanism of
    ``python -m zcloop compare`` (zcloop/_inject/sitecustomize.py)."""
    env = dict(os.environ)
    env["ZCLOOP_LOOP"] = loop
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(INJECT_DIR), env.get("PYTHONPATH")]))
    return env


def pin_to(cpu):
    """preexec_fn pinning the child (and the threads it will create) to one CPU."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already gone


def tail(file, limit=600):
    file.seek(0)
    return file.read()[-limit:].decode(errors="replace").strip()


class LineReader:
    """Reads lines from a pipe with a timeout (select on the raw fd, own buffer)."""

    def __init__(self, pipe):
        self.fd = pipe.fileno()
        self.buffer = b""

    def readline(self, timeout):
        """Return the next line (str, no newline); None at EOF; BenchError on timeout."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                raise BenchError(f"no output within {timeout:.0f}s")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode(errors="replace").strip()


def task_times(pid):
    """(CPU seconds, seconds runnable but waiting for a CPU) summed over the
    threads of `pid`, from schedstat (ns resolution; the wait is how long
    other processes held the CPU it wanted).  Falls back to /proc/PID/stat
    utime+stime (clock ticks) with an unknown wait.  None once pid is gone."""
    try:
        cpu = wait = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                run_ns, wait_ns = f.read().split()[:2]
            cpu, wait = cpu + int(run_ns), wait + int(wait_ns)
        return cpu / 1e9, wait / 1e9
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), None


class Server:
    """A server process of one kind on one contender (loop or C reference)."""

    def __init__(self, kind, contender, start_timeout=30):
        self.kind, self.contender = kind, contender
        if contender == REFERENCE:
            command, env = [str(BIN / "uring_echo_server"), "-p", "0"], None
        else:
            command = [sys.executable, str(BENCH / "servers.py"), kind, "--port", "0"]
            env = loop_env(contender)
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                     stderr=self.stderr, preexec_fn=pin_to(SERVER_CPU),
                                     start_new_session=True)
        try:
            line = LineReader(self.proc.stdout).readline(start_timeout)
        except BenchError as exc:
            self.stop()
            raise BenchError(f"server did not start: {exc}") from None
        match = re.fullmatch(r"READY port=(\d+) loop=(\S+)", line or "")
        if not match:
            self.check_alive()
            self.stop()
            raise BenchError(f"server printed {line!r} instead of READY")
        self.port, running_loop = int(match[1]), match[2]
        if not running_loop.startswith(LOOP_PREFIX[contender]):
            self.stop()
            raise BenchError(f"server runs on {running_loop}, not {contender}")

    def check_alive(self):
        code = self.proc.poll()
        if code is not None:
            output = tail(self.stderr)
            raise BenchError(f"server exited ({code})" + (f": {output}" if output else ""))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                kill_group(self.proc.pid)
                self.proc.wait()
        self.proc.stdout.close()


def run_load(command, *, server=None, env=None, cpu=CLIENT_CPU, timeout=60):
    """Run one load generator to completion and return its JSON result plus,
    over the measured window: "window" (wall seconds), "server_cpu" (seconds;
    the program's own "cpu" when there is no server), "client_busy" (client
    CPU / window) and "contention" (share of the window the server, or the
    program, spent runnable but waiting for its CPU).  Raises BenchError
    when there is no usable result."""
    if server:
        server.check_alive()
    stderr = tempfile.TemporaryFile()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr,
                            preexec_fn=pin_to(cpu), start_new_session=True)
    measured = server.proc.pid if server else proc.pid

    def snapshot():
        return time.perf_counter(), task_times(measured), task_times(proc.pid)

    reader, start, end, result = LineReader(proc.stdout), snapshot(), None, None
    try:
        while (line := reader.readline(timeout)) is not None:
            if line == "window-start":
                start = snapshot()
            elif line.startswith("{"):
                end = snapshot()
                result = json.loads(line)
    except BenchError as exc:
        kill_group(proc.pid)
        if server:  # it stopped answering: take it out of the rest of the run
            server.stop()
        raise BenchError(f"client timed out ({exc})") from None
    except ValueError as exc:
        kill_group(proc.pid)
        raise BenchError(f"client printed bad JSON: {exc}") from None
    finally:
        proc.wait()
        proc.stdout.close()
    try:
        if result is None or proc.returncode != 0:
            if server:
                server.check_alive()
            raise BenchError(f"client exit {proc.returncode}: {tail(stderr) or 'no result'}")
    finally:
        stderr.close()

    window = end[0] - start[0]
    measured_cpu, measured_wait = delta(start[1], end[1])
    client_cpu, _ = delta(start[2], end[2])
    result.update(
        window=window,
        server_cpu=measured_cpu if server else result.get("cpu"),
        # Share of the window the load generator was on its CPU (micro: no client).
        client_busy=client_cpu / window if server and client_cpu is not None else None,
        contention=measured_wait / window if measured_wait is not None else None)
    return result


def delta(before, after):
    """(cpu, wait) difference of two task_times() readings; None parts if unknown."""
    if before is None or after is None:
        return None, None
    wait = None if before[1] is None or after[1] is None else after[1] - before[1]
    return after[0] - before[0], wait


class SyscallCounter:
    """Counts syscalls entered on one CPU with `perf stat -C` (attaching perf
    to a PID does not count with every perf/kernel pair, e.g. perf 6.1 on
    kernel 6.18).  The server is alone on its CPU during a sample, so the count
    is the server's, plus a little background noise."""

    def __init__(self, cpu=SERVER_CPU):
        self.cpu = cpu
        self.count = None

    @staticmethod
    def unavailable_reason():
        if SERVER_CPU is None:
            return "needs 2 CPUs"
        if not shutil.which("perf"):
            return "perf not installed"
        probe = subprocess.run(["perf", "stat", "-C", str(SERVER_CPU), "-e",
                                "raw_syscalls:sys_enter", "-x,", "--", "true"],
                               capture_output=True, text=True)
        if probe.returncode != 0 or "not supported" in probe.stderr:
            return f"perf stat fails: {probe.stderr.strip()[-200:]}"
        return None

    def __enter__(self):
        self.output = tempfile.NamedTemporaryFile(mode="r", suffix=".perf")
        self.proc = subprocess.Popen(
            ["perf", "stat", "-C", str(self.cpu), "-e", "raw_syscalls:sys_enter", "-x,",
             "-o", self.output.name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)  # perf needs a moment before it counts
        return self

    def __exit__(self, *exc_info):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(10)
        for line in self.output.read().splitlines():
            fields = line.split(",")
            if len(fields) > 2 and fields[2] == "raw_syscalls:sys_enter" and fields[0].isdigit():
                self.count = int(fields[0])
        self.output.close()


def build_c_helpers():
    """Build bench/bin/* with make (a no-op when up to date); return an error or None."""
    if not shutil.which("make") or not shutil.which("gcc"):
        return "make/gcc not installed"
    done = subprocess.run(["make", "-s", "-C", str(BENCH / "c")], capture_output=True,
                          text=True)
    return None if done.returncode == 0 else f"make failed: {done.stderr.strip()[-300:]}"


def command_output(command):
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout or done.stderr).strip() or None


def machine_info():
    cpu_model = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    return {"uname": " ".join(os.uname()), "cpu_model": cpu_model, "nproc": os.cpu_count(),
            "server_cpu": SERVER_CPU, "client_cpu": CLIENT_CPU}


def versions():
    from importlib import metadata

    found = {"python": sys.version.split()[0]}
    for package in ("uvloop", "aiohttp", "websockets", "zcloop"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    wrk = command_output(["wrk", "-v"])
    found["wrk"] = wrk.split(" Copyright")[0].removeprefix("wrk ") if wrk else None
    found["zcloop_git"] = command_output(["git", "-C", str(ROOT), "describe", "--always",
                                          "--dirty"])
    return found

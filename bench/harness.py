"""Process mechanics of the benchmark: start a server on a given loop (pinned to
the server CPU), run a load generator against it (pinned to the client CPU),
and measure the server's CPU time over exactly the client's measured window.

Every load generator (bench/c/echo_client, wrk with wrk_json.lua,
bench/ws_client.py, bench/micro.py) follows one output convention: optionally a
line "window-start" when the measured window begins, then one JSON line with
at least "ops" and "duration" when it ends.  The server's CPU time is sampled
when each of those lines arrives (or at client start/exit when there is no
"window-start").  bench/c/rotate_client, the client of the one-way, send and
zero-copy rows, drives every contender's server at once and reads their CPU
time itself (run_rotation).

It also owns the two pieces of set-up some rows need: TLS certificates made at
run time with trustme (tls_material), and a private network namespace joined
to this one by a veth pair (NetNamespace), for a peer zcloop does not treat as
local.
"""
import atexit
import ctypes
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
BIN = BENCH / "bin"
INJECT_DIR = ROOT / "zcloop" / "_inject"

#: The C io_uring server (bench/c/uring_echo_server): a contender on the echo,
#: one-way and send rows, not an asyncio loop.
REFERENCE = "c-io_uring"
#: Its mode (-m) for each server kind of bench/servers.py it has a counterpart
#: of (plain TCP only: it has no TLS).
REFERENCE_MODES = {"echo-protocol": "echo", "echo-streams": "echo",
                   "sink-protocol": "sink", "sink-streams": "sink",
                   "source-protocol": "source", "source-streams": "source"}
#: How the READY line of a server names each contender's running loop.
LOOP_PREFIX = {"asyncio": "asyncio.", "uvloop": "uvloop.", "zcloop": "zcloop.",
               REFERENCE: REFERENCE}

_allowed_cpus = sorted(os.sched_getaffinity(0))
#: Servers (and micro benchmarks) run here, load generators and this harness there.
SERVER_CPU, CLIENT_CPU = _allowed_cpus[:2] if len(_allowed_cpus) >= 2 else (None, None)


class BenchError(Exception):
    """A failure to record in a table cell (the run goes on)."""


def loop_env(loop, root=ROOT):
    """Environment that starts a Python child on `loop`: the mechanism of
    ``python -m zcloop compare`` (zcloop/_inject/sitecustomize.py).  The
    checkout `root` (by default the one this bench/ belongs to) comes next
    on PYTHONPATH, so the servers import *its* zcloop (built in place), not
    another installed copy (versions() records which one they got)."""
    env = dict(os.environ)
    env["ZCLOOP_LOOP"] = loop
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(INJECT_DIR), str(root), env.get("PYTHONPATH")]))
    return env


def pin_to(cpu):
    """preexec_fn pinning the child (and the threads it will create) to one
    CPU, and killing it if the harness dies (a server must not outlive a
    harness killed with SIGKILL)."""
    def setup():
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    return setup


PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


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


TCP_RMEM = Path("/proc/sys/net/ipv4/tcp_rmem")
#: While a run has changed tcp_rmem, its original value is kept here, so that
#: a run killed before it could restore it is undone by the next one.
TCP_RMEM_SAVED = Path(tempfile.gettempdir()) / "zcbench-tcp_rmem.orig"


class ReceiveBufferAtMax:
    """For the rows with a stop-and-wait stream of large messages (one-way):
    every TCP socket made meanwhile starts with the largest receive buffer
    autotuning may reach (net.ipv4.tcp_rmem's default set to its maximum;
    restored on exit).  Otherwise each connection's window grows from 128 KiB
    in its own way and lands in one of two throughputs for its whole life
    (docs/benchmarks.md, "The two modes of large transfers").  Needs root;
    `self.value` is the setting used, None if it could not be changed."""

    def __init__(self):
        self.value = self.original = None

    def __enter__(self):
        restore_tcp_rmem()
        try:
            self.original = TCP_RMEM.read_text().split()
            low, _, high = self.original
            TCP_RMEM_SAVED.write_text(" ".join(self.original))
            TCP_RMEM.write_text(f"{low} {high} {high}")
            self.value = f"{low} {high} {high}"
        except (OSError, ValueError):
            self.original = None
            TCP_RMEM_SAVED.unlink(missing_ok=True)
        return self

    def __exit__(self, *exc):
        if self.original:
            restore_tcp_rmem()


def restore_tcp_rmem():
    """Put back a tcp_rmem that a run changed and did not restore."""
    try:
        TCP_RMEM.write_text(TCP_RMEM_SAVED.read_text())
        TCP_RMEM_SAVED.unlink()
    except FileNotFoundError:
        pass


#: A sample is taken on a quiet machine: at most this share of one CPU used
#: by anything (the idle servers and this harness included) just before it.
QUIET_BUSY = 0.10
#: ... and re-taken when another process held the load generator's CPU for
#: more than this share of the window (its "client_wait").
CLIENT_WAIT_MAX = 0.10


def busy_share(interval=0.25):
    """CPU time used by everything on the machine over `interval` seconds,
    as a share of one CPU (/proc/stat: all but idle and iowait)."""
    def read():
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]
    total0, idle0 = read()
    time.sleep(interval)
    total1, idle1 = read()
    busy_ticks = (total1 - total0) - (idle1 - idle0)
    return busy_ticks / os.sysconf("SC_CLK_TCK") / interval


def wait_for_quiet(limit):
    """Wait (up to `limit` seconds) until the machine is quiet (busy_share()
    below QUIET_BUSY); return the seconds waited, or None if it never was.
    Another process on the load generator's or the server's CPU halves a
    streaming row (docs/benchmarks.md, "The two modes of large transfers"):
    a build or a test run elsewhere on the machine is waited out."""
    started = time.monotonic()
    while busy_share() > QUIET_BUSY:
        if time.monotonic() - started > limit:
            return None
    return time.monotonic() - started


#: Times a sample is taken again when the load generator was not alone on its CPU.
RETAKES = 2


def take_quietly(take, quiet_wait):
    """Call `take()` (one sample: a dict) on a quiet machine: wait up to
    `quiet_wait` seconds for it first, and take it again (RETAKES times at
    most) when another process held the load generator's CPU during the
    window.  The sample records the wait (None: never quiet) and the retakes."""
    for attempt in range(1 + RETAKES):
        waited = wait_for_quiet(quiet_wait)
        sample = take()
        sample["quiet_wait_s"] = None if waited is None else round(waited, 1)
        sample["retakes"] = attempt
        if (sample.get("client_wait") or 0) <= CLIENT_WAIT_MAX:
            break
    return sample


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
    """A server process of one kind on one contender (loop or C reference),
    listening on `host`, serving TLS with `tls` (a TLSMaterial) if given;
    a loop's server imports zcloop from the checkout `root`; `cc` sets the
    TCP congestion control of its listening socket (connections inherit it)."""

    def __init__(self, kind, contender, *, host="127.0.0.1", tls=None, start_timeout=30,
                 root=ROOT, cc=None):
        self.kind, self.contender = kind, contender
        if contender == REFERENCE:
            if kind not in REFERENCE_MODES or tls:
                raise BenchError(f"the C reference server has no counterpart of "
                                 f"{kind}{' over TLS' if tls else ''}")
            command = [str(BIN / "uring_echo_server"), "-m", REFERENCE_MODES[kind], "-h", host,
                       "-p", "0", *(["-c", cc] if cc else [])]
            env = None
        else:
            command = [sys.executable, str(BENCH / "servers.py"), kind, "--host", host,
                       "--port", "0"]
            if tls:
                command += ["--certfile", str(tls.server_pem)]
            if cc:
                command += ["--cc", cc]
            env = loop_env(contender, root)
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                     stderr=self.stderr, preexec_fn=pin_to(SERVER_CPU),
                                     start_new_session=True)
        self.reader = LineReader(self.proc.stdout)
        try:
            line = self.reader.readline(start_timeout)
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

    def discard_output(self):
        """Drop lines the server printed so far (a late STATS of an earlier sample)."""
        while select.select([self.reader.fd], [], [], 0)[0]:
            chunk = os.read(self.reader.fd, 65536)
            if not chunk:
                break
        self.reader.buffer = b""

    def read_stats(self, timeout=5):
        """The next ``STATS {json}`` line (the source-protocol server prints one per
        closed connection); None if none comes within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                line = self.reader.readline(remaining)
                if line is None:
                    return None
                if line.startswith("STATS "):
                    return json.loads(line[len("STATS "):])
        except (BenchError, ValueError):
            pass
        return None

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
    CPU / window), "contention" (share of the window the server, or the
    program, spent runnable but waiting for its CPU) and "client_wait" (the
    same for the load generator: another process on its CPU).  Raises
    BenchError when there is no usable result."""
    if server:
        server.check_alive()
    stderr = tempfile.TemporaryFile()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=stderr,
                            preexec_fn=pin_to(cpu), start_new_session=True)
    measured = server.proc.pid if server else proc.pid

    def snapshot():
        return (time.perf_counter(), task_times(measured), process_cpu(proc.pid),
                task_times(proc.pid) if server else None)

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
    _, client_wait = delta(start[3], end[3])
    result.update(
        window=window,
        server_cpu=measured_cpu if server else result.get("cpu"),
        # Share of the window the load generator was on its CPU (micro: no client).
        client_busy=client_cpu / window if server and client_cpu is not None else None,
        contention=measured_wait / window if measured_wait is not None else None,
        client_wait=client_wait / window if client_wait is not None else None)
    return result


#: Interleaved slices (bench/c/rotate_client): their length, and how many
#: each server gets per row in a full run.
SLICE_MS = 50
SLICES = 300


def run_rotation(command, servers, *, methods=None, blocks, slices=SLICES, slice_ms=SLICE_MS,
                 timeout=None):
    """Run bench/c/rotate_client (`command`: its argv up to the targets)
    against `servers` ({target: Server}; several targets may share a server:
    one connection each) at once, and return {target: [one sample per
    block]}: the samples run_load() would give for a window made of that
    block's slices (bytes, duration, server_cpu, client_wait).  `methods`
    ({target: 'w' or 'z'}, source mode) is what each connection asks for;
    default 'w'.  Blocks are consecutive stretches of the same seconds for
    every server, so a block's ratios pair like a round's (docs/benchmarks.md,
    "Interleaved slices")."""
    for server in servers.values():
        server.check_alive()
        server.discard_output()  # STATS read after this run are its own
    names = list(servers)
    command = [*command, "-p", ",".join(str(servers[n].port) for n in names),
               "-P", ",".join(str(servers[n].proc.pid) for n in names),
               "-l", str(slice_ms), "-n", str(slices), "-b", str(blocks)]
    if methods:
        command += ["-M", "".join(methods.get(n, "w") for n in names)]
    if timeout is None:
        timeout = 60 + 3 * slices * len(names) * slice_ms / 1e3
    result = run_load(command, timeout=timeout)
    if len(result.get("targets", ())) != len(names):
        raise BenchError(f"rotate_client gave {len(result.get('targets', ()))} targets, "
                         f"not {len(names)}")
    samples = {}
    for name, target in zip(names, result["targets"]):
        cpu = target["cpu"] or [None] * blocks
        samples[name] = [
            {"bytes": target["bytes"][b], "duration": target["duration"][b],
             "ops": target["bytes"][b] / result["size"], "server_cpu": cpu[b],
             "client_busy": None, "contention": None, "client_wait": result["client_wait"]}
            for b in range(blocks)]
    return samples


def run_rotation_quietly(command, servers, quiet_wait, **kwargs):
    """run_rotation() through take_quietly(): on a quiet machine, taken again
    when the load generator was not alone; every sample records the wait and
    the retakes."""
    def take():
        got = run_rotation(command, servers, **kwargs)
        return {"client_wait": next(iter(got.values()))[0]["client_wait"], "got": got}
    taken = take_quietly(take, quiet_wait)
    for samples in taken["got"].values():
        for sample in samples:
            sample.update(quiet_wait_s=taken["quiet_wait_s"], retakes=taken["retakes"])
    return taken["got"]


def process_cpu(pid):
    """(CPU seconds of the whole process, None) from /proc/PID/stat: unlike
    task_times() it keeps the time of threads that already exited (wrk's
    worker threads are gone when it prints its summary), in clock ticks.
    Good enough for the client-bound flag.  None once pid is reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"), None


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


class TLSMaterial:
    """A throw-away CA and a server certificate for 127.0.0.1 / localhost and
    the namespace's host address, made with trustme in a temporary directory
    removed at exit."""

    _made = None

    def __init__(self):
        import trustme  # a bench dependency (pip install -e .[bench])

        self.directory = Path(tempfile.mkdtemp(prefix="zcloop-bench-tls-"))
        atexit.register(shutil.rmtree, self.directory, True)
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost", NetNamespace.HOST_ADDR)
        self.server_pem = self.directory / "server.pem"  # key + chain
        self.ca_pem = self.directory / "ca.pem"
        cert.private_key_and_cert_chain_pem.write_to_path(str(self.server_pem))
        ca.cert_pem.write_to_path(str(self.ca_pem))

    @classmethod
    def get(cls):
        """The run's material, made on first use; BenchError if trustme is missing."""
        if cls._made is None:
            try:
                cls._made = cls()
            except ImportError as exc:
                raise BenchError(f"cannot make certificates: {exc} (pip install trustme)")
        return cls._made


class NetNamespace:
    """A private network namespace joined to this one by a veth pair:
    HOST_ADDR here, PEER_ADDR in the namespace, a /30 and nothing else, so
    traffic to PEER_ADDR never leaves the machine.  To the kernel (and to
    zcloop's "is the peer local?" test) PEER_ADDR is another host.

        with NetNamespace() as ns:
            subprocess.run(ns.exec_prefix() + ["echo_client", "-h", ns.HOST_ADDR, ...])

    Names carry this process's pid; namespaces left by a killed run (their
    pid is gone) are removed before a new one is made.  Removed on exit,
    including atexit, or when this process is killed with SIGINT/SIGTERM.
    """

    HOST_ADDR, PEER_ADDR, PREFIX = "10.213.90.1", "10.213.90.2", 30
    NAME_PREFIX = "zcbench-"

    def __init__(self):
        self.name = f"{self.NAME_PREFIX}{os.getpid()}"
        self.host_if, self.peer_if = f"zcb{os.getpid()}h", f"zcb{os.getpid()}p"
        self.created = False

    @staticmethod
    def unavailable_reason():
        if os.geteuid() != 0:
            return "skipped: needs root to make a network namespace"
        if not shutil.which("ip"):
            return "skipped: needs `ip` (iproute2) to make a network namespace"
        return None

    @staticmethod
    def _ip(*args, check=True):
        done = subprocess.run(["ip", *args], capture_output=True, text=True)
        if check and done.returncode != 0:
            raise BenchError(f"ip {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def _remove_stale(self):
        for line in self._ip("netns", "list", check=False).splitlines():
            name = line.split()[0] if line.split() else ""
            pid = name.removeprefix(self.NAME_PREFIX)
            if name.startswith(self.NAME_PREFIX) and pid.isdigit() and \
                    not Path(f"/proc/{pid}").exists():
                self._ip("netns", "del", name, check=False)
                self._ip("link", "del", f"zcb{pid}h", check=False)

    def __enter__(self):
        if reason := self.unavailable_reason():
            raise BenchError(reason)
        self._remove_stale()
        subnet = f"{self.HOST_ADDR.rsplit('.', 1)[0]}.0/{self.PREFIX}"
        if self._ip("-o", "addr", "show", "to", subnet, check=False).strip():
            raise BenchError(f"skipped: {subnet} is already in use on this host")
        atexit.register(self.delete)
        self.created = True
        try:
            ip = self._ip
            ip("netns", "add", self.name)
            ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.peer_if)
            ip("link", "set", self.peer_if, "netns", self.name)
            ip("addr", "add", f"{self.HOST_ADDR}/{self.PREFIX}", "dev", self.host_if)
            ip("link", "set", self.host_if, "up")
            inside = ("netns", "exec", self.name, "ip")
            ip(*inside, "addr", "add", f"{self.PEER_ADDR}/{self.PREFIX}", "dev", self.peer_if)
            ip(*inside, "link", "set", self.peer_if, "up")
            ip(*inside, "link", "set", "lo", "up")
        except BenchError:
            self.delete()
            raise
        return self

    def exec_prefix(self):
        """Prefix of a command to run inside the namespace (`ip netns exec`
        execs the command in place: same pid, pinning and CPU accounting)."""
        return ["ip", "netns", "exec", self.name]

    def delete(self):
        if self.created:
            self.created = False
            self._ip("netns", "del", self.name, check=False)  # takes the veth pair along
            self._ip("link", "del", self.host_if, check=False)

    def __exit__(self, *exc_info):
        self.delete()


def build_c_helpers():
    """Build bench/bin/* with make (a no-op when up to date); return an error or None."""
    if not shutil.which("make") or not shutil.which("gcc"):
        return "make/gcc not installed"
    done = subprocess.run(["make", "-s", "-C", str(BENCH / "c")], capture_output=True,
                          text=True)
    return None if done.returncode == 0 else f"make failed: {done.stderr.strip()[-300:]}"


def echo_client_has_tls():
    """Was bench/bin/echo_client built with OpenSSL (-t)?"""
    try:
        done = subprocess.run([str(BIN / "echo_client"), "-t"], capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "without OpenSSL" not in done.stderr


def command_output(command):
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (done.stdout or done.stderr).strip() or None


def default_congestion_control():
    with open("/proc/sys/net/ipv4/tcp_congestion_control") as f:
        return f.read().strip()


def congestion_control_unavailable(name):
    """Why a socket cannot use TCP congestion control `name` (None if it can):
    not built into the kernel, or not in tcp_allowed_congestion_control for a
    process without CAP_NET_ADMIN."""
    with socket.socket() as sock:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, name.encode())
        except OSError as exc:
            return f"TCP_CONGESTION refused ({exc.strerror})"
    return None


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
    # Where the servers' zcloop comes from (loop_env puts this checkout first).
    found["zcloop_path"] = servers_zcloop_path()
    found["openssl"] = ssl.OPENSSL_VERSION
    return found


def servers_zcloop_path():
    """The directory of the zcloop package a server process imports."""
    try:
        done = subprocess.run(
            [sys.executable, "-c", "import os, zcloop; print(os.path.dirname(zcloop.__file__))"],
            env=loop_env("asyncio"), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None

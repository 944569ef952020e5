"""zcloop benchmark suite: every workload on every loop, side by side, in one run.

    python bench/run.py [--quick] [--loops asyncio,uvloop,zcloop] [--out bench/out]
                        [--only PATTERN] [--rounds N] [--duration S]
                        [--cc cubic|system|NAME] [--syscalls]
                        [--publish [DIR]]

Servers run pinned to CPU 0, load generators to CPU 1.  Rounds are
interleaved (round robin over loops, order rotated every round) and each cell
is the median over rounds; 'vs uvloop' is the median of the per-round ratios.
The rows driven by bench/bin/echo_client run under one stated TCP congestion
control on both ends (--cc, default cubic).  A failing cell records its error and the run goes
on.  Writes results-<date>.json, results.md and one PNG chart per group to
--out; --publish also puts a full run into bench/results/ (bench/publish.py).
See docs/benchmarks.md.
"""
import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import re
import shutil
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import harness
import publish
import report
from harness import (REFERENCE, REFERENCE_MODES, BenchError, NetNamespace, Server,
                     SyscallCounter, TLSMaterial, run_load)

LOOPS = ("asyncio", "uvloop", "zcloop")
#: Client CPU time / window wall time at which a row counts as client-bound.
CLIENT_BOUND_BUSY = 0.9
KiB, MiB = 1024, 1024 * 1024


@dataclass(frozen=True)
class Settings:
    rounds: int
    duration: float       # measured window per sample, seconds
    warmup: float         # traffic before the window, seconds
    http_duration: float  # wrk has no warm-up: one longer window
    slices: int = harness.SLICES  # rotate_client rows: slices per server, in `rounds` blocks
    slice_ms: float = harness.SLICE_MS


QUICK = Settings(rounds=3, duration=0.8, warmup=0.2, http_duration=2, slices=60)
FULL = Settings(rounds=3, duration=2.5, warmup=0.5, http_duration=5)


@dataclass(frozen=True)
class Workload:
    group: str            # table section and chart
    name: str             # row label
    server: str | None    # kind in bench/servers.py; None: the client itself runs on the loop
    client: tuple         # argv; {bin} {bench} {python} {host} {port} {cafile} {duration}
                          # {warmup} are filled in
    unit: str             # req/s, MB/s or ops/s
    reference: bool = False  # also measured against the C io_uring server (echo and
                             # sink kinds, no TLS: harness.REFERENCE_MODES)
    tls: bool = False     # the server gets a TLS certificate (trustme, made at run time)
    netns: bool = False   # server on the host end of a veth pair, client in a private
                          # network namespace at the other end (a non-local peer)
    loops: tuple | None = None    # only these loops (an API only they have)
    compare_to: str | None = None  # "vs uvloop" against the base loop of this other row
    per_mib: bool = False  # server CPU per MiB transferred instead of per op
    stats: bool = False   # record the STATS the server prints per connection
                          # (source-protocol and source-pool kinds)
    rmem_at_max: bool = False  # sockets start with the largest receive buffer
                               # (harness.ReceiveBufferAtMax)
    rotation: str | None = None  # rotating rows with the same name share one rotate_client
                                 # run: every (row, contender) is a target of it
    method: str | None = None  # zero-copy rows: what the client asks for, write() (w) or
                               # write_zc() (z); the send rows' client always asks for w

    def __post_init__(self):
        if self.reference and (self.server not in REFERENCE_MODES or self.tls):
            raise ValueError(f"{self.name}: the C reference server has no counterpart of "
                             f"{self.server}{' over TLS' if self.tls else ''}")

    @property
    def sets_cc(self):
        """Both ends take --cc: the C load generators and the servers they talk to."""
        return self.client[0] in ("{bin}/echo_client", "{bin}/rotate_client")

    @property
    def rotates(self):
        """One rotate_client drives every contender's server in turn, in
        interleaved slices (harness.run_rotation), instead of a client per
        contender and round."""
        return self.client[0] == "{bin}/rotate_client"

    def command(self, port, settings, netns=None, cc=None):
        duration = settings.http_duration if self.client[0] == "wrk" else settings.duration
        values = {"bin": harness.BIN, "bench": harness.BENCH, "python": sys.executable,
                  "port": port, "duration": duration, "warmup": settings.warmup,
                  "host": netns.HOST_ADDR if netns else "127.0.0.1",
                  "cafile": TLSMaterial.get().ca_pem if self.tls else ""}
        command = [part.format(**values) for part in self.client]
        if cc and self.sets_cc:
            command += ["-g", cc]
        return netns.exec_prefix() + command if netns else command

    @property
    def server_key(self):
        """Rows sharing a key share one server per contender."""
        return self.server, self.tls, self.netns

    @property
    def group_key(self):
        """Rows run together, their servers alive at once: a rotation's rows
        (of one or more server kinds), else the rows of one server_key."""
        return ("rotation", self.rotation, self.tls, self.netns) if self.rotation else \
            self.server_key


def size_label(size):
    return f"{size // MiB}MiB" if size >= MiB else f"{size // KiB}KiB"


def define_workloads(quick):
    rows = []
    for name in ("call_soon", "call_later", "sleep0"):
        rows.append(Workload("micro", name, None, (
            "{python}", "{bench}/micro.py", name, "--duration", "{duration}",
            "--warmup", "{warmup}"), "ops/s"))

    echo_cells = [(s, c) for s in (KiB, 10 * KiB, 100 * KiB) for c in (1, 10, 100)]
    quick_cells = {"protocol": [(KiB, 1), (KiB, 10), (10 * KiB, 10), (100 * KiB, 10)],
                   "streams": [(KiB, 10), (100 * KiB, 10)]}
    for api in ("protocol", "streams"):
        for size, conns in quick_cells[api] if quick else echo_cells:
            rows.append(Workload(f"echo-{api}", f"echo {api} {size_label(size)} c{conns}",
                                 f"echo-{api}", (
                "{bin}/echo_client", "-p", "{port}", "-c", str(conns), "-s", str(size),
                "-d", "{duration}", "-w", "{warmup}"), "req/s", reference=api == "protocol"))

    # Every one-way row gets the C reference (uring_echo_server -m sink, the
    # same server for both APIs): --quick then still has one at each size.
    # The one-way, send and zero-copy rows are measured in interleaved
    # slices (rotate_client; docs/benchmarks.md, "Interleaved slices").
    oneway_cells = ([("protocol", MiB), ("streams", 16 * MiB)] if quick else
                    [(api, size) for api in ("protocol", "streams") for size in (MiB, 16 * MiB)])
    for api, size in oneway_cells:
        rows.append(Workload("oneway", f"one-way {api} {size_label(size)}", f"sink-{api}", (
            "{bin}/rotate_client", "-m", "oneway", "-h", "{host}", "-s", str(size)), "MB/s",
            reference=True, rmem_at_max=True))

    # Send side: the server streams SIZE-byte messages to a receive-only
    # client (rotate_client -m source), with pause_writing()/resume_writing()
    # (Protocol) or write(); await drain() (Streams); the C reference keeps one
    # SEND of the whole message in flight (uring_echo_server -m source).
    send_cells = ([("protocol", MiB), ("streams", 16 * MiB)] if quick else
                  [(api, size) for api in ("protocol", "streams")
                   for size in (64 * KiB, MiB, 16 * MiB)])
    for api, size in send_cells:
        rows.append(Workload("send", f"send {api} {size_label(size)}", f"source-{api}", (
            "{bin}/rotate_client", "-m", "source", "-h", "{host}", "-s", str(size)), "MB/s",
            reference=True, per_mib=True))

    # TLS: the Protocol echo server with an ssl.SSLContext, the C client over OpenSSL.
    for size in (KiB, 100 * KiB):
        rows.append(Workload("echo-tls", f"echo tls {size_label(size)} c10", "echo-protocol", (
            "{bin}/echo_client", "-t", "-C", "{cafile}", "-h", "{host}", "-p", "{port}",
            "-c", "10", "-s", str(size), "-d", "{duration}", "-w", "{warmup}"), "req/s",
            tls=True))

    # Zero-copy: the server streams messages to a receive-only client, with
    # write() on every loop, write_zc() on zcloop, and write_zc() of blocks of
    # a registered BufferPool ("write_zc pool": no pinning per send); over
    # loopback (always copied) and to a peer in a private network namespace
    # (veth).  The three rows of a place are one rotation (rotate_client -m
    # source): zcloop's write and write_zc connections share its
    # source-protocol server.
    zc_cells = [("loopback", MiB, False), ("netns", 16 * MiB, True)]
    for where, size, netns in zc_cells:
        plain = f"zc {where} write {size_label(size)}"
        for api in ("write", "write_zc", "write_zc pool"):
            zc = api != "write"
            kind = "source-pool" if api == "write_zc pool" else "source-protocol"
            rows.append(Workload("zerocopy", f"zc {where} {api} {size_label(size)}", kind, (
                "{bin}/rotate_client", "-m", "source", "-h", "{host}", "-s", str(size)), "MB/s",
                netns=netns, loops=("zcloop",) if zc else None,
                compare_to=plain if zc else None, per_mib=True, stats=True,
                rotation=f"zc {where}", method="z" if zc else "w"))

    rows.append(Workload("http", "aiohttp hello wrk -c50", "http-aiohttp", (
        "wrk", "-t1", "-c50", "-d{duration}s", "-s", "{bench}/wrk_json.lua",
        "http://{host}:{port}/"), "req/s"))
    rows.append(Workload("http", "aiohttp hello https wrk -c50", "http-aiohttp", (
        "wrk", "-t1", "-c50", "-d{duration}s", "-s", "{bench}/wrk_json.lua",
        "https://{host}:{port}/"), "req/s", tls=True))
    rows.append(Workload("websockets", "websockets echo 64B c10", "ws-echo", (
        "{python}", "{bench}/ws_client.py", "--port", "{port}", "--connections", "10",
        "--size", "64", "--duration", "{duration}", "--warmup", "{warmup}"), "msg/s"))
    return rows


def unavailable_reason(workload, build_error):
    if workload.client[0] == "wrk" and not shutil.which("wrk"):
        return "skipped: wrk not installed"
    if workload.client[0].startswith("{bin}") and build_error:
        return f"skipped: C helpers not built ({build_error})"
    if workload.tls:
        if importlib.util.find_spec("trustme") is None:
            return "skipped: trustme not installed (pip install trustme)"
        if workload.client[0] == "{bin}/echo_client" and not harness.echo_client_has_tls():
            return ("skipped: bench/bin/echo_client built without OpenSSL "
                    "(apt-get install libssl-dev)")
    if workload.netns:
        return NetNamespace.unavailable_reason()
    return None


def throughput(sample, unit):
    if unit == "MB/s":
        return sample["bytes"] / sample["duration"] / 1e6
    return sample["ops"] / sample["duration"]


def cpu_per_op(sample, workload):
    """Server CPU µs per op, or per MiB transferred for per_mib rows."""
    if sample["server_cpu"] is None:
        return None
    units = sample["bytes"] / MiB if workload.per_mib else sample["ops"]
    return sample["server_cpu"] / units * 1e6


class Suite:
    def __init__(self, workloads, loops, settings, syscalls, build_error, cc=None,
                 quiet_wait=60, rmem_at_max=True):
        self.workloads, self.loops, self.settings = workloads, loops, settings
        self.quiet_wait = quiet_wait
        self.rmem_at_max = rmem_at_max
        self.rmem_used = {}  # server kind -> the tcp_rmem its group ran with
        self.cc = cc  # TCP congestion control of the echo_client rows; None: the machine's
        self.syscalls = syscalls
        self.build_error = build_error
        self.samples = {w.name: {c: [] for c in self.contenders(w)} for w in workloads}
        self.syscalls_per_op = {w.name: {} for w in workloads}
        self.total = settings.rounds * sum(len(self.contenders(w)) for w in workloads)
        self.done = 0
        self.netns = None  # the NetNamespace of the server group being run

    def contenders(self, workload):
        loops = [loop for loop in self.loops if not workload.loops or loop in workload.loops]
        if workload.reference and not self.build_error:
            return [*loops, REFERENCE]
        return loops

    def progress(self, workload, contender, label, sample):
        self.done += 1
        if "error" in sample:
            text = f"error: {sample['error']}"
        else:
            text = f"{sample['throughput']:,.0f} {workload.unit}"
            if sample.get("client_bound"):
                text += " (client-bound)"
        print(f"[{self.done}/{self.total}] {workload.name} | {contender} | {label}: {text}",
              file=sys.stderr, flush=True)

    def run(self):
        by_group = {}
        for workload in self.workloads:
            by_group.setdefault(workload.group_key, []).append(workload)
        for workloads in by_group.values():
            first = workloads[0]
            with contextlib.ExitStack() as stack:
                skipped = {w.name: unavailable_reason(w, self.build_error) for w in workloads}
                namespace = None
                if self.rmem_at_max and any(w.rmem_at_max for w in workloads):
                    rmem = stack.enter_context(harness.ReceiveBufferAtMax())
                    if rmem.value is None:
                        print("warning: cannot set net.ipv4.tcp_rmem (not root?): the one-way "
                              "rows' connections keep the machine's receive buffer start",
                              file=sys.stderr, flush=True)
                    self.rmem_used[first.server] = rmem.value
                if first.netns and not all(skipped.values()):
                    try:
                        namespace = stack.enter_context(NetNamespace())
                    except BenchError as exc:
                        skipped = {w.name: skipped[w.name] or str(exc) for w in workloads}
                self.run_server_group(workloads, skipped, first.tls, namespace)

    def run_server_group(self, workloads, skipped, tls=False, netns=None):
        """One server per (server kind, contender) for the whole group (CPU is
        sampled per window, so idle servers of other loops cost nothing)."""
        needed = dict.fromkeys((w.server, c) for w in workloads if w.server is not None
                               and not skipped[w.name] for c in self.contenders(w))
        servers, failures = {}, {}  # (kind, contender) -> Server / error
        host = netns.HOST_ADDR if netns else "127.0.0.1"
        cc = self.cc if any(w.sets_cc for w in workloads) else None
        for kind, contender in needed:
            try:
                servers[kind, contender] = Server(kind, contender, host=host,
                                                  tls=TLSMaterial.get() if tls else None, cc=cc)
            except BenchError as exc:
                failures[kind, contender] = str(exc)
                print(f"{kind} on {contender}: {exc}", file=sys.stderr, flush=True)
        self.netns = netns
        try:
            rotations = {}
            for workload in workloads:
                if workload.rotates:
                    rotations.setdefault(workload.rotation or workload.name, []).append(workload)
            for rows in rotations.values():
                self.measure_rotation(rows, servers, skipped, failures)
            for round_index in range(self.settings.rounds):
                for workload in workloads:
                    if workload.rotates:
                        continue
                    order = self.contenders(workload)
                    # Rotate the order each round so no loop always goes first.
                    shift = round_index % len(order)
                    for contender in order[shift:] + order[:shift]:
                        key = workload.server, contender
                        reason = skipped[workload.name] or failures.get(key)
                        server = servers.get(key)
                        sample = ({"error": reason} if reason else
                                  self.measure(workload, contender, server))
                        if server and server.proc.poll() is not None:
                            failures[key] = sample.get("error") or "server exited"
                        self.samples[workload.name][contender].append(sample)
                        self.progress(workload, contender, f"round {round_index + 1}", sample)
            if self.syscalls:
                for workload in workloads:
                    if workload.rotates or workload.server is None:
                        continue  # a rotation's client drives every server at once
                    for contender in self.contenders(workload):
                        key = workload.server, contender
                        if not (skipped[workload.name] or key in failures):
                            self.count_syscalls(workload, contender, servers[key])
        finally:
            for server in servers.values():
                server.stop()

    def measure_rotation(self, rows, servers, skipped, failures):
        """All rounds of one or more rotating rows with one rotate_client:
        every (row, contender) is a target, driven in turn, one block of
        slices per round.  Targets of one server kind and contender share its
        server (a connection each)."""
        targets, methods = {}, {}
        for workload in rows:
            for contender in self.contenders(workload):
                key = workload.server, contender
                if not skipped[workload.name] and key not in failures and key in servers:
                    targets[workload.name, contender] = servers[key]
                    if workload.method:
                        methods[workload.name, contender] = workload.method
        error, measured = None, {}
        if targets:
            try:
                measured = harness.run_rotation_quietly(
                    rows[0].command(0, self.settings, self.netns, self.cc), targets,
                    self.quiet_wait, methods=methods or None, blocks=self.settings.rounds,
                    slices=self.settings.slices, slice_ms=self.settings.slice_ms)
            except BenchError as exc:
                error = str(exc)
        if measured and any(w.stats for w in rows):
            self.attach_stats(rows, targets, measured)
        for workload in rows:
            for contender in self.contenders(workload):
                samples = measured.get((workload.name, contender)) or [
                    {"error": skipped[workload.name] or error
                     or failures.get((workload.server, contender)) or "no server"}
                ] * self.settings.rounds
                for index, sample in enumerate(samples):
                    if "error" not in sample:
                        sample.update(throughput=throughput(sample, workload.unit),
                                      cpu_us_per_op=cpu_per_op(sample, workload),
                                      client_bound=False)
                    self.samples[workload.name][contender].append(sample)
                    self.progress(workload, contender, f"block {index + 1}", sample)
        for key, server in servers.items():
            if server.proc.poll() is not None:
                failures.setdefault(key, "server exited")

    @staticmethod
    def attach_stats(rows, targets, measured):
        """The STATS each source server printed per connection once
        rotate_client closed them, matched to targets by the API the
        connection used (one connection per API and server); on a target's
        first block, the later blocks say where they are."""
        stats_rows = {w.name for w in rows if w.stats}
        by_server = {}
        for (name, contender), server in targets.items():
            if name in stats_rows:
                by_server.setdefault(server, []).append((name, contender))
        api = {w.name: "write_zc" if w.method == "z" else "write" for w in rows}
        for server, keys in by_server.items():
            printed = [server.read_stats() for _ in keys]
            by_api = {st["api"]: st for st in printed if st}
            for key in keys:
                first, *later = measured[key]
                if api[key[0]] in by_api:
                    first["server_stats"] = by_api[api[key[0]]]
                    for sample in later:
                        sample["server_stats_in_block"] = 1

    def measure(self, workload, contender, server):
        """One sample, on a quiet machine (harness.take_quietly)."""
        return harness.take_quietly(lambda: self.measure_once(workload, contender, server),
                                    self.quiet_wait)

    def measure_once(self, workload, contender, server):
        if server is None:  # micro benchmark: the program itself runs on the loop
            command = workload.command(0, self.settings)
            run = dict(env=harness.loop_env(contender), cpu=harness.SERVER_CPU)
        else:
            command = workload.command(server.port, self.settings, self.netns, self.cc)
            run = dict(server=server)
            # Also for rows that do not record STATS: a source-protocol server
            # prints them for every connection.
            server.discard_output()
        timeout = self.settings.warmup + max(self.settings.duration,
                                             self.settings.http_duration) + 30
        try:
            sample = run_load(command, timeout=timeout, **run)
        except BenchError as exc:
            return {"error": str(exc)}
        if workload.stats:
            # Printed by the server once the client's connection is gone.
            sample["server_stats"] = server.read_stats()
        if not sample.get("ops"):
            return {"error": "no operation completed", "raw": sample}
        running_loop = sample.get("loop", harness.LOOP_PREFIX[contender])
        if not running_loop.startswith(harness.LOOP_PREFIX[contender]):
            return {"error": f"ran on {running_loop}, not {contender}"}
        sample["throughput"] = throughput(sample, workload.unit)
        sample["cpu_us_per_op"] = cpu_per_op(sample, workload)
        # A load generator using its whole CPU may be what limits the row.
        sample["client_bound"] = (sample["client_busy"] or 0) >= CLIENT_BOUND_BUSY
        return sample

    def count_syscalls(self, workload, contender, server):
        """One extra sample under perf; syscalls per op over the client's lifetime."""
        with SyscallCounter() as counter:
            sample = self.measure(workload, contender, server)
        if "error" not in sample and counter.count is not None:
            per_op = counter.count / sample["total_ops"]
            self.syscalls_per_op[workload.name][contender] = per_op
            print(f"        {workload.name} | {contender} | syscalls: {per_op:.2f}/op",
                  file=sys.stderr, flush=True)
        else:
            print(f"        {workload.name} | {contender} | syscalls: "
                  f"{sample.get('error', 'perf gave no count')}", file=sys.stderr, flush=True)

    def results(self):
        rows = []
        for workload in self.workloads:
            cells = {}
            for contender, samples in self.samples[workload.name].items():
                cells[contender] = {
                    "samples": samples,
                    "summary": report.summarize(samples,
                                                self.syscalls_per_op[workload.name].get(contender),
                                                pooled=workload.rotates),
                }
            rows.append({**asdict(workload), "pooled": workload.rotates, "results": cells})
        return rows


def main():
    parser = argparse.ArgumentParser(description="Run the zcloop benchmark suite.")
    parser.add_argument("--quick", action="store_true",
                        help="fewer rows, shorter windows (about 4 minutes)")
    parser.add_argument("--loops", default="asyncio,uvloop,zcloop",
                        help="comma-separated loops (default: %(default)s)")
    parser.add_argument("--out", default=str(harness.BENCH / "out"), help="output directory")
    parser.add_argument("--only", metavar="PATTERN",
                        help="only workloads whose group or name matches this regex")
    parser.add_argument("--rounds", type=int, help="override the number of rounds")
    parser.add_argument("--duration", type=float,
                        help="override the measured window of the echo_client and micro rows, "
                             "seconds (more, shorter rounds pair better on a noisy machine)")
    parser.add_argument("--slices", type=int,
                        help="one-way, send and zero-copy rows: slices per target (default: "
                             f"{FULL.slices}, --quick {QUICK.slices}; {FULL.slice_ms:g} ms each; "
                             "docs/benchmarks.md, 'Interleaved slices')")
    parser.add_argument("--cc", default="cubic", metavar="NAME",
                        help="TCP congestion control of both ends of the rows driven by "
                             "bench/bin/echo_client and rotate_client (TCP_CONGESTION per "
                             "socket; the machine's "
                             "default is not changed); 'system': the machine's default. "
                             "Default: %(default)s (docs/benchmarks.md, 'Congestion control')")
    parser.add_argument("--quiet-wait", type=float, default=60, metavar="S",
                        help="before each sample wait up to S seconds for the machine to be "
                             "quiet (default: %(default)s; 0: only check)")
    parser.add_argument("--rmem", choices=("max", "system"), default="max",
                        help="one-way rows: start every connection's receive buffer at "
                             "tcp_rmem's maximum for their duration (root; default), or keep "
                             "the machine's setting (docs/benchmarks.md)")
    parser.add_argument("--syscalls", action="store_true",
                        help="one extra sample per cell under `perf stat` for syscalls/op")
    parser.add_argument("--publish", metavar="DIR", nargs="?", const=str(publish.DEFAULT_DEST),
                        help="after the run, copy results.md, the JSON and the charts to "
                             "DIR/latest (default DIR: %(const)s); full runs only, see "
                             "bench/publish.py")
    args = parser.parse_args()
    if args.publish and (args.quick or args.only or args.loops != parser.get_default("loops")):
        parser.error("--publish is for full runs (no --quick, --only or --loops); "
                     "bench/publish.py --allow-partial publishes another run by hand")

    loops = [name.strip() for name in args.loops.split(",") if name.strip()]
    if not loops or set(loops) - set(LOOPS):
        parser.error(f"--loops takes a comma-separated subset of {', '.join(LOOPS)}")
    settings = QUICK if args.quick else FULL
    if args.rounds or args.duration or args.slices:
        settings = Settings(args.rounds or settings.rounds, args.duration or settings.duration,
                            settings.warmup, settings.http_duration,
                            args.slices or settings.slices)
    if settings.slices < settings.rounds:
        parser.error("--slices must be at least --rounds (a round is a block of slices)")
    workloads = define_workloads(args.quick)
    if args.only:
        pattern = re.compile(args.only)
        workloads = [w for w in workloads if pattern.search(w.group) or pattern.search(w.name)]
        if not workloads:
            parser.error(f"no workload matches {args.only!r}")
    if harness.SERVER_CPU is None:
        print("warning: fewer than 2 CPUs, server and client are not pinned", file=sys.stderr)
    if args.syscalls and (reason := SyscallCounter.unavailable_reason()):
        print(f"warning: --syscalls disabled: {reason}", file=sys.stderr)
        args.syscalls = False

    cc = None if args.cc == "system" else args.cc
    if cc and (reason := harness.congestion_control_unavailable(cc)):
        print(f"warning: --cc {cc}: {reason}; the machine's default "
              f"({harness.default_congestion_control()}) is used", file=sys.stderr)
        cc = None

    # A SIGTERM must still run the clean-ups (network namespace, servers).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    build_error = harness.build_c_helpers()
    if build_error:
        print(f"warning: {build_error}; rows needing bench/bin are skipped", file=sys.stderr)
    if harness.CLIENT_CPU is not None:
        # Keep this (mostly idle) harness off the server's CPU.
        os.sched_setaffinity(0, {harness.CLIENT_CPU})

    started = datetime.datetime.now()
    # What is measured is the tree as it is now: edits made while the run
    # goes on must not mark it dirty (or clean).
    versions = harness.versions()
    suite = Suite(workloads, loops, settings, args.syscalls, build_error, cc, args.quiet_wait,
                  args.rmem == "max")
    suite.run()
    results = {
        "date": started.isoformat(timespec="seconds"),
        "elapsed_s": round((datetime.datetime.now() - started).total_seconds(), 1),
        "machine": harness.machine_info(),
        "versions": versions,
        "settings": {**asdict(settings), "quick": args.quick, "syscalls": args.syscalls,
                     "only": args.only, "quiet_wait": args.quiet_wait,
                     "tcp_rmem_one_way": suite.rmem_used or args.rmem,
                     "cc": cc or f"system ({harness.default_congestion_control()})"},
        "loops": loops,
        "rows": suite.results(),
    }

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / f"results-{started:%Y%m%d-%H%M%S}.json"
    json_path.write_text(json.dumps(results, indent=1))
    charts = report.charts(results, out)
    markdown = report.markdown(results, charts)
    (out / "results.md").write_text(markdown)
    print(markdown)
    print(f"wrote {json_path}, {out / 'results.md'} and {len(charts)} chart(s) in {out}",
          file=sys.stderr)
    if args.publish:
        published = publish.publish(json_path, Path(args.publish))
        print(f"published to {published}", file=sys.stderr)


if __name__ == "__main__":
    main()

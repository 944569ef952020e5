"""Paired A/B of two zcloop builds (and uvloop) on chosen rows of bench/run.py.

    python bench/ab.py --base DIR [--rounds 5] [--only REGEX] [--duration 2] [--cc cubic]

DIR is another zcloop checkout built in place, e.g. the tree before a change:
    git worktree add /tmp/zcloop-base REV && make -C /tmp/zcloop-base build
Every round runs each row on "base" (DIR's zcloop), "new" (this checkout's
zcloop) and uvloop, in an order rotated every round, back to back, so the
three share the machine's state of those seconds.  What it reports is the
per-round ratio new/base (and new/uvloop): on a noisy VM the absolute numbers
move 20% between rounds, the paired ratio far less.  Median and range over
rounds are printed; trust an effect only where the range excludes 1.0.
The one-way, send and zero-copy write rows run the three servers at once
under one rotate_client (interleaved slices, as in run.py); a round is a
block of its slices.
"""
import argparse
import re
import statistics
import sys
from pathlib import Path

import harness
from harness import BenchError, Server, TLSMaterial, run_load
from run import FULL, Settings, cpu_per_op, define_workloads, throughput

CONTENDERS = ("base", "new", "uvloop")
QUIET_WAIT = 60  # seconds, as run.py's --quiet-wait
DEFAULT_ROWS = (r"echo protocol (1|10)KiB c(10|100)$|echo streams 1KiB c10$"
                r"|aiohttp hello wrk")


def one_sample(workload, contender, base, settings, cc):
    loop = "uvloop" if contender == "uvloop" else "zcloop"
    root = base if contender == "base" else harness.ROOT
    tls = TLSMaterial.get() if workload.tls else None
    server = Server(workload.server, loop, tls=tls, root=root,
                    cc=cc if workload.sets_cc else None)
    try:
        sample = harness.take_quietly(
            lambda: run_load(workload.command(server.port, settings, cc=cc), server=server),
            QUIET_WAIT)
    finally:
        server.stop()
    return throughput(sample, workload.unit), cpu_per_op(sample, workload)


def rotation_samples(workload, base, settings, cc):
    """A rotating row (one-way, send, zero-copy write): the three servers at
    once, driven in interleaved slices by one rotate_client; one (throughput,
    CPU) per block."""
    servers = {}
    try:
        for contender in CONTENDERS:
            servers[contender] = Server(
                workload.server, "uvloop" if contender == "uvloop" else "zcloop",
                root=base if contender == "base" else harness.ROOT,
                cc=cc if workload.sets_cc else None)
        by_contender = harness.run_rotation_quietly(
            workload.command(0, settings, cc=cc), servers, QUIET_WAIT, blocks=settings.rounds,
            slices=settings.slices)
    finally:
        for server in servers.values():
            server.stop()
    return {c: [(throughput(s, workload.unit), cpu_per_op(s, workload)) for s in samples]
            for c, samples in by_contender.items()}


def spread(values):
    return f"{statistics.median(values):.3f} [{min(values):.3f}..{max(values):.3f}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, type=Path,
                        help="zcloop checkout (built in place) to compare against")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--only", default=DEFAULT_ROWS, help="regex on row names")
    parser.add_argument("--cc", default="cubic",
                        help="TCP congestion control of the echo_client rows, as in run.py "
                             "('system': the machine's default)")
    args = parser.parse_args()
    cc = None if args.cc == "system" else args.cc
    if not list(args.base.glob("zcloop/_ring*.so")):
        sys.exit(f"{args.base}: no built zcloop/_ring*.so (make -C {args.base} build)")
    build_error = harness.build_c_helpers()
    if build_error:
        sys.exit(f"C load generator: {build_error}")
    settings = Settings(rounds=args.rounds, duration=args.duration,
                        warmup=FULL.warmup, http_duration=max(1, round(2 * args.duration)))
    rows = [w for w in define_workloads(quick=False)
            if re.search(args.only, w.name) and w.server and not w.netns and not w.loops]
    print(f"{len(rows)} rows x {args.rounds} rounds; base={args.base} new={harness.ROOT}",
          flush=True)
    for workload in rows:
        samples = {c: [] for c in CONTENDERS}
        if workload.rotates:
            try:
                samples = rotation_samples(workload, args.base, settings, cc)
            except BenchError as exc:
                print(f"{workload.name}: failed: {exc}", flush=True)
        for r in range(0 if workload.rotates else args.rounds):
            order = CONTENDERS[r % 3:] + CONTENDERS[:r % 3]
            try:
                for contender in order:
                    samples[contender].append(
                        one_sample(workload, contender, args.base, settings, cc))
            except BenchError as exc:
                print(f"{workload.name}: round {r} failed: {exc}", flush=True)
                for contender in CONTENDERS:   # keep the rounds paired
                    del samples[contender][r:]
        if not samples["new"]:
            continue
        rate = {c: [s[0] for s in samples[c]] for c in CONTENDERS}
        cpu = {c: [s[1] for s in samples[c]] for c in CONTENDERS}
        vs_base = [n / b for n, b in zip(rate["new"], rate["base"])]
        vs_uv = [n / u for n, u in zip(rate["new"], rate["uvloop"])]
        cpu_vs_base = [n / b for n, b in zip(cpu["new"], cpu["base"])]
        print(f"{workload.name:32s} new/base {spread(vs_base)}  new/uvloop {spread(vs_uv)}  "
              f"cpu new/base {spread(cpu_vs_base)}  cpu/op base {statistics.median(cpu['base']):.2f}"
              f" new {statistics.median(cpu['new']):.2f} uvloop "
              f"{statistics.median(cpu['uvloop']):.2f}", flush=True)


if __name__ == "__main__":
    main()

"""The ``python -m zcloop`` command line: run a program on zcloop, or compare loops.

This module must not need the compiled core at import time: ``compare`` and
``run --loop asyncio|uvloop`` work without it.
"""
import argparse
import importlib.util
import json
import os
import runpy
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

LOOPS = ("zcloop", "uvloop", "asyncio")
#: Directory holding the sitecustomize.py that forces a loop onto a child process.
INJECT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_inject")
LOOP_ENV = "ZCLOOP_LOOP"


class CliError(Exception):
    """A one-line error for the user (no traceback); args: message, exit status."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


def version():
    # Read, not imported: `import zcloop` needs the compiled core.
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_version.py")
    return runpy.run_path(path)["__version__"]


def import_zcloop():
    try:
        import zcloop
    except ImportError as exc:
        raise CliError(f"zcloop cannot be imported ({type(exc).__name__}: {exc})") from None
    return zcloop


def loop_unavailable(name):
    """None if this interpreter can run the named loop, else why not."""
    try:
        if name == "uvloop" and importlib.util.find_spec("uvloop") is None:
            return "uvloop is not installed (pip install uvloop)"
        if name == "zcloop":
            zcloop = import_zcloop()
            if not zcloop._env_flag(zcloop.DISABLE_ENV):  # disabled: asyncio's loop, on purpose
                return zcloop.available()
    except CliError as exc:
        return str(exc)
    return None


# ---------------------------------------------------------------------- run

def install_loop(name, *, fallback=False):
    """Make asyncio.run() / asyncio.new_event_loop() use the named loop."""
    if name == "zcloop":
        zcloop = import_zcloop()
        if not (fallback or zcloop._env_flag(zcloop.FALLBACK_ENV)):
            reason = loop_unavailable(name)
            if reason is not None:
                raise CliError(f"{reason}; or pass --fallback: python -m zcloop run --fallback ...")
        zcloop.install(fallback=fallback or None)
    elif name == "uvloop":
        reason = loop_unavailable(name)
        if reason is not None:
            raise CliError(reason)
        import asyncio
        import warnings

        import uvloop

        with warnings.catch_warnings():
            # Python 3.14 deprecates policies; asyncio.run() still consults them.
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def check_module(module):
    """Fail like `python -m module` does when there is nothing to run."""
    try:
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.submodule_search_locations is not None:
            if importlib.util.find_spec(module + ".__main__") is None:
                raise CliError(f"No module named {module}.__main__; {module!r} is a package "
                               "and cannot be directly executed")
    except ImportError as exc:  # a parent package is missing
        raise CliError(str(exc)) from None
    if spec is None:
        raise CliError(f"No module named {module}")


def run_program(args, parser):
    if args.module:
        module, *program_args = args.module
        sys.path[0] = os.getcwd()  # what `python -m module` puts there
        check_module(module)
        install_loop(args.loop, fallback=args.fallback)
        sys.argv = [module, *program_args]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    elif args.script:
        if not os.path.exists(args.script):
            # Python's own wording and status for `python missing.py`.
            raise CliError(f"can't open file {os.path.abspath(args.script)!r}: "
                           "[Errno 2] No such file or directory", status=2)
        install_loop(args.loop, fallback=args.fallback)
        sys.argv = [args.script, *args.args]
        sys.path[0] = os.path.dirname(os.path.abspath(args.script))
        runpy.run_path(args.script, run_name="__main__")
    else:
        parser.error("give a script or -m MODULE")
    return 0


# ------------------------------------------------------------------ compare

def child_env(loop):
    """Environment that makes a child Python process start on `loop`."""
    env = dict(os.environ)
    env[LOOP_ENV] = loop
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [INJECT_DIR, env.get("PYTHONPATH")]))
    return env


def kill_process_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already gone


def own_peak_rss_kib():
    """Peak RSS of this process.  A child's ru_maxrss can never be below it:
    Linux carries the forked image's high-water mark across exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def run_once(command, loop, *, timeout, show_output):
    """Run `command` on `loop`; return a sample dict (wall, cpu, peak RSS, status)."""
    stderr = None if show_output else tempfile.TemporaryFile()
    timed_out = threading.Event()
    rss_floor = own_peak_rss_kib()
    started = time.perf_counter()
    try:
        proc = subprocess.Popen(command, env=child_env(loop), start_new_session=True,
                                stdout=None if show_output else subprocess.DEVNULL,
                                stderr=stderr)
    except OSError as exc:
        return {"loop": loop, "wall": 0.0, "user": 0.0, "sys": 0.0, "cpu": 0.0,
                "maxrss_kib": 0, "maxrss_floor_kib": rss_floor, "exit_code": None,
                "status": f"error: {exc}", "stderr": ""}

    def kill_on_timeout():
        timed_out.set()
        kill_process_group(proc.pid)

    timer = threading.Timer(timeout, kill_on_timeout) if timeout else None
    try:
        if timer:
            timer.start()
        # wait4 rather than Popen.wait: it also returns the child's rusage
        # (which includes the grandchildren it waited for).
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:  # e.g. Ctrl-C: the child has its own session, end it too
        kill_process_group(proc.pid)
        proc.wait()
        raise
    finally:
        if timer:
            timer.cancel()
    wall = time.perf_counter() - started
    proc.returncode = exit_code = os.waitstatus_to_exitcode(status)
    if timed_out.is_set():
        status_text = "timeout"
    elif exit_code < 0:
        status_text = signal.Signals(-exit_code).name
    else:
        status_text = str(exit_code)
    tail = ""
    if stderr is not None:
        if exit_code != 0:
            stderr.seek(0)
            tail = stderr.read()[-2000:].decode(errors="replace")
        stderr.close()
    return {"loop": loop, "wall": wall, "user": usage.ru_utime, "sys": usage.ru_stime,
            "cpu": usage.ru_utime + usage.ru_stime, "maxrss_kib": usage.ru_maxrss,
            "maxrss_floor_kib": rss_floor,
            "exit_code": exit_code, "status": status_text, "stderr": tail}


def ratio_bases(summary, loops):
    """The loops ratios are relative to: the first one compared and uvloop,
    where every run of it exited 0 (a ratio to a failed run means nothing)."""
    return [base for base in dict.fromkeys([loops[0], "uvloop"])
            if base in summary and summary[base]["status"] == ["0"]]


def summarize(samples, loops):
    summary = {}
    for loop in loops:
        mine = [s for s in samples if s["loop"] == loop]
        entry = {"runs": len(mine), "status": sorted({s["status"] for s in mine})}
        for key in ("wall", "cpu", "maxrss_kib"):
            values = [s[key] for s in mine]
            entry[key] = {"min": min(values), "median": statistics.median(values),
                          "max": max(values)}
        entry["maxrss_floor_kib"] = max(s["maxrss_floor_kib"] for s in mine)
        summary[loop] = entry
    # Ratios pair the runs of one round (run i of this loop against run i of
    # the base, taken back to back): the machine's state drifts between
    # rounds, so a ratio of medians can mix rounds taken in different states.
    for base in ratio_bases(summary, loops):
        base_runs = {s["run"]: s for s in samples if s["loop"] == base}
        for loop in loops:
            for key in ("wall", "cpu"):
                ratios = [s[key] / base_runs[s["run"]][key] for s in samples
                          if s["loop"] == loop and base_runs.get(s["run"], {}).get(key)]
                summary[loop][f"{key}_vs_{base}"] = (statistics.median(ratios) if ratios
                                                     else None)
    return summary


def format_table(rows):
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


RSS_FLOOR_NOTE = ("<=: peak RSS not above what this process had when it forked the "
                  "child (Linux keeps that high-water mark across exec): only a bound")


def compare_table(summary, loops):
    def triple(stats, scale=1.0, digits=3, floor=None):
        return "/".join(("<=" if floor is not None and stats[k] <= floor else "")
                        + f"{stats[k] * scale:.{digits}f}" for k in ("min", "median", "max"))

    bases = ratio_bases(summary, loops)
    header = ["loop", "wall s min/med/max", "cpu s min/med/max", "peak RSS MiB min/med/max"]
    for base in bases:
        header += [f"wall/{base}", f"cpu/{base}"]
    rows = [header + ["exit"]]
    for loop in loops:
        entry = summary[loop]
        row = [loop, triple(entry["wall"]), triple(entry["cpu"]),
               triple(entry["maxrss_kib"], 1 / 1024, digits=1, floor=entry["maxrss_floor_kib"])]
        for base in bases:
            for key in ("wall", "cpu"):
                ratio = entry[f"{key}_vs_{base}"]
                row.append("-" if ratio is None else f"{ratio:.2f}x")
        rows.append(row + [",".join(entry["status"])])
    table = format_table(rows)
    return table + ("\n" + RSS_FLOOR_NOTE if "<=" in table else "")


def compare(args, parser):
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    loops = [name.strip() for name in args.loops.split(",") if name.strip()]
    unknown = sorted(set(loops) - set(LOOPS))
    if unknown or not loops:
        parser.error(f"unknown loop(s) {', '.join(unknown)}; choose from {', '.join(LOOPS)}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    # Only loops this interpreter can run: uvloop is optional, and zcloop needs
    # io_uring.  Each skipped one is named with the reason.
    skipped = {loop: reason for loop in loops if (reason := loop_unavailable(loop))}
    for loop, reason in skipped.items():
        print(f"skipping {loop}: {reason}", file=sys.stderr, flush=True)
    loops = [loop for loop in loops if loop not in skipped]
    if not loops:
        raise CliError("no loop left to compare")

    samples, total, shown_errors = [], args.runs * len(loops), set()
    for run in range(args.runs):
        # Round robin, so slow drifts of the machine hit every loop alike.
        for loop in loops:
            sample = run_once(command, loop, timeout=args.timeout, show_output=args.show_output)
            sample["run"] = run + 1
            samples.append(sample)
            note = "" if sample["status"] == "0" else f" (exit {sample['status']})"
            print(f"[{len(samples)}/{total}] {loop} run {run + 1}: {sample['wall']:.3f}s{note}",
                  file=sys.stderr, flush=True)
            if sample["stderr"] and loop not in shown_errors:
                shown_errors.add(loop)
                print(f"--- {loop} stderr (tail) ---\n{sample['stderr'].rstrip()}\n---",
                      file=sys.stderr, flush=True)

    summary = summarize(samples, loops)
    print(f"command: {subprocess.list2cmdline(command)}  ({args.runs} run(s) per loop)")
    print(compare_table(summary, loops))
    for loop, reason in skipped.items():
        print(f"skipped {loop}: {reason}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": command, "loops": loops, "skipped": skipped,
                       "runs": args.runs, "samples": samples, "summary": summary}, f, indent=2)
    return 0 if all(s["exit_code"] == 0 for s in samples) else 1


# --------------------------------------------------------------------- main

def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m zcloop",
        description="Run asyncio programs on zcloop, or compare event loops on one command.")
    parser.add_argument("--version", action="version", version=f"zcloop {version()}")
    commands = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run", help="run an unmodified asyncio program on zcloop",
        description="Run a script or module like `python script.py` / `python -m module`, "
                    "with the event loop policy installed first, so asyncio.run() uses the "
                    "chosen loop.",
        usage="python -m zcloop run [--loop LOOP] [--fallback] (script.py | -m module) [args ...]")
    run.add_argument("--loop", choices=LOOPS, default="zcloop",
                     help="event loop to install (default: %(default)s)")
    run.add_argument("--fallback", action="store_true",
                     help="if io_uring is unavailable, warn and use asyncio's loop")
    run.add_argument("-m", dest="module", nargs=argparse.REMAINDER, metavar="MODULE ...",
                     help="run a library module as a script (rest of the line is its argv)")
    run.add_argument("script", nargs="?", help="path of the script to run")
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the program")
    run.set_defaults(handler=run_program, subparser=run)

    cmp = commands.add_parser(
        "compare", help="run a command once per event loop and compare time, CPU and memory",
        description="Run COMMAND on each loop (round robin, --runs times) and print wall time, "
                    "user+sys CPU and peak RSS of the child (min/median/max) with the median "
                    "of the per-run ratios (run i of each loop against run i of the base, taken "
                    "back to back). The loop is forced on any Python child (python, pytest, "
                    f"uvicorn ...) via a sitecustomize shim and {LOOP_ENV}.",
        epilog="Programs that stream over loopback TCP: one other busy process on the "
               "machine (a build, a test run) halves them while it runs, so compare on a "
               "quiet machine; and their speed depends on the TCP congestion control "
               "(sysctl net.ipv4.tcp_congestion_control: bbr on loopback reorders and "
               "retransmits, cubic does not), so keep it the same for every loop. On a VM "
               "the host can change the speed of a loopback transfer several-fold from one "
               "second to the next (docs/benchmarks.md, 'Interleaved slices'): there, use "
               "many short runs (--runs 20 or more) and trust a ratio only when its range "
               "over them holds "
               "(docs/benchmarks.md, 'The two modes of large transfers').",
        usage="python -m zcloop compare [options] -- COMMAND ...")
    cmp.add_argument("--loops", default="asyncio,uvloop,zcloop",
                     help="comma-separated loops to compare (default: %(default)s; "
                          "those not usable here are skipped, with the reason)")
    cmp.add_argument("--runs", type=int, default=3, help="runs per loop (default: %(default)s)")
    cmp.add_argument("--json", metavar="FILE", help="write raw samples and the summary here")
    cmp.add_argument("--timeout", type=float, metavar="S",
                     help="kill a run after S seconds (reported as 'timeout')")
    cmp.add_argument("--show-output", action="store_true",
                     help="pass the command's stdout/stderr through instead of hiding it")
    cmp.add_argument("command", nargs=argparse.REMAINDER, help="the command to run")
    cmp.set_defaults(handler=compare, subparser=cmp)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args, args.subparser)
    except CliError as exc:
        args.subparser.exit(exc.status, f"{args.subparser.prog}: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())

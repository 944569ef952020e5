#!/usr/bin/env python3
"""Run uvloop's and anyio's own test suites on asyncio, uvloop and zcloop.

`make test-peers` runs this.  It downloads the pinned sdists (cached under
.peers/), installs the suites' test dependencies, runs every test file of
both suites once per loop (one pytest process per file, a per-test timeout,
a watchdog that kills a stuck process and resumes after the stuck test), reruns
the tests that pass on asyncio but not on zcloop, and prints the counts and the
per-test differences.  Exit status 1 when zcloop fails a test that asyncio
passes and that is not listed in tests/peers/uvloop-only.txt.

The loop is chosen inside each suite by tests/peers/zcloop_peers.py (see there
for what it patches); results are JSON lines in .peers/results/.
"""

import argparse
import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS = os.path.join(ROOT, ".peers")
PLUGIN_DIR = os.path.join(ROOT, "tests", "peers")
UVLOOP_ONLY = os.path.join(PLUGIN_DIR, "uvloop-only.txt")

UVLOOP_VERSION = "0.23.0"
ANYIO_VERSION = "4.16.0"
SUITES = {"uvloop": UVLOOP_VERSION, "anyio": ANYIO_VERSION}
LOOPS = ("asyncio", "zcloop", "uvloop")
# Informational, not in the default set: uvloop's UV classes with zcloop as
# their loop (tests/peers/uvloop-only.txt says what they check).
EXTRA_LOOPS = ("zcloop-uv",)

# Installed with --no-deps into .peers/site (first on the path of the runs):
# the versions both suites were released against, plus anyio's test extras.
SITE_PINS = [
    f"uvloop=={UVLOOP_VERSION}",      # uvloop's tests import uvloop._testbase from the wheel
    f"anyio=={ANYIO_VERSION}",
    "typing_extensions==4.16.0",      # anyio 4.16 needs >= 4.16
    "pytest-mock==3.17.0",
    "truststore==0.10.5",
    "blockbuster==1.5.29",
    "forbiddenfruit==0.1.4",          # blockbuster's dependency
    "pyOpenSSL==26.4.0",              # uvloop's test_tcp.py (uvloop pins ~=26.4.0)
    "cryptography==50.0.2",           # pyOpenSSL 26.4 needs >= 49
    "trio==0.35.0",                   # the pytest sessions of anyio's test_pytest_plugin.py
]                                     # run on every installed backend; anyio needs >= 0.32
# Taken from the current Python when importable, else pip-installed into it.
PYTHON_NEEDS = {
    "pytest": "pytest>=9",            # anyio's pyproject uses the [tool.pytest] table
    "pytest_timeout": "pytest-timeout>=2.4",
    "trustme": "trustme",
    "hypothesis": "hypothesis",
    "psutil": "psutil",
    "aiohttp": "aiohttp",             # uvloop's test_aiohttp.py
}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


# --- setup ------------------------------------------------------------------

def src_dir(suite):
    return os.path.join(PEERS, "src", f"{suite}-{SUITES[suite]}")


def setup():
    missing = []
    for module, req in PYTHON_NEEDS.items():
        try:
            __import__(module)
        except ImportError:
            missing.append(req)
    if missing:
        log("installing", *missing)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *missing])

    site = os.path.join(PEERS, "site")
    stamp = os.path.join(site, ".pins")
    if not os.path.exists(stamp) or open(stamp).read() != "\n".join(SITE_PINS):
        log("installing into .peers/site:", *SITE_PINS)
        shutil.rmtree(site, ignore_errors=True)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                               "--target", site, *SITE_PINS])
        with open(stamp, "w") as f:
            f.write("\n".join(SITE_PINS))

    cache = os.path.join(PEERS, "cache")
    for suite, version in SUITES.items():
        tarball = os.path.join(cache, f"{suite}-{version}.tar.gz")
        if not os.path.exists(tarball):
            log(f"downloading the {suite} {version} sdist")
            subprocess.check_call([sys.executable, "-m", "pip", "download", "-q", "--no-binary",
                                   ":all:", "--no-deps", f"{suite}=={version}", "-d", cache])
        dest = src_dir(suite)
        if os.path.isdir(os.path.join(dest, "tests")):
            continue
        # Only tests/ and the pytest configuration: a source tree of the package
        # itself next to the tests would shadow the installed one.
        prefix = f"{suite}-{version}/"
        with tarfile.open(tarball) as tar:
            members = [m for m in tar.getmembers()
                       if m.name.startswith(prefix + "tests/") or m.name == prefix + "pyproject.toml"]
            tar.extractall(os.path.join(PEERS, "src"), members=members)


def test_files(suite):
    tests = os.path.join(src_dir(suite), "tests")
    files = []
    for dirpath, _, names in os.walk(tests):
        for name in names:
            if name.startswith("test_") and name.endswith(".py"):
                files.append(os.path.relpath(os.path.join(dirpath, name), src_dir(suite)))
    # Biggest first, so the long files do not finish last.
    return sorted(files, key=lambda f: -os.path.getsize(os.path.join(src_dir(suite), f)))


# --- running ----------------------------------------------------------------

def results_path(suite, loop):
    return os.path.join(PEERS, "results", f"{suite}-{loop}.jsonl")


def read_records(path):
    records = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    pass  # a line cut by a kill
    return records


def env_for(suite, loop, out, done=None):
    env = dict(os.environ)
    path = [ROOT, PLUGIN_DIR, os.path.join(PEERS, "site")]
    if env.get("PYTHONPATH"):
        path.append(env["PYTHONPATH"])
    env.update(PYTHONPATH=os.pathsep.join(path), ZCLOOP_PEERS_SUITE=suite,
               ZCLOOP_PEERS_LOOP=loop, ZCLOOP_PEERS_OUT=out, PYTHONFAULTHANDLER="1")
    if suite == "anyio":
        # As anyio's own tox setup: only the plugins its addopts name (-p anyio,
        # pytest_mock, timeout), also in the pytest sessions its tests start.
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env.pop("ZCLOOP_PEERS_DONE", None)
    if done:
        env["ZCLOOP_PEERS_DONE"] = done
    return env


def pytest_cmd(args, timeout):
    # -p no:asyncio: pytest-asyncio (zcloop's own test dependency) is no part of
    # either suite's setup; anyio's configuration says the same.
    return [sys.executable, "-m", "pytest", "-p", "zcloop_peers", "-p", "no:cacheprovider",
            "-p", "no:asyncio", f"--timeout={timeout}", "-q", "-rN", *args]


def _default_signals():
    # A driver started with nohup or `&` from a script ignores SIGHUP, SIGINT
    # and SIGQUIT, and children inherit that: uvloop's SIGINT and send_signal
    # tests would then hang on every loop.
    for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


def run_pytest(suite, loop, args, out, logfile, timeout, done=None):
    """One pytest process; killed when no test finishes for 2 timeouts."""
    with open(logfile, "ab") as logf:
        proc = subprocess.Popen(pytest_cmd(args, timeout), cwd=src_dir(suite),
                                env=env_for(suite, loop, out, done), stdout=logf,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_default_signals)
        last_size, last_change = -1, time.monotonic()
        while True:
            try:
                return proc.wait(timeout=5), False
            except subprocess.TimeoutExpired:
                pass
            size = os.path.getsize(out) if os.path.exists(out) else 0
            if size != last_size:
                last_size, last_change = size, time.monotonic()
            elif time.monotonic() - last_change > 2 * timeout + 60:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return proc.returncode, True


def run_file(suite, loop, relfile, timeout):
    """Run one test file to completion, stepping over tests that hang or crash."""
    work = os.path.join(PEERS, "work", f"{suite}-{loop}")
    os.makedirs(work, exist_ok=True)
    stem = relfile.replace("/", "_")
    out = os.path.join(work, stem + ".jsonl")
    done_file = os.path.join(work, stem + ".done")
    logfile = os.path.join(work, stem + ".log")
    for path in (out, done_file, logfile):
        if os.path.exists(path):
            os.remove(path)
    for attempt in range(20):
        rc, killed = run_pytest(suite, loop, [relfile], out, logfile, timeout,
                                done_file if attempt else None)
        records = read_records(out)
        finished = {r["test"] for r in records if "test" in r}
        started = [r["start"] for r in records if "start" in r]
        collected = set()
        for r in records:
            collected.update(r.get("collected", ()))
        stuck = [t for t in started if t not in finished]
        if stuck:
            outcome = "hang" if killed else "crash"
            with open(out, "a") as f:
                f.write(json.dumps({"test": stuck[-1], "outcome": outcome, "duration": None,
                                    "message": f"pytest process {'killed by the watchdog' if killed else f'exited with {rc}'}"
                                    }) + "\n")
            finished.add(stuck[-1])
        if not collected and rc not in (0, 1, 5):
            with open(out, "a") as f:
                f.write(json.dumps({"test": relfile + "::<collection>", "outcome": "error",
                                    "duration": None, "message": f"pytest exited with {rc} "
                                    f"before collecting (see {os.path.relpath(logfile, ROOT)})"}) + "\n")
            break
        if not (collected - finished) or not stuck:
            break
        with open(done_file, "w") as f:
            f.write("\n".join(sorted(finished)) + "\n")
    return [r for r in read_records(out) if "test" in r]


def run_suite(suite, loop, files, timeout, jobs, merge=False):
    """Run `files` on `loop`; with merge, keep the recorded results of the other files."""
    t0 = time.monotonic()
    records = []
    if merge:
        records = [r for r in load(suite, loop).values() if r["test"].split("::")[0] not in files]
    lock = threading.Lock()
    with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
        futures = {pool.submit(run_file, suite, loop, f, timeout): f for f in files}
        for future in concurrent.futures.as_completed(futures):
            recs = future.result()
            with lock:
                records.extend(recs)
            counts = count(recs)
            log(f"  {suite}/{loop} {futures[future]}: " +
                " ".join(f"{k}={v}" for k, v in counts.items() if v))
    os.makedirs(os.path.join(PEERS, "results"), exist_ok=True)
    with open(results_path(suite, loop), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return time.monotonic() - t0


# --- reporting --------------------------------------------------------------

FAILING = ("failed", "error", "timeout", "hang", "crash")
COLUMNS = ("passed", "failed", "error", "timeout", "hang", "crash", "skipped", "xfailed", "xpassed")


def count(records):
    counts = dict.fromkeys(COLUMNS, 0)
    for r in records:
        counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    return counts


def load(suite, loop):
    return {r["test"]: r for r in read_records(results_path(suite, loop)) if "test" in r}


def uvloop_only():
    listed = {}
    if os.path.exists(UVLOOP_ONLY):
        with open(UVLOOP_ONLY) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    nodeid, _, reason = line.partition("#")
                    listed[nodeid.strip()] = reason.strip()
    return listed


def differences(suite):
    base, zc = load(suite, "asyncio"), load(suite, "zcloop")
    diffs = []
    for nodeid, r in sorted(base.items()):
        if r["outcome"] != "passed":
            continue
        z = zc.get(nodeid)
        if z is None:
            diffs.append((nodeid, {"outcome": "missing", "message": "not run on zcloop"}))
        elif z["outcome"] in FAILING:
            diffs.append((nodeid, z))
    return diffs


def rerun(suite, diffs, timeout):
    """Run each difference again on zcloop (one process per file); return the still-failing."""
    by_file = {}
    for nodeid, _ in diffs:
        by_file.setdefault(nodeid.split("::")[0], []).append(nodeid)
    confirmed = {}
    work = os.path.join(PEERS, "work", f"{suite}-zcloop-rerun")
    os.makedirs(work, exist_ok=True)
    for relfile, nodeids in by_file.items():
        stem = relfile.replace("/", "_")
        out = os.path.join(work, stem + ".jsonl")
        if os.path.exists(out):
            os.remove(out)
        for nodeid in nodeids:  # one at a time: a hang must not hide the others
            run_pytest(suite, "zcloop", [nodeid], out, os.path.join(work, stem + ".log"), timeout)
            recs = {r["test"]: r for r in read_records(out) if "test" in r}
            r = recs.get(nodeid, {"outcome": "hang", "message": "no result on rerun"})
            confirmed[nodeid] = r
    return confirmed


def report(suites, loops, durations, reruns):
    lines = []
    lines.append(f"peer suites: uvloop {UVLOOP_VERSION} (AIO classes for asyncio/zcloop, UV "
                 f"classes for uvloop), anyio {ANYIO_VERSION} (asyncio backend)")
    lines.append("")
    header = f"{'suite':7} {'loop':8} " + " ".join(f"{c:>7}" for c in COLUMNS) + f" {'total':>6} {'time':>7}"
    lines.append(header)
    for suite in suites:
        for loop in loops:
            recs = list(load(suite, loop).values())
            if not recs:
                continue
            c = count(recs)
            d = durations.get((suite, loop))
            lines.append(f"{suite:7} {loop:8} " + " ".join(f"{c.get(k, 0):>7}" for k in COLUMNS) +
                         f" {len(recs):>6} {f'{d:.0f}s' if d else '':>7}")
    listed = uvloop_only()
    status = 0
    judged = failed = 0     # tests asyncio passes; of those, zcloop fails
    for suite in suites:
        if "zcloop" not in loops or "asyncio" not in loops:
            continue
        diffs = differences(suite)
        judged += sum(1 for r in load(suite, "asyncio").values() if r["outcome"] == "passed")
        confirmed = reruns.get(suite)
        lines.append("")
        lines.append(f"== {suite}: {len(diffs)} tests pass on asyncio but not on zcloop ==")
        for nodeid, z in diffs:
            tag = ""
            if nodeid in listed:
                tag = f"  [uvloop-only: {listed[nodeid]}]"
            elif confirmed is not None:
                again = confirmed.get(nodeid)
                if again is not None and again["outcome"] not in FAILING:
                    tag = f"  [flaky: {again['outcome']} on rerun]"
                else:
                    status = 1
                    failed += 1
            else:
                status = 1
                failed += 1
            lines.append(f"{z['outcome']:8} {nodeid}{tag}")
            if z.get("message"):
                lines.append(f"         {z['message'][:200]}")
        base, zc = load(suite, "asyncio"), load(suite, "zcloop")
        both = sorted(n for n, r in base.items() if r["outcome"] in FAILING
                      and zc.get(n, {}).get("outcome") in FAILING)
        lines.append(f"-- {suite}: {len(both)} tests fail on asyncio and on zcloop --")
        for nodeid in both:
            lines.append(f"{base[nodeid]['outcome']:8} {nodeid}")
            lines.append(f"         {base[nodeid].get('message', '')[:200]}")
        only_zc = sorted(n for n, r in zc.items() if r["outcome"] == "passed"
                         and base.get(n, {}).get("outcome") in FAILING)
        lines.append(f"-- {suite}: {len(only_zc)} tests fail on asyncio but pass on zcloop --")
        lines.extend(f"         {n}" for n in only_zc)
        skipped_zc = sorted(n for n, r in zc.items() if r["outcome"] == "skipped"
                            and base.get(n, {}).get("outcome") == "passed")
        if skipped_zc:
            lines.append(f"-- {suite}: {len(skipped_zc)} tests pass on asyncio, skip on zcloop --")
            for n in skipped_zc:
                lines.append(f"         {n}: {zc[n].get('message', '')[:150]}")
    text = "\n".join(lines) + "\n"
    os.makedirs(PEERS, exist_ok=True)
    with open(os.path.join(PEERS, "report.txt"), "w") as f:
        f.write(text)
    print(text, end="")
    # The verdict as a test runner's closing line: of the tests asyncio
    # passes, how many zcloop passes (flaky and uvloop-only ones aside).
    verdict = f"peers: {judged - failed} passed, {failed} failed" if judged else None
    return status, verdict


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="append", choices=sorted(SUITES),
                        help="suite to run (repeatable; default both)")
    parser.add_argument("--loop", action="append", choices=LOOPS + EXTRA_LOOPS,
                        help="loop to run on (repeatable; default all three)")
    parser.add_argument("--files", nargs="*", help="only these test files (e.g. tests/test_tcp.py)")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="pytest processes at once")
    parser.add_argument("--timeout", type=int, default=60, help="per-test timeout (s)")
    parser.add_argument("--no-rerun", action="store_true",
                        help="do not rerun the differences to tell flaky ones apart")
    parser.add_argument("--report-only", action="store_true",
                        help="print the report of the results already in .peers/results")
    args = parser.parse_args()
    suites = args.suite or list(SUITES)
    loops = args.loop or list(LOOPS)

    durations = {}
    reruns = {}
    t0 = time.monotonic()
    if not args.report_only:
        setup()
        for suite in suites:
            files = test_files(suite)
            if args.files:
                files = [f for f in files if f in args.files or os.path.basename(f) in args.files]
            for loop in loops:
                if loop in EXTRA_LOOPS and suite != "uvloop":
                    continue
                log(f"{suite} on {loop}: {len(files)} files")
                durations[(suite, loop)] = run_suite(suite, loop, files, args.timeout, args.jobs,
                                                     merge=bool(args.files))
        if not args.no_rerun and "zcloop" in loops and "asyncio" in loops:
            for suite in suites:
                diffs = [d for d in differences(suite) if d[0] not in uvloop_only()]
                if diffs:
                    log(f"rerunning {len(diffs)} {suite} differences on zcloop")
                    reruns[suite] = rerun(suite, diffs, args.timeout)
    status, verdict = report(suites, loops, durations, reruns)
    if not args.report_only:
        print(f"total time {time.monotonic() - t0:.0f}s")
    if verdict:
        print(verdict)
    return status


if __name__ == "__main__":
    sys.exit(main())

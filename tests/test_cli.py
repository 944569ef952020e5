"""``python -m zcloop run`` / ``compare`` and the sitecustomize shim, run for real
in subprocesses.  No assertion is about timings."""
import functools
import importlib.util
import json
import os
import runpy
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The zcloop package under test: this checkout's, or the installed one when the
# tests run from a copy outside the source tree (scripts/build-wheels.sh).
# Located without importing it: the compiled core may be missing.
PACKAGE = Path(importlib.util.find_spec("zcloop").submodule_search_locations[0])
INJECT_DIR = PACKAGE / "_inject"
LOOP_MODULE = {"asyncio": "asyncio", "uvloop": "uvloop", "zcloop": "zcloop"}

REPORT_LOOP = """
import asyncio, json, sys
async def main():
    loop = type(asyncio.get_running_loop())
    print(json.dumps({"module": loop.__module__, "name": loop.__name__, "argv": sys.argv,
                      "path0": sys.path[0], "main": __name__}))
asyncio.run(main())
"""


def child_env(**extra):
    # This checkout's zcloop, whether or not it is installed.
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@functools.lru_cache(maxsize=None)
def zcloop_import_error():
    probe = subprocess.run([sys.executable, "-c", "import zcloop"], env=child_env(),
                           capture_output=True, text=True, timeout=60)
    return None if probe.returncode == 0 else probe.stderr.strip().splitlines()[-1]


def cli(*args, cwd=None, timeout=120):
    """Run the CLI.  `python -m zcloop` needs the compiled core; without it the
    same code runs as a script, so the asyncio/uvloop paths stay tested."""
    if zcloop_import_error():
        command = [sys.executable, str(PACKAGE / "_cli.py")]
    else:
        command = [sys.executable, "-m", "zcloop"]
    return subprocess.run([*command, *args], cwd=cwd, env=child_env(), capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(params=["asyncio", "uvloop", "zcloop"])
def loop_name(request):
    if request.param == "zcloop" and (error := zcloop_import_error()):
        pytest.skip(f"import zcloop fails: {error}")
    return request.param


def last_json(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def test_run_script(tmp_path, loop_name):
    script = tmp_path / "app.py"
    script.write_text(REPORT_LOOP)
    done = cli("run", "--loop", loop_name, str(script), "a", "--loop", "-m", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    report = last_json(done.stdout)
    assert report["module"].startswith(LOOP_MODULE[loop_name])
    assert report["argv"] == [str(script), "a", "--loop", "-m"]
    assert report["path0"] == str(tmp_path)
    assert report["main"] == "__main__"


def test_run_module(tmp_path, loop_name):
    (tmp_path / "appmod.py").write_text(REPORT_LOOP)
    done = cli("run", "--loop", loop_name, "-m", "appmod", "x", "-y", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = last_json(done.stdout)
    assert report["module"].startswith(LOOP_MODULE[loop_name])
    assert report["argv"] == [str(tmp_path / "appmod.py"), "x", "-y"]
    assert report["main"] == "__main__"


def test_run_defaults_to_zcloop(tmp_path):
    if error := zcloop_import_error():
        pytest.skip(f"import zcloop fails: {error}")
    script = tmp_path / "app.py"
    script.write_text(REPORT_LOOP)
    done = cli("run", str(script))
    assert done.returncode == 0, done.stderr
    assert last_json(done.stdout)["module"].startswith("zcloop")


def test_python_m_zcloop_help():
    if error := zcloop_import_error():
        pytest.skip(f"import zcloop fails: {error}")
    done = subprocess.run([sys.executable, "-m", "zcloop", "--help"], env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert "run" in done.stdout and "compare" in done.stdout


def test_run_propagates_exit_status(tmp_path):
    (tmp_path / "exit3.py").write_text("import sys; sys.exit(3)\n")
    (tmp_path / "boom.py").write_text("raise RuntimeError('boom')\n")
    assert cli("run", "--loop", "asyncio", str(tmp_path / "exit3.py")).returncode == 3
    done = cli("run", "--loop", "asyncio", str(tmp_path / "boom.py"))
    assert done.returncode == 1
    assert "RuntimeError: boom" in done.stderr


def test_run_without_program_is_a_usage_error():
    done = cli("run", "--loop", "asyncio")
    assert done.returncode == 2
    assert "usage" in done.stderr


def loop_logging_command(log):
    """A command appending the module of the loop asyncio.run() uses to `log`."""
    code = ("import asyncio, sys\n"
            "async def main():\n"
            "    print(type(asyncio.get_running_loop()).__module__, file=open(sys.argv[1], 'a'))\n"
            "asyncio.run(main())\n")
    return [sys.executable, "-c", code, str(log)]


def test_compare_table(tmp_path):
    log = tmp_path / "loops.log"
    done = cli("compare", "--runs", "1", "--loops", "asyncio,uvloop", "--",
               *loop_logging_command(log))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    header = next(line for line in lines if line.startswith("loop"))
    assert "wall" in header and "cpu" in header and "RSS" in header
    assert "wall/asyncio" in header and "wall/uvloop" in header
    assert table_row(done.stdout, "asyncio")[-1] == "0"
    assert table_row(done.stdout, "uvloop")[-1] == "0"
    # The shim really put each loop under the unmodified program, in round-robin order.
    assert [line.split(".")[0] for line in log.read_text().split()] == ["asyncio", "uvloop"]
    assert "[2/2] uvloop run 1" in done.stderr


def test_compare_json(tmp_path):
    out = tmp_path / "compare.json"
    done = cli("compare", "--runs", "2", "--loops", "uvloop,asyncio", "--json", str(out), "--",
               sys.executable, "-c", "pass")
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert data["loops"] == ["uvloop", "asyncio"]
    assert [(s["loop"], s["run"]) for s in data["samples"]] == [
        ("uvloop", 1), ("asyncio", 1), ("uvloop", 2), ("asyncio", 2)]
    for sample in data["samples"]:
        assert sample["exit_code"] == 0
        assert sample["wall"] > 0 and sample["maxrss_kib"] > 0
    summary = data["summary"]["asyncio"]
    assert set(summary["wall"]) == {"min", "median", "max"}
    assert summary["wall_vs_uvloop"] > 0
    assert data["summary"]["uvloop"]["cpu_vs_uvloop"] == 1.0


def table_row(stdout, loop):
    return next(line for line in stdout.splitlines() if line.startswith(loop + " ")).split()


def test_compare_reports_failures_and_timeouts(tmp_path):
    done = cli("compare", "--runs", "1", "--loops", "asyncio", "--",
               sys.executable, "-c", "import sys; print('bad', file=sys.stderr); sys.exit(4)")
    assert done.returncode == 1
    assert table_row(done.stdout, "asyncio")[-1] == "4"
    assert "bad" in done.stderr  # the failing run's stderr is shown

    done = cli("compare", "--runs", "1", "--loops", "asyncio", "--timeout", "1", "--",
               sys.executable, "-c", "import time; time.sleep(60)")
    assert done.returncode == 1
    assert table_row(done.stdout, "asyncio")[-1] == "timeout"


def test_compare_zcloop(tmp_path):
    if error := zcloop_import_error():
        pytest.skip(f"import zcloop fails: {error}")
    log = tmp_path / "loops.log"
    done = cli("compare", "--runs", "1", "--loops", "zcloop", "--", *loop_logging_command(log))
    assert done.returncode == 0, done.stderr
    assert log.read_text().startswith("zcloop")


def test_sitecustomize_chains_to_the_one_it_shadows(tmp_path):
    (tmp_path / "sitecustomize.py").write_text("import builtins; builtins.CHAINED = True\n")
    code = ("import asyncio, builtins, sys\n"
            "async def main(): return type(asyncio.get_running_loop()).__module__\n"
            "print(asyncio.run(main()), getattr(builtins, 'CHAINED', False),"
            f" any('_inject' in p for p in sys.path))\n")
    env = dict(os.environ, ZCLOOP_LOOP="uvloop",
               PYTHONPATH=os.pathsep.join([str(INJECT_DIR), str(tmp_path)]))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["uvloop", "True", "False"]


def test_sitecustomize_refuses_unknown_loop():
    env = dict(os.environ, ZCLOOP_LOOP="nosuchloop", PYTHONPATH=str(INJECT_DIR))
    done = subprocess.run([sys.executable, "-c", "print('ran')"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "ran" not in done.stdout
    assert "nosuchloop" in done.stderr


# ------------------------------------------- friendly errors, --version, skips

def assert_one_line_error(done, status, text):
    assert done.returncode == status, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0], done.stderr


def test_version():
    done = cli("--version")
    assert done.returncode == 0, done.stderr
    version = runpy.run_path(str(PACKAGE / "_version.py"))["__version__"]
    assert done.stdout.split() == ["zcloop", version]


def test_run_missing_script_like_python(tmp_path):
    """Python's own status (2) and wording, in one line."""
    missing = tmp_path / "missing.py"
    python = subprocess.run([sys.executable, str(missing)], capture_output=True, text=True,
                            timeout=60)
    reason = python.stderr.strip().split(": ", 1)[1]  # after "/path/to/python: "
    assert_one_line_error(cli("run", "--loop", "asyncio", str(missing)), python.returncode,
                          reason)


@pytest.mark.parametrize("module", ["no_such_module_xyz", "no_such_pkg_xyz.sub", "email"])
def test_run_missing_module_like_python(tmp_path, module):
    python = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)
    assert python.returncode == 1
    # Python words a missing parent package as "Error while finding module
    # specification for ... (ModuleNotFoundError: No module named ...)".
    reason = python.stderr.strip().rsplit("No module named ", 1)[1].rstrip(")")
    done = cli("run", "--loop", "asyncio", "-m", module, cwd=tmp_path)
    assert_one_line_error(done, 1, "No module named " + reason)


@pytest.fixture(scope="module")
def no_uvloop(tmp_path_factory):
    """(python, env) of an interpreter that has zcloop but not uvloop: a
    venv without site packages, zcloop put on its path via a symlink."""
    base = tmp_path_factory.mktemp("no-uvloop")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(base / "venv")],
                   check=True, timeout=120)
    (base / "path").mkdir()
    (base / "path" / "zcloop").symlink_to(PACKAGE, target_is_directory=True)
    python = str(base / "venv" / "bin" / "python")
    env = dict(os.environ, PYTHONPATH=str(base / "path"))
    probe = subprocess.run([python, "-c", "import uvloop"], env=env, capture_output=True,
                           timeout=60)
    assert probe.returncode != 0
    return python, env


def test_run_missing_loop(tmp_path, no_uvloop):
    python, env = no_uvloop
    script = tmp_path / "app.py"
    script.write_text(REPORT_LOOP)
    done = subprocess.run([python, "-m", "zcloop", "run", "--loop", "uvloop", str(script)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert_one_line_error(done, 1, "uvloop is not installed")


def test_compare_skips_loops_not_installed(no_uvloop):
    """Default loops without uvloop: uvloop skipped and named, ratios only
    against asyncio (which ran)."""
    if error := zcloop_import_error():
        pytest.skip(f"import zcloop fails: {error}")
    python, env = no_uvloop
    done = subprocess.run([python, "-m", "zcloop", "compare", "--runs", "1", "--",
                           python, "-c", "pass"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "skipping uvloop: uvloop is not installed" in done.stderr
    assert "skipped uvloop: uvloop is not installed" in done.stdout
    header = next(line for line in done.stdout.splitlines() if line.startswith("loop"))
    assert "wall/asyncio" in header and "uvloop" not in header
    rows = [line.split()[0] for line in done.stdout.splitlines()
            if line.split() and line.split()[0] in LOOP_MODULE]
    assert rows == ["asyncio", "zcloop"]


def test_compare_ratios_only_against_successful_runs():
    """asyncio (the first loop, the usual base) fails: no ratio to it."""
    code = ("import asyncio, sys\n"
            "async def main(): return type(asyncio.get_running_loop()).__module__\n"
            "sys.exit(asyncio.run(main()).startswith('asyncio'))\n")
    done = cli("compare", "--runs", "1", "--loops", "asyncio,uvloop", "--",
               sys.executable, "-c", code)
    assert done.returncode == 1
    header = next(line for line in done.stdout.splitlines() if line.startswith("loop"))
    assert "wall/asyncio" not in header and "wall/uvloop" in header
    assert table_row(done.stdout, "asyncio")[-1] == "1"


def test_compare_without_any_usable_loop(no_uvloop):
    python, env = no_uvloop
    done = subprocess.run([python, "-m", "zcloop", "compare", "--loops", "uvloop", "--",
                           python, "-c", "pass"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "no loop left to compare" in done.stderr


@pytest.fixture(scope="module")
def noiouring(tmp_path_factory):
    """tests/helpers/noiouring.c: runs a command with io_uring blocked by
    seccomp (as test_fallback.py uses it; not imported from there, since this
    module must load without the compiled core)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    exe = tmp_path_factory.mktemp("helper") / "noiouring"
    proc = subprocess.run([gcc, "-O2", "-o", str(exe), str(ROOT / "tests" / "helpers" / "noiouring.c")],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.skip(f"cannot build the seccomp helper: {proc.stderr}")
    return str(exe)


def test_io_uring_unavailable_names_run_fallback(tmp_path, noiouring):
    if error := zcloop_import_error():
        pytest.skip(f"import zcloop fails: {error}")
    script = tmp_path / "app.py"
    script.write_text(REPORT_LOOP)
    env = child_env()
    for name in ("ZCLOOP_FALLBACK", "ZCLOOP_DISABLE"):
        env.pop(name, None)
    command = [noiouring, sys.executable, "-m", "zcloop", "run"]
    done = subprocess.run([*command, str(script)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert_one_line_error(done, 1, "python -m zcloop run --fallback")
    assert "io_uring" in done.stderr
    # And with it: asyncio's loop, after one warning.
    done = subprocess.run([*command, "--fallback", str(script)], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert last_json(done.stdout)["module"].startswith("asyncio")
    assert "RuntimeWarning" in done.stderr

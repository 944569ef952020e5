"""``python -m zcloop run`` / ``compare`` and the sitecustomize shim, run for real
in subprocesses.  No assertion is about timings."""
import functools
import importlib.util
import json
import os
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

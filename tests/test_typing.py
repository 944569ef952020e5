"""zcloop's type stubs against a real type checker: `mypy --strict` on the
examples and on a typed user program (which also runs, so the types it
relies on are what the runtime returns), misuse that mypy must reject, and
`mypy.stubtest` comparing zcloop/__init__.pyi with the compiled module."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

import zcloop

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TYPING = HERE / "typing"
EXAMPLES = ROOT / "examples"
PACKAGE = Path(zcloop.__file__).parent

pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[test]')")


def env():
    # mypy finds zcloop where this process imports it from (checkout or install).
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(PACKAGE.parent), os.environ.get("PYTHONPATH")])))


def mypy(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "--no-error-summary", *args], capture_output=True, text=True,
                          env=env(), cwd=cwd, timeout=300)


MISUSE = """\
import asyncio
import zcloop

async def main(transport: asyncio.Transport, zc: zcloop.StreamTransport) -> None:
    transport.write_zc(b"x")                       # line 5: not on asyncio's Transport
    handle = zc.write_zc(b"x")
    name: str = await handle.sent                  # line 7: int
    copied: int = await handle.released            # line 8: bool | None
    loop = zcloop.new_event_loop()
    loop.zc_stats()["no_such_key"]                 # line 10: TypedDict key
    zcloop.run(main(transport, zc), fallback=True, loop_factory=zcloop.Loop)  # line 11
"""


@pytest.mark.timeout(300)
def test_mypy_strict(tmp_path):
    """One mypy --strict run: the examples and the typed user program are
    clean; in a program misusing the API (so the stubs carry real types, not
    Any) exactly the wrong lines are reported."""
    misuse = tmp_path / "misuse.py"
    misuse.write_text(MISUSE)
    files = [str(TYPING / "user_program.py"), str(misuse)]
    if EXAMPLES.is_dir():
        files += sorted(str(p) for p in EXAMPLES.glob("*.py"))
    done = mypy(*files)
    errors = [line for line in done.stdout.splitlines() if ": error:" in line]
    assert not [line for line in errors if not line.startswith(str(misuse))], done.stdout
    assert {int(line.split(":")[1]) for line in errors} == {5, 7, 8, 10, 11}, done.stdout


@pytest.mark.timeout(120)
def test_user_program_runs():
    done = subprocess.run([sys.executable, str(TYPING / "user_program.py")], capture_output=True,
                          text=True, env=env(), timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "ok"


@pytest.mark.timeout(300)
def test_stubtest(tmp_path):
    allowlist = TYPING / "stubtest-allowlist.txt"
    # From an empty directory, so `zcloop` is the package under test, not a
    # directory of the current one.
    done = subprocess.run([sys.executable, "-m", "mypy.stubtest", "zcloop", "--allowlist",
                           str(allowlist)], capture_output=True, text=True, env=env(),
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

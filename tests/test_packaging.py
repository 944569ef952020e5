"""What a packager gets: the sdist carries everything needed to build and test
(and nothing generated), and the built extension keeps liburing private."""
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

import zcloop
from zcloop import _ring

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sdist_names(tmp_path_factory):
    pytest.importorskip("build", reason="the 'build' package is not installed")
    if not (ROOT / "setup.py").exists():
        pytest.skip("not a source checkout (tests copied next to an installed wheel)")
    out = tmp_path_factory.mktemp("sdist")
    # --no-isolation: no download; egg_info/sdist need only setuptools.
    done = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation",
                           "--outdir", str(out), str(ROOT)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (tarball,) = out.glob("zcloop-*.tar.gz")
    with tarfile.open(tarball) as tar:
        return {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}


@pytest.mark.timeout(300)
def test_sdist_has_sources_tests_examples_docs(sdist_names):
    tracked = subprocess.run(["git", "ls-files", "zcloop", "tests", "examples", "docs"],
                             cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("git ls-files failed: " + tracked.stderr)
    wanted = {name for name in tracked.stdout.split() if not name.endswith(".gitignore")}
    assert wanted - sdist_names == set()
    for name in ("LICENSE", "README.md", "setup.py", "pyproject.toml", "MANIFEST.in",
                 "zcloop/_ring.pyx", "zcloop/includes/compat.h", "tests/conftest.py",
                 "tests/streamutil.py", "tests/helpers/noiouring.c"):
        assert name in sdist_names, name


@pytest.mark.timeout(300)
def test_sdist_has_nothing_generated(sdist_names):
    generated = [name for name in sdist_names
                 if name.endswith((".so", ".o", ".pyc")) or name == "zcloop/_ring.c"]
    assert generated == []


def test_extension_exports_only_its_init():
    """With liburing linked statically its symbols stay private to the .so
    (-Wl,--exclude-libs,ALL), so they cannot clash with another liburing."""
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("nm (binutils) is not installed")
    linked = subprocess.run(["ldd", _ring.__file__], capture_output=True, text=True).stdout
    if "liburing" in linked:
        pytest.skip("built against the shared liburing (no liburing.a found at build time)")
    if os.environ.get("ZCLOOP_ASAN"):
        pytest.skip("ASan build")
    symbols = subprocess.run([nm, "-D", "--defined-only", _ring.__file__], capture_output=True,
                             text=True, check=True).stdout.split("\n")
    leaked = [line for line in symbols if "uring" in line.lower()]
    assert leaked == []
    assert any(line.endswith(" PyInit__ring") for line in symbols)


def test_version_is_one_string():
    from zcloop._version import __version__

    assert zcloop.__version__ == __version__
    try:
        from importlib.metadata import version
        installed = version("zcloop")
    except Exception:
        pytest.skip("zcloop has no installed metadata")
    if Path(zcloop.__file__).parent.parent == ROOT:
        pytest.skip("metadata belongs to another checkout's install")
    assert installed == __version__

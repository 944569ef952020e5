"""Fallback to asyncio's loop where io_uring is blocked.

io_uring is blocked for real: tests/helpers/noiouring.c installs a seccomp
filter that makes io_uring_setup/enter/register fail (EPERM like Docker's
default profile, or ENOSYS) and then execs Python.
"""
import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import zcloop
from zcloop import _ring

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
HELPER_SRC = os.path.join(HERE, "helpers", "noiouring.c")


@pytest.fixture(scope="module")
def noiouring(tmp_path_factory):
    """Path of the compiled seccomp helper."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    exe = tmp_path_factory.mktemp("helper") / "noiouring"
    proc = subprocess.run([gcc, "-O2", "-Wall", "-o", str(exe), HELPER_SRC],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.skip(f"cannot build the seccomp helper: {proc.stderr}")
    return str(exe)


PRELUDE = """
import asyncio, json, warnings
warnings.simplefilter("always")
import zcloop
def loop_kind(loop):
    return "zcloop" if isinstance(loop, zcloop.Loop) else type(loop).__name__
async def main():
    await asyncio.sleep(0.001)
    return loop_kind(asyncio.get_running_loop())
"""


def run_py(code, *, wrapper=(), env=None, timeout=60):
    """Run Python code (dedented, after PRELUDE) in a child, optionally under
    the helper; return (returncode, stdout, stderr)."""
    code = PRELUDE + textwrap.dedent(code)
    environ = dict(os.environ, PYTHONPATH=ROOT)
    for name in ("ZCLOOP_FALLBACK", "ZCLOOP_DISABLE", "ZCLOOP_DISABLE_FEATURES"):
        environ.pop(name, None)
    environ.update(env or {})
    proc = subprocess.run([*wrapper, sys.executable, "-c", code],
                          env=environ, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def test_helper_really_blocks_io_uring(noiouring):
    """Without zcloop: the raw syscall fails with EPERM (ENOSYS with -e 38)."""
    code = """
    import ctypes, os
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)
    fd = libc.syscall(425, 8, params)
    print(fd, ctypes.get_errno())
    """
    rc, out, err = run_py(code, wrapper=[noiouring])
    assert rc == 0, err
    assert out.split() == ["-1", str(errno.EPERM)]
    rc, out, err = run_py(code, wrapper=[noiouring, "-e", str(errno.ENOSYS)])
    assert out.split() == ["-1", str(errno.ENOSYS)]
    # And the same call works outside the helper.
    rc, out, err = run_py(code)
    assert int(out.split()[0]) >= 0


def test_new_event_loop_raises_under_seccomp(noiouring):
    rc, out, err = run_py("""
    try:
        zcloop.new_event_loop()
    except zcloop.IoUringUnavailableError as exc:
        print(json.dumps([type(exc).__mro__[1].__name__, str(exc)]))
    """, wrapper=[noiouring])
    assert rc == 0, err
    base, msg = json.loads(out)
    assert base == "RuntimeError"
    assert "EPERM" in msg and "seccomp" in msg
    assert "fallback=True" in msg and "ZCLOOP_FALLBACK=1" in msg


def test_other_entry_points_raise_under_seccomp(noiouring):
    rc, out, err = run_py("""
    res = {}
    for name, fn in [("Loop", zcloop.Loop), ("features", zcloop.features),
                     ("run", lambda: zcloop.run(main()))]:
        try:
            fn()
            res[name] = "no error"
        except zcloop.IoUringUnavailableError as exc:
            res[name] = "IoUringUnavailableError"
    print(json.dumps(res))
    """, wrapper=[noiouring])
    assert rc == 0, err
    # zcloop.run creates the coroutine before failing: ignore its warning.
    assert json.loads(out) == {"Loop": "IoUringUnavailableError",
                               "features": "IoUringUnavailableError",
                               "run": "IoUringUnavailableError"}


def test_fallback_true_gives_asyncio_loop_with_one_warning(noiouring):
    rc, out, err = run_py("""
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        kinds = []
        for _ in range(3):
            loop = zcloop.new_event_loop(fallback=True)
            kinds.append(loop_kind(loop))
            kinds.append(loop.run_until_complete(main()))
            loop.close()
    runtime = [str(x.message) for x in w if issubclass(x.category, RuntimeWarning)]
    print(json.dumps([kinds, runtime, [x.category.__name__ for x in w]]))
    """, wrapper=[noiouring])
    assert rc == 0, err
    kinds, runtime, categories = json.loads(out)
    assert kinds == ["_UnixSelectorEventLoop"] * 6
    assert len(runtime) == 1 and categories == ["RuntimeWarning"]
    assert runtime[0].startswith("zcloop: io_uring_setup() was denied with EPERM")
    assert runtime[0].endswith("using asyncio's default event loop instead")


def test_fallback_env(noiouring):
    rc, out, err = run_py("""
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        loop = zcloop.new_event_loop()
        print(loop_kind(loop), loop.run_until_complete(main()))
        loop.close()
        print(asyncio.run(main()))      # not affected: no policy installed
    print(sum(issubclass(x.category, RuntimeWarning) for x in w))
    """, wrapper=[noiouring], env={"ZCLOOP_FALLBACK": "1"})
    assert rc == 0, err
    assert out.split() == ["_UnixSelectorEventLoop", "_UnixSelectorEventLoop",
                           "_UnixSelectorEventLoop", "1"]


def test_fallback_env_explicit_false_wins(noiouring):
    """fallback=False overrides ZCLOOP_FALLBACK=1."""
    rc, out, err = run_py("""
    try:
        zcloop.new_event_loop(fallback=False)
        print("no error")
    except zcloop.IoUringUnavailableError:
        print("raised")
    """, wrapper=[noiouring], env={"ZCLOOP_FALLBACK": "1"})
    assert rc == 0, err
    assert out.split() == ["raised"]


def test_run_with_fallback(noiouring):
    rc, out, err = run_py("""
    print(zcloop.run(main(), fallback=True))
    print(zcloop.run(main(), fallback=True, debug=True))
    """, wrapper=[noiouring])
    assert rc == 0, err
    assert out.split() == ["_UnixSelectorEventLoop"] * 2
    assert err.count("RuntimeWarning") == 1, err


def test_install_with_fallback(noiouring):
    rc, out, err = run_py("""
    zcloop.install(fallback=True)
    print(asyncio.run(main()))
    """, wrapper=[noiouring])
    assert rc == 0, err
    assert out.split() == ["_UnixSelectorEventLoop"]


def test_available_under_seccomp(noiouring):
    rc, out, err = run_py("""
    print(json.dumps([zcloop.available(), zcloop.available()]))
    """, wrapper=[noiouring])
    assert rc == 0, err
    a, b = json.loads(out)
    assert a == b and "seccomp" in a


def test_available_enosys(noiouring):
    rc, out, err = run_py("""
    print(zcloop.available())
    loop = zcloop.new_event_loop(fallback=True)
    print(loop_kind(loop))
    loop.close()
    """, wrapper=[noiouring, "-e", str(errno.ENOSYS)])
    assert rc == 0, err
    lines = out.splitlines()
    assert "no io_uring" in lines[0] and "ENOSYS" in lines[0]
    assert lines[1] == "_UnixSelectorEventLoop"


def test_available_without_seccomp():
    assert zcloop.available() is None
    rc, out, err = run_py("print(zcloop.available())")
    assert out.split() == ["None"]


def test_disable_env_forces_asyncio_without_seccomp():
    rc, out, err = run_py("""
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        loop = zcloop.new_event_loop()
        print(loop_kind(loop), loop.run_until_complete(main()))
        loop.close()
        print(zcloop.run(main()))
    msgs = [str(x.message) for x in w if issubclass(x.category, RuntimeWarning)]
    print(len(msgs))
    print(msgs[0])
    print(zcloop.available())      # io_uring itself works here
    """, env={"ZCLOOP_DISABLE": "1"})
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[:3] == ["_UnixSelectorEventLoop _UnixSelectorEventLoop",
                         "_UnixSelectorEventLoop", "1"]
    assert "ZCLOOP_DISABLE=1" in lines[3]
    assert lines[4] == "None"


def test_disable_env_values():
    for value, expected in [("0", "zcloop"), ("", "zcloop"), ("true", "_UnixSelectorEventLoop"),
                            ("yes", "_UnixSelectorEventLoop")]:
        rc, out, err = run_py("print(zcloop.run(main()))",
                              env={"ZCLOOP_DISABLE": value})
        assert rc == 0, err
        assert out.split() == [expected], value


def test_zcloop_works_normally_outside_helper():
    rc, out, err = run_py("print(zcloop.run(main()))")
    assert rc == 0, err
    assert out.split() == ["zcloop"]


# ----------------------------------------------------------------------
# Error texts (errors.pyx)

def test_unavailable_reason_eperm_seccomp(monkeypatch):
    monkeypatch.setattr(_ring, "_read_sysctl", lambda name: "0")
    msg = _ring._unavailable_reason(errno.EPERM)
    assert msg.startswith("io_uring_setup() was denied with EPERM: a seccomp filter")
    assert "Docker >= 25" in msg
    assert msg.endswith("or set ZCLOOP_FALLBACK=1 to run on asyncio's loop instead")


def test_unavailable_reason_eperm_sysctl(monkeypatch):
    monkeypatch.setattr(_ring, "_read_sysctl", lambda name: "2")
    msg = _ring._unavailable_reason(errno.EPERM)
    assert msg.startswith("io_uring is disabled by the kernel.io_uring_disabled sysctl (value 2)")
    assert "ZCLOOP_FALLBACK=1" in msg


def test_unavailable_reason_eperm_sysctl_unreadable(monkeypatch):
    monkeypatch.setattr(_ring, "_read_sysctl", lambda name: None)
    assert "seccomp" in _ring._unavailable_reason(errno.EPERM)


def test_unavailable_reason_enosys():
    msg = _ring._unavailable_reason(errno.ENOSYS)
    assert msg.startswith("this kernel has no io_uring (io_uring_setup() gave ENOSYS")
    assert "gVisor" in msg and "fallback=True" in msg


def test_unavailable_reason_enomem():
    msg = _ring._unavailable_reason(errno.ENOMEM)
    assert msg.startswith("io_uring_setup() failed with ENOMEM")
    assert "RLIMIT_MEMLOCK" in msg and "ulimit -l" in msg and "ZCLOOP_FALLBACK=1" in msg


def test_unavailable_reason_other():
    msg = _ring._unavailable_reason(errno.EMFILE)
    assert msg.startswith(f"io_uring_setup() failed: {os.strerror(errno.EMFILE)} "
                          f"(errno {errno.EMFILE})")
    assert "ZCLOOP_FALLBACK=1" in msg


def test_read_sysctl_here():
    # This machine allows io_uring.
    assert _ring._read_sysctl("io_uring_disabled") in (None, "0")
    assert _ring._read_sysctl("no_such_sysctl_zcloop") is None


def test_error_class():
    assert issubclass(zcloop.IoUringUnavailableError, RuntimeError)
    assert zcloop.IoUringUnavailableError is _ring.IoUringUnavailableError

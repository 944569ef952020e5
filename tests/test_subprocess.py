"""Subprocesses on asyncio's loop and on zcloop (real processes, real pipes).

zcloop runs asyncio's own ``_UnixSubprocessTransport`` over zcloop pipe
transports and learns about the child's exit from a pidfd poll on the ring,
so everything asyncio.subprocess offers must behave exactly as on asyncio's
loop: data byte-exact, return codes, signals, Popen options, timeouts, the
errors seen when the child closes its stdin early, reaping (no zombies, no
fd leaks) and the SubprocessProtocol callback order.
"""
import asyncio
import gc
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers.loops import LOOP_FACTORIES as LOOPS, run_on

pytestmark = pytest.mark.timeout(60)

PY = sys.executable
TIMEOUT = 30        # hang guard for one scenario, never a timing assertion


def _run(loop_factory, main):
    async def guarded():
        return await asyncio.wait_for(main(), TIMEOUT)
    return run_on(loop_factory, guarded)


def _fds():
    return sorted(int(n) for n in os.listdir('/proc/self/fd'))


# asyncio's child watcher from 3.12 on (where pidfd_open works): a pidfd
# registered with the loop's selector, closed only when the child's exit is
# read on that loop.  A child still running when its loop closes leaves that
# pidfd open for good (3.11's watcher thread opened no fd).
ASYNCIO_PIDFD_WATCHER = sys.version_info >= (3, 12) and \
    asyncio.unix_events.can_use_pidfd()


def _is_pidfd(fd):
    try:
        return os.readlink(f'/proc/self/fd/{fd}') == 'anon_inode:[pidfd]'
    except OSError:
        return False


def _fd_kinds():
    """Open fds of this process: fd -> readlink target (pipe:[...], anon_inode:...)."""
    out = {}
    for name in os.listdir('/proc/self/fd'):
        try:
            out[int(name)] = os.readlink(f'/proc/self/fd/{name}')
        except OSError:
            pass
    return out


def _children():
    """(pid, state) of this process's direct children, from /proc."""
    me = os.getpid()
    out = []
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        try:
            with open(f'/proc/{name}/stat') as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...: comm may contain spaces and parens.
        rest = stat[stat.rindex(')') + 2:].split()
        if int(rest[1]) == me:
            out.append((int(name), rest[0]))
    return out


def _zombies():
    return [pid for pid, state in _children() if state == 'Z']


@pytest.fixture(autouse=True)
def _no_zombies_left():
    yield
    assert _zombies() == [], "a test left a zombie child"


# ----------------------------------------------------------------------
# asyncio.create_subprocess_exec / create_subprocess_shell, unchanged


@pytest.mark.parametrize('how', ['exec', 'shell'])
def test_communicate_10mib_each_way(loop_factory, how):
    """10 MiB into the child's stdin while 10 MiB come back on stdout (a
    streaming ``cat``: both directions are in flight at once) and the
    digest on stderr; byte-exact."""
    data = os.urandom(10 << 20)
    code = ('import sys, hashlib\n'
            'h = hashlib.sha256()\n'
            'while True:\n'
            '    b = sys.stdin.buffer.read1(65536)\n'
            '    if not b: break\n'
            '    h.update(b); sys.stdout.buffer.write(b)\n'
            'sys.stdout.flush(); sys.stderr.write(h.hexdigest())\n')

    async def main():
        if how == 'exec':
            proc = await asyncio.create_subprocess_exec(
                PY, '-c', code, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE)
        else:
            proc = await asyncio.create_subprocess_shell(
                f'"{PY}" -c "$CODE"', env={**os.environ, 'CODE': code},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await proc.communicate(data)
        return out, err, proc.returncode

    out, err, rc = _run(loop_factory, main)
    assert rc == 0
    assert len(out) == len(data) and out == data
    assert err.decode() == hashlib.sha256(data).hexdigest()


def test_communicate_large_output_both_streams(loop_factory):
    """10 MiB on stdout and 10 MiB on stderr, interleaved by the child."""
    code = ('import os\n'
            'for i in range(160):\n'
            '    os.write(1, bytes([i % 251]) * 65536)\n'
            '    os.write(2, bytes([(i * 7) % 251]) * 65536)\n')

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, '-c', code, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        return await proc.communicate() + (proc.returncode,)

    out, err, rc = _run(loop_factory, main)
    assert rc == 0
    assert out == b''.join(bytes([i % 251]) * 65536 for i in range(160))
    assert err == b''.join(bytes([(i * 7) % 251]) * 65536 for i in range(160))


def test_stream_readline_and_write(loop_factory):
    """Line-by-line dialogue over stdin/stdout StreamReader/StreamWriter."""
    code = ('import sys\n'
            'for line in sys.stdin:\n'
            '    sys.stdout.write(line.upper()); sys.stdout.flush()\n')

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, '-c', code, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        got = []
        for i in range(20):
            proc.stdin.write(f'line {i}\n'.encode())
            await proc.stdin.drain()
            got.append(await proc.stdout.readline())
        proc.stdin.close()
        await proc.stdin.wait_closed()
        rest = await proc.stdout.read()
        return got, rest, await proc.wait()

    got, rest, rc = _run(loop_factory, main)
    assert got == [f'LINE {i}\n'.encode() for i in range(20)]
    assert rest == b'' and rc == 0


@pytest.mark.parametrize('how', ['exec', 'shell'])
def test_exit_codes(loop_factory, how):
    async def main():
        rcs = []
        for code in (0, 3, 255):
            if how == 'exec':
                proc = await asyncio.create_subprocess_exec(PY, '-c', f'raise SystemExit({code})')
            else:
                proc = await asyncio.create_subprocess_shell(f'exit {code}')
            rcs.append(await proc.wait())
            assert proc.returncode == rcs[-1]
        # Killed by a signal: negative signal number.
        if how == 'exec':
            proc = await asyncio.create_subprocess_exec(
                PY, '-c', 'import os, signal; os.kill(os.getpid(), signal.SIGSEGV)')
        else:
            proc = await asyncio.create_subprocess_shell('kill -SEGV $$')
        rcs.append(await proc.wait())
        return rcs

    assert _run(loop_factory, main) == [0, 3, 255, -signal.SIGSEGV]


def test_kill_terminate_send_signal(loop_factory):
    trap = ('import signal, sys, time\n'
            'signal.signal(signal.SIGUSR1, lambda *a: sys.exit(7))\n'
            'print("ready", flush=True)\n'
            'time.sleep(60)\n')

    async def main():
        rcs = {}
        proc = await asyncio.create_subprocess_exec('sleep', '60')
        proc.kill()
        rcs['kill'] = await proc.wait()
        proc = await asyncio.create_subprocess_exec('sleep', '60')
        proc.terminate()
        rcs['terminate'] = await proc.wait()
        proc = await asyncio.create_subprocess_exec('sleep', '60')
        proc.send_signal(signal.SIGUSR2)
        rcs['SIGUSR2'] = await proc.wait()
        # A handled signal: the child's handler decides the exit code.
        proc = await asyncio.create_subprocess_exec(PY, '-c', trap, stdout=subprocess.PIPE)
        assert await proc.stdout.readline() == b'ready\n'
        proc.send_signal(signal.SIGUSR1)
        rcs['handled'] = await proc.wait()
        # After wait() the transport is gone: asyncio raises ProcessLookupError.
        for meth in (proc.kill, proc.terminate, lambda: proc.send_signal(signal.SIGTERM)):
            with pytest.raises(ProcessLookupError):
                meth()
        return rcs

    assert _run(loop_factory, main) == {
        'kill': -signal.SIGKILL, 'terminate': -signal.SIGTERM,
        'SIGUSR2': -signal.SIGUSR2, 'handled': 7}


def test_popen_options(loop_factory, tmp_path):
    """pass_fds, cwd, env, start_new_session, preexec_fn reach the child."""
    code = ('import os, sys\n'
            'fd = int(sys.argv[1])\n'
            'os.write(fd, b"via passed fd")\n'
            'print(os.getcwd())\n'
            'print(os.environ.get("ZC_TEST_VAR"), "PATH" in os.environ)\n'
            'print(os.getsid(0) == os.getpid())\n'
            'print(oct(os.umask(0)))\n')

    async def main():
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        try:
            proc = await asyncio.create_subprocess_exec(
                PY, '-c', code, str(w), pass_fds=(w,), cwd=str(tmp_path),
                env={'ZC_TEST_VAR': 'hello'}, start_new_session=True,
                preexec_fn=lambda: os.umask(0o027), stdout=subprocess.PIPE)
            os.close(w)
            w = -1
            out, _ = await proc.communicate()
            passed = await loop.run_in_executor(None, os.read, r, 100)
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)
        # Without start_new_session the child shares our session.
        proc2 = await asyncio.create_subprocess_exec(
            PY, '-c', 'import os; print(os.getsid(0))', stdout=subprocess.PIPE)
        out2, _ = await proc2.communicate()
        return out.decode().splitlines(), passed, proc.returncode, int(out2)

    lines, passed, rc, sid2 = _run(loop_factory, main)
    assert rc == 0
    assert passed == b'via passed fd'
    assert lines == [str(tmp_path), 'hello False', 'True', '0o27']
    assert sid2 == os.getsid(0)


def test_fds_not_passed_are_not_inherited(loop_factory):
    """Without pass_fds the child sees only 0, 1, 2 (close_fds default), and
    none of the loop's own fds (ring, eventfd, pidfds)."""
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, '-c', 'import os; print(sorted(int(f) for f in os.listdir("/proc/self/fd")))',
            stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        return json.loads(out)

    fds = _run(loop_factory, main)
    # The listing itself opens one fd.
    assert len(fds) == 4 and fds[:3] == [0, 1, 2]


def test_wait_for_timeout(loop_factory):
    async def main():
        proc = await asyncio.create_subprocess_exec('sleep', '60')
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(proc.wait(), 0.05)
        alive = proc.returncode
        # The timeout cancelled only our wait: waiting again works.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), 0.05)
        proc.kill()
        rc = await asyncio.wait_for(proc.wait(), TIMEOUT)
        # communicate() under wait_for as well.
        proc = await asyncio.create_subprocess_exec(
            'sleep', '60', stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(proc.communicate(), 0.05)
        proc.terminate()
        out, err = await proc.communicate()
        return alive, rc, out, err, proc.returncode

    assert _run(loop_factory, main) == (None, -signal.SIGKILL, b'', b'', -signal.SIGTERM)


def test_child_closes_stdin_then_we_write(loop_factory):
    """The child closes its stdin and keeps running: every later write +
    drain() fails with ConnectionResetError('Connection lost'), as asyncio."""
    code = ('import os\n'
            'os.close(0)\n'
            'print("closed", flush=True)\n'
            'import time; time.sleep(60)\n')

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, '-c', code, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert await proc.stdout.readline() == b'closed\n'
        errors = []
        for n in (10, 1 << 20, 10):
            try:
                proc.stdin.write(b'x' * n)
                await proc.stdin.drain()
                errors.append(None)
            except Exception as exc:        # noqa: BLE001 - compared below
                errors.append((type(exc), str(exc)))
        closing = proc.stdin.transport.is_closing()
        proc.kill()
        await proc.wait()
        return errors, closing

    errors, closing = _run(loop_factory, main)
    assert errors == [(ConnectionResetError, 'Connection lost')] * 3
    assert closing


@pytest.mark.parametrize('size', [10, 1 << 20])
def test_child_closes_stdin_while_we_write(loop_factory, size):
    """The child reads one byte and closes its stdin while our data is
    still buffered (1 MiB) or already in the pipe (10 bytes): the pending
    drain() fails with BrokenPipeError only in the first case, exactly as
    asyncio; later writes fail with ConnectionResetError."""
    code = ('import os, sys, time\n'
            'sys.stdin.buffer.raw.read(1)\n'
            'os.close(0)\n'
            'print("closed", flush=True)\n'
            'time.sleep(60)\n')

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, '-c', code, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        out = []
        for step in range(2):
            proc.stdin.write(b'x' * size)
            try:
                await proc.stdin.drain()
                out.append(None)
            except Exception as exc:        # noqa: BLE001
                out.append(repr(exc))
            if step == 0:
                out.append(await proc.stdout.readline())
        proc.kill()
        await proc.wait()
        return out

    first = None if size == 10 else 'BrokenPipeError()'
    assert _run(loop_factory, main) == [first, b'closed\n',
                                        "ConnectionResetError('Connection lost')"]


def test_child_exits_without_reading_stdin(loop_factory):
    """communicate() with input the child never reads: asyncio ignores the
    BrokenPipeError/ConnectionResetError of feeding stdin."""
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, '-c', 'import os; os.close(0); print("bye")',
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        out, err = await proc.communicate(b'y' * (4 << 20))
        # And writing after the child is gone: the same error on both loops.
        try:
            proc.stdin.write(b'late')
            await proc.stdin.drain()
            late = None
        except Exception as exc:        # noqa: BLE001
            late = (type(exc), str(exc))
        return out, err, proc.returncode, late

    out, err, rc, late = _run(loop_factory, main)
    assert (out, err, rc) == (b'bye\n', None, 0)
    assert late == (ConnectionResetError, 'Connection lost')


def test_devnull_and_stdout_redirection(loop_factory):
    code = 'import sys; sys.stdout.write("out\\n"); sys.stdout.flush(); sys.stderr.write("err\\n")'

    async def main():
        res = {}
        proc = await asyncio.create_subprocess_exec(
            PY, '-c', code, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        res['merged'] = (proc.stderr, await proc.communicate())
        proc = await asyncio.create_subprocess_exec(
            PY, '-c', code, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        res['devnull_out'] = (proc.stdout, await proc.communicate())
        proc = await asyncio.create_subprocess_exec(
            PY, '-c', code, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        res['all_devnull'] = (proc.stdin, await proc.communicate(), proc.returncode)
        proc = await asyncio.create_subprocess_shell(
            'cat; echo done >&2', stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
        res['shell_stdin_devnull'] = await proc.communicate()
        return res

    assert _run(loop_factory, main) == {
        'merged': (None, (b'out\nerr\n', None)),
        'devnull_out': (None, (None, b'err\n')),
        'all_devnull': (None, (None, None), 0),
        'shell_stdin_devnull': (b'done\n', None),
    }


def test_stdout_flow_control_blocks_child(loop_factory):
    """A StreamReader over the child's stdout pauses the pipe at its limit:
    the child stays blocked in write() (does not exit) until we read, and
    our buffer stays bounded; then everything arrives."""
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, '-c', 'import sys; sys.stdout.buffer.write(b"y" * (4 << 20))',
            stdout=subprocess.PIPE, limit=1 << 16)
        for _ in range(20):
            await asyncio.sleep(0.01)
        blocked = proc.returncode
        buffered = len(proc.stdout._buffer)
        data = await proc.stdout.read()
        return blocked, buffered <= (2 << 16) + (256 << 10), len(data), await proc.wait()

    assert _run(loop_factory, main) == (None, True, 4 << 20, 0)


def test_concurrent_waits_and_file_redirection(loop_factory, tmp_path):
    """Several tasks waiting on one process all get the code; stdin/stdout
    from and to regular files."""
    src = tmp_path / 'in'
    dst = tmp_path / 'out'
    src.write_bytes(b'from a file\n' * 1000)

    async def main():
        proc = await asyncio.create_subprocess_exec(PY, '-c', 'import time; time.sleep(0.05)')
        rcs = await asyncio.gather(*(proc.wait() for _ in range(5)))
        again = await proc.wait()
        with open(src, 'rb') as fin, open(dst, 'wb') as fout:
            proc = await asyncio.create_subprocess_exec('cat', stdin=fin, stdout=fout)
            rc = await proc.wait()
        return rcs, again, rc

    assert _run(loop_factory, main) == ([0] * 5, 0, 0)
    assert dst.read_bytes() == src.read_bytes()


def test_many_concurrent_processes_reaped(loop_factory):
    """50 short processes at once: every exit code right, nobody left as a
    zombie, no fd left open (pipes, pidfds)."""
    before = _fds()

    async def main():
        async def one(i):
            proc = await asyncio.create_subprocess_exec(
                '/bin/sh', '-c', f'echo {i}; exit {i % 7}', stdout=subprocess.PIPE)
            out, _ = await proc.communicate()
            return proc.pid, int(out), proc.returncode
        return await asyncio.gather(*(one(i) for i in range(50)))

    results = _run(loop_factory, main)
    assert [(out, rc) for _, out, rc in results] == [(i, i % 7) for i in range(50)]
    pids = {pid for pid, _, _ in results}
    assert not pids & {pid for pid, _ in _children()}
    assert _fds() == before


def test_many_concurrent_processes_wait_only(loop_factory):
    """50 processes without pipes, killed and waited concurrently."""
    before = _fds()

    async def main():
        procs = [await asyncio.create_subprocess_exec('sleep', '60') for _ in range(50)]
        for i, p in enumerate(procs):
            if i % 2:
                p.kill()
            else:
                p.terminate()
        return [p.pid for p in procs], await asyncio.gather(*(p.wait() for p in procs))

    pids, rcs = _run(loop_factory, main)
    assert rcs == [-signal.SIGKILL if i % 2 else -signal.SIGTERM for i in range(50)]
    assert not set(pids) & {pid for pid, _ in _children()}
    assert _fds() == before


def test_program_not_found(loop_factory):
    before = _fds()

    async def main():
        with pytest.raises(FileNotFoundError):
            await asyncio.create_subprocess_exec('/nonexistent/zcloop-test-program')
        with pytest.raises(NotADirectoryError):
            await asyncio.create_subprocess_exec(PY, '-c', 'pass', cwd='/dev/null')
        proc = await asyncio.create_subprocess_shell('/nonexistent/zcloop-test-program',
                                                     stderr=subprocess.DEVNULL)
        return await proc.wait()

    assert _run(loop_factory, main) == 127
    assert _fds() == before


def test_preexec_fn_failure(loop_factory):
    before = _fds()

    def boom():
        raise ValueError('boom')

    async def main():
        with pytest.raises(subprocess.SubprocessError, match='preexec_fn'):
            await asyncio.create_subprocess_exec(PY, '-c', 'pass', preexec_fn=boom)

    _run(loop_factory, main)
    assert _fds() == before


@pytest.mark.filterwarnings('ignore::ResourceWarning')
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
def test_loop_closes_with_process_running(loop_factory):
    """Closing the loop while a child still runs neither raises nor hangs;
    the child is left alone (asyncio kills it only when its transport is
    closed), and once it is gone and the transport collected no fd of the
    loop (pipes, pidfd) is left open."""
    before = _fds()
    loop = loop_factory()
    try:
        async def start():
            return await asyncio.create_subprocess_exec(
                'sleep', '60', stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        proc = loop.run_until_complete(start())
        pid = proc.pid
    finally:
        loop.close()
    assert loop.is_closed()
    # Still running ('R' while a loaded machine has not yet put it to sleep).
    assert any(p == pid and state in ('R', 'S') for p, state in _children())
    os.kill(pid, signal.SIGKILL)
    # Reap it (asyncio's watcher thread may get there first).
    deadline = TIMEOUT * 100
    while deadline and any(p == pid for p, _ in _children()):
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            time.sleep(0.01)
        deadline -= 1
    assert not any(p == pid for p, _ in _children())
    del proc
    gc.collect()
    after = _fds()
    if loop_factory is LOOPS['asyncio'] and ASYNCIO_PIDFD_WATCHER:
        leaked = [fd for fd in after if fd not in before]
        assert len(leaked) <= 1 and all(_is_pidfd(fd) for fd in leaked), leaked
        for fd in leaked:       # asyncio's, not this test's: keep the fd table clean
            os.close(fd)
        after = _fds()
    assert after == before


def test_subprocess_argument_errors(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        errors = []
        for call in (
                lambda: loop.subprocess_shell(asyncio.SubprocessProtocol, ['ls']),
                lambda: loop.subprocess_shell(asyncio.SubprocessProtocol, 'ls', shell=False),
                lambda: loop.subprocess_shell(asyncio.SubprocessProtocol, 'ls', bufsize=1),
                lambda: loop.subprocess_shell(asyncio.SubprocessProtocol, 'ls',
                                              universal_newlines=True),
                lambda: loop.subprocess_shell(asyncio.SubprocessProtocol, 'ls', text=True),
                lambda: loop.subprocess_shell(asyncio.SubprocessProtocol, 'ls',
                                              encoding='utf-8'),
                lambda: loop.subprocess_shell(asyncio.SubprocessProtocol, 'ls', errors='strict'),
                lambda: loop.subprocess_exec(asyncio.SubprocessProtocol, 'ls', shell=True),
                lambda: loop.subprocess_exec(asyncio.SubprocessProtocol, 'ls', bufsize=1),
                lambda: loop.subprocess_exec(asyncio.SubprocessProtocol, 'ls',
                                             universal_newlines=True),
                lambda: loop.subprocess_exec(asyncio.SubprocessProtocol, 'ls', text=True),
                lambda: loop.subprocess_exec(asyncio.SubprocessProtocol, 'ls', encoding='ascii'),
                lambda: loop.subprocess_exec(asyncio.SubprocessProtocol, 'ls', errors='strict'),
        ):
            try:
                await call()
                errors.append(None)
            except Exception as exc:        # noqa: BLE001
                errors.append((type(exc).__name__, str(exc)))
        return errors

    assert _run(loop_factory, main) == [
        ('ValueError', 'cmd must be a string'),
        ('ValueError', 'shell must be True'),
        ('ValueError', 'bufsize must be 0'),
        ('ValueError', 'universal_newlines must be False'),
        ('ValueError', 'text must be False'),
        ('ValueError', 'encoding must be None'),
        ('ValueError', 'errors must be None'),
        ('ValueError', 'shell must be False'),
        ('ValueError', 'bufsize must be 0'),
        ('ValueError', 'universal_newlines must be False'),
        ('ValueError', 'text must be False'),
        ('ValueError', 'encoding must be None'),
        ('ValueError', 'errors must be None'),
    ]


# ----------------------------------------------------------------------
# loop.subprocess_exec with a custom SubprocessProtocol


class Recorder(asyncio.SubprocessProtocol):
    def __init__(self):
        self.events = []
        self.data = {1: bytearray(), 2: bytearray()}
        self.transport = None
        self.done = asyncio.get_running_loop().create_future()
        self.lost_fds = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport
        self.events.append('connection_made')

    def pipe_data_received(self, fd, data):
        self.data[fd] += data
        ev = ('pipe_data_received', fd)
        if self.events[-1] != ev:       # coalesce: chunking is not semantics
            self.events.append(ev)

    def pipe_connection_lost(self, fd, exc):
        self.events.append(('pipe_connection_lost', fd, exc))
        if sum(1 for e in self.events if e[0] == 'pipe_connection_lost') == 2 \
                and not self.lost_fds.done():
            self.lost_fds.set_result(None)

    def process_exited(self):
        self.events.append(('process_exited', self.transport.get_returncode()))

    def connection_lost(self, exc):
        self.events.append(('connection_lost', exc))
        self.done.set_result(None)


def test_protocol_callback_order_deterministic(loop_factory):
    """The child writes, closes stdout and stderr, and exits only when we
    close its stdin: each step waits for the previous, so the order is
    fixed and must be asyncio's exactly."""
    code = ('import os, sys\n'
            'os.write(1, b"out" * 1000); os.write(2, b"err")\n'
            'os.close(1); os.close(2)\n'
            'sys.stdin.buffer.read()\n'
            'raise SystemExit(5)\n')

    async def main():
        loop = asyncio.get_running_loop()
        transport, proto = await loop.subprocess_exec(Recorder, PY, '-c', code)
        assert transport.get_pid() > 0 and transport.get_returncode() is None
        stdin = transport.get_pipe_transport(0)
        # (zcloop's transports are compiled classes, not asyncio.Transport
        # subclasses: README, "Differences from asyncio".)
        assert callable(stdin.write) and callable(stdin.get_write_buffer_size)
        assert transport.get_pipe_transport(1).is_reading()
        await proto.lost_fds
        stdin.write(b'ignored')
        stdin.close()
        await proto.done
        assert transport.get_returncode() == 5
        transport.close()
        return proto.events, {k: bytes(v) for k, v in proto.data.items()}

    events, data = _run(loop_factory, main)
    assert data == {1: b'out' * 1000, 2: b'err'}
    assert events[0] == 'connection_made'
    assert sorted(events[1:5], key=str) == sorted([
        ('pipe_data_received', 1), ('pipe_data_received', 2),
        ('pipe_connection_lost', 1, None), ('pipe_connection_lost', 2, None)], key=str)
    assert events[1:5].index(('pipe_data_received', 1)) < \
        events[1:5].index(('pipe_connection_lost', 1, None))
    assert events[5:] == [('pipe_connection_lost', 0, None), ('process_exited', 5),
                          ('connection_lost', None)]


@pytest.mark.parametrize('child', ['exit', 'sigkill', 'large'])
def test_protocol_callback_order_natural_exit(loop_factory, child):
    """The child writes and exits on its own.  asyncio guarantees:
    connection_made first, a fd's data before its pipe_connection_lost,
    process_exited exactly once, connection_lost last.  (Whether
    process_exited comes before or after the last pipe_connection_lost
    is a race on asyncio's loop too.)"""
    code = {
        'exit': 'import sys; print("hi"); print("x", file=sys.stderr)',
        'sigkill': 'import os; print("a", flush=True); os.kill(os.getpid(), 9)',
        'large': 'import os; os.write(1, b"z" * 300000); os.write(2, b"e" * 70000)',
    }[child]
    expected = {
        'exit': ({1: b'hi\n', 2: b'x\n'}, 0),
        'sigkill': ({1: b'a\n', 2: b''}, -9),
        'large': ({1: b'z' * 300000, 2: b'e' * 70000}, 0),
    }[child]

    async def main():
        loop = asyncio.get_running_loop()
        transport, proto = await loop.subprocess_exec(Recorder, PY, '-c', code)
        transport.get_pipe_transport(0).close()
        await proto.done
        transport.close()
        return proto.events, {k: bytes(v) for k, v in proto.data.items()}

    for _ in range(5):
        events, data = _run(loop_factory, main)
        assert data == expected[0]
        assert events[0] == 'connection_made'
        assert events[-1] == ('connection_lost', None)
        assert [e for e in events if e[0] == 'process_exited'] == [('process_exited',
                                                                   expected[1])]
        assert sorted(e for e in events if e[0] == 'pipe_connection_lost') == [
            ('pipe_connection_lost', fd, None) for fd in (0, 1, 2)]
        for fd in (1, 2):
            if data[fd]:
                assert events.index(('pipe_data_received', fd)) < \
                    events.index(('pipe_connection_lost', fd, None))
        assert events.index(('pipe_connection_lost', 0, None)) < \
            events.index(('process_exited', expected[1]))


@pytest.mark.parametrize('child', ['sigkill', 'large'])
def test_protocol_callback_order_usual(loop_factory, child):
    """In the usual case (child writes, exits, pipes at EOF), asyncio 3.11
    reports every pipe_connection_lost before process_exited (its watcher
    thread's call_soon_threadsafe() lands an iteration after the pipes'
    EOF); so does zcloop (its exit callback takes one hop after the pidfd
    completion).  Asserted on most runs, not all: it is a race in both.
    asyncio's pidfd watcher (3.12+) reads the exit in the same iteration as
    the pipes' EOF, so either order is common there.  On asyncio only the
    complete sequence is checked: how often its watcher thread loses the
    race depends on the machine's load (6 of 10 seen on a loaded CI-sized
    VM), and a test must not assert the reference loop's timing."""
    code = {
        'sigkill': 'import os; print("a", flush=True); os.kill(os.getpid(), 9)',
        'large': 'import os; os.write(1, b"z" * 300000); os.write(2, b"e" * 70000)',
    }[child]

    async def main():
        loop = asyncio.get_running_loop()
        transport, proto = await loop.subprocess_exec(Recorder, PY, '-c', code)
        transport.get_pipe_transport(0).close()
        await proto.done
        transport.close()
        return proto.events

    usual = 0
    for _ in range(10):
        events = _run(loop_factory, main)
        names = [e if isinstance(e, str) else e[0] for e in events]
        assert names[-1] == 'connection_lost' and names.count('process_exited') == 1
        assert names.count('pipe_connection_lost') == 3, names
        if names[-2:] == ['process_exited', 'connection_lost']:
            usual += 1
    if loop_factory is LOOPS['zcloop']:
        assert usual >= 7, usual


def test_protocol_without_pipes(loop_factory):
    """No pipes at all: connection_made, process_exited, connection_lost."""
    async def main():
        loop = asyncio.get_running_loop()
        transport, proto = await loop.subprocess_exec(
            Recorder, 'true', stdin=None, stdout=None, stderr=None)
        assert transport.get_pipe_transport(0) is None
        await proto.done
        transport.close()
        return proto.events

    assert _run(loop_factory, main) == [
        'connection_made', ('process_exited', 0), ('connection_lost', None)]


def test_protocol_transport_close_kills(loop_factory):
    """transport.close() on a running child kills it; the protocol still
    sees every pipe closed, the exit (-SIGKILL) and connection_lost."""
    async def main():
        loop = asyncio.get_running_loop()
        transport, proto = await loop.subprocess_exec(Recorder, 'sleep', '60')
        transport.close()
        assert transport.is_closing()
        await proto.done
        return proto.events

    events = _run(loop_factory, main)
    assert events[0] == 'connection_made'
    assert sorted(e for e in events if e[0] == 'pipe_connection_lost') == [
        ('pipe_connection_lost', fd, None) for fd in (0, 1, 2)]
    assert ('process_exited', -signal.SIGKILL) in events
    assert events[-1] == ('connection_lost', None)


def test_subprocess_shell_protocol(loop_factory):
    async def main():
        loop = asyncio.get_running_loop()
        transport, proto = await loop.subprocess_shell(
            Recorder, 'read x; echo "got $x"; echo err >&2; exit 4')
        transport.get_pipe_transport(0).write(b'hello\n')
        await proto.done
        transport.close()
        return {k: bytes(v) for k, v in proto.data.items()}, transport.get_returncode()

    assert _run(loop_factory, main) == ({1: b'got hello\n', 2: b'err\n'}, 4)


@pytest.mark.parametrize('size', [10, 1 << 20])
def test_protocol_stdin_hangup(loop_factory, size):
    """The child closes its stdin: pipe_connection_lost(0, exc) with
    BrokenPipeError() when data was still buffered, None otherwise."""
    code = ('import os, sys, time\n'
            'sys.stdin.buffer.raw.read(1)\n'
            'os.close(0)\n'
            'print("closed", flush=True)\n'
            'time.sleep(60)\n')

    async def main():
        loop = asyncio.get_running_loop()
        transport, proto = await loop.subprocess_exec(Recorder, PY, '-c', code)
        stdin = transport.get_pipe_transport(0)
        stdin.write(b'x' * size)
        while not (any(e[0] == 'pipe_connection_lost' for e in proto.events)
                   and proto.data[1] == b'closed\n'):
            await asyncio.sleep(0.005)
        hangup = [e for e in proto.events if e[0] == 'pipe_connection_lost'][0]
        buffered = stdin.get_write_buffer_size()
        transport.kill()
        await proto.done
        transport.close()
        return hangup, buffered, bytes(proto.data[1])

    hangup, buffered, out = _run(loop_factory, main)
    exc = hangup[2]
    assert hangup[:2] == ('pipe_connection_lost', 0)
    if size == 10:
        assert exc is None
    else:
        assert type(exc) is BrokenPipeError and exc.args == ()
    assert buffered == 0 and out == b'closed\n'


# ----------------------------------------------------------------------
# Blocking-call detectors


@pytest.mark.parametrize('scenario', ['subprocess_exec', 'subprocess_shell',
                                      'create_unix_server'])
def test_no_blocking_call_flagged(loop_factory, scenario, tmp_path, request):
    """blockbuster (anyio's and aiohttp's suites run under it) flags blocking
    calls made while a loop runs, except under asyncio's own functions:
    Popen's read of the exec-status pipe under subprocess_exec/_shell, the
    stale-socket stat under create_unix_server.  zcloop runs asyncio's
    subprocess_exec/_shell and stats the socket path on the ring: nothing
    is flagged on either loop."""
    blockbuster = pytest.importorskip('blockbuster')
    if scenario == 'create_unix_server' and sys.version_info >= (3, 13) and \
            loop_factory is LOOPS['zcloop']:
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "3.13's cleanup_socket: zcloop's Server.close() stats and unlinks the "
            "path synchronously (asyncio's does too, but under its _stop_serving, "
            "which blockbuster forgives); docs/design.md")))

    async def main():
        if scenario == 'create_unix_server':
            server = await asyncio.start_unix_server(lambda r, w: w.close(),
                                                     str(tmp_path / 'sock'))
            server.close()
            await server.wait_closed()
            return None
        if scenario == 'subprocess_exec':
            proc = await asyncio.create_subprocess_exec(
                PY, '-c', 'print("child")', stdout=subprocess.PIPE)
        else:
            proc = await asyncio.create_subprocess_shell(
                'echo child', stdout=subprocess.PIPE)
        out, _ = await proc.communicate()
        return out, proc.returncode

    with blockbuster.blockbuster_ctx():
        result = _run(loop_factory, main)
    assert result == (None if scenario == 'create_unix_server' else (b'child\n', 0))


def test_debug_logs_subprocess(loop_factory, caplog):
    """In debug mode asyncio logs the program and its pipes before the
    spawn, and the transport after it."""
    async def main():
        asyncio.get_running_loop().set_debug(True)
        proc = await asyncio.create_subprocess_exec(PY, '-c', 'pass', stdout=subprocess.PIPE)
        await proc.communicate()
        proc = await asyncio.create_subprocess_shell('true', stdin=subprocess.PIPE)
        await proc.communicate()

    with caplog.at_level(logging.DEBUG, logger='asyncio'):
        _run(loop_factory, main)
    logged = [r.getMessage() for r in caplog.records
              if 'execute program' in r.getMessage() or 'run shell command' in r.getMessage()]
    assert [m.split(':')[0] for m in logged] == [
        f'execute program {PY!r} stdout=<pipe>', f'execute program {PY!r}',
        "run shell command 'true' stdin=<pipe>", "run shell command 'true'"], logged

"""zcloop's zero-copy write path: write_zc(), ZeroCopyWrite.sent/.released,
thresholds, statistics, demotion, teardown with notifications outstanding,
feature switches.  zcloop only (asyncio has no write_zc)."""
import array
import asyncio
import gc
import mmap
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import zcloop
from streamutil import (
    Hasher, LoopFactory, Recorder, digest, fd_count, loop_pair, pattern, raw_peer,
    recv_all_blocking, recv_exactly_blocking, run, unix_raw_peer,
)

ZC = LoopFactory('zcloop')
KIB = 1024
MIB = 1024 * 1024
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _probe_send_zc():
    loop = zcloop.Loop()
    try:
        return loop.zc_stats()['send_zc']
    finally:
        loop.close()


pytestmark = pytest.mark.skipif(not _probe_send_zc(),
                                reason='kernel has no IORING_OP_SEND_ZC')


async def settle(pred, timeout=10.0):
    """Wait (hang-guarded) until pred() is true."""
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError('condition not reached')
        await asyncio.sleep(0.005)


# ----------------------------------------------------------------------
# Loopback: write_zc is SEND_ZC, the kernel reports "copied"


def test_write_zc_slow_peer_released_after_read():
    size = 256 * KIB

    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        with conn:
            st = tr.zc_stats()
            assert st['zc_capable'] and not st['zc_write']     # loopback: no implicit ZC
            data = pattern(size, seed=20)
            h = tr.write_zc(data)
            assert h.nbytes == size
            assert not h.sent.done() and not h.released.done()
            assert await h.sent == size
            # The peer has not read: the kernel still holds our pages.
            await asyncio.sleep(0.2)
            assert not h.released.done()
            assert tr.get_pinned_size() == size
            assert loop.zc_stats()['pinned_bytes'] == size
            assert tr.get_write_buffer_size() == 0      # pinned bytes are not buffered
            got = await loop.run_in_executor(None, recv_exactly_blocking, conn, size)
            assert got == data
            assert await asyncio.wait_for(h.released, 10) is False   # loopback copies
            assert tr.get_pinned_size() == 0
            assert loop.zc_stats()['pinned_bytes'] == 0
            st = tr.zc_stats()
            assert st['zc_bytes'] == size and st['copy_bytes'] == 0
            assert st['zc_copied'] >= 1
            assert st['demotions'] == 0 and not st['zc_write']
            assert tr.get_extra_info('zcloop') == tr.zc_stats()
            assert 'released=False' in repr(h)
            assert await h is False            # awaiting the handle awaits released
            tr.close()
            await pr.lost
    run(ZC, main)


def test_loopback_plain_write_never_zero_copy():
    async def main():
        loop = asyncio.get_running_loop()
        sp, tr, pr, srv = await loop_pair(loop, server_factory=Hasher)
        data = pattern(3 * MIB, seed=21)
        for _ in range(3):
            tr.write(data)
        tr.write_eof()
        assert await sp.done == (9 * MIB, digest(data * 3))
        st = tr.zc_stats()
        assert st['zc_bytes'] == 0 and st['zc_copied'] == 0
        assert st['copy_bytes'] == 9 * MIB
        tr.close()
        await pr.lost
        srv.close()
        await srv.wait_closed()
    run(ZC, main)


@pytest.mark.parametrize('kind', ['bytes', 'bytearray', 'memoryview', 'array', 'mmap'])
def test_write_zc_buffer_types(kind):
    size = 300 * KIB

    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        src = pattern(size, seed=22)
        holder = None
        if kind == 'bytes':
            buf = src
        elif kind == 'bytearray':
            buf = bytearray(src)
        elif kind == 'array':
            buf = array.array('d')
            buf.frombytes(src)
        else:
            holder = mmap.mmap(-1, size)
            holder.write(src)
            buf = holder
        with conn:
            h = tr.write_zc(buf)
            assert h.nbytes == size
            if isinstance(buf, bytearray):
                # Pinned: the exporter refuses to resize while the kernel may read.
                with pytest.raises(BufferError):
                    buf.append(0)
            await h.sent
            got = await loop.run_in_executor(None, recv_exactly_blocking, conn, size)
            assert got == src
            assert await asyncio.wait_for(h.released, 10) is False
            # Released: the buffer is ours again.
            if isinstance(buf, bytearray):
                buf.append(0)
            if kind == 'mmap':
                del buf
                holder.close()                 # raises BufferError while exported
            tr.close()
            await pr.lost
    if kind == 'memoryview':
        # A slice of a bytearray: after release, zcloop holds no export of it.
        async def main_mv():
            loop = asyncio.get_running_loop()
            tr, pr, conn = await raw_peer(loop)
            holder = bytearray(b'\0' * 100 + pattern(size, seed=22) + b'\0' * 100)
            with conn:
                with memoryview(holder) as mv:
                    h = tr.write_zc(mv[100:-100])
                    await h.sent
                got = await loop.run_in_executor(None, recv_exactly_blocking, conn, size)
                assert got == pattern(size, seed=22)
                assert await asyncio.wait_for(h.released, 10) is False
                gc.collect()
                holder.append(0)              # zcloop released its export
                tr.close()
                await pr.lost
        run(ZC, main_mv)
    else:
        run(ZC, main)


def test_write_zc_argument_errors():
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        with conn:
            data = bytearray(64 * KIB)
            with pytest.raises(TypeError, match='C-contiguous'):
                tr.write_zc(memoryview(data)[::2])
            with pytest.raises(TypeError, match="not 'str'"):
                tr.write_zc('text')
            with pytest.raises(TypeError):
                tr.write_zc(None)
            data.append(1)             # the failed calls pinned nothing
            h = tr.write_zc(b'')
            assert await h.sent == 0 and await h.released is False
            tr.write_eof()
            with pytest.raises(RuntimeError, match='write_eof'):
                tr.write_zc(b'x' * 100)
            assert await loop.run_in_executor(None, recv_all_blocking, conn) == b''
            assert tr.zc_stats()['sends'] == 0
            tr.close()
            await pr.lost
    run(ZC, main)


def test_write_zc_below_threshold_goes_by_copy():
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        with conn:
            assert tr.get_zc_threshold() == loop.zc_threshold == 16 * KIB
            data = bytearray(pattern(16 * KIB - 1, seed=23))
            h = tr.write_zc(data)
            await h.sent
            # A copy send: the kernel is done with the memory at the first CQE.
            assert h.released.done() and h.released.result() is False
            got = await loop.run_in_executor(None, recv_exactly_blocking, conn, len(data))
            assert got == data
            st = tr.zc_stats()
            assert st['zc_bytes'] == 0 and st['copy_bytes'] == len(data)
            assert st['zc_copied'] == 0 and st['sends'] == 1
            tr.close()
            await pr.lost
    run(ZC, main)


def test_set_zc_threshold():
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        with conn:
            with pytest.raises(ValueError):
                tr.set_zc_threshold(-1)
            tr.set_zc_threshold(0)          # disables zero-copy on this transport
            assert tr.get_zc_threshold() == 0
            h = tr.write_zc(pattern(MIB, seed=24))
            await h.sent
            assert h.released.done() and h.released.result() is False
            tr.set_zc_threshold(4 * KIB)    # lower than the default
            h2 = tr.write_zc(pattern(8 * KIB, seed=25))
            await h2.sent
            got = await loop.run_in_executor(None, recv_exactly_blocking, conn,
                                             MIB + 8 * KIB)
            assert got == pattern(MIB, seed=24) + pattern(8 * KIB, seed=25)
            assert await asyncio.wait_for(h2.released, 10) is False
            st = tr.zc_stats()
            assert st['copy_bytes'] == MIB and st['zc_bytes'] == 8 * KIB
            assert st['zc_threshold'] == 4 * KIB
            tr.close()
            await pr.lost
            # The loop-wide default applies to new transports.
            loop.zc_threshold = 128 * KIB
            tr2, pr2, conn2 = await raw_peer(loop)
            with conn2:
                assert tr2.get_zc_threshold() == 128 * KIB
                tr2.close()
                await pr2.lost
    run(ZC, main)


def test_write_zc_large_payload_split_into_requests():
    size = 5 * MIB + 123

    async def main():
        loop = asyncio.get_running_loop()
        sp, tr, pr, srv = await loop_pair(loop, server_factory=Hasher)
        data = bytearray(pattern(size, seed=26))
        tr.write(b'head')
        h = tr.write_zc(data)
        tr.write(b'tail')
        tr.write_eof()
        assert await sp.done == (size + 8, digest(b'head' + data + b'tail'))
        assert await h.sent == size
        assert await asyncio.wait_for(h.released, 10) is False
        st = tr.zc_stats()
        # 1 MiB per SEND_ZC; the 123-byte tail is below the threshold: copy.
        assert st['zc_bytes'] == 5 * MIB
        assert st['copy_bytes'] == 123 + 8
        assert st['sends'] >= 6
        assert st['pinned_bytes'] == 0
        tr.close()
        await pr.lost
        srv.close()
        await srv.wait_closed()
    run(ZC, main)


def test_write_zc_after_connection_lost():
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        conn.close()
        await pr.lost
        h = tr.write_zc(pattern(64 * KIB))
        with pytest.raises(ConnectionResetError):
            await h.sent
        assert await h.released is False
    run(ZC, main)


def test_write_zc_peer_reset():
    """The peer resets while write_zc data is queued: sent fails with a
    connection error, released still resolves (it never raises)."""
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * KIB)
        handles = [tr.write_zc(pattern(MIB, seed=i)) for i in range(8)]
        await handles[0].sent
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\0\0\0\0\0\0\0')
        conn.close()
        exc = await pr.lost
        assert isinstance(exc, (ConnectionResetError, BrokenPipeError))
        outcomes = []
        for h in handles:
            await asyncio.wait_for(asyncio.wait([h.sent]), 10)
            if h.sent.cancelled():
                outcomes.append('cancelled')
            elif h.sent.exception() is not None:
                assert isinstance(h.sent.exception(), ConnectionError)
                outcomes.append('error')
            else:
                outcomes.append('ok')
            assert await asyncio.wait_for(h.released, 10) in (False, True, None)
        assert 'ok' in outcomes and outcomes[-1] != 'ok'
        assert loop.zc_stats()['pinned_bytes'] == 0
    run(ZC, main)


# ----------------------------------------------------------------------
# Teardown with notifications outstanding


def test_abort_with_notifications_outstanding():
    async def main():
        loop = asyncio.get_running_loop()
        base = fd_count()
        tr, pr, conn = await raw_peer(loop)
        with conn:
            data = bytearray(pattern(256 * KIB, seed=27))
            h = tr.write_zc(data)
            queued = tr.write_zc(pattern(MIB, seed=28))     # may still be queued
            await h.sent
            assert not h.released.done()
            tr.abort()
            assert await pr.lost is None
            # RST frees the skbs that hold our pages: released resolves.
            assert await asyncio.wait_for(h.released, 10) in (False, True)
            await asyncio.wait_for(queued.released, 10)
            assert queued.sent.done()
            data.append(0)                      # no longer exported
            assert loop.zc_stats()['pinned_bytes'] == 0
            with pytest.raises(ConnectionResetError):
                await loop.run_in_executor(None, recv_all_blocking, conn)
        return base
    before = fd_count()
    run(ZC, main)
    assert fd_count() <= before


def test_close_waits_for_pending_zc_data():
    """close() with write_zc data queued and pinned: everything is sent,
    connection_lost(None), released resolves once the peer has read."""
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await raw_peer(loop)
        with conn:
            datas = [bytearray(pattern(700 * KIB, seed=s)) for s in range(4)]
            handles = [tr.write_zc(d) for d in datas]
            tr.close()
            got = await loop.run_in_executor(None, recv_all_blocking, conn)
            assert got == b''.join(datas)
            assert await pr.lost is None
            for h in handles:
                assert await asyncio.wait_for(h.released, 10) is False
    run(ZC, main)


_LOOP_CLOSE_SCRIPT = textwrap.dedent('''
    import asyncio, socket, sys, gc, logging
    sys.path.insert(0, {tests!r})
    logging.basicConfig(level=logging.WARNING, format='LOG %(message)s')
    import zcloop
    from streamutil import Recorder, raw_peer, pattern

    loop = zcloop.Loop()
    data = bytearray(pattern(256 * 1024, seed=29))
    holder = {{}}

    async def main():
        tr, pr, conn = await raw_peer(loop)
        holder['conn'] = conn
        holder['h'] = h = tr.write_zc(data)
        holder['tr'] = tr
        await h.sent
        # More than the peer's buffers take: in flight at close; and one
        # queued behind it (one request in flight per socket).
        holder['big'] = tr.write_zc(bytearray(8 << 20))
        holder['queued'] = tr.write_zc(bytearray(64 * 1024))
        holder['queued'].released.add_done_callback(print)    # a callback to schedule
        await asyncio.sleep(0.1)
        if {close_transport}:
            tr.close()
    loop.run_until_complete(main())
    h = holder['h']
    assert not h.released.done()
    loop.close()                       # notification still outstanding
    print('closed', h.released.done(), flush=True)
    def state(fut):
        if not fut.done():
            return 'pending'
        return 'cancelled' if fut.cancelled() else repr(fut.result())
    print('states', *[state(getattr(holder[k], f)) for k in ('h', 'big', 'queued')
                      for f in ('sent', 'released')], flush=True)
    # The kernel may still reference `data`: it must stay exported.
    try:
        data.append(0)
        print('resizable', flush=True)
    except BufferError:
        print('pinned', flush=True)
    holder['conn'].close()
    del holder
    gc.collect()
    print('done', flush=True)
''')


@pytest.mark.parametrize('close_transport', [False, True], ids=['open', 'closed'])
def test_loop_close_with_notifications_outstanding(close_transport):
    script = _LOOP_CLOSE_SCRIPT.format(tests=HERE, close_transport=close_transport)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable, '-W', 'always', '-c', script], capture_output=True,
                          text=True, timeout=60, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert 'closed' in out and 'done' in out, out
    # Either every request completed during close()'s drain (the buffer is
    # free again), or a request is quarantined with one warning and the
    # buffer stays pinned forever; never a freed-but-referenced buffer.
    quarantined = 'still in flight at loop close' in out
    assert ('pinned' if quarantined else 'resizable') in out, out
    if not close_transport:
        # Still-open transports holding pinned pages are reset by close(),
        # so their notifications arrive before the ring goes.
        assert not quarantined, out
    # Every handle is settled when close() returns: `released` resolved if
    # the kernel let go (False: copied over loopback), cancelled if the
    # buffer is quarantined; the queued write never went out.
    states = out.split('states ', 1)[1].split('\n', 1)[0].split()
    assert states[0] == '262144' and states[2] == states[4] == 'cancelled', out
    released = states[1::2]
    assert set(released) <= ({'False', 'cancelled'} if quarantined else {'False'}), out
    assert 'Segmentation' not in out and 'Fatal Python error' not in out
    assert out.count('still in flight at loop close') <= 1


# ----------------------------------------------------------------------
# Unix sockets and feature switches


def test_unix_write_zc_goes_by_copy(tmp_path):
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr, conn = await unix_raw_peer(loop, str(tmp_path / 'zc'))
        with conn:
            st = tr.zc_stats()
            assert not st['zc_capable'] and not st['zc_write']
            data = bytearray(pattern(MIB, seed=30))
            reader = loop.run_in_executor(None, recv_exactly_blocking, conn, MIB)
            h = tr.write_zc(data)
            await h.sent
            assert await h.released is False
            data[:] = b'Z' * len(data)          # safe: released
            assert await reader == pattern(MIB, seed=30)
            st = tr.zc_stats()
            assert st['zc_bytes'] == 0 and st['copy_bytes'] == MIB
            tr.close()
            await pr.lost
    run(ZC, main)


def test_disable_send_zc_feature():
    async def main():
        loop = asyncio.get_running_loop()
        assert loop.zc_stats()['send_zc'] is False
        assert 'send_zc' in loop.features()['disabled']
        sp, tr, pr, srv = await loop_pair(loop, server_factory=Hasher)
        assert not tr.zc_stats()['zc_capable']
        data = bytearray(pattern(2 * MIB, seed=31))
        h = tr.write_zc(data)
        tr.write(bytes(data))
        await h.sent
        assert await h.released is False
        tr.write_eof()
        assert await sp.done == (4 * MIB, digest(bytes(data) * 2))
        assert tr.zc_stats()['zc_bytes'] == 0
        tr.close()
        await pr.lost
        srv.close()
        await srv.wait_closed()
    run(LoopFactory('zcloop', disable_features={'send_zc'}), main)


def test_disable_features_env_subprocess():
    script = textwrap.dedent(f'''
        import asyncio, sys
        sys.path.insert(0, {HERE!r})
        import zcloop
        from streamutil import Hasher, loop_pair, pattern, digest
        async def main():
            loop = asyncio.get_running_loop()
            sp, tr, pr, srv = await loop_pair(loop, server_factory=Hasher)
            h = tr.write_zc(pattern(1 << 20))
            tr.write_eof()
            n, d = await sp.done
            assert (n, d) == (1 << 20, digest(pattern(1 << 20)))
            print('released', await h.released)
            print('stats', tr.zc_stats()['zc_capable'], tr.zc_stats()['zc_bytes'])
            print('features', loop.features()['disabled'], loop.zc_stats()['send_zc'])
            tr.close(); await pr.lost
            srv.close(); await srv.wait_closed()
        zcloop.run(main())
    ''')
    env = dict(os.environ, ZCLOOP_DISABLE_FEATURES='send_zc',
               PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                          timeout=60, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert 'released False' in proc.stdout
    assert 'stats False 0' in proc.stdout
    assert "features ['send_zc'] False" in proc.stdout


def test_unknown_feature_name():
    with pytest.raises(ValueError, match='unknown zcloop feature'):
        zcloop.Loop(disable_features={'no_such_feature'})


# ----------------------------------------------------------------------
# Opcode check with perf (io_uring:io_uring_submit_req)

_PERF_SCENARIO = textwrap.dedent('''
    import asyncio, sys
    sys.path.insert(0, {tests!r})
    import zcloop
    from streamutil import Hasher, loop_pair, pattern, digest
    async def main():
        loop = asyncio.get_running_loop()
        sp, tr, pr, srv = await loop_pair(loop, server_factory=Hasher)
        sent = b''
        # below the threshold: copy sends only
        for size in (100, 8 * 1024, 16 * 1024 - 1):
            data = pattern(size, seed=size)
            h = tr.write_zc(data)
            await h.sent
            sent += data
        # plain write() to loopback never goes zero-copy, whatever the size
        for size in (64 * 1024, 512 * 1024):
            data = pattern(size, seed=size)
            tr.write(data)
            sent += data
            while tr.get_write_buffer_size():
                await asyncio.sleep(0)
        # at or above the threshold: one SEND_ZC each
        for size in (16 * 1024, 64 * 1024, 1024 * 1024):
            data = pattern(size, seed=size + 1)
            h = tr.write_zc(data)
            await h.sent
            sent += data
        tr.write_eof()
        assert await sp.done == (len(sent), digest(sent))
        print('stats', tr.zc_stats(), flush=True)
        tr.close(); await pr.lost
        srv.close(); await srv.wait_closed()
    zcloop.run(main())
''')


def test_perf_send_zc_opcodes(tmp_path):
    perf = shutil.which('perf')
    if perf is None:
        pytest.skip('perf is not installed')
    script = tmp_path / 'scenario.py'
    script.write_text(_PERF_SCENARIO.format(tests=HERE))
    data = tmp_path / 'perf.data'
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    rec = subprocess.run([perf, 'record', '-q', '-o', str(data),
                          '-e', 'io_uring:io_uring_submit_req', '--',
                          sys.executable, str(script)],
                         capture_output=True, text=True, timeout=120, env=env)
    if rec.returncode != 0 or not data.exists():
        if 'stats' not in rec.stdout:
            pytest.skip(f'perf record does not work here: {rec.stderr.strip()[:300]}')
        pytest.fail(rec.stdout + rec.stderr)
    assert 'stats' in rec.stdout, rec.stdout + rec.stderr
    rep = subprocess.run([perf, 'script', '-i', str(data)], capture_output=True, text=True,
                         timeout=120)
    if rep.returncode != 0:
        pytest.skip(f'perf script failed: {rep.stderr.strip()[:300]}')
    ops = [line.split('opcode ', 1)[1].split(',', 1)[0]
           for line in rep.stdout.splitlines() if 'opcode ' in line]
    if not ops:
        pytest.skip('perf recorded no io_uring_submit_req events (tracepoint unavailable)')
    # Three write_zc() payloads at/above the threshold -> exactly three SEND_ZC
    # (the 1 MiB one is one request: ZC requests are capped at 1 MiB).
    assert ops.count('SEND_ZC') == 3, ops
    assert ops.count('SENDMSG_ZC') == 0, ops
    # The three write_zc() payloads below it are copy requests on the ring;
    # the plain write()s on the idle socket went out inline (send(2)).
    assert ops.count('SEND') + ops.count('SENDMSG') >= 3, ops


# ----------------------------------------------------------------------
# A non-local peer: a veth pair into a network namespace made for the test.


_SINK_SERVER = textwrap.dedent('''
    import socket, sys, hashlib, threading
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((sys.argv[1], 0))
    srv.listen(64)
    print(srv.getsockname()[1], flush=True)
    def handle(c):
        h = hashlib.sha256()
        n = 0
        while True:
            d = c.recv(1 << 20)
            if not d:
                break
            h.update(d)
            n += len(d)
        c.sendall(f'{n} {h.hexdigest()}\\n'.encode())
        c.close()
    while True:
        c, _ = srv.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()
''')


@pytest.fixture(scope='module')
def netns_sink():
    """(host, port) of a sha256 sink server in a private network namespace
    reached over a veth pair: a peer zcloop does not consider local."""
    ip = shutil.which('ip')
    if ip is None or os.geteuid() != 0:
        pytest.skip('needs root and iproute2 to make a network namespace')
    tag = f'{os.getpid() % 100000}'
    ns, host_if, ns_if = f'zcl{tag}', f'zcl{tag}a', f'zcl{tag}b'
    host_addr, peer_addr = '10.213.77.1', '10.213.77.2'

    def sh(*args, check=True):
        return subprocess.run(list(args), capture_output=True, text=True, check=check)
    proc = None
    try:
        try:
            sh(ip, 'netns', 'add', ns)
            sh(ip, 'link', 'add', host_if, 'type', 'veth', 'peer', 'name', ns_if)
            sh(ip, 'link', 'set', ns_if, 'netns', ns)
            sh(ip, 'addr', 'add', f'{host_addr}/30', 'dev', host_if)
            sh(ip, 'link', 'set', host_if, 'up')
            sh(ip, 'netns', 'exec', ns, ip, 'addr', 'add', f'{peer_addr}/30', 'dev', ns_if)
            sh(ip, 'netns', 'exec', ns, ip, 'link', 'set', ns_if, 'up')
            sh(ip, 'netns', 'exec', ns, ip, 'link', 'set', 'lo', 'up')
        except subprocess.CalledProcessError as exc:
            pytest.skip(f'cannot make a network namespace: {exc.stderr.strip()}')
        proc = subprocess.Popen([ip, 'netns', 'exec', ns, sys.executable, '-c', _SINK_SERVER,
                                 peer_addr], stdout=subprocess.PIPE, text=True)
        port = int(proc.stdout.readline())
        yield peer_addr, port
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
        sh(ip, 'netns', 'del', ns, check=False)
        sh(ip, 'link', 'del', host_if, check=False)


async def _sink_result(pr):
    await pr.eof
    n, h = bytes(pr.data).split()
    return int(n), h.decode()


def test_nonlocal_plain_write_goes_zero_copy_then_demotes(netns_sink):
    """To a non-local peer, exact bytes >= threshold use SEND_ZC; the veth
    peer is local after all (the kernel copies), so the first COPIED
    notification demotes the transport to copy sends."""
    async def main():
        loop = asyncio.get_running_loop()
        tr, pr = await loop.create_connection(Recorder, *netns_sink)
        st = tr.zc_stats()
        assert st['zc_capable'] and st['zc_write']
        small = pattern(1000, seed=40)
        big = pattern(256 * KIB, seed=41)
        ba = bytearray(pattern(64 * KIB, seed=42))
        tr.write(small)                 # below threshold: copy
        tr.write(big)                   # exact bytes: SEND_ZC
        tr.write(ba)                    # snapshot -> bytes: may go SEND_ZC too
        ba[:] = b'M' * len(ba)          # mutation after write() changes nothing
        await settle(lambda: tr.zc_stats()['zc_copied'] > 0)
        st = tr.zc_stats()
        assert st['zc_bytes'] >= len(big)
        assert st['demotions'] == 1 and not st['zc_write']
        # Demoted: later plain writes are copies.
        zc_before = st['zc_bytes']
        later = pattern(512 * KIB, seed=43)
        tr.write(later)
        tr.write_eof()
        expect = small + big + pattern(64 * KIB, seed=42) + later
        assert await _sink_result(pr) == (len(expect), digest(expect))
        st = tr.zc_stats()
        assert st['zc_bytes'] == zc_before
        assert st['copy_bytes'] + st['zc_bytes'] == len(expect)
        tr.close()
        await pr.lost
    run(ZC, main)


def test_nonlocal_mixed_ordering_before_demotion(netns_sink):
    """A burst of copy and zero-copy writes issued before any notification
    arrives stays byte-exact (one request in flight per socket)."""
    import random
    rng = random.Random(44)

    async def main():
        loop = asyncio.get_running_loop()
        tr, pr = await loop.create_connection(Recorder, *netns_sink)
        expect = []
        handles = []
        for i in range(60):
            size = rng.choice([1, 100, 4 * KIB, 16 * KIB, 100 * KIB, 700 * KIB, 2 * MIB])
            data = pattern(size, seed=100 + i)
            r = rng.random()
            if r < 0.5:
                tr.write(data)
            elif r < 0.8:
                handles.append(tr.write_zc(bytearray(data)))
            else:
                tr.writelines([data[:size // 2], data[size // 2:]])
            expect.append(data)
        tr.write_eof()
        blob = b''.join(expect)
        assert await _sink_result(pr) == (len(blob), digest(blob))
        for h in handles:
            await h.sent
            assert await asyncio.wait_for(h.released, 10) in (False, None)
        st = tr.zc_stats()
        assert st['zc_bytes'] > 0 and st['zc_copied'] > 0
        assert st['pinned_bytes'] == 0
        tr.close()
        await pr.lost
    run(ZC, main, timeout=60)


# ----------------------------------------------------------------------
# A socket that refuses zero-copy: MPTCP has no SOCK_SUPPORT_ZC, so
# SEND_ZC fails with -EOPNOTSUPP.  The bytes go by copy, once.


def _mptcp_pair():
    """(client, server) of an MPTCP connection over loopback, or skip."""
    proto = getattr(socket, 'IPPROTO_MPTCP', 262)
    try:
        with open('/proc/sys/net/mptcp/enabled') as f:
            if f.read().strip() != '1':
                pytest.skip('MPTCP disabled (sysctl net.mptcp.enabled=0)')
    except OSError:
        pytest.skip('kernel without MPTCP')
    try:
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
    except OSError as exc:
        pytest.skip(f'cannot make an MPTCP socket: {exc}')
    with srv:
        srv.bind(('127.0.0.1', 0))
        srv.listen()
        cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
        cli.connect(srv.getsockname())
        conn, _ = srv.accept()
    cli.setblocking(False)
    return cli, conn


@pytest.mark.timeout(60)
@pytest.mark.parametrize('kind', ['asyncio', 'zcloop'])
def test_mptcp_refused_zero_copy_goes_by_copy(kind):
    """The same bytes arrive on both loops; on zcloop, write_zc() gets
    -EOPNOTSUPP once, the buffer is re-sent by copy and the transport stops
    trying SEND_ZC (it used to resubmit it forever)."""
    datas = [pattern(size, seed=60 + i)
             for i, size in enumerate((64 * KIB, 16 * KIB, MIB, 100, 300 * KIB))]
    blob = b''.join(datas)

    async def main():
        loop = asyncio.get_running_loop()
        cli, conn = _mptcp_pair()
        with conn:
            tr, pr = await loop.create_connection(Recorder, sock=cli)
            assert tr.get_extra_info('socket').proto == socket.IPPROTO_MPTCP
            reader = loop.run_in_executor(None, recv_exactly_blocking, conn, len(blob))
            if kind == 'zcloop':
                assert tr.get_extra_info('zcloop')['zc_capable']
                h = tr.write_zc(bytearray(datas[0]))
                assert await asyncio.wait_for(h.sent, 5) == len(datas[0])
                assert await asyncio.wait_for(h.released, 5) is False     # copied
                st = tr.get_extra_info('zcloop')
                assert st['zc_refused'] == 'EOPNOTSUPP'
                assert not st['zc_capable'] and not st['zc_write']
                assert st['sends'] == 2 and st['zc_bytes'] == 0     # refused once, then copy
                # Later write_zc() buffers go by copy without asking again,
                # batched with the plain writes around them.
                handles = [tr.write_zc(bytearray(d)) for d in datas[1:3]]
                tr.writelines(datas[3:])
                for h, d in zip(handles, datas[1:3]):
                    assert await asyncio.wait_for(h.sent, 5) == len(d)
                    assert await asyncio.wait_for(h.released, 5) is False
                st = tr.get_extra_info('zcloop')
                assert st['zc_copied'] == 0 and st['zc_bytes'] == 0
                assert st['copy_bytes'] == len(blob)
            else:
                for d in datas:
                    tr.write(d)
            assert await asyncio.wait_for(reader, 10) == blob
            tr.close()
            assert await pr.lost is None
    run(LoopFactory(kind), main)


# ----------------------------------------------------------------------
# Batching: what goes by copy shares one request, whatever its size


@pytest.mark.timeout(60)
@pytest.mark.parametrize('kind', ['asyncio', 'zcloop'])
def test_loopback_large_writes_coalesce(kind):
    """Forty plain writes of 16 KiB or more in one callback arrive intact;
    on zcloop, over loopback (never zero-copy) they share a few requests
    instead of one request each."""
    datas = [pattern(16 * KIB + 1000 * i, seed=70 + i) for i in range(40)]
    blob = b''.join(datas)

    async def main():
        loop = asyncio.get_running_loop()
        sp, tr, pr, srv = await loop_pair(loop, server_factory=Hasher)
        for d in datas:
            tr.write(d)
        tr.write_eof()
        assert await sp.done == (len(blob), digest(blob))
        if kind == 'zcloop':
            st = tr.get_extra_info('zcloop')
            assert not st['zc_write'] and st['zc_bytes'] == 0
            assert st['sends'] + st['inline_sends'] <= 6, st
        tr.close()
        await pr.lost
        srv.close()
        await srv.wait_closed()
    run(LoopFactory(kind), main)


# ----------------------------------------------------------------------
# Peers at another address of this host are local: the kernel copies, so
# plain writes and datagrams never try zero-copy towards them.  In a network
# namespace made for the test, with addresses on its loopback device.

_OWN_ADDRESS_SCRIPT = textwrap.dedent('''
    import asyncio, json, subprocess, sys
    sys.path.insert(0, {tests!r})
    import zcloop
    from streamutil import Hasher, pattern, digest
    kind, a, b, c = sys.argv[1:5]

    class Sink(asyncio.DatagramProtocol):
        def __init__(self):
            self.got = []
            self.fut = asyncio.get_running_loop().create_future()
        def datagram_received(self, data, addr):
            self.got.append(data)
            if len(self.got) == 4 and not self.fut.done():
                self.fut.set_result(None)

    async def tcp(loop, src, dst):
        done = loop.create_future()
        def factory():
            h = Hasher()
            h.done.add_done_callback(lambda f: done.set_result(f.result()))
            return h
        srv = await loop.create_server(factory, dst, 0)
        tr, pr = await loop.create_connection(asyncio.Protocol, dst,
                                              srv.sockets[0].getsockname()[1],
                                              local_addr=(src, 0))
        data = pattern(3 << 20, seed=80)
        for _ in range(3):
            tr.write(data)
        tr.write_eof()
        assert await asyncio.wait_for(done, 20) == (9 << 20, digest(data * 3))
        st = tr.get_extra_info('zcloop') if kind == 'zcloop' else None
        tr.close()
        srv.close()
        return st

    async def udp(loop, src, dst, connected):
        rtr, sink = await loop.create_datagram_endpoint(Sink, local_addr=(dst, 0))
        port = rtr.get_extra_info('sockname')[1]
        if connected:
            tr, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=(src, 0), remote_addr=(dst, port))
        else:
            tr, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, local_addr=(src, 0))
        datas = [pattern(32 << 10, seed=90 + i) for i in range(4)]
        for d in datas:
            if connected:
                tr.sendto(d)
            else:
                tr.sendto(d, (dst, port))
        await asyncio.wait_for(sink.fut, 20)
        assert sorted(sink.got) == sorted(datas)
        st = tr.get_extra_info('zcloop') if kind == 'zcloop' else None
        tr.close()
        rtr.close()
        return st

    async def main():
        loop = asyncio.get_running_loop()
        out = {{}}
        out['tcp'] = await tcp(loop, a, b)
        # An address added while the loop runs counts as soon as it exists.
        subprocess.run(['ip', 'addr', 'add', c + '/32', 'dev', 'lo'], check=True)
        out['tcp_new'] = await tcp(loop, a, c)
        out['udp'] = await udp(loop, a, b, False)
        out['udp_connected'] = await udp(loop, a, b, True)
        print('OK', json.dumps(out), flush=True)

    loop = zcloop.Loop() if kind == 'zcloop' else asyncio.SelectorEventLoop()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
''')


@pytest.fixture
def own_address_netns():
    """A network namespace whose loopback device also carries two ordinary
    addresses (a, b); c is added later by the scenario.  Yields the netns
    name and the addresses."""
    ip = shutil.which('ip')
    if ip is None or os.geteuid() != 0:
        pytest.skip('needs root and iproute2 to make a network namespace')
    ns = f'zco{os.getpid() % 100000}'
    a, b, c = '10.214.0.1', '10.214.0.2', '10.214.0.3'
    try:
        for cmd in (['netns', 'add', ns],
                    ['-n', ns, 'link', 'set', 'lo', 'up'],
                    ['-n', ns, 'addr', 'add', a + '/32', 'dev', 'lo'],
                    ['-n', ns, 'addr', 'add', b + '/32', 'dev', 'lo']):
            subprocess.run([ip] + cmd, check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        subprocess.run([ip, 'netns', 'del', ns], capture_output=True)
        pytest.skip(f'cannot make a network namespace: {exc.stderr.strip()}')
    try:
        yield ns, a, b, c
    finally:
        subprocess.run([ip, 'netns', 'del', ns], capture_output=True)


@pytest.mark.timeout(90)
@pytest.mark.parametrize('kind', ['asyncio', 'zcloop'])
def test_own_address_peer_is_local(kind, own_address_netns):
    """TCP from address a to address b of this host, then to an address c
    added while the loop runs, and UDP (connected or not) from a to b: the
    bytes arrive on both loops, and zcloop never tries SEND_ZC (no zero-copy
    bytes, no "copied" notification, no demotion)."""
    ns, a, b, c = own_address_netns
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run(['ip', 'netns', 'exec', ns, sys.executable, '-c',
                           _OWN_ADDRESS_SCRIPT.format(tests=HERE), kind, a, b, c],
                          capture_output=True, text=True, timeout=80, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and proc.stdout.startswith('OK'), out
    if kind == 'asyncio':
        return
    import json
    res = json.loads(proc.stdout.split(None, 1)[1])
    for name in ('tcp', 'tcp_new'):
        st = res[name]
        assert st['zc_capable'] and not st['zc_write'], (name, st)
        assert st['zc_bytes'] == 0 and st['zc_copied'] == 0 and st['demotions'] == 0, (name, st)
    for name in ('udp', 'udp_connected'):
        st = res[name]
        assert st['zc_capable'], (name, st)
        assert st['zc_sends'] == 0 and st['zc_copied'] == 0 and st['demotions'] == 0, (name, st)
        assert st['copy_sends'] == 4, (name, st)


def test_nonlocal_mptcp_plain_write_refused_once(netns_sink):
    """Plain write() to a peer on another host from an MPTCP socket: the
    first SEND_ZC is refused (-EOPNOTSUPP), those bytes and everything after
    go by copy, byte-exact."""
    async def main():
        loop = asyncio.get_running_loop()
        cli, conn = _mptcp_pair()       # skips without MPTCP
        cli.close()
        conn.close()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_MPTCP)
        sock.settimeout(10)
        sock.connect(netns_sink)
        sock.setblocking(False)
        tr, pr = await loop.create_connection(Recorder, sock=sock)
        assert tr.zc_stats()['zc_write']
        datas = [pattern(size, seed=50 + i) for i, size in enumerate((256 * KIB, 1000, MIB))]
        for d in datas:
            tr.write(d)
        tr.write_eof()
        blob = b''.join(datas)
        assert await asyncio.wait_for(_sink_result(pr), 20) == (len(blob), digest(blob))
        st = tr.zc_stats()
        assert st['zc_refused'] == 'EOPNOTSUPP' and not st['zc_capable'], st
        assert st['demotions'] == 1 and st['zc_bytes'] == 0 and st['zc_copied'] == 0, st
        assert st['copy_bytes'] == len(blob), st
        tr.close()
        await pr.lost
    run(ZC, main)

"""Registered buffer pools: loop.create_zc_pool(), BufferPool, and
write_zc() from a pool block going out as SEND_ZC with
IORING_RECVSEND_FIXED_BUF.  Real sockets on loopback; zcloop only (asyncio
has no write_zc).  The lifetime rules (docs/design.md "Registered buffer
pools"): a block is not reusable while the kernel may read it, closing waits
for the kernel, and every misuse is a clear exception."""
import asyncio
import ctypes
import errno
import gc
import hashlib
import json
import os
import resource
import socket
import subprocess
import sys
import textwrap

import pytest

import zcloop
from streamutil import (
    LoopFactory, Recorder, pattern, raw_peer, recv_exactly_blocking, run,
)

ZC = LoopFactory('zcloop')
KIB = 1024
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def _probe():
    loop = zcloop.Loop()
    try:
        return loop.zc_stats()['send_zc']
    finally:
        loop.close()


pytestmark = pytest.mark.skipif(not _probe(), reason='kernel has no IORING_OP_SEND_ZC')


async def settle(pred, timeout=10.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError('condition not reached')
        await asyncio.sleep(0.005)


def _addr(view):
    return ctypes.addressof(ctypes.c_char.from_buffer(view))


@pytest.mark.timeout(60)
def test_pool_acquire_release_counts():
    async def main():
        loop = asyncio.get_running_loop()
        assert loop.zc_stats()['fixed_buffers'] == 'unused'
        pool = loop.create_zc_pool(4 * KIB, 3)
        assert isinstance(pool, zcloop.BufferPool)
        assert (pool.block_size, pool.blocks, pool.free) == (4 * KIB, 3, 3)
        assert pool.registered
        st = loop.zc_stats()
        assert st['fixed_buffers'] == 'registered' and st['pools'] == 1
        views = [pool.acquire_nowait() for _ in range(3)]
        assert pool.free == 0
        assert all(len(v) == 4 * KIB and not v.readonly for v in views)
        assert len({_addr(v) for v in views}) == 3
        with pytest.raises(zcloop.PoolExhausted):
            pool.acquire_nowait()
        views[0][:5] = b'hello'
        pool.release(views[0])
        assert pool.free == 1
        with pytest.raises(ValueError, match='already returned'):
            pool.release(views[0])              # released twice
        again = pool.acquire_nowait()
        with pytest.raises(ValueError, match='already returned'):
            pool.release(views[0])              # a stale view of a re-acquired block
        with pytest.raises(ValueError, match='not a block of this BufferPool'):
            pool.release(bytearray(10))
        pool.release(again[100:200])            # a slice names its block
        assert pool.free == 1
        # A second pool on the same loop: its own registered buffer.
        pool2 = loop.create_zc_pool(64 * KIB, 2)
        assert pool2.registered and loop.zc_stats()['pools'] == 2
        with pytest.raises(ValueError):
            loop.create_zc_pool(0, 4)
        with pytest.raises(OverflowError):
            loop.create_zc_pool(1 << 30, 1 << 40)
        pool.close()
        pool2.close()
        assert pool.free == 0
        with pytest.raises(RuntimeError, match='closed'):
            pool.acquire_nowait()
        with pytest.raises(RuntimeError, match='closed'):
            await pool.acquire()
        # Views still held keep the memory mapped (reading them is safe);
        # no new export of a closed pool's block.
        assert bytes(views[1][:1]) == b'\0'
        with pytest.raises(BufferError):
            memoryview(views[1].obj)
        del views, again
        gc.collect()
        assert loop.zc_stats()['pools'] == 0
    run(ZC, main)


@pytest.mark.timeout(120)
def test_pool_stream_blocks_reused_many_times_no_corruption():
    """4 blocks, 300 writes: every block is reused ~75 times, each refilled
    only once its previous write was released; the peer checks the bytes."""
    block, nblocks, writes = 64 * KIB, 4, 300

    async def main():
        loop = asyncio.get_running_loop()
        pool = loop.create_zc_pool(block, nblocks)
        tr, pr, conn = await raw_peer(loop)
        with conn:
            expected = hashlib.sha256()
            reader = loop.run_in_executor(None, recv_exactly_blocking, conn, block * writes)
            handles = []
            for i in range(writes):
                v = await pool.acquire()
                chunk = pattern(block, seed=i)
                v[:] = chunk
                expected.update(chunk)
                handles.append(tr.write_zc(v))
                del v
            got = await reader
            assert hashlib.sha256(got).digest() == expected.digest()
            await asyncio.wait_for(asyncio.gather(*(h.released for h in handles)), 10)
            assert all(h.sent.result() == block for h in handles)
            assert pool.free == nblocks
            st = loop.zc_stats()
            assert st['fixed_sends'] == writes
            assert st['pinned_bytes'] == 0 and st['charged_bytes'] == 0   # no budget used
            assert tr.zc_stats()['zc_bytes'] == block * writes
            tr.close()
        pool.close()
    run(ZC, main, timeout=100)


@pytest.mark.timeout(60)
def test_pool_block_held_while_kernel_may_read_it():
    """A block written to a peer that does not read stays out of the pool
    (not releasable, not acquirable) until `released`; acquire() waits for
    it and gets it then."""
    size = 256 * KIB

    async def main():
        loop = asyncio.get_running_loop()
        pool = loop.create_zc_pool(size, 1)
        tr, pr, conn = await raw_peer(loop)
        with conn:
            v = pool.acquire_nowait()
            data = pattern(size, seed=7)
            v[:] = data
            h = tr.write_zc(v[:size // 2])
            h2 = tr.write_zc(v[size // 2:])       # two writes from one block
            assert await asyncio.wait_for(h2.sent, 10) == size // 2
            await asyncio.sleep(0.1)
            assert not h.released.done()          # the peer has not read
            with pytest.raises(ValueError, match='goes back to the pool by itself'):
                pool.release(v)
            with pytest.raises(zcloop.PoolExhausted):
                pool.acquire_nowait()
            waiter = asyncio.ensure_future(pool.acquire())
            await asyncio.sleep(0.05)
            assert not waiter.done() and pool.free == 0
            got = await loop.run_in_executor(None, recv_exactly_blocking, conn, size)
            assert got == data
            await asyncio.wait_for(h.released, 10)
            await asyncio.wait_for(h2.released, 10)
            v2 = await asyncio.wait_for(waiter, 10)
            assert _addr(v2) == _addr(v)
            # The old view outlived its lease: refused.
            with pytest.raises(ValueError, match='returned to the pool'):
                tr.write_zc(v)
            with pytest.raises(ValueError, match='already returned'):
                pool.release(v)
            pool.release(v2)
            tr.close()
        pool.close()
    run(ZC, main)


@pytest.mark.timeout(60)
def test_pool_acquire_cancelled_takes_no_block():
    async def main():
        loop = asyncio.get_running_loop()
        pool = loop.create_zc_pool(4 * KIB, 1)
        v = pool.acquire_nowait()
        # Cancelled while waiting.
        t1 = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        t1.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t1
        # Woken for the block, then cancelled before it ran: the block goes
        # to the next waiter.
        t2 = asyncio.ensure_future(pool.acquire())
        t3 = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        pool.release(v)
        t2.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t2
        v3 = await asyncio.wait_for(t3, 5)
        assert pool.free == 0
        pool.release(v3)
        assert pool.free == 1
        # close() fails the waiters.
        v = pool.acquire_nowait()
        t4 = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        pool.close()
        with pytest.raises(RuntimeError, match='closed'):
            await t4
    run(ZC, main)


@pytest.mark.timeout(60)
def test_pool_close_with_write_in_flight_waits_for_the_kernel():
    size = 256 * KIB

    async def main():
        loop = asyncio.get_running_loop()
        pool = loop.create_zc_pool(size, 2)
        tr, pr, conn = await raw_peer(loop)
        with conn:
            v = pool.acquire_nowait()
            data = pattern(size, seed=9)
            v[:] = data
            h = tr.write_zc(v)
            del v
            await asyncio.wait_for(h.sent, 10)
            pool.close()
            assert pool.closed
            gc.collect()
            # The kernel still holds the block: registration and memory stay.
            st = loop.zc_stats()
            assert st['pools'] == 1 and pool.registered
            got = await loop.run_in_executor(None, recv_exactly_blocking, conn, size)
            assert got == data
            await asyncio.wait_for(h.released, 10)
            await settle(lambda: loop.zc_stats()['pools'] == 0)
            assert not pool.registered
            tr.close()
        # Its slot is free again: a new pool registers.
        assert loop.create_zc_pool(size, 1).registered
    run(ZC, main)


@pytest.mark.timeout(60)
def test_pool_used_after_close_and_from_another_loop():
    other = zcloop.Loop()
    try:
        foreign = other.create_zc_pool(4 * KIB, 2)
        fv = foreign.acquire_nowait()

        async def main():
            loop = asyncio.get_running_loop()
            pool = loop.create_zc_pool(4 * KIB, 2)
            tr, pr, conn = await raw_peer(loop)
            with conn:
                with pytest.raises(RuntimeError, match='another event loop'):
                    tr.write_zc(fv)
                v = pool.acquire_nowait()
                pool.close()
                with pytest.raises(RuntimeError, match='BufferPool is closed'):
                    tr.write_zc(v)
                assert tr.zc_stats()['sends'] == 0        # nothing went out
                tr.close()
        run(ZC, main)
    finally:
        other.close()
    # The foreign pool was closed with its loop; its view stays readable.
    assert foreign.closed and bytes(fv[:3]) == b'\0\0\0'


@pytest.mark.timeout(60)
def test_pool_buffer_crossing_two_blocks():
    async def main():
        loop = asyncio.get_running_loop()
        pool = loop.create_zc_pool(4 * KIB, 4)
        tr, pr, conn = await raw_peer(loop)
        with conn:
            a = pool.acquire_nowait()
            b = pool.acquire_nowait()
            lo = min(_addr(a), _addr(b))
            # A raw buffer over the end of one block and the start of the next.
            span = (ctypes.c_char * 200).from_address(lo + 4 * KIB - 100)
            with pytest.raises(ValueError, match='crosses two blocks'):
                tr.write_zc(span)
            with pytest.raises(ValueError, match='crosses two blocks'):
                pool.release(span)
            # Inside one block, any exporter is recognised as that block.
            inside = (ctypes.c_char * 100).from_address(lo + 10)
            inside[:] = b'x' * 100
            h = tr.write_zc(inside)
            got = await loop.run_in_executor(None, recv_exactly_blocking, conn, 100)
            assert got == b'x' * 100
            await asyncio.wait_for(h.released, 10)
            assert pool.free == 3       # that block went back on release
            tr.close()
    run(ZC, main)


@pytest.mark.timeout(60)
def test_pool_unregistered_falls_back_to_write_zc():
    """fixed_buffers disabled (as a refused registration): the pool works,
    sends take today's write_zc path, the reason is in zc_stats()."""
    async def main():
        loop = asyncio.get_running_loop()
        pool = loop.create_zc_pool(64 * KIB, 2)
        assert not pool.registered
        assert loop.zc_stats()['fixed_buffers'] == 'unavailable: disabled'
        tr, pr, conn = await raw_peer(loop)
        with conn:
            v = await pool.acquire()
            v[:] = pattern(64 * KIB, seed=3)
            h = tr.write_zc(v)
            got = await loop.run_in_executor(None, recv_exactly_blocking, conn, 64 * KIB)
            assert got == pattern(64 * KIB, seed=3)
            await asyncio.wait_for(h.released, 10)
            assert loop.zc_stats()['fixed_sends'] == 0
            assert tr.zc_stats()['zc_bytes'] == 64 * KIB     # SEND_ZC, pinned per request
            assert pool.free == 2
            tr.close()
    run(LoopFactory('zcloop', disable_features={'fixed_buffers'}), main)


@pytest.mark.timeout(60)
def test_pool_block_on_mptcp_goes_by_copy_and_returns():
    from test_streams_zc import _mptcp_pair
    size = 64 * KIB

    async def main():
        loop = asyncio.get_running_loop()
        cli, conn = _mptcp_pair()
        pool = loop.create_zc_pool(size, 1)
        with conn:
            tr, pr = await loop.create_connection(Recorder, sock=cli)
            v = pool.acquire_nowait()
            v[:] = pattern(size, seed=5)
            h = tr.write_zc(v)
            got = await loop.run_in_executor(None, recv_exactly_blocking, conn, size)
            assert got == pattern(size, seed=5)
            assert await asyncio.wait_for(h.released, 5) is False
            assert tr.zc_stats()['zc_refused'] == 'EOPNOTSUPP'
            assert pool.free == 1
            tr.close()
    run(ZC, main)


@pytest.mark.timeout(60)
def test_pool_loop_close_with_write_in_flight():
    """loop.close() with a block the kernel may still read: `released`
    settles (resolved if the kernel let go in the close drain, cancelled if
    quarantined), the memory stays mapped while anything may read it."""
    size = 256 * KIB
    loop = zcloop.Loop()
    srv = socket.create_server(('127.0.0.1', 0))
    try:
        async def main():
            pool = loop.create_zc_pool(size, 1)
            tr, pr = await loop.create_connection(Recorder, *srv.getsockname())
            v = pool.acquire_nowait()
            v[:] = b'z' * size
            h = tr.write_zc(v)
            await asyncio.wait_for(h.sent, 10)
            return pool, v, h
        pool, v, h = loop.run_until_complete(main())
        conn, _ = srv.accept()
        loop.close()
        assert h.released.done()
        assert pool.closed
        assert bytes(v[:3]) == b'zzz'       # still mapped
        conn.close()
    finally:
        srv.close()
        if not loop.is_closed():
            loop.close()


MEMLOCK_CHILD = """
import asyncio, errno, json, socket, sys
import zcloop

async def main():
    loop = asyncio.get_running_loop()
    out = {}
    try:
        loop.create_zc_pool(64 * 1024, 64)        # 4 MiB > 2 MiB limit
    except OSError as exc:
        out['too_big'] = [exc.errno, str(exc)]
    small = loop.create_zc_pool(64 * 1024, 4)     # 256 KiB: fits
    out['small'] = small.registered
    # Fits the limit alone, not with what is locked already: the kernel
    # refuses the registration, the pool works unregistered.
    big = loop.create_zc_pool(64 * 1024, 28)
    out['big'] = big.registered
    out['fixed_buffers'] = loop.zc_stats()['fixed_buffers']
    srv = socket.create_server(('127.0.0.1', 0))
    tr, pr = await loop.create_connection(asyncio.Protocol, *srv.getsockname())
    conn, _ = srv.accept()
    conn.setblocking(False)
    total = 0
    for pool in (small, big):
        v = await pool.acquire()
        v[:] = b'q' * len(v)
        h = tr.write_zc(v)
        while not h.released.done():
            try:
                total += len(conn.recv(1 << 20))
            except BlockingIOError:
                pass
            await asyncio.sleep(0.001)
    while total < 128 * 1024:
        try:
            total += len(conn.recv(1 << 20))
        except BlockingIOError:
            await asyncio.sleep(0.001)
    out['received'] = total
    out['fixed_sends'] = loop.zc_stats()['fixed_sends']
    tr.close()
    conn.close()
    srv.close()
    print('OK', json.dumps(out))

zcloop.run(main())
"""


@pytest.mark.timeout(60)
def test_pool_larger_than_memlock():
    """Without CAP_IPC_LOCK, registration is charged to RLIMIT_MEMLOCK: a
    pool larger than the limit is OSError(ENOMEM); one the kernel refuses
    for what is locked already works unregistered, the reason in
    zc_stats()."""
    from test_faults import _limit_memlock
    if os.geteuid() != 0 and resource.getrlimit(resource.RLIMIT_MEMLOCK)[1] < (2 << 20):
        pytest.skip('cannot set the memlock limit here')
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, '-c', textwrap.dedent(MEMLOCK_CHILD)],
                          env=env, capture_output=True, text=True, timeout=45,
                          preexec_fn=_limit_memlock(2 << 20, 'root-without-cap-ipc-lock'))
    assert proc.returncode == 0 and proc.stdout.startswith('OK'), proc.stdout + proc.stderr
    out = json.loads(proc.stdout.split(None, 1)[1])
    assert out['too_big'][0] == errno.ENOMEM and 'RLIMIT_MEMLOCK' in out['too_big'][1]
    assert out['small'] is True
    assert out['big'] is False
    assert out['fixed_buffers'].startswith('unavailable: ENOMEM')
    assert out['received'] == 64 * 1024 * 2
    assert out['fixed_sends'] == 1

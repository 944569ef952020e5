"""A typed user program on zcloop's public API, checked by `mypy --strict`
and also run for real (tests/test_typing.py): zero-copy writes, a registered
buffer pool, statistics, features and the entry points."""
import asyncio

import zcloop


class Sink(asyncio.Protocol):
    def __init__(self, done: asyncio.Future[int]) -> None:
        self.done = done
        self.received = 0

    def data_received(self, data: bytes) -> None:
        self.received += len(data)

    def eof_received(self) -> bool:
        self.done.set_result(self.received)
        return False


async def send_zero_copy(payload: bytes) -> tuple[int, int, bool | None, int]:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, zcloop.Loop)
    done: asyncio.Future[int] = loop.create_future()
    server = await loop.create_server(lambda: Sink(done), "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    assert isinstance(transport, zcloop.StreamTransport)
    transport.set_zc_threshold(1)
    handle: zcloop.ZeroCopyWrite = transport.write_zc(payload)
    sent: int = await handle.sent
    zerocopy: bool | None = await handle.released
    transport.write_eof()
    received = await done
    per_transport: dict[str, int | bool] = transport.zc_stats()
    assert isinstance(per_transport, dict)
    transport.close()
    server.close()
    await server.wait_closed()
    pinned: int = loop.zc_stats()["pinned_bytes"]
    return sent, received, zerocopy, pinned


async def send_from_pool(payload: bytes) -> tuple[int, int]:
    """write_zc() of a block of a registered BufferPool."""
    loop = asyncio.get_running_loop()
    assert isinstance(loop, zcloop.Loop)
    pool: zcloop.BufferPool = loop.create_zc_pool(len(payload), 2)
    done: asyncio.Future[int] = loop.create_future()
    server = await loop.create_server(lambda: Sink(done), "127.0.0.1", 0)
    port: int = server.sockets[0].getsockname()[1]
    transport, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    assert isinstance(transport, zcloop.StreamTransport)
    block: memoryview = await pool.acquire()
    block[:] = payload
    handle = transport.write_zc(block)
    del block
    await handle.released           # the block is back in the pool
    transport.write_eof()
    received = await done
    free: int = pool.free
    spare = pool.acquire_nowait()
    pool.release(spare)
    pool.close()
    transport.close()
    server.close()
    await server.wait_closed()
    fixed_sends: int = loop.zc_stats()["fixed_sends"]
    assert free == pool.blocks and fixed_sends >= 0
    return received, free


def main() -> None:
    if (reason := zcloop.available()) is not None:
        raise SystemExit(f"io_uring unavailable: {reason}")
    ops: dict[str, bool] = zcloop.features().get("ops", {})
    assert ops.get("SEND_ZC") is not None
    payload = b"z" * 65536
    sent, received, zerocopy, pinned = zcloop.run(send_zero_copy(payload))
    assert sent == received == len(payload) and pinned == 0, (sent, received, pinned)
    assert zerocopy in (True, False, None)

    loop: zcloop.Loop = zcloop.new_event_loop()
    threshold: int = loop.zc_threshold
    loop.close()
    fallback_ok: asyncio.AbstractEventLoop = zcloop.new_event_loop(fallback=True)
    fallback_ok.close()

    def factory() -> zcloop.Loop:
        return zcloop.Loop(disable_features=["send_zc"])

    received_from_pool, free = zcloop.run(send_from_pool(payload))
    assert received_from_pool == len(payload) and free == 2, (received_from_pool, free)

    result = zcloop.run(send_zero_copy(payload), loop_factory=factory, debug=False)
    print("ok", threshold, result[0])


if __name__ == "__main__":
    main()

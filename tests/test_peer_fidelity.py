"""Differences from asyncio found by the peer suites (make test-peers,
docs/peers.md) that zcloop's own scenarios did not cover."""
import asyncio
import os
import threading

import pytest


def test_closed_attribute(loop_factory):
    # uvloop's test_base.py::test_close reads asyncio's BaseEventLoop._closed.
    loop = loop_factory()
    assert loop._closed is False
    loop.close()
    assert loop._closed is True


def test_default_executor_thread_name(run):
    # asyncio names its default executor's threads asyncio_0, asyncio_1, ...
    async def main():
        return await asyncio.get_running_loop().run_in_executor(
            None, lambda: threading.current_thread().name)

    assert run(main).startswith("asyncio_")


@pytest.mark.parametrize("method", ["is_reading", "pause_reading", "resume_reading"])
def test_write_pipe_has_no_reading_side(run, method):
    # asyncio's write pipe transport inherits ReadTransport's methods, which
    # raise NotImplementedError (uvloop's test_process_streams_basic_1).
    async def main():
        r, w = os.pipe()
        try:
            transport, _ = await asyncio.get_running_loop().connect_write_pipe(
                asyncio.BaseProtocol, os.fdopen(w, "wb"))
            try:
                with pytest.raises(NotImplementedError):
                    getattr(transport, method)()
            finally:
                transport.close()
                await asyncio.sleep(0)
        finally:
            os.close(r)

    run(main)


@pytest.mark.parametrize("method", ["write", "writelines", "write_eof", "can_write_eof"])
def test_read_pipe_has_no_writing_side(run, method):
    # asyncio's read pipe transport has no write-side methods (AttributeError);
    # uvloop's test_process_streams_basic_1 accepts that or NotImplementedError.
    args = {"write": (b"x",), "writelines": ([b"x"],)}.get(method, ())

    async def main():
        r, w = os.pipe()
        try:
            transport, _ = await asyncio.get_running_loop().connect_read_pipe(
                asyncio.Protocol, os.fdopen(r, "rb"))
            try:
                with pytest.raises((NotImplementedError, AttributeError)):
                    getattr(transport, method)(*args)
            finally:
                transport.close()
                await asyncio.sleep(0)
        finally:
            os.close(w)

    run(main)

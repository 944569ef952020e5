"""The Python servers the benchmarks load, one process per (server kind, loop).

    python bench/servers.py KIND [--host H] [--port 0] [--certfile PEM [--keyfile PEM]]
                            [--cc NAME]

These are plain asyncio programs: bench/harness.py picks the event loop by
starting them with ZCLOOP_LOOP and zcloop/_inject on PYTHONPATH, the same way
``python -m zcloop compare`` does.  Once listening, a server prints
``READY port=N loop=<module.Class of the running loop>`` (the harness checks
the loop is the one it asked for).  The only other lines on stdout are the
``STATS {json}`` lines of the source-protocol and source-pool kinds, one per
closed connection.

With --cc the listening socket gets that TCP congestion control
(TCP_CONGESTION; accepted connections inherit it): bench/modes.py varies it.

With --certfile every kind serves TLS (an ssl.SSLContext passed to the
server, as an application would); bench/harness.py makes the certificates.

Kinds:
  echo-protocol   echo every byte back, asyncio.Protocol
  echo-streams    echo every byte back, asyncio.start_server
  sink-protocol   one-way: the client sends an 8-byte little-endian message
  sink-streams      size, then messages; the server counts bytes and sends a
                    1-byte ack per message (Protocol / Streams API)
  source-protocol one-way the other way: the client sends the 8-byte size and
                    one byte, b"w" or b"z"; the server then streams messages of
                    that size (one bytes object, written again and again) with
                    transport.write() (w) or zcloop's transport.write_zc() (z),
                    paced by pause_writing()/resume_writing(); when the
                    connection is lost it prints STATS with the bytes written
                    and, on zcloop, get_extra_info("zcloop") and what the
                    write_zc() handles' `released` futures said
  source-streams  source-protocol's b"w" with asyncio.start_server: the
                    server loops writer.write(message); await writer.drain()
                    until the client closes (no STATS)
  source-pool     source-protocol, but b"z" sends blocks of a registered BufferPool
                    (loop.create_zc_pool(SIZE, blocks), filled once): each
                    message acquires a free block and write_zc()s it; it
                    returns to the pool when its `released` resolves (zcloop)
  http-aiohttp    aiohttp "Hello, World!" on /
  ws-echo         websockets echo
"""
import argparse
import asyncio
import json
import signal
import socket
import ssl
import sys

HEADER = 8  # one-way mode: message size, little endian, sent once per connection


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


async def echo_stream(reader, writer):
    try:
        while data := await reader.read(256 * 1024):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


class SinkProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.header = b""
        self.message_size = None
        self.unacked = 0  # bytes received towards the next ack

    def data_received(self, data):
        if self.message_size is None:
            self.header += data
            if len(self.header) < HEADER:
                return
            self.message_size = int.from_bytes(self.header[:HEADER], "little")
            data = self.header[HEADER:]
        self.unacked += len(data)
        if self.unacked >= self.message_size:
            messages, self.unacked = divmod(self.unacked, self.message_size)
            self.transport.write(b"\x01" * messages)


async def sink_stream(reader, writer):
    try:
        message_size = int.from_bytes(await reader.readexactly(HEADER), "little")
        unacked = 0
        while data := await reader.read(1024 * 1024):
            unacked += len(data)
            if unacked >= message_size:
                messages, unacked = divmod(unacked, message_size)
                writer.write(b"\x01" * messages)
                await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


class SourceProtocol(asyncio.Protocol):
    """Streams SIZE-byte messages to the client as fast as flow control lets it."""

    payloads = {}  # size -> bytes, shared by connections

    def connection_made(self, transport):
        self.transport = transport
        self.header = b""
        self.payload = None
        self.zero_copy = False
        self.paused = self.closed = False
        self.written = 0
        self.released = {True: 0, False: 0, None: 0}  # write_zc: released's results
        self.unreleased = set()  # write_zc handles whose `released` is pending
        self.zero_copy_sent = {}  # outcome of `sent` -> count, for released == True

    def data_received(self, data):
        if self.payload is not None:
            return  # the client sends nothing after the header
        self.header += data
        if len(self.header) < HEADER + 1:
            return
        size = int.from_bytes(self.header[:HEADER], "little")
        method = self.header[HEADER:HEADER + 1]
        if method not in (b"w", b"z"):
            self.transport.close()
            return
        self.zero_copy = method == b"z"
        if self.zero_copy and not hasattr(self.transport, "write_zc"):
            print("source: write_zc() asked for, but this loop has none", flush=True,
                  file=sys.stderr)
            self.transport.close()
            return
        self.payload = self.payloads.get(size) or self.payloads.setdefault(size, b"x" * size)
        self.pump()

    def message(self):
        """What write_zc() sends next, or None to wait for a `released`."""
        return self.payload

    def pump(self):
        # pause_writing() is called from inside write()/write_zc() once the
        # transport's buffer passes its high-water mark.  A transport that
        # failed inside write() (peer gone) drops later writes without pausing:
        # is_closing() ends the loop then.
        while not self.paused and not self.transport.is_closing():
            if self.zero_copy:
                message = self.message()
                if message is None:
                    break
                handle = self.transport.write_zc(message)
                self.unreleased.add(handle.released)
                handle.released.add_done_callback(
                    lambda released, handle=handle: self.on_released(handle))
            else:
                self.transport.write(self.payload)
            self.written += len(self.payload)

    def on_released(self, handle):
        self.unreleased.discard(handle.released)
        zero_copy = handle.released.result()
        self.released[zero_copy] += 1
        if zero_copy:
            # Did such a buffer reach the peer?  (A "not copied" report on a
            # local path can only be for data that was never delivered.)
            sent = handle.sent
            outcome = ("cancelled" if sent.cancelled() else "pending" if not sent.done() else
                       "failed" if sent.exception() else "sent")
            self.zero_copy_sent[outcome] = self.zero_copy_sent.get(outcome, 0) + 1

        if not self.paused and not self.closed:
            self.pump()     # a pool block may be free again (PooledSourceProtocol)

    def pause_writing(self):
        self.paused = True

    def resume_writing(self):
        self.paused = False
        self.pump()

    def connection_lost(self, exc):
        self.closed = True
        asyncio.ensure_future(self.report())

    async def report(self):
        """Print STATS once the kernel let go of every write_zc() buffer (at most 2 s)."""
        if self.unreleased:
            await asyncio.wait(list(self.unreleased), timeout=2)
        stats = {"api": "write_zc" if self.zero_copy else "write", "written": self.written,
                 "zcloop": self.transport.get_extra_info("zcloop")}
        if self.zero_copy:
            stats["released"] = {"zerocopy": self.released[True],
                                 "copied": self.released[False],
                                 "unknown": self.released[None],
                                 "pending": len(self.unreleased),
                                 "zerocopy_sent": self.zero_copy_sent}
        print("STATS " + json.dumps(stats), flush=True)


async def source_stream(reader, writer):
    try:
        header = await reader.readexactly(HEADER + 1)
        size = int.from_bytes(header[:HEADER], "little")
        if header[HEADER:] != b"w" or not size:
            return
        payload = (SourceProtocol.payloads.get(size) or
                   SourceProtocol.payloads.setdefault(size, b"x" * size))
        # A transport that failed inside write() (peer gone) drops later
        # writes; drain() then raises, or is_closing() ends the loop.
        while not writer.is_closing():
            writer.write(payload)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


class PooledSourceProtocol(SourceProtocol):
    """SourceProtocol whose write_zc() messages are blocks of a registered
    BufferPool, one per message size for the process (64 MiB of blocks, at
    least 4)."""

    pools = {}  # size -> BufferPool

    def message(self):
        import zcloop
        pool = self.pools.get(len(self.payload))
        if pool is None:
            size = len(self.payload)
            pool = asyncio.get_running_loop().create_zc_pool(size, max(4, 64 * 1024 * 1024 // size))
            views = [pool.acquire_nowait() for _ in range(pool.blocks)]
            for view in views:
                view[:] = self.payload
                pool.release(view)
            self.pools[size] = pool
        try:
            return pool.acquire_nowait()
        except zcloop.PoolExhausted:
            return None


async def start_aiohttp(host, port, ssl_context):
    from aiohttp import web

    async def hello(request):
        return web.Response(text="Hello, World!")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context)
    await site.start()
    return runner.addresses[0][1]


async def start_ws_echo(host, port, ssl_context):
    from websockets.asyncio.server import serve

    async def echo(websocket):
        async for message in websocket:
            await websocket.send(message)

    server = await serve(echo, host, port, compression=None, ssl=ssl_context)
    return next(iter(server.sockets)).getsockname()[1]


async def start_server(kind, host, port, ssl_context=None, cc=None):
    """Start the server; return the port it listens on."""
    loop = asyncio.get_running_loop()
    if cc and kind in ("http-aiohttp", "ws-echo"):
        raise ValueError(f"--cc is not supported for {kind}")
    protocols = {"echo-protocol": EchoProtocol, "sink-protocol": SinkProtocol,
                 "source-protocol": SourceProtocol, "source-pool": PooledSourceProtocol}
    streams = {"echo-streams": echo_stream, "sink-streams": sink_stream,
               "source-streams": source_stream}
    if kind in protocols:
        server = await loop.create_server(protocols[kind], host, port, ssl=ssl_context)
    elif kind in streams:
        server = await asyncio.start_server(streams[kind], host, port, ssl=ssl_context)
    elif kind == "http-aiohttp":
        return await start_aiohttp(host, port, ssl_context)
    elif kind == "ws-echo":
        return await start_ws_echo(host, port, ssl_context)
    else:
        raise ValueError(kind)
    if cc:
        for sock in server.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, cc.encode())
    return server.sockets[0].getsockname()[1]


def server_ssl_context(certfile, keyfile):
    """What an application would do: a default server context with its certificate."""
    if not certfile:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


async def main(args):
    loop = asyncio.get_running_loop()
    port = await start_server(args.kind, args.host, args.port,
                              server_ssl_context(args.certfile, args.keyfile), args.cc)
    loop_class = type(loop)
    print(f"READY port={port} loop={loop_class.__module__}.{loop_class.__qualname__}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


KINDS = ("echo-protocol", "echo-streams", "sink-protocol", "sink-streams", "source-protocol",
         "source-streams", "source-pool", "http-aiohttp", "ws-echo")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--certfile", help="serve TLS with this certificate chain (PEM)")
    parser.add_argument("--keyfile", help="its private key, if not in --certfile")
    parser.add_argument("--cc", metavar="NAME",
                        help="TCP congestion control of the listening socket (e.g. cubic)")
    asyncio.run(main(parser.parse_args()))

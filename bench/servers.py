"""The Python servers the benchmarks load, one process per (server kind, loop).

    python bench/servers.py KIND [--host H] [--port 0]

These are plain asyncio programs: bench/harness.py picks the event loop by
starting them with ZCLOOP_LOOP and zcloop/_inject on PYTHONPATH, the same way
``python -m zcloop compare`` does.  Once listening, a server prints
``READY port=N loop=<module.Class of the running loop>`` (the harness checks
the loop is the one it asked for) and prints nothing else on stdout.

Kinds:
  echo-protocol   echo every byte back, asyncio.Protocol
  echo-streams    echo every byte back, asyncio.start_server
  sink-protocol   one-way: the client sends an 8-byte little-endian message
  sink-streams      size, then messages; the server counts bytes and sends a
                    1-byte ack per message (Protocol / Streams API)
  http-aiohttp    aiohttp "Hello, World!" on /
  ws-echo         websockets echo
"""
import argparse
import asyncio
import signal

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


async def start_aiohttp(host, port):
    from aiohttp import web

    async def hello(request):
        return web.Response(text="Hello, World!")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner.addresses[0][1]


async def start_ws_echo(host, port):
    from websockets.asyncio.server import serve

    async def echo(websocket):
        async for message in websocket:
            await websocket.send(message)

    server = await serve(echo, host, port, compression=None)
    return next(iter(server.sockets)).getsockname()[1]


async def start_server(kind, host, port):
    """Start the server; return the port it listens on."""
    loop = asyncio.get_running_loop()
    if kind == "echo-protocol":
        server = await loop.create_server(EchoProtocol, host, port)
    elif kind == "echo-streams":
        server = await asyncio.start_server(echo_stream, host, port)
    elif kind == "sink-protocol":
        server = await loop.create_server(SinkProtocol, host, port)
    elif kind == "sink-streams":
        server = await asyncio.start_server(sink_stream, host, port)
    elif kind == "http-aiohttp":
        return await start_aiohttp(host, port)
    elif kind == "ws-echo":
        return await start_ws_echo(host, port)
    else:
        raise ValueError(kind)
    return server.sockets[0].getsockname()[1]


async def main(args):
    loop = asyncio.get_running_loop()
    port = await start_server(args.kind, args.host, args.port)
    loop_class = type(loop)
    print(f"READY port={port} loop={loop_class.__module__}.{loop_class.__qualname__}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


KINDS = ("echo-protocol", "echo-streams", "sink-protocol", "sink-streams", "http-aiohttp",
         "ws-echo")

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    asyncio.run(main(parser.parse_args()))

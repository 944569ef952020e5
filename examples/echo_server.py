"""TCP echo server: everything a client sends comes back.

    python examples/echo_server.py [--port 8888] [--loop zcloop|uvloop|asyncio] [--streams]

Protocol API by default (lowest overhead), or the Streams API with --streams.
Try it with: nc 127.0.0.1 8888
"""
import argparse
import asyncio
from typing import cast

from _runner import loop_name, make_parser, run, wait_for_shutdown


class EchoProtocol(asyncio.Protocol):
    transport: asyncio.Transport

    def __init__(self, connections: set[asyncio.Transport]) -> None:
        self.connections = connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance(): uvloop's and zcloop's transports do not subclass asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.connections.add(self.transport)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self.transport)


async def echo_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(64 * 1024):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    connections: set[asyncio.Transport] = set()
    if args.streams:
        server = await asyncio.start_server(echo_stream, args.host, args.port)
    else:
        server = await loop.create_server(lambda: EchoProtocol(connections), args.host, args.port)
    host, port = server.sockets[0].getsockname()[:2]
    api = "streams" if args.streams else "protocol"
    print(f"echo server ({api}) on {host}:{port}, loop {loop_name()}", flush=True)

    await wait_for_shutdown()
    server.close()
    for transport in list(connections):
        transport.close()
    # Stream handlers still running are cancelled (and close their writers)
    # when asyncio.Runner shuts down.


if __name__ == "__main__":
    parser = make_parser("TCP echo server.", default_port=8888)
    parser.add_argument("--streams", action="store_true",
                        help="use asyncio.start_server (Streams API) instead of a Protocol")
    args = parser.parse_args()
    run(main(args), args.loop)

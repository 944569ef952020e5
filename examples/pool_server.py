"""Static file server sending from a registered buffer pool (zcloop).

    python examples/pool_server.py [--root DIR] [--port 8000] [--loop zcloop|uvloop|asyncio]
                                   [--block-size BYTES] [--blocks N]

HTTP/1.0 GET, one request per connection.  On zcloop each file is read
straight into blocks of a BufferPool (``loop.create_zc_pool``), registered
with the ring once at startup, and every block goes out with
``transport.write_zc(view)``: the kernel sends from the block without pinning
pages per send, and the block goes back to the pool by itself once the kernel
let go of it.  ``await pool.acquire()`` waits while every block is in flight,
which bounds the memory a slow client can hold.  Other loops read into bytes
and write() them.
"""
import argparse
import asyncio
import os
from io import BufferedReader
from typing import cast
from urllib.parse import unquote, urlsplit

import zcloop
from _runner import loop_name, make_parser, run, wait_for_shutdown


def resolve(root: str, target: str) -> str | None:
    relative = unquote(urlsplit(target).path).lstrip("/")
    path = os.path.realpath(os.path.join(root, relative))
    if os.path.commonpath([path, root]) != root:
        return None  # escapes the root
    if os.path.isdir(path):
        path = os.path.join(path, "index.html")
    return path if os.path.isfile(path) else None


async def send_file(writer: asyncio.StreamWriter, file: BufferedReader,
                    pool: zcloop.BufferPool | None) -> None:
    if pool is None:
        while chunk := file.read(256 * 1024):
            writer.write(chunk)
            await writer.drain()
        return
    while True:
        view = await pool.acquire()
        # Blocking reads are fine here: a page-cache hit costs microseconds.
        n = file.readinto(view)
        if not n:
            pool.release(view)          # never written: give it back
            return
        # cast, not isinstance(): with a pool the loop is zcloop, whose
        # transports do not subclass asyncio.Transport.
        transport = cast(zcloop.StreamTransport, writer.transport)
        transport.write_zc(view[:n])    # back to the pool when released
        del view                        # the block is the kernel's now
        await writer.drain()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, root: str,
                 pool: zcloop.BufferPool | None) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
        path = resolve(root, target) if method == "GET" else None
        if path is None:
            status = "404 Not Found" if method == "GET" else "405 Method Not Allowed"
            writer.write(f"HTTP/1.0 {status}\r\nContent-Length: 0\r\n\r\n".encode())
        else:
            with open(path, "rb") as file:
                size = os.fstat(file.fileno()).st_size
                writer.write(f"HTTP/1.0 200 OK\r\nContent-Length: {size}\r\n"
                             f"Connection: close\r\n\r\n".encode())
                await send_file(writer, file, pool)
        await writer.drain()
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
            ConnectionError):
        pass
    finally:
        writer.close()


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    root = os.path.realpath(args.root)
    pool = None
    fixed = "no pool"
    if isinstance(loop, zcloop.Loop):
        pool = loop.create_zc_pool(args.block_size, args.blocks)
        fixed = loop.zc_stats()["fixed_buffers"]
    server = await asyncio.start_server(lambda r, w: handle(r, w, root, pool),
                                        args.host, args.port)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"serving {root} on http://{host}:{port}/, loop {loop_name()}, "
          f"buffers {fixed}", flush=True)
    await wait_for_shutdown()
    server.close()
    if pool is not None:
        pool.close()


if __name__ == "__main__":
    parser = make_parser("Static file server sending from a registered buffer pool.",
                         default_port=8000)
    parser.add_argument("--root", default=".", help="directory to serve (default: current)")
    parser.add_argument("--block-size", type=int, default=64 * 1024, metavar="BYTES",
                        help="pool block size (default: %(default)s)")
    parser.add_argument("--blocks", type=int, default=64,
                        help="pool blocks (default: %(default)s; memlock: size x blocks)")
    args = parser.parse_args()
    run(main(args), args.loop)

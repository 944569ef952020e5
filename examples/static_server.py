"""Static file server: HTTP/1.1 (GET/HEAD, keep-alive, pipelining) on asyncio Protocols.

    python examples/static_server.py [--root DIR] [--port 8000] [--loop zcloop|uvloop|asyncio]

How a file body is sent:
  * files up to --cache-limit bytes are read once and kept in memory (immutable
    bytes).  Large cached bodies go out with zcloop's zero-copy
    ``transport.write_zc(data)`` when the transport has it: the kernel sends
    straight from our bytes object, which is safe because it is never mutated.
    Other transports (and small bodies, where zero-copy does not pay) use
    ``transport.write``.
  * bigger files are streamed with ``loop.sendfile(transport, file)``; loops
    without it (uvloop) get a chunked read/write fallback.
"""
import argparse
import asyncio
import mimetypes
import os
from typing import BinaryIO, cast
from urllib.parse import unquote, urlsplit

from _runner import loop_name, make_parser, run, wait_for_shutdown

MAX_HEADER_BYTES = 64 * 1024
#: Below this, zero-copy sends cost more (page pinning, notifications) than copying.
ZERO_COPY_MIN = 64 * 1024
CHUNK = 256 * 1024
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           431: "Request Header Fields Too Large", 501: "Not Implemented"}


class FileStore:
    """Maps request paths to files under root; caches small files' contents."""

    def __init__(self, root: str, cache_limit: int) -> None:
        self.root = os.path.realpath(root)
        self.cache_limit = cache_limit
        self.cache: dict[str, tuple[int, int, bytes]] = {}  # path -> (mtime_ns, size, bytes)

    def resolve(self, target: str) -> str | None:
        """Return the file path for a request target, or None (-> 404)."""
        relative = unquote(urlsplit(target).path).lstrip("/")
        path = os.path.realpath(os.path.join(self.root, relative))
        if os.path.commonpath([path, self.root]) != self.root:
            return None  # escapes the root, e.g. /../etc/passwd
        if os.path.isdir(path):
            path = os.path.join(path, "index.html")
        return path if os.path.isfile(path) else None

    def cached_body(self, path: str, stat: os.stat_result) -> bytes | None:
        """Return the file's bytes if it is small enough to keep in memory, else None."""
        if stat.st_size > self.cache_limit:
            return None
        entry = self.cache.get(path)
        if entry is None or entry[:2] != (stat.st_mtime_ns, stat.st_size):
            with open(path, "rb") as f:
                entry = (stat.st_mtime_ns, stat.st_size, f.read())
            self.cache[path] = entry
        return entry[2]


class HttpConnection(asyncio.Protocol):
    """One client connection.  A task per connection answers requests in order,
    because sendfile() is a coroutine; the Protocol callbacks only feed it."""

    transport: asyncio.Transport

    def __init__(self, files: FileStore, connections: set["HttpConnection"]) -> None:
        self.files = files
        self.connections = connections
        self.buffer = bytearray()
        self.eof = self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        # cast, not isinstance(): uvloop's and zcloop's transports do not subclass asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        self.data_arrived = asyncio.Event()
        self.writable = asyncio.Event()
        self.writable.set()
        self.connections.add(self)
        self.task = loop.create_task(self.serve())

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self.data_arrived.set()
        if len(self.buffer) > MAX_HEADER_BYTES:
            self.transport.pause_reading()  # a client pipelining faster than we answer

    def eof_received(self) -> bool:
        self.eof = True
        self.data_arrived.set()
        return True  # keep the transport open: we may still be answering

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.data_arrived.set()
        self.writable.set()
        self.connections.discard(self)

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def close(self) -> None:
        self.task.cancel()
        self.transport.close()

    # ---------------------------------------------------------------- reading

    async def read_head(self) -> bytes | None:
        """Return the next request's head (bytes, without the blank line) or None at EOF."""
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(self.buffer[:end])
                del self.buffer[:end + 4]
                self.transport.resume_reading()
                return head
            if self.eof or self.lost or len(self.buffer) > MAX_HEADER_BYTES:
                return None
            self.data_arrived.clear()
            await self.data_arrived.wait()

    async def discard_body(self, length: int) -> None:
        while len(self.buffer) < length and not (self.eof or self.lost):
            self.data_arrived.clear()
            await self.data_arrived.wait()
        del self.buffer[:length]

    # ---------------------------------------------------------------- serving

    async def serve(self) -> None:
        try:
            while not self.lost:
                head = await self.read_head()
                if head is None:
                    if len(self.buffer) > MAX_HEADER_BYTES:
                        await self.respond_error(431, keep_alive=False)
                    break
                if not await self.handle(head):
                    break
        except OSError:
            pass  # the client went away
        finally:
            self.transport.close()

    async def handle(self, head: bytes) -> bool:
        """Answer one request; return whether to keep the connection open."""
        try:
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, version = request_line.split(" ")
            headers: dict[str, str] = {}
            for line in header_lines:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
            body_length = int(headers.get("content-length", "0"))
        except ValueError:
            await self.respond_error(400, keep_alive=False)
            return False
        if "transfer-encoding" in headers:
            await self.respond_error(501, keep_alive=False)
            return False
        await self.discard_body(body_length)

        connection = headers.get("connection", "").lower()
        if version == "HTTP/1.1":
            keep_alive = connection != "close"
        else:
            keep_alive = connection == "keep-alive"

        if method not in ("GET", "HEAD"):
            await self.respond_error(405, keep_alive, extra={"Allow": "GET, HEAD"})
        else:
            path = self.files.resolve(target)
            if path is None:
                await self.respond_error(404, keep_alive)
            else:
                await self.send_file(path, keep_alive, head_only=method == "HEAD")
        return keep_alive

    def write_head(self, status: int, length: int, content_type: str, keep_alive: bool,
                   extra: dict[str, str] | None = None) -> bytes:
        lines = [f"HTTP/1.1 {status} {REASONS[status]}",
                 f"Content-Length: {length}",
                 f"Content-Type: {content_type}",
                 f"Connection: {'keep-alive' if keep_alive else 'close'}"]
        lines += [f"{name}: {value}" for name, value in (extra or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def respond_error(self, status: int, keep_alive: bool,
                            extra: dict[str, str] | None = None) -> None:
        body = f"{status} {REASONS[status]}\n".encode()
        self.transport.write(
            self.write_head(status, len(body), "text/plain", keep_alive, extra) + body)
        await self.drain()

    async def send_file(self, path: str, keep_alive: bool, head_only: bool) -> None:
        stat = os.stat(path)
        content_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        head = self.write_head(200, stat.st_size, content_type, keep_alive)
        body = self.files.cached_body(path, stat)
        if head_only:
            self.transport.write(head)
        elif body is None:
            self.transport.write(head)
            with open(path, "rb") as file:
                await sendfile(self.transport, file)
        elif len(body) < ZERO_COPY_MIN:
            self.transport.write(head + body)  # one segment for small responses
        elif hasattr(self.transport, "write_zc"):
            self.transport.write(head)
            # The kernel reads `body` while sending; it is immutable and stays
            # in the cache, so we need not wait for handle.released.  Waiting
            # for handle.sent gives backpressure like drain() does.
            handle = self.transport.write_zc(body)
            await handle.sent
        else:
            self.transport.write(head)
            self.transport.write(body)
        await self.drain()

    async def drain(self) -> None:
        await self.writable.wait()
        if self.lost:
            raise ConnectionResetError("connection lost")


async def sendfile(transport: asyncio.Transport, file: BinaryIO) -> None:
    loop = asyncio.get_running_loop()
    try:
        await loop.sendfile(transport, file)
        return
    except NotImplementedError:
        pass  # e.g. uvloop: no loop.sendfile
    protocol = cast(HttpConnection, transport.get_protocol())
    # Blocking reads are fine here: a page-cache hit costs microseconds.
    while chunk := file.read(CHUNK):
        transport.write(chunk)
        await protocol.drain()


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    files = FileStore(args.root, args.cache_limit)
    connections: set[HttpConnection] = set()
    server = await loop.create_server(lambda: HttpConnection(files, connections),
                                      args.host, args.port)
    host, port = server.sockets[0].getsockname()[:2]
    print(f"serving {files.root} on http://{host}:{port}/, loop {loop_name()}", flush=True)

    await wait_for_shutdown()
    server.close()
    for connection in list(connections):
        connection.close()


if __name__ == "__main__":
    parser = make_parser("Static file HTTP/1.1 server on asyncio Protocols.", default_port=8000)
    parser.add_argument("--root", default=".", help="directory to serve (default: current)")
    parser.add_argument("--cache-limit", type=int, default=1024 * 1024, metavar="BYTES",
                        help="keep files up to this size in memory (default: %(default)s)")
    args = parser.parse_args()
    run(main(args), args.loop)

"""The examples, run for real: each starts as a subprocess on a free loopback
port (--port 0, the port is read from its startup line), gets real requests,
then is stopped with SIGINT and must exit cleanly (status 0, no traceback)."""
import asyncio
import functools
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
LOOPS = ("asyncio", "uvloop", "zcloop")
LOOP_MODULE = {"asyncio": "asyncio.", "uvloop": "uvloop.", "zcloop": "zcloop."}

ZCLOOP_TCP_PROBE = """
import asyncio, sys
try:
    import zcloop
    loop = zcloop.new_event_loop()
    server = loop.run_until_complete(loop.create_server(asyncio.Protocol, "127.0.0.1", 0))
    server.close()
    loop.close()
except (ImportError, NotImplementedError, AttributeError) as exc:
    print(f"{type(exc).__name__}: {exc}")
    sys.exit(1)
"""


def child_env():
    # This checkout's zcloop, whether or not it is installed.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@functools.lru_cache(maxsize=None)
def zcloop_tcp_missing():
    """None when zcloop can run a TCP server, else why not (in a subprocess, so
    a broken build cannot take the test process down)."""
    probe = subprocess.run([sys.executable, "-c", ZCLOOP_TCP_PROBE], env=child_env(),
                           capture_output=True, text=True, timeout=60)
    if probe.returncode == 0:
        return None
    return (probe.stdout or probe.stderr).strip()[-300:] or f"exit {probe.returncode}"


@pytest.fixture(params=LOOPS)
def loop_name(request):
    if request.param == "zcloop" and (reason := zcloop_tcp_missing()):
        pytest.skip(f"zcloop cannot serve TCP yet: {reason}")
    return request.param


class Example:
    """A running example process."""

    def __init__(self, script, loop, *args):
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / script), "--port", "0", "--loop", loop, *args],
            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.banner = self.proc.stdout.readline()
        match = re.search(r":(\d+)", self.banner)
        if not match:
            self.proc.kill()
            _, err = self.proc.communicate()
            pytest.fail(f"{script} did not start: {self.banner!r}\n{err}")
        self.port = int(match[1])
        assert LOOP_MODULE[loop] in self.banner, self.banner

    def stop(self):
        """SIGINT, then check the exit was clean."""
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
            pytest.fail(f"did not stop on SIGINT:\n{err}")
        assert self.proc.returncode == 0, err
        assert "Traceback" not in err, err


@pytest.fixture
def start_example():
    started = []

    def start(script, loop, *args):
        example = Example(script, loop, *args)
        started.append(example)
        return example

    yield start
    for example in started:
        if example.proc.poll() is None:
            example.proc.kill()
            example.proc.communicate()


def recv_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "connection closed early"
        data += chunk
    return data


@pytest.mark.parametrize("api", ["protocol", "streams"])
def test_echo_server(start_example, loop_name, api):
    flags = ["--streams"] if api == "streams" else []
    server = start_example("echo_server.py", loop_name, *flags)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as a, \
            socket.create_connection(("127.0.0.1", server.port), timeout=10) as b:
        message = bytes(range(256)) * 400  # 100 KiB, several reads and writes
        a.sendall(message)
        b.sendall(b"hello")
        assert recv_exactly(b, 5) == b"hello"
        assert recv_exactly(a, len(message)) == message
        a.shutdown(socket.SHUT_WR)
        assert a.recv(1) == b""
    server.stop()


def test_aiohttp_app(start_example, loop_name):
    import aiohttp

    server = start_example("aiohttp_app.py", loop_name)
    base = f"http://127.0.0.1:{server.port}"

    async def requests():
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{base}/") as response:
                assert response.status == 200
                assert await response.text() == "Hello, World!"
            async with session.get(f"{base}/json", params={"name": "zc"}) as response:
                assert response.status == 200
                body = await response.json()
                assert body["hello"] == "zc"
                assert body["loop"].startswith(LOOP_MODULE[loop_name])
            async with session.post(f"{base}/json", json={"a": [1, 2]}) as response:
                assert (await response.json())["received"] == {"a": [1, 2]}
            async with session.post(f"{base}/json", data=b"not json") as response:
                assert response.status == 400
            async with session.get(f"{base}/missing") as response:
                assert response.status == 404

    asyncio.run(requests())
    server.stop()


def test_websockets_chat(start_example, loop_name):
    from websockets.asyncio.client import connect

    server = start_example("websockets_chat.py", loop_name)
    uri = f"ws://127.0.0.1:{server.port}/"

    async def chat():
        async with connect(uri, proxy=None) as alice:
            assert await alice.recv() == "welcome user1"
            assert await alice.recv() == "user1 joined"
            async with connect(uri, proxy=None) as bob:
                assert await bob.recv() == "welcome user2"
                assert await bob.recv() == "user2 joined"
                assert await alice.recv() == "user2 joined"
                await alice.send("hi bob")
                assert await alice.recv() == "user1: hi bob"
                assert await bob.recv() == "user1: hi bob"
            assert await alice.recv() == "user2 left"

    asyncio.run(asyncio.wait_for(chat(), 20))
    server.stop()


def read_response(sock_file):
    """Parse one HTTP/1.1 response from a socket file: (status, headers, body)."""
    status = int(sock_file.readline().split()[1])
    headers = {}
    while (line := sock_file.readline()) not in (b"\r\n", b""):
        name, value = line.decode().split(":", 1)
        headers[name.strip().lower()] = value.strip()
    body = sock_file.read(int(headers["content-length"]))
    return status, headers, body


@pytest.fixture
def site(tmp_path):
    files = {
        "index.html": b"<h1>hello</h1>\n",
        "medium.bin": os.urandom(300_000),      # cached in memory; write_zc on zcloop
        "sub/large.bin": os.urandom(3_000_000),  # over --cache-limit: loop.sendfile()
    }
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    return tmp_path, files


def test_static_server_keep_alive(start_example, loop_name, site):
    root, files = site
    server = start_example("static_server.py", loop_name, "--root", str(root),
                           "--cache-limit", "1000000")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    for path, name in [("/", "index.html"), ("/medium.bin", "medium.bin"),
                       ("/sub/large.bin", "sub/large.bin"), ("/medium.bin", "medium.bin")]:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200
        assert int(response.headers["Content-Length"]) == len(files[name])
        assert body == files[name]
        assert response.headers["Connection"] == "keep-alive"
    connection.request("HEAD", "/sub/large.bin")
    response = connection.getresponse()
    assert response.status == 200
    assert response.headers["Content-Length"] == str(len(files["sub/large.bin"]))
    assert response.read() == b""
    for path in ("/missing.txt", "/../../etc/passwd"):
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 404
        response.read()
    connection.request("POST", "/", body=b"x")
    response = connection.getresponse()
    assert response.status == 405
    response.read()
    connection.close()
    server.stop()


def test_static_server_pipelining_and_close(start_example, loop_name, site):
    root, files = site
    server = start_example("static_server.py", loop_name, "--root", str(root),
                           "--cache-limit", "1000000")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        # Three pipelined requests; the last asks to close the connection.
        sock.sendall(b"GET /sub/large.bin HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
                     b"GET /medium.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        sock_file = sock.makefile("rb")
        assert read_response(sock_file)[::2] == (200, files["sub/large.bin"])
        assert read_response(sock_file)[0] == 404
        status, headers, body = read_response(sock_file)
        assert (status, body) == (200, files["medium.bin"])
        assert headers["connection"] == "close"
        assert sock_file.read() == b""  # the server closed the connection
    server.stop()


def test_pool_server(start_example, loop_name, site):
    """Files read into registered pool blocks (zcloop) arrive intact,
    including one larger than the whole pool (blocks are reused)."""
    root, files = site
    server = start_example("pool_server.py", loop_name, "--root", str(root),
                           "--block-size", "65536", "--blocks", "4")
    if loop_name == "zcloop":
        assert "buffers registered" in server.banner, server.banner
    for path, name in [("/", "index.html"), ("/medium.bin", "medium.bin"),
                       ("/sub/large.bin", "sub/large.bin")]:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 200
        assert response.read() == files[name]
        connection.close()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    connection.request("GET", "/missing")
    assert connection.getresponse().status == 404
    connection.close()
    server.stop()

"""Real frameworks on zcloop: aiohttp, websockets, uvicorn and gunicorn.

In-process tests run a framework's server *and* client on one zcloop loop
(zcloop.run).  Subprocess tests start unmodified programs the ways the README
documents (``python -m zcloop run``, ``uvicorn --loop zcloop:new_event_loop``,
gunicorn with ``zcloop.worker.*``) on free loopback ports, prove through an HTTP
or websocket reply which loop serves them, then stop them with a signal and
require a clean exit.  Waits are hang guards only; nothing asserts timings.
"""
import asyncio
import http.client
import io
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import zcloop

ROOT = Path(__file__).resolve().parent.parent
ZCLOOP_LOOP = f"{zcloop.Loop.__module__}.{zcloop.Loop.__qualname__}"

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(zcloop.available() is not None,
                       reason=f"io_uring unavailable: {zcloop.available()}"),
]


# ------------------------------------------------------------------ helpers

def child_env():
    # This checkout's zcloop, whether or not (and wherever) it is installed.
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("ZCLOOP_DISABLE", None)
    env.pop("ZCLOOP_LOOP", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


LEAK_REPORTS = ("Exception ignored", "Task was destroyed", "was never awaited",
                "Unclosed", "unclosed", "ResourceWarning")


def assert_no_leak_reports(out):
    for marker in LEAK_REPORTS:
        assert marker not in out, out


class Server:
    """A server subprocess on a loopback port; output goes to a file so a
    chatty server can never block on a full pipe."""

    def __init__(self, args, *, cwd, port):
        self.port = port
        self.log = open(Path(cwd) / f"server-{port}.log", "w+")
        self.proc = subprocess.Popen(args, cwd=cwd, env=child_env(), stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)   # kill() gets gunicorn workers too

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def wait_ready(self, deadline=20.0):
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"server not listening on {self.port}:\n{self.output()}")

    def stop(self, sig=signal.SIGINT, expect=0):
        """Send `sig`, wait for the exit, check it was clean; return the output."""
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pytest.fail(f"did not stop on {sig.name}:\n{self.output()}")
        out = self.output()
        assert self.proc.returncode == expect, out
        assert "Traceback" not in out, out
        assert_no_leak_reports(out)
        return out

    def kill(self):
        """Last resort: SIGKILL this server's own process group (its session)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()


@pytest.fixture
def servers():
    started = []

    def start(args, *, cwd, port):
        server = Server(args, cwd=cwd, port=port)
        started.append(server)
        return server.wait_ready()

    yield start
    for server in started:
        server.kill()


def http_get(port, path="/"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def need(module):
    return pytest.importorskip(module)


# ----------------------------------------------- 1. aiohttp server + client

def test_aiohttp_server_and_client_in_process(caplog):
    need("aiohttp")
    from aiohttp import ClientSession, WSMsgType, web

    seen = []

    def mark():
        seen.append(type(asyncio.get_running_loop()))

    async def get(request):
        mark()
        return web.Response(text=f"hello {request.query.get('name', '')}")

    async def post(request):
        mark()
        body = await request.read()
        return web.json_response({"size": len(body), "sum": sum(body) % 65521})

    async def stream(request):
        mark()
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(50):
            await response.write(b"%05d" % i * 1000)
            if i % 10 == 0:
                await asyncio.sleep(0)
        await response.write_eof()
        return response

    async def ws(request):
        mark()
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == WSMsgType.TEXT:
                if msg.data == "close":
                    await sock.close(code=4001, message=b"bye")
                else:
                    await sock.send_str(msg.data.upper())
            elif msg.type == WSMsgType.BINARY:
                await sock.send_bytes(msg.data[::-1])
        return sock

    async def main():
        assert type(asyncio.get_running_loop()) is zcloop.Loop
        app = web.Application(client_max_size=8 << 20)
        app.add_routes([web.get("/", get), web.post("/post", post),
                        web.get("/stream", stream), web.get("/ws", ws)])
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        try:
            async with ClientSession() as session:
                async with session.get(f"{base}/?name=zc") as r:
                    assert r.status == 200
                    assert await r.text() == "hello zc"

                body = os.urandom(3 * 1024 * 1024 + 7)
                async with session.post(f"{base}/post", data=io.BytesIO(body)) as r:
                    assert r.status == 200
                    assert await r.json() == {"size": len(body), "sum": sum(body) % 65521}

                async with session.get(f"{base}/stream") as r:
                    assert r.status == 200
                    chunks = [c async for c in r.content.iter_any()]
                    assert b"".join(chunks) == b"".join(b"%05d" % i * 1000 for i in range(50))

                # Many requests on a few pooled connections, concurrently.
                async def fetch(i):
                    async with session.get(f"{base}/?name={i}") as r:
                        return await r.text()
                texts = await asyncio.gather(*(fetch(i) for i in range(40)))
                assert texts == [f"hello {i}" for i in range(40)]

                async with session.ws_connect(f"{base}/ws") as sock:
                    await sock.send_str("abc")
                    assert (await sock.receive(timeout=10)).data == "ABC"
                    big = os.urandom(1 << 20)
                    await sock.send_bytes(big)
                    assert (await sock.receive(timeout=10)).data == big[::-1]
                    await sock.send_str("close")
                    msg = await sock.receive(timeout=10)
                    assert msg.type == WSMsgType.CLOSE
                    assert sock.close_code == 4001
        finally:
            await runner.cleanup()

    zcloop.run(main())
    assert seen and all(t is zcloop.Loop for t in seen), seen
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


# ---------------------------------------------- 2. websockets server + client

def test_websockets_server_and_client_in_process(caplog):
    need("websockets")
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK
    from websockets.frames import CloseCode

    loops = []

    async def handler(ws):
        loops.append(type(asyncio.get_running_loop()))
        async for message in ws:
            if message == "loop":
                await ws.send(ZCLOOP_LOOP if loops[-1] is zcloop.Loop else repr(loops[-1]))
            elif message == "close-4002":
                await ws.close(4002, "custom")
                return
            else:
                await ws.send(message)

    async def main():
        assert type(asyncio.get_running_loop()) is zcloop.Loop
        async with serve(handler, "127.0.0.1", 0, max_size=4 << 20) as server:
            port = server.sockets[0].getsockname()[1]
            uri = f"ws://127.0.0.1:{port}"

            async with connect(uri, max_size=4 << 20) as ws:
                await ws.send("loop")
                assert await ws.recv() == ZCLOOP_LOOP
                for message in ("hi", "é" * 100, b"\x00\x01\x02"):
                    await ws.send(message)
                    assert await ws.recv() == message
                big = os.urandom(1 << 20)
                await ws.send(big)
                assert await ws.recv() == big
                big_text = "z" * (1 << 20)
                await ws.send(big_text)
                assert await ws.recv() == big_text
                latency = await asyncio.wait_for(await ws.ping(b"p1"), 10)
                assert latency >= 0
                # Several concurrent pings, all answered.
                waiters = [await ws.ping() for _ in range(5)]
                await asyncio.wait_for(asyncio.gather(*waiters), 10)
            assert ws.close_code == CloseCode.NORMAL_CLOSURE

            # Server-initiated close with an application code.
            async with connect(uri) as ws:
                await ws.send("close-4002")
                with pytest.raises(ConnectionClosedError) as info:
                    await ws.recv()
                assert info.value.rcvd.code == 4002
                assert info.value.rcvd.reason == "custom"

            # Client-initiated close with a code the server sees.
            async with connect(uri) as ws:
                await ws.close(CloseCode.GOING_AWAY, "leaving")
                assert ws.close_code == CloseCode.GOING_AWAY
                with pytest.raises(ConnectionClosedOK):
                    await ws.recv()

            # Many clients at once.
            async def one(i):
                async with connect(uri) as ws:
                    await ws.send(f"m{i}")
                    return await ws.recv()
            assert await asyncio.gather(*(one(i) for i in range(20))) == \
                [f"m{i}" for i in range(20)]

    zcloop.run(main())
    assert loops and all(t is zcloop.Loop for t in loops), loops
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


# -------------------------------- 3. python -m zcloop run <unmodified script>

AIOHTTP_APP = """
import asyncio, sys
from aiohttp import web

async def loop_type(request):
    loop = type(asyncio.get_running_loop())
    return web.Response(text=loop.__module__ + "." + loop.__qualname__)

app = web.Application()
app.add_routes([web.get("/", loop_type)])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""

WEBSOCKETS_APP = """
import asyncio, sys
import websockets

async def handler(ws):
    async for message in ws:
        loop = type(asyncio.get_running_loop())
        await ws.send(loop.__module__ + "." + loop.__qualname__ + " " + message)

async def main():
    async with websockets.serve(handler, "127.0.0.1", int(sys.argv[1])) as server:
        await server.serve_forever()

if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
"""


def test_zcloop_run_aiohttp_script(tmp_path, servers):
    need("aiohttp")
    (tmp_path / "app.py").write_text(AIOHTTP_APP)
    port = free_port()
    server = servers([sys.executable, "-m", "zcloop", "run", "app.py", str(port)],
                     cwd=tmp_path, port=port)
    for _ in range(3):
        assert http_get(port) == (200, ZCLOOP_LOOP)
    server.stop(signal.SIGINT)


def test_plain_python_aiohttp_script_is_not_zcloop(tmp_path, servers):
    """Control: the same file without `-m zcloop run` is on asyncio's loop."""
    need("aiohttp")
    (tmp_path / "app.py").write_text(AIOHTTP_APP)
    port = free_port()
    server = servers([sys.executable, "app.py", str(port)], cwd=tmp_path, port=port)
    status, text = http_get(port)
    assert status == 200 and text.startswith("asyncio."), text
    server.stop(signal.SIGINT)


def test_zcloop_run_websockets_script(tmp_path, servers):
    need("websockets")
    from websockets.sync.client import connect

    (tmp_path / "wsapp.py").write_text(WEBSOCKETS_APP)
    port = free_port()
    server = servers([sys.executable, "-m", "zcloop", "run", "wsapp.py", str(port)],
                     cwd=tmp_path, port=port)
    with connect(f"ws://127.0.0.1:{port}", open_timeout=10, close_timeout=10) as ws:
        ws.send("ping")
        assert ws.recv(timeout=10) == f"{ZCLOOP_LOOP} ping"
        big = "x" * (512 * 1024)
        ws.send(big)
        assert ws.recv(timeout=10) == f"{ZCLOOP_LOOP} {big}"
    server.stop(signal.SIGINT)


@pytest.mark.parametrize("runner", ["python", "zcloop"])
def test_websockets_script_uncaught_ctrl_c(tmp_path, servers, runner):
    """The websockets docs' script verbatim: asyncio.run(main()) with no
    `except KeyboardInterrupt`.  Ctrl-C must end it the way it ends on asyncio:
    KeyboardInterrupt out of asyncio.run(), and Python then dies by SIGINT."""
    need("websockets")
    from websockets.sync.client import connect

    (tmp_path / "wsapp.py").write_text(
        WEBSOCKETS_APP.split("if __name__")[0] + "asyncio.run(main())\n")
    port = free_port()
    command = [sys.executable, *(["-m", "zcloop", "run"] if runner == "zcloop" else []),
               "wsapp.py", str(port)]
    server = servers(command, cwd=tmp_path, port=port)
    with connect(f"ws://127.0.0.1:{port}", open_timeout=10, close_timeout=10) as ws:
        ws.send("x")
        reply = ws.recv(timeout=10)
    assert reply.startswith(ZCLOOP_LOOP if runner == "zcloop" else "asyncio."), reply
    server.proc.send_signal(signal.SIGINT)
    try:
        server.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not stop on SIGINT:\n{server.output()}")
    out = server.output()
    assert server.proc.returncode == -signal.SIGINT, out
    assert out.rstrip().endswith("KeyboardInterrupt"), out
    assert_no_leak_reports(out)


# --------------------------------------------------------------- 4. uvicorn

ASGI_APP = """
import asyncio, os

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    assert scope["type"] == "http"
    loop = type(asyncio.get_running_loop())
    body = (loop.__module__ + "." + loop.__qualname__ + " " + str(os.getpid())).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": body})
"""


def loop_and_pid(port):
    status, text = http_get(port)
    assert status == 200, text
    loop, pid = text.split()
    return loop, int(pid)


def test_uvicorn_loop_option(tmp_path, servers):
    need("uvicorn")
    (tmp_path / "asgimod.py").write_text(ASGI_APP)
    port = free_port()
    server = servers([sys.executable, "-m", "uvicorn", "asgimod:app", "--host", "127.0.0.1",
                      "--port", str(port), "--loop", "zcloop:new_event_loop"],
                     cwd=tmp_path, port=port)
    for _ in range(3):
        loop, pid = loop_and_pid(port)
        assert loop == ZCLOOP_LOOP
        assert pid == server.proc.pid
    out = server.stop(signal.SIGINT)
    assert "Finished server process" in out, out


def uvicorn_auto_loop_module():
    """The loop module uvicorn's default `--loop auto` picks: uvloop whenever
    uvloop is importable, else asyncio (uvicorn >= 0.36: a loop *factory*,
    so the installed policy is not consulted)."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio."
    return "uvloop."


@pytest.mark.parametrize("loop_option, expected", [
    # `--loop none`: uvicorn passes no loop_factory to asyncio.Runner, which
    # then asks the event loop policy, i.e. the one `zcloop run` installed.
    (["--loop", "none"], ZCLOOP_LOOP),
    # Default `--loop auto`: uvicorn builds its own loop (uvloop if installed),
    # ignoring the policy.  Documents the truth rather than wishing it away.
    ([], "auto"),
    # `--loop asyncio`: uvicorn >= 0.36 passes asyncio.SelectorEventLoop as
    # the factory, again bypassing the policy.
    (["--loop", "asyncio"], "asyncio."),
], ids=["none", "auto", "asyncio"])
def test_zcloop_run_m_uvicorn(tmp_path, servers, loop_option, expected):
    uvicorn = need("uvicorn")
    if expected != ZCLOOP_LOOP and "get_loop_factory" not in dir(uvicorn.Config):
        pytest.skip("uvicorn < 0.36 set the loop up differently")
    if loop_option == ["--loop", "none"] and "none" not in _uvicorn_loop_choices():
        pytest.skip("this uvicorn has no `--loop none`")
    if expected == "auto":
        expected = uvicorn_auto_loop_module()
    (tmp_path / "asgimod.py").write_text(ASGI_APP)
    port = free_port()
    server = servers([sys.executable, "-m", "zcloop", "run", "-m", "uvicorn", "asgimod:app",
                      "--host", "127.0.0.1", "--port", str(port), *loop_option],
                     cwd=tmp_path, port=port)
    loop, pid = loop_and_pid(port)
    assert loop.startswith(expected), loop
    assert pid == server.proc.pid
    server.stop(signal.SIGINT)


def _uvicorn_loop_choices():
    from uvicorn import config
    return set(getattr(config, "LOOP_FACTORIES", getattr(config, "LOOP_SETUPS", {})))


# -------------------------------------------------------------- 5. gunicorn

AIOHTTP_FACTORY = """
import asyncio, os
from aiohttp import web

async def loop_type(request):
    loop = type(asyncio.get_running_loop())
    return web.Response(text=loop.__module__ + "." + loop.__qualname__ + " " + str(os.getpid()))

async def make_app():
    app = web.Application()
    app.add_routes([web.get("/", loop_type)])
    return app
"""


def gunicorn_extra_options():
    """gunicorn >= 25 opens a control socket under ~/.gunicorn by default: keep
    tests from touching the home directory or sharing that socket."""
    from gunicorn.config import KNOWN_SETTINGS
    return ["--no-control-socket"] if any(
        s.name == "control_socket_disable" for s in KNOWN_SETTINGS) else []


def gunicorn_workers(tmp_path, servers, module, source, app, worker_class, exit_lines):
    need("gunicorn")
    (tmp_path / f"{module}.py").write_text(source)
    port = free_port()
    server = servers([sys.executable, "-m", "gunicorn", f"{module}:{app}",
                      "--bind", f"127.0.0.1:{port}", "--worker-class", worker_class,
                      "--workers", "2", "--graceful-timeout", "10", "--timeout", "30",
                      *gunicorn_extra_options()],
                     cwd=tmp_path, port=port)
    pids = set()
    for _ in range(20):
        loop, pid = loop_and_pid(port)
        assert loop == ZCLOOP_LOOP
        pids.add(pid)
    # Each answer came from a worker (a child of the master), never the master.
    assert server.proc.pid not in pids
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) == server.proc.pid
    out = server.stop(signal.SIGTERM)
    assert "Shutting down: Master" in out, out
    assert out.count("Booting worker") == 2, out     # no worker crashed and was replaced
    for pid in pids:
        for line in exit_lines:
            assert line.format(pid=pid) in out, out
    return pids


def test_gunicorn_aiohttp_worker(tmp_path, servers):
    need("aiohttp")
    gunicorn_workers(tmp_path, servers, "aiomod", AIOHTTP_FACTORY, "make_app",
                     "zcloop.worker.GunicornWebWorker", ["Worker exiting (pid: {pid})"])


def test_gunicorn_uvicorn_worker(tmp_path, servers):
    need("uvicorn")
    # uvicorn shuts down gracefully, then re-raises the SIGTERM it captured
    # (Server.capture_signals), so gunicorn reports the worker "was sent
    # SIGTERM".  uvicorn.workers.UvicornWorker on uvloop does exactly the same.
    gunicorn_workers(tmp_path, servers, "asgimod", ASGI_APP, "app",
                     "zcloop.worker.UvicornWorker",
                     ["Application shutdown complete", "Finished server process [{pid}]",
                      "Worker (pid:{pid}) was sent SIGTERM!"])

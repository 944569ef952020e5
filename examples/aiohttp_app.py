"""aiohttp web application: a hello-world page and a JSON endpoint.

    python examples/aiohttp_app.py [--port 8080] [--loop zcloop|uvloop|asyncio]

    curl http://127.0.0.1:8080/
    curl 'http://127.0.0.1:8080/json?name=zcloop'
    curl -d '{"a": 1}' http://127.0.0.1:8080/json
"""
import argparse

from aiohttp import web

from _runner import loop_name, make_parser, run, wait_for_shutdown


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="Hello, World!")


async def json_get(request: web.Request) -> web.Response:
    return web.json_response({"hello": request.query.get("name", "world"),
                              "loop": loop_name()})


async def json_post(request: web.Request) -> web.Response:
    try:
        payload = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="body is not JSON")
    return web.json_response({"received": payload, "loop": loop_name()})


def make_app() -> web.Application:
    app = web.Application()
    app.add_routes([web.get("/", hello), web.get("/json", json_get), web.post("/json", json_post)])
    return app


async def main(args: argparse.Namespace) -> None:
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"aiohttp app on http://{host}:{port}/, loop {loop_name()}", flush=True)

    await wait_for_shutdown()
    await runner.cleanup()


if __name__ == "__main__":
    args = make_parser("aiohttp hello-world and JSON app.", default_port=8080).parse_args()
    run(main(args), args.loop)

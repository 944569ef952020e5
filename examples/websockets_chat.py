"""WebSocket chat server: every message is broadcast to everyone connected.

    python examples/websockets_chat.py [--port 8765] [--loop zcloop|uvloop|asyncio]

Try it with two terminals running: python -m websockets ws://127.0.0.1:8765/
Each client gets a name (user1, user2, ...); the server broadcasts
"<name> joined", "<name>: <message>" and "<name> left".
"""
import argparse
import itertools

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

from _runner import loop_name, make_parser, run, wait_for_shutdown


class ChatRoom:
    def __init__(self) -> None:
        self.members: set[ServerConnection] = set()
        self.numbers = itertools.count(1)

    async def handle(self, websocket: ServerConnection) -> None:
        name = f"user{next(self.numbers)}"
        await websocket.send(f"welcome {name}")
        self.members.add(websocket)
        broadcast(self.members, f"{name} joined")
        try:
            async for message in websocket:
                broadcast(self.members, f"{name}: {message!s}")
        except ConnectionClosed:
            pass
        finally:
            self.members.discard(websocket)
            broadcast(self.members, f"{name} left")


async def main(args: argparse.Namespace) -> None:
    room = ChatRoom()
    async with serve(room.handle, args.host, args.port) as server:
        host, port = next(iter(server.sockets)).getsockname()[:2]
        print(f"chat server on ws://{host}:{port}/, loop {loop_name()}", flush=True)
        await wait_for_shutdown()
    # Leaving the block closes every connection (close code 1001, going away).


if __name__ == "__main__":
    args = make_parser("websockets broadcast chat server.", default_port=8765).parse_args()
    run(main(args), args.loop)

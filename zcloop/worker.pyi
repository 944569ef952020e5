from aiohttp.worker import GunicornWebWorker as _AiohttpWorker
from uvicorn.workers import UvicornWorker as _UvicornWorker

__all__ = ["GunicornWebWorker", "UvicornWorker"]

# Each exists only where its framework (aiohttp, uvicorn) is installed.
class GunicornWebWorker(_AiohttpWorker):
    def init_process(self) -> None: ...

class UvicornWorker(_UvicornWorker):
    def init_process(self) -> None: ...

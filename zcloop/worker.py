"""gunicorn worker classes that run their event loop on zcloop.

aiohttp applications::

    gunicorn app:make_app --worker-class zcloop.worker.GunicornWebWorker

ASGI applications through uvicorn::

    gunicorn app:app --worker-class zcloop.worker.UvicornWorker

Each worker process creates its own ring after gunicorn forked it, so no ring
crosses a fork.
"""
import asyncio
import warnings

from . import install

__all__ = ["GunicornWebWorker", "UvicornWorker"]

try:
    from aiohttp.worker import GunicornWebWorker as _AiohttpWorker
except ImportError:     # aiohttp is optional
    _AiohttpWorker = None

try:
    from uvicorn.workers import UvicornWorker as _UvicornWorker
except ImportError:     # uvicorn is optional
    _UvicornWorker = None


def _close_current_loop():
    # 3.12-3.13 warn (DeprecationWarning) when get_event_loop() has to create
    # the loop it returns; 3.14 raises RuntimeError instead.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            asyncio.get_event_loop().close()
        except RuntimeError:
            pass


if _AiohttpWorker is not None:
    class GunicornWebWorker(_AiohttpWorker):
        """aiohttp's gunicorn worker on a zcloop loop."""

        def init_process(self):
            _close_current_loop()
            install()
            super().init_process()


if _UvicornWorker is not None:
    class UvicornWorker(_UvicornWorker):
        """uvicorn's gunicorn worker on a zcloop loop."""

        CONFIG_KWARGS = {**_UvicornWorker.CONFIG_KWARGS, "loop": "zcloop:new_event_loop"}

        def init_process(self):
            install()
            super().init_process()

"""Force an event loop onto an unmodified Python program at interpreter start.

``python -m zcloop compare`` (and bench/run.py) put this directory first on
PYTHONPATH and set ZCLOOP_LOOP to ``asyncio``, ``uvloop`` or ``zcloop``.
Python's ``site`` module then imports this file before the program runs, and
we install the matching event loop policy, so plain ``asyncio.run()`` calls in
``python app.py``, ``pytest``, ``uvicorn`` ... all get that loop.  PYTHONPATH
and ZCLOOP_LOOP stay in the environment so child interpreters get it too.

Afterwards the ``sitecustomize`` this file shadows (if any) is imported, so a
site's own customization still runs.
"""
import os
import sys

LOOP_ENV = "ZCLOOP_LOOP"
_HERE = os.path.dirname(os.path.abspath(__file__))


def _fail(message):
    # site.py swallows exceptions raised by sitecustomize; a benchmark must not
    # silently run on the wrong loop, so report and exit instead.
    sys.stderr.write(f"zcloop sitecustomize: {message}\n")
    sys.stderr.flush()
    os._exit(3)


def _set_policy(policy):
    import asyncio
    import warnings

    with warnings.catch_warnings():
        # Python 3.14 deprecates event loop policies; they still drive asyncio.run().
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_event_loop_policy(policy)


def _import_zcloop():
    try:
        import zcloop
    except ModuleNotFoundError as exc:
        if exc.name != "zcloop":
            raise
        # Not installed: use the checkout this file lives in.  Appended, so
        # nothing else on sys.path is shadowed.
        sys.path.append(os.path.dirname(os.path.dirname(_HERE)))
        import zcloop
    return zcloop


def _install_loop(name):
    if name in ("", "asyncio"):
        return
    try:
        if name == "uvloop":
            import uvloop

            _set_policy(uvloop.EventLoopPolicy())
        elif name == "zcloop":
            _import_zcloop().install()
        else:
            _fail(f"unknown {LOOP_ENV}={name!r} (expected asyncio, uvloop or zcloop)")
    except Exception as exc:
        _fail(f"cannot install the {name} event loop: {type(exc).__name__}: {exc}")


def _chain_to_shadowed_sitecustomize():
    own_module = sys.modules.pop(__name__, None)
    saved_path = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    try:
        import sitecustomize  # noqa: F401  (the next one on sys.path, if any)
    except ImportError as exc:
        if exc.name != "sitecustomize":
            raise
        if own_module is not None:
            sys.modules[__name__] = own_module
    finally:
        # Keep our directory off sys.path: it only exists to be found by site.
        sys.path[:] = [p for p in saved_path if os.path.abspath(p or os.curdir) != _HERE]


if __name__ == "sitecustomize":
    _install_loop(os.environ.get(LOOP_ENV, "").strip().lower())
    _chain_to_shadowed_sitecustomize()

"""zcloop.run() / zcloop.install() accept what uvloop.run() / uvloop.install()
accept, and behave like asyncio.Runner with the same loop factory."""
import asyncio
import inspect

import pytest

import zcloop


async def _running_loop():
    await asyncio.sleep(0)
    return asyncio.get_running_loop()


def _zcloop_without_send_zc():
    return zcloop.Loop(disable_features=["send_zc"])


FACTORIES = {
    "zcloop.Loop": zcloop.Loop,
    "zcloop.Loop(disable_features)": _zcloop_without_send_zc,
    "asyncio.SelectorEventLoop": asyncio.SelectorEventLoop,
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("factory", FACTORIES.values(), ids=FACTORIES.keys())
@pytest.mark.parametrize("debug", [None, True, False])
def test_run_loop_factory_like_asyncio_runner(factory, debug):
    """zcloop.run(main, loop_factory=f, debug=d) == asyncio.Runner(loop_factory=f, debug=d)."""
    def observe(run):
        loop = run(_running_loop())
        return type(loop), loop.get_debug(), loop.is_closed()

    def with_runner(coro):
        with asyncio.Runner(loop_factory=factory, debug=debug) as runner:
            return runner.run(coro)

    expected = observe(with_runner)
    assert observe(lambda coro: zcloop.run(coro, loop_factory=factory, debug=debug)) == expected
    assert expected[0] is (asyncio.SelectorEventLoop if factory is asyncio.SelectorEventLoop
                           else zcloop.Loop)


def test_run_loop_factory_features():
    """The factory's loop is the one used, with its own settings."""
    async def send_zc_enabled():
        return asyncio.get_running_loop().zc_stats()["send_zc"]

    assert zcloop.run(send_zc_enabled(), loop_factory=_zcloop_without_send_zc) is False


def test_run_fallback_and_loop_factory_refused():
    coro = _running_loop()
    with pytest.raises(TypeError, match="loop_factory or fallback"):
        zcloop.run(coro, loop_factory=zcloop.Loop, fallback=True)
    coro.close()


def test_run_and_install_accept_uvloops_keywords():
    uvloop = pytest.importorskip("uvloop")
    for ours, theirs in ((zcloop.run, uvloop.run), (zcloop.install, uvloop.install)):
        accepted = inspect.signature(ours).parameters
        for name, param in inspect.signature(theirs).parameters.items():
            if param.kind is param.VAR_KEYWORD:
                assert any(p.kind is p.VAR_KEYWORD for p in accepted.values()), ours
            else:
                assert name in accepted, (ours.__name__, name)

"""getaddrinfo / getnameinfo: same results as the socket module."""
import asyncio
import socket

import pytest


CASES = [
    ("127.0.0.1", 80, {}),
    ("127.0.0.1", "80", {}),
    ("::1", 443, {}),
    ("127.0.0.1", 0, {"type": socket.SOCK_STREAM}),
    ("0.0.0.0", 8080, {"family": socket.AF_INET, "type": socket.SOCK_DGRAM}),
    (None, 8080, {"flags": socket.AI_PASSIVE}),
    (None, 8080, {"family": socket.AF_INET6, "flags": socket.AI_PASSIVE}),
    ("localhost", 80, {}),
    ("localhost", "http", {"type": socket.SOCK_STREAM}),
    ("localhost", None, {"family": socket.AF_INET}),
    (b"127.0.0.1", b"22", {}),
    ("127.0.0.1", 80, {"proto": socket.IPPROTO_TCP}),
    ("127.0.0.1", 80, {"flags": socket.AI_CANONNAME}),
]


@pytest.mark.parametrize("host,port,kw", CASES, ids=[repr(c[:2]) + str(i) for i, c in enumerate(CASES)])
def test_getaddrinfo_matches_socket(run, host, port, kw):
    async def main():
        loop = asyncio.get_running_loop()
        return await loop.getaddrinfo(host, port, **kw)

    expected = socket.getaddrinfo(host, port, kw.get("family", 0), kw.get("type", 0),
                                  kw.get("proto", 0), kw.get("flags", 0))
    assert run(main) == expected


@pytest.mark.parametrize("host", ["no-such-host.invalid", "256.256.256.256.invalid"])
def test_getaddrinfo_invalid_host(run, host):
    async def main():
        loop = asyncio.get_running_loop()
        with pytest.raises(socket.gaierror) as ei:
            await loop.getaddrinfo(host, 80)
        return ei.value.errno

    try:
        socket.getaddrinfo(host, 80)
    except socket.gaierror as exc:
        expected = exc.errno
    else:       # pragma: no cover - a resolver that answers for .invalid
        pytest.skip("the resolver here answers for .invalid")
    assert run(main) == expected


def test_getaddrinfo_bad_port(run):
    async def main():
        loop = asyncio.get_running_loop()
        with pytest.raises(socket.gaierror):
            await loop.getaddrinfo("127.0.0.1", "no-such-service-xyz")
        with pytest.raises((TypeError, OSError)):
            await loop.getaddrinfo("127.0.0.1", 1.5)
        return True

    assert run(main)


def test_getaddrinfo_concurrent(run):
    async def main():
        loop = asyncio.get_running_loop()
        hosts = ["127.0.0.1", "localhost", "::1"] * 10
        res = await asyncio.gather(*(loop.getaddrinfo(h, 80) for h in hosts))
        return all(r == socket.getaddrinfo(h, 80) for r, h in zip(res, hosts))

    assert run(main)


@pytest.mark.parametrize("sockaddr,flags", [
    (("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
    (("127.0.0.1", 80), socket.NI_NUMERICHOST),
    (("::1", 443, 0, 0), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
    (("127.0.0.1", 22), 0),
])
def test_getnameinfo_matches_socket(run, sockaddr, flags):
    async def main():
        loop = asyncio.get_running_loop()
        return await loop.getnameinfo(sockaddr, flags)

    assert run(main) == socket.getnameinfo(sockaddr, flags)


def test_getnameinfo_error(run):
    async def main():
        loop = asyncio.get_running_loop()
        with pytest.raises((socket.gaierror, TypeError, OSError)) as ei:
            await loop.getnameinfo(("not-an-ip", 80), socket.NI_NUMERICHOST)
        return type(ei.value)

    try:
        socket.getnameinfo(("not-an-ip", 80), socket.NI_NUMERICHOST)
    except Exception as exc:
        expected = type(exc)
    assert run(main) is expected

"""Type stubs for zcloop.

Loop declares every public asyncio.AbstractEventLoop method with asyncio's own
signatures (those of the standard library's stubs, for Python >= 3.11), not
abstract, so a type checker treats zcloop.Loop as the concrete loop it is.
"""
import asyncio
import ssl
import sys
from asyncio import _AwaitableLike, _CoroutineLike
from asyncio.base_events import Server
from asyncio.events import Handle, TimerHandle, _TaskFactory
from asyncio.futures import Future
from asyncio.protocols import BaseProtocol
from asyncio.tasks import Task
from asyncio.transports import DatagramTransport as _AioDatagramTransport
from asyncio.transports import ReadTransport, SubprocessTransport, Transport, WriteTransport
from collections.abc import Callable, Coroutine, Generator, Iterable, Sequence
from concurrent.futures import Executor
from contextvars import Context
from socket import AddressFamily, AddressInfo, _Address, _GetAddrInfoResult, _RetAddress, socket
from typing import IO, Any, Literal, TypedDict, TypeVar, final, overload, type_check_only

from _typeshed import FileDescriptorLike, ReadableBuffer, StrPath, WriteableBuffer
from typing_extensions import TypeAlias, TypeVarTuple, Unpack, disjoint_base

__all__ = (
    "Loop", "new_event_loop", "EventLoopPolicy", "install", "run", "features",
    "IoUringUnavailableError", "ZeroCopyWrite", "BufferPool", "PoolExhausted",
    "StreamTransport", "DatagramTransport", "available", "FALLBACK_ENV", "DISABLE_ENV",
)

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")
_ProtocolT = TypeVar("_ProtocolT", bound=BaseProtocol)
_Context: TypeAlias = dict[str, Any]
_ExceptionHandler: TypeAlias = Callable[[asyncio.AbstractEventLoop, _Context], object]
_ProtocolFactory: TypeAlias = Callable[[], BaseProtocol]
_SSLContext: TypeAlias = bool | None | ssl.SSLContext

__version__: str
FALLBACK_ENV: str
DISABLE_ENV: str

class IoUringUnavailableError(RuntimeError): ...

@disjoint_base
class ZeroCopyWrite:
    """Handle returned by ``StreamTransport.write_zc()``; awaiting it awaits
    ``released``."""
    @property
    def sent(self) -> asyncio.Future[int]: ...
    @property
    def released(self) -> asyncio.Future[bool | None]: ...
    @property
    def nbytes(self) -> int: ...
    def __await__(self) -> Generator[Any, None, bool | None]: ...

@type_check_only
class _LoopZcStats(TypedDict):
    send_zc: bool
    report_usage: bool
    threshold: int
    pinned_bytes: int
    charged_bytes: int
    budget: int
    budget_max: int
    enomem: int
    fixed_buffers: str
    fixed_sends: int
    pools: int
    recv_buffers: int
    recv_buffer_size: int

@type_check_only
class _Features(TypedDict, total=False):
    setup_flags: list[str]
    ops: dict[str, bool]
    ext_arg: bool
    disabled: list[str]
    send_zc: bool
    sendmsg_zc: bool
    sq_entries: int
    cq_entries: int
    kernel: str  # zcloop.features() only

@type_check_only
class _RingTransport:
    """What zcloop's stream and datagram transports share (zcloop._ring.RingTransport)."""
    def get_extra_info(self, name: str, default: Any = None) -> Any: ...
    def is_closing(self) -> bool: ...
    def set_protocol(self, protocol: BaseProtocol) -> None: ...
    def get_protocol(self) -> BaseProtocol: ...
    def abort(self) -> None: ...
    def close(self) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def get_write_buffer_limits(self) -> tuple[int, int]: ...
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None: ...
    def set_zc_threshold(self, nbytes: int) -> None: ...
    def get_zc_threshold(self) -> int: ...
    def get_pinned_size(self) -> int: ...
    def zc_stats(self) -> dict[str, int | bool]: ...

@disjoint_base
class StreamTransport(_RingTransport):
    """The transport of zcloop's TCP, Unix socket and pipe connections (not
    TLS ones): asyncio.Transport's methods plus ``write_zc``.  Narrow to it
    with ``isinstance(transport, zcloop.StreamTransport)``."""
    def is_reading(self) -> bool: ...
    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def write(self, data: ReadableBuffer) -> None: ...
    def writelines(self, list_of_data: Iterable[ReadableBuffer]) -> None: ...
    def write_zc(self, data: ReadableBuffer) -> ZeroCopyWrite: ...
    def can_write_eof(self) -> bool: ...
    def write_eof(self) -> None: ...

@disjoint_base
class DatagramTransport(_RingTransport):
    """The transport of zcloop's UDP / Unix datagram endpoints."""
    def __init__(self, *args: object, **kwargs: object) -> None: ...  # raises TypeError: the loop makes them
    def sendto(self, data: ReadableBuffer, addr: _Address | None = None) -> None: ...

class PoolExhausted(Exception): ...

@final
class BufferPool:
    """Registered buffer pool returned by ``loop.create_zc_pool()``."""
    @property
    def block_size(self) -> int: ...
    @property
    def blocks(self) -> int: ...
    @property
    def free(self) -> int: ...
    @property
    def registered(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    async def acquire(self) -> memoryview: ...
    def acquire_nowait(self) -> memoryview: ...
    def release(self, view: memoryview) -> None: ...
    def close(self) -> None: ...

class Loop(asyncio.AbstractEventLoop):
    zc_threshold: int
    slow_callback_duration: float
    def __init__(self, *, disable_features: Iterable[str] | None = None) -> None: ...
    def features(self) -> _Features: ...
    def zc_stats(self) -> _LoopZcStats: ...
    def create_zc_pool(self, block_size: int, blocks: int) -> BufferPool: ...
    def run_forever(self) -> None: ...
    def run_until_complete(self, future: _AwaitableLike[_T]) -> _T: ...
    def stop(self) -> None: ...
    def is_running(self) -> bool: ...
    def is_closed(self) -> bool: ...
    def close(self) -> None: ...
    async def shutdown_asyncgens(self) -> None: ...
    def call_soon(
        self, callback: Callable[[Unpack[_Ts]], object], *args: Unpack[_Ts], context: Context | None = None
    ) -> Handle: ...
    def call_later(
        self, delay: float, callback: Callable[[Unpack[_Ts]], object], *args: Unpack[_Ts], context: Context | None = None
    ) -> TimerHandle: ...
    def call_at(
        self, when: float, callback: Callable[[Unpack[_Ts]], object], *args: Unpack[_Ts], context: Context | None = None
    ) -> TimerHandle: ...
    def time(self) -> float: ...
    def create_future(self) -> Future[Any]: ...
    if sys.version_info >= (3, 13):
        def create_task(
            self,
            coro: _CoroutineLike[_T],
            *,
            name: str | None = None,
            context: Context | None = None,
            eager_start: bool | None = None,
        ) -> Task[_T]: ...
    else:
        def create_task(
            self, coro: _CoroutineLike[_T], *, name: str | None = None, context: Context | None = None
        ) -> Task[_T]: ...
    def set_task_factory(self, factory: _TaskFactory | None) -> None: ...
    def get_task_factory(self) -> _TaskFactory | None: ...
    def call_soon_threadsafe(
        self, callback: Callable[[Unpack[_Ts]], object], *args: Unpack[_Ts], context: Context | None = None
    ) -> Handle: ...
    def run_in_executor(self, executor: Executor | None, func: Callable[[Unpack[_Ts]], _T], *args: Unpack[_Ts]) -> Future[_T]: ...
    def set_default_executor(self, executor: Executor) -> None: ...
    async def getaddrinfo(
        self,
        host: bytes | str | None,
        port: bytes | str | int | None,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> _GetAddrInfoResult: ...
    async def getnameinfo(self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int = 0) -> tuple[str, str]: ...

    @overload
    async def create_connection(
        self,
        protocol_factory: Callable[[], _ProtocolT],
        host: str = ...,
        port: int = ...,
        *,
        ssl: _SSLContext = None,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        sock: None = None,
        local_addr: tuple[str, int] | None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        happy_eyeballs_delay: float | None = None,
        interleave: int | None = None,
        all_errors: bool = False,
    ) -> tuple[Transport, _ProtocolT]: ...
    @overload
    async def create_connection(
        self,
        protocol_factory: Callable[[], _ProtocolT],
        host: None = None,
        port: None = None,
        *,
        ssl: _SSLContext = None,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        sock: socket,
        local_addr: None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        happy_eyeballs_delay: float | None = None,
        interleave: int | None = None,
        all_errors: bool = False,
    ) -> tuple[Transport, _ProtocolT]: ...
    @overload
    async def create_server(
        self,
        protocol_factory: _ProtocolFactory,
        host: str | Sequence[str] | None,
        port: int,
        *,
        family: int = AddressFamily.AF_UNSPEC,
        flags: int = AddressInfo.AI_PASSIVE,
        sock: None = None,
        backlog: int = 100,
        ssl: _SSLContext = None,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        keep_alive: bool | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        start_serving: bool = True,
    ) -> Server: ...
    @overload
    async def create_server(
        self,
        protocol_factory: _ProtocolFactory,
        host: str | Sequence[str],
        port: int | None = None,
        *,
        family: int = AddressFamily.AF_UNSPEC,
        flags: int = AddressInfo.AI_PASSIVE,
        sock: None = None,
        backlog: int = 100,
        ssl: _SSLContext = None,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        keep_alive: bool | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        start_serving: bool = True,
    ) -> Server: ...
    @overload
    async def create_server(
        self,
        protocol_factory: _ProtocolFactory,
        host: None = None,
        *,
        port: int,
        family: int = AddressFamily.AF_UNSPEC,
        flags: int = AddressInfo.AI_PASSIVE,
        sock: None = None,
        backlog: int = 100,
        ssl: _SSLContext = None,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        keep_alive: bool | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        start_serving: bool = True,
    ) -> Server: ...
    @overload
    async def create_server(
        self,
        protocol_factory: _ProtocolFactory,
        host: None = None,
        port: None = None,
        *,
        family: int = AddressFamily.AF_UNSPEC,
        flags: int = AddressInfo.AI_PASSIVE,
        sock: socket,
        backlog: int = 100,
        ssl: _SSLContext = None,
        reuse_address: bool | None = None,
        reuse_port: bool | None = None,
        keep_alive: bool | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        start_serving: bool = True,
    ) -> Server: ...
    async def start_tls(
        self,
        transport: WriteTransport,
        protocol: BaseProtocol,
        sslcontext: ssl.SSLContext,
        *,
        server_side: bool = False,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> Transport | None: ...
    async def create_unix_server(
        self,
        protocol_factory: _ProtocolFactory,
        path: StrPath | None = None,
        *,
        sock: socket | None = None,
        backlog: int = 100,
        ssl: _SSLContext = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        start_serving: bool = True,
        cleanup_socket: bool = ...,
    ) -> Server: ...
    async def connect_accepted_socket(
        self,
        protocol_factory: Callable[[], _ProtocolT],
        sock: socket,
        *,
        ssl: _SSLContext = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> tuple[Transport, _ProtocolT]: ...
    async def create_unix_connection(
        self,
        protocol_factory: Callable[[], _ProtocolT],
        path: str | None = None,
        *,
        ssl: _SSLContext = None,
        sock: socket | None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
    ) -> tuple[Transport, _ProtocolT]: ...
    async def sock_sendfile(
        self, sock: socket, file: IO[bytes], offset: int = 0, count: int | None = None, *, fallback: bool | None = True
    ) -> int: ...
    async def sendfile(
        self, transport: WriteTransport, file: IO[bytes], offset: int = 0, count: int | None = None, *, fallback: bool = True
    ) -> int: ...
    # No reuse_address: removed from asyncio's loops in 3.11 (TypeError since).
    async def create_datagram_endpoint(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], _ProtocolT],
        local_addr: tuple[str, int] | str | None = None,
        remote_addr: tuple[str, int] | str | None = None,
        *,
        family: int = 0,
        proto: int = 0,
        flags: int = 0,
        reuse_port: bool | None = None,
        allow_broadcast: bool | None = None,
        sock: socket | None = None,
    ) -> tuple[_AioDatagramTransport, _ProtocolT]: ...
    async def connect_read_pipe(
        self, protocol_factory: Callable[[], _ProtocolT], pipe: Any
    ) -> tuple[ReadTransport, _ProtocolT]: ...
    async def connect_write_pipe(
        self, protocol_factory: Callable[[], _ProtocolT], pipe: Any
    ) -> tuple[WriteTransport, _ProtocolT]: ...
    async def subprocess_shell(
        self,
        protocol_factory: Callable[[], _ProtocolT],
        cmd: bytes | str,
        *,
        stdin: int | IO[Any] | None = -1,
        stdout: int | IO[Any] | None = -1,
        stderr: int | IO[Any] | None = -1,
        universal_newlines: Literal[False] = False,
        shell: Literal[True] = True,
        bufsize: Literal[0] = 0,
        encoding: None = None,
        errors: None = None,
        text: Literal[False] | None = None,
        **kwargs: Any,
    ) -> tuple[SubprocessTransport, _ProtocolT]: ...
    async def subprocess_exec(
        self,
        protocol_factory: Callable[[], _ProtocolT],
        program: Any,
        *args: Any,
        stdin: int | IO[Any] | None = -1,
        stdout: int | IO[Any] | None = -1,
        stderr: int | IO[Any] | None = -1,
        universal_newlines: Literal[False] = False,
        shell: Literal[False] = False,
        bufsize: Literal[0] = 0,
        encoding: None = None,
        errors: None = None,
        text: Literal[False] | None = None,
        **kwargs: Any,
    ) -> tuple[SubprocessTransport, _ProtocolT]: ...
    def add_reader(self, fd: FileDescriptorLike, callback: Callable[[Unpack[_Ts]], Any], *args: Unpack[_Ts]) -> None: ...
    def remove_reader(self, fd: FileDescriptorLike) -> bool: ...
    def add_writer(self, fd: FileDescriptorLike, callback: Callable[[Unpack[_Ts]], Any], *args: Unpack[_Ts]) -> None: ...
    def remove_writer(self, fd: FileDescriptorLike) -> bool: ...
    async def sock_recv(self, sock: socket, n: int) -> bytes: ...
    async def sock_recv_into(self, sock: socket, buf: WriteableBuffer) -> int: ...
    async def sock_sendall(self, sock: socket, data: ReadableBuffer) -> None: ...
    async def sock_connect(self, sock: socket, address: _Address) -> None: ...
    async def sock_accept(self, sock: socket) -> tuple[socket, _RetAddress]: ...
    async def sock_recvfrom(self, sock: socket, bufsize: int) -> tuple[bytes, _RetAddress]: ...
    async def sock_recvfrom_into(self, sock: socket, buf: WriteableBuffer, nbytes: int = 0) -> tuple[int, _RetAddress]: ...
    async def sock_sendto(self, sock: socket, data: ReadableBuffer, address: _Address) -> int: ...
    def add_signal_handler(self, sig: int, callback: Callable[[Unpack[_Ts]], object], *args: Unpack[_Ts]) -> None: ...
    def remove_signal_handler(self, sig: int) -> bool: ...
    def set_exception_handler(self, handler: _ExceptionHandler | None) -> None: ...
    def get_exception_handler(self) -> _ExceptionHandler | None: ...
    def default_exception_handler(self, context: _Context) -> None: ...
    def call_exception_handler(self, context: _Context) -> None: ...
    def get_debug(self) -> bool: ...
    def set_debug(self, enabled: bool) -> None: ...
    async def shutdown_default_executor(self, timeout: float | None = None) -> None: ...


@overload
def new_event_loop(*, fallback: Literal[False] | None = None) -> Loop: ...
@overload
def new_event_loop(*, fallback: bool) -> asyncio.AbstractEventLoop: ...

if sys.version_info >= (3, 14):
    _PolicyBase = asyncio.events._BaseDefaultEventLoopPolicy
else:
    _PolicyBase = asyncio.DefaultEventLoopPolicy

class EventLoopPolicy(_PolicyBase):
    def __init__(self, *, fallback: bool | None = None) -> None: ...
    def new_event_loop(self) -> asyncio.AbstractEventLoop: ...

def install(*, fallback: bool | None = None) -> None: ...
@overload
def run(main: Coroutine[Any, Any, _T], *, debug: bool | None = None,
        fallback: bool | None = None) -> _T: ...
@overload
def run(main: Coroutine[Any, Any, _T], *,
        loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
        debug: bool | None = None) -> _T: ...
def features() -> _Features: ...
def available() -> str | None: ...

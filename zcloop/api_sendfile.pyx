# sendfile() / sock_sendfile(): file -> pipe -> socket with IORING_OP_SPLICE,
# so neither disk reads nor a full socket ever block the loop (uvloop has no
# sendfile at all).  Non-regular files fall back to read + send.

cdef int SPLICE_PIPE_SIZE = 1024 * 1024


class _SendfileFallbackProtocol(aio_protocols.Protocol):
    """Stands in for the transport's protocol while sendfile() writes, so
    pause_writing()/resume_writing() pace the copy loop (as asyncio's)."""

    def __init__(self, loop, transp):
        self._loop = loop
        self._transport = transp
        self._proto = transp.get_protocol()
        self._should_resume_reading = transp.is_reading()
        low, high = transp.get_write_buffer_limits()
        self._should_resume_writing = transp.get_write_buffer_size() > high
        transp.pause_reading()
        transp.set_protocol(self)
        self._write_ready_fut = loop.create_future() if self._should_resume_writing else None

    async def drain(self):
        if self._transport.is_closing():
            raise ConnectionError("Connection closed by peer")
        fut = self._write_ready_fut
        if fut is not None:
            await fut

    def connection_made(self, transport):
        raise RuntimeError("Invalid state: connection should have been established already.")

    def connection_lost(self, exc):
        if self._write_ready_fut is not None:
            if exc is None:
                self._write_ready_fut.set_exception(
                    ConnectionError("Connection is closed by peer"))
            else:
                self._write_ready_fut.set_exception(exc)
        self._proto.connection_lost(exc)

    def pause_writing(self):
        if self._write_ready_fut is None:
            self._write_ready_fut = self._loop.create_future()

    def resume_writing(self):
        if self._write_ready_fut is not None:
            self._write_ready_fut.set_result(False)
            self._write_ready_fut = None

    def data_received(self, data):
        raise RuntimeError("Invalid state: reading should be paused")

    def eof_received(self):
        raise RuntimeError("Invalid state: reading should be paused")

    async def restore(self):
        self._transport.set_protocol(self._proto)
        if self._should_resume_reading:
            self._transport.resume_reading()
        if self._write_ready_fut is not None:
            self._write_ready_fut.cancel()
        if self._should_resume_writing:
            self._proto.resume_writing()


def _seekable(file):
    # A pipe (fallback copy) has no position to restore: seek() would fail
    # after the data went out.
    seekable = getattr(file, 'seekable', None)
    return seekable is None or seekable()


def _check_sendfile_params(sock, file, offset, count):
    if 'b' not in getattr(file, 'mode', 'b'):
        raise ValueError("file should be opened in binary mode")
    if not sock.type == socket.SOCK_STREAM:
        raise ValueError("only SOCK_STREAM type sockets are supported")
    if count is not None:
        if not isinstance(count, int):
            raise TypeError(f"count must be a positive integer (got {count!r})")
        if count <= 0:
            raise ValueError(f"count must be a positive integer (got {count!r})")
    if not isinstance(offset, int):
        raise TypeError(f"offset must be a non-negative integer (got {offset!r})")
    if offset < 0:
        raise ValueError(f"offset must be a non-negative integer (got {offset!r})")


class _SendfileAPI:

    async def sock_sendfile(self, sock, file, offset=0, count=None, *, fallback=True):
        """Send a file over a connected stream socket."""
        if (<RingLoop>self)._debug and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")
        _check_ssl_socket(sock)
        _check_sendfile_params(sock, file, offset, count)
        try:
            return await self._sock_sendfile_native(sock, file, offset, count)
        except aio_exceptions.SendfileNotAvailableError:
            if not fallback:
                raise
        return await self._sock_sendfile_fallback(sock, file, offset, count)

    async def _sock_sendfile_native(self, sock, file, offset, count):
        try:
            fileno = file.fileno()
        except (AttributeError, io.UnsupportedOperation):
            raise aio_exceptions.SendfileNotAvailableError("not a regular file")
        try:
            st = os.fstat(fileno)
        except OSError:
            raise aio_exceptions.SendfileNotAvailableError("not a regular file")
        if not stat.S_ISREG(st.st_mode):
            raise aio_exceptions.SendfileNotAvailableError("not a regular file")
        if not (<RingLoop>self)._op_ok(IORING_OP_SPLICE):
            raise aio_exceptions.SendfileNotAvailableError("IORING_OP_SPLICE is unavailable")
        # Without count: up to EOF as it is when we get there (asyncio sends
        # until sendfile() returns 0), not to the size the file has now.
        blocksize = count
        if not count and st.st_size == 0:
            return 0
        pipe_r, pipe_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            pipe_size = fcntl.fcntl(pipe_w, F_SETPIPE_SZ, SPLICE_PIPE_SIZE)
        except OSError:
            pipe_size = 65536
        total_sent = 0
        sock_fd = sock.fileno()
        try:
            while blocksize is None or total_sent < blocksize:
                chunk = pipe_size if blocksize is None else min(pipe_size,
                                                                blocksize - total_sent)
                filled = await ring_splice(<RingLoop>self, fileno, offset + total_sent,
                                           pipe_w, chunk)
                if filled == 0:
                    break       # EOF: the file is shorter than asked
                moved = 0
                while moved < filled:
                    try:
                        n = await ring_splice(<RingLoop>self, pipe_r, -1, sock_fd,
                                              filled - moved)
                    except BlockingIOError:
                        # The socket is non-blocking and full (slow reader):
                        # SPLICE gives EAGAIN rather than waiting.
                        await ring_poll(<RingLoop>self, sock_fd, POLLOUT)
                        continue
                    if n == 0:
                        raise BrokenPipeError(errno_mod.EPIPE, 'socket closed during sendfile')
                    moved += n
                    # Counted as it reaches the socket: the file position
                    # after an error is offset + what the socket accepted.
                    total_sent += n
            return total_sent
        except OSError as exc:
            if total_sent == 0 and exc.errno in (errno_mod.EINVAL, errno_mod.ENOSYS,
                                                 errno_mod.EOPNOTSUPP):
                raise aio_exceptions.SendfileNotAvailableError(
                    "splice() call failed") from exc
            raise
        finally:
            os.close(pipe_r)
            os.close(pipe_w)
            if total_sent > 0:
                file.seek(offset + total_sent)

    async def _sock_sendfile_fallback(self, sock, file, offset, count):
        if offset:
            file.seek(offset)
        blocksize = (min(count, aio_constants.SENDFILE_FALLBACK_READBUFFER_SIZE)
                     if count else aio_constants.SENDFILE_FALLBACK_READBUFFER_SIZE)
        buf = bytearray(blocksize)
        total_sent = 0
        try:
            while True:
                if count:
                    blocksize = min(count - total_sent, blocksize)
                    if blocksize <= 0:
                        break
                view = memoryview(buf)[:blocksize]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    break
                await self.sock_sendall(sock, view[:read])
                total_sent += read
            return total_sent
        finally:
            if total_sent > 0 and hasattr(file, 'seek') and _seekable(file):
                file.seek(offset + total_sent)

    async def sendfile(self, transport, file, offset=0, count=None, *, fallback=True):
        """Send a file through a transport; return the number of bytes sent."""
        if transport.is_closing():
            raise RuntimeError("Transport is closing")
        native = isinstance(transport, StreamTransport) and not (
            <StreamTransport>transport)._is_pipe
        if not native and getattr(transport, '_sendfile_compatible', None) not in (
                aio_constants._SendfileMode.FALLBACK, aio_constants._SendfileMode.TRY_NATIVE):
            # As asyncio: pipes and datagram transports have no sendfile;
            # TLS transports say FALLBACK.
            raise RuntimeError(f"sendfile is not supported for transport {transport!r}")
        if native:
            try:
                return await self._sendfile_native(transport, file, offset, count)
            except aio_exceptions.SendfileNotAvailableError:
                if not fallback:
                    raise
        if not fallback:
            raise RuntimeError(
                f"fallback is disabled and native sendfile is not supported for "
                f"transport {transport!r}")
        return await self._sendfile_fallback(transport, file, offset, count)

    async def _sendfile_native(self, transp, file, offset, count):
        cdef StreamTransport t = <StreamTransport>transp
        _check_sendfile_params(t._sock, file, offset, count)
        resume_reading = t.is_reading()
        t.pause_reading()
        await t._make_empty_waiter()
        try:
            return await self.sock_sendfile(t._sock, file, offset, count, fallback=False)
        finally:
            t._reset_empty_waiter()
            if resume_reading:
                t.resume_reading()

    async def _sendfile_fallback(self, transp, file, offset, count):
        if offset:
            file.seek(offset)
        blocksize = min(count, 16384) if count else 16384
        buf = bytearray(blocksize)
        total_sent = 0
        proto = _SendfileFallbackProtocol(self, transp)
        try:
            while True:
                if count:
                    blocksize = min(count - total_sent, blocksize)
                    if blocksize <= 0:
                        return total_sent
                view = memoryview(buf)[:blocksize]
                read = await self.run_in_executor(None, file.readinto, view)
                if not read:
                    return total_sent
                await proto.drain()
                transp.write(view[:read])
                total_sent += read
        finally:
            if total_sent > 0 and hasattr(file, 'seek') and _seekable(file):
                file.seek(offset + total_sent)
            await proto.restore()

# TLS: asyncio's SSLProtocol state machine (Lib/asyncio/sslproto.py, 3.11+)
# as compiled classes.  Same states, transitions, flow control, timeouts,
# error messages and exception types; what differs is only how the work is
# done:
#
# * the raw StreamTransport hands received ciphertext straight to _feed()
#   (no get_buffer()/buffer_updated() round trip, no intermediate copy);
#   any other transport, such as the app transport of an outer TLS session
#   (TLS inside TLS), calls data_received() or get_buffer()/buffer_updated();
# * plaintext is decrypted straight into the bytes object handed to the app;
# * the SSL object's C methods are called directly, and a read loop stops
#   when the incoming BIO is empty instead of provoking SSLWantReadError.

from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.buffer cimport PyBUF_READ, PyBUF_WRITE

cdef Py_ssize_t SSL_READ_MAX = 256 * 1024     # asyncio's SSLProtocol.max_size

if ssl_mod is not None:
    _SSLAgainErrors = (ssl_mod.SSLWantReadError, ssl_mod.SSLSyscallError)
    _SSLError = ssl_mod.SSLError
    _SSLCertificateError = ssl_mod.CertificateError
    _SSLObject = ssl_mod.SSLObject

_SSL_STATE_NAMES = ('UNWRAPPED', 'DO_HANDSHAKE', 'WRAPPED', 'FLUSHING', 'SHUTDOWN')


cdef _create_transport_context(server_side, server_hostname):
    if server_side:
        raise ValueError('Server side SSL needs a valid SSLContext')
    # Client side may pass ssl=True for a default (secure) context.
    sslcontext = ssl_mod.create_default_context()
    if not server_hostname:
        sslcontext.check_hostname = False
    return sslcontext


cdef _snapshot(object backlog, Py_ssize_t first):
    # Mutable buffers left in the backlog are copied, as the caller may
    # reuse them once write() returns.
    cdef Py_ssize_t i
    for i in range(first, len(backlog)):
        data = backlog[i]
        if isinstance(data, (bytearray, memoryview)):
            backlog[i] = bytes(data)


cdef class _SSLProtocolTransport:
    """The app-facing transport of a TLS connection (asyncio's
    _SSLProtocolTransport)."""

    _start_tls_compatible = True
    _sendfile_compatible = aio_constants._SendfileMode.FALLBACK

    def __del__(self):
        if not self._closed:
            self._closed = True
            warnings.warn("unclosed transport <zcloop._SSLProtocolTransport object>",
                          ResourceWarning)

    cdef SSLProtocol _proto(self):
        # asyncio drops its protocol on a second close(); later calls fail.
        if self._ssl_protocol is None:
            raise AttributeError('the SSL protocol is gone: the transport was closed twice')
        return self._ssl_protocol

    def get_extra_info(self, name, default=None):
        """Get optional transport information."""
        return self._proto()._get_extra_info(name, default)

    def set_protocol(self, protocol):
        self._proto()._set_app_protocol(protocol)

    def get_protocol(self):
        return self._proto()._app_protocol

    def is_closing(self):
        return self._closed

    def close(self):
        """Close the transport: buffered data is flushed, then the TLS
        shutdown runs and the protocol's connection_lost(None) follows."""
        if not self._closed:
            self._closed = True
            self._proto()._start_shutdown()
        else:
            self._ssl_protocol = None

    def is_reading(self):
        return not self._proto()._app_reading_paused

    def pause_reading(self):
        self._proto()._pause_reading()

    def resume_reading(self):
        self._proto()._resume_reading()

    def set_write_buffer_limits(self, high=None, low=None):
        cdef SSLProtocol p = self._proto()
        p._set_write_buffer_limits(high, low)
        p._control_app_writing()

    def get_write_buffer_limits(self):
        cdef SSLProtocol p = self._proto()
        return (p._outgoing_low_water, p._outgoing_high_water)

    def get_write_buffer_size(self):
        return self._proto()._get_write_buffer_size()

    def set_read_buffer_limits(self, high=None, low=None):
        cdef SSLProtocol p = self._proto()
        p._set_read_buffer_limits(high, low)
        p._control_ssl_reading()

    def get_read_buffer_limits(self):
        cdef SSLProtocol p = self._proto()
        return (p._incoming_low_water, p._incoming_high_water)

    def get_read_buffer_size(self):
        return self._proto()._incoming.pending

    @property
    def _protocol_paused(self):
        # sendfile()'s fallback reads this
        return self._proto()._app_writing_paused

    def write(self, data):
        """Encrypt and send data (asynchronously)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data: expecting a bytes-like instance, "
                            f"got {type(data).__name__}")
        if not data:
            return
        self._proto()._write_appdata((data,))

    def writelines(self, list_of_data):
        self._proto()._write_appdata(list_of_data)

    def write_eof(self):
        raise NotImplementedError

    def can_write_eof(self):
        return False

    def abort(self):
        """Close the transport immediately: buffered data is lost and
        connection_lost(None) follows."""
        self._force_close(None)

    def _force_close(self, exc):
        self._closed = True
        if self._ssl_protocol is not None:
            self._ssl_protocol._abort(exc)


cdef class SSLProtocol:
    """asyncio.sslproto.SSLProtocol, compiled: TLS over a MemoryBIO pair on
    top of a raw stream transport."""

    def __init__(self, RingLoop loop, app_protocol, sslcontext, waiter,
                 server_side=False, server_hostname=None, call_connection_made=True,
                 ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
        if ssl_mod is None:
            raise RuntimeError("stdlib ssl module not available")
        if ssl_handshake_timeout is None:
            ssl_handshake_timeout = aio_constants.SSL_HANDSHAKE_TIMEOUT
        elif ssl_handshake_timeout <= 0:
            raise ValueError(
                f"ssl_handshake_timeout should be a positive number, "
                f"got {ssl_handshake_timeout}")
        if ssl_shutdown_timeout is None:
            ssl_shutdown_timeout = aio_constants.SSL_SHUTDOWN_TIMEOUT
        elif ssl_shutdown_timeout <= 0:
            raise ValueError(
                f"ssl_shutdown_timeout should be a positive number, "
                f"got {ssl_shutdown_timeout}")
        if not sslcontext:
            sslcontext = _create_transport_context(server_side, server_hostname)

        # More keys are added once the handshake completes.
        self._extra = {'sslcontext': sslcontext}
        self._write_backlog = collections.deque()
        self._waiter = waiter
        self._loop = loop
        self._set_app_protocol(app_protocol)
        self._ssl_handshake_timeout = ssl_handshake_timeout
        self._ssl_shutdown_timeout = ssl_shutdown_timeout

        self._incoming = ssl_mod.MemoryBIO()
        self._outgoing = ssl_mod.MemoryBIO()
        self._incoming_write = self._incoming.write
        self._outgoing_read = self._outgoing.read
        self._state = SSL_UNWRAPPED
        self._app_state = APP_INIT if call_connection_made else APP_CON_MADE
        self._sslobj = sslcontext.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side,
            server_hostname=server_hostname if server_hostname and not server_side else None)
        # The stdlib SSLObject's read()/write() are Python wrappers around
        # its C object; call that directly unless a subclass overrides them.
        fast = self._sslobj
        if type(fast) is _SSLObject:
            fast = getattr(fast, '_sslobj', fast)
        self._ssl_read = fast.read
        self._ssl_write = fast.write
        self._ssl_pending = fast.pending

        self._set_read_buffer_limits(None, None)
        self._set_write_buffer_limits(None, None)
        self._get_app_transport()

    cdef _set_app_protocol(self, object app_protocol):
        self._app_protocol = app_protocol
        if isinstance(app_protocol, aio_protocols_BufferedProtocol):
            self._app_get_buffer = app_protocol.get_buffer
            self._app_buffer_updated = app_protocol.buffer_updated
            self._app_is_buffer = True
        else:
            self._app_get_buffer = self._app_buffer_updated = None
            self._app_is_buffer = False

    cdef _wakeup_waiter(self, object exc):
        if self._waiter is None:
            return
        if not self._waiter.cancelled():
            if exc is not None:
                self._waiter.set_exception(exc)
            else:
                self._waiter.set_result(None)
        self._waiter = None

    cdef _SSLProtocolTransport _get_app_transport(self):
        cdef _SSLProtocolTransport tr
        if self._app_transport is None:
            if self._app_transport_created:
                raise RuntimeError('Creating _SSLProtocolTransport twice')
            tr = _SSLProtocolTransport.__new__(_SSLProtocolTransport)
            tr._ssl_protocol = self
            self._app_transport = tr
            self._app_transport_created = True
        return self._app_transport

    # ------------------------------------------------------------------
    # The raw transport's protocol interface

    def connection_made(self, transport):
        """Called when the low-level connection is made: start the handshake."""
        self._transport = transport
        self._transport_write = transport.write
        self._start_handshake()

    def connection_lost(self, exc):
        """Called when the low-level connection is lost or closed."""
        self._write_backlog.clear()
        self._outgoing_read()
        self._conn_lost += 1
        # Only mark the app transport closed, so that it does not warn.
        if self._app_transport is not None:
            self._app_transport._closed = True
        if self._state != SSL_DO_HANDSHAKE:
            if self._app_state == APP_CON_MADE or self._app_state == APP_EOF:
                self._app_state = APP_CON_LOST
                self._loop._call_soon(self._app_protocol.connection_lost, (exc,), None)
        self._set_state(SSL_UNWRAPPED)
        self._transport = None
        self._transport_write = None
        self._app_transport = None
        self._app_protocol = None
        self._app_get_buffer = self._app_buffer_updated = None
        self._wakeup_waiter(exc)
        if self._shutdown_timeout_handle is not None:
            self._shutdown_timeout_handle.cancel()
            self._shutdown_timeout_handle = None
        if self._handshake_timeout_handle is not None:
            self._handshake_timeout_handle.cancel()
            self._handshake_timeout_handle = None

    cdef object _read_view(self):
        # Only for a raw transport other than StreamTransport (which _feed()s).
        if self._rbuf_view is None:
            self._rbuf_view = memoryview(bytearray(SSL_READ_MAX))
        return self._rbuf_view

    def get_buffer(self, n):
        return self._read_view()

    def buffer_updated(self, nbytes):
        self._incoming_write(self._read_view()[:nbytes])
        self._on_incoming()

    def data_received(self, data):
        # A transport that hands over bytes: an outer TLS transport, when
        # this session runs inside another (start_tls() on a TLS transport).
        self._incoming_write(data)
        self._on_incoming()

    cdef _feed(self, const char *data, Py_ssize_t n):
        # StreamTransport's shortcut for get_buffer() + buffer_updated(): the
        # BIO copies straight from the ring's receive buffer.
        self._incoming_write(PyMemoryView_FromMemory(<char*>data, n, PyBUF_READ))
        self._on_incoming()

    cdef _on_incoming(self):
        cdef SSLState state = self._state
        if state == SSL_DO_HANDSHAKE:
            self._do_handshake()
        elif state == SSL_WRAPPED:
            self._do_read()
        elif state == SSL_FLUSHING:
            self._do_flush()
        elif state == SSL_SHUTDOWN:
            self._do_shutdown()

    def eof_received(self):
        """The peer half-closed the raw stream."""
        self._eof_received = True
        try:
            if self._loop._debug:
                logger.debug("%r received EOF", self)
            if self._state == SSL_DO_HANDSHAKE:
                self._on_handshake_complete(ConnectionResetError)
            elif self._state == SSL_WRAPPED:
                self._set_state(SSL_FLUSHING)
                if self._app_reading_paused:
                    return True
                self._do_flush()
            elif self._state == SSL_FLUSHING:
                self._do_write()
                self._set_state(SSL_SHUTDOWN)
                self._do_shutdown()
            elif self._state == SSL_SHUTDOWN:
                self._do_shutdown()
        except Exception:
            self._transport.close()
            raise

    cdef _get_extra_info(self, object name, object default):
        if name in self._extra:
            return self._extra[name]
        if self._transport is not None:
            return self._transport.get_extra_info(name, default)
        return default

    cdef _set_state(self, SSLState new_state):
        cdef SSLState old = self._state
        if (new_state == SSL_UNWRAPPED
                or (old == SSL_UNWRAPPED and new_state == SSL_DO_HANDSHAKE)
                or (old == SSL_DO_HANDSHAKE and new_state == SSL_WRAPPED)
                or (old == SSL_WRAPPED and new_state == SSL_FLUSHING)
                or (old == SSL_FLUSHING and new_state == SSL_SHUTDOWN)):
            self._state = new_state
        else:
            raise RuntimeError(
                f'cannot switch state from SSLProtocolState.{_SSL_STATE_NAMES[old]} '
                f'to SSLProtocolState.{_SSL_STATE_NAMES[new_state]}')

    # ------------------------------------------------------------------
    # Handshake

    cdef _start_handshake(self):
        if self._loop._debug:
            logger.debug("%r starts SSL handshake", self)
            self._handshake_start_time = self._loop.time()
        else:
            self._handshake_start_time = None
        self._set_state(SSL_DO_HANDSHAKE)
        self._handshake_timeout_handle = self._loop.call_later(
            self._ssl_handshake_timeout, self._check_handshake_timeout)
        self._do_handshake()

    def _check_handshake_timeout(self):
        if self._state == SSL_DO_HANDSHAKE:
            msg = (f"SSL handshake is taking longer than "
                   f"{self._ssl_handshake_timeout} seconds: aborting the connection")
            self._fatal_error(ConnectionAbortedError(msg), 'Fatal error on transport')

    cdef _do_handshake(self):
        try:
            self._sslobj.do_handshake()
        except _SSLAgainErrors:
            self._process_outgoing()
        except _SSLError as exc:
            self._on_handshake_complete(exc)
        else:
            self._on_handshake_complete(None)

    cdef _on_handshake_complete(self, object handshake_exc):
        if self._handshake_timeout_handle is not None:
            self._handshake_timeout_handle.cancel()
            self._handshake_timeout_handle = None
        sslobj = self._sslobj
        try:
            if handshake_exc is None:
                self._set_state(SSL_WRAPPED)
            else:
                raise handshake_exc
            peercert = sslobj.getpeercert()
        except Exception as exc:
            handshake_exc = None
            self._set_state(SSL_UNWRAPPED)
            if isinstance(exc, _SSLCertificateError):
                msg = 'SSL handshake failed on verifying the certificate'
            else:
                msg = 'SSL handshake failed'
            self._fatal_error(exc, msg)
            self._wakeup_waiter(exc)
            return
        if self._loop._debug and self._handshake_start_time is not None:
            dt = self._loop.time() - self._handshake_start_time
            logger.debug("%r: SSL handshake took %.1f ms", self, dt * 1e3)
        self._extra.update(peercert=peercert, cipher=sslobj.cipher(),
                           compression=sslobj.compression(), ssl_object=sslobj)
        if self._app_state == APP_INIT:
            self._app_state = APP_CON_MADE
            self._app_protocol.connection_made(self._get_app_transport())
        self._wakeup_waiter(None)
        self._do_read()

    # ------------------------------------------------------------------
    # Shutdown

    cdef _start_shutdown(self):
        if self._state in (SSL_FLUSHING, SSL_SHUTDOWN, SSL_UNWRAPPED):
            return
        if self._app_transport is not None:
            self._app_transport._closed = True
        if self._state == SSL_DO_HANDSHAKE:
            self._abort(None)
        else:
            self._set_state(SSL_FLUSHING)
            self._shutdown_timeout_handle = self._loop.call_later(
                self._ssl_shutdown_timeout, self._check_shutdown_timeout)
            self._do_flush()

    def _check_shutdown_timeout(self):
        if self._state in (SSL_FLUSHING, SSL_SHUTDOWN):
            self._transport._force_close(aio_exceptions.TimeoutError('SSL shutdown timed out'))

    cdef _do_flush(self):
        self._do_read()
        self._set_state(SSL_SHUTDOWN)
        self._do_shutdown()

    cdef _do_shutdown(self):
        try:
            if not self._eof_received:
                self._sslobj.unwrap()
        except _SSLAgainErrors:
            self._process_outgoing()
        except _SSLError as exc:
            self._on_shutdown_complete(exc)
        else:
            self._process_outgoing()
            self._call_eof_received()
            self._on_shutdown_complete(None)

    cdef _on_shutdown_complete(self, object shutdown_exc):
        if self._shutdown_timeout_handle is not None:
            self._shutdown_timeout_handle.cancel()
            self._shutdown_timeout_handle = None
        if shutdown_exc:
            self._fatal_error(shutdown_exc, 'Fatal error on transport')
        else:
            # What the BIO still holds because the transport below paused our
            # writing (app data, our close_notify) goes out ahead of the
            # close: zcloop's transports drop writes made after close(),
            # where asyncio's still take them from resume_writing() while
            # their buffer drains.
            if self._outgoing.pending:
                self._transport_write(self._outgoing_read())
            self._loop._call_soon(self._transport.close, None, None)

    cdef _abort(self, object exc):
        self._set_state(SSL_UNWRAPPED)
        if self._transport is not None:
            self._transport._force_close(exc)

    # ------------------------------------------------------------------
    # Outgoing data

    cdef _write_appdata(self, object list_of_data):
        cdef Py_ssize_t first
        if self._state in (SSL_FLUSHING, SSL_SHUTDOWN, SSL_UNWRAPPED):
            if self._conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES:
                logger.warning('SSL connection is closed')
            self._conn_lost += 1
            return
        backlog = self._write_backlog
        first = len(backlog)
        for data in list_of_data:
            backlog.append(data)
            self._write_buffer_size += len(data)
        try:
            if self._state == SSL_WRAPPED:
                self._do_write()
            else:
                # Held until the handshake completes: the caller may reuse
                # its buffers meanwhile.
                _snapshot(backlog, first)
        except Exception as ex:
            self._fatal_error(ex, 'Fatal error on SSL protocol')

    cdef _do_write(self):
        cdef Py_ssize_t count, n
        backlog = self._write_backlog
        try:
            while backlog:
                data = backlog[0]
                count = self._ssl_write(data)
                n = len(data)
                if count < n:
                    backlog[0] = data[count:]
                    self._write_buffer_size -= count
                else:
                    backlog.popleft()
                    self._write_buffer_size -= n
        except _SSLAgainErrors:
            _snapshot(backlog, 0)
        self._process_outgoing()

    cdef _process_outgoing(self):
        # Everything the SSL object produced goes out as one write.
        if not self._ssl_writing_paused and self._outgoing.pending:
            self._transport_write(self._outgoing_read())
        self._control_app_writing()

    # ------------------------------------------------------------------
    # Incoming data

    def _do_read_cb(self):
        self._do_read()

    cdef _do_read(self):
        if self._state != SSL_WRAPPED and self._state != SSL_FLUSHING:
            return
        try:
            if not self._app_reading_paused:
                if self._app_is_buffer:
                    self._do_read_buffered()
                else:
                    self._do_read_copied()
                if self._write_backlog:
                    self._do_write()
                else:
                    self._process_outgoing()
            self._control_ssl_reading()
        except Exception as ex:
            self._fatal_error(ex, 'Fatal error on SSL protocol')

    cdef _do_read_buffered(self):
        cdef Py_ssize_t offset = 0, count = 1, wants
        buf = self._app_get_buffer(self._incoming.pending)
        wants = len(buf)
        try:
            count = self._ssl_read(wants, buf)
            if count > 0:
                offset = count
                view = memoryview(buf)
                while offset < wants:
                    if not self._incoming.pending:
                        break       # the next read could only want more data
                    count = self._ssl_read(wants - offset, view[offset:])
                    if count > 0:
                        offset += count
                    else:
                        break
                else:
                    # The app's buffer is full: read the rest next time round.
                    self._loop._call_soon(self._do_read_cb, None, None)
        except _SSLAgainErrors:
            pass
        if offset > 0:
            self._app_buffer_updated(offset)
        if not count:
            # close_notify
            self._call_eof_received()
            self._start_shutdown()

    cdef _do_read_copied(self):
        # Plaintext is decrypted straight into the bytes handed to the app,
        # sized by what the BIO holds (plaintext is never longer).
        cdef Py_ssize_t cap, offset, want, count = 1
        cdef bint more = True
        cdef PyObject *raw
        cdef list chunks = None
        first = None
        while more:
            cap = self._incoming.pending + self._ssl_pending()
            if cap == 0:
                break           # a read could only raise SSLWantReadError
            if cap > SSL_READ_MAX:
                cap = SSL_READ_MAX
            buf = PyBytes_FromStringAndSize(NULL, cap)
            view = PyMemoryView_FromMemory(PyBytes_AS_STRING(buf), cap, PyBUF_WRITE)
            offset = 0
            try:
                while offset < cap:
                    want = cap - offset
                    count = self._ssl_read(want, view[offset:] if offset else view)
                    if count == 0:
                        more = False        # close_notify
                        break
                    offset += count
                    if count < want and not self._incoming.pending:
                        more = False        # a short read drained the last record
                        break
            except _SSLAgainErrors:
                more = False
            view = None
            if offset == 0:
                continue
            if offset < cap:
                # buf is the only reference: shrink it in place.
                raw = <PyObject*>buf
                Py_INCREF(buf)
                buf = None
                _PyBytes_Resize(&raw, offset)
                buf = <object>raw
                Py_DECREF(buf)
            if first is None:
                first = buf
            else:
                if chunks is None:
                    chunks = [first]
                chunks.append(buf)
        if chunks is not None:
            self._app_protocol.data_received(b''.join(chunks))
        elif first is not None:
            self._app_protocol.data_received(first)
        if not count:
            # close_notify
            self._call_eof_received()
            self._start_shutdown()

    cdef _call_eof_received(self):
        try:
            if self._app_state == APP_CON_MADE:
                self._app_state = APP_EOF
                keep_open = self._app_protocol.eof_received()
                if keep_open:
                    logger.warning('returning true from eof_received() '
                                   'has no effect when using ssl')
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as ex:
            self._fatal_error(ex, 'Error calling eof_received()')

    # ------------------------------------------------------------------
    # Flow control: app writes

    cdef _control_app_writing(self):
        cdef Py_ssize_t size = self._get_write_buffer_size()
        if size >= self._outgoing_high_water and not self._app_writing_paused:
            self._app_writing_paused = True
            _call_write_flow_control(self._loop, self._app_protocol, True,
                                     self._app_transport, self)
        elif size <= self._outgoing_low_water and self._app_writing_paused:
            self._app_writing_paused = False
            _call_write_flow_control(self._loop, self._app_protocol, False,
                                     self._app_transport, self)

    cdef Py_ssize_t _get_write_buffer_size(self) except -1:
        return self._outgoing.pending + self._write_buffer_size

    cdef _set_write_buffer_limits(self, object high, object low):
        high, low = _flowcontrol_defaults(
            high, low, aio_constants.FLOW_CONTROL_HIGH_WATER_SSL_WRITE)
        self._outgoing_high_water = high
        self._outgoing_low_water = low

    # ------------------------------------------------------------------
    # Flow control: app reads

    cdef _pause_reading(self):
        self._app_reading_paused = True

    cdef _resume_reading(self):
        if self._app_reading_paused:
            self._app_reading_paused = False
            self._loop._call_soon(self._resume_cb, None, None)

    def _resume_cb(self):
        if self._state == SSL_WRAPPED:
            self._do_read()
        elif self._state == SSL_FLUSHING:
            self._do_flush()
        elif self._state == SSL_SHUTDOWN:
            self._do_shutdown()

    # ------------------------------------------------------------------
    # Flow control: reads from the raw transport

    cdef _control_ssl_reading(self):
        cdef Py_ssize_t size = self._incoming.pending
        if size >= self._incoming_high_water and not self._ssl_reading_paused:
            self._ssl_reading_paused = True
            self._transport.pause_reading()
        elif size <= self._incoming_low_water and self._ssl_reading_paused:
            self._ssl_reading_paused = False
            self._transport.resume_reading()

    cdef _set_read_buffer_limits(self, object high, object low):
        high, low = _flowcontrol_defaults(
            high, low, aio_constants.FLOW_CONTROL_HIGH_WATER_SSL_READ)
        self._incoming_high_water = high
        self._incoming_low_water = low

    # ------------------------------------------------------------------
    # Flow control: writes to the raw transport

    def pause_writing(self):
        """The raw transport's buffer went over its high-water mark."""
        assert not self._ssl_writing_paused
        self._ssl_writing_paused = True

    def resume_writing(self):
        """The raw transport's buffer drained below its low-water mark."""
        assert self._ssl_writing_paused
        self._ssl_writing_paused = False
        self._process_outgoing()

    cdef _fatal_error(self, object exc, str message):
        if self._transport is not None:
            self._transport._force_close(exc)
        if isinstance(exc, OSError):
            if self._loop._debug:
                logger.debug("%r: %s", self, message, exc_info=True)
        elif not isinstance(exc, aio_exceptions.CancelledError):
            self._loop.call_exception_handler({
                'message': message,
                'exception': exc,
                'transport': self._transport,
                'protocol': self,
            })

cdef enum SSLState:
    SSL_UNWRAPPED
    SSL_DO_HANDSHAKE
    SSL_WRAPPED
    SSL_FLUSHING
    SSL_SHUTDOWN


cdef enum AppState:
    APP_INIT
    APP_CON_MADE
    APP_EOF
    APP_CON_LOST


cdef class _SSLProtocolTransport:
    cdef:
        readonly SSLProtocol _ssl_protocol
        bint _closed
        object __weakref__

    cdef SSLProtocol _proto(self)


cdef class SSLProtocol:
    # The MemoryBIO state machine of asyncio.sslproto.SSLProtocol (3.11+),
    # compiled; a StreamTransport feeds it through _feed(), any other
    # transport through data_received() or get_buffer()/buffer_updated().
    cdef:
        RingLoop _loop
        readonly object _transport         # below: StreamTransport or an outer TLS app transport
        object _transport_write            # its bound write()
        object _app_protocol
        bint _app_is_buffer
        object _app_get_buffer
        object _app_buffer_updated
        _SSLProtocolTransport _app_transport
        bint _app_transport_created
        object _waiter

        dict _extra
        object _incoming                   # ssl.MemoryBIO
        object _outgoing
        object _sslobj                     # ssl.SSLObject (what ssl_object gives)
        object _ssl_read                   # read()/write() of its C object
        object _ssl_write
        object _ssl_pending
        object _incoming_write
        object _outgoing_read

        object _write_backlog              # deque of bytes waiting for the handshake
        Py_ssize_t _write_buffer_size
        SSLState _state
        AppState _app_state
        int _conn_lost                     # asyncio's counter for its "SSL connection is
                                           # closed" warning (the loss, and each write
                                           # dropped once shutdown began); not a state
        bint _eof_received

        object _ssl_handshake_timeout
        object _ssl_shutdown_timeout
        object _handshake_start_time
        object _handshake_timeout_handle
        object _shutdown_timeout_handle

        bint _ssl_writing_paused
        bint _app_reading_paused
        bint _ssl_reading_paused
        bint _app_writing_paused
        Py_ssize_t _incoming_high_water
        Py_ssize_t _incoming_low_water
        Py_ssize_t _outgoing_high_water
        Py_ssize_t _outgoing_low_water

        object _rbuf_view                  # get_buffer()'s buffer, made on first use
        object __weakref__

    cdef _set_app_protocol(self, object app_protocol)
    cdef _wakeup_waiter(self, object exc)
    cdef _SSLProtocolTransport _get_app_transport(self)
    cdef object _read_view(self)
    cdef _feed(self, const char *data, Py_ssize_t n)
    cdef _on_incoming(self)
    cdef _get_extra_info(self, object name, object default)
    cdef _set_state(self, SSLState new_state)
    cdef _start_handshake(self)
    cdef _do_handshake(self)
    cdef _on_handshake_complete(self, object handshake_exc)
    cdef _start_shutdown(self)
    cdef _do_flush(self)
    cdef _do_shutdown(self)
    cdef _on_shutdown_complete(self, object shutdown_exc)
    cdef _abort(self, object exc)
    cdef _write_appdata(self, object list_of_data)
    cdef _do_write(self)
    cdef _process_outgoing(self)
    cdef _do_read(self)
    cdef _do_read_buffered(self)
    cdef _do_read_copied(self)
    cdef _call_eof_received(self)
    cdef _control_app_writing(self)
    cdef Py_ssize_t _get_write_buffer_size(self) except -1
    cdef _set_write_buffer_limits(self, object high, object low)
    cdef _pause_reading(self)
    cdef _resume_reading(self)
    cdef _control_ssl_reading(self)
    cdef _set_read_buffer_limits(self, object high, object low)
    cdef _fatal_error(self, object exc, str message)

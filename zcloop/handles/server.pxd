cdef class _AcceptOp(UringOp):
    # Multishot ACCEPT on one listening socket, re-armed when it ends.
    cdef:
        RingLoop loop
        object sock
        int fd
        object protocol_factory
        object ssl
        object server
        object ssl_handshake_timeout
        object ssl_shutdown_timeout
        object context          # of the call that started serving
        bint stopped
        object retry_handle

    cdef arm(self)
    cdef stop(self)

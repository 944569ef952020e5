# Stream-socket API of zcloop.Loop: connections, servers, TLS, sock_*.
# Semantics and error messages follow asyncio's base_events / unix_events.

cdef object _make_stream_transport(RingLoop loop, object sock, object protocol,
                                   object waiter, object extra, object server):
    cdef StreamTransport transport = StreamTransport.__new__(StreamTransport)
    transport._init_stream(loop, sock, protocol, waiter, extra, server)
    return transport


async def _transport_ready(transport, waiter):
    # A new transport's waiter settles after connection_made(); if it fails
    # or the awaiting task is cancelled, the transport is closed (asyncio's
    # create_connection, create_datagram_endpoint, connect_*_pipe).
    try:
        await waiter
    except:
        transport.close()
        raise


def _make_ssl_transport(RingLoop loop, rawsock, protocol, sslcontext, waiter=None, *,
                        server_side=False, server_hostname=None, extra=None, server=None,
                        ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
    # TLS is zcloop's compiled SSLProtocol (asyncio's MemoryBIO state
    # machine) over a stream transport that feeds it ciphertext directly.
    cdef SSLProtocol ssl_protocol = SSLProtocol(
        loop, protocol, sslcontext, waiter, server_side, server_hostname,
        ssl_handshake_timeout=ssl_handshake_timeout,
        ssl_shutdown_timeout=ssl_shutdown_timeout)
    _make_stream_transport(loop, rawsock, ssl_protocol, None, extra, server)
    return ssl_protocol._app_transport


# asyncio's "error while attempting to bind on address ...: <detail>"
# (create_connection's local_addr, create_server): the detail is the
# OSError's strerror up to 3.12, its whole str() ("[errno 98] address
# already in use") from 3.13 on; lower-cased either way.
cdef bint _BIND_DETAIL_STR = sys.version_info >= (3, 13)


cdef str _bind_error_detail(exc):
    return (str(exc) if _BIND_DETAIL_STR else exc.strerror).lower()


def _interleave_addrinfos(addrinfos, first_address_family_count=1):
    """Interleave list of addrinfo tuples by family (RFC 8305)."""
    by_family = collections.OrderedDict()
    for addr in addrinfos:
        family = addr[0]
        if family not in by_family:
            by_family[family] = []
        by_family[family].append(addr)
    addrinfos_lists = list(by_family.values())
    reordered = []
    if first_address_family_count > 1:
        reordered.extend(addrinfos_lists[0][:first_address_family_count - 1])
        del addrinfos_lists[0][:first_address_family_count - 1]
    reordered.extend(
        a for a in itertools.chain.from_iterable(itertools.zip_longest(*addrinfos_lists))
        if a is not None)
    return reordered


def _accept_nonblocking(sock):
    # sock_accept()'s call: asyncio hands out the connection non-blocking.
    conn, address = sock.accept()
    conn.setblocking(False)
    return conn, address


cdef class _SendAll:
    # sock_sendall()'s call: send() what is left; WOULD_BLOCK until all is
    # sent (sock_retry then waits for POLLOUT and calls again).
    cdef object sock
    cdef object data
    cdef object view        # once a send fell short: the rest counts from here
    cdef Py_ssize_t sent

    def __cinit__(self, sock, data):
        self.sock = sock
        self.data = data

    def __call__(self):
        if self.view is None:
            # As asyncio: data itself first (its TypeError, if any).
            self.sent = self.sock.send(self.data)
            view = memoryview(self.data)
            if self.sent == view.nbytes:
                return None
            self.view = view.cast('B') if view.itemsize != 1 else view  # send() counts bytes
            return WOULD_BLOCK
        self.sent += self.sock.send(self.view[self.sent:])
        return None if self.sent == len(self.view) else WOULD_BLOCK


class _StreamsAPI:

    async def _ensure_resolved(self, address, *, family=0, type=socket.SOCK_STREAM,
                               proto=0, flags=0):
        # asyncio's BaseEventLoop._ensure_resolved: skip the resolver for
        # numeric hosts.
        host, port = address[:2]
        info = _ipaddr_info(host, port, family, type, proto, *address[2:])
        if info is not None:
            return [info]
        return await self.getaddrinfo(host, port, family=family, type=type,
                                      proto=proto, flags=flags)

    async def sock_connect(self, sock, address):
        """Connect sock to a remote address (IORING_OP_CONNECT)."""
        sock_check(<RingLoop>self, sock)
        if sock.family != socket.AF_UNIX:
            resolved = await self._ensure_resolved(
                address, family=sock.family, type=sock.type, proto=sock.proto)
            _, _, _, _, address = resolved[0]
        try:
            return await ring_connect(<RingLoop>self, sock, address)
        except BlockingIOError as exc:
            if exc.errno != EALREADY:
                raise
            # A connect() is already under way (one whose sock_connect() was
            # cancelled): wait for its outcome, as asyncio does.
        await sock_retry(<RingLoop>self, sock, POLLOUT, _sock_connected, (sock, address))

    async def sock_recv(self, sock, n):
        """Receive up to n bytes from sock.

        The wait is a one-shot POLL_ADD on the ring and the read a
        non-blocking recv(): a cancelled sock_recv() consumes no data, as
        with asyncio.  (A RECV op racing a cancellation could.)
        """
        res = sock_try(<RingLoop>self, sock, sock.recv, (n,))
        if res is WOULD_BLOCK:
            res = await sock_retry(<RingLoop>self, sock, POLLIN, sock.recv, (n,))
        return res

    async def sock_recv_into(self, sock, buf):
        """Receive into buf; return the number of bytes received."""
        res = sock_try(<RingLoop>self, sock, sock.recv_into, (buf,))
        if res is WOULD_BLOCK:
            res = await sock_retry(<RingLoop>self, sock, POLLIN, sock.recv_into, (buf,))
        return res

    async def sock_accept(self, sock):
        """Accept a connection: return (conn, address), conn non-blocking."""
        res = sock_try(<RingLoop>self, sock, _accept_nonblocking, (sock,))
        if res is WOULD_BLOCK:
            res = await sock_retry(<RingLoop>self, sock, POLLIN, _accept_nonblocking, (sock,))
        return res

    async def sock_sendall(self, sock, data):
        """Send all of data with non-blocking send() calls, waiting for
        POLLOUT on the ring while the socket buffer is full.

        Not a ring SEND: a request in flight when the task is cancelled could
        go on sending.  As with asyncio, a cancelled sock_sendall() has sent
        a prefix of data and sends nothing more.
        """
        cdef _SendAll send_all = _SendAll(sock, data)
        if sock_try(<RingLoop>self, sock, send_all, ()) is WOULD_BLOCK:
            await sock_retry(<RingLoop>self, sock, POLLOUT, send_all, ())

    async def _connect_sock(self, exceptions, addr_info, local_addr_infos=None):
        """Create, bind and connect one socket."""
        my_exceptions = []
        exceptions.append(my_exceptions)
        family, type_, proto, _, address = addr_info
        sock = None
        try:
            sock = socket.socket(family=family, type=type_, proto=proto)
            sock.setblocking(False)
            if local_addr_infos is not None:
                for lfamily, _, _, _, laddr in local_addr_infos:
                    if lfamily != family:
                        continue
                    try:
                        sock.bind(laddr)
                        break
                    except OSError as exc:
                        msg = (f'error while attempting to bind on address {laddr!r}: '
                               f'{_bind_error_detail(exc)}')
                        my_exceptions.append(OSError(exc.errno, msg))
                else:
                    if my_exceptions:
                        raise my_exceptions.pop()
                    raise OSError(f"no matching local address with {family=} found")
            await self.sock_connect(sock, address)
            return sock
        except OSError as exc:
            my_exceptions.append(exc)
            if sock is not None:
                sock.close()
            raise
        except:
            if sock is not None:
                sock.close()
            raise
        finally:
            exceptions = my_exceptions = None

    async def create_connection(self, protocol_factory, host=None, port=None, *,
                                ssl=None, family=0, proto=0, flags=0, sock=None,
                                local_addr=None, server_hostname=None,
                                ssl_handshake_timeout=None, ssl_shutdown_timeout=None,
                                happy_eyeballs_delay=None, interleave=None,
                                all_errors=False):
        """Connect to a TCP server; return (transport, protocol)."""
        if server_hostname is not None and not ssl:
            raise ValueError('server_hostname is only meaningful with ssl')
        if server_hostname is None and ssl:
            if not host:
                raise ValueError('You must set server_hostname when using ssl without a host')
            server_hostname = host
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError('ssl_handshake_timeout is only meaningful with ssl')
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError('ssl_shutdown_timeout is only meaningful with ssl')
        if sock is not None:
            _check_ssl_socket(sock)
        if happy_eyeballs_delay is not None and interleave is None:
            interleave = 1
        if host is not None or port is not None:
            if sock is not None:
                raise ValueError('host/port and sock can not be specified at the same time')
            infos = await self._ensure_resolved((host, port), family=family,
                                                type=socket.SOCK_STREAM, proto=proto,
                                                flags=flags)
            if not infos:
                raise OSError('getaddrinfo() returned empty list')
            if local_addr is not None:
                laddr_infos = await self._ensure_resolved(local_addr, family=family,
                                                          type=socket.SOCK_STREAM,
                                                          proto=proto, flags=flags)
                if not laddr_infos:
                    raise OSError('getaddrinfo() returned empty list')
            else:
                laddr_infos = None
            if interleave:
                infos = _interleave_addrinfos(infos, interleave)
            exceptions = []
            if happy_eyeballs_delay is None:
                for addrinfo in infos:
                    try:
                        sock = await self._connect_sock(exceptions, addrinfo, laddr_infos)
                        break
                    except OSError:
                        continue
            else:
                sock, _, _ = await aio_staggered.staggered_race(
                    (functools.partial(self._connect_sock, exceptions, addrinfo, laddr_infos)
                     for addrinfo in infos),
                    happy_eyeballs_delay, loop=self)
            if sock is None:
                exceptions = [exc for sub in exceptions for exc in sub]
                try:
                    if not exceptions:
                        # Every attempt failed without an OSError to report
                        # (only with happy eyeballs: its race keeps other
                        # exceptions to itself).  asyncio raised IndexError
                        # here (exceptions[0]) until gh-135836, TimeoutError
                        # since.  Also with all_errors: an ExceptionGroup
                        # cannot be empty.
                        raise TimeoutError('create_connection failed')
                    if all_errors:
                        raise ExceptionGroup("create_connection failed", exceptions)
                    if len(exceptions) == 1:
                        raise exceptions[0]
                    model = str(exceptions[0])
                    if all(str(exc) == model for exc in exceptions):
                        raise exceptions[0]
                    raise OSError('Multiple exceptions: {}'.format(
                        ', '.join(str(exc) for exc in exceptions)))
                finally:
                    exceptions = None
        else:
            if sock is None:
                raise ValueError('host and port was not specified and no sock specified')
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f'A Stream Socket was expected, got {sock!r}')
        transport, protocol = await self._create_connection_transport(
            sock, protocol_factory, ssl, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        if (<RingLoop>self)._debug:
            sock = transport.get_extra_info('socket')
            logger.debug("%r connected to %s:%r: (%r, %r)", sock, host, port,
                         transport, protocol)
        return transport, protocol

    async def _create_connection_transport(self, sock, protocol_factory, ssl,
                                           server_hostname, server_side=False,
                                           ssl_handshake_timeout=None,
                                           ssl_shutdown_timeout=None):
        sock.setblocking(False)
        protocol = protocol_factory()
        waiter = self.create_future()
        if ssl:
            sslcontext = None if isinstance(ssl, bool) else ssl
            if sslcontext is None:
                sslcontext = ssl_mod.create_default_context() if not server_side else None
            transport = _make_ssl_transport(
                self, sock, protocol, sslcontext, waiter, server_side=server_side,
                server_hostname=server_hostname,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout)
        else:
            transport = _make_stream_transport(self, sock, protocol, waiter, None, None)
        await _transport_ready(transport, waiter)
        return transport, protocol

    async def create_server(self, protocol_factory, host=None, port=None, *,
                            family=socket.AF_UNSPEC, flags=socket.AI_PASSIVE, sock=None,
                            backlog=100, ssl=None, reuse_address=None, reuse_port=None,
                            keep_alive=None, ssl_handshake_timeout=None,
                            ssl_shutdown_timeout=None, start_serving=True):
        """Create a TCP server (multishot ACCEPT on the ring)."""
        if isinstance(ssl, bool):
            raise TypeError('ssl argument must be an SSLContext or None')
        if ssl_handshake_timeout is not None and ssl is None:
            raise ValueError('ssl_handshake_timeout is only meaningful with ssl')
        if ssl_shutdown_timeout is not None and ssl is None:
            raise ValueError('ssl_shutdown_timeout is only meaningful with ssl')
        if sock is not None:
            _check_ssl_socket(sock)
        if host is not None or port is not None:
            if sock is not None:
                raise ValueError('host/port and sock can not be specified at the same time')
            if reuse_address is None:
                reuse_address = True
            sockets = []
            if host == '':
                hosts = [None]
            elif isinstance(host, str) or not isinstance(host, collections.abc.Iterable):
                hosts = [host]
            else:
                hosts = host
            fs = [self._create_server_getaddrinfo(h, port, family, flags) for h in hosts]
            infos = await aio_tasks.gather(*fs)
            infos = set(itertools.chain.from_iterable(infos))
            completed = False
            try:
                for res in infos:
                    af, socktype, proto, canonname, sa = res
                    try:
                        sock = socket.socket(af, socktype, proto)
                    except socket.error:
                        if (<RingLoop>self)._debug:
                            logger.warning('create_server() failed to create '
                                           'socket.socket(%r, %r, %r)',
                                           af, socktype, proto, exc_info=True)
                        continue
                    sockets.append(sock)
                    if reuse_address:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, True)
                    if reuse_port:
                        _set_reuseport(sock)
                    if keep_alive:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, True)
                    if af == socket.AF_INET6:
                        # One socket per family, as asyncio (no dual stack).
                        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, True)
                    try:
                        sock.bind(sa)
                    except OSError as err:
                        msg = ('error while attempting to bind on address %r: %s'
                               % (sa, _bind_error_detail(err)))
                        if err.errno == errno_mod.EADDRNOTAVAIL:
                            sockets.pop()
                            sock.close()
                            if (<RingLoop>self)._debug:
                                logger.warning(msg)
                            continue
                        raise OSError(err.errno, msg) from None
                if not sockets:
                    raise OSError('could not bind on any address out of %r'
                                  % ([info[4] for info in infos],))
                completed = True
            finally:
                if not completed:
                    for sock in sockets:
                        sock.close()
        else:
            if sock is None:
                raise ValueError('Neither host/port nor sock were specified')
            if sock.type != socket.SOCK_STREAM:
                raise ValueError(f'A Stream Socket was expected, got {sock!r}')
            sockets = [sock]
        for sock in sockets:
            sock.setblocking(False)
        server = Server(self, sockets, protocol_factory, ssl, backlog,
                        ssl_handshake_timeout, ssl_shutdown_timeout)
        if start_serving:
            server._start_serving()
            await aio_tasks.sleep(0)
        if (<RingLoop>self)._debug:
            logger.info("%r is serving", server)
        return server

    async def _create_server_getaddrinfo(self, host, port, family, flags):
        infos = await self._ensure_resolved((host, port), family=family,
                                            type=socket.SOCK_STREAM, flags=flags)
        if not infos:
            raise OSError(f'getaddrinfo({host!r}) returned empty list')
        return infos

    async def connect_accepted_socket(self, protocol_factory, sock, *, ssl=None,
                                      ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
        if sock.type != socket.SOCK_STREAM:
            raise ValueError(f'A Stream Socket was expected, got {sock!r}')
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError('ssl_handshake_timeout is only meaningful with ssl')
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError('ssl_shutdown_timeout is only meaningful with ssl')
        _check_ssl_socket(sock)
        transport, protocol = await self._create_connection_transport(
            sock, protocol_factory, ssl, '', server_side=True,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        if (<RingLoop>self)._debug:
            sock = transport.get_extra_info('socket')
            logger.debug("%r handled: (%r, %r)", sock, transport, protocol)
        return transport, protocol

    async def create_unix_connection(self, protocol_factory, path=None, *, ssl=None,
                                     sock=None, server_hostname=None,
                                     ssl_handshake_timeout=None, ssl_shutdown_timeout=None):
        assert server_hostname is None or isinstance(server_hostname, str)
        if ssl:
            if server_hostname is None:
                raise ValueError('you have to pass server_hostname when using ssl')
        else:
            if server_hostname is not None:
                raise ValueError('server_hostname is only meaningful with ssl')
            if ssl_handshake_timeout is not None:
                raise ValueError('ssl_handshake_timeout is only meaningful with ssl')
            if ssl_shutdown_timeout is not None:
                raise ValueError('ssl_shutdown_timeout is only meaningful with ssl')
        if path is not None:
            if sock is not None:
                raise ValueError('path and sock can not be specified at the same time')
            path = os.fspath(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)
            try:
                sock.setblocking(False)
                await self.sock_connect(sock, path)
            except:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError('no path and sock were specified')
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError(f'A UNIX Domain Stream Socket was expected, got {sock!r}')
            sock.setblocking(False)
        return await self._create_connection_transport(
            sock, protocol_factory, ssl, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)

    async def create_unix_server(self, protocol_factory, path=None, *, sock=None,
                                 backlog=100, ssl=None, ssl_handshake_timeout=None,
                                 ssl_shutdown_timeout=None, start_serving=True,
                                 cleanup_socket=_CLEANUP_SOCKET_DEFAULT):
        if isinstance(ssl, bool):
            raise TypeError('ssl argument must be an SSLContext or None')
        if ssl_handshake_timeout is not None and not ssl:
            raise ValueError('ssl_handshake_timeout is only meaningful with ssl')
        if ssl_shutdown_timeout is not None and not ssl:
            raise ValueError('ssl_shutdown_timeout is only meaningful with ssl')
        if path is not None:
            if sock is not None:
                raise ValueError('path and sock can not be specified at the same time')
            path = os.fspath(path)
            # Remove a stale socket file (not for abstract addresses).  On
            # the ring, before the socket exists: nothing to close if this
            # task is cancelled meanwhile.
            if path[0] not in (0, '\x00'):
                try:
                    if stat.S_ISSOCK((await ring_stat(self, path))[0]):
                        await ring_unlink(self, path)
                except FileNotFoundError:
                    pass
                except OSError as err:
                    logger.error('Unable to check or remove stale UNIX socket %r: %r',
                                 path, err)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.bind(path)
            except OSError as exc:
                sock.close()
                if exc.errno == errno_mod.EADDRINUSE:
                    raise OSError(errno_mod.EADDRINUSE,
                                  f'Address {path!r} is already in use') from None
                raise
            except:
                sock.close()
                raise
        else:
            if sock is None:
                raise ValueError('path was not specified, and no sock specified')
            if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
                raise ValueError(f'A UNIX Domain Stream Socket was expected, got {sock!r}')
        if cleanup_socket:
            sockname = sock.getsockname()
            if sockname and sockname[0] not in (0, '\x00'):
                try:
                    (<RingLoop>self)._unix_server_sockets[sock] = \
                        (await ring_stat(self, sockname))[1]
                except (FileNotFoundError, TypeError):
                    pass
                except BaseException:
                    if path is not None:
                        sock.close()        # ours: cancelled during the stat
                    raise
        sock.setblocking(False)
        server = Server(self, [sock], protocol_factory, ssl, backlog,
                        ssl_handshake_timeout, ssl_shutdown_timeout)
        if start_serving:
            server._start_serving()
            await aio_tasks.sleep(0)
        return server

    async def start_tls(self, transport, protocol, sslcontext, *, server_side=False,
                        server_hostname=None, ssl_handshake_timeout=None,
                        ssl_shutdown_timeout=None):
        """Upgrade transport to TLS; return the new transport."""
        if ssl_mod is None:
            raise RuntimeError('Python ssl module is not available')
        if not isinstance(sslcontext, ssl_mod.SSLContext):
            raise TypeError(
                f'sslcontext is expected to be an instance of ssl.SSLContext, '
                f'got {sslcontext!r}')
        # As asyncio: any transport that says so, a TLS one included (TLS
        # inside TLS: an HTTPS proxy tunnelling to an HTTPS origin).
        if not getattr(transport, '_start_tls_compatible', False):
            raise TypeError(f'transport {transport!r} is not supported by start_tls()')
        waiter = self.create_future()
        cdef SSLProtocol ssl_protocol = SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout,
            call_connection_made=False)
        # Pause early so that ssl_protocol's data_received doesn't run before
        # its connection_made.
        transport.pause_reading()
        transport.set_protocol(ssl_protocol)
        conmade_cb = self.call_soon(ssl_protocol.connection_made, transport)
        resume_cb = self.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            conmade_cb.cancel()
            resume_cb.cancel()
            raise
        return ssl_protocol._app_transport

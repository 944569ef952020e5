# Loop methods for datagrams: create_datagram_endpoint() and the
# sock_sendto()/sock_recvfrom()/sock_recvfrom_into() coroutines, with
# asyncio's semantics and error messages (3.11; 3.13's where they differ).  A mixin of zcloop.Loop:
# ``self`` is always a RingLoop.
_DG_PY313 = sys.version_info >= (3, 13)


class _DatagramAPI:

    async def create_datagram_endpoint(self, protocol_factory,
                                       local_addr=None, remote_addr=None, *,
                                       family=0, proto=0, flags=0,
                                       reuse_port=None,
                                       allow_broadcast=None, sock=None):
        """Create datagram connection."""
        cdef RingLoop loop = <RingLoop>self
        if sock is not None:
            if _DG_PY313:
                # 3.13 accepts any non-stream socket (raw, ...).
                if sock.type == socket.SOCK_STREAM:
                    raise ValueError(
                        f'A datagram socket was expected, got {sock!r}')
            elif sock.type != socket.SOCK_DGRAM:
                raise ValueError(
                    f'A UDP Socket was expected, got {sock!r}')
            if (local_addr or remote_addr or
                    family or proto or flags or
                    reuse_port or allow_broadcast):
                # show the problematic kwargs in exception msg
                opts = dict(local_addr=local_addr, remote_addr=remote_addr,
                            family=family, proto=proto, flags=flags,
                            reuse_port=reuse_port,
                            allow_broadcast=allow_broadcast)
                problems = ', '.join(f'{k}={v}' for k, v in opts.items() if v)
                raise ValueError(
                    f'socket modifier keyword arguments can not be used '
                    f'when sock is specified. ({problems})')
            sock.setblocking(False)
            r_addr = None
        else:
            if not (local_addr or remote_addr):
                if family == 0:
                    raise ValueError('unexpected address family')
                addr_pairs_info = (((family, proto), (None, None)),)
            elif hasattr(socket, 'AF_UNIX') and family == socket.AF_UNIX:
                for addr in (local_addr, remote_addr):
                    if addr is not None and not isinstance(addr, str):
                        raise TypeError('string is expected')

                if local_addr and local_addr[0] not in (0, '\x00'):
                    try:
                        if stat.S_ISSOCK(os.stat(local_addr).st_mode):
                            os.remove(local_addr)
                    except FileNotFoundError:
                        pass
                    except OSError as err:
                        # Directory may have permissions only to create socket.
                        logger.error('Unable to check or remove stale UNIX '
                                     'socket %r: %r',
                                     local_addr, err)

                addr_pairs_info = (((family, proto),
                                    (local_addr, remote_addr)), )
            else:
                # join address by (family, protocol)
                addr_infos = {}  # Using order preserving dict
                for idx, addr in ((0, local_addr), (1, remote_addr)):
                    if addr is not None:
                        if not (isinstance(addr, tuple) and len(addr) == 2):
                            raise TypeError('2-tuple is expected')

                        infos = await self._ensure_resolved(
                            addr, family=family, type=socket.SOCK_DGRAM,
                            proto=proto, flags=flags)
                        if not infos:
                            raise OSError('getaddrinfo() returned empty list')

                        for fam, _, pro, _, address in infos:
                            key = (fam, pro)
                            if key not in addr_infos:
                                addr_infos[key] = [None, None]
                            addr_infos[key][idx] = address

                # each addr has to have info for each (family, proto) pair
                addr_pairs_info = [
                    (key, addr_pair) for key, addr_pair in addr_infos.items()
                    if not ((local_addr and addr_pair[0] is None) or
                            (remote_addr and addr_pair[1] is None))]

                if not addr_pairs_info:
                    raise ValueError('can not get address information')

            exceptions = []

            for ((family, proto),
                 (local_address, remote_address)) in addr_pairs_info:
                sock = None
                r_addr = None
                try:
                    sock = socket.socket(
                        family=family, type=socket.SOCK_DGRAM, proto=proto)
                    if reuse_port:
                        _set_reuseport(sock)
                    if allow_broadcast:
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
                    sock.setblocking(False)

                    if local_addr:
                        sock.bind(local_address)
                    if remote_addr:
                        if not allow_broadcast:
                            await self._dgram_connect(sock, remote_address)
                        r_addr = remote_address
                except OSError as exc:
                    if sock is not None:
                        sock.close()
                    exceptions.append(exc)
                except:
                    if sock is not None:
                        sock.close()
                    raise
                else:
                    break
            else:
                raise exceptions[0]

        protocol = protocol_factory()
        waiter = self.create_future()
        transport = self._make_datagram_transport(
            sock, protocol, r_addr, waiter)
        if loop._debug:
            if local_addr:
                logger.info("Datagram endpoint local_addr=%r remote_addr=%r "
                            "created: (%r, %r)",
                            local_addr, remote_addr, transport, protocol)
            else:
                logger.debug("Datagram endpoint remote_addr=%r created: "
                             "(%r, %r)",
                             remote_addr, transport, protocol)

        await _transport_ready(transport, waiter)

        return transport, protocol

    def _make_datagram_transport(self, sock, protocol,
                                 address=None, waiter=None, extra=None):
        return _new_datagram_transport(<RingLoop>self, sock, protocol, address, waiter, extra)

    async def _dgram_connect(self, sock, address):
        # asyncio's sock_connect() without the ring: connect() of a datagram
        # socket completes at once (it only records the peer); wait only if
        # the kernel says otherwise.
        if sock_try(<RingLoop>self, sock, sock.connect, (address,)) is WOULD_BLOCK:
            await sock_retry(<RingLoop>self, sock, POLLOUT, _sock_connected, (sock, address))

    # -- datagram socket coroutines (handles/futureops.pyx: sock_try,
    # sock_retry).  Never a SENDMSG or RECVMSG on the ring: the kernel may
    # take or fill a datagram before a cancel reaches it, so a cancelled call
    # could still send or consume one; a cancelled poll does neither.

    async def sock_sendto(self, sock, data, address):
        """Send a datagram from sock to address.

        Return the number of bytes sent.
        """
        res = sock_try(<RingLoop>self, sock, sock.sendto, (data, address))
        if res is WOULD_BLOCK:
            res = await sock_retry(<RingLoop>self, sock, POLLOUT, sock.sendto, (data, address))
        return res

    async def sock_recvfrom(self, sock, bufsize):
        """Receive a datagram from a datagram socket.

        The return value is a tuple of (bytes, address) representing the
        datagram received and the address it came from.
        The maximum amount of data to be received at once is specified by
        nbytes.
        """
        res = sock_try(<RingLoop>self, sock, sock.recvfrom, (bufsize,))
        if res is WOULD_BLOCK:
            res = await sock_retry(<RingLoop>self, sock, POLLIN, sock.recvfrom, (bufsize,))
        return res

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        """Receive data from the socket.

        The received data is written into *buf* (a writable buffer).
        The return value is a tuple of (number of bytes written, address).
        """
        if not nbytes:
            nbytes = len(buf)
        res = sock_try(<RingLoop>self, sock, sock.recvfrom_into, (buf, nbytes))
        if res is WOULD_BLOCK:
            res = await sock_retry(<RingLoop>self, sock, POLLIN, sock.recvfrom_into, (buf, nbytes))
        return res

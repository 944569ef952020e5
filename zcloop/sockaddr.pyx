# Python socket addresses <-> struct sockaddr, for ring operations that take
# one (CONNECT, SENDMSG to an address, RECVMSG's source address).  Hosts must
# already be numeric: callers resolve names first, as asyncio does.

cdef int sockaddr_from_py(int family, object address, sockaddr_storage *ss,
                          socklen_t *addrlen) except -1:
    cdef sockaddr_in *sin
    cdef sockaddr_in6 *sin6
    cdef sockaddr_un *sun
    cdef bytes packed
    cdef bytes path
    cdef Py_ssize_t n
    memset(ss, 0, sizeof(sockaddr_storage))
    if family == AF_INET:
        if not isinstance(address, tuple) or len(address) != 2:
            raise TypeError(f'AF_INET address must be tuple, not {type(address).__name__}')
        host, port = address
        packed = socket.inet_pton(socket.AF_INET, _host_str(host))
        sin = <sockaddr_in*>ss
        sin.sin_family = AF_INET
        sin.sin_port = htons(_port_int(port))
        memcpy(&sin.sin_addr, <char*>packed, 4)
        addrlen[0] = sizeof(sockaddr_in)
    elif family == AF_INET6:
        if not isinstance(address, tuple) or not 2 <= len(address) <= 4:
            raise TypeError(f'AF_INET6 address must be a tuple (host, port[, flowinfo[, scopeid]])')
        host = address[0]
        port = address[1]
        flowinfo = address[2] if len(address) > 2 else 0
        scope_id = address[3] if len(address) > 3 else 0
        host = _host_str(host)
        if '%' in host:
            # Zone index, e.g. fe80::1%lo: keep it as scope_id.
            host, zone = host.split('%', 1)
            if not scope_id:
                scope_id = int(zone) if zone.isdigit() else socket.if_nametoindex(zone)
        packed = socket.inet_pton(socket.AF_INET6, host)
        sin6 = <sockaddr_in6*>ss
        sin6.sin6_family = AF_INET6
        sin6.sin6_port = htons(_port_int(port))
        if not 0 <= flowinfo <= 0xfffff:
            raise OverflowError('flowinfo must be 0-1048575.')
        sin6.sin6_flowinfo = htonl(flowinfo)
        sin6.sin6_scope_id = scope_id
        memcpy(&sin6.sin6_addr, <char*>packed, 16)
        addrlen[0] = sizeof(sockaddr_in6)
    elif family == AF_UNIX:
        if isinstance(address, str):
            path = os.fsencode(address)
        elif isinstance(address, (bytes, bytearray, memoryview)):
            path = bytes(address)
        else:
            path = os.fsencode(address)
        n = len(path)
        if n >= <Py_ssize_t>sizeof(sun.sun_path):
            raise OSError(errno_mod.ENAMETOOLONG, 'AF_UNIX path too long')
        sun = <sockaddr_un*>ss
        sun.sun_family = AF_UNIX
        memcpy(sun.sun_path, <char*>path, n)
        # Abstract addresses (leading NUL) have no terminator in the length.
        addrlen[0] = <socklen_t>(sizeof(unsigned short) + n + (0 if n and path[0] == 0 else 1))
    else:
        raise ValueError(f'unsupported address family {family}')
    return 0


cdef object sockaddr_to_py(const sockaddr_storage *ss, socklen_t addrlen):
    cdef const sockaddr_in *sin
    cdef const sockaddr_in6 *sin6
    cdef const sockaddr_un *sun
    cdef Py_ssize_t n
    if addrlen == 0:
        return None
    if ss.ss_family == AF_INET:
        sin = <const sockaddr_in*>ss
        host = socket.inet_ntop(socket.AF_INET, (<char*>&sin.sin_addr)[:4])
        return (host, ntohs(sin.sin_port))
    if ss.ss_family == AF_INET6:
        sin6 = <const sockaddr_in6*>ss
        host = socket.inet_ntop(socket.AF_INET6, (<char*>&sin6.sin6_addr)[:16])
        return (host, ntohs(sin6.sin6_port), ntohl(sin6.sin6_flowinfo), sin6.sin6_scope_id)
    if ss.ss_family == AF_UNIX:
        sun = <const sockaddr_un*>ss
        n = <Py_ssize_t>addrlen - <Py_ssize_t>sizeof(unsigned short)
        if n <= 0:
            return ''
        if sun.sun_path[0] == 0:
            return sun.sun_path[:n]          # abstract: bytes, as socket does
        return os.fsdecode(sun.sun_path[:strnlen(sun.sun_path, n)])
    return None


cdef inline str _host_str(object host):
    if isinstance(host, bytes):
        return (<bytes>host).decode('idna')
    if not isinstance(host, str):
        raise TypeError(f'str, bytes or bytearray expected, not {type(host).__name__}')
    return host


cdef inline int _port_int(object port) except -1:
    if not isinstance(port, int):
        raise TypeError(f"'{type(port).__name__}' object cannot be interpreted as an integer")
    if not 0 <= port <= 65535:
        raise OverflowError('port must be 0-65535.')
    return port

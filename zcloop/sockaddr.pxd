cdef extern from "<string.h>":
    size_t strnlen(const char *s, size_t maxlen)

cdef extern from "<sys/socket.h>":
    ctypedef unsigned int socklen_t
    struct sockaddr_storage:
        unsigned short ss_family
    int AF_INET, AF_INET6, AF_UNIX

cdef extern from "<netinet/in.h>":
    struct in_addr:
        unsigned int s_addr
    struct in6_addr:
        unsigned char s6_addr[16]
    struct sockaddr_in:
        unsigned short sin_family
        unsigned short sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        unsigned short sin6_family
        unsigned short sin6_port
        unsigned int sin6_flowinfo
        in6_addr sin6_addr
        unsigned int sin6_scope_id
    unsigned short htons(unsigned short)
    unsigned short ntohs(unsigned short)
    unsigned int htonl(unsigned int)
    unsigned int ntohl(unsigned int)

cdef extern from "<sys/un.h>":
    struct sockaddr_un:
        unsigned short sun_family
        char sun_path[108]

cdef int sockaddr_from_py(int family, object address, sockaddr_storage *ss,
                          socklen_t *addrlen) except -1
cdef object sockaddr_to_py(const sockaddr_storage *ss, socklen_t addrlen)

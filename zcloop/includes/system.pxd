# POSIX declarations used by the core.
from libc.stdint cimport uint64_t

cdef extern from "<time.h>" nogil:
    ctypedef int clockid_t
    struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(clockid_t clk_id, timespec *tp)
    clockid_t CLOCK_MONOTONIC

cdef extern from "<sys/eventfd.h>" nogil:
    int eventfd(unsigned int initval, int flags)
    int EFD_CLOEXEC
    int EFD_NONBLOCK

cdef extern from "<unistd.h>" nogil:
    ssize_t write(int fd, const void *buf, size_t count)
    ssize_t read(int fd, void *buf, size_t count)
    int close(int fd)
    int getpid()

cdef extern from "<errno.h>" nogil:
    int errno
    int EINTR, EAGAIN, ETIME, ECANCELED, ENOBUFS, ENOENT, EALREADY, EINVAL, EPERM
    int ENOSYS, ENOMEM, EOPNOTSUPP, EPIPE, ECONNRESET, EBADF, EEXIST, EMSGSIZE, EBUSY
    int ECONNABORTED, ENOTCONN, ESHUTDOWN, ETIMEDOUT, ECONNREFUSED, EMFILE, ENFILE

cdef extern from "<poll.h>" nogil:
    int POLLIN, POLLOUT, POLLERR, POLLHUP, POLLPRI, POLLNVAL

cdef extern from "<sys/mman.h>" nogil:
    int munmap(void *addr, size_t length)
    void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)
    void *MAP_FAILED
    int PROT_READ, PROT_WRITE, MAP_PRIVATE, MAP_ANONYMOUS

cdef extern from "<sys/socket.h>" nogil:
    int MSG_WAITALL, MSG_NOSIGNAL, MSG_DONTWAIT, MSG_TRUNC
    ssize_t send(int sockfd, const void *buf, size_t len, int flags)
    int SOCK_NONBLOCK, SOCK_CLOEXEC

cdef extern from "<fcntl.h>" nogil:
    unsigned SPLICE_F_MOVE

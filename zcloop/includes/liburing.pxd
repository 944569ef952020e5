# Cython declarations of the parts of liburing (2.3+) that zcloop uses.
# Constants newer than liburing 2.3 come from compat.h.
from libc.stdint cimport uint8_t, uint16_t, uint32_t, int32_t, uint64_t, int64_t
from posix.types cimport off_t


# liburing.h provides struct __kernel_timespec: its configure-generated
# liburing/compat.h includes <linux/time_types.h> where the kernel headers have
# it and defines the struct itself where they do not (manylinux2014).
cdef extern from "compat.h":
    enum: REAP_BATCH        # most CQEs copied out per uring_reap()
    enum: OP_TABLE_SIZE     # opcodes the probe table covers

    struct __kernel_timespec:
        long long tv_sec
        long long tv_nsec


cdef extern from "<sys/socket.h>":
    struct sockaddr:
        pass
    ctypedef unsigned int socklen_t
    struct iovec:
        void *iov_base
        size_t iov_len
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags


cdef extern from "<sys/stat.h>":
    # glibc's (_GNU_SOURCE, which Python.h defines); IORING_OP_STATX fills it.
    struct statx:
        uint16_t stx_mode
        uint64_t stx_ino
    unsigned STATX_TYPE, STATX_INO


cdef extern from "<fcntl.h>":
    int AT_FDCWD


cdef extern from "compat.h" nogil:
    struct io_uring_sqe:
        uint8_t opcode
        uint8_t flags
        uint16_t ioprio
        int32_t fd
        uint64_t off
        uint64_t addr
        uint32_t len
        uint32_t msg_flags
        uint32_t poll32_events
        uint32_t accept_flags
        uint32_t cancel_flags
        uint64_t user_data
        uint16_t buf_group
        uint16_t buf_index
        uint32_t splice_fd_in
        uint32_t file_index

    struct io_uring_cqe:
        uint64_t user_data
        int32_t res
        uint32_t flags

    struct io_uring_sq:
        unsigned ring_entries
    struct io_uring_cq:
        unsigned ring_entries

    struct io_uring:
        io_uring_sq sq
        io_uring_cq cq
        unsigned flags
        int ring_fd
        unsigned features

    struct io_uring_params:
        uint32_t sq_entries
        uint32_t cq_entries
        uint32_t flags
        uint32_t sq_thread_cpu
        uint32_t sq_thread_idle
        uint32_t features
        uint32_t wq_fd

    struct io_uring_probe:
        uint8_t last_op
        uint8_t ops_len

    struct io_uring_buf_ring:
        pass

    ctypedef struct uring_cqe:
        uint64_t user_data
        int32_t res
        uint32_t flags

    # setup / teardown
    int io_uring_queue_init_params(unsigned entries, io_uring *ring, io_uring_params *p)
    void io_uring_queue_exit(io_uring *ring)
    int io_uring_register_ring_fd(io_uring *ring)
    int io_uring_register_buffers_sparse(io_uring *ring, unsigned nr)
    int io_uring_register_buffers_update_tag(io_uring *ring, unsigned off,
                                             const iovec *iovecs, const uint64_t *tags,
                                             unsigned nr)
    io_uring_probe *io_uring_get_probe_ring(io_uring *ring)
    void io_uring_free_probe(io_uring_probe *probe)
    int uring_opcode_supported(io_uring_probe *p, int op)

    # submission / completion
    io_uring_sqe *io_uring_get_sqe(io_uring *ring)
    int io_uring_submit(io_uring *ring)
    int io_uring_submit_and_get_events(io_uring *ring)
    int io_uring_submit_and_wait_timeout(io_uring *ring, io_uring_cqe **cqe_ptr,
                                         unsigned wait_nr, __kernel_timespec *ts,
                                         void *sigmask)
    unsigned io_uring_sq_ready(const io_uring *ring)
    unsigned io_uring_cq_ready(const io_uring *ring)
    unsigned uring_reap(io_uring *ring, uring_cqe *out, unsigned max)
    void io_uring_sqe_set_data64(io_uring_sqe *sqe, uint64_t data)
    void io_uring_sqe_set_flags(io_uring_sqe *sqe, unsigned flags)

    # prep helpers
    void io_uring_prep_nop(io_uring_sqe *sqe)
    void io_uring_prep_read(io_uring_sqe *sqe, int fd, void *buf, unsigned nbytes, uint64_t offset)
    void io_uring_prep_write(io_uring_sqe *sqe, int fd, const void *buf, unsigned nbytes, uint64_t offset)
    void io_uring_prep_writev(io_uring_sqe *sqe, int fd, const iovec *iovecs, unsigned nr_vecs, uint64_t offset)
    void io_uring_prep_poll_add(io_uring_sqe *sqe, int fd, unsigned poll_mask)
    void io_uring_prep_poll_multishot(io_uring_sqe *sqe, int fd, unsigned poll_mask)
    void io_uring_prep_poll_remove(io_uring_sqe *sqe, uint64_t user_data)
    void io_uring_prep_cancel64(io_uring_sqe *sqe, uint64_t user_data, int flags)
    void io_uring_prep_cancel_fd(io_uring_sqe *sqe, int fd, unsigned flags)
    void io_uring_prep_accept(io_uring_sqe *sqe, int fd, sockaddr *addr, socklen_t *addrlen, int flags)
    void io_uring_prep_multishot_accept(io_uring_sqe *sqe, int fd, sockaddr *addr, socklen_t *addrlen, int flags)
    void io_uring_prep_connect(io_uring_sqe *sqe, int fd, const sockaddr *addr, socklen_t addrlen)
    void io_uring_prep_statx(io_uring_sqe *sqe, int dfd, const char *path, int flags,
                             unsigned mask, statx *statxbuf)
    void io_uring_prep_unlinkat(io_uring_sqe *sqe, int dfd, const char *path, int flags)
    void io_uring_prep_send(io_uring_sqe *sqe, int sockfd, const void *buf, size_t len, int flags)
    void io_uring_prep_sendmsg(io_uring_sqe *sqe, int fd, const msghdr *msg, unsigned flags)
    void io_uring_prep_send_zc(io_uring_sqe *sqe, int sockfd, const void *buf, size_t len, int flags, unsigned zc_flags)
    void io_uring_prep_send_zc_fixed(io_uring_sqe *sqe, int sockfd, const void *buf, size_t len,
                                     int flags, unsigned zc_flags, unsigned buf_index)
    void io_uring_prep_sendmsg_zc(io_uring_sqe *sqe, int fd, const msghdr *msg, unsigned flags)
    void io_uring_prep_recv(io_uring_sqe *sqe, int sockfd, void *buf, size_t len, int flags)
    void io_uring_prep_recv_multishot(io_uring_sqe *sqe, int sockfd, void *buf, size_t len, int flags)
    void io_uring_prep_recvmsg(io_uring_sqe *sqe, int fd, msghdr *msg, unsigned flags)
    void io_uring_prep_shutdown(io_uring_sqe *sqe, int fd, int how)
    void io_uring_prep_splice(io_uring_sqe *sqe, int fd_in, int64_t off_in, int fd_out,
                              int64_t off_out, unsigned nbytes, unsigned splice_flags)

    # provided buffer rings (helpers in compat.h)
    io_uring_buf_ring *buf_ring_register(io_uring *ring, unsigned entries, int bgid,
                                            unsigned short flags, size_t *map_len, int *err)
    void buf_ring_push(io_uring_buf_ring *br, void *addr, unsigned len, unsigned bid,
                          unsigned entries, int offset)
    void buf_ring_commit(io_uring_buf_ring *br, unsigned count)
    int io_uring_unregister_buf_ring(io_uring *ring, int bgid)

    # setup flags
    unsigned IORING_SETUP_CQSIZE
    unsigned IORING_SETUP_SUBMIT_ALL
    unsigned IORING_SETUP_COOP_TASKRUN
    unsigned IORING_SETUP_TASKRUN_FLAG
    unsigned IORING_SETUP_SINGLE_ISSUER
    unsigned IORING_SETUP_DEFER_TASKRUN
    unsigned IORING_FEAT_EXT_ARG
    unsigned IORING_FEAT_NODROP
    unsigned IORING_FEAT_FAST_POLL

    # sqe flags
    unsigned IOSQE_IO_LINK
    unsigned IOSQE_BUFFER_SELECT
    unsigned IOSQE_CQE_SKIP_SUCCESS

    # cqe flags
    unsigned IORING_CQE_F_BUFFER
    unsigned IORING_CQE_F_MORE
    unsigned IORING_CQE_F_SOCK_NONEMPTY
    unsigned IORING_CQE_F_NOTIF
    unsigned IORING_CQE_BUFFER_SHIFT

    # op-specific flags
    unsigned IORING_RECVSEND_POLL_FIRST
    unsigned IORING_RECV_MULTISHOT
    unsigned IORING_RECVSEND_FIXED_BUF
    unsigned IORING_SEND_ZC_REPORT_USAGE
    unsigned IORING_NOTIF_USAGE_ZC_COPIED
    unsigned IORING_ASYNC_CANCEL_ALL
    unsigned IORING_ASYNC_CANCEL_FD
    unsigned IORING_ASYNC_CANCEL_ANY
    unsigned IORING_POLL_ADD_MULTI
    unsigned IORING_ACCEPT_MULTISHOT

    # opcodes
    int IORING_OP_NOP
    int IORING_OP_READ
    int IORING_OP_WRITE
    int IORING_OP_WRITEV
    int IORING_OP_POLL_ADD
    int IORING_OP_POLL_REMOVE
    int IORING_OP_ASYNC_CANCEL
    int IORING_OP_ACCEPT
    int IORING_OP_CONNECT
    int IORING_OP_SEND
    int IORING_OP_RECV
    int IORING_OP_SENDMSG
    int IORING_OP_RECVMSG
    int IORING_OP_SHUTDOWN
    int IORING_OP_SPLICE
    int IORING_OP_SEND_ZC
    int IORING_OP_SENDMSG_ZC
    int IORING_OP_READ_MULTISHOT
    int IORING_OP_WAITID
    int IORING_OP_STATX
    int IORING_OP_UNLINKAT
    int IORING_OP_LAST

cdef extern from "compat.h" nogil:
    unsigned IORING_SETUP_R_DISABLED
    int io_uring_enable_rings(io_uring *ring)
    unsigned long long LIBURING_UDATA_TIMEOUT

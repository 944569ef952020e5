/* Constants and small helpers that liburing 2.3 (Debian bookworm) lacks.
 * Values are kernel uapi ABI; each is only defined when the installed headers
 * do not already provide it. */
#ifndef ZCLOOP_COMPAT_H
#define ZCLOOP_COMPAT_H

#include <liburing.h>
#include <string.h>
#include <sys/mman.h>

#ifndef IORING_SEND_ZC_REPORT_USAGE
#define IORING_SEND_ZC_REPORT_USAGE (1U << 3)
#endif
#ifndef IORING_NOTIF_USAGE_ZC_COPIED
#define IORING_NOTIF_USAGE_ZC_COPIED (1U << 31)
#endif
#ifndef IORING_OP_READ_MULTISHOT
#define IORING_OP_READ_MULTISHOT 49
#endif
#ifndef IORING_OP_WAITID
#define IORING_OP_WAITID 50
#endif

/* One completion copied out of the CQ ring, so the ring slot can be handed
 * back to the kernel before Python code runs. */
typedef struct {
    __u64 user_data;
    __s32 res;
    __u32 flags;
} uring_cqe;

/* Most CQEs copied out per uring_reap() call. */
#define REAP_BATCH 256
/* Opcodes (u8) the loop's probe table covers. */
#define OP_TABLE_SIZE 256

/* Copy up to `max` CQEs out of the ring and mark them seen. */
static inline unsigned uring_reap(struct io_uring *ring, uring_cqe *out, unsigned max)
{
    struct io_uring_cqe *cqes[REAP_BATCH];
    unsigned n, i;
    if (max > REAP_BATCH)
        max = REAP_BATCH;
    n = io_uring_peek_batch_cqe(ring, cqes, max);
    for (i = 0; i < n; i++) {
        out[i].user_data = cqes[i]->user_data;
        out[i].res = cqes[i]->res;
        out[i].flags = cqes[i]->flags;
    }
    if (n)
        io_uring_cq_advance(ring, n);
    return n;
}

/* The provided-buffer registration's flags field: `pad` in liburing 2.3's
 * uapi copy, renamed `flags` in 2.4, the first release that ships
 * liburing/io_uring_version.h (included by liburing.h, defines the
 * IO_URING_VERSION_* macros). */
#ifdef IO_URING_VERSION_MAJOR
#define BUF_REG_FLAGS(reg) ((reg).flags)
#else
#define BUF_REG_FLAGS(reg) ((reg).pad)
#endif

/* Register an empty provided-buffer ring with room for `entries` buffers
 * (group `bgid`); buffers are added with buf_ring_push + _commit.  Returns
 * the ring memory or NULL with -errno in *err.  liburing 2.3 ignores the flags
 * argument of io_uring_register_buf_ring, so flags go into the struct. */
static inline struct io_uring_buf_ring *
buf_ring_register(struct io_uring *ring, unsigned entries, int bgid,
                     unsigned short flags, size_t *map_len, int *err)
{
    struct io_uring_buf_reg reg;
    struct io_uring_buf_ring *br;
    size_t len = (entries * sizeof(struct io_uring_buf) + 4095) & ~((size_t)4095);
    int ret;

    br = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (br == MAP_FAILED) {
        *err = -errno;
        return NULL;
    }
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)br;
    reg.ring_entries = entries;
    reg.bgid = bgid;
    BUF_REG_FLAGS(reg) = flags;
    ret = io_uring_register_buf_ring(ring, &reg, 0);
    if (ret) {
        munmap(br, len);
        *err = ret;
        return NULL;
    }
    io_uring_buf_ring_init(br);
    *map_len = len;
    *err = 0;
    return br;
}

/* Stage buffer `bid` at `addr`; the `offset`-th of a batch made visible to
 * the kernel by buf_ring_commit(br, batch size). */
static inline void buf_ring_push(struct io_uring_buf_ring *br, void *addr, unsigned len,
                                    unsigned bid, unsigned entries, int offset)
{
    io_uring_buf_ring_add(br, addr, len, bid, io_uring_buf_ring_mask(entries), offset);
}

static inline void buf_ring_commit(struct io_uring_buf_ring *br, unsigned count)
{
    io_uring_buf_ring_advance(br, count);
}

static inline int uring_opcode_supported(struct io_uring_probe *p, int op)
{
    return p != NULL && io_uring_opcode_supported(p, op);
}

#endif

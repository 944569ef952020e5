/*
 * uring_echo_server: a minimal C io_uring TCP echo server, the reference row
 * of the zcloop benchmarks (what one core can do with no interpreter at all).
 *
 * Multishot accept; per connection a multishot recv that picks buffers from a
 * provided buffer ring.  Received buffers are queued on their connection and
 * sent back from where the kernel put them (sendmsg with one iovec per
 * buffer, no user-space copy); a buffer returns to the ring once sent.  Sends
 * start after the whole batch of completions is handled, so data from several
 * recv CQEs goes out in one send (per-turn coalescing, as uvloop does), and
 * at most one send is in flight per connection (like an asyncio transport).
 *
 * Prints "READY port=N loop=c-io_uring" once listening.  Stops on SIGINT/SIGTERM
 * (default signal action: the kernel tears the ring down).
 *
 * usage: uring_echo_server [-h host] [-p port]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#define N_BUFFERS 256 /* power of two */
#define BUFFER_SIZE (256 * 1024) /* a 100 KiB message fits one buffer */
#define BUFFER_GROUP 1
#define MAX_IOV 64
#define MAX_FDS 65536

enum op { OP_ACCEPT, OP_RECV, OP_SEND };

/* Received bytes waiting to be echoed: part of one provided buffer. */
struct segment {
    unsigned short bid;
    unsigned offset, len;
};

struct conn {
    int fd;
    struct segment *segments; /* ring of N_BUFFERS: a connection never holds more */
    unsigned head, count;
    struct iovec iov[MAX_IOV]; /* of the in-flight sendmsg */
    struct msghdr msg;
    int sending, recv_armed, closing, queued;
};

static struct io_uring ring;
static struct io_uring_buf_ring *buf_ring;
static char *buffers;
static struct conn *conns[MAX_FDS];
static struct conn *flush_queue[MAX_FDS]; /* connections to flush after this batch */
static int n_queued;

static void die(const char *what, int err)
{
    fprintf(stderr, "uring_echo_server: %s: %s\n", what, strerror(err));
    exit(1);
}

static struct io_uring_sqe *get_sqe(void)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
    if (!sqe) { /* SQ full: flush it and retry */
        io_uring_submit(&ring);
        sqe = io_uring_get_sqe(&ring);
        if (!sqe)
            die("io_uring_get_sqe", EBUSY);
    }
    return sqe;
}

static void arm_accept(int listen_fd)
{
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_multishot_accept(sqe, listen_fd, NULL, NULL, 0);
    io_uring_sqe_set_data64(sqe, (uint64_t)listen_fd << 2 | OP_ACCEPT);
}

static void arm_recv(struct conn *c)
{
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUFFER_GROUP;
    io_uring_sqe_set_data64(sqe, (uint64_t)c->fd << 2 | OP_RECV);
    c->recv_armed = 1;
}

static void recycle_buffer(unsigned bid)
{
    io_uring_buf_ring_add(buf_ring, buffers + (size_t)bid * BUFFER_SIZE, BUFFER_SIZE, bid,
                          io_uring_buf_ring_mask(N_BUFFERS), 0);
    io_uring_buf_ring_advance(buf_ring, 1);
}

/* Send the queued segments (up to MAX_IOV of them) in one sendmsg. */
static void start_send(struct conn *c)
{
    unsigned n = c->count < MAX_IOV ? c->count : MAX_IOV;
    for (unsigned i = 0; i < n; i++) {
        struct segment *s = &c->segments[(c->head + i) % N_BUFFERS];
        c->iov[i].iov_base = buffers + (size_t)s->bid * BUFFER_SIZE + s->offset;
        c->iov[i].iov_len = s->len;
    }
    c->msg.msg_iov = c->iov;
    c->msg.msg_iovlen = n;
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, (uint64_t)c->fd << 2 | OP_SEND);
    c->sending = 1;
}

/* Drop `bytes` sent bytes from the head of the queue, recycling emptied buffers. */
static void consume(struct conn *c, size_t bytes)
{
    while (c->count && bytes) {
        struct segment *s = &c->segments[c->head];
        size_t n = bytes < s->len ? bytes : s->len;
        s->offset += n;
        s->len -= n;
        bytes -= n;
        if (!s->len) {
            recycle_buffer(s->bid);
            c->head = (c->head + 1) % N_BUFFERS;
            c->count--;
        }
    }
}

static void maybe_close(struct conn *c)
{
    if (!c->closing || c->sending || c->recv_armed || c->queued)
        return;
    consume(c, (size_t)-1); /* unsent data of a failed connection */
    conns[c->fd] = NULL;
    close(c->fd);
    free(c->segments);
    free(c);
}

static void queue_flush(struct conn *c)
{
    if (!c->queued) {
        c->queued = 1;
        flush_queue[n_queued++] = c;
    }
}

/* After a batch of completions: one send per connection with all it received. */
static void flush_queued(void)
{
    for (int i = 0; i < n_queued; i++) {
        struct conn *c = flush_queue[i];
        c->queued = 0;
        if (!c->sending && c->count)
            start_send(c);
        maybe_close(c);
    }
    n_queued = 0;
}

static void on_recv(struct conn *c, struct io_uring_cqe *cqe)
{
    int more = cqe->flags & IORING_CQE_F_MORE;
    if (!more)
        c->recv_armed = 0;
    if (cqe->res > 0) {
        struct segment *s = &c->segments[(c->head + c->count++) % N_BUFFERS];
        s->bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        s->offset = 0;
        s->len = cqe->res;
    } else if (cqe->res != -ENOBUFS) {
        c->closing = 1; /* EOF or error: finish sending, then close */
    }
    if (!more && !c->closing)
        arm_recv(c);
    queue_flush(c);
}

static void on_send(struct conn *c, struct io_uring_cqe *cqe)
{
    c->sending = 0;
    if (cqe->res < 0) {
        c->closing = 1;
        consume(c, (size_t)-1);
    } else {
        consume(c, cqe->res);
    }
    queue_flush(c);
}

static void on_accept(int listen_fd, struct io_uring_cqe *cqe)
{
    if (!(cqe->flags & IORING_CQE_F_MORE))
        arm_accept(listen_fd);
    if (cqe->res < 0)
        return;
    if (cqe->res >= MAX_FDS) {
        close(cqe->res);
        return;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (!c || !(c->segments = malloc(N_BUFFERS * sizeof *c->segments)))
        die("malloc", ENOMEM);
    c->fd = cqe->res;
    conns[c->fd] = c;
    arm_recv(c);
}

static void setup_buffer_ring(void)
{
    size_t ring_size = N_BUFFERS * sizeof(struct io_uring_buf);
    buf_ring = mmap(NULL, ring_size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    buffers = malloc((size_t)N_BUFFERS * BUFFER_SIZE);
    if (buf_ring == MAP_FAILED || !buffers)
        die("allocating the buffer ring", ENOMEM);
    struct io_uring_buf_reg reg = {
        .ring_addr = (unsigned long)buf_ring, .ring_entries = N_BUFFERS, .bgid = BUFFER_GROUP};
    int ret = io_uring_register_buf_ring(&ring, &reg, 0);
    if (ret)
        die("io_uring_register_buf_ring", -ret);
    io_uring_buf_ring_init(buf_ring);
    for (unsigned i = 0; i < N_BUFFERS; i++)
        io_uring_buf_ring_add(buf_ring, buffers + (size_t)i * BUFFER_SIZE, BUFFER_SIZE, i,
                              io_uring_buf_ring_mask(N_BUFFERS), i);
    io_uring_buf_ring_advance(buf_ring, N_BUFFERS);
}

static int listen_on(const char *host, int port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1)
        die("bad IPv4 address", EINVAL);
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) || listen(fd, 1024))
        die("bind/listen", errno);
    socklen_t len = sizeof addr;
    getsockname(fd, (struct sockaddr *)&addr, &len);
    printf("READY port=%d loop=c-io_uring\n", ntohs(addr.sin_port));
    fflush(stdout);
    return fd;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    int port = 0, opt;
    while ((opt = getopt(argc, argv, "h:p:")) != -1) {
        if (opt == 'h')
            host = optarg;
        else if (opt == 'p')
            port = atoi(optarg);
        else {
            fprintf(stderr, "usage: %s [-h host] [-p port]\n", argv[0]);
            return 2;
        }
    }

    struct io_uring_params params = {
        .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN};
    int ret = io_uring_queue_init_params(4096, &ring, &params);
    if (ret == -EINVAL) { /* kernel < 6.1: no DEFER_TASKRUN */
        memset(&params, 0, sizeof params);
        ret = io_uring_queue_init_params(4096, &ring, &params);
    }
    if (ret)
        die("io_uring_queue_init", -ret);
    setup_buffer_ring();

    int listen_fd = listen_on(host, port);
    arm_accept(listen_fd);

    for (;;) {
        ret = io_uring_submit_and_wait(&ring, 1);
        if (ret < 0 && ret != -EINTR)
            die("io_uring_submit_and_wait", -ret);
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&ring, head, cqe) {
            seen++;
            uint64_t data = io_uring_cqe_get_data64(cqe);
            int fd = (int)(data >> 2);
            switch (data & 3) {
            case OP_ACCEPT: on_accept(fd, cqe); break;
            case OP_RECV: on_recv(conns[fd], cqe); break;
            case OP_SEND: on_send(conns[fd], cqe); break;
            }
        }
        io_uring_cq_advance(&ring, seen);
        flush_queued();
    }
}

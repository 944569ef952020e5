/*
 * uring_echo_server: a minimal C io_uring TCP server, the reference row of the
 * zcloop benchmarks (what one core can do with no interpreter at all).
 *
 * Multishot accept; per connection a multishot recv that picks buffers from a
 * provided buffer ring.  Sends start after the whole batch of completions is
 * handled, so what several recv CQEs asked for goes out in one send (per-turn
 * coalescing, as uvloop does), and at most one send is in flight per
 * connection (like an asyncio transport).
 *
 * echo mode (-m echo, the default): received buffers are queued on their
 * connection and sent back from where the kernel put them (sendmsg with one
 * iovec per buffer, no user-space copy); a buffer returns to the ring once
 * sent.
 *
 * sink mode (-m sink), the one-way rows (sink-protocol/sink-streams in
 * bench/servers.py): the client sends an 8-byte little-endian message size
 * once per connection, then messages.  The server parses the size (it may
 * come split over recvs, or share one with message bytes), counts bytes,
 * returns each buffer to the ring as soon as it is counted (no user-space
 * copy) and sends a 1-byte ack (0x01) per complete message: the acks a batch
 * of completions earned go out in one send from a constant buffer.  Its ring
 * is smaller (64 buffers of 64 KiB instead of 256 of 256 KiB), to stay in
 * cache.
 *
 * source mode (-m source), the send rows (source-protocol/source-streams in
 * bench/servers.py): the client sends an 8-byte little-endian message size
 * and one byte, 'w', then only reads.  The server keeps one SEND in flight per
 * connection of a message buffer of that size (one per size for the process,
 * filled once, as the Python servers share one bytes object), with
 * MSG_WAITALL so a completion means the whole message went out (a short
 * count only on error), re-armed on completion until the client closes.  No
 * zero-copy.  Its recv ring is sink mode's small one (it only sees the header
 * and the end of stream).
 *
 * Prints "READY port=N loop=c-io_uring" once listening.  Stops on SIGINT/SIGTERM
 * (default signal action: the kernel tears the ring down).
 *
 * -c CC sets the congestion control of the listening socket (TCP_CONGESTION;
 * accepted connections inherit it): bench/modes.py varies it on the send rows.
 *
 * usage: uring_echo_server [-h host] [-p port] [-m echo|sink|source] [-c CC]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

/* Echo mode: a connection holds its buffers until they are sent back. */
#define N_BUFFERS 256 /* power of two */
#define BUFFER_SIZE (256 * 1024) /* a 100 KiB message fits one buffer */
/* Sink mode: a buffer goes back as soon as it is counted, so a small ring
 * suffices, and it stays in the CPU cache.  The ring hands its buffers out in
 * order: cycling through echo's 64 MiB made every recv copy into cold memory
 * (about 50% more server CPU per byte on the 16 MiB one-way row). */
#define SINK_BUFFERS 64 /* power of two */
#define SINK_BUFFER_SIZE (64 * 1024)
#define BUFFER_GROUP 1
#define MAX_IOV 64
#define MAX_FDS 65536
#define HEADER 8 /* sink and source modes: message size, little endian, once per connection */
#define ACK_CHUNK 4096 /* sink mode: at most this many acks per send */

enum op { OP_ACCEPT, OP_RECV, OP_SEND, OP_SEND_ACKS, OP_SEND_MESSAGE };
#define OP_BITS 3 /* user_data: fd << OP_BITS | op */
enum mode { MODE_ECHO, MODE_SINK, MODE_SOURCE };

/* Received bytes waiting to be echoed: part of one provided buffer. */
struct segment {
    unsigned short bid;
    unsigned offset, len;
};

struct conn {
    int fd;
    /* echo mode */
    struct segment *segments; /* ring of N_BUFFERS: a connection never holds more */
    unsigned head, count;
    struct iovec iov[MAX_IOV]; /* of the in-flight sendmsg */
    struct msghdr msg;
    /* sink mode */
    unsigned header_len;   /* bytes of the size header received so far */
    uint64_t message_size; /* valid once header_len == HEADER */
    uint64_t unacked;      /* bytes received towards the next ack */
    uint64_t acks;         /* acks earned and not sent yet */
    /* source mode */
    int method_received;   /* the byte after the header ('w') arrived */
    const char *message;   /* the message buffer, once the header is complete */
    int sending, recv_armed, closing, queued;
};

static struct io_uring ring;
static struct io_uring_buf_ring *buf_ring;
static char *buffers;
static struct conn *conns[MAX_FDS];
static struct conn *flush_queue[MAX_FDS]; /* connections to flush after this batch */
static int n_queued;
static enum mode mode = MODE_ECHO;
static unsigned n_buffers = N_BUFFERS;
static size_t buffer_size = BUFFER_SIZE;
static char ack_bytes[ACK_CHUNK]; /* all 0x01: every ack send comes from here */

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
    io_uring_sqe_set_data64(sqe, (uint64_t)listen_fd << OP_BITS | OP_ACCEPT);
}

static void arm_recv(struct conn *c)
{
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUFFER_GROUP;
    io_uring_sqe_set_data64(sqe, (uint64_t)c->fd << OP_BITS | OP_RECV);
    c->recv_armed = 1;
}

static char *buffer(unsigned bid)
{
    return buffers + (size_t)bid * buffer_size;
}

static void recycle_buffer(unsigned bid)
{
    io_uring_buf_ring_add(buf_ring, buffer(bid), buffer_size, bid,
                          io_uring_buf_ring_mask(n_buffers), 0);
    io_uring_buf_ring_advance(buf_ring, 1);
}

/* Send the queued segments (up to MAX_IOV of them) in one sendmsg. */
static void start_send(struct conn *c)
{
    unsigned n = c->count < MAX_IOV ? c->count : MAX_IOV;
    for (unsigned i = 0; i < n; i++) {
        struct segment *s = &c->segments[(c->head + i) % N_BUFFERS];
        c->iov[i].iov_base = buffer(s->bid) + s->offset;
        c->iov[i].iov_len = s->len;
    }
    c->msg.msg_iov = c->iov;
    c->msg.msg_iovlen = n;
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, (uint64_t)c->fd << OP_BITS | OP_SEND);
    c->sending = 1;
}

/* Send the acks earned so far (up to ACK_CHUNK of them). */
static void start_send_acks(struct conn *c)
{
    unsigned n = c->acks < ACK_CHUNK ? c->acks : ACK_CHUNK;
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_send(sqe, c->fd, ack_bytes, n, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, (uint64_t)c->fd << OP_BITS | OP_SEND_ACKS);
    c->sending = 1;
}

/* Source mode: the message buffer of `size` bytes, made on first use and
 * kept for the process (a few sizes at most: one per row). */
static const char *message_buffer(uint64_t size)
{
    static struct { uint64_t size; char *data; } cache[16];
    static unsigned n_cached;
    for (unsigned i = 0; i < n_cached; i++)
        if (cache[i].size == size)
            return cache[i].data;
    char *data = n_cached < 16 ? malloc(size) : NULL;
    if (!data)
        return NULL;
    memset(data, 'x', size);
    cache[n_cached].size = size;
    cache[n_cached++].data = data;
    return data;
}

/* Source mode: send the whole message; MSG_WAITALL makes io_uring retry a
 * partial send until all of it went out. */
static void start_send_message(struct conn *c)
{
    struct io_uring_sqe *sqe = get_sqe();
    io_uring_prep_send(sqe, c->fd, c->message, c->message_size, MSG_NOSIGNAL | MSG_WAITALL);
    io_uring_sqe_set_data64(sqe, (uint64_t)c->fd << OP_BITS | OP_SEND_MESSAGE);
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

/* After a batch of completions: one send per connection with all it received
 * (echo) or all the acks it earned (sink). */
static void flush_queued(void)
{
    for (int i = 0; i < n_queued; i++) {
        struct conn *c = flush_queue[i];
        c->queued = 0;
        if (!c->sending && !c->closing && c->message) {
            start_send_message(c);
        } else if (!c->sending) {
            if (c->count)
                start_send(c);
            else if (c->acks)
                start_send_acks(c);
        }
        maybe_close(c);
    }
    n_queued = 0;
}

/* Sink mode: count `len` received bytes (the size header first), earn acks. */
static void count_received(struct conn *c, const unsigned char *data, unsigned len)
{
    while (c->header_len < HEADER && len) {
        c->message_size |= (uint64_t)*data++ << (8 * c->header_len++);
        len--;
    }
    if (c->header_len < HEADER)
        return;
    if (!c->message_size) { /* no such message: drop the connection */
        c->closing = 1;
        shutdown(c->fd, SHUT_RDWR); /* ends the multishot recv */
        return;
    }
    c->unacked += len;
    if (c->unacked >= c->message_size) {
        c->acks += c->unacked / c->message_size;
        c->unacked %= c->message_size;
    }
}

/* Source mode: parse the size header and the method byte; later bytes are ignored. */
static void read_source_header(struct conn *c, const unsigned char *data, unsigned len)
{
    while (c->header_len < HEADER && len) {
        c->message_size |= (uint64_t)*data++ << (8 * c->header_len++);
        len--;
    }
    if (c->header_len < HEADER || c->method_received || !len)
        return;
    c->method_received = 1;
    /* 'w' only: 'z' (write_zc) has no counterpart here; no size, no message. */
    if (*data != 'w' || !c->message_size || !(c->message = message_buffer(c->message_size))) {
        c->closing = 1;
        shutdown(c->fd, SHUT_RDWR); /* ends the multishot recv */
    }
}

static void on_recv(struct conn *c, struct io_uring_cqe *cqe)
{
    int more = cqe->flags & IORING_CQE_F_MORE;
    if (!more)
        c->recv_armed = 0;
    if (cqe->res > 0) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        if (mode == MODE_SINK) {
            count_received(c, (unsigned char *)buffer(bid), cqe->res);
            recycle_buffer(bid);
        } else if (mode == MODE_SOURCE) {
            read_source_header(c, (unsigned char *)buffer(bid), cqe->res);
            recycle_buffer(bid);
        } else {
            struct segment *s = &c->segments[(c->head + c->count++) % N_BUFFERS];
            s->bid = bid;
            s->offset = 0;
            s->len = cqe->res;
        }
    } else if (cqe->res != -ENOBUFS) {
        c->closing = 1; /* EOF or error: finish sending, then close */
        if (mode == MODE_SOURCE && c->sending)
            shutdown(c->fd, SHUT_RDWR); /* the client is gone: end the pending send */
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

static void on_send_acks(struct conn *c, struct io_uring_cqe *cqe)
{
    c->sending = 0;
    if (cqe->res < 0) {
        c->closing = 1;
        c->acks = 0;
    } else {
        c->acks -= cqe->res;
    }
    queue_flush(c);
}

static void on_send_message(struct conn *c, struct io_uring_cqe *cqe)
{
    c->sending = 0;
    if (cqe->res < 0 || (uint64_t)cqe->res < c->message_size)
        c->closing = 1; /* the peer is gone (a short count: interrupted by shutdown) */
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
    if (!c || (mode == MODE_ECHO && !(c->segments = malloc(N_BUFFERS * sizeof *c->segments))))
        die("malloc", ENOMEM);
    c->fd = cqe->res;
    conns[c->fd] = c;
    arm_recv(c);
}

static void setup_buffer_ring(void)
{
    size_t ring_size = n_buffers * sizeof(struct io_uring_buf);
    buf_ring = mmap(NULL, ring_size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    /* Page-aligned (mmap), not malloc's page + 16 bytes: the kernel's copy
     * into a buffer that starts 8-24 bytes past a page boundary cost 2.2x the
     * server CPU per byte on the one-way 16 MiB row on an AMD EPYC VM (its
     * source, the skb's page, starts on a boundary: the stores run a few
     * bytes ahead of the loads in the same 4 KiB offsets).  Offsets 0, 32,
     * 48, 64, 80, 144, 2048 and 4080 were all fast (docs/benchmarks.md). */
    buffers = mmap(NULL, n_buffers * buffer_size, PROT_READ | PROT_WRITE,
                   MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (buf_ring == MAP_FAILED || buffers == MAP_FAILED)
        die("allocating the buffer ring", ENOMEM);
    struct io_uring_buf_reg reg = {
        .ring_addr = (unsigned long)buf_ring, .ring_entries = n_buffers, .bgid = BUFFER_GROUP};
    int ret = io_uring_register_buf_ring(&ring, &reg, 0);
    if (ret)
        die("io_uring_register_buf_ring", -ret);
    io_uring_buf_ring_init(buf_ring);
    for (unsigned i = 0; i < n_buffers; i++)
        io_uring_buf_ring_add(buf_ring, buffer(i), buffer_size, i,
                              io_uring_buf_ring_mask(n_buffers), i);
    io_uring_buf_ring_advance(buf_ring, n_buffers);
}

static int listen_on(const char *host, int port, const char *cc)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1)
        die("bad IPv4 address", EINVAL);
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (cc && setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, strlen(cc)))
        die("TCP_CONGESTION", errno);
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
    const char *cc = NULL;
    int port = 0, opt;
    while ((opt = getopt(argc, argv, "h:p:m:c:")) != -1) {
        if (opt == 'h')
            host = optarg;
        else if (opt == 'p')
            port = atoi(optarg);
        else if (opt == 'c')
            cc = optarg;
        else if (opt == 'm' && !strcmp(optarg, "echo"))
            mode = MODE_ECHO;
        else if (opt == 'm' && !strcmp(optarg, "sink"))
            mode = MODE_SINK;
        else if (opt == 'm' && !strcmp(optarg, "source"))
            mode = MODE_SOURCE;
        else {
            fprintf(stderr, "usage: %s [-h host] [-p port] [-m echo|sink|source] [-c CC]\n", argv[0]);
            return 2;
        }
    }
    if (mode != MODE_ECHO) {
        n_buffers = SINK_BUFFERS;
        buffer_size = SINK_BUFFER_SIZE;
        memset(ack_bytes, 1, sizeof ack_bytes);
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

    int listen_fd = listen_on(host, port, cc);
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
            int fd = (int)(data >> OP_BITS);
            switch (data & ((1 << OP_BITS) - 1)) {
            case OP_ACCEPT: on_accept(fd, cqe); break;
            case OP_RECV: on_recv(conns[fd], cqe); break;
            case OP_SEND: on_send(conns[fd], cqe); break;
            case OP_SEND_ACKS: on_send_acks(conns[fd], cqe); break;
            case OP_SEND_MESSAGE: on_send_message(conns[fd], cqe); break;
            }
        }
        io_uring_cq_advance(&ring, seen);
        flush_queued();
    }
}

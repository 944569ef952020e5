/*
 * echo_client: a fast epoll load generator for the zcloop benchmarks.
 *
 * Opens N TCP connections; each one does request/response ping-pong:
 *   echo mode:   send SIZE bytes, wait until SIZE bytes come back;
 *   oneway mode: send an 8-byte header (SIZE, little endian) once, then per
 *                message send SIZE bytes and wait for a 1-byte ack.
 * After a warm-up it prints "window-start" (so the harness can sample the
 * server's CPU time at the exact start of the measured window), runs for
 * DURATION seconds and prints one JSON line with the results.  The JSON line
 * is printed before the connections are closed, which marks the window end.
 *
 * usage: echo_client [-h host] -p port [-c conns] [-s size] [-d seconds]
 *                    [-w warmup_seconds] [-m echo|oneway]
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct conn {
    int fd;
    int alive;
    size_t sent;          /* bytes of the current request sent */
    size_t received;      /* bytes of the current response received */
    uint64_t started_ns;  /* when the current request started */
};

static size_t request_size, response_size;
static char *send_buf;
static char recv_buf[256 * 1024];

static uint64_t *latencies;  /* ns, one per request completed in the window */
static size_t n_latencies, cap_latencies;
static uint64_t completed, total_completed, errors;
static int measuring;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static void record(uint64_t latency_ns)
{
    total_completed++;
    if (!measuring)
        return;
    completed++;
    if (n_latencies == cap_latencies) {
        cap_latencies = cap_latencies ? cap_latencies * 2 : 1 << 16;
        latencies = realloc(latencies, cap_latencies * sizeof *latencies);
        if (!latencies) {
            perror("realloc");
            exit(2);
        }
    }
    latencies[n_latencies++] = latency_ns;
}

static void fail(struct conn *c, const char *what)
{
    if (measuring)
        fprintf(stderr, "echo_client: connection %d: %s: %s\n", c->fd, what,
                errno ? strerror(errno) : "closed by peer");
    errors++;
    c->alive = 0;
    close(c->fd);
}

/* Make as much progress on one connection as the socket allows right now. */
static void drive(struct conn *c)
{
    int progress = 1;
    while (progress && c->alive) {
        progress = 0;
        if (c->sent < request_size) {
            ssize_t n = send(c->fd, send_buf + c->sent, request_size - c->sent, MSG_NOSIGNAL);
            if (n > 0) {
                c->sent += n;
                progress = 1;
            } else if (n < 0 && errno != EAGAIN) {
                fail(c, "send");
                return;
            }
        }
        if (c->received < response_size) {
            size_t want = response_size - c->received;
            if (want > sizeof recv_buf)
                want = sizeof recv_buf;
            ssize_t n = recv(c->fd, recv_buf, want, 0);
            if (n > 0) {
                c->received += n;
                progress = 1;
            } else if (n == 0 || errno != EAGAIN) {
                errno = n == 0 ? 0 : errno;
                fail(c, "recv");
                return;
            }
        }
        if (c->sent == request_size && c->received == response_size) {
            uint64_t t = now_ns();
            record(t - c->started_ns);
            c->sent = c->received = 0;
            c->started_ns = t;
            progress = 1;
        }
    }
}

static int connect_to(const char *host, int port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "echo_client: bad IPv4 address %s\n", host);
        exit(2);
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("echo_client: connect");
        exit(1);
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double percentile_us(double p)
{
    if (!n_latencies)
        return 0;
    size_t i = (size_t)(p * (n_latencies - 1));
    return latencies[i] / 1000.0;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *mode = "echo";
    int port = 0, n_conns = 1, opt;
    size_t size = 1024;
    double duration = 3, warmup = 0.5;

    while ((opt = getopt(argc, argv, "h:p:c:s:d:w:m:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'c': n_conns = atoi(optarg); break;
        case 's': size = strtoull(optarg, NULL, 10); break;
        case 'd': duration = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'm': mode = optarg; break;
        default:
            fprintf(stderr, "usage: %s [-h host] -p port [-c conns] [-s size] "
                            "[-d seconds] [-w warmup] [-m echo|oneway]\n", argv[0]);
            return 2;
        }
    }
    int oneway = strcmp(mode, "oneway") == 0;
    if (!port || n_conns < 1 || !size || (!oneway && strcmp(mode, "echo"))) {
        fprintf(stderr, "echo_client: need -p PORT, -c >= 1, -s >= 1, -m echo|oneway\n");
        return 2;
    }
    request_size = size;
    response_size = oneway ? 1 : size;
    send_buf = malloc(size);
    memset(send_buf, 'x', size);

    int ep = epoll_create1(0);
    struct conn *conns = calloc(n_conns, sizeof *conns);
    for (int i = 0; i < n_conns; i++) {
        struct conn *c = &conns[i];
        c->fd = connect_to(host, port);
        if (oneway) {
            uint64_t header = size;  /* little endian on every Linux target we run on */
            if (send(c->fd, &header, sizeof header, 0) != sizeof header) {
                perror("echo_client: send header");
                return 1;
            }
        }
        fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
        c->alive = 1;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    }

    uint64_t start = now_ns();
    uint64_t window_start = start + (uint64_t)(warmup * 1e9);
    uint64_t window_end = window_start + (uint64_t)(duration * 1e9);
    for (int i = 0; i < n_conns; i++) {
        conns[i].started_ns = start;
        drive(&conns[i]);
    }
    if (warmup <= 0) {
        measuring = 1;
        printf("window-start\n");
        fflush(stdout);
    }

    struct epoll_event events[256];
    uint64_t t = start;
    long alive = n_conns;
    while (t < window_end && alive > 0) {
        uint64_t deadline = measuring ? window_end : window_start;
        int timeout_ms = (int)((deadline - t) / 1000000) + 1;
        int n = epoll_wait(ep, events, 256, timeout_ms);
        for (int i = 0; i < n; i++)
            drive(events[i].data.ptr);
        t = now_ns();
        if (!measuring && t >= window_start) {
            measuring = 1;
            printf("window-start\n");
            fflush(stdout);
        }
        alive = 0;
        for (int i = 0; i < n_conns; i++)
            alive += conns[i].alive;
    }
    double elapsed = measuring ? ((t < window_end ? t : window_end) - window_start) / 1e9 : 0;

    qsort(latencies, n_latencies, sizeof *latencies, cmp_u64);
    printf("{\"ops\": %llu, \"total_ops\": %llu, \"bytes\": %llu, \"duration\": %.6f, "
           "\"connections\": %d, \"size\": %zu, \"mode\": \"%s\", \"p50_us\": %.1f, "
           "\"p99_us\": %.1f, \"errors\": %llu}\n",
           (unsigned long long)completed, (unsigned long long)total_completed,
           (unsigned long long)(completed * size), elapsed,
           n_conns, size, mode, percentile_us(0.50), percentile_us(0.99),
           (unsigned long long)errors);
    fflush(stdout);
    return errors ? 1 : 0;
}

/*
 * echo_client: a fast epoll load generator for the zcloop benchmarks.
 *
 * Opens N TCP connections (optionally TLS, -t); each one does:
 *   echo mode:   send SIZE bytes, wait until SIZE bytes come back;
 *   source mode: send an 8-byte header (SIZE, little endian) and 'w' (the
 *                server's write()), then only receive: the server streams
 *                SIZE-byte messages; an op is SIZE bytes received, "bytes" is
 *                every byte received in the window (bench/modes.py; the
 *                one-way, send and zero-copy rows use bench/c/rotate_client).
 * After a warm-up it prints "window-start" (so the harness can sample the
 * server's CPU time at the exact start of the measured window), runs for
 * DURATION seconds and prints one JSON line with the results.  The JSON line
 * is printed before the connections are closed, which marks the window end.
 *
 * TLS (-t, built when OpenSSL's headers are there: libssl-dev): the handshake
 * is done blocking before the run, then SSL_read/SSL_write on the same
 * non-blocking, edge-triggered loop.  -C CAFILE verifies the server's
 * certificate against CAFILE for the host's IP address (else no verification).
 * -g CC sets each connection's TCP congestion control (TCP_CONGESTION) before
 * it connects, so the client's data and acks follow a stated algorithm rather
 * than the machine's default (docs/benchmarks.md, "Congestion control").
 *
 * usage: echo_client [-h host] -p port [-c conns] [-s size] [-d seconds]
 *                    [-w warmup_seconds] [-m echo|source] [-t [-C cafile]]
 *                    [-g cc]
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
#ifdef WITH_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#else
typedef struct ssl_st SSL;
#endif

struct conn {
    int fd;
    SSL *ssl;             /* NULL without -t */
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
static uint64_t window_bytes;  /* received during the window (source mode's "bytes") */
static int measuring;
static char tls_info[128];  /* "<protocol> <cipher>" of the first connection */

#ifdef WITH_TLS
static SSL_CTX *tls_ctx;

static void tls_die(const char *what)
{
    fprintf(stderr, "echo_client: %s: ", what);
    ERR_print_errors_fp(stderr);
    fprintf(stderr, "\n");
    exit(1);
}

static void tls_init(const char *cafile)
{
    tls_ctx = SSL_CTX_new(TLS_client_method());
    if (!tls_ctx)
        tls_die("SSL_CTX_new");
    if (cafile) {
        if (SSL_CTX_load_verify_locations(tls_ctx, cafile, NULL) != 1)
            tls_die("loading the CA file");
        SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_PEER, NULL);
    }
    /* Retry a blocked SSL_write from send_buf + sent, return after each record. */
    SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
}

/* Blocking handshake on a connected, still blocking socket. */
static SSL *tls_connect(int fd, const char *host)
{
    SSL *ssl = SSL_new(tls_ctx);
    if (!ssl || SSL_set_fd(ssl, fd) != 1)
        tls_die("SSL_new");
    if (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER)
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
    if (SSL_connect(ssl) != 1)
        tls_die("TLS handshake");
    if (!tls_info[0])
        snprintf(tls_info, sizeof tls_info, "%s %s", SSL_get_version(ssl),
                 SSL_get_cipher_name(ssl));
    return ssl;
}
#endif

/* send()/recv() or their TLS equivalents, with the syscall conventions:
 * > 0 bytes, 0 end of stream (recv), -1 with errno (EAGAIN: would block). */
static ssize_t conn_send(struct conn *c, const char *buf, size_t len)
{
#ifdef WITH_TLS
    if (c->ssl) {
        errno = 0;
        int n = SSL_write(c->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
        if (n > 0)
            return n;
        int err = SSL_get_error(c->ssl, n);
        errno = err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE ? EAGAIN :
                err == SSL_ERROR_SYSCALL && errno ? errno : EPROTO;
        return -1;
    }
#endif
    return send(c->fd, buf, len, MSG_NOSIGNAL);
}

static ssize_t conn_recv(struct conn *c, char *buf, size_t len)
{
#ifdef WITH_TLS
    if (c->ssl) {
        errno = 0;
        int n = SSL_read(c->ssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
        if (n > 0)
            return n;
        int err = SSL_get_error(c->ssl, n);
        if (err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && !errno))
            return 0;
        errno = err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE ? EAGAIN :
                err == SSL_ERROR_SYSCALL ? errno : EPROTO;
        return -1;
    }
#endif
    return recv(c->fd, buf, len, 0);
}

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
            ssize_t n = conn_send(c, send_buf + c->sent, request_size - c->sent);
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
            ssize_t n = conn_recv(c, recv_buf, want);
            if (n > 0) {
                c->received += n;
                if (measuring)
                    window_bytes += n;
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

static const char *congestion_control;

static int connect_to(const char *host, int port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "echo_client: bad IPv4 address %s\n", host);
        exit(2);
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd >= 0 && congestion_control &&
        setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, congestion_control,
                   strlen(congestion_control)) < 0) {
        perror("echo_client: TCP_CONGESTION");
        exit(2);
    }
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
    const char *host = "127.0.0.1", *mode = "echo", *cafile = NULL;
    int port = 0, n_conns = 1, tls = 0, opt;
    size_t size = 1024;
    double duration = 3, warmup = 0.5;

    while ((opt = getopt(argc, argv, "h:p:c:s:d:w:m:tC:g:")) != -1) {
        switch (opt) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'c': n_conns = atoi(optarg); break;
        case 's': size = strtoull(optarg, NULL, 10); break;
        case 'd': duration = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'm': mode = optarg; break;
        case 't': tls = 1; break;
        case 'C': cafile = optarg; break;
        case 'g': congestion_control = optarg; break;
        default:
            fprintf(stderr, "usage: %s [-h host] -p port [-c conns] [-s size] [-d seconds] "
                            "[-w warmup] [-m echo|source] [-t [-C cafile]] [-g cc]\n", argv[0]);
            return 2;
        }
    }
#ifndef WITH_TLS
    (void)cafile;
    if (tls) {  /* checked first: bench/harness.py probes with a bare -t */
        fprintf(stderr, "echo_client: built without OpenSSL (install libssl-dev and "
                        "rebuild: make -C bench/c)\n");
        return 2;
    }
#endif
    int source = strcmp(mode, "source") == 0;
    if (!port || n_conns < 1 || !size || (!source && strcmp(mode, "echo"))) {
        fprintf(stderr, "echo_client: need -p PORT, -c >= 1, -s >= 1, -m echo|source\n");
        return 2;
    }
#ifdef WITH_TLS
    if (tls)
        tls_init(cafile);
#endif
    /* source: nothing to send per message, SIZE bytes to receive. */
    request_size = source ? 0 : size;
    response_size = size;
    send_buf = malloc(size);
    memset(send_buf, 'x', size);

    int ep = epoll_create1(0);
    struct conn *conns = calloc(n_conns, sizeof *conns);
    for (int i = 0; i < n_conns; i++) {
        struct conn *c = &conns[i];
        c->fd = connect_to(host, port);
#ifdef WITH_TLS
        if (tls)
            c->ssl = tls_connect(c->fd, host);
#endif
        if (source) {
            char header[9];
            uint64_t le_size = size;  /* little endian on every Linux target we run on */
            memcpy(header, &le_size, 8);
            header[8] = 'w';
            size_t len = sizeof header;
            if (conn_send(c, header, len) != (ssize_t)len) {
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
    /* source mode has no request, so no latency: the gaps between messages
     * are not one. */
    char p50[32] = "null", p99[32] = "null", tls_json[160] = "null";
    if (!source) {
        snprintf(p50, sizeof p50, "%.1f", percentile_us(0.50));
        snprintf(p99, sizeof p99, "%.1f", percentile_us(0.99));
    }
    if (tls_info[0])
        snprintf(tls_json, sizeof tls_json, "\"%s\"", tls_info);
    printf("{\"ops\": %llu, \"total_ops\": %llu, \"bytes\": %llu, \"duration\": %.6f, "
           "\"connections\": %d, \"size\": %zu, \"mode\": \"%s\", \"tls\": %s, "
           "\"p50_us\": %s, \"p99_us\": %s, \"errors\": %llu}\n",
           (unsigned long long)completed, (unsigned long long)total_completed,
           /* source: every byte of the window, not only whole messages (a
            * 16 MiB message is a coarse unit in a short window) */
           (unsigned long long)(source ? window_bytes : completed * size), elapsed,
           n_conns, size, mode, tls_json, p50, p99, (unsigned long long)errors);
    fflush(stdout);
    return errors ? 1 : 0;
}

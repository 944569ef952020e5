/*
 * rotate_client: the load generator of the large-transfer rows (one-way and
 * send): one connection to each of several servers, driven one at a time in
 * short slices, round robin, so every server is measured in the same seconds
 * as the others (docs/benchmarks.md, "Interleaved slices").
 *
 * On some VM hosts the speed of a loopback transfer (a copy from one vCPU's
 * cache to the other's) changes several-fold within a second and from one
 * second to the next, whatever runs in the guest.  Rounds of a second or
 * more per server then compare different machines; slices of tens of
 * milliseconds, hundreds per server, see the same mix of states.
 *
 *   source mode (-m source): each connection sends the 8-byte size and its
 *     method once ('w' for write(), 'z' for write_zc(); -M: one letter per
 *     target, default all 'w'); the server streams SIZE-byte messages.  In its slice a connection
 *     is read; between its slices it is not, so its server stops once the
 *     socket buffers are full (a few ms).  A slice counts the bytes read,
 *     minus what was already queued when it started, plus what is queued when
 *     it ends (SIOCINQ): what the server sent during the slice.
 *   oneway mode (-m oneway): each connection sends the 8-byte size once;
 *     then, in its slice, SIZE-byte messages, each followed by a wait for
 *     the server's 1-byte ack.  A slice ends at the first ack after its
 *     time is up, so no server works outside its slice.
 *
 * Each server's CPU time (-P: one pid per target; the sum over its threads'
 * /proc/PID/task/TID/schedstat) is read at the start of each of its slices,
 * so the time it spends filling buffers after its slice is its own.  Targets
 * may share a server process (two connections with different methods): what
 * the process used since its previous reading goes to the target whose slice
 * began at that reading.
 *
 * The first 2 rounds of slices are warm-up.  The measured slices are grouped
 * into BLOCKS consecutive blocks, the "rounds" of the report: per target and
 * block, bytes, seconds and server CPU seconds.  Prints one JSON line:
 *   {"mode": ..., "size": ..., "slice_ms": ..., "blocks": B,
 *    "targets": [{"bytes": [B], "duration": [B], "cpu": [B] or null}, ...],
 *    "client_wait": share of the run the client waited for its CPU}
 *
 * usage: rotate_client -m source|oneway -s SIZE [-h host] -p PORT[,PORT...]
 *                      [-P PID[,PID...]] [-M METHODS] [-l slice_ms] [-n slices]
 *                      [-b blocks] [-g cc]
 *   -n: measured slices per target (default 300), -b: blocks (default 5).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_TARGETS 16
#define WARMUP_ROUNDS 2
#define READ_SIZE (1 << 20)

struct target {
    int fd;
    struct server *server;
    double *bytes, *seconds, *cpu; /* per block */
};

/* A server process: its CPU is read at the start of each slice of a target
 * it serves, and what it used since goes to the target of the previous one. */
struct server {
    int pid, ok;
    double cpu_mark;         /* its CPU at the start of the last slice of one of its targets */
    struct target *owner;    /* that target; NULL before the first measured slice */
    int owner_block;
};

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* CPU seconds of process `pid`, all threads; -1 if unreadable. */
static double process_cpu(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *dir = opendir(path);
    if (!dir)
        return -1;
    double total = 0;
    struct dirent *entry;
    while ((entry = readdir(dir))) {
        if (entry->d_name[0] == '.')
            continue;
        char stat_path[300];
        snprintf(stat_path, sizeof stat_path, "/proc/%d/task/%s/schedstat", pid, entry->d_name);
        FILE *f = fopen(stat_path, "r");
        unsigned long long on_cpu_ns;
        if (f && fscanf(f, "%llu", &on_cpu_ns) == 1)
            total += on_cpu_ns * 1e-9;
        if (f)
            fclose(f);
    }
    closedir(dir);
    return total;
}

/* Nanoseconds this process has waited for its CPU so far. */
static double own_wait_ns(void)
{
    FILE *f = fopen("/proc/self/schedstat", "r");
    unsigned long long on_cpu, waited = 0;
    if (f && fscanf(f, "%llu %llu", &on_cpu, &waited) != 2)
        waited = 0;
    if (f)
        fclose(f);
    return (double)waited;
}

static void die(const char *what)
{
    fprintf(stderr, "rotate_client: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int connect_to(const char *host, int port, const char *cc)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "rotate_client: bad IPv4 address %s\n", host);
        exit(2);
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        die("socket");
    if (cc && setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, strlen(cc)) < 0)
        die("TCP_CONGESTION");
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

static void send_all(int fd, const char *data, size_t len)
{
    while (len) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("send");
        }
        data += n;
        len -= (size_t)n;
    }
}

/* One slice of source mode: bytes the server sent during it. */
static double source_slice(struct target *t, char *buf, double slice)
{
    int queued_before = 0, queued_after = 0;
    ioctl(t->fd, SIOCINQ, &queued_before);
    double start = now(), got = 0;
    while (now() - start < slice) {
        ssize_t n = recv(t->fd, buf, READ_SIZE, MSG_DONTWAIT);
        if (n > 0)
            got += n;
        else if (n == 0 || (errno != EAGAIN && errno != EINTR))
            die("recv (server closed?)");
    }
    ioctl(t->fd, SIOCINQ, &queued_after);
    return got - queued_before + queued_after;
}

/* One slice of oneway mode: whole acknowledged messages. */
static double oneway_slice(struct target *t, const char *message, size_t size, double slice)
{
    double start = now(), sent = 0;
    do {
        send_all(t->fd, message, size);
        char ack;
        ssize_t n;
        while ((n = recv(t->fd, &ack, 1, 0)) < 0 && errno == EINTR)
            ;
        if (n != 1)
            die("recv ack (server closed?)");
        sent += size;
    } while (now() - start < slice);
    return sent;
}

static int parse_list(char *text, int *out)
{
    int n = 0;
    for (char *item = strtok(text, ","); item && n < MAX_TARGETS; item = strtok(NULL, ","))
        out[n++] = atoi(item);
    return n;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *mode = NULL, *cc = NULL;
    size_t size = 0;
    double slice_ms = 50;
    int slices = 300, blocks = 5, ports[MAX_TARGETS], pids[MAX_TARGETS], n_targets = 0, n_pids = 0;
    const char *methods = NULL;
    int opt;
    while ((opt = getopt(argc, argv, "m:s:h:p:P:M:l:n:b:g:")) != -1) {
        switch (opt) {
        case 'm': mode = optarg; break;
        case 's': size = strtoull(optarg, NULL, 10); break;
        case 'h': host = optarg; break;
        case 'p': n_targets = parse_list(optarg, ports); break;
        case 'P': n_pids = parse_list(optarg, pids); break;
        case 'M': methods = optarg; break;
        case 'l': slice_ms = atof(optarg); break;
        case 'n': slices = atoi(optarg); break;
        case 'b': blocks = atoi(optarg); break;
        case 'g': cc = optarg; break;
        default: goto usage;
        }
    }
    int source = mode && !strcmp(mode, "source"), oneway = mode && !strcmp(mode, "oneway");
    if ((!source && !oneway) || !size || n_targets < 1 || (n_pids && n_pids != n_targets) ||
        slice_ms <= 0 || blocks < 1 || slices < blocks ||
        (methods && (!source || strlen(methods) != (size_t)n_targets ||
                     strspn(methods, "wz") != (size_t)n_targets))) {
usage:
        fprintf(stderr, "usage: %s -m source|oneway -s SIZE [-h host] -p PORT[,PORT...] "
                        "[-P PID[,PID...]] [-M METHODS] [-l slice_ms] [-n slices] [-b blocks] "
                        "[-g cc]\n", argv[0]);
        return 2;
    }

    char *buf = malloc(source ? READ_SIZE : size);
    if (!buf)
        die("malloc");
    memset(buf, 'x', source ? READ_SIZE : size);
    struct target targets[MAX_TARGETS];
    struct server servers[MAX_TARGETS];
    int n_servers = 0;
    for (int i = 0; i < n_targets; i++) {
        struct target *t = &targets[i];
        t->fd = connect_to(host, ports[i], cc);
        t->server = NULL;
        for (int j = 0; j < n_servers && n_pids; j++)
            if (servers[j].pid == pids[i])
                t->server = &servers[j];
        if (!t->server && n_pids && pids[i] > 0) {
            t->server = &servers[n_servers++];
            *t->server = (struct server){.pid = pids[i], .ok = 1};
        }
        t->bytes = calloc(blocks, sizeof(double));
        t->seconds = calloc(blocks, sizeof(double));
        t->cpu = calloc(blocks, sizeof(double));
        char header[9];
        uint64_t le_size = size; /* little endian on every Linux target we run on */
        memcpy(header, &le_size, 8);
        header[8] = methods ? methods[i] : 'w';
        send_all(t->fd, header, source ? 9 : 8);
    }

    double slice = slice_ms / 1e3, run_start = now(), wait_start = own_wait_ns();
    for (int round = -WARMUP_ROUNDS; round < slices; round++) {
        int block = round < 0 ? -1 : (int)((long)round * blocks / slices);
        for (int i = 0; i < n_targets; i++) {
            struct target *t = &targets[i];
            struct server *s = t->server;
            double cpu = s && s->ok ? process_cpu(s->pid) : 0;
            if (cpu < 0)
                s->ok = 0;
            /* The CPU since the server's previous reading belongs to the
             * target and block of the slice that began there; the first
             * measured slice starts the count. */
            if (s && s->ok) {
                if (s->owner)
                    s->owner->cpu[s->owner_block] += cpu - s->cpu_mark;
                s->cpu_mark = cpu;
                s->owner = block >= 0 ? t : NULL;
                s->owner_block = block;
            }
            double start = now();
            double bytes = source ? source_slice(t, buf, slice) : oneway_slice(t, buf, size, slice);
            if (block >= 0) {
                t->bytes[block] += bytes;
                t->seconds[block] += now() - start;
            }
        }
    }
    for (int j = 0; j < n_servers; j++) { /* the last slices' CPU, up to now */
        struct server *s = &servers[j];
        double cpu = s->ok ? process_cpu(s->pid) : -1;
        if (cpu >= 0 && s->owner)
            s->owner->cpu[s->owner_block] += cpu - s->cpu_mark;
        else
            s->ok = 0;
    }
    double client_wait = (own_wait_ns() - wait_start) * 1e-9 / (now() - run_start);

    printf("{\"mode\": \"%s\", \"size\": %zu, \"slice_ms\": %g, \"slices\": %d, \"blocks\": %d, "
           "\"client_wait\": %.4f, \"targets\": [", mode, size, slice_ms, slices, blocks, client_wait);
    for (int i = 0; i < n_targets; i++) {
        struct target *t = &targets[i];
        printf("%s{\"port\": %d, \"bytes\": [", i ? ", " : "", ports[i]);
        for (int b = 0; b < blocks; b++)
            printf("%s%.0f", b ? ", " : "", t->bytes[b]);
        printf("], \"duration\": [");
        for (int b = 0; b < blocks; b++)
            printf("%s%.6f", b ? ", " : "", t->seconds[b]);
        printf("], \"cpu\": ");
        if (t->server && t->server->ok) {
            printf("[");
            for (int b = 0; b < blocks; b++)
                printf("%s%.6f", b ? ", " : "", t->cpu[b]);
            printf("]");
        } else {
            printf("null");
        }
        printf("}");
    }
    printf("]}\n");
    fflush(stdout);
    return 0;
}

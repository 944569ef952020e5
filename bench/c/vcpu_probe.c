/*
 * vcpu_probe: how much CPU the two vCPUs get right now, and how fast one
 * wakes the other (bench/modes.py runs it between rounds; docs/benchmarks.md,
 * "The two modes of large transfers").
 *
 *   speed:  one thread pinned to each CPU spins on a fixed loop for -t ms;
 *           blocks of 1024 additions per ms of the thread's own CPU time.  A guest counts
 *           time the host gives its vCPU to someone else as the thread's CPU
 *           time (no steal time is reported here), so a lower figure means
 *           the vCPU got less of a physical CPU; "share" is CPU time / wall
 *           time (below 100% when other guest tasks ran there).
 *   wakeup: a thread on CPU A writes one byte to a pipe, a thread on CPU B
 *           blocked in read() wakes and answers on a second pipe: -n round
 *           trips, median and 90th percentile in µs.  Both threads sleep in
 *           between, as a loopback sender and receiver do.
 *   xfer:   a thread on CPU B fills 64 KiB chunks of a 4 MiB ring, one on
 *           CPU A copies each out (a loopback transfer without the kernel:
 *           data written on one vCPU, read on the other) for -x ms; GB/s.
 *           On a host that moves the two vCPUs between cores sharing a
 *           cache and cores that do not, it changes several-fold from one
 *           second to the next (docs/benchmarks.md, "Interleaved slices").
 *
 * usage: vcpu_probe [-a cpu] [-b cpu] [-t spin_ms] [-n round_trips] [-x xfer_ms]
 *        vcpu_probe -T seconds [-a cpu] [-b cpu]: only xfer, one figure per
 *                   50 ms for that long (a timeline), space-separated GB/s
 * prints: {"speed":[a,b],"share":[a,b],"wakeup_p50_us":x,"wakeup_p90_us":y,"xfer_gbs":z}
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int cpus[2] = {0, 1}, n_trips = 2000;
static double spin_ms = 100;
static double speed[2], share[2];
static int ping[2], pong[2];
static pthread_barrier_t start;

static double now(clockid_t id)
{
    struct timespec t;
    clock_gettime(id, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

static void *spinner(void *arg)
{
    int i = (int)(intptr_t)arg;
    pin(cpus[i]);
    pthread_barrier_wait(&start);
    volatile uint64_t x = 0;
    uint64_t blocks = 0;
    double wall0 = now(CLOCK_MONOTONIC), cpu0 = now(CLOCK_THREAD_CPUTIME_ID);
    double end = wall0 + spin_ms / 1000;
    do {
        for (int k = 0; k < 1024; k++)
            x += k;
        blocks++;
    } while (now(CLOCK_MONOTONIC) < end);
    double cpu = now(CLOCK_THREAD_CPUTIME_ID) - cpu0, wall = now(CLOCK_MONOTONIC) - wall0;
    speed[i] = blocks / (cpu * 1e3);
    share[i] = cpu / wall;
    return NULL;
}

static void *answerer(void *arg)
{
    char c;
    pin(cpus[1]);
    pthread_barrier_wait(&start);
    while (read(ping[0], &c, 1) == 1)
        if (write(pong[1], &c, 1) != 1)
            break;
    return NULL;
}

#define XFER_CHUNK (64 * 1024)
#define XFER_CHUNKS 64
static char *xfer_ring;
static atomic_long xfer_filled, xfer_taken;
static atomic_int xfer_stop;

static void *xfer_producer(void *arg)
{
    pin(cpus[1]);
    char value = 0;
    for (long i = 0; !atomic_load(&xfer_stop); i++) {
        while (i - atomic_load(&xfer_taken) >= XFER_CHUNKS)
            if (atomic_load(&xfer_stop))
                return NULL;
        memset(xfer_ring + (i % XFER_CHUNKS) * XFER_CHUNK, value++, XFER_CHUNK);
        atomic_store(&xfer_filled, i + 1);
    }
    return NULL;
}

/* Cross-CPU copy rate, GB/s, over each of `n` windows of `window_s`. */
static void xfer(double *rates, int n, double window_s)
{
    static char out[XFER_CHUNK];
    xfer_ring = calloc(XFER_CHUNKS, XFER_CHUNK);
    atomic_store(&xfer_filled, 0);
    atomic_store(&xfer_taken, 0);
    atomic_store(&xfer_stop, 0);
    pthread_t producer;
    pthread_create(&producer, NULL, xfer_producer, NULL);
    pin(cpus[0]);
    long taken = 0;
    for (int w = 0; w < n; w++) {
        double t0 = now(CLOCK_MONOTONIC), bytes = 0;
        while (now(CLOCK_MONOTONIC) - t0 < window_s) {
            while (atomic_load(&xfer_filled) <= taken)
                ;
            memcpy(out, xfer_ring + (taken % XFER_CHUNKS) * XFER_CHUNK, XFER_CHUNK);
            __asm__ volatile("" : : "r"(out) : "memory"); /* keep the copy */
            atomic_store(&xfer_taken, ++taken);
            bytes += XFER_CHUNK;
        }
        rates[w] = bytes / (now(CLOCK_MONOTONIC) - t0) / 1e9;
    }
    atomic_store(&xfer_stop, 1);
    pthread_join(producer, NULL);
    free(xfer_ring);
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int opt;
    double xfer_ms = 50, timeline_s = 0;
    while ((opt = getopt(argc, argv, "a:b:t:n:x:T:")) != -1) {
        if (opt == 'a') cpus[0] = atoi(optarg);
        else if (opt == 'b') cpus[1] = atoi(optarg);
        else if (opt == 't') spin_ms = atof(optarg);
        else if (opt == 'n') n_trips = atoi(optarg);
        else if (opt == 'x') xfer_ms = atof(optarg);
        else if (opt == 'T') timeline_s = atof(optarg);
        else {
            fprintf(stderr, "usage: %s [-a cpu] [-b cpu] [-t spin_ms] [-n round_trips] "
                            "[-x xfer_ms] | -T seconds\n", argv[0]);
            return 2;
        }
    }
    if (n_trips < 1 || spin_ms <= 0 || xfer_ms <= 0 || timeline_s < 0)
        return 2;
    if (timeline_s > 0) {
        int n = (int)(timeline_s / 0.05);
        double *rates = malloc((n > 0 ? n : 1) * sizeof *rates);
        xfer(rates, n, 0.05);
        for (int i = 0; i < n; i++)
            printf("%s%.1f", i ? " " : "", rates[i]);
        printf("\n");
        return 0;
    }
    pthread_t t[2];
    pthread_barrier_init(&start, NULL, 2);
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, spinner, (void *)(intptr_t)i);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);

    double *rtt = malloc(n_trips * sizeof *rtt);
    if (!rtt || pipe(ping) || pipe(pong))
        return 1;
    pthread_barrier_init(&start, NULL, 2);
    pthread_create(&t[1], NULL, answerer, NULL);
    pin(cpus[0]);
    pthread_barrier_wait(&start);
    char c = 'x';
    for (int i = 0; i < n_trips; i++) {
        double t0 = now(CLOCK_MONOTONIC);
        if (write(ping[1], &c, 1) != 1 || read(pong[0], &c, 1) != 1)
            return 1;
        rtt[i] = (now(CLOCK_MONOTONIC) - t0) * 1e6;
    }
    close(ping[1]);
    pthread_join(t[1], NULL);
    qsort(rtt, n_trips, sizeof *rtt, cmp);
    double xfer_gbs;
    xfer(&xfer_gbs, 1, xfer_ms / 1e3);
    printf("{\"speed\":[%.1f,%.1f],\"share\":[%.2f,%.2f],\"wakeup_p50_us\":%.1f,"
           "\"wakeup_p90_us\":%.1f,\"xfer_gbs\":%.1f}\n", speed[0], speed[1], share[0], share[1],
           rtt[n_trips / 2], rtt[n_trips * 9 / 10], xfer_gbs);
    return 0;
}

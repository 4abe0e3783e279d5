// Workloads of the per-event benchmark (bench/events.py), compiled by the bench with gcc.
//   loops getpid N CPU     N getpid(2) calls
//   loops openat N CPU     N openat(2) of a path that does not exist (ENOENT)
//   loops pingpong N CPU   N round trips of one byte between two processes over two pipes,
//                          both pinned to CPU: each round trip is two context switches
// Prints the CPU time spent per operation (per call, or per context switch) in ns: the median
// over CHUNKS equal slices of the run, so that a slice disturbed by a neighbour (an interrupt
// storm, a cache flushed by another process) does not move the figure. CPU time, not wall
// time: time other processes take on the CPU is not ours, while the BPF programs run in our
// context (or our partner's) and are counted.
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set)) {
        perror("sched_setaffinity");
        exit(1);
    }
}

static double cpu_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

#define CHUNKS 21

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// The median over chunks of (CPU time the chunk took) / ops.
static double median_per_op(const double *mark, long ops)
{
    double per_op[CHUNKS];
    for (int k = 0; k < CHUNKS; k++)
        per_op[k] = (mark[k + 1] - mark[k]) / ops;
    qsort(per_op, CHUNKS, sizeof(double), by_value);
    return per_op[CHUNKS / 2];
}

static void transfer(int in, int out, char *byte)
{
    if (in >= 0 && read(in, byte, 1) != 1) {
        perror("read");
        exit(1);
    }
    if (out >= 0 && write(out, byte, 1) != 1) {
        perror("write");
        exit(1);
    }
}

// Both sides stamp their own CPU time at the same round trip (the protocol keeps them in
// step); a chunk's cost is the sum of both sides' time, whichever side the kernel charged.
static double pingpong(long per_chunk)
{
    int ping[2], pong[2];
    char byte = 0;
    double mine[CHUNKS + 1], *theirs = mmap(NULL, sizeof(mine), PROT_READ | PROT_WRITE,
                                            MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (theirs == MAP_FAILED || pipe(ping) || pipe(pong)) {
        perror("setup");
        exit(1);
    }
    pid_t child = fork();
    if (child < 0) {
        perror("fork");
        exit(1);
    }
    if (child == 0) {
        for (int k = 0; k < CHUNKS; k++) {
            for (long i = 0; i < per_chunk; i++) {
                if (i == 0)
                    theirs[k] = cpu_ns(CLOCK_THREAD_CPUTIME_ID);
                transfer(ping[0], pong[1], &byte);
            }
        }
        transfer(ping[0], -1, &byte);
        theirs[CHUNKS] = cpu_ns(CLOCK_THREAD_CPUTIME_ID);
        _exit(0);
    }
    for (int k = 0; k < CHUNKS; k++) {
        mine[k] = cpu_ns(CLOCK_THREAD_CPUTIME_ID);
        for (long i = 0; i < per_chunk; i++) {
            transfer(-1, ping[1], &byte);
            transfer(pong[0], -1, &byte);
        }
    }
    mine[CHUNKS] = cpu_ns(CLOCK_THREAD_CPUTIME_ID);
    transfer(-1, ping[1], &byte);
    int status;
    waitpid(child, &status, 0);
    for (int k = 0; k <= CHUNKS; k++)
        mine[k] += theirs[k];
    return median_per_op(mine, 2 * per_chunk);  // two switches per round trip
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: %s getpid|openat|pingpong N CPU\n", argv[0]);
        return 2;
    }
    long per_chunk = atol(argv[2]) / CHUNKS;
    pin(atoi(argv[3]));
    if (!strcmp(argv[1], "pingpong")) {
        printf("%.1f\n", pingpong(per_chunk));
        return 0;
    }
    double mark[CHUNKS + 1];
    int openat = !strcmp(argv[1], "openat");
    if (!openat && strcmp(argv[1], "getpid")) {
        fprintf(stderr, "unknown workload %s\n", argv[1]);
        return 2;
    }
    for (int k = 0; k < CHUNKS; k++) {
        mark[k] = cpu_ns(CLOCK_THREAD_CPUTIME_ID);
        for (long i = 0; i < per_chunk; i++) {
            if (openat)
                syscall(SYS_openat, AT_FDCWD, "/nonexistent/bcc_exporter_bench", O_RDONLY);
            else
                syscall(SYS_getpid);
        }
    }
    mark[CHUNKS] = cpu_ns(CLOCK_THREAD_CPUTIME_ID);
    printf("%.1f\n", median_per_op(mark, per_chunk));
    return 0;
}

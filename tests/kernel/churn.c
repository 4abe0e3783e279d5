// Churn as a noisy neighbour makes it, fast: short-lived processes, each with a comm of its own,
// and cgroups made, used and removed. Built by tests/kernel/churn.py.
//
//   churn comms PREFIX N PATH    N processes named PREFIX<i>, each opening PATH once, then
//                                exiting (PATH missing: a failed open, ENOENT)
//   churn cgroups DIR N CALLS    N cgroups DIR/c<i>: a process moves itself into each, makes
//                                CALLS getppid() calls and exits, then the cgroup is removed;
//                                prints each cgroup's id (its inode number)
//   churn storm PREFIX SECONDS PATH
//                                as comms, for SECONDS, however many that makes; prints it
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void reap(pid_t pid)
{
    int status;
    if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status) || WEXITSTATUS(status)) {
        fprintf(stderr, "churn: child %d failed\n", pid);
        exit(1);
    }
}

static void named_open(const char *prefix, long i, const char *path)
{
    pid_t pid = fork();
    if (pid < 0) {
        perror("churn: fork");
        exit(1);
    }
    if (pid == 0) {
        char comm[32];  // PR_SET_NAME keeps the first 15 bytes
        snprintf(comm, sizeof(comm), "%s%ld", prefix, i);
        prctl(PR_SET_NAME, comm, 0, 0, 0);
        int fd = open(path, O_RDONLY);
        if (fd >= 0)
            close(fd);
        _exit(0);
    }
    reap(pid);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void cgroup_once(const char *dir, long i, long calls)
{
    char path[4096], procs[4200];
    snprintf(path, sizeof(path), "%s/c%ld", dir, i);
    struct stat made;
    if (mkdir(path, 0755) || stat(path, &made)) {
        perror("churn: mkdir");
        exit(1);
    }
    printf("%lu\n", (unsigned long)made.st_ino);  // its cgroup id
    snprintf(procs, sizeof(procs), "%s/cgroup.procs", path);
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = fopen(procs, "w");
        if (!f || fprintf(f, "%d\n", getpid()) < 0 || fclose(f))
            _exit(2);
        for (long c = 0; c < calls; c++)
            getppid();
        _exit(0);
    }
    reap(pid);
    // The exit takes the process out of the cgroup a moment later: EBUSY until then.
    for (int tries = 0; rmdir(path); tries++) {
        if (errno != EBUSY || tries > 5000) {
            perror("churn: rmdir");
            exit(1);
        }
        usleep(1000);
    }
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "comms")) {
        long n = atol(argv[3]);
        for (long i = 0; i < n; i++)
            named_open(argv[2], i, argv[4]);
        return 0;
    }
    if (argc == 5 && !strcmp(argv[1], "cgroups")) {
        long n = atol(argv[3]), calls = atol(argv[4]);
        for (long i = 0; i < n; i++)
            cgroup_once(argv[2], i, calls);
        return 0;
    }
    if (argc == 5 && !strcmp(argv[1], "storm")) {
        double until = now() + atof(argv[3]);
        long i = 0;
        while (now() < until)
            named_open(argv[2], i++, argv[4]);
        printf("%ld\n", i);
        return 0;
    }
    fprintf(stderr, "usage: churn comms PREFIX N PATH | cgroups DIR N CALLS | storm PREFIX SECONDS PATH\n");
    return 2;
}

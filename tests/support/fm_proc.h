/* fm_proc: test helpers for integration tests that start real daemons (header-only).
 * Children get their stdout+stderr in a log file, are killed and reaped by
 * fm_proc_reap_all() at the end, and every wait is bounded. Loopback only. */
#ifndef FM_PROC_H
#define FM_PROC_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define FM_PROC_MAX 32

/* The children a test started (test-local bookkeeping). */
typedef struct {
    pid_t pids[FM_PROC_MAX];
    int n;
} fm_proc_set_t;

static inline double fm_proc_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static inline void fm_proc_sleep(double s)
{
    struct timespec t = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    nanosleep(&t, NULL);
}

/* Start argv[0] (a path) with argv and environ: stdin from /dev/null, stdout to `out` and
 * stderr to `err` (NULL: /dev/null; err may equal out: one file), appended or (trunc)
 * truncated. The child is fork()ed with PR_SET_PDEATHSIG = SIGKILL before exec, so a test
 * that crashes or aborts (ASan's abort_on_error) never leaves a daemon holding its ports:
 * the kernel kills it when the spawning thread dies (spawn from the test's main thread).
 * Returns the pid, or -1. The pid is remembered in `set` for reaping. */
static inline pid_t fm_proc_spawn_io(fm_proc_set_t *set, char *const argv[], const char *out,
                                     const char *err, int trunc)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) { /* only async-signal-safe calls until exec */
        int flags = O_WRONLY | O_CREAT | (trunc ? O_TRUNC : O_APPEND);
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
            _exit(127); /* the parent is already gone */
        int in = open("/dev/null", O_RDONLY);
        int o = open(out ? out : "/dev/null", flags, 0644);
        int e = err && out && strcmp(err, out) == 0 ? o
                                                    : open(err ? err : "/dev/null", flags, 0644);
        if (in < 0 || o < 0 || e < 0 || dup2(in, 0) < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
            _exit(127);
        execve(argv[0], argv, environ);
        _exit(127);
    }
    if (set && set->n < FM_PROC_MAX)
        set->pids[set->n++] = pid;
    return pid;
}

/* Start argv[0] (a path) with argv, stdout and stderr appended to `log` (may be NULL: to
 * /dev/null). Returns the pid, or -1 (fm_proc_spawn_io). */
static inline pid_t fm_proc_spawn(fm_proc_set_t *set, char *const argv[], const char *log)
{
    return fm_proc_spawn_io(set, argv, log, log, 0);
}

/* Wait up to timeout_s for pid to exit. Returns its wait status, or -1 on timeout. */
static inline int fm_proc_wait(pid_t pid, double timeout_s)
{
    double end = fm_proc_now() + timeout_s;
    for (;;) {
        int status = 0;
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid)
            return status;
        if (r < 0)
            return -1;
        if (fm_proc_now() > end)
            return -1;
        fm_proc_sleep(0.02);
    }
}

/* Send sig, wait up to timeout_s; if still alive, SIGKILL and wait. Returns wait status. */
static inline int fm_proc_stop(pid_t pid, int sig, double timeout_s)
{
    kill(pid, sig);
    int st = fm_proc_wait(pid, timeout_s);
    if (st == -1) {
        kill(pid, SIGKILL);
        st = fm_proc_wait(pid, 5.0);
    }
    return st;
}

/* Kill (SIGKILL) and reap every child still running in the set. */
static inline void fm_proc_reap_all(fm_proc_set_t *set)
{
    for (int i = 0; i < set->n; i++) {
        if (waitpid(set->pids[i], NULL, WNOHANG) == 0) {
            kill(set->pids[i], SIGKILL);
            waitpid(set->pids[i], NULL, 0);
        }
    }
    set->n = 0;
}

/* Poll cond(arg) every 20 ms until it returns non-zero or timeout_s passes.
 * Returns 1 if the condition held, 0 on timeout. */
static inline int fm_proc_wait_for(int (*cond)(void *), void *arg, double timeout_s)
{
    double end = fm_proc_now() + timeout_s;
    do {
        if (cond(arg))
            return 1;
        fm_proc_sleep(0.02);
    } while (fm_proc_now() < end);
    return cond(arg);
}

/* Test ports are reserved, not just found free: each test process takes a block of
 * FM_PROC_PORT_BLOCK ports from [FM_PROC_PORT_BASE, FM_PROC_PORT_BASE + FM_PROC_PORT_BLOCK *
 * FM_PROC_PORT_BLOCKS), below the kernel's ephemeral range (32768-60999 by default, checked
 * at first use), so no connecting socket of anyone is ever given one of them, and holds the
 * block with an flock on /tmp/fedmq-test-ports.<block>.lock for its whole life (released by
 * the kernel when it exits, even after a crash): two tests running in parallel never share a
 * port, and there is no gap between "found free" and "bound" in which another test could
 * take it. Within its block a process hands ports out in turn (wrapping around), each one
 * checked bindable first (a daemon of an earlier test case in TIME_WAIT is fine: ZeroMQ
 * binds with SO_REUSEADDR). */
#define FM_PROC_PORT_BASE 20000
#define FM_PROC_PORT_BLOCK 64
#define FM_PROC_PORT_BLOCKS 150

/* 1 if a listening TCP socket can be bound to 127.0.0.1:port right now. */
static inline int fm_proc_port_bindable(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return 0;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    int ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

/* The first port of this process's block (taken on first use), or -1 if none is free. */
static inline int fm_proc_port_block(void)
{
    static int first = 0; /* test-process bookkeeping: set once */
    if (first)
        return first;
    FILE *r = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r");
    int lo = 32768, hi = 60999;
    if (r) {
        if (fscanf(r, "%d %d", &lo, &hi) != 2)
            lo = 32768;
        fclose(r);
    }
    for (int b = 0; b < FM_PROC_PORT_BLOCKS; b++) {
        int base = FM_PROC_PORT_BASE + b * FM_PROC_PORT_BLOCK;
        if (base + FM_PROC_PORT_BLOCK > lo && base <= hi)
            break; /* never inside the ephemeral range */
        char path[64];
        snprintf(path, sizeof path, "/tmp/fedmq-test-ports.%d.lock", b);
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
        if (fd < 0)
            continue;
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            return first = base; /* fd stays open: the lock lives as long as the process */
        close(fd);
    }
    return -1;
}

/* A port on 127.0.0.1 reserved for this test process (see above); -1 if none. */
static inline int fm_proc_free_port(void)
{
    static int next = 0; /* test-process bookkeeping */
    int base = fm_proc_port_block();
    if (base < 0)
        return -1;
    for (int tries = 0; tries < FM_PROC_PORT_BLOCK; tries++) {
        int port = base + next;
        next = (next + 1) % FM_PROC_PORT_BLOCK;
        if (fm_proc_port_bindable(port))
            return port;
    }
    return -1;
}

/* The --set override "<daemon>.metrics_addr=127.0.0.1:PORT" (into buf, returned) with PORT
 * reserved for this test process (fm_proc_free_port; -1 if none, in *port if port is not
 * NULL). The daemons serve /metrics by default on fixed ports (127.0.0.1:9561-9564): every
 * test that starts a daemon passes this (or "<daemon>.metrics_addr=off"), so tests running
 * in parallel never race for those ports. `daemon`: broker, trainer, aggregator, evaluator. */
static inline char *fm_proc_metrics_set(char *buf, size_t cap, const char *daemon, int *port)
{
    int p = fm_proc_free_port();
    if (port)
        *port = p;
    snprintf(buf, cap, "%s.metrics_addr=127.0.0.1:%d", daemon, p);
    return buf;
}

/* mkdtemp under $TMPDIR (or /tmp): writes the path into buf. 0 or -1. */
static inline int fm_proc_tmpdir(char *buf, size_t cap)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(buf, cap, "%s/fedmq-test-XXXXXX", base);
    return mkdtemp(buf) ? 0 : -1;
}

static inline int fm_proc_rm_one_(const char *path, const struct stat *st, int flag,
                                  struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* Remove dir and everything below it (test temp dirs only). 0, or -1 if something
 * could not be removed. */
static inline int fm_proc_rmtree(const char *dir)
{
    return nftw(dir, fm_proc_rm_one_, 16, FTW_DEPTH | FTW_PHYS);
}

/* 1 if the file at path contains the substring needle (e.g. a daemon log line). */
static inline int fm_proc_file_contains(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, needle) != NULL;
    fclose(f);
    return found;
}

/* Poll (every 20 ms, at most timeout_s) until the file at path contains needle: 1, or 0 on
 * timeout. */
static inline int fm_proc_wait_file_contains(const char *path, const char *needle,
                                             double timeout_s)
{
    double end = fm_proc_now() + timeout_s;
    while (!fm_proc_file_contains(path, needle)) {
        if (fm_proc_now() > end)
            return 0;
        fm_proc_sleep(0.02);
    }
    return 1;
}

/* How many lines of the file at path contain needle ("" counts every line); 0 if the file
 * is missing. */
static inline int fm_proc_file_count(const char *path, const char *needle)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f))
        n += strstr(line, needle) != NULL;
    fclose(f);
    return n;
}

#endif

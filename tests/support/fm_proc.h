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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

/* Start argv[0] (a path) with argv, stdout and stderr appended to `log` (may be NULL: to
 * /dev/null). Returns the pid, or -1. The pid is remembered in `set` for reaping. */
static inline pid_t fm_proc_spawn(fm_proc_set_t *set, char *const argv[], const char *log)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    const char *out = log ? log : "/dev/null";
    posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0)
        return -1;
    if (set && set->n < FM_PROC_MAX)
        set->pids[set->n++] = pid;
    return pid;
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

/* A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it back). */
static inline int fm_proc_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
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

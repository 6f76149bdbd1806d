/* notify-dummy: a stand-in Type=notify daemon for scripts/systemd-e2e.sh --selftest.
 * Sends READY=1 to $NOTIFY_SOCKET, then WATCHDOG=1 every 2 s; exits 0 on SIGTERM.
 * No libsystemd (built static so it runs in any root). */
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static volatile sig_atomic_t stop;
static void on_term(int s)
{
    (void)s;
    stop = 1;
}

static int notify(const char *msg)
{
    const char *p = getenv("NOTIFY_SOCKET");
    if (!p || !*p)
        return -1;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t n = strlen(p);
    if (n >= sizeof sa.sun_path)
        return -1;
    memcpy(sa.sun_path, p, n);
    if (sa.sun_path[0] == '@')
        sa.sun_path[0] = 0;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    ssize_t r = sendto(fd, msg, strlen(msg), 0, (struct sockaddr *)&sa,
                       (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n));
    close(fd);
    return r < 0 ? -1 : 0;
}

int main(void)
{
    signal(SIGTERM, on_term);
    if (notify("READY=1\nSTATUS=notify-dummy running") < 0) {
        fprintf(stderr, "notify-dummy: no NOTIFY_SOCKET or send failed\n");
        return 1;
    }
    fprintf(stderr, "notify-dummy: READY=1 sent, pid %d\n", (int)getpid());
    while (!stop) {
        notify("WATCHDOG=1");
        sleep(2);
    }
    notify("STOPPING=1");
    return 0;
}

/* fm_metrics_http: /metrics over libmicrohttpd (see fm_metrics_http.h). */
#include "fm_metrics_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm_log.h"
#include "fm_parse.h"

#define S_BACKLOG 16

struct fm_metrics_http {
    fm_metrics_t *metrics; /* borrowed */
    struct MHD_Daemon *mhd;
};

/* ---- the address ----------------------------------------------------------------------------
 */

static int s_bad_addr(char *why, size_t cap)
{
    if (why)
        snprintf(why, cap,
                 "not HOST:PORT (an IPv4 address or [IPv6 address], a port 1-65535) or off");
    return FM_EARG;
}

int fm_metrics_addr_parse(const char *text, fm_metrics_addr_t *out, char *why, size_t cap)
{
    FM_ASSERT(out);
    memset(out, 0, sizeof *out);
    if (!text || !*text || strcmp(text, "off") == 0)
        return 0;
    const char *colon = strrchr(text, ':');
    if (!colon || colon == text)
        return s_bad_addr(why, cap);
    char host[INET6_ADDRSTRLEN + 2];
    size_t hn = (size_t)(colon - text);
    int v6 = text[0] == '[';
    if (v6 && (hn < 3 || text[hn - 1] != ']'))
        return s_bad_addr(why, cap);
    if (v6) { /* "[...]" without the brackets */
        text++;
        hn -= 2;
    }
    if (hn >= sizeof host)
        return s_bad_addr(why, cap);
    memcpy(host, text, hn);
    host[hn] = '\0';
    long port;
    const char *digits = colon + 1;
    while (*digits >= '0' && *digits <= '9')
        digits++;
    if (*digits || fm_parse_int("port", colon + 1, 1, 65535, &port, NULL) != 0)
        return s_bad_addr(why, cap); /* digits only: no sign */
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&out->sa;
        if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
            return s_bad_addr(why, cap);
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        out->salen = sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&out->sa;
        if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
            return s_bad_addr(why, cap);
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        out->salen = sizeof *a;
    }
    out->port = (int)port;
    out->enabled = true;
    return 0;
}

/* ---- HTTP ------------------------------------------------------------------------------------
 */

static enum MHD_Result s_reply(struct MHD_Connection *c, unsigned int status, const char *text)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(strlen(text), (void *)text,
                                                             MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

/* Every request, on libmicrohttpd's thread: answered at its first call (a body, if any, is
 * not read: the connection is closed after the reply). */
static enum MHD_Result s_on_request(void *cls, struct MHD_Connection *c, const char *url,
                                    const char *method, const char *version,
                                    const char *upload_data, size_t *upload_data_size,
                                    void **con_cls)
{
    fm_metrics_http_t *h = cls;
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)con_cls;
    if (strcmp(url, "/metrics") != 0)
        return s_reply(c, MHD_HTTP_NOT_FOUND, "not found: only /metrics is served\n");
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return s_reply(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed: use GET\n");
    char *text = NULL;
    size_t len = 0;
    if (fm_metrics_render(h->metrics, &text, &len) != 0)
        return s_reply(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory\n");
    struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
    if (!r) {
        free(text);
        return MHD_NO;
    }
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, FM_METRICS_CONTENT_TYPE);
    enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, r);
    MHD_destroy_response(r);
    return ok;
}

static void s_on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    FM_LOG(LOG_WARNING, "metrics http: %s", line);
}

/* "broker.metrics_addr" -> "[broker] metrics_addr" into buf. */
static const char *s_key_name(const char *key, char *buf, size_t cap)
{
    const char *dot = key ? strchr(key, '.') : NULL;
    if (dot)
        snprintf(buf, cap, "[%.*s] %s", (int)(dot - key), key, dot + 1);
    else
        snprintf(buf, cap, "%s", key ? key : "metrics_addr");
    return buf;
}

/* A listening TCP socket on `a`; -errno with the reason in `e`. */
static int s_listen(const fm_metrics_addr_t *a, const char *name, const char *addr,
                    fm_errmsg_t *e)
{
    int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int en = errno;
        return fm_errmsg_set(e, -en, "%s = %s: cannot create the socket: %s", name, addr,
                             strerror(en));
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one); /* restart during TIME_WAIT */
    const char *verb = "bind";
    if (bind(fd, (const struct sockaddr *)&a->sa, a->salen) != 0 ||
        (verb = "listen", listen(fd, S_BACKLOG) != 0)) {
        int en = errno;
        close(fd);
        return fm_errmsg_set(e, -en, "%s = %s: cannot %s: %s", name, addr, verb, strerror(en));
    }
    return fd;
}

fm_metrics_http_t *fm_metrics_http_start(fm_metrics_t *m, const char *key, const char *addr,
                                         int *err, fm_errmsg_t *e)
{
    char name[96], why[160];
    s_key_name(key, name, sizeof name);
    fm_metrics_addr_t a;
    int rc = fm_metrics_addr_parse(addr, &a, why, sizeof why);
    int fd = -1;
    fm_metrics_http_t *h = NULL;
    if (rc == 0 && !a.enabled)
        snprintf(why, sizeof why, "metrics are off");
    if (rc != 0 || !a.enabled) {
        rc = fm_errmsg_set(e, FM_EARG, "%s = %s: %s", name, addr ? addr : "", why);
        goto cleanup;
    }
    if (!(h = calloc(1, sizeof *h))) {
        rc = fm_errmsg_set(e, -ENOMEM, "%s: out of memory", name);
        goto cleanup;
    }
    h->metrics = m;
    if ((fd = s_listen(&a, name, addr, e)) < 0) {
        rc = fd;
        goto cleanup;
    }
    /* the server thread inherits this thread's mask: keep the daemon's signals off it */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    h->mhd = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        s_on_request, h, MHD_OPTION_EXTERNAL_LOGGER, s_on_mhd_log, NULL, MHD_OPTION_LISTEN_SOCKET,
        (MHD_socket)fd, MHD_OPTION_CONNECTION_LIMIT, (unsigned int)FM_METRICS_HTTP_CONNS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)FM_METRICS_HTTP_TIMEOUT_S, MHD_OPTION_END);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!h->mhd) {
        rc = fm_errmsg_set(e, -EIO, "%s = %s: the HTTP server (libmicrohttpd) did not start",
                           name, addr);
        goto cleanup;
    }
    fd = -1; /* libmicrohttpd's now: MHD_stop_daemon closes it */
cleanup:
    if (fd >= 0)
        close(fd);
    if (rc != 0) {
        fm_metrics_http_stop(&h);
        if (err)
            *err = rc;
    }
    return h;
}

void fm_metrics_http_stop(fm_metrics_http_t **p)
{
    if (!p || !*p)
        return;
    if ((*p)->mhd)
        MHD_stop_daemon((*p)->mhd);
    free(*p);
    *p = NULL;
}

/* fm_http: a minimal HTTP/1.0 client for tests (header-only, loopback only): one request on a
 * fresh TCP connection to 127.0.0.1:port, the whole response read until the server closes,
 * every step bounded by a timeout; and the samples of a Prometheus text exposition. */
#ifndef FM_HTTP_H
#define FM_HTTP_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define FM_HTTP_TIMEOUT_S 10
#define FM_HTTP_MAX (4 << 20) /* bytes of a response */

typedef struct {
    int status;      /* e.g. 200 */
    char *head;      /* status line and headers, NUL-terminated (owned) */
    char *body;      /* NUL-terminated (owned) */
    size_t body_len; /* bytes of the body */
} fm_http_resp_t;

static inline void fm_http_free(fm_http_resp_t *r)
{
    free(r->head);
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* `method` `path` to 127.0.0.1:port. 0 with *r filled (free with fm_http_free), or -1
 * (connect, send or receive failed, timed out, or the response is not HTTP). */
static inline int fm_http_request(int port, const char *method, const char *path,
                                  fm_http_resp_t *r)
{
    memset(r, 0, sizeof *r);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = {FM_HTTP_TIMEOUT_S, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    char req[512];
    int n = snprintf(req, sizeof req, "%s %s HTTP/1.0\r\nHost: 127.0.0.1:%d\r\n\r\n", method,
                     path, port);
    char *buf = NULL;
    size_t len = 0;
    int rc = -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 || n <= 0 ||
        send(fd, req, (size_t)n, MSG_NOSIGNAL) != n)
        goto cleanup;
    if (!(buf = malloc(FM_HTTP_MAX + 1)))
        goto cleanup;
    for (;;) {
        ssize_t got = recv(fd, buf + len, FM_HTTP_MAX - len, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            goto cleanup;
        if (got == 0)
            break;
        len += (size_t)got;
        if (len == FM_HTTP_MAX)
            goto cleanup;
    }
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    if (!sep || sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1)
        goto cleanup;
    size_t hlen = (size_t)(sep - buf);
    r->head = strndup(buf, hlen);
    r->body_len = len - hlen - 4;
    r->body = malloc(r->body_len + 1);
    if (!r->head || !r->body)
        goto cleanup;
    memcpy(r->body, sep + 4, r->body_len);
    r->body[r->body_len] = '\0';
    rc = 0;
cleanup:
    if (rc != 0)
        fm_http_free(r);
    free(buf);
    close(fd);
    return rc;
}

/* The value of header `name` in r->head into buf[0..cap) (case-insensitive name); 1 if
 * present. */
static inline int fm_http_header(const fm_http_resp_t *r, const char *name, char *buf, size_t cap)
{
    size_t n = strlen(name);
    for (const char *p = r->head ? strstr(r->head, "\r\n") : NULL; p; p = strstr(p, "\r\n")) {
        p += 2;
        if (strncasecmp(p, name, n) == 0 && p[n] == ':') {
            const char *v = p + n + 1, *end = strstr(v, "\r\n");
            while (*v == ' ')
                v++;
            size_t len = end ? (size_t)(end - v) : strlen(v);
            snprintf(buf, cap, "%.*s", (int)len, v);
            return 1;
        }
    }
    return 0;
}

/* The value of the sample `series` (the exact text before the value: a name, or a name with
 * its labels as rendered, e.g. "fedmq_updates_rejected_total{reason=\"shape\"}") in the
 * exposition `text`: 1 with *v set, 0 if there is no such line. */
static inline int fm_http_sample(const char *text, const char *series, double *v)
{
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
        if (strncmp(p, series, n) == 0 && p[n] == ' ') {
            *v = strtod(p + n + 1, NULL);
            return 1;
        }
    }
    return 0;
}

/* GET /metrics from 127.0.0.1:port once: the value of `series` (as fm_http_sample), or -1
 * when the request failed or the series is absent. */
static inline double fm_http_metric(int port, const char *series)
{
    fm_http_resp_t r;
    double v = -1;
    if (fm_http_request(port, "GET", "/metrics", &r) != 0 || r.status != 200 ||
        !fm_http_sample(r.body, series, &v))
        v = -1;
    fm_http_free(&r);
    return v;
}

#endif

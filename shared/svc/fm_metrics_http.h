/* fm_metrics_http: a registry's /metrics served over HTTP by libmicrohttpd, and the grammar
 * of the metrics address (the daemons' "[<daemon>] metrics_addr" config keys).
 *
 * Address: "HOST:PORT" with HOST a numeric IPv4 address ("127.0.0.1", "0.0.0.0" for every
 * interface) or a bracketed numeric IPv6 address ("[::1]", "[::]"), PORT 1..65535 in
 * decimal; "" or "off" disables the endpoint. No names are resolved.
 *
 * Server: fedmq binds and listens on the socket itself (so a failure names its errno, like
 * a ZeroMQ bind), then hands it to libmicrohttpd, which runs the HTTP protocol on its own
 * internal polling thread: /metrics answers while the daemon's loop is busy (scoring,
 * checkpointing). Only "GET /metrics" (and HEAD, its body-less twin, which HTTP requires
 * alongside GET) is served: 200 with fm_metrics_render's text and Content-Type
 * FM_METRICS_CONTENT_TYPE; other paths 404, other methods 405 with "Allow: GET, HEAD";
 * a failed render 500. Bounded: FM_METRICS_HTTP_CONNS connections at once, an idle
 * connection closed after FM_METRICS_HTTP_TIMEOUT_S seconds. The server thread blocks
 * SIGINT, SIGTERM and SIGHUP, so the daemon's signals land on its own threads. libmicrohttpd's
 * messages go to fm_log (WARNING). */
#ifndef FM_METRICS_HTTP_H
#define FM_METRICS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "fm_err.h"
#include "fm_metrics.h"

#define FM_METRICS_HTTP_CONNS 16     /* connections served at once */
#define FM_METRICS_HTTP_TIMEOUT_S 10 /* idle connection timeout, seconds */

/* A parsed metrics address. */
typedef struct {
    bool enabled; /* false: "" or "off" */
    struct sockaddr_storage sa;
    socklen_t salen;
    int port;
} fm_metrics_addr_t;

/* Parse `text` (the grammar above) into *out. 0, or FM_EARG with the reason in
 * why[0..cap) (e.g. "not HOST:PORT (an IPv4 address or [IPv6 address], a port 1-65535) or
 * off"); why may be NULL. */
int fm_metrics_addr_parse(const char *text, fm_metrics_addr_t *out, char *why, size_t cap);

typedef struct fm_metrics_http fm_metrics_http_t;

/* Serve `m` (borrowed: it must outlive the server) on `addr`, the value of config key `key`
 * ("broker.metrics_addr", for messages), which must be enabled. NULL with *err and a line
 * in `e`: FM_EARG (not an address), -errno of socket/bind/listen, e.g. -EADDRINUSE with
 * "[broker] metrics_addr = 127.0.0.1:9561: cannot bind: Address already in use" (the
 * daemon exits 1), -ENOMEM or -EIO if libmicrohttpd cannot start. Caller owns it:
 * fm_metrics_http_stop. */
fm_metrics_http_t *fm_metrics_http_start(fm_metrics_t *m, const char *key, const char *addr,
                                         int *err, fm_errmsg_t *e);

/* Stop the server thread, close every connection and the listening socket, free, NULL *p;
 * idempotent. After it returns no render of the registry is running. */
void fm_metrics_http_stop(fm_metrics_http_t **p);

#endif

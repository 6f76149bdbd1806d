/* fm_sock: the sockets of fedmq daemons: one constructor with the project's options, and
 * bind/connect with one error line naming the config key, the endpoint and the reason,
 * e.g. "[endpoints] updates = tcp://127.0.0.1:5562: cannot bind: Address already in use".
 *
 * Options are set before bind/connect (ZMQ_CONFLATE and the subscription must be).
 * Linger is always set explicitly (libzmq's default is infinite, CZMQ's 0). A failed
 * bind/connect returns -errno: the environment failed (port in use, address not
 * available), which the daemon reports with exit 1 (FM_EXIT_RUNTIME); endpoint syntax is
 * checked with the config (fm_cfg_check), before any socket exists.
 *
 * Security is set here too: a socket whose options name an fm_sec_t and a side is made a
 * CurveZMQ server or client by fm_sec_apply ([security] mode = curve), so no daemon
 * configures keys itself. */
#ifndef FM_SOCK_H
#define FM_SOCK_H

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "fm_err.h"
#include "fm_sec.h"

#define FM_SOCK_NOWAIT (-2) /* sndtimeo_ms: a send that cannot queue fails at once */

/* Options of one socket. A zeroed struct is "linger 0, libzmq's defaults otherwise". */
typedef struct {
    int linger_ms;       /* ZMQ_LINGER: how long unsent messages may delay a close */
    int sndhwm, rcvhwm;  /* > 0: ZMQ_SNDHWM / ZMQ_RCVHWM in messages; 0: libzmq's 1000 */
    int sndtimeo_ms;     /* > 0: ZMQ_SNDTIMEO; FM_SOCK_NOWAIT: 0; 0: block (libzmq's -1) */
    int64_t maxmsgsize;  /* > 0: ZMQ_MAXMSGSIZE in bytes (larger frames drop the peer); 0: none */
    bool conflate;       /* ZMQ_CONFLATE: keep only the newest message (single-frame only) */
    bool subscribe_all;  /* SUB: subscribe to every message */
    const fm_sec_t *sec; /* borrowed, may be NULL: the program's security (fm_sec.h) */
    fm_sec_side_t side;  /* how `sec` secures this socket; FM_SEC_PLAIN: not at all */
} fm_sock_opts_t;

/* A new socket of ZeroMQ `type` (ZMQ_PUB, ...) with the options `o` (borrowed; NULL = a
 * zeroed struct), secured as o->side says, neither bound nor connected. `what` names it in the
 * error line (e.g. "model_pub"). NULL on failure with *err (-errno, -ENOMEM) and `e`. Caller owns
 * it: zsock_destroy(). */
zsock_t *fm_sock_new(int type, const fm_sock_opts_t *o, const char *what, int *err,
                     fm_errmsg_t *e);

/* Bind `s` (borrowed) to `endpoint`, the value of config key "section.key" (e.g.
 * "endpoints.updates"). 0, or -errno of zmq_bind (-EADDRINUSE, -EADDRNOTAVAIL, -EACCES,
 * ...) with `e` = "[section] key = endpoint: cannot bind: reason". */
int fm_sock_bind(zsock_t *s, const char *key, const char *endpoint, fm_errmsg_t *e);

/* Connect `s` to `endpoint` (reconnects happen in the background); as fm_sock_bind,
 * "cannot connect". */
int fm_sock_connect(zsock_t *s, const char *key, const char *endpoint, fm_errmsg_t *e);

#endif

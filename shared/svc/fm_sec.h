/* fm_sec: CurveZMQ for every socket of a daemon ([security] mode = curve): keys,
 * certificates, the ZAP allow-list, and who an authenticated peer is.
 *
 * Keys are CZMQ certificates (zcert): a public file NAME.cert and its secret twin
 * NAME.cert_secret (mode 0600), each with metadata "name", "role" (broker, aggregator,
 * evaluator, trainer or monitor) and, for a trainer, "clients" ("A-B": the client ids it is
 * enrolled for). `fedmq keygen` writes them (fm_sec_keygen).
 *
 * The three servers (broker, aggregator, evaluator) bind CURVE-server sockets with their own
 * key and authenticate every connection with ZAP (CZMQ's zauth actor, one per process)
 * against the public certificates in [security] allow_dir. Fail closed: the ZAP domain is
 * enforced (ZMQ_ZAP_ENFORCE_DOMAIN), so a connection is refused when no handler answers;
 * zauth re-reads the directory when it changes, so a removed key's next connection is
 * refused. Clients (trainer; broker and evaluator towards their upstream; monitors such as
 * `fedmq watch`) connect with their own key and the server's public key, so they only talk to
 * the real server.
 *
 * Who sent a message: libzmq attaches the ZAP user id, which zauth sets to the client's
 * public key (Z85 text, the message property "User-Id"). fm_sec_peer maps it to the
 * certificate in allow_dir (cached; fm_sec_refresh drops the cache when the directory
 * changes), so a trainer id in a message can be checked against the key that sent it
 * (fm_sec_check_trainer): one enrolled trainer cannot speak for another.
 *
 * mode = none: no key is read, sockets are plain; fm_daemon_main logs one warning once the
 * server is up (so a daemon that cannot start still says only why). */
#ifndef FM_SEC_H
#define FM_SEC_H

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "fm_cfg.h"
#include "fm_err.h"

/* What a program is (which of its own keys it loads, which server keys it needs). */
typedef enum {
    FM_SEC_ROLE_BROKER,
    FM_SEC_ROLE_AGGREGATOR,
    FM_SEC_ROLE_EVALUATOR,
    FM_SEC_ROLE_TRAINER,
    FM_SEC_ROLE_MONITOR
} fm_sec_role_t;

/* How one socket is secured (fm_sock_opts_t.sec_side). */
typedef enum {
    FM_SEC_PLAIN = 0,     /* never secured (inproc, test sockets) */
    FM_SEC_SERVE,         /* bound: CURVE server with this program's key, ZAP allow-list */
    FM_SEC_TO_BROKER,     /* connected to the broker: CURVE client */
    FM_SEC_TO_AGGREGATOR, /* connected to the aggregator */
    FM_SEC_TO_EVALUATOR   /* connected to the evaluator */
} fm_sec_side_t;

#define FM_SEC_NAME_MAX 64 /* certificate names: [A-Za-z0-9._-], 1..64 bytes */

/* An enrolled peer, from its certificate's metadata. */
typedef struct {
    char name[FM_SEC_NAME_MAX + 1];
    char role[16];
    uint32_t client_first; /* trainers: the clients it may serve, [first, first + count) */
    uint32_t client_count; /* 0: none (not a trainer) */
} fm_sec_peer_t;

typedef struct fm_sec fm_sec_t;

/* The security of program `role` from cfg->security (borrowed for the call). mode none: an
 * object that secures nothing. mode curve: loads this program's key
 * pair (the role's *_cert and its _secret file), the server public keys it connects to and,
 * for the servers, starts the ZAP handler on allow_dir (which must be a readable directory).
 * NULL with *err and one line in `e` naming the key and file: FM_EARG (bad or missing
 * certificate, wrong role in it), -errno (unreadable), -ENOTSUP (libzmq without CURVE).
 * Caller owns it: fm_sec_destroy, after every socket it secured is closed. */
fm_sec_t *fm_sec_new(const fm_config_t *cfg, fm_sec_role_t role, int *err, fm_errmsg_t *e);

/* Stop the ZAP handler, free, set *p NULL; idempotent. */
void fm_sec_destroy(fm_sec_t **p);

/* true when sockets are secured (mode curve). NULL: false. */
bool fm_sec_curve(const fm_sec_t *s);

/* This program's certificate name ("" under mode none). Borrowed. */
const char *fm_sec_name(const fm_sec_t *s);

/* This program's enrolment (its own certificate's metadata). 0, or FM_EARG under none. */
int fm_sec_self(const fm_sec_t *s, fm_sec_peer_t *out);

/* Secure `sock` (borrowed, neither bound nor connected yet) as `side`. A no-op for
 * FM_SEC_PLAIN or mode none. 0, or an error with `e` (a key this role did not load: a
 * programmer error reported as FM_EARG). */
int fm_sec_apply(const fm_sec_t *s, zsock_t *sock, fm_sec_side_t side, fm_errmsg_t *e);

/* The enrolled peer whose public key (Z85, the "User-Id" property) is `user_id`. 0, or
 * -ENOENT when no certificate in allow_dir has that key (removed since it connected), or
 * FM_EARG for a certificate without a valid name, role or client range. */
int fm_sec_peer(fm_sec_t *s, const char *user_id, fm_sec_peer_t *out);

/* true if clients [first, first + count) lie within p's enrolment (count 0: trivially). */
bool fm_sec_peer_covers(const fm_sec_peer_t *p, uint32_t first, uint32_t count);

/* Under curve: may the peer with key `user_id` speak as trainer `trainer` for clients
 * [first, first + count)? 0 (also under mode none), else 1 with the reason in why[0..cap)
 * ("key of 'pool-a' speaks as 'pool-b'", "client 57 not enrolled", "no key"). */
int fm_sec_check_trainer(fm_sec_t *s, const char *user_id, const char *trainer, uint32_t first,
                         uint32_t count, char *why, size_t cap);

/* Drop the peer cache if allow_dir changed since the last call (cheap: one stat). Call it
 * from a timer. */
void fm_sec_refresh(fm_sec_t *s);

/* Write dir/NAME.cert and dir/NAME.cert_secret (0600) for a new key pair with metadata
 * name, role and, for role "trainer", clients ("A-B" or "A"). Refuses to overwrite. The
 * public key (Z85, 40 chars) into pub_out[41] if not NULL. 0, FM_EARG (bad name, role or
 * range), -EEXIST, or -errno. */
int fm_sec_keygen(const char *dir, const char *name, const char *role, const char *clients,
                  char *pub_out, fm_errmsg_t *e);

/* "broker", ... (static). */
const char *fm_sec_role_name(fm_sec_role_t role);

#endif

#include "fm_sec.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fm_log.h"
#include "fm_parse.h"

#ifndef ZMQ_ZAP_ENFORCE_DOMAIN
#define ZMQ_ZAP_ENFORCE_DOMAIN 93 /* libzmq 4.3 draft option (Debian builds it) */
#endif

#define S_ZAP_DOMAIN "fedmq"
#define S_NSERVERS 3 /* broker, aggregator, evaluator: the keys clients connect with */

struct fm_sec {
    bool curve;
    fm_sec_role_t role;
    zcert_t *own;                    /* this program's key pair */
    fm_sec_peer_t self;              /* its metadata */
    char server_key[S_NSERVERS][41]; /* public keys (Z85) of the servers it connects to */
    zactor_t *auth;                  /* servers: the ZAP handler (zauth) */
    zcertstore_t *store;             /* servers: allow_dir, for fm_sec_peer */
    zhashx_t *cache;                 /* User-Id -> fm_sec_peer_t (owned) */
    char allow_dir[FM_CFG_STR_MAX];
    struct timespec allow_mtime; /* of allow_dir when the cache was last valid */
};

static const char *const s_roles[] = {[FM_SEC_ROLE_BROKER] = "broker",
                                      [FM_SEC_ROLE_AGGREGATOR] = "aggregator",
                                      [FM_SEC_ROLE_EVALUATOR] = "evaluator",
                                      [FM_SEC_ROLE_TRAINER] = "trainer",
                                      [FM_SEC_ROLE_MONITOR] = "monitor"};

const char *fm_sec_role_name(fm_sec_role_t role)
{
    return (unsigned)role < sizeof s_roles / sizeof s_roles[0] ? s_roles[role] : "?";
}

/* The config key holding the certificate of `role`, and its value. */
static const char *s_cert_path(const fm_cfg_security_t *c, fm_sec_role_t role, const char **key)
{
    switch (role) {
    case FM_SEC_ROLE_BROKER: *key = "broker_cert"; return c->broker_cert;
    case FM_SEC_ROLE_AGGREGATOR: *key = "aggregator_cert"; return c->aggregator_cert;
    case FM_SEC_ROLE_EVALUATOR: *key = "evaluator_cert"; return c->evaluator_cert;
    case FM_SEC_ROLE_TRAINER: *key = "trainer_cert"; return c->trainer_cert;
    default: *key = "monitor_cert"; return c->monitor_cert;
    }
}

static bool s_is_server(fm_sec_role_t r)
{
    return r == FM_SEC_ROLE_BROKER || r == FM_SEC_ROLE_AGGREGATOR || r == FM_SEC_ROLE_EVALUATOR;
}

/* 1 if name is 1..FM_SEC_NAME_MAX bytes of [A-Za-z0-9._-]. */
static int s_name_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > FM_SEC_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

static int s_role_known(const char *role)
{
    for (size_t i = 0; i < sizeof s_roles / sizeof s_roles[0]; i++)
        if (role && strcmp(role, s_roles[i]) == 0)
            return 1;
    return 0;
}

/* A certificate's metadata into *out. 0, or FM_EARG with why. */
static int s_meta(zcert_t *cert, fm_sec_peer_t *out, char *why, size_t cap)
{
    const char *name = zcert_meta(cert, "name");
    const char *role = zcert_meta(cert, "role");
    const char *clients = zcert_meta(cert, "clients");
    memset(out, 0, sizeof *out);
    if (!s_name_ok(name)) {
        snprintf(why, cap, "no valid \"name\" in its metadata");
        return FM_EARG;
    }
    if (!s_role_known(role)) {
        snprintf(why, cap, "no valid \"role\" in its metadata");
        return FM_EARG;
    }
    snprintf(out->name, sizeof out->name, "%s", name);
    snprintf(out->role, sizeof out->role, "%s", role);
    if (strcmp(role, "trainer") == 0) {
        long first, last;
        if (!clients ||
            fm_parse_range("clients", clients, 0, UINT32_MAX - 1, &first, &last, NULL) != 0) {
            snprintf(why, cap, "a trainer's certificate needs \"clients\" = A-B");
            return FM_EARG;
        }
        out->client_first = (uint32_t)first;
        out->client_count = (uint32_t)(last - first + 1);
    }
    return 0;
}

/* Load the certificate at `path` (config key [security] key). With `secret`, its
 * `path`_secret too. NULL with *err and `e`. */
static zcert_t *s_load(const char *key, const char *path, bool secret, int *err, fm_errmsg_t *e)
{
    char spath[PATH_MAX];
    snprintf(spath, sizeof spath, "%s_secret", path);
    const char *need = secret ? spath : path;
    if (!path[0]) {
        *err = fm_errmsg_set(e, FM_EARG, "[security] %s is empty: mode = curve needs it", key);
        return NULL;
    }
    if (access(path, R_OK) != 0 || (secret && access(spath, R_OK) != 0)) {
        int en = errno;
        *err = fm_errmsg_set(e, -en, "[security] %s = %s: cannot read %s: %s", key, path, need,
                             strerror(en));
        return NULL;
    }
    zcert_t *c = zcert_load(path);
    static const char zero[] = "0000000000000000000000000000000000000000";
    if (!c || (secret && strcmp(zcert_secret_txt(c), zero) == 0)) {
        zcert_destroy(&c);
        *err = fm_errmsg_set(e, FM_EARG, "[security] %s = %s: not a CURVE certificate%s", key,
                             path, secret ? " with its secret key" : "");
        return NULL;
    }
    if (secret) {
        struct stat st;
        if (stat(spath, &st) == 0 && (st.st_mode & 077))
            FM_LOG(LOG_WARNING, "[security] %s: %s is readable by others (chmod 600 it)", key,
                   spath);
    }
    return c;
}

static void s_peer_free(void **item)
{
    free(*item);
    *item = NULL;
}

static int s_dir_mtime(const char *dir, struct timespec *out)
{
    struct stat st;
    if (stat(dir, &st) != 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    *out = st.st_mtim;
    return 0;
}

fm_sec_t *fm_sec_new(const fm_config_t *cfg, fm_sec_role_t role, int *err, fm_errmsg_t *e)
{
    int rc = 0;
    fm_sec_t *s = calloc(1, sizeof *s);
    if (!s) {
        rc = fm_errmsg_set(e, -ENOMEM, "security: out of memory");
        goto fail;
    }
    s->role = role;
    const fm_cfg_security_t *c = &cfg->security;
    if (c->mode == FM_CFG_SECURITY_NONE)
        return s;
    s->curve = true;
    if (!zsys_has_curve()) {
        rc = fm_errmsg_set(e, -ENOTSUP, "[security] mode = curve: libzmq has no CURVE support");
        goto fail;
    }
    const char *key = NULL;
    const char *path = s_cert_path(c, role, &key);
    char why[128];
    if (!(s->own = s_load(key, path, true, &rc, e)))
        goto fail;
    if ((rc = s_meta(s->own, &s->self, why, sizeof why)) != 0 ||
        strcmp(s->self.role, fm_sec_role_name(role)) != 0) {
        if (!rc)
            snprintf(why, sizeof why, "its role is %s, not %s", s->self.role,
                     fm_sec_role_name(role));
        rc = fm_errmsg_set(e, FM_EARG, "[security] %s = %s: %s", key, path, why);
        goto fail;
    }
    /* the servers this role connects to */
    bool need[S_NSERVERS] = {
        role == FM_SEC_ROLE_TRAINER || role == FM_SEC_ROLE_EVALUATOR,
        role == FM_SEC_ROLE_TRAINER || role == FM_SEC_ROLE_BROKER,
        role == FM_SEC_ROLE_MONITOR,
    };
    for (int i = 0; i < S_NSERVERS; i++) {
        if (!need[i])
            continue;
        const char *skey = NULL;
        const char *spath = s_cert_path(c, (fm_sec_role_t)i, &skey);
        zcert_t *sc = s_load(skey, spath, false, &rc, e);
        if (!sc)
            goto fail;
        snprintf(s->server_key[i], sizeof s->server_key[i], "%s", zcert_public_txt(sc));
        zcert_destroy(&sc);
    }
    if (s_is_server(role)) {
        snprintf(s->allow_dir, sizeof s->allow_dir, "%s", c->allow_dir);
        if ((rc = s_dir_mtime(s->allow_dir, &s->allow_mtime)) != 0 ||
            access(s->allow_dir, R_OK | X_OK) != 0) {
            rc = rc ? rc : -errno;
            rc = fm_errmsg_set(e, rc, "[security] allow_dir = %s: not a readable directory: %s",
                               s->allow_dir, fm_strerror(rc));
            goto fail;
        }
        s->cache = zhashx_new();
        s->store = zcertstore_new(s->allow_dir);
        s->auth = zactor_new(zauth, NULL);
        if (!s->cache || !s->store || !s->auth) {
            rc = fm_errmsg_set(e, -ENOMEM, "security: cannot start the ZAP handler");
            goto fail;
        }
        zhashx_set_destructor(s->cache, s_peer_free);
        zstr_sendx(s->auth, "CURVE", s->allow_dir, NULL);
        zsock_wait(s->auth);
    }
    FM_LOG(LOG_NOTICE, "[security] mode = curve: %s key '%s' (%s)%s%s", fm_sec_role_name(role),
           s->self.name, zcert_public_txt(s->own), s->allow_dir[0] ? ", allow-list " : "",
           s->allow_dir);
    return s;
fail:
    fm_sec_destroy(&s);
    if (err)
        *err = rc;
    return NULL;
}

void fm_sec_destroy(fm_sec_t **p)
{
    if (!p || !*p)
        return;
    fm_sec_t *s = *p;
    zactor_destroy(&s->auth);
    zcertstore_destroy(&s->store);
    zhashx_destroy(&s->cache);
    zcert_destroy(&s->own);
    free(s);
    *p = NULL;
}

bool fm_sec_curve(const fm_sec_t *s) { return s && s->curve; }

const char *fm_sec_name(const fm_sec_t *s) { return s && s->curve ? s->self.name : ""; }

int fm_sec_self(const fm_sec_t *s, fm_sec_peer_t *out)
{
    if (!fm_sec_curve(s))
        return FM_EARG;
    *out = s->self;
    return 0;
}

int fm_sec_apply(const fm_sec_t *s, zsock_t *sock, fm_sec_side_t side, fm_errmsg_t *e)
{
    if (!fm_sec_curve(s) || side == FM_SEC_PLAIN)
        return 0;
    zcert_apply(s->own, sock);
    if (side == FM_SEC_SERVE) {
        if (!s->auth)
            return fm_errmsg_set(e, FM_EARG, "security: a %s does not serve CURVE sockets",
                                 fm_sec_role_name(s->role));
        zsock_set_curve_server(sock, 1);
        zsock_set_zap_domain(sock, S_ZAP_DOMAIN);
        int one = 1;
        if (zmq_setsockopt(zsock_resolve(sock), ZMQ_ZAP_ENFORCE_DOMAIN, &one, sizeof one) != 0)
            return fm_errmsg_set(e, -ENOTSUP,
                                 "security: libzmq cannot enforce the ZAP domain (%s): refusing "
                                 "to serve CURVE sockets that might accept any key",
                                 zmq_strerror(zmq_errno()));
        return 0;
    }
    int i = side - FM_SEC_TO_BROKER;
    if (i < 0 || i >= S_NSERVERS || !s->server_key[i][0])
        return fm_errmsg_set(e, FM_EARG, "security: a %s has no key for that server",
                             fm_sec_role_name(s->role));
    zsock_set_curve_serverkey(sock, s->server_key[i]);
    return 0;
}

int fm_sec_peer(fm_sec_t *s, const char *user_id, fm_sec_peer_t *out)
{
    if (!fm_sec_curve(s) || !s->store || !user_id || strlen(user_id) != 40)
        return -ENOENT;
    fm_sec_peer_t *p = zhashx_lookup(s->cache, user_id);
    if (p) {
        *out = *p;
        return 0;
    }
    zcert_t *cert = zcertstore_lookup(s->store, user_id); /* owned by the store */
    if (!cert)
        return -ENOENT;
    char why[96];
    fm_sec_peer_t peer;
    int rc = s_meta(cert, &peer, why, sizeof why);
    if (rc)
        return rc;
    if ((p = malloc(sizeof *p)) != NULL) {
        *p = peer;
        if (zhashx_insert(s->cache, user_id, p) != 0)
            free(p);
    }
    *out = peer;
    return 0;
}

bool fm_sec_peer_covers(const fm_sec_peer_t *p, uint32_t first, uint32_t count)
{
    return count == 0 || (first >= p->client_first &&
                          (uint64_t)first + count <= (uint64_t)p->client_first + p->client_count);
}

int fm_sec_check_trainer(fm_sec_t *s, const char *user_id, const char *trainer, uint32_t first,
                         uint32_t count, char *why, size_t cap)
{
    if (!fm_sec_curve(s))
        return 0;
    fm_sec_peer_t p;
    int rc = fm_sec_peer(s, user_id, &p);
    if (rc == -ENOENT) {
        snprintf(why, cap, "its key is not (or no longer) in the allow-list");
        return 1;
    }
    if (rc) {
        snprintf(why, cap, "its certificate in the allow-list is invalid");
        return 1;
    }
    if (strcmp(p.role, "trainer") != 0) {
        snprintf(why, cap, "sent with the key of '%s', a %s, not a trainer", p.name, p.role);
        return 1;
    }
    if (strcmp(p.name, trainer) != 0) {
        snprintf(why, cap, "trainer id '%s' sent with the key of '%s'", trainer, p.name);
        return 1;
    }
    if (!fm_sec_peer_covers(&p, first, count)) {
        snprintf(why, cap, "clients %u-%u; the key of '%s' is enrolled for %u-%u", first,
                 first + count - 1, p.name, p.client_first, p.client_first + p.client_count - 1);
        return 1;
    }
    return 0;
}

void fm_sec_refresh(fm_sec_t *s)
{
    if (!fm_sec_curve(s) || !s->cache)
        return;
    struct timespec t;
    if (s_dir_mtime(s->allow_dir, &t) != 0 || t.tv_sec != s->allow_mtime.tv_sec ||
        t.tv_nsec != s->allow_mtime.tv_nsec) {
        zhashx_purge(s->cache);
        s->allow_mtime = t;
    }
}

int fm_sec_keygen(const char *dir, const char *name, const char *role, const char *clients,
                  char *pub_out, fm_errmsg_t *e)
{
    if (!s_name_ok(name))
        return fm_errmsg_set(e, FM_EARG,
                             "keygen: name must be 1-%d characters of A-Z a-z 0-9 . _ -",
                             FM_SEC_NAME_MAX);
    if (!s_role_known(role))
        return fm_errmsg_set(e, FM_EARG,
                             "keygen: role must be broker, aggregator, evaluator, trainer or "
                             "monitor");
    bool trainer = strcmp(role, "trainer") == 0;
    long first = 0, last = 0;
    if (trainer && (!clients || fm_parse_range("--clients", clients, 0, UINT32_MAX - 1, &first,
                                               &last, e) != 0))
        return clients ? FM_EARG
                       : fm_errmsg_set(e, FM_EARG, "keygen: a trainer key needs --clients A-B");
    if (!trainer && clients)
        return fm_errmsg_set(e, FM_EARG, "keygen: --clients is for trainer keys");
    char path[PATH_MAX], spath[PATH_MAX + 8];
    if (snprintf(path, sizeof path, "%s/%s.cert", dir, name) >= (int)sizeof path)
        return fm_errmsg_set(e, -ENAMETOOLONG, "keygen: %s: path too long", dir);
    snprintf(spath, sizeof spath, "%s_secret", path);
    if (access(path, F_OK) == 0 || access(spath, F_OK) == 0)
        return fm_errmsg_set(e, -EEXIST, "keygen: %s exists: not overwriting a key", path);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        int en = errno ? errno : ENOTDIR;
        return fm_errmsg_set(e, -en, "keygen: %s: not a directory", dir);
    }
    zcert_t *c = zcert_new();
    if (!c)
        return fm_errmsg_set(e, -ENOMEM, "keygen: cannot make a key pair");
    zcert_set_meta(c, "name", "%s", name);
    zcert_set_meta(c, "role", "%s", role);
    if (trainer)
        zcert_set_meta(c, "clients", "%ld-%ld", first, last);
    mode_t old = umask(077); /* the secret file is written 0600 from the start */
    int rc = zcert_save(c, path);
    umask(old);
    if (rc == 0)
        rc = chmod(path, 0644);
    if (rc != 0) {
        int en = errno ? errno : EIO;
        zcert_destroy(&c);
        unlink(path);
        unlink(spath);
        return fm_errmsg_set(e, -en, "keygen: cannot write %s: %s", path, strerror(en));
    }
    if (pub_out)
        snprintf(pub_out, 41, "%s", zcert_public_txt(c));
    zcert_destroy(&c);
    return 0;
}

#include "fm_sock.h"

#include <errno.h>
#include <limits.h>
#include <string.h>

zsock_t *fm_sock_new(int type, const fm_sock_opts_t *o, const char *what, int *err,
                     fm_errmsg_t *e)
{
    static const fm_sock_opts_t none;
    if (!o)
        o = &none;
    zsock_t *s = zsock_new(type);
    if (!s) {
        int en = zmq_errno() > 0 ? zmq_errno() : ENOMEM;
        int rc = fm_errmsg_set(e, -en, "%s: cannot create the socket: %s", what,
                               zmq_strerror(en));
        if (err)
            *err = rc;
        return NULL;
    }
    zsock_set_linger(s, o->linger_ms);
    if (o->sndhwm > 0)
        zsock_set_sndhwm(s, o->sndhwm);
    if (o->rcvhwm > 0)
        zsock_set_rcvhwm(s, o->rcvhwm);
    if (o->sndtimeo_ms > 0 || o->sndtimeo_ms == FM_SOCK_NOWAIT)
        zsock_set_sndtimeo(s, o->sndtimeo_ms > 0 ? o->sndtimeo_ms : 0);
    if (o->maxmsgsize > 0)
        zsock_set_maxmsgsize(s, o->maxmsgsize > INT_MAX ? INT_MAX : (int)o->maxmsgsize);
    if (o->conflate)
        zsock_set_conflate(s, 1);
    if (o->subscribe_all)
        zsock_set_subscribe(s, "");
    int rc = fm_sec_apply(o->sec, s, o->side, e);
    if (rc) {
        zsock_destroy(&s);
        if (err)
            *err = rc;
        return NULL;
    }
    return s;
}

/* "endpoints.updates" -> "[endpoints] updates" into buf. */
static const char *s_key_name(const char *key, char *buf, size_t cap)
{
    const char *dot = key ? strchr(key, '.') : NULL;
    if (dot)
        snprintf(buf, cap, "[%.*s] %s", (int)(dot - key), key, dot + 1);
    else
        snprintf(buf, cap, "%s", key ? key : "endpoint");
    return buf;
}

static int s_fail(const char *key, const char *endpoint, const char *verb, fm_errmsg_t *e)
{
    int en = zmq_errno() > 0 ? zmq_errno() : EINVAL;
    char name[96];
    return fm_errmsg_set(e, -en, "%s = %s: cannot %s: %s", s_key_name(key, name, sizeof name),
                         endpoint, verb, zmq_strerror(en));
}

int fm_sock_bind(zsock_t *s, const char *key, const char *endpoint, fm_errmsg_t *e)
{
    if (zmq_bind(zsock_resolve(s), endpoint) != 0)
        return s_fail(key, endpoint, "bind", e);
    return 0;
}

int fm_sock_connect(zsock_t *s, const char *key, const char *endpoint, fm_errmsg_t *e)
{
    if (zmq_connect(zsock_resolve(s), endpoint) != 0)
        return s_fail(key, endpoint, "connect", e);
    return 0;
}

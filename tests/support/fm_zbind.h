/* fm_zbind: ZeroMQ helpers of the tests that play a daemon's peer: a socket bound to a free
 * loopback port (trainer_test, trainer_secagg_test), and closing a conflating SUB without
 * leaving a frame in its queue (the aggregator harnesses). Header-only; czmq and fm_proc.h
 * are included. */
#ifndef FM_ZBIND_H
#define FM_ZBIND_H

#include <czmq.h>
#include <stdio.h>

#include "fm_proc.h"

/* A socket of `type` bound to tcp://127.0.0.1:PORT (PORT reserved for this test process:
 * fm_proc_free_port; up to 10 tries), linger 0, send and receive HWM 10,000 frames; its
 * endpoint into ep[cap]. NULL if none could be bound. Caller owns it (zsock_destroy). */
static inline zsock_t *fm_zbind_loopback(int type, char *ep, size_t cap)
{
    for (int attempt = 0; attempt < 10; attempt++) {
        int port = fm_proc_free_port();
        if (port <= 0)
            continue;
        zsock_t *s = zsock_new(type);
        if (!s)
            return NULL;
        zsock_set_linger(s, 0);
        zsock_set_rcvhwm(s, 10000);
        zsock_set_sndhwm(s, 10000);
        snprintf(ep, cap, "tcp://127.0.0.1:%d", port);
        if (zsock_bind(s, "%s", ep) >= 0)
            return s;
        zsock_destroy(&s);
    }
    return NULL;
}

/* Receive and drop whatever `*s` holds, then destroy it (NULL-safe, *s = NULL). libzmq does
 * not free a frame left in a ZMQ_CONFLATE SUB's queue when the socket closes, which
 * LeakSanitizer reports at the test's exit (one MODEL, ~32 KB for logreg). Call it once the
 * publisher has stopped (before a new one binds the endpoint: the SUB would reconnect to it):
 * it drains until nothing has arrived for 100 ms (at most 2 s), so a frame still in the I/O
 * thread when the drain starts is dropped too. */
static inline void fm_zdrain_destroy(zsock_t **s)
{
    if (!s || !*s)
        return;
    void *h = zsock_resolve(*s);
    zmq_msg_t m;
    zmq_msg_init(&m);
    for (int round = 0; round < 20; round++) {
        while (zmq_msg_recv(&m, h, ZMQ_DONTWAIT) >= 0)
            ;
        zmq_pollitem_t it = {h, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&it, 1, 100) <= 0)
            break;
    }
    zmq_msg_close(&m);
    zsock_destroy(s);
}

#endif

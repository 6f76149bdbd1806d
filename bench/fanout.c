/* fanout: how long the real fedmq-broker takes to get a new MODEL to N subscribers.
 *
 *   fanout [--subscribers N[,N...]] [--model mlp|cnn] [--versions V] [--timeout S]
 *          [--join-timeout S] [--broker-nofile F] [--broker-set section.key=value]...
 *          [--burst B] [--verbose 1]
 *   fanout --model-pub EP --snapshot EP --aggregator-models EP [--broker-pid PID] ...
 *
 * For each N (default 1000): starts fedmq-broker (beside this binary) on loopback with free
 * ports (or uses the running one whose endpoints are given: this process then binds its
 * aggregator_models, so no aggregator may run), and plays the rest of the federation in this
 * one process and ZeroMQ context:
 * - N lightweight subscribers, each holding what a real trainer holds: a SUB on model_pub
 *   (ZMQ_CONFLATE, subscribed to everything, MAXMSGSIZE 4 x parameters + 64 KiB) and a DEALER
 *   on snapshot. The broker forwards a model only when it changes, so a late joiner asks:
 *   like fedmq-trainer, a subscriber without a model sends SNAPSHOT_REQ after 2 s, then again
 *   with the wait doubling up to 10 s. Joined: every subscriber holds version 0 (within
 *   --join-timeout, default 30 s + 20 ms per MB that N model copies make).
 * - the aggregator: a PUB bound on aggregator_models that publishes real encoded MODELs
 *   (fm_wire_encode_model of the --model layout), version 0 until every subscriber holds it,
 *   then warm-up versions until every SUB has received one (its subscription is in place: a
 *   PUB drops messages to subscribers it does not know yet), then V measured versions, each
 *   timed from its send to the moment the last of the N SUBs received it (a subscriber's
 *   arrival time is when this process read the frame and decoded its header: it includes
 *   this process's own sweep over N sockets).
 * Prints one line per N: fanout model=.. subscribers=N versions=V frame_bytes=.. join_s=..
 * snapshot_reqs=.. median_ms=.. p90_ms=.. max_ms=.. first_median_ms=.. missed=..
 * broker_rss_mb_start=.. (after start, before subscribers) broker_rss_mb_joined=.. (every
 * subscriber holds version 0) broker_rss_mb_after=.. broker_hwm_mb=.. (VmRSS / VmHWM of
 * /proc/PID/status, -1 when unknown) broker_nofile=.. (its soft RLIMIT_NOFILE) broker=up|down.
 * Exit status: 0 when for every N each measured version reached all N subscribers within
 * --timeout (default 30 s + 10 ms per MB that N copies make) and the broker stayed up (and, when
 * started here, stopped cleanly on SIGTERM); 1 otherwise (one line on stderr says what failed); 2
 * bad command line or an RLIMIT_NOFILE hard limit too low for N (each subscriber costs this
 * process 2 sockets and 4 file descriptors; the soft limit and ZMQ_MAX_SOCKETS are raised to what
 * the largest N needs).
 * --burst B: each timed step publishes B versions back to back (an aggregator that makes
 *   versions faster than slow subscribers read them) and is timed until every SUB received
 *   the last one (or a newer one): the broker must let a slow subscriber's newest model
 *   through, not the old ones queued before it (timing and "missed" are about the last).
 * --verbose 1: one more line per timed version on stderr, the quantiles of the N arrivals.
 * --broker-nofile F starts the broker with RLIMIT_NOFILE F (soft and hard): a broker that
 * cannot accept every connection (the break test of tests/cli/fanout_test.sh).
 * Memory of this process: each subscriber may hold two frames (one queued, one being read),
 * so about 2 x N x frame_bytes at the peak (1.6 GB for 1,000 mlp subscribers, 9.6 GB cnn).
 * What the time measures: this one process reads all N copies on one libzmq I/O thread (the
 * kernel's copy of N x frame_bytes per version), so the figure is an upper bound of what N
 * trainer processes on their own cores would see; first_median_ms (the first subscriber) is
 * the broker's own latency. On 2 cores cnn x 1,000 (4.8 GB per version) is bound by it. */
#include <czmq.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "../tests/support/fm_proc.h"
#include "fm_model.h"
#include "fm_wire.h"

#define S_LIST_MAX 16     /* values of --subscribers */
#define S_SETS_MAX 8      /* --broker-set options */
#define S_NONE UINT64_MAX /* a subscriber that holds no model yet */
#define S_FDS_PER_SUB 4   /* 2 sockets (a mailbox fd each) + 2 TCP connections */
#define S_FDS_SLACK 256   /* the context, the broker's log, /proc reads, ... */
#define S_WARMUPS 5       /* warm-up versions at most */
#define S_REQ_FIRST_S 2.0 /* SNAPSHOT_REQ after this long without a model (trainer) */
#define S_REQ_MAX_S 10.0  /* the wait doubles up to this */
#define S_REPUBLISH_S 1.0 /* the aggregator re-publishes its current model */
#define S_MAXMSG_SLACK (64 << 10)

/* The command line. */
typedef struct {
    int ns[S_LIST_MAX], nn;
    const char *model;
    int versions;
    double timeout_s;  /* 0: 30 s + 10 ms per MB the N subscribers receive */
    double join_s;     /* 0: 30 s + 20 ms per subscriber */
    int broker_nofile; /* 0: inherit */
    long own_soft;     /* this process's soft RLIMIT_NOFILE before it raised it (-1: kept) */
    int verbose;       /* --verbose: one line per timed version on stderr */
    int burst;         /* versions published back to back per timed step */
    const char *sets[S_SETS_MAX];
    int nsets;
    const char *ep_pub, *ep_snap, *ep_agg; /* all three: a running broker */
    pid_t broker_pid;                      /* of that broker, for its RSS (0: unknown) */
} s_opts_t;

/* The broker of one run: started here (pid > 0, procs) or given. */
typedef struct {
    pid_t pid;
    int started;
    fm_proc_set_t procs;
    char ep_pub[64], ep_snap[64], ep_agg[64];
    char log[400];
} s_broker_t;

/* N subscribers. Their sockets' ZMQ_FDs are in one epoll set (data: k = i for SUB i, n + i
 * for DEALER i), so a wake-up costs what is ready, not N (zmq_poll over 1,000 sockets costs
 * about a millisecond per call, and this process would measure itself). */
typedef struct {
    int n;
    zsock_t **sub, **dealer;
    int epfd;
    double next_sweep;          /* a full sweep of every socket now and then: the safety net */
    uint64_t *have;             /* newest version held (S_NONE: none) */
    uint8_t *via_pub;           /* received a version on its SUB */
    double *got_at;             /* when its SUB delivered the version being timed (0: not yet) */
    double *next_req;           /* when to send the next SNAPSHOT_REQ if still without a model */
    double *req_wait;           /* the current wait between requests */
    uint64_t reqs;              /* SNAPSHOT_REQs sent */
    fm_wire_tensors_t *tensors; /* decode scratch */
} s_subs_t;

/* VmRSS or VmHWM ("VmRSS:") of pid in MB, -1 if unknown. */
static double s_proc_mb(pid_t pid, const char *key)
{
    if (pid <= 0)
        return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    double mb = -1;
    size_t klen = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, key, klen) == 0)
            mb = strtol(line + klen, NULL, 10) / 1024.0;
    if (f)
        fclose(f);
    return mb;
}

/* The soft open-files limit of pid (/proc/PID/limits), -1 if unknown. */
static long s_proc_nofile(pid_t pid)
{
    if (pid <= 0)
        return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/limits", (int)pid);
    FILE *f = fopen(path, "r");
    long soft = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "Max open files", 14) == 0)
            soft = strtol(line + 14, NULL, 10);
    if (f)
        fclose(f);
    return soft;
}

/* Raise this process's RLIMIT_NOFILE soft limit to `need` if it is lower (*old: the soft
 * limit before, or -1 if unchanged). 0, or -1 with one line on stderr when the hard limit is
 * below `need`. */
static int s_nofile(rlim_t need, int n, long *old)
{
    struct rlimit rl;
    *old = -1;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (rl.rlim_cur >= need)
        return 0;
    *old = (long)rl.rlim_cur;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
        fprintf(stderr,
                "fanout: %d subscribers need %llu open files, the hard limit "
                "(RLIMIT_NOFILE) is %llu: raise it (ulimit -Hn, LimitNOFILE=)\n",
                n, (unsigned long long)need, (unsigned long long)rl.rlim_max);
        return -1;
    }
    rl.rlim_cur = need;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        fprintf(stderr, "fanout: cannot raise the open files limit to %llu: %s\n",
                (unsigned long long)need, strerror(errno));
        return -1;
    }
    return 0;
}

/* Parse "100,1000" into o->ns. 0 or -1. */
static int s_parse_list(const char *s, s_opts_t *o)
{
    o->nn = 0;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1 || v > 100000 || o->nn == S_LIST_MAX || (*end && *end != ','))
            return -1;
        o->ns[o->nn++] = (int)v;
        s = *end ? end + 1 : end;
    }
    return o->nn ? 0 : -1;
}

static int s_parse(int argc, char **argv, s_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->ns[0] = 1000;
    o->nn = 1;
    o->model = "mlp";
    o->versions = 5;
    o->burst = 1;
    for (int i = 1; i < argc; i += 2) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) {
            fprintf(stderr, "fanout: %s: missing value\n", k);
            return -1;
        }
        if (!strcmp(k, "--subscribers")) {
            if (s_parse_list(v, o) != 0) {
                fprintf(stderr,
                        "fanout: --subscribers: '%s' is not a list of counts 1..100000 "
                        "(e.g. 100,1000)\n",
                        v);
                return -1;
            }
        } else if (!strcmp(k, "--model"))
            o->model = v;
        else if (!strcmp(k, "--versions"))
            o->versions = atoi(v);
        else if (!strcmp(k, "--timeout"))
            o->timeout_s = atof(v);
        else if (!strcmp(k, "--burst"))
            o->burst = atoi(v);
        else if (!strcmp(k, "--verbose"))
            o->verbose = atoi(v);
        else if (!strcmp(k, "--join-timeout"))
            o->join_s = atof(v);
        else if (!strcmp(k, "--broker-nofile"))
            o->broker_nofile = atoi(v);
        else if (!strcmp(k, "--broker-set")) {
            if (o->nsets == S_SETS_MAX) {
                fprintf(stderr, "fanout: at most %d --broker-set\n", S_SETS_MAX);
                return -1;
            }
            o->sets[o->nsets++] = v;
        } else if (!strcmp(k, "--model-pub"))
            o->ep_pub = v;
        else if (!strcmp(k, "--snapshot"))
            o->ep_snap = v;
        else if (!strcmp(k, "--aggregator-models"))
            o->ep_agg = v;
        else if (!strcmp(k, "--broker-pid"))
            o->broker_pid = (pid_t)atoi(v);
        else {
            fprintf(stderr, "fanout: unknown option %s\n", k);
            return -1;
        }
    }
    int given = !!o->ep_pub + !!o->ep_snap + !!o->ep_agg;
    if (o->versions < 1 || o->versions > 1000 || o->burst < 1 || o->burst > 100 ||
        !(o->timeout_s >= 0) || !(o->join_s >= 0) || o->broker_nofile < 0 ||
        (given != 0 && given != 3)) {
        fprintf(stderr, "fanout: bad --versions/--timeout/--broker-nofile, or not all three of "
                        "--model-pub --snapshot --aggregator-models\n");
        return -1;
    }
    return 0;
}

/* Start fedmq-broker on free loopback ports for `model`: 0, or -1 (logged). */
static int s_broker_start(s_broker_t *b, const s_opts_t *o, const char *dir, int run)
{
    char self[PATH_MAX], bin[PATH_MAX + 32], sets[4][128], met[64], nofile[160];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    self[len > 0 ? len : 0] = 0;
    snprintf(bin, sizeof bin, "%s/fedmq-broker", dirname(self));
    snprintf(b->ep_pub, sizeof b->ep_pub, "tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(b->ep_snap, sizeof b->ep_snap, "tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(b->ep_agg, sizeof b->ep_agg, "tcp://127.0.0.1:%d", fm_proc_free_port());
    snprintf(sets[0], sizeof sets[0], "endpoints.model_pub=%s", b->ep_pub);
    snprintf(sets[1], sizeof sets[1], "endpoints.snapshot=%s", b->ep_snap);
    snprintf(sets[2], sizeof sets[2], "endpoints.aggregator_models=%s", b->ep_agg);
    snprintf(sets[3], sizeof sets[3], "federation.model=%s", o->model);
    snprintf(b->log, sizeof b->log, "%s/broker-%d.log", dir, run);
    char *av[48];
    int ac = 0;
    /* the broker starts with the limits this process was given, not the ones it raised for
     * itself (or with --broker-nofile's); the same pid: sh execs the broker */
    if (o->broker_nofile > 0 || o->own_soft >= 0) {
        if (o->broker_nofile > 0)
            snprintf(nofile, sizeof nofile, "ulimit -n %d && exec \"$0\" \"$@\"",
                     o->broker_nofile);
        else
            snprintf(nofile, sizeof nofile, "ulimit -Sn %ld && exec \"$0\" \"$@\"", o->own_soft);
        av[ac++] = "/bin/sh";
        av[ac++] = "-c";
        av[ac++] = nofile;
    }
    av[ac++] = bin;
    for (int i = 0; i < 4; i++) {
        av[ac++] = "--set";
        av[ac++] = sets[i];
    }
    av[ac++] = "--set";
    av[ac++] = fm_proc_metrics_set(met, sizeof met, "broker", NULL);
    for (int i = 0; i < o->nsets; i++) {
        av[ac++] = "--set";
        av[ac++] = (char *)o->sets[i];
    }
    av[ac++] = "--log-level";
    av[ac++] = "info";
    av[ac] = NULL;
    b->pid = fm_proc_spawn(&b->procs, av, b->log);
    b->started = 1;
    if (b->pid <= 0 || !fm_proc_wait_file_contains(b->log, "broker: model ", 10.0)) {
        fprintf(stderr, "fanout: fedmq-broker did not start (log: %s)\n", b->log);
        return -1;
    }
    return 0;
}

/* 1 if the broker still runs (unknown pid: assumed). */
static int s_broker_up(const s_broker_t *b)
{
    if (b->pid <= 0)
        return 1;
    if (b->started)
        return waitpid(b->pid, NULL, WNOHANG) == 0;
    return kill(b->pid, 0) == 0;
}

static void s_subs_destroy(s_subs_t *s)
{
    for (int i = 0; s->sub && i < s->n; i++)
        zsock_destroy(&s->sub[i]);
    for (int i = 0; s->dealer && i < s->n; i++)
        zsock_destroy(&s->dealer[i]);
    if (s->epfd > 0)
        close(s->epfd);
    free(s->sub);
    free(s->dealer);
    free(s->have);
    free(s->via_pub);
    free(s->got_at);
    free(s->next_req);
    free(s->req_wait);
    free(s->tensors);
    memset(s, 0, sizeof *s);
}

/* N subscribers connected to the broker's model_pub and snapshot. 0, or -1 (logged). */
static int s_subs_new(s_subs_t *s, int n, const s_broker_t *b, size_t nparams)
{
    memset(s, 0, sizeof *s);
    s->n = n;
    s->sub = calloc((size_t)n, sizeof *s->sub);
    s->dealer = calloc((size_t)n, sizeof *s->dealer);
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->have = malloc((size_t)n * sizeof *s->have);
    s->via_pub = calloc((size_t)n, 1);
    s->got_at = calloc((size_t)n, sizeof *s->got_at);
    s->next_req = calloc((size_t)n, sizeof *s->next_req);
    s->req_wait = calloc((size_t)n, sizeof *s->req_wait);
    s->tensors = calloc(1, sizeof *s->tensors);
    if (s->epfd < 0) {
        fprintf(stderr, "fanout: epoll: %s\n", strerror(errno));
        return -1;
    }
    if (!s->sub || !s->dealer || !s->have || !s->via_pub || !s->got_at || !s->next_req ||
        !s->req_wait || !s->tensors) {
        fprintf(stderr, "fanout: out of memory\n");
        return -1;
    }
    int maxmsg = (int)(4 * nparams + S_MAXMSG_SLACK);
    double now = fm_proc_now();
    for (int i = 0; i < n; i++) {
        s->have[i] = S_NONE;
        s->next_req[i] = now + S_REQ_FIRST_S;
        s->req_wait[i] = S_REQ_FIRST_S;
        zsock_t *sub = s->sub[i] = zsock_new(ZMQ_SUB);
        zsock_t *dl = s->dealer[i] = zsock_new(ZMQ_DEALER);
        if (!sub || !dl) {
            fprintf(stderr, "fanout: subscriber %d: cannot create a socket: %s\n", i,
                    zmq_strerror(zmq_errno()));
            return -1;
        }
        zsock_set_linger(sub, 0);
        zsock_set_linger(dl, 0);
        zsock_set_conflate(sub, 1); /* before connect, as the trainer does */
        zsock_set_maxmsgsize(sub, maxmsg);
        zsock_set_maxmsgsize(dl, maxmsg);
        zsock_set_rcvhwm(dl, 4);
        zsock_set_subscribe(sub, "");
        if (zsock_connect(sub, "%s", b->ep_pub) != 0 ||
            zsock_connect(dl, "%s", b->ep_snap) != 0) {
            fprintf(stderr, "fanout: subscriber %d: cannot connect: %s\n", i,
                    zmq_strerror(zmq_errno()));
            return -1;
        }
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        struct epoll_event ed = {.events = EPOLLIN, .data.u32 = (uint32_t)(n + i)};
        if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, zsock_fd(sub), &ev) != 0 ||
            epoll_ctl(s->epfd, EPOLL_CTL_ADD, zsock_fd(dl), &ed) != 0) {
            fprintf(stderr, "fanout: epoll: %s\n", strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* Send SNAPSHOT_REQ from subscriber i (which holds no model). */
static void s_snapshot_req(s_subs_t *s, int i, fm_wire_buf_t *buf)
{
    fm_wire_snapshot_req_t r;
    memset(&r, 0, sizeof r);
    snprintf(r.from, sizeof r.from, "fanout-%d", i);
    if (fm_wire_encode_snapshot_req(&r, buf) != 0)
        return;
    zframe_t *f = zframe_new(buf->data, buf->len);
    if (zframe_send(&f, s->dealer[i], ZFRAME_DONTWAIT) == 0)
        s->reqs++;
    zframe_destroy(&f);
}

/* One received frame of subscriber i (from its SUB if pub): its version, timed if it is
 * `timed`. */
static void s_on_frame(s_subs_t *s, int i, int pub, zmq_msg_t *msg, uint64_t timed)
{
    fm_wire_model_t hdr;
    if (fm_wire_decode_model(zmq_msg_data(msg), zmq_msg_size(msg), &hdr, s->tensors, NULL) != 0)
        return;
    if (s->have[i] == S_NONE || hdr.version > s->have[i])
        s->have[i] = hdr.version;
    if (pub) {
        s->via_pub[i] = 1;
        if (hdr.version >= timed && timed != S_NONE && s->got_at[i] == 0)
            s->got_at[i] = fm_proc_now();
    }
}

/* Read every frame socket k (SUB i = k, DEALER i = k - n) has; the receive that fails with
 * EAGAIN also processes its commands, which resets its ZMQ_FD. */
static void s_drain(s_subs_t *s, int k, uint64_t timed)
{
    zsock_t *sock = k < s->n ? s->sub[k] : s->dealer[k - s->n];
    void *raw = zsock_resolve(sock);
    for (;;) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, raw, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&msg);
            return;
        }
        s_on_frame(s, k % s->n, k < s->n, &msg, timed);
        zmq_msg_close(&msg);
    }
}

/* Wait up to timeout_ms for frames and read every one that is there. With `dealers`,
 * subscribers still without a model ask for one when due. */
static void s_pump(s_subs_t *s, int timeout_ms, int dealers, uint64_t timed, fm_wire_buf_t *buf)
{
    struct epoll_event ev[256];
    int nev = epoll_wait(s->epfd, ev, 256, timeout_ms);
    for (int j = 0; j < nev; j++)
        s_drain(s, (int)ev[j].data.u32, timed);
    if (fm_proc_now() >= s->next_sweep) {
        for (int k = 0; k < 2 * s->n; k++)
            s_drain(s, k, timed);
        s->next_sweep = fm_proc_now() + 0.2;
    }
    if (!dealers)
        return;
    double now = fm_proc_now();
    for (int i = 0; i < s->n; i++)
        if (s->have[i] == S_NONE && now >= s->next_req[i]) {
            s_snapshot_req(s, i, buf);
            s->req_wait[i] = s->req_wait[i] * 2 > S_REQ_MAX_S ? S_REQ_MAX_S : s->req_wait[i] * 2;
            s->next_req[i] = now + s->req_wait[i];
        }
}

/* Encode MODEL `version` of m (created now) into buf. 0 or -1. */
static int s_encode(fm_model_t *m, uint64_t version, fm_wire_buf_t *buf)
{
    fm_wire_model_t hdr;
    memset(&hdr, 0, sizeof hdr);
    hdr.version = version;
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    hdr.created = t.tv_sec + t.tv_nsec * 1e-9;
    return fm_wire_encode_model(&hdr, m, fm_model_params(m), buf) == 0 ? 0 : -1;
}

static void s_publish(zsock_t *pub, const fm_wire_buf_t *buf)
{
    zframe_t *f = zframe_new(buf->data, buf->len);
    zframe_send(&f, pub, 0);
}

static int s_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The q-quantile (nearest rank) of v[0..n), sorted in place. */
static double s_quantile(double *v, int n, double q)
{
    qsort(v, (size_t)n, sizeof *v, s_cmp_double);
    int k = (int)(q * n + 0.999999) - 1;
    return v[k < 0 ? 0 : k >= n ? n - 1 : k];
}

/* How many subscribers satisfy: have >= v (pub = 0), or received the timed version on SUB
 * (pub = 1), or received anything on SUB (pub = 2). */
static int s_count(const s_subs_t *s, uint64_t v, int pub)
{
    int c = 0;
    for (int i = 0; i < s->n; i++)
        c += pub == 0   ? s->have[i] != S_NONE && s->have[i] >= v
             : pub == 1 ? s->got_at[i] > 0
                        : s->via_pub[i];
    return c;
}

/* One N: subscribers join (version 0), warm up, then `versions` timed versions. Prints the
 * line. 0 when every timed version reached all N and the broker stayed up, else 1. */
static int s_run(const s_opts_t *o, int n, fm_model_t *m, const char *dir, int run)
{
    int rc = 1;
    s_broker_t b;
    memset(&b, 0, sizeof b);
    s_subs_t s;
    memset(&s, 0, sizeof s);
    fm_wire_buf_t buf = FM_WIRE_BUF_INIT, req = FM_WIRE_BUF_INIT;
    double *lat = calloc((size_t)o->versions, sizeof *lat);
    double *first = calloc((size_t)o->versions, sizeof *first);
    zsock_t *agg = zsock_new(ZMQ_PUB);
    if (!lat || !first || !agg)
        goto cleanup;
    zsock_set_linger(agg, 0);
    zsock_set_sndhwm(agg, 16);
    if (o->ep_pub) {
        snprintf(b.ep_pub, sizeof b.ep_pub, "%s", o->ep_pub);
        snprintf(b.ep_snap, sizeof b.ep_snap, "%s", o->ep_snap);
        snprintf(b.ep_agg, sizeof b.ep_agg, "%s", o->ep_agg);
        b.pid = o->broker_pid;
    } else if (s_broker_start(&b, o, dir, run) != 0)
        goto cleanup;
    if (zsock_bind(agg, "%s", b.ep_agg) < 0) {
        fprintf(stderr, "fanout: cannot bind %s: %s\n", b.ep_agg, zmq_strerror(zmq_errno()));
        goto cleanup;
    }
    double rss_start = s_proc_mb(b.pid, "VmRSS:");

    /* join: every subscriber holds version 0 (SUB, or SNAPSHOT_REQ when it came too late) */
    if (s_encode(m, 0, &buf) != 0)
        goto cleanup;
    double mb = (double)n * buf.len / 1e6; /* what one version is, to all N */
    double timeout_s = o->timeout_s > 0 ? o->timeout_s : 30.0 + mb / 100.0;
    double t0 = fm_proc_now(), last_pub = 0,
           join_limit = o->join_s > 0 ? o->join_s : 30.0 + mb / 50.0;
    if (s_subs_new(&s, n, &b, fm_model_nparams(m)) != 0)
        goto cleanup;
    int held = 0;
    while ((held = s_count(&s, 0, 0)) < n && fm_proc_now() - t0 < join_limit && s_broker_up(&b)) {
        if (fm_proc_now() - last_pub >= S_REPUBLISH_S) { /* the same bytes: not forwarded */
            s_publish(agg, &buf);
            last_pub = fm_proc_now();
        }
        s_pump(&s, 20, 1, S_NONE, &req);
    }
    double join_s = fm_proc_now() - t0;
    if (held < n) {
        fprintf(stderr,
                "fanout: %d subscribers: only %d hold a model after %.0f s (broker %s, "
                "log: %s)\n",
                n, held, join_s, s_broker_up(&b) ? "up" : "down", b.log);
        goto cleanup;
    }
    uint64_t join_reqs = s.reqs;
    double rss_joined = s_proc_mb(b.pid, "VmRSS:");

    /* warm-up: versions until every SUB has received one (its subscription is in place), at
     * least one (this process's heap grows to N frames on the first) */
    uint64_t v = 0;
    for (int w = 0; w < S_WARMUPS && (w == 0 || s_count(&s, 0, 2) < n); w++) {
        if (s_encode(m, ++v, &buf) != 0)
            goto cleanup;
        s_publish(agg, &buf);
        double w0 = fm_proc_now();
        while (s_count(&s, v, 0) < n && fm_proc_now() - w0 < timeout_s && s_broker_up(&b))
            s_pump(&s, 20, 0, S_NONE, &req);
    }
    if (s_count(&s, 0, 2) < n) {
        fprintf(stderr,
                "fanout: %d subscribers: %d never received a MODEL on model_pub after "
                "%d warm-up versions (broker %s, log: %s)\n",
                n, n - s_count(&s, 0, 2), S_WARMUPS, s_broker_up(&b) ? "up" : "down", b.log);
        goto cleanup;
    }

    /* the timed versions */
    int missed = 0;
    for (int k = 0; k < o->versions; k++) {
        memset(s.got_at, 0, (size_t)n * sizeof *s.got_at);
        double v0 = fm_proc_now();
        for (int j = 0; j < o->burst; j++) { /* the last one is timed */
            if (s_encode(m, ++v, &buf) != 0)
                goto cleanup;
            s_publish(agg, &buf);
        }
        while (s_count(&s, 0, 1) < n && fm_proc_now() - v0 < timeout_s && s_broker_up(&b))
            s_pump(&s, 20, 0, v, &req);
        double last = 0, earliest = 0;
        int got = 0;
        for (int i = 0; i < n; i++) {
            if (s.got_at[i] == 0)
                continue;
            got++;
            last = s.got_at[i] > last ? s.got_at[i] : last;
            earliest = earliest == 0 || s.got_at[i] < earliest ? s.got_at[i] : earliest;
        }
        missed += n - got;
        if (o->verbose && got) { /* the subscribers' arrival times of this version */
            double *at = malloc((size_t)got * sizeof *at);
            int g = 0;
            for (int i = 0; at && i < n; i++)
                if (s.got_at[i] > 0)
                    at[g++] = (s.got_at[i] - v0) * 1e3;
            if (at) {
                double q[4] = {s_quantile(at, g, 0.1), s_quantile(at, g, 0.5),
                               s_quantile(at, g, 0.9), s_quantile(at, g, 0.99)};
                fprintf(stderr,
                        "fanout: %d subscribers, version %llu: arrivals p10 %.1f p50 %.1f "
                        "p90 %.1f p99 %.1f last %.1f ms\n",
                        n, (unsigned long long)v, q[0], q[1], q[2], q[3], at[g - 1]);
            }
            for (int i = 0; i < n; i++)
                if (s.got_at[i] == 0)
                    fprintf(stderr, "fanout: subscriber %d missed version %llu: it holds %llu\n",
                            i, (unsigned long long)v, (unsigned long long)s.have[i]);
            free(at);
        }
        lat[k] = got == n ? (last - v0) * 1e3 : timeout_s * 1e3;
        first[k] = got ? (earliest - v0) * 1e3 : timeout_s * 1e3;
    }
    int up = s_broker_up(&b);
    double rss_after = s_proc_mb(b.pid, "VmRSS:"), hwm = s_proc_mb(b.pid, "VmHWM:");
    double med_first = s_quantile(first, o->versions, 0.5);
    double med = s_quantile(lat, o->versions, 0.5), p90 = s_quantile(lat, o->versions, 0.9);
    printf("fanout model=%s subscribers=%d versions=%d burst=%d frame_bytes=%zu join_s=%.2f "
           "snapshot_reqs=%llu median_ms=%.1f p90_ms=%.1f max_ms=%.1f first_median_ms=%.1f "
           "missed=%d broker_rss_mb_start=%.1f broker_rss_mb_joined=%.1f "
           "broker_rss_mb_after=%.1f broker_hwm_mb=%.1f broker_nofile=%ld broker=%s\n",
           o->model, n, o->versions, o->burst, buf.len, join_s, (unsigned long long)join_reqs,
           med, p90, lat[o->versions - 1], med_first, missed, rss_start, rss_joined, rss_after,
           hwm, s_proc_nofile(b.pid), up ? "up" : "down");
    fflush(stdout);
    if (missed)
        fprintf(stderr, "fanout: %d subscribers: %d deliveries missed within %g s (log: %s)\n", n,
                missed, timeout_s, b.log);
    if (!up)
        fprintf(stderr, "fanout: the broker died (log: %s)\n", b.log);
    rc = missed || !up;
cleanup:
    s_subs_destroy(&s);
    zsock_destroy(&agg);
    if (b.started && b.pid > 0) {
        int alive = waitpid(b.pid, NULL, WNOHANG) == 0;
        int st = alive ? fm_proc_stop(b.pid, SIGTERM, 10.0) : 0;
        if (alive && !(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
            fprintf(stderr, "fanout: the broker did not stop cleanly on SIGTERM (log: %s)\n",
                    b.log);
            rc = 1;
        }
    }
    fm_proc_reap_all(&b.procs);
    fm_wire_buf_free(&buf);
    fm_wire_buf_free(&req);
    free(lat);
    free(first);
    return rc;
}

int main(int argc, char **argv)
{
    s_opts_t o;
    if (s_parse(argc, argv, &o) != 0)
        return 2;
    int err = 0, nmax = 0;
    fm_model_t *m = fm_model_new(o.model, &err);
    if (!m) {
        fprintf(stderr, "fanout: --model: '%s' is not a built-in model (mlp, cnn, logreg)\n",
                o.model);
        return 2;
    }
    for (int i = 0; i < o.nn; i++)
        nmax = o.ns[i] > nmax ? o.ns[i] : nmax;
    /* the broker checks the parameters are finite; their values do not matter */
    float *p = fm_model_params(m);
    for (size_t i = 0; i < fm_model_nparams(m); i++)
        p[i] = (float)((i % 97) * 1e-3);
    if (s_nofile((rlim_t)nmax * S_FDS_PER_SUB + S_FDS_SLACK, nmax, &o.own_soft) != 0) {
        fm_model_destroy(&m);
        return 2;
    }
    zsys_set_max_sockets((size_t)(2 * nmax + 64)); /* before the first socket */
    /* N frames of up to 5 MB are allocated (by libzmq's I/O thread) and freed (here) per
     * version: from the heap, kept for reuse, not a fresh mmap and page faults each time,
     * and no munmap (a TLB shootdown across threads) per frame. This process is the N
     * subscribers: what it spends is not the broker's. */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    mallopt(M_ARENA_MAX, 1); /* the I/O thread allocates, this thread frees: one heap */
    char dir[256];
    if (fm_proc_tmpdir(dir, sizeof dir) != 0) {
        fprintf(stderr, "fanout: cannot make a temp dir\n");
        fm_model_destroy(&m);
        return 1;
    }
    int rc = 0;
    for (int i = 0; i < o.nn; i++)
        rc |= s_run(&o, o.ns[i], m, dir, i);
    if (rc == 0)
        fm_proc_rmtree(dir); /* else the broker logs stay for a look */
    fm_model_destroy(&m);
    return rc;
}

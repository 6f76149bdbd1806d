/* agg_ingest: the aggregator's ingest rate against the machine's memory bandwidth.
 *
 *   agg_ingest --model cnn|mlp [--k K] [--updates N] [--acks off|on|both]
 *              [--aggregation mean|median|trimmed_mean|norm_bounded_mean] [--norm-bound B]
 *              [--set section.key=value]... [--curve off|on|both] [--clients C]
 *
 * --clients C (C >= 1, not with --curve): the federation has C clients ([federation]
 * num_clients = C) served by ceil(C / 10) trainers "bench-000000".. of 10 clients each, every
 * one announced by a HELLO on the updates PUSH first (the run starts once stats.json counts
 * C live clients; heartbeat timeout an hour, trainers_per_peer 4096: all come from one
 * peer), and update i is sent by client i mod C through its trainer, so the aggregator's
 * tables hold C clients and C / 10 trainers: updates/s at 100 and 1,000 clients compare the
 * cost per update. Default (no --clients): one client (0) of trainer "bench", no HELLO, as the
 * first benchmarks.
 *
 * --aggregation and --norm-bound select the aggregator's rule and an absolute L2-norm bound
 * per update ([aggregator] aggregation, norm_bound; default: the mean, no bound), so each
 * rule's updates/s can be measured; --set passes any other key (e.g.
 * aggregator.norm_action=reject, aggregator.trim_fraction=0.2); 8 of these at most. The bench's
 * updates are copies of one delta of norm about 1e-4 x sqrt(nparams) (0.11 cnn, 0.045 mlp),
 * so a bound below that clips (or rejects) every update.
 * --curve on: [security] mode = curve (keys made in the run's temp dir, the test's sockets
 * are enrolled CURVE clients); both: off, then on, and a "curve" line with the ratio.
 * --acks on: the aggregator acknowledges (a checkpoint per version, [aggregator] acks) and
 * the run is timed until every update's "applied" ACK arrived; both: off, then on, and one
 * more line with the ratio (default off: the figures of the first benchmarks).
 * Starts the real fedmq-aggregator (beside this binary) on loopback, pushes N distinct
 * UPDATE frames (one encoded delta, a fresh 16-byte id patched into each copy) as fast as
 * PUSH allows, and times until stats.json reports all N applied. In the same run it
 * measures single-thread memcpy bandwidth (64 MiB buffers) and reports the ingest rate as
 * a fraction of the bound bandwidth / (3 x model bytes) (each update's delta is read
 * roughly three times: decode/check, finiteness, fold). Also the aggregator's peak RSS
 * (VmHWM). Then, the transport's own ceiling: the same frames pushed the same way to a
 * sink process that only receives and drops them (a PULL socket with the aggregator's
 * receive settings), so the aggregator's rate can be read against what one ZeroMQ TCP
 * connection over loopback carries here. Prints two lines: agg model=.. k=..
 * updates_per_s=.. memcpy_gbs=.. bound=.. fraction=.. peak_rss_mb=.., and sink
 * updates_per_s=.. gbs=.. aggregator_vs_sink=.. */
#include <czmq.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../tests/support/fm_proc.h"
#include "fm_model.h"
#include "fm_rng.h"
#include "fm_sec.h"
#include "fm_stats.h"
#include "fm_wire.h"

#define S_EXTRA_MAX 8 /* --aggregation, --norm-bound and --set options */

static double s_memcpy_gbs(void)
{
    size_t n = 64u << 20;
    char *a = malloc(n), *b = malloc(n);
    memset(a, 1, n);
    memset(b, 2, n);
    double best = 0;
    for (int r = 0; r < 5; r++) {
        double t0 = fm_proc_now();
        memcpy(b, a, n);
        double t = fm_proc_now() - t0;
        /* a copy reads and writes n bytes: count the bytes moved once each way */
        double gbs = 2.0 * n / t / 1e9;
        best = gbs > best ? gbs : best;
        a[r] = b[n - 1 - r];
    }
    free(a);
    free(b);
    return best;
}

static long s_vmhwm_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
    if (f)
        fclose(f);
    return kb;
}

/* The sink: bind PULL on port, receive n frames, write the monotonic time of the last one
 * to `out`. Runs in a forked child (its own ZeroMQ context). */
static int s_sink(int port, int n, size_t frame, const char *out)
{
    zsock_t *pull = zsock_new(ZMQ_PULL);
    size_t hwm = ((size_t)256 << 20) / (frame + 1);
    zsock_set_rcvhwm(pull, (int)(hwm < 16 ? 16 : hwm > 1000 ? 1000 : hwm));
    zsock_set_maxmsgsize(pull, (int)(4 * frame + 4096));
    zsock_set_linger(pull, 0);
    if (zsock_bind(pull, "tcp://127.0.0.1:%d", port) < 0)
        return 1;
    void *raw = zsock_resolve(pull);
    double last = 0;
    for (int i = 0; i < n; i++) {
        zmq_msg_t msg;
        zmq_msg_init(&msg);
        if (zmq_msg_recv(&msg, raw, 0) < 0)
            return 1;
        zmq_msg_close(&msg);
        last = fm_proc_now();
    }
    FILE *f = fopen(out, "w");
    if (!f)
        return 1;
    fprintf(f, "%.9f\n", last);
    fclose(f);
    zsock_destroy(&pull);
    return 0;
}

/* Where the encoded UPDATE is patched per copy: its id, and with --clients its client (the
 * 4 big-endian bytes of a msgpack uint32) and its trainer's 6 digits. */
typedef struct {
    unsigned char *id;
    unsigned char *client;  /* NULL: one client */
    unsigned char *trainer; /* "bench-" S_TRAINER_DIGITS */
    uint32_t clients;
} s_patch_t;

#define S_CLIENT_MARK 0x7EADBEEFu /* the client of the template: found, then overwritten */
#define S_TRAINER_MARK "bench-ZZZZZZ"
#define S_CLIENTS_PER_TRAINER 10

/* Push n copies of the frame buf[0..len), each with its own id (and with p->client, client
 * i mod clients and that client's trainer). */
static void s_push_frames(zsock_t *push, unsigned char *buf, size_t len, const s_patch_t *p,
                          int n)
{
    for (int i = 0; i < n; i++) {
        uint64_t tag = (uint64_t)i + 1;
        memcpy(p->id, &tag, sizeof tag);
        if (p->client) {
            uint32_t c = (uint32_t)i % p->clients;
            unsigned char be[4] = {(unsigned char)(c >> 24), (unsigned char)(c >> 16),
                                   (unsigned char)(c >> 8), (unsigned char)c};
            char digits[12];
            snprintf(digits, sizeof digits, "%06u", c / S_CLIENTS_PER_TRAINER);
            memcpy(p->client, be, 4);
            memcpy(p->trainer + 6, digits, 6);
        }
        zframe_t *f = zframe_new(buf, len);
        zframe_send(&f, push, 0);
    }
}

/* With --clients: one HELLO per trainer on the PUSH (the aggregator's copy, before any
 * UPDATE), then wait (at most 30 s) until stats.json counts every client live. 0 or -1. */
static int s_hello_all(zsock_t *push, uint32_t clients, const char *stats)
{
    uint32_t trainers = (clients + S_CLIENTS_PER_TRAINER - 1) / S_CLIENTS_PER_TRAINER;
    fm_wire_buf_t b = FM_WIRE_BUF_INIT;
    for (uint32_t t = 0; t < trainers; t++) {
        fm_wire_member_t m;
        memset(&m, 0, sizeof m);
        snprintf(m.trainer, sizeof m.trainer, "bench-%06u", t);
        m.pid = 1000 + t;
        m.client_first = t * S_CLIENTS_PER_TRAINER;
        m.client_count = clients - m.client_first < S_CLIENTS_PER_TRAINER
                             ? clients - m.client_first
                             : S_CLIENTS_PER_TRAINER;
        m.workers = 1;
        m.seq = 1;
        if (fm_wire_encode_member(FM_WIRE_HELLO, &m, &b) != 0)
            break;
        zframe_t *f = zframe_new(b.data, b.len);
        zframe_send(&f, push, 0);
    }
    fm_wire_buf_free(&b);
    double t0 = fm_proc_now();
    while (fm_proc_now() - t0 < 30) {
        fm_stats_t st;
        if (fm_stats_read(stats, &st, NULL) == 0 && st.live_clients >= clients)
            return 0;
        fm_proc_sleep(0.05);
    }
    fprintf(stderr, "agg_ingest: the aggregator does not count %u live clients after 30 s\n",
            clients);
    return -1;
}

/* "updates_rejected" of the aggregator's stats.json (fm_stats_read), 0 if unreadable. */
static uint64_t s_rejected(const char *stats)
{
    fm_stats_t st;
    return fm_stats_read(stats, &st, NULL) == 0 ? st.updates_rejected : 0;
}

/* "updates_clipped" of the aggregator's stats.json, 0 if unreadable. */
static uint64_t s_clipped(const char *stats)
{
    fm_stats_t st;
    return fm_stats_read(stats, &st, NULL) == 0 ? st.updates_clipped : 0;
}

/* Count the ids of "applied" ACKs on sub until `want` or the deadline; the count. */
static uint64_t s_acked(zsock_t *sub, uint64_t have)
{
    zframe_t *f;
    while ((f = zframe_recv_nowait(sub)) != NULL) {
        fm_wire_ack_t a;
        if (fm_wire_decode_ack(zframe_data(f), zframe_size(f), &a, NULL) == 0 &&
            strcmp(a.status, "applied") == 0)
            have += a.count;
        zframe_destroy(&f);
    }
    return have;
}

/* [security] mode = curve for a run in `dir`: keys aggregator and bench (trainer, client 0,
 * enrolled in dir/allow), made once. 0 or -1. */
static int s_curve_keys(const char *dir)
{
    char keys[400], allow[400], from[500], to[500];
    snprintf(keys, sizeof keys, "%s/keys", dir);
    snprintf(allow, sizeof allow, "%s/allow", dir);
    if (access(allow, F_OK) == 0)
        return 0;
    fm_errmsg_t e = {{0}};
    if (mkdir(keys, 0700) != 0 || mkdir(allow, 0755) != 0 ||
        fm_sec_keygen(keys, "aggregator", "aggregator", NULL, NULL, &e) != 0 ||
        fm_sec_keygen(keys, "bench", "trainer", "0", NULL, &e) != 0) {
        fprintf(stderr, "agg_ingest: keys: %s\n", e.msg);
        return -1;
    }
    snprintf(from, sizeof from, "%s/bench.cert", keys);
    snprintf(to, sizeof to, "%s/bench.cert", allow);
    return link(from, to);
}

/* Make socket s a CURVE client of the aggregator with the bench key of `dir`. */
static void s_curve_client(zsock_t *s, const char *dir)
{
    char path[400];
    snprintf(path, sizeof path, "%s/keys/bench.cert", dir);
    zcert_t *me = zcert_load(path);
    snprintf(path, sizeof path, "%s/keys/aggregator.cert", dir);
    zcert_t *srv = zcert_load(path);
    zcert_apply(me, s);
    zsock_set_curve_serverkey(s, zcert_public_txt(srv));
    zcert_destroy(&me);
    zcert_destroy(&srv);
}

/* One aggregator run: start it (acks on or off) in `dir`, push the n frames, time until all
 * n - n % k are applied (acks off: stats.json says so; acks on: the "applied" ACKs for them
 * arrived, i.e. durable in a checkpoint), print the "agg" line. The rate, 0 on failure. */
static double s_agg_run(const char *model, int k, int n, int acks, int curve, const char *dir,
                        fm_model_t *m, fm_wire_buf_t *buf, const s_patch_t *patch, double gbs,
                        const char *const *extra, const char *rule)
{
    char self[PATH_MAX], bin[PATH_MAX + 32], sets[20][400], stats[400], log[400];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    self[len > 0 ? len : 0] = 0;
    snprintf(bin, sizeof bin, "%s/fedmq-aggregator", dirname(self));
    int pu = fm_proc_free_port(), pm = fm_proc_free_port(), pa = fm_proc_free_port();
    snprintf(sets[0], 400, "endpoints.updates=tcp://127.0.0.1:%d", pu);
    snprintf(sets[1], 400, "endpoints.aggregator_models=tcp://127.0.0.1:%d", pm);
    snprintf(sets[2], 400, "federation.model=%s", model);
    snprintf(sets[3], 400, "aggregator.buffer_k=%d", k);
    snprintf(sets[4], 400, "aggregator.max_staleness=1000000");
    snprintf(sets[5], 400, "aggregator.checkpoint_every=1000000");
    char tag[32];
    snprintf(tag, sizeof tag, "%s%s", acks ? "on" : "off", curve ? "-curve" : "");
    snprintf(sets[6], 400, "aggregator.checkpoint_dir=%s/ckpt-%s", dir, tag);
    snprintf(sets[7], 400, "aggregator.log_level=warning");
    fm_proc_metrics_set(sets[8], 400, "aggregator", NULL);
    snprintf(sets[9], 400, "aggregator.acks=%s", acks ? "true" : "false");
    snprintf(sets[10], 400, "endpoints.acks=tcp://127.0.0.1:%d", pa);
    int nsets = 11;
    if (patch->client) {
        snprintf(sets[nsets++], 400, "federation.num_clients=%u", patch->clients);
        snprintf(sets[nsets++], 400, "trainer.clients=0-%u", patch->clients - 1);
        snprintf(sets[nsets++], 400, "broker.heartbeat_timeout_s=3600");
        snprintf(sets[nsets++], 400, "broker.trainers_per_peer=4096");
    }
    if (curve) {
        snprintf(sets[nsets++], 400, "security.mode=curve");
        snprintf(sets[nsets++], 400, "security.allow_dir=%s/allow", dir);
        snprintf(sets[nsets++], 400, "security.aggregator_cert=%s/keys/aggregator.cert", dir);
    }
    snprintf(stats, sizeof stats, "%s/ckpt-%s/stats.json", dir, tag);
    snprintf(log, sizeof log, "%s/aggregator-%s.log", dir, tag);
    char *av[40 + 2 * S_EXTRA_MAX];
    int ac = 0;
    av[ac++] = bin;
    for (int i = 0; i < nsets; i++) {
        av[ac++] = "--set";
        av[ac++] = sets[i];
    }
    for (int i = 0; extra[i]; i++) {
        av[ac++] = "--set";
        av[ac++] = (char *)extra[i];
    }
    av[ac] = NULL;
    fm_proc_set_t procs = {0};
    pid_t agg = fm_proc_spawn(&procs, av, log);

    /* wait for its first MODEL: it is up and bound */
    zsock_t *sub = zsock_new(ZMQ_SUB), *push = zsock_new(ZMQ_PUSH), *asub = zsock_new(ZMQ_SUB);
    zsock_set_linger(sub, 0);
    zsock_set_linger(asub, 0);
    zsock_set_linger(push, 2000);
    zsock_set_sndhwm(push, 64);
    zsock_set_subscribe(sub, "");
    zsock_set_subscribe(asub, "");
    zsock_set_rcvhwm(asub, 0);
    if (curve) {
        s_curve_client(sub, dir);
        s_curve_client(asub, dir);
        s_curve_client(push, dir);
    }
    zsock_connect(sub, "tcp://127.0.0.1:%d", pm);
    zsock_connect(asub, "tcp://127.0.0.1:%d", pa);
    zsock_connect(push, "tcp://127.0.0.1:%d", pu);
    zsock_set_rcvtimeo(sub, 10000);
    zframe_t *first = zframe_recv(sub);
    double rate = 0;
    if (!first) {
        fprintf(stderr, "agg_ingest: no MODEL from the aggregator (see %s)\n", log);
        goto cleanup;
    }
    zframe_destroy(&first);
    fm_proc_sleep(0.2); /* the ACK subscription is in place */
    if (patch->client && s_hello_all(push, patch->clients, stats) != 0)
        goto cleanup;

    double t0 = fm_proc_now(), done = 0;
    uint64_t want = (uint64_t)(n - n % k), acked = 0;
    s_push_frames(push, buf->data, buf->len, patch, n);
    while (fm_proc_now() - t0 < 300) {
        fm_stats_t st;
        if (acks) {
            if ((acked = s_acked(asub, acked)) >= want) {
                done = fm_proc_now() - t0;
                break;
            }
        } else if (fm_stats_read(stats, &st, NULL) == 0 && st.updates_applied >= want) {
            done = fm_proc_now() - t0;
            break;
        }
        /* every update judged and some rejected (e.g. --norm-bound with reject): no rate */
        if (fm_stats_read(stats, &st, NULL) == 0 && st.updates_rejected > 0 &&
            st.updates_applied + st.updates_pending + st.updates_rejected >= (uint64_t)n)
            break;
        fm_proc_sleep(0.002);
    }
    long hwm = s_vmhwm_kb(agg);
    double model_bytes = 4.0 * fm_model_nparams(m);
    rate = done > 0 ? (double)want / done : 0;
    double bound = gbs * 1e9 / (3.0 * model_bytes);
    printf("agg model=%s k=%d acks=%s curve=%s aggregation=%s clients=%u updates=%d "
           "frame_bytes=%zu updates_per_s=%.1f memcpy_gbs=%.1f bound_updates_per_s=%.1f "
           "fraction=%.2f peak_rss_mb=%.1f rejected=%llu clipped=%llu\n",
           model, k, acks ? "on" : "off", curve ? "on" : "off", rule,
           patch->client ? patch->clients : 1, n, buf->len, rate, gbs, bound, rate / bound,
           hwm / 1024.0, (unsigned long long)s_rejected(stats),
           (unsigned long long)s_clipped(stats));
    fflush(stdout);
cleanup:
    fm_proc_stop(agg, SIGTERM, 30.0);
    fm_proc_reap_all(&procs);
    zsock_destroy(&sub);
    zsock_destroy(&asub);
    zsock_destroy(&push);
    return rate;
}

int main(int argc, char **argv)
{
    const char *model = "cnn", *acks = "off", *curve = "off", *rule = "mean";
    int k = 10, n = 400, nextra = 0, clients = 0;
    char rule_set[64 + 32], bound_set[64 + 32];
    const char *extra[S_EXTRA_MAX + 1] = {NULL};
    for (int i = 1; i + 1 < argc; i += 2) {
        int is_extra = !strcmp(argv[i], "--aggregation") || !strcmp(argv[i], "--norm-bound") ||
                       !strcmp(argv[i], "--set");
        if (is_extra && nextra == S_EXTRA_MAX) {
            fprintf(stderr, "agg_ingest: at most %d --aggregation/--norm-bound/--set\n",
                    S_EXTRA_MAX);
            return 2;
        }
        if (!strcmp(argv[i], "--aggregation")) {
            rule = argv[i + 1];
            snprintf(rule_set, sizeof rule_set, "aggregator.aggregation=%.64s", rule);
            extra[nextra++] = rule_set;
        } else if (!strcmp(argv[i], "--norm-bound")) {
            snprintf(bound_set, sizeof bound_set, "aggregator.norm_bound=%.64s", argv[i + 1]);
            extra[nextra++] = bound_set;
        } else if (!strcmp(argv[i], "--set"))
            extra[nextra++] = argv[i + 1];
        else if (!strcmp(argv[i], "--model"))
            model = argv[i + 1];
        else if (!strcmp(argv[i], "--k"))
            k = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--updates"))
            n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--acks"))
            acks = argv[i + 1];
        else if (!strcmp(argv[i], "--curve"))
            curve = argv[i + 1];
        else if (!strcmp(argv[i], "--clients"))
            clients = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "agg_ingest: unknown option %s\n", argv[i]);
            return 2;
        }
    }
    int err = 0;
    fm_model_t *m = fm_model_new(model, &err);
    int a_off = !strcmp(acks, "off") || !strcmp(acks, "both");
    int a_on = !strcmp(acks, "on") || !strcmp(acks, "both");
    int c_off = !strcmp(curve, "off") || !strcmp(curve, "both");
    int c_on = !strcmp(curve, "on") || !strcmp(curve, "both");
    if (!m || k < 1 || n < k || (!a_off && !a_on) || (!c_off && !c_on) || clients < 0 ||
        clients > (1 << 20) || (clients && c_on)) {
        fprintf(stderr, "agg_ingest: bad --model/--k/--updates/--acks/--curve/--clients "
                        "(--clients is not for --curve)\n");
        return 2;
    }
    double gbs = s_memcpy_gbs();
    char dir[256];
    if (fm_proc_tmpdir(dir, sizeof dir) != 0)
        return 1;

    /* one encoded update; each copy gets its own id */
    float *delta = malloc(sizeof(float) * fm_model_nparams(m));
    fm_rng_t rng;
    fm_rng_seed(&rng, 7, 0);
    for (size_t i = 0; i < fm_model_nparams(m); i++)
        delta[i] = (float)(fm_rng_normal(&rng) * 1e-4);
    fm_wire_update_t up;
    memset(&up, 0, sizeof up);
    memset(up.id, 0xAB, sizeof up.id);
    /* = the bench key's name, client 0; with --clients, marks patched per copy */
    snprintf(up.trainer, sizeof up.trainer, "%s", clients ? S_TRAINER_MARK : "bench");
    up.client = clients ? S_CLIENT_MARK : 0;
    up.num_samples = 600;
    up.local_steps = 19;
    fm_wire_buf_t buf = FM_WIRE_BUF_INIT;
    fm_wire_encode_update(&up, m, delta, &buf);
    unsigned char pattern[FM_WIRE_ID_LEN];
    memset(pattern, 0xAB, sizeof pattern);
    s_patch_t patch = {.id = memmem(buf.data, buf.len, pattern, sizeof pattern),
                       .clients = (uint32_t)clients};
    if (clients) {
        const unsigned char cmark[5] = {0xce, 0x7E, 0xAD, 0xBE, 0xEF}; /* msgpack uint32 */
        unsigned char *c = memmem(buf.data, buf.len, cmark, sizeof cmark);
        patch.client = c ? c + 1 : NULL;
        patch.trainer = memmem(buf.data, buf.len, S_TRAINER_MARK, strlen(S_TRAINER_MARK));
        if (!patch.client || !patch.trainer) {
            fprintf(stderr, "agg_ingest: --clients: the encoded UPDATE's client or trainer "
                            "was not found (the wire encoding changed?)\n");
            return 1;
        }
    }

    if (c_on && s_curve_keys(dir) != 0)
        return 1;
    double rate = 0;
    int done = 1;
    for (int c = c_off ? 0 : 1; c <= c_on; c++) {
        double r_off = a_off
                           ? s_agg_run(model, k, n, 0, c, dir, m, &buf, &patch, gbs, extra, rule)
                           : 0;
        double r_on = a_on ? s_agg_run(model, k, n, 1, c, dir, m, &buf, &patch, gbs, extra, rule)
                           : 0;
        double r = a_off ? r_off : r_on;
        done = done && (!a_off || r_off > 0) && (!a_on || r_on > 0);
        if (a_off && a_on)
            printf("acks model=%s k=%d curve=%s updates_per_s_off=%.1f updates_per_s_on=%.1f "
                   "on_vs_off=%.2f\n",
                   model, k, c ? "on" : "off", r_off, r_on, r_off > 0 ? r_on / r_off : 0.0);
        if (c == 1 && c_off)
            printf("curve model=%s k=%d acks=%s updates_per_s_off=%.1f updates_per_s_on=%.1f "
                   "on_vs_off=%.2f\n",
                   model, k, a_off ? "off" : "on", rate, r, rate > 0 ? r / rate : 0.0);
        if (c == 0 || !c_off)
            rate = r;
    }

    /* the transport's ceiling: the same frames to a sink that drops them */
    int ps = fm_proc_free_port();
    char sink_out[400];
    snprintf(sink_out, sizeof sink_out, "%s/sink.txt", dir);
    zsys_shutdown(); /* no ZeroMQ context across fork */
    pid_t child = fork();
    if (child == 0)
        _exit(s_sink(ps, n, buf.len, sink_out));
    zsock_t *push = zsock_new(ZMQ_PUSH);
    zsock_set_linger(push, 2000);
    zsock_set_sndhwm(push, 64);
    zsock_connect(push, "tcp://127.0.0.1:%d", ps);
    fm_proc_sleep(0.5); /* the sink binds */
    double s0 = fm_proc_now();
    s_push_frames(push, buf.data, buf.len, &patch, n);
    int st = 0;
    double sink_rate = 0;
    if (fm_proc_wait(child, 300) != -1) {
        FILE *f = fopen(sink_out, "r");
        double end = 0;
        if (f && fscanf(f, "%lf", &end) == 1 && end > s0)
            sink_rate = n / (end - s0);
        if (f)
            fclose(f);
    } else {
        kill(child, SIGKILL);
        waitpid(child, &st, 0);
    }
    printf("sink model=%s updates=%d updates_per_s=%.1f gbs=%.2f aggregator_vs_sink=%.2f\n",
           model, n, sink_rate, sink_rate * buf.len / 1e9,
           sink_rate > 0 ? rate / sink_rate : 0.0);
    zsock_destroy(&push);
    fm_wire_buf_free(&buf);
    free(delta);
    fm_model_destroy(&m);
    fm_proc_rmtree(dir);
    return done && sink_rate > 0 ? 0 : 1;
}

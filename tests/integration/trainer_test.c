/* trainer_test: the real fedmq-trainer against a test that plays broker and aggregator.
 *
 * The test binds a ROUTER on endpoints.snapshot (answers HELLO and SNAPSHOT_REQ with the
 * current MODEL, counts HEARTBEAT/BYE), a PUB on endpoints.model_pub and a PULL on
 * endpoints.updates (checks every UPDATE), all on tcp://127.0.0.1 with free ports. The
 * trainer runs mlp over 20 clients, serving clients 0-3 with 2 workers. Every wait is
 * bounded; every child is reaped. Also checks trainer_sim's pure functions, and (test_replay)
 * the content of UPDATEs against one client's local training replayed in this process, and
 * (test_attack) those of bench/fedmq_attacker against the replay attacked here, and
 * (test_dpsgd) DP-SGD's accounts and budget per client, and (test_dpsgd_restart) those
 * accounts kept across a SIGKILL in [trainer] dp_accounts_file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <czmq.h>
#include <math.h>
#include <limits.h>

#include "../support/fm_proc.h"
#include "../support/fm_zbind.h"
#include "fm_blas.h"
#include "fm_data.h"
#include "fm_engine.h"
#include "fm_optim.h"
#include "fm_parse.h"
#include "fm_rdp.h"
#include "fm_model.h"
#include "fm_train.h"
#include "fm_wire.h"
#include "trainer_attack.h"
#include "trainer_sim.h"

/* The old out-parameter shape over the CLASS constructors, for the many checks below. */
static int s_load_dir(fm_dataset_t **out, const char *dir, const char *split, float mean,
                      float std, fm_errmsg_t *e)
{
    int err = 0;
    *out = fm_dataset_load_dir(dir, split, mean, std, &err, e);
    return *out ? 0 : err;
}

static int s_part_new(fm_partition_t **out, const fm_dataset_t *ds, const char *spec,
                      uint32_t nclients, uint64_t seed, fm_errmsg_t *e)
{
    int err = 0;
    *out = fm_partition_new(ds, spec, nclients, seed, &err, e);
    return *out ? 0 : err;
}

#define NUM_CLIENTS 20
#define CLIENT_FIRST 0
#define CLIENT_LAST 3
#define WORKERS 2
#define SEED 1
#define PARTITION "dirichlet:0.5"
#define MAX_UPDATES 4096
#define MAX_SPAWN_S 60.0 /* HELLO of a new trainer (data load; slow under ASan) */

typedef struct {
    /* the test's sockets */
    zsock_t *router, *pub, *pull;
    zpoller_t *poller;
    char ep_pub[64], ep_snap[64], ep_upd[64];
    char ep_upd_override[64]; /* non-empty: the trainer pushes here instead */
    char tmp[512], log[600];
    char config[600];        /* non-empty: the trainer's --config instead of the repo's */
    const char *bin;         /* non-NULL: spawn this instead of fedmq-trainer (once) */
    const char *bin_args[8]; /* its own flags before --config, NULL-terminated */
    fm_proc_set_t procs;
    /* the model the test serves */
    fm_model_t *layout;
    uint64_t model_version; /* 0: answer nothing (a broker with no model) */
    fm_wire_buf_t model_frame;
    int send_junk_first; /* before the first HELLO reply: a malformed frame */
    /* reference partition */
    fm_dataset_t *ds;
    fm_partition_t *part;
    /* what arrived */
    fm_wire_tensors_t *tensors;
    float *delta;
    int hellos, trainer_hellos, heartbeats, byes, snapshot_reqs, bad;
    pid_t last_hello_pid, last_bye_pid;
    char last_hello_trainer[FM_WIRE_STR_MAX + 1]; /* "trainer" of the last HELLO */
    uint64_t last_seq;                            /* of the current incarnation */
    uint64_t last_sent;                           /* "sent" of the last HEARTBEAT */
    pid_t seq_pid;
    int seq_errors;
    int nupdates;
    uint8_t ids[MAX_UPDATES][FM_WIRE_ID_LEN];
    uint64_t bases[MAX_UPDATES];
    uint32_t clients[MAX_UPDATES];
    pid_t pids[MAX_UPDATES];
    int update_errors; /* UPDATEs failing a check (details printed) */
    /* the last UPDATE that passed decoding */
    float *last_delta;
    fm_wire_update_t last;
    pid_t last_pid;
    pid_t trainer; /* the trainer of the current test */
    int dp;        /* the trainer runs DP-SGD: UPDATEs carry no loss (NaN) */
} t_state_t;

/* ---- helpers ------------------------------------------------------------------------------ */

/* Encode MODEL v`version` (params seeded by version) as the frame the test serves. */
static void t_set_model(t_state_t *s, uint64_t version)
{
    fm_model_init(s->layout, 100 + version);
    fm_wire_model_t hdr;
    memset(&hdr, 0, sizeof hdr);
    hdr.version = version;
    hdr.created = 1.7e9 + (double)version;
    assert_int_equal(
        fm_wire_encode_model(&hdr, s->layout, fm_model_params(s->layout), &s->model_frame), 0);
    s->model_version = version;
}

static void t_reply(t_state_t *s, zframe_t *id, const void *data, size_t len)
{
    zmsg_t *m = zmsg_new();
    zmsg_append(m, &id);
    zmsg_addmem(m, data, len);
    zmsg_send(&m, s->router);
}

static void t_on_router(t_state_t *s)
{
    zmsg_t *msg = zmsg_recv(s->router);
    if (!msg)
        return;
    if (zmsg_size(msg) != 2) {
        s->bad++;
        zmsg_destroy(&msg);
        return;
    }
    zframe_t *id = zmsg_pop(msg);
    zframe_t *body = zmsg_first(msg);
    fm_wire_type_t type;
    fm_errmsg_t e;
    if (fm_wire_peek(zframe_data(body), zframe_size(body), &type, &e) != 0) {
        fprintf(stderr, "router: bad frame: %s\n", e.msg);
        s->bad++;
    } else if (type == FM_WIRE_SNAPSHOT_REQ) {
        fm_wire_snapshot_req_t r;
        if (fm_wire_decode_snapshot_req(zframe_data(body), zframe_size(body), &r, &e) != 0)
            s->bad++;
        s->snapshot_reqs++;
        if (s->model_version)
            t_reply(s, zframe_dup(id), s->model_frame.data, s->model_frame.len);
    } else {
        fm_wire_member_t m;
        if (fm_wire_decode_member(zframe_data(body), zframe_size(body), &type, &m, &e) != 0) {
            fprintf(stderr, "router: bad member frame: %s\n", e.msg);
            s->bad++;
        } else {
            if (type == FM_WIRE_HELLO) {
                s->hellos++;
                if ((pid_t)m.pid == s->trainer)
                    s->trainer_hellos++;
                s->last_hello_pid = (pid_t)m.pid;
                snprintf(s->last_hello_trainer, sizeof s->last_hello_trainer, "%s", m.trainer);
                /* seq 0 for a new incarnation; a HELLO after a reconnect continues it */
                if ((pid_t)m.pid == s->seq_pid ? m.seq <= s->last_seq : m.seq != 0)
                    s->seq_errors++;
                if (m.client_first != CLIENT_FIRST ||
                    m.client_count != CLIENT_LAST - CLIENT_FIRST + 1 || m.workers != WORKERS)
                    s->seq_errors++;
                s->seq_pid = (pid_t)m.pid;
                s->last_seq = m.seq;
                if (s->send_junk_first) {
                    static const unsigned char junk[] = {0x81, 0xa1, 0x76, 0xdd, 0xff, 0xff};
                    t_reply(s, zframe_dup(id), junk, sizeof junk);
                    s->send_junk_first = 0;
                }
                if (s->model_version)
                    t_reply(s, zframe_dup(id), s->model_frame.data, s->model_frame.len);
            } else if ((pid_t)m.pid == s->seq_pid) {
                if (m.seq <= s->last_seq)
                    s->seq_errors++;
                s->last_seq = m.seq;
            }
            if (type == FM_WIRE_HEARTBEAT && (pid_t)m.pid == s->trainer) {
                s->heartbeats++;
                if (m.updates_sent < s->last_sent || m.busy > m.workers)
                    s->seq_errors++;
                s->last_sent = m.updates_sent;
            }
            if (type == FM_WIRE_BYE) {
                s->byes++;
                s->last_bye_pid = (pid_t)m.pid;
            }
        }
    }
    zframe_destroy(&id);
    zmsg_destroy(&msg);
}

static void t_update_fail(t_state_t *s, const char *why)
{
    fprintf(stderr, "UPDATE %d rejected by the test: %s\n", s->nupdates, why);
    s->update_errors++;
}

static void t_on_update(t_state_t *s)
{
    zframe_t *f = zframe_recv(s->pull);
    if (!f)
        return;
    fm_wire_update_t u;
    fm_errmsg_t e;
    char why[512];
    fm_wire_type_t type;
    if (fm_wire_peek(zframe_data(f), zframe_size(f), &type, NULL) == 0 &&
        (type == FM_WIRE_HELLO || type == FM_WIRE_HEARTBEAT || type == FM_WIRE_BYE)) {
        zframe_destroy(&f); /* membership for the aggregator (checked on the DEALER side) */
        return;
    }
    if (fm_wire_decode_update(zframe_data(f), zframe_size(f), &u, s->tensors, &e) != 0 ||
        fm_wire_tensors_check(s->tensors, s->layout, &e) != 0 ||
        fm_wire_tensors_finite(s->tensors, NULL, &e) != 0 ||
        fm_wire_tensors_copy(s->tensors, s->layout, s->delta, &e) != 0) {
        t_update_fail(s, e.msg);
        zframe_destroy(&f);
        return;
    }
    zframe_destroy(&f);
    if (s->nupdates >= MAX_UPDATES)
        return;
    memcpy(s->last_delta, s->delta, fm_model_nparams(s->layout) * sizeof(float));
    s->last = u;
    int i = s->nupdates++;
    memcpy(s->ids[i], u.id, FM_WIRE_ID_LEN);
    s->bases[i] = u.base;
    s->clients[i] = u.client;
    const char *dash = strrchr(u.trainer, '-');
    s->pids[i] = dash ? (pid_t)atoi(dash + 1) : -1;
    s->last_pid = s->pids[i];
    for (int j = 0; j < i; j++)
        if (memcmp(s->ids[j], u.id, FM_WIRE_ID_LEN) == 0)
            t_update_fail(s, "duplicate id");
    if (u.client > CLIENT_LAST) { /* CLIENT_FIRST is 0 */
        snprintf(why, sizeof why, "client %u outside %d-%d", u.client, CLIENT_FIRST, CLIENT_LAST);
        t_update_fail(s, why);
        return;
    }
    uint64_t n = s->part->offsets[u.client + 1] - s->part->offsets[u.client];
    if (u.num_samples != n) {
        snprintf(why, sizeof why, "client %u: n %llu, partition has %llu", u.client,
                 (unsigned long long)u.num_samples, (unsigned long long)n);
        t_update_fail(s, why);
    }
    if (u.local_steps < 1 ||
        (s->dp ? !isnan(u.train_loss) : !isfinite(u.train_loss) || u.train_loss <= 0) ||
        !(u.train_seconds > 0))
        t_update_fail(s, "steps, loss or secs out of range");
    double m = 0;
    size_t np = fm_model_nparams(s->layout);
    for (size_t k = 0; k < np; k++)
        m = fmax(m, fabs((double)s->delta[k]));
    if (!(m > 0))
        t_update_fail(s, "delta is zero");
}

/* Serve both sockets for up to `seconds`, or until cond(s) holds (cond may be NULL). */
static int t_pump(t_state_t *s, int (*cond)(t_state_t *), double seconds)
{
    double end = fm_proc_now() + seconds;
    for (;;) {
        if (cond && cond(s))
            return 1;
        double left = end - fm_proc_now();
        if (left <= 0)
            return cond ? cond(s) : 1;
        zsock_t *which = zpoller_wait(s->poller, left < 0.02 ? 1 : 20);
        if (which == s->router)
            t_on_router(s);
        else if (which == s->pull)
            t_on_update(s);
    }
}

static pid_t t_spawn(t_state_t *s, const char *extra1, const char *extra2)
{
    char o_pub[100], o_snap[100], o_upd[100], o_cl[64], o_met[64];
    snprintf(o_pub, sizeof o_pub, "endpoints.model_pub=%s", s->ep_pub);
    snprintf(o_snap, sizeof o_snap, "endpoints.snapshot=%s", s->ep_snap);
    snprintf(o_upd, sizeof o_upd, "endpoints.updates=%s",
             s->ep_upd_override[0] ? s->ep_upd_override : s->ep_upd);
    snprintf(o_cl, sizeof o_cl, "trainer.clients=%d-%d", CLIENT_FIRST, CLIENT_LAST);
    char *argv[40];
    int a = 0;
    argv[a++] = (char *)(s->bin ? s->bin : FM_BIN_DIR "/fedmq-trainer");
    for (int i = 0; s->bin && s->bin_args[i]; i++)
        argv[a++] = (char *)s->bin_args[i];
    s->bin = NULL;
    argv[a++] = "--config";
    argv[a++] = s->config[0] ? s->config : FM_SOURCE_DIR "/configs/fedmq.conf";
    const char *sets[] = {"federation.model=mlp",
                          "federation.num_clients=20",
                          "federation.partition=" PARTITION,
                          "federation.seed=1",
                          "federation.data_dir=" FM_DATA_DIR,
                          "trainer.workers=2",
                          "trainer.heartbeat_interval_s=0.5",
                          "trainer.slowdown_sigma=0.3",
                          o_pub,
                          o_snap,
                          o_upd,
                          o_cl,
                          fm_proc_metrics_set(o_met, sizeof o_met, "trainer", NULL),
                          extra1,
                          extra2};
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        if (!sets[i])
            continue;
        argv[a++] = "--set";
        argv[a++] = (char *)sets[i];
    }
    argv[a] = NULL;
    pid_t pid = fm_proc_spawn(&s->procs, argv, s->log);
    assert_true(pid > 0);
    s->trainer = pid;
    s->trainer_hellos = 0;
    s->heartbeats = 0;
    s->last_sent = 0;
    return pid;
}

static int t_hello_from_trainer(t_state_t *s) { return s->last_hello_pid == s->trainer; }
static int t_second_hello(t_state_t *s) { return s->trainer_hellos >= 2; }
static int t_bye_from_trainer(t_state_t *s) { return s->last_bye_pid == s->trainer; }

static int t_count_from(t_state_t *s, pid_t pid, int from, int base)
{
    int c = 0;
    for (int i = from; i < s->nupdates; i++)
        if (s->pids[i] == pid && (base < 0 || s->bases[i] == (uint64_t)base))
            c++;
    return c;
}

/* The counters of the last "<what>: updates sent N, dropped D, dropouts P, ..." line of
 * `log` (the trainer's summary: "summary" every 10 s, "final" at exit); 1 if there is one. */
static int t_summary(const char *log, const char *what, unsigned long long *sent,
                     unsigned long long *dropouts)
{
    FILE *f = fopen(log, "r");
    if (!f)
        return 0;
    char line[2048], key[64];
    snprintf(key, sizeof key, "%s: updates sent ", what);
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, key);
        unsigned long long a, b, c;
        if (p && sscanf(p + strlen(key),
                        "%llu (acknowledged %*u, refused %*u, resent %*u, given up %*u, "
                        "waiting %*u), dropped %llu, dropouts %llu",
                        &a, &b, &c) == 3) {
            *sent = a;
            *dropouts = c;
            found = 1;
        }
    }
    fclose(f);
    return found;
}

static int t_six_updates(t_state_t *s) { return t_count_from(s, s->trainer, 0, 5) >= 6; }
static int t_base6(t_state_t *s) { return t_count_from(s, s->trainer, 0, 6) >= 3; }
static int t_heartbeats(t_state_t *s) { return s->heartbeats >= 4; }
static int t_any_update(t_state_t *s) { return t_count_from(s, s->trainer, 0, -1) >= 1; }
static int t_two_updates(t_state_t *s) { return t_count_from(s, s->trainer, 0, -1) >= 2; }

/* ---- setup -------------------------------------------------------------------------------- */

static int t_setup(void **state)
{
    t_state_t *s = calloc(1, sizeof *s);
    if (!s)
        return -1;
    zsys_handler_set(NULL);
    if (fm_proc_tmpdir(s->tmp, sizeof s->tmp) != 0)
        return -1;
    snprintf(s->log, sizeof s->log, "%s/trainer.log", s->tmp);
    s->router = fm_zbind_loopback(ZMQ_ROUTER, s->ep_snap, sizeof s->ep_snap);
    s->pub = fm_zbind_loopback(ZMQ_PUB, s->ep_pub, sizeof s->ep_pub);
    s->pull = fm_zbind_loopback(ZMQ_PULL, s->ep_upd, sizeof s->ep_upd);
    if (!s->router || !s->pub || !s->pull)
        return -1;
    s->poller = zpoller_new(s->router, s->pull, NULL);
    int err = 0;
    s->layout = fm_model_new("mlp", &err);
    s->tensors = malloc(sizeof *s->tensors);
    if (!s->poller || !s->layout || !s->tensors)
        return -1;
    s->delta = malloc(fm_model_nparams(s->layout) * sizeof(float));
    s->last_delta = malloc(fm_model_nparams(s->layout) * sizeof(float));
    fm_errmsg_t e;
    if (!s->delta || !s->last_delta ||
        s_load_dir(&s->ds, FM_DATA_DIR, "train", FM_FASHION_MEAN, FM_FASHION_STD, &e) ||
        s_part_new(&s->part, s->ds, PARTITION, NUM_CLIENTS, SEED, &e)) {
        fprintf(stderr, "setup: %s\n", e.msg);
        return -1;
    }
    /* trainers train on what is left after the held-out slices (federation.holdout,
     * default 0.1): the "n" of every UPDATE must be that, never the whole partition */
    fm_partition_t *train = NULL, *held = NULL;
    if (fm_partition_holdout(s->part, 0.1, SEED, &train, &held, &e) != 0) {
        fprintf(stderr, "setup: %s\n", e.msg);
        return -1;
    }
    fm_partition_destroy(&s->part);
    fm_partition_destroy(&held);
    s->part = train;
    fm_dataset_destroy(&s->ds); /* only the partition is needed */
    *state = s;
    return 0;
}

static int t_teardown(void **state)
{
    t_state_t *s = *state;
    if (!s)
        return 0;
    fm_proc_reap_all(&s->procs);
    if (getenv("FM_KEEP_LOGS") == NULL)
        fm_proc_rmtree(s->tmp);
    else
        fprintf(stderr, "logs kept in %s\n", s->tmp);
    zpoller_destroy(&s->poller);
    zsock_destroy(&s->router);
    zsock_destroy(&s->pub);
    zsock_destroy(&s->pull);
    fm_model_destroy(&s->layout);
    fm_partition_destroy(&s->part);
    fm_dataset_destroy(&s->ds);
    fm_wire_buf_free(&s->model_frame);
    free(s->tensors);
    free(s->delta);
    free(s->last_delta);
    free(s);
    return 0;
}

/* ---- trainer_sim (pure functions) --------------------------------------------------------- */

static void test_sim(void **state)
{
    (void)state;
    /* client ranges: fm_parse_range, as trainer_pool_new uses it */
    long first = 9, last = 9;
    assert_int_equal(fm_parse_range("clients", "0-99", 0, INT_MAX, &first, &last, NULL), 0);
    assert_int_equal(first, 0);
    assert_int_equal(last, 99);
    assert_int_equal(fm_parse_range("clients", "5", 0, INT_MAX, &first, &last, NULL), 0);
    assert_int_equal(first, 5);
    assert_int_equal(last, 5);
    const char *bad[] = {"", "-1", "5-2", "a", "1-", "1-2x", "1 - 2", "99999999999", "0-100"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_not_equal(fm_parse_range("clients", bad[i], 0, 99, &first, &last, NULL), 0);
    assert_int_equal(first, 5); /* untouched on error */

    /* slowdown: deterministic per (seed, client), 1 without sigma, lognormal spread */
    assert_true(trainer_sim_slowdown(1, 3, 0.0) == 1.0);
    assert_true(trainer_sim_slowdown(1, 3, 0.5) == trainer_sim_slowdown(1, 3, 0.5));
    double logsum = 0, logsq = 0;
    for (uint32_t k = 0; k < 2000; k++) {
        double l = log(trainer_sim_slowdown(7, k, 0.5));
        logsum += l;
        logsq += l * l;
    }
    double mean = logsum / 2000, sd = sqrt(logsq / 2000 - mean * mean);
    assert_true(fabs(mean) < 0.05);
    assert_true(fabs(sd - 0.5) < 0.05);

    /* dropout: rate close to p, fraction in (0, 1), deterministic */
    int drops = 0;
    for (uint64_t run = 0; run < 4000; run++) {
        double f;
        int d = trainer_sim_dropout(1, (uint32_t)(run % 7), run, 0.25, &f);
        if (d) {
            drops++;
            assert_true(f > 0 && f < 1);
        }
        double f2;
        assert_int_equal(d, trainer_sim_dropout(1, (uint32_t)(run % 7), run, 0.25, &f2));
    }
    assert_true(drops > 850 && drops < 1150);
    double f;
    assert_int_equal(trainer_sim_dropout(1, 0, 0, 0.0, &f), 0);
    assert_int_equal(trainer_sim_dropout(1, 0, 0, 1.0, &f), 1);
    assert_true(trainer_sim_train_seed(1, 0, 0) != trainer_sim_train_seed(1, 0, 1));
    assert_true(trainer_sim_train_seed(1, 0, 0) != trainer_sim_train_seed(1, 1, 0));
}

/* ---- the daemon ---------------------------------------------------------------------------- */

static void test_bad_config(void **state)
{
    t_state_t *s = *state;
    char *argv1[] = {FM_BIN_DIR "/fedmq-trainer", "--set", "trainer.workers=0", NULL};
    pid_t pid = fm_proc_spawn(&s->procs, argv1, s->log);
    int st = fm_proc_wait(pid, 30);
    assert_true(st != -1 && WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);
    char *argv2[] = {FM_BIN_DIR "/fedmq-trainer", "--set", "federation.num_clients=4", NULL};
    pid = fm_proc_spawn(&s->procs, argv2, s->log); /* clients 0-99 > num_clients */
    st = fm_proc_wait(pid, 30);
    assert_true(st != -1 && WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);
    /* a missing data directory is a runtime failure: exit 1, one line */
    char nodata_log[700];
    snprintf(nodata_log, sizeof nodata_log, "%s/nodata.log", s->tmp);
    char *argv4[] = {FM_BIN_DIR "/fedmq-trainer", "--set", "federation.data_dir=/nonexistent",
                     NULL};
    pid = fm_proc_spawn(&s->procs, argv4, nodata_log);
    st = fm_proc_wait(pid, 30);
    assert_true(st != -1 && WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
    assert_int_equal(fm_proc_file_count(nodata_log, ""), 1);
    assert_true(fm_proc_file_contains(nodata_log, "ERROR [federation] data_dir = /nonexistent"));
    /* an endpoint that cannot be connected (an ipc path longer than sun_path): exit 1, one
     * line naming the key, the endpoint and the reason */
    char ep_log[700], ep_set[800];
    snprintf(ep_log, sizeof ep_log, "%s/endpoint.log", s->tmp);
    snprintf(ep_set, sizeof ep_set, "endpoints.updates=ipc://%s/%0150d", s->tmp, 0);
    char *argv5[] = {FM_BIN_DIR "/fedmq-trainer", "--set", ep_set, NULL};
    pid = fm_proc_spawn(&s->procs, argv5, ep_log);
    st = fm_proc_wait(pid, 30);
    assert_true(st != -1 && WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 1);
    assert_int_equal(fm_proc_file_count(ep_log, ""), 1);
    assert_true(fm_proc_file_contains(ep_log, "ERROR [endpoints] updates = ipc://"));
    assert_true(fm_proc_file_contains(ep_log, ": cannot connect: File name too long"));
    char *argv3[] = {FM_BIN_DIR "/fedmq-trainer", "--bogus", NULL};
    pid = fm_proc_spawn(&s->procs, argv3, s->log);
    st = fm_proc_wait(pid, 30);
    assert_true(st != -1 && WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);
}

/* 1: HELLO, then (after MODEL v5, preceded by a malformed frame) valid UPDATEs with base 5. */
static void test_updates(void **state)
{
    t_state_t *s = *state;
    t_set_model(s, 5);
    s->send_junk_first = 1;
    t_spawn(s, NULL, NULL);
    assert_true(t_pump(s, t_hello_from_trainer, MAX_SPAWN_S));
    assert_true(t_pump(s, t_six_updates, 60));
    assert_int_equal(s->update_errors, 0);
    for (int i = 0; i < s->nupdates; i++)
        assert_int_equal(s->bases[i], 5);
    assert_int_equal(s->seq_errors, 0);
    assert_int_equal(s->bad, 0);
}

/* 2: MODEL v6 on the PUB: later UPDATEs start from it. */
static void test_new_version(void **state)
{
    t_state_t *s = *state;
    /* a MODEL of another architecture is rejected (counted), never trained on */
    int err = 0;
    fm_model_t *other = fm_model_new("logreg", &err);
    assert_non_null(other);
    fm_wire_model_t hdr = {.version = 100, .created = 1.8e9};
    fm_wire_buf_t frame = FM_WIRE_BUF_INIT;
    assert_int_equal(fm_wire_encode_model(&hdr, other, fm_model_params(other), &frame), 0);
    double until = fm_proc_now() + 10;
    while (!fm_proc_file_contains(s->log, "this trainer runs mlp") && fm_proc_now() < until) {
        zsock_send(s->pub, "b", frame.data, frame.len);
        t_pump(s, NULL, 0.2);
    }
    fm_wire_buf_free(&frame);
    fm_model_destroy(&other);
    assert_true(fm_proc_file_contains(s->log, "this trainer runs mlp"));

    t_set_model(s, 6);
    int from = s->nupdates;
    double end = fm_proc_now() + 30;
    while (!t_base6(s) && fm_proc_now() < end) {
        zsock_send(s->pub, "b", s->model_frame.data, s->model_frame.len);
        t_pump(s, NULL, 0.2);
    }
    assert_true(t_base6(s));
    /* after the first base-6 update, at most one in-flight base-5 update per worker */
    int first6 = -1, late5 = 0;
    for (int i = from; i < s->nupdates; i++) {
        if (s->pids[i] != s->trainer)
            continue;
        if (s->bases[i] == 6 && first6 < 0)
            first6 = i;
        else if (first6 >= 0 && s->bases[i] == 5)
            late5++;
        assert_true(s->bases[i] == 5 || s->bases[i] == 6);
    }
    assert_true(late5 <= WORKERS);
    for (int i = 0; i < s->nupdates; i++)
        assert_true(s->bases[i] != 100);
    assert_int_equal(s->update_errors, 0);
}

/* 3: HEARTBEATs every 0.5 s with increasing seq and a non-decreasing "sent". */
static void test_heartbeats(void **state)
{
    t_state_t *s = *state;
    s->heartbeats = 0;
    double t0 = fm_proc_now();
    assert_true(t_pump(s, t_heartbeats, 10));
    assert_true(fm_proc_now() - t0 < 5.0);
    assert_int_equal(s->seq_errors, 0);
    assert_true(s->last_sent >= 1);
}

/* The broker restarts (the test's ROUTER closes and binds again): the trainer says HELLO
 * again on the new connection and keeps heartbeating. */
static void test_reconnect_hello(void **state)
{
    t_state_t *s = *state;
    assert_int_equal(s->trainer_hellos, 1);
    zpoller_destroy(&s->poller);
    zsock_destroy(&s->router);
    fm_proc_sleep(0.3);
    s->router = zsock_new(ZMQ_ROUTER);
    assert_non_null(s->router);
    zsock_set_linger(s->router, 0);
    int bound = -1;
    for (int i = 0; i < 50 && bound < 0; i++) { /* the port may take a moment to free */
        bound = zsock_bind(s->router, "%s", s->ep_snap);
        if (bound < 0)
            fm_proc_sleep(0.1);
    }
    assert_true(bound >= 0);
    s->poller = zpoller_new(s->router, s->pull, NULL);
    assert_non_null(s->poller);
    assert_true(t_pump(s, t_second_hello, 15));
    s->heartbeats = 0;
    assert_true(t_pump(s, t_heartbeats, 10));
    assert_int_equal(s->seq_errors, 0);
}

/* 5: SIGTERM: BYE, exit 0, promptly. */
static void test_sigterm_bye(void **state)
{
    t_state_t *s = *state;
    double t0 = fm_proc_now();
    kill(s->trainer, SIGTERM);
    assert_true(t_pump(s, t_bye_from_trainer, 15));
    int st = fm_proc_wait(s->trainer, 15);
    assert_true(st != -1);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_true(fm_proc_now() - t0 < 15);
    assert_true(fm_proc_file_contains(s->log, "BYE sent"));
    assert_true(fm_proc_file_contains(s->log, "bad frame on snapshot dropped"));
    t_pump(s, NULL, 0.3); /* drain the last queued UPDATEs */
    assert_int_equal(s->update_errors, 0);
}

/* 4: dropout_prob = 1: clients drop out (the trainer's summary line counts them), no
 * UPDATE is sent, and the trainer is alive and heartbeats. */
static void test_dropout(void **state)
{
    t_state_t *s = *state;
    t_set_model(s, 7);
    int summaries = fm_proc_file_count(s->log, "summary: updates sent ");
    int finals = fm_proc_file_count(s->log, "final: updates sent ");
    pid_t pid = t_spawn(s, "trainer.dropout_prob=1.0", NULL);
    assert_true(t_pump(s, t_hello_from_trainer, MAX_SPAWN_S));
    s->heartbeats = 0;
    /* the summary comes every 10 s: wait for one (of this trainer) counting dropouts */
    unsigned long long sent = 1, dropouts = 0;
    double end = fm_proc_now() + 60;
    while (fm_proc_now() < end &&
           !(fm_proc_file_count(s->log, "summary: updates sent ") > summaries &&
             t_summary(s->log, "summary", &sent, &dropouts) && dropouts > 0))
        t_pump(s, NULL, 0.2);
    assert_true(fm_proc_file_count(s->log, "summary: updates sent ") > summaries);
    assert_true(dropouts > 0);
    assert_true(sent == 0);
    assert_int_equal(t_count_from(s, pid, 0, -1), 0);
    assert_true(s->heartbeats >= 4);
    assert_int_equal(waitpid(pid, NULL, WNOHANG), 0);
    /* SIGHUP: the configuration is reloaded, the trainer keeps running */
    kill(pid, SIGHUP);
    s->heartbeats = 0;
    assert_true(t_pump(s, t_heartbeats, 10));
    assert_true(fm_proc_file_contains(s->log, "SIGHUP: config reloaded"));
    int st = fm_proc_stop(pid, SIGTERM, 15);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_int_equal(s->seq_errors, 0);
    t_pump(s, NULL, 0.3);
    assert_int_equal(t_count_from(s, pid, 0, -1), 0);
    unsigned long long last_dropouts = dropouts;
    assert_int_equal(fm_proc_file_count(s->log, "final: updates sent "), finals + 1);
    assert_true(t_summary(s->log, "final", &sent, &dropouts));
    assert_true(sent == 0);
    assert_true(dropouts >= last_dropouts);
}

/* Write a trainer config file: [trainer] log_level and threads_per_worker. */
static void t_write_config(const char *path, const char *level, int threads)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "[trainer]\nlog_level = %s\nthreads_per_worker = %d\n", level, threads);
    assert_int_equal(fclose(f), 0);
}

static int t_reqs_before; /* test_reload's baseline of snapshot requests */
static int t_one_more_req(t_state_t *s) { return s->snapshot_reqs > t_reqs_before; }

/* Pump until the log has more than `more_than` lines containing `needle` (10 s bound). */
static int t_log_wait(t_state_t *s, const char *needle, int more_than)
{
    double end = fm_proc_now() + 10;
    while (fm_proc_file_count(s->log, needle) <= more_than && fm_proc_now() < end)
        t_pump(s, NULL, 0.05);
    return fm_proc_file_count(s->log, needle) > more_than;
}

/* SIGHUP reloads: log_level info -> debug is applied (the DEBUG line of each SNAPSHOT_REQ
 * appears), then a change of threads_per_worker (not reloadable) is refused with one line
 * and the running config stays (the DEBUG lines go on although the file says info again).
 * No model is served, so the trainer keeps asking for snapshots (2 s, then backing off). */
static void test_reload(void **state)
{
    t_state_t *s = *state;
    snprintf(s->config, sizeof s->config, "%s/reload.conf", s->tmp);
    t_write_config(s->config, "info", 1);
    s->model_version = 0;
    t_reqs_before = s->snapshot_reqs;
    pid_t pid = t_spawn(s, NULL, NULL);
    assert_true(t_pump(s, t_one_more_req, MAX_SPAWN_S));
    int debug_lines = fm_proc_file_count(s->log, "SNAPSHOT_REQ sent");
    assert_int_equal(debug_lines, 0);

    t_write_config(s->config, "debug", 1);
    assert_int_equal(kill(pid, SIGHUP), 0);
    assert_true(t_log_wait(s,
                           "SIGHUP: config reloaded; changed: [trainer] log_level: info -> "
                           "debug",
                           0));
    t_reqs_before = s->snapshot_reqs;
    assert_true(t_pump(s, t_one_more_req, 15));
    assert_true(t_log_wait(s, "SNAPSHOT_REQ sent", debug_lines));
    debug_lines = fm_proc_file_count(s->log, "SNAPSHOT_REQ sent");

    int refused = fm_proc_file_count(s->log, "SIGHUP: config not reloaded");
    t_write_config(s->config, "info", 3);
    assert_int_equal(kill(pid, SIGHUP), 0);
    assert_true(t_log_wait(s, "SIGHUP: config not reloaded", refused));
    assert_int_equal(fm_proc_file_count(s->log, "SIGHUP: config not reloaded"), refused + 1);
    assert_int_equal(fm_proc_file_count(s->log, "[trainer] threads_per_worker changed from 1 "
                                                "to 3"),
                     1);
    t_reqs_before = s->snapshot_reqs;
    assert_true(t_pump(s, t_one_more_req, 15));
    assert_true(t_log_wait(s, "SNAPSHOT_REQ sent", debug_lines));
    assert_int_equal(waitpid(pid, NULL, WNOHANG), 0);
    s->config[0] = '\0';
    int st = fm_proc_stop(pid, SIGTERM, 15);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* Nobody listens on endpoints.updates: UPDATEs are dropped after the send timeout and
 * counted; the main thread keeps heartbeating; SIGTERM still exits 0 promptly. */
static void test_aggregator_down(void **state)
{
    t_state_t *s = *state;
    t_set_model(s, 10);
    int port = fm_proc_free_port();
    assert_true(port > 0);
    snprintf(s->ep_upd_override, sizeof s->ep_upd_override, "tcp://127.0.0.1:%d", port);
    pid_t pid = t_spawn(s, NULL, NULL);
    s->ep_upd_override[0] = '\0';
    assert_true(t_pump(s, t_hello_from_trainer, MAX_SPAWN_S));
    double end = fm_proc_now() + 20;
    while (!fm_proc_file_contains(s->log, "UPDATE not sent") && fm_proc_now() < end)
        t_pump(s, NULL, 0.2);
    assert_true(fm_proc_file_contains(s->log, "UPDATE not sent"));
    s->heartbeats = 0;
    assert_true(t_pump(s, t_heartbeats, 10));
    double t0 = fm_proc_now();
    kill(pid, SIGTERM);
    assert_true(t_pump(s, t_bye_from_trainer, 15));
    int st = fm_proc_wait(pid, 15);
    assert_true(st != -1 && WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_true(fm_proc_now() - t0 < 10);
    assert_int_equal(t_count_from(s, pid, 0, -1), 0);
}

/* 6: SIGKILL mid-training: the test's sockets keep working and a new trainer serves. */
static void test_sigkill(void **state)
{
    t_state_t *s = *state;
    t_set_model(s, 8);
    pid_t pid = t_spawn(s, NULL, NULL);
    assert_true(t_pump(s, t_hello_from_trainer, MAX_SPAWN_S));
    assert_true(t_pump(s, t_any_update, 60));
    kill(pid, SIGKILL);
    int st = fm_proc_wait(pid, 10);
    assert_true(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    t_pump(s, NULL, 0.3);

    t_set_model(s, 9);
    pid_t pid2 = t_spawn(s, "trainer.dropout_prob=0", NULL);
    assert_true(t_pump(s, t_hello_from_trainer, MAX_SPAWN_S));
    assert_true(t_pump(s, t_two_updates, 60));
    for (int i = 0; i < s->nupdates; i++)
        if (s->pids[i] == pid2)
            assert_int_equal(s->bases[i], 9);
    int finals = fm_proc_file_count(s->log, "final: updates sent ");
    st = fm_proc_stop(pid2, SIGTERM, 15);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_int_equal(s->update_errors, 0);
    /* the control of test_dropout: with dropout_prob = 0 updates are sent, no dropout */
    unsigned long long sent = 0, dropouts = 1;
    assert_int_equal(fm_proc_file_count(s->log, "final: updates sent "), finals + 1);
    assert_true(t_summary(s->log, "final", &sent, &dropouts));
    assert_true(sent >= 2);
    assert_true(dropouts == 0);
}

/* ---- UPDATE content against a replay ---------------------------------------------------- */

/* The local training test_replay configures (the trainer's config file and the replay). */
#define R_EPOCHS 2
#define R_BATCH 32
#define R_LR "0.05"
#define R_LR_DECAY "0.05" /* test_replay's [federation] lr_decay: lr / (1 + 0.05 v) */
#define R_STEPS 20        /* test_replay's local_steps: its client's second epoch ends early */
#define R_MOMENTUM "0.9"
#define R_WEIGHT_DECAY "0.0005"
#define R_CLIENT 2
#define R_MU 1.0
/* Same code, same data order, one thread, the same BLAS core (main calls fm_blas_setup like
 * the daemons): the replay is bit-exact, so the delta must equal it exactly */
#define R_TOL 0.0

/* Serve MODEL `version` opening sync round `round` whose cohort is {client}, with `mu`. */
static void t_set_sync_model(t_state_t *s, uint64_t version, uint64_t round, uint32_t client,
                             double mu)
{
    fm_model_init(s->layout, 100 + version);
    uint8_t ids[4] = {(uint8_t)client, (uint8_t)(client >> 8), (uint8_t)(client >> 16),
                      (uint8_t)(client >> 24)};
    fm_wire_model_t hdr;
    memset(&hdr, 0, sizeof hdr);
    hdr.version = version;
    hdr.created = 1.7e9 + (double)version;
    hdr.round = round;
    hdr.cohort.present = 1;
    hdr.cohort.ids = ids;
    hdr.cohort.count = 1;
    hdr.mu = mu;
    assert_int_equal(
        fm_wire_encode_model(&hdr, s->layout, fm_model_params(s->layout), &s->model_frame), 0);
    s->model_version = version;
}

/* Replay run `run` of `client`'s local training in this process with the training core:
 * the same partition, start weights, per-client seed and optimiser settings as the
 * trainer, at learning rate `lr`, at most `steps` steps (0: all epochs). delta = w_local -
 * base. */
static void t_replay(const fm_dataset_t *ds, const fm_partition_t *part, uint32_t client,
                     uint64_t run, const float *base, double mu, double lr, uint64_t steps,
                     float *delta, fm_train_result_t *res)
{
    int err = 0;
    fm_model_t *m = fm_model_new("mlp", &err);
    assert_non_null(m);
    size_t np = fm_model_nparams(m);
    float *w = fm_model_params(m);
    memcpy(w, base, np * sizeof(float));
    fm_engine_t *e = fm_engine_new(m, 1, R_BATCH, &err);
    assert_non_null(e);
    fm_sgd_config_t sgd = {.lr = (float)lr,
                           .momentum = (float)strtod(R_MOMENTUM, NULL),
                           .weight_decay = (float)strtod(R_WEIGHT_DECAY, NULL),
                           .clip_norm = 0.0f,
                           .mu = 0.0f};
    fm_optim_t *o = fm_optim_new(np, &sgd, &err);
    assert_non_null(o);
    assert_int_equal(fm_optim_set_mu(o, (float)mu), 0);
    fm_train_config_t tcfg = {.epochs = R_EPOCHS,
                              .batch = R_BATCH,
                              .seed = trainer_sim_train_seed(SEED, client, run),
                              .max_steps = steps};
    uint32_t n = part->offsets[client + 1] - part->offsets[client];
    assert_int_equal(fm_train_run(e, o, m, ds->x, ds->y, part->indices + part->offsets[client], n,
                                  &tcfg, mu > 0 ? base : NULL, NULL, NULL, res),
                     0);
    for (size_t i = 0; i < np; i++)
        delta[i] = w[i] - base[i];
    fm_optim_destroy(&o);
    fm_engine_destroy(&e);
    fm_model_destroy(&m);
}

/* max |a - b| / max |b| over n floats (printed). */
static double t_rel_diff(const char *what, const float *a, const float *b, size_t n)
{
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - (double)b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    fprintf(stderr, "%s: max |diff| %.3g, max |replay| %.3g\n", what, d, m);
    return m > 0 ? d / m : INFINITY;
}

/* The training set and the federation's partition of it, as the trainer computes them. */
static void t_load_clients(fm_dataset_t **ds, fm_partition_t **part, fm_partition_t **held)
{
    fm_errmsg_t e;
    assert_int_equal(s_load_dir(ds, FM_DATA_DIR, "train", FM_FASHION_MEAN, FM_FASHION_STD, &e),
                     0);
    assert_int_equal(fm_partition_clients(*ds, PARTITION, NUM_CLIENTS, SEED, 0.1, part, held, &e),
                     0);
}

/* The learning rate the trainer must use from MODEL `version` under lr_decay `decay`,
 * computed here from the definition (docs/PROTOCOL.md §10). */
static double t_lr(const char *decay, uint64_t version)
{
    return strtod(R_LR, NULL) / (1.0 + strtod(decay, NULL) * (double)version);
}

/* s->config: the local training t_replay replays, with lr_decay `decay`, local_steps
 * `steps` and local_fraction `fraction` (used by the next t_spawn only). */
static void t_replay_config(t_state_t *s, const char *decay, int steps, const char *fraction)
{
    snprintf(s->config, sizeof s->config, "%s/replay.conf", s->tmp);
    FILE *f = fopen(s->config, "w");
    assert_non_null(f);
    fprintf(f,
            "[federation]\nlocal_epochs = %d\nbatch_size = %d\nlearning_rate = %s\n"
            "lr_decay = %s\nlocal_steps = %d\nlocal_fraction = %s\nmomentum = %s\n"
            "weight_decay = %s\nclip_norm = 0\nmu = 0\n"
            "[trainer]\nthreads_per_worker = 1\ndropout_prob = 0\nlog_level = info\n",
            R_EPOCHS, R_BATCH, R_LR, decay, steps, fraction, R_MOMENTUM, R_WEIGHT_DECAY);
    assert_int_equal(fclose(f), 0);
}

static uint64_t t_want_round;
static int t_round_update(t_state_t *s)
{
    return s->nupdates > 0 && s->last_pid == s->trainer && s->last.round == t_want_round;
}

/* Serve MODEL `version` opening sync round 1 for R_CLIENT (mu 0), its weights copied to
 * base[np], spawn the trainer (s->config and s->bin, the config used once) and wait for the
 * client's round-1 UPDATE. */
static pid_t t_spawn_round1(t_state_t *s, uint64_t version, float *base, size_t np)
{
    t_set_sync_model(s, version, 1, R_CLIENT, 0.0);
    memcpy(base, fm_model_params(s->layout), np * sizeof(float));
    pid_t pid = t_spawn(s, NULL, NULL);
    s->config[0] = '\0';
    assert_true(t_pump(s, t_hello_from_trainer, MAX_SPAWN_S));
    t_want_round = 1;
    assert_true(t_pump(s, t_round_update, 60));
    assert_int_equal(s->last.client, R_CLIENT);
    return pid;
}

/* The UPDATE of one client equals its local training replayed here: sync round 1 (mu = 0)
 * on MODEL v11, then round 2 with FedProx (mu = R_MU) on v12, which must also differ from
 * the replay without the proximal term; both at the learning rate of their version
 * (lr_decay) and cut at local_steps. "n", "steps" and "loss" match the replay too. */
static void test_replay(void **state)
{
    t_state_t *s = *state;
    t_replay_config(s, R_LR_DECAY, R_STEPS, "1");

    fm_dataset_t *ds = NULL;
    fm_partition_t *part = NULL, *held = NULL;
    t_load_clients(&ds, &part, &held);
    size_t np = fm_model_nparams(s->layout);
    float *base = malloc(np * sizeof(float));
    float *want = malloc(np * sizeof(float));
    float *other = malloc(np * sizeof(float));
    assert_true(base && want && other);
    uint32_t n = part->offsets[R_CLIENT + 1] - part->offsets[R_CLIENT];
    fm_train_result_t res;

    /* round 1, mu = 0: the first run (0) of the client */
    int from = s->nupdates;
    int finals = fm_proc_file_count(s->log, "final: updates sent ");
    pid_t pid = t_spawn_round1(s, 11, base, np);
    assert_int_equal(s->last.base, 11);
    t_replay(ds, part, R_CLIENT, 0, base, 0.0, t_lr(R_LR_DECAY, 11), R_STEPS, want, &res);
    assert_true(t_rel_diff("round 1 delta", s->last_delta, want, np) <= R_TOL);
    fm_train_result_t res0;
    t_replay(ds, part, R_CLIENT, 0, base, 0.0, t_lr("0", 11), R_STEPS, other, &res0);
    assert_true(t_rel_diff("round 1 delta vs no lr_decay", s->last_delta, other, np) > 1e-3);
    assert_int_equal(s->last.num_samples, n); /* its data's weight, not the samples seen */
    assert_int_equal(s->last.local_steps, R_STEPS);
    assert_true(R_STEPS < R_EPOCHS * ((n + R_BATCH - 1) / R_BATCH)); /* the cap did cut */
    assert_int_equal(s->last.local_steps, res.steps);
    assert_true(fabs(s->last.train_loss - res.loss) <= 1e-9 * fabs(res.loss));

    /* round 2, mu = R_MU on the PUB: run 1, with the proximal term towards v12 */
    t_set_sync_model(s, 12, 2, R_CLIENT, R_MU);
    memcpy(base, fm_model_params(s->layout), np * sizeof(float));
    t_want_round = 2;
    double end = fm_proc_now() + 60;
    while (!t_round_update(s) && fm_proc_now() < end) {
        zsock_send(s->pub, "b", s->model_frame.data, s->model_frame.len);
        t_pump(s, NULL, 0.2);
    }
    assert_true(t_round_update(s));
    assert_int_equal(s->last.client, R_CLIENT);
    assert_int_equal(s->last.base, 12);
    t_replay(ds, part, R_CLIENT, 1, base, R_MU, t_lr(R_LR_DECAY, 12), R_STEPS, want, &res);
    assert_true(t_rel_diff("round 2 delta (FedProx)", s->last_delta, want, np) <= R_TOL);
    assert_int_equal(s->last.num_samples, n);
    assert_int_equal(s->last.local_steps, res.steps);
    assert_true(fabs(s->last.train_loss - res.loss) <= 1e-9 * fabs(res.loss));
    t_replay(ds, part, R_CLIENT, 1, base, 0.0, t_lr(R_LR_DECAY, 12), R_STEPS, other, &res0);
    assert_true(t_rel_diff("round 2 delta vs no FedProx", s->last_delta, other, np) > 1e-3);

    /* one client per round: exactly two UPDATEs, and the summary agrees */
    t_pump(s, NULL, 0.5);
    assert_int_equal(t_count_from(s, pid, from, -1), 2);
    int st = fm_proc_stop(pid, SIGTERM, 15);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    unsigned long long sent = 0, dropouts = 1;
    assert_int_equal(fm_proc_file_count(s->log, "final: updates sent "), finals + 1);
    assert_true(t_summary(s->log, "final", &sent, &dropouts));
    assert_true(sent == 2 && dropouts == 0);
    assert_int_equal(s->update_errors, 0);
    free(base);
    free(want);
    free(other);
    fm_partition_destroy(&part);
    fm_partition_destroy(&held);
    fm_dataset_destroy(&ds);
}

/* [federation] local_fraction = 0.3 of R_EPOCHS epochs: the UPDATE is the replay cut at
 * ceil(0.3 x 2 x ceil(n / 32)) steps (computed here from the definition), not at an epoch's
 * end, and its "steps" says so. */
static void test_fraction(void **state)
{
    t_state_t *s = *state;
    t_replay_config(s, "0", 0, "0.3");
    fm_dataset_t *ds = NULL;
    fm_partition_t *part = NULL, *held = NULL;
    t_load_clients(&ds, &part, &held);
    size_t np = fm_model_nparams(s->layout);
    float *base = malloc(np * sizeof(float)), *want = malloc(np * sizeof(float));
    assert_true(base && want);
    uint32_t n = part->offsets[R_CLIENT + 1] - part->offsets[R_CLIENT];
    uint64_t per_epoch = (n + R_BATCH - 1) / R_BATCH;
    uint64_t cap = (uint64_t)ceil(0.3 * R_EPOCHS * (double)per_epoch - 1e-9);
    assert_true(cap > 0 && cap < per_epoch); /* the cut falls inside the first epoch */

    pid_t pid = t_spawn_round1(s, 11, base, np);
    assert_int_equal(s->last.local_steps, cap);
    fm_train_result_t res;
    t_replay(ds, part, R_CLIENT, 0, base, 0.0, t_lr("0", 11), cap, want, &res);
    assert_int_equal(res.steps, cap);
    assert_true(t_rel_diff("local_fraction delta", s->last_delta, want, np) <= R_TOL);
    assert_int_equal(s->last.num_samples, n);
    int st = fm_proc_stop(pid, SIGTERM, 15);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    assert_int_equal(s->update_errors, 0);
    free(base);
    free(want);
    fm_partition_destroy(&part);
    fm_partition_destroy(&held);
    fm_dataset_destroy(&ds);
}

/* bench/fedmq_attacker, one attack per process, each client's first UPDATE of sync round 1
 * (cohort {R_CLIENT}) against the replay attacked here: signflip = -10 x the replay exactly;
 * noise = the noise trainer_attack_apply draws for (seed 1, R_CLIENT, run 0), of L2 norm 100
 * (recomputed); backdoor = the replay on the client's samples poisoned here (half of them,
 * trigger + class 3), which differs from the honest replay. Each says ATTACKER once. */
static void test_attack(void **state)
{
    t_state_t *s = *state;
    fm_dataset_t *ds = NULL;
    fm_partition_t *part = NULL, *held = NULL;
    t_load_clients(&ds, &part, &held);
    size_t np = fm_model_nparams(s->layout);
    float *base = malloc(np * sizeof(float)), *want = malloc(np * sizeof(float));
    float *honest = malloc(np * sizeof(float));
    assert_true(base && want && honest);
    const char *kinds[] = {"signflip", "noise", "backdoor"};
    for (int k = 0; k < 3; k++) {
        t_replay_config(s, "0", 0, "1");
        s->bin = FM_BIN_DIR "/fedmq_attacker";
        memset(s->bin_args, 0, sizeof s->bin_args);
        s->bin_args[0] = "--attack";
        s->bin_args[1] = kinds[k];
        s->bin_args[2] = "--target";
        s->bin_args[3] = "3";
        int warned = fm_proc_file_count(s->log, "ATTACKER (benchmark only)");
        pid_t pid = t_spawn_round1(s, 30 + (uint64_t)k, base, np);
        assert_int_equal(fm_proc_file_count(s->log, "ATTACKER (benchmark only)"), warned + 1);

        fm_train_result_t res;
        trainer_attack_t a;
        trainer_attack_defaults(&a);
        t_replay(ds, part, R_CLIENT, 0, base, 0.0, t_lr("0", 30 + (uint64_t)k), 0, honest, &res);
        if (k == 0) {
            for (size_t i = 0; i < np; i++)
                want[i] = -10.0f * honest[i];
        } else if (k == 1) {
            a.kind = TRAINER_ATTACK_NOISE;
            trainer_attack_apply(&a, want, np, R_CLIENT, 0);
            double ss = 0;
            for (size_t i = 0; i < np; i++)
                ss += (double)s->last_delta[i] * s->last_delta[i];
            assert_true(fabs(sqrt(ss) - 100.0) < 1e-4);
        } else {
            a.kind = TRAINER_ATTACK_BACKDOOR;
            a.target = 3;
            uint32_t n = part->offsets[R_CLIENT + 1] - part->offsets[R_CLIENT], m = 0;
            assert_int_equal(trainer_attack_poison_client(&a, ds,
                                                          part->indices + part->offsets[R_CLIENT],
                                                          n, R_CLIENT, &m),
                             0);
            assert_true(m > 0);
            t_replay(ds, part, R_CLIENT, 0, base, 0.0, t_lr("0", 30 + (uint64_t)k), 0, want,
                     &res);
            assert_true(t_rel_diff("backdoor vs honest", s->last_delta, honest, np) > 1e-3);
        }
        assert_true(t_rel_diff(kinds[k], s->last_delta, want, np) <= R_TOL);
        int st = fm_proc_stop(pid, SIGTERM, 15);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
    assert_int_equal(s->update_errors, 0);
    free(base);
    free(want);
    free(honest);
    fm_partition_destroy(&part);
    fm_partition_destroy(&held);
    fm_dataset_destroy(&ds);
}

/* [trainer] dp_sgd: every client of the pool trains with DP-SGD (q 0.1: 10 steps per
 * training), is accounted, and with a target between 2 and 3 trainings' epsilon (computed
 * here with fm_rdp) sends exactly 2 UPDATEs (NaN loss: not reported), then stops with one
 * NOTICE; once all 4 have, the pool says so and sends nothing more. */
static int t_dp_retired(t_state_t *s)
{
    return fm_proc_file_contains(s->log, "every client of the pool (4) has spent its DP-SGD");
}

static void test_dpsgd(void **state)
{
    t_state_t *s = *state;
    const double q = 0.1, sigma = 1.0;
    double e2 = fm_rdp_epsilon_of(q, sigma, 20, 1e-5, FM_RDP_IMPROVED, NULL),
           e3 = fm_rdp_epsilon_of(q, sigma, 30, 1e-5, FM_RDP_IMPROVED, NULL);
    snprintf(s->config, sizeof s->config, "%s/dp.conf", s->tmp);
    FILE *f = fopen(s->config, "w");
    assert_non_null(f);
    fprintf(f,
            "[trainer]\ndp_sgd = true\ndp_clip = 1\ndp_noise_multiplier = %g\n"
            "dp_sample_rate = %g\ndp_target_epsilon = %.17g\n",
            sigma, q, 0.5 * (e2 + e3));
    assert_int_equal(fclose(f), 0);
    t_set_model(s, 11);
    s->dp = 1;
    int from = s->nupdates;
    int notices = fm_proc_file_count(s->log, "DP-SGD budget: its next training (10 steps)");
    int infos = fm_proc_file_count(s->log, "DP-SGD training of 10 steps");
    pid_t pid = t_spawn(s, NULL, NULL);
    s->config[0] = '\0';
    assert_true(t_pump(s, t_hello_from_trainer, MAX_SPAWN_S));
    assert_true(t_pump(s, t_dp_retired, 120));
    t_pump(s, NULL, 1.5); /* nothing more comes */
    assert_true(fm_proc_file_contains(s->log, "DP-SGD on clients 0-3: clip 1, noise multiplier "
                                              "1, sample rate 0.1, 10 steps per training"));
    assert_true(fm_proc_file_contains(s->log, "at most 2 trainings per client (2"));
    assert_true(fm_proc_file_contains(s->log, "DP-SGD without [trainer] dp_accounts_file: the "
                                              "clients' privacy accounts are in memory only"));
    assert_int_equal(fm_proc_file_count(s->log, "DP-SGD budget: its next training (10 steps)"),
                     notices + 4);
    assert_int_equal(fm_proc_file_count(s->log, "DP-SGD training of 10 steps"), infos + 8);
    char line[160];
    snprintf(line, sizeof line,
             "DP-SGD training of 10 steps (20 in all), sigma 1, q 0.1: "
             "epsilon %.4g at delta 1e-05",
             e2);
    assert_int_equal(fm_proc_file_count(s->log, line), 4);
    int per[CLIENT_LAST + 1] = {0};
    for (int i = from; i < s->nupdates; i++)
        if (s->pids[i] == pid)
            per[s->clients[i]]++;
    for (int k = 0; k <= CLIENT_LAST; k++)
        assert_int_equal(per[k], 2);
    assert_int_equal(t_count_from(s, pid, from, -1), 8);
    assert_int_equal(s->update_errors, 0);
    int st = fm_proc_stop(pid, SIGTERM, 15);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    s->dp = 0;
}

/* [trainer] dp_accounts_file across a SIGKILL: the accounts continue from the file.
 * A budget of 3 trainings per client (10 steps each); run 1 is killed after 2 UPDATEs; the
 * file (decoded here from trainer_dp.h's layout: little-endian steps at 40 + 8 k) then
 * holds, for every client, at least 10 steps per UPDATE received (the save comes before the
 * send). A restart with another noise multiplier is refused (exit 2, one ERROR line). Run 2
 * sends each client exactly its 3 - steps/10 remaining trainings, its first INFO line
 * continues the count from the file (never "(10 in all)" again for a client that had
 * steps), and the file ends at 30 steps each; run 3 retires all 4 clients at start from the
 * file and sends nothing. */
#define DPF_CLIENTS (CLIENT_LAST - CLIENT_FIRST + 1)

static int t_dp_file_steps(const char *path, uint64_t steps[DPF_CLIENTS])
{
    uint8_t buf[256];
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    if (n != 72 + 8 * DPF_CLIENTS || memcmp(buf, "FMDPACC1", 8) != 0)
        return 0;
    for (int k = 0; k < DPF_CLIENTS; k++) {
        steps[k] = 0;
        for (int i = 0; i < 8; i++)
            steps[k] |= (uint64_t)buf[40 + 8 * k + i] << (8 * i);
    }
    return 1;
}

static int t_dp_retired_before; /* the count of the line below before a run */
static int t_dp_all_retired(t_state_t *s)
{
    return fm_proc_file_count(s->log, "every client of the pool (4) has spent its DP-SGD") >
           t_dp_retired_before;
}

static void test_dpsgd_restart(void **state)
{
    t_state_t *s = *state;
    const double q = 0.1, sigma = 1.0;
    double e3 = fm_rdp_epsilon_of(q, sigma, 30, 1e-5, FM_RDP_IMPROVED, NULL),
           e4 = fm_rdp_epsilon_of(q, sigma, 40, 1e-5, FM_RDP_IMPROVED, NULL);
    char accounts[sizeof s->tmp + 16];
    snprintf(accounts, sizeof accounts, "%s/dp.accounts", s->tmp);
    snprintf(s->config, sizeof s->config, "%s/dpr.conf", s->tmp);
    FILE *f = fopen(s->config, "w");
    assert_non_null(f);
    fprintf(f,
            "[trainer]\ndp_sgd = true\ndp_clip = 1\ndp_noise_multiplier = %g\n"
            "dp_sample_rate = %g\ndp_target_epsilon = %.17g\ndp_accounts_file = %s\n",
            sigma, q, 0.5 * (e3 + e4), accounts);
    assert_int_equal(fclose(f), 0);
    t_set_model(s, 12);
    s->dp = 1;
    int firsts = fm_proc_file_count(s->log, "does not exist: every client starts at 0 steps");

    /* run 1: killed after 2 UPDATEs */
    int from1 = s->nupdates;
    pid_t pid1 = t_spawn(s, "trainer.dropout_prob=0", NULL);
    assert_true(t_pump(s, t_hello_from_trainer, MAX_SPAWN_S));
    assert_true(t_pump(s, t_two_updates, 60));
    kill(pid1, SIGKILL);
    int st = fm_proc_wait(pid1, 10);
    assert_true(st != -1 && WIFSIGNALED(st));
    t_pump(s, NULL, 0.3); /* UPDATEs already on the wire */
    assert_int_equal(fm_proc_file_count(s->log, "does not exist: every client starts at 0 steps"),
                     firsts + 1);
    uint64_t steps1[DPF_CLIENTS];
    assert_true(t_dp_file_steps(accounts, steps1));
    int sent1[DPF_CLIENTS] = {0};
    uint64_t total1 = 0;
    for (int i = from1; i < s->nupdates; i++)
        if (s->pids[i] == pid1)
            sent1[s->clients[i]]++;
    for (int k = 0; k < DPF_CLIENTS; k++) {
        if (steps1[k] % 10 != 0 || steps1[k] > 30 || (uint64_t)sent1[k] * 10 > steps1[k])
            fail_msg("client %d: %llu steps in the file, %d UPDATEs received", k,
                     (unsigned long long)steps1[k], sent1[k]);
        total1 += steps1[k];
    }
    assert_true(total1 >= 20);

    /* another noise multiplier: refused, exit 2, the file untouched */
    int refusals = fm_proc_file_count(s->log, "cannot be reinterpreted");
    pid_t bad = t_spawn(s, "trainer.dp_noise_multiplier=2", NULL);
    st = fm_proc_wait(bad, MAX_SPAWN_S);
    assert_true(st != -1 && WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);
    assert_int_equal(fm_proc_file_count(s->log, "cannot be reinterpreted"), refusals + 1);
    uint64_t again[DPF_CLIENTS];
    assert_true(t_dp_file_steps(accounts, again));
    assert_memory_equal(again, steps1, sizeof again);

    /* run 2: continues from the file until every client is retired */
    int ten[DPF_CLIENTS], cont[DPF_CLIENTS];
    char line[DPF_CLIENTS][2][96];
    for (int k = 0; k < DPF_CLIENTS; k++) {
        snprintf(line[k][0], sizeof line[k][0], "client %d: DP-SGD training of 10 steps (10 in",
                 k);
        snprintf(line[k][1], sizeof line[k][1],
                 "client %d: DP-SGD training of 10 steps (%llu in all)", k,
                 (unsigned long long)steps1[k] + 10);
        ten[k] = fm_proc_file_count(s->log, line[k][0]);
        cont[k] = fm_proc_file_count(s->log, line[k][1]);
    }
    t_dp_retired_before = fm_proc_file_count(s->log, "every client of the pool (4) has spent");
    int loaded = fm_proc_file_count(s->log, "DP-SGD accounts loaded from");
    int from2 = s->nupdates;
    pid_t pid2 = t_spawn(s, "trainer.dropout_prob=0", NULL);
    assert_true(t_pump(s, t_hello_from_trainer, MAX_SPAWN_S));
    assert_true(t_pump(s, t_dp_all_retired, 90));
    t_pump(s, NULL, 1.0); /* nothing more comes */
    assert_int_equal(fm_proc_file_count(s->log, "DP-SGD accounts loaded from"), loaded + 1);
    int sent2[DPF_CLIENTS] = {0};
    for (int i = from2; i < s->nupdates; i++)
        if (s->pids[i] == pid2)
            sent2[s->clients[i]]++;
    for (int k = 0; k < DPF_CLIENTS; k++) {
        if ((uint64_t)sent2[k] != 3 - steps1[k] / 10)
            fail_msg("client %d: %llu steps in the file after run 1, %d UPDATEs in run 2", k,
                     (unsigned long long)steps1[k], sent2[k]);
        if (steps1[k] > 0 && fm_proc_file_count(s->log, line[k][0]) != ten[k])
            fail_msg("client %d restarted its account at 0 (it had %llu steps)", k,
                     (unsigned long long)steps1[k]);
        if (steps1[k] < 30 && fm_proc_file_count(s->log, line[k][1]) != cont[k] + 1)
            fail_msg("client %d: no '%s' in run 2", k, line[k][1]);
    }
    st = fm_proc_stop(pid2, SIGTERM, 15);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    uint64_t steps2[DPF_CLIENTS];
    assert_true(t_dp_file_steps(accounts, steps2));
    for (int k = 0; k < DPF_CLIENTS; k++)
        assert_int_equal(steps2[k], 30);

    /* run 3: every client retired at start from the file, nothing sent */
    t_dp_retired_before = fm_proc_file_count(s->log, "every client of the pool (4) has spent");
    int at_start = fm_proc_file_count(s->log, "4 clients have spent their DP-SGD budget by the "
                                              "accounts file");
    int from3 = s->nupdates;
    pid_t pid3 = t_spawn(s, NULL, NULL);
    assert_true(t_pump(s, t_hello_from_trainer, MAX_SPAWN_S));
    assert_true(t_pump(s, t_dp_all_retired, 10));
    t_pump(s, NULL, 1.0);
    assert_int_equal(fm_proc_file_count(s->log, "4 clients have spent their DP-SGD budget by "
                                                "the accounts file"),
                     at_start + 1);
    assert_int_equal(t_count_from(s, pid3, from3, -1), 0);
    st = fm_proc_stop(pid3, SIGTERM, 15);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_int_equal(s->update_errors, 0);
    s->config[0] = '\0';
    s->dp = 0;
}

/* [trainer] id: the id on the wire, the same at every start (a restart is the same trainer
 * restarting); by default it is "<host>-<pid>". */
static void test_stable_id(void **state)
{
    t_state_t *s = *state;
    for (int round = 0; round < 2; round++) {
        pid_t pid = t_spawn(s, "trainer.id=site-a/pool:1", NULL);
        assert_true(t_pump(s, t_hello_from_trainer, MAX_SPAWN_S));
        assert_string_equal(s->last_hello_trainer, "site-a/pool:1");
        int st = fm_proc_stop(pid, SIGTERM, 15);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 0);
    }
    pid_t pid = t_spawn(s, NULL, NULL);
    assert_true(t_pump(s, t_hello_from_trainer, MAX_SPAWN_S));
    char want[32];
    snprintf(want, sizeof want, "-%d", (int)pid);
    const char *tail = s->last_hello_trainer + strlen(s->last_hello_trainer) - strlen(want);
    assert_true(tail > s->last_hello_trainer);
    assert_string_equal(tail, want);
    int st = fm_proc_stop(pid, SIGTERM, 15);
    assert_true(WIFEXITED(st));
    /* an id outside the id class is a config error, one line, exit 2 */
    char out[sizeof s->tmp + 16];
    snprintf(out, sizeof out, "%s/badid.log", s->tmp);
    char *argv[] = {
        FM_BIN_DIR "/fedmq-trainer", "--config", FM_SOURCE_DIR "/configs/fedmq.conf", "--set",
        "trainer.id=pool 1",         NULL};
    pid = fm_proc_spawn(&s->procs, argv, out);
    st = fm_proc_wait(pid, 15);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);
    assert_true(fm_proc_file_contains(out, "[trainer] id = pool 1: byte 0x20 at offset 4 is not "
                                           "allowed in a trainer id"));
}

int main(int argc, char **argv)
{
    (void)argc;
    /* the BLAS core the daemons run (they re-exec on a misdetected core): the replay must
     * round like the trainer */
    fm_blas_setup(argv);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sim),         cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_updates),     cmocka_unit_test(test_new_version),
        cmocka_unit_test(test_heartbeats),  cmocka_unit_test(test_reconnect_hello),
        cmocka_unit_test(test_sigterm_bye), cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_reload),      cmocka_unit_test(test_aggregator_down),
        cmocka_unit_test(test_sigkill),     cmocka_unit_test(test_replay),
        cmocka_unit_test(test_fraction),    cmocka_unit_test(test_attack),
        cmocka_unit_test(test_dpsgd),       cmocka_unit_test(test_dpsgd_restart),
        cmocka_unit_test(test_stable_id),
    };
    return cmocka_run_group_tests(tests, t_setup, t_teardown);
}

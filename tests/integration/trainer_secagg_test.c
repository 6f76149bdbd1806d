/* trainer_secagg_test: the real fedmq-trainer as secure-aggregation members ([secagg]
 * enabled; trainer/trainer_secagg.h) against a test that plays broker and aggregator.
 *
 * The test binds a ROUTER on endpoints.snapshot (answers HELLO and SNAPSHOT_REQ with the
 * current MODEL), a PUB on endpoints.model_pub, a PUB on endpoints.acks (the cohort
 * messages M0, M2, M4, M6, M8) and a PULL on endpoints.updates (M1, M3, M5, M7, and any
 * UPDATE, which must never come), all on tcp://127.0.0.1 with free ports, and runs the real
 * aggregator-side core (fm_sa_cohort) over the real frames. One trainer (logreg, clients
 * 0-15 of 20, 2 workers x 1 thread, dropout_prob 0.3) serves the whole test:
 *   - with no invite nothing trains (no UPDATE, no MASKED_UPDATE), also on a sync MODEL
 *     whose round selects its clients;
 *   - an invite for another trainer id, or for a client outside the range, gets no
 *     ADVERTISE_KEYS; a second invite for a client already in a cohort neither;
 *   - cohort A (K = 4, t = 3, four clients that do not drop out): DONE with |U3| = 4, the
 *     weight coordinate decodes to exactly 4, the sum's norm is within |U3| C, and the Z_2^32
 *     sum equals, bit for bit, the sum of the four clients' local trainings replayed in this
 *     process and encoded with the same codec;
 *   - cohort B (three such clients and one whose simulated dropout fires, as
 *     trainer_sim_dropout says), invited on a model version the trainer does not hold yet
 *     (served 1 s after SHARES_FWD: nobody uploads before it): the dropped member is
 *     recovered, DONE with U3 = {1, 2, 3}, the sum equals the three replays' on that model;
 *   - a member whose aggregator goes silent is aborted and freed after its deadlines + 10 s;
 *   - with [secagg] disabled, a trainer trains as before and counts an invite as a bad
 *     frame on acks, without answering it;
 *   - the trainer's final summary line and /metrics count the members. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <czmq.h>
#include <math.h>

#include "../support/fm_http.h"
#include "../support/fm_proc.h"
#include "../support/fm_zbind.h"
#include "fm_blas.h"
#include "fm_data.h"
#include "fm_engine.h"
#include "fm_model.h"
#include "fm_optim.h"
#include "fm_sa_codec.h"
#include "fm_sa_cohort.h"
#include "fm_train.h"
#include "fm_wire.h"
#include "trainer_sim.h"

#define MODEL "logreg"
#define NUM_CLIENTS 20
#define CLIENT_LAST 15 /* the trainer serves 0..CLIENT_LAST */
#define SEED 1
#define PARTITION "dirichlet:0.5"
#define DROPOUT_P 0.3
#define EPOCHS 1
#define BATCH 32
#define LR "0.05"
#define MOMENTUM "0.9"
#define WEIGHT_DECAY "0.0005"
#define K 4
#define T 3
#define CLIP 1.0
#define MV 6 /* the model version of the invites (a sync MODEL) */
#define SPAWN_S 60.0

typedef struct {
    zsock_t *router, *pub, *acks, *pull;
    zpoller_t *poller;
    char ep_pub[64], ep_snap[64], ep_acks[64], ep_upd[64];
    char tmp[512], log[600], config[600];
    fm_proc_set_t procs;
    pid_t trainer;
    char trainer_id[FM_WIRE_STR_MAX + 1];
    int metrics_port;
    fm_model_t *layout;
    fm_wire_buf_t model_frame, buf;
    float *base; /* the params of MODEL v6 */
    /* what arrived */
    int updates;      /* UPDATEs: must stay 0 */
    int bad;          /* frames that did not decode */
    int keys_from[8]; /* ADVERTISE_KEYS per "probe" cohort slot (see t_probe) */
    uint64_t probe[8];
    int masked_seen;   /* MASKED_UPDATEs, all cohorts */
    int shares_seen;   /* SHARES, all cohorts */
    fm_sa_cohort_t *c; /* the cohort in progress, or NULL */
    int refused;       /* messages fm_sa_cohort refused */
    uint32_t *scratch; /* m words */
    /* the replay */
    fm_dataset_t *ds;
    fm_partition_t *part;
} t_state_t;

static uint32_t t_m(const t_state_t *s) { return (uint32_t)fm_model_nparams(s->layout) + 1; }

/* MODEL `version` (params seeded by version); sync round 1 selecting clients 0-3 if sync. */
static void t_set_model(t_state_t *s, uint64_t version, int sync)
{
    fm_model_init(s->layout, 100 + version);
    uint8_t ids[16] = {0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0};
    fm_wire_model_t hdr;
    memset(&hdr, 0, sizeof hdr);
    hdr.version = version;
    hdr.created = 1.7e9 + (double)version;
    if (sync) {
        hdr.round = 1;
        hdr.cohort.present = 1;
        hdr.cohort.ids = ids;
        hdr.cohort.count = 4;
        hdr.mu = 0;
    }
    assert_int_equal(
        fm_wire_encode_model(&hdr, s->layout, fm_model_params(s->layout), &s->model_frame), 0);
}

static void t_on_router(t_state_t *s)
{
    zmsg_t *msg = zmsg_recv(s->router);
    if (!msg)
        return;
    zframe_t *id = zmsg_pop(msg);
    zframe_t *body = zmsg_first(msg);
    fm_wire_type_t type;
    if (id && body && fm_wire_peek(zframe_data(body), zframe_size(body), &type, NULL) == 0) {
        if (type == FM_WIRE_HELLO) {
            fm_wire_member_t m;
            if (fm_wire_decode_member(zframe_data(body), zframe_size(body), &type, &m, NULL) ==
                    0 &&
                (pid_t)m.pid == s->trainer)
                snprintf(s->trainer_id, sizeof s->trainer_id, "%s", m.trainer);
        }
        if (type == FM_WIRE_HELLO || type == FM_WIRE_SNAPSHOT_REQ) {
            zmsg_t *r = zmsg_new();
            zmsg_append(r, &id);
            zmsg_addmem(r, s->model_frame.data, s->model_frame.len);
            zmsg_send(&r, s->router);
        }
    }
    zframe_destroy(&id);
    zmsg_destroy(&msg);
}

static void t_publish(t_state_t *s) { zsock_send(s->acks, "b", s->buf.data, s->buf.len); }

/* The cohort's next messages once a phase closed (M2, M4, M6, M8 to every member). */
static void t_advance(t_state_t *s, fm_sa_phase_t before)
{
    fm_sa_phase_t ph = fm_sa_cohort_phase(s->c);
    if (ph == before)
        return;
    uint32_t n = 0;
    if (ph == FM_SA_AT_SHARES) {
        fm_sa_key_list_t kl;
        assert_int_equal(fm_sa_cohort_key_list(s->c, &kl), 0);
        const uint32_t *u1 = fm_sa_cohort_set(s->c, FM_SA_SET_U1, &n);
        for (uint32_t j = 0; j < n; j++) {
            assert_int_equal(fm_wire_encode_sa_key_list(&kl, u1[j], &s->buf), 0);
            t_publish(s);
        }
    } else if (ph == FM_SA_AT_TRAINING) {
        const uint32_t *u2 = fm_sa_cohort_set(s->c, FM_SA_SET_U2, &n);
        for (uint32_t j = 0; j < n; j++) {
            fm_sa_shares_fwd_t fwd;
            assert_int_equal(fm_sa_cohort_shares_fwd(s->c, u2[j], &fwd), 0);
            assert_int_equal(fm_wire_encode_sa_shares_fwd(&fwd, &s->buf), 0);
            t_publish(s);
        }
    } else if (ph == FM_SA_AT_UNMASKING) {
        fm_sa_unmask_req_t r;
        assert_int_equal(fm_sa_cohort_unmask_req(s->c, &r), 0);
        const uint32_t *u2 = fm_sa_cohort_set(s->c, FM_SA_SET_U2, &n);
        for (uint32_t j = 0; j < n; j++) {
            assert_int_equal(fm_wire_encode_sa_unmask_req(&r, u2[j], &s->buf), 0);
            t_publish(s);
        }
    } else if (ph == FM_SA_AT_DONE || ph == FM_SA_AT_ABORTED) {
        for (uint32_t j = 1; j <= K; j++) { /* the cohort's id is s->probe[0] */
            fm_wire_sa_end_t end = {.cohort = s->probe[0], .to = j};
            assert_int_equal(
                fm_wire_encode_sa_end(ph == FM_SA_AT_DONE ? FM_WIRE_SA_DONE : FM_WIRE_SA_ABORT,
                                      &end, &s->buf),
                0);
            t_publish(s);
        }
    }
}

static void t_on_pull(t_state_t *s)
{
    zframe_t *f = zframe_recv(s->pull);
    if (!f)
        return;
    const void *d = zframe_data(f);
    size_t len = zframe_size(f);
    fm_wire_type_t type;
    fm_errmsg_t e = {{0}};
    double now = fm_proc_now();
    if (fm_wire_peek(d, len, &type, &e) != 0) {
        fprintf(stderr, "pull: bad frame: %s\n", e.msg);
        s->bad++;
        zframe_destroy(&f);
        return;
    }
    fm_sa_phase_t before = s->c ? fm_sa_cohort_phase(s->c) : FM_SA_AT_ABORTED;
    fm_sa_reason_t r = FM_SA_OK;
    if (type == FM_WIRE_UPDATE) {
        s->updates++;
    } else if (type == FM_WIRE_SA_KEYS) {
        fm_sa_advertise_t a;
        if (fm_wire_decode_sa_keys(d, len, &a, &e) != 0) {
            s->bad++;
        } else {
            for (int k = 0; k < 8; k++)
                if (s->probe[k] && s->probe[k] == a.cohort)
                    s->keys_from[k]++;
            if (s->c && a.cohort == s->probe[0])
                r = fm_sa_cohort_on_keys(s->c, &a, now, &e);
        }
    } else if (type == FM_WIRE_SA_SHARES) {
        static fm_wire_sa_shares_t sh;
        s->shares_seen++;
        if (fm_wire_decode_sa_shares(d, len, &sh, &e) != 0)
            s->bad++;
        else if (s->c && sh.msg.cohort == s->probe[0])
            r = fm_sa_cohort_on_shares(s->c, &sh.msg, now, &e);
    } else if (type == FM_WIRE_SA_MASKED) {
        fm_wire_sa_masked_t mk;
        s->masked_seen++;
        if (fm_wire_decode_sa_masked(d, len, &mk, &e) != 0) {
            s->bad++;
        } else if (s->c && mk.cohort == s->probe[0]) {
            fm_sa_masked_t v;
            assert_int_equal(mk.m, t_m(s));
            fm_wire_sa_masked_view(&mk, s->scratch, &v);
            r = fm_sa_cohort_on_masked(s->c, &v, now, &e);
        }
    } else if (type == FM_WIRE_SA_UNMASK_SHARES) {
        static fm_wire_sa_unmask_shares_t us;
        if (fm_wire_decode_sa_unmask_shares(d, len, &us, &e) != 0)
            s->bad++;
        else if (s->c && us.msg.cohort == s->probe[0])
            r = fm_sa_cohort_on_unmask_shares(s->c, &us.msg, now, &e);
    }
    if (r != FM_SA_OK) {
        fprintf(stderr, "cohort refused a %s: %s: %s\n", fm_wire_type_name(type),
                fm_sa_reason_name(r), e.msg);
        s->refused++;
    }
    zframe_destroy(&f);
    if (s->c)
        t_advance(s, before);
}

/* Serve every socket for up to `seconds`, or until cond(s) holds (cond may be NULL); ticks
 * the cohort in progress (its deadlines) and keeps publishing the current MODEL. */
static int t_pump(t_state_t *s, int (*cond)(t_state_t *), double seconds)
{
    double end = fm_proc_now() + seconds, next_model = 0;
    for (;;) {
        if (cond && cond(s))
            return 1;
        double now = fm_proc_now();
        if (now >= end)
            return cond ? cond(s) : 1;
        if (now >= next_model) {
            zsock_send(s->pub, "b", s->model_frame.data, s->model_frame.len);
            next_model = now + 0.5;
        }
        if (s->c) {
            fm_sa_phase_t before = fm_sa_cohort_phase(s->c);
            if (fm_sa_cohort_tick(s->c, now))
                t_advance(s, before);
        }
        zsock_t *which = zpoller_wait(s->poller, 20);
        if (which == s->router)
            t_on_router(s);
        else if (which == s->pull)
            t_on_pull(s);
    }
}

static int t_have_id(t_state_t *s) { return s->trainer_id[0] != '\0'; }

static int t_cohort_over(t_state_t *s)
{
    fm_sa_phase_t ph = fm_sa_cohort_phase(s->c);
    return ph == FM_SA_AT_DONE || ph == FM_SA_AT_ABORTED;
}

static void t_invite_mv(t_state_t *s, uint64_t cohort, uint32_t i, const char *trainer,
                        uint32_t client, const fm_sa_deadlines_t *dl, uint64_t mv)
{
    fm_wire_sa_invite_t inv;
    memset(&inv, 0, sizeof inv);
    inv.p = (fm_sa_params_t){.cohort = cohort,
                             .k = K,
                             .t = T,
                             .m = t_m(s),
                             .clip = CLIP,
                             .scale_bits = fm_sa_codec_scale(K, CLIP)};
    inv.index = i;
    inv.version = mv;
    snprintf(inv.trainer, sizeof inv.trainer, "%s", trainer);
    inv.client = client;
    inv.deadlines = *dl;
    assert_int_equal(fm_wire_encode_sa_invite(&inv, &s->buf), 0);
    t_publish(s);
}

static void t_invite(t_state_t *s, uint64_t cohort, uint32_t i, const char *trainer,
                     uint32_t client, const fm_sa_deadlines_t *dl)
{
    t_invite_mv(s, cohort, i, trainer, client, dl, MV);
}

static int t_training(t_state_t *s) { return fm_sa_cohort_phase(s->c) >= FM_SA_AT_TRAINING; }

/* Replay run 0 of `client`'s local training from s->base (as test_replay in trainer_test)
 * and add its encoding into sum[0..m). */
static void t_replay_add(t_state_t *s, uint32_t client, uint32_t *sum)
{
    int err = 0;
    fm_model_t *m = fm_model_new(MODEL, &err);
    assert_non_null(m);
    size_t np = fm_model_nparams(m);
    float *w = fm_model_params(m);
    memcpy(w, s->base, np * sizeof(float));
    fm_engine_t *eng = fm_engine_new(m, 1, BATCH, &err);
    assert_non_null(eng);
    fm_sgd_config_t sgd = {.lr = (float)strtod(LR, NULL),
                           .momentum = (float)strtod(MOMENTUM, NULL),
                           .weight_decay = (float)strtod(WEIGHT_DECAY, NULL)};
    fm_optim_t *o = fm_optim_new(np, &sgd, &err);
    assert_non_null(o);
    fm_train_config_t tcfg = {
        .epochs = EPOCHS, .batch = BATCH, .seed = trainer_sim_train_seed(SEED, client, 0)};
    uint32_t n = s->part->offsets[client + 1] - s->part->offsets[client];
    fm_train_result_t res;
    assert_int_equal(fm_train_run(eng, o, m, s->ds->x, s->ds->y,
                                  s->part->indices + s->part->offsets[client], n, &tcfg, NULL,
                                  NULL, NULL, &res),
                     0);
    float *delta = malloc(np * sizeof(float));
    uint32_t *words = malloc((np + 1) * sizeof(uint32_t));
    assert_true(delta && words);
    for (size_t i = 0; i < np; i++)
        delta[i] = w[i] - s->base[i];
    fm_sa_codec_t codec = {.k = K, .clip = CLIP, .s = fm_sa_codec_scale(K, CLIP)};
    assert_int_equal(fm_sa_codec_encode(&codec, delta, np, 1.0, NULL, words, NULL), 0);
    for (size_t i = 0; i <= np; i++)
        sum[i] += words[i];
    free(delta);
    free(words);
    fm_optim_destroy(&o);
    fm_engine_destroy(&eng);
    fm_model_destroy(&m);
}

/* Run one cohort over clients[0..K) (member i = clients[i-1]), invited on model version
 * `mv`; its result checked against the replays of the members u3[0..n3) (indices). When mv
 * is newer than the model served, MODEL mv is served only 1 s after SHARES_FWD went out:
 * the members must wait for it. */
static void t_cohort(t_state_t *s, uint64_t id, const uint32_t *clients, const uint32_t *u3,
                     uint32_t n3, uint64_t mv)
{
    fm_sa_deadlines_t dl = {5, 5, 8, 5};
    fm_sa_params_t p = {.cohort = id,
                        .k = K,
                        .t = T,
                        .m = t_m(s),
                        .clip = CLIP,
                        .scale_bits = fm_sa_codec_scale(K, CLIP)};
    int err = 0;
    fm_errmsg_t e = {{0}};
    memset(s->probe, 0, sizeof s->probe);
    memset(s->keys_from, 0, sizeof s->keys_from);
    s->probe[0] = id;
    s->c = fm_sa_cohort_new(&p, &dl, fm_proc_now(), &err, &e);
    assert_non_null(s->c);
    for (uint32_t i = 1; i <= K; i++)
        t_invite_mv(s, id, i, s->trainer_id, clients[i - 1], &dl, mv);
    if (mv > MV) {
        assert_true(t_pump(s, t_training, 15));
        t_pump(s, NULL, 1.0);
        assert_int_equal(fm_sa_cohort_phase(s->c), FM_SA_AT_TRAINING); /* nobody uploaded */
        t_set_model(s, mv, 0);
        memcpy(s->base, fm_model_params(s->layout), fm_model_nparams(s->layout) * sizeof(float));
    }
    assert_true(t_pump(s, t_cohort_over, 40));
    if (fm_sa_cohort_phase(s->c) != FM_SA_AT_DONE)
        fprintf(stderr, "cohort %llx: %s\n", (unsigned long long)id,
                fm_sa_cohort_abort_reason(s->c));
    assert_int_equal(fm_sa_cohort_phase(s->c), FM_SA_AT_DONE);
    assert_int_equal(s->keys_from[0], K);
    fm_sa_result_t res;
    assert_int_equal(fm_sa_cohort_result(s->c, &res), 0);
    assert_int_equal(res.m, t_m(s));
    assert_int_equal(res.survivors, n3);
    for (uint32_t j = 0; j < n3; j++)
        assert_int_equal(res.members[j], u3[j]);
    /* the weight coordinate: every member weighs exactly 1 */
    assert_true(res.decoded[res.m - 1] == (double)n3);
    /* each contribution clipped to C: the sum's norm is within |U3| C (+ rounding) */
    double S = ldexp(1.0, p.scale_bits), norm = 0;
    for (uint32_t i = 0; i + 1 < res.m; i++)
        norm += res.decoded[i] * res.decoded[i];
    norm = sqrt(norm);
    fprintf(stderr, "cohort %llx: |U3| = %u, ||sum|| = %.6f\n", (unsigned long long)id, n3, norm);
    assert_true(norm > 0);
    assert_true(norm <= n3 * CLIP + sqrt((double)res.m) * n3 / (2 * S));
    /* bit for bit: the sum of the survivors' replayed trainings, encoded the same way */
    uint32_t *want = calloc(res.m, sizeof(uint32_t));
    assert_non_null(want);
    for (uint32_t j = 0; j < n3; j++)
        t_replay_add(s, clients[u3[j] - 1], want);
    uint32_t diff = 0;
    for (uint32_t i = 0; i < res.m; i++)
        diff += want[i] != res.sum[i];
    fprintf(stderr, "cohort %llx: %u of %u words differ from the replay\n",
            (unsigned long long)id, diff, res.m);
    assert_int_equal(diff, 0);
    free(want);
    t_pump(s, NULL, 0.3); /* the M8s go out */
    fm_sa_cohort_destroy(&s->c);
}

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
    s->acks = fm_zbind_loopback(ZMQ_PUB, s->ep_acks, sizeof s->ep_acks);
    s->pull = fm_zbind_loopback(ZMQ_PULL, s->ep_upd, sizeof s->ep_upd);
    if (!s->router || !s->pub || !s->acks || !s->pull)
        return -1;
    s->poller = zpoller_new(s->router, s->pull, NULL);
    int err = 0;
    s->layout = fm_model_new(MODEL, &err);
    if (!s->poller || !s->layout)
        return -1;
    s->scratch = malloc(t_m(s) * sizeof(uint32_t));
    s->base = malloc(fm_model_nparams(s->layout) * sizeof(float));
    fm_errmsg_t e;
    fm_partition_t *held = NULL;
    if (!s->scratch || !s->base ||
        !(s->ds = fm_dataset_load_dir(FM_DATA_DIR, "train", FM_FASHION_MEAN, FM_FASHION_STD, &err,
                                      &e)) ||
        fm_partition_clients(s->ds, PARTITION, NUM_CLIENTS, SEED, 0.1, &s->part, &held, &e)) {
        fprintf(stderr, "setup: %s\n", e.msg);
        return -1;
    }
    fm_partition_destroy(&held);
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
    fm_sa_cohort_destroy(&s->c);
    zpoller_destroy(&s->poller);
    zsock_destroy(&s->router);
    zsock_destroy(&s->pub);
    zsock_destroy(&s->acks);
    zsock_destroy(&s->pull);
    fm_model_destroy(&s->layout);
    fm_partition_destroy(&s->part);
    fm_dataset_destroy(&s->ds);
    fm_wire_buf_free(&s->model_frame);
    fm_wire_buf_free(&s->buf);
    free(s->scratch);
    free(s->base);
    free(s);
    return 0;
}

static pid_t t_spawn(t_state_t *s, int secagg)
{
    snprintf(s->config, sizeof s->config, "%s/secagg.conf", s->tmp);
    FILE *f = fopen(s->config, "w");
    assert_non_null(f);
    fprintf(f,
            "[federation]\nmodel = %s\nnum_clients = %d\npartition = %s\nseed = %d\n"
            "data_dir = %s\nlocal_epochs = %d\nbatch_size = %d\nlearning_rate = %s\n"
            "momentum = %s\nweight_decay = %s\nclip_norm = 0\nmu = 0\n"
            "[trainer]\nclients = 0-%d\nworkers = 2\nthreads_per_worker = 1\n"
            "dropout_prob = %g\nslowdown_sigma = 0\nheartbeat_interval_s = 0.5\n"
            "log_level = debug\n"
            "[aggregator]\nacks = true\nweight_by_samples = false\n"
            "[secagg]\nenabled = %s\ncohort_size = %d\nthreshold = %d\nclip_norm = %g\n"
            "[endpoints]\nmodel_pub = %s\nsnapshot = %s\nupdates = %s\nacks = %s\n",
            MODEL, NUM_CLIENTS, PARTITION, SEED, FM_DATA_DIR, EPOCHS, BATCH, LR, MOMENTUM,
            WEIGHT_DECAY, CLIENT_LAST, DROPOUT_P, secagg ? "true" : "false", K, T, CLIP,
            s->ep_pub, s->ep_snap, s->ep_upd, s->ep_acks);
    assert_int_equal(fclose(f), 0);
    char o_met[64];
    char *argv[] = {FM_BIN_DIR "/fedmq-trainer",
                    "--config",
                    s->config,
                    "--set",
                    fm_proc_metrics_set(o_met, sizeof o_met, "trainer", &s->metrics_port),
                    NULL};
    pid_t pid = fm_proc_spawn(&s->procs, argv, s->log);
    assert_true(pid > 0);
    s->trainer = pid;
    return pid;
}

/* ---- the test ------------------------------------------------------------------------------ */

static int t_keys_probe1(t_state_t *s) { return s->keys_from[1] > 0; }
static int t_aborted3(t_state_t *s)
{
    return fm_http_metric(s->metrics_port, "fedmq_secagg_members_total{result=\"aborted\"}") >= 3;
}

static void test_members(void **state)
{
    t_state_t *s = *state;
    double t0 = fm_proc_now();
    /* the clients whose first training does (not) drop out, as the trainer will draw it */
    uint32_t stay[CLIENT_LAST + 1], drop[CLIENT_LAST + 1], nstay = 0, ndrop = 0;
    for (uint32_t k = 0; k <= CLIENT_LAST; k++) {
        double f;
        if (s->part->offsets[k + 1] == s->part->offsets[k])
            continue;
        if (trainer_sim_dropout(SEED, k, 0, DROPOUT_P, &f))
            drop[ndrop++] = k;
        else
            stay[nstay++] = k;
    }
    fprintf(stderr, "%u clients stay, %u drop out on their first training\n", nstay, ndrop);
    assert_true(nstay >= 2 * K - 1 + 1 && ndrop >= 1);

    /* 1. secagg on, no invite: nobody trains, on an async MODEL nor on a sync round */
    t_set_model(s, 5, 0);
    t_spawn(s, 1);
    assert_true(t_pump(s, t_have_id, SPAWN_S));
    fprintf(stderr, "trainer id %s\n", s->trainer_id);
    t_pump(s, NULL, 2.0);
    t_set_model(s, MV, 1);
    memcpy(s->base, fm_model_params(s->layout), fm_model_nparams(s->layout) * sizeof(float));
    t_pump(s, NULL, 2.0);
    assert_int_equal(s->updates, 0);
    assert_int_equal(s->masked_seen, 0);

    /* 2. invites that are someone else's: no ADVERTISE_KEYS */
    fm_sa_deadlines_t dl = {5, 5, 8, 5};
    memset(s->probe, 0, sizeof s->probe);
    memset(s->keys_from, 0, sizeof s->keys_from);
    s->probe[1] = 0x1111;
    s->probe[2] = 0x2222;
    s->probe[3] = 0x3333;
    s->probe[4] = 0x4444;
    t_invite(s, 0x1111, 1, "someone-else-42", stay[0], &dl);
    t_invite(s, 0x2222, 1, s->trainer_id, CLIENT_LAST + 1, &dl); /* out of the range */
    /* a client already in a cohort: the second invite is refused */
    t_invite(s, 0x3333, 1, s->trainer_id, stay[0], &dl);
    t_invite(s, 0x4444, 2, s->trainer_id, stay[0], &dl);
    /* m other than the model's parameters + 1: refused */
    s->probe[5] = 0x5555;
    fm_wire_sa_invite_t inv;
    memset(&inv, 0, sizeof inv);
    inv.p = (fm_sa_params_t){.cohort = 0x5555,
                             .k = K,
                             .t = T,
                             .m = t_m(s) + 1,
                             .clip = CLIP,
                             .scale_bits = fm_sa_codec_scale(K, CLIP)};
    inv.index = 1;
    inv.version = MV;
    snprintf(inv.trainer, sizeof inv.trainer, "%s", s->trainer_id);
    inv.client = stay[1];
    inv.deadlines = dl;
    assert_int_equal(fm_wire_encode_sa_invite(&inv, &s->buf), 0);
    t_publish(s);
    t_pump(s, NULL, 2.0);
    assert_int_equal(s->keys_from[5], 0);
    assert_int_equal(s->keys_from[1], 0);
    assert_int_equal(s->keys_from[2], 0);
    assert_int_equal(s->keys_from[3], 1);
    assert_int_equal(s->keys_from[4], 0);
    /* a KEY_LIST that leaves the member out: refused (counted), the member aborts itself,
     * sends no SHARES */
    fm_sa_key_entry_t ke[3];
    memset(ke, 0, sizeof ke);
    for (uint32_t j = 0; j < 3; j++) {
        ke[j].index = j + 2;
        memset(ke[j].c_pk, (int)(0x10 + j), sizeof ke[j].c_pk);
        memset(ke[j].s_pk, (int)(0x20 + j), sizeof ke[j].s_pk);
    }
    fm_sa_key_list_t kl = {.cohort = 0x3333, .n = 3, .keys = ke};
    assert_int_equal(fm_wire_encode_sa_key_list(&kl, 1, &s->buf), 0);
    t_publish(s);
    t_pump(s, NULL, 1.0);
    assert_int_equal(s->shares_seen, 0);
    /* the cohort aborts: the member is freed, its client free for cohort A */
    fm_wire_sa_end_t end = {.cohort = 0x3333, .to = 1};
    assert_int_equal(fm_wire_encode_sa_end(FM_WIRE_SA_ABORT, &end, &s->buf), 0);
    t_publish(s);
    t_pump(s, NULL, 0.5);

    /* 3. cohort A: four members that stay */
    uint32_t all[K] = {1, 2, 3, 4};
    uint32_t a[K] = {stay[0], stay[1], stay[2], stay[3]};
    t_cohort(s, 0xA11CE0000000000AULL, a, all, K, MV);

    /* 4. cohort B, invited on v7 while the trainer holds v6 (the members wait for v7):
     * member 4's client drops out (simulated): recovered, U3 = {1, 2, 3} */
    uint32_t b[K] = {stay[4], stay[5], stay[6], drop[0]};
    t_cohort(s, 0xB0B000000000000BULL, b, all, K - 1, MV + 1);

    /* 5. a dead aggregator: a member that never hears again is aborted and freed at its
     * deadlines + TRAINER_SECAGG_GRACE_S (10 s) */
    fm_sa_deadlines_t quick = {0.1, 0.1, 0.1, 0.1};
    memset(s->keys_from, 0, sizeof s->keys_from);
    s->probe[1] = 0x7777;
    t_invite(s, 0x7777, 1, s->trainer_id, stay[7], &quick);
    double invited = fm_proc_now();
    assert_true(t_pump(s, t_keys_probe1, 5));
    assert_true(t_pump(s, t_aborted3, 20));
    double took = fm_proc_now() - invited;
    fprintf(stderr, "member timed out after %.1f s\n", took);
    assert_true(took >= 10.3 && took < 13);

    /* nothing but masked updates: 4 + 3 */
    assert_int_equal(s->updates, 0);
    assert_int_equal(s->masked_seen, 2 * K - 1);
    assert_int_equal(s->bad, 0);
    assert_int_equal(s->refused, 0);

    /* /metrics and the final summary count the members: joined 1 + 4 + 4 + 1, uploads 7,
     * done 7, aborted 3 (cohort 0x3333's ABORT, the dropped member, the timeout), invites
     * refused 2 (a client already a member, a wrong m) */
    assert_true(fm_http_metric(s->metrics_port, "fedmq_secagg_uploads_total") == 2 * K - 1);
    assert_true(fm_http_metric(s->metrics_port, "fedmq_secagg_members_total{result=\"done\"}") ==
                2 * K - 1);
    assert_true(
        fm_http_metric(s->metrics_port, "fedmq_secagg_members_total{result=\"aborted\"}") == 3);
    assert_true(fm_http_metric(s->metrics_port, "fedmq_secagg_cohorts_joined_total") ==
                2 * K + 2);
    assert_true(fm_http_metric(s->metrics_port, "fedmq_updates_sent_total") == 0);
    assert_true(fm_http_metric(s->metrics_port, "fedmq_secagg_invites_refused_total") == 2);
    assert_true(fm_http_metric(s->metrics_port, "fedmq_secagg_refused_total{reason=\"phase\"}") ==
                0);
    int st = fm_proc_stop(s->trainer, SIGTERM, 15);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_true(fm_proc_file_contains(s->log,
                                      "final: secagg: cohorts joined 10, masked updates sent 7, "
                                      "members done 7, aborted 3 (timed out 1), invites "
                                      "refused 2, messages refused 1"));
    fprintf(stderr, "test took %.1f s\n", fm_proc_now() - t0);
}

static int t_any_update(t_state_t *s) { return s->updates > 0; }

/* [secagg] disabled: the trainer trains as always (UPDATEs), and an invite addressed to it
 * is a bad frame on acks (counted, logged), never answered. */
static void test_disabled(void **state)
{
    t_state_t *s = *state;
    s->trainer_id[0] = '\0';
    s->updates = 0;
    snprintf(s->log, sizeof s->log, "%s/trainer-plain.log", s->tmp);
    t_set_model(s, 5, 0);
    t_spawn(s, 0);
    assert_true(t_pump(s, t_have_id, SPAWN_S));
    memset(s->probe, 0, sizeof s->probe);
    memset(s->keys_from, 0, sizeof s->keys_from);
    s->probe[1] = 0x6666;
    fm_sa_deadlines_t dl = {5, 5, 8, 5};
    double end = fm_proc_now() + 3;
    while (fm_proc_now() < end) { /* until the SUB surely joined */
        t_invite(s, 0x6666, 1, s->trainer_id, 0, &dl);
        t_pump(s, NULL, 0.3);
    }
    assert_true(t_pump(s, t_any_update, 20));
    assert_int_equal(s->keys_from[1], 0);
    int st = fm_proc_stop(s->trainer, SIGTERM, 15);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_true(fm_proc_file_contains(s->log, "bad frame on acks dropped"));
    assert_false(fm_proc_file_contains(s->log, "secagg:"));
}

int main(int argc, char **argv)
{
    (void)argc;
    fm_blas_setup(argv); /* the BLAS core the trainer runs: the replay must round like it */
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_members),
                                       cmocka_unit_test(test_disabled)};
    return cmocka_run_group_tests(tests, t_setup, t_teardown);
}

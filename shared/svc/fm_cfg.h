/* fm_cfg: the daemons' configuration (one INI-style file, read by a small strict reader).
 *
 * One const table describes every key: section, name, type (int, uint64, float, bool,
 * string, enum), bounds, default, a one-line help with units, and whether a running
 * daemon may take a new value on reload (SIGHUP). Values land in the plain struct
 * fm_config_t, one nested struct per section, one field per key with the key's name.
 * Grammars and enums that other modules own are parsed by those modules, called from the
 * table: federation.model is a built-in model name (fm_arch_builtin) or "file:/ABS/PATH" of a
 * model spec (read by fm_cfg_model_new, fm_cfg_model.h), aggregator.server_optimizer an
 * fm_server_opt_kind_t (fm_server_opt_kind_name), federation.partition is checked by
 * fm_partition_spec_parse, trainer.clients by fm_parse_range and the metrics_addr keys by
 * fm_metrics_addr_parse.
 *
 * File syntax: UTF-8 text (an optional BOM is skipped) of at most FM_CFG_FILE_MAX bytes,
 * lines ending in LF or CRLF, each at most FM_CFG_LINE_MAX bytes. A line is blank, a
 * comment (first non-blank character '#' or ';'), "[section]" (optionally followed by a
 * comment) or "key = value". Trailing white space is ignored; in a value, " ;" starts an
 * inline comment. Values are taken verbatim after trimming (no quotes); string values hold
 * at most FM_CFG_STR_MAX - 1 bytes. Errors: a NUL byte or invalid UTF-8 anywhere, an
 * over-long line, unknown sections and keys, a key outside a section, a key given twice,
 * indented key or section lines, anything else that is not one of the line kinds, and
 * values that do not parse.
 *
 * Every error is one line naming where, the key and the reason:
 *   "configs/x.conf:12: [aggregator] buffer_k = 0: out of range [1, 100000]"
 *   "override: [aggregator] buffer_k = ten: not an integer"           (fm_cfg_set)
 *   "configs/x.conf:3: [aggregatr]: unknown section (did you mean [aggregator]?)"
 *   "configs/x.conf:7: NUL byte at column 13"
 *   "configs/x.conf:4: [federation] clients_per_round = 200: must be <= [federation]
 *    num_clients (100)"      (cross-key; the line where the key was set, none for a default)
 * An error in the file is reported at the first bad line; later lines are not read.
 * Codes: FM_ERANGE (value out of range), FM_EFORMAT (not text: NUL, bad UTF-8, line or file
 * too long; syntax: not a section or key line, indented line), FM_EARG (everything else:
 * unknown section/key, bad value, duplicate, key outside a section, cross-key constraint),
 * -errno (the file cannot be read).
 *
 * No global state: the table is const. */
#ifndef FM_CFG_H
#define FM_CFG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "fm_err.h"
#include "fm_fedbuff.h"
#include "fm_model.h"
#include "fm_rdp.h"
#include "fm_robust.h"
#include "fm_screen.h"
#include "fm_server_opt.h"

/* Bytes of a string field, incl. the NUL: string values hold at most 255 bytes, in the file
 * and in fm_cfg_set alike, and every "key = value" line of a dump fits FM_CFG_LINE_MAX, so
 * every dump loads back. */
#define FM_CFG_STR_MAX 256
#define FM_CFG_LINE_MAX 1024          /* bytes of a line, without its LF or CRLF */
#define FM_CFG_FILE_MAX (1024 * 1024) /* bytes of a config file */
#define FM_CFG_DIGEST_BYTES 32

typedef enum {
    FM_CFG_STRATEGY_FEDAVG,
    FM_CFG_STRATEGY_FEDPROX,
    FM_CFG_STRATEGY_FEDBUFF
} fm_cfg_strategy_t;
typedef enum { FM_CFG_MODE_ASYNC, FM_CFG_MODE_SYNC } fm_cfg_mode_t;
/* How a sync round's clients are chosen ([federation] sampling). */
typedef enum { FM_CFG_SAMPLING_FIXED, FM_CFG_SAMPLING_POISSON } fm_cfg_sampling_t;

/* Enum-typed keys are stored as the owning module's enum or as int holding the enum above;
 * log_level keys hold the syslog level (LOG_ERR .. LOG_DEBUG) ready for fm_log_init. */
typedef struct {
    char model[FM_CFG_STR_MAX]; /* logreg | mlp | cnn | file:/ABS/PATH (fm_cfg_model.h) */
    int num_clients;
    int clients_per_round;
    int num_rounds; /* 0 = unlimited */
    int local_epochs;
    int local_steps; /* at most this many optimiser steps per local training, 0 = no limit */
    double local_fraction; /* (0, 1]: that fraction of local_epochs passes, 1 = whole epochs */
    double learning_rate;
    double lr_decay; /* client lr from model version v: learning_rate / (1 + lr_decay v) */
    int batch_size;
    double momentum;
    double weight_decay;
    double clip_norm; /* 0 = no clipping */
    double mu;        /* FedProx proximal term, 0 = off */
    int min_clients;
    int aggregation_strategy;       /* fm_cfg_strategy_t */
    int mode;                       /* fm_cfg_mode_t */
    int sampling;                   /* fm_cfg_sampling_t (sync) */
    char partition[FM_CFG_STR_MAX]; /* iid | dirichlet:A | shards:K */
    uint64_t seed;
    char data_dir[FM_CFG_STR_MAX];
    double target_accuracy;
    double time_limit_s; /* 0 = no limit */
    double holdout;      /* held-out fraction of each client's samples */
} fm_cfg_federation_t;

typedef struct {
    char model_pub[FM_CFG_STR_MAX];
    char snapshot[FM_CFG_STR_MAX];
    char updates[FM_CFG_STR_MAX];
    char aggregator_models[FM_CFG_STR_MAX];
    char metrics_pub[FM_CFG_STR_MAX];
    char acks[FM_CFG_STR_MAX];
} fm_cfg_endpoints_t;

typedef struct {
    double heartbeat_timeout_s;
    int trainers_per_peer; /* membership: live trainer ids per peer (fm_members) */
    int log_level;
    char metrics_addr[FM_CFG_STR_MAX]; /* HOST:PORT of /metrics, "" or "off" = none */
} fm_cfg_broker_t;

typedef struct {
    char clients[FM_CFG_STR_MAX]; /* "A-B" or "A", client ids in [0, num_clients) */
    char id[FM_CFG_STR_MAX];      /* the trainer id, "" = <host>-<pid> */
    int workers;
    int threads_per_worker;
    double heartbeat_interval_s;
    double slowdown_sigma; /* lognormal sigma of per-client slowdown, 0 = none */
    double dropout_prob;
    double ack_timeout_s;              /* first resend of an unacknowledged update */
    int unacked_max_mb;                /* memory for updates kept until acknowledged */
    char history_file[FM_CFG_STR_MAX]; /* JSON Lines of updates sent and answers, "" = none */
    int log_level;
    char metrics_addr[FM_CFG_STR_MAX];
    /* DP-SGD (fm_dpsgd; the budget: trainer_dp) */
    bool dp_sgd;
    double dp_clip;             /* C */
    double dp_noise_multiplier; /* sigma, 0 = no noise */
    double dp_sample_rate;      /* q */
    double dp_delta;
    double dp_target_epsilon;              /* 0 = no budget */
    char dp_accounts_file[FM_CFG_STR_MAX]; /* the accounts kept across restarts, "" = none */
    /* update encoding (fm_codec; docs/PROTOCOL.md §2.1.2): fm_codec_trainer_config */
    int encoding;          /* fm_dtype_t of the values: fp32, fp16, bf16, int8 */
    double topk_fraction;  /* 0 = dense, else the fraction of each tensor sent (top-k) */
    int topk_scope;        /* 0 = k per tensor, 1 = one k over the whole model */
    bool error_feedback;   /* top-k: keep what was not sent per client, add it next time */
    int error_feedback_mb; /* memory for those residuals (least recently used evicted) */
    double error_feedback_step_ahead; /* alpha: local training starts from the model plus
                                       * alpha x the client's residual (0 = classic EF) */
    int zstd_level;                   /* 0 = off, 1..19 */
} fm_cfg_trainer_t;

typedef struct {
    int buffer_k;
    fm_staleness_kind_t staleness; /* owned by fm_fedbuff (shared/fl) */
    double staleness_a;
    double staleness_b;
    int max_staleness;
    bool weight_by_samples;
    fm_robust_rule_t aggregation; /* owned by fm_robust; the screen's enums by fm_screen */
    double trim_fraction;
    double sign_threshold; /* robust learning rate (fm_signvote), 0 = off */
    double norm_bound;     /* 0 = no bound */
    fm_screen_mode_t norm_bound_mode;
    fm_screen_action_t norm_action;
    int norm_window;
    fm_server_opt_kind_t server_optimizer;
    double server_lr;
    double server_momentum;
    double beta1;
    double beta2;
    double tau;
    bool momentum_backoff; /* momentum / beta1 of a step divided by 1 + its mean staleness */
    char checkpoint_dir[FM_CFG_STR_MAX];
    bool acks; /* acknowledged delivery: a checkpoint per version, ACKs on endpoints.acks */
    int model_encoding; /* fm_dtype_t of the MODEL values published: fp32, fp16 or bf16 */
    int checkpoint_every;
    int checkpoint_keep;
    char init[FM_CFG_STR_MAX];         /* "" = seeded init */
    char history_file[FM_CFG_STR_MAX]; /* JSON Lines of the versions made, "" = none */
    double round_timeout_s;
    int log_level;
    char metrics_addr[FM_CFG_STR_MAX];
} fm_cfg_aggregator_t;

typedef struct {
    char test_split[FM_CFG_STR_MAX];
    char metrics_file[FM_CFG_STR_MAX];
    bool population; /* score the clients' held-out slices */
    double population_threshold;
    double population_interval_s; /* at most one population scoring per this many seconds */
    double min_interval_s;        /* at most one scoring per this many seconds */
    int nice;                     /* the process's nice value is raised to this at start */
    int log_level;
    char metrics_addr[FM_CFG_STR_MAX];
} fm_cfg_evaluator_t;

typedef enum { FM_CFG_SECURITY_NONE, FM_CFG_SECURITY_CURVE } fm_cfg_security_mode_t;

/* [security]: CurveZMQ (fm_sec.h). Certificate paths name the public file; the program
 * whose key it is also reads PATH_secret. */
typedef struct {
    fm_cfg_security_mode_t mode;
    char allow_dir[FM_CFG_STR_MAX]; /* public certificates of the clients the servers admit */
    char broker_cert[FM_CFG_STR_MAX];
    char aggregator_cert[FM_CFG_STR_MAX];
    char evaluator_cert[FM_CFG_STR_MAX];
    char trainer_cert[FM_CFG_STR_MAX];
    char monitor_cert[FM_CFG_STR_MAX];
} fm_cfg_security_t;

typedef enum { FM_CFG_PRIVACY_NONE, FM_CFG_PRIVACY_CLIENT } fm_cfg_privacy_mode_t;
typedef enum { FM_CFG_MECHANISM_GAUSSIAN, FM_CFG_MECHANISM_LAPLACE } fm_cfg_mechanism_t;

/* [privacy]: client-level differential privacy in the aggregator (aggregator_privacy.h,
 * docs/PRIVACY.md). */
typedef struct {
    fm_cfg_privacy_mode_t mode;
    fm_cfg_mechanism_t mechanism; /* gaussian; laplace is refused by fm_cfg_check */
    double clip_norm;             /* C: every update's L2 bound */
    double noise_multiplier;      /* sigma: noise std sigma * C on each buffer sum */
    double target_epsilon;        /* budget; 0 = none (epsilon reported only) */
    double delta;
    fm_rdp_conv_t conversion; /* owned by fm_rdp (shared/fl) */
    /* adaptive clipping (Andrew et al. 2021; fm_dp.h): clip_norm is then the initial C */
    bool adaptive_clip;
    double target_quantile;    /* gamma: target fraction of unclipped updates, in (0, 1) */
    double clip_learning_rate; /* eta_C: C <- C exp(-eta_C (fraction - gamma)) per step */
    double clip_count_stddev;  /* sigma_b: noise std of the clipped count; > sigma / 2 */
} fm_cfg_privacy_t;

/* [secagg]: cohort secure aggregation (docs/SECAGG.md), on when enabled; read by the
 * aggregator (which forms the cohorts) and the trainers (which join them). */
typedef struct {
    bool enabled;
    int cohort_size;  /* K, 0 = the buffer (async: buffer_k) or clients_per_round (sync) */
    int threshold;    /* t, 0 = max(floor(K/2) + 1, ceil(2K/3)) */
    double clip_norm; /* C of the members' updates ([privacy] clip_norm when privacy is on) */
    int cohorts;      /* async: cohorts in flight at once (sync: 1) */
    double keys_timeout_s, shares_timeout_s, train_timeout_s, unmask_timeout_s;
} fm_cfg_secagg_t;

/* Plain data: copy with `=`. */
typedef struct {
    fm_cfg_federation_t federation;
    fm_cfg_endpoints_t endpoints;
    fm_cfg_broker_t broker;
    fm_cfg_trainer_t trainer;
    fm_cfg_aggregator_t aggregator;
    fm_cfg_evaluator_t evaluator;
    fm_cfg_security_t security;
    fm_cfg_privacy_t privacy;
    fm_cfg_secagg_t secagg;
} fm_config_t;

typedef enum {
    FM_CFG_INT,
    FM_CFG_U64,
    FM_CFG_FLOAT,
    FM_CFG_BOOL,
    FM_CFG_STRING,
    FM_CFG_ENUM
} fm_cfg_type_t;

/* One row of the key table (all static, const). */
typedef struct {
    const char *section;
    const char *name;
    fm_cfg_type_t type;
    size_t offset; /* of the field in fm_config_t */
    double lo, hi; /* inclusive bounds of int and float keys; the values
                    * of enum keys */
    /* enum keys: the name of a value in [lo, hi] (static string), NULL for a gap */
    const char *(*enum_name)(int value);
    const char *def;  /* default, in file syntax */
    const char *help; /* one line, with units */
    bool reloadable;  /* may change in a running daemon (SIGHUP) */
    /* extra check of string values: 0, or nonzero with the reason in why[0..cap) */
    int (*check)(const char *value, char *why, size_t cap);
} fm_cfg_key_t;

/* The table, in file order. Borrowed, static. */
size_t fm_cfg_nkeys(void);
const fm_cfg_key_t *fm_cfg_key_at(size_t i);
/* The row of `section`.`name`, or NULL. */
const fm_cfg_key_t *fm_cfg_key_find(const char *section, const char *name);

/* Every key at its default (the whole struct is zeroed first, so configs compare with
 * memcmp as well as fm_cfg_equal). */
void fm_cfg_defaults(fm_config_t *c);

/* Defaults, then the file at `path`, then fm_cfg_check. *c is replaced only when all of
 * it is valid; on error *c is unchanged and `e` holds the one-line message.
 * Errors: -errno, FM_EFORMAT, FM_EARG, FM_ERANGE. */
int fm_cfg_load(fm_config_t *c, const char *path, fm_errmsg_t *e);

/* fm_cfg_load of a text in memory, text[0..len) (NULs in it are errors like in a file);
 * `name` stands for the path in messages (e.g. "checkpoint"). Same errors, less -errno. */
int fm_cfg_parse(fm_config_t *c, const char *name, const char *text, size_t len, fm_errmsg_t *e);

/* Command-line override of one key with the same validation as the file: either
 * key = "section.key" and value = "text", or value = NULL and key = "section.key=text".
 * Checks the key alone: call fm_cfg_check after the last override. On error *c is
 * unchanged. Errors: FM_EARG, FM_ERANGE. */
int fm_cfg_set(fm_config_t *c, const char *key, const char *value, fm_errmsg_t *e);

/* Cross-key constraints: clients_per_round <= num_clients, min_clients <= num_clients,
 * [trainer] dp_target_epsilon only with dp_sgd and a noise multiplier > 0,
 * trainer.clients within [0, num_clients), trainer.heartbeat_interval_s <
 * broker.heartbeat_timeout_s, a relative aggregator.norm_bound >= 1 (or 0), a trim_fraction
 * that trims at least one update of a buffer (aggregation = trimmed_mean). Errors: FM_EARG, e.g.
 * "config: [federation] clients_per_round = 10: must be <= [federation] num_clients (5)". */
int fm_cfg_check(const fm_config_t *c, fm_errmsg_t *e);

/* The probability that a given client trains in a given sync round, as the privacy
 * accountant uses it: clients_per_round / num_clients with [federation] sampling = poisson in
 * mode = sync (each client's own coin), else 1 (no amplification claimed). */
double fm_cfg_sample_rate(const fm_config_t *c);

/* [secagg] with its zeros resolved: K (cohort_size or the buffer/round size) and t
 * (threshold or max(floor(K/2) + 1, ceil(2K/3))), and the clip C the members use
 * ([privacy] clip_norm under client-level DP, else [secagg] clip_norm). Valid only for a
 * config fm_cfg_check accepted with secagg enabled. */
void fm_cfg_secagg_params(const fm_config_t *c, uint32_t *k, uint32_t *t, double *clip);

/* FM_EARG naming the first key that is not reloadable and differs between `old` and
 * `fresh` (for SIGHUP: keep `old` then); 0 if `fresh` may replace `old`. */
int fm_cfg_check_reload(const fm_config_t *old, const fm_config_t *fresh, fm_errmsg_t *e);

/* The value of "section.key" as canonical text (what fm_cfg_dump writes) into
 * buf[0..cap). Errors: FM_EARG (unknown key), -ENOBUFS (cap too small). */
int fm_cfg_get(const fm_config_t *c, const char *key, char *buf, size_t cap, fm_errmsg_t *e);

/* Name of `value` of the enum key "section.key" (e.g. "federation.mode", 1 -> "sync"),
 * or NULL. Static string. */
const char *fm_cfg_enum_name(const char *key, int value);

/* 1 if every value is equal (strings by content), else 0. */
int fm_cfg_equal(const fm_config_t *a, const fm_config_t *b);

/* A 256-bit digest of every value, to detect config changes (stored in checkpoints).
 * Not cryptographic. Input: the canonical dump "section.key=value\n" of every key in
 * table order (floats in their shortest round-trip form). Output: four 64-bit lanes,
 * each FNV-1a over the dump from its own start state (FNV offset basis XOR a per-lane
 * constant), finished with the length and murmur3's fmix64; lanes written little-endian. */
void fm_cfg_digest(const fm_config_t *c, uint8_t out[FM_CFG_DIGEST_BYTES]);

/* Write a complete config file: every section and key with its value and, above it, its
 * help, constraint, default and reload flag as comments. fm_cfg_load reads it back to an
 * equal struct. Errors: -errno (write error). */
int fm_cfg_dump(const fm_config_t *c, FILE *f);

/* What fm_cfg_dump writes, as a NUL-terminated string in *out (caller frees) of *len bytes
 * (without the NUL; len may be NULL). fm_cfg_parse reads it back to an equal struct.
 * Errors: -ENOMEM (*out is NULL then). */
int fm_cfg_text(const fm_config_t *c, char **out, size_t *len);

/* The keys whose values differ between `old` and `fresh`, in table order, as one line in
 * *out (caller frees): "[aggregator] buffer_k: 0 -> 20; [broker] log_level: info -> debug"
 * ("" when none; values in canonical form). For a stored text, fm_cfg_parse it first.
 * Returns the number of differing keys, or -ENOMEM (*out is NULL then). */
int fm_cfg_diff(const fm_config_t *old, const fm_config_t *fresh, char **out);

#endif

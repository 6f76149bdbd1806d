/* fm_cfg: the key table, value parsing, the file reader, dump, text, diff and digest
 * (see fm_cfg.h).
 *
 * The reader takes the whole file (at most FM_CFG_FILE_MAX bytes) and walks it line by
 * line, checking each line before it is parsed: no NUL byte, valid UTF-8, at most
 * FM_CFG_LINE_MAX bytes. Checking the bytes ourselves is what a line-at-a-time reader on
 * C strings (fgets, inih) cannot do: a NUL would end the C string and drop the rest of
 * the line without a word. */
#include "fm_cfg.h"

#include "fm_codec.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <syslog.h>

#include "fm_data.h"
#include "fm_dp.h"
#include "fm_metrics_http.h"
#include "fm_parse.h"
#include "fm_sa_codec.h"
#include "fm_sa_msg.h"
#include "fm_wire.h"

#define S_SHOWN 64   /* bytes of a value quoted in a message */
#define S_NUM_MAX 64 /* canonical text of a non-string value */
#define S_TEXT_MAX (FM_CFG_STR_MAX > S_NUM_MAX ? FM_CFG_STR_MAX : S_NUM_MAX)
#define S_NAME_MAX 32 /* bytes of a key name (cfg_test checks the table) */
_Static_assert(FM_CFG_LINE_MAX >= S_NAME_MAX + 3 + FM_CFG_STR_MAX - 1,
               "a dumped \"key = value\" line must fit FM_CFG_LINE_MAX");

/* ---- the table ---------------------------------------------------------------------------- */

/* Names of the enums fm_cfg owns; those of other modules come from the module. */
static const char *s_name_at(const char *const *names, size_t n, int v)
{
    return v >= 0 && (size_t)v < n ? names[v] : NULL;
}
#define S_NAMES(a, v) s_name_at((a), sizeof(a) / sizeof((a)[0]), (v))

static const char *s_strategy_name(int v)
{
    static const char *const n[] = {[FM_CFG_STRATEGY_FEDAVG] = "fedavg",
                                    [FM_CFG_STRATEGY_FEDPROX] = "fedprox",
                                    [FM_CFG_STRATEGY_FEDBUFF] = "fedbuff"};
    return S_NAMES(n, v);
}

static const char *s_mode_name(int v)
{
    static const char *const n[] = {[FM_CFG_MODE_ASYNC] = "async", [FM_CFG_MODE_SYNC] = "sync"};
    return S_NAMES(n, v);
}

static const char *s_sampling_name(int v)
{
    static const char *const n[] = {
        [FM_CFG_SAMPLING_FIXED] = "fixed", [FM_CFG_SAMPLING_POISSON] = "poisson"};
    return S_NAMES(n, v);
}

static const char *s_security_name(int v)
{
    static const char *const n[] = {
        [FM_CFG_SECURITY_NONE] = "none", [FM_CFG_SECURITY_CURVE] = "curve"};
    return S_NAMES(n, v);
}

static const char *s_privacy_name(int v)
{
    static const char *const n[] = {
        [FM_CFG_PRIVACY_NONE] = "none", [FM_CFG_PRIVACY_CLIENT] = "client"};
    return S_NAMES(n, v);
}

static const char *s_mechanism_name(int v)
{
    static const char *const n[] = {
        [FM_CFG_MECHANISM_GAUSSIAN] = "gaussian", [FM_CFG_MECHANISM_LAPLACE] = "laplace"};
    return S_NAMES(n, v);
}

static const char *s_conversion_name(int v)
{
    return fm_rdp_conv_name((fm_rdp_conv_t)v); /* v in the row's [lo, hi] */
}

static const char *s_staleness_name(int v)
{
    return fm_staleness_name((fm_staleness_kind_t)v); /* v in the row's [lo, hi] */
}

static const char *s_level_name(int v)
{
    static const char *const n[] = {[LOG_ERR] = "error",
                                    [LOG_WARNING] = "warning",
                                    [LOG_NOTICE] = "notice",
                                    [LOG_INFO] = "info",
                                    [LOG_DEBUG] = "debug"};
    return S_NAMES(n, v);
}

static const char *s_encoding_name(int v)
{
    return fm_codec_value_name((fm_dtype_t)v); /* v in the row's [lo, hi] */
}

static const char *s_topk_scope_name(int v)
{
    static const char *const n[] = {"tensor", "model"};
    return S_NAMES(n, v);
}

static const char *s_server_opt_name(int v)
{
    return fm_server_opt_kind_name((fm_server_opt_kind_t)v); /* v in the row's [lo, hi] */
}

static int s_check_model(const char *v, char *why, size_t cap);
static int s_check_partition(const char *v, char *why, size_t cap);
static int s_check_endpoint(const char *v, char *why, size_t cap);
static int s_check_clients(const char *v, char *why, size_t cap);
static int s_check_trainer_id(const char *v, char *why, size_t cap);
static int s_check_nonempty(const char *v, char *why, size_t cap);
static int s_check_metrics_addr(const char *v, char *why, size_t cap);

/* Offset of field sec.name, which must have type T (else: negative array size). */
#define S_FIELD(sec, name, T)                                                                    \
    (offsetof(fm_config_t, sec.name) +                                                           \
     0 * sizeof(char[_Generic(((fm_config_t *)0)->sec.name, T : 1, default                       \
                              : -1)]))
#define S_INT(sec, name, lo, hi, def, rel, help)                                                 \
    {                                                                                            \
#sec, #name, FM_CFG_INT, S_FIELD(sec, name, int), lo, hi, NULL, def, help, rel, NULL     \
    }
#define S_U64(sec, name, def, rel, help)                                                         \
    {                                                                                            \
#sec, #name, FM_CFG_U64, S_FIELD(sec, name, uint64_t), 0, 0, NULL, def, help, rel, NULL  \
    }
#define S_FLT(sec, name, lo, hi, def, rel, help)                                                 \
    {                                                                                            \
#sec, #name, FM_CFG_FLOAT, S_FIELD(sec, name, double), lo, hi, NULL, def, help, rel,     \
            NULL                                                                                 \
    }
#define S_BOOL(sec, name, def, rel, help)                                                        \
    {                                                                                            \
#sec, #name, FM_CFG_BOOL, S_FIELD(sec, name, bool), 0, 1, NULL, def, help, rel, NULL     \
    }
#define S_STR(sec, name, check, def, rel, help)                                                  \
    {                                                                                            \
#sec, #name, FM_CFG_STRING, S_FIELD(sec, name, char *), 0, 0, NULL, def, help, rel,      \
            check                                                                                \
    }
/* enum fields: int or the owning module's enum (the size of an int); values lo..hi */
#define S_ENUM_FIELD(sec, name)                                                                  \
    (offsetof(fm_config_t, sec.name) +                                                           \
     0 * sizeof(char[sizeof(((fm_config_t *)0)->sec.name) == sizeof(int) ? 1 : -1]))
#define S_ENUM(sec, name, namefn, lo, hi, def, rel, help)                                        \
    {                                                                                            \
#sec, #name, FM_CFG_ENUM, S_ENUM_FIELD(sec, name), lo, hi, namefn, def, help, rel, NULL  \
    }

#define S_RELOAD true
#define S_RESTART false

static const fm_cfg_key_t s_keys[] = {
    /* [federation]: the experiment; read by every daemon */
    S_STR(federation, model, s_check_model, "cnn", S_RESTART,
          "model: cnn (the seed's FederatedNet), mlp, logreg, or file:/ABS/PATH.safetensors "
          "(a custom model spec: its F32 tensors and initial values; run by the Python client)"),
    S_INT(federation, num_clients, 1, 1000000, "100", S_RESTART,
          "number of simulated clients (data partitions)"),
    S_INT(federation, clients_per_round, 1, 1000000, "10", S_RESTART,
          "clients whose updates make a version: sync, chosen per round; async, FedBuff's K "
          "unless [aggregator] buffer_k is set"),
    S_INT(federation, num_rounds, 0, 1000000000, "0", S_RESTART,
          "model versions to make (sync: rounds aggregated), then stop; 0 = unlimited"),
    S_INT(federation, local_epochs, 1, 1000, "1", S_RESTART, "local epochs per client update"),
    S_INT(federation, local_steps, 0, 1000000000, "0", S_RESTART,
          "at most this many optimiser steps per client update (the epoch under way ends "
          "there; a client with more samples trains on a fresh shuffled part of them each "
          "time); 0 = local_epochs full passes"),
    S_FLT(federation, local_fraction, 1e-6, 1, "1", S_RESTART,
          "a local training of this fraction of local_epochs passes over the client's samples "
          "(rounded up to whole steps; the epoch under way ends there); 1 = whole epochs"),
    S_FLT(federation, learning_rate, 0, 10, "0.01", S_RESTART, "client SGD learning rate"),
    S_FLT(federation, lr_decay, 0, 1000, "0", S_RESTART,
          "client learning-rate schedule: a local training from model version v uses "
          "learning_rate / (1 + lr_decay x v); 0 = constant"),
    S_INT(federation, batch_size, 1, 65536, "32", S_RESTART, "client mini-batch size, samples"),
    S_FLT(federation, momentum, 0, 1, "0.9", S_RESTART, "client SGD momentum, 0 = plain SGD"),
    S_FLT(federation, weight_decay, 0, 1, "0", S_RESTART, "client L2 weight decay"),
    S_FLT(federation, clip_norm, 0, 1e9, "0", S_RESTART,
          "clip each client step's global gradient norm to this, 0 = no clipping"),
    S_FLT(federation, mu, 0, 1000, "0", S_RESTART, "FedProx proximal coefficient mu, 0 = off"),
    S_INT(federation, min_clients, 1, 1000000, "1", S_RESTART,
          "live clients needed: sync rounds start with and aggregate at least this many; "
          "async accepts updates only while this many clients are live"),
    S_ENUM(federation, aggregation_strategy, s_strategy_name, FM_CFG_STRATEGY_FEDAVG,
           FM_CFG_STRATEGY_FEDBUFF, "fedbuff", S_RESTART,
           "fedavg, fedprox (fedavg + proximal term mu) or fedbuff (= fedavg, async only); "
           "async modes buffer K updates (FedBuff)"),
    S_ENUM(federation, mode, s_mode_name, FM_CFG_MODE_ASYNC, FM_CFG_MODE_SYNC, "async", S_RESTART,
           "async (versions as updates arrive) or sync (rounds with a deadline)"),
    S_ENUM(federation, sampling, s_sampling_name, FM_CFG_SAMPLING_FIXED, FM_CFG_SAMPLING_POISSON,
           "fixed", S_RESTART,
           "sync: fixed (the aggregator picks clients_per_round clients per round) or poisson "
           "(every live client is asked, each trains with probability q = clients_per_round / "
           "num_clients by its own secret coin, and declines otherwise)"),
    S_STR(federation, partition, s_check_partition, "dirichlet:0.5", S_RESTART,
          "split of the training set over clients: iid, dirichlet:ALPHA or shards:K"),
    S_U64(federation, seed, "1", S_RESTART,
          "seed of every random stream (init, partition, sampling, dropout)"),
    S_STR(federation, data_dir, s_check_nonempty, "/usr/share/datasets/fashion-mnist", S_RESTART,
          "directory with the MNIST-format IDX files (gzipped or not)"),
    S_FLT(federation, target_accuracy, 0, 1, "0.85", S_RELOAD,
          "stop when the evaluator reports this test accuracy, 0..1"),
    S_FLT(federation, time_limit_s, 0, 1e9, "600", S_RELOAD,
          "stop after this many seconds, 0 = no limit"),
    S_FLT(federation, holdout, 0, 0.9, "0.1", S_RESTART,
          "fraction of each client's samples held out (never trained on) for population-"
          "level validation by the evaluator, 0 = none"),

    /* [endpoints]: ZeroMQ endpoints, bound by the first daemon named, connected by others */
    S_STR(endpoints, model_pub, s_check_endpoint, "tcp://127.0.0.1:5560", S_RESTART,
          "broker PUB: each new model version to trainers and the evaluator"),
    S_STR(endpoints, snapshot, s_check_endpoint, "tcp://127.0.0.1:5561", S_RESTART,
          "broker ROUTER: the current model on request (late joiners)"),
    S_STR(endpoints, updates, s_check_endpoint, "tcp://127.0.0.1:5562", S_RESTART,
          "aggregator PULL: client updates pushed by trainers"),
    S_STR(endpoints, aggregator_models, s_check_endpoint, "tcp://127.0.0.1:5563", S_RESTART,
          "aggregator PUB (binds) -> broker SUB (connects): each new model version, and the "
          "current one every second"),
    S_STR(endpoints, metrics_pub, s_check_endpoint, "tcp://127.0.0.1:5564", S_RESTART,
          "evaluator PUB: the metrics feed"),
    S_STR(endpoints, acks, s_check_endpoint, "tcp://127.0.0.1:5565", S_RESTART,
          "aggregator PUB: acknowledgements of updates (ACK), when [aggregator] acks is on"),

    /* [broker] */
    S_FLT(broker, heartbeat_timeout_s, 0.1, 86400, "10", S_RELOAD,
          "a trainer silent for this many seconds is considered gone"),
    S_INT(broker, trainers_per_peer, 1, 4096, "64", S_RELOAD,
          "membership (broker and aggregator): live trainer ids one peer may hold (TCP: per "
          "IP address, ipc: per user); a new id beyond it is refused and counted"),
    S_ENUM(broker, log_level, s_level_name, LOG_ERR, LOG_DEBUG, "info", S_RELOAD,
           "log threshold: error, warning, notice, info or debug"),
    S_STR(broker, metrics_addr, s_check_metrics_addr, "127.0.0.1:9561", S_RESTART,
          "HOST:PORT of the Prometheus /metrics endpoint (numeric IPv4 or [IPv6]), off = none"),

    /* [trainer] */
    S_STR(trainer, clients, s_check_clients, "0-99", S_RESTART,
          "client ids this trainer pool serves: A-B (inclusive) or A"),
    S_STR(trainer, id, s_check_trainer_id, "", S_RESTART,
          "trainer id on the wire (letters, digits and . _ - : @ /), stable across restarts so "
          "that a restart is seen as this trainer restarting; empty = <host>-<pid> (new at "
          "every start); security = curve: the certificate's name instead"),
    S_INT(trainer, workers, 1, 1024, "2", S_RESTART,
          "worker processes, i.e. client trainings at the same time"),
    S_INT(trainer, threads_per_worker, 1, 256, "1", S_RESTART,
          "threads per client training (batch split over threads)"),
    S_FLT(trainer, heartbeat_interval_s, 0.01, 86400, "2", S_RELOAD,
          "seconds between heartbeats to the broker"),
    S_FLT(trainer, slowdown_sigma, 0, 10, "0", S_RELOAD,
          "per-client slowdown factor ~ lognormal(0, sigma) (device heterogeneity), "
          "0 = homogeneous"),
    S_FLT(trainer, dropout_prob, 0, 1, "0", S_RELOAD,
          "probability that a client drops its update instead of sending it, 0..1"),
    S_FLT(trainer, ack_timeout_s, 0.1, 86400, "30", S_RELOAD,
          "with an acknowledging aggregator: resend an update not acknowledged after this "
          "many seconds (the wait doubles per resend, up to 8 times this)"),
    S_INT(trainer, unacked_max_mb, 1, 65536, "256", S_RESTART,
          "memory for sent updates kept until acknowledged; beyond it the oldest is given up "
          "(logged and counted)"),
    S_STR(trainer, history_file, NULL, "", S_RESTART,
          "append a JSON line per update sent, resent and answered (ids, for audits and "
          "tests), empty = none"),
    S_ENUM(trainer, log_level, s_level_name, LOG_ERR, LOG_DEBUG, "info", S_RELOAD,
           "log threshold: error, warning, notice, info or debug"),
    S_STR(trainer, metrics_addr, s_check_metrics_addr, "127.0.0.1:9564", S_RESTART,
          "HOST:PORT of the Prometheus /metrics endpoint (numeric IPv4 or [IPv6]), off = none; "
          "trainer pools on one host need one port each"),
    /* [trainer] DP-SGD: sample-level differential privacy of each client (docs/PRIVACY.md) */
    S_BOOL(trainer, dp_sgd, "false", S_RESTART,
           "train every client of this pool with DP-SGD (per-example clipping, Gaussian noise, "
           "Poisson sampling) instead of plain mini-batches"),
    S_FLT(trainer, dp_clip, 1e-6, 1e6, "1", S_RESTART,
          "DP-SGD: L2 bound C of each example's gradient over all parameters"),
    S_FLT(trainer, dp_noise_multiplier, 0, 100, "1.1", S_RESTART,
          "DP-SGD: sigma, the noise std per coordinate of each step's sum is sigma * dp_clip; "
          "0 = clipping only, no privacy"),
    S_FLT(trainer, dp_sample_rate, 1e-6, 1, "0.01", S_RESTART,
          "DP-SGD: q, the probability that an example joins a step (Poisson sampling); an "
          "epoch is round(1/q) steps"),
    S_FLT(trainer, dp_delta, 1e-15, 0.5, "1e-05", S_RESTART,
          "DP-SGD: the delta of each client's reported (epsilon, delta); below 1 / its samples"),
    S_FLT(trainer, dp_target_epsilon, 0, 1e6, "0", S_RESTART,
          "DP-SGD: a client whose next local training would take its epsilon above this "
          "stops training and sends no more updates; 0 = no budget"),
    S_STR(trainer, dp_accounts_file, NULL, "", S_RESTART,
          "DP-SGD: file keeping each client's privacy account (its step count) across "
          "restarts, saved before every update is sent; empty = in memory only (a restart "
          "forgets the spent budget)"),
    /* [trainer] update encoding (fm_codec) */
    S_ENUM(trainer, encoding, s_encoding_name, FM_DT_F32, FM_DT_I8, "fp32", S_RESTART,
           "type of the update values on the wire: fp32 (exact), fp16, bf16 or int8 (per-tensor "
           "scale, stochastic rounding); anything but fp32 is protocol version 2"),
    S_FLT(trainer, topk_fraction, 0, 1, "0", S_RESTART,
          "top-k sparsification: send only this fraction of each tensor's entries (those of "
          "largest magnitude, with their indices); 0 = dense"),
    S_ENUM(trainer, topk_scope, s_topk_scope_name, 0, 1, "model", S_RESTART,
           "top-k: k per tensor (each tensor sends topk_fraction of its entries) or one k over "
           "the whole model (the largest entries wherever they are; a tensor may send none)"),
    S_BOOL(trainer, error_feedback, "true", S_RESTART,
           "with top-k: keep per client what was not sent and add it to the next update "
           "(error feedback); no effect on dense encodings"),
    S_FLT(trainer, error_feedback_step_ahead, 0, 1, "1", S_RESTART,
          "with error feedback: local training starts from the model plus this fraction of "
          "the client's residual (step-ahead error feedback), so it does not learn again what "
          "it has not sent yet; 0 = classic error feedback"),
    S_INT(trainer, error_feedback_mb, 1, 1048576, "1024", S_RESTART,
          "memory for the clients' error-feedback residuals (4 bytes per parameter each); "
          "beyond it the least recently used client's residual is dropped (counted)"),
    S_INT(trainer, zstd_level, 0, 19, "0", S_RESTART,
          "compress each tensor's bytes with zstd at this level, 0 = off"),

    /* [aggregator] */
    S_INT(aggregator, buffer_k, 0, 100000, "0", S_RESTART,
          "async: updates buffered before a new model version (FedBuff K), 0 = [federation] "
          "clients_per_round"),
    S_ENUM(aggregator, staleness, s_staleness_name, FM_STALENESS_CONSTANT, FM_STALENESS_HINGE,
           "polynomial", S_RESTART,
           "staleness weight s(tau): constant 1, polynomial (1+tau)^-a, "
           "hinge 1 up to b then 1/(a(tau-b)+1)"),
    S_FLT(aggregator, staleness_a, 0, 100, "0.5", S_RESTART,
          "staleness a: exponent (polynomial) or slope (hinge)"),
    S_FLT(aggregator, staleness_b, 0, 1e6, "4", S_RESTART,
          "staleness b: hinge threshold, versions"),
    S_INT(aggregator, max_staleness, 0, 1000000, "20", S_RELOAD,
          "updates more than this many versions behind are rejected"),
    S_BOOL(aggregator, weight_by_samples, "true", S_RESTART,
           "weight each update by its client's number of samples"),
    S_ENUM(aggregator, aggregation, fm_robust_rule_name, FM_ROBUST_MEAN,
           FM_ROBUST_NORM_BOUNDED_MEAN, "mean", S_RESTART,
           "rule turning a buffer into one delta: mean (weighted, streaming), median, "
           "trimmed_mean, norm_bounded_mean (these keep the buffer's K updates in memory)"),
    S_FLT(aggregator, trim_fraction, 0, 0.49, "0.1", S_RESTART,
          "trimmed_mean: fraction of the updates dropped at each end, per parameter"),
    S_FLT(aggregator, sign_threshold, 0, 1, "0", S_RESTART,
          "robust learning rate against backdoors: the step on a parameter is reversed where "
          "fewer than this fraction of the buffer's updates, net, agree on its sign; 0 = off"),
    S_FLT(aggregator, norm_bound, 0, 1e18, "0", S_RELOAD,
          "L2-norm bound per update, 0 = none: the norm (absolute) or a factor >= 1 of the "
          "median of recent norms (relative)"),
    S_ENUM(aggregator, norm_bound_mode, fm_screen_mode_name, FM_SCREEN_ABSOLUTE,
           FM_SCREEN_RELATIVE, "absolute", S_RELOAD,
           "norm_bound is absolute, or relative to the median of the last norm_window norms"),
    S_ENUM(aggregator, norm_action, fm_screen_action_name, FM_SCREEN_CLIP, FM_SCREEN_REJECT,
           "clip", S_RELOAD,
           "an update above the bound is clipped (scaled down to it) or rejected (norm)"),
    S_INT(aggregator, norm_window, 1, 10000, "50", S_RESTART,
          "relative bound: recent norms the median is taken over (no bound until that many)"),
    S_ENUM(aggregator, server_optimizer, s_server_opt_name, FM_SERVER_OPT_FEDAVG,
           FM_SERVER_OPT_FEDYOGI, "fedavg", S_RESTART,
           "server step on the averaged delta: fedavg, fedavgm (momentum), fedadam, fedyogi"),
    S_FLT(aggregator, server_lr, 0, 100, "1", S_RESTART, "server learning rate"),
    S_FLT(aggregator, server_momentum, 0, 1, "0.9", S_RESTART, "fedavgm server momentum"),
    S_FLT(aggregator, beta1, 0, 0.999999, "0.9", S_RESTART, "fedadam/fedyogi first-moment decay"),
    S_FLT(aggregator, beta2, 0, 0.999999, "0.99", S_RESTART,
          "fedadam/fedyogi second-moment decay"),
    S_FLT(aggregator, tau, 1e-12, 10, "0.001", S_RESTART,
          "fedadam/fedyogi adaptivity (added to the root of the second moment)"),
    S_BOOL(aggregator, momentum_backoff, "true", S_RESTART,
           "each server step's momentum (fedavgm momentum, fedadam/fedyogi beta1) is divided "
           "by 1 + the mean staleness of the updates in it"),
    S_STR(aggregator, checkpoint_dir, s_check_nonempty, "/var/lib/fedmq/aggregator", S_RESTART,
          "LMDB checkpoint directory (created with mode 0700)"),
    S_ENUM(aggregator, model_encoding, s_encoding_name, FM_DT_F32, FM_DT_BF16, "fp32", S_RESTART,
           "type of the model values published: fp32, or fp16 / bf16 (half the bytes to every "
           "trainer and the evaluator, protocol version 2; the aggregator keeps float32)"),
    S_BOOL(aggregator, acks, "true", S_RESTART,
           "acknowledged delivery: checkpoint every version before publishing it, then "
           "acknowledge its updates (ACK on endpoints.acks); false = checkpoint_every"),
    S_INT(aggregator, checkpoint_every, 1, 1000000, "10", S_RELOAD,
          "write a checkpoint every this many model versions (acks = false)"),
    S_INT(aggregator, checkpoint_keep, 1, 10000, "5", S_RELOAD,
          "checkpoints kept; older ones are pruned"),
    S_STR(aggregator, init, NULL, "", S_RESTART,
          "safetensors file with the initial model, empty = seeded PyTorch-style init"),
    S_STR(aggregator, history_file, NULL, "", S_RESTART,
          "append a JSON line per start and per version made, with the ids of its updates "
          "(written before its checkpoint; for audits and tests), empty = none"),
    S_FLT(aggregator, round_timeout_s, 0.1, 86400, "60", S_RELOAD,
          "sync mode: close a round after this many seconds"),
    S_ENUM(aggregator, log_level, s_level_name, LOG_ERR, LOG_DEBUG, "info", S_RELOAD,
           "log threshold: error, warning, notice, info or debug"),
    S_STR(aggregator, metrics_addr, s_check_metrics_addr, "127.0.0.1:9562", S_RESTART,
          "HOST:PORT of the Prometheus /metrics endpoint (numeric IPv4 or [IPv6]), off = none"),

    /* [evaluator] */
    S_STR(evaluator, test_split, s_check_nonempty, "t10k", S_RESTART,
          "IDX file prefix of the test set in data_dir (t10k-images-idx3-ubyte...)"),
    S_STR(evaluator, metrics_file, s_check_nonempty, "fedmq-metrics.jsonl", S_RELOAD,
          "JSON-lines file the evaluator appends one record per model version to"),
    S_BOOL(evaluator, population, "true", S_RESTART,
           "also score every client's held-out slice (needs federation.holdout > 0)"),
    S_FLT(evaluator, population_threshold, 0, 1, "0.7", S_RELOAD,
          "population feed: report the fraction of clients whose accuracy is below this"),
    S_FLT(evaluator, population_interval_s, 0, 1e6, "30", S_RELOAD,
          "score the population at most once per this many seconds (on the version being "
          "scored when it is due), 0 = with every scored version"),
    S_FLT(evaluator, min_interval_s, 0, 3600, "10", S_RELOAD,
          "start a scoring at most once per this many seconds (the newest version then); 0 "
          "= as soon as the previous one ends"),
    S_INT(evaluator, nice, 0, 19, "0", S_RESTART,
          "CPU priority: the evaluator raises its nice value to this at start (0 = as "
          "started), so the trainers on the same machine keep the cores"),
    S_ENUM(evaluator, log_level, s_level_name, LOG_ERR, LOG_DEBUG, "info", S_RELOAD,
           "log threshold: error, warning, notice, info or debug"),
    S_STR(evaluator, metrics_addr, s_check_metrics_addr, "127.0.0.1:9563", S_RESTART,
          "HOST:PORT of the Prometheus /metrics endpoint (numeric IPv4 or [IPv6]), off = none"),

    /* [security]: CurveZMQ on every socket (fm_sec.h); read by every daemon */
    S_ENUM(security, mode, s_security_name, FM_CFG_SECURITY_NONE, FM_CFG_SECURITY_CURVE, "none",
           S_RESTART,
           "none (plain sockets: a trusted host only) or curve (CurveZMQ: encrypted, every "
           "client's key checked against allow_dir)"),
    S_STR(security, allow_dir, NULL, "/etc/fedmq/keys/allow", S_RESTART,
          "directory of the public certificates (NAME.cert) of the clients the broker, "
          "aggregator and evaluator admit"),
    S_STR(security, broker_cert, NULL, "/etc/fedmq/keys/broker.cert", S_RESTART,
          "the broker's public certificate (the broker also reads PATH_secret)"),
    S_STR(security, aggregator_cert, NULL, "/etc/fedmq/keys/aggregator.cert", S_RESTART,
          "the aggregator's public certificate (the aggregator also reads PATH_secret)"),
    S_STR(security, evaluator_cert, NULL, "/etc/fedmq/keys/evaluator.cert", S_RESTART,
          "the evaluator's public certificate (the evaluator also reads PATH_secret)"),
    S_STR(security, trainer_cert, NULL, "/etc/fedmq/keys/trainer.cert", S_RESTART,
          "this trainer's certificate (+ PATH_secret); its name is the trainer id"),
    S_STR(security, monitor_cert, NULL, "/etc/fedmq/keys/monitor.cert", S_RESTART,
          "certificate (+ PATH_secret) of fedmq run / watch on the evaluator's METRICS feed"),

    /* [privacy]: client-level differential privacy; read by the aggregator */
    S_ENUM(privacy, mode, s_privacy_name, FM_CFG_PRIVACY_NONE, FM_CFG_PRIVACY_CLIENT, "none",
           S_RESTART,
           "none, or client: every update clipped to clip_norm, Gaussian noise on every "
           "buffer or round, epsilon accounted (docs/PRIVACY.md)"),
    S_ENUM(privacy, mechanism, s_mechanism_name, FM_CFG_MECHANISM_GAUSSIAN,
           FM_CFG_MECHANISM_LAPLACE, "gaussian", S_RESTART,
           "noise distribution: gaussian (laplace is refused: its accounting is not built)"),
    S_FLT(privacy, clip_norm, 1e-12, 1e12, "1", S_RESTART,
          "C: L2 norm every update is clipped to (the sensitivity of one client)"),
    S_FLT(privacy, noise_multiplier, 0, 1e6, "1", S_RESTART,
          "sigma: Gaussian noise of std sigma x clip_norm per coordinate on each buffer sum; "
          "fedmq privacy --target-epsilon plans it"),
    S_FLT(privacy, target_epsilon, 0, 1e6, "0", S_RESTART,
          "privacy budget: no version whose epsilon would exceed it is made (training "
          "finishes); 0 = no budget, epsilon is reported only"),
    S_FLT(privacy, delta, 1e-300, 0.5, "1e-05", S_RESTART,
          "the delta of (epsilon, delta); below 1 / clients"),
    S_ENUM(privacy, conversion, s_conversion_name, FM_RDP_IMPROVED, FM_RDP_CLASSIC, "improved",
           S_RESTART,
           "RDP to (epsilon, delta): improved (Balle et al. 2020, as Opacus) or classic "
           "(Mironov 2017)"),
    S_BOOL(privacy, adaptive_clip, "false", S_RESTART,
           "adaptive clipping (Andrew et al. 2021): C follows the target_quantile of the update "
           "norms, starting at clip_norm; costs no extra epsilon (the update noise grows "
           "instead: docs/PRIVACY.md)"),
    S_FLT(privacy, target_quantile, 0, 1, "0.5", S_RESTART,
          "gamma: the fraction of updates adaptive clipping leaves unclipped, in (0, 1); 0.5 "
          "clips at the median norm"),
    S_FLT(privacy, clip_learning_rate, 0, 10, "0.2", S_RESTART,
          "eta: each step C <- C exp(-eta (unclipped fraction - target_quantile)), so C moves "
          "by at most a factor exp(eta) per step"),
    S_FLT(privacy, clip_count_stddev, 0, 1e6, "2.5", S_RESTART,
          "sigma_b: noise std of the unclipped count; must exceed noise_multiplier / 2 (the "
          "update noise multiplier becomes (sigma^-2 - (2 sigma_b)^-2)^-1/2; 2.5 adds 2% at "
          "sigma 1); the fraction's noise is sigma_b / K"),

    /* [secagg]: cohort secure aggregation (docs/SECAGG.md); read by the aggregator and the
     * trainers */
    S_BOOL(secagg, enabled, "false", S_RESTART,
           "secure aggregation: the aggregator sees only the sum of each cohort of K updates, "
           "never one alone (Bonawitz et al. 2017; docs/SECAGG.md); needs [aggregator] acks"),
    S_INT(secagg, cohort_size, 0, 256, "0", S_RESTART,
          "K, members per cohort (2..256); 0 = [aggregator] buffer_k (async) or "
          "[federation] clients_per_round (sync)"),
    S_INT(secagg, threshold, 0, 256, "0", S_RESTART,
          "t, members whose shares unmask a cohort (floor(K/2)+1 .. K); fewer survivors "
          "abort it; 0 = max(floor(K/2)+1, ceil(2K/3))"),
    S_FLT(secagg, clip_norm, 1e-6, 1e6, "10", S_RESTART,
          "C, L2 bound each member clips its update to before encoding (with [privacy] mode = "
          "client, [privacy] clip_norm is used instead)"),
    S_INT(secagg, cohorts, 1, 64, "2", S_RESTART,
          "async: cohorts in flight at once (each one FedBuff buffer); sync: always 1"),
    S_FLT(secagg, keys_timeout_s, 0.05, 3600, "10", S_RESTART,
          "phase deadline: members advertise their keys within this many seconds"),
    S_FLT(secagg, shares_timeout_s, 0.05, 3600, "10", S_RESTART,
          "phase deadline: members send their encrypted shares"),
    S_FLT(secagg, train_timeout_s, 0.05, 86400, "120", S_RESTART,
          "phase deadline: members train and upload their masked update; later ones are "
          "dropped (their masks recovered)"),
    S_FLT(secagg, unmask_timeout_s, 0.05, 3600, "10", S_RESTART,
          "phase deadline: survivors send the shares that unmask the sum"),
};

#define S_NKEYS (sizeof s_keys / sizeof s_keys[0])

static const char *const s_sections[] = {"federation", "endpoints",  "broker",
                                         "trainer",    "aggregator", "evaluator",
                                         "security",   "privacy",    "secagg"};
#define S_NSECTIONS (sizeof s_sections / sizeof s_sections[0])

size_t fm_cfg_nkeys(void) { return S_NKEYS; }

const fm_cfg_key_t *fm_cfg_key_at(size_t i) { return i < S_NKEYS ? &s_keys[i] : NULL; }

const fm_cfg_key_t *fm_cfg_key_find(const char *section, const char *name)
{
    for (size_t i = 0; i < S_NKEYS; i++)
        if (section && name && strcmp(s_keys[i].section, section) == 0 &&
            strcmp(s_keys[i].name, name) == 0)
            return &s_keys[i];
    return NULL;
}

static bool s_section_known(const char *section)
{
    for (size_t i = 0; i < S_NSECTIONS; i++)
        if (strcmp(s_sections[i], section) == 0)
            return true;
    return false;
}

/* "section.key" -> row, or NULL. */
static const fm_cfg_key_t *s_find_dotted(const char *key)
{
    const char *dot = key ? strchr(key, '.') : NULL;
    if (!dot || (size_t)(dot - key) >= 32)
        return NULL;
    char sec[32];
    memcpy(sec, key, (size_t)(dot - key));
    sec[dot - key] = '\0';
    return fm_cfg_key_find(sec, dot + 1);
}

static void *s_field(fm_config_t *c, const fm_cfg_key_t *k) { return (char *)c + k->offset; }

static const void *s_cfield(const fm_config_t *c, const fm_cfg_key_t *k)
{
    return (const char *)c + k->offset;
}

/* ---- string validators ----------------------------------------------------------------------
 */

static int s_check_nonempty(const char *v, char *why, size_t cap)
{
    if (*v)
        return 0;
    snprintf(why, cap, "must not be empty");
    return 1;
}

/* A built-in model name (fm_arch_builtin) or "file:" + an absolute path; the file itself is
 * read by the daemons at start (fm_cfg_model_new), not here. */
static int s_check_model(const char *v, char *why, size_t cap)
{
    if (fm_arch_builtin(v))
        return 0;
    if (strncmp(v, "file:", 5) == 0 && v[5] == '/' && v[6])
        return 0;
    snprintf(why, cap, "not a model: logreg, mlp, cnn or file:/ABS/PATH.safetensors");
    return 1;
}

/* The grammar is fm_data's (fm_partition_spec_parse), so config and partitioner agree. */
static int s_check_partition(const char *v, char *why, size_t cap)
{
    fm_partition_spec_t spec;
    fm_errmsg_t e = {{0}};
    if (fm_partition_spec_parse(v, &spec, &e) == 0)
        return 0;
    snprintf(why, cap, "not a partition: %s", e.msg);
    return 1;
}

/* tcp://HOST:PORT (PORT 1..65535 or *), ipc://PATH, inproc://NAME. */
static int s_check_endpoint(const char *v, char *why, size_t cap)
{
    if (strncmp(v, "tcp://", 6) == 0) {
        const char *colon = strrchr(v + 6, ':');
        if (colon && colon > v + 6) {
            const char *port = colon + 1;
            if (strcmp(port, "*") == 0)
                return 0;
            char *end = NULL;
            long p = isdigit((unsigned char)*port) ? strtol(port, &end, 10) : 0;
            if (end && !*end && p >= 1 && p <= 65535)
                return 0;
        }
    } else if ((strncmp(v, "ipc://", 6) == 0 && v[6]) ||
               (strncmp(v, "inproc://", 9) == 0 && v[9])) {
        return 0;
    }
    snprintf(why, cap, "not a ZeroMQ endpoint (tcp://HOST:PORT, ipc://PATH or inproc://NAME)");
    return 1;
}

/* The grammar is fm_metrics_http's (fm_metrics_addr_parse), so config and server agree. */
static int s_check_metrics_addr(const char *v, char *why, size_t cap)
{
    fm_metrics_addr_t a;
    return fm_metrics_addr_parse(v, &a, why, cap) != 0;
}

/* "A-B" or "A" (fm_parse_range, as the trainer reads it): *lo, *hi. 0 on success. */
static int s_parse_clients(const char *v, long *lo, long *hi)
{
    return fm_parse_range("[trainer] clients", v, 0, INT_MAX, lo, hi, NULL);
}

static int s_check_clients(const char *v, char *why, size_t cap)
{
    long lo, hi;
    if (s_parse_clients(v, &lo, &hi) == 0)
        return 0;
    snprintf(why, cap, "not a client range (A-B with 0 <= A <= B, or A)");
    return 1;
}

static int s_check_trainer_id(const char *v, char *why, size_t cap)
{
    size_t n = strlen(v), bad = fm_wire_text_check(FM_WIRE_TEXT_ID, v, n);
    if (bad == n)
        return 0;
    snprintf(why, cap,
             "byte 0x%02x at offset %zu is not allowed in a trainer id (letters, "
             "digits, . _ - : @ /)",
             (unsigned char)v[bad], bad);
    return 1;
}

/* ---- values ------------------------------------------------------------------------------- */

static int s_parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

/* The name of value v of enum key k, or NULL (out of range or a gap). */
static const char *s_enum_name(const fm_cfg_key_t *k, int v)
{
    return v >= k->lo && v <= k->hi ? k->enum_name(v) : NULL;
}

/* "a|b|c" */
static void s_enum_list(const fm_cfg_key_t *k, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (int v = (int)k->lo; v <= (int)k->hi && n < cap; v++) {
        const char *name = s_enum_name(k, v);
        if (name)
            n += (size_t)snprintf(buf + n, cap - n, "%s%s", n ? "|" : "", name);
    }
}

/* Integral values below 1e15 as plain integers ("600", not "6e+02"), others as the
 * shortest "%.Ng" that reads back as exactly d. */
static void s_fmt_double(char *buf, size_t cap, double d)
{
    if (d == trunc(d) && fabs(d) < 1e15) {
        snprintf(buf, cap, "%.0f", d);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, d);
        if (strtod(buf, NULL) == d)
            return;
    }
}

/* Parse `text` as the value of key `k` and store it in *c; on failure *c is untouched,
 * the reason goes to why[0..cap) and FM_EARG or FM_ERANGE is returned. */
static int s_apply(fm_config_t *c, const fm_cfg_key_t *k, const char *text, char *why, size_t cap)
{
    switch (k->type) {
    case FM_CFG_INT: {
        long v;
        if (fm_parse_int(k->name, text, LONG_MIN, LONG_MAX, &v, NULL)) {
            snprintf(why, cap, "not an integer");
            return FM_EARG;
        }
        if ((double)v < k->lo || (double)v > k->hi) {
            snprintf(why, cap, "out of range [%ld, %ld]", (long)k->lo, (long)k->hi);
            return FM_ERANGE;
        }
        *(int *)s_field(c, k) = (int)v;
        return 0;
    }
    case FM_CFG_U64: {
        uint64_t v;
        if (fm_parse_u64(k->name, text, &v, NULL)) {
            snprintf(why, cap, "not a non-negative integer");
            return FM_EARG;
        }
        *(uint64_t *)s_field(c, k) = v;
        return 0;
    }
    case FM_CFG_FLOAT: {
        double v;
        if (fm_parse_float(k->name, text, -HUGE_VAL, HUGE_VAL, &v, NULL)) {
            snprintf(why, cap, "not a finite number");
            return FM_EARG;
        }
        if (v < k->lo || v > k->hi) {
            char lo[S_NUM_MAX], hi[S_NUM_MAX];
            s_fmt_double(lo, sizeof lo, k->lo);
            s_fmt_double(hi, sizeof hi, k->hi);
            snprintf(why, cap, "out of range [%s, %s]", lo, hi);
            return FM_ERANGE;
        }
        *(double *)s_field(c, k) = v;
        return 0;
    }
    case FM_CFG_BOOL: {
        bool v;
        if (s_parse_bool(text, &v)) {
            snprintf(why, cap, "not a boolean (true|false|yes|no|on|off|1|0)");
            return FM_EARG;
        }
        *(bool *)s_field(c, k) = v;
        return 0;
    }
    case FM_CFG_ENUM: {
        for (int v = (int)k->lo; v <= (int)k->hi; v++) {
            const char *name = s_enum_name(k, v);
            if (name && strcmp(name, text) == 0) {
                *(int *)s_field(c, k) = v;
                return 0;
            }
        }
        char list[160];
        s_enum_list(k, list, sizeof list);
        snprintf(why, cap, "not one of %s", list);
        return FM_EARG;
    }
    case FM_CFG_STRING: {
        size_t n = strlen(text);
        if (n > FM_CFG_STR_MAX - 1) {
            snprintf(why, cap, "longer than %d bytes", FM_CFG_STR_MAX - 1);
            return FM_EARG;
        }
        for (size_t i = 0; i < n; i++) {
            unsigned char ch = (unsigned char)text[i];
            if (ch < 0x20 || ch == 0x7F) {
                snprintf(why, cap, "contains a control character");
                return FM_EARG;
            }
            if (ch == ';' && i > 0 && isspace((unsigned char)text[i - 1])) {
                snprintf(why, cap, "contains ' ;', which starts a comment in the file");
                return FM_EARG;
            }
        }
        if (n && (isspace((unsigned char)text[0]) || isspace((unsigned char)text[n - 1]))) {
            snprintf(why, cap, "starts or ends with a space");
            return FM_EARG;
        }
        if (k->check && k->check(text, why, cap))
            return FM_EARG;
        char *dst = s_field(c, k);
        memset(dst, 0, FM_CFG_STR_MAX);
        memcpy(dst, text, n);
        return 0;
    }
    }
    FM_ASSERT(!"unknown key type");
    return FM_EARG;
}

/* Canonical text of the value of `k` in `c` (the file syntax). */
static void s_format(const fm_config_t *c, const fm_cfg_key_t *k, char *buf, size_t cap)
{
    const void *p = s_cfield(c, k);
    switch (k->type) {
    case FM_CFG_INT: snprintf(buf, cap, "%d", *(const int *)p); return;
    case FM_CFG_U64: snprintf(buf, cap, "%llu", (unsigned long long)*(const uint64_t *)p); return;
    case FM_CFG_FLOAT: s_fmt_double(buf, cap, *(const double *)p); return;
    case FM_CFG_BOOL: snprintf(buf, cap, "%s", *(const bool *)p ? "true" : "false"); return;
    case FM_CFG_ENUM: {
        const char *name = s_enum_name(k, *(const int *)p);
        if (name)
            snprintf(buf, cap, "%s", name);
        else /* not a valid name: load rejects it */
            snprintf(buf, cap, "%d", *(const int *)p);
        return;
    }
    case FM_CFG_STRING:
        snprintf(buf, cap, "%.*s", (int)strnlen(p, FM_CFG_STR_MAX), (const char *)p);
        return;
    }
}

/* ---- messages --------------------------------------------------------------------------- */

/* At most S_SHOWN bytes of `s`, control characters as '?', so messages stay one line. */
static const char *s_shown(char *dst, size_t cap, const char *s)
{
    size_t n = strlen(s), k = 0;
    for (size_t i = 0; i < n && i < S_SHOWN && k + 1 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        dst[k++] = (ch < 0x20 || ch == 0x7F) ? '?' : (char)ch;
    }
    if (n > S_SHOWN && k + 4 <= cap) {
        memcpy(dst + k, "...", 3);
        k += 3;
    }
    dst[k] = '\0';
    return dst;
}

/* "WHERE: [SECTION] KEY = VALUE: WHY" */
static int s_key_error(fm_errmsg_t *e, int code, const char *where, const char *section,
                       const char *name, const char *value, const char *why)
{
    char sec[S_SHOWN + 4], key[S_SHOWN + 4], val[S_SHOWN + 4];
    return fm_errmsg_set(e, code, "%s: [%s] %s = %s: %s", where,
                         s_shown(sec, sizeof sec, section), s_shown(key, sizeof key, name),
                         s_shown(val, sizeof val, value), why);
}

static size_t s_min3(size_t a, size_t b, size_t c)
{
    size_t m = a < b ? a : b;
    return m < c ? m : c;
}

/* Levenshtein distance, capped: strings longer than 63 bytes count as far. */
static size_t s_distance(const char *a, const char *b)
{
    size_t na = strlen(a), nb = strlen(b);
    if (na > 63 || nb > 63)
        return SIZE_MAX;
    size_t row[64];
    for (size_t j = 0; j <= nb; j++)
        row[j] = j;
    for (size_t i = 1; i <= na; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= nb; j++) {
            size_t up = row[j];
            row[j] = s_min3(row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1]));
            diag = up;
        }
    }
    return row[nb];
}

/* " (did you mean X?)" for the closest of `n` candidates within distance 2, else "". */
static void s_suggest(char *buf, size_t cap, const char *what, const char *const *cand, size_t n,
                      const char *pre, const char *post)
{
    size_t best = 3, bi = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        size_t d = s_distance(what, cand[i]);
        if (d < best) {
            best = d;
            bi = i;
        }
    }
    if (best <= 2)
        snprintf(buf, cap, " (did you mean %s%s%s?)", pre, cand[bi], post);
}

/* The reason for an unknown key `name` in known `section`. */
static void s_unknown_key_why(char *why, size_t cap, const char *section, const char *name)
{
    const char *cand[S_NKEYS];
    size_t n = 0;
    for (size_t i = 0; i < S_NKEYS; i++)
        if (strcmp(s_keys[i].section, section) == 0)
            cand[n++] = s_keys[i].name;
    char hint[96];
    s_suggest(hint, sizeof hint, name, cand, n, "", "");
    if (!hint[0]) {
        for (size_t i = 0; i < S_NKEYS; i++) {
            if (strcmp(s_keys[i].name, name) == 0) {
                snprintf(hint, sizeof hint, " (it belongs in [%s])", s_keys[i].section);
                break;
            }
        }
    }
    snprintf(why, cap, "unknown key%s", hint);
}

static void s_unknown_section_why(char *why, size_t cap, const char *section)
{
    char hint[96];
    s_suggest(hint, sizeof hint, section, s_sections, S_NSECTIONS, "[", "]");
    snprintf(why, cap, "unknown section%s", hint);
}

/* ---- cross-key checks ------------------------------------------------------------------- */

/* `lines` (may be NULL) gives the line each key was set on (0 = default), to point at. */
/* Updates per buffer: sync, clients_per_round; async, buffer_k or clients_per_round. */
double fm_cfg_sample_rate(const fm_config_t *c)
{
    const fm_cfg_federation_t *f = &c->federation;
    if (f->mode != FM_CFG_MODE_SYNC || f->sampling != FM_CFG_SAMPLING_POISSON ||
        f->num_clients <= 0)
        return 1.0;
    return (double)f->clients_per_round / (double)f->num_clients;
}

static int s_buffer_k(const fm_config_t *c)
{
    int k = c->aggregator.buffer_k;
    return c->federation.mode == FM_CFG_MODE_SYNC || k == 0 ? c->federation.clients_per_round : k;
}

void fm_cfg_secagg_params(const fm_config_t *c, uint32_t *k, uint32_t *t, double *clip)
{
    const fm_cfg_secagg_t *a = &c->secagg;
    uint32_t kk = (uint32_t)(a->cohort_size > 0 ? a->cohort_size : s_buffer_k(c));
    uint32_t half = kk / 2 + 1, twothirds = (2 * kk + 2) / 3;
    if (k)
        *k = kk;
    if (t)
        *t = a->threshold > 0 ? (uint32_t)a->threshold : (half > twothirds ? half : twothirds);
    if (clip)
        *clip = c->privacy.mode == FM_CFG_PRIVACY_CLIENT ? c->privacy.clip_norm : a->clip_norm;
}

/* [secagg]: the key at fault and why, or NULL. */
static const fm_cfg_key_t *s_check_secagg(const fm_config_t *c, char *why, size_t cap)
{
    if (!c->secagg.enabled)
        return NULL;
    uint32_t k = 0, t = 0;
    double clip = 0;
    fm_cfg_secagg_params(c, &k, &t, &clip);
    if (k < 2 || k > FM_SA_MAX_K) {
        snprintf(why, cap, "makes cohorts of %u members: K must be 2..%d", k, FM_SA_MAX_K);
        return fm_cfg_key_find("secagg", "cohort_size");
    }
    if (k > (uint32_t)c->federation.num_clients) {
        snprintf(why, cap, "K = %u: must be <= [federation] num_clients (%d)", k,
                 c->federation.num_clients);
        return fm_cfg_key_find("secagg", "cohort_size");
    }
    if (t < k / 2 + 1 || t > k) {
        snprintf(why, cap,
                 "must be %u..%u for K = %u (t > K/2: no two disjoint sets of t "
                 "members exist)",
                 k / 2 + 1, k, k);
        return fm_cfg_key_find("secagg", "threshold");
    }
    if (fm_sa_codec_scale(k, clip) < 8) {
        snprintf(why, cap, "K = %u x C = %g leaves fewer than 8 bits of fixed point below 2^31",
                 k, clip);
        return fm_cfg_key_find("secagg", "clip_norm");
    }
    if (!c->aggregator.acks) {
        snprintf(why, cap,
                 "must be true with [secagg] enabled: the cohort messages travel on "
                 "endpoints.acks");
        return fm_cfg_key_find("aggregator", "acks");
    }
    if (c->aggregator.weight_by_samples) {
        snprintf(why, cap,
                 "must be false with [secagg] enabled: every member weighs 1 "
                 "(sample-count weights are not built for secure aggregation)");
        return fm_cfg_key_find("aggregator", "weight_by_samples");
    }
    if (c->aggregator.aggregation != FM_ROBUST_MEAN) {
        snprintf(why, cap,
                 "must be mean with [secagg] enabled: the aggregator sees only a "
                 "cohort's sum, never one update");
        return fm_cfg_key_find("aggregator", "aggregation");
    }
    if (c->aggregator.sign_threshold > 0) {
        snprintf(why, cap,
                 "must be 0 with [secagg] enabled: the sign vote needs every update's "
                 "signs, the aggregator sees only a cohort's sum");
        return fm_cfg_key_find("aggregator", "sign_threshold");
    }
    if (c->aggregator.norm_bound > 0) {
        snprintf(why, cap,
                 "must be 0 with [secagg] enabled: members clip to [secagg] "
                 "clip_norm themselves, the aggregator cannot see one update's norm");
        return fm_cfg_key_find("aggregator", "norm_bound");
    }
    if (c->federation.mode == FM_CFG_MODE_SYNC &&
        c->federation.sampling == FM_CFG_SAMPLING_POISSON) {
        snprintf(why, cap,
                 "must be fixed with [secagg] enabled (a cohort is fixed when it "
                 "forms)");
        return fm_cfg_key_find("federation", "sampling");
    }
    if (c->privacy.adaptive_clip) {
        snprintf(why, cap, "cannot be used with [secagg] enabled (it needs each update's norm)");
        return fm_cfg_key_find("privacy", "adaptive_clip");
    }
    if (c->trainer.encoding != FM_DT_F32 || c->trainer.topk_fraction > 0 ||
        c->trainer.zstd_level > 0) {
        snprintf(why, cap,
                 "must be fp32 dense without zstd with [secagg] enabled: members send their "
                 "masked fixed-point words, not encoded tensors");
        return fm_cfg_key_find("trainer", c->trainer.encoding != FM_DT_F32 ? "encoding"
                                          : c->trainer.topk_fraction > 0   ? "topk_fraction"
                                                                           : "zstd_level");
    }
    return NULL;
}

/* [privacy] adaptive clipping: the key at fault and why, or NULL. */
static const fm_cfg_key_t *s_check_adaptive(const fm_config_t *c, char *why, size_t cap)
{
    const fm_cfg_privacy_t *p = &c->privacy;
    if (!p->adaptive_clip) /* the other keys are unused values then */
        return NULL;
    if (p->mode != FM_CFG_PRIVACY_CLIENT) {
        snprintf(why, cap, "is part of client-level DP: set [privacy] mode = client, or false");
        return fm_cfg_key_find("privacy", "adaptive_clip");
    }
    if (!(p->target_quantile > 0 && p->target_quantile < 1)) {
        snprintf(why, cap, "must be strictly between 0 and 1 (the fraction left unclipped)");
        return fm_cfg_key_find("privacy", "target_quantile");
    }
    if (p->clip_learning_rate <= 0) {
        snprintf(why, cap,
                 "must be > 0 with [privacy] adaptive_clip = true (0 never moves the clip)");
        return fm_cfg_key_find("privacy", "clip_learning_rate");
    }
    if (p->clip_count_stddev <= 0) {
        snprintf(why, cap,
                 "must be > 0 with [privacy] adaptive_clip = true (the count is noised)");
        return fm_cfg_key_find("privacy", "clip_count_stddev");
    }
    if (isnan(fm_dp_adapt_sigma(p->noise_multiplier, p->clip_count_stddev))) {
        char z[S_NUM_MAX];
        s_fmt_double(z, sizeof z, p->noise_multiplier / 2);
        snprintf(
            why, cap,
            "must be > [privacy] noise_multiplier / 2 = %s (adaptive clipping needs 2 sigma_b > "
            "sigma)",
            z);
        return fm_cfg_key_find("privacy", "clip_count_stddev");
    }
    return NULL;
}

/* [trainer] dp_*: the key at fault and why, or NULL. */
static const fm_cfg_key_t *s_check_dpsgd(const fm_config_t *c, char *why, size_t cap)
{
    const fm_cfg_trainer_t *t = &c->trainer;
    if (!t->dp_sgd && t->dp_target_epsilon > 0) {
        snprintf(why, cap, "is DP-SGD's budget: set [trainer] dp_sgd = true, or 0");
        return fm_cfg_key_find("trainer", "dp_target_epsilon");
    }
    if (t->dp_sgd && c->federation.local_steps > 0) {
        snprintf(why, cap,
                 "DP-SGD runs local_epochs epochs of Poisson-sampled steps, which its budget "
                 "accounts: set [federation] local_steps = 0 with it");
        return fm_cfg_key_find("federation", "local_steps");
    }
    if (t->dp_sgd && c->federation.local_fraction < 1.0) {
        snprintf(why, cap,
                 "DP-SGD runs local_epochs epochs of Poisson-sampled steps, which its budget "
                 "accounts: set [federation] local_fraction = 1 with it");
        return fm_cfg_key_find("federation", "local_fraction");
    }
    if (t->dp_sgd && t->dp_target_epsilon > 0 && t->dp_noise_multiplier == 0) {
        snprintf(why, cap,
                 "gives no privacy (epsilon is infinite), so no [trainer] dp_target_epsilon "
                 "can be met: set it > 0, or dp_target_epsilon = 0");
        return fm_cfg_key_find("trainer", "dp_noise_multiplier");
    }
    return NULL;
}

static int s_check(const fm_config_t *c, const char *path, const int *lines, fm_errmsg_t *e)
{
    const fm_cfg_federation_t *f = &c->federation;
    const fm_cfg_key_t *k = NULL;
    char why[160], where[PATH_MAX + 16], val[S_TEXT_MAX];
    why[0] = '\0';
    long lo = 0, hi = 0;
    if (f->clients_per_round > f->num_clients) {
        k = fm_cfg_key_find("federation", "clients_per_round");
        snprintf(why, sizeof why, "must be <= [federation] num_clients (%d)", f->num_clients);
    } else if (f->min_clients > f->num_clients) {
        k = fm_cfg_key_find("federation", "min_clients");
        snprintf(why, sizeof why, "must be <= [federation] num_clients (%d)", f->num_clients);
    } else if (f->mode == FM_CFG_MODE_SYNC &&
               f->aggregation_strategy == FM_CFG_STRATEGY_FEDBUFF) {
        k = fm_cfg_key_find("federation", "aggregation_strategy");
        snprintf(why, sizeof why,
                 "fedbuff is asynchronous: use fedavg or fedprox with "
                 "[federation] mode = sync");
    } else if (f->mode == FM_CFG_MODE_SYNC && f->min_clients > f->clients_per_round) {
        k = fm_cfg_key_find("federation", "min_clients");
        snprintf(why, sizeof why,
                 "must be <= [federation] clients_per_round (%d) in mode = "
                 "sync, or no round could aggregate",
                 f->clients_per_round);
    } else if (f->sampling == FM_CFG_SAMPLING_POISSON && f->mode != FM_CFG_MODE_SYNC) {
        k = fm_cfg_key_find("federation", "sampling");
        snprintf(why, sizeof why, "poisson samples sync rounds: set [federation] mode = sync");
    } else if (f->aggregation_strategy == FM_CFG_STRATEGY_FEDPROX && f->mu <= 0) {
        k = fm_cfg_key_find("federation", "mu");
        snprintf(why, sizeof why, "must be > 0 with [federation] aggregation_strategy = fedprox");
    } else if (f->aggregation_strategy != FM_CFG_STRATEGY_FEDPROX && f->mu > 0) {
        k = fm_cfg_key_find("federation", "mu");
        snprintf(why, sizeof why,
                 "is the FedProx coefficient: set [federation] "
                 "aggregation_strategy = fedprox, or mu = 0");
    } else if (s_parse_clients(c->trainer.clients, &lo, &hi) == 0 && hi >= f->num_clients) {
        k = fm_cfg_key_find("trainer", "clients");
        snprintf(why, sizeof why, "client %ld is not below [federation] num_clients (%d)", hi,
                 f->num_clients);
    } else if (c->aggregator.norm_bound_mode == FM_SCREEN_RELATIVE &&
               c->aggregator.norm_bound > 0 && c->aggregator.norm_bound < 1) {
        k = fm_cfg_key_find("aggregator", "norm_bound");
        snprintf(why, sizeof why, "a relative bound is a factor of the median norm: >= 1, or 0");
    } else if (c->aggregator.aggregation == FM_ROBUST_TRIMMED_MEAN &&
               fm_robust_trimmed(c->aggregator.trim_fraction, s_buffer_k(c)) == 0) {
        k = fm_cfg_key_find("aggregator", "trim_fraction");
        int bk = s_buffer_k(c);
        if (bk < 3)
            snprintf(why, sizeof why, "trims nothing: buffers of %d updates are too small", bk);
        else
            snprintf(why, sizeof why, "trims nothing from a buffer of %d updates: use >= %g", bk,
                     ceil(1000.0 / bk) / 1000.0);
    } else if (c->privacy.mode == FM_CFG_PRIVACY_CLIENT &&
               c->privacy.mechanism == FM_CFG_MECHANISM_LAPLACE) {
        k = fm_cfg_key_find("privacy", "mechanism");
        snprintf(why, sizeof why,
                 "laplace is not supported: the accountant covers the Gaussian mechanism; "
                 "use gaussian");
    } else if (c->privacy.mode == FM_CFG_PRIVACY_CLIENT && c->privacy.noise_multiplier <= 0) {
        k = fm_cfg_key_find("privacy", "noise_multiplier");
        snprintf(why, sizeof why, "must be > 0 with [privacy] mode = client (0 is no privacy)");
    } else if (c->privacy.mode == FM_CFG_PRIVACY_CLIENT && c->aggregator.weight_by_samples) {
        k = fm_cfg_key_find("aggregator", "weight_by_samples");
        snprintf(why, sizeof why,
                 "must be false with [privacy] mode = client: sample counts make one "
                 "client's weight unbounded");
    } else if (c->privacy.mode == FM_CFG_PRIVACY_CLIENT &&
               c->aggregator.aggregation != FM_ROBUST_MEAN) {
        k = fm_cfg_key_find("aggregator", "aggregation");
        snprintf(why, sizeof why,
                 "must be mean with [privacy] mode = client (the noise is calibrated to a "
                 "clipped sum)");
    } else if (c->privacy.mode == FM_CFG_PRIVACY_CLIENT && c->aggregator.sign_threshold > 0) {
        k = fm_cfg_key_find("aggregator", "sign_threshold");
        snprintf(why, sizeof why,
                 "must be 0 with [privacy] mode = client: one client's update can swing the "
                 "vote on every parameter, so the noise no longer bounds its influence");
    } else if (c->privacy.mode == FM_CFG_PRIVACY_CLIENT && c->aggregator.norm_bound > 0) {
        k = fm_cfg_key_find("aggregator", "norm_bound");
        snprintf(why, sizeof why,
                 "must be 0 with [privacy] mode = client: [privacy] clip_norm clips every "
                 "update");
    } else if (c->trainer.heartbeat_interval_s >= c->broker.heartbeat_timeout_s) {
        k = fm_cfg_key_find("trainer", "heartbeat_interval_s");
        char t[S_NUM_MAX];
        s_fmt_double(t, sizeof t, c->broker.heartbeat_timeout_s);
        snprintf(why, sizeof why, "must be < [broker] heartbeat_timeout_s (%s)", t);
    }
    if (!k)
        k = s_check_dpsgd(c, why, sizeof why);
    if (!k)
        k = s_check_adaptive(c, why, sizeof why);
    if (!k)
        k = s_check_secagg(c, why, sizeof why);
    if (!k)
        return 0;
    int line = lines ? lines[k - s_keys] : 0;
    if (line > 0)
        snprintf(where, sizeof where, "%s:%d", path, line);
    else
        snprintf(where, sizeof where, "%s", path);
    s_format(c, k, val, sizeof val);
    return s_key_error(e, FM_EARG, where, k->section, k->name, val, why);
}

int fm_cfg_check(const fm_config_t *c, fm_errmsg_t *e)
{
    FM_ASSERT(c);
    return s_check(c, "config", NULL, e);
}

/* ---- defaults, set ------------------------------------------------------------------------ */

void fm_cfg_defaults(fm_config_t *c)
{
    FM_ASSERT(c);
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < S_NKEYS; i++) {
        char why[160];
        int rc = s_apply(c, &s_keys[i], s_keys[i].def, why, sizeof why);
        FM_ASSERT(rc == 0); /* a bad default is a bug in the table (cfg_test checks them) */
    }
}

int fm_cfg_set(fm_config_t *c, const char *key, const char *value, fm_errmsg_t *e)
{
    FM_ASSERT(c);
    char buf[FM_CFG_LINE_MAX + 1], sec[S_SHOWN + 1], why[192], shown[S_SHOWN + 4];
    if (!key || strlen(key) >= sizeof buf)
        return fm_errmsg_set(e, FM_EARG, "override: expected section.key=value");
    memcpy(buf, key, strlen(key) + 1);
    char *name = buf;
    const char *val = value;
    if (!value) { /* "section.key=value" */
        char *eq = strchr(buf, '=');
        if (!eq)
            return fm_errmsg_set(e, FM_EARG, "override '%s': expected section.key=value",
                                 s_shown(shown, sizeof shown, key));
        *eq = '\0';
        char *v = eq + 1;
        while (isspace((unsigned char)*v))
            v++;
        for (size_t n = strlen(v); n > 0 && isspace((unsigned char)v[n - 1]); n--)
            v[n - 1] = '\0';
        val = v;
    }
    while (isspace((unsigned char)*name))
        name++;
    for (size_t n = strlen(name); n > 0 && isspace((unsigned char)name[n - 1]); n--)
        name[n - 1] = '\0';
    char *dot = strchr(name, '.');
    if (!dot || dot == name || (size_t)(dot - name) > S_SHOWN)
        return fm_errmsg_set(e, FM_EARG, "override '%s': expected section.key=value",
                             s_shown(shown, sizeof shown, name));
    memcpy(sec, name, (size_t)(dot - name));
    sec[dot - name] = '\0';
    name = dot + 1;
    if (!s_section_known(sec)) {
        s_unknown_section_why(why, sizeof why, sec);
        return fm_errmsg_set(e, FM_EARG, "override: [%s]: %s", s_shown(shown, sizeof shown, sec),
                             why);
    }
    const fm_cfg_key_t *k = fm_cfg_key_find(sec, name);
    if (!k) {
        s_unknown_key_why(why, sizeof why, sec, name);
        return s_key_error(e, FM_EARG, "override", sec, name, val, why);
    }
    int rc = s_apply(c, k, val, why, sizeof why);
    if (rc)
        return s_key_error(e, rc, "override", sec, name, val, why);
    return 0;
}

/* ---- the file ------------------------------------------------------------------------------ */

typedef struct {
    const char *path;          /* or the name standing for it */
    int line;                  /* the line being parsed, from 1 */
    char section[S_SHOWN + 1]; /* the current section, "" before the first */
    fm_config_t cfg;           /* being built; handed over only when all of it is valid */
    int set_line[S_NKEYS];     /* line each key was set on, 0 = not set */
} s_parse_t;

/* 0 if s[0..n) is valid UTF-8 (no overlong forms, surrogates or code points past
 * U+10FFFF), else 1 + the offset of the first byte that is not. */
static size_t s_utf8_bad(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t more;
        uint32_t cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            more = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            more = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            more = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return i + 1;
        }
        for (size_t j = 1; j <= more; j++) {
            if (i + j >= n || (s[i + j] & 0xC0) != 0x80)
                return i + 1;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return i + 1;
        i += more + 1;
    }
    return 0;
}

static int s_syntax_error(const s_parse_t *p, fm_errmsg_t *e)
{
    return fm_errmsg_set(e, FM_EFORMAT,
                         "%s:%d: syntax error (expected [section], key = value "
                         "or a # comment)",
                         p->path, p->line);
}

/* "[section]", optionally followed by a comment; t has no trailing white space. */
static int s_section_line(s_parse_t *p, const char *t, fm_errmsg_t *e)
{
    const char *close = strchr(t, ']');
    if (!close)
        return s_syntax_error(p, e);
    const char *rest = close + 1;
    while (*rest == ' ' || *rest == '\t')
        rest++;
    if (*rest && *rest != '#' && *rest != ';')
        return s_syntax_error(p, e);
    size_t n = (size_t)(close - t - 1);
    char sec[S_SHOWN + 1], why[160], shown[S_SHOWN + 4];
    memcpy(sec, t + 1, n < S_SHOWN ? n : S_SHOWN);
    sec[n < S_SHOWN ? n : S_SHOWN] = '\0';
    if (n > S_SHOWN || !s_section_known(sec)) {
        s_unknown_section_why(why, sizeof why, sec);
        return fm_errmsg_set(e, FM_EARG, "%s:%d: [%s]: %s", p->path, p->line,
                             s_shown(shown, sizeof shown, sec), why);
    }
    memcpy(p->section, sec, n + 1);
    return 0;
}

/* "key = value"; line has no trailing white space and is modified in place. */
static int s_key_line(s_parse_t *p, char *line, fm_errmsg_t *e)
{
    char *eq = strchr(line, '=');
    if (!eq)
        return s_syntax_error(p, e);
    char *name = line, *value = eq + 1;
    for (char *q = eq; q > name && (q[-1] == ' ' || q[-1] == '\t'); q--)
        q[-1] = '\0';
    *eq = '\0';
    while (*value == ' ' || *value == '\t')
        value++;
    for (char *q = value + 1; *value && *q; q++) { /* " ;" starts an inline comment */
        if (*q == ';' && (q[-1] == ' ' || q[-1] == '\t')) {
            *q = '\0';
            break;
        }
    }
    for (size_t n = strlen(value); n > 0 && isspace((unsigned char)value[n - 1]); n--)
        value[n - 1] = '\0';

    char where[PATH_MAX + 16], why[192];
    snprintf(where, sizeof where, "%s:%d", p->path, p->line);
    if (!p->section[0]) {
        char key[S_SHOWN + 4], val[S_SHOWN + 4];
        return fm_errmsg_set(e, FM_EARG, "%s: %s = %s: key outside a section", where,
                             s_shown(key, sizeof key, name), s_shown(val, sizeof val, value));
    }
    const fm_cfg_key_t *k = fm_cfg_key_find(p->section, name);
    int rc = 0;
    if (!k) {
        s_unknown_key_why(why, sizeof why, p->section, name);
        rc = FM_EARG;
    } else if (p->set_line[k - s_keys]) {
        snprintf(why, sizeof why, "duplicate key (first set on line %d)",
                 p->set_line[k - s_keys]);
        rc = FM_EARG;
    } else {
        rc = s_apply(&p->cfg, k, value, why, sizeof why);
    }
    if (rc)
        return s_key_error(e, rc, where, p->section, name, value, why);
    p->set_line[k - s_keys] = p->line;
    return 0;
}

/* One line s[0..n), without its line end. */
static int s_line(s_parse_t *p, const char *s, size_t n, fm_errmsg_t *e)
{
    const char *nul = memchr(s, '\0', n);
    if (nul)
        return fm_errmsg_set(e, FM_EFORMAT, "%s:%d: NUL byte at column %zu", p->path, p->line,
                             (size_t)(nul - s) + 1);
    if (n > FM_CFG_LINE_MAX)
        return fm_errmsg_set(e, FM_EFORMAT, "%s:%d: line longer than %d bytes", p->path, p->line,
                             FM_CFG_LINE_MAX);
    size_t bad = s_utf8_bad((const unsigned char *)s, n);
    if (bad)
        return fm_errmsg_set(e, FM_EFORMAT, "%s:%d: not UTF-8 text (byte 0x%02X at column %zu)",
                             p->path, p->line, (unsigned char)s[bad - 1], bad);
    char line[FM_CFG_LINE_MAX + 1];
    memcpy(line, s, n);
    line[n] = '\0';
    while (n > 0 && isspace((unsigned char)line[n - 1]))
        line[--n] = '\0';
    const char *t = line;
    while (*t == ' ' || *t == '\t')
        t++;
    if (!*t || *t == '#' || *t == ';')
        return 0;
    if (t != line)
        return fm_errmsg_set(e, FM_EFORMAT,
                             "%s:%d: indented line (continuation lines are not "
                             "supported)",
                             p->path, p->line);
    return *t == '[' ? s_section_line(p, t, e) : s_key_line(p, line, e);
}

/* Parse text[0..len) into p->cfg; stops at the first error. */
static int s_parse(s_parse_t *p, const char *text, size_t len, fm_errmsg_t *e)
{
    if (len > FM_CFG_FILE_MAX)
        return fm_errmsg_set(e, FM_EFORMAT, "%s: larger than %d bytes", p->path, FM_CFG_FILE_MAX);
    size_t pos = len >= 3 && memcmp(text, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0; /* a UTF-8 BOM */
    for (p->line = 1; pos < len; p->line++) {
        const char *s = text + pos;
        const char *nl = memchr(s, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - s) : len - pos;
        pos += n + (nl ? 1 : 0);
        if (n > 0 && s[n - 1] == '\r') /* CRLF */
            n--;
        int rc = s_line(p, s, n, e);
        if (rc)
            return rc;
    }
    return 0;
}

int fm_cfg_parse(fm_config_t *c, const char *name, const char *text, size_t len, fm_errmsg_t *e)
{
    FM_ASSERT(c && name && (text || len == 0));
    s_parse_t *p = calloc(1, sizeof *p);
    if (!p)
        return fm_errmsg_set(e, -ENOMEM, "%s: out of memory", name);
    p->path = name;
    fm_cfg_defaults(&p->cfg);
    int rc = s_parse(p, text, len, e);
    if (rc == 0)
        rc = s_check(&p->cfg, name, p->set_line, e);
    if (rc == 0)
        *c = p->cfg;
    free(p);
    return rc;
}

/* The whole file into *buf (caller frees), at most FM_CFG_FILE_MAX + 1 bytes so that an
 * over-long file is seen as one. */
static int s_read_file(const char *path, char **buf, size_t *len, fm_errmsg_t *e)
{
    *buf = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int err = errno;
        return fm_errmsg_set(e, -err, "%s: cannot open: %s", path, strerror(err));
    }
    int rc = 0;
    size_t cap = 4096, n = 0;
    char *b = NULL;
    errno = 0;
    for (;;) {
        char *nb = realloc(b, cap);
        if (!nb) {
            rc = fm_errmsg_set(e, -ENOMEM, "%s: out of memory", path);
            goto cleanup;
        }
        b = nb;
        n += fread(b + n, 1, cap - n, f);
        if (n < cap || n > FM_CFG_FILE_MAX)
            break;
        cap *= 2;
    }
    if (ferror(f)) {
        int err = errno ? errno : EIO;
        rc = fm_errmsg_set(e, -err, "%s: cannot read: %s", path, strerror(err));
        goto cleanup;
    }
    *buf = b;
    *len = n;
    b = NULL;
cleanup:
    free(b);
    fclose(f);
    return rc;
}

int fm_cfg_load(fm_config_t *c, const char *path, fm_errmsg_t *e)
{
    FM_ASSERT(c && path);
    char *text = NULL;
    size_t len = 0;
    int rc = s_read_file(path, &text, &len, e);
    if (rc == 0)
        rc = fm_cfg_parse(c, path, text, len, e);
    free(text);
    return rc;
}

/* ---- compare, reload, get ------------------------------------------------------------------ */

static bool s_same(const fm_config_t *a, const fm_config_t *b, const fm_cfg_key_t *k)
{
    char va[S_TEXT_MAX], vb[S_TEXT_MAX];
    if (k->type == FM_CFG_FLOAT) /* exact, and -0 != 0 like the text form */
        return memcmp(s_cfield(a, k), s_cfield(b, k), sizeof(double)) == 0;
    s_format(a, k, va, sizeof va);
    s_format(b, k, vb, sizeof vb);
    return strcmp(va, vb) == 0;
}

int fm_cfg_equal(const fm_config_t *a, const fm_config_t *b)
{
    FM_ASSERT(a && b);
    for (size_t i = 0; i < S_NKEYS; i++)
        if (!s_same(a, b, &s_keys[i]))
            return 0;
    return 1;
}

int fm_cfg_check_reload(const fm_config_t *old, const fm_config_t *fresh, fm_errmsg_t *e)
{
    FM_ASSERT(old && fresh);
    for (size_t i = 0; i < S_NKEYS; i++) {
        const fm_cfg_key_t *k = &s_keys[i];
        if (k->reloadable || s_same(old, fresh, k))
            continue;
        char va[S_TEXT_MAX], vb[S_TEXT_MAX], sa[S_SHOWN + 4], sb[S_SHOWN + 4];
        s_format(old, k, va, sizeof va);
        s_format(fresh, k, vb, sizeof vb);
        return fm_errmsg_set(e, FM_EARG,
                             "reload: [%s] %s changed from %s to %s, which needs "
                             "a restart",
                             k->section, k->name, s_shown(sa, sizeof sa, va),
                             s_shown(sb, sizeof sb, vb));
    }
    return 0;
}

int fm_cfg_get(const fm_config_t *c, const char *key, char *buf, size_t cap, fm_errmsg_t *e)
{
    FM_ASSERT(c && buf);
    const fm_cfg_key_t *k = s_find_dotted(key);
    if (!k)
        return fm_errmsg_set(e, FM_EARG, "config: unknown key '%s'", key ? key : "");
    char v[S_TEXT_MAX];
    s_format(c, k, v, sizeof v);
    if (strlen(v) >= cap)
        return fm_errmsg_set(e, -ENOBUFS, "config: %s: value longer than the buffer", key);
    memcpy(buf, v, strlen(v) + 1);
    return 0;
}

const char *fm_cfg_enum_name(const char *key, int value)
{
    const fm_cfg_key_t *k = s_find_dotted(key);
    return k && k->type == FM_CFG_ENUM ? s_enum_name(k, value) : NULL;
}

/* ---- digest -------------------------------------------------------------------------------- */

#define S_FNV_OFFSET 0xcbf29ce484222325ULL
#define S_FNV_PRIME 0x100000001b3ULL

static uint64_t s_fmix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static void s_fnv(uint64_t h[4], const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (int l = 0; l < 4; l++) {
            h[l] ^= (unsigned char)s[i];
            h[l] *= S_FNV_PRIME;
        }
    }
}

void fm_cfg_digest(const fm_config_t *c, uint8_t out[FM_CFG_DIGEST_BYTES])
{
    FM_ASSERT(c && out);
    static const uint64_t lane[4] = {0, 0x9e3779b97f4a7c15ULL, 0xbf58476d1ce4e5b9ULL,
                                     0x94d049bb133111ebULL};
    uint64_t h[4];
    uint64_t total = 0;
    for (int l = 0; l < 4; l++)
        h[l] = S_FNV_OFFSET ^ lane[l];
    for (size_t i = 0; i < S_NKEYS; i++) {
        const fm_cfg_key_t *k = &s_keys[i];
        char v[S_TEXT_MAX], line[S_TEXT_MAX + 96];
        s_format(c, k, v, sizeof v);
        int n = snprintf(line, sizeof line, "%s.%s=%s\n", k->section, k->name, v);
        FM_ASSERT(n > 0 && (size_t)n < sizeof line);
        s_fnv(h, line, (size_t)n);
        total += (uint64_t)n;
    }
    for (int l = 0; l < 4; l++) {
        uint64_t x = s_fmix64(h[l] ^ total);
        for (int b = 0; b < 8; b++)
            out[8 * l + b] = (uint8_t)(x >> (8 * b));
    }
}

/* ---- dump ---------------------------------------------------------------------------------- */

/* "[1, 100000]", "one of a|b", "" ... for the comment above a key. */
static void s_constraint(const fm_cfg_key_t *k, char *buf, size_t cap)
{
    switch (k->type) {
    case FM_CFG_INT:
        snprintf(buf, cap, "integer in [%ld, %ld]", (long)k->lo, (long)k->hi);
        return;
    case FM_CFG_U64: snprintf(buf, cap, "integer in [0, 2^64-1]"); return;
    case FM_CFG_FLOAT: {
        char lo[S_NUM_MAX], hi[S_NUM_MAX];
        s_fmt_double(lo, sizeof lo, k->lo);
        s_fmt_double(hi, sizeof hi, k->hi);
        snprintf(buf, cap, "number in [%s, %s]", lo, hi);
        return;
    }
    case FM_CFG_BOOL: snprintf(buf, cap, "true or false"); return;
    case FM_CFG_ENUM: {
        char list[160];
        s_enum_list(k, list, sizeof list);
        snprintf(buf, cap, "one of %s", list);
        return;
    }
    case FM_CFG_STRING: snprintf(buf, cap, "string"); return;
    }
}

int fm_cfg_dump(const fm_config_t *c, FILE *f)
{
    FM_ASSERT(c && f);
    const char *section = NULL;
    fprintf(f, "# fedmq configuration: every key, its meaning, allowed values and default.\n"
               "# \"reloadable\" keys may change in a running daemon (SIGHUP); the others need "
               "a restart.\n");
    for (size_t i = 0; i < S_NKEYS; i++) {
        const fm_cfg_key_t *k = &s_keys[i];
        char v[S_TEXT_MAX], cons[192];
        if (!section || strcmp(section, k->section) != 0) {
            section = k->section;
            fprintf(f, "\n[%s]\n", section);
        }
        s_format(c, k, v, sizeof v);
        s_constraint(k, cons, sizeof cons);
        fprintf(f, "\n# %s\n# %s, default %s%s%s%s\n%s =%s%s\n", k->help, cons,
                k->def[0] ? "" : "\"", k->def, k->def[0] ? "" : "\"",
                k->reloadable ? ", reloadable" : "", k->name, v[0] ? " " : "", v);
    }
    if (fflush(f) != 0 || ferror(f))
        return -(errno ? errno : EIO);
    return 0;
}

/* ---- text, diff ---------------------------------------------------------------------------- */

int fm_cfg_text(const fm_config_t *c, char **out, size_t *len)
{
    FM_ASSERT(c && out);
    char *buf = NULL;
    size_t n = 0;
    *out = NULL;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        return -ENOMEM;
    int rc = fm_cfg_dump(c, f);
    if (fclose(f) != 0 && rc == 0)
        rc = -ENOMEM;
    if (rc) {
        free(buf);
        return -ENOMEM; /* a memory stream fails only for want of memory */
    }
    *out = buf;
    if (len)
        *len = n;
    return 0;
}

int fm_cfg_diff(const fm_config_t *old, const fm_config_t *fresh, char **out)
{
    FM_ASSERT(old && fresh && out);
    char *buf = NULL;
    size_t n = 0;
    int count = 0;
    *out = NULL;
    FILE *f = open_memstream(&buf, &n);
    if (!f)
        return -ENOMEM;
    for (size_t i = 0; i < S_NKEYS; i++) {
        const fm_cfg_key_t *k = &s_keys[i];
        if (s_same(old, fresh, k))
            continue;
        char va[S_TEXT_MAX], vb[S_TEXT_MAX];
        s_format(old, k, va, sizeof va);
        s_format(fresh, k, vb, sizeof vb);
        fprintf(f, "%s[%s] %s: %s -> %s", count ? "; " : "", k->section, k->name, va, vb);
        count++;
    }
    if (fclose(f) != 0 || !buf) {
        free(buf);
        return -ENOMEM;
    }
    *out = buf;
    return count;
}

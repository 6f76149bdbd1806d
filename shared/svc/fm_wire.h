/* fm_wire: the fedmq wire protocol, versions 1 and 2 (docs/PROTOCOL.md is the specification).
 *
 * Pure encode/decode, no sockets. Every message is ONE ZeroMQ frame holding ONE msgpack
 * map with string keys; the mandatory keys are "v" (protocol version) and "t" (type string,
 * e.g. "UPDATE"). Tensors travel under "tensors" as an array of maps {"name": str, "dtype":
 * "F32", "shape": [uint..], "data": bin (little-endian float32)}, with the model's PyTorch
 * names and the bytes of the flat parameter layout, so encoding and decoding are one memcpy
 * per tensor. Version 2 is version 1 plus tensor encodings (fm_codec: "dtype" F16, BF16 or
 * I8 with "scale", sparse "idx", "comp": "zstd"); a frame carries "v": 2 exactly when one of
 * its tensors is encoded, so raw float32 traffic is version 1, byte for byte as before, and
 * decoders take both (a version-1 frame with an encoded tensor is refused).
 *
 * Encoding uses msgpack-c's packer into an fm_wire_buf_t. Decoding never uses msgpack-c:
 * a bounded reader checks every length against the bytes remaining before using it, caps
 * counts (FM_WIRE_MAX_*), ignores unknown keys (skipped up to FM_WIRE_MAX_DEPTH levels of
 * nesting) and rejects trailing bytes. A decoded message is zero-copy: tensor data pointers
 * point into the caller's frame (unaligned: consumers memcpy) and live as long as it;
 * strings are copied into the fixed-size arrays of the decoded structs.
 *
 * Decode errors, in the order they are checked (the daemons count rejections by code):
 *   FM_ETRUNC    a length or count runs past the end of the frame (also: empty frame)
 *   FM_EFORMAT   not one msgpack map; invalid msgpack byte; trailing bytes; a non-string key;
 *                a duplicate key; missing "v"/"t" or any mandatory key; a value of the wrong
 *                msgpack type; an unknown type string or one this decoder does not take;
 *                an empty string where forbidden, or one with a byte outside its text class
 *                (NUL, control bytes, space, non-ASCII: see "Text" below); a fixed-size
 *                field of the wrong size
 *   FM_ERANGE    a count or length over its cap (tensors, dims, strings, nesting depth) or an
 *                integer outside its field's range (negative, or > UINT32_MAX for u32 fields)
 *   FM_EVERSION  "v" is an integer other than FM_WIRE_VERSION
 * The framing (FM_ETRUNC/FM_EFORMAT/FM_ERANGE of the msgpack structure) is checked over
 * the whole frame first, then "v", then "t", then the fields. Every error writes a one-line
 * message to `e` (may be NULL) naming the message type and the field, e.g.
 * "UPDATE: tensors[2].shape: 5 dims, at most 4 allowed". */
#ifndef FM_WIRE_H
#define FM_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "fm_codec.h"
#include "fm_err.h"
#include "fm_model.h"
#include "fm_sa_cohort.h"
#include "fm_sa_msg.h"

#define FM_WIRE_VERSION 1             /* value of "v" (raw float32 tensors) */
#define FM_WIRE_VERSION_MAX 2         /* "v" of a frame with an encoded tensor (fm_codec) */
#define FM_WIRE_MAX_TENSORS 64        /* entries of "tensors" */
#define FM_WIRE_MAX_DIMS 4            /* entries of a tensor's "shape" (== FM_MAX_DIMS) */
#define FM_WIRE_STR_MAX 255           /* bytes of a string field (names, ids), NUL excluded */
#define FM_WIRE_DTYPE_MAX 15          /* bytes of a "dtype" string */
#define FM_WIRE_MAX_DEPTH 16          /* nesting levels of a message, the top map being level 1 */
#define FM_WIRE_ID_LEN 16             /* bytes of an update id ("id", bin) */
#define FM_WIRE_MAX_COHORT (1u << 20) /* client ids in a MODEL's "cohort" */
#define FM_WIRE_MAX_ACK_IDS 65536     /* update ids in one ACK's "ids" */
#define FM_WIRE_STATUS_MAX 15         /* bytes of an ACK's "status" */

/* Text. Every string field is ASCII of one of two classes, checked by every decoder
 * (FM_EFORMAT: "byte 0x0a at offset 3 is not allowed in an id ...") and every encoder
 * (FM_EARG):
 *   FM_WIRE_TEXT_ID    ids: "trainer" (UPDATE, HELLO/HEARTBEAT/BYE) and "from"
 *                      (SNAPSHOT_REQ): letters, digits and . _ - : @ /
 *   FM_WIRE_TEXT_NAME  every other string ("model", tensor "name" and "dtype", ACK
 *                      "status"): printable ASCII 0x21-0x7e, no space
 * Neither class holds a control byte (0x00-0x1f, 0x7f), a space or a byte >= 0x80, so a
 * decoded string can go into a log line or a file as is: it cannot end the line, start a
 * forged one or carry a terminal escape sequence. Lengths: 1..FM_WIRE_STR_MAX bytes
 * (FM_WIRE_DTYPE_MAX, FM_WIRE_STATUS_MAX for those), "model" of UPDATE may be empty. */
typedef enum { FM_WIRE_TEXT_ID, FM_WIRE_TEXT_NAME } fm_wire_text_t;

/* Offset of the first byte of s[0..n) that text class `cls` does not allow, or n if there
 * is none (an empty string is allowed here: emptiness is the field's rule). */
size_t fm_wire_text_check(fm_wire_text_t cls, const char *s, size_t n);

typedef enum {
    FM_WIRE_NONE = 0, /* never on the wire */
    FM_WIRE_MODEL,
    FM_WIRE_UPDATE,
    FM_WIRE_HELLO,
    FM_WIRE_HEARTBEAT,
    FM_WIRE_BYE,
    FM_WIRE_SNAPSHOT_REQ,
    FM_WIRE_METRICS,
    FM_WIRE_ACK,
    FM_WIRE_DECLINE,
    /* secure aggregation, one cohort (docs/PROTOCOL.md §3.8, docs/SECAGG.md): M0..M8 */
    FM_WIRE_SA_INVITE,        /* "COHORT_INVITE"  M0 aggregator -> member */
    FM_WIRE_SA_KEYS,          /* "ADVERTISE_KEYS" M1 member -> aggregator */
    FM_WIRE_SA_KEY_LIST,      /* "KEY_LIST"       M2 aggregator -> member */
    FM_WIRE_SA_SHARES,        /* "SHARES"         M3 member -> aggregator */
    FM_WIRE_SA_SHARES_FWD,    /* "SHARES_FWD"     M4 aggregator -> member */
    FM_WIRE_SA_MASKED,        /* "MASKED_UPDATE"  M5 member -> aggregator */
    FM_WIRE_SA_UNMASK_REQ,    /* "UNMASK_REQ"     M6 aggregator -> member */
    FM_WIRE_SA_UNMASK_SHARES, /* "UNMASK_SHARES"  M7 member -> aggregator */
    FM_WIRE_SA_DONE,          /* "COHORT_DONE"    M8 aggregator -> member */
    FM_WIRE_SA_ABORT,         /* "COHORT_ABORT"   M8 aggregator -> member */
    FM_WIRE_NTYPES            /* at most 32: decoders keep a 32-bit mask of types */
} fm_wire_type_t;

/* ---- message structs ----------------------------------------------------------------------
 * One struct per message; the wire key of each field is in quotes. Encoders read them,
 * decoders fill them (every field; optional keys that are absent read as 0). */

/* The cohort of a synchronous round: the client ids selected to train on this MODEL, as
 * little-endian uint32 values in one bin ("cohort"). `ids` is unaligned: read entries with
 * fm_wire_cohort_at. Decoded: `ids` points into the frame. */
typedef struct {
    int present;     /* 1: the MODEL opens a sync round (keys below sent) */
    const void *ids; /* count * 4 bytes */
    uint32_t count;  /* 0..FM_WIRE_MAX_COHORT (0: nobody trains) */
} fm_wire_cohort_t;

/* MODEL: a global model (broker PUB, snapshot reply). Tensors: the parameters.
 * Sync rounds add "round", "cohort" and "mu" (all three or none; absent = async: every
 * client may train on it). */
typedef struct {
    uint64_t version;                /* "mv": model version, 0 = the initial model */
    char model[FM_WIRE_STR_MAX + 1]; /* "model": model name ("cnn"); decoded only: the
                                        encoder writes fm_model_name(layout) */
    double created;                  /* "ts": creation time, Unix seconds */
    uint64_t round;                  /* "round": sync round number (>= 1), 0 = async */
    fm_wire_cohort_t cohort;         /* "cohort": bin, see fm_wire_cohort_t */
    double mu;                       /* "mu": FedProx coefficient for this round, 0 = off */
    /* "q" (optional, sync rounds with [federation] sampling = poisson): every cohort member
     * trains with probability q by its own secret coin and sends DECLINE otherwise; 0 when
     * absent: every member trains */
    double sample_rate;
    /* the aggregator's progress when it made this version (optional: both sent when either
     * is nonzero, 0 when absent; the evaluator repeats them in METRICS for `fedmq watch`) */
    uint64_t applied;     /* "applied": updates applied into versions so far */
    double updates_per_s; /* "ups": updates accepted per second (stats.json updates_per_s) */
    /* "boot" (optional, sent when nonzero): the aggregator acknowledges updates (ACK) and
     * this is its incarnation, random per start: a new value means it restarted, so
     * unacknowledged updates should be resent at once */
    uint64_t boot;
    /* client-level differential privacy (optional, both sent when delta > 0: [privacy] mode
     * = client): the epsilon spent to make this version, at delta (the evaluator repeats
     * them in METRICS) */
    double epsilon; /* "eps" */
    double delta;   /* "delta" */
    /* secure aggregation (optional, the three sent when either count is nonzero: [secagg]
     * enabled and a cohort has ended): cohorts completed (their sum applied) and aborted,
     * members dropped in all phases, so far (the evaluator repeats them in METRICS) */
    uint64_t sa_completed; /* "sadone" */
    uint64_t sa_aborted;   /* "saabort" */
    uint64_t sa_dropped;   /* "sadrop" */
} fm_wire_model_t;

/* UPDATE: one client's local training result. Tensors: delta = w_local - w_base. */
typedef struct {
    uint8_t id[FM_WIRE_ID_LEN];        /* "id": random, unique per update (fm_wire_id_new) */
    char trainer[FM_WIRE_STR_MAX + 1]; /* "trainer": trainer id, non-empty */
    uint32_t client;                   /* "client": client (data partition) id */
    uint64_t base;                     /* "base": version of the MODEL it started from */
    uint64_t num_samples;              /* "n": training samples seen (the FedAvg weight) */
    uint64_t local_steps;              /* "steps": optimiser steps taken */
    double train_loss;                 /* "loss": mean training loss */
    double train_seconds;              /* "secs": wall time of the local training */
    char model[FM_WIRE_STR_MAX + 1];   /* "model" (optional): model name the delta is for;
                                          "" when absent. The encoder writes
                                          fm_model_name(layout) and ignores this field */
    uint64_t round;                    /* "round" (optional): the sync round answered, 0 (not
                                          sent) for async updates */
    /* timing (optional, informational: the time budget per version, never the aggregation;
     * both sent when sent_at > 0, 0 = absent) */
    double sent_at;     /* "ts": Unix time the update was encoded for sending */
    double idle_before; /* "wait": seconds the worker waited (no model or no job) between its
                           previous local training and this one */
} fm_wire_update_t;

/* HELLO / HEARTBEAT / BYE: trainer membership. */
typedef struct {
    char trainer[FM_WIRE_STR_MAX + 1]; /* "trainer": trainer id, non-empty */
    uint32_t pid;                      /* "pid": process id (with trainer: one incarnation) */
    uint32_t client_first;             /* "cfirst": first client id served */
    uint32_t client_count;             /* "ccount": clients served: [cfirst, cfirst+ccount) */
    uint32_t workers;                  /* "workers": worker slots (parallel local trainings) */
    uint64_t seq;                      /* "seq": per incarnation, +1 per membership message */
    uint64_t updates_sent;             /* "sent": UPDATEs sent so far (HEARTBEAT only) */
    uint32_t busy;                     /* "busy": workers training now (HEARTBEAT only) */
} fm_wire_member_t;

/* SNAPSHOT_REQ: a late joiner asks the broker for the current model (reply: MODEL). */
typedef struct {
    char from[FM_WIRE_STR_MAX + 1]; /* "from": requester id, non-empty */
    uint64_t have;                  /* "have": version the requester holds (optional, 0) */
} fm_wire_snapshot_req_t;

/* METRICS: one evaluation of one model version (evaluator PUB). */
typedef struct {
    uint64_t version;                /* "mv": model version evaluated */
    char model[FM_WIRE_STR_MAX + 1]; /* "model": model name, non-empty */
    double accuracy;                 /* "acc": fraction correct, [0, 1] */
    double loss;                     /* "loss": mean test loss (NLL) */
    double class_acc[FM_NCLASSES];   /* "cacc": per-class accuracy, exactly 10 numbers */
    uint64_t num_samples;            /* "n": test samples evaluated */
    double eval_seconds;             /* "secs": wall time of the evaluation */
    double timestamp;                /* "ts": end of the evaluation, Unix seconds */
    /* population-level validation (optional, sent when pop_clients > 0): the accuracy of
     * the model on each client's held-out slice, summarised over clients */
    uint32_t pop_clients; /* "pc": clients scored */
    double pop_mean;      /* "pmean": mean of the client accuracies */
    double pop_min;       /* "pmin": worst client's accuracy */
    uint32_t pop_worst;   /* "pworst": the worst client's id */
    double pop_p10;       /* "pp10": 10th percentile of the client accuracies */
    double pop_threshold; /* "pthr": the threshold of pop_below */
    double pop_below;     /* "pbelow": fraction of clients below pop_threshold */
    double pop_seconds;   /* "psecs" (optional, sent when > 0): wall time of the population
                             scoring, on top of "secs" */
    /* the MODEL's "applied" and "ups" (optional: both sent when either is nonzero) */
    uint64_t applied;     /* "applied" */
    double updates_per_s; /* "ups" */
    /* the MODEL's "eps" and "delta" (optional: both sent when delta > 0) */
    double epsilon; /* "eps" */
    double delta;   /* "delta" */
    /* the MODEL's "sadone", "saabort", "sadrop" (optional: the three sent when either cohort
     * count is nonzero) */
    uint64_t sa_completed, sa_aborted, sa_dropped;
} fm_wire_metrics_t;

/* ACK: the aggregator's answer about UPDATEs, by id (its PUB on endpoints.acks). `ids` is
 * count * FM_WIRE_ID_LEN bytes, unaligned; decoded, it points into the frame. */
typedef struct {
    uint64_t boot;    /* "boot": the aggregator's incarnation (as in its MODELs), non-zero */
    uint64_t version; /* "mv": applied: the version whose checkpoint holds them; otherwise the
                         aggregator's version when it judged them */
    char status[FM_WIRE_STATUS_MAX + 1]; /* "status": "applied", "lost", "dropped" or a
                                            rejection reason ("stale", "late", ...) */
    const void *ids;                     /* "ids": bin of count * FM_WIRE_ID_LEN bytes */
    uint32_t count;                      /* 1..FM_WIRE_MAX_ACK_IDS */
} fm_wire_ack_t;

/* DECLINE: clients of a Poisson-sampled sync round's cohort (MODEL "q") whose coins said
 * no: they will not train this round, so the aggregator need not wait for them. One
 * message per trainer and round; "clients" is encoded like a MODEL's "cohort" (a bin of
 * little-endian uint32, read with fm_wire_cohort_at; decoded, it points into the frame). */
typedef struct {
    char trainer[FM_WIRE_STR_MAX + 1]; /* "trainer": trainer id, non-empty */
    fm_wire_cohort_t clients;          /* "clients": the clients that decline, >= 1 */
    uint64_t base;                     /* "base": the MODEL version of the round */
    uint64_t round;                    /* "round": the round declined (>= 1) */
} fm_wire_decline_t;

/* ---- secure aggregation (docs/PROTOCOL.md §3.8) ------------------------------------------
 * Every message carries "cohort" (the cohort id, u64) and "i" (a member index, 1..
 * FM_SA_MAX_K: the sender of M1/M3/M5/M7, the recipient of M0/M2/M4/M6/M8). Index lists
 * are bins of little-endian uint32 (at most FM_SA_MAX_K entries, each in 1..FM_SA_MAX_K);
 * keys, shares and boxes are bins of exactly their size (FM_SA_KEY_BYTES, FM_SA_BOX_BYTES)
 * times their list's count. The wire checks structure only: that lists are increasing,
 * within the cohort's K, and hold the right members is the cohort's and the member's job
 * (fm_sa_cohort, fm_sa_member), which refuse with an fm_sa_reason_t.
 * Decoded lists are copied into the fixed arrays of the fm_wire_sa_* structs (the fm_sa_*
 * struct inside points at them): allocate those once and reuse them (the largest,
 * fm_wire_sa_shares_fwd_t, is about 34 KB). */

/* M0 COHORT_INVITE: member `index` of cohort `p.cohort` is the trainer `trainer`, training
 * client `client` on model version `version`. Decoded only if fm_sa_params_check accepts
 * p and 1 <= index <= p.k. */
typedef struct {
    fm_sa_params_t p;                  /* "cohort", "k", "thr", "m", "clip", "s" */
    uint32_t index;                    /* "i": this member's index, 1..k */
    uint64_t version;                  /* "mv": the MODEL version to train on */
    uint64_t round;                    /* "round" (optional, sent when non-zero): sync round */
    char trainer[FM_WIRE_STR_MAX + 1]; /* "trainer": the trainer id, non-empty */
    uint32_t client;                   /* "client": the client that trains as member i */
    fm_sa_deadlines_t deadlines;       /* "dl": [keys, shares, train, unmask] seconds, > 0 */
} fm_wire_sa_invite_t;

/* M1 ADVERTISE_KEYS is fm_sa_advertise_t: "cohort", "i" (= from), "cpk", "spk" (32 B). */

/* M2 KEY_LIST to member `to`: "u1" (indices), "cpk", "spk" (32 B per entry, in u1's order). */
typedef struct {
    uint32_t to;
    fm_sa_key_list_t msg; /* msg.keys == keys */
    fm_sa_key_entry_t keys[FM_SA_MAX_K];
} fm_wire_sa_key_list_t;

/* M3 SHARES from msg.from: "to" (indices, at most FM_SA_MAX_K - 1), "boxes" (124 B each). */
typedef struct {
    fm_sa_shares_t msg; /* msg.boxes == boxes */
    fm_sa_box_entry_t boxes[FM_SA_MAX_K];
} fm_wire_sa_shares_t;

/* M4 SHARES_FWD to msg.to: "u2", "from" (indices, at most FM_SA_MAX_K - 1), "boxes". */
typedef struct {
    fm_sa_shares_fwd_t msg; /* msg.u2 == u2, msg.boxes == boxes */
    uint32_t u2[FM_SA_MAX_K];
    fm_sa_box_entry_t boxes[FM_SA_MAX_K];
} fm_wire_sa_shares_fwd_t;

/* M5 MASKED_UPDATE: "m" (1..FM_SA_MAX_M) and "y", a bin of exactly 4 m bytes (uint32
 * little-endian). Decoded, `y` points into the frame, unaligned: fm_wire_sa_masked_view
 * copies it out. */
typedef struct {
    uint64_t cohort;
    uint32_t from;
    uint32_t m;
    const void *y;
} fm_wire_sa_masked_t;

/* M6 UNMASK_REQ to `to`: "u3" and "d" (at most FM_SA_MAX_K entries together). */
typedef struct {
    uint32_t to;
    fm_sa_unmask_req_t msg; /* msg.u3 == u3, msg.d == d */
    uint32_t u3[FM_SA_MAX_K];
    uint32_t d[FM_SA_MAX_K];
} fm_wire_sa_unmask_req_t;

/* M7 UNMASK_SHARES from msg.from: "of" (indices), "kind" (one byte per entry,
 * FM_SA_SHARE_B or FM_SA_SHARE_RS), "shares" (32 B per entry). */
typedef struct {
    fm_sa_unmask_shares_t msg; /* msg.shares == shares */
    fm_sa_share_entry_t shares[FM_SA_MAX_K];
} fm_wire_sa_unmask_shares_t;

/* M8 COHORT_DONE / COHORT_ABORT to member `to`: "cohort", "i". */
typedef struct {
    uint64_t cohort;
    uint32_t to;
} fm_wire_sa_end_t;

/* One decoded tensor; `data` points into the frame (borrowed, unaligned). */
typedef struct {
    char name[FM_WIRE_STR_MAX + 1];
    char dtype[FM_WIRE_DTYPE_MAX + 1];
    int ndim; /* 0..FM_WIRE_MAX_DIMS */
    uint64_t shape[FM_WIRE_MAX_DIMS];
    const void *data; /* "data" */
    size_t nbytes;
    /* the encoding (fm_codec): enc.dtype from "dtype" (FM_DT_COUNT if unknown), enc.scale
     * from "scale", enc.idx from "idx" (sparse), enc.zstd from "comp"; enc.data = data */
    fm_codec_tensor_t enc;
    int has_scale; /* "scale" was present */
} fm_wire_tensor_t;

/* The decoded "tensors" of a MODEL or UPDATE. About 25 KB: allocate it once and reuse it. */
typedef struct {
    int count;
    unsigned version; /* the frame's "v": encodings need 2 (fm_wire_tensors_check) */
    fm_wire_tensor_t t[FM_WIRE_MAX_TENSORS];
} fm_wire_tensors_t;

/* ---- the encode buffer ------------------------------------------------------------------ */

/* A growable byte buffer; the encoded frame is data[0..len). Zero-initialise it (or use
 * FM_WIRE_BUF_INIT); every encoder overwrites it from the start and keeps its capacity, so
 * one buffer serves many messages. The caller owns it: fm_wire_buf_free(). */
typedef struct {
    unsigned char *data;
    size_t len;
    size_t cap;
} fm_wire_buf_t;

#define FM_WIRE_BUF_INIT                                                                         \
    {                                                                                            \
        NULL, 0, 0                                                                               \
    }

/* Free the buffer's memory and zero it; idempotent. */
void fm_wire_buf_free(fm_wire_buf_t *b);

/* ---- encoders ------------------------------------------------------------------------------
 * Each writes one complete message into `out` (previous contents discarded). Tensors are
 * written in the layout's state_dict order, one bin per view, memcpy'd from the flat buffer
 * (fm_model_nparams(layout) floats); values are not checked for finiteness.
 * Errors: -ENOMEM (out->len is then 0); FM_EARG for a string field that is empty where
 * non-empty is required, longer than FM_WIRE_STR_MAX or with a byte its text class does
 * not allow, or a member type that is not HELLO/HEARTBEAT/BYE. NULL pointers are programmer
 * errors (FM_ASSERT). */

int fm_wire_encode_model(const fm_wire_model_t *hdr, const fm_model_t *layout,
                         const float *params, fm_wire_buf_t *out);
int fm_wire_encode_update(const fm_wire_update_t *hdr, const fm_model_t *layout,
                          const float *delta, fm_wire_buf_t *out);
/* The same with encoded tensors: coded[i] (fm_codec_enc_run) is view i of the layout (delta
 * and params may then be NULL); NULL coded = raw float32 from delta/params. The frame is
 * version 2 when a tensor is encoded, else byte for byte what the raw encoder writes. */
int fm_wire_encode_update_coded(const fm_wire_update_t *hdr, const fm_model_t *layout,
                                const float *delta, const fm_codec_tensor_t *coded,
                                fm_wire_buf_t *out);
int fm_wire_encode_model_coded(const fm_wire_model_t *hdr, const fm_model_t *layout,
                               const float *params, const fm_codec_tensor_t *coded,
                               fm_wire_buf_t *out);
/* type: FM_WIRE_HELLO, FM_WIRE_HEARTBEAT (also writes "sent" and "busy") or FM_WIRE_BYE. */
int fm_wire_encode_member(fm_wire_type_t type, const fm_wire_member_t *m, fm_wire_buf_t *out);
int fm_wire_encode_snapshot_req(const fm_wire_snapshot_req_t *r, fm_wire_buf_t *out);
int fm_wire_encode_metrics(const fm_wire_metrics_t *m, fm_wire_buf_t *out);
/* FM_EARG also for a count of 0 or over FM_WIRE_MAX_ACK_IDS, or boot 0. */
int fm_wire_encode_ack(const fm_wire_ack_t *a, fm_wire_buf_t *out);
/* FM_EARG also for round 0, no clients or more than FM_WIRE_MAX_COHORT. */
int fm_wire_encode_decline(const fm_wire_decline_t *d, fm_wire_buf_t *out);

/* Secure aggregation (§3.8). FM_EARG also for anything the decoder would refuse: an index
 * or list entry outside 1..FM_SA_MAX_K, a count over its cap, a NULL list with a non-zero
 * count, a share kind other than FM_SA_SHARE_B/_RS, m outside 1..FM_SA_MAX_M, invite
 * params that fm_sa_params_check refuses, an index above K, a deadline not finite > 0. */
int fm_wire_encode_sa_invite(const fm_wire_sa_invite_t *inv, fm_wire_buf_t *out);
int fm_wire_encode_sa_keys(const fm_sa_advertise_t *a, fm_wire_buf_t *out);
int fm_wire_encode_sa_key_list(const fm_sa_key_list_t *kl, uint32_t to, fm_wire_buf_t *out);
int fm_wire_encode_sa_shares(const fm_sa_shares_t *s, fm_wire_buf_t *out);
int fm_wire_encode_sa_shares_fwd(const fm_sa_shares_fwd_t *s, fm_wire_buf_t *out);
int fm_wire_encode_sa_masked(const fm_sa_masked_t *mk, fm_wire_buf_t *out);
int fm_wire_encode_sa_unmask_req(const fm_sa_unmask_req_t *r, uint32_t to, fm_wire_buf_t *out);
int fm_wire_encode_sa_unmask_shares(const fm_sa_unmask_shares_t *s, fm_wire_buf_t *out);
/* type: FM_WIRE_SA_DONE or FM_WIRE_SA_ABORT. */
int fm_wire_encode_sa_end(fm_wire_type_t type, const fm_wire_sa_end_t *end, fm_wire_buf_t *out);

/* Entry i (< c->count) of a cohort. */
uint32_t fm_wire_cohort_at(const fm_wire_cohort_t *c, uint32_t i);

/* Fill id with FM_WIRE_ID_LEN bytes from the kernel's random source (getrandom), as every
 * UPDATE needs. Never use a seeded RNG for ids: a restarted trainer with the same seed would
 * repeat them and the aggregator would drop its updates as duplicates. Errors: -errno. */
int fm_wire_id_new(uint8_t id[FM_WIRE_ID_LEN]);

/* ---- decoders ------------------------------------------------------------------------------
 * `buf[0..len)` is one whole frame (untrusted). On success the struct(s) are filled and
 * tensors->t[i].data point into buf (valid while buf is). On error the outputs are
 * unspecified and `e` says why (codes above). Decoders never allocate. */

/* Validate the framing, "v" and "t" of any message and return its type in *type, to
 * dispatch to the right decoder. Errors: FM_ETRUNC, FM_EFORMAT, FM_ERANGE, FM_EVERSION. */
int fm_wire_peek(const void *buf, size_t len, fm_wire_type_t *type, fm_errmsg_t *e);

/* MODEL. tensors is mandatory (at most FM_WIRE_MAX_TENSORS, not yet checked against a
 * layout: see fm_wire_tensors_check). Checking the model name is the caller's job. */
int fm_wire_decode_model(const void *buf, size_t len, fm_wire_model_t *hdr,
                         fm_wire_tensors_t *tensors, fm_errmsg_t *e);
/* UPDATE; tensors is the delta. */
int fm_wire_decode_update(const void *buf, size_t len, fm_wire_update_t *hdr,
                          fm_wire_tensors_t *tensors, fm_errmsg_t *e);
/* HELLO, HEARTBEAT or BYE (which one: *type). "sent"/"busy" are mandatory in HEARTBEAT,
 * read as 0 when absent from HELLO/BYE. */
int fm_wire_decode_member(const void *buf, size_t len, fm_wire_type_t *type, fm_wire_member_t *m,
                          fm_errmsg_t *e);
int fm_wire_decode_snapshot_req(const void *buf, size_t len, fm_wire_snapshot_req_t *r,
                                fm_errmsg_t *e);
int fm_wire_decode_metrics(const void *buf, size_t len, fm_wire_metrics_t *m, fm_errmsg_t *e);
/* ACK: "ids" must be a non-empty bin whose length is a multiple of FM_WIRE_ID_LEN
 * (FM_EFORMAT) of at most FM_WIRE_MAX_ACK_IDS ids (FM_ERANGE); "boot" non-zero (FM_ERANGE). */
int fm_wire_decode_ack(const void *buf, size_t len, fm_wire_ack_t *a, fm_errmsg_t *e);
/* DECLINE: "round" non-zero (FM_ERANGE); "clients" as MODEL's "cohort", and not empty
 * (FM_EFORMAT). */
int fm_wire_decode_decline(const void *buf, size_t len, fm_wire_decline_t *d, fm_errmsg_t *e);

/* Secure aggregation (§3.8). Errors as above; the one line names the message and the
 * field ("KEY_LIST: cpk: bin of 64 bytes, expected 32 x 3 entries of u1 = 96"). Size
 * rules: an index list's bin is a multiple of 4 (FM_EFORMAT), of at most its cap entries
 * (FM_ERANGE), each in 1..FM_SA_MAX_K (FM_ERANGE); a bin of keys, boxes, shares or kinds is
 * exactly its entry size times the count of its list (FM_EFORMAT); "i" in 1..FM_SA_MAX_K
 * (FM_ERANGE). */
/* COHORT_INVITE: also FM_ERANGE for params fm_sa_params_check refuses, "i" above "k", a
 * deadline not finite > 0; "dl" not an array of 4 numbers is FM_EFORMAT. */
int fm_wire_decode_sa_invite(const void *buf, size_t len, fm_wire_sa_invite_t *inv,
                             fm_errmsg_t *e);
/* ADVERTISE_KEYS: "cpk" and "spk" exactly FM_SA_KEY_BYTES (FM_EFORMAT). */
int fm_wire_decode_sa_keys(const void *buf, size_t len, fm_sa_advertise_t *a, fm_errmsg_t *e);
int fm_wire_decode_sa_key_list(const void *buf, size_t len, fm_wire_sa_key_list_t *kl,
                               fm_errmsg_t *e);
int fm_wire_decode_sa_shares(const void *buf, size_t len, fm_wire_sa_shares_t *s, fm_errmsg_t *e);
int fm_wire_decode_sa_shares_fwd(const void *buf, size_t len, fm_wire_sa_shares_fwd_t *s,
                                 fm_errmsg_t *e);
/* MASKED_UPDATE: "m" outside 1..FM_SA_MAX_M is FM_ERANGE, "y" not 4 m bytes FM_EFORMAT. */
int fm_wire_decode_sa_masked(const void *buf, size_t len, fm_wire_sa_masked_t *mk,
                             fm_errmsg_t *e);
/* UNMASK_REQ: "u3" and "d" of more than FM_SA_MAX_K entries together is FM_ERANGE. */
int fm_wire_decode_sa_unmask_req(const void *buf, size_t len, fm_wire_sa_unmask_req_t *r,
                                 fm_errmsg_t *e);
/* UNMASK_SHARES: a "kind" byte other than 1 or 2 is FM_ERANGE. */
int fm_wire_decode_sa_unmask_shares(const void *buf, size_t len, fm_wire_sa_unmask_shares_t *s,
                                    fm_errmsg_t *e);
/* COHORT_DONE or COHORT_ABORT (which one: *type). */
int fm_wire_decode_sa_end(const void *buf, size_t len, fm_wire_type_t *type,
                          fm_wire_sa_end_t *end, fm_errmsg_t *e);

/* The decoded MASKED_UPDATE `w` as the cohort's struct: copies w->m words into `scratch`
 * (room for w->m uint32, aligned) and points out->y at it. */
void fm_wire_sa_masked_view(const fm_wire_sa_masked_t *w, uint32_t *scratch, fm_sa_masked_t *out);

/* ---- tensors against a model layout ---------------------------------------------------------
 */

/* Check decoded tensors against `layout`: exactly one tensor per view, in any order, each
 * encoded as its frame's version allows. Errors (first problem found, `e` names the tensor):
 * FM_ENAME (unknown, duplicate or missing name), FM_EDTYPE (dtype not "F32" in a version-1
 * frame; not F32/F16/BF16/I8 in version 2), FM_ESHAPE (shape differs from the view's, or raw
 * F32 data is not numel*4 bytes), FM_EFORMAT (an encoding key in a version-1 frame; I8
 * without "scale"; an encoded tensor whose byte counts disagree: fm_codec_check), FM_ERANGE
 * (I8 scale not finite >= 0, more indices than entries). Index order and zstd frames are
 * checked when the values are read (fm_codec_rd_t). */
int fm_wire_tensors_check(const fm_wire_tensors_t *t, const fm_model_t *layout, fm_errmsg_t *e);

/* 0 if every value of every tensor is finite, else FM_ENONFINITE naming the first tensor
 * with a NaN or infinity. Reads raw data in place and encoded tensors block by block (their
 * sizes from `layout`, which may be NULL when every tensor is raw F32), so a receiver can
 * check before copying into a live buffer; call after fm_wire_tensors_check. Encoded tensors
 * may also fail with fm_codec_rd_next's errors (indices, zstd) or -ENOMEM. */
int fm_wire_tensors_finite(const fm_wire_tensors_t *t, const fm_model_t *layout, fm_errmsg_t *e);

/* Copy checked tensors into the flat buffer `dst` (fm_model_nparams(layout) floats), one
 * memcpy per raw tensor, encoded ones decoded (fm_codec_decode), then check that what was
 * copied is finite. Call only after fm_wire_tensors_check succeeded (anything else is a
 * programmer error: FM_ASSERT). Errors, the first problem in frame order (as
 * fm_wire_tensors_finite finds it): FM_ENONFINITE, an encoded tensor's fm_codec_rd_next
 * error (indices, zstd), -ENOMEM; dst then holds part of the values: discard them. */
int fm_wire_tensors_copy(const fm_wire_tensors_t *t, const fm_model_t *layout, float *dst,
                         fm_errmsg_t *e);

/* "MODEL", "UPDATE", ... for a type; "?" for anything else. Static string. */
const char *fm_wire_type_name(fm_wire_type_t type);

#endif

/* evaluator_jsonl: the evaluator's metrics file, one JSON object per line (JSON Lines).
 *
 * One record per evaluated model version:
 *   {"version":7,"model":"mlp","accuracy":0.8123,"loss":0.52,"class_accuracy":[10 numbers],
 *    "n":10000,"eval_seconds":0.11,"time":1764362400.123456,"created":1764362399.5,
 *    "population":{"clients":100,"mean":0.81,"min":0.42,"worst_client":17,"p10":0.63,
 *                  "threshold":0.7,"below":0.12}}
 * "time" is the end of the evaluation and "created" the model's creation time, both Unix
 * seconds; "eval_seconds" is the test-set evaluation only. "population" (population-level
 * validation, evaluator_pop.h) is present only when clients were scored (METRICS "pc" > 0):
 * the accuracy on each client's held-out slice summarised over "clients" clients: their
 * unweighted "mean", the lowest ("min", of client "worst_client"), the nearest-rank 10th
 * percentile "p10", and the fraction "below" of clients whose accuracy is < "threshold".
 * Records are written with jansson, compact, keys in this order. Integers are JSON
 * integers; the other numbers are written with 17 significant digits (they read back
 * exactly) and always with a '.' or an exponent (0 is 0.0, 1e-05 is 1e-5); a non-finite
 * number (a diverged model's loss) is written as null. The file is opened in
 * append mode and every line is written with one fwrite and flushed, so a reader (tail -f,
 * fedmq run) sees whole lines and records from earlier runs are kept. */
#ifndef EVALUATOR_JSONL_H
#define EVALUATOR_JSONL_H

#include <stddef.h>

#include "fm_err.h"
#include "fm_wire.h"

typedef struct eval_jsonl eval_jsonl_t;

/* Open (create, mode 0644 minus umask) `path` for appending. Returns NULL on failure with
 * *err = -errno and a one-line message naming the file in `e`. Caller owns the result:
 * eval_jsonl_close(). */
eval_jsonl_t *eval_jsonl_open(const char *path, int *err, fm_errmsg_t *e);

/* Close the file and NULL *p; idempotent. */
void eval_jsonl_close(eval_jsonl_t **p);

/* Format the record of `m` (and the model's creation time `created`) into buf[0..cap),
 * without the newline, NUL-terminated (buf is "" on error). Returns its length, or
 * -ENOBUFS if cap is too small (with a built-in model name a record is at most 518 bytes
 * without "population" and 779 with it, every number at its longest: cap = 800 always
 * suffices), FM_ERANGE if version or num_samples exceeds INT64_MAX (JSON integers are
 * int64 here), FM_EARG if the model name is not valid UTF-8, -ENOMEM. Pure: no I/O. */
int eval_jsonl_format(const fm_wire_metrics_t *m, double created, char *buf, size_t cap);

/* Append one record and a newline, then flush. Errors: -errno (the write or flush failed;
 * `e` names the file), and those of eval_jsonl_format (cannot happen for the versions,
 * sample counts and built-in model names the evaluator sees). */
int eval_jsonl_append(eval_jsonl_t *self, const fm_wire_metrics_t *m, double created,
                      fm_errmsg_t *e);

/* The path given to eval_jsonl_open (borrowed; lives as long as self). */
const char *eval_jsonl_path(const eval_jsonl_t *self);

#endif

#include "evaluator_jsonl.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

struct eval_jsonl {
    FILE *f;
    char *path;
};

eval_jsonl_t *eval_jsonl_open(const char *path, int *err, fm_errmsg_t *e)
{
    int rc = -ENOMEM;
    eval_jsonl_t *self = calloc(1, sizeof *self);
    if (!self || !(self->path = strdup(path))) {
        fm_errmsg_set(e, rc, "%s: %s", path, fm_strerror(rc));
        goto cleanup;
    }
    self->f = fopen(path, "a");
    if (!self->f) {
        rc = -errno;
        fm_errmsg_set(e, rc, "evaluator.metrics_file %s: cannot open for appending: %s", path,
                      fm_strerror(rc));
        goto cleanup;
    }
    rc = 0;
cleanup:
    if (rc != 0) {
        if (err)
            *err = rc;
        eval_jsonl_close(&self);
    }
    return self;
}

void eval_jsonl_close(eval_jsonl_t **p)
{
    if (!p || !*p)
        return;
    eval_jsonl_t *self = *p;
    if (self->f)
        fclose(self->f);
    free(self->path);
    free(self);
    *p = NULL;
}

const char *eval_jsonl_path(const eval_jsonl_t *self) { return self->path; }

/* A JSON number, or null when not finite (JSON has no NaN or infinity). */
static json_t *s_num(double v) { return isfinite(v) ? json_real(v) : json_null(); }

/* The record of `m` as an object, keys in the documented order (jansson keeps insertion
 * order); takes ownership of `model`. NULL when out of memory. set_new/append_new take
 * ownership of their value, NULL included, even when they fail. */
static json_t *s_record(const fm_wire_metrics_t *m, json_t *model, double created)
{
    json_t *rec = json_object(), *cacc = NULL;
    if (!rec) {
        json_decref(model);
        return NULL;
    }
    if (json_object_set_new(rec, "version", json_integer((json_int_t)m->version)) != 0 ||
        json_object_set_new(rec, "model", model) != 0 ||
        json_object_set_new(rec, "accuracy", s_num(m->accuracy)) != 0 ||
        json_object_set_new(rec, "loss", s_num(m->loss)) != 0 ||
        json_object_set_new(rec, "class_accuracy", cacc = json_array()) != 0)
        goto fail;
    for (int c = 0; c < FM_NCLASSES; c++)
        if (json_array_append_new(cacc, s_num(m->class_acc[c])) != 0)
            goto fail;
    if (json_object_set_new(rec, "n", json_integer((json_int_t)m->num_samples)) != 0 ||
        json_object_set_new(rec, "eval_seconds", s_num(m->eval_seconds)) != 0 ||
        json_object_set_new(rec, "time", s_num(m->timestamp)) != 0 ||
        json_object_set_new(rec, "created", s_num(created)) != 0)
        goto fail;
    if (m->pop_clients > 0) {
        json_t *pop = json_object();
        if (json_object_set_new(rec, "population", pop) != 0 ||
            json_object_set_new(pop, "clients", json_integer(m->pop_clients)) != 0 ||
            json_object_set_new(pop, "mean", s_num(m->pop_mean)) != 0 ||
            json_object_set_new(pop, "min", s_num(m->pop_min)) != 0 ||
            json_object_set_new(pop, "worst_client", json_integer(m->pop_worst)) != 0 ||
            json_object_set_new(pop, "p10", s_num(m->pop_p10)) != 0 ||
            json_object_set_new(pop, "threshold", s_num(m->pop_threshold)) != 0 ||
            json_object_set_new(pop, "below", s_num(m->pop_below)) != 0 ||
            json_object_set_new(pop, "seconds", s_num(m->pop_seconds)) != 0)
            goto fail;
    }
    if (m->delta > 0 && /* client-level differential privacy: what the version spent */
        (json_object_set_new(rec, "epsilon", s_num(m->epsilon)) != 0 ||
         json_object_set_new(rec, "delta", s_num(m->delta)) != 0))
        goto fail;
    if ((m->sa_completed || m->sa_aborted) && /* secure aggregation: the cohorts so far */
        json_object_set_new(rec, "secagg",
                            json_pack("{s:I, s:I, s:I}", "completed", (json_int_t)m->sa_completed,
                                      "aborted", (json_int_t)m->sa_aborted, "members_dropped",
                                      (json_int_t)m->sa_dropped)) != 0)
        goto fail;
    return rec;
fail:
    json_decref(rec);
    return NULL;
}

int eval_jsonl_format(const fm_wire_metrics_t *m, double created, char *buf, size_t cap)
{
    if (cap == 0)
        return -ENOBUFS;
    buf[0] = '\0';
    /* JSON integers are int64 (json_int_t) */
    if (m->version > (uint64_t)INT64_MAX || m->num_samples > (uint64_t)INT64_MAX)
        return FM_ERANGE;
    json_t *model = json_string(m->model); /* NULL: not UTF-8 (the check comes first) */
    if (!model)
        return FM_EARG;
    json_t *rec = s_record(m, model, created);
    if (!rec)
        return -ENOMEM;
    size_t n = json_dumpb(rec, buf, cap, JSON_COMPACT | JSON_REAL_PRECISION(17));
    json_decref(rec);
    if (n == 0 || n >= cap || n > INT_MAX) { /* 0: out of memory; n >= cap: no room */
        buf[0] = '\0';
        return n == 0 ? -ENOMEM : -ENOBUFS;
    }
    buf[n] = '\0';
    return (int)n;
}

int eval_jsonl_append(eval_jsonl_t *self, const fm_wire_metrics_t *m, double created,
                      fm_errmsg_t *e)
{
    char line[1024];
    int n = eval_jsonl_format(m, created, line, sizeof line - 1);
    if (n < 0)
        return fm_errmsg_set(e, n, "%s: cannot format the record: %s", self->path,
                             fm_strerror(n));
    line[n++] = '\n';
    errno = 0;
    if (fwrite(line, 1, (size_t)n, self->f) != (size_t)n || fflush(self->f) != 0) {
        int rc = errno ? -errno : -EIO;
        clearerr(self->f);
        return fm_errmsg_set(e, rc, "%s: write failed: %s", self->path, fm_strerror(rc));
    }
    return 0;
}

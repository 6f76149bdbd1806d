#include "evaluator_jsonl.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* A bounded appender: once out of room it stays failed. */
typedef struct {
    char *buf;
    size_t cap, len;
    int overflow;
} s_out_t;

static void s_put(s_out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void s_put(s_out_t *o, const char *fmt, ...)
{
    if (o->overflow)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= o->cap - o->len) {
        o->overflow = 1;
        return;
    }
    o->len += (size_t)n;
}

/* A JSON number, or null when not finite (JSON has no NaN or infinity). */
static void s_num(s_out_t *o, double v)
{
    if (isfinite(v))
        s_put(o, "%.17g", v);
    else
        s_put(o, "null");
}

/* A JSON string with quotes, backslashes and control characters escaped. */
static void s_str(s_out_t *o, const char *s)
{
    s_put(o, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            s_put(o, "\\%c", *p);
        else if (*p < 0x20)
            s_put(o, "\\u%04x", *p);
        else
            s_put(o, "%c", *p);
    }
    s_put(o, "\"");
}

int eval_jsonl_format(const fm_wire_metrics_t *m, double created, char *buf, size_t cap)
{
    if (cap == 0)
        return -ENOBUFS;
    s_out_t o = {buf, cap, 0, 0};
    buf[0] = '\0';
    s_put(&o, "{\"version\":%llu,\"model\":", (unsigned long long)m->version);
    s_str(&o, m->model);
    s_put(&o, ",\"accuracy\":");
    s_num(&o, m->accuracy);
    s_put(&o, ",\"loss\":");
    s_num(&o, m->loss);
    s_put(&o, ",\"class_accuracy\":[");
    for (int c = 0; c < FM_NCLASSES; c++) {
        if (c > 0)
            s_put(&o, ",");
        s_num(&o, m->class_acc[c]);
    }
    s_put(&o, "],\"n\":%llu,\"eval_seconds\":", (unsigned long long)m->num_samples);
    s_num(&o, m->eval_seconds);
    s_put(&o, ",\"time\":");
    s_num(&o, m->timestamp);
    s_put(&o, ",\"created\":");
    s_num(&o, created);
    if (m->pop_clients > 0) {
        s_put(&o, ",\"population\":{\"clients\":%u,\"mean\":", (unsigned)m->pop_clients);
        s_num(&o, m->pop_mean);
        s_put(&o, ",\"min\":");
        s_num(&o, m->pop_min);
        s_put(&o, ",\"worst_client\":%u,\"p10\":", (unsigned)m->pop_worst);
        s_num(&o, m->pop_p10);
        s_put(&o, ",\"threshold\":");
        s_num(&o, m->pop_threshold);
        s_put(&o, ",\"below\":");
        s_num(&o, m->pop_below);
        s_put(&o, "}");
    }
    s_put(&o, "}");
    if (o.overflow) {
        buf[0] = '\0';
        return -ENOBUFS;
    }
    return (int)o.len;
}

int eval_jsonl_append(eval_jsonl_t *self, const fm_wire_metrics_t *m, double created,
                      fm_errmsg_t *e)
{
    char line[1024];
    int n = eval_jsonl_format(m, created, line, sizeof line - 1);
    if (n < 0)
        return fm_errmsg_set(e, n, "%s: record too long", self->path);
    line[n++] = '\n';
    errno = 0;
    if (fwrite(line, 1, (size_t)n, self->f) != (size_t)n || fflush(self->f) != 0) {
        int rc = errno ? -errno : -EIO;
        clearerr(self->f);
        return fm_errmsg_set(e, rc, "%s: write failed: %s", self->path, fm_strerror(rc));
    }
    return 0;
}

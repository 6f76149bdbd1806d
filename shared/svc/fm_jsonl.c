#include "fm_jsonl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fm_hex.h"

struct fm_jsonl {
    int fd;
    char *path;
};

fm_jsonl_t *fm_jsonl_open(const char *path, int *err, fm_errmsg_t *e)
{
    fm_jsonl_t *j = calloc(1, sizeof *j);
    int rc = 0;
    if (j)
        j->fd = -1;
    if (!j || !(j->path = strdup(path))) {
        rc = fm_errmsg_set(e, -ENOMEM, "%s: %s", path, fm_strerror(-ENOMEM));
        goto cleanup;
    }
    j->fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (j->fd < 0)
        rc = fm_errmsg_set(e, -errno, "%s: cannot open for appending: %s", path,
                           fm_strerror(-errno));
cleanup:
    if (rc) {
        fm_jsonl_close(&j);
        if (err)
            *err = rc;
    }
    return j;
}

void fm_jsonl_close(fm_jsonl_t **p)
{
    if (!p || !*p)
        return;
    if ((*p)->fd >= 0)
        close((*p)->fd);
    free((*p)->path);
    free(*p);
    *p = NULL;
}

int fm_jsonl_append(fm_jsonl_t *j, const json_t *obj)
{
    char *text = json_dumps(obj, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text)
        return -ENOMEM;
    size_t n = strlen(text);
    char *line = realloc(text, n + 2);
    if (!line) {
        free(text);
        return -ENOMEM;
    }
    line[n] = '\n';
    int rc = 0;
    ssize_t w = write(j->fd, line, n + 1); /* O_APPEND: one write, one whole line */
    if (w < 0)
        rc = -errno;
    else if ((size_t)w != n + 1)
        rc = -ENOSPC; /* a short write to a regular file: the disk is full */
    free(line);
    return rc;
}

int fm_jsonl_put(fm_jsonl_t *j, json_t *obj)
{
    int rc = obj ? fm_jsonl_append(j, obj) : -ENOMEM;
    json_decref(obj);
    return rc;
}

const char *fm_jsonl_path(const fm_jsonl_t *j) { return j->path; }

json_t *fm_jsonl_id(const uint8_t id[16])
{
    char s[33];
    fm_hex_encode(s, id, 16);
    return json_string(s);
}

/* fm_file: atomic replacement of small files, with a spare for a full disk (see fm_file.h). */
#include "fm_file.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* "<path><suffix>" into out[PATH_MAX]. 0 or -ENAMETOOLONG. */
static int s_name(char *out, const char *path, const char *suffix)
{
    int w = snprintf(out, PATH_MAX, "%s%s", path, suffix);
    return w < 0 || w >= PATH_MAX ? -ENAMETOOLONG : 0;
}

/* Write data[0..len) at offset 0. 0 or -errno (a write that makes no progress: -ENOSPC). */
static int s_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    size_t off = 0;
    while (off < len) {
        ssize_t w = pwrite(fd, p + off, len - off, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        if (w == 0)
            return -ENOSPC;
        off += (size_t)w;
    }
    return 0;
}

/* fsync the folder that holds `path`. 0 or -errno with a line in e. */
static int s_sync_dir(const char *path, fm_errmsg_t *e)
{
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = fd < 0 || fsync(fd) != 0 ? -errno : 0;
    if (fd >= 0)
        close(fd);
    return rc ? fm_errmsg_set(e, rc, "%s: cannot sync: %s", dir, strerror(-rc)) : 0;
}

/* A new file at `path` holding data (O_EXCL unless `trunc`), fsync'ed if durable. 0 or
 * -errno; on failure a file this call created is removed. */
static int s_create(const char *path, const void *data, size_t len, int trunc, int durable)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (trunc ? O_TRUNC : O_EXCL), 0644);
    if (fd < 0)
        return -errno;
    int rc = s_write_all(fd, data, len);
    if (rc == 0 && durable && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc)
        unlink(path);
    return rc;
}

/* Keep a spare of FM_FILE_SPARE_BYTES beside path (best effort: a full disk just has none). */
static void s_ensure_spare(const char *path)
{
    char spare[PATH_MAX];
    struct stat st;
    if (s_name(spare, path, ".spare") != 0 || lstat(spare, &st) == 0)
        return;
    static const char zeros[FM_FILE_SPARE_BYTES];
    (void)s_create(spare, zeros, sizeof zeros, 0, 0);
}

/* The full-disk path: the content into the spare's allocated blocks, the spare renamed over
 * path, the replaced file kept as the next spare. 0 or -errno (-ENOSPC: no usable spare). */
static int s_from_spare(const char *path, const void *data, size_t len, unsigned flags,
                        fm_errmsg_t *e)
{
    char spare[PATH_MAX], prev[PATH_MAX];
    if (s_name(spare, path, ".spare") != 0 || s_name(prev, path, ".prev") != 0)
        return -ENAMETOOLONG;
    int fd = open(spare, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -ENOSPC;
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || (size_t)st.st_blocks * 512 < len)
        rc = -ENOSPC; /* writing past its blocks would need new ones */
    if (rc == 0)
        rc = s_write_all(fd, data, len);
    if (rc == 0 && ftruncate(fd, (off_t)len) != 0)
        rc = -errno;
    if (rc == 0 && (flags & FM_FILE_DURABLE) && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc)
        return rc;
    unlink(prev);
    int linked = link(path, prev) == 0;
    if (rename(spare, path) != 0) {
        rc = -errno;
        if (linked)
            unlink(prev);
        return fm_errmsg_set(e, rc, "%s: cannot replace: %s", path, strerror(-rc));
    }
    if (linked && rename(prev, spare) != 0)
        unlink(prev);
    return (flags & FM_FILE_DURABLE) ? s_sync_dir(path, e) : 0;
}

int fm_file_replace(const char *path, const void *data, size_t len, unsigned flags,
                    fm_errmsg_t *e)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return fm_errmsg_set(e, -ENAMETOOLONG, "%s: path too long", path);
    if (!data)
        data = "";
    int rc = s_create(tmp, data, len, 1, (flags & FM_FILE_DURABLE) != 0);
    if (rc) {
        if ((flags & FM_FILE_SPARE) && (rc == -ENOSPC || rc == -EDQUOT) &&
            len <= FM_FILE_SPARE_BYTES) {
            fm_errmsg_t se = {{0}};
            int src = s_from_spare(path, data, len, flags, &se);
            if (src == 0)
                return 0;
            if (se.msg[0]) {
                if (e)
                    *e = se;
                return src;
            }
        }
        return fm_errmsg_set(e, rc, "%s: cannot write: %s", tmp, strerror(-rc));
    }
    if (rename(tmp, path) != 0) {
        rc = -errno;
        unlink(tmp);
        return fm_errmsg_set(e, rc, "%s: cannot replace: %s", path, strerror(-rc));
    }
    if (flags & FM_FILE_SPARE)
        s_ensure_spare(path);
    return (flags & FM_FILE_DURABLE) ? s_sync_dir(path, e) : 0;
}

void fm_file_clean(const char *path)
{
    char dir[PATH_MAX], prefix[PATH_MAX], victim[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    const char *base = slash ? slash + 1 : path;
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    if (snprintf(prefix, sizeof prefix, "%s.tmp.", base) >= (int)sizeof prefix ||
        s_name(victim, path, ".prev") != 0)
        return;
    unlink(victim);
    DIR *d = opendir(dir);
    if (!d)
        return;
    size_t plen = strlen(prefix);
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, prefix, plen) != 0)
            continue;
        char *end = NULL;
        long pid = strtol(de->d_name + plen, &end, 10);
        if (!end || *end || pid <= 0 || (pid != (long)getpid() && kill((pid_t)pid, 0) == 0))
            continue; /* not ours to judge, or its writer still runs */
        if (snprintf(victim, sizeof victim, "%s/%s", dir, de->d_name) < (int)sizeof victim)
            unlink(victim);
    }
    closedir(d);
}

int fm_file_read(const char *path, size_t max, char **out, size_t *len, fm_errmsg_t *e)
{
    *out = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int rc = -errno;
        return fm_errmsg_set(e, rc, "%s: cannot open: %s", path, strerror(-rc));
    }
    struct stat st;
    char *buf = NULL;
    size_t n = 0;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        rc = fm_errmsg_set(e, -errno, "%s: cannot read: %s", path, strerror(errno));
        goto cleanup;
    }
    if (st.st_size < 0 || (uint64_t)st.st_size > (uint64_t)max) {
        rc = fm_errmsg_set(e, -EFBIG, "%s: larger than %zu bytes", path, max);
        goto cleanup;
    }
    if (!(buf = malloc((size_t)st.st_size + 1))) {
        rc = fm_errmsg_set(e, -ENOMEM, "%s: out of memory", path);
        goto cleanup;
    }
    while (n < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = fm_errmsg_set(e, -errno, "%s: cannot read: %s", path, strerror(errno));
            goto cleanup;
        }
        if (r == 0)
            break; /* shrank meanwhile: what is there */
        n += (size_t)r;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    buf = NULL;
cleanup:
    free(buf);
    close(fd);
    return rc;
}

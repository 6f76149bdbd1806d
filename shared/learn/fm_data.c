/* fm_data: IDX (MNIST-format) loading and deterministic client partitions. See fm_data.h. */
#include "fm_data.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "fm_log.h"
#include "fm_rng.h"

#define S_MAGIC_IMAGES 0x00000803u /* IDX, unsigned byte, 3 dims */
#define S_MAGIC_LABELS 0x00000801u /* IDX, unsigned byte, 1 dim */
#define S_MAX_PAYLOAD (1ull << 31) /* refuse headers promising more bytes than this */
#define S_MAX_CHUNK (1u << 30)     /* largest single gzread (its length is an unsigned int) */
#define S_DRAIN_MAX (64u << 10)    /* trailing bytes read after the payload (gzip CRC check) */
#define S_NCLASS 256               /* labels are uint8: partitions handle any value */

/* The rng stream of fm_rng_seed(&r, seed, S_PART_STREAM) used by fm_partition_new, so a
 * partition never shares a stream with per-client streams (small ids) of the same seed. */
#define S_PART_STREAM 0x70617274u /* "part" */
/* Dirichlet: bounded number of whole re-draws while some client is below the minimum. */
#define S_DIRICHLET_TRIES 100
#define S_DIRICHLET_MIN 10u

/* ---- IDX files ------------------------------------------------------------------------ */

typedef struct {
    gzFile gz;
    char name[144];   /* printable (tail of the) path, for messages */
    const char *what; /* "pixels" or "labels" */
    uint32_t dims[3]; /* n [, rows, cols] */
    uint64_t nbytes;  /* payload size promised by the header */
} s_idx_t;

/* Copy `src` into `dst` for a one-line message: control characters become '?', and an
 * over-long string keeps its tail (the file name) behind a "...". */
static void s_clean(char *dst, size_t cap, const char *src)
{
    size_t len = strlen(src);
    size_t skip = 0, o = 0;
    if (len >= cap) {
        skip = len - (cap - 4);
        memcpy(dst, "...", 3);
        o = 3;
    }
    for (size_t i = skip; i < len && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    dst[o] = '\0';
}

static uint32_t s_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

/* Read up to `len` bytes; *got counts them. Returns 0 at completion or end of input, -1 on
 * a zlib stream error (the partial count is still in *got). */
static int s_gz_fill(gzFile gz, uint8_t *buf, uint64_t len, uint64_t *got)
{
    *got = 0;
    while (*got < len) {
        uint64_t want = len - *got;
        int r = gzread(gz, buf + *got, (unsigned)(want > S_MAX_CHUNK ? S_MAX_CHUNK : want));
        if (r < 0)
            return -1;
        if (r == 0)
            break;
        *got += (uint64_t)r;
    }
    if (*got < len) {
        int zerr = Z_OK;
        gzerror(gz, &zerr);
        if (zerr != Z_OK && zerr != Z_BUF_ERROR) /* Z_BUF_ERROR: input ended early */
            return -1;
    }
    return 0;
}

/* FM_EFORMAT naming the file and zlib's description of the stream error (-errno for a
 * read error). */
static int s_gz_corrupt(const s_idx_t *f, fm_errmsg_t *e)
{
    int zerr = Z_OK, err = errno;
    const char *msg = gzerror(f->gz, &zerr);
    if (zerr == Z_ERRNO) /* a read error, not bad data */
        return fm_errmsg_set(e, err > 0 ? -err : -EIO, "%s: read error: %s", f->name,
                             fm_strerror(err > 0 ? -err : -EIO));
    return fm_errmsg_set(e, FM_EFORMAT, "%s: corrupt gzip stream: %s", f->name,
                         msg && *msg ? msg : "unknown zlib error");
}

/* Open `path` and read and validate its IDX header against `magic`. */
static int s_idx_open(s_idx_t *f, const char *path, uint32_t magic, fm_errmsg_t *e)
{
    s_clean(f->name, sizeof f->name, path);
    f->what = magic == S_MAGIC_IMAGES ? "pixels" : "labels";
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int err = errno;
        return fm_errmsg_set(e, -err, "%s: %s", f->name, fm_strerror(-err));
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        close(fd);
        return fm_errmsg_set(e, -EISDIR, "%s: %s", f->name, fm_strerror(-EISDIR));
    }
    f->gz = gzdopen(fd, "rb");
    if (!f->gz) {
        close(fd);
        return fm_errmsg_set(e, -ENOMEM, "%s: cannot start zlib: %s", f->name,
                             fm_strerror(-ENOMEM));
    }
    gzbuffer(f->gz, 128u << 10);

    unsigned ndims = magic & 0xffu;
    uint8_t hdr[16];
    uint64_t got = 0;
    if (s_gz_fill(f->gz, hdr, 4, &got) < 0)
        return s_gz_corrupt(f, e);
    if (got == 4 && s_be32(hdr) != magic)
        return fm_errmsg_set(e, FM_EMAGIC, "%s: wrong magic 0x%08x (expected 0x%08x, %s)",
                             f->name, s_be32(hdr), magic,
                             magic == S_MAGIC_IMAGES ? "IDX3 images" : "IDX1 labels");
    uint64_t more = 0;
    if (got == 4 && s_gz_fill(f->gz, hdr + 4, 4u * ndims, &more) < 0)
        return s_gz_corrupt(f, e);
    if (got + more < 4u + 4u * ndims)
        return fm_errmsg_set(e, FM_ETRUNC,
                             "%s: truncated: the IDX header needs %u bytes, file has %llu",
                             f->name, 4u + 4u * ndims, (unsigned long long)(got + more));

    for (unsigned i = 0; i < ndims; i++)
        f->dims[i] = s_be32(hdr + 4 + 4 * i);
    if (f->dims[0] == 0)
        return fm_errmsg_set(e, FM_EFORMAT, "%s: header says 0 samples", f->name);
    uint64_t nbytes = f->dims[0];
    if (ndims == 3) {
        if (f->dims[1] == 0 || f->dims[2] == 0)
            return fm_errmsg_set(e, FM_EFORMAT, "%s: bad image size %ux%u", f->name, f->dims[1],
                                 f->dims[2]);
        nbytes *= f->dims[1];
        if (nbytes <= S_MAX_PAYLOAD) /* <= 2^31 * (2^32-1): no overflow */
            nbytes *= f->dims[2];
    }
    if (nbytes > S_MAX_PAYLOAD || nbytes > SIZE_MAX / sizeof(float))
        return fm_errmsg_set(
            e, FM_EFORMAT, "%s: implausible dimensions %u x %u x %u (more than 2^31 bytes)",
            f->name, f->dims[0], ndims == 3 ? f->dims[1] : 1u, ndims == 3 ? f->dims[2] : 1u);
    f->nbytes = nbytes;
    return 0;
}

/* Read the payload the header promised into a new buffer (*out, caller frees). The buffer
 * grows as bytes arrive, so a lying header costs no more memory than the file holds. After
 * the payload, a bounded amount of the rest is read so that zlib checks the gzip CRC. */
static int s_idx_payload(s_idx_t *f, uint8_t **out, fm_errmsg_t *e)
{
    int rc = 0;
    uint64_t cap = f->nbytes < (1u << 20) ? f->nbytes : (1u << 20), have = 0;
    uint8_t *buf = malloc((size_t)cap);
    if (!buf) {
        rc = fm_errmsg_set(e, -ENOMEM, "%s: out of memory for %llu bytes", f->name,
                           (unsigned long long)cap);
        goto cleanup;
    }
    for (;;) {
        uint64_t got = 0;
        if (s_gz_fill(f->gz, buf + have, cap - have, &got) < 0) {
            rc = s_gz_corrupt(f, e);
            goto cleanup;
        }
        have += got;
        if (have < cap) { /* end of input before the promised size */
            rc = fm_errmsg_set(
                e, FM_ETRUNC, "%s: truncated: header promises %llu bytes of %s, file has %llu",
                f->name, (unsigned long long)f->nbytes, f->what, (unsigned long long)have);
            goto cleanup;
        }
        if (have == f->nbytes)
            break;
        uint64_t ncap = cap * 2 < f->nbytes ? cap * 2 : f->nbytes;
        uint8_t *nbuf = realloc(buf, (size_t)ncap);
        if (!nbuf) {
            rc = fm_errmsg_set(e, -ENOMEM, "%s: out of memory for %llu bytes", f->name,
                               (unsigned long long)ncap);
            goto cleanup;
        }
        buf = nbuf;
        cap = ncap;
    }
    /* Trailing bytes are ignored, but reading them lets zlib verify the gzip trailer. */
    uint8_t tail[4096];
    for (uint64_t drained = 0; drained < S_DRAIN_MAX;) {
        int r = gzread(f->gz, tail, sizeof tail);
        if (r < 0) {
            rc = s_gz_corrupt(f, e);
            goto cleanup;
        }
        if (r == 0)
            break;
        drained += (uint64_t)r;
    }
    *out = buf;
    buf = NULL;
cleanup:
    free(buf);
    return rc;
}

static void s_idx_close(s_idx_t *f)
{
    if (f->gz)
        gzclose(f->gz);
    f->gz = NULL;
}

static int s_dataset_load(fm_dataset_t **out, const char *images_path, const char *labels_path,
                          float mean, float std, fm_errmsg_t *e)
{
    if (!out)
        return fm_errmsg_set(e, FM_EARG, "fm_dataset_load: out is NULL");
    *out = NULL;
    if (!images_path || !labels_path)
        return fm_errmsg_set(e, FM_EARG, "fm_dataset_load: %s path is NULL",
                             images_path ? "labels" : "images");
    if (!isfinite(mean) || !isfinite(std) || !(std > 0.0f))
        return fm_errmsg_set(e, FM_EARG,
                             "fm_dataset_load: normalisation needs a finite mean and std > 0 "
                             "(got mean %g, std %g)",
                             (double)mean, (double)std);

    int rc = 0;
    s_idx_t img = {0}, lab = {0};
    uint8_t *pix = NULL;
    fm_dataset_t *ds = NULL;

    rc = s_idx_open(&img, images_path, S_MAGIC_IMAGES, e);
    if (rc)
        goto cleanup;
    rc = s_idx_open(&lab, labels_path, S_MAGIC_LABELS, e);
    if (rc)
        goto cleanup;
    if (img.dims[0] != lab.dims[0]) {
        rc = fm_errmsg_set(e, FM_ESHAPE, "%s has %u images but %s has %u labels", img.name,
                           img.dims[0], lab.name, lab.dims[0]);
        goto cleanup;
    }
    ds = calloc(1, sizeof *ds);
    if (!ds) {
        rc = fm_errmsg_set(e, -ENOMEM, "%s: out of memory", img.name);
        goto cleanup;
    }
    rc = s_idx_payload(&img, &pix, e);
    if (rc)
        goto cleanup;
    rc = s_idx_payload(&lab, &ds->y, e);
    if (rc)
        goto cleanup;
    for (uint32_t i = 0; i < lab.dims[0]; i++) {
        if (ds->y[i] >= 10) {
            rc = fm_errmsg_set(e, FM_ESHAPE, "%s: label %u at index %u is out of range (0..9)",
                               lab.name, ds->y[i], i);
            goto cleanup;
        }
    }

    ds->x = malloc((size_t)img.nbytes * sizeof(float));
    if (!ds->x) {
        rc = fm_errmsg_set(e, -ENOMEM, "%s: out of memory for %llu pixels", img.name,
                           (unsigned long long)img.nbytes);
        goto cleanup;
    }
    float lut[256];
    for (int p = 0; p < 256; p++)
        lut[p] = ((float)p / 255.0f - mean) / std;
    float *restrict x = ds->x;
    const uint8_t *restrict src = pix;
    for (size_t i = 0; i < (size_t)img.nbytes; i++)
        x[i] = lut[src[i]];
    ds->n = img.dims[0];
    ds->rows = img.dims[1];
    ds->cols = img.dims[2];
    FM_LOG(LOG_DEBUG, "%s: %u images of %ux%u", img.name, ds->n, ds->rows, ds->cols);
    *out = ds;
    ds = NULL;
cleanup:
    free(pix);
    fm_dataset_destroy(&ds);
    s_idx_close(&img);
    s_idx_close(&lab);
    return rc;
}

/* Pick "<dir>/<split>-<stem>.gz" if it exists (or cannot be checked), else the plain name;
 * -ENOENT naming the .gz path and the directory if neither is there. */
static int s_pick(char *path, size_t cap, const char *dir, const char *split, const char *stem,
                  fm_errmsg_t *e)
{
    char gz[PATH_MAX];
    int len = snprintf(gz, sizeof gz, "%s/%s-%s.gz", dir, split, stem);
    if (len < 0 || (size_t)len >= sizeof gz || (size_t)len >= cap) {
        char name[144];
        s_clean(name, sizeof name, dir);
        return fm_errmsg_set(e, -ENAMETOOLONG, "%s: %s", name, fm_strerror(-ENAMETOOLONG));
    }
    memcpy(path, gz, (size_t)len + 1);
    if (access(gz, F_OK) == 0 || errno != ENOENT)
        return 0; /* exists, or another error that opening will report */
    path[len - 3] = '\0';
    if (access(path, F_OK) == 0 || errno != ENOENT)
        return 0;
    char gname[144], dname[144];
    s_clean(gname, sizeof gname, gz);
    s_clean(dname, sizeof dname, dir);
    return fm_errmsg_set(e, -ENOENT, "%s: %s (nor without .gz) in '%s'", gname,
                         fm_strerror(-ENOENT), dname);
}

static int s_dataset_load_dir(fm_dataset_t **out, const char *dir, const char *split, float mean,
                              float std, fm_errmsg_t *e)
{
    if (!out)
        return fm_errmsg_set(e, FM_EARG, "fm_dataset_load_dir: out is NULL");
    *out = NULL;
    if (!dir || !split || !*split)
        return fm_errmsg_set(e, FM_EARG, "fm_dataset_load_dir: %s is NULL or empty",
                             dir ? "split" : "dir");
    char images[PATH_MAX], labels[PATH_MAX];
    int rc = s_pick(images, sizeof images, dir, split, "images-idx3-ubyte", e);
    if (rc)
        return rc;
    rc = s_pick(labels, sizeof labels, dir, split, "labels-idx1-ubyte", e);
    if (rc)
        return rc;
    return s_dataset_load(out, images, labels, mean, std, e);
}

fm_dataset_t *fm_dataset_load(const char *images_path, const char *labels_path, float mean,
                              float std, int *err, fm_errmsg_t *e)
{
    fm_dataset_t *ds = NULL;
    int rc = s_dataset_load(&ds, images_path, labels_path, mean, std, e);
    if (err)
        *err = rc;
    return ds;
}

fm_dataset_t *fm_dataset_load_dir(const char *dir, const char *split, float mean, float std,
                                  int *err, fm_errmsg_t *e)
{
    fm_dataset_t *ds = NULL;
    int rc = s_dataset_load_dir(&ds, dir, split, mean, std, e);
    if (err)
        *err = rc;
    return ds;
}

void fm_dataset_destroy(fm_dataset_t **p)
{
    if (!p || !*p)
        return;
    free((*p)->x);
    free((*p)->y);
    free(*p);
    *p = NULL;
}

/* ---- partitions ------------------------------------------------------------------------ */

int fm_partition_spec_parse(const char *spec, fm_partition_spec_t *out, fm_errmsg_t *e)
{
    char *end = NULL;
    errno = 0;
    if (spec && strcmp(spec, "iid") == 0) {
        *out = (fm_partition_spec_t){.kind = FM_PARTITION_IID};
        return 0;
    }
    if (spec && strncmp(spec, "dirichlet:", 10) == 0) {
        const char *s = spec + 10;
        double a = (*s && !isspace((unsigned char)*s)) ? strtod(s, &end) : NAN;
        if (!end || *end || errno == ERANGE || !isfinite(a) || !(a > 0.0))
            return fm_errmsg_set(e, FM_EARG, "ALPHA must be a positive finite number");
        *out = (fm_partition_spec_t){.kind = FM_PARTITION_DIRICHLET, .alpha = a};
        return 0;
    }
    if (spec && strncmp(spec, "shards:", 7) == 0) {
        const char *s = spec + 7;
        unsigned long long v = isdigit((unsigned char)*s) ? strtoull(s, &end, 10) : 0;
        if (!end || *end || errno == ERANGE || v == 0 || v > UINT32_MAX)
            return fm_errmsg_set(e, FM_EARG, "K must be a positive integer");
        *out = (fm_partition_spec_t){.kind = FM_PARTITION_SHARDS, .shards = (uint32_t)v};
        return 0;
    }
    return fm_errmsg_set(e, FM_EARG, "unknown (expected iid, dirichlet:ALPHA or shards:K)");
}

/* Stable counting sort of sample indices by label: the samples of class c are
 * sorted[cstart[c] .. cstart[c+1]) in increasing index order. */
static void s_sort_by_label(const uint8_t *y, uint32_t n, uint32_t *sorted,
                            uint32_t cstart[S_NCLASS + 1])
{
    uint32_t pos[S_NCLASS] = {0};
    for (uint32_t i = 0; i < n; i++)
        pos[y[i]]++;
    cstart[0] = 0;
    for (int c = 0; c < S_NCLASS; c++) {
        cstart[c + 1] = cstart[c] + pos[c];
        pos[c] = cstart[c];
    }
    for (uint32_t i = 0; i < n; i++)
        sorted[pos[y[i]]++] = i;
}

/* Shuffle each client's slice, so that its batches mix classes. */
static void s_shuffle_clients(fm_rng_t *r, fm_partition_t *p)
{
    for (uint32_t k = 0; k < p->nclients; k++)
        fm_rng_shuffle_u32(r, p->indices + p->offsets[k], p->offsets[k + 1] - p->offsets[k]);
}

/* One whole Dirichlet draw (Hsu et al. 2019): for each class, shuffle its samples into
 * perm[cstart[c]..], draw proportions p ~ Dir(alpha) over clients (normalised gammas) and
 * cut the class at its (randomly offset) rounded cumulative proportions, so the counts sum
 * to the class size.
 * owner[pos] is the client of perm[pos]; sizes[k] the client totals. */
static void s_dirichlet_draw(fm_rng_t *r, double alpha, uint32_t nclients, const uint32_t *sorted,
                             const uint32_t *cstart, uint32_t *perm, uint32_t *owner,
                             uint32_t *sizes, double *prop)
{
    memset(sizes, 0, (size_t)nclients * sizeof *sizes);
    for (int c = 0; c < S_NCLASS; c++) {
        uint32_t m = cstart[c + 1] - cstart[c];
        if (m == 0)
            continue;
        uint32_t *cp = perm + cstart[c], *co = owner + cstart[c];
        memcpy(cp, sorted + cstart[c], (size_t)m * sizeof *cp);
        fm_rng_shuffle_u32(r, cp, m);
        double mx = 0.0;
        for (uint32_t k = 0; k < nclients; k++) {
            prop[k] = fm_rng_gamma(r, alpha);
            if (prop[k] > mx)
                mx = prop[k];
        }
        if (!(mx > 0.0) || !isfinite(mx)) {
            /* All gammas underflowed (tiny alpha): the alpha -> 0 limit, one owner. */
            uint32_t k0 = (uint32_t)fm_rng_below(r, nclients);
            for (uint32_t i = 0; i < m; i++)
                co[i] = k0;
            sizes[k0] += m;
            continue;
        }
        double sum = 0.0; /* scaled by the max, so it cannot overflow */
        for (uint32_t k = 0; k < nclients; k++) {
            prop[k] /= mx;
            sum += prop[k];
        }
        /* Cut at floor(m * cumulative + u), one uniform u per class (systematic sampling):
         * the counts sum to m, and client k expects exactly m * p_k even when m is small
         * (a fixed rounding offset would always favour the same clients). */
        double cum = 0.0, u = fm_rng_uniform(r);
        uint32_t prev = 0;
        for (uint32_t k = 0; k < nclients; k++) {
            cum += prop[k];
            double cutf = floor(cum / sum * (double)m + u);
            uint32_t cut = k + 1 == nclients ? m : cutf >= (double)m ? m : (uint32_t)cutf;
            if (cut < prev)
                cut = prev;
            for (uint32_t i = prev; i < cut; i++)
                co[i] = k;
            sizes[k] += cut - prev;
            prev = cut;
        }
    }
}

/* "dirichlet:A". Re-draws (continuing the rng stream) up to S_DIRICHLET_TRIES times while
 * some client has fewer than min(S_DIRICHLET_MIN, n / nclients) samples, as FedML and
 * Flower do; if every draw falls short, the last one is kept (with a warning), never an
 * error, and no client is dropped. Each client's list is its classes in label order, then
 * shuffled. */
static int s_part_dirichlet(fm_partition_t *p, const fm_dataset_t *ds, double alpha, fm_rng_t *r,
                            const char *name, fm_errmsg_t *e)
{
    int rc = 0;
    uint32_t n = ds->n, nc = p->nclients;
    uint32_t *sorted = malloc(((size_t)n + 1) * sizeof *sorted);
    uint32_t *perm = malloc(((size_t)n + 1) * sizeof *perm);
    uint32_t *owner = malloc(((size_t)n + 1) * sizeof *owner);
    uint32_t *sizes = malloc((size_t)nc * sizeof *sizes);
    double *prop = malloc((size_t)nc * sizeof *prop);
    if (!sorted || !perm || !owner || !sizes || !prop) {
        rc = fm_errmsg_set(e, -ENOMEM, "partition '%s': out of memory", name);
        goto cleanup;
    }
    uint32_t cstart[S_NCLASS + 1];
    s_sort_by_label(ds->y, n, sorted, cstart);

    uint32_t want = n / nc < S_DIRICHLET_MIN ? n / nc : S_DIRICHLET_MIN, smallest = 0;
    int tries = 0;
    while (tries < S_DIRICHLET_TRIES) {
        tries++;
        s_dirichlet_draw(r, alpha, nc, sorted, cstart, perm, owner, sizes, prop);
        smallest = UINT32_MAX;
        for (uint32_t k = 0; k < nc; k++)
            if (sizes[k] < smallest)
                smallest = sizes[k];
        if (smallest >= want)
            break;
    }
    if (smallest < want)
        FM_LOG(LOG_WARNING,
               "partition '%s': after %d draws a client still has %u samples "
               "(wanted >= %u); keeping the last draw",
               name, tries, smallest, want);

    p->offsets[0] = 0;
    for (uint32_t k = 0; k < nc; k++)
        p->offsets[k + 1] = p->offsets[k] + sizes[k];
    memcpy(sizes, p->offsets, (size_t)nc * sizeof *sizes); /* now write cursors */
    for (uint32_t i = 0; i < n; i++)
        p->indices[sizes[owner[i]]++] = perm[i];
    s_shuffle_clients(r, p);
cleanup:
    free(sorted);
    free(perm);
    free(owner);
    free(sizes);
    free(prop);
    return rc;
}

/* "shards:K" (McMahan et al. 2017): sort by label, cut into nclients*K shards whose sizes
 * differ by at most one (the first n % nshards shards take one extra sample), shuffle the
 * shard ids and give client k the K consecutive ids from k*K; then shuffle each client. */
static int s_part_shards(fm_partition_t *p, const fm_dataset_t *ds, uint32_t kper, fm_rng_t *r,
                         const char *name, fm_errmsg_t *e)
{
    int rc = 0;
    uint32_t n = ds->n, nc = p->nclients;
    uint32_t nshards = nc * kper; /* <= n, checked by the caller */
    uint32_t base = n / nshards, rem = n % nshards;
    uint32_t *sorted = malloc(((size_t)n + 1) * sizeof *sorted);
    uint32_t *ids = malloc((size_t)nshards * sizeof *ids);
    if (!sorted || !ids) {
        rc = fm_errmsg_set(e, -ENOMEM, "partition '%s': out of memory", name);
        goto cleanup;
    }
    uint32_t cstart[S_NCLASS + 1];
    s_sort_by_label(ds->y, n, sorted, cstart);
    for (uint32_t s = 0; s < nshards; s++)
        ids[s] = s;
    fm_rng_shuffle_u32(r, ids, nshards);

    uint32_t o = 0;
    p->offsets[0] = 0;
    for (uint32_t k = 0; k < nc; k++) {
        for (uint32_t j = 0; j < kper; j++) {
            uint32_t s = ids[(size_t)k * kper + j];
            uint32_t start = s * base + (s < rem ? s : rem);
            uint32_t len = base + (s < rem ? 1u : 0u);
            memcpy(p->indices + o, sorted + start, (size_t)len * sizeof *sorted);
            o += len;
        }
        p->offsets[k + 1] = o;
    }
    s_shuffle_clients(r, p);
cleanup:
    free(sorted);
    free(ids);
    return rc;
}

static int s_partition_new(fm_partition_t **out, const fm_dataset_t *ds, const char *spec,
                           uint32_t nclients, uint64_t seed, fm_errmsg_t *e)
{
    if (!out)
        return fm_errmsg_set(e, FM_EARG, "fm_partition_new: out is NULL");
    *out = NULL;
    if (!spec)
        return fm_errmsg_set(e, FM_EARG,
                             "partition: no spec (expected iid, dirichlet:ALPHA "
                             "or shards:K)");
    char name[64];
    s_clean(name, sizeof name, spec);
    fm_partition_spec_t ps;
    fm_errmsg_t why = {{0}};
    int rc = fm_partition_spec_parse(spec, &ps, &why);
    if (rc)
        return fm_errmsg_set(e, rc, "partition '%s': %s", name, why.msg);
    uint32_t kper = ps.shards;
    if (nclients == 0)
        return fm_errmsg_set(e, FM_EARG, "partition '%s': the number of clients must be > 0",
                             name);
    if (!ds || (ds->n > 0 && !ds->y))
        return fm_errmsg_set(e, FM_EARG, "partition '%s': no dataset labels", name);
    if (ps.kind == FM_PARTITION_SHARDS && (uint64_t)nclients * kper > ds->n)
        return fm_errmsg_set(e, FM_EARG,
                             "partition '%s': %llu shards (%u clients x %u) but only %u samples",
                             name, (unsigned long long)nclients * kper, nclients, kper, ds->n);

    uint32_t n = ds->n;
    fm_rng_t r;
    fm_rng_seed(&r, seed, S_PART_STREAM);
    fm_partition_t *p = calloc(1, sizeof *p);
    if (!p)
        return fm_errmsg_set(e, -ENOMEM, "partition '%s': out of memory", name);
    p->nclients = nclients;
    p->offsets = malloc(((size_t)nclients + 1) * sizeof *p->offsets);
    p->indices = malloc(((size_t)n + 1) * sizeof *p->indices);
    if (!p->offsets || !p->indices) {
        rc = fm_errmsg_set(e, -ENOMEM, "partition '%s': out of memory for %u clients", name,
                           nclients);
        goto cleanup;
    }

    switch (ps.kind) {
    case FM_PARTITION_IID: {
        uint32_t base = n / nclients, rem = n % nclients;
        for (uint32_t i = 0; i < n; i++)
            p->indices[i] = i;
        fm_rng_shuffle_u32(&r, p->indices, n);
        for (uint32_t k = 0; k <= nclients; k++)
            p->offsets[k] = (uint32_t)((uint64_t)k * base + (k < rem ? k : rem));
        break;
    }
    case FM_PARTITION_DIRICHLET: rc = s_part_dirichlet(p, ds, ps.alpha, &r, name, e); break;
    case FM_PARTITION_SHARDS: rc = s_part_shards(p, ds, kper, &r, name, e); break;
    }
    if (rc)
        goto cleanup;
    *out = p;
    p = NULL;
cleanup:
    fm_partition_destroy(&p);
    return rc;
}

fm_partition_t *fm_partition_new(const fm_dataset_t *ds, const char *spec, uint32_t nclients,
                                 uint64_t seed, int *err, fm_errmsg_t *e)
{
    fm_partition_t *p = NULL;
    int rc = s_partition_new(&p, ds, spec, nclients, seed, e);
    if (err)
        *err = rc;
    return p;
}

void fm_partition_destroy(fm_partition_t **p)
{
    if (!p || !*p)
        return;
    free((*p)->offsets);
    free((*p)->indices);
    free(*p);
    *p = NULL;
}

/* Stream tag of the held-out split: apart from the partition's and the trainers' streams. */
#define S_TAG_HOLDOUT 0x401d0c7000000001ULL

static fm_partition_t *s_partition_alloc(uint32_t nclients, uint32_t nindices)
{
    fm_partition_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->nclients = nclients;
    p->offsets = calloc((size_t)nclients + 1, sizeof *p->offsets);
    p->indices = malloc(((size_t)nindices + 1) * sizeof *p->indices);
    if (!p->offsets || !p->indices)
        fm_partition_destroy(&p);
    return p;
}

int fm_partition_holdout(const fm_partition_t *p, double frac, uint64_t seed,
                         fm_partition_t **train, fm_partition_t **held, fm_errmsg_t *e)
{
    FM_ASSERT(p && train && held);
    *train = *held = NULL;
    if (!(frac >= 0.0 && frac <= 0.9))
        return fm_errmsg_set(e, FM_EARG, "held-out fraction %g: must be in [0, 0.9]", frac);
    uint32_t nc = p->nclients, total = p->offsets[nc];
    uint32_t maxn = 0;
    for (uint32_t k = 0; k < nc; k++)
        if (p->offsets[k + 1] - p->offsets[k] > maxn)
            maxn = p->offsets[k + 1] - p->offsets[k];
    int rc = 0;
    fm_partition_t *tr = s_partition_alloc(nc, total), *ho = s_partition_alloc(nc, total);
    uint32_t *perm = malloc(((size_t)maxn + 1) * sizeof *perm);
    uint8_t *out = malloc((size_t)maxn + 1);
    if (!tr || !ho || !perm || !out) {
        rc = fm_errmsg_set(e, -ENOMEM, "held-out split: out of memory");
        goto cleanup;
    }
    uint32_t nt = 0, nh = 0;
    for (uint32_t k = 0; k < nc; k++) {
        uint32_t n = p->offsets[k + 1] - p->offsets[k];
        const uint32_t *idx = p->indices + p->offsets[k];
        uint32_t h = (uint32_t)(frac * n + 0.5);
        if (n == 0)
            h = 0;
        else if (h > n - 1)
            h = n - 1;
        memset(out, 0, n);
        if (h > 0) {
            fm_rng_t r;
            fm_rng_seed(&r, seed ^ S_TAG_HOLDOUT, k);
            for (uint32_t i = 0; i < n; i++)
                perm[i] = i;
            fm_rng_shuffle_u32(&r, perm, n);
            for (uint32_t i = 0; i < h; i++)
                out[perm[i]] = 1;
        }
        for (uint32_t i = 0; i < n; i++) {
            if (out[i])
                ho->indices[nh++] = idx[i];
            else
                tr->indices[nt++] = idx[i];
        }
        tr->offsets[k + 1] = nt;
        ho->offsets[k + 1] = nh;
    }
    *train = tr;
    *held = ho;
    tr = ho = NULL;
cleanup:
    fm_partition_destroy(&tr);
    fm_partition_destroy(&ho);
    free(perm);
    free(out);
    return rc;
}

int fm_partition_clients(const fm_dataset_t *ds, const char *spec, uint32_t nclients,
                         uint64_t seed, double holdout, fm_partition_t **train,
                         fm_partition_t **held, fm_errmsg_t *e)
{
    FM_ASSERT(train && held);
    *train = *held = NULL;
    fm_partition_t *part = NULL;
    fm_errmsg_t why = {{0}};
    int rc = s_partition_new(&part, ds, spec, nclients, seed, &why);
    if (rc != 0)
        return fm_errmsg_set(e, rc, "partition %s: %s", spec, why.msg);
    rc = fm_partition_holdout(part, holdout, seed, train, held, &why);
    fm_partition_destroy(&part);
    if (rc != 0)
        return fm_errmsg_set(e, rc, "holdout %g: %s", holdout, why.msg);
    return 0;
}

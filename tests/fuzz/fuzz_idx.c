/* fuzz_idx: libFuzzer target of the IDX reader (shared/learn/fm_data.c, fm_dataset_load):
 * the images file (IDX3) and the labels file (IDX1), raw or gzipped.
 *
 * Input layout: a little-endian u32 L, then the images file (L bytes, or all that is left
 * when fewer remain), then the labels file (the rest). Both files are memfds, replaced per
 * input and opened by the reader through their /proc/self/fd paths, as it opens any file
 * (zlib's gzdopen on the fd: gzip and plain inputs take their real paths).
 * Properties checked (FUZZ_ASSERT):
 *   - every error is the contract's one printable line (fuzz_msg_ok), and *err agrees;
 *   - an accepted dataset has as many labels as images, every label < 10, image sizes
 *     from the header, and every pixel one of the 256 normalised values (finite).
 * With FM_FUZZ_SEEDS=1 every input must be a valid pair. */
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fm_data.h"
#include "fm_err.h"
#include "fuzz_util.h"

static fuzz_memfd_t s_img, s_lab;
static bool s_seeds;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_memfd_init(&s_img, "fuzz-images");
    fuzz_memfd_init(&s_lab, "fuzz-labels");
    s_seeds = fuzz_seeds_mode();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    uint32_t l = (uint32_t)data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 |
                 (uint32_t)data[3] << 24;
    size_t nimg = l < size - 4 ? l : size - 4;
    fuzz_memfd_set(&s_img, data + 4, nimg);
    fuzz_memfd_set(&s_lab, data + 4 + nimg, size - 4 - nimg);

    fm_errmsg_t e = {{0}};
    int err = 1;
    fm_dataset_t *ds = fm_dataset_load(s_img.path, s_lab.path, FM_FASHION_MEAN, FM_FASHION_STD,
                                       &err, &e);
    if (!ds) {
        FUZZ_ASSERT(err != 0);
        fuzz_msg_ok(err, &e);
        fuzz_seed_valid(s_seeds, err, &e, "IDX pair");
        return 0;
    }
    FUZZ_ASSERT(err == 0);
    FUZZ_ASSERT(ds->n > 0 && ds->rows > 0 && ds->cols > 0);
    size_t npix = (size_t)ds->n * ds->rows * ds->cols;
    const float lo = (0.0f - FM_FASHION_MEAN) / FM_FASHION_STD;
    const float hi = (1.0f - FM_FASHION_MEAN) / FM_FASHION_STD;
    for (size_t i = 0; i < npix; i++)
        FUZZ_ASSERT(isfinite(ds->x[i]) && ds->x[i] >= lo && ds->x[i] <= hi);
    for (uint32_t i = 0; i < ds->n; i++)
        FUZZ_ASSERT(ds->y[i] < 10);
    fm_dataset_destroy(&ds);
    FUZZ_ASSERT(ds == NULL);
    return 0;
}

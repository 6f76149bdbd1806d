/* fuzz_ckpt: libFuzzer target of the checkpoint record decoder (shared/svc/fm_ckpt.c,
 * fm_ckpt_record_decode: what every load, listing and --verify runs on each stored record,
 * without LMDB).
 *
 * Input layout: one flags byte, the LMDB key (the version, 8 bytes big-endian), then the
 * stored value (the record) as the store holds it. Flags bit 0: the harness rewrites the
 * record's CRC (zlib crc32 of every byte before the last 4) before decoding, so that
 * mutated headers get past the CRC check to the checks behind it (sizes, version, model
 * name); the seeds set it, and a mutation of the flag tests the CRC check itself. Inputs
 * under 9 bytes are ignored.
 * Properties checked (FUZZ_ASSERT):
 *   - every error is the contract's one printable line (fuzz_msg_ok);
 *   - info is always reset to the key's version;
 *   - a valid record: nparams > 0, a NUL-terminated model name, size 256 + 4 x (nparams +
 *     nopt) + 4; decoding it again with buffers of the record's sizes copies exactly the
 *     stored floats, and with a wrong nparams or nopt fails FM_ESHAPE and copies nothing.
 * With FM_FUZZ_SEEDS=1 every input must be a valid record. */
#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "fm_ckpt.h"
#include "fm_err.h"
#include "fuzz_util.h"

static bool s_seeds;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    s_seeds = fuzz_seeds_mode();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 9)
        return 0;
    uint64_t version = 0;
    for (int i = 1; i < 9; i++)
        version = version << 8 | data[i];
    size_t len = size - 9;
    uint8_t *rec = malloc(len ? len : 1); /* exactly the record: ASan sees any overread */
    FUZZ_ASSERT(rec);
    memcpy(rec, data + 9, len);
    if ((data[0] & 1) && len >= 4) {
        uint32_t crc = (uint32_t)crc32_z(0L, rec, len - 4);
        for (int i = 0; i < 4; i++)
            rec[len - 4 + (size_t)i] = (uint8_t)(crc >> (8 * i));
    }

    fm_ckpt_info_t info;
    fm_errmsg_t e = {{0}};
    memset(&info, 0x5a, sizeof info);
    int rc = fm_ckpt_record_decode(rec, len, version, "fuzz", &info, NULL, 0, NULL, 0, &e);
    fuzz_msg_ok(rc, &e);
    fuzz_seed_valid(s_seeds, rc, &e, "checkpoint record");
    FUZZ_ASSERT(info.version == version);
    if (rc != 0) {
        free(rec);
        return 0;
    }
    FUZZ_ASSERT(info.nparams > 0);
    FUZZ_ASSERT(memchr(info.model, 0, sizeof info.model) != NULL);
    FUZZ_ASSERT(info.nparams <= len / 4 && info.nopt <= len / 4);
    FUZZ_ASSERT(len == FM_CKPT_HEADER_BYTES + 4 * (info.nparams + info.nopt) + 4);

    size_t np = (size_t)info.nparams, no = (size_t)info.nopt;
    float *params = malloc(4 * (np + 1)), *opt = malloc(4 * (no + 1));
    FUZZ_ASSERT(params && opt);
    fm_ckpt_info_t again;
    fm_errmsg_t e2 = {{0}};
    FUZZ_ASSERT(
        fm_ckpt_record_decode(rec, len, version, "fuzz", &again, params, np, opt, no, &e2) == 0);
    FUZZ_ASSERT(memcmp(&again, &info, offsetof(fm_ckpt_info_t, score)) == 0);
    FUZZ_ASSERT(memcmp(params, rec + FM_CKPT_HEADER_BYTES, 4 * np) == 0);
    FUZZ_ASSERT(no == 0 || memcmp(opt, rec + FM_CKPT_HEADER_BYTES + 4 * np, 4 * no) == 0);

    /* the caller's sizes are checked before anything is copied */
    memset(params, 0x5a, 4 * (np + 1));
    fm_errmsg_t e3 = {{0}};
    int rc3 = fm_ckpt_record_decode(rec, len, version, "fuzz", &again, params, np + 1, NULL, 0,
                                    &e3);
    fuzz_msg_ok(rc3, &e3);
    FUZZ_ASSERT(rc3 == FM_ESHAPE);
    for (size_t k = 0; k < 4 * (np + 1); k++)
        FUZZ_ASSERT(((const unsigned char *)params)[k] == 0x5a);
    fm_errmsg_t e4 = {{0}};
    int rc4 = fm_ckpt_record_decode(rec, len, version, "fuzz", &again, NULL, 0, opt, no + 1, &e4);
    fuzz_msg_ok(rc4, &e4);
    FUZZ_ASSERT(rc4 == FM_ESHAPE);
    free(params);
    free(opt);
    free(rec);
    return 0;
}

/* fuzz_cfg: libFuzzer target of the config reader (shared/svc/fm_cfg.c): one input = the
 * bytes of a config file, read by fm_cfg_parse (what fm_cfg_load does after reading the
 * file, and what a checkpoint's stored config goes through).
 *
 * The seeds are whole configs (every key of every section), so mutations reach the line
 * reader, the section and key lookups, every value parser and the string checks the table
 * calls (partition, endpoints, client range, metrics address), and the cross-key checks.
 * Properties checked (FUZZ_ASSERT):
 *   - every error is the contract's one printable line (fuzz_msg_ok);
 *   - on error the output struct is untouched;
 *   - an accepted config passes fm_cfg_check, and its dump (fm_cfg_text) parses back to an
 *     equal config with the same digest and no diff: what `fedmq config` prints and what a
 *     checkpoint stores can always be read again.
 * With FM_FUZZ_SEEDS=1 every input must be a valid config. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fm_cfg.h"
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
    fm_config_t c, before, again;
    fm_errmsg_t e = {{0}};
    memset(&c, 0x5a, sizeof c);
    before = c;
    int rc = fm_cfg_parse(&c, "fuzz.conf", (const char *)data, size, &e);
    fuzz_msg_ok(rc, &e);
    fuzz_seed_valid(s_seeds, rc, &e, "config");
    if (rc != 0) {
        FUZZ_ASSERT(memcmp(&c, &before, sizeof c) == 0);
        return 0;
    }
    fm_errmsg_t e2 = {{0}};
    FUZZ_ASSERT(fm_cfg_check(&c, &e2) == 0);

    char *text = NULL, *diff = NULL;
    size_t len = 0;
    FUZZ_ASSERT(fm_cfg_text(&c, &text, &len) == 0);
    fm_errmsg_t e3 = {{0}};
    int rc2 = fm_cfg_parse(&again, "dump", text, len, &e3);
    if (rc2 != 0)
        fprintf(stderr, "fuzz: the dump of an accepted config does not load: %s\n", e3.msg);
    FUZZ_ASSERT(rc2 == 0);
    FUZZ_ASSERT(fm_cfg_equal(&c, &again));
    uint8_t d1[FM_CFG_DIGEST_BYTES], d2[FM_CFG_DIGEST_BYTES];
    fm_cfg_digest(&c, d1);
    fm_cfg_digest(&again, d2);
    FUZZ_ASSERT(memcmp(d1, d2, sizeof d1) == 0);
    FUZZ_ASSERT(fm_cfg_diff(&c, &again, &diff) == 0);
    FUZZ_ASSERT(diff && diff[0] == '\0');
    free(diff);
    free(text);
    return 0;
}

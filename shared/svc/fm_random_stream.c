#include "fm_random_stream.h"

#include <errno.h>
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>

#include "fm_random.h"

#define S_REKEY_EVERY (1ull << 32) /* requests per key */

struct fm_random_stream {
    unsigned char key[crypto_stream_chacha20_ietf_KEYBYTES];
    uint64_t requests; /* under this key: the nonce */
};

static void s_rekey(fm_random_stream_t *s)
{
    fm_random_bytes(NULL, s->key, sizeof s->key);
    s->requests = 0;
}

fm_random_stream_t *fm_random_stream_new(int *err)
{
    if (fm_random_init() != 0) {
        if (err)
            *err = -EIO;
        return NULL;
    }
    fm_random_stream_t *s = calloc(1, sizeof *s);
    if (!s) {
        if (err)
            *err = -ENOMEM;
        return NULL;
    }
    s_rekey(s);
    return s;
}

void fm_random_stream_destroy(fm_random_stream_t **p)
{
    if (!p || !*p)
        return;
    sodium_memzero(*p, sizeof **p);
    free(*p);
    *p = NULL;
}

void fm_random_stream_bytes(void *ctx, void *buf, size_t len)
{
    fm_random_stream_t *s = ctx;
    unsigned char *p = buf;
    const size_t max = (size_t)1 << 30; /* < 2^32 blocks of 64 bytes under one nonce */
    while (len > 0) {
        size_t m = len < max ? len : max;
        if (s->requests == S_REKEY_EVERY)
            s_rekey(s);
        unsigned char nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {0};
        for (int i = 0; i < 8; i++)
            nonce[i] = (unsigned char)(s->requests >> (8 * i));
        s->requests++;
        crypto_stream_chacha20_ietf(p, m, nonce, s->key);
        p += m;
        len -= m;
    }
}

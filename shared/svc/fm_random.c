#include "fm_random.h"

#include <sodium.h>

int fm_random_init(void) { return sodium_init() < 0 ? -1 : 0; }

void fm_random_bytes(void *ctx, void *buf, size_t len)
{
    (void)ctx;
    randombytes_buf(buf, len);
}

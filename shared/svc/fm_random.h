/* fm_random: cryptographically secure random bytes for privacy noise (fm_dp), from
 * libsodium's randombytes_buf (the kernel's getrandom underneath). The noise that protects
 * a client must not be predictable from earlier outputs or a seed an attacker can guess, so
 * it never comes from fm_rng (xoshiro: reproducible by design).
 *
 * Thread-safe after fm_random_init. */
#ifndef FM_RANDOM_H
#define FM_RANDOM_H

#include <stddef.h>

/* Initialise libsodium (idempotent, safe to call from several places). 0, or -1 when
 * libsodium cannot start (no random source): the caller must not produce privacy noise. */
int fm_random_init(void);

/* Fill buf[0..len) with random bytes; `ctx` is ignored (the signature of fm_dp_bytes_fn).
 * Requires fm_random_init() == 0 first. Cannot fail. */
void fm_random_bytes(void *ctx, void *buf, size_t len);

#endif

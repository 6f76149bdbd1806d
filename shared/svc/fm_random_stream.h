/* fm_random_stream: a fast cryptographically secure byte stream for privacy noise that needs
 * many bytes (DP-SGD draws two uniforms per normal, a normal per parameter per step: a cnn
 * step takes 19 MB). libsodium's randombytes_buf (fm_random; Debian's 1.0.18) makes a
 * getrandom system call per 256 bytes, about 170 MB/s measured here; this stream is the
 * ChaCha20 keystream (libsodium's crypto_stream_chacha20_ietf) under a 256-bit key drawn
 * from fm_random, with a fresh 96-bit nonce (a counter) per request (libsodium's own
 * userspace generator is built the same way). The key is drawn again every 2^32 requests.
 *
 * One stream per thread: not thread-safe (give each worker its own). */
#ifndef FM_RANDOM_STREAM_H
#define FM_RANDOM_STREAM_H

#include <stddef.h>

typedef struct fm_random_stream fm_random_stream_t;

/* A stream keyed from the operating system's CSPRNG (calls fm_random_init). NULL and *err =
 * -EIO (libsodium cannot start: no privacy noise may be drawn) or -ENOMEM. Caller owns it:
 * fm_random_stream_destroy (which wipes the key). */
fm_random_stream_t *fm_random_stream_new(int *err);

/* Wipe and free; *p = NULL; idempotent. */
void fm_random_stream_destroy(fm_random_stream_t **p);

/* Fill buf[0..len) with the stream's next bytes; ctx is the stream (the signature of
 * fm_dp_bytes_fn / fm_dpsgd_bytes_fn). Cannot fail. */
void fm_random_stream_bytes(void *ctx, void *buf, size_t len);

#endif

/* fm_sa_crypto: the cryptographic building blocks of cohort secure aggregation, all from
 * libsodium (nothing hand-rolled; docs/SECAGG.md):
 *   - per-cohort keys: a mask-key secret r_s (a random ed25519 scalar, so it can be
 *     Shamir-shared over the scalar field) from which the crypto_kx key pair (s_pk, s_sk) is
 *     derived (crypto_kx_seed_keypair: anyone holding r_s re-derives s_sk); a crypto_box key
 *     pair (c_pk, c_sk) for the share boxes; the self-mask seed b (a random scalar);
 *   - the pairwise seed s_uv of members u < v: crypto_kx session keys with u the client and
 *     v the server (the client's tx = the server's rx: X25519 then BLAKE2b over both public
 *     keys, so the seed is bound to the pair);
 *   - the mask PRG: ChaCha20 (crypto_stream_chacha20, 64-bit nonce, 64-bit block counter
 *     from 0) keyed by a 32-byte seed, the nonce the cohort id as 8 little-endian bytes; word
 *     i of the mask is keystream bytes 4i..4i+3 read little-endian;
 *   - share boxes: crypto_box_easy with a random 24-byte nonce; the plaintext names sender,
 *     recipient, cohort and phase and is checked on open;
 *   - Shamir t-of-K over the ed25519 scalar field Z_L (crypto_core_ed25519_scalar_*): shares
 *     are f(x) at x = 1..K of a random polynomial of degree t-1 with f(0) = secret.
 * Secrets are wiped with sodium_memzero by the functions that make temporaries; the caller
 * wipes its own (fm_sa_keys_wipe, fm_sa_wipe).
 *
 * fm_sa_crypto_init() must have returned 0 before any other function. Thread-safe after it
 * (no state). */
#ifndef FM_SA_CRYPTO_H
#define FM_SA_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#include "fm_err.h"
#include "fm_sa_msg.h"

/* Initialise libsodium (idempotent). 0, or FM_ECRYPTO when it cannot start (no random
 * source): then no cohort may run. */
int fm_sa_crypto_init(void);

/* Overwrite n bytes at p with zeros in a way the compiler cannot drop (sodium_memzero). */
void fm_sa_wipe(void *p, size_t n);

/* One member's secrets and public keys for one cohort (never reused in another). */
typedef struct {
    uint8_t r_s[FM_SA_KEY_BYTES]; /* scalar < L; Shamir-shared; s key pair derived from it */
    uint8_t s_pk[FM_SA_KEY_BYTES], s_sk[FM_SA_KEY_BYTES];
    uint8_t c_pk[FM_SA_KEY_BYTES], c_sk[FM_SA_KEY_BYTES];
    uint8_t b[FM_SA_KEY_BYTES]; /* self-mask seed, scalar < L; Shamir-shared */
} fm_sa_keys_t;

/* Fresh random keys into *k. Cannot fail once initialised. */
void fm_sa_keys_new(fm_sa_keys_t *k);

/* Wipe every byte of *k. */
void fm_sa_keys_wipe(fm_sa_keys_t *k);

/* The crypto_kx key pair of the mask-key secret r_s (crypto_kx_seed_keypair): what the
 * member computed, and what the aggregator re-derives for a dropped member. 0, or FM_EARG
 * when r_s is not a canonical scalar (>= L). */
int fm_sa_mask_keypair(uint8_t s_pk[FM_SA_KEY_BYTES], uint8_t s_sk[FM_SA_KEY_BYTES],
                       const uint8_t r_s[FM_SA_KEY_BYTES]);

/* The pairwise seed of members `self` and `peer` (self != peer), computed by `self` from
 * its own key pair and the peer's public key: the lower index is the crypto_kx client, the
 * seed the client's tx (= the server's rx), so both ends get the same 32 bytes. 0, or
 * FM_ECRYPTO when peer_pk is invalid (crypto_kx refuses it; seed zeroed), FM_EARG when
 * self == peer. */
int fm_sa_pair_seed(uint8_t seed[FM_SA_KEY_BYTES], uint32_t self,
                    const uint8_t self_pk[FM_SA_KEY_BYTES],
                    const uint8_t self_sk[FM_SA_KEY_BYTES], uint32_t peer,
                    const uint8_t peer_pk[FM_SA_KEY_BYTES]);

/* The mask sign of pair (self, peer) in self's vector: +1 if self < peer, else -1. The
 * aggregator uses it for a survivor u and a dropped v as fm_sa_pair_sign(u, v). */
int fm_sa_pair_sign(uint32_t self, uint32_t peer);

/* The PRG key of the self-mask seed b: BLAKE2b-256 of b keyed with a fixed context string
 * (so it differs from every pairwise seed). */
void fm_sa_self_key(uint8_t key[FM_SA_KEY_BYTES], const uint8_t b[FM_SA_KEY_BYTES]);

/* v[i] += sign * w[i] mod 2^32 for i < m, where w[i] is ChaCha20 keystream word i for
 * (key, nonce = cohort as 8 little-endian bytes); sign is +1 or -1 (else FM_EARG, v
 * unchanged). The keystream is made in 4 KiB chunks on the stack (no allocation) and
 * wiped. 0 or FM_EARG. */
int fm_sa_prg_add(uint32_t *v, size_t m, const uint8_t key[FM_SA_KEY_BYTES], uint64_t cohort,
                  int sign);

/* What a share box carries. */
typedef struct {
    uint32_t from, to;
    uint64_t cohort;
    uint32_t phase;                    /* FM_SA_MSG_SHARES */
    uint8_t share_rs[FM_SA_KEY_BYTES]; /* [r_s,from] at x = to */
    uint8_t share_b[FM_SA_KEY_BYTES];  /* [b_from] at x = to */
} fm_sa_plain_t;

/* Seal *p for the recipient: box = random nonce || crypto_box_easy(plaintext) under
 * (to_c_pk, from_c_sk). The plaintext temporary is wiped. 0, or FM_ECRYPTO when to_c_pk is
 * invalid (crypto_box refuses it). */
int fm_sa_box_seal(uint8_t box[FM_SA_BOX_BYTES], const fm_sa_plain_t *p,
                   const uint8_t to_c_pk[FM_SA_KEY_BYTES],
                   const uint8_t from_c_sk[FM_SA_KEY_BYTES]);

/* Open a box sent by the member with from_c_pk to the holder of to_c_sk and check that it
 * names (from, to, cohort, FM_SA_MSG_SHARES). 0 and *p filled; FM_ECRYPTO when it does not
 * open; FM_EFORMAT when it opens but names other ids, another cohort or another phase (*p
 * zeroed on both). One line in `e` (may be NULL). */
int fm_sa_box_open(fm_sa_plain_t *p, const uint8_t box[FM_SA_BOX_BYTES],
                   const uint8_t from_c_pk[FM_SA_KEY_BYTES],
                   const uint8_t to_c_sk[FM_SA_KEY_BYTES], uint32_t from, uint32_t to,
                   uint64_t cohort, fm_errmsg_t *e);

/* 1 if s (32 bytes, little-endian) is a canonical scalar (< L), else 0. */
int fm_sa_scalar_ok(const uint8_t s[FM_SA_KEY_BYTES]);

/* Shamir split of `secret` (a canonical scalar) into shares[0..k) with shares[x-1] = f(x),
 * f of degree t-1 with random coefficients and f(0) = secret; 1 <= t <= k <= FM_SA_MAX_K.
 * The coefficients are wiped. 0, or FM_EARG (secret not canonical, t or k out of range;
 * shares untouched). */
int fm_sa_shamir_split(uint8_t (*shares)[FM_SA_KEY_BYTES], const uint8_t secret[FM_SA_KEY_BYTES],
                       uint32_t t, uint32_t k);

/* Lagrange interpolation at 0 of the n points (xs[i], ys[i]) into secret: the secret when
 * n >= t shares of one split are given, an unrelated scalar when fewer. xs must be distinct
 * and in 1..FM_SA_MAX_K, ys canonical. 0, or FM_EARG (n == 0, an x repeated or out of
 * range, a y not canonical; secret zeroed). */
int fm_sa_shamir_combine(uint8_t secret[FM_SA_KEY_BYTES], const uint32_t *xs,
                         const uint8_t (*ys)[FM_SA_KEY_BYTES], uint32_t n);

#endif

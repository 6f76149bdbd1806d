#include "fm_sa_crypto.h"

#include <string.h>

#include "fm_le.h"

#include <sodium.h>

_Static_assert(FM_SA_KEY_BYTES == crypto_kx_PUBLICKEYBYTES, "kx public key");
_Static_assert(FM_SA_KEY_BYTES == crypto_kx_SECRETKEYBYTES, "kx secret key");
_Static_assert(FM_SA_KEY_BYTES == crypto_kx_SEEDBYTES, "kx seed");
_Static_assert(FM_SA_KEY_BYTES == crypto_kx_SESSIONKEYBYTES, "kx session key");
_Static_assert(FM_SA_KEY_BYTES == crypto_box_PUBLICKEYBYTES, "box public key");
_Static_assert(FM_SA_KEY_BYTES == crypto_box_SECRETKEYBYTES, "box secret key");
_Static_assert(FM_SA_KEY_BYTES == crypto_core_ed25519_SCALARBYTES, "scalar");
_Static_assert(FM_SA_KEY_BYTES == crypto_stream_chacha20_KEYBYTES, "chacha20 key");
_Static_assert(8 == crypto_stream_chacha20_NONCEBYTES, "chacha20 nonce");
_Static_assert(FM_SA_BOX_BYTES == crypto_box_NONCEBYTES + crypto_box_MACBYTES + FM_SA_BOX_PLAIN,
               "box size");
_Static_assert(FM_SA_BOX_PLAIN == 4 + 4 + 8 + 4 + 2 * FM_SA_KEY_BYTES, "plaintext size");

/* The key of BLAKE2b for the self-mask PRG key (domain separation). */
static const char S_SELF_CTX[] = "fedmq secagg self-mask v1";
#define S_CHUNK 4096 /* bytes of keystream per call (64 ChaCha20 blocks) */

int fm_sa_crypto_init(void) { return sodium_init() < 0 ? FM_ECRYPTO : 0; }

void fm_sa_wipe(void *p, size_t n) { sodium_memzero(p, n); }

/* The scalar of a small integer x. */
static void s_scalar_of(uint8_t out[FM_SA_KEY_BYTES], uint32_t x)
{
    memset(out, 0, FM_SA_KEY_BYTES);
    fm_le_put32(out, x);
}

int fm_sa_scalar_ok(const uint8_t s[FM_SA_KEY_BYTES])
{
    uint8_t wide[crypto_core_ed25519_NONREDUCEDSCALARBYTES] = {0}, red[FM_SA_KEY_BYTES];
    memcpy(wide, s, FM_SA_KEY_BYTES);
    crypto_core_ed25519_scalar_reduce(red, wide);
    int ok = sodium_memcmp(red, s, FM_SA_KEY_BYTES) == 0;
    sodium_memzero(wide, sizeof wide);
    sodium_memzero(red, sizeof red);
    return ok;
}

void fm_sa_keys_new(fm_sa_keys_t *k)
{
    crypto_core_ed25519_scalar_random(k->r_s);
    crypto_kx_seed_keypair(k->s_pk, k->s_sk, k->r_s);
    crypto_box_keypair(k->c_pk, k->c_sk);
    crypto_core_ed25519_scalar_random(k->b);
}

void fm_sa_keys_wipe(fm_sa_keys_t *k) { sodium_memzero(k, sizeof *k); }

int fm_sa_mask_keypair(uint8_t s_pk[FM_SA_KEY_BYTES], uint8_t s_sk[FM_SA_KEY_BYTES],
                       const uint8_t r_s[FM_SA_KEY_BYTES])
{
    if (!fm_sa_scalar_ok(r_s))
        return FM_EARG;
    return crypto_kx_seed_keypair(s_pk, s_sk, r_s) == 0 ? 0 : FM_ECRYPTO;
}

int fm_sa_pair_seed(uint8_t seed[FM_SA_KEY_BYTES], uint32_t self,
                    const uint8_t self_pk[FM_SA_KEY_BYTES],
                    const uint8_t self_sk[FM_SA_KEY_BYTES], uint32_t peer,
                    const uint8_t peer_pk[FM_SA_KEY_BYTES])
{
    uint8_t rx[FM_SA_KEY_BYTES], tx[FM_SA_KEY_BYTES];
    int rc;
    if (self == peer)
        return FM_EARG;
    if (self < peer) /* client: its tx is the server's rx */
        rc = crypto_kx_client_session_keys(rx, tx, self_pk, self_sk, peer_pk);
    else
        rc = crypto_kx_server_session_keys(rx, tx, self_pk, self_sk, peer_pk);
    if (rc != 0) {
        sodium_memzero(seed, FM_SA_KEY_BYTES);
        rc = FM_ECRYPTO;
    } else {
        memcpy(seed, self < peer ? tx : rx, FM_SA_KEY_BYTES);
    }
    sodium_memzero(rx, sizeof rx);
    sodium_memzero(tx, sizeof tx);
    return rc;
}

int fm_sa_pair_sign(uint32_t self, uint32_t peer) { return self < peer ? 1 : -1; }

void fm_sa_self_key(uint8_t key[FM_SA_KEY_BYTES], const uint8_t b[FM_SA_KEY_BYTES])
{
    crypto_generichash(key, FM_SA_KEY_BYTES, b, FM_SA_KEY_BYTES, (const uint8_t *)S_SELF_CTX,
                       sizeof S_SELF_CTX - 1);
}

int fm_sa_prg_add(uint32_t *v, size_t m, const uint8_t key[FM_SA_KEY_BYTES], uint64_t cohort,
                  int sign)
{
    static const uint8_t zero[S_CHUNK]; /* const: the plaintext of the keystream */
    uint8_t ks[S_CHUNK], nonce[8];
    if (sign != 1 && sign != -1)
        return FM_EARG;
    fm_le_put64(nonce, cohort);
    uint64_t ic = 0; /* ChaCha20 block counter */
    for (size_t done = 0; done < m;) {
        size_t words = m - done < S_CHUNK / 4 ? m - done : S_CHUNK / 4;
        crypto_stream_chacha20_xor_ic(ks, zero, words * 4, nonce, ic, key);
        if (sign > 0)
            for (size_t i = 0; i < words; i++)
                v[done + i] += fm_le_get32(ks + 4 * i);
        else
            for (size_t i = 0; i < words; i++)
                v[done + i] -= fm_le_get32(ks + 4 * i);
        done += words;
        ic += S_CHUNK / 64;
    }
    sodium_memzero(ks, sizeof ks);
    return 0;
}

static void s_plain_pack(uint8_t out[FM_SA_BOX_PLAIN], const fm_sa_plain_t *p)
{
    fm_le_put32(out, p->from);
    fm_le_put32(out + 4, p->to);
    fm_le_put64(out + 8, p->cohort);
    fm_le_put32(out + 16, p->phase);
    memcpy(out + 20, p->share_rs, FM_SA_KEY_BYTES);
    memcpy(out + 20 + FM_SA_KEY_BYTES, p->share_b, FM_SA_KEY_BYTES);
}

int fm_sa_box_seal(uint8_t box[FM_SA_BOX_BYTES], const fm_sa_plain_t *p,
                   const uint8_t to_c_pk[FM_SA_KEY_BYTES],
                   const uint8_t from_c_sk[FM_SA_KEY_BYTES])
{
    uint8_t plain[FM_SA_BOX_PLAIN];
    s_plain_pack(plain, p);
    randombytes_buf(box, crypto_box_NONCEBYTES);
    int rc = crypto_box_easy(box + crypto_box_NONCEBYTES, plain, sizeof plain, box, to_c_pk,
                             from_c_sk);
    sodium_memzero(plain, sizeof plain);
    return rc == 0 ? 0 : FM_ECRYPTO;
}

int fm_sa_box_open(fm_sa_plain_t *p, const uint8_t box[FM_SA_BOX_BYTES],
                   const uint8_t from_c_pk[FM_SA_KEY_BYTES],
                   const uint8_t to_c_sk[FM_SA_KEY_BYTES], uint32_t from, uint32_t to,
                   uint64_t cohort, fm_errmsg_t *e)
{
    uint8_t plain[FM_SA_BOX_PLAIN];
    int rc = 0;
    memset(p, 0, sizeof *p);
    if (crypto_box_open_easy(plain, box + crypto_box_NONCEBYTES,
                             FM_SA_BOX_BYTES - crypto_box_NONCEBYTES, box, from_c_pk,
                             to_c_sk) != 0) {
        rc = fm_errmsg_set(e, FM_ECRYPTO, "share box from member %u to %u does not open", from,
                           to);
        goto cleanup;
    }
    p->from = fm_le_get32(plain);
    p->to = fm_le_get32(plain + 4);
    p->cohort = fm_le_get64(plain + 8);
    p->phase = fm_le_get32(plain + 16);
    if (p->from != from || p->to != to || p->cohort != cohort || p->phase != FM_SA_MSG_SHARES) {
        rc = fm_errmsg_set(e, FM_EFORMAT,
                           "share box from member %u to %u names from %u, to %u, cohort "
                           "%016llx, phase %u (expected cohort %016llx, phase %d)",
                           from, to, p->from, p->to, (unsigned long long)p->cohort, p->phase,
                           (unsigned long long)cohort, FM_SA_MSG_SHARES);
        goto cleanup;
    }
    memcpy(p->share_rs, plain + 20, FM_SA_KEY_BYTES);
    memcpy(p->share_b, plain + 20 + FM_SA_KEY_BYTES, FM_SA_KEY_BYTES);
cleanup:
    if (rc != 0)
        sodium_memzero(p, sizeof *p);
    sodium_memzero(plain, sizeof plain);
    return rc;
}

int fm_sa_shamir_split(uint8_t (*shares)[FM_SA_KEY_BYTES], const uint8_t secret[FM_SA_KEY_BYTES],
                       uint32_t t, uint32_t k)
{
    uint8_t coef[FM_SA_MAX_K][FM_SA_KEY_BYTES]; /* a_1..a_{t-1}; a_0 = secret */
    uint8_t x[FM_SA_KEY_BYTES], y[FM_SA_KEY_BYTES];
    if (t < 1 || t > k || k > FM_SA_MAX_K || !fm_sa_scalar_ok(secret))
        return FM_EARG;
    for (uint32_t j = 1; j < t; j++)
        crypto_core_ed25519_scalar_random(coef[j]);
    for (uint32_t xi = 1; xi <= k; xi++) {
        s_scalar_of(x, xi);
        /* Horner: y = (...(a_{t-1} x + a_{t-2}) x + ...) x + a_0 */
        if (t == 1) {
            memcpy(y, secret, FM_SA_KEY_BYTES);
        } else {
            memcpy(y, coef[t - 1], FM_SA_KEY_BYTES);
            for (uint32_t j = t - 1; j-- > 0;) {
                crypto_core_ed25519_scalar_mul(y, y, x);
                crypto_core_ed25519_scalar_add(y, y, j == 0 ? secret : coef[j]);
            }
        }
        memcpy(shares[xi - 1], y, FM_SA_KEY_BYTES);
    }
    sodium_memzero(coef, sizeof coef[0] * t);
    sodium_memzero(y, sizeof y);
    return 0;
}

int fm_sa_shamir_combine(uint8_t secret[FM_SA_KEY_BYTES], const uint32_t *xs,
                         const uint8_t (*ys)[FM_SA_KEY_BYTES], uint32_t n)
{
    uint8_t num[FM_SA_KEY_BYTES], den[FM_SA_KEY_BYTES], xi[FM_SA_KEY_BYTES], xj[FM_SA_KEY_BYTES],
        d[FM_SA_KEY_BYTES], acc[FM_SA_KEY_BYTES] = {0};
    int rc = 0;
    memset(secret, 0, FM_SA_KEY_BYTES);
    if (n == 0 || n > FM_SA_MAX_K)
        return FM_EARG;
    for (uint32_t i = 0; i < n; i++) {
        if (xs[i] < 1 || xs[i] > FM_SA_MAX_K || !fm_sa_scalar_ok(ys[i]))
            return FM_EARG;
        for (uint32_t j = 0; j < i; j++)
            if (xs[j] == xs[i])
                return FM_EARG;
    }
    /* secret = sum_i y_i prod_{j != i} x_j / (x_j - x_i) */
    for (uint32_t i = 0; i < n; i++) {
        s_scalar_of(num, 1);
        s_scalar_of(den, 1);
        s_scalar_of(xi, xs[i]);
        for (uint32_t j = 0; j < n; j++) {
            if (j == i)
                continue;
            s_scalar_of(xj, xs[j]);
            crypto_core_ed25519_scalar_mul(num, num, xj);
            crypto_core_ed25519_scalar_sub(d, xj, xi);
            crypto_core_ed25519_scalar_mul(den, den, d);
        }
        if (crypto_core_ed25519_scalar_invert(den, den) != 0) { /* cannot: xs distinct */
            rc = FM_EARG;
            goto cleanup;
        }
        crypto_core_ed25519_scalar_mul(num, num, den);
        crypto_core_ed25519_scalar_mul(num, num, ys[i]);
        crypto_core_ed25519_scalar_add(acc, acc, num);
    }
    memcpy(secret, acc, FM_SA_KEY_BYTES);
cleanup:
    sodium_memzero(num, sizeof num);
    sodium_memzero(acc, sizeof acc);
    return rc;
}

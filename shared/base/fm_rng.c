#include "fm_rng.h"

#include <math.h>

static uint64_t s_splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t s_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void fm_rng_seed(fm_rng_t *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed ^ s_splitmix(&(uint64_t){stream * 0xD1B54A32D192ED03ull + 1});
    for (int i = 0; i < 4; i++)
        r->s[i] = s_splitmix(&x);
}

uint64_t fm_rng_u64(fm_rng_t *r)
{
    uint64_t *s = r->s;
    uint64_t result = s_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s_rotl(s[3], 45);
    return result;
}

uint64_t fm_rng_below(fm_rng_t *r, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do
        x = fm_rng_u64(r);
    while (x >= limit);
    return x % n;
}

double fm_rng_uniform(fm_rng_t *r) { return (double)(fm_rng_u64(r) >> 11) * 0x1.0p-53; }

double fm_rng_normal(fm_rng_t *r)
{
    double u1 = 1.0 - fm_rng_uniform(r); /* (0, 1] so log is finite */
    double u2 = fm_rng_uniform(r);
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

double fm_rng_gamma(fm_rng_t *r, double shape)
{
    if (shape < 1.0) {
        double u = 1.0 - fm_rng_uniform(r);
        return fm_rng_gamma(r, shape + 1.0) * pow(u, 1.0 / shape);
    }
    double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = fm_rng_normal(r);
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        double u = fm_rng_uniform(r);
        if (u < 1.0 - 0.0331 * x * x * x * x)
            return d * v;
        if (log(u) < 0.5 * x * x + d * (1.0 - v + log(v)))
            return d * v;
    }
}

void fm_rng_shuffle_u32(fm_rng_t *r, uint32_t *a, uint32_t n)
{
    for (uint32_t i = n; i > 1; i--) {
        uint32_t j = (uint32_t)fm_rng_below(r, i);
        uint32_t t = a[i - 1];
        a[i - 1] = a[j];
        a[j] = t;
    }
}

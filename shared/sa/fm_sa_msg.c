#include "fm_sa_msg.h"

#include "fm_sa_codec.h"

static const char *const S_REASON[FM_SA_R_NREASONS] = {
    [FM_SA_OK] = "ok",           [FM_SA_R_COHORT] = "cohort",
    [FM_SA_R_PHASE] = "phase",   [FM_SA_R_REPLAY] = "replay",
    [FM_SA_R_SENDER] = "sender", [FM_SA_R_FORMAT] = "format",
    [FM_SA_R_KEY] = "key",       [FM_SA_R_CRYPTO] = "crypto",
    [FM_SA_R_IDS] = "ids",       [FM_SA_R_THRESHOLD] = "threshold",
    [FM_SA_R_UNMASK] = "unmask",
};

const char *fm_sa_reason_name(fm_sa_reason_t r)
{
    return (unsigned)r < FM_SA_R_NREASONS ? S_REASON[r] : "?";
}

int fm_sa_params_check(const fm_sa_params_t *p, fm_errmsg_t *e)
{
    if (p->k < 2 || p->k > FM_SA_MAX_K)
        return fm_errmsg_set(e, FM_EARG, "secure aggregation: K = %u out of 2..%d", p->k,
                             FM_SA_MAX_K);
    if (p->t < p->k / 2 + 1 || p->t > p->k)
        return fm_errmsg_set(e, FM_EARG,
                             "secure aggregation: threshold t = %u out of %u..%u (more than "
                             "half of K = %u, at most K)",
                             p->t, p->k / 2 + 1, p->k, p->k);
    if (p->m < 1 || p->m > FM_SA_MAX_M)
        return fm_errmsg_set(e, FM_EARG, "secure aggregation: m = %u coordinates out of 1..%u",
                             p->m, FM_SA_MAX_M);
    fm_sa_codec_t c = {p->k, p->clip, p->scale_bits};
    return fm_sa_codec_check(&c, e);
}

int fm_sa_list_check(const uint32_t *idx, uint32_t n, uint32_t k, const char *what,
                     fm_errmsg_t *e)
{
    for (uint32_t i = 0; i < n; i++) {
        if (idx[i] < 1 || idx[i] > k)
            return fm_errmsg_set(e, FM_EFORMAT, "%s: index %u out of 1..%u", what, idx[i], k);
        if (i > 0 && idx[i] <= idx[i - 1])
            return fm_errmsg_set(e, FM_EFORMAT, "%s: index %u after %u (not strictly increasing)",
                                 what, idx[i], idx[i - 1]);
    }
    return 0;
}

int fm_sa_list_has(const uint32_t *idx, uint32_t n, uint32_t x)
{
    uint32_t lo = 0, hi = n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (idx[mid] == x)
            return 1;
        if (idx[mid] < x)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

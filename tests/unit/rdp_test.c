/* Unit tests of the RDP accountant (shared/fl/fm_rdp).
 *
 * The numbers come from elsewhere, never from fm_rdp itself:
 *   - tests/fixtures/rdp_reference.tsv, written by tests/privacy/rdp_reference.py, an
 *     arbitrary-precision (mpmath) computation from the definition of A_alpha (numerical
 *     integration, and the exact binomial sum at integer orders), not the log-space series
 *     fm_rdp uses: every one-step rdp and every epsilon in it must match to 1e-9 relative;
 *   - values published by Opacus' own test suite (opacus/tests/accountants_test.py);
 *   - the closed form of the plain Gaussian mechanism (q = 1) and the laws any accountant
 *     obeys (composition adds; epsilon grows with steps and q, falls with sigma).
 * The inverse searches (sigma needed, steps allowed) are checked against the forward
 * accountant at their boundaries. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "fm_err.h"
#include "fm_rdp.h"

#define REL_TOL 1e-9

static double s_rel(double got, double want)
{
    if (isinf(want) || isinf(got))
        return (isinf(want) && isinf(got)) ? 0.0 : INFINITY;
    if (want == 0.0)
        return fabs(got);
    return fabs(got - want) / fabs(want);
}

static double s_num(const char *s)
{
    if (strcmp(s, "inf") == 0)
        return INFINITY;
    char *end;
    double v = strtod(s, &end);
    assert_true(end != s && *end == '\0');
    return v;
}

/* Split a tab-separated line in place into at most max fields; the count. */
static int s_split(char *line, char **f, int max)
{
    int n = 0;
    line[strcspn(line, "\r\n")] = '\0';
    for (char *p = strtok(line, "\t"); p && n < max; p = strtok(NULL, "\t"))
        f[n++] = p;
    return n;
}

/* The sigmas of the fixture's rdp grid (its q = 1e-6 curves, for the epsilons there). */
static const double s_tiny_sigma[] = {0.3, 0.5, 0.8, 1.1, 1.5, 2.0, 4.0, 100.0};
#define S_NTINY 8

/* Every row of the reference fixture. */
static void test_reference_fixture(void **state)
{
    (void)state;
    const char *path = FM_SOURCE_DIR "/tests/fixtures/rdp_reference.tsv";
    FILE *fp = fopen(path, "r");
    if (!fp)
        fail_msg("%s: cannot open (tests/privacy/README.md says how to write it)", path);
    char line[1024], *f[16];
    int nrdp = 0, neps = 0, nbad = 0, alpha_seen[FM_RDP_NORDERS] = {0};
    fm_rdp_t tiny[S_NTINY]; /* the reference's one-step rdp at q = 1e-6 */
    int tiny_seen[S_NTINY] = {0};
    double worst_rdp = 0, worst_eps = 0, worst_abs = 0;
    while (fgets(line, sizeof line, fp)) {
        if (line[0] == '#' || line[0] == '\n')
            continue;
        int n = s_split(line, f, 16);
        double got, want, rel;
        if (strcmp(f[0], "rdp") == 0 && n == 5) {
            double q = s_num(f[1]), sigma = s_num(f[2]), alpha = s_num(f[3]);
            want = s_num(f[4]);
            got = fm_rdp_step(q, sigma, alpha);
            rel = s_rel(got, want);
            /* near 0 (small q) log A_alpha = (alpha - 1) rdp is what is left of a series of
             * terms of order 1 and more, so double precision bounds its absolute error, not
             * its relative one (Opacus' and TF Privacy's series alike): such rows are held to
             * 1e-12 absolute on log A; the epsilons built on them are checked to 1e-9
             * relative (the eps rows, and the q = 1e-6 epsilons below) */
            double abs_log_a = fabs(got - want) * (alpha - 1.0);
            if (rel > REL_TOL)
                worst_abs = fmax(worst_abs, abs_log_a);
            if (rel > REL_TOL && !(abs_log_a < 1e-12)) {
                if (nbad++ < 10)
                    print_message("rdp q=%g sigma=%g alpha=%g: got %.17g want %.17g (rel %.2e)\n",
                                  q, sigma, alpha, got, want, rel);
            } else if (rel <= REL_TOL && rel > worst_rdp) {
                worst_rdp = rel;
            }
            for (size_t i = 0; i < FM_RDP_NORDERS; i++)
                if (fm_rdp_order(i) == alpha) {
                    alpha_seen[i] = 1;
                    for (int k = 0; k < S_NTINY && q == 1e-6; k++)
                        if (sigma == s_tiny_sigma[k])
                            tiny[k].rdp[i] = want, tiny_seen[k]++;
                }
            nrdp++;
        } else if ((strcmp(f[0], "eps") == 0 && n == 8) ||
                   (strcmp(f[0], "eps2") == 0 && n == 11)) {
            fm_rdp_t acct;
            fm_rdp_init(&acct);
            int two = f[0][3] == '2';
            assert_int_equal(
                fm_rdp_compose(&acct, s_num(f[1]), s_num(f[2]), (uint64_t)s_num(f[3])), 0);
            if (two)
                assert_int_equal(
                    fm_rdp_compose(&acct, s_num(f[4]), s_num(f[5]), (uint64_t)s_num(f[6])), 0);
            int k = two ? 7 : 4;
            fm_rdp_conv_t conv;
            assert_int_equal(fm_rdp_conv_parse(f[k + 1], &conv), 0);
            double best;
            got = fm_rdp_epsilon(&acct, s_num(f[k]), conv, &best);
            want = s_num(f[k + 2]);
            rel = s_rel(got, want);
            if (rel > REL_TOL) {
                if (nbad++ < 10)
                    print_message("%s row %d: got eps %.17g (order %g) want %.17g (order %s), "
                                  "rel %.2e\n",
                                  f[0], neps, got, best, want, f[k + 3], rel);
            } else if (rel > worst_eps) {
                worst_eps = rel;
            }
            neps++;
        } else {
            fail_msg("%s: unknown row kind '%s' with %d fields", path, f[0], n);
        }
    }
    fclose(fp);
    print_message("reference: %d one-step rdp rows (worst %.2e relative among those within "
                  "1e-9; the others within %.2e absolute on log A), %d epsilons (worst %.2e "
                  "relative)\n",
                  nrdp, worst_rdp, worst_abs, neps, worst_eps);
    /* q = 1e-6: epsilon of 1 .. 10,000 steps from the reference's rdp (composed and converted
     * by fm_rdp's conversion, itself checked against the reference's eps rows above) against
     * fm_rdp's own, to 1e-9 relative */
    double worst_tiny = 0;
    for (int k = 0; k < S_NTINY; k++) {
        assert_int_equal(tiny_seen[k], FM_RDP_NORDERS);
        static const uint64_t steps[] = {1, 100, 1000, 10000};
        for (size_t t = 0; t < 4; t++)
            for (int c = 0; c < 2; c++) {
                fm_rdp_t ref = tiny[k], acct;
                for (size_t i = 0; i < FM_RDP_NORDERS; i++)
                    ref.rdp[i] *= (double)steps[t];
                fm_rdp_init(&acct);
                assert_int_equal(fm_rdp_compose(&acct, 1e-6, s_tiny_sigma[k], steps[t]), 0);
                double want_e = fm_rdp_epsilon(&ref, 1e-5, (fm_rdp_conv_t)c, NULL);
                double got_e = fm_rdp_epsilon(&acct, 1e-5, (fm_rdp_conv_t)c, NULL);
                double r = s_rel(got_e, want_e);
                if (r > REL_TOL && nbad++ < 20)
                    print_message("q=1e-6 sigma=%g steps=%llu: eps %.17g want %.17g (rel %.2e)\n",
                                  s_tiny_sigma[k], (unsigned long long)steps[t], got_e, want_e,
                                  r);
                worst_tiny = fmax(worst_tiny, r);
            }
    }
    print_message("q = 1e-6: %d x 4 x 2 epsilons from the reference's rdp, worst %.2e relative\n",
                  S_NTINY, worst_tiny);
    assert_int_equal(nbad, 0);
    /* the fixture covers the grid: every order, 6 q x 8 sigma; 160 epsilons + the extras */
    for (size_t i = 0; i < FM_RDP_NORDERS; i++)
        assert_true(alpha_seen[i]);
    assert_true(nrdp >= FM_RDP_NORDERS * 6 * 8);
    assert_true(neps >= 160);
}

/* Opacus' own suite: RDPAccountant, sigma 1.5, q 0.04, int(90 / 0.04) steps, delta 1e-5 ->
 * 7.32911117143 (assertAlmostEqual: 7 places). get_noise_multiplier (tolerance 0.01 in
 * epsilon, returning the sigma whose epsilon is within [target - 0.01, target]): epsilon 8,
 * q 0.04, 90 epochs -> 1.416 (4 places); 2000 steps -> 1.3562 (4 places). */
static void test_opacus_published(void **state)
{
    (void)state;
    double best;
    double eps = fm_rdp_epsilon_of(0.04, 1.5, 2250, 1e-5, FM_RDP_IMPROVED, &best);
    print_message("Opacus test_rdp_accountant: %.11f (published 7.32911117143), order %g\n", eps,
                  best);
    assert_true(fabs(eps - 7.32911117143) < 5e-8);
    double e1 = fm_rdp_epsilon_of(0.04, 1.416, 2250, 1e-5, FM_RDP_IMPROVED, NULL);
    double e2 = fm_rdp_epsilon_of(0.04, 1.3562, 2000, 1e-5, FM_RDP_IMPROVED, NULL);
    print_message("Opacus' sigmas give epsilon %.4f (1.416, 90 epochs), %.4f (1.3562, 2000 "
                  "steps); target 8, Opacus tolerance 0.01\n",
                  e1, e2);
    /* their 4-place roundings may move epsilon by ~0.001 either way */
    assert_true(e1 <= 8.0 + 2e-3 && e1 >= 8.0 - 0.01 - 2e-3);
    assert_true(e2 <= 8.0 + 2e-3 && e2 >= 8.0 - 0.01 - 2e-3);
    double s;
    assert_int_equal(fm_rdp_sigma_for(0.04, 2000, 1e-5, 8.0, FM_RDP_IMPROVED, &s), 0);
    print_message("sigma for epsilon 8, q 0.04, 2000 steps: %.6f (Opacus 1.3562)\n", s);
    assert_true(s <= 1.3562 + 5e-5 && s > 1.3562 - 5e-3);
}

/* q = 1 is the plain Gaussian mechanism: rdp = alpha / (2 sigma^2) at every order, and the
 * classic epsilon of T steps is min over the orders of T alpha / (2 sigma^2) - log(delta) /
 * (alpha - 1), computed here directly. */
static void test_gaussian_closed_form(void **state)
{
    (void)state;
    const double sigmas[] = {0.5, 1.0, 3.0, 50.0};
    for (size_t s = 0; s < 4; s++)
        for (size_t i = 0; i < FM_RDP_NORDERS; i++) {
            double a = fm_rdp_order(i);
            assert_true(s_rel(fm_rdp_step(1.0, sigmas[s], a), a / (2 * sigmas[s] * sigmas[s])) <
                        1e-15);
        }
    double want = INFINITY;
    for (size_t i = 0; i < FM_RDP_NORDERS; i++) {
        double a = fm_rdp_order(i), e = 100 * a / (2.0 * 4.0 * 4.0) - log(1e-5) / (a - 1);
        want = e < want ? e : want;
    }
    assert_true(s_rel(fm_rdp_epsilon_of(1.0, 4.0, 100, 1e-5, FM_RDP_CLASSIC, NULL), want) <
                1e-14);
}

/* Composition adds per order (also across different q and sigma); T steps = T x one. */
static void test_composition(void **state)
{
    (void)state;
    fm_rdp_t a, b, one;
    fm_rdp_init(&a);
    fm_rdp_init(&b);
    fm_rdp_init(&one);
    assert_int_equal(fm_rdp_compose(&a, 0.01, 1.1, 1000), 0);
    assert_int_equal(fm_rdp_compose(&a, 0.1, 2.0, 200), 0);
    for (int i = 0; i < 200; i++)
        assert_int_equal(fm_rdp_compose(&b, 0.1, 2.0, 1), 0);
    assert_int_equal(fm_rdp_compose(&b, 0.01, 1.1, 1000), 0);
    assert_int_equal(fm_rdp_compose(&one, 0.01, 1.1, 1), 0);
    for (size_t i = 0; i < FM_RDP_NORDERS; i++) {
        double a1 = fm_rdp_step(0.01, 1.1, fm_rdp_order(i)) * 1000 +
                    fm_rdp_step(0.1, 2.0, fm_rdp_order(i)) * 200;
        assert_true(s_rel(a.rdp[i], a1) < 1e-12);
        assert_true(s_rel(b.rdp[i], a1) < 1e-12);
        assert_true(one.rdp[i] > 0);
    }
    /* zero steps and q = 0 spend nothing */
    fm_rdp_t z;
    fm_rdp_init(&z);
    assert_int_equal(fm_rdp_compose(&z, 0.3, 1.0, 0), 0);
    assert_int_equal(fm_rdp_compose(&z, 0.0, 1.0, 1000), 0);
    for (size_t i = 0; i < FM_RDP_NORDERS; i++)
        assert_true(z.rdp[i] == 0.0);
}

/* Epsilon grows with steps and q, falls with sigma; improved <= classic. */
static void test_monotone(void **state)
{
    (void)state;
    double prev = 0;
    for (uint64_t t = 1; t <= 100000; t *= 10) {
        double e = fm_rdp_epsilon_of(0.01, 1.0, t, 1e-5, FM_RDP_IMPROVED, NULL);
        assert_true(e > prev);
        assert_true(e <= fm_rdp_epsilon_of(0.01, 1.0, t, 1e-5, FM_RDP_CLASSIC, NULL));
        prev = e;
    }
    prev = INFINITY;
    for (double s = 0.3; s < 100; s *= 1.7) {
        double e = fm_rdp_epsilon_of(0.05, s, 500, 1e-5, FM_RDP_IMPROVED, NULL);
        assert_true(e < prev);
        prev = e;
    }
    prev = 0;
    for (double q = 1e-6; q <= 1.0; q *= 10) {
        double e = fm_rdp_epsilon_of(q, 1.0, 100, 1e-5, FM_RDP_CLASSIC, NULL);
        assert_true(e > prev);
        prev = e;
    }
}

/* The inverse searches sit exactly on the boundary of the forward accountant. */
static void test_inverses(void **state)
{
    (void)state;
    const double qs[] = {1e-3, 0.01, 0.1, 1.0}, targets[] = {1.0, 3.0, 8.0};
    for (size_t i = 0; i < 4; i++)
        for (size_t j = 0; j < 3; j++) {
            double s;
            assert_int_equal(fm_rdp_sigma_for(qs[i], 1000, 1e-5, targets[j], FM_RDP_IMPROVED, &s),
                             0);
            assert_true(fm_rdp_epsilon_of(qs[i], s, 1000, 1e-5, FM_RDP_IMPROVED, NULL) <=
                        targets[j]);
            assert_true(fm_rdp_epsilon_of(qs[i], s * (1 - 1e-6), 1000, 1e-5, FM_RDP_IMPROVED,
                                          NULL) > targets[j]);
            uint64_t t;
            assert_int_equal(fm_rdp_steps_for(qs[i], 1.5, 1e-5, targets[j], FM_RDP_IMPROVED,
                                              UINT64_C(1) << 40, &t),
                             0);
            if (t > 0)
                assert_true(fm_rdp_epsilon_of(qs[i], 1.5, t, 1e-5, FM_RDP_IMPROVED, NULL) <=
                            targets[j]);
            assert_true(fm_rdp_epsilon_of(qs[i], 1.5, t + 1, 1e-5, FM_RDP_IMPROVED, NULL) >
                        targets[j]);
        }
    uint64_t t;
    assert_int_equal(fm_rdp_steps_for(1e-6, 100.0, 1e-5, 8.0, FM_RDP_IMPROVED, 1000, &t), 0);
    assert_true(t == 1000); /* capped */
    double s;
    assert_int_equal(fm_rdp_sigma_for(1.0, 1000000, 1e-5, 1e-4, FM_RDP_IMPROVED, &s), FM_ERANGE);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    assert_true(isnan(fm_rdp_step(-0.1, 1, 2)));
    assert_true(isnan(fm_rdp_step(1.1, 1, 2)));
    assert_true(isnan(fm_rdp_step(0.1, -1, 2)));
    assert_true(isnan(fm_rdp_step(0.1, 1, 1.0)));
    assert_true(isnan(fm_rdp_step(NAN, 1, 2)));
    assert_true(isinf(fm_rdp_step(0.1, 0, 2)));
    fm_rdp_t a;
    fm_rdp_init(&a);
    assert_int_equal(fm_rdp_compose(&a, 2.0, 1, 1), FM_EARG);
    assert_int_equal(fm_rdp_compose(&a, 0.1, NAN, 1), FM_EARG);
    for (size_t i = 0; i < FM_RDP_NORDERS; i++)
        assert_true(a.rdp[i] == 0.0);
    double best = 0;
    assert_true(isinf(fm_rdp_epsilon(&a, 0.0, FM_RDP_IMPROVED, &best)) && isnan(best));
    assert_true(isinf(fm_rdp_epsilon(&a, 1.0, FM_RDP_IMPROVED, NULL)));
    assert_int_equal(fm_rdp_compose(&a, 0.1, 0.0, 1), 0); /* no noise: no privacy */
    assert_true(isinf(fm_rdp_epsilon(&a, 1e-5, FM_RDP_IMPROVED, NULL)));
    fm_rdp_conv_t c;
    assert_int_equal(fm_rdp_conv_parse("renyi", &c), FM_EARG);
    double s;
    assert_int_equal(fm_rdp_sigma_for(0.0, 10, 1e-5, 1, FM_RDP_IMPROVED, &s), FM_EARG);
    assert_int_equal(fm_rdp_sigma_for(0.1, 0, 1e-5, 1, FM_RDP_IMPROVED, &s), FM_EARG);
    assert_int_equal(fm_rdp_sigma_for(0.1, 10, 1e-5, -1, FM_RDP_IMPROVED, &s), FM_EARG);
}

/* The orders: Opacus' default set, ascending, integers where 1 + x / 10 is one. */
/* The checkpoint bytes: a round trip keeps every rdp bit, steps, delta and conversion; a
 * wrong length, magic, conversion, delta or a negative / NaN rdp is refused, nothing written. */
static void test_blob(void **state)
{
    (void)state;
    fm_rdp_t a, b;
    fm_rdp_init(&a);
    assert_int_equal(fm_rdp_compose(&a, 0.01, 1.1, 1000), 0);
    assert_int_equal(fm_rdp_compose(&a, 1.0, 4.0, 7), 0);
    uint8_t blob[FM_RDP_BLOB_LEN];
    fm_rdp_encode(&a, 1007, 1e-6, FM_RDP_CLASSIC, blob);
    uint64_t steps = 0;
    double delta = 0;
    fm_rdp_conv_t conv = FM_RDP_IMPROVED;
    assert_int_equal(fm_rdp_decode(blob, sizeof blob, &b, &steps, &delta, &conv, NULL), 0);
    assert_memory_equal(&a, &b, sizeof a);
    assert_true(steps == 1007 && delta == 1e-6 && conv == FM_RDP_CLASSIC);
    fm_errmsg_t e = {{0}};
    fm_rdp_init(&b);
    assert_int_equal(fm_rdp_decode(blob, sizeof blob - 1, &b, NULL, NULL, NULL, &e), FM_EFORMAT);
    assert_non_null(strstr(e.msg, "not an RDP record"));
    uint8_t bad[FM_RDP_BLOB_LEN];
    memcpy(bad, blob, sizeof bad);
    bad[0] ^= 1; /* magic */
    assert_int_equal(fm_rdp_decode(bad, sizeof bad, &b, NULL, NULL, NULL, NULL), FM_EFORMAT);
    memcpy(bad, blob, sizeof bad);
    bad[24] = 7; /* conversion */
    assert_int_equal(fm_rdp_decode(bad, sizeof bad, &b, NULL, NULL, NULL, NULL), FM_EFORMAT);
    fm_rdp_encode(&a, 1, 1.5, FM_RDP_IMPROVED, bad); /* delta out of (0, 1) */
    assert_int_equal(fm_rdp_decode(bad, sizeof bad, &b, NULL, NULL, NULL, NULL), FM_EFORMAT);
    fm_rdp_t neg = a;
    neg.rdp[42] = -1e-9;
    fm_rdp_encode(&neg, 1, 1e-5, FM_RDP_IMPROVED, bad);
    assert_int_equal(fm_rdp_decode(bad, sizeof bad, &b, NULL, NULL, NULL, &e), FM_EFORMAT);
    assert_non_null(strstr(e.msg, "rdp at order"));
    neg.rdp[42] = NAN;
    fm_rdp_encode(&neg, 1, 1e-5, FM_RDP_IMPROVED, bad);
    assert_int_equal(fm_rdp_decode(bad, sizeof bad, &b, NULL, NULL, NULL, NULL), FM_EFORMAT);
    fm_rdp_t zero;
    fm_rdp_init(&zero);
    assert_memory_equal(&b, &zero, sizeof b); /* nothing written by the refusals */
}

static void test_orders(void **state)
{
    (void)state;
    assert_true(fm_rdp_order(0) == 1.1);
    assert_true(fm_rdp_order(8) == 1.0 + 9 / 10.0);
    assert_true(fm_rdp_order(9) == 2.0);
    assert_true(fm_rdp_order(98) == 1.0 + 99 / 10.0);
    assert_true(fm_rdp_order(99) == 12.0);
    assert_true(fm_rdp_order(FM_RDP_NORDERS - 1) == 63.0);
    for (size_t i = 1; i < FM_RDP_NORDERS; i++)
        assert_true(fm_rdp_order(i) > fm_rdp_order(i - 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blob),
        cmocka_unit_test(test_orders),
        cmocka_unit_test(test_reference_fixture),
        cmocka_unit_test(test_opacus_published),
        cmocka_unit_test(test_gaussian_closed_form),
        cmocka_unit_test(test_composition),
        cmocka_unit_test(test_monotone),
        cmocka_unit_test(test_inverses),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

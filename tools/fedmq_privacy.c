/* fedmq privacy: plan a differentially private training before running it. The RDP
 * accountant of the Poisson-subsampled Gaussian mechanism (shared/fl/fm_rdp.h), the same one
 * the aggregator and trainers account with. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "fedmq_cli.h"
#include "fm_err.h"
#include "fm_parse.h"
#include "fm_rdp.h"

static void s_usage(FILE *f)
{
    fprintf(f,
            "usage: fedmq privacy --q Q (--sigma S --steps T | --target-epsilon E and one of\n"
            "                     --sigma S, --steps T) [--delta D] [--conversion C]\n"
            "Epsilon of T steps of the Poisson-subsampled Gaussian mechanism (each client,\n"
            "or example, joins a step with probability Q; Gaussian noise of std S times the\n"
            "clipping bound), by the Renyi-DP accountant (docs/PRIVACY.md).\n"
            "  --q Q              sampling rate of a step, 0 < Q <= 1\n"
            "  --sigma S          noise multiplier (std / clipping bound), S >= 0\n"
            "  --steps T          number of steps (rounds, buffers, or DP-SGD steps)\n"
            "  --delta D          delta, 0 < D < 1 (default 1e-5)\n"
            "  --conversion C     improved (Balle et al. 2020, as Opacus; default) or classic\n"
            "  --target-epsilon E with --steps: the smallest sigma that keeps epsilon <= E;\n"
            "                     with --sigma: the most steps that keep epsilon <= E\n"
            "Last line: epsilon=X order=A q=Q sigma=S steps=T delta=D conversion=C\n");
}

int fm_cli_privacy(int argc, char **argv)
{
    enum { O_Q = 256, O_SIGMA, O_STEPS, O_DELTA, O_CONV, O_TARGET };
    static const struct option longopts[] = {{"q", required_argument, 0, O_Q},
                                             {"sigma", required_argument, 0, O_SIGMA},
                                             {"steps", required_argument, 0, O_STEPS},
                                             {"delta", required_argument, 0, O_DELTA},
                                             {"conversion", required_argument, 0, O_CONV},
                                             {"target-epsilon", required_argument, 0, O_TARGET},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    double q = NAN, sigma = NAN, delta = 1e-5, target = NAN;
    uint64_t steps = 0;
    int have_steps = 0;
    fm_rdp_conv_t conv = FM_RDP_IMPROVED;
    fm_errmsg_t e = {{0}};
    opterr = 0;
    optind = 1;
    int ch, rc = 0;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (ch) {
        case O_Q: rc = fm_parse_float("--q", optarg, 1e-12, 1.0, &q, &e); break;
        case O_SIGMA: rc = fm_parse_float("--sigma", optarg, 0.0, 1e9, &sigma, &e); break;
        case O_STEPS:
            rc = fm_parse_u64("--steps", optarg, &steps, &e);
            have_steps = 1;
            break;
        case O_DELTA:
            rc = fm_parse_float("--delta", optarg, 1e-300, 1.0, &delta, &e);
            if (rc == 0 && delta >= 1.0) {
                snprintf(e.msg, sizeof e.msg, "--delta: must be below 1");
                rc = FM_EARG;
            }
            break;
        case O_CONV:
            if ((rc = fm_rdp_conv_parse(optarg, &conv)) != 0)
                snprintf(e.msg, sizeof e.msg, "--conversion: '%s' is not improved or classic",
                         optarg);
            break;
        case O_TARGET:
            rc = fm_parse_float("--target-epsilon", optarg, 1e-9, 1e9, &target, &e);
            break;
        case 'h': s_usage(stdout); return FM_EXIT_OK;
        default:
            fprintf(stderr, "fedmq privacy: %s: %s (see fedmq privacy --help)\n",
                    argv[optind - 1], ch == ':' ? "missing value" : "unknown option");
            return FM_EXIT_INPUT;
        }
        if (rc) {
            fprintf(stderr, "fedmq privacy: %s\n", e.msg);
            return FM_EXIT_INPUT;
        }
    }
    const char *need = NULL;
    if (optind != argc)
        need = "no positional arguments";
    else if (isnan(q))
        need = "--q";
    else if (isnan(target) && (isnan(sigma) || !have_steps))
        need = "--sigma and --steps (or --target-epsilon with one of them)";
    else if (!isnan(target) && isnan(sigma) == !have_steps)
        need = "exactly one of --sigma and --steps with --target-epsilon";
    if (need) {
        fprintf(stderr, "fedmq privacy: expected %s (see fedmq privacy --help)\n", need);
        return FM_EXIT_INPUT;
    }
    if (!isnan(target) && have_steps) {
        if (steps == 0) {
            fprintf(stderr, "fedmq privacy: --steps: must be at least 1 with --target-epsilon\n");
            return FM_EXIT_INPUT;
        }
        rc = fm_rdp_sigma_for(q, steps, delta, target, conv, &sigma);
        if (rc == FM_ERANGE) {
            fprintf(stderr,
                    "fedmq privacy: no noise multiplier up to 1e6 keeps epsilon <= %g over %llu "
                    "steps at q=%g\n",
                    target, (unsigned long long)steps, q);
            return FM_EXIT_INPUT;
        }
    } else if (!isnan(target)) {
        rc = fm_rdp_steps_for(q, sigma, delta, target, conv, UINT64_C(1) << 50, &steps);
    }
    if (rc) {
        fprintf(stderr, "fedmq privacy: %s\n", fm_strerror(rc));
        return FM_EXIT_INPUT;
    }
    double order;
    double eps = fm_rdp_epsilon_of(q, sigma, steps, delta, conv, &order);
    if (!isnan(target) && have_steps)
        printf("noise multiplier for epsilon <= %g: sigma=%.10g\n", target, sigma);
    else if (!isnan(target))
        printf("steps within epsilon <= %g: steps=%llu%s\n", target, (unsigned long long)steps,
               steps == UINT64_C(1) << 50 ? " (or more)" : "");
    printf("epsilon=%.10g order=%g q=%g sigma=%.10g steps=%llu delta=%g conversion=%s\n", eps,
           order, q, sigma, (unsigned long long)steps, delta, fm_rdp_conv_name(conv));
    return FM_EXIT_OK;
}

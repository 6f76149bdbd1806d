/* fedmq watch ENDPOINT: print the evaluator's METRICS feed live. */
#include <czmq.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "fedmq_cli.h"
#include "fm_daemon.h"
#include "fm_parse.h"
#include "fm_wire.h"

int fm_cli_watch(int argc, char **argv)
{
    static const struct option longopts[] = {{"count", required_argument, 0, 'n'},
                                             {"timeout", required_argument, 0, 't'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    long count = 0;
    double timeout = 0.0;
    fm_errmsg_t e = {{0}};
    opterr = 0;
    optind = 1;
    int ch, rc = 0;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'n': rc = fm_parse_int("--count", optarg, 1, 1L << 40, &count, &e); break;
        case 't': rc = fm_parse_float("--timeout", optarg, 0.001, 1e9, &timeout, &e); break;
        case 'h':
            printf("usage: fedmq watch ENDPOINT [--count N] [--timeout S]\n"
                   "Print the METRICS feed of an evaluator (its metrics_pub endpoint, e.g.\n"
                   "tcp://127.0.0.1:5564), one line per evaluated model version, with the\n"
                   "aggregator's progress when it made that version (updates applied so far,\n"
                   "accepted updates/s over the last 30 s, as in stats.json); when the\n"
                   "evaluator scores the clients' held-out slices, the line ends with their\n"
                   "accuracy: mean, worst client, 10th percentile, share below the threshold.\n"
                   "  --count N    exit after N lines\n"
                   "  --timeout S  exit 1 if no METRICS arrives for S seconds\n");
            return 0;
        default:
            snprintf(e.msg, sizeof e.msg, "%s: %s (see fedmq watch --help)", argv[optind - 1],
                     ch == ':' ? "missing value" : "unknown option");
            rc = FM_EARG;
        }
        if (rc != 0) {
            fprintf(stderr, "fedmq watch: %s\n", e.msg);
            return FM_EXIT_INPUT;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "fedmq watch: expected one ENDPOINT (see fedmq watch --help)\n");
        return FM_EXIT_INPUT;
    }
    const char *endpoint = argv[optind];
    fm_daemon_signals();
    zsock_t *sub = zsock_new(ZMQ_SUB);
    if (!sub) {
        fprintf(stderr, "fedmq watch: cannot create a socket\n");
        return FM_EXIT_RUNTIME;
    }
    zsock_set_linger(sub, 0);
    zsock_set_subscribe(sub, "");
    if (zsock_connect(sub, "%s", endpoint) != 0) {
        fprintf(stderr, "fedmq watch: %s: not a valid endpoint\n", endpoint);
        zsock_destroy(&sub);
        return FM_EXIT_INPUT;
    }
    zpoller_t *poller = zpoller_new(sub, NULL);
    long printed = 0;
    double last = fm_daemon_now();
    rc = 0;
    while (!fm_daemon_stopping() && (count == 0 || printed < count)) {
        void *which = zpoller_wait(poller, 200);
        if (!which) {
            if (timeout > 0 && fm_daemon_now() - last > timeout) {
                fprintf(stderr, "fedmq watch: %s: no METRICS for %.1f s\n", endpoint, timeout);
                rc = FM_EXIT_RUNTIME;
                break;
            }
            continue;
        }
        zframe_t *f = zframe_recv(sub);
        if (!f)
            continue;
        fm_wire_metrics_t m;
        fm_wire_type_t type = FM_WIRE_NONE;
        e.msg[0] = '\0';
        int prc = fm_wire_peek(zframe_data(f), zframe_size(f), &type, &e);
        if (prc == 0 && type != FM_WIRE_METRICS)
            fm_errmsg_set(&e, FM_EFORMAT, "a %s message, not METRICS", fm_wire_type_name(type));
        if (prc == 0 && type == FM_WIRE_METRICS &&
            fm_wire_decode_metrics(zframe_data(f), zframe_size(f), &m, &e) == 0) {
            printf("version=%llu model=%s accuracy=%.4f loss=%.4f n=%llu eval_s=%.2f "
                   "applied=%llu updates_per_s=%.1f",
                   (unsigned long long)m.version, m.model, m.accuracy, m.loss,
                   (unsigned long long)m.num_samples, m.eval_seconds,
                   (unsigned long long)m.applied, m.updates_per_s);
            if (m.pop_clients > 0) /* population-level validation, when the evaluator runs it */
                printf(" | %u clients mean %.2f worst %.2f (client %u) p10 %.2f below%g %.0f%%",
                       m.pop_clients, m.pop_mean, m.pop_min, m.pop_worst, m.pop_p10,
                       m.pop_threshold, 100.0 * m.pop_below);
            putchar('\n');
            fflush(stdout);
            printed++;
            last = fm_daemon_now();
        } else {
            fprintf(stderr, "fedmq watch: ignored a frame: %s\n", e.msg);
        }
        zframe_destroy(&f);
    }
    zpoller_destroy(&poller);
    zsock_destroy(&sub);
    return rc;
}

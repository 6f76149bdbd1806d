/* fedmq watch ENDPOINT: print the evaluator's METRICS feed live. */
#include <czmq.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "fedmq_cli.h"
#include "fm_daemon.h"
#include "fm_parse.h"
#include "fm_sec.h"
#include "fm_sock.h"
#include "fm_wire.h"

int fm_cli_watch(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"count", required_argument, 0, 'n'}, {"timeout", required_argument, 0, 't'},
        {"cert", required_argument, 0, 'c'},  {"server-cert", required_argument, 0, 's'},
        {"help", no_argument, 0, 'h'},        {0, 0, 0, 0}};
    long count = 0;
    double timeout = 0.0;
    const char *cert = NULL, *server_cert = NULL;
    fm_errmsg_t e = {{0}};
    opterr = 0;
    optind = 1;
    int ch, rc = 0;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'n': rc = fm_parse_int("--count", optarg, 1, 1L << 40, &count, &e); break;
        case 't': rc = fm_parse_float("--timeout", optarg, 0.001, 1e9, &timeout, &e); break;
        case 'c': cert = optarg; break;
        case 's': server_cert = optarg; break;
        case 'h':
            printf("usage: fedmq watch ENDPOINT [--count N] [--timeout S] [--cert FILE\n"
                   "                   --server-cert FILE]\n"
                   "Print the METRICS feed of an evaluator (its metrics_pub endpoint, e.g.\n"
                   "tcp://127.0.0.1:5564), one line per evaluated model version, with the\n"
                   "aggregator's progress when it made that version (updates applied so far,\n"
                   "accepted updates/s over the last 30 s, as in stats.json); when the\n"
                   "evaluator scores the clients' held-out slices, the line ends with their\n"
                   "accuracy: mean, worst client, 10th percentile, share below the threshold.\n"
                   "  --count N    exit after N lines\n"
                   "  --timeout S  exit 1 if no METRICS arrives for S seconds\n"
                   "  --cert FILE  [security] mode = curve: this monitor's certificate (a\n"
                   "               monitor key enrolled in the evaluator's allow_dir; reads\n"
                   "               FILE_secret too), with --server-cert: the evaluator's\n"
                   "               public certificate\n");
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
    if (!cert != !server_cert) {
        fprintf(stderr, "fedmq watch: --cert and --server-cert go together\n");
        return FM_EXIT_INPUT;
    }
    fm_daemon_signals();
    fm_config_t cfg;
    fm_cfg_defaults(&cfg);
    if (cert) {
        cfg.security.mode = FM_CFG_SECURITY_CURVE;
        snprintf(cfg.security.monitor_cert, sizeof cfg.security.monitor_cert, "%s", cert);
        snprintf(cfg.security.evaluator_cert, sizeof cfg.security.evaluator_cert, "%s",
                 server_cert);
    }
    int err = 0;
    fm_sec_t *sec = cert ? fm_sec_new(&cfg, FM_SEC_ROLE_MONITOR, &err, &e) : NULL;
    if (cert && !sec) {
        fprintf(stderr, "fedmq watch: %s\n", e.msg);
        return err == FM_EARG ? FM_EXIT_INPUT : FM_EXIT_RUNTIME;
    }
    fm_sock_opts_t o = {.subscribe_all = true, .sec = sec, .side = FM_SEC_TO_EVALUATOR};
    zsock_t *sub = fm_sock_new(ZMQ_SUB, &o, "metrics_pub", &err, &e);
    if (!sub) {
        fprintf(stderr, "fedmq watch: %s\n", e.msg);
        fm_sec_destroy(&sec);
        return FM_EXIT_RUNTIME;
    }
    if (zsock_connect(sub, "%s", endpoint) != 0) {
        fprintf(stderr, "fedmq watch: %s: not a valid endpoint\n", endpoint);
        zsock_destroy(&sub);
        fm_sec_destroy(&sec);
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
            if (m.delta > 0) /* client-level differential privacy */
                printf(" | epsilon=%.4g delta=%g", m.epsilon, m.delta);
            if (m.sa_completed || m.sa_aborted) /* secure aggregation */
                printf(" | cohorts done=%llu aborted=%llu members_dropped=%llu",
                       (unsigned long long)m.sa_completed, (unsigned long long)m.sa_aborted,
                       (unsigned long long)m.sa_dropped);
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
    fm_sec_destroy(&sec);
    return rc;
}

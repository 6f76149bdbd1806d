/* fedmq keygen: a CurveZMQ key pair (certificate) for one daemon, trainer or monitor. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "fedmq_cli.h"
#include "fm_sec.h"

static void s_usage(FILE *f)
{
    fprintf(f, "usage: fedmq keygen NAME --role ROLE [--clients A-B] [--dir DIR]\n"
               "Write DIR/NAME.cert (public) and DIR/NAME.cert_secret (mode 0600) for\n"
               "[security] mode = curve. Never overwrites a key.\n"
               "  --role ROLE    broker, aggregator, evaluator, trainer or monitor\n"
               "  --clients A-B  trainers: the client ids this key may serve (required)\n"
               "  --dir DIR      where to write (default .)\n"
               "Enrol a trainer or monitor by copying its NAME.cert (never the _secret) into\n"
               "the servers' [security] allow_dir; the broker and evaluator keys go there too\n"
               "(they connect to the aggregator and the broker). A trainer's NAME is its\n"
               "trainer id. Prints the public key.\n");
}

int fm_cli_keygen(int argc, char **argv)
{
    static const struct option longopts[] = {{"role", required_argument, 0, 'r'},
                                             {"clients", required_argument, 0, 'c'},
                                             {"dir", required_argument, 0, 'd'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    const char *role = NULL, *clients = NULL, *dir = ".";
    opterr = 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'r': role = optarg; break;
        case 'c': clients = optarg; break;
        case 'd': dir = optarg; break;
        case 'h': s_usage(stdout); return FM_EXIT_OK;
        default:
            fprintf(stderr, "fedmq keygen: %s: %s (see fedmq keygen --help)\n", argv[optind - 1],
                    ch == ':' ? "missing value" : "unknown option");
            return FM_EXIT_INPUT;
        }
    }
    if (optind != argc - 1 || !role) {
        fprintf(stderr,
                "fedmq keygen: expected NAME and --role ROLE (see fedmq keygen --help)\n");
        return FM_EXIT_INPUT;
    }
    char pub[41];
    fm_errmsg_t e = {{0}};
    int rc = fm_sec_keygen(dir, argv[optind], role, clients, pub, &e);
    if (rc) {
        fprintf(stderr, "fedmq %s\n", e.msg);
        return rc == FM_EARG || rc == -EEXIST ? FM_EXIT_INPUT : FM_EXIT_RUNTIME;
    }
    printf("%s/%s.cert %s\n", dir, argv[optind], pub);
    return FM_EXIT_OK;
}

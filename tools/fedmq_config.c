/* fedmq config CONFIG [--set section.key=value ...]
 *
 * Print the configuration a daemon started with the same arguments would run with: every
 * key of every section, after defaults -> file -> --set overrides -> cross-key checks
 * (fm_daemon_load_config, the daemons' own path), as fm_cfg_dump writes it (an INI file
 * that the daemons read back unchanged). Programs that are not C daemons (the Python client,
 * trainer/python) read the federation's settings from it instead of parsing the file with
 * other rules. Exit: 0 printed, 1 write error, 2 bad input (one line on stderr). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "fedmq_cli.h"
#include "fm_cfg.h"
#include "fm_daemon.h"

#define MAX_SETS 64

static void s_usage(FILE *f)
{
    fprintf(f, "usage: fedmq config CONFIG [--set section.key=value ...]\n"
               "Print every key of CONFIG as the daemons resolve it (defaults, the file,\n"
               "then each --set, then the checks across keys), as a config file.\n"
               "  --set section.key=value   override a config key (repeatable)\n");
}

int fm_cli_config(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"set", required_argument, 0, 's'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    fm_daemon_args_t args;
    memset(&args, 0, sizeof args);
    args.log_level = -1;
    opterr = 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        switch (ch) {
        case 's':
            if (args.nsets >= MAX_SETS) {
                fprintf(stderr, "fedmq config: --set: too many overrides (at most %d)\n",
                        MAX_SETS);
                return FM_EXIT_INPUT;
            }
            args.sets[args.nsets++] = optarg;
            break;
        case 'h': s_usage(stdout); return FM_EXIT_OK;
        case ':':
            fprintf(stderr, "fedmq config: %s: missing value (see fedmq config --help)\n",
                    argv[optind - 1]);
            return FM_EXIT_INPUT;
        default:
            fprintf(stderr, "fedmq config: %s: unknown option (see fedmq config --help)\n",
                    argv[optind - 1]);
            return FM_EXIT_INPUT;
        }
    }
    if (optind != argc - 1) {
        fprintf(stderr, "fedmq config: expected one CONFIG file (see fedmq config --help)\n");
        return FM_EXIT_INPUT;
    }
    args.config_path = argv[optind];
    fm_config_t cfg;
    fm_errmsg_t e = {{0}};
    if (fm_daemon_load_config(&cfg, &args, &e) != 0) {
        fprintf(stderr, "fedmq config: %s\n", e.msg);
        return FM_EXIT_INPUT;
    }
    if (fm_cfg_dump(&cfg, stdout) != 0 || fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "fedmq config: cannot write the configuration to stdout\n");
        return FM_EXIT_RUNTIME;
    }
    return FM_EXIT_OK;
}

/* fedmq_attacker: a trainer pool whose every client poisons its updates, for the poisoning
 * benchmark (bench/poison_compare.sh; trainer_attack.h says what each attack does). It is
 * fedmq-trainer (trainer/main.c) with the attack flags below; it is a bench program, never
 * installed or packaged, and says it is an attacker in one WARNING line at start. */
#include <stdio.h>
#include <string.h>

#include "fm_daemon.h"
#include "fm_log.h"
#include "fm_parse.h"
#include "trainer_attack.h"
#include "trainer_pool.h"

#define PROG "fedmq_attacker"

/* Set once by main() before fm_daemon_main starts anything, read-only afterwards (the
 * daemon's constructor has no argument to carry it). */
static trainer_attack_t s_attack;

static void s_usage(FILE *f)
{
    fprintf(
        f,
        "usage: " PROG " --attack KIND [attack options] --config FILE\n"
        "       [--set section.key=value ...] [--log-level L]\n"
        "\n"
        "A fedmq-trainer pool whose clients ([trainer] clients) all attack (benchmark only):\n"
        "  --attack KIND          signflip | noise | backdoor | none (required)\n"
        "  --scale X              signflip: delta = -X * honest delta (default 10)\n"
        "  --noise-norm X         noise: delta = Gaussian noise of L2 norm X (default 100)\n"
        "  --target C             backdoor: class the poisoned samples get (default 0)\n"
        "  --poison-fraction F    backdoor: fraction of each client's samples poisoned\n"
        "                         (default 0.5)\n"
        "  --boost X              backdoor: the delta is multiplied by X (default 1)\n"
        "  --attack-seed S        noise draws, choice of poisoned samples (default 1)\n"
        "The backdoor trigger is a %d x %d white square in the bottom-right corner.\n"
        "\n"
        "  --config FILE          configuration file (configs/fedmq.conf documents it)\n"
        "  --set section.key=V    override one key (repeatable)\n"
        "  --log-level L          error, warning, notice, info or debug\n"
        "  --help                 this text\n"
        "Exit status: 0 after SIGINT/SIGTERM, 1 runtime failure, 2 bad command line or\n"
        "configuration.\n",
        TRAINER_ATTACK_PATCH, TRAINER_ATTACK_PATCH);
}

static void *s_new(const fm_config_t *cfg, const fm_daemon_args_t *args, fm_metrics_t *metrics,
                   fm_sec_t *sec, int *err, fm_errmsg_t *e)
{
    char what[256];
    trainer_attack_describe(&s_attack, what, sizeof what);
    FM_LOG(LOG_WARNING, "ATTACKER (benchmark only): clients %s poison their updates: %s",
           cfg->trainer.clients, what);
    return trainer_pool_new_attacked(cfg, args, metrics, sec, &s_attack, err, e);
}

static int s_run(void *server) { return trainer_pool_run(server); }

static void s_destroy(void *server)
{
    trainer_pool_t *self = server;
    trainer_pool_destroy(&self);
}

/* The value of option argv[*i] ("--opt V" or "--opt=V"), advancing *i; NULL if missing. */
static const char *s_value(int argc, char **argv, int *i, const char *opt)
{
    size_t n = strlen(opt);
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (*i + 1 >= argc)
        return NULL;
    return argv[++*i];
}

/* Take the attack options out of argv (the rest stays for fm_daemon_main, in order) into
 * s_attack. 0, 1 when --help was asked (left in argv), or 2 after one line on stderr. */
static int s_parse_attack(int *argc, char **argv)
{
    static const char *const opts[] = {"--attack",          "--scale", "--noise-norm", "--target",
                                       "--poison-fraction", "--boost", "--attack-seed"};
    trainer_attack_defaults(&s_attack);
    int have_kind = 0, help = 0, out = 1;
    fm_errmsg_t e = {{0}};
    for (int i = 1; i < *argc; i++) {
        int k = -1;
        for (int j = 0; j < (int)(sizeof opts / sizeof opts[0]); j++) {
            size_t n = strlen(opts[j]);
            if (strncmp(argv[i], opts[j], n) == 0 && (argv[i][n] == '\0' || argv[i][n] == '='))
                k = j;
        }
        if (k < 0) {
            help |= strcmp(argv[i], "--help") == 0;
            argv[out++] = argv[i];
            continue;
        }
        const char *v = s_value(*argc, argv, &i, opts[k]);
        if (!v) {
            fprintf(stderr, PROG ": %s: missing value\n", opts[k]);
            return 2;
        }
        double d = 0;
        long l = 0;
        int rc = 0;
        switch (k) {
        case 0:
            if ((rc = trainer_attack_kind_parse(v, &s_attack.kind)) != 0)
                fm_errmsg_set(&e, rc,
                              "--attack: '%s' is not one of signflip, noise, backdoor, none", v);
            have_kind = 1;
            break;
        case 1:
            rc = fm_parse_float("--scale", v, 1e-9, 1e9, &d, &e);
            s_attack.scale = d;
            break;
        case 2:
            rc = fm_parse_float("--noise-norm", v, 1e-9, 1e18, &d, &e);
            s_attack.noise_norm = d;
            break;
        case 3:
            rc = fm_parse_int("--target", v, 0, 9, &l, &e);
            s_attack.target = (int)l;
            break;
        case 4:
            rc = fm_parse_float("--poison-fraction", v, 1e-9, 1, &d, &e);
            s_attack.poison_fraction = d;
            break;
        case 5:
            rc = fm_parse_float("--boost", v, 1e-9, 1e9, &d, &e);
            s_attack.boost = d;
            break;
        default: rc = fm_parse_u64("--attack-seed", v, &s_attack.seed, &e); break;
        }
        if (rc != 0) {
            fprintf(stderr, PROG ": %s\n", e.msg);
            return 2;
        }
    }
    *argc = out;
    argv[out] = NULL;
    if (help)
        return 1;
    if (!have_kind) {
        fprintf(stderr, PROG ": --attack KIND is required (see " PROG " --help)\n");
        return 2;
    }
    if (trainer_attack_check(&s_attack, &e) != 0) {
        fprintf(stderr, PROG ": %s\n", e.msg);
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const fm_daemon_t daemon = {.prog = PROG,
                                       .usage = s_usage,
                                       .log_level_key = "trainer.log_level",
                                       .metrics_key = "trainer.metrics_addr",
                                       .blas = true,
                                       .sec_role = FM_SEC_ROLE_TRAINER,
                                       .server_new = s_new,
                                       .server_run = s_run,
                                       .server_destroy = s_destroy};
    int rc = s_parse_attack(&argc, argv);
    if (rc == 2)
        return FM_EXIT_INPUT;
    /* rc 1: --help, which fm_daemon_main prints */
    return fm_daemon_main(&daemon, argc, argv);
}

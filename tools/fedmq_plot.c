/* fedmq plot: accuracy curves of one or more evaluator metrics files (JSON Lines, see
 * evaluator/evaluator_jsonl.h) drawn by gnuplot into a PNG.
 *
 * Each line of each file is parsed with jansson (only "version", "accuracy" and "time" are
 * read; any other key, nested objects and arrays included, is ignored) and written as a
 * three-column data file (seconds since the file's first record, version, accuracy) into a
 * private temp dir, together with a gnuplot script; `gnuplot SCRIPT` runs with its output
 * going to OUT.tmp, which is renamed to OUT only when gnuplot succeeded. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <math.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fedmq_cli.h"
#include "fm_err.h"

extern char **environ;

/* One record's wanted fields. */
typedef struct {
    double version, accuracy, time;
} s_rec_t;

/* What one series contributed (for the script). */
typedef struct {
    long records;
    double tmax; /* largest seconds-since-first-record */
} s_series_t;

/* printf into err[0..errcap) (if any); returns `code`. */
__attribute__((format(printf, 4, 5))) static int s_err(char *err, size_t errcap, int code,
                                                       const char *fmt, ...)
{
    if (err && errcap > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errcap, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* ---- one line ------------------------------------------------------------------------- */

/* The finite number at key in o into *v. 1, or 0 when absent, null or not a number. */
static int s_wanted(json_t *o, const char *key, double *v)
{
    json_t *x = json_object_get(o, key);
    if (!json_is_number(x) || !isfinite(json_number_value(x)))
        return 0;
    *v = json_number_value(x);
    return 1;
}

/* Parse the non-blank line [line, line + n) as a JSON object into r. 1 for a record (numeric
 * "version", "accuracy" and "time"), 0 for valid JSON that is no record, -1 when malformed
 * (the reason, with its column, in why). */
static int s_parse_line(const char *line, size_t n, s_rec_t *r, char *why, size_t cap)
{
    if (memchr(line, '\0', n)) {
        snprintf(why, cap, "NUL byte");
        return -1;
    }
    json_error_t jerr;
    json_t *o = json_loadb(line, n, 0, &jerr);
    if (!o) {
        snprintf(why, cap, "%s at column %d", jerr.text, jerr.column);
        return -1;
    }
    int rc = -1;
    if (!json_is_object(o))
        snprintf(why, cap, "not a JSON object");
    else
        rc = s_wanted(o, "version", &r->version) && s_wanted(o, "accuracy", &r->accuracy) &&
             s_wanted(o, "time", &r->time);
    json_decref(o);
    return rc;
}

/* ---- files ---------------------------------------------------------------------------- */

/* Read the metrics file `path` and write its records to `dat` as "seconds version accuracy"
 * lines. Returns 0 or an exit code with a message in err. */
static int s_convert(const char *path, FILE *dat, s_series_t *sr, char *err, size_t errcap)
{
    int rc = 0;
    char *line = NULL;
    size_t cap = 0;
    FILE *f = fopen(path, "r");
    if (!f) {
        rc = s_err(err, errcap, FM_EXIT_INPUT, "%s: %s", path, strerror(errno));
        goto cleanup;
    }
    long lineno = 0;
    double t0 = 0.0;
    ssize_t n;
    errno = 0;
    while ((n = getline(&line, &cap, f)) != -1) {
        lineno++;
        if (strspn(line, " \t\r\n") == (size_t)n)
            continue; /* empty or blank line */
        s_rec_t r;
        char why[200];
        int got = s_parse_line(line, (size_t)n, &r, why, sizeof why);
        if (got < 0) {
            rc = s_err(err, errcap, FM_EXIT_INPUT, "%s:%ld: malformed line: %s", path, lineno,
                       why);
            goto cleanup;
        }
        if (got == 0)
            continue; /* valid JSON but not a scored model (or accuracy null): skip */
        if (sr->records == 0)
            t0 = r.time;
        double t = r.time - t0;
        if (t > sr->tmax)
            sr->tmax = t;
        if (fprintf(dat, "%.17g %.17g %.17g\n", t, r.version, r.accuracy) < 0) {
            rc = s_err(err, errcap, FM_EXIT_RUNTIME, "writing plot data: %s", strerror(errno));
            goto cleanup;
        }
        sr->records++;
    }
    if (ferror(f)) {
        rc = s_err(err, errcap, FM_EXIT_INPUT, "%s: %s", path, strerror(errno ? errno : EIO));
        goto cleanup;
    }
    if (sr->records == 0)
        rc = s_err(
            err, errcap, FM_EXIT_INPUT,
            "%s: no metrics records (JSON lines with \"version\", \"accuracy\" and \"time\")",
            path);
cleanup:
    free(line);
    if (f)
        fclose(f);
    return rc;
}

/* Write s as a gnuplot single-quoted string ('' stands for one quote). */
static void s_gp_quote(FILE *f, const char *s)
{
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'')
            fputc('\'', f);
        if (*s != '\n' && *s != '\r')
            fputc(*s, f);
    }
    fputc('\'', f);
}

/* Default legend label: basename of path without its last extension, into buf. */
static const char *s_label(const char *path, char *buf, size_t cap)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    snprintf(buf, cap, "%s", *b ? b : path);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf)
        *dot = '\0';
    return buf;
}

/* One panel: `plot` of every series with column `xcol` (1 = seconds, 2 = version). */
static void s_gp_panel(FILE *g, const char *dir, const char *const *files,
                       const char *const *labels, int n, int xcol, double tscale)
{
    fprintf(g, "plot ");
    for (int i = 0; i < n; i++) {
        char dat[4096], lb[1024];
        snprintf(dat, sizeof dat, "%s/s%d.dat", dir, i);
        const char *label = labels && labels[i] ? labels[i] : s_label(files[i], lb, sizeof lb);
        s_gp_quote(g, dat);
        if (xcol == 1)
            fprintf(g, " using ($1/%g):3", tscale);
        else
            fprintf(g, " using 2:3");
        fprintf(g, " with linespoints linestyle %d title ", i % 8 + 1);
        s_gp_quote(g, label);
        fprintf(g, "%s", i + 1 < n ? ", \\\n     " : "\n");
    }
}

/* The gnuplot script for the series in dir. */
static void s_gp_script(FILE *g, const char *dir, const char *tmp_png, const char *const *files,
                        const char *const *labels, int n, const char *title, int xmode,
                        double tmax)
{
    int both = (xmode & FM_PLOT_X_BOTH) == FM_PLOT_X_BOTH;
    int width = both ? 1200 : 800;
    fprintf(g,
            "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
            "  set terminal pngcairo size %d,500 noenhanced font ',10'\n"
            "} else {\n"
            "  set terminal png size %d,500 noenhanced\n"
            "}\n",
            width, width);
    fprintf(g, "set output ");
    s_gp_quote(g, tmp_png);
    fprintf(g, "\nset grid\nset key bottom right\nset ylabel 'test accuracy'\n"
               "set yrange [*:*]\nset offsets 0, 0, graph 0.05, graph 0.05\n");
    static const char *const colors[8] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728",
                                          "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"};
    for (int i = 0; i < 8; i++)
        fprintf(g, "set linestyle %d linecolor rgb '%s' linewidth 2 pointtype 7 pointsize 0.5\n",
                i + 1, colors[i]);
    const char *unit = "s";
    double tscale = 1.0;
    if (tmax > 7200) {
        unit = "h";
        tscale = 3600.0;
    } else if (tmax > 600) {
        unit = "min";
        tscale = 60.0;
    }
    if (both) {
        fprintf(g, "set multiplot layout 1,2");
        if (title && *title) {
            fprintf(g, " title ");
            s_gp_quote(g, title);
        }
        fprintf(g, "\n");
    } else if (title && *title) {
        fprintf(g, "set title ");
        s_gp_quote(g, title);
        fprintf(g, "\n");
    }
    if (xmode & FM_PLOT_X_TIME) {
        if (both)
            fprintf(g, "set title 'accuracy vs wall time'\n");
        fprintf(g, "set xlabel 'wall time since the first evaluation (%s)'\n", unit);
        s_gp_panel(g, dir, files, labels, n, 1, tscale);
    }
    if (xmode & FM_PLOT_X_VERSION) {
        if (both)
            fprintf(g, "set title 'accuracy vs model version'\n");
        fprintf(g, "set xlabel 'model version'\n");
        s_gp_panel(g, dir, files, labels, n, 2, 1.0);
    }
    if (both)
        fprintf(g, "unset multiplot\n");
    fprintf(g, "set output\n");
}

/* First line of the file at path (gnuplot's complaint), into buf; "" if none. */
static const char *s_first_line(const char *path, char *buf, size_t cap)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f)
        return buf;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n")] = '\0';
        char *s = line + strspn(line, " \t^");
        if (*s) {
            snprintf(buf, cap, "%s", s);
            break;
        }
    }
    fclose(f);
    return buf;
}

/* Run `gnuplot script` with stdin from /dev/null and stdout+stderr into log. Returns 0 or
 * an exit code with a message in err. */
static int s_run_gnuplot(const char *script, const char *log, char *err, size_t errcap)
{
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0)
        return s_err(err, errcap, FM_EXIT_RUNTIME, "cannot run gnuplot: out of memory");
    int rc = 0;
    pid_t pid;
    char *argv[] = {"gnuplot", (char *)script, NULL};
    if (posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0) != 0 ||
        posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0600) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, 1, 2) != 0) {
        rc = s_err(err, errcap, FM_EXIT_RUNTIME, "cannot run gnuplot: out of memory");
        goto cleanup;
    }
    int e = posix_spawnp(&pid, "gnuplot", &fa, NULL, argv, environ);
    if (e == ENOENT) {
        rc = s_err(err, errcap, FM_EXIT_RUNTIME,
                   "gnuplot not found: apt-get install gnuplot-nox");
        goto cleanup;
    }
    if (e != 0) {
        rc = s_err(err, errcap, FM_EXIT_RUNTIME, "cannot run gnuplot: %s", strerror(e));
        goto cleanup;
    }
    int st;
    while (waitpid(pid, &st, 0) == -1) {
        if (errno != EINTR) {
            rc = s_err(err, errcap, FM_EXIT_RUNTIME, "waiting for gnuplot: %s", strerror(errno));
            goto cleanup;
        }
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127) {
        /* posix_spawnp may report a missing program through the child (exec failure) */
        rc = s_err(err, errcap, FM_EXIT_RUNTIME,
                   "gnuplot not found: apt-get install gnuplot-nox");
    } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char first[256];
        s_first_line(log, first, sizeof first);
        if (WIFSIGNALED(st))
            rc = s_err(err, errcap, FM_EXIT_RUNTIME, "gnuplot killed by signal %d%s%s",
                       WTERMSIG(st), *first ? ": " : "", first);
        else
            rc = s_err(err, errcap, FM_EXIT_RUNTIME, "gnuplot failed (exit %d)%s%s",
                       WEXITSTATUS(st), *first ? ": " : "", first);
    }
cleanup:
    posix_spawn_file_actions_destroy(&fa);
    return rc;
}

/* Remove dir and the plain files in it (the temp dir holds nothing else). */
static void s_rmtree(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            char p[4200];
            if (snprintf(p, sizeof p, "%s/%s", dir, de->d_name) < (int)sizeof p)
                unlink(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* Nonzero when the file starts with the PNG signature. */
static int s_is_png(const char *path)
{
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    unsigned char b[8];
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    return n == sizeof b && memcmp(b, sig, sizeof b) == 0;
}

/* A private temp dir (under $TMPDIR or /tmp) into dir[0..cap). 0, or an exit code with a
 * message in err (dir is then ""). */
static int s_make_tmpdir(char *dir, size_t cap, char *err, size_t errcap)
{
    const char *tmpdir = getenv("TMPDIR");
    if (!tmpdir || !*tmpdir)
        tmpdir = "/tmp";
    if (snprintf(dir, cap, "%s/fedmq-plot.XXXXXX", tmpdir) >= (int)cap) {
        dir[0] = '\0';
        return s_err(err, errcap, FM_EXIT_RUNTIME, "TMPDIR is too long");
    }
    if (!mkdtemp(dir)) {
        int rc = s_err(err, errcap, FM_EXIT_RUNTIME, "cannot create a temp dir in %s: %s", tmpdir,
                       strerror(errno));
        dir[0] = '\0';
        return rc;
    }
    return 0;
}

/* Each metrics file as <dir>/s<i>.dat; *tmax is the longest series in seconds. 0, or an exit
 * code with a message in err. */
static int s_write_series(const char *dir, const char *const *files, int n, double *tmax,
                          char *err, size_t errcap)
{
    char path[4200];
    *tmax = 0.0;
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/s%d.dat", dir, i);
        FILE *dat = fopen(path, "w");
        if (!dat)
            return s_err(err, errcap, FM_EXIT_RUNTIME, "%s: %s", path, strerror(errno));
        s_series_t sr = {0, 0.0};
        int rc = s_convert(files[i], dat, &sr, err, errcap);
        if (fclose(dat) != 0 && rc == 0)
            rc = s_err(err, errcap, FM_EXIT_RUNTIME, "%s: %s", path, strerror(errno));
        if (rc != 0)
            return rc;
        if (sr.tmax > *tmax)
            *tmax = sr.tmax;
    }
    return 0;
}

/* Create "<out_png>.tmp" (its name into tmp_png; gnuplot truncates it) to check now that
 * the output is writable by us. 0, or FM_EXIT_INPUT with a message in err (tmp_png is
 * then "" and nothing was created). */
static int s_create_tmp_png(const char *out_png, char *tmp_png, size_t cap, char *err,
                            size_t errcap)
{
    if (snprintf(tmp_png, cap, "%s.tmp", out_png) >= (int)cap) {
        tmp_png[0] = '\0';
        return s_err(err, errcap, FM_EXIT_INPUT, "%s: path too long", out_png);
    }
    int fd = open(tmp_png, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        int rc = s_err(err, errcap, FM_EXIT_INPUT, "%s: cannot create %s: %s", out_png, tmp_png,
                       strerror(errno));
        tmp_png[0] = '\0';
        return rc;
    }
    close(fd);
    return 0;
}

/* The gnuplot script into the file `path`. 0, or FM_EXIT_RUNTIME with a message in err. */
static int s_write_script(const char *path, const char *dir, const char *tmp_png,
                          const char *const *files, const char *const *labels, int n,
                          const char *title, int xmode, double tmax, char *err, size_t errcap)
{
    FILE *g = fopen(path, "w");
    if (!g)
        return s_err(err, errcap, FM_EXIT_RUNTIME, "%s: %s", path, strerror(errno));
    s_gp_script(g, dir, tmp_png, files, labels, n, title, xmode, tmax);
    int wr = ferror(g);
    if (fclose(g) != 0 || wr)
        return s_err(err, errcap, FM_EXIT_RUNTIME, "%s: write error", path);
    return 0;
}

/* Run gnuplot on <dir>/plot.gp and move its PNG tmp_png to out_png. 0, or FM_EXIT_RUNTIME
 * with a message in err. */
static int s_draw(const char *dir, const char *tmp_png, const char *out_png, char *err,
                  size_t errcap)
{
    char script[4200], log[4200];
    snprintf(script, sizeof script, "%s/plot.gp", dir);
    snprintf(log, sizeof log, "%s/gnuplot.log", dir);
    int rc = s_run_gnuplot(script, log, err, errcap);
    if (rc != 0)
        return rc;
    if (!s_is_png(tmp_png)) {
        char first[256];
        s_first_line(log, first, sizeof first);
        return s_err(err, errcap, FM_EXIT_RUNTIME, "gnuplot wrote no PNG%s%s", *first ? ": " : "",
                     first);
    }
    if (rename(tmp_png, out_png) != 0)
        return s_err(err, errcap, FM_EXIT_RUNTIME, "%s: %s", out_png, strerror(errno));
    return 0;
}

int fm_plot_files(const char *const *files, const char *const *labels, int n, const char *out_png,
                  const char *title, int xmode, char *err, size_t errcap)
{
    if (err && errcap > 0)
        err[0] = '\0';
    if (!files || n <= 0)
        return s_err(err, errcap, FM_EXIT_INPUT, "no metrics files given");
    if (!out_png || !*out_png)
        return s_err(err, errcap, FM_EXIT_INPUT, "no output file given (-o FILE.png)");
    if (xmode == 0)
        xmode = FM_PLOT_X_BOTH;
    if ((xmode & ~FM_PLOT_X_BOTH) != 0)
        return s_err(err, errcap, FM_EXIT_INPUT, "bad x-axis mode %d", xmode);

    char dir[4096] = "", tmp_png[4096] = "", script[4200];
    double tmax = 0.0;
    int rc = s_make_tmpdir(dir, sizeof dir, err, errcap);
    if (rc != 0)
        goto cleanup;
    if ((rc = s_write_series(dir, files, n, &tmax, err, errcap)) != 0 ||
        (rc = s_create_tmp_png(out_png, tmp_png, sizeof tmp_png, err, errcap)) != 0)
        goto cleanup;
    snprintf(script, sizeof script, "%s/plot.gp", dir);
    if ((rc = s_write_script(script, dir, tmp_png, files, labels, n, title, xmode, tmax, err,
                             errcap)) != 0 ||
        (rc = s_draw(dir, tmp_png, out_png, err, errcap)) != 0)
        goto cleanup;
    tmp_png[0] = '\0'; /* renamed to out_png */
cleanup:
    if (tmp_png[0])
        unlink(tmp_png);
    if (dir[0])
        s_rmtree(dir);
    return rc;
}

static void s_usage(FILE *f)
{
    fprintf(
        f,
        "usage: fedmq plot METRICS.jsonl... -o FILE.png [--label NAME]... [--title TEXT]\n"
        "                  [--x time|version|both]\n"
        "Draw the test accuracy of one or more evaluator metrics files (JSON lines)\n"
        "into a PNG with gnuplot, one line per file.\n"
        "  -o, --out FILE    the PNG to write (replaced atomically)\n"
        "  --label NAME      legend label; the Nth --label names the Nth file (default:\n"
        "                    the file name without directory and extension)\n"
        "  --title TEXT      title of the figure\n"
        "  --x MODE          time: accuracy vs wall time since each file's first record;\n"
        "                    version: accuracy vs model version; both (default): two panels\n");
}

/* `fedmq plot` options: -o, --label (into labels[], *nlabels), --title, --x. optind is left
 * at the first file. 0 to go on, -1 after printing help, or FM_EXIT_INPUT with a message in
 * err. */
static int s_plot_flags(int argc, char **argv, const char **out, const char **labels,
                        int *nlabels, const char **title, int *xmode, char *err, size_t errcap)
{
    enum { OPT_LABEL = 256, OPT_TITLE, OPT_X };
    static const struct option longopts[] = {{"out", required_argument, 0, 'o'},
                                             {"label", required_argument, 0, OPT_LABEL},
                                             {"title", required_argument, 0, OPT_TITLE},
                                             {"x", required_argument, 0, OPT_X},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    opterr = 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, ":ho:", longopts, NULL)) != -1) {
        switch (ch) {
        case 'o': *out = optarg; break;
        case OPT_LABEL: labels[(*nlabels)++] = optarg; break;
        case OPT_TITLE: *title = optarg; break;
        case OPT_X:
            if (strcmp(optarg, "time") == 0)
                *xmode = FM_PLOT_X_TIME;
            else if (strcmp(optarg, "version") == 0)
                *xmode = FM_PLOT_X_VERSION;
            else if (strcmp(optarg, "both") == 0)
                *xmode = FM_PLOT_X_BOTH;
            else
                return s_err(err, errcap, FM_EXIT_INPUT, "--x: '%s' is not time, version or both",
                             optarg);
            break;
        case 'h': s_usage(stdout); return -1;
        default:
            return s_err(err, errcap, FM_EXIT_INPUT, "%s: %s (see fedmq plot --help)",
                         argv[optind - 1], ch == ':' ? "missing value" : "unknown option");
        }
    }
    return 0;
}

int fm_cli_plot(int argc, char **argv)
{
    const char *out = NULL, *title = NULL;
    int xmode = FM_PLOT_X_BOTH, nlabels = 0, nfiles = 0, rc = 0;
    char err[1024] = "";
    /* at most argc labels and files; labels[] is also the per-file label table */
    const char **labels = calloc((size_t)argc + 1, sizeof *labels);
    const char **files = calloc((size_t)argc + 1, sizeof *files);
    if (!labels || !files) {
        rc = s_err(err, sizeof err, FM_EXIT_RUNTIME, "out of memory");
        goto cleanup;
    }
    rc = s_plot_flags(argc, argv, &out, labels, &nlabels, &title, &xmode, err, sizeof err);
    if (rc != 0) {
        rc = rc < 0 ? FM_EXIT_OK : rc;
        goto cleanup;
    }
    for (int i = optind; i < argc; i++)
        files[nfiles++] = argv[i];
    if (nfiles == 0)
        rc = s_err(err, sizeof err, FM_EXIT_INPUT,
                   "no metrics files given (see fedmq plot --help)");
    else if (!out)
        rc = s_err(err, sizeof err, FM_EXIT_INPUT,
                   "-o FILE.png is required (see fedmq plot --help)");
    else if (nlabels > nfiles)
        rc = s_err(err, sizeof err, FM_EXIT_INPUT, "%d --label values for %d file%s", nlabels,
                   nfiles, nfiles == 1 ? "" : "s");
    else
        rc = fm_plot_files(files, labels, nfiles, out, title, xmode, err, sizeof err);
cleanup:
    if (rc != 0)
        fprintf(stderr, "fedmq plot: %s\n", err[0] ? err : "failed");
    free(labels);
    free(files);
    return rc;
}

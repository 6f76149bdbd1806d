/* fedmq plot: accuracy curves of one or more evaluator metrics files (JSON Lines, see
 * evaluator/evaluator_jsonl.h) drawn by gnuplot into a PNG.
 *
 * Each file is parsed here (only "version", "accuracy" and "time" are read; any other key,
 * nested objects and arrays included, is skipped) and written as a three-column data file
 * (seconds since the file's first record, version, accuracy) into a private temp dir,
 * together with a gnuplot script; `gnuplot SCRIPT` runs with its output going to
 * OUT.tmp, which is renamed to OUT only when gnuplot succeeded. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
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

extern char **environ;

#define EXIT_BAD_INPUT 2
#define EXIT_RUNTIME 1
#define S_MAX_DEPTH 64   /* JSON nesting accepted inside a record */

/* One record's wanted fields while a line is parsed. */
typedef struct {
    double version, accuracy, time;
    int has_version, has_accuracy, has_time;
} s_rec_t;

/* Cursor over one line; the line is NUL-terminated at `end`. */
typedef struct {
    const char *p, *end, *start;
    const char *why; /* set on the first syntax error */
} s_cur_t;

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

/* ---- a small, strict JSON scanner for one line --------------------------------------- */

static void s_ws(s_cur_t *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r' || *c->p == '\n'))
        c->p++;
}

static int s_fail(s_cur_t *c, const char *why)
{
    if (!c->why)
        c->why = why;
    return -1;
}

static int s_hex(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

static int s_digit(char ch) { return ch >= '0' && ch <= '9'; }

/* A string at c->p (on the opening quote); its raw contents are [*s, *s + *n). */
static int s_string(s_cur_t *c, const char **s, size_t *n)
{
    if (c->p >= c->end || *c->p != '"')
        return s_fail(c, "expected a string");
    const char *b = ++c->p;
    while (c->p < c->end && *c->p != '"') {
        unsigned char ch = (unsigned char)*c->p;
        if (ch < 0x20)
            return s_fail(c, "control character in a string");
        if (ch == '\\') {
            c->p++;
            if (c->p >= c->end)
                break;
            if (*c->p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (c->p + i >= c->end || !s_hex(c->p[i]))
                        return s_fail(c, "bad \\u escape");
                c->p += 4;
            } else if (!strchr("\"\\/bfnrt", *c->p)) {
                return s_fail(c, "bad escape in a string");
            }
        }
        c->p++;
    }
    if (c->p >= c->end)
        return s_fail(c, "unterminated string");
    if (s)
        *s = b;
    if (n)
        *n = (size_t)(c->p - b);
    c->p++;
    return 0;
}

/* A JSON number at c->p; its text is [*s, c->p). */
static int s_number(s_cur_t *c, const char **s)
{
    const char *b = c->p;
    if (c->p < c->end && *c->p == '-')
        c->p++;
    if (c->p >= c->end || !s_digit(*c->p))
        return s_fail(c, "bad number");
    if (*c->p == '0')
        c->p++;
    else
        while (c->p < c->end && s_digit(*c->p))
            c->p++;
    if (c->p < c->end && *c->p == '.') {
        c->p++;
        if (c->p >= c->end || !s_digit(*c->p))
            return s_fail(c, "bad number");
        while (c->p < c->end && s_digit(*c->p))
            c->p++;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
            c->p++;
        if (c->p >= c->end || !s_digit(*c->p))
            return s_fail(c, "bad number");
        while (c->p < c->end && s_digit(*c->p))
            c->p++;
    }
    *s = b;
    return 0;
}

static int s_literal(s_cur_t *c, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return s_fail(c, "unexpected character");
    c->p += n;
    return 0;
}

/* Skip any JSON value at c->p (after whitespace); depth bounds the nesting. */
static int s_skip(s_cur_t *c, int depth)
{
    s_ws(c);
    if (c->p >= c->end)
        return s_fail(c, "expected a value");
    if (depth > S_MAX_DEPTH)
        return s_fail(c, "nested too deeply");
    const char *num;
    switch (*c->p) {
    case '"': return s_string(c, NULL, NULL);
    case 't': return s_literal(c, "true");
    case 'f': return s_literal(c, "false");
    case 'n': return s_literal(c, "null");
    case '[':
    case '{': {
        char close = *c->p == '[' ? ']' : '}';
        c->p++;
        s_ws(c);
        if (c->p < c->end && *c->p == close) {
            c->p++;
            return 0;
        }
        for (;;) {
            if (close == '}') {
                s_ws(c);
                if (s_string(c, NULL, NULL) != 0)
                    return -1;
                s_ws(c);
                if (c->p >= c->end || *c->p != ':')
                    return s_fail(c, "expected ':'");
                c->p++;
            }
            if (s_skip(c, depth + 1) != 0)
                return -1;
            s_ws(c);
            if (c->p < c->end && *c->p == ',') {
                c->p++;
                continue;
            }
            if (c->p < c->end && *c->p == close) {
                c->p++;
                return 0;
            }
            return s_fail(c, close == ']' ? "expected ',' or ']'" : "expected ',' or '}'");
        }
    }
    default: return s_number(c, &num);
    }
}

/* The value of a wanted key: a number (stored, *has = 1), null (*has = 0) or any other
 * value (skipped, *has = 0). */
static int s_wanted(s_cur_t *c, double *v, int *has)
{
    s_ws(c);
    *has = 0;
    if (c->p < c->end && (*c->p == '-' || s_digit(*c->p))) {
        const char *b;
        if (s_number(c, &b) != 0)
            return -1;
        /* the line is NUL-terminated (getline), so strtod stops inside it; it must read
         * exactly the number the scanner accepted */
        char *e;
        *v = strtod(b, &e);
        if (e != c->p)
            return s_fail(c, "bad number");
        *has = isfinite(*v);
        return 0;
    }
    return s_skip(c, 1);
}

/* Parse one non-empty line as a JSON object into r. Returns 0, or -1 with c->why set. */
static int s_parse_line(s_cur_t *c, s_rec_t *r)
{
    memset(r, 0, sizeof *r);
    s_ws(c);
    if (c->p >= c->end || *c->p != '{')
        return s_fail(c, "not a JSON object");
    c->p++;
    s_ws(c);
    if (c->p < c->end && *c->p == '}') {
        c->p++;
    } else {
        for (;;) {
            const char *k;
            size_t kn;
            s_ws(c);
            if (s_string(c, &k, &kn) != 0)
                return -1;
            s_ws(c);
            if (c->p >= c->end || *c->p != ':')
                return s_fail(c, "expected ':'");
            c->p++;
            int rc;
            if (kn == 7 && memcmp(k, "version", 7) == 0)
                rc = s_wanted(c, &r->version, &r->has_version);
            else if (kn == 8 && memcmp(k, "accuracy", 8) == 0)
                rc = s_wanted(c, &r->accuracy, &r->has_accuracy);
            else if (kn == 4 && memcmp(k, "time", 4) == 0)
                rc = s_wanted(c, &r->time, &r->has_time);
            else
                rc = s_skip(c, 1);
            if (rc != 0)
                return -1;
            s_ws(c);
            if (c->p < c->end && *c->p == ',') {
                c->p++;
                continue;
            }
            if (c->p < c->end && *c->p == '}') {
                c->p++;
                break;
            }
            return s_fail(c, "expected ',' or '}'");
        }
    }
    s_ws(c);
    if (c->p != c->end)
        return s_fail(c, "trailing characters after the object");
    return 0;
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
        rc = s_err(err, errcap, EXIT_BAD_INPUT, "%s: %s", path, strerror(errno));
        goto cleanup;
    }
    long lineno = 0;
    double t0 = 0.0;
    ssize_t n;
    errno = 0;
    while ((n = getline(&line, &cap, f)) != -1) {
        lineno++;
        s_cur_t c = {.p = line, .end = line + n, .start = line, .why = NULL};
        s_ws(&c);
        if (c.p == c.end)
            continue; /* empty or blank line */
        if (memchr(line, '\0', (size_t)n)) {
            rc = s_err(err, errcap, EXIT_BAD_INPUT, "%s:%ld: malformed line: NUL byte", path, lineno);
            goto cleanup;
        }
        s_rec_t r;
        if (s_parse_line(&c, &r) != 0) {
            rc = s_err(err, errcap, EXIT_BAD_INPUT, "%s:%ld: malformed line: %s at column %ld",
                       path, lineno, c.why, (long)(c.p - c.start) + 1);
            goto cleanup;
        }
        if (!r.has_version || !r.has_accuracy || !r.has_time)
            continue; /* valid JSON but not a scored model (or accuracy null): skip */
        if (sr->records == 0)
            t0 = r.time;
        double t = r.time - t0;
        if (t > sr->tmax)
            sr->tmax = t;
        if (fprintf(dat, "%.17g %.17g %.17g\n", t, r.version, r.accuracy) < 0) {
            rc = s_err(err, errcap, EXIT_RUNTIME, "writing plot data: %s", strerror(errno));
            goto cleanup;
        }
        sr->records++;
    }
    if (ferror(f)) {
        rc = s_err(err, errcap, EXIT_BAD_INPUT, "%s: %s", path,
                   strerror(errno ? errno : EIO));
        goto cleanup;
    }
    if (sr->records == 0)
        rc = s_err(err, errcap, EXIT_BAD_INPUT,
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
    fprintf(g, "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {\n"
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
        return s_err(err, errcap, EXIT_RUNTIME, "cannot run gnuplot: out of memory");
    int rc = 0;
    pid_t pid;
    char *argv[] = {"gnuplot", (char *)script, NULL};
    if (posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0) != 0 ||
        posix_spawn_file_actions_addopen(&fa, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0600) != 0 ||
        posix_spawn_file_actions_adddup2(&fa, 1, 2) != 0) {
        rc = s_err(err, errcap, EXIT_RUNTIME, "cannot run gnuplot: out of memory");
        goto cleanup;
    }
    int e = posix_spawnp(&pid, "gnuplot", &fa, NULL, argv, environ);
    if (e == ENOENT) {
        rc = s_err(err, errcap, EXIT_RUNTIME, "gnuplot not found: apt-get install gnuplot-nox");
        goto cleanup;
    }
    if (e != 0) {
        rc = s_err(err, errcap, EXIT_RUNTIME, "cannot run gnuplot: %s", strerror(e));
        goto cleanup;
    }
    int st;
    while (waitpid(pid, &st, 0) == -1) {
        if (errno != EINTR) {
            rc = s_err(err, errcap, EXIT_RUNTIME, "waiting for gnuplot: %s", strerror(errno));
            goto cleanup;
        }
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == 127) {
        /* posix_spawnp may report a missing program through the child (exec failure) */
        rc = s_err(err, errcap, EXIT_RUNTIME, "gnuplot not found: apt-get install gnuplot-nox");
    } else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        char first[256];
        s_first_line(log, first, sizeof first);
        if (WIFSIGNALED(st))
            rc = s_err(err, errcap, EXIT_RUNTIME, "gnuplot killed by signal %d%s%s",
                       WTERMSIG(st), *first ? ": " : "", first);
        else
            rc = s_err(err, errcap, EXIT_RUNTIME, "gnuplot failed (exit %d)%s%s",
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

int fm_plot_files(const char *const *files, const char *const *labels, int n, const char *out_png,
                  const char *title, int xmode, char *err, size_t errcap)
{
    if (err && errcap > 0)
        err[0] = '\0';
    if (!files || n <= 0)
        return s_err(err, errcap, EXIT_BAD_INPUT, "no metrics files given");
    if (!out_png || !*out_png)
        return s_err(err, errcap, EXIT_BAD_INPUT, "no output file given (-o FILE.png)");
    if (xmode == 0)
        xmode = FM_PLOT_X_BOTH;
    if ((xmode & ~FM_PLOT_X_BOTH) != 0)
        return s_err(err, errcap, EXIT_BAD_INPUT, "bad x-axis mode %d", xmode);

    int rc = 0;
    char dir[4096] = "";
    char tmp_png[4096] = "";
    char path[4200];
    FILE *g = NULL;
    int have_tmp_png = 0;
    double tmax = 0.0;

    const char *tmpdir = getenv("TMPDIR");
    if (!tmpdir || !*tmpdir)
        tmpdir = "/tmp";
    if (snprintf(dir, sizeof dir, "%s/fedmq-plot.XXXXXX", tmpdir) >= (int)sizeof dir) {
        dir[0] = '\0';
        rc = s_err(err, errcap, EXIT_RUNTIME, "TMPDIR is too long");
        goto cleanup;
    }
    if (!mkdtemp(dir)) {
        rc = s_err(err, errcap, EXIT_RUNTIME, "cannot create a temp dir in %s: %s", tmpdir,
                   strerror(errno));
        dir[0] = '\0';
        goto cleanup;
    }
    for (int i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/s%d.dat", dir, i);
        FILE *dat = fopen(path, "w");
        if (!dat) {
            rc = s_err(err, errcap, EXIT_RUNTIME, "%s: %s", path, strerror(errno));
            goto cleanup;
        }
        s_series_t sr = {0, 0.0};
        rc = s_convert(files[i], dat, &sr, err, errcap);
        if (fclose(dat) != 0 && rc == 0)
            rc = s_err(err, errcap, EXIT_RUNTIME, "%s: %s", path, strerror(errno));
        if (rc != 0)
            goto cleanup;
        if (sr.tmax > tmax)
            tmax = sr.tmax;
    }

    /* the output must be writable by us: create OUT.tmp now (gnuplot truncates it) */
    if (snprintf(tmp_png, sizeof tmp_png, "%s.tmp", out_png) >= (int)sizeof tmp_png) {
        tmp_png[0] = '\0';
        rc = s_err(err, errcap, EXIT_BAD_INPUT, "%s: path too long", out_png);
        goto cleanup;
    }
    int fd = open(tmp_png, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        rc = s_err(err, errcap, EXIT_BAD_INPUT, "%s: cannot create %s: %s", out_png, tmp_png,
                   strerror(errno));
        goto cleanup;
    }
    close(fd);
    have_tmp_png = 1;

    snprintf(path, sizeof path, "%s/plot.gp", dir);
    if (!(g = fopen(path, "w"))) {
        rc = s_err(err, errcap, EXIT_RUNTIME, "%s: %s", path, strerror(errno));
        goto cleanup;
    }
    s_gp_script(g, dir, tmp_png, files, labels, n, title, xmode, tmax);
    int wr = ferror(g);
    if (fclose(g) != 0 || wr) {
        g = NULL;
        rc = s_err(err, errcap, EXIT_RUNTIME, "%s: write error", path);
        goto cleanup;
    }
    g = NULL;

    char log[4200];
    snprintf(log, sizeof log, "%s/gnuplot.log", dir);
    if ((rc = s_run_gnuplot(path, log, err, errcap)) != 0)
        goto cleanup;
    if (!s_is_png(tmp_png)) {
        char first[256];
        s_first_line(log, first, sizeof first);
        rc = s_err(err, errcap, EXIT_RUNTIME, "gnuplot wrote no PNG%s%s", *first ? ": " : "",
                   first);
        goto cleanup;
    }
    if (rename(tmp_png, out_png) != 0) {
        rc = s_err(err, errcap, EXIT_RUNTIME, "%s: %s", out_png, strerror(errno));
        goto cleanup;
    }
    have_tmp_png = 0;
cleanup:
    if (g)
        fclose(g);
    if (have_tmp_png)
        unlink(tmp_png);
    if (dir[0])
        s_rmtree(dir);
    return rc;
}

static void s_usage(FILE *f)
{
    fprintf(f, "usage: fedmq plot METRICS.jsonl... -o FILE.png [--label NAME]... [--title TEXT]\n"
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

int fm_cli_plot(int argc, char **argv)
{
    enum { OPT_LABEL = 256, OPT_TITLE, OPT_X };
    static const struct option longopts[] = {{"out", required_argument, 0, 'o'},
                                             {"label", required_argument, 0, OPT_LABEL},
                                             {"title", required_argument, 0, OPT_TITLE},
                                             {"x", required_argument, 0, OPT_X},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    const char *out = NULL, *title = NULL;
    int xmode = FM_PLOT_X_BOTH, nlabels = 0, rc = 0;
    char err[1024] = "";
    /* at most argc labels and files; labels[] is also the per-file label table */
    const char **labels = calloc((size_t)argc + 1, sizeof *labels);
    const char **files = calloc((size_t)argc + 1, sizeof *files);
    if (!labels || !files) {
        fprintf(stderr, "fedmq plot: out of memory\n");
        rc = EXIT_RUNTIME;
        goto cleanup;
    }
    opterr = 0;
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, ":ho:", longopts, NULL)) != -1) {
        switch (ch) {
        case 'o': out = optarg; break;
        case OPT_LABEL: labels[nlabels++] = optarg; break;
        case OPT_TITLE: title = optarg; break;
        case OPT_X:
            if (strcmp(optarg, "time") == 0)
                xmode = FM_PLOT_X_TIME;
            else if (strcmp(optarg, "version") == 0)
                xmode = FM_PLOT_X_VERSION;
            else if (strcmp(optarg, "both") == 0)
                xmode = FM_PLOT_X_BOTH;
            else {
                snprintf(err, sizeof err, "--x: '%s' is not time, version or both", optarg);
                rc = EXIT_BAD_INPUT;
            }
            break;
        case 'h': s_usage(stdout); goto cleanup;
        default:
            snprintf(err, sizeof err, "%s: %s (see fedmq plot --help)", argv[optind - 1],
                     ch == ':' ? "missing value" : "unknown option");
            rc = EXIT_BAD_INPUT;
        }
        if (rc != 0)
            goto cleanup;
    }
    int nfiles = 0;
    for (int i = optind; i < argc; i++)
        files[nfiles++] = argv[i];
    if (nfiles == 0) {
        snprintf(err, sizeof err, "no metrics files given (see fedmq plot --help)");
        rc = EXIT_BAD_INPUT;
        goto cleanup;
    }
    if (!out) {
        snprintf(err, sizeof err, "-o FILE.png is required (see fedmq plot --help)");
        rc = EXIT_BAD_INPUT;
        goto cleanup;
    }
    if (nlabels > nfiles) {
        snprintf(err, sizeof err, "%d --label values for %d file%s", nlabels, nfiles,
                 nfiles == 1 ? "" : "s");
        rc = EXIT_BAD_INPUT;
        goto cleanup;
    }
    rc = fm_plot_files(files, labels, nfiles, out, title, xmode, err, sizeof err);
cleanup:
    if (rc != 0)
        fprintf(stderr, "fedmq plot: %s\n", err[0] ? err : "failed");
    free(labels);
    free(files);
    return rc;
}

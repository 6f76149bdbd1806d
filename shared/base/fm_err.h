/* fm_err: the one error vocabulary of fedmq.
 *
 * Every function that can fail returns 0 on success and a negative code on failure:
 * either -errno (system errors, e.g. -ENOENT, -ENOMEM) or one of the FM_E* domain codes
 * below. fm_strerror() turns either kind into a static string. */
#ifndef FM_ERR_H
#define FM_ERR_H

enum {
    FM_OK = 0,
    FM_EFIRST = -30100,
    FM_EFORMAT = -30100,    /* malformed file or message (bad header, bad JSON, bad encoding) */
    FM_EMAGIC = -30099,     /* wrong magic number / not a file of the expected kind */
    FM_ETRUNC = -30098,     /* file or message shorter than its header says */
    FM_ESHAPE = -30097,     /* tensor or data shape does not match what is expected */
    FM_EDTYPE = -30096,     /* tensor dtype not supported or not the expected one */
    FM_ENAME = -30095,      /* unknown or missing tensor name */
    FM_EMODEL = -30094,     /* unknown model name */
    FM_EARG = -30093,       /* bad argument or flag value */
    FM_ENONFINITE = -30092, /* NaN or infinity where finite values are required */
    FM_EBLAS = -30091,      /* BLAS self-check failed (results differ from the naive kernel) */
    FM_ERANGE = -30090,     /* value out of its allowed range */
    FM_EVERSION = -30089,   /* unsupported format or protocol version */
    FM_ECRYPTO = -30088,    /* authentication failed (a box does not open) or an invalid key */
    FM_ESTATE = -30087,     /* not possible in the object's current state (e.g. a result asked
                               of a secure-aggregation cohort that aborted) */
    FM_ELAST = -30087
};

/* Exit codes, the same in every fedmq program (daemons, the fedmq tool, and `fedmq run`'s
 * report of a child), chosen by where a failure happened, not by its code:
 *   FM_EXIT_OK       0  done, or stopped by SIGINT/SIGTERM
 *   FM_EXIT_RUNTIME  1  the environment failed: port in use, missing or unreadable data,
 *                       unwritable file or folder, peer unreachable, out of memory
 *   FM_EXIT_INPUT    2  the user's input is wrong: command line, config file (syntax, keys,
 *                       values, cross-key checks), or an input file named on the command line
 *                       that is malformed (a model file that is not safetensors, ...)
 * Every failure prints one line to stderr (or the log) before exiting. */
enum { FM_EXIT_OK = 0, FM_EXIT_RUNTIME = 1, FM_EXIT_INPUT = 2 };

/* The exit code for a failure to read an input file named on the command line: a domain
 * code (FM_E*: the content is wrong) is FM_EXIT_INPUT, -errno (missing, unreadable: the
 * environment) FM_EXIT_RUNTIME. */
int fm_err_file_exit_code(int err);

/* A one-line, human-readable description of the last failure, filled by functions that
 * take a `fm_errmsg_t *` (may be NULL: then nothing is written). It names the file, flag
 * or object and what is wrong, e.g. "data/t10k-images-idx3-ubyte.gz: truncated: ...". */
typedef struct {
    char msg[320];
} fm_errmsg_t;

/* printf-style write into `e` (no-op when e is NULL). Returns `code` so callers can write
 * `return fm_errmsg_set(e, FM_EFORMAT, "%s: ...", path);`. */
int fm_errmsg_set(fm_errmsg_t *e, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Static, never NULL string for a code from this vocabulary (FM_E* or -errno). */
const char *fm_strerror(int err);

/* Always-on assertion for programmer errors (never for input from files, network or
 * config, which is returned as an error): logs file, line and expression, then aborts. */
#define FM_ASSERT(expr) ((expr) ? (void)0 : fm_assert_fail(#expr, __FILE__, __LINE__))
void fm_assert_fail(const char *expr, const char *file, int line) __attribute__((noreturn));

#endif

/* fedmq_cli: the subcommands of the fedmq tool beyond train/eval (one function each,
 * taking the subcommand's argc/argv with argv[0] the subcommand name). Each returns the
 * process exit code (fm_err.h): FM_EXIT_OK, FM_EXIT_RUNTIME, or FM_EXIT_INPUT (one line on
 * stderr for either failure). */
#ifndef FEDMQ_CLI_H
#define FEDMQ_CLI_H

#include <stddef.h>

/* fedmq checkpoints DIR [--metrics FILE.jsonl] | --verify | --reset: list, check or reset
 * the checkpoints of an aggregator. */
int fm_cli_checkpoints(int argc, char **argv);

/* fedmq export --checkpoint DIR [--version V] --out FILE.safetensors */
int fm_cli_export(int argc, char **argv);

/* fedmq watch ENDPOINT [--count N] [--timeout S]: print the METRICS feed live. */
int fm_cli_watch(int argc, char **argv);

/* fedmq run CONFIG [--set k=v ...] [--run-dir DIR]: the whole federation on this machine. */
int fm_cli_run(int argc, char **argv);

/* fedmq partition CONFIG [--set k=v ...] --out FILE.json: the trainers' client partition. */
int fm_cli_partition(int argc, char **argv);

/* fedmq config CONFIG [--set k=v ...]: every key as the daemons resolve it, on stdout. */
int fm_cli_config(int argc, char **argv);

/* fedmq plot METRICS.jsonl... -o FILE.png [--label NAME]... [--title TEXT]
 * [--x time|version|both]: accuracy curves of evaluator metrics files, drawn by gnuplot. */
int fm_cli_plot(int argc, char **argv);

/* fedmq keygen NAME --role ROLE [--clients A-B] [--dir DIR]: a CurveZMQ certificate. */
int fm_cli_keygen(int argc, char **argv);

/* fedmq privacy --q Q --sigma S --steps T [--delta D] [--conversion C] [--target-epsilon E]:
 * epsilon of a DP training plan, or the sigma / steps a target epsilon allows. */
int fm_cli_privacy(int argc, char **argv);

/* x axes of fm_plot_files (a bit set; 0 means both). */
enum { FM_PLOT_X_TIME = 1, FM_PLOT_X_VERSION = 2, FM_PLOT_X_BOTH = 3 };

/* Draw "test accuracy" against wall time (seconds since each file's first record) and/or
 * model version for the n evaluator metrics files `files` (JSON lines, see
 * evaluator/evaluator_jsonl.h), one line per file, into the PNG `out_png` with gnuplot.
 * labels[i] is the legend label of files[i]; labels, or any labels[i], may be NULL (then the
 * file's basename without extension). title may be NULL. xmode: FM_PLOT_X_*.
 * Everything is borrowed; nothing is kept after the call. The PNG is written to
 * "<out_png>.tmp" and renamed over out_png on success only; the private temp dir (under
 * $TMPDIR or /tmp) is always removed. Blank lines are skipped, as are well-formed lines
 * without numeric "version", "accuracy" and "time".
 * Returns 0, or an exit code with a one-line message in err[0..errcap) (err may be NULL):
 *   FM_EXIT_INPUT (2)    bad input: no files, no out_png, an unreadable file, a malformed
 *                        line ("FILE:LINE: ..."), a file without records, an output path
 *                        that cannot be created;
 *   FM_EXIT_RUNTIME (1)  runtime failure: gnuplot not installed ("gnuplot not found:
 *                        apt-get install gnuplot-nox") or failing, temp dir or write errors.
 * Spawns `gnuplot` (found on PATH) and waits for it; keeps no state between calls. */
int fm_plot_files(const char *const *files, const char *const *labels, int n, const char *out_png,
                  const char *title, int xmode, char *err, size_t errcap);

#endif

/* fedmq_cli: the subcommands of the fedmq tool beyond train/eval (one function each,
 * taking the subcommand's argc/argv with argv[0] the subcommand name). Each returns the
 * process exit code: 0 success, 1 runtime failure, 2 bad input (one line on stderr). */
#ifndef FEDMQ_CLI_H
#define FEDMQ_CLI_H

/* fedmq checkpoints DIR [--metrics FILE.jsonl]: list the checkpoints of an aggregator. */
int fm_cli_checkpoints(int argc, char **argv);

/* fedmq export --checkpoint DIR [--version V] --out FILE.safetensors */
int fm_cli_export(int argc, char **argv);

/* fedmq watch ENDPOINT [--count N] [--timeout S]: print the METRICS feed live. */
int fm_cli_watch(int argc, char **argv);

/* fedmq run CONFIG [--set k=v ...] [--run-dir DIR]: the whole federation on this machine. */
int fm_cli_run(int argc, char **argv);

#endif

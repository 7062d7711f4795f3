/*
 * tools/cli.h - flag parsing and error reporting shared by the kernc subcommands.
 *
 * Conventions every subcommand gets from here: --name=VALUE or --name VALUE, -o FILE, -h and
 * --help (usage on stdout, exit 0), `--` ends options, bad usage prints one line and a hint on
 * stderr and exits 2, failures print "kernc: <message>" on stderr and exit 1.
 * Invariants: option tables live on the caller's stack and point at its locals (no global state).
 */
#ifndef KERNC_TOOLS_CLI_H
#define KERNC_TOOLS_CLI_H

#include "kernc.h"
#include "passes/passes.h"

#include <stdbool.h>
#include <stdio.h>

typedef struct cli_opt {
  const char *name;   /* long name without "--" */
  char short_name;    /* e.g. 'o'; 0 for none */
  const char *meta;   /* value placeholder in --help ("LIST"); NULL: a flag without value */
  const char *help;   /* one line */
  bool *flag;         /* set when a flag is given */
  const char **value; /* set to the value of a valued option */
} cli_opt;

#define CLI_MAX_OPTS 32

typedef struct cli_cmd {
  const char *name;  /* "kernc opt" */
  const char *args;  /* positional part of the usage line: "FILE.kir" */
  const char *about; /* a paragraph after the usage line */
  cli_opt opts[CLI_MAX_OPTS];
  int nopts;
  int min_pos, max_pos; /* positional arguments allowed */
} cli_cmd;

/* Append an option to cmd's table. */
void cli_add(cli_cmd *cmd, cli_opt opt);
/*
 * Parse argv[1..argc-1] against cmd (argv[0] is the subcommand's name). Positionals go to
 * pos[0..*npos-1] (pos holds max_pos entries). Returns -1 to go on, or the exit code to return
 * now: 0 after --help, 2 after bad usage (message and hint already printed).
 */
int cli_parse(const cli_cmd *cmd, int argc, char **argv, const char **pos, int *npos);
/* Usage line, about text and the option list. */
void cli_help(const cli_cmd *cmd, FILE *f);
/* Print "<cmd>: <message>" and the --help hint on stderr; returns 2. */
int cli_usage_error(const cli_cmd *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The --input arguments of `kernc run` and `kernc grad`, and the rest of argv. */
typedef struct cli_inputs {
  const char **input; /* "NAME=FILE" or "FILE" (by position), as given */
  int ninput;
  char **rest; /* argv without the --input arguments (argv[0] kept) */
  int nrest;
} cli_inputs;

/* Split --input NAME=FILE / --input=NAME=FILE / -i NAME=FILE / -iNAME=FILE out of argv into
 * a (whose arrays hold argc entries); after "--" everything is positional. 2 on bad usage,
 * else -1. */
int cli_take_inputs(const cli_cmd *cmd, int argc, char **argv, cli_inputs *a);
/* Print "kernc: [file: ]<last error>" on stderr; returns 1. file may be NULL. */
int cli_fail(kc_context *ctx, kc_status s, const char *file);
/* A context with the options the environment sets ($KERNC_CUDA_CACHE: NVRTC's image folder);
 * NULL when out of memory. The library itself reads no environment variables. */
kc_context *cli_context_new(void);
/* -1 when kernc knows target, else a usage error (the library's message lists the targets). */
int cli_check_target(const cli_cmd *cmd, const char *target);
/*
 * Read `--input` arguments ("NAME=FILE.npy", or FILE for the k-th input) into in[] in graph
 * input order; inputs not given keep data NULL. Exit code on failure (said on stderr), else -1.
 */
int cli_read_inputs(kc_context *ctx, const kc_graph *g, int nargs, const char *const *args,
                    kc_tensor_desc *in);

/* The pass-manager flags shared by opt and dump. */
typedef struct cli_pass_flags {
  const char *passes; /* NULL: the default pipeline */
  const char *print_before, *print_after, *dump_dir;
  const char *fold_limit; /* --fold-limit=N; NULL: the default */
  bool print_before_all, print_after_all, print_changed, verify_each, list_passes;
  bool explain_fusion;
  bool dump_dot; /* --dump-dir writes graphviz dot (set by dump's --format) */
} cli_pass_flags;

/* Add --passes, --print-*, --dump-dir, --verify-each, --explain-fusion, --fold-limit and
 * --list-passes to cmd. */
void cli_add_pass_opts(cli_cmd *cmd, cli_pass_flags *pf);
/* Print the registered passes and pipelines (for --list-passes). */
void cli_list_passes(FILE *f);
/* Parse pf->passes (or take the default pipeline) and run it on g; printed IR goes to ir_out.
 * Returns an exit code: 0, 1 after printing the error, 2 for a bad --fold-limit. */
int cli_run_passes(kc_context *ctx, kc_graph *g, const cli_pass_flags *pf, FILE *ir_out);

/* Load FILE: text IR (.kir, or "-" for stdin) or, when allow_onnx and FILE ends in .onnx, an ONNX
 * model. A .kir naming a weights file (weights="W.safetensors") gets its weights from it. */
kc_status cli_load(kc_context *ctx, const char *path, bool allow_onnx, kc_graph **out);
/* Open path for writing ("-" or NULL: stdout); NULL after printing an error. */
FILE *cli_open_out(const char *path);
/* Close what cli_open_out opened; returns an exit code (1 when the write failed). */
int cli_close_out(FILE *f, const char *path);
/* Run graphviz `dot -Tsvg IN` into OUT (NULL: stdout); an exit code, 1 after saying why (and,
 * when dot is not installed, to install graphviz). */
int cli_dot_to_svg(const char *in, const char *out);

#endif /* KERNC_TOOLS_CLI_H */

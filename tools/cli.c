/*
 * tools/cli.c - flag parsing, help text, error reporting, loading inputs and running the pass
 * pipeline, shared by the kernc subcommands (see cli.h for the conventions).
 *
 * Invariant: nothing here exits the process; every function returns an exit code or status and
 * the subcommand returns it from main, so the same code can run under a test harness.
 */
#include "tools/cli.h"
#include "runtime/runtime.h"
#include "tools/kir_weights.h"
#include "tools/npz.h"

#include <errno.h>
#include <spawn.h>
#include <sys/wait.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void cli_add(cli_cmd *cmd, cli_opt opt) {
  if (cmd->nopts < CLI_MAX_OPTS) cmd->opts[cmd->nopts++] = opt;
}

void cli_help(const cli_cmd *cmd, FILE *f) {
  fprintf(f, "usage: %s [options] %s\n\n%s\n\noptions:\n", cmd->name, cmd->args, cmd->about);
  for (int i = 0; i < cmd->nopts; i++) {
    const cli_opt *o = &cmd->opts[i];
    char left[64];
    int n = 0;
    if (o->short_name)
      n = snprintf(left, sizeof left, "-%c, --%s", o->short_name, o->name);
    else
      n = snprintf(left, sizeof left, "    --%s", o->name);
    if (o->meta && n > 0 && (size_t)n < sizeof left)
      snprintf(left + n, sizeof left - (size_t)n, "=%s", o->meta);
    fprintf(f, "  %-26s %s\n", left, o->help);
  }
  fprintf(f, "  %-26s %s\n", "-h, --help", "show this help and exit");
}

int cli_usage_error(const cli_cmd *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "%s: ", cmd->name);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, "\nTry '%s --help' for more information.\n", cmd->name);
  return 2;
}

int cli_fail(kc_context *ctx, kc_status s, const char *file) {
  const char *msg = ctx ? kc_last_error(ctx) : "";
  if (!*msg) msg = kc_status_str(s);
  /* parse and I/O messages already start with the file name */
  bool named = file && strncmp(msg, file, strlen(file)) == 0;
  if (file && !named)
    fprintf(stderr, "kernc: %s: %s\n", file, msg);
  else
    fprintf(stderr, "kernc: %s\n", msg);
  return 1;
}

static const cli_opt *find_long(const cli_cmd *cmd, const char *name, size_t len) {
  for (int i = 0; i < cmd->nopts; i++)
    if (strlen(cmd->opts[i].name) == len && strncmp(cmd->opts[i].name, name, len) == 0)
      return &cmd->opts[i];
  return NULL;
}

static const cli_opt *find_short(const cli_cmd *cmd, char c) {
  for (int i = 0; i < cmd->nopts; i++)
    if (cmd->opts[i].short_name == c) return &cmd->opts[i];
  return NULL;
}

/* Apply option o; its value is inline (after '=') or the next argument. */
static int apply(const cli_cmd *cmd, const cli_opt *o, const char *spelled, const char *inline_val,
                 int argc, char **argv, int *i) {
  if (!o->meta) {
    if (inline_val) return cli_usage_error(cmd, "option '%s' takes no value", spelled);
    *o->flag = true;
    return -1;
  }
  if (!inline_val) {
    if (*i + 1 >= argc) return cli_usage_error(cmd, "option '%s' needs a value", spelled);
    inline_val = argv[++*i];
  }
  *o->value = inline_val;
  return -1;
}

int cli_parse(const cli_cmd *cmd, int argc, char **argv, const char **pos, int *npos) {
  *npos = 0;
  bool only_pos = false;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int rc = -1;
    if (only_pos || a[0] != '-' || a[1] == 0) { /* "-" alone is a file: stdin or stdout */
      if (*npos >= cmd->max_pos) return cli_usage_error(cmd, "unexpected argument '%s'", a);
      pos[(*npos)++] = a;
      continue;
    }
    if (strcmp(a, "--") == 0) {
      only_pos = true;
    } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      cli_help(cmd, stdout);
      return 0;
    } else if (a[1] == '-') {
      const char *name = a + 2, *eq = strchr(name, '=');
      size_t len = eq ? (size_t)(eq - name) : strlen(name);
      const cli_opt *o = find_long(cmd, name, len);
      if (!o) return cli_usage_error(cmd, "unknown option '%.*s'", (int)(len + 2), a);
      rc = apply(cmd, o, a, eq ? eq + 1 : NULL, argc, argv, &i);
    } else {
      const cli_opt *o = find_short(cmd, a[1]);
      if (!o) return cli_usage_error(cmd, "unknown option '-%c'", a[1]);
      if (a[2] && !o->meta) return cli_usage_error(cmd, "option '-%c' takes no value", a[1]);
      rc = apply(cmd, o, a, a[2] ? a + 2 : NULL, argc, argv, &i);
    }
    if (rc >= 0) return rc;
  }
  if (*npos < cmd->min_pos)
    return cli_usage_error(cmd, "missing %s", *npos == 0 ? cmd->args : "argument");
  return -1;
}

/* ---- pass flags -------------------------------------------------------------------------- */

void cli_add_pass_opts(cli_cmd *cmd, cli_pass_flags *pf) {
  cli_add(cmd,
          (cli_opt){"passes", 0, "LIST",
                    "comma-separated passes/pipelines to run (default: 'default'; empty: none)",
                    NULL, &pf->passes});
  cli_add(cmd, (cli_opt){"list-passes", 0, NULL, "list the passes and pipelines, then exit",
                         &pf->list_passes, NULL});
  cli_add(cmd, (cli_opt){"print-before-all", 0, NULL, "print the IR before every pass",
                         &pf->print_before_all, NULL});
  cli_add(cmd, (cli_opt){"print-after-all", 0, NULL, "print the IR after every pass",
                         &pf->print_after_all, NULL});
  cli_add(cmd, (cli_opt){"print-before", 0, "NAMES", "print the IR before the named passes", NULL,
                         &pf->print_before});
  cli_add(cmd, (cli_opt){"print-after", 0, "NAMES", "print the IR after the named passes", NULL,
                         &pf->print_after});
  cli_add(cmd, (cli_opt){"print-changed", 0, NULL, "print the IR after passes that changed it",
                         &pf->print_changed, NULL});
  cli_add(cmd, (cli_opt){"dump-dir", 0, "DIR",
                         "write DIR/00_input.kir and DIR/NN_<pass>.kir (dump: in its --format)",
                         NULL, &pf->dump_dir});
  cli_add(cmd, (cli_opt){"verify-each", 0, NULL, "run the verifier after every pass",
                         &pf->verify_each, NULL});
  cli_add(cmd, (cli_opt){"explain-fusion", 0, NULL,
                         "say per candidate node why a rewrite pattern did not fire",
                         &pf->explain_fusion, NULL});
  cli_add(cmd, (cli_opt){"fold-limit", 0, "N",
                         "fold: largest result to evaluate at compile time, in elements (65536)",
                         NULL, &pf->fold_limit});
}

void cli_list_passes(FILE *f) {
  fprintf(f, "passes:\n");
  if (kc_pass_count() == 0) fprintf(f, "  (none registered yet)\n");
  for (int i = 0; i < kc_pass_count(); i++)
    fprintf(f, "  %-22s %s\n", kc_pass_at(i)->name, kc_pass_at(i)->help ? kc_pass_at(i)->help : "");
  fprintf(f, "pipelines:\n");
  for (int i = 0; i < kc_pipeline_count(); i++) {
    const char *t = kc_pipeline_text(i);
    fprintf(f, "  %-22s %s\n", kc_pipeline_name(i), *t ? t : "(no passes yet)");
  }
}

int cli_run_passes(kc_context *ctx, kc_graph *g, const cli_pass_flags *pf, FILE *ir_out) {
  kc_pipeline p;
  long long limit = 0;
  if (pf->fold_limit) {
    char *end;
    limit = strtoll(pf->fold_limit, &end, 10);
    if (*end || end == pf->fold_limit || limit < 1) {
      fprintf(stderr, "kernc: --fold-limit needs a positive number, got '%s'\n", pf->fold_limit);
      return 2;
    }
  }
  kc_status s =
      pf->passes ? kc_pipeline_parse(ctx, pf->passes, &p) : kc_pipeline_named(ctx, "default", &p);
  if (s != KC_OK) return cli_fail(ctx, s, NULL);
  kc_pass_options o = {
      .print_before_all = pf->print_before_all,
      .print_after_all = pf->print_after_all,
      .print_changed = pf->print_changed,
      .verify_each = pf->verify_each,
      .print_before = pf->print_before,
      .print_after = pf->print_after,
      .dump_dir = pf->dump_dir,
      .dump_dot = pf->dump_dot,
      .out = ir_out,
      .explain_fusion = pf->explain_fusion,
      .explain_out = stderr, /* under dump and opt alike, whatever stream the IR goes to */
      .fold_limit = limit,
      .eval = kc_fold_evaluator(), /* fold computes as kc_compile's does */
  };
  s = kc_pipeline_run(&p, g, &o);
  return s == KC_OK ? 0 : cli_fail(ctx, s, NULL);
}

/* ---- files -------------------------------------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* All of stdin as a NUL-terminated string (caller frees), or NULL. */
static char *read_stdin(void) {
  size_t len = 0, cap = 1 << 16;
  char *buf = malloc(cap);
  while (buf) {
    len += fread(buf + len, 1, cap - len - 1, stdin);
    if (feof(stdin) || ferror(stdin)) break;
    char *nb = realloc(buf, cap * 2);
    if (!nb) free(buf);
    buf = nb;
    cap *= 2;
  }
  if (buf) buf[len] = 0;
  if (buf && ferror(stdin)) {
    free(buf);
    return NULL;
  }
  return buf;
}

/* Text IR from path, with the weights of the safetensors file its "# kir" line names. */
static kc_status load_kir(kc_context *ctx, const char *path, kc_graph **out) {
  kc_status s = kc_graph_parse_file(ctx, path, out);
  if (s == KC_OK && (s = kir_weights_load(ctx, *out, path)) != KC_OK) {
    kc_graph_free(*out);
    *out = NULL;
  }
  return s;
}

kc_status cli_load(kc_context *ctx, const char *path, bool allow_onnx, kc_graph **out) {
  *out = NULL;
  if (allow_onnx && ends_with(path, ".onnx")) return kc_onnx_load(ctx, path, out);
  if (strcmp(path, "-") != 0) return load_kir(ctx, path, out);
  char *text = read_stdin();
  if (!text) {
    kc_clear_error(ctx); /* cli_fail then reports the status: "i/o error" */
    return KC_ERR_IO;
  }
  kc_status s = kc_graph_parse(ctx, text, "<stdin>", out);
  free(text);
  return s;
}

FILE *cli_open_out(const char *path) {
  if (!path || strcmp(path, "-") == 0) return stdout;
  FILE *f = fopen(path, "w");
  if (!f) fprintf(stderr, "kernc: cannot write %s: %s\n", path, strerror(errno));
  return f;
}

int cli_close_out(FILE *f, const char *path) {
  bool bad = fflush(f) != 0 || ferror(f);
  if (f != stdout) bad = fclose(f) != 0 || bad;
  if (bad) {
    fprintf(stderr, "kernc: cannot write %s\n", f == stdout ? "standard output" : path);
    return 1;
  }
  return 0;
}

/* The index of the graph input called name, or -1 after listing the inputs on stderr. */
static int input_index(const kc_graph *g, const char *name) {
  uint32_t n = kc_graph_num_inputs(g);
  for (uint32_t i = 0; i < n; i++)
    if (strcmp(kc_graph_input_name(g, i), name) == 0) return (int)i;
  fprintf(stderr, "kernc: the model has no input '%s'; its inputs are:", name);
  for (uint32_t i = 0; i < n; i++)
    fprintf(stderr, " '%s'", kc_graph_input_name(g, i));
  fprintf(stderr, "\n");
  return -1;
}

/* Bind t (its data now owned by in[idx]) to graph input idx; exit code, or -1. */
static int bind_input(const kc_graph *g, uint32_t idx, kc_tensor_desc *t, kc_tensor_desc *in) {
  if (in[idx].data) {
    fprintf(stderr, "kernc: input '%s' is given twice\n", kc_graph_input_name(g, idx));
    kc_npy_free(t);
    return 1;
  }
  in[idx] = *t;
  memset(t, 0, sizeof *t);
  /* old writers store bf16 as u16: take the model's word for it */
  kc_dtype want = kc_val_dtype(g, kc_graph_input(g, idx));
  if (want == KC_BF16 && in[idx].dtype == KC_U16) in[idx].dtype = KC_BF16;
  in[idx].name = kc_graph_input_name(g, idx);
  return -1;
}

/* An .npz archive: each array binds the input of its name; with NAME=, the archive's array
 * NAME (or its only array) binds input NAME. */
static int read_npz(kc_context *ctx, const kc_graph *g, const char *name, const char *file,
                    kc_tensor_desc *in) {
  cli_npz z;
  kc_status s = cli_npz_read(ctx, file, &z);
  if (s != KC_OK) return cli_fail(ctx, s, file);
  int rc = -1, bound = 0;
  for (size_t i = 0; i < z.n && rc < 0; i++) {
    if (name && z.n > 1 && strcmp(z.names[i], name) != 0) continue;
    int idx = input_index(g, name ? name : z.names[i]);
    rc = idx < 0 ? 1 : bind_input(g, (uint32_t)idx, &z.t[i], in);
    bound++;
  }
  if (rc < 0 && !bound) {
    fprintf(stderr, "kernc: %s holds no array named '%s'\n", file, name ? name : "");
    rc = 1;
  }
  cli_npz_free(&z);
  return rc;
}

extern char **environ; /* the program's environment, passed on to dot */

int cli_dot_to_svg(const char *in, const char *out) {
  char *argv[] = {"dot", "-Tsvg", (char *)in, "-o", (char *)out, NULL};
  if (!out) argv[3] = NULL;
  fflush(stdout);
  pid_t pid;
  int err = posix_spawnp(&pid, "dot", NULL, NULL, argv, environ), st = 0;
  if (err == ENOENT) {
    fprintf(stderr, "kernc: --format=svg runs graphviz's `dot`, which is not installed "
                    "(apt-get install graphviz)\n");
    return 1;
  }
  if (err) {
    fprintf(stderr, "kernc: cannot run dot: %s\n", strerror(err));
    return 1;
  }
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    fprintf(stderr, "kernc: dot -Tsvg %s failed\n", in);
    return 1;
  }
  return 0;
}

int cli_read_inputs(kc_context *ctx, const kc_graph *g, int nargs, const char *const *args,
                    kc_tensor_desc *in) {
  uint32_t n = kc_graph_num_inputs(g);
  for (int k = 0; k < nargs; k++) {
    const char *eq = strchr(args[k], '='), *file = eq ? eq + 1 : args[k];
    char name[256] = "";
    if (eq) snprintf(name, sizeof name, "%.*s", (int)(eq - args[k]), args[k]);
    int rc = -1;
    if (ends_with(file, ".npz")) {
      rc = read_npz(ctx, g, eq ? name : NULL, file, in);
    } else {
      int idx = eq ? input_index(g, name) : k;
      if (!eq && (uint32_t)idx >= n) {
        fprintf(stderr, "kernc: the model has only %u inputs; they are:", n);
        for (uint32_t i = 0; i < n; i++)
          fprintf(stderr, " '%s'", kc_graph_input_name(g, i));
        fprintf(stderr, "\n");
      }
      if (idx < 0 || (uint32_t)idx >= n) return 1;
      kc_tensor_desc t;
      kc_status s = kc_npy_read(ctx, file, &t);
      if (s != KC_OK) return cli_fail(ctx, s, file);
      rc = bind_input(g, (uint32_t)idx, &t, in);
    }
    if (rc >= 0) return rc;
  }
  return -1;
}

kc_context *cli_context_new(void) {
  kc_context *ctx = kc_context_new();
  const char *cache = getenv("KERNC_CUDA_CACHE");
  if (ctx && cache && *cache) kc_context_options(ctx)->cuda_cache_dir = cache;
  const char *mem = getenv("KERNC_MEMORY_LIMIT"); /* bytes; kc_options.memory_limit */
  if (ctx && mem && *mem) kc_context_options(ctx)->memory_limit = strtoull(mem, NULL, 10);
  return ctx;
}

int cli_check_target(const cli_cmd *cmd, const char *target) {
  kc_context *ctx = kc_context_new();
  if (!ctx) return (fprintf(stderr, "kernc: out of memory\n"), 1);
  int rc = -1;
  if (kc_target_check(ctx, target) != KC_OK)
    rc = cli_usage_error(cmd, "--target: %s", kc_last_error(ctx));
  kc_context_free(ctx);
  return rc;
}

int cli_take_inputs(const cli_cmd *cmd, int argc, char **argv, cli_inputs *a) {
  for (int i = 0; i < argc; i++) {
    const char *s = argv[i];
    bool only_pos = a->nrest > 0 && strcmp(a->rest[a->nrest - 1], "--") == 0;
    if (i > 0 && !only_pos && (strcmp(s, "--input") == 0 || strcmp(s, "-i") == 0)) {
      if (i + 1 >= argc) return cli_usage_error(cmd, "option '%s' needs NAME=FILE.npy", s);
      a->input[a->ninput++] = argv[++i];
    } else if (i > 0 && !only_pos && strncmp(s, "--input=", 8) == 0) {
      a->input[a->ninput++] = s + 8;
    } else if (i > 0 && !only_pos && strncmp(s, "-i", 2) == 0) {
      a->input[a->ninput++] = s + 2;
    } else {
      a->rest[a->nrest++] = argv[i];
    }
  }
  return -1;
}

/*
 * tools/cmd_compile.c - `kernc compile MODEL -o libNAME.so`: ahead-of-time compilation through
 * kc_export into a shared library that needs neither kernc nor LLVM, plus its C header (NAME.h
 * next to the library unless --header says where). Silent on success, like the C compilers.
 * --target=cuda embeds kernels NVRTC compiles now (--cuda-arch) and the library then needs only
 * the CUDA driver; the header and entry points are the CPU target's. --cpu chooses the CPU the
 * kernels are for (kc_export_options.cpu): native, an LLVM CPU name, or several of them (multi).
 * --train --loss LOSS (tools/cli_loss.h's specs, as `kernc train`) exports the training step
 * instead (kc_export_train): NAME_train_* with the optimizer options given here as defaults.
 */
#include "tools/cli.h"
#include "tools/cli_loss.h"
#include "tools/commands.h"

#include <stdlib.h>

#include <stdio.h>
#include <string.h>

typedef struct train_flags {
  bool train;
  const char *loss, *params, *optimizer, *wd, *momentum, *clip;
} train_flags;

static int number(const cli_cmd *cmd, const char *flag, const char *v, double *out) {
  char *end;
  double x = strtod(v, &end);
  if (!*v || *end || !(x >= 0) || x > 1e300)
    return cli_usage_error(cmd, "--%s needs a number >= 0, got '%s'", flag, v);
  *out = x;
  return -1;
}

/* The training flags into o and l; -1, or a usage error (2). */
static int train_options(const cli_cmd *cmd, const train_flags *t, kc_train_options *o,
                         cli_loss *l) {
  kc_train_defaults(o);
  if (!t->train) {
    if (t->loss || t->params || t->optimizer || t->wd || t->momentum || t->clip)
      return cli_usage_error(cmd, "--loss, --params, --optimizer, --weight-decay, --momentum "
                                  "and --clip go with --train");
    return -1;
  }
  if (!t->loss) return cli_usage_error(cmd, "--train needs --loss LOSS");
  int rc = cli_loss_parse(cmd, t->loss, l);
  if (rc < 0 && t->optimizer) {
    if (strcmp(t->optimizer, "sgd") == 0) {
      o->optimizer = KC_OPTIM_SGD;
      o->weight_decay = 0;
    } else if (strcmp(t->optimizer, "adamw") != 0) {
      rc = cli_usage_error(cmd, "--optimizer: adamw or sgd, got '%s'", t->optimizer);
    }
  }
  if (rc < 0 && t->wd) rc = number(cmd, "weight-decay", t->wd, &o->weight_decay);
  if (rc < 0 && t->clip) rc = number(cmd, "clip", t->clip, &o->clip_norm);
  if (rc < 0 && t->momentum) {
    if (o->optimizer != KC_OPTIM_SGD)
      return cli_usage_error(cmd, "--momentum is for --optimizer sgd");
    rc = number(cmd, "momentum", t->momentum, &o->momentum);
  }
  return rc;
}

/* kc_export_train of g with the loss built on it; -1 or an exit code (said). */
static int export_train(kc_context *ctx, kc_graph *g, const cli_loss *l, const train_flags *t,
                        const kc_train_options *o, const kc_export_options *eo, const char *out,
                        const char *header) {
  int rc = cli_loss_build(ctx, g, l);
  if (rc >= 0) return rc;
  char *globs = strdup(t->params ? t->params : "*");
  const char *pat[64];
  int np = 0;
  for (char *p = globs ? strtok(globs, ",") : NULL; p && np < 64; p = strtok(NULL, ","))
    pat[np++] = p;
  kc_status s =
      globs ? kc_export_train(ctx, g, CLI_LOSS_NAME, np, pat, o, eo, out, header) : KC_ERR_NOMEM;
  free(globs);
  if (s == KC_ERR_NOMEM && !globs) return (fprintf(stderr, "kernc: out of memory\n"), 1);
  return s != KC_OK ? cli_fail(ctx, s, eo->source) : -1;
}

int cmd_compile(int argc, char **argv) {
  const char *out = NULL, *name = NULL, *header = NULL, *passes = NULL, *target = "cpu";
  const char *archs = NULL, *cpu = NULL;
  cli_cmd cmd = {
      .name = "kernc compile",
      .args = "MODEL",
      .about = "Compile MODEL (.onnx, or text IR .kir) ahead of time for this CPU into a shared\n"
               "library that needs neither kernc nor LLVM (weights included), and write its C\n"
               "header: NAME_create, NAME_run, NAME_free, NAME_error and the inputs and outputs\n"
               "with dtypes and shapes. Every size must follow from the input shapes. --cpu\n"
               "builds for another CPU (x86-64-v2 runs on any x86-64 CPU since 2009) or for\n"
               "several in one library (--cpu=multi: x86-64-v2, -v3 and -v4, NAME_create\n"
               "picking the best this CPU runs, NAME_target saying which). The C compiler\n"
               "that links the library is $CC, else cc. With --target=cuda the kernels\n"
               "are compiled by NVRTC for GPUs (--cuda-arch) and embedded: the library needs\n"
               "only the CUDA driver at run time, and has the same header and entry points.\n"
               "With --train --loss LOSS (as `kernc train`: xent:OUTPUT:LABELS, mse:OUTPUT:TARGET\n"
               "or sum:OUTPUT) the library holds the training step instead: NAME_train_new,\n"
               "NAME_train_step (forward, backward, optimizer update; lr and step at run time),\n"
               "parameter access and safetensors save/load, the parameters (--params globs,\n"
               "default all float initializers) starting at the model's values.",
      .min_pos = 1,
      .max_pos = 1,
  };
  cli_add(&cmd, (cli_opt){"output", 'o', "libNAME.so", "the shared library to write (required)",
                          NULL, &out});
  cli_add(&cmd,
          (cli_opt){"name", 0, "NAME", "C prefix of the entry points (default: NAME of libNAME.so)",
                    NULL, &name});
  cli_add(&cmd, (cli_opt){"header", 0, "FILE", "the header to write (default: NAME.h beside -o)",
                          NULL, &header});
  cli_add(&cmd,
          (cli_opt){"passes", 0, "LIST", "passes to run before code generation", NULL, &passes});
  cli_add(&cmd, (cli_opt){"target", 0, "cpu|cuda", "the target (default cpu)", NULL, &target});
  cli_add(&cmd, (cli_opt){"cpu", 0, "CPU[,CPU...]",
                          "cpu: native (default: this CPU), x86-64-v2, x86-64-v3, x86-64-v4, an "
                          "LLVM CPU name (skylake-avx512, znver3...), a list (most portable "
                          "first) or multi (= x86-64-v2,x86-64-v3,x86-64-v4)",
                          NULL, &cpu});
  cli_add(&cmd, (cli_opt){"cuda-arch", 0, "LIST",
                          "cuda: cubins for these archs, e.g. 80,86,90; compute_NN for PTX, else "
                          "PTX for the lowest is added (default 80,90)",
                          NULL, &archs});
  train_flags tf = {0};
  cli_add(&cmd,
          (cli_opt){"train", 0, NULL, "export the training step (needs --loss)", &tf.train, NULL});
  cli_add(&cmd, (cli_opt){"loss", 0, "LOSS", "--train: the loss (see above)", NULL, &tf.loss});
  cli_add(&cmd, (cli_opt){"params", 0, "GLOB,...",
                          "--train: train only initializers matching a "
                          "glob",
                          NULL, &tf.params});
  cli_add(&cmd,
          (cli_opt){"optimizer", 0, "adamw|sgd", "--train: default adamw", NULL, &tf.optimizer});
  cli_add(&cmd, (cli_opt){"weight-decay", 0, "X", "--train: default 0.01 (adamw), 0 (sgd)", NULL,
                          &tf.wd});
  cli_add(&cmd,
          (cli_opt){"momentum", 0, "X", "--train: sgd momentum (default 0)", NULL, &tf.momentum});
  cli_add(&cmd,
          (cli_opt){"clip", 0, "X", "--train: clip gradients to global L2 norm X", NULL, &tf.clip});
  const char *pos[1];
  int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
  if (rc >= 0) return rc;
  if (!out) return cli_usage_error(&cmd, "missing -o libNAME.so");
  if (name) { /* before the model is read: a bad name is a usage error */
    kc_context *nctx = kc_context_new();
    kc_status ns = nctx ? kc_export_check_name(nctx, name) : KC_ERR_NOMEM;
    if (ns != KC_OK) {
      int urc = cli_usage_error(&cmd, "--name: %s", nctx ? kc_last_error(nctx) : "out of memory");
      kc_context_free(nctx);
      return urc;
    }
    kc_context_free(nctx);
  }
  if ((rc = cli_check_target(&cmd, target)) >= 0) return rc;
  kc_train_options to;
  cli_loss loss = {0};
  if ((rc = train_options(&cmd, &tf, &to, &loss)) >= 0) return rc;
  kc_context *ctx = cli_context_new();
  if (!ctx) return (fprintf(stderr, "kernc: out of memory\n"), 1);
  kc_graph *g = NULL;
  kc_status s = cli_load(ctx, pos[0], true, &g);
  if (s != KC_OK) {
    rc = cli_fail(ctx, s, pos[0]);
  } else {
    const char *cc = getenv("CC"), *rt = getenv("KERNC_RT"); /* the library reads no variables */
    kc_export_options o = {.name = name,
                           .passes = passes,
                           .source = pos[0],
                           .target = target,
                           .cuda_archs = archs,
                           .cpu = cpu,
                           .cc = cc && *cc ? cc : NULL,
                           .runtime = rt && *rt ? rt : NULL};
    if (tf.train) {
      rc = export_train(ctx, g, &loss, &tf, &to, &o, out, header);
      rc = rc < 0 ? 0 : rc;
    } else {
      s = kc_export(ctx, g, &o, out, header);
      rc = s != KC_OK ? cli_fail(ctx, s, pos[0]) : 0;
    }
  }
  kc_graph_free(g);
  kc_context_free(ctx);
  return rc;
}

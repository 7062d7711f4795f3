/*
 * tools/cmd_train.c - `kernc train MODEL --data DIR --loss LOSS --lr X --steps N ...`: training
 * steps on the CPU through kc_trainer (runtime/train.c). The loss is tools/cli_loss.h's, built on
 * the loaded graph; the parameters are the float initializers (or those --params selects).
 *
 * Data: DIR/NAME.npy for every input of the graph with the loss (the model's inputs and LABELS or
 * TARGET), all with the same first axis = samples. A step takes the next --batch samples (all by
 * default) --accumulate times, as micro-batches whose gradients are averaged; batches cycle
 * through the samples in order (a last partial batch is skipped; after --load they go on where
 * the saved step count left off). Rows are passed in place.
 * One line per step: step, loss (mean over the micro-batches), gradient norm, tokens/s (tokens:
 * the elements of the first integer model input per step, else samples).
 */
#include "runtime/runtime.h"
#include "tools/cli.h"
#include "tools/cli_loss.h"
#include "tools/commands.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct train_args {
  const char *data, *loss, *optimizer, *lr, *steps, *params, *clip, *accumulate, *wd, *momentum,
      *save, *load, *threads, *batch, *lora, *checkpoint, *export_onnx;
} train_args;

static int num(const cli_cmd *cmd, const char *flag, const char *v, double lo, double *out) {
  char *end;
  double x = strtod(v, &end);
  if (!*v || *end || !(x >= lo) || x > 1e300)
    return cli_usage_error(cmd, "--%s needs a number >= %g, got '%s'", flag, lo, v);
  *out = x;
  return -1;
}

static int count(const cli_cmd *cmd, const char *flag, const char *v, long *out) {
  char *end;
  long x = strtol(v, &end, 10);
  if (!*v || *end || x < 1 || x > (1L << 40))
    return cli_usage_error(cmd, "--%s needs a positive integer, got '%s'", flag, v);
  *out = x;
  return -1;
}

/* DIR/NAME.npy for every input of g into in[] (names set); exit code 1 (said) or -1. */
static int read_data(kc_context *ctx, const kc_graph *g, const char *dir, kc_tensor_desc *in,
                     int64_t *nsamples) {
  uint32_t nin = kc_graph_num_inputs(g);
  for (uint32_t i = 0; i < nin; i++) {
    const char *name = kc_graph_input_name(g, i);
    char path[4096];
    int len = snprintf(path, sizeof path, "%s/%s.npy", dir, name);
    if (len < 0 || (size_t)len >= sizeof path) {
      fprintf(stderr, "kernc: --data: path too long for '%s'\n", name);
      return 1;
    }
    for (char *p = path + strlen(dir) + 1; *p; p++) /* as `kernc run` names its outputs */
      if (*p == '/' || *p == '\\' || *p == ':') *p = '_';
    kc_status s = kc_npy_read(ctx, path, &in[i]);
    if (s != KC_OK) {
      fprintf(stderr, "kernc: --data: input '%s' needs %s (first axis = samples): %s\n", name, path,
              kc_last_error(ctx));
      return 1;
    }
    in[i].name = name;
    if (in[i].rank < 1 || (i > 0 && in[i].dims[0] != *nsamples)) {
      fprintf(stderr,
              "kernc: --data: %s has %s%lld samples; every file needs the same first axis "
              "(%lld)\n",
              path, in[i].rank < 1 ? "no sample axis, " : "",
              (long long)(in[i].rank < 1 ? 0 : in[i].dims[0]), (long long)*nsamples);
      return 1;
    }
    if (i == 0) *nsamples = in[i].dims[0];
  }
  return -1;
}

/* Rows [r0, r0 + b) of every input. */
static void take_rows(const kc_tensor_desc *all, uint32_t nin, int64_t r0, int64_t b,
                      kc_tensor_desc *out) {
  for (uint32_t i = 0; i < nin; i++) {
    out[i] = all[i];
    size_t row = kc_dtype_size(all[i].dtype);
    for (int d = 1; d < all[i].rank; d++)
      row *= (size_t)all[i].dims[d];
    out[i].dims[0] = b;
    out[i].data = (char *)all[i].data + (size_t)r0 * row;
  }
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int train(kc_context *ctx, kc_graph *g, const char *model, const cli_loss *l,
                 const train_args *a, const kc_train_options *o, double lr, long steps, long acc,
                 long batch) {
  uint32_t nin = kc_graph_num_inputs(g), nmodel = nin;
  kc_tensor_desc *all = calloc(nin + 1, sizeof *all), *mb = calloc(nin + 1, sizeof *mb);
  int64_t n = 0;
  int rc = all && mb ? read_data(ctx, g, a->data, all, &n)
                     : (fprintf(stderr, "kernc: out of memory\n"), 1);
  for (uint32_t i = 0; rc < 0 && l->kind == CLI_LOSS_XENT && i < nin; i++)
    if (strcmp(all[i].name, l->extra) == 0) rc = cli_loss_check_labels(g, l, &all[i]);
  if (rc < 0 && batch == 0) batch = n;
  if (rc < 0 && (n < 1 || batch > n)) {
    fprintf(stderr, "kernc: --data: %lld samples, fewer than a batch of %ld\n", (long long)n,
            batch);
    rc = 1;
  }
  /* tokens per micro-batch: the first integer input of the model itself (not the labels) */
  for (uint32_t i = 0; i < nin; i++)
    if (l->kind != CLI_LOSS_SUM && strcmp(kc_graph_input_name(g, i), l->extra) == 0) nmodel = i;
  double tokens = (double)batch;
  for (uint32_t i = 0; rc < 0 && i < nin; i++)
    if (i != nmodel && (all[i].dtype == KC_I64 || all[i].dtype == KC_I32)) {
      tokens = (double)batch;
      for (int d = 1; d < all[i].rank; d++)
        tokens *= (double)all[i].dims[d];
      break;
    }
  const char *glob = a->params ? a->params : a->lora ? "*.lora_A,*.lora_B" : "*";
  char *globs = strdup(glob);
  const char *pat[64];
  int np = 0;
  for (char *t = globs ? strtok(globs, ",") : NULL; t && np < 64; t = strtok(NULL, ","))
    pat[np++] = t;
  kc_trainer *t = NULL;
  kc_status s;
  if (rc < 0 && (s = kc_trainer_new(ctx, g, CLI_LOSS_NAME, np, pat, o, &t)) != KC_OK)
    rc = cli_fail(ctx, s, model);
  if (rc < 0 && a->load && (s = kc_trainer_load(t, a->load)) != KC_OK) rc = cli_fail(ctx, s, NULL);
  int64_t first = t ? kc_trainer_steps(t) + 1 : 1, nb = batch ? n / batch : 1;
  int64_t next = (first - 1) * acc; /* after --load, the batches go on where the steps left off */
  if (rc < 0)
    printf("training %u parameters on %lld samples: %ld step(s) of %ld x %ld, %s, lr %g\n",
           kc_trainer_num_params(t), (long long)n, steps, acc, batch,
           o->optimizer == KC_OPTIM_ADAMW ? "adamw" : "sgd", lr);
  for (int64_t k = first; rc < 0 && k < first + steps; k++) {
    double t0 = now(), sum = 0, loss = 0;
    for (long m = 0; rc < 0 && m < acc; m++) {
      take_rows(all, nin, (next % nb) * batch, batch, mb);
      next++;
      if ((s = kc_trainer_accumulate(t, mb, nin, &loss)) != KC_OK) rc = cli_fail(ctx, s, NULL);
      sum += loss;
    }
    if (rc < 0 && (s = kc_trainer_apply(t, lr, k)) != KC_OK) rc = cli_fail(ctx, s, NULL);
    double dt = now() - t0;
    if (rc < 0) {
      printf("step %lld  loss %.6f  grad-norm %.4g  tokens/s %.0f\n", (long long)k,
             sum / (double)acc, kc_trainer_grad_norm(t), tokens * (double)acc / dt);
      fflush(stdout);
    }
  }
  if (rc < 0 && a->save) {
    if ((s = kc_trainer_save(t, a->save)) != KC_OK)
      rc = cli_fail(ctx, s, NULL);
    else
      printf("saved %s (step %lld)\n", a->save, (long long)kc_trainer_steps(t));
  }
  /* the trained weights back into the ONNX model: LoRA adapters merged into their bases */
  if (rc < 0 && a->export_onnx) {
    if ((s = kc_trainer_write_weights(t, g)) == KC_OK && a->lora) s = kc_lora_merge(g);
    if (s == KC_OK) s = kc_onnx_save_weights(ctx, model, g, a->export_onnx);
    if (s != KC_OK)
      rc = cli_fail(ctx, s, a->export_onnx);
    else
      printf("wrote %s%s\n", a->export_onnx, a->lora ? " (adapters merged)" : "");
  }
  kc_trainer_free(t);
  free(globs);
  for (uint32_t i = 0; all && i < nin; i++)
    kc_npy_free(&all[i]);
  free(all);
  free(mb);
  return rc < 0 ? 0 : rc;
}

int cmd_train(int argc, char **argv) {
  train_args a = {0};
  cli_cmd cmd = {
      .name = "kernc train",
      .args = "MODEL",
      .about =
          "Train MODEL (.onnx or .kir) on the CPU: build LOSS on an output (as `kernc grad`:\n"
          "xent:OUTPUT:LABELS, mse:OUTPUT:TARGET or sum:OUTPUT), differentiate it with respect\n"
          "to the float initializers (or those --params selects) and run --steps optimizer\n"
          "steps, printing step, loss, gradient norm and tokens/s per step.\n"
          "Data layout: --data DIR holds NAME.npy for every model input and for LABELS or\n"
          "TARGET, the first axis of each = samples (the same count in every file). A step\n"
          "takes the next --batch samples (default: all) --accumulate times; batches cycle\n"
          "through the samples in order (after --load, from where the saved steps left off).",
      .min_pos = 1,
      .max_pos = 1,
  };
  cli_add(&cmd,
          (cli_opt){"data", 0, "DIR", "NAME.npy per input (required; see above)", NULL, &a.data});
  cli_add(&cmd, (cli_opt){"loss", 0, "LOSS", "the loss (required)", NULL, &a.loss});
  cli_add(&cmd, (cli_opt){"optimizer", 0, "adamw|sgd", "default adamw", NULL, &a.optimizer});
  cli_add(&cmd, (cli_opt){"lr", 0, "X", "learning rate (required)", NULL, &a.lr});
  cli_add(&cmd, (cli_opt){"steps", 0, "N", "optimizer steps (required)", NULL, &a.steps});
  cli_add(&cmd, (cli_opt){"params", 0, "GLOB,...", "train only initializers matching a glob", NULL,
                          &a.params});
  cli_add(&cmd,
          (cli_opt){"batch", 0, "N", "samples per micro-batch (default: all)", NULL, &a.batch});
  cli_add(&cmd, (cli_opt){"accumulate", 0, "K", "micro-batches per step (default 1)", NULL,
                          &a.accumulate});
  cli_add(&cmd, (cli_opt){"clip", 0, "X", "clip gradients to global L2 norm X", NULL, &a.clip});
  cli_add(&cmd, (cli_opt){"weight-decay", 0, "X", "default 0.01 (adamw), 0 (sgd)", NULL, &a.wd});
  cli_add(&cmd, (cli_opt){"momentum", 0, "X", "sgd momentum (default 0)", NULL, &a.momentum});
  cli_add(&cmd, (cli_opt){"save", 0, "OUT.safetensors", "write parameters and optimizer state",
                          NULL, &a.save});
  cli_add(&cmd, (cli_opt){"load", 0, "IN.safetensors", "start from a saved state (steps go on)",
                          NULL, &a.load});
  cli_add(&cmd, (cli_opt){"lora", 0, "r=R,alpha=A,targets=GLOB",
                          "add LoRA adapters to the matmuls of weights matching GLOB and train "
                          "only them",
                          NULL, &a.lora});
  cli_add(&cmd, (cli_opt){"checkpoint", 0, "none|sqrt|marked:GLOB,...",
                          "gradient checkpointing (marked: keep the nodes named by globs)", NULL,
                          &a.checkpoint});
  cli_add(&cmd, (cli_opt){"export-onnx", 0, "OUT.onnx",
                          "write the model with the trained weights (LoRA merged); .onnx models",
                          NULL, &a.export_onnx});
  cli_add(&cmd, (cli_opt){"threads", 0, "N", "threads to run on (default: one per core)", NULL,
                          &a.threads});
  const char *pos[1];
  int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
  cli_loss l = {0};
  kc_train_options o;
  kc_train_defaults(&o);
  double lr = 0, v;
  long steps = 0, acc = 1, batch = 0, threads = 0;
  if (rc < 0 && !a.data) rc = cli_usage_error(&cmd, "missing --data DIR");
  if (rc < 0 && !a.loss) rc = cli_usage_error(&cmd, "missing --loss LOSS");
  if (rc < 0 && !a.lr) rc = cli_usage_error(&cmd, "missing --lr X");
  if (rc < 0 && !a.steps) rc = cli_usage_error(&cmd, "missing --steps N");
  if (rc < 0) rc = cli_loss_parse(&cmd, a.loss, &l);
  if (rc < 0 && a.optimizer) {
    if (strcmp(a.optimizer, "sgd") == 0) {
      o.optimizer = KC_OPTIM_SGD;
      o.weight_decay = 0;
    } else if (strcmp(a.optimizer, "adamw") != 0) {
      rc = cli_usage_error(&cmd, "--optimizer: adamw or sgd, got '%s'", a.optimizer);
    }
  }
  if (rc < 0) rc = num(&cmd, "lr", a.lr, 0, &lr);
  if (rc < 0) rc = count(&cmd, "steps", a.steps, &steps);
  if (rc < 0 && a.batch) rc = count(&cmd, "batch", a.batch, &batch);
  if (rc < 0 && a.accumulate) rc = count(&cmd, "accumulate", a.accumulate, &acc);
  if (rc < 0 && a.threads) rc = count(&cmd, "threads", a.threads, &threads);
  if (rc < 0 && a.clip && (rc = num(&cmd, "clip", a.clip, 0, &v)) < 0) o.clip_norm = v;
  if (rc < 0 && a.wd && (rc = num(&cmd, "weight-decay", a.wd, 0, &v)) < 0) o.weight_decay = v;
  if (rc < 0 && a.momentum && (rc = num(&cmd, "momentum", a.momentum, 0, &v)) < 0) {
    if (o.optimizer != KC_OPTIM_SGD)
      rc = cli_usage_error(&cmd, "--momentum is for --optimizer sgd");
    o.momentum = v;
  }
  o.threads = (int)threads;
  /* --lora r=8,alpha=16,targets=GLOB (alpha defaults to r, as PEFT's lora_alpha=r gives 1) */
  long rank = 0;
  double alpha = 0;
  char targets[512] = "";
  if (rc < 0 && a.lora) {
    char buf[768];
    snprintf(buf, sizeof buf, "%s", a.lora);
    for (char *kv = strtok(buf, ","); rc < 0 && kv; kv = strtok(NULL, ",")) {
      char *eq = strchr(kv, '=');
      if (!eq) {
        rc = cli_usage_error(&cmd, "--lora: '%s' is not KEY=VALUE", kv);
        break;
      }
      *eq++ = 0;
      if (strcmp(kv, "r") == 0)
        rc = count(&cmd, "lora r", eq, &rank);
      else if (strcmp(kv, "alpha") == 0)
        rc = num(&cmd, "lora alpha", eq, 0, &alpha);
      else if (strcmp(kv, "targets") == 0)
        snprintf(targets, sizeof targets, "%s", eq);
      else
        rc = cli_usage_error(&cmd, "--lora: unknown key '%s' (r, alpha, targets)", kv);
    }
    if (rc < 0 && (!rank || !targets[0]))
      rc = cli_usage_error(&cmd, "--lora needs r=R and targets=GLOB");
    if (alpha == 0) alpha = (double)rank;
  }
  const char *marked[64];
  char marks[768];
  if (rc < 0 && a.checkpoint) {
    if (strcmp(a.checkpoint, "sqrt") == 0) {
      o.checkpoint = KC_CKPT_SQRT;
    } else if (strncmp(a.checkpoint, "marked:", 7) == 0 && a.checkpoint[7]) {
      o.checkpoint = KC_CKPT_MARKED;
      snprintf(marks, sizeof marks, "%s", a.checkpoint + 7);
      for (char *m = strtok(marks, ","); m && o.nmarked < 64; m = strtok(NULL, ","))
        marked[o.nmarked++] = m;
      o.marked = marked;
    } else if (strcmp(a.checkpoint, "none") != 0) {
      rc = cli_usage_error(&cmd, "--checkpoint: none, sqrt or marked:GLOB,..., got '%s'",
                           a.checkpoint);
    }
  }
  kc_context *ctx = rc < 0 ? cli_context_new() : NULL;
  kc_graph *g = NULL;
  if (rc < 0 && !ctx) rc = (fprintf(stderr, "kernc: out of memory\n"), 1);
  kc_status s;
  if (rc < 0 && (s = cli_load(ctx, pos[0], true, &g)) != KC_OK) rc = cli_fail(ctx, s, pos[0]);
  if (rc < 0) rc = cli_loss_build(ctx, g, &l);
  if (rc < 0 && a.lora && (s = kc_lora(g, targets, rank, alpha, 0)) != KC_OK)
    rc = cli_fail(ctx, s, pos[0]);
  if (rc < 0) rc = train(ctx, g, pos[0], &l, &a, &o, lr, steps, acc, batch);
  kc_graph_free(g);
  kc_context_free(ctx);
  return rc < 0 ? 0 : rc;
}

/*
 * runtime/export_train.c - the training side of kc_export_train: the parameters' initial values
 * (params.bin, f32 back to back at 64-byte aligned offsets), a C file defining the step's
 * kc_plan_train (codegen/aot.h) and the entry points NAME_train_* over runtime/train_aot.c, which
 * the C compiler builds into the library beside the object (runtime/export_link.c), and the
 * header's training section.
 *
 * The C file declares the plan's struct field for field in codegen/aot.h's order with plain C
 * types (it is compiled where kernc's sources may not be): pointers, int64_t, and the options as
 * two int32_t then six doubles; train_aot.c asserts the struct's size. It pulls params.bin in
 * with .incbin, as the object does the weights, so the values never pass through C literals.
 *
 * Invariants: every string from the model reaches the C file as an escaped string literal and
 * the header only through comment-safe text; the plan's inputs are checked to be the caller's
 * then the parameters in order, so the core's input array can be handed to NAME_run as it is.
 */
#include "runtime/export.h"
#include "runtime/train_core.h"

#include <errno.h>
#include <string.h>

#define PARAM_ALIGN 64

/* s as the body of a C string literal (octal escapes for anything not printable ASCII). */
static void c_string(FILE *f, const char *s) {
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '\\' || c == '"')
      fprintf(f, "\\%c", c);
    else if (c < 32 || c > 126 || c == '?') /* '?': no trigraphs */
      fprintf(f, "\\%03o", c);
    else
      fputc(c, f);
  }
}

static int64_t aligned(int64_t n) { return (n + PARAM_ALIGN - 1) / PARAM_ALIGN * PARAM_ALIGN; }

static kc_status check_plan(kc_context *ctx, const kc_export_train_spec *spec, const kc_plan *p) {
  const kc_train_core *c = spec->core;
  if (p->ninputs != spec->ninputs + c->np)
    return kc_errorf(ctx, KC_ERR_INTERNAL,
                     "training step: the plan has %lld inputs, not %lld of the model and %u "
                     "parameters",
                     (long long)p->ninputs, (long long)spec->ninputs, c->np);
  for (uint32_t i = 0; i < c->np; i++)
    if (!p->inputs[spec->ninputs + i].name ||
        strcmp(p->inputs[spec->ninputs + i].name, c->params[i].name) != 0)
      return kc_errorf(ctx, KC_ERR_INTERNAL,
                       "training step: input %lld of the plan is not parameter '%s'",
                       (long long)(spec->ninputs + i), c->params[i].name);
  if (p->noutputs != c->nout)
    return kc_errorf(ctx, KC_ERR_INTERNAL, "training step: the plan has %lld outputs, not %u",
                     (long long)p->noutputs, c->nout);
  return KC_OK;
}

static kc_status write_params(kc_context *ctx, const kc_train_core *c, const char *path) {
  FILE *f = fopen(path, "wb");
  if (!f) return kc_errorf(ctx, KC_ERR_IO, "cannot write %s: %s", path, strerror(errno));
  static const unsigned char zeros[PARAM_ALIGN];
  bool ok = true;
  for (uint32_t i = 0; i < c->np && ok; i++) {
    size_t nb = (size_t)c->optim[i].n * sizeof(float);
    ok = (!nb || fwrite(c->optim[i].p, 1, nb, f) == nb) &&
         fwrite(zeros, 1, (size_t)(aligned((int64_t)nb) - (int64_t)nb), f) ==
             (size_t)(aligned((int64_t)nb) - (int64_t)nb);
  }
  if (ok) ok = fwrite(zeros, 1, PARAM_ALIGN, f) == PARAM_ALIGN; /* never an empty file */
  if (fclose(f) != 0) ok = false;
  return ok ? KC_OK : kc_errorf(ctx, KC_ERR_IO, "cannot write %s: %s", path, strerror(errno));
}

/* The int64_t array `name` of the C file from n values v(i). */
#define INT_ARRAY(f, name, n, expr)                                                                \
  do {                                                                                             \
    fprintf(f, "static const int64_t %s[] = {", name);                                             \
    for (uint32_t i = 0; i < (n); i++)                                                             \
      fprintf(f, "%s%lld", i ? ", " : "", (long long)(expr));                                      \
    fprintf(f, "};\n");                                                                            \
  } while (0)

static void write_c(FILE *f, const kc_export_train_spec *spec, const kc_plan *p,
                    const char *params_path) {
  const kc_train_core *c = spec->core;
  const kc_train_options *o = spec->options;
  const char *N = p->name;
  fprintf(f,
          "/* The training entry points of %s, written by kernc (runtime/export_train.c). */\n"
          "#include <stdint.h>\n\n"
          "typedef struct kc_plan_train {\n"
          "  const char *name;\n  void *(*create)(int);\n"
          "  int (*run)(void *, const void *, void *);\n  void (*free)(void *);\n"
          "  const char *(*error)(const void *);\n"
          "  int64_t ninputs, noutputs, loss_out, nparams;\n"
          "  const char *const *param_names;\n"
          "  const int64_t *param_rank, *param_dims, *param_grad_out, *param_offset;\n"
          "  const unsigned char *init;\n"
          "  struct { int32_t optimizer, pad; double beta1, beta2, eps, weight_decay, momentum, "
          "clip_norm; } options;\n"
          "} kc_plan_train;\n\n",
          N);
  /* the initial values: .incbin of params.bin, as the object pulls in the weights */
  fprintf(f,
          "__asm__(\".pushsection .rodata.kc_train_init,\\\"a\\\",%%progbits\\n\"\n"
          "        \".balign 64\\n.globl kc_train_init_%s\\n.hidden kc_train_init_%s\\n\"\n"
          "        \"kc_train_init_%s:\\n.incbin \\\"",
          N, N, N);
  for (const char *s = params_path; *s; s++) {       /* an assembler string inside a C string */
    if (*s == '"' || *s == '\\') fprintf(f, "\\\\"); /* the assembler's backslash */
    char one[2] = {*s, 0};
    c_string(f, one);
  }
  fprintf(f,
          "\\\"\\n.popsection\\n\");\n"
          "extern const unsigned char kc_train_init_%s[] __attribute__((visibility(\"hidden\")));"
          "\n\n",
          N);
  fprintf(f,
          "void *%s_create(int);\nint %s_run(void *, const void *, void *);\n"
          "void %s_free(void *);\nconst char *%s_error(const void *);\n\n",
          N, N, N, N);
  fprintf(f, "static const char *const param_names[] = {");
  for (uint32_t i = 0; i < c->np; i++) {
    fprintf(f, "%s\"", i ? ", " : "");
    c_string(f, c->params[i].name);
    fprintf(f, "\"");
  }
  fprintf(f, "};\n");
  INT_ARRAY(f, "param_rank", c->np, c->params[i].rank);
  fprintf(f, "static const int64_t param_dims[] = {");
  for (uint32_t i = 0; i < c->np; i++)
    for (int d = 0; d < KC_MAX_RANK; d++)
      fprintf(f, "%s%lld", i || d ? ", " : "",
              (long long)(d < c->params[i].rank ? c->params[i].dims[d] : 0));
  fprintf(f, "};\n");
  INT_ARRAY(f, "param_grad_out", c->np, c->params[i].grad_out);
  int64_t off = 0;
  fprintf(f, "static const int64_t param_offset[] = {");
  for (uint32_t i = 0; i < c->np; i++) {
    fprintf(f, "%s%lld", i ? ", " : "", (long long)off);
    off += aligned(c->optim[i].n * (int64_t)sizeof(float));
  }
  fprintf(f, "};\n\n");
  fprintf(f, "static const kc_plan_train plan = {\"");
  c_string(f, N);
  fprintf(f,
          "\", %s_create, %s_run, %s_free, %s_error,\n"
          "  %lld, %lld, %lld, %u, param_names, param_rank, param_dims, param_grad_out,\n"
          "  param_offset, kc_train_init_%s,\n"
          "  {%d, 0, %.17g, %.17g, %.17g, %.17g, %.17g, %.17g}};\n\n",
          N, N, N, N, (long long)spec->ninputs, (long long)p->noutputs, (long long)c->loss_out,
          c->np, N, (int)o->optimizer, o->beta1, o->beta2, o->eps, o->weight_decay, o->momentum,
          o->clip_norm);
  /* the archive's functions; local to the library (--exclude-libs) */
  fprintf(f,
          "#define KC_HIDDEN __attribute__((visibility(\"hidden\")))\n"
          "KC_HIDDEN void *kc_aot_train_new(const kc_plan_train *, int, const void *);\n"
          "KC_HIDDEN void kc_aot_train_free(void *);\n"
          "KC_HIDDEN int kc_aot_train_accumulate(void *, const void *, double *);\n"
          "KC_HIDDEN int kc_aot_train_apply(void *, double, int64_t);\n"
          "KC_HIDDEN int kc_aot_train_step(void *, const void *, double, int64_t, double *);\n"
          "KC_HIDDEN int64_t kc_aot_train_num_params(const void *);\n"
          "KC_HIDDEN int kc_aot_train_param(void *, int64_t, const char **, float **, int64_t *);\n"
          "KC_HIDDEN int kc_aot_train_save(void *, const char *);\n"
          "KC_HIDDEN int kc_aot_train_load(void *, const char *);\n"
          "KC_HIDDEN const char *kc_aot_train_error(const void *);\n\n"
          "void *%s_train_new(int threads, const void *o) {\n"
          "  return kc_aot_train_new(&plan, threads, o);\n}\n"
          "void %s_train_free(void *t) { kc_aot_train_free(t); }\n"
          "int %s_train_step(void *t, const void *in, double lr, int64_t step, double *loss) {\n"
          "  return kc_aot_train_step(t, in, lr, step, loss);\n}\n"
          "int %s_train_accumulate(void *t, const void *in, double *loss) {\n"
          "  return kc_aot_train_accumulate(t, in, loss);\n}\n"
          "int %s_train_apply(void *t, double lr, int64_t step) {\n"
          "  return kc_aot_train_apply(t, lr, step);\n}\n"
          "int64_t %s_train_num_params(const void *t) { return kc_aot_train_num_params(t); }\n"
          "int %s_train_param(void *t, int64_t i, const char **name, float **data, int64_t "
          "*numel) {\n"
          "  return kc_aot_train_param(t, i, name, data, numel);\n}\n"
          "int %s_train_save(void *t, const char *path) { return kc_aot_train_save(t, path); }\n"
          "int %s_train_load(void *t, const char *path) { return kc_aot_train_load(t, path); }\n"
          "const char *%s_train_error(const void *t) { return kc_aot_train_error(t); }\n",
          N, N, N, N, N, N, N, N, N, N);
}

kc_status kc_export_train_write(kc_context *ctx, const kc_export_train_spec *spec, const kc_plan *p,
                                const char *params_path, const char *c_path) {
  kc_status s = check_plan(ctx, spec, p);
  if (s == KC_OK) s = write_params(ctx, spec->core, params_path);
  if (s != KC_OK) return s;
  FILE *f = fopen(c_path, "w");
  if (!f) return kc_errorf(ctx, KC_ERR_IO, "cannot write %s: %s", c_path, strerror(errno));
  write_c(f, spec, p, params_path);
  if (fclose(f) != 0)
    return kc_errorf(ctx, KC_ERR_IO, "cannot write %s: %s", c_path, strerror(errno));
  return KC_OK;
}

void kc_export_train_header(FILE *f, const char *N, const kc_export_train_spec *spec) {
  const kc_train_core *c = spec->core;
  const kc_train_options *o = spec->options;
  fprintf(
      f,
      "\n/* ---- training ----------------------------------------------------------------------\n"
      " * Compiled with --train: %s_create / %s_run above run the training step's graph itself\n"
      " * (forward and backward: the caller's %s_TRAIN_NUM_INPUTS inputs, then the parameters;\n"
      " * the loss and every parameter's gradient NAME.grad among the outputs). %s_train_*\n"
      " * hold the parameters (initial values: the model's, embedded) and the optimizer's state\n"
      " * and run whole steps: the same step as kernc's JIT trainer (kc_trainer_*), the same\n"
      " * checkpoints (safetensors: NAME, NAME.exp_avg, NAME.exp_avg_sq or\n"
      " * NAME.momentum_buffer; optimizer and step in __metadata__). One thread at a time uses a\n"
      " * trainer. Functions returning int return 0 or an error code (KC_MODEL_ERR_*), and\n"
      " * %s_train_error says what is wrong.\n"
      " *\n * Use:\n"
      " *   %s_train_t *t = %s_train_new(0, NULL);  (all cores; the compile-time options)\n"
      " *   %s_tensor in[%s_TRAIN_NUM_INPUTS] = {...};  double loss;\n"
      " *   for (int64_t k = 1; k <= steps; k++)\n"
      " *     if (%s_train_step(t, in, 1e-3, k, &loss) != 0)\n"
      " *       fprintf(stderr, \"%%s\\n\", %s_train_error(t));\n"
      " *   %s_train_save(t, \"trained.safetensors\");  %s_train_free(t);\n */\n"
      "#define %s_HAS_TRAIN 1\n"
      "/* The inputs a step takes: %s_run's first ones, in its order. */\n"
      "#define %s_TRAIN_NUM_INPUTS %lld\n#define %s_TRAIN_NUM_PARAMS %u\n"
      "#define %s_TRAIN_ADAMW 0\n#define %s_TRAIN_SGD 1\n"
      "typedef struct %s_train %s_train_t;\n"
      "/* The optimizer (kernc.h's kc_train_options): AdamW as torch.optim.AdamW (bias\n"
      " * correction, decoupled weight decay), SGD as torch.optim.SGD (momentum 0: none);\n"
      " * clip_norm > 0: clip by the global L2 norm of the gradients first. */\n"
      "typedef struct %s_train_options {\n"
      "  int32_t optimizer; /* %s_TRAIN_ADAMW or %s_TRAIN_SGD */\n"
      "  int32_t reserved;  /* 0 */\n"
      "  double beta1, beta2, eps, weight_decay, momentum, clip_norm;\n"
      "} %s_train_options;\n"
      "/* The options given at compile time, as an initializer. */\n"
      "#define %s_TRAIN_OPTIONS {%d, 0, %.17g, %.17g, %.17g, %.17g, %.17g, %.17g}\n\n",
      N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, (long long)spec->ninputs, N, c->np, N, N, N,
      N, N, N, N, N, N, (int)o->optimizer, o->beta1, o->beta2, o->eps, o->weight_decay, o->momentum,
      o->clip_norm);
  fprintf(
      f,
      "/* A trainer on `threads` threads (<= 0: one per core) with options o (NULL: those given\n"
      " * at compile time); NULL when this CPU lacks a feature the kernels use, or out of memory:\n"
      " * %s_train_error(NULL) says which. */\n"
      "%s_train_t *%s_train_new(int threads, const %s_train_options *o);\n"
      "/* Free the trainer. NULL is fine. */\n"
      "void %s_train_free(%s_train_t *t);\n"
      "/* Forward and backward of one micro-batch (%s_TRAIN_NUM_INPUTS inputs, as %s_run takes\n"
      " * its first ones); the gradients are added to the sums since the last apply; *loss (may\n"
      " * be NULL) gets the batch's loss. */\n"
      "int %s_train_accumulate(%s_train_t *t, const %s_tensor *inputs, double *loss);\n"
      "/* The gradient sums averaged over the micro-batches since the last apply, clipped, and\n"
      " * the optimizer's update in place. step is 1-based (AdamW's bias correction); lr and\n"
      " * step are arguments, so a schedule needs no recompilation. */\n"
      "int %s_train_apply(%s_train_t *t, double lr, int64_t step);\n"
      "/* %s_train_accumulate of one batch, then %s_train_apply. */\n"
      "int %s_train_step(%s_train_t *t, const %s_tensor *inputs, double lr, int64_t step,\n"
      "                  double *loss);\n"
      "/* The parameters: their count, and parameter i's name, live f32 values (writable:\n"
      " * writing them sets the parameter) and element count; valid until %s_train_free. */\n"
      "int64_t %s_train_num_params(const %s_train_t *t);\n"
      "int %s_train_param(%s_train_t *t, int64_t i, const char **name, float **data,\n"
      "                   int64_t *numel);\n"
      "/* Write the parameters and the optimizer's state to a safetensors file; read such a\n"
      " * file back (a missing or unexpected tensor, another shape or optimizer is an error and\n"
      " * changes nothing). */\n"
      "int %s_train_save(%s_train_t *t, const char *path);\n"
      "int %s_train_load(%s_train_t *t, const char *path);\n"
      "/* The message of this thread's last failure of t; with NULL, why the last\n"
      " * %s_train_new of this thread returned NULL. */\n"
      "const char *%s_train_error(const %s_train_t *t);\n",
      N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N);
}

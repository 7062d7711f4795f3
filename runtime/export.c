/*
 * runtime/export.c - kc_export: ahead-of-time compilation of a graph into a shared library and
 * its C header.
 *
 * The steps are kc_compile's up to the JIT (copy the graph, run the passes, verify, lower every
 * node into one LLVM module, analyze storage with kc_rt_analyze), then: the tables of a run
 * (runtime/plan_build.c), the weights file, one object with kernels, tables, dims function,
 * weights and entry points (codegen/cpu/aot_object.c), the link with the runtime archive
 * (runtime/export_link.c), and the header (runtime/export_header.c).
 *
 * A causal decoder also gets its decode step, as kc_session_new derives it (from the compiled
 * graph, kc_rt_derive_decode on a copy): lowered into the same object with its own plan, and
 * the session entry points. Its weights are the model's (the same data, stored once: the step's
 * plan refers to the model's weights file; what only the step has is appended). A model the
 * pass refuses (no causal attention, positions mixed otherwise, other inputs...), or the CUDA
 * target (sessions run on the CPU only for now), simply has no session entry points, and the
 * header says why.
 *
 * kc_export_options.cpu may name several CPUs (or "multi": the x86-64-v2, v3 and v4 levels):
 * the first is lowered as above; each other one lowers a copy of the compiled graph (sharing its
 * data, no passes: the same graph, so the same plan layout and weights) with a kc_cpu for its
 * CPU into an object of its own (kc_cpu_obj_write's CPU variants), and NAME_create picks one at
 * run time. The weights file is written once, from the first; the others' must be the same.
 *
 * kc_export_train exports a training step instead: the graph kc_trainer_new compiles
 * (kc_rt_train_graph: parameters as inputs, forward + backward) is the library's plan, and
 * runtime/export_train.c adds the parameters' initial values and the NAME_train_* entry points
 * over the trainer core (runtime/train_aot.c); no decode step.
 *
 * Invariants:
 *   - Intermediate files live in a fresh folder next to the library (same file system, so a
 *     500 MB weights file is not copied into a RAM-backed /tmp), removed whatever happens.
 *   - The library appears at so_path only complete: it is linked in that folder and renamed.
 *   - The caller's graph is not changed and its weight data is not copied (the module's graph
 *     shares it for the duration of the call).
 */
#include "runtime/export.h"
#include "runtime/train_core.h"

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PATH_LEN 4096
#define NAME_LEN 128

/* snprintf for paths; the callers have checked that their parts fit (check_paths). */
__attribute__((format(printf, 3, 4))) static void fmt_path(char *buf, size_t size, const char *fmt,
                                                           ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, size, fmt, ap);
  va_end(ap);
}

/*
 * The model's C prefix: given (refused when kc_export_check_name would refuse it), or
 * libNAME.so's NAME made an identifier, with "model_" in front when NAME alone would be refused
 * (libint.so: model_int).
 */
static kc_status model_name(kc_context *ctx, const char *given, const char *so_path, char *buf) {
  if (given) {
    const char *why;
    if (!kc_rt_model_name_ok(given, &why))
      return kc_errorf(ctx, KC_ERR_INVALID_ARG, "model name '%.200s' %s", given, why);
    strcpy(buf, given);
    return KC_OK;
  }
  const char *base = strrchr(so_path, '/');
  base = base ? base + 1 : so_path;
  if (strncmp(base, "lib", 3) == 0 && base[3] && base[3] != '.') base += 3;
  size_t j = 0;
  for (; *base && *base != '.' && j + 1 < NAME_LEN - 6; base++)
    buf[j++] = isalnum((unsigned char)*base) || *base == '_' ? *base : '_';
  buf[j] = 0;
  const char *why;
  if (!j) {
    strcpy(buf, "model");
  } else if (!kc_rt_model_name_ok(buf, &why)) {
    memmove(buf + 6, buf, j + 1);
    memcpy(buf, "model_", 6);
  }
  return KC_OK;
}

/* dir of path ("." when none) into buf. */
static void dir_of(const char *path, char *buf, size_t size) {
  const char *slash = strrchr(path, '/');
  if (!slash)
    snprintf(buf, size, ".");
  else if (slash == path)
    snprintf(buf, size, "/");
  else
    fmt_path(buf, size, "%.*s", (int)(slash - path), path);
}

/* kc_export_options.cpu = "multi" */
#define MULTI_CPUS "x86-64-v2,x86-64-v3,x86-64-v4"
#define CPU_LIST_LEN 1024

typedef struct job job;
struct job {
  kc_context *ctx;
  const char *cpu;         /* this CPU variant's (kc_cpu_new_for); NULL: the host */
  job *variants;           /* the first job only: the other CPU variants, nvariants - 1 of them */
  int nvariants;           /* 1 + those */
  char cpus[CPU_LIST_LEN]; /* the first job only: opts->cpu as a list, names NUL-separated */
  kc_module *dm;           /* the decode step; NULL: none */
  kc_plan_decode decode;   /* its facts, decode.plan = &dm->plan.model */
  char decode_name[NAME_LEN + 16];
  char no_session[1024]; /* why there is no decode step ("" when there is) */
  kc_rt_weight *weights; /* the weights file: the model's, then the step's own */
  int64_t nweights, weights_bytes;
  const kc_export_options *opts;
  const kc_export_train_spec *train; /* kc_export_train: the step's parameters; else NULL */
  const kc_target *target;
  const char *so_path, *header_path;
  char name[NAME_LEN];
  char tmp[PATH_LEN]; /* the intermediate files' folder; "" when not made */
  char runtime[PATH_LEN];
  kc_module *m;
  kc_cpu_obj *obj;
  void *state; /* the target's export state (CUDA: NVRTC images) */
};

static kc_status check_paths(job *j) {
  char dir[PATH_LEN];
  struct stat st;
  dir_of(j->so_path, dir, sizeof dir);
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
    return kc_errorf(j->ctx, KC_ERR_IO, "cannot write %s: folder '%s' does not exist", j->so_path,
                     dir);
  if (strlen(j->so_path) + NAME_LEN + 64 >= PATH_LEN)
    return kc_errorf(j->ctx, KC_ERR_INVALID_ARG, "path too long: %s", j->so_path);
  if (j->header_path) {
    dir_of(j->header_path, dir, sizeof dir);
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
      return kc_errorf(j->ctx, KC_ERR_IO, "cannot write %s: folder '%s' does not exist",
                       j->header_path, dir);
  }
  return KC_OK;
}

/* kc_compile's preparation, lowering into an object's module instead of the JIT, for j's CPU. */
static kc_status lower(job *j, const kc_graph *g, const char *passes) {
  /* g outlives the call: its weights are not copied */
  kc_status s = kc_rt_module_new(j->ctx, g, j->target, true, passes, false, &j->m);
  kc_export_options o = j->opts ? *j->opts : (kc_export_options){0};
  o.cpu = j->cpu;
  if (s == KC_OK) s = j->target->export_lower(j->m, &o, &j->obj, &j->state);
  return s == KC_OK ? kc_rt_analyze(j->m) : s;
}

/*
 * opts->cpu into j->cpus (the names, NUL-separated) and j->nvariants: "multi" is MULTI_CPUS;
 * every name must be known (kc_cpu_check_name), none twice, at most KC_AOT_MAX_VARIANTS; only
 * the CPU target has a choice.
 */
static kc_status parse_cpus(job *j) {
  const char *list = j->opts ? j->opts->cpu : NULL;
  j->nvariants = 1;
  if (!list) return KC_OK;
  if (j->target->takes_archs)
    return kc_errorf(j->ctx, KC_ERR_INVALID_ARG,
                     "a CPU was given for target '%s', whose host code runs on any CPU of the "
                     "architecture; the CPU is for the cpu target",
                     j->target->name);
  if (strcmp(list, "multi") == 0) list = MULTI_CPUS;
  if (!*list || strlen(list) >= sizeof j->cpus)
    return kc_errorf(j->ctx, KC_ERR_INVALID_ARG, "CPU list '%.100s' is %s", list,
                     *list ? "too long" : "empty");
  strcpy(j->cpus, list);
  int n = 0;
  const char *names[KC_AOT_MAX_VARIANTS];
  for (char *p = j->cpus, *next; p; p = next) {
    next = strchr(p, ',');
    if (next) *next++ = 0;
    kc_status s = kc_cpu_check_name(j->ctx, p);
    if (s != KC_OK) return s;
    if (n == KC_AOT_MAX_VARIANTS)
      return kc_errorf(j->ctx, KC_ERR_INVALID_ARG, "more than %d CPUs in '%.200s'",
                       KC_AOT_MAX_VARIANTS, list);
    for (int i = 0; i < n; i++)
      if (strcmp(names[i], p) == 0)
        return kc_errorf(j->ctx, KC_ERR_INVALID_ARG, "CPU '%s' is twice in '%.200s'", p, list);
    names[n++] = p;
  }
  j->nvariants = n;
  j->cpu = j->cpus; /* the first name */
  return KC_OK;
}

/* Name i of j->cpus. */
static const char *cpu_name(const job *j, int i) {
  const char *p = j->cpus;
  while (i-- > 0)
    p += strlen(p) + 1;
  return p;
}

/* The weights file: the model plan's weights, then those of the decode step that the model does
 * not have (the same data is stored once), whose references in the step's plan are moved to
 * their offsets in this file. */
static kc_status merge_weights(job *j) {
  kc_rt_plan *mp = &j->m->plan, *dp = j->dm ? &j->dm->plan : NULL;
  int64_t n = mp->nweights + (dp ? dp->nweights : 0);
  j->weights = calloc((size_t)n + 1, sizeof *j->weights);
  if (!j->weights) return kc_errorf(j->ctx, KC_ERR_NOMEM, "out of memory writing the weights");
  memcpy(j->weights, mp->weights, (size_t)mp->nweights * sizeof *j->weights);
  j->nweights = mp->nweights;
  j->weights_bytes = mp->model.weights_bytes;
  for (int64_t w = 0; dp && w < dp->nweights; w++) {
    kc_rt_weight *dw = &dp->weights[w];
    int64_t k = 0, off;
    while (k < mp->nweights && mp->weights[k].data != dw->data)
      k++;
    if (k < mp->nweights) {
      off = mp->weights[k].off;
    } else {
      off = j->weights_bytes;
      j->weights[j->nweights++] = (kc_rt_weight){dw->data, dw->bytes, off};
      j->weights_bytes += (int64_t)((dw->bytes + KC_RT_ALIGN - 1) / KC_RT_ALIGN * KC_RT_ALIGN);
    }
    for (int64_t v = 0; v < dp->model.nvalues; v++) /* the step's own offsets are distinct */
      if (dp->values[v].storage == KC_PLAN_WEIGHT && dp->values[v].ref == dw->off)
        dp->values[v].ref = -1 - off; /* marked, so a later weight cannot match it again */
  }
  for (int64_t v = 0; dp && v < dp->model.nvalues; v++)
    if (dp->values[v].storage == KC_PLAN_WEIGHT) dp->values[v].ref = -1 - dp->values[v].ref;
  if (dp) dp->model.weights_bytes = j->weights_bytes;
  return KC_OK;
}

/* The decode step of j->m's compiled graph in j->obj (kc_cpu_obj_lower_decode), or why there is
 * none in j->no_session: the derivation failed (the pass refused the model, or what it made
 * does not verify: kc_session_new fails alike), or the step has an op or size the export does
 * not support. Only other failures (memory, a kernc bug in lowering) are errors. */
static kc_status add_decode(job *j) {
  if (j->train) {
    snprintf(j->no_session, sizeof j->no_session,
             "this library holds a training step (kernc compile --train), not the model's "
             "forward pass");
    return KC_OK;
  }
  if (j->target->takes_archs) {
    snprintf(j->no_session, sizeof j->no_session,
             "sessions run on the CPU target only for now: on '%s' the KV cache would have to "
             "stay in device memory between steps, which the executor cannot do yet",
             j->target->name);
    return KC_OK;
  }
  /* the compiled graph's copy, sharing its data; no passes: they ran */
  kc_status s = kc_rt_module_new(j->ctx, j->m->g, j->target, true, "", false, &j->dm);
  bool soft = false;
  if (s == KC_OK) { /* whatever stops the derivation stops kc_session_new too */
    s = kc_rt_derive_decode(j->dm);
    if (s == KC_OK) s = kc_rt_decode_info(j->ctx, j->dm->g, &j->decode);
    soft = s != KC_OK && s != KC_ERR_NOMEM;
  }
  if (s == KC_OK) s = kc_cpu_obj_lower_decode(j->obj, j->dm->g, j->dm->kernels);
  if (s == KC_OK) s = kc_rt_analyze(j->dm);
  snprintf(j->decode_name, sizeof j->decode_name, "%s_decode_step", j->name);
  if (s == KC_OK) s = kc_rt_plan_build(j->dm, j->decode_name, false, &j->dm->plan);
  if (soft || s == KC_ERR_UNSUPPORTED) { /* no decoder kernc can derive: no sessions, no error */
    snprintf(j->no_session, sizeof j->no_session, "%s", kc_last_error(j->ctx));
    kc_clear_error(j->ctx);
    kc_cpu_obj_set_decode(j->obj, NULL, NULL);
    kc_module_free(j->dm);
    j->dm = NULL;
    return KC_OK;
  }
  if (s != KC_OK) return s;
  j->decode.plan = &j->dm->plan.model;
  kc_cpu_obj_set_decode(j->obj, &j->decode, j->dm->plan.slot_dims);
  return KC_OK;
}

static void path_in(const job *j, char *buf, const char *file) {
  fmt_path(buf, PATH_LEN, "%s/%s", j->tmp, file);
}

/* Free what a job lowered: the object before the module (its kc_cpu made the LLVM module), the
 * decode step's before the model's (its graph shares that one's data). */
static void release(job *j) {
  kc_cpu_obj_free(j->obj);
  if (j->target && j->target->export_free) j->target->export_free(j->state);
  kc_module_free(j->dm);
  kc_module_free(j->m);
  free(j->weights);
  j->obj = NULL;
  j->state = NULL;
  j->dm = j->m = NULL;
  j->weights = NULL;
}

/* The same weights file (the same weights at the same offsets) as the first variant's. */
static bool same_weights(const job *a, const job *b) {
  if (a->nweights != b->nweights || a->weights_bytes != b->weights_bytes) return false;
  for (int64_t w = 0; w < a->nweights; w++)
    if (a->weights[w].off != b->weights[w].off || a->weights[w].bytes != b->weights[w].bytes ||
        (a->weights[w].data != b->weights[w].data &&
         memcmp(a->weights[w].data, b->weights[w].data, a->weights[w].bytes) != 0))
      return false;
  return true;
}

/* CPU variant v (>= 1) of the first job j: a copy of j's compiled graph lowered for its CPU, with
 * its plan, decode step and weights, which must be j's; its object written to obj. */
static kc_status build_variant(job *j, int v, const char *weights, const char *obj) {
  job *x = &j->variants[v - 1];
  *x = (job){.ctx = j->ctx,
             .cpu = cpu_name(j, v),
             .opts = j->opts,
             .train = j->train,
             .target = j->target};
  strcpy(x->name, j->name);
  kc_status s = lower(x, j->m->g, ""); /* the passes ran */
  if (s == KC_OK) s = kc_rt_plan_build(x->m, x->name, false, &x->m->plan);
  if (s == KC_OK) s = add_decode(x);
  if (s == KC_OK) s = merge_weights(x);
  if (s != KC_OK) return s;
  if (!same_weights(j, x) || !x->dm != !j->dm ||
      x->m->plan.model.ninputs != j->m->plan.model.ninputs ||
      x->m->plan.model.noutputs != j->m->plan.model.noutputs)
    return kc_errorf(j->ctx, KC_ERR_INTERNAL,
                     "AOT: the variant for CPU '%s' differs from the one for '%s' in more than "
                     "its kernels",
                     x->cpu, j->cpu);
  const kc_rt_plan *plan = &x->m->plan;
  s = kc_cpu_obj_write(x->obj, &plan->model, plan->slot_dims, j->weights_bytes > 0 ? weights : NULL,
                       v, j->nvariants, obj);
  release(x); /* written: one variant's LLVM modules at a time beside the first's */
  return s;
}

/* What the header says the kernels are built for: the target's description of the first
 * variant, or every variant's CPU name. */
static void describe(job *j, char *buf, size_t size) {
  if (j->nvariants <= 1) {
    j->target->export_describe(j->m, j->state, buf, size);
    return;
  }
  size_t l = 0;
  buf[0] = 0;
  for (int i = 0; i < j->nvariants && l < size; i++)
    l += (size_t)snprintf(buf + l, size - l, "%s%s", i ? "," : "", cpu_name(j, i));
}

/* Path of the object of variant v into buf. */
static void object_path(const job *j, int v, char *buf) {
  char file[32];
  snprintf(file, sizeof file, v ? "model_%d.o" : "model.o", v);
  path_in(j, buf, file);
}

static kc_status build(job *j, const kc_graph *g) {
  kc_status s = check_paths(j);
  if (s == KC_OK) s = parse_cpus(j);
  if (s == KC_OK && j->nvariants > 1 &&
      !(j->variants = calloc((size_t)j->nvariants - 1, sizeof *j->variants)))
    s = kc_errorf(j->ctx, KC_ERR_NOMEM, "out of memory");
  if (s == KC_OK) s = model_name(j->ctx, j->opts ? j->opts->name : NULL, j->so_path, j->name);
  if (s == KC_OK)
    s = kc_export_find_runtime(j->ctx, j->opts ? j->opts->runtime : NULL, j->runtime,
                               sizeof j->runtime);
  if (s == KC_OK) s = lower(j, g, j->opts ? j->opts->passes : NULL);
  if (s == KC_OK) s = kc_rt_plan_build(j->m, j->name, false, &j->m->plan);
  if (s == KC_OK) s = add_decode(j);
  if (s == KC_OK) s = merge_weights(j);
  if (s == KC_OK && j->train) s = kc_rt_train_outputs(j->train->core, j->m->g, j->train->loss);
  if (s != KC_OK) return s;
  const kc_rt_plan *plan = &j->m->plan;

  char dir[PATH_LEN], weights[PATH_LEN], so[PATH_LEN], header[PATH_LEN];
  char objs[KC_AOT_MAX_VARIANTS][PATH_LEN];
  const char *obj_list[KC_AOT_MAX_VARIANTS];
  char params[PATH_LEN], train_c[PATH_LEN];
  dir_of(j->so_path, dir, sizeof dir);
  fmt_path(j->tmp, sizeof j->tmp, "%s/.kernc-%s-XXXXXX", dir, j->name);
  if (!mkdtemp(j->tmp)) {
    s = kc_errorf(j->ctx, KC_ERR_IO, "cannot make a folder in %s: %s", dir, strerror(errno));
    j->tmp[0] = 0;
    return s;
  }
  path_in(j, weights, "weights.bin");
  for (int v = 0; v < j->nvariants; v++) {
    object_path(j, v, objs[v]);
    obj_list[v] = objs[v];
  }
  path_in(j, so, "model.so");
  path_in(j, params, "params.bin");
  path_in(j, train_c, "train.c");
  if (j->train &&
      (s = kc_export_train_write(j->ctx, j->train, &plan->model, params, train_c)) != KC_OK)
    return s;
  bool has_weights = j->weights_bytes > 0;
  if (has_weights && (s = kc_export_write_weights(j->ctx, j->weights, j->nweights, j->weights_bytes,
                                                  weights)) != KC_OK)
    return s;
  if (j->target->export_write && (s = j->target->export_write(j->state, plan, j->obj, j->tmp)))
    return s;
  s = kc_cpu_obj_write(j->obj, &plan->model, plan->slot_dims, has_weights ? weights : NULL, 0,
                       j->nvariants, objs[0]);
  for (int v = 1; v < j->nvariants && s == KC_OK; v++)
    s = build_variant(j, v, weights, objs[v]);
  if (s == KC_OK)
    s = kc_export_link(j->ctx, j->opts ? j->opts->cc : NULL, obj_list, j->nvariants,
                       j->train ? train_c : NULL, j->runtime, so);
  if (s != KC_OK) return s;
  if (rename(so, j->so_path) != 0)
    return kc_errorf(j->ctx, KC_ERR_IO, "cannot write %s: %s", j->so_path, strerror(errno));
  if (!j->header_path) {
    fmt_path(header, sizeof header, "%s/%s.h", dir, j->name);
    j->header_path = header;
  }
  char built_for[CPU_LIST_LEN];
  describe(j, built_for, sizeof built_for);
  kc_export_session hs = {
      .decode = j->dm ? &j->decode : NULL, .why_not = j->no_session, .train = j->train};
  s = kc_export_header(j->ctx, j->m->g, plan, &hs, j->opts ? j->opts->source : NULL, built_for,
                       j->so_path, j->header_path);
  j->header_path = NULL; /* header[] goes out of scope */
  return s;
}

/* Remove the intermediate files and their folder (best effort: the error, if any, stays). */
static void cleanup(job *j) {
  if (!j->tmp[0]) return;
  const char *files[] = {"weights.bin", "cuda.bin", "model.so", "params.bin", "train.c"};
  char path[PATH_LEN];
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) {
    path_in(j, path, files[i]);
    unlink(path);
  }
  for (int v = 0; v < KC_AOT_MAX_VARIANTS; v++) {
    object_path(j, v, path);
    unlink(path);
  }
  rmdir(j->tmp);
}

/* kc_export and kc_export_train: check, export, clean up. */
static kc_status export_job(kc_context *ctx, const kc_graph *g, const kc_export_options *opts,
                            const kc_export_train_spec *train, const char *so_path,
                            const char *header_path) {
  if (kc_graph_status(g) != KC_OK)
    return kc_errorf(ctx, kc_graph_status(g),
                     "graph @%s has a failed builder call (%s); see the first error reported",
                     g->name, kc_status_str(kc_graph_status(g)));
  job j = {
      .ctx = ctx, .opts = opts, .train = train, .so_path = so_path, .header_path = header_path};
  kc_status s = kc_target_find(ctx, opts ? opts->target : NULL, &j.target);
  if (s == KC_OK && opts && opts->cuda_archs && !j.target->takes_archs)
    s = kc_errorf(ctx, KC_ERR_INVALID_ARG, "CUDA archs given for target '%s', which has none",
                  j.target->name);
  if (s == KC_OK && train && j.target->takes_archs)
    s = kc_errorf(ctx, KC_ERR_UNSUPPORTED,
                  "a training step compiles for the CPU target only for now (not '%s')",
                  j.target->name);
  if (s == KC_OK) s = build(&j, g);
  cleanup(&j);
  for (int v = 0; j.variants && v < j.nvariants - 1; v++)
    release(&j.variants[v]); /* before the first's: their graphs share its data */
  free(j.variants);
  release(&j);
  return s;
}

kc_status kc_export(kc_context *ctx, const kc_graph *g, const kc_export_options *opts,
                    const char *so_path, const char *header_path) {
  if (!ctx) return KC_ERR_INVALID_ARG;
  kc_clear_error(ctx);
  if (!g || !so_path || !*so_path)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "kc_export: no graph or no library path");
  return export_job(ctx, g, opts, NULL, so_path, header_path);
}

kc_status kc_export_train(kc_context *ctx, const kc_graph *g, const char *loss, int nparams,
                          const char *const *params, const kc_train_options *o,
                          const kc_export_options *opts, const char *so_path,
                          const char *header_path) {
  if (!ctx) return KC_ERR_INVALID_ARG;
  kc_clear_error(ctx);
  if (!g || !so_path || !*so_path)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "kc_export_train: no graph or no library path");
  kc_train_options given;
  if (o)
    given = *o;
  else
    kc_train_defaults(&given);
  if (given.target && strcmp(given.target, "cpu") != 0)
    return kc_errorf(ctx, KC_ERR_UNSUPPORTED,
                     "kc_export_train: the options' target is '%s'; the target of an export is "
                     "kc_export_options.target",
                     given.target);
  if (given.optimizer != KC_OPTIM_ADAMW && given.optimizer != KC_OPTIM_SGD)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "trainer: unknown optimizer %d",
                     (int)given.optimizer);
  /* the core only carries the parameters' values here: plain SGD allocates no state */
  kc_train_core c = {.ctx = ctx, .o = given};
  c.o.optimizer = KC_OPTIM_SGD;
  c.o.momentum = 0;
  kc_graph *step = NULL;
  kc_status s = kc_rt_train_graph(&c, g, loss, nparams, params, &step);
  kc_export_train_spec spec = {
      .core = &c, .options = &given, .loss = loss, .ninputs = kc_graph_num_inputs(g)};
  if (s == KC_OK) s = export_job(ctx, step, opts, &spec, so_path, header_path);
  kc_graph_free(step);
  kc_train_core_release(&c);
  return s;
}

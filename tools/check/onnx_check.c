/*
 * tools/check/onnx_check.c - the conformance check behind `kernc check`: one ONNX backend test
 * folder (model.onnx + test_data_set_N/input_K.pb, output_K.pb) against kernc's import,
 * shape inference, and the values the compiled model computes.
 *
 * Invariants:
 *   - The model is imported and verified once per folder, and compiled (JIT) at most once, at
 *     the first data set whose shapes check; each data set binds symbols, runs and compares.
 *   - Input dims bind the graph's symbols (a symbol bound to two values, or a static dim that
 *     differs, is a failure); output dims are evaluated with those bindings. A dim that does
 *     not evaluate depends on data (a fresh symbol): the run's concrete dims settle it; with
 *     shapes_only that output is compared by rank and dtype only, and the note says so.
 *   - Every failure to compile or run is a FAIL: each op of the table is in scope.
 *   - An import that fails as KC_ERR_UNSUPPORTED is a SKIP, anything else a FAIL; so is a data
 *     set whose inputs contradict the model's declared input types (a broken test).
 */
#include "tools/check/check.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_BINDINGS 64

typedef struct bindings {
  const char *name[MAX_BINDINGS];
  int64_t val[MAX_BINDINGS];
  int n;
} bindings;

static bool lookup(void *user, const char *name, int64_t *v) {
  const bindings *b = user;
  for (int i = 0; i < b->n; i++)
    if (strcmp(b->name[i], name) == 0) {
      *v = b->val[i];
      return true;
    }
  return false;
}

/*
 * Same element type? Older ONNX test generators (Debian's libonnx-testdata) stored bfloat16
 * data as uint16 TensorProtos, numpy having no bfloat16; the bits are the same.
 */
static bool same_dtype(kc_dtype data, kc_dtype graph) {
  return data == graph || (data == KC_U16 && graph == KC_BF16);
}

/* Bind the dims of graph input v to the dims of its data; false with msg on a mismatch. */
static bool bind_input(const kc_graph *g, uint32_t idx, const kc_tensor *t, bindings *b, char *msg,
                       size_t size) {
  kc_val v = kc_graph_input(g, idx);
  const kc_value *val = kc_value_of(g, v);
  const char *name = kc_graph_input_name(g, idx);
  if (!same_dtype(t->dtype, val->dtype)) {
    snprintf(msg, size, "input '%s': data is %s, graph says %s", name, kc_dtype_name(t->dtype),
             kc_dtype_name(val->dtype));
    return false;
  }
  if (t->rank != val->rank) {
    snprintf(msg, size, "input '%s': data has rank %d, graph says %d", name, t->rank, val->rank);
    return false;
  }
  for (int i = 0; i < t->rank; i++) {
    kc_dim d = val->dims[i];
    int64_t have;
    if (kc_dim_eval(g, d, lookup, b, &have)) {
      if (have != t->dims[i]) {
        char buf[64];
        snprintf(msg, size, "input '%s' dim %d: data has %lld, graph says %s (= %lld)", name, i,
                 (long long)t->dims[i], kc_dim_str(g, d, buf, sizeof buf), (long long)have);
        return false;
      }
      continue;
    }
    if (!KC_DIM_IS_SYM(d) || g->dexprs[KC_DIM_EXPR(d)].kind != KC_DX_SYM)
      continue; /* an expression of unbound symbols: checked once they are bound */
    if (b->n == MAX_BINDINGS) {
      snprintf(msg, size, "more than %d symbols", MAX_BINDINGS);
      return false;
    }
    b->name[b->n] = g->dexprs[KC_DIM_EXPR(d)].name;
    b->val[b->n++] = t->dims[i];
  }
  return true;
}

/* Compare graph output idx with its expected data; *partial set when dims depend on data. */
static bool check_output(const kc_graph *g, uint32_t idx, const kc_tensor *t, bindings *b,
                         bool *partial, char *msg, size_t size) {
  kc_val v = kc_graph_output(g, idx);
  const kc_value *val = kc_value_of(g, v);
  const char *name = kc_graph_output_name(g, idx);
  char want[256], got[256];
  size_t wl = 0, gl = 0;
  want[0] = got[0] = 0;
  bool ok = same_dtype(t->dtype, val->dtype) && t->rank == val->rank;
  for (int i = 0; i < val->rank && i < KC_MAX_RANK; i++) {
    int64_t have;
    char buf[64];
    if (kc_dim_eval(g, val->dims[i], lookup, b, &have)) {
      snprintf(buf, sizeof buf, "%lld", (long long)have);
      if (i < t->rank && have != t->dims[i]) ok = false;
    } else {
      kc_dim_str(g, val->dims[i], buf, sizeof buf);
      *partial = true;
    }
    gl += (size_t)snprintf(got + gl, gl < sizeof got ? sizeof got - gl : 0, "%s%s", i ? "," : "",
                           buf);
    if (gl >= sizeof got) gl = sizeof got - 1;
  }
  for (int i = 0; i < t->rank; i++) {
    wl += (size_t)snprintf(want + wl, wl < sizeof want ? sizeof want - wl : 0, "%s%lld",
                           i ? "," : "", (long long)t->dims[i]);
    if (wl >= sizeof want) wl = sizeof want - 1;
  }
  if (!ok)
    snprintf(msg, size, "output '%s': expected %s[%s], inferred %s[%s]", name,
             kc_dtype_name(t->dtype), want, kc_dtype_name(val->dtype), got);
  return ok;
}

/* path = SET/PREFIX_N.pb; false when it does not fit (then no such file is used). */
static bool pb_path(char *path, size_t size, const char *set, const char *prefix, uint32_t n) {
  int len = snprintf(path, size, "%s/%s_%u.pb", set, prefix, n);
  return len > 0 && (size_t)len < size;
}

/* Number of consecutive PREFIX_N.pb files in set. */
static uint32_t count_pb(const char *set, const char *prefix) {
  uint32_t n = 0;
  char path[4096];
  struct stat st;
  for (;; n++)
    if (!pb_path(path, sizeof path, set, prefix, n) || stat(path, &st) != 0) return n;
}

/* What a folder's data sets share: the graph, the options, the module compiled on demand. */
typedef struct checker {
  kc_context *ctx;
  const kc_graph *g;
  const kc_check_options *opts;
  kc_module *m; /* compiled at the first data set that gets that far */
} checker;

static void free_tensors(kc_pb_tensor *t, uint32_t n) {
  for (uint32_t i = 0; t && i < n; i++)
    kc_pb_tensor_free(&t[i]);
  free(t);
}

/* Read SET/PREFIX_i.pb for i < n into t (calloc'd by the caller); false with msg on failure. */
static bool read_all(kc_context *ctx, const char *set, const char *prefix, kc_pb_tensor *t,
                     uint32_t n, char *msg, size_t size) {
  char path[4096];
  for (uint32_t i = 0; i < n; i++)
    if (!pb_path(path, sizeof path, set, prefix, i) ||
        kc_tensor_pb_read(ctx, path, &t[i]) != KC_OK) {
      snprintf(msg, size, "%s", kc_last_error(ctx));
      return false;
    }
  return true;
}

/* Name of the first op of g that draws random numbers (KC_OPF_RANDOM), or NULL. */
static const char *first_random_op(const kc_graph *g) {
  for (uint32_t i = 0; i < g->nnodes; i++)
    if (kc_ops[g->nodes[i].op].flags & KC_OPF_RANDOM) return kc_ops[g->nodes[i].op].name;
  return NULL;
}

/* Compile (once), run on the data set's inputs and compare every output's values. */
static kc_check_result check_values(checker *c, kc_pb_tensor *ins, uint32_t nin,
                                    const kc_pb_tensor *outs, uint32_t nout, char *msg,
                                    size_t size) {
  kc_compile_options co = {
      .target = c->opts->target, .passes = c->opts->passes, .threads = c->opts->threads};
  if (!c->m && kc_compile(c->ctx, c->g, &co, &c->m) != KC_OK) {
    snprintf(msg, size, "compile: %s", kc_last_error(c->ctx));
    return KC_CHECK_FAIL;
  }
  kc_tensor_desc *in = calloc(nin + 1, sizeof *in), *out = calloc(nout + 1, sizeof *out);
  kc_check_result r = KC_CHECK_FAIL;
  if (!in || !out) {
    snprintf(msg, size, "out of memory");
    goto done;
  }
  for (uint32_t i = 0; i < nin; i++) { /* by position: data sets follow the graph's inputs */
    const kc_tensor *t = &ins[i].t;
    kc_dtype gt = kc_val_dtype(c->g, kc_graph_input(c->g, i));
    in[i].dtype = same_dtype(t->dtype, gt) ? gt : t->dtype;
    in[i].rank = t->rank;
    memcpy(in[i].dims, t->dims, sizeof t->dims);
    in[i].data = (void *)t->data;
  }
  if (kc_run(c->m, in, nin, out, nout) != KC_OK) {
    snprintf(msg, size, "run: %s", kc_last_error(c->ctx));
    goto done;
  }
  r = KC_CHECK_PASS;
  const kc_check_tol def = {KC_CHECK_RTOL, KC_CHECK_ATOL, 0};
  const kc_check_tol *tol = c->opts->tol ? c->opts->tol : &def;
  for (uint32_t i = 0; i < nout && r == KC_CHECK_PASS; i++)
    if (!kc_check_compare_tol(kc_graph_output_name(c->g, i), &out[i], &outs[i].t, tol, msg, size))
      r = KC_CHECK_FAIL;
  /*
   * A random op (Dropout in training mode) draws from kernc's generator, the expected values
   * from the test writer's: they cannot agree, so a mismatch there says nothing. A match (e.g.
   * ratio 0) still passes.
   */
  const char *random_op = first_random_op(c->g);
  if (r == KC_CHECK_FAIL && random_op) {
    char why[512];
    snprintf(why, sizeof why, "%s", msg);
    snprintf(msg, size, "outputs depend on a random generator (%s); values not comparable: %s",
             random_op, why);
    r = KC_CHECK_SKIP;
  }
done:
  free(in);
  free(out);
  return r;
}

/*
 * One data set. Input data that contradicts the model's own declared input dtypes or shapes is
 * a broken test, not a kernc result: SKIP, saying so (two of Debian's castlike tests).
 */
static kc_check_result check_set(checker *c, const char *set, char *note, size_t note_size,
                                 char *msg, size_t size) {
  const kc_graph *g = c->g;
  uint32_t nin = count_pb(set, "input"), nout = count_pb(set, "output");
  const char *base = strrchr(set, '/') ? strrchr(set, '/') + 1 : set;
  if (nin != kc_graph_num_inputs(g) || nout != kc_graph_num_outputs(g)) {
    snprintf(msg, size, "%s has %u inputs and %u outputs; the graph has %u and %u", base, nin, nout,
             kc_graph_num_inputs(g), kc_graph_num_outputs(g));
    return KC_CHECK_FAIL;
  }
  kc_pb_tensor *ins = calloc(nin + 1, sizeof *ins), *outs = calloc(nout + 1, sizeof *outs);
  kc_check_result r = KC_CHECK_FAIL;
  bindings b = {.n = 0}; /* symbol names in b point into g */
  if (!ins || !outs) {
    snprintf(msg, size, "out of memory");
    goto done;
  }
  if (!read_all(c->ctx, set, "input", ins, nin, msg, size) ||
      !read_all(c->ctx, set, "output", outs, nout, msg, size))
    goto done;
  for (uint32_t i = 0; i < nin; i++) {
    char why[1024];
    if (!bind_input(g, i, &ins[i].t, &b, why, sizeof why)) {
      snprintf(msg, size, "test data does not fit the model's declared inputs: %s", why);
      r = KC_CHECK_SKIP;
      goto done;
    }
  }
  for (uint32_t i = 0; i < nout; i++) {
    bool partial = false;
    if (!check_output(g, i, &outs[i].t, &b, &partial, msg, size)) goto done;
    char quoted[300];
    snprintf(quoted, sizeof quoted, "'%s'", kc_graph_output_name(g, i));
    /* computed values settle data-dependent dims, so the note is for shape-only checks */
    if (c->opts->shapes_only && partial && !strstr(note, quoted)) {
      size_t l = strlen(note);
      snprintf(note + l, note_size - l, "%s%s", l ? ", " : "", quoted);
    }
  }
  r = c->opts->shapes_only ? KC_CHECK_PASS : check_values(c, ins, nin, outs, nout, msg, size);
done:
  free_tensors(ins, nin);
  free_tensors(outs, nout);
  return r;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted names of the test_data_set_* folders of dir (caller frees each and the array). */
static char **data_sets(const char *dir, uint32_t *n) {
  *n = 0;
  DIR *d = opendir(dir);
  if (!d) return NULL;
  char **v = NULL;
  uint32_t cap = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strncmp(e->d_name, "test_data_set_", 14) != 0) continue;
    if (*n == cap) {
      char **nv = realloc(v, (cap = cap ? cap * 2 : 8) * sizeof *v);
      if (!nv) break;
      v = nv;
    }
    if (!(v[*n] = strdup(e->d_name))) break;
    (*n)++;
  }
  closedir(d);
  if (*n) qsort(v, *n, sizeof *v, cmp_str);
  return v;
}

/* The load message without its leading "PATH: ". */
static const char *strip_path(const char *msg, const char *path) {
  size_t l = strlen(path);
  return strncmp(msg, path, l) == 0 && msg[l] == ':' && msg[l + 1] == ' ' ? msg + l + 2 : msg;
}

kc_check_result kc_onnx_check_dir(kc_context *ctx, const char *dir, char *msg, size_t size) {
  kc_check_options opts = {.shapes_only = false, .threads = 0};
  return kc_onnx_check_dir_opts(ctx, dir, &opts, msg, size);
}

kc_check_result kc_onnx_check_dir_opts(kc_context *ctx, const char *dir,
                                       const kc_check_options *opts, char *msg, size_t size) {
  msg[0] = 0;
  char model[4096];
  snprintf(model, sizeof model, "%s/model.onnx", dir);
  kc_graph *g = NULL;
  kc_status s = kc_onnx_load(ctx, model, &g);
  if (s != KC_OK) {
    snprintf(msg, size, "%s", strip_path(kc_last_error(ctx), model));
    return s == KC_ERR_UNSUPPORTED ? KC_CHECK_SKIP : KC_CHECK_FAIL;
  }
  if (kc_graph_verify(g) != KC_OK) {
    snprintf(msg, size, "verify: %s", kc_last_error(ctx));
    kc_graph_free(g);
    return KC_CHECK_FAIL;
  }
  uint32_t n;
  char **sets = data_sets(dir, &n);
  kc_check_result r = KC_CHECK_PASS;
  if (!n) {
    snprintf(msg, size, "no test_data_set_* folder");
    r = KC_CHECK_FAIL;
  }
  char note[512] = "", set[4096];
  checker c = {ctx, g, opts, NULL};
  for (uint32_t i = 0; i < n && r == KC_CHECK_PASS; i++) {
    snprintf(set, sizeof set, "%s/%s", dir, sets[i]);
    r = check_set(&c, set, note, sizeof note, msg, size);
  }
  kc_module_free(c.m);
  if (r == KC_CHECK_PASS && note[0])
    snprintf(msg, size, "dims of %s depend on data: rank and dtype compared", note);
  for (uint32_t i = 0; i < n; i++)
    free(sets[i]);
  free(sets);
  kc_graph_free(g);
  return r;
}

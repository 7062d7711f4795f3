/*
 * tests/test_cuda.c - the CUDA target (argv[1]: the kernc program, argv[2]: tests/).
 *
 * Without a GPU (and without the driver):
 *   - kc_compile with target "cuda" fails with KC_ERR_UNSUPPORTED and "CUDA target unavailable:
 *     <reason>", the CPU target still compiles and runs the same graph, and `kernc run
 *     --target=cuda` prints "kernc: CUDA target unavailable: ..." and exits non-zero;
 *   - every kernel of every in-scope ONNX backend node test (the onnx 1.22 wheel's and Debian's
 *     libonnx-testdata; in scope = kc_onnx_load accepts the model) and of every golden .kir
 *     graph, as loaded and after the CUDA target's default pipeline, is emitted as CUDA C,
 *     compiled by NVRTC to PTX for compute_80 and the PTX checked by the toolkit's ptxas for
 *     sm_80 (the first program also for compute_90 / sm_90). Identical kernels are compiled
 *     once, the distinct ones in programs of KERNELS_PER_PROGRAM (NVRTC's start-up cost is per
 *     program). Every op of ir/ops.def must be covered and nothing may fail, the CUDA pipeline
 *     included (a graph it legitimately refuses is listed in unpipeable[] with the reason); the
 *     counts and the time are printed. Under a sanitizer every kernel is still emitted, but only
 *     the first program goes through NVRTC and ptxas (not kernc's code, 2x slower there).
 * Both suites must be there (a missing one fails the tests that use them, rather than shrinking
 * them). With a GPU (or tests/cuda_emu's emulation, --emulated): every in-scope node test that
 * passes on the CPU must pass on the CUDA target too (kc_onnx_check_dir_opts, values compared),
 * and their number must be exactly DEVICE_NODE_PASSES; causal attention with past keys and rotary
 * position ids (tests/attention_ref.h), the KV-cache ops (kv_store, attention_cache:
 * attention_ref.h's kvr_ cases) and Gather's index check (tests/gather_cases.h) as on the CPU;
 * without one these tests skip() saying why.
 * Without the CUDA toolkit (KERNC_HAVE_CUDA undefined) only the first group runs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ir/internal.h"
#include "passes/passes.h"
#include "runtime/runtime.h"
#include "tests/harness.h"
#include "tools/check/check.h"
#ifdef KERNC_HAVE_CUDA
#include "codegen/cuda/cuda.h"

#include "attention_ref.h"
#include "gather_cases.h"
#endif

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KERNELS_PER_PROGRAM 160

typedef struct env {
  const char *kernc, *tests;
  char tmp[64];    /* scratch folder, removed at the end */
  bool device;     /* a GPU and its driver are there */
  char nodev[512]; /* why not */
  char **dirs;     /* in-scope candidates: node test folders of both suites, sorted */
  size_t ndirs;
  char missing[4200]; /* the suites that were not found, "" when both were */
} env;

/* ---- helpers ------------------------------------------------------------------------------- */

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Append every subfolder of dir that holds a model.onnx; a suite that is not there is noted in
 * e->missing (the tests that use the suites fail on it: a lost suite must not shrink them). */
static void add_suite(env *e, const char *name, const char *dir) {
  DIR *d = dir ? opendir(dir) : NULL;
  if (!d) {
    size_t l = strlen(e->missing);
    snprintf(e->missing + l, sizeof e->missing - l, "%s%s not found%s%s", l ? "; " : "", name,
             dir ? " at " : " (python3 -c 'import onnx' fails)", dir ? dir : "");
    return;
  }
  struct dirent *de;
  size_t first = e->ndirs;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.') continue;
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s/model.onnx", dir, de->d_name);
    if (stat(path, &st) != 0) continue;
    e->dirs = realloc(e->dirs, (e->ndirs + 1) * sizeof *e->dirs);
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    e->dirs[e->ndirs++] = strdup(path);
  }
  closedir(d);
  qsort(e->dirs + first, e->ndirs - first, sizeof *e->dirs, cmp_str);
}

/* The onnx wheel's node tests, through python3 (or $PYTHON). */
static void pypi_suite(char *buf, size_t size) {
  const char *py = getenv("PYTHON");
  char cmd[512];
  snprintf(cmd, sizeof cmd,
           "%s -c 'import onnx, os; print(os.path.join(os.path.dirname(onnx.__file__), "
           "\"backend\", \"test\", \"data\", \"node\"))' 2>/dev/null",
           py && *py ? py : "python3");
  buf[0] = 0;
  FILE *p = popen(cmd, "r");
  if (!p) return;
  if (!fgets(buf, (int)size, p)) buf[0] = 0;
  pclose(p);
  buf[strcspn(buf, "\n")] = 0;
}

static int setup(env *e) {
  snprintf(e->tmp, sizeof e->tmp, "/tmp/kc_cuda_XXXXXX");
  if (!mkdtemp(e->tmp)) return -1;
  kc_context *ctx = kc_context_new();
#ifdef KERNC_HAVE_CUDA
  kc_cuda_dev *d = NULL;
  e->device = kc_cuda_dev_open(ctx, 0, &d) == KC_OK;
  kc_cuda_dev_close(d);
#endif
  snprintf(e->nodev, sizeof e->nodev, "%s", e->device ? "" : kc_last_error(ctx));
  kc_context_free(ctx);
  char pypi[4096];
  pypi_suite(pypi, sizeof pypi);
  add_suite(e, "the onnx 1.22 wheel's node tests", pypi[0] ? pypi : NULL);
  add_suite(e, "libonnx-testdata", "/usr/share/libonnx-testdata/data/node");
  char models[4096];
  snprintf(models, sizeof models, "%s/models", e->tests);
  add_suite(e, "tests/models", models);
  return 0;
}

static void teardown(env *e) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", e->tmp);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", e->tmp);
  for (size_t i = 0; i < e->ndirs; i++)
    free(e->dirs[i]);
  free(e->dirs);
}

/* ---- without a device: the target says so --------------------------------------------------- */

static void unavailable_compile(void **state) {
  env *e = *state;
  if (e->device) {
    skip(); /* a GPU is here: the device test covers compile and run */
    return;
  }
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "relu");
  kc_dim d[1] = {4};
  kc_output(g, kc_relu(g, kc_input(g, "x", KC_F32, 1, d)), "y");
  kc_module *m = NULL;
  kc_compile_options co = {.target = "cuda"};
  assert_int_equal(kc_compile(ctx, g, &co, &m), KC_ERR_UNSUPPORTED);
  assert_null(m);
  assert_non_null(strstr(kc_last_error(ctx), "CUDA target unavailable: "));
  print_message("kc_compile(target=cuda): %s\n", kc_last_error(ctx));
  /* the CPU target is unaffected */
  co.target = "cpu";
  assert_int_equal(kc_compile(ctx, g, &co, &m), KC_OK);
  float x[4] = {-1, 2, -3, 4};
  kc_tensor_desc in = {.name = "x", .dtype = KC_F32, .rank = 1, .dims = {4}, .data = x}, out;
  assert_int_equal(kc_run(m, &in, 1, &out, 1), KC_OK);
  assert_true(((float *)out.data)[0] == 0 && ((float *)out.data)[3] == 4);
  kc_module_free(m);
  kc_graph_free(g);
  kc_context_free(ctx);
}

static void unavailable_run(void **state) {
  env *e = *state;
  if (e->device) {
    skip();
    return;
  }
  char cmd[8192], out[4096] = "";
  snprintf(cmd, sizeof cmd, "'%s' run --target=cuda '%s/kir/golden/constants.kir' 2>&1", e->kernc,
           e->tests);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  size_t n = fread(out, 1, sizeof out - 1, p);
  out[n] = 0;
  int st = pclose(p);
  print_message("kernc run --target=cuda: %s", out);
  assert_true(WIFEXITED(st) && WEXITSTATUS(st) != 0);
  assert_non_null(strstr(out, "kernc: CUDA target unavailable: "));
}

#ifdef KERNC_HAVE_CUDA

/* ---- every kernel through NVRTC and ptxas -----------------------------------------------------
 */

#define PLACEHOLDER "KC_KERNEL_"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct corpus {
  char **text; /* distinct kernels, named kern<index> */
  unsigned *sections;
  size_t n, cap;
  uint64_t *hash; /* open addressing over text, 0 = empty; index in slot[] */
  size_t *slot, tcap;
  size_t emitted, graphs, failures, unpiped;
  bool covered[KC_OP_COUNT];
} corpus;

static uint64_t fnv(const char *s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 0x100000001b3ULL;
  return h ? h : 1;
}

/* text with the placeholder name replaced by kern<n> (malloc'd). */
static char *rename_kernel(const char *text, size_t n) {
  const char *at = strstr(text, PLACEHOLDER "(");
  assert_non_null(at);
  char name[32];
  snprintf(name, sizeof name, "kern%zu", n);
  size_t len = strlen(text), pl = strlen(PLACEHOLDER), nl = strlen(name);
  char *out = malloc(len - pl + nl + 1);
  memcpy(out, text, (size_t)(at - text));
  memcpy(out + (at - text), name, nl);
  strcpy(out + (at - text) + nl, at + pl);
  return out;
}

static void corpus_grow(corpus *c) {
  size_t tcap = c->tcap ? c->tcap * 2 : 4096;
  uint64_t *hash = calloc(tcap, sizeof *hash);
  size_t *slot = calloc(tcap, sizeof *slot);
  for (size_t i = 0; i < c->tcap; i++) {
    if (!c->hash[i]) continue;
    size_t j = c->hash[i] & (tcap - 1);
    while (hash[j])
      j = (j + 1) & (tcap - 1);
    hash[j] = c->hash[i];
    slot[j] = c->slot[i];
  }
  free(c->hash);
  free(c->slot);
  c->hash = hash;
  c->slot = slot;
  c->tcap = tcap;
}

/* Keep text (named PLACEHOLDER) unless an identical kernel is there already. */
static void corpus_add(corpus *c, const char *text, unsigned sections) {
  if (2 * (c->n + 1) > c->tcap) corpus_grow(c);
  /* compare under the placeholder name: the stored text is renamed */
  uint64_t h = fnv(text);
  size_t j = h & (c->tcap - 1);
  for (; c->hash[j]; j = (j + 1) & (c->tcap - 1)) {
    if (c->hash[j] != h) continue;
    char *mine = rename_kernel(text, c->slot[j]);
    bool same = strcmp(mine, c->text[c->slot[j]]) == 0;
    free(mine);
    if (same) return;
  }
  if (c->n == c->cap) {
    c->cap = c->cap ? c->cap * 2 : 1024;
    c->text = realloc(c->text, c->cap * sizeof *c->text);
    c->sections = realloc(c->sections, c->cap * sizeof *c->sections);
  }
  c->hash[j] = h;
  c->slot[j] = c->n;
  c->sections[c->n] = sections;
  c->text[c->n] = rename_kernel(text, c->n);
  c->n++;
}

/* Emit every node of g; failures are reported and counted. */
static void corpus_graph(corpus *c, kc_context *ctx, const kc_graph *g, const char *what) {
  c->graphs++;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    char *text = NULL;
    unsigned sections = 0;
    kc_cuda_kernel_info info;
    kc_clear_error(ctx);
    kc_status s = kc_cuda_emit_node(ctx, g, i, PLACEHOLDER, &text, &sections, &info);
    if (s != KC_OK) {
      print_message("FAIL emit %s: %s\n", what, kc_last_error(ctx));
      c->failures++;
      continue;
    }
    c->covered[g->nodes[i].op] = true;
    if (!text) continue;
    c->emitted++;
    corpus_add(c, text, sections);
    free(text);
  }
}

/* Graphs that legitimately cannot go through the CUDA pipeline, by the end of their path, with
 * the reason. Any other pipeline failure is a failure here, and so is a listed graph that goes
 * through (the list shrinks with the fix). */
static const struct {
  const char *graph, *why;
} unpipeable[] = {
    {NULL, NULL},
};

static const char *unpipeable_why(const char *what) {
  size_t len = strlen(what);
  for (size_t i = 0; unpipeable[i].graph; i++) {
    size_t l = strlen(unpipeable[i].graph);
    if (l <= len && strcmp(what + len - l, unpipeable[i].graph) == 0) return unpipeable[i].why;
  }
  return NULL;
}

/* g after the CUDA target's default pipeline, as kc_compile would lower it, emitted too. */
static void corpus_piped(corpus *c, kc_context *ctx, const kc_graph *g, const char *what) {
  kc_graph *h = kc_graph_clone(g, true);
  kc_pipeline p;
  kc_pass_options po = {.no_print_on_fail = true, .eval = kc_fold_evaluator()};
  kc_clear_error(ctx);
  const char *why = unpipeable_why(what);
  if (h && kc_pipeline_for_target(ctx, "cuda", &p) == KC_OK &&
      kc_pipeline_run(&p, h, &po) == KC_OK) {
    kc_graph_compact(h);
    corpus_graph(c, ctx, h, what);
    if (why) {
      print_message("FAIL pipeline %s went through, yet tests/test_cuda.c lists it as unpipeable "
                    "(%s): remove it from the list\n",
                    what, why);
      c->failures++;
    }
  } else if (why) {
    c->unpiped++;
  } else {
    print_message("FAIL pipeline %s: %s\n", what, h ? kc_last_error(ctx) : "out of memory");
    c->failures++;
  }
  kc_graph_free(h);
}

/* Weights of a .kir file have no data; give them zeros so constant-reading emitters work. */
static void bind_zeros(kc_graph *g, void **keep, size_t *nkeep) {
  for (uint32_t i = 0; i < g->ntensors; i++) {
    kc_tensor *t = &g->tensors[i];
    if (t->data) continue;
    size_t n = kc_dtype_size(t->dtype);
    for (int d = 0; d < t->rank; d++)
      n *= (size_t)t->dims[d];
    keep[*nkeep] = calloc(n ? n : 1, 1);
    t->data = keep[(*nkeep)++];
    t->nbytes = n;
  }
}

static size_t golden_graphs(corpus *c, kc_context *ctx, const char *tests) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/kir/golden", tests);
  DIR *d = opendir(dir);
  assert_non_null(d);
  struct dirent *de;
  size_t n = 0;
  while ((de = readdir(d))) {
    size_t len = strlen(de->d_name);
    if (len < 5 || strcmp(de->d_name + len - 4, ".kir") != 0) continue;
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    kc_graph *g = NULL;
    if (kc_graph_parse_file(ctx, path, &g) != KC_OK) {
      print_message("FAIL parse %s: %s\n", path, kc_last_error(ctx));
      c->failures++;
      continue;
    }
    void *keep[256];
    size_t nkeep = 0;
    if (g->ntensors <= 256) bind_zeros(g, keep, &nkeep);
    corpus_graph(c, ctx, g, path);
    corpus_piped(c, ctx, g, path);
    kc_graph_free(g);
    for (size_t k = 0; k < nkeep; k++)
      free(keep[k]);
    n++;
  }
  closedir(d);
  return n;
}

/* Compile kernels [from, to) as one program for arch; NVRTC and ptxas failures are counted. */
static void check_program(env *e, corpus *c, kc_context *ctx, kc_nvrtc *nv, size_t from, size_t to,
                          int arch) {
  kc_cuda_prog *p = NULL;
  assert_int_equal(kc_cuda_prog_new(ctx, &p), KC_OK);
  for (size_t i = from; i < to; i++)
    assert_int_equal(kc_cuda_prog_add_text(p, c->text[i], c->sections[i]), KC_OK);
  const char *src = kc_cuda_prog_source(p);
  assert_non_null(src);
  char name[64];
  snprintf(name, sizeof name, "kernels_%zu_%zu.cu", from, to);
  kc_cuda_image img;
  kc_clear_error(ctx);
  if (kc_nvrtc_compile(nv, src, name, arch, true, &img) != KC_OK) {
    print_message("FAIL nvrtc %s compute_%d: %.6000s\n", name, arch, kc_last_error(ctx));
    c->failures++;
    kc_cuda_prog_free(p);
    return;
  }
  char path[256], cmd[1024];
  snprintf(path, sizeof path, "%s/%s.%d.ptx", e->tmp, name, arch);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  assert_int_equal(fwrite(img.data, 1, strlen(img.data), f), strlen(img.data));
  fclose(f);
  snprintf(cmd, sizeof cmd, "'%s/ptxas' -arch=sm_%d '%s' -o /dev/null", KERNC_CUDA_BIN_DIR, arch,
           path);
  int rc = system(cmd);
  if (rc != 0) {
    print_message("FAIL ptxas sm_%d on %s (status %d)\n", arch, name, rc);
    c->failures++;
  }
  remove(path);
  kc_cuda_prog_free(p);
}

static void kernels_nvrtc_ptxas(void **state) {
  env *e = *state;
  if (e->missing[0]) fail_msg("%s (scripts/setup.sh installs them)", e->missing);
  double t0 = now_s();
  kc_context *ctx = kc_context_new();
  corpus c = {0};
  size_t scope = 0;
  for (size_t i = 0; i < e->ndirs; i++) {
    char path[8192];
    snprintf(path, sizeof path, "%s/model.onnx", e->dirs[i]);
    kc_graph *g = NULL;
    if (kc_onnx_load(ctx, path, &g) != KC_OK) continue; /* out of scope */
    scope++;
    corpus_graph(&c, ctx, g, e->dirs[i]);
    corpus_piped(&c, ctx, g, e->dirs[i]);
    kc_graph_free(g);
  }
  size_t golden = golden_graphs(&c, ctx, e->tests);
  double t1 = now_s();

  kc_nvrtc *nv = NULL;
  assert_int_equal(kc_nvrtc_new(ctx, &nv), KC_OK);
  static const int archs[] = {80, 90};
  size_t programs = 0;
  /* sanitizers see kernc's side (every kernel above was emitted under them) and the NVRTC
   * driving code, but not NVRTC or ptxas, which take twice as long under ASan's allocator:
   * there one program goes through them; the plain build compiles every program */
  size_t end = TH_SANITIZED && c.n > KERNELS_PER_PROGRAM ? KERNELS_PER_PROGRAM : c.n;
  /* every program for compute_80 (the oldest arch kernc targets), the first also for compute_90:
   * the emitters write no arch-dependent code (no __CUDA_ARCH__ branch, no arch-gated intrinsic),
   * so the same source compiling for 80 and for 90 is one fact, checked once; every program
   * for both took half the test's time */
  for (size_t from = 0; from < end; from += KERNELS_PER_PROGRAM, programs++) {
    size_t to = from + KERNELS_PER_PROGRAM < c.n ? from + KERNELS_PER_PROGRAM : c.n;
    for (size_t a = 0; a < (from == 0 ? sizeof archs / sizeof *archs : 1); a++)
      check_program(e, &c, ctx, nv, from, to, archs[a]);
  }
  /* the cache answers a program it compiled before, from memory and from its folder */
  uint64_t hits0, hits, compiles, dhits, dcompiles;
  kc_nvrtc_stats(nv, &hits0, &compiles);
  size_t first = c.n < KERNELS_PER_PROGRAM ? c.n : KERNELS_PER_PROGRAM;
  if (c.n) check_program(e, &c, ctx, nv, 0, first, 80);
  kc_nvrtc_stats(nv, &hits, &compiles);
  kc_nvrtc *d1 = NULL, *d2 = NULL;
  assert_int_equal(kc_nvrtc_new(ctx, &d1), KC_OK);
  assert_int_equal(kc_nvrtc_new(ctx, &d2), KC_OK);
  assert_int_equal(kc_nvrtc_set_cache_dir(d1, e->tmp), KC_OK);
  assert_int_equal(kc_nvrtc_set_cache_dir(d2, e->tmp), KC_OK);
  if (c.n) check_program(e, &c, ctx, d1, 0, 1, 80);
  if (c.n) check_program(e, &c, ctx, d2, 0, 1, 80);
  kc_nvrtc_stats(d2, &dhits, &dcompiles);
  assert_true(c.n == 0 || (dhits == 1 && dcompiles == 0));
  kc_nvrtc_free(d1);
  kc_nvrtc_free(d2);
  double t2 = now_s();

  size_t ncov = 0;
  for (int op = 1; op < KC_OP_COUNT; op++) {
    if (c.covered[op]) {
      ncov++;
      continue;
    }
    print_message("FAIL op %s is not covered by any test graph\n", kc_ops[op].name);
    c.failures++;
  }
  print_message("cuda: %zu node tests in scope of %zu, %zu golden graphs, each as loaded and "
                "after the cuda pipeline (%zu listed as unpipeable: as loaded only); %zu kernels "
                "emitted, %zu distinct, %zu programs of them compiled by NVRTC for compute_80 and "
                "checked by ptxas for sm_80 (the first also for 90); ops covered %zu/%d; %zu "
                "failures; %.1f s (emit %.1f s, NVRTC + ptxas %.1f s)\n",
                scope, e->ndirs, golden, c.unpiped, c.emitted, c.n, programs, ncov, KC_OP_COUNT - 1,
                c.failures, t2 - t0, t1 - t0, t2 - t1);
  assert_true(hits > hits0 || c.n == 0);
  assert_true(c.emitted > 0);
  assert_int_equal(c.failures, 0);
  for (size_t i = 0; i < c.n; i++)
    free(c.text[i]);
  free(c.text);
  free(c.sections);
  free(c.hash);
  free(c.slot);
  kc_nvrtc_free(nv);
  kc_context_free(ctx);
}

/* ---- with a device: node tests by value --------------------------------------------------- */

/* The node tests (both suites and tests/models) that pass on the CPU, each of which must pass on
 * the device: the exact count, as tests/onnx_suites.sh's floors (fewer: passes turned into
 * skips; more: raise it in the same commit). kc_onnx_check_dir_opts reads no exclusion list, so
 * it differs from the sum of onnx_suites.sh's counts. */
#define DEVICE_NODE_PASSES 2066

static void device_node_tests(void **state) {
  env *e = *state;
  if (!e->device) {
    print_message("no GPU: %s\n", e->nodev);
    skip();
    return;
  }
  if (e->missing[0]) fail_msg("%s (scripts/setup.sh installs them)", e->missing);
  kc_context *ctx = kc_context_new();
  size_t pass = 0, fail = 0, cpu_fail = 0;
  char msg[KC_ERRBUF_SIZE];
  for (size_t i = 0; i < e->ndirs; i++) {
    kc_check_tol tol; /* the folder's kernc-check.tol, as `kernc check` reads it */
    if (kc_check_tol_of_dir(e->dirs[i], &tol, msg, sizeof msg) < 0) fail_msg("%s", msg);
    kc_check_options cpu = {.target = "cpu", .tol = &tol}, gpu = {.target = "cuda", .tol = &tol};
    kc_clear_error(ctx);
    if (kc_onnx_check_dir_opts(ctx, e->dirs[i], &cpu, msg, sizeof msg) != KC_CHECK_PASS) {
      cpu_fail++; /* out of scope here: the CPU does not pass it either */
      continue;
    }
    kc_clear_error(ctx);
    if (kc_onnx_check_dir_opts(ctx, e->dirs[i], &gpu, msg, sizeof msg) == KC_CHECK_PASS) {
      pass++;
    } else {
      print_message("FAIL cuda %s: %s\n", e->dirs[i], msg);
      fail++;
    }
  }
  print_message("cuda on the device: %zu node tests pass, %zu fail (%zu not passing on the CPU)\n",
                pass, fail, cpu_fail);
  kc_context_free(ctx);
  assert_int_equal(fail, 0);
  if (pass < DEVICE_NODE_PASSES)
    fail_msg("only %zu node tests pass on the CPU and the device, expected %d", pass,
             DEVICE_NODE_PASSES);
  if (pass > DEVICE_NODE_PASSES)
    fail_msg("%zu node tests pass, more than %d: raise DEVICE_NODE_PASSES to %zu in "
             "tests/test_cuda.c",
             pass, DEVICE_NODE_PASSES, pass);
}

/* Causal attention with more or fewer keys than queries, past keys, GQA, and a decoding step
 * against the full recomputation (tests/attention_ref.h; the CPU runs them in test_attention). */
static void device_causal_attention(void **state) {
  env *e = *state;
  if (!e->device) {
    print_message("no GPU: %s\n", e->nodev);
    skip();
    return;
  }
  static const ar_case cases[] = {
      {1, 1, 2, 0, 1, 1, 2},    {2, 19, 53, 0, 4, 2, 16}, {2, 5, 9, 11, 4, 2, 16},
      {1, 17, 33, 20, 6, 3, 8}, {2, 5, 3, 0, 2, 2, 8},    {1, 37, 20, 0, 4, 1, 16},
      {2, 30, 2, 5, 4, 2, 8},   {2, 33, 33, 0, 4, 2, 16}, {2, 1, 1, 70, 8, 1, 32},
  };
  kc_context *ctx = kc_context_new();
  char msg[1024] = "";
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    const ar_case *c = &cases[i];
    if (!ar_check(ctx, "cuda", c, msg, sizeof msg))
      fail_msg("cuda attention B %lld S %lld S_kv %lld P %lld H %lld/%lld D %lld: %s",
               (long long)c->B, (long long)c->S, (long long)c->Skv, (long long)c->P,
               (long long)c->H, (long long)c->KVH, (long long)c->D, msg);
  }
  static const ar_case full[] = {{2, 45, 0, 0, 8, 2, 32}, {1, 35, 0, 0, 6, 1, 8}};
  static const int64_t steps[] = {1, 3, 20};
  for (size_t i = 0; i < sizeof full / sizeof *full; i++)
    for (size_t n = 0; n < sizeof steps / sizeof *steps; n++)
      if (!ar_decode(ctx, "cuda", &full[i], steps[n], msg, sizeof msg))
        fail_msg("cuda decode S %lld, step of %lld: %s", (long long)full[i].S, (long long)steps[n],
                 msg);
  if (!ar_rotary_positions(ctx, "cuda", msg, sizeof msg)) fail_msg("cuda rotary: %s", msg);
  print_message("cuda causal attention: %zu cases and %zu decoding steps match the reference\n",
                sizeof cases / sizeof *cases, sizeof full / sizeof *full * 3);
  kc_context_free(ctx);
}

/* The KV-cache ops on the device (tests/attention_ref.h; the CPU runs more in
 * test_kv_attention): kv_store then attention_cache, contiguous and paged, prefill and decode
 * (the decode path splits a row's keys over the block's warps), GQA / MQA, rotary, a mask, a
 * softcap, contexts past a tile; generation through one step; bad tables are errors naming the
 * node. */
static void device_kv_attention(void **state) {
  env *e = *state;
  if (!e->device) {
    print_message("no GPU: %s\n", e->nodev);
    skip();
    return;
  }
  /* clang-format off */
  static const kvr_case cases[] = {
      {.B = 3, .S = 7, .H = 4, .KVH = 4, .D = 64, .bs = 4, .past = {0, 16, 17}, .lens = {7, 3, 0}},
      {.B = 3, .S = 7, .H = 8, .KVH = 2, .D = 20, .rot = 1, .past = {0, 16, 17}, .lens = {7, 3, 0}},
      {.B = 2, .S = 7, .H = 8, .KVH = 1, .D = 9, .bs = 4, .rot = 2, .past = {40, 1}, .lens = {6, 7}},
      {.B = 3, .S = 1, .H = 4, .KVH = 4, .D = 64, .bs = 4, .rot = 1, .past = {1, 300, 17}, .lens = {1, 1, 0}},
      {.B = 2, .S = 1, .H = 8, .KVH = 2, .D = 64, .past = {1024, 16}, .lens = {1, 1}},
      {.B = 2, .S = 1, .H = 8, .KVH = 1, .D = 9, .bs = 4, .past = {129, 33}, .lens = {1, 1}},
      {.B = 2, .S = 7, .H = 8, .KVH = 2, .D = 64, .bs = 4, .mask = true, .softcap = 5, .past = {3, 20}, .lens = {7, 5}},
      {.B = 2, .S = 1, .H = 4, .KVH = 4, .D = 20, .bs = 4, .mask = true, .softcap = 0.5, .past = {40, 17}, .lens = {1, 1}},
      {.B = 2, .S = 1, .H = 4, .KVH = 2, .D = 9, .bs = 4, .rot = 1, .rank4 = true, .sym = true, .past = {9, 2}, .lens = {1, 1}},
      {.B = 2, .S = 7, .H = 8, .KVH = 2, .D = 20, .bs = 4, .rot = 1, .rank4 = true, .sym = true, .past = {9, 2}, .lens = {3, 7}},
  };
  /* clang-format on */
  kc_context *ctx = kc_context_new();
  char msg[1024] = "";
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
    if (!kvr_check(ctx, "cuda", &cases[i], msg, sizeof msg))
      fail_msg("cuda kv case %zu: %s", i, msg);
  static const kvr_case gen = {
      .B = 2, .S = 5, .H = 8, .KVH = 2, .D = 20, .bs = 4, .rot = 1, .mask = true, .lens = {5, 3}};
  if (!kvr_generate(ctx, "cuda", &gen, 6, msg, sizeof msg)) fail_msg("cuda kv generation: %s", msg);
  for (int64_t S = 1; S <= 2; S++)
    if (!kvr_errors(ctx, "cuda", S, msg, sizeof msg))
      fail_msg("cuda kv errors, S %lld: %s", (long long)S, msg);
  if (!kvr_empty_blocks(ctx, "cuda", msg, sizeof msg)) fail_msg("cuda kv empty blocks: %s", msg);
  print_message("cuda kv cache: %zu cases, a generation and the table checks match the reference\n",
                sizeof cases / sizeof *cases);
  kc_context_free(ctx);
}

/* Gather's index check on the device (tests/gather_cases.h; the CPU runs it in
 * test_cpu_movement): right values, and one index out of range an error naming the node. */
static void device_gather_checks(void **state) {
  env *e = *state;
  if (!e->device) {
    print_message("no GPU: %s\n", e->nodev);
    skip();
    return;
  }
  kc_context *ctx = kc_context_new();
  assert_int_equal(gc_jit_all(ctx, "cuda"), 0);
  print_message("cuda gather: in-range and out-of-range indices as on the CPU\n");
  kc_context_free(ctx);
}

/* The emulated run must really be on tests/cuda_emu's driver: its device name says so. */
static void emulated_device(void **state) {
  env *e = *state;
  assert_true(e->device);
  kc_context *ctx = kc_context_new();
  kc_cuda_dev *d = NULL;
  assert_int_equal(kc_cuda_dev_open(ctx, 0, &d), KC_OK);
  const char *name = kc_cuda_dev_name(d);
  print_message("device: %s\n", name);
  assert_non_null(strstr(name, "host emulation"));
  kc_cuda_dev_close(d);
  kc_context_free(ctx);
}

#endif /* KERNC_HAVE_CUDA */

int main(int argc, char **argv) {
  bool emulated = argc == 4 && strcmp(argv[3], "--emulated") == 0;
  if (argc < 3 || (argc > 3 && !emulated)) {
    fprintf(stderr, "usage: %s KERNC TESTS_DIR [--emulated]\n", argv[0]);
    return 2;
  }
  env e = {.kernc = argv[1], .tests = argv[2]};
  if (setup(&e) != 0) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_prestate(unavailable_compile, &e),
      cmocka_unit_test_prestate(unavailable_run, &e),
#ifdef KERNC_HAVE_CUDA
      cmocka_unit_test_prestate(kernels_nvrtc_ptxas, &e),
      cmocka_unit_test_prestate(device_node_tests, &e),
      cmocka_unit_test_prestate(device_causal_attention, &e),
      cmocka_unit_test_prestate(device_kv_attention, &e),
      cmocka_unit_test_prestate(device_gather_checks, &e),
#endif
  };
#ifdef KERNC_HAVE_CUDA
  /* under tests/cuda_emu's driver and NVRTC (LD_LIBRARY_PATH): the device tests alone */
  const struct CMUnitTest emulated_tests[] = {
      cmocka_unit_test_prestate(emulated_device, &e),
      cmocka_unit_test_prestate(device_node_tests, &e),
      cmocka_unit_test_prestate(device_causal_attention, &e),
      cmocka_unit_test_prestate(device_kv_attention, &e),
      cmocka_unit_test_prestate(device_gather_checks, &e),
  };
  int rc = emulated ? cmocka_run_group_tests(emulated_tests, NULL, NULL)
                    : cmocka_run_group_tests(tests, NULL, NULL);
#else
  int rc = emulated ? (fprintf(stderr, "--emulated needs the CUDA target\n"), 1)
                    : cmocka_run_group_tests(tests, NULL, NULL);
#endif
  teardown(&e);
  return rc;
}

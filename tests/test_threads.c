/*
 * tests/test_threads.c - one compiled model run from many threads at once, as ONNX Runtime
 * allows for Session::Run (argv[1]: the kernc binary, argv[2]: tests/).
 *
 * A JIT module (kc_compile, two pool threads, so runs contend for the pool) and a .so of the same
 * model (kc_export, NAME_run) each run from THREADS threads x RUNS runs, every run on one of
 * several inputs of different shapes, and every output is compared bitwise with the output of a
 * serial run of the same input. One thread also makes runs that must fail (a wrong input rank)
 * and checks that the message it reads is its own. The suite's TSan build (scripts/test.sh) runs
 * this test, so a data race in the executor fails even when the numbers come out right.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/harness.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define THREADS 8
#define RUNS 200
#define NSETS 6

static const char *tests;

/* A model either way: kc_run on a module, or the entry points of a .so. */
typedef struct model {
  kc_context *ctx; /* JIT */
  kc_module *m;
  void *so; /* .so */
  void *inst;
  void *(*create)(int threads);
  int (*run)(void *inst, const kc_tensor_desc *in, kc_tensor_desc *out);
  void (*destroy)(void *inst);
  const char *(*error)(const void *inst);
} model;

static int run_model(model *md, const kc_tensor_desc *in, kc_tensor_desc *out) {
  if (md->m) return kc_run(md->m, in, 1, out, 1);
  return md->run(md->inst, in, out);
}

static const char *error_of(const model *md) {
  return md->m ? kc_last_error(md->ctx) : md->error(md->inst);
}

/* The inputs: token ids of several (batch, sequence) shapes, and their serial outputs. */
typedef struct set {
  int64_t dims[2];
  int64_t *ids;
  void *want;
  size_t want_bytes;
  kc_tensor_desc want_desc;
} set;

static const int64_t shapes[NSETS][2] = {{1, 3}, {1, 7}, {2, 5}, {1, 12}, {2, 9}, {3, 4}};

static void make_sets(set *s) {
  uint64_t r = 12345;
  for (int i = 0; i < NSETS; i++) {
    s[i].dims[0] = shapes[i][0];
    s[i].dims[1] = shapes[i][1];
    int64_t n = shapes[i][0] * shapes[i][1];
    s[i].ids = malloc((size_t)n * sizeof *s[i].ids);
    for (int64_t k = 0; k < n; k++) {
      r = r * 6364136223846793005u + 1442695040888963407u;
      s[i].ids[k] = (int64_t)((r >> 33) % 100); /* the vocabulary has 100 ids */
    }
  }
}

static kc_tensor_desc input_of(const set *s) {
  return th_desc("input_ids", KC_I64, 2, s->dims, s->ids);
}

/* Serial runs: the outputs every concurrent run must reproduce bit for bit. */
static void serial(model *md, set *s) {
  for (int i = 0; i < NSETS; i++) {
    kc_tensor_desc in = input_of(&s[i]), out;
    int rc = run_model(md, &in, &out);
    if (rc != 0) fail_msg("serial run %d: %s", i, error_of(md));
    s[i].want_bytes = th_nbytes(&out);
    s[i].want = malloc(s[i].want_bytes);
    memcpy(s[i].want, out.data, s[i].want_bytes);
    s[i].want_desc = out;
    s[i].want_desc.data = s[i].want;
  }
}

typedef struct worker {
  model *md;
  set *sets;
  int index;
  int mismatches, failures, bad_errors;
  char first[512];
} worker;

static void *work(void *arg) {
  worker *w = arg;
  for (int k = 0; k < RUNS; k++) {
    set *s = &w->sets[(w->index + 3 * k) % NSETS];
    kc_tensor_desc in = input_of(s), out;
    if (w->index == THREADS - 1 && k % 4 == 0) { /* a run that must fail, with its own message */
      in.rank = 1;
      int rc = run_model(w->md, &in, &out);
      const char *msg = error_of(w->md);
      if (rc == 0 || !strstr(msg, "input_ids") || !strstr(msg, "rank 1")) {
        if (!w->bad_errors++) snprintf(w->first, sizeof w->first, "bad run: rc %d, '%s'", rc, msg);
      }
      continue;
    }
    int rc = run_model(w->md, &in, &out);
    if (rc != 0) {
      if (!w->failures++) snprintf(w->first, sizeof w->first, "run failed: %s", error_of(w->md));
      continue;
    }
    bool same = out.dtype == s->want_desc.dtype && out.rank == s->want_desc.rank &&
                th_nbytes(&out) == s->want_bytes && memcmp(out.data, s->want, s->want_bytes) == 0;
    for (int d = 0; same && d < out.rank; d++)
      same = out.dims[d] == s->want_desc.dims[d];
    if (!same && !w->mismatches++)
      snprintf(w->first, sizeof w->first, "run %d on set %d differs from the serial run", k,
               (int)(s - w->sets));
  }
  return NULL;
}

static void hammer(model *md) {
  set sets[NSETS];
  make_sets(sets);
  serial(md, sets);
  pthread_t tid[THREADS];
  worker w[THREADS];
  for (int i = 0; i < THREADS; i++) {
    w[i] = (worker){.md = md, .sets = sets, .index = i};
    assert_int_equal(pthread_create(&tid[i], NULL, work, &w[i]), 0);
  }
  int bad = 0;
  for (int i = 0; i < THREADS; i++) {
    pthread_join(tid[i], NULL);
    if (w[i].mismatches || w[i].failures || w[i].bad_errors) {
      print_error("thread %d: %d mismatches, %d failures, %d wrong errors; first: %s\n", i,
                  w[i].mismatches, w[i].failures, w[i].bad_errors, w[i].first);
      bad++;
    }
  }
  for (int i = 0; i < NSETS; i++) {
    free(sets[i].ids);
    free(sets[i].want);
  }
  assert_int_equal(bad, 0);
}

static kc_graph *load(kc_context *ctx) {
  char path[4096];
  snprintf(path, sizeof path, "%s/models/gpt2_tiny/model.onnx", tests);
  kc_graph *g = NULL;
  if (kc_onnx_load(ctx, path, &g) != KC_OK) fail_msg("load %s: %s", path, kc_last_error(ctx));
  return g;
}

static void t_jit_module(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  kc_graph *g = load(ctx);
  kc_compile_options co = {.threads = 2};
  model md = {.ctx = ctx};
  if (kc_compile(ctx, g, &co, &md.m) != KC_OK) fail_msg("compile: %s", kc_last_error(ctx));
  hammer(&md);
  kc_module_free(md.m);
  kc_graph_free(g);
  kc_context_free(ctx);
}

static void t_shared_library(void **state) {
  (void)state;
  char dir[64], so[128];
  assert_true(th_mkdtemp(dir, sizeof dir, "threads"));
  snprintf(so, sizeof so, "%s/libtmodel.so", dir);
  kc_context *ctx = kc_context_new();
  kc_graph *g = load(ctx);
  kc_export_options eo = {.name = "tmodel"};
  if (kc_export(ctx, g, &eo, so, NULL) != KC_OK) fail_msg("export: %s", kc_last_error(ctx));
  model md = {0};
  md.so = dlopen(so, RTLD_NOW | RTLD_LOCAL);
  if (!md.so) fail_msg("dlopen %s: %s", so, dlerror());
  *(void **)&md.create = dlsym(md.so, "tmodel_create");
  *(void **)&md.run = dlsym(md.so, "tmodel_run");
  *(void **)&md.destroy = dlsym(md.so, "tmodel_free");
  *(void **)&md.error = dlsym(md.so, "tmodel_error");
  assert_true(md.create && md.run && md.destroy && md.error);
  md.inst = md.create(2);
  if (!md.inst) fail_msg("tmodel_create: %s", md.error(NULL));
  hammer(&md);
  md.destroy(md.inst);
  dlclose(md.so);
  kc_graph_free(g);
  kc_context_free(ctx);
  th_rmtree(dir);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s KERNC TESTS_DIR\n", argv[0]);
    return 2;
  }
  tests = argv[2];
  const struct CMUnitTest t[] = {
      cmocka_unit_test(t_jit_module),
      cmocka_unit_test(t_shared_library),
  };
  return cmocka_run_group_tests(t, NULL, NULL);
}

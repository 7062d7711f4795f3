/*
 * tests/test_aot_cpu.c - libraries compiled for a chosen CPU (kc_export_options.cpu, `kernc
 * compile --cpu`): one CPU named (x86-64-v2), and several in one library (multi: x86-64-v2, v3,
 * v4, NAME_create picking the best this CPU runs).
 *
 * Covered, on a small MLP (relu(x @ w1 + b1) @ w2 + b2, odd sizes, a symbolic batch) whose
 * expected outputs are computed here in double: the x86-64-v2 library runs here and matches;
 * NAME_target says "x86-64-v2"; its recorded target ("kernc-target ... cpu=x86-64-v2
 * features=...") has SSE4.2 and no AVX feature, and its machine code (objdump) uses no ymm or
 * zmm register, while a native library's record names this CPU; a sapphirerapids library (AVX-512
 * VNNI, AMX) refuses to create on a CPU lacking one of its features, naming it, NAME_target NULL
 * (or runs and matches where the CPU has them all); f32 -> bf16 -> f32 casts in an x86-64-v2
 * library (a libcall there) round to nearest even, bit for bit; a multi library runs, matches,
 * holds three records and its weights once (the library grows by less than half the weights'
 * size over the x86-64-v2 one), has AVX-512 code (the v4 kernels), and on this machine picks the
 * best level cpuid allows (x86-64-v4 on an AVX-512 CPU); a multi training step (kc_export_train)
 * takes the same step as a single-CPU one; `kernc compile --cpu=multi` writes a header declaring
 * NAME_target and the status codes; an unknown CPU name, a repeated one and --cpu with
 * --target=cuda are clear errors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "codegen/aot.h" /* kc_aot_cpu_lacks: what the library's own check would say */
#include "kernc.h"
#include "tests/harness.h"

#include <llvm-c/TargetMachine.h>

#include <dlfcn.h>
#include <sys/stat.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { IN = 37, HID = 1500, OUT = 11, NW = IN * HID + HID + HID * OUT + OUT };

static const char *kernc_prog; /* argv[1] */
static char dir[64];

typedef struct lib {
  void *so;
  void *(*create)(int);
  int (*run)(void *, const kc_tensor_desc *, kc_tensor_desc *);
  void (*free)(void *);
  const char *(*error)(const void *);
  const char *(*target)(void);
} lib;

static void *sym(void *so, const char *name, const char *suffix) {
  char s[256];
  snprintf(s, sizeof s, "%s_%s", name, suffix);
  void *p = dlsym(so, s);
  if (!p) fail_msg("no %s in the library", s);
  return p;
}

static void lib_open(lib *l, const char *path, const char *name) {
  l->so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!l->so) fail_msg("dlopen %s: %s", path, dlerror());
  *(void **)&l->create = sym(l->so, name, "create");
  *(void **)&l->run = sym(l->so, name, "run");
  *(void **)&l->free = sym(l->so, name, "free");
  *(void **)&l->error = sym(l->so, name, "error");
  *(void **)&l->target = sym(l->so, name, "target");
}

/* The MLP's weights, deterministic. */
static float weights[NW];
static float *w1 = weights, *b1 = weights + IN * HID, *w2 = weights + IN * HID + HID,
             *b2 = weights + IN * HID + HID + HID * OUT;

static kc_graph *build_mlp(kc_context *ctx) {
  for (int i = 0; i < NW; i++)
    weights[i] = (float)sin(0.37 * i + 0.1) * 0.3f;
  kc_graph *g = kc_graph_new(ctx, "mlp");
  kc_val x = kc_input(g, "x", KC_F32, 2, (kc_dim[]){kc_sym(g, "batch"), IN});
  kc_val W1 = kc_weight(g, "w1", KC_F32, 2, (int64_t[]){IN, HID}, w1);
  kc_val B1 = kc_weight(g, "b1", KC_F32, 1, (int64_t[]){HID}, b1);
  kc_val W2 = kc_weight(g, "w2", KC_F32, 2, (int64_t[]){HID, OUT}, w2);
  kc_val B2 = kc_weight(g, "b2", KC_F32, 1, (int64_t[]){OUT}, b2);
  kc_val h = kc_relu(g, kc_add(g, kc_matmul(g, x, W1), B1));
  kc_output(g, kc_add(g, kc_matmul(g, h, W2), B2), "y");
  assert_int_equal(kc_graph_status(g), KC_OK);
  return g;
}

/* y = relu(x @ w1 + b1) @ w2 + b2 in double. */
static void reference(int batch, const float *x, double *y) {
  for (int b = 0; b < batch; b++) {
    double h[HID];
    for (int j = 0; j < HID; j++) {
      double s = b1[j];
      for (int k = 0; k < IN; k++)
        s += (double)x[b * IN + k] * w1[k * HID + j];
      h[j] = s > 0 ? s : 0;
    }
    for (int j = 0; j < OUT; j++) {
      double s = b2[j];
      for (int k = 0; k < HID; k++)
        s += h[k] * w2[k * OUT + j];
      y[b * OUT + j] = s;
    }
  }
}

/* Run the library at batch 1, 5 and 13 against the reference. */
static void check_runs(const lib *l) {
  void *m = l->create(2);
  if (!m) fail_msg("create: %s", l->error(NULL));
  for (int batch = 1; batch <= 13; batch += batch == 1 ? 4 : 8) {
    float x[13 * IN];
    double want[13 * OUT];
    for (int i = 0; i < batch * IN; i++)
      x[i] = (float)cos(0.11 * i) * 2.0f;
    reference(batch, x, want);
    kc_tensor_desc in = {"x", KC_F32, 2, {batch, IN}, x}, out;
    if (l->run(m, &in, &out) != 0) fail_msg("run: %s", l->error(m));
    assert_int_equal(out.rank, 2);
    assert_int_equal(out.dims[0], batch);
    assert_int_equal(out.dims[1], OUT);
    const float *y = out.data;
    for (int i = 0; i < batch * OUT; i++)
      if (fabs(y[i] - want[i]) > 1e-4 * (1 + fabs(want[i])))
        fail_msg("batch %d: y[%d] = %.7g, want %.7g", batch, i, y[i], want[i]);
  }
  l->free(m);
}

/* Export the MLP for cpu into dir/lib<name>.so; the status (the error printed). */
static kc_status export_mlp(const char *cpu, const char *name, char *so) {
  kc_context *ctx = kc_context_new();
  kc_graph *g = build_mlp(ctx);
  snprintf(so, 256, "%s/lib%s.so", dir, name);
  kc_export_options o = {.cpu = cpu, .name = name};
  kc_status s = kc_export(ctx, g, &o, so, NULL);
  if (s != KC_OK) print_message("kc_export --cpu=%s: %s\n", cpu, kc_last_error(ctx));
  kc_graph_free(g);
  kc_context_free(ctx);
  return s;
}

/* The recorded target strings of the library ("kernc-target ..." up to NUL), joined by '\n'. */
static char *records(const char *so) {
  size_t n = 0;
  char *data = th_read_file(so, &n), *out = calloc(1, 8192);
  assert_non_null(data);
  const char mark[] = "kernc-target triple=";
  for (size_t i = 0; i + sizeof mark < n; i++)
    if (memcmp(data + i, mark, sizeof mark - 1) == 0) {
      size_t l = strnlen(data + i, n - i);
      snprintf(out + strlen(out), 8192 - strlen(out), "%.*s\n", (int)l, data + i);
      i += l;
    }
  free(data);
  return out;
}

static long long file_size(const char *path) {
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  return (long long)st.st_size;
}

static int count(const char *hay, const char *needle) {
  int c = 0;
  for (const char *p = hay; (p = strstr(p, needle)); p++)
    c++;
  return c;
}

/* Lines of `objdump -d so` naming a register of the given prefix ("%ymm"). */
static int objdump_count(const char *so, const char *reg) {
  char cmd[512], *out = NULL;
  snprintf(cmd, sizeof cmd, "objdump -d --no-show-raw-insn '%s' | grep -c '%s' || true", so, reg);
  assert_int_equal(th_exec(cmd, &out, NULL), 0);
  int n = atoi(out);
  free(out);
  return n;
}

/* The highest of x86-64-v2..v4 whose recorded features this CPU has (cpuid, as the library's
 * check): what a multi library must pick. */
static const char *best_level(const char *recs) {
  const char *best = NULL;
  static char name[64];
  for (const char *line = recs; *line; line = strchr(line, '\n') + 1) {
    const char *cpu = strstr(line, " cpu="), *f = strstr(line, " features=");
    assert_true(cpu && f);
    char feats[4096];
    snprintf(feats, sizeof feats, "%.*s", (int)strcspn(f + 10, "\n"), f + 10);
    if (kc_aot_cpu_lacks(feats, NULL, 0, NULL, 0) == 0) {
      snprintf(name, sizeof name, "%.*s", (int)strcspn(cpu + 5, " "), cpu + 5);
      if (!best || strcmp(name, best) > 0) best = name; /* x86-64-v4 > -v3 > -v2 */
    }
  }
  return best;
}

static void t_v2(void **state) {
  (void)state;
  char so[256];
  assert_int_equal(export_mlp("x86-64-v2", "v2", so), KC_OK);
  lib l;
  lib_open(&l, so, "v2");
  assert_string_equal(l.target(), "x86-64-v2");
  check_runs(&l);
  dlclose(l.so);

  char *r = records(so);
  print_message("%s", r);
  assert_int_equal(count(r, "kernc-target"), 1);
  assert_non_null(strstr(r, " cpu=x86-64-v2 "));
  assert_non_null(strstr(r, "+sse4.2"));
  assert_non_null(strstr(r, "+popcnt"));
  assert_null(strstr(r, "+avx")); /* avx, avx2, avx512* */
  assert_null(strstr(r, "+fma"));
  free(r);
  /* nothing in the library uses a 256- or 512-bit register: kernels and runtime alike */
  assert_int_equal(objdump_count(so, "%ymm"), 0);
  assert_int_equal(objdump_count(so, "%zmm"), 0);

  /* the default library is this CPU's: its LLVM name and every feature LLVM reports */
  char nso[256];
  assert_int_equal(export_mlp(NULL, "nat", nso), KC_OK);
  lib n;
  lib_open(&n, nso, "nat");
  char *host = LLVMGetHostCPUName(), want[128];
  snprintf(want, sizeof want, " cpu=%s ", host);
  assert_string_equal(n.target(), host);
  r = records(nso);
  assert_non_null(strstr(r, want));
  free(r);
  LLVMDisposeMessage(host);
  dlclose(n.so);
}

/* A library for a CPU with more than this one (sapphirerapids: AVX-512, VNNI, AMX...) runs where
 * the CPU has every recorded feature, else refuses to create, naming the CPU and what is missing,
 * and NAME_target is NULL. */
static void t_named(void **state) {
  (void)state;
  char so[256];
  assert_int_equal(export_mlp("sapphirerapids", "spr", so), KC_OK);
  char *r = records(so), lacks[4096];
  assert_non_null(strstr(r, " cpu=sapphirerapids "));
  assert_non_null(strstr(r, "+avx512vnni"));
  assert_non_null(strstr(r, "+amx-tile"));
  const char *f = strstr(r, " features=");
  r[strcspn(r, "\n")] = 0;
  int missing = kc_aot_cpu_lacks(f + 10, lacks, sizeof lacks, NULL, 0);
  lib l;
  lib_open(&l, so, "spr");
  if (missing) {
    print_message("this CPU lacks %s\n", lacks);
    assert_null(l.target());
    assert_null(l.create(1));
    const char *why = l.error(NULL);
    print_message("%s\n", why);
    assert_non_null(strstr(why, "'sapphirerapids'"));
    char first[64];
    snprintf(first, sizeof first, "%.*s", (int)strcspn(lacks, ","), lacks);
    assert_non_null(strstr(strstr(why, "lacks"), first));
  } else {
    assert_string_equal(l.target(), "sapphirerapids");
    check_runs(&l);
  }
  dlclose(l.so);
  free(r);
}

/* f32 -> bf16 -> f32 in an x86-64-v2 library: no AVX512-BF16, so LLVM calls __truncsfbf2, which
 * the library must carry (libgcc before GCC 13 has none); rounding to nearest even, by hand. */
static void t_bf16(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "bf");
  kc_val x = kc_input(g, "x", KC_F32, 1, (kc_dim[]){kc_sym(g, "n")});
  kc_output(g, kc_cast(g, kc_cast(g, x, KC_BF16), KC_F32), "y");
  char so[256];
  snprintf(so, sizeof so, "%s/libbf.so", dir);
  kc_export_options o = {.cpu = "x86-64-v2"};
  if (kc_export(ctx, g, &o, so, NULL) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  kc_graph_free(g);
  kc_context_free(ctx);
  /* bits in, bits out: exact, a tie to even down (0x3f80) and up (0x3f82), above a tie, a
   * carry into the exponent, the largest finite rounding to inf, -0, inf, a NaN staying NaN */
  static const uint32_t in[] = {0x3f800000, 0x3f808000, 0x3f818000, 0x3f808001, 0x3fffffff,
                                0x7f7fffff, 0x80000000, 0x7f800000, 0x7fc00001, 0xc0490fdb};
  static const uint32_t want[] = {0x3f800000, 0x3f800000, 0x3f820000, 0x3f810000, 0x40000000,
                                  0x7f800000, 0x80000000, 0x7f800000, 0x7fc00000, 0xc0490000};
  enum { N = sizeof in / sizeof *in };
  float xs[N];
  memcpy(xs, in, sizeof xs);
  lib l;
  lib_open(&l, so, "bf");
  void *m = l.create(1);
  if (!m) fail_msg("create: %s", l.error(NULL));
  kc_tensor_desc ti = {"x", KC_F32, 1, {N}, xs}, to;
  if (l.run(m, &ti, &to) != 0) fail_msg("run: %s", l.error(m));
  for (int i = 0; i < N; i++) {
    uint32_t got;
    memcpy(&got, (const float *)to.data + i, sizeof got);
    if (got != want[i]) fail_msg("bf16(0x%08x) = 0x%08x, want 0x%08x", in[i], got, want[i]);
  }
  l.free(m);
  dlclose(l.so);
}

static void t_multi(void **state) {
  (void)state;
  char so[256], v2so[256];
  assert_int_equal(export_mlp("multi", "multi", so), KC_OK);
  assert_int_equal(export_mlp("x86-64-v2", "one", v2so), KC_OK);
  char *r = records(so);
  print_message("%s", r);
  assert_int_equal(count(r, "kernc-target"), 3);
  assert_int_equal(count(r, " cpu=x86-64-v2 "), 1);
  assert_int_equal(count(r, " cpu=x86-64-v3 "), 1);
  assert_int_equal(count(r, " cpu=x86-64-v4 "), 1);
  const char *best = best_level(r);
  assert_non_null(best); /* this machine runs x86-64-v2 at least */

  lib l;
  lib_open(&l, so, "multi");
  print_message("multi library picks %s on this CPU\n", l.target());
  assert_string_equal(l.target(), best);
  if (kc_aot_cpu_lacks("+avx512f,+avx512bw,+avx512dq,+avx512vl,+avx512cd", NULL, 0, NULL, 0) == 0)
    assert_string_equal(l.target(), "x86-64-v4");
  check_runs(&l);
  dlclose(l.so);

  /* the weights once: three variants cost kernels, not three copies of the weights */
  long long one = file_size(v2so), three = file_size(so);
  print_message("x86-64-v2 library %lld bytes, multi %lld, weights %zu\n", one, three,
                sizeof weights);
  assert_true(one > (long long)sizeof weights);
  assert_true(three - one < (long long)sizeof weights / 2);
  int zmm = objdump_count(so, "%zmm");
  print_message("instructions naming a zmm register: %d\n", zmm);
  assert_true(zmm > 0); /* the x86-64-v4 kernels use AVX-512 */
  free(r);
}

/* A training step in a multi library takes the same step as in a single-CPU one. */
typedef struct trainer_lib {
  void *so;
  void *(*new_)(int, const void *);
  void (*free)(void *);
  int (*step)(void *, const kc_tensor_desc *, double, int64_t, double *);
  const char *(*error)(const void *);
  const char *(*target)(void);
} trainer_lib;

static void train_losses(const char *cpu, const char *name, double *loss) {
  kc_context *ctx = kc_context_new();
  kc_graph *g = build_mlp(ctx);
  char so[256];
  snprintf(so, sizeof so, "%s/lib%s.so", dir, name);
  kc_val y = kc_graph_output(g, 0),
         t = kc_input(g, "t", KC_F32, 2, (kc_dim[]){kc_sym(g, "batch"), OUT});
  kc_val d = kc_sub(g, y, t);
  kc_output(g, kc_reduce_mean(g, kc_mul(g, d, d), 0, NULL, 0), "loss");
  const char *params[] = {"*"};
  kc_train_options o;
  kc_train_defaults(&o);
  o.optimizer = KC_OPTIM_SGD;
  kc_export_options eo = {.cpu = cpu, .name = name};
  kc_status s = kc_export_train(ctx, g, "loss", 1, params, &o, &eo, so, NULL);
  if (s != KC_OK) fail_msg("kc_export_train --cpu=%s: %s", cpu, kc_last_error(ctx));
  kc_graph_free(g);
  kc_context_free(ctx);
  trainer_lib l;
  l.so = dlopen(so, RTLD_NOW | RTLD_LOCAL);
  assert_non_null(l.so);
  *(void **)&l.new_ = sym(l.so, name, "train_new");
  *(void **)&l.free = sym(l.so, name, "train_free");
  *(void **)&l.step = sym(l.so, name, "train_step");
  *(void **)&l.error = sym(l.so, name, "train_error");
  *(void **)&l.target = sym(l.so, name, "target");
  print_message("%s: training step for %s\n", name, l.target());
  void *tr = l.new_(1, NULL);
  if (!tr) fail_msg("train_new: %s", l.error(NULL));
  float x[4 * IN], tt[4 * OUT];
  for (int i = 0; i < 4 * IN; i++)
    x[i] = (float)cos(0.3 * i);
  for (int i = 0; i < 4 * OUT; i++)
    tt[i] = (float)sin(0.7 * i);
  kc_tensor_desc in[2] = {{"x", KC_F32, 2, {4, IN}, x}, {"t", KC_F32, 2, {4, OUT}, tt}};
  for (int i = 0; i < 3; i++)
    if (l.step(tr, in, 1e-3, i + 1, &loss[i]) != 0) fail_msg("train_step: %s", l.error(tr));
  l.free(tr);
  dlclose(l.so);
}

static void t_multi_train(void **state) {
  (void)state;
  double a[3], b[3];
  train_losses("x86-64-v2", "tone", a);
  train_losses("multi", "tmulti", b);
  for (int i = 0; i < 3; i++) {
    print_message("step %d: loss %.9g (x86-64-v2) %.9g (multi)\n", i, a[i], b[i]);
    assert_true(fabs(a[i] - b[i]) <= 1e-4 * (1 + fabs(a[i])));
  }
  assert_true(b[2] < b[0]); /* it trains */
}

static void t_cli(void **state) {
  (void)state;
  char cmd[2048], *out = NULL, h[256];
  const char *model =
      "# kir 1\ngraph @g(%1: f32[n,4] \"x\") {\n  %2 = relu(%1) : f32[n,4]\n  return %2 \"y\"\n}\n";
  snprintf(h, sizeof h, "%s/g.kir", dir);
  FILE *f = fopen(h, "w");
  assert_non_null(f);
  fputs(model, f);
  fclose(f);
  snprintf(cmd, sizeof cmd, "'%s' compile %s/g.kir --cpu=multi -o %s/libg.so 2>&1", kernc_prog, dir,
           dir);
  assert_int_equal(th_exec(cmd, &out, NULL), 0);
  free(out);
  snprintf(h, sizeof h, "%s/g.h", dir);
  char *hdr = th_read_file(h, NULL);
  assert_non_null(hdr);
  assert_non_null(strstr(hdr, "const char *g_target(void);"));
  assert_non_null(strstr(hdr, "x86-64-v2,x86-64-v3,x86-64-v4"));
  assert_non_null(strstr(hdr, "KC_MODEL_ERR_SHAPE = 2,"));
  assert_null(strstr(hdr, "kernc.h")); /* self-contained: nothing refers to kernc.h */
  free(hdr);

  /* errors: an unknown name (listing the levels), one named twice, --cpu for CUDA */
  snprintf(cmd, sizeof cmd, "'%s' compile %s/g.kir --cpu=pentium9 -o %s/libbad.so 2>&1", kernc_prog,
           dir, dir);
  assert_int_not_equal(th_exec(cmd, &out, NULL), 0);
  print_message("%s", out);
  assert_non_null(strstr(out, "unknown CPU 'pentium9'"));
  assert_non_null(strstr(out, "x86-64-v3"));
  free(out);
  snprintf(cmd, sizeof cmd, "'%s' compile %s/g.kir --cpu=znver3,znver3 -o %s/libbad.so 2>&1",
           kernc_prog, dir, dir);
  assert_int_not_equal(th_exec(cmd, &out, NULL), 0);
  assert_non_null(strstr(out, "'znver3' is twice"));
  free(out);
  assert_int_not_equal(access("libbad.so", F_OK), 0);

  kc_context *ctx = kc_context_new();
  kc_graph *g = build_mlp(ctx);
  kc_export_options o = {.cpu = "x86-64-v3", .target = "cuda"};
  char so[256];
  snprintf(so, sizeof so, "%s/libcuda_cpu.so", dir);
  assert_int_equal(kc_export(ctx, g, &o, so, NULL), KC_ERR_INVALID_ARG);
  assert_non_null(strstr(kc_last_error(ctx), "the CPU is for the cpu target"));
  o = (kc_export_options){.cpu = "nehalem-9000"};
  assert_int_equal(kc_export(ctx, g, &o, so, NULL), KC_ERR_INVALID_ARG);
  assert_non_null(strstr(kc_last_error(ctx), "unknown CPU 'nehalem-9000'"));
  kc_graph_free(g);
  kc_context_free(ctx);
}

int main(int argc, char **argv) {
  kernc_prog = argc > 1 ? argv[1] : "kernc";
  snprintf(dir, sizeof dir, "/tmp/kc_aot_cpu_XXXXXX");
  if (!mkdtemp(dir)) return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_v2),    cmocka_unit_test(t_named),       cmocka_unit_test(t_bf16),
      cmocka_unit_test(t_multi), cmocka_unit_test(t_multi_train), cmocka_unit_test(t_cli),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) rc = rc ? rc : 1;
  return rc;
}

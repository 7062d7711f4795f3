/*
 * tests/test_cpu_gemm.c - the matmul family's kernels (codegen/cpu/lower_matmul*.c): matmul,
 * gemm and matmul_ep lowered with kc_cpu_compile_graph and run directly through the kernel ABI,
 * against references computed here in double by naive loops with numpy broadcasting.
 *
 * Covers 2-D, 1-D operands, batch broadcasting on either side (core batch, folded into M, and
 * looped by the wrapper), symbolic dims (including ones that broadcast only at run time),
 * gemm's transposes, alpha/beta and every C shape, matmul_ep's activations with bias and
 * residual, the generic kernel (f64, i32, i64) and f16/bf16 on the packed core. Outputs start
 * as NaN / a sentinel so every element must be written; each kernel runs split in two ranges and
 * once unit by unit.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS for the guard pages */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "codegen/codegen.h"
#include "ir/internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { OP_MATMUL, OP_GEMM, OP_EP };

/* An operand: rank, concrete dims, and optional symbol names (NULL or "" = static). */
typedef struct opnd {
  int rank;
  int64_t d[KC_MAX_RANK];
  const char *sym[KC_MAX_RANK];
} opnd;

typedef struct mcase {
  int op;
  kc_dtype dt;
  opnd a, b, x, y; /* gemm: x = C; matmul_ep: x = bias, y = residual (rank -1: absent) */
  float alpha, beta;
  int ta, tb;
  kc_act act;
} mcase;

static int64_t numel(const opnd *o) {
  int64_t n = 1;
  for (int i = 0; i < o->rank; i++)
    n *= o->d[i];
  return n;
}

/* ---- reference ----------------------------------------------------------------------------- */

/* Output dims of the case (numpy matmul, or [M, N] for gemm). */
static int out_dims(const mcase *c, int64_t *od) {
  if (c->op == OP_GEMM) {
    od[0] = c->a.d[c->ta ? 1 : 0];
    od[1] = c->b.d[c->tb ? 0 : 1];
    return 2;
  }
  int ra = c->a.rank, rb = c->b.rank, nba = ra > 2 ? ra - 2 : 0, nbb = rb > 2 ? rb - 2 : 0;
  int nb = nba > nbb ? nba : nbb, r = 0;
  for (int i = 0; i < nb; i++) {
    int64_t x = i - (nb - nba) >= 0 ? c->a.d[i - (nb - nba)] : 1;
    int64_t y = i - (nb - nbb) >= 0 ? c->b.d[i - (nb - nbb)] : 1;
    od[r++] = x == 1 ? y : x;
  }
  if (ra > 1) od[r++] = c->a.d[ra - 2];
  if (rb > 1) od[r++] = c->b.d[rb - 1];
  return r;
}

/* Offset in o (broadcast to the rank-r shape od) of the element at multi-index idx. */
static int64_t bcast_off(const opnd *o, int r, const int64_t *idx) {
  int64_t off = 0, stride = 1;
  for (int i = o->rank - 1; i >= 0; i--) {
    int oi = i + (r - o->rank);
    if (o->d[i] != 1) off += idx[oi] * stride;
    stride *= o->d[i];
  }
  return off;
}

static double gelu_ref(double x, int tanh_form) {
  if (tanh_form) return 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
  return 0.5 * x * (1 + erf(x / sqrt(2.0)));
}

/* ref[i] (output order) and mag[i] = sum |a*b| for the tolerance. */
static void reference(const mcase *c, const double *a, const double *b, const double *x,
                      const double *y, double *ref, double *mag) {
  int64_t od[KC_MAX_RANK];
  int r = out_dims(c, od);
  int64_t total = 1;
  for (int i = 0; i < r; i++)
    total *= od[i];
  int ra = c->a.rank, rb = c->b.rank;
  int64_t K = c->op == OP_GEMM ? c->a.d[c->ta ? 0 : 1] : c->a.d[ra - 1];
  for (int64_t e = 0; e < total; e++) {
    int64_t idx[KC_MAX_RANK], rem = e;
    for (int i = r - 1; i >= 0; i--) {
      idx[i] = rem % od[i];
      rem /= od[i];
    }
    double s = 0, m = 0;
    for (int64_t k = 0; k < K; k++) {
      double av, bv;
      if (c->op == OP_GEMM) {
        av = c->ta ? a[k * c->a.d[1] + idx[0]] : a[idx[0] * K + k];
        bv = c->tb ? b[idx[1] * K + k] : b[k * c->b.d[1] + idx[1]];
      } else {
        /* promoted operand indices: batch dims of the output, then (i, k) / (k, j) */
        int hasm = ra > 1, hasn = rb > 1, nb = r - hasm - hasn;
        int64_t i = hasm ? idx[nb] : 0, j = hasn ? idx[r - 1] : 0;
        int64_t ai[KC_MAX_RANK + 2], bi[KC_MAX_RANK + 2];
        memcpy(ai, idx, (size_t)nb * sizeof *ai);
        memcpy(bi, idx, (size_t)nb * sizeof *bi);
        opnd pa = c->a, pb = c->b;
        if (ra == 1) {
          pa.rank = 2, pa.d[1] = pa.d[0], pa.d[0] = 1;
        }
        if (rb == 1) pb.rank = 2, pb.d[1] = 1;
        ai[nb] = i, ai[nb + 1] = k;
        bi[nb] = k, bi[nb + 1] = j;
        av = a[bcast_off(&pa, nb + 2, ai)];
        bv = b[bcast_off(&pb, nb + 2, bi)];
      }
      s += av * bv;
      m += fabs(av * bv);
    }
    if (c->op == OP_GEMM) {
      s *= c->alpha;
      m *= fabs(c->alpha);
      if (c->x.rank >= 0) {
        double cv = c->beta * x[bcast_off(&c->x, r, idx)];
        s += cv;
        m += fabs(cv);
      }
    } else if (c->op == OP_EP) {
      if (c->x.rank >= 0) {
        s += x[bcast_off(&c->x, r, idx)];
        m += fabs(x[bcast_off(&c->x, r, idx)]);
      }
      if (c->act == KC_ACT_RELU) s = s < 0 ? 0 : s;
      if (c->act == KC_ACT_GELU || c->act == KC_ACT_GELU_TANH)
        s = gelu_ref(s, c->act == KC_ACT_GELU_TANH);
      if (c->y.rank >= 0) {
        s += y[bcast_off(&c->y, r, idx)];
        m += fabs(y[bcast_off(&c->y, r, idx)]);
      }
    }
    ref[e] = s;
    mag[e] = m;
  }
}

/* ---- typed buffers ------------------------------------------------------------------------- */

/* bytes ending exactly at an inaccessible page, so a read or write past the end faults. */
static void *galloc(size_t bytes) {
  size_t page = (size_t)sysconf(_SC_PAGESIZE), data = (bytes + page - 1) / page * page;
  char *base = mmap(NULL, data + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  assert_true(base != MAP_FAILED);
  assert_int_equal(mprotect(base + data, page, PROT_NONE), 0);
  return base + data - bytes;
}

static void gfree(void *p, size_t bytes) {
  if (!p) return;
  size_t page = (size_t)sysconf(_SC_PAGESIZE), data = (bytes + page - 1) / page * page;
  munmap((char *)p + bytes - data, data + page);
}

static size_t nbytes(kc_dtype t, int64_t n) { return (size_t)(n > 0 ? n : 1) * kc_dtype_size(t); }

/* bf16 is the top half of an f32 (round to nearest even); C has no bf16 arithmetic type. */
static uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

static float from_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* v rounded to what dtype t can hold, so references see the kernel's inputs. */
static void quantize(kc_dtype t, double *v, int64_t n) {
  for (int64_t i = 0; v && i < n; i++) {
    if (t == KC_F32) v[i] = (float)v[i];
    if (t == KC_F16) v[i] = (_Float16)v[i];
    if (t == KC_BF16) v[i] = from_bf16(to_bf16((float)v[i]));
  }
}

static void *typed(kc_dtype t, const double *v, int64_t n) {
  void *p = galloc(nbytes(t, n));
  for (int64_t i = 0; i < n; i++) {
    switch (t) {
    case KC_F32: ((float *)p)[i] = (float)v[i]; break;
    case KC_F64: ((double *)p)[i] = v[i]; break;
    case KC_I32: ((int32_t *)p)[i] = (int32_t)v[i]; break;
    case KC_I64: ((int64_t *)p)[i] = (int64_t)v[i]; break;
    case KC_F16: ((_Float16 *)p)[i] = (_Float16)v[i]; break;
    case KC_BF16: ((uint16_t *)p)[i] = to_bf16((float)v[i]); break;
    default: fail();
    }
  }
  return p;
}

static double get(kc_dtype t, const void *p, int64_t i) {
  switch (t) {
  case KC_F32: return ((const float *)p)[i];
  case KC_F64: return ((const double *)p)[i];
  case KC_I32: return ((const int32_t *)p)[i];
  case KC_I64: return (double)((const int64_t *)p)[i];
  case KC_F16: return ((const _Float16 *)p)[i];
  case KC_BF16: return from_bf16(((const uint16_t *)p)[i]);
  default: fail(); return 0;
  }
}

/* Values that keep integer products exact; floats in [-1, 1). */
static double *rand_vals(kc_dtype t, int64_t n, unsigned *seed) {
  double *v = malloc((size_t)(n > 0 ? n : 1) * sizeof *v);
  for (int64_t i = 0; i < n; i++)
    v[i] = kc_dtype_is_float(t) ? (double)rand_r(seed) / RAND_MAX * 2 - 1
                                : (double)(rand_r(seed) % 19) - 9;
  return v;
}

/* Fill an output with NaN (floats) or a sentinel (integers). */
static void poison(kc_dtype t, void *p, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    if (t == KC_F32) ((float *)p)[i] = NAN;
    if (t == KC_F64) ((double *)p)[i] = NAN;
    if (t == KC_I32) ((int32_t *)p)[i] = INT32_MIN;
    if (t == KC_I64) ((int64_t *)p)[i] = INT64_MIN;
    if (t == KC_F16) ((_Float16 *)p)[i] = (_Float16)NAN;
    if (t == KC_BF16) ((uint16_t *)p)[i] = 0x7fc0;
  }
}

/* ---- driver ---------------------------------------------------------------------------------- */

static kc_val input(kc_graph *g, const char *name, kc_dtype t, const opnd *o) {
  kc_dim d[KC_MAX_RANK];
  for (int i = 0; i < o->rank; i++)
    d[i] = o->sym[i] && o->sym[i][0] ? kc_sym(g, o->sym[i]) : o->d[i];
  return kc_input(g, name, t, o->rank, d);
}

static int put_dims(int64_t *dims, int n, const opnd *o) {
  for (int i = 0; o->rank > 0 && i < o->rank; i++)
    dims[n++] = o->d[i];
  return n;
}

/* Run the kernel over units [begin, end) with a fresh workspace. */
static void run_range(const kc_cpu_kernel *k, void *const *bufs, const int64_t *dims, int64_t begin,
                      int64_t end) {
  void *ws = k->ws_bytes ? aligned_alloc(64, ((size_t)k->ws_bytes + 63) / 64 * 64) : NULL;
  k->fn(bufs, dims, ws, begin, end);
  free(ws);
}

static void check_out(const mcase *c, const void *out, const double *ref, const double *mag,
                      int64_t n, const char *how) {
  /* f16/bf16 accumulate in f32 and round once: half an ulp of the result */
  double tol = c->dt == KC_F32 ? 2e-6 : c->dt == KC_F64 ? 1e-13 : 0;
  if (c->dt == KC_F16) tol = 1e-3;
  if (c->dt == KC_BF16) tol = 8e-3;
  /* f32 gelu goes through vmath's vector erf / tanh, polynomial approximations */
  if (c->dt == KC_F32 && c->op == OP_EP && (c->act == KC_ACT_GELU || c->act == KC_ACT_GELU_TANH))
    tol = 2e-5;
  for (int64_t i = 0; i < n; i++) {
    double got = get(c->dt, out, i);
    if (!(fabs(got - ref[i]) <= tol * (mag[i] + 1))) {
      fail_msg(
          "%s: out[%lld] = %.9g, reference %.9g (op %d act %d, dtype %s, A rank %d, B rank %d)",
          how, (long long)i, got, ref[i], c->op, (int)c->act, kc_dtype_name(c->dt), c->a.rank,
          c->b.rank);
    }
  }
}

static void run_case(const mcase *c) {
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "mm");
  kc_val a = input(g, "a", c->dt, &c->a), b = input(g, "b", c->dt, &c->b), out;
  kc_val x = c->x.rank >= 0 ? input(g, "x", c->dt, &c->x) : (kc_val){0};
  kc_val y = c->y.rank >= 0 ? input(g, "y", c->dt, &c->y) : (kc_val){0};
  if (c->op == OP_GEMM)
    out = kc_gemm(g, a, b, x, c->alpha, c->beta, c->ta, c->tb);
  else if (c->op == OP_EP)
    out = kc_matmul_ep(g, a, b, x, y, c->act);
  else
    out = kc_matmul(g, a, b);
  kc_output(g, out, "out");
  if (kc_graph_status(g) != KC_OK) fail_msg("building: %s", kc_last_error(ctx));

  kc_cpu *cpu;
  assert_int_equal(kc_cpu_new(ctx, &cpu), KC_OK);
  kc_cpu_kernel *ks = calloc(g->nnodes + 1, sizeof *ks);
  kc_status s = kc_cpu_compile_graph(cpu, g, ks);
  if (s != KC_OK) fail_msg("lowering: %s", kc_last_error(ctx));
  const kc_cpu_kernel *k = &ks[0];

  unsigned seed = 1234;
  int64_t od[KC_MAX_RANK];
  opnd oo = {.rank = out_dims(c, od)};
  memcpy(oo.d, od, sizeof od);
  int64_t n = numel(&oo);
  double *av = rand_vals(c->dt, numel(&c->a), &seed), *bv = rand_vals(c->dt, numel(&c->b), &seed);
  double *xv = c->x.rank >= 0 ? rand_vals(c->dt, numel(&c->x), &seed) : NULL;
  double *yv = c->y.rank >= 0 ? rand_vals(c->dt, numel(&c->y), &seed) : NULL;
  quantize(c->dt, av, numel(&c->a));
  quantize(c->dt, bv, numel(&c->b));
  quantize(c->dt, xv, c->x.rank >= 0 ? numel(&c->x) : 0);
  quantize(c->dt, yv, c->y.rank >= 0 ? numel(&c->y) : 0);
  double *ref = malloc((size_t)(n + 1) * sizeof *ref), *mag = malloc((size_t)(n + 1) * sizeof *mag);
  reference(c, av, bv, xv, yv, ref, mag);

  void *bufs[5] = {0};
  size_t sizes[5] = {0};
  int nb = 0, nd = 0;
  int64_t dims[5 * KC_MAX_RANK];
  sizes[nb] = nbytes(c->dt, numel(&c->a));
  bufs[nb++] = typed(c->dt, av, numel(&c->a));
  sizes[nb] = nbytes(c->dt, numel(&c->b));
  bufs[nb++] = typed(c->dt, bv, numel(&c->b));
  nd = put_dims(dims, nd, &c->a);
  nd = put_dims(dims, nd, &c->b);
  /* optional inputs: the node has as many as the builder kept (trailing absent ones dropped) */
  uint32_t nin = g->nodes[0].nin;
  if (nin > 2) {
    sizes[nb] = nbytes(c->dt, numel(&c->x));
    bufs[nb++] = xv ? typed(c->dt, xv, numel(&c->x)) : NULL;
    if (xv) nd = put_dims(dims, nd, &c->x);
  }
  if (nin > 3) {
    sizes[nb] = nbytes(c->dt, numel(&c->y));
    bufs[nb++] = yv ? typed(c->dt, yv, numel(&c->y)) : NULL;
    if (yv) nd = put_dims(dims, nd, &c->y);
  }
  sizes[nb] = nbytes(c->dt, n);
  void *o = galloc(sizes[nb]);
  bufs[nb++] = o;
  nd = put_dims(dims, nd, &oo);

  int64_t units = k->units(dims);
  assert_true(units >= (n > 0 ? 1 : 0));
  poison(c->dt, o, n);
  run_range(k, bufs, dims, 0, units / 3);
  run_range(k, bufs, dims, units / 3, units);
  check_out(c, o, ref, mag, n, "two ranges");
  poison(c->dt, o, n);
  for (int64_t u = 0; u < units; u++)
    run_range(k, bufs, dims, u, u + 1);
  check_out(c, o, ref, mag, n, "unit by unit");

  for (int i = 0; i < nb; i++)
    gfree(bufs[i], sizes[i]);
  free(av), free(bv), free(xv), free(yv), free(ref), free(mag);
  free(ks);
  kc_cpu_free(cpu);
  kc_graph_free(g);
  kc_context_free(ctx);
}

#define R(...)                                                                                     \
  {                                                                                                \
    .rank = sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t), .d = { __VA_ARGS__ }               \
  }
#define NONE                                                                                       \
  { .rank = -1 }
#define SCALAR                                                                                     \
  { .rank = 0 }

static void gemm(opnd a, opnd b, opnd c, float alpha, float beta, int ta, int tb, kc_dtype t);
static void ep(kc_dtype t, opnd a, opnd b, opnd bias, opnd res, kc_act act);

static void mm(kc_dtype t, opnd a, opnd b) {
  run_case(&(mcase){.op = OP_MATMUL, .dt = t, .a = a, .b = b, .x = NONE, .y = NONE});
}

/* ---- tests ------------------------------------------------------------------------------------
 */

static void t_matmul_2d(void **state) {
  mm(KC_F32, (opnd)R(5, 7), (opnd)R(7, 9));
  mm(KC_F32, (opnd)R(1, 1), (opnd)R(1, 1));
  mm(KC_F32, (opnd)R(67, 130), (opnd)R(130, 93));
  mm(KC_F32, (opnd)R(200, 40), (opnd)R(40, 3)); /* many row tiles, one column panel */
  mm(KC_F32, (opnd)R(4, 0), (opnd)R(0, 6));     /* K = 0: zeros */
}

static void t_matmul_1d(void **state) {
  mm(KC_F32, (opnd)R(7), (opnd)R(7, 9));
  mm(KC_F32, (opnd)R(5, 7), (opnd)R(7));
  mm(KC_F32, (opnd)R(7), (opnd)R(7));
  mm(KC_F32, (opnd)R(7), (opnd)R(2, 3, 7, 9));
  mm(KC_F32, (opnd)R(2, 3, 5, 7), (opnd)R(7));
}

/* N = 1: dot products along K (main loop, tail, epilogue on a scalar). */
static void t_matmul_vector(void **state) {
  mm(KC_F32, (opnd)R(37, 300), (opnd)R(300, 1));
  mm(KC_F32, (opnd)R(2, 3, 9, 130), (opnd)R(130));
  mm(KC_F32, (opnd)R(3, 1, 64), (opnd)R(2, 1, 64, 1));
  mm(KC_F64, (opnd)R(5, 67), (opnd)R(67));
  mm(KC_I32, (opnd)R(5, 67), (opnd)R(3, 67, 1));
  gemm((opnd)R(9, 150), (opnd)R(1, 150), (opnd)R(9, 1), 0.5f, 2, 0, 1, KC_F32);
  gemm((opnd)R(150, 9), (opnd)R(150, 1), (opnd)R(1), 1, 1, 1, 0, KC_F32); /* A^T: the core */
  ep(KC_F32, (opnd)R(4, 9, 200), (opnd)R(200, 1), (opnd)R(1), (opnd)R(4, 9, 1), KC_ACT_GELU);
  ep(KC_F16, (opnd)R(9, 200), (opnd)R(200), (opnd)R(1), (opnd)R(9), KC_ACT_RELU);
}

/* One or two rows per product: f32 streams B through the loop nest instead of packing it. */
static void t_few_rows(void **state) {
  mm(KC_F32, (opnd)R(1, 300), (opnd)R(300, 200));
  mm(KC_F32, (opnd)R(2, 1, 2, 33), (opnd)R(3, 33, 70)); /* [2,3,2,70] */
  mm(KC_F32, (opnd){.rank = 3, .d = {4, 1, 64}, .sym = {"B"}}, (opnd)R(64, 100));
  gemm((opnd)R(40, 1), (opnd)R(40, 70), (opnd)R(70), 1, 1, 1, 0, KC_F32);
  ep(KC_F32, (opnd)R(1, 1, 50), (opnd)R(50, 130), (opnd)R(130), (opnd)R(1, 1, 130),
     KC_ACT_GELU_TANH);
}

static void t_matmul_batched(void **state) {
  mm(KC_F32, (opnd)R(3, 5, 7), (opnd)R(3, 7, 9));          /* core batch */
  mm(KC_F32, (opnd)R(3, 5, 7), (opnd)R(7, 9));             /* folded into M */
  mm(KC_F32, (opnd)R(5, 7), (opnd)R(3, 7, 9));             /* A broadcast */
  mm(KC_F32, (opnd)R(2, 1, 5, 7), (opnd)R(1, 3, 7, 9));    /* mixed: wrapper loop */
  mm(KC_F32, (opnd)R(2, 3, 5, 7), (opnd)R(3, 7, 9));       /* fold inner, loop outer */
  mm(KC_F32, (opnd)R(2, 3, 5, 7), (opnd)R(2, 1, 7, 9));    /* A full, B mixed */
  mm(KC_F32, (opnd)R(4, 1, 3, 5, 7), (opnd)R(2, 1, 7, 9)); /* [4,2,3,5,9] */
  mm(KC_F32, (opnd)R(1, 3, 5, 7), (opnd)R(1, 3, 7, 9));    /* unit dims */
  mm(KC_F32, (opnd)R(2, 4, 70, 33), (opnd)R(2, 4, 33, 70));
}

static void t_matmul_symbolic(void **state) {
  /* [B,S,K] @ [K,N] */
  mm(KC_F32, (opnd){.rank = 3, .d = {3, 5, 16}, .sym = {"B", "S"}}, (opnd)R(16, 20));
  /* [B,H,S,D] @ [B,H,D,S] */
  mm(KC_F32, (opnd){.rank = 4, .d = {2, 3, 5, 8}, .sym = {"B", "", "S"}},
     (opnd){.rank = 4, .d = {2, 3, 8, 5}, .sym = {"B", "", "", "S"}});
  /* a symbol that broadcasts only at run time: [X,5,7] @ [Y,7,9] with Y = 1, then Y = X */
  mm(KC_F32, (opnd){.rank = 3, .d = {3, 5, 7}, .sym = {"X"}},
     (opnd){.rank = 3, .d = {1, 7, 9}, .sym = {"Y"}});
  mm(KC_F32, (opnd){.rank = 3, .d = {3, 5, 7}, .sym = {"X"}},
     (opnd){.rank = 3, .d = {3, 7, 9}, .sym = {"Y"}});
  mm(KC_F32, (opnd)R(4, 5, 7), (opnd){.rank = 3, .d = {1, 7, 9}, .sym = {"Y"}});
  /* symbolic M, N and K */
  mm(KC_F32, (opnd){.rank = 2, .d = {9, 11}, .sym = {"M", "K"}},
     (opnd){.rank = 2, .d = {11, 13}, .sym = {"K", "N"}});
}

static void gemm(opnd a, opnd b, opnd c, float alpha, float beta, int ta, int tb, kc_dtype t) {
  run_case(&(mcase){.op = OP_GEMM,
                    .dt = t,
                    .a = a,
                    .b = b,
                    .x = c,
                    .y = NONE,
                    .alpha = alpha,
                    .beta = beta,
                    .ta = ta,
                    .tb = tb});
}

static void t_gemm(void **state) {
  enum { M = 6, N = 19, K = 11 };
  for (int ta = 0; ta < 2; ta++)
    for (int tb = 0; tb < 2; tb++) {
      opnd a = ta ? (opnd)R(K, M) : (opnd)R(M, K), b = tb ? (opnd)R(N, K) : (opnd)R(K, N);
      gemm(a, b, (opnd)NONE, 1, 1, ta, tb, KC_F32);
      gemm(a, b, (opnd)R(M, N), 0.5f, 2, ta, tb, KC_F32);
      gemm(a, b, (opnd)R(N), 1, 1, ta, tb, KC_F64);
      gemm(a, b, (opnd)R(M, N), 0.25f, -1.5f, ta, tb, KC_F64);
    }
  opnd a = R(M, K), b = R(K, N);
  opnd cs[] = {R(N), R(M, 1), R(1), R(1, N), R(1, 1), SCALAR, R(M, N)};
  for (unsigned i = 0; i < sizeof cs / sizeof *cs; i++) {
    gemm(a, b, cs[i], 1, 1, 0, 0, KC_F32);
    gemm(a, b, cs[i], -0.5f, 3, 0, 0, KC_F64);
  }
  gemm(a, b, (opnd)R(M, N), 2, 0, 0, 0, KC_F32); /* beta 0: C ignored */
  gemm(a, b, (opnd)NONE, 3, 1, 0, 0, KC_F32);    /* alpha only */
  gemm((opnd)R(70, 130), (opnd)R(93, 130), (opnd)R(93), 1, 1, 0, 1, KC_F32);
  /* B^T through the transposing packer, K over two slices, alpha/beta by the hook */
  gemm((opnd)R(30, 500), (opnd)R(150, 500), (opnd)R(30, 150), 0.5f, 2, 0, 1, KC_F32);
  gemm((opnd)R(K, M), (opnd)R(K, N), (opnd)R(M, 1), 2, 3, 1, 0, KC_I32);
  gemm((opnd)R(K, M), (opnd)R(N, K), (opnd)R(N), 0.5f, 2, 1, 1, KC_F16); /* f16 A^T, B^T */
  /* symbolic M; C of the output's shape, and a column whose stride is known at run time */
  opnd sa = {.rank = 2, .d = {M, K}, .sym = {"M"}};
  gemm(sa, b, (opnd){.rank = 2, .d = {M, N}, .sym = {"M"}}, 1, 2, 0, 0, KC_F32);
  gemm(sa, b, (opnd){.rank = 2, .d = {M, 1}, .sym = {"M", "Q"}}, 1, 2, 0, 0, KC_F32);
  gemm(sa, b, (opnd){.rank = 2, .d = {M, N}, .sym = {"M", "Q"}}, 1, 2, 0, 0, KC_F32);
  gemm(sa, b, (opnd){.rank = 2, .d = {1, N}, .sym = {"P", "Q"}}, 1, 2, 0, 0, KC_F64);
}

static void ep(kc_dtype t, opnd a, opnd b, opnd bias, opnd res, kc_act act) {
  run_case(&(mcase){.op = OP_EP, .dt = t, .a = a, .b = b, .x = bias, .y = res, .act = act});
}

static void t_matmul_ep(void **state) {
  kc_act acts[] = {KC_ACT_NONE, KC_ACT_RELU, KC_ACT_GELU, KC_ACT_GELU_TANH};
  for (int i = 0; i < 4; i++) {
    ep(KC_F32, (opnd)R(5, 7), (opnd)R(7, 37), (opnd)R(37), (opnd)R(5, 37), acts[i]);
    ep(KC_F32, (opnd)R(2, 5, 7), (opnd)R(7, 37), (opnd)R(37), (opnd)NONE, acts[i]);
    ep(KC_F32, (opnd)R(2, 5, 7), (opnd)R(7, 37), (opnd)NONE, (opnd)R(2, 5, 37), acts[i]);
    ep(KC_F64, (opnd)R(2, 5, 7), (opnd)R(2, 7, 9), (opnd)R(9), (opnd)R(2, 5, 9), acts[i]);
  }
  ep(KC_F32, (opnd)R(5, 7), (opnd)R(7, 9), (opnd)NONE, (opnd)NONE, KC_ACT_GELU);
  /* residual broadcast, bias as a row, a wrapper-looped batch, large enough for many units */
  ep(KC_F32, (opnd)R(2, 1, 5, 7), (opnd)R(1, 3, 7, 9), (opnd)R(1, 9), (opnd)R(3, 1, 9),
     KC_ACT_RELU);
  ep(KC_F32, (opnd)R(3, 100, 64), (opnd)R(64, 150), (opnd)R(150), (opnd)R(3, 100, 150),
     KC_ACT_GELU);
  ep(KC_F32, (opnd){.rank = 3, .d = {2, 6, 16}, .sym = {"B", "S"}}, (opnd)R(16, 40), (opnd)R(40),
     (opnd){.rank = 3, .d = {2, 6, 40}, .sym = {"B", "S"}}, KC_ACT_GELU_TANH);
  /* the f32 core's hook: after the last of several K slices only, over several row blocks,
   * and with the wrapper's outer loop (row base per outer index) */
  ep(KC_F32, (opnd)R(2, 90, 800), (opnd)R(800, 150), (opnd)R(150), (opnd)R(2, 90, 150),
     KC_ACT_GELU);
  ep(KC_F32, (opnd)R(400, 40), (opnd)R(40, 70), (opnd)R(70), (opnd)R(400, 70), KC_ACT_GELU_TANH);
  ep(KC_F32, (opnd)R(2, 1, 8, 7), (opnd)R(1, 3, 7, 9), (opnd)R(9), (opnd)R(2, 3, 8, 9),
     KC_ACT_RELU);
  ep(KC_I32, (opnd)R(5, 7), (opnd)R(7, 9), (opnd)R(9), (opnd)R(5, 9), KC_ACT_RELU);
  ep(KC_F16, (opnd)R(2, 5, 7), (opnd)R(7, 40), (opnd)R(40), (opnd)R(5, 40), KC_ACT_GELU);
  ep(KC_F32, (opnd)R(7), (opnd)R(7, 9), (opnd)R(9), (opnd)R(9), KC_ACT_RELU);
  ep(KC_F32, (opnd)R(5, 7), (opnd)R(7), (opnd)R(1), (opnd)R(5), KC_ACT_RELU);
}

static void t_generic_dtypes(void **state) {
  kc_dtype ts[] = {KC_F64, KC_I32, KC_I64, KC_F16, KC_BF16};
  for (int i = 0; i < 5; i++) {
    mm(ts[i], (opnd)R(5, 7), (opnd)R(7, 9));
    mm(ts[i], (opnd)R(3, 17, 20), (opnd)R(20, 70));
    mm(ts[i], (opnd)R(2, 1, 5, 7), (opnd)R(1, 3, 7, 9));
    mm(ts[i], (opnd)R(7), (opnd)R(2, 7, 9));
    mm(ts[i], (opnd)R(2, 5, 7), (opnd)R(7));
    mm(ts[i], (opnd)R(7), (opnd)R(7));
    mm(ts[i], (opnd){.rank = 3, .d = {3, 5, 7}, .sym = {"X"}},
       (opnd){.rank = 3, .d = {1, 7, 9}, .sym = {"Y"}});
  }
}

/* f16 / bf16 products big enough for the packed core (lower_matmul_half.c): several row and
 * column blocks, two K slices, batch broadcasting, transposes and the epilogue. */
static void t_half_core(void **state) {
  kc_dtype ts[] = {KC_F16, KC_BF16};
  for (int i = 0; i < 2; i++) {
    mm(ts[i], (opnd)R(2, 200, 400), (opnd)R(400, 300));
    mm(ts[i], (opnd)R(2, 1, 20, 30), (opnd)R(1, 3, 30, 270));
    ep(ts[i], (opnd)R(170, 50), (opnd)R(50, 260), (opnd)R(260), (opnd)R(170, 260), KC_ACT_GELU);
    gemm((opnd)R(40, 180), (opnd)R(300, 40), (opnd)R(300), 0.5f, 2, 1, 1, ts[i]);
  }
}

/* Two f32 kernels in one module share the core: y = relu((a @ b) @ c + bias), both run. */
static void t_shared_core(void **state) {
  enum { M = 9, K = 13, N = 21, P = 35 };
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "two");
  kc_val a = kc_input(g, "a", KC_F32, 2, (kc_dim[]){M, K});
  kc_val b = kc_input(g, "b", KC_F32, 2, (kc_dim[]){K, N});
  kc_val c = kc_input(g, "c", KC_F32, 2, (kc_dim[]){N, P});
  kc_val bias = kc_input(g, "bias", KC_F32, 1, (kc_dim[]){P});
  kc_val t = kc_matmul(g, a, b);
  kc_output(g, kc_matmul_ep(g, t, c, bias, (kc_val){0}, KC_ACT_RELU), "y");
  assert_int_equal(kc_graph_status(g), KC_OK);
  kc_cpu *cpu;
  assert_int_equal(kc_cpu_new(ctx, &cpu), KC_OK);
  kc_cpu_kernel ks[2];
  assert_int_equal(g->nnodes, 2);
  if (kc_cpu_compile_graph(cpu, g, ks) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  unsigned seed = 3;
  double *av = rand_vals(KC_F32, M * K, &seed), *bv = rand_vals(KC_F32, K * N, &seed);
  double *cv = rand_vals(KC_F32, N * P, &seed), *biv = rand_vals(KC_F32, P, &seed);
  float *fa = typed(KC_F32, av, M * K), *fb = typed(KC_F32, bv, K * N);
  float *fc = typed(KC_F32, cv, N * P), *fbias = typed(KC_F32, biv, P);
  float *ft = galloc(M * N * sizeof(float)), *fy = galloc(M * P * sizeof(float));
  poison(KC_F32, ft, M * N);
  poison(KC_F32, fy, M * P);
  int64_t d0[] = {M, K, K, N, M, N}, d1[] = {M, N, N, P, P, M, P};
  run_range(&ks[0], (void *[]){fa, fb, ft}, d0, 0, ks[0].units(d0));
  run_range(&ks[1], (void *[]){ft, fc, fbias, fy}, d1, 0, ks[1].units(d1));
  for (int i = 0; i < M; i++)
    for (int j = 0; j < P; j++) {
      double s = biv[j], mag = fabs(biv[j]);
      for (int n = 0; n < N; n++) {
        double tv = 0, tm = 0;
        for (int k = 0; k < K; k++) {
          tv += av[i * K + k] * bv[k * N + n];
          tm += fabs(av[i * K + k] * bv[k * N + n]);
        }
        s += tv * cv[n * P + j];
        mag += tm * fabs(cv[n * P + j]);
      }
      s = s < 0 ? 0 : s;
      assert_true(fabs(fy[i * P + j] - s) <= 1e-5 * (mag + 1));
    }
  gfree(fa, M * K * sizeof(float)), gfree(fb, K * N * sizeof(float));
  gfree(fc, N * P * sizeof(float)), gfree(fbias, P * sizeof(float));
  gfree(ft, M * N * sizeof(float)), gfree(fy, M * P * sizeof(float));
  free(av), free(bv), free(cv), free(biv);
  kc_cpu_free(cpu);
  kc_graph_free(g);
  kc_context_free(ctx);
}

/* Unsupported combinations fail lowering with a message naming the node, not a crash. */
static void t_unsupported(void **state) {
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "bad");
  kc_val a = kc_input(g, "a", KC_I32, 2, (kc_dim[]){2, 3});
  kc_val b = kc_input(g, "b", KC_I32, 2, (kc_dim[]){3, 4});
  kc_output(g, kc_matmul_ep(g, a, b, (kc_val){0}, (kc_val){0}, KC_ACT_GELU), "y");
  assert_int_equal(kc_graph_status(g), KC_OK);
  kc_cpu *cpu;
  assert_int_equal(kc_cpu_new(ctx, &cpu), KC_OK);
  kc_cpu_kernel ks[1];
  assert_int_equal(kc_cpu_compile_graph(cpu, g, ks), KC_ERR_UNSUPPORTED);
  assert_non_null(strstr(kc_last_error(ctx), "gelu"));
  kc_cpu_free(cpu);
  kc_graph_free(g);
  kc_context_free(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_matmul_2d),      cmocka_unit_test(t_matmul_1d),
      cmocka_unit_test(t_matmul_vector),  cmocka_unit_test(t_few_rows),
      cmocka_unit_test(t_matmul_batched), cmocka_unit_test(t_matmul_symbolic),
      cmocka_unit_test(t_gemm),           cmocka_unit_test(t_matmul_ep),
      cmocka_unit_test(t_generic_dtypes), cmocka_unit_test(t_half_core),
      cmocka_unit_test(t_shared_core),    cmocka_unit_test(t_unsupported),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

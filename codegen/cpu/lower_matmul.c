/*
 * codegen/cpu/lower_matmul.c - kc_lower_matmul, the CPU family of matmul (ONNX MatMul), gemm
 * and matmul_ep: the plan of a node (batch mapping, epilogue) and the f32 kernel, which wraps
 * the core of matmul.c (packed, or, for products of a few rows such as a decode step's, streaming
 * B unpacked: matmul_small.c, chosen at run time from the rows); f16/bf16 take the same core
 * through lower_matmul_half.c; f64, integers, N = 1 (dot products) and f16/bf16 products of
 * 1-2 rows go to the loop nests of lower_matmul_gen.c.
 *
 * f32 batch mapping. The core computes `batch` products with one stride per operand (0 =
 * broadcast). The longest run of trailing output batch dims over which A and B are each
 * either fully batched or broadcast becomes the core's batch; when A is batched and B
 * broadcast there (x [B,S,K] @ w [K,N]), the batch folds into M (one [B*S,K] @ [K,N] product,
 * better blocking than B small ones). The leading dims left over (mixed broadcasting such as
 * [2,1,M,K] @ [1,3,K,N], or dims only known at run time to broadcast) are looped by the
 * wrapper with per-dim strides: work unit u is (outer index, core unit).
 *
 * Splitting: the core's row tile (MTILE) is chosen from the dims at run time for the thread
 * count known at compile time (the context's option, else the online CPUs), by the cost model
 * of kc_matmul_emit_mtile (matmul.c): threads get row tiles (each packs all of B) or column
 * panels (each packs its own columns of B and all of A), whichever packs less per thread for
 * the work; so a 128-row product splits by columns. Any split stays correct; only speed
 * depends on it.
 *
 * Epilogue (gemm alpha/beta/C, matmul_ep bias/act/residual): a per-node hook function
 * (lower_matmul_ep.c) that the core calls on each tile of C once its last K slice is stored,
 * while the tile is in L1; the core gets the hook and its ctx (buffers, dims, row base of the
 * wrapper's outer index) in two slots after its args. An indirect call per 6x64 tile is noise
 * next to the tile's K-deep FMA loop, and the core stays one copy per module.
 *
 * The core is emitted once per module, internal, as kc_matmul_core_f32 (helpers
 * kc_matmul_core_f32_*), and every f32 matmul kernel of the module calls it: a copy per node
 * cost ~300 ms of LLVM time each and ran no faster (measured at 1024^3 and transformer
 * shapes: node / standalone core time 0.99-1.03), since the core takes its sizes at run time.
 *
 * Invariants: the shared core's name is outside every NAME_ space (kernel names come from
 * lower.c, "k<index>_<op>"), and its blocking is the host default, so kc_matmul_describe gives
 * its unit width and workspace without re-emitting it; NAME_units and NAME compute the core
 * args from the same code.
 */
#include "codegen/cpu/lower_matmul.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

enum { B_ONE, B_FULL, B_UNK }; /* how an operand covers one output batch dim */

/* The f32 core, emitted once per module and shared by its matmul kernels (see the header). */
#define MM_CORE_NAME "kc_matmul_core_f32"

static const kc_value *in_val(const kc_cpu_emit *e, int i) {
  return kc_value_of(e->g, e->n->in[i]);
}
static const kc_value *out_val(const kc_cpu_emit *e) { return kc_value_of(e->g, e->n->out[0]); }

/* Axis of A (which 0) or B (which 1) that lines up with output batch dim d; -1: none. */
static int batch_axis(const mm_plan *p, int which, int d) {
  int r = which ? p->rb : p->ra, nbo = r >= 2 ? r - 2 : 0;
  int ax = d - (p->nb - nbo);
  return ax >= 0 ? ax : -1;
}

static int bkind(const kc_cpu_emit *e, const mm_plan *p, int which, int d) {
  int ax = batch_axis(p, which, d);
  if (ax < 0) return B_ONE;
  kc_dim dim = in_val(e, which)->dims[ax];
  if (dim == 1) return B_ONE;
  return dim == out_val(e)->dims[d] ? B_FULL : B_UNK;
}

static void plan_batch(const kc_cpu_emit *e, mm_plan *p) {
  int pa = -1, pb = -1;
  p->outer = p->nb;
  for (int d = p->nb - 1; d >= 0; d--) {
    if (out_val(e)->dims[d] != 1) { /* a size-1 dim fits any pattern */
      int ka = bkind(e, p, 0, d), kb = bkind(e, p, 1, d);
      if (ka == B_UNK || kb == B_UNK) break;
      if (pa < 0) {
        pa = ka;
        pb = kb;
      } else if (ka != pa || kb != pb) {
        break;
      }
    }
    p->outer = d;
  }
  p->a_full = pa == B_FULL;
  p->b_full = pb == B_FULL;
  p->fold = p->a_full && !p->b_full;
}

static bool integral(double v) { return v > -9e18 && v < 9e18 && v == (double)(int64_t)v; }

/* Rows of one product of the f32 core (batch folded in), when static; else INT64_MAX. */
static int64_t rows_per_product(const kc_cpu_emit *e, const mm_plan *p) {
  const kc_value *a = in_val(e, 0), *o = out_val(e);
  kc_dim m = p->gemm ? a->dims[p->ta ? 1 : 0] : p->ra == 1 ? 1 : a->dims[p->ra - 2];
  if (KC_DIM_IS_SYM(m)) return INT64_MAX;
  int64_t rows = m;
  for (int d = p->outer; p->fold && d < p->nb; d++) {
    if (KC_DIM_IS_SYM(o->dims[d])) return INT64_MAX;
    rows *= o->dims[d];
  }
  return rows;
}

static kc_status plan(kc_cpu_emit *e, mm_plan *p) {
  const kc_node *n = e->n;
  kc_graph *g = (kc_graph *)e->g;
  memset(p, 0, sizeof *p);
  for (int i = 0; i < MM_EP_NX; i++)
    p->x[i].in = -1;
  p->dt = in_val(e, 0)->dtype;
  p->ra = in_val(e, 0)->rank;
  p->rb = in_val(e, 1)->rank;
  p->ro = out_val(e)->rank;
  if (p->dt == KC_BOOL || p->dt == KC_DT_NONE || p->ra < 1 || p->rb < 1)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "matmul of %s rank %d by rank %d",
                          kc_dtype_name(p->dt), p->ra, p->rb);
  bool fp = kc_dtype_is_float(p->dt);
  if (n->op == KC_OP_GEMM) {
    p->gemm = true;
    p->ta = kc_node_int(n, "transA", 0) != 0;
    p->tb = kc_node_int(n, "transB", 0) != 0;
    p->alpha = kc_node_float(n, "alpha", 1.0);
    p->beta = kc_node_float(n, "beta", 1.0);
    /* beta = 0 drops C, as the ONNX reference and other runtimes do */
    if (n->nin > 2 && n->in[2].id && p->beta != 0.0) p->x[0].in = 2;
    p->has_n = true;
    p->ep = p->alpha != 1.0 || p->x[0].in >= 0;
    if (!fp && (!integral(p->alpha) || !integral(p->beta)))
      return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED,
                            "integer gemm with a fractional alpha (%g) or beta (%g)", p->alpha,
                            p->beta);
  } else {
    p->has_n = p->rb > 1;
    p->nb = p->ro - (p->ra > 1) - (p->rb > 1);
    if (n->op == KC_OP_MATMUL_EP) {
      const char *a = kc_node_string(n, "act", "none");
      p->act = strcmp(a, "relu") == 0        ? MM_ACT_RELU
               : strcmp(a, "gelu") == 0      ? MM_ACT_GELU
               : strcmp(a, "gelu_tanh") == 0 ? MM_ACT_GELU_TANH
                                             : MM_ACT_NONE;
      if (p->act == MM_ACT_NONE && strcmp(a, "none") != 0)
        return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "matmul_ep act=\"%s\"", a);
      if (!fp && (p->act == MM_ACT_GELU || p->act == MM_ACT_GELU_TANH))
        return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "matmul_ep act=%s on %s", a,
                              kc_dtype_name(p->dt));
      p->ep = p->act != MM_ACT_NONE;
      for (int i = 0; i < MM_EP_NX; i++)
        if (n->nin > (uint32_t)(2 + i) && n->in[2 + i].id) {
          p->x[i].in = 2 + i;
          p->ep = true;
        }
    }
  }
  if (p->nb < 0)
    return kc_node_errorf(g, n, KC_ERR_INTERNAL, "matmul output rank %d does not fit its inputs",
                          p->ro);
  const kc_value *b = in_val(e, 1);
  kc_dim n1 = p->gemm ? b->dims[p->tb ? 0 : 1] : p->rb == 1 ? 1 : b->dims[p->rb - 1];
  p->dot = n1 == 1 && !p->ta;
  plan_batch(e, p);
  mm_ep_plan(e, p);
  p->few_rows = !p->tb && rows_per_product(e, p) <= 2;
  return KC_OK;
}

/* ---- shape helpers (also used by lower_matmul_gen.c) ----------------------------------------- */

void mm_mnk(kc_cpu_emit *e, const mm_plan *p, LLVMValueRef dims, LLVMValueRef *m, LLVMValueRef *n,
            LLVMValueRef *k) {
  kc_ir *ir = e->ir;
  int ka, kb;
  if (p->gemm) {
    *m = kc_emit_dim(e, dims, false, 0, p->ta ? 1 : 0);
    *n = kc_emit_dim(e, dims, false, 1, p->tb ? 0 : 1);
    ka = p->ta ? 0 : 1;
    kb = p->tb ? 1 : 0;
  } else {
    *m = p->ra == 1 ? kc_ir_i64(ir, 1) : kc_emit_dim(e, dims, false, 0, p->ra - 2);
    *n = p->rb == 1 ? kc_ir_i64(ir, 1) : kc_emit_dim(e, dims, false, 1, p->rb - 1);
    ka = p->ra - 1;
    kb = p->rb == 1 ? 0 : p->rb - 2;
  }
  /* the inner dims agree; take whichever is a constant */
  bool a_sym = KC_DIM_IS_SYM(in_val(e, 0)->dims[ka]);
  *k = a_sym ? kc_emit_dim(e, dims, false, 1, kb) : kc_emit_dim(e, dims, false, 0, ka);
}

LLVMValueRef mm_batch_stride(kc_cpu_emit *e, const mm_plan *p, LLVMValueRef dims, int which,
                             int d) {
  kc_ir *ir = e->ir;
  int ax = batch_axis(p, which, d);
  const kc_value *v = in_val(e, which);
  if (ax < 0 || v->dims[ax] == 1) return kc_ir_i64(ir, 0);
  LLVMValueRef s = kc_emit_numel(e, dims, false, (uint32_t)which, ax + 1, v->rank);
  if (!KC_DIM_IS_SYM(v->dims[ax])) return s;
  LLVMValueRef dim = kc_emit_dim(e, dims, false, (uint32_t)which, ax);
  LLVMValueRef one = LLVMBuildICmp(ir->b, LLVMIntEQ, dim, kc_ir_i64(ir, 1), "");
  return LLVMBuildSelect(ir->b, one, kc_ir_i64(ir, 0), s, "");
}

void mm_strides(kc_cpu_emit *e, const mm_plan *p, LLVMValueRef m, LLVMValueRef n, LLVMValueRef k,
                LLVMValueRef *rsa, LLVMValueRef *csa, LLVMValueRef *rsb, LLVMValueRef *csb) {
  LLVMValueRef one = kc_ir_i64(e->ir, 1);
  /* a transpose is only strides: A^T is stored [K, M], B^T [N, K] */
  *rsa = p->ta ? one : k;
  *csa = p->ta ? m : one;
  *rsb = p->tb ? one : n;
  *csb = p->tb ? k : one;
}

LLVMValueRef mm_units_begin(kc_cpu_emit *e) {
  char name[256];
  snprintf(name, sizeof name, "%s_units", e->name);
  LLVMTypeRef pt = e->ir->t_ptr;
  LLVMValueRef fn = kc_ir_func(e->ir, name, e->ir->t_i64, &pt, 1, false);
  return LLVMGetParam(fn, 0);
}

/* ---- f32: the packed core ------------------------------------------------------------------ */

typedef struct mm_core {
  kc_matmul_kernel k;
  LLVMValueRef fn;
  int threads; /* expected at run time; only tunes the split */
} mm_core;

/* The core's args and unit counts for the node's dims. */
typedef struct core_vals {
  LLVMValueRef outer; /* product of the wrapper-looped batch dims */
  LLVMValueRef args[KC_MM_NARGS];
  LLVMValueRef nn, per_b, cu; /* column panels; units per product; units per outer index */
} core_vals;

/*
 * MTILE for m rows of each of nmat products: each product gets the threads it shares (all of
 * them when the products do not share out evenly, 3 over 2), and kc_matmul_emit_mtile picks
 * row tiles or whole columns for that many.
 */
static LLVMValueRef mtile(kc_ir *ir, const mm_core *c, LLVMValueRef m, LLVMValueRef n,
                          LLVMValueRef nmat) {
  LLVMValueRef one = kc_ir_i64(ir, 1);
  int64_t t = c->threads;
  if (t <= 1) return kc_ir_max(ir, m, one);
  nmat = kc_ir_max(ir, nmat, one);
  LLVMValueRef tc = kc_ir_i64(ir, t);
  LLVMValueRef uneven = LLVMBuildAnd(
      ir->b,
      LLVMBuildICmp(ir->b, LLVMIntNE, LLVMBuildSRem(ir->b, nmat, tc, ""), kc_ir_i64(ir, 0), ""),
      kc_ir_lt(ir, nmat, kc_ir_i64(ir, 4 * t)), "");
  LLVMValueRef tpm = LLVMBuildSelect(ir->b, uneven, tc, kc_ir_cdiv(ir, tc, nmat), "");
  return kc_matmul_emit_mtile(ir, &c->k, m, n, tpm);
}

static void core_vals_build(kc_cpu_emit *e, const mm_plan *p, const mm_core *c, LLVMValueRef dims,
                            core_vals *v) {
  kc_ir *ir = e->ir;
  LLVMValueRef m, n, k, rsa, csa, rsb, csb, *a = v->args;
  mm_mnk(e, p, dims, &m, &n, &k);
  mm_strides(e, p, m, n, k, &rsa, &csa, &rsb, &csb);
  LLVMValueRef inner = kc_emit_numel(e, dims, true, 0, p->outer, p->nb);
  LLVMValueRef zero = kc_ir_i64(ir, 0);
  v->outer = kc_emit_numel(e, dims, true, 0, 0, p->outer);
  a[KC_MM_M] = p->fold ? kc_ir_mul(ir, inner, m) : m;
  a[KC_MM_N] = n;
  a[KC_MM_K] = k;
  a[KC_MM_RSA] = rsa;
  a[KC_MM_CSA] = csa;
  a[KC_MM_RSB] = rsb;
  a[KC_MM_CSB] = csb;
  a[KC_MM_LDC] = n;
  a[KC_MM_BATCH] = p->fold ? kc_ir_i64(ir, 1) : inner;
  a[KC_MM_BSA] = p->a_full ? kc_ir_mul(ir, m, k) : zero;
  a[KC_MM_BSB] = p->b_full ? kc_ir_mul(ir, k, n) : zero;
  a[KC_MM_BSC] = kc_ir_mul(ir, m, n);
  a[KC_MM_MTILE] = mtile(ir, c, a[KC_MM_M], n, kc_ir_mul(ir, v->outer, a[KC_MM_BATCH]));
  v->nn = kc_ir_cdiv(ir, n, kc_ir_i64(ir, c->k.unit_n));
  v->per_b = kc_ir_mul(ir, kc_ir_cdiv(ir, a[KC_MM_M], a[KC_MM_MTILE]), v->nn);
  v->cu = kc_ir_mul(ir, a[KC_MM_BATCH], v->per_b);
}

static int threads_guess(const kc_cpu_emit *e) {
  int t = e->cpu->ctx->opts.threads;
  if (t > 0) return t;
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

static void call_core(kc_cpu_emit *e, const mm_core *c, LLVMValueRef *ptrs, LLVMValueRef args,
                      LLVMValueRef begin, LLVMValueRef end) {
  LLVMValueRef a[7] = {ptrs[0], ptrs[1], ptrs[2], e->p_ws, args, begin, end};
  LLVMBuildCall2(e->ir->b, LLVMGlobalGetValueType(c->fn), c->fn, a, 7, "");
}

static kc_status lower_f32(kc_cpu_emit *e, const mm_plan *p) {
  kc_ir *ir = e->ir;
  mm_core c = {.threads = threads_guess(e)};
  c.fn = LLVMGetNamedFunction(ir->mod, MM_CORE_NAME);
  if (c.fn) {
    kc_matmul_describe(e->cpu, NULL, &c.k);
  } else {
    kc_status s = kc_matmul_emit(e->cpu, ir, MM_CORE_NAME, NULL,
                                 KC_MM_EMIT_INTERNAL | KC_MM_EMIT_EP_HOOK, &c.k, &c.fn);
    if (s != KC_OK) return s;
  }

  core_vals v;
  LLVMValueRef dims = mm_units_begin(e);
  core_vals_build(e, p, &c, dims, &v);
  LLVMBuildRet(ir->b, kc_ir_mul(ir, v.outer, v.cu));
  LLVMValueRef hook = p->ep ? mm_ep_hook_emit(e, p, (int)c.k.unit_n) : LLVMConstNull(ir->t_ptr);

  kc_emit_kernel_begin(e);
  core_vals_build(e, p, &c, e->p_dims, &v);
  /* the core's args, then its hook slots */
  LLVMValueRef args = LLVMBuildAlloca(ir->b, LLVMArrayType(ir->t_i64, KC_MM_NARGS + 2), "args");
  LLVMValueRef ctx = LLVMBuildAlloca(ir->b, LLVMArrayType(ir->t_i64, MM_EP_CTX_SLOTS), "ep_ctx");
  for (int i = 0; i < KC_MM_NARGS; i++)
    kc_ir_store(ir, v.args[i], kc_ir_gepi64(ir, args, kc_ir_i64(ir, i)), 8);
  kc_ir_store(ir, hook, kc_ir_gepi64(ir, args, kc_ir_i64(ir, KC_MM_NARGS)), 8);
  kc_ir_store(ir, ctx, kc_ir_gepi64(ir, args, kc_ir_i64(ir, KC_MM_NARGS + 1)), 8);
  kc_ir_store(ir, e->p_bufs, kc_ir_gepi64(ir, ctx, kc_ir_i64(ir, MM_EP_CTX_BUFS)), 8);
  kc_ir_store(ir, e->p_dims, kc_ir_gepi64(ir, ctx, kc_ir_i64(ir, MM_EP_CTX_DIMS)), 8);
  LLVMValueRef base[3] = {kc_emit_in_ptr(e, 0), kc_emit_in_ptr(e, 1), kc_emit_out_ptr(e, 0)};
  LLVMValueRef sa[KC_MAX_RANK], sb[KC_MAX_RANK], odim[KC_MAX_RANK];
  for (int d = 0; d < p->outer; d++) {
    sa[d] = mm_batch_stride(e, p, e->p_dims, 0, d);
    sb[d] = mm_batch_stride(e, p, e->p_dims, 1, d);
    odim[d] = kc_emit_dim(e, e->p_dims, true, 0, d);
  }
  LLVMValueRef cstep = kc_emit_numel(e, e->p_dims, true, 0, p->outer, p->ro);
  /* output rows per outer index: the core's rows (batch * M) */
  LLVMValueRef orows = kc_ir_mul(ir, v.args[KC_MM_BATCH], v.args[KC_MM_M]);

  kc_loop l;
  LLVMValueRef u = kc_loop_begin(ir, &l, e->p_begin, e->p_end, NULL, 0, NULL);
  LLVMValueRef o = p->outer ? LLVMBuildSDiv(ir->b, u, v.cu, "") : kc_ir_i64(ir, 0);
  LLVMValueRef first = kc_ir_mul(ir, o, v.cu);
  LLVMValueRef lb = kc_ir_sub(ir, u, first);
  LLVMValueRef le = kc_ir_min(ir, kc_ir_sub(ir, e->p_end, first), v.cu);
  LLVMValueRef aoff = kc_ir_i64(ir, 0), boff = aoff, rest = o;
  for (int d = p->outer - 1; d >= 0; d--) {
    LLVMValueRef idx = d ? LLVMBuildSRem(ir->b, rest, odim[d], "") : rest;
    if (d) rest = LLVMBuildSDiv(ir->b, rest, odim[d], "");
    aoff = kc_ir_add(ir, aoff, kc_ir_mul(ir, idx, sa[d]));
    boff = kc_ir_add(ir, boff, kc_ir_mul(ir, idx, sb[d]));
  }
  LLVMValueRef ptrs[3] = {kc_ir_gepf(ir, base[0], aoff), kc_ir_gepf(ir, base[1], boff),
                          kc_ir_gepf(ir, base[2], kc_ir_mul(ir, o, cstep))};
  kc_ir_store(ir, kc_ir_mul(ir, o, orows), kc_ir_gepi64(ir, ctx, kc_ir_i64(ir, MM_EP_CTX_ROW)), 8);
  call_core(e, &c, ptrs, args, lb, le);
  kc_loop_end_next(ir, &l, kc_ir_add(ir, first, le), NULL);
  kc_emit_kernel_end(e);

  e->ws_bytes = c.k.ws_floats * (int64_t)sizeof(float);
  e->grain = 0; /* a thread's units share packed panels: one contiguous range each */
  return KC_OK;
}

kc_status kc_lower_matmul(kc_cpu_emit *e) {
  mm_plan p;
  kc_status s = plan(e, &p);
  if (s != KC_OK) return s;
  if (p.dot || (p.few_rows && p.dt != KC_F32)) return mm_lower_generic(e, &p);
  if (p.dt == KC_F32) return lower_f32(e, &p);
  if (p.dt == KC_F16 || p.dt == KC_BF16) return mm_lower_half(e, &p);
  return mm_lower_generic(e, &p);
}

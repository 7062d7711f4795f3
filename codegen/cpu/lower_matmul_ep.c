/*
 * codegen/cpu/lower_matmul_ep.c - the epilogue of the matmul family (see lower_matmul.h):
 * gemm's alpha / beta * C and matmul_ep's bias, activation, scale and residual, on vectors of the
 * compute type, with each operand broadcast to the output by strides.
 *
 * Invariants: operands are addressed by (output row, column); an operand whose shape makes
 * the row offset zero or R * N is recognized at compile time so the common cases (bias [N],
 * residual of the output's shape) cost no index arithmetic per row. gelu and gelu_tanh are
 * vmath.h's (as the gelu op's), so epilogue loops stay vectorized and agree with unfused graphs.
 *
 * The f32 core applies the epilogue through a hook (mm_ep_hook_emit): a small per-node
 * function the shared core calls on each finished register tile of C, still in L1, so the
 * epilogue costs no second pass over the output and the core stays one copy per module.
 */
#include "codegen/cpu/lower_matmul.h"
#include "codegen/cpu/vmath.h"

#include <stdio.h>

void mm_ep_plan(const kc_cpu_emit *e, mm_plan *p) {
  const kc_value *o = kc_value_of(e->g, e->n->out[0]);
  int nrow = p->has_n ? o->rank - 1 : o->rank;
  for (int i = 0; i < MM_EP_NX; i++) {
    mm_ep_in *x = &p->x[i];
    if (x->in < 0) continue;
    const kc_value *v = kc_value_of(e->g, e->n->in[x->in]);
    int rx = v->rank, shift = o->rank - rx;
    x->cols = MM_COLS_SPLAT;
    if (p->has_n && rx > 0) {
      kc_dim xd = v->dims[rx - 1];
      x->cols = xd == 1                      ? MM_COLS_SPLAT
                : xd == o->dims[o->rank - 1] ? MM_COLS_UNIT
                                             : MM_COLS_RUNTIME;
    }
    bool zero = true, same = rx == o->rank && (x->cols == MM_COLS_UNIT || !p->has_n);
    for (int d = 0; d < nrow; d++) {
      int xa = d - shift;
      if (xa >= 0 && v->dims[xa] != 1) zero = false;
    }
    for (int a = 0; same && a < rx; a++)
      same = v->dims[a] == o->dims[a];
    x->rows = zero ? MM_ROWS_ZERO : same ? MM_ROWS_SAME : MM_ROWS_GENERAL;
  }
}

void mm_ep_init(kc_cpu_emit *e, const mm_plan *p, LLVMValueRef dims, mm_ep_rt *rt) {
  kc_ir *ir = e->ir;
  const kc_value *o = kc_value_of(e->g, e->n->out[0]);
  rt->nrow = p->has_n ? o->rank - 1 : o->rank;
  for (int d = 0; d < rt->nrow; d++)
    rt->rdim[d] = kc_emit_dim(e, dims, true, 0, d);
  rt->n = p->has_n ? kc_emit_dim(e, dims, true, 0, o->rank - 1) : kc_ir_i64(ir, 1);
  for (int i = 0; i < MM_EP_NX; i++) {
    const mm_ep_in *x = &p->x[i];
    if (x->in < 0) continue;
    const kc_value *v = kc_value_of(e->g, e->n->in[x->in]);
    uint32_t in = (uint32_t)x->in;
    rt->ptr[i] = kc_emit_in_ptr(e, in);
    if (x->cols == MM_COLS_RUNTIME) {
      /* a symbolic last dim that is 1 at run time broadcasts */
      LLVMValueRef d = kc_emit_dim(e, dims, false, in, v->rank - 1);
      LLVMValueRef one = LLVMBuildICmp(ir->b, LLVMIntEQ, d, kc_ir_i64(ir, 1), "");
      rt->cstr[i] = LLVMBuildSelect(ir->b, one, kc_ir_i64(ir, 0), kc_ir_i64(ir, 1), "");
    }
    if (x->rows != MM_ROWS_GENERAL) continue;
    int shift = o->rank - v->rank;
    for (int d = 0; d < rt->nrow; d++) {
      int xa = d - shift;
      if (xa < 0 || v->dims[xa] == 1) {
        rt->rstr[i][d] = kc_ir_i64(ir, 0);
        continue;
      }
      LLVMValueRef s = kc_emit_numel(e, dims, false, in, xa + 1, v->rank);
      if (KC_DIM_IS_SYM(v->dims[xa])) {
        LLVMValueRef dd = kc_emit_dim(e, dims, false, in, xa);
        LLVMValueRef one = LLVMBuildICmp(ir->b, LLVMIntEQ, dd, kc_ir_i64(ir, 1), "");
        s = LLVMBuildSelect(ir->b, one, kc_ir_i64(ir, 0), s, "");
      }
      rt->rstr[i][d] = s;
    }
  }
}

void mm_ep_row(kc_cpu_emit *e, const mm_plan *p, const mm_ep_rt *rt, LLVMValueRef r,
               LLVMValueRef *offs) {
  kc_ir *ir = e->ir;
  LLVMValueRef idx[KC_MAX_RANK];
  bool unravelled = false;
  for (int i = 0; i < MM_EP_NX; i++) {
    const mm_ep_in *x = &p->x[i];
    offs[i] = kc_ir_i64(ir, 0);
    if (x->in < 0 || x->rows == MM_ROWS_ZERO) continue;
    if (x->rows == MM_ROWS_SAME) {
      offs[i] = kc_ir_mul(ir, r, rt->n);
      continue;
    }
    if (!unravelled) { /* both operands share the output's row index */
      LLVMValueRef rem = r;
      for (int d = rt->nrow - 1; d > 0; d--) {
        idx[d] = LLVMBuildSRem(ir->b, rem, rt->rdim[d], "");
        rem = LLVMBuildSDiv(ir->b, rem, rt->rdim[d], "");
      }
      if (rt->nrow > 0) idx[0] = rem;
      unravelled = true;
    }
    for (int d = 0; d < rt->nrow; d++)
      offs[i] = kc_ir_add(ir, offs[i], kc_ir_mul(ir, idx[d], rt->rstr[i][d]));
  }
}

/* Convert a loaded storage vector to its compute type (f16/bf16 widen to f32). */
static LLVMValueRef widen(kc_cpu_emit *e, kc_dtype t, LLVMValueRef v, unsigned lanes) {
  if (t != KC_F16 && t != KC_BF16) return v;
  return LLVMBuildFPExt(e->ir->b, v, kc_emit_vec_type(e->ir->t_f32, lanes), "");
}

LLVMValueRef mm_load(kc_cpu_emit *e, kc_dtype t, LLVMValueRef p, LLVMValueRef idx, unsigned lanes,
                     LLVMValueRef mask) {
  if (!mask) return kc_emit_load(e, t, p, idx, lanes);
  kc_ir *ir = e->ir;
  LLVMTypeRef st = kc_emit_storage_type(ir, t), vt = kc_emit_vec_type(st, lanes);
  LLVMValueRef addr = LLVMBuildGEP2(ir->b, st, p, &idx, 1, "");
  LLVMValueRef v =
      kc_ir_masked_load(ir, vt, addr, (unsigned)kc_dtype_size(t), mask, LLVMConstNull(vt));
  return widen(e, t, v, lanes);
}

void mm_store(kc_cpu_emit *e, kc_dtype t, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef v,
              unsigned lanes, LLVMValueRef mask) {
  if (!mask) {
    kc_emit_store(e, t, p, idx, v, lanes);
    return;
  }
  kc_ir *ir = e->ir;
  LLVMTypeRef st = kc_emit_storage_type(ir, t), vt = kc_emit_vec_type(st, lanes);
  if (t == KC_F16 || t == KC_BF16) v = kc_ir_fptrunc(ir->b, v, vt, "");
  LLVMValueRef addr = LLVMBuildGEP2(ir->b, st, p, &idx, 1, "");
  kc_ir_masked_store(ir, v, addr, (unsigned)kc_dtype_size(t), mask);
}

/* Operand i at columns j.. of the row whose offset is off. */
static LLVMValueRef load_x(kc_cpu_emit *e, const mm_plan *p, const mm_ep_rt *rt, int i,
                           LLVMValueRef off, LLVMValueRef j, unsigned lanes, LLVMValueRef mask) {
  kc_ir *ir = e->ir;
  kc_dtype t = p->dt;
  switch (p->x[i].cols) {
  case MM_COLS_UNIT: return mm_load(e, t, rt->ptr[i], kc_ir_add(ir, off, j), lanes, mask);
  case MM_COLS_RUNTIME: {
    LLVMValueRef base = kc_ir_add(ir, off, kc_ir_mul(ir, j, rt->cstr[i]));
    if (lanes == 1) return kc_emit_load(e, t, rt->ptr[i], base, 1);
    LLVMTypeRef st = kc_emit_storage_type(ir, t), vt = LLVMVectorType(st, lanes);
    LLVMValueRef idx = kc_ir_iota(ir, lanes, base, rt->cstr[i]);
    LLVMValueRef ptrs = LLVMBuildGEP2(ir->b, st, rt->ptr[i], &idx, 1, "");
    if (!mask) mask = LLVMConstAllOnes(LLVMVectorType(ir->t_i1, lanes));
    LLVMValueRef v =
        kc_ir_masked_gather(ir, vt, ptrs, (unsigned)kc_dtype_size(t), mask, LLVMConstNull(vt));
    return widen(e, t, v, lanes);
  }
  default: {
    LLVMValueRef s = kc_emit_load(e, t, rt->ptr[i], off, 1);
    return lanes > 1 ? kc_ir_splat(ir, s, lanes) : s;
  }
  }
}

static LLVMValueRef add(kc_ir *ir, bool fp, LLVMValueRef a, LLVMValueRef b) {
  return fp ? LLVMBuildFAdd(ir->b, a, b, "") : LLVMBuildAdd(ir->b, a, b, "");
}

static LLVMValueRef act(kc_cpu_emit *e, const mm_plan *p, LLVMValueRef v) {
  kc_ir *ir = e->ir;
  LLVMTypeRef t = LLVMTypeOf(v);
  bool fp = kc_dtype_is_float(p->dt);
  switch (p->act) {
  case MM_ACT_RELU:
    if (!fp) {
      if (kc_vm_unsigned(p->dt)) return v;
      LLVMValueRef neg = LLVMBuildICmp(ir->b, LLVMIntSLT, v, LLVMConstNull(t), "");
      return LLVMBuildSelect(ir->b, neg, LLVMConstNull(t), v, "");
    } else {
      /* ordered compare: NaN stays NaN, as max(x, 0) in the reference */
      LLVMValueRef neg = LLVMBuildFCmp(ir->b, LLVMRealOLT, v, LLVMConstNull(t), "");
      return LLVMBuildSelect(ir->b, neg, LLVMConstNull(t), v, "");
    }
  /* one source of truth for the math: the same vmath functions as the gelu op */
  case MM_ACT_GELU: return kc_vmath_gelu(ir, v);
  case MM_ACT_GELU_TANH: return kc_vmath_gelu_tanh(ir, v);
  default: return v;
  }
}

LLVMValueRef mm_ep_apply(kc_cpu_emit *e, const mm_plan *p, const mm_ep_rt *rt,
                         const LLVMValueRef *offs, LLVMValueRef j, unsigned lanes,
                         LLVMValueRef mask, LLVMValueRef v) {
  kc_ir *ir = e->ir;
  bool fp = kc_dtype_is_float(p->dt);
  if (p->gemm) {
    if (p->alpha != 1.0) {
      LLVMValueRef a = kc_emit_const(ir, p->dt, p->alpha, lanes);
      v = fp ? LLVMBuildFMul(ir->b, v, a, "") : LLVMBuildMul(ir->b, v, a, "");
    }
    if (p->x[0].in >= 0) {
      LLVMValueRef c = load_x(e, p, rt, 0, offs[0], j, lanes, mask);
      if (p->beta != 1.0) {
        LLVMValueRef b = kc_emit_const(ir, p->dt, p->beta, lanes);
        c = fp ? LLVMBuildFMul(ir->b, c, b, "") : LLVMBuildMul(ir->b, c, b, "");
      }
      v = add(ir, fp, v, c);
    }
    return v;
  }
  /* act(v + bias) * scale + residual, one rounding per step as the unfused ops round */
  if (p->x[MM_EP_BIAS].in >= 0)
    v = add(ir, fp, v, load_x(e, p, rt, MM_EP_BIAS, offs[MM_EP_BIAS], j, lanes, mask));
  v = act(e, p, v);
  if (p->x[MM_EP_SCALE].in >= 0) {
    LLVMValueRef s = load_x(e, p, rt, MM_EP_SCALE, offs[MM_EP_SCALE], j, lanes, mask);
    v = fp ? LLVMBuildFMul(ir->b, v, s, "") : LLVMBuildMul(ir->b, v, s, "");
  }
  if (p->x[MM_EP_RES].in >= 0)
    v = add(ir, fp, v, load_x(e, p, rt, MM_EP_RES, offs[MM_EP_RES], j, lanes, mask));
  return v;
}

/*
 * NAME_ep(ctx, c, ldc, row, col, mr, nr), the hook of the f32 core (KC_MM_EMIT_EP_HOOK in
 * cpu.h): the epilogue on the mr x nr tile at c, whose first element is output row
 * ctx.rowbase + row, column col. ctx: {bufs, dims, rowbase}, as the kernel fills it. One
 * loop over rows, W-lane vectors masked by nr (masked loads and stores cost as much as plain
 * ones with AVX-512, and one body keeps the inlined erf small).
 */
LLVMValueRef mm_ep_hook_emit(kc_cpu_emit *e, const mm_plan *p, int nr_max) {
  kc_ir *ir = e->ir;
  unsigned w = (unsigned)kc_cpu_host(e->cpu)->f32_lanes;
  char name[256];
  snprintf(name, sizeof name, "%s_ep", e->name);
  LLVMTypeRef ps[7] = {ir->t_ptr, ir->t_ptr, ir->t_i64, ir->t_i64, ir->t_i64, ir->t_i64, ir->t_i64};
  LLVMValueRef fn = kc_ir_func(ir, name, ir->t_void, ps, 7, true);
  LLVMValueRef ctx = LLVMGetParam(fn, 0), c = LLVMGetParam(fn, 1), ldc = LLVMGetParam(fn, 2);
  LLVMValueRef row = LLVMGetParam(fn, 3), col = LLVMGetParam(fn, 4);
  LLVMValueRef mr = LLVMGetParam(fn, 5), nr = LLVMGetParam(fn, 6);
  LLVMValueRef saved = e->p_bufs;
  e->p_bufs = kc_ir_load(ir, ir->t_ptr, kc_ir_gepi64(ir, ctx, kc_ir_i64(ir, MM_EP_CTX_BUFS)), 8);
  LLVMValueRef dims =
      kc_ir_load(ir, ir->t_ptr, kc_ir_gepi64(ir, ctx, kc_ir_i64(ir, MM_EP_CTX_DIMS)), 8);
  LLVMValueRef r0 = kc_ir_add(
      ir, kc_ir_load(ir, ir->t_i64, kc_ir_gepi64(ir, ctx, kc_ir_i64(ir, MM_EP_CTX_ROW)), 8), row);
  mm_ep_rt rt;
  mm_ep_init(e, p, dims, &rt);
  LLVMValueRef masks[64];
  int nv = nr_max / (int)w;
  for (int v = 0; v < nv; v++)
    masks[v] = kc_ir_lane_mask(ir, w, (int64_t)v * w, nr);
  kc_loop l;
  LLVMValueRef i = kc_loop_begin(ir, &l, kc_ir_i64(ir, 0), mr, kc_ir_i64(ir, 1), 0, NULL);
  LLVMValueRef offs[MM_EP_NX];
  mm_ep_row(e, p, &rt, kc_ir_add(ir, r0, i), offs);
  LLVMValueRef crow = kc_ir_gepf(ir, c, kc_ir_mul(ir, i, ldc));
  for (int v = 0; v < nv; v++) {
    LLVMValueRef jv = kc_ir_i64(ir, (int64_t)v * w);
    LLVMValueRef x = mm_load(e, KC_F32, crow, jv, w, masks[v]);
    x = mm_ep_apply(e, p, &rt, offs, kc_ir_add(ir, col, jv), w, masks[v], x);
    mm_store(e, KC_F32, crow, jv, x, w, masks[v]);
  }
  kc_loop_end(ir, &l, NULL);
  LLVMBuildRetVoid(ir->b);
  e->p_bufs = saved;
  return fn;
}

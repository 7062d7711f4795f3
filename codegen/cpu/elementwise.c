/*
 * codegen/cpu/elementwise.c - the loop machinery of elementwise kernels (kc_ew_lower, see
 * ewplan.h) and kc_lower_elementwise, the kernel of every op whose CPU column says
 * `elementwise` (unary math, cast, clip, the broadcasting binary ops, variadic min/max,
 * comparisons, logic, where). The math of each op is its kc_scalar_<op>; the machinery only
 * walks the output, feeds operands to an evaluator and stores what it returns, so fused
 * regions (fused.c) run on the same loops with their body as the evaluator.
 *
 * Plan (at compile time, from the graph's dims):
 *   - Each input gets a kind per output axis: FULL (its dim is the output's, same kc_dim),
 *     BCAST (missing or a static 1: stride 0), or UNKNOWN (a different symbolic dim, 1 or the
 *     output's size at run time: its stride is chosen at run time). Output axes that are a
 *     static 1 are dropped.
 *   - Adjacent axes merge into one group when every input has the same kind, FULL or BCAST, on
 *     both (then each input is contiguous or constant across them), so [B,S,768] + [768] is a
 *     [B*S] x [768] walk and same-shape operands are one flat range.
 *   - One group or none: work units are chunks of EW_CHUNK elements of the flat index. Else:
 *     units are rows (every group but the last); a row's base offsets come from its index by
 *     division (constants fold to multiplies), the last group is the inner loop.
 *   - The inner loop keeps every input's inner stride 0 or 1 (inputs are right-aligned and
 *     row-major), so it runs on explicit vectors of `lanes` elements (one 512-bit register of
 *     the widest compute type on AVX-512), broadcast inputs splatted once per row, then one
 *     masked vector for the tail. An input whose inner kind is UNKNOWN gets a run-time check:
 *     stride 1 takes the vector loop, otherwise a strided scalar loop runs.
 *   - A scalar constant input (a `constant` node of one element) is baked into the code, so
 *     x * 0.5 or pow(x, 2) fold (LLVM turns pow(x, 2) into x * x).
 * Dims that are static are constants in the code (kc_emit_dim); symbolic ones are loaded.
 *
 * Invariants: the kernel writes exactly the output elements of its units; loads of an input
 * never go past its own extent (broadcast axes have stride 0); masked tails touch no memory
 * outside the row.
 */
#include "ewplan.h"

#include <string.h>

#define EW_CHUNK 8192 /* flat mode: elements per work unit */
#define EW_MAX_OPS KC_EW_MAX_OPS
#define EW_GRAIN 16384   /* elements a thread should get at least, per dynamic chunk */
#define EW_SYM_GUESS 128 /* size assumed for a symbolic dim when sizing the grain */

typedef enum { K_FULL, K_BCAST, K_UNKNOWN } ew_kind;

typedef struct ew_operand {
  bool present; /* absent optional inputs (clip bounds) are NULL args */
  kc_dtype dt;
  int rank;
  LLVMValueRef cval;      /* compile-time scalar constant (compute type), or NULL */
  ew_kind k[KC_MAX_RANK]; /* per output axis */
  /* kernel values */
  LLVMValueRef ptr;
  LLVMValueRef gstride[KC_MAX_RANK]; /* per group, in elements */
  LLVMValueRef base;                 /* offset of the current row */
} ew_operand;

typedef struct ew {
  kc_cpu_emit *e;
  kc_ir *ir;
  const kc_node *n;
  const kc_ew_eval *ev;
  uint32_t nops, nout;
  ew_operand *op;
  kc_dtype out_dt[EW_MAX_OPS];
  int R;
  const kc_dim *odims;
  int ng; /* groups of output axes, each [glo, ghi) */
  int glo[KC_MAX_RANK], ghi[KC_MAX_RANK];
  unsigned lanes;
  LLVMValueRef out_ptr[EW_MAX_OPS], obase; /* outputs share one shape, so one offset */
  LLVMValueRef gdim[KC_MAX_RANK];
} ew;

/* ---- plan ------------------------------------------------------------------------------------ */

const kc_tensor *kc_ew_const_tensor(const kc_graph *g, kc_val v) {
  const kc_value *val = &g->vals[v.id];
  if (!val->def) return NULL;
  const kc_node *d = &g->nodes[val->def - 1];
  const kc_attr *a = d->op == KC_OP_CONSTANT ? kc_node_attr(d, "value") : NULL;
  if (!a || a->kind != KC_ATTR_TENSOR || a->u.tensor >= g->ntensors) return NULL;
  const kc_tensor *t = &g->tensors[a->u.tensor];
  int64_t numel = 1;
  for (int i = 0; i < t->rank; i++)
    numel *= t->dims[i];
  if (numel != 1 || !t->data || t->dtype != val->dtype || t->nbytes < kc_dtype_size(t->dtype))
    return NULL;
  return t;
}

LLVMValueRef kc_ew_const_scalar(kc_ir *ir, const kc_graph *g, kc_val v) {
  const kc_tensor *t = kc_ew_const_tensor(g, v);
  if (!t) return NULL;
  LLVMTypeRef ct = kc_emit_compute_type(ir, t->dtype);
  union {
    float f;
    double d;
    uint16_t h;
    int64_t i64;
    uint64_t u64;
    int32_t i32;
    uint32_t u32;
    int16_t i16;
    int8_t i8;
    uint8_t u8;
  } u;
  memcpy(&u, t->data, kc_dtype_size(t->dtype));
  switch (t->dtype) {
  case KC_F32: return LLVMConstReal(ct, u.f);
  case KC_F64: return LLVMConstReal(ct, u.d);
  case KC_F16: return LLVMConstReal(ct, kc_f16_to_f32(u.h));
  case KC_BF16: return LLVMConstReal(ct, kc_bf16_to_f32(u.h));
  case KC_I64:
  case KC_U64: return LLVMConstInt(ct, u.u64, 0);
  case KC_I32: return LLVMConstInt(ct, (unsigned long long)(int64_t)u.i32, 1);
  case KC_U32: return LLVMConstInt(ct, u.u32, 0);
  case KC_I16: return LLVMConstInt(ct, (unsigned long long)(int64_t)u.i16, 1);
  case KC_U16: return LLVMConstInt(ct, u.h, 0);
  case KC_I8: return LLVMConstInt(ct, (unsigned long long)(int64_t)u.i8, 1);
  case KC_U8: return LLVMConstInt(ct, u.u8, 0);
  case KC_BOOL: return LLVMConstInt(ct, u.u8 != 0, 0);
  default: return NULL;
  }
}

static void classify(ew *w) {
  const kc_graph *g = w->e->g;
  for (uint32_t i = 0; i < w->nops; i++) {
    ew_operand *o = &w->op[i];
    kc_val v = w->n->in[i];
    o->present = v.id != 0;
    if (!o->present) continue;
    const kc_value *val = &g->vals[v.id];
    o->dt = val->dtype;
    o->rank = val->rank;
    o->cval = kc_ew_const_scalar(w->ir, g, v);
    int off = w->R - o->rank;
    for (int a = 0; a < w->R; a++) {
      kc_dim d = a < off ? 1 : val->dims[a - off];
      if (o->cval || d == 1)
        o->k[a] = K_BCAST;
      else
        o->k[a] = d == w->odims[a] ? K_FULL : K_UNKNOWN;
    }
  }
}

static bool mergeable(const ew *w, int a, int b) {
  for (uint32_t i = 0; i < w->nops; i++) {
    const ew_operand *o = &w->op[i];
    if (o->present && (o->k[a] != o->k[b] || o->k[a] == K_UNKNOWN)) return false;
  }
  return true;
}

static void group(ew *w) {
  int prev = -1;
  w->ng = 0;
  for (int a = 0; a < w->R; a++) {
    if (w->odims[a] == 1) continue; /* a static 1: nothing to walk */
    if (prev >= 0 && mergeable(w, prev, a)) {
      w->ghi[w->ng - 1] = a + 1;
    } else {
      w->glo[w->ng] = a;
      w->ghi[w->ng] = a + 1;
      w->ng++;
    }
    prev = a;
  }
}

unsigned kc_ew_compute_bytes(kc_dtype t) {
  if (t == KC_BOOL) return 1;
  if (t == KC_F16 || t == KC_BF16) return 4;
  return (unsigned)kc_dtype_size(t);
}

/* One register of the widest compute type anywhere in the step: inputs, outputs and what the
 * evaluator holds in between. */
static unsigned pick_lanes(const ew *w) {
  unsigned widest = w->ev->inner_bytes;
  for (uint32_t k = 0; k < w->nout; k++)
    if (kc_ew_compute_bytes(w->out_dt[k]) > widest) widest = kc_ew_compute_bytes(w->out_dt[k]);
  for (uint32_t i = 0; i < w->nops; i++)
    if (w->op[i].present && kc_ew_compute_bytes(w->op[i].dt) > widest)
      widest = kc_ew_compute_bytes(w->op[i].dt);
  if (widest < 1) widest = 1;
  unsigned bytes = (unsigned)kc_cpu_host(w->e->cpu)->f32_lanes * 4;
  unsigned lanes = bytes / widest;
  return lanes < 1 ? 1 : lanes > 64 ? 64 : lanes;
}

/* ---- units ----------------------------------------------------------------------------------- */

static LLVMValueRef flat_units(kc_cpu_emit *e, LLVMValueRef dims) {
  int rank = e->g->vals[e->n->out[0].id].rank;
  LLVMValueRef numel = kc_emit_numel(e, dims, true, 0, 0, rank);
  return kc_ir_cdiv(e->ir, numel, kc_ir_i64(e->ir, EW_CHUNK));
}

static int64_t rows_grain(const ew *w) {
  int64_t inner = 1;
  for (int a = w->glo[w->ng - 1]; a < w->R; a++)
    inner *= KC_DIM_IS_SYM(w->odims[a]) ? EW_SYM_GUESS : (w->odims[a] > 0 ? w->odims[a] : 1);
  int64_t grain = EW_GRAIN / (inner > 0 ? inner : 1);
  return grain < 1 ? 1 : grain;
}

/* ---- kernel: strides ------------------------------------------------------------------------- */

/* Stride of input i at output axis a (not BCAST): the product of its later dims, or 0 at run
 * time when its dim there is 1 (UNKNOWN). */
static LLVMValueRef axis_stride(ew *w, uint32_t i, int a) {
  kc_ir *ir = w->ir;
  ew_operand *o = &w->op[i];
  int off = w->R - o->rank;
  LLVMValueRef s = kc_emit_numel(w->e, w->e->p_dims, false, i, a - off + 1, o->rank);
  if (o->k[a] != K_UNKNOWN) return s;
  LLVMValueRef d = kc_emit_dim(w->e, w->e->p_dims, false, i, a - off);
  LLVMValueRef one = LLVMBuildICmp(ir->b, LLVMIntEQ, d, kc_ir_i64(ir, 1), "");
  return LLVMBuildSelect(ir->b, one, kc_ir_i64(ir, 0), s, "");
}

static void setup_strides(ew *w) {
  for (int gi = 0; gi < w->ng; gi++)
    w->gdim[gi] = kc_emit_numel(w->e, w->e->p_dims, true, 0, w->glo[gi], w->ghi[gi]);
  for (uint32_t i = 0; i < w->nops; i++) {
    ew_operand *o = &w->op[i];
    if (!o->present || o->cval) continue;
    o->ptr = kc_emit_in_ptr(w->e, i);
    for (int gi = 0; gi < w->ng; gi++) {
      int a = w->ghi[gi] - 1;
      o->gstride[gi] = o->k[a] == K_BCAST ? kc_ir_i64(w->ir, 0) : axis_stride(w, i, a);
    }
  }
  for (uint32_t k = 0; k < w->nout; k++)
    w->out_ptr[k] = kc_emit_out_ptr(w->e, k);
}

/* ---- kernel: loads, stores, one step --------------------------------------------------------- */

static LLVMValueRef load(ew *w, kc_dtype t, LLVMValueRef ptr, LLVMValueRef idx, unsigned lanes,
                         LLVMValueRef mask) {
  if (!mask) return kc_emit_load(w->e, t, ptr, idx, lanes);
  kc_ir *ir = w->ir;
  LLVMTypeRef st = kc_emit_storage_type(ir, t), vt = kc_emit_vec_type(st, lanes);
  LLVMValueRef addr = LLVMBuildGEP2(ir->b, st, ptr, &idx, 1, "");
  LLVMValueRef v =
      kc_ir_masked_load(ir, vt, addr, (unsigned)kc_dtype_size(t), mask, LLVMConstNull(vt));
  if (t == KC_BOOL) return LLVMBuildICmp(ir->b, LLVMIntNE, v, LLVMConstNull(vt), "");
  if (t == KC_F16 || t == KC_BF16)
    return LLVMBuildFPExt(ir->b, v, kc_emit_vec_type(ir->t_f32, lanes), "");
  return v;
}

/* Output k's values v at element idx of every output. */
static void store(ew *w, uint32_t k, LLVMValueRef idx, LLVMValueRef v, unsigned lanes,
                  LLVMValueRef mask) {
  kc_dtype t = w->out_dt[k];
  if (!mask) {
    kc_emit_store(w->e, t, w->out_ptr[k], idx, v, lanes);
    return;
  }
  kc_ir *ir = w->ir;
  LLVMTypeRef st = kc_emit_storage_type(ir, t), vt = kc_emit_vec_type(st, lanes);
  if (t == KC_BOOL) v = LLVMBuildZExt(ir->b, v, vt, "");
  if (t == KC_F16 || t == KC_BF16) v = kc_ir_fptrunc(ir->b, v, vt, "");
  LLVMValueRef addr = LLVMBuildGEP2(ir->b, st, w->out_ptr[k], &idx, 1, "");
  kc_ir_masked_store(ir, v, addr, (unsigned)kc_dtype_size(t), mask);
}

/* Evaluate args and store every output at oidx; false when the evaluator fails. */
static bool eval_store(ew *w, LLVMValueRef *args, LLVMValueRef oidx, unsigned lanes,
                       LLVMValueRef mask) {
  LLVMValueRef outs[EW_MAX_OPS];
  if (!w->ev->fn(w->ev->user, w->ir, lanes, args, outs)) return false;
  for (uint32_t k = 0; k < w->nout; k++)
    store(w, k, oidx, outs[k], lanes, mask);
  return true;
}

/* One step at inner index j: vectors of `lanes` from inputs marked in `vec` (loaded at
 * base + j), splats[i] for the rest; the outputs go to obase + j. */
static bool step(ew *w, LLVMValueRef j, unsigned lanes, LLVMValueRef mask, const bool *vec,
                 LLVMValueRef *splats) {
  LLVMValueRef args[EW_MAX_OPS];
  for (uint32_t i = 0; i < w->nops; i++) {
    ew_operand *o = &w->op[i];
    if (!o->present)
      args[i] = NULL;
    else if (vec[i])
      args[i] = load(w, o->dt, o->ptr, kc_ir_add(w->ir, o->base, j), lanes, mask);
    else
      args[i] = splats[i];
  }
  return eval_store(w, args, kc_ir_add(w->ir, w->obase, j), lanes, mask);
}

/* ---- kernel: inner loops
 * ------------------------------------------------------------------------- */

/* j in [j0, j1) with vectors; inputs marked in vec are contiguous, the others constant over
 * the row. */
static kc_status inner_vector(ew *w, LLVMValueRef j0, LLVMValueRef j1, const bool *vec) {
  kc_ir *ir = w->ir;
  unsigned L = w->lanes;
  LLVMValueRef splats[EW_MAX_OPS];
  for (uint32_t i = 0; i < w->nops; i++) {
    ew_operand *o = &w->op[i];
    splats[i] = NULL;
    if (!o->present || vec[i]) continue;
    LLVMValueRef s = o->cval ? o->cval : kc_emit_load(w->e, o->dt, o->ptr, o->base, 1);
    splats[i] = L > 1 ? kc_ir_splat(ir, s, L) : s;
  }
  kc_loop l;
  LLVMValueRef end = kc_ir_sub(ir, j1, kc_ir_i64(ir, (int64_t)L - 1));
  LLVMValueRef j = kc_loop_begin(ir, &l, j0, end, kc_ir_i64(ir, L), 0, NULL);
  if (!step(w, j, L, NULL, vec, splats)) return KC_ERR_UNSUPPORTED;
  kc_loop_end(ir, &l, NULL);
  /* the tail: one masked vector (the loop's counter on exit is where it stopped) */
  LLVMValueRef jt = l.iv;
  kc_if c;
  kc_if_begin(ir, &c, kc_ir_lt(ir, jt, j1));
  LLVMValueRef mask = kc_ir_lane_mask(ir, L, 0, kc_ir_sub(ir, j1, jt));
  if (!step(w, jt, L, mask, vec, splats)) return KC_ERR_UNSUPPORTED;
  kc_if_end(ir, &c);
  return KC_OK;
}

/* j in [j0, j1), one element at a time, each input at base + j * its inner stride. */
static kc_status inner_strided(ew *w, LLVMValueRef j0, LLVMValueRef j1) {
  kc_ir *ir = w->ir;
  int last = w->ng - 1;
  LLVMValueRef args[EW_MAX_OPS];
  kc_loop l;
  LLVMValueRef j = kc_loop_begin(ir, &l, j0, j1, kc_ir_i64(ir, 1), 0, NULL);
  for (uint32_t i = 0; i < w->nops; i++) {
    ew_operand *o = &w->op[i];
    if (!o->present) {
      args[i] = NULL;
    } else if (o->cval) {
      args[i] = o->cval;
    } else {
      LLVMValueRef s = last >= 0 ? o->gstride[last] : kc_ir_i64(ir, 0);
      LLVMValueRef idx = kc_ir_add(ir, o->base, kc_ir_mul(ir, j, s));
      args[i] = kc_emit_load(w->e, o->dt, o->ptr, idx, 1);
    }
  }
  if (!eval_store(w, args, kc_ir_add(ir, w->obase, j), 1, NULL)) return KC_ERR_UNSUPPORTED;
  kc_loop_end(ir, &l, NULL);
  return KC_OK;
}

static kc_status inner(ew *w, LLVMValueRef j0, LLVMValueRef j1) {
  kc_ir *ir = w->ir;
  int last = w->ng - 1;
  bool vec[EW_MAX_OPS];
  LLVMValueRef contiguous = NULL; /* all UNKNOWN inner strides are 1 */
  for (uint32_t i = 0; i < w->nops; i++) {
    ew_operand *o = &w->op[i];
    ew_kind k = o->present && !o->cval && last >= 0 ? o->k[w->ghi[last] - 1] : K_BCAST;
    vec[i] = k != K_BCAST;
    if (k != K_UNKNOWN) continue;
    LLVMValueRef one = LLVMBuildICmp(ir->b, LLVMIntEQ, o->gstride[last], kc_ir_i64(ir, 1), "");
    contiguous = contiguous ? LLVMBuildAnd(ir->b, contiguous, one, "") : one;
  }
  if (!contiguous) return inner_vector(w, j0, j1, vec);
  kc_if c;
  kc_if_begin(ir, &c, contiguous);
  kc_status s = inner_vector(w, j0, j1, vec);
  if (s != KC_OK) return s;
  kc_if_else(ir, &c);
  if ((s = inner_strided(w, j0, j1)) != KC_OK) return s;
  kc_if_end(ir, &c);
  return KC_OK;
}

/* ---- kernel: outer walk ---------------------------------------------------------------------- */

static kc_status emit_flat(ew *w) {
  kc_ir *ir = w->ir;
  kc_cpu_emit *e = w->e;
  LLVMValueRef n = w->ng ? w->gdim[0] : kc_ir_i64(ir, 1);
  LLVMValueRef chunk = kc_ir_i64(ir, EW_CHUNK);
  LLVMValueRef lo = kc_ir_mul(ir, e->p_begin, chunk);
  LLVMValueRef hi = kc_ir_min(ir, kc_ir_mul(ir, e->p_end, chunk), n);
  for (uint32_t i = 0; i < w->nops; i++)
    w->op[i].base = kc_ir_i64(ir, 0);
  w->obase = kc_ir_i64(ir, 0);
  return inner(w, lo, hi);
}

static kc_status emit_rows(ew *w) {
  kc_ir *ir = w->ir;
  kc_cpu_emit *e = w->e;
  int last = w->ng - 1;
  kc_loop l;
  LLVMValueRef r = kc_loop_begin(ir, &l, e->p_begin, e->p_end, kc_ir_i64(ir, 1), 0, NULL);
  LLVMValueRef rem = r;
  for (uint32_t i = 0; i < w->nops; i++)
    w->op[i].base = kc_ir_i64(ir, 0);
  for (int gi = last - 1; gi >= 0; gi--) {
    LLVMValueRef c = rem;
    if (gi > 0) { /* row indices are non-negative: unsigned division is exact and cheaper */
      c = LLVMBuildURem(ir->b, rem, w->gdim[gi], "");
      rem = LLVMBuildUDiv(ir->b, rem, w->gdim[gi], "");
    }
    for (uint32_t i = 0; i < w->nops; i++) {
      ew_operand *o = &w->op[i];
      if (o->present && !o->cval && o->k[w->ghi[gi] - 1] != K_BCAST)
        o->base = kc_ir_add(ir, o->base, kc_ir_mul(ir, c, o->gstride[gi]));
    }
  }
  w->obase = kc_ir_mul(ir, r, w->gdim[last]);
  kc_status s = inner(w, kc_ir_i64(ir, 0), w->gdim[last]);
  if (s != KC_OK) return s;
  kc_loop_end(ir, &l, NULL);
  return KC_OK;
}

kc_status kc_ew_lower(kc_cpu_emit *e, const kc_ew_eval *ev) {
  const kc_node *n = e->n;
  const kc_graph *g = e->g;
  KC_ASSERT(n->nin <= EW_MAX_OPS && n->nout >= 1 && n->nout <= EW_MAX_OPS);
  ew_operand ops[EW_MAX_OPS];
  memset(ops, 0, sizeof ops);
  const kc_value *out = &g->vals[n->out[0].id];
  ew w = {.e = e, .ir = e->ir, .n = n, .ev = ev, .nops = n->nin, .nout = n->nout, .op = ops};
  w.R = out->rank;
  w.odims = out->dims;
  for (uint32_t k = 0; k < n->nout; k++)
    w.out_dt[k] = g->vals[n->out[k].id].dtype;
  classify(&w);
  group(&w);
  w.lanes = pick_lanes(&w);

  bool flat = w.ng <= 1;
  if (flat) {
    kc_emit_units_custom(e, flat_units);
    e->grain = EW_GRAIN / EW_CHUNK;
  } else {
    kc_emit_units_outer(e, 0, 0, w.glo[w.ng - 1]);
    e->grain = rows_grain(&w);
  }
  e->ws_bytes = 0;
  kc_emit_kernel_begin(e);
  setup_strides(&w);
  kc_status s = flat ? emit_flat(&w) : emit_rows(&w);
  if (s != KC_OK) return s;
  kc_emit_kernel_end(e);
  return KC_OK;
}

/* ---- kc_lower_elementwise: one op ------------------------------------------------------------ */

typedef struct one_op {
  const kc_node *n;
  kc_scalar_fn fn;
  kc_dtype in_dt, out_dt;
} one_op;

static bool eval_one(void *user, kc_ir *ir, unsigned lanes, LLVMValueRef *args,
                     LLVMValueRef *outs) {
  const one_op *o = user;
  outs[0] = o->fn(ir, o->n, o->in_dt, o->out_dt, args);
  return outs[0] != NULL;
}

kc_status kc_lower_elementwise(kc_cpu_emit *e) {
  const kc_node *n = e->n;
  kc_graph *g = (kc_graph *)e->g;
  kc_scalar_fn fn = kc_cpu_ops[n->op].scalar;
  if (!fn || fn == kc_scalar_none || n->nout != 1 || n->nin < 1)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "not an elementwise op");
  if (n->nin > EW_MAX_OPS)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "%u inputs, at most %d are supported", n->nin,
                          EW_MAX_OPS);
  kc_dtype out_dt = g->vals[n->out[0].id].dtype;
  one_op o = {n, fn, n->in[0].id ? g->vals[n->in[0].id].dtype : out_dt, out_dt};
  kc_ew_eval ev = {eval_one, &o, 0};
  kc_status s = kc_ew_lower(e, &ev);
  if (s != KC_OK)
    return kc_node_errorf(g, n, s, "no CPU code for %s on %s -> %s", kc_ops[n->op].name,
                          kc_dtype_name(o.in_dt), kc_dtype_name(o.out_dt));
  return KC_OK;
}

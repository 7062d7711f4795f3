/*
 * codegen/cpu/index.c - multi-index helpers of the data-movement emitters (see index.h):
 * extents and strides, unravel and odometer steps, runs of copies and fills, and the strided
 * index-map copy.
 *
 * Invariants: divisions are unsigned on non-negative indices and never by a zero extent
 * (divisors are clamped to >= 1: a zero extent means zero units, so the quotient is unused);
 * runs of count <= 0 copy nothing.
 */
#include "codegen/cpu/index.h"

LLVMTypeRef kc_idx_elem_type(kc_ir *ir, kc_dtype t) {
  return LLVMIntTypeInContext(ir->ctx, (unsigned)(8 * kc_dtype_size(t)));
}

int kc_idx_dims(kc_cpu_emit *e, LLVMValueRef dims, bool out, uint32_t i, LLVMValueRef *ext) {
  kc_val v = out ? e->n->out[i] : e->n->in[i];
  int rank = e->g->vals[v.id].rank;
  for (int k = 0; k < rank; k++)
    ext[k] = kc_emit_dim(e, dims, out, i, k);
  if (rank > 0) return rank;
  ext[0] = kc_ir_i64(e->ir, 1);
  return 1;
}

void kc_idx_strides(kc_ir *ir, int n, const LLVMValueRef *ext, LLVMValueRef *strides) {
  LLVMValueRef s = kc_ir_i64(ir, 1);
  for (int k = n - 1; k >= 0; k--) {
    strides[k] = s;
    s = kc_ir_mul(ir, s, ext[k]);
  }
}

LLVMValueRef kc_idx_prod(kc_ir *ir, int n, const LLVMValueRef *ext) {
  LLVMValueRef p = kc_ir_i64(ir, 1);
  for (int k = 0; k < n; k++)
    p = kc_ir_mul(ir, p, ext[k]);
  return p;
}

void kc_idx_unravel(kc_ir *ir, LLVMValueRef lin, int n, const LLVMValueRef *ext,
                    LLVMValueRef *idx) {
  for (int k = n - 1; k > 0; k--) {
    LLVMValueRef d = kc_ir_max(ir, ext[k], kc_ir_i64(ir, 1));
    idx[k] = LLVMBuildURem(ir->b, lin, d, "");
    lin = LLVMBuildUDiv(ir->b, lin, d, "");
  }
  idx[0] = lin;
}

void kc_idx_next(kc_ir *ir, int n, const LLVMValueRef *ext, LLVMValueRef *idx) {
  /* Branch-free odometer: a carry ripples from the last coordinate while it wraps. */
  LLVMValueRef carry = LLVMConstInt(ir->t_i1, 1, 0);
  for (int k = n - 1; k >= 0; k--) {
    LLVMValueRef inc = kc_ir_add(ir, idx[k], LLVMBuildZExt(ir->b, carry, ir->t_i64, ""));
    if (k == 0) {
      idx[k] = inc; /* past the end only after the last unit, where it is not used */
      break;
    }
    LLVMValueRef wrap = LLVMBuildICmp(ir->b, LLVMIntEQ, inc, ext[k], "");
    wrap = LLVMBuildAnd(ir->b, wrap, carry, "");
    idx[k] = LLVMBuildSelect(ir->b, wrap, kc_ir_i64(ir, 0), inc, "");
    carry = wrap;
  }
}

LLVMValueRef kc_idx_dot(kc_ir *ir, int n, const LLVMValueRef *idx, const LLVMValueRef *strides,
                        LLVMValueRef base) {
  LLVMValueRef s = base ? base : kc_ir_i64(ir, 0);
  for (int k = 0; k < n; k++)
    s = kc_ir_add(ir, s, kc_ir_mul(ir, idx[k], strides[k]));
  return s;
}

LLVMValueRef kc_idx_load_i64(kc_cpu_emit *e, kc_dtype t, LLVMValueRef p, LLVMValueRef idx) {
  kc_ir *ir = e->ir;
  LLVMValueRef v = kc_emit_load(e, t, p, idx, 1);
  bool is_signed = t == KC_I64 || t == KC_I32 || t == KC_I16 || t == KC_I8;
  return LLVMBuildIntCast2(ir->b, v, ir->t_i64, is_signed, "");
}

static LLVMValueRef elem_ptr(kc_ir *ir, LLVMTypeRef et, LLVMValueRef p, LLVMValueRef idx) {
  return LLVMBuildInBoundsGEP2(ir->b, et, p, &idx, 1, "");
}

static unsigned elem_align(LLVMTypeRef et) { return LLVMGetIntTypeWidth(et) / 8; }

static void memcpy_run(kc_ir *ir, LLVMTypeRef et, LLVMValueRef dst, LLVMValueRef doff,
                       LLVMValueRef src, LLVMValueRef soff, LLVMValueRef count) {
  unsigned a = elem_align(et);
  LLVMValueRef bytes = kc_ir_mul(ir, kc_ir_max(ir, count, kc_ir_i64(ir, 0)), kc_ir_i64(ir, a));
  LLVMBuildMemCpy(ir->b, elem_ptr(ir, et, dst, doff), a, elem_ptr(ir, et, src, soff), a, bytes);
}

/* dst[doff + j] = src[soff + j * sstride]: LLVM vectorizes it with gathers where it pays. */
static void strided_run(kc_ir *ir, LLVMTypeRef et, LLVMValueRef dst, LLVMValueRef doff,
                        LLVMValueRef src, LLVMValueRef soff, LLVMValueRef sstride,
                        LLVMValueRef count) {
  kc_loop l;
  LLVMValueRef j = kc_loop_begin(ir, &l, kc_ir_i64(ir, 0), count, kc_ir_i64(ir, 1), 0, NULL);
  LLVMValueRef s = kc_ir_add(ir, soff, kc_ir_mul(ir, j, sstride));
  LLVMValueRef v = kc_ir_load(ir, et, elem_ptr(ir, et, src, s), elem_align(et));
  kc_ir_store(ir, v, elem_ptr(ir, et, dst, kc_ir_add(ir, doff, j)), elem_align(et));
  kc_loop_end(ir, &l, NULL);
}

void kc_idx_fill_run(kc_ir *ir, LLVMValueRef dst, LLVMValueRef doff, LLVMValueRef v,
                     LLVMValueRef count) {
  LLVMTypeRef et = LLVMTypeOf(v);
  kc_loop l;
  LLVMValueRef j = kc_loop_begin(ir, &l, kc_ir_i64(ir, 0), count, kc_ir_i64(ir, 1), 0, NULL);
  kc_ir_store(ir, v, elem_ptr(ir, et, dst, kc_ir_add(ir, doff, j)), elem_align(et));
  kc_loop_end(ir, &l, NULL);
}

/* A fill from the one source element a stride-0 run reads. */
static void broadcast_run(kc_ir *ir, LLVMTypeRef et, LLVMValueRef dst, LLVMValueRef doff,
                          LLVMValueRef src, LLVMValueRef soff, LLVMValueRef count) {
  kc_if c;
  kc_if_begin(ir, &c, kc_ir_lt(ir, kc_ir_i64(ir, 0), count)); /* the source may be empty */
  LLVMValueRef v = kc_ir_load(ir, et, elem_ptr(ir, et, src, soff), elem_align(et));
  kc_idx_fill_run(ir, dst, doff, v, count);
  kc_if_end(ir, &c);
}

void kc_idx_copy_run(kc_ir *ir, LLVMTypeRef et, LLVMValueRef dst, LLVMValueRef doff,
                     LLVMValueRef src, LLVMValueRef soff, LLVMValueRef sstride,
                     LLVMValueRef count) {
  if (LLVMIsAConstantInt(sstride)) {
    long long s = LLVMConstIntGetSExtValue(sstride);
    if (s == 1)
      memcpy_run(ir, et, dst, doff, src, soff, count);
    else if (s == 0)
      broadcast_run(ir, et, dst, doff, src, soff, count);
    else
      strided_run(ir, et, dst, doff, src, soff, sstride, count);
    return;
  }
  kc_if one, zero;
  kc_if_begin(ir, &one, LLVMBuildICmp(ir->b, LLVMIntEQ, sstride, kc_ir_i64(ir, 1), ""));
  memcpy_run(ir, et, dst, doff, src, soff, count);
  kc_if_else(ir, &one);
  kc_if_begin(ir, &zero, LLVMBuildICmp(ir->b, LLVMIntEQ, sstride, kc_ir_i64(ir, 0), ""));
  broadcast_run(ir, et, dst, doff, src, soff, count);
  kc_if_else(ir, &zero);
  strided_run(ir, et, dst, doff, src, soff, sstride, count);
  kc_if_end(ir, &zero);
  kc_if_end(ir, &one);
}

/* ---- index map ------------------------------------------------------------------------------ */

LLVMValueRef kc_idx_map_units(kc_ir *ir, int rank, const LLVMValueRef *dim) {
  LLVMValueRef chunks = kc_ir_cdiv(ir, dim[rank - 1], kc_ir_i64(ir, KC_IDX_CHUNK));
  return kc_ir_mul(ir, kc_idx_prod(ir, rank - 1, dim), chunks);
}

void kc_idx_map_copy(kc_cpu_emit *e, LLVMTypeRef et, LLVMValueRef src, LLVMValueRef dst,
                     const kc_idx_map *m) {
  kc_ir *ir = e->ir;
  int r = m->rank;
  KC_ASSERT(r >= 1 && r <= KC_MAX_RANK);
  /* Units walk the space (dim[0..r-1), chunk of the last axis); both offsets are dot products
   * over it. The destination's strides are those of dim with the chunk axis scaled. */
  LLVMValueRef chunk = kc_ir_i64(ir, KC_IDX_CHUNK), len = m->dim[r - 1];
  LLVMValueRef ext[KC_MAX_RANK], sst[KC_MAX_RANK], dstr[KC_MAX_RANK];
  for (int k = 0; k < r - 1; k++) {
    ext[k] = m->dim[k];
    sst[k] = m->stride[k];
  }
  ext[r - 1] = kc_ir_cdiv(ir, len, chunk);
  sst[r - 1] = kc_ir_mul(ir, m->stride[r - 1], chunk);
  kc_idx_strides(ir, r, m->dim, dstr);
  dstr[r - 1] = chunk;

  LLVMValueRef idx[KC_MAX_RANK];
  kc_idx_unravel(ir, e->p_begin, r, ext, idx);
  kc_loop l;
  kc_loop_begin(ir, &l, e->p_begin, e->p_end, kc_ir_i64(ir, 1), (unsigned)r, idx);
  LLVMValueRef cur[KC_MAX_RANK];
  for (int k = 0; k < r; k++)
    cur[k] = l.carry[k];
  LLVMValueRef soff = kc_idx_dot(ir, r, cur, sst, m->base);
  LLVMValueRef doff = kc_idx_dot(ir, r, cur, dstr, NULL);
  LLVMValueRef first = kc_ir_mul(ir, cur[r - 1], chunk);
  LLVMValueRef count = kc_ir_min(ir, chunk, kc_ir_sub(ir, len, first));
  kc_idx_copy_run(ir, et, dst, doff, src, soff, m->stride[r - 1], count);
  kc_idx_next(ir, r, ext, cur);
  kc_loop_end(ir, &l, cur);
}

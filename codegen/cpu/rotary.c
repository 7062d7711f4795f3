/*
 * codegen/cpu/rotary.c - kc_lower_rotary: ONNX RotaryEmbedding.
 *
 * x is [B, H, S, D] or [B, S, H*D] (num_heads given); a row is one head vector of D elements
 * and the work unit is a row (units = numel(x) / D). The caches are [max_pos, C] indexed by
 * position_ids [B, S] when given, else [B, S, C]. Half the rotary width is rotary_embedding_dim
 * / 2 when that is set, else C (ONNX requires C = D / 2 then, so this is the same rotation, and
 * a narrower cache rotates its own width instead of reading past it). Elements [0, 2*half) are
 * rotated in pairs (i, i + half), or (2i, 2i + 1) when interleaved:
 *   y1 = x1 cos - x2 sin,  y2 = x1 sin + x2 cos;
 * the rest of the row is copied. Position ids index the caches' rows as ONNX's reference does
 * (numpy: [-max_pos, max_pos) valid, negative from the end); one outside that is an error the
 * kernel returns before reading through it (codegen/cpu/emit.h's index check).
 *
 * The loops are scalar; they are unit-stride (or stride 2) and LLVM's loop vectorizer turns them
 * into vector code, with run-time alias checks for an output that may share x's buffer.
 */
#include "rowvec.h"

typedef struct rot {
  kc_cpu_emit *e;
  kc_ir *ir;
  kc_dtype t;
  bool interleaved;
  LLVMValueRef x, y, cosp, sinp, row, crow, half;
} rot;

/* Rotate pair i: elements a = row + ia and b = row + ib with cache entry crow + i. */
static void rotate_pair(rot *R, LLVMValueRef i, LLVMValueRef ia, LLVMValueRef ib) {
  kc_ir *ir = R->ir;
  kc_cpu_emit *e = R->e;
  LLVMValueRef a = kc_ir_add(ir, R->row, ia), b = kc_ir_add(ir, R->row, ib);
  LLVMValueRef ci = kc_ir_add(ir, R->crow, i);
  LLVMValueRef x1 = kc_emit_load(e, R->t, R->x, a, 1), x2 = kc_emit_load(e, R->t, R->x, b, 1);
  LLVMValueRef c = kc_emit_load(e, R->t, R->cosp, ci, 1), s = kc_emit_load(e, R->t, R->sinp, ci, 1);
  LLVMValueRef y1 =
      LLVMBuildFSub(ir->b, LLVMBuildFMul(ir->b, x1, c, ""), LLVMBuildFMul(ir->b, x2, s, ""), "");
  LLVMValueRef y2 = kc_ir_fmuladd(ir, x1, s, LLVMBuildFMul(ir->b, x2, c, ""));
  kc_emit_store(e, R->t, R->y, a, y1, 1);
  kc_emit_store(e, R->t, R->y, b, y2, 1);
}

/* Rows of a 3-D x [B, S, H*D]: B * S * H. */
static LLVMValueRef units3(kc_cpu_emit *e, LLVMValueRef dims) {
  LLVMValueRef bs = kc_emit_numel(e, dims, false, 0, 0, 2);
  return kc_ir_mul(e->ir, bs, kc_ir_i64(e->ir, kc_node_int(e->n, "num_heads", 1)));
}

kc_status kc_lower_rotary(kc_cpu_emit *e) {
  const kc_node *n = e->n;
  const kc_value *xv = kc_value_of(e->g, n->in[0]);
  kc_ir *ir = e->ir;
  rot R = {.e = e, .ir = ir, .t = xv->dtype};
  R.interleaved = kc_node_int(n, "interleaved", 0) != 0;
  int64_t heads = kc_node_int(n, "num_heads", 0);
  int64_t rdim = kc_node_int(n, "rotary_embedding_dim", 0);
  bool has_pos = n->nin > 3 && n->in[3].id;
  int rank = xv->rank;
  if ((rank != 3 && rank != 4) || (rank == 3 && heads <= 0) || !kc_dtype_is_float(R.t))
    return kc_node_errorf((kc_graph *)e->g, n, KC_ERR_UNSUPPORTED,
                          "x of rank %d, type %s, num_heads %lld", rank, kc_dtype_name(R.t),
                          (long long)heads);
  if (rdim < 0 || rdim % 2 != 0)
    return kc_node_errorf((kc_graph *)e->g, n, KC_ERR_UNSUPPORTED,
                          "rotary_embedding_dim %lld is not even", (long long)rdim);
  e->grain = 0;
  e->ws_bytes = 0;

  kc_emit_kernel_begin(e);
  R.x = kc_emit_in_ptr(e, 0);
  R.cosp = kc_emit_in_ptr(e, 1);
  R.sinp = kc_emit_in_ptr(e, 2);
  R.y = kc_emit_out_ptr(e, 0);
  LLVMValueRef dims = e->p_dims;
  LLVMValueRef one = kc_ir_i64(ir, 1), zero = kc_ir_i64(ir, 0);
  int crank = kc_value_of(e->g, n->in[1])->rank;
  LLVMValueRef width = kc_emit_dim(e, dims, false, 1, crank - 1);
  LLVMValueRef d, h, s;
  if (rank == 4) {
    h = kc_emit_dim(e, dims, false, 0, 1);
    s = kc_emit_dim(e, dims, false, 0, 2);
    d = kc_emit_dim(e, dims, false, 0, 3);
  } else {
    h = kc_ir_i64(ir, heads);
    s = kc_emit_dim(e, dims, false, 0, 1);
    d = LLVMBuildSDiv(ir->b, kc_emit_dim(e, dims, false, 0, 2), h, "");
  }
  R.half = rdim > 0 ? kc_ir_i64(ir, rdim / 2) : width;
  /* the shape function bounds 2*half by the head size when both are integers */
  R.half = kc_ir_min(ir, R.half, LLVMBuildSDiv(ir->b, d, kc_ir_i64(ir, 2), ""));
  kc_loop l;
  LLVMValueRef u = kc_loop_begin(ir, &l, e->p_begin, e->p_end, one, 0, NULL);
  LLVMValueRef b, si;
  if (rank == 4) {
    b = LLVMBuildSDiv(ir->b, u, kc_ir_mul(ir, h, s), "");
    si = LLVMBuildSRem(ir->b, u, s, "");
  } else {
    LLVMValueRef bs = LLVMBuildSDiv(ir->b, u, h, "");
    b = LLVMBuildSDiv(ir->b, bs, s, "");
    si = LLVMBuildSRem(ir->b, bs, s, "");
  }
  LLVMValueRef bs = kc_ir_add(ir, kc_ir_mul(ir, b, s), si);
  R.row = kc_ir_mul(ir, u, d);
  if (has_pos) {
    LLVMValueRef pos = kc_ir_load(ir, ir->t_i64, kc_ir_gepi64(ir, kc_emit_in_ptr(e, 3), bs), 8);
    LLVMValueRef maxpos = kc_emit_dim(e, dims, false, 1, 0);
    pos = kc_emit_checked_index(e, pos, maxpos, bs, 3, 1, 0);
    R.crow = kc_ir_mul(ir, pos, width);
  } else {
    R.crow = kc_ir_mul(ir, bs, width);
  }
  kc_loop p;
  LLVMValueRef i = kc_loop_begin(ir, &p, zero, R.half, one, 0, NULL);
  if (R.interleaved) {
    LLVMValueRef ia = kc_ir_mul(ir, i, kc_ir_i64(ir, 2));
    rotate_pair(&R, i, ia, kc_ir_add(ir, ia, one));
  } else {
    rotate_pair(&R, i, i, kc_ir_add(ir, i, R.half));
  }
  kc_loop_end(ir, &p, NULL);
  kc_loop c;
  LLVMValueRef j = kc_loop_begin(ir, &c, kc_ir_add(ir, R.half, R.half), d, one, 0, NULL);
  LLVMValueRef at = kc_ir_add(ir, R.row, j);
  kc_emit_store(e, R.t, R.y, at, kc_emit_load(e, R.t, R.x, at, 1), 1);
  kc_loop_end(ir, &c, NULL);
  kc_loop_end(ir, &l, NULL);
  kc_emit_kernel_end(e);

  if (rank == 4)
    kc_emit_units_outer(e, 0, 0, 3);
  else
    kc_emit_units_custom(e, units3);
  return KC_OK;
}

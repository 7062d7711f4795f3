/*
 * codegen/cpu/gather.c - kc_lower_gather: out[p, j..., q] = x[p, idx[j...], q] along `axis`,
 * with x viewed as [pre, len, post] and the indices flattened to n entries.
 *
 * Indices (i32 or i64) below zero count from the end. An index outside [-len, len) is an error
 * in ONNX: the kernel returns 1 + its position in the indices (codegen/cpu/emit.h's index
 * check) before it reads anything through it, and the runtime reports it naming the node (with
 * len 0 every index is out of range). Each index moves a contiguous run of post elements, a
 * memcpy (one load/store when post is a small constant).
 *
 * Work units: (p, block of JB consecutive indices); JB is chosen so a unit moves about
 * KC_IDX_CHUNK elements when post is static.
 */
#include "codegen/cpu/index.h"

typedef struct gplan {
  int axis, rank; /* of x */
  int64_t jb;     /* indices per unit */
} gplan;

static void plan(const kc_cpu_emit *e, gplan *p) {
  const kc_value *x = kc_value_of(e->g, e->n->in[0]);
  int64_t axis = kc_node_int(e->n, "axis", 0);
  p->rank = x->rank;
  p->axis = (int)(axis < 0 ? axis + x->rank : axis);
  p->jb = 16;
  int64_t post = 1;
  for (int k = p->axis + 1; k < x->rank; k++) {
    if (KC_DIM_IS_SYM(x->dims[k])) return;
    post *= x->dims[k];
  }
  p->jb = post >= KC_IDX_CHUNK ? 1 : post == 0 ? KC_IDX_CHUNK : KC_IDX_CHUNK / post;
}

/* pre, len, post of x and the index count n. */
static void sizes(kc_cpu_emit *e, LLVMValueRef dims, const gplan *p, LLVMValueRef *pre,
                  LLVMValueRef *len, LLVMValueRef *post, LLVMValueRef *n) {
  const kc_value *idx = kc_value_of(e->g, e->n->in[1]);
  *pre = kc_emit_numel(e, dims, false, 0, 0, p->axis);
  *len = kc_emit_dim(e, dims, false, 0, p->axis);
  *post = kc_emit_numel(e, dims, false, 0, p->axis + 1, p->rank);
  *n = kc_emit_numel(e, dims, false, 1, 0, idx->rank);
}

static LLVMValueRef units(kc_cpu_emit *e, LLVMValueRef dims) {
  gplan p;
  LLVMValueRef pre, len, post, n;
  plan(e, &p);
  sizes(e, dims, &p, &pre, &len, &post, &n);
  return kc_ir_mul(e->ir, pre, kc_ir_cdiv(e->ir, n, kc_ir_i64(e->ir, p.jb)));
}

kc_status kc_lower_gather(kc_cpu_emit *e) {
  kc_ir *ir = e->ir;
  gplan p;
  plan(e, &p);
  kc_dtype it = kc_value_of(e->g, e->n->in[1])->dtype;
  if (it != KC_I64 && it != KC_I32)
    return kc_node_errorf((kc_graph *)e->g, e->n, KC_ERR_UNSUPPORTED, "%s indices",
                          kc_dtype_name(it));
  kc_emit_units_custom(e, units);
  kc_emit_kernel_begin(e);
  LLVMTypeRef et = kc_idx_elem_type(ir, kc_value_of(e->g, e->n->in[0])->dtype);
  LLVMValueRef src = kc_emit_in_ptr(e, 0), ind = kc_emit_in_ptr(e, 1), dst = kc_emit_out_ptr(e, 0);
  LLVMValueRef pre, len, post, n, one = kc_ir_i64(ir, 1);
  sizes(e, e->p_dims, &p, &pre, &len, &post, &n);
  LLVMValueRef jb = kc_ir_i64(ir, p.jb), nb = kc_ir_max(ir, kc_ir_cdiv(ir, n, jb), one);

  kc_loop lu;
  LLVMValueRef u = kc_loop_begin(ir, &lu, e->p_begin, e->p_end, one, 0, NULL);
  LLVMValueRef pi = LLVMBuildUDiv(ir->b, u, nb, ""), bi = LLVMBuildURem(ir->b, u, nb, "");
  LLVMValueRef j0 = kc_ir_mul(ir, bi, jb), j1 = kc_ir_min(ir, n, kc_ir_add(ir, j0, jb));
  kc_loop lj;
  LLVMValueRef j = kc_loop_begin(ir, &lj, j0, j1, one, 0, NULL);
  LLVMValueRef id = kc_idx_load_i64(e, it, ind, j);
  id = kc_emit_checked_index(e, id, len, j, 1, 0, p.axis);
  LLVMValueRef soff = kc_ir_mul(ir, kc_ir_add(ir, kc_ir_mul(ir, pi, len), id), post);
  LLVMValueRef doff = kc_ir_mul(ir, kc_ir_add(ir, kc_ir_mul(ir, pi, n), j), post);
  kc_idx_copy_run(ir, et, dst, doff, src, soff, one, post);
  kc_loop_end(ir, &lj, NULL);
  kc_loop_end(ir, &lu, NULL);
  kc_emit_kernel_end(e);
  return KC_OK;
}

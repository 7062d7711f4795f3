/*
 * codegen/cpu/concat_split.c - kc_lower_concat and kc_lower_split, one emitter for both: a
 * "whole" tensor viewed as [pre, total, post] along `axis` and n "parts" [pre, len_k, post]
 * with total = sum len_k. For each p, part k's block of len_k * post elements is contiguous
 * in the part and at offset (p * total + off_k) * post in the whole, so every unit is one
 * memcpy: part -> whole for concat, whole -> part for split.
 *
 * Lengths come from the parts' concrete dims (inputs of concat, outputs of split), so split
 * sizes only known at run time work; a zero-length part copies nothing.
 *
 * Work units: (p, k), k fastest.
 */
#include "codegen/cpu/index.h"

#include <stdlib.h>

typedef struct jplan {
  bool split;     /* parts are outputs */
  int axis, rank; /* of the whole */
  uint32_t n;     /* parts */
} jplan;

static void plan(const kc_cpu_emit *e, jplan *p) {
  p->split = e->n->op == KC_OP_SPLIT;
  const kc_value *w = kc_value_of(e->g, p->split ? e->n->in[0] : e->n->out[0]);
  int64_t axis = kc_node_int(e->n, "axis", 0);
  p->rank = w->rank;
  p->axis = (int)(axis < 0 ? axis + w->rank : axis);
  p->n = p->split ? e->n->nout : e->n->nin;
}

/* pre of the whole (parts agree on it) in the function whose dims pointer is given. */
static LLVMValueRef pre(kc_cpu_emit *e, LLVMValueRef dims, const jplan *p) {
  return kc_emit_numel(e, dims, !p->split, 0, 0, p->axis);
}

static LLVMValueRef units(kc_cpu_emit *e, LLVMValueRef dims) {
  jplan p;
  plan(e, &p);
  return kc_ir_mul(e->ir, pre(e, dims, &p), kc_ir_i64(e->ir, p.n));
}

/* select(k == i, v[i], ...) over the parts: cheaper per unit than a switch, and branch-free. */
static LLVMValueRef pick(kc_ir *ir, LLVMValueRef k, uint32_t n, const LLVMValueRef *v) {
  LLVMValueRef r = v[0];
  for (uint32_t i = 1; i < n; i++)
    r = LLVMBuildSelect(ir->b, LLVMBuildICmp(ir->b, LLVMIntEQ, k, kc_ir_i64(ir, i), ""), v[i], r,
                        "");
  return r;
}

static kc_status emit_join(kc_cpu_emit *e) {
  kc_ir *ir = e->ir;
  jplan p;
  plan(e, &p);
  kc_emit_units_custom(e, units);
  kc_emit_kernel_begin(e);
  LLVMTypeRef et = kc_idx_elem_type(ir, kc_value_of(e->g, e->n->in[0])->dtype);
  LLVMValueRef one = kc_ir_i64(ir, 1), *ptr = NULL, *len = NULL, *off = NULL;
  size_t sz = (size_t)p.n * sizeof(LLVMValueRef);
  if (!(ptr = malloc(sz)) || !(len = malloc(sz)) || !(off = malloc(sz))) {
    free(ptr);
    free(len);
    return kc_errorf(e->g->ctx, KC_ERR_NOMEM, "out of memory");
  }
  LLVMValueRef total = kc_ir_i64(ir, 0);
  for (uint32_t k = 0; k < p.n; k++) {
    ptr[k] = p.split ? kc_emit_out_ptr(e, k) : kc_emit_in_ptr(e, k);
    len[k] = kc_emit_dim(e, e->p_dims, p.split, k, p.axis);
    off[k] = total;
    total = kc_ir_add(ir, total, len[k]);
  }
  LLVMValueRef whole = p.split ? kc_emit_in_ptr(e, 0) : kc_emit_out_ptr(e, 0);
  LLVMValueRef post = kc_emit_numel(e, e->p_dims, !p.split, 0, p.axis + 1, p.rank);
  LLVMValueRef nparts = kc_ir_i64(ir, p.n);

  kc_loop lu;
  LLVMValueRef u = kc_loop_begin(ir, &lu, e->p_begin, e->p_end, one, 0, NULL);
  LLVMValueRef pi = LLVMBuildUDiv(ir->b, u, nparts, ""), k = LLVMBuildURem(ir->b, u, nparts, "");
  LLVMValueRef part = pick(ir, k, p.n, ptr), plen = pick(ir, k, p.n, len);
  LLVMValueRef poff = pick(ir, k, p.n, off);
  LLVMValueRef count = kc_ir_mul(ir, plen, post);
  LLVMValueRef part_off = kc_ir_mul(ir, pi, count);
  LLVMValueRef whole_off = kc_ir_mul(ir, kc_ir_add(ir, kc_ir_mul(ir, pi, total), poff), post);
  if (p.split)
    kc_idx_copy_run(ir, et, part, part_off, whole, whole_off, one, count);
  else
    kc_idx_copy_run(ir, et, whole, whole_off, part, part_off, one, count);
  kc_loop_end(ir, &lu, NULL);
  kc_emit_kernel_end(e);
  free(ptr);
  free(len);
  free(off);
  return KC_OK;
}

kc_status kc_lower_concat(kc_cpu_emit *e) { return emit_join(e); }

kc_status kc_lower_split(kc_cpu_emit *e) { return emit_join(e); }

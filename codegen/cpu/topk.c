/*
 * codegen/cpu/topk.c - kc_lower_topk: the k best elements of each line along the axis (largest
 * or smallest), best first, with their int64 indices.
 *
 * x is viewed as [outer, L, inner] around the axis; a work unit is one line (outer index, inner
 * index), and the output line (values and indices, k elements at stride inner) is the line's
 * scratch: it holds a binary heap of the k best seen so far with the worst at the root, so a
 * line costs O(L log k) compares, never a full sort when k is small, and no per-thread memory
 * whatever k is (k may be bound at run time). Steps per line:
 *   1. the first k elements are copied in and heapified (sift-down from k/2-1 to 0);
 *   2. every later element better than the root replaces it and sifts down;
 *   3. heap sort: the root (the worst) swaps with the last slot, which leaves the line ordered
 *      best first.
 * "Better" is one total order, so ties never depend on the heap's shape: a larger value
 * (smaller for largest=0), then the lower index; nan ranks above every number (numpy's sort
 * order, onnx's reference), -0.0 equals +0.0. Integers compare with their signedness.
 * k == 0 writes nothing; k == L sorts the whole line.
 */
#include "codegen/cpu/index.h"
#include "codegen/cpu/vmath.h"

typedef struct topk_line {
  kc_cpu_emit *e;
  kc_dtype t;
  bool largest, fl, uns;
  LLVMValueRef vals, idxs;  /* output buffers */
  LLVMValueRef base, inner; /* slot s of the line is element base + s * inner */
} topk_line;

/* Does (av, ai) rank before (bv, bi)? ai NULL: a's index is known to be the higher one (a
 * later element of the line against a kept one), so only a strictly better value ranks first. */
static LLVMValueRef better(const topk_line *h, LLVMValueRef av, LLVMValueRef ai, LLVMValueRef bv,
                           LLVMValueRef bi) {
  LLVMBuilderRef b = h->e->ir->b;
  LLVMValueRef strict, eq;
  if (h->fl) {
    LLVMValueRef an = LLVMBuildFCmp(b, LLVMRealUNO, av, av, "");
    LLVMValueRef bn = LLVMBuildFCmp(b, LLVMRealUNO, bv, bv, "");
    strict = LLVMBuildFCmp(b, h->largest ? LLVMRealOGT : LLVMRealOLT, av, bv, "");
    LLVMValueRef nan_first = h->largest ? LLVMBuildAnd(b, an, LLVMBuildNot(b, bn, ""), "")
                                        : LLVMBuildAnd(b, bn, LLVMBuildNot(b, an, ""), "");
    strict = LLVMBuildOr(b, strict, nan_first, "");
    if (!ai) return strict;
    eq = LLVMBuildOr(b, LLVMBuildFCmp(b, LLVMRealOEQ, av, bv, ""), LLVMBuildAnd(b, an, bn, ""), "");
  } else {
    LLVMIntPredicate p =
        h->largest ? (h->uns ? LLVMIntUGT : LLVMIntSGT) : (h->uns ? LLVMIntULT : LLVMIntSLT);
    strict = LLVMBuildICmp(b, p, av, bv, "");
    if (!ai) return strict;
    eq = LLVMBuildICmp(b, LLVMIntEQ, av, bv, "");
  }
  LLVMValueRef first = LLVMBuildICmp(b, LLVMIntSLT, ai, bi, "");
  return LLVMBuildOr(b, strict, LLVMBuildAnd(b, eq, first, ""), "");
}

static LLVMValueRef slot(const topk_line *h, LLVMValueRef s) {
  return kc_ir_add(h->e->ir, h->base, kc_ir_mul(h->e->ir, s, h->inner));
}

static void load_slot(const topk_line *h, LLVMValueRef s, LLVMValueRef *v, LLVMValueRef *i) {
  LLVMValueRef at = slot(h, s);
  *v = kc_emit_load(h->e, h->t, h->vals, at, 1);
  *i = kc_emit_load(h->e, KC_I64, h->idxs, at, 1);
}

static void store_slot(const topk_line *h, LLVMValueRef s, LLVMValueRef v, LLVMValueRef i) {
  LLVMValueRef at = slot(h, s);
  kc_emit_store(h->e, h->t, h->vals, at, v, 1);
  kc_emit_store(h->e, KC_I64, h->idxs, at, i, 1);
}

/*
 * Place (v, i) at slot pos of the heap of n slots and sift it down: each step moves the worse
 * child up while (v, i) ranks before it. Branch-free per level: the slot is written with
 * whichever of the child and (v, i) stays there, and the loop ends by jumping to n.
 */
static void sift_down(const topk_line *h, LLVMValueRef pos, LLVMValueRef n, LLVMValueRef v,
                      LLVMValueRef i) {
  kc_ir *ir = h->e->ir;
  LLVMBuilderRef b = ir->b;
  LLVMValueRef one = kc_ir_i64(ir, 1);
  kc_loop l;
  LLVMValueRef p = kc_loop_begin(ir, &l, pos, n, NULL, 0, NULL);
  LLVMValueRef c1 = kc_ir_add(ir, kc_ir_add(ir, p, p), one), c2 = kc_ir_add(ir, c1, one);
  LLVMValueRef has1 = kc_ir_lt(ir, c1, n), has2 = kc_ir_lt(ir, c2, n);
  LLVMValueRef s1 = LLVMBuildSelect(b, has1, c1, p, ""), s2 = LLVMBuildSelect(b, has2, c2, s1, "");
  LLVMValueRef v1, i1, v2, i2;
  load_slot(h, s1, &v1, &i1);
  load_slot(h, s2, &v2, &i2);
  /* the worse child: the second when the first ranks before it */
  LLVMValueRef take2 = LLVMBuildAnd(b, has2, better(h, v1, i1, v2, i2), "");
  LLVMValueRef wc = LLVMBuildSelect(b, take2, s2, s1, "");
  LLVMValueRef wv = LLVMBuildSelect(b, take2, v2, v1, ""),
               wi = LLVMBuildSelect(b, take2, i2, i1, "");
  LLVMValueRef go = LLVMBuildAnd(b, has1, better(h, v, i, wv, wi), "");
  store_slot(h, p, LLVMBuildSelect(b, go, wv, v, ""), LLVMBuildSelect(b, go, wi, i, ""));
  kc_loop_end_next(ir, &l, LLVMBuildSelect(b, go, wc, n, ""), NULL);
}

static LLVMValueRef units(kc_cpu_emit *e, LLVMValueRef dims) {
  int r = kc_value_of(e->g, e->n->in[0])->rank;
  int axis = (int)kc_node_int(e->n, "axis", -1);
  axis = axis < 0 ? axis + r : axis;
  return kc_ir_mul(e->ir, kc_emit_numel(e, dims, false, 0, 0, axis),
                   kc_emit_numel(e, dims, false, 0, axis + 1, r));
}

kc_status kc_lower_topk(kc_cpu_emit *e) {
  kc_ir *ir = e->ir;
  const kc_value *x = kc_value_of(e->g, e->n->in[0]);
  int r = x->rank, axis = (int)kc_node_int(e->n, "axis", -1);
  axis = axis < 0 ? axis + r : axis;
  kc_emit_units_custom(e, units);
  kc_emit_kernel_begin(e);
  topk_line h = {.e = e,
                 .t = x->dtype,
                 .largest = kc_node_int(e->n, "largest", 1) != 0,
                 .fl = kc_dtype_is_float(x->dtype),
                 .uns = kc_vm_unsigned(x->dtype),
                 .vals = kc_emit_out_ptr(e, 0),
                 .idxs = kc_emit_out_ptr(e, 1)};
  LLVMValueRef zero = kc_ir_i64(ir, 0), one = kc_ir_i64(ir, 1);
  LLVMValueRef len = kc_emit_dim(e, e->p_dims, false, 0, axis);
  LLVMValueRef k = kc_emit_dim(e, e->p_dims, true, 0, axis);
  h.inner = kc_emit_numel(e, e->p_dims, false, 0, axis + 1, r);
  LLVMValueRef src = kc_emit_in_ptr(e, 0);
  kc_loop lu;
  LLVMValueRef u = kc_loop_begin(ir, &lu, e->p_begin, e->p_end, one, 0, NULL);
  /* units exist only when inner > 0 */
  LLVMValueRef o = LLVMBuildUDiv(ir->b, u, h.inner, ""), c = LLVMBuildURem(ir->b, u, h.inner, "");
  LLVMValueRef in_base = kc_ir_add(ir, kc_ir_mul(ir, kc_ir_mul(ir, o, len), h.inner), c);
  h.base = kc_ir_add(ir, kc_ir_mul(ir, kc_ir_mul(ir, o, k), h.inner), c);

  /* 1. the first k elements, heapified */
  kc_loop l1;
  LLVMValueRef j = kc_loop_begin(ir, &l1, zero, k, one, 0, NULL);
  store_slot(&h, j, kc_emit_load(e, h.t, src, kc_ir_add(ir, in_base, kc_ir_mul(ir, j, h.inner)), 1),
             j);
  kc_loop_end(ir, &l1, NULL);
  LLVMValueRef half = LLVMBuildSDiv(ir->b, k, kc_ir_i64(ir, 2), "");
  kc_loop l2;
  LLVMValueRef q = kc_loop_begin(ir, &l2, zero, half, one, 0, NULL);
  LLVMValueRef p = kc_ir_sub(ir, kc_ir_sub(ir, half, one), q), pv, pi;
  load_slot(&h, p, &pv, &pi);
  sift_down(&h, p, k, pv, pi);
  kc_loop_end(ir, &l2, NULL);

  /* 2. the rest of the line against the root (k > 0 whenever j < L here) */
  kc_loop l3;
  j = kc_loop_begin(ir, &l3, k, len, one, 0, NULL);
  LLVMValueRef v = kc_emit_load(e, h.t, src, kc_ir_add(ir, in_base, kc_ir_mul(ir, j, h.inner)), 1);
  LLVMValueRef rv = kc_emit_load(e, h.t, h.vals, h.base, 1), ri;
  kc_if in;
  kc_if_begin(ir, &in, better(&h, v, NULL, rv, NULL));
  sift_down(&h, zero, k, v, j);
  kc_if_end(ir, &in);
  kc_loop_end(ir, &l3, NULL);

  /* 3. heap sort: the worst left goes to the end */
  kc_loop l4;
  LLVMValueRef end = kc_loop_begin(ir, &l4, one, k, one, 0, NULL);
  LLVMValueRef last = kc_ir_sub(ir, k, end), lv, li;
  load_slot(&h, last, &lv, &li);
  load_slot(&h, zero, &rv, &ri);
  store_slot(&h, last, rv, ri);
  sift_down(&h, zero, last, lv, li);
  kc_loop_end(ir, &l4, NULL);

  kc_loop_end(ir, &lu, NULL);
  kc_emit_kernel_end(e);
  return KC_OK;
}

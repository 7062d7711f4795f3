/*
 * codegen/cpu/fused.c - kc_lower_fused: the kernel of a `fused` node, an elementwise region
 * whose body graph (n->body) runs in registers inside one loop nest.
 *
 * The loops are elementwise.c's (kc_ew_lower): the node's inputs are loaded broadcast to the
 * output shape, scalars or vectors with a masked tail, exactly as for a single op. The body is
 * the evaluator: at each step its inputs are the loaded operands, each body node in order is
 * its op's kc_scalar_<op> (the same function the unfused op's kernel calls) on the values of its
 * inputs, a one-element `constant` is an LLVM constant (so x * 0.5 folds as it does unfused),
 * and the body's outputs are stored to the node's outputs.
 *
 * Fused and unfused graphs compute the same numbers: unfused, every f16/bf16 intermediate is
 * stored and so rounded to its dtype; here it is rounded the same way in registers (LLVM drops
 * the rounding where it is exact, e.g. after a cast to that dtype). Scalar functions never
 * reassociate or contract, so f32 results are bit-identical too.
 *
 * Checked before any code is emitted (so an unsupported region fails with a message and no
 * half-built kernel): every body op is elementwise or broadcasting with a scalar function, a
 * one-element constant with data, or identity; body inputs have the node inputs' types; every
 * node output has one shape, and every input broadcasts to it.
 *
 * Invariants: the body graph is only read; values are indexed by body value id in a table
 * that lives for one lowering.
 */
#include "ewplan.h"

#include <stdlib.h>

typedef struct body_eval {
  const kc_graph *body;
  LLVMValueRef *vals;  /* per body value id, for the step being emitted */
  const kc_node *fail; /* the body node whose scalar function had no code */
} body_eval;

/* Round a f16/bf16 value held as f32 to its dtype, as a store and load would. */
static LLVMValueRef round_to(kc_ir *ir, LLVMValueRef v, kc_dtype t) {
  if (t != KC_F16 && t != KC_BF16) return v;
  LLVMTypeRef vt = LLVMTypeOf(v);
  unsigned lanes = LLVMGetTypeKind(vt) == LLVMVectorTypeKind ? LLVMGetVectorSize(vt) : 1;
  LLVMValueRef h =
      kc_ir_fptrunc(ir->b, v, kc_emit_vec_type(kc_emit_storage_type(ir, t), lanes), "");
  return LLVMBuildFPExt(ir->b, h, vt, "");
}

static bool eval_body(void *user, kc_ir *ir, unsigned lanes, LLVMValueRef *args,
                      LLVMValueRef *outs) {
  body_eval *b = user;
  const kc_graph *body = b->body;
  for (uint32_t i = 0; i < body->ninputs; i++)
    b->vals[body->inputs[i].id] = args[i];
  for (uint32_t ni = 0; ni < body->nnodes; ni++) {
    const kc_node *bn = &body->nodes[ni];
    if (bn->op == KC_OP_NOP) continue;
    LLVMValueRef r;
    const kc_value *out = kc_value_of(body, bn->out[0]);
    if (bn->op == KC_OP_CONSTANT) {
      r = kc_ew_const_scalar(ir, body, bn->out[0]);
      if (!r) { /* a dtype with no LLVM constant */
        b->fail = bn;
        return false;
      }
      if (lanes > 1) r = kc_ir_splat(ir, r, lanes);
    } else if (bn->op == KC_OP_IDENTITY) {
      r = b->vals[bn->in[0].id];
    } else {
      LLVMValueRef a[KC_EW_MAX_OPS];
      for (uint32_t k = 0; k < bn->nin; k++)
        a[k] = bn->in[k].id ? b->vals[bn->in[k].id] : NULL;
      kc_dtype in = bn->in[0].id ? kc_value_of(body, bn->in[0])->dtype : out->dtype;
      r = kc_cpu_ops[bn->op].scalar(ir, bn, in, out->dtype, a);
      if (!r) {
        b->fail = bn;
        return false;
      }
      r = round_to(ir, r, out->dtype);
    }
    b->vals[bn->out[0].id] = r;
  }
  for (uint32_t k = 0; k < body->noutputs; k++)
    outs[k] = b->vals[body->outputs[k].v.id];
  return true;
}

/* ---- checks ---------------------------------------------------------------------------------- */

/* Body node bn can be evaluated in registers; else an error naming it. */
static kc_status check_body_node(kc_graph *g, const kc_node *n, const kc_graph *body,
                                 const kc_node *bn) {
  const char *op = kc_ops[bn->op].name;
  uint32_t id = bn->nout ? bn->out[0].id : 0;
  if (bn->op == KC_OP_CONSTANT) {
    if (!kc_ew_const_tensor(body, bn->out[0]))
      return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED,
                            "body constant %%%u is not one element with data; a fused region "
                            "takes only scalar constants",
                            id);
    return KC_OK;
  }
  kc_op_class cls = kc_ops[bn->op].cls;
  bool math = (cls == KC_CLASS_ELEMWISE || cls == KC_CLASS_BROADCAST) &&
              kc_cpu_ops[bn->op].scalar && kc_cpu_ops[bn->op].scalar != kc_scalar_none;
  if (!math && bn->op != KC_OP_IDENTITY)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED,
                          "body node %%%u is %s, which a fused region cannot hold (only "
                          "elementwise, broadcasting and scalar constant ops)",
                          id, op);
  if (bn->nout != 1 || bn->nin > KC_EW_MAX_OPS)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "body node %%%u (%s) has %u inputs, %u outputs",
                          id, op, bn->nin, bn->nout);
  if (bn->op == KC_OP_IDENTITY && !bn->in[0].id)
    return kc_node_errorf(g, n, KC_ERR_VERIFY, "body node %%%u (identity) has no input", id);
  /* a body input standing for an absent node input has no value to compute with */
  for (uint32_t k = 0; k < bn->nin; k++) {
    if (!bn->in[k].id || kc_value_of(body, bn->in[k])->def) continue;
    for (uint32_t i = 0; i < body->ninputs; i++)
      if (body->inputs[i].id == bn->in[k].id && !n->in[i].id)
        return kc_node_errorf(g, n, KC_ERR_VERIFY,
                              "input %u is absent but body node %%%u (%s) reads it", i, id, op);
  }
  return KC_OK;
}

/* Input i broadcasts to the output shape (rank R, dims od). */
static kc_status check_input(kc_graph *g, const kc_node *n, uint32_t i, int R, const kc_dim *od) {
  const kc_value *x = kc_value_of(g, n->in[i]);
  char a[64], b[64];
  if (x->rank > R)
    return kc_node_errorf(g, n, KC_ERR_SHAPE,
                          "input %u (%%%u) has rank %d, over the outputs' rank %d: a fused region "
                          "cannot reduce",
                          i, n->in[i].id, x->rank, R);
  for (int d = 0; d < x->rank; d++) {
    kc_dim xd = x->dims[d], o = od[R - x->rank + d];
    if (xd == 1 || xd == o || KC_DIM_IS_SYM(xd) || KC_DIM_IS_SYM(o)) continue;
    return kc_node_errorf(
        g, n, KC_ERR_SHAPE, "input %u (%%%u) dim %d is %s, which does not broadcast to %s", i,
        n->in[i].id, d, kc_dim_str(g, xd, a, sizeof a), kc_dim_str(g, o, b, sizeof b));
  }
  return KC_OK;
}

static kc_status check(kc_graph *g, const kc_node *n, unsigned *inner_bytes) {
  const kc_graph *body = n->body;
  if (!body) return kc_node_errorf(g, n, KC_ERR_VERIFY, "fused node without a body");
  if (body->ninputs != n->nin || body->noutputs != n->nout)
    return kc_node_errorf(g, n, KC_ERR_VERIFY,
                          "body takes %u inputs and gives %u outputs, node has %u and %u",
                          body->ninputs, body->noutputs, n->nin, n->nout);
  if (n->nin > KC_EW_MAX_OPS || n->nout > KC_EW_MAX_OPS)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "%u inputs and %u outputs, at most %d each",
                          n->nin, n->nout, KC_EW_MAX_OPS);
  const kc_value *o0 = kc_value_of(g, n->out[0]);
  for (uint32_t k = 0; k < n->nout; k++) {
    const kc_value *o = kc_value_of(g, n->out[k]);
    bool same = o->rank == o0->rank;
    for (int d = 0; same && d < o->rank; d++)
      same = o->dims[d] == o0->dims[d];
    if (!same)
      return kc_node_errorf(g, n, KC_ERR_SHAPE,
                            "output %u (%%%u) and output 0 (%%%u) differ in shape: a fused "
                            "region's outputs share one",
                            k, n->out[k].id, n->out[0].id);
    const kc_value *bo = kc_value_of(body, body->outputs[k].v);
    if (bo->dtype != o->dtype)
      return kc_node_errorf(g, n, KC_ERR_TYPE, "output %u is %s but the body gives %s", k,
                            kc_dtype_name(o->dtype), kc_dtype_name(bo->dtype));
  }
  kc_status s;
  for (uint32_t i = 0; i < n->nin; i++) {
    const kc_value *bi = kc_value_of(body, body->inputs[i]);
    if (!n->in[i].id) continue; /* the verifier makes sure the body does not read it */
    const kc_value *x = kc_value_of(g, n->in[i]);
    if (bi->dtype != x->dtype || bi->rank != x->rank)
      return kc_node_errorf(g, n, KC_ERR_TYPE,
                            "input %u (%%%u) is %s of rank %d, the body takes %s "
                            "of rank %d",
                            i, n->in[i].id, kc_dtype_name(x->dtype), x->rank,
                            kc_dtype_name(bi->dtype), bi->rank);
    if ((s = check_input(g, n, i, o0->rank, o0->dims)) != KC_OK) return s;
  }
  *inner_bytes = 0;
  for (uint32_t ni = 0; ni < body->nnodes; ni++) {
    const kc_node *bn = &body->nodes[ni];
    if (bn->op == KC_OP_NOP) continue;
    if ((s = check_body_node(g, n, body, bn)) != KC_OK) return s;
    unsigned bytes = kc_ew_compute_bytes(kc_value_of(body, bn->out[0])->dtype);
    if (bytes > *inner_bytes) *inner_bytes = bytes;
  }
  return KC_OK;
}

kc_status kc_lower_fused(kc_cpu_emit *e) {
  const kc_node *n = e->n;
  kc_graph *g = (kc_graph *)e->g;
  kc_ew_eval ev = {eval_body, NULL, 0};
  kc_status s = check(g, n, &ev.inner_bytes);
  if (s != KC_OK) return s;
  body_eval b = {n->body, calloc(n->body->nvals, sizeof(LLVMValueRef)), NULL};
  if (!b.vals) return kc_node_errorf(g, n, KC_ERR_NOMEM, "out of memory");
  ev.user = &b;
  s = kc_ew_lower(e, &ev);
  free(b.vals);
  if (s == KC_OK) return KC_OK;
  if (!b.fail) return kc_node_errorf(g, n, s, "no CPU code for this fused region");
  const kc_graph *body = n->body;
  kc_dtype in = b.fail->in[0].id ? kc_value_of(body, b.fail->in[0])->dtype : KC_DT_NONE;
  return kc_node_errorf(g, n, s, "no CPU code for body node %%%u (%s) on %s -> %s",
                        b.fail->out[0].id, kc_ops[b.fail->op].name, kc_dtype_name(in),
                        kc_dtype_name(kc_value_of(body, b.fail->out[0])->dtype));
}

/*
 * codegen/cuda/fused.c - kc_cuda_lower_fused: an elementwise region (a `fused` node with a
 * body graph) as one kernel on the elementwise machinery (elementwise.c): the body's nodes
 * become one statement each, in order, at every output element, so intermediates live in
 * registers and never touch memory.
 *
 * Body input k is node input k (loaded as x<k>); body node results are locals v<id> of their
 * compute types; a body constant of one element is a literal; body outputs become y<k>.
 * Broadcasting inside the body needs nothing: every node input is read at its broadcast index
 * of the output element, and elementwise ops commute with broadcasting.
 * Invariants: only elementwise / broadcast ops and one-element constants may appear in a body;
 * anything else is KC_ERR_UNSUPPORTED naming the body node.
 */
#include "codegen/cuda/emit.h"

#include <stdlib.h>

/* The C name of body value v (NULL when the body never defined it). */
static const char *name_of(kc_cuda_emit *e, const kc_graph *b, kc_val v) {
  for (uint32_t k = 0; k < b->ninputs; k++)
    if (b->inputs[k].id == v.id) return kc_cu_fmt(e, "x%u", k);
  return kc_cu_fmt(e, "v%u", v.id);
}

static kc_status body_constant(kc_cuda_emit *e, const kc_graph *b, const kc_node *bn) {
  const kc_value *v = kc_value_of(b, bn->out[0]);
  const kc_attr *a = kc_node_attr(bn, "value");
  const kc_tensor *t =
      a && a->kind == KC_ATTR_TENSOR && a->u.tensor < b->ntensors ? &b->tensors[a->u.tensor] : NULL;
  if (!t || !t->data || kc_value_numel(b, bn->out[0]) != 1 || t->dtype != v->dtype)
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "fused body constant %%%u is not one element",
                      bn->out[0].id);
  kc_cu_printf(e->t, "    const %s v%u = %s;\n", kc_cu_ctype(v->dtype), bn->out[0].id,
               kc_cu_literal(e, v->dtype, t->data));
  return KC_OK;
}

static kc_status body_op(kc_cuda_emit *e, const kc_graph *b, const kc_node *bn) {
  kc_op_class c = kc_ops[bn->op].cls;
  if ((c != KC_CLASS_ELEMWISE && c != KC_CLASS_BROADCAST) || bn->nout < 1 || !bn->out[0].id ||
      bn->nin > 16)
    return kc_cu_fail(e, KC_ERR_UNSUPPORTED, "%s (%%%u) inside a fused region", kc_ops[bn->op].name,
                      bn->out[0].id);
  const char *args[16];
  for (uint32_t i = 0; i < bn->nin; i++)
    args[i] = bn->in[i].id ? name_of(e, b, bn->in[i]) : NULL;
  kc_dtype in = kc_value_of(b, bn->in[0])->dtype, out = kc_value_of(b, bn->out[0])->dtype;
  char *expr = malloc(8192);
  if (!expr) return kc_cu_fail(e, KC_ERR_NOMEM, "out of memory");
  kc_status s = kc_cu_scalar(bn, in, out, args, bn->nin, expr, 8192);
  if (s == KC_OK)
    kc_cu_printf(e->t, "    const %s v%u = %s;\n", kc_cu_ctype(out), bn->out[0].id, expr);
  free(expr);
  if (s != KC_OK)
    return kc_cu_fail(e, s, "no CUDA math for %s (%%%u) on %s -> %s in a fused region",
                      kc_ops[bn->op].name, bn->out[0].id, kc_dtype_name(in), kc_dtype_name(out));
  return KC_OK;
}

static kc_status fused_body(kc_cuda_emit *e, void *user) {
  const kc_graph *b = user;
  kc_status s = KC_OK;
  for (uint32_t i = 0; i < b->nnodes && s == KC_OK; i++) {
    const kc_node *bn = &b->nodes[i];
    if (bn->op == KC_OP_NOP) continue;
    s = bn->op == KC_OP_CONSTANT ? body_constant(e, b, bn) : body_op(e, b, bn);
  }
  for (uint32_t k = 0; k < b->noutputs && s == KC_OK; k++) {
    if (k >= e->n->nout || !e->n->out[k].id) continue;
    kc_cu_printf(e->t, "    const %s y%u = %s;\n", kc_cu_ctype(kc_cu_val(e, true, k)->dtype), k,
                 name_of(e, b, b->outputs[k].v));
  }
  return s;
}

kc_status kc_cuda_lower_fused(kc_cuda_emit *e) {
  const kc_graph *b = e->n->body;
  if (!b) return kc_cu_fail(e, KC_ERR_INVALID_ARG, "fused node without a body");
  if (b->ninputs != e->n->nin || b->noutputs != e->n->nout)
    return kc_cu_fail(e, KC_ERR_INVALID_ARG, "body has %u inputs and %u outputs for %u and %u",
                      b->ninputs, b->noutputs, e->n->nin, e->n->nout);
  return kc_cu_elementwise(e, fused_body, (void *)b);
}

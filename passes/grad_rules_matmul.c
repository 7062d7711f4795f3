/*
 * passes/grad_rules_matmul.c - gradient rules (ir/ops.def GRAD column) of the contractions:
 * matmul (numpy semantics: 1-D operands, broadcast batch dims), gemm, and the fused matmul_ep
 * (differentiated as its composition matmul + bias, activation, * scale, + residual).
 *
 * For y = a @ b: da = dy @ b^T and db = a^T @ dy, each summed over the batch dims the operand
 * was broadcast along; a 1-D operand is made 2-D (as numpy does) and squeezed back.
 */
#include "passes/grad.h"

#define G (c->g)
#define DY (c->dout[0])

static kc_val mm_scale(kc_graph *g, kc_val x, double s) {
  return s == 1.0 ? x : kc_mul(g, x, kc_gu_like(g, x, s));
}

kc_status kc_grad_matmul(kc_grad_call *c) {
  kc_val a = c->n.in[0], b = c->n.in[1], d = DY;
  int ra = kc_value_of(G, a)->rank, rb = kc_value_of(G, b)->rank;
  int64_t zero = 0, one = 1;
  if (rb == 1) {
    int64_t ax = kc_value_of(G, d)->rank;
    d = kc_unsqueeze(G, d, 1, &ax);
    b = kc_unsqueeze(G, b, 1, &one);
  }
  if (ra == 1) {
    int64_t ax = kc_value_of(G, d)->rank - 1;
    d = kc_unsqueeze(G, d, 1, &ax);
    a = kc_unsqueeze(G, a, 1, &zero);
  }
  if (G->sticky != KC_OK) return G->sticky;
  if (c->want[0]) {
    kc_val da = kc_gu_unbroadcast(G, kc_matmul(G, d, kc_gu_transpose_last2(G, b)), a);
    c->din[0] = ra == 1 ? kc_squeeze(G, da, 1, &zero) : da;
  }
  if (c->want[1]) {
    kc_val db = kc_gu_unbroadcast(G, kc_matmul(G, kc_gu_transpose_last2(G, a), d), b);
    c->din[1] = rb == 1 ? kc_squeeze(G, db, 1, &one) : db;
  }
  return KC_OK;
}

/* y = alpha op(A) op(B) + beta C (2-D; op transposes when transA/transB) */
kc_status kc_grad_gemm(kc_grad_call *c) {
  kc_val a = c->n.in[0], b = c->n.in[1];
  double alpha = kc_node_float(&c->n, "alpha", 1.0), beta = kc_node_float(&c->n, "beta", 1.0);
  int ta = (int)kc_node_int(&c->n, "transA", 0), tb = (int)kc_node_int(&c->n, "transB", 0);
  kc_val d = mm_scale(G, DY, alpha);
  kc_val ao = ta ? kc_gu_transpose_last2(G, a) : a; /* op(A), op(B) as used */
  kc_val bo = tb ? kc_gu_transpose_last2(G, b) : b;
  if (c->want[0]) {
    kc_val dao = kc_matmul(G, d, kc_gu_transpose_last2(G, bo));
    c->din[0] = ta ? kc_gu_transpose_last2(G, dao) : dao;
  }
  if (c->want[1]) {
    kc_val dbo = kc_matmul(G, kc_gu_transpose_last2(G, ao), d);
    c->din[1] = tb ? kc_gu_transpose_last2(G, dbo) : dbo;
  }
  if (c->n.nin > 2 && c->want[2])
    c->din[2] = kc_gu_unbroadcast(G, mm_scale(G, DY, beta), c->n.in[2]);
  return KC_OK;
}

/* matmul_ep(a, b, bias?, residual?, scale?) = act(a @ b + bias) * scale + residual, rebuilt
 * from primitives and differentiated through them (the recomputed a @ b + bias is what the
 * activation needs; the scale's adjoint needs act(...) too). */
kc_status kc_grad_matmul_ep(kc_grad_call *c) {
  uint32_t first = G->nnodes;
  kc_val in[5] = {0};
  for (uint32_t i = 0; i < c->n.nin && i < 5; i++)
    in[i] = c->n.in[i];
  kc_val z = kc_matmul(G, in[0], in[1]);
  if (in[2].id) z = kc_add(G, z, in[2]);
  const char *act = kc_node_string(&c->n, "act", "none");
  if (act[0] == 'r')
    z = kc_relu(G, z);
  else if (act[0] == 'g')
    z = kc_gelu(G, z, act[4] == '_');
  if (in[4].id) z = kc_mul(G, z, in[4]);
  if (in[3].id) z = kc_add(G, z, in[3]);
  if (G->sticky != KC_OK) return G->sticky;
  return kc_grad_local(G, first, 1, &z, &DY, c->n.nin, c->n.in, c->want, c->din);
}

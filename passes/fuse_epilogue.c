/*
 * passes/fuse_epilogue.c - the fuse-epilogue pass: what follows a matrix product elementwise
 * (a bias per output column, an activation, a per-column scale, a residual) moves into the
 * product's epilogue, matmul_ep(a, b, bias?, residual?, scale?) {act} =
 * act(a @ b + bias) * scale + residual, so the output is written once instead of read and
 * written by every following op.
 *
 * The rules grow the epilogue one step at a time, each a small declarative pattern run to a
 * fixpoint, so the optional parts need no pattern per combination:
 *   - gemm with alpha = beta = 1 and no transA becomes matmul / matmul_ep (transB = 1 reads b
 *     transposed: the transpose of a constant or weight is made here, at compile time, and a
 *     transpose node in front of b is dropped);
 *   - reshape(product(reshape(x, [M, K]), b), [..., N]) (a Linear on flattened rows, as GPT-2's
 *     Conv1D exports) becomes the product of x itself, so what follows the reshape is adjacent;
 *   - add(product, r): r is the bias when it is one value per column (shape [N], [1, N], a
 *     scalar) and the product has no bias and no activation yet, else the residual;
 *   - relu / gelu / gelu {tanh} of a product without activation, scale and residual becomes its
 *     act;
 *   - mul(product, s) with s one value per output column (a vector of N: ViT / DINOv2's layer
 *     scale, x + gamma * (h @ W + b)) of a product without scale and residual becomes its scale;
 *     then an add after it is the residual (never the bias, which comes before the scale).
 *
 * Invariants: a product keeps one bias, one activation, one scale and one residual, applied in
 * the order the op defines (bias, act, scale, residual), each step rounded as the separate op
 * rounds it, so fused and unfused graphs agree to the bit; a rule never moves an op past
 * another; the driver
 * rejects a replacement whose type differs (an add that broadcasts the product to a larger
 * shape, a bias that does not fit), so those stay unfused.
 */
#include "passes/internal.h"
#include "passes/match.h"

#include <stdlib.h>
#include <string.h>

/* Capture slots. */
enum { A, W, R, X, S };

/* ---- helpers -------------------------------------------------------------------------------- */

/* One value per output column of y: rank at most y's, last dim y's last (or 1), others 1. */
static bool per_column(const kc_graph *g, kc_val r, kc_val y) {
  const kc_value *vr = kc_value_of(g, r), *vy = kc_value_of(g, y);
  if (vr->rank < 0 || vr->rank > vy->rank || vy->rank < 1) return false;
  for (int i = 0; i + 1 < vr->rank; i++)
    if (vr->dims[i] != 1) return false;
  kc_dim last = vr->rank ? vr->dims[vr->rank - 1] : 1;
  return last == 1 || kc_dim_same(g, last, vy->dims[vy->rank - 1]);
}

/* The epilogue a product node already has. */
typedef struct epi {
  kc_val bias, res, scale;
  const char *act;
} epi;

#define NO_EPI ((epi){{0}, {0}, {0}, "none"})

static epi epilogue_of(const kc_node *n) {
  epi e = NO_EPI;
  if (n->op != KC_OP_MATMUL_EP) return e;
  if (n->nin > 2) e.bias = n->in[2];
  if (n->nin > 3) e.res = n->in[3];
  if (n->nin > 4) e.scale = n->in[4];
  e.act = kc_node_string(n, "act", "none");
  return e;
}

/* matmul(a, b) when the epilogue is empty, else matmul_ep(a, b, bias?, residual?, scale?)
 * {act}. */
static kc_val product(kc_rewriter *rw, kc_val a, kc_val b, epi e) {
  kc_graph *g = kc_rw_graph(rw);
  bool none = strcmp(e.act, "none") == 0;
  kc_val in[5] = {a, b, e.bias, e.res, e.scale}, out;
  uint32_t nin = e.scale.id ? 5 : e.res.id ? 4 : e.bias.id ? 3 : 2;
  kc_op op = nin == 2 && none ? KC_OP_MATMUL : KC_OP_MATMUL_EP;
  uint32_t ni = kc_rw_node(rw, op, nin, in, 1, &out);
  if (ni == UINT32_MAX) return (kc_val){0};
  if (!none) kc_node_set_string(g, ni, "act", e.act);
  return out;
}

/* A new weight (named after t, ".T" and a number when taken) holding data of t's type. */
static kc_val new_weight(kc_rewriter *rw, const kc_tensor *t, const int64_t *dims,
                         const void *data) {
  kc_graph *g = kc_rw_graph(rw);
  char name[512];
  bool taken = true;
  for (int k = 0; taken; k++) {
    if (k)
      snprintf(name, sizeof name, "%s.T.%d", t->name, k);
    else
      snprintf(name, sizeof name, "%s.T", t->name);
    taken = false;
    for (uint32_t i = 0; i < g->ntensors && !taken; i++)
      taken = g->tensors[i].name && strcmp(g->tensors[i].name, name) == 0;
  }
  if (kc_graph_add_tensor(g, name, t->dtype, 2, dims, data, true) == UINT32_MAX) return (kc_val){0};
  kc_val out;
  uint32_t ni = kc_rw_node(rw, KC_OP_WEIGHT, 0, NULL, 1, &out);
  if (ni == UINT32_MAX) return (kc_val){0};
  kc_node_set_string(g, ni, "name", name);
  return kc_rw_infer(rw, ni) == KC_OK ? out : (kc_val){0};
}

/* b^T for a gemm with transB = 1: the input of a transpose in front of b, or b's data
 * transposed into a new constant or weight; {0} with the reason in why. */
static kc_val transposed(kc_rewriter *rw, kc_val b, const char **why) {
  const kc_graph *g = kc_rw_graph(rw);
  uint32_t def = g->vals[b.id].def;
  const kc_node *n = def ? &g->nodes[def - 1] : NULL;
  if (n && n->op == KC_OP_TRANSPOSE && kc_value_of(g, n->in[0])->rank == 2) {
    const kc_attr *p = kc_node_attr(n, "perm");
    if (!p || (p->kind == KC_ATTR_INTS && p->u.ints.n == 2 && p->u.ints.v[0] == 1)) return n->in[0];
  }
  const kc_tensor *t = kc_source_tensor(g, b);
  if (!t || t->rank != 2) {
    *why = "transB=1 and b is computed at run time (gemm reads it transposed for free)";
    return (kc_val){0};
  }
  size_t es = kc_dtype_size(t->dtype), rows = (size_t)t->dims[0], cols = (size_t)t->dims[1];
  unsigned char *buf = malloc(rows * cols * es + 1);
  if (!buf) {
    kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in fuse-epilogue");
    *why = "out of memory";
    return (kc_val){0};
  }
  const unsigned char *src = t->data;
  for (size_t i = 0; i < rows; i++)
    for (size_t j = 0; j < cols; j++)
      memcpy(buf + (j * rows + i) * es, src + (i * cols + j) * es, es);
  int64_t dims[2] = {t->dims[1], t->dims[0]};
  kc_val v = t->name ? new_weight(rw, t, dims, buf) : kc_rw_const(rw, t->dtype, 2, dims, buf);
  free(buf);
  if (!v.id) *why = "out of memory";
  return v;
}

/* ---- gemm ----------------------------------------------------------------------------------- */

static bool plain_gemm(const kc_graph *g, const kc_node *n, char *why, size_t size) {
  (void)g;
  double alpha = kc_node_float(n, "alpha", 1.0), beta = kc_node_float(n, "beta", 1.0);
  bool c = n->nin > 2 && n->in[2].id;
  if (alpha != 1.0 || (c && beta != 1.0)) {
    snprintf(why, size, "alpha=%g, beta=%g (1 wanted)", alpha, beta);
    return false;
  }
  if (kc_node_int(n, "transA", 0)) {
    snprintf(why, size, "transA=1");
    return false;
  }
  return true;
}

/* gemm(a, b, c?) {alpha=1, beta=1, transA=0, transB}  ->  matmul_ep(a, transB ? b^T : b, c)
 * with c the bias when it is one value per column, else the residual; matmul(a, b) without c */
static const kc_pat gemm[] = {
    P_OPIF(GEMM, plain_gemm, P_CAP(A), P_CAP(W), P_ANY),
};

static kc_status from_gemm(kc_rewriter *rw, const kc_match *m) {
  const kc_graph *g = kc_rw_graph(rw);
  const kc_node *n = &g->nodes[m->node[0]];
  kc_val c = n->nin > 2 ? n->in[2] : (kc_val){0}, y = kc_rw_out(rw, m, 0, 0);
  kc_val b = m->cap[W];
  if (kc_node_int(n, "transB", 0)) {
    const char *why = "";
    if (!(b = transposed(rw, b, &why)).id) return kc_rw_decline(rw, "%s", why);
  }
  epi e = NO_EPI;
  if (c.id && per_column(g, c, y))
    e.bias = c;
  else
    e.res = c;
  kc_rw_replace(rw, y, product(rw, m->cap[A], b, e));
  return KC_OK;
}

/* ---- flattened rows ------------------------------------------------------------------------- */

/* reshape(matmul|matmul_ep(reshape(x, [M, K]), b [K, N], bias?, -, scale?) {act}, [..., N])
 * giving x's leading dims  ->  matmul|matmul_ep(x, b, bias?, -, scale?) {act} */
static const kc_pat unflatten[] = {
    P_OP(RESHAPE, P_SUB(1), P_ANY),
    P_OP2(MATMUL, MATMUL_EP, P_SUB(2), P_CAP(W), P_REST),
    P_OP(RESHAPE, P_CAP(X), P_ANY),
};

static kc_status to_rows(kc_rewriter *rw, const kc_match *m) {
  const kc_graph *g = kc_rw_graph(rw);
  const kc_node *mm = &g->nodes[m->node[1]];
  epi e = epilogue_of(mm);
  const kc_value *a = kc_value_of(g, mm->in[0]), *b = kc_value_of(g, m->cap[W]);
  const kc_value *x = kc_value_of(g, m->cap[X]);
  if (a->rank != 2 || b->rank != 2)
    return kc_rw_decline(rw, "a product of rank %d by rank %d, not two matrices", a->rank, b->rank);
  if (e.res.id) return kc_rw_decline(rw, "the product has a residual of the flattened shape");
  if (x->rank < 1 || !kc_dim_same(g, x->dims[x->rank - 1], a->dims[1]))
    return kc_rw_decline(rw, "the flattening reshape regroups rows (last dim is not K)");
  kc_rw_replace(rw, kc_rw_out(rw, m, 0, 0), product(rw, m->cap[X], m->cap[W], e));
  return KC_OK;
}

/* ---- bias and residual ---------------------------------------------------------------------- */

/* add(matmul|matmul_ep(a, b, bias?, -, scale?) {act}, r)  ->  matmul_ep(a, b, r) when r is
 * one value per column and the product has no bias, act or scale yet, else
 * matmul_ep(a, b, bias?, r, scale?) {act} */
static const kc_pat add[] = {
    P_OP(ADD, P_SUB(1), P_CAP(R)),
    P_OP2(MATMUL, MATMUL_EP, P_CAP(A), P_CAP(W), P_REST),
};

static kc_status take_add(kc_rewriter *rw, const kc_match *m) {
  const kc_graph *g = kc_rw_graph(rw);
  epi e = epilogue_of(&g->nodes[m->node[1]]);
  if (e.res.id) return kc_rw_decline(rw, "the product has a residual already");
  kc_val y = kc_rw_out(rw, m, 0, 0);
  if (!e.bias.id && !e.scale.id && strcmp(e.act, "none") == 0 && per_column(g, m->cap[R], y))
    e.bias = m->cap[R];
  else
    e.res = m->cap[R];
  kc_rw_replace(rw, y, product(rw, m->cap[A], m->cap[W], e));
  return KC_OK;
}

/* ---- activation ----------------------------------------------------------------------------- */

/* relu|gelu(matmul|matmul_ep(a, b, bias?))  ->  matmul_ep(a, b, bias?) {act=relu|gelu|gelu_tanh} */
static const kc_pat act[] = {
    P_OP2(RELU, GELU, P_SUB(1)),
    P_OP2(MATMUL, MATMUL_EP, P_CAP(A), P_CAP(W), P_REST),
};

static kc_status take_act(kc_rewriter *rw, const kc_match *m) {
  const kc_graph *g = kc_rw_graph(rw);
  const kc_node *n = &g->nodes[m->node[0]];
  epi e = epilogue_of(&g->nodes[m->node[1]]);
  if (strcmp(e.act, "none") != 0) return kc_rw_decline(rw, "the product has act=%s already", e.act);
  if (e.res.id) return kc_rw_decline(rw, "the product adds a residual before it");
  if (e.scale.id) return kc_rw_decline(rw, "the product scales before it");
  if (n->op == KC_OP_RELU) {
    e.act = "relu";
  } else {
    const char *approx = kc_node_string(n, "approximate", "none");
    if (strcmp(approx, "none") != 0 && strcmp(approx, "tanh") != 0)
      return kc_rw_decline(rw, "gelu approximate=\"%s\"", approx);
    e.act = strcmp(approx, "tanh") == 0 ? "gelu_tanh" : "gelu";
  }
  kc_rw_replace(rw, kc_rw_out(rw, m, 0, 0), product(rw, m->cap[A], m->cap[W], e));
  return KC_OK;
}

/* ---- scale ---------------------------------------------------------------------------------- */

/* mul(matmul|matmul_ep(a, b, bias?) {act}, s) with s a vector of N (one value per output column,
 * not a splat)  ->  matmul_ep(a, b, bias?, -, s) {act} */
static const kc_pat scale[] = {
    P_OP(MUL, P_SUB(1), P_CAP(S)),
    P_OP2(MATMUL, MATMUL_EP, P_CAP(A), P_CAP(W), P_REST),
};

static kc_status take_scale(kc_rewriter *rw, const kc_match *m) {
  const kc_graph *g = kc_rw_graph(rw);
  epi e = epilogue_of(&g->nodes[m->node[1]]);
  if (e.res.id) return kc_rw_decline(rw, "the product adds a residual before it");
  if (e.scale.id) return kc_rw_decline(rw, "the product has a scale already");
  kc_val y = kc_rw_out(rw, m, 0, 0), s = m->cap[S];
  const kc_value *vs = kc_value_of(g, s);
  /* a scalar factor is not a layer scale: attention's and others' patterns expect it as a mul */
  if (!per_column(g, s, y) || vs->rank < 1 || vs->dims[vs->rank - 1] == 1)
    return kc_rw_decline(rw, "the factor is not a vector of one value per output column");
  e.scale = s;
  kc_rw_replace(rw, y, product(rw, m->cap[A], m->cap[W], e));
  return KC_OK;
}

static const kc_rule rules[] = {
    KC_RULE("epilogue-gemm", gemm, from_gemm),    KC_RULE("epilogue-unflatten", unflatten, to_rows),
    KC_RULE("epilogue-add", add, take_add),       KC_RULE("epilogue-act", act, take_act),
    KC_RULE("epilogue-scale", scale, take_scale),
};

static kc_status run(kc_graph *g, kc_pass_ctx *pc) {
  return kc_rules_run(g, pc, rules, KC_LEN(rules), true);
}

const kc_pass kc_pass_fuse_epilogue = {
    "fuse-epilogue", run,
    "matmul_ep: bias, relu/gelu, per-column scale and residual after a matmul or gemm join its "
    "epilogue"};

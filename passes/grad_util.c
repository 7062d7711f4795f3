/*
 * passes/grad_util.c - helpers the gradient rules share (passes/grad.h): typed scalar constants,
 * zeros, un-broadcasting an adjoint back to an input's shape, shape tensors for symbolic dims.
 *
 * Invariants: every helper only appends nodes through the builder, so program order holds and
 * a failure is the graph's sticky error (the helper then returns kc_val{0}).
 */
#include "passes/grad.h"

#include <string.h>

kc_val kc_gu_scalar(kc_graph *g, kc_dtype t, double v) {
  switch (t) {
  case KC_F64: return kc_constant(g, KC_F64, 0, NULL, &v);
  case KC_F16: {
    uint16_t h = kc_f32_to_f16((float)v);
    return kc_constant(g, KC_F16, 0, NULL, &h);
  }
  case KC_BF16: {
    uint16_t h = kc_f32_to_bf16((float)v);
    return kc_constant(g, KC_BF16, 0, NULL, &h);
  }
  default: {
    float f = (float)v;
    return kc_constant(g, KC_F32, 0, NULL, &f);
  }
  }
}

kc_val kc_gu_like(kc_graph *g, kc_val like, double v) {
  if (!like.id) return (kc_val){0};
  return kc_gu_scalar(g, kc_value_of(g, like)->dtype, v);
}

kc_val kc_gu_zeros(kc_graph *g, kc_val like) {
  if (!like.id) return (kc_val){0};
  kc_val z = kc_gu_like(g, like, 0.0);
  if (kc_value_of(g, like)->rank == 0) return z;
  return kc_expand(g, z, kc_shape(g, like));
}

kc_val kc_gu_accum(kc_graph *g, kc_val a, kc_val b) {
  if (!a.id) return b;
  if (!b.id) return a;
  return kc_add(g, a, b);
}

int kc_gu_axis(int64_t axis, int rank) { return (int)(axis < 0 ? axis + rank : axis); }

kc_val kc_gu_sum_axis(kc_graph *g, kc_val x, int64_t axis) {
  return kc_reduce_sum(g, x, 1, &axis, 1);
}

kc_val kc_gu_unbroadcast(kc_graph *g, kc_val d, kc_val x) {
  if (!d.id || !x.id) return (kc_val){0};
  int rd = kc_value_of(g, d)->rank, rx = kc_value_of(g, x)->rank;
  if (rd > rx) {
    int64_t axes[KC_MAX_RANK];
    for (int i = 0; i < rd - rx; i++)
      axes[i] = i;
    d = kc_reduce_sum(g, d, rd - rx, axes, 0);
    if (!d.id) return d;
  }
  int64_t axes[KC_MAX_RANK];
  int n = 0;
  for (int i = 0; i < rx; i++) {
    kc_dim dx = kc_value_of(g, x)->dims[i], dd = kc_value_of(g, d)->dims[i];
    if (dx == 1 && dd != 1) axes[n++] = i;
  }
  if (n) d = kc_reduce_sum(g, d, n, axes, 1);
  return d;
}

kc_val kc_gu_transpose_last2(kc_graph *g, kc_val x) {
  int r = kc_value_of(g, x)->rank;
  int64_t perm[KC_MAX_RANK];
  for (int i = 0; i < r; i++)
    perm[i] = i;
  perm[r - 2] = r - 1;
  perm[r - 1] = r - 2;
  return kc_transpose(g, x, r, perm);
}

bool kc_gu_known_ints(const kc_graph *g, kc_val v, int64_t *out, uint32_t max, uint32_t *n) {
  uint32_t k = 0;
  const kc_dim *kn = v.id ? kc_value_known(g, v, &k) : NULL;
  if (!kn || k > max) return false;
  for (uint32_t i = 0; i < k; i++)
    if (!kc_dim_const(g, kn[i], &out[i])) return false;
  *n = k;
  return true;
}

/* A value already in g (a graph input first, then any typed node result) with dim d at some
 * position; its index in *pos. */
static kc_val find_dim(const kc_graph *g, kc_dim d, int *pos) {
  for (uint32_t i = 0; i < g->ninputs; i++) {
    const kc_value *v = kc_value_of(g, g->inputs[i]);
    for (int j = 0; j < v->rank; j++)
      if (v->dims[j] == d) {
        *pos = j;
        return g->inputs[i];
      }
  }
  for (uint32_t ni = 0; ni < g->nnodes; ni++) {
    const kc_node *n = &g->nodes[ni];
    if (n->op == KC_OP_NOP) continue;
    for (uint32_t k = 0; k < n->nout; k++) {
      if (!n->out[k].id) continue;
      const kc_value *v = kc_value_of(g, n->out[k]);
      for (int j = 0; j < v->rank; j++)
        if (v->dims[j] == d) {
          *pos = j;
          return n->out[k];
        }
    }
  }
  return (kc_val){0};
}

/* An i64[1] tensor holding dim d. */
static kc_val dim_tensor(kc_graph *g, kc_dim d) {
  int64_t c;
  if (kc_dim_const(g, d, &c)) return kc_const_i64s(g, 1, &c);
  int pos;
  kc_val src = find_dim(g, d, &pos);
  if (src.id) {
    int64_t s = pos, e = pos + 1;
    return kc_slice(g, kc_shape(g, src), kc_const_i64s(g, 1, &s), kc_const_i64s(g, 1, &e),
                    (kc_val){0}, (kc_val){0});
  }
  const kc_dexpr *x = &g->dexprs[KC_DIM_EXPR(d)];
  switch (x->kind) {
  case KC_DX_MUL: return kc_mul(g, dim_tensor(g, x->a), dim_tensor(g, x->b));
  case KC_DX_ADD: return kc_add(g, dim_tensor(g, x->a), dim_tensor(g, x->b));
  case KC_DX_DIV: return kc_div(g, dim_tensor(g, x->a), dim_tensor(g, x->b));
  default: {
    char buf[128];
    kc_graph_fail(g, kc_errorf(g->ctx, KC_ERR_UNSUPPORTED,
                               "autodiff: no value of the graph has size %s to build a shape from",
                               kc_dim_str(g, d, buf, sizeof buf)));
    return (kc_val){0};
  }
  }
}

kc_val kc_gu_shape_of_dims(kc_graph *g, int rank, const kc_dim *dims) {
  int64_t c[KC_MAX_RANK];
  bool all = true;
  for (int i = 0; i < rank; i++)
    all = all && kc_dim_const(g, dims[i], &c[i]);
  if (all) return kc_const_i64s(g, rank, c);
  kc_val parts[KC_MAX_RANK];
  for (int i = 0; i < rank; i++)
    parts[i] = dim_tensor(g, dims[i]);
  return rank == 1 ? parts[0] : kc_concat(g, rank, parts, 0);
}

uint32_t kc_gu_node(kc_graph *g, kc_op op, uint32_t nin, const kc_val *in, uint32_t nout,
                    kc_val *outs, const kc_node *like) {
  if (g->sticky != KC_OK) return UINT32_MAX;
  for (uint32_t i = 0; i < nin; i++)
    if (in[i].id >= g->nvals) {
      kc_graph_fail(g, KC_ERR_INTERNAL);
      return UINT32_MAX;
    }
  uint32_t ni = kc_graph_add_node(g, op, nin, in, nout, outs);
  if (ni == UINT32_MAX) {
    kc_graph_fail(g, KC_ERR_NOMEM);
    return ni;
  }
  if (like && like->nattr) {
    /* same graph: names, strings, arrays and tensor indices can be shared */
    kc_attr *a = kc_arena_memdup(&g->arena, like->attrs, like->nattr * sizeof *a);
    if (!a) {
      kc_graph_fail(g, KC_ERR_NOMEM);
      g->nodes[ni].op = KC_OP_NOP;
      return UINT32_MAX;
    }
    g->nodes[ni].attrs = a;
    g->nodes[ni].nattr = like->nattr;
    g->nodes[ni].loc = like->loc;
  }
  return ni;
}

kc_val kc_gu_finish(kc_graph *g, uint32_t ni) {
  if (ni == UINT32_MAX) return (kc_val){0};
  kc_status s = kc_node_infer(g, ni);
  if (s != KC_OK) {
    g->nodes[ni].op = KC_OP_NOP;
    kc_graph_fail(g, s);
    return (kc_val){0};
  }
  return g->nodes[ni].out[0];
}

/*
 * passes/grad_rules_movement.c - gradient rules (ir/ops.def GRAD column) of the data movement
 * ops: reshape / flatten / squeeze / unsqueeze, transpose, expand, concat, split, slice, gather,
 * scatter_add, trilu.
 *
 * Views reshape the adjoint back to the input's shape; transpose applies the inverse
 * permutation; expand sums over the broadcast axes; concat splits the adjoint and split
 * concatenates its results' adjoints (zeros for unused results); slice pads the adjoint with
 * zeros (step 1 only, bounds known when the gradient is built). gather's adjoint is the
 * scatter_add op (its kernels sum repeated indices in index order: a fixed order, the same for
 * any thread count), and scatter_add's is a gather.
 */
#include "passes/grad.h"

#include <stdint.h>

#define G (c->g)
#define DY (c->dout[0])
#define X (c->n.in[0])

kc_status kc_grad_reshape(kc_grad_call *c) {
  c->din[0] = kc_reshape(G, DY, kc_shape(G, X));
  return KC_OK;
}

kc_status kc_grad_transpose(kc_grad_call *c) {
  int r = kc_value_of(G, X)->rank;
  int64_t perm[KC_MAX_RANK], inv[KC_MAX_RANK];
  const kc_attr *a = kc_node_attr(&c->n, "perm");
  for (int i = 0; i < r; i++)
    perm[i] = a ? a->u.ints.v[i] : r - 1 - i;
  for (int i = 0; i < r; i++)
    inv[kc_gu_axis(perm[i], r)] = i;
  c->din[0] = kc_transpose(G, DY, r, inv);
  return KC_OK;
}

kc_status kc_grad_expand(kc_grad_call *c) {
  c->din[0] = kc_gu_unbroadcast(G, DY, X);
  return KC_OK;
}

kc_status kc_grad_trilu(kc_grad_call *c) {
  kc_val in[2] = {DY, c->n.nin > 1 ? c->n.in[1] : (kc_val){0}};
  c->din[0] = kc_gu_finish(G, kc_gu_node(G, KC_OP_TRILU, in[1].id ? 2 : 1, in, 1, NULL, &c->n));
  return KC_OK;
}

/* concat: split the adjoint at the inputs' sizes along the axis */
kc_status kc_grad_concat(kc_grad_call *c) {
  uint32_t n = c->n.nin;
  int r = kc_value_of(G, X)->rank;
  int axis = kc_gu_axis(kc_node_int(&c->n, "axis", 0), r);
  kc_dim sizes[KC_GRAD_MAX_IO];
  for (uint32_t i = 0; i < n; i++)
    sizes[i] = kc_value_of(G, c->n.in[i])->dims[axis];
  kc_val in[2] = {DY, kc_gu_shape_of_dims(G, (int)n, sizes)};
  if (n > KC_MAX_RANK) { /* kc_gu_shape_of_dims takes at most KC_MAX_RANK dims */
    int64_t v[KC_GRAD_MAX_IO];
    for (uint32_t i = 0; i < n; i++)
      if (!kc_dim_const(G, sizes[i], &v[i]))
        return kc_node_errorf(G, &G->nodes[c->node], KC_ERR_UNSUPPORTED,
                              "autodiff: concat of more than %d symbolic sizes", KC_MAX_RANK);
    in[1] = kc_const_i64s(G, (int)n, v);
  }
  kc_val outs[KC_GRAD_MAX_IO];
  uint32_t ni = kc_gu_node(G, KC_OP_SPLIT, 2, in, n, outs, NULL);
  if (ni != UINT32_MAX) kc_node_set_int(G, ni, "axis", axis);
  if (!kc_gu_finish(G, ni).id) return G->sticky;
  for (uint32_t i = 0; i < n; i++)
    c->din[i] = outs[i];
  return KC_OK;
}

/* split: concatenate the results' adjoints (zeros where a result is unused) */
kc_status kc_grad_split(kc_grad_call *c) {
  kc_val parts[KC_GRAD_MAX_IO];
  for (uint32_t j = 0; j < c->n.nout; j++)
    parts[j] = c->dout[j].id ? c->dout[j] : kc_gu_zeros(G, c->n.out[j]);
  int r = kc_value_of(G, X)->rank;
  c->din[0] = kc_concat(G, (int)c->n.nout, parts, kc_gu_axis(kc_node_int(&c->n, "axis", 0), r));
  return KC_OK;
}

/* slice: zeros before and after the slice on each sliced axis (step 1) */
kc_status kc_grad_slice(kc_grad_call *c) {
  int r = kc_value_of(G, X)->rank;
  int64_t st[KC_MAX_RANK], en[KC_MAX_RANK], ax[KC_MAX_RANK], sp[KC_MAX_RANK];
  uint32_t ns = 0, ne = 0, na = 0, nsp = 0;
  bool ok = kc_gu_known_ints(G, c->n.in[1], st, KC_MAX_RANK, &ns) &&
            kc_gu_known_ints(G, c->n.in[2], en, KC_MAX_RANK, &ne) && ns == ne;
  if (ok && c->n.nin > 3 && c->n.in[3].id)
    ok = kc_gu_known_ints(G, c->n.in[3], ax, KC_MAX_RANK, &na) && na == ns;
  else
    for (na = 0; na < ns; na++)
      ax[na] = na;
  if (ok && c->n.nin > 4 && c->n.in[4].id)
    ok = kc_gu_known_ints(G, c->n.in[4], sp, KC_MAX_RANK, &nsp) && nsp == ns;
  for (uint32_t i = 0; ok && i < nsp; i++)
    ok = sp[i] == 1;
  if (!ok)
    return kc_node_errorf(G, &G->nodes[c->node], KC_ERR_UNSUPPORTED,
                          "autodiff: slice needs known starts/ends/axes and steps of 1");
  kc_val d = DY;
  for (uint32_t i = 0; i < ns; i++) {
    int a = kc_gu_axis(ax[i], r);
    kc_dim D = kc_value_of(G, X)->dims[a], s, e;
    int64_t dn;
    if (kc_dim_const(G, D, &dn)) {
      int64_t s0 = st[i] < 0 ? st[i] + dn : st[i], e0 = en[i] < 0 ? en[i] + dn : en[i];
      s0 = s0 < 0 ? 0 : s0 > dn ? dn : s0;
      e0 = e0 < 0 ? 0 : e0 > dn ? dn : e0;
      if (e0 < s0) e0 = s0;
      s = s0;
      e = e0;
    } else { /* symbolic: bounds inside the dim, as shape inference assumed */
      s = st[i] < 0 ? kc_dim_add(G, D, kc_dim_int(G, st[i])) : st[i];
      e = en[i] >= INT32_MAX ? D : en[i] < 0 ? kc_dim_add(G, D, kc_dim_int(G, en[i])) : en[i];
    }
    kc_dim after = kc_dim_sub(G, D, e);
    kc_val parts[3];
    int np = 0;
    kc_dim dims[KC_MAX_RANK];
    kc_val_dims(G, d, dims);
    if (s != 0) {
      dims[a] = s;
      parts[np++] = kc_expand(G, kc_gu_like(G, DY, 0.0), kc_gu_shape_of_dims(G, r, dims));
    }
    parts[np++] = d;
    if (after != 0) {
      dims[a] = after;
      parts[np++] = kc_expand(G, kc_gu_like(G, DY, 0.0), kc_gu_shape_of_dims(G, r, dims));
    }
    if (np > 1) d = kc_concat(G, np, parts, a);
  }
  c->din[0] = d;
  return KC_OK;
}

/* gather(data, idx, axis): the adjoint is scatter_add(zeros like data, idx, dy), whose kernel
 * sums repeated indices in index order (a fixed order whatever the thread count). */
kc_status kc_grad_gather(kc_grad_call *c) {
  kc_val in[3] = {kc_gu_zeros(G, X), c->n.in[1], DY};
  c->din[0] = kc_gu_finish(G, kc_gu_node(G, KC_OP_SCATTER_ADD, 3, in, 1, NULL, &c->n));
  return KC_OK;
}

/* scatter_add(data, idx, upd): data's adjoint is dy, upd's is gather(dy, idx) */
kc_status kc_grad_scatter_add(kc_grad_call *c) {
  if (c->want[0]) c->din[0] = DY;
  if (c->want[2]) {
    kc_val in[2] = {DY, c->n.in[1]};
    c->din[2] = kc_gu_finish(G, kc_gu_node(G, KC_OP_GATHER, 2, in, 1, NULL, &c->n));
  }
  return KC_OK;
}

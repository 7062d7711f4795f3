/*
 * ir/shape_matmul.c - shape functions of contractions: matmul (numpy semantics, batch dims
 * broadcast, 1-D operands promoted and their unit dim dropped), gemm, and matmul_ep
 * (matmul with a bias / activation / scale / residual epilogue).
 *
 * Inner dims must agree; two different integers are an error, a symbol is trusted to match.
 */
#include "shape.h"

#include <string.h>

/* Output shape of a @ b for inputs ia, ib of n. */
static kc_status matmul_dims(kc_graph *g, kc_node *n, uint32_t ia, uint32_t ib, int *rank,
                             kc_dim *dims) {
  kc_status s = kc_shp_need_numeric(g, n, ia);
  if (s == KC_OK) s = kc_shp_same_dtype(g, n, ia, ib);
  if (s != KC_OK) return s;
  const kc_value *a = kc_value_of(g, n->in[ia]), *b = kc_value_of(g, n->in[ib]);
  if (a->rank == 0 || b->rank == 0)
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "matmul of a scalar (input %u)",
                          a->rank == 0 ? ia : ib);
  /* promote 1-D operands: [K] is [1,K] on the left, [K,1] on the right */
  kc_dim da[KC_MAX_RANK], db[KC_MAX_RANK];
  int ra = a->rank, rb = b->rank;
  if (ra == 1) {
    da[0] = 1;
    da[1] = a->dims[0];
    ra = 2;
  } else {
    memcpy(da, a->dims, (size_t)ra * sizeof *da);
  }
  if (rb == 1) {
    db[0] = b->dims[0];
    db[1] = 1;
    rb = 2;
  } else {
    memcpy(db, b->dims, (size_t)rb * sizeof *db);
  }
  kc_dim k1 = da[ra - 1], k2 = db[rb - 2];
  if (!kc_shp_dims_match(g, k1, k2)) {
    char sa[256], sb[256];
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "inner dims differ: %s @ %s",
                          kc_shp_fmt(g, a->rank, a->dims, sa, sizeof sa),
                          kc_shp_fmt(g, b->rank, b->dims, sb, sizeof sb));
  }
  int r;
  kc_dim batch[KC_MAX_RANK];
  s = kc_shp_bcast(g, n, ra - 2, da, rb - 2, db, &r, batch);
  if (s != KC_OK) return s;
  if (r + 2 > KC_MAX_RANK)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED, "result rank over %d", KC_MAX_RANK);
  memcpy(dims, batch, (size_t)r * sizeof *dims);
  if (a->rank > 1) dims[r++] = da[ra - 2];
  if (b->rank > 1) dims[r++] = db[rb - 1];
  *rank = r;
  return KC_OK;
}

kc_status shape_matmul(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  int rank;
  kc_dim dims[KC_MAX_RANK];
  if (s == KC_OK) s = matmul_dims(g, n, 0, 1, &rank, dims);
  if (s != KC_OK) return s;
  kc_shp_set(g, n, 0, kc_value_of(g, n->in[0])->dtype, rank, dims);
  return KC_OK;
}

kc_status shape_gemm(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  if (s == KC_OK) s = kc_shp_need_numeric(g, n, 0);
  if (s == KC_OK) s = kc_shp_same_dtype(g, n, 0, 1);
  if (s == KC_OK) s = kc_shp_same_dtype(g, n, 0, 2);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, 0, 2, 2);
  if (s == KC_OK) s = kc_shp_need_rank(g, n, 1, 2, 2);
  if (s != KC_OK) return s;
  const kc_value *a = kc_value_of(g, n->in[0]), *b = kc_value_of(g, n->in[1]);
  bool ta = kc_node_int(n, "transA", 0) != 0, tb = kc_node_int(n, "transB", 0) != 0;
  kc_dim m = a->dims[ta ? 1 : 0], ka = a->dims[ta ? 0 : 1];
  kc_dim kb = b->dims[tb ? 1 : 0], nn = b->dims[tb ? 0 : 1];
  if (!kc_shp_dims_match(g, ka, kb)) {
    char sa[256], sb[256];
    return kc_node_errorf(g, n, KC_ERR_SHAPE, "inner dims differ: %s%s @ %s%s",
                          kc_shp_fmt(g, 2, a->dims, sa, sizeof sa), ta ? "^T" : "",
                          kc_shp_fmt(g, 2, b->dims, sb, sizeof sb), tb ? "^T" : "");
  }
  kc_dim dims[2] = {m, nn};
  if ((s = kc_shp_bcast_to(g, n, 2, 2, dims)) != KC_OK) return s;
  kc_shp_set(g, n, 0, a->dtype, 2, dims);
  return KC_OK;
}

kc_status shape_matmul_ep(kc_graph *g, kc_node *n) {
  kc_status s = kc_shp_arity(g, n);
  int rank;
  kc_dim dims[KC_MAX_RANK];
  if (s == KC_OK) s = matmul_dims(g, n, 0, 1, &rank, dims);
  if (s != KC_OK) return s;
  const char *act = kc_node_string(n, "act", "none");
  static const char *const acts[] = {"none", "relu", "gelu", "gelu_tanh"};
  bool known = false;
  for (size_t i = 0; i < sizeof acts / sizeof *acts; i++)
    known = known || strcmp(act, acts[i]) == 0;
  if (!known)
    return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED,
                          "act=\"%s\", expected none, relu, gelu or gelu_tanh", act);
  for (uint32_t i = 2; i < n->nin; i++) {
    if ((s = kc_shp_same_dtype(g, n, 0, i)) != KC_OK) return s;
    if ((s = kc_shp_bcast_to(g, n, i, rank, dims)) != KC_OK) return s;
  }
  kc_shp_set(g, n, 0, kc_value_of(g, n->in[0])->dtype, rank, dims);
  return KC_OK;
}

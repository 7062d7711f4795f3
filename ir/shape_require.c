/*
 * ir/shape_require.c - kc_node_requirements: what a node's inferred sizes and known contents
 * assume that only the sizes of a run can confirm, each a dim that must be >= 0 then.
 *
 * Shape inference keeps an answer symbolic where a polynomial can say it exactly. Where ONNX's
 * result has no polynomial form, it takes the one that holds under a stated condition and lists
 * that condition here, for a run that does not re-infer shapes (a `kernc compile` library, or
 * any executor that evaluates compiled sizes) to check before a kernel runs:
 *   - slice: bounds taken as lying inside their dim, which ONNX would clamp
 *     (kc_slice_requirements, ir/shape_index.c);
 *   - exact: symbolic known values of a dtype other than i64 (i32, u32, u64, f32, f64; see
 *     kc_shp_fit) lie in the range that dtype holds exactly, so Cast(S) to f32 and back, or a
 *     Range over f32 operands, is S itself and not a rounded or wrapped S (f32: |v| <= 2^24);
 *   - reshape: the result's element count equals the input's where that is not provable (a -1
 *     inferred as total / rest, floor division, when rest may not divide total).
 * Requirements that hold for every size (kc_dim_lower) are left out, and so is an exact-range
 * requirement of one element that another element of the same value implies (a range's known
 * contents need only their extremes checked). The plan of every compiled model, JIT or .so,
 * checks them per run (runtime/plan_build.c), beside what kc_shp_assume reported.
 */
#include "shape.h"

#include <stdio.h>
#include <string.h>

/* Append r when it is not provably true; false when req is full. */
static bool add(kc_graph *g, kc_requirement *req, uint32_t *n, uint32_t max, kc_requirement r) {
  int64_t lo;
  if (kc_dim_lower(g, r.dim, &lo) && lo >= 0) return true;
  for (uint32_t i = 0; i < *n; i++)
    if (req[i].dim == r.dim && req[i].kind == r.kind && req[i].index == r.index) return true;
  if (*n == max) return false;
  req[(*n)++] = r;
  return true;
}

/* Is a provably >= b (a - b >= 0 for every size)? */
static bool at_least(kc_graph *g, kc_dim a, kc_dim b) {
  int64_t lo;
  return a == b || (kc_dim_lower(g, kc_dim_sub(g, a, b), &lo) && lo >= 0);
}

/* Known values of output j in the range its dtype holds exactly: the extreme elements only. */
static bool exact(kc_graph *g, const kc_node *n, uint32_t j, kc_requirement *req, uint32_t *nreq,
                  uint32_t max) {
  const kc_value *v = kc_value_of(g, n->out[j]);
  int64_t lo, hi, c;
  uint32_t cnt;
  const kc_dim *k = kc_value_known(g, n->out[j], &cnt);
  if (!k || !kc_shp_exact_range(v->dtype, &lo, &hi)) return true;
  for (uint32_t i = 0; i < cnt; i++) {
    if (kc_dim_const(g, k[i], &c)) continue; /* fitted exactly when it was computed */
    bool top = hi<INT64_MAX, bottom = lo> INT64_MIN;
    for (uint32_t m = 0; m < cnt && (top || bottom); m++) {
      if (m == i || k[m] == k[i] || kc_dim_const(g, k[m], &c)) continue;
      top = top && !at_least(g, k[m], k[i]);
      bottom = bottom && !at_least(g, k[i], k[m]);
    }
    kc_requirement r = {.kind = KC_REQ_EXACT, .index = (int)j};
    r.dim = kc_dim_sub(g, kc_dim_int(g, hi), k[i]);
    if (top && !add(g, req, nreq, max, r)) return false;
    r.dim = kc_dim_sub(g, k[i], kc_dim_int(g, lo));
    if (bottom && !add(g, req, nreq, max, r)) return false;
  }
  return true;
}

uint32_t kc_node_requirements(kc_graph *g, const kc_node *n, kc_requirement *req, uint32_t max) {
  uint32_t nreq = 0;
  if (n->op == KC_OP_SLICE && n->nin >= 3 && n->out[0].id) {
    kc_dim d[4 * KC_MAX_RANK];
    int axis[4 * KC_MAX_RANK];
    uint32_t k = kc_slice_requirements(g, n, d, axis, 4 * KC_MAX_RANK);
    for (uint32_t i = 0; i < k; i++)
      if (!add(g, req, &nreq, max, (kc_requirement){d[i], KC_REQ_SLICE, axis[i]})) return nreq;
  }
  if (n->op == KC_OP_RESHAPE && n->out[0].id && kc_value_of(g, n->out[0])->rank >= 0) {
    const kc_value *x = kc_value_of(g, n->in[0]), *y = kc_value_of(g, n->out[0]);
    kc_dim total = kc_shp_prod(g, x->rank, x->dims), got = kc_shp_prod(g, y->rank, y->dims);
    if (total != got) {
      if (!add(g, req, &nreq, max, (kc_requirement){kc_dim_sub(g, total, got), KC_REQ_RESHAPE, 0}))
        return nreq;
      if (!add(g, req, &nreq, max, (kc_requirement){kc_dim_sub(g, got, total), KC_REQ_RESHAPE, 0}))
        return nreq;
    }
  }
  for (uint32_t j = 0; j < n->nout; j++)
    if (n->out[j].id && !exact(g, n, j, req, &nreq, max)) return nreq;
  return nreq;
}

const char *kc_requirement_text(kc_graph *g, const kc_node *n, const kc_requirement *r, char *buf,
                                size_t size) {
  char who[300], a[128], b[128];
  const char *op = kc_ops[n->op].name;
  uint32_t id = n->nout ? n->out[0].id : 0;
  if (n->loc)
    snprintf(who, sizeof who, "node '%s' (%s, %%%u)", n->loc, op, id);
  else
    snprintf(who, sizeof who, "node %%%u (%s)", id, op);
  switch (r->kind) {
  case KC_REQ_SLICE:
    kc_dim_str(g, kc_value_of(g, n->in[0])->dims[r->index], a, sizeof a);
    snprintf(buf, size,
             "%s was compiled assuming its bounds on axis %d lie within its size %s (ONNX clamps "
             "bounds past the end)",
             who, r->index, a);
    break;
  case KC_REQ_EXACT: {
    const kc_value *v = kc_value_of(g, n->out[r->index]);
    int64_t lo = 0, hi = 0;
    kc_shp_exact_range(v->dtype, &lo, &hi);
    snprintf(buf, size,
             "%s was compiled assuming its result %%%u (%s) holds the shape values it is computed "
             "from exactly (within [%lld, %lld])",
             who, n->out[r->index].id, kc_dtype_name(v->dtype), (long long)lo, (long long)hi);
    break;
  }
  case KC_REQ_RESHAPE: {
    const kc_value *x = kc_value_of(g, n->in[0]), *y = kc_value_of(g, n->out[0]);
    snprintf(buf, size, "%s was compiled assuming its input's %s elements fill its result's %s",
             who, kc_dim_str(g, kc_shp_prod(g, x->rank, x->dims), a, sizeof a),
             kc_dim_str(g, kc_shp_prod(g, y->rank, y->dims), b, sizeof b));
    break;
  }
  }
  return buf;
}

/*
 * passes/util.c - helpers shared by the passes: placing appended nodes in program order,
 * comparing types across a rewrite, the loc of rewritten nodes, and reading and writing constant
 * tensors.
 *
 * Invariants: kc_graph_place keeps every value's def pointing at the node that defines it;
 * tensor helpers never read past t->nbytes.
 */
#include "passes/internal.h"
#include "passes/match.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

kc_status kc_graph_place(kc_graph *g, uint32_t first, const uint32_t *anchor) {
  uint32_t n = g->nnodes;
  if (first >= n) return KC_OK;
  kc_node *tmp = malloc((size_t)n * sizeof *tmp);
  if (!tmp) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory reordering graph @%s", g->name);
  uint32_t w = 0, k = 0, nnew = n - first;
  for (uint32_t i = 0; i < first; i++) {
    while (k < nnew && anchor[k] <= i)
      tmp[w++] = g->nodes[first + k++];
    tmp[w++] = g->nodes[i];
  }
  while (k < nnew) /* anchors past the old nodes: keep them last */
    tmp[w++] = g->nodes[first + k++];
  memcpy(g->nodes, tmp, (size_t)n * sizeof *tmp);
  free(tmp);
  for (uint32_t i = 0; i < n; i++) {
    const kc_node *nd = &g->nodes[i];
    for (uint32_t j = 0; j < nd->nout; j++)
      if (nd->out[j].id) g->vals[nd->out[j].id].def = i + 1; /* deleted too: compact clears */
  }
  return KC_OK;
}

bool kc_dim_same(const kc_graph *g, kc_dim a, kc_dim b) {
  if (a == b) return true;
  if (!KC_DIM_IS_SYM(a) || !KC_DIM_IS_SYM(b)) return false;
  char x[256], y[256];
  return strcmp(kc_dim_str(g, a, x, sizeof x), kc_dim_str(g, b, y, sizeof y)) == 0;
}

static bool is_new(const kc_graph *g, kc_dim d, uint32_t fresh, int depth) {
  if (!KC_DIM_IS_SYM(d) || depth > 64) return false;
  uint32_t e = KC_DIM_EXPR(d);
  if (e >= g->ndexprs) return false;
  const kc_dexpr *x = &g->dexprs[e];
  if (x->kind == KC_DX_SYM) return e >= fresh;
  if (x->kind == KC_DX_CONST) return false;
  return is_new(g, x->a, fresh, depth + 1) || is_new(g, x->b, fresh, depth + 1);
}

bool kc_dim_is_new(const kc_graph *g, kc_dim d, uint32_t fresh) { return is_new(g, d, fresh, 0); }

bool kc_type_fits(kc_graph *g, kc_val a, kc_val b, uint32_t fresh, bool adopt) {
  kc_value *va = kc_value_of(g, a), *vb = kc_value_of(g, b);
  if (va->dtype != vb->dtype || va->rank != vb->rank) return false;
  for (int i = 0; i < va->rank; i++)
    if (!kc_dim_same(g, va->dims[i], vb->dims[i]) && !kc_dim_is_new(g, vb->dims[i], fresh))
      return false;
  if (adopt)
    for (int i = 0; i < va->rank; i++)
      vb->dims[i] = va->dims[i];
  return true;
}

const char *kc_type_str(const kc_graph *g, kc_val v, char *buf, size_t size) {
  const kc_value *val = kc_value_of(g, v);
  if (val->dtype == KC_DT_NONE || val->rank < 0) {
    snprintf(buf, size, "%s", val->dtype == KC_DT_NONE ? "?" : "untyped");
    return buf;
  }
  size_t len = (size_t)snprintf(buf, size, "%s[", kc_dtype_name(val->dtype));
  for (int i = 0; i < val->rank && len < size; i++) {
    char d[128];
    len += (size_t)snprintf(buf + len, size - len, "%s%s", i ? "," : "",
                            kc_dim_str(g, val->dims[i], d, sizeof d));
  }
  if (len < size) snprintf(buf + len, size - len, "]");
  return buf;
}

/* ---- locs ---------------------------------------------------------------------------------- */

/* The root's name first: it is the node whose result the user's model reads next, so an error
 * about the fused node points where the rewritten value was made; the op in the message (e.g.
 * "attention") says what was fused. A loc string lives in g's arena: sharing it is safe. */
const char *kc_rewrite_loc(const kc_graph *g, uint32_t root, const uint32_t *nodes, uint32_t n) {
  if (root < g->nnodes && g->nodes[root].loc) return g->nodes[root].loc;
  for (uint32_t i = 0; i < n; i++)
    if (nodes[i] < g->nnodes && g->nodes[nodes[i]].loc) return g->nodes[nodes[i]].loc;
  return NULL;
}

void kc_rewrite_set_loc(kc_graph *g, uint32_t first, const char *loc) {
  for (uint32_t i = first; loc && i < g->nnodes; i++)
    if (!g->nodes[i].loc) g->nodes[i].loc = loc;
}

/* ---- constant tensors ---------------------------------------------------------------------- */

const kc_tensor *kc_const_tensor(const kc_graph *g, kc_val v) {
  if (!v.id || v.id >= g->nvals) return NULL;
  uint32_t def = g->vals[v.id].def;
  if (!def || def > g->nnodes || g->nodes[def - 1].op != KC_OP_CONSTANT) return NULL;
  const kc_attr *a = kc_node_attr(&g->nodes[def - 1], "value");
  if (!a || a->kind != KC_ATTR_TENSOR || a->u.tensor >= g->ntensors) return NULL;
  const kc_tensor *t = &g->tensors[a->u.tensor];
  return t->data || t->nbytes == 0 ? t : NULL;
}

size_t kc_tensor_numel(const kc_tensor *t) {
  size_t es = kc_dtype_size(t->dtype);
  return es ? t->nbytes / es : 0;
}

double kc_tensor_get(const kc_tensor *t, size_t i) {
  const void *p = t->data;
  switch (t->dtype) {
  case KC_F32: return ((const float *)p)[i];
  case KC_F16: return kc_f16_to_f32(((const uint16_t *)p)[i]);
  case KC_BF16: return kc_bf16_to_f32(((const uint16_t *)p)[i]);
  case KC_F64: return ((const double *)p)[i];
  case KC_I64: return (double)((const int64_t *)p)[i];
  case KC_I32: return ((const int32_t *)p)[i];
  case KC_I16: return ((const int16_t *)p)[i];
  case KC_I8: return ((const int8_t *)p)[i];
  case KC_U64: return (double)((const uint64_t *)p)[i];
  case KC_U32: return ((const uint32_t *)p)[i];
  case KC_U16: return ((const uint16_t *)p)[i];
  case KC_U8:
  case KC_BOOL: return ((const uint8_t *)p)[i];
  default: return NAN;
  }
}

void kc_tensor_put(kc_dtype t, void *data, size_t i, double x) {
  switch (t) {
  case KC_F32: ((float *)data)[i] = (float)x; break;
  case KC_F16: ((uint16_t *)data)[i] = kc_f32_to_f16((float)x); break;
  case KC_BF16: ((uint16_t *)data)[i] = kc_f32_to_bf16((float)x); break;
  case KC_F64: ((double *)data)[i] = x; break;
  case KC_I64: ((int64_t *)data)[i] = (int64_t)x; break;
  case KC_I32: ((int32_t *)data)[i] = (int32_t)x; break;
  case KC_I16: ((int16_t *)data)[i] = (int16_t)x; break;
  case KC_I8: ((int8_t *)data)[i] = (int8_t)x; break;
  case KC_U64: ((uint64_t *)data)[i] = (uint64_t)x; break;
  case KC_U32: ((uint32_t *)data)[i] = (uint32_t)x; break;
  case KC_U16: ((uint16_t *)data)[i] = (uint16_t)x; break;
  case KC_U8: ((uint8_t *)data)[i] = (uint8_t)x; break;
  case KC_BOOL: ((uint8_t *)data)[i] = x != 0; break;
  default: break;
  }
}

const kc_tensor *kc_source_tensor(const kc_graph *g, kc_val v) {
  uint32_t def = g->vals[v.id].def;
  if (!def) return NULL;
  const kc_node *n = &g->nodes[def - 1];
  if (n->op == KC_OP_CONSTANT) return kc_const_tensor(g, v);
  if (n->op != KC_OP_WEIGHT) return NULL;
  const char *name = kc_node_string(n, "name", NULL);
  for (uint32_t i = 0; name && i < g->ntensors; i++)
    if (g->tensors[i].name && strcmp(g->tensors[i].name, name) == 0)
      return g->tensors[i].data ? &g->tensors[i] : NULL;
  return NULL;
}

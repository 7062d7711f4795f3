/*
 * frontend/onnx_emit.c - helpers the op importers use to turn one ONNX node into IR nodes:
 * the ONNX-name -> value map, input lookup, node creation with the ONNX name as loc,
 * constants, output binding and attribute conversion by the IR op's schema.
 *
 * Invariants:
 *   - Every IR node made for an ONNX node carries that node's name as loc (NULL when unnamed),
 *     so shape errors from helper nodes still point at the ONNX node.
 *   - Every node is shape-inferred right after it is made; a node whose inference failed is
 *     never used as an input.
 *   - ONNX value names are SSA; the loader rejects a name defined twice before any node is
 *     imported, so binding never has to decide which definition wins.
 */
#include "onnx_internal.h"

#include <stdlib.h>
#include <string.h>

/* ---- name map ---- */

static uint32_t hash_str(const char *s) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 16777619u;
  return h;
}

static bool names_grow(onnx_names *m) {
  uint32_t ncap = m->cap ? m->cap * 2 : 64;
  const char **keys = calloc(ncap, sizeof *keys);
  kc_val *vals = calloc(ncap, sizeof *vals);
  if (!keys || !vals) {
    free(keys);
    free(vals);
    return false;
  }
  for (uint32_t i = 0; i < m->cap; i++) {
    if (!m->keys[i]) continue;
    uint32_t j = hash_str(m->keys[i]) & (ncap - 1);
    while (keys[j])
      j = (j + 1) & (ncap - 1);
    keys[j] = m->keys[i];
    vals[j] = m->vals[i];
  }
  free(m->keys);
  free(m->vals);
  m->keys = keys;
  m->vals = vals;
  m->cap = ncap;
  return true;
}

bool kc_onnx_names_put(onnx_names *m, const char *key, kc_val v) {
  if ((m->n + 1) * 2 > m->cap && !names_grow(m)) return false;
  uint32_t j = hash_str(key) & (m->cap - 1);
  while (m->keys[j]) {
    if (strcmp(m->keys[j], key) == 0) {
      m->vals[j] = v;
      return true;
    }
    j = (j + 1) & (m->cap - 1);
  }
  m->keys[j] = key;
  m->vals[j] = v;
  m->n++;
  return true;
}

kc_val kc_onnx_names_get(const onnx_names *m, const char *key) {
  if (!m->cap || !key) return (kc_val){0};
  uint32_t j = hash_str(key) & (m->cap - 1);
  while (m->keys[j]) {
    if (strcmp(m->keys[j], key) == 0) return m->vals[j];
    j = (j + 1) & (m->cap - 1);
  }
  return (kc_val){0};
}

void kc_onnx_names_free(onnx_names *m) {
  free(m->keys);
  free(m->vals);
  memset(m, 0, sizeof *m);
}

/* ---- nodes ---- */

kc_val kc_onnx_input(onnx_imp *im, const Onnx__NodeProto *np, size_t i) {
  if (i >= np->n_input || !np->input[i] || !np->input[i][0]) return (kc_val){0};
  return kc_onnx_names_get(&im->names, np->input[i]);
}

uint32_t kc_onnx_add(onnx_imp *im, kc_op op, uint32_t nin, const kc_val *in, uint32_t nout,
                     kc_val *outs) {
  kc_val tmp[16];
  kc_val *o = outs ? outs : tmp;
  if (!outs && nout > 16) return UINT32_MAX;
  for (uint32_t i = 0; i < nout; i++) {
    o[i] = kc_graph_new_value(im->g);
    if (!o[i].id) return UINT32_MAX;
  }
  uint32_t ni = kc_graph_add_node_with_outputs(im->g, op, nin, in, nout, o);
  if (ni == UINT32_MAX) return ni;
  const char *name = im->node ? im->node->name : NULL;
  if (name && *name) im->g->nodes[ni].loc = kc_arena_strdup(&im->g->arena, name);
  return ni;
}

kc_status kc_onnx_infer(onnx_imp *im, uint32_t ni) {
  if (ni == UINT32_MAX) return kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
  return kc_node_infer(im->g, ni);
}

kc_val kc_onnx_emit1(onnx_imp *im, kc_op op, uint32_t nin, const kc_val *in, kc_status *st) {
  kc_val out;
  uint32_t ni = kc_onnx_add(im, op, nin, in, 1, &out);
  *st = kc_onnx_infer(im, ni);
  return *st == KC_OK ? out : (kc_val){0};
}

/* A source node (weight or constant) whose output carries the tensor's type. */
static kc_val source(onnx_imp *im, kc_op op, const char *name, uint32_t ti, kc_status *st) {
  kc_val out;
  uint32_t ni = ti == UINT32_MAX ? ti : kc_onnx_add(im, op, 0, NULL, 1, &out);
  if (ni == UINT32_MAX) {
    *st = kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
    return (kc_val){0};
  }
  if (op == KC_OP_WEIGHT)
    kc_node_set_string(im->g, ni, "name", name);
  else
    kc_node_set_tensor(im->g, ni, "value", ti);
  /* sources carry their type; shape inference checks it and records known contents */
  const kc_tensor *t = &im->g->tensors[ti];
  kc_value *v = kc_value_of(im->g, out);
  v->dtype = t->dtype;
  v->rank = t->rank;
  for (int i = 0; i < t->rank; i++)
    v->dims[i] = t->dims[i];
  *st = kc_onnx_infer(im, ni);
  return *st == KC_OK ? out : (kc_val){0};
}

kc_val kc_onnx_const(onnx_imp *im, kc_dtype t, int rank, const int64_t *dims, const void *data,
                     kc_status *st) {
  uint32_t ti = kc_graph_add_tensor(im->g, NULL, t, rank, dims, data, true);
  return source(im, KC_OP_CONSTANT, NULL, ti, st);
}

kc_val kc_onnx_weight(onnx_imp *im, const char *name, const onnx_tensor *t, kc_status *st) {
  uint32_t ti = kc_graph_add_tensor(im->g, name, t->dtype, t->rank, t->dims, t->data, false);
  return source(im, KC_OP_WEIGHT, name, ti, st);
}

kc_val kc_onnx_const_i64s(onnx_imp *im, uint32_t n, const int64_t *v, kc_status *st) {
  int64_t dim = n;
  return kc_onnx_const(im, KC_I64, 1, &dim, v, st);
}

kc_val kc_onnx_const_scalar(onnx_imp *im, kc_dtype t, double v, kc_status *st) {
  union {
    float f;
    double d;
    int64_t i64;
    uint64_t u64;
    int32_t i32;
    uint32_t u32;
    int16_t i16;
    uint16_t u16;
    int8_t i8;
    uint8_t u8;
  } b;
  memset(&b, 0, sizeof b);
  switch (t) {
  case KC_F32: b.f = (float)v; break;
  case KC_F64: b.d = v; break;
  case KC_F16: b.u16 = kc_f32_to_f16((float)v); break;
  case KC_BF16: b.u16 = kc_f32_to_bf16((float)v); break;
  case KC_I64: b.i64 = (int64_t)v; break;
  case KC_U64: b.u64 = (uint64_t)v; break;
  case KC_I32: b.i32 = (int32_t)v; break;
  case KC_U32: b.u32 = (uint32_t)v; break;
  case KC_I16: b.i16 = (int16_t)v; break;
  case KC_U16: b.u16 = (uint16_t)v; break;
  case KC_I8: b.i8 = (int8_t)v; break;
  case KC_U8: b.u8 = (uint8_t)v; break;
  case KC_BOOL: b.u8 = v != 0; break;
  default:
    *st = kc_errorf(im->ctx, KC_ERR_TYPE, "no scalar constant of dtype %s", kc_dtype_name(t));
    return (kc_val){0};
  }
  return kc_onnx_const(im, t, 0, NULL, &b, st);
}

kc_status kc_onnx_bind(onnx_imp *im, const Onnx__NodeProto *np, size_t i, kc_val v) {
  if (i >= np->n_output || !np->output[i] || !np->output[i][0]) return KC_OK;
  const char *name = np->output[i];
  if (!kc_onnx_names_put(&im->names, name, v))
    return kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
  kc_value *val = kc_value_of(im->g, v);
  if (!val->name) val->name = kc_arena_strdup(&im->g->arena, name);
  return KC_OK;
}

kc_status kc_onnx_bind_all(onnx_imp *im, const Onnx__NodeProto *np, uint32_t ni) {
  const kc_node *n = &im->g->nodes[ni];
  for (uint32_t i = 0; i < n->nout && i < np->n_output; i++) {
    kc_status s = kc_onnx_bind(im, np, i, im->g->nodes[ni].out[i]);
    if (s != KC_OK) return s;
  }
  return KC_OK;
}

/* ---- attributes ---- */

const Onnx__AttributeProto *kc_onnx_attr(const Onnx__NodeProto *np, const char *name) {
  for (size_t i = 0; i < np->n_attribute; i++) {
    const Onnx__AttributeProto *a = np->attribute[i];
    if (a && a->name && strcmp(a->name, name) == 0) return a;
  }
  return NULL;
}

int64_t kc_onnx_attr_int(const Onnx__NodeProto *np, const char *name, int64_t def) {
  const Onnx__AttributeProto *a = kc_onnx_attr(np, name);
  return a ? a->i : def;
}

float kc_onnx_attr_float(const Onnx__NodeProto *np, const char *name, float def) {
  const Onnx__AttributeProto *a = kc_onnx_attr(np, name);
  return a ? a->f : def;
}

kc_status kc_onnx_finish(onnx_imp *im, const Onnx__NodeProto *np, uint32_t first, kc_val y) {
  kc_graph *g = im->g;
  kc_status s = kc_graph_status(g);
  if (s != KC_OK) return s;
  const char *name = np->name && *np->name ? kc_arena_strdup(&g->arena, np->name) : NULL;
  for (uint32_t ni = first; name && ni < g->nnodes; ni++)
    if (!g->nodes[ni].loc) g->nodes[ni].loc = name;
  return kc_onnx_bind(im, np, 0, y);
}

kc_status kc_onnx_attr_tensor(onnx_imp *im, const Onnx__AttributeProto *a, uint32_t *tensor) {
  if (!a->t) return kc_errorf(im->ctx, KC_ERR_PARSE, "attribute '%s' holds no tensor", a->name);
  char what[300];
  snprintf(what, sizeof what, "attribute '%s'", a->name);
  onnx_tensor t;
  kc_status s = kc_onnx_tensor_decode(im->ctx, &im->g->arena, a->t, im->dir, what, &t);
  if (s != KC_OK) return s;
  *tensor = kc_graph_add_tensor(im->g, NULL, t.dtype, t.rank, t.dims, t.data, false);
  return *tensor == UINT32_MAX ? kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory") : KC_OK;
}

/* The ONNX kind of attribute a, trusting `type` but falling back to what is filled in. */
static int attr_kind(const Onnx__AttributeProto *a) {
  if (a->has_type) return (int)a->type;
  if (a->has_i) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
  if (a->has_f) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT;
  if (a->has_s) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
  if (a->t) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
  if (a->n_ints) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS;
  if (a->n_floats) return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS;
  return ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED;
}

/* Set one attribute on node ni as the schema kind k says. */
static kc_status set_attr(onnx_imp *im, uint32_t ni, const Onnx__AttributeProto *a, char k) {
  int ak = attr_kind(a);
  kc_graph *g = im->g;
  const char *nm = a->name;
  switch (k) {
  case 'i':
    if (ak != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT) break;
    kc_node_set_int(g, ni, nm, a->i);
    return KC_OK;
  case 't': {
    if (ak != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT) break;
    kc_dtype t = kc_onnx_dtype(a->i);
    if (!t)
      return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED,
                       "attribute '%s': dtype %s (%lld) is not supported by kernc", nm,
                       kc_onnx_dtype_name(a->i), (long long)a->i);
    kc_node_set_dtype(g, ni, nm, t);
    return KC_OK;
  }
  case 'f':
    if (ak == ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT) {
      kc_node_set_float(g, ni, nm, a->f);
      return KC_OK;
    }
    break;
  case 's': {
    if (ak != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING) break;
    /* ONNX strings are bytes; kernc's are C strings */
    char *s = kc_arena_alloc(&g->arena, a->s.len + 1);
    if (!s) return kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
    if (a->s.len) memcpy(s, a->s.data, a->s.len);
    if (memchr(s, 0, a->s.len))
      return kc_errorf(im->ctx, KC_ERR_PARSE, "attribute '%s' has a NUL byte", nm);
    kc_node_set_string(g, ni, nm, s);
    return KC_OK;
  }
  case 'I':
    if (ak != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS) break;
    kc_node_set_ints(g, ni, nm, (uint32_t)a->n_ints, a->ints);
    return KC_OK;
  case 'F': {
    if (ak != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOATS) break;
    double *v = malloc((a->n_floats ? a->n_floats : 1) * sizeof *v);
    if (!v) return kc_errorf(im->ctx, KC_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < a->n_floats; i++)
      v[i] = a->floats[i];
    kc_node_set_floats(g, ni, nm, (uint32_t)a->n_floats, v);
    free(v);
    return KC_OK;
  }
  case 'T': {
    if (ak != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR) break;
    uint32_t ti;
    kc_status s = kc_onnx_attr_tensor(im, a, &ti);
    if (s != KC_OK) return s;
    kc_node_set_tensor(g, ni, nm, ti);
    return KC_OK;
  }
  default: break;
  }
  return kc_errorf(im->ctx, KC_ERR_PARSE, "attribute '%s' has the wrong kind (ONNX type %d)", nm,
                   ak);
}

kc_status kc_onnx_copy_attrs(onnx_imp *im, const Onnx__NodeProto *np, uint32_t ni,
                             const char *const *skip) {
  kc_op op = im->g->nodes[ni].op;
  for (size_t i = 0; i < np->n_attribute; i++) {
    const Onnx__AttributeProto *a = np->attribute[i];
    if (!a || !a->name || !*a->name)
      return kc_errorf(im->ctx, KC_ERR_PARSE, "attribute %zu has no name", i);
    if (a->ref_attr_name && *a->ref_attr_name)
      return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "attribute '%s' refers to a function attribute",
                       a->name);
    bool skipped = false;
    for (const char *const *p = skip; p && *p; p++)
      if (strcmp(*p, a->name) == 0) skipped = true;
    if (skipped) continue;
    char kind;
    const char *def;
    bool req;
    if (!kc_op_attr_schema(op, a->name, &kind, &def, &req))
      return kc_errorf(im->ctx, KC_ERR_UNSUPPORTED, "attribute '%s' is not supported", a->name);
    kc_status s = set_attr(im, ni, a, kind);
    if (s != KC_OK) return s;
  }
  return KC_OK;
}

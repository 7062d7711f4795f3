/*
 * ir/attr.c - setting and reading node attributes; defaults come from the op table's schema,
 * so no consumer repeats a default value.
 */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

static kc_attr *new_attr(kc_graph *g, uint32_t ni, const char *name, kc_attr_kind kind) {
  kc_node *n = &g->nodes[ni];
  for (uint32_t i = 0; i < n->nattr; i++)
    if (strcmp(n->attrs[i].name, name) == 0) {
      n->attrs[i].kind = kind;
      return &n->attrs[i];
    }
  kc_attr *a = kc_arena_alloc(&g->arena, (n->nattr + 1) * sizeof *a);
  if (!a) return NULL;
  if (n->nattr) memcpy(a, n->attrs, n->nattr * sizeof *a);
  n->attrs = a;
  kc_attr *r = &a[n->nattr++];
  r->name = kc_arena_strdup(&g->arena, name);
  r->kind = kind;
  return r;
}

void kc_node_set_int(kc_graph *g, uint32_t n, const char *name, int64_t v) {
  kc_attr *a = new_attr(g, n, name, KC_ATTR_INT);
  if (a) a->u.i = v;
}

void kc_node_set_float(kc_graph *g, uint32_t n, const char *name, double v) {
  kc_attr *a = new_attr(g, n, name, KC_ATTR_FLOAT);
  if (a) a->u.f = v;
}

void kc_node_set_string(kc_graph *g, uint32_t n, const char *name, const char *v) {
  kc_attr *a = new_attr(g, n, name, KC_ATTR_STRING);
  if (a) a->u.s = kc_arena_strdup(&g->arena, v);
}

void kc_node_set_ints(kc_graph *g, uint32_t n, const char *name, uint32_t cnt, const int64_t *v) {
  kc_attr *a = new_attr(g, n, name, KC_ATTR_INTS);
  if (!a) return;
  a->u.ints.n = cnt;
  a->u.ints.v = cnt ? kc_arena_memdup(&g->arena, v, cnt * sizeof *v) : NULL;
}

void kc_node_set_floats(kc_graph *g, uint32_t n, const char *name, uint32_t cnt, const double *v) {
  kc_attr *a = new_attr(g, n, name, KC_ATTR_FLOATS);
  if (!a) return;
  a->u.floats.n = cnt;
  a->u.floats.v = cnt ? kc_arena_memdup(&g->arena, v, cnt * sizeof *v) : NULL;
}

void kc_node_set_dtype(kc_graph *g, uint32_t n, const char *name, kc_dtype v) {
  kc_attr *a = new_attr(g, n, name, KC_ATTR_DTYPE);
  if (a) a->u.t = v;
}

void kc_node_set_tensor(kc_graph *g, uint32_t n, const char *name, uint32_t tensor) {
  kc_attr *a = new_attr(g, n, name, KC_ATTR_TENSOR);
  if (a) a->u.tensor = tensor;
}

const kc_attr *kc_node_attr(const kc_node *n, const char *name) {
  for (uint32_t i = 0; i < n->nattr; i++)
    if (strcmp(n->attrs[i].name, name) == 0) return &n->attrs[i];
  return NULL;
}

/* The schema default of attribute name on n's op, as text, or NULL. */
static const char *schema_default(const kc_node *n, const char *name) {
  char kind;
  const char *def;
  bool req;
  return kc_op_attr_schema(n->op, name, &kind, &def, &req) ? def : NULL;
}

int64_t kc_node_int(const kc_node *n, const char *name, int64_t def) {
  const kc_attr *a = kc_node_attr(n, name);
  if (a && a->kind == KC_ATTR_INT) return a->u.i;
  const char *s = schema_default(n, name);
  return s ? strtoll(s, NULL, 10) : def;
}

double kc_node_float(const kc_node *n, const char *name, double def) {
  const kc_attr *a = kc_node_attr(n, name);
  if (a && a->kind == KC_ATTR_FLOAT) return a->u.f;
  if (a && a->kind == KC_ATTR_INT) return (double)a->u.i;
  const char *s = schema_default(n, name);
  return s ? strtod(s, NULL) : def;
}

const char *kc_node_string(const kc_node *n, const char *name, const char *def) {
  const kc_attr *a = kc_node_attr(n, name);
  if (a && a->kind == KC_ATTR_STRING) return a->u.s;
  const char *s = schema_default(n, name);
  if (!s) return def;
  /* defaults are stored up to the next ',' in the schema: return a stable copy of known ones */
  static const char *const known[] = {"none", "tanh", "causal", "padding", "additive"};
  for (size_t i = 0; i < sizeof known / sizeof *known; i++) {
    size_t len = strlen(known[i]);
    if (strncmp(s, known[i], len) == 0 && (s[len] == ',' || s[len] == 0)) return known[i];
  }
  return def;
}

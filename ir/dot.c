/*
 * ir/dot.c - kc_graph_dot: a graph in graphviz dot syntax, for `kernc dump --format=dot`.
 *
 * Graph inputs, weights and constants are ellipses; every other node is a box labelled with its
 * op, an attribute summary and its result types; graph outputs are double ellipses. An edge goes
 * from the definer of a value to each user and is labelled %id. Fused nodes list their body ops.
 * Invariants: every label goes through esc(), so the output is valid dot whatever the names
 * hold; malformed graphs (ids out of range, NULL attributes) print what they can, never crash.
 */
#include "internal.h"

#include <inttypes.h>
#include <string.h>

/* A bounded text buffer: appends past the end are dropped and marked with "...". */
typedef struct sbuf {
  char s[2048];
  size_t len;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sbuf *b, const char *fmt, ...) {
  if (b->len >= sizeof b->s - 1) return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(b->s + b->len, sizeof b->s - b->len, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  b->len += (size_t)n;
  if (b->len >= sizeof b->s - 1) {
    b->len = sizeof b->s - 1;
    memcpy(b->s + b->len - 3, "...", 3);
  }
}

/* Write s as the body of a dot string: quotes and backslashes escaped, '\n' as dot's \n. */
static void esc(FILE *f, const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf(f, "\\%c", *p);
    else if (*p == '\n')
      fputs("\\n", f);
    else if (*p < 0x20 || *p == 0x7f)
      fputc(' ', f);
    else
      fputc(*p, f);
  }
}

static void add_type(sbuf *b, const kc_graph *g, uint32_t id) {
  if (!id || id >= g->nvals) {
    sb_add(b, "_");
    return;
  }
  const kc_value *v = &g->vals[id];
  if (v->dtype == KC_DT_NONE || (unsigned)v->dtype >= KC_DT_COUNT) {
    sb_add(b, "?");
    return;
  }
  sb_add(b, "%s[", kc_dtype_name(v->dtype));
  if (v->rank < 0 || v->rank > KC_MAX_RANK) sb_add(b, "*");
  for (int i = 0; i >= 0 && i < v->rank && i < KC_MAX_RANK; i++) {
    char d[128] = "?";
    if (!KC_DIM_IS_SYM(v->dims[i]) || KC_DIM_EXPR(v->dims[i]) < g->ndexprs)
      kc_dim_str(g, v->dims[i], d, sizeof d);
    sb_add(b, "%s%s", i ? "," : "", d);
  }
  sb_add(b, "]");
}

/* A short text of an attribute value: long lists are cut after a few elements. */
static void add_attr(sbuf *b, const kc_graph *g, const kc_attr *a) {
  char num[64];
  const uint32_t show = 6;
  sb_add(b, "%s=", a->name ? a->name : "?");
  switch (a->kind) {
  case KC_ATTR_INT: sb_add(b, "%" PRId64, a->u.i); break;
  case KC_ATTR_FLOAT:
    kc_fmt_double(num, sizeof num, a->u.f);
    sb_add(b, "%s", num);
    break;
  case KC_ATTR_STRING: sb_add(b, "%s", a->u.s ? a->u.s : "?"); break;
  case KC_ATTR_INTS:
    sb_add(b, "[");
    for (uint32_t i = 0; a->u.ints.v && i < a->u.ints.n && i < show; i++)
      sb_add(b, "%s%" PRId64, i ? "," : "", a->u.ints.v[i]);
    sb_add(b, "%s]", a->u.ints.n > show ? ",..." : "");
    break;
  case KC_ATTR_FLOATS:
    sb_add(b, "[");
    for (uint32_t i = 0; a->u.floats.v && i < a->u.floats.n && i < show; i++) {
      kc_fmt_double(num, sizeof num, a->u.floats.v[i]);
      sb_add(b, "%s%s", i ? "," : "", num);
    }
    sb_add(b, "%s]", a->u.floats.n > show ? ",..." : "");
    break;
  case KC_ATTR_DTYPE: sb_add(b, "%s", kc_dtype_name(a->u.t)); break;
  case KC_ATTR_TENSOR:
    if (a->u.tensor < g->ntensors && g->tensors[a->u.tensor].name)
      sb_add(b, "@%s", g->tensors[a->u.tensor].name);
    else
      sb_add(b, "<tensor>");
    break;
  default: sb_add(b, "?"); break;
  }
}

/* kc_node_attr, tolerant of a missing array or unnamed attributes. */
static const kc_attr *find_attr(const kc_node *n, const char *name) {
  for (uint32_t i = 0; n->attrs && i < n->nattr; i++)
    if (n->attrs[i].name && strcmp(n->attrs[i].name, name) == 0) return &n->attrs[i];
  return NULL;
}

static void node_label(sbuf *b, const kc_graph *g, const kc_node *n) {
  const kc_attr *wname = n->op == KC_OP_WEIGHT ? find_attr(n, "name") : NULL;
  sb_add(b, "%s", kc_ops[n->op].name);
  if (wname && wname->kind == KC_ATTR_STRING && wname->u.s) sb_add(b, " \"%s\"", wname->u.s);
  bool first = true;
  for (uint32_t i = 0; n->attrs && i < n->nattr; i++) {
    if (&n->attrs[i] == wname) continue;
    sb_add(b, "%s", first ? "\n" : ", ");
    first = false;
    add_attr(b, g, &n->attrs[i]);
  }
  if (n->body) {
    sb_add(b, "\nbody:");
    for (uint32_t i = 0; n->body->nodes && i < n->body->nnodes; i++) {
      kc_op op = n->body->nodes[i].op;
      if (op != KC_OP_NOP && (unsigned)op < KC_OP_COUNT) sb_add(b, " %s", kc_ops[op].name);
    }
  }
  for (uint32_t i = 0; n->out && i < n->nout; i++) {
    sb_add(b, "\n%%%" PRIu32 ": ", n->out[i].id);
    add_type(b, g, n->out[i].id);
  }
}

/* Write the dot id of the definer of value id ("v3" for an input, "n7" for node 7); false when
 * the value has no definer in g. */
static bool src_id(const kc_graph *g, uint32_t id, char *buf, size_t size) {
  if (!id || id >= g->nvals) return false;
  uint32_t d = g->vals[id].def;
  if (d == 0) {
    for (uint32_t i = 0; i < g->ninputs; i++)
      if (g->inputs[i].id == id) {
        snprintf(buf, size, "v%" PRIu32, id);
        return true;
      }
    return false;
  }
  if (d > g->nnodes || g->nodes[d - 1].op == KC_OP_NOP) return false;
  snprintf(buf, size, "n%" PRIu32, d - 1);
  return true;
}

static void edge(FILE *f, const kc_graph *g, uint32_t id, const char *to) {
  char from[32];
  if (src_id(g, id, from, sizeof from))
    fprintf(f, "  %s -> %s [label=\"%%%" PRIu32 "\"];\n", from, to, id);
}

kc_status kc_graph_dot(const kc_graph *g, FILE *f) {
  if (!g || !f) return KC_ERR_INVALID_ARG;
  sbuf b;
  fputs("digraph \"", f);
  esc(f, g->name ? g->name : "graph");
  fputs("\" {\n  node [fontname=\"monospace\", fontsize=10];\n"
        "  edge [fontname=\"monospace\", fontsize=9];\n",
        f);
  for (uint32_t i = 0; g->inputs && i < g->ninputs; i++) {
    uint32_t id = g->inputs[i].id;
    if (!id || id >= g->nvals) continue;
    b.len = 0;
    sb_add(&b, "%%%" PRIu32, id);
    if (g->vals[id].name && *g->vals[id].name) sb_add(&b, " \"%s\"", g->vals[id].name);
    sb_add(&b, "\n");
    add_type(&b, g, id);
    fprintf(f, "  v%" PRIu32 " [shape=ellipse, label=\"", id);
    esc(f, b.s);
    fputs("\"];\n", f);
  }
  for (uint32_t i = 0; g->nodes && i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    if (n->op == KC_OP_NOP || (unsigned)n->op >= KC_OP_COUNT) continue;
    b.len = 0;
    node_label(&b, g, n);
    bool source = kc_ops[n->op].cls == KC_CLASS_SOURCE;
    fprintf(f, "  n%" PRIu32 " [shape=%s, label=\"", i,
            source ? "ellipse, style=filled, fillcolor=\"#eeeeee\"" : "box");
    esc(f, b.s);
    if (n->loc && *n->loc) { /* the ONNX node name, shown on hover in SVG */
      fputs("\", tooltip=\"", f);
      esc(f, n->loc);
    }
    fputs("\"];\n", f);
    char to[32];
    snprintf(to, sizeof to, "n%" PRIu32, i);
    for (uint32_t k = 0; n->in && k < n->nin; k++)
      edge(f, g, n->in[k].id, to);
  }
  for (uint32_t i = 0; g->outputs && i < g->noutputs; i++) {
    b.len = 0;
    sb_add(&b, "output %" PRIu32, i);
    if (g->outputs[i].name && *g->outputs[i].name) sb_add(&b, " \"%s\"", g->outputs[i].name);
    fprintf(f, "  out%" PRIu32 " [shape=ellipse, peripheries=2, label=\"", i);
    esc(f, b.s);
    fputs("\"];\n", f);
    char to[32];
    snprintf(to, sizeof to, "out%" PRIu32, i);
    edge(f, g, g->outputs[i].v.id, to);
  }
  fputs("}\n", f);
  if (ferror(f))
    return g->ctx ? kc_errorf(g->ctx, KC_ERR_IO, "cannot write the dot graph of @%s", g->name)
                  : KC_ERR_IO;
  return KC_OK;
}

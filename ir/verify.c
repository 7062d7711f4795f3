/*
 * ir/verify.c - kc_graph_verify: checks every structural and type rule of a graph and reports
 * the first violation, naming the node, in the context's error buffer.
 *
 * Phases, each relying on the ones before (so later phases may index without re-checking):
 *   1. graph inputs: ids in range, typed, not defined by a node;
 *   2. structure, node by node in program order: op code, arity against ops.def, results (range,
 *      duplicates, def back-links, types), operands (range, defined, defined earlier, cycles),
 *      attributes against the op's schema;
 *   3. graph outputs defined; every value's def points at a node that really defines it;
 *   4. types, node by node: body graphs verified recursively, then the op's shape function is
 *      re-run on a scratch copy of the result types and compared with the recorded ones.
 * Every typed input and result must have dims a tensor can have (kc_dim_invalid: not negative,
 * no division by 0, no product past int64) and an element count and byte size that fit int64
 * (kc_type_overflows): a size past that cannot be allocated or indexed, and would otherwise
 * surface only when a run computes it.
 * Invariants: never crashes on a malformed graph (every id and pointer is checked before use);
 * leaves the recorded types as they were (only the inferred `known` contents are kept, because
 * later nodes' inference needs them, as in kc_graph_infer).
 */
#include "internal.h"
#include "text.h"

#include <stdlib.h>
#include <string.h>

#define UNDEF UINT32_MAX /* def_at[]: value defined nowhere */

typedef struct vctx {
  kc_graph *g;
  uint32_t *def_at;  /* per value: 0 graph input, i+1 node i (first definer), UNDEF */
  uint32_t *last_at; /* per value: i+1 of the last node defining it, or UNDEF */
} vctx;

/* ---- messages ------------------------------------------------------------------------------- */

/* msg already starts with "FILE:" of g's source text (a located message). */
static bool located(const kc_graph *g, const char *msg) {
  size_t l = g->src_file ? strlen(g->src_file) : 0;
  return l && strncmp(msg, g->src_file, l) == 0 && msg[l] == ':';
}

static kc_status graph_err(kc_graph *g, kc_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static kc_status graph_err(kc_graph *g, kc_status s, const char *fmt, ...) {
  if (!g->ctx) return s;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return kc_errorf(g->ctx, s, "graph @%s: %s", g->name ? g->name : "?", msg);
}

/* kc_node_errorf, made safe for nodes whose op or result array is itself broken. */
static kc_status node_err(kc_graph *g, uint32_t ni, kc_status s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static kc_status node_err(kc_graph *g, uint32_t ni, kc_status s, const char *fmt, ...) {
  if (!g->ctx) return s;
  char msg[1536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const kc_node *n = &g->nodes[ni];
  if ((unsigned)n->op >= KC_OP_COUNT || (n->nout && !n->out))
    return kc_errorf(g->ctx, s, "node #%u of graph @%s: %s", ni, g->name ? g->name : "?", msg);
  return kc_node_errorf(g, n, s, "%s", msg);
}

/* Text of a dtype/rank/dims triple, as the text IR writes it ("f32[B,768]"). */
static const char *type_str(const kc_graph *g, kc_dtype t, int rank, const kc_dim *dims, char *buf,
                            size_t size) {
  /* spelled as ir/print.c writes types: ? untyped, f32[*] rank unknown */
  if (t == KC_DT_NONE || (unsigned)t >= KC_DT_COUNT) {
    snprintf(buf, size, "?");
    return buf;
  }
  if (rank < 0) {
    snprintf(buf, size, "%s[*]", kc_dtype_name(t));
    return buf;
  }
  size_t len = (size_t)snprintf(buf, size, "%s[", kc_dtype_name(t));
  for (int i = 0; i < rank && len < size; i++) {
    char d[256];
    kc_dim_str(g, dims[i], d, sizeof d);
    len += (size_t)snprintf(buf + len, size - len, "%s%s", i ? "," : "", d);
  }
  if (len < size) snprintf(buf + len, size - len, "]");
  return buf;
}

static const char *val_type_str(const kc_graph *g, const kc_value *v, char *buf, size_t size) {
  return type_str(g, v->dtype, v->rank, v->dims, buf, size);
}

/* ---- sizes ---------------------------------------------------------------------------------- */

/* Does d name a symbol (rather than being a constant expression)? */
static bool mentions_sym(const kc_graph *g, kc_dim d, int depth) {
  if (!KC_DIM_IS_SYM(d)) return false;
  uint32_t e = KC_DIM_EXPR(d);
  if (e >= g->ndexprs || depth > 64) return true; /* unknown: not provably constant */
  const kc_dexpr *x = &g->dexprs[e];
  if (x->kind == KC_DX_SYM) return true;
  if (x->kind == KC_DX_CONST) return false;
  return mentions_sym(g, x->a, depth + 1) || mentions_sym(g, x->b, depth + 1);
}

bool kc_type_overflows(const kc_graph *g, kc_dtype t, int rank, const kc_dim *dims) {
  int64_t n = 1;
  bool over = false, zero = false;
  for (int i = 0; i < rank; i++) {
    int64_t v = dims[i];
    if (KC_DIM_IS_SYM(v)) {
      if (mentions_sym(g, v, 0)) continue; /* any size the symbols take later is checked then */
      /* a constant expression: ir/dim.c keeps products that overflowed as raw nodes */
      if (!kc_dim_eval(g, dims[i], NULL, NULL, &v)) {
        over = true;
        continue;
      }
    }
    if (v == 0)
      zero = true;
    else if (v > 0 && __builtin_mul_overflow(n, v, &n))
      over = true;
  }
  int64_t bytes, size = (int64_t)kc_dtype_size(t);
  if (!over && size > 0 && __builtin_mul_overflow(n, size, &bytes)) over = true;
  return over && !zero;
}

/* The first dim of a recorded type that no tensor can have (kc_dim_invalid), or -1. */
static int bad_dim(const kc_graph *g, const kc_value *v, const char **why) {
  for (int i = 0; i < v->rank; i++)
    if ((*why = kc_dim_invalid(g, v->dims[i])) != NULL) return i;
  return -1;
}

/* ---- phase 1: graph inputs ------------------------------------------------------------------ */

/* A recorded type is well formed: rank in range and symbolic dims name existing expressions. */
static bool type_ok(const kc_graph *g, const kc_value *v) {
  if (v->rank < 0) return true;
  if (v->rank > KC_MAX_RANK || (unsigned)v->dtype >= KC_DT_COUNT) return false;
  for (int i = 0; i < v->rank; i++)
    if (KC_DIM_IS_SYM(v->dims[i]) && KC_DIM_EXPR(v->dims[i]) >= g->ndexprs) return false;
  return true;
}

static kc_status check_inputs(vctx *c) {
  kc_graph *g = c->g;
  for (uint32_t i = 0; i < g->ninputs; i++) {
    uint32_t id = g->inputs[i].id;
    if (id == 0 || id >= g->nvals)
      return graph_err(g, KC_ERR_VERIFY, "input %u refers to %%%u, which does not exist", i, id);
    if (c->def_at[id] != UNDEF)
      return graph_err(g, KC_ERR_VERIFY, "%%%u is defined more than once (input %u)", id, i);
    c->def_at[id] = 0;
    const kc_value *v = &g->vals[id];

    if (!type_ok(g, v)) return graph_err(g, KC_ERR_VERIFY, "input %%%u has a malformed type", id);
    if (v->rank < 0 || v->dtype == KC_DT_NONE)
      return graph_err(g, KC_ERR_TYPE, "input %%%u has no type", id);
    char tb[512];
    const char *why;
    int d = bad_dim(g, v, &why);
    if (d >= 0)
      return graph_err(g, KC_ERR_SHAPE, "input %%%u is %s: dim %d %s", id,
                       val_type_str(g, v, tb, sizeof tb), d, why);
    if (kc_type_overflows(g, v->dtype, v->rank, v->dims))
      return graph_err(g, KC_ERR_SHAPE,
                       "input %%%u is %s: its element count or byte size overflows int64", id,
                       val_type_str(g, v, tb, sizeof tb));
  }
  return KC_OK;
}

/* ---- phase 2: structure --------------------------------------------------------------------- */

/* First definer of every value by a live node, so operands can be told "later" from "never". */
static void collect_defs(vctx *c) {
  kc_graph *g = c->g;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    if (n->op == KC_OP_NOP || !n->out) continue;
    for (uint32_t j = 0; j < n->nout; j++) {
      uint32_t id = n->out[j].id;
      if (!id || id >= g->nvals) continue;
      if (c->def_at[id] == UNDEF) c->def_at[id] = i + 1;
      c->last_at[id] = i + 1;
    }
  }
}

static kc_status check_arity(vctx *c, uint32_t ni) {
  kc_graph *g = c->g;
  const kc_node *n = &g->nodes[ni];
  const kc_op_info *op = &kc_ops[n->op];
  char want[64];
  if ((int64_t)n->nin < op->min_in || (op->max_in >= 0 && (int64_t)n->nin > op->max_in))
    return node_err(g, ni, KC_ERR_VERIFY, "takes %s input(s), has %u",
                    kc_arity_text(op->min_in, op->max_in, want, sizeof want), n->nin);
  if ((int64_t)n->nout < op->min_out || (op->max_out >= 0 && (int64_t)n->nout > op->max_out))
    return node_err(g, ni, KC_ERR_VERIFY, "gives %s result(s), has %u",
                    kc_arity_text(op->min_out, op->max_out, want, sizeof want), n->nout);
  if ((n->nin && !n->in) || (n->nattr && !n->attrs))
    return node_err(g, ni, KC_ERR_VERIFY, "has a missing operand or attribute array");
  return KC_OK;
}

static const char *node_name(const kc_graph *g, uint32_t ni, char *buf, size_t size) {
  const kc_node *n = &g->nodes[ni];
  if (n->nout && n->out && n->out[0].id)
    snprintf(buf, size, "%%%u (%s)", n->out[0].id, kc_ops[n->op].name);
  else
    snprintf(buf, size, "#%u (%s)", ni, kc_ops[n->op].name);
  return buf;
}

static kc_status check_results(vctx *c, uint32_t ni) {
  kc_graph *g = c->g;
  const kc_node *n = &g->nodes[ni];
  bool source = kc_ops[n->op].cls == KC_CLASS_SOURCE;
  char tb[512];
  for (uint32_t j = 0; j < n->nout; j++) {
    uint32_t id = n->out[j].id;
    if (id == 0) {
      if ((int64_t)j < kc_ops[n->op].min_out)
        return node_err(g, ni, KC_ERR_VERIFY, "required result %u is missing", j);
      continue;
    }
    if (id >= g->nvals)
      return node_err(g, ni, KC_ERR_VERIFY, "result %u is %%%u, which does not exist (%u values)",
                      j, id, g->nvals);
    char nb[128];
    if (c->def_at[id] != ni + 1)
      return node_err(g, ni, KC_ERR_VERIFY, "%%%u is defined more than once (also %s)", id,
                      c->def_at[id] == 0 ? "a graph input" : "by an earlier node");
    if (c->last_at[id] != ni + 1)
      return node_err(g, ni, KC_ERR_VERIFY, "%%%u is defined more than once (also by node %s)", id,
                      node_name(g, c->last_at[id] - 1, nb, sizeof nb));
    for (uint32_t k = 0; k < j; k++)
      if (n->out[k].id == id)
        return node_err(g, ni, KC_ERR_VERIFY, "%%%u is defined more than once (results %u and %u)",
                        id, k, j);
    const kc_value *v = &g->vals[id];
    if (v->def != ni + 1 || v->def_out != j)
      return node_err(g, ni, KC_ERR_VERIFY,
                      "dangling def: %%%u records node #%u result %u as its definition", id,
                      v->def ? v->def - 1 : 0, v->def_out);
    if (!type_ok(g, v))
      return node_err(g, ni, KC_ERR_VERIFY, "result %%%u has a malformed type", id);
    if (v->rank < 0 || v->dtype == KC_DT_NONE)
      return node_err(g, ni, KC_ERR_TYPE, "%s %%%u has no type (%s)", source ? "source" : "result",
                      id, val_type_str(g, v, tb, sizeof tb));
    const char *why;
    int d = bad_dim(g, v, &why);
    if (d >= 0)
      return node_err(g, ni, KC_ERR_SHAPE, "result %%%u is %s: dim %d %s", id,
                      val_type_str(g, v, tb, sizeof tb), d, why);
    if (kc_type_overflows(g, v->dtype, v->rank, v->dims))
      return node_err(g, ni, KC_ERR_SHAPE,
                      "result %%%u is %s: its element count or byte size overflows int64", id,
                      val_type_str(g, v, tb, sizeof tb));
  }
  return KC_OK;
}

/* Does node `from` depend, through operands, on a result of node `target`? */
static bool depends_on(vctx *c, uint32_t from, uint32_t target, unsigned char *seen) {
  kc_graph *g = c->g;
  uint32_t *stack = malloc((size_t)(g->nnodes + 1) * sizeof *stack);
  if (!stack) return false;
  uint32_t sp = 0;
  stack[sp++] = from;
  seen[from] = 1;
  bool found = false;
  while (sp && !found) {
    const kc_node *n = &g->nodes[stack[--sp]];
    for (uint32_t k = 0; k < n->nin && n->in; k++) {
      uint32_t id = n->in[k].id;
      if (!id || id >= g->nvals || c->def_at[id] == UNDEF || c->def_at[id] == 0) continue;
      uint32_t d = c->def_at[id] - 1;
      if (d == target) {
        found = true;
        break;
      }
      if (!seen[d]) {
        seen[d] = 1;
        stack[sp++] = d;
      }
    }
  }
  free(stack);
  return found;
}

static kc_status check_operands(vctx *c, uint32_t ni) {
  kc_graph *g = c->g;
  const kc_node *n = &g->nodes[ni];
  char nb[128];
  for (uint32_t k = 0; k < n->nin; k++) {
    uint32_t id = n->in[k].id;
    if (id == 0) {
      if ((int64_t)k < kc_ops[n->op].min_in)
        return node_err(g, ni, KC_ERR_VERIFY, "required input %u is missing", k);
      continue;
    }
    if (id >= g->nvals)
      return node_err(g, ni, KC_ERR_VERIFY, "input %u is %%%u, which does not exist (%u values)", k,
                      id, g->nvals);
    uint32_t d = c->def_at[id];
    if (d == UNDEF)
      return node_err(g, ni, KC_ERR_VERIFY, "input %u uses %%%u, which is never defined", k, id);
    if (d == 0 || d - 1 < ni) continue;
    if (d - 1 == ni)
      return node_err(g, ni, KC_ERR_VERIFY, "cycle: input %u reads its own result %%%u", k, id);
    unsigned char *seen = calloc(g->nnodes, 1);
    if (!seen) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in the verifier");
    bool cyc = depends_on(c, d - 1, ni, seen);
    free(seen);
    node_name(g, d - 1, nb, sizeof nb);
    if (cyc)
      return node_err(g, ni, KC_ERR_VERIFY,
                      "cycle: input %u reads %%%u, defined by later node %s, which depends on "
                      "this node",
                      k, id, nb);
    return node_err(g, ni, KC_ERR_VERIFY,
                    "input %u uses %%%u before its definition (by later node %s)", k, id, nb);
  }
  return KC_OK;
}

/* ---- attributes -------------------------------------------------------------------------------
 */

static const char *kind_word(char k) {
  switch (k) {
  case 'i': return "an int";
  case 'f': return "a float";
  case 's': return "a string";
  case 'I': return "a list of ints";
  case 'F': return "a list of floats";
  case 't': return "a dtype";
  case 'T': return "a tensor";
  }
  return "an unknown kind";
}

static char attr_letter(kc_attr_kind k) {
  switch (k) {
  case KC_ATTR_INT: return 'i';
  case KC_ATTR_FLOAT: return 'f';
  case KC_ATTR_STRING: return 's';
  case KC_ATTR_INTS: return 'I';
  case KC_ATTR_FLOATS: return 'F';
  case KC_ATTR_DTYPE: return 't';
  case KC_ATTR_TENSOR: return 'T';
  }
  return '?';
}

/* Does attribute a fit schema letter want? Ints stand for floats (`eps=1`), and an empty list
 * has no element kind to speak of. */
static bool attr_fits(const kc_attr *a, char want) {
  char have = attr_letter(a->kind);
  if (have == want) return true;
  if (want == 'f' && have == 'i') return true;
  if (want == 'F' && have == 'I') return true;
  if (want == 'I' && have == 'F' && a->u.floats.n == 0) return true;
  return false;
}

/* The schema's attribute names, comma separated, for "unknown attribute" messages. */
static const char *schema_names(kc_op op, char *buf, size_t size) {
  size_t len = 0;
  buf[0] = 0;
  for (const char *p = kc_ops[op].attrs; p && *p && len + 1 < size;) {
    const char *colon = strchr(p, ':'), *end = strchr(p, ',');
    if (!end) end = p + strlen(p);
    if (!colon || colon > end) colon = end;
    len += (size_t)snprintf(buf + len, size - len, "%s%.*s", len ? ", " : "", (int)(colon - p), p);
    p = *end ? end + 1 : end;
  }
  return buf;
}

static kc_status check_attr_values(vctx *c, uint32_t ni, const kc_attr *a) {
  kc_graph *g = c->g;
  bool bad = false;
  switch (a->kind) {
  case KC_ATTR_STRING: bad = !a->u.s; break;
  case KC_ATTR_INTS: bad = a->u.ints.n && !a->u.ints.v; break;
  case KC_ATTR_FLOATS: bad = a->u.floats.n && !a->u.floats.v; break;
  case KC_ATTR_DTYPE: bad = (unsigned)a->u.t >= KC_DT_COUNT || a->u.t == KC_DT_NONE; break;
  case KC_ATTR_TENSOR:
    if (a->u.tensor >= g->ntensors)
      return node_err(g, ni, KC_ERR_VERIFY, "attribute '%s' refers to tensor %u of %u", a->name,
                      a->u.tensor, g->ntensors);
    break;
  default: break;
  }
  if (bad) return node_err(g, ni, KC_ERR_VERIFY, "attribute '%s' has a malformed value", a->name);
  return KC_OK;
}

static kc_status check_attrs(vctx *c, uint32_t ni) {
  kc_graph *g = c->g;
  const kc_node *n = &g->nodes[ni];
  char names[512];
  for (uint32_t k = 0; k < n->nattr; k++) {
    const kc_attr *a = &n->attrs[k];
    if (!a->name) return node_err(g, ni, KC_ERR_VERIFY, "attribute %u has no name", k);
    for (uint32_t m = 0; m < k; m++)
      if (n->attrs[m].name && strcmp(n->attrs[m].name, a->name) == 0)
        return node_err(g, ni, KC_ERR_VERIFY, "attribute '%s' is given twice", a->name);
    char want;
    const char *def;
    bool req;
    if (!kc_op_attr_schema(n->op, a->name, &want, &def, &req)) {
      schema_names(n->op, names, sizeof names);
      return node_err(g, ni, KC_ERR_VERIFY, "unknown attribute '%s' (%s%s)", a->name,
                      names[0] ? "known: " : "the op takes none", names);
    }
    if (!attr_fits(a, want))
      return node_err(g, ni, KC_ERR_TYPE, "attribute '%s' must be %s, not %s", a->name,
                      kind_word(want), kind_word(attr_letter(a->kind)));
    kc_status s = check_attr_values(c, ni, a);
    if (s != KC_OK) return s;
  }
  /* required attributes: walk the schema, each "name:K" with nothing after K is required */
  for (const char *p = kc_ops[n->op].attrs; p && *p;) {
    const char *end = strchr(p, ','), *colon = strchr(p, ':');
    if (!end) end = p + strlen(p);
    if (colon && colon < end && colon + 2 == end) {
      char name[64];
      snprintf(name, sizeof name, "%.*s", (int)(colon - p), p);
      if (!kc_node_attr(n, name))
        return node_err(g, ni, KC_ERR_VERIFY, "missing required attribute '%s' (%s)", name,
                        kind_word(colon[1]));
    }
    p = *end ? end + 1 : end;
  }
  return KC_OK;
}

static kc_status check_node(vctx *c, uint32_t ni) {
  kc_graph *g = c->g;
  const kc_node *n = &g->nodes[ni];
  if ((unsigned)n->op >= KC_OP_COUNT)
    return node_err(g, ni, KC_ERR_VERIFY, "invalid op code %d", (int)n->op);
  if (n->nout && !n->out) return node_err(g, ni, KC_ERR_VERIFY, "has no result array");
  kc_status s = check_arity(c, ni);
  if (s == KC_OK) s = check_results(c, ni);
  if (s == KC_OK) s = check_operands(c, ni);
  if (s == KC_OK) s = check_attrs(c, ni);
  if (s != KC_OK) return s;
  bool wants_body = kc_ops[n->op].flags & KC_OPF_BODY;
  if (wants_body && !n->body) return node_err(g, ni, KC_ERR_VERIFY, "has no body graph");
  if (!wants_body && n->body) return node_err(g, ni, KC_ERR_VERIFY, "has a body graph it cannot");
  return KC_OK;
}

/* ---- phase 3: outputs and def links --------------------------------------------------------- */

static kc_status check_outputs(vctx *c) {
  kc_graph *g = c->g;
  if (g->noutputs == 0) return graph_err(g, KC_ERR_VERIFY, "has no outputs");
  for (uint32_t i = 0; i < g->noutputs; i++) {
    uint32_t id = g->outputs[i].v.id;
    if (id == 0 || id >= g->nvals)
      return graph_err(g, KC_ERR_VERIFY, "output %u is %%%u, which does not exist", i, id);
    if (c->def_at[id] == UNDEF)
      return graph_err(g, KC_ERR_VERIFY, "output %u (%%%u) is never defined", i, id);
  }
  for (uint32_t id = 1; id < g->nvals; id++) {
    const kc_value *v = &g->vals[id];
    if (v->def == 0 || (c->def_at[id] != UNDEF && c->def_at[id] != 0)) continue;
    if (c->def_at[id] == 0) /* a node defining it was reported as a duplicate already */
      return graph_err(g, KC_ERR_VERIFY,
                       "dangling def: input %%%u records node #%u as its definition", id,
                       v->def - 1);
    /* a value left behind by a deleted node is harmless; one claiming a live node is not */
    if (v->def > g->nnodes)
      return graph_err(g, KC_ERR_VERIFY, "dangling def: %%%u names node #%u of %u", id, v->def - 1,
                       g->nnodes);
    if (g->nodes[v->def - 1].op != KC_OP_NOP)
      return graph_err(g, KC_ERR_VERIFY,
                       "dangling def: %%%u names node #%u, which does not define it", id,
                       v->def - 1);
  }
  return KC_OK;
}

/* ---- phase 4: types ------------------------------------------------------------------------- */

/* Does dim d (of g) mention a symbol created at or after expression index `fresh`? Such a symbol
 * is a size inference could not name, so any recorded dim is accepted in its place. */
static bool mentions_new_sym(const kc_graph *g, kc_dim d, uint32_t fresh, int depth) {
  if (!KC_DIM_IS_SYM(d) || depth > 64) return false;
  uint32_t e = KC_DIM_EXPR(d);
  if (e >= g->ndexprs) return false;
  const kc_dexpr *x = &g->dexprs[e];
  if (x->kind == KC_DX_SYM) return e >= fresh;
  if (x->kind != KC_DX_ADD && x->kind != KC_DX_MUL && x->kind != KC_DX_DIV && x->kind != KC_DX_MOD)
    return false; /* constants have no operands */
  return mentions_new_sym(g, x->a, fresh, depth + 1) || mentions_new_sym(g, x->b, fresh, depth + 1);
}

/* Dims are hash-consed, so == decides, except for expressions too big to canonicalize (ir/dim.c
 * keeps those raw): their text still tells. */
static bool same_dim(const kc_graph *g, kc_dim a, kc_dim b) {
  if (a == b) return true;
  if (!KC_DIM_IS_SYM(a) || !KC_DIM_IS_SYM(b)) return false;
  char x[256], y[256];
  return strcmp(kc_dim_str(g, a, x, sizeof x), kc_dim_str(g, b, y, sizeof y)) == 0;
}

static kc_status compare_types(vctx *c, uint32_t ni, const kc_value *rec, const kc_value *inf,
                               uint32_t id, uint32_t fresh) {
  kc_graph *g = c->g;
  bool same_dims = rec->rank == inf->rank;
  for (int i = 0; same_dims && i < rec->rank; i++)
    same_dims =
        same_dim(g, rec->dims[i], inf->dims[i]) || mentions_new_sym(g, inf->dims[i], fresh, 0);
  if (rec->dtype == inf->dtype && same_dims) return KC_OK;
  char a[512], b[512];
  return node_err(g, ni, rec->dtype != inf->dtype ? KC_ERR_TYPE : KC_ERR_SHAPE,
                  "result %%%u: printed %s but inferred %s", id, val_type_str(g, rec, a, sizeof a),
                  val_type_str(g, inf, b, sizeof b));
}

/* Type text of value v of graph g ("f32[B,768]"), for comparing across a body boundary. */
static const char *cross_type(const kc_graph *g, kc_val v, char *buf, size_t size) {
  return val_type_str(g, &g->vals[v.id], buf, size);
}

static kc_status check_body(vctx *c, uint32_t ni) {
  kc_graph *g = c->g;
  const kc_node *n = &g->nodes[ni];
  kc_graph *b = n->body;
  kc_status s = kc_graph_verify(b);
  if (s != KC_OK) {
    char inner[2048];
    snprintf(inner, sizeof inner, "%s", g->ctx ? kc_last_error(g->ctx) : "");
    if (located(b, inner)) return s; /* file:line:col of the body's node says where already */
    return node_err(g, ni, s, "in body: %s", inner);
  }
  if (b->ninputs != n->nin)
    return node_err(g, ni, KC_ERR_VERIFY, "body takes %u input(s), node has %u", b->ninputs,
                    n->nin);
  if (b->noutputs != n->nout)
    return node_err(g, ni, KC_ERR_VERIFY, "body gives %u result(s), node has %u", b->noutputs,
                    n->nout);
  char outer[512], inner[512];
  for (uint32_t k = 0; k < n->nin; k++) {
    if (!n->in[k].id)
      return node_err(g, ni, KC_ERR_VERIFY, "input %u is absent but the body reads it", k);
    cross_type(g, n->in[k], outer, sizeof outer);
    cross_type(b, b->inputs[k], inner, sizeof inner);
    if (strcmp(outer, inner) != 0)
      return node_err(g, ni, KC_ERR_TYPE, "input %u (%%%u) is %s but the body takes %s", k,
                      n->in[k].id, outer, inner);
  }
  return KC_OK;
}

static kc_status check_types(vctx *c, uint32_t ni) {
  kc_graph *g = c->g;
  kc_node *n = &g->nodes[ni];
  if (n->body) {
    kc_status s = check_body(c, ni);
    if (s != KC_OK) return s;
  }
  kc_value saved[16];
  kc_value *rec = n->nout <= 16 ? saved : malloc(n->nout * sizeof *rec);
  if (!rec) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in the verifier");
  /* sources print their type rather than infer it: their shape function reads it */
  bool source = kc_ops[n->op].cls == KC_CLASS_SOURCE;
  for (uint32_t j = 0; j < n->nout; j++) {
    if (!n->out[j].id) continue;
    kc_value *v = &g->vals[n->out[j].id];
    rec[j] = *v;
    if (source) continue;
    v->dtype = KC_DT_NONE;
    v->rank = -1;
    v->known = NULL;
    v->nknown = 0;
  }
  uint32_t fresh = g->ndexprs;
  kc_status s = kc_node_infer(g, ni);
  n = &g->nodes[ni]; /* shape functions may add values or nodes */
  for (uint32_t j = 0; j < n->nout; j++) {
    if (!n->out[j].id) continue;
    kc_value *v = &g->vals[n->out[j].id];
    kc_value inf = *v;
    *v = rec[j];
    if (inf.known) {
      v->known = inf.known;
      v->nknown = inf.nknown;
    }
    if (s == KC_OK && !(inf.rank < 0 && source))
      s = compare_types(c, ni, &rec[j], &inf, n->out[j].id, fresh);
  }
  if (rec != saved) free(rec);
  return s;
}

/* ---- driver --------------------------------------------------------------------------------- */

/* The error about node ni, prefixed with its file:line:col and followed by its source line and
 * a caret when g was parsed from text (chibicc style, as parse errors); else left as it is. */
static kc_status locate(kc_graph *g, uint32_t ni, kc_status s) {
  uint32_t at = g->nodes[ni].src;
  if (s == KC_ERR_NOMEM || !g->ctx || !g->src_text || !at || at - 1 > strlen(g->src_text)) return s;
  char *msg = strdup(kc_last_error(g->ctx));
  if (msg && !located(g, msg))
    kc_text_error_at(g->ctx, s, g->src_file, g->src_text, g->src_text + at - 1, msg);
  free(msg);
  return s;
}

static kc_status verify(vctx *c) {
  kc_graph *g = c->g;
  kc_status s = check_inputs(c);
  if (s != KC_OK) return s;
  collect_defs(c);
  for (uint32_t i = 0; i < g->nnodes; i++)
    if (g->nodes[i].op != KC_OP_NOP && (s = check_node(c, i)) != KC_OK) return locate(g, i, s);
  if ((s = check_outputs(c)) != KC_OK) return s;
  for (uint32_t i = 0; i < g->nnodes; i++)
    if (g->nodes[i].op != KC_OP_NOP && (s = check_types(c, i)) != KC_OK) return locate(g, i, s);
  return KC_OK;
}

kc_status kc_graph_verify(kc_graph *g) {
  if (!g) return KC_ERR_INVALID_ARG;
  kc_clear_error(g->ctx);
  if (!g->vals || g->nvals == 0 || (g->nnodes && !g->nodes) || (g->ninputs && !g->inputs) ||
      (g->noutputs && !g->outputs))
    return graph_err(g, KC_ERR_VERIFY, "has missing value, node, input or output arrays");
  if (g->sticky != KC_OK) {
    /* the failed builder call wrote the real message; keep it unless it is gone */
    if (g->ctx && !kc_last_error(g->ctx)[0])
      graph_err(g, g->sticky, "a builder call failed earlier (%s)", kc_status_str(g->sticky));
    return g->sticky;
  }
  vctx c = {g, malloc((size_t)g->nvals * sizeof(uint32_t)),
            malloc((size_t)g->nvals * sizeof(uint32_t))};
  kc_status s = KC_ERR_NOMEM;
  if (c.def_at && c.last_at) {
    for (uint32_t i = 0; i < g->nvals; i++)
      c.def_at[i] = c.last_at[i] = UNDEF;
    s = verify(&c);
  } else if (g->ctx) {
    kc_errorf(g->ctx, s, "out of memory in the verifier");
  }
  free(c.def_at);
  free(c.last_at);
  return s;
}

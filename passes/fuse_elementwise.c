/*
 * passes/fuse_elementwise.c - the fuse-elementwise pass: connected elementwise and broadcasting
 * ops (ops.def classes ELEMWISE and BROADCAST: arithmetic, math, compare, where, clip, cast,
 * gelu...) become one `fused` node whose body graph holds them, so the region runs as one loop
 * nest with its intermediates in registers (codegen/cpu/fused.c, codegen/cuda/fused.c).
 *
 * This is graph partitioning, not a fixed pattern, so it is not a matcher rule set (as fold is
 * not). Regions grow backwards from a root, the last node of the region in program order:
 * roots are taken from the end of the graph, and a root's producers are considered from the
 * latest one down (a heap), so by the time a producer is looked at, every reader it has later in
 * the program has been decided. A producer joins when
 *   - it is fusible: elementwise or broadcasting, one result, not a view, not random, without
 *     a body or tensor attribute, not a shape computation (its contents feed shape inference);
 *   - its result broadcasts to the root's shape (the region's one output shape);
 *   - every reader outside the region comes after the root in program order (a graph output
 *     counts as last); then, when there are outside readers, its result must have the root's
 *     shape exactly and becomes an extra output of the region;
 *   - the region keeps at most MAX_INPUTS inputs, MAX_OUTPUTS outputs and MAX_OPS ops.
 * A one-element constant with data read by the region goes into the body (the emitter makes it
 * an immediate); every other outside value becomes an input. A region of one op stays as it was.
 *
 * Why this is correct: every member is at or before the root and every outside reader of a
 * member is after it, so the fused node, placed where the root was, is defined before all its
 * readers and reads only values defined before it (no cycle through the outside: anything that
 * reads a member comes after the root). Later regions (earlier roots) cannot take a member of an
 * earlier one, and a producer refused by one region stays free for the next. The body is typed
 * by the same shape functions, and the fused node's results must come out with the types of the
 * values they replace, else the region is dropped.
 *
 * Invariants: the graph is in program order before and after; each node is in at most one
 * region; no global state: everything lives in one fz struct for one run.
 */
#include "passes/internal.h"
#include "passes/match.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INPUTS 16
#define MAX_OUTPUTS 8
#define MAX_OPS 64
#define MAX_LOC 200

typedef struct fz {
  kc_graph *g;
  kc_pass_ctx *pc;
  bool explain;
  uint32_t nn, nv;       /* nodes and values when the pass began */
  uint32_t *ustart;      /* users of value v: user[ustart[v] .. ustart[v + 1]) (node indices) */
  uint32_t *user;        /* a node reading v twice is listed twice */
  bool *is_out;          /* per value: a graph output */
  int32_t *region;       /* per node: its region, -1: none */
  uint32_t *in_stamp;    /* per value: the growth (stamp) that counts it as a region input */
  uint32_t stamp;        /* the current growth's stamp, one per grow() call */
  uint32_t *heap, nheap; /* candidate producers of the region being grown, latest first */
  bool *queued;          /* per node: in the heap for the current region */
  kc_val *map;           /* per value: its value in the body being built */
  uint8_t *bound;        /* per dim expression: 1 its symbols are all bound by graph inputs,
                            2 not, 0 not looked at yet */
  uint32_t ndx;          /* dim expressions when the pass began (bound's size) */
} fz;

/* A region: members (node indices, ascending once built), root = the last. */
typedef struct region {
  uint32_t *member, nmember;
  uint32_t root;
  uint32_t ninputs, nextra;
} region;

/* ---- fusibility ----------------------------------------------------------------------------- */

/* Does dim d (of a graph input) mention the symbol called name? */
static bool input_names(const kc_graph *g, kc_dim d, const char *name, int depth) {
  if (!KC_DIM_IS_SYM(d) || depth > 64) return false;
  uint32_t e = KC_DIM_EXPR(d);
  if (e >= g->ndexprs) return false;
  const kc_dexpr *x = &g->dexprs[e];
  if (x->kind == KC_DX_SYM) return strcmp(x->name, name) == 0;
  if (x->kind == KC_DX_CONST) return false;
  return input_names(g, x->a, name, depth + 1) || input_names(g, x->b, name, depth + 1);
}

/*
 * Is every symbol of dim d one a graph input's dims name? A size that data decides (range over
 * a computed length: a fresh unkN) is settled at run time by re-running the shape function of
 * the node that makes it and of those after; a fused node's shape comes from its body, typed
 * once at compile time, so it would keep the unsettled symbol. Such values stay unfused.
 */
static bool dim_bound(fz *f, kc_dim d, int depth) {
  const kc_graph *g = f->g;
  if (!KC_DIM_IS_SYM(d)) return true;
  uint32_t e = KC_DIM_EXPR(d);
  if (e >= f->ndx || depth > 64) return false;
  if (f->bound[e]) return f->bound[e] == 1;
  const kc_dexpr *x = &g->dexprs[e];
  bool ok;
  if (x->kind == KC_DX_CONST) {
    ok = true;
  } else if (x->kind == KC_DX_SYM) {
    ok = false;
    for (uint32_t i = 0; i < g->ninputs && !ok; i++) {
      const kc_value *v = kc_value_of(g, g->inputs[i]);
      for (int k = 0; k < v->rank && !ok; k++)
        ok = input_names(g, v->dims[k], x->name, 0);
    }
  } else {
    ok = dim_bound(f, x->a, depth + 1) && dim_bound(f, x->b, depth + 1);
  }
  f->bound[e] = ok ? 1 : 2;
  return ok;
}

static bool fusible(fz *f, const kc_node *n, const char **why) {
  const kc_graph *g = f->g;
  kc_op_class cls = kc_ops[n->op].cls;
  unsigned fl = kc_ops[n->op].flags;
  *why = "";
  if (n->op == KC_OP_NOP || (cls != KC_CLASS_ELEMWISE && cls != KC_CLASS_BROADCAST)) {
    *why = "not elementwise";
    return false;
  }
  if (fl & (KC_OPF_VIEW | KC_OPF_RANDOM | KC_OPF_BODY)) {
    *why = "a view or a random op";
    return false;
  }
  if (n->nout != 1 || !n->out[0].id || n->nin > 8) {
    *why = "several results or many inputs";
    return false;
  }
  const kc_value *o = kc_value_of(g, n->out[0]);
  if (o->rank < 0 || o->dtype == KC_DT_NONE) {
    *why = "untyped";
    return false;
  }
  if (o->known) {
    *why = "a shape computation (its contents are known to shape inference)";
    return false;
  }
  for (int d = 0; d < o->rank; d++)
    if (!dim_bound(f, o->dims[d], 0)) {
      *why = "its size depends on data (settled at run time)";
      return false;
    }
  for (uint32_t k = 0; k < n->nattr; k++)
    if (n->attrs[k].kind == KC_ATTR_TENSOR) {
      *why = "a tensor attribute";
      return false;
    }
  for (uint32_t j = 0; j < n->nin; j++)
    if (n->in[j].id && kc_value_of(g, n->in[j])->rank < 0) {
      *why = "an untyped input";
      return false;
    }
  return true;
}

/* Does value v broadcast to the root's shape (rank r, dims od)? */
static bool fits(const kc_graph *g, kc_val v, int r, const kc_dim *od) {
  const kc_value *x = kc_value_of(g, v);
  if (x->rank > r) return false;
  for (int d = 0; d < x->rank; d++) {
    kc_dim a = x->dims[d], b = od[r - x->rank + d];
    if (a != 1 && !kc_dim_same(g, a, b)) return false;
  }
  return true;
}

static bool same_shape(const kc_graph *g, kc_val a, kc_val b) {
  const kc_value *x = kc_value_of(g, a), *y = kc_value_of(g, b);
  if (x->rank != y->rank) return false;
  for (int d = 0; d < x->rank; d++)
    if (!kc_dim_same(g, x->dims[d], y->dims[d])) return false;
  return true;
}

/* A one-element constant with data: it goes into the body. */
static bool inline_const(const kc_graph *g, kc_val v) {
  const kc_tensor *t = kc_const_tensor(g, v);
  return t && kc_tensor_numel(t) == 1;
}

/* ---- analysis ------------------------------------------------------------------------------- */

static kc_status fz_init(fz *f, kc_graph *g, kc_pass_ctx *pc) {
  memset(f, 0, sizeof *f);
  f->g = g;
  f->pc = pc;
  f->explain = pc->opts && pc->opts->explain_fusion && pc->log;
  f->nn = g->nnodes;
  f->nv = g->nvals;
  size_t nn = f->nn + 1, nv = f->nv + 1;
  f->ustart = calloc(nv + 1, sizeof *f->ustart);
  f->is_out = calloc(nv, sizeof *f->is_out);
  f->region = malloc(nn * sizeof *f->region);
  f->in_stamp = calloc(nv, sizeof *f->in_stamp);
  f->heap = malloc(nn * sizeof *f->heap);
  f->queued = calloc(nn, sizeof *f->queued);
  f->map = calloc(nv, sizeof *f->map);
  f->ndx = g->ndexprs;
  f->bound = calloc(f->ndx + 1, sizeof *f->bound);
  if (!f->ustart || !f->is_out || !f->region || !f->in_stamp || !f->heap || !f->queued || !f->map ||
      !f->bound)
    return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in fuse-elementwise");
  uint32_t total = 0;
  for (uint32_t i = 0; i < f->nn; i++) {
    f->region[i] = -1;
    const kc_node *n = &g->nodes[i];
    if (n->op == KC_OP_NOP) continue;
    for (uint32_t j = 0; j < n->nin; j++)
      if (n->in[j].id && n->in[j].id < f->nv) f->ustart[n->in[j].id + 1]++, total++;
  }
  for (uint32_t v = 0; v < f->nv; v++)
    f->ustart[v + 1] += f->ustart[v];
  f->user = malloc((total + 1) * sizeof *f->user);
  uint32_t *fill = calloc(nv, sizeof *fill);
  if (!f->user || !fill) {
    free(fill);
    return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in fuse-elementwise");
  }
  for (uint32_t i = 0; i < f->nn; i++) {
    const kc_node *n = &g->nodes[i];
    if (n->op == KC_OP_NOP) continue;
    for (uint32_t j = 0; j < n->nin; j++) {
      uint32_t v = n->in[j].id;
      if (v && v < f->nv) f->user[f->ustart[v] + fill[v]++] = i;
    }
  }
  free(fill);
  for (uint32_t i = 0; i < g->noutputs; i++)
    if (g->outputs[i].v.id < f->nv) f->is_out[g->outputs[i].v.id] = true;
  return KC_OK;
}

static void fz_free(fz *f) {
  free(f->ustart);
  free(f->user);
  free(f->is_out);
  free(f->region);
  free(f->in_stamp);
  free(f->heap);
  free(f->queued);
  free(f->map);
  free(f->bound);
}

/* ---- the heap of candidate producers (max node index first) --------------------------------- */

static void heap_push(fz *f, uint32_t ni) {
  if (f->queued[ni]) return;
  f->queued[ni] = true;
  uint32_t i = f->nheap++;
  f->heap[i] = ni;
  while (i && f->heap[(i - 1) / 2] < f->heap[i]) {
    uint32_t p = (i - 1) / 2, t = f->heap[p];
    f->heap[p] = f->heap[i];
    f->heap[i] = t;
    i = p;
  }
}

static uint32_t heap_pop(fz *f) {
  uint32_t top = f->heap[0];
  f->heap[0] = f->heap[--f->nheap];
  for (uint32_t i = 0;;) {
    uint32_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < f->nheap && f->heap[l] > f->heap[m]) m = l;
    if (r < f->nheap && f->heap[r] > f->heap[m]) m = r;
    if (m == i) break;
    uint32_t t = f->heap[m];
    f->heap[m] = f->heap[i];
    f->heap[i] = t;
    i = m;
  }
  return top;
}

/* ---- growing a region ----------------------------------------------------------------------- */

static void note(fz *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note(fz *f, const char *fmt, ...) {
  if (!f->explain) return;
  va_list ap;
  va_start(ap, fmt);
  fprintf(f->pc->log, "%s: ", f->pc->name);
  vfprintf(f->pc->log, fmt, ap);
  fputc('\n', f->pc->log);
  va_end(ap);
}

/* Queue the producers of node ni's inputs that are not in a region yet. */
static void queue_producers(fz *f, uint32_t ni) {
  const kc_node *n = &f->g->nodes[ni];
  for (uint32_t j = 0; j < n->nin; j++) {
    uint32_t v = n->in[j].id, def = v ? f->g->vals[v].def : 0;
    if (def && def - 1 < f->nn && f->region[def - 1] < 0) heap_push(f, def - 1);
  }
}

/* Inputs the region would have with node ni in it (now: the inputs it has). */
static uint32_t inputs_with(fz *f, uint32_t ni, uint32_t now) {
  const kc_graph *g = f->g;
  const kc_node *n = &g->nodes[ni];
  uint32_t count = now, stamp = f->stamp;
  if (f->in_stamp[n->out[0].id] == stamp) count--; /* ni's result is no longer an input */
  for (uint32_t j = 0; j < n->nin; j++) {
    uint32_t v = n->in[j].id;
    if (!v || f->in_stamp[v] == stamp || inline_const(g, n->in[j])) continue;
    bool dup = false; /* the same value twice in ni */
    for (uint32_t k = 0; k < j && !dup; k++)
      dup = n->in[k].id == v;
    if (!dup) count++;
  }
  return count;
}

static void add_inputs(fz *f, uint32_t ni) {
  const kc_graph *g = f->g;
  const kc_node *n = &g->nodes[ni];
  uint32_t stamp = f->stamp;
  f->in_stamp[n->out[0].id] = 0;
  for (uint32_t j = 0; j < n->nin; j++)
    if (n->in[j].id && !inline_const(g, n->in[j])) f->in_stamp[n->in[j].id] = stamp;
}

/*
 * Can producer p join region rid (r: its root and counts so far)? *extra: it becomes an extra
 * output. False with the reason in why (empty: nothing worth saying, p is not fusible).
 */
static bool can_join(fz *f, int32_t rid, const region *r, uint32_t p, bool *extra, char *why,
                     size_t size) {
  const kc_graph *g = f->g;
  const kc_node *n = &g->nodes[p];
  kc_val y = n->out[0], root_y = g->nodes[r->root].out[0];
  const kc_value *rv = kc_value_of(g, root_y);
  const char *nf;
  why[0] = 0;
  if (!fusible(f, n, &nf)) return false;
  if (!fits(g, y, rv->rank, rv->dims)) {
    snprintf(why, size, "its shape does not broadcast to the region's");
    return false;
  }
  *extra = f->is_out[y.id];
  for (uint32_t k = f->ustart[y.id]; k < f->ustart[y.id + 1]; k++) {
    uint32_t u = f->user[k];
    if (f->region[u] == rid) continue;
    if (u < r->root) {
      snprintf(why, size, "%%%u (%s) reads it before the region ends",
               g->nodes[u].nout ? g->nodes[u].out[0].id : 0, kc_ops[g->nodes[u].op].name);
      return false;
    }
    *extra = true;
  }
  if (*extra && !same_shape(g, y, root_y)) {
    snprintf(why, size, "it is read outside the region and its shape is not the region's");
    return false;
  }
  if (*extra && r->nextra + 1 >= MAX_OUTPUTS) {
    snprintf(why, size, "the region has %d outputs already", MAX_OUTPUTS);
    return false;
  }
  if (r->nmember >= MAX_OPS) {
    snprintf(why, size, "the region has %d ops already", MAX_OPS);
    return false;
  }
  if (inputs_with(f, p, r->ninputs) > MAX_INPUTS) {
    snprintf(why, size, "the region would read more than %d inputs", MAX_INPUTS);
    return false;
  }
  return true;
}

/* Grow region rid from root; the members go to r->member (descending). */
static void grow(fz *f, int32_t rid, uint32_t root, region *r) {
  const kc_graph *g = f->g;
  r->root = root;
  r->nmember = 0;
  r->nextra = 0;
  r->member[r->nmember++] = root;
  f->region[root] = rid;
  f->stamp++;
  r->ninputs = inputs_with(f, root, 0);
  add_inputs(f, root);
  f->nheap = 0;
  queue_producers(f, root);
  while (f->nheap) {
    uint32_t p = heap_pop(f);
    f->queued[p] = false;
    if (f->region[p] >= 0) continue;
    bool extra = false;
    char why[256];
    if (!can_join(f, rid, r, p, &extra, why, sizeof why)) {
      char a[320], b[320];
      if (why[0])
        note(f, "%%%u (%s) stays out of the region at %%%u (%s): %s", g->nodes[p].out[0].id,
             kc_explain_node(g, p, a, sizeof a), g->nodes[root].out[0].id,
             kc_explain_node(g, root, b, sizeof b), why);
      continue;
    }
    r->ninputs = inputs_with(f, p, r->ninputs);
    add_inputs(f, p);
    f->region[p] = rid;
    r->member[r->nmember++] = p;
    if (extra) r->nextra++;
    queue_producers(f, p);
  }
  /* ascending program order for the body */
  for (uint32_t i = 0, j = r->nmember - 1; i < j; i++, j--) {
    uint32_t t = r->member[i];
    r->member[i] = r->member[j];
    r->member[j] = t;
  }
}

/* ---- building the fused node ---------------------------------------------------------------- */

static kc_status copy_attrs(kc_graph *dst, uint32_t ni, const kc_node *src) {
  for (uint32_t k = 0; k < src->nattr; k++) {
    const kc_attr *a = &src->attrs[k];
    switch (a->kind) {
    case KC_ATTR_INT: kc_node_set_int(dst, ni, a->name, a->u.i); break;
    case KC_ATTR_FLOAT: kc_node_set_float(dst, ni, a->name, a->u.f); break;
    case KC_ATTR_STRING: kc_node_set_string(dst, ni, a->name, a->u.s); break;
    case KC_ATTR_INTS: kc_node_set_ints(dst, ni, a->name, a->u.ints.n, a->u.ints.v); break;
    case KC_ATTR_FLOATS: kc_node_set_floats(dst, ni, a->name, a->u.floats.n, a->u.floats.v); break;
    case KC_ATTR_DTYPE: kc_node_set_dtype(dst, ni, a->name, a->u.t); break;
    case KC_ATTR_TENSOR: return KC_ERR_UNSUPPORTED; /* fusible() keeps these out */
    }
  }
  return dst->sticky;
}

/* Does a member's result have readers outside region rid (or is it a graph output)? */
static bool read_outside(const fz *f, int32_t rid, kc_val y) {
  if (f->is_out[y.id]) return true;
  for (uint32_t k = f->ustart[y.id]; k < f->ustart[y.id + 1]; k++)
    if (f->region[f->user[k]] != rid) return true;
  return false;
}

/* "fused:a+b+c" from the members' ONNX names, each once (nodes a rewrite made for one ONNX node
 * share its name); NULL when none has one. */
static const char *region_loc(kc_graph *g, const region *r) {
  char buf[MAX_LOC + 8];
  size_t len = (size_t)snprintf(buf, sizeof buf, "fused:");
  bool any = false;
  for (uint32_t i = 0; i < r->nmember; i++) {
    const char *l = g->nodes[r->member[i]].loc;
    bool seen = false;
    for (uint32_t j = 0; l && j < i && !seen; j++) {
      const char *p = g->nodes[r->member[j]].loc;
      seen = p && strcmp(p, l) == 0;
    }
    if (!l || seen) continue;
    if (len + strlen(l) + 1 > MAX_LOC) {
      snprintf(buf + len, sizeof buf - len, "%s...", any ? "+" : "");
      break;
    }
    len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", any ? "+" : "", l);
    any = true;
  }
  return any ? kc_arena_strdup(&g->arena, buf) : NULL;
}

/* The body value for graph value v (a member's result, a body input, or a new body constant). */
static kc_val body_value(fz *f, kc_graph *body, kc_val v) {
  if (!v.id || f->map[v.id].id) return f->map[v.id];
  const kc_tensor *t = kc_const_tensor(f->g, v);
  if (t && kc_tensor_numel(t) == 1)
    f->map[v.id] = kc_constant(body, t->dtype, t->rank, t->dims, t->data);
  return f->map[v.id];
}

/*
 * Append the fused node of region r (rid) to the graph; its results replace the members' in
 * repl (old -> new, by value id). *made: false when the region was dropped.
 */
static kc_status build(fz *f, int32_t rid, const region *r, kc_val *repl, bool *made) {
  kc_graph *g = f->g;
  *made = false;
  kc_val ins[MAX_INPUTS + 1], olds[MAX_OUTPUTS + 1];
  uint32_t nin = 0, nout = 0;
  olds[nout++] = g->nodes[r->root].out[0];
  for (uint32_t i = 0; i < r->nmember; i++) {
    const kc_node *n = &g->nodes[r->member[i]];
    if (r->member[i] != r->root && read_outside(f, rid, n->out[0]) && nout < MAX_OUTPUTS)
      olds[nout++] = n->out[0];
    for (uint32_t j = 0; j < n->nin; j++) {
      kc_val v = n->in[j];
      uint32_t def = v.id ? g->vals[v.id].def : 0;
      if (!v.id || (def && f->region[def - 1] == rid) || inline_const(g, v)) continue;
      bool seen = false;
      for (uint32_t k = 0; k < nin && !seen; k++)
        seen = ins[k].id == v.id;
      if (!seen && nin < MAX_INPUTS)
        ins[nin++] = v;
      else if (!seen)
        return KC_OK; /* cannot happen: growth counted the inputs */
    }
  }
  char name[32];
  snprintf(name, sizeof name, "fused%u", g->nbodies);
  kc_graph *body = kc_graph_new_body(g, name);
  if (!body) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in fuse-elementwise");
  for (uint32_t k = 0; k < nin; k++) {
    const kc_value *x = kc_value_of(g, ins[k]);
    kc_dim dims[KC_MAX_RANK];
    for (int d = 0; d < x->rank; d++)
      dims[d] = kc_dim_import(body, g, x->dims[d]);
    f->map[ins[k].id] = kc_graph_add_input(body, NULL, x->dtype, x->rank, dims);
  }
  kc_status s = KC_OK;
  for (uint32_t i = 0; i < r->nmember && s == KC_OK; i++) {
    const kc_node *n = &g->nodes[r->member[i]];
    kc_val in[8], out;
    for (uint32_t j = 0; j < n->nin; j++)
      in[j] = body_value(f, body, n->in[j]);
    uint32_t bi = kc_graph_add_node(body, n->op, n->nin, in, 1, &out);
    if (bi == UINT32_MAX) s = KC_ERR_NOMEM;
    if (s == KC_OK) s = copy_attrs(body, bi, &g->nodes[r->member[i]]);
    if (s == KC_OK) s = kc_node_infer(body, bi);
    f->map[g->nodes[r->member[i]].out[0].id] = out;
  }
  for (uint32_t k = 0; k < nout && s == KC_OK; k++)
    kc_output(body, f->map[olds[k].id], NULL);
  if (s == KC_OK) s = body->sticky;
  /* forget the map entries: the next region builds another body */
  for (uint32_t k = 0; k < nin; k++)
    f->map[ins[k].id] = (kc_val){0};
  for (uint32_t i = 0; i < r->nmember; i++) {
    const kc_node *n = &g->nodes[r->member[i]];
    f->map[n->out[0].id] = (kc_val){0};
    for (uint32_t j = 0; j < n->nin; j++)
      f->map[n->in[j].id] = (kc_val){0};
  }
  if (s == KC_ERR_NOMEM) return kc_errorf(g->ctx, s, "out of memory in fuse-elementwise");
  if (s != KC_OK) { /* a body node did not type: leave the region unfused */
    note(f, "region at %%%u dropped: %s", olds[0].id, kc_last_error(g->ctx));
    kc_clear_error(g->ctx);
    return KC_OK;
  }
  kc_val outs[MAX_OUTPUTS + 1];
  uint32_t ni = kc_graph_add_node(g, KC_OP_FUSED, nin, ins, nout, outs);
  if (ni == UINT32_MAX || g->sticky != KC_OK)
    return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in fuse-elementwise");
  g->nodes[ni].body = body;
  g->nodes[ni].loc = region_loc(g, r);
  s = kc_node_infer(g, ni);
  for (uint32_t k = 0; k < nout && s == KC_OK; k++) {
    const kc_value *a = kc_value_of(g, olds[k]), *b = kc_value_of(g, outs[k]);
    if (a->dtype != b->dtype || !same_shape(g, olds[k], outs[k])) s = KC_ERR_SHAPE;
  }
  if (s != KC_OK) {
    note(f, "region at %%%u dropped: its results do not type as the values they replace",
         olds[0].id);
    kc_clear_error(g->ctx);
    g->nodes[ni].op = KC_OP_NOP;
    g->nodes[ni].body = NULL;
    for (uint32_t k = 0; k < nout; k++)
      g->vals[outs[k].id].def = 0;
    return KC_OK;
  }
  for (uint32_t k = 0; k < nout; k++)
    repl[olds[k].id] = outs[k];
  *made = true;
  return KC_OK;
}

/* ---- the pass ------------------------------------------------------------------------------- */

static kc_status run(kc_graph *g, kc_pass_ctx *pc) {
  fz f;
  kc_status s = fz_init(&f, g, pc);
  region *regs = NULL;
  uint32_t nregs = 0;
  uint32_t *members = s == KC_OK ? malloc((size_t)(f.nn + 1) * sizeof *members) : NULL;
  regs = s == KC_OK ? malloc((size_t)(f.nn + 1) * sizeof *regs) : NULL;
  kc_val *repl = s == KC_OK ? calloc(f.nv + 1, sizeof *repl) : NULL;
  if (s == KC_OK && (!members || !regs || !repl))
    s = kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in fuse-elementwise");
  /* partition: roots from the end; members of all regions share one array */
  uint32_t used = 0;
  for (uint32_t i = f.nn; s == KC_OK && i-- > 0;) {
    const char *why;
    if (f.region[i] >= 0 || !fusible(&f, &g->nodes[i], &why)) continue;
    region *r = &regs[nregs];
    r->member = members + used;
    grow(&f, (int32_t)nregs, i, r);
    if (r->nmember < 2) {
      f.region[i] = -1;
      continue;
    }
    used += r->nmember;
    nregs++;
  }
  /* build in program order of the roots, so the new nodes' anchors ascend */
  uint32_t first = g->nnodes, *anchor = NULL, nanchor = 0;
  if (s == KC_OK && nregs && !(anchor = malloc(nregs * sizeof *anchor)))
    s = kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in fuse-elementwise");
  for (uint32_t k = nregs; s == KC_OK && k-- > 0;) {
    bool made;
    uint32_t before = g->nnodes;
    const region *r = &regs[k];
    s = build(&f, (int32_t)k, r, repl, &made);
    if (g->nnodes > before) anchor[nanchor++] = r->root; /* a dropped one too: it is a nop */
    if (s != KC_OK || !made) continue;
    note(&f, "region at %%%u (%s): %u ops, %u inputs, %u outputs", g->nodes[r->root].out[0].id,
         kc_ops[g->nodes[r->root].op].name, r->nmember, g->nodes[g->nnodes - 1].nin,
         g->nodes[g->nnodes - 1].nout);
    for (uint32_t i = 0; i < r->nmember; i++)
      g->nodes[r->member[i]].op = KC_OP_NOP;
  }
  if (s == KC_OK && nanchor) {
    /* readers of replaced values, the new nodes included, read the fused results */
    for (uint32_t i = 0; i < g->nnodes; i++) {
      kc_node *n = &g->nodes[i];
      for (uint32_t j = 0; j < n->nin; j++)
        if (n->in[j].id && n->in[j].id < f.nv && repl[n->in[j].id].id) n->in[j] = repl[n->in[j].id];
    }
    for (uint32_t i = 0; i < g->noutputs; i++) {
      uint32_t id = g->outputs[i].v.id;
      if (id && id < f.nv && repl[id].id) g->outputs[i].v = repl[id];
    }
    s = kc_graph_place(g, first, anchor);
    pc->changed = true;
  }
  if (s == KC_OK) kc_graph_compact(g);
  free(anchor);
  free(repl);
  free(regs);
  free(members);
  fz_free(&f);
  return s == KC_OK ? kc_dce_run(g, NULL) : s;
}

const kc_pass kc_pass_fuse_elementwise = {
    "fuse-elementwise", run,
    "regions of elementwise and broadcasting ops become one fused node (one loop nest)"};

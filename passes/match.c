/*
 * passes/match.c - the pattern matcher and the rule driver (see passes/match.h for the model).
 *
 * Matching is a depth-first search over a list of goals ("operand k of row r must be this
 * value"), kept as an immutable linked list on the C stack, so backtracking (the second order of
 * a commutative op) needs no undo beyond the capture slots and the rows bound so far. A row
 * named by several operands (a shared node) is matched at its first visit and compared after;
 * that all uses of its result are inside the match is checked once every goal is met.
 * The driver sweeps the graph in program order; rewrites append their nodes, which are moved
 * right before their root at the end of the sweep (one pass over the node array), and sweeps
 * repeat until one rewrites nothing. Every node a rewrite makes carries a loc by one rule
 * (kc_rewrite_loc), set here, not in the rules: that of the node whose result the rewrite
 * replaces first (the root, or the head merge fuse-attention's result stands for), else of the
 * nearest matched node with one.
 * Invariants: use counts (kc_uses) are exact for every match: rewrites change uses only through
 * finish(), which counts the new nodes, moves the counts of replaced values and deletes what
 * became dead; the graph is in program order after every sweep.
 */
#include "passes/match.h"
#include "passes/internal.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SWEEPS 100

/* ---- uses ---------------------------------------------------------------------------------- */

static bool uses_grow(kc_uses *u, uint32_t n) {
  if (n <= u->cap) {
    if (n > u->n) u->n = n;
    return true;
  }
  uint32_t cap = u->cap ? u->cap : 64;
  while (cap < n)
    cap *= 2;
  uint32_t *c = realloc(u->count, (size_t)cap * sizeof *c);
  if (c) u->count = c;
  bool *o = c ? realloc(u->output, (size_t)cap * sizeof *o) : NULL;
  if (!o) return false;
  u->output = o;
  memset(u->count + u->cap, 0, (size_t)(cap - u->cap) * sizeof *c);
  memset(u->output + u->cap, 0, (size_t)(cap - u->cap) * sizeof *o);
  u->cap = cap;
  u->n = n;
  return true;
}

kc_status kc_uses_compute(const kc_graph *g, kc_uses *u) {
  memset(u, 0, sizeof *u);
  if (!uses_grow(u, g->nvals)) {
    kc_uses_free(u);
    return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory counting uses");
  }
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    if (n->op == KC_OP_NOP) continue;
    for (uint32_t j = 0; j < n->nin; j++)
      if (n->in[j].id && n->in[j].id < u->n) u->count[n->in[j].id]++;
  }
  for (uint32_t i = 0; i < g->noutputs; i++) {
    uint32_t id = g->outputs[i].v.id;
    if (id && id < u->n) {
      u->count[id]++;
      u->output[id] = true;
    }
  }
  return KC_OK;
}

void kc_uses_free(kc_uses *u) {
  free(u->count);
  free(u->output);
  memset(u, 0, sizeof *u);
}

/* ---- patterns ------------------------------------------------------------------------------- */

static int row_nargs(const kc_pat *p, bool *rest) {
  int n = 0;
  *rest = false;
  while (n < KC_PAT_MAX_ARGS && p->args[n].kind != KC_ARG_END) {
    if (p->args[n].kind == KC_ARG_REST) {
      *rest = true;
      break;
    }
    n++;
  }
  return n;
}

bool kc_pat_check(const kc_pat *pat, int nrows, char *why, size_t size) {
  if (nrows < 1 || nrows > KC_PAT_MAX_ROWS) {
    snprintf(why, size, "%d rows (1 to %d)", nrows, KC_PAT_MAX_ROWS);
    return false;
  }
  for (int r = 0; r < nrows; r++) {
    bool rest;
    int na = row_nargs(&pat[r], &rest);
    for (int a = 0; a < na; a++) {
      const kc_pat_arg *x = &pat[r].args[a];
      bool slot = x->kind == KC_ARG_CAP || x->kind == KC_ARG_CONST;
      if (x->kind == KC_ARG_SUB && (x->index <= 0 || x->index >= nrows || x->index == r)) {
        snprintf(why, size, "row %d operand %d: row %d is not another row below the root", r, a,
                 x->index);
        return false;
      }
      if (slot && (x->index < 0 || x->index >= KC_PAT_MAX_SLOTS)) {
        snprintf(why, size, "row %d operand %d: slot %d out of range", r, a, x->index);
        return false;
      }
    }
  }
  /* every row hangs under row 0 (a cycle cannot match an acyclic graph, so it only fails) */
  uint32_t reached = 1, todo = 1;
  while (todo) {
    int r = __builtin_ctz(todo);
    todo &= todo - 1;
    bool rest;
    int na = row_nargs(&pat[r], &rest);
    for (int a = 0; a < na; a++) {
      const kc_pat_arg *x = &pat[r].args[a];
      if (x->kind == KC_ARG_SUB && !(reached & (1u << x->index))) {
        reached |= 1u << x->index;
        todo |= 1u << x->index;
      }
    }
  }
  for (int r = 1; r < nrows; r++)
    if (!(reached & (1u << r))) {
      snprintf(why, size, "row %d is not reached from row 0", r);
      return false;
    }
  return true;
}

static bool op_ok(const kc_pat *p, kc_op op) {
  if (p->ops[0] == KC_OP_NOP) return op != KC_OP_NOP;
  for (int i = 0; i < KC_PAT_MAX_OPS && p->ops[i] != KC_OP_NOP; i++)
    if (p->ops[i] == op) return true;
  return false;
}

bool kc_pat_root_op(const kc_pat *pat, kc_op op) { return op_ok(&pat[0], op); }

/* "add|sub" */
static const char *ops_text(const kc_pat *p, char *buf, size_t size) {
  size_t len = 0;
  buf[0] = 0;
  if (p->ops[0] == KC_OP_NOP) snprintf(buf, size, "any op");
  for (int i = 0; i < KC_PAT_MAX_OPS && p->ops[i] != KC_OP_NOP && len < size; i++)
    len += (size_t)snprintf(buf + len, size - len, "%s%s", i ? "|" : "", kc_ops[p->ops[i]].name);
  return buf;
}

/* ---- matching ------------------------------------------------------------------------------- */

typedef struct goal {
  const kc_pat_arg *arg;
  kc_val v;
  int row, opnd; /* where the operand sits, for messages */
  const struct goal *next;
} goal;

typedef struct mstate {
  const kc_graph *g;
  const kc_uses *u;
  const kc_pat *pat;
  int nrows;
  kc_match *m;
  int refs[KC_PAT_MAX_ROWS]; /* operands naming each row */
  uint32_t bound;            /* rows matched on the current path (bit per row) */
  int matched;               /* how many */
  int best;                  /* rows matched when the kept reason was written */
  char *why;
  size_t size;
} mstate;

/* Keep the reason of the attempt that got furthest (ties: the first). */
static bool failf(mstate *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool failf(mstate *s, const char *fmt, ...) {
  if (!s->why || !s->size || s->matched <= s->best) return false;
  s->best = s->matched;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(s->why, s->size, fmt, ap);
  va_end(ap);
  return false;
}

static const char *def_op(const kc_graph *g, kc_val v) {
  uint32_t def = v.id < g->nvals ? g->vals[v.id].def : 0;
  return def ? kc_ops[g->nodes[def - 1].op].name : "graph input";
}

static bool solve(mstate *s, const goal *gl);

static bool check_const(mstate *s, const goal *gl) {
  const kc_graph *g = s->g;
  const kc_tensor *t = kc_const_tensor(g, gl->v);
  if (!t)
    return failf(s, "row %d operand %d: %%%u (%s) is not a constant", gl->row, gl->opnd, gl->v.id,
                 def_op(g, gl->v));
  size_t n = kc_tensor_numel(t);
  switch (gl->arg->check) {
  case KC_CC_NONE: return true;
  case KC_CC_SCALAR:
    if (n == 1) return true;
    return failf(s, "row %d operand %d: constant %%%u has %zu elements, not 1", gl->row, gl->opnd,
                 gl->v.id, n);
  case KC_CC_FLOAT:
    if (kc_dtype_is_float(t->dtype)) return true;
    return failf(s, "row %d operand %d: constant %%%u is %s, not a float", gl->row, gl->opnd,
                 gl->v.id, kc_dtype_name(t->dtype));
  case KC_CC_INTS:
    if ((t->dtype == KC_I64 || t->dtype == KC_I32) && t->rank <= 1) return true;
    return failf(s, "row %d operand %d: constant %%%u is not an i64/i32 vector", gl->row, gl->opnd,
                 gl->v.id);
  case KC_CC_EQ: {
    bool eq = n > 0;
    for (size_t i = 0; i < n && eq; i++)
      eq = kc_tensor_get(t, i) == gl->arg->value;
    if (eq) return true;
    char want[64];
    kc_fmt_double(want, sizeof want, gl->arg->value);
    return failf(s, "row %d operand %d: constant %%%u is not %s", gl->row, gl->opnd, gl->v.id,
                 want);
  }
  }
  return true;
}

/* Row `row` at node ni (op already checked), then the goals in rest. */
static bool match_node(mstate *s, int row, uint32_t ni, const goal *rest) {
  const kc_graph *g = s->g;
  const kc_pat *p = &s->pat[row];
  const kc_node *n = &g->nodes[ni];
  uint32_t id = n->nout ? n->out[0].id : 0;
  if (p->pred) {
    char buf[256] = "";
    if (!p->pred(g, n, buf, sizeof buf))
      return failf(s, "row %d: %%%u (%s): %s", row, id, kc_ops[n->op].name,
                   buf[0] ? buf : "the row's predicate does not hold");
  }
  bool rest_ok;
  int na = row_nargs(p, &rest_ok);
  for (uint32_t j = (uint32_t)na; !rest_ok && j < n->nin; j++)
    if (n->in[j].id)
      return failf(s, "row %d: %%%u (%s) has operand %u, the pattern takes %d", row, id,
                   kc_ops[n->op].name, j, na);
  s->m->node[row] = ni;
  s->bound |= 1u << row;
  s->matched++;
  int orders = (kc_ops[n->op].flags & KC_OPF_COMMUTATIVE) && na >= 2 && n->nin >= 2 &&
                       n->in[0].id != n->in[1].id
                   ? 2
                   : 1;
  for (int o = 0; o < orders; o++) {
    goal kids[KC_PAT_MAX_ARGS];
    for (int i = 0; i < na; i++) {
      int k = o == 1 && i < 2 ? 1 - i : i;
      kids[i] = (goal){&p->args[i], (uint32_t)k < n->nin ? n->in[k] : (kc_val){0}, row, k,
                       i + 1 < na ? &kids[i + 1] : rest};
    }
    if (solve(s, na ? &kids[0] : rest)) return true;
  }
  s->matched--;
  s->bound &= ~(1u << row);
  return false;
}

/* An operand that must be result 0 of a node matching row `row` (an interior node). */
static bool match_sub(mstate *s, const goal *gl) {
  const kc_graph *g = s->g;
  int row = gl->arg->index;
  const kc_pat *p = &s->pat[row];
  char ops[128];
  kc_val v = gl->v;
  if (!v.id)
    return failf(s, "row %d operand %d is absent, not %s", gl->row, gl->opnd,
                 ops_text(p, ops, sizeof ops));
  uint32_t def = g->vals[v.id].def;
  if (s->bound & (1u << row)) { /* a shared row: the node it matched already */
    uint32_t id = g->nodes[s->m->node[row]].out[0].id;
    if (v.id == id) return solve(s, gl->next);
    return failf(s, "row %d operand %d: %%%u is not %%%u, matched by row %d before", gl->row,
                 gl->opnd, v.id, id, row);
  }
  if (!def || !op_ok(p, g->nodes[def - 1].op))
    return failf(s, "row %d operand %d: %%%u is %s, not %s", gl->row, gl->opnd, v.id, def_op(g, v),
                 ops_text(p, ops, sizeof ops));
  const kc_node *n = &g->nodes[def - 1];
  if (g->vals[v.id].def_out != 0)
    return failf(s, "row %d operand %d: %%%u is result %u of %s, not its first", gl->row, gl->opnd,
                 v.id, g->vals[v.id].def_out, kc_ops[n->op].name);
  /* more uses than the pattern has operands for this row: one is outside (the exact count, for
   * shared rows, is checked at the end by interior_ok) */
  for (uint32_t j = 0; j < n->nout; j++) {
    uint32_t o = n->out[j].id;
    if (!o || o >= s->u->n) continue;
    if (s->u->output[o])
      return failf(s, "row %d: interior %%%u (%s) is a graph output", row, o, kc_ops[n->op].name);
    uint32_t most = j == 0 ? (uint32_t)s->refs[row] : 0;
    if (s->u->count[o] > most)
      return failf(s, "row %d: interior %%%u (%s) has %u uses", row, o, kc_ops[n->op].name,
                   s->u->count[o]);
  }
  return match_node(s, row, def - 1, gl->next);
}

/* Every use of a shared interior node's result is an operand of a matched node. */
static bool interior_ok(mstate *s) {
  const kc_graph *g = s->g;
  for (int r = 1; r < s->nrows; r++) {
    if (s->refs[r] < 2) continue; /* one operand, at most one use: checked on the way */
    uint32_t id = g->nodes[s->m->node[r]].out[0].id, inside = 0;
    for (int k = 0; k < s->nrows; k++) {
      bool seen = false; /* two rows on one node: count its operands once */
      for (int q = 0; q < k && !seen; q++)
        seen = s->m->node[q] == s->m->node[k];
      const kc_node *n = &g->nodes[s->m->node[k]];
      for (uint32_t j = 0; !seen && j < n->nin; j++)
        inside += n->in[j].id == id;
    }
    if (s->u->count[id] != inside)
      return failf(s, "row %d: interior %%%u (%s) has %u uses, %u of them in the pattern", r, id,
                   kc_ops[g->nodes[s->m->node[r]].op].name, s->u->count[id], inside);
  }
  return true;
}

static bool solve(mstate *s, const goal *gl) {
  if (!gl) return interior_ok(s);
  const kc_pat_arg *a = gl->arg;
  switch (a->kind) {
  case KC_ARG_ANY: return solve(s, gl->next);
  case KC_ARG_ABSENT:
    if (gl->v.id)
      return failf(s, "row %d operand %d is %%%u, the pattern wants it absent", gl->row, gl->opnd,
                   gl->v.id);
    return solve(s, gl->next);
  case KC_ARG_SUB: return match_sub(s, gl);
  case KC_ARG_CAP:
  case KC_ARG_CONST: {
    if (!gl->v.id) return failf(s, "row %d operand %d is absent", gl->row, gl->opnd);
    if (a->kind == KC_ARG_CONST && !check_const(s, gl)) return false;
    kc_val *slot = &s->m->cap[a->index];
    if (slot->id) {
      if (slot->id != gl->v.id)
        return failf(s, "row %d operand %d: %%%u is not %%%u, captured before as slot %d", gl->row,
                     gl->opnd, gl->v.id, slot->id, a->index);
      return solve(s, gl->next);
    }
    *slot = gl->v;
    if (solve(s, gl->next)) return true;
    slot->id = 0;
    return false;
  }
  case KC_ARG_END:
  case KC_ARG_REST: break; /* never a goal */
  }
  return false;
}

bool kc_pat_match(const kc_graph *g, const kc_uses *u, const kc_pat *pat, int nrows, uint32_t root,
                  kc_match *m, char *why, size_t size) {
  memset(m, 0, sizeof *m);
  m->nrows = nrows;
  if (why && size) why[0] = 0;
  mstate s = {
      .g = g, .u = u, .pat = pat, .nrows = nrows, .m = m, .best = -1, .why = why, .size = size};
  for (int r = 0; r < nrows; r++)
    for (int a = 0; a < KC_PAT_MAX_ARGS && pat[r].args[a].kind != KC_ARG_END; a++)
      if (pat[r].args[a].kind == KC_ARG_SUB && pat[r].args[a].index < KC_PAT_MAX_ROWS)
        s.refs[pat[r].args[a].index]++;
  const kc_node *n = &g->nodes[root];
  if (!op_ok(&pat[0], n->op)) {
    char ops[128];
    return failf(&s, "root %%%u is %s, not %s", n->nout ? n->out[0].id : 0, kc_ops[n->op].name,
                 ops_text(&pat[0], ops, sizeof ops));
  }
  return match_node(&s, 0, root, NULL);
}

/* ---- the rewriter --------------------------------------------------------------------------- */

typedef struct repl {
  kc_val old, new_v;
} repl;

struct kc_rewriter {
  kc_graph *g;
  kc_pass_ctx *pc;
  kc_uses u;
  uint32_t root;                     /* node index of the match's root */
  uint32_t matched[KC_PAT_MAX_ROWS]; /* the match's nodes, row order (root first), for locs */
  uint32_t nmatched;
  uint32_t first_new; /* g->nnodes when the rewrite began: later nodes are its own */
  uint32_t fresh;     /* g->ndexprs when the rewrite began */
  repl *repl;
  uint32_t nrepl, caprepl;
  kc_status err;    /* first failure inside a kc_rw_* call */
  char why[512];    /* decline reason */
  uint32_t *anchor; /* per node appended this sweep: the root it goes before */
  uint32_t nanchor, capanchor;
  uint32_t *stack; /* dead-node worklist */
  uint32_t capstack;
  char *log; /* explanations of the current sweep */
  size_t loglen, logcap;
};

kc_graph *kc_rw_graph(const kc_rewriter *rw) { return rw->g; }

kc_val kc_rw_out(const kc_rewriter *rw, const kc_match *m, int row, uint32_t j) {
  const kc_node *n = &rw->g->nodes[m->node[row]];
  return j < n->nout ? n->out[j] : (kc_val){0};
}

uint32_t kc_rw_uses(const kc_rewriter *rw, kc_val v) {
  return v.id && v.id < rw->u.n ? rw->u.count[v.id] : 0;
}

bool kc_rw_is_output(const kc_rewriter *rw, kc_val v) {
  return v.id && v.id < rw->u.n && rw->u.output[v.id];
}

static void rw_fail(kc_rewriter *rw, kc_status s) {
  if (rw->err == KC_OK) rw->err = s;
}

uint32_t kc_rw_node(kc_rewriter *rw, kc_op op, uint32_t nin, const kc_val *in, uint32_t nout,
                    kc_val *outs) {
  uint32_t ni = kc_graph_add_node(rw->g, op, nin, in, nout, outs);
  if (ni == UINT32_MAX || rw->g->sticky != KC_OK) {
    rw_fail(rw, kc_errorf(rw->g->ctx, KC_ERR_NOMEM, "out of memory rewriting @%s", rw->g->name));
    return UINT32_MAX;
  }
  return ni;
}

kc_status kc_rw_infer(kc_rewriter *rw, uint32_t ni) {
  if (ni == UINT32_MAX || ni >= rw->g->nnodes) return rw->err ? rw->err : KC_ERR_INVALID_ARG;
  kc_status s = kc_node_infer(rw->g, ni);
  if (s != KC_OK) rw_fail(rw, s);
  return s;
}

kc_val kc_rw_op(kc_rewriter *rw, kc_op op, uint32_t nin, const kc_val *in) {
  kc_val out;
  uint32_t ni = kc_rw_node(rw, op, nin, in, 1, &out);
  if (ni == UINT32_MAX || kc_rw_infer(rw, ni) != KC_OK) return (kc_val){0};
  return out;
}

kc_val kc_rw_const(kc_rewriter *rw, kc_dtype t, int rank, const int64_t *dims, const void *data) {
  kc_graph *g = rw->g;
  uint32_t ti = kc_graph_add_tensor(g, NULL, t, rank, dims, data, true);
  if (ti == UINT32_MAX) {
    rw_fail(rw, kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory rewriting @%s", g->name));
    return (kc_val){0};
  }
  kc_val out;
  uint32_t ni = kc_rw_node(rw, KC_OP_CONSTANT, 0, NULL, 1, &out);
  if (ni == UINT32_MAX) return (kc_val){0};
  kc_node_set_tensor(g, ni, "value", ti);
  return kc_rw_infer(rw, ni) == KC_OK ? out : (kc_val){0};
}

kc_val kc_rw_const_i64s(kc_rewriter *rw, int n, const int64_t *v) {
  int64_t dim = n, zero = 0;
  return kc_rw_const(rw, KC_I64, 1, &dim, n ? (const void *)v : &zero);
}

void kc_rw_replace(kc_rewriter *rw, kc_val old, kc_val new_v) {
  if (rw->nrepl == rw->caprepl) {
    uint32_t cap = rw->caprepl ? rw->caprepl * 2 : 8;
    repl *r = realloc(rw->repl, cap * sizeof *r);
    if (!r) {
      rw_fail(rw, kc_errorf(rw->g->ctx, KC_ERR_NOMEM, "out of memory rewriting"));
      return;
    }
    rw->repl = r;
    rw->caprepl = cap;
  }
  rw->repl[rw->nrepl++] = (repl){old, new_v};
}

kc_status kc_rw_decline(kc_rewriter *rw, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(rw->why, sizeof rw->why, fmt, ap);
  va_end(ap);
  rw->nrepl = 0;
  return KC_OK;
}

/* ---- the driver ----------------------------------------------------------------------------- */

const char *kc_explain_node(const kc_graph *g, uint32_t ni, char *buf, size_t size) {
  const kc_node *n = &g->nodes[ni];
  if (n->loc)
    snprintf(buf, size, "%s, loc(\"%s\")", kc_ops[n->op].name, n->loc);
  else
    snprintf(buf, size, "%s", kc_ops[n->op].name);
  return buf;
}

/* Append a line to the sweep's explanations (dropped when out of memory: they are advice). */
static void explain(kc_rewriter *rw, const kc_rule *r, uint32_t ni, const char *what) {
  const kc_node *n = &rw->g->nodes[ni];
  char line[1024], desc[320];
  int len =
      snprintf(line, sizeof line, "%s: %s at %%%u (%s): %s\n", rw->pc->name, r->name,
               n->nout ? n->out[0].id : 0, kc_explain_node(rw->g, ni, desc, sizeof desc), what);
  if (len < 0) return;
  size_t l = (size_t)len < sizeof line ? (size_t)len : sizeof line - 1;
  if (rw->loglen + l + 1 > rw->logcap) {
    size_t cap = (rw->logcap ? rw->logcap * 2 : 4096) + l;
    char *p = realloc(rw->log, cap);
    if (!p) return;
    rw->log = p;
    rw->logcap = cap;
  }
  memcpy(rw->log + rw->loglen, line, l);
  rw->loglen += l;
  rw->log[rw->loglen] = 0;
}

/* Forget the nodes of a rewrite that does not happen. */
static void undo(kc_rewriter *rw) {
  kc_graph *g = rw->g;
  for (uint32_t i = rw->first_new; i < g->nnodes; i++)
    for (uint32_t j = 0; j < g->nodes[i].nout; j++)
      if (g->nodes[i].out[j].id) g->vals[g->nodes[i].out[j].id].def = 0;
  g->nnodes = rw->first_new;
  rw->nrepl = 0;
}

/* Delete node ni if nothing reads its results, then whatever that leaves unread. */
static void kill_dead(kc_rewriter *rw, uint32_t ni) {
  kc_graph *g = rw->g;
  uint32_t top = 0;
  rw->stack[top++] = ni; /* capstack > nvals: each value frees its definer at most once */
  while (top) {
    kc_node *n = &g->nodes[rw->stack[--top]];
    if (n->op == KC_OP_NOP) continue;
    bool live = false;
    for (uint32_t j = 0; j < n->nout && !live; j++) {
      uint32_t o = n->out[j].id;
      live = o && (rw->u.count[o] || rw->u.output[o]);
    }
    if (live) continue;
    n->op = KC_OP_NOP;
    for (uint32_t j = 0; j < n->nin; j++) {
      uint32_t id = n->in[j].id;
      if (!id || !rw->u.count[id] || --rw->u.count[id]) continue;
      uint32_t def = g->vals[id].def;
      if (def && top < rw->capstack) rw->stack[top++] = def - 1;
    }
  }
}

static bool grow_u32(uint32_t **arr, uint32_t *cap, uint32_t need) {
  if (need <= *cap) return true;
  uint32_t c = *cap ? *cap : 64;
  while (c < need)
    c *= 2;
  uint32_t *p = realloc(*arr, (size_t)c * sizeof *p);
  if (!p) return false;
  *arr = p;
  *cap = c;
  return true;
}

/* After the callback: type, check and apply the rewrite, or undo it. *done: it happened. */
static kc_status finish(kc_rewriter *rw, kc_status cb, bool *done) {
  kc_graph *g = rw->g;
  *done = false;
  if (cb != KC_OK || rw->err == KC_ERR_NOMEM) {
    undo(rw);
    return cb != KC_OK ? cb : KC_ERR_NOMEM;
  }
  if (rw->err != KC_OK) { /* a new node did not type: the rule does not apply to these shapes */
    snprintf(rw->why, sizeof rw->why, "replacement does not type: %s", kc_last_error(g->ctx));
    kc_clear_error(g->ctx);
    undo(rw);
    return KC_OK;
  }
  if (rw->nrepl == 0) {
    if (!rw->why[0]) snprintf(rw->why, sizeof rw->why, "the rewrite declined");
    undo(rw);
    return KC_OK;
  }
  for (uint32_t i = rw->first_new; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    if (!n->nout || !n->out[0].id || g->vals[n->out[0].id].rank >= 0) continue;
    kc_status s = kc_node_infer(g, i);
    if (s != KC_OK) {
      snprintf(rw->why, sizeof rw->why, "replacement does not type: %s", kc_last_error(g->ctx));
      kc_clear_error(g->ctx);
      undo(rw);
      return KC_OK;
    }
  }
  for (uint32_t k = 0; k < rw->nrepl; k++) {
    repl r = rw->repl[k];
    /* a value of this rewrite may name sizes with new symbols: it takes the recorded ones */
    bool fresh_value = r.new_v.id && g->vals[r.new_v.id].def > rw->first_new;
    if (!r.new_v.id || !kc_type_fits(g, r.old, r.new_v, rw->fresh, fresh_value)) {
      char a[256], b[256];
      snprintf(rw->why, sizeof rw->why, "replacement %%%u is %s but %%%u is %s", r.new_v.id,
               r.new_v.id ? kc_type_str(g, r.new_v, a, sizeof a) : "absent", r.old.id,
               kc_type_str(g, r.old, b, sizeof b));
      undo(rw);
      return KC_OK;
    }
  }
  /* apply: count the new nodes' reads, move uses, drop what died */
  if (!uses_grow(&rw->u, g->nvals) ||
      !grow_u32(&rw->anchor, &rw->capanchor, rw->nanchor + g->nnodes - rw->first_new) ||
      !grow_u32(&rw->stack, &rw->capstack, g->nvals + 1)) {
    undo(rw);
    return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory rewriting @%s", g->name);
  }
  for (uint32_t i = rw->first_new; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    for (uint32_t j = 0; j < n->nin; j++)
      if (n->in[j].id) rw->u.count[n->in[j].id]++;
    rw->anchor[rw->nanchor++] = rw->root;
  }
  uint32_t def = g->vals[rw->repl[0].old.id].def; /* still its definer: nothing died yet */
  kc_rewrite_set_loc(g, rw->first_new,
                     kc_rewrite_loc(g, def ? def - 1 : rw->root, rw->matched, rw->nmatched));
  for (uint32_t k = 0; k < rw->nrepl; k++) {
    repl r = rw->repl[k];
    if (r.old.id == r.new_v.id) continue;
    kc_graph_replace_uses(g, r.old, r.new_v);
    rw->u.count[r.new_v.id] += rw->u.count[r.old.id];
    rw->u.count[r.old.id] = 0;
    if (rw->u.output[r.old.id]) rw->u.output[r.new_v.id] = true;
    rw->u.output[r.old.id] = false;
  }
  for (uint32_t k = 0; k < rw->nrepl; k++) {
    uint32_t def = g->vals[rw->repl[k].old.id].def;
    if (def) kill_dead(rw, def - 1);
  }
  rw->nrepl = 0;
  *done = true;
  return KC_OK;
}

/* One rule at node ni; *done when it rewrote. */
static kc_status try_rule(kc_rewriter *rw, const kc_rule *r, uint32_t ni, bool explaining,
                          bool *done) {
  kc_graph *g = rw->g;
  kc_match m;
  char why[512];
  *done = false;
  if (!kc_pat_match(g, &rw->u, r->pat, r->nrows, ni, &m, why, sizeof why)) {
    if (explaining) explain(rw, r, ni, why);
    return KC_OK;
  }
  rw->root = ni;
  /* row order: the root, then rows 1 and on, which hang nearest it */
  rw->nmatched = (uint32_t)m.nrows;
  memcpy(rw->matched, m.node, sizeof m.node);
  rw->first_new = g->nnodes;
  rw->fresh = g->ndexprs;
  rw->nrepl = 0;
  rw->err = KC_OK;
  rw->why[0] = 0;
  uint32_t out0 = g->nodes[ni].nout ? g->nodes[ni].out[0].id : 0;
  char desc[320];
  kc_explain_node(g, ni, desc, sizeof desc); /* the rewrite may move or drop the node */
  kc_status s = finish(rw, r->rewrite(rw, &m), done);
  if (s != KC_OK || !explaining) return s;
  if (*done) /* news now, not advice for the fixpoint: printed at once */
    fprintf(rw->pc->log, "%s: %s at %%%u (%s): rewritten\n", rw->pc->name, r->name, out0, desc);
  else
    explain(rw, r, ni, rw->why);
  return KC_OK;
}

static kc_status sweep(kc_rewriter *rw, const kc_rule *rules, int nrules, bool explaining,
                       bool *changed, const char **last) {
  kc_graph *g = rw->g;
  uint32_t n0 = g->nnodes;
  rw->nanchor = 0;
  rw->loglen = 0;
  if (rw->log) rw->log[0] = 0;
  kc_status s = KC_OK;
  for (uint32_t i = 0; i < n0 && s == KC_OK; i++) {
    for (int r = 0; r < nrules && s == KC_OK; r++) {
      if (g->nodes[i].op == KC_OP_NOP) break;
      if (!kc_pat_root_op(rules[r].pat, g->nodes[i].op)) continue;
      bool done;
      s = try_rule(rw, &rules[r], i, explaining, &done);
      if (done) {
        *changed = true;
        *last = rules[r].name;
        break; /* the root is gone or changed: its next visit is next sweep */
      }
    }
  }
  kc_status p = kc_graph_place(g, n0, rw->anchor);
  return s != KC_OK ? s : p;
}

kc_status kc_rules_run(kc_graph *g, kc_pass_ctx *pc, const kc_rule *rules, int nrules,
                       bool explain_on) {
  char why[256];
  for (int r = 0; r < nrules; r++)
    if (!kc_pat_check(rules[r].pat, rules[r].nrows, why, sizeof why))
      return kc_errorf(g->ctx, KC_ERR_INTERNAL, "rule '%s' of pass '%s': %s", rules[r].name,
                       pc->name, why);
  bool explaining = explain_on && pc->opts && pc->opts->explain_fusion && pc->log;
  kc_rewriter rw = {.g = g, .pc = pc};
  kc_status s = kc_uses_compute(g, &rw.u);
  if (s != KC_OK) return s;
  if (!grow_u32(&rw.stack, &rw.capstack, g->nvals + 1)) s = KC_ERR_NOMEM;
  const char *last = NULL;
  int sweeps = 0;
  for (bool changed = true; s == KC_OK && changed; sweeps++) {
    if (sweeps == MAX_SWEEPS) {
      s = kc_errorf(g->ctx, KC_ERR_INTERNAL,
                    "pass '%s': rules still rewrite after %d sweeps (last: '%s'); two rules undo "
                    "each other",
                    pc->name, MAX_SWEEPS, last ? last : "?");
      break;
    }
    changed = false;
    s = sweep(&rw, rules, nrules, explaining, &changed, &last);
    if (changed) pc->changed = true;
  }
  if (s == KC_OK && explaining && rw.loglen) fputs(rw.log, pc->log);
  kc_uses_free(&rw.u);
  free(rw.repl);
  free(rw.anchor);
  free(rw.stack);
  free(rw.log);
  if (s == KC_ERR_NOMEM && !kc_last_error(g->ctx)[0])
    kc_errorf(g->ctx, s, "out of memory rewriting @%s", g->name);
  if (s != KC_OK) return s;
  kc_graph_compact(g);
  return kc_dce_run(g, NULL);
}

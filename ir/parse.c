/*
 * ir/parse.c - reads text IR (.kir) into a graph; ir/print.c writes it (its header shows the
 * form and the printing rules). The grammar read here:
 *
 *   file    := comment* 'graph' graph EOF         comment := '#' to end of line, anywhere;
 *                                                 a leading "# kir N" names the version
 *   graph   := '@' NAME '(' [input {',' input}] ')' '{' stmt* 'return' [out {',' out}] '}'
 *   input   := '%'N ':' type [STRING]             out := '%'N [STRING]
 *   stmt    := res {',' res} '=' OP operands [attrs] ':' type {',' type} ['graph' graph]
 *              ['loc' '(' STRING ')']
 *   res     := '%'N | '_'                         NAME := IDENT | STRING
 *   operands:= '(' [arg {',' arg}] ')'  |  STRING (weight)  |  literal (constant)
 *   arg     := '%'N | '_'
 *   type    := DTYPE '[' [dim {',' dim}] ']' | DTYPE '[*]' | '?' | '_'    dim: kc_dim_parse
 *   attrs   := '{' [attr {',' attr}] '}'          attr := (IDENT | STRING) '=' value
 *   value   := INT | FLOAT | IDENT | STRING | DTYPE | '[' [num {',' num}] ']'
 *              | literal ':' type
 *   literal := 'dense' '<' ('?' | elem | '[' [elem {',' elem}] ']') '>' | '@' STRING
 *   elem    := number | 'true' | 'false'
 *
 * Invariants and choices:
 *   - %N creates value id N exactly (values up to the largest id are created; ids never
 *     defined stay untyped, and using one is the verifier's to report). An id is defined once
 *     per graph; a body graph has its own ids and its own symbolic dims.
 *   - Types are trusted as printed (no shape inference here); the verifier checks them.
 *   - A list is floats when any element is written as a float; an empty list is ints unless
 *     the op's schema declares floats. A bare identifier is a dtype when it names one, else a
 *     string.
 *   - A literal's dtype and shape come from the type after it: the result type for
 *     `constant`, the `: type` that follows a tensor attribute otherwise. A `dense` literal is
 *     therefore skipped, the type read, and the literal read again with the type known.
 *   - weight "NAME" and @"NAME" make (or reuse, when the type agrees) the tensor of that name,
 *     with no data.
 *   - Errors: the first one stops the parse; the partly built graph is freed.
 */
#include "text.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A graph being read: which ids it defined so far. */
typedef struct scope {
  kc_graph *g;
  uint8_t *defined;
  uint32_t cap;
} scope;

typedef struct valvec {
  kc_val *v;
  uint32_t n, cap;
} valvec;

static bool push_val(kc_lexer *lx, valvec *vv, kc_val v) {
  if (vv->n == vv->cap) {
    uint32_t cap = vv->cap ? vv->cap * 2 : 8;
    kc_val *p = realloc(vv->v, cap * sizeof *p);
    if (!p) return kc_lex_nomem(lx);
    vv->v = p;
    vv->cap = cap;
  }
  vv->v[vv->n++] = v;
  return true;
}

/* `_` as a whole token (not the start of an identifier such as _x). */
static bool accept_absent(kc_lexer *lx) { return kc_lex_accept_word(lx, "_"); }

/* Create values up to id, so %N is exactly value id N. */
static bool ensure_value(kc_lexer *lx, kc_graph *g, uint32_t id) {
  while (g->nvals <= id)
    if (!kc_graph_new_value(g).id) return kc_lex_nomem(lx);
  return true;
}

static bool define(kc_lexer *lx, scope *sc, uint32_t id, const char *at) {
  if (!ensure_value(lx, sc->g, id)) return false;
  if (id >= sc->cap) {
    uint32_t cap = sc->cap ? sc->cap : 64;
    while (cap <= id)
      cap *= 2;
    uint8_t *d = realloc(sc->defined, cap);
    if (!d) return kc_lex_nomem(lx);
    memset(d + sc->cap, 0, cap - sc->cap);
    sc->defined = d;
    sc->cap = cap;
  }
  if (sc->defined[id]) return kc_lex_error(lx, at, "redefinition of %%%u", id);
  sc->defined[id] = 1;
  return true;
}

static void set_type(kc_graph *g, kc_val v, const kc_ptype *t) {
  kc_value *val = kc_value_of(g, v);
  val->dtype = t->dt;
  val->rank = t->rank;
  for (int i = 0; i < t->rank; i++)
    val->dims[i] = t->dims[i];
}

static bool parse_graph(kc_lexer *lx, kc_graph *parent, kc_graph **out);

/* What stands in place of the argument list of weight and constant. */
typedef struct special {
  const char *name; /* weight "NAME", constant @"NAME" */
  const char *lit;  /* constant dense<...>: where the literal starts */
} special;

static bool parse_operands(kc_lexer *lx, scope *sc, kc_op op, valvec *in, special *sp) {
  kc_lex_skip(lx);
  if (op == KC_OP_WEIGHT && *lx->p == '"') return kc_lex_string(lx, &sc->g->arena, &sp->name);
  if (op == KC_OP_CONSTANT && kc_lex_accept(lx, '@'))
    return kc_lex_string(lx, &sc->g->arena, &sp->name);
  if (op == KC_OP_CONSTANT && kc_lex_peek_word(lx, "dense")) {
    sp->lit = lx->p;
    return kc_skip_dense(lx);
  }
  if (!kc_lex_expect(lx, '(', "'(' and the operands after the op name")) return false;
  if (kc_lex_accept(lx, ')')) return true;
  do {
    uint32_t id = 0;
    if (!accept_absent(lx) && !(kc_lex_value_id(lx, &id) && ensure_value(lx, sc->g, id)))
      return false;
    if (!push_val(lx, in, (kc_val){id})) return false;
  } while (kc_lex_accept(lx, ','));
  return kc_lex_expect(lx, ')', "',' or ')' after an operand");
}

/* The types of n's results; *first_at: where they start, for messages about the first. */
static bool parse_result_types(kc_lexer *lx, kc_graph *g, const kc_node *n, const char **first_at) {
  const char *end = lx->p;
  for (uint32_t i = 0; i < n->nout; i++) {
    kc_ptype t;
    /* a missing type is reported where it should have been: after the last one */
    if (i && !kc_lex_accept(lx, ','))
      return kc_lex_error(lx, end, "expected %u result types, got %u", n->nout, i);
    if (!kc_parse_type(lx, g, &t)) return false;
    end = lx->p;
    if (i == 0) *first_at = t.at;
    if (t.absent != !n->out[i].id)
      return kc_lex_error(lx, t.at,
                          t.absent ? "only an absent result '_' has type '_'"
                                   : "an absent result '_' has type '_'");
    if (n->out[i].id) set_type(g, n->out[i], &t);
  }
  if (kc_lex_peek(lx, ','))
    return kc_lex_error(lx, lx->p, "too many result types: '%s' has %u result%s",
                        kc_ops[n->op].name, n->nout, n->nout == 1 ? "" : "s");
  return true;
}

/* After the types are known: the tensor behind weight "NAME" / constant LITERAL; at is the
 * result type, which gives the tensor's dtype and shape. */
static bool finish_special(kc_lexer *lx, kc_graph *g, uint32_t ni, const special *sp,
                           const char *at) {
  if (!sp->name && !sp->lit) return true;
  if (g->nodes[ni].nout != 1 || !g->nodes[ni].out[0].id)
    return kc_lex_error(lx, at, "'%s' has exactly one result", kc_ops[g->nodes[ni].op].name);
  kc_val v = g->nodes[ni].out[0];
  kc_ptype t = {.dt = kc_value_of(g, v)->dtype, .rank = kc_value_of(g, v)->rank, .at = at};
  for (int i = 0; i < t.rank; i++)
    t.dims[i] = kc_value_of(g, v)->dims[i];
  uint32_t ti;
  if (sp->lit) {
    const char *after = lx->p;
    lx->p = sp->lit;
    if (!kc_parse_dense(lx, g, &t, &ti)) return false;
    lx->p = after;
  } else if (!kc_parse_named_tensor(lx, g, sp->name, &t, at, &ti)) {
    return false;
  }
  if (g->nodes[ni].op == KC_OP_CONSTANT) kc_node_set_tensor(g, ni, "value", ti);
  return true;
}

static bool parse_node(kc_lexer *lx, scope *sc) {
  kc_graph *g = sc->g;
  valvec outs = {0}, in = {0};
  bool ok = true;
  kc_lex_skip(lx);
  size_t stmt = (size_t)(lx->p - lx->src); /* the node's position, for the verifier */
  do {
    kc_lex_skip(lx);
    const char *at = lx->p;
    uint32_t id = 0;
    ok = accept_absent(lx) || (kc_lex_value_id(lx, &id) && define(lx, sc, id, at));
    ok = ok && push_val(lx, &outs, (kc_val){id});
  } while (ok && kc_lex_accept(lx, ','));
  char opname[64];
  ok = ok && kc_lex_expect(lx, '=', "',' or '=' after the results");
  kc_lex_skip(lx);
  const char *opat = lx->p;
  ok = ok && kc_lex_ident(lx, opname, sizeof opname, "an op name");
  kc_op op = ok ? kc_op_lookup(opname) : KC_OP_NOP;
  if (ok && op == KC_OP_NOP) ok = kc_lex_error(lx, opat, "unknown op '%s'", opname);
  special sp = {0};
  ok = ok && parse_operands(lx, sc, op, &in, &sp);
  uint32_t ni = UINT32_MAX;
  if (ok) {
    ni = kc_graph_add_node_with_outputs(g, op, in.n, in.v, outs.n, outs.v);
    if (ni == UINT32_MAX) ok = kc_lex_nomem(lx);
  }
  free(in.v);
  free(outs.v);
  if (!ok) return false;
  g->nodes[ni].src = stmt < UINT32_MAX ? (uint32_t)stmt + 1 : 0;
  /* the special attribute goes first, so its stored position matches a printed generic form */
  if (sp.name && op == KC_OP_WEIGHT) kc_node_set_string(g, ni, "name", sp.name);
  if (op == KC_OP_CONSTANT && (sp.name || sp.lit)) kc_node_set_tensor(g, ni, "value", 0);
  if (kc_lex_accept(lx, '{') && !kc_parse_attrs(lx, g, ni)) return false;
  const char *types_at = lx->p;
  if (!kc_lex_expect(lx, ':', "':' and the result types") ||
      !parse_result_types(lx, g, &g->nodes[ni], &types_at) ||
      !finish_special(lx, g, ni, &sp, types_at))
    return false;
  if (kc_lex_peek_word(lx, "graph")) {
    if (!(kc_ops[op].flags & KC_OPF_BODY))
      return kc_lex_error(lx, lx->p, "op '%s' takes no body graph", opname);
    lx->p += strlen("graph");
    kc_graph *body;
    if (!parse_graph(lx, g, &body)) return false;
    g->nodes[ni].body = body;
  }
  if (kc_lex_accept_word(lx, "loc")) {
    const char *loc;
    if (!kc_lex_expect(lx, '(', "'(' after loc") || !kc_lex_string(lx, &g->arena, &loc) ||
        !kc_lex_expect(lx, ')', "')' after the location"))
      return false;
    g->nodes[ni].loc = loc;
  }
  if (g->sticky == KC_ERR_NOMEM) return kc_lex_nomem(lx);
  return true;
}

static bool add_input(kc_lexer *lx, kc_graph *g, kc_val v) {
  if (g->ninputs == g->capinputs) {
    uint32_t cap = g->capinputs ? g->capinputs * 2 : 8;
    kc_val *p = realloc(g->inputs, cap * sizeof *p);
    if (!p) return kc_lex_nomem(lx);
    g->inputs = p;
    g->capinputs = cap;
  }
  g->inputs[g->ninputs++] = v;
  return true;
}

static bool parse_inputs(kc_lexer *lx, scope *sc) {
  kc_graph *g = sc->g;
  if (!kc_lex_expect(lx, '(', "'(' and the graph's inputs")) return false;
  if (kc_lex_accept(lx, ')')) return true;
  do {
    kc_lex_skip(lx);
    const char *at = lx->p;
    uint32_t id;
    kc_ptype t;
    if (!kc_lex_value_id(lx, &id) || !define(lx, sc, id, at) ||
        !kc_lex_expect(lx, ':', "':' and the input's type") || !kc_parse_type(lx, g, &t))
      return false;
    if (t.absent) return kc_lex_error(lx, t.at, "a graph input needs a type, not '_'");
    set_type(g, (kc_val){id}, &t);
    if (kc_lex_peek(lx, '"') && !kc_lex_string(lx, &g->arena, &kc_value_of(g, (kc_val){id})->name))
      return false;
    if (!add_input(lx, g, (kc_val){id})) return false;
  } while (kc_lex_accept(lx, ','));
  return kc_lex_expect(lx, ')', "',' or ')' after a graph input");
}

static bool parse_return(kc_lexer *lx, kc_graph *g) {
  kc_lex_skip(lx);
  if (*lx->p != '%' && *lx->p != '_') return true;
  do {
    kc_lex_skip(lx);
    uint32_t id;
    const char *name = NULL;
    if (kc_lex_peek_word(lx, "_"))
      return kc_lex_error(lx, lx->p, "a graph output cannot be absent");
    if (!kc_lex_value_id(lx, &id) || !ensure_value(lx, g, id)) return false;
    if (kc_lex_peek(lx, '"') && !kc_lex_string(lx, &g->arena, &name)) return false;
    kc_output(g, (kc_val){id}, name);
    if (g->sticky == KC_ERR_NOMEM) return kc_lex_nomem(lx);
  } while (kc_lex_accept(lx, ','));
  return true;
}

/* After the keyword `graph`: the rest of one graph. parent NULL: the top-level graph. */
static bool parse_graph(kc_lexer *lx, kc_graph *parent, kc_graph **out) {
  kc_arena tmp = {0};
  const char *name = NULL;
  char buf[KC_TEXT_MAX_IDENT + 1];
  *out = NULL;
  if (!kc_lex_expect(lx, '@', "'@' and the graph's name")) return false;
  if (*lx->p == '"') {
    if (!kc_lex_string(lx, &tmp, &name)) {
      kc_arena_free(&tmp); /* a bad escape fails after the string's memory was taken */
      return false;
    }
  } else if (kc_lex_ident(lx, buf, sizeof buf, "the graph's name")) {
    name = buf;
  } else {
    return false;
  }
  kc_graph *g = parent ? kc_graph_new_body(parent, name) : kc_graph_new(lx->ctx, name);
  kc_arena_free(&tmp);
  if (!g) return kc_lex_nomem(lx);
  *out = g;
  scope sc = {.g = g};
  bool ok = parse_inputs(lx, &sc) && kc_lex_expect(lx, '{', "'{' to open the graph's body");
  while (ok && !kc_lex_peek_word(lx, "return")) {
    if (*lx->p == '%' || kc_lex_peek_word(lx, "_"))
      ok = parse_node(lx, &sc);
    else if (*lx->p == '}' || !*lx->p)
      ok = kc_lex_error(lx, lx->p, "expected 'return' at the end of graph @%s", g->name);
    else
      ok = kc_lex_error(lx, lx->p, "expected a statement ('%%N = op(...)') or 'return'");
  }
  ok = ok && kc_lex_accept_word(lx, "return") && parse_return(lx, g) &&
       kc_lex_expect(lx, '}', "'}' to close the graph");
  free(sc.defined);
  return ok;
}

/*
 * weights="FILE" on the "# kir" line at q (its end at eol): the name into buf (the printer
 * escapes only \" and \\ in such names, which are paths); false with an error when malformed.
 */
static bool weights_name(kc_lexer *lx, const char *q, const char *eol, char *buf, size_t size) {
  const char *w = strstr(q, " weights=\"");
  if (!w || w >= eol) return true;
  size_t n = 0;
  for (const char *p = w + 10; p < eol; p++) {
    if (*p == '"') {
      buf[n] = 0;
      return true;
    }
    if (*p == '\\' && p + 1 < eol) p++;
    if (n + 1 >= size) break;
    buf[n++] = *p;
  }
  return kc_lex_error(lx, w + 1, "weights=\"...\" is not closed on the '# kir' line");
}

/*
 * A "# kir N" line among the leading comments names the version (tests put their own comment
 * lines, such as "# expect:", before it); a file without one is read as the current version.
 * The line may name the weights' file (weights="..."), copied into weights (size bytes).
 */
static bool check_version(kc_lexer *lx, char *weights, size_t size) {
  for (const char *q = lx->src;;) {
    while (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r')
      q++;
    if (*q != '#') return true;
    if (strncmp(q, "# kir ", 6) == 0) {
      char *end;
      long v = strtol(q + 6, &end, 10);
      if (end == q + 6) return kc_lex_error(lx, q + 6, "expected a version after '# kir'");
      if (v != KC_KIR_VERSION)
        return kc_lex_error(lx, q + 6, "unsupported kir version %ld (this kernc reads %d)", v,
                            KC_KIR_VERSION);
      return weights_name(lx, q, q + strcspn(q, "\n"), weights, size);
    }
    q += strcspn(q, "\n");
  }
}

/* g and its body graphs keep the text they were parsed from (see kc_graph.src_text). */
static void share_source(kc_graph *g, const char *text, const char *file) {
  g->src_text = text;
  g->src_file = file;
  for (uint32_t i = 0; i < g->nbodies; i++)
    share_source(g->bodies[i], text, file);
}

static bool keep_source(kc_graph *g, const char *text, const char *file) {
  const char *t = kc_arena_strdup(&g->arena, text), *f = kc_arena_strdup(&g->arena, file);
  if (!t || !f) return false;
  share_source(g, t, f);
  return true;
}

kc_status kc_graph_parse(kc_context *ctx, const char *text, const char *filename, kc_graph **out) {
  kc_clear_error(ctx);
  *out = NULL;
  kc_lexer lx = {.ctx = ctx, .file = filename ? filename : "<input>", .src = text, .p = text};
  kc_graph *g = NULL;
  char weights[4096] = "";
  bool ok = check_version(&lx, weights, sizeof weights);
  if (ok && !kc_lex_accept_word(&lx, "graph")) ok = kc_lex_error(&lx, lx.p, "expected 'graph'");
  ok = ok && parse_graph(&lx, NULL, &g);
  kc_lex_skip(&lx);
  if (ok && *lx.p) ok = kc_lex_error(&lx, lx.p, "expected the end of input after the graph");
  if (!ok) {
    kc_graph_free(g);
    return lx.nomem ? KC_ERR_NOMEM : KC_ERR_PARSE;
  }
  if (!keep_source(g, text, lx.file) ||
      (weights[0] && !(g->weights_file = kc_arena_strdup(&g->arena, weights)))) {
    kc_graph_free(g);
    return kc_errorf(ctx, KC_ERR_NOMEM, "%s: out of memory", lx.file);
  }
  *out = g;
  return KC_OK;
}

kc_status kc_graph_parse_file(kc_context *ctx, const char *path, kc_graph **out) {
  kc_clear_error(ctx);
  *out = NULL;
  FILE *f = kc_fopen_regular(ctx, path); /* a FIFO would block, a folder read as empty */
  if (!f) return KC_ERR_IO;
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (cap - len < 4096) {
      cap = cap ? cap * 2 : 65536;
      char *p = realloc(buf, cap + 1);
      if (!p) {
        free(buf);
        fclose(f);
        return kc_errorf(ctx, KC_ERR_NOMEM, "cannot read '%s': out of memory", path);
      }
      buf = p;
    }
    size_t n = fread(buf + len, 1, cap - len, f);
    len += n;
    if (n == 0) break;
  }
  bool bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return kc_errorf(ctx, KC_ERR_IO, "cannot read '%s'", path);
  }
  buf[len] = 0;
  kc_status s = strlen(buf) != len
                    ? kc_errorf(ctx, KC_ERR_PARSE, "%s: error: the file contains a NUL byte", path)
                    : kc_graph_parse(ctx, buf, path, out);
  free(buf);
  return s;
}

/*
 * passes/derive_decode_past.c - derive-decode for models exported "with past" (the decoder
 * layout optimum and ONNX Runtime GenAI use): each layer's keys and values are
 * Concat(past, new) of a past input [B, kv_heads, P, head_dim] and the new tokens', returned as
 * a present output. derive-decode keeps its own cache, so the past is mapped onto it: each
 * attention reads the new keys and values alone (the cache supplies the past), the present
 * outputs go, and the past inputs with them. What else the past was used for must go with it:
 *   - positions computed from P (Range(P, P + S) over the sequence) become past[b] + i, as
 *     derive_decode.c does for Range(0, S);
 *   - a position_ids input [B, S] (optimum's Llama export) is replaced by past[b] + i computed in
 *     the graph, so the session needs no new input;
 *   - an attention mask input over the P + S keys is fed all ones by ONNX Runtime's users for
 *     unpadded sequences; fuse-attention splits the mask built from it into mask=causal (the
 *     cache's own causal rule) and a padding part derived from the mask alone, which
 *     derive-decode drops (all keep); the input then has no reader and is removed (the session
 *     feeds masks of [B, S] only).
 * Recognized spellings: past_key_values.N.key / .value with present.N.key / .value (optimum, ORT
 * GenAI), past.N.key / .value with present.N.*, past_key.N / past_value.N with present_key.N /
 * present_value.N. Refused, naming the input, output or node: a past of another layout (not
 * [B, kv_heads, P, head_dim], or P not the same symbol everywhere), a present that is not
 * Concat(its own past, new) along axis 2, a past read otherwise than through its shape and that
 * Concat, a Concat read otherwise than as one attention's keys or values, keys and values of
 * different layers in one attention, and, once the step is derived, anything still reading a
 * dropped input or sized by P.
 * Invariants: kc_dd_past_map checks everything before it changes g; layer N's key and value
 * must feed the same attention (the cache's layer is that attention's, in program order, so N
 * itself need not match it).
 */
#include "passes/derive_decode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { KEY, VALUE };
enum { A_K = 1, A_V = 2 }; /* attention operands (ir/ops.def) */

/* How exporters spell a past input and its present output: prefix, layer, suffix. */
typedef struct spelling {
  const char *past[2][2]; /* [KEY / VALUE][prefix, suffix] */
  const char *present[2][2];
} spelling;

static const spelling spellings[] = {
    {{{"past_key_values.", ".key"}, {"past_key_values.", ".value"}},
     {{"present.", ".key"}, {"present.", ".value"}}},
    {{{"past.", ".key"}, {"past.", ".value"}}, {{"present.", ".key"}, {"present.", ".value"}}},
    {{{"past_key.", ""}, {"past_value.", ""}}, {{"present_key.", ""}, {"present_value.", ""}}},
};
#define NSPELL (sizeof spellings / sizeof *spellings)

typedef struct entry {
  uint32_t input;     /* index in g->inputs */
  int kind;           /* KEY or VALUE */
  uint32_t layer, sp; /* N and the spelling */
  uint32_t concat;    /* node: Concat(past, new) */
  uint32_t out;       /* graph output: the present */
  uint32_t attn;      /* node: the attention reading the Concat */
} entry;

typedef struct pm {
  kc_graph *g;
  kc_dim B, S;
  kc_dd_past *p;
  entry *e;
  uint32_t ne;
} pm;

static kc_status refuse_in(pm *m, uint32_t k, const char *fmt, const char *what) {
  char ty[128];
  kc_type_str(m->g, m->g->inputs[k], ty, sizeof ty);
  return kc_errorf(m->g->ctx, KC_ERR_UNSUPPORTED, "derive-decode: input '%s' %s: %s%s",
                   kc_graph_input_name(m->g, k), ty, fmt, what ? what : "");
}

static kc_status refuse_node(pm *m, uint32_t i, const char *fmt, const char *name) {
  return kc_node_errorf(m->g, &m->g->nodes[i], KC_ERR_UNSUPPORTED, "derive-decode: %s'%s'", fmt,
                        name);
}

/* name = prefix N suffix: N to *layer. */
static bool parse(const char *name, const char *const ps[2], uint32_t *layer) {
  size_t n = strlen(ps[0]);
  if (!name || strncmp(name, ps[0], n) != 0) return false;
  const char *c = name + n;
  uint32_t v = 0;
  if (*c < '0' || *c > '9') return false;
  for (; *c >= '0' && *c <= '9'; c++) {
    if (v > 100000) return false;
    v = v * 10 + (uint32_t)(*c - '0');
  }
  if (strcmp(c, ps[1]) != 0) return false;
  *layer = v;
  return true;
}

static bool is_int(kc_dtype t) { return kc_dtype_is_int(t) || t == KC_BOOL; }

/* ---- classifying the inputs ----------------------------------------------------------------- */

static kc_status claim(pm *m, uint32_t k) {
  uint32_t *d = realloc(m->p->drop, (m->p->ndrop + 1) * sizeof *d);
  if (!d) return kc_errorf(m->g->ctx, KC_ERR_NOMEM, "out of memory in derive-decode");
  m->p->drop = d;
  d[m->p->ndrop++] = k;
  return KC_OK;
}

/* Input k [B, kv_heads, P, head_dim] with P the same symbol as in the others. */
static kc_status check_layout(pm *m, uint32_t k) {
  const kc_graph *g = m->g;
  const kc_value *v = kc_value_of(g, g->inputs[k]);
  int64_t h, dd;
  bool ok = v->rank == 4 && kc_dtype_is_float(v->dtype) && kc_dim_same(g, v->dims[0], m->B) &&
            kc_dim_const(g, v->dims[1], &h) && h > 0 && kc_dim_const(g, v->dims[3], &dd) &&
            dd > 0 && KC_DIM_IS_SYM(v->dims[2]) && !kc_dim_same(g, v->dims[2], m->S) &&
            (!m->p->P || kc_dim_same(g, v->dims[2], m->p->P));
  if (!ok)
    return refuse_in(m, k,
                     "a past input must be [B, kv_heads, P, head_dim] of floats, P the past "
                     "length (the same symbol in every past input, not the new tokens')",
                     NULL);
  m->p->P = v->dims[2];
  return KC_OK;
}

static kc_status add_entry(pm *m, uint32_t k, int kind, uint32_t layer, uint32_t sp) {
  for (uint32_t i = 0; i < m->ne; i++)
    if (m->e[i].kind == kind && m->e[i].layer == layer)
      return refuse_in(m, k, "a second past input of the same layer", NULL);
  entry *e = realloc(m->e, (m->ne + 1) * sizeof *e);
  if (!e) return kc_errorf(m->g->ctx, KC_ERR_NOMEM, "out of memory in derive-decode");
  m->e = e;
  e[m->ne++] = (entry){k, kind, layer, sp, UINT32_MAX, UINT32_MAX, UINT32_MAX};
  return check_layout(m, k);
}

/* Past inputs, position_ids and masks over the past and new tokens. */
static kc_status classify(pm *m) {
  kc_graph *g = m->g;
  kc_status s = KC_OK;
  for (uint32_t k = 1; k < g->ninputs && s == KC_OK; k++) {
    const char *name = kc_graph_input_name(g, k);
    uint32_t layer;
    bool found = false;
    for (uint32_t sp = 0; sp < NSPELL && !found && s == KC_OK; sp++)
      for (int kind = KEY; kind <= VALUE && !found; kind++)
        if (parse(name, spellings[sp].past[kind], &layer)) {
          found = true;
          s = add_entry(m, k, kind, layer, sp);
        }
    if (found || s != KC_OK) continue;
    if (name && strncmp(name, "past", 4) == 0)
      s = refuse_in(m, k,
                    "not a past input derive-decode knows (past_key_values.N.key / .value, "
                    "past.N.key / .value, past_key.N / past_value.N)",
                    NULL);
  }
  for (uint32_t k = 1; k < g->ninputs && s == KC_OK; k++) {
    const char *name = kc_graph_input_name(g, k);
    const kc_value *v = kc_value_of(g, g->inputs[k]);
    if (name && strcmp(name, "position_ids") == 0) {
      if (v->rank != 2 || !kc_dtype_is_int(v->dtype) || !kc_dim_same(g, v->dims[0], m->B) ||
          !kc_dim_same(g, v->dims[1], m->S))
        return refuse_in(m, k, "position_ids must be integers [B, S], as the token ids", NULL);
      m->p->posids = g->inputs[k];
      s = claim(m, k);
    } else if (m->ne && name && strstr(name, "mask") && v->rank == 2 && is_int(v->dtype) &&
               kc_dim_same(g, v->dims[0], m->B) && !kc_dim_same(g, v->dims[1], m->S)) {
      s = claim(m, k); /* over past + new tokens: all ones, dropped with the masks made of it */
    }
  }
  for (uint32_t i = 0; i < m->ne && s == KC_OK; i++)
    s = claim(m, m->e[i].input);
  return s;
}

/* ---- the past's readers --------------------------------------------------------------------- */

/* Is node n Concat(past, new) along axis 2, new [B, kv_heads, S, head_dim] as the past? */
static bool past_concat(const pm *m, const kc_node *n, kc_val past) {
  const kc_graph *g = m->g;
  if (n->op != KC_OP_CONCAT || n->nin != 2 || n->in[0].id != past.id || n->in[1].id == past.id)
    return false;
  int64_t a = kc_node_int(n, "axis", 0);
  const kc_value *p = kc_value_of(g, past), *x = kc_value_of(g, n->in[1]);
  return (a < 0 ? a + 4 : a) == 2 && x->rank == 4 && x->dtype == p->dtype &&
         kc_dim_same(g, x->dims[0], p->dims[0]) && kc_dim_same(g, x->dims[1], p->dims[1]) &&
         kc_dim_same(g, x->dims[2], m->S) && kc_dim_same(g, x->dims[3], p->dims[3]);
}

/* e's Concat, its present output and the one attention reading it. */
static kc_status readers(pm *m, entry *e) {
  kc_graph *g = m->g;
  kc_val past = g->inputs[e->input];
  const char *name = kc_graph_input_name(g, e->input);
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    for (uint32_t j = 0; j < n->nin; j++) {
      if (n->in[j].id != past.id || n->op == KC_OP_SHAPE) continue;
      if (!past_concat(m, n, past) || e->concat != UINT32_MAX)
        return refuse_node(m, i,
                           "reads the past input other than through its shape or as the past of "
                           "one Concat(past, new) along axis 2: ",
                           name);
      e->concat = i;
    }
  }
  if (e->concat == UINT32_MAX)
    return refuse_in(m, e->input, "never concatenated with the new tokens' keys or values", NULL);
  kc_val cat = g->nodes[e->concat].out[0];
  const spelling *sp = &spellings[e->sp];
  char want[256];
  snprintf(want, sizeof want, "%s%u%s", sp->present[e->kind][0], e->layer, sp->present[e->kind][1]);
  for (uint32_t o = 0; o < g->noutputs; o++) {
    const char *on = g->outputs[o].name;
    if (on && strcmp(on, want) == 0) e->out = o;
    if (g->outputs[o].v.id == cat.id && (!on || strcmp(on, want) != 0))
      return kc_errorf(g->ctx, KC_ERR_UNSUPPORTED,
                       "derive-decode: output %u '%s' is Concat('%s', new), which only the "
                       "present output '%s' may be",
                       o, on ? on : "", name, want);
  }
  if (e->out == UINT32_MAX) return refuse_in(m, e->input, "no present output named ", want);
  if (e->out == 0 || g->outputs[e->out].v.id != cat.id) {
    char msg[512];
    snprintf(msg, sizeof msg,
             "derive-decode: output '%s' is not Concat('%s', new) along axis 2 (a present that "
             "is not the past followed by the new tokens' keys or values cannot be the cache's)",
             want, name);
    return kc_errorf(g->ctx, KC_ERR_UNSUPPORTED, "%s", msg);
  }
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    for (uint32_t j = 0; j < n->nin; j++) {
      if (n->in[j].id != cat.id) continue;
      bool ok =
          n->op == KC_OP_ATTENTION && j == (e->kind == KEY ? A_K : A_V) && e->attn == UINT32_MAX;
      if (!ok)
        return refuse_node(m, i,
                           "reads Concat(past, new) other than as the keys or values of one "
                           "attention (did the attention fuse? kernc dump --explain-fusion): ",
                           name);
      e->attn = i;
    }
  }
  if (e->attn == UINT32_MAX)
    return refuse_in(m, e->input, "its Concat(past, new) feeds no attention", NULL);
  return KC_OK;
}

/* Every attention reading a past reads the key and the value of one layer. */
static kc_status pairs(pm *m) {
  for (uint32_t i = 0; i < m->ne; i++) {
    const entry *e = &m->e[i], *o = NULL;
    for (uint32_t j = 0; j < m->ne; j++)
      if (m->e[j].layer == e->layer && m->e[j].kind != e->kind) o = &m->e[j];
    if (!o)
      return refuse_in(m, e->input, "its layer has no past for the other of key / value", NULL);
    if (o->attn != e->attn)
      return refuse_node(m, e->attn, "reads the keys and values of different layers' pasts: ",
                         kc_graph_input_name(m->g, e->input));
  }
  return KC_OK;
}

kc_status kc_dd_past_map(kc_graph *g, kc_dim B, kc_dim S, kc_dd_past *p) {
  pm m = {g, B, S, p, NULL, 0};
  *p = (kc_dd_past){0};
  kc_status s = classify(&m);
  for (uint32_t i = 0; i < m.ne && s == KC_OK; i++)
    s = readers(&m, &m.e[i]);
  if (s == KC_OK) s = pairs(&m);
  if (s == KC_OK && m.ne) {
    for (uint32_t i = 0; i < m.ne; i++) {
      const entry *e = &m.e[i];
      g->nodes[e->attn].in[e->kind == KEY ? A_K : A_V] = g->nodes[e->concat].in[1];
    }
    for (uint32_t i = 0; i < m.ne && s == KC_OK; i++)
      if (m.e[i].kind == KEY) s = kc_node_infer(g, m.e[i].attn); /* once both are new */
    uint32_t n = 0;
    for (uint32_t o = 0; o < g->noutputs; o++) {
      bool present = false;
      for (uint32_t i = 0; i < m.ne; i++)
        present = present || m.e[i].out == o;
      if (!present) g->outputs[n++] = g->outputs[o];
    }
    g->noutputs = n;
  }
  free(m.e);
  if (s != KC_OK) kc_dd_past_free(p);
  return s;
}

bool kc_dd_past_claims(const kc_dd_past *p, uint32_t k) {
  for (uint32_t i = 0; i < p->ndrop; i++)
    if (p->drop[i] == k) return true;
  return false;
}

/* ---- after the derivation ------------------------------------------------------------------- */

static bool mentions(const kc_graph *g, kc_dim d, kc_dim sym, int depth) {
  if (d == sym) return true;
  if (!KC_DIM_IS_SYM(d) || depth > 64 || KC_DIM_EXPR(d) >= g->ndexprs) return false;
  const kc_dexpr *x = &g->dexprs[KC_DIM_EXPR(d)];
  if (x->kind == KC_DX_SYM || x->kind == KC_DX_CONST) return false;
  return mentions(g, x->a, sym, depth + 1) || mentions(g, x->b, sym, depth + 1);
}

kc_status kc_dd_past_finish(kc_graph *g, const kc_dd_past *p) {
  if (!p->ndrop) return KC_OK;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    if (n->op == KC_OP_NOP) continue;
    for (uint32_t j = 0; j < n->nin; j++)
      for (uint32_t k = 0; k < p->ndrop; k++)
        if (n->in[j].id && n->in[j].id == g->inputs[p->drop[k]].id)
          return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED,
                                "derive-decode: still reads input '%s' once the past is the "
                                "cache's (only positions, masks and attentions may read it)",
                                kc_graph_input_name(g, p->drop[k]));
    for (uint32_t j = 0; p->P && j < n->nout; j++) {
      const kc_value *v = n->out[j].id ? kc_value_of(g, n->out[j]) : NULL;
      for (int a = 0; v && a < v->rank; a++)
        if (mentions(g, v->dims[a], p->P, 0))
          return kc_node_errorf(g, n, KC_ERR_UNSUPPORTED,
                                "derive-decode: sized by the past length, which the cache's "
                                "rows have each their own of");
    }
  }
  uint32_t n = 0;
  for (uint32_t k = 0; k < g->ninputs; k++)
    if (!kc_dd_past_claims(p, k)) g->inputs[n++] = g->inputs[k];
  g->ninputs = n;
  return KC_OK;
}

void kc_dd_past_free(kc_dd_past *p) {
  free(p->drop);
  *p = (kc_dd_past){0};
}

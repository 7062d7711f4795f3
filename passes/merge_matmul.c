/*
 * passes/merge_matmul.c - merge-matmul: matmuls that read the same input with constant 2-D
 * weights become one matmul over the weights concatenated along their columns, whose result a
 * split hands back in pieces. The case it is for: an attention layer's query, key and value
 * projections of one hidden state (BERT, ViT, Llama export three MatMuls; GPT-2 already has one),
 * which then run as one bigger, better-blocked matmul reading the input once.
 *
 * Which matmuls: KC_OP_MATMUL x @ W_i, every W_i a weight or constant with data, [K, N_i] of one
 * float dtype, x the same value; at least two. When each result's only reader adds a 1-D
 * constant bias [N_i] (either operand order), the biases are concatenated too and the add stays
 * one node, for fuse-epilogue to fold into the matmul. The pieces are bitwise what the separate
 * matmuls gave: column j of x @ [W_1 | W_2 | ...] is computed from column j of the weights alone.
 * Weights that are graph inputs (a trainer's parameters) are not touched, so training, whose
 * parameters are inputs, keeps its separate gradients.
 *
 * Invariants: the concatenated weight is a new tensor (a weight named "merged:" and the first
 * weight's name, or a constant when every part is one); the old weights stay for any other reader;
 * new nodes sit right before the first merged matmul, which every reader of a replaced value
 * follows; dead nodes are deleted at the end.
 */
#include "kernc.h"
#include "passes/internal.h"
#include "passes/match.h"
#include "passes/passes.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MERGE 16 /* matmuls merged into one at most */

typedef struct member {
  uint32_t ni;            /* the matmul node */
  const kc_tensor *w, *b; /* its weight [K, N], its bias [N] (NULL: none) */
  kc_val result;          /* what readers read: the bias add's result, or the matmul's */
} member;

/* The weight [K, N] of matmul n when it is mergeable, else NULL. */
static const kc_tensor *matmul_weight(const kc_graph *g, const kc_node *n) {
  if (n->op != KC_OP_MATMUL || n->nin != 2) return NULL;
  const kc_tensor *w = kc_source_tensor(g, n->in[1]);
  if (!w || w->rank != 2 || !kc_dtype_is_float(w->dtype)) return NULL;
  const kc_value *x = kc_value_of(g, n->in[0]);
  return x->dtype == w->dtype && x->rank >= 2 ? w : NULL;
}

/* The bias add reading matmul m's result alone: its 1-D constant [N] into *b, its node index
 * into *add; false when there is none. */
static bool bias_add(const kc_graph *g, const uint32_t *uses, const member *m, const kc_tensor **b,
                     uint32_t *add) {
  kc_val y = g->nodes[m->ni].out[0];
  if (uses[y.id] != 1) return false;
  for (uint32_t i = m->ni + 1; i < g->nnodes; i++) {
    const kc_node *n = &g->nodes[i];
    if (n->op == KC_OP_NOP) continue;
    for (uint32_t k = 0; k < n->nin; k++)
      if (n->in[k].id == y.id) {
        if (n->op != KC_OP_ADD || n->nin != 2) return false;
        const kc_tensor *t = kc_source_tensor(g, n->in[1 - k]);
        if (!t || t->rank != 1 || t->dims[0] != m->w->dims[1] || t->dtype != m->w->dtype)
          return false;
        *b = t;
        *add = i;
        return true;
      }
  }
  return false;
}

/* A tensor name not taken yet: prefix + base, then ".1", ".2", ... */
static void fresh_name(const kc_graph *g, const char *prefix, const char *base, char *buf,
                       size_t size) {
  for (int k = 0;; k++) {
    if (k)
      snprintf(buf, size, "%s%s.%d", prefix, base, k);
    else
      snprintf(buf, size, "%s%s", prefix, base);
    bool taken = false;
    for (uint32_t i = 0; i < g->ntensors && !taken; i++)
      taken = g->tensors[i].name && strcmp(g->tensors[i].name, buf) == 0;
    if (!taken) return;
  }
}

/* [rows, sum of cols]: each member's tensor's columns side by side (rows 1 for biases). */
static void *concat_columns(const member *ms, int n, bool bias, int64_t rows, int64_t cols,
                            size_t es) {
  unsigned char *out = malloc((size_t)(rows * cols) * es + 1);
  if (!out) return NULL;
  int64_t at = 0;
  for (int i = 0; i < n; i++) {
    const kc_tensor *t = bias ? ms[i].b : ms[i].w;
    int64_t c = bias ? t->dims[0] : t->dims[1];
    for (int64_t r = 0; r < rows; r++)
      memcpy(out + (size_t)(r * cols + at) * es,
             (const unsigned char *)t->data + (size_t)(r * c) * es, (size_t)c * es);
    at += c;
  }
  return out;
}

/* A new tensor holding data (copied), [rank, dims] of dtype t: a weight named after base, or an
 * anonymous constant when base is NULL (merged constants stay constants, printed with their
 * values); {0} on failure. */
static kc_val add_source(kc_graph *g, const char *base, kc_dtype t, int rank, const int64_t *dims,
                         const void *data) {
  if (!base) return kc_constant(g, t, rank, dims, data);
  char name[512];
  fresh_name(g, "merged:", base, name, sizeof name);
  return kc_weight(g, name, t, rank, dims, data);
}

/* The first name among the members' weights (biases), NULL when all are anonymous constants. */
static const char *first_name(const member *ms, int n, bool bias) {
  for (int i = 0; i < n; i++) {
    const kc_tensor *t = bias ? ms[i].b : ms[i].w;
    if (t->name) return t->name;
  }
  return NULL;
}

/* Merge the n members reading x; the new nodes are appended (placed by the caller). */
static kc_status merge(kc_graph *g, kc_val x, member *ms, int n, bool biased) {
  const kc_tensor *w0 = ms[0].w;
  size_t es = kc_dtype_size(w0->dtype);
  int64_t k = w0->dims[0], cols = 0;
  int64_t sizes[MAX_MERGE];
  for (int i = 0; i < n; i++)
    cols += sizes[i] = ms[i].w->dims[1];
  void *wdata = concat_columns(ms, n, false, k, cols, es);
  void *bdata = biased ? concat_columns(ms, n, true, 1, cols, es) : NULL;
  if (!wdata || (biased && !bdata)) {
    free(wdata);
    free(bdata);
    return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in merge-matmul");
  }
  kc_val w = add_source(g, first_name(ms, n, false), w0->dtype, 2, (int64_t[]){k, cols}, wdata);
  kc_val y = kc_matmul(g, x, w);
  if (biased) y = kc_add(g, y, add_source(g, first_name(ms, n, true), w0->dtype, 1, &cols, bdata));
  free(wdata);
  free(bdata);
  kc_val outs[MAX_MERGE];
  kc_status s = kc_split(g, y, kc_value_of(g, y)->rank - 1, n, sizes, outs);
  if (s == KC_OK) s = g->sticky;
  if (s != KC_OK) return s;
  for (int i = 0; i < n; i++)
    kc_graph_replace_uses(g, ms[i].result, outs[i]);
  return KC_OK;
}

/* Collect the members reading the same input as matmul node first; returns their count. */
static int collect(const kc_graph *g, const uint32_t *uses, const bool *done, uint32_t first,
                   member *ms, bool *biased) {
  const kc_node *f = &g->nodes[first];
  const kc_tensor *w0 = matmul_weight(g, f);
  int n = 0;
  for (uint32_t i = first; i < g->nnodes && n < MAX_MERGE; i++) {
    const kc_node *nd = &g->nodes[i];
    if (done[i] || nd->op != KC_OP_MATMUL || nd->in[0].id != f->in[0].id) continue;
    const kc_tensor *w = matmul_weight(g, nd);
    if (!w || w->dtype != w0->dtype || w->dims[0] != w0->dims[0]) continue;
    bool again = false; /* the same weight twice: cse's business, not a merge */
    for (int j = 0; j < n; j++)
      again |= ms[j].w == w;
    if (!again) ms[n++] = (member){.ni = i, .w = w, .result = nd->out[0]};
  }
  *biased = n >= 2;
  uint32_t add[MAX_MERGE];
  for (int i = 0; i < n && *biased; i++)
    *biased = bias_add(g, uses, &ms[i], &ms[i].b, &add[i]);
  for (int i = 0; i < n; i++) {
    if (*biased)
      ms[i].result = g->nodes[add[i]].out[0];
    else
      ms[i].b = NULL;
  }
  return n;
}

static kc_status run(kc_graph *g, kc_pass_ctx *pc) {
  uint32_t *uses = kc_graph_use_counts(g);
  bool *done = calloc(g->nnodes + 1, sizeof *done);
  if (!uses || !done) {
    free(uses);
    free(done);
    return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in merge-matmul");
  }
  kc_status s = KC_OK;
  uint32_t nold = g->nnodes;
  for (uint32_t i = 0; i < nold && s == KC_OK; i++) {
    if (done[i] || !matmul_weight(g, &g->nodes[i])) continue;
    member ms[MAX_MERGE];
    bool biased;
    int n = collect(g, uses, done, i, ms, &biased);
    for (int j = 0; j < n; j++)
      done[ms[j].ni] = true;
    if (n < 2) continue;
    uint32_t first = g->nnodes;
    const char *loc = g->nodes[i].loc;
    s = merge(g, g->nodes[i].in[0], ms, n, biased);
    if (s != KC_OK) break;
    kc_rewrite_set_loc(g, first, loc);
    uint32_t *anchor = malloc((size_t)(g->nnodes - first) * sizeof *anchor);
    if (!anchor) {
      s = kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in merge-matmul");
      break;
    }
    for (uint32_t k = 0; k < g->nnodes - first; k++)
      anchor[k] = i;
    s = kc_graph_place(g, first, anchor); /* node indices below i do not move */
    free(anchor);
    if (s != KC_OK) break;
    /* the appended nodes now sit at [i, i + added): shift what the loop still reads */
    uint32_t added = g->nnodes - nold;
    bool *nd = calloc(g->nnodes + 1, sizeof *nd);
    if (!nd) {
      s = kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in merge-matmul");
      break;
    }
    for (uint32_t k = 0; k < nold; k++)
      nd[k < i ? k : k + added] = done[k];
    for (uint32_t k = i; k < i + added; k++)
      nd[k] = true;
    free(done);
    done = nd;
    i += added;
    nold = g->nnodes;
    free(uses);
    if (!(uses = kc_graph_use_counts(g))) {
      s = kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in merge-matmul");
      break;
    }
    pc->changed = true;
  }
  free(uses);
  free(done);
  return s == KC_OK ? kc_dce_run(g, NULL) : s;
}

const kc_pass kc_pass_merge_matmul = {
    "merge-matmul", run,
    "matmuls of one input by constant weights [K, N_i] become one over the weights side by side"};

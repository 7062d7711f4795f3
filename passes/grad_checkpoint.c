/*
 * passes/grad_checkpoint.c - gradient checkpointing: the plan (which values are kept, which
 * forward nodes are recomputed in which segment) and the clones (passes/grad_checkpoint.h).
 *
 * Block boundaries (KC_CKPT_SQRT): the residual stream between transformer blocks is the value
 * every later block reads. Exporters write it the same way whatever the model: it is read by the
 * residual add (an ADD node) and by the norm that starts the next block: a norm op (layer_norm,
 * rms_norm, layer_normalization, rms_normalization) as its input 0, or, decomposed, a
 * reduce_mean reading it directly (LayerNorm's mean) or through up to two pow/mul/cast nodes
 * (RMSNorm's mean of squares). The final norm's input has no residual add and is not one. Of the
 * L boundaries found, in program order, every round(sqrt(L))-th is kept (the last kept one ends
 * the recomputed part).
 *
 * Invariants: only nodes with every result present are recomputed (a clone has all results);
 * clones are appended in the original order of their segment, so program order holds.
 */
#include "passes/grad_checkpoint.h"
#include "passes/grad.h"

#include <fnmatch.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static bool is_norm(kc_op op) {
  return op == KC_OP_LAYER_NORM || op == KC_OP_RMS_NORM || op == KC_OP_LAYER_NORMALIZATION ||
         op == KC_OP_RMS_NORMALIZATION;
}

/* The values (ids) that are block boundaries, by their defining node's order; count in *n. */
static kc_status boundaries(kc_graph *g, uint32_t hi, uint32_t nv, uint32_t **out, uint32_t *n) {
  bool *add = calloc(nv, sizeof *add), *mean = calloc(nv, sizeof *mean);
  uint32_t *list = malloc((size_t)nv * sizeof *list);
  if (!add || !mean || !list) {
    free(add);
    free(mean);
    free(list);
    return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in checkpointing");
  }
  for (uint32_t ni = 0; ni < hi; ni++) {
    const kc_node *nd = &g->nodes[ni];
    if (nd->op == KC_OP_ADD)
      for (uint32_t i = 0; i < nd->nin; i++)
        add[nd->in[i].id] = true;
    if ((nd->op == KC_OP_REDUCE_MEAN || is_norm(nd->op)) && nd->nin > 0 && nd->in[0].id)
      mean[nd->in[0].id] = true;
  }
  for (int hop = 0; hop < 2; hop++) /* x -> pow/mul/cast -> (one more) -> reduce_mean */
    for (uint32_t ni = hi; ni-- > 0;) {
      const kc_node *nd = &g->nodes[ni];
      if (nd->op != KC_OP_POW && nd->op != KC_OP_MUL && nd->op != KC_OP_CAST) continue;
      if (!nd->out[0].id || !mean[nd->out[0].id]) continue;
      uint32_t last = nd->op == KC_OP_MUL ? nd->nin : 1;
      for (uint32_t i = 0; i < last; i++)
        if (nd->in[i].id) mean[nd->in[i].id] = true;
    }
  uint32_t cnt = 0;
  for (uint32_t ni = 0; ni < hi; ni++) {
    const kc_node *nd = &g->nodes[ni];
    if (nd->op == KC_OP_NOP || kc_ops[nd->op].cls == KC_CLASS_SOURCE) continue;
    for (uint32_t j = 0; j < nd->nout; j++) {
      kc_val v = nd->out[j];
      if (v.id && add[v.id] && mean[v.id] && kc_dtype_is_float(kc_value_of(g, v)->dtype))
        list[cnt++] = v.id;
    }
  }
  free(add);
  free(mean);
  *out = list;
  *n = cnt;
  return KC_OK;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

kc_status kc_ckpt_plan(kc_graph *g, uint32_t hi, const kc_grad_options *o, kc_ckpt *c) {
  memset(c, 0, sizeof *c);
  c->hi = hi;
  c->nvals = g->nvals;
  if (!o || o->checkpoint == KC_CKPT_NONE) return KC_OK;
  if (o->checkpoint != KC_CKPT_SQRT && o->checkpoint != KC_CKPT_MARKED)
    return kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "kc_grad_ex: unknown checkpoint policy %d",
                     (int)o->checkpoint);
  if (o->checkpoint == KC_CKPT_MARKED && (o->nmarked <= 0 || !o->marked))
    return kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "kc_grad_ex: the marked policy needs globs");
  uint32_t *kept = NULL, nkept = 0; /* node indices whose results are kept */
  kc_status s = KC_OK;
  if (o->checkpoint == KC_CKPT_SQRT) {
    uint32_t *cand = NULL, ncand = 0;
    s = boundaries(g, hi, g->nvals, &cand, &ncand);
    if (s != KC_OK) return s;
    c->ncands = ncand;
    if (ncand == 0) {
      free(cand);
      return kc_errorf(g->ctx, KC_ERR_INVALID_ARG,
                       "kc_grad_ex: no block boundary (a value read by a residual add and a "
                       "norm) found for the sqrt checkpoint policy");
    }
    uint32_t stride = (uint32_t)lround(sqrt((double)ncand));
    if (stride < 1) stride = 1;
    kept = cand; /* reused in place: kept[k] <= cand[k] */
    for (uint32_t i = 0; i < ncand; i++)
      if ((i + 1) % stride == 0) kept[nkept++] = kc_value_of(g, (kc_val){cand[i]})->def - 1;
  } else {
    kept = malloc(((size_t)hi + 1) * sizeof *kept);
    if (!kept) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in checkpointing");
    for (uint32_t ni = 0; ni < hi; ni++) {
      const kc_node *nd = &g->nodes[ni];
      if (nd->op == KC_OP_NOP || !nd->loc) continue;
      for (int k = 0; k < o->nmarked; k++)
        if (o->marked[k] && fnmatch(o->marked[k], nd->loc, 0) == 0) {
          kept[nkept++] = ni;
          break;
        }
    }
    if (!nkept) {
      free(kept);
      return kc_errorf(g->ctx, KC_ERR_INVALID_ARG,
                       "kc_grad_ex: no node's name matches the marked checkpoint globs");
    }
  }
  qsort(kept, nkept, sizeof *kept, cmp_u32);
  c->nkept = nkept;
  c->nseg = nkept;
  c->seg = malloc(((size_t)hi + 1) * sizeof *c->seg);
  c->cloned = calloc((size_t)nkept + 1, sizeof *c->cloned);
  c->clone = calloc((size_t)g->nvals + 1, sizeof *c->clone);
  if (!c->seg || !c->cloned || !c->clone) {
    free(kept);
    kc_ckpt_free(c);
    return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in checkpointing");
  }
  uint32_t j = 0;
  for (uint32_t ni = 0; ni < hi && s == KC_OK; ni++) {
    while (j < nkept && kept[j] < ni)
      j++;
    const kc_node *nd = &g->nodes[ni];
    bool whole = nd->nout > 0;
    for (uint32_t k = 0; k < nd->nout; k++)
      whole = whole && nd->out[k].id;
    bool re = j < nkept && kept[j] != ni && nd->op != KC_OP_NOP &&
              kc_ops[nd->op].cls != KC_CLASS_SOURCE && !nd->body &&
              !(kc_ops[nd->op].flags & KC_OPF_BODY) && whole;
    c->seg[ni] = re ? j : UINT32_MAX;
    if (re && (kc_ops[nd->op].flags & KC_OPF_RANDOM))
      s = kc_node_errorf(g, nd, KC_ERR_UNSUPPORTED,
                         "checkpointing: this random op lies in a recomputed piece, and "
                         "recomputing it would draw another mask; keep its result (marked "
                         "policy) or train without checkpointing");
  }
  free(kept);
  if (s != KC_OK) kc_ckpt_free(c);
  return s;
}

void kc_ckpt_free(kc_ckpt *c) {
  free(c->seg);
  free(c->cloned);
  free(c->clone);
  memset(c, 0, sizeof *c);
}

/* Clone segment j's nodes at the end of g. */
static kc_status clone_segment(kc_graph *g, kc_ckpt *c, uint32_t j) {
  c->cloned[j] = true;
  for (uint32_t ni = 0; ni < c->hi; ni++) {
    if (c->seg[ni] != j) continue;
    kc_node n = g->nodes[ni]; /* a copy: g->nodes moves as nodes are added */
    kc_val in[KC_GRAD_MAX_IO], outs[KC_GRAD_MAX_IO];
    if (n.nin > KC_GRAD_MAX_IO || n.nout > KC_GRAD_MAX_IO)
      return kc_node_errorf(g, &g->nodes[ni], KC_ERR_UNSUPPORTED,
                            "checkpointing: more than %d inputs or results", KC_GRAD_MAX_IO);
    for (uint32_t i = 0; i < n.nin; i++) {
      kc_val v = n.in[i];
      in[i] = v.id && v.id < c->nvals && c->clone[v.id].id ? c->clone[v.id] : v;
    }
    uint32_t k = kc_gu_node(g, n.op, n.nin, in, n.nout, outs, &n);
    if (k == UINT32_MAX) return g->sticky != KC_OK ? g->sticky : KC_ERR_INTERNAL;
    size_t len = strlen(KC_RECOMPUTE_LOC_PREFIX) + (n.loc ? strlen(n.loc) : 0) + 1;
    char *loc = kc_arena_alloc(&g->arena, len);
    if (!loc) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in checkpointing");
    snprintf(loc, len, "%s%s", KC_RECOMPUTE_LOC_PREFIX, n.loc ? n.loc : "");
    g->nodes[k].loc = loc;
    kc_gu_finish(g, k);
    if (g->sticky != KC_OK) return g->sticky;
    for (uint32_t o = 0; o < n.nout; o++)
      c->clone[n.out[o].id] = outs[o];
  }
  return KC_OK;
}

kc_status kc_ckpt_node(kc_graph *g, kc_ckpt *c, uint32_t ni, kc_node *copy) {
  if (!c || !c->seg || ni >= c->hi || c->seg[ni] == UINT32_MAX) {
    *copy = g->nodes[ni];
    return KC_OK;
  }
  uint32_t j = c->seg[ni];
  if (!c->cloned[j]) {
    kc_status s = clone_segment(g, c, j);
    if (s != KC_OK) return s;
  }
  *copy = g->nodes[ni];
  kc_val *in = kc_arena_alloc(&g->arena, (copy->nin + 1) * sizeof *in);
  kc_val *out = kc_arena_alloc(&g->arena, (copy->nout + 1) * sizeof *out);
  if (!in || !out) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in checkpointing");
  for (uint32_t i = 0; i < copy->nin; i++) {
    kc_val v = copy->in[i];
    in[i] = v.id && v.id < c->nvals && c->clone[v.id].id ? c->clone[v.id] : v;
  }
  for (uint32_t o = 0; o < copy->nout; o++) {
    kc_val v = copy->out[o];
    out[o] = v.id && v.id < c->nvals && c->clone[v.id].id ? c->clone[v.id] : v;
  }
  copy->in = in;
  copy->out = out;
  return KC_OK;
}

/*
 * passes/lora.c - LoRA (Hu et al. 2021, as Hugging Face PEFT does it): kc_lora adds low-rank
 * adapters to the matmuls of a forward graph, kc_lora_merge folds them back into the base
 * weights (kernc.h).
 *
 * Which matmuls: a matmul or gemm (transA 0) whose second operand is a 2-D weight W, read
 * directly (MatMul(x, W[in,out]): GPT-2's Conv1D; Gemm transB=0), through a transpose
 * (MatMul(x, Transpose(W[out,in])): nn.Linear as torch exports it) or through gemm's transB=1
 * (W[out,in]). The glob is matched (fnmatch, no flags: '*' crosses '/') against W's name and the
 * node's loc (its ONNX node name), so "*q_proj*" finds llama's q_proj even where the exporter
 * named the pre-transposed weight "onnx::MatMul_675".
 *
 * What it builds, per target y = x @ W (y = gemm(...) likewise):
 *   y' = y + s * ((x @ A) @ B),   s = alpha / rank (a constant node),
 * A = weight "W.lora_A" [in, r], B = weight "W.lora_B" [r, out] (zeros), every reader of y
 * reading y' instead. The new nodes sit right after y's node and carry loc "lora:W"; a weight
 * read by several target matmuls gets one A and B, shared. A's values: PEFT's
 * kaiming_uniform_(a=sqrt(5)) on nn.Linear(in, r).weight, i.e. uniform(-1/sqrt(in), 1/sqrt(in)),
 * drawn by a counter-based generator (lora_uniform below) so A depends only on (seed, W's name,
 * element index), not on the order of targets.
 *
 * kc_lora_merge finds that pattern again from the adapter weights, adds (s / gemm alpha) * A @ B
 * to W in W's layout (W^T layout: (A @ B)^T), and removes the adapter nodes and weights.
 *
 * Invariants: program order holds (nodes are appended, then placed with kc_graph_place); after
 * a failure of kc_lora nothing was changed (everything is checked before anything is built),
 * and the builder's errors are returned as kc_status.
 */
#include "kernc.h"
#include "passes/grad.h"
#include "passes/internal.h"

#include <fnmatch.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the generator ------------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static uint64_t fnv1a64(const char *s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
  return h;
}

/* Element i of the adapter of weight `name`: key = splitmix64(seed ^ fnv1a64(name)),
 * u = (splitmix64(key + i) >> 40) / 2^24 in [0, 1), returned as (2u - 1) * bound. */
static double lora_uniform(uint64_t seed, const char *name, uint64_t i, double bound) {
  uint64_t key = splitmix64(seed ^ fnv1a64(name));
  double u = (double)(splitmix64(key + i) >> 40) * (1.0 / 16777216.0);
  return (2.0 * u - 1.0) * bound;
}

/* ---- finding targets ---------------------------------------------------------------------- */

/* A LoRA target: node ni computes y = alpha * x @ op(W) (+ ...), W's layout [in,out] or, with
 * wt, [out,in]. */
typedef struct target {
  uint32_t ni;
  uint32_t wnode; /* the weight node */
  bool wt;
  double alpha;
} target;

static const kc_node *def_node(const kc_graph *g, kc_val v) {
  uint32_t d = v.id ? kc_value_of(g, v)->def : 0;
  return d ? &g->nodes[d - 1] : NULL;
}

static bool is_2d_weight(const kc_graph *g, kc_val v) {
  const kc_node *d = def_node(g, v);
  const kc_value *x = kc_value_of(g, v);
  return d && d->op == KC_OP_WEIGHT && x->rank == 2 && x->dims[0] >= 0 && x->dims[1] >= 0 &&
         (x->dtype == KC_F32 || x->dtype == KC_F64);
}

/* Does node ni multiply by a weight the way nn.Linear / Conv1D exports do? */
static bool match_target(const kc_graph *g, uint32_t ni, target *t) {
  const kc_node *n = &g->nodes[ni];
  if ((n->op != KC_OP_MATMUL && n->op != KC_OP_GEMM) || n->nin < 2) return false;
  *t = (target){ni, 0, false, 1.0};
  kc_val b = n->in[1];
  bool trans = false;
  if (n->op == KC_OP_GEMM) {
    if (kc_node_int(n, "transA", 0)) return false;
    trans = kc_node_int(n, "transB", 0) != 0;
    t->alpha = kc_node_float(n, "alpha", 1.0);
  } else {
    const kc_node *d = def_node(g, b);
    if (d && d->op == KC_OP_TRANSPOSE && is_2d_weight(g, d->in[0])) {
      const kc_attr *p = kc_node_attr(d, "perm");
      if (p && !(p->u.ints.n == 2 && p->u.ints.v[0] == 1 && p->u.ints.v[1] == 0)) return false;
      b = d->in[0];
      trans = true;
    }
  }
  if (!is_2d_weight(g, b)) return false;
  t->wnode = kc_value_of(g, b)->def - 1;
  t->wt = trans;
  return true;
}

static const char *weight_name(const kc_graph *g, uint32_t wnode) {
  return kc_node_string(&g->nodes[wnode], "name", "");
}

static kc_tensor *find_tensor(kc_graph *g, const char *name) {
  for (uint32_t i = 0; i < g->ntensors; i++)
    if (g->tensors[i].name && strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
  return NULL;
}

static char *suffixed(kc_graph *g, const char *name, const char *suffix) {
  size_t len = strlen(name) + strlen(suffix) + 1;
  char *s = kc_arena_alloc(&g->arena, len);
  if (s) snprintf(s, len, "%s%s", name, suffix);
  return s;
}

/* ---- kc_lora ------------------------------------------------------------------------------ */

/* The adapter weights of target t's W (made on first use); false on a builder failure. */
static bool adapters(kc_graph *g, const target *t, int64_t rank, uint64_t seed, kc_val *a,
                     kc_val *b) {
  const char *wname = weight_name(g, t->wnode);
  const kc_value *w = kc_value_of(g, g->nodes[t->wnode].out[0]);
  kc_dtype dt = w->dtype;
  int64_t in = t->wt ? w->dims[1] : w->dims[0], out = t->wt ? w->dims[0] : w->dims[1];
  char *an = suffixed(g, wname, ".lora_A"), *bn = suffixed(g, wname, ".lora_B");
  if (!an || !bn) return false;
  for (uint32_t i = 0; i < g->nnodes; i++) { /* made already for an earlier target */
    const kc_node *n = &g->nodes[i];
    if (n->op != KC_OP_WEIGHT) continue;
    const char *nm = kc_node_string(n, "name", "");
    if (strcmp(nm, an) == 0) *a = n->out[0];
    if (strcmp(nm, bn) == 0) *b = n->out[0];
  }
  if (a->id && b->id) return true;
  size_t esz = kc_dtype_size(dt);
  void *da = calloc((size_t)(in * rank), esz), *db = calloc((size_t)(rank * out), esz);
  if (!da || !db) {
    free(da);
    free(db);
    kc_graph_fail(g, kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in kc_lora"));
    return false;
  }
  double bound = 1.0 / sqrt((double)in);
  for (int64_t i = 0; i < in * rank; i++) {
    double v = lora_uniform(seed, wname, (uint64_t)i, bound);
    if (dt == KC_F32)
      ((float *)da)[i] = (float)v;
    else
      ((double *)da)[i] = v;
  }
  *a = kc_weight(g, an, dt, 2, (int64_t[]){in, rank}, da);
  *b = kc_weight(g, bn, dt, 2, (int64_t[]){rank, out}, db);
  free(da);
  free(db);
  return a->id && b->id;
}

/* Append y + s * ((x @ A) @ B) for target t; its result, or kc_val{0} with the sticky error. */
static kc_val add_adapter(kc_graph *g, const target *t, int64_t rank, double scale, uint64_t seed) {
  kc_val a = {0}, b = {0};
  if (!adapters(g, t, rank, seed, &a, &b)) return (kc_val){0};
  kc_val x = g->nodes[t->ni].in[0], y = g->nodes[t->ni].out[0];
  kc_val d = kc_matmul(g, kc_matmul(g, x, a), b);
  d = kc_mul(g, d, kc_gu_like(g, y, scale));
  return kc_add(g, y, d);
}

kc_status kc_lora(kc_graph *g, const char *targets, int64_t rank, double alpha, uint64_t seed) {
  if (!g) return KC_ERR_INVALID_ARG;
  kc_clear_error(g->ctx);
  if (!targets || rank <= 0 || !isfinite(alpha))
    return kc_errorf(g->ctx, KC_ERR_INVALID_ARG,
                     "kc_lora: need a target glob, rank > 0 and a finite alpha (rank %lld)",
                     (long long)rank);
  if (g->sticky != KC_OK)
    return kc_errorf(g->ctx, g->sticky, "kc_lora: the graph has a builder error (%s)",
                     kc_status_str(g->sticky));
  uint32_t hi = g->nnodes;
  target *ts = malloc(((size_t)hi + 1) * sizeof *ts);
  if (!ts) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in kc_lora");
  uint32_t nt = 0;
  for (uint32_t ni = 0; ni < hi; ni++) {
    target t;
    if (!match_target(g, ni, &t)) continue;
    const char *loc = g->nodes[ni].loc;
    if (fnmatch(targets, weight_name(g, t.wnode), 0) != 0 &&
        !(loc && fnmatch(targets, loc, 0) == 0))
      continue;
    const char *wname = weight_name(g, t.wnode);
    for (uint32_t k = 0; k < nt; k++) /* one W read two ways cannot share one A, B */
      if (ts[k].wnode == t.wnode && ts[k].wt != t.wt) {
        free(ts);
        return kc_node_errorf(g, &g->nodes[ni], KC_ERR_UNSUPPORTED,
                              "kc_lora: weight '%s' is read both transposed and not", wname);
      }
    char an[512], bn[512];
    snprintf(an, sizeof an, "%s.lora_A", wname);
    snprintf(bn, sizeof bn, "%s.lora_B", wname);
    if (find_tensor(g, an) || find_tensor(g, bn)) {
      free(ts);
      return kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "kc_lora: weight '%s' has adapters already",
                       wname);
    }
    ts[nt++] = t;
  }
  if (nt == 0) {
    free(ts);
    return kc_errorf(g->ctx, KC_ERR_INVALID_ARG,
                     "kc_lora: no matmul or gemm of a 2-D float weight matches '%s' (by weight "
                     "name or node name)",
                     targets);
  }
  uint32_t *anchor = NULL, nanchor = 0;
  kc_val *pairs = malloc(2 * (size_t)nt * sizeof *pairs); /* y, y' per target */
  uint32_t nout0 = g->noutputs, ntens0 = g->ntensors;
  double scale = alpha / (double)rank;
  kc_status s = pairs ? KC_OK : kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in kc_lora");
  for (uint32_t k = 0; k < nt && s == KC_OK; k++) {
    uint32_t first = g->nnodes;
    kc_val y = g->nodes[ts[k].ni].out[0];
    kc_val y2 = add_adapter(g, &ts[k], rank, scale, seed);
    s = g->sticky;
    if (s != KC_OK) break;
    pairs[2 * k] = y;
    pairs[2 * k + 1] = y2;
    kc_rewrite_set_loc(g, first, suffixed(g, "lora:", weight_name(g, ts[k].wnode)));
    uint32_t *na = realloc(anchor, (size_t)(g->nnodes - hi) * sizeof *na);
    if (!na) {
      s = kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in kc_lora");
      break;
    }
    anchor = na;
    for (; nanchor < g->nnodes - hi; nanchor++)
      anchor[nanchor] = ts[k].ni + 1;
  }
  if (s != KC_OK) { /* nothing reads the appended nodes yet: dropping them restores g */
    for (uint32_t i = hi; i < g->nnodes; i++)
      g->nodes[i].op = KC_OP_NOP;
    kc_graph_compact(g);
    g->noutputs = nout0;
    for (uint32_t i = ntens0; i < g->ntensors; i++)
      g->tensors[i].name = NULL;
    g->sticky = KC_OK;
  } else {
    /* Readers of y read y' (a later target's adapter reading y included: it sees the adapted
     * value, as the model does); y's own add keeps reading y. */
    for (uint32_t k = 0; k < nt; k++) {
      kc_graph_replace_uses(g, pairs[2 * k], pairs[2 * k + 1]);
      g->nodes[kc_value_of(g, pairs[2 * k + 1])->def - 1].in[0] = pairs[2 * k];
    }
    s = kc_graph_place(g, hi, anchor);
  }
  free(anchor);
  free(pairs);
  free(ts);
  return s;
}

/* ---- kc_lora_merge ------------------------------------------------------------------------ */

/* The single node reading v at input slot `slot`, when v has exactly one reader; else NULL. */
static kc_node *only_reader(kc_graph *g, kc_val v, uint32_t slot, const uint32_t *uses) {
  if (uses[v.id] != 1) return NULL;
  for (uint32_t i = 0; i < g->nnodes; i++) {
    kc_node *n = &g->nodes[i];
    if (n->op != KC_OP_NOP && slot < n->nin && n->in[slot].id == v.id) return n;
  }
  return NULL;
}

static bool scalar_value(const kc_graph *g, kc_val v, double *out) {
  const kc_node *d = def_node(g, v);
  if (!d || d->op != KC_OP_CONSTANT) return false;
  const kc_attr *a = kc_node_attr(d, "value");
  if (!a || a->kind != KC_ATTR_TENSOR) return false;
  const kc_tensor *t = &g->tensors[a->u.tensor];
  if (!t->data || t->nbytes != kc_dtype_size(t->dtype)) return false;
  if (t->dtype == KC_F32)
    *out = *(const float *)t->data;
  else if (t->dtype == KC_F64)
    *out = *(const double *)t->data;
  else
    return false;
  return true;
}

/* One adapted use of A: matmul(x, A) -> matmul(., B) -> mul(., s) -> add(y, .). */
typedef struct use {
  kc_node *m1, *m2, *mul, *add;
  double scale, alpha;
  target t;
} use;

static kc_status find_use(kc_graph *g, kc_node *m1, kc_val b, const uint32_t *uses, use *u,
                          const char *aname) {
  u->m1 = m1;
  u->m2 = m1->op == KC_OP_MATMUL && m1->in[1].id != 0 ? only_reader(g, m1->out[0], 0, uses) : NULL;
  u->mul = u->m2 && u->m2->op == KC_OP_MATMUL && u->m2->in[1].id == b.id
               ? only_reader(g, u->m2->out[0], 0, uses)
               : NULL;
  u->add = u->mul && u->mul->op == KC_OP_MUL && scalar_value(g, u->mul->in[1], &u->scale)
               ? only_reader(g, u->mul->out[0], 1, uses)
               : NULL;
  const kc_node *yd = u->add && u->add->op == KC_OP_ADD ? def_node(g, u->add->in[0]) : NULL;
  if (!yd || !match_target(g, (uint32_t)(yd - g->nodes), &u->t))
    return kc_node_errorf(g, m1, KC_ERR_UNSUPPORTED,
                          "kc_lora_merge: adapter '%s' is not read as kc_lora built it", aname);
  u->alpha = u->t.alpha;
  return KC_OK;
}

/* W += c * A @ B in W's layout ([in,out], or [out,in] when wt). */
static kc_status merge_into(kc_graph *g, const char *wname, const kc_tensor *ta,
                            const kc_tensor *tb, bool wt, double c) {
  kc_tensor *tw = find_tensor(g, wname);
  if (!tw || !tw->data || !ta->data || !tb->data)
    return kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "kc_lora_merge: weight '%s' has no data", wname);
  int64_t in = ta->dims[0], r = ta->dims[1], out = tb->dims[1];
  if (tb->dims[0] != r || tw->rank != 2 || tw->dtype != ta->dtype || tw->dtype != tb->dtype ||
      (wt ? tw->dims[0] != out || tw->dims[1] != in : tw->dims[0] != in || tw->dims[1] != out))
    return kc_errorf(g->ctx, KC_ERR_SHAPE, "kc_lora_merge: the adapters of '%s' do not fit it",
                     wname);
  bool f32 = tw->dtype == KC_F32;
  void *w = kc_arena_memdup(&g->arena, tw->data, tw->nbytes);
  if (!w) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in kc_lora_merge");
  for (int64_t i = 0; i < in; i++)
    for (int64_t j = 0; j < out; j++) {
      double acc = 0;
      for (int64_t k = 0; k < r; k++)
        acc +=
            (f32 ? ((const float *)ta->data)[i * r + k] : ((const double *)ta->data)[i * r + k]) *
            (f32 ? ((const float *)tb->data)[k * out + j]
                 : ((const double *)tb->data)[k * out + j]);
      int64_t at = wt ? j * in + i : i * out + j;
      if (f32)
        ((float *)w)[at] = (float)(((float *)w)[at] + c * acc);
      else
        ((double *)w)[at] += c * acc;
    }
  tw->data = w;
  return KC_OK;
}

/* Merge the adapters of weight node ai (named "W.lora_A"). */
static kc_status merge_one(kc_graph *g, uint32_t ai, uint32_t *uses) {
  const char *aname = kc_node_string(&g->nodes[ai], "name", "");
  size_t len = strlen(aname) - strlen(".lora_A");
  char *wname = kc_arena_memdup(&g->arena, aname, len + 1), *bname = NULL;
  if (!wname) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in kc_lora_merge");
  wname[len] = 0;
  bname = suffixed(g, wname, ".lora_B");
  kc_val a = g->nodes[ai].out[0], b = {0};
  for (uint32_t i = 0; i < g->nnodes; i++)
    if (g->nodes[i].op == KC_OP_WEIGHT &&
        strcmp(kc_node_string(&g->nodes[i], "name", ""), bname) == 0)
      b = g->nodes[i].out[0];
  kc_tensor *ta = find_tensor(g, aname), *tb = find_tensor(g, bname);
  if (!b.id || !ta || !tb)
    return kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "kc_lora_merge: '%s' has no '%s'", aname, bname);
  uint32_t nuse = 0;
  use first = {0};
  for (uint32_t i = 0; i < g->nnodes; i++) {
    kc_node *m1 = &g->nodes[i];
    if (m1->op == KC_OP_NOP || m1->nin < 2 || m1->in[1].id != a.id) continue;
    use u;
    kc_status s = find_use(g, m1, b, uses, &u, aname);
    if (s != KC_OK) return s;
    if (strcmp(weight_name(g, u.t.wnode), wname) != 0)
      return kc_node_errorf(g, m1, KC_ERR_UNSUPPORTED,
                            "kc_lora_merge: adapter '%s' is added to a matmul of '%s'", aname,
                            weight_name(g, u.t.wnode));
    if (nuse && (u.t.wt != first.t.wt || u.scale / u.alpha != first.scale / first.alpha))
      return kc_node_errorf(g, m1, KC_ERR_UNSUPPORTED,
                            "kc_lora_merge: '%s' is applied with two different scales", aname);
    if (!nuse++) first = u;
  }
  if (!nuse)
    return kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "kc_lora_merge: nothing reads '%s'", aname);
  kc_status s = merge_into(g, wname, ta, tb, first.t.wt, first.scale / first.alpha);
  if (s != KC_OK) return s;
  /* the pattern checked out everywhere: now remove it */
  for (uint32_t i = 0; i < g->nnodes; i++) {
    kc_node *m1 = &g->nodes[i];
    if (m1->op == KC_OP_NOP || m1->nin < 2 || m1->in[1].id != a.id) continue;
    use u;
    if (find_use(g, m1, b, uses, &u, aname) != KC_OK) return KC_ERR_INTERNAL;
    kc_val y = u.add->in[0], sc = u.mul->in[1];
    kc_graph_replace_uses(g, u.add->out[0], y);
    u.add->op = u.mul->op = u.m2->op = u.m1->op = KC_OP_NOP;
    if (--uses[sc.id] == 0) g->nodes[kc_value_of(g, sc)->def - 1].op = KC_OP_NOP;
  }
  g->nodes[ai].op = KC_OP_NOP;
  g->nodes[kc_value_of(g, b)->def - 1].op = KC_OP_NOP;
  ta->name = tb->name = NULL; /* the names are free again for a later kc_lora */
  return KC_OK;
}

kc_status kc_lora_merge(kc_graph *g) {
  if (!g) return KC_ERR_INVALID_ARG;
  kc_clear_error(g->ctx);
  uint32_t *uses = kc_graph_use_counts(g);
  if (!uses) return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory in kc_lora_merge");
  kc_status s = KC_OK;
  uint32_t merged = 0;
  for (uint32_t i = 0; i < g->nnodes && s == KC_OK; i++) {
    const kc_node *n = &g->nodes[i];
    if (n->op != KC_OP_WEIGHT) continue;
    const char *name = kc_node_string(n, "name", "");
    size_t len = strlen(name);
    if (len <= 7 || strcmp(name + len - 7, ".lora_A") != 0) continue;
    s = merge_one(g, i, uses);
    merged++;
  }
  free(uses);
  kc_graph_compact(g);
  if (s == KC_OK && !merged)
    s = kc_errorf(g->ctx, KC_ERR_INVALID_ARG, "kc_lora_merge: the graph has no LoRA adapters");
  return s;
}

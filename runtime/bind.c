/*
 * runtime/bind.c - the first step of a run: check the caller's inputs against the compiled
 * graph (count, names, dtype, rank, static dims, symbols), then give the shape graph their
 * concrete dims (and the contents of small integer inputs) and re-run shape inference, so every
 * dim of every value becomes an integer.
 *
 * Invariants:
 *   - Nothing runs and nothing is written before every input has been checked; each error
 *     names the input (and the symbol or dim) it is about.
 *   - A symbol takes its value from the first input dim that is that symbol alone; expression
 *     dims (S+1) are checked once all symbols are bound.
 *   - The shape graph's per-run state is rolled back first, so runs do not accumulate memory.
 *   - A node's results are used only once kc_rt_concrete found them all integers, equal to the
 *     compiled graph's wherever that one has an integer (kernels have those baked in).
 *   - Sizes that depend on computed data (range over a computed float, reshape to a computed
 *     shape) are settled by kc_rt_settle once the nodes before have run: the small inputs of
 *     the waiting node get their contents as known values and inference resumes from it.
 */
#include "runtime/internal.h"

#include <math.h>
#include <string.h>

/* Small i64/i32 inputs whose contents shape inference may use (ir/shape.h KC_KNOWN_MAX). */
#define KNOWN_MAX 64

static const char *input_name(const kc_graph *g, uint32_t i, char *buf, size_t size) {
  const char *s = kc_graph_input_name(g, i);
  if (*s) return s;
  snprintf(buf, size, "#%u", i);
  return buf;
}

/* Pair each graph input with the caller's descriptor: by name when it has one, else position. */
static kc_status match_inputs(kc_module *m, const kc_tensor_desc *in, uint32_t nin) {
  const kc_graph *g = m->g;
  char nb[32];
  if (nin > g->ninputs)
    return kc_errorf(m->ctx, KC_ERR_INVALID_ARG, "graph @%s takes %u input(s), got %u", g->name,
                     g->ninputs, nin);
  memset(m->in_of, 0, (g->ninputs + 1) * sizeof *m->in_of);
  for (uint32_t i = 0; i < nin; i++) {
    uint32_t k = i;
    if (in[i].name) {
      for (k = 0; k < g->ninputs; k++)
        if (strcmp(kc_graph_input_name(g, k), in[i].name) == 0) break;
      if (k == g->ninputs)
        return kc_errorf(m->ctx, KC_ERR_INVALID_ARG, "graph @%s has no input named '%s'", g->name,
                         in[i].name);
    }
    if (m->in_of[k])
      return kc_errorf(m->ctx, KC_ERR_INVALID_ARG, "input '%s' is given twice",
                       input_name(g, k, nb, sizeof nb));
    m->in_of[k] = &in[i];
  }
  for (uint32_t k = 0; k < g->ninputs; k++)
    if (!m->in_of[k])
      return kc_errorf(m->ctx, KC_ERR_INVALID_ARG, "input '%s' is missing (graph @%s takes %u)",
                       input_name(g, k, nb, sizeof nb), g->name, g->ninputs);
  return KC_OK;
}

static bool lookup(void *user, const char *name, int64_t *v) {
  const kc_module *m = user;
  for (uint32_t i = 0; i < m->nbind; i++)
    if (strcmp(m->bind[i].name, name) == 0) {
      *v = m->bind[i].value;
      return true;
    }
  return false;
}

static const char *fmt_dims(const kc_tensor_desc *t, char *buf, size_t size) {
  size_t l = (size_t)snprintf(buf, size, "[");
  for (int i = 0; i < t->rank && l < size; i++)
    l += (size_t)snprintf(buf + l, size - l, "%s%lld", i ? "," : "", (long long)t->dims[i]);
  if (l < size) snprintf(buf + l, size - l, "]");
  return buf;
}

/* dtype, rank, data, and the dims that are integers or lone symbols (binding those). */
static kc_status check_input(kc_module *m, uint32_t k) {
  const kc_graph *g = m->g;
  const kc_tensor_desc *t = m->in_of[k];
  const kc_value *v = kc_value_of(g, g->inputs[k]);
  char nb[32], tb[256];
  const char *name = input_name(g, k, nb, sizeof nb);
  if (t->dtype != v->dtype)
    return kc_errorf(m->ctx, KC_ERR_TYPE, "input '%s' is %s, the graph takes %s", name,
                     kc_dtype_name(t->dtype), kc_dtype_name(v->dtype));
  if (t->rank != v->rank)
    return kc_errorf(
        m->ctx, KC_ERR_SHAPE, "input '%s' has rank %d %s, the graph takes rank %d", name, t->rank,
        t->rank >= 0 && t->rank <= KC_MAX_RANK ? fmt_dims(t, tb, sizeof tb) : "", v->rank);
  int64_t numel = 1;
  for (int d = 0; d < t->rank; d++) {
    if (t->dims[d] < 0)
      return kc_errorf(m->ctx, KC_ERR_SHAPE, "input '%s' dim %d is negative (%lld)", name, d,
                       (long long)t->dims[d]);
    numel *= t->dims[d];
    kc_dim want = v->dims[d];
    if (!KC_DIM_IS_SYM(want)) {
      if (want != t->dims[d])
        return kc_errorf(m->ctx, KC_ERR_SHAPE, "input '%s' is %s, but dim %d must be %lld", name,
                         fmt_dims(t, tb, sizeof tb), d, (long long)want);
      continue;
    }
    const kc_dexpr *e = &g->dexprs[KC_DIM_EXPR(want)];
    if (e->kind != KC_DX_SYM) continue; /* an expression: checked once symbols are bound */
    int64_t have;
    if (!lookup(m, e->name, &have)) {
      m->bind[m->nbind++] = (kc_rt_binding){e->name, t->dims[d], k};
      continue;
    }
    if (have != t->dims[d]) {
      uint32_t first = 0;
      for (uint32_t i = 0; i < m->nbind; i++)
        if (strcmp(m->bind[i].name, e->name) == 0) first = m->bind[i].input;
      char fb[32];
      return kc_errorf(m->ctx, KC_ERR_SHAPE,
                       "input '%s' dim %d: symbol '%s' is %lld here but %lld in input '%s'", name,
                       d, e->name, (long long)t->dims[d], (long long)have,
                       input_name(g, first, fb, sizeof fb));
    }
  }
  if (!t->data && numel > 0)
    return kc_errorf(m->ctx, KC_ERR_INVALID_ARG, "input '%s' (%s%s) has no data", name,
                     kc_dtype_name(t->dtype), fmt_dims(t, tb, sizeof tb));
  return KC_OK;
}

/* Dims that are expressions of symbols (S+1, 2*B): equal to their value once all are bound. */
static kc_status check_exprs(kc_module *m, uint32_t k) {
  const kc_graph *g = m->g;
  const kc_tensor_desc *t = m->in_of[k];
  const kc_value *v = kc_value_of(g, g->inputs[k]);
  for (int d = 0; d < t->rank; d++) {
    int64_t want;
    if (!KC_DIM_IS_SYM(v->dims[d]) || g->dexprs[KC_DIM_EXPR(v->dims[d])].kind == KC_DX_SYM)
      continue;
    if (!kc_dim_eval(g, v->dims[d], lookup, m, &want) || want == t->dims[d]) continue;
    char nb[32], eb[128], tb[256];
    return kc_errorf(m->ctx, KC_ERR_SHAPE, "input '%s' is %s, but dim %d must be %s = %lld",
                     input_name(g, k, nb, sizeof nb), fmt_dims(t, tb, sizeof tb), d,
                     kc_dim_str(g, v->dims[d], eb, sizeof eb), (long long)want);
  }
  return KC_OK;
}

/* Roll sg back to the compiled graph's types and state. */
static void reset_shape_graph(kc_module *m) {
  kc_graph *sg = m->sg;
  kc_arena_release(&sg->arena, m->sg_mark);
  sg->ndexprs = m->sg_ndexprs;
  sg->nfresh = m->sg_nfresh;
  sg->sticky = KC_OK;
  /* the compiled graph's value records: its names and known contents outlive sg */
  memcpy(sg->vals, m->g->vals, (size_t)m->g->nvals * sizeof *sg->vals);
}

/*
 * Contents of a small input as integers: i64/i32 always; floats when every element is an
 * integer (exactly), so range(start, limit, delta) over float scalars gets its length. Shape
 * functions do integer arithmetic on known values only for i64/i32 (ir/shape.h), so a float
 * input's known values only settle sizes, never stand in for float math.
 */
static bool known_values(const kc_tensor_desc *t, int64_t numel, int64_t *out) {
  for (int64_t i = 0; i < numel; i++) {
    double x;
    switch (t->dtype) {
    case KC_I64: out[i] = ((const int64_t *)t->data)[i]; continue;
    case KC_I32: out[i] = ((const int32_t *)t->data)[i]; continue;
    case KC_F32: x = ((const float *)t->data)[i]; break;
    case KC_F64: x = ((const double *)t->data)[i]; break;
    case KC_F16: x = kc_f16_to_f32(((const uint16_t *)t->data)[i]); break;
    case KC_BF16: x = kc_bf16_to_f32(((const uint16_t *)t->data)[i]); break;
    default: return false;
    }
    if (!(x == floor(x) && fabs(x) < 9007199254740992.0)) return false; /* NaN fails too */
    out[i] = (int64_t)x;
  }
  return true;
}

/* Concrete dims, and contents of small integer(-valued) inputs, on sg's graph inputs. */
static kc_status set_inputs(kc_module *m) {
  kc_graph *sg = m->sg;
  for (uint32_t k = 0; k < sg->ninputs; k++) {
    const kc_tensor_desc *t = m->in_of[k];
    kc_value *v = kc_value_of(sg, sg->inputs[k]);
    int64_t numel = 1;
    for (int d = 0; d < t->rank; d++) {
      v->dims[d] = t->dims[d];
      numel *= t->dims[d];
    }
    v->known = NULL;
    v->nknown = 0;
    int64_t vals[KNOWN_MAX];
    if (numel > KNOWN_MAX || !known_values(t, numel, vals)) continue;
    kc_dim *known = kc_arena_alloc(&sg->arena, (size_t)(numel ? numel : 1) * sizeof *known);
    if (!known) return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory binding inputs");
    for (int64_t i = 0; i < numel; i++)
      known[i] = kc_dim_int(sg, vals[i]);
    v->known = known;
    v->nknown = (uint32_t)numel;
  }
  return KC_OK;
}

/*
 * Every dim of node n's results an integer (evaluating expressions of bound symbols), and equal
 * to the compiled graph's where that one is an integer. *pending: some dim still waits for data.
 */
static kc_status make_concrete(kc_module *m, const kc_node *n, bool *pending) {
  kc_graph *sg = m->sg;
  *pending = false;
  for (uint32_t j = 0; j < n->nout; j++) {
    if (!n->out[j].id) continue;
    kc_value *v = kc_value_of(sg, n->out[j]);
    const kc_value *cv = kc_value_of(m->g, n->out[j]);
    char sb[256], cb[256];
    for (int d = 0; d < v->rank; d++) {
      int64_t x;
      if (KC_DIM_IS_SYM(v->dims[d]) && kc_dim_eval(sg, v->dims[d], lookup, m, &x) && x >= 0)
        v->dims[d] = x;
      if (KC_DIM_IS_SYM(v->dims[d])) *pending = true;
    }
    if (*pending) return KC_OK;
    bool same = v->rank == cv->rank && v->dtype == cv->dtype;
    for (int d = 0; same && d < v->rank; d++)
      same = KC_DIM_IS_SYM(cv->dims[d]) || cv->dims[d] == v->dims[d];
    if (!same) {
      size_t l = 0;
      sb[0] = 0;
      for (int d = 0; d < v->rank && l < sizeof sb; d++)
        l += (size_t)snprintf(sb + l, sizeof sb - l, "%s%lld", d ? "," : "", (long long)v->dims[d]);
      l = 0;
      cb[0] = 0;
      for (int d = 0; d < cv->rank && l < sizeof cb; d++) {
        char one[64];
        l += (size_t)snprintf(cb + l, sizeof cb - l, "%s%s", d ? "," : "",
                              kc_dim_str(m->g, cv->dims[d], one, sizeof one));
      }
      return kc_node_errorf(
          sg, n, KC_ERR_SHAPE, "result %%%u is %s[%s] for these inputs, but was compiled as %s[%s]",
          n->out[j].id, kc_dtype_name(v->dtype), sb, kc_dtype_name(cv->dtype), cb);
    }
  }
  return KC_OK;
}

kc_status kc_rt_concrete(kc_module *m, uint32_t from, uint32_t *stop) {
  for (uint32_t i = from; i < m->sg->nnodes; i++) {
    bool pending;
    kc_status s = make_concrete(m, &m->sg->nodes[i], &pending);
    if (s != KC_OK) return s;
    if (pending) {
      *stop = i;
      return KC_OK;
    }
  }
  *stop = m->sg->nnodes;
  return KC_OK;
}

/* The contents of value v (computed, in m->vbuf) as known values of sg, when small enough. */
static kc_status feed(kc_module *m, kc_val v) {
  const kc_value *val = kc_value_of(m->sg, v);
  int64_t numel = 1, vals[KNOWN_MAX];
  for (int d = 0; d < val->rank; d++)
    numel *= val->dims[d];
  kc_tensor_desc t = {NULL, val->dtype, val->rank, {0}, m->vbuf[v.id]};
  if (val->known || numel > KNOWN_MAX || !known_values(&t, numel, vals)) return KC_OK;
  kc_dim *known = kc_arena_alloc(&m->sg->arena, (size_t)(numel ? numel : 1) * sizeof *known);
  if (!known) return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory inferring shapes");
  for (int64_t i = 0; i < numel; i++)
    known[i] = kc_dim_int(m->sg, vals[i]);
  kc_value_of(m->sg, v)->known = known;
  kc_value_of(m->sg, v)->nknown = (uint32_t)numel;
  return KC_OK;
}

kc_status kc_rt_settle(kc_module *m, uint32_t stop) {
  kc_graph *sg = m->sg;
  const kc_node *n = &sg->nodes[stop];
  kc_status s = KC_OK;
  for (uint32_t j = 0; j < n->nin && s == KC_OK; j++)
    if (n->in[j].id) s = feed(m, n->in[j]);
  for (uint32_t i = stop; i < sg->nnodes && s == KC_OK; i++)
    s = kc_node_infer(sg, i);
  bool pending = false;
  if (s == KC_OK) s = make_concrete(m, n, &pending);
  if (s != KC_OK || !pending) return s;
  char buf[256];
  for (uint32_t j = 0; j < n->nout; j++) {
    const kc_value *v = n->out[j].id ? kc_value_of(sg, n->out[j]) : NULL;
    for (int d = 0; v && d < v->rank; d++)
      if (KC_DIM_IS_SYM(v->dims[d]))
        return kc_node_errorf(sg, n, KC_ERR_UNSUPPORTED,
                              "result %%%u has size %s, which depends on data kernc cannot read "
                              "before running the node",
                              n->out[j].id, kc_dim_str(sg, v->dims[d], buf, sizeof buf));
  }
  return KC_OK;
}

kc_status kc_rt_bind(kc_module *m, const kc_tensor_desc *inputs, uint32_t nin) {
  if (nin && !inputs) return kc_errorf(m->ctx, KC_ERR_INVALID_ARG, "kc_run: inputs is NULL");
  kc_status s = match_inputs(m, inputs, nin);
  m->nbind = 0;
  for (uint32_t k = 0; k < m->g->ninputs && s == KC_OK; k++)
    s = check_input(m, k);
  for (uint32_t k = 0; k < m->g->ninputs && s == KC_OK; k++)
    s = check_exprs(m, k);
  if (s != KC_OK) return s;
  reset_shape_graph(m);
  if ((s = set_inputs(m)) != KC_OK) return s;
  return kc_graph_infer(m->sg);
}

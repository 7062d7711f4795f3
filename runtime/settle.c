/*
 * runtime/settle.c - sizes that depend on tensor data, for kc_compile's modules: the
 * executor's settle hook. When a run reaches the node that defines a late symbol
 * (codegen/plan.h), the hook gives that node's inputs in a copy of the compiled graph (sg) their
 * concrete dims and, when small, their contents as known values, runs the node's shape function
 * (the IR's own: one source of truth for shapes), and binds the symbol to the dim it finds. Only
 * this node is inferred, so no run re-infers the graph.
 *
 * Invariants:
 *   - sg is touched only under sg_lock and is rolled back (values of the node's operands, arena,
 *     dim expressions, fresh-symbol counter) before the lock is released, so runs on other
 *     threads and later runs see it as compiled.
 *   - Every dim of the node's results that the run can now evaluate must equal what inference
 *     found; a difference is an error naming the node, never a wrong size.
 */
#include "runtime/internal.h"

#include <math.h>
#include <string.h>

/* Small tensors whose contents shape inference may use (ir/shape.h KC_KNOWN_MAX). */
#define KNOWN_MAX 64

static kc_status settle(void *user, kc_exec *x, kc_exec_ws *w, int64_t li);

kc_status kc_rt_settle_init(kc_module *m) {
  m->sg = kc_graph_clone(m->g, true); /* m->g outlives it: freed after it */
  if (!m->sg || pthread_mutex_init(&m->sg_lock, NULL) != 0)
    return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory copying graph @%s", m->g->name);
  m->sg_lock_made = true;
  m->sg_mark = kc_arena_mark(&m->sg->arena);
  m->sg_ndexprs = m->sg->ndexprs;
  m->sg_nfresh = m->sg->nfresh;
  m->x->settle = settle;
  m->x->settle_user = m;
  return KC_OK;
}

void kc_rt_settle_free(kc_module *m) {
  kc_graph_free(m->sg); /* before g: it shares g's tensor data */
  m->sg = NULL;
  if (m->sg_lock_made) pthread_mutex_destroy(&m->sg_lock);
  m->sg_lock_made = false;
}

/*
 * Contents as integers: i64/i32 always; floats when every element is an integer (exactly), so
 * range(start, limit, delta) over float scalars gets its length. Shape functions do integer
 * arithmetic on known values only for i64/i32 (ir/shape.h), so a float tensor's known values
 * only settle sizes, never stand in for float math.
 */
static bool known_values(kc_dtype dt, const void *data, int64_t numel, int64_t *out) {
  for (int64_t i = 0; i < numel; i++) {
    double x;
    switch (dt) {
    case KC_I64: out[i] = ((const int64_t *)data)[i]; continue;
    case KC_I32: out[i] = ((const int32_t *)data)[i]; continue;
    case KC_F32: x = ((const float *)data)[i]; break;
    case KC_F64: x = ((const double *)data)[i]; break;
    case KC_F16: x = kc_f16_to_f32(((const uint16_t *)data)[i]); break;
    case KC_BF16: x = kc_bf16_to_f32(((const uint16_t *)data)[i]); break;
    default: return false;
    }
    if (!(x == floor(x) && fabs(x) < 9007199254740992.0)) return false; /* NaN fails too */
    out[i] = (int64_t)x;
  }
  return true;
}

/* Operand v of the node in sg: this run's dims and, when small, contents. */
static kc_status give_operand(kc_module *m, kc_exec *x, kc_exec_ws *w, kc_val v) {
  kc_value *val = kc_value_of(m->sg, v);
  int rank;
  int64_t dims[KC_MAX_RANK], numel = 1;
  kc_exec_value(x, w, v.id, NULL, &rank, dims);
  for (int d = 0; d < rank; d++) {
    val->dims[d] = dims[d];
    numel *= dims[d];
  }
  val->known = NULL;
  val->nknown = 0;
  int64_t vals[KNOWN_MAX];
  const void *data;
  if (numel > KNOWN_MAX) return KC_OK;
  kc_status s = x->dev_ops->fetch(x, w, v.id, &data);
  if (s != KC_OK || !known_values(val->dtype, data, numel, vals)) return s;
  kc_dim *known = kc_arena_alloc(&m->sg->arena, (size_t)(numel ? numel : 1) * sizeof *known);
  if (!known) return kc_errorf(m->ctx, KC_ERR_NOMEM, "out of memory settling sizes");
  for (int64_t i = 0; i < numel; i++)
    known[i] = kc_dim_int(m->sg, vals[i]);
  val->known = known;
  val->nknown = (uint32_t)numel;
  return KC_OK;
}

typedef struct syms_of_run {
  const kc_plan *d;
  const kc_exec_ws *w;
} syms_of_run;

/* The symbols this run has bound so far. */
static bool lookup(void *user, const char *name, int64_t *v) {
  const syms_of_run *r = user;
  for (int64_t i = 0; i < r->d->nsyms; i++)
    if (r->w->bound_by[i] >= 0 && strcmp(r->d->syms[i], name) == 0) {
      *v = r->w->syms[i];
      return true;
    }
  return false;
}

static int64_t sym_index(const kc_plan *d, const char *name) {
  for (int64_t i = 0; i < d->nsyms; i++)
    if (strcmp(d->syms[i], name) == 0) return i;
  return -1;
}

/* Bind the late symbols of node n's results from what inference found, and check the rest. */
static kc_status bind(kc_module *m, kc_exec_ws *w, const kc_node *n) {
  const kc_plan *d = &m->plan.model;
  for (uint32_t j = 0; j < n->nout; j++) {
    if (!n->out[j].id) continue;
    const kc_value *got = kc_value_of(m->sg, n->out[j]), *want = kc_value_of(m->g, n->out[j]);
    for (int k = 0; k < got->rank; k++) {
      kc_dim cd = want->dims[k];
      char buf[128];
      if (KC_DIM_IS_SYM(got->dims[k]) || got->dims[k] < 0)
        return kc_node_errorf(m->g, n, KC_ERR_UNSUPPORTED,
                              "result %%%u has size %s, which depends on data kernc cannot read "
                              "before running the node",
                              n->out[j].id, kc_dim_str(m->sg, got->dims[k], buf, sizeof buf));
      if (KC_DIM_IS_SYM(cd) && m->g->dexprs[KC_DIM_EXPR(cd)].kind == KC_DX_SYM) {
        int64_t s = sym_index(d, m->g->dexprs[KC_DIM_EXPR(cd)].name);
        if (s >= 0 && w->bound_by[s] < 0) { /* a late symbol: bound here */
          w->syms[s] = got->dims[k];
          w->bound_by[s] = INT64_MAX;
          continue;
        }
      }
    }
  }
  /* every dim now computable must be what inference found */
  syms_of_run r = {d, w};
  for (uint32_t j = 0; j < n->nout; j++) {
    if (!n->out[j].id) continue;
    const kc_value *got = kc_value_of(m->sg, n->out[j]), *want = kc_value_of(m->g, n->out[j]);
    for (int k = 0; k < got->rank; k++) {
      int64_t have;
      char gb[64], cb[128];
      if (!kc_dim_eval(m->g, want->dims[k], lookup, &r, &have)) continue;
      if (have != got->dims[k])
        return kc_node_errorf(m->g, n, KC_ERR_SHAPE,
                              "result %%%u dim %d is %s for these inputs, but was compiled as %s "
                              "= %lld",
                              n->out[j].id, k, kc_dim_str(m->sg, got->dims[k], gb, sizeof gb),
                              kc_dim_str(m->g, want->dims[k], cb, sizeof cb), (long long)have);
    }
  }
  return KC_OK;
}

/* A range whose float start, limit or delta is inf or NaN has no element count: say which,
 * rather than that its size depends on data (known_values takes integers only). */
static kc_status range_finite(kc_module *m, kc_exec *x, kc_exec_ws *w, const kc_node *n) {
  static const char *const names[3] = {"start", "limit", "delta"};
  for (uint32_t j = 0; j < n->nin && j < 3; j++) {
    kc_dtype dt = kc_value_of(m->sg, n->in[j])->dtype;
    const void *data;
    if ((dt != KC_F32 && dt != KC_F64) || x->dev_ops->fetch(x, w, n->in[j].id, &data) != KC_OK)
      continue;
    double v = dt == KC_F32 ? *(const float *)data : *(const double *)data;
    if (!isfinite(v))
      return kc_node_errorf(m->g, &m->g->nodes[n - m->sg->nodes], KC_ERR_SHAPE, "%s is %s",
                            names[j],
                            isnan(v) ? "nan"
                            : v > 0  ? "inf"
                                     : "-inf");
  }
  return KC_OK;
}

/* The executor's settle hook (runtime/executor.h). */
static kc_status settle(void *user, kc_exec *x, kc_exec_ws *w, int64_t li) {
  kc_module *m = user;
  const kc_plan *d = &m->plan.model;
  uint32_t ni = (uint32_t)d->late[li].node;
  const kc_node *n = &m->sg->nodes[ni];
  pthread_mutex_lock(&m->sg_lock);
  kc_status s = KC_OK;
  for (uint32_t j = 0; j < n->nin && s == KC_OK; j++)
    if (n->in[j].id) s = give_operand(m, x, w, n->in[j]);
  if (s == KC_OK && n->op == KC_OP_RANGE) s = range_finite(m, x, w, n);
  if (s == KC_OK) s = kc_node_infer(m->sg, ni);
  if (s == KC_OK) s = bind(m, w, &m->g->nodes[ni]);
  /* roll sg back: the operands' and results' records, the arena, dims and fresh symbols */
  for (uint32_t j = 0; j < n->nin + n->nout; j++) {
    kc_val v = j < n->nin ? n->in[j] : n->out[j - n->nin];
    if (v.id) m->sg->vals[v.id] = m->g->vals[v.id];
  }
  kc_arena_release(&m->sg->arena, m->sg_mark);
  m->sg->ndexprs = m->sg_ndexprs;
  m->sg->nfresh = m->sg_nfresh;
  m->sg->sticky = KC_OK;
  pthread_mutex_unlock(&m->sg_lock);
  if (s != KC_OK && m->ctx != x->ctx) kc_errorf(x->ctx, s, "%s", kc_last_error(m->ctx));
  return s;
}

/*
 * passes/fuse_gelu.c - the fuse-gelu pass: GELU written out by an exporter becomes one gelu op.
 *
 *   erf form:   x * 0.5 * (1 + erf(x / sqrt(2)))                        ->  gelu(x)
 *   tanh form:  0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))  ->  gelu(x) {tanh}
 *
 * Exporters multiply the three factors x, 0.5 and (1 + ...) in any order: the patterns spell
 * the three tree shapes (x * f) * 0.5, (x * 0.5) * f and x * (f * 0.5), and the matcher tries
 * both operand orders of every mul and add. x^3 is pow(x, 3) or (x * x) * x. Division by
 * sqrt(2) is usually a multiplication by 1/sqrt(2) after canonicalize; both are accepted.
 * The irrational constants are compared with a relative tolerance (exporters round them to
 * f32, some to fewer digits; f16 and bf16 constants within an ulp), 0.5, 1 and 3 exactly.
 * silu, x * sigmoid(x), is not gelu and is left alone (fuse-elementwise takes it).
 *
 * Invariants: the patterns capture x everywhere it appears, so the matcher makes every
 * occurrence the same value; interior nodes have one use (the matcher's rule), x may have any.
 */
#include "passes/internal.h"
#include "passes/match.h"

#include <math.h>

/* Capture slots. */
enum { X, HALF, ONE, C, K, THREE };

#define REL_TOL 1e-4

/* The three ways to multiply x, 0.5 and the factor rooted at row 2. */
#define OUTER_A P_OP(MUL, P_SUB(1), P_CONST_EQ(HALF, 0.5)), P_OP(MUL, P_CAP(X), P_SUB(2))
#define OUTER_B P_OP(MUL, P_SUB(1), P_SUB(2)), P_OP(MUL, P_CAP(X), P_CONST_EQ(HALF, 0.5))
#define OUTER_C P_OP(MUL, P_CAP(X), P_SUB(1)), P_OP(MUL, P_SUB(2), P_CONST_EQ(HALF, 0.5))

/* Rows 2-4: 1 + erf(x * 1/sqrt(2)) or 1 + erf(x / sqrt(2)). */
#define ERF_FACTOR                                                                                 \
  P_OP(ADD, P_SUB(3), P_CONST_EQ(ONE, 1.0)), P_OP(ERF, P_SUB(4)),                                  \
      P_OP2(MUL, DIV, P_CAP(X), P_CONST_SCALAR(C))

/* Rows 2-6: 1 + tanh(c * (x + k * cube)), the cube from row 7 on. */
#define TANH_FACTOR                                                                                \
  P_OP(ADD, P_SUB(3), P_CONST_EQ(ONE, 1.0)), P_OP(TANH, P_SUB(4)),                                 \
      P_OP(MUL, P_SUB(5), P_CONST_SCALAR(C)), P_OP(ADD, P_CAP(X), P_SUB(6)),                       \
      P_OP(MUL, P_SUB(7), P_CONST_SCALAR(K))

#define CUBE_POW P_OP(POW, P_CAP(X), P_CONST_EQ(THREE, 3.0))
#define CUBE_MUL P_OP(MUL, P_SUB(8), P_CAP(X)), P_OP(MUL, P_CAP(X), P_CAP(X))

/* (x * (1 + erf(x / sqrt(2)))) * 0.5  ->  gelu(x) */
static const kc_pat erf_a[] = {OUTER_A, ERF_FACTOR};
/* (x * 0.5) * (1 + erf(x / sqrt(2)))  ->  gelu(x) */
static const kc_pat erf_b[] = {OUTER_B, ERF_FACTOR};
/* x * ((1 + erf(x / sqrt(2))) * 0.5)  ->  gelu(x) */
static const kc_pat erf_c[] = {OUTER_C, ERF_FACTOR};

/* (x * (1 + tanh(c * (x + k * pow(x, 3))))) * 0.5  ->  gelu(x) {tanh} */
static const kc_pat tanh_pow_a[] = {OUTER_A, TANH_FACTOR, CUBE_POW};
/* (x * 0.5) * (1 + tanh(c * (x + k * pow(x, 3))))  ->  gelu(x) {tanh} */
static const kc_pat tanh_pow_b[] = {OUTER_B, TANH_FACTOR, CUBE_POW};
/* x * ((1 + tanh(c * (x + k * pow(x, 3)))) * 0.5)  ->  gelu(x) {tanh} */
static const kc_pat tanh_pow_c[] = {OUTER_C, TANH_FACTOR, CUBE_POW};
/* (x * (1 + tanh(c * (x + k * ((x * x) * x))))) * 0.5  ->  gelu(x) {tanh} */
static const kc_pat tanh_mul_a[] = {OUTER_A, TANH_FACTOR, CUBE_MUL};
/* (x * 0.5) * (1 + tanh(c * (x + k * ((x * x) * x))))  ->  gelu(x) {tanh} */
static const kc_pat tanh_mul_b[] = {OUTER_B, TANH_FACTOR, CUBE_MUL};
/* x * ((1 + tanh(c * (x + k * ((x * x) * x)))) * 0.5)  ->  gelu(x) {tanh} */
static const kc_pat tanh_mul_c[] = {OUTER_C, TANH_FACTOR, CUBE_MUL};

/* Is constant v within REL_TOL of want, or within an ulp of its dtype (f16 stores 0.044715 as
 * 0.0447083, 1.5e-4 off)? The value goes to *got for messages. */
static bool near(const kc_graph *g, kc_val v, double want, double *got) {
  const kc_tensor *t = kc_const_tensor(g, v);
  *got = t && kc_tensor_numel(t) == 1 ? kc_tensor_get(t, 0) : NAN;
  double tol = !t                    ? REL_TOL
               : t->dtype == KC_F16  ? 1.0 / 1024
               : t->dtype == KC_BF16 ? 1.0 / 128
                                     : REL_TOL;
  return fabs(*got - want) <= tol * fabs(want);
}

static kc_status make_gelu(kc_rewriter *rw, const kc_match *m, bool tanh_form) {
  kc_graph *g = kc_rw_graph(rw);
  kc_val out;
  uint32_t ni = kc_rw_node(rw, KC_OP_GELU, 1, &m->cap[X], 1, &out);
  if (ni == UINT32_MAX) return KC_OK;
  if (tanh_form) kc_node_set_string(g, ni, "approximate", "tanh");
  kc_rw_replace(rw, kc_rw_out(rw, m, 0, 0), out);
  return KC_OK;
}

static kc_status fuse_erf(kc_rewriter *rw, const kc_match *m) {
  const kc_graph *g = kc_rw_graph(rw);
  bool div = g->nodes[m->node[4]].op == KC_OP_DIV;
  double got;
  if (!near(g, m->cap[C], div ? sqrt(2.0) : sqrt(0.5), &got))
    return kc_rw_decline(rw, "%s by %g, not %s", div ? "div" : "mul", got,
                         div ? "sqrt(2)" : "1/sqrt(2)");
  return make_gelu(rw, m, false);
}

static kc_status fuse_tanh(kc_rewriter *rw, const kc_match *m) {
  const kc_graph *g = kc_rw_graph(rw);
  double got;
  if (!near(g, m->cap[C], 0.79788456080286536 /* sqrt(2/pi) */, &got))
    return kc_rw_decline(rw, "tanh of %g * (...), not sqrt(2/pi)", got);
  if (!near(g, m->cap[K], 0.044715, &got))
    return kc_rw_decline(rw, "x^3 times %g, not 0.044715", got);
  return make_gelu(rw, m, true);
}

static const kc_rule rules[] = {
    KC_RULE("gelu-erf", erf_a, fuse_erf),
    KC_RULE("gelu-erf-half-x", erf_b, fuse_erf),
    KC_RULE("gelu-erf-half-factor", erf_c, fuse_erf),
    KC_RULE("gelu-tanh-pow", tanh_pow_a, fuse_tanh),
    KC_RULE("gelu-tanh-pow-half-x", tanh_pow_b, fuse_tanh),
    KC_RULE("gelu-tanh-pow-half-factor", tanh_pow_c, fuse_tanh),
    KC_RULE("gelu-tanh-mul", tanh_mul_a, fuse_tanh),
    KC_RULE("gelu-tanh-mul-half-x", tanh_mul_b, fuse_tanh),
    KC_RULE("gelu-tanh-mul-half-factor", tanh_mul_c, fuse_tanh),
};

static kc_status run(kc_graph *g, kc_pass_ctx *pc) {
  return kc_rules_run(g, pc, rules, KC_LEN(rules), true);
}

const kc_pass kc_pass_fuse_gelu = {"fuse-gelu", run,
                                   "gelu from its erf and tanh formulas (not silu)"};

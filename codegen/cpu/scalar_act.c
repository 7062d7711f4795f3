/*
 * codegen/cpu/scalar_act.c - the math of the activation elementwise ops with attributes or
 * composite formulas: elu celu selu leaky_relu hard_sigmoid hard_swish thresholded_relu
 * shrink softplus softsign mish prelu (kc_scalar_<op>, see emit.h).
 *
 * Each is a select over compare results on top of vmath.c's exp/log/tanh, float dtypes only
 * (f16/bf16 arrive as f32), except prelu, which takes integers too. Attributes come from the
 * node (their defaults from ops.def). A nan x gives nan wherever the ONNX formula does: the
 * comparisons are ordered, so nan takes the branch that returns x or computes with it.
 * softplus is max(x, 0) + log(1 + exp(-|x|)), which never overflows.
 * Invariants as every kc_scalar_*: no loops, no memory access; NULL (nothing emitted) when the
 * dtype does not fit.
 */
#include "vmath.h"

#define B (ir->b)

static LLVMValueRef fc(LLVMValueRef like, double v) { return kc_vm_fconst(LLVMTypeOf(like), v); }
static LLVMValueRef lt(kc_ir *ir, LLVMValueRef x, LLVMValueRef y) {
  return LLVMBuildFCmp(B, LLVMRealOLT, x, y, "");
}
static LLVMValueRef fmul(kc_ir *ir, LLVMValueRef x, LLVMValueRef y) {
  return LLVMBuildFMul(B, x, y, "");
}

/* alpha (exp(x / scale) - 1) for x < 0, x otherwise: elu (scale 1) and celu (scale alpha). */
static LLVMValueRef elu(kc_ir *ir, LLVMValueRef x, double alpha, double scale) {
  LLVMValueRef xs = scale == 1.0 ? x : LLVMBuildFDiv(B, x, fc(x, scale), "");
  LLVMValueRef em1 = LLVMBuildFSub(B, kc_vmath_exp(ir, xs), fc(x, 1.0), "");
  return LLVMBuildSelect(B, lt(ir, x, fc(x, 0.0)), fmul(ir, fc(x, alpha), em1), x, "");
}

LLVMValueRef kc_scalar_elu(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                           LLVMValueRef *a) {
  if (!kc_dtype_is_float(in)) return NULL;
  return elu(ir, a[0], kc_node_float(n, "alpha", 1.0), 1.0);
}

LLVMValueRef kc_scalar_celu(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                            LLVMValueRef *a) {
  if (!kc_dtype_is_float(in)) return NULL;
  double alpha = kc_node_float(n, "alpha", 1.0);
  return elu(ir, a[0], alpha, alpha);
}

/* gamma (alpha e^x - alpha) for x <= 0, gamma x otherwise. */
LLVMValueRef kc_scalar_selu(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                            LLVMValueRef *a) {
  if (!kc_dtype_is_float(in)) return NULL;
  LLVMValueRef x = a[0];
  double alpha = kc_node_float(n, "alpha", 1.67326319217681884765625);
  double gamma = kc_node_float(n, "gamma", 1.05070102214813232421875);
  LLVMValueRef neg =
      LLVMBuildFSub(B, fmul(ir, fc(x, alpha), kc_vmath_exp(ir, x)), fc(x, alpha), "");
  LLVMValueRef le = LLVMBuildFCmp(B, LLVMRealOLE, x, fc(x, 0.0), "");
  return fmul(ir, fc(x, gamma), LLVMBuildSelect(B, le, neg, x, ""));
}

LLVMValueRef kc_scalar_leaky_relu(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                                  LLVMValueRef *a) {
  if (!kc_dtype_is_float(in)) return NULL;
  LLVMValueRef x = a[0];
  LLVMValueRef ax = fmul(ir, fc(x, kc_node_float(n, "alpha", 0.01)), x);
  return LLVMBuildSelect(B, lt(ir, x, fc(x, 0.0)), ax, x, "");
}

/* max(0, min(1, alpha x + beta)), nan passing through. */
static LLVMValueRef hard_sigmoid(kc_ir *ir, LLVMValueRef x, double alpha, double beta) {
  LLVMValueRef y = LLVMBuildFAdd(B, fmul(ir, fc(x, alpha), x), fc(x, beta), "");
  y = LLVMBuildSelect(B, LLVMBuildFCmp(B, LLVMRealOGT, y, fc(x, 1.0), ""), fc(x, 1.0), y, "");
  return LLVMBuildSelect(B, lt(ir, y, fc(x, 0.0)), fc(x, 0.0), y, "");
}

LLVMValueRef kc_scalar_hard_sigmoid(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                                    LLVMValueRef *a) {
  if (!kc_dtype_is_float(in)) return NULL;
  return hard_sigmoid(ir, a[0], kc_node_float(n, "alpha", 0.2), kc_node_float(n, "beta", 0.5));
}

/* x hard_sigmoid(x) with alpha 1/6, beta 1/2. */
LLVMValueRef kc_scalar_hard_swish(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                                  LLVMValueRef *a) {
  if (!kc_dtype_is_float(in)) return NULL;
  return fmul(ir, a[0], hard_sigmoid(ir, a[0], 1.0 / 6.0, 0.5));
}

/* x for x > alpha, else 0. */
LLVMValueRef kc_scalar_thresholded_relu(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                                        LLVMValueRef *a) {
  if (!kc_dtype_is_float(in)) return NULL;
  LLVMValueRef x = a[0];
  LLVMValueRef le = LLVMBuildFCmp(B, LLVMRealOLE, x, fc(x, kc_node_float(n, "alpha", 1.0)), "");
  return LLVMBuildSelect(B, le, fc(x, 0.0), x, "");
}

/* x + bias for x < -lambd, x - bias for x > lambd, else 0. */
LLVMValueRef kc_scalar_shrink(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                              LLVMValueRef *a) {
  if (!kc_dtype_is_float(in)) return NULL;
  LLVMValueRef x = a[0];
  double bias = kc_node_float(n, "bias", 0.0), lambd = kc_node_float(n, "lambd", 0.5);
  LLVMValueRef y = LLVMBuildSelect(B, LLVMBuildFCmp(B, LLVMRealOGT, x, fc(x, lambd), ""),
                                   LLVMBuildFSub(B, x, fc(x, bias), ""), fc(x, 0.0), "");
  return LLVMBuildSelect(B, lt(ir, x, fc(x, -lambd)), LLVMBuildFAdd(B, x, fc(x, bias), ""), y, "");
}

static LLVMValueRef softplus(kc_ir *ir, LLVMValueRef x) {
  LLVMValueRef e = kc_vmath_exp(ir, LLVMBuildFNeg(B, kc_vm_call1(ir, "llvm.fabs", x), ""));
  LLVMValueRef l = kc_vmath_log(ir, LLVMBuildFAdd(B, fc(x, 1.0), e, ""));
  LLVMValueRef pos = LLVMBuildSelect(B, lt(ir, x, fc(x, 0.0)), fc(x, 0.0), x, "");
  return LLVMBuildFAdd(B, pos, l, "");
}

LLVMValueRef kc_scalar_softplus(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                                LLVMValueRef *a) {
  return kc_dtype_is_float(in) ? softplus(ir, a[0]) : NULL;
}

/* x / (1 + |x|) */
LLVMValueRef kc_scalar_softsign(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                                LLVMValueRef *a) {
  if (!kc_dtype_is_float(in)) return NULL;
  LLVMValueRef d = LLVMBuildFAdd(B, fc(a[0], 1.0), kc_vm_call1(ir, "llvm.fabs", a[0]), "");
  return LLVMBuildFDiv(B, a[0], d, "");
}

/* x tanh(softplus(x)) */
LLVMValueRef kc_scalar_mish(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                            LLVMValueRef *a) {
  if (!kc_dtype_is_float(in)) return NULL;
  return fmul(ir, a[0], kc_vmath_tanh(ir, softplus(ir, a[0])));
}

/* slope x for x < 0, x otherwise. */
LLVMValueRef kc_scalar_prelu(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                             LLVMValueRef *a) {
  LLVMValueRef x = a[0];
  if (kc_dtype_is_float(in))
    return LLVMBuildSelect(B, lt(ir, x, fc(x, 0.0)), fmul(ir, a[1], x), x, "");
  if (!kc_dtype_is_int(in)) return NULL;
  if (kc_vm_unsigned(in)) return x;
  LLVMValueRef neg = LLVMBuildICmp(B, LLVMIntSLT, x, kc_vm_iconst(LLVMTypeOf(x), 0), "");
  return LLVMBuildSelect(B, neg, LLVMBuildMul(B, a[1], x, ""), x, "");
}

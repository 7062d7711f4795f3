/*
 * codegen/cpu/vmath.c - exp, log, tanh, erf, sigmoid, sin, cos as LLVM IR that works on scalars
 * and vectors alike, so the loops that use them (elementwise, softmax, GELU) vectorize instead
 * of calling libm once per element.
 *
 * f32 methods (coefficients fitted for this file by weighted minimax on the reduced ranges; the
 * fit's relative error is in brackets, the measured end-to-end error is in
 * tests/test_cpu_elementwise.c):
 *   exp:  x = n ln2 + r, |r| <= ln2/2 (Cody-Waite split of ln2), e^r = 1 + r + r^2 P(r) with P of
 *         degree 4 [3e-9], times 2^n built in two halves so results down in the subnormals and
 *         up to overflow come out right. Inputs are clamped to [-104, 89] first, where e^x is 0
 *         or inf in f32 anyway.
 *   log:  x = 2^e m, m in [sqrt(1/2), sqrt(2)), log(1+f) = f - f^2/2 + f^3 Q(f), Q degree 7
 *         [6e-9], plus e ln2 (split); subnormal inputs are scaled by 2^23 first.
 *   tanh: |x| < 0.625: x + x^3 P(x^2), degree 4 [4e-9]; else (1 - t) / (1 + t), t = e^(-2|x|),
 *         where t <= 0.29 so the subtraction cannot cancel.
 *   erf:  |x| < 1: x P(x^2), degree 6 [1e-9]; else 1 - erfc(|x|) with the sign of x.
 *   erfc: |x| < 0.6: 1 - erf(x); z >= 0.6: t e^(-z^2 + P(t)), t = 1/(1 + z/2), P of degree 8
 *         fitted to log(erfc(z)) + z^2 - log(t) on [0.6, 10] [2e-8] (the form of Numerical
 *         Recipes' erfcc, with new coefficients), the exponent carried in two parts;
 *         erfc(-z) = 2 - erfc(z).
 *   gelu: x/2 erfc(-x/sqrt2) with -x/sqrt2 in two parts; the tanh form as x sigmoid(2u).
 *   sigmoid: t = e^(-|x|), 1/(1+t) for x >= 0 and t/(1+t) below, so it never cancels.
 * Special values are selected explicitly at the end: nan in gives nan out, and the infinities
 * give the limits. f64 uses libm (llvm.exp/llvm.log/llvm.tanh intrinsics, erf by name).
 *
 * Invariants: straight-line, lane-wise code only (no loops, no memory access); every helper
 * returns a value of its input's type.
 */
#include "vmath.h"

#include <math.h>
#include <string.h>

#define M_SQRT1_2_ 0.70710678118654752440 /* 1/sqrt(2); M_SQRT1_2 is not C11 */

/* ---- typed constants and small helpers ------------------------------------------------------- */

static LLVMTypeRef elem_type(LLVMTypeRef t) {
  return LLVMGetTypeKind(t) == LLVMVectorTypeKind ? LLVMGetElementType(t) : t;
}

static unsigned lanes_of(LLVMTypeRef t) {
  return LLVMGetTypeKind(t) == LLVMVectorTypeKind ? LLVMGetVectorSize(t) : 1;
}

/* The type of t's shape with element type el. */
static LLVMTypeRef same_shape(LLVMTypeRef t, LLVMTypeRef el) {
  return kc_emit_vec_type(el, lanes_of(t));
}

static LLVMValueRef splat_const(LLVMTypeRef t, LLVMValueRef c) {
  unsigned n = lanes_of(t);
  if (LLVMGetTypeKind(t) != LLVMVectorTypeKind) return c;
  LLVMValueRef cs[64];
  KC_ASSERT(n <= 64);
  for (unsigned i = 0; i < n; i++)
    cs[i] = c;
  return LLVMConstVector(cs, n);
}

bool kc_vm_is_float(LLVMValueRef v) {
  LLVMTypeKind k = LLVMGetTypeKind(elem_type(LLVMTypeOf(v)));
  return k == LLVMFloatTypeKind || k == LLVMDoubleTypeKind || k == LLVMHalfTypeKind ||
         k == LLVMBFloatTypeKind;
}

LLVMValueRef kc_vm_fconst(LLVMTypeRef t, double v) {
  return splat_const(t, LLVMConstReal(elem_type(t), v));
}

LLVMValueRef kc_vm_iconst(LLVMTypeRef t, int64_t v) {
  return splat_const(t, LLVMConstInt(elem_type(t), (unsigned long long)v, 1));
}

LLVMValueRef kc_vm_call1(kc_ir *ir, const char *intrinsic, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  return kc_ir_intrinsic(ir, intrinsic, &t, 1, &x, 1);
}

LLVMValueRef kc_vm_call2(kc_ir *ir, const char *intrinsic, LLVMValueRef x, LLVMValueRef y) {
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMValueRef args[2] = {x, y};
  return kc_ir_intrinsic(ir, intrinsic, &t, 1, args, 2);
}

bool kc_vm_unsigned(kc_dtype t) {
  return t == KC_U8 || t == KC_U16 || t == KC_U32 || t == KC_U64 || t == KC_BOOL;
}

static bool is_f64(LLVMValueRef x) {
  return LLVMGetTypeKind(elem_type(LLVMTypeOf(x))) == LLVMDoubleTypeKind;
}

/* Short names for the builder calls the methods below are written in. */
#define B (ir->b)
#define FC(v) kc_vm_fconst(t, (v))
static LLVMValueRef vmul(kc_ir *ir, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFMul(ir->b, a, b, "");
}
static LLVMValueRef vadd(kc_ir *ir, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFAdd(ir->b, a, b, "");
}
static LLVMValueRef vsub(kc_ir *ir, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFSub(ir->b, a, b, "");
}
static LLVMValueRef fcmp(kc_ir *ir, LLVMRealPredicate p, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildFCmp(ir->b, p, a, b, "");
}
static LLVMValueRef sel(kc_ir *ir, LLVMValueRef c, LLVMValueRef a, LLVMValueRef b) {
  return LLVMBuildSelect(ir->b, c, a, b, "");
}

/* c[0] + x (c[1] + x (c[2] + ...)), n coefficients, with fused multiply-adds where the target
 * has them. */
static LLVMValueRef horner(kc_ir *ir, LLVMValueRef x, const double *c, int n) {
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMValueRef p = FC(c[n - 1]);
  for (int i = n - 2; i >= 0; i--)
    p = kc_ir_fmuladd(ir, p, x, FC(c[i]));
  return p;
}

/* f(lane) for each lane through a libm function double name(double), for the f64 functions
 * LLVM has no intrinsic for. */
static LLVMValueRef libm_f64(kc_ir *ir, const char *name, LLVMValueRef x) {
  LLVMTypeRef d = LLVMDoubleTypeInContext(ir->ctx);
  LLVMTypeRef ft = LLVMFunctionType(d, &d, 1, 0);
  LLVMValueRef fn = LLVMGetNamedFunction(ir->mod, name);
  if (!fn) {
    fn = LLVMAddFunction(ir->mod, name, ft);
    LLVMAddAttributeAtIndex(
        fn, LLVMAttributeFunctionIndex,
        LLVMCreateEnumAttribute(ir->ctx, LLVMGetEnumAttributeKindForName("nounwind", 8), 0));
  }
  LLVMTypeRef t = LLVMTypeOf(x);
  if (LLVMGetTypeKind(t) != LLVMVectorTypeKind) return LLVMBuildCall2(B, ft, fn, &x, 1, "");
  LLVMValueRef r = LLVMGetPoison(t);
  for (unsigned i = 0; i < lanes_of(t); i++) {
    LLVMValueRef xi = LLVMBuildExtractElement(B, x, kc_ir_i32(ir, (int32_t)i), "");
    LLVMValueRef yi = LLVMBuildCall2(B, ft, fn, &xi, 1, "");
    r = LLVMBuildInsertElement(B, r, yi, kc_ir_i32(ir, (int32_t)i), "");
  }
  return r;
}

/* name(x) lane by lane through libm's double version; f32 lanes are widened and rounded back
 * once, which is at least as accurate as the f32 function (tan, asin, sinh...: ops with few
 * node tests and no hot path, so no polynomial of their own). */
LLVMValueRef kc_vmath_libm(kc_ir *ir, const char *name, LLVMValueRef x) {
  if (is_f64(x)) return libm_f64(ir, name, x);
  LLVMTypeRef t = LLVMTypeOf(x), d = LLVMDoubleTypeInContext(ir->ctx);
  if (LLVMGetTypeKind(t) == LLVMVectorTypeKind) d = LLVMVectorType(d, lanes_of(t));
  LLVMValueRef y = libm_f64(ir, name, LLVMBuildFPExt(B, x, d, ""));
  return kc_ir_fptrunc(B, y, t, "");
}

/* ---- exp ------------------------------------------------------------------------------------- */

static const double exp_p[5] = {0.499999935, 0.166665207, 0.0416683874, 0.00836870984,
                                0.0013814613};

/* 2^k for i32 k in [-126, 127], as f32 bits. */
static LLVMValueRef pow2i(kc_ir *ir, LLVMTypeRef t, LLVMValueRef k) {
  LLVMTypeRef it = LLVMTypeOf(k);
  LLVMValueRef bits =
      LLVMBuildShl(B, LLVMBuildAdd(B, k, kc_vm_iconst(it, 127), ""), kc_vm_iconst(it, 23), "");
  return LLVMBuildBitCast(B, bits, t, "");
}

/* e^(x + xl), xl a low part below half an ulp of x (NULL: none) that refines the reduced
 * argument, so a caller whose argument has more than f32 precision (erfc's) keeps it. */
static LLVMValueRef exp2_f32(kc_ir *ir, LLVMValueRef x, LLVMValueRef xl) {
  LLVMTypeRef t = LLVMTypeOf(x), it = same_shape(t, ir->t_i32);
  /* minnum/maxnum turn nan into the bound (one instruction each on x86); nan is put back at
   * the end, so no nan reaches the float-to-int conversion. */
  LLVMValueRef xc =
      kc_vm_call2(ir, "llvm.minnum", kc_vm_call2(ir, "llvm.maxnum", x, FC(-104.0)), FC(89.0));
  LLVMValueRef nf = kc_vm_call1(ir, "llvm.rint", vmul(ir, xc, FC(1.4426950408889634)));
  /* ln2 = 0.693145751953125 (exact in 16 bits, so n * hi is exact, and so is x - n * hi, by
   * Sterbenz) + 1.42860677e-6 */
  LLVMValueRef r = kc_ir_fmuladd(ir, nf, FC(-0.693145751953125), xc);
  if (xl) r = vadd(ir, r, xl);
  r = kc_ir_fmuladd(ir, nf, FC(-1.428606765330187e-06), r);
  LLVMValueRef p = horner(ir, r, exp_p, 5);
  p = vadd(ir, kc_ir_fmuladd(ir, p, vmul(ir, r, r), r), FC(1.0));
  /* 2^n in two factors: n in [-150, 128] does not fit one normal f32 exponent */
  LLVMValueRef n = LLVMBuildFPToSI(B, nf, it, "");
  LLVMValueRef h1 = LLVMBuildAShr(B, n, kc_vm_iconst(it, 1), "");
  LLVMValueRef h2 = LLVMBuildSub(B, n, h1, "");
  LLVMValueRef y = vmul(ir, vmul(ir, p, pow2i(ir, t, h1)), pow2i(ir, t, h2));
  return sel(ir, fcmp(ir, LLVMRealUNO, x, x), x, y);
}

static LLVMValueRef exp_f32(kc_ir *ir, LLVMValueRef x) { return exp2_f32(ir, x, NULL); }

LLVMValueRef kc_vmath_exp(kc_ir *ir, LLVMValueRef x) {
  return is_f64(x) ? kc_vm_call1(ir, "llvm.exp", x) : exp_f32(ir, x);
}

/* ---- log ------------------------------------------------------------------------------------- */

static const double log_q[8] = {0.333333317, -0.25000821,  0.200012269, -0.166233573,
                                0.142017582, -0.131601831, 0.127615756, -0.0763449302};

static LLVMValueRef log_f32(kc_ir *ir, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x), it = same_shape(t, ir->t_i32);
  /* subnormals: scale into the normal range and take 23 off the exponent */
  LLVMValueRef sub = fcmp(ir, LLVMRealOLT, x, FC(1.1754943508222875e-38));
  LLVMValueRef xs = sel(ir, sub, vmul(ir, x, FC(8388608.0)), x);
  LLVMValueRef eadj = sel(ir, sub, kc_vm_iconst(it, -23), kc_vm_iconst(it, 0));
  LLVMValueRef ix = LLVMBuildBitCast(B, xs, it, "");
  LLVMValueRef e =
      LLVMBuildSub(B, LLVMBuildLShr(B, ix, kc_vm_iconst(it, 23), ""), kc_vm_iconst(it, 127), "");
  e = LLVMBuildAdd(B, e, eadj, "");
  LLVMValueRef mbits = LLVMBuildOr(B, LLVMBuildAnd(B, ix, kc_vm_iconst(it, 0x7fffff), ""),
                                   kc_vm_iconst(it, 0x3f800000), "");
  LLVMValueRef m = LLVMBuildBitCast(B, mbits, t, "");
  /* m in [1, 2) -> [sqrt(1/2), sqrt(2)): f = m - 1 stays small on both sides of 0 */
  LLVMValueRef big = fcmp(ir, LLVMRealOGT, m, FC(1.41421356237));
  m = sel(ir, big, vmul(ir, m, FC(0.5)), m);
  e = sel(ir, big, LLVMBuildAdd(B, e, kc_vm_iconst(it, 1), ""), e);
  LLVMValueRef f = vsub(ir, m, FC(1.0));
  LLVMValueRef f2 = vmul(ir, f, f);
  LLVMValueRef q = horner(ir, f, log_q, 8);
  LLVMValueRef tail = kc_ir_fmuladd(ir, vmul(ir, f2, f), q, vmul(ir, f2, FC(-0.5)));
  LLVMValueRef ef = LLVMBuildSIToFP(B, e, t, "");
  /* ln2 = 0.693359375 (9 bits: e * hi is exact) - 2.12194440e-4 */
  LLVMValueRef y = vadd(ir, kc_ir_fmuladd(ir, ef, FC(-2.12194440e-4), tail), f);
  y = kc_ir_fmuladd(ir, ef, FC(0.693359375), y);
  y = sel(ir, fcmp(ir, LLVMRealOEQ, x, FC(INFINITY)), FC(INFINITY), y);
  y = sel(ir, fcmp(ir, LLVMRealOEQ, x, FC(0.0)), FC(-INFINITY), y);
  return sel(ir, fcmp(ir, LLVMRealULT, x, FC(0.0)), FC(NAN), y);
}

LLVMValueRef kc_vmath_log(kc_ir *ir, LLVMValueRef x) {
  return is_f64(x) ? kc_vm_call1(ir, "llvm.log", x) : log_f32(ir, x);
}

/* ---- tanh, sigmoid --------------------------------------------------------------------------- */

static const double tanh_p[5] = {-0.333332819, 0.133314422, -0.0537397152, 0.0206390876,
                                 -0.00570498742};

static LLVMValueRef tanh_f32(kc_ir *ir, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMValueRef ax = kc_vm_call1(ir, "llvm.fabs", x);
  LLVMValueRef x2 = vmul(ir, x, x);
  LLVMValueRef small = kc_ir_fmuladd(ir, vmul(ir, x, x2), horner(ir, x2, tanh_p, 5), x);
  LLVMValueRef e = exp_f32(ir, vmul(ir, ax, FC(-2.0)));
  LLVMValueRef big = LLVMBuildFDiv(B, vsub(ir, FC(1.0), e), vadd(ir, FC(1.0), e), "");
  LLVMValueRef y = sel(ir, fcmp(ir, LLVMRealOLT, ax, FC(0.625)), small, big);
  return kc_vm_call2(ir, "llvm.copysign", y, x); /* tanh(-0) = -0 */
}

LLVMValueRef kc_vmath_tanh(kc_ir *ir, LLVMValueRef x) {
  return is_f64(x) ? kc_vm_call1(ir, "llvm.tanh", x) : tanh_f32(ir, x);
}

LLVMValueRef kc_vmath_sigmoid(kc_ir *ir, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMValueRef ax = kc_vm_call1(ir, "llvm.fabs", x);
  LLVMValueRef e = kc_vmath_exp(ir, LLVMBuildFNeg(B, ax, ""));
  LLVMValueRef s = LLVMBuildFDiv(B, FC(1.0), vadd(ir, FC(1.0), e), "");
  /* x < 0: e^x / (1 + e^x), which keeps its precision where 1 - s would not */
  return sel(ir, fcmp(ir, LLVMRealOLT, x, FC(0.0)), vmul(ir, e, s), s);
}

/* ---- erf ------------------------------------------------------------------------------------- */

static const double erf_small[7] = {1.12837917,    -0.376126258,    0.112835852,   -0.0268538131,
                                    0.00518832957, -0.000801020851, 7.85390674e-05};
static const double erfc_p[9] = {-1.26544581,  0.998441122, 0.390239316, 0.00338727962, 0.153450474,
                                 -0.529979866, 0.126097333, 0.247444893, -0.123982548};

/* erfc(z + zl) for z >= 0.6 (nan stays nan), zl a low part (NULL: none): t e^(-z^2 + P(t)),
 * t = 1 / (1 + z/2); 0 past z = 10, where it is below the smallest f32 anyway. */
static LLVMValueRef erfc_big_f32(kc_ir *ir, LLVMValueRef z, LLVMValueRef zl) {
  LLVMTypeRef t = LLVMTypeOf(z);
  LLVMValueRef zc = sel(ir, fcmp(ir, LLVMRealOGT, z, FC(10.0)), FC(10.0), z);
  LLVMValueRef tt = LLVMBuildFDiv(B, FC(1.0), kc_ir_fmuladd(ir, zc, FC(0.5), FC(1.0)), "");
  /* the exponent -z^2 + P(t) as s + e: -z^2 = -hi - lo exactly (lo by a fused multiply-add;
   * 0 where the host has none; plus 2 z zl), then -hi + P by an exact two-sum. Near -80 the
   * low bits of the exponent are 1e-5 of the result. */
  LLVMValueRef hi = vmul(ir, zc, zc);
  LLVMValueRef lo = kc_ir_fmuladd(ir, zc, zc, LLVMBuildFNeg(B, hi, ""));
  if (zl) lo = kc_ir_fmuladd(ir, vadd(ir, zc, zc), zl, lo);
  LLVMValueRef a = LLVMBuildFNeg(B, hi, ""), p = horner(ir, tt, erfc_p, 9);
  LLVMValueRef s = vadd(ir, a, p), bv = vsub(ir, s, a);
  LLVMValueRef err = vadd(ir, vsub(ir, a, vsub(ir, s, bv)), vsub(ir, p, bv));
  LLVMValueRef y = vmul(ir, tt, exp2_f32(ir, s, vsub(ir, err, lo)));
  return sel(ir, fcmp(ir, LLVMRealOGT, z, FC(10.0)), FC(0.0), y);
}

static LLVMValueRef erf_f32(kc_ir *ir, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMValueRef ax = kc_vm_call1(ir, "llvm.fabs", x);
  LLVMValueRef small = vmul(ir, x, horner(ir, vmul(ir, x, x), erf_small, 7));
  LLVMValueRef big = vsub(ir, FC(1.0), erfc_big_f32(ir, ax, NULL));
  big = kc_vm_call2(ir, "llvm.copysign", big, x);
  return sel(ir, fcmp(ir, LLVMRealOLT, ax, FC(1.0)), small, big);
}

/* erfc(x + xl), xl a low part (NULL: none). Below 0.6, 1 - erf(x) >= 0.39 loses little (the
 * low part enters through erf' = 2/sqrt(pi) e^(-x^2), about 1.13 there); erfc(-z) = 2 -
 * erfc(z). */
static LLVMValueRef erfc2_f32(kc_ir *ir, LLVMValueRef x, LLVMValueRef xl) {
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMValueRef ax = kc_vm_call1(ir, "llvm.fabs", x);
  LLVMValueRef neg = fcmp(ir, LLVMRealOLT, x, FC(0.0));
  LLVMValueRef p = horner(ir, vmul(ir, x, x), erf_small, 7);
  LLVMValueRef small = kc_ir_fmuladd(ir, LLVMBuildFNeg(B, x, ""), p, FC(1.0));
  LLVMValueRef zl = NULL;
  if (xl) {
    small = kc_ir_fmuladd(ir, xl, FC(-1.1283791670955126), small);
    zl = sel(ir, neg, LLVMBuildFNeg(B, xl, ""), xl);
  }
  LLVMValueRef big = erfc_big_f32(ir, ax, zl);
  big = sel(ir, neg, vsub(ir, FC(2.0), big), big);
  return sel(ir, fcmp(ir, LLVMRealOLT, ax, FC(0.6)), small, big);
}

LLVMValueRef kc_vmath_erf(kc_ir *ir, LLVMValueRef x) {
  return is_f64(x) ? libm_f64(ir, "erf", x) : erf_f32(ir, x);
}

LLVMValueRef kc_vmath_erfc(kc_ir *ir, LLVMValueRef x) {
  return is_f64(x) ? libm_f64(ir, "erfc", x) : erfc2_f32(ir, x, NULL);
}

/* ---- gelu ------------------------------------------------------------------------------------ */

LLVMValueRef kc_vmath_gelu(kc_ir *ir, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  LLVMValueRef hx = vmul(ir, x, FC(0.5));
  /* 1 + erf(x/sqrt2) = erfc(-x/sqrt2) keeps its precision for x << 0 */
  if (is_f64(x)) return vmul(ir, hx, libm_f64(ir, "erfc", vmul(ir, x, FC(-M_SQRT1_2_))));
  /* -x/sqrt2 as s + sl: erfc's relative error there grows as 2 s^2 times s's, so the rounding of
   * s alone would cost 1e-5 near s = 9 */
  const double c = -M_SQRT1_2_, ch = (float)c, cl = c - ch;
  LLVMValueRef s = vmul(ir, x, FC(ch));
  LLVMValueRef sl = kc_ir_fmuladd(ir, x, FC(ch), LLVMBuildFNeg(B, s, ""));
  sl = kc_ir_fmuladd(ir, x, FC(cl), sl);
  return vmul(ir, hx, erfc2_f32(ir, s, sl));
}

LLVMValueRef kc_vmath_gelu_tanh(kc_ir *ir, LLVMValueRef x) {
  LLVMTypeRef t = LLVMTypeOf(x);
  /* x/2 (1 + tanh(u)) = x sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3): no cancellation */
  const double k = 0.7978845608028654; /* sqrt(2/pi) */
  LLVMValueRef x2 = vmul(ir, x, x);
  LLVMValueRef u2 = vmul(ir, x, kc_ir_fmuladd(ir, x2, FC(2 * k * 0.044715), FC(2 * k)));
  return vmul(ir, x, kc_vmath_sigmoid(ir, u2));
}

/* ---- sin, cos -------------------------------------------------------------------------------- */

LLVMValueRef kc_vmath_sin(kc_ir *ir, LLVMValueRef x) { return kc_vm_call1(ir, "llvm.sin", x); }

LLVMValueRef kc_vmath_cos(kc_ir *ir, LLVMValueRef x) { return kc_vm_call1(ir, "llvm.cos", x); }

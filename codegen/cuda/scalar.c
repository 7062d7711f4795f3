/*
 * codegen/cuda/scalar.c - the one table of elementwise math of the CUDA target: per op, a C
 * expression over compute-typed arguments $0, $1, $2 and the dtypes it accepts. Elementwise
 * kernels and fused regions both build their statements from it (kc_cu_scalar), and the
 * functions it names are the device library's (prelude.c), overloaded or templated per type,
 * so one snippet serves every dtype.
 *
 * Ops whose expression depends on more than the argument list are formed here: min/max fold
 * over any number of inputs, clip applies only the bounds that are present, gelu picks its
 * form by the `approximate` attribute, cast by the two dtypes, mod by fmod, bit_shift by
 * direction, is_inf by its detect_* flags. In a snippet $T is the compute type of input 0 and
 * @name the node's float attribute `name` as a constant of that type.
 * Invariants: an expression is fully parenthesized, reads each argument at most once per
 * occurrence and has no side effects, so it can be inlined anywhere.
 */
#include "codegen/cuda/emit.h"

#include <stdio.h>
#include <string.h>

/* Which input dtypes an op takes. */
enum { T_FLOAT = 1, T_INT = 2, T_BOOL = 4, T_NUM = T_FLOAT | T_INT, T_ANY = T_NUM | T_BOOL };

typedef struct snippet {
  const char *expr; /* NULL: formed in code (min, max, clip, gelu, cast) */
  unsigned types;
} snippet;

static const snippet table[KC_OP_COUNT] = {
    [KC_OP_SQRT] = {"kc_sqrt($0)", T_FLOAT},
    [KC_OP_RECIPROCAL] = {"kc_recip($0)", T_FLOAT},
    [KC_OP_NEG] = {"kc_neg($0)", T_NUM},
    [KC_OP_ABS] = {"kc_abs($0)", T_NUM},
    [KC_OP_EXP] = {"kc_exp($0)", T_FLOAT},
    [KC_OP_LOG] = {"kc_log($0)", T_FLOAT},
    [KC_OP_ERF] = {"kc_erf($0)", T_FLOAT},
    [KC_OP_TANH] = {"kc_tanh($0)", T_FLOAT},
    [KC_OP_SIGMOID] = {"kc_sigmoid($0)", T_FLOAT},
    [KC_OP_RELU] = {"kc_relu($0)", T_NUM},
    [KC_OP_SIN] = {"kc_sin($0)", T_FLOAT},
    [KC_OP_COS] = {"kc_cos($0)", T_FLOAT},
    [KC_OP_NOT] = {"(!$0)", T_BOOL},
    [KC_OP_IDENTITY] = {"$0", T_ANY},
    [KC_OP_DROPOUT] = {"$0", T_ANY}, /* inside fused regions: inference, y = x */
    [KC_OP_GELU] = {NULL, T_FLOAT},
    [KC_OP_CAST] = {NULL, T_ANY},
    [KC_OP_CLIP] = {NULL, T_NUM},
    [KC_OP_ADD] = {"kc_add($0, $1)", T_NUM},
    [KC_OP_SUB] = {"kc_sub($0, $1)", T_NUM},
    [KC_OP_MUL] = {"kc_mul($0, $1)", T_NUM},
    [KC_OP_DIV] = {"kc_div($0, $1)", T_NUM},
    [KC_OP_POW] = {"kc_pow($0, $1)", T_NUM},
    [KC_OP_MIN] = {NULL, T_NUM},
    [KC_OP_MAX] = {NULL, T_NUM},
    [KC_OP_EQUAL] = {"($0 == $1)", T_ANY},
    [KC_OP_LESS] = {"($0 < $1)", T_ANY},
    [KC_OP_GREATER] = {"($0 > $1)", T_ANY},
    [KC_OP_AND] = {"($0 && $1)", T_BOOL},
    [KC_OP_WHERE] = {"($0 ? $1 : $2)", T_BOOL}, /* the condition's dtype */
    [KC_OP_TAN] = {"tan($0)", T_FLOAT},
    [KC_OP_ASIN] = {"asin($0)", T_FLOAT},
    [KC_OP_ACOS] = {"acos($0)", T_FLOAT},
    [KC_OP_ATAN] = {"atan($0)", T_FLOAT},
    [KC_OP_SINH] = {"sinh($0)", T_FLOAT},
    [KC_OP_COSH] = {"cosh($0)", T_FLOAT},
    [KC_OP_ASINH] = {"asinh($0)", T_FLOAT},
    [KC_OP_ACOSH] = {"acosh($0)", T_FLOAT},
    [KC_OP_ATANH] = {"atanh($0)", T_FLOAT},
    [KC_OP_CEIL] = {"ceil($0)", T_FLOAT},
    [KC_OP_FLOOR] = {"floor($0)", T_FLOAT},
    [KC_OP_ROUND] = {"rint($0)", T_FLOAT}, /* ties to even */
    [KC_OP_SIGN] = {"($0 > 0 ? ($T)1 : ($0 < 0 ? ($T)-1 : $0))", T_NUM},
    [KC_OP_ELU] = {"($0 < 0 ? @alpha * (kc_exp($0) - ($T)1) : $0)", T_FLOAT},
    [KC_OP_CELU] = {"($0 < 0 ? @alpha * (kc_exp($0 / @alpha) - ($T)1) : $0)", T_FLOAT},
    [KC_OP_SELU] = {"(@gamma * ($0 <= 0 ? @alpha * kc_exp($0) - @alpha : $0))", T_FLOAT},
    [KC_OP_LEAKY_RELU] = {"($0 < 0 ? @alpha * $0 : $0)", T_FLOAT},
    [KC_OP_HARD_SIGMOID] = {"kc_clip_lo(kc_clip_hi(@alpha * $0 + @beta, ($T)1), ($T)0)", T_FLOAT},
    [KC_OP_HARD_SWISH] = {"($0 * kc_clip_lo(kc_clip_hi($0 / ($T)6 + ($T)0.5, ($T)1), ($T)0))",
                          T_FLOAT},
    [KC_OP_THRESHOLDED_RELU] = {"($0 > @alpha ? $0 : ($T)0)", T_FLOAT},
    [KC_OP_SHRINK] = {"($0 < -@lambd ? $0 + @bias : ($0 > @lambd ? $0 - @bias : ($T)0))", T_FLOAT},
    [KC_OP_SOFTPLUS] = {"(kc_relu($0) + kc_log(($T)1 + kc_exp(-kc_abs($0))))", T_FLOAT},
    [KC_OP_SOFTSIGN] = {"($0 / (($T)1 + kc_abs($0)))", T_FLOAT},
    [KC_OP_MISH] = {"($0 * kc_tanh(kc_relu($0) + kc_log(($T)1 + kc_exp(-kc_abs($0)))))", T_FLOAT},
    [KC_OP_PRELU] = {"($0 < 0 ? kc_mul($1, $0) : $0)", T_NUM},
    [KC_OP_IS_NAN] = {"($0 != $0)", T_FLOAT},
    [KC_OP_IS_INF] = {NULL, T_FLOAT},
    [KC_OP_GREATER_EQUAL] = {"($0 >= $1)", T_ANY},
    [KC_OP_LESS_EQUAL] = {"($0 <= $1)", T_ANY},
    [KC_OP_OR] = {"($0 || $1)", T_BOOL},
    [KC_OP_XOR] = {"($0 != $1)", T_BOOL},
    [KC_OP_MOD] = {NULL, T_NUM},
    [KC_OP_BITWISE_AND] = {"($0 & $1)", T_INT},
    [KC_OP_BITWISE_OR] = {"($0 | $1)", T_INT},
    [KC_OP_BITWISE_XOR] = {"($0 ^ $1)", T_INT},
    [KC_OP_BITWISE_NOT] = {"(~$0)", T_INT},
    [KC_OP_BIT_SHIFT] = {NULL, T_INT},
};

/*
 * Forms of the ops whose snippet depends on an attribute. mod: R = the truncated remainder
 * (C's % or fmod), moved into the divisor's sign for fmod=0; integer x mod 0 and x mod -1 are
 * 0 without a trap, as on the CPU. bit_shift: a shift by the width or more (or a negative one)
 * gives 0; the left shift goes through u64, so it wraps.
 */
#define MOD_INT_GUARD "($1 == 0 || (kc_signed<$T>() && $1 == ($T)-1)) ? ($T)0 : "
#define PYMOD(R) "((" R " != 0 && ((" R " < 0) != ($1 < 0))) ? (" R ") + $1 : (" R "))"
#define SHIFT_GUARD "(($1 < 0 || (u64)$1 >= 8 * sizeof($T)) ? ($T)0 : "
static const char *mod_form(bool is_float, bool c_fmod) {
  if (is_float) return c_fmod ? "fmod($0, $1)" : PYMOD("fmod($0, $1)");
  return c_fmod ? "(" MOD_INT_GUARD "($T)($0 % $1))"
                : "(" MOD_INT_GUARD "($T)" PYMOD("($T)($0 % $1)") ")";
}

static unsigned type_class(kc_dtype t) {
  if (kc_dtype_is_float(t)) return T_FLOAT;
  if (kc_dtype_is_int(t)) return T_INT;
  return t == KC_BOOL ? T_BOOL : 0;
}

/*
 * Substitute in expr into buf: $k with args[k], $T with the compute type ctype, @name with the
 * node's float attribute `name` as a literal of that type (17 digits: the double round-trips);
 * false when it does not fit.
 */
static bool subst(const kc_node *n, const char *ctype, const char *expr, const char *const *args,
                  uint32_t nargs, char *buf, size_t size) {
  size_t len = 0;
  for (const char *p = expr; *p; p++) {
    const char *s = NULL;
    char one[2] = {*p, 0}, lit[96];
    if (p[0] == '$' && p[1] >= '0' && p[1] <= '9') {
      uint32_t k = (uint32_t)(p[1] - '0');
      s = k < nargs && args[k] ? args[k] : "0";
      p++;
    } else if (p[0] == '$' && p[1] == 'T') {
      s = ctype;
      p++;
    } else if (p[0] == '@') {
      char name[32];
      size_t k = 0;
      while (k + 1 < sizeof name && ((p[1] >= 'a' && p[1] <= 'z') || p[1] == '_'))
        name[k++] = *++p;
      name[k] = 0;
      snprintf(lit, sizeof lit, "((%s)%.17g)", ctype, kc_node_float(n, name, 0.0));
      s = lit;
    } else {
      s = one;
    }
    size_t m = strlen(s);
    if (len + m + 1 > size) return false;
    memcpy(buf + len, s, m + 1);
    len += m;
  }
  return true;
}

/* Fold fn over the present args: fn(fn(a0, a1), a2)... */
static bool fold(const char *fn, const char *const *args, uint32_t nargs, char *buf, size_t size) {
  char acc[2048];
  snprintf(acc, sizeof acc, "%s", args[0]);
  for (uint32_t i = 1; i < nargs; i++) {
    if (!args[i]) continue;
    char next[2048];
    int n = snprintf(next, sizeof next, "%s(%s, %s)", fn, acc, args[i]);
    if (n < 0 || (size_t)n >= sizeof next) return false;
    memcpy(acc, next, (size_t)n + 1);
  }
  return (size_t)snprintf(buf, size, "%s", acc) < size;
}

static bool cast(kc_dtype in, kc_dtype out, const char *x, char *buf, size_t size) {
  int n;
  if (in == out ||
      (strcmp(kc_cu_ctype(in), kc_cu_ctype(out)) == 0 && out != KC_F16 && out != KC_BF16))
    n = snprintf(buf, size, "%s", x);
  else if (out == KC_BOOL)
    n = snprintf(buf, size, "(%s != 0)", x);
  else if (in == KC_BOOL)
    n = snprintf(buf, size, "((%s)(%s ? 1 : 0))", kc_cu_ctype(out), x);
  else if (out == KC_F16)
    n = snprintf(buf, size, "kc_to_f16(%s)", x);
  else if (out == KC_BF16)
    n = snprintf(buf, size, "kc_to_bf16(%s)", x);
  else
    n = snprintf(buf, size, "kc_cvt<%s>(%s)", kc_cu_ctype(out), x);
  return n >= 0 && (size_t)n < size;
}

kc_status kc_cu_scalar(const kc_node *n, kc_dtype in, kc_dtype out, const char *const *args,
                       uint32_t nargs, char *buf, size_t size) {
  const snippet *s = &table[n->op];
  if (!s->types || !(s->types & type_class(in)) || nargs < 1 || !args[0]) return KC_ERR_UNSUPPORTED;
  bool ok;
  const char *ct = kc_cu_ctype(in);
  switch (n->op) {
  case KC_OP_MIN: ok = fold("kc_min", args, nargs, buf, size); break;
  case KC_OP_MAX: ok = fold("kc_max", args, nargs, buf, size); break;
  case KC_OP_CAST: ok = cast(in, out, args[0], buf, size); break;
  case KC_OP_GELU: {
    bool tanh_form = strcmp(kc_node_string(n, "approximate", "none"), "tanh") == 0;
    ok = (size_t)snprintf(buf, size, "%s(%s)", tanh_form ? "kc_gelu_tanh" : "kc_gelu", args[0]) <
         size;
    break;
  }
  case KC_OP_CLIP: {
    char lo[2048];
    ok = nargs < 2 || !args[1]
             ? (size_t)snprintf(lo, sizeof lo, "%s", args[0]) < sizeof lo
             : (size_t)snprintf(lo, sizeof lo, "kc_clip_lo(%s, %s)", args[0], args[1]) < sizeof lo;
    if (ok)
      ok = nargs < 3 || !args[2]
               ? (size_t)snprintf(buf, size, "%s", lo) < size
               : (size_t)snprintf(buf, size, "kc_clip_hi(%s, %s)", lo, args[2]) < size;
    break;
  }
  case KC_OP_MOD:
    ok = subst(n, ct, mod_form(kc_dtype_is_float(in), kc_node_int(n, "fmod", 0) != 0), args, nargs,
               buf, size);
    break;
  case KC_OP_BIT_SHIFT:
    ok = subst(n, ct,
               strcmp(kc_node_string(n, "direction", ""), "LEFT") == 0
                   ? SHIFT_GUARD "($T)((u64)$0 << $1))"
                   : SHIFT_GUARD "($T)($0 >> $1))",
               args, nargs, buf, size);
    break;
  case KC_OP_IS_INF: {
    bool pos = kc_node_int(n, "detect_positive", 1), neg = kc_node_int(n, "detect_negative", 1);
    ok = subst(n, ct,
               pos && neg ? "(kc_abs($0) == KC_INF)"
               : pos      ? "($0 == KC_INF)"
               : neg      ? "($0 == -KC_INF)"
                          : "false",
               args, nargs, buf, size);
    break;
  }
  default: ok = subst(n, ct, s->expr, args, nargs, buf, size); break;
  }
  return ok ? KC_OK : KC_ERR_INTERNAL;
}

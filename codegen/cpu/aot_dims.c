/*
 * codegen/cpu/aot_dims.c - the dims function of a compiled model: straight-line code that
 * evaluates every value's dims (kc_dim expressions of ir/dim.c) from the symbol values a run's
 * inputs bind, with each shared subexpression computed once.
 *
 * Invariants:
 *   - Semantics are kc_dim_eval's: floor division and remainder, integers as they are; a
 *     quotient by zero, an overflow or a negative dim makes the slot "bad" instead of trapping
 *     (division by zero and INT64_MIN / -1 are never executed: the divisor is replaced first).
 *   - Branch-free: the error result is the first bad slot, selected, never jumped to.
 */
#include "codegen/cpu/aot_emit.h"

#include <stdlib.h>
#include <string.h>

typedef struct dimgen {
  kc_ir *ir;
  const kc_graph *g;
  LLVMValueRef syms;
  const char *const *names;
  int64_t nsyms;
  LLVMValueRef *val, *bad; /* per dexpr: value and "bad" bit, once emitted */
  kc_status err;
} dimgen;

#define B (d->ir->b)

static LLVMValueRef i1c(dimgen *d, int v) { return LLVMConstInt(d->ir->t_i1, (unsigned)v, 0); }

/* {result, overflow} of llvm.<op>.with.overflow on i64. */
static LLVMValueRef with_overflow(dimgen *d, const char *op, LLVMValueRef a, LLVMValueRef b,
                                  LLVMValueRef *ovf) {
  LLVMValueRef args[2] = {a, b};
  LLVMValueRef r = kc_ir_intrinsic(d->ir, op, &d->ir->t_i64, 1, args, 2);
  *ovf = LLVMBuildExtractValue(B, r, 1, "");
  return LLVMBuildExtractValue(B, r, 0, "");
}

/* floor(a / b) or floor(a mod b) for b != 0 (b of -1 handled without sdiv's overflow). */
static LLVMValueRef floor_divmod(dimgen *d, bool mod, LLVMValueRef a, LLVMValueRef b,
                                 LLVMValueRef *bad) {
  kc_ir *ir = d->ir;
  LLVMValueRef zero = kc_ir_i64(ir, 0), one = kc_ir_i64(ir, 1), m1 = kc_ir_i64(ir, -1);
  LLVMValueRef bz = LLVMBuildICmp(B, LLVMIntEQ, b, zero, "");
  LLVMValueRef bm1 = LLVMBuildICmp(B, LLVMIntEQ, b, m1, "");
  LLVMValueRef bs = LLVMBuildSelect(B, LLVMBuildOr(B, bz, bm1, ""), one, b, "");
  LLVMValueRef q = LLVMBuildSDiv(B, a, bs, ""), r = LLVMBuildSRem(B, a, bs, "");
  /* a remainder whose sign differs from the divisor's: step the quotient down, the rest up */
  LLVMValueRef adjust =
      LLVMBuildAnd(B, LLVMBuildICmp(B, LLVMIntNE, r, zero, ""),
                   LLVMBuildICmp(B, LLVMIntSLT, LLVMBuildXor(B, r, bs, ""), zero, ""), "");
  LLVMValueRef ovf;
  LLVMValueRef neg = with_overflow(d, "llvm.ssub.with.overflow", zero, a, &ovf);
  *bad = LLVMBuildOr(B, bz, LLVMBuildAnd(B, bm1, ovf, ""), "");
  if (mod) {
    LLVMValueRef rf = LLVMBuildSelect(B, adjust, LLVMBuildAdd(B, r, bs, ""), r, "");
    return LLVMBuildSelect(B, bm1, zero, rf, "");
  }
  LLVMValueRef qf = LLVMBuildSelect(B, adjust, LLVMBuildSub(B, q, one, ""), q, "");
  return LLVMBuildSelect(B, bm1, neg, qf, "");
}

static LLVMValueRef gen(dimgen *d, kc_dim x, LLVMValueRef *bad) {
  int64_t c;
  *bad = i1c(d, 0);
  if (kc_dim_const(d->g, x, &c)) return kc_ir_i64(d->ir, c);
  uint32_t e = KC_DIM_EXPR(x);
  if (d->val[e]) {
    *bad = d->bad[e];
    return d->val[e];
  }
  const kc_dexpr *ex = &d->g->dexprs[e];
  LLVMValueRef v = NULL;
  if (ex->kind == KC_DX_SYM) {
    int64_t k = 0;
    while (k < d->nsyms && strcmp(d->names[k], ex->name) != 0)
      k++;
    if (k == d->nsyms) {
      d->err = kc_errorf(d->g->ctx, KC_ERR_INTERNAL, "AOT dims: symbol '%s' is bound by no input",
                         ex->name);
      return kc_ir_i64(d->ir, 0);
    }
    v = kc_ir_load(d->ir, d->ir->t_i64, kc_ir_gepi64(d->ir, d->syms, kc_ir_i64(d->ir, k)), 8);
  } else {
    LLVMValueRef ba, bb, ovf = i1c(d, 0);
    LLVMValueRef a = gen(d, ex->a, &ba), b = gen(d, ex->b, &bb);
    switch (ex->kind) {
    case KC_DX_ADD: v = with_overflow(d, "llvm.sadd.with.overflow", a, b, &ovf); break;
    case KC_DX_MUL: v = with_overflow(d, "llvm.smul.with.overflow", a, b, &ovf); break;
    case KC_DX_DIV: v = floor_divmod(d, false, a, b, &ovf); break;
    default: v = floor_divmod(d, true, a, b, &ovf); break;
    }
    *bad = LLVMBuildOr(B, LLVMBuildOr(B, ba, bb, ""), ovf, "");
  }
  d->val[e] = v;
  d->bad[e] = *bad;
  return v;
}

kc_status kc_aot_emit_dims(kc_ir *ir, const kc_graph *g, const char *name, const kc_dim *slot_dims,
                           int64_t nslots, const char *const *names, int64_t nsyms,
                           LLVMValueRef *fn) {
  LLVMTypeRef params[2] = {ir->t_ptr, ir->t_ptr};
  *fn = kc_ir_func(ir, name, ir->t_i64, params, 2, true);
  dimgen d = {.ir = ir, .g = g, .names = names, .nsyms = nsyms};
  d.syms = LLVMGetParam(*fn, 0);
  d.val = calloc(g->ndexprs + 1, sizeof *d.val);
  d.bad = calloc(g->ndexprs + 1, sizeof *d.bad);
  if (!d.val || !d.bad) {
    free(d.val);
    free(d.bad);
    return kc_errorf(g->ctx, KC_ERR_NOMEM, "out of memory emitting the dims function");
  }
  LLVMValueRef slots = LLVMGetParam(*fn, 1), first_bad = kc_ir_i64(ir, -1);
  for (int64_t i = 0; i < nslots && d.err == KC_OK; i++) {
    LLVMValueRef bad, v = gen(&d, slot_dims[i], &bad);
    kc_ir_store(ir, v, kc_ir_gepi64(ir, slots, kc_ir_i64(ir, i)), 8);
    if (!KC_DIM_IS_SYM(slot_dims[i])) continue; /* a size: never bad */
    bad = LLVMBuildOr(ir->b, bad, LLVMBuildICmp(ir->b, LLVMIntSLT, v, kc_ir_i64(ir, 0), ""), "");
    LLVMValueRef none = LLVMBuildICmp(ir->b, LLVMIntEQ, first_bad, kc_ir_i64(ir, -1), "");
    first_bad =
        LLVMBuildSelect(ir->b, LLVMBuildAnd(ir->b, bad, none, ""), kc_ir_i64(ir, i), first_bad, "");
  }
  LLVMBuildRet(ir->b, first_bad);
  free(d.val);
  free(d.bad);
  return d.err;
}

kc_status kc_cpu_jit_dims(kc_cpu *cpu, const kc_graph *g, const kc_dim *slot_dims, int64_t nslots,
                          const char *const *names, int64_t nsyms, kc_plan_dims_fn *out) {
  *out = NULL;
  LLVMModuleRef mod = kc_cpu_module_new(cpu, "graph_dims");
  kc_ir ir;
  kc_ir_init(&ir, mod);
  LLVMValueRef fn;
  kc_status s = kc_aot_emit_dims(&ir, g, "kc_dims", slot_dims, nslots, names, nsyms, &fn);
  kc_ir_dispose(&ir);
  if (s != KC_OK) {
    LLVMDisposeModule(mod);
    return s;
  }
  LLVMSetLinkage(fn, LLVMExternalLinkage); /* looked up by name */
  void *addr = NULL;
  s = kc_cpu_module_add(cpu, mod, 0); /* consumes mod */
  if (s == KC_OK) s = kc_cpu_lookup(cpu, "kc_dims", &addr);
  *out = (kc_plan_dims_fn)addr;
  return s;
}

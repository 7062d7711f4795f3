/*
 * codegen/cpu/cpu.h - private header of the CPU code generator: the kc_cpu target (LLJIT,
 * host target machine) and the IR-building helpers every emitter shares.
 *
 * Invariants:
 *   - Every module of a kc_cpu is created in its thread-safe context's LLVMContext (ORC
 *     requires it) with the host triple and data layout, through kc_cpu_module_new.
 *   - kc_cpu_module_add consumes the module whether it succeeds or not.
 *   - A kc_ir builder always has an insertion point inside ir->fn while emitting.
 */
#ifndef KERNC_CODEGEN_CPU_H
#define KERNC_CODEGEN_CPU_H

#include "codegen/codegen.h"
#include "ir/internal.h"

#include <llvm-c/Core.h>
#include <llvm-c/Error.h>
#include <llvm-c/LLJIT.h>
#include <llvm-c/Orc.h>
#include <llvm-c/TargetMachine.h>

#include <stdbool.h>

struct kc_cpu {
  kc_context *ctx;
  kc_cpu_info info;
  char *triple;            /* LLVM-owned (LLVMDisposeMessage) */
  char *features;          /* LLVM-owned */
  LLVMTargetMachineRef tm; /* for the pass pipeline; the JIT has its own copy */
  LLVMOrcThreadSafeContextRef tsc;
  LLVMOrcLLJITRef jit;
  char *dump_dir; /* malloc'd; NULL: no dumps */
  int opt_level;  /* 0..3: the -O level of the pass pipeline and the code generator */
};

/* ---- jit.c --------------------------------------------------------------------------------- */

/* A new empty module in the JIT's context, with the host triple and data layout. */
LLVMModuleRef kc_cpu_module_new(kc_cpu *cpu, const char *name);
/* Flags of kc_cpu_module_add. */
enum {
  KC_CPU_MOD_HANDVEC = 1 << 0, /* loops are vectorized and unrolled by the emitter already */
};
/* Verify and run the O3 pipeline for the host (and dump, when asked); mod stays the caller's. */
kc_status kc_cpu_module_optimize(kc_cpu *cpu, LLVMModuleRef mod, unsigned flags);
/* kc_cpu_module_optimize, then hand the module to the JIT (consumes it). */
kc_status kc_cpu_module_add(kc_cpu *cpu, LLVMModuleRef mod, unsigned flags);
/* Address of a JIT'd function (compiles its module on first lookup). */
kc_status kc_cpu_lookup(kc_cpu *cpu, const char *name, void **addr);
/* Put an LLVM error (consumed) into the context's error buffer with a prefix. */
kc_status kc_cpu_llvm_error(kc_cpu *cpu, LLVMErrorRef err, const char *what);

/* ---- lower.c --------------------------------------------------------------------------------- */

/* Symbol of node `index`'s kernel ("k3_matmul"; its units function adds "_units"). */
void kc_cpu_kernel_name(char *buf, size_t size, uint32_t index, kc_op op);
/*
 * Emit the kernels of every node of g into a new module (the caller's, not optimized); fills the
 * static facts of kernels[] (grain, ws_bytes, no_kernel; fn and units stay NULL).
 */
kc_status kc_cpu_lower_module(kc_cpu *cpu, const kc_graph *g, kc_cpu_kernel *kernels,
                              LLVMModuleRef *out);

/* ---- emit_util.c: IR building --------------------------------------------------------------- */

typedef struct kc_ir {
  LLVMContextRef ctx;
  LLVMModuleRef mod;
  LLVMBuilderRef b;
  LLVMValueRef fn; /* function being emitted */
  LLVMTypeRef t_void, t_i1, t_i32, t_i64, t_f32, t_ptr;
} kc_ir;

void kc_ir_init(kc_ir *ir, LLVMModuleRef mod);
void kc_ir_dispose(kc_ir *ir);

/* Start function name (internal linkage if internal) with an entry block; returns it. */
LLVMValueRef kc_ir_func(kc_ir *ir, const char *name, LLVMTypeRef ret, LLVMTypeRef *params,
                        unsigned nparams, bool internal);
/* Add an enum attribute (noalias, nocapture...) to parameter i (0-based) of fn. */
void kc_ir_param_attr(kc_ir *ir, LLVMValueRef fn, unsigned i, const char *attr);
/* Add a string function attribute. */
void kc_ir_fn_attr(kc_ir *ir, LLVMValueRef fn, const char *key, const char *val);

LLVMValueRef kc_ir_i64(kc_ir *ir, int64_t v);
LLVMValueRef kc_ir_i32(kc_ir *ir, int32_t v);
LLVMTypeRef kc_ir_vf32(kc_ir *ir, unsigned lanes);
LLVMValueRef kc_ir_zero(LLVMTypeRef t);

/* &p[idx] over f32 (idx i64, or a vector of i64 for a vector of pointers). */
LLVMValueRef kc_ir_gepf(kc_ir *ir, LLVMValueRef p, LLVMValueRef idx);
/* &p[idx] over i64. */
LLVMValueRef kc_ir_gepi64(kc_ir *ir, LLVMValueRef p, LLVMValueRef idx);
LLVMValueRef kc_ir_load(kc_ir *ir, LLVMTypeRef t, LLVMValueRef p, unsigned align);
void kc_ir_store(kc_ir *ir, LLVMValueRef v, LLVMValueRef p, unsigned align);
/* LLVMBuildFPTrunc, but to bf16 (or a vector of it) by integer rounding (nearest even, NaN kept
 * quiet): LLVM lowers a float -> bfloat fptrunc to the libcall __truncsfbf2 on CPUs without
 * AVX512_BF16, which neither the JIT's process nor libgcc 12 (the AOT link) provides. */
LLVMValueRef kc_ir_fptrunc(LLVMBuilderRef b, LLVMValueRef v, LLVMTypeRef to, const char *name);

/* Integer helpers on i64 (signed). */
LLVMValueRef kc_ir_add(kc_ir *ir, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef kc_ir_sub(kc_ir *ir, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef kc_ir_mul(kc_ir *ir, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef kc_ir_min(kc_ir *ir, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef kc_ir_max(kc_ir *ir, LLVMValueRef a, LLVMValueRef b);
LLVMValueRef kc_ir_cdiv(kc_ir *ir, LLVMValueRef a, LLVMValueRef b);      /* ceil(a/b), a>=0 */
LLVMValueRef kc_ir_roundup(kc_ir *ir, LLVMValueRef a, int64_t multiple); /* a >= 0 */
LLVMValueRef kc_ir_lt(kc_ir *ir, LLVMValueRef a, LLVMValueRef b);

/* Vectors. */
LLVMValueRef kc_ir_splat(kc_ir *ir, LLVMValueRef scalar, unsigned lanes);
/* <lanes x i1>: lane + offset < limit (limit an i64 value; offset + lanes < 2^31). */
LLVMValueRef kc_ir_lane_mask(kc_ir *ir, unsigned lanes, int64_t offset, LLVMValueRef limit);
/* <lanes x i64> constant 0, 1, ..., lanes-1 scaled by stride and added to a splat of base. */
LLVMValueRef kc_ir_iota(kc_ir *ir, unsigned lanes, LLVMValueRef base, LLVMValueRef stride);
/* a * b + c, fused where the target has FMA (llvm.fmuladd). */
LLVMValueRef kc_ir_fmuladd(kc_ir *ir, LLVMValueRef a, LLVMValueRef b, LLVMValueRef c);
LLVMValueRef kc_ir_masked_load(kc_ir *ir, LLVMTypeRef vt, LLVMValueRef p, unsigned align,
                               LLVMValueRef mask, LLVMValueRef passthru);
void kc_ir_masked_store(kc_ir *ir, LLVMValueRef v, LLVMValueRef p, unsigned align,
                        LLVMValueRef mask);
LLVMValueRef kc_ir_masked_gather(kc_ir *ir, LLVMTypeRef vt, LLVMValueRef ptrs, unsigned align,
                                 LLVMValueRef mask, LLVMValueRef passthru);
/* Prefetch p for writing (rw 1) or reading (rw 0) into L1. */
void kc_ir_prefetch(kc_ir *ir, LLVMValueRef p, int rw);
/* Call intrinsic name overloaded on types[0..ntypes). */
LLVMValueRef kc_ir_intrinsic(kc_ir *ir, const char *name, LLVMTypeRef *types, unsigned ntypes,
                             LLVMValueRef *args, unsigned nargs);

/* ---- matmul.c ---------------------------------------------------------------------------------
 */

/* Flags of kc_matmul_emit. */
enum {
  KC_MM_EMIT_INTERNAL = 1 << 0, /* internal linkage */
  /* args has two more slots: an epilogue ep(ctx, c, ldc, row, col, mr, nr) (NULL: none) and
   * its ctx, called on each tile of C once it is final (see matmul.c) */
  KC_MM_EMIT_EP_HOOK = 1 << 1,
  KC_MM_EMIT_F16 = 1 << 2,  /* A and B are f16 (widened as they are packed); C stays f32 */
  KC_MM_EMIT_BF16 = 1 << 3, /* the same for bf16 */
};
/*
 * Emit the f32 matmul (kc_matmul_fn ABI, see codegen.h) as function `name` into ir's module,
 * with internal helpers name_*; for graph lowering, where a wrapper with the node kernel ABI
 * fills the args vector and calls it. Fills out (fn NULL) and *fn. Moves the builder.
 */
kc_status kc_matmul_emit(kc_cpu *cpu, kc_ir *ir, const char *name, const kc_matmul_cfg *cfg,
                         unsigned flags, kc_matmul_kernel *out, LLVMValueRef *fn);
/* MTILE for an m x n product shared by t threads (i64 values), as kc_matmul_args_split. */
LLVMValueRef kc_matmul_emit_mtile(kc_ir *ir, const kc_matmul_kernel *k, LLVMValueRef m,
                                  LLVMValueRef n, LLVMValueRef t);

/* ---- structured control flow ------------------------------------------------------------- */

#define KC_LOOP_MAX_CARRY 64

/*
 * for (iv = start; iv < end; iv += step) with values carried around the loop (accumulators).
 * After kc_loop_begin the builder is in the body and carry[] are the values at the top of an
 * iteration; after kc_loop_end it is after the loop and carry[] are the values on exit.
 * step NULL: the body computes the next iv itself and passes it to kc_loop_end_next.
 */
typedef struct kc_loop {
  LLVMBasicBlockRef head, body, exit;
  LLVMValueRef iv, step;
  unsigned ncarry;
  LLVMValueRef carry[KC_LOOP_MAX_CARRY];
} kc_loop;

LLVMValueRef kc_loop_begin(kc_ir *ir, kc_loop *l, LLVMValueRef start, LLVMValueRef end,
                           LLVMValueRef step, unsigned ncarry, const LLVMValueRef *init);
void kc_loop_end(kc_ir *ir, kc_loop *l, const LLVMValueRef *next);
void kc_loop_end_next(kc_ir *ir, kc_loop *l, LLVMValueRef next_iv, const LLVMValueRef *next);

/* if (cond) { then } [else { els }]: begin leaves the builder in "then". */
typedef struct kc_if {
  LLVMBasicBlockRef then, els, merge;
  bool in_else;
} kc_if;

void kc_if_begin(kc_ir *ir, kc_if *c, LLVMValueRef cond);
void kc_if_else(kc_ir *ir, kc_if *c);
void kc_if_end(kc_ir *ir, kc_if *c);

#endif /* KERNC_CODEGEN_CPU_H */

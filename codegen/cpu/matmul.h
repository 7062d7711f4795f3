/*
 * codegen/cpu/matmul.h - private to the f32 matmul core (matmul.c: blocking, micro-kernel,
 * entry; matmul_pack.c: the packing routines): the generator state they share.
 *
 * Invariants: the helpers of one core are named NAME_suffix (unique per module); the blocking
 * fields are resolved (kc_matmul_cfg_resolve) before any helper is emitted; NR = NV * W.
 * Every read of A or B goes through mm_src_*, so the element type is one switch.
 */
#ifndef KERNC_CODEGEN_CPU_MATMUL_H
#define KERNC_CODEGEN_CPU_MATMUL_H

#include "cpu.h"

/* The most rows the small-M path takes (kc_matmul_cfg.small_m is capped to it). */
enum { MM_SMALL_MAX = 12 };

typedef struct mm_gen {
  kc_ir *ir;
  const char *name; /* the entry point; helpers are name_ukernel, name_pack_a, ... */
  int W, MR, NV, NR, KC, MC, NC, U;
  int VR;          /* architectural vector registers */
  int MS;          /* products of at most MS rows take the small-M path (matmul_small.c); 0: none */
  unsigned balign; /* alignment of packed B vectors: NR*4 bytes apart from a 64-byte base */
  bool hook;       /* the entry reads an epilogue hook after the args (KC_MM_EMIT_EP_HOOK) */
  LLVMTypeRef vt;
  LLVMTypeRef st; /* element type of A and B in memory: float, or half / bfloat widened when
                   * packed (KC_MM_EMIT_F16 / _BF16); C and the packed panels are f32 */
  unsigned esz;   /* its size in bytes */
  LLVMValueRef ukernel, pack_a, pack_b, block, small;
} mm_gen;

/* Start internal helper NAME_suffix. */
LLVMValueRef mm_helper(mm_gen *g, const char *suffix, LLVMTypeRef *params, unsigned n);

/* &p[idx] over A's / B's element type. */
LLVMValueRef mm_src_gep(mm_gen *g, LLVMValueRef p, LLVMValueRef idx);
/* W elements of A or B at p (masked when mask is given; off lanes read 0), as f32. */
LLVMValueRef mm_src_load(mm_gen *g, LLVMValueRef p, LLVMValueRef mask);
/* One element, as f32. */
LLVMValueRef mm_src_load1(mm_gen *g, LLVMValueRef p);
/* W elements at the pointers of ptrs (mask: the lanes to read), as f32. */
LLVMValueRef mm_src_gather(mm_gen *g, LLVMValueRef ptrs, LLVMValueRef mask);

/* The epilogue hook's type: void ep(ctx, c, ldc, row, col, mr, nr). */
LLVMTypeRef mm_ep_type(kc_ir *ir);

/* pack_a(ap, a, rsa, csa, mc, kc): the MC x KC block of A as MR-tall column panels. */
void mm_emit_pack_a(mm_gen *g);
/* pack_b(bp, b, rsb, csb, kc, nr): one KC x NR panel of B (nr <= NR columns valid). */
void mm_emit_pack_b(mm_gen *g);

/*
 * small(a, b, c, m, n, k, rsa, csa, rsb, csb, ldc, ep, ctx, row0, col0): C[m x n] = A @ B
 * for 1 <= m <= MS, k >= 1, and B either row-major (csb 1) or transposed with A's rows
 * contiguous (rsb 1, csa 1), streaming B as stored; then the hook over the block (ep NULL:
 * none). The caller checks those conditions (mm_small_ok).
 */
void mm_emit_small(mm_gen *g);
/* Whether a product of m rows (the whole product's, not a row tile's) takes small(). */
LLVMValueRef mm_small_ok(mm_gen *g, LLVMValueRef m, LLVMValueRef k, LLVMValueRef csa,
                         LLVMValueRef rsb, LLVMValueRef csb);

#endif /* KERNC_CODEGEN_CPU_MATMUL_H */

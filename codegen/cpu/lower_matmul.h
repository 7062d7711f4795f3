/*
 * codegen/cpu/lower_matmul.h - private to the matmul family (lower_matmul.c, lower_matmul_ep.c,
 * lower_matmul_half.c, lower_matmul_gen.c): the compile-time plan of one matmul / gemm / matmul_ep
 * node and the epilogue every kernel of the family applies to its output.
 *
 * Shapes, as ONNX MatMul: A [..., M, K] @ B [..., K, N] -> [..., M, N]; a 1-D A is [1, K] and a
 * 1-D B is [K, 1], and the added dim is not in the output. The output's batch dims (nb of them,
 * leading) broadcast A's and B's numpy-style. gemm is 2-D only, with transposes.
 *
 * Epilogue, applied in registers before the output is written (generic path) or by a hook the
 * f32 core calls on each register tile once it is final (still in L1):
 *   gemm:       y = alpha * y + beta * C      (C broadcast to [M, N])
 *   matmul_ep:  y = act(y + bias) * scale + residual  (each broadcast to the output)
 * Operands are addressed by an output row R (the output viewed as [rows, N]) and a column j:
 * element offset = row offset of R (per operand) + j * column stride.
 *
 * Invariants: every value the kernels compute at run time comes from the node's dims through
 * kc_emit_dim, so static dims are constants and the units function and the kernel agree.
 */
#ifndef KERNC_CODEGEN_CPU_LOWER_MATMUL_H
#define KERNC_CODEGEN_CPU_LOWER_MATMUL_H

#include "codegen/cpu/emit.h"

enum { MM_ACT_NONE, MM_ACT_RELU, MM_ACT_GELU, MM_ACT_GELU_TANH };
/* How an epilogue operand is addressed along output rows / along N. */
enum { MM_ROWS_ZERO, MM_ROWS_SAME, MM_ROWS_GENERAL };
enum { MM_COLS_SPLAT, MM_COLS_UNIT, MM_COLS_RUNTIME };
/* Epilogue operands: gemm's C; matmul_ep's bias, residual and scale (its inputs 2, 3, 4). */
enum { MM_EP_BIAS, MM_EP_RES, MM_EP_SCALE, MM_EP_NX };

typedef struct mm_ep_in {
  int in;   /* node input index; -1: absent */
  int rows; /* MM_ROWS_*: zero (broadcast), same shape as the output, or per-axis strides */
  int cols; /* MM_COLS_*: one element per row, contiguous, or a stride known at run time */
} mm_ep_in;

typedef struct mm_plan {
  kc_dtype dt;
  bool gemm, ta, tb;
  int ra, rb, ro; /* ranks of A, B and the output as given (1-D not promoted) */
  int nb;         /* batch dims of the output (leading) */
  bool has_n;     /* the output has an N axis (B is not 1-D) */
  /* f32 core: out batch dims [0, outer) are looped by the wrapper, [outer, nb) are the core's
   * batch, where A and B are each either fully batched or broadcast. */
  int outer;
  bool a_full, b_full;
  bool fold; /* A batched, B broadcast over the core batch: one matmul with M = batch * M */
  /* N is 1 and A's rows are contiguous: every dtype takes lower_matmul_gen.c's dot products
   * (the f32 core would compute a whole zero-padded column panel per output column). */
  bool dot;
  /* Every product has at most 2 rows (static) and B is not transposed: f16/bf16 take the loop
   * nest, which streams B once per row; f32 takes the core, whose small-M path streams B
   * faster (matmul_small.c). */
  bool few_rows;
  /* epilogue */
  bool ep;
  int act;
  double alpha, beta;
  mm_ep_in x[MM_EP_NX]; /* gemm: x[0] = C; matmul_ep: x[MM_EP_*] = input 2 + MM_EP_* */
} mm_plan;

/* Run-time facts of the epilogue, built once in the kernel's entry block. */
typedef struct mm_ep_rt {
  int nrow;                       /* output axes that make up a row index */
  LLVMValueRef rdim[KC_MAX_RANK]; /* their extents */
  LLVMValueRef n;                 /* row length of the output (1 without an N axis) */
  LLVMValueRef ptr[MM_EP_NX];
  LLVMValueRef rstr[MM_EP_NX][KC_MAX_RANK]; /* MM_ROWS_GENERAL: element stride per row axis */
  LLVMValueRef cstr[MM_EP_NX];              /* MM_COLS_RUNTIME: stride along N (0 or 1) */
} mm_ep_rt;

/* ---- lower_matmul_ep.c ------------------------------------------------------------------- */

/* Classify the epilogue operands of p (fills p->x[].rows/cols from the static shapes). */
void mm_ep_plan(const kc_cpu_emit *e, mm_plan *p);
/* Build the run-time facts in the current function (dims: its dims pointer). */
void mm_ep_init(kc_cpu_emit *e, const mm_plan *p, LLVMValueRef dims, mm_ep_rt *rt);
/* Row offsets of the operands for output row r (i64; offs has MM_EP_NX entries). */
void mm_ep_row(kc_cpu_emit *e, const mm_plan *p, const mm_ep_rt *rt, LLVMValueRef r,
               LLVMValueRef *offs);
/* The epilogue on v (compute type, `lanes` lanes) at columns j.. of the row; mask: NULL or
 * the lanes that exist (others may read nothing). */
LLVMValueRef mm_ep_apply(kc_cpu_emit *e, const mm_plan *p, const mm_ep_rt *rt,
                         const LLVMValueRef *offs, LLVMValueRef j, unsigned lanes,
                         LLVMValueRef mask, LLVMValueRef v);
/* Slots (8 bytes each) of the ctx the f32 kernel hands its epilogue hook. */
enum { MM_EP_CTX_BUFS, MM_EP_CTX_DIMS, MM_EP_CTX_ROW, MM_EP_CTX_SLOTS };
/* Emit NAME_ep, the f32 core's epilogue hook for the node, for tiles up to nr_max columns
 * (builder left in it); returns the function. */
LLVMValueRef mm_ep_hook_emit(kc_cpu_emit *e, const mm_plan *p, int nr_max);
/* Masked (mask non-NULL) or plain load / store of `lanes` elements in compute type. */
LLVMValueRef mm_load(kc_cpu_emit *e, kc_dtype t, LLVMValueRef p, LLVMValueRef idx, unsigned lanes,
                     LLVMValueRef mask);
void mm_store(kc_cpu_emit *e, kc_dtype t, LLVMValueRef p, LLVMValueRef idx, LLVMValueRef v,
              unsigned lanes, LLVMValueRef mask);

/* ---- lower_matmul.c: shared shape helpers ---------------------------------------------------- */

/* M, N and K of one matrix product of the node, as i64 values. */
void mm_mnk(kc_cpu_emit *e, const mm_plan *p, LLVMValueRef dims, LLVMValueRef *m, LLVMValueRef *n,
            LLVMValueRef *k);
/* Element stride of A (which 0) or B (which 1) along output batch dim d; 0 where it broadcasts. */
LLVMValueRef mm_batch_stride(kc_cpu_emit *e, const mm_plan *p, LLVMValueRef dims, int which, int d);
/* Row / column strides of A and B inside one matrix (transposes of gemm included). */
void mm_strides(kc_cpu_emit *e, const mm_plan *p, LLVMValueRef m, LLVMValueRef n, LLVMValueRef k,
                LLVMValueRef *rsa, LLVMValueRef *csa, LLVMValueRef *rsb, LLVMValueRef *csb);
/* Start NAME_units(dims) -> i64; returns its dims parameter (the builder is in its entry). */
LLVMValueRef mm_units_begin(kc_cpu_emit *e);

/* ---- lower_matmul_half.c ------------------------------------------------------------------ */

/* f16 / bf16 products on the packed core (NAME and NAME_units). */
kc_status mm_lower_half(kc_cpu_emit *e, const mm_plan *p);

/* ---- lower_matmul_gen.c ---------------------------------------------------------------------- */

/* The loop-nest kernel for f64 and integers, dot products, and f16/bf16 with 1-2 rows. */
kc_status mm_lower_generic(kc_cpu_emit *e, const mm_plan *p);

#endif /* KERNC_CODEGEN_CPU_LOWER_MATMUL_H */

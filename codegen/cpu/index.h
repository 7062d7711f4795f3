/*
 * codegen/cpu/index.h - multi-index helpers shared by the data-movement emitters (transpose,
 * gather, concat/split, slice/expand, trilu, shape ops); private to them.
 *
 * Most movement kernels are one "index map": the destination is contiguous and row-major, and
 * destination element (d0, ..., dn-1) reads source element base + sum dk * stride_k. Transpose
 * permutes the strides, slice scales them by the steps and moves the base to the starts,
 * expand zeroes the broadcast ones. kc_idx_map_copy runs such a map over rows of the last
 * axis cut into chunks of KC_IDX_CHUNK elements; a row whose source stride is 1 becomes a
 * memcpy, stride 0 a fill, anything else a strided loop.
 *
 * Data movement never converts: elements move as integers of their storage size
 * (kc_idx_elem_type), so one kernel shape serves every dtype of that size; bool is 1 byte.
 *
 * Invariants: indices, extents and strides are i64 element counts (never bytes); extents are
 * >= 0; helpers emit at the builder's insertion point and leave it after what they emitted;
 * the source and destination of a copy never overlap (a movement op's output has its own
 * buffer).
 */
#ifndef KERNC_CODEGEN_CPU_INDEX_H
#define KERNC_CODEGEN_CPU_INDEX_H

#include "codegen/cpu/emit.h"

/* Elements per work unit along a long row: enough to amortize the per-unit index math. */
#define KC_IDX_CHUNK 4096

/* The integer type of t's storage size (i8, i16, i32, i64). */
LLVMTypeRef kc_idx_elem_type(kc_ir *ir, kc_dtype t);

/*
 * Extents of input i (out false) or output i as an index space of rank >= 1: a scalar is
 * one element of extent 1. Returns that rank.
 */
int kc_idx_dims(kc_cpu_emit *e, LLVMValueRef dims, bool out, uint32_t i, LLVMValueRef *ext);
/* Row-major element strides of extents ext[0..n): the last is 1. */
void kc_idx_strides(kc_ir *ir, int n, const LLVMValueRef *ext, LLVMValueRef *strides);
/* Product of ext[0..n) (1 when n is 0). */
LLVMValueRef kc_idx_prod(kc_ir *ir, int n, const LLVMValueRef *ext);

/* Multi-index of lin (< product of ext) in row-major order over ext[0..n). */
void kc_idx_unravel(kc_ir *ir, LLVMValueRef lin, int n, const LLVMValueRef *ext, LLVMValueRef *idx);
/* The next multi-index in row-major order (the last coordinate moves fastest). */
void kc_idx_next(kc_ir *ir, int n, const LLVMValueRef *ext, LLVMValueRef *idx);
/* base + sum idx[k] * strides[k] (base may be NULL for 0). */
LLVMValueRef kc_idx_dot(kc_ir *ir, int n, const LLVMValueRef *idx, const LLVMValueRef *strides,
                        LLVMValueRef base);
/* Load an integer scalar of dtype t at p[idx] (i8..i64, signed or not) as an i64. */
LLVMValueRef kc_idx_load_i64(kc_cpu_emit *e, kc_dtype t, LLVMValueRef p, LLVMValueRef idx);

/*
 * Copy count elements of type et: dst[doff + j] = src[soff + j * sstride]. A constant sstride
 * picks the loop at compile time, a run-time one at run time.
 */
void kc_idx_copy_run(kc_ir *ir, LLVMTypeRef et, LLVMValueRef dst, LLVMValueRef doff,
                     LLVMValueRef src, LLVMValueRef soff, LLVMValueRef sstride, LLVMValueRef count);
/* dst[doff + j] = v (of type et) for j < count. */
void kc_idx_fill_run(kc_ir *ir, LLVMValueRef dst, LLVMValueRef doff, LLVMValueRef v,
                     LLVMValueRef count);

/* A strided map from a contiguous destination to its source (see the top of this file). */
typedef struct kc_idx_map {
  int rank;                         /* 1..KC_MAX_RANK */
  LLVMValueRef dim[KC_MAX_RANK];    /* extents of the destination */
  LLVMValueRef stride[KC_MAX_RANK]; /* source element stride along each destination axis */
  LLVMValueRef base;                /* source offset of destination element 0 */
} kc_idx_map;

/* Work units of kc_idx_map_copy over extents dim[0..rank): rows of dim[rank-1], chunked. */
LLVMValueRef kc_idx_map_units(kc_ir *ir, int rank, const LLVMValueRef *dim);
/* Run map m from src to dst over the kernel's units [e->p_begin, e->p_end). */
void kc_idx_map_copy(kc_cpu_emit *e, LLVMTypeRef et, LLVMValueRef src, LLVMValueRef dst,
                     const kc_idx_map *m);

#endif /* KERNC_CODEGEN_CPU_INDEX_H */

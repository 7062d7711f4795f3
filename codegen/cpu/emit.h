/*
 * codegen/cpu/emit.h - the contract between the CPU lowering driver and the emitter families
 * named in the CPU column of ir/ops.def.
 *
 * Kernel ABI. Every kernel, whatever its op, is two functions in the module:
 *
 *   int64_t NAME(void *const *bufs, const int64_t *dims, void *ws, int64_t begin, int64_t end);
 *   int64_t NAME_units(const int64_t *dims);
 *
 *   bufs  the node's inputs then its outputs (an absent optional input is NULL).
 *   dims  the concrete dims of the node's inputs then outputs, each value's rank entries back to
 *         back (an absent input contributes none); kc_cpu_emit.in_dims/out_dims give offsets.
 *   ws    per-thread scratch of ws_bytes bytes, 64-byte aligned, or NULL when ws_bytes is 0.
 *   A kernel with shared_bytes > 0 also gets bufs[inputs + outputs]: scratch of that many bytes,
 *   64-byte aligned, common to every unit of one launch (whatever thread runs it), whose first
 *   shared_zero bytes are zero when the launch begins and the rest hold garbage. It is how units
 *   of one launch hand results to each other without a barrier (atomic counters there, the last
 *   unit to arrive finishing the work: kv_cache.c's flash-decoding merge); units must synchronize
 *   through atomics themselves, and the results must not depend on which thread arrives last.
 *   The runtime runs NAME over the work units [0, NAME_units(dims)), split by the thread pool
 *   (grain: see kc_cpu_emit); a kernel touches only what its units own, so any split is valid.
 *   NAME returns 0. A kernel that reads memory through indices it is given as data (Gather's
 *   indices, rotary's position ids) checks them: it returns 1 + the flat position (in its
 *   indices input) of an index out of range that it met in [begin, end), the first in its own
 *   order (so the same range always reports the same one), and never uses that index to address
 *   memory. It declares the check with check_in / check_dim (kc_cpu_emit), so the runtime can
 *   name the index and the bound in its error (runtime/index_error.c).
 *
 * Dims that are integers in the graph are baked into the code as constants (kc_emit_dim), so
 * static shapes get fully specialised kernels and symbolic ones still run.
 *
 * Storage vs compute types: bool is i8 in memory and i1 in scalar math; f16/bf16 are loaded
 * into f32 and stored back rounded; everything else computes in its own type. kc_emit_load /
 * kc_emit_store do the conversions, so scalar functions only ever see compute types.
 *
 * Invariants: emitters never allocate at run time, never call back into kernc, and define
 * exactly NAME and NAME_units (plus internal helpers with names starting with NAME_). An
 * internal helper shared by many kernels of a module is defined once under a kc_ name and
 * looked up first (the f32 matmul core, kc_matmul_core_f32: see lower_matmul.c).
 */
#ifndef KERNC_CODEGEN_CPU_EMIT_H
#define KERNC_CODEGEN_CPU_EMIT_H

#include "codegen/cpu/cpu.h"

typedef struct kc_cpu_emit {
  kc_cpu *cpu;
  kc_ir *ir; /* module being filled */
  const kc_graph *g;
  const kc_node *n;
  const char *name;         /* kernel symbol; the units function is NAME_units */
  const uint32_t *in_dims;  /* offset of input i's dims in `dims` (n->nin entries) */
  const uint32_t *out_dims; /* offset of output i's dims (n->nout entries) */

  /* Parameters of the kernel function being emitted (valid after kc_emit_kernel_begin). */
  LLVMValueRef p_bufs, p_dims, p_ws, p_begin, p_end;

  /* Set by the emitter. */
  int64_t grain;     /* 0: one contiguous range per thread; > 0: dynamic chunks of grain units */
  int64_t ws_bytes;  /* per-thread scratch */
  bool no_kernel;    /* views and sources: nothing to run, the runtime aliases or binds data */
  int check_in;      /* the input holding checked indices (see the ABI above); -1: none */
  int64_t check_dim; /* offset in dims of the size bounding them ([-size, size) are valid) */
  /* scratch common to every unit of one launch (see the ABI; 0: none), and the bytes at its
   * start that are zero when a launch begins */
  int64_t shared_bytes, shared_zero;
} kc_cpu_emit;

/* An emitter family (CPU column, first field). */
typedef kc_status (*kc_cpu_emit_fn)(kc_cpu_emit *e);
/*
 * Elementwise math of one op (CPU column, second field): args are compute-typed scalars or
 * vectors of one width; in is the dtype of input 0, out the node's output dtype.
 */
typedef LLVMValueRef (*kc_scalar_fn)(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,
                                     LLVMValueRef *args);

#define OP(id, ...)
#define CPU(family, scalar)                                                                        \
  kc_status kc_lower_##family(kc_cpu_emit *e);                                                     \
  LLVMValueRef kc_scalar_##scalar(kc_ir *ir, const kc_node *n, kc_dtype in, kc_dtype out,          \
                                  LLVMValueRef *args);
#include "ir/ops.def"
#undef CPU
#undef OP

typedef struct kc_cpu_op {
  kc_cpu_emit_fn emit;
  kc_scalar_fn scalar; /* kc_scalar_none for non-elementwise ops */
} kc_cpu_op;

/* The CPU column, indexed by kc_op. */
extern const kc_cpu_op kc_cpu_ops[KC_OP_COUNT];

/* ---- emit_common.c: helpers every family uses ------------------------------------------- */

/* LLVM storage type of a dtype (bool: i8, f16: half, bf16: bfloat). */
LLVMTypeRef kc_emit_storage_type(kc_ir *ir, kc_dtype t);
/* LLVM compute type (bool: i1, f16/bf16: float). */
LLVMTypeRef kc_emit_compute_type(kc_ir *ir, kc_dtype t);
/* The same, as a vector of lanes elements when lanes > 1. */
LLVMTypeRef kc_emit_vec_type(LLVMTypeRef scalar, unsigned lanes);

/* Start NAME with the kernel ABI; sets e->p_*. The builder is left in the entry block. */
void kc_emit_kernel_begin(kc_cpu_emit *e);
/* Finish the kernel function (ret i64 0). */
void kc_emit_kernel_end(kc_cpu_emit *e);
/*
 * Index checks (see the ABI above): idx (i64, as loaded from indices input `in`) against the
 * size len (i64): returns idx made non-negative (idx + len below 0), after returning
 * 1 + pos (i64, the index's flat position in input `in`) from the kernel when idx is outside
 * [-len, len). Sets e->check_in and e->check_dim (dim `axis` of input `bound_in`).
 */
LLVMValueRef kc_emit_checked_index(kc_cpu_emit *e, LLVMValueRef idx, LLVMValueRef len,
                                   LLVMValueRef pos, uint32_t in, uint32_t bound_in, int axis);
/* Define NAME_units as the product of output `out`'s dims [from, to) (1 when empty). */
void kc_emit_units_outer(kc_cpu_emit *e, uint32_t out, int from, int to);
/* Define NAME_units returning the i64 that build(e, dims) computes from the dims pointer. */
void kc_emit_units_custom(kc_cpu_emit *e, LLVMValueRef (*build)(kc_cpu_emit *e, LLVMValueRef dims));

/*
 * Dim `axis` of input i (out = false) or output i (out = true), as an i64: a constant when the
 * graph knows it, else loaded from dims. `dims` is the kernel's (or units function's) pointer.
 */
LLVMValueRef kc_emit_dim(kc_cpu_emit *e, LLVMValueRef dims, bool out, uint32_t i, int axis);
/* Product of dims [from, to) of that value (i64 1 when empty). */
LLVMValueRef kc_emit_numel(kc_cpu_emit *e, LLVMValueRef dims, bool out, uint32_t i, int from,
                           int to);
/* Pointer to input i / output i (from e->p_bufs). */
LLVMValueRef kc_emit_in_ptr(kc_cpu_emit *e, uint32_t i);
LLVMValueRef kc_emit_out_ptr(kc_cpu_emit *e, uint32_t i);
/* The launch's shared scratch (an emitter that set shared_bytes; see the ABI above). */
LLVMValueRef kc_emit_shared_ptr(kc_cpu_emit *e);

/*
 * Load element idx (i64) of a buffer of dtype t as its compute type; lanes > 1 loads that many
 * consecutive elements as a vector. Store is the converse (rounding f32 to f16/bf16).
 */
LLVMValueRef kc_emit_load(kc_cpu_emit *e, kc_dtype t, LLVMValueRef ptr, LLVMValueRef idx,
                          unsigned lanes);
void kc_emit_store(kc_cpu_emit *e, kc_dtype t, LLVMValueRef ptr, LLVMValueRef idx, LLVMValueRef v,
                   unsigned lanes);
/* Convert a compute value between dtypes (Cast semantics: float->int truncates, ->bool is != 0). */
LLVMValueRef kc_emit_convert(kc_ir *ir, LLVMValueRef v, kc_dtype from, kc_dtype to);
/* A compute-typed constant of dtype t (splat over lanes when lanes > 1). */
LLVMValueRef kc_emit_const(kc_ir *ir, kc_dtype t, double v, unsigned lanes);

#endif /* KERNC_CODEGEN_CPU_EMIT_H */

/*
 * codegen/codegen.h - kernc-internal API of the code generators (CPU now, CUDA later).
 *
 * Callers (the executor, tests, benchmarks) see no LLVM type here: a kc_cpu is the host target
 * (ORC LLJIT, host target machine, host facts), and each emitter returns a plain function
 * pointer to generated code plus what the caller must provide to run it.
 *
 * Kernel ABI (every CPU kernel): a function over buffer pointers and a range [begin, end) of
 * its outer loop, counted in "work units" the kernel defines. The thread pool splits
 * [0, units) into ranges; the kernel never knows about threads. Scratch memory (packing
 * buffers) comes from the caller as a workspace pointer: one private slice per concurrent call,
 * so nothing allocates inside a run.
 *
 * Invariants:
 *   - A kc_cpu owns every kernel it compiled; kernel pointers die with kc_cpu_free.
 *   - A kc_cpu is used from one thread at a time for compiling; the compiled kernels may run
 *     on any number of threads at once (they keep no state outside their arguments).
 */
#ifndef KERNC_CODEGEN_H
#define KERNC_CODEGEN_H

#include "codegen/plan.h"
#include "kernc.h"

#include <stdint.h>

/* ---- host CPU target ------------------------------------------------------------------------ */

typedef struct kc_cpu kc_cpu;

/* What the emitters size their kernels by. */
typedef struct kc_cpu_info {
  char name[64];  /* LLVM's name of the CPU ("sapphirerapids"; kc_cpu_new_for's when named) */
  int f32_lanes;  /* f32 lanes of the widest usable vector: 16 AVX-512, 8 AVX2, 4 SSE */
  int vec_regs;   /* architectural vector registers: 32 with AVX-512, else 16 */
  int has_fma;    /* fused multiply-add in hardware */
  int has_vnni;   /* AVX-512 VNNI: vpdpbusd, 4 u8 x s8 products summed into each i32 lane */
  long l1d_bytes; /* per core; a guess when the OS does not say */
  long l2_bytes;  /* per core; a guess when the OS does not say */
} kc_cpu_info;

/* Create the host target: initializes LLVM's native target, builds the LLJIT. */
kc_status kc_cpu_new(kc_context *ctx, kc_cpu **out);
/* kc_cpu_new for CPU cpu_name (NULL or "native": the host; else kc_cpu_check_name's names): code,
 * kc_cpu_host's facts (but the caches) and an AOT object's recorded features are that CPU's. */
kc_status kc_cpu_new_for(kc_context *ctx, const char *cpu_name, kc_cpu **out);
/* KC_OK when kc_cpu_new_for knows name: native, or an LLVM 19 x86-64 CPU name on x86-64
 * (x86-64-v2...v4, skylake-avx512, znver3, ...); else KC_ERR_INVALID_ARG saying what is. */
kc_status kc_cpu_check_name(kc_context *ctx, const char *name);
/* Free the target and all code it compiled. NULL is fine. */
void kc_cpu_free(kc_cpu *cpu);
/* Facts about the CPU the kernels are for (the host, or kc_cpu_new_for's). */
const kc_cpu_info *kc_cpu_host(const kc_cpu *cpu);
/* Write NAME.ll (optimized IR) and NAME.s of every later module into dir (NULL: stop). */
kc_status kc_cpu_set_dump_dir(kc_cpu *cpu, const char *dir);

/* ---- matmul (f32) -------------------------------------------------------------------------- */

/*
 * Indices into the int64 argument vector of a matmul kernel. All counts are in elements.
 * C[b] (M x N, row stride LDC, column stride 1) = A[b] (M x K) @ B[b] (K x N), for b < BATCH,
 * with A[b][i][k] at a + b*BSA + i*RSA + k*CSA and B[b][k][j] at b + b*BSB + k*RSB + j*CSB.
 * Transposed operands are only strides (RSA = 1 reads A^T). A batch stride of 0 broadcasts.
 * Work units are (batch, row tile of MTILE rows, column panel of kc_matmul_kernel.unit_n
 * columns), column panel fastest; MTILE = M gives whole-column splits, which packing prefers.
 */
enum {
  KC_MM_M,
  KC_MM_N,
  KC_MM_K,
  KC_MM_RSA,
  KC_MM_CSA,
  KC_MM_RSB,
  KC_MM_CSB,
  KC_MM_LDC,
  KC_MM_BATCH,
  KC_MM_BSA,
  KC_MM_BSB,
  KC_MM_BSC,
  KC_MM_MTILE,
  KC_MM_NARGS
};

/*
 * void kern(const float *a, const float *b, float *c, float *ws, const int64_t *args,
 *           int64_t begin, int64_t end)
 * computes the work units [begin, end) (within [0, kc_matmul_units)). ws: 64-byte aligned,
 * ws_floats floats, private to this call. C is overwritten (beta = 0); K = 0 zeroes it.
 * Calls on disjoint unit ranges write disjoint parts of C, so they may run concurrently.
 */
typedef void (*kc_matmul_fn)(const float *a, const float *b, float *c, float *ws,
                             const int64_t *args, int64_t begin, int64_t end);

/* Blocking of the generated matmul. Zero fields are chosen from the host. */
typedef struct kc_matmul_cfg {
  int mr;     /* rows of the register tile */
  int nv;     /* vectors per row of the register tile (NR = nv * lanes columns) */
  int kc;     /* depth of a packed panel (L1: a KC x NR slice of B stays there) */
  int mc;     /* rows of a packed A block (L2) */
  int nc;     /* columns of a packed B block (L3) */
  int unroll; /* unroll of the micro-kernel's k loop */
  /* products of at most this many rows stream B unpacked (matmul_small.c); < 0: never */
  int small_m;
} kc_matmul_cfg;

typedef struct kc_matmul_kernel {
  kc_matmul_fn fn;
  kc_matmul_cfg cfg; /* the blocking it was built with, zero fields resolved */
  int64_t unit_n;    /* columns per work unit (= NR) */
  int64_t ws_floats; /* workspace floats one call needs; a multiple of 16 (64 bytes) */
} kc_matmul_kernel;

/* The blocking kc_cpu_matmul would choose for this host, with cfg's nonzero fields kept. */
void kc_matmul_cfg_resolve(const kc_cpu *cpu, kc_matmul_cfg *cfg);
/* What a kernel generated with cfg looks like (fn NULL): resolved blocking, unit_n, ws_floats;
 * for callers that reuse a core already emitted into their module. */
void kc_matmul_describe(const kc_cpu *cpu, const kc_matmul_cfg *cfg, kc_matmul_kernel *out);
/* Generate, optimize and JIT a matmul kernel named name (unique per kc_cpu); cfg may be NULL. */
kc_status kc_cpu_matmul(kc_cpu *cpu, const char *name, const kc_matmul_cfg *cfg,
                        kc_matmul_kernel *out);
/* Fill args for plain row-major C[M,N] = A[M,K] @ B[K,N] (one batch, MTILE = M). */
void kc_matmul_args_rowmajor(int64_t *args, int64_t m, int64_t n, int64_t k);
/*
 * Set args' MTILE for a static split over `threads` threads: row tiles when every thread
 * gets enough rows (each thread then packs all of B, the cheaper operand to pack), else
 * whole columns (each packs all of A).
 */
void kc_matmul_args_split(const kc_matmul_kernel *k, int64_t *args, int threads);
/* Number of work units of one call with these args. */
int64_t kc_matmul_units(const kc_matmul_kernel *k, const int64_t *args);

/* ---- graph lowering (codegen/cpu/lower.c) ------------------------------------------------- */

/* The kernel ABI of codegen/cpu/emit.h, as the runtime sees it: 0, or for a kernel that checks
 * indices (check_in >= 0), 1 + the flat position in input check_in of an index outside
 * [-size, size), size = dims[check_dim], that it met in [begin, end). */
typedef int64_t (*kc_kernel_fn)(void *const *bufs, const int64_t *dims, void *ws, int64_t begin,
                                int64_t end);
typedef int64_t (*kc_units_fn)(const int64_t *dims);

/* The compiled kernel of one node. */
typedef struct kc_cpu_kernel {
  kc_kernel_fn fn;   /* NULL when no_kernel */
  kc_units_fn units; /* work units for the node's concrete dims */
  int64_t grain;     /* 0: one contiguous range per thread; > 0: chunks of grain units */
  int64_t ws_bytes;  /* per-thread scratch */
  int no_kernel;     /* views and sources: the runtime aliases or binds data */
  int check_in;      /* input holding indices the kernel checks; -1: none */
  int64_t check_dim; /* offset in the dims argument of the size bounding them */
  /* scratch common to a launch's units, its first shared_zero bytes zeroed (emit.h) */
  int64_t shared_bytes, shared_zero;
} kc_cpu_kernel;

struct kc_graph;
/*
 * Emit, optimize and JIT the kernels of every node of g in one module; kernels[i] is node i's.
 * The dims argument of node i's kernel holds the concrete dims of its inputs, then its outputs,
 * each value's rank entries back to back (absent optional inputs contribute none).
 */
kc_status kc_cpu_compile_graph(kc_cpu *cpu, const struct kc_graph *g, kc_cpu_kernel *kernels);

/* Symbol of node `index`'s kernel in g ("k3_matmul"), as the lowering names it. */
void kc_kernel_symbol(char *buf, size_t size, const struct kc_graph *g, uint32_t index);

/*
 * The dims function of a plan (codegen/plan.h), JIT'd: the one codegen/cpu/aot_dims.c writes into
 * a compiled model's object, slot i = slot_dims[i] of g from the symbols names[0..nsyms).
 */
kc_status kc_cpu_jit_dims(kc_cpu *cpu, const struct kc_graph *g, const kc_dim *slot_dims,
                          int64_t nslots, const char *const *names, int64_t nsyms,
                          kc_plan_dims_fn *out);

/* ---- ahead-of-time objects (codegen/cpu/aot_object.c) ------------------------------------- */

/* A graph lowered for an object file: the module of kc_cpu_compile_graph, not JIT'd. */
typedef struct kc_cpu_obj kc_cpu_obj;
struct kc_plan;
/* Lower every node of g (as kc_cpu_compile_graph does); kernels[] gets the static facts only. */
kc_status kc_cpu_obj_lower(kc_cpu *cpu, const struct kc_graph *g, kc_cpu_kernel *kernels,
                           kc_cpu_obj **out);
/* The most CPU variants one library holds (kc_export_options.cpu). */
#define KC_AOT_MAX_VARIANTS 8
/*
 * Add the tables of model (codegen/aot.h; its pointers are the caller's, its fn/units/weights/
 * eval_dims fields are ignored: the object gets the kernels of each step's node, the weights
 * file, and a dims function computing slot i as slot_dims[i] of g from the symbols
 * model->syms[]), optimize for the kc_cpu's CPU and write a position-independent object to
 * obj_path. weights_path (NULL when there are none) is pulled in by the assembler (.incbin), so
 * weights never pass through LLVM constants. The object is CPU variant `variant` of
 * `nvariants` (kc_aot_targets; 0 of 1 for one CPU): variant 0's holds the weights and the
 * entry points NAME_create/_run/_free/_error/_target over all variants; the others' only their
 * kernels and tables (weights_path only says whether there are weights: variant 0's are used).
 */
kc_status kc_cpu_obj_write(kc_cpu_obj *o, const struct kc_plan *model, const kc_dim *slot_dims,
                           const char *weights_path, int variant, int nvariants,
                           const char *obj_path);
/* Free the object's module. NULL is fine. */
void kc_cpu_obj_free(kc_cpu_obj *o);
/*
 * A causal decoder's decode step in the same object (kc_export): lower every node of dg (as
 * kc_cpu_obj_lower does; kernels[] gets the static facts) into o, its symbols prefixed so they
 * cannot clash with the model's; then, before kc_cpu_obj_write, the step's plan d (its tables as
 * model's: fn/units/weights/eval_dims ignored; its weights at offsets of the model's weights
 * file) and the slot dims of dg. kc_cpu_obj_write then adds the plan, a kc_plan_decode and the
 * session entry points (codegen/aot.h). dg and d must outlive the write. d NULL: no decode step
 * after all (a lowered one is left out).
 */
kc_status kc_cpu_obj_lower_decode(kc_cpu_obj *o, const struct kc_graph *dg, kc_cpu_kernel *kernels);
void kc_cpu_obj_set_decode(kc_cpu_obj *o, const kc_plan_decode *d, const kc_dim *slot_dims);
/*
 * The CUDA target (kc_export): an object without CPU kernels (host code for the architecture's
 * baseline CPU), whose steps the device blob at blob_path launches (codegen/aot_cuda.h; pulled
 * in like the weights); NAME_create is then kc_aot_cuda_create. Set the blob before writing.
 */
kc_status kc_cpu_obj_new(kc_cpu *cpu, const struct kc_graph *g, kc_cpu_obj **out);
kc_status kc_cpu_obj_set_cuda(kc_cpu_obj *o, const char *blob_path);

#endif /* KERNC_CODEGEN_H */

/*
 * codegen/cuda/emit.h - the contract between the CUDA program builder (program.c) and the
 * emitter families named in the CUDA column of ir/ops.def, and the helpers they share.
 *
 * An emitter writes one kernel of the ABI in codegen/cuda/cuda.h as CUDA C text into e->t:
 * kc_cu_begin opens `extern "C" __global__ void NAME(const kc_args<NB, ND> a) {`, the emitter
 * writes the body (usually one grid-stride loop over a.units: KC_THREADS, KC_WARPS or
 * KC_BLOCKS of the device library), kc_cu_end closes it. It also fills e->launch (how units
 * follow from the dims, threads per block) and sets e->sections for the device library parts
 * it calls beyond the common one (prelude.c).
 *
 * Types in the generated code: every dtype has a storage type (f16 __half, bf16 __nv_bfloat16,
 * bool unsigned char, the others their C type) and a compute type (f16/bf16 float, bool bool,
 * the others themselves). kc_cu_load converts storage to compute, kc_cu_store back (rounding to
 * nearest even for f16/bf16), so the math only sees compute types.
 *
 * Dims: kc_cu_dim gives an integer literal when the graph knows the dim, else a.d[k], so static
 * shapes get specialised kernels and symbolic ones still run (the CPU emitters' rule).
 *
 * Invariants: an emitter writes only through e->t (its text may be thrown away), never allocates
 * device memory, and its kernel touches only what its units own (any grid is valid). A failing
 * emitter returns the status of kc_node_errorf naming the node.
 */
#ifndef KERNC_CODEGEN_CUDA_EMIT_H
#define KERNC_CODEGEN_CUDA_EMIT_H

#include "codegen/cuda/cuda.h"
#include "ir/internal.h"

/* ---- text ----------------------------------------------------------------------------------- */

/* A growing string; oom is sticky and checked once by the builder. */
typedef struct kc_cu_text {
  char *p;
  size_t len, cap;
  bool oom;
} kc_cu_text;

void kc_cu_printf(kc_cu_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kc_cu_puts(kc_cu_text *t, const char *s);
void kc_cu_text_free(kc_cu_text *t);

/* ---- device library sections (beyond the common prelude, which every program has) -------- */

enum {
  KC_CU_SEC_MATMUL = 1u << 0,    /* kc_mm_tile: the shared-memory tiled product */
  KC_CU_SEC_ATTENTION = 1u << 1, /* kc_att_tile, kc_attention: FlashAttention-style templates */
  KC_CU_SEC_KV_CACHE = 1u << 2,  /* kc_attention_cache, kc_kv_store (needs the attention one) */
  KC_CU_NSECTIONS = 3
};
/* The common prelude and the sections' text (prelude.c, matmul.c, attention.c, kv_cache.c). */
extern const char kc_cu_prelude[];
extern const char kc_cu_sec_matmul[];
extern const char kc_cu_sec_attention[];
extern const char kc_cu_sec_kv_cache[];

/* ---- the emitter ---------------------------------------------------------------------------- */

#define KC_CU_RING 24
#define KC_CU_RING_LEN 256

typedef struct kc_cuda_emit {
  kc_context *ctx;
  const kc_graph *g;
  const kc_node *n;
  const char *name;
  const uint32_t *in_dims;  /* offset of input i's dims in a.d (n->nin entries) */
  const uint32_t *out_dims; /* offset of output i's dims (n->nout entries) */
  uint32_t ndims;           /* entries of a.d */
  kc_cu_text *t;            /* the kernel's text */

  /* set by the emitter */
  unsigned sections;
  kc_cuda_launch launch;
  bool no_kernel;
  int check_in;      /* kc_cu_check_indices: the checked input, -1: none */
  int64_t check_dim; /* and the offset in a.d of the size bounding it */

  /* scratch for the strings helpers return (valid for KC_CU_RING further calls) */
  char ring[KC_CU_RING][KC_CU_RING_LEN];
  unsigned ring_next;
  bool ring_overflow; /* a helper string did not fit: the builder fails with KC_ERR_INTERNAL */
} kc_cuda_emit;

typedef kc_status (*kc_cuda_emit_fn)(kc_cuda_emit *e);

#define OP(id, ...)
#define CUDA(family) kc_status kc_cuda_lower_##family(kc_cuda_emit *e);
#include "ir/ops.def"
#undef CUDA
#undef OP

/* The CUDA column, indexed by kc_op. */
extern const kc_cuda_emit_fn kc_cuda_ops[KC_OP_COUNT];

/* ---- emit_common.c -------------------------------------------------------------------------- */

/* C names of a dtype's storage and compute types ("__half", "float"). */
const char *kc_cu_stype(kc_dtype t);
const char *kc_cu_ctype(kc_dtype t);
/* A fresh scratch string of the ring, formatted. */
const char *kc_cu_fmt(kc_cuda_emit *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Value of input i (out false) or output i: the graph value, its dtype and rank. */
const kc_value *kc_cu_val(const kc_cuda_emit *e, bool out, uint32_t i);
bool kc_cu_present(const kc_cuda_emit *e, bool out, uint32_t i);
/* Dim `axis` of input/output i: "768LL" when static, else "a.d[K]". */
const char *kc_cu_dim(kc_cuda_emit *e, bool out, uint32_t i, int axis);
/* Product of dims [from, to) of input/output i as a C expression ("1LL" when empty). */
const char *kc_cu_numel(kc_cuda_emit *e, bool out, uint32_t i, int from, int to);
/* The node's attribute or value names, for messages. */
kc_status kc_cu_fail(kc_cuda_emit *e, kc_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Open the kernel: signature, then `const S *inK` / `S *outK` for every present operand (and
 * `unsigned long long *kc_err` after kc_cu_check_indices). */
void kc_cu_begin(kc_cuda_emit *e, int block);
/*
 * Before kc_cu_begin: the kernel checks the indices of input `in` against dim `axis` of input
 * bound_in (the ABI of codegen/cuda/cuda.h). Then, in a KC_THREADS loop body,
 * kc_cu_checked_index turns the i64 variable var (an index read from input `in` at flat
 * position pos) non-negative, or reports it (position and value) and `continue`s when it is
 * outside [-len, len).
 */
void kc_cu_check_indices(kc_cuda_emit *e, uint32_t in, uint32_t bound_in, int axis);
void kc_cu_checked_index(kc_cuda_emit *e, int indent, const char *var, const char *len,
                         const char *pos);
void kc_cu_end(kc_cuda_emit *e);

/* A load of element idx of pointer ptr (dtype t) in compute type, as an expression. */
const char *kc_cu_load(kc_cuda_emit *e, kc_dtype t, const char *ptr, const char *idx);
/* Emit `ptr[idx] = v;` converting compute value v to storage (indent: spaces). */
void kc_cu_store(kc_cuda_emit *e, int indent, kc_dtype t, const char *ptr, const char *idx,
                 const char *v);
/* A compute-typed literal of element 0 of a one-element tensor of dtype t at data. */
const char *kc_cu_literal(kc_cuda_emit *e, kc_dtype t, const void *data);

/*
 * Launch shapes: a thread per unit (block threads), a warp per unit, a block per unit. Units
 * start at 1 and are multiplied by kc_cu_units_dims / kc_cu_units_const.
 */
void kc_cu_launch_threads(kc_cuda_emit *e, int block);
void kc_cu_launch_warps(kc_cuda_emit *e, int block);
void kc_cu_launch_blocks(kc_cuda_emit *e, int block);
/* units *= prod over dims [from, to) of input/output i, each rounded up to a multiple of div
 * first (ceil(d / div)); static dims fold into the constant factor. */
void kc_cu_units_dims(kc_cuda_emit *e, bool out, uint32_t i, int from, int to, uint32_t div);
void kc_cu_units_const(kc_cuda_emit *e, int64_t c);
/* units *= product of dims [from, to) of input/output i except `skip` (-1: none). */
void kc_cu_units_dims_except(kc_cuda_emit *e, bool out, uint32_t i, int from, int to, int skip);

/*
 * Emit `const i64 NAME_k = stride;` for each axis k of output 0's rank R: the element stride
 * of input i along output axis k when i broadcasts to the output numpy-style (0 along axes it
 * lacks or has as 1).
 */
void kc_cu_bcast_strides(kc_cuda_emit *e, uint32_t i, int R, const kc_dim *odims, const char *name);
/*
 * Emit code that turns flat index `idx` (row-major over dims [first, first + R) of input /
 * output v) into offsets: offs[j] += coordinate k * snames[j]_<k> for each of nops stride
 * sets, k in [0, R). need (NULL: all) marks the axes whose coordinate any set uses; the others
 * are only divided out.
 */
void kc_cu_decompose(kc_cuda_emit *e, int indent, const char *idx, bool out, uint32_t v, int first,
                     int R, int nops, const char *const *snames, const char *const *offs,
                     const bool *need);

/* Contents of input i when shape inference knows them as integers (axes, perms): the count
 * (at most max), or -1. */
int kc_cu_known_ints(kc_cuda_emit *e, uint32_t i, int64_t *out, int max);
/* Accumulator type of sums and maxima over dtype t: float for f16/bf16/f32, double, 64-bit
 * integers, else 32-bit ones of t's signedness (wide enough for warp shuffles; results wrap
 * back to t when stored). */
const char *kc_cu_acc_type(kc_dtype t);

/* ---- attention.c: what the attention kernels share ----------------------------------------- */

#define KC_CU_ATT_QB 16            /* query rows of a kc_att_tile unit */
#define KC_CU_ATT_BLOCK 128        /* threads of an attention block (4 warps) */
#define KC_CU_ATT_SMEM (47 * 1024) /* static shared memory an attention kernel may use */
/* `  p.NAME0..2 = ...;`: batch, sequence and head strides of a [B,S,H*dh] (rank 3) or
 * [B,H,S,dh] tensor with sequence length S (a C expression). */
void kc_cu_att_strides(kc_cuda_emit *e, int rank, const char *name, const char *S, int64_t H,
                       int64_t dh);
/* `  p.ms0..3 = ...;`: the additive mask (input in) broadcast to [B, heads, S, T]. */
void kc_cu_att_mask_strides(kc_cuda_emit *e, uint32_t in);
/* The largest power-of-two key tile up to 32 whose kc_att_tile arrays, plus extra bytes of other
 * shared memory, fit KC_CU_ATT_SMEM; 0 when none does. */
int kc_cu_att_pick_bc(int64_t D, int64_t Dv, int64_t extra);

/* The static facts the attention and attention_grad emitters share (attention.c). */
typedef struct kc_cu_att_cfg {
  int rank;           /* 3: [B, S, H*D]; 4: [B, H, S, D] */
  int64_t heads, kvh; /* query and key/value heads */
  int64_t D, Dv;      /* head sizes of q/k and of v */
  kc_dtype t;         /* q's (k and v have it too) */
  const char *mask;   /* the mask attribute */
  bool causal, has_mask;
  int mk; /* 0 none, 1 padding, 2 additive (causal with a mask input adds it) */
} kc_cu_att_cfg;
/* Heads, head sizes (static, k's equal to q's), dtypes and the mask kind against input mask_in
 * of attention-like node e->n (q, k, v at inputs 0..2); a failure is said through kc_cu_fail. */
kc_status kc_cu_att_configure(kc_cuda_emit *e, uint32_t mask_in, kc_cu_att_cfg *c);

/* softmax.c: threads per block of a block-per-row kernel with rows of L (<= 0: unknown). */
int kc_cu_row_block(int64_t L);

/* ---- scalar.c: the one table of elementwise math ------------------------------------------ */

/*
 * The C expression of elementwise op `op` of node n (attributes) on compute-typed arguments
 * args[] (NULL for absent optional inputs), input dtype in and output dtype out, written into
 * buf. KC_ERR_UNSUPPORTED (nothing written) when the op has no CUDA math for those dtypes.
 */
kc_status kc_cu_scalar(const kc_node *n, kc_dtype in, kc_dtype out, const char *const *args,
                       uint32_t nargs, char *buf, size_t size);

/* ---- elementwise.c: the loop machinery of elementwise and fused kernels ------------------- */

/* Writes the math of one step: locals x0.. (compute-typed inputs) are defined; it must define
 * y0.. (compute-typed outputs). */
typedef kc_status (*kc_cu_body_fn)(kc_cuda_emit *e, void *user);
/* The elementwise kernel of node e->n: a thread per output element, inputs broadcast. */
kc_status kc_cu_elementwise(kc_cuda_emit *e, kc_cu_body_fn body, void *user);

#endif /* KERNC_CODEGEN_CUDA_EMIT_H */

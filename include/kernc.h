/*
 * kernc.h - the public C API of kernc, a compiler for model graphs.
 *
 * Everything a user touches goes through this header: a context (errors, log, options), graphs
 * built with the builder API or parsed from text, printing, verification and graphviz output.
 * Conventions:
 *   - Functions return kc_status; the message that explains a failure (node, op, file) is in
 *     kc_last_error(ctx). Every function returning kc_status clears the calling thread's
 *     message on entry, so after it succeeds kc_last_error is "" and after it fails it is that
 *     failure's. Exceptions, which leave the message alone: the builder calls (kc_split included:
 *     their sticky error keeps its message until kc_graph_status reports it), kc_graph_status,
 *     and the printers kc_graph_print and kc_graph_dot (so a failed graph can be printed).
 *     kc_run asks for every output: nout must equal the module's output count.
 *   - Builder calls return kc_val{0} on failure and leave a sticky error on the graph, so nested
 *     builder calls stay readable; kc_graph_status() reports it once at the end. A tensor whose
 *     element count or byte size would overflow int64 (an input or weight declared so, a reshape,
 *     expand or other result that grows so) is such a failure (KC_ERR_SHAPE), as it is for
 *     kc_graph_verify; dims that are symbols count as 1 there, but a 0 dim makes any size fine.
 *   - No global mutable state: everything hangs off a kc_context. Not thread-safe per context.
 */
#ifndef KERNC_H
#define KERNC_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- version ----------------------------------------------------------------------------- */

/* The version of this header; CMake's project version and the shared library's soname
 * (libkernc.so.KC_VERSION_MAJOR) are read from these lines. */
#define KC_VERSION_MAJOR 0
#define KC_VERSION_MINOR 1
#define KC_VERSION_PATCH 0
/* One number that orders versions: 10000 * major + 100 * minor + patch. */
#define KC_VERSION (KC_VERSION_MAJOR * 10000 + KC_VERSION_MINOR * 100 + KC_VERSION_PATCH)

/* The version of the library that is running, as "MAJOR.MINOR.PATCH" (static). A program built
 * against one header may load another libkernc.so.0: compare with KC_VERSION_* to find out. */
const char *kc_version(void);
/* The same as one number, as KC_VERSION. */
int kc_version_number(void);

/* ---- status and context ------------------------------------------------------------------ */

typedef enum kc_status {
  KC_OK = 0,
  KC_ERR_PARSE,       /* text IR or protobuf could not be read */
  KC_ERR_SHAPE,       /* shapes do not fit the op (at build, verify or run time) */
  KC_ERR_TYPE,        /* dtypes do not fit the op */
  KC_ERR_VERIFY,      /* graph structure is broken (use before def, cycle, arity...) */
  KC_ERR_UNSUPPORTED, /* op, dtype or feature kernc does not handle */
  KC_ERR_IO,          /* a file could not be opened, read or written */
  KC_ERR_NOMEM,       /* allocation failed */
  KC_ERR_INVALID_ARG, /* the caller passed something meaningless */
  KC_ERR_RUNTIME,     /* a failure while running compiled code */
  KC_ERR_INTERNAL,    /* a kernc bug: an internal invariant did not hold */
} kc_status;

/* Short, static, human-readable name of a status ("parse error", ...). */
const char *kc_status_str(kc_status s);

typedef struct kc_context kc_context;

/* Log levels passed to the log callback. */
enum { KC_LOG_ERROR = 0, KC_LOG_WARN = 1, KC_LOG_INFO = 2, KC_LOG_DEBUG = 3 };
typedef void (*kc_log_fn)(void *user, int level, const char *msg);

/* Options that live on a context; read and write them through kc_context_options(). */
/* The most threads a module, session or trainer runs on (kc_options.threads,
 * kc_compile_options.threads, kc_module_set_threads...): more is KC_ERR_INVALID_ARG. A thread
 * the OS refuses to start is KC_ERR_RUNTIME, and the threads started by that call are ended. */
#define KC_MAX_THREADS 1024

typedef struct kc_options {
  int threads;                /* worker threads for running code; 0 = number of cores */
  int verify_each;            /* run the verifier after every pass */
  int log_level;              /* highest level passed to the log callback */
  const char *cuda_cache_dir; /* NVRTC images kept here and reused (NULL: memory only); the
                                 kernc program sets it from $KERNC_CUDA_CACHE */
  uint64_t memory_limit;      /* bytes one run-time buffer (a run's arena or output, a KV cache,
                                 a trained parameter's state) may take; 0: what the machine has
                                 left (MemAvailable + SwapFree, the cgroup's memory.max). Over
                                 it: KC_ERR_NOMEM naming both sizes, before anything is
                                 allocated. The kernc program sets it from $KERNC_MEMORY_LIMIT */
  int opt_level;              /* LLVM optimization of JIT'd CPU kernels, 1..3 as -O1..-O3,
                                 -1 as -O0 (no IR optimization, fast instruction selection);
                                 0: 3. kc_context_new takes it from $KERNC_OPT_LEVEL (0..3)
                                 when that is set. -O0 compiles 5-20x faster than -O3 and runs
                                 slower: for tests and quick experiments, not for timing */
} kc_options;

/* Create a context with default options; NULL when out of memory. */
kc_context *kc_context_new(void);
/* Free a context (graphs made with it must be freed first). */
void kc_context_free(kc_context *ctx);
/* The context's options, writable. */
kc_options *kc_context_options(kc_context *ctx);
/* Install a log callback (NULL to silence); messages up to options.log_level reach it. */
void kc_context_set_log(kc_context *ctx, kc_log_fn fn, void *user);
/* The message of the calling thread's most recent error on this context, "" when none or when
 * the thread's last kc_status call succeeded (each thread has its own: runs of a module may be
 * concurrent). */
const char *kc_last_error(const kc_context *ctx);
/* Forget the most recent error. */
void kc_clear_error(kc_context *ctx);

/* ---- dtypes and dims --------------------------------------------------------------------- */

typedef enum kc_dtype {
  KC_DT_NONE = 0,
  KC_F32,
  KC_F16,
  KC_BF16,
  KC_F64,
  KC_I64,
  KC_I32,
  KC_I16,
  KC_I8,
  KC_U64,
  KC_U32,
  KC_U16,
  KC_U8,
  KC_BOOL,
  KC_DT_COUNT
} kc_dtype;

/* Text name of a dtype ("f32", "i64", "bool"...). */
const char *kc_dtype_name(kc_dtype t);
/* Size of one element in bytes. */
size_t kc_dtype_size(kc_dtype t);
/* The dtype named by s, or KC_DT_NONE. */
kc_dtype kc_dtype_parse(const char *s);

/*
 * A dimension: >= 0 is a known size, < 0 names a symbolic expression owned by one graph
 * (a symbol such as "batch", or a product/sum/quotient of symbols and integers).
 */
typedef int64_t kc_dim;
#define KC_MAX_RANK 8

/* ---- graph --------------------------------------------------------------------------------- */

typedef struct kc_graph kc_graph;

/* An SSA value of a graph: typed integer id, 0 = none. Ids are the %N of the text form. */
typedef struct kc_val {
  uint32_t id;
} kc_val;

/* Create an empty graph named name (may be NULL). */
kc_graph *kc_graph_new(kc_context *ctx, const char *name);
/* Free a graph and everything it owns. NULL is fine. */
void kc_graph_free(kc_graph *g);
/* The context a graph reports to. */
kc_context *kc_graph_context(const kc_graph *g);
/* The sticky builder error: KC_OK, or the status of the first failed builder call. */
kc_status kc_graph_status(const kc_graph *g);

/* The symbol named name (created on first use). */
kc_dim kc_sym(kc_graph *g, const char *name);
/* Symbolic arithmetic on dims; integers fold, results are canonical so equal dims compare ==. */
kc_dim kc_dim_mul(kc_graph *g, kc_dim a, kc_dim b);
kc_dim kc_dim_add(kc_graph *g, kc_dim a, kc_dim b);
/* Write dim d as text ("768", "B", "B*S") into buf; returns buf. */
const char *kc_dim_str(const kc_graph *g, kc_dim d, char *buf, size_t size);

/* Number of values / inputs / outputs of a graph. */
uint32_t kc_graph_num_inputs(const kc_graph *g);
uint32_t kc_graph_num_outputs(const kc_graph *g);
kc_val kc_graph_input(const kc_graph *g, uint32_t i);
kc_val kc_graph_output(const kc_graph *g, uint32_t i);
/* Name of input/output i ("" when unnamed). */
const char *kc_graph_input_name(const kc_graph *g, uint32_t i);
const char *kc_graph_output_name(const kc_graph *g, uint32_t i);

/* dtype, rank and dims of a value (dims holds rank entries; may be NULL). */
kc_dtype kc_val_dtype(const kc_graph *g, kc_val v);
int kc_val_rank(const kc_graph *g, kc_val v);
void kc_val_dims(const kc_graph *g, kc_val v, kc_dim *dims);

/* ---- builder: sources and outputs ------------------------------------------------------- */

/* A graph input of dtype t and the given dims (use kc_sym for symbolic ones). */
kc_val kc_input(kc_graph *g, const char *name, kc_dtype t, int rank, const kc_dim *dims);
/* A named weight; data (rank/dims elements of t) is copied into the graph. */
kc_val kc_weight(kc_graph *g, const char *name, kc_dtype t, int rank, const int64_t *dims,
                 const void *data);
/* A constant tensor; data is copied. Printed inline, so keep it small. */
kc_val kc_constant(kc_graph *g, kc_dtype t, int rank, const int64_t *dims, const void *data);
/* Scalar constants. */
kc_val kc_const_f32(kc_graph *g, float v);
kc_val kc_const_i64(kc_graph *g, int64_t v);
/* A 1-D i64 constant, for shapes and axes. */
kc_val kc_const_i64s(kc_graph *g, int n, const int64_t *v);
/* Mark v as a graph output named name (may be NULL). */
void kc_output(kc_graph *g, kc_val v, const char *name);

/* ---- builder: one function per op of ir/ops.def ------------------------------------------
 * Semantics are those of the ONNX operator of the same name (latest opset), unless noted.
 * Optional inputs take kc_val{0}. */

kc_val kc_add(kc_graph *g, kc_val a, kc_val b);
kc_val kc_sub(kc_graph *g, kc_val a, kc_val b);
kc_val kc_mul(kc_graph *g, kc_val a, kc_val b);
kc_val kc_div(kc_graph *g, kc_val a, kc_val b);
kc_val kc_pow(kc_graph *g, kc_val a, kc_val b);
kc_val kc_min(kc_graph *g, kc_val a, kc_val b);
kc_val kc_max(kc_graph *g, kc_val a, kc_val b);
kc_val kc_equal(kc_graph *g, kc_val a, kc_val b);
kc_val kc_less(kc_graph *g, kc_val a, kc_val b);
kc_val kc_greater(kc_graph *g, kc_val a, kc_val b);
kc_val kc_and(kc_graph *g, kc_val a, kc_val b);
kc_val kc_sqrt(kc_graph *g, kc_val x);
kc_val kc_reciprocal(kc_graph *g, kc_val x);
kc_val kc_neg(kc_graph *g, kc_val x);
kc_val kc_abs(kc_graph *g, kc_val x);
kc_val kc_exp(kc_graph *g, kc_val x);
kc_val kc_log(kc_graph *g, kc_val x);
kc_val kc_erf(kc_graph *g, kc_val x);
kc_val kc_tanh(kc_graph *g, kc_val x);
kc_val kc_sigmoid(kc_graph *g, kc_val x);
kc_val kc_relu(kc_graph *g, kc_val x);
kc_val kc_sin(kc_graph *g, kc_val x);
kc_val kc_cos(kc_graph *g, kc_val x);
kc_val kc_not(kc_graph *g, kc_val x);
kc_val kc_identity(kc_graph *g, kc_val x);
/* Gelu; tanh_approx selects the tanh form (ONNX approximate="tanh"). */
kc_val kc_gelu(kc_graph *g, kc_val x, int tanh_approx);
/* Clip x to [lo, hi]; either bound may be kc_val{0}. */
kc_val kc_clip(kc_graph *g, kc_val x, kc_val lo, kc_val hi);
kc_val kc_softmax(kc_graph *g, kc_val x, int64_t axis);
kc_val kc_log_softmax(kc_graph *g, kc_val x, int64_t axis);
kc_val kc_matmul(kc_graph *g, kc_val a, kc_val b);
/* alpha * op(a) @ op(b) + beta * c; c may be kc_val{0}. */
kc_val kc_gemm(kc_graph *g, kc_val a, kc_val b, kc_val c, float alpha, float beta, int trans_a,
               int trans_b);
/* Reductions over naxes axes (naxes 0: all axes). */
kc_val kc_reduce_mean(kc_graph *g, kc_val x, int naxes, const int64_t *axes, int keepdims);
kc_val kc_reduce_sum(kc_graph *g, kc_val x, int naxes, const int64_t *axes, int keepdims);
kc_val kc_reduce_max(kc_graph *g, kc_val x, int naxes, const int64_t *axes, int keepdims);
/* ONNX LayerNormalization (first output only); bias may be kc_val{0}. */
kc_val kc_layer_normalization(kc_graph *g, kc_val x, kc_val scale, kc_val bias, int64_t axis,
                              float eps);
/* ONNX RMSNormalization. */
kc_val kc_rms_normalization(kc_graph *g, kc_val x, kc_val scale, int64_t axis, float eps);
kc_val kc_cast(kc_graph *g, kc_val x, kc_dtype to);
/* Reshape to the i64 shape tensor `shape` (ONNX: 0 copies, -1 infers). */
kc_val kc_reshape(kc_graph *g, kc_val x, kc_val shape);
/* Transpose by perm (NULL: reverse the axes). */
kc_val kc_transpose(kc_graph *g, kc_val x, int n, const int64_t *perm);
kc_val kc_gather(kc_graph *g, kc_val data, kc_val indices, int64_t axis);
kc_val kc_concat(kc_graph *g, int n, const kc_val *xs, int64_t axis);
/* gather's adjoint: data with updates[p, j, q] added at [p, indices[j], q] along axis, in index
 * order (updates has gather(data, indices, axis)'s shape). */
kc_val kc_scatter_add(kc_graph *g, kc_val data, kc_val indices, kc_val updates, int64_t axis);
/* Split into n outputs along axis; sizes may be NULL for equal parts. Writes outs[n]. */
kc_status kc_split(kc_graph *g, kc_val x, int64_t axis, int n, const int64_t *sizes, kc_val *outs);
/* Slice with i64 tensors; axes and steps may be kc_val{0}. */
kc_val kc_slice(kc_graph *g, kc_val x, kc_val starts, kc_val ends, kc_val axes, kc_val steps);
kc_val kc_squeeze(kc_graph *g, kc_val x, int naxes, const int64_t *axes);
kc_val kc_unsqueeze(kc_graph *g, kc_val x, int naxes, const int64_t *axes);
kc_val kc_expand(kc_graph *g, kc_val x, kc_val shape);
kc_val kc_shape(kc_graph *g, kc_val x);
/* A tensor of shape `shape` (i64 1-D) filled with value (a 1-element constant, or 0.0f32). */
kc_val kc_constant_of_shape(kc_graph *g, kc_val shape, kc_val value);
kc_val kc_range(kc_graph *g, kc_val start, kc_val limit, kc_val delta);
/* Upper (upper != 0) or lower triangle; k may be kc_val{0}. */
kc_val kc_trilu(kc_graph *g, kc_val x, kc_val k, int upper);
kc_val kc_where(kc_graph *g, kc_val cond, kc_val a, kc_val b);
kc_val kc_dropout(kc_graph *g, kc_val x);
kc_val kc_flatten(kc_graph *g, kc_val x, int64_t axis);

/* kernc's own fused ops. */

/* LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * gamma + beta (beta optional). */
kc_val kc_layer_norm(kc_graph *g, kc_val x, kc_val gamma, kc_val beta, float eps);
/* RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * gamma. */
kc_val kc_rms_norm(kc_graph *g, kc_val x, kc_val gamma, float eps);
/* Rotary embedding (ONNX RotaryEmbedding semantics); position_ids may be kc_val{0}. */
kc_val kc_rotary(kc_graph *g, kc_val x, kc_val cos_cache, kc_val sin_cache, kc_val position_ids,
                 int64_t heads, int interleaved);

/* Mask kinds of the attention op. */
typedef enum kc_mask_kind {
  KC_MASK_NONE = 0,
  KC_MASK_CAUSAL,   /* key j visible to query i iff j <= i + past length (keys - queries) */
  KC_MASK_PADDING,  /* mask input is [B, S_kv], nonzero/true = keep */
  KC_MASK_ADDITIVE, /* mask input is added to the scores, broadcast to [B, H, S, S_kv] */
} kc_mask_kind;

typedef struct kc_attention_desc {
  int64_t heads;    /* query heads */
  int64_t kv_heads; /* key/value heads (GQA/MQA); 0 = heads */
  float scale;      /* score scale; 0 = 1/sqrt(head size) */
  kc_mask_kind mask;
} kc_attention_desc;

/*
 * Multi-head attention. q: [B, S, heads*D], k/v: [B, S_kv, kv_heads*D]; mask as mask kind says
 * (kc_val{0} for none/causal). Returns [B, S, heads*D].
 */
kc_val kc_attention(kc_graph *g, kc_val q, kc_val k, kc_val v, kc_val mask,
                    const kc_attention_desc *desc);

/*
 * The KV cache of decoding (ir/ops.def kv_store, attention_cache): cache f32[NBLK, L, 2, KVH,
 * BS, D] (blocks of BS token slots of every layer), table i32[B, MAXB] (the blocks of each batch
 * row), past and lens i64[B] (tokens already cached, new tokens valid per row).
 * kc_kv_store writes k and v [B, S, kv_heads*D] at positions past.. of `layer` in place and
 * returns the cache; kc_attention_cache is causal attention of q over the cached keys (mask:
 * additive, or kc_val{0}); desc's mask kind is ignored.
 */
kc_val kc_kv_store(kc_graph *g, kc_val cache, kc_val k, kc_val v, kc_val table, kc_val past,
                   kc_val lens, int64_t layer, int64_t kv_heads);
kc_val kc_attention_cache(kc_graph *g, kc_val q, kc_val cache, kc_val table, kc_val past,
                          kc_val lens, kc_val mask, int64_t layer, const kc_attention_desc *desc);

/* Activations usable in a matmul epilogue. */
typedef enum kc_act { KC_ACT_NONE = 0, KC_ACT_RELU, KC_ACT_GELU, KC_ACT_GELU_TANH } kc_act;

/* act(a @ b + bias) + residual; bias and residual may be kc_val{0}. */
kc_val kc_matmul_ep(kc_graph *g, kc_val a, kc_val b, kc_val bias, kc_val residual, kc_act act);

/* ---- autodiff ------------------------------------------------------------------------------ */

/*
 * Append the backward graph of scalar output `loss` (a float tensor of one element) to g:
 * for every float graph input or weight whose name matches one of the nparams patterns
 * (fnmatch globs: "*.weight"; every other value is frozen), g gets an output "NAME.grad" with
 * the gradient of the loss with respect to it (zeros when the loss does not depend on it). The
 * rules are ir/ops.def's GRAD column; kc_compile then runs forward and backward as one graph
 * through the normal pipeline. An op without a rule between a parameter and the loss is
 * KC_ERR_UNSUPPORTED with every such node listed; a pattern matching nothing is
 * KC_ERR_INVALID_ARG. The forward part of g is not changed; after a failure g is as it was.
 */
kc_status kc_grad(kc_graph *g, const char *loss, int nparams, const char *const *params);
/*
 * The mean cross-entropy of logits [..., C] (a float type) against labels [...] (i64): the mean
 * over positions whose label is not ignore_index of -log softmax(logits)[label], as a scalar of
 * logits' dtype (PyTorch's F.cross_entropy(logits.reshape(-1, C), labels.reshape(-1),
 * ignore_index=ignore_index); nan when every position is ignored). Built on the fused
 * softmax_xent op, whose backward recomputes the softmax from the saved log-sum-exp. A label
 * outside [0, C) other than ignore_index is an error when the graph runs.
 */
kc_val kc_cross_entropy(kc_graph *g, kc_val logits, kc_val labels, int64_t ignore_index);

/* Gradient checkpointing policies of kc_grad_ex. */
typedef enum kc_checkpoint {
  KC_CKPT_NONE = 0, /* every forward value the backward reads stays alive */
  KC_CKPT_SQRT,     /* of the L block boundaries (the residual stream between transformer
                       blocks: values read by a residual add and by a norm), every
                       ~sqrt(L)-th is kept; the forward pieces between are recomputed */
  KC_CKPT_MARKED,   /* the results of nodes whose loc (ONNX node name) matches a glob of
                       `marked` are kept; the pieces between are recomputed */
} kc_checkpoint;

typedef struct kc_grad_options {
  kc_checkpoint checkpoint;
  int nmarked;
  const char *const *marked; /* KC_CKPT_MARKED: fnmatch globs */
} kc_grad_options;

/*
 * kc_grad with options (NULL: kc_grad's behaviour). With checkpointing, the forward nodes
 * between kept values are re-emitted in the backward graph just before the backward of their
 * piece (loc "recompute:<loc>", never merged back by CSE) and the gradient rules read those
 * clones, so the forward values between kept ones die after the forward pass. A random op
 * (training-mode dropout) in a recomputed piece is refused (KC_ERR_UNSUPPORTED): recomputing it
 * would draw another mask. No boundary found (sqrt) or no node matched (marked) is
 * KC_ERR_INVALID_ARG.
 */
kc_status kc_grad_ex(kc_graph *g, const char *loss, int nparams, const char *const *params,
                     const kc_grad_options *o);

/*
 * LoRA (passes/lora.c): to every matmul or gemm y = x @ W of a 2-D float weight W (read
 * directly, through a transpose, or as gemm's transB) whose weight name or node name (ONNX
 * node name) matches the fnmatch glob `targets`, add y += (alpha / rank) * (x @ A) @ B with new
 * weights "W.lora_A" [in, rank] (PEFT's init: uniform(-1/sqrt(in), 1/sqrt(in)) from a
 * counter-based generator keyed by seed and W's name) and "W.lora_B" [rank, out] (zeros), so the
 * graph computes what it did. Base weights are unchanged; kc_grad with "*.lora_A", "*.lora_B"
 * then builds no base-weight gradient. A glob matching nothing, rank <= 0 or a W that has
 * adapters already is KC_ERR_INVALID_ARG; after a failure g is as it was.
 */
kc_status kc_lora(kc_graph *g, const char *targets, int64_t rank, double alpha, uint64_t seed);
/* Fold every adapter kc_lora added into its base weight (W += (alpha/rank) * A @ B in W's
 * layout) and remove the adapter nodes and weights; the graph computes the same numbers up to
 * rounding. A graph without adapters is KC_ERR_INVALID_ARG. */
kc_status kc_lora_merge(kc_graph *g);

/* ---- text form, verifier, graphviz --------------------------------------------------------- */

/* Print g as text IR to f. */
kc_status kc_graph_print(const kc_graph *g, FILE *f);
/* Print g as text IR into a malloc'd string (caller frees); NULL on failure. */
char *kc_graph_print_str(const kc_graph *g);
/* Parse text IR; filename is used in error messages (file:line:col, the line and a caret). */
kc_status kc_graph_parse(kc_context *ctx, const char *text, const char *filename, kc_graph **out);
/* Read and parse a .kir file. */
kc_status kc_graph_parse_file(kc_context *ctx, const char *path, kc_graph **out);
/* Check every structural and type rule; the first violation is described in the error buffer. */
kc_status kc_graph_verify(kc_graph *g);
/* Write g in graphviz dot syntax. */
kc_status kc_graph_dot(const kc_graph *g, FILE *f);
/*
 * The IR of g after a pass pipeline as a malloc'd string in *out (caller frees; NULL on failure):
 * passes as kc_compile_options.passes (NULL: target's default pipeline, target as there; "":
 * none) run on a copy of g, which is verified first and not changed; after_all writes the text IR
 * after every pass ahead of the result (`kernc dump --print-after-all`); dot: the result as
 * graphviz dot instead of text IR. Errors go to g's context.
 */
kc_status kc_graph_dump(const kc_graph *g, const char *target, const char *passes, int after_all,
                        int dot, char **out);

/* ---- compile and run ------------------------------------------------------------------------ */

typedef struct kc_module kc_module;

/* A tensor handed to or returned by kc_run: dtype, shape and row-major contiguous data. */
typedef struct kc_tensor_desc {
  const char *name; /* graph input/output name; NULL: match by position */
  kc_dtype dtype;
  int rank;
  int64_t dims[KC_MAX_RANK];
  void *data;
} kc_tensor_desc;

/* KC_OK when kernc knows a target of this name ("cpu", "cuda"), else KC_ERR_UNSUPPORTED with a
 * message listing them. Whether the target can run here is kc_compile's to say. */
kc_status kc_target_check(kc_context *ctx, const char *name);

typedef struct kc_compile_options {
  const char *target; /* "cpu" (default) or "cuda" */
  const char *passes; /* pass list; NULL: the target's default pipeline, "": none */
  int threads;        /* 0: the context's option (0 there: one per core) */
} kc_compile_options;

/*
 * Compile a copy of g for a target (the CPU: JIT through ORC; "cuda": CUDA C through NVRTC for
 * the GPU found, run through the driver); g itself is not changed. Without a GPU, its driver or
 * the CUDA toolkit, "cuda" fails with KC_ERR_UNSUPPORTED, "CUDA target unavailable: <reason>".
 */
kc_status kc_compile(kc_context *ctx, const kc_graph *g, const kc_compile_options *opts,
                     kc_module **out);
/*
 * Run m on nin inputs (by name when named, else by position). Writes nout output descriptors:
 * their data points into memory m keeps for the calling thread, valid until this thread's next
 * kc_run of m or kc_module_free. A missing input, a wrong dtype or a shape that contradicts the
 * model is an error naming it; nout other than the model's output count is KC_ERR_INVALID_ARG.
 * Threads: any number of threads may call kc_run on one module at once, as ONNX Runtime allows
 * for Session::Run. Each calling thread gets its own workspace (sizes, arena, output buffers),
 * made at its first run and kept until kc_module_free, so runs never share per-run state; the
 * thread pool serves one run at a time, and a run that finds it busy runs its kernels on its own
 * thread (results are bitwise the same either way). On the "cuda" target concurrent runs wait
 * for the device in turn. Each thread reads its own errors (kc_last_error).
 */
kc_status kc_run(kc_module *m, const kc_tensor_desc *inputs, uint32_t nin, kc_tensor_desc *outputs,
                 uint32_t nout);
/* Free a module and everything it compiled. NULL is fine. */
void kc_module_free(kc_module *m);
/* The graph a module runs (after its passes); owned by the module. */
const kc_graph *kc_module_graph(const kc_module *m);
/* Change the number of threads kc_run uses (<= 0: one per core, > KC_MAX_THREADS: an error);
 * waits for a run holding the thread pool. On failure the module keeps its threads. */
kc_status kc_module_set_threads(kc_module *m, int threads);
/* Bytes of the intermediate arena at its largest so far (the memory plan's peak). */
size_t kc_module_peak_bytes(const kc_module *m);

/* Time spent in one node's kernel, summed over the kc_run calls made while profiling is on. */
typedef struct kc_node_profile {
  uint32_t node;   /* index into the nodes of kc_module_graph(m), in run order */
  uint32_t value;  /* id of the node's first result: the %N of the text form */
  const char *op;  /* op name as in the text form ("matmul"); static */
  const char *loc; /* ONNX node name; NULL when the node has none; owned by the module */
  uint64_t calls;  /* launches of the kernel (one per run, unless the node did not run) */
  uint64_t ns;     /* nanoseconds around the launches, monotonic clock, all threads joined */
  uint64_t min_ns; /* the fastest single launch (0 when none): robust on a busy machine */
} kc_node_profile;

/* Turn per-kernel timing on (every counter restarts at zero) or off; off costs one branch. */
kc_status kc_module_set_profile(kc_module *m, int on);
/*
 * The profile of every node that has a kernel (views and sources have none), in node order:
 * writes min(count, cap) entries to out and returns count (out may be NULL when cap is 0).
 */
uint32_t kc_module_profile(const kc_module *m, kc_node_profile *out, uint32_t cap);

/* ---- decoding sessions: a KV cache and steps over several sequences ---------------------------
 */

typedef struct kc_session kc_session;

typedef struct kc_session_options {
  const char *target; /* as kc_compile_options.target */
  int threads;        /* 0: the context's option */
  int paged;          /* 1: blocks of block_size tokens from one pool (vLLM's paging: fork shares
                         blocks, a write into a shared block copies it first); 0: contiguous,
                         one max_len buffer per sequence written in place */
  int64_t block_size; /* paged: tokens per block (0: 16) */
  int64_t max_tokens; /* paged: tokens the pool holds, all sequences together (0: 4096) */
  int64_t max_len;    /* contiguous: tokens per sequence (0: 1024) */
  int32_t max_seqs;   /* contiguous: sequences held at once (0: 1) */
} kc_session_options;

/*
 * A decoding session over causal decoder `model` (token ids [B, S] in, logits [B, S, vocab]
 * out): kc_session_new compiles its decode step once (the attentions read and write a KV cache,
 * positions start at each sequence's past length: the model needs no past_key_values inputs) and
 * makes the cache. A model whose graph mixes sequence positions otherwise (a non-causal
 * attention, a cumsum over the sequence...) is KC_ERR_UNSUPPORTED naming the node. One thread at
 * a time uses a session.
 */
kc_status kc_session_new(kc_context *ctx, const kc_graph *model, const kc_session_options *opts,
                         kc_session **out);
void kc_session_free(kc_session *s);
/* Sequences: a new empty one; a fork sharing src's cache (no copy); free; length in tokens (-1:
 * none); truncate to len tokens. */
kc_status kc_session_seq_new(kc_session *s, int32_t *seq);
kc_status kc_session_seq_fork(kc_session *s, int32_t src, int32_t *dst);
void kc_session_seq_free(kc_session *s, int32_t seq);
int64_t kc_session_seq_len(const kc_session *s, int32_t seq);
kc_status kc_session_seq_truncate(kc_session *s, int32_t seq, int64_t len);

/* One sequence's part of a step: its new tokens, and where its logits go. */
typedef struct kc_decode_entry {
  int32_t seq;
  int32_t ntokens;
  const int64_t *tokens;
  float *logits; /* NULL: not wanted; else vocab floats of the last new token, or (all) ntokens *
                    vocab floats of every new token */
  int all;
} kc_decode_entry;

/*
 * One step: every entry's tokens are appended to its sequence (prefill: many; decode: one) and
 * run at once, sequences of different lengths together. A cache too full for the step is
 * KC_ERR_RUNTIME naming the sequence, and changes nothing.
 */
kc_status kc_session_decode(kc_session *s, const kc_decode_entry *entries, int32_t n);
int64_t kc_session_vocab(const kc_session *s);
/* Cache bytes one token takes (all layers, K and V). */
int64_t kc_session_cache_bytes_per_token(const kc_session *s);
/* The compiled decode step of a kc_session_new session, for kc_module_set_profile and
 * kc_module_profile (per-kernel times of the steps); the session owns it. */
kc_module *kc_session_module(const kc_session *s);

/*
 * Generation over a session (runtime/generate.c). Token selection follows Hugging Face
 * transformers 4.46.3 (runtime/sample.h says exactly how): repetition penalty, then temperature,
 * top-k, top-p, min-p, then a draw; greedy when temperature is 0; beam search as its
 * BeamSearchScorer. Every filter is off unless set (transformers' generate() would default
 * top_k to 50). Draws come from a counter-based generator: a sequence's tokens depend only on its
 * prompt and its seed, not on the rest of the batch or the thread count.
 */
typedef struct kc_generate_options {
  int64_t max_new;           /* tokens to generate at most (> 0) */
  double temperature;        /* 0: greedy; > 0: sample */
  int32_t top_k;             /* 0: off */
  double top_p;              /* 1 (or 0): off */
  double min_p;              /* 0: off */
  double repetition_penalty; /* 1 (or 0): off */
  uint64_t seed;             /* prompt i of a batch draws with seed + i */
  int32_t num_beams;         /* kc_generate_beams: > 1 */
  double length_penalty;     /* beams: transformers' default is 1 (kc_generate_defaults) */
  int32_t early_stopping;    /* beams: 0 false (transformers' default), 1 true, 2 "never" */
  const int64_t *eos;        /* EOS ids: a sequence ends after one (kept in its output) */
  int32_t neos;
  const int64_t *stop; /* stop sequences, back to back; stop_len[i] tokens each */
  const int32_t *stop_len;
  int32_t nstop;
  /* each token as it comes (prompt index, token); beam search: the final tokens at the end */
  void (*on_token)(void *user, int32_t prompt, int64_t token);
  void *user;
} kc_generate_options;

/* max_new 32, greedy, length_penalty 1, every filter off, no EOS. */
void kc_generate_defaults(kc_generate_options *o);
/*
 * Generate after each of count prompts at once (greedy or sampling): outs[i] (max_new tokens of
 * room) gets prompt i's tokens, nout[i] their count. Each prompt runs as a sequence of its own,
 * freed at the end.
 */
kc_status kc_generate_batch(kc_session *s, int32_t count, const int64_t *const *prompts,
                            const int64_t *nprompt, const kc_generate_options *o,
                            int64_t *const *outs, int64_t *nout);
/* Beam search after one prompt: out (max_new + 1 tokens of room) gets the best sequence (an EOS
 * that ended it included), *nout its length, *score (may be NULL) its score. The beams' caches
 * are reordered by forking sequences, never copied whole. */
kc_status kc_generate_beams(kc_session *s, const int64_t *prompt, int64_t nprompt,
                            const kc_generate_options *o, int64_t *out, int64_t *nout,
                            double *score);

/* ---- training ------------------------------------------------------------------------------
 * Training steps on a model with a scalar loss output (runtime/train.c; the optimizers, clipping
 * and accumulation are runtime/optim.c, checkpoints runtime/safetensors.c). The forward and
 * backward graph is one compiled module; parameters, their gradient sums and the optimizer state
 * are buffers the trainer owns. One thread at a time uses a trainer.
 */

typedef enum kc_optimizer { KC_OPTIM_ADAMW = 0, KC_OPTIM_SGD } kc_optimizer;

typedef struct kc_train_options {
  const char *target; /* as kc_compile_options.target */
  int threads;        /* as kc_compile_options.threads */
  kc_optimizer optimizer;
  double beta1, beta2, eps, weight_decay; /* AdamW as torch.optim.AdamW: bias correction,
                                             decoupled decay p -= lr*wd*p */
  double momentum;  /* SGD as torch.optim.SGD: buf = m*buf + g (first step buf = g), weight decay
                       coupled g += wd*p; 0: no momentum buffers */
  double clip_norm; /* > 0: clip by the global L2 norm over all gradients
                       (torch.nn.utils.clip_grad_norm_, eps 1e-6) */
  kc_checkpoint checkpoint;  /* gradient checkpointing (kc_grad_ex): none, sqrt, marked */
  const char *const *marked; /* KC_CKPT_MARKED: node-name globs of the values kept */
  int nmarked;
} kc_train_options;

/* AdamW with betas 0.9/0.999, eps 1e-8, weight decay 0.01; no clipping; the CPU. */
void kc_train_defaults(kc_train_options *o);

typedef struct kc_trainer kc_trainer;

/*
 * A trainer of `model` (not changed; it may be freed after) whose scalar float output `loss` is
 * minimized over the float weights matching one of the nparams fnmatch globs (a glob matching no
 * float weight is KC_ERR_INVALID_ARG); every other weight stays frozen. Parameters must be f32.
 */
kc_status kc_trainer_new(kc_context *ctx, const kc_graph *model, const char *loss, int nparams,
                         const char *const *params, const kc_train_options *o, kc_trainer **out);
/* NULL is fine. */
void kc_trainer_free(kc_trainer *t);
/* Forward and backward of one micro-batch (the model's inputs, by name); the gradients are added
 * to the sums since the last apply; *loss (may be NULL) gets the batch's loss. */
kc_status kc_trainer_accumulate(kc_trainer *t, const kc_tensor_desc *in, uint32_t nin,
                                double *loss);
/* The gradient sums divided by the micro-batches since the last apply, clipped, the optimizer
 * update in place, the sums zeroed. step is 1-based (AdamW's bias correction); lr and step are
 * arguments, so a schedule needs no recompilation. Without a micro-batch: KC_ERR_INVALID_ARG. */
kc_status kc_trainer_apply(kc_trainer *t, double lr, int64_t step);
/* kc_trainer_accumulate of one batch, then kc_trainer_apply. */
kc_status kc_trainer_step(kc_trainer *t, const kc_tensor_desc *in, uint32_t nin, double lr,
                          int64_t step, double *loss);
/* Number of parameters, and parameter i: name, dtype, dims and data = the live values (writable:
 * writing them sets the parameter; valid until kc_trainer_free). */
uint32_t kc_trainer_num_params(const kc_trainer *t);
kc_status kc_trainer_param(kc_trainer *t, uint32_t i, kc_tensor_desc *out);
/* The global L2 norm of the (averaged) gradients before clipping, at the last apply; 0 before. */
double kc_trainer_grad_norm(const kc_trainer *t);
/* The steps applied so far by kc_trainer_apply, or those a loaded checkpoint recorded. */
int64_t kc_trainer_steps(const kc_trainer *t);
/*
 * Checkpoints as safetensors: parameters under their names, AdamW state as NAME.exp_avg and
 * NAME.exp_avg_sq, SGD momentum as NAME.momentum_buffer, the optimizer and step count in
 * __metadata__ (gradient sums not yet applied are not saved). Load reads such a file into this
 * trainer: a missing or unexpected tensor, another dtype or shape, another optimizer or a
 * malformed file is an error naming it, and then nothing of the trainer has changed.
 */
kc_status kc_trainer_save(kc_trainer *t, const char *path);
kc_status kc_trainer_load(kc_trainer *t, const char *path);
/* Copy the trained values into g's weights of the same names (same dtype and shape), for ONNX
 * write-back and LoRA merging. A parameter g has no weight for is KC_ERR_INVALID_ARG. */
kc_status kc_trainer_write_weights(const kc_trainer *t, kc_graph *g);
/* The compiled forward + backward module (profiling, kc_module_peak_bytes); owned by t. */
kc_module *kc_trainer_module(const kc_trainer *t);

/* ---- ahead-of-time compilation ----------------------------------------------------------------
 */

typedef struct kc_export_options {
  const char *name;    /* C prefix of the entry points (kc_export_check_name must accept it);
                          NULL: from so_path (libNAME.so: NAME, or model_NAME when NAME alone
                          would be refused) */
  const char *passes;  /* as kc_compile_options.passes */
  const char *cc;      /* C compiler that links the library; NULL: "cc" (the kernc program
                          passes $CC) */
  const char *runtime; /* kernc's runtime archive; NULL: the build's, or the one next to the
                          running program (libkernc_rt.a); the kernc program passes $KERNC_RT */
  const char *source;  /* what g came from, named in the header's comment; may be NULL */

  const char *target;     /* "cpu" (NULL: the default) or "cuda": kernels compiled by NVRTC now and
                             embedded; the library then needs only the CUDA driver to run */
  const char *cuda_archs; /* "cuda": "80,86,90" (cubins; "compute_80": PTX, else PTX for the
                             lowest is added); NULL: "80,90" and PTX for compute_80 */
  const char *cpu; /* "cpu" target: the CPU the kernels are for. NULL or "native": this one (its
                      LLVM name and features; the library refuses CPUs lacking one); an LLVM 19
                      x86-64 CPU name: "x86-64-v2", "-v3", "-v4" (the psABI levels),
                      "skylake-avx512", "znver3"... (its features only); a comma-separated list
                      of up to 8, most portable first, or "multi" (= "x86-64-v2,x86-64-v3,
                      x86-64-v4"): kernels for each in one library, weights stored once, and
                      NAME_create picks the last one this CPU has every feature of (NAME_target
                      says which). Unknown names are KC_ERR_INVALID_ARG. */
} kc_export_options;

/*
 * KC_OK when name can be a model's C prefix (kc_export_options.name), else KC_ERR_INVALID_ARG
 * saying why: it must be a C identifier of at most 127 characters that is no C or C++ keyword,
 * does not start with _ or kc_/kernc_ (any case), is no macro of the standard headers (NULL,
 * INT64_MAX...) and does not make the header define a standard name (int64 gives int64_t, size
 * size_t, pthread pthread_create...).
 */
kc_status kc_export_check_name(kc_context *ctx, const char *name);
/*
 * Compile g ahead of time into the shared library so_path, which needs neither libkernc nor LLVM
 * (weights included), and write its C header to header_path (NULL: NAME.h next to so_path),
 * declaring NAME_create/_run/_free/_error (and, target "cpu", NAME_target: the CPU whose kernels
 * NAME_create runs, see kc_export_options.cpu) and listing inputs and outputs with dtypes and
 * shapes.
 * Sizes must follow from the input shapes; a graph whose sizes depend on computed data is
 * KC_ERR_UNSUPPORTED naming the node (kc_compile runs those). Target "cuda" writes the same entry
 * points and header; without the CUDA toolkit it is KC_ERR_UNSUPPORTED.
 */
kc_status kc_export(kc_context *ctx, const kc_graph *g, const kc_export_options *opts,
                    const char *so_path, const char *header_path);
/*
 * kc_export of a training step: the step kc_trainer_new(ctx, g, loss, nparams, params, o) runs
 * (forward + backward; o->target and o->threads unused: the target is opts->target, CPU only),
 * with the parameters' current values embedded as their initial values, and the entry points
 * NAME_train_new/_free/_step/_accumulate/_apply/_num_params/_param/_save/_load/_error declared
 * in the header (checkpoints in kc_trainer_save's format). NAME_create/_run run the step's graph
 * (the caller's inputs, then the parameters; the loss and every NAME.grad among the outputs).
 */
kc_status kc_export_train(kc_context *ctx, const kc_graph *g, const char *loss, int nparams,
                          const char *const *params, const kc_train_options *o,
                          const kc_export_options *opts, const char *so_path,
                          const char *header_path);

/* ---- ONNX frontend ------------------------------------------------------------------------- */

/* Load an ONNX model (external data read relative to its folder) into a new, typed graph. */
kc_status kc_onnx_load(kc_context *ctx, const char *path, kc_graph **out);
/*
 * Write the ONNX model src_onnx to dst_onnx with the initializers that name weights of g holding
 * g's data (trained or LoRA-merged weights); everything else is src's. The weights are inlined
 * (raw_data), or when they total more than 2e9 bytes written to "<dst_onnx>.data" next to it as
 * ONNX external data. A weight of g that src has no initializer for (unmerged LoRA adapters:
 * kc_lora_merge first) or whose dtype or dims differ is an error naming it; nothing is written.
 */
kc_status kc_onnx_save_weights(kc_context *ctx, const char *src_onnx, const kc_graph *g,
                               const char *dst_onnx);

#ifdef __cplusplus
}
#endif
#endif /* KERNC_H */

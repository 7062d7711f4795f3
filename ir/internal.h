/*
 * ir/internal.h - kernc's IR as seen by kernc's own modules (frontend, passes, codegen).
 *
 * Invariants:
 *   - A graph owns an arena; strings, dims, attributes and tensors live in it and die with
 *     kc_graph_free. Values and nodes live in growable arrays indexed by id, so a kc_val stays
 *     valid across reallocation; never keep a kc_value* or kc_node* across a call that adds one.
 *   - Value id 0 is "none". vals[v.id].def is the index+1 of the defining node (0: graph input).
 *   - nodes[] is in program (topological) order. Deleted nodes have op KC_OP_NOP until
 *     kc_graph_compact() drops them.
 *   - Symbolic dims are hash-consed in g->dexprs, so two equal dims are the same kc_dim.
 *   - Analyses (use counts) are recomputed on demand, never kept in sync by hand.
 */
#ifndef KERNC_IR_INTERNAL_H
#define KERNC_IR_INTERNAL_H

#include "kernc.h"

#include <pthread.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/stat.h>

/* ---- invariants ---------------------------------------------------------------------------- */

void kc_assert_fail(const char *file, int line, const char *expr);
/* For kernc's own invariants only; never for user input. */
#define KC_ASSERT(e) ((e) ? (void)0 : kc_assert_fail(__FILE__, __LINE__, #e))

/* ---- context ------------------------------------------------------------------------------- */

#define KC_ERRBUF_SIZE 8192

/* One thread's error message (ir/context.c). */
typedef struct kc_err_slot kc_err_slot;

struct kc_context {
  kc_options opts;
  kc_log_fn log_fn;
  void *log_user;
  /* Error messages, one per thread that reported one: runs of a module may be concurrent, and
   * each caller reads the message of its own failure. err_lock guards the list; a slot belongs
   * to its thread (only that thread writes or reads it). */
  pthread_mutex_t err_lock;
  kc_err_slot *errs;
};

/* Replace the error message with fmt...; returns s so callers can `return kc_errorf(...)`. */
kc_status kc_errorf(kc_context *ctx, kc_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Append a line to the error message (tool logs, notes). */
void kc_error_append(kc_context *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void kc_logf(kc_context *ctx, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* A file the user named, opened for reading only if it is a regular file (a FIFO or device
 * would block, a folder fails late): -1 / NULL with a KC_ERR_IO message set otherwise
 * (ir/file.c). kc_open_regular also fills st. */
int kc_open_regular(kc_context *ctx, const char *path, struct stat *st);
FILE *kc_fopen_regular(kc_context *ctx, const char *path);
/* The whole of a regular file, as kc_fopen_regular opens it, into *buf (malloc'd) and *len. */
kc_status kc_read_regular(kc_context *ctx, const char *path, unsigned char **buf, size_t *len);

/* ---- arena ---------------------------------------------------------------------------------- */

typedef struct kc_arena_chunk kc_arena_chunk;
typedef struct kc_arena {
  kc_arena_chunk *head;
} kc_arena;

/* Zeroed memory that lives as long as the arena; NULL only when out of memory. */
void *kc_arena_alloc(kc_arena *a, size_t size);
char *kc_arena_strdup(kc_arena *a, const char *s);
void *kc_arena_memdup(kc_arena *a, const void *p, size_t size);
void kc_arena_free(kc_arena *a);
/* A point to roll an arena back to: everything allocated after it is freed by release. */
typedef struct kc_arena_pos {
  kc_arena_chunk *head, *next; /* head chunk then, and the chunk that followed it */
  size_t used;                 /* head's fill then */
} kc_arena_pos;
kc_arena_pos kc_arena_mark(const kc_arena *a);
/* Free what was allocated since mark m of a (m still valid: not released past it before). */
void kc_arena_release(kc_arena *a, kc_arena_pos m);

/* ---- ops ------------------------------------------------------------------------------------- */

typedef enum kc_op {
  KC_OP_NOP = 0, /* a deleted node */
#define OP(id, ...) KC_OP_##id,
#include "ops.def"
#undef OP
  KC_OP_COUNT
} kc_op;

/* Fusion class of an op, after TVM's pattern kinds. */
typedef enum kc_op_class {
  KC_CLASS_SOURCE,    /* weights and constants */
  KC_CLASS_ELEMWISE,  /* out[i] = f(in[i]) */
  KC_CLASS_BROADCAST, /* elementwise with numpy broadcasting */
  KC_CLASS_INJECTIVE, /* each output element reads one input element (data movement) */
  KC_CLASS_REDUCE,    /* reduces or normalizes along axes */
  KC_CLASS_OPAQUE,    /* anything else */
} kc_op_class;

enum {
  KC_OPF_COMMUTATIVE = 1 << 0, /* inputs 0 and 1 may be swapped */
  KC_OPF_VIEW = 1 << 1,        /* output shares the input's buffer (reshape-like) */
  KC_OPF_BODY = 1 << 2,        /* node carries a body graph (fused regions) */
  KC_OPF_RANDOM = 1 << 3,      /* may draw random numbers (training-mode dropout) */
  KC_OPF_INPLACE = 1 << 4,     /* result 0 is input 0's storage, updated by the kernel */
};

struct kc_node;
typedef kc_status (*kc_shape_fn)(kc_graph *g, struct kc_node *n);

typedef struct kc_op_info {
  const char *name;
  int min_in, max_in, min_out, max_out; /* max -1: variadic */
  kc_shape_fn shape;
  kc_op_class cls;
  unsigned flags;
  const char *attrs; /* schema, see ops.def */
} kc_op_info;

extern const kc_op_info kc_ops[KC_OP_COUNT];
/* The op named name, or KC_OP_NOP. */
kc_op kc_op_lookup(const char *name);
/* An arity range as text: "2", "1 to 3" or "at least 1" (hi < 0: variadic). */
const char *kc_arity_text(int lo, int hi, char *buf, size_t size);

/* ---- attributes ------------------------------------------------------------------------------ */

typedef enum kc_attr_kind {
  KC_ATTR_INT,
  KC_ATTR_FLOAT,
  KC_ATTR_STRING,
  KC_ATTR_INTS,
  KC_ATTR_FLOATS,
  KC_ATTR_DTYPE,
  KC_ATTR_TENSOR, /* index into g->tensors */
} kc_attr_kind;

typedef struct kc_attr {
  const char *name;
  kc_attr_kind kind;
  union {
    int64_t i;
    double f;
    const char *s;
    kc_dtype t;
    uint32_t tensor;
    struct {
      const int64_t *v;
      uint32_t n;
    } ints;
    struct {
      const double *v;
      uint32_t n;
    } floats;
  } u;
} kc_attr;

/* ---- tensors (weights and constant data) ------------------------------------------------- */

typedef struct kc_tensor {
  const char *name; /* NULL: anonymous constant, printed inline */
  kc_dtype dtype;
  int rank;
  int64_t dims[KC_MAX_RANK];
  const void *data; /* NULL: not bound (e.g. a weight from a .kir file) */
  size_t nbytes;
} kc_tensor;

/* ---- symbolic dims ----------------------------------------------------------------------------
 */

/*
 * KC_DX_CONST is a negative integer (value in a): a negative kc_dim names an expression, so
 * negative coefficients and the -1 of a reshape shape tensor need an expression of their own.
 */
typedef enum kc_dexpr_kind {
  KC_DX_SYM,
  KC_DX_ADD,
  KC_DX_MUL,
  KC_DX_DIV,
  KC_DX_MOD,
  KC_DX_CONST
} kc_dexpr_kind;

typedef struct kc_dexpr {
  kc_dexpr_kind kind;
  const char *name; /* KC_DX_SYM */
  kc_dim a, b;      /* operands of the others */
} kc_dexpr;

#define KC_DIM_IS_SYM(d) ((d) < 0)
/* Expression index of a symbolic dim. */
#define KC_DIM_EXPR(d) ((uint32_t)(-(d)-1))

kc_dim kc_dim_div(kc_graph *g, kc_dim a, kc_dim b); /* floor division */
kc_dim kc_dim_mod(kc_graph *g, kc_dim a, kc_dim b);
kc_dim kc_dim_sub(kc_graph *g, kc_dim a, kc_dim b);
/* The dim for any integer v (negative ones become KC_DX_CONST expressions). */
kc_dim kc_dim_int(kc_graph *g, int64_t v);
/* True when d is an integer constant (negative included); its value goes to *v. */
bool kc_dim_const(const kc_graph *g, kc_dim d, int64_t *v);
/* True when b divides a exactly (12*S by 4, B*S by S); the quotient goes to *q. */
bool kc_dim_div_exact(kc_graph *g, kc_dim a, kc_dim b, kc_dim *q);
/*
 * A lower bound of d that holds for every value of its symbols (all sizes, so >= 0): true with
 * the bound in *lo, false when none is provable (a negative term, a division by a possible 0).
 * Sign questions about known values (is S-1 >= 0, can S+1 equal 0) are answered with it.
 */
bool kc_dim_lower(const kc_graph *g, kc_dim d, int64_t *lo);
/* Write d as the text IR does (never truncated, unlike kc_dim_str). */
void kc_dim_fprint(const kc_graph *g, kc_dim d, FILE *f);
/* Largest expression tree (nodes, shared ones counted where they occur) a dim may have. */
#define KC_DIM_MAX_NODES 1024
/* NULL when d can be a tensor's dim, else why not ("is negative", "divides by zero",
 * "overflows int64" (with every symbol 1), "is too large an expression"); ir/dim.c. */
const char *kc_dim_invalid(const kc_graph *g, kc_dim d);
/* A fresh symbol "unkN" for a size only known at run time. */
kc_dim kc_dim_fresh(kc_graph *g);
/* Parse a dim expression ("B*S+1") at *p, advancing it; -1... on error returns false. */
bool kc_dim_parse(kc_graph *g, const char **p, kc_dim *out);
/* Evaluate d with symbol values from lookup(user, name) (false if unbound). */
bool kc_dim_eval(const kc_graph *g, kc_dim d,
                 bool (*lookup)(void *user, const char *name, int64_t *v), void *user,
                 int64_t *out);
/* Copy dim d of graph src into graph dst (symbols matched by name). */
kc_dim kc_dim_import(kc_graph *dst, const kc_graph *src, kc_dim d);
/* A tensor of dtype t and these dims has more than INT64_MAX elements or bytes whatever its
 * symbols are (its integer dims multiply past it, none is 0); ir/verify.c. */
bool kc_type_overflows(const kc_graph *g, kc_dtype t, int rank, const kc_dim *dims);

/* ---- values and nodes -------------------------------------------------------------------------
 */

typedef struct kc_value {
  kc_dtype dtype;
  int rank; /* -1: not yet inferred */
  kc_dim dims[KC_MAX_RANK];
  uint32_t def;     /* index+1 of the defining node in g->nodes, 0 for graph inputs */
  uint32_t def_out; /* which output of that node */
  const char *name; /* graph input name, or the ONNX value name; may be NULL */
  /*
   * Known contents of small tensors (shapes, axes, indices, and the shape arithmetic exporters
   * write around them): nknown elements, each a kc_dim (constant or symbolic) that is exactly
   * the element's value, an integer, whatever the dtype (a float one only carries a size, e.g.
   * Cast(S) to float feeding a Range; see ir/shape.h kc_shp_fit). Filled by shape inference, so
   * Shape->Gather->Concat->Reshape chains resolve to static or symbolic shapes. NULL when
   * unknown.
   */
  const kc_dim *known;
  uint32_t nknown;
} kc_value;

typedef struct kc_node {
  kc_op op;
  uint32_t nin, nout, nattr;
  kc_val *in;  /* nin entries; id 0 = absent optional input */
  kc_val *out; /* nout entries */
  kc_attr *attrs;
  const char *loc; /* ONNX node name, for messages; may be NULL */
  kc_graph *body;  /* KC_OPF_BODY ops: the region, owned by this graph */
  uint32_t src;    /* parsed from text: 1 + the byte offset of its statement in the graph's
                      src_text (the verifier's file:line:col); 0: not from text */
} kc_node;

typedef struct kc_graph_output {
  kc_val v;
  const char *name;
} kc_output_slot;

struct kc_graph {
  kc_context *ctx;
  kc_arena arena;
  const char *name;

  kc_value *vals; /* [0] unused */
  uint32_t nvals, capvals;
  kc_node *nodes;
  uint32_t nnodes, capnodes;

  kc_val *inputs;
  uint32_t ninputs, capinputs;
  kc_output_slot *outputs;
  uint32_t noutputs, capoutputs;

  kc_tensor *tensors;
  uint32_t ntensors, captensors;

  kc_dexpr *dexprs;
  uint32_t ndexprs, capdexprs;
  uint32_t nfresh; /* counter for kc_dim_fresh */

  kc_graph **bodies; /* body graphs owned here (freed with this graph) */
  uint32_t nbodies, capbodies;

  kc_status sticky; /* first builder error */
  /* The safetensors file holding the weights' data, as the text IR names it on its "# kir"
   * line (weights="w.safetensors", relative to the .kir's folder); NULL for none. ir/ only
   * records the name: the program loads the file (tools/kir_weights.c). */
  const char *weights_file;
  /* A graph parsed from text keeps that text and its file name (its body graphs share them) for
   * the verifier's file:line:col messages about its nodes (kc_node.src); NULL otherwise. */
  const char *src_text, *src_file;

  /* Assumptions of shape inference (ir/shape.h kc_shp_assume): sizes it could not prove equal
   * and relied on, reported here when set (the plan builder turns them into run-time checks).
   * infer_node is the node kc_node_infer is inferring. Not copied by kc_graph_clone. */
  void (*assume)(void *user, const struct kc_node *n, int kind, kc_dim a, kc_dim b);
  void *assume_user;
  const struct kc_node *infer_node;
};

/* Kinds of kc_graph.assume: a == b; a broadcasts to b (a == b or a == 1); a <= b. */
enum { KC_ASSUME_EQ, KC_ASSUME_BCAST, KC_ASSUME_LE };

static inline kc_value *kc_value_of(const kc_graph *g, kc_val v) { return &g->vals[v.id]; }
static inline bool kc_val_ok(kc_val v) { return v.id != 0; }

/* A new value with no type yet (rank -1), defined by nothing. */
kc_val kc_graph_new_value(kc_graph *g);
/* Add a graph input value of the given type. */
kc_val kc_graph_add_input(kc_graph *g, const char *name, kc_dtype t, int rank, const kc_dim *dims);
/*
 * Append a node with nin inputs and nout fresh output values (written to outs, may be NULL);
 * attributes are attached afterwards with kc_node_set_*. Returns the node index.
 * Shapes are not inferred here; see kc_node_infer.
 */
uint32_t kc_graph_add_node(kc_graph *g, kc_op op, uint32_t nin, const kc_val *in, uint32_t nout,
                           kc_val *outs);
/* Same, but with existing (untyped, undefined) output values; used by the parser. */
uint32_t kc_graph_add_node_with_outputs(kc_graph *g, kc_op op, uint32_t nin, const kc_val *in,
                                        uint32_t nout, const kc_val *outs);
/* Add a tensor to the table; data is copied when copy is true, else borrowed (must outlive g). */
uint32_t kc_graph_add_tensor(kc_graph *g, const char *name, kc_dtype t, int rank,
                             const int64_t *dims, const void *data, bool copy);
/* A new body graph owned by g (for fused regions). */
kc_graph *kc_graph_new_body(kc_graph *g, const char *name);

/* Set attributes on node n (copies names, strings and arrays into the arena). */
void kc_node_set_int(kc_graph *g, uint32_t n, const char *name, int64_t v);
void kc_node_set_float(kc_graph *g, uint32_t n, const char *name, double v);
void kc_node_set_string(kc_graph *g, uint32_t n, const char *name, const char *v);
void kc_node_set_ints(kc_graph *g, uint32_t n, const char *name, uint32_t cnt, const int64_t *v);
void kc_node_set_floats(kc_graph *g, uint32_t n, const char *name, uint32_t cnt, const double *v);
void kc_node_set_dtype(kc_graph *g, uint32_t n, const char *name, kc_dtype v);
void kc_node_set_tensor(kc_graph *g, uint32_t n, const char *name, uint32_t tensor);

/* The attribute called name on node n, or NULL. */
const kc_attr *kc_node_attr(const kc_node *n, const char *name);
/* Attribute values with the op table's default when absent (and def when no default either). */
int64_t kc_node_int(const kc_node *n, const char *name, int64_t def);
double kc_node_float(const kc_node *n, const char *name, double def);
const char *kc_node_string(const kc_node *n, const char *name, const char *def);
/* Find the schema entry for attribute name of op: kind letter and default text; false if none. */
bool kc_op_attr_schema(kc_op op, const char *name, char *kind, const char **def, bool *required);

/* Run the op's shape function for node n, typing its outputs. */
kc_status kc_node_infer(kc_graph *g, uint32_t n);
/* Infer every node in order. */
kc_status kc_graph_infer(kc_graph *g);

/* Known contents of v (see kc_value.known); NULL when unknown. */
const kc_dim *kc_value_known(const kc_graph *g, kc_val v, uint32_t *n);
/* Number of elements of v when all dims are known, else -1. */
int64_t kc_value_numel(const kc_graph *g, kc_val v);
/* What the inferred size of slice node n assumes (ir/shape_index.c): dims that must not be
 * negative at run time, one per constant bound on a symbolic dim, which ONNX would otherwise
 * clamp (up to max; axis[i]: the sliced axis). Shape inference of n must have run. */
uint32_t kc_slice_requirements(kc_graph *g, const kc_node *n, kc_dim *req, int *axis, uint32_t max);

/*
 * What node n's inferred sizes and known contents assume that only a run's sizes can confirm
 * (ir/shape_require.c): each requirement is a dim that must be >= 0 at run time. Shape
 * inference of n must have run. A run that evaluates compiled sizes instead of re-inferring them
 * checks every node's requirements first.
 */
typedef enum kc_req_kind {
  KC_REQ_SLICE,   /* a slice bound on axis `index` lies within its dim (ONNX would clamp it) */
  KC_REQ_EXACT,   /* known values of output `index` fit its dtype exactly (no rounding, no wrap) */
  KC_REQ_RESHAPE, /* reshape: the result has as many elements as the input */
} kc_req_kind;

typedef struct kc_requirement {
  kc_dim dim; /* must be >= 0 at run time */
  kc_req_kind kind;
  int index;
} kc_requirement;

/* Enough entries for any node: slice bounds, 2 per known element (at most 64, ir/shape.h),
 * reshape. */
#define KC_REQ_MAX (4 * KC_MAX_RANK + 2 * 64 + 2)
/* n's requirements into req (at most max; KC_REQ_MAX holds all), their count. */
uint32_t kc_node_requirements(kc_graph *g, const kc_node *n, kc_requirement *req, uint32_t max);
/* The run's error message for requirement r of n, naming n and what was assumed; returns buf. */
const char *kc_requirement_text(kc_graph *g, const kc_node *n, const kc_requirement *r, char *buf,
                                size_t size);

/* The axis of cumsum node n, normalized, when its axis input is known and in range. */
bool kc_cumsum_axis(const kc_graph *g, const kc_node *n, int *axis);

/*
 * How the scale (input 1) of quantize_linear / dequantize_linear node n maps onto input 0
 * (ir/shape_quant.c): one element for all, element l of a 1-D scale for index l along axis, or
 * blocked (x's rank; index l along axis reads l / block_size). *axis: the normalized axis.
 */
typedef enum kc_quant_mode { KC_QUANT_TENSOR, KC_QUANT_AXIS, KC_QUANT_BLOCKED } kc_quant_mode;
kc_quant_mode kc_quant_mode_of(const kc_graph *g, const kc_node *n, int *axis);

/* Error about node n: prefixes "node '<loc>' (<op>): " and returns s. */
kc_status kc_node_errorf(kc_graph *g, const kc_node *n, kc_status s, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* That prefix without the colon, "node 'loc' (op, %N)" or "node %N (op)", into buf. */
const char *kc_node_what(const kc_node *n, char *buf, size_t size);
/* Record the first builder error on g (sticky). */
void kc_graph_fail(kc_graph *g, kc_status s);

/* Replace every use of old (node inputs and graph outputs) with new. */
void kc_graph_replace_uses(kc_graph *g, kc_val old, kc_val new_v);
/*
 * Deep copy of g (values, nodes, attributes, tensors, dims, bodies) with the same ids. With
 * share_data the clone's tensors point at g's data (g must then outlive the clone), else the
 * data is copied into the clone's arena. NULL when out of memory.
 */
kc_graph *kc_graph_clone(const kc_graph *g, bool share_data);
/* Retype every value, weight, constant and cast target of float dtype `from` to `to` (f32 <->
 * f64; data converted) and re-infer (ir/graph_promote.c). */
kc_status kc_graph_promote(kc_graph *g, kc_dtype from, kc_dtype to);
/* Make every float weight whose name matches one of the fnmatch patterns a graph input of the same
 * name (appended in definition order); *nconverted (may be NULL) counts them. Their data stays
 * readable through kc_graph_weight_data (ir/graph_params.c). */
kc_status kc_graph_weights_to_inputs(kc_graph *g, int npat, const char *const *pat,
                                     uint32_t *nconverted);
/* The tensor of the weight named name (also after kc_graph_weights_to_inputs), or NULL. */
const kc_tensor *kc_graph_weight_data(const kc_graph *g, const char *name);
/* Drop KC_OP_NOP nodes and renumber nothing (ids are stable). */
void kc_graph_compact(kc_graph *g);
/* Number of uses of each value (array of g->nvals, caller frees). */
uint32_t *kc_graph_use_counts(const kc_graph *g);

/* Printing helpers shared by print.c and dot.c. */
void kc_type_fprint(const kc_graph *g, FILE *f, kc_val v);
/* kc_graph_print with text after "# kir 1  " on the first line (pass manager: "after=X (i/n)"). */
kc_status kc_graph_print_header(const kc_graph *g, FILE *f, const char *header);
/* Shortest text that reads back to the same double / float bits. */
void kc_fmt_double(char *buf, size_t size, double v);
void kc_fmt_float(char *buf, size_t size, float v);

/* f16 / bf16 conversions (bit patterns). */
float kc_f16_to_f32(uint16_t h);
uint16_t kc_f32_to_f16(float f);
float kc_bf16_to_f32(uint16_t h);
uint16_t kc_f32_to_bf16(float f);

/* dtype class helpers */
bool kc_dtype_is_float(kc_dtype t);
bool kc_dtype_is_int(kc_dtype t);

#endif /* KERNC_IR_INTERNAL_H */

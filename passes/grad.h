/*
 * passes/grad.h - reverse-mode autodiff inside kernc: the gradient rules of ir/ops.def's GRAD
 * column, the call a rule receives, and the helpers rules share (passes/grad_util.c).
 *
 * A rule is kc_status kc_grad_<rule>(kc_grad_call *c): from the forward node (a copy in c->n; its
 * in/out/attrs live in the graph's arena, so they stay valid while the rule appends nodes) and
 * the adjoints of its results (c->dout[j], id 0: zero), it appends nodes that compute the
 * adjoints of the inputs c->want[i] asks for and writes them to c->din[i] (id 0: zero), each
 * with the dtype and shape of input i. A rule never writes an adjoint nobody wants, so frozen
 * branches are not built. Rules use the builder (kernc.h) and report failures as kc_status with
 * the node named (kc_node_errorf); the builder's sticky error is turned into that status by the
 * engine after each rule.
 *
 * Composite rules (fused ops) append their primitive decomposition as forward nodes and
 * differentiate those with kc_grad_local, the engine run on a range of nodes.
 *
 * Invariant: a rule adds nodes only at the end of the graph, so program order holds.
 */
#ifndef KERNC_PASSES_GRAD_H
#define KERNC_PASSES_GRAD_H

#include "ir/internal.h"

/* The `saves` bits of the GRAD column: which forward values a rule reads. */
#define KC_GS_IN(i) (1u << (i))
#define KC_GS_OUT(i) (1u << (16 + (i)))
#define KC_GS_INS 0xffffu

#define KC_GRAD_MAX_IO 64

typedef struct kc_grad_call {
  kc_graph *g;
  uint32_t node; /* index of the forward node (valid while rules only append) */
  kc_node n;     /* copy of it */
  const kc_val *dout;
  const bool *want;
  kc_val *din;
} kc_grad_call;

typedef kc_status (*kc_grad_rule)(kc_grad_call *c);

/* One row's GRAD column. */
typedef struct kc_grad_entry {
  const char *name; /* the rule's name in ops.def ("none", "todo", "mul"...) */
  kc_grad_rule fn;
  unsigned saves;
} kc_grad_entry;

/* The GRAD column, indexed by kc_op (KC_OP_NOP: none). */
extern const kc_grad_entry kc_grad_table[KC_OP_COUNT];

/* Every rule of the table (duplicates are harmless declarations). */
#define OP(...)
#define GRAD(rule, saves) kc_status kc_grad_##rule(kc_grad_call *c);
#include "ir/ops.def"
#undef OP
#undef GRAD

/*
 * Differentiate the nodes [first, g->nnodes) that a composite rule appended: seeds[k] is the
 * adjoint of value outs[k]; writes to din[i] the adjoint of value ins[i] when want[i]. The nodes
 * must read ins, and may read anything defined before first.
 */
kc_status kc_grad_local(kc_graph *g, uint32_t first, uint32_t nouts, const kc_val *outs,
                        const kc_val *seeds, uint32_t nins, const kc_val *ins, const bool *want,
                        kc_val *din);

/* ---- helpers for rules (passes/grad_util.c); all return kc_val{0} on a builder failure --- */

/* A scalar constant of dtype t (a float type) with value v. */
kc_val kc_gu_scalar(kc_graph *g, kc_dtype t, double v);
/* The same, of v's dtype. */
kc_val kc_gu_like(kc_graph *g, kc_val like, double v);
/* Zeros of like's dtype and shape. */
kc_val kc_gu_zeros(kc_graph *g, kc_val like);
/* Sum d (an adjoint of the broadcast result) down to the shape of x: leading axes are summed
 * away, axes where x has 1 and d not are summed keeping them. Symbolic dims compare by identity
 * (a symbol against 1 is summed; summing an axis of size 1 changes nothing). */
kc_val kc_gu_unbroadcast(kc_graph *g, kc_val d, kc_val x);
/* Adjoint a + b, either may be none. */
kc_val kc_gu_accum(kc_graph *g, kc_val a, kc_val b);
/* reduce_sum(x) over one axis (normalized), keepdims. */
kc_val kc_gu_sum_axis(kc_graph *g, kc_val x, int64_t axis);
/* An i64 1-D tensor holding dims (static or symbolic: built from the shapes of graph inputs,
 * through shape/slice/mul, so shape inference knows its contents). */
kc_val kc_gu_shape_of_dims(kc_graph *g, int rank, const kc_dim *dims);
/* The axis value a node gives (negative counts from the end), normalized to [0, rank). */
int kc_gu_axis(int64_t axis, int rank);
/* The known i64 contents of v (a constant or inferred), up to max into out; false if unknown or
 * not all constant. */
bool kc_gu_known_ints(const kc_graph *g, kc_val v, int64_t *out, uint32_t max, uint32_t *n);
/* Append a node of op reading in, with nout fresh results (written to outs, may be NULL for
 * one) and a copy of like's attributes and loc (like may be NULL); override attributes with
 * kc_node_set_*, then type it with kc_gu_finish. UINT32_MAX after a failure (sticky error). */
uint32_t kc_gu_node(kc_graph *g, kc_op op, uint32_t nin, const kc_val *in, uint32_t nout,
                    kc_val *outs, const kc_node *like);
/* Type node ni (from kc_gu_node): its first result, or kc_val{0} with the sticky error set. */
kc_val kc_gu_finish(kc_graph *g, uint32_t ni);
/* Reverse the last two axes. */
kc_val kc_gu_transpose_last2(kc_graph *g, kc_val x);

#endif /* KERNC_PASSES_GRAD_H */

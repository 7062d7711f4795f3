/*
 * passes/match.h - declarative rewrite rules: patterns as static const rows, one matcher, and a
 * driver that runs a rule set to a fixpoint (tinygrad's PatternMatcher, MLIR's DRR).
 *
 * A pattern is an array of rows; row 0 matches the root, every other row is reached from it
 * through P_SUB operands. A row named by several operands is one node read several times
 * (x - mean in a layer norm feeds both the variance and the division), so patterns are DAGs.
 * Each row names the op (or alternatives), an optional predicate on the node (attributes), and
 * what each operand must be:
 *
 *   enum { X, C };                         capture slots, named by the rule's author
 *   // div(x, c) with c a float constant  ->  mul(x, 1/c)
 *   static const kc_pat div_const[] = {
 *     P_OP(DIV, P_CAP(X), P_CONST_FLOAT(C)),
 *   };
 *   static kc_status div_to_mul(kc_rewriter *rw, const kc_match *m) {
 *     kc_val r = ...reciprocal constant of m->cap[C]...;
 *     kc_val in[2] = {m->cap[X], r};
 *     kc_rw_replace(rw, kc_rw_out(rw, m, 0), kc_rw_op(rw, KC_OP_MUL, 2, in));
 *     return KC_OK;
 *   }
 *   static const kc_rule rules[] = {KC_RULE("div-const", div_const, div_to_mul)};
 *   ... kc_rules_run(g, pc, rules, KC_LEN(rules), false);
 *
 * The matcher, not the rules, owns what every rewrite must respect:
 *   - an interior node (matched by a row other than 0) is read only by the matched nodes (one
 *     use, for a row named once), and none of its results is a graph output, so the rewrite may
 *     drop it;
 *   - a commutative op (KC_OPF_COMMUTATIVE) matches its first two operands in either order, with
 *     backtracking: a choice that fails deeper is undone and the other order tried;
 *   - a capture slot used twice must see the same value both times;
 *   - operands past the row's list must be absent (unless the row ends with P_REST).
 * When a pattern fails after matching some rows it says why ("row 2: interior %12 (mul) has 2
 * uses"): the reason of the attempt that matched most rows, which --explain-fusion prints.
 *
 * Rewrites build through the kc_rw_* calls: new nodes are placed right before the root (program
 * order stays valid because they read only values the match saw, all defined before the root),
 * replacements are applied when the callback returns, after the driver checked that each new
 * value has the type of the one it replaces (else the rewrite is undone and reported), and nodes
 * the rewrite left without uses are deleted at once, so use counts stay exact for later matches.
 * Invariants: patterns are static const data (no global mutable state); the driver leaves the
 * graph compacted, in program order, with dead nodes removed; node indices (and kc_node
 * pointers) do not survive kc_rw_node, value ids do.
 */
#ifndef KERNC_PASSES_MATCH_H
#define KERNC_PASSES_MATCH_H

#include "ir/internal.h"
#include "passes/passes.h"

#define KC_PAT_MAX_OPS 4    /* alternatives per row */
#define KC_PAT_MAX_ARGS 8   /* operands per row */
#define KC_PAT_MAX_ROWS 16  /* rows per pattern */
#define KC_PAT_MAX_SLOTS 16 /* capture slots per pattern */

#define KC_LEN(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* What an operand of a row must be. */
typedef enum kc_arg_kind {
  KC_ARG_END = 0, /* no more operands: the node's further inputs must be absent */
  KC_ARG_ANY,     /* anything, absent included */
  KC_ARG_ABSENT,  /* an absent optional input */
  KC_ARG_SUB,     /* result 0 of a node matched by row `index` (an interior node) */
  KC_ARG_CAP,     /* any present value, bound to slot `index` */
  KC_ARG_CONST,   /* a value defined by a `constant` node with data, bound to slot `index` */
  KC_ARG_REST,    /* the remaining operands are not looked at */
} kc_arg_kind;

/* Extra checks on a KC_ARG_CONST operand. */
typedef enum kc_const_check {
  KC_CC_NONE = 0,
  KC_CC_SCALAR, /* exactly one element */
  KC_CC_EQ,     /* every element equals `value` (numeric dtypes, bool as 0/1) */
  KC_CC_FLOAT,  /* a float dtype (f32, f16, bf16, f64) */
  KC_CC_INTS,   /* an i64 or i32 scalar or vector */
} kc_const_check;

typedef struct kc_pat_arg {
  kc_arg_kind kind;
  int index; /* row for KC_ARG_SUB, slot for KC_ARG_CAP and KC_ARG_CONST */
  kc_const_check check;
  double value; /* KC_CC_EQ */
} kc_pat_arg;

/* A check on a matched node (attributes); on false it writes the reason ("axis is 1, not last"). */
typedef bool (*kc_pat_pred)(const kc_graph *g, const kc_node *n, char *why, size_t size);

typedef struct kc_pat {
  kc_op ops[KC_PAT_MAX_OPS]; /* the node's op is one of these; ops[0] == KC_OP_NOP: any op */
  kc_pat_pred pred;          /* NULL: none */
  kc_pat_arg args[KC_PAT_MAX_ARGS];
} kc_pat;

/* Operands. */
/* clang-format off */
#define P_SUB(row)           {.kind = KC_ARG_SUB, .index = (row)}
#define P_CAP(slot)          {.kind = KC_ARG_CAP, .index = (slot)}
#define P_CONST(slot)        {.kind = KC_ARG_CONST, .index = (slot)}
#define P_CONST_SCALAR(slot) {.kind = KC_ARG_CONST, .index = (slot), .check = KC_CC_SCALAR}
#define P_CONST_EQ(slot, v)  {.kind = KC_ARG_CONST, .index = (slot), .check = KC_CC_EQ, .value = (v)}
#define P_CONST_FLOAT(slot)  {.kind = KC_ARG_CONST, .index = (slot), .check = KC_CC_FLOAT}
#define P_CONST_INTS(slot)   {.kind = KC_ARG_CONST, .index = (slot), .check = KC_CC_INTS}
#define P_ANY                {.kind = KC_ARG_ANY}
#define P_ABSENT             {.kind = KC_ARG_ABSENT}
#define P_REST               {.kind = KC_ARG_REST}

/* Rows: op, op with a predicate, alternatives (op A or op B...), any op. At least one operand. */
#define P_OP(op, ...)             {.ops = {KC_OP_##op}, .args = {__VA_ARGS__}}
#define P_OPIF(op, pred_fn, ...)  {.ops = {KC_OP_##op}, .pred = (pred_fn), .args = {__VA_ARGS__}}
#define P_OP2(a, b, ...)          {.ops = {KC_OP_##a, KC_OP_##b}, .args = {__VA_ARGS__}}
#define P_OP2IF(a, b, pred_fn, ...) \
  {.ops = {KC_OP_##a, KC_OP_##b}, .pred = (pred_fn), .args = {__VA_ARGS__}}
#define P_OP3(a, b, c, ...)       {.ops = {KC_OP_##a, KC_OP_##b, KC_OP_##c}, .args = {__VA_ARGS__}}
#define P_OP4(a, b, c, d, ...) \
  {.ops = {KC_OP_##a, KC_OP_##b, KC_OP_##c, KC_OP_##d}, .args = {__VA_ARGS__}}
#define P_OP4IF(a, b, c, d, pred_fn, ...) \
  {.ops = {KC_OP_##a, KC_OP_##b, KC_OP_##c, KC_OP_##d}, .pred = (pred_fn), .args = {__VA_ARGS__}}
#define P_ANYOP(pred_fn, ...)     {.ops = {KC_OP_NOP}, .pred = (pred_fn), .args = {__VA_ARGS__}}
/* clang-format on */

/* What a successful match found. */
typedef struct kc_match {
  int nrows;
  uint32_t node[KC_PAT_MAX_ROWS]; /* node index matched by each row; node[0] is the root */
  kc_val cap[KC_PAT_MAX_SLOTS];   /* value bound to each slot; id 0: the slot was not used */
} kc_match;

/* Use counts (graph outputs included) and graph-output flags per value, as the matcher reads
 * them. */
typedef struct kc_uses {
  uint32_t *count;
  bool *output;
  uint32_t n, cap; /* entries valid, entries allocated */
} kc_uses;

/* Compute u for g (u->count/output malloc'd; free with kc_uses_free). */
kc_status kc_uses_compute(const kc_graph *g, kc_uses *u);
void kc_uses_free(kc_uses *u);

/* Is the pattern well formed (sub-rows name rows other than 0 and their own, every row reached
 * from row 0, slots in range)? The reason goes to why. */
bool kc_pat_check(const kc_pat *pat, int nrows, char *why, size_t size);
/* Does row 0's op list admit op? (The driver tries a pattern only on such roots.) */
bool kc_pat_root_op(const kc_pat *pat, kc_op op);
/*
 * Match pat (nrows rows) with row 0 at node `root`. True with *m filled; false with the reason
 * in why ("row 2 (add): interior %12 (mul) has 2 uses"), why may be NULL.
 */
bool kc_pat_match(const kc_graph *g, const kc_uses *u, const kc_pat *pat, int nrows, uint32_t root,
                  kc_match *m, char *why, size_t size);

/* ---- rules and the driver ---------------------------------------------------------------- */

typedef struct kc_rewriter kc_rewriter;

/*
 * Build the replacement of a match. Return KC_OK after kc_rw_replace (rewritten), or KC_OK
 * through kc_rw_decline (nothing changes; the reason goes to --explain-fusion); any other status
 * stops the pass with that error.
 */
typedef kc_status (*kc_rewrite_fn)(kc_rewriter *rw, const kc_match *m);

typedef struct kc_rule {
  const char *name;
  const kc_pat *pat;
  int nrows;
  kc_rewrite_fn rewrite;
} kc_rule;

#define KC_RULE(name, pat, fn)                                                                     \
  { (name), (pat), KC_LEN(pat), (fn) }

/*
 * Run rules over g until none fires (a fixpoint), then delete dead nodes. Nodes are visited in
 * program order and, per node, rules in array order: the first that matches and rewrites wins.
 * With explain (and pc->opts->explain_fusion), every rewrite and, at the fixpoint, every
 * candidate root whose op a pattern's row 0 admits is reported on pc->log with the reason.
 * pc->changed is set when anything was rewritten.
 */
kc_status kc_rules_run(kc_graph *g, kc_pass_ctx *pc, const kc_rule *rules, int nrules,
                       bool explain);

/* The graph being rewritten. */
kc_graph *kc_rw_graph(const kc_rewriter *rw);
/* Result j of the node matched by row `row`. */
kc_val kc_rw_out(const kc_rewriter *rw, const kc_match *m, int row, uint32_t j);
/* Number of uses of v (graph outputs count) before this rewrite. */
uint32_t kc_rw_uses(const kc_rewriter *rw, kc_val v);
/* Is v a graph output? */
bool kc_rw_is_output(const kc_rewriter *rw, kc_val v);
/*
 * A new node placed before the root: nin inputs, nout fresh results (written to outs, may be
 * NULL). Set attributes with kc_node_set_* on the returned index; results are typed when the
 * rewrite returns, or now with kc_rw_infer. UINT32_MAX when out of memory: return KC_OK then,
 * the driver reports it.
 */
uint32_t kc_rw_node(kc_rewriter *rw, kc_op op, uint32_t nin, const kc_val *in, uint32_t nout,
                    kc_val *outs);
/* Type the results of new node ni now (to read them in the rewrite). */
kc_status kc_rw_infer(kc_rewriter *rw, uint32_t ni);
/* A new one-result node without attributes, typed now; {0} on failure (error on the context). */
kc_val kc_rw_op(kc_rewriter *rw, kc_op op, uint32_t nin, const kc_val *in);
/* A new anonymous constant (data copied); {0} when out of memory. */
kc_val kc_rw_const(kc_rewriter *rw, kc_dtype t, int rank, const int64_t *dims, const void *data);
/* A new 1-D i64 constant of n values. */
kc_val kc_rw_const_i64s(kc_rewriter *rw, int n, const int64_t *v);
/* Every use of old (node inputs and graph outputs) reads new_v once the rewrite returns. */
void kc_rw_replace(kc_rewriter *rw, kc_val old, kc_val new_v);
/* Give up on this match; fmt says why (for --explain-fusion). Returns KC_OK. */
kc_status kc_rw_decline(kc_rewriter *rw, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* ---- constants, for predicates and rewrites ------------------------------------------------ */

/* The tensor of the `constant` node defining v when it has data, else NULL. */
const kc_tensor *kc_const_tensor(const kc_graph *g, kc_val v);
/* Number of elements of t. */
size_t kc_tensor_numel(const kc_tensor *t);
/* Element i of t as a double (bool 0/1; u64/i64 rounded). */
double kc_tensor_get(const kc_tensor *t, size_t i);
/* Store x into element i of t's layout at data (floats rounded to the dtype, ints truncated). */
void kc_tensor_put(kc_dtype t, void *data, size_t i, double x);

#endif /* KERNC_PASSES_MATCH_H */

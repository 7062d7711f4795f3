/*
 * passes/passes.h - the pass manager: the registry of passes, named pipelines, and running a
 * pipeline with instrumentation (print before/after, print-changed, dump-dir, verify-each).
 *
 * A pass is a name and a function over a graph; it reports failure through kc_status and the
 * context's error buffer like every kc_ call. Passes never print or verify themselves: the manager
 * does that around them (MLIR's instrumentation), so every pass gets it for free.
 * Invariants: the registry and the pipeline table are static const (no global mutable state);
 * a kc_pipeline is a plain value that owns nothing.
 */
#ifndef KERNC_PASSES_H
#define KERNC_PASSES_H

#include "kernc.h"

#include <stdbool.h>
#include <stdio.h>

struct kc_pass_options;

/*
 * Computes constants for the passes (fold): the passes sit upstream of code generation and the
 * runtime, so they never compile or run anything themselves; the compiler driver (kc_compile,
 * kc_export, `kernc opt`) hands them an evaluator through kc_pass_options.eval, which a pass
 * reads as pc->opts->eval.
 * eval(user, g, out): g has no inputs and every source of it has data; compute its outputs.
 * On KC_OK out[k], for each output k of g, holds its dtype, rank, dims and data, malloc'd by the
 * evaluator and freed by the caller (free(out[k].data)); on failure nothing is left allocated and
 * the error is on g's context. A failure is not fatal: fold leaves those nodes to run time.
 */
typedef struct kc_evaluator {
  kc_status (*eval)(void *user, const kc_graph *g, kc_tensor_desc *out);
  void *user;
} kc_evaluator;

/* What a running pass sees besides its graph. */
typedef struct kc_pass_ctx {
  kc_context *ctx;
  const char *name; /* the running pass */
  int index, count; /* its position in the pipeline, 1-based, and the pipeline's length */
  bool changed;     /* a pass may set it when it rewrote something (informational) */
  const struct kc_pass_options *opts; /* the run's options (never NULL) */
  FILE *log; /* where passes write what the options ask for (--explain-fusion); never NULL */
} kc_pass_ctx;

typedef struct kc_pass {
  const char *name; /* as written in --passes */
  kc_status (*run)(kc_graph *g, kc_pass_ctx *pc);
  const char *help; /* one line for `kernc opt --list-passes` */
} kc_pass;

#define KC_MAX_PIPELINE 128

/* A sequence of passes to run in order (a pass may appear more than once). */
typedef struct kc_pipeline {
  const kc_pass *passes[KC_MAX_PIPELINE];
  int n;
} kc_pipeline;

/* Instrumentation around a pipeline run; zero-initialized means none. */
typedef struct kc_pass_options {
  bool print_before_all;
  bool print_after_all;
  bool print_changed;       /* print after a pass only when the printed IR differs */
  bool verify_each;         /* verify after every pass (also on: ctx options, or a debug build) */
  bool no_print_on_fail;    /* do not print the IR when a pass or the verifier fails */
  const char *print_before; /* comma separated pass names; NULL for none */
  const char *print_after;
  const char *dump_dir;     /* write DIR/00_input.kir, then DIR/NN_<pass>.kir after each pass */
  bool dump_dot;            /* dump_dir files are graphviz dot instead (NN_<pass>.dot) */
  FILE *out;                /* where printed IR and explanations go; NULL: stderr */
  bool explain_fusion;      /* rewrite passes say, per candidate root, why a pattern did not fire */
  FILE *explain_out;        /* where those explanations go; NULL: out (the program: stderr) */
  int64_t fold_limit;       /* fold: largest result folded, in elements; 0: KC_FOLD_LIMIT */
  const kc_evaluator *eval; /* computes constants for fold; NULL: nothing is folded */
} kc_pass_options;

/* Results larger than this many elements are not folded by default. */
#define KC_FOLD_LIMIT 65536
/* Evaluations one fold run makes at most: one when everything evaluates, a few per node that
 * does not (found by halving; the rest is left to run time once the budget is spent). */
#define KC_FOLD_MAX_EVALS 32
/* Folded results up to this many elements become inline constants, larger ones named weights. */
#define KC_FOLD_INLINE_MAX 64

/* Number of registered passes, and pass i of the registry (NULL when out of range). */
int kc_pass_count(void);
const kc_pass *kc_pass_at(int i);
/* The registered pass named name, or NULL. */
const kc_pass *kc_pass_lookup(const char *name);

/* Number of named pipelines, name and pass list of pipeline i (NULL when out of range). */
int kc_pipeline_count(void);
const char *kc_pipeline_name(int i);
const char *kc_pipeline_text(int i);

/* Parse "a,b,c": pass names or pipeline names (expanded); blanks ignored, "" is no passes.
 * An unknown name is KC_ERR_INVALID_ARG, with a message listing the known passes. */
kc_status kc_pipeline_parse(kc_context *ctx, const char *text, kc_pipeline *out);
/* The named pipeline (e.g. "default"). */
kc_status kc_pipeline_named(kc_context *ctx, const char *name, kc_pipeline *out);
/* The default pipeline of a target: the pipeline named like the target ("cpu"), else "default". */
kc_status kc_pipeline_for_target(kc_context *ctx, const char *target, kc_pipeline *out);
/* Run p on g with instrumentation opts (NULL: none). Stops at the first failing pass; the error
 * names the pass. */
kc_status kc_pipeline_run(const kc_pipeline *p, kc_graph *g, const kc_pass_options *opts);

/* The registered passes (one file each in passes/). */
extern const kc_pass kc_pass_infer;
extern const kc_pass kc_pass_dce;
extern const kc_pass kc_pass_cse;
extern const kc_pass kc_pass_canonicalize;
extern const kc_pass kc_pass_fold;
extern const kc_pass kc_pass_merge_matmul;
extern const kc_pass kc_pass_fuse_quant;
extern const kc_pass kc_pass_fuse_norm;
extern const kc_pass kc_pass_fuse_gelu;
extern const kc_pass kc_pass_fuse_attention;
extern const kc_pass kc_pass_fuse_epilogue;
extern const kc_pass kc_pass_fuse_elementwise;
extern const kc_pass kc_pass_derive_decode;

/* The decode step of causal decoder g, in place (passes/derive_decode.c: the KV-cache inputs,
 * attentions over the cache, positions from the past lengths); KC_ERR_UNSUPPORTED naming the
 * node when g mixes positions in a way a cached step cannot reproduce. */
kc_status kc_derive_decode(kc_graph *g);

#endif /* KERNC_PASSES_H */

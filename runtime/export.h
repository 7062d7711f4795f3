/*
 * runtime/export.h - private to kc_export (runtime/export*.c): the plan of a compiled model as
 * host data (the tables of codegen/aot.h with host pointers, plus what only the compiler needs:
 * the kc_dim of every slot and the weights to pack), and the steps that turn it into files.
 *
 * Invariants: every array of the plan is malloc'd and freed by kc_export_plan_free; strings
 * point into the compiled graph (which outlives the plan) or into plan->names.
 */
#ifndef KERNC_RUNTIME_EXPORT_H
#define KERNC_RUNTIME_EXPORT_H

#include "codegen/aot.h"
#include "runtime/internal.h"

typedef struct kc_export_weight {
  const void *data;
  size_t bytes;
  int64_t off; /* in the weights file, a multiple of KC_RT_ALIGN */
} kc_export_weight;

typedef struct kc_export_plan {
  kc_aot_model model; /* fn/units/weights/eval_dims unset: the object supplies them */
  kc_aot_value *values;
  kc_aot_step *steps;
  kc_aot_io *inputs, *outputs;
  kc_aot_idim *idims;
  const char **syms;
  int64_t *buf_values, *dim_slots, *arena_order;
  kc_dim *slot_dims; /* per slot: the dim of the compiled graph it evaluates */
  char **req_text;   /* per requirement slot (model.first_req on): which node assumed what */
  int64_t nreq;      /* entries of req_text made so far */
  kc_export_weight *weights;
  int64_t nweights;
  char **names; /* strings made here (input names for unnamed inputs, dim texts) */
  int64_t nnames;
} kc_export_plan;

/* export_plan.c: the tables of m (passes run, lowered, kc_rt_analyze done); KC_ERR_UNSUPPORTED
 * naming the node when a size does not follow from the input shapes. */
kc_status kc_export_plan_build(kc_module *m, const char *name, kc_export_plan *p);
void kc_export_plan_free(kc_export_plan *p);

/* export_link.c: write the weights of p into path, back to back at their offsets. */
kc_status kc_export_write_weights(kc_context *ctx, const kc_export_plan *p, const char *path);
/* export_link.c: the runtime archive to link (opts->runtime, $KERNC_RT, the build's, or next
 * to the running program), into buf. */
kc_status kc_export_find_runtime(kc_context *ctx, const char *given, char *buf, size_t size);
/* export_link.c: link obj_path and the runtime archive into the shared library so_path with the
 * C compiler cc (NULL: $CC, else "cc"); its output is in the error when it fails. */
kc_status kc_export_link(kc_context *ctx, const char *cc, const char *obj_path, const char *runtime,
                         const char *so_path);

/* export_header.c: the C header of the model (see kc_export in kernc.h); cpu is LLVM's name of
 * the CPU the kernels were built for. */
kc_status kc_export_header(kc_context *ctx, const kc_graph *g, const kc_export_plan *p,
                           const char *source, const char *cpu, const char *so_path,
                           const char *path);

/* export_cuda.c, target "cuda": the kernels as the CUDA JIT builds them (filling
 * m->kernels[].no_kernel), compiled by NVRTC for archs (kc_export_options.cuda_archs); the
 * device blob of codegen/aot_cuda.h for plan p into path; the images as text ("sm_80, ...");
 * free (NULL is fine). */
typedef struct kc_export_cuda kc_export_cuda;
kc_status kc_export_cuda_lower(kc_module *m, const char *archs, kc_export_cuda **out);
kc_status kc_export_cuda_write(kc_export_cuda *c, const kc_export_plan *p, const char *path);
void kc_export_cuda_describe(const kc_export_cuda *c, char *buf, size_t size);
void kc_export_cuda_free(kc_export_cuda *c);

#endif /* KERNC_RUNTIME_EXPORT_H */

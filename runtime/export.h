/*
 * runtime/export.h - private to kc_export (runtime/export*.c) and the targets' export rows: the
 * steps that turn a module's plan (runtime/plan_build.c) into a shared library and a header.
 */
#ifndef KERNC_RUNTIME_EXPORT_H
#define KERNC_RUNTIME_EXPORT_H

#include "codegen/aot.h"
#include "runtime/internal.h"

#include <stdio.h>

/* export_name.c: whether name may be a model's C prefix; else *why says why not (static). */
bool kc_rt_model_name_ok(const char *name, const char **why);
/* export_link.c: write the n weights w (by ascending offset) into path at their offsets, zeros
 * between them and up to `bytes` in all. */
kc_status kc_export_write_weights(kc_context *ctx, const kc_rt_weight *w, int64_t n, int64_t bytes,
                                  const char *path);
/* export_link.c: the runtime archive to link (opts->runtime, the build's, or next to the
 * running program), into buf. */
kc_status kc_export_find_runtime(kc_context *ctx, const char *given, char *buf, size_t size);
/* export_link.c: link the nobjs objects objs and the runtime archive into the shared library
 * so_path with the C compiler cc (NULL: "cc", with lld when it is on $PATH); its output is in the
 * error when it fails. extra_c (NULL: none) is a C file compiled into the library too (position
 * independent). */
kc_status kc_export_link(kc_context *ctx, const char *cc, const char *const *objs, int nobjs,
                         const char *extra_c, const char *runtime, const char *so_path);

/* A training step's export (kc_export_train; runtime/export_train.c): the trainer core holding the
 * parameters (their initial values, their grad_out and the loss_out among the step plan's
 * outputs; no optimizer state), the optimizer options the library gets, the caller's input
 * count, the loss's name. */
struct kc_train_core;
typedef struct kc_export_train_spec {
  struct kc_train_core *core;
  const kc_train_options *options;
  const char *loss;
  int64_t ninputs;
} kc_export_train_spec;

/* What the header says of sessions: the decode step's facts, or (decode NULL) why there are no
 * session entry points; and of the training step (train NULL: none). */
typedef struct kc_export_session {
  const kc_plan_decode *decode;
  const char *why_not;
  const kc_export_train_spec *train;
} kc_export_session;

/* export_train.c: check that plan p's inputs are the caller's spec->ninputs then the parameters
 * in order, and its outputs those spec->core found (kc_rt_train_outputs on the compiled graph);
 * write the parameters' initial values to params_path and the C file of the NAME_train_* entry
 * points (kc_plan_train of codegen/aot.h, .incbin of params_path) to c_path. */
kc_status kc_export_train_write(kc_context *ctx, const kc_export_train_spec *spec, const kc_plan *p,
                                const char *params_path, const char *c_path);
/* export_train.c: the header's training section (types, macros, NAME_train_* declarations). */
void kc_export_train_header(FILE *f, const char *N, const kc_export_train_spec *spec);

/* export_header.c: the C header of the model (see kc_export in kernc.h); cpu is LLVM's name of
 * the CPU the kernels were built for, or the names of a library's CPU variants, comma-separated
 * ("CUDA <images>" for the CUDA target). */
kc_status kc_export_header(kc_context *ctx, const kc_graph *g, const kc_rt_plan *p,
                           const kc_export_session *session, const char *source, const char *cpu,
                           const char *so_path, const char *path);

/* export_cuda.c, target "cuda": the kernels as the CUDA JIT builds them (filling
 * m->kernels[].no_kernel), compiled by NVRTC for archs (kc_export_options.cuda_archs); the
 * device blob of codegen/aot_cuda.h for plan p into path; the images as text ("sm_80, ...");
 * free (NULL is fine). */
typedef struct kc_export_cuda kc_export_cuda;
kc_status kc_export_cuda_lower(kc_module *m, const char *archs, kc_export_cuda **out);
kc_status kc_export_cuda_write(kc_export_cuda *c, const kc_rt_plan *p, const char *path);
void kc_export_cuda_describe(const kc_export_cuda *c, char *buf, size_t size);
void kc_export_cuda_free(kc_export_cuda *c);

/* target_cuda.c: every kernel of m->g into prog (info[i]: node i's launch; m->kernels[].no_kernel
 * filled), *src the program's text; what the CUDA JIT compiles and kc_export --target=cuda too. */
struct kc_cuda_prog;
struct kc_cuda_kernel_info;
kc_status kc_rt_cuda_emit(kc_module *m, struct kc_cuda_prog *prog, struct kc_cuda_kernel_info *info,
                          const char **src);

#endif /* KERNC_RUNTIME_EXPORT_H */

/*
 * runtime/export.h - private to kc_export (runtime/export*.c) and the targets' export rows: the
 * steps that turn a module's plan (runtime/plan_build.c) into a shared library and a header.
 */
#ifndef KERNC_RUNTIME_EXPORT_H
#define KERNC_RUNTIME_EXPORT_H

#include "codegen/aot.h"
#include "runtime/internal.h"

/* export_link.c: write the n weights w (by ascending offset) into path at their offsets, zeros
 * between them and up to `bytes` in all. */
kc_status kc_export_write_weights(kc_context *ctx, const kc_rt_weight *w, int64_t n, int64_t bytes,
                                  const char *path);
/* export_link.c: the runtime archive to link (opts->runtime, the build's, or next to the
 * running program), into buf. */
kc_status kc_export_find_runtime(kc_context *ctx, const char *given, char *buf, size_t size);
/* export_link.c: link obj_path and the runtime archive into the shared library so_path with the
 * C compiler cc (NULL: "cc", with lld when it is on $PATH); its output is in the error when it
 * fails. */
kc_status kc_export_link(kc_context *ctx, const char *cc, const char *obj_path, const char *runtime,
                         const char *so_path);

/* What the header says of sessions: the decode step's facts, or (decode NULL) why there are no
 * session entry points. */
typedef struct kc_export_session {
  const kc_plan_decode *decode;
  const char *why_not;
} kc_export_session;

/* export_header.c: the C header of the model (see kc_export in kernc.h); cpu is LLVM's name of
 * the CPU the kernels were built for. */
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

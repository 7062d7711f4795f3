/*
 * codegen/cuda/cuda.h - kernc-internal API of the CUDA target: CUDA C programs built from graph
 * nodes (the emitters of codegen/cuda/), NVRTC compilation with a cache, and the CUDA driver
 * opened at run time (dlopen of libcuda.so.1, never linked).
 *
 * Kernel ABI (every CUDA kernel, whatever its op):
 *
 *   extern "C" __global__ void NAME(const kc_args<NB, ND> a);
 *
 *   a.b[]    device pointers: the node's inputs then its outputs (an absent input is NULL);
 *   a.d[]    the concrete dims of the inputs then the outputs, each value's rank entries back
 *            to back (an absent input contributes none): the layout of the CPU kernels;
 *   a.units  the kernel's work units for these dims (kc_cuda_units of its launch description).
 *   The struct is NB pointers then ND + 1 int64s, all 8 bytes wide, so the host passes it as
 *   one packed array of 8-byte words (kc_cuda_pack). Kernels walk their units with grid-stride
 *   loops, so any grid size is correct; the launch description only says what fills the GPU.
 *   A kernel that checks indices it reads as data (kc_cuda_kernel_info.check_in >= 0: Gather's
 *   indices, rotary's position ids) takes one more pointer after its buffers, a.b[NB - 1] =
 *   `unsigned long long *err`, two words the runtime zeroes before the launch; a thread that
 *   meets an index outside [-size, size), size = a.d[check_dim], does atomicCAS(err, 0, pos + 1)
 *   (pos: its flat position in input check_in) and, when that CAS won, stores the index itself
 *   (as i64 bits) in err[1], and never addresses memory with it. The runtime reads both after
 *   the launches (when later kernels may have reused the indices' memory) and fails the run
 *   (runtime/index_error.c).
 *
 * Invariants: nothing here keeps global state. A kc_cuda_prog, kc_nvrtc or kc_cuda_dev is used
 * from one thread at a time; images and functions die with the object that made them.
 */
#ifndef KERNC_CODEGEN_CUDA_CUDA_H
#define KERNC_CODEGEN_CUDA_CUDA_H

#include "kernc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct kc_graph;

/* ---- launch description ------------------------------------------------------------------- */

#define KC_CUDA_MAX_FACTORS 24

/* units = mul * prod over factors of ceil(dims[dim] / div); grid = ceil(units / per_block). */
typedef struct kc_cuda_launch {
  int block;     /* threads per block */
  int per_block; /* units a block takes per step of its loop: block (thread per unit), 1 ... */
  int64_t mul;
  int nf;
  struct {
    uint32_t dim; /* index into the dims argument */
    uint32_t div;
  } f[KC_CUDA_MAX_FACTORS];
} kc_cuda_launch;

/* What the runtime needs to run one node's kernel. */
typedef struct kc_cuda_kernel_info {
  bool no_kernel; /* views and sources: the runtime aliases or binds data */
  uint32_t nbufs; /* NB of the kernel's kc_args (the error word's pointer included) */
  uint32_t ndims; /* ND */
  kc_cuda_launch launch;
  int check_in;      /* input holding indices the kernel checks; -1: none (see the ABI above) */
  int64_t check_dim; /* offset in a.d of the size bounding them */
} kc_cuda_kernel_info;

/* Work units of a kernel for concrete dims. */
int64_t kc_cuda_units(const kc_cuda_launch *l, const int64_t *dims);
/* Blocks to launch for units (capped; kernels loop over the rest). */
uint32_t kc_cuda_grid(const kc_cuda_launch *l, int64_t units);
/* Words of the packed argument block: nbufs + ndims + 1 (at least 3). */
size_t kc_cuda_arg_words(const kc_cuda_kernel_info *k);
/* Pack bufs, dims and units into words (kc_cuda_arg_words entries), the layout of kc_args. */
void kc_cuda_pack(const kc_cuda_kernel_info *k, const uint64_t *bufs, const int64_t *dims,
                  int64_t units, uint64_t *words);

/* ---- programs: CUDA C for nodes of any graphs ---------------------------------------------- */

typedef struct kc_cuda_prog kc_cuda_prog;

kc_status kc_cuda_prog_new(kc_context *ctx, kc_cuda_prog **out);
void kc_cuda_prog_free(kc_cuda_prog *p);
/*
 * The kernel of node ni of g as CUDA C text named name (malloc'd into *text, caller frees; NULL
 * for nodes without a kernel), the device library sections it needs (*sections, a bit set for
 * kc_cuda_prog_add_text) and its launch description. Errors name the node.
 */
kc_status kc_cuda_emit_node(kc_context *ctx, const struct kc_graph *g, uint32_t ni,
                            const char *name, char **text, unsigned *sections,
                            kc_cuda_kernel_info *info);
/* Add kernel text made by kc_cuda_emit_node to the program. */
kc_status kc_cuda_prog_add_text(kc_cuda_prog *p, const char *text, unsigned sections);
/* Emit node ni of g into the program as kernel name (no_kernel nodes add nothing). */
kc_status kc_cuda_prog_add(kc_cuda_prog *p, const struct kc_graph *g, uint32_t ni, const char *name,
                           kc_cuda_kernel_info *info);
/* The whole program: device library (the sections used) and every kernel added; owned by p,
 * valid until the next add. NULL when out of memory. */
const char *kc_cuda_prog_source(kc_cuda_prog *p);
/* Kernels added so far. */
uint32_t kc_cuda_prog_count(const kc_cuda_prog *p);
/* Kernel name of node ni as the runtime uses it: "k<ni>_<op>". */
void kc_cuda_kernel_name(char *buf, size_t size, uint32_t ni, const char *op);

/* ---- NVRTC ---------------------------------------------------------------------------------- */

/* An entry point of a library opened with dlopen: its name and the offset of its function
 * pointer in a table of them. */
typedef struct kc_dl_sym {
  const char *name;
  size_t off;
} kc_dl_sym;
/* Fill table's function pointers from lib; the name of the first missing symbol, or NULL. */
const char *kc_dl_resolve(void *lib, const kc_dl_sym *syms, size_t n, void *table);

typedef struct kc_nvrtc kc_nvrtc;

/* A compiled program: cubin, or PTX text (NUL-terminated) when ptx. Owned by the kc_nvrtc. */
typedef struct kc_cuda_image {
  const void *data;
  size_t size;
  bool ptx;
  int arch; /* 80 = sm_80 / compute_80 */
} kc_cuda_image;

/* Open NVRTC (dlopen of libnvrtc.so.<toolkit major>, then the build's toolkit copy): without it,
 * KC_ERR_UNSUPPORTED "CUDA target unavailable: cannot load NVRTC ...". */
kc_status kc_nvrtc_new(kc_context *ctx, kc_nvrtc **out);
void kc_nvrtc_free(kc_nvrtc *nv);
/* Also keep images as files in dir (NULL: memory only); read back before compiling. */
kc_status kc_nvrtc_set_cache_dir(kc_nvrtc *nv, const char *dir);
/*
 * Compile src for arch: PTX for compute_<arch> when ptx, else a cubin for sm_<arch>. Identical
 * (source, arch, kind) requests are answered from the cache. NVRTC's log goes to the error
 * buffer on failure.
 */
kc_status kc_nvrtc_compile(kc_nvrtc *nv, const char *src, const char *name, int arch, bool ptx,
                           kc_cuda_image *out);
/* The arch to build for a device of compute capability cc (86 = 8.6): cc itself when NVRTC
 * supports it (*exact true: a cubin), else the newest supported one below it (PTX for the driver
 * to JIT); 0 when there is none. */
int kc_nvrtc_arch_for(kc_nvrtc *nv, int cc, bool *exact);
/* Requests answered from the cache / compiled, since kc_nvrtc_new. */
void kc_nvrtc_stats(const kc_nvrtc *nv, uint64_t *hits, uint64_t *compiles);

/* ---- driver --------------------------------------------------------------------------------- */

typedef struct kc_cuda_dev kc_cuda_dev;
typedef struct kc_cuda_mod kc_cuda_mod;
typedef uint64_t kc_dptr; /* a device address */

/*
 * Open device `ordinal` through libcuda.so.1 (primary context). Without a driver or a device:
 * KC_ERR_UNSUPPORTED with "CUDA target unavailable: <reason>".
 */
kc_status kc_cuda_dev_open(kc_context *ctx, int ordinal, kc_cuda_dev **out);
void kc_cuda_dev_close(kc_cuda_dev *d);
/* Compute capability (86 = 8.6) and name of the device. */
int kc_cuda_dev_cc(const kc_cuda_dev *d);
const char *kc_cuda_dev_name(const kc_cuda_dev *d);

kc_status kc_cuda_alloc(kc_cuda_dev *d, size_t size, kc_dptr *out);
void kc_cuda_free(kc_cuda_dev *d, kc_dptr p);
/* Make *buf (of *cap bytes) hold size bytes, reallocating when too small (contents not kept). */
kc_status kc_cuda_reserve(kc_cuda_dev *d, kc_dptr *buf, size_t *cap, size_t size);
kc_status kc_cuda_htod(kc_cuda_dev *d, kc_dptr dst, const void *src, size_t size);
kc_status kc_cuda_dtoh(kc_cuda_dev *d, void *dst, kc_dptr src, size_t size);
kc_status kc_cuda_dtod(kc_cuda_dev *d, kc_dptr dst, kc_dptr src, size_t size);
/* Load a cubin or PTX image; functions come from kc_cuda_mod_function. */
kc_status kc_cuda_mod_load(kc_cuda_dev *d, const kc_cuda_image *img, kc_cuda_mod **out);
void kc_cuda_mod_unload(kc_cuda_mod *m);
kc_status kc_cuda_mod_function(kc_cuda_mod *m, const char *name, void **fn);
/* Launch fn on grid x block threads with the packed argument block (asynchronous). */
kc_status kc_cuda_launch_kernel(kc_cuda_dev *d, void *fn, uint32_t grid, uint32_t block,
                                const uint64_t *words);
/* Launch node kernel fn described by k on bufs and dims (kc_cuda_units of them; none: nothing
 * runs); words is scratch of kc_cuda_arg_words entries. Asynchronous, as kc_cuda_launch_kernel. */
kc_status kc_cuda_run_kernel(kc_cuda_dev *d, void *fn, const kc_cuda_kernel_info *k,
                             const uint64_t *bufs, const int64_t *dims, uint64_t *words);
/* Wait for everything launched; reports a kernel's failure. */
kc_status kc_cuda_sync(kc_cuda_dev *d);

#endif /* KERNC_CODEGEN_CUDA_CUDA_H */

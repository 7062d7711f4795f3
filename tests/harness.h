/*
 * tests/harness.h - what the cmocka tests share (tests/harness.c, linked into every test):
 * files and scratch folders, shell commands with their output captured, compiling and running
 * graphs through kc_compile/kc_run, driving one CPU emitter directly (codegen/cpu/emit.h) with
 * its work split into ranges, and running the kernels of a graph lowered by
 * kc_cpu_compile_graph node by node.
 *
 * Helpers named th_* fail the running cmocka test on what the test cannot go on from (a file
 * that cannot be written, a graph that does not compile), with the library's message; they
 * return what the test checks itself (exit codes, emitter status). Strings and lists they return
 * are malloc'd and the caller frees them. Include after <cmocka.h>.
 */
#ifndef KERNC_TESTS_HARNESS_H
#define KERNC_TESTS_HARNESS_H

#include "codegen/cpu/emit.h"
#include "ir/internal.h"
#include "kernc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 1 in a build under AddressSanitizer or ThreadSanitizer: gcc defines __SANITIZE_*__, clang
 * answers __has_feature (clang 19 defines neither macro) */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define TH_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define TH_SANITIZED 1
#endif
#endif
#ifndef TH_SANITIZED
#define TH_SANITIZED 0
#endif

/* ---- files and folders ------------------------------------------------------------------- */

/* The whole file, NUL-terminated (len, when not NULL, gets its size); NULL when unreadable. */
char *th_read_file(const char *path, size_t *len);
/* Write len bytes to path (replacing it); fails the test when it cannot. */
void th_write_file(const char *path, const void *data, size_t len);
/* Make a fresh folder /tmp/kc_NAME_XXXXXX into buf (size >= 64); false when it cannot. */
bool th_mkdtemp(char *buf, size_t size, const char *name);
/* Remove dir and all it holds (rm -rf); false when that failed. */
bool th_rmtree(const char *dir);
/* Sorted paths dir/NAME of the files whose NAME starts with prefix and ends with suffix; the
 * count, with the list in *out (free it with th_free_list). 0 and NULL when dir cannot be read. */
int th_list_files(const char *dir, const char *prefix, const char *suffix, char ***out);
void th_free_list(char **list, int n);
/* Sorted paths of TESTS/kir/SUB/PREFIX*.kir (tests: the tests/ folder); the count in *n. */
char **th_kir_files(const char *tests, const char *sub, const char *prefix, int *n);
/* The text after "# expect: " on the first line of path, into buf; false when there is none. */
bool th_read_expect(const char *path, char *buf, size_t size);
/* The line number (from 1) of the first difference between two texts, for messages. */
int th_first_diff_line(const char *a, const char *b);

/* ---- commands ---------------------------------------------------------------------------- */

/*
 * Run cmd through /bin/sh; its stdout into *out and its stderr into *err (malloc'd,
 * NUL-terminated). out NULL: stdout is read and dropped; err NULL: stderr is left alone (a command
 * that wants it with stdout ends in 2>&1). Returns the exit status, 128 + the signal when one ended
 * it.
 */
int th_exec(const char *cmd, char **out, char **err);
/* system() on the formatted command; its exit status as th_exec's. */
int th_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- graphs, compile and run ------------------------------------------------------------- */

/* Parse IR text ("test.kir"); a parse error fails the test with its message. */
kc_graph *th_parse(kc_context *ctx, const char *text);
/* "f32[B,10]" for v ("untyped" without a type); a static buffer, valid until the next call. */
const char *th_type_str(kc_graph *g, kc_val v);
/* kc_compile on the CPU with no passes; a sticky graph error or a compile failure fails the
 * test. */
kc_module *th_compile(kc_context *ctx, const kc_graph *g, int threads);
/* kc_run; a failure fails the test with the message. */
void th_run(kc_context *ctx, kc_module *m, const kc_tensor_desc *in, uint32_t nin,
            kc_tensor_desc *out, uint32_t nout);
kc_tensor_desc th_desc(const char *name, kc_dtype t, int rank, const int64_t *dims, void *data);
/* Bytes of d's data. */
size_t th_nbytes(const kc_tensor_desc *d);
int64_t th_numel(int rank, const int64_t *dims);

/* ---- one CPU emitter at a time ----------------------------------------------------------- */

/* A symbol's value; lists end with {NULL}. */
typedef struct th_sym {
  const char *name;
  int64_t v;
} th_sym;

/* kc_dim_eval's lookup over a th_sym list (user). */
bool th_sym_lookup(void *user, const char *name, int64_t *v);

/* A JIT for emitting nodes one by one, without kc_compile; a cmocka state (th_cpu_setup). */
typedef struct th_cpu {
  kc_context *ctx;
  kc_cpu *cpu;
  int next; /* kernel names k0, k1, ...: unique per kc_cpu */
} th_cpu;

int th_cpu_setup(void **state);
int th_cpu_teardown(void **state);

typedef struct th_kernel {
  char name[32]; /* its symbol, and its dump files' name (kc_cpu_set_dump_dir) */
  kc_kernel_fn fn;
  kc_units_fn units;
  int64_t grain, ws_bytes;
  bool no_kernel;
} th_kernel;

/* Emit node ni of g into a module of its own and JIT it. Returns the emitter's status; fn and
 * units are set only when it succeeded and the node has a kernel. */
kc_status th_lower_node(th_cpu *f, const kc_graph *g, uint32_t ni, th_kernel *k);

/*
 * Lower the last node of g (whose sticky status must be KC_OK) and run it over bufs: inputs
 * then outputs, NULL for absent inputs. Dims come from syms, or for outputs from out_dims (all
 * outputs' dims back to back) when that is not NULL. The kernel runs twice into outputs that
 * start poisoned: over all its units in one call, then in ranges of step units, last range first
 * (step 0: a fifth of the units, or 1 for up to 8); both must write the same bytes, so every
 * element is written and any split into ranges is valid.
 */
void th_run_last(th_cpu *f, kc_graph *g, const th_sym *syms, const int64_t *out_dims, int64_t step,
                 void **bufs);

/* ---- a graph lowered by kc_cpu_compile_graph, kernels run one by one --------------------- */

typedef struct th_lowered {
  kc_context *ctx;
  kc_cpu *cpu;
  kc_cpu_kernel *k; /* per node */
} th_lowered;

/* Lower every node of g (kc_cpu_new + kc_cpu_compile_graph); a failure fails the test. */
void th_lower_graph(th_lowered *l, kc_context *ctx, const kc_graph *g);
void th_lowered_free(th_lowered *l);
/* Run node ni's kernel over all its work units on this thread, in two uneven ranges where there
 * are two units or more (workspace allocated here). bufs: inputs then outputs; dims: their
 * concrete dims back to back (absent inputs have none). */
void th_run_node(const th_lowered *l, uint32_t ni, void *const *bufs, const int64_t *dims);

#endif

/*
 * tools/check/check.h - the ONNX conformance check behind `kernc check` and the tests: one ONNX
 * backend test folder (model.onnx + test_data_set_N) through import, shape inference, compile and
 * run, compared with the expected outputs.
 *
 * This is the check module, not part of libkernc: it runs models, so it sits downstream of both
 * the frontend (it imports and reads .pb files) and the runtime (it compiles and runs), beside
 * the program; the kernc program and the tests link it (CMakeLists.txt, kernc_check).
 */
#ifndef KERNC_CHECK_H
#define KERNC_CHECK_H

#include "frontend/frontend.h"

typedef enum kc_check_result { KC_CHECK_PASS, KC_CHECK_FAIL, KC_CHECK_SKIP } kc_check_result;

/* How close float outputs must be. */
typedef struct kc_check_tol {
  double rtol, atol; /* elementwise: |got - want| <= atol + rtol*|want| (numpy's allclose) */
  double relative;   /* > 0: per output, max|got - want| <= relative * max|want| instead */
} kc_check_tol;

typedef struct kc_check_options {
  bool shapes_only;        /* compare inferred shapes and dtypes only, run nothing */
  int threads;             /* threads running the compiled model; 0: the context's default */
  const char *target;      /* kc_compile_options.target: NULL or "cpu", "cuda" */
  const char *passes;      /* pass list for kc_compile; NULL: the target's default pipeline */
  const kc_check_tol *tol; /* NULL: KC_CHECK_RTOL and KC_CHECK_ATOL */
} kc_check_options;

/*
 * Check one ONNX backend test folder: import DIR/model.onnx, verify it, and for every
 * DIR/test_data_set_* bind the symbols from the input dims and compare the inferred output
 * dtypes and shapes with output_N.pb; then (unless shapes_only) compile the model once, run it
 * on the inputs and compare the values (kc_check_compare). An import that is unsupported
 * SKIPs; failing to compile or run is a FAIL. msg gets one line: the reason (FAIL, SKIP) or a
 * note ("" or, shapes only, which outputs were compared by rank and dtype only).
 */
kc_check_result kc_onnx_check_dir_opts(kc_context *ctx, const char *dir,
                                       const kc_check_options *opts, char *msg, size_t size);
/* kc_onnx_check_dir_opts with default options (values compared). */
kc_check_result kc_onnx_check_dir(kc_context *ctx, const char *dir, char *msg, size_t size);

/* ONNX backend test tolerances for float outputs. */
#define KC_CHECK_RTOL 1e-3
#define KC_CHECK_ATOL 1e-7
/*
 * Computed output `got` against expected `want`: same dtype and dims, floats within
 * atol + rtol*|want| (NaN == NaN, same-sign infinities equal), integers and bool exactly.
 * False with a message naming the output, max abs/rel error and the first mismatching index.
 */
bool kc_check_compare(const char *name, const kc_tensor_desc *got, const kc_tensor *want,
                      double rtol, double atol, char *msg, size_t size);
/* kc_check_compare with a tolerance that may be relative (kc_check_tol.relative). */
bool kc_check_compare_tol(const char *name, const kc_tensor_desc *got, const kc_tensor *want,
                          const kc_check_tol *tol, char *msg, size_t size);
/*
 * Read a tolerance file (kernc-check.tol: "rtol=X atol=Y" or "relative=X" words, '#' comments)
 * into *tol, starting from the defaults. False with a message (file:line) on a bad word.
 */
bool kc_check_tol_read(const char *path, kc_check_tol *tol, char *msg, size_t size);
/* DIR's own kernc-check.tol into *tol: 1 when read, 0 when DIR has none (*tol: the defaults),
 * -1 with a message when it is bad. */
int kc_check_tol_of_dir(const char *dir, kc_check_tol *tol, char *msg, size_t size);

#endif /* KERNC_CHECK_H */

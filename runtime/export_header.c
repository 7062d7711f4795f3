/*
 * runtime/export_header.c - the C header of a compiled model: the entry points, the tensor type
 * they take, index macros, and a comment listing inputs, outputs (dtype, shape with symbols) and
 * where each symbol is bound.
 *
 * Invariants:
 *   - kc_model_tensor has kc_tensor_desc's layout (name, dtype as an int-sized enum, rank,
 *     dims[KC_MAX_RANK], data) and KC_MODEL_<DTYPE> kc_dtype's codes: the runtime reads the
 *     caller's tensors as kc_tensor_desc. Both are guarded by one macro, so headers of several
 *     models can be included together.
 *   - Names from the model reach C only through identifier-safe macro names and comment-safe
 *     text ("*" "/" never closes the comment).
 */
#include "runtime/export.h"

#include <ctype.h>
#include <errno.h>
#include <string.h>

/* s with every byte that is not [A-Za-z0-9_] replaced by '_'. */
static void ident(const char *s, char *buf, size_t size) {
  size_t j = 0;
  for (; *s && j + 1 < size; s++)
    buf[j++] = isalnum((unsigned char)*s) || *s == '_' ? *s : '_';
  buf[j] = 0;
}

/* s for a comment: printable ASCII, and no end of comment. */
static void comment_text(const char *s, char *buf, size_t size) {
  size_t j = 0;
  for (; *s && j + 1 < size; s++) {
    char c = isprint((unsigned char)*s) ? *s : '?';
    if (c == '/' && j > 0 && buf[j - 1] == '*') c = '|';
    buf[j++] = c;
  }
  buf[j] = 0;
}

/* "f32[B,S,768]" of value v of g. */
static void type_text(const kc_graph *g, int64_t v, char *buf, size_t size) {
  const kc_value *val = &g->vals[v];
  size_t l = (size_t)snprintf(buf, size, "%s[", kc_dtype_name(val->dtype));
  for (int i = 0; i < val->rank && l < size; i++) {
    char d[128];
    l += (size_t)snprintf(buf + l, size - l, "%s%s", i ? "," : "",
                          kc_dim_str(g, val->dims[i], d, sizeof d));
  }
  if (l < size) snprintf(buf + l, size - l, "]");
}

static void list_io(FILE *f, const kc_graph *g, const kc_aot_io *io, int64_t n) {
  for (int64_t k = 0; k < n; k++) {
    char name[256], type[512], safe[512];
    comment_text(io[k].name, name, sizeof name);
    type_text(g, io[k].value, type, sizeof type);
    comment_text(type, safe, sizeof safe);
    fprintf(f, " *   %-3lld %-24s %s\n", (long long)k, name, safe);
  }
}

static void list_syms(FILE *f, const kc_export_plan *p) {
  const kc_aot_model *m = &p->model;
  if (!m->nsyms) return;
  fprintf(f, " * Symbols, bound by the input shapes:\n");
  for (int64_t s = 0; s < m->nsyms; s++)
    for (int64_t k = 0; k < m->ninputs * KC_MAX_RANK; k++) {
      const kc_aot_idim *id = &m->idims[k];
      if (id->kind != KC_AOT_DIM_SYM || id->value != s) continue;
      char sym[128], name[256];
      comment_text(m->syms[s], sym, sizeof sym);
      comment_text(m->inputs[k / KC_MAX_RANK].name, name, sizeof name);
      fprintf(f, " *   %-12s dim %lld of input '%s'\n", sym, (long long)(k % KC_MAX_RANK), name);
      break;
    }
}

static void common_types(FILE *f) {
  fprintf(f, "#ifndef KERNC_MODEL_TYPES\n#define KERNC_MODEL_TYPES\n"
             "/* Element types: the same codes in every kernc model header. */\n"
             "typedef enum kc_model_dtype {\n");
  for (int t = 1; t < KC_DT_COUNT; t++) {
    char up[32];
    size_t j = 0;
    for (const char *s = kc_dtype_name((kc_dtype)t); *s && j + 1 < sizeof up; s++)
      up[j++] = (char)toupper((unsigned char)*s);
    up[j] = 0;
    fprintf(f, "  KC_MODEL_%s = %d,\n", up, t);
  }
  fprintf(f,
          "} kc_model_dtype;\n\n"
          "/* A tensor, row-major and contiguous. For an input, name may be NULL (else it must be\n"
          " * the input's name); for an output, the run fills in every field. */\n"
          "typedef struct kc_model_tensor {\n"
          "  const char *name;\n  kc_model_dtype dtype;\n  int rank;\n  int64_t dims[%d];\n"
          "  void *data;\n} kc_model_tensor;\n#endif\n\n",
          KC_MAX_RANK);
}

/* NAME_INPUT_x / NAME_OUTPUT_y index macros, skipping names that clash once made identifiers. */
static void index_macros(FILE *f, const char *prefix, const char *what, const kc_aot_io *io,
                         int64_t n) {
  for (int64_t k = 0; k < n; k++) {
    char id[256], other[256];
    ident(io[k].name, id, sizeof id);
    bool clash = false;
    for (int64_t j = 0; j < n && !clash; j++) {
      ident(io[j].name, other, sizeof other);
      clash = j != k && strcmp(id, other) == 0;
    }
    if (!clash) fprintf(f, "#define %s_%s_%s %lld\n", prefix, what, id, (long long)k);
  }
}

kc_status kc_export_header(kc_context *ctx, const kc_graph *g, const kc_export_plan *p,
                           const char *source, const char *so_path, const char *path) {
  const kc_aot_model *m = &p->model;
  const char *N = m->name;
  FILE *f = fopen(path, "w");
  if (!f) return kc_errorf(ctx, KC_ERR_IO, "cannot write %s: %s", path, strerror(errno));
  char src[512], lib[512];
  comment_text(source ? source : g->name ? g->name : "a graph", src, sizeof src);
  const char *base = strrchr(so_path, '/');
  comment_text(base ? base + 1 : so_path, lib, sizeof lib);
  fprintf(
      f,
      "/*\n * %s.h - the C interface of %s. Generated by kernc: do not edit.\n"
      " * Compiled from %s.\n"
      " *\n * The library needs neither kernc nor LLVM at run time; link it (-l) or dlopen it.\n"
      " * Its kernels are built for the CPU it was compiled on and need the same features.\n"
      " *\n * Inputs, all of them, in this order:\n",
      N, lib, src);
  list_io(f, g, m->inputs, m->ninputs);
  fprintf(f, " * Outputs, owned by the model, valid until the next %s_run or %s_free:\n", N, N);
  list_io(f, g, m->outputs, m->noutputs);
  list_syms(f, p);
  fprintf(f,
          " *\n * Use:\n"
          " *   %s_t *m = %s_create(0);  (threads; 0: one per core)\n"
          " *   %s_tensor in[%s_NUM_INPUTS] = {...}, out[%s_NUM_OUTPUTS];\n"
          " *   if (%s_run(m, in, out) != 0) fprintf(stderr, \"%%s\\n\", %s_error(m));\n"
          " *   %s_free(m);\n"
          " * A model runs one call at a time; use one model per thread to run in parallel.\n */\n"
          "#ifndef %s_H_INCLUDED\n#define %s_H_INCLUDED\n\n#include <stdint.h>\n\n"
          "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n",
          N, N, N, N, N, N, N, N, N, N);
  common_types(f);
  fprintf(f, "typedef struct %s %s_t;\ntypedef kc_model_tensor %s_tensor;\n\n", N, N, N);
  fprintf(f, "#define %s_NUM_INPUTS %lld\n#define %s_NUM_OUTPUTS %lld\n", N, (long long)m->ninputs,
          N, (long long)m->noutputs);
  index_macros(f, N, "INPUT", m->inputs, m->ninputs);
  index_macros(f, N, "OUTPUT", m->outputs, m->noutputs);
  fprintf(f,
          "\n/* A model running on `threads` threads (<= 0: one per core); NULL when out of "
          "memory. */\n%s_t *%s_create(int threads);\n"
          "/* Run on %s_NUM_INPUTS inputs; fills %s_NUM_OUTPUTS outputs. 0 on success, else an\n"
          " * error code (a kc_status of kernc.h) and %s_error says what is wrong. */\n"
          "int %s_run(%s_t *model, const %s_tensor *inputs, %s_tensor *outputs);\n"
          "/* The message of the last failed %s_run (\"\" after a success). */\n"
          "const char *%s_error(const %s_t *model);\n"
          "/* Free the model and its outputs. NULL is fine. */\nvoid %s_free(%s_t *model);\n\n"
          "#ifdef __cplusplus\n}\n#endif\n#endif /* %s_H_INCLUDED */\n",
          N, N, N, N, N, N, N, N, N, N, N, N, N, N, N);
  if (fclose(f) != 0)
    return kc_errorf(ctx, KC_ERR_IO, "cannot write %s: %s", path, strerror(errno));
  return KC_OK;
}

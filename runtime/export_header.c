/*
 * runtime/export_header.c - the C header of a compiled model: the entry points, the tensor type
 * they take, a comment listing inputs, outputs (dtype, shape with symbols) and where each symbol
 * is bound, and per input and output an index macro and size macros (dtype, element size, rank,
 * each dim, the dims as an initializer, element and byte counts), so a program sizes its buffers
 * from the header instead of numbers copied out of the model.
 *
 * Size macros: a dim that is an integer is an integer macro (NAME_OUTPUT_logits_DIM_2 100); the
 * dims of a tensor with a symbolic dim, and its DIMS/NUMEL/BYTES, are function-like macros taking
 * every symbol of the model in NAME_SYM_* order (NAME_INPUT_ids_DIM_1(batch, seq)), with the
 * expression kernc computes (S+1, 2*S, floor division) written in C on int64_t.
 *
 * A causal decoder's header also declares its decoding session (runtime/session.c through the
 * NAME_session_* entry points): kc_model_decode_entry and kc_model_generate_options with the
 * layouts of kernc.h's kc_decode_entry and kc_generate_options, the functions, NAME_VOCAB and the
 * cache's size macros; any other model's says in a comment why it has none. A training step's
 * header (kc_export_train) ends with the NAME_train_* section of runtime/export_train.c.
 *
 * Invariants:
 *   - kc_model_tensor has kc_tensor_desc's layout (name, dtype as an int-sized enum, rank,
 *     dims[KC_MAX_RANK], data) and KC_MODEL_<DTYPE> kc_dtype's codes: the runtime reads the
 *     caller's tensors as kc_tensor_desc. Both are guarded by one macro, so headers of several
 *     models can be included together. Likewise kc_model_decode_entry and
 *     kc_model_generate_options, field for field kernc.h's structs (tests/test_aot_session.c
 *     compiles a program that checks every offset).
 *   - Names from the model reach C only through identifier-safe macro names and comment-safe
 *     text ("*" "/" never closes the comment).
 */
#include "runtime/export.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* s with every byte that is not [A-Za-z0-9_] replaced by '_'. */
static void ident(const char *s, char *buf, size_t size) {
  size_t j = 0;
  for (; *s && j + 1 < size; s++)
    buf[j++] = isalnum((unsigned char)*s) || *s == '_' ? *s : '_';
  buf[j] = 0;
}

/* The C name of a dtype's KC_MODEL_ constant ("KC_MODEL_F32"). */
static void dtype_macro(kc_dtype t, char *buf, size_t size) {
  size_t j = (size_t)snprintf(buf, size, "KC_MODEL_");
  for (const char *s = kc_dtype_name(t); *s && j + 1 < size; s++)
    buf[j++] = (char)toupper((unsigned char)*s);
  buf[j < size ? j : size - 1] = 0;
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

static void list_io(FILE *f, const kc_graph *g, const kc_plan_io *io, int64_t n) {
  for (int64_t k = 0; k < n; k++) {
    char name[256], type[512], safe[512];
    comment_text(io[k].name, name, sizeof name);
    type_text(g, io[k].value, type, sizeof type);
    comment_text(type, safe, sizeof safe);
    fprintf(f, " *   %-3lld %-24s %s\n", (long long)k, name, safe);
  }
}

static void list_syms(FILE *f, const kc_rt_plan *p) {
  const kc_plan *m = &p->model;
  if (!m->nsyms) return;
  fprintf(f, " * Symbols, bound by the input shapes:\n");
  for (int64_t s = 0; s < m->nsyms; s++)
    for (int64_t k = 0; k < m->ninputs * KC_MAX_RANK; k++) {
      const kc_plan_idim *id = &m->idims[k];
      if (id->kind != KC_PLAN_DIM_SYM || id->value != s) continue;
      char sym[128], name[256];
      comment_text(m->syms[s], sym, sizeof sym);
      comment_text(m->inputs[k / KC_MAX_RANK].name, name, sizeof name);
      fprintf(f, " *   %-12s dim %lld of input '%s'\n", sym, (long long)(k % KC_MAX_RANK), name);
      break;
    }
}

/* KC_MODEL_OK, KC_MODEL_ERR_SHAPE...: kernc.h's kc_status names with KC_MODEL_ for KC_. */
static void status_macro(kc_status s, char *buf, size_t size) {
  static const char *const names[] = {
      "OK",     "ERR_PARSE", "ERR_SHAPE",       "ERR_TYPE",    "ERR_VERIFY",  "ERR_UNSUPPORTED",
      "ERR_IO", "ERR_NOMEM", "ERR_INVALID_ARG", "ERR_RUNTIME", "ERR_INTERNAL"};
  _Static_assert(sizeof names / sizeof *names == KC_ERR_INTERNAL + 1, "one name per kc_status");
  snprintf(buf, size, "KC_MODEL_%s", names[s]);
}

static void common_types(FILE *f) {
  fprintf(f, "#ifndef KERNC_MODEL_TYPES\n#define KERNC_MODEL_TYPES\n"
             "/* Element types: the same codes in every kernc model header. */\n"
             "typedef enum kc_model_dtype {\n");
  for (int t = 1; t < KC_DT_COUNT; t++) {
    char up[48];
    dtype_macro((kc_dtype)t, up, sizeof up);
    fprintf(f, "  %s = %d,\n", up, t);
  }
  fprintf(f,
          "} kc_model_dtype;\n\n"
          "/* What the int-returning functions return: 0 on success, else one of these codes (the\n"
          " * same in every kernc model header); the model's _error function says more. */\n"
          "typedef enum kc_model_status {\n");
  for (int c = KC_OK; c <= KC_ERR_INTERNAL; c++) {
    char up[48];
    status_macro((kc_status)c, up, sizeof up);
    fprintf(f, "  %s = %d, /* %s */\n", up, c, kc_status_str((kc_status)c));
  }
  fprintf(
      f,
      "} kc_model_status;\n\n"
      "/* A tensor, row-major and contiguous. An input is matched by name, or by position when\n"
      " * name is NULL; for an output, the run fills in every field. */\n"
      "typedef struct kc_model_tensor {\n"
      "  const char *name;\n  kc_model_dtype dtype;\n  int rank;\n  int64_t dims[%d];\n"
      "  void *data;\n} kc_model_tensor;\n#endif\n\n",
      KC_MAX_RANK);
}

/* ---- size macros ------------------------------------------------------------------------ */

#define SYM_LEN 128

/* The macro parameter of each symbol: its name made an identifier, or kc_symK when that is not
 * a usable parameter (empty, a digit first, reserved, a name the macro bodies use, or the same as
 * an earlier one). */
typedef struct sym_params {
  int64_t n;
  char (*name)[SYM_LEN];
  char list[4096]; /* "batch, seq": the parameter list, also the argument list */
} sym_params;

/* The parameters of m's symbols (kc_symK for all when the names do not fit in the list); false
 * when out of memory or even those do not fit. */
static bool sym_params_make(const kc_plan *m, sym_params *sp) {
  sp->n = m->nsyms;
  sp->name = calloc((size_t)m->nsyms + 1, sizeof *sp->name);
  if (!sp->name) return false;
  for (int short_names = 0; short_names < 2; short_names++) {
    sp->list[0] = 0;
    for (int64_t k = 0; k < m->nsyms; k++) {
      char *id = sp->name[k];
      ident(m->syms[k], id, SYM_LEN);
      bool ok = !short_names && id[0] && !isdigit((unsigned char)id[0]) &&
                strncmp(id, "__", 2) != 0 && strcmp(id, "defined") != 0 &&
                strcmp(id, "int64_t") != 0 && strncmp(id, "kc_sym", 6) != 0 &&
                strncmp(id, "KC_MODEL_", 9) != 0 &&
                strncmp(id, m->name, strlen(m->name)) != 0; /* the macros the bodies name */
      for (int64_t j = 0; j < k && ok; j++)
        ok = strcmp(sp->name[j], id) != 0;
      if (!ok) snprintf(id, SYM_LEN, "kc_sym%lld", (long long)k);
      size_t l = strlen(sp->list);
      snprintf(sp->list + l, sizeof sp->list - l, "%s%s", k ? ", " : "", id);
    }
    if (strlen(sp->list) + 1 < sizeof sp->list) return true;
  }
  return false;
}

/* A growing string: text past the end is dropped and marks it cut. */
typedef struct sbuf {
  char *p;
  size_t size, len;
  bool cut;
} sbuf;

__attribute__((format(printf, 2, 3))) static void put(sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(b->p + b->len, b->size - b->len, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= b->size - b->len)
    b->cut = true;
  else
    b->len += (size_t)n;
}

/* d of g as a C expression on int64_t over the symbol parameters; false when it names a symbol
 * that is not the model's (the exporter refuses such graphs first) or is too deep. */
static bool dim_c(const kc_graph *g, const kc_plan *m, const sym_params *sp, kc_dim d, sbuf *b,
                  int depth) {
  int64_t c;
  if (depth > 64) return false;
  if (kc_dim_const(g, d, &c)) {
    put(b, c < 0 ? "(%lldLL)" : c > INT32_MAX ? "%lldLL" : "%lld", (long long)c);
    return true;
  }
  const kc_dexpr *e = &g->dexprs[KC_DIM_EXPR(d)];
  if (e->kind == KC_DX_SYM) {
    for (int64_t k = 0; k < m->nsyms; k++)
      if (strcmp(m->syms[k], e->name) == 0) {
        put(b, "((int64_t)(%s))", sp->name[k]);
        return true;
      }
    return false;
  }
  static const char *const open[] = {[KC_DX_ADD] = "(",
                                     [KC_DX_MUL] = "(",
                                     [KC_DX_DIV] = "KC_MODEL_FLOORDIV(",
                                     [KC_DX_MOD] = "KC_MODEL_FLOORMOD("};
  static const char *const mid[] = {
      [KC_DX_ADD] = " + ", [KC_DX_MUL] = " * ", [KC_DX_DIV] = ", ", [KC_DX_MOD] = ", "};
  if (e->kind != KC_DX_ADD && e->kind != KC_DX_MUL && e->kind != KC_DX_DIV && e->kind != KC_DX_MOD)
    return false;
  put(b, "%s", open[e->kind]);
  if (!dim_c(g, m, sp, e->a, b, depth + 1)) return false;
  put(b, "%s", mid[e->kind]);
  if (!dim_c(g, m, sp, e->b, b, depth + 1)) return false;
  put(b, ")");
  return true;
}

/* other is id + "_" + a suffix of the size macros: id's size macros would clash with other's
 * index macro. */
static bool suffix_clash(const char *id, const char *other) {
  static const char *const suffixes[] = {"DTYPE", "ELEM_SIZE", "RANK", "DIMS", "NUMEL", "BYTES"};
  size_t l = strlen(id);
  if (strncmp(other, id, l) != 0 || other[l] != '_') return false;
  const char *rest = other + l + 1;
  for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++)
    if (strcmp(rest, suffixes[i]) == 0) return true;
  if (strncmp(rest, "DIM_", 4) != 0 || !rest[4]) return false;
  for (rest += 4; *rest; rest++)
    if (!isdigit((unsigned char)*rest)) return false;
  return true;
}

/* The size macros of tensor P (value v of g); false when a dim cannot be written in C. */
static bool size_macros(FILE *f, const kc_graph *g, const kc_plan *m, const sym_params *sp,
                        const char *P, int64_t v) {
  const kc_value *val = &g->vals[v];
  char dt[48], body[KC_MAX_RANK][1024];
  bool symbolic = false;
  for (int i = 0; i < val->rank; i++) {
    sbuf b = {body[i], sizeof body[i], 0, false};
    int64_t c;
    symbolic |= !kc_dim_const(g, val->dims[i], &c);
    if (!dim_c(g, m, sp, val->dims[i], &b, 0) || b.cut) return false;
  }
  /* the argument list of function-like macros: "(batch, seq)" or nothing */
  char args[sizeof sp->list + 2];
  args[0] = 0; /* clang's -Wformat-zero-length refuses a "" format */
  if (symbolic) snprintf(args, sizeof args, "(%s)", sp->list);
  dtype_macro(val->dtype, dt, sizeof dt);
  size_t esize = kc_dtype_size(val->dtype);
  fprintf(f, "#define %s_DTYPE %s\n#define %s_ELEM_SIZE %zu\n#define %s_RANK %d\n", P, dt, P, esize,
          P, val->rank);
  for (int i = 0; i < val->rank; i++) {
    int64_t c;
    bool fixed = kc_dim_const(g, val->dims[i], &c);
    fprintf(f, "#define %s_DIM_%d%s %s\n", P, i, fixed ? "" : args, body[i]);
  }
  fprintf(f, "#define %s_DIMS%s {", P, args);
  for (int i = 0; i < val->rank; i++)
    fprintf(f, "%s%s", i ? ", " : "", body[i]);
  fprintf(f, "%s}\n#define %s_NUMEL%s ((int64_t)1", val->rank ? "" : "0", P, args);
  for (int i = 0; i < val->rank; i++) {
    int64_t c;
    fprintf(f, " * %s_DIM_%d%s", P, i, kc_dim_const(g, val->dims[i], &c) ? "" : args);
  }
  fprintf(f, ")\n#define %s_BYTES%s (%s_NUMEL%s * %zu)\n", P, args, P, args, esize);
  return true;
}

/* Per tensor: NAME_INPUT_x (its index) and its size macros, skipping names that clash once made
 * identifiers. */
static void tensor_macros(FILE *f, const kc_graph *g, const kc_plan *m, const sym_params *sp,
                          const char *what, const kc_plan_io *io, int64_t n) {
  for (int64_t k = 0; k < n; k++) {
    char id[256], other[256], P[512], type[512], name[256];
    ident(io[k].name, id, sizeof id);
    bool clash = false, sizes_clash = false;
    for (int64_t j = 0; j < n && !clash; j++) {
      if (j == k) continue;
      ident(io[j].name, other, sizeof other);
      clash = strcmp(id, other) == 0;
      sizes_clash |= suffix_clash(id, other);
    }
    comment_text(io[k].name, name, sizeof name);
    type_text(g, io[k].value, type, sizeof type);
    comment_text(type, P, sizeof P);
    fprintf(f, "\n/* %s %lld '%s': %s */\n", what, (long long)k, name, P);
    if (clash) {
      fprintf(f, "/* (no macros: another %s has the same C name) */\n", what);
      continue;
    }
    char up[16];
    size_t j = 0;
    for (; what[j] && j + 1 < sizeof up; j++)
      up[j] = (char)toupper((unsigned char)what[j]);
    up[j] = 0;
    snprintf(P, sizeof P, "%s_%s_%s", m->name, up, id);
    fprintf(f, "#define %s %lld\n", P, (long long)k);
    if (sizes_clash || !size_macros(f, g, m, sp, P, io[k].value))
      fprintf(f, "/* (no size macros: their names clash, or a dim is not expressible in C) */\n");
  }
}

/* Symbols, the floor division helpers, and every tensor's macros. */
static kc_status all_macros(kc_context *ctx, FILE *f, const kc_graph *g, const kc_plan *m) {
  sym_params sp;
  if (!sym_params_make(m, &sp)) {
    bool oom = !sp.name;
    free(sp.name);
    return kc_errorf(ctx, oom ? KC_ERR_NOMEM : KC_ERR_UNSUPPORTED, "%s writing the header of %s",
                     oom ? "out of memory" : "too many symbols", m->name);
  }
  const char *N = m->name;
  fprintf(f, "\n/* Sizes of the inputs and outputs: per tensor, DTYPE, ELEM_SIZE (bytes), RANK, "
             "DIM_i,\n * DIMS (an initializer of kc_model_tensor.dims), NUMEL and BYTES "
             "(int64_t).");
  if (sp.n)
    fprintf(f,
            " An integer\n * dim is an integer macro. The other macros of a tensor with a symbolic "
            "dim take every\n * symbol, in %s_SYM_ order: %s_INPUT_x_DIMS(%s). */\n",
            N, N, sp.list);
  else
    fprintf(f, " */\n");
  fprintf(f, "#define %s_NUM_SYMS %lld\n", N, (long long)sp.n);
  for (int64_t k = 0; k < sp.n; k++)
    fprintf(f, "#define %s_SYM_%s %lld\n", N, sp.name[k], (long long)k);
  fprintf(f, "#ifndef KC_MODEL_FLOORDIV\n"
             "/* floor(a / b) and a - b * floor(a / b), as kernc computes sizes (b != 0) */\n"
             "#define KC_MODEL_FLOORDIV(a, b) ((a) / (b) - ((a) %% (b) != 0 && ((a) %% (b) < 0) "
             "!= ((b) < 0)))\n"
             "#define KC_MODEL_FLOORMOD(a, b) ((a) %% (b) + ((a) %% (b) != 0 && ((a) %% (b) < 0) "
             "!= ((b) < 0)) * (b))\n#endif\n");
  tensor_macros(f, g, m, &sp, "input", m->inputs, m->ninputs);
  tensor_macros(f, g, m, &sp, "output", m->outputs, m->noutputs);
  free(sp.name);
  return KC_OK;
}

/* text's words after a comment line already `col` long, lines of 96 columns at most. */
static void wrap(FILE *f, const char *text, int col) {
  for (const char *w = text; *w;) {
    while (*w == ' ')
      w++;
    int len = (int)strcspn(w, " ");
    if (!len) break;
    if (col + 1 + len > 96) {
      fprintf(f, "\n *");
      col = 2;
    }
    fprintf(f, " %.*s", len, w);
    col += 1 + len;
    w += len;
  }
}

/* ---- decoding sessions ------------------------------------------------------------------ */

static void session_types(FILE *f) {
  fprintf(
      f,
      "#ifndef KERNC_MODEL_SESSION_TYPES\n#define KERNC_MODEL_SESSION_TYPES\n"
      "/* One sequence's part of a decode step: its new tokens, and where its logits go (NULL: "
      "not\n"
      " * wanted; else vocab floats of the last new token, or with all set ntokens * vocab floats\n"
      " * of every new token). The same in every kernc model header (kernc.h's kc_decode_entry). "
      "*/\n"
      "typedef struct kc_model_decode_entry {\n"
      "  int32_t seq;\n  int32_t ntokens;\n  const int64_t *tokens;\n  float *logits;\n"
      "  int all;\n} kc_model_decode_entry;\n\n"
      "/* Generation options (kernc.h's kc_generate_options). Token selection follows Hugging "
      "Face\n"
      " * transformers 4.46.3: repetition penalty, then temperature, top-k, top-p, min-p, then a\n"
      " * draw; greedy when temperature is 0; beam search as its BeamSearchScorer. Every filter "
      "is\n"
      " * off unless set. A sequence's draws depend only on its prompt and seed. */\n"
      "typedef struct kc_model_generate_options {\n"
      "  int64_t max_new;           /* tokens to generate at most (> 0) */\n"
      "  double temperature;        /* 0: greedy; > 0: sample */\n"
      "  int32_t top_k;             /* 0: off */\n"
      "  double top_p;              /* 1 (or 0): off */\n"
      "  double min_p;              /* 0: off */\n"
      "  double repetition_penalty; /* 1 (or 0): off */\n"
      "  uint64_t seed;             /* prompt i of a batch draws with seed + i */\n"
      "  int32_t num_beams;         /* beam search: > 1 */\n"
      "  double length_penalty;     /* beams: 1 by default */\n"
      "  int32_t early_stopping;    /* beams: 0 false, 1 true, 2 \"never\" */\n"
      "  const int64_t *eos;        /* EOS ids: a sequence ends after one (kept in its output) */\n"
      "  int32_t neos;\n"
      "  const int64_t *stop;       /* stop sequences, back to back; stop_len[i] tokens each */\n"
      "  const int32_t *stop_len;\n"
      "  int32_t nstop;\n"
      "  /* each token as it comes (prompt index, token); beams: the final tokens at the end */\n"
      "  void (*on_token)(void *user, int32_t prompt, int64_t token);\n"
      "  void *user;\n"
      "} kc_model_generate_options;\n#endif\n\n");
}

/* NAME_VOCAB, the cache's sizes, and the session entry points of decode step d. */
static void session_api(FILE *f, const char *N, const kc_plan_decode *d) {
  int64_t per_token = d->layers * 2 * d->kv_heads * d->head_dim * d->dtype_size;
  fprintf(
      f,
      "\n/* ---- decoding with a KV cache -----------------------------------------------------\n"
      " * kernc derived the decode step of this causal decoder: the attentions read and write a\n"
      " * KV cache and positions start at each sequence's past length, so one step serves\n"
      " * prefill (many new tokens) and decode (one), for several sequences of different\n"
      " * lengths at once. The cache is contiguous (one max_len buffer per sequence, written in\n"
      " * place) or paged (blocks of block_size tokens, a block table per sequence, forks\n"
      " * share blocks, a write into a shared one copies it first). One thread at a time uses\n"
      " * a session. Functions returning int return 0 (KC_MODEL_OK) or an error code\n"
      " * (KC_MODEL_ERR_*), and %s_session_error says what is wrong.\n"
      " *\n * Use:\n"
      " *   %s_session_t *s = %s_session_new(0, 0, 512, 1);  (all cores; contiguous cache:\n"
      " *                             512 tokens per sequence, 1 sequence)\n"
      " *   kc_model_generate_options o;  %s_generate_defaults(&o);  o.max_new = 20;\n"
      " *   const int64_t *prompts[1] = {ids};  int64_t *outs[1] = {out}, nout;\n"
      " *   if (%s_generate(s, 1, prompts, &nids, &o, outs, &nout) != 0)\n"
      " *     fprintf(stderr, \"%%s\\n\", %s_session_error(s));\n"
      " *   %s_session_free(s);\n */\n"
      "#define %s_HAS_SESSION 1\n"
      "#define %s_VOCAB %lld\n"
      "/* The cache: layers, KV heads, head dim; the bytes one token takes (K and V of every\n"
      " * layer), and those of a cache of `tokens` slots (paged: max_tokens rounded up to whole\n"
      " * blocks; contiguous: max_len * max_seqs). */\n"
      "#define %s_CACHE_LAYERS %lld\n#define %s_CACHE_KV_HEADS %lld\n"
      "#define %s_CACHE_HEAD_DIM %lld\n"
      "#define %s_CACHE_BYTES_PER_TOKEN ((int64_t)%lld)\n"
      "#define %s_CACHE_BYTES(tokens) ((int64_t)(tokens) * %s_CACHE_BYTES_PER_TOKEN)\n\n",
      N, N, N, N, N, N, N, N, N, (long long)d->vocab, N, (long long)d->layers, N,
      (long long)d->kv_heads, N, (long long)d->head_dim, N, (long long)per_token, N, N);
  session_types(f);
  fprintf(
      f,
      "typedef struct %s_session %s_session_t;\n\n"
      "/* A session on `threads` threads (<= 0: one per core) with an empty cache: paged (paged\n"
      " * != 0): blocks of `size` tokens (0: 16), `count` tokens in all sequences together (0:\n"
      " * 4096); contiguous: `size` tokens per sequence (0: 1024), `count` sequences at once (0:\n"
      " * 1). NULL when this CPU lacks a feature the kernels use, or out of memory:\n"
      " * %s_session_error(NULL) says which. */\n"
      "%s_session_t *%s_session_new(int threads, int paged, int64_t size, int64_t count);\n"
      "/* Free the session and its cache. NULL is fine. */\n"
      "void %s_session_free(%s_session_t *s);\n"
      "/* The message of this thread's last failure of s; with NULL, why the last\n"
      " * %s_session_new of this thread returned NULL. */\n"
      "const char *%s_session_error(const %s_session_t *s);\n"
      "/* %s_VOCAB, and %s_CACHE_BYTES_PER_TOKEN. */\n"
      "int64_t %s_session_vocab(const %s_session_t *s);\n"
      "int64_t %s_session_cache_bytes_per_token(const %s_session_t *s);\n"
      "/* Sequences: a new empty one; a fork sharing src's cache (no copy); free; length in "
      "tokens\n"
      " * (-1: none); truncate to len tokens. */\n"
      "int %s_seq_new(%s_session_t *s, int32_t *seq);\n"
      "int %s_seq_fork(%s_session_t *s, int32_t src, int32_t *dst);\n"
      "void %s_seq_free(%s_session_t *s, int32_t seq);\n"
      "int64_t %s_seq_len(const %s_session_t *s, int32_t seq);\n"
      "int %s_seq_truncate(%s_session_t *s, int32_t seq, int64_t len);\n"
      "/* One step: every entry's tokens are appended to its sequence (prefill: many; decode: "
      "one)\n"
      " * and run at once. A cache too full for the step is an error naming the sequence, and\n"
      " * changes nothing. */\n"
      "int %s_decode(%s_session_t *s, const kc_model_decode_entry *entries, int32_t n);\n"
      "/* max_new 32, greedy, length_penalty 1, every filter off, no EOS. */\n"
      "void %s_generate_defaults(kc_model_generate_options *o);\n"
      "/* Generate after each of count prompts at once (greedy or sampling): outs[i] (max_new\n"
      " * tokens of room) gets prompt i's tokens, nout[i] their count. Each prompt runs as a\n"
      " * sequence of its own, freed at the end. */\n"
      "int %s_generate(%s_session_t *s, int32_t count, const int64_t *const *prompts,\n"
      "                const int64_t *nprompt, const kc_model_generate_options *o,\n"
      "                int64_t *const *outs, int64_t *nout);\n"
      "/* Beam search (o->num_beams > 1) after one prompt: out (max_new + 1 tokens of room) gets "
      "the\n"
      " * best sequence, *nout its length, *score (may be NULL) its score. The beams' caches are\n"
      " * reordered by forking sequences, never copied whole. */\n"
      "int %s_generate_beams(%s_session_t *s, const int64_t *prompt, int64_t nprompt,\n"
      "                      const kc_model_generate_options *o, int64_t *out, int64_t *nout,\n"
      "                      double *score);\n",
      N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N,
      N, N);
}

static bool is_cuda(const char *cpu) { return strncmp(cpu, "CUDA ", 5) == 0; }

/* What the library needs of the machine; cpu is "CUDA <images>" for the CUDA target, a list
 * "a,b,c" for CPU variants. */
static const char *target_text(const char *cpu, const char *N, char *buf, size_t size) {
  if (is_cuda(cpu))
    snprintf(
        buf, size,
        " * Its kernels run on a CUDA GPU, compiled for: %s\n"
        " * (the driver compiles PTX for newer GPUs). It needs only the CUDA driver, opened by\n"
        " * %s_create; without a driver, or a GPU that none of these fits, %s_create returns\n"
        " * NULL and %s_error(NULL) says why.\n",
        cpu + 5, N, N, N);
  else if (strchr(cpu, ','))
    snprintf(buf, size,
             " * It holds its kernels for each of these CPUs (LLVM's names, most portable first):\n"
             " * %s. %s_create runs those of the last one whose features this CPU\n"
             " * has (%s_target says which); on a CPU that lacks a feature of each, %s_create\n"
             " * returns NULL and %s_error(NULL) names what is missing.\n",
             cpu, N, N, N, N);
  else
    snprintf(
        buf, size,
        " * Its kernels are built for LLVM's CPU '%s' and use its features, which the library\n"
        " * records; on a CPU that lacks one, %s_create returns NULL and %s_error(NULL) names\n"
        " * what is missing.\n",
        cpu, N, N);
  return buf;
}

kc_status kc_export_header(kc_context *ctx, const kc_graph *g, const kc_rt_plan *p,
                           const kc_export_session *session, const char *source, const char *cpu,
                           const char *so_path, const char *path) {
  const kc_plan *m = &p->model;
  const char *N = m->name;
  FILE *f = fopen(path, "w");
  if (!f) return kc_errorf(ctx, KC_ERR_IO, "cannot write %s: %s", path, strerror(errno));
  char src[512], lib[512], cpu_name[128], why[1024];
  comment_text(source ? source : g->name ? g->name : "a graph", src, sizeof src);
  comment_text(cpu && *cpu ? cpu : "?", cpu_name, sizeof cpu_name);
  const char *base = strrchr(so_path, '/');
  comment_text(base ? base + 1 : so_path, lib, sizeof lib);
  fprintf(
      f,
      "/*\n * %s.h - the C interface of %s. Generated by kernc: do not edit.\n"
      " * Compiled from %s.\n"
      " *\n * The library needs neither kernc nor LLVM at run time; link it (-l) or dlopen it.\n"
      "%s"
      " *\n * Inputs, all of them, in this order:\n",
      N, lib, src, target_text(cpu_name, N, why, sizeof why));
  list_io(f, g, m->inputs, m->ninputs);
  fprintf(f,
          " * Outputs, owned by the model for the calling thread, valid until that thread's next "
          "%s_run\n * or %s_free:\n",
          N, N);
  list_io(f, g, m->outputs, m->noutputs);
  list_syms(f, p);
  fprintf(f,
          " *\n * Use:\n"
          " *   %s_t *m = %s_create(0);  (threads; 0: one per core. NULL: see %s_error(NULL))\n"
          " *   %s_tensor in[%s_NUM_INPUTS] = {...}, out[%s_NUM_OUTPUTS];\n"
          " *   if (%s_run(m, in, out) != 0) fprintf(stderr, \"%%s\\n\", %s_error(m));\n"
          " *   %s_free(m);\n"
          " * Threads: any number of threads may call %s_run on one model at once; each thread "
          "gets\n * its own buffers (made at its first run, kept until %s_free) and reads its "
          "own %s_error.\n */\n"
          "#ifndef %s_H_INCLUDED\n#define %s_H_INCLUDED\n\n#include <stdint.h>\n\n"
          "#ifdef __cplusplus\nextern \"C\" {\n#endif\n\n",
          N, N, N, N, N, N, N, N, N, N, N, N, N, N);
  common_types(f);
  fprintf(f, "typedef struct %s %s_t;\ntypedef kc_model_tensor %s_tensor;\n\n", N, N, N);
  fprintf(f, "#define %s_NUM_INPUTS %lld\n#define %s_NUM_OUTPUTS %lld\n", N, (long long)m->ninputs,
          N, (long long)m->noutputs);
  kc_status s = all_macros(ctx, f, g, m);
  if (s != KC_OK) {
    fclose(f);
    return s;
  }
  fprintf(
      f,
      "\n/* A model running on `threads` threads (<= 0: one per core); NULL when this CPU lacks "
      "a\n * feature the kernels use, or out of memory: %s_error(NULL) says which. */\n"
      "%s_t *%s_create(int threads);\n"
      "/* Run on %s_NUM_INPUTS inputs; fills %s_NUM_OUTPUTS outputs. 0 on success, else an\n"
      " * error code (KC_MODEL_ERR_*) and %s_error says what is wrong. */\n"
      "int %s_run(%s_t *model, const %s_tensor *inputs, %s_tensor *outputs);\n"
      "/* The message of this thread's last failed %s_run (\"\" after a success); with NULL, "
      "why the\n * last %s_create of this thread returned NULL. */\n"
      "const char *%s_error(const %s_t *model);\n"
      "/* Free the model and its outputs. NULL is fine. */\nvoid %s_free(%s_t *model);\n",
      N, N, N, N, N, N, N, N, N, N, N, N, N, N, N, N);
  if (!is_cuda(cpu_name))
    fprintf(
        f,
        "/* LLVM's name of the CPU whose kernels %s_create runs on this CPU (\"x86-64-v4\"; one\n"
        " * of those above); NULL when this CPU lacks a feature of each. */\n"
        "const char *%s_target(void);\n",
        N, N);
  if (session && session->decode) {
    session_api(f, N, session->decode);
  } else {
    char why[1024];
    comment_text(session && session->why_not && *session->why_not ? session->why_not
                                                                  : "not asked for",
                 why, sizeof why);
    fprintf(f,
            "\n/* No decoding session entry points (%s_session_new ...): kernc could not derive "
            "a\n * decode step with a KV cache from this model:",
            N);
    wrap(f, why, 48);
    fprintf(f, " */\n#define %s_HAS_SESSION 0\n", N);
  }
  if (session && session->train) kc_export_train_header(f, N, session->train);
  fprintf(f, "\n#ifdef __cplusplus\n}\n#endif\n#endif /* %s_H_INCLUDED */\n", N);
  if (fclose(f) != 0)
    return kc_errorf(ctx, KC_ERR_IO, "cannot write %s: %s", path, strerror(errno));
  return KC_OK;
}

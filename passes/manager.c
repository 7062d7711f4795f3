/*
 * passes/manager.c - the pass registry, named pipelines, --passes parsing, and running a
 * pipeline with instrumentation around every pass.
 *
 * Adding a pass: define `const kc_pass kc_pass_<name>` in passes/<name>.c, declare it in
 * passes/passes.h, and list it in `registry` below; list it in a pipeline to run it by default.
 * Rewrite passes build on the matcher (passes/match.h); shared helpers are in passes/internal.h.
 * Invariants: both tables are static const and NULL-terminated; instrumentation never changes
 * the graph, so a run with and without --print-* options gives the same result.
 */
#include "passes/passes.h"
#include "ir/internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Every pass kc_pipeline_parse can name, in --list-passes order. */
static const kc_pass *const registry[] = {
    &kc_pass_infer,         &kc_pass_canonicalize,
    &kc_pass_fold,          &kc_pass_cse,
    &kc_pass_dce,           &kc_pass_merge_matmul,
    &kc_pass_fuse_quant,    &kc_pass_fuse_norm,
    &kc_pass_fuse_gelu,     &kc_pass_fuse_attention,
    &kc_pass_fuse_epilogue, &kc_pass_fuse_elementwise,
    &kc_pass_derive_decode, NULL,
};

/* Named pipelines; a name here may also appear inside --passes and expands in place. */
static const struct {
  const char *name, *passes;
} pipelines[] = {
    /* shapes first (rewrites rely on them), canonical forms before folding (a known shape is a
     * constant), canonical forms again for the constants folding made (an exported scale
     * 1/sqrt(cast(shape)) is only a constant after fold, and only then does div become mul),
     * then merge what is now equal, and matmuls of one input by constant weights (q, k, v);
     * int8 matmuls (fuse-quant) go before fold (which would dequantize a QDQ model's weights
     * into f32 ones) and before the generic fusions take their cast, mul, add;
     * then the fusions, specific patterns before the generic
     * elementwise one (fuse-attention goes after fuse-gelu, before fuse-epilogue), then drop
     * what nothing reads */
    {"default", "infer,canonicalize,fuse-quant,fold,canonicalize,cse,merge-matmul,fuse-norm,"
                "fuse-gelu,fuse-attention,fuse-epilogue,fuse-elementwise,dce"},
    {"cpu", "default"},
    {NULL, NULL},
};

#ifdef NDEBUG
#define VERIFY_EACH_DEFAULT false
#else
#define VERIFY_EACH_DEFAULT true /* debug builds verify after every pass */
#endif

int kc_pass_count(void) {
  int n = 0;
  while (registry[n])
    n++;
  return n;
}

const kc_pass *kc_pass_at(int i) { return i >= 0 && i < kc_pass_count() ? registry[i] : NULL; }

const kc_pass *kc_pass_lookup(const char *name) {
  for (int i = 0; registry[i]; i++)
    if (strcmp(registry[i]->name, name) == 0) return registry[i];
  return NULL;
}

int kc_pipeline_count(void) {
  int n = 0;
  while (pipelines[n].name)
    n++;
  return n;
}

const char *kc_pipeline_name(int i) {
  return i >= 0 && i < kc_pipeline_count() ? pipelines[i].name : NULL;
}

const char *kc_pipeline_text(int i) {
  return i >= 0 && i < kc_pipeline_count() ? pipelines[i].passes : NULL;
}

static int pipeline_index(const char *name) {
  for (int i = 0; pipelines[i].name; i++)
    if (strcmp(pipelines[i].name, name) == 0) return i;
  return -1;
}

/* "fold, dce" -> "(known passes: fold, dce; pipelines: default)" for unknown-name messages. */
static const char *known_names(char *buf, size_t size) {
  size_t len = (size_t)snprintf(buf, size, "known passes: ");
  if (!registry[0]) len = (size_t)snprintf(buf, size, "no passes are registered yet");
  for (int i = 0; registry[i] && len < size; i++)
    len += (size_t)snprintf(buf + len, size - len, "%s%s", i ? ", " : "", registry[i]->name);
  for (int i = 0; pipelines[i].name && len < size; i++)
    len += (size_t)snprintf(buf + len, size - len, "%s%s",
                            i ? ", " : "; pipelines: ", pipelines[i].name);
  return buf;
}

/* The next comma-separated name of *p, blanks trimmed, into buf; false at the end of text. */
static bool next_name(const char **p, char *buf, size_t size, bool *too_long) {
  const char *s = *p;
  while (*s == ' ' || *s == '\t' || *s == ',')
    s++;
  if (!*s) return false;
  const char *e = s;
  while (*e && *e != ',')
    e++;
  *p = e;
  while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
    e--;
  *too_long = (size_t)(e - s) >= size;
  snprintf(buf, size, "%.*s", (int)(e - s), s);
  return true;
}

static kc_status parse_into(kc_context *ctx, const char *text, kc_pipeline *out, int depth) {
  char name[128], known[1024];
  bool too_long;
  for (const char *p = text ? text : ""; next_name(&p, name, sizeof name, &too_long);) {
    if (too_long) return kc_errorf(ctx, KC_ERR_INVALID_ARG, "pass name '%s...' is too long", name);
    const kc_pass *pass = kc_pass_lookup(name);
    int pl = pass ? -1 : pipeline_index(name);
    if (pass) {
      if (out->n >= KC_MAX_PIPELINE)
        return kc_errorf(ctx, KC_ERR_INVALID_ARG, "pipeline longer than %d passes",
                         KC_MAX_PIPELINE);
      out->passes[out->n++] = pass;
    } else if (pl >= 0 && depth < 4) {
      kc_status s = parse_into(ctx, pipelines[pl].passes, out, depth + 1);
      if (s != KC_OK) return s;
    } else {
      return kc_errorf(ctx, KC_ERR_INVALID_ARG, "unknown pass '%s' (%s)", name,
                       known_names(known, sizeof known));
    }
  }
  return KC_OK;
}

kc_status kc_pipeline_parse(kc_context *ctx, const char *text, kc_pipeline *out) {
  out->n = 0;
  return parse_into(ctx, text, out, 0);
}

kc_status kc_pipeline_named(kc_context *ctx, const char *name, kc_pipeline *out) {
  out->n = 0;
  char known[1024];
  int i = pipeline_index(name ? name : "");
  if (i < 0)
    return kc_errorf(ctx, KC_ERR_INVALID_ARG, "unknown pipeline '%s' (%s)", name ? name : "",
                     known_names(known, sizeof known));
  return parse_into(ctx, pipelines[i].passes, out, 1);
}

kc_status kc_pipeline_for_target(kc_context *ctx, const char *target, kc_pipeline *out) {
  return kc_pipeline_named(ctx, target && pipeline_index(target) >= 0 ? target : "default", out);
}

/* ---- instrumentation ------------------------------------------------------------------------ */

/* Is name in the comma-separated list? */
static bool in_list(const char *list, const char *name) {
  char buf[128];
  bool too_long;
  for (const char *p = list ? list : ""; next_name(&p, buf, sizeof buf, &too_long);)
    if (!too_long && strcmp(buf, name) == 0) return true;
  return false;
}

static bool in_pipeline(const kc_pipeline *p, const char *name) {
  for (int i = 0; i < p->n; i++)
    if (strcmp(p->passes[i]->name, name) == 0) return true;
  return false;
}

/* Every name of a --print-before/--print-after list must be a registered pass (or one of the
 * pipeline's, for pipelines built by hand, as tests do), so a typo is not silently ignored. */
static kc_status check_list(kc_context *ctx, const kc_pipeline *pl, const char *opt,
                            const char *list) {
  char buf[128], known[1024];
  bool too_long;
  for (const char *p = list ? list : ""; next_name(&p, buf, sizeof buf, &too_long);)
    if (too_long || (!kc_pass_lookup(buf) && !in_pipeline(pl, buf)))
      return kc_errorf(ctx, KC_ERR_INVALID_ARG, "%s: unknown pass '%s' (%s)", opt, buf,
                       known_names(known, sizeof known));
  return KC_OK;
}

/*
 * Write printed IR with a header naming the point in the pipeline. The printer's own first
 * line "# kir N" is extended rather than repeated, so the result still reads back as text IR.
 */
static void emit(FILE *f, const char *text, const char *when, const char *pass, int i, int n) {
  char hdr[256];
  if (n)
    snprintf(hdr, sizeof hdr, "%s=%s (%d/%d)", when, pass, i, n);
  else
    snprintf(hdr, sizeof hdr, "%s", when);
  const char *nl = strchr(text, '\n');
  if (strncmp(text, "# kir ", 6) == 0 && nl)
    fprintf(f, "%.*s  %s%s", (int)(nl - text), text, hdr, nl);
  else
    fprintf(f, "# %s\n%s", hdr, text);
  fflush(f);
}

/* Printed IR of g, or NULL with an error on the context. */
static char *ir_text(kc_graph *g) {
  char *t = kc_graph_print_str(g);
  if (!t && !kc_last_error(kc_graph_context(g))[0])
    kc_errorf(kc_graph_context(g), KC_ERR_NOMEM, "could not print the IR");
  return t;
}

static kc_status print_ir(FILE *f, kc_graph *g, const char *when, const char *pass, int i, int n) {
  char *t = ir_text(g);
  if (!t) return KC_ERR_NOMEM;
  emit(f, t, when, pass, i, n);
  free(t);
  return KC_OK;
}

/* DIR/NN_name.kir (text, with its header), or DIR/NN_name.dot when o->dump_dot. */
static kc_status dump_file(const kc_graph *g, const kc_pass_options *o, int i, const char *name,
                           const char *text, int n) {
  kc_context *ctx = kc_graph_context(g);
  char path[4096];
  const char *dir = o->dump_dir;
  if ((size_t)snprintf(path, sizeof path, "%s/%02d_%s.%s", dir, i, name,
                       o->dump_dot ? "dot" : "kir") >= sizeof path)
    return kc_errorf(ctx, KC_ERR_IO, "dump-dir path too long: %s", dir);
  FILE *f = fopen(path, "w");
  if (!f) return kc_errorf(ctx, KC_ERR_IO, "cannot write %s: %s", path, strerror(errno));
  kc_status s = o->dump_dot ? kc_graph_dot(g, f) : KC_OK;
  if (s != KC_OK) {
    fclose(f);
    return s;
  }
  if (!o->dump_dot) emit(f, text, i ? "after" : "input", name, i, i ? n : 0);
  if (fclose(f) != 0)
    return kc_errorf(ctx, KC_ERR_IO, "cannot write %s: %s", path, strerror(errno));
  return KC_OK;
}

static kc_status make_dir(kc_context *ctx, const char *dir) {
  struct stat st;
  if (stat(dir, &st) == 0) {
    if (S_ISDIR(st.st_mode)) return KC_OK;
    return kc_errorf(ctx, KC_ERR_IO, "dump-dir %s exists and is not a directory", dir);
  }
  if (mkdir(dir, 0777) != 0 && errno != EEXIST)
    return kc_errorf(ctx, KC_ERR_IO, "cannot create dump-dir %s: %s", dir, strerror(errno));
  return KC_OK;
}

/* Replace the error with "<prefix>: <old error>", keeping the status. */
static kc_status wrap_error(kc_context *ctx, kc_status s, const char *prefix) {
  char *old = strdup(kc_last_error(ctx));
  kc_errorf(ctx, s, "%s: %s", prefix, old ? old : kc_status_str(s));
  free(old);
  return s;
}

static kc_status fail(kc_graph *g, const kc_pass_options *o, FILE *out, kc_status s,
                      const char *prefix, const char *pass, int i, int n) {
  kc_context *ctx = kc_graph_context(g);
  wrap_error(ctx, s, prefix);
  if (!o->no_print_on_fail) {
    /* printing may overwrite the error buffer; keep the pass's message */
    char *msg = strdup(kc_last_error(ctx));
    print_ir(out, g, "after-failed", pass, i, n);
    if (msg) kc_errorf(ctx, s, "%s", msg);
    free(msg);
  }
  return s;
}

/* One pass with everything the options ask for around it. */
static kc_status run_one(const kc_pass *pass, kc_graph *g, const kc_pass_options *o, FILE *out,
                         int i, int n) {
  kc_context *ctx = kc_graph_context(g);
  bool verify = o->verify_each || kc_context_options(ctx)->verify_each || VERIFY_EACH_DEFAULT;
  bool after = o->print_after_all || in_list(o->print_after, pass->name);
  kc_status s = KC_OK;
  if (o->print_before_all || in_list(o->print_before, pass->name))
    if ((s = print_ir(out, g, "before", pass->name, i, n)) != KC_OK) return s;
  char *before = NULL;
  if (o->print_changed && !(before = ir_text(g))) return KC_ERR_NOMEM;

  kc_pass_ctx pc = {ctx, pass->name, i, n, false, o, o->explain_out ? o->explain_out : out};
  char prefix[256];
  s = pass->run(g, &pc);
  if (s != KC_OK) {
    snprintf(prefix, sizeof prefix, "pass '%s' (%d/%d) failed", pass->name, i, n);
    free(before);
    return fail(g, o, out, s, prefix, pass->name, i, n);
  }
  if (verify && (s = kc_graph_verify(g)) != KC_OK) {
    snprintf(prefix, sizeof prefix, "verifier failed after pass '%s' (%d/%d)", pass->name, i, n);
    free(before);
    return fail(g, o, out, s, prefix, pass->name, i, n);
  }
  if (after || o->print_changed || o->dump_dir) {
    char *text = ir_text(g);
    if (!text) s = KC_ERR_NOMEM;
    bool changed = text && before && strcmp(before, text) != 0;
    if (text && (after || changed)) emit(out, text, "after", pass->name, i, n);
    if (text && o->dump_dir) s = dump_file(g, o, i, pass->name, text, n);
    free(text);
  }
  free(before);
  return s;
}

kc_status kc_pipeline_run(const kc_pipeline *p, kc_graph *g, const kc_pass_options *opts) {
  static const kc_pass_options none = {0};
  const kc_pass_options *o = opts ? opts : &none;
  FILE *out = o->out ? o->out : stderr;
  kc_context *ctx = kc_graph_context(g);
  kc_status s;
  if ((s = check_list(ctx, p, "print-before", o->print_before)) != KC_OK) return s;
  if ((s = check_list(ctx, p, "print-after", o->print_after)) != KC_OK) return s;
  if (o->dump_dir) {
    if ((s = make_dir(ctx, o->dump_dir)) != KC_OK) return s;
    char *text = ir_text(g);
    if (!text) return KC_ERR_NOMEM;
    s = dump_file(g, o, 0, "input", text, p->n);
    free(text);
    if (s != KC_OK) return s;
  }
  for (int i = 0; i < p->n; i++)
    if ((s = run_one(p->passes[i], g, o, out, i + 1, p->n)) != KC_OK) return s;
  return KC_OK;
}

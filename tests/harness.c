/*
 * tests/harness.c - the helpers of tests/harness.h, shared by the cmocka tests.
 *
 * Runs inside a cmocka test: failures go through fail_msg / assert_*, which end the current
 * test only. Command output is read through a pipe (stdout) and a temporary file (stderr), so
 * neither can fill up and block the child. Nothing here keeps state between calls.
 */
#define _DEFAULT_SOURCE /* mkdtemp, mkstemp */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tests/harness.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- files and folders ------------------------------------------------------------------- */

/* All of f from where it stands, NUL-terminated; *len its size. */
static char *read_all(FILE *f, size_t *len) {
  size_t cap = 1 << 16, n = 0, got;
  char *buf = malloc(cap + 1);
  assert_non_null(buf);
  while ((got = fread(buf + n, 1, cap - n, f)) > 0) {
    n += got;
    if (n == cap) {
      buf = realloc(buf, (cap *= 2) + 1);
      assert_non_null(buf);
    }
  }
  buf[n] = 0;
  if (len) *len = n;
  return buf;
}

char *th_read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = read_all(f, len);
  fclose(f);
  return buf;
}

void th_write_file(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f) fail_msg("cannot write %s", path);
  size_t wrote = fwrite(data, 1, len, f);
  if (fclose(f) != 0 || wrote != len) fail_msg("cannot write %s", path);
}

bool th_mkdtemp(char *buf, size_t size, const char *name) {
  snprintf(buf, size, "/tmp/kc_%s_XXXXXX", name);
  return mkdtemp(buf) != NULL;
}

bool th_rmtree(const char *dir) { return th_sh("rm -rf '%s'", dir) == 0; }

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

int th_list_files(const char *dir, const char *prefix, const char *suffix, char ***out) {
  *out = NULL;
  DIR *d = opendir(dir);
  if (!d) return 0;
  int n = 0;
  size_t plen = strlen(prefix), slen = strlen(suffix);
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t len = strlen(e->d_name);
    if (len < plen + slen || strncmp(e->d_name, prefix, plen) != 0 ||
        strcmp(e->d_name + len - slen, suffix) != 0 || e->d_name[0] == '.')
      continue;
    *out = realloc(*out, (size_t)(n + 1) * sizeof **out);
    size_t sz = strlen(dir) + len + 2;
    (*out)[n] = malloc(sz);
    snprintf((*out)[n], sz, "%s/%s", dir, e->d_name);
    n++;
  }
  closedir(d);
  if (n) qsort(*out, (size_t)n, sizeof **out, cmp_str); /* a stable order for messages */
  return n;
}

void th_free_list(char **list, int n) {
  for (int i = 0; i < n; i++)
    free(list[i]);
  free(list);
}

char **th_kir_files(const char *tests, const char *sub, const char *prefix, int *n) {
  char dir[4096], **list;
  snprintf(dir, sizeof dir, "%s/kir/%s", tests, sub);
  *n = th_list_files(dir, prefix, ".kir", &list);
  return list;
}

bool th_read_expect(const char *path, char *buf, size_t size) {
  FILE *fp = fopen(path, "r");
  if (!fp) return false;
  char line[512] = "";
  bool ok = fgets(line, sizeof line, fp) && strncmp(line, "# expect: ", 10) == 0;
  fclose(fp);
  if (!ok) return false;
  line[strcspn(line, "\r\n")] = 0;
  snprintf(buf, size, "%s", line + 10);
  return true;
}

int th_first_diff_line(const char *a, const char *b) {
  int line = 1;
  for (; *a && *a == *b; a++, b++)
    if (*a == '\n') line++;
  return line;
}

/* ---- commands ---------------------------------------------------------------------------- */

static int exit_code(int st) {
  if (st == -1) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}

int th_exec(const char *cmd, char **out, char **err) {
  char errpath[] = "/tmp/kc_stderr_XXXXXX", *full = malloc(strlen(cmd) + 64);
  assert_non_null(full);
  if (err) {
    int fd = mkstemp(errpath);
    if (fd < 0) fail_msg("mkstemp failed for: %s", cmd);
    close(fd);
    sprintf(full, "%s 2>'%s'", cmd, errpath);
  } else {
    strcpy(full, cmd);
  }
  FILE *p = popen(full, "r");
  if (!p) fail_msg("popen failed: %s", cmd);
  free(full);
  char *buf = read_all(p, NULL);
  int st = pclose(p);
  if (out)
    *out = buf;
  else
    free(buf);
  if (err) {
    *err = th_read_file(errpath, NULL);
    if (!*err) *err = calloc(1, 1);
    unlink(errpath);
  }
  return exit_code(st);
}

int th_sh(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  char *cmd = malloc((size_t)n + 1);
  assert_non_null(cmd);
  va_start(ap, fmt);
  vsnprintf(cmd, (size_t)n + 1, fmt, ap);
  va_end(ap);
  int st = system(cmd);
  free(cmd);
  return exit_code(st);
}

/* ---- graphs, compile and run ------------------------------------------------------------- */

kc_graph *th_parse(kc_context *ctx, const char *text) {
  kc_graph *g = NULL;
  kc_status s = kc_graph_parse(ctx, text, "test.kir", &g);
  if (s != KC_OK) fail_msg("parse: %s", kc_last_error(ctx));
  return g;
}

const char *th_type_str(kc_graph *g, kc_val v) {
  static char buf[512];
  char d[128];
  kc_dim dims[KC_MAX_RANK];
  int r = kc_val_rank(g, v);
  if (r < 0) return "untyped";
  kc_val_dims(g, v, dims);
  snprintf(buf, sizeof buf, "%s[", kc_dtype_name(kc_val_dtype(g, v)));
  for (int i = 0; i < r; i++) {
    if (i) strcat(buf, ",");
    strcat(buf, kc_dim_str(g, dims[i], d, sizeof d));
  }
  strcat(buf, "]");
  return buf;
}

kc_module *th_compile(kc_context *ctx, const kc_graph *g, int threads) {
  if (kc_graph_status(g) != KC_OK) fail_msg("graph: %s", kc_last_error(ctx));
  kc_compile_options o = {.target = "cpu", .passes = "", .threads = threads};
  kc_module *m = NULL;
  kc_status s = kc_compile(ctx, g, &o, &m);
  if (s != KC_OK) fail_msg("compile: %s: %s", kc_status_str(s), kc_last_error(ctx));
  return m;
}

void th_run(kc_context *ctx, kc_module *m, const kc_tensor_desc *in, uint32_t nin,
            kc_tensor_desc *out, uint32_t nout) {
  kc_status s = kc_run(m, in, nin, out, nout);
  if (s != KC_OK) fail_msg("run: %s: %s", kc_status_str(s), kc_last_error(ctx));
}

kc_tensor_desc th_desc(const char *name, kc_dtype t, int rank, const int64_t *dims, void *data) {
  kc_tensor_desc d = {.name = name, .dtype = t, .rank = rank, .data = data};
  for (int i = 0; i < rank; i++)
    d.dims[i] = dims[i];
  return d;
}

size_t th_nbytes(const kc_tensor_desc *d) {
  return (size_t)th_numel(d->rank, d->dims) * kc_dtype_size(d->dtype);
}

int64_t th_numel(int rank, const int64_t *dims) {
  int64_t n = 1;
  for (int i = 0; i < rank; i++)
    n *= dims[i];
  return n;
}

/* ---- one CPU emitter at a time ----------------------------------------------------------- */

bool th_sym_lookup(void *user, const char *name, int64_t *v) {
  for (const th_sym *s = user; s && s->name; s++)
    if (strcmp(s->name, name) == 0) {
      *v = s->v;
      return true;
    }
  return false;
}

int th_cpu_setup(void **state) {
  th_cpu *f = calloc(1, sizeof *f);
  if (!f) return -1;
  f->ctx = kc_context_new();
  if (!f->ctx || kc_cpu_new(f->ctx, &f->cpu) != KC_OK) return -1;
  *state = f;
  return 0;
}

int th_cpu_teardown(void **state) {
  th_cpu *f = *state;
  kc_cpu_free(f->cpu);
  kc_context_free(f->ctx);
  free(f);
  return 0;
}

/* Offsets of each input's and output's dims in the kernel's dims array (absent values have
 * none); returns the total. */
static uint32_t dim_offsets(const kc_graph *g, const kc_node *n, uint32_t *offs) {
  uint32_t off = 0;
  for (uint32_t i = 0; i < n->nin + n->nout; i++) {
    kc_val v = i < n->nin ? n->in[i] : n->out[i - n->nin];
    offs[i] = off;
    if (v.id) off += (uint32_t)kc_value_of(g, v)->rank;
  }
  return off;
}

kc_status th_lower_node(th_cpu *f, const kc_graph *g, uint32_t ni, th_kernel *k) {
  const kc_node *n = &g->nodes[ni];
  memset(k, 0, sizeof *k);
  snprintf(k->name, sizeof k->name, "k%d", f->next++);
  uint32_t *offs = malloc((n->nin + n->nout + 1) * sizeof *offs);
  assert_non_null(offs);
  dim_offsets(g, n, offs);
  LLVMModuleRef mod = kc_cpu_module_new(f->cpu, k->name);
  kc_ir ir;
  kc_ir_init(&ir, mod);
  kc_cpu_emit e = {.cpu = f->cpu, .ir = &ir, .g = g, .n = n, .name = k->name};
  e.in_dims = offs;
  e.out_dims = offs + n->nin;
  kc_status s = kc_cpu_ops[n->op].emit(&e);
  kc_ir_dispose(&ir);
  free(offs);
  k->no_kernel = e.no_kernel;
  k->grain = e.grain;
  k->ws_bytes = e.ws_bytes;
  if (s != KC_OK || e.no_kernel) {
    LLVMDisposeModule(mod);
    return s;
  }
  s = kc_cpu_module_add(f->cpu, mod, 0);
  if (s != KC_OK) fail_msg("%s: %s", k->name, kc_last_error(f->ctx));
  char uname[48];
  snprintf(uname, sizeof uname, "%s_units", k->name);
  void *pf, *pu;
  assert_int_equal(kc_cpu_lookup(f->cpu, k->name, &pf), KC_OK);
  assert_int_equal(kc_cpu_lookup(f->cpu, uname, &pu), KC_OK);
  memcpy(&k->fn, &pf, sizeof k->fn);
  memcpy(&k->units, &pu, sizeof k->units);
  return KC_OK;
}

void th_run_last(th_cpu *f, kc_graph *g, const th_sym *syms, const int64_t *out_dims, int64_t step,
                 void **bufs) {
  if (kc_graph_status(g) != KC_OK) fail_msg("graph: %s", kc_last_error(f->ctx));
  uint32_t ni = g->nnodes - 1;
  th_kernel k;
  kc_status s = th_lower_node(f, g, ni, &k);
  if (s != KC_OK) fail_msg("emit: %s", kc_last_error(f->ctx));
  assert_false(k.no_kernel);
  const kc_node *n = &g->nodes[ni];
  uint32_t *offs = malloc((n->nin + n->nout + 1) * sizeof *offs), oi = 0;
  assert_non_null(offs);
  int64_t *dims = malloc((dim_offsets(g, n, offs) + 1) * sizeof *dims);
  assert_non_null(dims);
  for (uint32_t i = 0; i < n->nin + n->nout; i++) {
    bool out = i >= n->nin;
    kc_val v = out ? n->out[i - n->nin] : n->in[i];
    if (!v.id) continue;
    const kc_value *val = kc_value_of(g, v);
    for (int a = 0; a < val->rank; a++) {
      int64_t *d = &dims[offs[i] + (uint32_t)a];
      if (out && out_dims)
        *d = out_dims[oi++];
      else if (!kc_dim_eval(g, val->dims[a], th_sym_lookup, (void *)syms, d))
        fail_msg("dim %d of %%%u is not bound", a, v.id);
    }
  }
  size_t *bytes = calloc(n->nout + 1, sizeof *bytes);
  void **first = calloc(n->nout + 1, sizeof *first);
  assert_true(bytes && first);
  for (uint32_t i = 0; i < n->nout; i++) {
    const kc_value *val = kc_value_of(g, n->out[i]);
    bytes[i] = (size_t)th_numel(val->rank, dims + offs[n->nin + i]) * kc_dtype_size(val->dtype);
    memset(bufs[n->nin + i], 0xAB, bytes[i]);
  }
  void *ws = k.ws_bytes ? aligned_alloc(64, ((size_t)k.ws_bytes + 63) / 64 * 64) : NULL;
  int64_t nu = k.units(dims);
  assert_true(nu >= 0);
  k.fn(bufs, dims, ws, 0, nu);
  for (uint32_t i = 0; i < n->nout; i++) {
    first[i] = malloc(bytes[i] + 1);
    memcpy(first[i], bufs[n->nin + i], bytes[i]);
    memset(bufs[n->nin + i], 0xCD, bytes[i]);
  }
  if (step <= 0) step = nu > 8 ? nu / 5 : 1;
  for (int64_t hi = nu; hi > 0; hi -= step)
    k.fn(bufs, dims, ws, hi - step > 0 ? hi - step : 0, hi);
  for (uint32_t i = 0; i < n->nout; i++) {
    assert_memory_equal(first[i], bufs[n->nin + i], bytes[i]);
    free(first[i]);
  }
  free(ws);
  free(first);
  free(bytes);
  free(dims);
  free(offs);
}

/* ---- a graph lowered by kc_cpu_compile_graph --------------------------------------------- */

void th_lower_graph(th_lowered *l, kc_context *ctx, const kc_graph *g) {
  if (kc_graph_status(g) != KC_OK) fail_msg("graph: %s", kc_last_error(ctx));
  l->ctx = ctx;
  assert_int_equal(kc_cpu_new(ctx, &l->cpu), KC_OK);
  l->k = calloc(g->nnodes + 1, sizeof *l->k);
  assert_non_null(l->k);
  kc_status s = kc_cpu_compile_graph(l->cpu, g, l->k);
  if (s != KC_OK) fail_msg("lower: %s", kc_last_error(ctx));
}

void th_lowered_free(th_lowered *l) {
  kc_cpu_free(l->cpu);
  free(l->k);
}

void th_run_node(const th_lowered *l, uint32_t ni, void *const *bufs, const int64_t *dims) {
  const kc_cpu_kernel *k = &l->k[ni];
  assert_false(k->no_kernel);
  assert_non_null(k->fn);
  void *ws = k->ws_bytes ? aligned_alloc(64, ((size_t)k->ws_bytes + 63) / 64 * 64) : NULL;
  int64_t n = k->units(dims);
  assert_true(n >= 0);
  /* any split must give the same result */
  if (n > 1) {
    k->fn(bufs, dims, ws, 0, n / 3);
    k->fn(bufs, dims, ws, n / 3, n);
  } else {
    k->fn(bufs, dims, ws, 0, n);
  }
  free(ws);
}

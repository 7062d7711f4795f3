/*
 * tools/cmd_check.c - `kernc check DIR...`: run ONNX backend node tests (model.onnx plus
 * test_data_set_*) through import, verification, shape inference, and compiling and running
 * the model to compare values; one line per test and a summary line
 * "N passed, N failed, N skipped".
 *
 * Names: a test folder given by itself is named by its last component; the folders of --suite
 * DIR, or found below a DIR that is no test itself, by their path relative to that DIR
 * (node/test_add). --exclude lists match that name or its last component.
 *
 * SKIP (the model uses something kernc does not import) is for folders found under --suite or
 * below a DIR that is no test itself: a conformance suite has tests kernc is not meant to pass
 * yet. A folder the user names is one they want checked, so an unsupported import there is a
 * FAIL (exit 1), as in ONNX Runtime's onnx_test_runner; folders the --exclude list names stay
 * SKIP.
 *
 * Tolerance: the command line's when any of --rtol, --atol, --relative is given; else the
 * nearest kernc-check.tol from the test folder up to the DIR it was found from
 * (tools/check/check_tol.c); else the default (KC_CHECK_RTOL, KC_CHECK_ATOL).
 *
 * The checking itself is library code (tools/check/check.h, kc_onnx_check_dir); this file only
 * collects folders, prints and picks the exit code: 1 when anything failed, 2 on bad usage.
 */
#include "tools/check/check.h"
#include "tools/cli.h"
#include "tools/commands.h"

#include <dirent.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/*
 * A growable list of test folders. Each path's name, as printed and looked up in --exclude,
 * starts at name_off (relative to the folder the user gave); tolerance files are looked for
 * from the folder up to its first root_len characters (that given folder).
 */
typedef struct path_list {
  char **v;
  size_t *name_off, *root_len;
  size_t n, cap;
} path_list;

static bool list_add(path_list *l, const char *p, size_t name_off, size_t root_len) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    char **v = realloc(l->v, cap * sizeof *v);
    if (v) l->v = v;
    size_t *o = v ? realloc(l->name_off, cap * sizeof *o) : NULL;
    if (o) l->name_off = o;
    size_t *r = o ? realloc(l->root_len, cap * sizeof *r) : NULL;
    if (!r) return false;
    l->root_len = r;
    l->cap = cap;
  }
  l->name_off[l->n] = name_off;
  l->root_len[l->n] = root_len;
  return (l->v[l->n] = strdup(p)) ? (l->n++, true) : false;
}

static void list_free(path_list *l) {
  for (size_t i = 0; i < l->n; i++)
    free(l->v[i]);
  free(l->v);
  free(l->name_off);
  free(l->root_len);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool is_dir(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool has_model(const char *dir) {
  char model[4200];
  struct stat st;
  snprintf(model, sizeof model, "%s/model.onnx", dir);
  return stat(model, &st) == 0;
}

/* The subdirectories of dir as paths, sorted (NULL when unreadable); *n their count. */
static char **subdirs(const char *dir, size_t *n) {
  DIR *d = opendir(dir);
  *n = 0;
  if (!d) return NULL;
  char **v = NULL;
  size_t cap = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    char path[4096];
    if (e->d_name[0] == '.' ||
        (size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= sizeof path ||
        !is_dir(path))
      continue;
    if (*n == cap) {
      char **nv = realloc(v, (cap = cap ? cap * 2 : 16) * sizeof *v);
      if (!nv) break;
      v = nv;
    }
    if (!(v[*n] = strdup(path))) break;
    (*n)++;
  }
  closedir(d);
  if (*n) qsort(v, *n, sizeof *v, cmp_str);
  return v ? v : calloc(1, sizeof *v);
}

/* Every subdirectory of dir, sorted by name. */
static bool add_suite(path_list *l, const char *dir) {
  size_t n;
  char **v = subdirs(dir, &n);
  bool ok = v != NULL;
  for (size_t i = 0; i < n; i++) {
    if (ok) ok = list_add(l, v[i], strlen(dir) + 1, strlen(dir));
    free(v[i]);
  }
  free(v);
  return ok;
}

/* The test folders (holding model.onnx) at or under dir, in name order, named relative to the
 * root (the path's first root_len characters). */
static bool add_tree(path_list *l, const char *dir, size_t root_len, int depth) {
  if (has_model(dir) || depth > 16) return list_add(l, dir, root_len + 1, root_len);
  size_t n;
  char **v = subdirs(dir, &n);
  bool ok = v != NULL;
  for (size_t i = 0; i < n; i++) {
    if (ok) ok = add_tree(l, v[i], root_len, depth + 1);
    free(v[i]);
  }
  free(v);
  return ok;
}

/* A folder the user named: a test itself (named by its last component), or one holding tests
 * somewhere below (each named relative to it, e.g. node/test_add). */
static bool add_named(path_list *l, char *dir) {
  size_t len = strlen(dir);
  while (len > 1 && dir[len - 1] == '/')
    dir[--len] = 0;
  size_t before = l->n;
  if (!has_model(dir) && is_dir(dir) && !add_tree(l, dir, len, 0)) return false;
  if (l->n > before) return true;
  const char *s = strrchr(dir, '/');
  return list_add(l, dir, s ? (size_t)(s - dir) + 1 : 0, len);
}

/* The tolerance of test folder i: the nearest kernc-check.tol from the folder up to its root,
 * else the defaults. False with msg when that file is bad. */
static bool folder_tol(const path_list *l, size_t i, kc_check_tol *tol, char *msg, size_t size) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", l->v[i]);
  for (;;) {
    int got = kc_check_tol_of_dir(dir, tol, msg, size);
    if (got) return got > 0;
    char *slash = strrchr(dir, '/');
    if (!slash || (size_t)(slash - dir) < l->root_len[i]) break;
    *slash = 0;
  }
  *tol = (kc_check_tol){KC_CHECK_RTOL, KC_CHECK_ATOL, 0};
  return true;
}

/* A tolerance flag's value: a finite number >= 0, else false. */
static bool parse_tol(const char *s, double *v) {
  char *end;
  *v = strtod(s, &end);
  return end != s && !*end && isfinite(*v) && *v >= 0;
}

/*
 * The reason an exclusion file gives for test `name` ("NAME reason..." lines, '#' comments),
 * copied into why; false when the test is not listed. Exclusions are for test data known to be
 * wrong or superseded, each with its reason, and are reported as SKIP, never as PASS.
 */
static bool excluded(const char *file, const char *name, char *why, size_t size) {
  FILE *f = file ? fopen(file, "r") : NULL;
  if (!f) return false;
  char line[1024];
  size_t len = strlen(name);
  bool hit = false;
  while (!hit && fgets(line, sizeof line, f)) {
    if (line[0] == '#' || strncmp(line, name, len) != 0 || (line[len] != ' ' && line[len] != '\t'))
      continue;
    const char *r = line + len;
    while (*r == ' ' || *r == '\t')
      r++;
    snprintf(why, size, "excluded: %s", r);
    hit = true;
  }
  fclose(f);
  return hit;
}

/* Whether kernc refuses dir's model.onnx as unsupported (an op, opset or feature it lacks). */
static bool import_unsupported(kc_context *ctx, const char *dir) {
  char model[4096];
  snprintf(model, sizeof model, "%s/model.onnx", dir);
  kc_graph *g = NULL;
  kc_status s = kc_onnx_load(ctx, model, &g);
  kc_graph_free(g);
  return s == KC_ERR_UNSUPPORTED;
}

/* Keep each result on one line. */
static void one_line(char *s) {
  for (; *s; s++)
    if (*s == '\n' || *s == '\r') *s = ' ';
}

int cmd_check(int argc, char **argv) {
  bool quiet = false, shapes_only = false;
  const char *suite = NULL, *threads = NULL, *exclude = NULL, *target = "cpu", *passes = NULL;
  const char *rtol = NULL, *atol = NULL, *relative = NULL;
  cli_cmd cmd = {
      .name = "kernc check",
      .args = "DIR...",
      .about = "Check ONNX backend node tests: each DIR holds model.onnx and test_data_set_*/\n"
               "input_N.pb, output_N.pb. The model is imported and verified, input dims bind\n"
               "its symbols, and the inferred output dtypes and shapes must match the expected\n"
               "outputs; then the model is compiled, run on the inputs, and the outputs must\n"
               "match (floats: |got-want| <= atol + rtol*|want|, by default 1e-7 + 1e-3*|want|;\n"
               "integers and bool exactly). A DIR without model.onnx is searched for test\n"
               "folders, named relative to it (node/test_add). A file kernc-check.tol in a test\n"
               "folder or a parent up to DIR (or --suite DIR) sets that folder's tolerance:\n"
               "words rtol=X atol=Y, or relative=X, and # comments; --rtol, --atol or --relative\n"
               "on the command line replace every file's. A failure names the first and the\n"
               "worst element (index, computed, expected) and the bound used.\n"
               "Prints PASS, FAIL or SKIP (unsupported import) per test and a summary line.\n"
               "Exit status: 1 when a test failed, 2 on bad usage, else 0.",
      .max_pos = argc,
  };
  cli_add(&cmd,
          (cli_opt){"quiet", 'q', NULL, "print only FAIL lines and the summary", &quiet, NULL});
  cli_add(&cmd, (cli_opt){"suite", 0, "DIR", "also check every subdirectory of DIR", NULL, &suite});
  cli_add(&cmd, (cli_opt){"threads", 0, "N", "threads running the compiled models (default: all)",
                          NULL, &threads});
  cli_add(&cmd, (cli_opt){"shapes-only", 0, NULL, "compare shapes and dtypes only, run nothing",
                          &shapes_only, NULL});
  cli_add(&cmd, (cli_opt){"target", 0, "cpu|cuda", "where to run the models (default: cpu)", NULL,
                          &target});
  cli_add(&cmd, (cli_opt){"passes", 0, "LIST",
                          "passes run before code generation (default: the target's pipeline; "
                          "empty: none)",
                          NULL, &passes});
  cli_add(&cmd, (cli_opt){"rtol", 0, "X", "float outputs: |got-want| <= atol + X*|want| (1e-3)",
                          NULL, &rtol});
  cli_add(&cmd, (cli_opt){"atol", 0, "Y", "float outputs: |got-want| <= Y + rtol*|want| (1e-7)",
                          NULL, &atol});
  cli_add(&cmd,
          (cli_opt){"relative", 0, "TOL",
                    "per output max|got-want| <= TOL*max|want| (whole models)", NULL, &relative});
  cli_add(&cmd, (cli_opt){"exclude", 0, "FILE",
                          "skip the tests FILE lists (\"NAME reason\" lines), printing the reason",
                          NULL, &exclude});
  const char **pos = malloc((size_t)(argc + 1) * sizeof *pos);
  if (!pos) return fprintf(stderr, "kernc: out of memory\n"), 1;
  int npos, rc;
  if ((rc = cli_parse(&cmd, argc, argv, pos, &npos)) >= 0) {
    free(pos);
    return rc;
  }
  kc_check_options opts = {
      .shapes_only = shapes_only, .threads = 0, .target = target, .passes = passes};
  if ((rc = cli_check_target(&cmd, target)) >= 0) {
    free(pos);
    return rc;
  }
  if (threads) {
    char *end;
    long n = strtol(threads, &end, 10);
    if (*end || end == threads || n < 1 || n > KC_MAX_THREADS) {
      free(pos);
      return cli_usage_error(&cmd, "--threads needs a number from 1 to %d, got '%s'",
                             KC_MAX_THREADS, threads);
    }
    opts.threads = (int)n;
  }
  kc_check_tol cmd_tol = {KC_CHECK_RTOL, KC_CHECK_ATOL, 0};
  bool cmd_tol_set = rtol || atol || relative;
  const char *bad_tol = rtol && !parse_tol(rtol, &cmd_tol.rtol)               ? "rtol"
                        : atol && !parse_tol(atol, &cmd_tol.atol)             ? "atol"
                        : relative && !parse_tol(relative, &cmd_tol.relative) ? "relative"
                                                                              : NULL;
  if (bad_tol) {
    free(pos);
    return cli_usage_error(&cmd, "--%s needs a number >= 0", bad_tol);
  }
  if (relative && (rtol || atol)) {
    free(pos);
    return cli_usage_error(&cmd, "--relative replaces --rtol/--atol: give one or the other");
  }
  path_list dirs = {0};
  bool ok = true;
  for (int i = 0; i < npos && ok; i++)
    ok = add_named(&dirs, (char *)pos[i]);
  free(pos);
  if (ok && suite && !add_suite(&dirs, suite)) {
    list_free(&dirs);
    fprintf(stderr, "kernc check: cannot read suite folder '%s'\n", suite);
    return 1;
  }
  if (!dirs.n) {
    list_free(&dirs);
    return cli_usage_error(&cmd, suite ? "suite '%s' has no test folders" : "missing DIR%s",
                           suite ? suite : "");
  }
  kc_context *ctx = cli_context_new();
  if (!ctx || !ok) {
    list_free(&dirs);
    kc_context_free(ctx);
    return fprintf(stderr, "kernc: out of memory\n"), 1;
  }
  size_t counts[3] = {0, 0, 0};
  char msg[KC_ERRBUF_SIZE];
  for (size_t i = 0; i < dirs.n; i++) {
    kc_clear_error(ctx);
    const char *name = dirs.v[i] + dirs.name_off[i], *last = strrchr(name, '/');
    bool ex = excluded(exclude, name, msg, sizeof msg) ||
              (last && excluded(exclude, last + 1, msg, sizeof msg));
    kc_check_tol tol = cmd_tol;
    bool tol_ok = ex || cmd_tol_set || folder_tol(&dirs, i, &tol, msg, sizeof msg);
    opts.tol = &tol;
    kc_check_result r = ex        ? KC_CHECK_SKIP
                        : !tol_ok ? KC_CHECK_FAIL
                                  : kc_onnx_check_dir_opts(ctx, dirs.v[i], &opts, msg, sizeof msg);
    bool named = dirs.root_len[i] == strlen(dirs.v[i]); /* a test folder the user gave */
    if (r == KC_CHECK_SKIP && named && !ex && import_unsupported(ctx, dirs.v[i]))
      r = KC_CHECK_FAIL; /* a folder the user named must run: "unsupported" is its failure */
    counts[r]++;
    one_line(msg);
    if (r == KC_CHECK_FAIL)
      printf("FAIL %s: %s\n", name, msg);
    else if (quiet)
      continue;
    else if (r == KC_CHECK_SKIP)
      printf("SKIP %s: %s\n", name, msg);
    else if (msg[0])
      printf("PASS %s (%s)\n", name, msg);
    else
      printf("PASS %s\n", name);
    fflush(stdout);
  }
  printf("%zu passed, %zu failed, %zu skipped\n", counts[KC_CHECK_PASS], counts[KC_CHECK_FAIL],
         counts[KC_CHECK_SKIP]);
  list_free(&dirs);
  kc_context_free(ctx);
  return counts[KC_CHECK_FAIL] ? 1 : 0;
}

/*
 * tools/cmd_check.c - `kernc check DIR...`: run ONNX backend node tests (model.onnx plus
 * test_data_set_*) through import, verification, shape inference, and compiling and running
 * the model to compare values; one line per test and a summary line
 * "N passed, N failed, N skipped".
 *
 * SKIP (the model uses something kernc does not import) is for folders found under --suite: a
 * conformance suite has tests kernc is not meant to pass yet. A folder the user names is one
 * they want checked, so an unsupported import there is a FAIL (exit 1), as in ONNX Runtime's
 * onnx_test_runner; folders the --exclude list names stay SKIP.
 *
 * The checking itself is library code (tools/check/check.h, kc_onnx_check_dir); this file only
 * collects folders, prints and picks the exit code: 1 when anything failed, 2 on bad usage.
 */
#include "tools/check/check.h"
#include "tools/cli.h"
#include "tools/commands.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* A growable list of folder paths. */
typedef struct path_list {
  char **v;
  size_t n, cap;
} path_list;

static bool list_add(path_list *l, const char *p) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 64;
    char **v = realloc(l->v, cap * sizeof *v);
    if (!v) return false;
    l->v = v;
    l->cap = cap;
  }
  return (l->v[l->n] = strdup(p)) ? (l->n++, true) : false;
}

static void list_free(path_list *l) {
  for (size_t i = 0; i < l->n; i++)
    free(l->v[i]);
  free(l->v);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every subdirectory of dir, sorted by name. */
static bool add_suite(path_list *l, const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return false;
  size_t first = l->n;
  struct dirent *e;
  bool ok = true;
  while (ok && (e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char path[4096];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) ok = list_add(l, path);
  }
  closedir(d);
  qsort(l->v + first, l->n - first, sizeof *l->v, cmp_str);
  return ok;
}

/* The test's name: the folder's last component. */
static const char *test_name(char *path) {
  size_t len = strlen(path);
  while (len > 1 && path[len - 1] == '/')
    path[--len] = 0;
  const char *s = strrchr(path, '/');
  return s ? s + 1 : path;
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
  cli_cmd cmd = {
      .name = "kernc check",
      .args = "DIR...",
      .about = "Check ONNX backend node tests: each DIR holds model.onnx and test_data_set_*/\n"
               "input_N.pb, output_N.pb. The model is imported and verified, input dims bind\n"
               "its symbols, and the inferred output dtypes and shapes must match the expected\n"
               "outputs; then the model is compiled, run on the inputs, and the outputs must\n"
               "match (floats: |got-want| <= 1e-7 + 1e-3*|want|; integers and bool exactly).\n"
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
  path_list dirs = {0};
  bool ok = true;
  for (int i = 0; i < npos && ok; i++)
    ok = list_add(&dirs, pos[i]);
  size_t named = dirs.n; /* dirs[0, named) come from the command line, the rest from --suite */
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
    const char *name = test_name(dirs.v[i]);
    bool ex = excluded(exclude, name, msg, sizeof msg);
    kc_check_result r =
        ex ? KC_CHECK_SKIP : kc_onnx_check_dir_opts(ctx, dirs.v[i], &opts, msg, sizeof msg);
    if (r == KC_CHECK_SKIP && i < named && !ex && import_unsupported(ctx, dirs.v[i]))
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

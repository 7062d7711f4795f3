/*
 * tools/cmd_dump.c - `kernc dump FILE`: print a model (.onnx) or text IR (.kir) as text IR,
 * graphviz dot, or SVG (dot run through graphviz's `dot -Tsvg`), after the pass pipeline (the
 * default one unless --passes says otherwise). --dump-dir writes one file per pass in the same
 * format (NN_<pass>.kir, .dot or .svg). --weights=FILE writes the model's weights to a
 * safetensors file the printed text names (tools/kir_weights.c), so the .kir runs by itself.
 *
 * IR printed by --print-* goes to stdout ahead of the result, since looking at it is the point
 * of dump; when the result is dot or SVG on stdout it goes to stderr instead, so stdout stays
 * valid. --explain-fusion reasons go to stderr always.
 */
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/kir_weights.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Turn every DIR/NN_<pass>.dot the pass manager wrote into DIR/NN_<pass>.svg. */
static int dump_dir_svg(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return fprintf(stderr, "kernc: cannot read %s\n", dir), 1;
  struct dirent *e;
  int rc = 0;
  while (!rc && (e = readdir(d))) {
    size_t len = strlen(e->d_name);
    const char *n = e->d_name;
    if (len < 8 || n[0] < '0' || n[0] > '9' || n[1] < '0' || n[1] > '9' || n[2] != '_' ||
        strcmp(n + len - 4, ".dot") != 0)
      continue;
    char in[4096], out[4096];
    snprintf(in, sizeof in, "%s/%s", dir, n);
    snprintf(out, sizeof out, "%s/%.*s.svg", dir, (int)(len - 4), n);
    rc = cli_dot_to_svg(in, out);
    if (!rc) remove(in);
  }
  closedir(d);
  return rc;
}

/* The result as dot piped through `dot -Tsvg` (a temporary .dot file in between). */
static int write_svg(kc_context *ctx, const kc_graph *g, const char *out_path) {
  char tmp[] = "/tmp/kernc_dump_XXXXXX";
  int fd = mkstemp(tmp);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (!f) {
    if (fd >= 0) close(fd), remove(tmp);
    return fprintf(stderr, "kernc: cannot write a temporary file\n"), 1;
  }
  kc_status s = kc_graph_dot(g, f);
  int rc = fclose(f) != 0 ? (fprintf(stderr, "kernc: cannot write %s\n", tmp), 1) : 0;
  if (s != KC_OK) rc = cli_fail(ctx, s, NULL);
  bool to_stdout = !out_path || strcmp(out_path, "-") == 0;
  if (!rc) rc = cli_dot_to_svg(tmp, to_stdout ? NULL : out_path);
  remove(tmp);
  return rc;
}

int cmd_dump(int argc, char **argv) {
  cli_pass_flags pf = {0};
  const char *out_path = NULL, *format = "text", *weights = NULL;
  bool no_verify = false;
  cli_cmd cmd = {
      .name = "kernc dump",
      .args = "FILE",
      .about = "Load FILE (an ONNX model, .onnx, or text IR, .kir or - for stdin), verify it,\n"
               "run the pass pipeline and print the result as text IR, graphviz dot, or SVG\n"
               "(--format=svg runs graphviz's dot -Tsvg). --dump-dir files take the format too.\n"
               "With --weights=W.safetensors the weights are written to W and the text names\n"
               "it (relative to the -o file's folder), so `kernc run` can run the .kir alone.",
      .max_pos = 1,
  };
  cli_add(&cmd,
          (cli_opt){"format", 0, "text|dot|svg", "output format (default: text)", NULL, &format});
  cli_add(&cmd, (cli_opt){"output", 'o', "FILE", "write the result to FILE (default: stdout)", NULL,
                          &out_path});
  cli_add(&cmd, (cli_opt){"weights", 0, "FILE",
                          "write the weights to FILE (.safetensors) and name it in the text IR",
                          NULL, &weights});
  cli_add(&cmd, (cli_opt){"no-verify", 0, NULL, "print the graph even if the verifier rejects it",
                          &no_verify, NULL});
  cli_add_pass_opts(&cmd, &pf);
  const char *pos[1];
  int npos, rc;
  if ((rc = cli_parse(&cmd, argc, argv, pos, &npos)) >= 0) return rc;
  if (pf.list_passes) {
    cli_list_passes(stdout);
    return 0;
  }
  bool dot = strcmp(format, "dot") == 0, svg = strcmp(format, "svg") == 0;
  if (!dot && !svg && strcmp(format, "text") != 0)
    return cli_usage_error(&cmd, "unknown format '%s' (text, dot or svg)", format);
  if (weights && (dot || svg))
    return cli_usage_error(&cmd, "--weights goes with text IR (--format=text)");
  if (npos < 1) return cli_usage_error(&cmd, "missing FILE");
  pf.dump_dot = dot || svg;

  kc_context *ctx = cli_context_new();
  if (!ctx) return fprintf(stderr, "kernc: out of memory\n"), 1;
  kc_graph *g = NULL;
  kc_status s = cli_load(ctx, pos[0], true, &g);
  bool to_stdout = !out_path || strcmp(out_path, "-") == 0;
  if (s != KC_OK) {
    rc = cli_fail(ctx, s, pos[0]);
  } else if (!no_verify && (s = kc_graph_verify(g)) != KC_OK) {
    rc = cli_fail(ctx, s, pos[0]);
  } else if (no_verify && !pf.passes) {
    rc = 0; /* a broken graph is printed as read: passes would only trip over it */
  } else {
    rc = cli_run_passes(ctx, g, &pf, (dot || svg) && to_stdout ? stderr : stdout);
  }
  if (rc == 0 && svg && pf.dump_dir) rc = dump_dir_svg(pf.dump_dir);
  if (rc == 0 && weights)
    rc = kir_weights_save(ctx, g, weights, out_path);
  else if (rc == 0 && !dot && !svg)
    rc = kir_weights_rebase(g, pos[0], out_path);
  if (rc == 0 && svg) {
    rc = write_svg(ctx, g, out_path);
  } else if (rc == 0) {
    FILE *f = cli_open_out(out_path);
    rc = 1;
    if (f) {
      s = dot ? kc_graph_dot(g, f) : kc_graph_print(g, f);
      rc = cli_close_out(f, out_path);
      if (s != KC_OK) rc = cli_fail(ctx, s, NULL);
    }
  }
  kc_graph_free(g);
  kc_context_free(ctx);
  return rc;
}

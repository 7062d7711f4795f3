/*
 * tools/cmd_dump.c - `kernc dump FILE`: print a model (.onnx) or text IR (.kir) as text IR or
 * graphviz dot, after the pass pipeline (the default one unless --passes says otherwise).
 *
 * IR printed by --print-* goes to stdout ahead of the result, since looking at it is the point
 * of dump; when the result is dot on stdout it goes to stderr instead, so stdout stays valid dot.
 */
#include "tools/cli.h"
#include "tools/commands.h"

#include <string.h>

int cmd_dump(int argc, char **argv) {
  cli_pass_flags pf = {0};
  const char *out_path = NULL, *format = "text";
  bool no_verify = false;
  cli_cmd cmd = {
      .name = "kernc dump",
      .args = "FILE",
      .about = "Load FILE (an ONNX model, .onnx, or text IR, .kir or - for stdin), verify it,\n"
               "run the pass pipeline and print the result as text IR or graphviz dot\n"
               "(kernc dump m.onnx --format=dot | dot -Tsvg > m.svg).",
      .max_pos = 1,
  };
  cli_add(&cmd, (cli_opt){"format", 0, "text|dot", "output format (default: text)", NULL, &format});
  cli_add(&cmd, (cli_opt){"output", 'o', "FILE", "write the result to FILE (default: stdout)", NULL,
                          &out_path});
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
  bool dot = strcmp(format, "dot") == 0;
  if (!dot && strcmp(format, "text") != 0)
    return cli_usage_error(&cmd, "unknown format '%s' (text or dot)", format);
  if (npos < 1) return cli_usage_error(&cmd, "missing FILE");

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
    rc = cli_run_passes(ctx, g, &pf, dot && to_stdout ? stderr : stdout);
  }
  if (rc == 0) {
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

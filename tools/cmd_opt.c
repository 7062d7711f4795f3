/*
 * tools/cmd_opt.c - `kernc opt FILE.kir`: text IR in, passes, text IR out (pass tests).
 *
 * The input is verified before any pass runs, so a pass never sees a malformed graph; the
 * result goes to stdout (or -o), printed IR from instrumentation to stderr, as mlir-opt does,
 * so stdout is exactly the resulting IR.
 */
#include "tools/cli.h"
#include "tools/commands.h"
#include "tools/kir_weights.h"

int cmd_opt(int argc, char **argv) {
  cli_pass_flags pf = {0};
  const char *out_path = NULL;
  cli_cmd cmd = {
      .name = "kernc opt",
      .args = "FILE.kir",
      .about = "Read text IR (FILE.kir, or - for stdin), verify it, run passes and print the\n"
               "resulting text IR. Without --passes the default pipeline runs; --passes= runs\n"
               "none (the text round-trips). IR printed by --print-* and --explain-fusion\n"
               "reasons go to stderr.",
      .max_pos = 1, /* FILE is checked after --list-passes, which needs none */
  };
  cli_add(&cmd, (cli_opt){"output", 'o', "FILE", "write the result to FILE (default: stdout)", NULL,
                          &out_path});
  cli_add_pass_opts(&cmd, &pf);
  const char *pos[1];
  int npos, rc;
  if ((rc = cli_parse(&cmd, argc, argv, pos, &npos)) >= 0) return rc;
  if (pf.list_passes) {
    cli_list_passes(stdout);
    return 0;
  }
  if (npos < 1) return cli_usage_error(&cmd, "missing FILE.kir");

  kc_context *ctx = cli_context_new();
  if (!ctx) return fprintf(stderr, "kernc: out of memory\n"), 1;
  kc_graph *g = NULL;
  kc_status s = cli_load(ctx, pos[0], false, &g);
  if (s != KC_OK)
    rc = cli_fail(ctx, s, pos[0]);
  else if ((s = kc_graph_verify(g)) != KC_OK)
    rc = cli_fail(ctx, s, pos[0]);
  else
    rc = cli_run_passes(ctx, g, &pf, stderr);
  if (rc == 0) rc = kir_weights_rebase(g, pos[0], out_path); /* the text moves to out_path */
  if (rc == 0) {
    FILE *f = cli_open_out(out_path);
    rc = 1;
    if (f) {
      s = kc_graph_print(g, f);
      rc = cli_close_out(f, out_path);
      if (s != KC_OK) rc = cli_fail(ctx, s, NULL);
    }
  }
  kc_graph_free(g);
  kc_context_free(ctx);
  return rc;
}

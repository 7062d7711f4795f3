/*
 * tools/cmd_compile.c - `kernc compile MODEL -o libNAME.so`: ahead-of-time compilation through
 * kc_export into a shared library that needs neither kernc nor LLVM, plus its C header (NAME.h
 * next to the library unless --header says where). Silent on success, like the C compilers.
 * --target=cuda embeds kernels NVRTC compiles now (--cuda-arch) and the library then needs only
 * the CUDA driver; the header and entry points are the CPU target's.
 */
#include "tools/cli.h"
#include "tools/commands.h"

#include <stdlib.h>

#include <stdio.h>
#include <string.h>

int cmd_compile(int argc, char **argv) {
  const char *out = NULL, *name = NULL, *header = NULL, *passes = NULL, *target = "cpu";
  const char *archs = NULL;
  cli_cmd cmd = {
      .name = "kernc compile",
      .args = "MODEL",
      .about = "Compile MODEL (.onnx, or text IR .kir) ahead of time for this CPU into a shared\n"
               "library that needs neither kernc nor LLVM (weights included), and write its C\n"
               "header: NAME_create, NAME_run, NAME_free, NAME_error and the inputs and outputs\n"
               "with dtypes and shapes. Every size must follow from the input shapes. The C\n"
               "compiler that links the library is $CC, else cc. With --target=cuda the kernels\n"
               "are compiled by NVRTC for GPUs (--cuda-arch) and embedded: the library needs\n"
               "only the CUDA driver at run time, and has the same header and entry points.",
      .min_pos = 1,
      .max_pos = 1,
  };
  cli_add(&cmd, (cli_opt){"output", 'o', "libNAME.so", "the shared library to write (required)",
                          NULL, &out});
  cli_add(&cmd,
          (cli_opt){"name", 0, "NAME", "C prefix of the entry points (default: NAME of libNAME.so)",
                    NULL, &name});
  cli_add(&cmd, (cli_opt){"header", 0, "FILE", "the header to write (default: NAME.h beside -o)",
                          NULL, &header});
  cli_add(&cmd,
          (cli_opt){"passes", 0, "LIST", "passes to run before code generation", NULL, &passes});
  cli_add(&cmd, (cli_opt){"target", 0, "cpu|cuda", "the target (default cpu)", NULL, &target});
  cli_add(&cmd, (cli_opt){"cuda-arch", 0, "LIST",
                          "cuda: cubins for these archs, e.g. 80,86,90; compute_NN for PTX, else "
                          "PTX for the lowest is added (default 80,90)",
                          NULL, &archs});
  const char *pos[1];
  int npos, rc = cli_parse(&cmd, argc, argv, pos, &npos);
  if (rc >= 0) return rc;
  if (!out) return cli_usage_error(&cmd, "missing -o libNAME.so");
  if ((rc = cli_check_target(&cmd, target)) >= 0) return rc;
  kc_context *ctx = cli_context_new();
  if (!ctx) return (fprintf(stderr, "kernc: out of memory\n"), 1);
  kc_graph *g = NULL;
  kc_status s = cli_load(ctx, pos[0], true, &g);
  if (s != KC_OK) {
    rc = cli_fail(ctx, s, pos[0]);
  } else {
    const char *cc = getenv("CC"), *rt = getenv("KERNC_RT"); /* the library reads no variables */
    kc_export_options o = {.name = name,
                           .passes = passes,
                           .source = pos[0],
                           .target = target,
                           .cuda_archs = archs,
                           .cc = cc && *cc ? cc : NULL,
                           .runtime = rt && *rt ? rt : NULL};
    s = kc_export(ctx, g, &o, out, header);
    rc = s != KC_OK ? cli_fail(ctx, s, pos[0]) : 0;
  }
  kc_graph_free(g);
  kc_context_free(ctx);
  return rc;
}

/* tools/cmd_check.c - `kernc check`: placeholder until the ONNX frontend lands. */
#include "tools/commands.h"
#include <stdio.h>
int cmd_check(int argc, char **argv) {
  (void)argc;
  (void)argv;
  fprintf(stderr, "kernc check: not built yet\n");
  return 1;
}

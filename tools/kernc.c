/*
 * tools/kernc.c - main of the kernc program: global flags and dispatch to the subcommands of
 * tools/commands.h. Subcommands own their flags; this file only knows their names.
 *
 * Exit codes everywhere: 0 ok, 1 failure, 2 bad usage.
 */
#include "kernc.h"
#include "tools/commands.h"

#include <stdio.h>
#include <string.h>

typedef struct command {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *help;
} command;

static const command commands[] = {
    {"opt", cmd_opt, "read text IR, run passes, print text IR"},
    {"dump", cmd_dump, "print a model or text IR as text or graphviz, after passes"},
    {"check", cmd_check, "run ONNX backend node tests and compare shapes and values"},
    {"run", cmd_run, "compile a model for this CPU and run it on .npy inputs"},
    {"compile", cmd_compile, "compile a model ahead of time into a .so and a C header"},
    {"bench", cmd_bench, "time a model's runs and kernels on this CPU (random inputs by default)"},
    {"generate", cmd_generate, "generate tokens after a prompt with a KV cache (decoders)"},
    {"grad", cmd_grad, "run one forward and backward pass; write the loss and gradients"},
    {"gradcheck", cmd_gradcheck, "check a model's gradients against finite differences (float64)"},
    {"train", cmd_train, "train a model: optimizer steps on .npy data, safetensors checkpoints"},
};
#define NCOMMANDS (sizeof commands / sizeof *commands)

static void usage(FILE *f) {
  fprintf(f, "usage: kernc [--version] [--help] COMMAND [ARGS]\n\n"
             "kernc compiles model graphs (ONNX, or its text IR) into generated kernels.\n\n"
             "commands:\n");
  for (size_t i = 0; i < NCOMMANDS; i++)
    fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].help);
  fprintf(f, "\nRun 'kernc COMMAND --help' for the options of a command.\n");
}

static const command *find(const char *name) {
  for (size_t i = 0; i < NCOMMANDS; i++)
    if (strcmp(commands[i].name, name) == 0) return &commands[i];
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "kernc: missing command\n");
    usage(stderr);
    return 2;
  }
  const char *a = argv[1];
  if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
    printf("kernc %s\n", kc_version());
    return 0;
  }
  if (strcmp(a, "help") == 0) { /* `kernc help opt` = `kernc opt --help` */
    if (argc < 3) {
      usage(stdout);
      return 0;
    }
    const command *c = find(argv[2]);
    if (!c) {
      fprintf(stderr, "kernc: unknown command '%s'\nTry 'kernc --help' for more information.\n",
              argv[2]);
      return 2;
    }
    char help[] = "--help";
    char *args[] = {argv[2], help, NULL};
    return c->run(2, args);
  }
  if (a[0] == '-') {
    fprintf(stderr, "kernc: unknown option '%s'\nTry 'kernc --help' for more information.\n", a);
    return 2;
  }
  const command *c = find(a);
  if (!c) {
    fprintf(stderr, "kernc: unknown command '%s'\nTry 'kernc --help' for more information.\n", a);
    return 2;
  }
  return c->run(argc - 1, argv + 1);
}

/*
 * tools/commands.h - the subcommands of the kernc program. Each takes the arguments after its
 * name (argv[0] is the subcommand) and returns the process exit code: 0 ok, 1 failure, 2 bad usage.
 */
#ifndef KERNC_TOOLS_COMMANDS_H
#define KERNC_TOOLS_COMMANDS_H

int cmd_opt(int argc, char **argv);
int cmd_dump(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_compile(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_grad(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_gradcheck(int argc, char **argv);

#endif

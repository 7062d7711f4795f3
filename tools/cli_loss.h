/*
 * tools/cli_loss.h - the training losses of the kernc program (tools/cli_loss.c), shared by
 * `kernc grad` and `kernc train`: the LOSS spec parser and the builder that puts the loss onto
 * a loaded graph as output CLI_LOSS_NAME.
 *
 * LOSS: `xent:OUTPUT:LABELS` - mean softmax cross-entropy over every position, classes on
 * OUTPUT's last axis, labels -100 ignored (PyTorch's F.cross_entropy on logits reshaped to
 * [-1, C]); LABELS is a new int64 graph input of OUTPUT's shape without the class axis. Built
 * with kc_cross_entropy (the fused softmax_xent op: the backward recomputes the softmax from the
 * saved log-sum-exp, no softmax tensor is kept). `mse:OUTPUT:TARGET` - mean((OUTPUT - TARGET)^2),
 * TARGET a new input of OUTPUT's dtype and shape. `sum:OUTPUT` - the sum of OUTPUT.
 */
#ifndef KERNC_TOOLS_CLI_LOSS_H
#define KERNC_TOOLS_CLI_LOSS_H

#include "kernc.h"
#include "tools/cli.h"

#define CLI_LOSS_NAME "kernc.loss" /* the loss output kc_grad differentiates */
#define CLI_IGNORE_INDEX (-100)

typedef enum cli_loss_kind { CLI_LOSS_XENT, CLI_LOSS_MSE, CLI_LOSS_SUM } cli_loss_kind;

typedef struct cli_loss {
  cli_loss_kind kind;
  char output[256], extra[256]; /* extra: LABELS or TARGET */
} cli_loss;

/* "xent:OUT:LABELS" / "mse:OUT:TARGET" / "sum:OUT" into *l; -1, or a usage error (2) when
 * malformed. */
int cli_loss_parse(const cli_cmd *cmd, const char *s, cli_loss *l);
/* Build the loss onto g as output CLI_LOSS_NAME; -1, or exit code 1 (said) on failure. */
int cli_loss_build(kc_context *ctx, kc_graph *g, const cli_loss *l);
/* For xent: LABELS (descriptor in) must have OUTPUT's static dims without the class axis, and
 * hold classes in [0, C) or -100. -1, or exit code 1 (said). */
int cli_loss_check_labels(const kc_graph *g, const cli_loss *l, const kc_tensor_desc *in);

#endif /* KERNC_TOOLS_CLI_LOSS_H */

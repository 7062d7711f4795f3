/*
 * tools/cli_loss.c - the LOSS spec of `kernc grad` and `kernc train` (tools/cli_loss.h): parse
 * it, build it onto a loaded graph with the builder, check labels against it. Moved here from
 * tools/cmd_grad.c unchanged in behaviour.
 */
#include "tools/cli_loss.h"
#include "ir/internal.h"

#include <stdlib.h>
#include <string.h>

int cli_loss_parse(const cli_cmd *cmd, const char *s, cli_loss *l) {
  const char *c1 = strchr(s, ':');
  const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
  size_t klen = c1 ? (size_t)(c1 - s) : 0;
  bool two = false;
  if (klen == 4 && strncmp(s, "xent", 4) == 0) {
    l->kind = CLI_LOSS_XENT;
    two = true;
  } else if (klen == 3 && strncmp(s, "mse", 3) == 0) {
    l->kind = CLI_LOSS_MSE;
    two = true;
  } else if (klen == 3 && strncmp(s, "sum", 3) == 0) {
    l->kind = CLI_LOSS_SUM;
  } else {
    return cli_usage_error(cmd,
                           "--loss: unknown loss '%s' (xent:OUTPUT:LABELS, mse:OUTPUT:TARGET "
                           "or sum:OUTPUT)",
                           s);
  }
  const char *out = c1 + 1, *out_end = c2 ? c2 : out + strlen(out);
  const char *extra = c2 ? c2 + 1 : "";
  if (out_end == out || (two && (!c2 || !*extra || strchr(extra, ':'))) || (!two && c2))
    return cli_usage_error(cmd, "--loss: '%s' should be %s", s,
                           l->kind == CLI_LOSS_XENT  ? "xent:OUTPUT:LABELS"
                           : l->kind == CLI_LOSS_MSE ? "mse:OUTPUT:TARGET"
                                                     : "sum:OUTPUT");
  if ((size_t)(out_end - out) >= sizeof l->output || strlen(extra) >= sizeof l->extra)
    return cli_usage_error(cmd, "--loss: name too long in '%s'", s);
  snprintf(l->output, sizeof l->output, "%.*s", (int)(out_end - out), out);
  snprintf(l->extra, sizeof l->extra, "%s", extra);
  return -1;
}

int cli_loss_build(kc_context *ctx, kc_graph *g, const cli_loss *l) {
  uint32_t nout = kc_graph_num_outputs(g), o = 0;
  while (o < nout && strcmp(kc_graph_output_name(g, o), l->output) != 0)
    o++;
  if (o == nout) {
    fprintf(stderr, "kernc: --loss: the model has no output '%s'; its outputs are:", l->output);
    for (uint32_t k = 0; k < nout; k++)
      fprintf(stderr, " '%s'", kc_graph_output_name(g, k));
    fprintf(stderr, "\n");
    return 1;
  }
  for (uint32_t i = 0; l->kind != CLI_LOSS_SUM && i < kc_graph_num_inputs(g); i++)
    if (strcmp(kc_graph_input_name(g, i), l->extra) == 0) {
      fprintf(stderr, "kernc: --loss: the model already has an input named '%s'\n", l->extra);
      return 1;
    }
  kc_val x = kc_graph_output(g, o), loss;
  kc_dtype t = kc_val_dtype(g, x);
  int r = kc_val_rank(g, x);
  if (!kc_dtype_is_float(t) || r < 0 || (l->kind == CLI_LOSS_XENT && r < 1)) {
    fprintf(stderr, "kernc: --loss: output '%s' is %s of rank %d; %s\n", l->output,
            kc_dtype_name(t), r,
            l->kind == CLI_LOSS_XENT ? "cross-entropy needs float logits with a class axis"
                                     : "the loss needs a float tensor of known rank");
    return 1;
  }
  kc_dim dims[KC_MAX_RANK];
  kc_val_dims(g, x, dims);
  if (l->kind == CLI_LOSS_XENT) {
    kc_val labels = kc_input(g, l->extra, KC_I64, r - 1, dims);
    loss = kc_cross_entropy(g, x, labels, CLI_IGNORE_INDEX); /* fused: no softmax kept */
  } else if (l->kind == CLI_LOSS_MSE) {
    kc_val target = kc_input(g, l->extra, t, r, dims);
    kc_val d = kc_sub(g, x, target);
    loss = kc_reduce_mean(g, kc_mul(g, d, d), 0, NULL, 0);
  } else {
    loss = kc_reduce_sum(g, x, 0, NULL, 0);
  }
  kc_output(g, loss, CLI_LOSS_NAME);
  kc_status s = kc_graph_status(g);
  return s == KC_OK ? -1 : cli_fail(ctx, s, NULL);
}

int cli_loss_check_labels(const kc_graph *g, const cli_loss *l, const kc_tensor_desc *in) {
  uint32_t nout = kc_graph_num_outputs(g), o = 0;
  while (o < nout && strcmp(kc_graph_output_name(g, o), l->output) != 0)
    o++;
  kc_val x = kc_graph_output(g, o);
  int r = kc_val_rank(g, x);
  kc_dim dims[KC_MAX_RANK];
  kc_val_dims(g, x, dims);
  bool ok = in->dtype == KC_I64 && in->rank == r - 1;
  for (int d = 0; ok && d < r - 1; d++)
    ok = dims[d] < 0 || dims[d] == in->dims[d];
  if (!ok) {
    fprintf(stderr, "kernc: --loss: labels '%s' are %s[", l->extra, kc_dtype_name(in->dtype));
    for (int d = 0; d < in->rank; d++)
      fprintf(stderr, "%s%lld", d ? "," : "", (long long)in->dims[d]);
    fprintf(stderr, "]; output '%s' needs int64 of its shape without the class axis: [", l->output);
    for (int d = 0; d < r - 1; d++) {
      char b[64];
      fprintf(stderr, "%s%s", d ? "," : "", kc_dim_str(g, dims[d], b, sizeof b));
    }
    fprintf(stderr, "]\n");
    return 1;
  }
  if (dims[r - 1] < 0) return -1;
  int64_t ncls = dims[r - 1], n = 1;
  for (int d = 0; d < in->rank; d++)
    n *= in->dims[d];
  const int64_t *lab = in->data;
  for (int64_t k = 0; k < n; k++)
    if (lab[k] != CLI_IGNORE_INDEX && (lab[k] < 0 || lab[k] >= ncls)) {
      fprintf(stderr,
              "kernc: --loss: label %lld at flat position %lld of '%s' is outside [0, %lld) "
              "and not the ignore index %d\n",
              (long long)lab[k], (long long)k, l->extra, (long long)ncls, CLI_IGNORE_INDEX);
      return 1;
    }
  return -1;
}

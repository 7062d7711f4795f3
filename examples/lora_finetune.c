/*
 * examples/lora_finetune.c - fine-tune the example GPT-2-style model (examples/gpt2_tiny.onnx,
 * random weights, vocabulary 100) with LoRA on one short token sequence through kernc's C API,
 * and print the falling loss.
 *
 * The steps a user takes: load the ONNX model; add the loss (next-token cross-entropy over every
 * position: kc_cross_entropy on the logits and a labels input); add low-rank adapters to the
 * attention and MLP projections (kc_lora: y += alpha/r * (x @ A) @ B, B starting at zero, so
 * step 0 is the base model); make a trainer over the adapters only (the base weights are frozen,
 * so their gradients are never built); run AdamW steps with a learning rate given per step; save
 * the adapters as safetensors. Exits 1 if the loss did not fall.
 *
 * usage: lora_finetune MODEL.onnx [STEPS [OUT.safetensors]]
 */
#include "kernc.h"

#include <stdio.h>
#include <stdlib.h>

#define SEQ 24

static int fail(kc_context *ctx, const char *what) {
  fprintf(stderr, "lora_finetune: %s: %s\n", what, kc_last_error(ctx));
  return 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: lora_finetune MODEL.onnx [STEPS [OUT.safetensors]]\n");
    return 2;
  }
  int steps = argc > 2 ? atoi(argv[2]) : 30;
  kc_context *ctx = kc_context_new();
  kc_graph *g = NULL;
  if (kc_onnx_load(ctx, argv[1], &g) != KC_OK) return fail(ctx, "load");

  /* the loss: labels[b, s] is the token after ids[b, s] */
  kc_dim dims[2] = {1, SEQ};
  kc_val labels = kc_input(g, "labels", KC_I64, 2, dims);
  kc_output(g, kc_cross_entropy(g, kc_graph_output(g, 0), labels, -100), "loss");
  if (kc_graph_status(g) != KC_OK) return fail(ctx, "loss");

  /* rank-8 adapters on the attention and MLP projections of both layers */
  if (kc_lora(g, "h.*.c_*.weight", 8, 16.0, 1) != KC_OK) return fail(ctx, "kc_lora");

  kc_train_options o;
  kc_train_defaults(&o); /* AdamW */
  o.weight_decay = 0;
  const char *params[] = {"*.lora_A", "*.lora_B"};
  kc_trainer *t = NULL;
  if (kc_trainer_new(ctx, g, "loss", 2, params, &o, &t) != KC_OK) return fail(ctx, "trainer");
  printf("training %u adapter tensors, base weights frozen\n", kc_trainer_num_params(t));

  /* one sequence to memorize: a repeating pattern of ids */
  int64_t seq[SEQ + 1];
  for (int i = 0; i <= SEQ; i++)
    seq[i] = (7 * i + 3) % 23 + 40;
  kc_tensor_desc in[2] = {
      {.name = "input_ids", .dtype = KC_I64, .rank = 2, .dims = {1, SEQ}, .data = seq},
      {.name = "labels", .dtype = KC_I64, .rank = 2, .dims = {1, SEQ}, .data = seq + 1}};
  double first = 0, loss = 0;
  for (int step = 1; step <= steps; step++) {
    if (kc_trainer_step(t, in, 2, 1e-2, step, &loss) != KC_OK) return fail(ctx, "step");
    if (step == 1) first = loss;
    if (step == 1 || step % 5 == 0 || step == steps) printf("step %3d  loss %.4f\n", step, loss);
  }
  if (argc > 3) {
    if (kc_trainer_save(t, argv[3]) != KC_OK) return fail(ctx, "save");
    printf("adapters saved to %s\n", argv[3]);
  }
  kc_trainer_free(t);
  kc_graph_free(g);
  kc_context_free(ctx);
  if (!(loss < first)) {
    fprintf(stderr, "lora_finetune: the loss did not fall (%.4f -> %.4f)\n", first, loss);
    return 1;
  }
  printf("loss %.4f -> %.4f\n", first, loss);
  return 0;
}

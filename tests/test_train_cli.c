/*
 * tests/test_train_cli.c - `kernc train` end to end (argv[1]: the kernc binary, argv[2]: tests/).
 *
 *   - gpt2_tiny, xent:logits:labels, --data with train_ref/ids.npy as input_ids.npy and
 *     train_ref/labels.npy: 3 AdamW steps (lr 1e-2) print the losses of torch.optim.AdamW
 *     (tests/models/train_ref.py's adamw run, within 2e-4 relative) and lower the loss; --save,
 *     then --load and 2 more steps print steps 4 and 5 with the reference's losses;
 *   - --batch 2 --accumulate 2: the same first loss (the mean over the two micro-batches);
 *   - --lora r=4,targets=h.*.c_*.weight: step 1's loss is the base model's (adapters start at
 *     B = 0), the loss falls over 8 steps, --save writes only adapter tensors, --export-onnx
 *     writes the model with the adapters merged, whose loss (`kernc grad`) is below step 1's;
 *     --checkpoint sqrt prints the same losses as without;
 *   - errors: a missing data file names the input and file, samples that differ between files,
 *     an unknown optimizer, --momentum with adamw, missing --lr: exit 1 or 2 with a message.
 * Commands go through /bin/sh (th_exec); paths are single-quoted.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "runtime/runtime.h"
#include "tests/harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct env {
  const char *kernc, *tests;
  char tmp[64];
} env;

/* Run `kernc train MODEL ARGS` on gpt2_tiny; its stdout (malloc'd) unless the exit code is not
 * want_rc or stderr lacks want_err. */
static char *train(const env *e, const char *args, int want_rc, const char *want_err) {
  char cmd[16384];
  snprintf(cmd, sizeof cmd, "'%s' train '%s/models/gpt2_tiny/model.onnx' %s", e->kernc, e->tests,
           args);
  char *out, *err;
  int rc = th_exec(cmd, &out, &err);
  if (rc != want_rc || (want_err && !strstr(err, want_err)))
    fail_msg("%s: exit %d (want %d)\nstdout: %s\nstderr: %s\nwanted stderr \"%s\"", cmd, rc,
             want_rc, out, err, want_err ? want_err : "");
  free(err);
  return out;
}

/* The loss printed for step k, or NAN. */
static double loss_of(const char *out, int k) {
  char key[32];
  snprintf(key, sizeof key, "step %d  loss ", k);
  const char *p = strstr(out, key);
  return p ? strtod(p + strlen(key), NULL) : NAN;
}

static void expect_losses(const char *out, const double *ref, int from, int to) {
  for (int k = from; k <= to; k++) {
    double l = loss_of(out, k);
    if (!(fabs(l - ref[k - 1]) <= 2e-4 * ref[k - 1]))
      fail_msg("step %d: loss %.9g, torch %.9g\n%s", k, l, ref[k - 1], out);
  }
}

static void t_train(void **state) {
  env *e = *state;
  kc_context *ctx = kc_context_new();
  char path[1024], args[4096];
  snprintf(path, sizeof path, "%s/models/train_ref/adamw_losses.npy", e->tests);
  kc_tensor_desc ref;
  if (kc_npy_read(ctx, path, &ref) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  const double *r = ref.data;
  snprintf(args, sizeof args,
           "--data '%s/data' --loss xent:logits:labels --lr 0.01 --steps 3 --save '%s/s.st'",
           e->tmp, e->tmp);
  char *out = train(e, args, 0, NULL);
  expect_losses(out, r, 1, 3);
  assert_true(loss_of(out, 3) < loss_of(out, 1));
  assert_non_null(strstr(out, "tokens/s"));
  free(out);
  snprintf(args, sizeof args,
           "--data '%s/data' --loss xent:logits:labels --lr 0.01 --steps 2 --load '%s/s.st'",
           e->tmp, e->tmp);
  out = train(e, args, 0, NULL);
  expect_losses(out, r, 4, 5);
  assert_true(isnan(loss_of(out, 1)));
  free(out);
  snprintf(args, sizeof args,
           "--data '%s/data' --loss xent:logits:labels --lr 0.01 --steps 1 --batch 2 "
           "--accumulate 2",
           e->tmp);
  out = train(e, args, 0, NULL);
  expect_losses(out, r, 1, 1);
  free(out);
  kc_npy_free(&ref);
  kc_context_free(ctx);
}

/* The loss `kernc grad` prints for model on the data folder. */
static double grad_loss(const env *e, const char *model) {
  char cmd[8192], *out, *err;
  snprintf(cmd, sizeof cmd,
           "'%s' grad '%s' --loss xent:logits:labels -i input_ids='%s/data/input_ids.npy' "
           "-i labels='%s/data/labels.npy' --params ln_f.bias -o '%s/g'",
           e->kernc, model, e->tmp, e->tmp, e->tmp);
  int rc = th_exec(cmd, &out, &err);
  const char *p = strstr(out, "loss ");
  double l = rc == 0 && p ? strtod(p + 5, NULL) : NAN;
  if (isnan(l)) fail_msg("%s: exit %d\n%s\n%s", cmd, rc, out, err);
  free(out);
  free(err);
  return l;
}

static void t_lora(void **state) {
  env *e = *state;
  kc_context *ctx = kc_context_new();
  char path[1024], args[4096];
  snprintf(path, sizeof path, "%s/models/train_ref/adamw_losses.npy", e->tests);
  kc_tensor_desc ref;
  if (kc_npy_read(ctx, path, &ref) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  const char *lora = "--loss xent:logits:labels --lr 0.01 --lora r=4,targets='h.*.c_*.weight'";
  snprintf(args, sizeof args,
           "--data '%s/data' %s --steps 8 --save '%s/ad.st' --export-onnx "
           "'%s/merged.onnx'",
           e->tmp, lora, e->tmp, e->tmp);
  char *out = train(e, args, 0, NULL);
  expect_losses(out, ref.data, 1, 1); /* B = 0: the base model's loss */
  double first = loss_of(out, 1), last = loss_of(out, 8);
  if (!(last < 0.9 * first)) fail_msg("LoRA did not lower the loss\n%s", out);
  assert_non_null(strstr(out, "(adapters merged)"));
  free(out);
  /* the checkpoint holds adapters and their AdamW state only */
  char cmd[2048], *o2, *err;
  snprintf(cmd, sizeof cmd, "head -c 100000 '%s/ad.st' | tr -c '[:print:]' ' '", e->tmp);
  assert_int_equal(th_exec(cmd, &o2, &err), 0);
  assert_non_null(strstr(o2, "h.0.attn.c_attn.weight.lora_A"));
  assert_null(strstr(o2, "\"wte.weight\""));
  free(o2);
  free(err);
  snprintf(path, sizeof path, "%s/merged.onnx", e->tmp);
  double merged = grad_loss(e, path);
  if (!(merged < last)) fail_msg("merged model: loss %.9g, step 8 printed %.9g", merged, last);
  /* checkpointing changes memory, not the losses */
  snprintf(args, sizeof args, "--data '%s/data' %s --steps 3", e->tmp, lora);
  char *plain = train(e, args, 0, NULL);
  snprintf(args, sizeof args, "--data '%s/data' %s --steps 3 --checkpoint sqrt", e->tmp, lora);
  char *ckpt = train(e, args, 0, NULL);
  for (int k = 1; k <= 3; k++)
    if (!(fabs(loss_of(plain, k) - loss_of(ckpt, k)) <= 1e-6 * loss_of(plain, k)))
      fail_msg("step %d: %.9g without checkpointing, %.9g with", k, loss_of(plain, k),
               loss_of(ckpt, k));
  free(plain);
  free(ckpt);
  kc_npy_free(&ref);
  kc_context_free(ctx);
}

static void t_errors(void **state) {
  env *e = *state;
  char args[4096];
  snprintf(args, sizeof args, "--data '%s' --loss xent:logits:labels --lr 0.01 --steps 1", e->tmp);
  free(train(e, args, 1, "input 'input_ids' needs"));
  snprintf(args, sizeof args, "--data '%s/bad' --loss xent:logits:labels --lr 0.01 --steps 1",
           e->tmp);
  free(train(e, args, 1, "the same first axis"));
  snprintf(args, sizeof args, "--data x --loss sum:logits --lr 1 --steps 1 --optimizer adam");
  free(train(e, args, 2, "adamw or sgd"));
  snprintf(args, sizeof args, "--data x --loss sum:logits --lr 1 --steps 1 --momentum 0.9");
  free(train(e, args, 2, "--momentum is for --optimizer sgd"));
  free(train(e, "--data x --loss sum:logits --steps 1", 2, "missing --lr"));
  free(train(e, "--data x --loss sum:logits --lr 1 --steps 1 --lora r=4", 2, "targets=GLOB"));
  free(train(e, "--data x --loss sum:logits --lr 1 --steps 1 --checkpoint some", 2,
             "none, sqrt or marked"));
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s KERNC_BINARY TESTS_DIR\n", argv[0]);
    return 2;
  }
  env e = {argv[1], argv[2], ""};
  if (!th_mkdtemp(e.tmp, sizeof e.tmp, "traincli")) {
    perror("mkdtemp");
    return 1;
  }
  /* data folders: the reference batch; and one whose labels have fewer samples */
  int rc = th_sh("mkdir -p '%s/data' '%s/bad' && cp '%s/models/train_ref/ids.npy' "
                 "'%s/data/input_ids.npy' && cp '%s/models/train_ref/labels.npy' "
                 "'%s/data/labels.npy' && cp '%s/models/train_ref/ids.npy' '%s/bad/input_ids.npy'",
                 e.tmp, e.tmp, e.tests, e.tmp, e.tests, e.tmp, e.tests, e.tmp);
  if (rc != 0) return 1;
  kc_context *ctx = kc_context_new();
  kc_tensor_desc lab;
  char p[1024];
  snprintf(p, sizeof p, "%s/models/train_ref/labels.npy", e.tests);
  if (kc_npy_read(ctx, p, &lab) != KC_OK) return 1;
  lab.dims[0] = 3; /* 3 samples against 4 ids */
  snprintf(p, sizeof p, "%s/bad/labels.npy", e.tmp);
  if (kc_npy_write(ctx, p, &lab) != KC_OK) return 1;
  kc_npy_free(&lab);
  kc_context_free(ctx);
  const struct CMUnitTest t[] = {
      cmocka_unit_test_prestate(t_errors, &e),
      cmocka_unit_test_prestate(t_train, &e),
      cmocka_unit_test_prestate(t_lora, &e),
  };
  rc = cmocka_run_group_tests(t, NULL, NULL);
  if (!th_rmtree(e.tmp)) fprintf(stderr, "could not remove %s\n", e.tmp);
  return rc;
}

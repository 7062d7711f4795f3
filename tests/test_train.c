/*
 * tests/test_train.c - the training runtime (kc_trainer_*, runtime/train.c, optim.c,
 * safetensors.c) on gpt2_tiny with mean cross-entropy over ids shifted by one (argv[2]: tests/).
 *
 *   - AdamW 10 steps, SGD (momentum 0.9, weight decay 0.01) 6 steps, AdamW with clipping at norm
 *     0.5 6 steps: each step's loss and the final parameters against torch.optim in f64
 *     (tests/models/train_ref.py; the LM head initializer is its own parameter there, as it is
 *     here). Tolerances (kernc in f32): losses within 2e-4 relative, clip norms 1e-4 relative,
 *     parameters within 1e-4 + 1e-3 * |reference| + 4 * DEV, DEV per tensor the largest
 *     difference of PyTorch's own f32 run from its f64 one (train_ref/<run>_f32dev.txt): Adam
 *     divides by the gradient's magnitude, so where a gradient is near zero f32 rounding moves
 *     a parameter by up to lr per step (the key bias, whose gradient is exactly 0, most);
 *   - accumulation: two micro-batches of 2 then apply equals one step on the batch of 4 (mean
 *     loss and norm within 1e-5 relative; parameters within 2e-4 after 2 AdamW steps of lr 1e-2,
 *     the key bias (noise_only) skipped);
 *   - save after 3 steps, load into a fresh trainer, 3 more steps: bitwise the same losses and
 *     parameters as without the round trip (AdamW and SGD with momentum); the file read back by
 *     hand (header length, JSON names, metadata, data offsets);
 *   - 1 vs 2 threads: bitwise the same losses and parameters;
 *   - frozen weights (params "h.*"): the module's loss equals a plain forward of the model with
 *     the trained weights written back (kc_trainer_write_weights), so frozen ones never moved;
 *   - errors: a glob matching nothing, a checkpoint of another optimizer or shape, malformed
 *     safetensors bytes (truncated, lengths, offsets, overlaps, duplicates, bad JSON).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "runtime/runtime.h"
#include "runtime/safetensors.h"
#include "tests/harness.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *tests_dir;
static char tmp[64];

typedef struct data {
  kc_tensor_desc ids, labels;
} data;

static void npy(kc_context *ctx, const char *rel, kc_tensor_desc *t) {
  char p[1024];
  snprintf(p, sizeof p, "%s/models/%s", tests_dir, rel);
  if (kc_npy_read(ctx, p, t) != KC_OK) fail_msg("%s: %s", p, kc_last_error(ctx));
}

/* gpt2_tiny with output "loss": mean cross-entropy of logits against a new input "labels" (-100
 * ignored), built as kernc grad's xent. */
static kc_graph *model(kc_context *ctx) {
  char p[1024];
  snprintf(p, sizeof p, "%s/models/gpt2_tiny/model.onnx", tests_dir);
  kc_graph *g;
  if (kc_onnx_load(ctx, p, &g) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  kc_val x = kc_graph_output(g, 0);
  kc_dim d[3];
  kc_val_dims(g, x, d);
  kc_val labels = kc_input(g, "labels", KC_I64, 2, d);
  kc_val lsm = kc_log_softmax(g, x, 2);
  kc_val cls = kc_range(g, kc_const_i64(g, 0), kc_const_i64(g, 100), kc_const_i64(g, 1));
  int64_t last = 2;
  kc_val hit = kc_equal(g, kc_unsqueeze(g, labels, 1, &last), cls);
  kc_val total = kc_reduce_sum(g, kc_where(g, hit, lsm, kc_const_f32(g, 0)), 0, NULL, 0);
  kc_val valid = kc_not(g, kc_equal(g, labels, kc_const_i64(g, -100)));
  kc_val count = kc_reduce_sum(g, kc_cast(g, valid, KC_F32), 0, NULL, 0);
  kc_output(g, kc_neg(g, kc_div(g, total, count)), "loss");
  assert_int_equal(kc_graph_status(g), KC_OK);
  return g;
}

static kc_trainer *trainer(kc_context *ctx, const char *glob, const kc_train_options *o) {
  kc_graph *g = model(ctx);
  kc_trainer *t = NULL;
  kc_status s = kc_trainer_new(ctx, g, "loss", 1, &glob, o, &t);
  kc_graph_free(g);
  if (s != KC_OK) fail_msg("kc_trainer_new: %s", kc_last_error(ctx));
  return t;
}

/* Rows [r0, r0 + n) of the batch as the step's inputs. */
static void rows(const data *d, int64_t r0, int64_t n, kc_tensor_desc in[2]) {
  in[0] = d->ids;
  in[1] = d->labels;
  in[0].name = "input_ids";
  in[1].name = "labels";
  for (int k = 0; k < 2; k++) {
    in[k].dims[0] = n;
    in[k].data = (int64_t *)in[k].data + r0 * in[k].dims[1];
  }
}

static void load_data(kc_context *ctx, data *d) {
  npy(ctx, "train_ref/ids.npy", &d->ids);
  npy(ctx, "train_ref/labels.npy", &d->labels);
}

static void free_data(data *d) {
  kc_npy_free(&d->ids);
  kc_npy_free(&d->labels);
}

static double step(kc_context *ctx, kc_trainer *t, const data *d, double lr, int64_t k) {
  kc_tensor_desc in[2];
  rows(d, 0, 4, in);
  double loss;
  if (kc_trainer_step(t, in, 2, lr, k, &loss) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  return loss;
}

/* The key bias (columns 64..127 of c_attn's bias): adding a constant to every key of a query
 * leaves softmax unchanged, so its gradient is exactly 0 and what kernc (f32) and torch (f64)
 * compute is rounding noise, 1e-9 against 1e-17. Adam divides by the noise's own magnitude and
 * moves such an element by up to lr per step in the noise's direction: its trajectory is not
 * defined by the math, so comparisons of two kernc runs summed in another order skip it. */
static bool noise_only(const char *name, int64_t k) {
  const char *sfx = ".attn.c_attn.bias";
  size_t n = strlen(name), m = strlen(sfx);
  return n > m && strcmp(name + n - m, sfx) == 0 && k >= 64 && k < 128;
}

static void save(kc_context *ctx, kc_trainer *t, const char *path) {
  if (kc_trainer_save(t, path) != KC_OK) fail_msg("save: %s", kc_last_error(ctx));
}

static void load(kc_context *ctx, kc_trainer *t, const char *path) {
  if (kc_trainer_load(t, path) != KC_OK) fail_msg("load: %s", kc_last_error(ctx));
}

static void same_params(kc_trainer *a, kc_trainer *b, double tol);

/* Losses and final parameters of `steps` steps against train_ref/<run>*. */
static void check_run(const char *run, const kc_train_options *o, double lr, int steps) {
  kc_context *ctx = kc_context_new();
  data d;
  load_data(ctx, &d);
  kc_trainer *t = trainer(ctx, "*", o);
  assert_int_equal(kc_trainer_num_params(t), 29);
  char rel[512];
  kc_tensor_desc rl, rn = {0};
  snprintf(rel, sizeof rel, "train_ref/%s_losses.npy", run);
  npy(ctx, rel, &rl);
  if (o->clip_norm > 0) npy(ctx, "train_ref/clip_norms.npy", &rn);
  for (int k = 0; k < steps; k++) {
    double loss = step(ctx, t, &d, lr, k + 1), want = ((double *)rl.data)[k];
    if (fabs(loss - want) > 2e-4 * fabs(want))
      fail_msg("%s step %d: loss %.9g, torch %.9g", run, k + 1, loss, want);
    if (rn.data) {
      double nrm = kc_trainer_grad_norm(t), wn = ((double *)rn.data)[k];
      if (fabs(nrm - wn) > 1e-4 * wn) fail_msg("step %d: norm %.9g, torch %.9g", k + 1, nrm, wn);
    }
  }
  snprintf(rel, sizeof rel, "%s/models/train_ref/%s_f32dev.txt", tests_dir, run);
  FILE *devf = fopen(rel, "r");
  assert_non_null(devf);
  double worst = 0;
  for (uint32_t i = 0; i < kc_trainer_num_params(t); i++) {
    kc_tensor_desc p, r;
    assert_int_equal(kc_trainer_param(t, i, &p), KC_OK);
    char fn[256];
    snprintf(fn, sizeof fn, "%s", p.name);
    for (char *c = fn; *c; c++)
      if (*c == ':') *c = '_';
    snprintf(rel, sizeof rel, "train_ref/%s/%s.npy", run, fn);
    npy(ctx, rel, &r);
    int64_t n = th_numel(p.rank, p.dims);
    assert_int_equal(n, th_numel(r.rank, r.dims));
    const float *a = p.data, *b = r.data;
    char dn[256];
    double dev = -1;
    rewind(devf);
    while (fscanf(devf, "%255s %lf", dn, &dev) == 2 && strcmp(dn, p.name) != 0)
      dev = -1;
    if (dev < 0) fail_msg("%s_f32dev.txt has no '%s'", run, p.name);
    for (int64_t k = 0; k < n; k++) {
      double e = fabs((double)a[k] - b[k]);
      if (e > worst) worst = e;
      if (e > 1e-4 + 1e-3 * fabs(b[k]) + 4 * dev)
        fail_msg("%s: %s[%lld] = %.9g, torch %.9g", run, p.name, (long long)k, a[k], b[k]);
    }
    kc_npy_free(&r);
  }
  fclose(devf);
  printf("%s: largest parameter difference %.3g\n", run, worst);
  if (o->optimizer == KC_OPTIM_SGD) {
    /* save, two more steps, load, the same two steps: bitwise the same (momentum restored) */
    char path[128];
    snprintf(path, sizeof path, "%s/sgd.safetensors", tmp);
    save(ctx, t, path);
    double l1 = step(ctx, t, &d, lr, steps + 1), l2 = step(ctx, t, &d, lr, steps + 2);
    kc_trainer *copy = trainer(ctx, "*", o); /* fresh: holds the result to compare with */
    load(ctx, copy, path);
    assert_int_equal(kc_trainer_steps(copy), steps);
    double m1 = step(ctx, copy, &d, lr, steps + 1), m2 = step(ctx, copy, &d, lr, steps + 2);
    assert_memory_equal(&l1, &m1, sizeof l1);
    assert_memory_equal(&l2, &m2, sizeof l2);
    same_params(t, copy, 0);
    kc_trainer_free(copy);
  }
  kc_npy_free(&rl);
  kc_npy_free(&rn);
  kc_trainer_free(t);
  free_data(&d);
  kc_context_free(ctx);
}

static void t_adamw(void **state) {
  (void)state;
  kc_train_options o;
  kc_train_defaults(&o);
  check_run("adamw", &o, 1e-2, 10);
}

static void t_sgd(void **state) {
  (void)state;
  kc_train_options o;
  kc_train_defaults(&o);
  o.optimizer = KC_OPTIM_SGD;
  o.momentum = 0.9;
  o.weight_decay = 0.01;
  check_run("sgd", &o, 0.1, 6);
}

static void t_clip(void **state) {
  (void)state;
  kc_train_options o;
  kc_train_defaults(&o);
  o.clip_norm = 0.5;
  check_run("clip", &o, 1e-2, 6);
}

/* Every parameter of a and b: bitwise equal (tol 0) or within tol (noise_only skipped). */
static void same_params(kc_trainer *a, kc_trainer *b, double tol) {
  assert_int_equal(kc_trainer_num_params(a), kc_trainer_num_params(b));
  for (uint32_t i = 0; i < kc_trainer_num_params(a); i++) {
    kc_tensor_desc p, q;
    assert_int_equal(kc_trainer_param(a, i, &p), KC_OK);
    assert_int_equal(kc_trainer_param(b, i, &q), KC_OK);
    assert_string_equal(p.name, q.name);
    int64_t n = th_numel(p.rank, p.dims);
    if (tol == 0) {
      if (memcmp(p.data, q.data, (size_t)n * 4) != 0) fail_msg("'%s' differs", p.name);
      continue;
    }
    for (int64_t k = 0; k < n; k++) {
      float x = ((float *)p.data)[k], y = ((float *)q.data)[k];
      if (!noise_only(p.name, k) && fabs((double)x - y) > tol)
        fail_msg("'%s'[%lld]: %.9g vs %.9g", p.name, (long long)k, x, y);
    }
  }
}

static uint64_t le64(const unsigned char *p) {
  uint64_t v = 0;
  for (int k = 7; k >= 0; k--)
    v = v << 8 | p[k];
  return v;
}

/* The file as bytes: the header names the first parameter with its offsets, the metadata says
 * the optimizer and step, and the data at those offsets is the parameter. */
static void check_file_bytes(const char *path, kc_trainer *t, const char *opt) {
  size_t len;
  unsigned char *f = (unsigned char *)th_read_file(path, &len);
  assert_non_null(f);
  uint64_t hl = le64(f);
  assert_true(hl % 8 == 0 && 8 + hl <= len);
  char *h = strndup((const char *)f + 8, hl);
  char want[256];
  snprintf(want, sizeof want, "\"optimizer\":\"%s\"", opt);
  assert_non_null(strstr(h, want));
  assert_non_null(strstr(h, "\"step\":\"3\""));
  kc_tensor_desc p;
  assert_int_equal(kc_trainer_param(t, 0, &p), KC_OK);
  snprintf(want, sizeof want, "\"%s\":{\"dtype\":\"F32\",\"shape\":[%lld,%lld],\"data_offsets\":[",
           p.name, (long long)p.dims[0], (long long)p.dims[1]);
  char *at = strstr(h, want);
  assert_non_null(at);
  unsigned long long b, e;
  assert_int_equal(sscanf(at + strlen(want), "%llu,%llu", &b, &e), 2);
  size_t nb = (size_t)th_numel(p.rank, p.dims) * 4;
  assert_int_equal(e - b, nb);
  assert_true(8 + hl + e <= len);
  assert_memory_equal(f + 8 + hl + b, p.data, nb);
  free(h);
  free(f);
}

/*
 * One AdamW trainer a (threads 1) and a fresh one b: a saves its initial state, runs 3 steps
 * and saves again (file checked by hand); b loads that and both run steps 4..6: bitwise equal.
 * Then a reloads the initial state, switches to 2 threads and runs steps 1..3 again: bitwise the
 * losses of the 1-thread run; reloaded once more, steps 1..2 as two micro-batches of 2 rows each
 * match the whole-batch steps (loss mean, grad norm, parameters) up to rounding.
 */
static void t_state(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  data d;
  load_data(ctx, &d);
  kc_train_options o;
  kc_train_defaults(&o);
  o.threads = 1;
  kc_trainer *a = trainer(ctx, "*", &o), *b = trainer(ctx, "*", &o);
  assert_int_equal(kc_trainer_apply(b, 1e-2, 1), KC_ERR_INVALID_ARG); /* nothing accumulated */
  char init[128], mid[128];
  snprintf(init, sizeof init, "%s/init.safetensors", tmp);
  snprintf(mid, sizeof mid, "%s/adamw.safetensors", tmp);
  save(ctx, a, init);
  double l1[3], norm1[3];
  for (int64_t k = 1; k <= 3; k++) {
    l1[k - 1] = step(ctx, a, &d, 1e-2, k);
    norm1[k - 1] = kc_trainer_grad_norm(a);
  }
  save(ctx, a, mid);
  check_file_bytes(mid, a, "adamw");
  load(ctx, b, mid);
  assert_int_equal(kc_trainer_steps(b), 3);
  same_params(a, b, 0);
  for (int64_t k = 4; k <= 6; k++) {
    double la = step(ctx, a, &d, 1e-2, k), lb = step(ctx, b, &d, 1e-2, k);
    assert_memory_equal(&la, &lb, sizeof la);
  }
  same_params(a, b, 0);
  /* threads: b at 2 threads from the initial state, against a's 1-thread losses */
  load(ctx, b, init);
  assert_int_equal(kc_module_set_threads(kc_trainer_module(b), 2), KC_OK);
  for (int64_t k = 1; k <= 3; k++) {
    double lb = step(ctx, b, &d, 1e-2, k);
    assert_memory_equal(&l1[k - 1], &lb, sizeof lb);
  }
  load(ctx, a, init);
  for (int64_t k = 1; k <= 3; k++)
    step(ctx, a, &d, 1e-2, k);
  same_params(a, b, 0);
  /* accumulation: two micro-batches of 2 then apply, against the whole-batch steps of b */
  load(ctx, a, init);
  load(ctx, b, init);
  for (int64_t k = 1; k <= 2; k++) {
    double lw = step(ctx, b, &d, 1e-2, k), m0, m1;
    kc_tensor_desc in[2];
    rows(&d, 0, 2, in);
    assert_int_equal(kc_trainer_accumulate(a, in, 2, &m0), KC_OK);
    rows(&d, 2, 2, in);
    assert_int_equal(kc_trainer_accumulate(a, in, 2, &m1), KC_OK);
    assert_int_equal(kc_trainer_apply(a, 1e-2, k), KC_OK);
    assert_memory_equal(&lw, &l1[k - 1], sizeof lw);
    if (fabs((m0 + m1) / 2 - lw) > 1e-5 * lw) fail_msg("mean %.9g, whole %.9g", (m0 + m1) / 2, lw);
    if (fabs(kc_trainer_grad_norm(a) - norm1[k - 1]) > 1e-5 * norm1[k - 1])
      fail_msg("norm %.9g, whole %.9g", kc_trainer_grad_norm(a), norm1[k - 1]);
  }
  same_params(a, b, 2e-4);
  kc_trainer_free(a);
  kc_trainer_free(b);
  free_data(&d);
  kc_context_free(ctx);
}

static void t_frozen(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  data d;
  load_data(ctx, &d);
  kc_train_options o;
  kc_train_defaults(&o);
  kc_trainer *t = trainer(ctx, "h.*", &o);
  assert_int_equal(kc_trainer_num_params(t), 24);
  for (int64_t k = 1; k <= 3; k++)
    step(ctx, t, &d, 1e-2, k);
  kc_tensor_desc in[2];
  rows(&d, 0, 4, in);
  double loss;
  assert_int_equal(kc_trainer_accumulate(t, in, 2, &loss), KC_OK); /* forward at the new values */
  kc_graph *g = model(ctx);
  if (kc_trainer_write_weights(t, g) != KC_OK) fail_msg("%s", kc_last_error(ctx));
  kc_module *m = th_compile(ctx, g, 0);
  kc_tensor_desc out[2];
  th_run(ctx, m, in, 2, out, 2);
  double plain = *(float *)out[1].data;
  if (fabs(plain - loss) > 1e-5 * loss) fail_msg("trainer %.9g, plain forward %.9g", loss, plain);
  kc_module_free(m);
  kc_graph_free(g);
  /* checkpoints that do not fit this trainer (h.* only, AdamW), written directly */
  char path[128];
  snprintf(path, sizeof path, "%s/e.safetensors", tmp);
  kc_tensor_desc p;
  assert_int_equal(kc_trainer_param(t, 0, &p), KC_OK);
  const char *sgd[] = {"optimizer", "sgd", "step", "1"},
             *adamw[] = {"optimizer", "adamw", "step", "1"};
  kc_st_tensor one = {p.name, KC_F32, p.rank, p.dims, p.data};
  assert_int_equal(kc_st_write(ctx, path, &one, 1, sgd, 2), KC_OK);
  assert_int_equal(kc_trainer_load(t, path), KC_ERR_INVALID_ARG);
  assert_non_null(strstr(kc_last_error(ctx), "optimizer 'sgd'"));
  assert_int_equal(kc_st_write(ctx, path, &one, 1, adamw, 2), KC_OK);
  assert_int_equal(kc_trainer_load(t, path), KC_ERR_INVALID_ARG);
  assert_non_null(strstr(kc_last_error(ctx), ".exp_avg'"));
  save(ctx, t, path);
  kc_st_file f;
  assert_int_equal(kc_st_read(ctx, path, &f), KC_OK);
  kc_st_tensor *ts = calloc(f.n + 1, sizeof *ts);
  for (uint32_t i = 0; i < f.n; i++)
    ts[i] = (kc_st_tensor){f.e[i].name, f.e[i].dtype, f.e[i].rank, f.e[i].dims, f.e[i].data};
  int64_t wrong[2] = {3, 5};
  ts[f.n] = (kc_st_tensor){"wte.weight", KC_F32, 1, wrong, p.data};
  assert_int_equal(kc_st_write(ctx, path, ts, f.n + 1, adamw, 2), KC_OK);
  assert_int_equal(kc_trainer_load(t, path), KC_ERR_INVALID_ARG); /* a frozen weight's name */
  assert_non_null(strstr(kc_last_error(ctx), "'wte.weight' is not a parameter"));
  ts[0].dims = wrong; /* the first parameter with another shape */
  assert_int_equal(kc_st_write(ctx, path, ts, f.n, adamw, 2), KC_OK);
  assert_int_equal(kc_trainer_load(t, path), KC_ERR_INVALID_ARG);
  assert_non_null(strstr(kc_last_error(ctx), "the trainer's is f32["));
  assert_int_equal(kc_trainer_load(t, "/nonexistent/x.safetensors"), KC_ERR_IO);
  free(ts);
  kc_st_free(&f);
  kc_trainer_free(t);
  free_data(&d);
  kc_context_free(ctx);
}

static void t_errors(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  kc_graph *g = model(ctx);
  kc_trainer *t = NULL;
  const char *globs[] = {"h.*", "nothing.*"};
  assert_int_equal(kc_trainer_new(ctx, g, "loss", 2, globs, NULL, &t), KC_ERR_INVALID_ARG);
  assert_non_null(strstr(kc_last_error(ctx), "nothing.*"));
  assert_null(t);
  kc_graph_free(g);
  kc_context_free(ctx);
}

/* A safetensors image: 8-byte length, header, then ndata bytes. */
static size_t image(unsigned char *buf, const char *header, size_t ndata) {
  size_t hl = strlen(header);
  for (int k = 0; k < 8; k++)
    buf[k] = (unsigned char)((uint64_t)hl >> (8 * k));
  memcpy(buf + 8, header, hl);
  memset(buf + 8 + hl, 7, ndata);
  return 8 + hl + ndata;
}

static void t_safetensors_bad(void **state) {
  (void)state;
  kc_context *ctx = kc_context_new();
  unsigned char buf[1024];
  kc_st_file f;
  size_t n = image(buf,
                   "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                   "\"b\\u00e9\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]},"
                   "\"__metadata__\":{\"k\":\"v\\n\"}}",
                   16);
  assert_int_equal(kc_st_parse(ctx, buf, n, "good", &f), KC_OK);
  assert_int_equal(f.n, 2);
  assert_non_null(kc_st_find(&f, "b\xc3\xa9"));
  assert_string_equal(kc_st_meta(&f, "k"), "v\n");
  kc_st_free(&f);
  static const struct {
    const char *header;
    size_t ndata;
    const char *msg;
  } bad[] = {
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}", 16, "hold 12 bytes"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 8, "outside"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 16, "outside"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
       "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
       16, "overlap"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
       "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
       8, "given twice"},
      {"{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "needs dtype, shape and data_offsets"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "non-negative"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,4]}}", 4,
       "too large"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, "expected"},
      {"{\"a\":{\"dtype\":\"F32", 0, "unterminated"},
      {"[]", 0, "JSON object"},
      {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
       "too long"},
      {"{} x", 0, "text after"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    n = image(buf, bad[i].header, bad[i].ndata);
    kc_status s = kc_st_parse(ctx, buf, n, "bad", &f);
    if (s == KC_OK || !strstr(kc_last_error(ctx), bad[i].msg))
      fail_msg("case %zu: %s: '%s'", i, kc_status_str(s), kc_last_error(ctx));
  }
  /* truncated: every prefix of the good file fails cleanly */
  n = image(buf, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8);
  for (size_t k = 0; k < n; k++)
    assert_int_not_equal(kc_st_parse(ctx, buf, k, "cut", &f), KC_OK);
  /* a header length past the end */
  buf[0] = 0xff, buf[5] = 0x10;
  assert_int_equal(kc_st_parse(ctx, buf, n, "long", &f), KC_ERR_PARSE);
  assert_non_null(strstr(kc_last_error(ctx), "header length"));
  kc_context_free(ctx);
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s KERNC_BINARY TESTS_DIR\n", argv[0]);
    return 2;
  }
  tests_dir = argv[2];
  if (!th_mkdtemp(tmp, sizeof tmp, "train")) {
    perror("mkdtemp");
    return 1;
  }
  const struct CMUnitTest t[] = {
      cmocka_unit_test(t_safetensors_bad),
      cmocka_unit_test(t_adamw),
      cmocka_unit_test(t_sgd),
      cmocka_unit_test(t_clip),
      cmocka_unit_test(t_state),
      cmocka_unit_test(t_frozen),
      cmocka_unit_test(t_errors),
  };
  int rc = cmocka_run_group_tests(t, NULL, NULL);
  if (!th_rmtree(tmp)) fprintf(stderr, "could not remove %s\n", tmp);
  return rc;
}

/*
 * tests/test_npy.c - NumPy .npy reading and writing (runtime/npy.c): a write/read round trip of
 * every dtype (bf16 comes back as its u16 bits), headers written by numpy's own rules (64-byte
 * alignment, "(3,)" tuples), format 2.0/3.0 headers, and malformed or unsupported files refused
 * with a message that says why (never a crash).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ir/internal.h"
#include "runtime/runtime.h"
#include "tests/harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct env {
  kc_context *ctx;
  char dir[64];
} env;

static int setup(void **st) {
  env *e = calloc(1, sizeof *e);
  e->ctx = kc_context_new();
  if (!th_mkdtemp(e->dir, sizeof e->dir, "npy")) return -1;
  *st = e;
  return 0;
}

static int teardown(void **st) {
  env *e = *st;
  th_rmtree(e->dir);
  kc_context_free(e->ctx);
  free(e);
  return 0;
}

static void roundtrip(env *e, kc_dtype t, int rank, const int64_t *dims) {
  char path[128];
  snprintf(path, sizeof path, "%s/a.npy", e->dir);
  size_t n = kc_dtype_size(t);
  for (int d = 0; d < rank; d++)
    n *= (size_t)dims[d];
  unsigned char *data = malloc(n + 1);
  for (size_t i = 0; i < n; i++)
    data[i] = (unsigned char)(i * 37 + 11);
  if (t == KC_BOOL)
    for (size_t i = 0; i < n; i++)
      data[i] &= 1;
  kc_tensor_desc w = {NULL, t, rank, {0}, data}, r;
  for (int d = 0; d < rank; d++)
    w.dims[d] = dims[d];
  assert_int_equal(kc_npy_write(e->ctx, path, &w), KC_OK);
  size_t len;
  unsigned char *file = (unsigned char *)th_read_file(path, &len);
  assert_non_null(file);
  assert_int_equal((len - n) % 64, 0); /* data starts at a multiple of 64 */
  assert_int_equal(file[len - n - 1], '\n');
  free(file);
  assert_int_equal(kc_npy_read(e->ctx, path, &r), KC_OK);
  assert_int_equal(r.dtype, t == KC_BF16 ? KC_U16 : t);
  assert_int_equal(r.rank, rank);
  for (int d = 0; d < rank; d++)
    assert_int_equal(r.dims[d], dims[d]);
  if (n) assert_memory_equal(r.data, data, n);
  kc_npy_free(&r);
  free(data);
  unlink(path);
}

static void t_roundtrip_every_dtype(void **st) {
  const kc_dtype all[] = {KC_F32, KC_F64, KC_F16, KC_BF16, KC_I64, KC_I32, KC_I16,
                          KC_I8,  KC_U64, KC_U32, KC_U16,  KC_U8,  KC_BOOL};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
    roundtrip(*st, all[i], 2, (int64_t[]){3, 5});
    roundtrip(*st, all[i], 1, (int64_t[]){7});
    roundtrip(*st, all[i], 0, NULL);
  }
  roundtrip(*st, KC_F32, 3, (int64_t[]){2, 0, 4});
  roundtrip(*st, KC_F32, 8, (int64_t[]){1, 2, 1, 2, 1, 2, 1, 2});
}

/* The header numpy writes for np.zeros(3, '<f4') (1.0) and the same as 2.0 and 3.0. */
static size_t make(unsigned char *buf, int major, const char *header, size_t data_bytes) {
  size_t hl = strlen(header), pre = major == 1 ? 10 : 12;
  memcpy(buf, "\x93NUMPY", 6);
  buf[6] = (unsigned char)major;
  buf[7] = 0;
  buf[8] = (unsigned char)(hl & 0xff);
  buf[9] = (unsigned char)(hl >> 8);
  if (major > 1) buf[10] = buf[11] = 0;
  memcpy(buf + pre, header, hl);
  memset(buf + pre + hl, 0, data_bytes);
  return pre + hl + data_bytes;
}

static void t_versions(void **st) {
  env *e = *st;
  unsigned char buf[512];
  const char *h = "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }         \n";
  for (int major = 1; major <= 3; major++) {
    kc_tensor_desc t;
    size_t n = make(buf, major, h, 12);
    assert_int_equal(kc_npy_read_mem(e->ctx, buf, n, "mem", &t), KC_OK);
    assert_true(t.dtype == KC_F32 && t.rank == 1 && t.dims[0] == 3);
    kc_npy_free(&t);
  }
  /* keys in another order, double quotes, a scalar, '|' for 1-byte types */
  kc_tensor_desc t;
  size_t n = make(buf, 1, "{\"shape\": (), \"fortran_order\": False, \"descr\": \"|b1\"}\n", 1);
  assert_int_equal(kc_npy_read_mem(e->ctx, buf, n, "mem", &t), KC_OK);
  assert_true(t.dtype == KC_BOOL && t.rank == 0);
  kc_npy_free(&t);
}

static void refused(env *e, const unsigned char *buf, size_t n, const char *why) {
  kc_tensor_desc t;
  assert_int_not_equal(kc_npy_read_mem(e->ctx, buf, n, "bad.npy", &t), KC_OK);
  const char *msg = kc_last_error(e->ctx);
  if (!strstr(msg, why)) print_error("message '%s' lacks '%s'\n", msg, why);
  assert_non_null(strstr(msg, "bad.npy"));
  assert_non_null(strstr(msg, why));
  assert_null(t.data);
}

static void t_malformed(void **st) {
  env *e = *st;
  unsigned char buf[512];
  size_t n;
  n = make(buf, 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (3,), }\n", 12);
  refused(e, buf, n, "Fortran");
  n = make(buf, 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (3,), }\n", 12);
  refused(e, buf, n, "big-endian");
  n = make(buf, 1, "{'descr': '|O', 'fortran_order': False, 'shape': (3,), }\n", 24);
  refused(e, buf, n, "not a plain numeric");
  n = make(buf, 1, "{'descr': '<O8', 'fortran_order': False, 'shape': (3,), }\n", 24);
  refused(e, buf, n, "object");
  n = make(buf, 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (3,), }\n", 12);
  refused(e, buf, n, "structured");
  n = make(buf, 1, "{'descr': '<c8', 'fortran_order': False, 'shape': (3,), }\n", 24);
  refused(e, buf, n, "not one kernc has");
  n = make(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n", 8);
  refused(e, buf, n, "8 bytes of data where the header says 12");
  n = make(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, -1), }\n", 12);
  refused(e, buf, n, "tuple of sizes");
  n = make(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }\n", 4);
  refused(e, buf, n, "more than 8");
  n = make(buf, 1, "{'descr': '<f4', 'shape': (3,), }\n", 12);
  refused(e, buf, n, "fortran_order");
  n = make(buf, 1, "{'descr': '<f4', 'fortran_order': False}\n", 12);
  refused(e, buf, n, "shape");
  n = make(buf, 4, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n", 12);
  refused(e, buf, n, "version 4.0");
  n = make(buf, 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n", 12);
  buf[8] = 0xff; /* header longer than the file */
  refused(e, buf, n, "truncated");
  refused(e, (const unsigned char *)"PK\x03\x04 not npy", 14, "magic");
  refused(e, buf, 5, "magic");
  kc_tensor_desc t;
  assert_int_equal(kc_npy_read(e->ctx, "/nonexistent/x.npy", &t), KC_ERR_IO);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(t_roundtrip_every_dtype),
      cmocka_unit_test(t_versions),
      cmocka_unit_test(t_malformed),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}

/*
 * tests/test_clone.c - kc_graph_clone and arena marks (ir/graph_clone.c, ir/arena.c).
 *
 *   - every golden .kir file (argv[2]/kir/golden: fused bodies, constants, weights, symbolic
 *     dims, attributes of every kind) prints the same after cloning, with the source freed
 *     before the clone is printed (ASan catches anything still pointing into the source);
 *   - a clone with its own data keeps weight bytes after the source is gone; a sharing clone
 *     points at the source's data;
 *   - arena release frees exactly what came after the mark, big chunks included.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ir/internal.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void t_golden_roundtrip(void **st) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/kir/golden", (const char *)*st);
  DIR *d = opendir(dir);
  assert_non_null(d);
  kc_context *ctx = kc_context_new();
  struct dirent *e;
  int n = 0;
  while ((e = readdir(d))) {
    size_t len = strlen(e->d_name);
    if (len < 5 || strcmp(e->d_name + len - 4, ".kir") != 0) continue;
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    kc_graph *g = NULL;
    assert_int_equal(kc_graph_parse_file(ctx, path, &g), KC_OK);
    char *want = kc_graph_print_str(g);
    kc_graph *c = kc_graph_clone(g, false);
    assert_non_null(c);
    kc_graph_free(g);
    char *got = kc_graph_print_str(c);
    if (strcmp(want, got) != 0) print_error("%s differs after cloning:\n%s\n", e->d_name, got);
    assert_string_equal(want, got);
    assert_int_equal(kc_graph_verify(c), KC_OK);
    free(want);
    free(got);
    kc_graph_free(c);
    n++;
  }
  closedir(d);
  kc_context_free(ctx);
  assert_true(n > 10);
}

static void t_data(void **st) {
  kc_context *ctx = kc_context_new();
  kc_graph *g = kc_graph_new(ctx, "w");
  float w[3] = {1, 2, 3};
  kc_val x = kc_input(g, "x", KC_F32, 1, (kc_dim[]){kc_sym(g, "N")});
  kc_output(g, kc_add(g, x, kc_weight(g, "w", KC_F32, 1, (int64_t[]){3}, w)), "y");
  kc_graph *shared = kc_graph_clone(g, true), *own = kc_graph_clone(g, false);
  uint32_t y = kc_graph_output(g, 0).id;
  assert_ptr_equal(shared->tensors[0].data, g->tensors[0].data);
  assert_ptr_not_equal(own->tensors[0].data, g->tensors[0].data);
  kc_graph_free(shared);
  kc_graph_free(g);
  assert_memory_equal(own->tensors[0].data, w, sizeof w);
  assert_string_equal(kc_graph_input_name(own, 0), "x");
  assert_int_equal(kc_graph_output(own, 0).id, y);
  kc_graph_free(own);
  kc_context_free(ctx);
}

static void t_arena_mark(void **st) {
  kc_arena a = {0};
  kc_arena_pos empty = kc_arena_mark(&a);
  kc_arena_alloc(&a, 100);
  kc_arena_release(&a, empty);
  assert_null(a.head);
  char *keep = kc_arena_alloc(&a, 100);
  memset(keep, 7, 100);
  kc_arena_pos m = kc_arena_mark(&a);
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 50; i++)
      memset(kc_arena_alloc(&a, 4000), 1, 4000);     /* several 64 KB chunks */
    memset(kc_arena_alloc(&a, 1 << 20), 2, 1 << 20); /* a big chunk behind the head */
    kc_arena_release(&a, m);
    char *next = kc_arena_alloc(&a, 10); /* continues right after the mark */
    assert_ptr_equal(next, keep + 128);
    kc_arena_release(&a, m);
  }
  for (int i = 0; i < 100; i++)
    assert_int_equal(keep[i], 7);
  kc_arena_free(&a);
}

int main(int argc, char **argv) {
  char *tests_dir = argc > 2 ? argv[2] : "tests";
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_prestate(t_golden_roundtrip, tests_dir),
      cmocka_unit_test(t_data),
      cmocka_unit_test(t_arena_mark),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}

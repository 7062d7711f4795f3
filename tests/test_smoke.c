/* tests/test_smoke.c - placeholder */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include "kernc.h"
static void t_ctx(void **st) {
  (void)st;
  kc_context *c = kc_context_new();
  assert_non_null(c);
  kc_context_free(c);
}
int main(void) {
  const struct CMUnitTest t[] = {cmocka_unit_test(t_ctx)};
  return cmocka_run_group_tests(t, NULL, NULL);
}

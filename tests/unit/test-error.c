#include "oakuk-private.h"

static void test_problems_single(void) {
  OakukProblems p;
  oakuk_problems_init(&p);
  oakuk_problems_add(&p, "applications[0].arch", "unknown architecture %s", "mips");
  oakuk_error *e = oakuk_problems_to_error(&p);
  g_assert_cmpint(oakuk_error_code(e), ==, OAKUK_EINVAL);
  g_assert_cmpstr(oakuk_error_message(e), ==, "applications[0].arch: unknown architecture mips");
  g_assert_cmpstr(oakuk_error_path(e), ==, "applications[0].arch");
  g_assert_cmpuint(oakuk_error_item_count(e), ==, 1);
  g_assert_null(oakuk_error_item_path(e, 1));
  oakuk_error_free(e);
  oakuk_problems_clear(&p);
}

static void test_problems_many(void) {
  OakukProblems p;
  oakuk_problems_init(&p);
  oakuk_problems_add(&p, "a", "first");
  oakuk_problems_add(&p, "", "second");
  oakuk_error *e = oakuk_problems_to_error(&p);
  g_assert_cmpstr(oakuk_error_message(e), ==, "2 problems; first: a: first");
  g_assert_cmpstr(oakuk_error_item_path(e, 1), ==, "");
  g_assert_cmpstr(oakuk_error_item_message(e, 1), ==, "second");
  g_assert_cmpuint(oakuk_problems_count(&p), ==, 0);
  oakuk_error_free(e);
  oakuk_problems_clear(&p);
}

static void test_propagate(void) {
  oakuk_error *e = NULL;
  GError *ge = g_error_new(OAKUK_ERROR, -OAKUK_EIO, "open kernel: %s", "No such file");
  g_assert_cmpint(oakuk_propagate_gerror(&e, ge), ==, OAKUK_EIO);
  g_assert_cmpint(oakuk_error_code(e), ==, OAKUK_EIO);
  g_assert_cmpstr(oakuk_error_message(e), ==, "open kernel: No such file");
  /* A set error is never overwritten: the first failure is the one reported. */
  g_assert_cmpint(oakuk_set_error(&e, OAKUK_EINVAL, 0, NULL, "later"), ==, OAKUK_EINVAL);
  g_assert_cmpint(oakuk_error_code(e), ==, OAKUK_EIO);
  oakuk_error_free(e);
  ge = g_error_new_literal(G_FILE_ERROR, 1, "foreign");
  g_assert_cmpint(oakuk_propagate_gerror(NULL, ge), ==, OAKUK_EGENERIC);
}

static void test_names(void) {
  g_assert_cmpstr(oakuk_status_name(OAKUK_ENOCAPACITY), ==, "OAKUK_ENOCAPACITY");
  g_assert_cmpstr(oakuk_status_name(-999), ==, "OAKUK_EUNKNOWN");
  g_assert_cmpint(oakuk_virt_from_name("docker"), ==, OAKUK_VIRT_CONTAINER);
  g_assert_cmpint(oakuk_virt_from_name("vm"), ==, OAKUK_VIRT_NONE);
  g_assert_cmpstr(oakuk_accel_name(OAKUK_ACCEL_KVM), ==, "kvm");
  g_assert_true(oakuk_arch_is_known("riscv64"));
  g_assert_false(oakuk_arch_is_known("x86_64"));
  oakuk_error_free(NULL);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/error/problems/single", test_problems_single);
  g_test_add_func("/error/problems/many", test_problems_many);
  g_test_add_func("/error/propagate", test_propagate);
  g_test_add_func("/error/names", test_names);
  return g_test_run();
}

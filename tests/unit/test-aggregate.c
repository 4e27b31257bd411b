#include "oakuk-private.h"

#include <json-glib/json-glib.h>
#include <string.h>

G_DEFINE_AUTOPTR_CLEANUP_FUNC(oakuk_node_report, oakuk_node_report_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(oakuk_cluster_aggregate, oakuk_cluster_aggregate_unref)

#define EPS 1e-9

static oakuk_node_report *report_fixture(const char *name) {
  const char *dir = g_getenv("OAKUK_FIXTURES");
  g_assert_nonnull(dir);
  g_autofree char *file = g_strdup_printf("%s.json", name);
  g_autofree char *path = g_build_filename(dir, "reports", file, NULL);
  g_autofree char *text = NULL;
  gsize len = 0;
  g_autoptr(GError) err = NULL;
  g_assert_true(g_file_get_contents(path, &text, &len, &err));
  oakuk_error *e = NULL;
  oakuk_node_report *r = oakuk_node_report_from_json(text, len, &e);
  if (e)
    g_error("%s: %s", path, oakuk_error_message(e));
  return r;
}

static oakuk_node_report *report_inline(const char *id, const char *arch, int64_t vcpus, int64_t memory,
                                        const char *extra) {
  g_autofree char *json = g_strdup_printf("{\"id\":\"%s\",\"architecture\":\"%s\",\"vcpus\":%" G_GINT64_FORMAT
                                          ",\"memory\":%" G_GINT64_FORMAT "%s%s}",
                                          id, arch, vcpus, memory, extra ? "," : "", extra ? extra : "");
  oakuk_error *e = NULL;
  oakuk_node_report *r = oakuk_node_report_from_json(json, (size_t)-1, &e);
  if (e)
    g_error("%s: %s", json, oakuk_error_message(e));
  return r;
}

static oakuk_cluster_aggregate *fold(oakuk_node_report *const *reports, size_t n, int64_t now,
                                     int64_t timeout) {
  oakuk_error *e = NULL;
  oakuk_cluster_aggregate *agg = oakuk_aggregate_fold(reports, n, now, timeout, &e);
  g_assert_null(e);
  g_assert_nonnull(agg);
  return agg;
}

typedef struct {
  double cpu_percent;
  int64_t cpu_cores;
  double memory_percent;
  int64_t memory_mb;
  int32_t accel;
} PerArch;

static void assert_per_arch(const oakuk_cluster_aggregate *agg, const char *arch, PerArch want) {
  PerArch got = {-1, -1, -1, -1, -1};
  g_assert_true(oakuk_cluster_aggregate_per_arch(agg, arch, &got.cpu_percent, &got.cpu_cores,
                                                 &got.memory_percent, &got.memory_mb, &got.accel));
  g_assert_cmpfloat_with_epsilon(got.cpu_percent, want.cpu_percent, EPS);
  g_assert_cmpint(got.cpu_cores, ==, want.cpu_cores);
  g_assert_cmpfloat_with_epsilon(got.memory_percent, want.memory_percent, EPS);
  g_assert_cmpint(got.memory_mb, ==, want.memory_mb);
  g_assert_cmpint(got.accel, ==, want.accel);
}

/* jobs[] is only visible in the JSON: returns its entries joined by ",". */
static char *jobs_of(const oakuk_cluster_aggregate *agg) {
  g_autofree char *json = oakuk_cluster_aggregate_to_json(agg, false, NULL);
  g_autoptr(JsonParser) p = json_parser_new();
  g_assert_true(json_parser_load_from_data(p, json, -1, NULL));
  JsonArray *jobs = json_object_get_array_member(json_node_get_object(json_parser_get_root(p)), "jobs");
  g_autoptr(GString) s = g_string_new(NULL);
  for (guint i = 0; i < json_array_get_length(jobs); i++)
    g_string_append_printf(s, "%s%s", i ? "," : "", json_array_get_string_element(jobs, i));
  return g_string_free(g_steal_pointer(&s), FALSE);
}

/* The mixed cluster of the issue: amd64 KVM (n1), amd64 containers only (n2), arm64 KVM (n3). */
static void test_mixed_cluster(void) {
  g_autoptr(oakuk_node_report) n1 = report_fixture("amd64-kvm");
  g_autoptr(oakuk_node_report) n2 = report_fixture("amd64-container");
  g_autoptr(oakuk_node_report) n3 = report_fixture("arm64-kvm");
  oakuk_node_report *nodes[] = {n1, n2, n3};
  g_autoptr(oakuk_cluster_aggregate) agg = fold(nodes, 3, 50000, 10000);

  g_assert_cmpint(oakuk_cluster_aggregate_number_of_nodes(agg), ==, 3);
  g_assert_cmpint(oakuk_cluster_aggregate_active_nodes(agg), ==, 3);
  g_assert_cmpint(oakuk_cluster_aggregate_cpu_cores(agg), ==, 4 + 2 + 8);
  g_assert_cmpint(oakuk_cluster_aggregate_memory_mb(agg), ==, 4096 + 2048 + 6144);
  g_assert_cmpfloat_with_epsilon(oakuk_cluster_aggregate_cpu_percent(agg), (10.0 + 30.0 + 5.0) / 3, EPS);
  g_assert_cmpfloat_with_epsilon(oakuk_cluster_aggregate_memory_percent(agg), (50.0 + 25.0 + 70.0) / 3, EPS);
  g_assert_true(oakuk_cluster_aggregate_has_virt(agg, OAKUK_VIRT_CONTAINER));
  g_assert_true(oakuk_cluster_aggregate_has_virt(agg, OAKUK_VIRT_UNIKERNEL));
  g_assert_cmpuint(oakuk_cluster_aggregate_arch_count(agg), ==, 2);
  g_assert_cmpstr(oakuk_cluster_aggregate_arch(agg, 0), ==, "amd64");
  g_assert_cmpstr(oakuk_cluster_aggregate_arch(agg, 1), ==, "arm64");

  /* only the unikernel-capable nodes, each under its own arch: n2 is nowhere */
  g_assert_cmpuint(oakuk_cluster_aggregate_per_arch_count(agg), ==, 2);
  g_assert_cmpstr(oakuk_cluster_aggregate_per_arch_name(agg, 0), ==, "amd64");
  g_assert_cmpstr(oakuk_cluster_aggregate_per_arch_name(agg, 1), ==, "arm64");
  assert_per_arch(agg, "amd64", (PerArch){10.0, 4, 50.0, 4096, OAKUK_ACCEL_KVM});
  assert_per_arch(agg, "arm64", (PerArch){5.0, 8, 70.0, 6144, OAKUK_ACCEL_KVM});

  g_autofree char *jobs = jobs_of(agg);
  g_assert_cmpstr(jobs, ==, "app.ns.web.ns.instance.0,app.ns.db.ns.instance.0,app.ns.web.ns.instance.1");
}

/* What the cluster sends is what the root reads back. */
static void test_json_round_trip(void) {
  g_autoptr(oakuk_node_report) n1 = report_fixture("amd64-kvm");
  g_autoptr(oakuk_node_report) n4 = report_fixture("amd64-tcg-emulates-arm64");
  oakuk_node_report *nodes[] = {n1, n4};
  g_autoptr(oakuk_cluster_aggregate) agg = fold(nodes, 2, 0, 0);
  g_autofree char *json = oakuk_cluster_aggregate_to_json(agg, false, NULL);
  oakuk_error *e = NULL;
  g_autoptr(oakuk_cluster_aggregate) back = oakuk_cluster_aggregate_from_json(json, strlen(json), &e);
  g_assert_null(e);
  g_assert_cmpint(oakuk_cluster_aggregate_cpu_cores(back), ==, 6);
  g_assert_cmpint(oakuk_cluster_aggregate_memory_mb(back), ==, 5120);
  g_assert_cmpint(oakuk_cluster_aggregate_number_of_nodes(back), ==, 2);
  g_assert_cmpint(oakuk_cluster_aggregate_active_nodes(back), ==, 2);
  assert_per_arch(back, "amd64", (PerArch){15.0, 6, 45.0, 5120, OAKUK_ACCEL_KVM});
  assert_per_arch(back, "arm64", (PerArch){20.0, 2, 40.0, 1024, OAKUK_ACCEL_TCG});
  g_assert_nonnull(strstr(json, "\"accel\":\"kvm\""));
  g_assert_nonnull(strstr(json, "\"accel\":\"tcg\""));
  g_autofree char *jobs = jobs_of(back);
  g_assert_cmpstr(jobs, ==, "app.ns.web.ns.instance.0");
}

/* An amd64 TCG node that emulates arm64 counts under both, with accel "tcg"; KVM wins an entry. */
static void test_emulation(void) {
  g_autoptr(oakuk_node_report) n4 = report_fixture("amd64-tcg-emulates-arm64");
  oakuk_node_report *alone[] = {n4};
  g_autoptr(oakuk_cluster_aggregate) a = fold(alone, 1, 0, 0);
  g_assert_cmpuint(oakuk_cluster_aggregate_per_arch_count(a), ==, 2);
  assert_per_arch(a, "amd64", (PerArch){20.0, 2, 40.0, 1024, OAKUK_ACCEL_TCG});
  assert_per_arch(a, "arm64", (PerArch){20.0, 2, 40.0, 1024, OAKUK_ACCEL_TCG});
  /* arch[] names the node's own architecture only */
  g_assert_cmpuint(oakuk_cluster_aggregate_arch_count(a), ==, 1);
  g_assert_cmpstr(oakuk_cluster_aggregate_arch(a, 0), ==, "amd64");

  g_autoptr(oakuk_node_report) n1 = report_fixture("amd64-kvm");
  g_autoptr(oakuk_node_report) n2 = report_fixture("amd64-container");
  g_autoptr(oakuk_node_report) n3 = report_fixture("arm64-kvm");
  oakuk_node_report *all[] = {n1, n2, n3, n4};
  g_autoptr(oakuk_cluster_aggregate) b = fold(all, 4, 0, 0);
  assert_per_arch(b, "amd64",
                  (PerArch){(10.0 + 20.0) / 2, 4 + 2, (50.0 + 40.0) / 2, 4096 + 1024, OAKUK_ACCEL_KVM});
  assert_per_arch(b, "arm64",
                  (PerArch){(5.0 + 20.0) / 2, 8 + 2, (70.0 + 40.0) / 2, 6144 + 1024, OAKUK_ACCEL_KVM});
  g_assert_cmpint(oakuk_cluster_aggregate_cpu_cores(b), ==, 16);
  g_assert_cmpint(oakuk_cluster_aggregate_memory_mb(b), ==, 13312);

  /* a node listing unikernel without any accel counts only where it emulates */
  g_autoptr(oakuk_node_report) noacc = report_inline(
      "n5", "riscv64", 3, 300,
      "\"virtualization\":[\"unikernel\"],\"unikernel\":{\"emulated_archs\":[\"arm\",\"riscv64\"]}");
  oakuk_node_report *c_nodes[] = {noacc};
  g_autoptr(oakuk_cluster_aggregate) c = fold(c_nodes, 1, 0, 0);
  g_assert_cmpuint(oakuk_cluster_aggregate_per_arch_count(c), ==, 1);
  assert_per_arch(c, "arm", (PerArch){0, 3, 0, 300, OAKUK_ACCEL_TCG});
  g_assert_false(oakuk_cluster_aggregate_per_arch(c, "riscv64", NULL, NULL, NULL, NULL, NULL));
}

static void test_inactive(void) {
  g_autoptr(oakuk_node_report) n1 = report_fixture("amd64-kvm");
  g_autoptr(oakuk_node_report) n2 = report_fixture("amd64-container");
  g_autoptr(oakuk_node_report) n3 = report_fixture("arm64-kvm");
  oakuk_node_report_set_received_at_ms(n1, 90000); /* exactly node_timeout old: still active */
  oakuk_node_report_set_received_at_ms(n2, 0);     /* unknown: active */
  oakuk_node_report_set_received_at_ms(n3, 89999); /* 1 ms too old */
  oakuk_node_report *nodes[] = {n1, n2, n3};
  g_autoptr(oakuk_cluster_aggregate) agg = fold(nodes, 3, 100000, 10000);
  g_assert_cmpint(oakuk_cluster_aggregate_number_of_nodes(agg), ==, 3);
  g_assert_cmpint(oakuk_cluster_aggregate_active_nodes(agg), ==, 2);
  g_assert_cmpint(oakuk_cluster_aggregate_cpu_cores(agg), ==, 6);
  g_assert_cmpint(oakuk_cluster_aggregate_memory_mb(agg), ==, 6144);
  g_assert_cmpfloat_with_epsilon(oakuk_cluster_aggregate_cpu_percent(agg), 20.0, EPS);
  g_assert_cmpfloat_with_epsilon(oakuk_cluster_aggregate_memory_percent(agg), 37.5, EPS);
  g_assert_cmpuint(oakuk_cluster_aggregate_arch_count(agg), ==, 1);
  g_assert_cmpstr(oakuk_cluster_aggregate_arch(agg, 0), ==, "amd64");
  g_assert_cmpuint(oakuk_cluster_aggregate_per_arch_count(agg), ==, 1);
  g_assert_false(oakuk_cluster_aggregate_per_arch(agg, "arm64", NULL, NULL, NULL, NULL, NULL));
  g_autofree char *jobs = jobs_of(agg);
  g_assert_cmpstr(jobs, ==, "app.ns.web.ns.instance.0,app.ns.db.ns.instance.0");

  /* all inactive: only number_of_nodes counts; unikernel is no longer offered */
  oakuk_node_report_set_received_at_ms(n1, 1);
  oakuk_node_report_set_received_at_ms(n2, 1);
  g_autoptr(oakuk_cluster_aggregate) dead = fold(nodes, 3, 100000, 10000);
  g_assert_cmpint(oakuk_cluster_aggregate_number_of_nodes(dead), ==, 3);
  g_assert_cmpint(oakuk_cluster_aggregate_active_nodes(dead), ==, 0);
  g_assert_cmpint(oakuk_cluster_aggregate_cpu_cores(dead), ==, 0);
  g_assert_cmpfloat(oakuk_cluster_aggregate_cpu_percent(dead), ==, 0);
  g_assert_false(oakuk_cluster_aggregate_has_virt(dead, OAKUK_VIRT_UNIKERNEL));
  g_assert_false(oakuk_cluster_aggregate_has_virt(dead, OAKUK_VIRT_CONTAINER));
  g_assert_cmpuint(oakuk_cluster_aggregate_per_arch_count(dead), ==, 0);

  /* node_timeout_ms <= 0 disables the check */
  g_autoptr(oakuk_cluster_aggregate) all = fold(nodes, 3, 100000, 0);
  g_assert_cmpint(oakuk_cluster_aggregate_active_nodes(all), ==, 3);
  g_assert_cmpint(oakuk_cluster_aggregate_cpu_cores(all), ==, 14);
}

/* gpus/tpus are sums over the active nodes; a report without them counts 0. */
static void test_accelerators(void) {
  g_autoptr(oakuk_node_report) n1 = report_fixture("amd64-container"); /* no gpus key */
  g_autoptr(oakuk_node_report) n2 = oakuk_node_report_from_json(
      "{\"id\":\"g1\",\"architecture\":\"amd64\",\"vcpus\":1,\"memory\":1,\"gpus\":2,\"tpus\":1}", (size_t)-1,
      NULL);
  g_autoptr(oakuk_node_report) n3 = oakuk_node_report_from_json(
      "{\"id\":\"g2\",\"architecture\":\"amd64\",\"vcpus\":1,\"memory\":1,\"gpus\":3}", (size_t)-1, NULL);
  oakuk_node_report_set_received_at_ms(n1, 1000);
  oakuk_node_report_set_received_at_ms(n2, 1000);
  oakuk_node_report_set_received_at_ms(n3, 1); /* inactive at 1000 with a 10 ms timeout */
  oakuk_node_report *nodes[] = {n1, n2, n3};
  g_autoptr(oakuk_cluster_aggregate) agg = fold(nodes, 3, 1000, 10);
  g_assert_cmpint(oakuk_cluster_aggregate_gpus(agg), ==, 2);
  g_assert_cmpint(oakuk_cluster_aggregate_tpus(agg), ==, 1);
  g_autofree char *json = oakuk_cluster_aggregate_to_json(agg, false, NULL);
  g_autoptr(oakuk_cluster_aggregate) back = oakuk_cluster_aggregate_from_json(json, strlen(json), NULL);
  g_assert_cmpint(oakuk_cluster_aggregate_gpus(back), ==, 2);
}

static void test_empty(void) {
  g_autoptr(oakuk_cluster_aggregate) agg = fold(NULL, 0, 1000, 10000);
  g_assert_cmpint(oakuk_cluster_aggregate_number_of_nodes(agg), ==, 0);
  g_assert_cmpint(oakuk_cluster_aggregate_active_nodes(agg), ==, 0);
  g_assert_cmpint(oakuk_cluster_aggregate_cpu_cores(agg), ==, 0);
  g_assert_cmpint(oakuk_cluster_aggregate_memory_mb(agg), ==, 0);
  g_assert_cmpfloat(oakuk_cluster_aggregate_cpu_percent(agg), ==, 0);
  g_assert_cmpfloat(oakuk_cluster_aggregate_memory_percent(agg), ==, 0);
  g_assert_cmpuint(oakuk_cluster_aggregate_arch_count(agg), ==, 0);
  g_assert_cmpuint(oakuk_cluster_aggregate_per_arch_count(agg), ==, 0);
  g_autofree char *json = oakuk_cluster_aggregate_to_json(agg, false, NULL);
  g_assert_cmpstr(json, ==,
                  "{\"cpu_percent\":0.0,\"memory_percent\":0.0,\"cpu_cores\":0,\"cumulative_memory_in_mb\":0,"
                  "\"number_of_nodes\":0,\"active_nodes\":0,\"gpus\":0,\"tpus\":0,\"virtualization\":[],"
                  "\"arch\":[],\"aggregation_per_architecture\":{},\"jobs\":[]}");
  g_autoptr(oakuk_cluster_aggregate) back = oakuk_cluster_aggregate_from_json(json, strlen(json), NULL);
  g_assert_nonnull(back);
}

static void test_duplicate_ids(void) {
  g_autoptr(oakuk_node_report) old = report_inline("n1", "amd64", 4, 4000, "\"cpu_percent\":10");
  g_autoptr(oakuk_node_report) fresh = report_inline("n1", "amd64", 1, 1000, "\"cpu_percent\":90");
  g_autoptr(oakuk_node_report) other = report_inline("n2", "arm64", 2, 2000, "\"cpu_percent\":30");
  oakuk_node_report_set_received_at_ms(old, 1000);
  oakuk_node_report_set_received_at_ms(fresh, 2000);
  oakuk_node_report_set_received_at_ms(other, 1500);

  /* the report received last wins, wherever it stands in the input */
  oakuk_node_report *forward[] = {old, other, fresh};
  oakuk_node_report *backward[] = {fresh, other, old};
  oakuk_node_report *const *orders[] = {forward, backward};
  for (size_t i = 0; i < G_N_ELEMENTS(orders); i++) {
    g_autoptr(oakuk_cluster_aggregate) agg = fold(orders[i], 3, 3000, 0);
    g_assert_cmpint(oakuk_cluster_aggregate_number_of_nodes(agg), ==, 2);
    g_assert_cmpint(oakuk_cluster_aggregate_active_nodes(agg), ==, 2);
    g_assert_cmpint(oakuk_cluster_aggregate_cpu_cores(agg), ==, 3);
    g_assert_cmpint(oakuk_cluster_aggregate_memory_mb(agg), ==, 3000);
    g_assert_cmpfloat_with_epsilon(oakuk_cluster_aggregate_cpu_percent(agg), 60.0, EPS);
  }

  /* equal receive times: the later one in the input wins */
  oakuk_node_report_set_received_at_ms(old, 2000);
  oakuk_node_report *tie[] = {fresh, old};
  g_autoptr(oakuk_cluster_aggregate) t = fold(tie, 2, 3000, 0);
  g_assert_cmpint(oakuk_cluster_aggregate_number_of_nodes(t), ==, 1);
  g_assert_cmpint(oakuk_cluster_aggregate_cpu_cores(t), ==, 4);

  /* a stale duplicate does not make a node active, the fresh one does not leave it inactive */
  oakuk_node_report_set_received_at_ms(old, 100);
  oakuk_node_report_set_received_at_ms(fresh, 2900);
  oakuk_node_report *stale_first[] = {fresh, old};
  g_autoptr(oakuk_cluster_aggregate) s = fold(stale_first, 2, 3000, 1000);
  g_assert_cmpint(oakuk_cluster_aggregate_number_of_nodes(s), ==, 1);
  g_assert_cmpint(oakuk_cluster_aggregate_active_nodes(s), ==, 1);
  g_assert_cmpint(oakuk_cluster_aggregate_cpu_cores(s), ==, 1);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/aggregate/mixed-cluster", test_mixed_cluster);
  g_test_add_func("/aggregate/json-round-trip", test_json_round_trip);
  g_test_add_func("/aggregate/emulation", test_emulation);
  g_test_add_func("/aggregate/inactive", test_inactive);
  g_test_add_func("/aggregate/empty", test_empty);
  g_test_add_func("/aggregate/accelerators", test_accelerators);
  g_test_add_func("/aggregate/duplicate-ids", test_duplicate_ids);
  return g_test_run();
}

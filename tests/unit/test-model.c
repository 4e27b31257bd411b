#include "oakuk-private.h"

#include <json-glib/json-glib.h>
#include <string.h>

G_DEFINE_AUTOPTR_CLEANUP_FUNC(oakuk_node_report, oakuk_node_report_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(oakuk_cluster_aggregate, oakuk_cluster_aggregate_unref)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(oakuk_error, oakuk_error_free)

/* ---- helpers ---- */

static char *fixture_text(const char *rel, size_t *len) {
  const char *dir = g_getenv("OAKUK_FIXTURES");
  g_assert_nonnull(dir);
  g_autofree char *path = g_build_filename(dir, rel, NULL);
  char *text = NULL;
  gsize n = 0;
  g_autoptr(GError) err = NULL;
  g_assert_true(g_file_get_contents(path, &text, &n, &err));
  g_assert_no_error(err);
  *len = n;
  return text;
}

static oakuk_node_report *report_fixture(const char *name) {
  size_t len;
  g_autofree char *rel = g_strdup_printf("reports/%s.json", name);
  g_autofree char *text = fixture_text(rel, &len);
  oakuk_error *e = NULL;
  oakuk_node_report *r = oakuk_node_report_from_json(text, len, &e);
  if (e)
    g_error("%s: %s", rel, oakuk_error_message(e));
  g_assert_nonnull(r);
  return r;
}

/* Parses json as a node report that must fail; returns the error (caller frees). */
static oakuk_error *report_error(const char *json) {
  oakuk_error *e = NULL;
  oakuk_node_report *r = oakuk_node_report_from_json(json, (size_t)-1, &e);
  g_assert_null(r);
  g_assert_nonnull(e);
  g_assert_cmpint(oakuk_error_code(e), ==, OAKUK_EINVAL);
  return e;
}

static JsonObject *parse_json_object(const char *text, JsonNode **keep) {
  g_autoptr(JsonParser) p = json_parser_new();
  g_autoptr(GError) err = NULL;
  g_assert_true(json_parser_load_from_data(p, text, -1, &err));
  g_assert_no_error(err);
  *keep = json_node_copy(json_parser_get_root(p));
  g_assert_true(JSON_NODE_HOLDS_OBJECT(*keep));
  return json_node_get_object(*keep);
}

/* The member names of o, sorted and joined by ",". */
static char *sorted_keys(JsonObject *o) {
  GList *members = json_object_get_members(o);
  members = g_list_sort(members, (GCompareFunc)strcmp);
  g_autoptr(GString) s = g_string_new(NULL);
  for (GList *l = members; l; l = l->next)
    g_string_append_printf(s, "%s%s", s->len ? "," : "", (const char *)l->data);
  g_list_free(members);
  return g_string_free(g_steal_pointer(&s), FALSE);
}

/* ---- status and identity ---- */

static void test_status_names(void) {
  static const struct {
    int32_t value;
    const char *name;
  } table[] = {
      {OAKUK_STATUS_REQUESTED, "REQUESTED"},
      {OAKUK_STATUS_CLUSTER_SCHEDULED, "CLUSTER_SCHEDULED"},
      {OAKUK_STATUS_NODE_SCHEDULED, "NODE_SCHEDULED"},
      {OAKUK_STATUS_CREATING, "CREATING"},
      {OAKUK_STATUS_RUNNING, "RUNNING"},
      {OAKUK_STATUS_FAILED, "FAILED"},
      {OAKUK_STATUS_DEAD, "DEAD"},
      {OAKUK_STATUS_COMPLETED, "COMPLETED"},
      {OAKUK_STATUS_UNDEPLOYED, "UNDEPLOYED"},
      {OAKUK_STATUS_NO_ACTIVE_CLUSTER, "NoActiveClusterWithCapacity"},
      {OAKUK_STATUS_NO_QUALIFIED_WORKER, "NO_QUALIFIED_WORKER_FOUND"},
      {OAKUK_STATUS_NO_WORKER_CAPACITY, "NO_WORKER_CAPACITY"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(table); i++) {
    g_assert_cmpstr(oakuk_instance_status_name(table[i].value), ==, table[i].name);
    g_assert_cmpint(oakuk_instance_status_from_name(table[i].name), ==, table[i].value);
  }
  g_assert_null(oakuk_instance_status_name(-1));
  g_assert_null(oakuk_instance_status_name(12));
  g_assert_cmpint(oakuk_instance_status_from_name("running"), ==, -1);
  g_assert_cmpint(oakuk_instance_status_from_name("NO_ACTIVE_CLUSTER"), ==, -1);
  g_assert_cmpint(oakuk_instance_status_from_name(""), ==, -1);
  g_assert_cmpint(oakuk_instance_status_from_name(NULL), ==, -1);
}

static void test_instance_name(void) {
  g_autofree char *a = oakuk_instance_name("app.ns.web.ns", 0);
  g_assert_cmpstr(a, ==, "app.ns.web.ns.instance.0");
  g_autofree char *b = oakuk_instance_name("clientsrv.test.nginx.test", 12);
  g_assert_cmpstr(b, ==, "clientsrv.test.nginx.test.instance.12");
  g_autofree char *c = oakuk_instance_name("s", G_MAXINT64);
  g_assert_cmpstr(c, ==, "s.instance.9223372036854775807");
  g_assert_null(oakuk_instance_name("s", -1));
  g_assert_null(oakuk_instance_name(NULL, 0));
}

/* ---- node report ---- */

static void test_report_parse(void) {
  g_autoptr(oakuk_node_report) r = report_fixture("amd64-kvm");
  g_assert_cmpstr(oakuk_node_report_id(r), ==, "n1");
  g_assert_cmpstr(oakuk_node_report_host(r), ==, "edge-1");
  g_assert_cmpstr(oakuk_node_report_ip(r), ==, "10.18.0.1");
  g_assert_cmpstr(oakuk_node_report_architecture(r), ==, "amd64");
  g_assert_cmpfloat(oakuk_node_report_cpu_percent(r), ==, 10.0);
  g_assert_cmpint(oakuk_node_report_vcpus(r), ==, 4);
  g_assert_cmpint(oakuk_node_report_memory_mb(r), ==, 4096);
  g_assert_cmpint(oakuk_node_report_memory_total_mb(r), ==, 8192);
  g_assert_cmpfloat(oakuk_node_report_memory_percent(r), ==, 50.0);
  g_assert_true(oakuk_node_report_has_virt(r, OAKUK_VIRT_CONTAINER));
  g_assert_true(oakuk_node_report_has_virt(r, OAKUK_VIRT_UNIKERNEL));
  g_assert_false(oakuk_node_report_has_virt(r, OAKUK_VIRT_NONE));
  g_assert_cmpint(oakuk_node_report_unikernel_accel(r), ==, OAKUK_ACCEL_KVM);
  g_assert_cmpstr(oakuk_node_report_qemu_version(r), ==, "7.2.0");
  g_assert_cmpuint(oakuk_node_report_emulated_arch_count(r), ==, 0);
  g_assert_cmpuint(oakuk_node_report_instance_count(r), ==, 1);
  g_assert_cmpstr(oakuk_node_report_instance_name(r, 0), ==, "app.ns.web.ns.instance.0");
  g_assert_cmpint(oakuk_node_report_instance_status(r, 0), ==, OAKUK_STATUS_RUNNING);
  g_assert_cmpfloat(oakuk_node_report_instance_cpu_percent(r, 0), ==, 2.5);
  g_assert_cmpint(oakuk_node_report_instance_memory_mb(r, 0), ==, 128);
  g_assert_null(oakuk_node_report_instance_name(r, 1));
  g_assert_cmpint(oakuk_node_report_instance_status(r, 1), ==, -1);
  g_assert_cmpint(oakuk_node_report_received_at_ms(r), ==, 0);
  oakuk_node_report_set_received_at_ms(r, 1234);
  g_assert_cmpint(oakuk_node_report_received_at_ms(r), ==, 1234);
  g_assert_true(oakuk_node_report_ref(r) == r);
  oakuk_node_report_unref(r);
  g_assert_cmpstr(oakuk_node_report_id(r), ==, "n1");
  oakuk_node_report_unref(NULL);
}

static void test_report_minimal(void) {
  const char *json = "{\"id\":\"n9\",\"architecture\":\"riscv64\",\"vcpus\":4.0,\"memory\":512,"
                     "\"host\":null,\"future_key\":{\"x\":[1,2]}}";
  oakuk_error *e = NULL;
  g_autoptr(oakuk_node_report) r = oakuk_node_report_from_json(json, strlen(json), &e);
  g_assert_null(e);
  g_assert_nonnull(r);
  g_assert_cmpint(oakuk_node_report_vcpus(r), ==, 4);
  g_assert_cmpint(oakuk_node_report_memory_mb(r), ==, 512);
  g_assert_cmpstr(oakuk_node_report_host(r), ==, "");
  g_assert_cmpstr(oakuk_node_report_ip(r), ==, "");
  g_assert_null(oakuk_node_report_qemu_version(r));
  g_assert_false(oakuk_node_report_has_virt(r, OAKUK_VIRT_CONTAINER));
  g_assert_false(oakuk_node_report_has_virt(r, OAKUK_VIRT_UNIKERNEL));
  g_assert_cmpint(oakuk_node_report_accel_for_arch(r, "riscv64"), ==, OAKUK_ACCEL_NONE);
  g_assert_cmpuint(oakuk_node_report_instance_count(r), ==, 0);
}

static void assert_same_report(const oakuk_node_report *a, const oakuk_node_report *b) {
  g_assert_cmpstr(oakuk_node_report_id(a), ==, oakuk_node_report_id(b));
  g_assert_cmpstr(oakuk_node_report_host(a), ==, oakuk_node_report_host(b));
  g_assert_cmpstr(oakuk_node_report_ip(a), ==, oakuk_node_report_ip(b));
  g_assert_cmpstr(oakuk_node_report_architecture(a), ==, oakuk_node_report_architecture(b));
  g_assert_cmpfloat(oakuk_node_report_cpu_percent(a), ==, oakuk_node_report_cpu_percent(b));
  g_assert_cmpint(oakuk_node_report_vcpus(a), ==, oakuk_node_report_vcpus(b));
  g_assert_cmpint(oakuk_node_report_memory_mb(a), ==, oakuk_node_report_memory_mb(b));
  g_assert_cmpint(oakuk_node_report_memory_total_mb(a), ==, oakuk_node_report_memory_total_mb(b));
  g_assert_cmpfloat(oakuk_node_report_memory_percent(a), ==, oakuk_node_report_memory_percent(b));
  for (int32_t v = OAKUK_VIRT_CONTAINER; v <= OAKUK_VIRT_UNIKERNEL; v++)
    g_assert_cmpint(oakuk_node_report_has_virt(a, v), ==, oakuk_node_report_has_virt(b, v));
  g_assert_cmpint(oakuk_node_report_unikernel_accel(a), ==, oakuk_node_report_unikernel_accel(b));
  g_assert_cmpstr(oakuk_node_report_qemu_version(a), ==, oakuk_node_report_qemu_version(b));
  g_assert_cmpuint(oakuk_node_report_emulated_arch_count(a), ==, oakuk_node_report_emulated_arch_count(b));
  for (size_t i = 0; i < oakuk_node_report_emulated_arch_count(a); i++)
    g_assert_cmpstr(oakuk_node_report_emulated_arch(a, i), ==, oakuk_node_report_emulated_arch(b, i));
  g_assert_cmpuint(oakuk_node_report_instance_count(a), ==, oakuk_node_report_instance_count(b));
  for (size_t i = 0; i < oakuk_node_report_instance_count(a); i++) {
    g_assert_cmpstr(oakuk_node_report_instance_name(a, i), ==, oakuk_node_report_instance_name(b, i));
    g_assert_cmpint(oakuk_node_report_instance_status(a, i), ==, oakuk_node_report_instance_status(b, i));
    g_assert_cmpfloat(oakuk_node_report_instance_cpu_percent(a, i), ==,
                      oakuk_node_report_instance_cpu_percent(b, i));
    g_assert_cmpint(oakuk_node_report_instance_memory_mb(a, i), ==,
                    oakuk_node_report_instance_memory_mb(b, i));
  }
}

static void test_report_round_trip(void) {
  static const char *const names[] = {"amd64-kvm", "amd64-container", "arm64-kvm",
                                      "amd64-tcg-emulates-arm64"};
  for (size_t i = 0; i < G_N_ELEMENTS(names); i++) {
    g_autoptr(oakuk_node_report) a = report_fixture(names[i]);
    oakuk_error *e = NULL;
    g_autofree char *json = oakuk_node_report_to_json(a, i % 2 == 0, &e);
    g_assert_null(e);
    g_assert_nonnull(json);
    g_autoptr(oakuk_node_report) b = oakuk_node_report_from_json(json, strlen(json), &e);
    g_assert_null(e);
    assert_same_report(a, b);
    g_autofree char *again = oakuk_node_report_to_json(b, i % 2 == 0, NULL);
    g_assert_cmpstr(json, ==, again);
  }
}

static void test_report_to_json_keys(void) {
  g_autoptr(oakuk_node_report) r = report_fixture("amd64-tcg-emulates-arm64");
  g_autofree char *json = oakuk_node_report_to_json(r, false, NULL);
  g_autoptr(JsonNode) keep = NULL;
  JsonObject *o = parse_json_object(json, &keep);
  g_autofree char *keys = sorted_keys(o);
  g_assert_cmpstr(keys, ==,
                  "architecture,cpu_percent,gpus,host,id,instances,ip,memory,memory_percent,memory_total,"
                  "tpus,unikernel,vcpus,virtualization");
  /* A report from before the accelerator keys reads as offering none, and says so. */
  g_assert_cmpint(json_object_get_int_member(o, "gpus"), ==, 0);
  g_assert_cmpint(json_object_get_int_member(o, "tpus"), ==, 0);
  JsonObject *uk = json_object_get_object_member(o, "unikernel");
  g_autofree char *uk_keys = sorted_keys(uk);
  g_assert_cmpstr(uk_keys, ==, "accel,emulated_archs,qemu_version");
  g_assert_cmpstr(json_object_get_string_member(uk, "accel"), ==, "tcg");
  JsonArray *em = json_object_get_array_member(uk, "emulated_archs");
  g_assert_cmpuint(json_array_get_length(em), ==, 1);
  g_assert_cmpstr(json_array_get_string_element(em, 0), ==, "arm64");
  g_assert_cmpint(json_object_get_int_member(o, "vcpus"), ==, 2);
  g_assert_cmpint(json_object_get_int_member(o, "memory"), ==, 1024);

  /* "docker" comes back as "container"; instance entries carry exactly their five keys (generation
   * 0 when the report had none: docs/reconcile.md) */
  g_autoptr(oakuk_node_report) c = report_fixture("amd64-container");
  g_autofree char *cjson = oakuk_node_report_to_json(c, false, NULL);
  g_autoptr(JsonNode) ckeep = NULL;
  JsonObject *co = parse_json_object(cjson, &ckeep);
  g_assert_false(json_object_has_member(co, "unikernel"));
  JsonArray *virt = json_object_get_array_member(co, "virtualization");
  g_assert_cmpuint(json_array_get_length(virt), ==, 1);
  g_assert_cmpstr(json_array_get_string_element(virt, 0), ==, "container");
  JsonObject *inst = json_array_get_object_element(json_object_get_array_member(co, "instances"), 0);
  g_autofree char *inst_keys = sorted_keys(inst);
  g_assert_cmpstr(inst_keys, ==, "cpu_percent,generation,memory_mb,name,status");
  g_assert_cmpstr(json_object_get_string_member(inst, "status"), ==, "RUNNING");
  g_assert_cmpint(json_object_get_int_member(inst, "generation"), ==, 0);
  g_assert_cmpint(oakuk_node_report_instance_generation(c, 0), ==, 0);
  /* a generation comes back as given; a negative one is refused with its path */
  g_autofree char *with_gen = g_strdup(cjson);
  g_autoptr(GRegex) re = g_regex_new("\"generation\":0", 0, 0, NULL);
  g_autofree char *gen7 = g_regex_replace_literal(re, with_gen, -1, 0, "\"generation\":7", 0, NULL);
  g_autoptr(oakuk_node_report) r7 = oakuk_node_report_from_json(gen7, (size_t)-1, NULL);
  g_assert_nonnull(r7);
  g_assert_cmpint(oakuk_node_report_instance_generation(r7, 0), ==, 7);
  g_autofree char *genneg = g_regex_replace_literal(re, with_gen, -1, 0, "\"generation\":-1", 0, NULL);
  oakuk_error *err = NULL;
  g_assert_null(oakuk_node_report_from_json(genneg, (size_t)-1, &err));
  g_assert_nonnull(strstr(oakuk_error_message(err), "instances[0].generation"));
  oakuk_error_free(err);
}

static void test_report_accel(void) {
  g_autoptr(oakuk_node_report) kvm = report_fixture("amd64-kvm");
  g_assert_cmpint(oakuk_node_report_accel_for_arch(kvm, "amd64"), ==, OAKUK_ACCEL_KVM);
  g_assert_cmpint(oakuk_node_report_accel_for_arch(kvm, "arm64"), ==, OAKUK_ACCEL_NONE);

  g_autoptr(oakuk_node_report) tcg = report_fixture("amd64-tcg-emulates-arm64");
  g_assert_cmpint(oakuk_node_report_unikernel_accel(tcg), ==, OAKUK_ACCEL_TCG);
  g_assert_cmpint(oakuk_node_report_accel_for_arch(tcg, "amd64"), ==, OAKUK_ACCEL_TCG);
  g_assert_cmpint(oakuk_node_report_accel_for_arch(tcg, "arm64"), ==, OAKUK_ACCEL_TCG);
  g_assert_cmpint(oakuk_node_report_accel_for_arch(tcg, "riscv64"), ==, OAKUK_ACCEL_NONE);
  g_assert_cmpint(oakuk_node_report_accel_for_arch(tcg, NULL), ==, OAKUK_ACCEL_NONE);
  g_assert_cmpuint(oakuk_node_report_emulated_arch_count(tcg), ==, 1);
  g_assert_cmpstr(oakuk_node_report_emulated_arch(tcg, 0), ==, "arm64");
  g_assert_null(oakuk_node_report_emulated_arch(tcg, 1));

  g_autoptr(oakuk_node_report) ctr = report_fixture("amd64-container");
  g_assert_cmpint(oakuk_node_report_unikernel_accel(ctr), ==, OAKUK_ACCEL_NONE);
  g_assert_cmpint(oakuk_node_report_accel_for_arch(ctr, "amd64"), ==, OAKUK_ACCEL_NONE);

  /* a unikernel{} block does not make a node unikernel-capable unless virtualization[] says so */
  const char *json = "{\"id\":\"n\",\"architecture\":\"amd64\",\"vcpus\":1,\"memory\":1,"
                     "\"virtualization\":[\"container\"],"
                     "\"unikernel\":{\"accel\":\"kvm\",\"emulated_archs\":[\"arm64\"]}}";
  g_autoptr(oakuk_node_report) off = oakuk_node_report_from_json(json, (size_t)-1, NULL);
  g_assert_nonnull(off);
  g_assert_cmpint(oakuk_node_report_unikernel_accel(off), ==, OAKUK_ACCEL_NONE);
  g_assert_cmpint(oakuk_node_report_accel_for_arch(off, "amd64"), ==, OAKUK_ACCEL_NONE);
  g_assert_cmpint(oakuk_node_report_accel_for_arch(off, "arm64"), ==, OAKUK_ACCEL_NONE);
}

#define BASE "\"id\":\"n\",\"architecture\":\"amd64\",\"vcpus\":1,\"memory\":1"

static void test_report_invalid(void) {
  static const struct {
    const char *json;
    const char *path;
    const char *message;
  } cases[] = {
      {"{\"architecture\":\"amd64\",\"vcpus\":1,\"memory\":1}", "id", "is required"},
      {"{\"id\":\"\",\"architecture\":\"amd64\",\"vcpus\":1,\"memory\":1}", "id", "must not be empty"},
      {"{\"id\":7,\"architecture\":\"amd64\",\"vcpus\":1,\"memory\":1}", "id", "must be a string"},
      {"{\"id\":\"n\",\"vcpus\":1,\"memory\":1}", "architecture", "is required"},
      {"{\"id\":\"n\",\"architecture\":\"x86_64\",\"vcpus\":1,\"memory\":1}", "architecture",
       "unknown architecture \"x86_64\""},
      {"{\"id\":\"n\",\"architecture\":\"amd64\",\"memory\":1}", "vcpus", "is required"},
      {"{\"id\":\"n\",\"architecture\":\"amd64\",\"vcpus\":-1,\"memory\":1}", "vcpus",
       "must not be negative"},
      {"{\"id\":\"n\",\"architecture\":\"amd64\",\"vcpus\":1.5,\"memory\":1}", "vcpus",
       "non-negative integer"},
      {"{\"id\":\"n\",\"architecture\":\"amd64\",\"vcpus\":\"4\",\"memory\":1}", "vcpus",
       "non-negative integer"},
      {"{\"id\":\"n\",\"architecture\":\"amd64\",\"vcpus\":true,\"memory\":1}", "vcpus",
       "non-negative integer"},
      {"{\"id\":\"n\",\"architecture\":\"amd64\",\"vcpus\":1e300,\"memory\":1}", "vcpus",
       "non-negative integer"},
      {"{\"id\":\"n\",\"architecture\":\"amd64\",\"vcpus\":1}", "memory", "is required"},
      {"{" BASE ",\"memory_total\":-5}", "memory_total", "must not be negative"},
      {"{" BASE ",\"memory_percent\":150}", "memory_percent", "between 0 and 100"},
      {"{" BASE ",\"cpu_percent\":-0.5}", "cpu_percent", "finite number >= 0"},
      {"{" BASE ",\"cpu_percent\":\"high\"}", "cpu_percent", "must be a number"},
      {"{" BASE ",\"host\":[]}", "host", "must be a string"},
      {"{" BASE ",\"virtualization\":\"container\"}", "virtualization", "must be an array"},
      {"{" BASE ",\"virtualization\":[\"container\",\"vm\"]}", "virtualization[1]",
       "unknown virtualization \"vm\""},
      {"{" BASE ",\"virtualization\":[1]}", "virtualization[0]", "must be a string"},
      {"{" BASE ",\"unikernel\":\"kvm\"}", "unikernel", "must be an object"},
      {"{" BASE ",\"unikernel\":{\"accel\":\"hvf\"}}", "unikernel.accel", "unknown accel \"hvf\""},
      {"{" BASE ",\"unikernel\":{\"qemu_version\":7}}", "unikernel.qemu_version", "must be a string"},
      {"{" BASE ",\"unikernel\":{\"emulated_archs\":[\"arm64\",\"mips\"]}}", "unikernel.emulated_archs[1]",
       "unknown architecture \"mips\""},
      {"{" BASE ",\"instances\":{}}", "instances", "must be an array"},
      {"{" BASE
       ",\"instances\":[{\"name\":\"a\",\"status\":\"RUNNING\"},{\"name\":\"b\",\"status\":\"DEAD\"},"
       "{\"name\":\"c\",\"status\":\"BOGUS\"}]}",
       "instances[2].status", "unknown instance status \"BOGUS\""},
      {"{" BASE ",\"instances\":[{\"status\":\"RUNNING\"}]}", "instances[0].name", "is required"},
      {"{" BASE ",\"instances\":[{\"name\":\"a\"}]}", "instances[0].status", "is required"},
      {"{" BASE ",\"instances\":[{\"name\":\"a\",\"status\":\"RUNNING\"},3]}", "instances[1]",
       "must be an object"},
      {"{" BASE ",\"instances\":[{\"name\":\"a\",\"status\":\"RUNNING\",\"memory_mb\":1.5}]}",
       "instances[0].memory_mb", "non-negative integer"},
      {"{" BASE ",\"instances\":[{\"name\":\"a\",\"status\":\"RUNNING\",\"cpu_percent\":-1}]}",
       "instances[0].cpu_percent", "finite number >= 0"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_test_message("case %zu: %s", i, cases[i].json);
    g_autoptr(oakuk_error) e = report_error(cases[i].json);
    g_assert_cmpuint(oakuk_error_item_count(e), ==, 1);
    g_assert_cmpstr(oakuk_error_path(e), ==, cases[i].path);
    g_assert_cmpstr(oakuk_error_item_path(e, 0), ==, cases[i].path);
    g_autofree char *prefix = g_strdup_printf("%s: ", cases[i].path);
    g_assert_true(g_str_has_prefix(oakuk_error_message(e), prefix));
    g_assert_nonnull(strstr(oakuk_error_message(e), cases[i].message));
  }
}

static void test_report_problems_collected(void) {
  g_autoptr(oakuk_error) e = report_error("{\"architecture\":\"amd64\",\"vcpus\":-2,\"memory\":1,"
                                          "\"instances\":[{\"name\":\"a\",\"status\":\"running\"}]}");
  g_assert_cmpuint(oakuk_error_item_count(e), ==, 3);
  g_assert_cmpstr(oakuk_error_item_path(e, 0), ==, "id");
  g_assert_cmpstr(oakuk_error_item_path(e, 1), ==, "vcpus");
  g_assert_cmpstr(oakuk_error_item_path(e, 2), ==, "instances[0].status");
  g_assert_true(g_str_has_prefix(oakuk_error_message(e), "3 problems; first: id: "));
}

static void test_report_malformed(void) {
  g_autoptr(oakuk_error) e1 = report_error("{\"id\": ");
  g_assert_cmpstr(oakuk_error_message(e1), ==,
                  "node report: malformed JSON: <data>:1:8: document ends inside an object (at id)");
  g_autoptr(oakuk_error) e2 = report_error("[1, 2]");
  g_assert_cmpstr(oakuk_error_message(e2), ==, "node report: the document must be a JSON object");
  g_autoptr(oakuk_error) e3 = report_error("");
  g_assert_true(g_str_has_prefix(oakuk_error_message(e3), "node report: "));

  static const char with_nul[] = "{" BASE ",\"host\":\"a\0b\"}";
  oakuk_error *e4 = NULL;
  g_assert_null(oakuk_node_report_from_json(with_nul, sizeof with_nul - 1, &e4));
  g_assert_nonnull(e4);
  g_assert_cmpint(oakuk_error_code(e4), ==, OAKUK_EINVAL);
  g_assert_nonnull(strstr(oakuk_error_message(e4), "NUL byte at offset"));
  oakuk_error_free(e4);
  /* An escaped NUL would end the C string: refused with the value's path. */
  e4 = NULL;
  g_assert_null(oakuk_node_report_from_json("{" BASE ",\"host\":\"a\\u0000b\"}", (size_t)-1, &e4));
  g_assert_nonnull(strstr(oakuk_error_message(e4), "\\u0000 (NUL) in a string is refused"));
  g_assert_nonnull(strstr(oakuk_error_message(e4), "(at host)"));
  oakuk_error_free(e4);
  /* Single quotes hide nesting from a naive bracket count; the strict check refuses them first. */
  g_autoptr(GString) sq = g_string_new("{\"a\":'\"',\"b\":");
  for (int i = 0; i < 100000; i++)
    g_string_append_c(sq, '[');
  e4 = NULL;
  g_assert_null(oakuk_node_report_from_json(sq->str, sq->len, &e4));
  g_assert_nonnull(strstr(oakuk_error_message(e4), "<data>:1:6: single quotes are not JSON"));
  oakuk_error_free(e4);

  /* a NULL error pointer is allowed */
  g_assert_null(oakuk_node_report_from_json("{}", 2, NULL));
}

static char *nested(size_t levels) {
  g_autoptr(GString) s = g_string_new("{" BASE ",\"deep\":");
  for (size_t i = 1; i < levels; i++)
    g_string_append_c(s, '[');
  for (size_t i = 1; i < levels; i++)
    g_string_append_c(s, ']');
  g_string_append_c(s, '}');
  return g_string_free(g_steal_pointer(&s), FALSE);
}

static void test_report_limits(void) {
  g_autofree char *ok = nested(OAKUK_JSON_MAX_DEPTH);
  g_autoptr(oakuk_node_report) r = oakuk_node_report_from_json(ok, (size_t)-1, NULL);
  g_assert_nonnull(r);

  g_autofree char *deep = nested(OAKUK_JSON_MAX_DEPTH + 1);
  g_autoptr(oakuk_error) e1 = report_error(deep);
  g_assert_nonnull(strstr(oakuk_error_message(e1), "deeper than 64"));

  /* brackets inside strings (also after an escaped quote) are not nesting */
  g_autoptr(GString) s = g_string_new("{" BASE ",\"host\":\"a\\\"");
  for (int i = 0; i < 200; i++)
    g_string_append(s, "[{");
  g_string_append(s, "\"}");
  g_autoptr(oakuk_node_report) r2 = oakuk_node_report_from_json(s->str, s->len, NULL);
  g_assert_nonnull(r2);
  g_assert_true(g_str_has_prefix(oakuk_node_report_host(r2), "a\"[{[{"));

  g_autoptr(GString) big = g_string_new("{" BASE ",\"pad\":\"");
  while (big->len <= OAKUK_JSON_MAX_BYTES)
    g_string_append(big, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
  g_string_append(big, "\"}");
  g_autoptr(oakuk_error) e2 = report_error(big->str);
  g_assert_nonnull(strstr(oakuk_error_message(e2), "limit is 1048576 bytes"));
}

/* ---- cluster aggregate ---- */

static oakuk_cluster_aggregate *thesis_aggregate(void) {
  size_t len;
  g_autofree char *text = fixture_text("thesis/cluster-aggregate-listing-4.8.json", &len);
  oakuk_error *e = NULL;
  oakuk_cluster_aggregate *agg = oakuk_cluster_aggregate_from_json(text, len, &e);
  if (e)
    g_error("thesis aggregate: %s", oakuk_error_message(e));
  return agg;
}

static void assert_thesis_values(const oakuk_cluster_aggregate *agg) {
  g_assert_cmpint(oakuk_cluster_aggregate_cpu_cores(agg), ==, 12);
  g_assert_cmpint(oakuk_cluster_aggregate_memory_mb(agg), ==, 7627);
  g_assert_cmpfloat_with_epsilon(oakuk_cluster_aggregate_cpu_percent(agg), 0.9, 1e-12);
  g_assert_cmpfloat_with_epsilon(oakuk_cluster_aggregate_memory_percent(agg), 38.766353153520356, 1e-9);
  g_assert_cmpint(oakuk_cluster_aggregate_number_of_nodes(agg), ==, 1);
  g_assert_cmpint(oakuk_cluster_aggregate_active_nodes(agg), ==, 1);
  g_assert_true(oakuk_cluster_aggregate_has_virt(agg, OAKUK_VIRT_CONTAINER));
  g_assert_true(oakuk_cluster_aggregate_has_virt(agg, OAKUK_VIRT_UNIKERNEL));
  g_assert_cmpuint(oakuk_cluster_aggregate_arch_count(agg), ==, 1);
  g_assert_cmpstr(oakuk_cluster_aggregate_arch(agg, 0), ==, "amd64");
  g_assert_null(oakuk_cluster_aggregate_arch(agg, 1));
  g_assert_cmpuint(oakuk_cluster_aggregate_per_arch_count(agg), ==, 1);
  g_assert_cmpstr(oakuk_cluster_aggregate_per_arch_name(agg, 0), ==, "amd64");
  double cpu = -1, mem = -1;
  int64_t cores = -1, mb = -1;
  int32_t accel = -1;
  g_assert_true(oakuk_cluster_aggregate_per_arch(agg, "amd64", &cpu, &cores, &mem, &mb, &accel));
  g_assert_cmpfloat_with_epsilon(cpu, 0.9, 1e-12);
  g_assert_cmpint(cores, ==, 12);
  g_assert_cmpfloat_with_epsilon(mem, 38.766353153520356, 1e-9);
  g_assert_cmpint(mb, ==, 7627);
  g_assert_cmpint(accel, ==, OAKUK_ACCEL_NONE); /* the listing carries no accel */
}

/* gpus/tpus: optional counts (older nodes send none: 0), read, written back, and checked. */
static void test_report_accelerators(void) {
  const char *base = "{\"id\":\"n\",\"architecture\":\"amd64\",\"vcpus\":1,\"memory\":1";
  g_autofree char *old = g_strdup_printf("%s}", base);
  g_autoptr(oakuk_node_report) r = oakuk_node_report_from_json(old, (size_t)-1, NULL);
  g_assert_nonnull(r);
  g_assert_cmpint(oakuk_node_report_gpus(r), ==, 0);
  g_assert_cmpint(oakuk_node_report_tpus(r), ==, 0);
  g_autofree char *with = g_strdup_printf("%s,\"gpus\":2,\"tpus\":null}", base);
  g_autoptr(oakuk_node_report) g = oakuk_node_report_from_json(with, (size_t)-1, NULL);
  g_assert_nonnull(g);
  g_assert_cmpint(oakuk_node_report_gpus(g), ==, 2);
  g_assert_cmpint(oakuk_node_report_tpus(g), ==, 0);
  g_autofree char *json = oakuk_node_report_to_json(g, false, NULL);
  g_assert_nonnull(strstr(json, "\"gpus\":2,\"tpus\":0"));
  g_autofree char *bad = g_strdup_printf("%s,\"gpus\":-1,\"tpus\":\"many\"}", base);
  oakuk_error *e = NULL;
  g_assert_null(oakuk_node_report_from_json(bad, (size_t)-1, &e));
  g_assert_cmpuint(oakuk_error_item_count(e), ==, 2);
  g_assert_cmpstr(oakuk_error_item_path(e, 0), ==, "gpus");
  g_assert_cmpstr(oakuk_error_item_path(e, 1), ==, "tpus");
  oakuk_error_free(e);

  /* Aggregates likewise: absent (Oakestra's, older clusters) is 0; gpu_cores stays an extra key. */
  g_autoptr(oakuk_cluster_aggregate) agg = oakuk_cluster_aggregate_from_json(
      "{\"cpu_cores\":1,\"cumulative_memory_in_mb\":1,\"number_of_nodes\":1,\"gpu_cores\":4}", (size_t)-1,
      NULL);
  g_assert_nonnull(agg);
  g_assert_cmpint(oakuk_cluster_aggregate_gpus(agg), ==, 0);
  g_assert_cmpint(oakuk_cluster_aggregate_tpus(agg), ==, 0);
  g_autoptr(oakuk_cluster_aggregate) agg2 = oakuk_cluster_aggregate_from_json(
      "{\"cpu_cores\":1,\"cumulative_memory_in_mb\":1,\"number_of_nodes\":1,\"gpus\":3,\"tpus\":1}",
      (size_t)-1, NULL);
  g_assert_cmpint(oakuk_cluster_aggregate_gpus(agg2), ==, 3);
  g_assert_cmpint(oakuk_cluster_aggregate_tpus(agg2), ==, 1);
}

static void test_aggregate_thesis(void) {
  g_autoptr(oakuk_cluster_aggregate) agg = thesis_aggregate();
  assert_thesis_values(agg);
  int64_t cores = 77;
  g_assert_false(oakuk_cluster_aggregate_per_arch(agg, "arm64", NULL, &cores, NULL, NULL, NULL));
  g_assert_cmpint(cores, ==, 77);
  g_assert_true(oakuk_cluster_aggregate_per_arch(agg, "amd64", NULL, NULL, NULL, NULL, NULL));
}

static void test_aggregate_thesis_round_trip(void) {
  g_autoptr(oakuk_cluster_aggregate) agg = thesis_aggregate();
  oakuk_error *e = NULL;
  g_autofree char *json = oakuk_cluster_aggregate_to_json(agg, true, &e);
  g_assert_null(e);
  g_autoptr(JsonNode) keep = NULL;
  JsonObject *o = parse_json_object(json, &keep);
  /* Oakestra's extra keys survive; "docker" is written as "container"; active_nodes is explicit */
  g_assert_cmpint(json_object_get_int_member(o, "gpu_cores"), ==, 0);
  g_assert_cmpint(json_object_get_int_member(o, "gpu_percent"), ==, 0);
  g_assert_cmpint(json_object_get_int_member(o, "more"), ==, 0);
  /* ... in the order they came, after the known keys */
  const char *gpu_cores = strstr(json, "\"gpu_cores\""), *gpu_percent = strstr(json, "\"gpu_percent\"");
  const char *more = strstr(json, "\"more\""), *jobs = strstr(json, "\"jobs\"");
  g_assert_true(jobs < gpu_cores && gpu_cores < gpu_percent && gpu_percent < more);
  g_assert_cmpint(json_object_get_int_member(o, "active_nodes"), ==, 1);
  JsonArray *virt = json_object_get_array_member(o, "virtualization");
  g_assert_cmpuint(json_array_get_length(virt), ==, 2);
  g_assert_cmpstr(json_array_get_string_element(virt, 0), ==, "container");
  g_assert_cmpstr(json_array_get_string_element(virt, 1), ==, "unikernel");
  JsonObject *amd64 = json_object_get_object_member(
      json_object_get_object_member(o, "aggregation_per_architecture"), "amd64");
  g_autofree char *keys = sorted_keys(amd64);
  g_assert_cmpstr(keys, ==, "cpu_cores,cpu_percent,memory,memory_in_mb");

  g_autoptr(oakuk_cluster_aggregate) back = oakuk_cluster_aggregate_from_json(json, strlen(json), &e);
  g_assert_null(e);
  assert_thesis_values(back);
  g_autofree char *again = oakuk_cluster_aggregate_to_json(back, true, NULL);
  g_assert_cmpstr(json, ==, again);
}

static void test_aggregate_per_arch(void) {
  const char *json =
      "{\"cpu_cores\":10,\"cumulative_memory_in_mb\":3000,\"number_of_nodes\":3,\"active_nodes\":2,"
      "\"virtualization\":[\"unikernel\"],\"arch\":[\"arm64\",\"amd64\",\"arm64\"],"
      "\"aggregation_per_architecture\":{"
      "\"arm64\":{\"cpu_percent\":5,\"cpu_cores\":8,\"memory\":70,\"memory_in_mb\":2000,\"accel\":\"tcg\"},"
      "\"amd64\":{\"cpu_percent\":12.5,\"cpu_cores\":2,\"memory\":10,\"memory_in_mb\":1000,"
      "\"accel\":\"kvm\",\"gpu_cores\":1}},"
      "\"jobs\":[\"a.b.c.d.instance.0\"]}";
  oakuk_error *e = NULL;
  g_autoptr(oakuk_cluster_aggregate) agg = oakuk_cluster_aggregate_from_json(json, (size_t)-1, &e);
  g_assert_null(e);
  g_assert_cmpint(oakuk_cluster_aggregate_active_nodes(agg), ==, 2);
  g_assert_cmpint(oakuk_cluster_aggregate_number_of_nodes(agg), ==, 3);
  g_assert_false(oakuk_cluster_aggregate_has_virt(agg, OAKUK_VIRT_CONTAINER));
  g_assert_cmpuint(oakuk_cluster_aggregate_arch_count(agg), ==, 2); /* duplicates collapse */
  g_assert_cmpstr(oakuk_cluster_aggregate_arch(agg, 0), ==, "arm64");
  g_assert_cmpstr(oakuk_cluster_aggregate_arch(agg, 1), ==, "amd64");
  g_assert_cmpuint(oakuk_cluster_aggregate_per_arch_count(agg), ==, 2);
  g_assert_cmpstr(oakuk_cluster_aggregate_per_arch_name(agg, 0), ==, "amd64"); /* sorted by arch */
  g_assert_cmpstr(oakuk_cluster_aggregate_per_arch_name(agg, 1), ==, "arm64");
  g_assert_null(oakuk_cluster_aggregate_per_arch_name(agg, 2));
  double cpu, mem;
  int64_t cores, mb;
  int32_t accel;
  g_assert_true(oakuk_cluster_aggregate_per_arch(agg, "amd64", &cpu, &cores, &mem, &mb, &accel));
  g_assert_cmpfloat(cpu, ==, 12.5);
  g_assert_cmpint(cores, ==, 2);
  g_assert_cmpfloat(mem, ==, 10);
  g_assert_cmpint(mb, ==, 1000);
  g_assert_cmpint(accel, ==, OAKUK_ACCEL_KVM);
  g_assert_true(oakuk_cluster_aggregate_per_arch(agg, "arm64", NULL, NULL, NULL, NULL, &accel));
  g_assert_cmpint(accel, ==, OAKUK_ACCEL_TCG);

  g_autofree char *out = oakuk_cluster_aggregate_to_json(agg, false, NULL);
  g_autoptr(JsonNode) keep = NULL;
  JsonObject *o = parse_json_object(out, &keep);
  JsonObject *pa = json_object_get_object_member(o, "aggregation_per_architecture");
  JsonObject *amd64 = json_object_get_object_member(pa, "amd64");
  g_assert_cmpstr(json_object_get_string_member(amd64, "accel"), ==, "kvm");
  g_assert_cmpint(json_object_get_int_member(amd64, "gpu_cores"), ==, 1);
  JsonArray *jobs = json_object_get_array_member(o, "jobs");
  g_assert_cmpuint(json_array_get_length(jobs), ==, 1);
  g_assert_cmpstr(json_array_get_string_element(jobs, 0), ==, "a.b.c.d.instance.0");
  g_autofree char *keys = sorted_keys(o);
  g_assert_cmpstr(
      keys, ==,
      "active_nodes,aggregation_per_architecture,arch,cpu_cores,cpu_percent,cumulative_memory_in_mb,"
      "gpus,jobs,memory_percent,number_of_nodes,tpus,virtualization");
}

static void test_aggregate_identity(void) {
  g_autoptr(oakuk_cluster_aggregate) agg = thesis_aggregate();
  g_assert_null(oakuk_cluster_aggregate_id(agg));
  g_assert_null(oakuk_cluster_aggregate_name(agg));
  oakuk_cluster_aggregate_set_identity(agg, "c-17", "munich");
  g_assert_cmpstr(oakuk_cluster_aggregate_id(agg), ==, "c-17");
  g_assert_cmpstr(oakuk_cluster_aggregate_name(agg), ==, "munich");
  /* setting it from its own strings must not read freed memory */
  oakuk_cluster_aggregate_set_identity(agg, oakuk_cluster_aggregate_name(agg),
                                       oakuk_cluster_aggregate_id(agg));
  g_assert_cmpstr(oakuk_cluster_aggregate_id(agg), ==, "munich");
  g_assert_cmpstr(oakuk_cluster_aggregate_name(agg), ==, "c-17");
  g_autofree char *json = oakuk_cluster_aggregate_to_json(agg, false, NULL);
  g_assert_null(strstr(json, "munich")); /* identity is not part of the JSON */
  g_assert_cmpint(oakuk_cluster_aggregate_received_at_ms(agg), ==, 0);
  oakuk_cluster_aggregate_set_received_at_ms(agg, 99);
  g_assert_cmpint(oakuk_cluster_aggregate_received_at_ms(agg), ==, 99);
  g_assert_true(oakuk_cluster_aggregate_ref(agg) == agg);
  oakuk_cluster_aggregate_unref(agg);
  oakuk_cluster_aggregate_unref(NULL);
}

#define AGG_BASE "\"cpu_cores\":1,\"cumulative_memory_in_mb\":1,\"number_of_nodes\":1"

static void test_aggregate_invalid(void) {
  static const struct {
    const char *json;
    const char *path;
    const char *message;
  } cases[] = {
      {"{\"cumulative_memory_in_mb\":1,\"number_of_nodes\":1}", "cpu_cores", "is required"},
      {"{\"cpu_cores\":1,\"number_of_nodes\":1}", "cumulative_memory_in_mb", "is required"},
      {"{\"cpu_cores\":1,\"cumulative_memory_in_mb\":1}", "number_of_nodes", "is required"},
      {"{" AGG_BASE ",\"active_nodes\":2}", "active_nodes", "exceeds number_of_nodes"},
      {"{" AGG_BASE ",\"memory_percent\":101}", "memory_percent", "between 0 and 100"},
      {"{" AGG_BASE ",\"virtualization\":[\"docker\",\"kvm\"]}", "virtualization[1]",
       "unknown virtualization"},
      {"{" AGG_BASE ",\"arch\":[\"mips\"]}", "arch[0]", "unknown architecture \"mips\""},
      {"{" AGG_BASE ",\"aggregation_per_architecture\":[]}", "aggregation_per_architecture",
       "must be an object"},
      {"{" AGG_BASE ",\"aggregation_per_architecture\":{\"x86\":{\"cpu_cores\":1,\"memory_in_mb\":1}}}",
       "aggregation_per_architecture.x86", "unknown architecture \"x86\""},
      {"{" AGG_BASE ",\"aggregation_per_architecture\":{\"amd64\":{\"memory_in_mb\":1}}}",
       "aggregation_per_architecture.amd64.cpu_cores", "is required"},
      {"{" AGG_BASE ",\"aggregation_per_architecture\":{\"amd64\":{\"cpu_cores\":1,\"memory_in_mb\":1,"
       "\"accel\":\"hvf\"}}}",
       "aggregation_per_architecture.amd64.accel", "unknown accel \"hvf\""},
      {"{" AGG_BASE ",\"aggregation_per_architecture\":{\"arm\":5}}", "aggregation_per_architecture.arm",
       "must be an object"},
      {"{" AGG_BASE ",\"jobs\":[\"a\",{}]}", "jobs[1]", "must be a string"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_test_message("case %zu: %s", i, cases[i].json);
    oakuk_error *e = NULL;
    g_assert_null(oakuk_cluster_aggregate_from_json(cases[i].json, (size_t)-1, &e));
    g_assert_nonnull(e);
    g_assert_cmpint(oakuk_error_code(e), ==, OAKUK_EINVAL);
    g_assert_cmpstr(oakuk_error_path(e), ==, cases[i].path);
    g_assert_nonnull(strstr(oakuk_error_message(e), cases[i].message));
    oakuk_error_free(e);
  }
  oakuk_error *e = NULL;
  g_assert_null(oakuk_cluster_aggregate_from_json("{\"cpu_cores\":", (size_t)-1, &e));
  g_assert_true(g_str_has_prefix(oakuk_error_message(e), "cluster aggregate: malformed JSON"));
  oakuk_error_free(e);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/model/status/names", test_status_names);
  g_test_add_func("/model/instance/name", test_instance_name);
  g_test_add_func("/model/report/parse", test_report_parse);
  g_test_add_func("/model/report/minimal", test_report_minimal);
  g_test_add_func("/model/report/round-trip", test_report_round_trip);
  g_test_add_func("/model/report/to-json-keys", test_report_to_json_keys);
  g_test_add_func("/model/report/accel", test_report_accel);
  g_test_add_func("/model/report/accelerators", test_report_accelerators);
  g_test_add_func("/model/report/invalid", test_report_invalid);
  g_test_add_func("/model/report/problems-collected", test_report_problems_collected);
  g_test_add_func("/model/report/malformed", test_report_malformed);
  g_test_add_func("/model/report/limits", test_report_limits);
  g_test_add_func("/model/aggregate/thesis", test_aggregate_thesis);
  g_test_add_func("/model/aggregate/thesis-round-trip", test_aggregate_thesis_round_trip);
  g_test_add_func("/model/aggregate/per-arch", test_aggregate_per_arch);
  g_test_add_func("/model/aggregate/identity", test_aggregate_identity);
  g_test_add_func("/model/aggregate/invalid", test_aggregate_invalid);
  return g_test_run();
}

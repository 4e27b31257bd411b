#include "oakuk-private.h"

#include <json-glib/json-glib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * Helpers */

static const char *const thesis_fixtures[] = {"aggregation-unikernel.json",   "aggregation-container.json",
                                              "aggregation-listing-4.9.json", "nginx-unikernel.json",
                                              "multiarch-unikernel.json",     NULL};

static char *fixture_path(const char *dir, const char *name) {
  const char *root = g_getenv("OAKUK_FIXTURES");
  g_assert_nonnull(root);
  return g_build_filename(root, dir, name, NULL);
}

static char *read_fixture(const char *name) {
  g_autofree char *path = fixture_path("thesis", name);
  char *text = NULL;
  g_autoptr(GError) err = NULL;
  g_assert_true(g_file_get_contents(path, &text, NULL, &err));
  g_assert_no_error(err);
  return text;
}

static oakuk_descriptor *parse_ok(const char *json) {
  oakuk_error *e = NULL;
  oakuk_descriptor *d = oakuk_descriptor_parse(json, (size_t)-1, &e);
  if (d == NULL)
    g_error("expected success, got: %s", oakuk_error_message(e));
  g_assert_null(e);
  return d;
}

static oakuk_error *parse_fail(const char *json) {
  oakuk_error *e = NULL;
  oakuk_descriptor *d = oakuk_descriptor_parse(json, (size_t)-1, &e);
  if (d != NULL) {
    g_autofree char *out = oakuk_descriptor_to_json(d, false, NULL);
    g_error("expected a validation error, the document was accepted: %s", out);
  }
  g_assert_nonnull(e);
  g_assert_cmpint(oakuk_error_code(e), ==, OAKUK_EINVAL);
  return e;
}

/* A valid container service and a valid unikernel service; tests change one field at a time. */
static const char *const base_container =
    "{\"microserviceID\": \"\", \"microservice_name\": \"web\", \"microservice_namespace\": \"edge\","
    " \"virtualization\": \"container\", \"cmd\": [\"nginx\", \"-g\", \"daemon off;\"], \"memory\": 100,"
    " \"vcpus\": 1, \"code\": \"docker.io/library/nginx:latest\", \"port\": \"8080:80\","
    " \"addresses\": {\"rr_ip\": \"10.30.0.2\"}}";

static const char *const base_unikernel =
    "{\"microserviceID\": \"\", \"microservice_name\": \"uk\", \"microservice_namespace\": \"edge\","
    " \"virtualization\": \"unikernel\", \"cmd\": [\"-p\", \"80\"], \"memory\": 64, \"vcpus\": 1,"
    " \"code\": \"http://127.0.0.1/k-amd64.tar.gz,http://127.0.0.1/k-arm64.tar.gz\","
    " \"arch\": [\"amd64\", \"arm64\"]}";

/* Builds a whole SLA holding `base` with `key` set to the JSON `value` (removed when value is NULL). */
static char *doc_with(const char *base, const char *key, const char *value) {
  g_autoptr(JsonNode) ms = json_from_string(base, NULL);
  g_assert_nonnull(ms);
  JsonObject *o = json_node_get_object(ms);
  if (key && value) {
    g_autoptr(GError) err = NULL;
    JsonNode *v = json_from_string(value, &err);
    g_assert_no_error(err);
    json_object_set_member(o, key, v);
  } else if (key) {
    json_object_remove_member(o, key);
  }
  g_autofree char *ms_text = json_to_string(ms, false);
  return g_strdup_printf("{\"sla_version\": \"v2.0\", \"customerID\": \"Admin\", \"applications\": [{"
                         "\"applicationID\": \"\", \"application_name\": \"app\", \"application_namespace\": "
                         "\"test\", \"application_desc\": \"d\", \"microservices\": [%s]}]}",
                         ms_text);
}

/* Asserts the document fails with exactly one problem at `path` whose sentence contains `needle`. */
static void expect_one(const char *json, const char *path, const char *needle) {
  oakuk_error *e = parse_fail(json);
  if (oakuk_error_item_count(e) != 1)
    g_error("expected 1 problem at %s, got %zu: %s", path, oakuk_error_item_count(e), oakuk_error_message(e));
  g_assert_cmpstr(oakuk_error_item_path(e, 0), ==, path);
  g_assert_cmpstr(oakuk_error_path(e), ==, path);
  if (strstr(oakuk_error_item_message(e, 0), needle) == NULL)
    g_error("message \"%s\" does not mention \"%s\"", oakuk_error_item_message(e, 0), needle);
  oakuk_error_free(e);
}

#define MS "applications[0].microservices[0]"

static void expect_ms(const char *base, const char *key, const char *value, const char *path,
                      const char *needle) {
  g_autofree char *doc = doc_with(base, key, value);
  g_autofree char *full = g_strdup_printf(MS ".%s", path);
  expect_one(doc, full, needle);
}

static oakuk_descriptor *parse_ms_ok(const char *base, const char *key, const char *value) {
  g_autofree char *doc = doc_with(base, key, value);
  return parse_ok(doc);
}

static oakuk_microservice *first_ms(oakuk_descriptor *d) {
  return oakuk_application_microservice(oakuk_descriptor_application(d, 0), 0);
}

/* ---------------------------------------------------------------------------------------------
 * Thesis fixtures, getters, round trip */

static void test_thesis_all_parse(void) {
  for (size_t i = 0; thesis_fixtures[i]; i++) {
    g_autofree char *text = read_fixture(thesis_fixtures[i]);
    oakuk_descriptor *d = parse_ok(text);
    g_assert_cmpstr(oakuk_descriptor_sla_version(d), ==, "v2.0");
    g_assert_cmpstr(oakuk_descriptor_customer_id(d), ==, "Admin");
    g_assert_cmpuint(oakuk_descriptor_application_count(d), ==, 1);
    g_assert_cmpuint(oakuk_application_microservice_count(oakuk_descriptor_application(d, 0)), ==, 1);
    if (strcmp(thesis_fixtures[i], "aggregation-container.json") == 0) {
      g_assert_cmpuint(oakuk_descriptor_warning_count(d), ==, 1);
      g_assert_cmpstr(oakuk_descriptor_warning(d, 0), ==, MS ".images: unknown key kept");
    } else {
      g_assert_cmpuint(oakuk_descriptor_warning_count(d), ==, 0);
    }
    g_assert_null(oakuk_descriptor_warning(d, 5));
    oakuk_descriptor_unref(d);
  }
}

static void test_thesis_getters(void) {
  g_autofree char *text = read_fixture("aggregation-unikernel.json");
  oakuk_descriptor *d = parse_ok(text);
  oakuk_application *app = oakuk_descriptor_application(d, 0);
  g_assert_cmpstr(oakuk_application_id(app), ==, "");
  g_assert_cmpstr(oakuk_application_name(app), ==, "testing");
  g_assert_cmpstr(oakuk_application_namespace(app), ==, "test");
  g_assert_cmpstr(oakuk_application_desc(app), ==, "Testing ");
  oakuk_microservice *ms = oakuk_application_microservice(app, 0);
  g_assert_null(oakuk_application_microservice(app, 1));
  g_assert_cmpstr(oakuk_microservice_name(ms), ==, "testaggr");
  g_assert_cmpstr(oakuk_microservice_namespace(ms), ==, "test");
  g_assert_cmpstr(oakuk_microservice_app_name(ms), ==, "testing");
  g_assert_cmpstr(oakuk_microservice_app_namespace(ms), ==, "test");
  g_assert_cmpstr(oakuk_microservice_service_name(ms), ==, "testing.test.testaggr.test");
  g_assert_cmpuint(oakuk_microservice_virt_count(ms), ==, 1);
  g_assert_cmpint(oakuk_microservice_virt(ms, 0), ==, OAKUK_VIRT_UNIKERNEL);
  g_assert_cmpint(oakuk_microservice_virt(ms, 1), ==, OAKUK_VIRT_NONE);
  g_assert_true(oakuk_microservice_has_virt(ms, OAKUK_VIRT_UNIKERNEL));
  g_assert_false(oakuk_microservice_has_virt(ms, OAKUK_VIRT_CONTAINER));
  g_assert_cmpuint(oakuk_microservice_arch_count(ms), ==, 1);
  g_assert_cmpstr(oakuk_microservice_arch(ms, 0), ==, "arm");
  g_assert_cmpstr(oakuk_microservice_code(ms, OAKUK_VIRT_UNIKERNEL, 0), ==,
                  "http://192.168.1.173:8001/aggregationarm.tar.gz");
  g_assert_null(oakuk_microservice_code(ms, OAKUK_VIRT_CONTAINER, 0));
  g_assert_null(oakuk_microservice_code_sha256(ms, OAKUK_VIRT_UNIKERNEL, 0));
  g_assert_cmpint(oakuk_microservice_memory_mb(ms), ==, 300);
  g_assert_cmpint(oakuk_microservice_vcpus(ms), ==, 1);
  g_assert_cmpuint(oakuk_microservice_cmd_count(ms), ==, 12);
  g_assert_cmpstr(oakuk_microservice_cmd(ms, 0), ==, "--video-source");
  g_assert_cmpstr(oakuk_microservice_cmd(ms, 11), ==, "500");
  g_assert_null(oakuk_microservice_cmd(ms, 12));
  g_assert_cmpuint(oakuk_microservice_port_count(ms), ==, 0);
  g_assert_cmpstr(oakuk_microservice_rr_ip(ms), ==, "10.30.30.30");
  g_assert_null(oakuk_microservice_closest_ip(ms));
  g_assert_cmpuint(oakuk_microservice_constraint_count(ms), ==, 0);
  oakuk_descriptor_unref(d);
}

static void test_thesis_container(void) {
  g_autofree char *text = read_fixture("aggregation-container.json");
  oakuk_descriptor *d = parse_ok(text);
  oakuk_microservice *ms = first_ms(d);
  g_assert_cmpint(oakuk_microservice_virt(ms, 0), ==, OAKUK_VIRT_CONTAINER);
  g_assert_cmpstr(oakuk_microservice_code(ms, OAKUK_VIRT_CONTAINER, 7), ==,
                  "docker.io/psabanic/caggregation:arm");
  g_assert_null(oakuk_microservice_code(ms, OAKUK_VIRT_UNIKERNEL, 0));
  g_assert_cmpuint(oakuk_microservice_arch_count(ms), ==, 1);
  oakuk_descriptor_unref(d);
}

static void test_multiarch(void) {
  g_autofree char *text = read_fixture("multiarch-unikernel.json");
  oakuk_descriptor *d = parse_ok(text);
  oakuk_microservice *ms = first_ms(d);
  g_assert_cmpuint(oakuk_microservice_arch_count(ms), ==, 2);
  g_assert_cmpstr(oakuk_microservice_arch(ms, 0), ==, "amd64");
  g_assert_cmpstr(oakuk_microservice_arch(ms, 1), ==, "arm64");
  g_assert_null(oakuk_microservice_arch(ms, 2));
  /* The trailing comma in "code" adds no third URL. */
  g_assert_cmpstr(oakuk_microservice_code(ms, OAKUK_VIRT_UNIKERNEL, 0), ==,
                  "http://192.168.1.173:8001/web-amd64.tar.gz");
  g_assert_cmpstr(oakuk_microservice_code(ms, OAKUK_VIRT_UNIKERNEL, 1), ==,
                  "http://192.168.1.173:8001/web-arm64.tar.gz");
  g_assert_null(oakuk_microservice_code(ms, OAKUK_VIRT_UNIKERNEL, 2));
  g_assert_cmpuint(oakuk_microservice_port_count(ms), ==, 1);
  g_assert_cmpint(oakuk_microservice_port_host(ms, 0), ==, 8080);
  g_assert_cmpint(oakuk_microservice_port_guest(ms, 0), ==, 8080);
  g_assert_cmpint(oakuk_microservice_port_proto(ms, 0), ==, OAKUK_PROTO_TCP);
  g_assert_cmpstr(oakuk_microservice_rr_ip(ms), ==, "10.30.0.10");
  g_assert_cmpuint(oakuk_microservice_cmd_count(ms), ==, 0);
  /* Absent optional numbers are 0. */
  g_assert_cmpint(oakuk_microservice_vgpus(ms), ==, 0);
  g_assert_cmpint(oakuk_microservice_storage(ms), ==, 0);
  oakuk_descriptor_unref(d);
}

static char *compact(const char *json) {
  g_autoptr(JsonNode) n = json_from_string(json, NULL);
  g_assert_nonnull(n);
  return json_to_string(n, false);
}

static void test_roundtrip(void) {
  for (size_t i = 0; thesis_fixtures[i]; i++) {
    g_autofree char *text = read_fixture(thesis_fixtures[i]);
    oakuk_descriptor *d = parse_ok(text);
    g_autofree char *out1 = oakuk_descriptor_to_json(d, true, NULL);
    oakuk_descriptor *d2 = parse_ok(out1);
    g_autofree char *out2 = oakuk_descriptor_to_json(d2, true, NULL);
    g_assert_cmpstr(out1, ==, out2);
    /* Every key survives in its original order. */
    g_autofree char *orig = compact(text);
    g_autofree char *flat = oakuk_descriptor_to_json(d2, false, NULL);
    g_assert_cmpstr(flat, ==, orig);
    oakuk_descriptor_unref(d2);
    oakuk_descriptor_unref(d);
  }
  g_autofree char *text = read_fixture("aggregation-container.json");
  oakuk_descriptor *d = parse_ok(text);
  oakuk_microservice *ms = first_ms(d);
  g_autofree char *ms_json = oakuk_microservice_to_json(ms, false, NULL);
  g_assert_nonnull(strstr(ms_json, "\"images\":[\"\"]"));
  g_assert_true(g_str_has_prefix(ms_json, "{\"microserviceID\":\"\",\"microservice_name\":\"testaggr\""));
  g_autofree char *app_json = oakuk_application_to_json(oakuk_descriptor_application(d, 0), false, NULL);
  g_assert_true(g_str_has_prefix(app_json, "{\"applicationID\":\"\",\"application_name\":\"testing\""));
  g_assert_nonnull(strstr(app_json, "\"images\""));
  oakuk_descriptor_unref(d);
}

static void test_set_id(void) {
  g_autofree char *text = read_fixture("nginx-unikernel.json");
  oakuk_descriptor *d = parse_ok(text);
  oakuk_application *app = oakuk_descriptor_application(d, 0);
  oakuk_microservice *ms = first_ms(d);
  g_assert_cmpint(oakuk_application_set_id(app, "65a0c0ffee", NULL), ==, OAKUK_OK);
  g_assert_cmpint(oakuk_microservice_set_id(ms, "65a0beef", NULL), ==, OAKUK_OK);
  g_assert_cmpstr(oakuk_application_id(app), ==, "65a0c0ffee");
  g_assert_cmpstr(oakuk_microservice_id(ms), ==, "65a0beef");
  g_autofree char *out = oakuk_descriptor_to_json(d, false, NULL);
  g_assert_nonnull(strstr(out, "{\"applicationID\":\"65a0c0ffee\",\"application_name\""));
  g_assert_nonnull(strstr(out, "{\"microserviceID\":\"65a0beef\",\"microservice_name\""));
  oakuk_error *e = NULL;
  g_assert_cmpint(oakuk_microservice_set_id(ms, "a\nb", &e), ==, OAKUK_EINVAL);
  g_assert_nonnull(strstr(oakuk_error_message(e), "microserviceID"));
  g_assert_cmpstr(oakuk_microservice_id(ms), ==, "65a0beef");
  oakuk_error_free(e);
  oakuk_descriptor_unref(d);
}

static void test_refcount(void) {
  g_autofree char *text = read_fixture("nginx-unikernel.json");
  oakuk_descriptor *d = parse_ok(text);
  oakuk_application *app = oakuk_application_ref(oakuk_descriptor_application(d, 0));
  oakuk_microservice *ms = oakuk_microservice_ref(first_ms(d));
  oakuk_descriptor_unref(d);
  /* Both still usable: they keep the document alive. */
  g_assert_cmpstr(oakuk_application_name(app), ==, "testing");
  oakuk_application_unref(app);
  g_assert_cmpstr(oakuk_microservice_code(ms, OAKUK_VIRT_UNIKERNEL, 0), ==,
                  "http://192.168.1.173:8001/nginxx86.tar.gz");
  oakuk_microservice_unref(ms);
  oakuk_descriptor_unref(NULL);
  oakuk_application_unref(NULL);
  oakuk_microservice_unref(NULL);
}

static void test_parse_file(void) {
  g_autofree char *path = fixture_path("thesis", "nginx-unikernel.json");
  oakuk_error *e = NULL;
  oakuk_descriptor *d = oakuk_descriptor_parse_file(path, &e);
  g_assert_nonnull(d);
  oakuk_descriptor_unref(d);
  g_autofree char *missing = fixture_path("thesis", "no-such-file.json");
  g_assert_null(oakuk_descriptor_parse_file(missing, &e));
  g_assert_cmpint(oakuk_error_code(e), ==, OAKUK_EIO);
  g_assert_nonnull(strstr(oakuk_error_message(e), "no-such-file.json"));
  oakuk_error_free(e);
}

static void test_defaults(void) {
  oakuk_descriptor *d = parse_ms_ok(base_unikernel, NULL, NULL);
  oakuk_microservice *ms = first_ms(d);
  g_assert_cmpint(oakuk_microservice_emulation(ms), ==, OAKUK_EMULATION_FORBID);
  g_assert_cmpint(oakuk_microservice_restart(ms), ==, OAKUK_RESTART_ON_FAILURE);
  g_assert_cmpint(oakuk_microservice_uk_net(ms), ==, OAKUK_UKNET_DIRECT);
  g_assert_null(oakuk_microservice_uk_flavor(ms));
  g_assert_null(oakuk_microservice_uk_version(ms));
  g_assert_cmpint(oakuk_microservice_uk_graceful_stop_s(ms), ==, 0);
  g_assert_cmpint(oakuk_microservice_vtpus(ms), ==, 0);
  g_assert_cmpint(oakuk_microservice_bandwidth_in(ms), ==, 0);
  g_assert_cmpint(oakuk_microservice_bandwidth_out(ms), ==, 0);
  g_assert_false(oakuk_microservice_one_shot(ms));
  g_assert_false(oakuk_microservice_privileged(ms));
  g_assert_null(oakuk_microservice_target_node(ms));
  g_assert_null(oakuk_microservice_rr_ip(ms));
  g_assert_cmpuint(oakuk_microservice_env_count(ms), ==, 0);
  oakuk_descriptor_unref(d);
}

static void test_extensions(void) {
  g_autoptr(JsonNode) n = json_from_string(base_unikernel, NULL);
  JsonObject *o = json_node_get_object(n);
  json_object_set_string_member(o, "code_sha256",
                                "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA, "
                                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef,");
  json_object_set_string_member(o, "emulation", "allow");
  json_object_set_string_member(o, "restart", "always");
  json_object_set_member(o, "unikernel",
                         json_from_string("{\"flavor\": \"linux\", \"version\": \"0.16.3\", \"net\": \"nat\","
                                          " \"graceful_stop_s\": 30, \"colour\": \"blue\"}",
                                          NULL));
  json_object_set_boolean_member(o, "one_shot", true);
  json_object_set_boolean_member(o, "privileged", true);
  json_object_set_string_member(o, "target_node", "node-7");
  json_object_set_member(o, "environment", json_from_string("[\"A_1=x y\", \"_B=\"]", NULL));
  json_object_set_member(o, "vgpus", json_from_string("2", NULL));
  json_object_set_member(o, "storage", json_from_string("100000000", NULL));
  g_autofree char *ms_text = json_to_string(n, false);
  g_autofree char *doc = doc_with(ms_text, NULL, NULL);
  oakuk_descriptor *d = parse_ok(doc);
  oakuk_microservice *ms = first_ms(d);
  g_assert_cmpstr(oakuk_microservice_code_sha256(ms, OAKUK_VIRT_UNIKERNEL, 0), ==,
                  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
  g_assert_cmpstr(oakuk_microservice_code_sha256(ms, OAKUK_VIRT_UNIKERNEL, 1), ==,
                  "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef");
  g_assert_null(oakuk_microservice_code_sha256(ms, OAKUK_VIRT_UNIKERNEL, 2));
  g_assert_cmpint(oakuk_microservice_emulation(ms), ==, OAKUK_EMULATION_ALLOW);
  g_assert_cmpint(oakuk_microservice_restart(ms), ==, OAKUK_RESTART_ALWAYS);
  g_assert_cmpstr(oakuk_microservice_uk_flavor(ms), ==, "linux");
  g_assert_cmpstr(oakuk_microservice_uk_version(ms), ==, "0.16.3");
  g_assert_cmpint(oakuk_microservice_uk_net(ms), ==, OAKUK_UKNET_NAT);
  g_assert_cmpint(oakuk_microservice_uk_graceful_stop_s(ms), ==, 30);
  g_assert_true(oakuk_microservice_one_shot(ms));
  g_assert_true(oakuk_microservice_privileged(ms));
  g_assert_cmpstr(oakuk_microservice_target_node(ms), ==, "node-7");
  g_assert_cmpuint(oakuk_microservice_env_count(ms), ==, 2);
  g_assert_cmpstr(oakuk_microservice_env(ms, 0), ==, "A_1=x y");
  g_assert_cmpint(oakuk_microservice_vgpus(ms), ==, 2);
  g_assert_cmpint(oakuk_microservice_storage(ms), ==, 100000000);
  /* The unknown key inside unikernel{} is kept and warned about, and so are the keys accepted but
   * not acted on. */
  g_assert_cmpuint(oakuk_descriptor_warning_count(d), ==, 4);
  g_assert_cmpstr(oakuk_descriptor_warning(d, 0), ==, MS ".unikernel.colour: unknown key kept");
  g_assert_cmpstr(oakuk_descriptor_warning_path(d, 1), ==, MS ".vgpus");
  g_assert_cmpstr(oakuk_descriptor_warning_path(d, 2), ==, MS ".storage");
  g_assert_cmpstr(oakuk_descriptor_warning_path(d, 3), ==, MS ".privileged");
  g_autofree char *out = oakuk_microservice_to_json(ms, false, NULL);
  g_assert_nonnull(strstr(out, "\"colour\":\"blue\""));
  oakuk_descriptor_unref(d);
}

static void test_virt_array(void) {
  g_autoptr(JsonNode) n = json_from_string(base_unikernel, NULL);
  JsonObject *o = json_node_get_object(n);
  json_object_set_member(o, "virtualization", json_from_string("[\"unikernel\", \"docker\"]", NULL));
  json_object_set_member(o, "code",
                         json_from_string("{\"unikernel\": \"file:///k/a.tgz,file:///k/b.tgz\","
                                          " \"docker\": \"oci-archive:file:///img.tar\"}",
                                          NULL));
  json_object_set_member(
      o, "code_sha256",
      json_from_string(
          "{\"container\": \"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\"}", NULL));
  g_autofree char *ms_text = json_to_string(n, false);
  g_autofree char *doc = doc_with(ms_text, NULL, NULL);
  oakuk_descriptor *d = parse_ok(doc);
  oakuk_microservice *ms = first_ms(d);
  g_assert_cmpuint(oakuk_microservice_virt_count(ms), ==, 2);
  g_assert_cmpint(oakuk_microservice_virt(ms, 0), ==, OAKUK_VIRT_UNIKERNEL);
  g_assert_cmpint(oakuk_microservice_virt(ms, 1), ==, OAKUK_VIRT_CONTAINER);
  g_assert_cmpstr(oakuk_microservice_code(ms, OAKUK_VIRT_UNIKERNEL, 1), ==, "file:///k/b.tgz");
  g_assert_cmpstr(oakuk_microservice_code(ms, OAKUK_VIRT_CONTAINER, 0), ==, "oci-archive:file:///img.tar");
  g_assert_cmpstr(oakuk_microservice_code_sha256(ms, OAKUK_VIRT_CONTAINER, 0), ==,
                  "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff");
  g_assert_null(oakuk_microservice_code_sha256(ms, OAKUK_VIRT_UNIKERNEL, 0));
  oakuk_descriptor_unref(d);
}

static void test_numbers_accepted(void) {
  oakuk_descriptor *d = parse_ms_ok(base_container, "memory", "100.0");
  g_assert_cmpint(oakuk_microservice_memory_mb(first_ms(d)), ==, 100);
  oakuk_descriptor_unref(d);
  d = parse_ms_ok(base_container, "memory", "1048576");
  g_assert_cmpint(oakuk_microservice_memory_mb(first_ms(d)), ==, 1048576);
  oakuk_descriptor_unref(d);
}

static void test_ports_accepted(void) {
  oakuk_descriptor *d = parse_ms_ok(base_container, "port", "\"9080; 53:5353/udp;53:53/tcp;\"");
  oakuk_microservice *ms = first_ms(d);
  g_assert_cmpuint(oakuk_microservice_port_count(ms), ==, 3);
  g_assert_cmpint(oakuk_microservice_port_host(ms, 0), ==, 9080);
  g_assert_cmpint(oakuk_microservice_port_guest(ms, 0), ==, 9080);
  g_assert_cmpint(oakuk_microservice_port_host(ms, 1), ==, 53);
  g_assert_cmpint(oakuk_microservice_port_guest(ms, 1), ==, 5353);
  g_assert_cmpint(oakuk_microservice_port_proto(ms, 1), ==, OAKUK_PROTO_UDP);
  g_assert_cmpint(oakuk_microservice_port_proto(ms, 2), ==, OAKUK_PROTO_TCP);
  oakuk_descriptor_unref(d);
  d = parse_ms_ok(base_container, "port", "443");
  ms = first_ms(d);
  g_assert_cmpuint(oakuk_microservice_port_count(ms), ==, 1);
  g_assert_cmpint(oakuk_microservice_port_host(ms, 0), ==, 443);
  g_assert_cmpint(oakuk_microservice_port_guest(ms, 0), ==, 443);
  oakuk_descriptor_unref(d);
  d = parse_ms_ok(base_container, "port", "\"\"");
  g_assert_cmpuint(oakuk_microservice_port_count(first_ms(d)), ==, 0);
  oakuk_descriptor_unref(d);
}

static void test_addresses_accepted(void) {
  oakuk_descriptor *d = parse_ms_ok(base_container, "addresses",
                                    "{\"rr_ip\": \"10.30.255.1\", \"closest_ip\": \"10.30.0.3\","
                                    " \"rr_ip_v6\": \"fdff:2000::55\", \"closest_ip_v6\": \"::1\"}");
  oakuk_microservice *ms = first_ms(d);
  g_assert_cmpstr(oakuk_microservice_rr_ip(ms), ==, "10.30.255.1");
  g_assert_cmpstr(oakuk_microservice_closest_ip(ms), ==, "10.30.0.3");
  g_assert_cmpstr(oakuk_microservice_rr_ip_v6(ms), ==, "fdff:2000::55");
  g_assert_cmpstr(oakuk_microservice_closest_ip_v6(ms), ==, "::1");
  oakuk_descriptor_unref(d);
}

static void test_constraints_accepted(void) {
  oakuk_descriptor *d = parse_ms_ok(base_container, "constraints",
                                    "[{\"type\": \"direct\", \"cluster\": \"c1\", \"node\": \" n1 ;n2;\"},"
                                    " {\"type\": \"clusters\", \"allowed\": [\"c1\", \"c2\"]},"
                                    " {\"type\": \"arch\", \"allowed\": [\"arm64\"]},"
                                    " {\"type\": \"latency\", \"area\": \"munich\", \"threshold\": 100},"
                                    " {\"type\": \"direct\", \"node\": \"n9\"}]");
  oakuk_microservice *ms = first_ms(d);
  g_assert_cmpuint(oakuk_microservice_constraint_count(ms), ==, 5);
  g_assert_cmpint(oakuk_microservice_constraint_type(ms, 0), ==, OAKUK_CONSTRAINT_DIRECT);
  g_assert_cmpstr(oakuk_microservice_constraint_cluster(ms, 0), ==, "c1");
  g_assert_cmpuint(oakuk_microservice_constraint_value_count(ms, 0), ==, 2);
  g_assert_cmpstr(oakuk_microservice_constraint_value(ms, 0, 0), ==, "n1");
  g_assert_cmpstr(oakuk_microservice_constraint_value(ms, 0, 1), ==, "n2");
  g_assert_cmpint(oakuk_microservice_constraint_type(ms, 1), ==, OAKUK_CONSTRAINT_CLUSTERS);
  g_assert_cmpstr(oakuk_microservice_constraint_value(ms, 1, 1), ==, "c2");
  g_assert_cmpint(oakuk_microservice_constraint_type(ms, 2), ==, OAKUK_CONSTRAINT_ARCH);
  g_assert_cmpstr(oakuk_microservice_constraint_value(ms, 2, 0), ==, "arm64");
  g_assert_cmpint(oakuk_microservice_constraint_type(ms, 3), ==, OAKUK_CONSTRAINT_LATENCY);
  g_assert_cmpuint(oakuk_microservice_constraint_value_count(ms, 3), ==, 0);
  g_assert_null(oakuk_microservice_constraint_cluster(ms, 4));
  g_assert_cmpstr(oakuk_microservice_constraint_value(ms, 4, 0), ==, "n9");
  /* The latency constraint is kept, and said not to be scheduled on. */
  g_assert_cmpuint(oakuk_descriptor_warning_count(d), ==, 1);
  g_assert_cmpstr(oakuk_descriptor_warning_path(d, 0), ==, MS ".constraints[3]");
  g_assert_cmpstr(oakuk_descriptor_warning_message(d, 0), ==,
                  "accepted but not acted on: latency constraints are kept but not scheduled on");
  oakuk_descriptor_unref(d);
}

/* ---------------------------------------------------------------------------------------------
 * Keys accepted but not acted on: a warning at their path when they hold a non-default value */

/* Asserts that base with key = value parses with exactly one warning, at MS.path, whose message
 * starts "accepted but not acted on: " and contains needle. */
static void expect_warning(const char *base, const char *key, const char *value, const char *path,
                           const char *needle) {
  oakuk_descriptor *d = parse_ms_ok(base, key, value);
  g_autofree char *full = g_strdup_printf(MS ".%s", path);
  if (oakuk_descriptor_warning_count(d) != 1)
    g_error("%s = %s: expected 1 warning, got %zu (first: %s)", key, value, oakuk_descriptor_warning_count(d),
            oakuk_descriptor_warning(d, 0));
  g_assert_cmpstr(oakuk_descriptor_warning_path(d, 0), ==, full);
  const char *msg = oakuk_descriptor_warning_message(d, 0);
  g_assert_true(g_str_has_prefix(msg, "accepted but not acted on: "));
  if (strstr(msg, needle) == NULL)
    g_error("warning \"%s\" does not mention \"%s\"", msg, needle);
  g_autofree char *text = g_strdup_printf("%s: %s", full, msg);
  g_assert_cmpstr(oakuk_descriptor_warning(d, 0), ==, text);
  g_assert_null(oakuk_descriptor_warning_path(d, 1));
  g_assert_null(oakuk_descriptor_warning_message(d, 1));
  oakuk_descriptor_unref(d);
}

static void test_warn_not_acted_on(void) {
  expect_warning(base_container, "vgpus", "1", "vgpus", "no node reports GPUs");
  expect_warning(base_container, "vtpus", "2", "vtpus", "no node reports TPUs");
  expect_warning(base_container, "bandwidth_in", "100", "bandwidth_in", "no bandwidth");
  expect_warning(base_container, "bandwidth_out", "100", "bandwidth_out", "no bandwidth");
  expect_warning(base_container, "storage", "512", "storage", "no storage");
  expect_warning(base_container, "privileged", "true", "privileged", "never run privileged");
  expect_warning(base_container, "addresses", "{\"rr_ip\": \"10.30.0.2\", \"closest_ip\": \"10.30.0.3\"}",
                 "addresses.closest_ip", "only addresses.rr_ip");
  expect_warning(base_container, "addresses", "{\"rr_ip_v6\": \"fdff:2000::55\"}", "addresses.rr_ip_v6",
                 "IPv4 only");
  expect_warning(base_container, "addresses", "{\"closest_ip_v6\": \"fdff:2000::56\"}",
                 "addresses.closest_ip_v6", "IPv4 only");
  expect_warning(base_container, "constraints", "[{\"type\": \"geo\", \"location\": \"48.1,11.6\"}]",
                 "constraints[0]", "geo constraints");
  expect_warning(base_container, "constraints",
                 "[{\"type\": \"arch\", \"allowed\": [\"amd64\"]}, {\"type\": \"latency\"}]",
                 "constraints[1]", "latency constraints");
  expect_warning(base_container, "added_files", "[\"/etc/app.conf\"]", "added_files", "no files");
  expect_warning(base_container, "connectivity", "[{\"target\": \"db\"}]", "connectivity", "connectivity");
  /* With a service IP, entries after the first with another guest port are not behind it. */
  expect_warning(base_container, "port", "\"8080:80; 53:5353/udp; 9443:443\"", "port",
                 "answers only on guest port 80 (the first entry); 53:5353/udp, 9443:443/tcp are mapped");
}

/* vcpus 0 (Oakestra's test SLAs): accepted as 1, with a warning at its path. */
static void test_vcpus_zero(void) {
  oakuk_descriptor *d = parse_ms_ok(base_container, "vcpus", "0");
  g_assert_cmpuint(oakuk_descriptor_warning_count(d), ==, 1);
  g_assert_cmpstr(oakuk_descriptor_warning_path(d, 0), ==, MS ".vcpus");
  g_assert_true(g_str_has_prefix(oakuk_descriptor_warning_message(d, 0), "0 is taken as 1: "));
  oakuk_application *app = oakuk_descriptor_application(d, 0);
  g_assert_cmpint(oakuk_microservice_vcpus(oakuk_application_microservice(app, 0)), ==, 1);
  oakuk_descriptor_unref(d);
}

/* Default values, absent keys, and what is honoured say nothing. */
static void test_warn_defaults(void) {
  oakuk_descriptor *d =
      parse_ms_ok(base_container, NULL, NULL); /* port "8080:80" behind rr_ip: one entry, honoured */
  g_assert_cmpuint(oakuk_descriptor_warning_count(d), ==, 0);
  oakuk_descriptor_unref(d);
  static const char *const defaults[][2] = {
      {"vgpus", "0"},
      {"vtpus", "0"},
      {"bandwidth_in", "0"},
      {"bandwidth_out", "0"},
      {"storage", "0"},
      {"privileged", "false"},
      {"added_files", "[]"},
      {"connectivity", "[]"},
      {"state", "\"\""},
      {"addresses", "{}"},
      /* A second entry with the first's guest port (udp next to tcp) is behind the service IP. */
      {"port", "\"8080:80; 8080:80/udp\""},
      /* A container's code_sha256 is enforced (the node pulls name@sha256:<digest>). */
      {"code_sha256", "\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\""},
      {"constraints", "[{\"type\": \"arch\", \"allowed\": [\"amd64\"]}]"},
  };
  for (size_t i = 0; i < G_N_ELEMENTS(defaults); i++) {
    d = parse_ms_ok(base_container, defaults[i][0], defaults[i][1]);
    if (oakuk_descriptor_warning_count(d) != 0)
      g_error("%s = %s: unexpected warning %s", defaults[i][0], defaults[i][1],
              oakuk_descriptor_warning(d, 0));
    oakuk_descriptor_unref(d);
  }
  /* Without a service IP every port entry is a host port mapping, all of them honoured. */
  g_autofree char *no_rr = doc_with(base_container, "addresses", NULL);
  g_autoptr(JsonNode) n = json_from_string(no_rr, NULL);
  JsonObject *ms = json_array_get_object_element(
      json_object_get_array_member(
          json_array_get_object_element(json_object_get_array_member(json_node_get_object(n), "applications"),
                                        0),
          "microservices"),
      0);
  json_object_set_string_member(ms, "port", "8080:80; 53:5353/udp; 9443:443");
  g_autofree char *text = json_to_string(n, false);
  d = parse_ok(text);
  g_assert_cmpuint(oakuk_descriptor_warning_count(d), ==, 0);
  oakuk_descriptor_unref(d);
  /* The standalone job (cluster, node) collects no warnings: they are the registration's. */
  oakuk_error *e = NULL;
  oakuk_microservice *job = oakuk_microservice_parse(
      "{\"microservice_name\": \"a\", \"microservice_namespace\": \"b\", \"virtualization\": \"container\","
      " \"code\": \"r/x:1\", \"memory\": 1, \"vcpus\": 1, \"vgpus\": 1, \"privileged\": true}",
      (size_t)-1, &e);
  g_assert_nonnull(job);
  g_assert_cmpint(oakuk_microservice_vgpus(job), ==, 1);
  oakuk_microservice_unref(job);
}

/* ---------------------------------------------------------------------------------------------
 * Rejections: one problem each, exact path, message names the problem */

static void test_reject_sla_version(void) {
  expect_one("{\"sla_version\": \"v1.0\", \"applications\": []}", "sla_version", "\"v1.0\"");
  expect_one("{\"applications\": []}", "sla_version", "required");
}

static void test_reject_top_types(void) {
  expect_one("{\"sla_version\": \"v2.0\", \"customerID\": 5, \"applications\": []}", "customerID",
             "must be a string, got an integer");
  expect_one("{\"sla_version\": \"v2.0\", \"applications\": {}}", "applications", "must be an array");
  expect_one("{\"sla_version\": \"v2.0\", \"applications\": [1]}", "applications[0]", "must be an object");
  expect_one("{\"sla_version\": \"v2.0\"}", "applications", "required");
}

static void test_reject_app_fields(void) {
  expect_one("{\"sla_version\": \"v2.0\", \"applications\": [{\"application_name\": \"my-app\","
             " \"application_namespace\": \"ns\", \"microservices\": []}]}",
             "applications[0].application_name", "^[a-zA-Z0-9]{1,30}$");
  expect_one("{\"sla_version\": \"v2.0\", \"applications\": [{\"application_name\": \"app\","
             " \"application_namespace\": \"abcdefghijabcdefghijabcdefghijX\", \"microservices\": []}]}",
             "applications[0].application_namespace", "1 to 30");
  expect_one("{\"sla_version\": \"v2.0\", \"applications\": [{\"application_name\": \"app\","
             " \"application_namespace\": \"ns\"}]}",
             "applications[0].microservices", "required");
  expect_one("{\"sla_version\": \"v2.0\", \"applications\": [{\"application_name\": \"app\","
             " \"application_namespace\": \"ns\", \"application_desc\": [], \"microservices\": []}]}",
             "applications[0].application_desc", "must be a string");
}

static void test_reject_duplicate_service(void) {
  g_autofree char *doc =
      g_strdup_printf("{\"sla_version\": \"v2.0\", \"applications\": [{\"application_name\": \"app\","
                      " \"application_namespace\": \"ns\", \"microservices\": [%s, %s]}]}",
                      base_container, base_container);
  expect_one(doc, "applications[0].microservices[1].microservice_name", "duplicate service web.edge");
}

static void test_reject_ms_names(void) {
  expect_ms(base_container, "microservice_name", NULL, "microservice_name", "required");
  expect_ms(base_container, "microservice_namespace", "\"a b\"", "microservice_namespace",
            "^[a-zA-Z0-9]{1,30}$");
  expect_ms(base_container, "microserviceID", "7", "microserviceID", "must be a string");
}

static void test_reject_virtualization(void) {
  expect_ms(base_container, "virtualization", "\"vm\"", "virtualization", "unknown virtualization \"vm\"");
  expect_ms(base_container, "virtualization", "[]", "virtualization", "must not be an empty array");
  expect_ms(base_container, "virtualization", "[\"docker\", \"container\"]", "virtualization[1]",
            "duplicate virtualization");
  expect_ms(base_container, "virtualization", "[\"container\", \"kvm\"]", "virtualization[1]", "\"kvm\"");
  expect_ms(base_container, "virtualization", "true", "virtualization", "must be a string or an array");
  expect_ms(base_container, "virtualization", NULL, "virtualization", "required");
}

static void test_reject_code_shape(void) {
  expect_ms(base_container, "code", NULL, "code", "required");
  expect_ms(base_container, "code", "{\"container\": \"nginx\"}", "code", "must be a string");
  g_autofree char *both = NULL;
  {
    g_autoptr(JsonNode) n = json_from_string(base_unikernel, NULL);
    json_object_set_member(json_node_get_object(n), "virtualization",
                           json_from_string("[\"unikernel\", \"container\"]", NULL));
    both = json_to_string(n, false);
  }
  /* An array of variants needs an object with one entry per variant. */
  expect_ms(both, "code", "\"http://x/k\"", "code", "must be an object");
  expect_ms(both, "code", "{\"unikernel\": \"http://x/a,http://x/b\"}", "code",
            "missing the entry for \"container\"");
  expect_ms(both, "code",
            "{\"unikernel\": \"http://x/a,http://x/b\", \"container\": \"nginx\", \"docker\": \"nginx\"}",
            "code.docker", "second entry for container");
  expect_ms(both, "code",
            "{\"unikernel\": \"http://x/a,http://x/b\", \"container\": \"nginx\", \"vm\": \"x\"}", "code.vm",
            "unknown virtualization");
  expect_ms(base_unikernel, "virtualization", "[\"unikernel\"]", "code", "must be an object");
  g_autofree char *uk_only = NULL;
  {
    g_autoptr(JsonNode) n = json_from_string(base_unikernel, NULL);
    json_object_set_member(json_node_get_object(n), "virtualization",
                           json_from_string("[\"unikernel\"]", NULL));
    uk_only = json_to_string(n, false);
  }
  expect_ms(uk_only, "code", "{\"unikernel\": \"http://x/a,http://x/b\", \"container\": \"nginx\"}",
            "code.container", "no \"container\" variant");
}

static void test_reject_arch_count(void) {
  g_autofree char *doc = doc_with(base_unikernel, "code", "\"http://127.0.0.1/k-amd64.tar.gz\"");
  oakuk_error *e = parse_fail(doc);
  g_assert_cmpuint(oakuk_error_item_count(e), ==, 1);
  g_assert_cmpstr(oakuk_error_message(e), ==, MS ".arch: 2 architectures but 1 code URL");
  oakuk_error_free(e);
  expect_ms(base_unikernel, "arch", "[\"amd64\"]", "arch", "1 architecture but 2 code URLs");
  expect_ms(base_unikernel, "arch", NULL, "arch", "a unikernel needs a non-empty arch");
  expect_ms(base_unikernel, "arch", "[]", "arch", "a unikernel needs a non-empty arch");
}

static void test_reject_code_urls(void) {
  expect_ms(base_unikernel, "code", "\"ftp://h/a,http://h/b\"", "code",
            "URL 1 \"ftp://h/a\" must start with");
  expect_ms(base_unikernel, "code", "\",http://h/b\"", "code", "URL 1 is empty");
  expect_ms(base_unikernel, "code", "\"http://h/a,https://\"", "code", "nothing after the scheme");
  expect_ms(base_unikernel, "code", "\"http://h/a,http://h/b c\"", "code", "whitespace");
  expect_ms(base_unikernel, "code", "\"\"", "code", "got none");
  expect_ms(base_container, "code", "\"\"", "code", "non-empty OCI image reference");
  expect_ms(base_container, "code", "\"docker.io/x y:1\"", "code", "whitespace or control");
  expect_ms(base_container, "code", "\"oci-archive:\"", "code", "needs a URL");
}

static void test_reject_arch(void) {
  g_autofree char *doc = doc_with(base_unikernel, "arch", "[\"amd64\", \"x86\"]");
  oakuk_error *e = parse_fail(doc);
  g_assert_cmpuint(oakuk_error_item_count(e), ==, 1);
  g_assert_cmpstr(oakuk_error_message(e), ==,
                  MS ".arch[1]: unknown architecture \"x86\" (known: amd64, arm64, arm, riscv64)");
  oakuk_error_free(e);
  expect_ms(base_unikernel, "arch", "[\"arm64\", \"arm64\"]", "arch[1]", "duplicate architecture \"arm64\"");
  expect_ms(base_container, "arch", "\"amd64\"", "arch", "must be an array");
  expect_ms(base_container, "arch", "[64]", "arch[0]", "must be a string");
}

static void test_reject_resources(void) {
  g_autofree char *doc = doc_with(base_container, "memory", "-5");
  oakuk_error *e = parse_fail(doc);
  g_assert_cmpstr(oakuk_error_message(e), ==,
                  MS ".memory: must be an integer between 1 and 1048576 (MB), got -5");
  oakuk_error_free(e);
  expect_ms(base_container, "memory", "1.5", "memory", "got 1.5");
  expect_ms(base_container, "memory", "1048577", "memory", "between 1 and 1048576");
  expect_ms(base_container, "memory", "0", "memory", "got 0");
  expect_ms(base_container, "memory", NULL, "memory", "required");
  expect_ms(base_container, "vcpus", "\"2\"", "vcpus", "got a string");
  expect_ms(base_container, "vcpus", "1025", "vcpus", "between 0 and 1024");
  expect_ms(base_container, "vcpus", "-1", "vcpus", "between 0 and 1024");
  expect_ms(base_container, "vcpus", NULL, "vcpus", "required");
  expect_ms(base_container, "vgpus", "65", "vgpus", "between 0 and 64");
  expect_ms(base_container, "vtpus", "-1", "vtpus", "between 0 and 64");
  expect_ms(base_container, "bandwidth_in", "100000001", "bandwidth_in", "between 0 and 100000000");
  expect_ms(base_container, "bandwidth_out", "true", "bandwidth_out", "got a boolean");
  expect_ms(base_container, "storage", "-1", "storage", "between 0 and 100000000");
}

static void test_reject_cmd(void) {
  expect_ms(base_container, "cmd", "[\"a\", \"b\", \"c\", \"x\\ny\"]", "cmd[3]", "control character 0x0a");
  expect_ms(base_container, "cmd", "[\"a\", \"\\u007f\"]", "cmd[1]", "control character 0x7f");
  expect_ms(base_unikernel, "cmd", "[\"a\", \"b\", \"c\", \"it's\"]", "cmd[3]", "kernel command line");
  expect_ms(base_unikernel, "cmd", "[\"a\\\\b\"]", "cmd[0]", "backslash");
  expect_ms(base_container, "cmd", "\"nginx\"", "cmd", "must be an array of strings");
  expect_ms(base_container, "cmd", "[1]", "cmd[0]", "must be a string");
  /* Quotes are fine when no unikernel variant exists. */
  oakuk_descriptor *d = parse_ms_ok(base_container, "cmd", "[\"sh\", \"-c\", \"echo \\\"hi\\\" `x`\"]");
  g_assert_cmpstr(oakuk_microservice_cmd(first_ms(d), 2), ==, "echo \"hi\" `x`");
  oakuk_descriptor_unref(d);
}

static void test_reject_environment(void) {
  expect_ms(base_container, "environment", "[\"A=1\", \"1BAD=x\"]", "environment[1]",
            "invalid variable name \"1BAD\"");
  expect_ms(base_container, "environment", "[\"NOVALUE\"]", "environment[0]", "must be KEY=value");
  expect_ms(base_container, "environment", "[\"A=\\t\"]", "environment[0]", "control character 0x09");
  expect_ms(base_unikernel, "environment", "[\"A=\\\"q\\\"\"]", "environment[0]", "kernel command line");
}

static void test_reject_port(void) {
  expect_ms(base_container, "port", "\"80:80;8x:1\"", "port", "entry \"8x:1\" is not of the form");
  expect_ms(base_container, "port", "\"70000:80\"", "port",
            "entry \"70000:80\": ports must be between 1 and 65535");
  expect_ms(base_container, "port", "\"0\"", "port", "between 1 and 65535");
  expect_ms(base_container, "port", "\"80:1;80:2\"", "port", "host port 80/tcp is mapped twice");
  expect_ms(base_container, "port", "\"80:1/sctp\"", "port", "protocol must be tcp or udp");
  expect_ms(base_container, "port", "\"80;;81\"", "port", "entry 2 is empty");
  expect_ms(base_container, "port", "65536", "port", "between 1 and 65535");
  expect_ms(base_container, "port", "[80]", "port", "must be a string");
  /* The same host port on both protocols is fine. */
  oakuk_descriptor *d = parse_ms_ok(base_container, "port", "\"53:53/udp;53:53\"");
  g_assert_cmpuint(oakuk_microservice_port_count(first_ms(d)), ==, 2);
  oakuk_descriptor_unref(d);
}

static void test_reject_addresses(void) {
  expect_ms(base_container, "addresses", "{\"rr_ip\": \"10.31.0.1\"}", "addresses.rr_ip",
            "inside 10.30.0.0/16");
  expect_ms(base_container, "addresses", "{\"closest_ip\": \"10.30.0\"}", "addresses.closest_ip",
            "IPv4 address");
  expect_ms(base_container, "addresses", "{\"rr_ip_v6\": \"fdff::zz\"}", "addresses.rr_ip_v6",
            "IPv6 address");
  expect_ms(base_container, "addresses", "{\"closest_ip_v6\": 6}", "addresses.closest_ip_v6",
            "must be a string");
  expect_ms(base_container, "addresses", "\"10.30.0.1\"", "addresses", "must be an object");
}

static void test_reject_constraints(void) {
  expect_ms(base_container, "constraints", "[{\"type\": \"nearby\"}]", "constraints[0].type", "\"nearby\"");
  expect_ms(base_container, "constraints", "[{\"cluster\": \"c\"}]", "constraints[0].type", "required");
  expect_ms(base_container, "constraints", "[{\"type\": \"direct\"}]", "constraints[0]",
            "\"cluster\" or \"node\"");
  expect_ms(base_container, "constraints", "[{\"type\": \"direct\", \"node\": \"a;;b\"}]",
            "constraints[0].node", "node name 2 is empty");
  expect_ms(base_container, "constraints", "[{\"type\": \"direct\", \"node\": \" \"}]", "constraints[0].node",
            "at least one node");
  expect_ms(base_container, "constraints", "[{\"type\": \"clusters\", \"allowed\": []}]",
            "constraints[0].allowed", "non-empty array");
  expect_ms(base_container, "constraints", "[{\"type\": \"arch\", \"allowed\": [\"mips\"]}]",
            "constraints[0].allowed[0]", "unknown architecture \"mips\"");
  expect_ms(base_container, "constraints", "[5]", "constraints[0]", "must be an object");
  expect_ms(base_container, "constraints", "{}", "constraints", "must be an array");
}

static void test_reject_code_sha256(void) {
  expect_ms(base_unikernel, "code_sha256",
            "\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef,abc\"", "code_sha256",
            "digest 2 \"abc\" must be exactly 64 hex digits");
  expect_ms(base_unikernel, "code_sha256",
            "\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\"", "code_sha256",
            "2 code URLs but 1 sha256 digest");
  expect_ms(base_container, "code_sha256",
            "\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg\"", "code_sha256",
            "64 hex digits");
  expect_ms(base_container, "code_sha256", "[]", "code_sha256", "must be a string");
}

static void test_reject_extensions(void) {
  expect_ms(base_unikernel, "emulation", "\"sometimes\"", "emulation", "unknown value \"sometimes\"");
  expect_ms(base_unikernel, "restart", "\"maybe\"", "restart", "never, on-failure, always");
  expect_ms(base_unikernel, "restart", "1", "restart", "must be a string");
  expect_ms(base_unikernel, "unikernel", "{\"flavor\": \"osv\"}", "unikernel.flavor", "unikraft, linux");
  expect_ms(base_unikernel, "unikernel", "{\"version\": \"0.16\"}", "unikernel.version", "X.Y.Z");
  expect_ms(base_unikernel, "unikernel", "{\"version\": \"0.16.x\"}", "unikernel.version", "X.Y.Z");
  expect_ms(base_unikernel, "unikernel", "{\"net\": \"bridge\"}", "unikernel.net", "direct, nat");
  expect_ms(base_unikernel, "unikernel", "{\"graceful_stop_s\": 3601}", "unikernel.graceful_stop_s",
            "between 0 and 3600");
  expect_ms(base_unikernel, "unikernel", "[]", "unikernel", "must be an object");
}

static void test_reject_types(void) {
  expect_ms(base_container, "one_shot", "\"yes\"", "one_shot", "must be a boolean, got a string");
  expect_ms(base_container, "privileged", "1", "privileged", "must be a boolean");
  expect_ms(base_container, "target_node", "[]", "target_node", "must be a string, got an array");
  expect_ms(base_container, "state", "null", "state", "must be a string, got null");
  expect_ms(base_container, "added_files", "{}", "added_files", "must be an array");
  expect_ms(base_container, "image", "5", "image", "must be a string, got an integer");
  expect_ms(base_container, "connectivity", "\"x\"", "connectivity", "must be an array");
  expect_ms(base_container, "environment", "{}", "environment", "must be an array");
}

static void test_multiple_problems(void) {
  g_autoptr(JsonNode) a = json_from_string(base_container, NULL);
  json_object_set_int_member(json_node_get_object(a), "memory", -5);
  g_autoptr(JsonNode) b = json_from_string(base_unikernel, NULL);
  json_object_set_member(json_node_get_object(b), "arch", json_from_string("[\"amd64\", \"x86\"]", NULL));
  json_object_set_string_member(json_node_get_object(b), "port", "99999");
  g_autofree char *ta = json_to_string(a, false);
  g_autofree char *tb = json_to_string(b, false);
  g_autofree char *doc =
      g_strdup_printf("{\"sla_version\": \"v3\", \"applications\": [{\"application_name\": "
                      "\"app\", \"application_namespace\": \"ns\", \"microservices\": [%s, %s]}]}",
                      ta, tb);
  oakuk_error *e = parse_fail(doc);
  g_assert_cmpuint(oakuk_error_item_count(e), ==, 4);
  g_assert_cmpstr(oakuk_error_item_path(e, 0), ==, "sla_version");
  g_assert_cmpstr(oakuk_error_item_path(e, 1), ==, "applications[0].microservices[0].memory");
  g_assert_cmpstr(oakuk_error_item_path(e, 2), ==, "applications[0].microservices[1].arch[1]");
  g_assert_cmpstr(oakuk_error_item_path(e, 3), ==, "applications[0].microservices[1].port");
  g_assert_true(g_str_has_prefix(oakuk_error_message(e), "4 problems; first: sla_version: "));
  oakuk_error_free(e);
}

/* network: "none" (docs/unikernels.md): the default is the overlay; "none" refuses, each at its
 * path, what needs a network; any other value names the two. */
static void test_network_none(void) {
  oakuk_descriptor *d = parse_ms_ok(base_unikernel, NULL, NULL);
  g_assert_cmpint(oakuk_microservice_network(first_ms(d)), ==, OAKUK_NETWORK_OVERLAY);
  oakuk_descriptor_unref(d);
  oakuk_descriptor *n = parse_ms_ok(base_unikernel, "network", "\"none\"");
  g_assert_cmpint(oakuk_microservice_network(first_ms(n)), ==, OAKUK_NETWORK_NONE);
  char *text = oakuk_descriptor_to_json(n, false, NULL);
  g_assert_nonnull(strstr(text, "\"network\":\"none\""));
  oakuk_free(text);
  oakuk_descriptor_unref(n);
  g_autoptr(JsonNode) plain = json_from_string(base_container, NULL);
  json_object_remove_member(json_node_get_object(plain), "port");
  json_object_remove_member(json_node_get_object(plain), "addresses");
  g_autofree char *plain_text = json_to_string(plain, false);
  oakuk_descriptor *c = parse_ms_ok(plain_text, "network", "\"none\"");
  g_assert_cmpint(oakuk_microservice_network(first_ms(c)), ==, OAKUK_NETWORK_NONE);
  g_assert_cmpuint(oakuk_descriptor_warning_count(c), ==, 0);
  oakuk_descriptor_unref(c);
  expect_ms(base_unikernel, "network", "\"host\"", "network", "overlay, none");
  expect_ms(base_unikernel, "network", "0", "network", "string");
  /* what needs a network, each at its path */
  g_autoptr(JsonNode) ms = json_from_string(base_container, NULL);
  JsonObject *o = json_node_get_object(ms);
  json_object_set_string_member(o, "network", "none");
  json_object_set_string_member(o, "port", "8080:80");
  json_object_set_member(o, "addresses", json_from_string("{\"rr_ip\": \"10.30.0.9\"}", NULL));
  json_object_set_member(o, "readiness", json_from_string("{\"tcp\": 80}", NULL));
  json_object_set_member(o, "unikernel", json_from_string("{\"net\": \"nat\"}", NULL));
  g_autofree char *base = json_to_string(ms, false);
  g_autofree char *doc = doc_with(base, NULL, NULL);
  oakuk_error *e = parse_fail(doc);
  g_assert_cmpuint(oakuk_error_item_count(e), ==, 4);
  g_assert_cmpstr(oakuk_error_item_path(e, 0), ==, MS ".port");
  g_assert_cmpstr(oakuk_error_item_path(e, 1), ==, MS ".addresses.rr_ip");
  g_assert_cmpstr(oakuk_error_item_path(e, 2), ==, MS ".readiness.tcp");
  g_assert_cmpstr(oakuk_error_item_path(e, 3), ==, MS ".unikernel.net");
  g_assert_nonnull(strstr(oakuk_error_item_message(e, 0), "network is \"none\""));
  oakuk_error_free(e);
}

/* unikernel.start (docs/unikernels.md "Snapshot start"): boot by default; "snapshot" takes the NAT
 * layout by default, refuses "direct", and needs a readiness probe. */
static void test_uk_start(void) {
  oakuk_descriptor *d = parse_ms_ok(base_unikernel, NULL, NULL);
  g_assert_cmpint(oakuk_microservice_uk_start(first_ms(d)), ==, OAKUK_UKSTART_BOOT);
  oakuk_descriptor_unref(d);
  g_autoptr(JsonNode) ms = json_from_string(base_unikernel, NULL);
  json_object_set_string_member(json_node_get_object(ms), "port", "8080:80");
  g_autofree char *with_port = json_to_string(ms, false);
  d = parse_ms_ok(with_port, "unikernel", "{\"start\": \"snapshot\"}");
  g_assert_cmpint(oakuk_microservice_uk_start(first_ms(d)), ==, OAKUK_UKSTART_SNAPSHOT);
  g_assert_cmpint(oakuk_microservice_uk_net(first_ms(d)), ==, OAKUK_UKNET_NAT);
  oakuk_descriptor_unref(d);
  d = parse_ms_ok(with_port, "unikernel", "{\"start\": \"boot\"}");
  g_assert_cmpint(oakuk_microservice_uk_start(first_ms(d)), ==, OAKUK_UKSTART_BOOT);
  g_assert_cmpint(oakuk_microservice_uk_net(first_ms(d)), ==, OAKUK_UKNET_DIRECT);
  oakuk_descriptor_unref(d);
  expect_ms(with_port, "unikernel", "{\"start\": \"snapshot\", \"net\": \"direct\"}", "unikernel.net",
            "needs net \"nat\"");
  expect_ms(with_port, "unikernel", "{\"start\": \"warm\"}", "unikernel.start", "boot, snapshot");
  expect_ms(with_port, "unikernel", "{\"start\": 1}", "unikernel.start", "string");
  /* no probe: neither a TCP port nor a serial text */
  expect_ms(base_unikernel, "unikernel", "{\"start\": \"snapshot\"}", "unikernel.start", "readiness probe");
  g_autoptr(JsonNode) serial = json_from_string(base_unikernel, NULL);
  json_object_set_member(json_node_get_object(serial), "readiness",
                         json_from_string("{\"serial\": \"listening\"}", NULL));
  g_autofree char *with_serial = json_to_string(serial, false);
  d = parse_ms_ok(with_serial, "unikernel", "{\"start\": \"snapshot\"}");
  g_assert_cmpint(oakuk_microservice_uk_start(first_ms(d)), ==, OAKUK_UKSTART_SNAPSHOT);
  g_assert_cmpint(oakuk_microservice_uk_warm_pool(first_ms(d)), ==, 0);
  oakuk_descriptor_unref(d);
  /* warm_pool: with snapshot start only, 0..16 */
  d = parse_ms_ok(with_port, "unikernel", "{\"start\": \"snapshot\", \"warm_pool\": 2}");
  g_assert_cmpint(oakuk_microservice_uk_warm_pool(first_ms(d)), ==, 2);
  oakuk_descriptor_unref(d);
  expect_ms(with_port, "unikernel", "{\"warm_pool\": 2}", "unikernel.warm_pool", "needs start \"snapshot\"");
  expect_ms(with_port, "unikernel", "{\"start\": \"snapshot\", \"warm_pool\": 17}", "unikernel.warm_pool",
            "0");
  expect_ms(with_port, "unikernel", "{\"start\": \"snapshot\", \"warm_pool\": \"2\"}", "unikernel.warm_pool",
            "integer");
}

/* ---------------------------------------------------------------------------------------------
 * Limits and malformed input */

static const char *const minimal = "{\"sla_version\": \"v2.0\", \"applications\": []}";

static void test_limit_size(void) {
  size_t max = OAKUK_DESCRIPTOR_MAX_BYTES;
  char *buf = g_malloc(max + 2);
  size_t n = strlen(minimal);
  memcpy(buf, minimal, n);
  memset(buf + n, ' ', max + 1 - n);
  buf[max + 1] = '\0';
  oakuk_error *e = NULL;
  oakuk_descriptor *d = oakuk_descriptor_parse(buf, max, &e);
  g_assert_nonnull(d);
  oakuk_descriptor_unref(d);
  g_assert_null(oakuk_descriptor_parse(buf, max + 1, &e));
  g_assert_cmpint(oakuk_error_code(e), ==, OAKUK_EINVAL);
  g_assert_cmpuint(oakuk_error_item_count(e), ==, 1);
  g_assert_cmpstr(oakuk_error_item_path(e, 0), ==, "");
  g_assert_nonnull(strstr(oakuk_error_message(e), "limit is 1048576"));
  oakuk_error_free(e);
  e = NULL;
  g_assert_null(oakuk_microservice_parse(buf, (size_t)-1, &e));
  g_assert_nonnull(strstr(oakuk_error_message(e), "limit is 1048576"));
  oakuk_error_free(e);
  g_free(buf);
}

/* A long port list (every host port once) parses in linear time. */
static void test_limit_many_ports(void) {
  GString *ports = g_string_new("\"");
  for (int i = 1; i <= 65535; i++)
    g_string_append_printf(ports, "%d;", i);
  g_string_append(ports, "65535/udp\"");
  gint64 start = g_get_monotonic_time();
  oakuk_descriptor *d = parse_ms_ok(base_container, "port", ports->str);
  g_assert_cmpint(g_get_monotonic_time() - start, <, 5 * G_USEC_PER_SEC);
  g_assert_cmpuint(oakuk_microservice_port_count(first_ms(d)), ==, 65536);
  g_assert_cmpint(oakuk_microservice_port_proto(first_ms(d), 65535), ==, OAKUK_PROTO_UDP);
  oakuk_descriptor_unref(d);
  g_string_free(ports, TRUE);
}

static char *nested(int levels) {
  /* The top-level object is one level; "x" holds levels - 1 nested arrays. */
  GString *s = g_string_new("{\"sla_version\": \"v2.0\", \"applications\": [], \"x\": ");
  for (int i = 0; i < levels - 1; i++)
    g_string_append_c(s, '[');
  for (int i = 0; i < levels - 1; i++)
    g_string_append_c(s, ']');
  g_string_append_c(s, '}');
  return g_string_free(s, FALSE);
}

static void test_limit_depth(void) {
  g_autofree char *ok = nested(64);
  oakuk_descriptor *d = parse_ok(ok);
  g_assert_cmpstr(oakuk_descriptor_warning(d, 0), ==, "x: unknown key kept");
  oakuk_descriptor_unref(d);
  g_autofree char *deep = nested(65);
  oakuk_error *e = parse_fail(deep);
  g_assert_cmpuint(oakuk_error_item_count(e), ==, 1);
  g_assert_true(g_str_has_prefix(oakuk_error_item_path(e, 0), "x[0][0][0]"));
  g_assert_nonnull(strstr(oakuk_error_message(e), "deeper than 64"));
  oakuk_error_free(e);
  /* Brackets inside strings do not nest. */
  GString *s = g_string_new("{\"sla_version\": \"v2.0\", \"applications\": [], \"x\": \"\\\"");
  for (int i = 0; i < 200; i++)
    g_string_append(s, "[{");
  g_string_append(s, "\"}");
  d = parse_ok(s->str);
  oakuk_descriptor_unref(d);
  g_string_free(s, TRUE);
  /* A very deep document never reaches the recursive parser. */
  char *huge = g_malloc(200001);
  memset(huge, '[', 200000);
  memcpy(huge, "{\"x\":", 5);
  huge[200000] = '\0';
  e = parse_fail(huge);
  g_assert_nonnull(strstr(oakuk_error_message(e), "deeper than 64"));
  oakuk_error_free(e);
  g_free(huge);
}

static void test_bytes(void) {
  static const char with_nul[] = "{\"sla_version\": \"v2.0\",\0 \"applications\": []}";
  oakuk_error *e = NULL;
  g_assert_null(oakuk_descriptor_parse(with_nul, sizeof with_nul - 1, &e));
  g_assert_nonnull(strstr(oakuk_error_message(e), "NUL byte at offset 23"));
  oakuk_error_free(e);
  e = parse_fail("{\"sla_version\": \"v2.0\xff\", \"applications\": []}");
  g_assert_nonnull(strstr(oakuk_error_message(e), "not valid UTF-8"));
  oakuk_error_free(e);
  /* A lone surrogate escape would decode to bytes that are not UTF-8. */
  e = parse_fail("{\"sla_version\": \"v2.0\", \"applications\": [], \"x\": \"\\ud800\\u0041\"}");
  g_assert_cmpstr(oakuk_error_item_path(e, 0), ==, "x");
  g_assert_nonnull(strstr(oakuk_error_message(e), "surrogate"));
  g_assert_nonnull(strstr(oakuk_error_message(e), ":1:"));
  oakuk_error_free(e);
  /* A \u escape needs 4 hex digits (json-glib would run past the closing quote). */
  e = parse_fail("{\"sla_version\": \"v2.0\", \"applications\": [], \"x\": \"\\udF\"}");
  g_assert_cmpstr(oakuk_error_item_path(e, 0), ==, "x");
  g_assert_nonnull(strstr(oakuk_error_message(e), "4 hex digits"));
  oakuk_error_free(e);
  /* A proper pair and an escaped backslash before "ud800" are fine. */
  oakuk_descriptor *d =
      parse_ok("{\"sla_version\": \"v2.0\", \"applications\": [], \"x\": \"\\ud83d\\ude00 \\\\ud800\"}");
  g_autofree char *out = oakuk_descriptor_to_json(d, false, NULL);
  g_assert_nonnull(strstr(out, "\"x\":\"\xf0\x9f\x98\x80 \\\\ud800\""));
  oakuk_descriptor_unref(d);
  e = parse_fail("{\"sla_version\": \"v2.0\", \"applications\": [], \"x\": [1e999]}");
  g_assert_cmpstr(oakuk_error_item_path(e, 0), ==, "x[0]");
  oakuk_error_free(e);
}

static void test_malformed(void) {
  oakuk_error *e = parse_fail("{\n  \"sla_version\": \"v2.0\",\n  \"applications\": [\n}");
  g_assert_cmpuint(oakuk_error_item_count(e), ==, 1);
  g_assert_cmpstr(oakuk_error_item_path(e, 0), ==, "applications");
  g_assert_cmpstr(oakuk_error_message(e), ==,
                  "applications: malformed JSON: <data>:4:1: unexpected '}', expected a value or ']'");
  oakuk_error_free(e);
  expect_one("[1, 2]", "", "must be a JSON object");
  expect_one("1{\"sla_version\": \"v2.0\", \"applications\": []}", "", "must be a JSON object");
  /* json-glib 1.6 would silently take the second of two top-level objects. */
  expect_one("{\"sla_version\": \"v2.0\", \"applications\": []}\n {\"sla_version\": \"v1\"}", "",
             "<data>:2:2: unexpected data after the top-level object");
  expect_one("{\"sla_version\": \"v2.0\", /* c */ \"applications\": []}", "",
             "<data>:1:25: comments are not JSON");
  expect_one("{'sla_version': 'v2.0', \"applications\": []}", "", "single quotes are not JSON");
  expect_one("", "", "empty document");
}

/* ---------------------------------------------------------------------------------------------
 * Standalone microservice (a job document) */

static char *job_with(const char *base, const char *extra) {
  g_assert_true(base[strlen(base) - 1] == '}');
  return g_strdup_printf("%.*s, %s}", (int)strlen(base) - 1, base, extra);
}

static void test_standalone(void) {
  g_autofree char *job = job_with(
      base_unikernel, "\"app_name\": \"shop\", \"app_ns\": \"prod\", \"job_name\": \"shop.prod.uk.edge\","
                      " \"service_name\": \"uk\", \"service_ns\": \"edge\", \"_id\": {\"$oid\": \"65a\"},"
                      " \"applicationID\": \"65b\", \"next_instance_progressive_number\": 1,"
                      " \"instance_list\": [], \"status\": \"REQUESTED\"");
  oakuk_error *e = NULL;
  oakuk_microservice *ms = oakuk_microservice_parse(job, (size_t)-1, &e);
  g_assert_nonnull(ms);
  g_assert_cmpstr(oakuk_microservice_app_name(ms), ==, "shop");
  g_assert_cmpstr(oakuk_microservice_app_namespace(ms), ==, "prod");
  g_assert_cmpstr(oakuk_microservice_service_name(ms), ==, "shop.prod.uk.edge");
  g_assert_cmpstr(oakuk_microservice_code(ms, OAKUK_VIRT_UNIKERNEL, 1), ==,
                  "http://127.0.0.1/k-arm64.tar.gz");
  g_autofree char *out = oakuk_microservice_to_json(ms, false, NULL);
  g_assert_nonnull(strstr(out, "\"_id\":{\"$oid\":\"65a\"}"));
  g_assert_nonnull(strstr(out, "\"status\":\"REQUESTED\""));
  g_assert_cmpint(oakuk_microservice_set_id(ms, "m1", NULL), ==, OAKUK_OK);
  g_autofree char *out2 = oakuk_microservice_to_json(ms, false, NULL);
  g_assert_true(g_str_has_prefix(out2, "{\"microserviceID\":\"m1\","));
  oakuk_microservice *again = oakuk_microservice_parse(out2, (size_t)-1, &e);
  g_assert_nonnull(again);
  g_assert_cmpstr(oakuk_microservice_id(again), ==, "m1");
  oakuk_microservice_unref(again);
  g_assert_true(oakuk_microservice_ref(ms) == ms);
  oakuk_microservice_unref(ms);
  g_assert_cmpstr(oakuk_microservice_name(ms), ==, "uk");
  oakuk_microservice_unref(ms);
}

static void test_standalone_job_name(void) {
  g_autofree char *job = job_with(base_container, "\"job_name\": \"shop.prod.web.edge\"");
  oakuk_microservice *ms = oakuk_microservice_parse(job, (size_t)-1, NULL);
  g_assert_nonnull(ms);
  g_assert_cmpstr(oakuk_microservice_app_name(ms), ==, "shop");
  g_assert_cmpstr(oakuk_microservice_service_name(ms), ==, "shop.prod.web.edge");
  oakuk_microservice_unref(ms);
  /* Without application identity there is no service name. */
  ms = oakuk_microservice_parse(base_container, (size_t)-1, NULL);
  g_assert_nonnull(ms);
  g_assert_null(oakuk_microservice_app_name(ms));
  g_assert_null(oakuk_microservice_service_name(ms));
  oakuk_microservice_unref(ms);
  g_autofree char *bad = job_with(base_container, "\"job_name\": \"shop.web\"");
  oakuk_error *e = NULL;
  g_assert_null(oakuk_microservice_parse(bad, (size_t)-1, &e));
  g_assert_cmpstr(oakuk_error_path(e), ==, "job_name");
  oakuk_error_free(e);
}

static void test_standalone_paths(void) {
  g_autofree char *job = job_with(base_unikernel, "\"app_name\": \"shop\", \"app_ns\": \"prod\"");
  g_autoptr(JsonNode) n = json_from_string(job, NULL);
  json_object_set_member(json_node_get_object(n), "arch", json_from_string("[\"amd64\"]", NULL));
  g_autofree char *text = json_to_string(n, false);
  oakuk_error *e = NULL;
  g_assert_null(oakuk_microservice_parse(text, (size_t)-1, &e));
  g_assert_cmpuint(oakuk_error_item_count(e), ==, 1);
  g_assert_cmpstr(oakuk_error_message(e), ==, "arch: 1 architecture but 2 code URLs");
  oakuk_error_free(e);
  e = NULL;
  g_assert_null(oakuk_microservice_parse("{\"microservice_name\": \"a\"", (size_t)-1, &e));
  g_assert_true(g_str_has_prefix(oakuk_error_message(e), "malformed JSON"));
  oakuk_error_free(e);
}

/* Descriptors kept as files: valid-*.json parse without warnings; invalid-*.json are rejected at the
 * path their sibling .path file holds. */
static void test_invalid_fixtures(void) {
  g_autofree char *dir = fixture_path("descriptors", "");
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  g_assert_nonnull(d);
  const char *name;
  guint checked = 0;
  while ((name = g_dir_read_name(d))) {
    if (!g_str_has_suffix(name, ".json"))
      continue;
    g_autofree char *path = g_build_filename(dir, name, NULL);
    if (g_str_has_prefix(name, "valid-")) {
      oakuk_error *err = NULL;
      oakuk_descriptor *ok = oakuk_descriptor_parse_file(path, &err);
      if (ok == NULL)
        g_error("%s: %s", name, oakuk_error_message(err));
      g_assert_cmpuint(oakuk_descriptor_warning_count(ok), ==, 0);
      oakuk_descriptor_unref(ok);
      continue;
    }
    g_autofree char *base = g_strndup(path, strlen(path) - 5);
    g_autofree char *expect_path = g_strconcat(base, ".path", NULL);
    g_autofree char *expected = NULL;
    g_assert_true(g_file_get_contents(expect_path, &expected, NULL, NULL));
    g_strstrip(expected);
    oakuk_error *e = NULL;
    g_assert_null(oakuk_descriptor_parse_file(path, &e));
    g_assert_cmpint(oakuk_error_code(e), ==, OAKUK_EINVAL);
    g_assert_cmpstr(oakuk_error_path(e), ==, expected);
    oakuk_error_free(e);
    checked++;
  }
  g_assert_cmpuint(checked, >=, 3);
}

/* readiness: the first TCP port's guest side by default, an explicit port, none, a console text. */
static void test_readiness(void) {
  oakuk_descriptor *d = parse_ms_ok(base_container, "port", "\"53:5353/udp; 9080:80; 443\"");
  g_assert_cmpint(oakuk_microservice_readiness_tcp(first_ms(d)), ==, 80);
  g_assert_null(oakuk_microservice_readiness_serial(first_ms(d)));
  oakuk_descriptor_unref(d);
  d = parse_ms_ok(base_unikernel, NULL, NULL); /* no port: no TCP probe */
  g_assert_cmpint(oakuk_microservice_readiness_tcp(first_ms(d)), ==, 0);
  oakuk_descriptor_unref(d);
  d = parse_ms_ok(base_container, "readiness", "{\"tcp\": 8443, \"serial\": \"Listening on port 80\"}");
  g_assert_cmpint(oakuk_microservice_readiness_tcp(first_ms(d)), ==, 8443);
  g_assert_cmpstr(oakuk_microservice_readiness_serial(first_ms(d)), ==, "Listening on port 80");
  g_assert_cmpuint(oakuk_descriptor_warning_count(d), ==, 0);
  oakuk_descriptor_unref(d);
  d = parse_ms_ok(base_container, "readiness", "{\"tcp\": 0, \"grace\": 1}");
  g_assert_cmpint(oakuk_microservice_readiness_tcp(first_ms(d)), ==, 0);
  g_assert_cmpstr(oakuk_descriptor_warning(d, 0), ==, MS ".readiness.grace: unknown key kept");
  /* Kept as given through a round trip. */
  g_autofree char *json = oakuk_descriptor_to_json(d, false, NULL);
  g_assert_nonnull(strstr(json, "\"readiness\":{\"tcp\":0,\"grace\":1}"));
  oakuk_descriptor_unref(d);
  expect_ms(base_container, "readiness", "\"tcp\"", "readiness", "must be an object");
  expect_ms(base_container, "readiness", "{\"tcp\": 70000}", "readiness.tcp", "between 0 and 65535");
  expect_ms(base_container, "readiness", "{\"tcp\": \"80\"}", "readiness.tcp", "got a string");
  expect_ms(base_container, "readiness", "{\"serial\": \"\"}", "readiness.serial", "1 to 256 characters");
  expect_ms(base_container, "readiness", "{\"serial\": \"a\\nb\"}", "readiness.serial", "control characters");
  expect_ms(base_container, "readiness", "{\"serial\": 5}", "readiness.serial", "must be a string");
  GString *big = g_string_new("{\"serial\": \"");
  for (int k = 0; k < 257; k++)
    g_string_append_c(big, 'x');
  g_string_append(big, "\"}");
  expect_ms(base_container, "readiness", big->str, "readiness.serial", "1 to 256 characters");
  g_string_free(big, TRUE);
}

static void test_reschedule_after(void) {
  oakuk_descriptor *d = parse_ms_ok(base_container, NULL, NULL);
  g_assert_cmpint(oakuk_microservice_reschedule_after_s(first_ms(d)), ==, 60);
  oakuk_descriptor_unref(d);
  d = parse_ms_ok(base_container, "reschedule_after_s", "0");
  g_assert_cmpint(oakuk_microservice_reschedule_after_s(first_ms(d)), ==, 0);
  g_assert_cmpuint(oakuk_descriptor_warning_count(d), ==, 0);
  oakuk_descriptor_unref(d);
  d = parse_ms_ok(base_container, "reschedule_after_s", "300");
  g_assert_cmpint(oakuk_microservice_reschedule_after_s(first_ms(d)), ==, 300);
  oakuk_descriptor_unref(d);
  expect_ms(base_container, "reschedule_after_s", "-1", "reschedule_after_s", "between 0 and 86400");
  expect_ms(base_container, "reschedule_after_s", "86401", "reschedule_after_s", "between 0 and 86400");
  expect_ms(base_container, "reschedule_after_s", "\"60\"", "reschedule_after_s", "got a string");
}

/* ---------------------------------------------------------------------------------------------
 * Unikernels as OCI references */

static const char *const base_uk_oci =
    "{\"microserviceID\": \"\", \"microservice_name\": \"uk\", \"microservice_namespace\": \"edge\","
    " \"virtualization\": \"unikernel\", \"cmd\": [\"-p\", \"80\"], \"memory\": 64, \"vcpus\": 1,"
    " \"code\": \"registry.example:5000/apps/httpreply:0.16\"}";

#define DIGEST64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

static void test_uk_oci_ok(void) {
  /* arch may be omitted: the reference's platforms decide. */
  oakuk_descriptor *d = parse_ms_ok(base_uk_oci, NULL, NULL);
  oakuk_microservice *ms = first_ms(d);
  g_assert_cmpuint(oakuk_microservice_arch_count(ms), ==, 0);
  g_assert_true(oakuk_microservice_code_is_oci(ms, OAKUK_VIRT_UNIKERNEL));
  g_assert_false(oakuk_microservice_code_is_oci(ms, OAKUK_VIRT_CONTAINER));
  g_assert_cmpstr(oakuk_microservice_code(ms, OAKUK_VIRT_UNIKERNEL, 0), ==,
                  "registry.example:5000/apps/httpreply:0.16");
  g_assert_cmpstr(oakuk_microservice_code(ms, OAKUK_VIRT_UNIKERNEL, 3), ==,
                  "registry.example:5000/apps/httpreply:0.16");
  g_assert_null(oakuk_microservice_code_sha256(ms, OAKUK_VIRT_UNIKERNEL, 0));
  oakuk_descriptor_unref(d);
  /* With arch, the same reference serves each listed architecture. */
  d = parse_ms_ok(base_uk_oci, "arch", "[\"amd64\", \"arm64\"]");
  ms = first_ms(d);
  g_assert_cmpuint(oakuk_microservice_arch_count(ms), ==, 2);
  g_assert_cmpstr(oakuk_microservice_code(ms, OAKUK_VIRT_UNIKERNEL, 1), ==,
                  "registry.example:5000/apps/httpreply:0.16");
  oakuk_descriptor_unref(d);
  const char *good[] = {"\"httpreply@sha256:" DIGEST64 "\"",
                        "\"localhost/uk/x\"",
                        "\"nginx\"",
                        "\"oci-archive:file:///srv/images/x.tar\"",
                        "\"oci-archive:https://h/x.tar\"",
                        "\"[::1]:5000/a:b\""};
  for (size_t k = 0; k < G_N_ELEMENTS(good); k++) {
    d = parse_ms_ok(base_uk_oci, "code", good[k]);
    g_assert_true(oakuk_microservice_code_is_oci(first_ms(d), OAKUK_VIRT_UNIKERNEL));
    oakuk_descriptor_unref(d);
  }
  /* A container variant's code is always an OCI reference; the unikernel's may be one too. */
  g_autofree char *both = NULL;
  {
    g_autoptr(JsonNode) n = json_from_string(base_uk_oci, NULL);
    JsonObject *o = json_node_get_object(n);
    json_object_set_member(o, "virtualization", json_from_string("[\"unikernel\", \"container\"]", NULL));
    json_object_set_member(o, "code",
                           json_from_string("{\"unikernel\": \"r.example/uk:1\", \"container\": "
                                            "\"r.example/ctr:1\"}",
                                            NULL));
    both = json_to_string(n, false);
  }
  d = parse_ms_ok(both, NULL, NULL);
  ms = first_ms(d);
  g_assert_true(oakuk_microservice_code_is_oci(ms, OAKUK_VIRT_UNIKERNEL));
  g_assert_true(oakuk_microservice_code_is_oci(ms, OAKUK_VIRT_CONTAINER));
  g_assert_cmpstr(oakuk_microservice_code(ms, OAKUK_VIRT_UNIKERNEL, 0), ==, "r.example/uk:1");
  oakuk_descriptor_unref(d);
  /* Comma-separated URLs stay tarball URLs, one per architecture. */
  d = parse_ms_ok(base_unikernel, NULL, NULL);
  g_assert_false(oakuk_microservice_code_is_oci(first_ms(d), OAKUK_VIRT_UNIKERNEL));
  g_assert_cmpstr(oakuk_microservice_code(first_ms(d), OAKUK_VIRT_UNIKERNEL, 1), ==,
                  "http://127.0.0.1/k-arm64.tar.gz");
  oakuk_descriptor_unref(d);
}

/* Every class of bad reference, with the field named. */
static void test_uk_oci_bad(void) {
  expect_ms(base_uk_oci, "code", "\"registry.example/Apps/x:1\"", "code", "path component \"Apps\"");
  expect_ms(base_uk_oci, "code", "\"x@sha256:abc\"", "code", "64 lower-case hex");
  expect_ms(base_uk_oci, "code", "\"x@md5:" DIGEST64 "\"", "code", "only sha256");
  expect_ms(base_uk_oci, "code", "\"x:-bad\"", "code", "tag \"-bad\" is not valid");
  expect_ms(base_uk_oci, "code", "\"badhost:99999/x\"", "code", "port");
  expect_ms(base_uk_oci, "code", "\"registry.example/\"", "code", "no repository name");
  expect_ms(base_uk_oci, "code", "\"a//b\"", "code", "path component \"\"");
  expect_ms(base_uk_oci, "code", "\"nginx \\u0001\"", "code", "whitespace or control");
  expect_ms(base_uk_oci, "code", "\"oci-archive:\"", "code", "oci-archive: needs");
  expect_ms(base_uk_oci, "code", "\"oci-archive:ftp://h/x.tar\"", "code", "oci-archive: needs");
  expect_ms(base_uk_oci, "code", "\"oci-archive:file://\"", "code", "oci-archive: needs");
  g_autofree char *long_name = g_strdup_printf("\"r.example/%s:1\"", g_strnfill(260, 'a'));
  expect_ms(base_uk_oci, "code", long_name, "code", "longer than 255");
  /* The message says what else code could have been. */
  expect_ms(base_uk_oci, "code", "\"UPPER\"", "code", "one kernel image URL per architecture");
  /* code_sha256 does not apply: the digest pins an OCI reference. */
  expect_ms(base_uk_oci, "code_sha256", "\"" DIGEST64 "\"", "code_sha256", "name@sha256:<digest>");
  /* An arch list still has to be valid. */
  expect_ms(base_uk_oci, "arch", "[\"x86\"]", "arch[0]", "unknown architecture");
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/descriptor/thesis/all-parse", test_thesis_all_parse);
  g_test_add_func("/descriptor/thesis/getters", test_thesis_getters);
  g_test_add_func("/descriptor/thesis/container", test_thesis_container);
  g_test_add_func("/descriptor/thesis/multiarch", test_multiarch);
  g_test_add_func("/descriptor/roundtrip", test_roundtrip);
  g_test_add_func("/descriptor/set-id", test_set_id);
  g_test_add_func("/descriptor/refcount", test_refcount);
  g_test_add_func("/descriptor/parse-file", test_parse_file);
  g_test_add_func("/descriptor/defaults", test_defaults);
  g_test_add_func("/descriptor/extensions", test_extensions);
  g_test_add_func("/descriptor/readiness", test_readiness);
  g_test_add_func("/descriptor/warnings/not-acted-on", test_warn_not_acted_on);
  g_test_add_func("/descriptor/warnings/defaults", test_warn_defaults);
  g_test_add_func("/descriptor/warnings/vcpus-zero", test_vcpus_zero);
  g_test_add_func("/descriptor/reschedule-after", test_reschedule_after);
  g_test_add_func("/descriptor/virt-array", test_virt_array);
  g_test_add_func("/descriptor/accept/numbers", test_numbers_accepted);
  g_test_add_func("/descriptor/accept/ports", test_ports_accepted);
  g_test_add_func("/descriptor/accept/addresses", test_addresses_accepted);
  g_test_add_func("/descriptor/accept/constraints", test_constraints_accepted);
  g_test_add_func("/descriptor/reject/sla-version", test_reject_sla_version);
  g_test_add_func("/descriptor/reject/top-types", test_reject_top_types);
  g_test_add_func("/descriptor/reject/application", test_reject_app_fields);
  g_test_add_func("/descriptor/reject/duplicate-service", test_reject_duplicate_service);
  g_test_add_func("/descriptor/reject/service-names", test_reject_ms_names);
  g_test_add_func("/descriptor/reject/virtualization", test_reject_virtualization);
  g_test_add_func("/descriptor/reject/code-shape", test_reject_code_shape);
  g_test_add_func("/descriptor/reject/arch-count", test_reject_arch_count);
  g_test_add_func("/descriptor/reject/code-urls", test_reject_code_urls);
  g_test_add_func("/descriptor/reject/arch", test_reject_arch);
  g_test_add_func("/descriptor/reject/resources", test_reject_resources);
  g_test_add_func("/descriptor/reject/cmd", test_reject_cmd);
  g_test_add_func("/descriptor/reject/environment", test_reject_environment);
  g_test_add_func("/descriptor/reject/port", test_reject_port);
  g_test_add_func("/descriptor/reject/addresses", test_reject_addresses);
  g_test_add_func("/descriptor/reject/constraints", test_reject_constraints);
  g_test_add_func("/descriptor/reject/code-sha256", test_reject_code_sha256);
  g_test_add_func("/descriptor/reject/extensions", test_reject_extensions);
  g_test_add_func("/descriptor/reject/types", test_reject_types);
  g_test_add_func("/descriptor/reject/fixtures", test_invalid_fixtures);
  g_test_add_func("/descriptor/multiple-problems", test_multiple_problems);
  g_test_add_func("/descriptor/network-none", test_network_none);
  g_test_add_func("/descriptor/uk-start", test_uk_start);
  g_test_add_func("/descriptor/limits/size", test_limit_size);
  g_test_add_func("/descriptor/limits/depth", test_limit_depth);
  g_test_add_func("/descriptor/limits/many-ports", test_limit_many_ports);
  g_test_add_func("/descriptor/limits/bytes", test_bytes);
  g_test_add_func("/descriptor/malformed", test_malformed);
  g_test_add_func("/descriptor/microservice/standalone", test_standalone);
  g_test_add_func("/descriptor/microservice/job-name", test_standalone_job_name);
  g_test_add_func("/descriptor/microservice/paths", test_standalone_paths);
  g_test_add_func("/descriptor/unikernel/oci", test_uk_oci_ok);
  g_test_add_func("/descriptor/unikernel/oci-bad", test_uk_oci_bad);
  return g_test_run();
}

/* node_logs_reply (daemons/node/logs.c): the node's side of `oakuk logs`, on real files. */
#include "logs.h"

#include "daemon-common.h"

#include <glib/gstdio.h>
#include <string.h>

typedef struct {
  char *state;
} Fixture;

static void setup(Fixture *f, gconstpointer data) {
  f->state = g_dir_make_tmp("oakuk-node-logs-XXXXXX", NULL);
  g_assert_nonnull(f->state);
}

static void teardown(Fixture *f, gconstpointer data) {
  g_autofree char *argv0 = g_strdup("rm");
  char *argv[] = {argv0, (char *)"-rf", f->state, NULL};
  g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL, NULL);
  g_free(f->state);
}

static void write_log(Fixture *f, const char *instance, const char *file, const char *text, gssize len) {
  g_autofree char *dir = g_build_filename(f->state, "instances", instance, NULL);
  g_assert_cmpint(g_mkdir_with_parents(dir, 0700), ==, 0);
  g_autofree char *path = g_build_filename(dir, file, NULL);
  g_assert_true(g_file_set_contents(path, text, len, NULL));
}

/* As a node's runtimes answer: the instance's directory holds its console (serial.log for a
 * unikernel, output.log for a container). */
static char *lookup(const char *instance, gpointer data) {
  Fixture *f = data;
  g_autofree char *dir = g_build_filename(f->state, "instances", instance, NULL);
  if (!g_file_test(dir, G_FILE_TEST_IS_DIR))
    return NULL;
  g_autofree char *output = g_build_filename(dir, "output.log", NULL);
  return g_file_test(output, G_FILE_TEST_EXISTS) ? g_steal_pointer(&output)
                                                 : g_build_filename(dir, "serial.log", NULL);
}

static JsonObject *ask(Fixture *f, const char *request) {
  g_autoptr(GError) error = NULL;
  g_autofree char *reply = node_logs_reply(lookup, f, request, strlen(request), &error);
  g_assert_no_error(error);
  g_assert_nonnull(reply);
  g_autoptr(JsonNode) n = od_json_parse(reply, -1, &error);
  g_assert_no_error(error);
  g_assert_true(JSON_NODE_HOLDS_OBJECT(n));
  return json_object_ref(json_node_get_object(n));
}

/* No line of a reply holds an escape sequence or another control byte. */
static void assert_clean(JsonArray *lines) {
  for (guint i = 0; i < json_array_get_length(lines); i++) {
    const char *l = json_array_get_string_element(lines, i);
    g_assert_true(g_utf8_validate(l, -1, NULL));
    for (const unsigned char *p = (const unsigned char *)l; *p; p++)
      if ((*p < 0x20 && *p != '\t') || *p == 0x7f)
        g_error("line %u has control byte 0x%02x: %s", i, *p, l);
  }
}

/* A console captured from QEMU running a Unikraft guest on x86: SeaBIOS's escape sequences and
 * screen clears, the guest's own, NULs, CRLFs. */
static void test_captured_console(Fixture *f, gconstpointer data) {
  static const char console[] = "\x1b"
                                "c\x1b[?7l\x1b[2J\x1b[0mSeaBIOS (version 1.16.2-debian-1.16.2-1)\r\n"
                                "Booting from ROM..\x1b"
                                "c\x1b[?7l\x1b[2J\x1b[0m\0\0\r\n\r\n"
                                "                  Telesto 0.16.3~e453b74a\r\n"
                                "en1: Set IPv4 address 10.18.0.5 mask 255.255.255.0 gw 10.18.0.1\r\n"
                                "\x1b[1;32mListening on port 8123...\x1b[0m\r\n";
  write_log(f, "uk.instance.0", "serial.log", console, sizeof console - 1);
  g_autoptr(JsonObject) o = ask(f, "{\"instance\": \"uk.instance.0\", \"request_id\": \"c1\"}");
  JsonArray *lines = json_object_get_array_member(o, "lines");
  assert_clean(lines);
  g_assert_cmpuint(json_array_get_length(lines), ==, 6);
  g_assert_cmpstr(json_array_get_string_element(lines, 0), ==, "SeaBIOS (version 1.16.2-debian-1.16.2-1)");
  g_assert_cmpstr(json_array_get_string_element(lines, 1), ==, "Booting from ROM..");
  g_assert_cmpstr(json_array_get_string_element(lines, 3), ==, "                  Telesto 0.16.3~e453b74a");
  g_assert_cmpstr(json_array_get_string_element(lines, 5), ==, "Listening on port 8123...");
}

static void test_serial_tail(Fixture *f, gconstpointer data) {
  /* A QEMU serial log: CRLF line ends, a NUL byte, invalid UTF-8, 300 lines. */
  GString *s = g_string_new(NULL);
  for (int i = 0; i < 300; i++)
    g_string_append_printf(s, "boot line %d\r\n", i);
  g_string_append_len(s, "bad \xff byte\0here\r\n", 17);
  write_log(f, "shop.test.web.test.instance.0", "serial.log", s->str, (gssize)s->len);
  g_string_free(s, TRUE);
  g_autoptr(JsonObject) o =
      ask(f, "{\"instance\": \"shop.test.web.test.instance.0\", \"lines\": 3, \"request_id\": \"ab12\"}");
  g_assert_cmpstr(json_object_get_string_member(o, "request_id"), ==, "ab12");
  g_assert_cmpstr(json_object_get_string_member(o, "instance"), ==, "shop.test.web.test.instance.0");
  JsonArray *lines = json_object_get_array_member(o, "lines");
  g_assert_cmpuint(json_array_get_length(lines), ==, 3);
  g_assert_cmpstr(json_array_get_string_element(lines, 0), ==, "boot line 298");
  g_assert_cmpstr(json_array_get_string_element(lines, 1), ==, "boot line 299");
  const char *last = json_array_get_string_element(lines, 2);
  g_assert_true(g_utf8_validate(last, -1, NULL));
  g_assert_true(g_str_has_prefix(last, "bad "));
  g_assert_true(g_str_has_suffix(last, "bytehere"));
  assert_clean(lines);
  g_assert_false(json_object_has_member(o, "error"));
}

static void test_default_lines_and_output_log(Fixture *f, gconstpointer data) {
  GString *s = g_string_new(NULL);
  for (int i = 0; i < 150; i++)
    g_string_append_printf(s, "out %d\n", i);
  write_log(f, "a.b.c.d.instance.1", "output.log", s->str, (gssize)s->len);
  g_string_free(s, TRUE);
  g_autoptr(JsonObject) o = ask(f, "{\"instance\": \"a.b.c.d.instance.1\", \"request_id\": \"r1\"}");
  JsonArray *lines = json_object_get_array_member(o, "lines");
  g_assert_cmpuint(json_array_get_length(lines), ==, NODE_LOGS_DEFAULT_LINES);
  g_assert_cmpstr(json_array_get_string_element(lines, 0), ==, "out 50");
  g_assert_cmpstr(json_array_get_string_element(lines, 99), ==, "out 149");
}

static void test_big_log_is_cut(Fixture *f, gconstpointer data) {
  /* 2 MB of output: only the end is read; the first kept line is whole. */
  GString *s = g_string_new(NULL);
  for (int i = 0; s->len < 2 * 1024 * 1024; i++)
    g_string_append_printf(s, "line %07d %s\n", i, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
  write_log(f, "big.instance.0", "output.log", s->str, (gssize)s->len);
  g_string_free(s, TRUE);
  g_autoptr(JsonObject) o =
      ask(f, "{\"instance\": \"big.instance.0\", \"lines\": 10000, \"request_id\": \"r2\"}");
  JsonArray *lines = json_object_get_array_member(o, "lines");
  g_assert_cmpuint(json_array_get_length(lines), >, 100);
  g_assert_cmpuint(json_array_get_length(lines), <=, 10000);
  for (guint i = 0; i < json_array_get_length(lines); i++)
    g_assert_true(g_str_has_prefix(json_array_get_string_element(lines, i), "line "));
}

static void test_instance_without_log(Fixture *f, gconstpointer data) {
  g_autofree char *dir = g_build_filename(f->state, "instances", "new.instance.0", NULL);
  g_assert_cmpint(g_mkdir_with_parents(dir, 0700), ==, 0);
  g_autoptr(JsonObject) o = ask(f, "{\"instance\": \"new.instance.0\", \"request_id\": \"r3\"}");
  g_assert_cmpuint(json_array_get_length(json_object_get_array_member(o, "lines")), ==, 0);
}

static void test_refusals(Fixture *f, gconstpointer data) {
  write_log(f, "x.instance.0", "serial.log", "secret\n", -1);
  struct {
    const char *request, *error_part;
  } cases[] = {
      {"{\"instance\": \"other.instance.0\", \"request_id\": \"r4\"}", "no instance other.instance.0"},
      {"{\"instance\": \"../x.instance.0\", \"request_id\": \"r5\"}", "instance:"},
      {"{\"instance\": \".\", \"request_id\": \"r6\"}", "instance:"},
      {"{\"request_id\": \"r7\"}", "instance:"},
      {"{\"instance\": \"x.instance.0\", \"lines\": 0, \"request_id\": \"r8\"}", "lines:"},
      {"{\"instance\": \"x.instance.0\", \"lines\": \"5\", \"request_id\": \"r9\"}", "lines:"},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autoptr(JsonObject) o = ask(f, cases[i].request);
    g_assert_false(json_object_has_member(o, "lines"));
    g_assert_nonnull(strstr(json_object_get_string_member(o, "error"), cases[i].error_part));
  }
  /* Without a usable request_id there is nothing to answer to. */
  const char *bad[] = {"{\"instance\": \"x.instance.0\"}",
                       "{\"instance\": \"x.instance.0\", \"request_id\": \"a/b\"}", "not json", "[1]"};
  for (gsize i = 0; i < G_N_ELEMENTS(bad); i++) {
    g_autoptr(GError) error = NULL;
    char *reply = node_logs_reply(lookup, f, bad[i], strlen(bad[i]), &error);
    g_assert_null(reply);
    g_assert_nonnull(error);
  }
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add("/node-logs/serial-tail", Fixture, NULL, setup, test_serial_tail, teardown);
  g_test_add("/node-logs/captured-console", Fixture, NULL, setup, test_captured_console, teardown);
  g_test_add("/node-logs/output-log-default-lines", Fixture, NULL, setup, test_default_lines_and_output_log,
             teardown);
  g_test_add("/node-logs/big-log-cut", Fixture, NULL, setup, test_big_log_is_cut, teardown);
  g_test_add("/node-logs/instance-without-log", Fixture, NULL, setup, test_instance_without_log, teardown);
  g_test_add("/node-logs/refusals", Fixture, NULL, setup, test_refusals, teardown);
  return g_test_run();
}

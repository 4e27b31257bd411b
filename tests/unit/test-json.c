/* The strict JSON check in front of every parser, and the escaping behind every writer. */
#include "oakuk-private.h"

#include <string.h>

static void expect_ok(const char *text) {
  oakuk_error *e = NULL;
  int rc = oakuk_json_check(text, strlen(text), 0, &e);
  if (rc != OAKUK_OK)
    g_error("refused %s: %s", text, oakuk_error_message(e));
}

/* Refused with exactly this message and path. */
static void expect_fault(const char *text, size_t len, const char *message, const char *path) {
  oakuk_error *e = NULL;
  g_assert_cmpint(oakuk_json_check(text, len, 0, &e), ==, OAKUK_EINVAL);
  g_assert_nonnull(e);
  g_assert_cmpint(oakuk_error_code(e), ==, OAKUK_EINVAL);
  g_assert_cmpstr(oakuk_error_message(e), ==, message);
  g_assert_cmpstr(oakuk_error_path(e), ==, path);
  oakuk_error_free(e);
}

#define FAULT(text, message, path) expect_fault(text, sizeof(text) - 1, message, path)

static void test_valid(void) {
  static const char *const docs[] = {
      "{}",
      "[]",
      " \t\r\n{ } \n",
      "0",
      "-0",
      "-12.5e+3",
      "1E-2",
      "9223372036854775807",
      "-9223372036854775808",
      "1.7976931348623157e308",
      "true",
      "null",
      "\"\"",
      "\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u0001\\u001f\\u00e9\\ud83d\\ude00\"",
      "\"caf\xc3\xa9 \xe2\x80\xa8\"",
      "{\"a\":[1,{\"b\":[true,false,null]},\"[{\"],\"c\":{}}",
      "{\"a\":\"'\",\"b\":\"/* no comment */\"}",
  };
  for (guint i = 0; i < G_N_ELEMENTS(docs); i++)
    expect_ok(docs[i]);
}

static void test_not_json(void) {
  FAULT("", "<data>:1:1: empty document", "");
  FAULT(" \n ", "<data>:2:2: empty document", "");
  FAULT("{'a': 1}", "<data>:1:2: single quotes are not JSON", "");
  FAULT("{\"a\": 'x'}", "<data>:1:7: single quotes are not JSON (at a)", "a");
  FAULT("{\"a\": 1 /* c */}", "<data>:1:9: comments are not JSON (at a)", "a");
  FAULT("# c\n{}", "<data>:1:1: comments are not JSON", "");
  FAULT("{\"a\":1}{\"b\":2}", "<data>:1:8: unexpected data after the top-level object", "");
  FAULT("1 2", "<data>:1:3: unexpected data after the top-level value", "");
  FAULT("{\"a\":1,}", "<data>:1:8: unexpected '}', expected a member name in double quotes", "");
  FAULT("[1,]", "<data>:1:4: unexpected ']', expected a value (at [1])", "[1]");
  FAULT("[1 2]", "<data>:1:4: unexpected '2', expected ',' or ']' (at [0])", "[0]");
  FAULT("{\"a\" 1}", "<data>:1:6: unexpected '1', expected ':' after the member name (at a)", "a");
  FAULT("{a:1}", "<data>:1:2: unexpected 'a', expected a member name in double quotes or '}'", "");
  FAULT("[True]", "<data>:1:2: unexpected 'T', expected a value or ']'", "");
  FAULT("[tru]", "<data>:1:2: unexpected 't', expected a value (at [0])", "[0]");
  FAULT("[NaN]", "<data>:1:2: unexpected 'N', expected a value or ']'", "");
  FAULT("{\"a\":[1,{\"b\":", "<data>:1:14: document ends inside an object (at a[1].b)", "a[1].b");
  FAULT("{\"a\":[1", "<data>:1:8: document ends inside an array (at a)", "a");
  FAULT("\"abc", "<data>:1:1: string never ends", "");
  FAULT("\xef\xbb\xbf{}", "<data>:1:1: unexpected byte 0xef, expected a value", "");
}

static void test_numbers(void) {
  FAULT("[01]", "<data>:1:3: unexpected '1', expected ',' or ']' (at [0])", "[0]");
  FAULT("[-]", "<data>:1:2: invalid number (a digit must follow '-') (at [0])", "[0]");
  FAULT("[1.]", "<data>:1:2: invalid number (a digit must follow '.') (at [0])", "[0]");
  FAULT("[1e]", "<data>:1:2: invalid number (a digit must follow the exponent) (at [0])", "[0]");
  FAULT("[+1]", "<data>:1:2: unexpected '+', expected a value or ']'", "");
  FAULT("{\"n\":9223372036854775808}",
        "<data>:1:6: integer 9223372036854775808 is out of range (64 bits) (at n)", "n");
  FAULT("{\"n\":1e999}", "<data>:1:6: number out of range (at n)", "n");
  g_autoptr(GString) s = g_string_new("[0.");
  for (int i = 0; i < 300; i++)
    g_string_append_c(s, '1');
  g_string_append_c(s, ']');
  expect_fault(s->str, s->len, "<data>:1:2: number longer than 255 characters (at [0])", "[0]");
}

static void test_strings(void) {
  FAULT("{\"a\":\"x\x1fy\"}",
        "<data>:1:8: raw control character 0x1f in a string (JSON writes it \\u001f) (at a)", "a");
  FAULT("[\"a\\u0000b\"]",
        "<data>:1:4: \\u0000 (NUL) in a string is refused: the string would end there (at [0])", "[0]");
  FAULT("{\"args\":[\"ok\",\"a\\u0000 b\"]}",
        "<data>:1:17: \\u0000 (NUL) in a string is refused: the string would end there (at args[1])",
        "args[1]");
  FAULT("[\"\\ud800\"]",
        "<data>:1:3: invalid \\u escape (4 hex digits; a UTF-16 surrogate needs its pair) (at [0])", "[0]");
  FAULT("[\"\\udc00\\ud800\"]",
        "<data>:1:3: invalid \\u escape (4 hex digits; a UTF-16 surrogate needs its pair) (at [0])", "[0]");
  FAULT("[\"\\ud800\\u0041\"]",
        "<data>:1:3: invalid \\u escape (4 hex digits; a UTF-16 surrogate needs its pair) (at [0])", "[0]");
  /* json-glib would read past the closing quote and lose track of strings. */
  FAULT("[\"\\udF\"]",
        "<data>:1:3: invalid \\u escape (4 hex digits; a UTF-16 surrogate needs its pair) (at [0])", "[0]");
  FAULT("[\"\\x41\"]", "<data>:1:3: invalid escape '\\x' (at [0])", "[0]");
  FAULT("[\"\\'\"]", "<data>:1:3: invalid escape '\\'' (at [0])", "[0]");
  /* A key is a string too; its faults are the object's. */
  FAULT("{\"k\\u0000\":1}", "<data>:1:4: \\u0000 (NUL) in a string is refused: the string would end there",
        "");
  FAULT("{\"a\\u0000\"", "<data>:1:4: \\u0000 (NUL) in a string is refused: the string would end there", "");
}

static void test_bytes(void) {
  static const char nul[] = "{\"a\":\"x\0y\"}";
  expect_fault(nul, sizeof nul - 1, "<data>:1:8: NUL byte at offset 7", "");
  FAULT("{\"a\":\"\xff\"}", "<data>:1:7: not valid UTF-8 (at byte offset 6)", "");
  FAULT("{\"a\":\"\xc0\xaf\"}", "<data>:1:7: not valid UTF-8 (at byte offset 6)", "");
  /* Columns count characters, lines count newlines. */
  FAULT("{\n  \"\xc3\xa9\xc3\xa9\": x}", "<data>:2:9: unexpected 'x', expected a value (at \xc3\xa9\xc3\xa9)",
        "\xc3\xa9\xc3\xa9");
  /* Only len bytes are looked at. */
  g_assert_cmpint(oakuk_json_check("{}garbage", 2, 0, NULL), ==, OAKUK_OK);
  g_assert_cmpint(oakuk_json_check(NULL, 0, 0, NULL), ==, OAKUK_EINVAL);
}

static char *nested(const char *open, guint levels) {
  GString *s = g_string_new(NULL);
  for (guint i = 0; i < levels; i++)
    g_string_append(s, open);
  g_string_append(s, "1");
  for (guint i = 0; i < levels; i++)
    g_string_append_c(s, open[0] == '[' ? ']' : '}');
  return g_string_free(s, FALSE);
}

static void test_depth(void) {
  g_autofree char *ok = nested("[", 64);
  expect_ok(ok);
  g_autofree char *deep = nested("[", 65);
  oakuk_error *e = NULL;
  g_assert_cmpint(oakuk_json_check(deep, strlen(deep), 0, &e), ==, OAKUK_EINVAL);
  g_assert_nonnull(strstr(oakuk_error_message(e), "<data>:1:65: nests arrays/objects deeper than 64 levels"));
  oakuk_error_free(e);
  /* The caller's own limit. */
  g_autofree char *objs = nested("{\"k\":", 3);
  g_assert_cmpint(oakuk_json_check(objs, strlen(objs), 3, NULL), ==, OAKUK_OK);
  e = NULL;
  g_assert_cmpint(oakuk_json_check(objs, strlen(objs), 2, &e), ==, OAKUK_EINVAL);
  g_assert_cmpstr(oakuk_error_message(e), ==,
                  "<data>:1:11: nests arrays/objects deeper than 2 levels (at k.k)");
  g_assert_cmpstr(oakuk_error_path(e), ==, "k.k");
  oakuk_error_free(e);
  /* The attack that crashed the root: a single-quoted string hid a quote from naive bracket counting
   * and json-glib recursed to death. Refused at the quote, in constant stack. */
  g_autoptr(GString) s = g_string_new("{\"a\":'\"',\"b\":");
  for (int i = 0; i < 600000; i++)
    g_string_append_c(s, '[');
  expect_fault(s->str, s->len, "<data>:1:6: single quotes are not JSON (at a)", "a");
  /* And without the quote trick: a million brackets stop at the limit. */
  g_string_assign(s, "");
  for (int i = 0; i < 1000000; i++)
    g_string_append_c(s, '[');
  e = NULL;
  g_assert_cmpint(oakuk_json_check(s->str, s->len, 0, &e), ==, OAKUK_EINVAL);
  g_assert_nonnull(strstr(oakuk_error_message(e), "deeper than 64"));
  oakuk_error_free(e);
  /* A long member name is shortened in the path on a character boundary. */
  g_autoptr(GString) key = g_string_new("{\"");
  for (int i = 0; i < 40; i++)
    g_string_append(key, "\xc3\xa9");
  g_string_append(key, "\": x}");
  e = NULL;
  g_assert_cmpint(oakuk_json_check(key->str, key->len, 0, &e), ==, OAKUK_EINVAL);
  g_assert_true(g_utf8_validate(oakuk_error_path(e), -1, NULL));
  g_assert_true(g_str_has_suffix(oakuk_error_path(e), "\xc3\xa9…"));
  g_assert_cmpuint(strlen(oakuk_error_path(e)), ==, 48 + strlen("…"));
  oakuk_error_free(e);
}

/* The private precheck adds the size limit and the "malformed JSON: " prefix callers show. */
static void test_precheck(void) {
  g_autoptr(GError) err = NULL;
  g_assert_false(oakuk_json_precheck("{\"a\":'x'}", 9, &err));
  g_assert_cmpstr(err->message, ==, "malformed JSON: <data>:1:6: single quotes are not JSON (at a)");
  g_clear_error(&err);
  g_autofree char *big = g_malloc(OAKUK_JSON_MAX_BYTES + 1);
  memset(big, ' ', OAKUK_JSON_MAX_BYTES + 1);
  big[0] = '1';
  g_assert_false(oakuk_json_precheck(big, OAKUK_JSON_MAX_BYTES + 1, &err));
  g_assert_nonnull(strstr(err->message, "the limit is 1048576 bytes"));
  g_assert_true(oakuk_json_precheck(big, OAKUK_JSON_MAX_BYTES, NULL));
}

static void test_repair(void) {
  /* json-glib 1.6 writes 0x1f raw: a reply holding it would not be JSON. */
  g_autoptr(JsonNode) n =
      json_from_string("{\"a\":\"x\\u001fy\\u0001\\n\\\"\\\\\",\"b\":[\"\\u001f\"]}", NULL);
  g_assert_nonnull(n);
  g_autofree char *raw = json_to_string(n, FALSE);
  g_assert_nonnull(strchr(raw, 0x1f));
  g_assert_cmpint(oakuk_json_check(raw, strlen(raw), 0, NULL), ==, OAKUK_EINVAL);
  g_autofree char *out = oakuk_json_node_to_string(n, FALSE);
  g_assert_cmpstr(out, ==, "{\"a\":\"x\\u001fy\\u0001\\n\\\"\\\\\",\"b\":[\"\\u001f\"]}");
  g_assert_cmpint(oakuk_json_check(out, strlen(out), 0, NULL), ==, OAKUK_OK);
  /* It round-trips: the parsed value is the original string. */
  g_autoptr(JsonNode) back = json_from_string(out, NULL);
  g_assert_cmpstr(json_object_get_string_member(json_node_get_object(back), "a"), ==, "x\x1fy\x01\n\"\\");
  /* Pretty output keeps its newlines between members. */
  g_autofree char *pretty = oakuk_json_node_to_string(n, TRUE);
  g_assert_nonnull(strchr(pretty, '\n'));
  g_assert_cmpint(oakuk_json_check(pretty, strlen(pretty), 0, NULL), ==, OAKUK_OK);
  /* Every control character, through the public function. */
  for (int c = 1; c < 0x20; c++) {
    char in[8] = {'[', '"', (char)c, '"', ']', '\0'};
    g_autofree char *esc = oakuk_json_repair(in, 5);
    g_autofree char *want = g_strdup_printf("[\"\\u%04x\"]", c);
    g_assert_cmpstr(esc, ==, want);
  }
  g_autofree char *empty = oakuk_json_repair("", 0);
  g_assert_cmpstr(empty, ==, "");
  /* json-glib 1.6 writes 1e308 as "1e+308.0" (found by tests/fuzz/fuzz-json.c). */
  g_autoptr(JsonNode) big = json_from_string("[1e308,-2.5E-7,1e5,10.0,\"1e5.0\"]", NULL);
  g_autofree char *big_raw = json_to_string(big, FALSE);
  g_assert_nonnull(strstr(big_raw, "e+308.0"));
  g_autofree char *big_out = oakuk_json_node_to_string(big, FALSE);
  g_assert_cmpint(oakuk_json_check(big_out, strlen(big_out), 0, NULL), ==, OAKUK_OK);
  g_assert_null(strstr(big_out, "e+308.0"));
  g_assert_nonnull(strstr(big_out, "\"1e5.0\"")); /* strings are left alone */
  g_autoptr(JsonNode) back_big = json_from_string(big_out, NULL);
  g_assert_cmpfloat(json_array_get_double_element(json_node_get_array(back_big), 0), ==, 1e308);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/json/valid", test_valid);
  g_test_add_func("/json/not-json", test_not_json);
  g_test_add_func("/json/numbers", test_numbers);
  g_test_add_func("/json/strings", test_strings);
  g_test_add_func("/json/bytes", test_bytes);
  g_test_add_func("/json/depth", test_depth);
  g_test_add_func("/json/precheck", test_precheck);
  g_test_add_func("/json/repair", test_repair);
  return g_test_run();
}

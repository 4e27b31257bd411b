/* libFuzzer harness for the one JSON guard (lib/json-check.c): whatever it accepts, json-glib must
 * parse, and what the library writes back must pass the guard again; text it accepts has no raw
 * control character in a string, so escaping it changes nothing. */
#include "oakuk-private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *text = (const char *)data;
  char *escaped = oakuk_json_repair(text, size);
  oakuk_error *e = NULL;
  if (oakuk_json_check(text, size, 0, &e) != OAKUK_OK) {
    if (e == NULL || oakuk_error_code(e) != OAKUK_EINVAL ||
        strncmp(oakuk_error_message(e), "<data>:", 7) != 0)
      abort();
    oakuk_error_free(e);
    oakuk_free(escaped);
    return 0;
  }
  if (strlen(escaped) != size || memcmp(escaped, text, size) != 0)
    abort();
  oakuk_free(escaped);
  GError *err = NULL;
  JsonNode *root = oakuk_json_parse(text, size, &err);
  if (root == NULL) {
    fprintf(stderr, "accepted by the guard, refused by json-glib: %s\n", err ? err->message : "?");
    abort();
  }
  char *out = oakuk_json_node_to_string(root, size % 2 == 0);
  if (oakuk_json_check(out, strlen(out), 0, NULL) != OAKUK_OK) {
    fprintf(stderr, "written back as invalid JSON: %s\n", out);
    abort();
  }
  g_free(out);
  json_node_unref(root);
  return 0;
}

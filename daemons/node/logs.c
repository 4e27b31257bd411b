/* Instance logs for `oakuk logs`: the tail of an instance's console (a unikernel's serial log, a
 * container's output), where its runtime keeps it, on request of the cluster. */
#include "logs.h"

#include "daemon-common.h"

#include <oakuk/oakuk.h>

#include <string.h>

/* How much of a log's end is read at most, and how much text a reply carries at most (MQTT). */
#define TAIL_BYTES (512 * 1024)

static gboolean valid_token(const char *s, gsize max, gboolean dots) {
  gsize len = strlen(s);
  if (len == 0 || len > max || s[0] == '.')
    return FALSE;
  for (const char *p = s; *p; p++)
    if (!g_ascii_isalnum(*p) && *p != '-' && *p != '_' && !(dots && *p == '.'))
      return FALSE;
  return TRUE;
}

static const char *str_member(JsonObject *o, const char *key) {
  JsonNode *n = json_object_get_member(o, key);
  return n != NULL && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
             ? json_node_get_string(n)
             : NULL;
}

/* The last max_lines lines of the console's last TAIL_BYTES, as liboakuk's console module cleans
 * them: no escape sequences, NULs or other control bytes, valid UTF-8. */
static gboolean tail_file(const char *path, gint64 max_lines, JsonArray *out, GError **error) {
  char *text = NULL;
  oakuk_error *err = NULL;
  if (oakuk_console_tail(&text, path, (uint32_t)max_lines, TAIL_BYTES, 0, &err) != 0) {
    gboolean missing = oakuk_error_code(err) == OAKUK_ENOTFOUND;
    if (!missing)
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s", oakuk_error_message(err));
    oakuk_error_free(err);
    return missing; /* no console yet: no lines */
  }
  if (*text) {
    g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
    for (char **l = lines; *l; l++)
      json_array_add_string_element(out, *l);
  }
  oakuk_free(text);
  return TRUE;
}

static char *reply_text(const char *request_id, const char *instance, JsonArray *lines, const char *problem) {
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "request_id", request_id);
  json_object_set_string_member(o, "instance", instance ? instance : "");
  if (problem != NULL)
    json_object_set_string_member(o, "error", problem);
  else
    json_object_set_array_member(o, "lines", json_array_ref(lines));
  g_autoptr(JsonNode) n = json_node_init_object(json_node_alloc(), o);
  return od_json_to_string(n, FALSE);
}

char *node_logs_reply(NodeConsoleLookup lookup, gpointer lookup_data, const char *payload, gsize len,
                      GError **error) {
  g_autoptr(JsonNode) root = od_json_parse(payload, (gssize)len, error);
  if (root == NULL)
    return NULL;
  JsonObject *o = JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  const char *id = o ? str_member(o, "request_id") : NULL;
  if (id == NULL || !valid_token(id, 64, FALSE)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "request_id: missing, or not 1-64 letters, digits, '-' or '_' (logs request dropped)");
    return NULL;
  }
  const char *instance = str_member(o, "instance");
  if (instance == NULL || !valid_token(instance, 255, TRUE))
    return reply_text(id, instance, NULL, "instance: missing or not a valid instance name");
  gint64 lines = NODE_LOGS_DEFAULT_LINES;
  JsonNode *ln = json_object_get_member(o, "lines");
  if (ln != NULL) {
    if (!JSON_NODE_HOLDS_VALUE(ln) || json_node_get_value_type(ln) != G_TYPE_INT64 ||
        json_node_get_int(ln) < 1 || json_node_get_int(ln) > NODE_LOGS_MAX_LINES)
      return reply_text(id, instance, NULL, "lines: not an integer in [1, 10000]");
    lines = json_node_get_int(ln);
  }
  g_autofree char *path = lookup(instance, lookup_data);
  if (path == NULL) {
    g_autofree char *m = g_strdup_printf("no instance %s on this node", instance);
    return reply_text(id, instance, NULL, m);
  }
  g_autoptr(JsonArray) out = json_array_new();
  g_autoptr(GError) local = NULL;
  if (!tail_file(path, lines, out, &local))
    return reply_text(id, instance, NULL, local->message);
  return reply_text(id, instance, out, NULL);
}

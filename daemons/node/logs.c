/* Instance logs for `oakuk logs`: the tail of an instance's serial console or container output,
 * read from the node's state directory on request of the cluster. */
#include "logs.h"

#include "daemon-common.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* The last max_lines lines of the file's last TAIL_BYTES, as valid UTF-8 without CRs. */
static gboolean tail_file(const char *path, gint64 max_lines, JsonArray *out, GError **error) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "open %s: %s", path, g_strerror(e));
    return FALSE;
  }
  struct stat st;
  off_t start = fstat(fd, &st) == 0 && st.st_size > TAIL_BYTES ? st.st_size - TAIL_BYTES : 0;
  g_autofree char *buf = g_malloc(TAIL_BYTES + 1);
  ssize_t got = pread(fd, buf, TAIL_BYTES, start);
  int e = errno;
  close(fd);
  if (got < 0) {
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "read %s: %s", path, g_strerror(e));
    return FALSE;
  }
  /* CRLF and lone CR end lines too; NULs would cut the JSON string. */
  gsize w = 0;
  for (ssize_t i = 0; i < got; i++) {
    if (buf[i] == '\r' && i + 1 < got && buf[i + 1] == '\n')
      continue;
    buf[w++] = buf[i] == '\r' ? '\n' : buf[i] == '\0' ? ' ' : buf[i];
  }
  buf[w] = '\0';
  g_auto(GStrv) parts = g_strsplit(buf, "\n", -1);
  guint n = g_strv_length(parts);
  /* Drop the empty piece after a final newline and a partial first line of a cut file. */
  guint end = n > 0 && parts[n - 1][0] == '\0' ? n - 1 : n;
  guint first = start > 0 && end > 0 ? 1 : 0;
  g_autoptr(GPtrArray) kept = g_ptr_array_new();
  for (guint i = first; i < end; i++)
    g_ptr_array_add(kept, parts[i]);
  guint from = kept->len > (guint)max_lines ? kept->len - (guint)max_lines : 0;
  for (guint i = from; i < kept->len; i++) {
    g_autofree char *valid = g_utf8_make_valid(kept->pdata[i], -1);
    json_array_add_string_element(out, valid);
  }
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

char *node_logs_reply(const char *const *state_dirs, const char *payload, gsize len, GError **error) {
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
    if (!JSON_NODE_HOLDS_VALUE(ln) || json_node_get_value_type(ln) != G_TYPE_INT64 || json_node_get_int(ln) < 1 ||
        json_node_get_int(ln) > NODE_LOGS_MAX_LINES)
      return reply_text(id, instance, NULL, "lines: not an integer in [1, 10000]");
    lines = json_node_get_int(ln);
  }
  g_autofree char *dir = NULL;
  for (gsize i = 0; dir == NULL && state_dirs[i] != NULL; i++) {
    char *candidate = g_build_filename(state_dirs[i], "instances", instance, NULL);
    if (g_file_test(candidate, G_FILE_TEST_IS_DIR))
      dir = candidate;
    else
      g_free(candidate);
  }
  if (dir == NULL) {
    g_autofree char *m = g_strdup_printf("no instance %s on this node", instance);
    return reply_text(id, instance, NULL, m);
  }
  g_autoptr(JsonArray) out = json_array_new();
  static const char *const names[] = {"serial.log", "output.log"};
  for (gsize i = 0; i < G_N_ELEMENTS(names); i++) {
    g_autofree char *path = g_build_filename(dir, names[i], NULL);
    if (!g_file_test(path, G_FILE_TEST_EXISTS))
      continue;
    g_autoptr(GError) local = NULL;
    if (!tail_file(path, lines, out, &local))
      return reply_text(id, instance, NULL, local->message);
    break;
  }
  return reply_text(id, instance, out, NULL);
}

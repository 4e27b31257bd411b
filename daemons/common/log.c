/* Structured logging to stderr: one line per record, key=value pairs or a JSON object. */
#include "daemon-common.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char *log_daemon;
static gboolean log_json;
static gboolean log_verbose;

static const char *level_name(GLogLevelFlags level) {
  if (level & G_LOG_LEVEL_ERROR)
    return "error";
  if (level & G_LOG_LEVEL_CRITICAL)
    return "critical";
  if (level & G_LOG_LEVEL_WARNING)
    return "warning";
  if (level & G_LOG_LEVEL_MESSAGE)
    return "notice";
  if (level & G_LOG_LEVEL_INFO)
    return "info";
  return "debug";
}

/* Text values are quoted when they contain spaces, quotes or '='; JSON values are escaped. */
static void append_kv(GString *out, const char *key, const char *value) {
  if (log_json) {
    g_autoptr(JsonNode) node = json_node_init_string(json_node_alloc(), value);
    g_autofree char *escaped = od_json_to_string(node, FALSE);
    g_string_append_printf(out, "%s\"%s\":%s", out->len > 1 ? "," : "", key, escaped);
    return;
  }
  if (out->len > 0)
    g_string_append_c(out, ' ');
  g_string_append_printf(out, "%s=", key);
  gboolean plain = *value != '\0';
  for (const char *p = value; *p && plain; p++)
    plain = (guchar)*p > ' ' && *p != '"' && *p != '=' && *p != 0x7f;
  if (plain) {
    g_string_append(out, value);
    return;
  }
  /* Control characters are escaped so that no value can forge a log line or a terminal sequence. */
  g_string_append_c(out, '"');
  for (const char *p = value; *p; p++) {
    if (*p == '"' || *p == '\\')
      g_string_append_c(out, '\\');
    if (*p == '\n')
      g_string_append(out, "\\n");
    else if ((guchar)*p < ' ' || *p == 0x7f)
      g_string_append_printf(out, "\\x%02x", (guchar)*p);
    else
      g_string_append_c(out, *p);
  }
  g_string_append_c(out, '"');
}

static GLogWriterOutput writer(GLogLevelFlags level, const GLogField *fields, gsize n, gpointer data) {
  if (!log_verbose && (level & G_LOG_LEVEL_DEBUG))
    return G_LOG_WRITER_HANDLED;
  g_autoptr(GDateTime) now = g_date_time_new_now_utc();
  g_autofree char *ts = g_date_time_format_iso8601(now);
  g_autoptr(GString) out = g_string_new(log_json ? "{" : "");
  append_kv(out, "time", ts);
  append_kv(out, "level", level_name(level));
  append_kv(out, "daemon", log_daemon ? log_daemon : g_get_prgname());
  const char *message = NULL;
  for (gsize i = 0; i < n; i++) {
    if (strcmp(fields[i].key, "MESSAGE") == 0) {
      message = fields[i].value;
      continue;
    }
    /* GLib's own bookkeeping fields are upper case; ours are lower case. */
    if (fields[i].length != -1 || g_ascii_isupper(fields[i].key[0]))
      continue;
    append_kv(out, fields[i].key, fields[i].value);
  }
  append_kv(out, "msg", message ? message : "");
  if (log_json)
    g_string_append_c(out, '}');
  g_string_append_c(out, '\n');
  if (write(STDERR_FILENO, out->str, out->len) < 0)
    return G_LOG_WRITER_UNHANDLED;
  return G_LOG_WRITER_HANDLED;
}

void od_log_init(const char *daemon, const char *format, gboolean verbose) {
  g_free(log_daemon);
  log_daemon = g_strdup(daemon);
  log_json = format != NULL && strcmp(format, "json") == 0;
  log_verbose = verbose;
  g_log_set_writer_func(writer, NULL, NULL);
}

static void log_fields(GLogLevelFlags level, const char *event, GPtrArray *kv, const char *message) {
  g_autoptr(GArray) fields = g_array_new(FALSE, FALSE, sizeof(GLogField));
  GLogField f = {"MESSAGE", message, -1};
  g_array_append_val(fields, f);
  GLogField d = {"GLIB_DOMAIN", G_LOG_DOMAIN, -1};
  g_array_append_val(fields, d);
  GLogField e = {"event", event, -1};
  g_array_append_val(fields, e);
  for (guint i = 0; kv != NULL && i + 1 < kv->len; i += 2) {
    GLogField x = {g_ptr_array_index(kv, i), g_ptr_array_index(kv, i + 1), -1};
    if (x.value == NULL)
      x.value = "";
    g_array_append_val(fields, x);
  }
  g_log_structured_array(level, (GLogField *)fields->data, fields->len);
}

void od_log(GLogLevelFlags level, const char *event, ...) {
  g_autoptr(GPtrArray) kv = g_ptr_array_new();
  va_list ap;
  va_start(ap, event);
  const char *k;
  const char *message = "";
  while ((k = va_arg(ap, const char *)) != NULL) {
    const char *v = va_arg(ap, const char *);
    if (strcmp(k, "msg") == 0) {
      message = v;
      continue;
    }
    g_ptr_array_add(kv, (gpointer)k);
    g_ptr_array_add(kv, (gpointer)v);
  }
  va_end(ap);
  log_fields(level, event, kv, message);
}

void od_logf(GLogLevelFlags level, const char *event, const char *const *kv, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *message = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_autoptr(GPtrArray) arr = g_ptr_array_new();
  for (gsize i = 0; kv != NULL && kv[i] != NULL && kv[i + 1] != NULL; i += 2) {
    g_ptr_array_add(arr, (gpointer)kv[i]);
    g_ptr_array_add(arr, (gpointer)kv[i + 1]);
  }
  log_fields(level, event, arr, message);
}

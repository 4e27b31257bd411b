/* Structured logging: one line per record on stderr, key=value pairs or a JSON object; or, under
 * systemd (stderr connected to the journal) or with --log-format journal, one journal entry per
 * record through the journal's native protocol, with its priority and every key as a field. */
#include "daemon-common.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char *log_daemon;
static gboolean log_json;
static gboolean log_journal;
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

static const char *level_priority(GLogLevelFlags level) {
  if (level & G_LOG_LEVEL_ERROR)
    return "3";
  if (level & G_LOG_LEVEL_CRITICAL)
    return "2";
  if (level & G_LOG_LEVEL_WARNING)
    return "4";
  if (level & G_LOG_LEVEL_MESSAGE)
    return "5";
  if (level & G_LOG_LEVEL_INFO)
    return "6";
  return "7";
}

/* A key as a journal field name: OAKUK_ and the key upper-cased, anything but letters and digits
 * as '_' (journal field names are [A-Z0-9_], and the prefix keeps ours apart from the journal's
 * own, such as MESSAGE or PRIORITY). */
static char *journal_key(const char *key) {
  char *k = g_strconcat("OAKUK_", key, NULL);
  for (char *p = k + 6; *p; p++)
    *p = g_ascii_isalnum(*p) ? g_ascii_toupper(*p) : '_';
  return k;
}

/* One journal entry: MESSAGE is the record's text line without what the journal keeps itself
 * (time, level, daemon), so `journalctl` shows every key; each key is also a field of its own
 * (journalctl OAKUK_EVENT=deploy). Values go as they are: the journal's protocol is binary-safe. */
static GLogWriterOutput write_journal(GLogLevelFlags level, const GLogField *fields, gsize n) {
  g_autoptr(GString) line = g_string_new("");
  g_autoptr(GArray) out = g_array_new(FALSE, FALSE, sizeof(GLogField));
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
  const char *message = "";
  for (gsize i = 0; i < n; i++) {
    if (strcmp(fields[i].key, "MESSAGE") == 0 && fields[i].length == -1) {
      message = fields[i].value;
      continue;
    }
    if (fields[i].length != -1 || g_ascii_isupper(fields[i].key[0]))
      continue;
    append_kv(line, fields[i].key, fields[i].value);
    char *name = journal_key(fields[i].key);
    g_ptr_array_add(names, name);
    GLogField f = {name, fields[i].value, -1};
    g_array_append_val(out, f);
  }
  append_kv(line, "msg", message);
  GLogField head[] = {{"MESSAGE", line->str, -1},
                      {"PRIORITY", level_priority(level), -1},
                      {"SYSLOG_IDENTIFIER", log_daemon ? log_daemon : g_get_prgname(), -1},
                      {"OAKUK_MSG", message, -1}};
  g_array_prepend_vals(out, head, G_N_ELEMENTS(head));
  return g_log_writer_journald(level, (GLogField *)out->data, out->len, NULL);
}

static GLogWriterOutput writer(GLogLevelFlags level, const GLogField *fields, gsize n, gpointer data) {
  if (!log_verbose && (level & G_LOG_LEVEL_DEBUG))
    return G_LOG_WRITER_HANDLED;
  /* A record the journal did not take goes to stderr: never lost. */
  if (log_journal && write_journal(level, fields, n) == G_LOG_WRITER_HANDLED)
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
  /* By default, the journal when stderr is connected to it (systemd sets $JOURNAL_STREAM). */
  log_journal = format != NULL ? strcmp(format, "journal") == 0 : g_log_writer_is_journald(STDERR_FILENO);
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

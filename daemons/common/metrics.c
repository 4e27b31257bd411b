/* Prometheus text exposition (format 0.0.4): HELP and TYPE lines, build info, histograms. */
#include "daemon-common.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Prometheus' default buckets: from a cached GET (milliseconds) to a request held for a slow
 * cluster (seconds). */
const double od_http_duration_bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
const gsize od_http_duration_bounds_len = G_N_ELEMENTS(od_http_duration_bounds);

struct OdHistogram {
  char *name;
  char *help;
  double *bounds;
  gsize n_bounds;
  GHashTable *series; /* label text ("" or 'k="v",...') -> Series */
};

typedef struct {
  guint64 *buckets; /* cumulative at write time; per bucket here */
  guint64 count;
  double sum;
} Series;

static void series_free(gpointer data) {
  Series *s = data;
  g_free(s->buckets);
  g_free(s);
}

void od_metrics_header(GString *out, const char *name, const char *type, const char *help) {
  g_string_append_printf(out, "# HELP %s ", name);
  /* HELP text escapes only backslash and newline. */
  for (const char *p = help; *p; p++) {
    if (*p == '\\')
      g_string_append(out, "\\\\");
    else if (*p == '\n')
      g_string_append(out, "\\n");
    else
      g_string_append_c(out, *p);
  }
  g_string_append_printf(out, "\n# TYPE %s %s\n", name, type);
}

void od_metrics_value(GString *out, const char *name, const char *type, const char *help, gint64 value) {
  od_metrics_header(out, name, type, help);
  g_string_append_printf(out, "%s %" G_GINT64_FORMAT "\n", name, value);
}

char *od_metrics_label_escape(const char *value) {
  GString *s = g_string_new(NULL);
  for (const char *p = value ? value : ""; *p; p++) {
    if (*p == '\\' || *p == '"')
      g_string_append_c(s, '\\');
    if (*p == '\n')
      g_string_append(s, "\\n");
    else
      g_string_append_c(s, *p);
  }
  return g_string_free(s, FALSE);
}

void od_metrics_build_info(GString *out, const char *daemon, const char *version) {
  g_autofree char *d = od_metrics_label_escape(daemon);
  g_autofree char *v = od_metrics_label_escape(version);
  od_metrics_header(out, "oakuk_build_info", "gauge", "The daemon and its version; always 1");
  g_string_append_printf(out, "oakuk_build_info{daemon=\"%s\",version=\"%s\"} 1\n", d, v);
}

OdHistogram *od_histogram_new(const char *name, const char *help, const double *bounds, gsize n_bounds) {
  OdHistogram *h = g_new0(OdHistogram, 1);
  h->name = g_strdup(name);
  h->help = g_strdup(help);
  h->bounds = g_memdup2(bounds, n_bounds * sizeof *bounds);
  h->n_bounds = n_bounds;
  h->series = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, series_free);
  return h;
}

void od_histogram_free(OdHistogram *h) {
  if (h == NULL)
    return;
  g_hash_table_unref(h->series);
  g_free(h->bounds);
  g_free(h->help);
  g_free(h->name);
  g_free(h);
}

void od_histogram_observe(OdHistogram *h, const char *labels, double value) {
  const char *key = labels ? labels : "";
  Series *s = g_hash_table_lookup(h->series, key);
  if (s == NULL) {
    s = g_new0(Series, 1);
    s->buckets = g_new0(guint64, h->n_bounds);
    g_hash_table_insert(h->series, g_strdup(key), s);
  }
  for (gsize k = 0; k < h->n_bounds; k++)
    if (value <= h->bounds[k]) {
      s->buckets[k]++;
      break;
    }
  s->count++;
  s->sum += value;
}

static void append_le(GString *out, const char *name, const char *labels, const char *le, guint64 n) {
  g_string_append_printf(out, "%s_bucket{%s%sle=\"%s\"} %" G_GUINT64_FORMAT "\n", name, labels,
                         *labels ? "," : "", le, n);
}

static void append_series(OdHistogram *h, GString *out, const char *labels, const Series *s) {
  guint64 cumulative = 0;
  for (gsize k = 0; k < h->n_bounds; k++) {
    char le[G_ASCII_DTOSTR_BUF_SIZE];
    cumulative += s->buckets[k];
    append_le(out, h->name, labels, g_ascii_formatd(le, sizeof le, "%.9g", h->bounds[k]), cumulative);
  }
  append_le(out, h->name, labels, "+Inf", s->count);
  char sum[G_ASCII_DTOSTR_BUF_SIZE];
  const char *open = *labels ? "{" : "", *close = *labels ? "}" : "";
  g_string_append_printf(out, "%s_sum%s%s%s %s\n", h->name, open, labels, close,
                         g_ascii_formatd(sum, sizeof sum, "%.9g", s->sum));
  g_string_append_printf(out, "%s_count%s%s%s %" G_GUINT64_FORMAT "\n", h->name, open, labels, close,
                         s->count);
}

void od_histogram_write(OdHistogram *h, GString *out) {
  od_metrics_header(out, h->name, "histogram", h->help);
  g_autoptr(GList) keys = g_list_sort(g_hash_table_get_keys(h->series), (GCompareFunc)strcmp);
  for (GList *l = keys; l != NULL; l = l->next)
    append_series(h, out, l->data, g_hash_table_lookup(h->series, l->data));
}

/* Seconds since the epoch at which the kernel booted ("btime" of /proc/stat); 0 if unknown. */
static gint64 boot_time_s(void) {
  g_autofree char *stat = NULL;
  if (!g_file_get_contents("/proc/stat", &stat, NULL, NULL))
    return 0;
  const char *b = strstr(stat, "\nbtime ");
  return b ? g_ascii_strtoll(b + 7, NULL, 10) : 0;
}

static guint open_fds(void) {
  g_autoptr(GDir) dir = g_dir_open("/proc/self/fd", 0, NULL);
  guint n = 0;
  while (dir != NULL && g_dir_read_name(dir) != NULL)
    n++;
  return n > 0 ? n - 1 : 0; /* not the one g_dir_open holds */
}

void od_metrics_process(GString *out) {
  g_autofree char *stat = NULL;
  const char *end = NULL;
  if (!g_file_get_contents("/proc/self/stat", &stat, NULL, NULL) || (end = strrchr(stat, ')')) == NULL)
    return;
  /* The fields after the command name, from the state (field 3 of proc(5)) on. */
  g_auto(GStrv) f = g_strsplit(end + 2, " ", 0);
  if (g_strv_length(f) < 22)
    return;
  double tick = (double)sysconf(_SC_CLK_TCK);
  double cpu = (g_ascii_strtod(f[11], NULL) + g_ascii_strtod(f[12], NULL)) / tick;
  char buf[G_ASCII_DTOSTR_BUF_SIZE];
  od_metrics_header(out, "process_cpu_seconds_total", "counter",
                    "User and system CPU time spent, in seconds");
  g_string_append_printf(out, "process_cpu_seconds_total %s\n",
                         g_ascii_formatd(buf, sizeof buf, "%.2f", cpu));
  od_metrics_value(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes",
                   g_ascii_strtoll(f[21], NULL, 10) * sysconf(_SC_PAGESIZE));
  od_metrics_value(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes",
                   g_ascii_strtoll(f[20], NULL, 10));
  od_metrics_value(out, "process_open_fds", "gauge", "Open file descriptors", open_fds());
  od_metrics_header(out, "process_start_time_seconds", "gauge", "Start time of the process since the epoch");
  double start = (double)boot_time_s() + g_ascii_strtod(f[19], NULL) / tick;
  g_string_append_printf(out, "process_start_time_seconds %s\n",
                         g_ascii_formatd(buf, sizeof buf, "%.2f", start));
}

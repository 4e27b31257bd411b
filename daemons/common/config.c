/* Command-line options common to every daemon and typed reads from the GKeyFile config. */
#include "daemon-common.h"

#include <errno.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

G_DEFINE_QUARK(oakuk - daemon - error - quark, od_error)

/* glibc's malloc, tuned for small long-running daemons:
 * - fixed mmap and trim thresholds: by default both grow after a large block is freed (up to 2× its
 *   size), after which a burst of work (an image download, a JSON listing) leaves megabytes in an
 *   arena that are never given back;
 * - at most two arenas instead of one per thread that ever allocated (GLib's workers, the plumbing
 *   thread): each keeps its own free memory and none is busy enough to need its own. */
static void od_malloc_tune(void) {
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  mallopt(M_TRIM_THRESHOLD, 128 * 1024);
  mallopt(M_ARENA_MAX, 2);
}

gboolean od_options_parse(int *argc, char ***argv, const char *summary, const GOptionEntry *entries,
                          OdCommonOptions *common, GKeyFile **config, GError **error) {
  od_malloc_tune();
  const GOptionEntry common_entries[] = {
      {"config", 'c', 0, G_OPTION_ARG_FILENAME, &common->config_path, "Configuration file (GKeyFile)",
       "FILE"},
      {"log-format", 0, 0, G_OPTION_ARG_STRING, &common->log_format,
       "Log as 'text' (key=value lines), 'json' (lines) or 'journal' (systemd's journal; the default "
       "when stderr is connected to it)",
       "FORMAT"},
      {"verbose", 'v', 0, G_OPTION_ARG_NONE, &common->verbose, "Log debug messages too", NULL},
      {"version", 'V', 0, G_OPTION_ARG_NONE, &common->version, "Print the name and version and exit", NULL},
      G_OPTION_ENTRY_NULL};
  g_autoptr(GOptionContext) ctx = g_option_context_new(NULL);
  g_option_context_set_summary(ctx, summary);
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_option_context_add_main_entries(ctx, common_entries, NULL);
  if (!g_option_context_parse(ctx, argc, argv, error))
    return FALSE;
  if (*argc > 1) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "unexpected argument '%s' (see --help)", (*argv)[1]);
    return FALSE;
  }
  if (common->log_format != NULL && strcmp(common->log_format, "text") != 0 &&
      strcmp(common->log_format, "json") != 0 && strcmp(common->log_format, "journal") != 0) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "--log-format: '%s' is not 'text', 'json' or 'journal'",
                common->log_format);
    return FALSE;
  }
  g_autoptr(GKeyFile) kf = g_key_file_new();
  if (common->config_path != NULL && !common->version) {
    g_autoptr(GError) local = NULL;
    if (!g_key_file_load_from_file(kf, common->config_path, G_KEY_FILE_NONE, &local)) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "config %s: %s", common->config_path, local->message);
      return FALSE;
    }
  }
  *config = g_steal_pointer(&kf);
  return TRUE;
}

void od_common_options_clear(OdCommonOptions *common) {
  g_clear_pointer(&common->config_path, g_free);
  g_clear_pointer(&common->log_format, g_free);
}

gboolean od_config_string(GKeyFile *kf, const char *group, const char *key, const char *def, char **out,
                          GError **error) {
  if (!g_key_file_has_key(kf, group, key, NULL)) {
    *out = g_strdup(def);
    return TRUE;
  }
  g_autoptr(GError) local = NULL;
  char *v = g_key_file_get_string(kf, group, key, &local);
  if (v == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "config [%s] %s: %s", group, key, local->message);
    return FALSE;
  }
  *out = v;
  return TRUE;
}

gboolean od_config_int(GKeyFile *kf, const char *group, const char *key, gint64 def, gint64 min, gint64 max,
                       gint64 *out, GError **error) {
  if (!g_key_file_has_key(kf, group, key, NULL)) {
    *out = def;
    return TRUE;
  }
  g_autofree char *text = g_key_file_get_value(kf, group, key, NULL);
  gint64 v = 0;
  g_autoptr(GError) local = NULL;
  if (text == NULL || !g_ascii_string_to_signed(g_strstrip(text), 10, min, max, &v, &local)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "config [%s] %s: '%s' is not an integer in [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "]",
                group, key, text ? text : "", min, max);
    return FALSE;
  }
  *out = v;
  return TRUE;
}

gboolean od_config_check_keys(GKeyFile *kf, const char *path, const char *group, const char *const *keys,
                              const char *other_prefix, const char *const *other_keys, GError **error) {
  if (path == NULL)
    return TRUE;
  g_auto(GStrv) groups = g_key_file_get_groups(kf, NULL);
  for (char **g = groups; *g; g++) {
    const char *const *allowed = NULL;
    if (strcmp(*g, group) == 0)
      allowed = keys;
    else if (other_prefix != NULL && g_str_has_prefix(*g, other_prefix))
      allowed = other_keys;
    if (allowed == NULL) {
      if (other_prefix != NULL)
        g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                    "config %s: unknown group [%s] (the groups are [%s] and [%s...])", path, *g, group,
                    other_prefix);
      else
        g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                    "config %s: unknown group [%s] (the only group is [%s])", path, *g, group);
      return FALSE;
    }
    g_auto(GStrv) present = g_key_file_get_keys(kf, *g, NULL, NULL);
    for (char **k = present; k && *k; k++) {
      if (g_strv_contains(allowed, *k))
        continue;
      g_autofree char *known = g_strjoinv(", ", (char **)allowed);
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "config %s: [%s] %s: unknown key (known keys: %s)", path,
                  *g, *k, known);
      return FALSE;
    }
  }
  return TRUE;
}

gboolean od_parse_listen(const char *text, char **addr, guint16 *port, GError **error) {
  const char *colon = text ? strrchr(text, ':') : NULL;
  if (colon == NULL || colon == text) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "listen address '%s' is not ADDR:PORT", text ? text : "");
    return FALSE;
  }
  guint64 p = 0;
  if (!g_ascii_string_to_unsigned(colon + 1, 10, 1, 65535, &p, NULL)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "listen address '%s': port '%s' is not in 1..65535", text,
                colon + 1);
    return FALSE;
  }
  g_autofree char *host = g_strndup(text, colon - text);
  if (host[0] == '[' && host[strlen(host) - 1] == ']') {
    char *inner = g_strndup(host + 1, strlen(host) - 2);
    g_free(host);
    host = inner;
  }
  g_autoptr(GInetAddress) ia = g_inet_address_new_from_string(host);
  if (ia == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "listen address '%s': '%s' is not an IP address", text,
                host);
    return FALSE;
  }
  *addr = g_steal_pointer(&host);
  *port = (guint16)p;
  return TRUE;
}

/* oakuk-root: options, state directory, SQLite schema, admin account, server and signals. */
#include "root.h"

#include <arpa/inet.h>
#include <errno.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, password TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS applications (id TEXT PRIMARY KEY, user TEXT NOT NULL, name TEXT NOT NULL,"
    "  namespace TEXT NOT NULL, doc TEXT NOT NULL, created INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS services (id TEXT PRIMARY KEY, app_id TEXT NOT NULL REFERENCES "
    "applications(id)"
    "  ON DELETE CASCADE, user TEXT NOT NULL, doc TEXT NOT NULL, ms TEXT NOT NULL, explain TEXT NOT NULL "
    "DEFAULT '',"
    "  seq INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS clusters (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, location TEXT NOT "
    "NULL,"
    "  url TEXT NOT NULL, token TEXT NOT NULL, subnet_index INTEGER NOT NULL UNIQUE, subnet TEXT NOT NULL,"
    "  aggregate TEXT, received_at INTEGER NOT NULL DEFAULT 0, registered_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS join_tokens (hash TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS forwards (id INTEGER PRIMARY KEY AUTOINCREMENT, cluster_id TEXT NOT NULL,"
    "  method TEXT NOT NULL, path TEXT NOT NULL, body TEXT, service_id TEXT, instance INTEGER NOT NULL "
    "DEFAULT -1,"
    "  attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL DEFAULT 0, last_error TEXT);";

gint64 root_now_ms(void) {
  return g_get_real_time() / 1000;
}

gboolean root_begin(Root *r, GError **error) {
  return od_db_exec(r->db, "BEGIN IMMEDIATE", error);
}

gboolean root_commit(Root *r, GError **error) {
  return od_db_exec(r->db, "COMMIT", error);
}

void root_rollback(Root *r) {
  if (!sqlite3_get_autocommit(r->db))
    od_db_exec(r->db, "ROLLBACK", NULL);
}

static JsonObject *parse_object(const char *text) {
  if (text == NULL)
    return NULL;
  g_autoptr(JsonNode) node = od_json_parse(text, -1, NULL);
  if (node == NULL || !JSON_NODE_HOLDS_OBJECT(node))
    return NULL;
  return json_object_ref(json_node_get_object(node));
}

JsonObject *root_load_service(Root *r, const char *id, char **ms_json) {
  g_autoptr(sqlite3_stmt) st = od_db_prepare(r->db, "SELECT doc, ms FROM services WHERE id = ?1", NULL);
  sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
  if (sqlite3_step(st) != SQLITE_ROW)
    return NULL;
  if (ms_json != NULL)
    *ms_json = g_strdup((const char *)sqlite3_column_text(st, 1));
  return parse_object((const char *)sqlite3_column_text(st, 0));
}

gboolean root_save_service(Root *r, const char *id, JsonObject *doc, GError **error) {
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), doc);
  g_autofree char *text = od_json_to_string(node, FALSE);
  return od_db_run(r->db, error, "UPDATE services SET doc = ?2 WHERE id = ?1", id, text, NULL);
}

JsonObject *root_load_application(Root *r, const char *id) {
  g_autofree char *text = od_db_query_text(r->db, "SELECT doc FROM applications WHERE id = ?1", id, NULL);
  return parse_object(text);
}

gboolean root_save_application(Root *r, const char *id, JsonObject *doc, GError **error) {
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), doc);
  g_autofree char *text = od_json_to_string(node, FALSE);
  return od_db_run(r->db, error, "UPDATE applications SET doc = ?2 WHERE id = ?1", id, text, NULL);
}

JsonObject *root_find_instance(JsonObject *service, gint64 n, guint *index) {
  JsonArray *list = json_object_get_array_member(service, "instance_list");
  for (guint i = 0; list != NULL && i < json_array_get_length(list); i++) {
    JsonObject *inst = json_array_get_object_element(list, i);
    if (inst != NULL && json_object_get_int_member_with_default(inst, "instance_number", -1) == n) {
      if (index != NULL)
        *index = i;
      return inst;
    }
  }
  return NULL;
}

gboolean root_cluster_active(Root *r, const char *cluster_id) {
  oakuk_cluster_aggregate *agg = cluster_id ? g_hash_table_lookup(r->aggregates, cluster_id) : NULL;
  return agg != NULL && root_now_ms() - oakuk_cluster_aggregate_received_at_ms(agg) <= r->cluster_timeout_ms;
}

/* Loads the stored aggregates. A restarted root gives every cluster one timeout from its own
 * start before declaring it gone, so a root restart alone never moves instances. */
static void load_aggregates(Root *r) {
  g_autoptr(sqlite3_stmt) st = od_db_prepare(
      r->db, "SELECT id, name, aggregate, received_at FROM clusters WHERE aggregate IS NOT NULL", NULL);
  while (sqlite3_step(st) == SQLITE_ROW) {
    const char *id = (const char *)sqlite3_column_text(st, 0);
    const char *text = (const char *)sqlite3_column_text(st, 2);
    oakuk_error *err = NULL;
    oakuk_cluster_aggregate *agg = oakuk_cluster_aggregate_from_json(text, (size_t)-1, &err);
    if (agg == NULL) {
      od_log(G_LOG_LEVEL_WARNING, "aggregate-load", "cluster", id, "msg", oakuk_error_message(err), NULL);
      oakuk_error_free(err);
      continue;
    }
    oakuk_cluster_aggregate_set_identity(agg, id, (const char *)sqlite3_column_text(st, 1));
    oakuk_cluster_aggregate_set_received_at_ms(agg, MAX(sqlite3_column_int64(st, 3), r->started_ms));
    g_hash_table_replace(r->aggregates, g_strdup(id), agg);
  }
}

static gboolean set_admin_password(Root *r, GError **error) {
  g_autofree char *password = od_password_generate();
  g_autofree char *hash = od_password_hash(password);
  if (!od_db_run(r->db, error, "INSERT OR REPLACE INTO users (name, password) VALUES ('Admin', ?1)", hash,
                 NULL))
    return FALSE;
  /* Printed once, on purpose outside the structured log. */
  fprintf(stderr, "admin password: %s\n", password);
  fflush(stderr);
  return TRUE;
}

static gboolean parse_pool(Root *r, const char *pool, gint64 prefix, GError **error) {
  g_auto(GStrv) parts = g_strsplit(pool, "/", 2);
  guint64 plen = 0;
  guint32 addr = 0;
  if (g_strv_length(parts) != 2 || !g_ascii_string_to_unsigned(parts[1], 10, 8, 30, &plen, NULL) ||
      inet_pton(AF_INET, parts[0], &addr) != 1 || prefix < (gint64)plen) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "config [root] node_pool '%s' / cluster_prefix %" G_GINT64_FORMAT
                ": need an IPv4 CIDR whose prefix is at most the cluster prefix",
                pool, prefix);
    return FALSE;
  }
  r->pool_base = g_ntohl(addr) & (plen ? ~0u << (32 - plen) : 0);
  r->pool_prefix = (guint)plen;
  r->cluster_prefix = (guint)prefix;
  return TRUE;
}

static gboolean load_config(Root *r, GError **error) {
  gint64 timeout_s, prefix;
  g_autofree char *policy = NULL, *pool = NULL, *secret_file = NULL;
  if (!od_config_int(r->config, "root", "cluster_timeout_s", 15, 1, 86400, &timeout_s, error) ||
      !od_config_int(r->config, "root", "token_ttl_s", 3600, 60, 31 * 86400, &r->token_ttl_s, error) ||
      !od_config_int(r->config, "root", "refresh_ttl_s", 7 * 86400, 60, 365 * 86400, &r->refresh_ttl_s,
                     error) ||
      !od_config_int(r->config, "root", "join_token_ttl_s", 3600, 10, 365 * 86400, &r->join_token_ttl_s,
                     error) ||
      !od_config_int(r->config, "root", "forward_max_attempts", 10, 1, 1000, &r->forward_max_attempts,
                     error) ||
      !od_config_int(r->config, "root", "cluster_prefix", 20, 16, 30, &prefix, error) ||
      !od_config_string(r->config, "root", "policy", "most-free", &policy, error) ||
      !od_config_string(r->config, "root", "node_pool", "10.18.0.0/15", &pool, error) ||
      !od_config_string(r->config, "root", "cluster_secret_file", NULL, &secret_file, error))
    return FALSE;
  r->cluster_timeout_ms = timeout_s * 1000;
  if (strcmp(policy, "most-free") == 0) {
    r->policy = OAKUK_SCHED_MOST_FREE;
  } else if (strcmp(policy, "best-fit") == 0) {
    r->policy = OAKUK_SCHED_BEST_FIT;
  } else {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "config [root] policy: '%s' is neither most-free nor best-fit", policy);
    return FALSE;
  }
  if (!parse_pool(r, pool, prefix, error))
    return FALSE;
  /* A reusable registration secret is optional; one-time join tokens need none. */
  if (secret_file == NULL)
    secret_file = g_build_filename(r->state_dir, "cluster-secret", NULL);
  g_autofree char *secret = NULL;
  g_autoptr(GError) local = NULL;
  if (g_file_get_contents(secret_file, &secret, NULL, &local)) {
    g_strstrip(secret);
    if (strlen(secret) < 16) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "cluster secret %s: shorter than 16 characters",
                  secret_file);
      return FALSE;
    }
    r->cluster_secret_hash = od_sha256_hex(secret);
  } else if (!g_error_matches(local, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "cluster secret %s: %s", secret_file, local->message);
    return FALSE;
  }
  return TRUE;
}

static gboolean open_state(Root *r, gboolean reset_admin, GError **error) {
  if (g_mkdir_with_parents(r->state_dir, 0700) != 0) {
    int e = errno;
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "state dir %s: %s", r->state_dir, g_strerror(e));
    return FALSE;
  }
  g_autofree char *secret_path = g_build_filename(r->state_dir, "jwt-secret", NULL);
  gboolean created = FALSE;
  if (!od_secret_load_or_create(secret_path, r->secret, sizeof r->secret, &created, error))
    return FALSE;
  g_autofree char *db_path = g_build_filename(r->state_dir, "root.db", NULL);
  r->db = od_db_open(db_path, error);
  if (r->db == NULL || !od_db_exec(r->db, schema, error))
    return FALSE;
  g_autofree char *admin = od_db_query_text(r->db, "SELECT name FROM users WHERE name = 'Admin'", NULL);
  if (admin == NULL || reset_admin)
    return set_admin_password(r, error);
  return TRUE;
}

static gboolean on_signal(gpointer data) {
  Root *r = data;
  od_log(G_LOG_LEVEL_MESSAGE, "shutdown", "msg", "signal received, shutting down", NULL);
  g_main_loop_quit(r->loop);
  return G_SOURCE_CONTINUE;
}

static void root_free(Root *r) {
  g_clear_handle_id(&r->tick_source, g_source_remove);
  if (r->server != NULL)
    soup_server_disconnect(r->server);
  g_clear_object(&r->server);
  if (r->session != NULL)
    soup_session_abort(r->session);
  g_clear_object(&r->session);
  g_clear_pointer(&r->aggregates, g_hash_table_unref);
  g_clear_pointer(&r->reservations, oakuk_reservations_unref);
  g_clear_pointer(&r->http_counts, g_hash_table_unref);
  g_clear_pointer(&r->inflight, g_hash_table_unref);
  if (r->db != NULL)
    sqlite3_close(r->db);
  g_clear_pointer(&r->loop, g_main_loop_unref);
  g_clear_pointer(&r->config, g_key_file_unref);
  g_free(r->state_dir);
  g_free(r->cluster_secret_hash);
}

static gboolean start_server(Root *r, const char *listen, GError **error) {
  r->server = soup_server_new("server-header", "oakuk-root", NULL);
  root_api_register(r);
  return od_http_server_listen(r->server, listen, error);
}

int main(int argc, char **argv) {
  g_autofree char *state_dir = NULL, *listen = NULL;
  gboolean reset_admin = FALSE;
  OdCommonOptions common = {0};
  Root r = {0};
  const GOptionEntry entries[] = {{"state-dir", 's', 0, G_OPTION_ARG_FILENAME, &state_dir,
                                   "State directory (default /var/lib/oakuk/root)", "DIR"},
                                  {"listen", 'l', 0, G_OPTION_ARG_STRING, &listen,
                                   "Address to listen on (default 0.0.0.0:10000)", "ADDR:PORT"},
                                  {"reset-admin", 0, 0, G_OPTION_ARG_NONE, &reset_admin,
                                   "Print a new password for user Admin and exit", NULL},
                                  G_OPTION_ENTRY_NULL};
  g_autoptr(GError) error = NULL;
  if (!od_options_parse(&argc, &argv, "oakuk root orchestrator: accepts applications and picks clusters.",
                        entries, &common, &r.config, &error)) {
    fprintf(stderr, "oakuk-root: %s\n", error->message);
    return 2;
  }
  od_log_init("oakuk-root", common.log_format, common.verbose);
  if (state_dir == NULL &&
      !od_config_string(r.config, "root", "state_dir", "/var/lib/oakuk/root", &state_dir, &error))
    goto fail;
  if (listen == NULL && !od_config_string(r.config, "root", "listen", "0.0.0.0:10000", &listen, &error))
    goto fail;
  r.state_dir = g_strdup(state_dir);
  r.started_ms = root_now_ms();
  r.aggregates =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)oakuk_cluster_aggregate_unref);
  r.reservations = oakuk_reservations_new();
  r.http_counts = g_hash_table_new(g_direct_hash, g_direct_equal);
  r.inflight = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  if (!load_config(&r, &error) || !open_state(&r, reset_admin, &error))
    goto fail;
  if (reset_admin) {
    root_free(&r);
    od_common_options_clear(&common);
    return 0;
  }
  load_aggregates(&r);
  root_rebuild_reservations(&r);
  r.session =
      soup_session_new_with_options("timeout", 10, "idle-timeout", 30, "user-agent", "oakuk-root", NULL);
  /* Control-plane peers are reached directly: no system proxy lookup (which also keeps GIO's
   * proxy modules and libproxy out of the daemon). */
  soup_session_set_proxy_resolver(r.session, NULL);
  r.loop = g_main_loop_new(NULL, FALSE);
  if (!start_server(&r, listen, &error))
    goto fail;
  g_unix_signal_add(SIGTERM, on_signal, &r);
  g_unix_signal_add(SIGINT, on_signal, &r);
  r.tick_source = g_timeout_add_seconds(1, root_tick, &r);
  od_log(G_LOG_LEVEL_MESSAGE, "start", "listen", listen, "state_dir", state_dir, "msg",
         "oakuk-root listening", NULL);
  root_forward_pump(&r);
  g_main_loop_run(r.loop);
  root_free(&r);
  od_common_options_clear(&common);
  return 0;
fail:
  od_log(G_LOG_LEVEL_WARNING, "fatal", "msg", error->message, NULL);
  root_free(&r);
  od_common_options_clear(&common);
  return 1;
}

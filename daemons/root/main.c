/* oakuk-root: options and configuration, the state directory, then the store, the loop, the link
 * to clusters and the HTTP adapters wired together; signals. */
#include "api.h"
#include "link.h"
#include "loop.h"
#include "store.h"

#include <arpa/inet.h>
#include <errno.h>
#include <glib-unix.h>
#include <stdio.h>
#include <string.h>

gint64 root_now_ms(void) {
  return g_get_real_time() / 1000;
}

static gboolean parse_pool(RootConfig *cfg, const char *pool, gint64 prefix, GError **error) {
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
  cfg->pool_base = g_ntohl(addr) & (plen ? ~0u << (32 - plen) : 0);
  cfg->pool_prefix = (guint)plen;
  cfg->cluster_prefix = (guint)prefix;
  return TRUE;
}

/* A reusable registration secret is optional; one-time join tokens need none. */
static gboolean load_cluster_secret(RootConfig *cfg, const char *state_dir, char *secret_file,
                                    GError **error) {
  g_autofree char *path = secret_file ? secret_file : g_build_filename(state_dir, "cluster-secret", NULL);
  g_autofree char *secret = NULL;
  g_autoptr(GError) local = NULL;
  if (g_file_get_contents(path, &secret, NULL, &local)) {
    g_strstrip(secret);
    if (strlen(secret) < 16) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "cluster secret %s: shorter than 16 characters", path);
      return FALSE;
    }
    cfg->cluster_secret_hash = od_sha256_hex(secret);
  } else if (!g_error_matches(local, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "cluster secret %s: %s", path, local->message);
    return FALSE;
  }
  return TRUE;
}

static gboolean load_config(GKeyFile *kf, RootConfig *cfg, const char *state_dir, GError **error) {
  gint64 timeout_s, prefix;
  g_autofree char *policy = NULL, *pool = NULL;
  char *secret_file = NULL;
  if (!od_config_int(kf, "root", "cluster_timeout_s", 15, 1, 86400, &timeout_s, error) ||
      !od_config_int(kf, "root", "token_ttl_s", 3600, 60, 31 * 86400, &cfg->token_ttl_s, error) ||
      !od_config_int(kf, "root", "refresh_ttl_s", 7 * 86400, 60, 365 * 86400, &cfg->refresh_ttl_s, error) ||
      !od_config_int(kf, "root", "join_token_ttl_s", 3600, 10, 365 * 86400, &cfg->join_token_ttl_s, error) ||
      !od_config_int(kf, "root", "forward_max_attempts", 10, 1, 1000, &cfg->forward_max_attempts, error) ||
      !od_config_int(kf, "root", "cluster_prefix", 20, 16, 30, &prefix, error) ||
      !od_config_string(kf, "root", "policy", "most-free", &policy, error) ||
      !od_config_string(kf, "root", "node_pool", "10.18.0.0/15", &pool, error) ||
      !od_config_string(kf, "root", "cluster_secret_file", NULL, &secret_file, error))
    return FALSE;
  cfg->cluster_timeout_ms = timeout_s * 1000;
  if (strcmp(policy, "most-free") == 0) {
    cfg->policy = OAKUK_SCHED_MOST_FREE;
  } else if (strcmp(policy, "best-fit") == 0) {
    cfg->policy = OAKUK_SCHED_BEST_FIT;
  } else {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "config [root] policy: '%s' is neither most-free nor best-fit", policy);
    g_free(secret_file);
    return FALSE;
  }
  if (!parse_pool(cfg, pool, prefix, error)) {
    g_free(secret_file);
    return FALSE;
  }
  return load_cluster_secret(cfg, state_dir, secret_file, error);
}

static gboolean set_admin_password(Store *s, GError **error) {
  g_autofree char *password = od_password_generate();
  g_autofree char *hash = od_password_hash(password);
  if (!store_begin(s, error) || !store_user_set_password(s, "Admin", hash, error) ||
      !store_commit(s, error)) {
    store_rollback(s);
    return FALSE;
  }
  /* Printed once, on purpose outside the structured log. */
  fprintf(stderr, "admin password: %s\n", password);
  fflush(stderr);
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
  r->store = store_open(db_path, r->started_ms, error);
  if (r->store == NULL)
    return FALSE;
  if (!store_user_exists(r->store, "Admin") || reset_admin)
    return set_admin_password(r->store, error);
  return TRUE;
}

/* The clusters and their last aggregates, as the loop starts from them. */
static void load_clusters(Root *r) {
  g_autoptr(GPtrArray) all = store_clusters_all(r->store);
  for (guint k = 0; k < all->len; k++) {
    StoreCluster *c = all->pdata[k];
    oakuk_error *err = NULL;
    LoopAggregate *agg = c->aggregate ? root_aggregate_parse(c->aggregate, -1, &err) : NULL;
    if (c->aggregate != NULL && agg == NULL) {
      od_log(G_LOG_LEVEL_WARNING, "aggregate-load", "cluster", c->id, "msg", oakuk_error_message(err), NULL);
      oakuk_error_free(err);
    }
    loop_load_cluster(r->loop, c->id, c->name, agg, c->received_at);
  }
}

static gboolean on_signal(gpointer data) {
  od_log(G_LOG_LEVEL_MESSAGE, "shutdown", "msg", "signal received, shutting down", NULL);
  g_main_loop_quit(data);
  return G_SOURCE_CONTINUE;
}

static void root_free(Root *r) {
  if (r->server != NULL)
    soup_server_disconnect(r->server);
  g_clear_object(&r->server);
  g_clear_pointer(&r->link, link_free); /* what was in flight is resumed on the next start */
  g_clear_pointer(&r->loop, loop_free);
  g_clear_pointer(&r->store, store_free);
  g_clear_pointer(&r->http_counts, g_hash_table_unref);
  g_free(r->state_dir);
  g_free(r->cfg.cluster_secret_hash);
}

int main(int argc, char **argv) {
  g_autofree char *state_dir = NULL, *listen = NULL;
  gboolean reset_admin = FALSE;
  OdCommonOptions common = {0};
  g_autoptr(GKeyFile) config = NULL;
  Root r = {0};
  const GOptionEntry entries[] = {{"state-dir", 's', 0, G_OPTION_ARG_FILENAME, &state_dir,
                                   "State directory (default /var/lib/oakuk/root)", "DIR"},
                                  {"listen", 'l', 0, G_OPTION_ARG_STRING, &listen,
                                   "Address to listen on (default 0.0.0.0:10000)", "ADDR:PORT"},
                                  {"reset-admin", 0, 0, G_OPTION_ARG_NONE, &reset_admin,
                                   "Print a new password for user Admin and exit", NULL},
                                  G_OPTION_ENTRY_NULL};
  g_autoptr(GError) error = NULL;
  g_autoptr(GMainLoop) main_loop = NULL;
  if (!od_options_parse(&argc, &argv, "oakuk root orchestrator: accepts applications and picks clusters.",
                        entries, &common, &config, &error)) {
    fprintf(stderr, "oakuk-root: %s\n", error->message);
    return 2;
  }
  od_log_init("oakuk-root", common.log_format, common.verbose);
  int rc = 1;
  if ((state_dir == NULL &&
       !od_config_string(config, "root", "state_dir", "/var/lib/oakuk/root", &state_dir, &error)) ||
      (listen == NULL && !od_config_string(config, "root", "listen", "0.0.0.0:10000", &listen, &error)))
    goto out;
  r.state_dir = g_strdup(state_dir);
  r.started_ms = root_now_ms();
  r.http_counts = g_hash_table_new(g_direct_hash, g_direct_equal);
  if (!load_config(config, &r.cfg, state_dir, &error) || !open_state(&r, reset_admin, &error))
    goto out;
  if (reset_admin) {
    rc = 0;
    goto out;
  }
  r.link = link_new();
  r.loop = loop_new(&r);
  load_clusters(&r);
  r.server = soup_server_new("server-header", "oakuk-root", NULL);
  root_api_register(&r);
  if (!od_http_server_listen(r.server, listen, &error))
    goto out;
  main_loop = g_main_loop_new(NULL, FALSE);
  g_unix_signal_add(SIGTERM, on_signal, main_loop);
  g_unix_signal_add(SIGINT, on_signal, main_loop);
  od_log(G_LOG_LEVEL_MESSAGE, "start", "listen", listen, "state_dir", state_dir, "msg",
         "oakuk-root listening", NULL);
  loop_start(r.loop);
  g_main_loop_run(main_loop);
  rc = 0;
out:
  if (error != NULL)
    od_log(G_LOG_LEVEL_WARNING, "fatal", "msg", error->message, NULL);
  root_free(&r);
  od_common_options_clear(&common);
  return rc;
}

/* oakuk-root: options and configuration, the state directory and the PKI, then the store, the loop,
 * the link to clusters, the login guard and the HTTP adapters wired together; signals. */
#include "api.h"
#include "guard.h"
#include "link.h"
#include "loop.h"
#include "pki.h"
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

/* [root] cors_origins: "*" alone, or origins (scheme://host[:port], http or https, nothing after)
 * separated by commas or spaces. */
static gboolean load_cors(GKeyFile *kf, RootConfig *cfg, GError **error) {
  g_autofree char *text = NULL;
  if (!od_config_string(kf, "root", "cors_origins", NULL, &text, error))
    return FALSE;
  g_auto(GStrv) parts = g_regex_split_simple("[\\s,]+", text ? g_strstrip(text) : "", 0, 0);
  g_autoptr(GPtrArray) out = g_ptr_array_new_with_free_func(g_free);
  for (char **p = parts; *p; p++) {
    if (**p == '\0')
      continue;
    if (strcmp(*p, "*") == 0) {
      cfg->cors_any = TRUE;
      continue;
    }
    g_autoptr(GUri) uri = g_uri_parse(*p, G_URI_FLAGS_NONE, NULL);
    const char *scheme = uri ? g_uri_get_scheme(uri) : NULL;
    if (uri == NULL || (g_strcmp0(scheme, "http") != 0 && g_strcmp0(scheme, "https") != 0) ||
        g_uri_get_host(uri) == NULL || *g_uri_get_host(uri) == '\0' || *g_uri_get_path(uri) != '\0' ||
        g_uri_get_query(uri) != NULL || g_uri_get_fragment(uri) != NULL || g_uri_get_userinfo(uri) != NULL) {
      g_set_error(
          error, OD_ERROR, OD_ERROR_INVALID,
          "config [root] cors_origins: '%s' is not an origin (http[s]://host[:port], nothing after) or *",
          *p);
      return FALSE;
    }
    g_ptr_array_add(out, g_strdup(*p));
  }
  if (cfg->cors_any && out->len > 0) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "config [root] cors_origins: * stands alone (it allows every origin)");
    return FALSE;
  }
  if (out->len > 0) {
    g_ptr_array_add(out, NULL);
    cfg->cors_origins = (char **)g_ptr_array_free(g_steal_pointer(&out), FALSE);
  }
  return TRUE;
}

static gboolean load_config(GKeyFile *kf, RootConfig *cfg, const char *state_dir, GError **error) {
  gint64 timeout_s, prefix;
  g_autofree char *policy = NULL, *pool = NULL;
  char *secret_file = NULL;
  if (!od_config_int(kf, "root", "cluster_timeout_s", 15, 1, 86400, &timeout_s, error) ||
      !od_config_int(kf, "root", "token_ttl_s", 900, 60, 86400, &cfg->token_ttl_s, error) ||
      !od_config_int(kf, "root", "refresh_ttl_s", 7 * 86400, 60, 365 * 86400, &cfg->refresh_ttl_s, error) ||
      !od_config_int(kf, "root", "join_token_ttl_s", 3600, 60, 365 * 86400, &cfg->join_token_ttl_s, error) ||
      !od_config_int(kf, "root", "forward_max_attempts", 10, 1, 1000, &cfg->forward_max_attempts, error) ||
      !od_config_int(kf, "root", "cluster_prefix", 20, 8, 30, &prefix, error) ||
      !od_config_string(kf, "root", "policy", "most-free", &policy, error) ||
      !od_config_string(kf, "root", "node_pool", "10.18.0.0/15", &pool, error) ||
      !od_config_string(kf, "root", "cluster_secret_file", NULL, &secret_file, error) ||
      !od_config_string(kf, "root", "insecure_registries", NULL, &cfg->insecure_registries, error) ||
      !load_cors(kf, cfg, error))
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

/* A new password for Admin, written to <state>/admin-password (0600) and never to the log. */
static gboolean set_admin_password(Root *r, GError **error) {
  g_autofree char *password = od_password_generate();
  g_autofree char *hash = od_password_hash(password);
  g_autofree char *path = g_build_filename(r->state_dir, "admin-password", NULL);
  g_autofree char *line = g_strconcat(password, "\n", NULL);
  if (!store_begin(r->store, error) || !store_user_set_password(r->store, "Admin", hash, error) ||
      !od_tls_write_secret(path, line, error) || !store_commit(r->store, error)) {
    store_rollback(r->store);
    return FALSE;
  }
  od_log(G_LOG_LEVEL_MESSAGE, "admin-password", "user", "Admin", "file", path, "msg",
         "the password of user Admin is in the file (mode 0600)", NULL);
  return TRUE;
}

static gboolean open_state(Root *r, gboolean reset_admin, GError **error) {
  if (!od_state_dir_prepare(r->state_dir, error))
    return FALSE;
  g_autofree char *secret_path = g_build_filename(r->state_dir, "jwt-secret", NULL);
  gboolean created = FALSE;
  if (!od_secret_load_or_create(secret_path, r->secret, sizeof r->secret, &created, error))
    return FALSE;
  g_autofree char *db_path = g_build_filename(r->state_dir, "root.db", NULL);
  r->store = store_open(db_path, r->started_ms, error);
  if (r->store == NULL)
    return FALSE;
  if (!store_user_exists(r->store, "Admin") || reset_admin)
    return set_admin_password(r, error);
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
  g_clear_pointer(&r->guard, guard_free);
  g_clear_pointer(&r->loop, loop_free);
  g_clear_pointer(&r->store, store_free);
  g_clear_pointer(&r->http_counts, g_hash_table_unref);
  g_clear_pointer(&r->http_durations, od_histogram_free);
  g_clear_object(&r->ca);
  g_free(r->ca_pem);
  if (r->ca_key_pem != NULL)
    memset(r->ca_key_pem, 0, strlen(r->ca_key_pem));
  g_free(r->ca_key_pem);
  g_free(r->ca_fingerprint);
  g_free(r->state_dir);
  g_free(r->cfg.cluster_secret_hash);
  g_free(r->cfg.insecure_registries);
  g_strfreev(r->cfg.cors_origins);
}

/* Every key [root] may hold (docs/api.md, "Configuration"); any other is refused at start. */
static const char *const root_config_keys[] = {"state_dir",
                                               "listen",
                                               "ca_cert",
                                               "ca_key",
                                               "tls_cert",
                                               "tls_key",
                                               "tls_san",
                                               "insecure",
                                               "cluster_timeout_s",
                                               "token_ttl_s",
                                               "refresh_ttl_s",
                                               "join_token_ttl_s",
                                               "forward_max_attempts",
                                               "cluster_prefix",
                                               "policy",
                                               "node_pool",
                                               "cluster_secret_file",
                                               "insecure_registries",
                                               "cors_origins",
                                               NULL};

/* The TLS options: each from the command line, else from [root] in the config file. */
typedef struct {
  char *ca_cert, *ca_key, *tls_cert, *tls_key;
  char **tls_san;
  gboolean insecure;
} TlsArgs;

static void tls_args_clear(TlsArgs *t) {
  g_free(t->ca_cert);
  g_free(t->ca_key);
  g_free(t->tls_cert);
  g_free(t->tls_key);
  g_strfreev(t->tls_san);
}

static gboolean tls_config(GKeyFile *kf, TlsArgs *t, GError **error) {
  struct {
    const char *key;
    char **value;
  } files[] = {
      {"ca_cert", &t->ca_cert}, {"ca_key", &t->ca_key}, {"tls_cert", &t->tls_cert}, {"tls_key", &t->tls_key}};
  for (gsize k = 0; k < G_N_ELEMENTS(files); k++)
    if (*files[k].value == NULL && !od_config_string(kf, "root", files[k].key, NULL, files[k].value, error))
      return FALSE;
  if (t->tls_san == NULL) {
    g_autofree char *list = NULL;
    if (!od_config_string(kf, "root", "tls_san", NULL, &list, error))
      return FALSE;
    g_auto(GStrv) parts = list ? g_strsplit(list, ",", 0) : NULL;
    g_autoptr(GPtrArray) names = g_ptr_array_new();
    for (char **p = parts; p && *p; p++)
      if (*g_strstrip(*p) != '\0')
        g_ptr_array_add(names, g_strdup(*p));
    g_ptr_array_add(names, NULL);
    t->tls_san = (char **)g_ptr_array_free(g_steal_pointer(&names), FALSE);
  }
  if (!t->insecure && g_key_file_has_key(kf, "root", "insecure", NULL)) {
    g_autoptr(GError) local = NULL;
    t->insecure = g_key_file_get_boolean(kf, "root", "insecure", &local);
    if (local != NULL) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "config [root] insecure: %s", local->message);
      return FALSE;
    }
  }
  return TRUE;
}

/* The CA, and unless --insecure the certificate the server presents. */
static gboolean setup_tls(Root *r, TlsArgs *t, const char *listen, GError **error) {
  PkiOptions o = {.ca_cert = t->ca_cert,
                  .ca_key = t->ca_key,
                  .tls_cert = t->tls_cert,
                  .tls_key = t->tls_key,
                  .sans = (const char *const *)t->tls_san,
                  .listen = listen};
  r->insecure = t->insecure;
  if (!pki_load_ca(r, &o, error))
    return FALSE;
  if (r->insecure) {
    od_log(G_LOG_LEVEL_WARNING, "insecure", "msg",
           "--insecure: serving plain HTTP; passwords, tokens and credentials cross the network unencrypted",
           NULL);
    return TRUE;
  }
  g_autoptr(GTlsCertificate) cert = pki_server_certificate(r, &o, error);
  if (cert == NULL)
    return FALSE;
  od_http_server_set_tls(r->server, cert);
  return TRUE;
}

int main(int argc, char **argv) {
  g_autofree char *state_dir = NULL, *listen = NULL;
  gboolean reset_admin = FALSE;
  OdCommonOptions common = {0};
  TlsArgs tls = {0};
  g_autoptr(GKeyFile) config = NULL;
  Root r = {0};
  const GOptionEntry entries[] = {
      {"state-dir", 's', 0, G_OPTION_ARG_FILENAME, &state_dir,
       "State directory (default /var/lib/oakuk/root)", "DIR"},
      {"listen", 'l', 0, G_OPTION_ARG_STRING, &listen, "Address to listen on (default 0.0.0.0:10000)",
       "ADDR:PORT"},
      {"reset-admin", 0, 0, G_OPTION_ARG_NONE, &reset_admin,
       "Write a new password for user Admin to <state>/admin-password and exit", NULL},
      {"ca-cert", 0, 0, G_OPTION_ARG_FILENAME, &tls.ca_cert,
       "The CA certificate (default <state>/pki/ca.crt)", "FILE"},
      {"ca-key", 0, 0, G_OPTION_ARG_FILENAME, &tls.ca_key, "The CA's key (default <state>/pki/ca.key)",
       "FILE"},
      {"tls-cert", 0, 0, G_OPTION_ARG_FILENAME, &tls.tls_cert,
       "Serve this certificate (default: <state>/pki/server.crt, issued by the CA)", "FILE"},
      {"tls-key", 0, 0, G_OPTION_ARG_FILENAME, &tls.tls_key, "The key of --tls-cert", "FILE"},
      {"tls-san", 0, 0, G_OPTION_ARG_STRING_ARRAY, &tls.tls_san,
       "A name (DNS or IP) of the server certificate; repeatable", "NAME"},
      {"insecure", 0, 0, G_OPTION_ARG_NONE, &tls.insecure, "Serve plain HTTP (no TLS)", NULL},
      G_OPTION_ENTRY_NULL};
  g_autoptr(GError) error = NULL;
  g_autoptr(GMainLoop) main_loop = NULL;
  if (!od_options_parse(&argc, &argv, "oakuk root orchestrator: accepts applications and picks clusters.",
                        entries, &common, &config, &error)) {
    fprintf(stderr, "oakuk-root: %s\n", error->message);
    return 2;
  }
  if (common.version) {
    printf("oakuk-root %s\n", OAKUK_ROOT_VERSION);
    od_common_options_clear(&common);
    return 0;
  }
  od_log_init("oakuk-root", common.log_format, common.verbose);
  int rc = 1;
  if (!od_config_check_keys(config, common.config_path, "root", root_config_keys, NULL, NULL, &error) ||
      (state_dir == NULL &&
       !od_config_string(config, "root", "state_dir", "/var/lib/oakuk/root", &state_dir, &error)) ||
      (listen == NULL && !od_config_string(config, "root", "listen", "0.0.0.0:10000", &listen, &error)) ||
      !tls_config(config, &tls, &error))
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
  r.server = soup_server_new("server-header", "oakuk-root", NULL);
  if (!setup_tls(&r, &tls, listen, &error))
    goto out;
  r.link = link_new(r.ca);
  r.guard = guard_new();
  r.loop = loop_new(&r);
  load_clusters(&r);
  root_api_register(&r);
  if (!od_http_server_listen(r.server, listen, &error))
    goto out;
  main_loop = g_main_loop_new(NULL, FALSE);
  g_unix_signal_add(SIGTERM, on_signal, main_loop);
  g_unix_signal_add(SIGINT, on_signal, main_loop);
  od_log(G_LOG_LEVEL_MESSAGE, "start", "listen", listen, "state_dir", state_dir, "tls",
         r.insecure ? "false" : "true", "ca_fingerprint", r.ca_fingerprint, "msg", "oakuk-root listening",
         NULL);
  loop_start(r.loop);
  g_main_loop_run(main_loop);
  rc = 0;
out:
  if (error != NULL)
    od_log(G_LOG_LEVEL_WARNING, "fatal", "msg", error->message, NULL);
  root_free(&r);
  tls_args_clear(&tls);
  od_common_options_clear(&common);
  return rc;
}

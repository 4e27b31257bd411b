/* oakuk-cluster: options, state directory, node join tokens; wires the store, the loop and the
 * adapters (HTTP server, node topics, root link, broker) together, and handles signals. */
#include "join.h"
#include "loop.h"

#include <errno.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>

gint64 cluster_now_ms(void) {
  return g_get_monotonic_time() / 1000;
}

gint64 cluster_liveness_now_ms(Cluster *c) {
  return c->mqtt_up ? cluster_now_ms() : c->mqtt_down_since_ms;
}

gint64 cluster_wall_ms(void) {
  return g_get_real_time() / 1000;
}

gboolean cluster_node_active(Cluster *c, const char *node) {
  oakuk_node_report *rep = g_hash_table_lookup(c->reports, node);
  return rep != NULL &&
         cluster_liveness_now_ms(c) - oakuk_node_report_received_at_ms(rep) <= c->node_timeout_ms;
}

char *cluster_path(Cluster *c, const char *dir, const char *file) {
  return g_build_filename(c->state_dir, dir, file, NULL);
}

/* --new-join-token: the token goes to stdout for scripts, and nowhere else. */
static gboolean print_join_token(Cluster *c, gint64 ttl_s, gint64 uses, GError **error) {
  g_autofree char *ca_path = cluster_path(c, "pki", "ca.crt");
  g_autoptr(GError) local = NULL;
  if (!g_file_get_contents(ca_path, &c->ca_pem, NULL, &local) &&
      !g_error_matches(local, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "%s: %s", ca_path, local->message);
    return FALSE;
  }
  g_autofree char *token = NULL;
  gint64 expires_ms = 0;
  if (loop_join_token_new(c, ttl_s, uses, &token, &expires_ms, error) != SOUP_STATUS_CREATED)
    return FALSE;
  printf("%s\n", token);
  fflush(stdout);
  return TRUE;
}

static gboolean read_secret_option(const char *value, char **out, GError **error) {
  if (value == NULL || value[0] != '@') {
    *out = g_strdup(value);
    return TRUE;
  }
  g_autoptr(GError) local = NULL;
  if (!g_file_get_contents(value + 1, out, NULL, &local)) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "--join-token file %s: %s", value + 1, local->message);
    return FALSE;
  }
  g_strstrip(*out);
  return TRUE;
}

static gboolean host_port(const char *text, const char *what, char **host, guint16 *port, GError **error) {
  g_autoptr(GError) local = NULL;
  if (!od_parse_listen(text, host, port, &local)) {
    /* Host names are fine for a broker: split at the last colon. */
    const char *colon = text ? strrchr(text, ':') : NULL;
    guint64 p = 0;
    if (colon == NULL || colon == text || !g_ascii_string_to_unsigned(colon + 1, 10, 1, 65535, &p, NULL)) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s '%s' is not HOST:PORT", what, text ? text : "");
      return FALSE;
    }
    *host = g_strndup(text, colon - text);
    *port = (guint16)p;
  }
  return TRUE;
}

typedef struct {
  char *state_dir, *listen, *root_url, *join_token, *name, *location, *advertise_url, *mosquitto, *external,
      *mqtt_host;
  gint mqtt_port, node_timeout, aggregate_interval, ttl, uses;
  gboolean new_token, insecure;
  const char *config_path; /* borrowed from the common options */
} Args;

/* Every key [cluster] may hold (docs/cluster.md, "Configuration"); any other is refused at start. */
static const char *const cluster_config_keys[] = {"state_dir",
                                                  "listen",
                                                  "root_url",
                                                  "name",
                                                  "location",
                                                  "advertise_url",
                                                  "join_token",
                                                  "mqtt_port",
                                                  "node_timeout_s",
                                                  "aggregate_interval_s",
                                                  "avoid_s",
                                                  "policy",
                                                  "external_broker",
                                                  "external_password_file",
                                                  "external_broker_pid_file",
                                                  "mqtt_username",
                                                  "mqtt_password",
                                                  "mosquitto",
                                                  "mqtt_advertise_host",
                                                  "mqtt_host",
                                                  "insecure",
                                                  "renew_check_s",
                                                  NULL};

static gboolean load_settings(Cluster *c, Args *a, GError **error) {
  GKeyFile *kf = c->config;
  if (!od_config_check_keys(kf, a->config_path, "cluster", cluster_config_keys, NULL, NULL, error))
    return FALSE;
  gint64 v = 0;
  g_autofree char *policy = NULL, *token = NULL, *pw_file = NULL;
#define STR_SETTING(field, key, def)                                                                         \
  if (a->field != NULL)                                                                                      \
    c->field = g_strdup(a->field);                                                                           \
  else if (!od_config_string(kf, "cluster", key, def, &c->field, error))                                     \
    return FALSE;
  STR_SETTING(state_dir, "state_dir", "/var/lib/oakuk/cluster")
  STR_SETTING(listen, "listen", "0.0.0.0:10100")
  STR_SETTING(root_url, "root_url", NULL)
  STR_SETTING(name, "name", NULL)
  STR_SETTING(location, "location", "")
  STR_SETTING(advertise_url, "advertise_url", NULL)
#undef STR_SETTING
  if (a->join_token == NULL && !od_config_string(kf, "cluster", "join_token", NULL, &token, error))
    return FALSE;
  if (!read_secret_option(a->join_token ? a->join_token : token, &c->join_token, error))
    return FALSE;
  if (c->name == NULL)
    c->name = g_strdup(g_get_host_name());
  if (!od_config_int(kf, "cluster", "mqtt_port", 10883, 1, 65535, &v, error))
    return FALSE;
  c->mqtt_port = a->mqtt_port > 0 ? (guint16)a->mqtt_port : (guint16)v;
  if (!od_config_int(kf, "cluster", "node_timeout_s", 10, 1, 86400, &v, error))
    return FALSE;
  c->node_timeout_ms = (a->node_timeout > 0 ? a->node_timeout : v) * 1000;
  if (!od_config_int(kf, "cluster", "aggregate_interval_s", 5, 1, 3600, &v, error))
    return FALSE;
  c->aggregate_interval_ms = (a->aggregate_interval > 0 ? a->aggregate_interval : v) * 1000;
  if (!od_config_int(kf, "cluster", "avoid_s", 30, 1, 86400, &v, error))
    return FALSE;
  c->avoid_ms = v * 1000;
  if (!od_config_string(kf, "cluster", "policy", "most-free", &policy, error))
    return FALSE;
  if (strcmp(policy, "most-free") == 0 || strcmp(policy, "best-fit") == 0) {
    c->policy = policy[0] == 'm' ? OAKUK_SCHED_MOST_FREE : OAKUK_SCHED_BEST_FIT;
  } else {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "config [cluster] policy: '%s' is neither most-free nor best-fit", policy);
    return FALSE;
  }
  g_autofree char *external = NULL;
  if (a->external == NULL && !od_config_string(kf, "cluster", "external_broker", NULL, &external, error))
    return FALSE;
  const char *ext = a->external ? a->external : external;
  if (ext != NULL) {
    if (a->mosquitto != NULL) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "--mosquitto and --external-broker exclude each other");
      return FALSE;
    }
    guint16 port = 0;
    if (!host_port(ext, "--external-broker", &c->broker_host, &port, error))
      return FALSE;
    c->mqtt_port = port;
    if (!od_config_string(kf, "cluster", "external_password_file", NULL, &c->password_file, error) ||
        !od_config_string(kf, "cluster", "external_broker_pid_file", NULL, &c->broker_pid_file, error) ||
        !od_config_string(kf, "cluster", "mqtt_username", CLUSTER_MQTT_USER, &c->mqtt_username, error) ||
        !od_config_string(kf, "cluster", "mqtt_password", NULL, &c->mqtt_password, error))
      return FALSE;
    if (c->password_file == NULL || c->mqtt_password == NULL) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                  "--external-broker needs config [cluster] external_password_file and mqtt_password");
      return FALSE;
    }
  } else {
    if (a->mosquitto != NULL)
      c->mosquitto_bin = g_strdup(a->mosquitto);
    else if (!od_config_string(kf, "cluster", "mosquitto", "/usr/sbin/mosquitto", &c->mosquitto_bin, error))
      return FALSE;
    c->broker_host = g_strdup("127.0.0.1");
    c->mqtt_username = g_strdup(CLUSTER_MQTT_USER);
  }
  /* mqtt_advertise_host: the key's name before --mqtt-host. */
  g_autofree char *old_host = NULL;
  if (a->mqtt_host != NULL)
    c->mqtt_advertise_host = g_strdup(a->mqtt_host);
  else if (!od_config_string(kf, "cluster", "mqtt_advertise_host", NULL, &old_host, error) ||
           !od_config_string(kf, "cluster", "mqtt_host", old_host, &c->mqtt_advertise_host, error))
    return FALSE;
  gboolean insecure = FALSE;
  g_autoptr(GError) local = NULL;
  if (g_key_file_has_key(kf, "cluster", "insecure", NULL)) {
    insecure = g_key_file_get_boolean(kf, "cluster", "insecure", &local);
    if (local != NULL) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "config [cluster] insecure: %s", local->message);
      return FALSE;
    }
  }
  c->insecure = a->insecure || insecure;
  if (!od_config_int(kf, "cluster", "renew_check_s", 3600, 1, 86400, &v, error))
    return FALSE;
  c->renew_check_ms = v * 1000;
  return TRUE;
}

/* The URL the root calls us at, and the host nodes use for the broker, default to our listen
 * address (the host name when it is a wildcard). */
static gboolean derive_urls(Cluster *c, GError **error) {
  g_autofree char *addr = NULL;
  guint16 port = 0;
  if (!od_parse_listen(c->listen, &addr, &port, error))
    return FALSE;
  const char *host = strcmp(addr, "0.0.0.0") == 0 || strcmp(addr, "::") == 0 ? g_get_host_name() : addr;
  const char *scheme = c->insecure ? "http" : "https";
  if (c->advertise_url == NULL)
    c->advertise_url = strchr(host, ':') ? g_strdup_printf("%s://[%s]:%u", scheme, host, port)
                                         : g_strdup_printf("%s://%s:%u", scheme, host, port);
  if (c->mqtt_advertise_host == NULL) {
    g_autoptr(GUri) uri = g_uri_parse(c->advertise_url, G_URI_FLAGS_NONE, NULL);
    if (uri == NULL || g_uri_get_host(uri) == NULL) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "--advertise-url '%s' is not a URL with a host",
                  c->advertise_url);
      return FALSE;
    }
    c->mqtt_advertise_host = g_strdup(g_uri_get_host(uri));
  }
  return TRUE;
}

/* Plain HTTP to the root or from the root and nodes only on purpose (docs/security.md). */
static gboolean check_schemes(Cluster *c, GError **error) {
  const char *urls[][2] = {{"--root-url", c->root_url}, {"--advertise-url", c->advertise_url}};
  for (gsize i = 0; i < G_N_ELEMENTS(urls); i++) {
    if (g_ascii_strncasecmp(urls[i][1], "https://", 8) == 0 ||
        (c->insecure && g_ascii_strncasecmp(urls[i][1], "http://", 7) == 0))
      continue;
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s '%s': %s", urls[i][0], urls[i][1],
                c->insecure ? "not an http(s) URL" : "not an https URL (plain HTTP needs --insecure)");
    return FALSE;
  }
  if (c->insecure)
    od_log(
        G_LOG_LEVEL_WARNING, "insecure", "msg",
        "--insecure: plain HTTP and MQTT; credentials, tokens and node passwords cross the network in clear",
        NULL);
  return TRUE;
}

static gboolean open_state(Cluster *c, GError **error) {
  if (!od_state_dir_prepare(c->state_dir, error))
    return FALSE;
  g_autofree char *db_path = g_build_filename(c->state_dir, "cluster.db", NULL);
  c->store = store_open(db_path, cluster_wall_ms(), c->avoid_ms, error);
  return c->store != NULL;
}

static gboolean on_signal(gpointer data) {
  Cluster *c = data;
  od_log(G_LOG_LEVEL_MESSAGE, "shutdown", "msg", "signal received, shutting down", NULL);
  g_main_loop_quit(c->loop);
  return G_SOURCE_CONTINUE;
}

/* The cluster's in-memory tables, empty (cluster_free frees them). */
static void cluster_tables_new(Cluster *c) {
  c->reports =
      g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)oakuk_node_report_unref);
  c->reports_unsaved = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  c->reachable = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  c->silent = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  c->inflight = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  c->delete_sent = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  c->retry = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  c->http_counts = g_hash_table_new(g_direct_hash, g_direct_equal);
  c->rate = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  c->reservations = oakuk_reservations_new();
}

static void cluster_free(Cluster *c) {
  c->stopping = TRUE;
  loop_stop(c);
  g_clear_handle_id(&c->status_pump_source, g_source_remove);
  g_clear_handle_id(&c->aggregate_source, g_source_remove);
  g_clear_handle_id(&c->register_source, g_source_remove);
  g_clear_handle_id(&c->net_timer, g_source_remove);
  g_clear_pointer(&c->net_round_nodes, g_ptr_array_unref);
  g_clear_pointer(&c->net_peers_sent, g_free);
  g_clear_pointer(&c->net_services_sent, g_free);
  if (c->inflight != NULL)
    nodelink_stop(c);
  broker_stop(c);
  if (c->server != NULL)
    soup_server_disconnect(c->server);
  g_clear_object(&c->server);
  if (c->session != NULL)
    soup_session_abort(c->session);
  g_clear_object(&c->session);
  g_clear_pointer(&c->reports, g_hash_table_unref);
  g_clear_pointer(&c->reports_unsaved, g_hash_table_unref);
  g_clear_pointer(&c->reachable, g_hash_table_unref);
  g_clear_pointer(&c->silent, g_hash_table_unref);
  g_clear_pointer(&c->inflight, g_hash_table_unref);
  g_clear_pointer(&c->delete_sent, g_hash_table_unref);
  g_clear_pointer(&c->retry, g_hash_table_unref);
  g_clear_pointer(&c->http_counts, g_hash_table_unref);
  g_clear_pointer(&c->http_durations, od_histogram_free);
  g_clear_pointer(&c->rate, g_hash_table_unref);
  g_clear_handle_id(&c->renew_source, g_source_remove);
  g_clear_object(&c->ca);
  g_clear_pointer(&c->reservations, oakuk_reservations_unref);
  g_clear_pointer(&c->store, store_close);
  g_clear_pointer(&c->loop, g_main_loop_unref);
  g_clear_pointer(&c->config, g_key_file_unref);
  char **strs[] = {&c->state_dir,     &c->listen,        &c->root_url,      &c->join_token,
                   &c->name,          &c->location,      &c->advertise_url, &c->mqtt_advertise_host,
                   &c->mosquitto_bin, &c->broker_host,   &c->password_file, &c->broker_pid_file,
                   &c->mqtt_username, &c->mqtt_password, &c->cluster_id,    &c->token,
                   &c->subnet,        &c->key_pem,       &c->ca_pem,        &c->cert_pem};
  for (gsize i = 0; i < G_N_ELEMENTS(strs); i++)
    g_clear_pointer(strs[i], g_free);
}

/* HTTPS from the first connection on: the certificate (the bootstrap one until the root signs
 * ours) is in place before the server listens. */
static gboolean start_server(Cluster *c, GError **error) {
  c->server = soup_server_new("server-header", "oakuk-cluster", NULL);
  cluster_api_register(c);
  return root_tls_prepare(c, error) && od_http_server_listen(c->server, c->listen, error);
}

static void load_registration(Cluster *c) {
  c->cluster_id = store_kv_get(c->store, "cluster_id");
  c->token = store_kv_get(c->store, "token");
  c->subnet = store_kv_get(c->store, "subnet");
}

static void args_clear(Args *a) {
  char **strs[] = {&a->state_dir, &a->listen,        &a->root_url,  &a->join_token, &a->name,
                   &a->location,  &a->advertise_url, &a->mosquitto, &a->external,   &a->mqtt_host};
  for (gsize i = 0; i < G_N_ELEMENTS(strs); i++)
    g_clear_pointer(strs[i], g_free);
}

static int run(Cluster *c, Args *a) {
  g_autoptr(GError) error = NULL;
  if (!load_settings(c, a, &error) || !open_state(c, &error))
    goto fail;
  if (a->new_token) {
    gint64 ttl = a->ttl != 0 ? a->ttl : 3600, uses = a->uses != 0 ? a->uses : 1;
    if (ttl < 60 || ttl > 31536000)
      g_set_error(&error, OD_ERROR, OD_ERROR_INVALID, "--ttl %" G_GINT64_FORMAT ": not from 60 to 31536000 s",
                  ttl);
    else if (uses < 1 || uses > 1000)
      g_set_error(&error, OD_ERROR, OD_ERROR_INVALID, "--uses %" G_GINT64_FORMAT ": not from 1 to 1000",
                  uses);
    if (error != NULL || !print_join_token(c, ttl, uses, &error))
      goto fail;
    return 0;
  }
  if (c->root_url == NULL) {
    g_set_error(&error, OD_ERROR, OD_ERROR_INVALID, "--root-url (or config [cluster] root_url) is required");
    goto fail;
  }
  if (!derive_urls(c, &error) || !check_schemes(c, &error))
    goto fail;
  load_registration(c);
  c->loop = g_main_loop_new(NULL, FALSE);
  /* Trusts no CA by itself: every call to the root pins the root's CA (root.c). */
  c->session = od_tls_session_new();
  g_object_set(c->session, "timeout", 10, "idle-timeout", 30, "user-agent", "oakuk-cluster", NULL);
  /* Control-plane peers are reached directly: no system proxy lookup (which also keeps GIO's
   * proxy modules and libproxy out of the daemon). */
  soup_session_set_proxy_resolver(c->session, NULL);
  if (!start_server(c, &error) || !broker_prepare(c, &error) || !broker_start(c, &error))
    goto fail;
  loop_start(c);
  g_unix_signal_add(SIGTERM, on_signal, c);
  g_unix_signal_add(SIGINT, on_signal, c);
  /* With TLS the broker and our client wait for the certificate the root signs (root.c). */
  if (broker_ready(c))
    nodelink_start(c);
  root_link_start(c);
  od_log(G_LOG_LEVEL_MESSAGE, "start", "listen", c->listen, "state_dir", c->state_dir, "url",
         c->advertise_url, "tls", c->insecure ? "false" : "true", "msg", "oakuk-cluster listening", NULL);
  g_main_loop_run(c->loop);
  return 0;
fail:
  od_log(G_LOG_LEVEL_WARNING, "fatal", "msg", error->message, NULL);
  return 1;
}

/* `oakuk-cluster join ROOT_URL TOKEN` (docs/deploy.md): the config it writes is read by load_settings. */
static const char *const cluster_stale_token_keys[] = {NULL};
static const OdJoinKind cluster_join = {.program = "oakuk-cluster",
                                        .group = "cluster",
                                        .url_key = "root_url",
                                        .url_name = "ROOT_URL",
                                        .token_key = "join_token",
                                        .token_key_at = TRUE,
                                        .stale_keys = cluster_stale_token_keys,
                                        .default_state_dir = "/var/lib/oakuk/cluster",
                                        .config_name = "cluster.conf",
                                        .system_user = TRUE};

int main(int argc, char **argv) {
  Args a = {0};
  OdCommonOptions common = {0};
  Cluster c = {0};
  if (argc > 1 && strcmp(argv[1], "join") == 0)
    return od_join_main(&cluster_join, argc - 1, argv + 1);
  const GOptionEntry entries[] = {
      {"state-dir", 's', 0, G_OPTION_ARG_FILENAME, &a.state_dir,
       "State directory (default /var/lib/oakuk/cluster)", "DIR"},
      {"listen", 'l', 0, G_OPTION_ARG_STRING, &a.listen, "HTTP address (default 0.0.0.0:10100)", "ADDR:PORT"},
      {"root-url", 0, 0, G_OPTION_ARG_STRING, &a.root_url, "Base URL of oakuk-root", "URL"},
      {"join-token", 0, 0, G_OPTION_ARG_STRING, &a.join_token,
       "Root join token, or @FILE to read it from a file", "TOKEN"},
      {"name", 0, 0, G_OPTION_ARG_STRING, &a.name, "Cluster name (default: host name)", "NAME"},
      {"location", 0, 0, G_OPTION_ARG_STRING, &a.location, "Cluster location", "TEXT"},
      {"advertise-url", 0, 0, G_OPTION_ARG_STRING, &a.advertise_url,
       "URL the root reaches this cluster at (default from --listen)", "URL"},
      {"mqtt-port", 0, 0, G_OPTION_ARG_INT, &a.mqtt_port, "Port of our own mosquitto (default 10883)",
       "PORT"},
      {"mosquitto", 0, 0, G_OPTION_ARG_FILENAME, &a.mosquitto,
       "mosquitto binary (default /usr/sbin/mosquitto)", "PATH"},
      {"external-broker", 0, 0, G_OPTION_ARG_STRING, &a.external,
       "Use a broker run elsewhere instead of our own mosquitto", "HOST:PORT"},
      {"node-timeout", 0, 0, G_OPTION_ARG_INT, &a.node_timeout,
       "Seconds without a report before a node is silent (default 10); its instances move after "
       "their reschedule_after_s",
       "S"},
      {"aggregate-interval", 0, 0, G_OPTION_ARG_INT, &a.aggregate_interval,
       "Seconds between aggregates sent to the root (default 5)", "S"},
      {"mqtt-host", 0, 0, G_OPTION_ARG_STRING, &a.mqtt_host,
       "Host nodes reach the broker at, also named in the certificate (default: the host of --advertise-url)",
       "HOST"},
      {"insecure", 0, 0, G_OPTION_ARG_NONE, &a.insecure,
       "Plain HTTP and MQTT, no certificates (only on purpose: everything crosses the network in clear)",
       NULL},
      {"new-join-token", 0, 0, G_OPTION_ARG_NONE, &a.new_token,
       "Write a new node join token to stdout and exit", NULL},
      {"ttl", 0, 0, G_OPTION_ARG_INT, &a.ttl, "With --new-join-token: seconds it is valid (default 3600)",
       "S"},
      {"uses", 0, 0, G_OPTION_ARG_INT, &a.uses, "With --new-join-token: nodes it registers (default 1)", "N"},
      G_OPTION_ENTRY_NULL};
  g_autoptr(GError) error = NULL;
  if (!od_options_parse(&argc, &argv,
                        "oakuk cluster orchestrator: runs the broker and picks nodes.\n\n"
                        "First start on a new machine: oakuk-cluster join ROOT_URL TOKEN (see oakuk-cluster "
                        "join --help).",
                        entries, &common, &c.config, &error)) {
    fprintf(stderr, "oakuk-cluster: %s\n", error->message);
    args_clear(&a);
    return 2;
  }
  if (common.version) {
    printf("oakuk-cluster %s\n", OAKUK_CLUSTER_VERSION);
    args_clear(&a);
    od_common_options_clear(&common);
    g_clear_pointer(&c.config, g_key_file_unref);
    return 0;
  }
  od_log_init("oakuk-cluster", common.log_format, common.verbose);
  cluster_tables_new(&c);
  a.config_path = common.config_path;
  int rc = run(&c, &a);
  cluster_free(&c);
  args_clear(&a);
  od_common_options_clear(&common);
  return rc;
}

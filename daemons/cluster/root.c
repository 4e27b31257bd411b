/* The cluster's side of root <-> cluster (docs/cluster.md, docs/security.md): its key and
 * certificates, registration (retried with backoff, repeated at every start and to renew the
 * certificate), the aggregate every aggregate_interval, and status reports stored in an outbox and
 * sent in batches. Every call to an https root trusts only the root's CA: the one named by the
 * join token's fingerprint at the first registration, the stored <state>/pki/ca.crt after it. */
#include "loop.h"

#include <string.h>

#define RENEW_BEFORE_S (30 * 86400)
#define BOOTSTRAP_DAYS 30

typedef enum { CALL_REGISTER, CALL_AGGREGATE, CALL_STATUS } CallKind;

typedef struct {
  Cluster *c;
  CallKind kind;
  SoupMessage *msg;
  gint64 last_id;           /* CALL_STATUS: highest outbox id sent */
  gboolean with_credential; /* CALL_REGISTER: our credential was the bearer (else the join token) */
  char *fingerprint;        /* CALL_REGISTER with the join token: the CA it names */
} Call;

static char *root_endpoint(Cluster *c, const char *path) {
  g_autofree char *base = g_strdup(c->root_url);
  while (g_str_has_suffix(base, "/"))
    base[strlen(base) - 1] = '\0';
  return g_strconcat(base, path, NULL);
}

static gboolean root_https(Cluster *c) {
  return g_ascii_strncasecmp(c->root_url, "https://", 8) == 0;
}

/* ---- the cluster's key and certificates ---- */

/* The names the certificate carries: the hosts of --advertise-url and --mqtt-host, localhost and
 * 127.0.0.1 (the cluster's own MQTT client). */
static GPtrArray *certificate_names(Cluster *c) {
  GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GUri) uri = g_uri_parse(c->advertise_url, G_URI_FLAGS_NONE, NULL);
  const char *names[] = {uri ? g_uri_get_host(uri) : NULL, c->mqtt_advertise_host, "localhost", "127.0.0.1"};
  for (gsize i = 0; i < G_N_ELEMENTS(names); i++) {
    gboolean seen = names[i] == NULL;
    for (guint k = 0; k < a->len && !seen; k++)
      seen = g_ascii_strcasecmp(a->pdata[k], names[i]) == 0;
    if (!seen)
      g_ptr_array_add(a, g_strdup(names[i]));
  }
  g_ptr_array_add(a, NULL);
  return a;
}

/* Serves chain (the certificate, then its CA) with our key on new HTTPS connections. */
static gboolean serve(Cluster *c, const char *chain, GError **error) {
  g_autofree char *pem = g_strconcat(chain, c->key_pem, NULL);
  g_autoptr(GTlsCertificate) cert = od_tls_certificate_from_pem(pem, error);
  if (cert == NULL)
    return FALSE;
  od_http_server_set_tls(c->server, cert);
  return TRUE;
}

/* Until the root signs our request, HTTPS is served with a certificate from a throwaway CA that
 * nobody trusts: nodes (which pin the root's CA) refuse it and retry. */
static char *bootstrap_chain(Cluster *c, GError **error) {
  g_autofree char *ca_key = od_tls_key_new(error);
  g_autofree char *ca =
      ca_key ? od_tls_ca_new(ca_key, "oakuk-cluster bootstrap (trusted by nobody)", error) : NULL;
  g_autoptr(GPtrArray) names = certificate_names(c);
  g_autofree char *leaf = ca ? od_tls_issue(ca, ca_key, c->key_pem, c->name,
                                            (const char *const *)names->pdata, BOOTSTRAP_DAYS, error)
                             : NULL;
  return leaf ? g_strconcat(leaf, ca, NULL) : NULL;
}

static gboolean read_optional(const char *path, char **out, GError **error) {
  g_autoptr(GError) local = NULL;
  if (g_file_get_contents(path, out, NULL, &local))
    return TRUE;
  if (g_error_matches(local, G_FILE_ERROR, G_FILE_ERROR_NOENT))
    return TRUE;
  g_set_error(error, OD_ERROR, OD_ERROR_IO, "%s: %s", path, local->message);
  return FALSE;
}

gboolean root_tls_prepare(Cluster *c, GError **error) {
  g_autofree char *dir = g_build_filename(c->state_dir, "pki", NULL);
  g_autofree char *key_path = cluster_path(c, "pki", "cluster.key");
  g_autofree char *ca_path = cluster_path(c, "pki", "ca.crt");
  g_autofree char *cert_path = cluster_path(c, "pki", "cluster.crt");
  if (!od_state_dir_prepare(dir, error) || !read_optional(key_path, &c->key_pem, error))
    return FALSE;
  if (c->key_pem == NULL) {
    c->key_pem = od_tls_key_new(error);
    if (c->key_pem == NULL || !od_tls_write_secret(key_path, c->key_pem, error))
      return FALSE;
    od_log(G_LOG_LEVEL_MESSAGE, "tls", "key", key_path, "msg", "cluster key created", NULL);
  }
  if (!read_optional(ca_path, &c->ca_pem, error) || !read_optional(cert_path, &c->cert_pem, error))
    return FALSE;
  if (c->ca_pem != NULL && (c->ca = od_tls_certificate_from_pem(c->ca_pem, error)) == NULL) {
    g_prefix_error(error, "%s: ", ca_path);
    return FALSE;
  }
  if (c->insecure)
    return TRUE;
  g_autofree char *bootstrap = c->cert_pem ? NULL : bootstrap_chain(c, error);
  if (c->cert_pem == NULL && bootstrap == NULL)
    return FALSE;
  if (!serve(c, c->cert_pem ? c->cert_pem : bootstrap, error)) {
    g_prefix_error(error, "%s: ", cert_path);
    return FALSE;
  }
  if (c->cert_pem == NULL)
    od_log(G_LOG_LEVEL_MESSAGE, "tls", "msg",
           "serving a bootstrap certificate until the root signs the cluster's (nodes refuse it meanwhile)",
           NULL);
  return TRUE;
}

/* Seconds the certificate's first entry (ours) stays valid; -1 when it cannot be read. */
static gint64 certificate_seconds_left(const char *pem) {
  g_autoptr(GTlsCertificate) cert = g_tls_certificate_new_from_pem(pem, -1, NULL);
  g_autoptr(GDateTime) after = cert ? g_tls_certificate_get_not_valid_after(cert) : NULL;
  return after ? g_date_time_to_unix(after) - cluster_wall_ms() / 1000 : -1;
}

static gboolean string_member(JsonObject *o, const char *key, gboolean required, const char **out,
                              GError **error) {
  JsonNode *n = json_object_get_member(o, key);
  *out = n != NULL && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
             ? json_node_get_string(n)
             : NULL;
  if (*out == NULL && (required || (n != NULL && !JSON_NODE_HOLDS_NULL(n)))) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "registration answer: '%s' missing or not a string", key);
    return FALSE;
  }
  return TRUE;
}

/* The root's answer carries our certificate and its CA: the CA must be the one we pinned (the
 * join token's, or the stored one), and the certificate must chain to it. */
static gboolean install_certificate(Cluster *c, Call *call, const char *cert_pem, const char *ca_pem,
                                    GError **error) {
  g_autofree char *ca_fp = od_tls_fingerprint(ca_pem, error);
  if (ca_fp == NULL) {
    g_prefix_error(error, "registration answer: ca: ");
    return FALSE;
  }
  g_autofree char *pinned = call->fingerprint ? g_strdup(call->fingerprint)
                                              : (c->ca ? od_tls_certificate_fingerprint(c->ca) : NULL);
  if (pinned == NULL || g_ascii_strcasecmp(pinned, ca_fp) != 0) {
    g_set_error(error, OD_ERROR, OD_ERROR_AUTH,
                "registration answer: ca: its fingerprint %s is not the pinned CA's (%s)", ca_fp,
                pinned ? pinned : "none");
    return FALSE;
  }
  g_autoptr(GTlsCertificate) ca = od_tls_certificate_from_pem(ca_pem, error);
  g_autoptr(GTlsCertificate) leaf = ca ? od_tls_certificate_from_pem(cert_pem, error) : NULL;
  if (leaf == NULL) {
    g_prefix_error(error, "registration answer: certificate: ");
    return FALSE;
  }
  if (g_tls_certificate_verify(leaf, NULL, ca) != 0) {
    g_set_error(error, OD_ERROR, OD_ERROR_AUTH,
                "registration answer: certificate: not valid, or not signed by the root's CA");
    return FALSE;
  }
  g_autofree char *chain = g_strconcat(cert_pem, g_str_has_suffix(cert_pem, "\n") ? "" : "\n", ca_pem, NULL);
  g_autofree char *ca_path = cluster_path(c, "pki", "ca.crt");
  g_autofree char *cert_path = cluster_path(c, "pki", "cluster.crt");
  if (!od_tls_write_secret(ca_path, ca_pem, error) || !od_tls_write_secret(cert_path, chain, error))
    return FALSE;
  if (!c->insecure && !serve(c, chain, error))
    return FALSE;
  g_set_object(&c->ca, ca);
  g_free(c->ca_pem);
  c->ca_pem = g_strdup(ca_pem);
  g_free(c->cert_pem);
  c->cert_pem = g_steal_pointer(&chain);
  g_autofree char *days = g_strdup_printf("%" G_GINT64_FORMAT, certificate_seconds_left(cert_pem) / 86400);
  od_log(G_LOG_LEVEL_MESSAGE, "tls", "certificate", cert_path, "ca_fingerprint", ca_fp, "days_left", days,
         "msg", "certificate from the root installed", NULL);
  if (!c->insecure)
    broker_certificate_changed(c);
  return TRUE;
}

/* At the first registration: a node join token (1 h, 1 use) in <state>/node-join-token, never
 * in the log. */
static void write_first_node_token(Cluster *c) {
  g_autofree char *done = store_kv_get(c->store, "node_join_token_written");
  if (done != NULL)
    return;
  g_autofree char *path = g_build_filename(c->state_dir, "node-join-token", NULL);
  g_autofree char *token = NULL, *line = NULL;
  gint64 expires_ms = 0;
  g_autoptr(GError) error = NULL;
  if (loop_join_token_new(c, 3600, 1, &token, &expires_ms, &error) != SOUP_STATUS_CREATED ||
      !od_tls_write_secret(path, (line = g_strconcat(token, "\n", NULL)), &error) ||
      !store_kv_set(c->store, "node_join_token_written", "1", &error)) {
    od_log(G_LOG_LEVEL_WARNING, "join-token", "file", path, "msg", error->message, NULL);
    return;
  }
  od_log(G_LOG_LEVEL_MESSAGE, "join-token", "file", path, "msg",
         "a node join token (1 hour, 1 use) is in this file; oakuk-cluster --new-join-token makes more",
         NULL);
}

/* ---- calls to the root ---- */

static void schedule_register(Cluster *c);

/* The root answered 401 to our credential: it no longer knows this cluster (removed), or it has
 * a problem. Register again: with the join token when there is one, else with the credential. */
static void credential_refused(Cluster *c) {
  if (!c->credential_refused)
    od_log(G_LOG_LEVEL_WARNING, "root", "msg", "root refused our credential (401); registering again", NULL);
  c->credential_refused = TRUE;
  c->register_wanted = TRUE;
  schedule_register(c);
}

static void call_free(Call *call) {
  g_clear_object(&call->msg);
  g_free(call->fingerprint);
  g_free(call);
}

static gboolean store_registration(Cluster *c, Call *call, JsonObject *o, GError **error) {
  const char *id, *token, *subnet, *cert = NULL, *ca = NULL;
  gboolean tls = root_https(c);
  if (!string_member(o, "id", TRUE, &id, error) || !string_member(o, "token", TRUE, &token, error) ||
      !string_member(o, "subnet", TRUE, &subnet, error) ||
      !string_member(o, "certificate", tls, &cert, error) || !string_member(o, "ca", tls, &ca, error))
    return FALSE;
  if (tls && !install_certificate(c, call, cert, ca, error))
    return FALSE;
  if (c->subnet != NULL && strcmp(c->subnet, subnet) != 0)
    od_log(G_LOG_LEVEL_WARNING, "root", "old", c->subnet, "new", subnet, "msg",
           "root gave a different subnet; nodes keep their /24 until they register again", NULL);
  if (!store_begin(c->store, error) || !store_kv_set(c->store, "cluster_id", id, error) ||
      !store_kv_set(c->store, "token", token, error) || !store_kv_set(c->store, "subnet", subnet, error) ||
      !store_commit(c->store, error)) {
    store_rollback(c->store);
    return FALSE;
  }
  g_free(c->cluster_id);
  g_free(c->token);
  g_free(c->subnet);
  c->cluster_id = g_strdup(id);
  c->token = g_strdup(token);
  c->subnet = g_strdup(subnet);
  od_log(G_LOG_LEVEL_MESSAGE, "root", "cluster", id, "subnet", subnet, "msg",
         call->with_credential ? "registered again with the root (credential)" : "registered with the root",
         NULL);
  return TRUE;
}

static void register_done(Cluster *c, Call *call, guint status, GBytes *body, const char *why) {
  c->registering = FALSE;
  g_autoptr(GError) error = NULL;
  if (SOUP_STATUS_IS_SUCCESSFUL(status) && body != NULL) {
    gsize len = 0;
    const char *data = g_bytes_get_data(body, &len);
    g_autoptr(JsonNode) node = od_json_parse(data, (gssize)len, &error);
    if (node != NULL && !JSON_NODE_HOLDS_OBJECT(node))
      g_set_error(&error, OD_ERROR, OD_ERROR_INVALID, "registration answer: not a JSON object");
    else if (node != NULL && store_registration(c, call, json_node_get_object(node), &error)) {
      c->register_wanted = FALSE;
      c->credential_refused = FALSE;
      c->register_backoff_s = 0;
      write_first_node_token(c);
      root_status_pump(c);
      return;
    }
  } else if (status == SOUP_STATUS_UNAUTHORIZED && call->with_credential) {
    c->credential_refused = TRUE;
  } else if (status == SOUP_STATUS_CONFLICT && !call->with_credential && c->token != NULL) {
    /* Our name is registered (by us): the credential is the way back in. */
    c->credential_refused = FALSE;
  }
  g_autofree char *st = g_strdup_printf("%u", status);
  od_log(G_LOG_LEVEL_WARNING, "root", "status", st, "bearer",
         call->with_credential ? "credential" : "join token", "msg", "registration failed; retrying",
         "reason", error ? error->message : why, NULL);
  schedule_register(c);
}

static void call_done(GObject *source, GAsyncResult *res, gpointer data) {
  Call *call = data;
  Cluster *c = call->c;
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) body = soup_session_send_and_read_finish(SOUP_SESSION(source), res, &error);
  if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
    call_free(call);
    return;
  }
  guint status = error ? 0 : soup_message_get_status(call->msg);
  g_autofree char *why = NULL;
  if (error != NULL) {
    why = g_strdup(error->message);
  } else {
    gsize len = 0;
    const char *text = body ? g_bytes_get_data(body, &len) : "";
    why = g_strdup_printf("HTTP %u: %.*s", status, (int)MIN(len, 300), text ? text : "");
  }
  switch (call->kind) {
  case CALL_REGISTER: register_done(c, call, status, body, why); break;
  case CALL_AGGREGATE:
    c->aggregate_inflight = FALSE;
    if (status == SOUP_STATUS_UNAUTHORIZED)
      credential_refused(c);
    else if (!SOUP_STATUS_IS_SUCCESSFUL(status))
      od_log(G_LOG_LEVEL_WARNING, "root", "msg", "aggregate not accepted", "reason", why, NULL);
    break;
  case CALL_STATUS:
    c->status_inflight = FALSE;
    if (SOUP_STATUS_IS_SUCCESSFUL(status)) {
      store_outbox_drop_upto(c->store, call->last_id);
      root_status_pump(c); /* what was queued while this batch was in flight */
    } else if (status == SOUP_STATUS_UNAUTHORIZED) {
      credential_refused(c);
    } else if (status == SOUP_STATUS_BAD_REQUEST) {
      /* The root will never take this batch: drop it rather than block every later report. */
      od_log(G_LOG_LEVEL_WARNING, "root", "msg", "status batch refused; dropped", "reason", why, NULL);
      store_outbox_drop_upto(c->store, call->last_id);
    } else {
      od_log(G_LOG_LEVEL_WARNING, "root", "msg", "status reports not delivered; retrying", "reason", why,
             NULL);
    }
    break;
  }
  call_free(call);
}

/* Sends the call; FALSE (call freed) when it cannot be: a bad URL, or an https root we have
 * nothing to pin (a CA or a join token's fingerprint). */
static gboolean send_call(Cluster *c, Call *call, const char *path, const char *bearer, const char *body) {
  g_autofree char *url = root_endpoint(c, path);
  call->c = c;
  call->msg = soup_message_new("POST", url);
  const char *problem =
      call->msg == NULL ? "root URL is not a valid http(s) URL"
      : root_https(c) && call->fingerprint == NULL && c->ca == NULL
          ? "no CA to trust the root with (the join token names none, and <state>/pki/ca.crt "
            "is missing)"
          : NULL;
  if (problem != NULL) {
    od_log(G_LOG_LEVEL_WARNING, "root", "url", url, "msg", problem, NULL);
    call_free(call);
    return FALSE;
  }
  if (root_https(c))
    od_tls_pin_message(call->msg, call->fingerprint ? NULL : c->ca, call->fingerprint);
  g_autofree char *auth = g_strconcat("Bearer ", bearer, NULL);
  soup_message_headers_replace(soup_message_get_request_headers(call->msg), "Authorization", auth);
  g_autoptr(GBytes) b = g_bytes_new(body, strlen(body));
  soup_message_set_request_body_from_bytes(call->msg, "application/json", b);
  switch (call->kind) {
  case CALL_REGISTER: c->registering = TRUE; break;
  case CALL_AGGREGATE: c->aggregate_inflight = TRUE; break;
  case CALL_STATUS: c->status_inflight = TRUE; break;
  }
  soup_session_send_and_read_async(c->session, call->msg, G_PRIORITY_DEFAULT, NULL, call_done, call);
  return TRUE;
}

static void send_simple(Cluster *c, CallKind kind, const char *path, const char *body, gint64 last_id) {
  if (root_https(c) && c->ca == NULL)
    return; /* nothing to trust the root with until the registration brings its CA */
  Call *call = g_new0(Call, 1);
  call->kind = kind;
  call->last_id = last_id;
  send_call(c, call, path, c->token, body);
}

/* "oakuk1.<fingerprint>.<secret>": the fingerprint; NULL for a token without one. */
static char *token_fingerprint(const char *token) {
  if (token == NULL || !g_str_has_prefix(token, "oakuk1."))
    return NULL;
  g_auto(GStrv) parts = g_strsplit(token, ".", 3);
  if (g_strv_length(parts) != 3 || strlen(parts[1]) != 64)
    return NULL;
  for (const char *p = parts[1]; *p; p++)
    if (!g_ascii_isxdigit(*p))
      return NULL;
  return g_ascii_strdown(parts[1], -1);
}

/* {"name", "location", "url", "csr"?}: the request names the hosts we are reached at. */
static char *register_body(Cluster *c, GError **error) {
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "name", c->name);
  json_object_set_string_member(o, "location", c->location ? c->location : "");
  json_object_set_string_member(o, "url", c->advertise_url);
  if (root_https(c)) {
    g_autoptr(GPtrArray) names = certificate_names(c);
    g_autofree char *csr = od_tls_csr_new(c->key_pem, c->name, (const char *const *)names->pdata, error);
    if (csr == NULL)
      return NULL;
    json_object_set_string_member(o, "csr", csr);
  }
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), o);
  return od_json_to_string(node, FALSE);
}

/* With our credential once we have one (a restart, a renewal); with the join token the first
 * time, or when the root refused the credential and a join token was given. */
static gboolean do_register(gpointer data) {
  Cluster *c = data;
  c->register_source = 0;
  if (c->registering || !c->register_wanted)
    return G_SOURCE_REMOVE;
  /* A cluster from before TLS has a credential but no CA to trust the root with: the join token's
   * fingerprint is its only way. */
  gboolean can_pin = c->ca != NULL || !root_https(c);
  gboolean with_credential = c->token != NULL && can_pin && !(c->credential_refused && c->join_token != NULL);
  if (!with_credential && c->join_token == NULL) {
    od_log(G_LOG_LEVEL_WARNING, "root", "msg", "not registered and no --join-token given; cannot register",
           NULL);
    return G_SOURCE_REMOVE;
  }
  g_autoptr(GError) error = NULL;
  g_autofree char *body = register_body(c, &error);
  if (body == NULL) {
    od_log(G_LOG_LEVEL_WARNING, "root", "field", "csr", "msg", error->message, NULL);
    schedule_register(c);
    return G_SOURCE_REMOVE;
  }
  Call *call = g_new0(Call, 1);
  call->kind = CALL_REGISTER;
  call->with_credential = with_credential;
  call->fingerprint = with_credential ? NULL : token_fingerprint(c->join_token);
  if (!send_call(c, call, "/api/v1/clusters/register", with_credential ? c->token : c->join_token, body))
    schedule_register(c);
  return G_SOURCE_REMOVE;
}

static void schedule_register(Cluster *c) {
  if (c->register_source != 0 || c->registering || c->stopping)
    return;
  c->register_backoff_s = c->register_backoff_s == 0 ? 1 : MIN(c->register_backoff_s * 2, 60);
  c->register_source = g_timeout_add_seconds((guint)c->register_backoff_s, do_register, c);
}

/* Renews the certificate by registering again while less than 30 days are left. */
static gboolean renew_check(gpointer data) {
  Cluster *c = data;
  if (c->cert_pem == NULL || c->register_wanted || c->token == NULL)
    return G_SOURCE_CONTINUE;
  gint64 left = certificate_seconds_left(c->cert_pem);
  if (left >= RENEW_BEFORE_S)
    return G_SOURCE_CONTINUE;
  g_autofree char *days = g_strdup_printf("%" G_GINT64_FORMAT, left / 86400);
  od_log(G_LOG_LEVEL_MESSAGE, "tls", "days_left", days, "msg", "renewing the certificate", NULL);
  c->register_wanted = TRUE;
  if (c->register_source == 0 && !c->registering)
    c->register_source = g_idle_add(do_register, c);
  return G_SOURCE_CONTINUE;
}

/* The aggregate plus two extra keys: "nodes", one entry per node the cluster has a report of (its
 * report's keys, "active", "drained" and "last_seen_ms" in wall-clock ms), for `oakuk nodes` at
 * the root; and "instances", every instance the cluster holds (docs/reconcile.md: its full state,
 * which the root compares with what it wants here). */
static void add_nodes(Cluster *c, JsonObject *agg, GHashTable *drained) {
  JsonArray *nodes = json_array_new();
  g_autoptr(GList) ids = g_hash_table_get_keys(c->reports);
  ids = g_list_sort(ids, (GCompareFunc)strcmp);
  gint64 now = cluster_liveness_now_ms(c), wall = g_get_real_time() / 1000 - (cluster_now_ms() - now);
  for (GList *l = ids; l != NULL; l = l->next) {
    oakuk_node_report *rep = g_hash_table_lookup(c->reports, l->data);
    char *text = oakuk_node_report_to_json(rep, FALSE, NULL);
    g_autoptr(JsonNode) n = text ? od_json_parse(text, -1, NULL) : NULL;
    od_oakuk_free(text);
    if (n == NULL || !JSON_NODE_HOLDS_OBJECT(n))
      continue;
    JsonObject *o = json_node_get_object(n);
    json_object_remove_member(o, "instances");
    gint64 age = now - oakuk_node_report_received_at_ms(rep);
    json_object_set_boolean_member(o, "active", age <= c->node_timeout_ms);
    json_object_set_boolean_member(o, "drained", g_hash_table_contains(drained, l->data));
    json_object_set_int_member(o, "last_seen_ms", wall - age);
    json_array_add_object_element(nodes, json_object_ref(o));
  }
  json_object_set_array_member(agg, "nodes", nodes);
}

/* The instance's CPU (% of one core) and memory (MB resident) as its node last reported them, as
 * "cpu" and "memory" (the root's instance keys; `oakuk top`). Nothing when its node did not. */
static void add_usage(Cluster *c, JsonObject *o, const StoreInstance *i) {
  oakuk_node_report *rep = i->node && *i->node ? g_hash_table_lookup(c->reports, i->node) : NULL;
  for (size_t k = 0; rep != NULL && k < oakuk_node_report_instance_count(rep); k++)
    if (g_strcmp0(oakuk_node_report_instance_name(rep, k), i->name) == 0) {
      json_object_set_double_member(o, "cpu", oakuk_node_report_instance_cpu_percent(rep, k));
      json_object_set_double_member(o, "memory", (double)oakuk_node_report_instance_memory_mb(rep, k));
      return;
    }
}

static void add_instances(Cluster *c, JsonObject *agg) {
  JsonArray *a = json_array_new();
  g_autoptr(GPtrArray) list = store_instance_list(c->store);
  for (guint k = 0; k < list->len; k++) {
    StoreInstance *i = list->pdata[k];
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "job_id", i->job_id);
    json_object_set_int_member(o, "instance", i->number);
    json_object_set_int_member(o, "generation", i->generation);
    json_object_set_string_member(o, "status", oakuk_instance_status_name(i->status));
    json_object_set_string_member(o, "status_detail", i->detail);
    json_object_set_string_member(o, "node", i->node);
    json_object_set_boolean_member(o, "ready", i->ready);
    add_usage(c, o, i);
    json_array_add_object_element(a, o);
  }
  json_object_set_array_member(agg, "instances", a);
}

static gboolean send_aggregate(gpointer data) {
  Cluster *c = data;
  if (c->token == NULL || c->aggregate_inflight)
    return G_SOURCE_CONTINUE;
  /* A drained node takes nothing new: its resources are not offered to the root. */
  g_autoptr(GHashTable) drained = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  g_autoptr(GPtrArray) nodes = store_node_list(c->store);
  for (guint k = 0; k < nodes->len; k++)
    if (((StoreNode *)nodes->pdata[k])->drained)
      g_hash_table_add(drained, g_strdup(((StoreNode *)nodes->pdata[k])->id));
  g_autoptr(GPtrArray) reports = g_ptr_array_new();
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, c->reports);
  while (g_hash_table_iter_next(&it, &k, &v))
    if (!g_hash_table_contains(drained, k))
      g_ptr_array_add(reports, v);
  oakuk_error *err = NULL;
  oakuk_cluster_aggregate *agg =
      oakuk_aggregate_fold((oakuk_node_report *const *)reports->pdata, reports->len,
                           cluster_liveness_now_ms(c), c->node_timeout_ms, &err);
  char *json = agg ? oakuk_cluster_aggregate_to_json(agg, FALSE, &err) : NULL;
  oakuk_cluster_aggregate_unref(agg);
  g_autoptr(JsonNode) root = json ? od_json_parse(json, -1, NULL) : NULL;
  od_oakuk_free(json);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT(root)) {
    od_log(G_LOG_LEVEL_WARNING, "aggregate", "msg", err ? oakuk_error_message(err) : "not an object", NULL);
    oakuk_error_free(err);
    return G_SOURCE_CONTINUE;
  }
  add_nodes(c, json_node_get_object(root), drained);
  add_instances(c, json_node_get_object(root));
  g_autofree char *body = od_json_to_string(root, FALSE);
  g_autofree char *path = g_strdup_printf("/api/information/%s", c->cluster_id);
  send_simple(c, CALL_AGGREGATE, path, body, 0);
  return G_SOURCE_CONTINUE;
}

static gboolean status_pump_idle(gpointer data) {
  Cluster *c = data;
  c->status_pump_source = 0;
  root_status_pump(c);
  return G_SOURCE_REMOVE;
}

static gboolean queue(Cluster *c, const StoreStatus *e, GError **error) {
  g_autofree char *n = g_strdup_printf("%" G_GINT64_FORMAT, e->number);
  g_autofree char *gen = g_strdup_printf("%" G_GINT64_FORMAT, e->generation);
  g_autofree char *ms =
      e->ready && e->ready_ms >= 0 ? g_strdup_printf("%" G_GINT64_FORMAT, e->ready_ms) : g_strdup("");
  /* ready_ms goes last: without a figure its key ends the list. */
  od_log(G_LOG_LEVEL_INFO, "status", "job", e->job_id, "instance", n, "generation", gen, "status", e->status,
         "node", e->node ? e->node : "", "ready", e->ready ? "true" : "false", *ms ? "ready_ms" : NULL, ms,
         NULL);
  if (!store_outbox_add(c->store, e, error))
    return FALSE;
  /* Statuses go out at once (one batch per main-loop turn), not on the next tick: a user waiting
   * for RUNNING should not wait for a timer. */
  if (c->status_pump_source == 0 && !c->stopping)
    c->status_pump_source = g_idle_add(status_pump_idle, c);
  return TRUE;
}

gboolean root_queue_status(Cluster *c, const StoreInstance *i, GError **error) {
  gboolean ready = i->ready && i->status == OAKUK_STATUS_RUNNING;
  StoreStatus e = {.job_id = i->job_id,
                   .number = i->number,
                   .generation = i->generation,
                   .status = (char *)oakuk_instance_status_name(i->status),
                   .detail = i->detail,
                   .node = i->node,
                   .ready = ready,
                   .ready_ms = ready ? i->ready_ms : -1};
  return queue(c, &e, error);
}

gboolean root_queue_refusal(Cluster *c, const char *job_id, gint64 number, gint64 generation, int32_t status,
                            const char *detail, GError **error) {
  StoreStatus e = {.job_id = (char *)job_id,
                   .number = number,
                   .generation = generation,
                   .status = (char *)oakuk_instance_status_name(status),
                   .detail = (char *)detail,
                   .node = "",
                   .ready_ms = -1};
  return queue(c, &e, error);
}

/* Sends up to 200 queued reports, oldest first: [{job_id, instance, generation, status,
 * status_detail, node?, ready, ready_ms?}]. */
void root_status_pump(Cluster *c) {
  if (c->token == NULL || c->status_inflight || c->stopping)
    return;
  g_autoptr(GPtrArray) batch = store_outbox_batch(c->store, 200);
  if (batch->len == 0)
    return;
  g_autoptr(JsonArray) list = json_array_new();
  gint64 last = 0;
  for (guint k = 0; k < batch->len; k++) {
    StoreStatus *e = batch->pdata[k];
    last = e->id;
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "job_id", e->job_id);
    json_object_set_int_member(o, "instance", e->number);
    json_object_set_int_member(o, "generation", e->generation);
    json_object_set_string_member(o, "status", e->status);
    json_object_set_string_member(o, "status_detail", e->detail);
    if (e->node != NULL && *e->node != '\0')
      json_object_set_string_member(o, "node", e->node);
    json_object_set_boolean_member(o, "ready", e->ready);
    if (e->ready && e->ready_ms >= 0)
      json_object_set_int_member(o, "ready_ms", e->ready_ms);
    json_array_add_object_element(list, o);
  }
  g_autoptr(JsonNode) node = json_node_init_array(json_node_alloc(), list);
  g_autofree char *body = od_json_to_string(node, FALSE);
  g_autofree char *path = g_strdup_printf("/api/v1/clusters/%s/status", c->cluster_id);
  send_simple(c, CALL_STATUS, path, body, last);
}

/* Registers at every start: the first time with the join token, later with the credential, which
 * also tells the root our current URL and gets a fresh certificate. */
void root_link_start(Cluster *c) {
  c->register_wanted = TRUE;
  c->register_source = g_idle_add(do_register, c);
  c->aggregate_source = g_timeout_add((guint)c->aggregate_interval_ms, send_aggregate, c);
  if (root_https(c))
    c->renew_source = g_timeout_add((guint)c->renew_check_ms, renew_check, c);
}

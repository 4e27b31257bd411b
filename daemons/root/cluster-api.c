/* What clusters send the root (docs/api.md "Root ↔ cluster", docs/reconcile.md "Messages"):
 * registration, aggregates with their full instances list, status reports. Every field is checked
 * here and turned into typed values; the loop decides what they mean. */
#include "api.h"
#include "pki.h"
#include "store.h"

#include <string.h>

/* ---- validation ---- */

static gboolean holds(JsonNode *n, GType type) {
  return n != NULL && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == type;
}

static gboolean absent(JsonNode *n) {
  return n == NULL || JSON_NODE_HOLDS_NULL(n);
}

/* An optional string member: absent or null is NULL; another type is an error. */
static gboolean opt_string(JsonObject *o, const char *key, const char *path, const char **out,
                           GError **error) {
  JsonNode *n = json_object_get_member(o, key);
  *out = NULL;
  if (absent(n))
    return TRUE;
  if (!holds(n, G_TYPE_STRING)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s.%s: not a string", path, key);
    return FALSE;
  }
  *out = json_node_get_string(n);
  return TRUE;
}

static gboolean opt_number(JsonObject *o, const char *key, const char *path, gboolean *has, double *out,
                           GError **error) {
  JsonNode *n = json_object_get_member(o, key);
  *has = FALSE;
  if (absent(n))
    return TRUE;
  if (!holds(n, G_TYPE_INT64) && !holds(n, G_TYPE_DOUBLE)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s.%s: not a number", path, key);
    return FALSE;
  }
  *has = TRUE;
  *out = json_node_get_double(n);
  return TRUE;
}

/* One entry about an instance (a status report entry, or an aggregate's instances[] entry). With
 * need_generation the generation must be there (aggregates); else absent or null reads as 0, a
 * cluster older than generations. */
static gboolean parse_observation(JsonNode *node, const char *path, gboolean need_generation,
                                  LoopObservation *o, GError **error) {
  if (node == NULL || !JSON_NODE_HOLDS_OBJECT(node)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s: expected an object", path);
    return FALSE;
  }
  JsonObject *e = json_node_get_object(node);
  JsonNode *job = json_object_get_member(e, "job_id"), *st = json_object_get_member(e, "status");
  JsonNode *in = json_object_get_member(e, "instance"), *gen = json_object_get_member(e, "generation");
  const char *bad = !holds(job, G_TYPE_STRING) || !*json_node_get_string(job) ? "job_id"
                    : !holds(st, G_TYPE_STRING)                               ? "status"
                    : !holds(in, G_TYPE_INT64) || json_node_get_int(in) < 0   ? "instance"
                                                                              : NULL;
  if (bad != NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s.%s: missing or of the wrong type", path, bad);
    return FALSE;
  }
  memset(o, 0, sizeof *o);
  o->job_id = json_node_get_string(job);
  o->instance = json_node_get_int(in);
  o->status = oakuk_instance_status_from_name(json_node_get_string(st));
  if (o->status < 0) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s.status: unknown instance status '%s'", path,
                json_node_get_string(st));
    return FALSE;
  }
  if ((need_generation || !absent(gen)) && (!holds(gen, G_TYPE_INT64) || json_node_get_int(gen) < 1)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s.generation: not a positive integer", path);
    return FALSE;
  }
  o->generation = absent(gen) ? 0 : json_node_get_int(gen);
  JsonNode *rn = json_object_get_member(e, "ready"), *mn = json_object_get_member(e, "ready_ms");
  if (!absent(rn) && !holds(rn, G_TYPE_BOOLEAN)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s.ready: not a boolean", path);
    return FALSE;
  }
  if (!absent(mn) && (!holds(mn, G_TYPE_INT64) || json_node_get_int(mn) < 0)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s.ready_ms: not a non-negative integer", path);
    return FALSE;
  }
  o->ready = holds(rn, G_TYPE_BOOLEAN) && json_node_get_boolean(rn);
  o->ready_ms = holds(mn, G_TYPE_INT64) ? json_node_get_int(mn) : -1;
  return opt_string(e, "status_detail", path, &o->status_detail, error) &&
         opt_string(e, "node", path, &o->node, error) &&
         opt_string(e, "publicip", path, &o->publicip, error) &&
         opt_number(e, "cpu", path, &o->has_cpu, &o->cpu, error) &&
         opt_number(e, "memory", path, &o->has_memory, &o->memory, error);
}

static void reply_invalid(Req *q, const char *code, GError *error) {
  g_autofree char *field = g_strdup(error->message);
  char *colon = strchr(field, ':');
  if (colon != NULL)
    *colon = '\0';
  od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, code, field, "%s", error->message);
}

/* ---- aggregates ---- */

/* The "nodes" list oakuk-cluster adds: every node's id, and the reports of the active ones that are
 * not drained (a drained node takes nothing new). */
static void take_nodes(LoopAggregate *a, JsonObject *root) {
  JsonNode *nn = json_object_get_member(root, "nodes");
  a->has_nodes = nn != NULL && JSON_NODE_HOLDS_ARRAY(nn);
  JsonArray *nodes = a->has_nodes ? json_node_get_array(nn) : NULL;
  for (guint k = 0; nodes != NULL && k < json_array_get_length(nodes); k++) {
    JsonNode *en = json_array_get_element(nodes, k);
    JsonObject *no = JSON_NODE_HOLDS_OBJECT(en) ? json_node_get_object(en) : NULL;
    const char *id = api_str(no, "id");
    if (id == NULL)
      continue;
    g_ptr_array_add(a->node_ids, g_strdup(id));
    if (!json_object_get_boolean_member_with_default(no, "active", FALSE) ||
        json_object_get_boolean_member_with_default(no, "drained", FALSE))
      continue;
    g_autoptr(JsonNode) copy = json_node_init_object(json_node_alloc(), no);
    g_autofree char *text = od_json_to_string(copy, FALSE);
    oakuk_node_report *rep = oakuk_node_report_from_json(text, (size_t)-1, NULL);
    if (rep != NULL)
      g_ptr_array_add(a->active_nodes, rep);
  }
}

LoopAggregate *root_aggregate_parse(const char *json, gssize len, oakuk_error **error) {
  g_autoptr(JsonNode) node = od_json_parse(json, len, NULL);
  if (node == NULL || !JSON_NODE_HOLDS_OBJECT(node)) {
    oakuk_cluster_aggregate *none =
        oakuk_cluster_aggregate_from_json(json, len < 0 ? (size_t)-1 : (size_t)len, error);
    oakuk_cluster_aggregate_unref(none);
    return NULL;
  }
  JsonObject *root = json_node_get_object(node);
  /* The instances list is state for the loop, not part of the aggregate kept and shown. */
  json_object_remove_member(root, "instances");
  g_autofree char *text = od_json_to_string(node, FALSE);
  oakuk_cluster_aggregate *agg = oakuk_cluster_aggregate_from_json(text, (size_t)-1, error);
  if (agg == NULL)
    return NULL;
  LoopAggregate *a = g_new0(LoopAggregate, 1);
  a->agg = agg;
  a->active_nodes = g_ptr_array_new_with_free_func((GDestroyNotify)oakuk_node_report_unref);
  a->node_ids = g_ptr_array_new_with_free_func(g_free);
  a->stored = g_steal_pointer(&text);
  take_nodes(a, root);
  return a;
}

/* The aggregate's "instances": absent (an older cluster) leaves *list NULL. */
static gboolean parse_instances(JsonObject *root, GArray **list, GError **error) {
  JsonNode *in = json_object_get_member(root, "instances");
  *list = NULL;
  if (absent(in))
    return TRUE;
  if (!JSON_NODE_HOLDS_ARRAY(in)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "instances: not an array");
    return FALSE;
  }
  JsonArray *arr = json_node_get_array(in);
  *list = g_array_sized_new(FALSE, TRUE, sizeof(LoopObservation), json_array_get_length(arr));
  for (guint k = 0; k < json_array_get_length(arr); k++) {
    g_autofree char *path = g_strdup_printf("instances[%u]", k);
    LoopObservation o;
    if (!parse_observation(json_array_get_element(arr, k), path, TRUE, &o, error)) {
      g_clear_pointer(list, g_array_unref);
      return FALSE;
    }
    g_array_append_val(*list, o);
  }
  return TRUE;
}

static void h_information(Req *q) {
  g_autoptr(JsonNode) node = od_http_read_json(q->msg);
  if (node == NULL)
    return;
  if (!JSON_NODE_HOLDS_OBJECT(node)) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_aggregate", "",
                        "aggregate: expected an object");
    return;
  }
  g_autoptr(GError) error = NULL;
  g_autoptr(GArray) instances = NULL;
  if (!parse_instances(json_node_get_object(node), &instances, &error)) {
    reply_invalid(q, "invalid_aggregate", error);
    return;
  }
  g_autoptr(GBytes) bytes = soup_message_body_flatten(soup_server_message_get_request_body(q->msg));
  gsize len = 0;
  const char *data = g_bytes_get_data(bytes, &len);
  oakuk_error *err = NULL;
  LoopAggregate *agg = root_aggregate_parse(data, (gssize)len, &err);
  if (agg == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_aggregate",
                        oakuk_error_path(err) ? oakuk_error_path(err) : "", "%s", oakuk_error_message(err));
    oakuk_error_free(err);
    return;
  }
  if (!loop_aggregate(q->r->loop, q->cap[0], agg, instances ? (LoopObservation *)instances->data : NULL,
                      instances ? (gssize)instances->len : -1, &error)) {
    api_reply_internal(q, error);
    return;
  }
  api_reply_message(q, SOUP_STATUS_OK, "aggregate stored");
}

/* ---- status reports ---- */

static void h_status(Req *q) {
  g_autoptr(JsonNode) node = od_http_read_json(q->msg);
  if (node == NULL)
    return;
  if (JSON_NODE_HOLDS_OBJECT(node)) { /* a single report is accepted as a list of one */
    JsonArray *one = json_array_new();
    json_array_add_object_element(one, json_object_ref(json_node_get_object(node)));
    json_node_take_array(node, one);
  }
  if (!JSON_NODE_HOLDS_ARRAY(node)) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_json", "",
                        "request body: expected an array of status reports");
    return;
  }
  JsonArray *list = json_node_get_array(node);
  g_autoptr(GArray) obs =
      g_array_sized_new(FALSE, TRUE, sizeof(LoopObservation), json_array_get_length(list));
  g_autoptr(GError) error = NULL;
  for (guint k = 0; k < json_array_get_length(list); k++) {
    g_autofree char *path = g_strdup_printf("[%u]", k);
    LoopObservation o;
    if (!parse_observation(json_array_get_element(list, k), path, FALSE, &o, &error)) {
      reply_invalid(q, "invalid_field", error);
      return;
    }
    g_array_append_val(obs, o);
  }
  if (!loop_status_report(q->r->loop, q->cap[0], (LoopObservation *)obs->data, obs->len, &error)) {
    api_reply_internal(q, error);
    return;
  }
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_int_member(o, "accepted", json_array_get_length(list));
  api_reply_object(q, SOUP_STATUS_OK, o);
}

/* ---- registration ---- */

static gboolean valid_cluster_name(const char *s) {
  gsize len = strlen(s);
  if (len == 0 || len > 64)
    return FALSE;
  for (const char *p = s; *p; p++)
    if (!g_ascii_isalnum(*p) && *p != '-' && *p != '_' && *p != '.')
      return FALSE;
  return TRUE;
}

static gboolean valid_cluster_url(const char *url) {
  g_autoptr(GUri) uri = g_uri_parse(url, G_URI_FLAGS_NONE, NULL);
  return uri != NULL && g_uri_get_host(uri) != NULL && *g_uri_get_host(uri) &&
         (g_strcmp0(g_uri_get_scheme(uri), "http") == 0 || g_strcmp0(g_uri_get_scheme(uri), "https") == 0) &&
         g_uri_get_query(uri) == NULL;
}

/* A join token (its secret's hash in *join_hash, to be used up) or the static cluster secret; else
 * why not. */
static gboolean join_allowed(Req *q, const char *bearer, char **join_hash, char **why) {
  g_autofree char *whole = od_sha256_hex(bearer);
  if (q->r->cfg.cluster_secret_hash != NULL && od_str_equal_ct(whole, q->r->cfg.cluster_secret_hash))
    return TRUE;
  g_autofree char *hash = pki_join_token_hash(q->r, bearer, why);
  if (hash == NULL)
    return FALSE;
  if (!store_join_token_valid(q->r->store, hash, root_now_ms() / 1000)) {
    *why = g_strdup("join token is unknown, used up or expired");
    return FALSE;
  }
  *join_hash = g_steal_pointer(&hash);
  return TRUE;
}

static char *join_secret(Req *q) {
  char *secret = od_http_bearer(q->msg);
  if (secret != NULL || api_body_empty(q))
    return secret;
  g_autoptr(GBytes) bytes = soup_message_body_flatten(soup_server_message_get_request_body(q->msg));
  gsize len = 0;
  const char *data = g_bytes_get_data(bytes, &len);
  g_autoptr(JsonNode) node = od_json_parse(data, (gssize)len, NULL);
  return node != NULL && JSON_NODE_HOLDS_OBJECT(node)
             ? g_strdup(api_str(json_node_get_object(node), "join_token"))
             : NULL;
}

/* Who registers: a cluster with its credential (*cluster_id), or a newcomer with a join token
 * (*join_hash, NULL for the static secret). Replies 401 itself. */
static gboolean registrant(Req *q, char **cluster_id, char **join_hash) {
  g_autofree char *bearer = join_secret(q);
  g_autofree char *why = NULL;
  if (bearer == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", q->path,
                        "missing join token or cluster credential (Authorization: Bearer ...)");
    return FALSE;
  }
  *cluster_id = api_cluster_of_bearer(q->r, bearer);
  if (*cluster_id != NULL)
    return TRUE;
  if (g_str_has_prefix(bearer, "oakukc.")) {
    od_http_reply_error(q->msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", q->path,
                        "cluster credential is unknown or revoked (was the cluster removed?)");
    return FALSE;
  }
  if (!join_allowed(q, bearer, join_hash, &why)) {
    od_http_reply_error(q->msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", q->path, "%s", why);
    return FALSE;
  }
  return TRUE;
}

/* name may be registered only by a newcomer when it is free, and by a cluster only as its own name. */
static gboolean name_allowed(Req *q, const char *name, const char *cluster_id, const char *registered) {
  if (cluster_id != NULL && g_strcmp0(cluster_id, registered) != 0) {
    g_autoptr(StoreCluster) own = store_cluster_get(q->r->store, cluster_id);
    od_http_reply_error(q->msg, SOUP_STATUS_FORBIDDEN, "forbidden", "name",
                        "name: the credential belongs to cluster %s (%s); it cannot register %s",
                        own ? own->name : "?", cluster_id, name);
    return FALSE;
  }
  if (cluster_id == NULL && registered != NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_CONFLICT, "name_taken", "name",
                        "cluster %s is registered; re-register with its credential, or remove it first",
                        name);
    return FALSE;
  }
  return TRUE;
}

/* The registration's fields, checked; NULL after a 400. */
static JsonObject *registration_body(Req *q, const char **name, const char **location, const char **url,
                                     const char **csr) {
  g_autoptr(JsonObject) body = api_body_object(q, FALSE);
  if (body == NULL || !api_require_string(q, body, "name", name) ||
      !api_require_string(q, body, "location", location) || !api_require_string(q, body, "url", url))
    return NULL;
  if (!valid_cluster_name(*name)) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "name",
                        "name: '%s' must be 1-64 characters of letters, digits, '-', '_' or '.'", *name);
    return NULL;
  }
  if (!valid_cluster_url(*url)) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "url",
                        "url: '%s' is not an http(s) URL with a host", *url);
    return NULL;
  }
  JsonNode *cn = json_object_get_member(body, "csr");
  *csr = api_str(body, "csr");
  if ((cn != NULL && *csr == NULL) || (*csr == NULL && !q->r->insecure)) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "csr",
                        "csr: a PEM certificate request (od_tls_csr_new) is required");
    return NULL;
  }
  return g_steal_pointer(&body);
}

static void h_register(Req *q) {
  g_autofree char *cluster_id = NULL, *join_hash = NULL;
  if (!registrant(q, &cluster_id, &join_hash))
    return;
  const char *name, *location, *url, *csr;
  g_autoptr(JsonObject) body = registration_body(q, &name, &location, &url, &csr);
  if (body == NULL)
    return;
  g_autofree char *registered = store_cluster_id_by_name(q->r->store, name);
  if (!name_allowed(q, name, cluster_id, registered))
    return;
  /* A cluster that registers again keeps its id, subnet and credential; one registered before
   * credentials existed gets one now. */
  g_autofree char *id = registered ? g_strdup(registered) : od_object_id();
  g_autoptr(StoreCluster) known = registered ? store_cluster_get(q->r->store, id) : NULL;
  g_autofree char *salt = NULL, *hash = NULL, *credential = NULL;
  if (known != NULL && *known->cred_hash) {
    salt = g_strdup(known->cred_salt);
    hash = g_strdup(known->cred_hash);
    credential = pki_credential(q->r, id, salt);
  } else {
    credential = pki_credential_new(q->r, id, &salt, &hash);
  }
  g_autoptr(GError) error = NULL;
  g_autofree char *cert =
      csr ? od_tls_sign_csr(q->r->ca_pem, q->r->ca_key_pem, csr, id, PKI_CLUSTER_DAYS, &error) : NULL;
  if (csr != NULL && cert == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "csr", "csr: %s", error->message);
    return;
  }
  g_autofree char *subnet = NULL;
  gboolean exhausted = FALSE;
  if (!loop_cluster_register(q->r->loop, id, name, location, url, salt, hash, join_hash, &subnet, &exhausted,
                             &error)) {
    if (exhausted)
      od_http_reply_error(q->msg, SOUP_STATUS_CONFLICT, "pool_exhausted", "name", "%s", error->message);
    else
      api_reply_internal(q, error);
    return;
  }
  od_log(G_LOG_LEVEL_MESSAGE, "cluster-register", "cluster", id, "name", name, "url", url, "subnet", subnet,
         "again", known ? "true" : "false", "certificate", cert ? "signed" : "none", NULL);
  if (g_str_has_prefix(url, "http:") && !q->r->insecure)
    od_log(G_LOG_LEVEL_WARNING, "cluster-register", "cluster", id, "url", url, "msg",
           "the cluster's URL is plain http: what the root sends it travels unencrypted", NULL);
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "id", id);
  json_object_set_string_member(o, "name", name);
  json_object_set_string_member(o, "token", credential);
  json_object_set_string_member(o, "subnet", subnet);
  if (cert != NULL)
    json_object_set_string_member(o, "certificate", cert);
  json_object_set_string_member(o, "ca", q->r->ca_pem);
  api_reply_object(q, SOUP_STATUS_CREATED, o);
}

const Route root_cluster_routes[] = {
    {"POST", "api/information/*", AUTH_CLUSTER, h_information, TRUE, 0},
    {"POST", "api/v1/clusters/register", AUTH_SELF, h_register, FALSE, 0},
    {"POST", "api/v1/clusters/*/status", AUTH_CLUSTER, h_status, FALSE, 0},
    {"POST", "api/v1/clusters/*/information", AUTH_CLUSTER, h_information, FALSE, 0},
};
const gsize root_cluster_route_count = G_N_ELEMENTS(root_cluster_routes);

/* The cluster's HTTP API: deploy/delete and node drain/removal forwarded by the root, node
 * registration, read-only views, /healthz and /metrics. Requests are validated here and handed to
 * the loop, which commits every accepted change before the reply. */
#include "loop.h"

#include <stdarg.h>
#include <string.h>

typedef enum { AUTH_NONE, AUTH_ROOT } Auth;

typedef struct {
  Cluster *c;
  SoupServerMessage *msg;
  const char *path;
  const char *cap[3];
} Req;

typedef struct {
  const char *method;
  const char *pattern;
  Auth auth;
  void (*fn)(Req *q);
} Route;

static const char *str_member(JsonObject *o, const char *key) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  return n != NULL && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
             ? json_node_get_string(n)
             : NULL;
}

static void reply_object(Req *q, guint status, JsonObject *o) {
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), o);
  od_http_reply_json(q->msg, status, node);
}

static void reply_internal(Req *q, GError *error) {
  od_log(G_LOG_LEVEL_WARNING, "http", "path", q->path, "msg", error ? error->message : "unknown", NULL);
  od_http_reply_error(q->msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, "internal", q->path, "%s",
                      error ? error->message : "internal error");
}

static JsonObject *body_object(Req *q) {
  g_autoptr(JsonNode) node = od_http_read_json(q->msg);
  if (node == NULL)
    return NULL;
  if (!JSON_NODE_HOLDS_OBJECT(node)) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_json", "",
                        "request body: expected a JSON object");
    return NULL;
  }
  return json_object_ref(json_node_get_object(node));
}

static gboolean parse_instance(Req *q, const char *text, gint64 *n) {
  if (!g_ascii_string_to_signed(text, 10, 0, G_MAXINT32, n, NULL)) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", q->path,
                        "instance number '%s' is not a non-negative integer", text);
    return FALSE;
  }
  return TRUE;
}

static gboolean authenticate(Req *q, Auth auth) {
  if (auth == AUTH_NONE)
    return TRUE;
  g_autofree char *token = od_http_bearer(q->msg);
  if (token == NULL || q->c->token == NULL || !od_str_equal_ct(token, q->c->token)) {
    od_http_reply_error(q->msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", q->path, "%s",
                        token == NULL ? "missing 'Authorization: Bearer <token>'"
                                      : "token is not the credential the root issued to this cluster");
    return FALSE;
  }
  return TRUE;
}

/* A rejected input: logged naming the field, answered 400 with it as the path. */
static void reject_field(Req *q, const char *field, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static void reject_field(Req *q, const char *field, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *message = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  od_log(G_LOG_LEVEL_WARNING, "http-reject", "path", q->path, "field", field, "msg", message, NULL);
  od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", field, "%s", message);
}

/* ---- root -> cluster ---- */

/* The job as the cluster keeps it: every variant (the cluster chooses one per node), without what
 * only this request says (instance_list, a root's chosen placement, the generation). */
static JsonObject *job_of(JsonObject *body) {
  g_autoptr(JsonNode) in = json_node_init_object(json_node_alloc(), body);
  g_autofree char *text = od_json_to_string(in, FALSE);
  g_autoptr(JsonNode) copy = od_json_parse(text, -1, NULL);
  JsonObject *job = json_object_ref(json_node_get_object(copy));
  json_object_remove_member(job, "instance_list");
  json_object_remove_member(job, "placement");
  json_object_remove_member(job, "generation");
  return job;
}

/* Parses the job; NULL with *problem ("path: why") when it is not one. */
static oakuk_microservice *parse_job(JsonObject *job, gint64 n, char **text, char **problem) {
  JsonNode *in = json_object_get_member(job, "instance_number");
  if (in != NULL && (!JSON_NODE_HOLDS_VALUE(in) || json_node_get_value_type(in) != G_TYPE_INT64 ||
                     json_node_get_int(in) != n)) {
    *problem =
        g_strdup_printf("instance_number: must equal the instance in the path (%" G_GINT64_FORMAT ")", n);
    return NULL;
  }
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), job);
  *text = od_json_to_string(node, FALSE);
  oakuk_error *err = NULL;
  oakuk_microservice *ms = oakuk_microservice_parse(*text, (size_t)-1, &err);
  if (ms == NULL) {
    *problem = g_strdup(oakuk_error_message(err)); /* "path: why" */
    oakuk_error_free(err);
    return NULL;
  }
  if (oakuk_microservice_service_name(ms) == NULL) {
    oakuk_microservice_unref(ms);
    *problem = g_strdup("job_name: missing (need job_name or app_name and app_ns)");
    return NULL;
  }
  return ms;
}

static void h_deploy(Req *q) {
  gint64 n = 0;
  if (!parse_instance(q, q->cap[1], &n))
    return;
  g_autoptr(JsonObject) body = body_object(q);
  if (body == NULL)
    return;
  JsonNode *gn = json_object_get_member(body, "generation");
  if (gn != NULL && (!JSON_NODE_HOLDS_VALUE(gn) || json_node_get_value_type(gn) != G_TYPE_INT64 ||
                     json_node_get_int(gn) < 0)) {
    reject_field(q, "generation", "generation: not a non-negative integer");
    return;
  }
  g_autoptr(JsonObject) job = job_of(body);
  g_autofree char *text = NULL, *problem = NULL;
  oakuk_microservice *ms = parse_job(job, n, &text, &problem);
  LoopDeploy d = {.job_id = q->cap[0],
                  .number = n,
                  .generation = gn ? json_node_get_int(gn) : 0, /* a root from before generations */
                  .job = text,
                  .ms = ms};
  LoopDeployAnswer a = {0};
  g_autoptr(GError) error = NULL;
  gboolean ok = loop_deploy(q->c, &d, &a, &error);
  oakuk_microservice_unref(ms);
  if (!ok) {
    reply_internal(q, error);
  } else if (a.outcome == LOOP_DEPLOY_INVALID) {
    g_autofree char *path = g_strdup(problem);
    char *colon = strchr(path, ':');
    if (colon != NULL)
      *colon = '\0';
    od_log(G_LOG_LEVEL_WARNING, "http-reject", "path", q->path, "field", path, "msg", problem, NULL);
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_descriptor", path, "job: %s", problem);
  } else {
    g_autoptr(JsonObject) o = json_object_new();
    if (a.outcome == LOOP_DEPLOY_KEPT || a.outcome == LOOP_DEPLOY_ADOPTED)
      json_object_set_string_member(o, "message",
                                    a.outcome == LOOP_DEPLOY_KEPT
                                        ? "instance already deployed here"
                                        : "instance already deployed here; generation adopted");
    json_object_set_string_member(o, "instance", a.instance);
    json_object_set_string_member(o, "status", oakuk_instance_status_name(a.status));
    json_object_set_string_member(o, "node", a.node ? a.node : "");
    json_object_set_int_member(o, "generation", a.generation);
    if (a.detail != NULL && *a.detail != '\0')
      json_object_set_string_member(o, "status_detail", a.detail);
    reply_object(q, SOUP_STATUS_OK, o);
  }
  loop_deploy_answer_clear(&a);
}

/* ?generation=G: a non-negative integer; absent means any (-1). */
static gboolean query_generation(Req *q, gint64 *out) {
  const char *query = g_uri_get_query(soup_server_message_get_uri(q->msg));
  g_autoptr(GHashTable) params = query ? g_uri_parse_params(query, -1, "&", G_URI_PARAMS_NONE, NULL) : NULL;
  const char *text = params ? g_hash_table_lookup(params, "generation") : NULL;
  *out = -1;
  if (text == NULL)
    return TRUE;
  if (!g_ascii_string_to_signed(text, 10, 0, G_MAXINT64, out, NULL)) {
    reject_field(q, "generation", "generation: '%s' is not a non-negative integer", text);
    return FALSE;
  }
  return TRUE;
}

static void h_undeploy(Req *q) {
  gint64 n = 0, max_generation = -1, held = 0;
  if (!parse_instance(q, q->cap[1], &n) || !query_generation(q, &max_generation))
    return;
  g_autoptr(GError) error = NULL;
  guint status = loop_delete(q->c, q->cap[0], n, max_generation, &held, &error);
  if (status == SOUP_STATUS_NOT_FOUND) {
    od_http_reply_error(q->msg, status, "not_found", q->path, "no instance %s of job %s on this cluster",
                        q->cap[1], q->cap[0]);
  } else if (status == SOUP_STATUS_CONFLICT) {
    od_http_reply_error(q->msg, status, "stale", "generation",
                        "the cluster holds generation %" G_GINT64_FORMAT
                        " of this instance, newer than %" G_GINT64_FORMAT,
                        held, max_generation);
  } else if (status >= 500) {
    reply_internal(q, error);
  } else {
    g_autoptr(JsonObject) o = json_object_new();
    json_object_set_string_member(o, "message", "instance removed");
    json_object_set_int_member(o, "generation", held);
    reply_object(q, status, o);
  }
}

/* ---- nodes ---- */

static gboolean valid_node_id(const char *s) {
  gsize len = strlen(s);
  if (len == 0 || len > 64 || strcmp(s, CLUSTER_MQTT_USER) == 0)
    return FALSE;
  for (const char *p = s; *p; p++)
    if (!g_ascii_isalnum(*p) && *p != '-' && *p != '_' && *p != '.')
      return FALSE;
  return TRUE;
}

char *cluster_node_credential_hash(const char *password) {
  /* A node's password is 20 random characters (> 110 bits): one SHA-256 is enough, as for tokens,
   * and keeps registrations off the slow path. */
  g_autofree char *hex = od_sha256_hex(password);
  return g_strconcat("sha256$", hex, NULL);
}

/* A node registration on its way: validated here, its credential checked (off the main loop when
 * the stored hash is a PBKDF2 one of a cluster from before), then handed to the loop. */
typedef struct {
  Cluster *c;
  SoupServerMessage *msg;
  char *path;
  char *id, *ip, *token_hash, *credential, *stored;
  gboolean credential_ok;
} NodeReg;

static void node_reg_free(NodeReg *r) {
  g_object_unref(r->msg);
  char **strs[] = {&r->path, &r->id, &r->ip, &r->token_hash, &r->credential, &r->stored};
  for (gsize i = 0; i < G_N_ELEMENTS(strs); i++)
    g_free(*strs[i]);
  g_free(r);
}

static void reply_token_refused(SoupServerMessage *msg) {
  od_http_reply_error(msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", "join_token",
                      "join_token: missing, expired, used up or not a node join token of this cluster");
}

static void node_reg_answer(NodeReg *r) {
  Cluster *c = r->c;
  LoopNodeRegistration lr = {.id = r->id,
                             .ip = r->ip,
                             .token_hash = r->token_hash,
                             .credential = r->credential_ok ? r->credential : NULL};
  g_autofree char *password = NULL, *subnet = NULL;
  g_autoptr(GError) error = NULL;
  switch (loop_node_register(c, &lr, &password, &subnet, &error)) {
  case LOOP_NODE_NOT_READY:
    od_http_reply_error(r->msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "not_ready", r->path,
                        "cluster is not registered with the root yet (no subnet to hand out); retry later");
    return;
  case LOOP_NODE_BAD_TOKEN: reply_token_refused(r->msg); return;
  case LOOP_NODE_NAME_TAKEN:
    od_log(G_LOG_LEVEL_WARNING, "node-register", "node", r->id, "msg",
           "refused: the id is registered and no credential of it was given", NULL);
    od_http_reply_error(r->msg, SOUP_STATUS_CONFLICT, "name_taken", "capabilities.id",
                        "node %s is registered; register again with its credential, or remove it first",
                        r->id);
    return;
  case LOOP_NODE_POOL_EXHAUSTED:
    od_http_reply_error(r->msg, SOUP_STATUS_CONFLICT, "pool_exhausted", "capabilities.id",
                        "every /24 of the cluster subnet %s is taken", c->subnet);
    return;
  case LOOP_NODE_FAILED:
    od_log(G_LOG_LEVEL_WARNING, "http", "path", r->path, "msg", error ? error->message : "unknown", NULL);
    od_http_reply_error(r->msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, "internal", r->path, "%s",
                        error ? error->message : "internal error");
    return;
  case LOOP_NODE_CREATED:
  case LOOP_NODE_RENEWED: break;
  }
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "id", r->id);
  json_object_set_string_member(o, "mqtt_host", c->mqtt_advertise_host);
  json_object_set_int_member(o, "mqtt_port", c->mqtt_port);
  json_object_set_string_member(o, "mqtt_username", r->id);
  json_object_set_string_member(o, "mqtt_password", password);
  json_object_set_string_member(o, "subnet", subnet);
  json_object_set_boolean_member(o, "mqtt_tls", !c->insecure);
  if (!c->insecure && c->ca_pem != NULL)
    json_object_set_string_member(o, "ca", c->ca_pem);
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), o);
  od_http_reply_json(r->msg, SOUP_STATUS_CREATED, node);
}

static void verify_thread(GTask *task, gpointer source, gpointer data, GCancellable *cancel) {
  NodeReg *r = data;
  g_task_return_boolean(task, od_password_verify(r->stored, r->credential));
}

static void verify_done(GObject *source, GAsyncResult *res, gpointer data) {
  NodeReg *r = g_task_get_task_data(G_TASK(res));
  r->credential_ok = g_task_propagate_boolean(G_TASK(res), NULL);
  node_reg_answer(r);
  soup_server_message_unpause(r->msg);
}

/* Checks r->credential against the node's stored hash, then answers. */
static void node_reg_check(NodeReg *r) {
  r->stored = r->credential ? store_node_cred_hash(r->c->store, r->id) : NULL;
  if (r->stored == NULL || g_str_has_prefix(r->stored, "sha256$")) {
    g_autofree char *hash = r->stored ? cluster_node_credential_hash(r->credential) : NULL;
    r->credential_ok = hash != NULL && od_str_equal_ct(hash, r->stored);
    node_reg_answer(r);
    node_reg_free(r);
    return;
  }
  /* PBKDF2 (100 000 rounds) of a node registered by an older cluster: not on the main loop. */
  soup_server_message_pause(r->msg);
  GTask *task = g_task_new(NULL, NULL, verify_done, NULL);
  g_task_set_task_data(task, r, (GDestroyNotify)node_reg_free);
  g_task_run_in_thread(task, verify_thread);
  g_object_unref(task);
}

static void h_node_register(Req *q) {
  g_autoptr(JsonObject) body = body_object(q);
  if (body == NULL)
    return;
  JsonNode *cred = json_object_get_member(body, "credential");
  if (cred != NULL && !JSON_NODE_HOLDS_NULL(cred) && str_member(body, "credential") == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "credential",
                        "credential: not a string (the node's MQTT password)");
    return;
  }
  const char *credential = str_member(body, "credential");
  g_autofree char *token_hash = loop_join_token_hash(str_member(body, "join_token"));
  /* Without a credential only a join token lets anyone in: refused before anything else is read. */
  if (credential == NULL &&
      (token_hash == NULL || !store_join_token_usable(q->c->store, token_hash, cluster_wall_ms() / 1000))) {
    reply_token_refused(q->msg);
    return;
  }
  JsonNode *caps = json_object_get_member(body, "capabilities");
  if (caps == NULL || !JSON_NODE_HOLDS_OBJECT(caps)) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "capabilities",
                        "capabilities: a node report object (docs/architecture.md §7.1) is required");
    return;
  }
  g_autofree char *caps_text = od_json_to_string(caps, FALSE);
  oakuk_error *err = NULL;
  oakuk_node_report *rep = oakuk_node_report_from_json(caps_text, (size_t)-1, &err);
  if (rep == NULL) {
    g_autofree char *path =
        g_strdup_printf("capabilities.%s", oakuk_error_path(err) ? oakuk_error_path(err) : "");
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", path, "capabilities: %s",
                        oakuk_error_message(err));
    oakuk_error_free(err);
    return;
  }
  NodeReg *r = g_new0(NodeReg, 1);
  r->c = q->c;
  r->msg = g_object_ref(q->msg);
  r->path = g_strdup(q->path);
  r->id = g_strdup(oakuk_node_report_id(rep));
  r->ip = g_strdup(oakuk_node_report_ip(rep) ? oakuk_node_report_ip(rep) : "");
  r->token_hash = g_steal_pointer(&token_hash);
  r->credential = g_strdup(credential);
  oakuk_node_report_unref(rep);
  if (!valid_node_id(r->id)) {
    od_http_reply_error(
        q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "capabilities.id",
        "capabilities.id: '%s' must be 1-64 characters of letters, digits, '-', '_' or '.' (and not "
        "'%s')",
        r->id, CLUSTER_MQTT_USER);
    node_reg_free(r);
    return;
  }
  node_reg_check(r);
}

/* ---- node join tokens (from the root) ---- */

static gboolean int_field(Req *q, JsonObject *body, const char *key, gint64 def, gint64 min, gint64 max,
                          gint64 *out) {
  JsonNode *n = body ? json_object_get_member(body, key) : NULL;
  *out = def;
  if (n == NULL || JSON_NODE_HOLDS_NULL(n))
    return TRUE;
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64 ||
      json_node_get_int(n) < min || json_node_get_int(n) > max) {
    reject_field(q, key, "%s: not an integer from %" G_GINT64_FORMAT " to %" G_GINT64_FORMAT, key, min, max);
    return FALSE;
  }
  *out = json_node_get_int(n);
  return TRUE;
}

/* POST /api/v1/tokens {"ttl_s"?, "uses"?} -> 201 {"token", "expires_at", "uses"} */
static void h_tokens(Req *q) {
  g_autoptr(JsonObject) body = NULL;
  /* An empty body asks for the defaults. */
  if (soup_server_message_get_request_body(q->msg)->length > 0 && (body = body_object(q)) == NULL)
    return;
  gint64 ttl_s = 0, uses = 0;
  if (!int_field(q, body, "ttl_s", 3600, 60, 31536000, &ttl_s) ||
      !int_field(q, body, "uses", 1, 1, 1000, &uses))
    return;
  g_autofree char *token = NULL;
  gint64 expires_ms = 0;
  g_autoptr(GError) error = NULL;
  guint status = loop_join_token_new(q->c, ttl_s, uses, &token, &expires_ms, &error);
  if (status == SOUP_STATUS_SERVICE_UNAVAILABLE) {
    od_http_reply_error(q->msg, status, "not_ready", q->path, "%s", error->message);
    return;
  }
  if (status != SOUP_STATUS_CREATED) {
    reply_internal(q, error);
    return;
  }
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "token", token);
  json_object_set_int_member(o, "expires_at", expires_ms);
  json_object_set_int_member(o, "uses", uses);
  reply_object(q, SOUP_STATUS_CREATED, o);
}

/* POST|DELETE /api/v1/nodes/<id>/drain and DELETE /api/v1/nodes/<id> (forwarded by the root). */
static void node_answer(Req *q, guint status, GError *error, const char *message) {
  if (status == SOUP_STATUS_NOT_FOUND) {
    od_http_reply_error(q->msg, status, "not_found", q->path, "no node %s in this cluster", q->cap[0]);
  } else if (status != SOUP_STATUS_OK) {
    reply_internal(q, error);
  } else {
    g_autoptr(JsonObject) o = json_object_new();
    json_object_set_string_member(o, "node", q->cap[0]);
    json_object_set_string_member(o, "message", message);
    reply_object(q, status, o);
  }
}

static void h_node_drain(Req *q) {
  g_autoptr(GError) error = NULL;
  guint status = loop_node_drain(q->c, q->cap[0], TRUE, &error);
  node_answer(q, status, error, "drained: its instances move to other nodes, it takes nothing new");
}

static void h_node_undrain(Req *q) {
  g_autoptr(GError) error = NULL;
  guint status = loop_node_drain(q->c, q->cap[0], FALSE, &error);
  node_answer(q, status, error, "drain ended");
}

static void h_node_remove(Req *q) {
  g_autoptr(GError) error = NULL;
  guint status = loop_node_remove(q->c, q->cap[0], &error);
  node_answer(q, status, error, "removed: its instances moved, its login and subnet released");
}

/* ---- read-only views ---- */

static void h_explain(Req *q) {
  g_autoptr(JsonObject) o = store_explanation_get(q->c->store, q->cap[0]);
  if (o == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_NOT_FOUND, "not_found", q->path,
                        "no scheduling explanation for job %s", q->cap[0]);
    return;
  }
  reply_object(q, SOUP_STATUS_OK, o);
}

static void h_nodes(Req *q) {
  g_autoptr(JsonArray) a = json_array_new();
  g_autoptr(GPtrArray) nodes = store_node_list(q->c->store);
  for (guint k = 0; k < nodes->len; k++) {
    StoreNode *n = nodes->pdata[k];
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "id", n->id);
    json_object_set_string_member(o, "subnet", n->subnet);
    json_object_set_string_member(o, "ip", n->ip);
    json_object_set_boolean_member(o, "active", cluster_node_active(q->c, n->id));
    json_object_set_boolean_member(o, "reachable", g_hash_table_contains(q->c->reachable, n->id));
    json_object_set_boolean_member(o, "drained", n->drained);
    json_array_add_object_element(a, o);
  }
  g_autoptr(JsonNode) node = json_node_init_array(json_node_alloc(), a);
  od_http_reply_json(q->msg, SOUP_STATUS_OK, node);
}

static JsonObject *instance_view(Cluster *c, const StoreInstance *i, GPtrArray *olds, gint64 wall) {
  JsonObject *o = json_object_new();
  json_object_set_string_member(o, "name", i->name);
  json_object_set_string_member(o, "job_id", i->job_id);
  json_object_set_string_member(o, "job_name", i->job_name);
  json_object_set_int_member(o, "instance", i->number);
  json_object_set_int_member(o, "generation", i->generation);
  json_object_set_string_member(o, "node", i->node);
  json_object_set_int_member(o, "node_generation", i->node_generation);
  json_object_set_string_member(o, "ip", i->ip);
  json_object_set_string_member(o, "status", oakuk_instance_status_name(i->status));
  json_object_set_string_member(o, "status_detail", i->detail);
  /* ready_ms: the node's own measure, present only while ready (and only when the node sent one) */
  json_object_set_boolean_member(o, "ready", i->ready);
  if (i->ready && i->ready_ms >= 0)
    json_object_set_int_member(o, "ready_ms", i->ready_ms);
  g_autoptr(JsonNode) pl = od_json_parse(i->placement, -1, NULL);
  if (pl != NULL && JSON_NODE_HOLDS_OBJECT(pl) && json_object_get_size(json_node_get_object(pl)) > 0)
    json_object_set_member(o, "placement", json_node_copy(pl));
  JsonArray *avoid = json_array_new();
  g_autoptr(GHashTable) av = store_avoid_get(c->store, i->name, wall);
  g_autoptr(GList) names = g_list_sort(g_hash_table_get_keys(av), (GCompareFunc)strcmp);
  for (GList *l = names; l != NULL; l = l->next)
    json_array_add_string_element(avoid, l->data);
  json_object_set_array_member(o, "avoid", avoid);
  JsonArray *copies = json_array_new();
  for (guint k = 0; k < olds->len; k++) {
    StoreOldCopy *old = olds->pdata[k];
    if (strcmp(old->name, i->name) != 0)
      continue;
    JsonObject *e = json_object_new();
    json_object_set_string_member(e, "node", old->node);
    json_object_set_int_member(e, "generation", old->generation);
    json_object_set_string_member(e, "reason", old->kind);
    json_object_set_string_member(e, "delete", old->hold ? "when the instance runs elsewhere" : "pending");
    json_array_add_object_element(copies, e);
  }
  json_object_set_array_member(o, "old_copies", copies);
  return o;
}

static void h_instances(Req *q) {
  g_autoptr(JsonArray) a = json_array_new();
  g_autoptr(GPtrArray) list = store_instance_list(q->c->store);
  g_autoptr(GPtrArray) olds = store_old_copy_list(q->c->store, NULL);
  gint64 wall = cluster_wall_ms();
  for (guint k = 0; k < list->len; k++)
    json_array_add_object_element(a, instance_view(q->c, list->pdata[k], olds, wall));
  g_autoptr(JsonNode) node = json_node_init_array(json_node_alloc(), a);
  od_http_reply_json(q->msg, SOUP_STATUS_OK, node);
}

/* GET /api/v1/instances/<name>/logs?lines=N (from the root): asks the instance's node. */
static void h_logs(Req *q) {
  gint64 lines = 100;
  const char *query = g_uri_get_query(soup_server_message_get_uri(q->msg));
  g_autoptr(GHashTable) params = query ? g_uri_parse_params(query, -1, "&", G_URI_PARAMS_NONE, NULL) : NULL;
  const char *ltext = params ? g_hash_table_lookup(params, "lines") : NULL;
  if (ltext != NULL && !g_ascii_string_to_signed(ltext, 10, 1, 10000, &lines, NULL)) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "lines",
                        "lines: '%s' is not a number of lines in [1, 10000]", ltext);
    return;
  }
  g_autoptr(StoreInstance) i = store_instance_get(q->c->store, q->cap[0]);
  if (i == NULL || *i->node == '\0') {
    od_http_reply_error(q->msg, SOUP_STATUS_NOT_FOUND, "not_found", q->path,
                        "no instance %s placed on a node of this cluster", q->cap[0]);
    return;
  }
  cluster_logs_request(q->c, q->msg, i->node, q->cap[0], lines);
}

static void h_healthz(Req *q) {
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "status", "ok");
  json_object_set_string_member(o, "version", OAKUK_CLUSTER_VERSION);
  json_object_set_boolean_member(o, "registered", q->c->token != NULL);
  json_object_set_boolean_member(o, "mqtt_connected", q->c->mqtt_up);
  json_object_set_boolean_member(o, "tls", !q->c->insecure);
  reply_object(q, SOUP_STATUS_OK, o);
}

static void h_metrics(Req *q) {
  Cluster *c = q->c;
  GString *out = g_string_new(NULL);
  guint active = 0;
  GHashTableIter it;
  gpointer k;
  g_hash_table_iter_init(&it, c->reports);
  while (g_hash_table_iter_next(&it, &k, NULL))
    active += cluster_node_active(c, k);
  od_metrics_build_info(out, "oakuk-cluster", OAKUK_CLUSTER_VERSION);
  od_metrics_process(out);
  od_metrics_value(out, "oakuk_cluster_nodes", "gauge", "Nodes registered",
                   store_count(c->store, STORE_COUNT_NODES));
  od_metrics_value(out, "oakuk_cluster_nodes_active", "gauge", "Nodes that reported within the node timeout",
                   active);
  od_metrics_header(out, "oakuk_cluster_instances", "gauge", "Instances placed here, by status");
  g_autoptr(GPtrArray) counts = store_status_counts(c->store);
  for (guint j = 0; j < counts->len; j++) {
    g_auto(GStrv) kv = g_strsplit(counts->pdata[j], "\t", 2);
    g_string_append_printf(out, "oakuk_cluster_instances{status=\"%s\"} %s\n", kv[0], kv[1] ? kv[1] : "0");
  }
  const struct {
    const char *name, *help;
    StoreCount what;
  } gauges[] = {
      {"oakuk_cluster_instances_ready", "Instances that answer their readiness probe", STORE_COUNT_READY},
      {"oakuk_cluster_deliveries_pending", "Deploy and delete messages not yet acknowledged by their node",
       STORE_COUNT_DELIVERIES},
      {"oakuk_cluster_status_pending", "Status changes not yet delivered to the root", STORE_COUNT_OUTBOX},
      {"oakuk_cluster_old_copies_pending", "Copies of moved instances not yet removed from their old node",
       STORE_COUNT_OLD_COPIES},
  };
  for (gsize j = 0; j < G_N_ELEMENTS(gauges); j++)
    od_metrics_value(out, gauges[j].name, "gauge", gauges[j].help, store_count(c->store, gauges[j].what));
  od_metrics_value(out, "oakuk_cluster_mqtt_connected", "gauge", "1 while connected to the broker",
                   c->mqtt_up ? 1 : 0);
  /* Without a label: malformed payloads (as before the rate limit, so older dashboards keep their
   * series); reason="rate": messages over a node's rate. */
  od_metrics_header(out, "oakuk_cluster_mqtt_rejected_total", "counter",
                    "MQTT messages from nodes refused: malformed (no label), or over the node's rate");
  g_string_append_printf(out,
                         "oakuk_cluster_mqtt_rejected_total %" G_GUINT64_FORMAT "\n"
                         "oakuk_cluster_mqtt_rejected_total{reason=\"rate\"} %" G_GUINT64_FORMAT "\n",
                         c->mqtt_rejected, c->mqtt_rate_rejected);
  od_metrics_value(out, "oakuk_cluster_broker_restarts_total", "counter",
                   "Restarts of the cluster's mosquitto", c->broker_restarts);
  od_metrics_value(out, "oakuk_cluster_registered", "gauge", "1 once the root registered this cluster",
                   c->token != NULL);
  od_mqtt_write_metrics(c->mqtt, out);
  od_http_reply_metrics(q->msg, out, "oakuk_cluster", c->http_counts, c->http_durations);
}

/* ---- routing ---- */

static const Route routes[] = {
    {"GET", "healthz", AUTH_NONE, h_healthz},
    {"GET", "metrics", AUTH_NONE, h_metrics},
    {"POST", "api/service/*/*", AUTH_ROOT, h_deploy},
    {"DELETE", "api/service/*/*", AUTH_ROOT, h_undeploy},
    {"POST", "api/node/register", AUTH_NONE, h_node_register},
    {"POST", "api/v1/tokens", AUTH_ROOT, h_tokens},
    {"GET", "api/v1/services/*/explain", AUTH_NONE, h_explain},
    {"GET", "api/v1/nodes", AUTH_NONE, h_nodes},
    {"DELETE", "api/v1/nodes/*", AUTH_ROOT, h_node_remove},
    {"POST", "api/v1/nodes/*/drain", AUTH_ROOT, h_node_drain},
    {"DELETE", "api/v1/nodes/*/drain", AUTH_ROOT, h_node_undrain},
    {"GET", "api/v1/instances", AUTH_NONE, h_instances},
    {"GET", "api/v1/instances/*/logs", AUTH_ROOT, h_logs},
};

static void handle(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                   gpointer data) {
  Cluster *c = data;
  const char *method = soup_server_message_get_method(msg);
  g_auto(GStrv) seg = od_path_split(path);
  g_autoptr(GString) allow = g_string_new(NULL);
  for (gsize i = 0; i < G_N_ELEMENTS(routes); i++) {
    Req q = {.c = c, .msg = msg, .path = path};
    if (!od_path_match(seg, routes[i].pattern, q.cap, G_N_ELEMENTS(q.cap)))
      continue;
    if (strcmp(routes[i].method, method) != 0) {
      g_string_append_printf(allow, "%s%s", allow->len ? ", " : "", routes[i].method);
      continue;
    }
    od_http_set_route(msg, routes[i].pattern);
    if (authenticate(&q, routes[i].auth))
      routes[i].fn(&q);
    return;
  }
  od_http_reply_no_route(msg, method, path, allow->str);
}

void cluster_api_register(Cluster *c) {
  soup_server_add_handler(c->server, NULL, handle, c, NULL);
  if (c->http_durations == NULL)
    c->http_durations = od_histogram_new("oakuk_cluster_http_request_duration_seconds",
                                         "Time from a request's first byte to the end of its response, by "
                                         "method and route",
                                         od_http_duration_bounds, od_http_duration_bounds_len);
  od_http_count_requests(c->server, c->http_counts, c->http_durations);
}

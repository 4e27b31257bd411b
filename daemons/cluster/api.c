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
                                      : "token is not the one the root issued to this cluster");
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

static gboolean join_token_ok(Cluster *c, const char *token) {
  if (token == NULL)
    return FALSE;
  g_autofree char *hash = od_sha256_hex(token);
  return store_join_token_known(c->store, hash);
}

static void h_node_register(Req *q) {
  g_autoptr(JsonObject) body = body_object(q);
  if (body == NULL)
    return;
  if (!join_token_ok(q->c, str_member(body, "join_token"))) {
    od_http_reply_error(q->msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", "join_token",
                        "join_token: missing or not a node join token of this cluster");
    return;
  }
  JsonNode *caps = json_object_get_member(body, "capabilities");
  if (caps == NULL || !JSON_NODE_HOLDS_OBJECT(caps)) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "capabilities",
                        "capabilities: a node report object (DESIGN §6) is required");
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
  g_autofree char *id = g_strdup(oakuk_node_report_id(rep));
  g_autofree char *ip = g_strdup(oakuk_node_report_ip(rep) ? oakuk_node_report_ip(rep) : "");
  oakuk_node_report_unref(rep);
  if (!valid_node_id(id)) {
    od_http_reply_error(
        q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "capabilities.id",
        "capabilities.id: '%s' must be 1-64 characters of letters, digits, '-', '_' or '.' (and not "
        "'%s')",
        id, CLUSTER_MQTT_USER);
    return;
  }
  g_autofree char *password = NULL, *subnet = NULL;
  g_autoptr(GError) error = NULL;
  guint status = loop_node_register(q->c, id, ip, &password, &subnet, &error);
  if (status == SOUP_STATUS_SERVICE_UNAVAILABLE) {
    od_http_reply_error(q->msg, status, "not_ready", q->path,
                        "cluster is not registered with the root yet (no subnet to hand out); retry later");
  } else if (status == SOUP_STATUS_CONFLICT) {
    od_http_reply_error(q->msg, status, "pool_exhausted", "capabilities.id",
                        "every /24 of the cluster subnet %s is taken", q->c->subnet);
  } else if (status != SOUP_STATUS_CREATED) {
    reply_internal(q, error);
  } else {
    g_autoptr(JsonObject) o = json_object_new();
    json_object_set_string_member(o, "id", id);
    json_object_set_string_member(o, "mqtt_host", q->c->mqtt_advertise_host);
    json_object_set_int_member(o, "mqtt_port", q->c->mqtt_port);
    json_object_set_string_member(o, "mqtt_username", id);
    json_object_set_string_member(o, "mqtt_password", password);
    json_object_set_string_member(o, "subnet", subnet);
    reply_object(q, SOUP_STATUS_CREATED, o);
  }
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
  g_string_append_printf(out, "# TYPE oakuk_cluster_nodes gauge\noakuk_cluster_nodes %" G_GINT64_FORMAT "\n",
                         store_count(c->store, STORE_COUNT_NODES));
  g_string_append_printf(out, "# TYPE oakuk_cluster_nodes_active gauge\noakuk_cluster_nodes_active %u\n",
                         active);
  g_string_append(out, "# TYPE oakuk_cluster_instances gauge\n");
  g_autoptr(GPtrArray) counts = store_status_counts(c->store);
  for (guint j = 0; j < counts->len; j++) {
    g_auto(GStrv) kv = g_strsplit(counts->pdata[j], "\t", 2);
    g_string_append_printf(out, "oakuk_cluster_instances{status=\"%s\"} %s\n", kv[0], kv[1] ? kv[1] : "0");
  }
  const struct {
    const char *name;
    StoreCount what;
  } gauges[] = {
      {"oakuk_cluster_instances_ready", STORE_COUNT_READY},
      {"oakuk_cluster_deliveries_pending", STORE_COUNT_DELIVERIES},
      {"oakuk_cluster_status_pending", STORE_COUNT_OUTBOX},
      {"oakuk_cluster_old_copies_pending", STORE_COUNT_OLD_COPIES},
  };
  for (gsize j = 0; j < G_N_ELEMENTS(gauges); j++)
    g_string_append_printf(out, "# TYPE %s gauge\n%s %" G_GINT64_FORMAT "\n", gauges[j].name, gauges[j].name,
                           store_count(c->store, gauges[j].what));
  g_string_append_printf(out, "# TYPE oakuk_cluster_mqtt_connected gauge\noakuk_cluster_mqtt_connected %d\n",
                         c->mqtt_up ? 1 : 0);
  g_string_append_printf(
      out,
      "# TYPE oakuk_cluster_mqtt_rejected_total counter\noakuk_cluster_mqtt_rejected_total %" G_GUINT64_FORMAT
      "\n",
      c->mqtt_rejected);
  g_string_append_printf(out,
                         "# TYPE oakuk_cluster_broker_restarts_total counter\n"
                         "oakuk_cluster_broker_restarts_total %u\n",
                         c->broker_restarts);
  g_string_append_printf(out, "# TYPE oakuk_cluster_registered gauge\noakuk_cluster_registered %d\n",
                         c->token != NULL);
  od_http_reply_metrics(q->msg, out, "oakuk_cluster", c->http_counts);
}

/* ---- routing ---- */

static const Route routes[] = {
    {"GET", "healthz", AUTH_NONE, h_healthz},
    {"GET", "metrics", AUTH_NONE, h_metrics},
    {"POST", "api/service/*/*", AUTH_ROOT, h_deploy},
    {"DELETE", "api/service/*/*", AUTH_ROOT, h_undeploy},
    {"POST", "api/node/register", AUTH_NONE, h_node_register},
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
    if (authenticate(&q, routes[i].auth))
      routes[i].fn(&q);
    return;
  }
  od_http_reply_no_route(msg, method, path, allow->str);
}

void cluster_api_register(Cluster *c) {
  soup_server_add_handler(c->server, NULL, handle, c, NULL);
  od_http_count_requests(c->server, c->http_counts);
}

/* The cluster's HTTP API: deploy/delete forwarded by the root, node registration, read-only
 * views, /healthz and /metrics. Every accepted change is committed before the reply. */
#include "cluster.h"

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
  cluster_rollback(q->c);
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

/* ---- root -> cluster ---- */

static void h_deploy(Req *q) {
  gint64 n = 0;
  if (!parse_instance(q, q->cap[1], &n))
    return;
  g_autoptr(JsonObject) body = body_object(q);
  if (body == NULL)
    return;
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonObject) reply = NULL;
  guint status = jobs_deploy(q->c, q->cap[0], n, body, &reply, &error);
  if (status == SOUP_STATUS_BAD_REQUEST) {
    g_autofree char *path = g_strdup(error->message);
    char *colon = strchr(path, ':');
    if (colon != NULL)
      *colon = '\0';
    od_http_reply_error(q->msg, status, "invalid_descriptor", path, "job: %s", error->message);
  } else if (status >= 500) {
    reply_internal(q, error);
  } else {
    reply_object(q, status, reply);
  }
}

static void h_undeploy(Req *q) {
  gint64 n = 0;
  if (!parse_instance(q, q->cap[1], &n))
    return;
  g_autoptr(GError) error = NULL;
  guint status = jobs_delete(q->c, q->cap[0], n, &error);
  if (status == SOUP_STATUS_NOT_FOUND) {
    od_http_reply_error(q->msg, status, "not_found", q->path, "no instance %s of job %s on this cluster",
                        q->cap[1], q->cap[0]);
  } else if (status >= 500) {
    reply_internal(q, error);
  } else {
    g_autoptr(JsonObject) o = json_object_new();
    json_object_set_string_member(o, "message", "instance removed");
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

/* The node's /24: kept when it registered before, else the lowest one no node holds. */
static gboolean node_subnet(Req *q, const char *id, char **subnet, gint64 *index) {
  g_autofree char *idx = od_db_query_text(q->c->db, "SELECT subnet_index FROM nodes WHERE id = ?1", id, NULL);
  if (idx != NULL) {
    *index = g_ascii_strtoll(idx, NULL, 10);
    *subnet = od_db_query_text(q->c->db, "SELECT subnet FROM nodes WHERE id = ?1", id, NULL);
    return TRUE;
  }
  for (gint64 i = 0;; i++) {
    g_autofree char *cidr = jobs_node_subnet(q->c, i);
    if (cidr == NULL)
      return FALSE;
    g_autofree char *is = g_strdup_printf("%" G_GINT64_FORMAT, i);
    g_autofree char *used =
        od_db_query_text(q->c->db, "SELECT id FROM nodes WHERE subnet_index = CAST(?1 AS INTEGER)", is, NULL);
    if (used == NULL) {
      *index = i;
      *subnet = g_steal_pointer(&cidr);
      return TRUE;
    }
  }
}

static gboolean join_token_ok(Cluster *c, const char *token) {
  if (token == NULL)
    return FALSE;
  g_autofree char *hash = od_sha256_hex(token);
  g_autofree char *found =
      od_db_query_text(c->db, "SELECT hash FROM join_tokens WHERE hash = ?1", hash, NULL);
  return found != NULL;
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
  g_autofree char *ip = g_strdup(oakuk_node_report_ip(rep));
  oakuk_node_report_unref(rep);
  if (!valid_node_id(id)) {
    od_http_reply_error(
        q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "capabilities.id",
        "capabilities.id: '%s' must be 1-64 characters of letters, digits, '-', '_' or '.' (and not "
        "'%s')",
        id, CLUSTER_MQTT_USER);
    return;
  }
  if (q->c->subnet == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "not_ready", q->path,
                        "cluster is not registered with the root yet (no subnet to hand out); retry later");
    return;
  }
  g_autofree char *subnet = NULL;
  gint64 index = 0;
  if (!node_subnet(q, id, &subnet, &index)) {
    od_http_reply_error(q->msg, SOUP_STATUS_CONFLICT, "pool_exhausted", "capabilities.id",
                        "every /24 of the cluster subnet %s is taken", q->c->subnet);
    return;
  }
  g_autofree char *password = od_password_generate();
  g_autofree char *hash = od_password_hash(password);
  g_autofree char *idx = g_strdup_printf("%" G_GINT64_FORMAT, index);
  g_autofree char *now = g_strdup_printf("%" G_GINT64_FORMAT, g_get_real_time() / 1000);
  g_autoptr(GError) error = NULL;
  if (!cluster_begin(q->c, &error) ||
      !od_db_run(q->c->db, &error,
                 "INSERT INTO nodes (id, cred_hash, subnet_index, subnet, ip, registered_at)"
                 " VALUES (?1, ?2, CAST(?3 AS INTEGER), ?4, ?5, CAST(?6 AS INTEGER))"
                 " ON CONFLICT (id) DO UPDATE SET cred_hash = excluded.cred_hash, ip = excluded.ip",
                 id, hash, idx, subnet, ip, now, NULL) ||
      !broker_set_password(q->c, id, password, &error) || !cluster_commit(q->c, &error)) {
    reply_internal(q, error);
    return;
  }
  q->c->net_dirty = TRUE;
  od_log(G_LOG_LEVEL_MESSAGE, "node-register", "node", id, "subnet", subnet, "ip", ip, NULL);
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "id", id);
  json_object_set_string_member(o, "mqtt_host", q->c->mqtt_advertise_host);
  json_object_set_int_member(o, "mqtt_port", q->c->mqtt_port);
  json_object_set_string_member(o, "mqtt_username", id);
  json_object_set_string_member(o, "mqtt_password", password);
  json_object_set_string_member(o, "subnet", subnet);
  reply_object(q, SOUP_STATUS_CREATED, o);
}

/* ---- read-only views ---- */

static void h_explain(Req *q) {
  g_autoptr(sqlite3_stmt) st = od_db_prepare(
      q->c->db,
      "SELECT job_id, job_name, instance, lines FROM explanations WHERE job_id = ?1 OR job_name = ?1", NULL);
  sqlite3_bind_text(st, 1, q->cap[0], -1, SQLITE_TRANSIENT);
  if (st == NULL || sqlite3_step(st) != SQLITE_ROW) {
    od_http_reply_error(q->msg, SOUP_STATUS_NOT_FOUND, "not_found", q->path,
                        "no scheduling explanation for job %s", q->cap[0]);
    return;
  }
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "service", (const char *)sqlite3_column_text(st, 0));
  json_object_set_string_member(o, "job_name", (const char *)sqlite3_column_text(st, 1));
  json_object_set_int_member(o, "instance", sqlite3_column_int64(st, 2));
  g_autoptr(JsonNode) lines = od_json_parse((const char *)sqlite3_column_text(st, 3), -1, NULL);
  json_object_set_member(o, "lines", lines ? json_node_copy(lines) : json_node_new(JSON_NODE_NULL));
  reply_object(q, SOUP_STATUS_OK, o);
}

static void h_nodes(Req *q) {
  g_autoptr(JsonArray) a = json_array_new();
  g_autoptr(sqlite3_stmt) st = od_db_prepare(q->c->db, "SELECT id, subnet, ip FROM nodes ORDER BY id", NULL);
  gint64 now = cluster_liveness_now_ms(q->c);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
    const char *id = (const char *)sqlite3_column_text(st, 0);
    oakuk_node_report *rep = g_hash_table_lookup(q->c->reports, id);
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "id", id);
    json_object_set_string_member(o, "subnet", (const char *)sqlite3_column_text(st, 1));
    json_object_set_string_member(o, "ip", (const char *)sqlite3_column_text(st, 2));
    json_object_set_boolean_member(
        o, "active", rep != NULL && now - oakuk_node_report_received_at_ms(rep) <= q->c->node_timeout_ms);
    json_object_set_boolean_member(o, "reachable", g_hash_table_contains(q->c->reachable, id));
    json_array_add_object_element(a, o);
  }
  g_autoptr(JsonNode) node = json_node_init_array(json_node_alloc(), a);
  od_http_reply_json(q->msg, SOUP_STATUS_OK, node);
}

static void h_instances(Req *q) {
  g_autoptr(JsonArray) a = json_array_new();
  g_autoptr(sqlite3_stmt) st =
      od_db_prepare(q->c->db,
                    "SELECT name, job_id, job_name, instance, node, ip, status, detail, ready,"
                    " ready_ms FROM instances ORDER BY name",
                    NULL);
  const char *keys[] = {"name", "job_id", "job_name", "instance", "node", "ip", "status", "status_detail"};
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
    JsonObject *o = json_object_new();
    for (int i = 0; i < 8; i++) {
      if (i == 3)
        json_object_set_int_member(o, keys[i], sqlite3_column_int64(st, i));
      else
        json_object_set_string_member(o, keys[i], (const char *)sqlite3_column_text(st, i));
    }
    /* ready_ms: the node's own measure, present only while ready (and only when the node sent one) */
    json_object_set_boolean_member(o, "ready", sqlite3_column_int64(st, 8) != 0);
    if (sqlite3_column_int64(st, 8) != 0 && sqlite3_column_type(st, 9) != SQLITE_NULL)
      json_object_set_int_member(o, "ready_ms", sqlite3_column_int64(st, 9));
    json_array_add_object_element(a, o);
  }
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
  g_autofree char *node =
      od_db_query_text(q->c->db, "SELECT node FROM instances WHERE name = ?1", q->cap[0], NULL);
  if (node == NULL || *node == '\0') {
    od_http_reply_error(q->msg, SOUP_STATUS_NOT_FOUND, "not_found", q->path,
                        "no instance %s placed on a node of this cluster", q->cap[0]);
    return;
  }
  cluster_logs_request(q->c, q->msg, node, q->cap[0], lines);
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
  gpointer v;
  g_hash_table_iter_init(&it, c->reports);
  while (g_hash_table_iter_next(&it, NULL, &v))
    active += cluster_liveness_now_ms(c) - oakuk_node_report_received_at_ms(v) <= c->node_timeout_ms;
  g_string_append_printf(out, "# TYPE oakuk_cluster_nodes gauge\noakuk_cluster_nodes %" G_GINT64_FORMAT "\n",
                         od_db_count(c->db, "SELECT COUNT(*) FROM nodes"));
  g_string_append_printf(out, "# TYPE oakuk_cluster_nodes_active gauge\noakuk_cluster_nodes_active %u\n",
                         active);
  g_string_append(out, "# TYPE oakuk_cluster_instances gauge\n");
  g_autoptr(sqlite3_stmt) st =
      od_db_prepare(c->db, "SELECT status, COUNT(*) FROM instances GROUP BY status ORDER BY status", NULL);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW)
    g_string_append_printf(out, "oakuk_cluster_instances{status=\"%s\"} %lld\n", sqlite3_column_text(st, 0),
                           (long long)sqlite3_column_int64(st, 1));
  g_string_append_printf(
      out, "# TYPE oakuk_cluster_instances_ready gauge\noakuk_cluster_instances_ready %" G_GINT64_FORMAT "\n",
      od_db_count(c->db, "SELECT COUNT(*) FROM instances WHERE ready != 0"));
  g_string_append_printf(
      out,
      "# TYPE oakuk_cluster_deliveries_pending gauge\noakuk_cluster_deliveries_pending %" G_GINT64_FORMAT
      "\n",
      od_db_count(c->db, "SELECT COUNT(*) FROM deliveries"));
  g_string_append_printf(
      out, "# TYPE oakuk_cluster_status_pending gauge\noakuk_cluster_status_pending %" G_GINT64_FORMAT "\n",
      od_db_count(c->db, "SELECT COUNT(*) FROM status_outbox"));
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

/* The root's HTTP API: Oakestra-compatible endpoints, the native /api/v1/ API, cluster endpoints,
 * /healthz and /metrics. Every accepted change is committed before the reply. */
#include "root.h"

#include <arpa/inet.h>
#include <string.h>

typedef enum { AUTH_NONE, AUTH_USER, AUTH_CLUSTER, AUTH_SELF } Auth;

typedef struct {
  Root *r;
  SoupServerMessage *msg;
  const char *path;
  const char *cap[3];
  char *user;
  gboolean compat;
} Req;

typedef void (*Handler)(Req *q);

typedef struct {
  const char *method;
  const char *pattern;
  Auth auth;
  Handler fn;
  gboolean compat;
} Route;

/* ---- small helpers ---- */

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

static void reply_array(Req *q, guint status, JsonArray *a) {
  g_autoptr(JsonNode) node = json_node_init_array(json_node_alloc(), a);
  od_http_reply_json(q->msg, status, node);
}

static void reply_message(Req *q, guint status, const char *message) {
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "message", message);
  reply_object(q, status, o);
}

static void reply_internal(Req *q, GError *error) {
  root_rollback(q->r);
  od_log(G_LOG_LEVEL_WARNING, "http", "path", q->path, "msg", error ? error->message : "unknown", NULL);
  od_http_reply_error(q->msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, "internal", q->path, "%s",
                      error ? error->message : "internal error");
}

static void reply_not_found(Req *q, const char *what, const char *id) {
  od_http_reply_error(q->msg, SOUP_STATUS_NOT_FOUND, "not_found", q->path, "%s %s not found", what, id);
}

static gboolean request_body_empty(Req *q) {
  return soup_server_message_get_request_body(q->msg)->length == 0;
}

/* The body as a JSON object; with optional, an empty body reads as {}. Replies 400 itself. */
static JsonObject *body_object(Req *q, gboolean optional) {
  if (optional && request_body_empty(q))
    return json_object_new();
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

static gboolean require_string(Req *q, JsonObject *o, const char *key, const char **out) {
  *out = str_member(o, key);
  if (*out == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", key, "%s: a string is required",
                        key);
    return FALSE;
  }
  return TRUE;
}

static JsonObject *parse_object(const char *text) {
  g_autoptr(JsonNode) node = text ? od_json_parse(text, -1, NULL) : NULL;
  return node && JSON_NODE_HOLDS_OBJECT(node) ? json_object_ref(json_node_get_object(node)) : NULL;
}

static JsonArray *query_docs(Root *r, const char *sql, const char *arg) {
  JsonArray *out = json_array_new();
  g_autoptr(sqlite3_stmt) st = od_db_prepare(r->db, sql, NULL);
  if (arg != NULL)
    sqlite3_bind_text(st, 1, arg, -1, SQLITE_TRANSIENT);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
    JsonObject *o = parse_object((const char *)sqlite3_column_text(st, 0));
    if (o != NULL)
      json_array_add_object_element(out, o);
  }
  return out;
}

/* What the API shows of a stored service document. Every instance entry has "ready" (entries
 * stored before readiness existed lack it). The Oakestra-compatible view leaves out the instances
 * being removed (UNDEPLOYED, waiting for their cluster to confirm): Oakestra drops an instance from
 * instance_list as soon as its DELETE is accepted, and its clients (the thesis's Appendix A) expect
 * the next GET not to list it. The native view keeps them until the cluster confirms. */
static void service_view(JsonObject *service, gboolean compat) {
  JsonArray *list = service && json_object_has_member(service, "instance_list")
                        ? json_object_get_array_member(service, "instance_list")
                        : NULL;
  for (guint i = 0; list != NULL && i < json_array_get_length(list); i++) {
    JsonObject *inst = json_array_get_object_element(list, i);
    if (inst == NULL)
      continue;
    if (compat && g_strcmp0(str_member(inst, "status"), "UNDEPLOYED") == 0) {
      json_array_remove_element(list, i--);
      continue;
    }
    if (!json_object_has_member(inst, "ready"))
      json_object_set_boolean_member(inst, "ready", FALSE);
  }
}

/* Service documents of a query (its first column), as the API shows them. */
static JsonArray *query_services(Root *r, const char *sql, const char *arg, gboolean compat) {
  JsonArray *out = query_docs(r, sql, arg);
  for (guint i = 0; i < json_array_get_length(out); i++)
    service_view(json_array_get_object_element(out, i), compat);
  return out;
}

static JsonObject *oid(const char *id) {
  JsonObject *o = json_object_new();
  json_object_set_string_member(o, "$oid", id);
  return o;
}

/* ---- tokens ---- */

static char *issue_token(Root *r, const char *sub, const char *typ, gint64 ttl_s) {
  g_autoptr(JsonObject) claims = json_object_new();
  gint64 now = root_now_ms() / 1000;
  g_autofree char *jti = od_random_hex(8);
  json_object_set_string_member(claims, "sub", sub);
  json_object_set_string_member(claims, "typ", typ);
  json_object_set_int_member(claims, "iat", now);
  if (ttl_s > 0)
    json_object_set_int_member(claims, "exp", now + ttl_s);
  json_object_set_string_member(claims, "jti", jti);
  return od_jwt_sign(r->secret, sizeof r->secret, claims);
}

/* Verifies a JWT of kind typ; returns its subject or NULL with a message in *why. */
static char *verify_token(Root *r, const char *token, const char *typ, char **why) {
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonObject) claims =
      od_jwt_verify(r->secret, sizeof r->secret, token, root_now_ms() / 1000, &error);
  if (claims == NULL) {
    *why = g_strdup(error->message);
    return NULL;
  }
  if (g_strcmp0(str_member(claims, "typ"), typ) != 0 || str_member(claims, "sub") == NULL) {
    *why = g_strdup_printf("token is not a%s %s token", typ[0] == 'a' ? "n" : "", typ);
    return NULL;
  }
  return g_strdup(str_member(claims, "sub"));
}

static gboolean authenticate(Req *q, Auth auth) {
  if (auth == AUTH_NONE || auth == AUTH_SELF)
    return TRUE;
  g_autofree char *token = od_http_bearer(q->msg);
  g_autofree char *why = NULL;
  if (token == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", q->path,
                        "missing 'Authorization: Bearer <token>'");
    return FALSE;
  }
  if (auth == AUTH_USER) {
    q->user = verify_token(q->r, token, "access", &why);
    g_autofree char *known =
        q->user ? od_db_query_text(q->r->db, "SELECT name FROM users WHERE name = ?1", q->user, NULL) : NULL;
    if (known == NULL) {
      od_http_reply_error(q->msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", q->path, "%s",
                          why ? why : "token user no longer exists");
      return FALSE;
    }
    return TRUE;
  }
  /* Cluster endpoints: the token the root issued to this very cluster at registration. */
  g_autofree char *sub = verify_token(q->r, token, "cluster", &why);
  g_autofree char *stored =
      sub ? od_db_query_text(q->r->db, "SELECT token FROM clusters WHERE id = ?1", sub, NULL) : NULL;
  if (stored == NULL || !od_str_equal_ct(stored, token)) {
    od_http_reply_error(q->msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", q->path, "%s",
                        why ? why : "cluster token was revoked or the cluster is unknown");
    return FALSE;
  }
  if (g_strcmp0(sub, q->cap[0]) != 0) {
    od_http_reply_error(q->msg, SOUP_STATUS_FORBIDDEN, "forbidden", q->path,
                        "token belongs to cluster %s, not %s", sub, q->cap[0]);
    return FALSE;
  }
  return TRUE;
}

/* ---- health, metrics, auth ---- */

static void h_healthz(Req *q) {
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "status", "ok");
  json_object_set_string_member(o, "version", OAKUK_ROOT_VERSION);
  reply_object(q, SOUP_STATUS_OK, o);
}

static void h_metrics(Req *q) {
  Root *r = q->r;
  GString *out = g_string_new(NULL);
  g_string_append_printf(
      out, "# TYPE oakuk_root_applications gauge\noakuk_root_applications %" G_GINT64_FORMAT "\n",
      od_db_count(r->db, "SELECT COUNT(*) FROM applications"));
  g_string_append_printf(out, "# TYPE oakuk_root_services gauge\noakuk_root_services %" G_GINT64_FORMAT "\n",
                         od_db_count(r->db, "SELECT COUNT(*) FROM services"));
  g_string_append(out, "# TYPE oakuk_root_instances gauge\n");
  g_autoptr(sqlite3_stmt) st = od_db_prepare(r->db,
                                             "SELECT json_extract(i.value, '$.status'), COUNT(*) FROM "
                                             "services s, json_each(s.doc, '$.instance_list') i"
                                             " GROUP BY 1 ORDER BY 1",
                                             NULL);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW)
    g_string_append_printf(out, "oakuk_root_instances{status=\"%s\"} %lld\n", sqlite3_column_text(st, 0),
                           (long long)sqlite3_column_int64(st, 1));
  guint active = 0;
  GHashTableIter it;
  gpointer k;
  g_hash_table_iter_init(&it, r->aggregates);
  while (g_hash_table_iter_next(&it, &k, NULL))
    active += root_cluster_active(r, k);
  g_string_append_printf(out, "# TYPE oakuk_root_clusters gauge\noakuk_root_clusters %" G_GINT64_FORMAT "\n",
                         od_db_count(r->db, "SELECT COUNT(*) FROM clusters"));
  g_string_append_printf(out, "# TYPE oakuk_root_clusters_active gauge\noakuk_root_clusters_active %u\n",
                         active);
  g_string_append_printf(
      out, "# TYPE oakuk_root_forwards_pending gauge\noakuk_root_forwards_pending %" G_GINT64_FORMAT "\n",
      od_db_count(r->db, "SELECT COUNT(*) FROM forwards"));
  od_http_reply_metrics(q->msg, out, "oakuk_root", r->http_counts);
}

static void reply_tokens(Req *q, const char *user) {
  g_autoptr(JsonObject) o = json_object_new();
  g_autofree char *token = issue_token(q->r, user, "access", q->r->token_ttl_s);
  g_autofree char *refresh = issue_token(q->r, user, "refresh", q->r->refresh_ttl_s);
  json_object_set_string_member(o, "message", "logged in");
  json_object_set_string_member(o, "token", token);
  json_object_set_string_member(o, "refresh_token", refresh);
  reply_object(q, SOUP_STATUS_OK, o);
}

static void h_login(Req *q) {
  g_autoptr(JsonObject) body = body_object(q, FALSE);
  const char *user, *password;
  if (body == NULL || !require_string(q, body, "username", &user) ||
      !require_string(q, body, "password", &password))
    return;
  g_autofree char *stored =
      od_db_query_text(q->r->db, "SELECT password FROM users WHERE name = ?1", user, NULL);
  if (!od_password_verify(stored, password)) {
    od_log(G_LOG_LEVEL_MESSAGE, "login", "user", user, "result", "denied", NULL);
    od_http_reply_error(q->msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", q->path,
                        "invalid username or password");
    return;
  }
  reply_tokens(q, user);
}

static void h_refresh(Req *q) {
  g_autofree char *token = NULL;
  if (!request_body_empty(q)) {
    g_autoptr(JsonObject) body = body_object(q, FALSE);
    if (body == NULL)
      return;
    token = g_strdup(str_member(body, "refresh_token"));
  }
  if (token == NULL)
    token = od_http_bearer(q->msg);
  if (token == NULL) {
    od_http_reply_error(
        q->msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", q->path,
        "missing refresh token ('Authorization: Bearer <refresh_token>' or {\"refresh_token\": ...})");
    return;
  }
  g_autofree char *why = NULL;
  g_autofree char *user = verify_token(q->r, token, "refresh", &why);
  g_autofree char *known =
      user ? od_db_query_text(q->r->db, "SELECT name FROM users WHERE name = ?1", user, NULL) : NULL;
  if (known == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", q->path, "%s",
                        why ? why : "token user no longer exists");
    return;
  }
  reply_tokens(q, user);
}

/* ---- applications ---- */

static JsonArray *user_applications(Req *q) {
  return query_docs(q->r, "SELECT doc FROM applications WHERE user = ?1 ORDER BY created, rowid", q->user);
}

/* Builds and stores the service document of one microservice. */
static gboolean insert_service(Req *q, oakuk_microservice *ms, const char *app_id, const char *app_name,
                               const char *app_ns, GError **error) {
  oakuk_error *err = NULL;
  char *text = oakuk_microservice_to_json(ms, FALSE, &err);
  if (text == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "serialize microservice: %s", oakuk_error_message(err));
    oakuk_error_free(err);
    return FALSE;
  }
  g_autoptr(JsonObject) msobj = parse_object(text);
  od_oakuk_free(text);
  if (msobj == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "serialize microservice: not a JSON object");
    return FALSE;
  }
  const char *sid = oakuk_microservice_id(ms);
  g_autofree char *job_name = g_strdup_printf("%s.%s.%s.%s", app_name, app_ns, oakuk_microservice_name(ms),
                                              oakuk_microservice_namespace(ms));
  json_object_set_string_member(msobj, "microserviceID", sid);
  json_object_set_string_member(msobj, "app_name", app_name);
  json_object_set_string_member(msobj, "app_ns", app_ns);
  json_object_set_string_member(msobj, "job_name", job_name);
  g_autoptr(JsonNode) msnode = json_node_init_object(json_node_alloc(), msobj);
  g_autofree char *ms_json = od_json_to_string(msnode, FALSE);
  /* The service document: the microservice's own fields plus Oakestra's bookkeeping keys. */
  g_autoptr(JsonObject) doc = parse_object(ms_json);
  json_object_set_object_member(doc, "_id", oid(sid));
  json_object_set_string_member(doc, "applicationID", app_id);
  json_object_set_string_member(doc, "service_name", oakuk_microservice_name(ms));
  json_object_set_string_member(doc, "service_ns", oakuk_microservice_namespace(ms));
  if (str_member(doc, "image") == NULL)
    json_object_set_string_member(doc, "image", str_member(doc, "code") ? str_member(doc, "code") : "");
  json_object_set_int_member(doc, "next_instance_progressive_number", 0);
  json_object_set_string_member(doc, "status", "REQUESTED");
  json_object_set_array_member(doc, "instance_list", json_array_new());
  g_autoptr(JsonNode) docnode = json_node_init_object(json_node_alloc(), doc);
  g_autofree char *doc_json = od_json_to_string(docnode, FALSE);
  return od_db_run(q->r->db, error,
                   "INSERT INTO services (id, app_id, user, doc, ms) VALUES (?1, ?2, ?3, ?4, ?5)", sid,
                   app_id, q->user, doc_json, ms_json, NULL);
}

static JsonObject *lib_error(oakuk_error *err, GError **error) {
  g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s", oakuk_error_message(err));
  oakuk_error_free(err);
  return NULL;
}

/* Registers one application and its services; sets *conflict when the name is taken. */
static JsonObject *insert_application(Req *q, oakuk_application *app, gboolean *conflict, GError **error) {
  const char *name = oakuk_application_name(app), *ns = oakuk_application_namespace(app);
  g_autofree char *taken = od_db_query_text(
      q->r->db, "SELECT id FROM applications WHERE user = ?1 AND name = ?2 AND namespace = ?3", q->user, name,
      ns, NULL);
  if (taken != NULL) {
    *conflict = TRUE;
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "application %s.%s exists already (id %s)", name, ns,
                taken);
    return NULL;
  }
  g_autofree char *app_id = od_object_id();
  oakuk_error *err = NULL;
  if (oakuk_application_set_id(app, app_id, &err) != 0)
    return lib_error(err, error);
  JsonArray *ids = json_array_new();
  JsonObject *doc = json_object_new();
  json_object_set_object_member(doc, "_id", oid(app_id));
  json_object_set_string_member(doc, "applicationID", app_id);
  json_object_set_string_member(doc, "application_name", name);
  json_object_set_string_member(doc, "application_namespace", ns);
  json_object_set_string_member(doc, "application_desc",
                                oakuk_application_desc(app) ? oakuk_application_desc(app) : "");
  json_object_set_string_member(doc, "userId", q->user);
  json_object_set_array_member(doc, "microservices", ids);
  for (size_t i = 0; i < oakuk_application_microservice_count(app); i++) {
    oakuk_microservice *ms = oakuk_application_microservice(app, i);
    g_autofree char *sid = od_object_id();
    if (oakuk_microservice_set_id(ms, sid, &err) != 0) {
      json_object_unref(doc);
      return lib_error(err, error);
    }
    json_array_add_string_element(ids, sid);
  }
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), doc);
  g_autofree char *text = od_json_to_string(node, FALSE);
  g_autofree char *now = g_strdup_printf("%" G_GINT64_FORMAT, root_now_ms());
  if (!od_db_run(
          q->r->db, error,
          "INSERT INTO applications (id, user, name, namespace, doc, created) VALUES (?1, ?2, ?3, ?4, ?5,"
          " CAST(?6 AS INTEGER))",
          app_id, q->user, name, ns, text, now, NULL)) {
    json_object_unref(doc);
    return NULL;
  }
  for (size_t i = 0; i < oakuk_application_microservice_count(app); i++) {
    if (!insert_service(q, oakuk_application_microservice(app, i), app_id, name, ns, error)) {
      json_object_unref(doc);
      return NULL;
    }
  }
  return doc;
}

static void h_app_create(Req *q) {
  g_autoptr(JsonNode) check = od_http_read_json(q->msg);
  if (check == NULL)
    return;
  g_autoptr(GBytes) bytes = soup_message_body_flatten(soup_server_message_get_request_body(q->msg));
  gsize len = 0;
  const char *data = g_bytes_get_data(bytes, &len);
  oakuk_error *err = NULL;
  oakuk_descriptor *d = oakuk_descriptor_parse(data, len, &err);
  if (d == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_descriptor",
                        oakuk_error_path(err) ? oakuk_error_path(err) : "", "%s", oakuk_error_message(err));
    oakuk_error_free(err);
    return;
  }
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonArray) created = json_array_new();
  gboolean conflict = FALSE;
  gboolean ok = root_begin(q->r, &error);
  for (size_t i = 0; ok && i < oakuk_descriptor_application_count(d); i++) {
    JsonObject *doc = insert_application(q, oakuk_descriptor_application(d, i), &conflict, &error);
    if (doc == NULL)
      ok = FALSE;
    else
      json_array_add_object_element(created, doc);
  }
  ok = ok && root_commit(q->r, &error);
  oakuk_descriptor_unref(d);
  if (!ok && conflict) {
    root_rollback(q->r);
    od_http_reply_error(q->msg, SOUP_STATUS_CONFLICT, "conflict", "applications", "%s", error->message);
    return;
  }
  if (!ok) {
    reply_internal(q, error);
    return;
  }
  od_log(G_LOG_LEVEL_MESSAGE, "application", "user", q->user, "msg", "applications registered", NULL);
  if (q->compat) {
    g_autoptr(JsonArray) all = user_applications(q);
    g_autoptr(JsonNode) node = json_node_init_array(json_node_alloc(), all);
    od_http_reply_json_string(q->msg, SOUP_STATUS_OK, node);
  } else {
    g_autoptr(JsonObject) o = json_object_new();
    json_object_set_array_member(o, "applications", json_array_ref(created));
    reply_object(q, SOUP_STATUS_CREATED, o);
  }
}

static JsonObject *load_user_app(Req *q, const char *id) {
  g_autofree char *owner =
      od_db_query_text(q->r->db, "SELECT user FROM applications WHERE id = ?1", id, NULL);
  if (g_strcmp0(owner, q->user) != 0) {
    reply_not_found(q, "application", id);
    return NULL;
  }
  return root_load_application(q->r, id);
}

static JsonObject *load_user_service(Req *q, const char *id, char **ms_json) {
  g_autofree char *owner = od_db_query_text(q->r->db, "SELECT user FROM services WHERE id = ?1", id, NULL);
  if (g_strcmp0(owner, q->user) != 0) {
    reply_not_found(q, "service", id);
    return NULL;
  }
  return root_load_service(q->r, id, ms_json);
}

static void h_app_list(Req *q) {
  g_autoptr(JsonArray) all = user_applications(q);
  reply_array(q, SOUP_STATUS_OK, all);
}

static void h_app_get(Req *q) {
  g_autoptr(JsonObject) app = load_user_app(q, q->cap[0]);
  if (app != NULL)
    reply_object(q, SOUP_STATUS_OK, app);
}

static void h_app_put(Req *q) {
  g_autoptr(JsonObject) app = load_user_app(q, q->cap[0]);
  if (app == NULL)
    return;
  g_autoptr(JsonObject) body = body_object(q, FALSE);
  if (body == NULL)
    return;
  static const char *const fixed[] = {"application_name", "application_namespace"};
  for (gsize i = 0; i < G_N_ELEMENTS(fixed); i++) {
    JsonNode *n = json_object_get_member(body, fixed[i]);
    if (n != NULL && g_strcmp0(str_member(body, fixed[i]), str_member(app, fixed[i])) != 0) {
      od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", fixed[i],
                          "%s: renaming an application is not supported (services are named after it)",
                          fixed[i]);
      return;
    }
  }
  JsonNode *desc = json_object_get_member(body, "application_desc");
  if (desc != NULL && str_member(body, "application_desc") == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "application_desc",
                        "application_desc: a string is required");
    return;
  }
  if (desc != NULL)
    json_object_set_string_member(app, "application_desc", str_member(body, "application_desc"));
  g_autoptr(GError) error = NULL;
  if (!root_begin(q->r, &error) || !root_save_application(q->r, q->cap[0], app, &error) ||
      !root_commit(q->r, &error)) {
    reply_internal(q, error);
    return;
  }
  reply_object(q, SOUP_STATUS_OK, app);
}

/* Undeploys every instance and deletes the service row (inside the caller's transaction). */
static gboolean delete_service(Req *q, const char *sid, GError **error) {
  g_autoptr(JsonObject) service = root_load_service(q->r, sid, NULL);
  JsonArray *list = service ? json_object_get_array_member(service, "instance_list") : NULL;
  for (guint i = 0; list != NULL && i < json_array_get_length(list); i++) {
    g_autoptr(GError) local = NULL;
    root_undeploy_instance(q->r, service, json_array_get_object_element(list, i), &local);
    if (local != NULL) {
      g_propagate_error(error, g_steal_pointer(&local));
      return FALSE;
    }
  }
  return od_db_run(q->r->db, error, "DELETE FROM services WHERE id = ?1", sid, NULL);
}

static void h_app_delete(Req *q) {
  g_autoptr(JsonObject) app = load_user_app(q, q->cap[0]);
  if (app == NULL)
    return;
  g_autoptr(GError) error = NULL;
  gboolean ok = root_begin(q->r, &error);
  JsonArray *ids = json_object_get_array_member(app, "microservices");
  for (guint i = 0; ok && ids != NULL && i < json_array_get_length(ids); i++)
    ok = delete_service(q, json_array_get_string_element(ids, i), &error);
  if (!ok || !od_db_run(q->r->db, &error, "DELETE FROM applications WHERE id = ?1", q->cap[0], NULL) ||
      !root_commit(q->r, &error)) {
    reply_internal(q, error);
    return;
  }
  root_forward_pump(q->r);
  g_autofree char *m = g_strdup_printf("application %s deleted", q->cap[0]);
  reply_message(q, SOUP_STATUS_OK, m);
}

/* ---- services ---- */

static void h_svc_get(Req *q) {
  g_autoptr(JsonObject) service = load_user_service(q, q->cap[0], NULL);
  if (service == NULL)
    return;
  service_view(service, q->compat);
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), service);
  if (q->compat)
    od_http_reply_json_string(q->msg, SOUP_STATUS_OK, node);
  else
    od_http_reply_json(q->msg, SOUP_STATUS_OK, node);
}

static void h_svc_list_app(Req *q) {
  g_autoptr(JsonObject) app = load_user_app(q, q->cap[0]);
  if (app == NULL)
    return;
  g_autoptr(JsonArray) list =
      query_services(q->r, "SELECT doc FROM services WHERE app_id = ?1 ORDER BY rowid", q->cap[0], q->compat);
  reply_array(q, SOUP_STATUS_OK, list);
}

static void h_svc_list_all(Req *q) {
  g_autoptr(JsonArray) list =
      query_services(q->r, "SELECT doc FROM services WHERE user = ?1 ORDER BY rowid", q->user, q->compat);
  reply_array(q, SOUP_STATUS_OK, list);
}

static void h_svc_delete(Req *q) {
  g_autoptr(JsonObject) service = load_user_service(q, q->cap[0], NULL);
  if (service == NULL)
    return;
  const char *app_id = str_member(service, "applicationID");
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonObject) app = app_id ? root_load_application(q->r, app_id) : NULL;
  gboolean ok = root_begin(q->r, &error) && delete_service(q, q->cap[0], &error);
  if (ok && app != NULL) {
    JsonArray *ids = json_object_get_array_member(app, "microservices");
    for (guint i = 0; ids != NULL && i < json_array_get_length(ids); i++)
      if (g_strcmp0(json_array_get_string_element(ids, i), q->cap[0]) == 0)
        json_array_remove_element(ids, i--);
    ok = root_save_application(q->r, app_id, app, &error);
  }
  if (!ok || !root_commit(q->r, &error)) {
    reply_internal(q, error);
    return;
  }
  root_forward_pump(q->r);
  g_autofree char *m = g_strdup_printf("service %s deleted", q->cap[0]);
  reply_message(q, SOUP_STATUS_OK, m);
}

/* ---- views proxied to clusters (`oakuk explain`, `oakuk logs`) ---- */

typedef void (*ClusterGetDone)(gpointer data, const char *cid, guint status, JsonNode *body, const char *why);

typedef struct {
  ClusterGetDone done;
  gpointer data;
  char *cid;
  SoupMessage *msg;
  GCancellable *cancel;
  guint timer;
  guint timeout_s;
} ClusterGet;

static gboolean cluster_get_timeout(gpointer data) {
  ClusterGet *g = data;
  g->timer = 0;
  g_cancellable_cancel(g->cancel);
  return G_SOURCE_REMOVE;
}

static void cluster_get_finish(GObject *src, GAsyncResult *res, gpointer data) {
  ClusterGet *g = data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) body = soup_session_send_and_read_finish(SOUP_SESSION(src), res, &error);
  if (g->timer != 0)
    g_source_remove(g->timer);
  guint status = body != NULL ? soup_message_get_status(g->msg) : 0;
  g_autoptr(JsonNode) node = NULL;
  gsize len = 0;
  const char *data_ = body ? g_bytes_get_data(body, &len) : NULL;
  if (len > 0)
    node = od_json_parse(data_, (gssize)len, NULL);
  g_autofree char *why = NULL;
  if (error != NULL)
    why = g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED)
              ? g_strdup_printf("no answer within %u s", g->timeout_s)
              : g_strdup(error->message);
  g->done(g->data, g->cid, status, node, why);
  g_free(g->cid);
  g_object_unref(g->msg);
  g_object_unref(g->cancel);
  g_free(g);
}

/* GETs path (with query) from cluster cid with its token; done always runs, later, on the main
 * context: status 0 and why when the cluster is unknown or unreachable. */
static void cluster_get(Root *r, const char *cid, const char *path, guint timeout_s, ClusterGetDone done,
                        gpointer data) {
  g_autofree char *base = od_db_query_text(r->db, "SELECT url FROM clusters WHERE id = ?1", cid, NULL);
  g_autofree char *token = od_db_query_text(r->db, "SELECT token FROM clusters WHERE id = ?1", cid, NULL);
  while (base != NULL && g_str_has_suffix(base, "/"))
    base[strlen(base) - 1] = '\0';
  g_autofree char *url = base ? g_strconcat(base, path, NULL) : NULL;
  SoupMessage *msg = url ? soup_message_new("GET", url) : NULL;
  if (msg == NULL) {
    done(data, cid, 0, NULL, base ? "the cluster's URL is not valid" : "the cluster is no longer registered");
    return;
  }
  g_autofree char *auth = g_strconcat("Bearer ", token, NULL);
  soup_message_headers_replace(soup_message_get_request_headers(msg), "Authorization", auth);
  ClusterGet *g = g_new0(ClusterGet, 1);
  g->done = done;
  g->data = data;
  g->cid = g_strdup(cid);
  g->msg = msg;
  g->cancel = g_cancellable_new();
  g->timeout_s = timeout_s;
  g->timer = g_timeout_add_seconds(timeout_s, cluster_get_timeout, g);
  soup_session_send_and_read_async(r->session, msg, G_PRIORITY_DEFAULT, g->cancel, cluster_get_finish, g);
}

/* The message of a cluster's {"error": {...}} answer, or NULL. */
static const char *cluster_error(JsonNode *body, const char *key) {
  JsonObject *o = body && JSON_NODE_HOLDS_OBJECT(body) ? json_node_get_object(body) : NULL;
  JsonNode *e = o ? json_object_get_member(o, "error") : NULL;
  return e && JSON_NODE_HOLDS_OBJECT(e) ? str_member(json_node_get_object(e), key) : NULL;
}

static void hold(SoupServerMessage *msg) {
  g_object_ref(msg);
  soup_server_message_pause(msg);
}

static void release(SoupServerMessage *msg) {
  soup_server_message_unpause(msg);
  g_object_unref(msg);
}

typedef struct {
  Root *r;
  SoupServerMessage *msg;
  JsonObject *out;
  JsonArray *clusters;
  guint pending;
} ExplainCall;

static void explain_reply(ExplainCall *e) {
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), e->out);
  od_http_reply_json(e->msg, SOUP_STATUS_OK, node);
  release(e->msg);
  json_object_unref(e->out);
  g_free(e);
}

static void explain_cluster_done(gpointer data, const char *cid, guint status, JsonNode *body,
                                 const char *why) {
  ExplainCall *e = data;
  JsonObject *c = json_object_new();
  g_autofree char *name = od_db_query_text(e->r->db, "SELECT name FROM clusters WHERE id = ?1", cid, NULL);
  json_object_set_string_member(c, "cluster_id", cid);
  json_object_set_string_member(c, "cluster_name", name ? name : cid);
  JsonObject *o = body && JSON_NODE_HOLDS_OBJECT(body) ? json_node_get_object(body) : NULL;
  if (status == SOUP_STATUS_OK && o != NULL && json_object_get_member(o, "lines") != NULL) {
    json_object_set_int_member(c, "instance", json_object_get_int_member_with_default(o, "instance", 0));
    json_object_set_member(c, "lines", json_node_copy(json_object_get_member(o, "lines")));
  } else {
    g_autofree char *err =
        status == 0 ? g_strdup_printf("cluster unreachable: %s", why ? why : "")
                    : g_strdup_printf("HTTP %u: %s", status,
                                      cluster_error(body, "message") ? cluster_error(body, "message")
                                                                     : "no explanation");
    json_object_set_string_member(c, "error", err);
  }
  json_array_add_object_element(e->clusters, c);
  if (--e->pending == 0)
    explain_reply(e);
}

/* The root's cluster-level explanation, the instances' statuses and refusals, and the node-level
 * explanation of every cluster that holds or refused an instance. */
static void h_explain(Req *q) {
  g_autoptr(JsonObject) service = load_user_service(q, q->cap[0], NULL);
  if (service == NULL)
    return;
  g_autofree char *text =
      od_db_query_text(q->r->db, "SELECT explain FROM services WHERE id = ?1", q->cap[0], NULL);
  JsonObject *o = json_object_new();
  JsonArray *lines = json_array_new();
  g_auto(GStrv) parts = g_strsplit(text ? text : "", "\n", 0);
  for (char **p = parts; *p; p++)
    if (**p)
      json_array_add_string_element(lines, *p);
  json_object_set_string_member(o, "service", q->cap[0]);
  json_object_set_string_member(o, "job_name", str_member(service, "job_name"));
  json_object_set_array_member(o, "lines", lines);
  JsonArray *insts = json_array_new();
  g_autoptr(GPtrArray) ask = g_ptr_array_new_with_free_func(g_free);
  JsonArray *list = json_object_get_array_member(service, "instance_list");
  for (guint i = 0; list != NULL && i < json_array_get_length(list); i++) {
    JsonObject *in = json_array_get_object_element(list, i);
    JsonObject *s = json_object_new();
    json_object_set_int_member(s, "instance_number",
                               json_object_get_int_member_with_default(in, "instance_number", 0));
    static const char *const keys[] = {"status", "status_detail", "cluster_id", "cluster_name", "node_id"};
    for (gsize k = 0; k < G_N_ELEMENTS(keys); k++)
      json_object_set_string_member(s, keys[k], str_member(in, keys[k]) ? str_member(in, keys[k]) : "");
    json_object_set_boolean_member(s, "ready",
                                   json_object_get_boolean_member_with_default(in, "ready", FALSE));
    if (json_object_has_member(in, "ready_ms"))
      json_object_set_int_member(s, "ready_ms", json_object_get_int_member(in, "ready_ms"));
    JsonNode *rf = json_object_get_member(in, "cluster_refusals");
    g_autoptr(GList) refused =
        rf && JSON_NODE_HOLDS_OBJECT(rf) ? json_object_get_members(json_node_get_object(rf)) : NULL;
    if (rf != NULL)
      json_object_set_member(s, "cluster_refusals", json_node_copy(rf));
    json_array_add_object_element(insts, s);
    const char *cid = str_member(in, "cluster_id");
    if (cid != NULL && *cid && !g_ptr_array_find_with_equal_func(ask, cid, g_str_equal, NULL))
      g_ptr_array_add(ask, g_strdup(cid));
    for (GList *l = refused; l != NULL; l = l->next)
      if (!g_ptr_array_find_with_equal_func(ask, l->data, g_str_equal, NULL))
        g_ptr_array_add(ask, g_strdup(l->data));
  }
  json_object_set_array_member(o, "instances", insts);
  ExplainCall *e = g_new0(ExplainCall, 1);
  e->r = q->r;
  e->msg = q->msg;
  e->out = o;
  e->clusters = json_array_new();
  json_object_set_array_member(o, "clusters", e->clusters);
  hold(q->msg);
  g_autofree char *path = g_strdup_printf("/api/v1/services/%s/explain", q->cap[0]);
  e->pending = ask->len + 1; /* one for this function, so no answer completes the call early */
  for (guint i = 0; i < ask->len; i++) {
    g_autofree char *known =
        od_db_query_text(q->r->db, "SELECT id FROM clusters WHERE id = ?1", ask->pdata[i], NULL);
    if (known == NULL) {
      e->pending--;
      continue;
    }
    cluster_get(q->r, ask->pdata[i], path, 5, explain_cluster_done, e);
  }
  if (--e->pending == 0)
    explain_reply(e);
}

static void logs_done(gpointer data, const char *cid, guint status, JsonNode *body, const char *why) {
  SoupServerMessage *msg = data;
  const char *path = g_uri_get_path(soup_server_message_get_uri(msg));
  JsonObject *o = body && JSON_NODE_HOLDS_OBJECT(body) ? json_node_get_object(body) : NULL;
  if (status == SOUP_STATUS_OK && o != NULL) {
    od_http_reply_json(msg, SOUP_STATUS_OK, body);
  } else if (status == 0) {
    od_http_reply_error(msg, SOUP_STATUS_BAD_GATEWAY, "cluster_unreachable", path, "cluster %s: %s", cid,
                        why ? why : "no answer");
  } else {
    const char *code = cluster_error(body, "code");
    const char *message = cluster_error(body, "message");
    od_http_reply_error(msg, status >= 400 && status < 600 ? status : SOUP_STATUS_BAD_GATEWAY,
                        code ? code : "cluster_error", path, "cluster %s: %s", cid,
                        message ? message : "unexpected answer");
  }
  release(msg);
}

/* Serial console or output of one instance: asked from its cluster, which asks its node. */
static void h_inst_logs(Req *q) {
  g_autoptr(JsonObject) service = load_user_service(q, q->cap[0], NULL);
  if (service == NULL)
    return;
  gint64 n = -1, lines = 100;
  if (!g_ascii_string_to_signed(q->cap[1], 10, 0, G_MAXINT32, &n, NULL)) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", q->path,
                        "instance number '%s' is not a non-negative integer", q->cap[1]);
    return;
  }
  const char *query = g_uri_get_query(soup_server_message_get_uri(q->msg));
  g_autoptr(GHashTable) params = query ? g_uri_parse_params(query, -1, "&", G_URI_PARAMS_NONE, NULL) : NULL;
  const char *ltext = params ? g_hash_table_lookup(params, "lines") : NULL;
  if (ltext != NULL && !g_ascii_string_to_signed(ltext, 10, 1, 10000, &lines, NULL)) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "lines",
                        "lines: '%s' is not a number of lines in [1, 10000]", ltext);
    return;
  }
  JsonObject *inst = root_find_instance(service, n, NULL);
  if (inst == NULL) {
    g_autofree char *what = g_strdup_printf("%s/instance", q->cap[0]);
    reply_not_found(q, what, q->cap[1]);
    return;
  }
  const char *cid = str_member(inst, "cluster_id");
  if (cid == NULL || *cid == '\0') {
    od_http_reply_error(q->msg, SOUP_STATUS_CONFLICT, "conflict", q->path,
                        "instance %s of %s is %s and not placed on a cluster: no logs", q->cap[1],
                        str_member(service, "job_name"), str_member(inst, "status"));
    return;
  }
  char *lib_name = oakuk_instance_name(str_member(service, "job_name"), n);
  g_autofree char *name = g_strdup(lib_name);
  od_oakuk_free(lib_name);
  g_autofree char *path = g_strdup_printf("/api/v1/instances/%s/logs?lines=%" G_GINT64_FORMAT, name, lines);
  hold(q->msg);
  /* The cluster waits up to 5 s for its node. */
  cluster_get(q->r, cid, path, 8, logs_done, q->msg);
}

static void h_inst_list(Req *q) {
  g_autoptr(JsonObject) service = load_user_service(q, q->cap[0], NULL);
  if (service == NULL)
    return;
  service_view(service, q->compat);
  JsonArray *list = json_object_get_array_member(service, "instance_list");
  g_autoptr(JsonArray) copy = list ? json_array_ref(list) : json_array_new();
  reply_array(q, SOUP_STATUS_OK, copy);
}

static void h_inst_create(Req *q) {
  g_autofree char *ms_json = NULL;
  g_autoptr(JsonObject) service = load_user_service(q, q->cap[0], &ms_json);
  if (service == NULL)
    return;
  g_autoptr(JsonObject) body = body_object(q, TRUE);
  if (body == NULL)
    return;
  gint64 n = json_object_get_int_member_with_default(service, "next_instance_progressive_number", 0);
  JsonObject *inst = json_object_new();
  json_object_set_int_member(inst, "instance_number", n);
  json_object_set_string_member(inst, "cluster_id", "");
  json_object_set_string_member(inst, "cluster_location", "");
  json_object_set_string_member(inst, "node_id", "");
  json_object_set_string_member(inst, "publicip", "");
  json_object_set_double_member(inst, "cpu", 0);
  json_object_set_double_member(inst, "memory", 0);
  json_object_set_string_member(inst, "status", "REQUESTED");
  json_object_set_string_member(inst, "status_detail", "");
  /* ready_ms is measured from this moment, also across reschedules and restarts of the instance */
  json_object_set_int_member(inst, "requested_at", root_now_ms());
  json_object_set_boolean_member(inst, "ready", FALSE);
  json_array_add_object_element(json_object_get_array_member(service, "instance_list"), inst);
  json_object_set_int_member(service, "next_instance_progressive_number", n + 1);
  g_autoptr(GError) error = NULL;
  if (!root_begin(q->r, &error) || !root_place_instance(q->r, service, ms_json, inst, &error) ||
      !root_save_service(q->r, q->cap[0], service, &error) || !root_commit(q->r, &error)) {
    reply_internal(q, error);
    return;
  }
  root_forward_pump(q->r);
  if (q->compat) {
    g_autoptr(JsonObject) o = json_object_new();
    json_object_set_string_member(o, "message", "instance requested");
    json_object_set_int_member(o, "instance_number", n);
    json_object_set_string_member(o, "status", str_member(inst, "status"));
    reply_object(q, SOUP_STATUS_OK, o);
  } else {
    reply_object(q, SOUP_STATUS_CREATED, inst);
  }
}

static void h_inst_delete(Req *q) {
  g_autoptr(JsonObject) service = load_user_service(q, q->cap[0], NULL);
  if (service == NULL)
    return;
  gint64 n = -1;
  guint idx = 0;
  if (!g_ascii_string_to_signed(q->cap[1], 10, 0, G_MAXINT32, &n, NULL)) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", q->path,
                        "instance number '%s' is not a non-negative integer", q->cap[1]);
    return;
  }
  JsonObject *inst = root_find_instance(service, n, &idx);
  if (inst == NULL) {
    g_autofree char *what = g_strdup_printf("%s/instance", q->cap[0]);
    reply_not_found(q, what, q->cap[1]);
    return;
  }
  g_autoptr(GError) error = NULL;
  gboolean removed = FALSE;
  if (root_begin(q->r, &error))
    removed = root_undeploy_instance(q->r, service, inst, &error);
  if (error == NULL && removed)
    json_array_remove_element(json_object_get_array_member(service, "instance_list"), idx);
  if (error != NULL || !root_save_service(q->r, q->cap[0], service, &error) || !root_commit(q->r, &error)) {
    reply_internal(q, error);
    return;
  }
  root_forward_pump(q->r);
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "message", removed ? "instance removed" : "instance undeploying");
  json_object_set_int_member(o, "instance_number", n);
  json_object_set_string_member(o, "status", removed ? "UNDEPLOYED" : "UNDEPLOYED (waiting for the cluster)");
  reply_object(q, SOUP_STATUS_OK, o);
}

/* ---- clusters ---- */

static JsonObject *cluster_doc(Root *r, sqlite3_stmt *st) {
  const char *id = (const char *)sqlite3_column_text(st, 0);
  JsonObject *o = NULL;
  if (sqlite3_column_type(st, 5) != SQLITE_NULL)
    o = parse_object((const char *)sqlite3_column_text(st, 5));
  if (o == NULL)
    o = json_object_new();
  json_object_set_object_member(o, "_id", oid(id));
  json_object_set_string_member(o, "id", id);
  json_object_set_string_member(o, "cluster_name", (const char *)sqlite3_column_text(st, 1));
  json_object_set_string_member(o, "cluster_location", (const char *)sqlite3_column_text(st, 2));
  json_object_set_string_member(o, "url", (const char *)sqlite3_column_text(st, 3));
  json_object_set_string_member(o, "subnet", (const char *)sqlite3_column_text(st, 4));
  json_object_set_boolean_member(o, "active", root_cluster_active(r, id));
  json_object_set_int_member(o, "aggregate_received_at_ms", sqlite3_column_int64(st, 6));
  json_object_set_int_member(o, "registered_at_ms", sqlite3_column_int64(st, 7));
  return o;
}

#define CLUSTER_COLUMNS                                                                                      \
  "SELECT id, name, location, url, subnet, aggregate, received_at, registered_at FROM clusters"

static void list_clusters(Req *q, gboolean only_active) {
  g_autoptr(JsonArray) out = json_array_new();
  g_autoptr(sqlite3_stmt) st =
      od_db_prepare(q->r->db, CLUSTER_COLUMNS " ORDER BY registered_at, rowid", NULL);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
    if (only_active && !root_cluster_active(q->r, (const char *)sqlite3_column_text(st, 0)))
      continue;
    json_array_add_object_element(out, cluster_doc(q->r, st));
  }
  reply_array(q, SOUP_STATUS_OK, out);
}

static void h_clusters(Req *q) {
  list_clusters(q, FALSE);
}

static void h_clusters_active(Req *q) {
  list_clusters(q, TRUE);
}

static void h_cluster_get(Req *q) {
  g_autoptr(sqlite3_stmt) st = od_db_prepare(q->r->db, CLUSTER_COLUMNS " WHERE id = ?1", NULL);
  sqlite3_bind_text(st, 1, q->cap[0], -1, SQLITE_TRANSIENT);
  if (sqlite3_step(st) != SQLITE_ROW) {
    reply_not_found(q, "cluster", q->cap[0]);
    return;
  }
  g_autoptr(JsonObject) o = cluster_doc(q->r, st);
  reply_object(q, SOUP_STATUS_OK, o);
}

static void h_cluster_delete(Req *q) {
  g_autofree char *known =
      od_db_query_text(q->r->db, "SELECT id FROM clusters WHERE id = ?1", q->cap[0], NULL);
  if (known == NULL) {
    reply_not_found(q, "cluster", q->cap[0]);
    return;
  }
  g_autoptr(GError) error = NULL;
  g_hash_table_remove(q->r->aggregates, q->cap[0]);
  if (!root_begin(q->r, &error) || !root_move_off_cluster(q->r, q->cap[0], &error) ||
      !od_db_run(q->r->db, &error, "DELETE FROM clusters WHERE id = ?1", q->cap[0], NULL) ||
      !root_commit(q->r, &error)) {
    reply_internal(q, error);
    return;
  }
  root_forward_pump(q->r);
  g_autofree char *m = g_strdup_printf("cluster %s removed; its token is revoked", q->cap[0]);
  reply_message(q, SOUP_STATUS_OK, m);
}

static void h_cluster_token(Req *q) {
  g_autoptr(JsonObject) body = body_object(q, TRUE);
  if (body == NULL)
    return;
  gint64 ttl = q->r->join_token_ttl_s;
  JsonNode *n = json_object_get_member(body, "ttl_s");
  if (n != NULL) {
    if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64 ||
        json_node_get_int(n) < 10 || json_node_get_int(n) > 365 * 86400) {
      od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "ttl_s",
                          "ttl_s: an integer number of seconds in [10, 31536000] is required");
      return;
    }
    ttl = json_node_get_int(n);
  }
  g_autofree char *token = od_random_hex(24);
  g_autofree char *hash = od_sha256_hex(token);
  gint64 expires = root_now_ms() / 1000 + ttl;
  g_autofree char *exp = g_strdup_printf("%" G_GINT64_FORMAT, expires);
  g_autoptr(GError) error = NULL;
  if (!root_begin(q->r, &error) ||
      !od_db_run(q->r->db, &error,
                 "INSERT INTO join_tokens (hash, expires_at) VALUES (?1, CAST(?2 AS INTEGER))", hash, exp,
                 NULL) ||
      !root_commit(q->r, &error)) {
    reply_internal(q, error);
    return;
  }
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "token", token);
  json_object_set_int_member(o, "expires_at", expires);
  reply_object(q, SOUP_STATUS_CREATED, o);
}

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

/* The lowest per-cluster subnet of the node pool no cluster holds. */
static gint64 free_subnet(Root *r, char **cidr) {
  guint64 slots = (guint64)1 << (r->cluster_prefix - r->pool_prefix);
  for (guint64 i = 0; i < slots; i++) {
    g_autofree char *idx = g_strdup_printf("%" G_GUINT64_FORMAT, i);
    g_autofree char *used = od_db_query_text(
        r->db, "SELECT id FROM clusters WHERE subnet_index = CAST(?1 AS INTEGER)", idx, NULL);
    if (used != NULL)
      continue;
    guint32 net = g_htonl(r->pool_base + (guint32)(i << (32 - r->cluster_prefix)));
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &net, buf, sizeof buf);
    *cidr = g_strdup_printf("%s/%u", buf, r->cluster_prefix);
    return (gint64)i;
  }
  return -1;
}

/* Registration needs a one-time join token or the static cluster secret, as bearer or in the body. */
static gboolean registration_allowed(Req *q, const char *secret, char **consumed_hash) {
  if (secret == NULL)
    return FALSE;
  g_autofree char *hash = od_sha256_hex(secret);
  if (q->r->cluster_secret_hash != NULL && od_str_equal_ct(hash, q->r->cluster_secret_hash))
    return TRUE;
  g_autofree char *now = g_strdup_printf("%" G_GINT64_FORMAT, root_now_ms() / 1000);
  g_autofree char *found = od_db_query_text(
      q->r->db, "SELECT hash FROM join_tokens WHERE hash = ?1 AND expires_at >= CAST(?2 AS INTEGER)", hash,
      now, NULL);
  if (found == NULL)
    return FALSE;
  *consumed_hash = g_steal_pointer(&found);
  return TRUE;
}

/* A cluster that registers again under its name keeps its id and subnet; its old token dies. */
static gboolean store_cluster(Req *q, const char *name, const char *location, const char *url,
                              const char *consumed, char **id, char **subnet, char **token,
                              gboolean *exhausted, GError **error) {
  *id = od_db_query_text(q->r->db, "SELECT id FROM clusters WHERE name = ?1", name, NULL);
  if (*id == NULL) {
    *id = od_object_id();
    gint64 idx = free_subnet(q->r, subnet);
    if (idx < 0) {
      *exhausted = TRUE;
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                  "every /%u of the node pool is taken; remove a cluster first", q->r->cluster_prefix);
      return FALSE;
    }
    g_autofree char *idxs = g_strdup_printf("%" G_GINT64_FORMAT, idx);
    g_autofree char *now = g_strdup_printf("%" G_GINT64_FORMAT, root_now_ms());
    if (!od_db_run(
            q->r->db, error,
            "INSERT INTO clusters (id, name, location, url, token, subnet_index, subnet, registered_at)"
            " VALUES (?1, ?2, ?3, ?4, '', CAST(?5 AS INTEGER), ?6, CAST(?7 AS INTEGER))",
            *id, name, location, url, idxs, *subnet, now, NULL))
      return FALSE;
  } else {
    *subnet = od_db_query_text(q->r->db, "SELECT subnet FROM clusters WHERE id = ?1", *id, NULL);
  }
  *token = issue_token(q->r, *id, "cluster", 0);
  return od_db_run(q->r->db, error, "UPDATE clusters SET token = ?2, url = ?3, location = ?4 WHERE id = ?1",
                   *id, *token, url, location, NULL) &&
         (consumed == NULL ||
          od_db_run(q->r->db, error, "DELETE FROM join_tokens WHERE hash = ?1", consumed, NULL)) &&
         root_commit(q->r, error);
}

static void h_register(Req *q) {
  g_autofree char *secret = od_http_bearer(q->msg);
  g_autoptr(JsonObject) body = NULL;
  if (secret == NULL && !request_body_empty(q)) {
    g_autoptr(GBytes) bytes = soup_message_body_flatten(soup_server_message_get_request_body(q->msg));
    gsize len = 0;
    const char *data = g_bytes_get_data(bytes, &len);
    g_autoptr(JsonNode) node = od_json_parse(data, (gssize)len, NULL);
    if (node != NULL && JSON_NODE_HOLDS_OBJECT(node))
      secret = g_strdup(str_member(json_node_get_object(node), "join_token"));
  }
  g_autofree char *consumed = NULL;
  if (!registration_allowed(q, secret, &consumed)) {
    od_http_reply_error(q->msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", q->path,
                        secret ? "join token is unknown, used or expired"
                               : "missing join token (Authorization: Bearer <join token>)");
    return;
  }
  body = body_object(q, FALSE);
  const char *name, *location, *url;
  if (body == NULL || !require_string(q, body, "name", &name) ||
      !require_string(q, body, "location", &location) || !require_string(q, body, "url", &url))
    return;
  if (!valid_cluster_name(name)) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "name",
                        "name: '%s' must be 1-64 characters of letters, digits, '-', '_' or '.'", name);
    return;
  }
  if (!valid_cluster_url(url)) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "url",
                        "url: '%s' is not an http(s) URL with a host", url);
    return;
  }
  g_autoptr(GError) error = NULL;
  g_autofree char *id = NULL, *subnet = NULL, *token = NULL;
  gboolean exhausted = FALSE;
  if (!root_begin(q->r, &error) ||
      !store_cluster(q, name, location, url, consumed, &id, &subnet, &token, &exhausted, &error)) {
    if (!exhausted) {
      reply_internal(q, error);
      return;
    }
    root_rollback(q->r);
    od_http_reply_error(q->msg, SOUP_STATUS_CONFLICT, "pool_exhausted", "name", "%s", error->message);
    return;
  }
  od_log(G_LOG_LEVEL_MESSAGE, "cluster-register", "cluster", id, "name", name, "url", url, "subnet", subnet,
         NULL);
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "id", id);
  json_object_set_string_member(o, "name", name);
  json_object_set_string_member(o, "token", token);
  json_object_set_string_member(o, "subnet", subnet);
  reply_object(q, SOUP_STATUS_CREATED, o);
  root_forward_pump(q->r);
}

static void h_information(Req *q) {
  g_autoptr(JsonNode) check = od_http_read_json(q->msg);
  if (check == NULL)
    return;
  g_autoptr(GBytes) bytes = soup_message_body_flatten(soup_server_message_get_request_body(q->msg));
  gsize len = 0;
  const char *data = g_bytes_get_data(bytes, &len);
  oakuk_error *err = NULL;
  oakuk_cluster_aggregate *agg = oakuk_cluster_aggregate_from_json(data, len, &err);
  if (agg == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_aggregate",
                        oakuk_error_path(err) ? oakuk_error_path(err) : "", "%s", oakuk_error_message(err));
    oakuk_error_free(err);
    return;
  }
  gint64 now = root_now_ms();
  g_autofree char *text = g_strndup(data, len);
  g_autofree char *nows = g_strdup_printf("%" G_GINT64_FORMAT, now);
  g_autofree char *name =
      od_db_query_text(q->r->db, "SELECT name FROM clusters WHERE id = ?1", q->cap[0], NULL);
  g_autoptr(GError) error = NULL;
  if (!root_begin(q->r, &error) ||
      !od_db_run(q->r->db, &error,
                 "UPDATE clusters SET aggregate = ?2, received_at = CAST(?3 AS INTEGER) WHERE id = ?1",
                 q->cap[0], text, nows, NULL) ||
      !root_commit(q->r, &error)) {
    oakuk_cluster_aggregate_unref(agg);
    reply_internal(q, error);
    return;
  }
  oakuk_cluster_aggregate_set_identity(agg, q->cap[0], name);
  oakuk_cluster_aggregate_set_received_at_ms(agg, now);
  g_hash_table_replace(q->r->aggregates, g_strdup(q->cap[0]), agg);
  reply_message(q, SOUP_STATUS_OK, "aggregate stored");
}

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
  g_autoptr(GError) error = NULL;
  if (!root_begin(q->r, &error)) {
    reply_internal(q, error);
    return;
  }
  for (guint i = 0; i < json_array_get_length(list); i++) {
    g_autofree char *path = g_strdup_printf("[%u]", i);
    JsonNode *e = json_array_get_element(list, i);
    if (!JSON_NODE_HOLDS_OBJECT(e)) {
      root_rollback(q->r);
      od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", path, "%s: expected an object",
                          path);
      return;
    }
    if (!root_apply_status(q->r, q->cap[0], json_node_get_object(e), path, &error)) {
      root_rollback(q->r);
      if (error->domain == OD_ERROR && error->code == OD_ERROR_INVALID) {
        g_autofree char *field = g_strdup(error->message);
        char *colon = strchr(field, ':');
        if (colon != NULL)
          *colon = '\0';
        od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", field, "%s", error->message);
      } else {
        reply_internal(q, error);
      }
      return;
    }
  }
  if (!root_commit(q->r, &error)) {
    reply_internal(q, error);
    return;
  }
  root_forward_pump(q->r);
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_int_member(o, "accepted", json_array_get_length(list));
  reply_object(q, SOUP_STATUS_OK, o);
}

/* ---- routing ---- */

static const Route routes[] = {
    {"GET", "healthz", AUTH_NONE, h_healthz, FALSE},
    {"GET", "metrics", AUTH_NONE, h_metrics, FALSE},
    {"POST", "api/auth/login", AUTH_NONE, h_login, TRUE},
    {"POST", "api/auth/refresh", AUTH_SELF, h_refresh, TRUE},
    {"POST", "api/application", AUTH_USER, h_app_create, TRUE},
    {"GET", "api/application/*", AUTH_USER, h_app_get, TRUE},
    {"PUT", "api/application/*", AUTH_USER, h_app_put, TRUE},
    {"DELETE", "api/application/*", AUTH_USER, h_app_delete, TRUE},
    {"GET", "api/applications", AUTH_USER, h_app_list, TRUE},
    {"GET", "api/service/*", AUTH_USER, h_svc_get, TRUE},
    {"DELETE", "api/service/*", AUTH_USER, h_svc_delete, TRUE},
    {"GET", "api/services/*", AUTH_USER, h_svc_list_app, TRUE},
    {"POST", "api/service/*/instance", AUTH_USER, h_inst_create, TRUE},
    {"DELETE", "api/service/*/instance/*", AUTH_USER, h_inst_delete, TRUE},
    {"GET", "api/clusters", AUTH_USER, h_clusters, TRUE},
    {"GET", "api/clusters/active", AUTH_USER, h_clusters_active, TRUE},
    {"POST", "api/information/*", AUTH_CLUSTER, h_information, TRUE},
    {"GET", "api/v1/applications", AUTH_USER, h_app_list, FALSE},
    {"POST", "api/v1/applications", AUTH_USER, h_app_create, FALSE},
    {"GET", "api/v1/applications/*", AUTH_USER, h_app_get, FALSE},
    {"PUT", "api/v1/applications/*", AUTH_USER, h_app_put, FALSE},
    {"DELETE", "api/v1/applications/*", AUTH_USER, h_app_delete, FALSE},
    {"GET", "api/v1/applications/*/services", AUTH_USER, h_svc_list_app, FALSE},
    {"GET", "api/v1/services", AUTH_USER, h_svc_list_all, FALSE},
    {"GET", "api/v1/services/*", AUTH_USER, h_svc_get, FALSE},
    {"DELETE", "api/v1/services/*", AUTH_USER, h_svc_delete, FALSE},
    {"GET", "api/v1/services/*/explain", AUTH_USER, h_explain, FALSE},
    {"GET", "api/v1/services/*/instances", AUTH_USER, h_inst_list, FALSE},
    {"POST", "api/v1/services/*/instances", AUTH_USER, h_inst_create, FALSE},
    {"DELETE", "api/v1/services/*/instances/*", AUTH_USER, h_inst_delete, FALSE},
    {"GET", "api/v1/services/*/instances/*/logs", AUTH_USER, h_inst_logs, FALSE},
    {"GET", "api/v1/clusters", AUTH_USER, h_clusters, FALSE},
    {"POST", "api/v1/clusters/tokens", AUTH_USER, h_cluster_token, FALSE},
    {"POST", "api/v1/clusters/register", AUTH_SELF, h_register, FALSE},
    {"GET", "api/v1/clusters/*", AUTH_USER, h_cluster_get, FALSE},
    {"DELETE", "api/v1/clusters/*", AUTH_USER, h_cluster_delete, FALSE},
    {"POST", "api/v1/clusters/*/status", AUTH_CLUSTER, h_status, FALSE},
    {"POST", "api/v1/clusters/*/information", AUTH_CLUSTER, h_information, FALSE},
};

static void handle(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                   gpointer data) {
  Root *r = data;
  const char *method = soup_server_message_get_method(msg);
  g_auto(GStrv) seg = od_path_split(path);
  g_autoptr(GString) allow = g_string_new(NULL);
  for (gsize i = 0; i < G_N_ELEMENTS(routes); i++) {
    Req q = {.r = r, .msg = msg, .path = path, .compat = routes[i].compat};
    if (!od_path_match(seg, routes[i].pattern, q.cap, G_N_ELEMENTS(q.cap)))
      continue;
    if (strcmp(routes[i].method, method) != 0) {
      g_string_append_printf(allow, "%s%s", allow->len ? ", " : "", routes[i].method);
      continue;
    }
    if (authenticate(&q, routes[i].auth))
      routes[i].fn(&q);
    g_free(q.user);
    return;
  }
  od_http_reply_no_route(msg, method, path, allow->str);
}

static void log_request(SoupServer *server, SoupServerMessage *msg, gpointer data) {
  /* A request libsoup refused before parsing its line has no URI. */
  GUri *uri = soup_server_message_get_uri(msg);
  od_log(G_LOG_LEVEL_DEBUG, "http", "method", soup_server_message_get_method(msg), "path",
         uri ? g_uri_get_path(uri) : "(unparsed)", "status",
         soup_status_get_phrase(soup_server_message_get_status(msg)), NULL);
}

void root_api_register(Root *r) {
  soup_server_add_handler(r->server, NULL, handle, r, NULL);
  od_http_count_requests(r->server, r->http_counts);
  g_signal_connect(r->server, "request-finished", G_CALLBACK(log_request), NULL);
}

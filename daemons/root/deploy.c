/* Cluster selection, forwarding of deploy/delete requests to clusters (stored, retried with
 * backoff, resumed after a restart), cluster status reports and rescheduling. */
#include "root.h"

#include <string.h>

typedef struct {
  Root *root;
  gint64 id;
  char *key;
  char *method;
  SoupMessage *msg;
} Forward;

static const char *str_member(JsonObject *o, const char *key) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  return n != NULL && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
             ? json_node_get_string(n)
             : NULL;
}

static char *instance_name(JsonObject *service, gint64 n) {
  char *name = oakuk_instance_name(str_member(service, "job_name"), n);
  char *copy = g_strdup(name);
  od_oakuk_free(name);
  return copy;
}

static gboolean status_in_flight(const char *status) {
  int32_t s = oakuk_instance_status_from_name(status);
  return s == OAKUK_STATUS_CLUSTER_SCHEDULED || s == OAKUK_STATUS_NODE_SCHEDULED ||
         s == OAKUK_STATUS_CREATING;
}

static gboolean status_holds_cluster(const char *status) {
  return status_in_flight(status) || oakuk_instance_status_from_name(status) == OAKUK_STATUS_RUNNING;
}

/* Readiness belongs to one RUNNING stretch: it goes, with both measures, when the instance leaves
 * RUNNING or its cluster says it is not ready (any more). ready_ms is measured again, from the same
 * requested_at, when it is ready next time. */
static void clear_ready(JsonObject *inst) {
  json_object_set_boolean_member(inst, "ready", FALSE);
  json_object_remove_member(inst, "ready_ms");
  json_object_remove_member(inst, "node_ready_ms");
}

static void set_status(JsonObject *service, JsonObject *inst, int32_t status, const char *detail) {
  if (status != OAKUK_STATUS_RUNNING)
    clear_ready(inst);
  json_object_set_string_member(inst, "status", oakuk_instance_status_name(status));
  json_object_set_string_member(inst, "status_detail", detail ? detail : "");
  json_object_set_string_member(service, "status", oakuk_instance_status_name(status));
}

static JsonObject *refusals(JsonObject *inst) {
  if (!json_object_has_member(inst, "cluster_refusals"))
    json_object_set_object_member(inst, "cluster_refusals", json_object_new());
  return json_object_get_object_member(inst, "cluster_refusals");
}

gboolean root_enqueue_forward(Root *r, const char *cluster_id, const char *method, const char *path,
                              const char *body, const char *service_id, gint64 instance, GError **error) {
  g_autofree char *n = g_strdup_printf("%" G_GINT64_FORMAT, instance);
  return od_db_run(r->db, error,
                   "INSERT INTO forwards (cluster_id, method, path, body, service_id, instance, next_at)"
                   " VALUES (?1, ?2, ?3, ?4, ?5, CAST(?6 AS INTEGER), 0)",
                   cluster_id, method, path, body ? body : "", service_id ? service_id : "", n, NULL);
}

static gboolean drop_pending_deploys(Root *r, const char *sid, gint64 n, GError **error) {
  g_autofree char *num = g_strdup_printf("%" G_GINT64_FORMAT, n);
  return od_db_run(
      r->db, error,
      "DELETE FROM forwards WHERE service_id = ?1 AND instance = CAST(?2 AS INTEGER) AND method = 'POST'",
      sid, num, NULL);
}

static char *job_body(JsonObject *service, gint64 n, oakuk_placement *p) {
  /* json_node_copy shares objects; a round trip gives an independent document. */
  g_autoptr(JsonNode) orig = json_node_init_object(json_node_alloc(), service);
  g_autofree char *text = od_json_to_string(orig, FALSE);
  g_autoptr(JsonNode) copy = od_json_parse(text, -1, NULL);
  JsonObject *job = json_node_get_object(copy);
  json_object_remove_member(job, "instance_list");
  json_object_set_int_member(job, "instance_number", n);
  JsonObject *pl = json_object_new();
  json_object_set_string_member(pl, "virtualization", oakuk_virt_name(oakuk_placement_virt(p)));
  if (oakuk_placement_arch(p) != NULL)
    json_object_set_string_member(pl, "arch", oakuk_placement_arch(p));
  json_object_set_string_member(pl, "code", oakuk_placement_code(p) ? oakuk_placement_code(p) : "");
  if (oakuk_placement_code_sha256(p) != NULL)
    json_object_set_string_member(pl, "code_sha256", oakuk_placement_code_sha256(p));
  if (oakuk_accel_name(oakuk_placement_accel(p)) != NULL)
    json_object_set_string_member(pl, "accel", oakuk_accel_name(oakuk_placement_accel(p)));
  json_object_set_object_member(job, "placement", pl);
  return od_json_to_string(copy, FALSE);
}

static void clear_cluster_fields(JsonObject *inst) {
  json_object_set_string_member(inst, "cluster_id", "");
  json_object_set_string_member(inst, "cluster_location", "");
  json_object_set_string_member(inst, "cluster_name", "");
  json_object_set_string_member(inst, "node_id", "");
  json_object_set_string_member(inst, "publicip", "");
  json_object_remove_member(inst, "placement");
}

/* Runs cluster selection over every stored aggregate except the clusters that refused inst. */
static oakuk_placement *select_cluster(Root *r, JsonObject *inst, const oakuk_microservice *ms,
                                       const char *key, GPtrArray *lines, GError **error) {
  JsonObject *refused = refusals(inst);
  g_autoptr(GPtrArray) cands = g_ptr_array_new();
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, r->aggregates);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    if (json_object_has_member(refused, k)) {
      g_ptr_array_add(lines, g_strdup_printf("cluster %s: not retried (%s)", oakuk_cluster_aggregate_name(v),
                                             str_member(refused, k) ? str_member(refused, k) : "refused"));
      continue;
    }
    g_ptr_array_add(cands, v);
  }
  if (cands->len == 0) {
    if (lines->len == 0)
      g_ptr_array_add(lines, g_strdup("no cluster has registered and sent an aggregate"));
    return NULL;
  }
  oakuk_sched_options opts = OAKUK_SCHED_OPTIONS_INIT;
  opts.policy = r->policy;
  opts.now_ms = root_now_ms();
  opts.timeout_ms = r->cluster_timeout_ms;
  oakuk_placement *p = NULL;
  oakuk_error *err = NULL;
  int rc = oakuk_sched_select_cluster(&p, ms, (oakuk_cluster_aggregate *const *)cands->pdata, cands->len,
                                      r->reservations, key, &opts, &err);
  if (rc != 0 && rc != OAKUK_ENOCAPACITY) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "cluster selection: %s", oakuk_error_message(err));
    oakuk_error_free(err);
    oakuk_placement_unref(p);
    return NULL;
  }
  oakuk_error_free(err);
  for (size_t i = 0; p != NULL && i < oakuk_placement_explanation_count(p); i++)
    g_ptr_array_add(lines, g_strdup(oakuk_placement_explanation(p, i)));
  return p;
}

/* When no cluster was chosen: runs node selection over the node lists the active clusters sent
 * with their aggregates, adding one line per node. Returns TRUE when active nodes exist and not
 * one of them qualifies (arch, virtualization, emulation, constraints) whatever its free
 * resources: then the service cannot run anywhere now, which is NO_QUALIFIED_WORKER_FOUND rather
 * than a shortage of capacity. */
static gboolean no_qualified_node(Root *r, const oakuk_microservice *ms, GPtrArray *lines) {
  gboolean any_node = FALSE, any_qualified = FALSE;
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, r->aggregates);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    if (!root_cluster_active(r, k))
      continue;
    char *text = oakuk_cluster_aggregate_to_json(v, FALSE, NULL);
    g_autoptr(JsonNode) agg = text ? od_json_parse(text, -1, NULL) : NULL;
    od_oakuk_free(text);
    JsonObject *ao = agg && JSON_NODE_HOLDS_OBJECT(agg) ? json_node_get_object(agg) : NULL;
    JsonArray *nodes =
        ao && json_object_has_member(ao, "nodes") ? json_object_get_array_member(ao, "nodes") : NULL;
    g_autoptr(GPtrArray) reports = g_ptr_array_new_with_free_func((GDestroyNotify)oakuk_node_report_unref);
    for (guint i = 0; nodes != NULL && i < json_array_get_length(nodes); i++) {
      JsonObject *no = json_array_get_object_element(nodes, i);
      if (no == NULL || !json_object_get_boolean_member_with_default(no, "active", FALSE))
        continue;
      g_autoptr(JsonNode) nn = json_node_init_object(json_node_alloc(), no);
      g_autofree char *nt = od_json_to_string(nn, FALSE);
      oakuk_node_report *rep = oakuk_node_report_from_json(nt, (size_t)-1, NULL);
      if (rep != NULL)
        g_ptr_array_add(reports, rep);
    }
    if (reports->len == 0)
      continue;
    any_node = TRUE;
    oakuk_placement *p = NULL;
    oakuk_error *err = NULL;
    int rc = oakuk_sched_select_node(&p, ms, (oakuk_node_report *const *)reports->pdata, reports->len, NULL,
                                     NULL, NULL, &err);
    oakuk_error_free(err);
    if (p == NULL || rc == 0 || oakuk_placement_status(p) != OAKUK_STATUS_NO_QUALIFIED_WORKER)
      any_qualified = TRUE;
    for (size_t i = 0; p != NULL && i < oakuk_placement_explanation_count(p); i++)
      g_ptr_array_add(lines, g_strdup_printf("cluster %s: %s", oakuk_cluster_aggregate_name(v),
                                             oakuk_placement_explanation(p, i)));
    oakuk_placement_unref(p);
  }
  return any_node && !any_qualified;
}

gboolean root_place_instance(Root *r, JsonObject *service, const char *ms_json, JsonObject *inst,
                             GError **error) {
  const char *sid = str_member(service, "microserviceID");
  gint64 n = json_object_get_int_member_with_default(inst, "instance_number", 0);
  g_autofree char *key = instance_name(service, n);
  oakuk_reservations_remove(r->reservations, key);
  if (!drop_pending_deploys(r, sid, n, error))
    return FALSE;
  oakuk_error *err = NULL;
  oakuk_microservice *ms = oakuk_microservice_parse(ms_json, (size_t)-1, &err);
  if (ms == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "service %s: stored microservice: %s", sid,
                oakuk_error_message(err));
    oakuk_error_free(err);
    return FALSE;
  }
  g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GError) local = NULL;
  oakuk_placement *p = select_cluster(r, inst, ms, key, lines, &local);
  gboolean unqualified =
      local == NULL && (p == NULL || !oakuk_placement_ok(p)) && no_qualified_node(r, ms, lines);
  oakuk_microservice_unref(ms);
  if (local != NULL) {
    g_propagate_error(error, g_steal_pointer(&local));
    return FALSE;
  }
  g_ptr_array_add(lines, NULL);
  g_autofree char *explain = g_strjoinv("\n", (char **)lines->pdata);
  if (!od_db_run(r->db, error, "UPDATE services SET explain = ?2 WHERE id = ?1", sid, explain, NULL)) {
    oakuk_placement_unref(p);
    return FALSE;
  }
  clear_cluster_fields(inst);
  if (p == NULL || !oakuk_placement_ok(p)) {
    g_autofree char *detail = g_strjoinv("; ", (char **)lines->pdata);
    int32_t status = unqualified ? OAKUK_STATUS_NO_QUALIFIED_WORKER : OAKUK_STATUS_NO_ACTIVE_CLUSTER;
    set_status(service, inst, status, detail);
    od_log(G_LOG_LEVEL_MESSAGE, "schedule", "instance", key, "status", oakuk_instance_status_name(status),
           "msg", detail, NULL);
    oakuk_placement_unref(p);
    return TRUE;
  }
  g_autofree char *cid = g_strdup(oakuk_placement_target(p));
  g_autofree char *location =
      od_db_query_text(r->db, "SELECT location FROM clusters WHERE id = ?1", cid, NULL);
  g_autofree char *cname = od_db_query_text(r->db, "SELECT name FROM clusters WHERE id = ?1", cid, NULL);
  json_object_set_string_member(inst, "cluster_id", cid);
  json_object_set_string_member(inst, "cluster_location", location ? location : "");
  json_object_set_string_member(inst, "cluster_name", cname ? cname : "");
  set_status(service, inst, OAKUK_STATUS_CLUSTER_SCHEDULED, "");
  /* The chosen variant, shown by `oakuk status` (VIRT, ARCH). */
  JsonObject *chosen = json_object_new();
  json_object_set_string_member(chosen, "virtualization", oakuk_virt_name(oakuk_placement_virt(p)));
  if (oakuk_placement_arch(p) != NULL)
    json_object_set_string_member(chosen, "arch", oakuk_placement_arch(p));
  json_object_set_object_member(inst, "placement", chosen);
  g_autofree char *body = job_body(service, n, p);
  g_autofree char *path = g_strdup_printf("/api/service/%s/%" G_GINT64_FORMAT, sid, n);
  oakuk_placement_unref(p);
  od_log(G_LOG_LEVEL_MESSAGE, "schedule", "instance", key, "cluster", cid, "status", "CLUSTER_SCHEDULED",
         "msg", "cluster chosen", NULL);
  return root_enqueue_forward(r, cid, "POST", path, body, sid, n, error);
}

gboolean root_undeploy_instance(Root *r, JsonObject *service, JsonObject *inst, GError **error) {
  const char *sid = str_member(service, "microserviceID");
  gint64 n = json_object_get_int_member_with_default(inst, "instance_number", 0);
  g_autofree char *key = instance_name(service, n);
  oakuk_reservations_remove(r->reservations, key);
  if (!drop_pending_deploys(r, sid, n, error))
    return FALSE;
  const char *cid = str_member(inst, "cluster_id");
  if (cid == NULL || *cid == '\0')
    return TRUE;
  g_autofree char *known = od_db_query_text(r->db, "SELECT id FROM clusters WHERE id = ?1", cid, NULL);
  if (known == NULL)
    return TRUE;
  g_autofree char *path = g_strdup_printf("/api/service/%s/%" G_GINT64_FORMAT, sid, n);
  if (!root_cluster_active(r, cid)) {
    /* Best effort: the cluster may come back and must then drop the instance. */
    return root_enqueue_forward(r, cid, "DELETE", path, NULL, NULL, n, error);
  }
  g_autofree char *detail = g_strdup_printf("waiting for cluster %s to confirm the removal", cid);
  set_status(service, inst, OAKUK_STATUS_UNDEPLOYED, detail);
  if (!root_enqueue_forward(r, cid, "DELETE", path, NULL, sid, n, error))
    return FALSE;
  return FALSE;
}

static void remove_instance(JsonObject *service, gint64 n) {
  guint idx = 0;
  if (root_find_instance(service, n, &idx) != NULL)
    json_array_remove_element(json_object_get_array_member(service, "instance_list"), idx);
}

/* Moves inst away from cluster cid after a refusal or a timeout. */
static gboolean reschedule(Root *r, JsonObject *service, const char *ms_json, JsonObject *inst,
                           const char *cid, const char *reason, GError **error) {
  json_object_set_string_member(refusals(inst), cid, reason);
  od_log(G_LOG_LEVEL_MESSAGE, "reschedule", "service", str_member(service, "microserviceID"), "cluster", cid,
         "msg", reason, NULL);
  return root_place_instance(r, service, ms_json, inst, error);
}

/* ---- forwarding ---- */

static char *forward_key(const char *sid, gint64 n, gint64 id) {
  if (sid != NULL && *sid != '\0')
    return g_strdup_printf("%s/%" G_GINT64_FORMAT, sid, n);
  return g_strdup_printf("#%" G_GINT64_FORMAT, id);
}

static gboolean finish_instance(Root *r, const char *method, const char *sid, gint64 n, const char *cid,
                                gboolean ok, const char *why, GError **error) {
  g_autofree char *ms_json = NULL;
  g_autoptr(JsonObject) service = root_load_service(r, sid, &ms_json);
  JsonObject *inst = service ? root_find_instance(service, n, NULL) : NULL;
  if (inst == NULL || g_strcmp0(str_member(inst, "cluster_id"), cid) != 0)
    return TRUE;
  gboolean undeploying = g_strcmp0(str_member(inst, "status"), "UNDEPLOYED") == 0;
  if (strcmp(method, "DELETE") == 0) {
    if (!undeploying)
      return TRUE;
    remove_instance(service, n);
  } else if (ok || undeploying || !status_holds_cluster(str_member(inst, "status"))) {
    return TRUE;
  } else {
    g_autofree char *reason = g_strdup_printf("deploy request failed: %s", why);
    if (!reschedule(r, service, ms_json, inst, cid, reason, error))
      return FALSE;
  }
  return root_save_service(r, sid, service, error);
}

/* Records the outcome of one delivery attempt (inside a transaction). */
static gboolean forward_record(Root *r, Forward *f, gboolean ok, gboolean permanent, const char *why,
                               GError **error) {
  g_autofree char *idtext = g_strdup_printf("%" G_GINT64_FORMAT, f->id);
  g_autoptr(sqlite3_stmt) st = od_db_prepare(
      r->db, "SELECT cluster_id, service_id, instance, attempts FROM forwards WHERE id = CAST(?1 AS INTEGER)",
      error);
  if (st == NULL)
    return FALSE;
  sqlite3_bind_text(st, 1, idtext, -1, SQLITE_TRANSIENT);
  if (sqlite3_step(st) != SQLITE_ROW) /* dropped meanwhile (instance rescheduled or removed) */
    return TRUE;
  g_autofree char *cid = g_strdup((const char *)sqlite3_column_text(st, 0));
  g_autofree char *sid = g_strdup((const char *)sqlite3_column_text(st, 1));
  gint64 n = sqlite3_column_int64(st, 2);
  gint64 attempts = sqlite3_column_int64(st, 3) + 1;
  g_clear_pointer(&st, sqlite3_finalize);
  gboolean give_up = !ok && (permanent || attempts >= r->forward_max_attempts);
  od_log(ok ? G_LOG_LEVEL_INFO : G_LOG_LEVEL_WARNING, "forward", "method", f->method, "cluster", cid,
         "result",
         ok        ? "delivered"
         : give_up ? "abandoned"
                   : "retrying",
         "msg", why, NULL);
  if (ok || give_up)
    return od_db_run(r->db, error, "DELETE FROM forwards WHERE id = CAST(?1 AS INTEGER)", idtext, NULL) &&
           (*sid == '\0' || finish_instance(r, f->method, sid, n, cid, ok, why, error));
  gint64 backoff = MIN((gint64)1000 << MIN(attempts - 1, 6), 60000);
  g_autofree char *next = g_strdup_printf("%" G_GINT64_FORMAT, root_now_ms() + backoff);
  g_autofree char *att = g_strdup_printf("%" G_GINT64_FORMAT, attempts);
  return od_db_run(r->db, error,
                   "UPDATE forwards SET attempts = CAST(?2 AS INTEGER), next_at = CAST(?3 AS INTEGER),"
                   " last_error = ?4 WHERE id = CAST(?1 AS INTEGER)",
                   idtext, att, next, why, NULL);
}

static void forward_finish(Root *r, Forward *f, gboolean ok, gboolean permanent, const char *why) {
  g_autoptr(GError) error = NULL;
  if (root_begin(r, &error) && forward_record(r, f, ok, permanent, why, &error) && root_commit(r, &error))
    return;
  root_rollback(r);
  od_log(G_LOG_LEVEL_WARNING, "forward", "msg", error ? error->message : "database error", NULL);
}

static void forward_free(Forward *f) {
  g_free(f->key);
  g_free(f->method);
  g_clear_object(&f->msg);
  g_free(f);
}

static void forward_done(GObject *source, GAsyncResult *res, gpointer data) {
  Forward *f = data;
  Root *r = f->root;
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) body = soup_session_send_and_read_finish(SOUP_SESSION(source), res, &error);
  if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
    forward_free(f); /* shutting down: the row stays and is resumed on the next start */
    return;
  }
  g_hash_table_remove(r->inflight, f->key);
  guint status = error ? 0 : soup_message_get_status(f->msg);
  gboolean is_delete = strcmp(f->method, "DELETE") == 0;
  gboolean ok = error == NULL && (SOUP_STATUS_IS_SUCCESSFUL(status) || (is_delete && status == 404));
  gboolean permanent = error == NULL && status >= 400 && status < 500 && status != 408 && status != 429;
  g_autofree char *why = error ? g_strdup(error->message) : g_strdup_printf("HTTP %u", status);
  forward_finish(r, f, ok, permanent, why);
  forward_free(f);
  root_forward_pump(r);
}

static void send_forward(Root *r, gint64 id, const char *key, const char *method, const char *url,
                         const char *token, const char *body) {
  g_autoptr(GError) error = NULL;
  g_autoptr(GUri) uri = g_uri_parse(url, SOUP_HTTP_URI_FLAGS, &error);
  Forward *f = g_new0(Forward, 1);
  f->root = r;
  f->id = id;
  f->key = g_strdup(key);
  f->method = g_strdup(method);
  if (uri == NULL) {
    forward_finish(r, f, FALSE, TRUE, error->message);
    forward_free(f);
    return;
  }
  f->msg = soup_message_new_from_uri(method, uri);
  g_autofree char *auth = g_strconcat("Bearer ", token, NULL);
  soup_message_headers_replace(soup_message_get_request_headers(f->msg), "Authorization", auth);
  if (body != NULL && *body != '\0') {
    g_autoptr(GBytes) b = g_bytes_new(body, strlen(body));
    soup_message_set_request_body_from_bytes(f->msg, "application/json", b);
  }
  g_hash_table_insert(r->inflight, g_strdup(key), GINT_TO_POINTER(1));
  soup_session_send_and_read_async(r->session, f->msg, G_PRIORITY_DEFAULT, NULL, forward_done, f);
}

void root_forward_pump(Root *r) {
  g_autoptr(sqlite3_stmt) st = od_db_prepare(
      r->db,
      "SELECT f.id, f.method, f.path, f.body, f.service_id, f.instance, f.next_at, c.url, c.token"
      " FROM forwards f LEFT JOIN clusters c ON c.id = f.cluster_id ORDER BY f.id",
      NULL);
  if (st == NULL)
    return;
  g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  gint64 now = root_now_ms();
  g_autoptr(GPtrArray) orphans = g_ptr_array_new_with_free_func(g_free);
  while (sqlite3_step(st) == SQLITE_ROW) {
    gint64 id = sqlite3_column_int64(st, 0);
    g_autofree char *key =
        forward_key((const char *)sqlite3_column_text(st, 4), sqlite3_column_int64(st, 5), id);
    /* One request per instance at a time, in the order they were accepted. */
    if (!g_hash_table_add(seen, g_strdup(key)) || g_hash_table_contains(r->inflight, key) ||
        sqlite3_column_int64(st, 6) > now)
      continue;
    if (sqlite3_column_type(st, 7) == SQLITE_NULL) {
      g_ptr_array_add(orphans, g_strdup_printf("%" G_GINT64_FORMAT, id));
      continue;
    }
    g_autofree char *base = g_strdup((const char *)sqlite3_column_text(st, 7));
    while (g_str_has_suffix(base, "/"))
      base[strlen(base) - 1] = '\0';
    g_autofree char *url = g_strconcat(base, (const char *)sqlite3_column_text(st, 2), NULL);
    send_forward(r, id, key, (const char *)sqlite3_column_text(st, 1), url,
                 (const char *)sqlite3_column_text(st, 8), (const char *)sqlite3_column_text(st, 3));
  }
  g_clear_pointer(&st, sqlite3_finalize);
  for (guint i = 0; i < orphans->len; i++) {
    Forward f = {.root = r, .method = (char *)"", .key = (char *)""};
    f.id = g_ascii_strtoll(orphans->pdata[i], NULL, 10);
    g_autofree char *method =
        od_db_query_text(r->db, "SELECT method FROM forwards WHERE id = CAST(?1 AS INTEGER)",
                         (const char *)orphans->pdata[i], NULL);
    f.method = method ? method : (char *)"";
    forward_finish(r, &f, FALSE, TRUE, "cluster is no longer registered");
  }
}

/* ---- cluster reports ---- */

static gboolean find_service_id(Root *r, const char *job_id, char **sid) {
  *sid = od_db_query_text(r->db, "SELECT id FROM services WHERE id = ?1", job_id, NULL);
  if (*sid == NULL)
    *sid = od_db_query_text(r->db, "SELECT id FROM services WHERE json_extract(doc, '$.job_name') = ?1",
                            job_id, NULL);
  return *sid != NULL;
}

static gboolean holds(JsonNode *n, GType type) {
  return n != NULL && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == type;
}

/* The readiness a cluster reported in entry: ready (absent or null: false) and the node's
 * ready_ms (-1 when absent). FALSE with an error naming the field when either has the wrong type. */
static gboolean entry_ready(JsonObject *entry, const char *path, gboolean *ready, gint64 *node_ms,
                            GError **error) {
  JsonNode *rn = json_object_get_member(entry, "ready");
  JsonNode *mn = json_object_get_member(entry, "ready_ms");
  if (rn != NULL && !JSON_NODE_HOLDS_NULL(rn) && !holds(rn, G_TYPE_BOOLEAN)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s.ready: not a boolean", path);
    return FALSE;
  }
  if (mn != NULL && !JSON_NODE_HOLDS_NULL(mn) && (!holds(mn, G_TYPE_INT64) || json_node_get_int(mn) < 0)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s.ready_ms: not a non-negative integer", path);
    return FALSE;
  }
  *ready = holds(rn, G_TYPE_BOOLEAN) && json_node_get_boolean(rn);
  *node_ms = holds(mn, G_TYPE_INT64) ? json_node_get_int(mn) : -1;
  return TRUE;
}

/* Applies a RUNNING report's readiness to inst. The first ready=true of a RUNNING stretch sets
 * ready_ms, measured by the root: from requested_at (the API call that created the instance) to
 * now; it is absent for instances created before requested_at was recorded. Returns TRUE when
 * the instance became ready with this report. */
static gboolean update_ready(JsonObject *inst, gboolean ready, gint64 node_ms, gint64 now) {
  gboolean was = json_object_get_boolean_member_with_default(inst, "ready", FALSE);
  if (!ready) {
    clear_ready(inst);
    return FALSE;
  }
  if (was)
    return FALSE;
  json_object_set_boolean_member(inst, "ready", TRUE);
  JsonNode *at = json_object_get_member(inst, "requested_at");
  if (holds(at, G_TYPE_INT64))
    json_object_set_int_member(inst, "ready_ms", MAX(0, now - json_node_get_int(at)));
  if (node_ms >= 0)
    json_object_set_int_member(inst, "node_ready_ms", node_ms);
  return TRUE;
}

static void log_status(const char *key, const char *cluster_id, const char *status, const char *detail,
                       JsonObject *ready_inst) {
  if (ready_inst == NULL) {
    od_log(G_LOG_LEVEL_INFO, "status", "instance", key, "cluster", cluster_id, "status", status, "msg",
           detail, NULL);
    return;
  }
  gint64 ms = json_object_get_int_member_with_default(ready_inst, "ready_ms", -1);
  gint64 node_ms = json_object_get_int_member_with_default(ready_inst, "node_ready_ms", -1);
  g_autofree char *ms_text = ms >= 0 ? g_strdup_printf("%" G_GINT64_FORMAT, ms) : g_strdup("unknown");
  g_autofree char *node_text =
      node_ms >= 0 ? g_strdup_printf("%" G_GINT64_FORMAT, node_ms) : g_strdup("unknown");
  od_log(G_LOG_LEVEL_INFO, "status", "instance", key, "cluster", cluster_id, "status", status, "ready",
         "true", "ready_ms", ms_text, "node_ready_ms", node_text, "msg", detail, NULL);
}

gboolean root_apply_status(Root *r, const char *cluster_id, JsonObject *entry, const char *path,
                           GError **error) {
  const char *job_id = str_member(entry, "job_id");
  const char *status = str_member(entry, "status");
  JsonNode *inst_node = json_object_get_member(entry, "instance");
  const char *bad = job_id == NULL ? "job_id" : status == NULL ? "status" : NULL;
  if (bad == NULL && (!holds(inst_node, G_TYPE_INT64) || json_node_get_int(inst_node) < 0))
    bad = "instance";
  if (bad != NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s.%s: missing or of the wrong type", path, bad);
    return FALSE;
  }
  int32_t code = oakuk_instance_status_from_name(status);
  if (code < 0) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s.status: unknown instance status '%s'", path, status);
    return FALSE;
  }
  gboolean ready = FALSE;
  gint64 node_ms = -1;
  if (!entry_ready(entry, path, &ready, &node_ms, error))
    return FALSE;
  ready = ready && code == OAKUK_STATUS_RUNNING; /* only a running instance can be ready */
  gint64 n = json_node_get_int(inst_node);
  g_autofree char *sid = NULL, *ms_json = NULL;
  if (!find_service_id(r, job_id, &sid))
    return TRUE; /* the service was deleted meanwhile: nothing to update */
  g_autoptr(JsonObject) service = root_load_service(r, sid, &ms_json);
  JsonObject *inst = service ? root_find_instance(service, n, NULL) : NULL;
  if (inst == NULL || g_strcmp0(str_member(inst, "cluster_id"), cluster_id) != 0)
    return TRUE;
  const char *detail = str_member(entry, "status_detail");
  g_autofree char *key = instance_name(service, n);
  gboolean terminating = g_strcmp0(str_member(inst, "status"), "UNDEPLOYED") == 0;
  gboolean plain = !terminating && code != OAKUK_STATUS_UNDEPLOYED &&
                   code != OAKUK_STATUS_NO_QUALIFIED_WORKER && code != OAKUK_STATUS_NO_WORKER_CAPACITY;
  gboolean became_ready = plain && update_ready(inst, ready, node_ms, root_now_ms());
  log_status(key, cluster_id, status, detail ? detail : "", became_ready ? inst : NULL);
  if (terminating) {
    if (code != OAKUK_STATUS_UNDEPLOYED)
      return TRUE;
    remove_instance(service, n);
  } else if (code == OAKUK_STATUS_UNDEPLOYED) {
    oakuk_reservations_remove(r->reservations, key);
    remove_instance(service, n);
  } else if (code == OAKUK_STATUS_NO_QUALIFIED_WORKER || code == OAKUK_STATUS_NO_WORKER_CAPACITY) {
    g_autofree char *reason =
        g_strdup_printf("%s%s%s", status, detail && *detail ? ": " : "", detail ? detail : "");
    if (!reschedule(r, service, ms_json, inst, cluster_id, reason, error))
      return FALSE;
  } else {
    set_status(service, inst, code, detail);
    const char *node = str_member(entry, "node");
    if (node != NULL)
      json_object_set_string_member(inst, "node_id", node);
    const char *ip = str_member(entry, "publicip");
    if (ip != NULL)
      json_object_set_string_member(inst, "publicip", ip);
    if (json_object_has_member(entry, "cpu"))
      json_object_set_double_member(inst, "cpu", json_object_get_double_member_with_default(entry, "cpu", 0));
    if (json_object_has_member(entry, "memory"))
      json_object_set_double_member(inst, "memory",
                                    json_object_get_double_member_with_default(entry, "memory", 0));
    if (!status_in_flight(status))
      oakuk_reservations_remove(r->reservations, key);
  }
  return root_save_service(r, sid, service, error);
}

/* ---- periodic work ---- */

gboolean root_move_off_cluster(Root *r, const char *cid, GError **error) {
  g_autoptr(sqlite3_stmt) st =
      od_db_prepare(r->db,
                    "SELECT DISTINCT s.id FROM services s, json_each(s.doc, '$.instance_list') i"
                    " WHERE json_extract(i.value, '$.cluster_id') = ?1",
                    error);
  if (st == NULL)
    return FALSE;
  sqlite3_bind_text(st, 1, cid, -1, SQLITE_TRANSIENT);
  g_autoptr(GPtrArray) ids = g_ptr_array_new_with_free_func(g_free);
  while (sqlite3_step(st) == SQLITE_ROW)
    g_ptr_array_add(ids, g_strdup((const char *)sqlite3_column_text(st, 0)));
  for (guint i = 0; i < ids->len; i++) {
    g_autofree char *ms_json = NULL;
    g_autoptr(JsonObject) service = root_load_service(r, ids->pdata[i], &ms_json);
    JsonArray *list = service ? json_object_get_array_member(service, "instance_list") : NULL;
    gboolean changed = FALSE;
    for (guint j = 0; list != NULL && j < json_array_get_length(list); j++) {
      JsonObject *inst = json_array_get_object_element(list, j);
      if (g_strcmp0(str_member(inst, "cluster_id"), cid) != 0)
        continue;
      gint64 n = json_object_get_int_member_with_default(inst, "instance_number", 0);
      g_autofree char *path = g_strdup_printf("/api/service/%s/%" G_GINT64_FORMAT, (char *)ids->pdata[i], n);
      if (g_strcmp0(str_member(inst, "status"), "UNDEPLOYED") == 0) {
        /* The cluster is gone: the removal it was asked for cannot be confirmed. */
        json_array_remove_element(list, j--);
        changed = TRUE;
        continue;
      }
      if (!status_holds_cluster(str_member(inst, "status")))
        continue;
      g_autofree char *reason = g_strdup_printf(
          "stopped sending aggregates for more than %" G_GINT64_FORMAT " s", r->cluster_timeout_ms / 1000);
      if (!drop_pending_deploys(r, ids->pdata[i], n, error) ||
          !root_enqueue_forward(r, cid, "DELETE", path, NULL, NULL, n, error) ||
          !reschedule(r, service, ms_json, inst, cid, reason, error))
        return FALSE;
      changed = TRUE;
    }
    if (changed && !root_save_service(r, ids->pdata[i], service, error))
      return FALSE;
  }
  return TRUE;
}

gboolean root_tick(gpointer data) {
  Root *r = data;
  g_autoptr(GPtrArray) gone = g_ptr_array_new_with_free_func(g_free);
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, r->aggregates);
  while (g_hash_table_iter_next(&it, &k, &v))
    if (!root_cluster_active(r, k))
      g_ptr_array_add(gone, g_strdup(k));
  for (guint i = 0; i < gone->len; i++) {
    g_autoptr(GError) error = NULL;
    if (!root_begin(r, &error) || !root_move_off_cluster(r, gone->pdata[i], &error) ||
        !root_commit(r, &error)) {
      root_rollback(r);
      od_log(G_LOG_LEVEL_WARNING, "reschedule", "cluster", (char *)gone->pdata[i], "msg", error->message,
             NULL);
    }
  }
  g_autofree char *now_s = g_strdup_printf("%" G_GINT64_FORMAT, root_now_ms() / 1000);
  od_db_run(r->db, NULL, "DELETE FROM join_tokens WHERE expires_at < CAST(?1 AS INTEGER)", now_s, NULL);
  root_forward_pump(r);
  return G_SOURCE_CONTINUE;
}

void root_rebuild_reservations(Root *r) {
  g_autoptr(sqlite3_stmt) st = od_db_prepare(r->db, "SELECT doc FROM services", NULL);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
    g_autoptr(JsonNode) node = od_json_parse((const char *)sqlite3_column_text(st, 0), -1, NULL);
    JsonObject *service = node && JSON_NODE_HOLDS_OBJECT(node) ? json_node_get_object(node) : NULL;
    JsonArray *list = service ? json_object_get_array_member(service, "instance_list") : NULL;
    for (guint j = 0; list != NULL && j < json_array_get_length(list); j++) {
      JsonObject *inst = json_array_get_object_element(list, j);
      if (!status_in_flight(str_member(inst, "status")))
        continue;
      g_autofree char *key =
          instance_name(service, json_object_get_int_member_with_default(inst, "instance_number", 0));
      oakuk_reservations_add(r->reservations, key, str_member(inst, "cluster_id"),
                             json_object_get_int_member_with_default(service, "vcpus", 0),
                             json_object_get_int_member_with_default(service, "memory", 0));
    }
  }
}

/* Instances: placement on nodes (liboakuk sched), the MQTT topics of DESIGN §7, deliveries to
 * nodes (stored until the broker acknowledges them), restarts and rescheduling, and the network
 * tables (services, peers) every node gets. */
#include "cluster.h"

#include <arpa/inet.h>
#include <string.h>

#define RECONCILE_COOLDOWN_MS 10000

typedef struct {
  Cluster *c;
  gint64 id;
} DeliveryCtx;

static const char *str_member(JsonObject *o, const char *key) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  return n != NULL && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
             ? json_node_get_string(n)
             : NULL;
}

static JsonObject *parse_object(const char *text) {
  g_autoptr(JsonNode) node = text ? od_json_parse(text, -1, NULL) : NULL;
  return node != NULL && JSON_NODE_HOLDS_OBJECT(node) ? json_object_ref(json_node_get_object(node)) : NULL;
}

static char *object_text(JsonObject *o) {
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), o);
  return od_json_to_string(node, FALSE);
}

static gboolean status_active(const char *status) {
  int32_t s = oakuk_instance_status_from_name(status);
  return s == OAKUK_STATUS_CLUSTER_SCHEDULED || s == OAKUK_STATUS_NODE_SCHEDULED ||
         s == OAKUK_STATUS_CREATING || s == OAKUK_STATUS_RUNNING;
}

char *jobs_node_subnet(Cluster *c, gint64 index) {
  if (c->subnet == NULL || index < 0)
    return NULL;
  g_auto(GStrv) parts = g_strsplit(c->subnet, "/", 2);
  guint64 plen = 0;
  guint32 addr = 0;
  if (g_strv_length(parts) != 2 || !g_ascii_string_to_unsigned(parts[1], 10, 8, 24, &plen, NULL) ||
      inet_pton(AF_INET, parts[0], &addr) != 1 || index >= ((gint64)1 << (24 - plen)))
    return NULL;
  guint32 base = g_ntohl(addr) & (plen ? ~0u << (32 - plen) : 0);
  guint32 net = g_htonl(base + ((guint32)index << 8));
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &net, buf, sizeof buf);
  return g_strdup_printf("%s/24", buf);
}

/* ---- deliveries (cluster -> node control messages) ---- */

static gboolean queue_delivery(Cluster *c, const char *node, const char *instance, const char *kind,
                               JsonObject *payload, GError **error) {
  g_autofree char *topic = g_strdup_printf("nodes/%s/control/%s", node, kind);
  g_autofree char *text = object_text(payload);
  return od_db_run(c->db, error,
                   "INSERT INTO deliveries (node, instance, topic, payload) VALUES (?1, ?2, ?3, ?4)", node,
                   instance, topic, text, NULL);
}

static gboolean queue_delete(Cluster *c, const char *node, const char *job_name, gint64 n, const char *name,
                             GError **error) {
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "job_name", job_name);
  json_object_set_int_member(o, "instance_number", n);
  return queue_delivery(c, node, name, "delete", o, error);
}

static void delivery_done(gboolean ok, const char *reason, gpointer data) {
  DeliveryCtx *d = data;
  Cluster *c = d->c;
  g_autofree char *id = g_strdup_printf("%" G_GINT64_FORMAT, d->id);
  g_hash_table_remove(c->inflight, id);
  if (ok)
    od_db_run(c->db, NULL, "DELETE FROM deliveries WHERE id = CAST(?1 AS INTEGER)", id, NULL);
  else
    od_log(G_LOG_LEVEL_WARNING, "delivery", "id", id, "msg", "not acknowledged; will retry", "reason", reason,
           NULL);
  g_free(d);
}

/* Sends stored deliveries to nodes that reported since our connection came up (so they are
 * connected and subscribed); per instance only the oldest one is in flight, keeping order. */
void jobs_delivery_pump(Cluster *c) {
  if (c->mqtt == NULL || !c->mqtt_up)
    return;
  g_autoptr(sqlite3_stmt) st =
      od_db_prepare(c->db, "SELECT id, node, instance, topic, payload FROM deliveries ORDER BY id", NULL);
  g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
    gint64 id = sqlite3_column_int64(st, 0);
    const char *node = (const char *)sqlite3_column_text(st, 1);
    g_autofree char *key = g_strdup_printf("%s/%s", node, sqlite3_column_text(st, 2));
    g_autofree char *ids = g_strdup_printf("%" G_GINT64_FORMAT, id);
    if (!g_hash_table_add(seen, g_strdup(key)) || g_hash_table_contains(c->inflight, ids) ||
        !g_hash_table_contains(c->reachable, node))
      continue;
    const char *topic = (const char *)sqlite3_column_text(st, 3);
    const char *payload = (const char *)sqlite3_column_text(st, 4);
    DeliveryCtx *d = g_new0(DeliveryCtx, 1);
    d->c = c;
    d->id = id;
    g_autoptr(GError) error = NULL;
    if (!od_mqtt_publish(c->mqtt, topic, payload, strlen(payload), FALSE, delivery_done, d, &error)) {
      g_free(d);
      od_log(G_LOG_LEVEL_DEBUG, "delivery", "topic", topic, "msg", error->message, NULL);
      return;
    }
    g_hash_table_add(c->inflight, g_steal_pointer(&ids));
    od_log(G_LOG_LEVEL_INFO, "delivery", "topic", topic, "node", node, "msg", "published", NULL);
  }
}

/* ---- placement ---- */

static gboolean node_in(const char *avoid_json, const char *node) {
  g_autoptr(JsonNode) n = od_json_parse(avoid_json ? avoid_json : "[]", -1, NULL);
  JsonArray *a = n && JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n) : NULL;
  for (guint i = 0; a != NULL && i < json_array_get_length(a); i++)
    if (g_strcmp0(json_array_get_string_element(a, i), node) == 0)
      return TRUE;
  return FALSE;
}

static char *avoid_add(const char *avoid_json, const char *node) {
  g_autoptr(JsonNode) n = od_json_parse(avoid_json ? avoid_json : "[]", -1, NULL);
  if (n == NULL || !JSON_NODE_HOLDS_ARRAY(n)) {
    g_clear_pointer(&n, json_node_unref);
    n = json_node_init_array(json_node_alloc(), json_array_new());
  }
  json_array_add_string_element(json_node_get_array(n), node);
  return od_json_to_string(n, FALSE);
}

/* The next host address of the node's /24 (.2 .. .254; .1 is the node's bridge) that no instance
 * on it holds, going round from the last one handed out: an address freed by an undeploy is reused
 * last, so a new instance does not get it while the node may still be tearing the old one down. */
static char *allocate_ip(Cluster *c, const char *node, const char *subnet) {
  g_auto(GStrv) parts = g_strsplit(subnet, "/", 2);
  guint32 addr = 0;
  if (parts[0] == NULL || inet_pton(AF_INET, parts[0], &addr) != 1)
    return g_strdup("");
  guint32 base = g_ntohl(addr);
  g_autofree char *key = g_strdup_printf("last_ip:%s", node);
  g_autofree char *last_text = cluster_kv_get(c, key);
  guint64 last = 1;
  if (last_text == NULL || !g_ascii_string_to_unsigned(last_text, 10, 1, 254, &last, NULL))
    last = 1;
  for (guint32 k = 1; k <= 253; k++) {
    guint32 h = 2 + (guint32)((last - 2 + k + 253) % 253);
    guint32 a = g_htonl(base + h);
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a, buf, sizeof buf);
    g_autofree char *used =
        od_db_query_text(c->db, "SELECT name FROM instances WHERE node = ?1 AND ip = ?2", node, buf, NULL);
    if (used == NULL) {
      g_autofree char *h_text = g_strdup_printf("%u", h);
      cluster_kv_set(c, key, h_text, NULL);
      return g_strdup(buf);
    }
  }
  return g_strdup("");
}

static gboolean store_explanation(Cluster *c, const char *job_id, const char *job_name, gint64 n,
                                  GPtrArray *lines, GError **error) {
  g_autoptr(JsonArray) a = json_array_new();
  for (guint i = 0; i < lines->len; i++)
    json_array_add_string_element(a, lines->pdata[i]);
  g_autoptr(JsonNode) node = json_node_init_array(json_node_alloc(), a);
  g_autofree char *text = od_json_to_string(node, FALSE);
  g_autofree char *ns = g_strdup_printf("%" G_GINT64_FORMAT, n);
  return od_db_run(c->db, error,
                   "INSERT OR REPLACE INTO explanations (job_id, job_name, instance, lines)"
                   " VALUES (?1, ?2, CAST(?3 AS INTEGER), ?4)",
                   job_id, job_name, ns, text, NULL);
}

/* Runs node selection over the active nodes the instance may use. Returns the placement (NULL
 * only on an internal error) and the explanation lines. */
static oakuk_placement *select_node(Cluster *c, const oakuk_microservice *ms, const char *name,
                                    const char *avoid, GPtrArray *lines, GError **error) {
  g_autoptr(GPtrArray) cands = g_ptr_array_new();
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, c->reports);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    if (node_in(avoid, k))
      g_ptr_array_add(
          lines, g_strdup_printf("node %s: not retried (the instance failed or was lost there)", (char *)k));
    else
      g_ptr_array_add(cands, v);
  }
  oakuk_sched_options opts = OAKUK_SCHED_OPTIONS_INIT;
  opts.policy = c->policy;
  opts.now_ms = cluster_liveness_now_ms(c);
  opts.timeout_ms = c->node_timeout_ms;
  oakuk_placement *p = NULL;
  oakuk_error *err = NULL;
  int rc = oakuk_sched_select_node(&p, ms, (oakuk_node_report *const *)cands->pdata, cands->len,
                                   c->reservations, name, &opts, &err);
  if (rc != 0 && rc != OAKUK_ENOCAPACITY) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "node selection for %s: %s", name,
                oakuk_error_message(err));
    oakuk_error_free(err);
    oakuk_placement_unref(p);
    return NULL;
  }
  oakuk_error_free(err);
  for (size_t i = 0; p != NULL && i < oakuk_placement_explanation_count(p); i++)
    g_ptr_array_add(lines, g_strdup(oakuk_placement_explanation(p, i)));
  if (lines->len == 0)
    g_ptr_array_add(lines, g_strdup("no node has registered and reported"));
  return p;
}

/* Places the stored instance name on a node (inside a transaction). On success the deploy is
 * queued for the node and NODE_SCHEDULED for the root; otherwise the root gets
 * NO_QUALIFIED_WORKER_FOUND / NO_WORKER_CAPACITY with the explanation and the instance is dropped
 * here (the root places it elsewhere). prefix (may be NULL) is prepended to a failure's detail. */
static gboolean place_instance(Cluster *c, const char *name, const char *prefix, GError **error) {
  g_autoptr(sqlite3_stmt) st = od_db_prepare(
      c->db, "SELECT job_id, job_name, instance, job, avoid FROM instances WHERE name = ?1", error);
  if (st == NULL)
    return FALSE;
  sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
  if (sqlite3_step(st) != SQLITE_ROW)
    return TRUE;
  g_autofree char *job_id = g_strdup((const char *)sqlite3_column_text(st, 0));
  g_autofree char *job_name = g_strdup((const char *)sqlite3_column_text(st, 1));
  gint64 n = sqlite3_column_int64(st, 2);
  g_autoptr(JsonObject) job = parse_object((const char *)sqlite3_column_text(st, 3));
  g_autofree char *avoid = g_strdup((const char *)sqlite3_column_text(st, 4));
  g_clear_pointer(&st, sqlite3_finalize);
  oakuk_reservations_remove(c->reservations, name);
  g_autofree char *job_text = job ? object_text(job) : g_strdup("");
  oakuk_error *err = NULL;
  oakuk_microservice *ms = oakuk_microservice_parse(job_text, (size_t)-1, &err);
  if (ms == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "instance %s: stored job: %s", name,
                oakuk_error_message(err));
    oakuk_error_free(err);
    return FALSE;
  }
  g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
  oakuk_placement *p = select_node(c, ms, name, avoid, lines, error);
  oakuk_microservice_unref(ms);
  if (p == NULL || !store_explanation(c, job_id, job_name, n, lines, error)) {
    oakuk_placement_unref(p);
    return FALSE;
  }
  c->net_dirty = TRUE;
  if (!oakuk_placement_ok(p)) {
    int32_t code = oakuk_placement_status(p);
    if (code != OAKUK_STATUS_NO_WORKER_CAPACITY)
      code = OAKUK_STATUS_NO_QUALIFIED_WORKER;
    oakuk_placement_unref(p);
    g_ptr_array_add(lines, NULL);
    g_autofree char *joined = g_strjoinv("; ", (char **)lines->pdata);
    g_autofree char *detail = prefix ? g_strdup_printf("%s; %s", prefix, joined) : g_strdup(joined);
    od_log(G_LOG_LEVEL_MESSAGE, "schedule", "instance", name, "status", oakuk_instance_status_name(code),
           "msg", detail, NULL);
    return root_queue_status(c, job_id, n, oakuk_instance_status_name(code), detail, NULL, FALSE, -1,
                             error) &&
           od_db_run(c->db, error, "DELETE FROM instances WHERE name = ?1", name, NULL);
  }
  g_autofree char *node = g_strdup(oakuk_placement_target(p));
  oakuk_placement_unref(p);
  g_autofree char *subnet = od_db_query_text(c->db, "SELECT subnet FROM nodes WHERE id = ?1", node, NULL);
  g_autofree char *ip = allocate_ip(c, node, subnet ? subnet : "");
  json_object_set_int_member(job, "instance_number", n);
  json_object_set_string_member(job, "instance_name", name);
  json_object_set_string_member(job, "instance_ip", ip);
  json_object_set_string_member(job, "node_subnet", subnet ? subnet : "");
  od_log(G_LOG_LEVEL_MESSAGE, "schedule", "instance", name, "node", node, "ip", ip, "status",
         "NODE_SCHEDULED", NULL);
  return od_db_run(
             c->db, error,
             "UPDATE instances SET node = ?2, ip = ?3, status = 'NODE_SCHEDULED', detail = '', failures = 0,"
             " ready = 0, ready_ms = NULL WHERE name = ?1",
             name, node, ip, NULL) &&
         queue_delivery(c, node, name, "deploy", job, error) &&
         root_queue_status(c, job_id, n, "NODE_SCHEDULED", "", node, FALSE, -1, error);
}

/* Moves an instance off its node (lost or failing there): tells that node to drop it (delivered
 * when it is back) and places it elsewhere. */
static gboolean reschedule(Cluster *c, const char *name, const char *reason, GError **error) {
  g_autofree char *node = od_db_query_text(c->db, "SELECT node FROM instances WHERE name = ?1", name, NULL);
  g_autofree char *avoid = od_db_query_text(c->db, "SELECT avoid FROM instances WHERE name = ?1", name, NULL);
  g_autofree char *job_name =
      od_db_query_text(c->db, "SELECT job_name FROM instances WHERE name = ?1", name, NULL);
  g_autofree char *ns = od_db_query_text(c->db, "SELECT instance FROM instances WHERE name = ?1", name, NULL);
  if (node == NULL)
    return TRUE;
  od_log(G_LOG_LEVEL_MESSAGE, "reschedule", "instance", name, "node", node, "msg", reason, NULL);
  if (*node != '\0') {
    g_autofree char *avoid2 = avoid_add(avoid, node);
    if (!od_db_run(c->db, error,
                   "DELETE FROM deliveries WHERE instance = ?1 AND topic LIKE '%/control/deploy'", name,
                   NULL) ||
        !queue_delete(c, node, job_name, g_ascii_strtoll(ns, NULL, 10), name, error) ||
        !od_db_run(c->db, error, "UPDATE instances SET avoid = ?2, node = '', ip = '' WHERE name = ?1", name,
                   avoid2, NULL))
      return FALSE;
  }
  return place_instance(c, name, reason, error);
}

/* Applies the root's chosen variant to the job so the node scheduler considers only it. */
static gboolean restrict_to_placement(JsonObject *job, GError **error) {
  JsonNode *pn = json_object_get_member(job, "placement");
  if (pn == NULL)
    return TRUE;
  if (!JSON_NODE_HOLDS_OBJECT(pn)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "placement: expected an object");
    return FALSE;
  }
  JsonObject *pl = json_node_get_object(pn);
  const char *virt = str_member(pl, "virtualization");
  if (virt == NULL || oakuk_virt_from_name(virt) == OAKUK_VIRT_NONE) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "placement.virtualization: '%s' is not container or unikernel", virt ? virt : "(missing)");
    return FALSE;
  }
  const char *arch = str_member(pl, "arch");
  const char *code = str_member(pl, "code");
  const char *sha = str_member(pl, "code_sha256");
  if (arch != NULL && !oakuk_arch_is_known(arch)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "placement.arch: '%s' is not a known architecture", arch);
    return FALSE;
  }
  JsonArray *archs = json_object_has_member(job, "arch") ? json_object_get_array_member(job, "arch") : NULL;
  gboolean uk = oakuk_virt_from_name(virt) == OAKUK_VIRT_UNIKERNEL;
  json_object_set_string_member(job, "virtualization", oakuk_virt_name(oakuk_virt_from_name(virt)));
  if (code != NULL && *code != '\0')
    json_object_set_string_member(job, "code", code);
  json_object_remove_member(job, "code_sha256");
  if (sha != NULL)
    json_object_set_string_member(job, "code_sha256", sha);
  if (arch != NULL && (uk || (archs != NULL && json_array_get_length(archs) > 0))) {
    JsonArray *one = json_array_new();
    json_array_add_string_element(one, arch);
    json_object_set_array_member(job, "arch", one);
  }
  return TRUE;
}

guint jobs_deploy(Cluster *c, const char *job_id, gint64 n, JsonObject *body, JsonObject **reply,
                  GError **error) {
  g_autofree char *existing = g_strdup_printf("%" G_GINT64_FORMAT, n);
  g_autofree char *known = od_db_query_text(
      c->db, "SELECT status FROM instances WHERE job_id = ?1 AND instance = CAST(?2 AS INTEGER)", job_id,
      existing, NULL);
  *reply = json_object_new();
  if (known != NULL) {
    json_object_set_string_member(*reply, "message", "instance already deployed here");
    json_object_set_string_member(*reply, "status", known);
    return SOUP_STATUS_OK;
  }
  JsonNode *in = json_object_get_member(body, "instance_number");
  if (in != NULL && (!JSON_NODE_HOLDS_VALUE(in) || json_node_get_value_type(in) != G_TYPE_INT64 ||
                     json_node_get_int(in) != n)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "instance_number: must equal the instance in the path (%s)", existing);
    return SOUP_STATUS_BAD_REQUEST;
  }
  g_autofree char *text = object_text(body);
  g_autoptr(JsonObject) job = parse_object(text);
  json_object_remove_member(job, "instance_list");
  if (!restrict_to_placement(job, error))
    return SOUP_STATUS_BAD_REQUEST;
  g_autofree char *restricted = object_text(job);
  oakuk_error *err = NULL;
  oakuk_microservice *ms = oakuk_microservice_parse(restricted, (size_t)-1, &err);
  if (ms == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s", oakuk_error_message(err));
    oakuk_error_free(err);
    return SOUP_STATUS_BAD_REQUEST;
  }
  g_autofree char *job_name = g_strdup(oakuk_microservice_service_name(ms));
  gint64 restart = oakuk_microservice_restart(ms);
  oakuk_microservice_unref(ms);
  if (job_name == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "job_name: missing (need job_name or app_name and app_ns)");
    return SOUP_STATUS_BAD_REQUEST;
  }
  json_object_set_string_member(job, "job_name", job_name);
  char *iname = oakuk_instance_name(job_name, n);
  g_autofree char *name = g_strdup(iname);
  od_oakuk_free(iname);
  g_autofree char *restart_s = g_strdup_printf("%" G_GINT64_FORMAT, restart);
  g_autofree char *stored = object_text(job);
  if (!cluster_begin(c, error) ||
      !od_db_run(c->db, error,
                 "INSERT OR REPLACE INTO instances (name, job_id, job_name, instance, status, job, restart)"
                 " VALUES (?1, ?2, ?3, CAST(?4 AS INTEGER), 'CLUSTER_SCHEDULED', ?5, CAST(?6 AS INTEGER))",
                 name, job_id, job_name, existing, stored, restart_s, NULL) ||
      !place_instance(c, name, NULL, error) || !cluster_commit(c, error)) {
    cluster_rollback(c);
    return SOUP_STATUS_INTERNAL_SERVER_ERROR;
  }
  g_autofree char *status =
      od_db_query_text(c->db, "SELECT status FROM instances WHERE name = ?1", name, NULL);
  g_autofree char *node = od_db_query_text(c->db, "SELECT node FROM instances WHERE name = ?1", name, NULL);
  json_object_set_string_member(*reply, "instance", name);
  json_object_set_string_member(*reply, "status", status ? status : "NO_QUALIFIED_WORKER_FOUND");
  json_object_set_string_member(*reply, "node", node ? node : "");
  jobs_delivery_pump(c);
  root_status_pump(c);
  return SOUP_STATUS_OK;
}

guint jobs_delete(Cluster *c, const char *job_id, gint64 n, GError **error) {
  g_autofree char *ns = g_strdup_printf("%" G_GINT64_FORMAT, n);
  g_autofree char *name = od_db_query_text(
      c->db,
      "SELECT name FROM instances WHERE (job_id = ?1 OR job_name = ?1) AND instance = CAST(?2 AS INTEGER)",
      job_id, ns, NULL);
  if (name == NULL)
    return SOUP_STATUS_NOT_FOUND;
  g_autofree char *node = od_db_query_text(c->db, "SELECT node FROM instances WHERE name = ?1", name, NULL);
  g_autofree char *job_name =
      od_db_query_text(c->db, "SELECT job_name FROM instances WHERE name = ?1", name, NULL);
  if (!cluster_begin(c, error) ||
      !od_db_run(c->db, error, "DELETE FROM deliveries WHERE instance = ?1 AND topic LIKE '%/control/deploy'",
                 name, NULL) ||
      (*node != '\0' && !queue_delete(c, node, job_name, n, name, error)) ||
      !od_db_run(c->db, error, "DELETE FROM instances WHERE name = ?1", name, NULL) ||
      !cluster_commit(c, error)) {
    cluster_rollback(c);
    return SOUP_STATUS_INTERNAL_SERVER_ERROR;
  }
  oakuk_reservations_remove(c->reservations, name);
  c->net_dirty = TRUE;
  od_log(G_LOG_LEVEL_MESSAGE, "undeploy", "instance", name, "node", node, NULL);
  jobs_delivery_pump(c);
  return SOUP_STATUS_OK;
}

/* ---- MQTT input ---- */

static void reject(Cluster *c, const char *node, const char *topic, const char *problem) {
  c->mqtt_rejected++;
  od_log(G_LOG_LEVEL_WARNING, "mqtt-reject", "node", node, "topic", topic, "msg", problem, NULL);
}

/* An instance the node runs that is not placed there any more: tell it to drop it. */
static void reconcile_extra(Cluster *c, const char *node, const char *instance) {
  g_autofree char *here = od_db_query_text(c->db, "SELECT name FROM instances WHERE name = ?1 AND node = ?2",
                                           instance, node, NULL);
  const char *sep = g_strrstr(instance, ".instance.");
  gint64 n = 0;
  if (here != NULL || sep == NULL || !g_ascii_string_to_signed(sep + 10, 10, 0, G_MAXINT64, &n, NULL))
    return;
  g_autofree char *key = g_strdup_printf("%s/%s", node, instance);
  gint64 *last = g_hash_table_lookup(c->delete_sent, key);
  gint64 now = cluster_now_ms();
  if (last != NULL && now - *last < RECONCILE_COOLDOWN_MS)
    return;
  g_autofree char *pending = od_db_query_text(
      c->db, "SELECT id FROM deliveries WHERE node = ?1 AND instance = ?2", node, instance, NULL);
  if (pending != NULL)
    return;
  gint64 *stamp = g_new(gint64, 1);
  *stamp = now;
  g_hash_table_replace(c->delete_sent, g_steal_pointer(&key), stamp);
  g_autofree char *job_name = g_strndup(instance, sep - instance);
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "job_name", job_name);
  json_object_set_int_member(o, "instance_number", n);
  g_autofree char *text = object_text(o);
  g_autofree char *topic = g_strdup_printf("nodes/%s/control/delete", node);
  od_log(G_LOG_LEVEL_MESSAGE, "reconcile", "node", node, "instance", instance, "msg",
         "node runs an instance not placed on it; deleting", NULL);
  od_mqtt_publish(c->mqtt, topic, text, strlen(text), FALSE, NULL, NULL, NULL);
}

static void on_information(Cluster *c, const char *node, const char *topic, GBytes *payload) {
  gsize len = 0;
  const char *data = g_bytes_get_data(payload, &len);
  oakuk_error *err = NULL;
  oakuk_node_report *rep = oakuk_node_report_from_json(data ? data : "", len, &err);
  if (rep == NULL) {
    g_autofree char *m = g_strdup(oakuk_error_message(err));
    oakuk_error_free(err);
    reject(c, node, topic, m);
    return;
  }
  if (strcmp(oakuk_node_report_id(rep), node) != 0) {
    g_autofree char *m =
        g_strdup_printf("id: report is for node '%s', not the topic's node", oakuk_node_report_id(rep));
    oakuk_node_report_unref(rep);
    reject(c, node, topic, m);
    return;
  }
  oakuk_node_report_set_received_at_ms(rep, cluster_now_ms());
  for (size_t i = 0; i < oakuk_node_report_instance_count(rep); i++) {
    const char *inst = oakuk_node_report_instance_name(rep, i);
    oakuk_reservations_remove(c->reservations, inst);
    reconcile_extra(c, node, inst);
  }
  g_autofree char *old_ip = od_db_query_text(c->db, "SELECT ip FROM nodes WHERE id = ?1", node, NULL);
  const char *ip = oakuk_node_report_ip(rep);
  if (g_strcmp0(old_ip, ip) != 0) {
    c->net_dirty = TRUE;
    od_db_run(c->db, NULL, "UPDATE nodes SET ip = ?2 WHERE id = ?1", node, ip, NULL);
  }
  char *json = oakuk_node_report_to_json(rep, FALSE, NULL);
  if (json != NULL)
    od_db_run(c->db, NULL, "UPDATE nodes SET report = ?2 WHERE id = ?1", node, json, NULL);
  od_oakuk_free(json);
  g_hash_table_replace(c->reports, g_strdup(node), rep);
  if (g_hash_table_add(c->reachable, g_strdup(node))) {
    od_log(G_LOG_LEVEL_INFO, "node", "node", node, "msg", "node is reachable", NULL);
    jobs_delivery_pump(c);
  }
}

/* A node's status event, validated: ready only ever with RUNNING, ready_ms -1 when unknown. */
typedef struct {
  int32_t code;
  const char *detail;
  gboolean ready;
  gint64 ready_ms;
} JobEvent;

static gboolean apply_status(Cluster *c, const char *node, const char *name, const JobEvent *ev,
                             GError **error) {
  g_autoptr(sqlite3_stmt) st = od_db_prepare(
      c->db,
      "SELECT job_id, instance, status, detail, restart, failures, ready, IFNULL(ready_ms, -1) FROM instances"
      " WHERE name = ?1",
      error);
  if (st == NULL)
    return FALSE;
  sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
  if (sqlite3_step(st) != SQLITE_ROW)
    return TRUE;
  int32_t code = ev->code;
  const char *detail = ev->detail;
  g_autofree char *job_id = g_strdup((const char *)sqlite3_column_text(st, 0));
  gint64 n = sqlite3_column_int64(st, 1);
  gboolean same =
      g_strcmp0((const char *)sqlite3_column_text(st, 2), oakuk_instance_status_name(code)) == 0 &&
      g_strcmp0((const char *)sqlite3_column_text(st, 3), detail) == 0 &&
      (sqlite3_column_int64(st, 6) != 0) == ev->ready && sqlite3_column_int64(st, 7) == ev->ready_ms;
  gint64 restart = sqlite3_column_int64(st, 4);
  gint64 failures = sqlite3_column_int64(st, 5);
  g_clear_pointer(&st, sqlite3_finalize);
  if (same)
    return TRUE;
  const char *status = oakuk_instance_status_name(code);
  if (code == OAKUK_STATUS_UNDEPLOYED) {
    /* The node dropped it on its own: the root takes the instance out of its list. */
    oakuk_reservations_remove(c->reservations, name);
    c->net_dirty = TRUE;
    return root_queue_status(c, job_id, n, status, detail, node, FALSE, -1, error) &&
           od_db_run(c->db, error, "DELETE FROM instances WHERE name = ?1", name, NULL);
  }
  if ((code == OAKUK_STATUS_FAILED || code == OAKUK_STATUS_DEAD) && restart != OAKUK_RESTART_NEVER &&
      failures >= 1) {
    /* The node already restarted it once and it failed again: another node gets it. */
    g_autofree char *reason = g_strdup_printf("%s again on node %s: %s", status, node, detail);
    return reschedule(c, name, reason, error);
  }
  g_autofree char *f = g_strdup_printf("%" G_GINT64_FORMAT,
                                       failures + (code == OAKUK_STATUS_FAILED || code == OAKUK_STATUS_DEAD));
  g_autofree char *ms = ev->ready_ms >= 0 ? g_strdup_printf("%" G_GINT64_FORMAT, ev->ready_ms) : g_strdup("");
  /* A RUNNING event can come before the node's next report counts the instance: the reservation
   * stays until a report lists it (on_information); only an end of the instance frees it here. */
  if (code == OAKUK_STATUS_FAILED || code == OAKUK_STATUS_DEAD || code == OAKUK_STATUS_COMPLETED)
    oakuk_reservations_remove(c->reservations, name);
  c->net_dirty = TRUE;
  return od_db_run(c->db, error,
                   "UPDATE instances SET status = ?2, detail = ?3, failures = CAST(?4 AS INTEGER),"
                   " ready = CAST(?5 AS INTEGER), ready_ms = CAST(NULLIF(?6, '') AS INTEGER) WHERE name = ?1",
                   name, status, detail, f, ev->ready ? "1" : "0", ms, NULL) &&
         root_queue_status(c, job_id, n, status, detail, node, ev->ready, ev->ready_ms, error);
}

static gboolean holds(JsonNode *n, GType type) {
  return n != NULL && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == type;
}

/* Validates a nodes/<id>/job payload into ev; returns the problem ("field: why") or NULL. A
 * missing (or null) ready means false (nodes older than readiness send none); ready with a status
 * other than RUNNING is taken as false. */
static const char *parse_job_event(JsonObject *o, JobEvent *ev) {
  if (o == NULL)
    return "expected a JSON object";
  if (str_member(o, "job_name") == NULL)
    return "job_name: missing or not a string";
  JsonNode *in = json_object_get_member(o, "instance");
  if (!holds(in, G_TYPE_INT64) || json_node_get_int(in) < 0)
    return "instance: missing or not a non-negative integer";
  const char *status = str_member(o, "status");
  if (status == NULL)
    return "status: missing or not a string";
  ev->code = oakuk_instance_status_from_name(status);
  if (ev->code < 0)
    return "status: not an instance status name";
  JsonNode *dn = json_object_get_member(o, "status_detail");
  if (dn != NULL && !JSON_NODE_HOLDS_NULL(dn) && !holds(dn, G_TYPE_STRING))
    return "status_detail: not a string";
  ev->detail = str_member(o, "status_detail") ? str_member(o, "status_detail") : "";
  JsonNode *rn = json_object_get_member(o, "ready");
  if (rn != NULL && !JSON_NODE_HOLDS_NULL(rn) && !holds(rn, G_TYPE_BOOLEAN))
    return "ready: not a boolean";
  JsonNode *mn = json_object_get_member(o, "ready_ms");
  if (mn != NULL && !JSON_NODE_HOLDS_NULL(mn) && (!holds(mn, G_TYPE_INT64) || json_node_get_int(mn) < 0))
    return "ready_ms: not a non-negative integer";
  ev->ready = holds(rn, G_TYPE_BOOLEAN) && json_node_get_boolean(rn) && ev->code == OAKUK_STATUS_RUNNING;
  ev->ready_ms = ev->ready && holds(mn, G_TYPE_INT64) ? json_node_get_int(mn) : -1;
  return NULL;
}

static void on_job_event(Cluster *c, const char *node, const char *topic, GBytes *payload) {
  gsize len = 0;
  const char *data = g_bytes_get_data(payload, &len);
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) root = od_json_parse(data ? data : "", (gssize)len, &error);
  if (root == NULL) {
    reject(c, node, topic, error->message);
    return;
  }
  JsonObject *o = JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  JobEvent ev = {0};
  const char *problem = parse_job_event(o, &ev);
  if (problem != NULL) {
    reject(c, node, topic, problem);
    return;
  }
  char *iname = oakuk_instance_name(str_member(o, "job_name"), json_object_get_int_member(o, "instance"));
  g_autofree char *name = g_strdup(iname);
  od_oakuk_free(iname);
  g_autofree char *placed = od_db_query_text(c->db, "SELECT node FROM instances WHERE name = ?1", name, NULL);
  if (g_strcmp0(placed, node) != 0) {
    od_log(G_LOG_LEVEL_INFO, "status", "node", node, "instance", name, "msg",
           "status event for an instance not placed on this node; ignored", NULL);
    return;
  }
  if (!cluster_begin(c, &error) || !apply_status(c, node, name, &ev, &error) || !cluster_commit(c, &error)) {
    cluster_rollback(c);
    od_log(G_LOG_LEVEL_WARNING, "status", "node", node, "instance", name, "msg", error->message, NULL);
    return;
  }
  jobs_delivery_pump(c);
}

static void on_message(const char *topic, GBytes *payload, gpointer data) {
  Cluster *c = data;
  g_auto(GStrv) parts = g_strsplit(topic, "/", 0);
  if (g_strv_length(parts) != 3 || strcmp(parts[0], "nodes") != 0) {
    reject(c, "?", topic, "unexpected topic");
    return;
  }
  const char *node = parts[1];
  g_autofree char *known = od_db_query_text(c->db, "SELECT id FROM nodes WHERE id = ?1", node, NULL);
  if (known == NULL) {
    reject(c, node, topic, "node is not registered");
    return;
  }
  if (strcmp(parts[2], "information") == 0) {
    on_information(c, node, topic, payload);
  } else if (strcmp(parts[2], "job") == 0) {
    on_job_event(c, node, topic, payload);
  } else if (strcmp(parts[2], "logs") == 0) {
    cluster_logs_on_reply(c, node, topic, payload);
  } else if (strcmp(parts[2], "lwt") == 0) {
    g_hash_table_remove(c->reachable, node);
    od_log(G_LOG_LEVEL_WARNING, "node", "node", node, "msg",
           "node lost its broker connection (last will); rescheduled if silent for node_timeout", NULL);
  }
}

/* Back on the broker after down_since: a node that was alive when the connection went gets a full
 * node_timeout from now to report again; one that was already silent stays as silent as it was. */
static void resume_liveness(Cluster *c, gint64 down_since) {
  gint64 now = cluster_now_ms();
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, c->reports);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    gint64 at = oakuk_node_report_received_at_ms(v);
    oakuk_node_report_set_received_at_ms(v, down_since - at <= c->node_timeout_ms ? now
                                                                                  : at + (now - down_since));
  }
}

static void on_state(gboolean connected, const char *reason, gpointer data) {
  Cluster *c = data;
  if (connected && !c->mqtt_up)
    resume_liveness(c, c->mqtt_down_since_ms);
  else if (!connected && c->mqtt_up)
    c->mqtt_down_since_ms = cluster_now_ms();
  c->mqtt_up = connected;
  if (connected) {
    /* Nodes count as reachable again only once they report on this connection. */
    g_hash_table_remove_all(c->reachable);
    g_hash_table_remove_all(c->inflight);
    c->net_dirty = TRUE;
    od_log(G_LOG_LEVEL_MESSAGE, "mqtt", "msg", "connected to the broker", NULL);
  } else {
    od_log(G_LOG_LEVEL_WARNING, "mqtt", "msg", "broker connection lost; reconnecting", "reason", reason,
           NULL);
  }
}

void jobs_mqtt_start(Cluster *c) {
  const char *subs[] = {"nodes/+/information", "nodes/+/job", "nodes/+/lwt", "nodes/+/logs", NULL};
  g_autofree char *client_id = g_strdup_printf("oakuk-cluster-%s", c->name);
  OdMqttOptions o = {.host = c->broker_host,
                     .port = c->mqtt_port,
                     .client_id = client_id,
                     .username = c->mqtt_username,
                     .password = c->mqtt_password,
                     .subscriptions = subs};
  g_autoptr(GError) error = NULL;
  c->mqtt = od_mqtt_new(&o, on_message, on_state, c, &error);
  if (c->mqtt == NULL) {
    od_log(G_LOG_LEVEL_WARNING, "mqtt", "msg", error->message, NULL);
    return;
  }
  od_mqtt_start(c->mqtt);
}

/* ---- network tables ---- */

static JsonArray *peers_table(Cluster *c) {
  JsonArray *a = json_array_new();
  g_autoptr(sqlite3_stmt) st = od_db_prepare(c->db, "SELECT id, ip, subnet FROM nodes ORDER BY id", NULL);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "id", (const char *)sqlite3_column_text(st, 0));
    json_object_set_string_member(o, "ip", (const char *)sqlite3_column_text(st, 1));
    json_object_set_string_member(o, "subnet", (const char *)sqlite3_column_text(st, 2));
    json_array_add_object_element(a, o);
  }
  return a;
}

static JsonArray *services_table(Cluster *c) {
  JsonArray *a = json_array_new();
  g_autoptr(sqlite3_stmt) st =
      od_db_prepare(c->db,
                    "SELECT i.job_name, json_extract(i.job, '$.addresses.rr_ip'), json_extract(i.job, "
                    "'$.port'), i.instance,"
                    " i.ip, i.node, n.ip, n.subnet FROM instances i JOIN nodes n ON n.id = i.node"
                    " WHERE i.status = 'RUNNING' AND json_extract(i.job, '$.addresses.rr_ip') IS NOT NULL"
                    " ORDER BY i.job_name, i.instance",
                    NULL);
  JsonObject *cur = NULL;
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
    const char *job = (const char *)sqlite3_column_text(st, 0);
    if (cur == NULL || g_strcmp0(str_member(cur, "job_name"), job) != 0) {
      cur = json_object_new();
      json_object_set_string_member(cur, "job_name", job);
      json_object_set_string_member(cur, "rr_ip", (const char *)sqlite3_column_text(st, 1));
      if (sqlite3_column_type(st, 2) == SQLITE_TEXT)
        json_object_set_string_member(cur, "port", (const char *)sqlite3_column_text(st, 2));
      json_object_set_array_member(cur, "instances", json_array_new());
      json_array_add_object_element(a, cur);
    }
    JsonObject *i = json_object_new();
    json_object_set_int_member(i, "instance", sqlite3_column_int64(st, 3));
    json_object_set_string_member(i, "ip", (const char *)sqlite3_column_text(st, 4));
    json_object_set_string_member(i, "node", (const char *)sqlite3_column_text(st, 5));
    json_object_set_string_member(i, "node_ip", (const char *)sqlite3_column_text(st, 6));
    json_object_set_string_member(i, "node_subnet", (const char *)sqlite3_column_text(st, 7));
    json_array_add_object_element(json_object_get_array_member(cur, "instances"), i);
  }
  return a;
}

/* Both tables go to every registered node, retained, so a node (re)connecting gets the latest. */
static void publish_net(Cluster *c) {
  if (!c->net_dirty || c->mqtt == NULL || !c->mqtt_up)
    return;
  g_autoptr(JsonNode) peers = json_node_init_array(json_node_alloc(), peers_table(c));
  g_autoptr(JsonNode) services = json_node_init_array(json_node_alloc(), services_table(c));
  g_autofree char *pt = od_json_to_string(peers, FALSE);
  g_autofree char *stext = od_json_to_string(services, FALSE);
  g_autoptr(sqlite3_stmt) st = od_db_prepare(c->db, "SELECT id FROM nodes", NULL);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
    const char *node = (const char *)sqlite3_column_text(st, 0);
    g_autofree char *t1 = g_strdup_printf("nodes/%s/net/peers", node);
    g_autofree char *t2 = g_strdup_printf("nodes/%s/net/services", node);
    if (!od_mqtt_publish(c->mqtt, t1, pt, strlen(pt), TRUE, NULL, NULL, NULL) ||
        !od_mqtt_publish(c->mqtt, t2, stext, strlen(stext), TRUE, NULL, NULL, NULL))
      return;
  }
  c->net_dirty = FALSE;
}

/* ---- periodic work ---- */

/* Instances on nodes that stopped reporting move elsewhere (or fail, with restart "never"). */
static void check_silent_nodes(Cluster *c) {
  if (!c->mqtt_up)
    return; /* nobody can report through a broker the cluster cannot reach either */
  gint64 now = cluster_liveness_now_ms(c);
  g_autoptr(sqlite3_stmt) st = od_db_prepare(
      c->db, "SELECT name, node, status, restart, job_id, instance FROM instances WHERE node != ''", NULL);
  g_autoptr(GPtrArray) moves = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GPtrArray) fails = g_ptr_array_new_with_free_func(g_free);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
    const char *node = (const char *)sqlite3_column_text(st, 1);
    oakuk_node_report *rep = g_hash_table_lookup(c->reports, node);
    if (!status_active((const char *)sqlite3_column_text(st, 2)) ||
        (rep != NULL && now - oakuk_node_report_received_at_ms(rep) <= c->node_timeout_ms))
      continue;
    g_ptr_array_add(sqlite3_column_int64(st, 3) == OAKUK_RESTART_NEVER ? fails : moves,
                    g_strdup((const char *)sqlite3_column_text(st, 0)));
  }
  g_clear_pointer(&st, sqlite3_finalize);
  if (moves->len == 0 && fails->len == 0)
    return;
  g_autoptr(GError) error = NULL;
  if (!cluster_begin(c, &error))
    goto fail;
  for (guint i = 0; i < moves->len; i++) {
    g_autofree char *node =
        od_db_query_text(c->db, "SELECT node FROM instances WHERE name = ?1", (char *)moves->pdata[i], NULL);
    g_autofree char *reason = g_strdup_printf("node %s sent no report for more than %" G_GINT64_FORMAT " s",
                                              node, c->node_timeout_ms / 1000);
    if (!reschedule(c, moves->pdata[i], reason, &error))
      goto fail;
  }
  for (guint i = 0; i < fails->len; i++) {
    const char *name = fails->pdata[i];
    g_autofree char *node = od_db_query_text(c->db, "SELECT node FROM instances WHERE name = ?1", name, NULL);
    g_autofree char *job_id =
        od_db_query_text(c->db, "SELECT job_id FROM instances WHERE name = ?1", name, NULL);
    g_autofree char *ns =
        od_db_query_text(c->db, "SELECT instance FROM instances WHERE name = ?1", name, NULL);
    g_autofree char *detail = g_strdup_printf("node %s sent no report for more than %" G_GINT64_FORMAT
                                              " s; restart policy is never",
                                              node, c->node_timeout_ms / 1000);
    od_log(G_LOG_LEVEL_MESSAGE, "node-lost", "instance", name, "node", node, "msg", detail, NULL);
    if (!od_db_run(
            c->db, &error,
            "UPDATE instances SET status = 'FAILED', detail = ?2, node = '', ready = 0, ready_ms = NULL"
            " WHERE name = ?1",
            name, detail, NULL) ||
        !root_queue_status(c, job_id, g_ascii_strtoll(ns, NULL, 10), "FAILED", detail, node, FALSE, -1,
                           &error))
      goto fail;
  }
  if (cluster_commit(c, &error))
    return;
fail:
  cluster_rollback(c);
  od_log(G_LOG_LEVEL_WARNING, "reschedule", "msg", error ? error->message : "database error", NULL);
}

gboolean jobs_tick(gpointer data) {
  Cluster *c = data;
  check_silent_nodes(c);
  publish_net(c);
  jobs_delivery_pump(c);
  root_status_pump(c);
  return G_SOURCE_CONTINUE;
}

/* After a restart: the last reports (each node gets one full node_timeout from now) and the
 * reservations of instances still on their way to RUNNING. */
void jobs_load(Cluster *c) {
  gint64 now = cluster_now_ms();
  c->mqtt_down_since_ms = now; /* not connected yet: liveness waits for the broker */
  g_autoptr(sqlite3_stmt) st =
      od_db_prepare(c->db, "SELECT id, report FROM nodes WHERE report IS NOT NULL", NULL);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
    oakuk_node_report *rep =
        oakuk_node_report_from_json((const char *)sqlite3_column_text(st, 1), (size_t)-1, NULL);
    if (rep == NULL)
      continue;
    oakuk_node_report_set_received_at_ms(rep, now);
    g_hash_table_replace(c->reports, g_strdup((const char *)sqlite3_column_text(st, 0)), rep);
  }
  g_autoptr(sqlite3_stmt) is = od_db_prepare(
      c->db,
      "SELECT name, node, json_extract(job, '$.vcpus'), json_extract(job, '$.memory') FROM instances"
      " WHERE status IN ('NODE_SCHEDULED', 'CREATING') AND node != ''",
      NULL);
  while (is != NULL && sqlite3_step(is) == SQLITE_ROW)
    oakuk_reservations_add(c->reservations, (const char *)sqlite3_column_text(is, 0),
                           (const char *)sqlite3_column_text(is, 1), sqlite3_column_int64(is, 2),
                           sqlite3_column_int64(is, 3));
  c->net_dirty = TRUE;
}

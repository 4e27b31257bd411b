/* The cluster's side of root <-> cluster: registration (retried with backoff, repeated when the
 * root stops accepting our token), the aggregate every aggregate_interval, and status reports
 * stored in an outbox and sent in batches. */
#include "cluster.h"

#include <string.h>

typedef enum { CALL_REGISTER, CALL_AGGREGATE, CALL_STATUS } CallKind;

typedef struct {
  Cluster *c;
  CallKind kind;
  SoupMessage *msg;
  gint64 last_id; /* CALL_STATUS: highest outbox id sent */
} Call;

static char *root_endpoint(Cluster *c, const char *path) {
  g_autofree char *base = g_strdup(c->root_url);
  while (g_str_has_suffix(base, "/"))
    base[strlen(base) - 1] = '\0';
  return g_strconcat(base, path, NULL);
}

static void schedule_register(Cluster *c);

static void forget_token(Cluster *c) {
  od_log(G_LOG_LEVEL_WARNING, "root", "msg", "root refused our token (401); registering again", NULL);
  g_clear_pointer(&c->token, g_free);
  schedule_register(c);
}

static void call_free(Call *call) {
  g_clear_object(&call->msg);
  g_free(call);
}

static gboolean store_registration(Cluster *c, JsonObject *o, GError **error) {
  const char *keys[] = {"id", "token", "subnet"};
  for (gsize i = 0; i < G_N_ELEMENTS(keys); i++) {
    JsonNode *n = json_object_get_member(o, keys[i]);
    if (n == NULL || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "registration answer: '%s' missing or not a string",
                  keys[i]);
      return FALSE;
    }
  }
  const char *id = json_object_get_string_member(o, "id");
  const char *token = json_object_get_string_member(o, "token");
  const char *subnet = json_object_get_string_member(o, "subnet");
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
  od_log(G_LOG_LEVEL_MESSAGE, "root", "cluster", id, "subnet", subnet, "msg", "registered with the root",
         NULL);
  return TRUE;
}

static void register_done(Cluster *c, guint status, GBytes *body, const char *why) {
  c->registering = FALSE;
  g_autoptr(GError) error = NULL;
  if (SOUP_STATUS_IS_SUCCESSFUL(status) && body != NULL) {
    gsize len = 0;
    const char *data = g_bytes_get_data(body, &len);
    g_autoptr(JsonNode) node = od_json_parse(data, (gssize)len, &error);
    if (node != NULL && JSON_NODE_HOLDS_OBJECT(node) &&
        store_registration(c, json_node_get_object(node), &error)) {
      c->register_backoff_s = 0;
      root_status_pump(c);
      return;
    }
  }
  g_autofree char *st = g_strdup_printf("%u", status);
  od_log(G_LOG_LEVEL_WARNING, "root", "status", st, "msg", "registration failed; retrying", "reason",
         error ? error->message : why, NULL);
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
  case CALL_REGISTER: register_done(c, status, body, why); break;
  case CALL_AGGREGATE:
    c->aggregate_inflight = FALSE;
    if (status == SOUP_STATUS_UNAUTHORIZED)
      forget_token(c);
    else if (!SOUP_STATUS_IS_SUCCESSFUL(status))
      od_log(G_LOG_LEVEL_WARNING, "root", "msg", "aggregate not accepted", "reason", why, NULL);
    break;
  case CALL_STATUS:
    c->status_inflight = FALSE;
    if (SOUP_STATUS_IS_SUCCESSFUL(status)) {
      store_outbox_drop_upto(c->store, call->last_id);
      root_status_pump(c); /* what was queued while this batch was in flight */
    } else if (status == SOUP_STATUS_UNAUTHORIZED) {
      forget_token(c);
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

static void send_call(Cluster *c, CallKind kind, const char *path, const char *bearer, const char *body,
                      gint64 last_id) {
  g_autofree char *url = root_endpoint(c, path);
  Call *call = g_new0(Call, 1);
  call->c = c;
  call->kind = kind;
  call->last_id = last_id;
  call->msg = soup_message_new("POST", url);
  if (call->msg == NULL) {
    od_log(G_LOG_LEVEL_WARNING, "root", "url", url, "msg", "root URL is not a valid http(s) URL", NULL);
    g_free(call);
    if (kind == CALL_REGISTER) {
      c->registering = FALSE;
      schedule_register(c);
    }
    return;
  }
  if (bearer != NULL) {
    g_autofree char *auth = g_strconcat("Bearer ", bearer, NULL);
    soup_message_headers_replace(soup_message_get_request_headers(call->msg), "Authorization", auth);
  }
  g_autoptr(GBytes) b = g_bytes_new(body, strlen(body));
  soup_message_set_request_body_from_bytes(call->msg, "application/json", b);
  switch (kind) {
  case CALL_REGISTER: c->registering = TRUE; break;
  case CALL_AGGREGATE: c->aggregate_inflight = TRUE; break;
  case CALL_STATUS: c->status_inflight = TRUE; break;
  }
  soup_session_send_and_read_async(c->session, call->msg, G_PRIORITY_DEFAULT, NULL, call_done, call);
}

static gboolean do_register(gpointer data) {
  Cluster *c = data;
  c->register_source = 0;
  if (c->registering || c->token != NULL)
    return G_SOURCE_REMOVE;
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "name", c->name);
  json_object_set_string_member(o, "location", c->location ? c->location : "");
  json_object_set_string_member(o, "url", c->advertise_url);
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), o);
  g_autofree char *body = od_json_to_string(node, FALSE);
  if (c->join_token == NULL) {
    od_log(G_LOG_LEVEL_WARNING, "root", "msg", "not registered and no --join-token given; cannot register",
           NULL);
    return G_SOURCE_REMOVE;
  }
  send_call(c, CALL_REGISTER, "/api/v1/clusters/register", c->join_token, body, 0);
  return G_SOURCE_REMOVE;
}

static void schedule_register(Cluster *c) {
  if (c->register_source != 0 || c->registering || c->stopping)
    return;
  c->register_backoff_s = c->register_backoff_s == 0 ? 1 : MIN(c->register_backoff_s * 2, 60);
  c->register_source = g_timeout_add_seconds((guint)c->register_backoff_s, do_register, c);
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
  send_call(c, CALL_AGGREGATE, path, c->token, body, 0);
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
  send_call(c, CALL_STATUS, path, c->token, body, last);
}

void root_link_start(Cluster *c) {
  if (c->token == NULL)
    g_idle_add(do_register, c);
  c->aggregate_source = g_timeout_add((guint)c->aggregate_interval_ms, send_aggregate, c);
}

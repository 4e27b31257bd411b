/* The nodes' MQTT topics (docs/architecture.md §8.4, docs/cluster.md, docs/reconcile.md): reports and status
 * events in, validated where they enter and handed to the loop as typed values; deploys and
 * deletes out (stored deliveries, published once a node can take them), and the retained service
 * and peer tables. Nothing here decides. */
#include "loop.h"

#include <string.h>

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

static gboolean holds(JsonNode *n, GType type) {
  return n != NULL && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == type;
}

static JsonObject *parse_object(const char *text) {
  g_autoptr(JsonNode) node = text ? od_json_parse(text, -1, NULL) : NULL;
  return node != NULL && JSON_NODE_HOLDS_OBJECT(node) ? json_object_ref(json_node_get_object(node)) : NULL;
}

static char *object_text(JsonObject *o) {
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), o);
  return od_json_to_string(node, FALSE);
}

static void reject(Cluster *c, const char *node, const char *topic, const char *problem) {
  c->mqtt_rejected++;
  od_log(G_LOG_LEVEL_WARNING, "mqtt-reject", "node", node, "topic", topic, "msg", problem, NULL);
}

/* ---- payloads to nodes ---- */

/* The job restricted to the variant chosen for the node (the node runs what "placement" says; the
 * job's own virtualization/code/arch then say the same), with the instance's address, its node's
 * /24 and the node generation. */
char *nodelink_deploy_payload(const StoreInstance *i, const char *node_subnet) {
  g_autoptr(JsonObject) job = parse_object(i->job);
  g_autoptr(JsonObject) pl = parse_object(i->placement);
  if (job == NULL)
    job = json_object_new();
  if (pl == NULL)
    pl = json_object_new();
  const char *virt = str_member(pl, "virtualization");
  const char *arch = str_member(pl, "arch");
  const char *code = str_member(pl, "code");
  const char *sha = str_member(pl, "code_sha256");
  if (virt != NULL)
    json_object_set_string_member(job, "virtualization", virt);
  if (code != NULL && *code != '\0')
    json_object_set_string_member(job, "code", code);
  json_object_remove_member(job, "code_sha256");
  if (sha != NULL)
    json_object_set_string_member(job, "code_sha256", sha);
  JsonNode *archs = json_object_get_member(job, "arch");
  gboolean listed =
      archs != NULL && JSON_NODE_HOLDS_ARRAY(archs) && json_array_get_length(json_node_get_array(archs));
  if (arch != NULL && (g_strcmp0(virt, "unikernel") == 0 || listed)) {
    JsonArray *one = json_array_new();
    json_array_add_string_element(one, arch);
    json_object_set_array_member(job, "arch", one);
  }
  json_object_set_object_member(job, "placement", json_object_ref(pl));
  json_object_set_int_member(job, "instance_number", i->number);
  json_object_set_string_member(job, "instance_name", i->name);
  json_object_set_string_member(job, "instance_ip", i->ip);
  json_object_set_string_member(job, "node_subnet", node_subnet ? node_subnet : "");
  json_object_set_int_member(job, "generation", i->node_generation);
  return object_text(job);
}

char *nodelink_delete_payload(const char *job_name, gint64 number, gint64 generation) {
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "job_name", job_name);
  json_object_set_int_member(o, "instance_number", number);
  json_object_set_int_member(o, "generation", generation);
  return object_text(o);
}

char *nodelink_delete_payload_for(const char *instance_name, gint64 generation) {
  const char *sep = g_strrstr(instance_name, ".instance.");
  gint64 n = 0;
  if (sep == NULL || sep == instance_name || !g_ascii_string_to_signed(sep + 10, 10, 0, G_MAXINT64, &n, NULL))
    return NULL;
  g_autofree char *job_name = g_strndup(instance_name, sep - instance_name);
  return nodelink_delete_payload(job_name, n, generation);
}

/* ---- deliveries ---- */

static void delivery_done(gboolean ok, const char *reason, gpointer data) {
  DeliveryCtx *d = data;
  Cluster *c = d->c;
  g_autofree char *id = g_strdup_printf("%" G_GINT64_FORMAT, d->id);
  g_hash_table_remove(c->inflight, id);
  if (ok)
    store_delivery_done(c->store, d->id);
  else
    od_log(G_LOG_LEVEL_WARNING, "delivery", "id", id, "msg", "not acknowledged; will retry", "reason", reason,
           NULL);
  g_free(d);
}

/* A node takes control messages once it reported on our current broker connection (it is then
 * connected and subscribed) and while it is not silent: a silent node's deliveries (a pending
 * delete of a copy moved away) wait until it reports again and the loop has seen that report. */
void nodelink_pump(Cluster *c) {
  if (c->mqtt == NULL || !c->mqtt_up)
    return;
  g_autoptr(GPtrArray) list = store_delivery_list(c->store);
  g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  for (guint k = 0; k < list->len; k++) {
    StoreDelivery *d = list->pdata[k];
    g_autofree char *key = g_strdup_printf("%s/%s", d->node, d->instance);
    g_autofree char *ids = g_strdup_printf("%" G_GINT64_FORMAT, d->id);
    if (!g_hash_table_add(seen, g_strdup(key)) || g_hash_table_contains(c->inflight, ids) ||
        !g_hash_table_contains(c->reachable, d->node) || !cluster_node_active(c, d->node))
      continue;
    DeliveryCtx *ctx = g_new0(DeliveryCtx, 1);
    ctx->c = c;
    ctx->id = d->id;
    g_autoptr(GError) error = NULL;
    if (!od_mqtt_publish(c->mqtt, d->topic, d->payload, strlen(d->payload), FALSE, delivery_done, ctx,
                         &error)) {
      g_free(ctx);
      od_log(G_LOG_LEVEL_DEBUG, "delivery", "topic", d->topic, "msg", error->message, NULL);
      return;
    }
    g_hash_table_insert(c->inflight, g_steal_pointer(&ids), ctx);
    od_log(G_LOG_LEVEL_INFO, "delivery", "topic", d->topic, "node", d->node, "msg", "published", NULL);
  }
}

/* ---- network tables ---- */

/* The shortest time between two publications of the tables (changes in between are coalesced). */
#define NET_MIN_INTERVAL_MS 250
/* A publication goes out node by node while the MQTT client holds less than this, unwritten: the
 * tables of all nodes queued at once (N nodes x an N-entry peer table) took the cluster to 477 MB
 * at 1,000 nodes (bench/scale). */
#define NET_QUEUE_MAX (1024 * 1024)
/* How soon a paced publication looks again at the queue. */
#define NET_PACE_MS 5

static gboolean net_timer_done(gpointer data) {
  Cluster *c = data;
  c->net_timer = 0;
  nodelink_publish_net(c);
  return G_SOURCE_REMOVE;
}

static void net_round_clear(Cluster *c) {
  g_clear_pointer(&c->net_round_nodes, g_ptr_array_unref);
  c->net_round_next = 0;
  c->net_round_peers = c->net_round_services = FALSE;
}

/* Sends the current round's tables to its nodes from net_round_next on, while the client's queue
 * has room; TRUE when the round is done (or there is none), FALSE when it waits for room or failed
 * (then every table goes out again on the next pass). */
static gboolean net_round_continue(Cluster *c) {
  if (c->net_round_nodes == NULL)
    return TRUE;
  while (c->net_round_next < c->net_round_nodes->len) {
    if (od_mqtt_queued_bytes(c->mqtt) >= NET_QUEUE_MAX)
      return FALSE;
    const char *node = c->net_round_nodes->pdata[c->net_round_next];
    g_autofree char *t1 = g_strdup_printf("nodes/%s/net/peers", node);
    g_autofree char *t2 = g_strdup_printf("nodes/%s/net/services", node);
    const char *pt = c->net_peers_sent, *st = c->net_services_sent;
    if ((c->net_round_peers && !od_mqtt_publish(c->mqtt, t1, pt, strlen(pt), TRUE, NULL, NULL, NULL)) ||
        (c->net_round_services && !od_mqtt_publish(c->mqtt, t2, st, strlen(st), TRUE, NULL, NULL, NULL))) {
      net_round_clear(c);
      g_clear_pointer(&c->net_peers_sent, g_free);
      g_clear_pointer(&c->net_services_sent, g_free);
      c->net_dirty = TRUE; /* tried again, whole, on the next pass */
      return FALSE;
    }
    c->net_round_next++;
  }
  net_round_clear(c);
  return TRUE;
}

/* A new round when the tables differ from the last published ones: to every registered node, with
 * the tables that changed and those the round it replaces had still to send. */
static void net_round_start(Cluster *c, gint64 now) {
  g_autoptr(JsonNode) peers = json_node_new(JSON_NODE_ARRAY);
  g_autoptr(JsonNode) services = json_node_new(JSON_NODE_ARRAY);
  json_node_take_array(peers, store_peers_table(c->store));
  json_node_take_array(services, store_services_table(c->store));
  g_autofree char *pt = od_json_to_string(peers, FALSE);
  g_autofree char *stext = od_json_to_string(services, FALSE);
  gboolean new_peers = g_strcmp0(pt, c->net_peers_sent) != 0;
  gboolean new_services = g_strcmp0(stext, c->net_services_sent) != 0;
  c->net_dirty = FALSE;
  if (!new_peers && !new_services)
    return;
  gboolean peers_due = new_peers || (c->net_round_nodes != NULL && c->net_round_peers);
  gboolean services_due = new_services || (c->net_round_nodes != NULL && c->net_round_services);
  /* The nodes the replaced round had not reached yet come first. */
  g_autofree char *resume = c->net_round_nodes != NULL && c->net_round_next < c->net_round_nodes->len
                                ? g_strdup(c->net_round_nodes->pdata[c->net_round_next])
                                : NULL;
  net_round_clear(c);
  g_autoptr(GPtrArray) nodes = store_node_list(c->store);
  guint first = 0;
  for (guint k = 0; resume != NULL && k < nodes->len; k++)
    if (strcmp(((StoreNode *)nodes->pdata[k])->id, resume) == 0)
      first = k;
  c->net_round_nodes = g_ptr_array_new_full(nodes->len, g_free);
  for (guint k = 0; k < nodes->len; k++)
    g_ptr_array_add(c->net_round_nodes, g_strdup(((StoreNode *)nodes->pdata[(first + k) % nodes->len])->id));
  c->net_round_peers = peers_due;
  c->net_round_services = services_due;
  g_free(c->net_peers_sent);
  c->net_peers_sent = g_steal_pointer(&pt);
  g_free(c->net_services_sent);
  c->net_services_sent = g_steal_pointer(&stext);
  c->net_next_us = now + NET_MIN_INTERVAL_MS * 1000;
}

/* Both tables go to every registered node, retained, so a node (re)connecting gets the latest. A
 * table goes out only when its text differs from the last one published on this broker connection:
 * every placement and status change marks the tables dirty, and sending N nodes the N-entry peer
 * table each time grew the cluster to 1.3 GB and deploys to 12 s at 1,000 nodes (bench/scale).
 * A publication starts at most once per NET_MIN_INTERVAL_MS and goes out node by node, paced by
 * the MQTT client's queue (NET_QUEUE_MAX); a change meanwhile starts it again, for every node, with
 * the new tables. */
void nodelink_publish_net(Cluster *c) {
  g_clear_handle_id(&c->net_timer, g_source_remove);
  if (c->mqtt == NULL || !c->mqtt_up)
    return;
  gint64 now = g_get_monotonic_time();
  if (c->net_dirty && now >= c->net_next_us)
    net_round_start(c, now);
  guint delay = 0;
  if (!net_round_continue(c) && c->net_round_nodes != NULL)
    delay = NET_PACE_MS; /* waits for room in the queue */
  else if (c->net_dirty)
    delay = now < c->net_next_us ? (guint)((c->net_next_us - now) / 1000) + 1 : 1;
  if (delay > 0)
    c->net_timer = g_timeout_add(delay, net_timer_done, c);
}

void nodelink_forget(Cluster *c, const char *node) {
  g_hash_table_remove(c->rate, node);
  if (c->mqtt == NULL || !c->mqtt_up)
    return;
  const char *leaves[] = {"net/peers", "net/services"};
  for (gsize k = 0; k < G_N_ELEMENTS(leaves); k++) {
    g_autofree char *topic = g_strdup_printf("nodes/%s/%s", node, leaves[k]);
    od_mqtt_publish(c->mqtt, topic, "", 0, TRUE, NULL, NULL, NULL); /* an empty retained message clears it */
  }
}

/* ---- from nodes ---- */

static void on_information(Cluster *c, const char *node, const char *topic, GBytes *payload) {
  gsize len = 0;
  const char *data = g_bytes_get_data(payload, &len);
  oakuk_error *err = NULL;
  /* liboakuk validates every key, the instances' generation included ("instances[2].generation"). */
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
  loop_node_report(c, node, rep);
  /* what waited for the node to be reachable goes now; later deliveries go when they are made */
  if (g_hash_table_add(c->reachable, g_strdup(node))) {
    od_log(G_LOG_LEVEL_INFO, "node", "node", node, "msg", "node is reachable", NULL);
    nodelink_pump(c);
  }
}

/* A non-negative integer member, or absent (then absent_value); FALSE when present otherwise. */
static gboolean count_member(JsonObject *o, const char *key, gint64 absent_value, gint64 *out) {
  JsonNode *n = json_object_get_member(o, key);
  if (n == NULL) {
    *out = absent_value;
    return TRUE;
  }
  if (!holds(n, G_TYPE_INT64) || json_node_get_int(n) < 0)
    return FALSE;
  *out = json_node_get_int(n);
  return TRUE;
}

/* Validates a nodes/<id>/job payload into ev; returns the problem ("field: why") or NULL. A
 * missing (or null) ready means false (nodes older than readiness send none); ready with a status
 * other than RUNNING is taken as false. A missing generation (nodes older than generations) is 0. */
static const char *parse_job_event(JsonObject *o, LoopEvent *ev) {
  if (o == NULL)
    return "expected a JSON object";
  if ((ev->job_name = str_member(o, "job_name")) == NULL)
    return "job_name: missing or not a string";
  JsonNode *in = json_object_get_member(o, "instance");
  if (!holds(in, G_TYPE_INT64) || json_node_get_int(in) < 0)
    return "instance: missing or not a non-negative integer";
  ev->number = json_node_get_int(in);
  if (!count_member(o, "generation", 0, &ev->generation))
    return "generation: not a non-negative integer";
  const char *status = str_member(o, "status");
  if (status == NULL)
    return "status: missing or not a string";
  ev->status = oakuk_instance_status_from_name(status);
  if (ev->status < 0)
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
  /* docs/reconcile.md: a node restarting an instance itself (CrashLoopBackOff) says so with
   * "restarting": true, also when the status is FAILED or DEAD. */
  JsonNode *xn = json_object_get_member(o, "restarting");
  if (xn != NULL && !JSON_NODE_HOLDS_NULL(xn) && !holds(xn, G_TYPE_BOOLEAN))
    return "restarting: not a boolean";
  ev->restarting = holds(xn, G_TYPE_BOOLEAN) && json_node_get_boolean(xn);
  ev->ready = holds(rn, G_TYPE_BOOLEAN) && json_node_get_boolean(rn) && ev->status == OAKUK_STATUS_RUNNING;
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
  LoopEvent ev = {0};
  const char *problem =
      parse_job_event(JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL, &ev);
  if (problem != NULL) {
    reject(c, node, topic, problem);
    return;
  }
  loop_node_event(c, node, &ev);
  nodelink_pump(c);
}

/* A node may publish RATE_PER_S messages a second, RATE_BURST at once (a token bucket per node):
 * a node that floods the broker cannot make the cluster parse, store and decide on every message.
 * Only the node itself publishes under nodes/<id>/ (the ACL), so the topic names the sender. */
#define RATE_PER_S 20.0
#define RATE_BURST 100.0

typedef struct {
  double tokens;
  gint64 at_ms;
} RateBucket;

static gboolean within_rate(Cluster *c, const char *node) {
  gint64 now = cluster_now_ms();
  RateBucket *b = g_hash_table_lookup(c->rate, node);
  if (b == NULL) {
    b = g_new0(RateBucket, 1);
    b->tokens = RATE_BURST;
    b->at_ms = now;
    g_hash_table_insert(c->rate, g_strdup(node), b);
  }
  b->tokens = MIN(RATE_BURST, b->tokens + (double)(now - b->at_ms) * RATE_PER_S / 1000.0);
  b->at_ms = now;
  if (b->tokens < 1.0)
    return FALSE;
  b->tokens -= 1.0;
  return TRUE;
}

static void on_message(const char *topic, GBytes *payload, gpointer data) {
  Cluster *c = data;
  g_auto(GStrv) parts = g_strsplit(topic, "/", 0);
  if (g_strv_length(parts) != 3 || strcmp(parts[0], "nodes") != 0) {
    reject(c, "?", topic, "unexpected topic");
    return;
  }
  const char *node = parts[1];
  if (!within_rate(c, node)) {
    /* Logged once per 20 dropped messages: the log must not grow with the flood. */
    if (c->mqtt_rate_rejected++ % (guint64)RATE_PER_S == 0)
      od_log(G_LOG_LEVEL_WARNING, "mqtt-reject", "node", node, "topic", topic, "reason", "rate", "msg",
             "node publishes faster than 20 messages/s (burst 100); message dropped", NULL);
    return;
  }
  g_autoptr(StoreNode) known = store_node_get(c->store, node);
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
           "node lost its broker connection (last will); its instances stay until its reschedule_after_s",
           NULL);
  }
}

static void on_state(gboolean connected, const char *reason, gpointer data) {
  Cluster *c = data;
  if (connected) {
    /* Nodes count as reachable again only once they report on this connection. */
    g_hash_table_remove_all(c->reachable);
    g_hash_table_remove_all(c->inflight);
    c->net_dirty = TRUE;
    /* A new connection may be to a new broker, which has no retained tables: all go out again. */
    net_round_clear(c);
    g_clear_pointer(&c->net_peers_sent, g_free);
    g_clear_pointer(&c->net_services_sent, g_free);
    od_log(G_LOG_LEVEL_MESSAGE, "mqtt", "msg", "connected to the broker", NULL);
  } else {
    od_log(G_LOG_LEVEL_WARNING, "mqtt", "msg", "broker connection lost; reconnecting", "reason", reason,
           NULL);
  }
  loop_broker_state(c, connected);
}

void nodelink_start(Cluster *c) {
  const char *subs[] = {"nodes/+/information", "nodes/+/job", "nodes/+/lwt", "nodes/+/logs", NULL};
  g_autofree char *client_id = g_strdup_printf("oakuk-cluster-%s", c->name);
  g_autofree char *ca_file = c->insecure ? NULL : cluster_path(c, "pki", "ca.crt");
  OdMqttOptions o = {.ca_file = ca_file,
                     .host = c->broker_host,
                     .port = c->mqtt_port,
                     .client_id = client_id,
                     .username = c->mqtt_username,
                     .password = c->mqtt_password,
                     .subscriptions = subs,
                     .metrics_name = "oakuk_cluster_mqtt_message_duration_seconds"};
  g_autoptr(GError) error = NULL;
  c->mqtt = od_mqtt_new(&o, on_message, on_state, c, &error);
  if (c->mqtt == NULL) {
    od_log(G_LOG_LEVEL_WARNING, "mqtt", "msg", error->message, NULL);
    return;
  }
  od_mqtt_start(c->mqtt);
}

void nodelink_stop(Cluster *c) {
  g_clear_pointer(&c->mqtt, od_mqtt_free);
  /* No acknowledgement comes any more: what was in flight stays stored for the next start. */
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, c->inflight);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    g_free(v);
    g_hash_table_iter_remove(&it);
  }
}

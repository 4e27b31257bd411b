/* Instance logs for the root (`oakuk logs`): GET /api/v1/instances/<name>/logs asks the node over
 * MQTT (nodes/<id>/control/logs) and answers with the node's reply on nodes/<id>/logs, or 504
 * after LOGS_TIMEOUT_S. See docs/cli.md for the message formats. */
#include "cluster.h"

#include <string.h>

#define LOGS_TIMEOUT_S 5

typedef struct {
  Cluster *c;
  char *id;
  SoupServerMessage *msg;
  char *node;
  char *instance;
  guint timer;
} LogsWait;

static GHashTable *waits; /* request id -> LogsWait* */

static void wait_finish(LogsWait *w) {
  g_hash_table_steal(waits, w->id);
  if (w->timer != 0)
    g_source_remove(w->timer);
  soup_server_message_unpause(w->msg);
  g_object_unref(w->msg);
  g_free(w->id);
  g_free(w->node);
  g_free(w->instance);
  g_free(w);
}

static gboolean wait_timeout(gpointer data) {
  LogsWait *w = data;
  w->timer = 0;
  const char *path = g_uri_get_path(soup_server_message_get_uri(w->msg));
  od_http_reply_error(w->msg, SOUP_STATUS_GATEWAY_TIMEOUT, "timeout", path,
                      "node %s did not answer the logs request for %s within %d s", w->node, w->instance,
                      LOGS_TIMEOUT_S);
  wait_finish(w);
  return G_SOURCE_REMOVE;
}

void cluster_logs_request(Cluster *c, SoupServerMessage *msg, const char *node, const char *instance,
                          gint64 lines) {
  const char *path = g_uri_get_path(soup_server_message_get_uri(msg));
  if (c->mqtt == NULL || !c->mqtt_up || !g_hash_table_contains(c->reachable, node)) {
    od_http_reply_error(msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "not_ready", path,
                        "node %s of instance %s is not reachable over MQTT right now", node, instance);
    return;
  }
  if (waits == NULL)
    waits = g_hash_table_new(g_str_hash, g_str_equal);
  g_autofree char *id = od_random_hex(8);
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "instance", instance);
  json_object_set_int_member(o, "lines", lines);
  json_object_set_string_member(o, "request_id", id);
  g_autoptr(JsonNode) node_ = json_node_init_object(json_node_alloc(), o);
  g_autofree char *text = od_json_to_string(node_, FALSE);
  g_autofree char *topic = g_strdup_printf("nodes/%s/control/logs", node);
  g_autoptr(GError) error = NULL;
  if (!od_mqtt_publish(c->mqtt, topic, text, strlen(text), FALSE, NULL, NULL, &error)) {
    od_http_reply_error(msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "not_ready", path, "publish %s: %s", topic,
                        error->message);
    return;
  }
  LogsWait *w = g_new0(LogsWait, 1);
  w->c = c;
  w->id = g_steal_pointer(&id);
  w->msg = g_object_ref(msg);
  w->node = g_strdup(node);
  w->instance = g_strdup(instance);
  w->timer = g_timeout_add_seconds(LOGS_TIMEOUT_S, wait_timeout, w);
  g_hash_table_insert(waits, w->id, w);
  soup_server_message_pause(msg);
}

static void reject(Cluster *c, const char *node, const char *topic, const char *problem) {
  c->mqtt_rejected++;
  od_log(G_LOG_LEVEL_WARNING, "mqtt-reject", "node", node, "topic", topic, "msg", problem, NULL);
}

/* A "lines" member that is an array of strings. */
static gboolean lines_ok(JsonNode *n) {
  if (n == NULL || !JSON_NODE_HOLDS_ARRAY(n))
    return FALSE;
  JsonArray *a = json_node_get_array(n);
  for (guint i = 0; i < json_array_get_length(a); i++) {
    JsonNode *e = json_array_get_element(a, i);
    if (!JSON_NODE_HOLDS_VALUE(e) || json_node_get_value_type(e) != G_TYPE_STRING)
      return FALSE;
  }
  return TRUE;
}

void cluster_logs_on_reply(Cluster *c, const char *node, const char *topic, GBytes *payload) {
  gsize len = 0;
  const char *data = g_bytes_get_data(payload, &len);
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) root = od_json_parse(data ? data : "", (gssize)len, &error);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT(root)) {
    reject(c, node, topic, root == NULL ? error->message : "expected a JSON object");
    return;
  }
  JsonObject *o = json_node_get_object(root);
  JsonNode *rid = json_object_get_member(o, "request_id");
  JsonNode *err = json_object_get_member(o, "error");
  const char *id = rid && JSON_NODE_HOLDS_VALUE(rid) && json_node_get_value_type(rid) == G_TYPE_STRING
                       ? json_node_get_string(rid)
                       : NULL;
  gboolean has_error =
      err != NULL && JSON_NODE_HOLDS_VALUE(err) && json_node_get_value_type(err) == G_TYPE_STRING;
  if (id == NULL || (!has_error && !lines_ok(json_object_get_member(o, "lines")))) {
    reject(c, node, topic,
           id == NULL ? "request_id: missing or not a string" : "lines: missing or not a list of strings");
    return;
  }
  LogsWait *w = waits ? g_hash_table_lookup(waits, id) : NULL;
  if (w == NULL || strcmp(w->node, node) != 0) {
    od_log(G_LOG_LEVEL_INFO, "logs", "node", node, "request", id, "msg",
           "logs reply for no pending request; ignored", NULL);
    return;
  }
  const char *path = g_uri_get_path(soup_server_message_get_uri(w->msg));
  if (has_error) {
    od_http_reply_error(w->msg, SOUP_STATUS_NOT_FOUND, "not_found", path, "node %s: %s", node,
                        json_node_get_string(err));
  } else {
    g_autoptr(JsonObject) out = json_object_new();
    json_object_set_string_member(out, "instance", w->instance);
    json_object_set_string_member(out, "node", node);
    json_object_set_member(out, "lines", json_node_copy(json_object_get_member(o, "lines")));
    g_autoptr(JsonNode) n = json_node_init_object(json_node_alloc(), out);
    od_http_reply_json(w->msg, SOUP_STATUS_OK, n);
  }
  wait_finish(w);
}

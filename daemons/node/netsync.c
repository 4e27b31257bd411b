/* The cluster's network tables (retained on nodes/<id>/net/services and nodes/<id>/net/peers):
 * service IPs balanced over their instances, and the VXLAN peers (every other node). Each table is
 * validated whole before anything changes, applied as a difference to what we programmed, and
 * saved so a restarted node keeps the same entries through its startup reconcile. */
#include "node.h"

#include <arpa/inet.h>
#include <string.h>

static gboolean is_ipv4(const char *s) {
  struct in_addr a;
  return s != NULL && inet_pton(AF_INET, s, &a) == 1;
}

static const char *str_member(JsonObject *o, const char *key) {
  JsonNode *m = o ? json_object_get_member(o, key) : NULL;
  return m != NULL && JSON_NODE_HOLDS_VALUE(m) && json_node_get_value_type(m) == G_TYPE_STRING
             ? json_node_get_string(m)
             : NULL;
}

/* The port a service IP answers on: the guest port of the first "host:guest[/proto]" entry (a
 * bare "9080" is 9080:9080); 0 (any port) when the service maps none. */
static gboolean service_port(JsonNode *pn, guint32 *port) {
  *port = 0;
  if (pn == NULL || JSON_NODE_HOLDS_NULL(pn))
    return TRUE;
  if (JSON_NODE_HOLDS_VALUE(pn) && json_node_get_value_type(pn) == G_TYPE_INT64) {
    gint64 v = json_node_get_int(pn);
    *port = (guint32)v;
    return v >= 0 && v <= 65535;
  }
  if (!JSON_NODE_HOLDS_VALUE(pn) || json_node_get_value_type(pn) != G_TYPE_STRING)
    return FALSE;
  const char *text = json_node_get_string(pn);
  if (*text == '\0')
    return TRUE;
  g_auto(GStrv) entries = g_strsplit(text, ";", 2);
  g_auto(GStrv) proto = g_strsplit(entries[0], "/", 2);
  const char *colon = strrchr(proto[0], ':');
  guint64 v = 0;
  if (!g_ascii_string_to_unsigned(colon ? colon + 1 : proto[0], 10, 1, 65535, &v, NULL))
    return FALSE;
  *port = (guint32)v;
  return TRUE;
}

static void save_table(Node *n, const char *leaf, GBytes *payload) {
  g_autofree char *path = node_state_path(n, leaf);
  gsize len = 0;
  const char *data = g_bytes_get_data(payload, &len);
  g_autoptr(GError) error = NULL;
  if (!g_file_set_contents(path, data ? data : "", (gssize)len, &error))
    od_log(G_LOG_LEVEL_WARNING, "state", "file", path, "msg", error->message, NULL);
}

typedef struct {
  char *rr_ip;
  guint32 port;
  GPtrArray *backends;
} Service;

static void service_free(gpointer p) {
  Service *s = p;
  g_free(s->rr_ip);
  g_ptr_array_unref(s->backends);
  g_free(s);
}

/* Validates the services table; NULL (with *problem) when any entry is malformed. */
static GPtrArray *parse_services(JsonArray *a, char **problem) {
  g_autoptr(GPtrArray) out = g_ptr_array_new_with_free_func(service_free);
  for (guint k = 0; k < json_array_get_length(a); k++) {
    JsonNode *en = json_array_get_element(a, k);
    JsonObject *e = JSON_NODE_HOLDS_OBJECT(en) ? json_node_get_object(en) : NULL;
    const char *rr = str_member(e, "rr_ip");
    JsonNode *in = e ? json_object_get_member(e, "instances") : NULL;
    guint32 port = 0;
    if (e == NULL)
      *problem = g_strdup_printf("[%u]: expected an object", k);
    else if (!is_ipv4(rr))
      *problem = g_strdup_printf("[%u].rr_ip: missing or not an IPv4 address", k);
    else if (!service_port(e ? json_object_get_member(e, "port") : NULL, &port))
      *problem = g_strdup_printf("[%u].port: not a port mapping", k);
    else if (in == NULL || !JSON_NODE_HOLDS_ARRAY(in))
      *problem = g_strdup_printf("[%u].instances: missing or not an array", k);
    if (*problem != NULL)
      return NULL;
    Service *s = g_new0(Service, 1);
    s->rr_ip = g_strdup(rr);
    s->port = port;
    s->backends = g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(out, s);
    JsonArray *ia = json_node_get_array(in);
    for (guint j = 0; j < json_array_get_length(ia); j++) {
      JsonNode *bn = json_array_get_element(ia, j);
      const char *ip = JSON_NODE_HOLDS_OBJECT(bn) ? str_member(json_node_get_object(bn), "ip") : NULL;
      if (!is_ipv4(ip)) {
        *problem = g_strdup_printf("[%u].instances[%u].ip: missing or not an IPv4 address", k, j);
        return NULL;
      }
      g_ptr_array_add(s->backends, g_strdup(ip));
    }
  }
  return g_steal_pointer(&out);
}

void netsync_on_services(Node *n, const char *topic, GBytes *payload) {
  g_autoptr(JsonNode) a_node = node_parse_payload(topic, payload, JSON_NODE_ARRAY);
  JsonArray *a = a_node ? json_node_get_array(a_node) : NULL;
  if (a == NULL)
    return;
  g_autofree char *problem = NULL;
  g_autoptr(GPtrArray) services = parse_services(a, &problem);
  if (services == NULL) {
    node_reject(topic, problem);
    return;
  }
  g_autoptr(GHashTable) now = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  for (guint k = 0; k < services->len; k++) {
    Service *s = services->pdata[k];
    oakuk_error *err = NULL;
    if (oakuk_net_service_set(n->net, s->rr_ip, s->port, (const char *const *)s->backends->pdata,
                              s->backends->len, &err) != 0) {
      od_log(G_LOG_LEVEL_WARNING, "service", "rr_ip", s->rr_ip, "msg", oakuk_error_message(err), NULL);
      oakuk_error_free(err);
      continue;
    }
    g_hash_table_add(now, g_strdup(s->rr_ip));
  }
  GHashTableIter it;
  gpointer key;
  g_hash_table_iter_init(&it, n->services);
  while (g_hash_table_iter_next(&it, &key, NULL)) {
    if (g_hash_table_contains(now, key))
      continue;
    oakuk_error *err = NULL;
    if (oakuk_net_service_remove(n->net, key, &err) != 0 && oakuk_error_code(err) != OAKUK_ENOTFOUND)
      od_log(G_LOG_LEVEL_WARNING, "service", "rr_ip", (char *)key, "msg", oakuk_error_message(err), NULL);
    oakuk_error_free(err);
  }
  g_hash_table_remove_all(n->services);
  g_hash_table_iter_init(&it, now);
  while (g_hash_table_iter_next(&it, &key, NULL))
    g_hash_table_add(n->services, g_strdup(key));
  save_table(n, "net-services.json", payload);
  g_autofree char *count = g_strdup_printf("%u", g_hash_table_size(n->services));
  od_log(G_LOG_LEVEL_INFO, "services", "count", count, NULL);
}

void netsync_on_peers(Node *n, const char *topic, GBytes *payload) {
  g_autoptr(JsonNode) a_node = node_parse_payload(topic, payload, JSON_NODE_ARRAY);
  JsonArray *a = a_node ? json_node_get_array(a_node) : NULL;
  if (a == NULL)
    return;
  g_autoptr(GHashTable) want = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  for (guint k = 0; k < json_array_get_length(a); k++) {
    JsonNode *en = json_array_get_element(a, k);
    JsonObject *e = JSON_NODE_HOLDS_OBJECT(en) ? json_node_get_object(en) : NULL;
    const char *id = str_member(e, "id"), *ip = str_member(e, "ip"), *subnet = str_member(e, "subnet");
    g_autofree char *problem = NULL;
    if (e == NULL || id == NULL)
      problem = g_strdup_printf("[%u].id: missing or not a string", k);
    else if (ip == NULL || (*ip != '\0' && !is_ipv4(ip)))
      problem = g_strdup_printf("[%u].ip: missing or not an IPv4 address", k);
    else if (subnet == NULL || strchr(subnet, '/') == NULL)
      problem = g_strdup_printf("[%u].subnet: missing or not a CIDR", k);
    if (problem != NULL) {
      node_reject(topic, problem);
      return;
    }
    /* Ourselves, and nodes that have not told their address yet, get no tunnel. */
    if (g_strcmp0(id, n->id) == 0 || *ip == '\0' || g_strcmp0(ip, n->underlay_ip) == 0)
      continue;
    g_hash_table_replace(want, g_strdup(ip), g_strdup(subnet));
  }
  GHashTableIter it;
  gpointer key, value;
  g_hash_table_iter_init(&it, n->peers);
  while (g_hash_table_iter_next(&it, &key, &value)) {
    const char *w = g_hash_table_lookup(want, key);
    if (g_strcmp0(w, value) == 0)
      continue;
    oakuk_error *err = NULL;
    if (oakuk_net_peer_remove(n->net, key, value, &err) != 0)
      od_log(G_LOG_LEVEL_WARNING, "peer", "underlay", (char *)key, "msg", oakuk_error_message(err), NULL);
    oakuk_error_free(err);
    g_hash_table_iter_remove(&it);
  }
  g_hash_table_iter_init(&it, want);
  while (g_hash_table_iter_next(&it, &key, &value)) {
    if (g_hash_table_contains(n->peers, key))
      continue;
    oakuk_error *err = NULL;
    if (oakuk_net_peer_add(n->net, key, value, &err) != 0) {
      od_log(G_LOG_LEVEL_WARNING, "peer", "underlay", (char *)key, "subnet", (char *)value, "msg",
             oakuk_error_message(err), NULL);
      oakuk_error_free(err);
      continue;
    }
    g_hash_table_replace(n->peers, g_strdup(key), g_strdup(value));
    od_log(G_LOG_LEVEL_INFO, "peer", "underlay", (char *)key, "subnet", (char *)value, "msg", "peer added",
           NULL);
  }
  save_table(n, "net-peers.json", payload);
}

static JsonArray *saved(Node *n, const char *leaf) {
  g_autofree char *path = node_state_path(n, leaf);
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return NULL;
  g_autoptr(JsonNode) root = od_json_parse(text, -1, NULL);
  return root && JSON_NODE_HOLDS_ARRAY(root) ? json_array_ref(json_node_get_array(root)) : NULL;
}

GPtrArray *netsync_saved_services(Node *n) {
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(JsonArray) a = saved(n, "net-services.json");
  g_autofree char *problem = NULL;
  g_autoptr(GPtrArray) services = a ? parse_services(a, &problem) : NULL;
  for (guint k = 0; services && k < services->len; k++) {
    Service *s = services->pdata[k];
    g_ptr_array_add(out, g_strdup(s->rr_ip));
    g_hash_table_add(n->services, g_strdup(s->rr_ip));
  }
  return out;
}

GPtrArray *netsync_saved_peers(Node *n) {
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(JsonArray) a = saved(n, "net-peers.json");
  for (guint k = 0; a && k < json_array_get_length(a); k++) {
    JsonNode *en = json_array_get_element(a, k);
    JsonObject *e = JSON_NODE_HOLDS_OBJECT(en) ? json_node_get_object(en) : NULL;
    const char *ip = str_member(e, "ip"), *subnet = str_member(e, "subnet");
    if (is_ipv4(ip) && subnet && g_strcmp0(str_member(e, "id"), n->id) != 0 &&
        g_strcmp0(ip, n->underlay_ip) != 0) {
      g_ptr_array_add(out, g_strdup(ip));
      g_hash_table_replace(n->peers, g_strdup(ip), g_strdup(subnet));
    }
  }
  return out;
}

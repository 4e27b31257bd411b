/* The node's local HTTP endpoint: GET /healthz and GET /metrics, for a supervisor and a Prometheus
 * on the same host. Plain HTTP without authentication, so it only ever listens on a loopback
 * address (docs/node.md, "Local endpoint"); nothing here changes the node. */
#include "node.h"

#include <string.h>

/* Deploys take from a cached image's boot (a tenth of a second) to a large image's download
 * (minutes). */
static const double deploy_bounds[] = {0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
/* A phase can take a millisecond (a cached image, a network) or minutes (a download). */
static const double phase_bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                      1,     2.5,   5,    10,    30,   60,  300};

gboolean node_api_check_listen(const char *listen, GError **error) {
  g_autofree char *addr = NULL;
  guint16 port = 0;
  g_autoptr(GError) local = NULL;
  if (!od_parse_listen(listen, &addr, &port, &local)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "--listen: %s", local->message);
    return FALSE;
  }
  g_autoptr(GInetAddress) ia = g_inet_address_new_from_string(addr);
  if (!g_inet_address_get_is_loopback(ia)) {
    g_set_error(
        error, OD_ERROR, OD_ERROR_INVALID,
        "--listen %s: not a loopback address; the node's /healthz and /metrics are plain HTTP without "
        "authentication and are served on 127.0.0.0/8 or ::1 only (docs/security.md); scrape them "
        "from this host",
        listen);
    return FALSE;
  }
  return TRUE;
}

static guint count_instances(Node *n) {
  return n->insts ? g_hash_table_size(n->insts) : 0;
}

static void reply_healthz(Node *n, SoupServerMessage *msg) {
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "status", "ok");
  json_object_set_string_member(o, "version", OAKUK_NODE_VERSION);
  json_object_set_string_member(o, "node", n->id ? n->id : "");
  json_object_set_boolean_member(o, "registered", n->registered);
  json_object_set_boolean_member(o, "mqtt_connected", n->mqtt_up);
  json_object_set_int_member(o, "instances", count_instances(n));
  g_autoptr(JsonNode) root = json_node_init_object(json_node_alloc(), o);
  od_http_reply_json(msg, SOUP_STATUS_OK, root);
}

static void append_instances(Node *n, GString *out) {
  od_metrics_header(out, "oakuk_node_instances", "gauge", "Instances on this node, by their last status");
  g_autoptr(GHashTable) by_status = g_hash_table_new(g_str_hash, g_str_equal);
  if (n->insts != NULL) {
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, n->insts);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
      const char *name = oakuk_instance_status_name(((Inst *)v)->status);
      name = name ? name : "UNKNOWN";
      g_hash_table_replace(by_status, (gpointer)name,
                           GUINT_TO_POINTER(GPOINTER_TO_UINT(g_hash_table_lookup(by_status, name)) + 1));
    }
  }
  g_autoptr(GList) names = g_list_sort(g_hash_table_get_keys(by_status), (GCompareFunc)strcmp);
  for (GList *l = names; l != NULL; l = l->next)
    g_string_append_printf(out, "oakuk_node_instances{status=\"%s\"} %u\n", (const char *)l->data,
                           GPOINTER_TO_UINT(g_hash_table_lookup(by_status, l->data)));
}

static void reply_metrics(Node *n, SoupServerMessage *msg) {
  GString *out = g_string_new(NULL);
  od_metrics_build_info(out, "oakuk-node", OAKUK_NODE_VERSION);
  od_metrics_process(out);
  od_metrics_value(out, "oakuk_node_registered", "gauge", "1 once the cluster accepted this node",
                   n->registered);
  od_metrics_value(out, "oakuk_node_mqtt_connected", "gauge", "1 while connected to the cluster's broker",
                   n->mqtt_up);
  append_instances(n, out);
  static const char *const starts[] = {"boot", "boot_saved", "restored", "restore_failed", "pooled"};
  od_metrics_header(
      out, "oakuk_node_unikernel_starts_total", "counter",
      "unikernel instances ready, by how they started: booted; booted and saved as the snapshot of "
      "their service; restored from it; booted after a failed restore; restored by a pooled QEMU");
  for (size_t k = 0; k < G_N_ELEMENTS(starts); k++)
    g_string_append_printf(out, "oakuk_node_unikernel_starts_total{start=\"%s\"} %" G_GUINT64_FORMAT "\n",
                           starts[k], n->uk_starts[k]);
  int64_t pool_mb = 0;
  int32_t pooled = n->uk_rt ? oakuk_runtime_pool_count(n->uk_rt, &pool_mb) : 0;
  od_metrics_value(out, "oakuk_node_unikernel_pooled", "gauge",
                   "QEMUs started ahead for snapshot services (unikernel.warm_pool)", pooled);
  od_metrics_value(out, "oakuk_node_unikernel_pooled_memory_mb", "gauge",
                   "the guest memory pooled QEMUs hold ready, counted as used in the node's reports",
                   pool_mb);
  od_histogram_write(n->deploy_durations, out);
  od_histogram_write(n->phase_durations, out);
  od_mqtt_write_metrics(n->mqtt, out);
  od_http_reply_metrics(msg, out, "oakuk_node", n->http_counts, n->http_durations);
}

static const char *const routes[] = {"healthz", "metrics"};

static void handle(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                   gpointer data) {
  Node *n = data;
  const char *method = soup_server_message_get_method(msg);
  g_auto(GStrv) seg = od_path_split(path);
  for (gsize k = 0; k < G_N_ELEMENTS(routes); k++) {
    if (!od_path_match(seg, routes[k], NULL, 0))
      continue;
    if (strcmp(method, "GET") != 0) {
      od_http_reply_no_route(msg, method, path, "GET");
      return;
    }
    od_http_set_route(msg, routes[k]);
    if (k == 0)
      reply_healthz(n, msg);
    else
      reply_metrics(n, msg);
    return;
  }
  od_http_reply_no_route(msg, method, path, NULL);
}

gboolean node_api_start(Node *n, GError **error) {
  n->http_counts = g_hash_table_new(g_direct_hash, g_direct_equal);
  n->http_durations = od_histogram_new("oakuk_node_http_request_duration_seconds",
                                       "Time from a request's first byte to the end of its response, by "
                                       "method and route",
                                       od_http_duration_bounds, od_http_duration_bounds_len);
  n->deploy_durations = od_histogram_new("oakuk_node_deploy_to_running_seconds",
                                         "Time from a deploy's arrival on this node (image fetch and network "
                                         "included) to RUNNING, by virtualization",
                                         deploy_bounds, G_N_ELEMENTS(deploy_bounds));
  n->phase_durations =
      od_histogram_new("oakuk_node_deploy_phase_seconds",
                       "Each phase of a deploy on this node: fetch (the image's download, or "
                       "the cache's answer; unikernels), unpack (what was downloaded, unpacked and "
                       "checked), network, boot (the runtime to RUNNING; a container's image "
                       "included), ready (RUNNING to the readiness probe's first success)",
                       phase_bounds, G_N_ELEMENTS(phase_bounds));
  if (n->listen == NULL)
    return TRUE;
  n->server = soup_server_new("server-header", "oakuk-node", NULL);
  soup_server_add_handler(n->server, NULL, handle, n, NULL);
  od_http_count_requests(n->server, n->http_counts, n->http_durations);
  return od_http_server_listen(n->server, n->listen, error);
}

void node_api_stop(Node *n) {
  if (n->server != NULL)
    soup_server_disconnect(n->server);
  g_clear_object(&n->server);
  g_clear_pointer(&n->http_counts, g_hash_table_unref);
  g_clear_pointer(&n->http_durations, od_histogram_free);
  g_clear_pointer(&n->deploy_durations, od_histogram_free);
  g_clear_pointer(&n->phase_durations, od_histogram_free);
}

void node_api_observe_deploy(Node *n, int32_t virt, double seconds) {
  if (n->deploy_durations == NULL)
    return;
  const char *name = oakuk_virt_name(virt);
  g_autofree char *labels = g_strdup_printf("virtualization=\"%s\"", name ? name : "unknown");
  od_histogram_observe(n->deploy_durations, labels, seconds);
}

void node_api_observe_phase(Node *n, int32_t virt, const char *phase, double seconds) {
  if (n->phase_durations == NULL)
    return;
  const char *name = oakuk_virt_name(virt);
  g_autofree char *labels =
      g_strdup_printf("phase=\"%s\",virtualization=\"%s\"", phase, name ? name : "unknown");
  od_histogram_observe(n->phase_durations, labels, seconds);
}

/* Stored rows as the documents of docs/api.md (Oakestra's keys first) and the job of a deploy. */
#include "views.h"

#include "loop.h"

JsonObject *view_parse_object(const char *text) {
  g_autoptr(JsonNode) node = text ? od_json_parse(text, -1, NULL) : NULL;
  return node && JSON_NODE_HOLDS_OBJECT(node) ? json_object_ref(json_node_get_object(node)) : NULL;
}

char *view_object_text(JsonObject *o) {
  g_autoptr(JsonNode) n = json_node_init_object(json_node_alloc(), o);
  return od_json_to_string(n, FALSE);
}

static char *iso_time(gint64 ms) {
  g_autoptr(GDateTime) t = g_date_time_new_from_unix_utc(ms / 1000);
  g_autofree char *s = t ? g_date_time_format(t, "%Y-%m-%dT%H:%M:%S") : g_strdup("1970-01-01T00:00:00");
  return g_strdup_printf("%s.%03d", s, (int)(ms % 1000));
}

/* Oakestra's reporting keys (docs/api.md "Oakestra-compatible endpoints"): cpu_percent and
 * memory_percent as strings (memory in bytes, as Oakestra's node engine reports it), and the last
 * reports as cpu_history / memory_history [{value: string, timestamp: ISO 8601}]. */
static void add_usage_keys(JsonObject *o, double cpu, double memory_mb, const LoopUsage *u) {
  g_autofree char *c = g_strdup_printf("%f", cpu);
  g_autofree char *m = g_strdup_printf("%.0f", memory_mb * 1024 * 1024);
  json_object_set_string_member(o, "cpu_percent", c);
  json_object_set_string_member(o, "memory_percent", m);
  JsonArray *ch = json_array_new(), *mh = json_array_new();
  for (guint k = 0; u != NULL && k < u->count; k++) {
    const LoopUsageSample *s = &u->samples[(u->first + k) % LOOP_USAGE_SAMPLES];
    g_autofree char *at = iso_time(s->at_ms);
    g_autofree char *cv = g_strdup_printf("%f", s->cpu);
    g_autofree char *mv = g_strdup_printf("%.0f", s->memory * 1024 * 1024);
    JsonObject *a = json_object_new(), *b = json_object_new();
    json_object_set_string_member(a, "value", cv);
    json_object_set_string_member(a, "timestamp", at);
    json_object_set_string_member(b, "value", mv);
    json_object_set_string_member(b, "timestamp", at);
    json_array_add_object_element(ch, a);
    json_array_add_object_element(mh, b);
  }
  json_object_set_array_member(o, "cpu_history", ch);
  json_object_set_array_member(o, "memory_history", mh);
}

JsonObject *view_instance(Root *r, const StoreInstance *i) {
  /* Keys an older root stored that this one does not know come first, so ours win. */
  JsonObject *o = i->extra ? view_parse_object(i->extra) : NULL;
  if (o == NULL)
    o = json_object_new();
  g_autoptr(StoreCluster) cl = *i->cluster_id ? store_cluster_get(r->store, i->cluster_id) : NULL;
  json_object_set_int_member(o, "instance_number", i->number);
  json_object_set_string_member(o, "cluster_id", i->cluster_id);
  json_object_set_string_member(o, "cluster_location", cl ? cl->location : "");
  json_object_set_string_member(o, "cluster_name", cl ? cl->name : "");
  json_object_set_string_member(o, "node_id", i->node);
  json_object_set_string_member(o, "publicip", i->publicip);
  const LoopUsage *u = *i->cluster_id && !i->deleting
                           ? loop_instance_usage(r->loop, i->cluster_id, i->service_id, i->number)
                           : NULL;
  json_object_set_double_member(o, "cpu", u ? u->cpu : i->cpu);
  json_object_set_double_member(o, "memory", u ? u->memory : i->memory);
  add_usage_keys(o, u ? u->cpu : i->cpu, u ? u->memory : i->memory, u);
  json_object_set_string_member(o, "worker_id", i->node);
  json_object_set_string_member(o, "status", i->status);
  g_autofree char *detail = loop_instance_detail(r->loop, i);
  json_object_set_string_member(o, "status_detail", detail);
  json_object_set_int_member(o, "generation", i->generation);
  json_object_set_int_member(o, "revision", i->revision > 0 ? i->revision : 1);
  if (i->requested_at >= 0)
    json_object_set_int_member(o, "requested_at", i->requested_at);
  json_object_set_boolean_member(o, "ready", i->ready);
  if (i->ready && i->ready_ms >= 0)
    json_object_set_int_member(o, "ready_ms", i->ready_ms);
  if (i->ready && i->node_ready_ms >= 0)
    json_object_set_int_member(o, "node_ready_ms", i->node_ready_ms);
  JsonObject *pl = i->placement ? view_parse_object(i->placement) : NULL;
  if (pl != NULL)
    json_object_set_object_member(o, "placement", pl);
  g_autoptr(GPtrArray) refusals =
      store_refusals_of_instance(r->store, i->service_id, i->number, root_now_ms());
  if (refusals->len > 0) {
    JsonObject *rf = json_object_new();
    for (guint k = 0; k < refusals->len; k++) {
      StoreRefusal *x = refusals->pdata[k];
      json_object_set_string_member(rf, x->cluster_id, x->reason);
    }
    json_object_set_object_member(o, "cluster_refusals", rf);
  }
  return o;
}

JsonObject *view_service(Root *r, const StoreService *sv, gboolean with_instances, gboolean compat) {
  JsonObject *o = view_parse_object(sv->doc);
  if (o == NULL)
    o = json_object_new();
  json_object_set_int_member(o, "next_instance_progressive_number", sv->next_instance);
  json_object_set_string_member(o, "status", sv->status);
  json_object_set_int_member(o, "revision", sv->revision);
  if (!with_instances)
    return o;
  JsonArray *list = json_array_new();
  g_autoptr(GPtrArray) all = store_instances_of_service(r->store, sv->id);
  for (guint k = 0; k < all->len; k++) {
    StoreInstance *i = all->pdata[k];
    if (!(compat && i->deleting))
      json_array_add_object_element(list, view_instance(r, i));
  }
  json_object_set_array_member(o, "instance_list", list);
  return o;
}

char *view_job(Root *r, const StoreService *sv, gint64 revision, gint64 n, gint64 generation) {
  StoreService at = *sv;
  g_autofree char *kept = NULL;
  if (revision != sv->revision) {
    if (!store_service_spec(r->store, sv->id, revision, &kept, NULL))
      return NULL;
    at.doc = kept;
    at.revision = revision;
  }
  g_autoptr(JsonObject) job = view_service(r, &at, FALSE, FALSE);
  json_object_remove_member(job, "revision"); /* the root's bookkeeping: not a key of a job */
  json_object_set_int_member(job, "instance_number", n);
  json_object_set_int_member(job, "generation", generation);
  return view_object_text(job);
}

JsonObject *view_application(const StoreApplication *a) {
  JsonObject *o = view_parse_object(a->doc);
  return o ? o : json_object_new();
}

static double num_of(JsonObject *o, const char *key) {
  JsonNode *n = json_object_get_member(o, key);
  return n && JSON_NODE_HOLDS_VALUE(n) &&
                 (json_node_get_value_type(n) == G_TYPE_DOUBLE || json_node_get_value_type(n) == G_TYPE_INT64)
             ? json_node_get_double(n)
             : 0;
}

/* The keys Oakestra's dashboard and `oak clusters info` read, from the aggregate's own: CPU %,
 * memory (MB), cores, GPUs, the last aggregate's time (s), the address the root reaches it at. */
static void add_cluster_compat_keys(JsonObject *o, const StoreCluster *c) {
  if (json_object_get_member(o, "active_nodes") == NULL) /* an aggregate without the key: all its nodes */
    json_object_set_int_member(o, "active_nodes", (gint64)num_of(o, "number_of_nodes"));
  json_object_set_double_member(o, "aggregated_cpu_percent", num_of(o, "cpu_percent"));
  json_object_set_int_member(o, "memory_in_mb", (gint64)num_of(o, "cumulative_memory_in_mb"));
  json_object_set_int_member(o, "memory", (gint64)num_of(o, "cumulative_memory_in_mb"));
  json_object_set_int_member(o, "total_cpu_cores", (gint64)num_of(o, "cpu_cores"));
  json_object_set_int_member(o, "vcpus", (gint64)num_of(o, "cpu_cores"));
  json_object_set_int_member(o, "total_gpu_cores", (gint64)num_of(o, "gpu_cores"));
  json_object_set_int_member(o, "vgpus", (gint64)num_of(o, "gpu_cores"));
  json_object_set_double_member(o, "memory_percent", num_of(o, "memory_percent"));
  json_object_set_double_member(o, "cpu_percent", num_of(o, "cpu_percent"));
  json_object_set_double_member(o, "last_modified_timestamp", (double)c->received_at / 1000.0);
  g_autoptr(GUri) uri = g_uri_parse(c->url, G_URI_FLAGS_NONE, NULL);
  json_object_set_string_member(o, "ip", uri && g_uri_get_host(uri) ? g_uri_get_host(uri) : "");
  g_autofree char *port =
      uri && g_uri_get_port(uri) > 0 ? g_strdup_printf("%d", g_uri_get_port(uri)) : g_strdup("");
  json_object_set_string_member(o, "port", port);
  if (json_object_get_member(o, "virtualization") == NULL)
    json_object_set_array_member(o, "virtualization", json_array_new());
  json_object_set_array_member(o, "supported_addons", json_array_new());
}

JsonObject *view_cluster(Root *r, const StoreCluster *c) {
  JsonObject *o = c->aggregate ? view_parse_object(c->aggregate) : NULL;
  if (o == NULL)
    o = json_object_new();
  json_object_set_string_member(o, "_id", c->id); /* a plain string, as Oakestra's clusters have */
  json_object_set_string_member(o, "id", c->id);
  json_object_set_string_member(o, "cluster_name", c->name);
  json_object_set_string_member(o, "cluster_location", c->location);
  json_object_set_string_member(o, "url", c->url);
  json_object_set_string_member(o, "subnet", c->subnet);
  json_object_set_boolean_member(o, "active", loop_cluster_active(r->loop, c->id));
  json_object_set_int_member(o, "aggregate_received_at_ms", c->received_at);
  json_object_set_int_member(o, "registered_at_ms", c->registered_at);
  add_cluster_compat_keys(o, c);
  return o;
}

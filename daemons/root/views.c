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

static JsonObject *oid(const char *id) {
  JsonObject *o = json_object_new();
  json_object_set_string_member(o, "$oid", id);
  return o;
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
  double cpu = i->cpu, memory = i->memory;
  if (*i->cluster_id && !i->deleting)
    loop_instance_usage(r->loop, i->cluster_id, i->service_id, i->number, &cpu, &memory);
  json_object_set_double_member(o, "cpu", cpu);
  json_object_set_double_member(o, "memory", memory);
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

JsonObject *view_cluster(Root *r, const StoreCluster *c) {
  JsonObject *o = c->aggregate ? view_parse_object(c->aggregate) : NULL;
  if (o == NULL)
    o = json_object_new();
  json_object_set_object_member(o, "_id", oid(c->id));
  json_object_set_string_member(o, "id", c->id);
  json_object_set_string_member(o, "cluster_name", c->name);
  json_object_set_string_member(o, "cluster_location", c->location);
  json_object_set_string_member(o, "url", c->url);
  json_object_set_string_member(o, "subnet", c->subnet);
  json_object_set_boolean_member(o, "active", loop_cluster_active(r->loop, c->id));
  json_object_set_int_member(o, "aggregate_received_at_ms", c->received_at);
  json_object_set_int_member(o, "registered_at_ms", c->registered_at);
  return o;
}

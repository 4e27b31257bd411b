/* The root's control loop: desired state (instances wanted or being deleted, their generation and
 * cluster) against what clusters report, with every decision of docs/reconcile.md "The loops /
 * Root". Inputs come typed from the adapters; requests to clusters go out through link.c. */
#include "loop.h"

#include "link.h"
#include "pki.h"
#include "views.h"

#include <arpa/inet.h>
#include <string.h>

typedef struct {
  char *id, *name;
  LoopAggregate *agg; /* NULL until the first aggregate */
  gint64 received_at; /* after a root restart at least the start: one full timeout of grace */
  GHashTable *usage;  /* "job_id/n" -> LoopUsage*, as reported; not stored */
  guint usage_round;  /* raised by each full-state aggregate: entries it did not renew go */
} ClusterView;

struct Loop {
  Root *r;
  Store *store;
  GHashTable *clusters; /* id -> ClusterView* */
  oakuk_reservations *reservations;
  GHashTable *inflight; /* "cluster/service/n" -> 1: one request per instance and cluster at a time */
  guint timer, idle;
  gboolean placement_due; /* an aggregate arrived: try every unplaced instance at once */
};

/* What one decision needs of the services involved, looked up once. */
typedef struct {
  Loop *l;
  gint64 now;
  GHashTable *services; /* id -> StoreService* */
  GHashTable *ms;       /* id -> oakuk_microservice* */
} Ctx;

void loop_aggregate_free(LoopAggregate *a) {
  if (a == NULL)
    return;
  oakuk_cluster_aggregate_unref(a->agg);
  if (a->active_nodes != NULL)
    g_ptr_array_unref(a->active_nodes);
  if (a->node_ids != NULL)
    g_ptr_array_unref(a->node_ids);
  g_free(a->stored);
  g_free(a);
}

static void view_free(ClusterView *v) {
  if (v->usage != NULL)
    g_hash_table_unref(v->usage);
  g_free(v->id);
  g_free(v->name);
  loop_aggregate_free(v->agg);
  g_free(v);
}

static void ctx_init(Ctx *c, Loop *l) {
  c->l = l;
  c->now = root_now_ms();
  c->services = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)store_service_free);
  c->ms = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)oakuk_microservice_unref);
}

static void ctx_clear(Ctx *c) {
  g_hash_table_unref(c->services);
  g_hash_table_unref(c->ms);
}

static StoreService *ctx_service(Ctx *c, const char *sid) {
  StoreService *sv = g_hash_table_lookup(c->services, sid);
  if (sv == NULL && (sv = store_service_get(c->l->store, sid)) != NULL)
    g_hash_table_insert(c->services, g_strdup(sid), sv);
  return sv;
}

/* The microservice of revision of sid (0: the current one), parsed once per context. */
static oakuk_microservice *ctx_ms(Ctx *c, const char *sid, gint64 revision) {
  StoreService *sv = ctx_service(c, sid);
  if (sv == NULL)
    return NULL;
  if (revision <= 0)
    revision = sv->revision;
  g_autofree char *key = g_strdup_printf("%s#%" G_GINT64_FORMAT, sid, revision);
  oakuk_microservice *ms = g_hash_table_lookup(c->ms, key);
  if (ms != NULL)
    return ms;
  g_autofree char *kept = NULL;
  if (revision != sv->revision && !store_service_spec(c->l->store, sid, revision, NULL, &kept)) {
    od_log(G_LOG_LEVEL_WARNING, "schedule", "service", sid, "msg",
           "the revision an instance runs is not stored", NULL);
    return NULL;
  }
  oakuk_error *err = NULL;
  ms = oakuk_microservice_parse(kept ? kept : sv->ms, (size_t)-1, &err);
  if (ms == NULL) {
    od_log(G_LOG_LEVEL_WARNING, "schedule", "service", sid, "msg", oakuk_error_message(err), NULL);
    oakuk_error_free(err);
    return NULL;
  }
  g_hash_table_insert(c->ms, g_steal_pointer(&key), ms);
  return ms;
}

/* "<job_name>.instance.<n>": the reservation key and the name in logs. */
static char *instance_name(Ctx *c, const char *sid, gint64 n) {
  oakuk_microservice *ms = ctx_ms(c, sid, 0); /* every revision has the same name */
  char *lib = ms ? oakuk_instance_name(oakuk_microservice_service_name(ms), n) : NULL;
  char *name = lib ? g_strdup(lib) : g_strdup_printf("%s.instance.%" G_GINT64_FORMAT, sid, n);
  od_oakuk_free(lib);
  return name;
}

static char *inflight_key(const char *cid, const char *sid, gint64 n) {
  return g_strdup_printf("%s/%s/%" G_GINT64_FORMAT, cid, sid, n);
}

static ClusterView *view_of(Loop *l, const char *cid) {
  return cid && *cid ? g_hash_table_lookup(l->clusters, cid) : NULL;
}

static const char *cluster_name(Loop *l, const char *cid) {
  ClusterView *v = view_of(l, cid);
  return v ? v->name : cid;
}

static gboolean view_active(Loop *l, ClusterView *v, gint64 now) {
  return v != NULL && v->agg != NULL && now - v->received_at <= l->r->cfg.cluster_timeout_ms;
}

gboolean loop_cluster_active(Loop *l, const char *cid) {
  return view_active(l, view_of(l, cid), root_now_ms());
}

guint loop_clusters_active(Loop *l) {
  guint n = 0;
  GHashTableIter it;
  gpointer v;
  gint64 now = root_now_ms();
  g_hash_table_iter_init(&it, l->clusters);
  while (g_hash_table_iter_next(&it, NULL, &v))
    n += view_active(l, v, now);
  return n;
}

GPtrArray *loop_node_clusters(Loop *l, const char *node) {
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, l->clusters);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    ClusterView *cv = v;
    if (cv->agg != NULL && g_ptr_array_find_with_equal_func(cv->agg->node_ids, node, g_str_equal, NULL))
      g_ptr_array_add(out, g_strdup(cv->id));
  }
  return out;
}

static gint64 silent_s(Loop *l, const char *cid, gint64 now) {
  ClusterView *v = view_of(l, cid);
  return v ? (now - v->received_at) / 1000 : 0;
}

char *loop_instance_detail(Loop *l, const StoreInstance *i) {
  gint64 now = root_now_ms();
  g_autoptr(GPtrArray) parts = g_ptr_array_new_with_free_func(g_free);
  ClusterView *v = view_of(l, i->cluster_id);
  if (v != NULL && !view_active(l, v, now))
    g_ptr_array_add(parts, g_strdup_printf("cluster %s silent for %" G_GINT64_FORMAT " s", v->name,
                                           silent_s(l, i->cluster_id, now)));
  if (*i->status_detail)
    g_ptr_array_add(parts, g_strdup(i->status_detail));
  if (*i->note)
    g_ptr_array_add(parts, g_strdup(i->note));
  g_ptr_array_add(parts, NULL);
  return g_strjoinv("; ", (char **)parts->pdata);
}

/* ---- small state changes ---- */

static gboolean status_in_flight(const char *status) {
  int32_t s = oakuk_instance_status_from_name(status);
  return s == OAKUK_STATUS_CLUSTER_SCHEDULED || s == OAKUK_STATUS_NODE_SCHEDULED ||
         s == OAKUK_STATUS_CREATING;
}

static void replace(char **field, const char *value) {
  char *old = *field;
  *field = g_strdup(value ? value : "");
  g_free(old);
}

/* Readiness belongs to one RUNNING stretch: it goes, with both measures, when the instance leaves
 * RUNNING or its cluster says it is not ready (any more). */
static void clear_ready(StoreInstance *i) {
  i->ready = FALSE;
  i->ready_ms = i->node_ready_ms = -1;
}

static gboolean set_status(Ctx *c, StoreInstance *i, int32_t status, const char *detail, GError **error) {
  if (status != OAKUK_STATUS_RUNNING)
    clear_ready(i);
  replace(&i->status, oakuk_instance_status_name(status));
  if (detail != NULL)
    replace(&i->status_detail, detail);
  return store_service_set_status(c->l->store, i->service_id, i->status, error);
}

/* The first ready=true of a RUNNING stretch sets ready_ms, measured by the root from requested_at
 * (the API call that created the instance). TRUE when the instance became ready now. */
static gboolean update_ready(StoreInstance *i, gboolean ready, gint64 node_ms, gint64 now) {
  if (!ready) {
    clear_ready(i);
    return FALSE;
  }
  if (i->ready)
    return FALSE;
  i->ready = TRUE;
  if (i->requested_at >= 0)
    i->ready_ms = MAX(0, now - i->requested_at);
  if (node_ms >= 0)
    i->node_ready_ms = node_ms;
  return TRUE;
}

static void forget_reservation(Ctx *c, const StoreInstance *i) {
  g_autofree char *key = instance_name(c, i->service_id, i->number);
  oakuk_reservations_remove(c->l->reservations, key);
}

/* The instance leaves its cluster (it refused, failed, was removed); the next assignment raises
 * the generation. */
static void unassign(Ctx *c, StoreInstance *i) {
  forget_reservation(c, i);
  replace(&i->cluster_id, "");
  replace(&i->node, "");
  replace(&i->publicip, "");
  g_clear_pointer(&i->placement, g_free);
  i->deploy_pending = FALSE;
  i->deploy_attempts = 0;
  i->next_try_at = 0;
  i->backoff_ms = 0;
  clear_ready(i);
}

static gboolean refuse(Ctx *c, const StoreInstance *i, const char *cid, RefusalKind kind, const char *reason,
                       GError **error) {
  StoreRefusal r = {.service_id = i->service_id,
                    .number = i->number,
                    .cluster_id = (char *)cid,
                    .kind = kind,
                    .reason = (char *)reason,
                    .since = c->now,
                    .until = c->now + LOOP_REFUSAL_MS};
  od_log(G_LOG_LEVEL_MESSAGE, "refusal", "service", i->service_id, "cluster", cid, "msg", reason, NULL);
  return store_refusal_put(c->l->store, &r, error);
}

static void back_off(StoreInstance *i, gint64 now) {
  i->backoff_ms = MIN(MAX(i->backoff_ms * 2, 1000), LOOP_BACKOFF_MAX_MS);
  i->next_try_at = now + i->backoff_ms;
}

/* ---- placement ---- */

/* Node selection over the node lists the active clusters sent: one line per node, and TRUE when
 * active nodes exist and not one of them qualifies (arch, virtualization, emulation, constraints)
 * whatever its free resources: NO_QUALIFIED_WORKER_FOUND rather than a shortage of capacity. */
static gboolean no_qualified_node(Ctx *c, const oakuk_microservice *ms, GPtrArray *lines) {
  gboolean any_node = FALSE, any_qualified = FALSE;
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, c->l->clusters);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    ClusterView *cv = v;
    if (!view_active(c->l, cv, c->now) || cv->agg->active_nodes->len == 0)
      continue;
    any_node = TRUE;
    oakuk_placement *p = NULL;
    oakuk_error *err = NULL;
    int rc = oakuk_sched_select_node(&p, ms, (oakuk_node_report *const *)cv->agg->active_nodes->pdata,
                                     cv->agg->active_nodes->len, NULL, NULL, NULL, &err);
    oakuk_error_free(err);
    if (p == NULL || rc == 0 || oakuk_placement_status(p) != OAKUK_STATUS_NO_QUALIFIED_WORKER)
      any_qualified = TRUE;
    for (size_t k = 0; p != NULL && k < oakuk_placement_explanation_count(p); k++)
      g_ptr_array_add(lines, g_strdup_printf("cluster %s: %s", cv->name, oakuk_placement_explanation(p, k)));
    oakuk_placement_unref(p);
  }
  return any_node && !any_qualified;
}

/* Cluster selection for i over every cluster with an aggregate except avoid and those whose
 * refusal has not expired (each gets a line). */
static oakuk_placement *select_cluster(Ctx *c, const StoreInstance *i, const oakuk_microservice *ms,
                                       const char *avoid, const char *key, GPtrArray *lines, GError **error) {
  g_autoptr(GPtrArray) refusals = store_refusals_of_instance(c->l->store, i->service_id, i->number, c->now);
  g_autoptr(GPtrArray) cands = g_ptr_array_new();
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, c->l->clusters);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    ClusterView *cv = v;
    if (g_strcmp0(cv->id, avoid) == 0)
      g_ptr_array_add(lines,
                      g_strdup_printf("cluster %s: silent, the instance is moving away from it", cv->name));
    if (cv->agg == NULL || g_strcmp0(cv->id, avoid) == 0)
      continue;
    StoreRefusal *refused = NULL;
    for (guint k = 0; k < refusals->len && refused == NULL; k++)
      if (strcmp(((StoreRefusal *)refusals->pdata[k])->cluster_id, cv->id) == 0)
        refused = refusals->pdata[k];
    if (refused != NULL) {
      g_ptr_array_add(lines,
                      g_strdup_printf("cluster %s: refused it, not retried for %" G_GINT64_FORMAT " s%s (%s)",
                                      cv->name, (refused->until - c->now + 999) / 1000,
                                      refused->kind == REFUSAL_FAILED ? "" : " or until it has room",
                                      refused->reason));
      continue;
    }
    g_ptr_array_add(cands, cv->agg->agg);
  }
  if (cands->len == 0) {
    if (lines->len == 0)
      g_ptr_array_add(lines, g_strdup("no cluster has registered and sent an aggregate"));
    return NULL;
  }
  oakuk_sched_options opts = OAKUK_SCHED_OPTIONS_INIT;
  opts.policy = c->l->r->cfg.policy;
  opts.now_ms = c->now;
  opts.timeout_ms = c->l->r->cfg.cluster_timeout_ms;
  oakuk_placement *p = NULL;
  oakuk_error *err = NULL;
  int rc = oakuk_sched_select_cluster(&p, ms, (oakuk_cluster_aggregate *const *)cands->pdata, cands->len,
                                      c->l->reservations, key, &opts, &err);
  if (rc != 0 && rc != OAKUK_ENOCAPACITY) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "cluster selection: %s", oakuk_error_message(err));
    oakuk_error_free(err);
    oakuk_placement_unref(p);
    return NULL;
  }
  oakuk_error_free(err);
  for (size_t k = 0; p != NULL && k < oakuk_placement_explanation_count(p); k++)
    g_ptr_array_add(lines, g_strdup(oakuk_placement_explanation(p, k)));
  return p;
}

static char *placement_text(oakuk_placement *p) {
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "virtualization", oakuk_virt_name(oakuk_placement_virt(p)));
  if (oakuk_placement_arch(p) != NULL)
    json_object_set_string_member(o, "arch", oakuk_placement_arch(p));
  return view_object_text(o);
}

/* Gives i to cluster cid: generation + 1, deploy pending. Deletes still queued for cid are dropped:
 * this deploy replaces whatever copy cid holds (a cluster adopts a newer generation). */
static gboolean assign(Ctx *c, StoreInstance *i, const char *cid, GError **error) {
  if (!store_delete_remove_for(c->l->store, cid, i->service_id, i->number, -1, error))
    return FALSE;
  i->generation++;
  replace(&i->cluster_id, cid);
  i->assigned_at = c->now;
  replace(&i->node, "");
  replace(&i->publicip, "");
  clear_ready(i);
  i->deploy_pending = TRUE;
  i->deploy_attempts = 0;
  i->deploy_next_at = 0;
  i->deploy_done_at = 0;
  replace(&i->deploy_error, "");
  i->backoff_ms = 0;
  i->next_try_at = 0;
  return TRUE;
}

typedef struct {
  gboolean placed;
  int32_t status; /* when not placed: NoActiveClusterWithCapacity or NO_QUALIFIED_WORKER_FOUND */
  char *detail;   /* when not placed: every reason */
} Placed;

static void placed_clear(Placed *p) {
  g_free(p->detail);
}

/* Runs cluster selection for i (never on avoid) and, when a cluster is chosen, assigns i to it
 * with status CLUSTER_SCHEDULED. The explanation is stored for `oakuk explain`. */
static gboolean place(Ctx *c, StoreInstance *i, const char *avoid, Placed *out, GError **error) {
  memset(out, 0, sizeof *out);
  oakuk_microservice *ms = ctx_ms(c, i->service_id, i->revision);
  if (ms == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "service %s: its stored microservice does not parse",
                i->service_id);
    return FALSE;
  }
  g_autofree char *key = instance_name(c, i->service_id, i->number);
  oakuk_reservations_remove(c->l->reservations, key);
  g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GError) local = NULL;
  oakuk_placement *p = select_cluster(c, i, ms, avoid, key, lines, &local);
  if (local != NULL) {
    g_propagate_error(error, g_steal_pointer(&local));
    return FALSE;
  }
  gboolean ok = p != NULL && oakuk_placement_ok(p);
  gboolean unqualified = !ok && no_qualified_node(c, ms, lines);
  g_ptr_array_add(lines, NULL);
  g_autofree char *explain = g_strjoinv("\n", (char **)lines->pdata);
  if (!store_service_set_explain(c->l->store, i->service_id, explain, error)) {
    oakuk_placement_unref(p);
    return FALSE;
  }
  if (!ok) {
    oakuk_placement_unref(p);
    out->status = unqualified ? OAKUK_STATUS_NO_QUALIFIED_WORKER : OAKUK_STATUS_NO_ACTIVE_CLUSTER;
    out->detail = g_strjoinv("; ", (char **)lines->pdata);
    return TRUE;
  }
  g_autofree char *cid = g_strdup(oakuk_placement_target(p));
  g_free(i->placement);
  i->placement = placement_text(p);
  oakuk_placement_unref(p);
  out->placed = TRUE;
  g_autofree char *gen = g_strdup_printf("%" G_GINT64_FORMAT, i->generation + 1);
  od_log(G_LOG_LEVEL_MESSAGE, "schedule", "instance", key, "cluster", cid, "generation", gen, "status",
         "CLUSTER_SCHEDULED", "msg", "cluster chosen", NULL);
  return assign(c, i, cid, error) && set_status(c, i, OAKUK_STATUS_CLUSTER_SCHEDULED, "", error);
}

/* Rule 2: an unplaced instance gets a cluster, or its status says why not and it waits. */
static gboolean place_unplaced(Ctx *c, StoreInstance *i, GError **error) {
  Placed out;
  if (!place(c, i, NULL, &out, error))
    return FALSE;
  gboolean ok = TRUE;
  if (!out.placed) {
    const char *status = oakuk_instance_status_name(out.status);
    /* Retries repeat themselves: only a change is worth a line at the default level. */
    gboolean same = g_strcmp0(i->status, status) == 0 && g_strcmp0(i->status_detail, out.detail) == 0;
    g_autofree char *key = instance_name(c, i->service_id, i->number);
    od_log(same ? G_LOG_LEVEL_DEBUG : G_LOG_LEVEL_MESSAGE, "schedule", "instance", key, "status", status,
           "msg", out.detail, NULL);
    back_off(i, c->now);
    ok = set_status(c, i, out.status, out.detail, error);
  }
  placed_clear(&out);
  return ok && store_instance_put(c->l->store, i, error);
}

static gboolean restart_never(Ctx *c, const StoreInstance *i) {
  oakuk_microservice *ms = ctx_ms(c, i->service_id, i->revision);
  return ms != NULL && oakuk_microservice_restart(ms) == OAKUK_RESTART_NEVER;
}

/* Rule 3: an instance on a cluster silent for reschedule_after_s (never less than the cluster
 * timeout) gets a copy elsewhere; the silent cluster keeps a pending DELETE of its generation. A
 * service with restart "never" is not started again elsewhere: it stays. */
static gboolean try_move(Ctx *c, StoreInstance *i, ClusterView *from, GError **error) {
  oakuk_microservice *ms = ctx_ms(c, i->service_id, i->revision);
  gint64 after =
      MAX(ms ? oakuk_microservice_reschedule_after_s(ms) * 1000 : 60000, c->l->r->cfg.cluster_timeout_ms);
  gint64 silent = c->now - from->received_at;
  if (silent < after || i->next_try_at > c->now)
    return TRUE;
  if (restart_never(c, i)) {
    static const char kept[] = "not moved: restart policy is never";
    if (strcmp(i->note, kept) == 0)
      return TRUE;
    replace(&i->note, kept);
    return store_instance_put(c->l->store, i, error);
  }
  g_autofree char *old_cid = g_strdup(i->cluster_id);
  gint64 old_gen = i->generation, old_done = i->deploy_done_at;
  g_autofree char *old_status = g_strdup(i->status);
  Placed out;
  if (!place(c, i, old_cid, &out, error))
    return FALSE;
  gboolean ok = TRUE;
  if (out.placed) {
    replace(&i->moved_from, old_cid);
    i->moved_generation = old_gen;
    i->moved_at = c->now;
    g_autofree char *note =
        g_strdup_printf("moved from cluster %s (%s there, silent for %" G_GINT64_FORMAT " s)", from->name,
                        old_status, silent / 1000);
    replace(&i->note, note);
    ok = store_delete_add(c->l->store, old_cid, i->service_id, i->number, old_gen, old_done, c->now, error);
    od_log(G_LOG_LEVEL_MESSAGE, "move", "service", i->service_id, "from", old_cid, "to", i->cluster_id, "msg",
           note, NULL);
  } else {
    back_off(i, c->now);
    g_autofree char *note = g_strdup_printf("not moved: %s", out.detail);
    replace(&i->note, note);
  }
  placed_clear(&out);
  return ok && store_instance_put(c->l->store, i, error);
}

/* A cluster gave the instance back (no room, not qualified, failed, or would not take the deploy):
 * a refusal of that cluster and a new placement at once. */
static gboolean give_back(Ctx *c, StoreInstance *i, const char *cid, RefusalKind kind, const char *reason,
                          gboolean delete_copy, GError **error) {
  if (!refuse(c, i, cid, kind, reason, error))
    return FALSE;
  if (delete_copy && !store_delete_add(c->l->store, cid, i->service_id, i->number, i->generation,
                                       i->deploy_done_at, c->now, error))
    return FALSE;
  unassign(c, i);
  i->backoff_ms = 0;
  i->next_try_at = 0;
  return place_unplaced(c, i, error);
}

/* ---- deletes ---- */

/* A delete is confirmed (or moot): drop it, and with it the instance waiting for it. */
static gboolean finish_delete(Ctx *c, const StoreDelete *d, const char *how, GError **error) {
  if (!store_delete_remove(c->l->store, d->id, error))
    return FALSE;
  g_autofree char *gen = g_strdup_printf("%" G_GINT64_FORMAT, d->generation);
  g_autoptr(StoreInstance) i = store_instance_get(c->l->store, d->service_id, d->number);
  g_autofree char *name = instance_name(c, d->service_id, d->number);
  od_log(G_LOG_LEVEL_INFO, "undeploy", "instance", name, "cluster", d->cluster_id, "generation", gen, "msg",
         how, NULL);
  if (i == NULL)
    return TRUE;
  gboolean covers = d->generation == 0;
  if (i->deleting && strcmp(i->cluster_id, d->cluster_id) == 0 &&
      (covers || i->generation <= d->generation)) {
    forget_reservation(c, i);
    return store_instance_delete(c->l->store, i->service_id, i->number, error);
  }
  if (!i->deleting && strcmp(i->moved_from, d->cluster_id) == 0 &&
      (covers || i->moved_generation <= d->generation)) {
    replace(&i->moved_from, "");
    i->moved_generation = 0;
    return store_instance_put(c->l->store, i, error);
  }
  return TRUE;
}

/* Confirms every delete queued for the instance at cid up to generation (0: any). */
static gboolean confirm_deletes(Ctx *c, const char *cid, const char *sid, gint64 n, gint64 generation,
                                const char *how, GError **error) {
  g_autoptr(GPtrArray) ds = store_deletes_of_cluster(c->l->store, cid);
  for (guint k = 0; k < ds->len; k++) {
    StoreDelete *d = ds->pdata[k];
    if (strcmp(d->service_id, sid) == 0 && d->number == n &&
        (generation == 0 || d->generation <= generation) && !finish_delete(c, d, how, error))
      return FALSE;
  }
  return TRUE;
}

/* ---- what clusters say ---- */

static void log_status(const char *key, const char *cid, const char *status, const char *detail,
                       const StoreInstance *ready_now) {
  if (ready_now == NULL) {
    od_log(G_LOG_LEVEL_INFO, "status", "instance", key, "cluster", cid, "status", status, "msg", detail,
           NULL);
    return;
  }
  g_autofree char *ms = ready_now->ready_ms >= 0 ? g_strdup_printf("%" G_GINT64_FORMAT, ready_now->ready_ms)
                                                 : g_strdup("unknown");
  g_autofree char *node_ms = ready_now->node_ready_ms >= 0
                                 ? g_strdup_printf("%" G_GINT64_FORMAT, ready_now->node_ready_ms)
                                 : g_strdup("unknown");
  od_log(G_LOG_LEVEL_INFO, "status", "instance", key, "cluster", cid, "status", status, "ready", "true",
         "ready_ms", ms, "node_ready_ms", node_ms, "msg", detail, NULL);
}

static char *refusal_reason(const LoopObservation *o) {
  const char *d = o->status_detail ? o->status_detail : "";
  return g_strdup_printf("%s%s%s", oakuk_instance_status_name(o->status), *d ? ": " : "", d);
}

/* Statuses that give the instance back or say the cluster lost it. *handled is FALSE for the
 * others, which are plain observations. */
static gboolean hand_back(Ctx *c, StoreInstance *i, const char *cid, const LoopObservation *o,
                          const char *key, gboolean *handled, GError **error) {
  const char *detail = o->status_detail ? o->status_detail : "";
  g_autofree char *reason = refusal_reason(o);
  *handled = TRUE;
  switch (o->status) {
  case OAKUK_STATUS_NO_QUALIFIED_WORKER:
  case OAKUK_STATUS_NO_WORKER_CAPACITY:
    log_status(key, cid, oakuk_instance_status_name(o->status), detail, NULL);
    return give_back(c, i, cid,
                     o->status == OAKUK_STATUS_NO_WORKER_CAPACITY ? REFUSAL_CAPACITY : REFUSAL_UNQUALIFIED,
                     reason, FALSE, error);
  case OAKUK_STATUS_FAILED:
    /* Rule 5: the cluster gave up on every node it has. A cluster older than generations (none in
     * its report) reports a node's failure, which it handles itself, and restart "never" means
     * never: just a status then. */
    if (o->generation == 0 || restart_never(c, i))
      break;
    log_status(key, cid, "FAILED", detail, NULL);
    return give_back(c, i, cid, REFUSAL_FAILED, reason, TRUE, error);
  case OAKUK_STATUS_UNDEPLOYED:
    /* The cluster no longer holds a copy the root wants: it gets the deploy again. */
    log_status(key, cid, "UNDEPLOYED", detail, NULL);
    i->deploy_pending = TRUE;
    i->deploy_attempts = 0;
    i->deploy_next_at = 0;
    return set_status(c, i, OAKUK_STATUS_CLUSTER_SCHEDULED,
                      "the cluster reported it UNDEPLOYED; deploying it again", error) &&
           store_instance_put(c->l->store, i, error);
  default: break;
  }
  *handled = FALSE;
  return TRUE;
}

/* Whether o only repeats what the root knows (aggregates list every instance every few seconds). */
static gboolean unchanged(const StoreInstance *i, const LoopObservation *o) {
  gboolean ready = o->ready && o->status == OAKUK_STATUS_RUNNING;
  return !i->deploy_pending && g_strcmp0(i->status, oakuk_instance_status_name(o->status)) == 0 &&
         i->ready == ready && (o->status_detail == NULL || strcmp(i->status_detail, o->status_detail) == 0) &&
         (o->node == NULL || strcmp(i->node, o->node) == 0) &&
         (o->publicip == NULL || strcmp(i->publicip, o->publicip) == 0) &&
         (*i->note == '\0' || *i->moved_from != '\0');
}

/* Applies what cid says about i, which the root wants there with the generation o is about. */
static gboolean apply(Ctx *c, StoreInstance *i, const char *cid, const LoopObservation *o, GError **error) {
  g_autofree char *key = instance_name(c, i->service_id, i->number);
  gboolean handled = FALSE;
  if (!hand_back(c, i, cid, o, key, &handled, error))
    return FALSE;
  if (handled || unchanged(i, o))
    return TRUE;
  gboolean became_ready = update_ready(i, o->ready && o->status == OAKUK_STATUS_RUNNING, o->ready_ms, c->now);
  log_status(key, cid, oakuk_instance_status_name(o->status), o->status_detail ? o->status_detail : "",
             became_ready ? i : NULL);
  if (!set_status(c, i, o->status, o->status_detail, error))
    return FALSE;
  if (o->node != NULL)
    replace(&i->node, o->node);
  if (o->publicip != NULL)
    replace(&i->publicip, o->publicip);
  /* cpu and memory are kept in memory (note_usage): the stored ones are those of a migrated entry */
  if (*i->moved_from == '\0') /* settled: the remark about a move or a kept copy has served */
    replace(&i->note, "");
  if (i->deploy_pending) { /* the cluster has this generation: no need to send it again */
    i->deploy_pending = FALSE;
    i->deploy_attempts = 0;
    i->deploy_done_at = c->now;
  }
  if (!status_in_flight(i->status))
    forget_reservation(c, i);
  return store_instance_put(c->l->store, i, error);
}

/* A refusal the root learnt first from the deploy's answer gets the cluster's reasons from its
 * status report, when that comes second. */
static gboolean explain_refusal(Ctx *c, const char *cid, const char *sid, const LoopObservation *o,
                                GError **error) {
  if (o->status_detail == NULL || *o->status_detail == '\0')
    return TRUE;
  g_autoptr(GPtrArray) refusals = store_refusals_of_instance(c->l->store, sid, o->instance, c->now);
  for (guint k = 0; k < refusals->len; k++) {
    StoreRefusal *r = refusals->pdata[k];
    if (strcmp(r->cluster_id, cid) != 0 || strchr(r->reason, ':') != NULL)
      continue;
    g_free(r->reason);
    r->reason = refusal_reason(o);
    return store_refusal_put(c->l->store, r, error);
  }
  return TRUE;
}

/* A copy the root does not want at cid: a DELETE of that generation, unless one is queued. A
 * report of UNDEPLOYED confirms deletes instead; a refusal leaves nothing there. */
static gboolean unwanted(Ctx *c, const char *cid, const char *sid, const LoopObservation *o, GError **error) {
  if (o->status == OAKUK_STATUS_UNDEPLOYED)
    return sid == NULL ||
           confirm_deletes(c, cid, sid, o->instance, o->generation, "UNDEPLOYED reported", error);
  if (o->status == OAKUK_STATUS_NO_QUALIFIED_WORKER || o->status == OAKUK_STATUS_NO_WORKER_CAPACITY)
    return sid == NULL || explain_refusal(c, cid, sid, o, error);
  const char *target = sid ? sid : o->job_id;
  if (store_delete_covers(c->l->store, cid, target, o->instance, o->generation))
    return TRUE;
  g_autofree char *gen = g_strdup_printf("%" G_GINT64_FORMAT, o->generation);
  g_autofree char *n = g_strdup_printf("%" G_GINT64_FORMAT, o->instance);
  od_log(G_LOG_LEVEL_MESSAGE, "unwanted", "cluster", cid, "job", o->job_id, "instance", n, "generation", gen,
         "msg", "the cluster holds a copy the root does not want there: deleting it", NULL);
  return store_delete_add(c->l->store, cid, target, o->instance, o->generation, 0, c->now, error);
}

/* Whether the cluster's last answer about i's deploy is old enough for an aggregate without it to
 * mean it lacks it. */
static gboolean settled(Ctx *c, const StoreInstance *i, const char *cid) {
  g_autofree char *key = inflight_key(cid, i->service_id, i->number);
  return !i->deploy_pending && !g_hash_table_contains(c->l->inflight, key) &&
         c->now - i->deploy_done_at > LOOP_GRACE_MS;
}

static gboolean deploy_again(Ctx *c, StoreInstance *i, const char *why, GError **error) {
  g_autofree char *key = instance_name(c, i->service_id, i->number);
  od_log(G_LOG_LEVEL_MESSAGE, "redeploy", "instance", key, "cluster", i->cluster_id, "msg", why, NULL);
  i->deploy_pending = TRUE;
  i->deploy_attempts = 0;
  i->deploy_next_at = 0;
  return store_instance_put(c->l->store, i, error);
}

/* Rule 4: cid, which the instance was moved away from, is back and lists the old copy. */
static gboolean came_back(Ctx *c, StoreInstance *i, const char *cid, const LoopObservation *o,
                          GError **error) {
  if (oakuk_instance_status_from_name(i->status) == OAKUK_STATUS_RUNNING)
    return TRUE; /* the moved copy serves: the old one goes (its DELETE is queued) */
  g_autofree char *moved_to = g_strdup(i->cluster_id);
  g_autofree char *note =
      g_strdup_printf("kept on cluster %s: the copy on cluster %s was %s", cluster_name(c->l, cid),
                      *moved_to ? cluster_name(c->l, moved_to) : "(none)", i->status);
  if (*moved_to && !store_delete_add(c->l->store, moved_to, i->service_id, i->number, i->generation,
                                     i->deploy_done_at, c->now, error))
    return FALSE;
  forget_reservation(c, i);
  if (!assign(c, i, cid, error))
    return FALSE;
  replace(&i->moved_from, "");
  i->moved_generation = 0;
  replace(&i->note, note);
  od_log(G_LOG_LEVEL_MESSAGE, "move", "service", i->service_id, "from", moved_to, "to", cid, "msg", note,
         NULL);
  update_ready(i, o->ready && o->status == OAKUK_STATUS_RUNNING, o->ready_ms, c->now);
  if (o->node != NULL)
    replace(&i->node, o->node);
  return set_status(c, i, o->status, o->status_detail ? o->status_detail : "", error) &&
         store_instance_put(c->l->store, i, error);
}

/* CPU and memory change with every report: they are kept in memory only (loop_instance_usage),
 * with the last LOOP_USAGE_SAMPLES reports, by service id (sid: the job_id resolved, which an
 * Oakestra-format cluster may give as a job name). */
static void note_usage(Ctx *c, const char *cid, const char *sid, const LoopObservation *o) {
  ClusterView *cv = view_of(c->l, cid);
  if (cv == NULL || sid == NULL || !(o->has_cpu || o->has_memory))
    return;
  if (cv->usage == NULL)
    cv->usage = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  g_autofree char *key = g_strdup_printf("%s/%" G_GINT64_FORMAT, sid, o->instance);
  LoopUsage *u = g_hash_table_lookup(cv->usage, key);
  if (u == NULL) {
    u = g_new0(LoopUsage, 1);
    g_hash_table_insert(cv->usage, g_steal_pointer(&key), u);
  }
  u->round = cv->usage_round;
  u->cpu = o->has_cpu ? o->cpu : 0;
  u->memory = o->has_memory ? o->memory : 0;
  LoopUsageSample *s = &u->samples[(u->first + u->count) % LOOP_USAGE_SAMPLES];
  if (u->count == LOOP_USAGE_SAMPLES)
    u->first = (u->first + 1) % LOOP_USAGE_SAMPLES;
  else
    u->count++;
  s->cpu = u->cpu;
  s->memory = u->memory;
  s->at_ms = g_get_real_time() / 1000;
}

const LoopUsage *loop_instance_usage(Loop *l, const char *cid, const char *sid, gint64 n) {
  ClusterView *cv = view_of(l, cid);
  g_autofree char *key = g_strdup_printf("%s/%" G_GINT64_FORMAT, sid, n);
  return cv && cv->usage ? g_hash_table_lookup(cv->usage, key) : NULL;
}

static gboolean usage_stale(gpointer key, gpointer value, gpointer round) {
  return ((LoopUsage *)value)->round != GPOINTER_TO_UINT(round);
}

/* One entry of a status report or of an aggregate's instances list. */
static gboolean observe(Ctx *c, const char *cid, const LoopObservation *o, gboolean full_state,
                        GError **error) {
  g_autofree char *sid = store_service_resolve(c->l->store, o->job_id);
  note_usage(c, cid, sid, o);
  g_autoptr(StoreInstance) i = sid ? store_instance_get(c->l->store, sid, o->instance) : NULL;
  if (i != NULL && !i->deleting && strcmp(i->cluster_id, cid) == 0) {
    if (o->generation == 0 || o->generation == i->generation)
      return apply(c, i, cid, o, error);
    if (o->generation < i->generation && full_state && settled(c, i, cid))
      return deploy_again(c, i, "the cluster holds an older generation", error);
    g_autofree char *key = instance_name(c, i->service_id, i->number);
    g_autofree char *got = g_strdup_printf("%" G_GINT64_FORMAT, o->generation);
    g_autofree char *held = g_strdup_printf("%" G_GINT64_FORMAT, i->generation);
    od_log(G_LOG_LEVEL_INFO, "stale", "instance", key, "cluster", cid, "generation", got, "held", held, "msg",
           "ignored: not the generation the root holds", NULL);
    return TRUE;
  }
  if (i != NULL && !i->deleting && full_state && strcmp(i->moved_from, cid) == 0 &&
      o->generation == i->moved_generation)
    return came_back(c, i, cid, o, error);
  return unwanted(c, cid, sid, o, error);
}

/* ---- the pass: decisions, then requests ---- */

static void deploy_done(gpointer data, const LinkResult *res);
static void delete_done(gpointer data, const LinkResult *res);

typedef struct {
  Loop *l;
  char *cid, *sid, *key;
  gint64 n, generation, delete_id;
} Call;

static void call_free(Call *k) {
  g_hash_table_remove(k->l->inflight, k->key);
  g_free(k->cid);
  g_free(k->sid);
  g_free(k->key);
  g_free(k);
}

static Call *call_new(Loop *l, const char *cid, const char *sid, gint64 n) {
  Call *k = g_new0(Call, 1);
  k->l = l;
  k->cid = g_strdup(cid);
  k->sid = g_strdup(sid);
  k->n = n;
  k->key = inflight_key(cid, sid, n);
  g_hash_table_add(l->inflight, g_strdup(k->key));
  return k;
}

static void send_deploys(Loop *l, gint64 now) {
  g_autoptr(GPtrArray) pending = store_instances_deploy_pending(l->store);
  for (guint k = 0; k < pending->len; k++) {
    StoreInstance *i = pending->pdata[k];
    g_autofree char *key = inflight_key(i->cluster_id, i->service_id, i->number);
    if (i->deploy_next_at > now || g_hash_table_contains(l->inflight, key) ||
        !view_active(l, view_of(l, i->cluster_id), now))
      continue;
    g_autoptr(StoreService) sv = store_service_get(l->store, i->service_id);
    g_autoptr(StoreCluster) cl = store_cluster_get(l->store, i->cluster_id);
    if (sv == NULL || cl == NULL)
      continue;
    g_autofree char *job = view_job(l->r, sv, i->revision, i->number, i->generation);
    if (job == NULL)
      continue;
    Call *call = call_new(l, i->cluster_id, i->service_id, i->number);
    call->generation = i->generation;
    g_autofree char *bearer = pki_cluster_bearer(l->r, cl);
    link_deploy(l->r->link, cl->url, bearer, i->service_id, i->number, job, deploy_done, call);
  }
}

static void send_deletes(Loop *l, gint64 now) {
  g_autoptr(GPtrArray) all = store_deletes_all(l->store);
  for (guint k = 0; k < all->len; k++) {
    StoreDelete *d = all->pdata[k];
    g_autofree char *key = inflight_key(d->cluster_id, d->service_id, d->number);
    /* A silent cluster gets its deletes when it is back (rule 3). */
    if (d->next_at > now || g_hash_table_contains(l->inflight, key) ||
        !view_active(l, view_of(l, d->cluster_id), now))
      continue;
    g_autoptr(StoreCluster) cl = store_cluster_get(l->store, d->cluster_id);
    if (cl == NULL)
      continue;
    Call *call = call_new(l, d->cluster_id, d->service_id, d->number);
    call->generation = d->generation;
    call->delete_id = d->id;
    g_autofree char *bearer = pki_cluster_bearer(l->r, cl);
    link_delete(l->r->link, cl->url, bearer, d->service_id, d->number, d->generation, delete_done, call);
  }
}

/* Runs fn inside a transaction with a fresh context; logs and rolls back on failure. */
static gboolean in_transaction(Loop *l, gboolean (*fn)(Ctx *, gpointer, GError **), gpointer data,
                               GError **error) {
  Ctx c;
  ctx_init(&c, l);
  g_autoptr(GError) local = NULL;
  gboolean ok = store_begin(l->store, &local) && fn(&c, data, &local) && store_commit(l->store, &local);
  ctx_clear(&c);
  if (!ok) {
    store_rollback(l->store);
    od_log(G_LOG_LEVEL_WARNING, "loop", "msg", local ? local->message : "database error", NULL);
    if (error != NULL)
      g_propagate_error(error, g_steal_pointer(&local));
  }
  loop_kick(l);
  return ok;
}

static gboolean decide(Ctx *c, gpointer data, GError **error) {
  Loop *l = c->l;
  if (!store_refusals_expire(l->store, c->now, error) ||
      !store_join_tokens_expire(l->store, c->now / 1000, error))
    return FALSE;
  g_autoptr(GPtrArray) unplaced = store_instances_unplaced(l->store);
  for (guint k = 0; k < unplaced->len; k++) {
    StoreInstance *i = unplaced->pdata[k];
    if ((l->placement_due || i->next_try_at <= c->now) && !place_unplaced(c, i, error))
      return FALSE;
  }
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, l->clusters);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    ClusterView *cv = v;
    if (view_active(l, cv, c->now))
      continue;
    g_autoptr(GPtrArray) held = store_instances_on_cluster(l->store, cv->id);
    for (guint k = 0; k < held->len; k++) {
      StoreInstance *i = held->pdata[k];
      if (l->placement_due)
        i->next_try_at = 0;
      if (!i->deleting && !try_move(c, i, cv, error))
        return FALSE;
    }
  }
  l->placement_due = FALSE;
  return TRUE;
}

static void pass(Loop *l) {
  Ctx c;
  ctx_init(&c, l);
  g_autoptr(GError) error = NULL;
  if (!store_begin(l->store, &error) || !decide(&c, NULL, &error) || !store_commit(l->store, &error)) {
    store_rollback(l->store);
    od_log(G_LOG_LEVEL_WARNING, "loop", "msg", error ? error->message : "database error", NULL);
  }
  ctx_clear(&c);
  gint64 now = root_now_ms();
  send_deploys(l, now);
  send_deletes(l, now);
}

static gboolean on_idle(gpointer data) {
  Loop *l = data;
  l->idle = 0;
  pass(l);
  return G_SOURCE_REMOVE;
}

static gboolean on_timer(gpointer data) {
  pass(data);
  return G_SOURCE_CONTINUE;
}

void loop_kick(Loop *l) {
  if (l->idle == 0 && l->timer != 0)
    l->idle = g_idle_add_full(G_PRIORITY_DEFAULT, on_idle, l, NULL);
}

/* ---- outcomes of requests ---- */

typedef struct {
  Call *call;
  const LinkResult *res;
} Outcome;

/* 1, 2, 4 ... 60 s between attempts of a request to a cluster. */
static gint64 retry_delay_ms(gint64 attempts) {
  return MIN((gint64)1000 << MIN(attempts - 1, 6), 60000);
}

/* A deploy without a usable answer (no connection, 5xx, 408, 429) is tried again with backoff;
 * after forward_max_attempts the cluster counts as refusing it (a copy may have arrived: deleted). */
static gboolean deploy_unanswered(Ctx *c, StoreInstance *i, const char *cid, const char *name,
                                  const char *why, GError **error) {
  gboolean give_up = ++i->deploy_attempts >= c->l->r->cfg.forward_max_attempts;
  od_log(G_LOG_LEVEL_WARNING, "forward", "method", "POST", "instance", name, "cluster", cid, "result",
         give_up ? "abandoned" : "retrying", "msg", why, NULL);
  if (give_up) {
    g_autofree char *reason = g_strdup_printf("deploy request failed: %s", why);
    return give_back(c, i, cid, REFUSAL_CAPACITY, reason, TRUE, error);
  }
  i->deploy_next_at = c->now + retry_delay_ms(i->deploy_attempts);
  replace(&i->deploy_error, why);
  return store_instance_put(c->l->store, i, error);
}

static gboolean deploy_outcome(Ctx *c, gpointer data, GError **error) {
  Outcome *o = data;
  Call *k = o->call;
  const LinkResult *res = o->res;
  g_autoptr(StoreInstance) i = store_instance_get(c->l->store, k->sid, k->n);
  /* Only the answer about the copy the root wants now counts. */
  if (i == NULL || i->deleting || strcmp(i->cluster_id, k->cid) != 0 || i->generation != k->generation)
    return TRUE;
  g_autofree char *name = instance_name(c, k->sid, k->n);
  switch (res->outcome) {
  case LINK_DONE:
    od_log(G_LOG_LEVEL_INFO, "forward", "method", "POST", "instance", name, "cluster", k->cid, "result",
           "delivered", NULL);
    if (!i->deploy_pending)
      return TRUE;
    i->deploy_pending = FALSE;
    i->deploy_attempts = 0;
    i->deploy_done_at = c->now;
    replace(&i->deploy_error, "");
    return store_instance_put(c->l->store, i, error);
  case LINK_REFUSED: {
    LoopObservation obs = {.status = res->refusal, .status_detail = res->detail};
    g_autofree char *reason = refusal_reason(&obs);
    return give_back(c, i, k->cid,
                     res->refusal == OAKUK_STATUS_NO_WORKER_CAPACITY ? REFUSAL_CAPACITY : REFUSAL_UNQUALIFIED,
                     reason, FALSE, error);
  }
  case LINK_RETRY: return deploy_unanswered(c, i, k->cid, name, res->why, error);
  default: {
    od_log(G_LOG_LEVEL_WARNING, "forward", "method", "POST", "instance", name, "cluster", k->cid, "result",
           "refused", "msg", res->why, NULL);
    g_autofree char *reason = g_strdup_printf("deploy refused: %s", res->why);
    return give_back(c, i, k->cid, REFUSAL_UNQUALIFIED, reason, FALSE, error);
  }
  }
}

static void deploy_done(gpointer data, const LinkResult *res) {
  Call *k = data;
  Outcome o = {k, res};
  in_transaction(k->l, deploy_outcome, &o, NULL);
  call_free(k);
}

static gboolean delete_outcome(Ctx *c, gpointer data, GError **error) {
  Outcome *o = data;
  g_autoptr(StoreDelete) d = store_delete_get(c->l->store, o->call->delete_id);
  if (d == NULL)
    return TRUE;
  switch (o->res->outcome) {
  case LINK_DONE: return finish_delete(c, d, "confirmed by the cluster", error);
  case LINK_GONE: return finish_delete(c, d, "the cluster does not have it", error);
  case LINK_STALE: return finish_delete(c, d, "the cluster holds a newer generation", error);
  case LINK_RETRY: {
    gint64 attempts = d->attempts + 1;
    od_log(G_LOG_LEVEL_WARNING, "forward", "method", "DELETE", "cluster", d->cluster_id, "result", "retrying",
           "msg", o->res->why, NULL);
    return store_delete_retry(c->l->store, d->id, attempts, c->now + retry_delay_ms(attempts), o->res->why,
                              error);
  }
  default: {
    g_autofree char *how = g_strdup_printf("abandoned: %s", o->res->why);
    od_log(G_LOG_LEVEL_WARNING, "forward", "method", "DELETE", "cluster", d->cluster_id, "result",
           "abandoned", "msg", o->res->why, NULL);
    return finish_delete(c, d, how, error);
  }
  }
}

static void delete_done(gpointer data, const LinkResult *res) {
  Call *k = data;
  Outcome o = {k, res};
  in_transaction(k->l, delete_outcome, &o, NULL);
  call_free(k);
}

/* ---- the user API's changes ---- */

typedef struct {
  const char *sid;
  gint64 n;
  StoreInstance *out;
  gboolean removed;
  const char *app_id;
  const char *cid;
} Args;

static gboolean create_fn(Ctx *c, gpointer data, GError **error) {
  Args *a = data;
  gint64 n = 0;
  if (!store_service_take_number(c->l->store, a->sid, &n, error))
    return FALSE;
  StoreService *sv = ctx_service(c, a->sid);
  StoreInstance *i = store_instance_new(a->sid, n);
  i->revision = sv ? sv->revision : 1; /* new instances run the current spec */
  /* ready_ms is measured from this moment, also across moves and restarts of the instance */
  i->requested_at = c->now;
  a->out = i;
  return place_unplaced(c, i, error);
}

StoreInstance *loop_instance_create(Loop *l, const char *sid, GError **error) {
  Args a = {.sid = sid};
  if (!in_transaction(l, create_fn, &a, error)) {
    store_instance_free(a.out);
    return NULL;
  }
  return a.out;
}

/* Rule 1: the instance stays (desired: delete) until its cluster confirms the removal. */
static gboolean delete_instance(Ctx *c, StoreInstance *i, gboolean *removed, GError **error) {
  forget_reservation(c, i);
  *removed = FALSE;
  if (i->deleting)
    return TRUE;
  if (*i->cluster_id == '\0') {
    *removed = TRUE;
    return store_instance_delete(c->l->store, i->service_id, i->number, error);
  }
  if (!store_delete_add(c->l->store, i->cluster_id, i->service_id, i->number, i->generation,
                        i->deploy_done_at, c->now, error))
    return FALSE;
  i->deleting = TRUE;
  i->deploy_pending = FALSE;
  replace(&i->note, "");
  g_autofree char *detail = g_strdup_printf("waiting for cluster %s to confirm the removal", i->cluster_id);
  return set_status(c, i, OAKUK_STATUS_UNDEPLOYED, detail, error) &&
         store_instance_put(c->l->store, i, error);
}

static gboolean delete_fn(Ctx *c, gpointer data, GError **error) {
  Args *a = data;
  g_autoptr(StoreInstance) i = store_instance_get(c->l->store, a->sid, a->n);
  if (i == NULL) {
    a->removed = TRUE;
    return TRUE;
  }
  return delete_instance(c, i, &a->removed, error);
}

gboolean loop_instance_delete(Loop *l, const char *sid, gint64 n, gboolean *removed, GError **error) {
  Args a = {.sid = sid, .n = n};
  gboolean ok = in_transaction(l, delete_fn, &a, error);
  *removed = a.removed;
  return ok;
}

/* Every copy of the service's instances gets a DELETE that outlives the service's rows. */
static gboolean drop_service(Ctx *c, const char *sid, GError **error) {
  g_autoptr(GPtrArray) all = store_instances_of_service(c->l->store, sid);
  for (guint k = 0; k < all->len; k++) {
    StoreInstance *i = all->pdata[k];
    forget_reservation(c, i);
    if (*i->cluster_id && !store_delete_add(c->l->store, i->cluster_id, sid, i->number, i->generation,
                                            i->deploy_done_at, c->now, error))
      return FALSE;
  }
  return store_service_delete(c->l->store, sid, error);
}

static gboolean service_delete_fn(Ctx *c, gpointer data, GError **error) {
  Args *a = data;
  g_autoptr(StoreService) sv = store_service_get(c->l->store, a->sid);
  if (sv == NULL)
    return TRUE;
  if (!drop_service(c, a->sid, error))
    return FALSE;
  g_autoptr(StoreApplication) app = store_application_get(c->l->store, sv->app_id);
  g_autoptr(JsonObject) doc = app ? view_parse_object(app->doc) : NULL;
  JsonNode *ids = doc ? json_object_get_member(doc, "microservices") : NULL;
  if (ids == NULL || !JSON_NODE_HOLDS_ARRAY(ids))
    return TRUE;
  JsonArray *arr = json_node_get_array(ids);
  for (guint k = 0; k < json_array_get_length(arr); k++)
    if (g_strcmp0(json_array_get_string_element(arr, k), a->sid) == 0)
      json_array_remove_element(arr, k--);
  g_autofree char *text = view_object_text(doc);
  return store_application_set_doc(c->l->store, sv->app_id, text, error);
}

gboolean loop_service_delete(Loop *l, const char *sid, GError **error) {
  Args a = {.sid = sid};
  return in_transaction(l, service_delete_fn, &a, error);
}

static gboolean app_delete_fn(Ctx *c, gpointer data, GError **error) {
  Args *a = data;
  g_autoptr(GPtrArray) services = store_services_of_app(c->l->store, a->app_id);
  for (guint k = 0; k < services->len; k++)
    if (!drop_service(c, ((StoreService *)services->pdata[k])->id, error))
      return FALSE;
  return store_application_delete(c->l->store, a->app_id, error);
}

gboolean loop_application_delete(Loop *l, const char *app_id, GError **error) {
  Args a = {.app_id = app_id};
  return in_transaction(l, app_delete_fn, &a, error);
}

static gboolean cluster_remove_fn(Ctx *c, gpointer data, GError **error) {
  Args *a = data;
  ClusterView *cv = view_of(c->l, a->cid);
  g_autofree char *name = g_strdup(cv ? cv->name : a->cid);
  /* Out of the candidates before anything is placed again. */
  g_hash_table_remove(c->l->clusters, a->cid);
  g_autoptr(GPtrArray) held = store_instances_on_cluster(c->l->store, a->cid);
  for (guint k = 0; k < held->len; k++) {
    StoreInstance *i = held->pdata[k];
    if (i->deleting) {
      forget_reservation(c, i);
      if (!store_instance_delete(c->l->store, i->service_id, i->number, error))
        return FALSE;
      continue;
    }
    unassign(c, i);
    g_autofree char *note = g_strdup_printf("cluster %s was removed", name);
    replace(&i->note, note);
    if (!place_unplaced(c, i, error))
      return FALSE;
  }
  g_autoptr(GPtrArray) moved = store_instances_moved_from(c->l->store, a->cid);
  for (guint k = 0; k < moved->len; k++) {
    StoreInstance *i = moved->pdata[k];
    replace(&i->moved_from, "");
    i->moved_generation = 0;
    if (!store_instance_put(c->l->store, i, error))
      return FALSE;
  }
  od_log(G_LOG_LEVEL_MESSAGE, "cluster-remove", "cluster", a->cid, "name", name, NULL);
  return store_cluster_delete(c->l->store, a->cid, error);
}

gboolean loop_cluster_remove(Loop *l, const char *cid, GError **error) {
  Args a = {.cid = cid};
  return in_transaction(l, cluster_remove_fn, &a, error);
}

/* ---- what clusters send ---- */

typedef struct {
  const char *id, *name, *location, *url, *cred_salt, *cred_hash, *consumed;
  char *subnet;
  gboolean exhausted;
} Registration;

/* The lowest per-cluster share of the node pool no cluster holds. */
static gboolean new_cluster(Ctx *c, Registration *g, GError **error) {
  RootConfig *cfg = &c->l->r->cfg;
  gint64 idx =
      store_cluster_free_subnet_index(c->l->store, (gint64)1 << (cfg->cluster_prefix - cfg->pool_prefix));
  if (idx < 0) {
    g->exhausted = TRUE;
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "every /%u of the node pool is taken; remove a cluster first", cfg->cluster_prefix);
    return FALSE;
  }
  guint32 net = g_htonl(cfg->pool_base + (guint32)((guint64)idx << (32 - cfg->cluster_prefix)));
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &net, buf, sizeof buf);
  g->subnet = g_strdup_printf("%s/%u", buf, cfg->cluster_prefix);
  StoreCluster row = {.id = (char *)g->id,
                      .name = (char *)g->name,
                      .location = (char *)g->location,
                      .url = (char *)g->url,
                      .cred_salt = (char *)g->cred_salt,
                      .cred_hash = (char *)g->cred_hash,
                      .subnet = g->subnet,
                      .subnet_index = idx,
                      .registered_at = c->now};
  return store_cluster_insert(c->l->store, &row, error);
}

static gboolean register_fn(Ctx *c, gpointer data, GError **error) {
  Registration *g = data;
  g_autoptr(StoreCluster) known = store_cluster_get(c->l->store, g->id);
  if (known == NULL && !new_cluster(c, g, error))
    return FALSE;
  if (known != NULL)
    g->subnet = g_strdup(known->subnet);
  if (!store_cluster_update_link(c->l->store, g->id, g->url, g->location, g->cred_salt, g->cred_hash,
                                 error) ||
      (g->consumed != NULL && !store_join_token_consume(c->l->store, g->consumed, error)))
    return FALSE;
  if (view_of(c->l, g->id) == NULL) {
    ClusterView *v = g_new0(ClusterView, 1);
    v->id = g_strdup(g->id);
    v->name = g_strdup(g->name);
    v->received_at = c->now;
    g_hash_table_replace(c->l->clusters, v->id, v);
  }
  return TRUE;
}

gboolean loop_cluster_register(Loop *l, const char *id, const char *name, const char *location,
                               const char *url, const char *cred_salt, const char *cred_hash,
                               const char *consumed, char **subnet, gboolean *exhausted, GError **error) {
  Registration g = {id, name, location, url, cred_salt, cred_hash, consumed, NULL, FALSE};
  gboolean ok = in_transaction(l, register_fn, &g, error);
  *exhausted = g.exhausted;
  *subnet = g.subnet;
  return ok;
}

typedef struct {
  const char *cid;
  const LoopObservation *obs;
  guint n;
  gboolean full_state; /* obs is every instance the cluster holds */
  LoopAggregate *agg;
} Report;

static gboolean report_fn(Ctx *c, gpointer data, GError **error) {
  Report *rp = data;
  for (guint k = 0; k < rp->n; k++)
    if (!observe(c, rp->cid, &rp->obs[k], FALSE, error))
      return FALSE;
  return TRUE;
}

gboolean loop_status_report(Loop *l, const char *cid, const LoopObservation *obs, guint n, GError **error) {
  Report rp = {.cid = cid, .obs = obs, .n = n};
  return in_transaction(l, report_fn, &rp, error);
}

/* Whether the aggregate shows what the instance needs: a node (of those the cluster listed as
 * active) that node selection accepts, or without a node list, room in the cluster's totals. */
static gboolean shows_room(Ctx *c, ClusterView *cv, const StoreRefusal *r) {
  oakuk_microservice *ms = ctx_ms(c, r->service_id, 0);
  if (ms == NULL || r->kind == REFUSAL_FAILED || r->since >= cv->received_at)
    return FALSE;
  oakuk_placement *p = NULL;
  oakuk_error *err = NULL;
  int rc;
  if (cv->agg->has_nodes) {
    rc = oakuk_sched_select_node(&p, ms, (oakuk_node_report *const *)cv->agg->active_nodes->pdata,
                                 cv->agg->active_nodes->len, NULL, NULL, NULL, &err);
  } else {
    if (r->kind != REFUSAL_CAPACITY)
      return FALSE;
    rc = oakuk_sched_select_cluster(&p, ms, &cv->agg->agg, 1, NULL, NULL, NULL, &err);
  }
  oakuk_error_free(err);
  gboolean ok = rc == 0 && p != NULL && oakuk_placement_ok(p);
  oakuk_placement_unref(p);
  return ok;
}

/* The aggregate's instances list is the cluster's full state (rule 4, "Messages"). */
static gboolean reconcile(Ctx *c, const Report *rp, GError **error) {
  g_autoptr(GHashTable) listed = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  for (guint k = 0; k < rp->n; k++) {
    const LoopObservation *o = &rp->obs[k];
    if (!observe(c, rp->cid, o, TRUE, error))
      return FALSE;
    g_autofree char *sid = store_service_resolve(c->l->store, o->job_id);
    g_hash_table_add(listed, inflight_key(rp->cid, sid ? sid : o->job_id, o->instance));
  }
  g_autoptr(GPtrArray) held = store_instances_on_cluster(c->l->store, rp->cid);
  for (guint k = 0; k < held->len; k++) {
    StoreInstance *i = held->pdata[k];
    g_autofree char *key = inflight_key(rp->cid, i->service_id, i->number);
    if (!i->deleting && !g_hash_table_contains(listed, key) && settled(c, i, rp->cid) &&
        !deploy_again(c, i, "the cluster's aggregate does not list it", error))
      return FALSE;
  }
  g_autoptr(GPtrArray) deletes = store_deletes_of_cluster(c->l->store, rp->cid);
  for (guint k = 0; k < deletes->len; k++) {
    StoreDelete *d = deletes->pdata[k];
    g_autofree char *key = inflight_key(rp->cid, d->service_id, d->number);
    if (!g_hash_table_contains(listed, key) && !g_hash_table_contains(c->l->inflight, key) &&
        c->now - MAX(d->last_deploy_at, d->created_at) > LOOP_GRACE_MS &&
        !finish_delete(c, d, "the cluster's aggregate no longer lists it", error))
      return FALSE;
  }
  return TRUE;
}

static gboolean aggregate_fn(Ctx *c, gpointer data, GError **error) {
  Report *rp = data;
  ClusterView *cv = view_of(c->l, rp->cid);
  g_autoptr(StoreCluster) row = store_cluster_get(c->l->store, rp->cid);
  if (row == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "cluster %s is not registered", rp->cid);
    return FALSE;
  }
  if (!store_cluster_set_aggregate(c->l->store, rp->cid, rp->agg->stored, c->now, error))
    return FALSE;
  if (cv == NULL) {
    cv = g_new0(ClusterView, 1);
    cv->id = g_strdup(rp->cid);
    cv->name = g_strdup(row->name);
    g_hash_table_replace(c->l->clusters, cv->id, cv);
  }
  oakuk_cluster_aggregate_set_identity(rp->agg->agg, rp->cid, cv->name);
  oakuk_cluster_aggregate_set_received_at_ms(rp->agg->agg, c->now);
  loop_aggregate_free(cv->agg);
  cv->agg = g_steal_pointer(&rp->agg);
  cv->received_at = c->now;
  /* A refusal ends when the refusing cluster shows room for the instance. */
  g_autoptr(GPtrArray) refusals = store_refusals_by_cluster(c->l->store, rp->cid, c->now);
  for (guint k = 0; k < refusals->len; k++) {
    StoreRefusal *r = refusals->pdata[k];
    if (shows_room(c, cv, r) &&
        !store_refusal_drop(c->l->store, r->service_id, r->number, r->cluster_id, error))
      return FALSE;
  }
  if (rp->full_state)
    cv->usage_round++;
  if (rp->full_state && !reconcile(c, rp, error))
    return FALSE;
  if (rp->full_state && cv->usage != NULL) /* instances it no longer holds have none */
    g_hash_table_foreach_remove(cv->usage, usage_stale, GUINT_TO_POINTER(cv->usage_round));
  /* New capacity: every unplaced instance is tried at once (in the pass this kicks). */
  c->l->placement_due = TRUE;
  return TRUE;
}

gboolean loop_aggregate(Loop *l, const char *cid, LoopAggregate *agg, const LoopObservation *instances,
                        gssize n_instances, GError **error) {
  Report rp = {
      .cid = cid, .obs = instances, .n = MAX(n_instances, 0), .full_state = n_instances >= 0, .agg = agg};
  gboolean ok = in_transaction(l, aggregate_fn, &rp, error);
  loop_aggregate_free(rp.agg); /* still here when the transaction failed */
  return ok;
}

/* ---- life ---- */

Loop *loop_new(Root *r) {
  Loop *l = g_new0(Loop, 1);
  l->r = r;
  l->store = r->store;
  l->clusters = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, (GDestroyNotify)view_free);
  l->reservations = oakuk_reservations_new();
  l->inflight = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  return l;
}

void loop_free(Loop *l) {
  if (l == NULL)
    return;
  g_clear_handle_id(&l->timer, g_source_remove);
  g_clear_handle_id(&l->idle, g_source_remove);
  g_hash_table_unref(l->clusters);
  oakuk_reservations_unref(l->reservations);
  g_hash_table_unref(l->inflight);
  g_free(l);
}

void loop_load_cluster(Loop *l, const char *id, const char *name, LoopAggregate *agg, gint64 received_at) {
  ClusterView *v = g_new0(ClusterView, 1);
  v->id = g_strdup(id);
  v->name = g_strdup(name);
  /* A restarted root gives every cluster one timeout from its own start before calling it silent,
   * so a root restart alone never moves instances. */
  v->received_at = MAX(received_at, l->r->started_ms);
  v->agg = agg;
  if (agg != NULL) {
    oakuk_cluster_aggregate_set_identity(agg->agg, id, name);
    oakuk_cluster_aggregate_set_received_at_ms(agg->agg, v->received_at);
  }
  g_hash_table_replace(l->clusters, v->id, v);
}

void loop_start(Loop *l) {
  Ctx c;
  ctx_init(&c, l);
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, l->clusters);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    g_autoptr(GPtrArray) held = store_instances_on_cluster(l->store, ((ClusterView *)v)->id);
    for (guint k = 0; k < held->len; k++) {
      StoreInstance *i = held->pdata[k];
      oakuk_microservice *ms = ctx_ms(&c, i->service_id, i->revision);
      if (i->deleting || !status_in_flight(i->status) || ms == NULL)
        continue;
      g_autofree char *key = instance_name(&c, i->service_id, i->number);
      oakuk_reservations_add(l->reservations, key, i->cluster_id, oakuk_microservice_vcpus(ms),
                             oakuk_microservice_memory_mb(ms));
    }
  }
  ctx_clear(&c);
  l->timer = g_timeout_add_seconds(1, on_timer, l);
  loop_kick(l);
}

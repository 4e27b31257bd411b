/* The cluster's control loop: every decision about where instances run (docs/reconcile.md,
 * "Cluster, for each instance"; docs/cluster.md, "Instance lifecycle at the cluster").
 *
 * Desired state is what the root deployed (instances, with the root's generation); the cluster's
 * own decisions are the node each instance is assigned to, with a node generation raised on every
 * (re)placement, and the old copies nodes must drop. Observed state is the nodes' reports (their
 * full state) and status events. The loop acts on every change and every second: it places, moves
 * instances off nodes silent for longer than their reschedule_after_s, re-adopts what a returning
 * node still runs, moves what FAILED, drains and removes nodes. Adapters hand it typed input. */
#include "loop.h"

#include <arpa/inet.h>
#include <string.h>

#define LOOP_INTERVAL_MS 1000
/* How often the nodes' last reports are saved (and at a stop): not at each report, which cost one
 * synced SQLite commit per report (docs/cluster.md). */
#define REPORT_SAVE_MS 10000
#define EXTRA_DELETE_COOLDOWN_MS 10000
#define RETRY_MAX_MS 30000

/* A decision that found no way yet (a move with no node to go to) is tried again after 1, 2, 4 ...
 * 30 s, not on every turn: each try runs node selection and stores its explanation. */
typedef struct {
  gint64 at;    /* monotonic ms */
  gint64 delay; /* ms */
} Retry;

static gboolean status_active(int32_t s) {
  return s == OAKUK_STATUS_CLUSTER_SCHEDULED || s == OAKUK_STATUS_NODE_SCHEDULED ||
         s == OAKUK_STATUS_CREATING || s == OAKUK_STATUS_RUNNING;
}

static gboolean status_ended(int32_t s) {
  return s == OAKUK_STATUS_FAILED || s == OAKUK_STATUS_DEAD || s == OAKUK_STATUS_COMPLETED;
}

static void set_str(char **field, const char *value) {
  char *old = *field;
  *field = g_strdup(value ? value : "");
  g_free(old);
}

static char *gen_text(gint64 g) {
  return g_strdup_printf("%" G_GINT64_FORMAT, g);
}

void loop_deploy_answer_clear(LoopDeployAnswer *a) {
  g_clear_pointer(&a->instance, g_free);
  g_clear_pointer(&a->detail, g_free);
  g_clear_pointer(&a->node, g_free);
}

/* ---- subnets and addresses ---- */

char *loop_node_subnet(Cluster *c, gint64 index) {
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

/* The next host address of the node's /24 (.2 .. .254; .1 is the node's bridge) that no instance
 * or old copy on it holds, going round from the last one handed out: an address freed by an
 * undeploy is reused last, so a new instance does not get it while the node may still be tearing
 * the old one down. */
static char *allocate_ip(Cluster *c, const char *node, const char *subnet) {
  g_auto(GStrv) parts = g_strsplit(subnet ? subnet : "", "/", 2);
  guint32 addr = 0;
  if (parts[0] == NULL || inet_pton(AF_INET, parts[0], &addr) != 1)
    return g_strdup("");
  guint32 base = g_ntohl(addr);
  g_autofree char *key = g_strdup_printf("last_ip:%s", node);
  g_autofree char *last_text = store_kv_get(c->store, key);
  guint64 last = 1;
  if (last_text == NULL || !g_ascii_string_to_unsigned(last_text, 10, 1, 254, &last, NULL))
    last = 1;
  for (guint32 k = 1; k <= 253; k++) {
    guint32 h = 2 + (guint32)((last - 2 + k + 253) % 253);
    guint32 a = g_htonl(base + h);
    char buf[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &a, buf, sizeof buf);
    if (!store_ip_in_use(c->store, node, buf)) {
      g_autofree char *h_text = g_strdup_printf("%u", h);
      store_kv_set(c->store, key, h_text, NULL);
      return g_strdup(buf);
    }
  }
  return g_strdup("");
}

/* ---- node selection ---- */

static char *placement_json(const oakuk_placement *p) {
  g_autoptr(JsonObject) pl = json_object_new();
  json_object_set_string_member(pl, "virtualization", oakuk_virt_name(oakuk_placement_virt(p)));
  if (oakuk_placement_arch(p) != NULL)
    json_object_set_string_member(pl, "arch", oakuk_placement_arch(p));
  json_object_set_string_member(pl, "code", oakuk_placement_code(p) ? oakuk_placement_code(p) : "");
  if (oakuk_placement_code_sha256(p) != NULL)
    json_object_set_string_member(pl, "code_sha256", oakuk_placement_code_sha256(p));
  if (oakuk_accel_name(oakuk_placement_accel(p)) != NULL)
    json_object_set_string_member(pl, "accel", oakuk_accel_name(oakuk_placement_accel(p)));
  g_autoptr(JsonNode) n = json_node_init_object(json_node_alloc(), pl);
  return od_json_to_string(n, FALSE);
}

static gboolean store_lines(Cluster *c, const StoreInstance *i, GPtrArray *lines, GError **error) {
  g_autoptr(JsonArray) a = json_array_new();
  for (guint k = 0; k < lines->len; k++)
    json_array_add_string_element(a, lines->pdata[k]);
  g_autoptr(JsonNode) node = json_node_init_array(json_node_alloc(), a);
  g_autofree char *text = od_json_to_string(node, FALSE);
  return store_explanation_set(c->store, i->job_id, i->job_name, i->number, text, error);
}

/* Runs node selection for i over every variant of its job and the nodes it may use now: active
 * (the scheduler's timeout), not drained, not avoided, not exclude. Returns the placement (NULL
 * only on an internal error) and fills lines with the explanation, also stored for `explain`. */
static oakuk_placement *select_node(Cluster *c, const StoreInstance *i, const char *exclude, GPtrArray *lines,
                                    GError **error) {
  g_autoptr(GPtrArray) cands = g_ptr_array_new();
  gint64 wall = cluster_wall_ms();
  g_autoptr(GHashTable) avoid = store_avoid_get(c->store, i->name, wall);
  g_autoptr(GPtrArray) nodes = store_node_list(c->store);
  for (guint k = 0; k < nodes->len; k++) {
    StoreNode *n = nodes->pdata[k];
    oakuk_node_report *rep = g_hash_table_lookup(c->reports, n->id);
    gint64 *until = g_hash_table_lookup(avoid, n->id);
    if (rep == NULL)
      continue;
    if (g_strcmp0(exclude, n->id) == 0)
      g_ptr_array_add(lines, g_strdup_printf("node %s: the instance is being moved off it", n->id));
    else if (n->drained)
      g_ptr_array_add(lines, g_strdup_printf("node %s: drained (takes nothing new)", n->id));
    else if (until != NULL)
      g_ptr_array_add(lines, g_strdup_printf("node %s: avoided for %" G_GINT64_FORMAT
                                             " s more (the instance FAILED there)",
                                             n->id, (*until - wall + 999) / 1000));
    else
      g_ptr_array_add(cands, rep);
  }
  oakuk_microservice *ms = store_instance_service(i, error);
  if (ms == NULL)
    return NULL;
  oakuk_sched_options opts = OAKUK_SCHED_OPTIONS_INIT;
  opts.policy = c->policy;
  opts.now_ms = cluster_liveness_now_ms(c);
  opts.timeout_ms = c->node_timeout_ms;
  oakuk_placement *p = NULL;
  oakuk_error *err = NULL;
  int rc = oakuk_sched_select_node(&p, ms, (oakuk_node_report *const *)cands->pdata, cands->len,
                                   c->reservations, i->name, &opts, &err);
  oakuk_microservice_unref(ms);
  if (rc != 0 && rc != OAKUK_ENOCAPACITY) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "node selection for %s: %s", i->name,
                oakuk_error_message(err));
    oakuk_error_free(err);
    oakuk_placement_unref(p);
    return NULL;
  }
  oakuk_error_free(err);
  for (size_t k = 0; p != NULL && k < oakuk_placement_explanation_count(p); k++)
    g_ptr_array_add(lines, g_strdup(oakuk_placement_explanation(p, k)));
  if (lines->len == 0)
    g_ptr_array_add(lines, g_strdup("no node has registered and reported"));
  if (!store_lines(c, i, lines, error)) {
    oakuk_placement_unref(p);
    return NULL;
  }
  return p;
}

static int32_t refusal_code(const oakuk_placement *p) {
  return oakuk_placement_status(p) == OAKUK_STATUS_NO_WORKER_CAPACITY ? OAKUK_STATUS_NO_WORKER_CAPACITY
                                                                      : OAKUK_STATUS_NO_QUALIFIED_WORKER;
}

static char *joined(const char *prefix, GPtrArray *lines) {
  g_autoptr(GString) s = g_string_new(prefix);
  for (guint k = 0; k < lines->len; k++)
    g_string_append_printf(s, "%s%s", s->len ? "; " : "", (char *)lines->pdata[k]);
  return g_strdup(s->str);
}

/* ---- acting (all inside a transaction) ---- */

static gboolean queue_delete(Cluster *c, const char *node, const char *name, const char *job_name,
                             gint64 number, gint64 generation, GError **error) {
  g_autofree char *payload = nodelink_delete_payload(job_name, number, generation);
  return store_delivery_drop(c->store, node, name, "delete", error) &&
         store_delivery_add(c->store, node, name, "delete", payload, error);
}

/* The node's copy of i becomes an old copy: the node is told to drop it (now, or with hold once
 * the instance RUNs elsewhere; a silent node when it is back). */
static gboolean retire(Cluster *c, const StoreInstance *i, const char *kind, gboolean hold, GError **error) {
  if (i->node == NULL || *i->node == '\0')
    return TRUE;
  StoreOldCopy o = {.name = i->name,
                    .node = i->node,
                    .generation = i->node_generation,
                    .job_name = i->job_name,
                    .number = i->number,
                    .ip = i->ip,
                    .placement = i->placement,
                    .kind = (char *)kind,
                    .hold = hold,
                    .since_ms = cluster_wall_ms()};
  c->net_dirty = TRUE;
  return store_old_copy_put(c->store, &o, error) &&
         store_delivery_drop(c->store, i->node, i->name, "deploy", error) &&
         (hold || queue_delete(c, i->node, i->name, i->job_name, i->number, i->node_generation, error));
}

/* Assigns i to node with the next node generation and queues its deploy there. */
static gboolean send_to(Cluster *c, StoreInstance *i, const char *node, const char *ip, const char *placement,
                        int32_t status, const char *detail, GError **error) {
  g_autoptr(StoreNode) n = store_node_get(c->store, node);
  set_str(&i->node, node);
  set_str(&i->placement, placement);
  i->node_generation = MAX(store_node_generation_max(c->store, i->name), i->node_generation) + 1;
  if (ip != NULL)
    set_str(&i->ip, ip);
  else {
    g_free(i->ip);
    i->ip = allocate_ip(c, node, n ? n->subnet : "");
  }
  i->status = status;
  set_str(&i->detail, detail);
  i->ready = FALSE;
  i->ready_ms = -1;
  /* A copy of it the node was to drop is superseded: the newer generation replaces (or adopts) it
   * there, while a delete before the deploy would make the node ignore the deploy. */
  if (!store_old_copy_delete(c->store, i->name, node, error) ||
      !store_delivery_drop(c->store, node, i->name, "delete", error))
    return FALSE;
  g_autofree char *payload = nodelink_deploy_payload(i, n ? n->subnet : "");
  g_autofree char *gen = gen_text(i->node_generation);
  od_log(G_LOG_LEVEL_MESSAGE, "schedule", "instance", i->name, "node", node, "ip", i->ip, "node_generation",
         gen, "status", oakuk_instance_status_name(status), "msg", detail && *detail ? detail : "placed",
         NULL);
  c->net_dirty = TRUE;
  return store_instance_put(c->store, i, error) &&
         store_delivery_drop(c->store, node, i->name, "deploy", error) &&
         store_delivery_add(c->store, node, i->name, "deploy", payload, error) &&
         root_queue_status(c, i, error);
}

static gboolean assign(Cluster *c, StoreInstance *i, const oakuk_placement *p, const char *detail,
                       GError **error) {
  g_autofree char *pl = placement_json(p);
  return send_to(c, i, oakuk_placement_target(p), NULL, pl, OAKUK_STATUS_NODE_SCHEDULED, detail, error);
}

/* Stores a changed observation of i and tells the root. */
static gboolean observe(Cluster *c, StoreInstance *i, int32_t status, const char *detail, GError **error) {
  if (i->status == status && g_strcmp0(i->detail, detail) == 0)
    return TRUE;
  if (status != i->status)
    i->ready = FALSE;
  i->status = status;
  set_str(&i->detail, detail);
  c->net_dirty = TRUE;
  return store_instance_put(c->store, i, error) && root_queue_status(c, i, error);
}

/* No node can take i: the root hears why and the cluster keeps nothing (the root places it again). */
static gboolean refuse(Cluster *c, StoreInstance *i, const oakuk_placement *p, const char *prefix,
                       GPtrArray *lines, GError **error) {
  g_autofree char *detail = joined(prefix, lines);
  int32_t code = refusal_code(p);
  od_log(G_LOG_LEVEL_MESSAGE, "schedule", "instance", i->name, "status", oakuk_instance_status_name(code),
         "msg", detail, NULL);
  oakuk_reservations_remove(c->reservations, i->name);
  c->net_dirty = TRUE;
  return root_queue_refusal(c, i->job_id, i->number, i->generation, code, detail, error) &&
         store_instance_delete(c->store, i->name, error);
}

/* Wraps one decision in a transaction; logs a failure (the next turn tries again). */
typedef gboolean (*Step)(Cluster *c, StoreInstance *i, gpointer data, GError **error);

static gboolean in_transaction(Cluster *c, StoreInstance *i, Step step, gpointer data, const char *what) {
  g_autoptr(GError) error = NULL;
  if (store_begin(c->store, &error) && step(c, i, data, &error) && store_commit(c->store, &error))
    return TRUE;
  store_rollback(c->store);
  od_log(G_LOG_LEVEL_WARNING, what, "instance", i ? i->name : "", "msg", error ? error->message : "failed",
         NULL);
  return FALSE;
}

/* ---- from the root ---- */

static void answer_from(LoopDeployAnswer *a, LoopDeployOutcome outcome, const StoreInstance *i) {
  a->outcome = outcome;
  a->instance = g_strdup(i->name);
  a->status = i->status;
  a->detail = g_strdup(i->detail);
  a->node = g_strdup(i->node);
  a->generation = i->generation;
}

static gboolean place_new(Cluster *c, StoreInstance *fresh, const StoreInstance *held, LoopDeployAnswer *a,
                          GError **error) {
  if (held != NULL && !retire(c, held, "replaced", FALSE, error))
    return FALSE;
  oakuk_reservations_remove(c->reservations, fresh->name);
  g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
  oakuk_placement *p = select_node(c, fresh, NULL, lines, error);
  if (p == NULL)
    return FALSE;
  gboolean ok;
  if (oakuk_placement_ok(p)) {
    ok = assign(c, fresh, p, "", error);
    answer_from(a, LOOP_DEPLOY_PLACED, fresh);
  } else {
    ok = refuse(c, fresh, p, "", lines, error);
    answer_from(a, LOOP_DEPLOY_REFUSED, fresh);
    a->status = refusal_code(p);
    g_free(a->detail);
    a->detail = joined("", lines);
    set_str(&a->node, "");
  }
  oakuk_placement_unref(p);
  return ok;
}

gboolean loop_deploy(Cluster *c, const LoopDeploy *d, LoopDeployAnswer *a, GError **error) {
  g_autoptr(StoreInstance) held = store_instance_find(c->store, d->job_id, d->number, FALSE);
  if (held != NULL && d->generation <= held->generation) {
    answer_from(a, LOOP_DEPLOY_KEPT, held);
    return TRUE;
  }
  if (d->ms == NULL) {
    a->outcome = LOOP_DEPLOY_INVALID;
    return TRUE;
  }
  if (held != NULL && status_active(held->status) && *held->node != '\0') {
    /* The root placed it here again (its rule 4): where it runs, it goes on running. */
    held->generation = d->generation;
    g_autofree char *gen = gen_text(d->generation);
    od_log(G_LOG_LEVEL_MESSAGE, "deploy", "instance", held->name, "generation", gen, "msg",
           "newer generation of an instance held here: adopted", NULL);
    if (!store_begin(c->store, error) || !store_instance_put(c->store, held, error) ||
        !root_queue_status(c, held, error) || !store_commit(c->store, error)) {
      store_rollback(c->store);
      return FALSE;
    }
    answer_from(a, LOOP_DEPLOY_ADOPTED, held);
    loop_kick(c);
    return TRUE;
  }
  char *iname = oakuk_instance_name(oakuk_microservice_service_name(d->ms), d->number);
  StoreInstance fresh = {.name = g_strdup(iname),
                         .job_id = (char *)d->job_id,
                         .job_name = (char *)oakuk_microservice_service_name(d->ms),
                         .number = d->number,
                         .generation = d->generation,
                         .node = g_strdup(""),
                         .node_generation = held ? held->node_generation : 0,
                         .ip = g_strdup(""),
                         .placement = g_strdup("{}"),
                         .status = OAKUK_STATUS_CLUSTER_SCHEDULED,
                         .detail = g_strdup(""),
                         .ready_ms = -1,
                         .job = (char *)d->job,
                         .restart = oakuk_microservice_restart(d->ms),
                         .reschedule_after_s = oakuk_microservice_reschedule_after_s(d->ms)};
  od_oakuk_free(iname);
  gboolean ok =
      store_begin(c->store, error) && place_new(c, &fresh, held, a, error) && store_commit(c->store, error);
  if (!ok)
    store_rollback(c->store);
  char **owned[] = {&fresh.name, &fresh.node, &fresh.ip, &fresh.placement, &fresh.detail};
  for (gsize k = 0; k < G_N_ELEMENTS(owned); k++)
    g_free(*owned[k]);
  if (ok)
    loop_kick(c);
  return ok;
}

guint loop_delete(Cluster *c, const char *job_id, gint64 number, gint64 max_generation, gint64 *held,
                  GError **error) {
  g_autoptr(StoreInstance) i = store_instance_find(c->store, job_id, number, TRUE);
  if (i == NULL)
    return SOUP_STATUS_NOT_FOUND;
  *held = i->generation;
  if (max_generation >= 0 && i->generation > max_generation)
    return SOUP_STATUS_CONFLICT;
  if (!store_begin(c->store, error) || !retire(c, i, "deleted", FALSE, error) ||
      !store_instance_delete(c->store, i->name, error) || !store_commit(c->store, error)) {
    store_rollback(c->store);
    return SOUP_STATUS_INTERNAL_SERVER_ERROR;
  }
  oakuk_reservations_remove(c->reservations, i->name);
  od_log(G_LOG_LEVEL_MESSAGE, "undeploy", "instance", i->name, "node", i->node, NULL);
  loop_kick(c);
  return SOUP_STATUS_OK;
}

/* ---- nodes: registration, drain, removal ---- */

/* The node's /24: kept when it registered before, else the lowest one no node holds. */
static gboolean node_subnet(Cluster *c, const char *id, char **subnet, gint64 *index) {
  g_autoptr(StoreNode) known = store_node_get(c->store, id);
  if (known != NULL) {
    *index = known->subnet_index;
    *subnet = g_strdup(known->subnet);
    return TRUE;
  }
  for (gint64 k = 0;; k++) {
    g_autofree char *cidr = loop_node_subnet(c, k);
    if (cidr == NULL)
      return FALSE;
    if (!store_node_subnet_index_used(c->store, k)) {
      *index = k;
      *subnet = g_steal_pointer(&cidr);
      return TRUE;
    }
  }
}

/* A registered node that proved its password keeps it (and its subnet); a new one needs a join
 * token, which it uses up once. Nothing changes for a taken id or a bad token. */
LoopNodeOutcome loop_node_register(Cluster *c, const LoopNodeRegistration *r, char **password, char **subnet,
                                   GError **error) {
  if (c->subnet == NULL)
    return LOOP_NODE_NOT_READY;
  g_autoptr(StoreNode) known = store_node_get(c->store, r->id);
  gint64 now_s = cluster_wall_ms() / 1000;
  gboolean renew = known != NULL && r->credential != NULL;
  if (!renew && (r->token_hash == NULL || !store_join_token_usable(c->store, r->token_hash, now_s)))
    return LOOP_NODE_BAD_TOKEN;
  if (!renew && known != NULL)
    return LOOP_NODE_NAME_TAKEN;
  gint64 index = 0;
  if (!node_subnet(c, r->id, subnet, &index))
    return LOOP_NODE_POOL_EXHAUSTED;
  *password = renew ? g_strdup(r->credential) : od_password_generate();
  g_autofree char *hash = cluster_node_credential_hash(*password);
  if (!store_begin(c->store, error) ||
      (!renew && !store_join_token_use(c->store, r->token_hash, now_s, error)) ||
      !store_node_register(c->store, r->id, hash, index, *subnet, r->ip, cluster_wall_ms(), error) ||
      !broker_set_password(c, r->id, *password, error) || !store_commit(c->store, error)) {
    store_rollback(c->store);
    g_clear_pointer(password, g_free);
    g_clear_pointer(subnet, g_free);
    /* Another registration used the token up meanwhile. */
    return error && g_error_matches(*error, OD_ERROR, OD_ERROR_AUTH) ? LOOP_NODE_BAD_TOKEN : LOOP_NODE_FAILED;
  }
  c->net_dirty = TRUE;
  od_log(G_LOG_LEVEL_MESSAGE, "node-register", "node", r->id, "subnet", *subnet, "ip", r->ip, "msg",
         renew ? "node registered again with its credential" : "new node registered", NULL);
  loop_kick(c);
  return renew ? LOOP_NODE_RENEWED : LOOP_NODE_CREATED;
}

/* ---- node join tokens ---- */

char *loop_join_token_hash(const char *token) {
  if (token == NULL)
    return NULL;
  const char *secret = token;
  if (g_str_has_prefix(token, "oakuk1.")) {
    /* oakuk1.<64 hex>.<secret>: only the secret is ours to check; the fingerprint is for the node,
     * which pins our CA with it. */
    const char *fp = token + strlen("oakuk1."), *dot = strchr(fp, '.');
    if (dot == NULL || dot - fp != 64)
      return NULL;
    secret = dot + 1;
  }
  gsize len = strlen(secret);
  if (len < 16 || len > 128)
    return NULL;
  for (const char *p = secret; *p; p++)
    if (!g_ascii_isalnum(*p))
      return NULL;
  return od_sha256_hex(secret);
}

guint loop_join_token_new(Cluster *c, gint64 ttl_s, gint64 uses, char **token, gint64 *expires_ms,
                          GError **error) {
  g_autofree char *fp = NULL;
  if (c->ca_pem != NULL && (fp = od_tls_fingerprint(c->ca_pem, error)) == NULL)
    return SOUP_STATUS_INTERNAL_SERVER_ERROR;
  if (fp == NULL && !c->insecure) {
    g_set_error(
        error, OD_ERROR, OD_ERROR_INVALID,
        "the cluster has not registered with the root yet: no root CA (<state>/pki/ca.crt) to name in "
        "a node join token");
    return SOUP_STATUS_SERVICE_UNAVAILABLE;
  }
  g_autofree char *secret = od_random_hex(24);
  g_autofree char *hash = od_sha256_hex(secret);
  gint64 now_s = cluster_wall_ms() / 1000;
  if (!store_join_token_add(c->store, hash, now_s, now_s + ttl_s, uses, error))
    return SOUP_STATUS_INTERNAL_SERVER_ERROR;
  *token = fp ? g_strdup_printf("oakuk1.%s.%s", fp, secret) : g_steal_pointer(&secret);
  *expires_ms = (now_s + ttl_s) * 1000;
  g_autofree char *ttl = g_strdup_printf("%" G_GINT64_FORMAT, ttl_s);
  g_autofree char *n = g_strdup_printf("%" G_GINT64_FORMAT, uses);
  od_log(G_LOG_LEVEL_MESSAGE, "join-token", "ttl_s", ttl, "uses", n, "msg", "node join token made", NULL);
  return SOUP_STATUS_CREATED;
}

guint loop_node_drain(Cluster *c, const char *id, gboolean drain, GError **error) {
  g_autoptr(StoreNode) n = store_node_get(c->store, id);
  if (n == NULL)
    return SOUP_STATUS_NOT_FOUND;
  if (!store_node_set_drained(c->store, id, drain, error))
    return SOUP_STATUS_INTERNAL_SERVER_ERROR;
  od_log(G_LOG_LEVEL_MESSAGE, "drain", "node", id, "msg",
         drain ? "drained: its instances move, it takes nothing new" : "drain ended", NULL);
  loop_kick(c);
  return SOUP_STATUS_OK;
}

/* An instance on a node that goes away (removed) or must be emptied (drained): a copy elsewhere
 * (the old one deleted when the new one RUNs, with hold), else the root hears why. */
typedef struct {
  const char *node;
  const char *why; /* "removed", "drained" */
  gboolean keep_old;
} Evict;

static gboolean evict_step(Cluster *c, StoreInstance *i, gpointer data, GError **error) {
  Evict *e = data;
  oakuk_reservations_remove(c->reservations, i->name);
  g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
  oakuk_placement *p = select_node(c, i, e->node, lines, error);
  if (p == NULL)
    return FALSE;
  g_autofree char *prefix = g_strdup_printf("node %s %s", e->node, e->why);
  gboolean ok;
  if (oakuk_placement_ok(p)) {
    g_autofree char *detail = g_strdup_printf("moved off node %s (%s)", e->node, e->why);
    ok = (!e->keep_old || retire(c, i, "drain", TRUE, error)) && assign(c, i, p, detail, error);
  } else {
    ok = (!e->keep_old || retire(c, i, "drain", FALSE, error)) && refuse(c, i, p, prefix, lines, error);
  }
  oakuk_placement_unref(p);
  return ok;
}

static gboolean orphan_step(Cluster *c, StoreInstance *i, gpointer data, GError **error) {
  (void)data;
  set_str(&i->node, "");
  return store_instance_put(c->store, i, error);
}

guint loop_node_remove(Cluster *c, const char *id, GError **error) {
  g_autoptr(StoreNode) n = store_node_get(c->store, id);
  if (n == NULL)
    return SOUP_STATUS_NOT_FOUND;
  g_autoptr(GPtrArray) list = store_instance_list(c->store);
  Evict e = {id, "removed", FALSE};
  for (guint k = 0; k < list->len; k++) {
    StoreInstance *i = list->pdata[k];
    if (strcmp(i->node, id) == 0)
      in_transaction(c, i, status_active(i->status) ? evict_step : orphan_step, &e, "node-remove");
  }
  if (!store_begin(c->store, error) || !store_node_delete(c->store, id, error) ||
      !broker_remove_login(c, id, error) || !store_commit(c->store, error)) {
    store_rollback(c->store);
    return SOUP_STATUS_INTERNAL_SERVER_ERROR;
  }
  g_hash_table_remove(c->reports, id);
  g_hash_table_remove(c->reports_unsaved, id);
  g_hash_table_remove(c->reachable, id);
  g_hash_table_remove(c->silent, id);
  nodelink_forget(c, id);
  c->net_dirty = TRUE;
  od_log(G_LOG_LEVEL_MESSAGE, "node-remove", "node", id, "subnet", n->subnet, "msg",
         "node removed: its instances moved, its login and subnet released", NULL);
  loop_kick(c);
  return SOUP_STATUS_OK;
}

/* ---- from nodes: reports ---- */

static gboolean cooled_down(Cluster *c, const char *node, const char *name) {
  g_autofree char *key = g_strdup_printf("%s/%s", node, name);
  gint64 *last = g_hash_table_lookup(c->delete_sent, key);
  gint64 now = cluster_now_ms();
  if (last != NULL && now - *last < EXTRA_DELETE_COOLDOWN_MS)
    return FALSE;
  gint64 *stamp = g_new(gint64, 1);
  *stamp = now;
  g_hash_table_replace(c->delete_sent, g_steal_pointer(&key), stamp);
  return TRUE;
}

/* Rule 4: node came back with the copy it ran before the instance was moved to i->node, which is
 * not RUNNING yet. The old copy stays (adopted with a new generation, no restart); the moved
 * one goes. */
static gboolean readopt_back(Cluster *c, StoreInstance *i, const StoreOldCopy *old, int32_t status,
                             GError **error) {
  g_autofree char *moved = g_strdup(i->node);
  g_autofree char *detail = g_strdup_printf(
      "re-adopted on node %s after it came back (the copy on node %s was not running yet)", old->node, moved);
  oakuk_reservations_remove(c->reservations, i->name);
  return retire(c, i, "replaced", FALSE, error) &&
         store_old_copy_delete(c->store, i->name, old->node, error) &&
         store_delivery_drop(c->store, old->node, i->name, "delete", error) &&
         send_to(c, i, old->node, old->ip, old->placement, status, detail, error);
}

/* One entry of node's report: an instance it holds, at generation gen (0: a node from before
 * generations, taken as the one the cluster holds). */
static gboolean reconcile_entry(Cluster *c, const char *node, const char *name, int32_t status, gint64 gen,
                                gboolean back, GError **error) {
  g_autoptr(StoreInstance) i = store_instance_get(c->store, name);
  if (i != NULL && strcmp(i->node, node) == 0) {
    if (gen == 0 || gen == i->node_generation) {
      oakuk_reservations_remove(c->reservations, name); /* the report counts it now */
      if (!back)
        return TRUE;
      od_log(G_LOG_LEVEL_MESSAGE, "readopt", "instance", name, "node", node, "status",
             oakuk_instance_status_name(status), "msg", "node is back and still holds it", NULL);
      return observe(c, i, status, "", error);
    }
    if (gen > i->node_generation) { /* only a cluster.db older than the node can say less */
      i->node_generation = gen;
      return store_instance_put(c->store, i, error);
    }
    return TRUE; /* an older generation: the newer deploy is on its way */
  }
  g_autoptr(StoreOldCopy) old = store_old_copy_get(c->store, name, node);
  if (old != NULL && i != NULL && strcmp(old->kind, "moved") == 0 && (gen == 0 || gen == old->generation) &&
      status_active(status) && i->status != OAKUK_STATUS_RUNNING &&
      store_delivery_pending(c->store, node, name, "delete"))
    return readopt_back(c, i, old, status, error);
  if (store_delivery_pending(c->store, node, name, "delete") || (old != NULL && old->hold) ||
      !cooled_down(c, node, name))
    return TRUE;
  g_autofree char *payload = nodelink_delete_payload_for(name, MAX(gen, old ? old->generation : 0));
  if (payload == NULL)
    return TRUE; /* not an instance name the cluster could have given */
  od_log(G_LOG_LEVEL_MESSAGE, "reconcile", "node", node, "instance", name, "msg",
         old ? "node still holds an old copy; deleting it again"
             : "node runs an instance not placed on it; deleting",
         NULL);
  return store_delivery_add(c->store, node, name, "delete", payload, error);
}

/* After the entries: old copies node no longer lists are gone; what the cluster placed there and
 * the node lost while it was away is deployed there again. */
static gboolean reconcile_missing(Cluster *c, const char *node, GHashTable *listed, gboolean back,
                                  GError **error) {
  g_autoptr(GPtrArray) olds = store_old_copy_list(c->store, NULL);
  for (guint k = 0; k < olds->len; k++) {
    StoreOldCopy *o = olds->pdata[k];
    if (strcmp(o->node, node) == 0 && !g_hash_table_contains(listed, o->name) &&
        (!store_old_copy_delete(c->store, o->name, node, error) ||
         !store_delivery_drop(c->store, node, o->name, "delete", error)))
      return FALSE;
  }
  if (!back)
    return TRUE;
  g_autoptr(GPtrArray) list = store_instance_list(c->store);
  for (guint k = 0; k < list->len; k++) {
    StoreInstance *i = list->pdata[k];
    if (strcmp(i->node, node) != 0 || g_hash_table_contains(listed, i->name) || !status_active(i->status) ||
        store_delivery_pending(c->store, node, i->name, "deploy"))
      continue;
    g_autofree char *ip = g_strdup(i->ip), *pl = g_strdup(i->placement);
    g_autofree char *detail = g_strdup_printf("node %s came back without it; deployed there again", node);
    if (!send_to(c, i, node, ip, pl, OAKUK_STATUS_NODE_SCHEDULED, detail, error))
      return FALSE;
  }
  return TRUE;
}

static void remember_report(Cluster *c, const char *node, oakuk_node_report *rep) {
  g_autoptr(StoreNode) n = store_node_get(c->store, node);
  const char *ip = oakuk_node_report_ip(rep);
  if (n != NULL && g_strcmp0(n->ip, ip) != 0) {
    c->net_dirty = TRUE;
    store_node_set_ip(c->store, node, ip ? ip : "", NULL);
  }
  g_hash_table_replace(c->reports, g_strdup(node), rep);
  g_hash_table_add(c->reports_unsaved, g_strdup(node));
}

/* The reports received since the last save, saved as the nodes' last reports (loop_start reads
 * them after a restart). */
static void save_reports(Cluster *c) {
  c->reports_saved_ms = cluster_now_ms();
  if (g_hash_table_size(c->reports_unsaved) == 0)
    return;
  g_autoptr(GHashTable) texts = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
  GHashTableIter it;
  gpointer k;
  g_hash_table_iter_init(&it, c->reports_unsaved);
  while (g_hash_table_iter_next(&it, &k, NULL)) {
    oakuk_node_report *rep = g_hash_table_lookup(c->reports, k);
    char *json = rep ? oakuk_node_report_to_json(rep, FALSE, NULL) : NULL;
    if (json != NULL)
      g_hash_table_insert(texts, k, g_strdup(json));
    od_oakuk_free(json);
  }
  g_autoptr(GError) error = NULL;
  if (store_node_reports_save(c->store, texts, &error))
    g_hash_table_remove_all(c->reports_unsaved);
  else
    od_log(G_LOG_LEVEL_WARNING, "store", "msg", error->message, "what", "the nodes' last reports", NULL);
}

void loop_node_report(Cluster *c, const char *node, oakuk_node_report *rep) {
  gboolean back = g_hash_table_remove(c->silent, node);
  gboolean first = !g_hash_table_contains(c->reports, node);
  gboolean net_dirty = c->net_dirty;
  oakuk_node_report_set_received_at_ms(rep, cluster_now_ms());
  remember_report(c, node, rep);
  gint64 changes = store_total_changes(c->store);
  if (back)
    od_log(G_LOG_LEVEL_MESSAGE, "node-back", "node", node, "msg", "node reports again", NULL);
  g_autoptr(GHashTable) listed = g_hash_table_new(g_str_hash, g_str_equal);
  g_autoptr(GError) error = NULL;
  gboolean ok = store_begin(c->store, &error);
  for (size_t k = 0; ok && k < oakuk_node_report_instance_count(rep); k++) {
    const char *name = oakuk_node_report_instance_name(rep, k);
    g_hash_table_add(listed, (gpointer)name);
    ok = reconcile_entry(c, node, name, oakuk_node_report_instance_status(rep, k),
                         oakuk_node_report_instance_generation(rep, k), back, &error);
  }
  ok = ok && reconcile_missing(c, node, listed, back, &error) && store_commit(c->store, &error);
  if (!ok) {
    store_rollback(c->store);
    od_log(G_LOG_LEVEL_WARNING, "reconcile", "node", node, "msg", error ? error->message : "failed", NULL);
  }
  /* A pass of the loop (it reads every instance and delivery) right away only when the report
   * changed what the loop acts on: the node's first report or its return from silence, a change in
   * the store, new network tables. Otherwise the timer's pass (every LOOP_INTERVAL_MS) does: one
   * pass per report made the cluster's CPU grow with nodes x instances (bench/scale). */
  if (back || first || !ok || store_total_changes(c->store) != changes || (c->net_dirty && !net_dirty))
    loop_kick(c);
}

/* ---- from nodes: status events ---- */

/* Rule 3: FAILED where a restart cannot mend it (docs/reconcile.md): that node is avoided for
 * avoid_ms and another one gets the instance; with none, the root hears FAILED. */
static gboolean move_failed(Cluster *c, StoreInstance *i, const LoopEvent *ev, GError **error) {
  g_autofree char *node = g_strdup(i->node);
  if (!store_avoid_add(c->store, i->name, node, cluster_wall_ms() + c->avoid_ms, error))
    return FALSE;
  oakuk_reservations_remove(c->reservations, i->name);
  g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
  oakuk_placement *p = select_node(c, i, NULL, lines, error);
  if (p == NULL)
    return FALSE;
  gboolean ok;
  if (oakuk_placement_ok(p)) {
    g_autofree char *detail = g_strdup_printf("FAILED on node %s: %s; moved", node, ev->detail);
    ok = retire(c, i, "failed", FALSE, error) && assign(c, i, p, detail, error);
  } else {
    g_autofree char *prefix = g_strdup_printf("%s; no other node can take it", ev->detail);
    g_autofree char *detail = joined(prefix, lines);
    od_log(G_LOG_LEVEL_MESSAGE, "schedule", "instance", i->name, "status", "FAILED", "msg", detail, NULL);
    i->ready = FALSE;
    ok = observe(c, i, OAKUK_STATUS_FAILED, detail, error);
  }
  oakuk_placement_unref(p);
  return ok;
}

static gboolean apply_event(Cluster *c, StoreInstance *i, const LoopEvent *ev, GError **error) {
  if (i->status == ev->status && g_strcmp0(i->detail, ev->detail) == 0 && i->ready == ev->ready &&
      i->ready_ms == ev->ready_ms)
    return TRUE;
  if (ev->status == OAKUK_STATUS_UNDEPLOYED) {
    /* The node dropped it on its own (it left, or lost it): the cluster forgets it and tells the
     * root, which places it again while it is wanted (only a user's DELETE ends an instance). */
    oakuk_reservations_remove(c->reservations, i->name);
    c->net_dirty = TRUE;
    i->status = OAKUK_STATUS_UNDEPLOYED;
    set_str(&i->detail, ev->detail);
    i->ready = FALSE;
    return root_queue_status(c, i, error) && store_instance_delete(c->store, i->name, error);
  }
  if (ev->status == OAKUK_STATUS_FAILED && i->restart != OAKUK_RESTART_NEVER && !ev->restarting) {
    /* Already FAILED here with nowhere else to go: the root decides (a newer deploy). */
    return i->status == OAKUK_STATUS_FAILED || move_failed(c, i, ev, error);
  }
  /* A RUNNING event can come before the node's next report counts the instance: the reservation
   * stays until a report lists it; only an end of the instance frees it here. */
  if (status_ended(ev->status))
    oakuk_reservations_remove(c->reservations, i->name);
  i->status = ev->status;
  set_str(&i->detail, ev->detail);
  i->ready = ev->ready;
  i->ready_ms = ev->ready ? ev->ready_ms : -1;
  c->net_dirty = TRUE;
  return store_instance_put(c->store, i, error) && root_queue_status(c, i, error);
}

void loop_node_event(Cluster *c, const char *node, const LoopEvent *ev) {
  char *iname = oakuk_instance_name(ev->job_name, ev->number);
  g_autofree char *name = g_strdup(iname);
  od_oakuk_free(iname);
  g_autoptr(StoreInstance) i = store_instance_get(c->store, name);
  g_autofree char *gen = gen_text(ev->generation);
  g_autoptr(GError) error = NULL;
  if (i != NULL && strcmp(i->node, node) == 0) {
    if (ev->status == OAKUK_STATUS_UNDEPLOYED && ev->generation != 0 && ev->generation < i->node_generation &&
        !store_delivery_pending(c->store, node, name, "deploy")) {
      /* The node removed an older copy after our newer deploy reached it (a node being deleted
       * ignores deploys): it gets the deploy again. */
      g_autoptr(StoreNode) n = store_node_get(c->store, node);
      g_autofree char *payload = nodelink_deploy_payload(i, n ? n->subnet : "");
      od_log(G_LOG_LEVEL_MESSAGE, "reconcile", "node", node, "instance", name, "msg",
             "node removed an older copy; deploy sent again", NULL);
      if (!store_delivery_add(c->store, node, name, "deploy", payload, &error))
        od_log(G_LOG_LEVEL_WARNING, "reconcile", "instance", name, "msg", error->message, NULL);
      loop_kick(c);
      return;
    }
    if (ev->generation != 0 && ev->generation != i->node_generation) {
      g_autofree char *held = gen_text(i->node_generation);
      od_log(G_LOG_LEVEL_INFO, "status", "node", node, "instance", name, "generation", gen, "held", held,
             "msg", "status event of another generation than the one placed there; ignored", NULL);
      return;
    }
    if (!store_begin(c->store, &error) || !apply_event(c, i, ev, &error) || !store_commit(c->store, &error)) {
      store_rollback(c->store);
      od_log(G_LOG_LEVEL_WARNING, "status", "node", node, "instance", name, "msg", error->message, NULL);
    }
    loop_kick(c);
    return;
  }
  g_autoptr(StoreOldCopy) old = store_old_copy_get(c->store, name, node);
  if (old != NULL && ev->status == OAKUK_STATUS_UNDEPLOYED) {
    od_log(G_LOG_LEVEL_INFO, "reconcile", "node", node, "instance", name, "msg", "old copy removed", NULL);
    if (!store_old_copy_delete(c->store, name, node, &error) ||
        !store_delivery_drop(c->store, node, name, "delete", &error))
      od_log(G_LOG_LEVEL_WARNING, "reconcile", "node", node, "instance", name, "msg", error->message, NULL);
    return;
  }
  od_log(G_LOG_LEVEL_INFO, "status", "node", node, "instance", name, "generation", gen, "msg",
         "status event for an instance not placed on this node; ignored", NULL);
}

/* ---- the loop ---- */

static gboolean silent_mark_step(Cluster *c, StoreInstance *i, gpointer data, GError **error) {
  const char *detail = data;
  return observe(c, i, i->status, detail, error);
}

/* Rule 2, first half: a node silent for node_timeout keeps its instances; they say so. */
static void find_silent_nodes(Cluster *c, GPtrArray *list) {
  gint64 now = cluster_liveness_now_ms(c);
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, c->reports);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    if (now - oakuk_node_report_received_at_ms(v) <= c->node_timeout_ms ||
        g_hash_table_contains(c->silent, k))
      continue;
    g_hash_table_add(c->silent, g_strdup(k));
    od_log(G_LOG_LEVEL_WARNING, "node-silent", "node", (char *)k, "msg",
           "node sent no report for node_timeout; its instances stay there until their reschedule_after_s",
           NULL);
    for (guint j = 0; j < list->len; j++) {
      StoreInstance *i = list->pdata[j];
      if (strcmp(i->node, k) != 0 || !status_active(i->status))
        continue;
      g_autofree char *detail = i->restart == OAKUK_RESTART_NEVER
                                    ? g_strdup_printf("node %s sent no report for more than %" G_GINT64_FORMAT
                                                      " s; kept there (restart policy is never: not moved)",
                                                      (char *)k, c->node_timeout_ms / 1000)
                                    : g_strdup_printf("node %s sent no report for more than %" G_GINT64_FORMAT
                                                      " s; kept there, moved after %" G_GINT64_FORMAT " s",
                                                      (char *)k, c->node_timeout_ms / 1000,
                                                      MAX(i->reschedule_after_s, c->node_timeout_ms / 1000));
      in_transaction(c, i, silent_mark_step, detail, "node-silent");
    }
  }
}

static gboolean move_off_silent_step(Cluster *c, StoreInstance *i, gpointer data, GError **error) {
  gint64 silent_s = GPOINTER_TO_SIZE(data);
  g_autofree char *node = g_strdup(i->node);
  oakuk_reservations_remove(c->reservations, i->name);
  g_autoptr(GPtrArray) lines = g_ptr_array_new_with_free_func(g_free);
  oakuk_placement *p = select_node(c, i, node, lines, error);
  if (p == NULL)
    return FALSE;
  gboolean ok;
  if (oakuk_placement_ok(p)) {
    g_autofree char *detail =
        g_strdup_printf("moved off node %s (no report for %" G_GINT64_FORMAT " s)", node, silent_s);
    ok = retire(c, i, "moved", FALSE, error) && assign(c, i, p, detail, error);
  } else {
    /* Nowhere else to go: it stays where it is, and is re-adopted when its node is back. */
    g_autofree char *prefix = g_strdup_printf("node %s sent no report for more than %" G_GINT64_FORMAT
                                              " s; kept there, no other node can take it",
                                              node, c->node_timeout_ms / 1000);
    g_autofree char *detail = joined(prefix, lines);
    ok = g_str_has_prefix(i->detail, prefix) || observe(c, i, i->status, detail, error);
  }
  oakuk_placement_unref(p);
  return ok;
}

static gboolean retry_due(Cluster *c, const char *name) {
  Retry *r = g_hash_table_lookup(c->retry, name);
  return r == NULL || cluster_now_ms() >= r->at;
}

static void retry_later(Cluster *c, const char *name) {
  Retry *r = g_hash_table_lookup(c->retry, name);
  if (r == NULL) {
    r = g_new0(Retry, 1);
    g_hash_table_replace(c->retry, g_strdup(name), r);
  }
  r->delay = r->delay == 0 ? LOOP_INTERVAL_MS : MIN(r->delay * 2, RETRY_MAX_MS);
  r->at = cluster_now_ms() + r->delay;
}

/* Rule 2, second half: after reschedule_after_s (never before node_timeout) a copy elsewhere. */
static void move_off_silent_nodes(Cluster *c, GPtrArray *list) {
  gint64 now = cluster_liveness_now_ms(c);
  for (guint k = 0; k < list->len; k++) {
    StoreInstance *i = list->pdata[k];
    oakuk_node_report *rep = g_hash_table_lookup(c->reports, i->node);
    if (rep == NULL || !g_hash_table_contains(c->silent, i->node) || !status_active(i->status) ||
        i->restart == OAKUK_RESTART_NEVER) {
      g_hash_table_remove(c->retry, i->name);
      continue;
    }
    gint64 silent_ms = now - oakuk_node_report_received_at_ms(rep);
    if (silent_ms < MAX(i->reschedule_after_s * 1000, c->node_timeout_ms) || !retry_due(c, i->name))
      continue;
    g_autofree char *node = g_strdup(i->node);
    in_transaction(c, i, move_off_silent_step, GSIZE_TO_POINTER(silent_ms / 1000), "reschedule");
    if (g_strcmp0(i->node, node) == 0)
      retry_later(c, i->name); /* still there: nowhere else to go yet */
    else
      g_hash_table_remove(c->retry, i->name);
  }
}

/* Rule 5: instances on drained nodes move; the old copy goes once the new one RUNs. */
static void drain_nodes(Cluster *c, GPtrArray *list) {
  g_autoptr(GPtrArray) nodes = store_node_list(c->store);
  for (guint n = 0; n < nodes->len; n++) {
    StoreNode *node = nodes->pdata[n];
    Evict e = {node->id, "drained", TRUE};
    for (guint k = 0; node->drained && k < list->len; k++) {
      StoreInstance *i = list->pdata[k];
      if (strcmp(i->node, node->id) == 0 && status_active(i->status))
        in_transaction(c, i, evict_step, &e, "drain");
    }
  }
}

/* Old copies held until the instance RUNs elsewhere: released once it does, or when it no longer
 * can (gone, ended). */
static void release_held(Cluster *c) {
  g_autoptr(GPtrArray) olds = store_old_copy_list(c->store, NULL);
  for (guint k = 0; k < olds->len; k++) {
    StoreOldCopy *o = olds->pdata[k];
    if (!o->hold)
      continue;
    g_autoptr(StoreInstance) i = store_instance_get(c->store, o->name);
    if (i != NULL && status_active(i->status) && i->status != OAKUK_STATUS_RUNNING &&
        strcmp(i->node, o->node) != 0)
      continue;
    g_autoptr(GError) error = NULL;
    od_log(G_LOG_LEVEL_MESSAGE, "drain", "node", o->node, "instance", o->name, "msg",
           i != NULL && i->status == OAKUK_STATUS_RUNNING ? "the new copy runs; deleting the old one"
                                                          : "deleting the old copy",
           NULL);
    if (!store_begin(c->store, &error) || !store_old_copy_release(c->store, o->name, o->node, &error) ||
        !queue_delete(c, o->node, o->name, o->job_name, o->number, o->generation, &error) ||
        !store_commit(c->store, &error)) {
      store_rollback(c->store);
      od_log(G_LOG_LEVEL_WARNING, "drain", "instance", o->name, "msg", error->message, NULL);
    }
  }
}

/* Forgets the last-delete stamps and retry delays nobody asked about for long. */
static void prune_delete_stamps(Cluster *c) {
  gint64 now = cluster_now_ms();
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, c->delete_sent);
  while (g_hash_table_iter_next(&it, NULL, &v))
    if (now - *(gint64 *)v > 6 * EXTRA_DELETE_COOLDOWN_MS)
      g_hash_table_iter_remove(&it);
  g_hash_table_iter_init(&it, c->retry);
  while (g_hash_table_iter_next(&it, NULL, &v))
    if (now - ((Retry *)v)->at > 2 * RETRY_MAX_MS)
      g_hash_table_iter_remove(&it);
}

static void run_once(Cluster *c) {
  /* Nodes report through the broker: while the cluster cannot reach it, nobody is silent. */
  if (c->mqtt_up) {
    g_autoptr(GPtrArray) list = store_instance_list(c->store);
    find_silent_nodes(c, list);
    g_clear_pointer(&list, g_ptr_array_unref);
    list = store_instance_list(c->store);
    move_off_silent_nodes(c, list);
  }
  g_autoptr(GPtrArray) list = store_instance_list(c->store);
  drain_nodes(c, list);
  release_held(c);
  nodelink_publish_net(c);
  nodelink_pump(c);
  root_status_pump(c);
}

static gboolean on_timer(gpointer data) {
  Cluster *c = data;
  if (cluster_now_ms() - c->reports_saved_ms >= REPORT_SAVE_MS)
    save_reports(c);
  store_avoid_expire(c->store, cluster_wall_ms(), NULL);
  prune_delete_stamps(c);
  run_once(c);
  return G_SOURCE_CONTINUE;
}

static gboolean on_idle(gpointer data) {
  Cluster *c = data;
  c->loop_idle = 0;
  run_once(c);
  return G_SOURCE_REMOVE;
}

void loop_kick(Cluster *c) {
  if (c->loop_idle == 0 && !c->stopping)
    c->loop_idle = g_idle_add(on_idle, c);
}

/* Back on the broker after down_since: a node that was alive when the connection went gets a full
 * node_timeout from now to report again; one that was already silent stays as silent as it was. */
void loop_broker_state(Cluster *c, gboolean connected) {
  gint64 now = cluster_now_ms();
  if (connected && !c->mqtt_up) {
    GHashTableIter it;
    gpointer v;
    g_hash_table_iter_init(&it, c->reports);
    while (g_hash_table_iter_next(&it, NULL, &v)) {
      gint64 at = oakuk_node_report_received_at_ms(v);
      oakuk_node_report_set_received_at_ms(
          v, c->mqtt_down_since_ms - at <= c->node_timeout_ms ? now : at + (now - c->mqtt_down_since_ms));
    }
  } else if (!connected && c->mqtt_up) {
    c->mqtt_down_since_ms = now;
  }
  c->mqtt_up = connected;
  loop_kick(c);
}

/* After a restart: the last reports (each node gets one full node_timeout from now) and the
 * reservations of instances still on their way to RUNNING. */
void loop_start(Cluster *c) {
  gint64 now = cluster_now_ms();
  c->mqtt_down_since_ms = now; /* not connected yet: liveness waits for the broker */
  g_autoptr(GHashTable) reports = store_node_reports(c->store);
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, reports);
  while (g_hash_table_iter_next(&it, &k, &v)) {
    oakuk_node_report *rep = oakuk_node_report_from_json(v, (size_t)-1, NULL);
    if (rep == NULL)
      continue;
    oakuk_node_report_set_received_at_ms(rep, now);
    g_hash_table_replace(c->reports, g_strdup(k), rep);
  }
  g_autoptr(GPtrArray) list = store_instance_list(c->store);
  for (guint j = 0; j < list->len; j++) {
    StoreInstance *i = list->pdata[j];
    if ((i->status == OAKUK_STATUS_NODE_SCHEDULED || i->status == OAKUK_STATUS_CREATING) && *i->node)
      oakuk_reservations_add(c->reservations, i->name, i->node, i->vcpus, i->memory_mb);
  }
  c->net_dirty = TRUE;
  c->reports_saved_ms = now;
  c->loop_timer = g_timeout_add(LOOP_INTERVAL_MS, on_timer, c);
}

void loop_stop(Cluster *c) {
  if (c->loop_timer != 0)
    save_reports(c);
  g_clear_handle_id(&c->loop_timer, g_source_remove);
  g_clear_handle_id(&c->loop_idle, g_source_remove);
}

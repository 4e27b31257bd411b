/* Scheduling (docs/architecture.md §6): node selection at cluster level, cluster selection at root level.
 *
 * The decision is one pass over the candidates that keeps only the best option per variant; the
 * human explanation is formatted only when asked for (a cluster scheduling over thousands of nodes
 * should not pay for thousands of sentences nobody reads). The placement keeps the candidates
 * referenced and snapshots what may change later (report times, reservations), and the explanation
 * re-runs the same checks with a GString attached, so the text and the decision cannot disagree. */
#include "oakuk-private.h"

#include <string.h>

/* Distinct virtualization kinds; a service listing more is a descriptor error. */
#define SCHED_MAX_VARIANTS 2

enum { OPT_REJECTED = 0, OPT_NO_CAPACITY, OPT_FITS };
enum { CAND_REJECTED = 0, CAND_INACTIVE, CAND_NO_CAPACITY, CAND_QUALIFIED };
enum { ACCEL_UNCHECKED = 0, ACCEL_SHORT, ACCEL_MET };

/* ---------------------------------------------------------------------------------------------
 * Reservations */

typedef struct {
  char *target;
  int64_t vcpus;
  int64_t memory_mb;
} Reservation;

typedef struct {
  int64_t vcpus;
  int64_t memory_mb;
  guint count;
} Totals;

struct oakuk_reservations {
  gint ref;
  GMutex lock;
  GHashTable *by_key;    /* char* key -> Reservation* */
  GHashTable *by_target; /* char* target -> Totals* */
};

static void reservation_free(gpointer data) {
  Reservation *r = data;
  g_free(r->target);
  g_free(r);
}

OAKUK_API oakuk_reservations *oakuk_reservations_new(void) {
  oakuk_reservations *res = g_new0(oakuk_reservations, 1);
  res->ref = 1;
  g_mutex_init(&res->lock);
  res->by_key = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, reservation_free);
  res->by_target = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  return res;
}

OAKUK_API oakuk_reservations *oakuk_reservations_ref(oakuk_reservations *res) {
  g_return_val_if_fail(res != NULL, NULL);
  g_atomic_int_inc(&res->ref);
  return res;
}

OAKUK_API void oakuk_reservations_unref(oakuk_reservations *res) {
  if (res == NULL || !g_atomic_int_dec_and_test(&res->ref))
    return;
  g_hash_table_destroy(res->by_key);
  g_hash_table_destroy(res->by_target);
  g_mutex_clear(&res->lock);
  g_free(res);
}

static void totals_adjust(oakuk_reservations *res, const char *target, int64_t vcpus, int64_t mem, int sign) {
  Totals *t = g_hash_table_lookup(res->by_target, target);
  if (t == NULL) {
    if (sign < 0)
      return;
    t = g_new0(Totals, 1);
    g_hash_table_insert(res->by_target, g_strdup(target), t);
  }
  t->vcpus += sign * vcpus;
  t->memory_mb += sign * mem;
  if (sign > 0)
    t->count++;
  else if (--t->count == 0)
    g_hash_table_remove(res->by_target, target);
}

static bool reservations_remove_locked(oakuk_reservations *res, const char *key) {
  Reservation *old = g_hash_table_lookup(res->by_key, key);
  if (old == NULL)
    return false;
  totals_adjust(res, old->target, old->vcpus, old->memory_mb, -1);
  g_hash_table_remove(res->by_key, key);
  return true;
}

static void reservations_add_locked(oakuk_reservations *res, const char *key, const char *target,
                                    int64_t vcpus, int64_t mem) {
  reservations_remove_locked(res, key);
  Reservation *r = g_new0(Reservation, 1);
  r->target = g_strdup(target);
  r->vcpus = vcpus;
  r->memory_mb = mem;
  g_hash_table_insert(res->by_key, g_strdup(key), r);
  totals_adjust(res, target, vcpus, mem, +1);
}

static void reservations_total_locked(const oakuk_reservations *res, const char *target, int64_t *vcpus,
                                      int64_t *mem) {
  const Totals *t = NULL;
  if (target != NULL && g_hash_table_size(res->by_target) > 0)
    t = g_hash_table_lookup(res->by_target, target);
  *vcpus = t ? t->vcpus : 0;
  *mem = t ? t->memory_mb : 0;
}

OAKUK_API void oakuk_reservations_add(oakuk_reservations *res, const char *key, const char *target_id,
                                      int64_t vcpus, int64_t memory_mb) {
  g_return_if_fail(res != NULL && key != NULL && target_id != NULL);
  g_mutex_lock(&res->lock);
  reservations_add_locked(res, key, target_id, vcpus, memory_mb);
  g_mutex_unlock(&res->lock);
}

OAKUK_API bool oakuk_reservations_remove(oakuk_reservations *res, const char *key) {
  g_return_val_if_fail(res != NULL && key != NULL, false);
  g_mutex_lock(&res->lock);
  bool found = reservations_remove_locked(res, key);
  g_mutex_unlock(&res->lock);
  return found;
}

OAKUK_API void oakuk_reservations_total(const oakuk_reservations *res, const char *target_id, int64_t *vcpus,
                                        int64_t *memory_mb) {
  int64_t v = 0, m = 0;
  g_return_if_fail(res != NULL);
  oakuk_reservations *mut = (oakuk_reservations *)res; /* the lock is not part of the value */
  g_mutex_lock(&mut->lock);
  reservations_total_locked(res, target_id, &v, &m);
  g_mutex_unlock(&mut->lock);
  if (vcpus)
    *vcpus = v;
  if (memory_mb)
    *memory_mb = m;
}

/* ---------------------------------------------------------------------------------------------
 * Options */

OAKUK_API int oakuk_sched_options_init(oakuk_sched_options *opts, unsigned int version) {
  g_return_val_if_fail(opts != NULL, OAKUK_EINVAL);
  if (version != OAKUK_SCHED_OPTIONS_VERSION)
    return OAKUK_EINVAL;
  oakuk_sched_options defaults = OAKUK_SCHED_OPTIONS_INIT;
  *opts = defaults;
  return OAKUK_OK;
}

static int check_options(const oakuk_sched_options *opts, oakuk_sched_options *out, oakuk_error **error) {
  oakuk_sched_options_init(out, OAKUK_SCHED_OPTIONS_VERSION);
  if (opts == NULL)
    return OAKUK_OK;
  if (opts->version != OAKUK_SCHED_OPTIONS_VERSION)
    return oakuk_set_error(error, OAKUK_EINVAL, 0, "version", "sched options: version %u is not %d",
                           opts->version, OAKUK_SCHED_OPTIONS_VERSION);
  if (opts->policy != OAKUK_SCHED_MOST_FREE && opts->policy != OAKUK_SCHED_BEST_FIT)
    return oakuk_set_error(error, OAKUK_EINVAL, 0, "policy", "sched options: unknown policy %d",
                           opts->policy);
  if (opts->timeout_ms < 0 || opts->now_ms < 0)
    return oakuk_set_error(error, OAKUK_EINVAL, 0, opts->timeout_ms < 0 ? "timeout_ms" : "now_ms",
                           "sched options: %s is negative", opts->timeout_ms < 0 ? "timeout_ms" : "now_ms");
  *out = *opts;
  return OAKUK_OK;
}

/* ---------------------------------------------------------------------------------------------
 * The service, digested once per decision */

typedef struct {
  const oakuk_microservice *ms;
  bool cluster_level;
  int32_t policy;
  int64_t need_vcpus;
  int64_t need_mem;
  int64_t need_gpus;
  int64_t need_tpus;
  size_t nvariants;
  int32_t variants[SCHED_MAX_VARIANTS];
  size_t narch;
  const char **arch; /* borrowed from ms */
  bool emulation_allow;
  const char *target_node;
  bool has_direct_nodes; /* some direct constraint lists nodes */
  bool has_direct_cluster;
  bool has_clusters;
  bool has_arch;
} SchedCtx;

static void ctx_init(SchedCtx *ctx, const oakuk_microservice *ms, bool cluster_level, int32_t policy) {
  memset(ctx, 0, sizeof *ctx);
  ctx->ms = ms;
  ctx->cluster_level = cluster_level;
  ctx->policy = policy;
  ctx->need_vcpus = oakuk_microservice_vcpus(ms);
  ctx->need_mem = oakuk_microservice_memory_mb(ms);
  ctx->need_gpus = oakuk_microservice_vgpus(ms);
  ctx->need_tpus = oakuk_microservice_vtpus(ms);
  size_t nv = oakuk_microservice_virt_count(ms);
  for (size_t i = 0; i < nv && ctx->nvariants < SCHED_MAX_VARIANTS; i++) {
    int32_t v = oakuk_microservice_virt(ms, i);
    bool dup = false;
    for (size_t j = 0; j < ctx->nvariants; j++)
      dup = dup || ctx->variants[j] == v;
    if (!dup && (v == OAKUK_VIRT_CONTAINER || v == OAKUK_VIRT_UNIKERNEL))
      ctx->variants[ctx->nvariants++] = v;
  }
  ctx->narch = oakuk_microservice_arch_count(ms);
  ctx->arch = g_new0(const char *, ctx->narch + 1);
  for (size_t i = 0; i < ctx->narch; i++)
    ctx->arch[i] = oakuk_microservice_arch(ms, i);
  ctx->emulation_allow = oakuk_microservice_emulation(ms) == OAKUK_EMULATION_ALLOW;
  ctx->target_node = oakuk_microservice_target_node(ms);
  if (ctx->target_node != NULL && ctx->target_node[0] == '\0')
    ctx->target_node = NULL;
  size_t nc = oakuk_microservice_constraint_count(ms);
  for (size_t i = 0; i < nc; i++) {
    switch (oakuk_microservice_constraint_type(ms, i)) {
    case OAKUK_CONSTRAINT_DIRECT:
      if (oakuk_microservice_constraint_value_count(ms, i) > 0)
        ctx->has_direct_nodes = true;
      if (oakuk_microservice_constraint_cluster(ms, i) != NULL)
        ctx->has_direct_cluster = true;
      break;
    case OAKUK_CONSTRAINT_CLUSTERS: ctx->has_clusters = true; break;
    case OAKUK_CONSTRAINT_ARCH: ctx->has_arch = true; break;
    default: break;
    }
  }
}

static void ctx_clear(SchedCtx *ctx) {
  g_free(ctx->arch);
  ctx->arch = NULL;
}

static bool str_in(const char *s, const char *const *list, size_t n) {
  if (s == NULL)
    return false;
  for (size_t i = 0; i < n; i++)
    if (list[i] != NULL && strcmp(s, list[i]) == 0)
      return true;
  return false;
}

static bool constraint_has(const oakuk_microservice *ms, size_t c, const char *a, const char *b) {
  size_t n = oakuk_microservice_constraint_value_count(ms, c);
  for (size_t j = 0; j < n; j++) {
    const char *v = oakuk_microservice_constraint_value(ms, c, j);
    if (v != NULL && ((a != NULL && strcmp(v, a) == 0) || (b != NULL && strcmp(v, b) == 0)))
      return true;
  }
  return false;
}

static void append_constraint_values(GString *why, const oakuk_microservice *ms, size_t c) {
  size_t n = oakuk_microservice_constraint_value_count(ms, c);
  for (size_t j = 0; j < n; j++)
    g_string_append_printf(why, "%s%s", j ? ", " : "", oakuk_microservice_constraint_value(ms, c, j));
}

static void append_list(GString *why, const char *const *list, size_t n, const char *sep) {
  if (n == 0)
    g_string_append(why, "none");
  for (size_t i = 0; i < n; i++)
    g_string_append_printf(why, "%s%s", i ? sep : "", list[i] ? list[i] : "?");
}

/* Index of the first arch constraint that excludes arch, or -1 when allowed. */
static gssize arch_excluded_by(const SchedCtx *ctx, const char *arch) {
  if (!ctx->has_arch)
    return -1;
  size_t nc = oakuk_microservice_constraint_count(ctx->ms);
  for (size_t c = 0; c < nc; c++)
    if (oakuk_microservice_constraint_type(ctx->ms, c) == OAKUK_CONSTRAINT_ARCH &&
        !constraint_has(ctx->ms, c, arch, NULL))
      return (gssize)c;
  return -1;
}

static void why_arch_excluded(const SchedCtx *ctx, GString *why, const char *arch, gssize c) {
  if (why == NULL)
    return;
  g_string_append_printf(
      why, "architecture %s not allowed by arch constraint (allowed: ", arch ? arch : "unknown");
  append_constraint_values(why, ctx->ms, (size_t)c);
  g_string_append_c(why, ')');
}

/* Checks the arch constraint for arch; appends the reason when it fails. */
static bool arch_allowed(const SchedCtx *ctx, const char *arch, GString *why) {
  gssize c = arch_excluded_by(ctx, arch);
  if (c < 0)
    return true;
  why_arch_excluded(ctx, why, arch, c);
  return false;
}

/* ---------------------------------------------------------------------------------------------
 * Per-candidate records */

typedef struct {
  int64_t free_vcpus;
  int64_t free_mem;
  double cpu;
  const char *arch; /* borrowed from the service or the candidate (both kept alive) */
  int32_t arch_idx; /* service arch index, -1 when the variant does not use one */
  int32_t accel;
  uint8_t state;
  bool accel_assumed; /* aggregate entry without accel: Oakestra's, treated as KVM */
} SchedOpt;

typedef struct {
  int64_t age_ms;
  int64_t res_vcpus;
  int64_t res_mem;
  uint8_t outcome;
  uint8_t accel_check; /* ACCEL_*: how the candidate met the GPUs/TPUs the service asks for */
  SchedOpt opt[SCHED_MAX_VARIANTS];
} SchedCand;

static bool opt_well(const SchedOpt *o) {
  return o->accel != OAKUK_ACCEL_TCG;
}

/* Sets o's resource fields and state from free resources. */
static void opt_set_free(const SchedCtx *ctx, SchedOpt *o, int64_t free_vcpus, int64_t free_mem, double cpu) {
  o->free_vcpus = free_vcpus;
  o->free_mem = free_mem;
  o->cpu = cpu;
  o->state = (free_vcpus >= ctx->need_vcpus && free_mem >= ctx->need_mem) ? OPT_FITS : OPT_NO_CAPACITY;
}

/* Prefers the candidate's native arch when picking which arch to name in a reason. */
static void pick_named(gssize *slot, bool *slot_native, size_t i, bool native) {
  if (*slot < 0 || (native && !*slot_native)) {
    *slot = (gssize)i;
    *slot_native = native;
  }
}

/* ---------------------------------------------------------------------------------------------
 * Node checks (steps 1-3 of docs/architecture.md §6) */

static bool node_direct_ok(const SchedCtx *ctx, const char *id, const char *host, GString *why) {
  if (ctx->has_direct_nodes) {
    size_t nc = oakuk_microservice_constraint_count(ctx->ms);
    for (size_t c = 0; c < nc; c++) {
      if (oakuk_microservice_constraint_type(ctx->ms, c) != OAKUK_CONSTRAINT_DIRECT ||
          oakuk_microservice_constraint_value_count(ctx->ms, c) == 0 || constraint_has(ctx->ms, c, id, host))
        continue;
      if (why) {
        g_string_append(why, "excluded by direct constraint (allowed nodes: ");
        append_constraint_values(why, ctx->ms, c);
        g_string_append_c(why, ')');
      }
      return false;
    }
  }
  if (ctx->target_node != NULL && g_strcmp0(ctx->target_node, id) != 0 &&
      g_strcmp0(ctx->target_node, host) != 0) {
    if (why)
      g_string_append_printf(why, "excluded by target_node constraint (allowed nodes: %s)", ctx->target_node);
    return false;
  }
  return true;
}

static bool node_container(const SchedCtx *ctx, const oakuk_node_report *node, const char *narch, SchedOpt *o,
                           GString *why) {
  if (!arch_allowed(ctx, narch, why))
    return false;
  if (!oakuk_node_report_has_virt(node, OAKUK_VIRT_CONTAINER)) {
    if (why)
      g_string_append(why, "does not offer container");
    return false;
  }
  if (ctx->narch > 0 && !str_in(narch, ctx->arch, ctx->narch)) {
    if (why) {
      g_string_append_printf(why, "arch %s not in service arch (", narch ? narch : "unknown");
      append_list(why, ctx->arch, ctx->narch, ", ");
      g_string_append_c(why, ')');
    }
    return false;
  }
  o->arch = narch;
  o->arch_idx = -1;
  o->accel = OAKUK_ACCEL_NONE;
  return true;
}

static void why_unikernel_node(const SchedCtx *ctx, const char *narch, const char *run_arch,
                               const char *allowed_arch, GString *why) {
  if (why == NULL)
    return;
  if (run_arch == NULL) {
    if (!arch_allowed(ctx, narch, why))
      return;
    if (ctx->narch > 0 && !str_in(narch, ctx->arch, ctx->narch)) {
      g_string_append_printf(why, "arch %s has no kernel (service has ", narch ? narch : "unknown");
      append_list(why, ctx->arch, ctx->narch, ", ");
      g_string_append_c(why, ')');
    } else {
      g_string_append_printf(why, "cannot run unikernel %s (no accelerator reported)",
                             narch ? narch : "unknown");
    }
  } else if (allowed_arch == NULL) {
    arch_allowed(ctx, run_arch, why);
  } else {
    g_string_append_printf(why, "unikernel %s needs emulation (no KVM) but emulation is forbidden",
                           allowed_arch);
  }
}

static bool node_unikernel(const SchedCtx *ctx, const oakuk_node_report *node, const char *narch, SchedOpt *o,
                           GString *why) {
  if (!oakuk_node_report_has_virt(node, OAKUK_VIRT_UNIKERNEL)) {
    if (why && arch_allowed(ctx, narch, why))
      g_string_append(why, "does not offer unikernel");
    return false;
  }
  gssize best = -1, run = -1, allowed = -1;
  bool run_native = false, allowed_native = false;
  int32_t best_accel = OAKUK_ACCEL_NONE;
  /* Without arch[] the service has one kernel, taken to be for the node's own arch. */
  size_t count = ctx->narch > 0 ? ctx->narch : 1;
  /* Same answers as oakuk_node_report_accel_for_arch, without touching the emulated list of the
   * many nodes that have none (this loop runs for every node of a cluster). */
  int32_t native_accel = oakuk_node_report_unikernel_accel(node);
  bool emulates = oakuk_node_report_emulated_arch_count(node) > 0;
  for (size_t i = 0; i < count; i++) {
    const char *a = ctx->narch > 0 ? ctx->arch[i] : narch;
    int32_t accel = g_strcmp0(a, narch) == 0 ? native_accel
                    : emulates               ? oakuk_node_report_accel_for_arch(node, a)
                                             : OAKUK_ACCEL_NONE;
    if (accel == OAKUK_ACCEL_NONE)
      continue;
    bool native = g_strcmp0(a, narch) == 0;
    pick_named(&run, &run_native, i, native);
    if (arch_excluded_by(ctx, a) >= 0)
      continue;
    pick_named(&allowed, &allowed_native, i, native);
    if (accel == OAKUK_ACCEL_TCG && !ctx->emulation_allow)
      continue;
    if (best < 0 || (accel == OAKUK_ACCEL_KVM && best_accel != OAKUK_ACCEL_KVM)) {
      best = (gssize)i;
      best_accel = accel;
    }
  }
  if (best < 0) {
    const char *run_arch = run < 0 ? NULL : ctx->narch > 0 ? ctx->arch[run] : narch;
    const char *allowed_arch = allowed < 0 ? NULL : ctx->narch > 0 ? ctx->arch[allowed] : narch;
    why_unikernel_node(ctx, narch, run_arch, allowed_arch, why);
    return false;
  }
  o->arch = ctx->narch > 0 ? ctx->arch[best] : narch;
  o->arch_idx = ctx->narch > 0 ? (int32_t)best : -1;
  o->accel = best_accel;
  return true;
}

/* A service asking for GPUs or TPUs needs a candidate that reports as many (they are hardware,
 * not shared out by reservations); who starts the reason ("reports", "its active nodes report"). */
static bool accelerators_ok(const SchedCtx *ctx, int64_t gpus, int64_t tpus, const char *who, GString *why) {
  const char *what = NULL;
  int64_t need = 0, have = 0;
  if (ctx->need_gpus > gpus) {
    what = "GPU";
    need = ctx->need_gpus;
    have = gpus;
  } else if (ctx->need_tpus > tpus) {
    what = "TPU";
    need = ctx->need_tpus;
    have = tpus;
  } else {
    return true;
  }
  if (why)
    g_string_append_printf(why,
                           "%s %" G_GINT64_FORMAT " %s%s, the service asks for %" G_GINT64_FORMAT " (v%cpus)",
                           who, have, what, have == 1 ? "" : "s", need, what[0] == 'G' ? 'g' : 't');
  return false;
}

/* Runs steps 1-4 for a node; c->res_* must be filled. */
static void eval_node(const SchedCtx *ctx, const oakuk_node_report *node, SchedCand *c, GString *why) {
  c->outcome = CAND_REJECTED;
  c->accel_check = ACCEL_UNCHECKED;
  if ((ctx->has_direct_nodes || ctx->target_node != NULL) &&
      !node_direct_ok(ctx, oakuk_node_report_id(node), oakuk_node_report_host(node), why))
    return;
  if ((ctx->need_gpus > 0 || ctx->need_tpus > 0) &&
      !accelerators_ok(ctx, oakuk_node_report_gpus(node), oakuk_node_report_tpus(node), "reports", why)) {
    c->accel_check = ACCEL_SHORT;
    return;
  }
  c->accel_check = ACCEL_MET;
  const char *narch = oakuk_node_report_architecture(node);
  int64_t free_vcpus = oakuk_node_report_vcpus(node) - c->res_vcpus;
  int64_t free_mem = oakuk_node_report_memory_mb(node) - c->res_mem;
  double cpu = oakuk_node_report_cpu_percent(node);
  bool any_pass = false, any_fit = false;
  size_t start = why ? why->len : 0;
  for (size_t v = 0; v < ctx->nvariants; v++) {
    SchedOpt *o = &c->opt[v];
    memset(o, 0, sizeof *o);
    size_t before = why ? why->len : 0;
    if (why && before > start)
      g_string_append(why, "; ");
    bool pass = ctx->variants[v] == OAKUK_VIRT_CONTAINER ? node_container(ctx, node, narch, o, why)
                                                         : node_unikernel(ctx, node, narch, o, why);
    if (!pass)
      continue;
    if (why)
      g_string_truncate(why, before);
    any_pass = true;
    opt_set_free(ctx, o, free_vcpus, free_mem, cpu);
    any_fit = any_fit || o->state == OPT_FITS;
  }
  c->outcome = any_fit ? CAND_QUALIFIED : any_pass ? CAND_NO_CAPACITY : CAND_REJECTED;
}

/* ---------------------------------------------------------------------------------------------
 * Cluster checks */

static bool cluster_constraints_ok(const SchedCtx *ctx, const char *id, const char *name, GString *why) {
  size_t nc = oakuk_microservice_constraint_count(ctx->ms);
  for (size_t c = 0; c < nc; c++) {
    int32_t type = oakuk_microservice_constraint_type(ctx->ms, c);
    if (type == OAKUK_CONSTRAINT_CLUSTERS && !constraint_has(ctx->ms, c, name, id)) {
      if (why) {
        g_string_append(why, "excluded by clusters constraint (allowed: ");
        append_constraint_values(why, ctx->ms, c);
        g_string_append_c(why, ')');
      }
      return false;
    }
    const char *want =
        type == OAKUK_CONSTRAINT_DIRECT ? oakuk_microservice_constraint_cluster(ctx->ms, c) : NULL;
    if (want != NULL && g_strcmp0(want, name) != 0 && g_strcmp0(want, id) != 0) {
      if (why)
        g_string_append_printf(why, "excluded by direct constraint (allowed cluster: %s)", want);
      return false;
    }
  }
  return true;
}

static bool cluster_container(const SchedCtx *ctx, const oakuk_cluster_aggregate *agg, SchedOpt *o,
                              GString *why) {
  size_t m = oakuk_cluster_aggregate_arch_count(agg);
  const char *first_allowed = NULL, *chosen = NULL;
  for (size_t j = 0; j < m && chosen == NULL; j++) {
    const char *a = oakuk_cluster_aggregate_arch(agg, j);
    if (arch_excluded_by(ctx, a) >= 0)
      continue;
    if (first_allowed == NULL)
      first_allowed = a;
    if (ctx->narch == 0 || str_in(a, ctx->arch, ctx->narch))
      chosen = a;
  }
  g_autofree const char **archs = NULL;
  if (why && chosen == NULL && m > 0) {
    archs = g_new0(const char *, m + 1);
    for (size_t j = 0; j < m; j++)
      archs[j] = oakuk_cluster_aggregate_arch(agg, j);
  }
  if (m > 0 && first_allowed == NULL) {
    if (why) {
      GString *list = g_string_new(NULL);
      append_list(list, archs, m, ", ");
      why_arch_excluded(ctx, why, list->str, arch_excluded_by(ctx, archs[0]));
      g_string_free(list, TRUE);
    }
    return false;
  }
  if (!oakuk_cluster_aggregate_has_virt(agg, OAKUK_VIRT_CONTAINER)) {
    if (why)
      g_string_append(why, "does not offer container");
    return false;
  }
  if (m > 0 && chosen == NULL) {
    if (why) {
      g_string_append(why, "arch ");
      append_list(why, archs, m, ", ");
      g_string_append(why, " not in service arch (");
      append_list(why, ctx->arch, ctx->narch, ", ");
      g_string_append_c(why, ')');
    }
    return false;
  }
  o->arch = chosen;
  o->arch_idx = -1;
  o->accel = OAKUK_ACCEL_NONE;
  return true;
}

static void why_unikernel_cluster(const SchedCtx *ctx, const oakuk_cluster_aggregate *agg,
                                  const char *run_arch, const char *allowed_arch, GString *why) {
  if (why == NULL)
    return;
  if (run_arch == NULL) {
    gssize c = ctx->narch > 0 ? arch_excluded_by(ctx, ctx->arch[0]) : -1;
    bool all_excluded = ctx->narch > 0;
    for (size_t i = 0; i < ctx->narch && all_excluded; i++)
      all_excluded = arch_excluded_by(ctx, ctx->arch[i]) >= 0;
    if (all_excluded) {
      GString *list = g_string_new(NULL);
      append_list(list, ctx->arch, ctx->narch, ", ");
      why_arch_excluded(ctx, why, list->str, c);
      g_string_free(list, TRUE);
      return;
    }
    size_t m = oakuk_cluster_aggregate_per_arch_count(agg);
    if (m == 0) {
      g_string_append(why, "no unikernel-capable nodes (service has ");
    } else {
      g_string_append(why, "arch ");
      for (size_t j = 0; j < m; j++)
        g_string_append_printf(why, "%s%s", j ? ", " : "", oakuk_cluster_aggregate_per_arch_name(agg, j));
      g_string_append(why, " has no kernel (service has ");
    }
    append_list(why, ctx->arch, ctx->narch, ", ");
    g_string_append_c(why, ')');
  } else if (allowed_arch == NULL) {
    arch_allowed(ctx, run_arch, why);
  } else {
    g_string_append_printf(why, "unikernel %s needs emulation (no KVM) but emulation is forbidden",
                           allowed_arch);
  }
}

/* Rank of an aggregate's per-arch option: fitting first, then KVM (or unknown) before TCG. */
static int cluster_opt_rank(const SchedOpt *o) {
  return (o->state == OPT_FITS ? 0 : 2) + (o->accel == OAKUK_ACCEL_TCG ? 1 : 0);
}

static bool cluster_unikernel(const SchedCtx *ctx, const oakuk_cluster_aggregate *agg, const SchedCand *c,
                              SchedOpt *o, GString *why) {
  if (!oakuk_cluster_aggregate_has_virt(agg, OAKUK_VIRT_UNIKERNEL)) {
    if (why)
      g_string_append(why, "does not offer unikernel");
    return false;
  }
  /* Without arch[] any architecture the cluster has unikernel nodes for will do. */
  size_t count = ctx->narch > 0 ? ctx->narch : oakuk_cluster_aggregate_per_arch_count(agg);
  gssize run = -1, allowed = -1;
  bool unused = false, found = false;
  for (size_t i = 0; i < count; i++) {
    const char *a = ctx->narch > 0 ? ctx->arch[i] : oakuk_cluster_aggregate_per_arch_name(agg, i);
    double cpu = 0;
    int64_t cores = 0, mem = 0;
    int32_t accel = OAKUK_ACCEL_NONE;
    if (!oakuk_cluster_aggregate_per_arch(agg, a, &cpu, &cores, NULL, &mem, &accel))
      continue;
    pick_named(&run, &unused, i, false);
    if (arch_excluded_by(ctx, a) >= 0)
      continue;
    pick_named(&allowed, &unused, i, false);
    if (accel == OAKUK_ACCEL_TCG && !ctx->emulation_allow)
      continue;
    SchedOpt cand = {0};
    cand.arch = a;
    cand.arch_idx = ctx->narch > 0 ? (int32_t)i : -1;
    cand.accel = accel == OAKUK_ACCEL_NONE ? OAKUK_ACCEL_KVM : accel;
    cand.accel_assumed = accel == OAKUK_ACCEL_NONE;
    opt_set_free(ctx, &cand, cores - c->res_vcpus, mem - c->res_mem, cpu);
    if (!found || cluster_opt_rank(&cand) < cluster_opt_rank(o)) {
      *o = cand;
      found = true;
    }
  }
  if (found)
    return true;
  const char *run_arch = NULL, *allowed_arch = NULL;
  if (run >= 0)
    run_arch = ctx->narch > 0 ? ctx->arch[run] : oakuk_cluster_aggregate_per_arch_name(agg, (size_t)run);
  if (allowed >= 0)
    allowed_arch =
        ctx->narch > 0 ? ctx->arch[allowed] : oakuk_cluster_aggregate_per_arch_name(agg, (size_t)allowed);
  why_unikernel_cluster(ctx, agg, run_arch, allowed_arch, why);
  return false;
}

/* Runs steps 1-4 for an aggregate; c->res_* must be filled. */
static void eval_cluster(const SchedCtx *ctx, const oakuk_cluster_aggregate *agg, SchedCand *c,
                         GString *why) {
  c->outcome = CAND_REJECTED;
  c->accel_check = ACCEL_UNCHECKED;
  if ((ctx->has_clusters || ctx->has_direct_cluster) &&
      !cluster_constraints_ok(ctx, oakuk_cluster_aggregate_id(agg), oakuk_cluster_aggregate_name(agg), why))
    return;
  if ((ctx->need_gpus > 0 || ctx->need_tpus > 0) &&
      !accelerators_ok(ctx, oakuk_cluster_aggregate_gpus(agg), oakuk_cluster_aggregate_tpus(agg),
                       "its active nodes report", why)) {
    c->accel_check = ACCEL_SHORT;
    return;
  }
  c->accel_check = ACCEL_MET;
  bool any_pass = false, any_fit = false;
  size_t start = why ? why->len : 0;
  for (size_t v = 0; v < ctx->nvariants; v++) {
    SchedOpt *o = &c->opt[v];
    memset(o, 0, sizeof *o);
    size_t before = why ? why->len : 0;
    if (why && before > start)
      g_string_append(why, "; ");
    bool pass;
    if (ctx->variants[v] == OAKUK_VIRT_CONTAINER) {
      pass = cluster_container(ctx, agg, o, why);
      if (pass)
        opt_set_free(ctx, o, oakuk_cluster_aggregate_cpu_cores(agg) - c->res_vcpus,
                     oakuk_cluster_aggregate_memory_mb(agg) - c->res_mem,
                     oakuk_cluster_aggregate_cpu_percent(agg));
    } else {
      pass = cluster_unikernel(ctx, agg, c, o, why);
    }
    if (!pass) {
      o->state = OPT_REJECTED;
      continue;
    }
    if (why)
      g_string_truncate(why, before);
    any_pass = true;
    any_fit = any_fit || o->state == OPT_FITS;
  }
  c->outcome = any_fit ? CAND_QUALIFIED : any_pass ? CAND_NO_CAPACITY : CAND_REJECTED;
}

/* ---------------------------------------------------------------------------------------------
 * Placement */

/* What can change after the decision (report timestamps, reservations) is snapshotted; the rest is
 * re-derived from the candidates, which the placement keeps referenced. */
typedef struct {
  size_t index;
  int64_t vcpus;
  int64_t memory_mb;
} ReservedSnap;

struct oakuk_placement {
  gint ref;
  bool ok;
  bool cluster_level;
  int32_t status;
  int32_t virt;
  int32_t accel;
  int32_t policy;
  int64_t index;
  int64_t now_ms;
  int64_t timeout_ms;
  int chosen_variant;
  char *target;
  char *arch;
  char *code;
  char *code_sha256;
  oakuk_microservice *ms;
  gpointer *targets; /* refs: oakuk_node_report* or oakuk_cluster_aggregate* */
  size_t n;
  int64_t *received; /* per candidate, when now_ms > 0 */
  GArray *reserved;  /* ReservedSnap, candidates with a reservation only; may be NULL */
  GPtrArray *lines;  /* formatted on first use */
};

OAKUK_API oakuk_placement *oakuk_placement_ref(oakuk_placement *p) {
  g_return_val_if_fail(p != NULL, NULL);
  g_atomic_int_inc(&p->ref);
  return p;
}

OAKUK_API void oakuk_placement_unref(oakuk_placement *p) {
  if (p == NULL || !g_atomic_int_dec_and_test(&p->ref))
    return;
  for (size_t i = 0; i < p->n; i++) {
    if (p->cluster_level)
      oakuk_cluster_aggregate_unref(p->targets[i]);
    else
      oakuk_node_report_unref(p->targets[i]);
  }
  g_free(p->targets);
  g_free(p->received);
  if (p->reserved)
    g_array_unref(p->reserved);
  oakuk_microservice_unref(p->ms);
  if (p->lines)
    g_ptr_array_unref(p->lines);
  g_free(p->target);
  g_free(p->arch);
  g_free(p->code);
  g_free(p->code_sha256);
  g_free(p);
}

OAKUK_DEFINE_GETTER(bool, oakuk_placement_ok, oakuk_placement, ok, false)

OAKUK_DEFINE_GETTER(const char *, oakuk_placement_target, oakuk_placement, target, NULL)

OAKUK_DEFINE_GETTER(int64_t, oakuk_placement_index, oakuk_placement, index, -1)

OAKUK_DEFINE_GETTER(int32_t, oakuk_placement_virt, oakuk_placement, virt, OAKUK_VIRT_NONE)

OAKUK_DEFINE_GETTER(const char *, oakuk_placement_arch, oakuk_placement, arch, NULL)

OAKUK_DEFINE_GETTER(const char *, oakuk_placement_code, oakuk_placement, code, NULL)

OAKUK_API const char *oakuk_placement_code_sha256(const oakuk_placement *p) {
  g_return_val_if_fail(p != NULL, NULL);
  return p->code_sha256;
}

OAKUK_DEFINE_GETTER(int32_t, oakuk_placement_accel, oakuk_placement, accel, OAKUK_ACCEL_NONE)

OAKUK_DEFINE_GETTER(int32_t, oakuk_placement_status, oakuk_placement, status, -1)

static const char *cand_id(const oakuk_placement *p, size_t i) {
  if (p->cluster_level) {
    const char *id = oakuk_cluster_aggregate_id(p->targets[i]);
    return id ? id : oakuk_cluster_aggregate_name(p->targets[i]);
  }
  return oakuk_node_report_id(p->targets[i]);
}

/* Steps 0-4 for candidate i, given its report time and reservations; why collects a rejection. */
static void cand_eval(const oakuk_placement *p, const SchedCtx *ctx, size_t i, int64_t received, SchedCand *c,
                      GString *why) {
  if (p->now_ms > 0 && received > 0 && p->now_ms - received > p->timeout_ms) {
    c->outcome = CAND_INACTIVE;
    c->age_ms = p->now_ms - received;
    return;
  }
  if (p->cluster_level)
    eval_cluster(ctx, p->targets[i], c, why);
  else
    eval_node(ctx, p->targets[i], c, why);
}

/* Orders two fitting options for the same service: KVM before TCG, then the policy, then id. */
static int opt_cmp(const oakuk_placement *p, size_t ia, const SchedOpt *a, size_t ib, const SchedOpt *b) {
  bool ta = !opt_well(a), tb = !opt_well(b);
  if (ta != tb)
    return ta ? 1 : -1;
  if (p->policy == OAKUK_SCHED_BEST_FIT) {
    if (a->free_mem != b->free_mem)
      return a->free_mem < b->free_mem ? -1 : 1;
    if (a->free_vcpus != b->free_vcpus)
      return a->free_vcpus < b->free_vcpus ? -1 : 1;
  } else {
    if (a->free_mem != b->free_mem)
      return a->free_mem > b->free_mem ? -1 : 1;
    if (a->free_vcpus != b->free_vcpus)
      return a->free_vcpus > b->free_vcpus ? -1 : 1;
    if (a->cpu != b->cpu)
      return a->cpu < b->cpu ? -1 : 1;
  }
  return g_strcmp0(cand_id(p, ia), cand_id(p, ib));
}

/* ---------------------------------------------------------------------------------------------
 * Explanation */

static void append_fmt1(GString *s, double d) {
  char buf[G_ASCII_DTOSTR_BUF_SIZE];
  g_string_append(s, g_ascii_formatd(buf, sizeof buf, "%.1f", d));
}

static void append_variant(GString *s, int32_t virt, const SchedOpt *o) {
  g_string_append(s, oakuk_virt_name(virt));
  if (o->arch)
    g_string_append_printf(s, " %s", o->arch);
  if (virt == OAKUK_VIRT_UNIKERNEL)
    g_string_append_printf(s, " via %s%s", oakuk_accel_name(o->accel), o->accel_assumed ? " (assumed)" : "");
}

/* The option a qualified candidate is shown (and ranked) with. */
static int display_variant(const oakuk_placement *p, const SchedCand *c) {
  if (p->chosen_variant >= 0 && c->opt[p->chosen_variant].state == OPT_FITS)
    return p->chosen_variant;
  for (int v = 0; v < SCHED_MAX_VARIANTS; v++)
    if (c->opt[v].state == OPT_FITS)
      return v;
  return 0;
}

typedef struct {
  const oakuk_placement *p;
  const SchedCand *cands;
} RankCtx;

static gint rank_cmp(gconstpointer pa, gconstpointer pb, gpointer data) {
  const RankCtx *rc = data;
  const oakuk_placement *p = rc->p;
  size_t ia = *(const size_t *)pa, ib = *(const size_t *)pb;
  int va = display_variant(p, &rc->cands[ia]), vb = display_variant(p, &rc->cands[ib]);
  if (va != vb) {
    if (va == p->chosen_variant || vb == p->chosen_variant)
      return va == p->chosen_variant ? -1 : 1;
    return va - vb;
  }
  return opt_cmp(p, ia, &rc->cands[ia].opt[va], ib, &rc->cands[ib].opt[vb]);
}

static size_t *compute_ranks(const oakuk_placement *p, const SchedCand *cands) {
  size_t *rank = g_new0(size_t, p->n + 1);
  GArray *q = g_array_new(FALSE, FALSE, sizeof(size_t));
  for (size_t i = 0; i < p->n; i++)
    if (cands[i].outcome == CAND_QUALIFIED)
      g_array_append_val(q, i);
  RankCtx rc = {p, cands};
  g_array_sort_with_data(q, rank_cmp, &rc);
  for (guint k = 0; k < q->len; k++)
    rank[g_array_index(q, size_t, k)] = k + 1;
  g_array_free(q, TRUE);
  return rank;
}

static void format_line(const oakuk_placement *p, const SchedCtx *ctx, size_t i, const SchedCand *c,
                        size_t rank, GString *s) {
  if (p->cluster_level) {
    const char *name = oakuk_cluster_aggregate_name(p->targets[i]);
    g_string_append_printf(s, "cluster %s: ", name ? name : cand_id(p, i));
  } else {
    g_string_append_printf(s, "node %s: ", oakuk_node_report_id(p->targets[i]));
  }
  switch (c->outcome) {
  case CAND_INACTIVE:
    g_string_append(s, "inactive (last report ");
    append_fmt1(s, (double)c->age_ms / 1000.0);
    g_string_append(s, " s ago, timeout ");
    append_fmt1(s, (double)p->timeout_ms / 1000.0);
    g_string_append(s, " s)");
    break;
  case CAND_REJECTED: {
    SchedCand copy = *c;
    cand_eval(p, ctx, i, 0, &copy, s);
    break;
  }
  case CAND_NO_CAPACITY: {
    const SchedOpt *o = &c->opt[0];
    for (size_t v = 0; v < ctx->nvariants; v++)
      if (c->opt[v].state == OPT_NO_CAPACITY) {
        o = &c->opt[v];
        break;
      }
    g_string_append_printf(s,
                           "insufficient resources: needs %" G_GINT64_FORMAT " vcpus / %" G_GINT64_FORMAT
                           " MB, free %" G_GINT64_FORMAT " vcpus / %" G_GINT64_FORMAT
                           " MB (reserved %" G_GINT64_FORMAT " vcpus / %" G_GINT64_FORMAT " MB)",
                           ctx->need_vcpus, ctx->need_mem, o->free_vcpus, o->free_mem, c->res_vcpus,
                           c->res_mem);
    break;
  }
  case CAND_QUALIFIED: {
    int v = display_variant(p, c);
    const SchedOpt *o = &c->opt[v];
    bool chosen = (int64_t)i == p->index;
    if (chosen)
      g_string_append(s, "chosen (");
    else
      g_string_append_printf(s, "qualified, not chosen (rank %zu; ", rank);
    append_variant(s, ctx->variants[v], o);
    if (chosen)
      g_string_append_printf(s, "; %s: ", p->policy == OAKUK_SCHED_BEST_FIT ? "best-fit" : "most-free");
    else
      g_string_append(s, "; ");
    g_string_append_printf(s, "%" G_GINT64_FORMAT " MB, %" G_GINT64_FORMAT " vcpus free, cpu ", o->free_mem,
                           o->free_vcpus);
    append_fmt1(s, o->cpu);
    g_string_append(s, "%)");
    break;
  }
  default: break;
  }
}

static GPtrArray *format_lines(const oakuk_placement *p) {
  GPtrArray *lines = g_ptr_array_new_full((guint)p->n, g_free);
  SchedCtx ctx;
  ctx_init(&ctx, p->ms, p->cluster_level, p->policy);
  SchedCand *cands = g_new0(SchedCand, p->n + 1);
  for (guint k = 0; p->reserved && k < p->reserved->len; k++) {
    const ReservedSnap *r = &g_array_index(p->reserved, ReservedSnap, k);
    cands[r->index].res_vcpus = r->vcpus;
    cands[r->index].res_mem = r->memory_mb;
  }
  for (size_t i = 0; i < p->n; i++)
    cand_eval(p, &ctx, i, p->received ? p->received[i] : 0, &cands[i], NULL);
  size_t *rank = compute_ranks(p, cands);
  for (size_t i = 0; i < p->n; i++) {
    GString *s = g_string_new(NULL);
    format_line(p, &ctx, i, &cands[i], rank[i], s);
    g_ptr_array_add(lines, g_string_free(s, FALSE));
  }
  g_free(rank);
  g_free(cands);
  ctx_clear(&ctx);
  return lines;
}

static GPtrArray *placement_lines(const oakuk_placement *p) {
  oakuk_placement *mut = (oakuk_placement *)p; /* formatted once, then immutable */
  if (g_once_init_enter(&mut->lines))
    g_once_init_leave(&mut->lines, format_lines(p));
  return p->lines;
}

OAKUK_DEFINE_GETTER(size_t, oakuk_placement_explanation_count, oakuk_placement, n, 0)

OAKUK_API const char *oakuk_placement_explanation(const oakuk_placement *p, size_t i) {
  g_return_val_if_fail(p != NULL, NULL);
  if (i >= p->n)
    return NULL;
  return g_ptr_array_index(placement_lines(p), i);
}

OAKUK_API char *oakuk_placement_explain(const oakuk_placement *p) {
  g_return_val_if_fail(p != NULL, NULL);
  GPtrArray *lines = placement_lines(p);
  GString *s = g_string_new(NULL);
  for (guint i = 0; i < lines->len; i++)
    g_string_append_printf(s, "%s%s", i ? "\n" : "", (const char *)g_ptr_array_index(lines, i));
  return g_string_free(s, FALSE);
}

/* ---------------------------------------------------------------------------------------------
 * Selection */

static oakuk_placement *placement_new(const oakuk_microservice *ms, bool cluster_level,
                                      gpointer const *targets, size_t n, const oakuk_sched_options *o) {
  oakuk_placement *p = g_new0(oakuk_placement, 1);
  p->ref = 1;
  p->cluster_level = cluster_level;
  p->policy = o->policy;
  p->now_ms = o->now_ms;
  p->timeout_ms = o->timeout_ms;
  p->index = -1;
  p->chosen_variant = -1;
  p->virt = OAKUK_VIRT_NONE;
  p->accel = OAKUK_ACCEL_NONE;
  p->ms = oakuk_microservice_ref((oakuk_microservice *)ms);
  p->n = n;
  p->targets = g_new(gpointer, n + 1);
  for (size_t i = 0; i < n; i++)
    p->targets[i] = cluster_level ? (gpointer)oakuk_cluster_aggregate_ref(targets[i])
                                  : (gpointer)oakuk_node_report_ref(targets[i]);
  if (p->now_ms > 0)
    p->received = g_new(int64_t, n + 1);
  return p;
}

typedef struct {
  gssize best[SCHED_MAX_VARIANTS];       /* best fitting candidate per variant */
  SchedOpt best_opt[SCHED_MAX_VARIANTS]; /* its option */
  bool well_any[SCHED_MAX_VARIANTS];     /* some candidate runs the variant well */
  bool any_pass;                         /* some candidate passed steps 0-3 */
  bool any_accel_short;                  /* some candidate checked lacked GPUs/TPUs */
  bool any_accel_ok;                     /* some candidate checked had them */
} Decision;

/* One pass over the candidates (steps 0-4), keeping the best fitting one per variant. */
static void evaluate_all(oakuk_placement *p, const SchedCtx *ctx, const oakuk_reservations *res,
                         Decision *d) {
  memset(d, 0, sizeof *d);
  for (size_t v = 0; v < SCHED_MAX_VARIANTS; v++)
    d->best[v] = -1;
  bool have_res = res != NULL && g_hash_table_size(res->by_target) > 0;
  for (size_t i = 0; i < p->n; i++) {
    SchedCand c; /* eval fills what it reports; only the reservation inputs need a value */
    c.res_vcpus = 0;
    c.res_mem = 0;
    int64_t received = p->cluster_level ? oakuk_cluster_aggregate_received_at_ms(p->targets[i])
                                        : oakuk_node_report_received_at_ms(p->targets[i]);
    if (p->received)
      p->received[i] = received;
    if (have_res) {
      reservations_total_locked(res, cand_id(p, i), &c.res_vcpus, &c.res_mem);
      if (c.res_vcpus != 0 || c.res_mem != 0) {
        if (p->reserved == NULL)
          p->reserved = g_array_new(FALSE, FALSE, sizeof(ReservedSnap));
        ReservedSnap snap = {i, c.res_vcpus, c.res_mem};
        g_array_append_val(p->reserved, snap);
      }
    }
    c.accel_check = ACCEL_UNCHECKED;
    cand_eval(p, ctx, i, received, &c, NULL);
    if (c.outcome == CAND_NO_CAPACITY || c.outcome == CAND_QUALIFIED)
      d->any_pass = true;
    d->any_accel_short = d->any_accel_short || c.accel_check == ACCEL_SHORT;
    d->any_accel_ok = d->any_accel_ok || c.accel_check == ACCEL_MET;
    if (c.outcome != CAND_QUALIFIED)
      continue;
    for (size_t v = 0; v < ctx->nvariants; v++) {
      const SchedOpt *o = &c.opt[v];
      if (o->state != OPT_FITS)
        continue;
      d->well_any[v] = d->well_any[v] || opt_well(o);
      if (d->best[v] < 0 || opt_cmp(p, i, o, (size_t)d->best[v], &d->best_opt[v]) < 0) {
        d->best[v] = (gssize)i;
        d->best_opt[v] = *o;
      }
    }
  }
}

/* Step 5: the earliest variant some candidate runs well, else the earliest runnable at all. */
static int choose_variant(const SchedCtx *ctx, const Decision *d) {
  for (size_t v = 0; v < ctx->nvariants; v++)
    if (d->well_any[v])
      return (int)v;
  for (size_t v = 0; v < ctx->nvariants; v++)
    if (d->best[v] >= 0)
      return (int)v;
  return -1;
}

static void append_service_variants(GString *s, const SchedCtx *ctx) {
  for (size_t v = 0; v < ctx->nvariants; v++) {
    g_string_append_printf(s, "%s%s", v ? " or " : "", oakuk_virt_name(ctx->variants[v]));
    if (ctx->narch > 0) {
      g_string_append_c(s, ' ');
      append_list(s, ctx->arch, ctx->narch, "/");
    }
  }
  if (ctx->nvariants == 0)
    g_string_append(s, "no known virtualization");
}

/* When no candidate reports the accelerators the service asks for, that is the reason to give. */
static void append_accelerator_reason(GString *s, const SchedCtx *ctx, const Decision *d, const char *what) {
  if (!d->any_accel_short || d->any_accel_ok)
    return;
  bool gpu = ctx->need_gpus > 0;
  int64_t need = gpu ? ctx->need_gpus : ctx->need_tpus;
  g_string_append_printf(s, "; no %s reports the %" G_GINT64_FORMAT " %s%s the service asks for (%s)", what,
                         need, gpu ? "GPU" : "TPU", need == 1 ? "" : "s", gpu ? "vgpus" : "vtpus");
}

static int fail_placement(oakuk_placement *p, const SchedCtx *ctx, const Decision *d, oakuk_error **error) {
  bool any_pass = d->any_pass;
  p->status = p->cluster_level ? OAKUK_STATUS_NO_ACTIVE_CLUSTER
              : any_pass       ? OAKUK_STATUS_NO_WORKER_CAPACITY
                               : OAKUK_STATUS_NO_QUALIFIED_WORKER;
  GString *s = g_string_new(NULL);
  const char *what = p->cluster_level ? "cluster" : "node";
  g_string_append_printf(s, "%s: ", oakuk_instance_status_name(p->status));
  if (any_pass)
    g_string_append_printf(
        s, "no qualified %s has %" G_GINT64_FORMAT " vcpus / %" G_GINT64_FORMAT " MB free for ", what,
        ctx->need_vcpus, ctx->need_mem);
  else
    g_string_append_printf(s, "no %s can run ", what);
  append_service_variants(s, ctx);
  g_string_append_printf(s, " (%zu candidates rejected)", p->n);
  append_accelerator_reason(s, ctx, d, what);
  oakuk_set_error(error, OAKUK_ENOCAPACITY, 0, NULL, "%s", s->str);
  g_string_free(s, TRUE);
  return OAKUK_ENOCAPACITY;
}

static void fill_choice(oakuk_placement *p, const SchedCtx *ctx, size_t i, int v, const SchedOpt *o) {
  size_t code_idx = o->arch_idx < 0 ? 0 : (size_t)o->arch_idx;
  p->ok = true;
  p->status = p->cluster_level ? OAKUK_STATUS_CLUSTER_SCHEDULED : OAKUK_STATUS_NODE_SCHEDULED;
  p->index = (int64_t)i;
  p->chosen_variant = v;
  p->target = g_strdup(cand_id(p, i));
  p->virt = ctx->variants[v];
  p->arch = g_strdup(o->arch);
  p->accel = o->accel;
  p->code = g_strdup(oakuk_microservice_code(ctx->ms, p->virt, code_idx));
  p->code_sha256 = g_strdup(oakuk_microservice_code_sha256(ctx->ms, p->virt, code_idx));
}

static int select_common(oakuk_placement **out, const oakuk_microservice *ms, bool cluster_level,
                         gpointer const *targets, size_t n, oakuk_reservations *res, const char *reserve_key,
                         const oakuk_sched_options *opts, oakuk_error **error) {
  oakuk_sched_options o;
  int rc = check_options(opts, &o, error);
  if (rc < 0)
    return rc;
  SchedCtx ctx;
  ctx_init(&ctx, ms, cluster_level, o.policy);
  oakuk_placement *p = placement_new(ms, cluster_level, targets, n, &o);
  Decision d;
  /* Held across decide-and-reserve so concurrent schedulers cannot both take the last slot. */
  if (res)
    g_mutex_lock(&res->lock);
  evaluate_all(p, &ctx, res, &d);
  int v = choose_variant(&ctx, &d);
  if (v >= 0) {
    fill_choice(p, &ctx, (size_t)d.best[v], v, &d.best_opt[v]);
    if (res && reserve_key)
      reservations_add_locked(res, reserve_key, p->target, ctx.need_vcpus, ctx.need_mem);
    rc = OAKUK_OK;
  } else {
    rc = fail_placement(p, &ctx, &d, error);
  }
  if (res)
    g_mutex_unlock(&res->lock);
  ctx_clear(&ctx);
  *out = p;
  return rc;
}

OAKUK_API int oakuk_sched_select_node(oakuk_placement **out, const oakuk_microservice *ms,
                                      oakuk_node_report *const *nodes, size_t n,
                                      oakuk_reservations *reservations, const char *reserve_key,
                                      const oakuk_sched_options *opts, oakuk_error **error) {
  g_return_val_if_fail(out != NULL && ms != NULL, OAKUK_EINVAL);
  g_return_val_if_fail(nodes != NULL || n == 0, OAKUK_EINVAL);
  *out = NULL;
  return select_common(out, ms, false, (gpointer const *)nodes, n, reservations, reserve_key, opts, error);
}

OAKUK_API int oakuk_sched_select_cluster(oakuk_placement **out, const oakuk_microservice *ms,
                                         oakuk_cluster_aggregate *const *clusters, size_t n,
                                         oakuk_reservations *reservations, const char *reserve_key,
                                         const oakuk_sched_options *opts, oakuk_error **error) {
  g_return_val_if_fail(out != NULL && ms != NULL, OAKUK_EINVAL);
  g_return_val_if_fail(clusters != NULL || n == 0, OAKUK_EINVAL);
  *out = NULL;
  return select_common(out, ms, true, (gpointer const *)clusters, n, reservations, reserve_key, opts, error);
}

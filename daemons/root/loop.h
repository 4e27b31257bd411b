/* The root's control loop (docs/reconcile.md "The loops / Root"): it owns every decision —
 * placement with liboakuk's cluster selection, retries with per-instance backoff, refusals and
 * their expiry, silent clusters and moves, re-adoption when a cluster comes back, deletes until
 * confirmed. It runs on every change and on a 1 s timer; it reads typed values, never HTTP. */
#ifndef OAKUK_ROOT_LOOP_H
#define OAKUK_ROOT_LOOP_H

#include "root.h"
#include "store.h"

G_BEGIN_DECLS

/* How long a refusal keeps a cluster out of an instance's candidates. */
#define LOOP_REFUSAL_MS 30000
/* Placement retries: 1, 2, 4 ... 30 s. */
#define LOOP_BACKOFF_MAX_MS 30000
/* A full-state aggregate that lacks a copy (or still lists a deleted one) is believed only when the
 * cluster's last answer about that copy is older than this: the aggregate may have been folded
 * before that answer. */
#define LOOP_GRACE_MS 5000

/* What a cluster says about one instance: a status report entry, or an entry of its aggregate's
 * instances list. Validated by the adapter. */
typedef struct {
  const char *job_id; /* service id or job_name */
  gint64 instance;
  gint64 generation; /* 0: not given (a cluster older than generations) */
  int32_t status;
  const char *status_detail; /* NULL: not given */
  const char *node;          /* NULL: not given */
  gboolean ready;
  gint64 ready_ms;      /* the node's figure; -1: absent */
  const char *publicip; /* NULL: not given */
  gboolean has_cpu, has_memory;
  double cpu, memory;
} LoopObservation;

/* A cluster aggregate as the loop uses it. */
typedef struct {
  oakuk_cluster_aggregate *agg; /* identity and receive time are set by the loop */
  gboolean has_nodes;           /* the aggregate carried a "nodes" list */
  GPtrArray *active_nodes;      /* oakuk_node_report*: the nodes marked active and not drained */
  GPtrArray *node_ids;          /* char*: every node it listed */
  char *stored;                 /* the aggregate as kept in the database (JSON, without "instances") */
} LoopAggregate;

void loop_aggregate_free(LoopAggregate *a);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(LoopAggregate, loop_aggregate_free)

Loop *loop_new(Root *r);
void loop_free(Loop *l);
/* A registered cluster and its stored aggregate (NULL: none yet), before loop_start. */
void loop_load_cluster(Loop *l, const char *id, const char *name, LoopAggregate *agg, gint64 received_at);
/* Rebuilds reservations, starts the 1 s timer and runs a first pass. */
void loop_start(Loop *l);
/* Runs a pass soon (coalesced). */
void loop_kick(Loop *l);

/* ---- the user API's changes (each commits before it returns TRUE) ---- */

/* Creates the service's next instance and places it at once; the new row. */
StoreInstance *loop_instance_create(Loop *l, const char *service_id, GError **error);
/* Starts removing an instance: *removed when it is gone at once (never placed), else it waits for
 * its cluster's confirmation (desired: delete). */
gboolean loop_instance_delete(Loop *l, const char *service_id, gint64 n, gboolean *removed, GError **error);
gboolean loop_service_delete(Loop *l, const char *service_id, GError **error);
gboolean loop_application_delete(Loop *l, const char *app_id, GError **error);
/* Moves the cluster's instances to other clusters and forgets it (token, subnet share). */
gboolean loop_cluster_remove(Loop *l, const char *cluster_id, GError **error);

/* ---- what clusters send ---- */

/* A cluster registers (again, under its name: same id and subnet) with its credential (the salt that
 * derives it and the hash of its secret). *exhausted when no subnet is left; consumed_join_hash (or
 * NULL) is the join token to use once. */
gboolean loop_cluster_register(Loop *l, const char *id, const char *name, const char *location,
                               const char *url, const char *cred_salt, const char *cred_hash,
                               const char *consumed_join_hash, char **subnet, gboolean *exhausted,
                               GError **error);
/* What the cluster cid reported of instance n of sid: CPU (% of one core) and memory (MB resident)
 * now, and the last LOOP_USAGE_SAMPLES reports (oldest first, from first), in memory only. */
#define LOOP_USAGE_SAMPLES 100
typedef struct {
  double cpu, memory;
  gint64 at_ms; /* wall clock */
} LoopUsageSample;
typedef struct {
  double cpu, memory;
  guint first, count;
  LoopUsageSample samples[LOOP_USAGE_SAMPLES];
  guint round;
} LoopUsage;
/* NULL when the cluster reported none. */
const LoopUsage *loop_instance_usage(Loop *l, const char *cid, const char *sid, gint64 n);
gboolean loop_status_report(Loop *l, const char *cluster_id, const LoopObservation *obs, guint n,
                            GError **error);
/* agg is taken. instances[0..n_instances) is the cluster's full state; n_instances < 0 when the
 * aggregate had no list (a cluster older than docs/reconcile.md). */
gboolean loop_aggregate(Loop *l, const char *cluster_id, LoopAggregate *agg, const LoopObservation *instances,
                        gssize n_instances, GError **error);

/* ---- what the views need to know ---- */

gboolean loop_cluster_active(Loop *l, const char *cluster_id);
guint loop_clusters_active(Loop *l);
/* The status_detail users see: the stored detail, the root's note, and for an instance on a silent
 * cluster "cluster <name> silent for N s". */
char *loop_instance_detail(Loop *l, const StoreInstance *i);
/* The clusters whose last aggregate lists node (char*; node ids are unique within a cluster only). */
GPtrArray *loop_node_clusters(Loop *l, const char *node);

G_END_DECLS

#endif

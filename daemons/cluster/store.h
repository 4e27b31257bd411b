/* oakuk-cluster's state store: the one owner of cluster.db (SQLite). Every SQL statement of the
 * daemon is in store.c; callers see typed rows. Schema version 3 (PRAGMA user_version); a
 * cluster.db of an older oakuk-cluster is brought up to date by store_open. */
#ifndef OAKUK_CLUSTER_STORE_H
#define OAKUK_CLUSTER_STORE_H

#include <glib.h>
#include <json-glib/json-glib.h>
#include <oakuk/oakuk.h>

G_BEGIN_DECLS

#define STORE_SCHEMA_VERSION 3

typedef struct Store Store;

/* An instance the cluster holds: what the root wants (job, generation) and where the cluster put
 * it (node, node_generation, ip, placement), with what it last observed there. */
typedef struct {
  char *name; /* <job_name>.instance.<n> */
  char *job_id;
  char *job_name;
  gint64 number;
  gint64 generation;      /* the root's */
  char *node;             /* the node it is assigned to ("" only for a node removed under it) */
  gint64 node_generation; /* the cluster's generation of that assignment */
  char *ip;
  char *placement; /* the variant chosen for the node: {virtualization, arch, code, code_sha256?, accel?} */
  int32_t status;
  char *detail;
  gboolean ready;
  gint64 ready_ms; /* -1: none */
  char *job;       /* the root's job (every variant), without instance_list, placement, generation */
  int32_t restart;
  gint64 reschedule_after_s;
  gint64 vcpus, memory_mb; /* what it reserves on its node */
} StoreInstance;

/* A copy on a node the cluster no longer wants there: a control/delete (generation <= generation)
 * is pending until the node confirms. kind: "moved" (its node fell silent), "failed", "drain",
 * "deleted" (by the root), "replaced". hold: the delete waits until the instance RUNs elsewhere. */
typedef struct {
  char *name;
  char *node;
  gint64 generation;
  char *job_name;
  gint64 number;
  char *ip;
  char *placement;
  char *kind;
  gboolean hold;
  gint64 since_ms; /* wall clock */
} StoreOldCopy;

typedef struct {
  char *id;
  gint64 subnet_index;
  char *subnet;
  char *ip;
  gboolean drained;
} StoreNode;

typedef struct {
  gint64 id;
  char *node;
  char *instance;
  char *topic;
  char *payload;
} StoreDelivery;

/* A status report for the root, as queued in the outbox. */
typedef struct {
  gint64 id;
  char *job_id;
  gint64 number;
  gint64 generation;
  char *status;
  char *detail;
  char *node; /* "" when none */
  gboolean ready;
  gint64 ready_ms; /* -1: none */
} StoreStatus;

void store_instance_free(StoreInstance *i);
StoreInstance *store_instance_copy(const StoreInstance *i);
void store_old_copy_free(StoreOldCopy *o);
void store_node_free(StoreNode *n);
void store_delivery_free(StoreDelivery *d);
void store_status_free(StoreStatus *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(StoreInstance, store_instance_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(StoreOldCopy, store_old_copy_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(StoreNode, store_node_free)

/* Opens (creating) path and brings its schema to STORE_SCHEMA_VERSION. now_ms (wall clock) and
 * avoid_ms date the avoid entries carried over from version 1, which had no expiry. */
Store *store_open(const char *path, gint64 now_ms, gint64 avoid_ms, GError **error);
void store_close(Store *s);
gint64 store_schema_version(Store *s);
/* Rows changed since the store was opened (to tell whether a transaction changed anything). */
gint64 store_total_changes(Store *s);

gboolean store_begin(Store *s, GError **error);
gboolean store_commit(Store *s, GError **error);
void store_rollback(Store *s);

/* ---- key/value (registration, secrets, last handed-out addresses) ---- */
char *store_kv_get(Store *s, const char *key);
gboolean store_kv_set(Store *s, const char *key, const char *value, GError **error);

/* ---- node join tokens (the SHA-256 of their secret), with an expiry (s) and uses left ---- */
gboolean store_join_token_add(Store *s, const char *hash, gint64 now_s, gint64 expires_s, gint64 uses,
                              GError **error);
/* Known, not expired at now_s and not used up. */
gboolean store_join_token_usable(Store *s, const char *hash, gint64 now_s);
/* Uses the token once (inside the registration's transaction); an OD_ERROR_AUTH error when it is
 * expired or used up by now. */
gboolean store_join_token_use(Store *s, const char *hash, gint64 now_s, GError **error);

/* ---- nodes ---- */
StoreNode *store_node_get(Store *s, const char *id);
/* The stored hash of a node's MQTT password (its credential), or NULL for an unknown node. */
char *store_node_cred_hash(Store *s, const char *id);
GPtrArray *store_node_list(Store *s); /* of StoreNode*, by id */
gboolean store_node_subnet_index_used(Store *s, gint64 index);
/* Inserts a node, or gives a registered one new credentials and address (subnet kept). */
gboolean store_node_register(Store *s, const char *id, const char *cred_hash, gint64 subnet_index,
                             const char *subnet, const char *ip, gint64 now_ms, GError **error);
gboolean store_node_set_ip(Store *s, const char *id, const char *ip, GError **error);
/* Saves reports (node id -> report JSON) as the nodes' last reports, in one transaction that is not
 * synced to disk at its commit (reports are soft state; store.c says what that risks). */
gboolean store_node_reports_save(Store *s, GHashTable *reports, GError **error);
gboolean store_node_set_drained(Store *s, const char *id, gboolean drained, GError **error);
/* The last report of every node that sent one: id -> report JSON. */
GHashTable *store_node_reports(Store *s);
/* Forgets a node: its row (freeing its subnet), its old copies, deliveries and avoid entries. */
gboolean store_node_delete(Store *s, const char *id, GError **error);

/* ---- instances ---- */
StoreInstance *store_instance_get(Store *s, const char *name);
/* By the root's service id (or, with by_name, also the job name) and instance number. */
StoreInstance *store_instance_find(Store *s, const char *job_id, gint64 number, gboolean by_name);
GPtrArray *store_instance_list(Store *s); /* of StoreInstance*, by name */
/* Inserts or replaces the row of i->name. */
gboolean store_instance_put(Store *s, const StoreInstance *i, GError **error);
gboolean store_instance_delete(Store *s, const char *name, GError **error);
/* The stored job as liboakuk's service (it was validated when it came in); NULL with error when
 * it no longer parses (a cluster.db edited by hand). */
oakuk_microservice *store_instance_service(const StoreInstance *i, GError **error);
/* The highest node generation the cluster ever gave name (the instance and its old copies). */
gint64 store_node_generation_max(Store *s, const char *name);
/* Whether an instance or an old copy on node holds ip. */
gboolean store_ip_in_use(Store *s, const char *node, const char *ip);

/* ---- old copies ---- */
/* Adds one, or raises the generation of the one of (name, node). */
gboolean store_old_copy_put(Store *s, const StoreOldCopy *o, GError **error);
StoreOldCopy *store_old_copy_get(Store *s, const char *name, const char *node);
GPtrArray *store_old_copy_list(Store *s, const char *name_or_null); /* of StoreOldCopy* */
gboolean store_old_copy_release(Store *s, const char *name, const char *node, GError **error);
gboolean store_old_copy_delete(Store *s, const char *name, const char *node, GError **error);

/* ---- avoid entries (node -> until, wall clock ms) ---- */
gboolean store_avoid_add(Store *s, const char *name, const char *node, gint64 until_ms, GError **error);
/* The unexpired ones of name: node -> gint64* until. */
GHashTable *store_avoid_get(Store *s, const char *name, gint64 now_ms);
gboolean store_avoid_expire(Store *s, gint64 now_ms, GError **error);
gboolean store_avoid_forget(Store *s, const char *name, GError **error);

/* ---- deliveries: control messages for nodes, kept until the broker acknowledges them ---- */
gboolean store_delivery_add(Store *s, const char *node, const char *instance, const char *kind,
                            const char *payload, GError **error);
GPtrArray *store_delivery_list(Store *s); /* of StoreDelivery*, oldest first */
void store_delivery_done(Store *s, gint64 id);
/* Drops the queued kind ("deploy", "delete") messages of instance for node. */
gboolean store_delivery_drop(Store *s, const char *node, const char *instance, const char *kind,
                             GError **error);
gboolean store_delivery_pending(Store *s, const char *node, const char *instance, const char *kind);

/* ---- status outbox (reports for the root) ---- */
gboolean store_outbox_add(Store *s, const StoreStatus *st, GError **error);
GPtrArray *store_outbox_batch(Store *s, guint limit); /* of StoreStatus*, oldest first */
void store_outbox_drop_upto(Store *s, gint64 id);

/* ---- explanations (the last node selection of a job) ---- */
gboolean store_explanation_set(Store *s, const char *job_id, const char *job_name, gint64 number,
                               const char *lines_json, GError **error);
/* {service, job_name, instance, lines} for a service id or job name, or NULL. */
JsonObject *store_explanation_get(Store *s, const char *key);

/* ---- views ---- */
JsonArray *store_peers_table(Store *s);
JsonArray *store_services_table(Store *s);

typedef enum {
  STORE_COUNT_NODES,
  STORE_COUNT_READY,
  STORE_COUNT_DELIVERIES,
  STORE_COUNT_OUTBOX,
  STORE_COUNT_OLD_COPIES,
} StoreCount;
gint64 store_count(Store *s, StoreCount what);
/* status name -> count, by name. */
GPtrArray *store_status_counts(Store *s); /* of "STATUS\tcount" strings */

G_END_DECLS

#endif

/* The root's state store: the one file that owns SQLite — the schema and its version, the
 * migrations from older versions, transactions, and every statement of oakuk-root
 * (docs/reconcile.md "State at each level"). Callers see typed rows, never SQL. */
#ifndef OAKUK_ROOT_STORE_H
#define OAKUK_ROOT_STORE_H

#include "daemon-common.h"

G_BEGIN_DECLS

/* Schema version kept in PRAGMA user_version: 1 was the schema without a version (instances as
 * instance_list inside the service documents, a forwards table); 2 keeps instances in their own
 * table with desired and observed state; 3 adds users' roles, join tokens' uses and clusters'
 * credentials; 4 adds service revisions (the spec each instance runs, for rolling updates). */
#define STORE_SCHEMA_VERSION 4

typedef struct Store Store;

/* Opens (creating or upgrading) root.db at path. now_ms stamps what a migration creates. */
Store *store_open(const char *path, gint64 now_ms, GError **error);
void store_free(Store *s);

/* Every accepted change is committed before its reply. */
gboolean store_begin(Store *s, GError **error);
gboolean store_commit(Store *s, GError **error);
void store_rollback(Store *s);

/* ---- users, join tokens ---- */

typedef struct {
  char *name, *role, *password; /* password: the stored hash */
} StoreUser;

void store_user_free(StoreUser *u);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(StoreUser, store_user_free)

StoreUser *store_user_get(Store *s, const char *name); /* NULL when unknown */
GPtrArray *store_users_all(Store *s);                  /* StoreUser*, in creation order */
char *store_user_password(Store *s, const char *name); /* the stored hash, or NULL */
gboolean store_user_exists(Store *s, const char *name);
/* Sets the password of name, creating it as an Admin when it does not exist. */
gboolean store_user_set_password(Store *s, const char *name, const char *hash, GError **error);
gboolean store_user_insert(Store *s, const char *name, const char *hash, const char *role, GError **error);
gboolean store_user_set_role(Store *s, const char *name, const char *role, GError **error);
gboolean store_user_delete(Store *s, const char *name, GError **error);
gint64 store_user_count_role(Store *s, const char *role);
/* Join tokens by the SHA-256 of their secret: valid until expires_at_s while uses are left. */
gboolean store_join_token_add(Store *s, const char *hash, gint64 expires_at_s, gint64 uses, GError **error);
gboolean store_join_token_valid(Store *s, const char *hash, gint64 now_s);
/* Uses the token once; the last use removes it. */
gboolean store_join_token_consume(Store *s, const char *hash, GError **error);
gboolean store_join_tokens_expire(Store *s, gint64 now_s, GError **error);

/* ---- applications and services ---- */

typedef struct {
  char *id, *user, *name, *namespace_, *doc; /* doc: the application document (JSON) */
} StoreApplication;

typedef struct {
  char *id, *app_id, *user;
  char *doc;     /* the service document without its per-instance keys (JSON object) */
  char *ms;      /* the microservice as liboakuk serialized it (JSON) */
  char *explain; /* the last cluster selection, one line per cluster */
  gint64 next_instance;
  char *status;    /* the status of the latest instance event */
  gint64 revision; /* of doc and ms, from 1; raised by each change of the spec */
} StoreService;

void store_application_free(StoreApplication *a);
void store_service_free(StoreService *sv);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(StoreApplication, store_application_free)
G_DEFINE_AUTOPTR_CLEANUP_FUNC(StoreService, store_service_free)

/* NULL when unknown. */
StoreApplication *store_application_get(Store *s, const char *id);
/* The user's applications in creation order (StoreApplication*). */
GPtrArray *store_applications_of_user(Store *s, const char *user);
GPtrArray *store_applications_all(Store *s); /* every user's */
char *store_application_find(Store *s, const char *user, const char *name, const char *namespace_);
gboolean store_application_insert(Store *s, const StoreApplication *a, gint64 created_ms, GError **error);
gboolean store_application_set_doc(Store *s, const char *id, const char *doc, GError **error);
/* Deletes the application with its services and their instances (not their pending deletes). */
gboolean store_application_delete(Store *s, const char *id, GError **error);

StoreService *store_service_get(Store *s, const char *id);
/* Resolves a cluster's job_id: a service id or a job_name. NULL when unknown. */
char *store_service_resolve(Store *s, const char *job_id);
GPtrArray *store_services_of_app(Store *s, const char *app_id);
GPtrArray *store_services_of_user(Store *s, const char *user);
GPtrArray *store_services_all(Store *s); /* every user's */
gboolean store_service_insert(Store *s, const StoreService *sv, GError **error);
gboolean store_service_set_explain(Store *s, const char *id, const char *explain, GError **error);
gboolean store_service_set_status(Store *s, const char *id, const char *status, GError **error);
/* Returns the number the next instance gets and counts it as taken. */
gboolean store_service_take_number(Store *s, const char *id, gint64 *n, GError **error);
gboolean store_service_delete(Store *s, const char *id, GError **error);
/* The spec (doc and ms, either may be NULL) of revision of service id: the current one or one kept
 * for the instances that still run it. FALSE when there is no such revision. */
gboolean store_service_spec(Store *s, const char *id, gint64 revision, char **doc, char **ms);
/* The highest revision the service ever had (numbers are never given twice). */
gint64 store_service_revision_max(Store *s, const char *id);
/* The kept (non-current) revisions of service id, ascending (gint64). */
GArray *store_service_revisions(Store *s, const char *id);
/* Makes doc and ms, as revision, the current spec of service id. The former current one is kept
 * while instances run it; revision's kept copy, if any, is dropped (it is current again). */
gboolean store_service_set_spec(Store *s, const char *id, gint64 revision, const char *doc, const char *ms,
                                GError **error);

/* ---- instances: desired and observed state ---- */

typedef struct {
  char *service_id;
  gint64 number;
  gboolean deleting; /* desired: delete (until the cluster confirms); else desired: run */
  gint64 generation; /* raised at every assignment to a cluster */
  char *cluster_id;  /* "" = unplaced */
  gint64 assigned_at;
  /* observed (about `generation` on `cluster_id`), or the root's own scheduling outcome */
  char *status, *status_detail;
  char *note; /* the root's own remark shown after status_detail (a move, why no move) */
  char *node, *publicip;
  double cpu, memory;
  gboolean ready;
  gint64 ready_ms, node_ready_ms, requested_at; /* -1 = absent */
  char *placement;                              /* JSON {virtualization, arch?} or NULL */
  /* retries of placement and moves */
  gint64 next_try_at, backoff_ms;
  /* the copy left on a silent cluster when the instance was moved away from it */
  char *moved_from;
  gint64 moved_generation, moved_at;
  /* the deploy of `generation` to `cluster_id`: pending until the cluster answered */
  gboolean deploy_pending;
  gint64 deploy_attempts, deploy_next_at, deploy_done_at;
  char *deploy_error;
  char *extra;     /* keys of a migrated instance entry this version does not know (JSON), or NULL */
  gint64 revision; /* the service revision it runs (the spec its deploys carry) */
} StoreInstance;

StoreInstance *store_instance_new(const char *service_id, gint64 number);
void store_instance_free(StoreInstance *i);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(StoreInstance, store_instance_free)

StoreInstance *store_instance_get(Store *s, const char *service_id, gint64 number);
/* Inserts or replaces the whole row. */
gboolean store_instance_put(Store *s, const StoreInstance *i, GError **error);
gboolean store_instance_delete(Store *s, const char *service_id, gint64 number, GError **error);
GPtrArray *store_instances_of_service(Store *s, const char *service_id);
/* Wanted (desired: run) and unplaced, or assigned to cluster_id (NULL: to any cluster). */
GPtrArray *store_instances_unplaced(Store *s);
GPtrArray *store_instances_on_cluster(Store *s, const char *cluster_id);
/* Deploys waiting to be sent (deploy_pending), every one of them. */
GPtrArray *store_instances_deploy_pending(Store *s);
/* Instances whose copy on cluster_id is the one left behind by a move. */
GPtrArray *store_instances_moved_from(Store *s, const char *cluster_id);
/* status -> count, for /metrics. */
GPtrArray *store_instance_status_counts(Store *s); /* "STATUS\tcount" strings */
gint64 store_instance_count_deploy_pending(Store *s);

/* ---- refusals: a cluster that refused or failed an instance, until an expiry ---- */

typedef enum { REFUSAL_CAPACITY, REFUSAL_UNQUALIFIED, REFUSAL_FAILED } RefusalKind;

typedef struct {
  char *service_id;
  gint64 number;
  char *cluster_id;
  RefusalKind kind;
  char *reason;
  gint64 since, until;
} StoreRefusal;

void store_refusal_free(StoreRefusal *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(StoreRefusal, store_refusal_free)
/* Adds or replaces the refusal of (instance, cluster). */
gboolean store_refusal_put(Store *s, const StoreRefusal *r, GError **error);
gboolean store_refusal_drop(Store *s, const char *service_id, gint64 number, const char *cluster_id,
                            GError **error);
gboolean store_refusals_expire(Store *s, gint64 now_ms, GError **error);
/* Unexpired refusals of one instance / by one cluster (StoreRefusal*). */
GPtrArray *store_refusals_of_instance(Store *s, const char *service_id, gint64 number, gint64 now_ms);
GPtrArray *store_refusals_by_cluster(Store *s, const char *cluster_id, gint64 now_ms);

/* ---- pending deletes: copies a cluster must drop, per cluster and generation ---- */

typedef struct {
  gint64 id;
  char *cluster_id, *service_id;
  gint64 number, generation; /* generation 0: whatever generation the cluster holds */
  gint64 attempts, next_at, created_at;
  gint64 last_deploy_at; /* when that cluster last accepted a deploy of the instance */
  char *last_error;
} StoreDelete;

void store_delete_free(StoreDelete *d);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(StoreDelete, store_delete_free)
/* Queues a delete unless one for the same cluster, instance and generation is queued. */
gboolean store_delete_add(Store *s, const char *cluster_id, const char *service_id, gint64 number,
                          gint64 generation, gint64 last_deploy_at, gint64 now_ms, GError **error);
StoreDelete *store_delete_get(Store *s, gint64 id);
/* Whether a delete of generation >= generation is queued for the instance at cluster_id. */
gboolean store_delete_covers(Store *s, const char *cluster_id, const char *service_id, gint64 number,
                             gint64 generation);
gboolean store_delete_remove(Store *s, gint64 id, GError **error);
/* generation < 0: every generation. */
gboolean store_delete_remove_for(Store *s, const char *cluster_id, const char *service_id, gint64 number,
                                 gint64 generation, GError **error);
gboolean store_delete_retry(Store *s, gint64 id, gint64 attempts, gint64 next_at, const char *why,
                            GError **error);
GPtrArray *store_deletes_all(Store *s);
GPtrArray *store_deletes_of_cluster(Store *s, const char *cluster_id);
gint64 store_delete_count(Store *s);

/* ---- clusters ---- */

typedef struct {
  char *id, *name, *location, *url, *subnet;
  char
      *token; /* the JWT of a cluster registered before schema version 3, until it registers again; else "" */
  char *cred_salt, *cred_hash; /* its credential: what derives it, and the SHA-256 of its secret */
  gint64 subnet_index;
  char *aggregate; /* the last aggregate as stored (JSON) or NULL */
  gint64 received_at, registered_at;
} StoreCluster;

void store_cluster_free(StoreCluster *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(StoreCluster, store_cluster_free)

StoreCluster *store_cluster_get(Store *s, const char *id);
char *store_cluster_id_by_name(Store *s, const char *name);
GPtrArray *store_clusters_all(Store *s); /* in registration order */
/* The clusters registered before schema version 3 that still have their JWT. */
GPtrArray *store_clusters_with_jwt(Store *s);
gint64 store_cluster_count(Store *s);
/* The lowest subnet index in [0, slots) no cluster holds, or -1. */
gint64 store_cluster_free_subnet_index(Store *s, gint64 slots);
gboolean store_cluster_insert(Store *s, const StoreCluster *c, GError **error);
/* A registration: the URL, location and credential; the JWT of before version 3 is forgotten. */
gboolean store_cluster_update_link(Store *s, const char *id, const char *url, const char *location,
                                   const char *cred_salt, const char *cred_hash, GError **error);
gboolean store_cluster_set_aggregate(Store *s, const char *id, const char *aggregate, gint64 received_at,
                                     GError **error);
/* Removes the cluster row (its subnet index becomes free) and its pending deletes. */
gboolean store_cluster_delete(Store *s, const char *id, GError **error);

/* ---- counts for /metrics ---- */
gint64 store_application_count(Store *s);
gint64 store_service_count(Store *s);

/* Rows changed since the store was opened (every INSERT, UPDATE and DELETE): a cheap change
 * counter for the dashboard's event streams (events.c). */
gint64 store_changes(Store *s);

G_END_DECLS

#endif

/* oakuk-root: the root orchestrator (DESIGN §4, §5, §7, §11). */
#ifndef OAKUK_ROOT_H
#define OAKUK_ROOT_H

#include "daemon-common.h"

#include <oakuk/oakuk.h>

G_BEGIN_DECLS

typedef struct {
  GKeyFile *config;
  char *state_dir;
  sqlite3 *db;
  guint8 secret[32];
  SoupServer *server;
  SoupSession *session;
  GMainLoop *loop;
  GHashTable *aggregates;          /* cluster id -> oakuk_cluster_aggregate* (identity + received time set) */
  oakuk_reservations *reservations; /* key: instance name */
  gint64 cluster_timeout_ms;
  gint64 token_ttl_s;
  gint64 refresh_ttl_s;
  gint64 join_token_ttl_s;
  gint64 forward_max_attempts;
  gint64 started_ms;
  int32_t policy;
  char *cluster_secret_hash;  /* sha256 hex of the static registration secret, or NULL */
  guint32 pool_base;          /* node pool (host order) split into per-cluster subnets */
  guint pool_prefix;
  guint cluster_prefix;
  GHashTable *http_counts;    /* status code -> count */
  GHashTable *inflight;       /* "service/instance" or "#<forward id>" -> forward id being sent */
  guint tick_source;
} Root;

/* Wall clock in ms: aggregates, forwards and scheduling all use it, and it survives restarts. */
gint64 root_now_ms(void);

/* Transactions: every accepted request is committed before its reply. */
gboolean root_begin(Root *r, GError **error);
gboolean root_commit(Root *r, GError **error);
void root_rollback(Root *r);

/* Documents stored as JSON text. Return NULL when the row does not exist. */
JsonObject *root_load_service(Root *r, const char *id, char **ms_json);
gboolean root_save_service(Root *r, const char *id, JsonObject *doc, GError **error);
JsonObject *root_load_application(Root *r, const char *id);
gboolean root_save_application(Root *r, const char *id, JsonObject *doc, GError **error);

/* The instance_list entry with instance_number n, or NULL; *index gets its position. */
JsonObject *root_find_instance(JsonObject *service, gint64 n, guint *index);

/* Cluster liveness: an aggregate received within cluster_timeout_ms. */
gboolean root_cluster_active(Root *r, const char *cluster_id);

/* Scheduling and forwarding (deploy.c). Each must run inside a transaction; the forwards it
 * enqueues are sent after the commit by root_forward_pump. */
/* Places instance inst of service (ms_json is its microservice) on a cluster; sets status,
 * status_detail and cluster fields and stores the explanation. */
gboolean root_place_instance(Root *r, JsonObject *service, const char *ms_json, JsonObject *inst, GError **error);
/* Starts removing inst: forwards the DELETE to its cluster when it is active and returns FALSE (the
 * entry stays, status UNDEPLOYED, until the cluster confirms), or returns TRUE when the entry
 * can be dropped now (never placed, or its cluster is gone). */
gboolean root_undeploy_instance(Root *r, JsonObject *service, JsonObject *inst, GError **error);
gboolean root_enqueue_forward(Root *r, const char *cluster_id, const char *method, const char *path,
                              const char *body, const char *service_id, gint64 instance, GError **error);
void root_forward_pump(Root *r);
/* Applies one status entry a cluster reported; returns FALSE with an error naming the field. */
gboolean root_apply_status(Root *r, const char *cluster_id, JsonObject *entry, const char *path, GError **error);
/* Reschedules every instance held by cluster cid (it stopped reporting or was removed). */
gboolean root_move_off_cluster(Root *r, const char *cid, GError **error);
/* Periodic work: reschedule instances of clusters that stopped reporting, send due forwards. */
gboolean root_tick(gpointer data);
/* Rebuilds reservations for instances still on their way to RUNNING (after a restart). */
void root_rebuild_reservations(Root *r);

/* HTTP API (api.c). */
void root_api_register(Root *r);

G_END_DECLS

#endif

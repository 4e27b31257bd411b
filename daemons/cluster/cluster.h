/* oakuk-cluster: the cluster orchestrator (DESIGN §4-§7, §11). */
#ifndef OAKUK_CLUSTER_H
#define OAKUK_CLUSTER_H

#include "daemon-common.h"
#include "mqtt.h"

#include <oakuk/oakuk.h>

G_BEGIN_DECLS

#define CLUSTER_MQTT_USER "oakuk-cluster"

typedef struct {
  GKeyFile *config;
  char *state_dir;
  sqlite3 *db;
  SoupServer *server;
  SoupSession *session;
  GMainLoop *loop;

  /* settings */
  char *listen;
  char *root_url;
  char *join_token; /* for the root; NULL when none was given */
  char *name;
  char *location;
  char *advertise_url;
  char *mqtt_advertise_host; /* host nodes connect to */
  guint16 mqtt_port;
  char *mosquitto_bin; /* NULL with an external broker */
  char *broker_host;   /* where the cluster itself connects */
  char *password_file;
  char *broker_pid_file; /* external broker: where its pid is (for SIGHUP), or NULL */
  char *mqtt_username;
  char *mqtt_password;
  gint64 node_timeout_ms;
  gint64 aggregate_interval_ms;
  int32_t policy;

  /* registration with the root (NULL until registered) */
  char *cluster_id;
  char *token;
  char *subnet;

  /* broker */
  GPid broker_pid;
  guint broker_watch;
  guint broker_restart_source;
  guint broker_restarts;
  gint64 broker_started_ms;
  gboolean stopping;

  /* MQTT */
  OdMqtt *mqtt;
  gboolean mqtt_up;
  gint64 mqtt_down_since_ms; /* monotonic ms the broker connection was lost (or the start) */
  GHashTable *reachable;     /* node id -> 1: reported since our connection came up */
  GHashTable *inflight;      /* delivery id (gint64 as string) -> 1 */
  GHashTable *delete_sent;   /* "node/instance" -> gint64* monotonic ms of the last reconcile delete */
  guint64 mqtt_rejected;
  gboolean net_dirty;

  /* nodes */
  GHashTable *reports;              /* node id -> oakuk_node_report* (received_at: monotonic ms) */
  oakuk_reservations *reservations; /* key: instance name */

  /* root */
  gboolean registering;
  guint register_source;
  gint64 register_backoff_s;
  gboolean status_inflight;
  guint status_pump_source; /* idle: send queued statuses at the end of this main-loop turn */
  gboolean aggregate_inflight;
  GHashTable *http_counts; /* status code -> count */
  guint tick_source;
  guint aggregate_source;
} Cluster;

gint64 cluster_now_ms(void); /* monotonic ms: node liveness and reservations */
/* The moment node liveness is judged at: now while the cluster hears the broker, the moment it
 * lost it otherwise. Nodes report through the broker; while it is down their silence says nothing. */
gint64 cluster_liveness_now_ms(Cluster *c);

gboolean cluster_begin(Cluster *c, GError **error);
gboolean cluster_commit(Cluster *c, GError **error);
void cluster_rollback(Cluster *c);
/* Key/value state (registration, secrets). */
char *cluster_kv_get(Cluster *c, const char *key);
gboolean cluster_kv_set(Cluster *c, const char *key, const char *value, GError **error);

/* broker.c: our own mosquitto (or an external one) and its credentials. */
gboolean broker_prepare(Cluster *c, GError **error);
gboolean broker_start(Cluster *c, GError **error);
void broker_stop(Cluster *c);
/* Sets (adds or replaces) a broker login and makes the broker reload its password file. */
gboolean broker_set_password(Cluster *c, const char *user, const char *password, GError **error);
void broker_reload(Cluster *c);

/* root.c: registration, aggregates and status reports to the root. */
void root_link_start(Cluster *c);
/* Queues a status report for the root (inside a transaction). ready: the node found the instance
 * ready (only ever with RUNNING); ready_ms: the node's measure of it, or -1 when unknown. */
gboolean root_queue_status(Cluster *c, const char *job_id, gint64 instance, const char *status,
                           const char *detail, const char *node, gboolean ready, gint64 ready_ms,
                           GError **error);
void root_status_pump(Cluster *c);
/* Sends the aggregate now (also done every aggregate_interval). */
void root_send_aggregate_now(Cluster *c);

/* jobs.c: placement, MQTT topics, deliveries, rescheduling. */
void jobs_mqtt_start(Cluster *c);
void jobs_load(Cluster *c);
/* Accepts a deploy forwarded by the root; returns the HTTP status and fills *reply. */
guint jobs_deploy(Cluster *c, const char *job_id, gint64 n, JsonObject *job, JsonObject **reply,
                  GError **error);
/* Removes an instance; 404 when unknown. */
guint jobs_delete(Cluster *c, const char *job_id, gint64 n, GError **error);
void jobs_delivery_pump(Cluster *c);
gboolean jobs_tick(gpointer data);
/* Subnet of node index i inside the cluster's subnet ("10.18.3.0/24"), or NULL when out of range. */
char *jobs_node_subnet(Cluster *c, gint64 index);

/* api.c */
void cluster_api_register(Cluster *c);

/* logs.c: instance logs asked from nodes over MQTT (docs/cli.md). Publishes the request to the
 * node and pauses msg until the node answers on nodes/<node>/logs (cluster_logs_on_reply) or
 * 5 s pass (504); replies 503 at once when the node is not reachable. */
void cluster_logs_request(Cluster *c, SoupServerMessage *msg, const char *node, const char *instance,
                          gint64 lines);
void cluster_logs_on_reply(Cluster *c, const char *node, const char *topic, GBytes *payload);

G_END_DECLS

#endif

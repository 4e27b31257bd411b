/* oakuk-cluster: the cluster orchestrator (DESIGN §4-§7, §11; docs/cluster.md, docs/reconcile.md).
 *
 * Read top-down: store.c owns cluster.db; loop.c owns every decision (what runs where, moves,
 * re-adoption, drains); the adapters only translate: api.c (HTTP from the root, nodes and users),
 * nodelink.c (the nodes' MQTT topics), root.c (registration, aggregates and status reports to the
 * root), broker.c (our mosquitto), logs.c (instance logs). main.c wires them. */
#ifndef OAKUK_CLUSTER_H
#define OAKUK_CLUSTER_H

#include "daemon-common.h"
#include "mqtt.h"
#include "store.h"

#include <oakuk/oakuk.h>

G_BEGIN_DECLS

#define CLUSTER_MQTT_USER "oakuk-cluster"

typedef struct {
  GKeyFile *config;
  char *state_dir;
  Store *store;
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
  gint64 avoid_ms; /* how long a node an instance FAILED on is avoided for it */
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

  /* MQTT (nodelink.c) */
  OdMqtt *mqtt;
  gboolean mqtt_up;
  gint64 mqtt_down_since_ms; /* monotonic ms the broker connection was lost (or the start) */
  GHashTable *reachable;     /* node id -> 1: reported since our connection came up */
  GHashTable *inflight;      /* delivery id (gint64 as string) -> its publish's context */
  guint64 mqtt_rejected;
  gboolean net_dirty;

  /* observed nodes (loop.c) */
  GHashTable *reports;              /* node id -> oakuk_node_report* (received_at: monotonic ms) */
  GHashTable *silent;               /* node id -> 1: found silent, its instances told so */
  GHashTable *delete_sent;          /* "node/instance" -> gint64* monotonic ms of the last extra delete */
  GHashTable *retry;                /* instance -> Retry*: a move off a silent node that found no node */
  oakuk_reservations *reservations; /* key: instance name */
  guint loop_timer;
  guint loop_idle;

  /* root */
  gboolean registering;
  guint register_source;
  gint64 register_backoff_s;
  gboolean status_inflight;
  guint status_pump_source; /* idle: send queued statuses at the end of this main-loop turn */
  gboolean aggregate_inflight;
  GHashTable *http_counts; /* status code -> count */
  guint aggregate_source;
} Cluster;

gint64 cluster_now_ms(void);  /* monotonic ms: node liveness and reservations */
gint64 cluster_wall_ms(void); /* wall clock ms: what is stored (avoid entries, old copies) */
/* The moment node liveness is judged at: now while the cluster hears the broker, the moment it
 * lost it otherwise. Nodes report through the broker; while it is down their silence says nothing. */
gint64 cluster_liveness_now_ms(Cluster *c);
/* A node with a report no older than node_timeout (on the liveness clock). */
gboolean cluster_node_active(Cluster *c, const char *node);

/* broker.c: our own mosquitto (or an external one) and its credentials. */
gboolean broker_prepare(Cluster *c, GError **error);
gboolean broker_start(Cluster *c, GError **error);
void broker_stop(Cluster *c);
/* Sets (adds or replaces) a broker login and makes the broker reload its password file. */
gboolean broker_set_password(Cluster *c, const char *user, const char *password, GError **error);
/* Removes a broker login (a removed node) and makes the broker reload its password file. */
gboolean broker_remove_login(Cluster *c, const char *user, GError **error);
void broker_reload(Cluster *c);

/* root.c: registration, aggregates and status reports to the root. */
void root_link_start(Cluster *c);
/* Queues the instance's status for the root (inside a transaction). */
gboolean root_queue_status(Cluster *c, const StoreInstance *i, GError **error);
/* Queues a status about an instance the cluster does not keep (a refusal). */
gboolean root_queue_refusal(Cluster *c, const char *job_id, gint64 number, gint64 generation, int32_t status,
                            const char *detail, GError **error);
void root_status_pump(Cluster *c);

/* nodelink.c: the nodes' MQTT topics. */
void nodelink_start(Cluster *c);
void nodelink_stop(Cluster *c);
/* Publishes stored deliveries to nodes that are reachable and not silent; per instance only the
 * oldest one is in flight, keeping their order. */
void nodelink_pump(Cluster *c);
/* Publishes the service and peer tables to every node when they may have changed. */
void nodelink_publish_net(Cluster *c);
/* Clears the retained tables of a removed node. */
void nodelink_forget(Cluster *c, const char *node);
/* The payloads of control/deploy and control/delete (docs/reconcile.md). */
char *nodelink_deploy_payload(const StoreInstance *i, const char *node_subnet);
char *nodelink_delete_payload(const char *job_name, gint64 number, gint64 generation);
/* The same for an instance name as a node reports it; NULL when it is not <job_name>.instance.<n>. */
char *nodelink_delete_payload_for(const char *instance_name, gint64 generation);

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

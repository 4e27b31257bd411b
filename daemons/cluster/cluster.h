/* oakuk-cluster: the cluster orchestrator (docs/architecture.md §9.4; docs/cluster.md, docs/reconcile.md).
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
  char *mqtt_advertise_host; /* host nodes connect to (--mqtt-host) */
  gboolean insecure;         /* --insecure: plain HTTP and MQTT */
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
  gint64 renew_check_ms; /* how often the certificate's remaining validity is checked */

  /* TLS (root.c; docs/security.md). key_pem: <state>/pki/cluster.key. ca_pem/ca: the root's CA
   * (<state>/pki/ca.crt), pinned in every call to the root; NULL until the first registration.
   * cert_pem: the certificate the root signed (<state>/pki/cluster.crt, the CA after it); NULL
   * while the cluster serves its throwaway bootstrap certificate. */
  char *key_pem;
  char *ca_pem;
  GTlsCertificate *ca;
  char *cert_pem;
  guint renew_source;

  /* registration with the root (NULL until registered) */
  char *cluster_id;
  char *token;
  char *subnet;

  /* broker */
  GPid broker_pid;
  guint broker_watch;
  guint broker_restart_source;
  guint broker_reload_source; /* the trailing reload after password changes (broker_reload) */
  guint broker_restarts;
  gint64 broker_started_ms;
  gboolean stopping;

  /* MQTT (nodelink.c) */
  OdMqtt *mqtt;
  gboolean mqtt_up;
  GHashTable *rate;           /* node id -> RateBucket*: what it may still publish */
  guint64 mqtt_rate_rejected; /* messages dropped over a node's rate */
  gint64 mqtt_down_since_ms;  /* monotonic ms the broker connection was lost (or the start) */
  GHashTable *reachable;      /* node id -> 1: reported since our connection came up */
  GHashTable *inflight;       /* delivery id (gint64 as string) -> its publish's context */
  guint64 mqtt_rejected;
  gboolean net_dirty;
  char *net_peers_sent, *net_services_sent;     /* the tables last published on this broker connection */
  gint64 net_next_us;                           /* monotonic time the tables may go out again */
  guint net_timer;                              /* a publication waiting for net_next_us or for room */
  GPtrArray *net_round_nodes;                   /* of node ids: those a publication still goes to */
  guint net_round_next;                         /* the next one */
  gboolean net_round_peers, net_round_services; /* which tables it carries */

  /* observed nodes (loop.c) */
  GHashTable *reports;              /* node id -> oakuk_node_report* (received_at: monotonic ms) */
  GHashTable *reports_unsaved;      /* node id -> 1: its report is newer than the store's */
  gint64 reports_saved_ms;          /* monotonic ms of the last save of reports */
  GHashTable *silent;               /* node id -> 1: found silent, its instances told so */
  GHashTable *delete_sent;          /* "node/instance" -> gint64* monotonic ms of the last extra delete */
  GHashTable *retry;                /* instance -> Retry*: a move off a silent node that found no node */
  oakuk_reservations *reservations; /* key: instance name */
  guint loop_timer;
  guint loop_idle;

  /* root */
  gboolean register_wanted;    /* a (re-)registration is due: at start, to renew, after a 401 */
  gboolean credential_refused; /* the root answered 401 to our credential: try the join token */
  gboolean registering;
  guint register_source;
  gint64 register_backoff_s;
  gboolean status_inflight;
  guint status_pump_source; /* idle: send queued statuses at the end of this main-loop turn */
  gboolean aggregate_inflight;
  GHashTable *http_counts;     /* status code -> count */
  OdHistogram *http_durations; /* by method and route (cluster_api_register) */
  guint aggregate_source;
} Cluster;

gint64 cluster_now_ms(void);  /* monotonic ms: node liveness and reservations */
gint64 cluster_wall_ms(void); /* wall clock ms: what is stored (avoid entries, old copies) */
/* The moment node liveness is judged at: now while the cluster hears the broker, the moment it
 * lost it otherwise. Nodes report through the broker; while it is down their silence says nothing. */
gint64 cluster_liveness_now_ms(Cluster *c);
/* A node with a report no older than node_timeout (on the liveness clock). */
gboolean cluster_node_active(Cluster *c, const char *node);

/* Paths in the state directory: <state>/<dir>/<file>. */
char *cluster_path(Cluster *c, const char *dir, const char *file);

/* broker.c: our own mosquitto (or an external one) and its credentials. */
gboolean broker_prepare(Cluster *c, GError **error);
/* Whether the broker can serve: always with --insecure, else once the cluster holds the
 * certificate the root signed (its TLS listener serves it). */
gboolean broker_ready(Cluster *c);
gboolean broker_start(Cluster *c, GError **error);
/* The cluster's certificate changed (root.c wrote the new files): the running broker reloads it,
 * one waiting for its first certificate starts, and the cluster's own client connects. */
void broker_certificate_changed(Cluster *c);
void broker_stop(Cluster *c);
/* Sets (adds or replaces) a broker login and makes the broker reload its password file. */
gboolean broker_set_password(Cluster *c, const char *user, const char *password, GError **error);
/* Removes a broker login (a removed node) and makes the broker reload its password file. */
gboolean broker_remove_login(Cluster *c, const char *user, GError **error);
void broker_reload(Cluster *c);

/* root.c: the cluster's key and certificates, registration (and renewal), aggregates and status
 * reports to the root. */
/* Creates <state>/pki/cluster.key on the first start; loads the root's CA and the signed
 * certificate when the cluster has them, else makes the bootstrap certificate; installs the one to
 * serve on c->server. */
gboolean root_tls_prepare(Cluster *c, GError **error);
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
/* What cluster.db keeps of a node's MQTT password (its credential): "sha256$<hex>". */
char *cluster_node_credential_hash(const char *password);

/* logs.c: instance logs asked from nodes over MQTT (docs/cli.md). Publishes the request to the
 * node and pauses msg until the node answers on nodes/<node>/logs (cluster_logs_on_reply) or
 * 5 s pass (504); replies 503 at once when the node is not reachable. */
void cluster_logs_request(Cluster *c, SoupServerMessage *msg, const char *node, const char *instance,
                          gint64 lines);
void cluster_logs_on_reply(Cluster *c, const char *node, const char *topic, GBytes *payload);

G_END_DECLS

#endif

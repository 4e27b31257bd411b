/* oakuk-node: runs instances (QEMU unikernels, runc containers) for its cluster
 * (docs/architecture.md §9.5). */
#ifndef OAKUK_NODE_H
#define OAKUK_NODE_H

#include "daemon-common.h"
#include "job.h"
#include "mqtt.h"

#include <oakuk/oakuk.h>

G_BEGIN_DECLS

/* Restarts back off exponentially (CrashLoopBackOff, docs/reconcile.md): the first after 1 s, each
 * next one after twice the last, at most 5 min; an instance that ran for NODE_STABLE_S starts over. */
#define NODE_BACKOFF_FIRST_S 1
#define NODE_BACKOFF_MAX_S 300
#define NODE_STABLE_S 60

typedef enum {
  PHASE_FETCH,     /* image download in flight */
  PHASE_NET,       /* network setup in flight */
  PHASE_PORT_WAIT, /* network ready; a host port is still held by an instance being removed */
  PHASE_RUNTIME,   /* handed to the runtime (CREATING .. RUNNING, or ended) */
  PHASE_CLEANUP,   /* runtime undeploy and/or network teardown in flight */
  PHASE_BACKOFF,   /* waiting to be deployed again */
  PHASE_FAILED,    /* gave up: nothing left but the record */
} Phase;

typedef enum { THEN_RETRY, THEN_FAILED, THEN_DELETE } Then;

typedef struct Node Node;

/* Credentials for one registry, from a [registry HOST[:PORT]] group of the configuration. */
typedef struct {
  char *username;
  char *password;
} NodeRegistryAuth;

typedef struct Inst {
  gint refs;
  Node *node;
  char *name; /* <job_name>.instance.<n> */
  char *job_name;
  gint64 number;
  JsonObject *job; /* the deploy payload as received */
  oakuk_microservice *ms;
  int32_t virt;
  char *arch;
  int32_t accel;
  char *code;
  char *code_sha256;
  char *ip; /* instance_ip from the cluster, or NULL (allocate) */
  int32_t restart;
  gboolean gone; /* removed from the node's table: late async results are dropped */
  Phase phase;
  Then then; /* what follows the cleanup in flight */
  gboolean delete_requested;
  gint64 port_wait_until_us; /* PHASE_PORT_WAIT: monotonic time it stops waiting */
  gboolean runtime_owned;    /* the runtime knows this instance */
  gboolean no_retry;         /* a failure that a restart here cannot mend (placement, image) */
  gboolean restarting;       /* ended, and restarted here after a backoff (published as "restarting") */
  guint restarts;            /* restarts since the instance last ran stably */
  guint backoff_s;           /* the delay of the last restart */
  gint64 running_since_us;   /* monotonic time it became RUNNING; 0 while not */
  gint64 generation;         /* the cluster's generation of this placement (docs/reconcile.md) */
  struct Inst *replacement;  /* a deploy of a newer generation waiting for this one's cleanup */
  gboolean ready;            /* RUNNING and answering its readiness probe */
  gint64 ready_ms;           /* from the deploy's arrival here to ready; -1 when not known */
  gint64 received_us;        /* monotonic time the deploy arrived here; 0 for restored ones */
  gboolean running_observed; /* its deploy-to-RUNNING time is in the node's histogram */
  const char *timing;        /* the deploy phase being timed (docs/node.md, metrics); NULL: none */
  gint64 timing_since_us;    /* when it began */
  gint64 downloaded_us;      /* the image library's last download report of this deploy; 0: none */
  int32_t status;            /* last status published (OAKUK_STATUS_*) */
  char *detail;
  guint timer;
  gint64 last_progress_us;
  int last_progress_pct;
  oakuk_image *image;
  oakuk_image_fetch *fetch; /* the image fetch in flight (PHASE_FETCH), cancelled by a delete */
  oakuk_net_instance_info *ninfo;
} Inst;

/* The default unprivileged user QEMU runs as (--qemu-user). */
#define NODE_QEMU_USER "oakuk-qemu"

struct Node {
  GKeyFile *config;
  GMainLoop *loop;
  int exit_code;

  /* settings */
  char *state_dir;
  char *cluster_url;
  char *join_token;
  char *name;
  char *underlay_ip;
  gboolean allow_emulation;
  gboolean offer_container, offer_unikernel; /* --virtualization */
  char *insecure_registries;                 /* container pulls over http: "host[:port],..." */
  char *qemu_user;                           /* QEMU runs as this user; "" or NULL: as root */
  char *image_file_dirs;                     /* file:// images only from these ("DIR:DIR"); NULL: none */
  GHashTable *registry_auth;                 /* "host[:port]" -> NodeRegistryAuth*, from the config */
  char *image_cache_max;                     /* --image-cache-max as given */
  guint64 image_cache_max_bytes;             /* its size, or 0 */
  guint image_cache_max_percent;             /* its share of the disk, or 0 */
  gboolean stop_instances;
  gboolean leave;    /* --leave: on stop, also remove the bridge, VXLAN device and nftables table */
  gboolean insecure; /* --insecure: plain HTTP to the cluster and plain MQTT allowed */
  gint64 report_interval_ms;
  char *listen; /* --listen: the local /healthz and /metrics endpoint ("ADDR:PORT", loopback); NULL: off */

  /* trust (docs/security.md): the root CA, pinned by the join token's fingerprint at the first
   * contact and by <state>/pki/ca.crt from then on */
  char *ca_fingerprint; /* from an oakuk1.<fingerprint>.<secret> join token; NULL for a plain one */
  GTlsCertificate *ca;  /* <state>/pki/ca.crt, once known */

  /* registration (node.json) */
  char *id;
  char *registered_id; /* the id node.json's credentials were issued for */
  gboolean mqtt_tls;   /* the broker is reached over TLS (the registration answer's "mqtt_tls") */
  char *mqtt_host;
  guint16 mqtt_port;
  char *mqtt_username;
  char *mqtt_password;
  char *subnet;

  /* machinery */
  SoupSession *session;
  guint register_source;
  gint64 register_backoff_s;
  oakuk_qemu_caps *caps;
  oakuk_runtime *uk_rt;
  oakuk_runtime *ctr_rt; /* NULL when runc is missing */
  oakuk_image_cache *images;
  oakuk_net *net;
  OdMqtt *mqtt;
  gboolean mqtt_up;
  gboolean registered; /* the cluster accepted a registration, or the broker the stored credentials */

  /* the local HTTP endpoint (api.c) */
  SoupServer *server;
  GHashTable *http_counts; /* status code -> count */
  OdHistogram *http_durations;
  OdHistogram *deploy_durations; /* from a deploy's arrival to RUNNING, by virtualization */
  OdHistogram *phase_durations;  /* each phase of a deploy, by phase and virtualization */
  guint64 uk_starts[5];          /* unikernel instances ready, by how they started (OAKUK_START_*) */
  guint report_source;
  GHashTable *insts;    /* name -> Inst* */
  GHashTable *pools;    /* job name -> NodePool*: unikernel.warm_pool (instances.c) */
  GHashTable *services; /* rr_ip -> 1: service IPs we programmed */
  GHashTable *peers;    /* underlay ip -> subnet: peers we programmed */
  guint64 prev_cpu_total, prev_cpu_idle;
};

/* main.c */
char *node_state_path(Node *n, const char *leaf);
/* The credentials configured for the registry of an OCI reference; NULL: anonymous. */
const NodeRegistryAuth *node_registry_auth(Node *n, const char *reference);

/* api.c: /healthz and /metrics on n->listen (a loopback address; plain HTTP, no authentication). */
/* Refuses a listen address that is not ADDR:PORT or not a loopback address (docs/node.md). */
gboolean node_api_check_listen(const char *listen, GError **error);
gboolean node_api_start(Node *n, GError **error);
void node_api_stop(Node *n);
/* An instance became RUNNING seconds after its deploy arrived. */
void node_api_observe_deploy(Node *n, int32_t virt, double seconds);
void node_api_observe_phase(Node *n, int32_t virt, const char *phase, double seconds);

/* report.c: the node report (docs/architecture.md §7.1) as JSON text. */
char *node_report_json(Node *n);

/* instances.c */
void insts_init(Node *n);
/* Re-adopts instances from the job records and the runtimes, and removes network leftovers. */
void insts_restore(Node *n);
void insts_on_deploy(Node *n, const char *topic, GBytes *payload);
void insts_on_delete(Node *n, const char *topic, GBytes *payload);
/* Publishes the current status of every instance (after (re)connecting). */
void insts_republish(Node *n);
/* Runtime status callback. */
void insts_on_runtime_status(const char *instance, int32_t status, const char *detail, void *user_data);
/* Runtime ready callback: the instance answers its readiness probe. */
void insts_on_runtime_ready(const char *instance, int64_t ready_ms, void *user_data);
void inst_unref(Inst *i);
/* SIGTERM: cancels timers and tells the runtimes whether to keep the instances running (the
 * default) or to stop them when they are dropped. */
void insts_shutdown(Node *n);
/* With --stop-instances, after the runtimes are gone: removes the networks and job records. */
void insts_forget(Node *n);

/* netsync.c: nodes/<id>/net/services and nodes/<id>/net/peers. */
void netsync_on_services(Node *n, const char *topic, GBytes *payload);
void netsync_on_peers(Node *n, const char *topic, GBytes *payload);
/* Keep lists for the startup reconcile, from the tables saved by the last run. */
GPtrArray *netsync_saved_services(Node *n);
GPtrArray *netsync_saved_peers(Node *n);

/* Logs a rejected MQTT payload: the topic and the problem. */
void node_reject(const char *topic, const char *problem);
/* Parses an MQTT payload that must be a JSON object or array (want, node_payload_parse); on failure
 * logs the rejection naming the topic and returns NULL. */
JsonNode *node_parse_payload(const char *topic, GBytes *payload, JsonNodeType want);
/* Publishes on nodes/<id>/<leaf> (QoS 1) when connected; FALSE otherwise. */
gboolean node_publish(Node *n, const char *leaf, const char *text);

G_END_DECLS

#endif

/* oakuk-cluster's control loop (docs/reconcile.md, "Cluster, for each instance"): it compares what
 * the root wants (the instances it deployed, with their generation) with what the nodes report,
 * and acts: places, moves, re-adopts, deletes, drains. Adapters hand it validated, typed input;
 * it runs on every change and every second, and never parses. */
#ifndef OAKUK_CLUSTER_LOOP_H
#define OAKUK_CLUSTER_LOOP_H

#include "cluster.h"

G_BEGIN_DECLS

/* A deploy from the root, validated by api.c. */
typedef struct {
  const char *job_id;
  gint64 number;
  gint64 generation;            /* the root's; 0 from a root before generations */
  const char *job;              /* the job JSON: every variant; no instance_list, placement, generation */
  const oakuk_microservice *ms; /* job, parsed; NULL when the body is not a valid job */
} LoopDeploy;

typedef enum {
  LOOP_DEPLOY_PLACED,  /* placed on a node now */
  LOOP_DEPLOY_KEPT,    /* held already with this or a newer generation: nothing changed */
  LOOP_DEPLOY_ADOPTED, /* held already: takes the newer generation where it runs */
  LOOP_DEPLOY_REFUSED, /* no node can take it: not kept */
  LOOP_DEPLOY_INVALID, /* not held, and the body is no valid job (ms NULL): nothing changed */
} LoopDeployOutcome;

typedef struct {
  LoopDeployOutcome outcome;
  char *instance;
  int32_t status;
  char *detail;
  char *node;
  gint64 generation;
} LoopDeployAnswer;
void loop_deploy_answer_clear(LoopDeployAnswer *a);

/* A status event from nodes/<id>/job, validated by nodelink.c. */
typedef struct {
  const char *job_name;
  gint64 number;
  gint64 generation; /* 0: a node from before generations (matches what the cluster holds) */
  int32_t status;
  const char *detail;
  gboolean ready;      /* only ever with RUNNING */
  gint64 ready_ms;     /* -1: none */
  gboolean restarting; /* the node restarts it itself (CrashLoopBackOff): not a FAILED to move */
} LoopEvent;

/* Starts the loop: restores what the last run left (reports, reservations) and its 1 s timer. */
void loop_start(Cluster *c);
void loop_stop(Cluster *c);
/* Runs the loop at the end of this main-loop turn (something changed). */
void loop_kick(Cluster *c);

/* From the root. HTTP-like outcomes: deploy fills answer (FALSE: internal error); delete answers
 * 200 removed, 404 unknown, 409 the cluster holds a newer generation than max_generation (< 0: any). */
gboolean loop_deploy(Cluster *c, const LoopDeploy *d, LoopDeployAnswer *answer, GError **error);
guint loop_delete(Cluster *c, const char *job_id, gint64 number, gint64 max_generation, gint64 *held,
                  GError **error);

/* A node's registration (POST /api/node/register), validated and authenticated by api.c. */
typedef struct {
  const char *id;
  const char *ip;
  const char *token_hash; /* loop_join_token_hash of its join token; NULL: none, or not a token */
  const char *credential; /* the MQTT password it sent as "credential", when it is the node's own */
} LoopNodeRegistration;

typedef enum {
  LOOP_NODE_CREATED,        /* a new node (the token used once): new password and subnet */
  LOOP_NODE_RENEWED,        /* a registered node proved its credential: password and subnet kept */
  LOOP_NODE_BAD_TOKEN,      /* unknown, expired or used-up join token: nothing changed */
  LOOP_NODE_NAME_TAKEN,     /* the id is registered and no credential proved it: nothing changed */
  LOOP_NODE_POOL_EXHAUSTED, /* no free /24 */
  LOOP_NODE_NOT_READY,      /* the cluster is not registered with the root yet */
  LOOP_NODE_FAILED,         /* error set */
} LoopNodeOutcome;

/* From nodes and operators. register fills password and subnet when it answers CREATED or
 * RENEWED. drain/remove: 200, 404 unknown node, 500. */
LoopNodeOutcome loop_node_register(Cluster *c, const LoopNodeRegistration *r, char **password, char **subnet,
                                   GError **error);
guint loop_node_drain(Cluster *c, const char *id, gboolean drain, GError **error);
guint loop_node_remove(Cluster *c, const char *id, GError **error);
/* A node's report (takes rep) and status event, validated; generations in rep's instances. */
void loop_node_report(Cluster *c, const char *node, oakuk_node_report *rep);
void loop_node_event(Cluster *c, const char *node, const LoopEvent *ev);
/* The broker connection came up or went down (node liveness stands still while it is down). */
void loop_broker_state(Cluster *c, gboolean connected);

/* Node join tokens (docs/security.md): "oakuk1.<root CA fingerprint>.<secret>" (the plain secret
 * with --insecure while the cluster knows no CA), kept as the SHA-256 of the secret with their
 * expiry and uses. 201 with the token and its expiry (wall-clock ms); 503 while the cluster knows
 * no root CA to name (TLS); 500 with error. */
guint loop_join_token_new(Cluster *c, gint64 ttl_s, gint64 uses, char **token, gint64 *expires_ms,
                          GError **error);
/* The stored hash of a token's secret; NULL when token is not one. */
char *loop_join_token_hash(const char *token);

/* Subnet of node index i inside the cluster's subnet ("10.18.3.0/24"), or NULL when out of range. */
char *loop_node_subnet(Cluster *c, gint64 index);

G_END_DECLS

#endif

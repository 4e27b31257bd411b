/* What the two HTTP adapters share: the request, routes, replies, tokens (api.c), and the
 * cluster-facing routes and aggregate parsing (cluster-api.c). */
#ifndef OAKUK_ROOT_API_H
#define OAKUK_ROOT_API_H

#include "loop.h"
#include "root.h"

G_BEGIN_DECLS

typedef enum { AUTH_NONE, AUTH_USER, AUTH_CLUSTER, AUTH_SELF } Auth;

/* Roles (docs/security.md "Root API"): a user has one, a route lists those it allows. */
enum { ROLE_ADMIN = 1 << 0, ROLE_APPLICATION = 1 << 1, ROLE_INFRASTRUCTURE = 1 << 2 };
#define ROLES_ALL (ROLE_ADMIN | ROLE_APPLICATION | ROLE_INFRASTRUCTURE)
#define ROLES_APPS (ROLE_ADMIN | ROLE_APPLICATION)
#define ROLES_INFRA (ROLE_ADMIN | ROLE_INFRASTRUCTURE)

typedef struct {
  Root *r;
  SoupServerMessage *msg;
  const char *path;
  const char *cap[3];
  char *user; /* AUTH_USER: the user and its role */
  guint role;
  gint64 token_exp; /* AUTH_USER: when the access token expires (s since the epoch) */
  gboolean compat;
} Req;

typedef void (*Handler)(Req *q);

typedef struct {
  const char *method;
  const char *pattern;
  Auth auth;
  Handler fn;
  gboolean compat;
  guint roles; /* AUTH_USER: the roles allowed */
} Route;

/* The cluster-facing routes (cluster-api.c) and the routes of logins, users, tokens and the CA
 * (auth-api.c). */
extern const Route root_cluster_routes[];
extern const gsize root_cluster_route_count;
extern const Route root_auth_routes[];
extern const gsize root_auth_route_count;

/* ---- authentication (auth-api.c) ---- */

/* "Admin", "Application_Provider", "Infrastructure_Provider"; a role from its name, 0 if none. */
const char *api_role_name(guint role);
guint api_role_parse(const char *name);
/* A user's id in Oakestra's documents: 24 hex digits derived from the name (users have no other). */
char *api_user_oid(const char *name);
/* Rewrites an error answer of an Oakestra-compatible route to also carry Oakestra's keys: {"code":
 * status, "status": reason, "message", "error": {our code, message, path}}. */
void api_compat_error_shape(SoupServerMessage *msg);
/* Checks the request's credentials against route (401/403 replied here); TRUE to go on. */
gboolean api_authenticate(Req *q, const Route *route);
/* The id of the registered cluster whose credential (or JWT of before schema version 3) bearer is;
 * NULL when none. */
char *api_cluster_of_bearer(Root *r, const char *bearer);

/* A stored or received aggregate (without its "instances" list) for the loop; NULL with an error
 * naming the field when liboakuk rejects it. */
LoopAggregate *root_aggregate_parse(const char *json, gssize len, oakuk_error **error);

/* ---- helpers (api.c) ---- */

const char *api_str(JsonObject *o, const char *key);
void api_reply_object(Req *q, guint status, JsonObject *o);
void api_reply_message(Req *q, guint status, const char *message);
void api_reply_internal(Req *q, GError *error);
/* The body as a JSON object; with optional an empty body reads as {}. Replies 400 itself. */
JsonObject *api_body_object(Req *q, gboolean optional);
gboolean api_body_empty(Req *q);
/* A string member, or a 400 naming key. */
gboolean api_require_string(Req *q, JsonObject *o, const char *key, const char **out);
/* An optional integer member in [min, max] (def when absent), or a 400 naming key. */
gboolean api_optional_int(Req *q, JsonObject *o, const char *key, gint64 min, gint64 max, gint64 def,
                          gint64 *out);

/* Keeps msg (paused) for an answer that comes later, and lets it go. */
void api_hold(SoupServerMessage *msg);
void api_release(SoupServerMessage *msg);

/* Sends a request (body may be NULL) to cluster cid with its credential; done always runs, later:
 * status 0 and why when the cluster is unknown or unreachable. */
typedef void (*ClusterReply)(gpointer data, const char *cid, guint status, JsonNode *body, const char *why);
void api_cluster_call(Root *r, const char *cid, const char *method, const char *path, JsonNode *body,
                      guint timeout_s, ClusterReply done, gpointer data);
/* A ClusterReply for a held message (data): the cluster's 2xx body, its error with its status, or
 * 502 when it could not be reached; then releases it. */
void api_pass_on(gpointer data, const char *cid, guint status, JsonNode *body, const char *why);

G_END_DECLS

#endif

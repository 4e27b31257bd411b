/* What the two HTTP adapters share: the request, routes, replies, tokens (api.c), and the
 * cluster-facing routes and aggregate parsing (cluster-api.c). */
#ifndef OAKUK_ROOT_API_H
#define OAKUK_ROOT_API_H

#include "loop.h"
#include "root.h"

G_BEGIN_DECLS

typedef enum { AUTH_NONE, AUTH_USER, AUTH_CLUSTER, AUTH_SELF } Auth;

typedef struct {
  Root *r;
  SoupServerMessage *msg;
  const char *path;
  const char *cap[3];
  char *user;
  gboolean compat;
} Req;

typedef void (*Handler)(Req *q);

typedef struct {
  const char *method;
  const char *pattern;
  Auth auth;
  Handler fn;
  gboolean compat;
} Route;

/* The cluster-facing routes (cluster-api.c). */
extern const Route root_cluster_routes[];
extern const gsize root_cluster_route_count;

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
/* A signed JWT: sub, typ (access, refresh or cluster), ttl_s (0: no expiry). */
char *api_issue_token(Root *r, const char *sub, const char *typ, gint64 ttl_s);

G_END_DECLS

#endif

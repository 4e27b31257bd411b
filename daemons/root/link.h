/* The root's link to its clusters (HTTP(S), the cluster's credential as bearer): deploys and deletes, whose
 * answers it turns into typed outcomes for the loop, and the requests the user API passes on
 * (explain, logs, drain and removal of nodes). It decides nothing. */
#ifndef OAKUK_ROOT_LINK_H
#define OAKUK_ROOT_LINK_H

#include "root.h"

G_BEGIN_DECLS

typedef enum {
  LINK_DONE,      /* 2xx: the deploy is stored / the instance removed or queued for removal */
  LINK_REFUSED,   /* a deploy answered 2xx with NO_QUALIFIED_WORKER_FOUND or NO_WORKER_CAPACITY */
  LINK_GONE,      /* a delete answered 404: the cluster does not have it (a confirmation too) */
  LINK_STALE,     /* 409: the cluster holds a newer generation */
  LINK_RETRY,     /* no answer, 5xx, 408 or 429: worth trying again */
  LINK_REJECTED,  /* any other 4xx: the cluster will not take this request */
  LINK_CANCELLED, /* the root is shutting down: nothing was learnt */
} LinkOutcome;

typedef struct {
  LinkOutcome outcome;
  guint http_status;  /* 0 without an answer */
  int32_t refusal;    /* LINK_REFUSED: OAKUK_STATUS_NO_QUALIFIED_WORKER or _NO_WORKER_CAPACITY */
  const char *detail; /* LINK_REFUSED: the cluster's explanation, or "" */
  const char *why;    /* one line for logs: "HTTP 503: ...", the connection error */
} LinkResult;

typedef void (*LinkDone)(gpointer data, const LinkResult *res);
/* status 0 and why when the cluster could not be reached; body is the parsed answer or NULL. */
typedef void (*LinkReplyDone)(gpointer data, guint status, JsonNode *body, const char *why);

/* Requests to https URLs trust only ca (the root's CA, which signs the clusters' certificates). */
Link *link_new(GTlsCertificate *ca);
/* Cancels what is in flight; their callbacks are not called any more. */
void link_free(Link *l);

/* POST <base>/api/service/<job_id>/<n> with the job (JSON text). */
void link_deploy(Link *l, const char *base, const char *token, const char *job_id, gint64 n, const char *job,
                 LinkDone done, gpointer data);
/* DELETE <base>/api/service/<job_id>/<n>?generation=G (without the query when generation is 0). */
void link_delete(Link *l, const char *base, const char *token, const char *job_id, gint64 n,
                 gint64 generation, LinkDone done, gpointer data);
/* Any request (path with its query) with a time limit; done always runs later on the main context. */
void link_request(Link *l, const char *base, const char *token, const char *method, const char *path,
                  JsonNode *body, guint timeout_s, LinkReplyDone done, gpointer data);

G_END_DECLS

#endif

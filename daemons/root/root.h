/* oakuk-root: the root orchestrator (docs/architecture.md §9.3; docs/reconcile.md).
 *
 * Read top-down: store.c owns SQLite (schema, migrations, every statement); loop.c owns every
 * decision (placement, retries, refusals, partitions, moves, deletes); api.c (user API),
 * auth-api.c (logins, users, roles, tokens) and cluster-api.c (what clusters send) translate HTTP
 * into loop calls and views.c turns stored rows into the documents users see; link.c carries the
 * root's requests to clusters; pki.c holds the root's identities (CA, server certificate, join
 * tokens, cluster credentials) and guard.c the login workers and per-source limits. main.c wires
 * them. */
#ifndef OAKUK_ROOT_H
#define OAKUK_ROOT_H

#include "daemon-common.h"

#include <oakuk/oakuk.h>

G_BEGIN_DECLS

typedef struct Store Store;
typedef struct Loop Loop;
typedef struct Link Link;
typedef struct Guard Guard;

typedef struct {
  gint64 cluster_timeout_ms;
  gint64 token_ttl_s;
  gint64 refresh_ttl_s;
  gint64 join_token_ttl_s;
  gint64 forward_max_attempts;
  int32_t policy;
  char *cluster_secret_hash; /* sha256 hex of the static registration secret, or NULL */
  guint32 pool_base;         /* node pool (host order) split into per-cluster subnets */
  guint pool_prefix;
  guint cluster_prefix;
  char *insecure_registries; /* resolving unikernel OCI references over plain http; NULL: loopback */
  char **cors_origins;       /* origins whose pages may call the API (docs/api.md "CORS"); NULL: none */
  gboolean cors_any;         /* cors_origins is "*" */
} RootConfig;

typedef struct {
  RootConfig cfg;
  char *state_dir;
  guint8 secret[32]; /* signs JWTs and derives cluster credentials (pki.c) */
  gint64 started_ms;
  gboolean insecure;         /* --insecure: plain HTTP */
  char *ca_pem, *ca_key_pem; /* the root CA (docs/security.md "TLS and identities") */
  char *ca_fingerprint;      /* SHA-256 of its DER, 64 hex digits: what join tokens carry */
  GTlsCertificate *ca;
  Store *store;
  Loop *loop;
  Link *link;
  Guard *guard; /* login hashing off the main loop, failed logins per source (guard.c) */
  SoupServer *server;
  GHashTable *http_counts;     /* status code -> count */
  OdHistogram *http_durations; /* by method and route (root_api_register) */
} Root;

/* Wall clock in ms: aggregates, retries and scheduling all use it, and it survives restarts. */
gint64 root_now_ms(void);

/* The HTTP adapters (api.c, cluster-api.c): routes on r->server. */
void root_api_register(Root *r);

G_END_DECLS

#endif

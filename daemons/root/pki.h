/* The root's identities (docs/security.md "TLS and identities: the contract"): its CA, its server
 * certificate, the join tokens it hands out and the credentials of its clusters. Formats and
 * files only: who may use them is decided by the adapters and the loop. */
#ifndef OAKUK_ROOT_PKI_H
#define OAKUK_ROOT_PKI_H

#include "root.h"
#include "store.h"

G_BEGIN_DECLS

/* Server certificates are re-issued when fewer days than this are left. */
#define PKI_RENEW_DAYS 30
#define PKI_SERVER_DAYS 365
/* Cluster certificates signed at registration. */
#define PKI_CLUSTER_DAYS 365

typedef struct {
  const char *ca_cert, *ca_key;   /* the operator's CA (both or neither), else <state>/pki/ca.* */
  const char *tls_cert, *tls_key; /* the operator's server certificate (both or neither) */
  const char *const *sans;        /* --tls-san names */
  const char *listen;             /* its host is a name of the server certificate unless a wildcard */
} PkiOptions;

/* Loads or creates the CA into r (ca_pem, ca_key_pem, ca_fingerprint, ca). */
gboolean pki_load_ca(Root *r, const PkiOptions *o, GError **error);
/* The certificate to serve, its chain ending with the CA, with its key: the operator's, or
 * <state>/pki/server.crt (issued again when missing, not signed by the CA, expiring within
 * PKI_RENEW_DAYS or when its names are not the ones asked for now). */
GTlsCertificate *pki_server_certificate(Root *r, const PkiOptions *o, GError **error);

/* ---- join tokens: oakuk1.<CA fingerprint>.<48 hex digits of secret> ---- */

/* A new token; *hash is the SHA-256 of its secret, which is all the root keeps. */
char *pki_join_token_new(Root *r, char **hash);
/* The SHA-256 of the secret of token (a join token of this root's CA, or the bare secret an older
 * root handed out); NULL with why (taken) when it is neither. */
char *pki_join_token_hash(Root *r, const char *token, char **why);

/* ---- cluster credentials: oakukc.<cluster id>.<secret> ---- */

/* A new credential of cluster id: *salt derives it again (with the root's secret), *hash is the
 * SHA-256 of its secret; only these two are stored. */
char *pki_credential_new(Root *r, const char *id, char **salt, char **hash);
/* The credential of id derived from salt. */
char *pki_credential(Root *r, const char *id, const char *salt);
/* Splits "oakukc.<id>.<secret>"; FALSE when text is no credential. */
gboolean pki_credential_parse(const char *text, char **id, char **secret);
/* What the root sends cl as its bearer: its credential, or the JWT it registered with before
 * schema version 3 until it registers again. */
char *pki_cluster_bearer(Root *r, const StoreCluster *cl);

G_END_DECLS

#endif

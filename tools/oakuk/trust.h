/* The root's CA as the CLI trusts it: pinned like ssh pins host keys (docs/cli.md, "TLS"). The
 * first login trusts a CA given by file or fingerprint, or confirmed on the terminal; it is stored
 * beside the credentials and every later command trusts only it. No system CA is ever trusted. */
#ifndef OAKUK_CLI_TRUST_H
#define OAKUK_CLI_TRUST_H

#include <gio/gio.h>
#include <libsoup/soup.h>

typedef struct {
  /* what a request trusts: */
  GTlsCertificate *ca; /* this CA, or */
  char *fingerprint;   /* the certificate with this fingerprint in the server's own chain, or */
  gboolean probe;      /* nothing: only note what the server presents (the terminal asks) */
  /* what the last handshake showed: */
  GTlsCertificate *presented; /* the top of the chain the server presented */
  GTlsCertificate *found;     /* the CA a fingerprint-pinned handshake was verified against */
  gboolean refused;           /* the server's certificate was refused */
  gboolean bad_identity;      /* ... because it does not name the host dialled */
} OakPin;

void oak_pin_clear(OakPin *pin);

/* SHA-256 of the certificate's DER: 64 lower-case hex digits (as the join tokens carry). */
char *oak_tls_fingerprint(GTlsCertificate *cert);
/* A fingerprint as given ("AB:CD:..." from openssl, or plain hex) as 64 lower-case hex; NULL when
 * it is not one. */
char *oak_fingerprint_normalize(const char *text);

/* <config>/oakuk/ca-<host>-<port>.crt: where the CA trusted for url is kept. */
char *oak_ca_path(const char *url);
/* The first certificate in a PEM file; NULL with error naming the file. */
GTlsCertificate *oak_ca_load(const char *path, GError **error);
/* Writes the certificate (PEM) to path, mode 0600, atomically. */
gboolean oak_ca_store(const char *path, GTlsCertificate *ca, GError **error);

/* Makes msg accept only what pin trusts (and note what the server presented into pin). */
void oak_pin_message(OakPin *pin, SoupMessage *msg);
/* Why the server's certificate was refused, naming both CAs; ca_path is where the trusted one is
 * kept (NULL when it came from the command line). */
char *oak_pin_refusal(OakPin *pin, const char *url, const char *ca_path);

#endif

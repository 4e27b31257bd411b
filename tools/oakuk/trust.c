/* Pinning the root's CA: a message's accept-certificate handler trusts only the pinned CA (the
 * session has no CA database, so every certificate comes here) and notes what the server
 * presented, so that a refusal can name both CAs. */
#include "trust.h"

#include <errno.h>
#include <string.h>

#define MAX_CHAIN 16

void oak_pin_clear(OakPin *pin) {
  g_clear_object(&pin->ca);
  g_clear_pointer(&pin->fingerprint, g_free);
  g_clear_object(&pin->presented);
  g_clear_object(&pin->found);
}

char *oak_tls_fingerprint(GTlsCertificate *cert) {
  g_autoptr(GByteArray) der = NULL;
  g_object_get(cert, "certificate", &der, NULL);
  return der ? g_compute_checksum_for_data(G_CHECKSUM_SHA256, der->data, der->len) : NULL;
}

char *oak_fingerprint_normalize(const char *text) {
  g_autoptr(GString) hex = g_string_new(NULL);
  for (const char *p = text; *p; p++) {
    if (*p == ':')
      continue;
    if (!g_ascii_isxdigit(*p))
      return NULL;
    g_string_append_c(hex, g_ascii_tolower(*p));
  }
  if (hex->len != 64)
    return NULL;
  return g_string_free(g_steal_pointer(&hex), FALSE);
}

char *oak_ca_path(const char *url) {
  g_autoptr(GUri) uri = g_uri_parse(url, G_URI_FLAGS_NONE, NULL);
  const char *host = uri ? g_uri_get_host(uri) : NULL;
  int port = uri ? g_uri_get_port(uri) : -1;
  if (port <= 0)
    port = g_strcmp0(uri ? g_uri_get_scheme(uri) : NULL, "http") == 0 ? 80 : 443;
  /* A file name: anything but letters, digits, '.' and '-' (an IPv6 address's ':') becomes '_'. */
  g_autofree char *safe = g_strdup(host ? host : "unknown");
  for (char *p = safe; *p; p++)
    if (!g_ascii_isalnum(*p) && *p != '.' && *p != '-')
      *p = '_';
  g_autofree char *leaf = g_strdup_printf("ca-%s-%d.crt", safe, port);
  return g_build_filename(g_get_user_config_dir(), "oakuk", leaf, NULL);
}

GTlsCertificate *oak_ca_load(const char *path, GError **error) {
  g_autofree char *pem = NULL;
  g_autoptr(GError) local = NULL;
  GTlsCertificate *c = NULL;
  if (g_file_get_contents(path, &pem, NULL, &local))
    c = g_tls_certificate_new_from_pem(pem, -1, &local);
  if (c == NULL)
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s: %s", path, local->message);
  return c;
}

gboolean oak_ca_store(const char *path, GTlsCertificate *ca, GError **error) {
  g_autofree char *dir = g_path_get_dirname(path);
  if (g_mkdir_with_parents(dir, 0700) != 0) {
    int e = errno;
    g_set_error(error, G_FILE_ERROR, g_file_error_from_errno(e), "create %s: %s", dir, g_strerror(e));
    return FALSE;
  }
  g_autofree char *pem = NULL;
  g_object_get(ca, "certificate-pem", &pem, NULL);
  return g_file_set_contents_full(path, pem, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, error);
}

/* The certificate in the server's chain whose fingerprint is fp, or NULL. */
static GTlsCertificate *in_chain(GTlsCertificate *peer, const char *fp) {
  GTlsCertificate *c = peer;
  for (int depth = 0; c != NULL && depth < MAX_CHAIN; depth++, c = g_tls_certificate_get_issuer(c)) {
    g_autofree char *cfp = oak_tls_fingerprint(c);
    if (g_strcmp0(cfp, fp) == 0)
      return c;
  }
  return NULL;
}

static gboolean accept_pinned(SoupMessage *msg, GTlsCertificate *peer, GTlsCertificateFlags errors,
                              gpointer data) {
  (void)errors;
  OakPin *pin = data;
  GTlsCertificate *top = peer;
  for (int depth = 0; depth < MAX_CHAIN && g_tls_certificate_get_issuer(top) != NULL; depth++)
    top = g_tls_certificate_get_issuer(top);
  g_set_object(&pin->presented, top);
  pin->refused = TRUE;
  pin->bad_identity = FALSE;
  if (pin->probe)
    return FALSE;
  GTlsCertificate *ca = pin->ca ? pin->ca : pin->fingerprint ? in_chain(peer, pin->fingerprint) : NULL;
  if (ca == NULL)
    return FALSE;
  GUri *uri = soup_message_get_uri(msg);
  g_autoptr(GSocketConnectable) identity =
      g_network_address_new(g_uri_get_host(uri), (guint16)MAX(g_uri_get_port(uri), 0));
  GTlsCertificateFlags flags = g_tls_certificate_verify(peer, identity, ca);
  if (flags != 0) {
    /* It chains to the CA, but names another host: the refusal says that instead. */
    pin->bad_identity = flags == G_TLS_CERTIFICATE_BAD_IDENTITY;
    return FALSE;
  }
  if (pin->ca == NULL)
    g_set_object(&pin->found, ca);
  pin->refused = FALSE;
  return TRUE;
}

void oak_pin_message(OakPin *pin, SoupMessage *msg) {
  pin->refused = FALSE;
  g_signal_connect(msg, "accept-certificate", G_CALLBACK(accept_pinned), pin);
}

char *oak_pin_refusal(OakPin *pin, const char *url, const char *ca_path) {
  g_autofree char *presented = pin->presented ? oak_tls_fingerprint(pin->presented) : g_strdup("(none)");
  g_autofree char *trusted = pin->ca ? oak_tls_fingerprint(pin->ca) : g_strdup(pin->fingerprint);
  g_autoptr(GUri) uri = g_uri_parse(url, G_URI_FLAGS_NONE, NULL);
  if (pin->bad_identity)
    return g_strdup_printf("the certificate of %s comes from the trusted CA %s but does not name the host %s",
                           url, trusted, uri ? g_uri_get_host(uri) : "?");
  if (ca_path != NULL)
    return g_strdup_printf("%s presents a certificate from the CA %s, not from the CA %s trusted for it "
                           "(%s); if its CA really changed, check the new fingerprint with its operator, "
                           "remove %s and log in again",
                           url, presented, trusted, ca_path, ca_path);
  return g_strdup_printf("%s presents a certificate from the CA %s, not from the CA %s you gave", url,
                         presented, trusted);
}

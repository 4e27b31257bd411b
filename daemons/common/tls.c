/* The daemons' PKI with GnuTLS: a CA, keys, certificate requests and the certificates the CA
 * signs, SHA-256 fingerprints, and the check of a peer's chain against a pinned CA. Certificates
 * are ECDSA P-256 with SHA-256; keys are written as PKCS#8, which GIO, GnuTLS and OpenSSL (the
 * broker) all read. */
#include "daemon-common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <string.h>

#define CA_DAYS (10 * 365)
#define MAX_SANS 16

G_DEFINE_AUTO_CLEANUP_FREE_FUNC(gnutls_x509_crt_t, gnutls_x509_crt_deinit, NULL)
G_DEFINE_AUTO_CLEANUP_FREE_FUNC(gnutls_x509_privkey_t, gnutls_x509_privkey_deinit, NULL)
G_DEFINE_AUTO_CLEANUP_FREE_FUNC(gnutls_x509_crq_t, gnutls_x509_crq_deinit, NULL)
G_DEFINE_AUTO_CLEANUP_FREE_FUNC(gnutls_pubkey_t, gnutls_pubkey_deinit, NULL)
G_DEFINE_AUTO_CLEANUP_FREE_FUNC(gnutls_privkey_t, gnutls_privkey_deinit, NULL)

static gboolean tls_ok(int rc, const char *what, GError **error) {
  if (rc >= 0)
    return TRUE;
  g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s: %s", what, gnutls_strerror(rc));
  return FALSE;
}

static char *datum_take(gnutls_datum_t *d) {
  char *s = g_strndup((const char *)d->data, d->size);
  gnutls_free(d->data);
  return s;
}

static gboolean import_crt(gnutls_x509_crt_t *crt, const char *pem, const char *what, GError **error) {
  gnutls_datum_t d = {(unsigned char *)pem, (unsigned int)strlen(pem)};
  return tls_ok(gnutls_x509_crt_init(crt), what, error) &&
         tls_ok(gnutls_x509_crt_import(*crt, &d, GNUTLS_X509_FMT_PEM), what, error);
}

static gboolean import_key(gnutls_x509_privkey_t *key, const char *pem, const char *what, GError **error) {
  gnutls_datum_t d = {(unsigned char *)pem, (unsigned int)strlen(pem)};
  return tls_ok(gnutls_x509_privkey_init(key), what, error) &&
         tls_ok(gnutls_x509_privkey_import2(*key, &d, GNUTLS_X509_FMT_PEM, NULL, 0), what, error);
}

char *od_tls_key_new(GError **error) {
  g_auto(gnutls_x509_privkey_t) key = NULL;
  gnutls_datum_t out = {0};
  if (!tls_ok(gnutls_x509_privkey_init(&key), "create a key", error) ||
      !tls_ok(gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
                                           GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0),
              "create a key", error) ||
      !tls_ok(gnutls_x509_privkey_export2_pkcs8(key, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN, &out),
              "write a key", error))
    return NULL;
  return datum_take(&out);
}

/* A SAN is an IP address (v4 or v6) or a DNS name; anything else is refused. */
static gboolean add_san(gnutls_x509_crt_t crt, gnutls_x509_crq_t crq, const char *san, GError **error) {
  guint8 ip[16];
  gnutls_x509_subject_alt_name_t type = GNUTLS_SAN_DNSNAME;
  const void *data = san;
  size_t len = strlen(san);
  if (inet_pton(AF_INET, san, ip) == 1) {
    type = GNUTLS_SAN_IPADDRESS;
    data = ip;
    len = 4;
  } else if (inet_pton(AF_INET6, san, ip) == 1) {
    type = GNUTLS_SAN_IPADDRESS;
    data = ip;
    len = 16;
  } else if (!od_tls_dns_name_valid(san)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "'%s' is neither an IP address nor a DNS name", san);
    return FALSE;
  }
  int rc = crt ? gnutls_x509_crt_set_subject_alt_name(crt, type, data, (unsigned)len, GNUTLS_FSAN_APPEND)
               : gnutls_x509_crq_set_subject_alt_name(crq, type, data, (unsigned)len, GNUTLS_FSAN_APPEND);
  return tls_ok(rc, "subject alternative name", error);
}

gboolean od_tls_dns_name_valid(const char *name) {
  size_t n = strlen(name);
  if (n == 0 || n > 253)
    return FALSE;
  g_auto(GStrv) labels = g_strsplit(name, ".", -1);
  for (char **l = labels; *l; l++) {
    size_t m = strlen(*l);
    if (m == 0 || m > 63 || (*l)[0] == '-' || (*l)[m - 1] == '-')
      return FALSE;
    for (const char *p = *l; *p; p++)
      if (!g_ascii_isalnum(*p) && *p != '-')
        return FALSE;
  }
  return TRUE;
}

static gboolean set_serial_and_times(gnutls_x509_crt_t crt, guint days, GError **error) {
  guint8 serial[16];
  if (!tls_ok(gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof serial), "serial number", error))
    return FALSE;
  serial[0] &= 0x7f; /* a positive integer */
  time_t now = time(NULL);
  /* An hour back: clocks of edge boxes drift. */
  return tls_ok(gnutls_x509_crt_set_version(crt, 3), "certificate", error) &&
         tls_ok(gnutls_x509_crt_set_serial(crt, serial, sizeof serial), "serial number", error) &&
         tls_ok(gnutls_x509_crt_set_activation_time(crt, now - 3600), "validity", error) &&
         tls_ok(gnutls_x509_crt_set_expiration_time(crt, now + (time_t)days * 86400), "validity", error);
}

static gboolean set_key_ids(gnutls_x509_crt_t crt, gnutls_x509_crt_t issuer, GError **error) {
  guint8 id[64];
  size_t n = sizeof id;
  if (!tls_ok(gnutls_x509_crt_get_key_id(crt, GNUTLS_KEYID_USE_SHA1, id, &n), "key id", error) ||
      !tls_ok(gnutls_x509_crt_set_subject_key_id(crt, id, n), "key id", error))
    return FALSE;
  if (issuer == NULL)
    return TRUE;
  n = sizeof id;
  return tls_ok(gnutls_x509_crt_get_subject_key_id(issuer, id, &n, NULL), "issuer key id", error) &&
         tls_ok(gnutls_x509_crt_set_authority_key_id(crt, id, n), "issuer key id", error);
}

static char *export_crt(gnutls_x509_crt_t crt, GError **error) {
  gnutls_datum_t out = {0};
  if (!tls_ok(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &out), "write a certificate", error))
    return NULL;
  return datum_take(&out);
}

char *od_tls_ca_new(const char *key_pem, const char *cn, GError **error) {
  g_auto(gnutls_x509_privkey_t) key = NULL;
  g_auto(gnutls_x509_crt_t) crt = NULL;
  if (!import_key(&key, key_pem, "CA key", error) || !tls_ok(gnutls_x509_crt_init(&crt), "CA", error) ||
      !set_serial_and_times(crt, CA_DAYS, error) ||
      !tls_ok(gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn, strlen(cn)), "CA name",
              error) ||
      !tls_ok(gnutls_x509_crt_set_key(crt, key), "CA key", error) ||
      !tls_ok(gnutls_x509_crt_set_basic_constraints(crt, 1, -1), "CA", error) ||
      !tls_ok(gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_KEY_CERT_SIGN | GNUTLS_KEY_CRL_SIGN), "CA",
              error) ||
      !set_key_ids(crt, NULL, error) ||
      !tls_ok(gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0), "sign the CA", error))
    return NULL;
  return export_crt(crt, error);
}

/* Signs a leaf certificate for pubkey: name cn, the SANs, usable as TLS server and client. */
static char *sign_leaf(const char *ca_cert_pem, const char *ca_key_pem, gnutls_pubkey_t pubkey,
                       const char *cn, const char *const *sans, guint days, GError **error) {
  g_auto(gnutls_x509_crt_t) ca = NULL;
  g_auto(gnutls_x509_privkey_t) ca_key = NULL;
  g_auto(gnutls_x509_crt_t) crt = NULL;
  if (!import_crt(&ca, ca_cert_pem, "CA certificate", error) ||
      !import_key(&ca_key, ca_key_pem, "CA key", error) ||
      !tls_ok(gnutls_x509_crt_init(&crt), "certificate", error) || !set_serial_and_times(crt, days, error) ||
      !tls_ok(gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, cn, strlen(cn)), "name",
              error) ||
      !tls_ok(gnutls_x509_crt_set_pubkey(crt, pubkey), "key", error) ||
      !tls_ok(gnutls_x509_crt_set_basic_constraints(crt, 0, -1), "constraints", error) ||
      !tls_ok(gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE | GNUTLS_KEY_KEY_AGREEMENT),
              "usage", error) ||
      !tls_ok(gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0), "purpose", error) ||
      !tls_ok(gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_CLIENT, 0), "purpose", error))
    return NULL;
  guint n = 0;
  for (const char *const *s = sans; s && *s; s++, n++)
    if (n >= MAX_SANS) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "more than %d subject alternative names", MAX_SANS);
      return NULL;
    } else if (!add_san(crt, NULL, *s, error)) {
      return NULL;
    }
  if (!set_key_ids(crt, ca, error) ||
      !tls_ok(gnutls_x509_crt_sign2(crt, ca, ca_key, GNUTLS_DIG_SHA256, 0), "sign the certificate", error))
    return NULL;
  return export_crt(crt, error);
}

char *od_tls_issue(const char *ca_cert_pem, const char *ca_key_pem, const char *key_pem, const char *cn,
                   const char *const *sans, guint days, GError **error) {
  g_auto(gnutls_x509_privkey_t) key = NULL;
  g_auto(gnutls_privkey_t) priv = NULL;
  g_auto(gnutls_pubkey_t) pub = NULL;
  if (!import_key(&key, key_pem, "key", error) || !tls_ok(gnutls_privkey_init(&priv), "key", error) ||
      !tls_ok(gnutls_privkey_import_x509(priv, key, 0), "key", error) ||
      !tls_ok(gnutls_pubkey_init(&pub), "key", error) ||
      !tls_ok(gnutls_pubkey_import_privkey(pub, priv, 0, 0), "key", error))
    return NULL;
  return sign_leaf(ca_cert_pem, ca_key_pem, pub, cn, sans, days, error);
}

char *od_tls_csr_new(const char *key_pem, const char *cn, const char *const *sans, GError **error) {
  g_auto(gnutls_x509_privkey_t) key = NULL;
  g_auto(gnutls_x509_crq_t) crq = NULL;
  if (!import_key(&key, key_pem, "key", error) || !tls_ok(gnutls_x509_crq_init(&crq), "request", error) ||
      !tls_ok(gnutls_x509_crq_set_dn_by_oid(crq, GNUTLS_OID_X520_COMMON_NAME, 0, cn, strlen(cn)), "name",
              error) ||
      !tls_ok(gnutls_x509_crq_set_key(crq, key), "key", error))
    return NULL;
  for (const char *const *s = sans; s && *s; s++)
    if (!add_san(NULL, crq, *s, error))
      return NULL;
  gnutls_datum_t out = {0};
  if (!tls_ok(gnutls_x509_crq_sign2(crq, key, GNUTLS_DIG_SHA256, 0), "sign the request", error) ||
      !tls_ok(gnutls_x509_crq_export2(crq, GNUTLS_X509_FMT_PEM, &out), "write the request", error))
    return NULL;
  return datum_take(&out);
}

/* The request's SANs as text (IP addresses and DNS names only). */
static GPtrArray *csr_sans(gnutls_x509_crq_t crq, GError **error) {
  g_autoptr(GPtrArray) out = g_ptr_array_new_with_free_func(g_free);
  for (guint i = 0;; i++) {
    char buf[256];
    size_t n = sizeof buf;
    unsigned int type = 0;
    int rc = gnutls_x509_crq_get_subject_alt_name(crq, i, buf, &n, &type, NULL);
    if (rc == GNUTLS_E_REQUESTED_DATA_NOT_AVAILABLE)
      break;
    if (!tls_ok(rc, "request's alternative names", error))
      return NULL;
    char text[INET6_ADDRSTRLEN];
    if (type == GNUTLS_SAN_IPADDRESS && (n == 4 || n == 16)) {
      inet_ntop(n == 4 ? AF_INET : AF_INET6, buf, text, sizeof text);
      g_ptr_array_add(out, g_strdup(text));
    } else if (type == GNUTLS_SAN_DNSNAME && n < sizeof buf) {
      buf[n] = '\0';
      g_ptr_array_add(out, g_strdup(buf));
    } else {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                  "request asks for an alternative name that is not an IP "
                  "address or a DNS name");
      return NULL;
    }
  }
  g_ptr_array_add(out, NULL);
  return g_steal_pointer(&out);
}

char *od_tls_sign_csr(const char *ca_cert_pem, const char *ca_key_pem, const char *csr_pem, const char *cn,
                      guint days, GError **error) {
  g_auto(gnutls_x509_crq_t) crq = NULL;
  g_auto(gnutls_pubkey_t) pub = NULL;
  gnutls_datum_t d = {(unsigned char *)csr_pem, (unsigned int)strlen(csr_pem)};
  if (!tls_ok(gnutls_x509_crq_init(&crq), "request", error) ||
      !tls_ok(gnutls_x509_crq_import(crq, &d, GNUTLS_X509_FMT_PEM), "certificate request", error) ||
      !tls_ok(gnutls_x509_crq_verify(crq, 0), "certificate request's signature", error) ||
      !tls_ok(gnutls_pubkey_init(&pub), "key", error) ||
      !tls_ok(gnutls_pubkey_import_x509_crq(pub, crq, 0), "certificate request's key", error))
    return NULL;
  /* Only the key and the alternative names are taken from the request: the name is ours to give,
   * and no extension it asks for (a CA flag) is copied. */
  g_autoptr(GPtrArray) sans = csr_sans(crq, error);
  if (sans == NULL)
    return NULL;
  return sign_leaf(ca_cert_pem, ca_key_pem, pub, cn, (const char *const *)sans->pdata, days, error);
}

char *od_tls_fingerprint_der(const guint8 *der, gsize len) {
  return g_compute_checksum_for_data(G_CHECKSUM_SHA256, der, len);
}

char *od_tls_fingerprint(const char *cert_pem, GError **error) {
  g_auto(gnutls_x509_crt_t) crt = NULL;
  if (!import_crt(&crt, cert_pem, "certificate", error))
    return NULL;
  gnutls_datum_t der = {0};
  if (!tls_ok(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_DER, &der), "certificate", error))
    return NULL;
  char *fp = od_tls_fingerprint_der(der.data, der.size);
  gnutls_free(der.data);
  return fp;
}

char *od_tls_certificate_fingerprint(GTlsCertificate *cert) {
  g_autoptr(GByteArray) der = NULL;
  g_object_get(cert, "certificate", &der, NULL);
  return der ? od_tls_fingerprint_der(der->data, der->len) : NULL;
}

GTlsCertificate *od_tls_pinned_ca(GTlsCertificate *peer, const char *fingerprint) {
  for (GTlsCertificate *c = peer; c != NULL; c = g_tls_certificate_get_issuer(c)) {
    g_autofree char *fp = od_tls_certificate_fingerprint(c);
    if (fp == NULL || g_ascii_strcasecmp(fp, fingerprint) != 0)
      continue;
    return g_tls_certificate_verify(peer, NULL, c) == 0 ? c : NULL;
  }
  return NULL;
}

gboolean od_tls_write_secret(const char *path, const char *text, GError **error) {
  return g_file_set_contents_full(path, text, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, error);
}

gboolean od_tls_ensure_ca(const char *dir, const char *cn, char **cert_pem, char **key_pem, GError **error) {
  g_autofree char *cert_path = g_build_filename(dir, "ca.crt", NULL);
  g_autofree char *key_path = g_build_filename(dir, "ca.key", NULL);
  if (g_file_test(cert_path, G_FILE_TEST_EXISTS) || g_file_test(key_path, G_FILE_TEST_EXISTS)) {
    /* Both or neither: half a CA is an operator's mistake, not something to paper over. */
    return g_file_get_contents(cert_path, cert_pem, NULL, error) &&
           g_file_get_contents(key_path, key_pem, NULL, error);
  }
  g_autofree char *key = od_tls_key_new(error);
  g_autofree char *cert = key ? od_tls_ca_new(key, cn, error) : NULL;
  if (cert == NULL)
    return FALSE;
  if (g_mkdir_with_parents(dir, 0700) != 0) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "create %s: %s", dir, g_strerror(errno));
    return FALSE;
  }
  if (!od_tls_write_secret(key_path, key, error) ||
      !g_file_set_contents_full(cert_path, cert, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0644, error))
    return FALSE;
  *cert_pem = g_steal_pointer(&cert);
  *key_pem = g_steal_pointer(&key);
  return TRUE;
}

/* ---- clients: a message trusts only what chains to our CA ---- */

typedef struct {
  GTlsCertificate *ca; /* the CA to chain to, or NULL to find it by fingerprint */
  char *fingerprint;
} Pin;

static void pin_free(gpointer data) {
  Pin *p = data;
  g_clear_object(&p->ca);
  g_free(p->fingerprint);
  g_free(p);
}

static gboolean accept_pinned(SoupMessage *msg, GTlsCertificate *peer, GTlsCertificateFlags errors,
                              gpointer data) {
  Pin *p = data;
  GUri *uri = soup_message_get_uri(msg);
  g_autoptr(GSocketConnectable) identity =
      g_network_address_new(g_uri_get_host(uri), (guint16)MAX(g_uri_get_port(uri), 0));
  GTlsCertificate *ca = p->ca ? p->ca : od_tls_pinned_ca(peer, p->fingerprint);
  if (ca == NULL)
    return FALSE;
  if (g_tls_certificate_verify(peer, identity, ca) != 0)
    return FALSE;
  if (p->ca == NULL)
    g_object_set_data_full(G_OBJECT(msg), "od-tls-found-ca", g_object_ref(ca), g_object_unref);
  return TRUE;
}

void od_tls_pin_message(SoupMessage *msg, GTlsCertificate *ca, const char *fingerprint) {
  Pin *p = g_new0(Pin, 1);
  p->ca = ca ? g_object_ref(ca) : NULL;
  p->fingerprint = g_strdup(fingerprint);
  g_signal_connect_data(msg, "accept-certificate", G_CALLBACK(accept_pinned), p,
                        (GClosureNotify)(void (*)(void))pin_free, 0);
}

char *od_tls_message_found_ca(SoupMessage *msg) {
  GTlsCertificate *ca = g_object_get_data(G_OBJECT(msg), "od-tls-found-ca");
  char *pem = NULL;
  if (ca)
    g_object_get(ca, "certificate-pem", &pem, NULL);
  return pem;
}

/* A TLS database that trusts nothing and finds nothing: the default database of every daemon. A
 * client connection of glib-networking asks for the default database while it is made even when
 * libsoup then uses none, and the backend's own default loads the system's whole trust store
 * (about 8 MB that stay for good, and trust we never want). With this one every server certificate
 * reaches the accept-certificate handler of its message, where only our CA is trusted. */
G_DECLARE_FINAL_TYPE(OdNoTrust, od_no_trust, OD, NO_TRUST, GTlsDatabase)
struct _OdNoTrust {
  GTlsDatabase parent;
};
G_DEFINE_TYPE(OdNoTrust, od_no_trust, G_TYPE_TLS_DATABASE)

static GTlsCertificateFlags no_trust_verify_chain(GTlsDatabase *db, GTlsCertificate *chain,
                                                  const gchar *purpose, GSocketConnectable *identity,
                                                  GTlsInteraction *interaction, GTlsDatabaseVerifyFlags flags,
                                                  GCancellable *cancellable, GError **error) {
  return G_TLS_CERTIFICATE_UNKNOWN_CA;
}

static gchar *no_trust_create_handle(GTlsDatabase *db, GTlsCertificate *certificate) {
  return NULL;
}

static GTlsCertificate *no_trust_lookup_for_handle(GTlsDatabase *db, const gchar *handle,
                                                   GTlsInteraction *interaction,
                                                   GTlsDatabaseLookupFlags flags, GCancellable *cancellable,
                                                   GError **error) {
  return NULL;
}

static GTlsCertificate *no_trust_lookup_issuer(GTlsDatabase *db, GTlsCertificate *certificate,
                                               GTlsInteraction *interaction, GTlsDatabaseLookupFlags flags,
                                               GCancellable *cancellable, GError **error) {
  return NULL;
}

static GList *no_trust_lookup_issued_by(GTlsDatabase *db, GByteArray *issuer_raw_dn,
                                        GTlsInteraction *interaction, GTlsDatabaseLookupFlags flags,
                                        GCancellable *cancellable, GError **error) {
  return NULL;
}

static void od_no_trust_class_init(OdNoTrustClass *klass) {
  GTlsDatabaseClass *d = G_TLS_DATABASE_CLASS(klass);
  d->verify_chain = no_trust_verify_chain;
  d->create_certificate_handle = no_trust_create_handle;
  d->lookup_certificate_for_handle = no_trust_lookup_for_handle;
  d->lookup_certificate_issuer = no_trust_lookup_issuer;
  d->lookup_certificates_issued_by = no_trust_lookup_issued_by;
}

static void od_no_trust_init(OdNoTrust *self) {}

void od_tls_no_system_trust(void) {
  static gsize done;
  if (g_once_init_enter(&done)) {
    g_autoptr(GTlsDatabase) db = g_object_new(od_no_trust_get_type(), NULL);
    g_tls_backend_set_default_database(g_tls_backend_get_default(), db);
    g_once_init_leave(&done, 1);
  }
}

SoupSession *od_tls_session_new(void) {
  /* No database: every server certificate reaches the message's accept-certificate handler, where
   * only our CA is trusted (never the system's). */
  od_tls_no_system_trust();
  SoupSession *s = soup_session_new();
  soup_session_set_tls_database(s, NULL);
  /* The control plane talks to its peers directly, never through a proxy from the environment or
   * desktop settings (GIO's lookup would also load libproxy and libstdc++, 2 MB, for good). */
  soup_session_set_proxy_resolver(s, NULL);
  return s;
}

GTlsCertificate *od_tls_certificate_from_pem(const char *pem, GError **error) {
  GError *local = NULL;
  GTlsCertificate *c = g_tls_certificate_new_from_pem(pem, -1, &local);
  if (c == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "certificate: %s", local->message);
    g_error_free(local);
  }
  return c;
}

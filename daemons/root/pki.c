/* The root's identities: the CA (its own under <state>/pki or the operator's), the server
 * certificate it issues itself, join tokens that carry the CA's fingerprint, and cluster
 * credentials derived from the root's secret so that only their hashes are stored. */
#include "pki.h"

#include <arpa/inet.h>
#include <errno.h>
#include <gnutls/x509.h>
#include <string.h>

#define CREDENTIAL_PREFIX "oakukc."
#define JOIN_PREFIX "oakuk1."
#define SECRET_BYTES 24 /* 48 hex digits */

/* ---- certificates ---- */

static gboolean read_file(const char *path, const char *what, char **out, GError **error) {
  GError *local = NULL;
  if (g_file_get_contents(path, out, NULL, &local))
    return TRUE;
  g_set_error(error, OD_ERROR, OD_ERROR_IO, "%s %s: %s", what, path, local->message);
  g_error_free(local);
  return FALSE;
}

static gnutls_x509_crt_t parse_crt(const char *pem) {
  gnutls_x509_crt_t crt = NULL;
  gnutls_datum_t d = {(unsigned char *)pem, (unsigned int)strlen(pem)};
  if (gnutls_x509_crt_init(&crt) < 0)
    return NULL;
  if (gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM) < 0) {
    gnutls_x509_crt_deinit(crt);
    return NULL;
  }
  return crt;
}

/* Whether key_pem is the private key of the first certificate in cert_pem. */
static gboolean key_matches(const char *cert_pem, const char *key_pem) {
  gnutls_x509_crt_t crt = parse_crt(cert_pem);
  gnutls_x509_privkey_t key = NULL;
  gnutls_datum_t d = {(unsigned char *)key_pem, (unsigned int)strlen(key_pem)};
  guint8 a[64], b[64];
  size_t na = sizeof a, nb = sizeof b;
  gboolean ok = crt != NULL && gnutls_x509_privkey_init(&key) >= 0 &&
                gnutls_x509_privkey_import2(key, &d, GNUTLS_X509_FMT_PEM, NULL, 0) >= 0 &&
                gnutls_x509_crt_get_key_id(crt, GNUTLS_KEYID_USE_SHA256, a, &na) >= 0 &&
                gnutls_x509_privkey_get_key_id(key, GNUTLS_KEYID_USE_SHA256, b, &nb) >= 0 && na == nb &&
                memcmp(a, b, na) == 0;
  if (key != NULL)
    gnutls_x509_privkey_deinit(key);
  if (crt != NULL)
    gnutls_x509_crt_deinit(crt);
  return ok;
}

/* Whether the first certificate of cert_pem is signed by ca_pem. */
static gboolean signed_by(const char *cert_pem, const char *ca_pem) {
  gnutls_x509_crt_t crt = parse_crt(cert_pem), ca = parse_crt(ca_pem);
  unsigned int status = 1;
  gboolean ok =
      crt != NULL && ca != NULL && gnutls_x509_crt_verify(crt, &ca, 1, 0, &status) >= 0 && status == 0;
  if (crt != NULL)
    gnutls_x509_crt_deinit(crt);
  if (ca != NULL)
    gnutls_x509_crt_deinit(ca);
  return ok;
}

/* An IP address in its canonical text, a DNS name in lower case. */
static char *normalize_name(const char *name) {
  guint8 ip[16];
  char text[INET6_ADDRSTRLEN];
  if (inet_pton(AF_INET, name, ip) == 1)
    return g_strdup(inet_ntop(AF_INET, ip, text, sizeof text));
  if (inet_pton(AF_INET6, name, ip) == 1)
    return g_strdup(inet_ntop(AF_INET6, ip, text, sizeof text));
  return g_ascii_strdown(name, -1);
}

/* The names of the certificate (normalized) when it has more than PKI_RENEW_DAYS left;
 * NULL when it has not or cannot be read. */
static GPtrArray *lasting_names(const char *cert_pem) {
  gnutls_x509_crt_t crt = parse_crt(cert_pem);
  if (crt == NULL)
    return NULL;
  GPtrArray *names = NULL;
  time_t expires = gnutls_x509_crt_get_expiration_time(crt);
  if (expires != (time_t)-1 && expires > time(NULL) + (time_t)PKI_RENEW_DAYS * 86400) {
    names = g_ptr_array_new_with_free_func(g_free);
    for (guint i = 0;; i++) {
      char buf[256];
      size_t n = sizeof buf;
      unsigned int critical = 0;
      int type = gnutls_x509_crt_get_subject_alt_name(crt, i, buf, &n, &critical);
      char text[INET6_ADDRSTRLEN];
      if (type < 0)
        break;
      if (type == GNUTLS_SAN_IPADDRESS && (n == 4 || n == 16))
        g_ptr_array_add(names, g_strdup(inet_ntop(n == 4 ? AF_INET : AF_INET6, buf, text, sizeof text)));
      else if (type == GNUTLS_SAN_DNSNAME && n < sizeof buf)
        g_ptr_array_add(names, g_ascii_strdown(buf, (gssize)n));
    }
  }
  gnutls_x509_crt_deinit(crt);
  return names;
}

static int cmp_names(gconstpointer a, gconstpointer b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The server certificate's names: every --tls-san, the --listen host unless a wildcard, localhost
 * and 127.0.0.1; each once, normalized. */
static GPtrArray *server_names(const PkiOptions *o, GError **error) {
  g_autoptr(GPtrArray) out = g_ptr_array_new_with_free_func(g_free);
  g_autofree char *host = NULL;
  guint16 port = 0;
  if (o->listen != NULL && !od_parse_listen(o->listen, &host, &port, error))
    return NULL;
  g_autoptr(GPtrArray) wanted = g_ptr_array_new();
  for (const char *const *s = o->sans; s && *s; s++)
    g_ptr_array_add(wanted, (gpointer)*s);
  guint8 ip[16];
  gboolean wildcard =
      host == NULL || *host == '\0' || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0;
  if (!wildcard)
    g_ptr_array_add(wanted, host);
  g_ptr_array_add(wanted, (gpointer) "localhost");
  g_ptr_array_add(wanted, (gpointer) "127.0.0.1");
  for (guint k = 0; k < wanted->len; k++) {
    const char *name = wanted->pdata[k];
    if (inet_pton(AF_INET, name, ip) != 1 && inet_pton(AF_INET6, name, ip) != 1 &&
        !od_tls_dns_name_valid(name)) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "--tls-san '%s': neither an IP address nor a DNS name",
                  name);
      return NULL;
    }
    char *n = normalize_name(name);
    if (g_ptr_array_find_with_equal_func(out, n, g_str_equal, NULL))
      g_free(n);
    else
      g_ptr_array_add(out, n);
  }
  g_ptr_array_sort(out, cmp_names);
  return g_steal_pointer(&out);
}

static gboolean same_names(GPtrArray *a, GPtrArray *b) {
  if (a == NULL || b == NULL || a->len != b->len)
    return FALSE;
  g_ptr_array_sort(a, cmp_names);
  g_ptr_array_sort(b, cmp_names);
  for (guint k = 0; k < a->len; k++)
    if (strcmp(a->pdata[k], b->pdata[k]) != 0)
      return FALSE;
  return TRUE;
}

gboolean pki_load_ca(Root *r, const PkiOptions *o, GError **error) {
  if ((o->ca_cert == NULL) != (o->ca_key == NULL)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "--ca-cert and --ca-key (config ca_cert, ca_key) go together");
    return FALSE;
  }
  if (o->ca_cert != NULL) {
    if (!read_file(o->ca_cert, "--ca-cert", &r->ca_pem, error) ||
        !read_file(o->ca_key, "--ca-key", &r->ca_key_pem, error))
      return FALSE;
    if (!key_matches(r->ca_pem, r->ca_key_pem)) {
      g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "--ca-key %s is not the key of --ca-cert %s", o->ca_key,
                  o->ca_cert);
      return FALSE;
    }
  } else {
    g_autofree char *dir = g_build_filename(r->state_dir, "pki", NULL);
    if (!od_tls_ensure_ca(dir, "oakuk root CA", &r->ca_pem, &r->ca_key_pem, error)) {
      g_prefix_error(error, "root CA in %s: ", dir);
      return FALSE;
    }
  }
  r->ca_fingerprint = od_tls_fingerprint(r->ca_pem, error);
  if (r->ca_fingerprint == NULL)
    return FALSE;
  r->ca = od_tls_certificate_from_pem(r->ca_pem, error);
  return r->ca != NULL;
}

/* <state>/pki/server.crt and .key: kept while they last, are the CA's and name what is asked. */
static gboolean own_server_certificate(Root *r, const PkiOptions *o, char **cert, char **key,
                                       GError **error) {
  g_autoptr(GPtrArray) names = server_names(o, error);
  if (names == NULL)
    return FALSE;
  g_autofree char *dir = g_build_filename(r->state_dir, "pki", NULL);
  g_autofree char *cert_path = g_build_filename(dir, "server.crt", NULL);
  g_autofree char *key_path = g_build_filename(dir, "server.key", NULL);
  if (g_file_get_contents(cert_path, cert, NULL, NULL) && g_file_get_contents(key_path, key, NULL, NULL)) {
    g_autoptr(GPtrArray) has = lasting_names(*cert);
    if (same_names(has, names) && signed_by(*cert, r->ca_pem) && key_matches(*cert, *key))
      return TRUE;
  }
  g_clear_pointer(cert, g_free);
  g_clear_pointer(key, g_free);
  g_ptr_array_add(names, NULL);
  *key = od_tls_key_new(error);
  *cert = *key ? od_tls_issue(r->ca_pem, r->ca_key_pem, *key, "oakuk-root", (const char *const *)names->pdata,
                              PKI_SERVER_DAYS, error)
               : NULL;
  if (*cert == NULL)
    return FALSE;
  if (!signed_by(*cert, r->ca_pem)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "the CA key does not sign for the CA certificate");
    return FALSE;
  }
  if (g_mkdir_with_parents(dir, 0700) != 0) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "create %s: %s", dir, g_strerror(errno));
    return FALSE;
  }
  if (!od_tls_write_secret(key_path, *key, error) ||
      !g_file_set_contents_full(cert_path, *cert, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0644, error))
    return FALSE;
  g_autofree char *list = g_strjoinv(",", (char **)names->pdata);
  od_log(G_LOG_LEVEL_MESSAGE, "tls", "certificate", cert_path, "names", list, "msg",
         "server certificate issued by the root CA", NULL);
  return TRUE;
}

/* The operator's certificate as given, with the CA appended when it signed it and is not in the
 * file yet. */
static gboolean operator_certificate(Root *r, const PkiOptions *o, char **cert, char **key, GError **error) {
  if ((o->tls_cert == NULL) != (o->tls_key == NULL)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID,
                "--tls-cert and --tls-key (config tls_cert, tls_key) go together");
    return FALSE;
  }
  g_autofree char *given = NULL;
  if (!read_file(o->tls_cert, "--tls-cert", &given, error) || !read_file(o->tls_key, "--tls-key", key, error))
    return FALSE;
  if (!key_matches(given, *key)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "--tls-key %s is not the key of --tls-cert %s", o->tls_key,
                o->tls_cert);
    return FALSE;
  }
  if (!signed_by(given, r->ca_pem)) {
    od_log(
        G_LOG_LEVEL_WARNING, "tls", "certificate", o->tls_cert, "msg",
        "--tls-cert is not signed by the root CA: clusters, nodes and the CLI pin the CA and will refuse it",
        NULL);
    *cert = g_steal_pointer(&given);
  } else {
    g_autofree char *ca_body = g_strstrip(g_strdup(r->ca_pem));
    *cert = strstr(given, ca_body) ? g_steal_pointer(&given) : g_strconcat(given, "\n", r->ca_pem, NULL);
  }
  return TRUE;
}

GTlsCertificate *pki_server_certificate(Root *r, const PkiOptions *o, GError **error) {
  g_autofree char *cert = NULL, *key = NULL;
  gboolean ok = o->tls_cert != NULL || o->tls_key != NULL ? operator_certificate(r, o, &cert, &key, error)
                                                          : own_server_certificate(r, o, &cert, &key, error);
  if (!ok)
    return NULL;
  gboolean own = o->tls_cert == NULL;
  g_autofree char *bundle =
      own ? g_strconcat(cert, r->ca_pem, key, NULL) : g_strconcat(cert, "\n", key, NULL);
  GTlsCertificate *c = od_tls_certificate_from_pem(bundle, error);
  if (c == NULL)
    g_prefix_error(error, "server certificate: ");
  return c;
}

/* ---- join tokens ---- */

static gboolean is_hex(const char *s, gsize len) {
  if (strlen(s) != len)
    return FALSE;
  for (const char *p = s; *p; p++)
    if (!g_ascii_isxdigit(*p))
      return FALSE;
  return TRUE;
}

char *pki_join_token_new(Root *r, char **hash) {
  g_autofree char *secret = od_random_hex(SECRET_BYTES);
  *hash = od_sha256_hex(secret);
  return g_strconcat(JOIN_PREFIX, r->ca_fingerprint, ".", secret, NULL);
}

char *pki_join_token_hash(Root *r, const char *token, char **why) {
  if (!g_str_has_prefix(token, JOIN_PREFIX))
    return od_sha256_hex(token);
  g_auto(GStrv) parts = g_strsplit(token, ".", 0);
  if (g_strv_length(parts) != 3 || !is_hex(parts[1], 64) || !is_hex(parts[2], 2 * SECRET_BYTES)) {
    *why = g_strdup("join token is not oakuk1.<64 hex digits>.<48 hex digits>");
    return NULL;
  }
  if (g_ascii_strcasecmp(parts[1], r->ca_fingerprint) != 0) {
    *why = g_strdup_printf("join token was made for the root CA with fingerprint %s; this root's CA is %s",
                           parts[1], r->ca_fingerprint);
    return NULL;
  }
  return od_sha256_hex(parts[2]);
}

/* ---- cluster credentials ---- */

char *pki_credential(Root *r, const char *id, const char *salt) {
  g_autoptr(GHmac) h = g_hmac_new(G_CHECKSUM_SHA256, r->secret, sizeof r->secret);
  static const char label[] = "oakuk cluster credential";
  g_hmac_update(h, (const guint8 *)label, sizeof label); /* with its NUL: a separator */
  g_hmac_update(h, (const guint8 *)id, strlen(id) + 1);
  g_hmac_update(h, (const guint8 *)salt, strlen(salt));
  g_autofree char *hex = g_strdup(g_hmac_get_string(h));
  hex[2 * SECRET_BYTES] = '\0';
  return g_strconcat(CREDENTIAL_PREFIX, id, ".", hex, NULL);
}

char *pki_credential_new(Root *r, const char *id, char **salt, char **hash) {
  *salt = od_random_hex(16);
  char *credential = pki_credential(r, id, *salt);
  *hash = od_sha256_hex(strrchr(credential, '.') + 1);
  return credential;
}

gboolean pki_credential_parse(const char *text, char **id, char **secret) {
  if (text == NULL || !g_str_has_prefix(text, CREDENTIAL_PREFIX))
    return FALSE;
  g_auto(GStrv) parts = g_strsplit(text, ".", 0);
  if (g_strv_length(parts) != 3 || !od_is_object_id(parts[1]) || !is_hex(parts[2], 2 * SECRET_BYTES))
    return FALSE;
  *id = g_strdup(parts[1]);
  *secret = g_strdup(parts[2]);
  return TRUE;
}

char *pki_cluster_bearer(Root *r, const StoreCluster *cl) {
  if (cl->token != NULL && *cl->token != '\0')
    return g_strdup(cl->token);
  return pki_credential(r, cl->id, cl->cred_salt ? cl->cred_salt : "");
}

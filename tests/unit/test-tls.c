/* The daemons' PKI (daemons/common/tls.c) and HTTPS on their servers (daemons/common/http.c): real
 * GnuTLS certificates, a real SoupServer on 127.0.0.1 and real TLS clients. */
#include "daemon-common.h"

#include <glib/gstdio.h>
#include <gnutls/x509.h>
#include <string.h>

typedef struct {
  char *ca_key, *ca;
  char *other_ca_key, *other_ca;
} Pki;

static void pki_init(Pki *p) {
  p->ca_key = od_tls_key_new(NULL);
  p->ca = od_tls_ca_new(p->ca_key, "oakuk test CA", NULL);
  p->other_ca_key = od_tls_key_new(NULL);
  p->other_ca = od_tls_ca_new(p->other_ca_key, "someone else's CA", NULL);
  g_assert_nonnull(p->ca);
  g_assert_nonnull(p->other_ca);
}

static void pki_clear(Pki *p) {
  g_free(p->ca_key);
  g_free(p->ca);
  g_free(p->other_ca_key);
  g_free(p->other_ca);
}

static gnutls_x509_crt_t parse(const char *pem) {
  gnutls_x509_crt_t crt;
  gnutls_datum_t d = {(unsigned char *)pem, (unsigned int)strlen(pem)};
  g_assert_cmpint(gnutls_x509_crt_init(&crt), ==, 0);
  g_assert_cmpint(gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM), ==, 0);
  return crt;
}

static char *common_name(gnutls_x509_crt_t crt) {
  char buf[256];
  size_t n = sizeof buf;
  g_assert_cmpint(gnutls_x509_crt_get_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, 0, buf, &n), ==, 0);
  return g_strndup(buf, n);
}

static gboolean is_ca(gnutls_x509_crt_t crt) {
  unsigned int critical = 0;
  return gnutls_x509_crt_get_basic_constraints(crt, &critical, NULL, NULL) == 1;
}

static void test_ca_and_fingerprint(void) {
  Pki p;
  pki_init(&p);
  gnutls_x509_crt_t ca = parse(p.ca);
  g_assert_true(is_ca(ca));
  g_autofree char *cn = common_name(ca);
  g_assert_cmpstr(cn, ==, "oakuk test CA");
  g_autofree char *fp = od_tls_fingerprint(p.ca, NULL);
  g_assert_cmpuint(strlen(fp), ==, 64);
  /* The same as the DER's SHA-256, as `openssl x509 -fingerprint -sha256` shows it. */
  gnutls_datum_t der = {0};
  g_assert_cmpint(gnutls_x509_crt_export2(ca, GNUTLS_X509_FMT_DER, &der), ==, 0);
  g_autofree char *fp2 = g_compute_checksum_for_data(G_CHECKSUM_SHA256, der.data, der.size);
  g_assert_cmpstr(fp, ==, fp2);
  gnutls_free(der.data);
  gnutls_x509_crt_deinit(ca);
  g_autoptr(GError) err = NULL;
  g_assert_null(od_tls_fingerprint("not a certificate", &err));
  g_assert_nonnull(err);
  pki_clear(&p);
}

static void test_ensure_ca(void) {
  g_autofree char *dir = g_dir_make_tmp("oakuk-tls-XXXXXX", NULL);
  g_autofree char *sub = g_build_filename(dir, "pki", NULL);
  g_autofree char *c1 = NULL, *k1 = NULL, *c2 = NULL, *k2 = NULL;
  g_assert_true(od_tls_ensure_ca(sub, "root CA", &c1, &k1, NULL));
  g_assert_true(od_tls_ensure_ca(sub, "root CA", &c2, &k2, NULL));
  g_assert_cmpstr(c1, ==, c2); /* kept, not re-made */
  g_assert_cmpstr(k1, ==, k2);
  GStatBuf st;
  g_autofree char *key_path = g_build_filename(sub, "ca.key", NULL);
  g_assert_cmpint(g_stat(key_path, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 0777, ==, 0600);
  g_assert_cmpint(g_stat(sub, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 0777, ==, 0700);
  /* Half a CA is refused, not silently replaced. */
  g_unlink(key_path);
  g_autofree char *c3 = NULL, *k3 = NULL;
  g_autoptr(GError) err = NULL;
  g_assert_false(od_tls_ensure_ca(sub, "root CA", &c3, &k3, &err));
  g_assert_nonnull(strstr(err->message, "ca.key"));
  g_autofree char *crt_path = g_build_filename(sub, "ca.crt", NULL);
  g_unlink(crt_path);
  g_rmdir(sub);
  g_rmdir(dir);
}

static void test_csr_grants_only_key_and_names(void) {
  Pki p;
  pki_init(&p);
  g_autofree char *key = od_tls_key_new(NULL);
  const char *sans[] = {"10.0.0.7", "cluster.example", "fd00::1", NULL};
  g_autofree char *csr = od_tls_csr_new(key, "i-am-the-root", sans, NULL);
  g_assert_nonnull(csr);
  g_autofree char *cert = od_tls_sign_csr(p.ca, p.ca_key, csr, "cluster-7", 365, NULL);
  g_assert_nonnull(cert);
  gnutls_x509_crt_t crt = parse(cert);
  g_autofree char *cn = common_name(crt);
  g_assert_cmpstr(cn, ==, "cluster-7");
  g_assert_false(is_ca(crt));
  g_assert_cmpint(gnutls_x509_crt_check_hostname(crt, "cluster.example"), !=, 0);
  g_assert_cmpint(gnutls_x509_crt_check_ip(crt, (const unsigned char *)"\x0a\x00\x00\x07", 4, 0), !=, 0);
  g_assert_cmpint(gnutls_x509_crt_check_hostname(crt, "root.example"), ==, 0);
  gnutls_x509_crt_t ca = parse(p.ca);
  unsigned int status = 1;
  g_assert_cmpint(gnutls_x509_crt_list_verify(&crt, 1, &ca, 1, NULL, 0, 0, &status), ==, 0);
  g_assert_cmpuint(status, ==, 0);
  gnutls_x509_crt_deinit(ca);
  gnutls_x509_crt_deinit(crt);
  /* A tampered request fails its own signature. */
  g_autofree char *bad = g_strdup(csr);
  char *mid = bad + strlen(bad) / 2;
  *mid = *mid == 'A' ? 'B' : 'A';
  g_autoptr(GError) err = NULL;
  g_assert_null(od_tls_sign_csr(p.ca, p.ca_key, bad, "cluster-7", 365, &err));
  g_assert_nonnull(err);
  /* Names that are neither addresses nor DNS names are refused. */
  const char *weird[] = {"a b", NULL};
  g_clear_error(&err);
  g_assert_null(od_tls_csr_new(key, "x", weird, &err));
  g_assert_nonnull(strstr(err->message, "'a b'"));
  pki_clear(&p);
}

/* ---- HTTPS ---- */

typedef struct {
  char *url;
  GTlsCertificate *ca; /* pin by CA, or */
  char *fingerprint;   /* pin by fingerprint */
  gboolean plain;      /* an http:// client against the HTTPS port */
  guint status;        /* the answer: 0 when the request failed */
  char *found_ca;
  GMainLoop *loop;
} Client;

static void healthz(SoupServer *s, SoupServerMessage *msg, const char *path, GHashTable *q, gpointer d) {
  soup_server_message_set_status(msg, 200, NULL);
  soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_STATIC, "{\"ok\":true}", 11);
}

static gpointer client_thread(gpointer data) {
  Client *c = data;
  g_autoptr(GMainContext) ctx = g_main_context_new();
  g_main_context_push_thread_default(ctx);
  g_autoptr(SoupSession) s = od_tls_session_new();
  g_autofree char *url = c->plain ? g_strdup(c->url) : g_strdup_printf("https%s", c->url + 4);
  g_autoptr(SoupMessage) msg = soup_message_new("GET", url);
  if (!c->plain)
    od_tls_pin_message(msg, c->ca, c->fingerprint);
  g_autoptr(GBytes) body = soup_session_send_and_read(s, msg, NULL, NULL);
  c->status = body ? soup_message_get_status(msg) : 0;
  c->found_ca = od_tls_message_found_ca(msg);
  g_main_context_pop_thread_default(ctx);
  g_main_loop_quit(c->loop);
  return NULL;
}

/* Runs one client against the server on this thread's loop. */
static void run_client(Client *c) {
  c->loop = g_main_loop_new(NULL, FALSE);
  GThread *t = g_thread_new("client", client_thread, c);
  g_main_loop_run(c->loop);
  g_thread_join(t);
  g_main_loop_unref(c->loop);
}

static SoupServer *https_server(Pki *p, const char *san, char **url) {
  g_autofree char *key = od_tls_key_new(NULL);
  const char *sans[] = {san, NULL};
  g_autofree char *leaf = od_tls_issue(p->ca, p->ca_key, key, "server", sans, 30, NULL);
  g_autofree char *pem = g_strconcat(leaf, p->ca, key, NULL);
  g_autoptr(GTlsCertificate) cert = od_tls_certificate_from_pem(pem, NULL);
  g_assert_nonnull(cert);
  SoupServer *server = soup_server_new("server-header", "test", NULL);
  soup_server_add_handler(server, "/healthz", healthz, NULL, NULL);
  od_http_server_set_tls(server, cert);
  for (int i = 0; i < 50; i++) {
    guint port = 20000 + g_random_int_range(0, 9000);
    g_autofree char *listen = g_strdup_printf("127.0.0.1:%u", port);
    if (od_http_server_listen(server, listen, NULL)) {
      *url = g_strdup_printf("http://127.0.0.1:%u/healthz", port);
      return server;
    }
  }
  g_assert_not_reached();
}

static void test_https(void) {
  if (g_tls_backend_get_default() == NULL || !g_tls_backend_supports_tls(g_tls_backend_get_default())) {
    g_test_fail_printf("GIO has no TLS backend: install glib-networking");
    return;
  }
  Pki p;
  pki_init(&p);
  g_autofree char *url = NULL;
  g_autoptr(SoupServer) server = https_server(&p, "127.0.0.1", &url);
  g_autoptr(GTlsCertificate) ca = od_tls_certificate_from_pem(p.ca, NULL);
  g_autoptr(GTlsCertificate) other = od_tls_certificate_from_pem(p.other_ca, NULL);
  g_autofree char *fp = od_tls_fingerprint(p.ca, NULL);
  g_autofree char *other_fp = od_tls_fingerprint(p.other_ca, NULL);

  Client pinned = {.url = url, .ca = ca};
  run_client(&pinned);
  g_assert_cmpuint(pinned.status, ==, 200);

  /* First contact with a join token's fingerprint: the CA comes from the server's chain. */
  Client first = {.url = url, .fingerprint = fp};
  run_client(&first);
  g_assert_cmpuint(first.status, ==, 200);
  g_assert_nonnull(first.found_ca);
  g_autofree char *found_fp = od_tls_fingerprint(first.found_ca, NULL);
  g_assert_cmpstr(found_fp, ==, fp);
  g_free(first.found_ca);

  /* A client trusting another CA, or another fingerprint, is refused by its own side. */
  Client wrong_ca = {.url = url, .ca = other};
  run_client(&wrong_ca);
  g_assert_cmpuint(wrong_ca.status, ==, 0);
  Client wrong_fp = {.url = url, .fingerprint = other_fp};
  run_client(&wrong_fp);
  g_assert_cmpuint(wrong_fp.status, ==, 0);
  g_assert_null(wrong_fp.found_ca);

  /* A plaintext client gets no answer. */
  Client plain = {.url = url, .plain = TRUE};
  run_client(&plain);
  g_assert_cmpuint(plain.status, ==, 0);
  pki_clear(&p);
}

static void test_https_wrong_host(void) {
  Pki p;
  pki_init(&p);
  g_autofree char *url = NULL;
  /* The certificate names another address than the one the client dials. */
  g_autoptr(SoupServer) server = https_server(&p, "127.0.0.2", &url);
  g_autoptr(GTlsCertificate) ca = od_tls_certificate_from_pem(p.ca, NULL);
  Client c = {.url = url, .ca = ca};
  run_client(&c);
  g_assert_cmpuint(c.status, ==, 0);
  pki_clear(&p);
}

/* A daemon's TLS clients never load the system's trust store (8 MB, and trust we never want): the
 * backend's default database, which glib-networking consults for every client connection, is one
 * that trusts nothing, even a CA of the system's store. */
static void test_no_system_trust(void) {
  g_autoptr(SoupSession) session = od_tls_session_new();
  GTlsDatabase *db = g_tls_backend_get_default_database(g_tls_backend_get_default());
  g_assert_nonnull(db);
  Pki p;
  pki_init(&p);
  g_autoptr(GTlsCertificate) ca = od_tls_certificate_from_pem(p.ca, NULL);
  g_assert_cmpint(g_tls_database_verify_chain(db, ca, G_TLS_DATABASE_PURPOSE_AUTHENTICATE_SERVER, NULL, NULL,
                                              G_TLS_DATABASE_VERIFY_NONE, NULL, NULL),
                  ==, G_TLS_CERTIFICATE_UNKNOWN_CA);
  g_assert_null(
      g_tls_database_lookup_certificate_issuer(db, ca, NULL, G_TLS_DATABASE_LOOKUP_NONE, NULL, NULL));
  /* A CA of the system's store, where there is one (Debian's ca-certificates), is not trusted either. */
  g_autoptr(GTlsCertificate) sys =
      g_tls_certificate_new_from_file("/etc/ssl/certs/ca-certificates.crt", NULL);
  if (sys != NULL)
    g_assert_cmpint(g_tls_database_verify_chain(db, sys, G_TLS_DATABASE_PURPOSE_AUTHENTICATE_SERVER, NULL,
                                                NULL, G_TLS_DATABASE_VERIFY_NONE, NULL, NULL),
                    ==, G_TLS_CERTIFICATE_UNKNOWN_CA);
  g_object_unref(db);
  pki_clear(&p);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/tls/ca-and-fingerprint", test_ca_and_fingerprint);
  g_test_add_func("/tls/ensure-ca", test_ensure_ca);
  g_test_add_func("/tls/csr", test_csr_grants_only_key_and_names);
  g_test_add_func("/tls/https", test_https);
  g_test_add_func("/tls/https-wrong-host", test_https_wrong_host);
  g_test_add_func("/tls/no-system-trust", test_no_system_trust);
  return g_test_run();
}

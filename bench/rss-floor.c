/* rss-floor: the idle memory of the libraries a TLS control-plane daemon is built on, alone.
 *
 * This is bench/e2e-deploy's reference for the daemons' idle RSS. The program does what each of
 * oakuk-root, oakuk-cluster and oakuk-node does at the least, through the same libraries and with the
 * same memory-saving choices (no proxy lookup, no system trust store), and nothing else:
 *   - it makes an ECDSA P-256 key and a self-signed certificate for 127.0.0.1 with GnuTLS (as the root
 *     makes its CA and every daemon its key at join);
 *   - it opens an SQLite database in WAL mode and writes and reads a row (the root's and the
 *     cluster's stores, the node's);
 *   - it serves one HTTPS request and makes one, verifying the server against the certificate, with
 *     libsoup 3 (SoupServer, SoupSession) through glib-networking's GnuTLS backend;
 *   - it parses the JSON answer with json-glib;
 * then prints "ready" and idles in its main loop until killed, for the caller to read
 * /proc/<pid>/smaps_rollup as it reads the daemons'. Its scratch files are removed before "ready".
 *
 * Built a second time as rss-floor-tls (FLOOR_MINIMAL): no libsoup and no SQLite linked at all, the
 * exchange made with GIO's TLS streams directly: the least any daemon with TLS on GIO needs.
 *
 * Usage: rss-floor | rss-floor-tls */
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <json-glib/json-glib.h>
#ifndef FLOOR_MINIMAL
#include <libsoup/soup.h>
#include <sqlite3.h>
#endif
#include <stdio.h>
#include <string.h>

#define FLOOR_BODY "{\"ok\":true,\"what\":\"rss-floor\"}"

static void die(const char *what, const char *why) {
  fprintf(stderr, "rss-floor: %s: %s\n", what, why);
  exit(1);
}

static void gnutls_check(int rc, const char *what) {
  if (rc < 0)
    die(what, gnutls_strerror(rc));
}

/* A key and a self-signed certificate for 127.0.0.1, both PEM, concatenated (certificate first). */
static char *make_identity(void) {
  gnutls_x509_privkey_t key;
  gnutls_x509_crt_t crt;
  gnutls_check(gnutls_x509_privkey_init(&key), "key");
  gnutls_check(
      gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA, GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0),
      "key generation");
  gnutls_check(gnutls_x509_crt_init(&crt), "certificate");
  time_t now = time(NULL);
  unsigned char serial[8] = {1, 2, 3, 4, 5, 6, 7, 8};
  const unsigned char loopback[4] = {127, 0, 0, 1};
  gnutls_check(gnutls_x509_crt_set_version(crt, 3), "version");
  gnutls_check(gnutls_x509_crt_set_serial(crt, serial, sizeof serial), "serial");
  gnutls_check(gnutls_x509_crt_set_activation_time(crt, now - 60), "activation");
  gnutls_check(gnutls_x509_crt_set_expiration_time(crt, now + 3600), "expiration");
  gnutls_check(gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, "rss-floor", 9), "dn");
  gnutls_check(gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, loopback, sizeof loopback,
                                                    GNUTLS_FSAN_SET),
               "subject alt name");
  gnutls_check(gnutls_x509_crt_set_basic_constraints(crt, 1, -1), "basic constraints");
  gnutls_check(gnutls_x509_crt_set_key(crt, key), "public key");
  gnutls_check(gnutls_x509_crt_sign2(crt, crt, key, GNUTLS_DIG_SHA256, 0), "self-signature");
  gnutls_datum_t c = {0}, k = {0};
  gnutls_check(gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, &c), "certificate export");
  gnutls_check(gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, &k), "key export");
  char *pem =
      g_strdup_printf("%.*s%.*s", (int)c.size, (const char *)c.data, (int)k.size, (const char *)k.data);
  gnutls_free(c.data);
  gnutls_free(k.data);
  gnutls_x509_crt_deinit(crt);
  gnutls_x509_privkey_deinit(key);
  return pem;
}

static void parse_answer(const char *data, gsize len) {
  g_autoptr(JsonParser) p = json_parser_new();
  g_autoptr(GError) error = NULL;
  if (!json_parser_load_from_data(p, data, (gssize)len, &error))
    die("answer", error->message);
  JsonNode *root = json_parser_get_root(p);
  if (!JSON_NODE_HOLDS_OBJECT(root) || !json_object_get_boolean_member(json_node_get_object(root), "ok"))
    die("answer", "not the object served");
}

#ifndef FLOOR_MINIMAL
static sqlite3 *store_open(const char *path) {
  sqlite3 *db = NULL;
  if (sqlite3_open(path, &db) != SQLITE_OK)
    die(path, db ? sqlite3_errmsg(db) : "cannot open");
  char *err = NULL;
  if (sqlite3_exec(db,
                   "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                   "CREATE TABLE kv(k TEXT PRIMARY KEY, v TEXT NOT NULL);"
                   "BEGIN; INSERT INTO kv VALUES('floor', '" FLOOR_BODY "'); COMMIT;",
                   NULL, NULL, &err) != SQLITE_OK)
    die("sqlite", err);
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(db, "SELECT v FROM kv WHERE k = ?", -1, &st, NULL) != SQLITE_OK)
    die("sqlite", sqlite3_errmsg(db));
  sqlite3_bind_text(st, 1, "floor", -1, SQLITE_STATIC);
  if (sqlite3_step(st) != SQLITE_ROW)
    die("sqlite", "the row written is not read back");
  sqlite3_finalize(st);
  return db;
}

/* ---- one exchange through libsoup ---- */

typedef struct {
  GMainLoop *loop;
  GBytes *answer;
  GError *error;
} Exchange;

static void soup_handler(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                         gpointer user_data) {
  soup_server_message_set_status(msg, 200, NULL);
  soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_STATIC, FLOOR_BODY,
                                   strlen(FLOOR_BODY));
}

static void soup_done(GObject *source, GAsyncResult *res, gpointer user_data) {
  Exchange *x = user_data;
  x->answer = soup_session_send_and_read_finish(SOUP_SESSION(source), res, &x->error);
  g_main_loop_quit(x->loop);
}

static void exchange_soup(GTlsCertificate *identity, GTlsDatabase *trust, GMainLoop *loop) {
  g_autoptr(GError) error = NULL;
  g_autoptr(SoupServer) server = soup_server_new("tls-certificate", identity, NULL);
  soup_server_add_handler(server, NULL, soup_handler, NULL, NULL);
  if (!soup_server_listen_local(server, 0, SOUP_SERVER_LISTEN_IPV4_ONLY | SOUP_SERVER_LISTEN_HTTPS, &error))
    die("listen", error->message);
  GSList *uris = soup_server_get_uris(server);
  g_autofree char *url = g_strdup_printf("https://127.0.0.1:%d/floor", g_uri_get_port(uris->data));
  g_slist_free_full(uris, (GDestroyNotify)g_uri_unref);
  g_autoptr(SoupSession) session = soup_session_new();
  soup_session_set_tls_database(session, trust);
  soup_session_set_proxy_resolver(session, NULL);
  g_autoptr(SoupMessage) msg = soup_message_new("GET", url);
  Exchange x = {.loop = loop};
  soup_session_send_and_read_async(session, msg, G_PRIORITY_DEFAULT, NULL, soup_done, &x);
  g_main_loop_run(loop);
  if (!x.answer)
    die(url, x.error->message);
  if (soup_message_get_status(msg) != 200)
    die(url, "not 200");
  gsize len = 0;
  const char *data = g_bytes_get_data(x.answer, &len);
  parse_answer(data, len);
  g_bytes_unref(x.answer);
}

#else
/* ---- one exchange through GIO's TLS streams ---- */

static gpointer gio_serve(gpointer user_data) {
  GSocketListener *listener = user_data;
  g_autoptr(GError) error = NULL;
  GTlsCertificate *identity = g_object_get_data(G_OBJECT(listener), "identity");
  g_autoptr(GSocketConnection) c = g_socket_listener_accept(listener, NULL, NULL, &error);
  if (!c)
    die("accept", error->message);
  g_autoptr(GIOStream) tls = g_tls_server_connection_new(G_IO_STREAM(c), identity, &error);
  if (!tls)
    die("server TLS", error->message);
  char request[64];
  if (g_input_stream_read(g_io_stream_get_input_stream(tls), request, sizeof request, NULL, &error) <= 0)
    die("server read", error ? error->message : "end of stream");
  if (!g_output_stream_write_all(g_io_stream_get_output_stream(tls), FLOOR_BODY, strlen(FLOOR_BODY), NULL,
                                 NULL, &error) ||
      !g_io_stream_close(tls, NULL, &error))
    die("server write", error->message);
  return NULL;
}

static void exchange_gio(GTlsCertificate *identity, GTlsDatabase *trust) {
  g_autoptr(GError) error = NULL;
  g_autoptr(GSocketListener) listener = g_socket_listener_new();
  g_object_set_data(G_OBJECT(listener), "identity", identity);
  g_autoptr(GInetAddress) lo = g_inet_address_new_loopback(G_SOCKET_FAMILY_IPV4);
  g_autoptr(GSocketAddress) any = g_inet_socket_address_new(lo, 0);
  g_autoptr(GSocketAddress) bound = NULL;
  if (!g_socket_listener_add_address(listener, any, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, NULL, &bound,
                                     &error))
    die("listen", error->message);
  GThread *server = g_thread_new("serve", gio_serve, listener);
  g_autoptr(GSocketClient) client = g_socket_client_new();
  g_socket_client_set_enable_proxy(client, FALSE);
  g_autoptr(GSocketConnection) c = g_socket_client_connect(client, G_SOCKET_CONNECTABLE(bound), NULL, &error);
  if (!c)
    die("connect", error->message);
  g_autoptr(GIOStream) tls = g_tls_client_connection_new(G_IO_STREAM(c), G_SOCKET_CONNECTABLE(bound), &error);
  if (!tls)
    die("client TLS", error->message);
  g_tls_connection_set_database(G_TLS_CONNECTION(tls), trust);
  char answer[256];
  gsize got = 0;
  if (!g_output_stream_write_all(g_io_stream_get_output_stream(tls), "GET", 3, NULL, NULL, &error) ||
      !g_input_stream_read_all(g_io_stream_get_input_stream(tls), answer, sizeof answer, &got, NULL, &error))
    die("client", error->message);
  parse_answer(answer, got);
  g_io_stream_close(tls, NULL, NULL);
  g_thread_join(server);
}
#endif

int main(int argc, char **argv) {
  if (argc > 1)
    die(argv[1], "no arguments are taken (usage: rss-floor)");
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = g_dir_make_tmp("rss-floor-XXXXXX", &error);
  if (!dir)
    die("scratch directory", error->message);
  g_autofree char *pem = make_identity();
  g_autofree char *anchor = g_build_filename(dir, "ca.pem", NULL);
  if (!g_file_set_contents(anchor, pem, -1, &error))
    die(anchor, error->message);
  g_autoptr(GTlsCertificate) identity = g_tls_certificate_new_from_pem(pem, -1, &error);
  if (!identity)
    die("identity", error->message);
  g_autoptr(GTlsDatabase) trust = g_tls_file_database_new(anchor, &error);
  if (!trust)
    die(anchor, error->message);
  /* as the daemons do: nothing ever loads the system's trust store */
  g_tls_backend_set_default_database(g_tls_backend_get_default(), trust);
  g_autoptr(GMainLoop) loop = g_main_loop_new(NULL, FALSE);
#ifndef FLOOR_MINIMAL
  g_autofree char *db_path = g_build_filename(dir, "floor.db", NULL);
  sqlite3 *db = store_open(db_path);
  exchange_soup(identity, trust, loop);
  /* the database stays open, as a daemon's does; its files go (SQLite keeps them open) */
  g_autofree char *wal = g_strconcat(db_path, "-wal", NULL);
  g_autofree char *shm = g_strconcat(db_path, "-shm", NULL);
  g_unlink(wal);
  g_unlink(shm);
  g_unlink(db_path);
#else
  exchange_gio(identity, trust);
#endif
  g_unlink(anchor);
  g_rmdir(dir);
  printf("ready\n");
  fflush(stdout);
  g_main_loop_run(loop);
#ifndef FLOOR_MINIMAL
  sqlite3_close(db);
#endif
  return 0;
}

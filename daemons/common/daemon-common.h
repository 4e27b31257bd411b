/* Code shared by the oakuk daemons: configuration and options, structured logging, JSON over
 * HTTP on a SoupServer, HS256 JWTs, password hashing, randomness and SQLite helpers.
 * Internal to the daemons; not part of liboakuk's ABI. */
#ifndef OAKUK_DAEMON_COMMON_H
#define OAKUK_DAEMON_COMMON_H

#include <glib.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>
#include <oakuk/oakuk.h>
#include <sqlite3.h>

G_BEGIN_DECLS

#define OD_ERROR (od_error_quark())
GQuark od_error_quark(void);
typedef enum {
  OD_ERROR_INVALID, /* malformed input */
  OD_ERROR_AUTH,    /* authentication failed */
  OD_ERROR_IO,      /* file or database I/O */
} OdError;

/* ---- options and configuration ---- */

/* Common options every daemon accepts; filled by od_options_parse. */
typedef struct {
  char *config_path; /* --config FILE */
  char *log_format;  /* --log-format text|json (default text) */
  gboolean verbose;  /* --verbose: debug messages too */
  gboolean version;  /* --version: the daemon prints its name and version and exits 0 */
} OdCommonOptions;

/* Parses argv with the daemon's own entries plus the common ones; on success loads the config file
 * (an empty key file when --config is absent or --version is given). Called first by every daemon, it also
 * tunes malloc for a long-running process (config.c). */
gboolean od_options_parse(int *argc, char ***argv, const char *summary, const GOptionEntry *entries,
                          OdCommonOptions *common, GKeyFile **config, GError **error);
void od_common_options_clear(OdCommonOptions *common);

/* Typed reads from a key file, falling back to def when the key is absent; a present key with a
 * bad value is an error naming "[group] key" and the file. */
gboolean od_config_string(GKeyFile *kf, const char *group, const char *key, const char *def, char **out,
                          GError **error);
gboolean od_config_int(GKeyFile *kf, const char *group, const char *key, gint64 def, gint64 min, gint64 max,
                       gint64 *out, GError **error);

/* Refuses a config file with a group other than group (or, when other_prefix is not NULL, a group
 * whose name starts with it, such as the node's "registry HOST"), or with a key that its group does
 * not know (keys, other_keys: NULL terminated), naming the file, the group and the key: a misspelt
 * key ("listn=") would otherwise leave its setting at the default without a word. path NULL:
 * nothing was loaded, nothing to check. */
gboolean od_config_check_keys(GKeyFile *kf, const char *path, const char *group, const char *const *keys,
                              const char *other_prefix, const char *const *other_keys, GError **error);

/* Parses "ADDR:PORT" (ADDR may be a bracketed IPv6 literal). */
gboolean od_parse_listen(const char *text, char **addr, guint16 *port, GError **error);

/* ---- logging ---- */

/* Installs a structured log writer on stderr: one line per record, "key=value" pairs (text) or a
 * JSON object (json), with the daemon name, level, message and any custom fields. */
void od_log_init(const char *daemon, const char *format, gboolean verbose);

/* Logs an event with extra fields: od_log(G_LOG_LEVEL_MESSAGE, "deploy", "service", id, NULL, "fmt", ...).
 * The key/value list ends with NULL; values are strings. */
void od_log(GLogLevelFlags level, const char *event, ...) G_GNUC_NULL_TERMINATED;
void od_logf(GLogLevelFlags level, const char *event, const char *const *kv, const char *fmt, ...)
    G_GNUC_PRINTF(4, 5);

/* ---- randomness, ids, secrets, passwords ---- */

/* Fills buf from the kernel's CSPRNG (getrandom); aborts only if the kernel has none. */
void od_random_bytes(guint8 *buf, gsize len);
/* "username:$7$..." for mosquitto's password_file (its own hash format): written by the daemon
 * itself, so no password ever appears on a command line. NULL if hashing failed. */
char *od_mosquitto_password_line(const char *username, const char *password);
/* len random bytes as 2*len lowercase hex digits. */
char *od_random_hex(gsize len);
/* A 24-hex-digit id like a MongoDB ObjectId: 4 bytes of seconds since the epoch, 8 random bytes. */
char *od_object_id(void);
gboolean od_is_object_id(const char *s);
/* Reads a secret file of exactly len bytes, creating it (mode 0600) with random content when it
 * does not exist. */
gboolean od_secret_load_or_create(const char *path, guint8 *out, gsize len, gboolean *created,
                                  GError **error);
/* PBKDF2-HMAC-SHA256 with a random salt: "pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>". */
char *od_password_hash(const char *password);
gboolean od_password_verify(const char *stored, const char *password);
/* A random password of 20 characters from an unambiguous alphabet. */
char *od_password_generate(void);
/* Hex SHA-256 of a string. */
char *od_sha256_hex(const char *s);
/* Constant-time comparison of two NUL-terminated strings. */
gboolean od_str_equal_ct(const char *a, const char *b);

/* ---- JWT (HS256) ---- */

/* Signs claims (a JSON object) with key; returns the compact token. */
char *od_jwt_sign(const guint8 *key, gsize key_len, JsonObject *claims);
/* Verifies alg HS256, the signature and "exp" (an integer, seconds since the epoch: required) against
 * now_s; returns the claims (caller unrefs) or NULL with an OD_ERROR_AUTH error ("token has no
 * expiry", "token has expired", ...). */
JsonObject *od_jwt_verify(const guint8 *key, gsize key_len, const char *token, gint64 now_s, GError **error);

/* ---- metrics (common/metrics.c): Prometheus text format 0.0.4 ---- */

/* "# HELP name help" and "# TYPE name type" lines. */
void od_metrics_header(GString *out, const char *name, const char *type, const char *help);
/* One sample without labels, after its HELP and TYPE lines. */
void od_metrics_value(GString *out, const char *name, const char *type, const char *help, gint64 value);
/* A label value with backslash, double quote and newline escaped. */
char *od_metrics_label_escape(const char *value);
/* oakuk_build_info{daemon="...",version="..."} 1, the same metric name in every daemon. */
void od_metrics_build_info(GString *out, const char *daemon, const char *version);
/* The process metrics of Prometheus' client libraries from /proc/self: process_cpu_seconds_total,
 * process_resident_memory_bytes, process_virtual_memory_bytes, process_open_fds,
 * process_start_time_seconds. */
void od_metrics_process(GString *out);

/* A histogram with fixed upper bounds (seconds), one series per label set. */
typedef struct OdHistogram OdHistogram;
OdHistogram *od_histogram_new(const char *name, const char *help, const double *bounds, gsize n_bounds);
void od_histogram_free(OdHistogram *h);
/* labels: "" or NULL, or the label pairs as written between the braces ('route="x",method="GET"'),
 * their values escaped (od_metrics_label_escape). */
void od_histogram_observe(OdHistogram *h, const char *labels, double value);
/* Its HELP and TYPE lines, then every series: _bucket (cumulative, le="+Inf" last), _sum, _count. */
void od_histogram_write(OdHistogram *h, GString *out);
/* Bounds for HTTP request durations: 5 ms .. 10 s. */
extern const double od_http_duration_bounds[];
extern const gsize od_http_duration_bounds_len;

/* ---- JSON over HTTP ---- */

#define OD_HTTP_MAX_BODY (1024 * 1024)

/* Makes server accept HTTP connections on listen ("ADDR:PORT", od_parse_listen) until it is
 * finalised, rejecting request bodies announced larger than OD_HTTP_MAX_BODY before they are read
 * (413). Handlers are added by the caller. */
gboolean od_http_server_listen(SoupServer *server, const char *listen, GError **error);
/* Serves HTTPS with cert (its chain included) on the connections accepted from now on; NULL: plain. */
void od_http_server_set_tls(SoupServer *server, GTlsCertificate *cert);
void od_http_reply_json(SoupServerMessage *msg, guint status, JsonNode *node);
/* Replies with a JSON string whose content is the serialized node (Oakestra's double encoding). */
void od_http_reply_json_string(SoupServerMessage *msg, guint status, JsonNode *node);
/* {"error": {"code": code, "message": message, "path": path}} */
void od_http_reply_error(SoupServerMessage *msg, guint status, const char *code, const char *path,
                         const char *fmt, ...) G_GNUC_PRINTF(5, 6);
/* Parses the request body as JSON (size and nesting limits, must be non-empty). On failure
 * replies 400/413 with the error object itself and returns NULL. */
JsonNode *od_http_read_json(SoupServerMessage *msg);
/* The token of "Authorization: Bearer <token>", or NULL. Borrowed from the headers. */
char *od_http_bearer(SoupServerMessage *msg);
/* Serializes a node to a new string. */
char *od_json_to_string(JsonNode *node, gboolean pretty);
/* Parses text (with the size/nesting limits) or returns NULL with an OD_ERROR_INVALID error. */
JsonNode *od_json_parse(const char *text, gssize len, GError **error);
/* Splits a URL path into its non-empty segments ("/api/service/x/" -> {"api","service","x"}). */
char **od_path_split(const char *path);
/* Matches path segments against a route pattern such as "api/service/<*>" (written without the
 * angle brackets): each '*' matches one segment and
 * is captured into cap[] (at most max_cap captures). */
gboolean od_path_match(char **seg, const char *pattern, const char **cap, guint max_cap);
/* Replies 405 with an Allow header when the path matched routes of other methods (allowed is their
 * comma-separated list), else 404, both with the error object. */
void od_http_reply_no_route(SoupServerMessage *msg, const char *method, const char *path,
                            const char *allowed);
/* Counts finished requests by status code into counts (guint code -> guint count), and observes
 * each request's duration (from its first byte to the end of its response) into durations by
 * method and route class (od_http_set_route; route="none" when no route matched), for /metrics. */
void od_http_count_requests(SoupServer *server, GHashTable *counts, OdHistogram *durations);
/* The route pattern (static, e.g. "api/v1/services/<*>") that answers msg: its duration's label. */
void od_http_set_route(SoupServerMessage *msg, const char *pattern);
/* Replies to /metrics with the Prometheus text in out (taken) after appending the counter
 * <prefix>_http_requests_total{code="..."} from counts and the histogram durations (if any). */
void od_http_reply_metrics(SoupServerMessage *msg, GString *out, const char *prefix, GHashTable *counts,
                           OdHistogram *durations);

/* ---- TLS and the PKI (common/tls.c) ---- */

/* A new private key (ECDSA P-256, PKCS#8 PEM). */
char *od_tls_key_new(GError **error);
/* A self-signed CA certificate (PEM, 10 years) for key_pem, named cn. */
char *od_tls_ca_new(const char *key_pem, const char *cn, GError **error);
/* Loads <dir>/ca.crt and <dir>/ca.key, or creates both (the key 0600, dir 0700) when neither exists. */
gboolean od_tls_ensure_ca(const char *dir, const char *cn, char **cert_pem, char **key_pem, GError **error);
/* A certificate for key_pem named cn with the subject alternative names sans (IP addresses or DNS
 * names, at most 16), valid for days, for TLS servers and clients, signed by the CA. */
char *od_tls_issue(const char *ca_cert_pem, const char *ca_key_pem, const char *key_pem, const char *cn,
                   const char *const *sans, guint days, GError **error);
/* A certificate request for key_pem (name cn, the alternative names sans). */
char *od_tls_csr_new(const char *key_pem, const char *cn, const char *const *sans, GError **error);
/* Signs a request after checking its own signature: only its key and alternative names are taken;
 * the name is cn and nothing else it asks for (a CA flag) is granted. */
char *od_tls_sign_csr(const char *ca_cert_pem, const char *ca_key_pem, const char *csr_pem, const char *cn,
                      guint days, GError **error);
/* The SHA-256 fingerprint (64 lower-case hex digits) of the first certificate in cert_pem. */
char *od_tls_fingerprint(const char *cert_pem, GError **error);
char *od_tls_fingerprint_der(const guint8 *der, gsize len);
char *od_tls_certificate_fingerprint(GTlsCertificate *cert);
gboolean od_tls_dns_name_valid(const char *name);
/* The certificate in peer's chain whose fingerprint is fingerprint, when peer verifies against it;
 * NULL otherwise. Borrowed from peer. */
GTlsCertificate *od_tls_pinned_ca(GTlsCertificate *peer, const char *fingerprint);
/* Writes text to path 0600, atomically. */
gboolean od_tls_write_secret(const char *path, const char *text, GError **error);
GTlsCertificate *od_tls_certificate_from_pem(const char *pem, GError **error);
/* Makes a database that trusts nothing the TLS backend's default, once: the system's trust store
 * is never loaded (od_tls_session_new does it). */
void od_tls_no_system_trust(void);
/* A session that trusts no CA by itself: each message says what it trusts (od_tls_pin_message). */
SoupSession *od_tls_session_new(void);
/* msg accepts a server certificate only when it chains to ca (or, when ca is NULL, to the certificate
 * with this fingerprint in the server's own chain: a join token's first contact) and names the URL's
 * host. */
void od_tls_pin_message(SoupMessage *msg, GTlsCertificate *ca, const char *fingerprint);
/* After a fingerprint-pinned exchange: the CA found (PEM), or NULL. */
char *od_tls_message_found_ca(SoupMessage *msg);

/* ---- SQLite ---- */

/* Opens (creating) a database in WAL mode with synchronous=FULL, a busy timeout, foreign keys on
 * and a small page cache. */
sqlite3 *od_db_open(const char *path, GError **error);
/* Creates dir (and its parents) and makes it 0700 even when it existed: state is private. */
gboolean od_state_dir_prepare(const char *dir, GError **error);
gboolean od_db_exec(sqlite3 *db, const char *sql, GError **error);
/* The integer a "SELECT COUNT(*) ..." without parameters answers; 0 on any failure. */
gint64 od_db_count(sqlite3 *db, const char *sql);
sqlite3_stmt *od_db_prepare(sqlite3 *db, const char *sql, GError **error);
/* A cache of prepared statements: SQL text (a literal, by address) -> statement, finalized with the
 * table (free it before closing the database). */
GHashTable *od_db_stmt_cache_new(void);
/* The prepared statement of sql from cache (prepared on its first use), reset and unbound. A caller
 * steps it to its end or resets it before anything else uses the same literal, so that no statement
 * keeps a read open or is reset under another's feet. */
sqlite3_stmt *od_db_stmt(sqlite3 *db, GHashTable *cache, const char *sql, GError **error);
/* Binds the text values (the list ends with NULL) to ?1..?n and steps once; TRUE for
 * SQLITE_ROW/SQLITE_DONE, an error naming sqlite's message otherwise. */
gboolean od_db_run(sqlite3 *db, GError **error, const char *sql, ...) G_GNUC_NULL_TERMINATED;
/* Returns column 0 of the first row of sql bound with the text args, or NULL when there is none. */
char *od_db_query_text(sqlite3 *db, const char *sql, ...) G_GNUC_NULL_TERMINATED;

G_DEFINE_AUTOPTR_CLEANUP_FUNC(sqlite3_stmt, sqlite3_finalize)

/* Frees a string liboakuk handed out. liboakuk allocates with GLib (oakuk_free is g_free), and
 * lib/liboakuk.sym does not export oakuk_free yet; switch to it once it does. */
#define od_oakuk_free g_free

G_END_DECLS

#endif

/* JSON over HTTP on a SoupServer: body limits, parsing, replies and the error object. */
#include "daemon-common.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>

/* Every phase of a request has a deadline: a client that sends nothing, sends its headers or body
 * a byte at a time, or does not read its response loses the connection instead of holding it. */
#define HEADER_TIMEOUT_S 10
#define BODY_TIMEOUT_S 30
#define RESPONSE_TIMEOUT_S 30
/* Room for bursts of connects while the loop is busy (GSocketListener's default is 10). */
#define LISTEN_BACKLOG 1024
/* Connections beyond this are closed as they arrive. */
#define MAX_CONNECTIONS 512

/* The connections this process serves, by peer address ("ip:port", unique while open): a message
 * finds its connection through its remote address (libsoup does not expose the socket of a
 * connection handed to soup_server_accept_iostream). */
typedef struct {
  GSocketConnection *conn; /* not owned: the entry goes when the connection does */
  char *peer;
  guint source;
  const char *phase;
} Conn;

static GHashTable *conns; /* peer -> Conn */

static char *peer_key(GSocketAddress *addr) {
  if (addr == NULL || !G_IS_INET_SOCKET_ADDRESS(addr))
    return NULL;
  g_autofree char *ip =
      g_inet_address_to_string(g_inet_socket_address_get_address(G_INET_SOCKET_ADDRESS(addr)));
  return g_strdup_printf("%s:%u", ip, g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(addr)));
}

static void conn_free(gpointer data) {
  Conn *c = data;
  if (c->source)
    g_source_remove(c->source);
  g_free(c->peer);
  g_free(c);
}

static gboolean conn_deadline_passed(gpointer data) {
  Conn *c = data;
  c->source = 0;
  od_log(G_LOG_LEVEL_INFO, "http", "msg", "connection closed: deadline passed", "phase", c->phase, "peer",
         c->peer, NULL);
  /* Shutting the socket down makes libsoup's own read or write fail, and it cleans up. */
  g_socket_shutdown(g_socket_connection_get_socket(c->conn), TRUE, TRUE, NULL);
  return G_SOURCE_REMOVE;
}

static void conn_arm(Conn *c, const char *phase, guint seconds) {
  if (c == NULL)
    return;
  if (c->source)
    g_source_remove(c->source);
  c->phase = phase;
  c->source = seconds ? g_timeout_add_seconds(seconds, conn_deadline_passed, c) : 0;
}

static void deadline_arm(SoupServerMessage *msg, const char *phase, guint seconds) {
  g_autofree char *key = peer_key(soup_server_message_get_remote_address(msg));
  conn_arm(key && conns ? g_hash_table_lookup(conns, key) : NULL, phase, seconds);
}

static void close_done(GObject *source, GAsyncResult *res, gpointer data) {
  g_io_stream_close_finish(G_IO_STREAM(source), res, NULL);
}

/* Answers status with the error object and closes the connection at once, whatever libsoup would
 * still read of the request (a refused body is never read). */
static void refuse_and_close(SoupServerMessage *msg, guint status, const char *code, const char *fmt, ...)
    G_GNUC_PRINTF(4, 5);

static void refuse_and_close(SoupServerMessage *msg, guint status, const char *code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *message = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "error");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "code");
  json_builder_add_string_value(b, code);
  json_builder_set_member_name(b, "message");
  json_builder_add_string_value(b, message);
  json_builder_set_member_name(b, "path");
  json_builder_add_string_value(b, "");
  json_builder_end_object(b);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autofree char *body = od_json_to_string(root, FALSE);
  g_autofree char *reply = g_strdup_printf("HTTP/1.1 %u %s\r\nContent-Type: application/json\r\n"
                                           "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                                           status, soup_status_get_phrase(status), strlen(body), body);
  deadline_arm(msg, "refused", 0);
  g_autoptr(GIOStream) conn = soup_server_message_steal_connection(msg);
  if (conn == NULL)
    return;
  /* Best effort: a reply that does not fit the socket buffer at once is not waited for. */
  GOutputStream *out = g_io_stream_get_output_stream(conn);
  if (G_IS_POLLABLE_OUTPUT_STREAM(out))
    g_pollable_output_stream_write_nonblocking(G_POLLABLE_OUTPUT_STREAM(out), reply, strlen(reply), NULL,
                                               NULL);
  g_io_stream_close_async(conn, G_PRIORITY_DEFAULT, NULL, close_done, NULL);
}

static gboolean valid_content_length(const char *v) {
  size_t n = strspn(v, "0123456789");
  return n > 0 && n <= 18 && v[n] == '\0';
}

/* The path's segments must decode to names: "%00" would end a C string early and "%2F" would
 * split a segment. */
static const char *bad_segment(const char *path, char **decoded_out) {
  g_auto(GStrv) seg = g_strsplit(path ? path : "", "/", 0);
  for (char **p = seg; *p; p++) {
    g_autofree char *d = g_uri_unescape_string(*p, "/");
    if (d == NULL) {
      *decoded_out = g_strdup(*p);
      return *decoded_out;
    }
  }
  return NULL;
}

static void got_chunk(SoupServerMessage *msg, GBytes *chunk, gpointer data) {
  gsize *seen = g_object_get_data(G_OBJECT(msg), "od-body-bytes");
  *seen += g_bytes_get_size(chunk);
  if (*seen > OD_HTTP_MAX_BODY)
    refuse_and_close(msg, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, "too_large",
                     "request body is over %d bytes; the limit is %d bytes", OD_HTTP_MAX_BODY,
                     OD_HTTP_MAX_BODY);
}

static void got_headers(SoupServerMessage *msg, gpointer data) {
  /* libsoup refused the request line or headers itself; answered here, with the error object,
   * before the message (without a URI) reaches any handler. */
  guint refused = soup_server_message_get_status(msg);
  if (refused != 0 || soup_server_message_get_uri(msg) == NULL) {
    refuse_and_close(msg, refused ? refused : SOUP_STATUS_BAD_REQUEST, "bad_request",
                     "malformed request line or headers");
    return;
  }
  SoupMessageHeaders *h = soup_server_message_get_request_headers(msg);
  const char *cl = soup_message_headers_get_list(h, "Content-Length");
  SoupEncoding enc = soup_message_headers_get_encoding(h);
  g_autofree char *bad = NULL;
  if (cl != NULL && !valid_content_length(cl)) {
    refuse_and_close(msg, SOUP_STATUS_BAD_REQUEST, "bad_request",
                     "Content-Length '%.40s' is not one byte count", cl);
  } else if (cl != NULL && soup_message_headers_get_list(h, "Transfer-Encoding") != NULL) {
    refuse_and_close(msg, SOUP_STATUS_BAD_REQUEST, "bad_request",
                     "a request cannot have both Content-Length and Transfer-Encoding");
  } else if (cl != NULL && g_ascii_strtoll(cl, NULL, 10) > OD_HTTP_MAX_BODY) {
    refuse_and_close(msg, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, "too_large",
                     "request body is %s bytes; the limit is %d bytes", cl, OD_HTTP_MAX_BODY);
  } else if (bad_segment(g_uri_get_path(soup_server_message_get_uri(msg)), &bad) != NULL) {
    refuse_and_close(msg, SOUP_STATUS_BAD_REQUEST, "bad_path",
                     "path segment '%.80s' does not decode to a name (no %%00 or %%2F)", bad);
  } else {
    deadline_arm(msg, "body", enc == SOUP_ENCODING_NONE ? 0 : BODY_TIMEOUT_S);
    if (enc == SOUP_ENCODING_CHUNKED || enc == SOUP_ENCODING_EOF) {
      g_object_set_data_full(G_OBJECT(msg), "od-body-bytes", g_new0(gsize, 1), g_free);
      g_signal_connect(msg, "got-chunk", G_CALLBACK(got_chunk), NULL);
    }
  }
}

static void got_body(SoupServerMessage *msg, gpointer data) {
  deadline_arm(msg, "handler", 0);
}

/* A response has RESPONSE_TIMEOUT_S from its headers and again from every piece of body written:
 * a long one that goes on (an event stream) is not cut, one the client stops reading is. */
static void wrote_headers(SoupServerMessage *msg, gpointer data) {
  deadline_arm(msg, "response", RESPONSE_TIMEOUT_S);
}

static void wrote_body_data(SoupServerMessage *msg, guint size, gpointer data) {
  deadline_arm(msg, "response", RESPONSE_TIMEOUT_S);
}

/* Until the connection closes after the response. */
static void finished(SoupServerMessage *msg, gpointer data) {
  deadline_arm(msg, "headers", HEADER_TIMEOUT_S);
}

/* Every response says "Connection: close", and the connection is closed after it. libsoup 3.2 keeps
 * a connection open after a response only while the server has a listener of its own
 * (request_finished in soup-server.c tests priv->listeners), and connections accepted here are
 * handed over with soup_server_accept_iostream: it closed them after every response without saying
 * so, and an HTTP/1.1 client that reused one (requests.Session, curl) had its next request cut off
 * whenever the close had not reached it yet, a request lost before any handler saw it. Keeping
 * connections alive with libsoup 3.2 is not an option either: a kept-alive connection that ends
 * while idle (the client closes it, or the header deadline does) is never released, socket
 * included (its next message has no completion callback until a byte arrives; fixed in 3.3).
 * The cost is a connection, and with TLS a handshake, per request. */
static void request_started(SoupServer *server, SoupServerMessage *msg, gpointer data) {
  soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Connection", "close");
  deadline_arm(msg, "headers", HEADER_TIMEOUT_S);
  g_signal_connect(msg, "got-headers", G_CALLBACK(got_headers), NULL);
  g_signal_connect(msg, "got-body", G_CALLBACK(got_body), NULL);
  g_signal_connect(msg, "wrote-headers", G_CALLBACK(wrote_headers), NULL);
  g_signal_connect(msg, "wrote-body-data", G_CALLBACK(wrote_body_data), NULL);
  g_signal_connect(msg, "finished", G_CALLBACK(finished), NULL);
  g_signal_connect(msg, "disconnected", G_CALLBACK(finished), NULL);
}

static void connection_gone(gpointer data, GObject *where) {
  Conn *c = data;
  if (g_hash_table_lookup(conns, c->peer) == c)
    g_hash_table_remove(conns, c->peer);
  conn_free(c);
}

static void handshake_done(GObject *source, GAsyncResult *res, gpointer data) {
  SoupServer *server = data;
  GTlsConnection *tls = G_TLS_CONNECTION(source);
  GSocketConnection *base = NULL;
  g_object_get(tls, "base-io-stream", &base, NULL);
  g_autoptr(GSocketConnection) conn = base;
  g_autoptr(GError) error = NULL;
  g_autoptr(GSocketAddress) local = g_socket_connection_get_local_address(conn, NULL);
  g_autoptr(GSocketAddress) remote = g_socket_connection_get_remote_address(conn, NULL);
  if (!g_tls_connection_handshake_finish(tls, res, &error)) {
    g_autofree char *peer = peer_key(remote);
    od_log(G_LOG_LEVEL_INFO, "http", "msg", "TLS handshake failed", "peer", peer ? peer : "?", "reason",
           error->message, NULL);
  } else if (local && remote &&
             !soup_server_accept_iostream(server, G_IO_STREAM(tls), local, remote, &error)) {
    od_log(G_LOG_LEVEL_WARNING, "http", "msg", error->message, NULL);
  }
  g_object_unref(tls);
  g_object_unref(server);
}

static gboolean on_incoming(GSocketService *service, GSocketConnection *conn, GObject *source,
                            gpointer data) {
  SoupServer *server = data;
  g_autoptr(GSocketAddress) local = g_socket_connection_get_local_address(conn, NULL);
  g_autoptr(GSocketAddress) remote = g_socket_connection_get_remote_address(conn, NULL);
  g_autofree char *peer = peer_key(remote);
  if (conns == NULL)
    conns = g_hash_table_new(g_str_hash, g_str_equal);
  if (g_hash_table_size(conns) >= MAX_CONNECTIONS || local == NULL || peer == NULL) {
    od_log(G_LOG_LEVEL_WARNING, "http", "msg",
           peer ? "connection refused: too many open connections" : "connection without addresses", NULL);
    g_io_stream_close(G_IO_STREAM(conn), NULL, NULL);
    return TRUE;
  }
  Conn *c = g_new0(Conn, 1);
  c->conn = conn;
  c->peer = g_steal_pointer(&peer);
  g_hash_table_replace(conns, c->peer, c);
  g_object_weak_ref(G_OBJECT(conn), connection_gone, c);
  /* Until its first request's headers are in (the TLS handshake included). */
  conn_arm(c, "headers", HEADER_TIMEOUT_S);
  /* libsoup writes headers and body apart (over TLS, two records): with Nagle's algorithm the second
   * write could wait for the client's delayed ACK, 40 ms. */
  g_socket_set_option(g_socket_connection_get_socket(conn), IPPROTO_TCP, TCP_NODELAY, 1, NULL);
  g_autoptr(GError) error = NULL;
  GTlsCertificate *cert = g_object_get_data(G_OBJECT(server), "od-tls-certificate");
  if (cert == NULL) {
    if (!soup_server_accept_iostream(server, G_IO_STREAM(conn), local, remote, &error))
      od_log(G_LOG_LEVEL_WARNING, "http", "msg", error->message, NULL);
    return TRUE;
  }
  /* No database: clients present no certificates, and g_tls_server_connection_new would load the
   * system's trust store for every connection, 8 ms of the main loop each (glib-networking 2.74). */
  GIOStream *tls =
      g_initable_new(g_tls_backend_get_server_connection_type(g_tls_backend_get_default()), NULL, &error,
                     "base-io-stream", conn, "certificate", cert, "database", NULL, NULL);
  if (tls == NULL) {
    od_log(G_LOG_LEVEL_WARNING, "http", "msg", "TLS unavailable", "reason", error->message, NULL);
    g_io_stream_close(G_IO_STREAM(conn), NULL, NULL);
    return TRUE;
  }
  g_tls_connection_handshake_async(G_TLS_CONNECTION(tls), G_PRIORITY_DEFAULT, NULL, handshake_done,
                                   g_object_ref(server));
  return TRUE;
}

static void service_free(gpointer data) {
  g_socket_service_stop(data);
  g_socket_listener_close(data);
  g_object_unref(data);
}

/* Connections are accepted here and handed to the server, not with soup_server_listen(): the
 * listener of libsoup 3.2 (Debian 12) loses every connection it accepts, 340 bytes each, and a
 * kept-alive one that the client closes while idle whole, 1.9 kB (fixed upstream in 3.3, commit
 * d20c6601). A client that does not reuse connections, such as Python requests without a Session,
 * grew oakuk-root by 1 MB per 500 requests; accepted this way nothing is lost. */
void od_http_server_set_tls(SoupServer *server, GTlsCertificate *cert) {
  g_object_set_data_full(G_OBJECT(server), "od-tls-certificate", cert ? g_object_ref(cert) : NULL,
                         g_object_unref);
}

gboolean od_http_server_listen(SoupServer *server, const char *listen, GError **error) {
  g_autofree char *addr = NULL;
  guint16 port = 0;
  if (!od_parse_listen(listen, &addr, &port, error))
    return FALSE;
  g_signal_connect(server, "request-started", G_CALLBACK(request_started), NULL);
  g_autoptr(GSocketAddress) sa = g_inet_socket_address_new_from_string(addr, port);
  GSocketService *service = g_socket_service_new();
  g_socket_listener_set_backlog(G_SOCKET_LISTENER(service), LISTEN_BACKLOG);
  g_autoptr(GError) local = NULL;
  if (sa == NULL || !g_socket_listener_add_address(G_SOCKET_LISTENER(service), sa, G_SOCKET_TYPE_STREAM,
                                                   G_SOCKET_PROTOCOL_TCP, NULL, NULL, &local)) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "listen %s: %s", listen,
                local ? local->message : "bad address");
    g_object_unref(service);
    return FALSE;
  }
  g_signal_connect(service, "incoming", G_CALLBACK(on_incoming), server);
  /* The service lives as long as the server. */
  g_object_set_data_full(G_OBJECT(server), "od-http-service", service, service_free);
  g_socket_service_start(service);
  return TRUE;
}

char *od_json_to_string(JsonNode *node, gboolean pretty) {
  g_autoptr(JsonGenerator) gen = json_generator_new();
  json_generator_set_root(gen, node);
  json_generator_set_pretty(gen, pretty);
  gsize len = 0;
  g_autofree char *raw = json_generator_to_data(gen, &len);
  char *text = oakuk_json_repair(raw, len);
  /* oakuk_free and g_free are the same allocator; hand out a GLib string. */
  return text;
}

static void reply_text(SoupServerMessage *msg, guint status, char *body) {
  soup_server_message_set_status(msg, status, NULL);
  soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_TAKE, body, strlen(body));
}

void od_http_reply_json(SoupServerMessage *msg, guint status, JsonNode *node) {
  reply_text(msg, status, od_json_to_string(node, FALSE));
}

void od_http_reply_json_string(SoupServerMessage *msg, guint status, JsonNode *node) {
  g_autofree char *inner = od_json_to_string(node, FALSE);
  g_autoptr(JsonNode) str = json_node_init_string(json_node_alloc(), inner);
  od_http_reply_json(msg, status, str);
}

void od_http_reply_error(SoupServerMessage *msg, guint status, const char *code, const char *path,
                         const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *message = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "error");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "code");
  json_builder_add_string_value(b, code);
  json_builder_set_member_name(b, "message");
  json_builder_add_string_value(b, message);
  json_builder_set_member_name(b, "path");
  json_builder_add_string_value(b, path ? path : "");
  json_builder_end_object(b);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  od_http_reply_json(msg, status, root);
}

JsonNode *od_json_parse(const char *text, gssize len, GError **error) {
  gsize n = len < 0 ? strlen(text) : (gsize)len;
  if (n > OD_HTTP_MAX_BODY) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "JSON document is %zu bytes; the limit is %d bytes",
                (size_t)n, OD_HTTP_MAX_BODY);
    return NULL;
  }
  oakuk_error *check = NULL;
  if (oakuk_json_check(text, n, OAKUK_JSON_DEPTH_DEFAULT, &check) != OAKUK_OK) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "malformed JSON: %s", oakuk_error_message(check));
    oakuk_error_free(check);
    return NULL;
  }
  g_autoptr(JsonParser) parser = json_parser_new_immutable();
  g_autoptr(GError) local = NULL;
  if (!json_parser_load_from_data(parser, text, (gssize)n, &local)) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "malformed JSON: %s", local->message);
    return NULL;
  }
  JsonNode *root = json_parser_get_root(parser);
  if (root == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "malformed JSON: empty document");
    return NULL;
  }
  return json_node_copy(root);
}

JsonNode *od_http_read_json(SoupServerMessage *msg) {
  SoupMessageBody *body = soup_server_message_get_request_body(msg);
  g_autoptr(GBytes) bytes = soup_message_body_flatten(body);
  gsize len = 0;
  const char *data = g_bytes_get_data(bytes, &len);
  if (len > OD_HTTP_MAX_BODY) {
    od_http_reply_error(msg, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, "too_large", "",
                        "request body is %zu bytes; the limit is %d bytes", (size_t)len, OD_HTTP_MAX_BODY);
    return NULL;
  }
  if (len == 0) {
    od_http_reply_error(msg, SOUP_STATUS_BAD_REQUEST, "invalid_json", "",
                        "request body is empty; a JSON document is required");
    return NULL;
  }
  g_autoptr(GError) error = NULL;
  JsonNode *node = od_json_parse(data, (gssize)len, &error);
  if (node == NULL) {
    od_http_reply_error(msg, SOUP_STATUS_BAD_REQUEST, "invalid_json", "", "request body: %s", error->message);
    return NULL;
  }
  return node;
}

char *od_http_bearer(SoupServerMessage *msg) {
  const char *h = soup_message_headers_get_one(soup_server_message_get_request_headers(msg), "Authorization");
  if (h == NULL || g_ascii_strncasecmp(h, "Bearer ", 7) != 0)
    return NULL;
  const char *t = h + 7;
  while (*t == ' ')
    t++;
  return *t ? g_strstrip(g_strdup(t)) : NULL;
}

gboolean od_path_match(char **seg, const char *pattern, const char **cap, guint max_cap) {
  g_auto(GStrv) pat = g_strsplit(pattern, "/", 0);
  guint c = 0;
  for (guint i = 0;; i++) {
    if (pat[i] == NULL || seg[i] == NULL)
      return pat[i] == NULL && seg[i] == NULL;
    if (strcmp(pat[i], "*") == 0) {
      if (c < max_cap)
        cap[c++] = seg[i];
    } else if (strcmp(pat[i], seg[i]) != 0) {
      return FALSE;
    }
  }
}

void od_http_reply_no_route(SoupServerMessage *msg, const char *method, const char *path,
                            const char *allowed) {
  if (allowed != NULL && *allowed != '\0') {
    soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Allow", allowed);
    od_http_reply_error(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method_not_allowed", path,
                        "%s is not allowed on %s (allowed: %s)", method, path, allowed);
    return;
  }
  od_http_reply_error(msg, SOUP_STATUS_NOT_FOUND, "not_found", path, "no endpoint %s %s", method, path);
}

static void note_start(SoupServer *server, SoupServerMessage *msg, gpointer data) {
  gint64 *start = g_new(gint64, 1);
  *start = g_get_monotonic_time();
  g_object_set_data_full(G_OBJECT(msg), "od-started-us", start, g_free);
}

void od_http_set_route(SoupServerMessage *msg, const char *pattern) {
  g_object_set_data(G_OBJECT(msg), "od-route", (gpointer)pattern);
}

/* The label set of a request: its method and route pattern when a route answered it; a request no
 * route matched is method="", route="none", so that no client can make up series. */
static char *duration_labels(SoupServerMessage *msg) {
  const char *route = g_object_get_data(G_OBJECT(msg), "od-route");
  if (route == NULL)
    return g_strdup("method=\"\",route=\"none\"");
  g_autofree char *method = od_metrics_label_escape(soup_server_message_get_method(msg));
  g_autofree char *pattern = od_metrics_label_escape(route);
  return g_strdup_printf("method=\"%s\",route=\"/%s\"", method, pattern);
}

typedef struct {
  GHashTable *counts;
  OdHistogram *durations;
} Counting;

static void count_request(SoupServer *server, SoupServerMessage *msg, gpointer data) {
  Counting *c = data;
  gpointer code = GUINT_TO_POINTER(soup_server_message_get_status(msg));
  g_hash_table_replace(c->counts, code,
                       GUINT_TO_POINTER(GPOINTER_TO_UINT(g_hash_table_lookup(c->counts, code)) + 1));
  gint64 *start = g_object_get_data(G_OBJECT(msg), "od-started-us");
  if (c->durations == NULL || start == NULL)
    return;
  g_autofree char *labels = duration_labels(msg);
  od_histogram_observe(c->durations, labels, (double)(g_get_monotonic_time() - *start) / G_USEC_PER_SEC);
}

void od_http_count_requests(SoupServer *server, GHashTable *counts, OdHistogram *durations) {
  Counting *c = g_new0(Counting, 1);
  c->counts = counts;
  c->durations = durations;
  g_object_set_data_full(G_OBJECT(server), "od-counting", c, g_free);
  g_signal_connect(server, "request-started", G_CALLBACK(note_start), NULL);
  g_signal_connect(server, "request-finished", G_CALLBACK(count_request), c);
}

static gint compare_codes(gconstpointer a, gconstpointer b) {
  return (gint)GPOINTER_TO_UINT(a) - (gint)GPOINTER_TO_UINT(b);
}

void od_http_reply_metrics(SoupServerMessage *msg, GString *out, const char *prefix, GHashTable *counts,
                           OdHistogram *durations) {
  g_autofree char *name = g_strdup_printf("%s_http_requests_total", prefix);
  od_metrics_header(out, name, "counter", "HTTP requests answered, by status code");
  g_autoptr(GList) codes = g_list_sort(g_hash_table_get_keys(counts), compare_codes);
  for (GList *l = codes; l != NULL; l = l->next)
    g_string_append_printf(out, "%s{code=\"%u\"} %u\n", name, GPOINTER_TO_UINT(l->data),
                           GPOINTER_TO_UINT(g_hash_table_lookup(counts, l->data)));
  if (durations != NULL)
    od_histogram_write(durations, out);
  soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
  gsize len = out->len;
  soup_server_message_set_response(msg, "text/plain; version=0.0.4", SOUP_MEMORY_TAKE,
                                   g_string_free(out, FALSE), len);
}

char **od_path_split(const char *path) {
  g_auto(GStrv) raw = g_strsplit(path ? path : "", "/", 0);
  GPtrArray *out = g_ptr_array_new();
  for (char **p = raw; *p; p++) {
    if (**p == '\0')
      continue;
    /* The server refuses such paths before any handler runs (bad_segment); kept raw here so that
     * a segment is never lost. */
    char *d = g_uri_unescape_string(*p, "/");
    g_ptr_array_add(out, d ? d : g_strdup(*p));
  }
  g_ptr_array_add(out, NULL);
  return (char **)g_ptr_array_free(out, FALSE);
}

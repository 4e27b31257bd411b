/* JSON over HTTP on a SoupServer: body limits, parsing, replies and the error object. */
#include "daemon-common.h"

#include <string.h>

static void got_headers(SoupServerMessage *msg, gpointer data) {
  goffset len = soup_message_headers_get_content_length(soup_server_message_get_request_headers(msg));
  if (len > OD_HTTP_MAX_BODY) {
    /* A status set here makes SoupServer skip the body and every handler. */
    od_http_reply_error(msg, SOUP_STATUS_REQUEST_ENTITY_TOO_LARGE, "too_large", "",
                        "request body is %" G_GOFFSET_FORMAT " bytes; the limit is %d bytes", len, OD_HTTP_MAX_BODY);
    soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Connection", "close");
  }
}

static void request_started(SoupServer *server, SoupServerMessage *msg, gpointer data) {
  g_signal_connect(msg, "got-headers", G_CALLBACK(got_headers), NULL);
}

static gboolean on_incoming(GSocketService *service, GSocketConnection *conn, GObject *source, gpointer data) {
  SoupServer *server = data;
  g_autoptr(GSocketAddress) local = g_socket_connection_get_local_address(conn, NULL);
  g_autoptr(GSocketAddress) remote = g_socket_connection_get_remote_address(conn, NULL);
  g_autoptr(GError) error = NULL;
  if (local == NULL || remote == NULL ||
      !soup_server_accept_iostream(server, G_IO_STREAM(conn), local, remote, &error))
    od_log(G_LOG_LEVEL_WARNING, "http", "msg", error ? error->message : "connection without addresses", NULL);
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
gboolean od_http_server_listen(SoupServer *server, const char *listen, GError **error) {
  g_autofree char *addr = NULL;
  guint16 port = 0;
  if (!od_parse_listen(listen, &addr, &port, error))
    return FALSE;
  g_signal_connect(server, "request-started", G_CALLBACK(request_started), NULL);
  g_autoptr(GSocketAddress) sa = g_inet_socket_address_new_from_string(addr, port);
  GSocketService *service = g_socket_service_new();
  g_autoptr(GError) local = NULL;
  if (sa == NULL || !g_socket_listener_add_address(G_SOCKET_LISTENER(service), sa, G_SOCKET_TYPE_STREAM,
                                                   G_SOCKET_PROTOCOL_TCP, NULL, NULL, &local)) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "listen %s: %s", listen, local ? local->message : "bad address");
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
  return json_generator_to_data(gen, NULL);
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

/* Nesting is checked before json-glib's recursive parser sees the text. */
static gboolean precheck(const char *text, gsize len, GError **error) {
  gsize depth = 0;
  gboolean in_string = FALSE;
  for (gsize i = 0; i < len; i++) {
    char c = text[i];
    if (in_string) {
      if (c == '\\')
        i++;
      else if (c == '"')
        in_string = FALSE;
    } else if (c == '"') {
      in_string = TRUE;
    } else if (c == '[' || c == '{') {
      if (++depth > 64) {
        g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "JSON nests deeper than 64 levels (at byte %zu)", (size_t)i);
        return FALSE;
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      depth--;
    }
  }
  return TRUE;
}

JsonNode *od_json_parse(const char *text, gssize len, GError **error) {
  gsize n = len < 0 ? strlen(text) : (gsize)len;
  if (n > OD_HTTP_MAX_BODY) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "JSON document is %zu bytes; the limit is %d bytes", (size_t)n,
                OD_HTTP_MAX_BODY);
    return NULL;
  }
  if (!precheck(text, n, error))
    return NULL;
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
    od_http_reply_error(msg, SOUP_STATUS_BAD_REQUEST, "invalid_json", "", "request body is empty; a JSON document is required");
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

void od_http_reply_no_route(SoupServerMessage *msg, const char *method, const char *path, const char *allowed) {
  if (allowed != NULL && *allowed != '\0') {
    soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Allow", allowed);
    od_http_reply_error(msg, SOUP_STATUS_METHOD_NOT_ALLOWED, "method_not_allowed", path,
                        "%s is not allowed on %s (allowed: %s)", method, path, allowed);
    return;
  }
  od_http_reply_error(msg, SOUP_STATUS_NOT_FOUND, "not_found", path, "no endpoint %s %s", method, path);
}

static void count_request(SoupServer *server, SoupServerMessage *msg, gpointer data) {
  GHashTable *counts = data;
  gpointer code = GUINT_TO_POINTER(soup_server_message_get_status(msg));
  g_hash_table_replace(counts, code, GUINT_TO_POINTER(GPOINTER_TO_UINT(g_hash_table_lookup(counts, code)) + 1));
}

void od_http_count_requests(SoupServer *server, GHashTable *counts) {
  g_signal_connect(server, "request-finished", G_CALLBACK(count_request), counts);
}

static gint compare_codes(gconstpointer a, gconstpointer b) {
  return (gint)GPOINTER_TO_UINT(a) - (gint)GPOINTER_TO_UINT(b);
}

void od_http_reply_metrics(SoupServerMessage *msg, GString *out, const char *prefix, GHashTable *counts) {
  g_string_append_printf(out, "# TYPE %s_http_requests_total counter\n", prefix);
  g_autoptr(GList) codes = g_list_sort(g_hash_table_get_keys(counts), compare_codes);
  for (GList *l = codes; l != NULL; l = l->next)
    g_string_append_printf(out, "%s_http_requests_total{code=\"%u\"} %u\n", prefix, GPOINTER_TO_UINT(l->data),
                           GPOINTER_TO_UINT(g_hash_table_lookup(counts, l->data)));
  soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
  gsize len = out->len;
  soup_server_message_set_response(msg, "text/plain; version=0.0.4", SOUP_MEMORY_TAKE, g_string_free(out, FALSE),
                                   len);
}

char **od_path_split(const char *path) {
  g_auto(GStrv) raw = g_strsplit(path ? path : "", "/", 0);
  GPtrArray *out = g_ptr_array_new();
  for (char **p = raw; *p; p++)
    if (**p != '\0')
      g_ptr_array_add(out, g_uri_unescape_string(*p, NULL));
  g_ptr_array_add(out, NULL);
  return (char **)g_ptr_array_free(out, FALSE);
}

#include "test-http-server.h"

#include <libsoup/soup.h>
#include <string.h>

struct OakukTestHttpServer {
  char *root;
  char *url;
  GMainContext *context;
  GMainLoop *loop;
  GThread *thread;
  SoupServer *server;
  GMutex lock;
  GCond ready;
  gboolean started;
  GHashTable *counts; /* path → GUINT_TO_POINTER(count) */
  guint total;
  guint slow_chunk;
  guint slow_delay_ms;
  GPtrArray *writers; /* GThread* writing raw responses on stolen connections */
};

typedef struct {
  GIOStream *io;
  GBytes *body;
  gsize send;  /* bytes of body actually sent */
  guint chunk; /* 0: all at once */
  guint delay_ms;
} RawReply;

static gpointer raw_writer(gpointer data) {
  RawReply *r = data;
  GOutputStream *out = g_io_stream_get_output_stream(r->io);
  gsize len;
  const guint8 *body = g_bytes_get_data(r->body, &len);
  g_autofree char *head =
      g_strdup_printf("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: "
                      "%zu\r\nConnection: close\r\n\r\n",
                      len);
  gboolean ok = g_output_stream_write_all(out, head, strlen(head), NULL, NULL, NULL);
  for (gsize off = 0; ok && off < r->send;) {
    gsize n = r->chunk ? MIN(r->chunk, r->send - off) : r->send - off;
    ok = g_output_stream_write_all(out, body + off, n, NULL, NULL, NULL) &&
         g_output_stream_flush(out, NULL, NULL);
    off += n;
    if (r->delay_ms && off < r->send)
      g_usleep(r->delay_ms * 1000);
  }
  g_io_stream_close(r->io, NULL, NULL);
  g_object_unref(r->io);
  g_bytes_unref(r->body);
  g_free(r);
  return NULL;
}

static GBytes *load(OakukTestHttpServer *s, const char *rel) {
  if (*rel == '\0' || strstr(rel, "..") != NULL)
    return NULL;
  g_autofree char *path = g_build_filename(s->root, rel, NULL);
  char *data;
  gsize len;
  if (!g_file_test(path, G_FILE_TEST_IS_REGULAR) || !g_file_get_contents(path, &data, &len, NULL))
    return NULL;
  return g_bytes_new_take(data, len);
}

static void redirect(SoupServerMessage *msg, const char *location) {
  soup_server_message_set_status(msg, SOUP_STATUS_FOUND, NULL);
  soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Location", location);
}

static void serve_raw(OakukTestHttpServer *s, SoupServerMessage *msg, GBytes *body, gboolean truncated) {
  RawReply *r = g_new0(RawReply, 1);
  r->body = body;
  r->send = truncated ? g_bytes_get_size(body) / 2 : g_bytes_get_size(body);
  g_mutex_lock(&s->lock);
  r->chunk = truncated ? 0 : s->slow_chunk;
  r->delay_ms = truncated ? 0 : s->slow_delay_ms;
  g_mutex_unlock(&s->lock);
  r->io = soup_server_message_steal_connection(msg);
  GThread *t = g_thread_new("test-http-raw", raw_writer, r);
  g_mutex_lock(&s->lock);
  g_ptr_array_add(s->writers, t);
  g_mutex_unlock(&s->lock);
}

static void handler(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                    gpointer data) {
  OakukTestHttpServer *s = data;
  g_mutex_lock(&s->lock);
  guint n = GPOINTER_TO_UINT(g_hash_table_lookup(s->counts, path));
  g_hash_table_insert(s->counts, g_strdup(path), GUINT_TO_POINTER(n + 1));
  s->total++;
  g_mutex_unlock(&s->lock);

  if (g_str_has_prefix(path, "/status/")) {
    soup_server_message_set_status(msg, (guint)g_ascii_strtoull(path + 8, NULL, 10), NULL);
    return;
  }
  if (g_str_has_prefix(path, "/redirect-loop/")) {
    g_autofree char *next =
        g_strdup_printf("/redirect-loop/%" G_GUINT64_FORMAT, g_ascii_strtoull(path + 15, NULL, 10) + 1);
    redirect(msg, next);
    return;
  }
  if (g_str_has_prefix(path, "/redirect/")) {
    char *end = NULL;
    guint64 k = g_ascii_strtoull(path + 10, &end, 10);
    if (end && *end == '/' && k > 0) {
      g_autofree char *next = g_strdup_printf("/redirect/%" G_GUINT64_FORMAT "%s", k - 1, end);
      redirect(msg, next);
      return;
    }
    path = end && *end == '/' ? end : path;
  }
  gboolean truncated = g_str_has_prefix(path, "/truncated/");
  gboolean slow = g_str_has_prefix(path, "/slow/");
  const char *rel = truncated ? path + 11 : slow ? path + 6 : path + 1;
  GBytes *body = load(s, rel);
  if (body == NULL) {
    soup_server_message_set_status(msg, SOUP_STATUS_NOT_FOUND, NULL);
    return;
  }
  if (truncated || slow) {
    serve_raw(s, msg, body, truncated);
    return;
  }
  soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
  soup_server_message_set_response(msg, "application/octet-stream", SOUP_MEMORY_COPY,
                                   g_bytes_get_data(body, NULL), g_bytes_get_size(body));
  g_bytes_unref(body);
}

static gpointer server_thread(gpointer data) {
  OakukTestHttpServer *s = data;
  g_main_context_push_thread_default(s->context);
  g_autoptr(GError) err = NULL;
  s->server = soup_server_new("server-header", "oakuk-test-http", NULL);
  soup_server_add_handler(s->server, NULL, handler, s, NULL);
  if (!soup_server_listen_local(s->server, 0, SOUP_SERVER_LISTEN_IPV4_ONLY, &err))
    g_error("test http server: listen: %s", err->message);
  GSList *uris = soup_server_get_uris(s->server);
  g_mutex_lock(&s->lock);
  s->url = g_strdup_printf("http://127.0.0.1:%d", g_uri_get_port(uris->data));
  s->started = TRUE;
  g_cond_signal(&s->ready);
  g_mutex_unlock(&s->lock);
  g_slist_free_full(uris, (GDestroyNotify)g_uri_unref);
  g_main_loop_run(s->loop);
  soup_server_disconnect(s->server);
  g_clear_object(&s->server);
  g_main_context_pop_thread_default(s->context);
  return NULL;
}

OakukTestHttpServer *oakuk_test_http_server_new(const char *root) {
  OakukTestHttpServer *s = g_new0(OakukTestHttpServer, 1);
  s->root = g_strdup(root);
  s->context = g_main_context_new();
  s->loop = g_main_loop_new(s->context, FALSE);
  s->counts = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  s->writers = g_ptr_array_new();
  s->slow_chunk = 4096;
  s->slow_delay_ms = 200;
  g_mutex_init(&s->lock);
  g_cond_init(&s->ready);
  s->thread = g_thread_new("test-http-server", server_thread, s);
  g_mutex_lock(&s->lock);
  while (!s->started)
    g_cond_wait(&s->ready, &s->lock);
  g_mutex_unlock(&s->lock);
  return s;
}

static gboolean quit_loop(gpointer data) {
  g_main_loop_quit(data);
  return G_SOURCE_REMOVE;
}

void oakuk_test_http_server_free(OakukTestHttpServer *s) {
  if (s == NULL)
    return;
  g_main_context_invoke(s->context, quit_loop, s->loop);
  g_thread_join(s->thread);
  for (guint i = 0; i < s->writers->len; i++)
    g_thread_join(g_ptr_array_index(s->writers, i));
  g_ptr_array_unref(s->writers);
  g_main_loop_unref(s->loop);
  g_main_context_unref(s->context);
  g_hash_table_unref(s->counts);
  g_mutex_clear(&s->lock);
  g_cond_clear(&s->ready);
  g_free(s->root);
  g_free(s->url);
  g_free(s);
}

const char *oakuk_test_http_server_url(OakukTestHttpServer *s) {
  return s->url;
}

char *oakuk_test_http_server_url_for(OakukTestHttpServer *s, const char *path) {
  return g_strconcat(s->url, path[0] == '/' ? "" : "/", path, NULL);
}

guint oakuk_test_http_server_request_count(OakukTestHttpServer *s, const char *path) {
  g_mutex_lock(&s->lock);
  guint n = GPOINTER_TO_UINT(g_hash_table_lookup(s->counts, path));
  g_mutex_unlock(&s->lock);
  return n;
}

guint oakuk_test_http_server_total_requests(OakukTestHttpServer *s) {
  g_mutex_lock(&s->lock);
  guint n = s->total;
  g_mutex_unlock(&s->lock);
  return n;
}

void oakuk_test_http_server_set_slow(OakukTestHttpServer *s, guint chunk_bytes, guint delay_ms) {
  g_mutex_lock(&s->lock);
  s->slow_chunk = chunk_bytes ? chunk_bytes : 1;
  s->slow_delay_ms = delay_ms;
  g_mutex_unlock(&s->lock);
}

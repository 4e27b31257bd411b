/* Serving fuzz inputs as HTTP connections (fuzz-http.h). */
#include "fuzz-http.h"

#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SERVE_LIMIT_MS 2000

const char *__lsan_default_suppressions(void);
const char *__asan_default_options(void);

/* libsoup 3.2 (Debian 12) loses the request's path when it refuses a request whose body encoding it
 * cannot tell (Content-Length "12abc"): parse_headers returns before freeing what
 * soup_headers_parse_request gave it. Nothing of ours is involved, and nothing of ours can avoid it:
 * it happens before any signal the server emits. Matching the suppression takes whole stacks: GLib and
 * libsoup are built without frame pointers, where the fast unwinder stops at g_malloc. */
const char *__lsan_default_suppressions(void) {
  return "leak:soup_headers_parse_request\n";
}

const char *__asan_default_options(void) {
  return "fast_unwind_on_malloc=0";
}

static GLogWriterOutput quiet_writer(GLogLevelFlags level, const GLogField *fields, gsize n, gpointer data) {
  if (level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL))
    return g_log_writer_standard_streams(level, fields, n, data);
  return G_LOG_WRITER_HANDLED;
}

void fuzz_http_quiet_logs(void) {
  g_log_set_writer_func(quiet_writer, NULL, NULL);
  g_log_set_always_fatal(G_LOG_LEVEL_CRITICAL);
}

static GByteArray *replace(GByteArray *in, const char *placeholder, const char *value) {
  GByteArray *out = g_byte_array_sized_new(in->len);
  const gsize plen = strlen(placeholder);
  gsize i = 0;
  for (const guint8 *hit;
       i < in->len && (hit = memmem(in->data + i, in->len - i, placeholder, plen)) != NULL;) {
    g_byte_array_append(out, in->data + i, (guint)(hit - (in->data + i)));
    g_byte_array_append(out, (const guint8 *)value, (guint)strlen(value));
    i = (gsize)(hit - in->data) + plen;
  }
  if (i < in->len) /* an empty array has no data at all */
    g_byte_array_append(out, in->data + i, (guint)(in->len - i));
  g_byte_array_unref(in);
  return out;
}

GBytes *fuzz_http_substitute(const guint8 *data, gsize size, const char *const *subst) {
  GByteArray *a = g_byte_array_sized_new((guint)size);
  g_byte_array_append(a, data, (guint)size);
  for (gsize k = 0; subst[k] != NULL && subst[k + 1] != NULL; k += 2)
    a = replace(a, subst[k], subst[k + 1]);
  return g_byte_array_free_to_bytes(a);
}

static gboolean set_flag(gpointer data) {
  *(gboolean *)data = TRUE;
  return G_SOURCE_REMOVE;
}

void fuzz_http_serve(SoupServer *server, GBytes *request) {
  g_autoptr(GInputStream) in = g_memory_input_stream_new_from_bytes(request);
  g_autoptr(GOutputStream) out = g_memory_output_stream_new_resizable();
  g_autoptr(GIOStream) io = g_simple_io_stream_new(in, out);
  g_autoptr(GSocketAddress) local = g_inet_socket_address_new_from_string("127.0.0.1", 10000);
  g_autoptr(GSocketAddress) remote = g_inet_socket_address_new_from_string("127.0.0.1", 40000);
  g_autoptr(GError) error = NULL;
  if (!soup_server_accept_iostream(server, io, local, remote, &error)) {
    fprintf(stderr, "soup_server_accept_iostream: %s\n", error->message);
    abort();
  }
  gboolean late = FALSE;
  guint timer = g_timeout_add(SERVE_LIMIT_MS, set_flag, &late);
  while (!g_io_stream_is_closed(io) && !late)
    g_main_context_iteration(NULL, TRUE);
  if (!late)
    g_source_remove(timer);
  else
    g_io_stream_close(io, NULL, NULL);
  while (g_main_context_pending(NULL))
    g_main_context_iteration(NULL, FALSE);
  /* What the server wrote is a response (or nothing: a connection it dropped). */
  gsize len = g_memory_output_stream_get_data_size(G_MEMORY_OUTPUT_STREAM(out));
  const char *answer = g_memory_output_stream_get_data(G_MEMORY_OUTPUT_STREAM(out));
  if (g_getenv("OAKUK_FUZZ_HTTP_SHOW") != NULL) /* for writing seeds: what the server answered */
    fprintf(stderr, "%s%.*s\n", late ? "(closed after 2 s) " : "", (int)MIN(len, 600), answer ? answer : "");
  if (len > 0 && (len < 9 || strncmp(answer, "HTTP/1.", 7) != 0)) {
    fprintf(stderr, "not an HTTP response: %.*s\n", (int)MIN(len, 200), answer);
    abort();
  }
}

char *fuzz_http_loopback_listen(void) {
  g_autoptr(GSocket) s =
      g_socket_new(G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, NULL);
  g_autoptr(GSocketAddress) any = g_inet_socket_address_new_from_string("127.0.0.1", 0);
  g_autoptr(GSocketAddress) bound = NULL;
  if (s == NULL || !g_socket_bind(s, any, FALSE, NULL) ||
      (bound = g_socket_get_local_address(s, NULL)) == NULL)
    abort();
  return g_strdup_printf("127.0.0.1:%u", g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(bound)));
}

void fuzz_http_remove_tree(const char *path) {
  if (g_file_test(path, G_FILE_TEST_IS_DIR) && !g_file_test(path, G_FILE_TEST_IS_SYMLINK)) {
    g_autoptr(GDir) dir = g_dir_open(path, 0, NULL);
    for (const char *name; dir && (name = g_dir_read_name(dir)) != NULL;) {
      g_autofree char *child = g_build_filename(path, name, NULL);
      fuzz_http_remove_tree(child);
    }
    g_rmdir(path);
    return;
  }
  g_unlink(path);
}

/* A small HTTP server for tests: libsoup's SoupServer on 127.0.0.1:<ephemeral port>, running in its
 * own thread (so tests may block on synchronous clients), serving files from a directory.
 *
 * Paths:
 *   /<file>                    the file under the root directory (404 when missing)
 *   /status/<code>             an empty response with that status
 *   /redirect/<n>/<file>       302 to /redirect/<n-1>/<file>; /redirect/0/<file> serves <file>
 *   /redirect-loop/<n>         302 to /redirect-loop/<n+1>, forever
 *   /truncated/<file>          announces the file's full Content-Length, sends half, closes
 *   /slow/<file>               sends the file in chunks with a pause between them (set_slow)
 * Every request is counted by its path. */
#ifndef OAKUK_TEST_HTTP_SERVER_H
#define OAKUK_TEST_HTTP_SERVER_H

#include <glib.h>

G_BEGIN_DECLS

typedef struct OakukTestHttpServer OakukTestHttpServer;

/* Starts serving root; aborts the test on failure. */
OakukTestHttpServer *oakuk_test_http_server_new(const char *root);
/* Stops the server and joins its threads. */
void oakuk_test_http_server_free(OakukTestHttpServer *s);
/* "http://127.0.0.1:<port>" (no trailing slash). */
const char *oakuk_test_http_server_url(OakukTestHttpServer *s);
/* A URL for path ("/x.tar.gz" → "http://127.0.0.1:<port>/x.tar.gz"); g_free it. */
char *oakuk_test_http_server_url_for(OakukTestHttpServer *s, const char *path);
/* Requests received for path (exact, e.g. "/x.tar.gz") and in total. */
guint oakuk_test_http_server_request_count(OakukTestHttpServer *s, const char *path);
guint oakuk_test_http_server_total_requests(OakukTestHttpServer *s);
/* /slow/: bytes per chunk and pause between chunks (default 4096 bytes, 200 ms). */
void oakuk_test_http_server_set_slow(OakukTestHttpServer *s, guint chunk_bytes, guint delay_ms);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(OakukTestHttpServer, oakuk_test_http_server_free)

G_END_DECLS

#endif

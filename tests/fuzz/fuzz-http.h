/* What the HTTP harnesses (fuzz-http-root.c, fuzz-http-cluster.c) share: one input is the bytes one
 * client sends on one connection, served by a SoupServer the daemon's API is registered on. */
#ifndef OAKUK_FUZZ_HTTP_H
#define OAKUK_FUZZ_HTTP_H

#include <libsoup/soup.h>

/* Drops the daemons' log lines (one or more per request); a critical is printed and, fatal, aborts. */
void fuzz_http_quiet_logs(void);
/* The input with each placeholder replaced by its value (credentials the harness made, which no input
 * could guess): subst is placeholder, value, ..., NULL. */
GBytes *fuzz_http_substitute(const guint8 *data, gsize size, const char *const *subst);
/* Serves request as one connection from 127.0.0.1 and runs the main context until the server closed
 * it (at the end of the input, or refusing it) or 2 s passed (a handler waiting on something that
 * never came: the connection is then closed as a client would). */
void fuzz_http_serve(SoupServer *server, GBytes *request);
/* "127.0.0.1:PORT" with a port that was free a moment ago: od_http_server_listen needs a port, and the
 * server must watch its connections (daemons/common/http.c) though the harness hands them over itself. */
char *fuzz_http_loopback_listen(void);
/* Removes a temporary state directory and everything in it. */
void fuzz_http_remove_tree(const char *path);

#endif

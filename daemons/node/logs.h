/* oakuk-node: answers the cluster's instance-logs requests (docs/cli.md, "Logs path"). */
#ifndef OAKUK_NODE_LOGS_H
#define OAKUK_NODE_LOGS_H

#include <glib.h>

G_BEGIN_DECLS

#define NODE_LOGS_DEFAULT_LINES 100
#define NODE_LOGS_MAX_LINES 10000

/* The console file of an instance (g_free), or NULL when this node has no such instance. */
typedef char *(*NodeConsoleLookup)(const char *instance, gpointer data);

/* Builds the reply to a nodes/<id>/control/logs payload {"instance", "lines"?, "request_id"}: the
 * JSON text to publish on nodes/<id>/logs, {"request_id", "instance", "lines": [...]} with the last
 * lines of the instance's console as lookup names it (cleaned by liboakuk's console module: no
 * escape sequences or control bytes), or {"request_id", "instance", "error": "..."} when the
 * instance is unknown here or the request is invalid. Returns NULL (error set, naming the field)
 * only when the payload carries no usable request_id, so no reply can be matched: the caller logs
 * and drops it. Free with g_free. */
char *node_logs_reply(NodeConsoleLookup lookup, gpointer lookup_data, const char *payload, gsize len,
                      GError **error);

G_END_DECLS

#endif

/* oakuk-node: the deploy message (nodes/<id>/control/deploy, docs/architecture.md §8.4) read and checked
 * without the node's runtime state, so that instances.c builds instances only from typed jobs and the
 * parsing can be fuzzed on its own (tests/fuzz/fuzz-deploy.c). */
#ifndef OAKUK_NODE_JOB_H
#define OAKUK_NODE_JOB_H

#include "daemon-common.h"

#include <oakuk/oakuk.h>

G_BEGIN_DECLS

typedef struct {
  JsonObject *job; /* the deploy payload as received */
  oakuk_microservice *ms;
  char *job_name;
  gint64 number;
  gint64 generation; /* 0 when absent (a cluster from before generations, docs/reconcile.md) */
  int32_t virt;
  char *arch; /* the placement's, else the first of arch[] the node can run (its own first), else its own */
  char *code;
  char *code_sha256;
  char *ip; /* a valid IPv4 instance_ip from the cluster, or NULL (allocate) */
  int32_t restart;
} NodeJob;

/* Parses an MQTT payload that must be a JSON value of type want (object or array); NULL with *problem
 * (the parser's message, or "expected a JSON object"/"expected a JSON array") otherwise. */
/* Members of JSON from outside, by type: the string, or NULL when absent or of another type; an
 * integer into *out, FALSE when absent or of another type. o may be NULL. */
const char *node_str_member(JsonObject *o, const char *key);
gboolean node_int_member(JsonObject *o, const char *key, gint64 *out);

JsonNode *node_payload_parse(const void *data, gsize len, JsonNodeType want, char **problem);
/* Reads a deploy payload into a job for a node with caps (its host architecture and what it can run);
 * NULL with *problem ("instance_number: missing or not a non-negative integer", ...) when it is not one. */
NodeJob *node_job_parse(JsonObject *job, const oakuk_qemu_caps *caps, char **problem);
void node_job_free(NodeJob *j);

G_DEFINE_AUTOPTR_CLEANUP_FUNC(NodeJob, node_job_free)

G_END_DECLS

#endif

/* The deploy message read into a NodeJob: what instances.c needs of a job, checked where it enters. */
#include "job.h"

#include <arpa/inet.h>

const char *node_str_member(JsonObject *o, const char *key) {
  JsonNode *m = o ? json_object_get_member(o, key) : NULL;
  return m != NULL && JSON_NODE_HOLDS_VALUE(m) && json_node_get_value_type(m) == G_TYPE_STRING
             ? json_node_get_string(m)
             : NULL;
}

gboolean node_int_member(JsonObject *o, const char *key, gint64 *out) {
  JsonNode *m = o ? json_object_get_member(o, key) : NULL;
  if (m == NULL || !JSON_NODE_HOLDS_VALUE(m) || json_node_get_value_type(m) != G_TYPE_INT64)
    return FALSE;
  *out = json_node_get_int(m);
  return TRUE;
}

JsonNode *node_payload_parse(const void *data, gsize len, JsonNodeType want, char **problem) {
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonNode) root = od_json_parse(data ? data : "", (gssize)len, &error);
  if (root == NULL) {
    *problem = g_strdup(error->message);
    return NULL;
  }
  if (JSON_NODE_TYPE(root) != want) {
    *problem = g_strdup(want == JSON_NODE_ARRAY ? "expected a JSON array" : "expected a JSON object");
    return NULL;
  }
  return g_steal_pointer(&root);
}

void node_job_free(NodeJob *j) {
  if (j == NULL)
    return;
  g_clear_pointer(&j->job, json_object_unref);
  oakuk_microservice_unref(j->ms);
  g_free(j->job_name);
  g_free(j->arch);
  g_free(j->code);
  g_free(j->code_sha256);
  g_free(j->ip);
  g_free(j);
}

/* The architecture to run: the placement's, else the first of arch[] this node can run (its own
 * first), else the node's. Sets *index to its position in arch[] (0 when absent). */
static char *pick_arch(const oakuk_qemu_caps *caps, const oakuk_microservice *ms, const char *placed,
                       int32_t virt, size_t *index) {
  size_t count = oakuk_microservice_arch_count(ms);
  *index = 0;
  const char *host = oakuk_qemu_caps_host_arch(caps);
  for (size_t k = 0; placed != NULL && k < count; k++)
    if (g_strcmp0(oakuk_microservice_arch(ms, k), placed) == 0)
      *index = k;
  if (placed != NULL)
    return g_strdup(placed);
  if (count == 0)
    return g_strdup(host);
  for (size_t k = 0; k < count; k++)
    if (g_strcmp0(oakuk_microservice_arch(ms, k), host) == 0)
      return *index = k, g_strdup(host);
  for (size_t k = 0; virt == OAKUK_VIRT_UNIKERNEL && k < count; k++)
    if (oakuk_qemu_caps_accel_for_arch(caps, oakuk_microservice_arch(ms, k)) != OAKUK_ACCEL_NONE)
      return *index = k, g_strdup(oakuk_microservice_arch(ms, k));
  return g_strdup(oakuk_microservice_arch(ms, 0));
}

NodeJob *node_job_parse(JsonObject *job, const oakuk_qemu_caps *caps, char **problem) {
  gint64 number = -1, generation = 0;
  if (!node_int_member(job, "instance_number", &number) || number < 0) {
    *problem = g_strdup("instance_number: missing or not a non-negative integer");
    return NULL;
  }
  /* Absent: a cluster from before generations (docs/reconcile.md), generation 0. */
  if (json_object_has_member(job, "generation") &&
      (!node_int_member(job, "generation", &generation) || generation < 0)) {
    *problem = g_strdup("generation: not a non-negative integer");
    return NULL;
  }
  JsonNode *pn = json_object_get_member(job, "placement");
  if (pn != NULL && !JSON_NODE_HOLDS_OBJECT(pn) && !JSON_NODE_HOLDS_NULL(pn)) {
    *problem = g_strdup("placement: not an object");
    return NULL;
  }
  JsonObject *pl = pn && JSON_NODE_HOLDS_OBJECT(pn) ? json_node_get_object(pn) : NULL;
  g_autoptr(JsonNode) jn = json_node_init_object(json_node_alloc(), job);
  g_autofree char *text = od_json_to_string(jn, FALSE);
  oakuk_error *err = NULL;
  oakuk_microservice *ms = oakuk_microservice_parse(text, (size_t)-1, &err);
  if (ms == NULL) {
    *problem = g_strdup_printf("job: %s", oakuk_error_message(err));
    oakuk_error_free(err);
    return NULL;
  }
  if (oakuk_microservice_service_name(ms) == NULL) {
    oakuk_microservice_unref(ms);
    *problem = g_strdup("job_name: missing (need job_name, or app_name and app_ns)");
    return NULL;
  }
  const char *pv = node_str_member(pl, "virtualization");
  int32_t virt = pv ? oakuk_virt_from_name(pv) : oakuk_microservice_virt(ms, 0);
  const char *parch = node_str_member(pl, "arch");
  if (virt == OAKUK_VIRT_NONE || (parch != NULL && !oakuk_arch_is_known(parch))) {
    oakuk_microservice_unref(ms);
    *problem = g_strdup(virt == OAKUK_VIRT_NONE ? "placement.virtualization: not container or unikernel"
                                                : "placement.arch: not a known architecture");
    return NULL;
  }
  NodeJob *j = g_new0(NodeJob, 1);
  j->job = json_object_ref(job);
  j->ms = ms;
  j->job_name = g_strdup(oakuk_microservice_service_name(ms));
  j->number = number;
  j->generation = generation;
  j->virt = virt;
  size_t idx = 0;
  j->arch = pick_arch(caps, ms, parch, virt, &idx);
  const char *code = node_str_member(pl, "code");
  j->code = g_strdup(code && *code ? code : oakuk_microservice_code(ms, virt, idx));
  const char *sha = node_str_member(pl, "code_sha256");
  j->code_sha256 = g_strdup(sha && *sha ? sha : oakuk_microservice_code_sha256(ms, virt, idx));
  const char *ip = node_str_member(job, "instance_ip");
  struct in_addr a;
  j->ip = ip && inet_pton(AF_INET, ip, &a) == 1 ? g_strdup(ip) : NULL;
  j->restart = oakuk_microservice_restart(ms);
  return j;
}

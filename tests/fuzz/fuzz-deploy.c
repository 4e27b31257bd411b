/* libFuzzer harness for the node's deploy message (the MQTT payload on nodes/<id>/control/deploy,
 * daemons/node/job.c): any payload is refused with a problem or read into a job whose instance name is a
 * file name (the node keeps <state>/jobs/<name>.json), and the job record the node writes is read back
 * after a restart into the same job. */
#include "job.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static oakuk_qemu_caps *caps;

static void check(const NodeJob *j) {
  if (j->number < 0 || j->generation < 0 || j->ms == NULL || j->job == NULL || j->arch == NULL ||
      (j->virt != OAKUK_VIRT_CONTAINER && j->virt != OAKUK_VIRT_UNIKERNEL))
    abort();
  g_autofree char *name = oakuk_instance_name(j->job_name, j->number);
  if (name == NULL || name[0] == '.' || strchr(name, '/') != NULL || !g_utf8_validate(name, -1, NULL))
    abort();
  struct in_addr a;
  if (j->ip != NULL && inet_pton(AF_INET, j->ip, &a) != 1)
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (caps == NULL) {
    oakuk_qemu_options o = OAKUK_QEMU_OPTIONS_INIT;
    o.allow_emulation = true; /* foreign arch[] entries pick an emulated one */
    if (oakuk_qemu_probe(&caps, &o, NULL) != 0)
      abort();
    g_log_set_always_fatal(G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING);
  }
  g_autofree char *problem = NULL;
  g_autoptr(JsonNode) root = node_payload_parse(data, size, JSON_NODE_OBJECT, &problem);
  if (root == NULL) {
    if (problem == NULL)
      abort();
    return 0;
  }
  g_autoptr(NodeJob) j = node_job_parse(json_node_get_object(root), caps, &problem);
  if (j == NULL) {
    if (problem == NULL || !g_utf8_validate(problem, -1, NULL))
      abort();
    return 0;
  }
  check(j);
  /* The job record (instances.c record_write) and its reading after a restart (restore_record). */
  g_autoptr(JsonNode) jn = json_node_init_object(json_node_alloc(), j->job);
  g_autofree char *text = od_json_to_string(jn, TRUE);
  g_autofree char *again_problem = NULL;
  g_autoptr(JsonNode) again_root = node_payload_parse(text, strlen(text), JSON_NODE_OBJECT, &again_problem);
  g_autoptr(NodeJob) again =
      again_root ? node_job_parse(json_node_get_object(again_root), caps, &again_problem) : NULL;
  if (again == NULL) {
    fprintf(stderr, "job record refused: %s\n%s\n", again_problem ? again_problem : "?", text);
    abort();
  }
  check(again);
  if (strcmp(j->job_name, again->job_name) != 0 || j->number != again->number ||
      j->generation != again->generation || j->virt != again->virt || strcmp(j->arch, again->arch) != 0 ||
      g_strcmp0(j->code, again->code) != 0 || g_strcmp0(j->ip, again->ip) != 0)
    abort();
  return 0;
}

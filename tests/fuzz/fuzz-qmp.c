/* libFuzzer harness for QMP lines (what QEMU writes on the monitor socket, read by the unikernel
 * runtime): every JSON object is classified without a crash or a critical warning, and a command's
 * id, an event's name and a shutdown reason are strings or absent. */
#include "oakuk-private.h"
#include "qemu-private.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static gboolean once;
  if (!once) {
    g_log_set_always_fatal(G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING);
    once = TRUE;
  }
  /* The runtime reads lines of at most 64 kB. */
  if (size > 65536)
    return 0;
  JsonNode *root = oakuk_json_parse((const char *)data, size, NULL);
  if (root == NULL)
    return 0;
  if (JSON_NODE_HOLDS_OBJECT(root)) {
    OakukQmpMessage m;
    oakuk_qmp_message_parse(json_node_get_object(root), &m);
    if (m.kind > OAKUK_QMP_ERROR)
      abort();
    if ((m.id && !g_utf8_validate(m.id, -1, NULL)) || (m.event && m.kind != OAKUK_QMP_EVENT) ||
        (m.shutdown_reason && g_strcmp0(m.event, "SHUTDOWN") != 0))
      abort();
  }
  json_node_unref(root);
  return 0;
}

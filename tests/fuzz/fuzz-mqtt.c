/* libFuzzer harness for the MQTT client of cluster and node (daemons/common/mqtt.c): whatever a
 * broker sends, in whatever pieces TCP delivers it, is taken packet by packet or ends the
 * connection with a reason; nothing is read outside the bytes received. Input: a byte n, then n
 * piece sizes (one byte each, 0 counts as 1), then the broker's bytes. */
#include "daemon-common.h"
#include "mqtt.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The client's warnings (a refused subscription...) are expected here: not printed. */
static GLogWriterOutput drop(GLogLevelFlags level, const GLogField *fields, gsize n, gpointer data) {
  return G_LOG_WRITER_HANDLED;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static gboolean quiet;
  if (!quiet) {
    g_log_set_writer_func(drop, NULL, NULL);
    quiet = TRUE;
  }
  if (size == 0)
    return 0;
  gsize n_cuts = MIN((gsize)data[0], size - 1);
  gsize cuts[256];
  for (gsize i = 0; i < n_cuts; i++)
    cuts[i] = data[1 + i] ? data[1 + i] : 1;
  od_mqtt_feed_for_fuzzing(data + 1 + n_cuts, size - 1 - n_cuts, cuts, n_cuts);
  /* Sources the client attached (its keepalive) are gone with it. */
  while (g_main_context_iteration(NULL, FALSE))
    ;
  return 0;
}

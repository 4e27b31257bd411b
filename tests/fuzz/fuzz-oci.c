/* libFuzzer harness for what registries and OCI archives send: indexes (manifest lists) and image
 * manifests. Any JSON is either refused with an error or turned into a typed manifest (every
 * digest sha256:<64 hex>, every size a non-negative integer) or an index entry; no critical warning
 * (json-glib's getters warn on a type mismatch), no crash. */
#include "oakuk-private.h"
#include "oci-private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_digest(const char *d) {
  if (!oakuk_oci_digest_is_valid(d))
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static gboolean once;
  if (!once) {
    g_log_set_always_fatal(G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING);
    once = TRUE;
  }
  JsonNode *root = oakuk_json_parse((const char *)data, size, NULL);
  if (root == NULL)
    return 0;
  if (JSON_NODE_HOLDS_OBJECT(root)) {
    JsonObject *o = json_node_get_object(root);
    if (oakuk_oci_is_index(o)) {
      static const char *const platforms[][2] = {{"amd64", NULL}, {"arm64", "v8"}, {"arm", "v7"}};
      for (guint k = 0; k < G_N_ELEMENTS(platforms); k++) {
        GError *err = NULL;
        char *d = oakuk_oci_index_pick(o, platforms[k][0], platforms[k][1], "fuzz", &err);
        if (d)
          check_digest(d);
        else if (err == NULL)
          abort();
        g_free(d);
        g_clear_error(&err);
      }
    }
    GError *err = NULL;
    OakukOciManifest *m = oakuk_oci_manifest_parse(o, "fuzz", &err);
    if (m) {
      check_digest(m->config.digest);
      for (guint k = 0; k < m->n_layers; k++) {
        check_digest(m->layers[k].digest);
        if (m->layers[k].size < 0)
          abort();
      }
      oakuk_oci_manifest_free(m);
    } else if (err == NULL) {
      abort();
    }
    g_clear_error(&err);
  }
  json_node_unref(root);
  return 0;
}

/* libFuzzer harness for cluster aggregates (what every cluster sends the root): any input is refused
 * with an OAKUK_EINVAL error or accepted, and an accepted aggregate written back parses again to the
 * same text. */
#include "oakuk-private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  oakuk_error *e = NULL;
  oakuk_cluster_aggregate *a = oakuk_cluster_aggregate_from_json((const char *)data, size, &e);
  if (a == NULL) {
    if (e == NULL || oakuk_error_code(e) != OAKUK_EINVAL)
      abort();
    oakuk_error_free(e);
    return 0;
  }
  char *out = oakuk_cluster_aggregate_to_json(a, true, NULL);
  oakuk_cluster_aggregate *again = out ? oakuk_cluster_aggregate_from_json(out, (size_t)-1, &e) : NULL;
  if (again == NULL) {
    fprintf(stderr, "re-parse failed: %s\n%s\n", e ? oakuk_error_message(e) : "?", out ? out : "(null)");
    abort();
  }
  char *out2 = oakuk_cluster_aggregate_to_json(again, true, NULL);
  if (strcmp(out, out2) != 0)
    abort();
  oakuk_free(out);
  oakuk_free(out2);
  oakuk_cluster_aggregate_unref(again);
  oakuk_cluster_aggregate_unref(a);
  return 0;
}

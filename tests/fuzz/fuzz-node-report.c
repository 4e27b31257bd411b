/* libFuzzer harness for node reports (what every node publishes, parsed by the cluster): any input is
 * refused with an OAKUK_EINVAL error or accepted, and an accepted report written back parses again to
 * the same text. */
#include "oakuk-private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  oakuk_error *e = NULL;
  oakuk_node_report *r = oakuk_node_report_from_json((const char *)data, size, &e);
  if (r == NULL) {
    if (e == NULL || oakuk_error_code(e) != OAKUK_EINVAL)
      abort();
    oakuk_error_free(e);
    return 0;
  }
  for (size_t i = 0; i < oakuk_node_report_instance_count(r); i++)
    (void)oakuk_node_report_instance_name(r, i);
  (void)oakuk_node_report_accel_for_arch(r, "amd64");
  char *out = oakuk_node_report_to_json(r, false, NULL);
  oakuk_node_report *again = out ? oakuk_node_report_from_json(out, (size_t)-1, &e) : NULL;
  if (again == NULL) {
    fprintf(stderr, "re-parse failed: %s\n%s\n", e ? oakuk_error_message(e) : "?", out ? out : "(null)");
    abort();
  }
  char *out2 = oakuk_node_report_to_json(again, false, NULL);
  if (strcmp(out, out2) != 0)
    abort();
  /* The cluster folds reports into its aggregate. */
  oakuk_cluster_aggregate *agg =
      oakuk_aggregate_fold((oakuk_node_report *const[]){r, again}, 2, 0, 1000, NULL);
  oakuk_cluster_aggregate_unref(agg);
  oakuk_free(out);
  oakuk_free(out2);
  oakuk_node_report_unref(again);
  oakuk_node_report_unref(r);
  return 0;
}

/* libFuzzer harness for the descriptor parser: any input must be rejected cleanly or accepted, and an
 * accepted document must serialize to JSON that parses again to the same text. */
#include "oakuk-private.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void roundtrip(oakuk_descriptor *d) {
  char *out = oakuk_descriptor_to_json(d, false, NULL);
  if (out == NULL)
    abort();
  oakuk_error *e = NULL;
  oakuk_descriptor *again = oakuk_descriptor_parse(out, (size_t)-1, &e);
  if (again == NULL) {
    fprintf(stderr, "re-parse failed: %s\n%s\n", oakuk_error_message(e), out);
    abort();
  }
  char *out2 = oakuk_descriptor_to_json(again, true, NULL);
  char *out3 = oakuk_descriptor_to_json(d, true, NULL);
  if (strcmp(out2, out3) != 0)
    abort();
  for (size_t i = 0; i < oakuk_descriptor_application_count(again); i++) {
    oakuk_application *app = oakuk_descriptor_application(again, i);
    for (size_t j = 0; j < oakuk_application_microservice_count(app); j++) {
      oakuk_microservice *ms = oakuk_application_microservice(app, j);
      char *ms_json = oakuk_microservice_to_json(ms, false, NULL);
      /* Not necessarily valid alone: job keys (app_name, job_name) are checked only there. */
      oakuk_microservice *alone = oakuk_microservice_parse(ms_json, (size_t)-1, &e);
      if (alone) {
        for (size_t k = 0; k < oakuk_microservice_arch_count(alone); k++)
          (void)oakuk_microservice_code(alone, OAKUK_VIRT_UNIKERNEL, k);
        oakuk_microservice_unref(alone);
      } else {
        oakuk_error_free(e);
        e = NULL;
      }
      oakuk_free(ms_json);
    }
  }
  oakuk_free(out);
  oakuk_free(out2);
  oakuk_free(out3);
  oakuk_descriptor_unref(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  oakuk_error *e = NULL;
  oakuk_descriptor *d = oakuk_descriptor_parse((const char *)data, size, &e);
  if (d) {
    roundtrip(d);
    oakuk_descriptor_unref(d);
  } else {
    if (e == NULL || oakuk_error_code(e) != OAKUK_EINVAL || oakuk_error_item_count(e) == 0)
      abort();
    oakuk_error_free(e);
  }
  e = NULL;
  oakuk_microservice *ms = oakuk_microservice_parse((const char *)data, size, &e);
  if (ms) {
    char *out = oakuk_microservice_to_json(ms, true, NULL);
    oakuk_microservice *again = oakuk_microservice_parse(out, (size_t)-1, &e);
    if (again == NULL) {
      fprintf(stderr, "microservice re-parse failed: %s\n%s\n", oakuk_error_message(e), out);
      abort();
    }
    oakuk_microservice_unref(again);
    oakuk_free(out);
    oakuk_microservice_unref(ms);
  } else {
    oakuk_error_free(e);
  }
  return 0;
}

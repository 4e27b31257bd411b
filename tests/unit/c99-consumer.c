/* Built by tests/unit/check-c99.py with -std=c99 -pedantic: the public API in plain C99. */
#include <oakuk/oakuk.h>
#include <stdio.h>
#include <string.h>

int main(void) {
  const char *json = "{\"sla_version\":\"v2.0\",\"customerID\":\"Admin\",\"applications\":[]}";
  oakuk_error *err = NULL;
  oakuk_descriptor *d = oakuk_descriptor_parse(json, (size_t)-1, &err);
  oakuk_sched_options opts = OAKUK_SCHED_OPTIONS_INIT;
  if (d == NULL) {
    fprintf(stderr, "parse failed: %s\n", oakuk_error_message(err));
    oakuk_error_free(err);
    return 1;
  }
  oakuk_descriptor_unref(d);
  d = oakuk_descriptor_parse("{", (size_t)-1, &err);
  if (d != NULL || err == NULL || oakuk_error_code(err) != OAKUK_EINVAL)
    return 1;
  oakuk_error_free(err);
  return opts.version == OAKUK_SCHED_OPTIONS_VERSION &&
                 strcmp(oakuk_virt_name(OAKUK_VIRT_UNIKERNEL), "unikernel") == 0
             ? 0
             : 1;
}

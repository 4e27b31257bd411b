/* Unikernel OCI references resolved off the main loop (resolve.h). A registry that answers slowly
 * or not at all holds one worker thread and the request that asked, never the loop: /healthz,
 * aggregates and status reports keep being answered meanwhile. */
#include "resolve.h"

#include <string.h>

typedef struct {
  GPtrArray *references; /* char* */
  char *insecure;
  GPtrArray *resolved; /* Resolved*, filled by the worker */
  ResolveDone done;
  gpointer data;
} Job;

static void resolved_free(gpointer p) {
  Resolved *r = p;
  g_free(r->reference);
  oakuk_oci_resolution_unref(r->res);
  g_free(r->error);
  g_free(r);
}

static void job_free(gpointer p) {
  Job *j = p;
  g_ptr_array_unref(j->references);
  g_free(j->insecure);
  if (j->resolved)
    g_ptr_array_unref(j->resolved);
  g_free(j);
}

static void work(GTask *task, gpointer source, gpointer data, GCancellable *cancel) {
  (void)source;
  (void)cancel;
  Job *j = data;
  oakuk_container_options opts;
  oakuk_container_options_init(&opts, OAKUK_CONTAINER_OPTIONS_VERSION);
  opts.insecure_registries = j->insecure;
  opts.timeout_s = RESOLVE_TIMEOUT_S;
  for (guint k = 0; k < j->references->len; k++) {
    Resolved *r = g_new0(Resolved, 1);
    r->reference = g_strdup(j->references->pdata[k]);
    /* The same reference twice in one descriptor is asked once. */
    for (guint e = 0; e < k && r->res == NULL && r->error == NULL; e++) {
      Resolved *earlier = j->resolved->pdata[e];
      if (strcmp(earlier->reference, r->reference) == 0) {
        r->res = earlier->res ? oakuk_oci_resolution_ref(earlier->res) : NULL;
        r->code = earlier->code;
        r->error = g_strdup(earlier->error);
      }
    }
    if (r->res == NULL && r->error == NULL) {
      oakuk_error *err = NULL;
      r->res = oakuk_oci_resolve(r->reference, NULL, NULL, &opts, &err);
      if (r->res == NULL) {
        r->code = oakuk_error_code(err);
        r->error = g_strdup(oakuk_error_message(err));
        oakuk_error_free(err);
      }
    }
    g_ptr_array_add(j->resolved, r);
  }
  g_task_return_boolean(task, TRUE);
}

static void finished(GObject *source, GAsyncResult *result, gpointer data) {
  (void)source;
  (void)data;
  GTask *task = G_TASK(result);
  Job *j = g_task_get_task_data(task);
  GPtrArray *resolved = g_steal_pointer(&j->resolved);
  j->done(resolved, j->data);
  g_ptr_array_unref(resolved);
}

void resolve_references(GPtrArray *references, const char *insecure_registries, ResolveDone done,
                        gpointer data) {
  Job *j = g_new0(Job, 1);
  j->references = references;
  j->insecure = g_strdup(insecure_registries);
  j->resolved = g_ptr_array_new_with_free_func(resolved_free);
  j->done = done;
  j->data = data;
  GTask *task = g_task_new(NULL, NULL, finished, NULL);
  g_task_set_task_data(task, j, job_free);
  g_task_run_in_thread(task, work);
  g_object_unref(task);
}

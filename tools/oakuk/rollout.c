/* `oakuk apply`'s rolling update (docs/cli.md "apply"): the instances of a service that run another
 * revision than its current one are replaced one at a time. Each replacement is deployed and must
 * be running and ready before the instance it replaces is deleted, so a service that had a ready
 * instance never has none. When a replacement fails or is not ready in time it is deleted, the
 * revision the replaced instance ran is made current again (POST .../rollback), and the instances
 * already replaced are rolled back the same way. */
#include "client.h"

#include <string.h>

#define POLL_MS 300

typedef struct {
  gint64 number, revision;
} Behind;

static JsonObject *get_service(OakClient *cl, const char *sid, int *rc) {
  g_autofree char *path = g_strdup_printf("/api/v1/services/%s", sid);
  g_autoptr(JsonNode) n = oak_request(cl, "GET", path, NULL, NULL, rc);
  JsonObject *o = oak_object_of(n);
  if (n != NULL && o == NULL) {
    fprintf(stderr, "oakuk apply: the root's answer for service %s is not an object\n", sid);
    *rc = OAKUK_CLI_FAILED;
  }
  return o ? json_object_ref(o) : NULL;
}

/* The live instances of service that run another revision than current, by number. */
static GArray *behind(JsonObject *service, gint64 current) {
  GArray *out = g_array_new(FALSE, FALSE, sizeof(Behind));
  JsonArray *list = oak_array_member(service, "instance_list");
  for (guint i = 0; list != NULL && i < json_array_get_length(list); i++) {
    JsonObject *in = json_array_get_object_element(list, i);
    Behind b = {oak_int(in, "instance_number", -1), oak_int(in, "revision", 1)};
    if (in != NULL && !oak_instance_leaving(in) && b.number >= 0 && b.revision != current)
      g_array_append_val(out, b);
  }
  return out;
}

/* A failure the root has already answered by trying another cluster: the refusal it keeps for the
 * cluster where the instance failed ("FAILED: detail"), or NULL. */
static const char *failed_on_a_cluster(JsonObject *in) {
  JsonNode *n = json_object_get_member(in, "cluster_refusals");
  if (n == NULL || !JSON_NODE_HOLDS_OBJECT(n))
    return NULL;
  g_autoptr(GList) members = json_object_get_members(json_node_get_object(n));
  for (GList *m = members; m != NULL; m = m->next) {
    const char *reason = oak_str(json_node_get_object(n), m->data, "");
    if (g_str_has_prefix(reason, "FAILED"))
      return reason;
  }
  return NULL;
}

/* Why the rollout does not wait for in any longer, or NULL: it failed (where it is or on a cluster
 * that gave up on it), or no node can run it at all. Capacity refusals are retried by the root, so
 * they are waited out until the timeout. */
static char *hopeless(JsonObject *in) {
  int32_t s = oakuk_instance_status_from_name(oak_str(in, "status", ""));
  const char *detail = oak_str(in, "status_detail", "");
  if (s == OAKUK_STATUS_FAILED || s == OAKUK_STATUS_DEAD || s == OAKUK_STATUS_NO_QUALIFIED_WORKER)
    return g_strdup_printf("%s%s%s", oak_str(in, "status", "?"), *detail ? ": " : "", detail);
  const char *failed = failed_on_a_cluster(in);
  return failed ? g_strdup(failed) : NULL;
}

static char *describe(JsonObject *in) {
  const char *status = oak_str(in, "status", "?"), *detail = oak_str(in, "status_detail", "");
  return g_strdup_printf("%s%s%s%s", status, strcmp(status, "RUNNING") == 0 ? " (not ready)" : "",
                         *detail ? ": " : "", detail);
}

/* Polls instance n of sid until it is up; NULL then, else why it will not be (a new string). */
static char *wait_up(OakClient *cl, const char *sid, gint64 n, gint64 timeout_s, double *took) {
  gint64 start = g_get_monotonic_time();
  while (TRUE) {
    int rc = OAKUK_CLI_FAILED;
    g_autoptr(JsonObject) in = oak_fetch_instance(cl, sid, n, &rc);
    if (in == NULL && rc != 0)
      return g_strdup("the root did not answer");
    *took = (double)(g_get_monotonic_time() - start) / G_USEC_PER_SEC;
    if (in == NULL || oak_instance_leaving(in))
      return g_strdup_printf("instance %" G_GINT64_FORMAT " was removed by someone else", n);
    if (oak_instance_up(in))
      return NULL;
    char *lost = hopeless(in);
    if (lost != NULL)
      return lost;
    g_autofree char *now = describe(in);
    if (*took >= (double)timeout_s)
      return g_strdup_printf("not ready after %" G_GINT64_FORMAT " s (--timeout): %s", timeout_s, now);
    if (!oak_nap(POLL_MS))
      return g_strdup("interrupted");
  }
}

static gboolean delete_instance(OakClient *cl, const char *sid, gint64 n) {
  int rc = OAKUK_CLI_FAILED;
  g_autofree char *path = g_strdup_printf("/api/v1/services/%s/instances/%" G_GINT64_FORMAT, sid, n);
  g_autoptr(JsonNode) r = oak_request(cl, "DELETE", path, NULL, NULL, &rc);
  return r != NULL;
}

/* Replaces old with a new instance of the current revision; NULL when done, else why not. */
static char *replace_one(OakClient *cl, const char *sid, const char *job, const Behind *old, gint64 current,
                         gint64 timeout_s, JsonArray *replaced) {
  int rc = OAKUK_CLI_FAILED;
  g_autofree char *path = g_strdup_printf("/api/v1/services/%s/instances", sid);
  g_autoptr(JsonNode) made = oak_request(cl, "POST", path, "{}", NULL, &rc);
  gint64 n = oak_int(oak_object_of(made), "instance_number", -1);
  if (n < 0)
    return g_strdup("the root did not create a replacement instance");
  if (!cl->json) {
    printf("  %s: instance %" G_GINT64_FORMAT " (revision %" G_GINT64_FORMAT ") deployed to replace instance "
           "%" G_GINT64_FORMAT " (revision %" G_GINT64_FORMAT ")\n",
           job, n, current, old->number, old->revision);
    fflush(stdout);
  }
  double took = 0;
  g_autofree char *why = wait_up(cl, sid, n, timeout_s, &took);
  if (why != NULL) {
    if (strcmp(why, "interrupted") == 0) {
      fprintf(stderr,
              "oakuk apply: interrupted: instance %" G_GINT64_FORMAT
              " keeps deploying and instance %" G_GINT64_FORMAT
              " keeps running; `oakuk apply` again continues the rollout\n",
              n, old->number);
      return g_steal_pointer(&why);
    }
    if (!delete_instance(cl, sid, n))
      fprintf(stderr, "oakuk apply: %s: could not delete the failed instance %" G_GINT64_FORMAT "\n", job, n);
    return g_strdup_printf("instance %" G_GINT64_FORMAT ": %s", n, why);
  }
  if (!delete_instance(cl, sid, old->number))
    return g_strdup_printf("instance %" G_GINT64_FORMAT " is ready but instance %" G_GINT64_FORMAT
                           " could not be deleted",
                           n, old->number);
  JsonObject *r = json_object_new();
  json_object_set_int_member(r, "old", old->number);
  json_object_set_int_member(r, "new", n);
  json_object_set_int_member(r, "ready_after_ms", (gint64)(took * 1000));
  json_array_add_object_element(replaced, r);
  if (!cl->json) {
    printf("  %s: instance %" G_GINT64_FORMAT " ready after %.1f s; instance %" G_GINT64_FORMAT " deleted\n",
           job, n, took, old->number);
    fflush(stdout);
  }
  return NULL;
}

/* Replaces every instance behind the current revision; NULL when done, else why not (with *failed,
 * the instance that was being replaced). */
static char *roll(OakClient *cl, const char *sid, const char *job, gint64 timeout_s, JsonArray *replaced,
                  Behind *failed, gint64 *current) {
  int rc = OAKUK_CLI_FAILED;
  g_autoptr(JsonObject) service = get_service(cl, sid, &rc);
  if (service == NULL)
    return g_strdup("the root did not answer with the service");
  *current = oak_int(service, "revision", 1);
  g_autoptr(GArray) old = behind(service, *current);
  for (guint i = 0; i < old->len; i++) {
    Behind *b = &g_array_index(old, Behind, i);
    char *why = replace_one(cl, sid, job, b, *current, timeout_s, replaced);
    if (why != NULL) {
      *failed = *b;
      return why;
    }
  }
  return NULL;
}

static gboolean make_current(OakClient *cl, const char *sid, gint64 revision) {
  int rc = OAKUK_CLI_FAILED;
  g_autofree char *path = g_strdup_printf("/api/v1/services/%s/rollback", sid);
  g_autofree char *body = g_strdup_printf("{\"revision\": %" G_GINT64_FORMAT "}", revision);
  g_autoptr(JsonNode) r = oak_request(cl, "POST", path, body, NULL, &rc);
  return r != NULL;
}

int oak_rollout(OakClient *cl, const char *sid, const char *job, gint64 timeout_s, JsonObject *report) {
  oak_catch_interrupts();
  JsonArray *replaced = json_array_new();
  json_object_set_array_member(report, "replaced", replaced);
  Behind failed = {0};
  gint64 target = 0;
  g_autofree char *why = roll(cl, sid, job, timeout_s, replaced, &failed, &target);
  if (why == NULL)
    return OAKUK_CLI_OK;
  json_object_set_string_member(report, "error", why);
  fprintf(stderr, "oakuk apply: %s: the rollout to revision %" G_GINT64_FORMAT " failed: %s\n", job, target,
          why);
  if (strcmp(why, "interrupted") == 0 || failed.revision == 0) /* 0: no instance was being replaced */
    return OAKUK_CLI_FAILED;
  /* Back to what the instance being replaced ran; the replaced ones then run a revision that is no
   * longer current and are rolled back like any others. */
  if (!make_current(cl, sid, failed.revision)) {
    fprintf(stderr, "oakuk apply: %s: could not make revision %" G_GINT64_FORMAT " current again\n", job,
            failed.revision);
    return OAKUK_CLI_FAILED;
  }
  json_object_set_int_member(report, "rolled_back_to", failed.revision);
  if (!cl->json)
    printf("  %s: rolled back: revision %" G_GINT64_FORMAT " is current again\n", job, failed.revision);
  JsonArray *back = json_array_new();
  json_object_set_array_member(report, "rolled_back", back);
  Behind again = {0};
  g_autofree char *why_back = roll(cl, sid, job, timeout_s, back, &again, &target);
  if (why_back != NULL) {
    json_object_set_string_member(report, "rollback_error", why_back);
    fprintf(stderr, "oakuk apply: %s: the rollback to revision %" G_GINT64_FORMAT " failed too: %s\n", job,
            failed.revision, why_back);
  }
  return OAKUK_CLI_FAILED;
}

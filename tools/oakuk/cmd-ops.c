/* Day-2 commands with kubectl's and nomad's habits: delete, scale, version and context; the
 * completion script is generated from the command table and each command's own --help. */
#include "client.h"

#include <oakuk/oakuk.h>

#include <stdio.h>
#include <string.h>

#define NO_ENTRY                                                                                             \
  { NULL, 0, 0, 0, NULL, NULL, NULL }
#define SCALE_MAX 1000

/* ---- delete ---- */

/* Finds an application by id, name.namespace or unique name: a new reference, or NULL after
 * printing why (*rc set). */
static JsonObject *find_application(OakClient *cl, const char *what, int *rc) {
  g_autoptr(JsonNode) all = oak_request(cl, "GET", "/api/v1/applications", NULL, NULL, rc);
  if (all == NULL)
    return NULL;
  if (!JSON_NODE_HOLDS_ARRAY(all)) {
    fprintf(stderr, "%s: GET /api/v1/applications: expected a list\n", cl->cmd);
    *rc = OAKUK_CLI_FAILED;
    return NULL;
  }
  JsonArray *list = json_node_get_array(all);
  g_autoptr(GPtrArray) by_name = g_ptr_array_new();
  for (guint i = 0; i < json_array_get_length(list); i++) {
    JsonObject *a = json_array_get_object_element(list, i);
    if (a == NULL)
      continue;
    g_autofree char *full =
        g_strdup_printf("%s.%s", oak_str(a, "application_name", ""), oak_str(a, "application_namespace", ""));
    if (g_strcmp0(oak_str(a, "applicationID", NULL), what) == 0 || strcmp(full, what) == 0)
      return json_object_ref(a);
    if (g_strcmp0(oak_str(a, "application_name", NULL), what) == 0)
      g_ptr_array_add(by_name, a);
  }
  if (by_name->len == 1)
    return json_object_ref(by_name->pdata[0]);
  if (by_name->len > 1) {
    fprintf(stderr, "%s: application name \"%s\" is ambiguous; use one of:", cl->cmd, what);
    for (guint i = 0; i < by_name->len; i++)
      fprintf(stderr, " %s.%s", oak_str(by_name->pdata[i], "application_name", "?"),
              oak_str(by_name->pdata[i], "application_namespace", "?"));
    fprintf(stderr, "\n");
    *rc = OAKUK_CLI_USAGE;
    return NULL;
  }
  fprintf(stderr, "%s: no application \"%s\" (give its id, name.namespace or its name)\n", cl->cmd, what);
  *rc = OAKUK_CLI_NOT_FOUND;
  return NULL;
}

typedef struct {
  const char *kind; /* "application" or "service" */
  char *id, *name;
  guint parts; /* services of an application, instances of a service */
} Doomed;

static void doomed_clear(gpointer p) {
  Doomed *d = p;
  g_free(d->id);
  g_free(d->name);
}

static gboolean resolve_doomed(OakClient *cl, gboolean app, const char *what, GArray *out, int *rc) {
  Doomed d = {app ? "application" : "service", NULL, NULL, 0};
  if (app) {
    g_autoptr(JsonObject) a = find_application(cl, what, rc);
    if (a == NULL)
      return FALSE;
    d.id = g_strdup(oak_str(a, "applicationID", ""));
    d.name =
        g_strdup_printf("%s.%s", oak_str(a, "application_name", ""), oak_str(a, "application_namespace", ""));
    JsonArray *svcs = oak_array_member(a, "microservices");
    d.parts = svcs ? json_array_get_length(svcs) : 0;
  } else {
    g_autoptr(JsonObject) s = oak_find_service(cl, what, rc);
    if (s == NULL)
      return FALSE;
    d.id = g_strdup(oak_service_id(s));
    d.name = g_strdup(oak_str(s, "job_name", ""));
    JsonArray *insts = oak_array_member(s, "instance_list");
    for (guint i = 0; insts != NULL && i < json_array_get_length(insts); i++)
      if (g_strcmp0(oak_str(json_array_get_object_element(insts, i), "status", ""), "UNDEPLOYED") != 0)
        d.parts++;
  }
  for (guint i = 0; i < out->len; i++)
    if (strcmp(g_array_index(out, Doomed, i).id, d.id) == 0) {
      doomed_clear(&d); /* named twice: deleted once */
      return TRUE;
    }
  g_array_append_val(out, d);
  return TRUE;
}

static void print_deleted(Doomed *d) {
  if (strcmp(d->kind, "application") == 0)
    printf("application %s (%s) deleted with its %u service%s; their instances are being undeployed\n",
           d->name, d->id, d->parts, d->parts == 1 ? "" : "s");
  else
    printf("service %s (%s) deleted; its %u instance%s %s being undeployed\n", d->name, d->id, d->parts,
           d->parts == 1 ? "" : "s", d->parts == 1 ? "is" : "are");
}

int oakuk_cmd_delete(int argc, char **argv) {
  g_autofree char *url = NULL;
  gboolean json = FALSE;
  GOptionEntry entries[] = {OAKUK_CLIENT_OPTIONS(url, json), NO_ENTRY};
  if (!oak_parse("delete", "app|service NAME|ID...",
                 "Delete applications (with their services) or services, undeploying their instances. Every "
                 "NAME is looked up first: when one is unknown, nothing is deleted.",
                 entries, &argc, &argv))
    return OAKUK_CLI_USAGE;
  const char *kind = argc >= 2 ? argv[1] : "";
  gboolean app = strcmp(kind, "app") == 0 || strcmp(kind, "application") == 0;
  gboolean svc = strcmp(kind, "service") == 0 || strcmp(kind, "svc") == 0;
  if (argc < 3 || (!app && !svc)) {
    fprintf(stderr, "oakuk delete: %s\n",
            argc >= 2 && !app && !svc ? "expected app or service, then one or more names or ids"
                                      : "expected app|service and one or more NAME|ID");
    return OAKUK_CLI_USAGE;
  }
  int rc = OAKUK_CLI_FAILED;
  g_autoptr(OakClient) cl = oak_client_new("delete", url, json, TRUE, &rc);
  if (cl == NULL)
    return rc;
  g_autoptr(GArray) doomed = g_array_new(FALSE, TRUE, sizeof(Doomed));
  g_array_set_clear_func(doomed, doomed_clear);
  for (int i = 2; i < argc; i++)
    if (!resolve_doomed(cl, app, argv[i], doomed, &rc))
      return rc;
  g_autoptr(JsonArray) done = json_array_new();
  for (guint i = 0; i < doomed->len; i++) {
    Doomed *d = &g_array_index(doomed, Doomed, i);
    g_autofree char *path = g_strdup_printf("/api/v1/%s/%s", app ? "applications" : "services", d->id);
    g_autoptr(JsonNode) answer = oak_request(cl, "DELETE", path, NULL, NULL, &rc);
    if (answer == NULL)
      return rc;
    if (!json)
      print_deleted(d);
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "kind", d->kind);
    json_object_set_string_member(o, "id", d->id);
    json_object_set_string_member(o, "name", d->name);
    json_array_add_object_element(done, o);
  }
  if (json)
    oak_print_json_list("deleted", done);
  return OAKUK_CLI_OK;
}

/* ---- scale ---- */

static gboolean instance_failed(JsonObject *in) {
  int32_t s = oakuk_instance_status_from_name(oak_str(in, "status", ""));
  return s == OAKUK_STATUS_FAILED || s == OAKUK_STATUS_DEAD || s == OAKUK_STATUS_NO_ACTIVE_CLUSTER ||
         s == OAKUK_STATUS_NO_QUALIFIED_WORKER || s == OAKUK_STATUS_NO_WORKER_CAPACITY;
}

/* Which instances go first: those not up, then the newest (as a ReplicaSet scales down). */
static gint removal_order(gconstpointer a, gconstpointer b) {
  JsonObject *x = *(JsonObject *const *)a, *y = *(JsonObject *const *)b;
  if (oak_instance_up(x) != oak_instance_up(y))
    return oak_instance_up(x) ? 1 : -1;
  gint64 nx = oak_int(x, "instance_number", 0), ny = oak_int(y, "instance_number", 0);
  return nx < ny ? 1 : nx > ny ? -1 : 0;
}

static gboolean parse_count(const char *text, gint64 *n) {
  if (g_ascii_string_to_signed(text, 10, 0, SCALE_MAX, n, NULL))
    return TRUE;
  fprintf(stderr, "oakuk scale: N \"%s\" is not a number of instances from 0 to %d\n", text, SCALE_MAX);
  return FALSE;
}

/* Deploys or undeploys instances of service until it has want; their numbers go to added/dropped. */
static int scale_to(OakClient *cl, JsonObject *service, gint64 want, GArray *added, GArray *dropped) {
  int rc = OAKUK_CLI_FAILED;
  const char *sid = oak_service_id(service);
  JsonArray *list = oak_array_member(service, "instance_list");
  g_autoptr(GPtrArray) live = g_ptr_array_new();
  for (guint i = 0; list != NULL && i < json_array_get_length(list); i++) {
    JsonObject *in = json_array_get_object_element(list, i);
    if (in != NULL && !oak_instance_leaving(in))
      g_ptr_array_add(live, in);
  }
  g_autofree char *path = g_strdup_printf("/api/v1/services/%s/instances", sid);
  for (gint64 have = live->len; have < want; have++) {
    g_autoptr(JsonNode) n = oak_request(cl, "POST", path, "{}", NULL, &rc);
    if (n == NULL)
      return rc;
    gint64 num = oak_int(oak_object_of(n), "instance_number", -1);
    g_array_append_val(added, num);
  }
  g_ptr_array_sort(live, removal_order);
  for (guint i = 0; (gint64)live->len - (gint64)i > want; i++) {
    gint64 num = oak_int(live->pdata[i], "instance_number", 0);
    g_autofree char *one = g_strdup_printf("%s/%" G_GINT64_FORMAT, path, num);
    g_autoptr(JsonNode) n = oak_request(cl, "DELETE", one, NULL, NULL, &rc);
    if (n == NULL)
      return rc;
    g_array_append_val(dropped, num);
  }
  return OAKUK_CLI_OK;
}

static char *numbers_text(GArray *nums) {
  GString *s = g_string_new(NULL);
  for (guint i = 0; i < nums->len; i++)
    g_string_append_printf(s, "%s%" G_GINT64_FORMAT, i ? ", " : "", g_array_index(nums, gint64, i));
  return g_string_free(s, FALSE);
}

/* Polls every 0.5 s until want instances are up and the removed ones are gone; one line per change. */
static int scale_wait(OakClient *cl, JsonObject *service, gint64 want, gint64 timeout_s) {
  oak_catch_interrupts();
  gint64 start = g_get_monotonic_time();
  g_autofree char *path = g_strdup_printf("/api/v1/services/%s/instances", oak_service_id(service));
  g_autofree char *last = NULL;
  while (TRUE) {
    int rc = OAKUK_CLI_FAILED;
    g_autoptr(JsonNode) n = oak_request(cl, "GET", path, NULL, NULL, &rc);
    if (n == NULL)
      return rc;
    JsonArray *list = JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n) : NULL;
    guint live = 0, up = 0, leaving = 0;
    g_autoptr(GString) pending = g_string_new(NULL); /* "; 3 CREATING, 4 RUNNING (not ready)" */
    for (guint i = 0; list != NULL && i < json_array_get_length(list); i++) {
      JsonObject *in = json_array_get_object_element(list, i);
      if (oak_instance_leaving(in)) {
        leaving++;
        continue;
      }
      live++;
      up += oak_instance_up(in);
      const char *status = oak_str(in, "status", "?");
      if (!oak_instance_up(in))
        g_string_append_printf(pending, "%s%" G_GINT64_FORMAT " %s%s", pending->len ? ", " : "; ",
                               oak_int(in, "instance_number", 0), status,
                               strcmp(status, "RUNNING") == 0 ? " (not ready)" : "");
      if (instance_failed(in)) {
        const char *detail = oak_str(in, "status_detail", "");
        fprintf(stderr, "oakuk scale: instance %" G_GINT64_FORMAT " of %s: %s%s%s\n",
                oak_int(in, "instance_number", 0), oak_str(service, "job_name", "?"),
                oak_str(in, "status", "?"), *detail ? ": " : "", detail);
        return OAKUK_CLI_FAILED;
      }
    }
    double t = (double)(g_get_monotonic_time() - start) / G_USEC_PER_SEC;
    g_autofree char *gone = leaving ? g_strdup_printf(", %u being removed", leaving) : g_strdup("");
    g_autofree char *now =
        g_strdup_printf("%u/%" G_GINT64_FORMAT " running and ready%s%s", up, want, gone, pending->str);
    if (g_strcmp0(now, last) != 0 && !cl->json) {
      printf("[%6.1fs] %s\n", t, now);
      fflush(stdout);
    }
    g_free(last);
    last = g_steal_pointer(&now);
    if (up == want && live == want && leaving == 0)
      return OAKUK_CLI_OK;
    if (t >= (double)timeout_s) {
      fprintf(stderr, "oakuk scale: timed out after %" G_GINT64_FORMAT " s: %s\n", timeout_s, last);
      return OAKUK_CLI_FAILED;
    }
    if (!oak_nap(500)) {
      fprintf(stderr, "oakuk scale: interrupted; the instances keep changing (%s)\n", last);
      return OAKUK_CLI_FAILED;
    }
  }
}

static void print_scaled(OakClient *cl, JsonObject *service, gint64 want, GArray *added, GArray *dropped) {
  const char *job = oak_str(service, "job_name", "?");
  gint64 from = want - (gint64)added->len + (gint64)dropped->len;
  if (cl->json) {
    g_autoptr(JsonObject) o = json_object_new();
    json_object_set_string_member(o, "service", oak_service_id(service));
    json_object_set_string_member(o, "job_name", job);
    json_object_set_int_member(o, "from", from);
    json_object_set_int_member(o, "to", want);
    JsonArray *a = json_array_new(), *d = json_array_new();
    for (guint i = 0; i < added->len; i++)
      json_array_add_int_element(a, g_array_index(added, gint64, i));
    for (guint i = 0; i < dropped->len; i++)
      json_array_add_int_element(d, g_array_index(dropped, gint64, i));
    json_object_set_array_member(o, "deployed", a);
    json_object_set_array_member(o, "undeployed", d);
    g_autoptr(JsonNode) n = json_node_init_object(json_node_alloc(), o);
    oak_print_json(n);
    return;
  }
  g_autofree char *a = numbers_text(added), *d = numbers_text(dropped);
  if (added->len == 0 && dropped->len == 0)
    printf("%s has %" G_GINT64_FORMAT " instance%s already\n", job, want, want == 1 ? "" : "s");
  else if (added->len > 0)
    printf("%s: %" G_GINT64_FORMAT " -> %" G_GINT64_FORMAT " instances: deployed instance%s %s\n", job, from,
           want, added->len == 1 ? "" : "s", a);
  else
    printf("%s: %" G_GINT64_FORMAT " -> %" G_GINT64_FORMAT " instances: undeployed instance%s %s\n", job,
           from, want, dropped->len == 1 ? "" : "s", d);
}

int oakuk_cmd_scale(int argc, char **argv) {
  g_autofree char *url = NULL;
  gboolean json = FALSE, wait = FALSE;
  gint timeout = 300;
  GOptionEntry entries[] = {
      OAKUK_CLIENT_OPTIONS(url, json),
      {"wait", 'w', 0, G_OPTION_ARG_NONE, &wait,
       "Wait until N instances run and are ready and the removed ones are gone (exit 0), or one fails (exit "
       "1)",
       NULL},
      {"timeout", 0, 0, G_OPTION_ARG_INT, &timeout, "With --wait: give up after S seconds (default 300)",
       "S"},
      NO_ENTRY,
  };
  /* "-1" would read as an unknown option: say what is wrong with it instead. */
  for (int i = 1; i < argc; i++)
    if (argv[i][0] == '-' && g_ascii_isdigit(argv[i][1]) && strcmp(argv[i - 1], "--timeout") != 0) {
      fprintf(stderr, "oakuk scale: N \"%s\" is not a number of instances from 0 to %d\n", argv[i],
              SCALE_MAX);
      return OAKUK_CLI_USAGE;
    }
  if (!oak_parse(
          "scale", "SERVICE N",
          "Bring a service to N instances (0 to 1000) by deploying or undeploying instances; those not "
          "running and ready go first, then the newest.",
          entries, &argc, &argv))
    return OAKUK_CLI_USAGE;
  gint64 want = 0;
  if (argc != 3 || timeout <= 0) {
    fprintf(stderr, "oakuk scale: %s\n", timeout <= 0 ? "--timeout must be positive" : "SERVICE N expected");
    return OAKUK_CLI_USAGE;
  }
  if (!parse_count(argv[2], &want))
    return OAKUK_CLI_USAGE;
  int rc = OAKUK_CLI_FAILED;
  g_autoptr(OakClient) cl = NULL;
  g_autoptr(JsonObject) service = oak_client_service("scale", url, json, argv[1], &cl, &rc);
  if (service == NULL)
    return rc;
  g_autoptr(GArray) added = g_array_new(FALSE, FALSE, sizeof(gint64));
  g_autoptr(GArray) dropped = g_array_new(FALSE, FALSE, sizeof(gint64));
  rc = scale_to(cl, service, want, added, dropped);
  if (rc != OAKUK_CLI_OK) {
    g_autofree char *a = numbers_text(added), *d = numbers_text(dropped);
    if (added->len + dropped->len > 0)
      fprintf(stderr, "oakuk scale: stopped after deploying [%s] and undeploying [%s]\n", a, d);
    return rc;
  }
  if (!json)
    print_scaled(cl, service, want, added, dropped);
  if (wait)
    rc = scale_wait(cl, service, want, timeout);
  if (json)
    print_scaled(cl, service, want, added, dropped);
  return rc;
}

/* ---- version ---- */

/* The root's version from /healthz, or NULL with *why (not logged in) or *rc (unreachable) set. */
static char *server_version(OakClient *cl, char **why, int *rc) {
  gboolean https = g_ascii_strncasecmp(cl->url, "https:", 6) == 0;
  if (cl->token == NULL || !*cl->token || (https ? !cl->ca_stored : !cl->insecure)) {
    *why = g_strdup_printf("not logged in to %s", cl->url);
    return NULL;
  }
  g_autoptr(JsonNode) n = oak_request_anon(cl, "GET", "/healthz", NULL, NULL, rc);
  const char *v = oak_str(oak_object_of(n), "version", NULL);
  if (n != NULL && v == NULL) {
    fprintf(stderr, "oakuk version: the root's /healthz has no version\n");
    *rc = OAKUK_CLI_FAILED;
  }
  *why = g_strdup(*rc == OAKUK_CLI_UNREACHABLE ? "the root could not be reached" : "the root did not say");
  return g_strdup(v);
}

int oakuk_cmd_version(int argc, char **argv) {
  g_autofree char *url = NULL, *output = NULL;
  gboolean json = FALSE, client_only = FALSE;
  GOptionEntry entries[] = {
      OAKUK_CLIENT_OPTIONS(url, json),
      OAKUK_OUTPUT_OPTION(output),
      {"client", 0, 0, G_OPTION_ARG_NONE, &client_only, "The client's version only (no request)", NULL},
      NO_ENTRY,
  };
  if (!oak_parse("version", "", "Print the client's version and the root's (from its /healthz).", entries,
                 &argc, &argv))
    return OAKUK_CLI_USAGE;
  OakOutput format;
  if (!oak_output_parse("version", output, json, &format))
    return OAKUK_CLI_USAGE;
  if (argc != 1) {
    fprintf(stderr, "oakuk version: no positional arguments expected\n");
    return OAKUK_CLI_USAGE;
  }
  int rc = OAKUK_CLI_OK;
  g_autoptr(OakClient) cl = client_only ? NULL : oak_client_new("version", url, json, FALSE, &rc);
  if (!client_only && cl == NULL)
    return rc;
  g_autofree char *why = NULL;
  g_autofree char *server = cl ? server_version(cl, &why, &rc) : NULL;
  if (format == OAK_OUTPUT_JSON || format == OAK_OUTPUT_YAML) {
    g_autoptr(JsonObject) o = json_object_new();
    JsonObject *c = json_object_new();
    json_object_set_string_member(c, "version", OAKUK_CLI_VERSION);
    json_object_set_object_member(o, "client", c);
    if (server != NULL) {
      JsonObject *s = json_object_new();
      json_object_set_string_member(s, "version", server);
      json_object_set_string_member(s, "url", cl->url);
      json_object_set_string_member(s, "context", cl->context ? cl->context : "");
      json_object_set_object_member(o, "server", s);
    } else if (!client_only) {
      json_object_set_null_member(o, "server");
      json_object_set_string_member(o, "server_unknown", why);
    }
    g_autoptr(JsonNode) n = json_node_init_object(json_node_alloc(), o);
    oak_print_as(format, n);
    return rc;
  }
  printf("Client: oakuk %s\n", OAKUK_CLI_VERSION);
  if (server != NULL)
    printf("Server: oakuk-root %s at %s\n", server, cl->url);
  else if (!client_only)
    printf("Server: unknown (%s)\n", why);
  return rc;
}

/* ---- context ---- */

static JsonObject *contexts_of(JsonObject *config) {
  JsonNode *n = json_object_get_member(config, "contexts");
  return oak_object_of(n);
}

static int context_list(JsonObject *config, const char *output) {
  gboolean names = g_strcmp0(output, "name") == 0;
  OakOutput format = OAK_OUTPUT_TABLE;
  if (!names && !oak_output_parse("context list", output, FALSE, &format))
    return OAKUK_CLI_USAGE;
  JsonObject *all = contexts_of(config);
  const char *current = oak_str(config, "current", "");
  g_autoptr(GList) keys = all ? json_object_get_members(all) : NULL;
  keys = g_list_sort(keys, (GCompareFunc)strcmp);
  g_autoptr(JsonArray) rows = json_array_new();
  for (GList *l = keys; l != NULL; l = l->next) {
    JsonObject *c = oak_object_of(json_object_get_member(all, l->data));
    JsonObject *r = json_object_new();
    json_object_set_string_member(r, "name", l->data);
    json_object_set_string_member(r, "url", oak_str(c, "url", ""));
    json_object_set_string_member(r, "username", oak_str(c, "username", ""));
    json_object_set_boolean_member(r, "current", strcmp(l->data, current) == 0);
    json_object_set_boolean_member(r, "insecure", oak_bool(c, "insecure", FALSE));
    json_array_add_object_element(rows, r);
  }
  if (names) {
    for (GList *l = keys; l != NULL; l = l->next)
      printf("%s\n", (char *)l->data);
    return OAKUK_CLI_OK;
  }
  if (format == OAK_OUTPUT_JSON || format == OAK_OUTPUT_YAML) {
    g_autoptr(JsonNode) n = json_node_init_array(json_node_alloc(), rows);
    oak_print_as(format, n);
    return OAKUK_CLI_OK;
  }
  static const char *const headers[] = {"CURRENT", "NAME", "URL", "USER", NULL};
  static const char *const wide_headers[] = {"CURRENT", "NAME", "URL", "USER", "CA", NULL};
  g_autoptr(OakTable) t = oak_table_new(format == OAK_OUTPUT_WIDE ? wide_headers : headers);
  for (guint i = 0; i < json_array_get_length(rows); i++) {
    JsonObject *r = json_array_get_object_element(rows, i);
    g_autofree char *ca =
        oak_bool(r, "insecure", FALSE) ? g_strdup("(plain http)") : oak_ca_path(oak_str(r, "url", ""));
    const char *cells[] = {oak_bool(r, "current", FALSE) ? "*" : "", oak_str(r, "name", ""),
                           oak_str(r, "url", ""), oak_str(r, "username", ""), ca};
    oak_table_add(t, cells);
  }
  oak_table_print(t, stdout);
  return OAKUK_CLI_OK;
}

static int context_use(JsonObject *config, const char *path, const char *name) {
  JsonObject *all = contexts_of(config);
  JsonObject *c = all ? oak_object_of(json_object_get_member(all, name)) : NULL;
  if (c == NULL) {
    fprintf(stderr, "oakuk context use: no context \"%s\" (oakuk context list shows them)\n", name);
    return OAKUK_CLI_NOT_FOUND;
  }
  json_object_set_string_member(config, "current", name);
  g_autoptr(GError) error = NULL;
  if (!oak_config_save(path, config, &error)) {
    fprintf(stderr, "oakuk context use: %s\n", error->message);
    return OAKUK_CLI_FAILED;
  }
  printf("switched to context %s (%s)\n", name, oak_str(c, "url", ""));
  return OAKUK_CLI_OK;
}

/* Forgets a context and its credentials; the root's pinned CA stays (as ssh's known hosts do), so
 * a later login there still checks the root is the same. */
static int context_remove(JsonObject *config, const char *path, const char *name) {
  JsonObject *all = contexts_of(config);
  if (all == NULL || !json_object_has_member(all, name)) {
    fprintf(stderr, "oakuk context remove: no context \"%s\" (oakuk context list shows them)\n", name);
    return OAKUK_CLI_NOT_FOUND;
  }
  json_object_remove_member(all, name);
  gboolean was_current = g_strcmp0(oak_str(config, "current", NULL), name) == 0;
  if (was_current)
    json_object_remove_member(config, "current");
  g_autoptr(GError) error = NULL;
  if (!oak_config_save(path, config, &error)) {
    fprintf(stderr, "oakuk context remove: %s\n", error->message);
    return OAKUK_CLI_FAILED;
  }
  printf("removed context %s%s\n", name, was_current ? " (there is no current context now)" : "");
  return OAKUK_CLI_OK;
}

int oakuk_cmd_context(int argc, char **argv) {
  g_autofree char *output = NULL;
  GOptionEntry entries[] = {
      {"output", 'o', 0, G_OPTION_ARG_STRING, &output, "list: output format json, yaml, wide or name",
       "FORMAT"},
      {"context", 0, 0, G_OPTION_ARG_STRING, &oak_context_option, "current: as if NAME were the current one",
       "NAME"},
      NO_ENTRY,
  };
  if (!oak_parse(
          "context", "list | use NAME | current | remove NAME",
          "The roots logged in to, one context each (oakuk login names it host:port or --context NAME): "
          "list them, make one the current one, print the current one's name ($OAKUK_CONTEXT or "
          "--context choose one for a single command), or forget one and its credentials.",
          entries, &argc, &argv))
    return OAKUK_CLI_USAGE;
  const char *verb = argc >= 2 ? argv[1] : "";
  gboolean ok = (strcmp(verb, "list") == 0 && argc == 2) || (strcmp(verb, "use") == 0 && argc == 3) ||
                (strcmp(verb, "current") == 0 && argc == 2) || (strcmp(verb, "remove") == 0 && argc == 3);
  if (!ok || (output != NULL && strcmp(verb, "list") != 0)) {
    fprintf(stderr, "oakuk context: %s\n",
            ok ? "-o goes with list only" : "expected list [-o FORMAT], use NAME, current, or remove NAME");
    return OAKUK_CLI_USAGE;
  }
  g_autofree char *path = oak_config_path();
  g_autoptr(JsonObject) config = oak_config_load(path, "oakuk context");
  if (config == NULL)
    return OAKUK_CLI_FAILED;
  if (strcmp(verb, "list") == 0)
    return context_list(config, output);
  if (strcmp(verb, "use") == 0)
    return context_use(config, path, argv[2]);
  if (strcmp(verb, "remove") == 0)
    return context_remove(config, path, argv[2]);
  const char *sel = oak_context_selected();
  const char *name = sel ? sel : oak_str(config, "current", NULL);
  JsonObject *all = contexts_of(config);
  if (name == NULL || all == NULL || !json_object_has_member(all, name)) {
    if (name == NULL)
      fprintf(stderr, "oakuk context current: no current context (run oakuk login)\n");
    else
      fprintf(stderr, "oakuk context current: no context \"%s\" (oakuk context list shows them)\n", name);
    return name == NULL ? OAKUK_CLI_AUTH : OAKUK_CLI_NOT_FOUND;
  }
  printf("%s\n", name);
  return OAKUK_CLI_OK;
}

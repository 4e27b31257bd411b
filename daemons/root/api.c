/* The root's user API: Oakestra-compatible endpoints, the native /api/v1/ API, /healthz and
 * /metrics, and the router that also serves the cluster-facing routes (cluster-api.c). Handlers
 * check input, call the loop for changes and views.c for documents; they decide nothing. */
#include "api.h"
#include "events.h"
#include "resolve.h"

#include "link.h"
#include "pki.h"
#include "store.h"
#include "views.h"

#include <string.h>

/* ---- helpers ---- */

const char *api_str(JsonObject *o, const char *key) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  return n != NULL && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
             ? json_node_get_string(n)
             : NULL;
}

void api_reply_object(Req *q, guint status, JsonObject *o) {
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), o);
  od_http_reply_json(q->msg, status, node);
}

static void reply_array(Req *q, guint status, JsonArray *a) {
  g_autoptr(JsonNode) node = json_node_init_array(json_node_alloc(), a);
  od_http_reply_json(q->msg, status, node);
}

/* A list of applications or services: on Oakestra's paths a JSON string holding it, as Oakestra
 * answers them (its clients call json.loads(r.json())); on ours the list. */
static void reply_list(Req *q, JsonArray *a) {
  if (!q->compat) {
    reply_array(q, SOUP_STATUS_OK, a);
    return;
  }
  g_autoptr(JsonNode) node = json_node_init_array(json_node_alloc(), a);
  od_http_reply_json_string(q->msg, SOUP_STATUS_OK, node);
}

void api_reply_message(Req *q, guint status, const char *message) {
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "message", message);
  api_reply_object(q, status, o);
}

void api_reply_internal(Req *q, GError *error) {
  od_log(G_LOG_LEVEL_WARNING, "http", "path", q->path, "msg", error ? error->message : "unknown", NULL);
  od_http_reply_error(q->msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, "internal", q->path, "%s",
                      error ? error->message : "internal error");
}

static void reply_not_found(Req *q, const char *what, const char *id) {
  od_http_reply_error(q->msg, SOUP_STATUS_NOT_FOUND, "not_found", q->path, "%s %s not found", what, id);
}

gboolean api_body_empty(Req *q) {
  return soup_server_message_get_request_body(q->msg)->length == 0;
}

JsonObject *api_body_object(Req *q, gboolean optional) {
  if (optional && api_body_empty(q))
    return json_object_new();
  g_autoptr(JsonNode) node = od_http_read_json(q->msg);
  if (node == NULL)
    return NULL;
  if (!JSON_NODE_HOLDS_OBJECT(node)) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_json", "",
                        "request body: expected a JSON object");
    return NULL;
  }
  return json_object_ref(json_node_get_object(node));
}

gboolean api_require_string(Req *q, JsonObject *o, const char *key, const char **out) {
  *out = api_str(o, key);
  if (*out == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", key, "%s: a string is required",
                        key);
    return FALSE;
  }
  return TRUE;
}

gboolean api_optional_int(Req *q, JsonObject *o, const char *key, gint64 min, gint64 max, gint64 def,
                          gint64 *out) {
  JsonNode *n = json_object_get_member(o, key);
  *out = def;
  if (n == NULL)
    return TRUE;
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64 ||
      json_node_get_int(n) < min || json_node_get_int(n) > max) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", key,
                        "%s: an integer in [%" G_GINT64_FORMAT ", %" G_GINT64_FORMAT "] is required", key,
                        min, max);
    return FALSE;
  }
  *out = json_node_get_int(n);
  return TRUE;
}

static gboolean parse_number(Req *q, const char *text, gint64 *n) {
  if (g_ascii_string_to_signed(text, 10, 0, G_MAXINT32, n, NULL))
    return TRUE;
  od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", q->path,
                      "instance number '%s' is not a non-negative integer", text);
  return FALSE;
}

static JsonObject *oid(const char *id) {
  JsonObject *o = json_object_new();
  json_object_set_string_member(o, "$oid", id);
  return o;
}

/* ---- health, metrics ---- */

static void h_healthz(Req *q) {
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "status", "ok");
  json_object_set_string_member(o, "version", OAKUK_ROOT_VERSION);
  json_object_set_boolean_member(o, "tls", !q->r->insecure);
  api_reply_object(q, SOUP_STATUS_OK, o);
}

static void h_metrics(Req *q) {
  Store *s = q->r->store;
  GString *out = g_string_new(NULL);
  od_metrics_build_info(out, "oakuk-root", OAKUK_ROOT_VERSION);
  od_metrics_process(out);
  od_metrics_value(out, "oakuk_root_applications", "gauge", "Applications registered",
                   store_application_count(s));
  od_metrics_value(out, "oakuk_root_services", "gauge", "Services registered", store_service_count(s));
  od_metrics_header(out, "oakuk_root_instances", "gauge", "Instances, by their last known status");
  g_autoptr(GPtrArray) counts = store_instance_status_counts(s);
  for (guint k = 0; k < counts->len; k++) {
    g_auto(GStrv) kv = g_strsplit(counts->pdata[k], "\t", 2);
    g_string_append_printf(out, "oakuk_root_instances{status=\"%s\"} %s\n", kv[0], kv[1]);
  }
  od_metrics_value(out, "oakuk_root_clusters", "gauge", "Clusters registered", store_cluster_count(s));
  od_metrics_value(out, "oakuk_root_clusters_active", "gauge", "Clusters that sent an aggregate in time",
                   loop_clusters_active(q->r->loop));
  od_metrics_value(out, "oakuk_root_forwards_pending", "gauge",
                   "Deploys and deletes not yet acknowledged by their cluster",
                   store_instance_count_deploy_pending(s) + store_delete_count(s));
  od_http_reply_metrics(q->msg, out, "oakuk_root", q->r->http_counts, q->r->http_durations);
}

/* ---- applications ---- */

/* An Application_Provider sees and changes its own applications; Admins and Infrastructure_Providers
 * see everyone's (and only Admins reach the routes that change them). */
static gboolean sees_all(Req *q) {
  return (q->role & (ROLE_ADMIN | ROLE_INFRASTRUCTURE)) != 0;
}

static gboolean may_see(Req *q, const char *owner) {
  return sees_all(q) || g_strcmp0(owner, q->user) == 0;
}

/* The applications the user created (the compatible API's answer to a new application). */
static JsonArray *user_applications(Req *q) {
  JsonArray *out = json_array_new();
  g_autoptr(GPtrArray) apps = store_applications_of_user(q->r->store, q->user);
  for (guint k = 0; k < apps->len; k++)
    json_array_add_object_element(out, view_application(apps->pdata[k]));
  return out;
}

/* A service's job name, app.appns.svc.svcns: what clusters and nodes name its instances by. */
static char *job_name_of(const char *app_name, const char *app_ns, oakuk_microservice *ms) {
  return g_strdup_printf("%s.%s.%s.%s", app_name, app_ns, oakuk_microservice_name(ms),
                         oakuk_microservice_namespace(ms));
}

/* The service document (*doc) and the microservice as liboakuk serialized it (*ms_json) of one
 * microservice of application app_id. */
static gboolean service_docs(oakuk_microservice *ms, const char *app_id, const char *app_name,
                             const char *app_ns, char **doc_out, char **ms_out, GError **error) {
  oakuk_error *err = NULL;
  char *text = oakuk_microservice_to_json(ms, FALSE, &err);
  if (text == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "serialize microservice: %s", oakuk_error_message(err));
    oakuk_error_free(err);
    return FALSE;
  }
  g_autoptr(JsonObject) msobj = view_parse_object(text);
  od_oakuk_free(text);
  if (msobj == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "serialize microservice: not a JSON object");
    return FALSE;
  }
  const char *sid = oakuk_microservice_id(ms);
  g_autofree char *job_name = job_name_of(app_name, app_ns, ms);
  json_object_set_string_member(msobj, "microserviceID", sid);
  json_object_set_string_member(msobj, "app_name", app_name);
  json_object_set_string_member(msobj, "app_ns", app_ns);
  json_object_set_string_member(msobj, "job_name", job_name);
  g_autofree char *ms_json = view_object_text(msobj);
  /* The service document: the microservice's own fields plus Oakestra's bookkeeping keys; the
   * per-instance ones (next_instance_progressive_number, status, instance_list) are the views'. */
  g_autoptr(JsonObject) doc = view_parse_object(ms_json);
  json_object_set_object_member(doc, "_id", oid(sid));
  json_object_set_string_member(doc, "applicationID", app_id);
  json_object_set_string_member(doc, "service_name", oakuk_microservice_name(ms));
  json_object_set_string_member(doc, "service_ns", oakuk_microservice_namespace(ms));
  if (api_str(doc, "image") == NULL)
    json_object_set_string_member(doc, "image", api_str(doc, "code") ? api_str(doc, "code") : "");
  *doc_out = view_object_text(doc);
  *ms_out = g_steal_pointer(&ms_json);
  return TRUE;
}

/* Builds and stores the service document of one microservice. */
static gboolean insert_service(Req *q, oakuk_microservice *ms, const char *app_id, const char *app_name,
                               const char *app_ns, GError **error) {
  g_autofree char *doc_json = NULL, *ms_json = NULL;
  if (!service_docs(ms, app_id, app_name, app_ns, &doc_json, &ms_json, error))
    return FALSE;
  StoreService sv = {.id = (char *)oakuk_microservice_id(ms),
                     .app_id = (char *)app_id,
                     .user = q->user,
                     .doc = doc_json,
                     .ms = ms_json,
                     .status = (char *)"REQUESTED",
                     .revision = 1};
  return store_service_insert(q->r->store, &sv, error);
}

static JsonObject *lib_error(oakuk_error *err, GError **error) {
  g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "%s", oakuk_error_message(err));
  oakuk_error_free(err);
  return NULL;
}

/* What an apply did with one service (docs/api.md "Applying a descriptor"). */
static void add_change(JsonArray *changes, const char *sid, const char *name, const char *job_name,
                       const char *change, gint64 revision, gint64 previous) {
  JsonObject *c = json_object_new();
  json_object_set_string_member(c, "id", sid);
  json_object_set_string_member(c, "microservice_name", name ? name : "");
  json_object_set_string_member(c, "job_name", job_name);
  json_object_set_string_member(c, "change", change);
  json_object_set_int_member(c, "revision", revision);
  if (previous > 0)
    json_object_set_int_member(c, "previous_revision", previous);
  json_array_add_object_element(changes, c);
}

static StoreService *find_job(GPtrArray *services, const char *job_name) {
  for (guint k = 0; k < services->len; k++) {
    StoreService *sv = services->pdata[k];
    g_autoptr(JsonObject) doc = view_parse_object(sv->doc);
    if (g_strcmp0(doc ? api_str(doc, "job_name") : NULL, job_name) == 0)
      return sv;
  }
  return NULL;
}

/* Applies app to the user's stored application app_id: a service of the same name whose spec
 * differs gets it as its next revision (its instances keep theirs until they are replaced), a new
 * one is created, and a stored one the descriptor lacks is kept as it is and reported. */
static JsonObject *update_application(Req *q, oakuk_application *app, const char *app_id, GError **error) {
  const char *name = oakuk_application_name(app), *ns = oakuk_application_namespace(app);
  Store *st = q->r->store;
  g_autoptr(StoreApplication) row = store_application_get(st, app_id);
  if (row == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "application %s: not found", app_id);
    return NULL;
  }
  oakuk_error *err = NULL;
  if (oakuk_application_set_id(app, app_id, &err) != 0)
    return lib_error(err, error);
  g_autoptr(JsonObject) doc = view_application(row);
  g_autoptr(GPtrArray) stored = store_services_of_app(st, app_id);
  g_autoptr(GHashTable) seen = g_hash_table_new(g_str_hash, g_str_equal);
  g_autoptr(JsonArray) changes = json_array_new();
  JsonArray *ids = json_array_new();
  json_object_set_array_member(doc, "microservices", ids);
  for (size_t i = 0; i < oakuk_application_microservice_count(app); i++) {
    oakuk_microservice *ms = oakuk_application_microservice(app, i);
    g_autofree char *job_name = job_name_of(name, ns, ms);
    StoreService *sv = find_job(stored, job_name);
    g_autofree char *sid = sv ? g_strdup(sv->id) : od_object_id();
    if (oakuk_microservice_set_id(ms, sid, &err) != 0)
      return lib_error(err, error);
    g_autofree char *sdoc = NULL, *sms = NULL;
    if (!service_docs(ms, app_id, name, ns, &sdoc, &sms, error))
      return NULL;
    if (sv == NULL) {
      if (!insert_service(q, ms, app_id, name, ns, error))
        return NULL;
      add_change(changes, sid, oakuk_microservice_name(ms), job_name, "created", 1, 0);
    } else if (strcmp(sms, sv->ms) == 0) {
      add_change(changes, sid, oakuk_microservice_name(ms), job_name, "unchanged", sv->revision, 0);
    } else {
      gint64 rev = store_service_revision_max(st, sid) + 1;
      if (!store_service_set_spec(st, sid, rev, sdoc, sms, error))
        return NULL;
      add_change(changes, sid, oakuk_microservice_name(ms), job_name, "updated", rev, sv->revision);
      g_autofree char *r_new = g_strdup_printf("%" G_GINT64_FORMAT, rev);
      od_log(G_LOG_LEVEL_MESSAGE, "apply", "service", sid, "revision", r_new, "msg",
             "new spec stored; its instances keep theirs until replaced", NULL);
    }
    g_hash_table_add(seen, sv ? sv->id : g_strdup(sid));
    json_array_add_string_element(ids, sid);
  }
  for (guint k = 0; k < stored->len; k++) {
    StoreService *sv = stored->pdata[k];
    if (g_hash_table_contains(seen, sv->id))
      continue;
    g_autoptr(JsonObject) sd = view_parse_object(sv->doc);
    json_array_add_string_element(ids, sv->id);
    add_change(changes, sv->id, sd ? api_str(sd, "microservice_name") : NULL,
               sd ? api_str(sd, "job_name") : "", "kept", sv->revision, 0);
  }
  json_object_set_string_member(doc, "application_desc",
                                oakuk_application_desc(app) ? oakuk_application_desc(app) : "");
  g_autofree char *text = view_object_text(doc);
  if (!store_application_set_doc(st, app_id, text, error))
    return NULL;
  JsonObject *out = view_parse_object(text);
  json_object_set_string_member(out, "change", "applied");
  json_object_set_array_member(out, "services", json_array_ref(changes));
  return out;
}

/* Registers one application and its services; sets *conflict when the name is taken. With update,
 * a taken name is applied to (update_application) instead. */
static JsonObject *insert_application(Req *q, oakuk_application *app, gboolean update, gboolean *conflict,
                                      GError **error) {
  const char *name = oakuk_application_name(app), *ns = oakuk_application_namespace(app);
  g_autofree char *taken = store_application_find(q->r->store, q->user, name, ns);
  if (taken != NULL && update)
    return update_application(q, app, taken, error);
  if (taken != NULL) {
    *conflict = TRUE;
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "application %s.%s exists already (id %s)", name, ns,
                taken);
    return NULL;
  }
  g_autofree char *app_id = od_object_id();
  oakuk_error *err = NULL;
  if (oakuk_application_set_id(app, app_id, &err) != 0)
    return lib_error(err, error);
  JsonArray *ids = json_array_new();
  g_autoptr(JsonObject) doc = json_object_new();
  json_object_set_object_member(doc, "_id", oid(app_id));
  json_object_set_string_member(doc, "applicationID", app_id);
  json_object_set_string_member(doc, "application_name", name);
  json_object_set_string_member(doc, "application_namespace", ns);
  json_object_set_string_member(doc, "application_desc",
                                oakuk_application_desc(app) ? oakuk_application_desc(app) : "");
  json_object_set_string_member(doc, "userId", q->user);
  json_object_set_array_member(doc, "microservices", ids);
  for (size_t i = 0; i < oakuk_application_microservice_count(app); i++) {
    oakuk_microservice *ms = oakuk_application_microservice(app, i);
    g_autofree char *sid = od_object_id();
    if (oakuk_microservice_set_id(ms, sid, &err) != 0)
      return lib_error(err, error);
    json_array_add_string_element(ids, sid);
  }
  g_autofree char *text = view_object_text(doc);
  StoreApplication row = {
      .id = app_id, .user = q->user, .name = (char *)name, .namespace_ = (char *)ns, .doc = text};
  if (!store_application_insert(q->r->store, &row, root_now_ms(), error))
    return NULL;
  g_autoptr(JsonArray) changes = json_array_new();
  for (size_t i = 0; i < oakuk_application_microservice_count(app); i++) {
    oakuk_microservice *ms = oakuk_application_microservice(app, i);
    if (!insert_service(q, ms, app_id, name, ns, error))
      return NULL;
    g_autofree char *job_name = job_name_of(name, ns, ms);
    add_change(changes, oakuk_microservice_id(ms), oakuk_microservice_name(ms), job_name, "created", 1, 0);
  }
  JsonObject *out = json_object_ref(doc);
  if (update) {
    out = view_parse_object(text);
    json_object_unref(doc);
    json_object_set_string_member(out, "change", "created");
    json_object_set_array_member(out, "services", json_array_ref(changes));
  }
  return out;
}

/* Whether a warning at path is about applications[app] or about the whole document. */
static gboolean warning_concerns(const char *path, gsize app) {
  if (!g_str_has_prefix(path, "applications["))
    return TRUE;
  g_autofree char *prefix = g_strdup_printf("applications[%" G_GSIZE_FORMAT "]", app);
  size_t n = strlen(prefix);
  return strncmp(path, prefix, n) == 0 && (path[n] == '\0' || path[n] == '.' || path[n] == '[');
}

/* The descriptor's warnings as [{path, message}] (docs/api.md, "Warnings"): all of them, or with
 * only_app those about applications[app] and the whole document. */
static JsonArray *descriptor_warnings(oakuk_descriptor *d, gboolean only_app, gsize app) {
  JsonArray *a = json_array_new();
  for (size_t i = 0; i < oakuk_descriptor_warning_count(d); i++) {
    const char *path = oakuk_descriptor_warning_path(d, i);
    if (only_app && !warning_concerns(path, app))
      continue;
    JsonObject *w = json_object_new();
    json_object_set_string_member(w, "path", path);
    json_object_set_string_member(w, "message", oakuk_descriptor_warning_message(d, i));
    json_array_add_object_element(a, w);
  }
  return a;
}

/* Oakestra's answer is the list of the user's applications: the ones this request created carry
 * their warnings in an extra key (only when there are some), the list keeps its shape. */
static void add_compat_warnings(JsonArray *all, JsonArray *created, oakuk_descriptor *d) {
  for (guint k = 0; k < json_array_get_length(all); k++) {
    JsonObject *doc = json_array_get_object_element(all, k);
    for (guint i = 0; doc != NULL && i < json_array_get_length(created); i++) {
      JsonObject *c = json_array_get_object_element(created, i);
      if (g_strcmp0(api_str(doc, "applicationID"), api_str(c, "applicationID")) != 0)
        continue;
      JsonArray *w = descriptor_warnings(d, TRUE, i);
      if (json_array_get_length(w) > 0)
        json_object_set_array_member(doc, "warnings", w);
      else
        json_array_unref(w);
    }
  }
}

/* Registers the applications of d (validated), or with update applies them, and replies. */
static void create_applications(Req *q, oakuk_descriptor *d, gboolean update) {
  g_autoptr(GError) error = NULL;
  g_autoptr(JsonArray) created = json_array_new();
  gboolean conflict = FALSE;
  gboolean ok = store_begin(q->r->store, &error);
  for (size_t i = 0; ok && i < oakuk_descriptor_application_count(d); i++) {
    JsonObject *doc = insert_application(q, oakuk_descriptor_application(d, i), update, &conflict, &error);
    if (doc == NULL)
      ok = FALSE;
    else
      json_array_add_object_element(created, doc);
  }
  ok = ok && store_commit(q->r->store, &error);
  if (!ok) {
    store_rollback(q->r->store);
    if (conflict)
      od_http_reply_error(q->msg, SOUP_STATUS_CONFLICT, "conflict", "applications", "%s", error->message);
    else
      api_reply_internal(q, error);
    return;
  }
  od_log(G_LOG_LEVEL_MESSAGE, "application", "user", q->user, "msg", "applications registered", NULL);
  for (size_t i = 0; i < oakuk_descriptor_warning_count(d); i++)
    od_log(G_LOG_LEVEL_INFO, "application", "user", q->user, "path", oakuk_descriptor_warning_path(d, i),
           "msg", oakuk_descriptor_warning_message(d, i), NULL);
  if (q->compat) {
    g_autoptr(JsonArray) all = user_applications(q);
    add_compat_warnings(all, created, d);
    g_autoptr(JsonNode) node = json_node_init_array(json_node_alloc(), all);
    od_http_reply_json_string(q->msg, SOUP_STATUS_OK, node);
  } else {
    g_autoptr(JsonObject) o = json_object_new();
    json_object_set_array_member(o, "applications", json_array_ref(created));
    json_object_set_array_member(o, "warnings", descriptor_warnings(d, FALSE, 0));
    api_reply_object(q, update ? SOUP_STATUS_OK : SOUP_STATUS_CREATED, o);
  }
}

/* ---- unikernel OCI references, resolved before registration (docs/unikernels.md) ---- */

typedef struct {
  guint app, ms;   /* applications[app].microservices[ms] */
  GPtrArray *arch; /* the arch[] given (char*), empty when absent */
} OciService;

typedef struct {
  Root *r;
  SoupServerMessage *msg;
  char *user;
  guint role;
  gboolean compat, update;
  JsonNode *body;
  GPtrArray *services; /* OciService*, in the order of the references resolved */
} AppCreate;

static void oci_service_free(gpointer p) {
  OciService *s = p;
  g_ptr_array_unref(s->arch);
  g_free(s);
}

static void app_create_free(AppCreate *a) {
  g_free(a->user);
  json_node_unref(a->body);
  g_ptr_array_unref(a->services);
  g_free(a);
}

/* The microservice object of s in the request's JSON, NULL when the body does not have that shape. */
static JsonObject *oci_service_object(JsonNode *body, const OciService *s) {
  JsonObject *root = JSON_NODE_HOLDS_OBJECT(body) ? json_node_get_object(body) : NULL;
  JsonNode *apps = root ? json_object_get_member(root, "applications") : NULL;
  if (!apps || !JSON_NODE_HOLDS_ARRAY(apps) || s->app >= json_array_get_length(json_node_get_array(apps)))
    return NULL;
  JsonNode *app = json_array_get_element(json_node_get_array(apps), s->app);
  JsonNode *mss =
      JSON_NODE_HOLDS_OBJECT(app) ? json_object_get_member(json_node_get_object(app), "microservices") : NULL;
  if (!mss || !JSON_NODE_HOLDS_ARRAY(mss) || s->ms >= json_array_get_length(json_node_get_array(mss)))
    return NULL;
  JsonNode *ms = json_array_get_element(json_node_get_array(mss), s->ms);
  return JSON_NODE_HOLDS_OBJECT(ms) ? json_node_get_object(ms) : NULL;
}

static gboolean res_has_arch(oakuk_oci_resolution *res, const char *arch) {
  for (size_t k = 0; k < oakuk_oci_resolution_arch_count(res); k++)
    if (strcmp(oakuk_oci_resolution_arch(res, k), arch) == 0)
      return TRUE;
  return FALSE;
}

static char *res_platforms(oakuk_oci_resolution *res) {
  GString *g = g_string_new(NULL);
  for (size_t k = 0; k < oakuk_oci_resolution_platform_count(res); k++)
    g_string_append_printf(g, "%s%s/%s", k ? ", " : "", oakuk_oci_resolution_platform_os(res, k),
                           oakuk_oci_resolution_platform_architecture(res, k));
  return g_string_free(g, FALSE);
}

/* Rewrites one microservice of the request with its resolution: code pinned to the digest, arch[]
 * the image's platforms when it was absent. FALSE with the reply sent when the service cannot be
 * registered as it is. */
static gboolean apply_resolution(AppCreate *a, const OciService *s, const Resolved *res) {
  g_autofree char *path = g_strdup_printf("applications[%u].microservices[%u]", s->app, s->ms);
  JsonObject *mso = oci_service_object(a->body, s);
  if (res->res == NULL &&
      (res->code == OAKUK_ENOTFOUND || res->code == OAKUK_EINVAL || res->code == OAKUK_EVERIFY)) {
    /* The registry answered: the image is not there (or not an image). Nothing to leave to nodes. */
    od_http_reply_error(a->msg, SOUP_STATUS_BAD_REQUEST, "invalid_descriptor", "", "%s.code: %s: %s", path,
                        res->reference, res->error);
    return FALSE;
  }
  if (res->res == NULL) {
    if (s->arch->len == 0) {
      od_http_reply_error(a->msg, SOUP_STATUS_BAD_REQUEST, "invalid_descriptor", "",
                          "%s.arch: required: the root "
                          "cannot resolve code %s to the platforms of its image (%s); give arch (e.g. "
                          "[\"amd64\"]) or make the registry reachable from the root",
                          path, res->reference, res->error);
      return FALSE;
    }
    od_log(G_LOG_LEVEL_WARNING, "resolve", "reference", res->reference, "msg", res->error, "action",
           "registered with its arch and the reference unpinned: each node resolves it", NULL);
    return TRUE;
  }
  if (oakuk_oci_resolution_arch_count(res->res) == 0) {
    g_autofree char *has = res_platforms(res->res);
    od_http_reply_error(a->msg, SOUP_STATUS_BAD_REQUEST, "invalid_descriptor", "",
                        "%s.code: the image %s has no platform oakuk runs (it has: %s)", path, res->reference,
                        has);
    return FALSE;
  }
  for (guint k = 0; k < s->arch->len; k++)
    if (!res_has_arch(res->res, s->arch->pdata[k])) {
      g_autofree char *has = res_platforms(res->res);
      od_http_reply_error(a->msg, SOUP_STATUS_BAD_REQUEST, "invalid_descriptor", "",
                          "%s.arch: the image %s has no platform for %s (it has: %s)", path, res->reference,
                          (const char *)s->arch->pdata[k], has);
      return FALSE;
    }
  if (mso == NULL) {
    od_http_reply_error(a->msg, SOUP_STATUS_BAD_REQUEST, "invalid_descriptor", "", "%s: not an object", path);
    return FALSE;
  }
  const char *pinned = oakuk_oci_resolution_pinned(res->res);
  JsonNode *code = json_object_get_member(mso, "code");
  if (code && JSON_NODE_HOLDS_OBJECT(code))
    json_object_set_string_member(json_node_get_object(code), "unikernel", pinned);
  else
    json_object_set_string_member(mso, "code", pinned);
  if (s->arch->len == 0) {
    JsonArray *arch = json_array_new();
    for (size_t k = 0; k < oakuk_oci_resolution_arch_count(res->res); k++)
      json_array_add_string_element(arch, oakuk_oci_resolution_arch(res->res, k));
    json_object_set_array_member(mso, "arch", arch);
  }
  od_log(G_LOG_LEVEL_MESSAGE, "resolve", "reference", res->reference, "pinned", pinned, NULL);
  return TRUE;
}

static void on_resolved(GPtrArray *resolved, gpointer data) {
  AppCreate *a = data;
  Req q = {.r = a->r, .msg = a->msg, .user = a->user, .role = a->role, .compat = a->compat};
  gboolean ok = TRUE;
  for (guint k = 0; ok && k < a->services->len; k++)
    ok = apply_resolution(a, a->services->pdata[k], resolved->pdata[k]);
  if (ok) {
    g_autofree char *text = json_to_string(a->body, FALSE);
    oakuk_error *err = NULL;
    oakuk_descriptor *d = oakuk_descriptor_parse(text, strlen(text), &err);
    if (d == NULL) {
      od_http_reply_error(a->msg, SOUP_STATUS_BAD_REQUEST, "invalid_descriptor",
                          oakuk_error_path(err) ? oakuk_error_path(err) : "", "%s", oakuk_error_message(err));
      oakuk_error_free(err);
    } else {
      create_applications(&q, d, a->update);
      oakuk_descriptor_unref(d);
    }
  }
  api_release(a->msg);
  app_create_free(a);
}

/* The unikernels of d whose code is an OCI reference; their references in *refs. */
static GPtrArray *oci_services(oakuk_descriptor *d, GPtrArray *refs) {
  GPtrArray *out = g_ptr_array_new_with_free_func(oci_service_free);
  for (size_t i = 0; i < oakuk_descriptor_application_count(d); i++) {
    oakuk_application *app = oakuk_descriptor_application(d, i);
    for (size_t j = 0; j < oakuk_application_microservice_count(app); j++) {
      oakuk_microservice *ms = oakuk_application_microservice(app, j);
      if (!oakuk_microservice_code_is_oci(ms, OAKUK_VIRT_UNIKERNEL))
        continue;
      OciService *s = g_new0(OciService, 1);
      s->app = (guint)i;
      s->ms = (guint)j;
      s->arch = g_ptr_array_new_with_free_func(g_free);
      for (size_t k = 0; k < oakuk_microservice_arch_count(ms); k++)
        g_ptr_array_add(s->arch, g_strdup(oakuk_microservice_arch(ms, k)));
      g_ptr_array_add(out, s);
      g_ptr_array_add(refs, g_strdup(oakuk_microservice_code(ms, OAKUK_VIRT_UNIKERNEL, 0)));
    }
  }
  return out;
}

/* 400 invalid_descriptor (Oakestra's 422 on its paths) naming the first problem, with every
 * problem the parser found as problems: [{path, message}] (docs/api.md "Errors"). */
static void reply_invalid_descriptor(Req *q, const oakuk_error *err) {
  guint status = q->compat ? 422 : SOUP_STATUS_BAD_REQUEST;
  JsonArray *problems = json_array_new();
  for (size_t k = 0; k < oakuk_error_item_count(err); k++) {
    JsonObject *p = json_object_new();
    json_object_set_string_member(p, "path", oakuk_error_item_path(err, k));
    json_object_set_string_member(p, "message", oakuk_error_item_message(err, k));
    json_array_add_object_element(problems, p);
  }
  if (json_array_get_length(problems) == 0) {
    JsonObject *p = json_object_new();
    json_object_set_string_member(p, "path", oakuk_error_path(err) ? oakuk_error_path(err) : "");
    json_object_set_string_member(p, "message", oakuk_error_message(err));
    json_array_add_object_element(problems, p);
  }
  g_autoptr(JsonObject) o = json_object_new();
  JsonObject *e = json_object_new();
  json_object_set_string_member(e, "code", "invalid_descriptor");
  json_object_set_string_member(e, "message", oakuk_error_message(err));
  json_object_set_string_member(e, "path", oakuk_error_path(err) ? oakuk_error_path(err) : "");
  json_object_set_array_member(e, "problems", problems);
  json_object_set_object_member(o, "error", e);
  api_reply_object(q, status, o);
}

static void app_create(Req *q, gboolean update) {
  g_autoptr(JsonNode) check = od_http_read_json(q->msg);
  if (check == NULL)
    return;
  g_autoptr(GBytes) bytes = soup_message_body_flatten(soup_server_message_get_request_body(q->msg));
  gsize len = 0;
  const char *data = g_bytes_get_data(bytes, &len);
  oakuk_error *err = NULL;
  oakuk_descriptor *d = oakuk_descriptor_parse(data, len, &err);
  if (d == NULL) {
    /* Oakestra answers an SLA its schema refuses with 422 on its path; ours: 400. */
    reply_invalid_descriptor(q, err);
    oakuk_error_free(err);
    return;
  }
  GPtrArray *refs = g_ptr_array_new_with_free_func(g_free);
  GPtrArray *services = oci_services(d, refs);
  if (services->len == 0) {
    g_ptr_array_unref(refs);
    g_ptr_array_unref(services);
    create_applications(q, d, update);
    oakuk_descriptor_unref(d);
    return;
  }
  oakuk_descriptor_unref(d);
  /* The registry is asked off the main loop; the request waits, the loop does not. */
  AppCreate *a = g_new0(AppCreate, 1);
  a->r = q->r;
  a->msg = q->msg;
  a->user = g_strdup(q->user);
  a->role = q->role;
  a->compat = q->compat;
  a->update = update;
  a->body = json_node_ref(check);
  a->services = services;
  api_hold(q->msg);
  resolve_references(refs, q->r->cfg.insecure_registries, on_resolved, a);
}

static void h_app_create(Req *q) {
  app_create(q, FALSE);
}

/* Oakestra's POST /api/service/: the services of applications[0] of an SLA are added to the user's
 * application applications[0].applicationID. Oakestra's answer: 200 {job_id (the last service
 * created), deployed_services [{service_name, status}], failed_services [{service_name, status,
 * message}]}; 400 for an invalid SLA or an application that is not the user's, as Oakestra. */
static void h_svc_add(Req *q) {
  g_autoptr(JsonObject) body = api_body_object(q, FALSE);
  if (body == NULL)
    return;
  JsonNode *apps = json_object_get_member(body, "applications");
  JsonObject *app0 =
      apps && JSON_NODE_HOLDS_ARRAY(apps) && json_array_get_length(json_node_get_array(apps)) == 1
          ? json_array_get_object_element(json_node_get_array(apps), 0)
          : NULL;
  const char *app_id = app0 ? api_str(app0, "applicationID") : NULL;
  if (app_id == NULL || *app_id == '\0') {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "applications[0].applicationID",
                        "applications: exactly one application with the applicationID of the application the "
                        "services are added to");
    return;
  }
  g_autoptr(StoreApplication) row = store_application_get(q->r->store, app_id);
  if (row == NULL || !may_see(q, row->user)) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "not_found", "applications[0].applicationID",
                        "applications[0].applicationID: no application %s", app_id);
    return;
  }
  /* Validated as a descriptor of that application: its stored name and namespace. */
  json_object_set_string_member(app0, "application_name", row->name);
  json_object_set_string_member(app0, "application_namespace", row->namespace_);
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), body);
  g_autofree char *text = od_json_to_string(node, FALSE);
  oakuk_error *err = NULL;
  oakuk_descriptor *d = oakuk_descriptor_parse(text, strlen(text), &err);
  if (d == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_descriptor",
                        oakuk_error_path(err) ? oakuk_error_path(err) : "", "%s", oakuk_error_message(err));
    oakuk_error_free(err);
    return;
  }
  g_autoptr(GPtrArray) refs = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GPtrArray) oci = oci_services(d, refs);
  if (oci->len > 0) {
    oakuk_descriptor_unref(d);
    od_http_reply_error(
        q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_descriptor", "applications[0].microservices",
        "a unikernel whose code is an OCI reference (%s) is added with PUT /api/v1/applications "
        "(its reference is resolved there)",
        (const char *)refs->pdata[0]);
    return;
  }
  oakuk_application *app = oakuk_descriptor_application(d, 0);
  g_autoptr(GPtrArray) stored = store_services_of_app(q->r->store, app_id);
  g_autoptr(JsonObject) doc = view_application(row);
  JsonNode *idn = json_object_get_member(doc, "microservices");
  JsonArray *ids = idn && JSON_NODE_HOLDS_ARRAY(idn) ? json_node_get_array(idn) : NULL;
  if (ids == NULL) {
    ids = json_array_new();
    json_object_set_array_member(doc, "microservices", ids);
  }
  g_autoptr(JsonArray) deployed = json_array_new(), failed = json_array_new();
  g_autofree char *last = NULL;
  g_autoptr(GError) error = NULL;
  gboolean ok = store_begin(q->r->store, &error);
  for (size_t i = 0; ok && i < oakuk_application_microservice_count(app); i++) {
    oakuk_microservice *ms = oakuk_application_microservice(app, i);
    g_autofree char *job_name = job_name_of(row->name, row->namespace_, ms);
    JsonObject *entry = json_object_new();
    json_object_set_string_member(entry, "service_name", oakuk_microservice_name(ms));
    if (find_job(stored, job_name) != NULL) {
      json_object_set_int_member(entry, "status", SOUP_STATUS_CONFLICT);
      g_autofree char *m =
          g_strdup_printf("service %s exists already (PUT /api/v1/applications changes it)", job_name);
      json_object_set_string_member(entry, "message", m);
      json_array_add_object_element(failed, entry);
      continue;
    }
    g_autofree char *sid = od_object_id();
    ok = oakuk_microservice_set_id(ms, sid, &err) == 0 &&
         insert_service(q, ms, app_id, row->name, row->namespace_, &error);
    if (err != NULL) {
      g_set_error(&error, OD_ERROR, OD_ERROR_INVALID, "%s", oakuk_error_message(err));
      g_clear_pointer(&err, oakuk_error_free);
    }
    json_object_set_int_member(entry, "status", SOUP_STATUS_OK);
    json_array_add_object_element(deployed, entry);
    json_array_add_string_element(ids, sid);
    g_free(last);
    last = g_steal_pointer(&sid);
  }
  g_autofree char *app_text = view_object_text(doc);
  ok = ok && store_application_set_doc(q->r->store, app_id, app_text, &error) &&
       store_commit(q->r->store, &error);
  oakuk_descriptor_unref(d);
  if (!ok) {
    store_rollback(q->r->store);
    api_reply_internal(q, error);
    return;
  }
  g_autoptr(JsonObject) out = json_object_new();
  json_object_set_string_member(out, "job_id", last ? last : "");
  json_object_set_array_member(out, "deployed_services", json_array_ref(deployed));
  json_object_set_array_member(out, "failed_services", json_array_ref(failed));
  api_reply_object(q, SOUP_STATUS_OK, out);
}

static void h_app_apply(Req *q) {
  app_create(q, TRUE);
}

static StoreApplication *load_user_app(Req *q, const char *id) {
  StoreApplication *a = store_application_get(q->r->store, id);
  if (a == NULL || !may_see(q, a->user)) {
    store_application_free(a);
    reply_not_found(q, "application", id);
    return NULL;
  }
  return a;
}

static StoreService *load_user_service(Req *q, const char *id) {
  StoreService *sv = store_service_get(q->r->store, id);
  if (sv == NULL || !may_see(q, sv->user)) {
    store_service_free(sv);
    reply_not_found(q, "service", id);
    return NULL;
  }
  return sv;
}

static void h_app_list(Req *q) {
  if (!sees_all(q)) {
    g_autoptr(JsonArray) own = user_applications(q);
    reply_list(q, own);
    return;
  }
  g_autoptr(JsonArray) out = json_array_new();
  g_autoptr(GPtrArray) apps = store_applications_all(q->r->store);
  for (guint k = 0; k < apps->len; k++)
    json_array_add_object_element(out, view_application(apps->pdata[k]));
  reply_list(q, out);
}

/* Oakestra's GET /api/applications/<userId>: the applications of the user of that id (its own
 * only, 401 otherwise, as Oakestra answers). */
static void h_app_list_user(Req *q) {
  g_autofree char *own = api_user_oid(q->user);
  if (strcmp(q->cap[0], own) != 0) {
    od_http_reply_error(q->msg, SOUP_STATUS_UNAUTHORIZED, "unauthorized", "",
                        "%s is not the id of user %s (GET /api/user/%s has it)", q->cap[0], q->user, q->user);
    return;
  }
  g_autoptr(JsonArray) own_apps = user_applications(q);
  reply_list(q, own_apps);
}

static void h_app_get(Req *q) {
  g_autoptr(StoreApplication) app = load_user_app(q, q->cap[0]);
  if (app == NULL)
    return;
  g_autoptr(JsonObject) doc = view_application(app);
  api_reply_object(q, SOUP_STATUS_OK, doc);
}

static void h_app_put(Req *q) {
  g_autoptr(StoreApplication) row = load_user_app(q, q->cap[0]);
  if (row == NULL)
    return;
  g_autoptr(JsonObject) app = view_application(row);
  g_autoptr(JsonObject) body = api_body_object(q, FALSE);
  if (body == NULL)
    return;
  static const char *const fixed[] = {"application_name", "application_namespace"};
  for (gsize i = 0; i < G_N_ELEMENTS(fixed); i++) {
    JsonNode *n = json_object_get_member(body, fixed[i]);
    if (n != NULL && g_strcmp0(api_str(body, fixed[i]), api_str(app, fixed[i])) != 0) {
      od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", fixed[i],
                          "%s: renaming an application is not supported (services are named after it)",
                          fixed[i]);
      return;
    }
  }
  JsonNode *desc = json_object_get_member(body, "application_desc");
  if (desc != NULL && api_str(body, "application_desc") == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "application_desc",
                        "application_desc: a string is required");
    return;
  }
  if (desc != NULL)
    json_object_set_string_member(app, "application_desc", api_str(body, "application_desc"));
  g_autofree char *text = view_object_text(app);
  g_autoptr(GError) error = NULL;
  if (!store_begin(q->r->store, &error) || !store_application_set_doc(q->r->store, q->cap[0], text, &error) ||
      !store_commit(q->r->store, &error)) {
    store_rollback(q->r->store);
    api_reply_internal(q, error);
    return;
  }
  api_reply_object(q, SOUP_STATUS_OK, app);
}

static void h_app_delete(Req *q) {
  g_autoptr(StoreApplication) app = load_user_app(q, q->cap[0]);
  if (app == NULL)
    return;
  g_autoptr(GError) error = NULL;
  if (!loop_application_delete(q->r->loop, q->cap[0], &error)) {
    api_reply_internal(q, error);
    return;
  }
  g_autofree char *m = g_strdup_printf("application %s deleted", q->cap[0]);
  api_reply_message(q, SOUP_STATUS_OK, m);
}

/* ---- services ---- */

static void h_svc_get(Req *q) {
  g_autoptr(StoreService) sv = load_user_service(q, q->cap[0]);
  if (sv == NULL)
    return;
  g_autoptr(JsonObject) doc = view_service(q->r, sv, TRUE, q->compat);
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), doc);
  if (q->compat)
    od_http_reply_json_string(q->msg, SOUP_STATUS_OK, node);
  else
    od_http_reply_json(q->msg, SOUP_STATUS_OK, node);
}

static void reply_services(Req *q, GPtrArray *services) {
  g_autoptr(JsonArray) out = json_array_new();
  for (guint k = 0; k < services->len; k++)
    json_array_add_object_element(out, view_service(q->r, services->pdata[k], TRUE, q->compat));
  reply_list(q, out);
}

static void h_svc_list_app(Req *q) {
  g_autoptr(StoreApplication) app = load_user_app(q, q->cap[0]);
  if (app == NULL)
    return;
  g_autoptr(GPtrArray) services = store_services_of_app(q->r->store, q->cap[0]);
  reply_services(q, services);
}

static void h_svc_list_all(Req *q) {
  g_autoptr(GPtrArray) services =
      sees_all(q) ? store_services_all(q->r->store) : store_services_of_user(q->r->store, q->user);
  reply_services(q, services);
}

static void h_svc_delete(Req *q) {
  g_autoptr(StoreService) sv = load_user_service(q, q->cap[0]);
  if (sv == NULL)
    return;
  g_autoptr(GError) error = NULL;
  if (!loop_service_delete(q->r->loop, q->cap[0], &error)) {
    api_reply_internal(q, error);
    return;
  }
  g_autofree char *m = g_strdup_printf("service %s deleted", q->cap[0]);
  api_reply_message(q, SOUP_STATUS_OK, m);
}

/* Makes a kept revision the current spec again ({"revision": N}, docs/api.md "Rolling back"): the
 * instances that run it are current again, those of the abandoned revision are replaced by the
 * next apply or rollout. */
static void h_svc_rollback(Req *q) {
  g_autoptr(StoreService) sv = load_user_service(q, q->cap[0]);
  if (sv == NULL)
    return;
  g_autoptr(JsonObject) body = api_body_object(q, FALSE);
  if (body == NULL)
    return;
  JsonNode *n = json_object_get_member(body, "revision");
  if (n == NULL || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64 ||
      json_node_get_int(n) < 1) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "revision",
                        "revision: a revision number (an integer from 1) is required");
    return;
  }
  gint64 rev = json_node_get_int(n);
  g_autofree char *doc = NULL, *ms = NULL;
  if (rev != sv->revision && !store_service_spec(q->r->store, sv->id, rev, &doc, &ms)) {
    g_autoptr(GArray) kept = store_service_revisions(q->r->store, sv->id);
    g_autoptr(GString) list = g_string_new(NULL);
    for (guint k = 0; k < kept->len; k++)
      g_string_append_printf(list, "%s%" G_GINT64_FORMAT, k ? ", " : "", g_array_index(kept, gint64, k));
    od_http_reply_error(q->msg, SOUP_STATUS_CONFLICT, "conflict", "revision",
                        "revision %" G_GINT64_FORMAT " of service %s is not kept (current %" G_GINT64_FORMAT
                        "; kept: %s)",
                        rev, sv->id, sv->revision, list->len ? list->str : "none");
    return;
  }
  g_autoptr(GError) error = NULL;
  if (rev != sv->revision && (!store_begin(q->r->store, &error) ||
                              !store_service_set_spec(q->r->store, sv->id, rev, doc, ms, &error) ||
                              !store_commit(q->r->store, &error))) {
    store_rollback(q->r->store);
    api_reply_internal(q, error);
    return;
  }
  g_autofree char *from = g_strdup_printf("%" G_GINT64_FORMAT, sv->revision);
  g_autofree char *to = g_strdup_printf("%" G_GINT64_FORMAT, rev);
  od_log(G_LOG_LEVEL_MESSAGE, "rollback", "service", sv->id, "from", from, "to", to, "msg",
         "a kept revision is the current spec again", NULL);
  g_autoptr(StoreService) now = store_service_get(q->r->store, sv->id);
  g_autoptr(JsonObject) out = view_service(q->r, now, TRUE, FALSE);
  api_reply_object(q, SOUP_STATUS_OK, out);
}

/* ---- requests passed on to clusters (`oakuk explain`, `oakuk logs`, drains) ---- */

static const char *cluster_error(JsonNode *body, const char *key) {
  JsonObject *o = body && JSON_NODE_HOLDS_OBJECT(body) ? json_node_get_object(body) : NULL;
  JsonNode *e = o ? json_object_get_member(o, "error") : NULL;
  return e && JSON_NODE_HOLDS_OBJECT(e) ? api_str(json_node_get_object(e), key) : NULL;
}

void api_hold(SoupServerMessage *msg) {
  g_object_ref(msg);
  soup_server_message_pause(msg);
}

void api_release(SoupServerMessage *msg) {
  soup_server_message_unpause(msg);
  g_object_unref(msg);
}

typedef struct {
  ClusterReply done;
  gpointer data;
  char *cid;
} ClusterCall;

static void cluster_call_done(gpointer data, guint status, JsonNode *body, const char *why) {
  ClusterCall *c = data;
  c->done(c->data, c->cid, status, body, why);
  g_free(c->cid);
  g_free(c);
}

void api_cluster_call(Root *r, const char *cid, const char *method, const char *path, JsonNode *body,
                      guint timeout_s, ClusterReply done, gpointer data) {
  g_autoptr(StoreCluster) cl = store_cluster_get(r->store, cid);
  if (cl == NULL) {
    done(data, cid, 0, NULL, "the cluster is no longer registered");
    return;
  }
  ClusterCall *c = g_new0(ClusterCall, 1);
  c->done = done;
  c->data = data;
  c->cid = g_strdup(cid);
  g_autofree char *bearer = pki_cluster_bearer(r, cl);
  link_request(r->link, cl->url, bearer, method, path, body, timeout_s, cluster_call_done, c);
}

typedef struct {
  Root *r;
  SoupServerMessage *msg;
  JsonObject *out;
  JsonArray *clusters;
  guint pending;
} ExplainCall;

static void explain_reply(ExplainCall *e) {
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), e->out);
  od_http_reply_json(e->msg, SOUP_STATUS_OK, node);
  api_release(e->msg);
  json_object_unref(e->out);
  g_free(e);
}

static void explain_cluster_done(gpointer data, const char *cid, guint status, JsonNode *body,
                                 const char *why) {
  ExplainCall *e = data;
  JsonObject *c = json_object_new();
  g_autoptr(StoreCluster) cl = store_cluster_get(e->r->store, cid);
  json_object_set_string_member(c, "cluster_id", cid);
  json_object_set_string_member(c, "cluster_name", cl ? cl->name : cid);
  JsonObject *o = body && JSON_NODE_HOLDS_OBJECT(body) ? json_node_get_object(body) : NULL;
  if (status == SOUP_STATUS_OK && o != NULL && json_object_get_member(o, "lines") != NULL) {
    json_object_set_int_member(c, "instance", json_object_get_int_member_with_default(o, "instance", 0));
    json_object_set_member(c, "lines", json_node_copy(json_object_get_member(o, "lines")));
  } else {
    g_autofree char *err =
        status == 0 ? g_strdup_printf("cluster unreachable: %s", why ? why : "")
                    : g_strdup_printf("HTTP %u: %s", status,
                                      cluster_error(body, "message") ? cluster_error(body, "message")
                                                                     : "no explanation");
    json_object_set_string_member(c, "error", err);
  }
  json_array_add_object_element(e->clusters, c);
  if (--e->pending == 0)
    explain_reply(e);
}

static void add_unique(GPtrArray *ids, const char *id) {
  if (id != NULL && *id && !g_ptr_array_find_with_equal_func(ids, id, g_str_equal, NULL))
    g_ptr_array_add(ids, g_strdup(id));
}

/* The instances' statuses and refusals for `oakuk explain`; ask gets every cluster that holds or
 * refused one. */
static JsonArray *explain_instances(JsonObject *doc, GPtrArray *ask) {
  JsonArray *insts = json_array_new();
  JsonArray *list = json_object_get_array_member(doc, "instance_list");
  for (guint i = 0; list != NULL && i < json_array_get_length(list); i++) {
    JsonObject *in = json_array_get_object_element(list, i);
    JsonObject *s = json_object_new();
    json_object_set_int_member(s, "instance_number",
                               json_object_get_int_member_with_default(in, "instance_number", 0));
    static const char *const keys[] = {"status", "status_detail", "cluster_id", "cluster_name", "node_id"};
    for (gsize k = 0; k < G_N_ELEMENTS(keys); k++)
      json_object_set_string_member(s, keys[k], api_str(in, keys[k]) ? api_str(in, keys[k]) : "");
    json_object_set_int_member(s, "generation", json_object_get_int_member_with_default(in, "generation", 0));
    json_object_set_boolean_member(s, "ready",
                                   json_object_get_boolean_member_with_default(in, "ready", FALSE));
    if (json_object_has_member(in, "ready_ms"))
      json_object_set_int_member(s, "ready_ms", json_object_get_int_member(in, "ready_ms"));
    JsonNode *rf = json_object_get_member(in, "cluster_refusals");
    g_autoptr(GList) refused =
        rf && JSON_NODE_HOLDS_OBJECT(rf) ? json_object_get_members(json_node_get_object(rf)) : NULL;
    if (rf != NULL)
      json_object_set_member(s, "cluster_refusals", json_node_copy(rf));
    json_array_add_object_element(insts, s);
    add_unique(ask, api_str(in, "cluster_id"));
    for (GList *l = refused; l != NULL; l = l->next)
      add_unique(ask, l->data);
  }
  return insts;
}

/* The root's cluster-level explanation, the instances' statuses and refusals, and the node-level
 * explanation of every cluster that holds or refused an instance. */
static void h_explain(Req *q) {
  g_autoptr(StoreService) sv = load_user_service(q, q->cap[0]);
  if (sv == NULL)
    return;
  g_autoptr(JsonObject) doc = view_service(q->r, sv, TRUE, FALSE);
  JsonObject *o = json_object_new();
  JsonArray *lines = json_array_new();
  g_auto(GStrv) parts = g_strsplit(sv->explain, "\n", 0);
  for (char **p = parts; *p; p++)
    if (**p)
      json_array_add_string_element(lines, *p);
  json_object_set_string_member(o, "service", q->cap[0]);
  json_object_set_string_member(o, "job_name", api_str(doc, "job_name"));
  json_object_set_array_member(o, "lines", lines);
  g_autoptr(GPtrArray) ask = g_ptr_array_new_with_free_func(g_free);
  json_object_set_array_member(o, "instances", explain_instances(doc, ask));
  ExplainCall *e = g_new0(ExplainCall, 1);
  e->r = q->r;
  e->msg = q->msg;
  e->out = o;
  e->clusters = json_array_new();
  json_object_set_array_member(o, "clusters", e->clusters);
  api_hold(q->msg);
  g_autofree char *path = g_strdup_printf("/api/v1/services/%s/explain", q->cap[0]);
  e->pending = ask->len + 1; /* one for this function, so no answer completes the call early */
  for (guint i = 0; i < ask->len; i++) {
    g_autoptr(StoreCluster) cl = store_cluster_get(q->r->store, ask->pdata[i]);
    if (cl == NULL) {
      e->pending--;
      continue;
    }
    api_cluster_call(q->r, ask->pdata[i], "GET", path, NULL, 5, explain_cluster_done, e);
  }
  if (--e->pending == 0)
    explain_reply(e);
}

/* Passes a cluster's answer on: its 2xx body, its error with its status, or 502 when it could not
 * be reached. */
void api_pass_on(gpointer data, const char *cid, guint status, JsonNode *body, const char *why) {
  SoupServerMessage *msg = data;
  const char *path = g_uri_get_path(soup_server_message_get_uri(msg));
  if (SOUP_STATUS_IS_SUCCESSFUL(status) && body != NULL) {
    od_http_reply_json(msg, status, body);
  } else if (SOUP_STATUS_IS_SUCCESSFUL(status)) {
    g_autoptr(JsonObject) o = json_object_new();
    json_object_set_string_member(o, "message", "done by the cluster");
    g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), o);
    od_http_reply_json(msg, status, node);
  } else if (status == 0) {
    od_http_reply_error(msg, SOUP_STATUS_BAD_GATEWAY, "cluster_unreachable", path, "cluster %s: %s", cid,
                        why ? why : "no answer");
  } else {
    const char *code = cluster_error(body, "code");
    const char *message = cluster_error(body, "message");
    od_http_reply_error(msg, status >= 400 && status < 600 ? status : SOUP_STATUS_BAD_GATEWAY,
                        code ? code : "cluster_error", path, "cluster %s: %s", cid,
                        message ? message : "unexpected answer");
  }
  api_release(msg);
}

/* Serial console or output of one instance: asked from its cluster, which asks its node. */
static void h_inst_logs(Req *q) {
  g_autoptr(StoreService) sv = load_user_service(q, q->cap[0]);
  gint64 n = -1, lines = 100;
  if (sv == NULL || !parse_number(q, q->cap[1], &n))
    return;
  const char *query = g_uri_get_query(soup_server_message_get_uri(q->msg));
  g_autoptr(GHashTable) params = query ? g_uri_parse_params(query, -1, "&", G_URI_PARAMS_NONE, NULL) : NULL;
  const char *ltext = params ? g_hash_table_lookup(params, "lines") : NULL;
  if (ltext != NULL && !g_ascii_string_to_signed(ltext, 10, 1, 10000, &lines, NULL)) {
    od_http_reply_error(q->msg, SOUP_STATUS_BAD_REQUEST, "invalid_field", "lines",
                        "lines: '%s' is not a number of lines in [1, 10000]", ltext);
    return;
  }
  g_autoptr(StoreInstance) inst = store_instance_get(q->r->store, sv->id, n);
  if (inst == NULL) {
    g_autofree char *what = g_strdup_printf("%s/instance", q->cap[0]);
    reply_not_found(q, what, q->cap[1]);
    return;
  }
  g_autoptr(JsonObject) doc = view_service(q->r, sv, FALSE, FALSE);
  if (*inst->cluster_id == '\0') {
    od_http_reply_error(q->msg, SOUP_STATUS_CONFLICT, "conflict", q->path,
                        "instance %s of %s is %s and not placed on a cluster: no logs", q->cap[1],
                        api_str(doc, "job_name"), inst->status);
    return;
  }
  char *lib_name = oakuk_instance_name(api_str(doc, "job_name"), n);
  g_autofree char *name = g_strdup(lib_name);
  od_oakuk_free(lib_name);
  g_autofree char *path = g_strdup_printf("/api/v1/instances/%s/logs?lines=%" G_GINT64_FORMAT, name, lines);
  api_hold(q->msg);
  /* The cluster waits up to 5 s for its node. */
  api_cluster_call(q->r, inst->cluster_id, "GET", path, NULL, 8, api_pass_on, q->msg);
}

/* ---- instances ---- */

static void h_inst_list(Req *q) {
  g_autoptr(StoreService) sv = load_user_service(q, q->cap[0]);
  if (sv == NULL)
    return;
  g_autoptr(JsonObject) doc = view_service(q->r, sv, TRUE, q->compat);
  g_autoptr(JsonArray) list = json_array_ref(json_object_get_array_member(doc, "instance_list"));
  reply_array(q, SOUP_STATUS_OK, list);
}

static void h_inst_create(Req *q) {
  g_autoptr(StoreService) sv = load_user_service(q, q->cap[0]);
  if (sv == NULL)
    return;
  g_autoptr(JsonObject) body = api_body_object(q, TRUE);
  if (body == NULL)
    return;
  g_autoptr(GError) error = NULL;
  g_autoptr(StoreInstance) inst = loop_instance_create(q->r->loop, q->cap[0], &error);
  if (inst == NULL) {
    api_reply_internal(q, error);
    return;
  }
  if (q->compat) {
    g_autoptr(JsonObject) o = json_object_new();
    json_object_set_string_member(o, "message", "instance requested");
    json_object_set_int_member(o, "instance_number", inst->number);
    json_object_set_string_member(o, "status", inst->status);
    api_reply_object(q, SOUP_STATUS_OK, o);
  } else {
    g_autoptr(JsonObject) o = view_instance(q->r, inst);
    api_reply_object(q, SOUP_STATUS_CREATED, o);
  }
}

static void h_inst_delete(Req *q) {
  g_autoptr(StoreService) sv = load_user_service(q, q->cap[0]);
  gint64 n = -1;
  if (sv == NULL || !parse_number(q, q->cap[1], &n))
    return;
  g_autoptr(StoreInstance) inst = store_instance_get(q->r->store, sv->id, n);
  if (inst == NULL) {
    g_autofree char *what = g_strdup_printf("%s/instance", q->cap[0]);
    reply_not_found(q, what, q->cap[1]);
    return;
  }
  g_autoptr(GError) error = NULL;
  gboolean removed = FALSE;
  if (!loop_instance_delete(q->r->loop, sv->id, n, &removed, &error)) {
    api_reply_internal(q, error);
    return;
  }
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "message", removed ? "instance removed" : "instance undeploying");
  json_object_set_int_member(o, "instance_number", n);
  json_object_set_string_member(o, "status", removed ? "UNDEPLOYED" : "UNDEPLOYED (waiting for the cluster)");
  api_reply_object(q, SOUP_STATUS_OK, o);
}

/* ---- clusters ---- */

static void list_clusters(Req *q, gboolean only_active) {
  g_autoptr(JsonArray) out = json_array_new();
  g_autoptr(GPtrArray) all = store_clusters_all(q->r->store);
  for (guint k = 0; k < all->len; k++) {
    StoreCluster *c = all->pdata[k];
    if (!only_active || loop_cluster_active(q->r->loop, c->id))
      json_array_add_object_element(out, view_cluster(q->r, c));
  }
  reply_array(q, SOUP_STATUS_OK, out);
}

static void h_clusters(Req *q) {
  list_clusters(q, FALSE);
}

static void h_clusters_active(Req *q) {
  list_clusters(q, TRUE);
}

static void h_cluster_get(Req *q) {
  g_autoptr(StoreCluster) c = store_cluster_get(q->r->store, q->cap[0]);
  if (c == NULL) {
    reply_not_found(q, "cluster", q->cap[0]);
    return;
  }
  g_autoptr(JsonObject) o = view_cluster(q->r, c);
  api_reply_object(q, SOUP_STATUS_OK, o);
}

static void h_cluster_delete(Req *q) {
  g_autoptr(StoreCluster) c = store_cluster_get(q->r->store, q->cap[0]);
  if (c == NULL) {
    reply_not_found(q, "cluster", q->cap[0]);
    return;
  }
  g_autoptr(GError) error = NULL;
  if (!loop_cluster_remove(q->r->loop, q->cap[0], &error)) {
    api_reply_internal(q, error);
    return;
  }
  g_autofree char *m = g_strdup_printf(
      "cluster %s removed; its credential is revoked, its subnet %s released and its instances moved",
      q->cap[0], c->subnet);
  api_reply_message(q, SOUP_STATUS_OK, m);
}

/* ---- nodes: drain and removal, done by the cluster that holds the node ---- */

/* The one cluster that holds node, as the aggregates' node lists say, preferring clusters that
 * report; NULL after replying 404 (no cluster lists it) or 409 (several active ones do). */
static char *node_cluster(Req *q, const char *node) {
  g_autoptr(GPtrArray) all = loop_node_clusters(q->r->loop, node);
  g_autoptr(GPtrArray) active = g_ptr_array_new();
  for (guint k = 0; k < all->len; k++)
    if (loop_cluster_active(q->r->loop, all->pdata[k]))
      g_ptr_array_add(active, all->pdata[k]);
  if (all->len == 0) {
    reply_not_found(q, "node", node);
    return NULL;
  }
  if (active->len > 1) {
    od_http_reply_error(q->msg, SOUP_STATUS_CONFLICT, "conflict", q->path,
                        "node %s: %u active clusters have a node of that name", node, active->len);
    return NULL;
  }
  return g_strdup(active->len == 1 ? active->pdata[0] : all->pdata[0]);
}

static void node_request(Req *q, const char *method, gboolean drain) {
  const char *node = q->cap[0];
  g_autofree char *cid = node_cluster(q, node);
  if (cid == NULL)
    return;
  if (!loop_cluster_active(q->r->loop, cid)) {
    g_autoptr(StoreCluster) cl = store_cluster_get(q->r->store, cid);
    od_http_reply_error(q->msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "cluster_unavailable", q->path,
                        "node %s is on cluster %s, which sends no aggregates: try again when it is back",
                        node, cl ? cl->name : cid);
    return;
  }
  g_autofree char *escaped = g_uri_escape_string(node, NULL, FALSE);
  g_autofree char *path = g_strdup_printf("/api/v1/nodes/%s%s", escaped, drain ? "/drain" : "");
  od_log(G_LOG_LEVEL_MESSAGE, drain ? "node-drain" : "node-remove", "node", node, "cluster", cid, "method",
         method, NULL);
  api_hold(q->msg);
  api_cluster_call(q->r, cid, method, path, NULL, 10, api_pass_on, q->msg);
}

static void h_node_drain(Req *q) {
  node_request(q, "POST", TRUE);
}

static void h_node_undrain(Req *q) {
  node_request(q, "DELETE", TRUE);
}

static void h_node_remove(Req *q) {
  node_request(q, "DELETE", FALSE);
}

/* ---- live views (events.c) ---- */

static void h_events(Req *q) {
  events_open(q->r, q->msg, q->user, q->role, sees_all(q), q->token_exp - root_now_ms() / 1000);
}

/* ---- the API description and its page (docs/api.md "API description") ---- */

#define RESOURCE_PREFIX "/org/oakuk/root/"
/* The page's own script and style only: no inline script, nothing from another origin. */
#define PAGE_CSP                                                                                             \
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "            \
  "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

static void reply_resource(Req *q, const char *name, const char *type) {
  g_autofree char *path = g_strconcat(RESOURCE_PREFIX, name, NULL);
  g_autoptr(GBytes) data = g_resources_lookup_data(path, G_RESOURCE_LOOKUP_FLAGS_NONE, NULL);
  if (data == NULL) {
    od_http_reply_error(q->msg, SOUP_STATUS_NOT_FOUND, "not_found", "", "no such file");
    return;
  }
  SoupMessageHeaders *h = soup_server_message_get_response_headers(q->msg);
  soup_message_headers_replace(h, "Content-Security-Policy", PAGE_CSP);
  soup_message_headers_replace(h, "X-Content-Type-Options", "nosniff");
  soup_message_headers_replace(h, "Referrer-Policy", "no-referrer");
  soup_message_headers_replace(h, "Cache-Control", "no-cache");
  gsize len = 0;
  const char *bytes = g_bytes_get_data(data, &len);
  soup_server_message_set_status(q->msg, SOUP_STATUS_OK, NULL);
  soup_server_message_set_response(q->msg, type, SOUP_MEMORY_COPY, bytes, len);
}

static JsonArray *registered_routes(void);

/* "GET /api/v1/services/{}" for a route's method and pattern. */
static char *route_text(const Route *r) {
  g_auto(GStrv) segs = g_strsplit(r->pattern, "/", -1);
  g_autoptr(GString) out = g_string_new(r->method);
  g_string_append_c(out, ' ');
  for (char **s = segs; *s; s++)
    g_string_append_printf(out, "/%s", strcmp(*s, "*") == 0 ? "{}" : *s);
  if (segs[0] == NULL)
    g_string_append_c(out, '/');
  return g_string_free(g_steal_pointer(&out), FALSE);
}

/* The OpenAPI document compiled in, with this root's version and, as x-oakuk-routes, every route
 * it registers (tests/integration/test-root.py checks the two against each other). */
static void h_openapi(Req *q) {
  g_autoptr(GBytes) data =
      g_resources_lookup_data(RESOURCE_PREFIX "openapi.json", G_RESOURCE_LOOKUP_FLAGS_NONE, NULL);
  gsize len = 0;
  const char *text = data ? g_bytes_get_data(data, &len) : NULL;
  g_autoptr(JsonNode) doc = text ? od_json_parse(text, (gssize)len, NULL) : NULL;
  JsonObject *o = doc && JSON_NODE_HOLDS_OBJECT(doc) ? json_node_get_object(doc) : NULL;
  JsonNode *info = o ? json_object_get_member(o, "info") : NULL;
  if (info == NULL || !JSON_NODE_HOLDS_OBJECT(info)) {
    od_http_reply_error(q->msg, SOUP_STATUS_INTERNAL_SERVER_ERROR, "internal", "",
                        "the API description is broken");
    return;
  }
  json_object_set_string_member(json_node_get_object(info), "version", OAKUK_ROOT_VERSION);
  json_object_set_array_member(o, "x-oakuk-routes", registered_routes());
  od_http_reply_json(q->msg, SOUP_STATUS_OK, doc);
}

static void h_docs(Req *q) {
  reply_resource(q, "docs.html", "text/html; charset=utf-8");
}

/* One of the files a page loads (name as the request has it): only those listed, nothing else of
 * the resources. */
static void reply_page_file(Req *q, const char *name) {
  static const struct {
    const char *name, *type;
  } files[] = {{"docs.js", "text/javascript; charset=utf-8"},
               {"docs.css", "text/css; charset=utf-8"},
               {"dashboard.js", "text/javascript; charset=utf-8"},
               {"dashboard.css", "text/css; charset=utf-8"},
               {"favicon.svg", "image/svg+xml"}};
  for (gsize k = 0; k < G_N_ELEMENTS(files); k++)
    if (strcmp(name, files[k].name) == 0) {
      reply_resource(q, files[k].name, files[k].type);
      return;
    }
  od_http_reply_error(q->msg, SOUP_STATUS_NOT_FOUND, "not_found", q->path, "no such file: %s", name);
}

static void h_docs_file(Req *q) {
  reply_page_file(q, q->cap[0]);
}

/* The dashboard (docs/dashboard.md): one page, its script and style, same origin as the API. */
static void h_dashboard(Req *q) {
  reply_resource(q, "dashboard.html", "text/html; charset=utf-8");
}

static void h_ui_file(Req *q) {
  reply_page_file(q, q->cap[0]);
}

/* ---- routing ---- */

/* Roles: reads are everyone's, applications are changed by Admins and Application_Providers,
 * clusters and nodes by Admins and Infrastructure_Providers (docs/security.md "Root API"). */
static const Route routes[] = {
    {"GET", "healthz", AUTH_NONE, h_healthz, FALSE, 0},
    {"GET", "metrics", AUTH_NONE, h_metrics, FALSE, 0},
    {"GET", "api/openapi.json", AUTH_NONE, h_openapi, FALSE, 0},
    {"GET", "docs/openapi.json", AUTH_NONE, h_openapi, FALSE, 0}, /* where Oakestra serves its own */
    {"GET", "api/docs", AUTH_NONE, h_docs, FALSE, 0},
    {"GET", "api/docs/*", AUTH_NONE, h_docs_file, FALSE, 0},
    {"GET", "", AUTH_NONE, h_dashboard, FALSE, 0},
    {"GET", "ui/*", AUTH_NONE, h_ui_file, FALSE, 0},
    {"POST", "api/application", AUTH_USER, h_app_create, TRUE, ROLES_APPS},
    {"GET", "api/application/*", AUTH_USER, h_app_get, TRUE, ROLES_ALL},
    {"PUT", "api/application/*", AUTH_USER, h_app_put, TRUE, ROLES_APPS},
    {"DELETE", "api/application/*", AUTH_USER, h_app_delete, TRUE, ROLES_APPS},
    {"GET", "api/applications", AUTH_USER, h_app_list, TRUE, ROLES_ALL},
    {"GET", "api/applications/*", AUTH_USER, h_app_list_user, TRUE, ROLES_ALL},
    {"GET", "api/service/*", AUTH_USER, h_svc_get, TRUE, ROLES_ALL},
    {"DELETE", "api/service/*", AUTH_USER, h_svc_delete, TRUE, ROLES_APPS},
    {"GET", "api/services/*", AUTH_USER, h_svc_list_app, TRUE, ROLES_ALL},
    {"GET", "api/services", AUTH_USER, h_svc_list_all, TRUE, ROLES_ALL},
    {"POST", "api/service", AUTH_USER, h_svc_add, TRUE, ROLES_APPS},
    {"POST", "api/service/*/instance", AUTH_USER, h_inst_create, TRUE, ROLES_APPS},
    {"DELETE", "api/service/*/instance/*", AUTH_USER, h_inst_delete, TRUE, ROLES_APPS},
    {"GET", "api/clusters", AUTH_USER, h_clusters, TRUE, ROLES_ALL},
    {"GET", "api/clusters/active", AUTH_USER, h_clusters_active, TRUE, ROLES_ALL},
    {"GET", "api/v1/applications", AUTH_USER, h_app_list, FALSE, ROLES_ALL},
    {"POST", "api/v1/applications", AUTH_USER, h_app_create, FALSE, ROLES_APPS},
    {"PUT", "api/v1/applications", AUTH_USER, h_app_apply, FALSE, ROLES_APPS},
    {"GET", "api/v1/applications/*", AUTH_USER, h_app_get, FALSE, ROLES_ALL},
    {"PUT", "api/v1/applications/*", AUTH_USER, h_app_put, FALSE, ROLES_APPS},
    {"DELETE", "api/v1/applications/*", AUTH_USER, h_app_delete, FALSE, ROLES_APPS},
    {"GET", "api/v1/applications/*/services", AUTH_USER, h_svc_list_app, FALSE, ROLES_ALL},
    {"GET", "api/v1/services", AUTH_USER, h_svc_list_all, FALSE, ROLES_ALL},
    {"GET", "api/v1/services/*", AUTH_USER, h_svc_get, FALSE, ROLES_ALL},
    {"DELETE", "api/v1/services/*", AUTH_USER, h_svc_delete, FALSE, ROLES_APPS},
    {"POST", "api/v1/services/*/rollback", AUTH_USER, h_svc_rollback, FALSE, ROLES_APPS},
    {"GET", "api/v1/services/*/explain", AUTH_USER, h_explain, FALSE, ROLES_ALL},
    {"GET", "api/v1/services/*/instances", AUTH_USER, h_inst_list, FALSE, ROLES_ALL},
    {"POST", "api/v1/services/*/instances", AUTH_USER, h_inst_create, FALSE, ROLES_APPS},
    {"DELETE", "api/v1/services/*/instances/*", AUTH_USER, h_inst_delete, FALSE, ROLES_APPS},
    {"GET", "api/v1/services/*/instances/*/logs", AUTH_USER, h_inst_logs, FALSE, ROLES_APPS},
    {"GET", "api/v1/events", AUTH_USER, h_events, FALSE, ROLES_ALL},
    {"GET", "api/v1/clusters", AUTH_USER, h_clusters, FALSE, ROLES_ALL},
    {"GET", "api/v1/clusters/*", AUTH_USER, h_cluster_get, FALSE, ROLES_ALL},
    {"DELETE", "api/v1/clusters/*", AUTH_USER, h_cluster_delete, FALSE, ROLES_INFRA},
    {"POST", "api/v1/nodes/*/drain", AUTH_USER, h_node_drain, FALSE, ROLES_INFRA},
    {"DELETE", "api/v1/nodes/*/drain", AUTH_USER, h_node_undrain, FALSE, ROLES_INFRA},
    {"DELETE", "api/v1/nodes/*", AUTH_USER, h_node_remove, FALSE, ROLES_INFRA},
};

/* Route i of the root (the user API's, then logins, users and tokens, then the clusters'); NULL
 * past the last. */
static const Route *route_at(gsize i) {
  if (i < G_N_ELEMENTS(routes))
    return &routes[i];
  i -= G_N_ELEMENTS(routes);
  if (i < root_auth_route_count)
    return &root_auth_routes[i];
  i -= root_auth_route_count;
  return i < root_cluster_route_count ? &root_cluster_routes[i] : NULL;
}

static JsonArray *registered_routes(void) {
  JsonArray *all = json_array_new();
  const Route *r;
  for (gsize i = 0; (r = route_at(i)) != NULL; i++) {
    g_autofree char *text = route_text(r);
    json_array_add_string_element(all, text);
  }
  return all;
}

void api_compat_error_shape(SoupServerMessage *msg) {
  guint status = soup_server_message_get_status(msg);
  if (status < 400)
    return;
  SoupMessageBody *body = soup_server_message_get_response_body(msg);
  g_autoptr(GBytes) bytes = soup_message_body_flatten(body);
  gsize len = 0;
  const char *data = g_bytes_get_data(bytes, &len);
  g_autoptr(JsonNode) n = len ? od_json_parse(data, (gssize)len, NULL) : NULL;
  JsonObject *o = n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
  JsonNode *e = o ? json_object_get_member(o, "error") : NULL;
  if (e == NULL || !JSON_NODE_HOLDS_OBJECT(e) || json_object_has_member(o, "status"))
    return;
  json_object_set_int_member(o, "code", status);
  json_object_set_string_member(o, "status", soup_status_get_phrase(status));
  const char *message = api_str(json_node_get_object(e), "message");
  json_object_set_string_member(o, "message", message ? message : "");
  g_autofree char *text = od_json_to_string(n, FALSE);
  soup_message_body_truncate(body);
  soup_message_body_append(body, SOUP_MEMORY_COPY, text, strlen(text));
}

/* Tries one route; TRUE when it answered the request. */
static gboolean try_route(Root *r, const Route *route, SoupServerMessage *msg, const char *method,
                          const char *path, char **seg, GString *allow) {
  Req q = {.r = r, .msg = msg, .path = path, .compat = route->compat};
  if (!od_path_match(seg, route->pattern, q.cap, G_N_ELEMENTS(q.cap)))
    return FALSE;
  if (strcmp(route->method, method) != 0) {
    g_string_append_printf(allow, "%s%s", allow->len ? ", " : "", route->method);
    return FALSE;
  }
  od_http_set_route(msg, route->pattern);
  if (api_authenticate(&q, route))
    route->fn(&q);
  if (route->compat)
    api_compat_error_shape(msg); /* nothing while the answer is still to come */
  g_free(q.user);
  return TRUE;
}

/* ---- CORS (docs/api.md "CORS") ---- */

static gboolean cors_allowed(Root *r, const char *origin) {
  return r->cfg.cors_any ||
         (r->cfg.cors_origins && g_strv_contains((const char *const *)r->cfg.cors_origins, origin));
}

/* The methods of the routes path matches, "GET, POST" (empty when none does). */
static void route_methods(char **seg, GString *allow) {
  const char *cap[3];
  const Route *r;
  for (gsize i = 0; (r = route_at(i)) != NULL; i++)
    if (od_path_match(seg, r->pattern, cap, G_N_ELEMENTS(cap)) && !strstr(allow->str, r->method))
      g_string_append_printf(allow, "%s%s", allow->len ? ", " : "", r->method);
}

/* A request from a page of another origin: the CORS headers when the origin is allowed, and the
 * answer to a preflight (OPTIONS). TRUE when the request is answered. */
static gboolean cors(Root *r, SoupServerMessage *msg, const char *method, const char *path, char **seg) {
  SoupMessageHeaders *in = soup_server_message_get_request_headers(msg);
  const char *origin = soup_message_headers_get_one(in, "Origin");
  if (origin == NULL)
    return FALSE;
  SoupMessageHeaders *out = soup_server_message_get_response_headers(msg);
  gboolean allowed = cors_allowed(r, origin);
  if (allowed) {
    soup_message_headers_replace(out, "Access-Control-Allow-Origin", r->cfg.cors_any ? "*" : origin);
    soup_message_headers_append(out, "Vary", "Origin");
  }
  if (strcmp(method, "OPTIONS") != 0)
    return FALSE;
  if (!allowed) {
    od_http_reply_error(msg, SOUP_STATUS_FORBIDDEN, "cors_origin", "",
                        "origin %s may not call this API from a page (it is not in [root] cors_origins)",
                        origin);
    return TRUE;
  }
  g_autoptr(GString) methods = g_string_new(NULL);
  route_methods(seg, methods);
  if (methods->len == 0) {
    od_http_reply_no_route(msg, method, path, NULL);
    return TRUE;
  }
  soup_message_headers_replace(out, "Access-Control-Allow-Methods", methods->str);
  soup_message_headers_replace(out, "Access-Control-Allow-Headers", "Authorization, Content-Type");
  soup_message_headers_replace(out, "Access-Control-Max-Age", "600");
  soup_server_message_set_status(msg, SOUP_STATUS_NO_CONTENT, NULL);
  return TRUE;
}

static void handle(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                   gpointer data) {
  Root *r = data;
  const char *method = soup_server_message_get_method(msg);
  g_auto(GStrv) seg = od_path_split(path);
  if (cors(r, msg, method, path, seg))
    return;
  g_autoptr(GString) allow = g_string_new(NULL);
  const Route *route;
  for (gsize i = 0; (route = route_at(i)) != NULL; i++)
    if (try_route(r, route, msg, method, path, seg, allow))
      return;
  od_http_reply_no_route(msg, method, path, allow->str);
}

static void log_request(SoupServer *server, SoupServerMessage *msg, gpointer data) {
  /* A request libsoup refused before parsing its line has no URI. */
  GUri *uri = soup_server_message_get_uri(msg);
  od_log(G_LOG_LEVEL_DEBUG, "http", "method", soup_server_message_get_method(msg), "path",
         uri ? g_uri_get_path(uri) : "(unparsed)", "status",
         soup_status_get_phrase(soup_server_message_get_status(msg)), NULL);
}

void root_api_register(Root *r) {
  soup_server_add_handler(r->server, NULL, handle, r, NULL);
  if (r->http_durations == NULL)
    r->http_durations = od_histogram_new("oakuk_root_http_request_duration_seconds",
                                         "Time from a request's first byte to the end of its response, by "
                                         "method and route",
                                         od_http_duration_bounds, od_http_duration_bounds_len);
  od_http_count_requests(r->server, r->http_counts, r->http_durations);
  g_signal_connect(r->server, "request-finished", G_CALLBACK(log_request), NULL);
}

/* Deployment descriptors (SLA): parse, validate, keep, serialize back (docs/architecture.md §4).
 *
 * The parsed JSON tree is kept as it was (unknown keys included) so *_to_json round-trips every key
 * in its original order; typed copies of the known fields feed the getters. Validation collects every
 * problem with its JSON path before failing. */
#include "oakuk-private.h"
#include "oci-private.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <json-glib/json-glib.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NAME_MAX_LEN 30

typedef struct {
  int32_t host;
  int32_t guest;
  int32_t proto;
} Port;

typedef struct {
  int32_t type;
  char *cluster;
  GPtrArray *values; /* char* */
} Constraint;

struct oakuk_microservice {
  gint refcount;           /* used only when standalone */
  oakuk_descriptor *owner; /* the descriptor holding it, or NULL when standalone */
  JsonNode *root;          /* standalone: the node owning obj */
  JsonObject *obj;
  char *id, *name, *ns, *app_name, *app_ns, *service_name;
  int32_t virt[2];
  size_t n_virt;
  GPtrArray *arch;    /* char* */
  GPtrArray *uk_code; /* char*, one per architecture (or one OCI reference, uk_oci) */
  bool uk_oci;        /* the unikernel code is an OCI reference serving every architecture */
  GPtrArray *uk_sha;  /* char*, one per architecture, or NULL */
  char *ctr_code, *ctr_sha;
  int64_t memory, vcpus, vgpus, vtpus, bw_in, bw_out, storage;
  GPtrArray *cmd, *env; /* char* */
  GArray *ports;        /* Port */
  char *rr_ip, *rr_ip_v6, *closest_ip, *closest_ip_v6;
  bool one_shot, privileged;
  char *target_node;
  GPtrArray *constraints; /* Constraint* */
  int32_t emulation, restart, uk_net, network, uk_start;
  int64_t uk_warm_pool;
  char *uk_flavor, *uk_version;
  int64_t uk_graceful;
  int64_t ready_tcp; /* -1: not given (the first TCP port's guest side) */
  int64_t reschedule_after_s;
  char *ready_serial;
};

struct oakuk_application {
  oakuk_descriptor *owner;
  JsonObject *obj;
  char *id, *name, *ns, *desc;
  GPtrArray *services; /* oakuk_microservice*, owned */
};

struct oakuk_descriptor {
  gint refcount;
  JsonNode *root;
  char *sla_version, *customer_id;
  GPtrArray *apps;     /* oakuk_application*, owned */
  GPtrArray *warnings; /* Warning* */
};

/* A warning: the JSON path it is about, what is said about it, and both as "path: message". */
typedef struct {
  char *path;
  char *message;
  char *text;
} Warning;

typedef struct {
  OakukProblems problems;
  GPtrArray *warnings; /* Warning* */
} Ctx;

/* ---------------------------------------------------------------------------------------------
 * Small helpers */

static char *path_key(const char *prefix, const char *key) {
  return (prefix && *prefix) ? g_strdup_printf("%s.%s", prefix, key) : g_strdup(key);
}

static char *path_index(const char *prefix, guint i) {
  return g_strdup_printf("%s[%u]", prefix, i);
}

/* A user string made safe and short for a message. */
static char *quote(const char *s) {
  g_autofree char *esc = g_strescape(s, NULL);
  if (strlen(esc) > 64) {
    esc[61] = '\0';
    return g_strdup_printf("\"%s...\"", esc);
  }
  return g_strdup_printf("\"%s\"", esc);
}

static const char *node_type_name(JsonNode *n) {
  switch (json_node_get_node_type(n)) {
  case JSON_NODE_OBJECT: return "an object";
  case JSON_NODE_ARRAY: return "an array";
  case JSON_NODE_NULL: return "null";
  case JSON_NODE_VALUE:
    switch (json_node_get_value_type(n)) {
    case G_TYPE_BOOLEAN: return "a boolean";
    case G_TYPE_INT64: return "an integer";
    case G_TYPE_DOUBLE: return "a number";
    case G_TYPE_STRING: return "a string";
    default: return "a value";
    }
  }
  return "a value";
}

static bool node_is_string(JsonNode *n) {
  return JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING;
}

static bool node_is_bool(JsonNode *n) {
  return JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_BOOLEAN;
}

static bool node_is_number(JsonNode *n) {
  return JSON_NODE_HOLDS_VALUE(n) &&
         (json_node_get_value_type(n) == G_TYPE_INT64 || json_node_get_value_type(n) == G_TYPE_DOUBLE);
}

static void warning_free(gpointer p) {
  Warning *w = p;
  g_free(w->path);
  g_free(w->message);
  g_free(w->text);
  g_free(w);
}

static void ctx_warn(Ctx *ctx, const char *path, const char *what) {
  if (ctx->warnings == NULL)
    return;
  Warning *w = g_new0(Warning, 1);
  w->path = g_strdup(path);
  w->message = g_strdup(what);
  w->text = g_strdup_printf("%s: %s", path, what);
  g_ptr_array_add(ctx->warnings, w);
}

static void G_GNUC_PRINTF(3, 4) ctx_warnf(Ctx *ctx, const char *path, const char *fmt, ...) {
  if (ctx->warnings == NULL)
    return;
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *what = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  ctx_warn(ctx, path, what);
}

static bool name_is_valid(const char *s) {
  size_t n = strlen(s);
  if (n < 1 || n > NAME_MAX_LEN)
    return false;
  for (size_t i = 0; i < n; i++)
    if (!g_ascii_isalnum(s[i]))
      return false;
  return true;
}

static bool in_list(const char *key, const char *const *list) {
  for (size_t i = 0; list[i]; i++)
    if (strcmp(key, list[i]) == 0)
      return true;
  return false;
}

static void warn_unknown_keys(Ctx *ctx, JsonObject *obj, const char *prefix, const char *const *known,
                              const char *const *also_known) {
  GList *members = json_object_get_members(obj);
  for (GList *l = members; l; l = l->next) {
    const char *key = l->data;
    if (in_list(key, known) || (also_known && in_list(key, also_known)))
      continue;
    g_autofree char *path = path_key(prefix, key);
    ctx_warn(ctx, path, "unknown key kept");
  }
  g_list_free(members);
}

/* Splits a separated list, trimming whitespace around each entry; one empty last entry (a trailing
 * separator) is dropped. An empty or blank string gives no entries. */
static GPtrArray *split_list(const char *s, char sep) {
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  /* A plain scan rather than g_strsplit, whose strstr per entry is quadratic under ASan. */
  const char *start = s;
  for (const char *p = s;; p++) {
    if (*p != sep && *p != '\0')
      continue;
    char *entry = g_strstrip(g_strndup(start, (gsize)(p - start)));
    if (*p == '\0' && *entry == '\0') {
      g_free(entry); /* trailing separator, or nothing at all */
      break;
    }
    g_ptr_array_add(out, entry);
    if (*p == '\0')
      break;
    start = p + 1;
  }
  return out;
}

static bool has_control_or_space(const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if (*p <= 0x20 || *p == 0x7f)
      return true;
  return false;
}

static bool is_hex64(const char *s) {
  size_t n = 0;
  for (; s[n]; n++)
    if (!g_ascii_isxdigit(s[n]))
      return false;
  return n == 64;
}

/* ---------------------------------------------------------------------------------------------
 * Typed field readers: each reports its own problem and returns false when the value is unusable. */

/* Returns the string member, NULL when absent (a problem when required) or of another type. */
static const char *get_string(Ctx *ctx, JsonObject *obj, const char *prefix, const char *key, bool required) {
  JsonNode *n = json_object_get_member(obj, key);
  g_autofree char *path = path_key(prefix, key);
  if (n == NULL) {
    if (required)
      oakuk_problems_add(&ctx->problems, path, "required (a string)");
    return NULL;
  }
  if (!node_is_string(n)) {
    oakuk_problems_add(&ctx->problems, path, "must be a string, got %s", node_type_name(n));
    return NULL;
  }
  return json_node_get_string(n);
}

static const char *get_name(Ctx *ctx, JsonObject *obj, const char *prefix, const char *key, bool required) {
  const char *s = get_string(ctx, obj, prefix, key, required);
  if (s && !name_is_valid(s)) {
    g_autofree char *path = path_key(prefix, key);
    g_autofree char *q = quote(s);
    oakuk_problems_add(&ctx->problems, path,
                       "must be 1 to 30 letters or digits (^[a-zA-Z0-9]{1,30}$), got %s", q);
    return NULL;
  }
  return s;
}

/* Reads an integral number of [min, max]; a JSON double with an integral value is accepted. */
static bool node_to_int(JsonNode *n, int64_t min, int64_t max, int64_t *out) {
  if (json_node_get_value_type(n) == G_TYPE_INT64) {
    int64_t v = json_node_get_int(n);
    if (v < min || v > max)
      return false;
    *out = v;
    return true;
  }
  double d = json_node_get_double(n);
  if (!isfinite(d) || d != floor(d) || d < (double)min || d > (double)max)
    return false;
  *out = (int64_t)d;
  return true;
}

static char *number_text(JsonNode *n) {
  if (json_node_get_value_type(n) == G_TYPE_INT64)
    return g_strdup_printf("%" G_GINT64_FORMAT, json_node_get_int(n));
  char buf[G_ASCII_DTOSTR_BUF_SIZE];
  return g_strdup(g_ascii_dtostr(buf, sizeof buf, json_node_get_double(n)));
}

static void get_int(Ctx *ctx, JsonObject *obj, const char *prefix, const char *key, bool required,
                    int64_t min, int64_t max, const char *unit, int64_t *out) {
  JsonNode *n = json_object_get_member(obj, key);
  g_autofree char *path = path_key(prefix, key);
  *out = 0;
  if (n == NULL) {
    if (required)
      oakuk_problems_add(&ctx->problems, path,
                         "required (an integer between %" G_GINT64_FORMAT " and %" G_GINT64_FORMAT "%s)", min,
                         max, unit);
    return;
  }
  if (!node_is_number(n)) {
    oakuk_problems_add(&ctx->problems, path,
                       "must be an integer between %" G_GINT64_FORMAT " and %" G_GINT64_FORMAT "%s, got %s",
                       min, max, unit, node_type_name(n));
    return;
  }
  if (!node_to_int(n, min, max, out)) {
    g_autofree char *text = number_text(n);
    oakuk_problems_add(&ctx->problems, path,
                       "must be an integer between %" G_GINT64_FORMAT " and %" G_GINT64_FORMAT "%s, got %s",
                       min, max, unit, text);
  }
}

static bool get_bool(Ctx *ctx, JsonObject *obj, const char *prefix, const char *key) {
  JsonNode *n = json_object_get_member(obj, key);
  if (n == NULL)
    return false;
  if (!node_is_bool(n)) {
    g_autofree char *path = path_key(prefix, key);
    oakuk_problems_add(&ctx->problems, path, "must be a boolean, got %s", node_type_name(n));
    return false;
  }
  return json_node_get_boolean(n);
}

/* Returns the array member or NULL (absent, or a problem when of another type). */
static JsonArray *get_array(Ctx *ctx, JsonObject *obj, const char *prefix, const char *key,
                            const char *what) {
  JsonNode *n = json_object_get_member(obj, key);
  if (n == NULL)
    return NULL;
  if (!JSON_NODE_HOLDS_ARRAY(n)) {
    g_autofree char *path = path_key(prefix, key);
    oakuk_problems_add(&ctx->problems, path, "must be %s, got %s", what, node_type_name(n));
    return NULL;
  }
  return json_node_get_array(n);
}

static JsonObject *get_object(Ctx *ctx, JsonObject *obj, const char *prefix, const char *key) {
  JsonNode *n = json_object_get_member(obj, key);
  if (n == NULL)
    return NULL;
  if (!JSON_NODE_HOLDS_OBJECT(n)) {
    g_autofree char *path = path_key(prefix, key);
    oakuk_problems_add(&ctx->problems, path, "must be an object, got %s", node_type_name(n));
    return NULL;
  }
  return json_node_get_object(n);
}

/* Reads a choice among names; returns the index in names or def when absent, -1 when invalid. */
static int get_choice(Ctx *ctx, JsonObject *obj, const char *prefix, const char *key,
                      const char *const *names, const char *known, int def) {
  JsonNode *n = json_object_get_member(obj, key);
  if (n == NULL)
    return def;
  const char *s = get_string(ctx, obj, prefix, key, false);
  if (s == NULL)
    return -1;
  for (int i = 0; names[i]; i++)
    if (strcmp(s, names[i]) == 0)
      return i;
  g_autofree char *path = path_key(prefix, key);
  g_autofree char *q = quote(s);
  oakuk_problems_add(&ctx->problems, path, "unknown value %s (known: %s)", q, known);
  return -1;
}

/* ---------------------------------------------------------------------------------------------
 * Microservice validation */

static const char *const ms_known_keys[] = {"microserviceID",
                                            "microservice_name",
                                            "microservice_namespace",
                                            "virtualization",
                                            "cmd",
                                            "environment",
                                            "memory",
                                            "vcpus",
                                            "vgpus",
                                            "vtpus",
                                            "bandwidth_in",
                                            "bandwidth_out",
                                            "storage",
                                            "code",
                                            "image",
                                            "arch",
                                            "state",
                                            "port",
                                            "addresses",
                                            "added_files",
                                            "one_shot",
                                            "privileged",
                                            "constraints",
                                            "connectivity",
                                            "target_node",
                                            "code_sha256",
                                            "emulation",
                                            "restart",
                                            "network",
                                            "unikernel",
                                            "readiness",
                                            "reschedule_after_s",
                                            NULL};

/* Keys of an Oakestra job document (a microservice as the cluster and node receive it). */
static const char *const job_keys[] = {
    "app_name",      "app_ns", "job_name",        "service_name",
    "service_ns",    "_id",    "applicationID",   "next_instance_progressive_number",
    "instance_list", "status", "instance_number", NULL};

static bool ms_has_virt(const oakuk_microservice *ms, int32_t virt) {
  for (size_t i = 0; i < ms->n_virt; i++)
    if (ms->virt[i] == virt)
      return true;
  return false;
}

/* Returns true when virtualization was given as an array. */
static bool parse_virtualization(Ctx *ctx, oakuk_microservice *ms, JsonObject *obj, const char *prefix) {
  JsonNode *n = json_object_get_member(obj, "virtualization");
  g_autofree char *path = path_key(prefix, "virtualization");
  if (n == NULL) {
    oakuk_problems_add(&ctx->problems, path,
                       "required (\"container\", \"docker\" or \"unikernel\", or an array of them)");
    return false;
  }
  if (node_is_string(n)) {
    const char *s = json_node_get_string(n);
    int32_t v = oakuk_virt_from_name(s);
    if (v == OAKUK_VIRT_NONE) {
      g_autofree char *q = quote(s);
      oakuk_problems_add(&ctx->problems, path,
                         "unknown virtualization %s (known: container, docker, unikernel)", q);
      return false;
    }
    ms->virt[ms->n_virt++] = v;
    return false;
  }
  if (!JSON_NODE_HOLDS_ARRAY(n)) {
    oakuk_problems_add(&ctx->problems, path, "must be a string or an array of strings, got %s",
                       node_type_name(n));
    return false;
  }
  JsonArray *a = json_node_get_array(n);
  guint len = json_array_get_length(a);
  if (len == 0) {
    oakuk_problems_add(&ctx->problems, path,
                       "must not be an empty array (list \"unikernel\" and/or \"container\" by preference)");
    return true;
  }
  bool ok = true;
  int32_t found[2] = {0, 0};
  size_t nfound = 0;
  for (guint i = 0; i < len; i++) {
    JsonNode *e = json_array_get_element(a, i);
    g_autofree char *epath = path_index(path, i);
    if (!node_is_string(e)) {
      oakuk_problems_add(&ctx->problems, epath, "must be a string, got %s", node_type_name(e));
      ok = false;
      continue;
    }
    const char *s = json_node_get_string(e);
    int32_t v = oakuk_virt_from_name(s);
    g_autofree char *q = quote(s);
    if (v == OAKUK_VIRT_NONE) {
      oakuk_problems_add(&ctx->problems, epath,
                         "unknown virtualization %s (known: container, docker, unikernel)", q);
      ok = false;
    } else if ((nfound > 0 && found[0] == v) || (nfound > 1 && found[1] == v)) {
      oakuk_problems_add(&ctx->problems, epath,
                         "duplicate virtualization %s (\"docker\" means \"container\")", q);
      ok = false;
    } else {
      found[nfound++] = v;
    }
  }
  if (ok) {
    ms->n_virt = nfound;
    memcpy(ms->virt, found, sizeof found);
  }
  return true;
}

/* Returns the JSON length of arch[] (0 when absent or unusable). */
static guint parse_arch(Ctx *ctx, oakuk_microservice *ms, JsonObject *obj, const char *prefix) {
  JsonArray *a = get_array(ctx, obj, prefix, "arch", "an array of architecture names");
  if (a == NULL)
    return 0;
  g_autofree char *path = path_key(prefix, "arch");
  guint len = json_array_get_length(a);
  for (guint i = 0; i < len; i++) {
    JsonNode *e = json_array_get_element(a, i);
    g_autofree char *epath = path_index(path, i);
    if (!node_is_string(e)) {
      oakuk_problems_add(&ctx->problems, epath, "must be a string, got %s", node_type_name(e));
      continue;
    }
    const char *s = json_node_get_string(e);
    g_autofree char *q = quote(s);
    if (!oakuk_arch_is_known(s)) {
      oakuk_problems_add(&ctx->problems, epath, "unknown architecture %s (known: amd64, arm64, arm, riscv64)",
                         q);
      continue;
    }
    bool dup = false;
    for (guint j = 0; j < ms->arch->len; j++)
      dup = dup || strcmp(g_ptr_array_index(ms->arch, j), s) == 0;
    if (dup) {
      oakuk_problems_add(&ctx->problems, epath, "duplicate architecture %s", q);
      continue;
    }
    g_ptr_array_add(ms->arch, g_strdup(s));
  }
  return len;
}

/* A unikernel's code that is one OCI reference (a registry reference or oci-archive:<url>) rather
 * than URLs: no comma, no "://" of its own. */
static bool uk_code_is_oci(const char *code) {
  return g_str_has_prefix(code, "oci-archive:") || (*code && !strchr(code, ',') && !strstr(code, "://"));
}

/* One OCI reference for every architecture: arch[] may be omitted (the root resolves the reference's
 * platforms), and restricts them when given. */
static void parse_uk_oci(Ctx *ctx, oakuk_microservice *ms, const char *code, const char *cpath) {
  g_autofree char *q = quote(code);
  if (has_control_or_space(code)) {
    oakuk_problems_add(&ctx->problems, cpath,
                       "OCI reference %s must not contain whitespace or control characters", q);
    return;
  }
  if (g_str_has_prefix(code, "oci-archive:")) {
    const char *u = code + strlen("oci-archive:");
    const char *rest = g_str_has_prefix(u, "http://") || g_str_has_prefix(u, "file://") ? u + 7
                       : g_str_has_prefix(u, "https://")                                ? u + 8
                                                                                        : NULL;
    if (rest == NULL || *rest == '\0') {
      oakuk_problems_add(
          &ctx->problems, cpath,
          "%s: oci-archive: needs an http://, https:// or file:// URL of an OCI layout tarball "
          "after it",
          q);
      return;
    }
  } else {
    OakukOciRef ref;
    g_autoptr(GError) err = NULL;
    if (!oakuk_oci_ref_parse(code, &ref, &err)) {
      oakuk_problems_add(&ctx->problems, cpath,
                         "%s (expected an OCI reference \"registry/name:tag\" or \"name@sha256:<digest>\", "
                         "\"oci-archive:<url>\", or one kernel image URL per architecture)",
                         err->message);
      return;
    }
    oakuk_oci_ref_clear(&ref);
  }
  ms->uk_oci = true;
  g_ptr_array_add(ms->uk_code, g_strdup(code));
}

static void parse_uk_code(Ctx *ctx, oakuk_microservice *ms, const char *code, const char *cpath,
                          const char *prefix, guint n_arch) {
  if (uk_code_is_oci(code)) {
    parse_uk_oci(ctx, ms, code, cpath);
    return;
  }
  g_autoptr(GPtrArray) urls = split_list(code, ',');
  g_autofree char *apath = path_key(prefix, "arch");
  if (urls->len == 0)
    oakuk_problems_add(&ctx->problems, cpath, "must list one kernel image URL per architecture, got none");
  for (guint i = 0; i < urls->len; i++) {
    const char *u = g_ptr_array_index(urls, i);
    g_autofree char *q = quote(u);
    const char *rest = NULL;
    if (g_str_has_prefix(u, "http://"))
      rest = u + 7;
    else if (g_str_has_prefix(u, "https://"))
      rest = u + 8;
    else if (g_str_has_prefix(u, "file://"))
      rest = u + 7;
    if (*u == '\0')
      oakuk_problems_add(&ctx->problems, cpath, "URL %u is empty", i + 1);
    else if (rest == NULL)
      oakuk_problems_add(&ctx->problems, cpath, "URL %u %s must start with http://, https:// or file://",
                         i + 1, q);
    else if (*rest == '\0')
      oakuk_problems_add(&ctx->problems, cpath, "URL %u %s has nothing after the scheme", i + 1, q);
    else if (has_control_or_space(u))
      oakuk_problems_add(&ctx->problems, cpath, "URL %u %s must not contain whitespace or control characters",
                         i + 1, q);
  }
  if (n_arch == 0)
    oakuk_problems_add(&ctx->problems, apath, "a unikernel needs a non-empty arch[] (one per code URL)");
  else if (urls->len != n_arch && urls->len > 0)
    oakuk_problems_add(&ctx->problems, apath, "%u architecture%s but %u code URL%s", n_arch,
                       n_arch == 1 ? "" : "s", urls->len, urls->len == 1 ? "" : "s");
  g_ptr_array_extend_and_steal(ms->uk_code, g_steal_pointer(&urls));
}

static void parse_container_code(Ctx *ctx, oakuk_microservice *ms, const char *code, const char *cpath) {
  g_autofree char *q = quote(code);
  if (*code == '\0')
    oakuk_problems_add(&ctx->problems, cpath, "must be a non-empty OCI image reference");
  else if (has_control_or_space(code))
    oakuk_problems_add(&ctx->problems, cpath,
                       "OCI reference %s must not contain whitespace or control characters", q);
  else if (g_str_has_prefix(code, "oci-archive:") && code[strlen("oci-archive:")] == '\0')
    oakuk_problems_add(&ctx->problems, cpath, "oci-archive: needs a URL after it");
  else
    ms->ctr_code = g_strdup(code);
}

static void parse_code_for(Ctx *ctx, oakuk_microservice *ms, int32_t virt, const char *code,
                           const char *cpath, const char *prefix, guint n_arch) {
  if (virt == OAKUK_VIRT_UNIKERNEL)
    parse_uk_code(ctx, ms, code, cpath, prefix, n_arch);
  else
    parse_container_code(ctx, ms, code, cpath);
}

/* Validates a per-variant object ({"unikernel": "...", "container": "..."}) and returns its strings
 * indexed by virtualization (container at 0, unikernel at 1); missing entries are problems when
 * all_required. Returns false when the object is unusable. */
static bool parse_variant_object(Ctx *ctx, const oakuk_microservice *ms, JsonObject *o, const char *path,
                                 bool all_required, const char *entries[2]) {
  bool ok = true;
  entries[0] = entries[1] = NULL;
  GList *members = json_object_get_members(o);
  for (GList *l = members; l; l = l->next) {
    const char *key = l->data;
    g_autofree char *kpath = path_key(path, key);
    g_autofree char *q = quote(key);
    JsonNode *v = json_object_get_member(o, key);
    int32_t virt = oakuk_virt_from_name(key);
    if (virt == OAKUK_VIRT_NONE) {
      oakuk_problems_add(&ctx->problems, kpath,
                         "unknown virtualization %s (known: container, docker, unikernel)", q);
      ok = false;
    } else if (!ms_has_virt(ms, virt)) {
      oakuk_problems_add(&ctx->problems, kpath, "the service has no %s variant in virtualization", q);
      ok = false;
    } else if (!node_is_string(v)) {
      oakuk_problems_add(&ctx->problems, kpath, "must be a string, got %s", node_type_name(v));
      ok = false;
    } else if (entries[virt - 1] != NULL) {
      oakuk_problems_add(&ctx->problems, kpath, "second entry for %s (\"docker\" means \"container\")",
                         oakuk_virt_name(virt));
      ok = false;
    } else {
      entries[virt - 1] = json_node_get_string(v);
    }
  }
  g_list_free(members);
  for (size_t i = 0; ok && all_required && i < ms->n_virt; i++)
    if (entries[ms->virt[i] - 1] == NULL) {
      oakuk_problems_add(&ctx->problems, path, "missing the entry for \"%s\" (listed in virtualization)",
                         oakuk_virt_name(ms->virt[i]));
      ok = false;
    }
  return ok;
}

static void parse_code(Ctx *ctx, oakuk_microservice *ms, JsonObject *obj, const char *prefix, bool virt_array,
                       guint n_arch) {
  JsonNode *n = json_object_get_member(obj, "code");
  g_autofree char *path = path_key(prefix, "code");
  if (ms->n_virt == 0)
    return; /* virtualization is wrong; that problem is reported already */
  if (n == NULL) {
    oakuk_problems_add(&ctx->problems, path,
                       virt_array ? "required (an object with one entry per virtualization)"
                                  : "required (a string)");
    return;
  }
  if (!virt_array) {
    if (!node_is_string(n))
      oakuk_problems_add(&ctx->problems, path, "must be a string, got %s", node_type_name(n));
    else
      parse_code_for(ctx, ms, ms->virt[0], json_node_get_string(n), path, prefix, n_arch);
    return;
  }
  if (!JSON_NODE_HOLDS_OBJECT(n)) {
    oakuk_problems_add(&ctx->problems, path,
                       "must be an object {\"unikernel\": ..., \"container\": ...} when virtualization is an "
                       "array, got %s",
                       node_type_name(n));
    return;
  }
  const char *entries[2];
  if (!parse_variant_object(ctx, ms, json_node_get_object(n), path, true, entries))
    return;
  for (size_t i = 0; i < ms->n_virt; i++) {
    int32_t v = ms->virt[i];
    g_autofree char *vpath = path_key(path, oakuk_virt_name(v));
    parse_code_for(ctx, ms, v, entries[v - 1], vpath, prefix, n_arch);
  }
}

static bool check_digest(Ctx *ctx, const char *path, const char *d, guint index) {
  if (is_hex64(d))
    return true;
  g_autofree char *q = quote(d);
  if (index > 0)
    oakuk_problems_add(&ctx->problems, path, "digest %u %s must be exactly 64 hex digits", index, q);
  else
    oakuk_problems_add(&ctx->problems, path, "digest %s must be exactly 64 hex digits", q);
  return false;
}

static void parse_sha_for(Ctx *ctx, oakuk_microservice *ms, int32_t virt, const char *s, const char *path) {
  if (virt == OAKUK_VIRT_CONTAINER) {
    if (check_digest(ctx, path, s, 0))
      ms->ctr_sha = g_ascii_strdown(s, -1);
    return;
  }
  if (ms->uk_oci) {
    oakuk_problems_add(&ctx->problems, path,
                       "does not apply to an OCI reference: pin the image in code with name@sha256:<digest>");
    return;
  }
  g_autoptr(GPtrArray) list = split_list(s, ',');
  bool ok = true;
  for (guint i = 0; i < list->len; i++)
    ok = check_digest(ctx, path, g_ptr_array_index(list, i), i + 1) && ok;
  if (list->len != ms->uk_code->len) {
    oakuk_problems_add(&ctx->problems, path, "%u code URL%s but %u sha256 digest%s", ms->uk_code->len,
                       ms->uk_code->len == 1 ? "" : "s", list->len, list->len == 1 ? "" : "s");
    return;
  }
  if (!ok)
    return;
  ms->uk_sha = g_ptr_array_new_with_free_func(g_free);
  for (guint i = 0; i < list->len; i++)
    g_ptr_array_add(ms->uk_sha, g_ascii_strdown(g_ptr_array_index(list, i), -1));
}

static void parse_code_sha256(Ctx *ctx, oakuk_microservice *ms, JsonObject *obj, const char *prefix,
                              bool virt_array) {
  JsonNode *n = json_object_get_member(obj, "code_sha256");
  g_autofree char *path = path_key(prefix, "code_sha256");
  if (n == NULL || ms->n_virt == 0)
    return;
  if (!virt_array) {
    if (!node_is_string(n))
      oakuk_problems_add(&ctx->problems, path, "must be a string, got %s", node_type_name(n));
    else
      parse_sha_for(ctx, ms, ms->virt[0], json_node_get_string(n), path);
    return;
  }
  if (!JSON_NODE_HOLDS_OBJECT(n)) {
    oakuk_problems_add(&ctx->problems, path,
                       "must be an object with an entry per virtualization (like code), got %s",
                       node_type_name(n));
    return;
  }
  const char *entries[2];
  if (!parse_variant_object(ctx, ms, json_node_get_object(n), path, false, entries))
    return;
  for (int32_t v = OAKUK_VIRT_CONTAINER; v <= OAKUK_VIRT_UNIKERNEL; v++)
    if (entries[v - 1]) {
      g_autofree char *vpath = path_key(path, oakuk_virt_name(v));
      parse_sha_for(ctx, ms, v, entries[v - 1], vpath);
    }
}

/* Checks a command-line argument or environment entry; returns false after reporting a problem. */
static bool check_arg(Ctx *ctx, const char *path, const char *s, bool unikernel) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p < 0x20 || *p == 0x7f) {
      oakuk_problems_add(&ctx->problems, path, "control character 0x%02x is not allowed", *p);
      return false;
    }
  }
  if (unikernel && strpbrk(s, "'\"`\\")) {
    oakuk_problems_add(
        &ctx->problems, path,
        "quotes (' \" `) and backslashes are not allowed in a service with a unikernel variant "
        "(they would break the kernel command line)");
    return false;
  }
  return true;
}

static bool env_key_is_valid(const char *s, size_t n) {
  if (n == 0 || !(g_ascii_isalpha(s[0]) || s[0] == '_'))
    return false;
  for (size_t i = 1; i < n; i++)
    if (!(g_ascii_isalnum(s[i]) || s[i] == '_'))
      return false;
  return true;
}

static void parse_strings(Ctx *ctx, GPtrArray *out, JsonObject *obj, const char *prefix, const char *key,
                          bool unikernel, bool env) {
  JsonArray *a = get_array(ctx, obj, prefix, key, "an array of strings");
  if (a == NULL)
    return;
  g_autofree char *path = path_key(prefix, key);
  guint len = json_array_get_length(a);
  for (guint i = 0; i < len; i++) {
    JsonNode *e = json_array_get_element(a, i);
    g_autofree char *epath = path_index(path, i);
    if (!node_is_string(e)) {
      oakuk_problems_add(&ctx->problems, epath, "must be a string, got %s", node_type_name(e));
      continue;
    }
    const char *s = json_node_get_string(e);
    if (!check_arg(ctx, epath, s, unikernel))
      continue;
    if (env) {
      const char *eq = strchr(s, '=');
      g_autofree char *q = quote(s);
      if (eq == NULL) {
        oakuk_problems_add(&ctx->problems, epath, "must be KEY=value, got %s", q);
        continue;
      }
      if (!env_key_is_valid(s, (size_t)(eq - s))) {
        g_autofree char *k = g_strndup(s, (size_t)(eq - s));
        g_autofree char *qk = quote(k);
        oakuk_problems_add(&ctx->problems, epath,
                           "invalid variable name %s (must match ^[A-Za-z_][A-Za-z0-9_]*$)", qk);
        continue;
      }
    }
    g_ptr_array_add(out, g_strdup(s));
  }
}

/* Parses a port number of 1..65535 given as decimal digits. */
static bool parse_port_number(const char *s, int32_t *out) {
  size_t n = strlen(s);
  if (n == 0 || n > 5)
    return false;
  int32_t v = 0;
  for (size_t i = 0; i < n; i++) {
    if (!g_ascii_isdigit(s[i]))
      return false;
    v = v * 10 + (s[i] - '0');
  }
  if (v < 1 || v > 65535)
    return false;
  *out = v;
  return true;
}

static bool all_digits(const char *s) {
  if (*s == '\0')
    return false;
  for (; *s; s++)
    if (!g_ascii_isdigit(*s))
      return false;
  return true;
}

static bool parse_port_entry(Ctx *ctx, const char *path, const char *entry, Port *port) {
  g_autofree char *q = quote(entry);
  g_autofree char *copy = g_strdup(entry);
  port->proto = OAKUK_PROTO_TCP;
  char *slash = strchr(copy, '/');
  if (slash) {
    *slash = '\0';
    if (strcmp(slash + 1, "tcp") == 0)
      port->proto = OAKUK_PROTO_TCP;
    else if (strcmp(slash + 1, "udp") == 0)
      port->proto = OAKUK_PROTO_UDP;
    else {
      oakuk_problems_add(&ctx->problems, path, "entry %s: protocol must be tcp or udp", q);
      return false;
    }
  }
  char *colon = strchr(copy, ':');
  const char *host = copy, *guest = copy;
  if (colon) {
    *colon = '\0';
    guest = colon + 1;
  }
  if (!all_digits(host) || !all_digits(guest)) {
    oakuk_problems_add(&ctx->problems, path,
                       "entry %s is not of the form host:guest[/tcp|/udp] or a port number", q);
    return false;
  }
  if (!parse_port_number(host, &port->host) || !parse_port_number(guest, &port->guest)) {
    oakuk_problems_add(&ctx->problems, path, "entry %s: ports must be between 1 and 65535", q);
    return false;
  }
  return true;
}

/* used marks host port + protocol pairs already mapped (a bitmap, so huge lists stay linear). */
static void add_port(Ctx *ctx, oakuk_microservice *ms, guint8 *used, const char *path, const char *entry,
                     const Port *p) {
  guint bit = (guint)p->proto * 65536u + (guint)p->host;
  if (used[bit / 8] & (1u << (bit % 8))) {
    g_autofree char *q = quote(entry);
    oakuk_problems_add(&ctx->problems, path, "entry %s: host port %d/%s is mapped twice", q, p->host,
                       p->proto == OAKUK_PROTO_UDP ? "udp" : "tcp");
    return;
  }
  used[bit / 8] |= (guint8)(1u << (bit % 8));
  g_array_append_val(ms->ports, *p);
}

static void parse_ports(Ctx *ctx, oakuk_microservice *ms, JsonObject *obj, const char *prefix) {
  JsonNode *n = json_object_get_member(obj, "port");
  g_autofree char *path = path_key(prefix, "port");
  if (n == NULL)
    return;
  if (node_is_number(n)) {
    int64_t v;
    if (!node_to_int(n, 1, 65535, &v)) {
      g_autofree char *text = number_text(n);
      oakuk_problems_add(&ctx->problems, path, "port %s must be between 1 and 65535", text);
      return;
    }
    Port p = {(int32_t)v, (int32_t)v, OAKUK_PROTO_TCP};
    g_array_append_val(ms->ports, p);
    return;
  }
  if (!node_is_string(n)) {
    oakuk_problems_add(&ctx->problems, path,
                       "must be a string (\"host:guest[/tcp|/udp];...\") or an integer, got %s",
                       node_type_name(n));
    return;
  }
  g_autoptr(GPtrArray) entries = split_list(json_node_get_string(n), ';');
  g_autofree guint8 *used = g_malloc0(2 * 65536 / 8);
  for (guint i = 0; i < entries->len; i++) {
    const char *e = g_ptr_array_index(entries, i);
    Port p;
    if (*e == '\0')
      oakuk_problems_add(&ctx->problems, path, "entry %u is empty", i + 1);
    else if (parse_port_entry(ctx, path, e, &p))
      add_port(ctx, ms, used, path, e, &p);
  }
}

static char *parse_ip(Ctx *ctx, JsonObject *obj, const char *prefix, const char *key, bool v6) {
  const char *s = get_string(ctx, obj, prefix, key, false);
  if (s == NULL)
    return NULL;
  g_autofree char *path = path_key(prefix, key);
  g_autofree char *q = quote(s);
  if (v6) {
    struct in6_addr a6;
    if (inet_pton(AF_INET6, s, &a6) == 1)
      return g_strdup(s);
    oakuk_problems_add(&ctx->problems, path, "must be an IPv6 address, got %s", q);
    return NULL;
  }
  struct in_addr a4;
  if (inet_pton(AF_INET, s, &a4) == 1 && (ntohl(a4.s_addr) & 0xffff0000u) == 0x0a1e0000u)
    return g_strdup(s);
  oakuk_problems_add(&ctx->problems, path, "must be an IPv4 address inside 10.30.0.0/16, got %s", q);
  return NULL;
}

static void parse_addresses(Ctx *ctx, oakuk_microservice *ms, JsonObject *obj, const char *prefix) {
  static const char *const known[] = {"rr_ip", "rr_ip_v6", "closest_ip", "closest_ip_v6", NULL};
  JsonObject *a = get_object(ctx, obj, prefix, "addresses");
  if (a == NULL)
    return;
  g_autofree char *path = path_key(prefix, "addresses");
  ms->rr_ip = parse_ip(ctx, a, path, "rr_ip", false);
  ms->closest_ip = parse_ip(ctx, a, path, "closest_ip", false);
  ms->rr_ip_v6 = parse_ip(ctx, a, path, "rr_ip_v6", true);
  ms->closest_ip_v6 = parse_ip(ctx, a, path, "closest_ip_v6", true);
  warn_unknown_keys(ctx, a, path, known, NULL);
}

static void constraint_free(gpointer p) {
  Constraint *c = p;
  g_free(c->cluster);
  g_ptr_array_unref(c->values);
  g_free(c);
}

/* Reads "allowed": a non-empty array of non-empty strings (known architectures when arch). */
static void parse_allowed(Ctx *ctx, Constraint *c, JsonObject *o, const char *cpath, bool arch) {
  JsonNode *n = json_object_get_member(o, "allowed");
  g_autofree char *path = path_key(cpath, "allowed");
  if (n == NULL || !JSON_NODE_HOLDS_ARRAY(n) || json_array_get_length(json_node_get_array(n)) == 0) {
    oakuk_problems_add(&ctx->problems, path, "required: a non-empty array of %s",
                       arch ? "architecture names" : "cluster names");
    return;
  }
  JsonArray *a = json_node_get_array(n);
  for (guint i = 0; i < json_array_get_length(a); i++) {
    JsonNode *e = json_array_get_element(a, i);
    g_autofree char *epath = path_index(path, i);
    if (!node_is_string(e) || json_node_get_string(e)[0] == '\0') {
      oakuk_problems_add(&ctx->problems, epath, "must be a non-empty string, got %s",
                         node_is_string(e) ? "an empty string" : node_type_name(e));
      continue;
    }
    const char *s = json_node_get_string(e);
    if (arch && !oakuk_arch_is_known(s)) {
      g_autofree char *q = quote(s);
      oakuk_problems_add(&ctx->problems, epath, "unknown architecture %s (known: amd64, arm64, arm, riscv64)",
                         q);
      continue;
    }
    g_ptr_array_add(c->values, g_strdup(s));
  }
}

static void parse_direct(Ctx *ctx, Constraint *c, JsonObject *o, const char *cpath) {
  const char *cluster = get_string(ctx, o, cpath, "cluster", false);
  const char *node = get_string(ctx, o, cpath, "node", false);
  c->cluster = g_strdup(cluster);
  if (node) {
    g_autofree char *npath = path_key(cpath, "node");
    g_autoptr(GPtrArray) names = split_list(node, ';');
    for (guint i = 0; i < names->len; i++)
      if (((char *)g_ptr_array_index(names, i))[0] == '\0')
        oakuk_problems_add(&ctx->problems, npath, "node name %u is empty", i + 1);
    if (names->len == 0)
      oakuk_problems_add(&ctx->problems, npath, "must name at least one node (\"n1;n2\")");
    g_ptr_array_extend_and_steal(c->values, g_steal_pointer(&names));
  }
  if (!json_object_has_member(o, "cluster") && !json_object_has_member(o, "node"))
    oakuk_problems_add(&ctx->problems, cpath, "a direct constraint needs \"cluster\" or \"node\"");
}

static void parse_constraints(Ctx *ctx, oakuk_microservice *ms, JsonObject *obj, const char *prefix) {
  static const char *const types[] = {"direct", "clusters", "arch", "latency", "geo", NULL};
  static const char *const direct_keys[] = {"type", "cluster", "node", NULL};
  static const char *const allowed_keys[] = {"type", "allowed", NULL};
  JsonArray *a = get_array(ctx, obj, prefix, "constraints", "an array of objects");
  if (a == NULL)
    return;
  g_autofree char *path = path_key(prefix, "constraints");
  for (guint i = 0; i < json_array_get_length(a); i++) {
    JsonNode *e = json_array_get_element(a, i);
    g_autofree char *cpath = path_index(path, i);
    if (!JSON_NODE_HOLDS_OBJECT(e)) {
      oakuk_problems_add(&ctx->problems, cpath, "must be an object, got %s", node_type_name(e));
      continue;
    }
    JsonObject *o = json_node_get_object(e);
    g_autofree char *tpath = path_key(cpath, "type");
    if (!json_object_has_member(o, "type")) {
      oakuk_problems_add(&ctx->problems, tpath, "required (direct, clusters, arch, latency or geo)");
      continue;
    }
    int type = get_choice(ctx, o, cpath, "type", types, "direct, clusters, arch, latency, geo", -1);
    if (type < 0)
      continue;
    Constraint *c = g_new0(Constraint, 1);
    c->type = type;
    c->values = g_ptr_array_new_with_free_func(g_free);
    if (type == OAKUK_CONSTRAINT_DIRECT) {
      parse_direct(ctx, c, o, cpath);
      warn_unknown_keys(ctx, o, cpath, direct_keys, NULL);
    } else if (type == OAKUK_CONSTRAINT_CLUSTERS || type == OAKUK_CONSTRAINT_ARCH) {
      parse_allowed(ctx, c, o, cpath, type == OAKUK_CONSTRAINT_ARCH);
      warn_unknown_keys(ctx, o, cpath, allowed_keys, NULL);
    } else {
      ctx_warnf(ctx, cpath, "accepted but not acted on: %s constraints are kept but not scheduled on",
                types[type]);
    }
    g_ptr_array_add(ms->constraints, c);
  }
}

static bool version_is_valid(const char *s) {
  int parts = 0;
  const char *p = s;
  while (parts < 3) {
    if (!g_ascii_isdigit(*p))
      return false;
    while (g_ascii_isdigit(*p))
      p++;
    parts++;
    if (parts < 3 && *p++ != '.')
      return false;
  }
  return *p == '\0';
}

static void parse_unikernel_ext(Ctx *ctx, oakuk_microservice *ms, JsonObject *obj, const char *prefix) {
  static const char *const known[] = {"flavor", "version",   "net", "graceful_stop_s",
                                      "start",  "warm_pool", NULL};
  static const char *const flavors[] = {"unikraft", "linux", NULL};
  static const char *const nets[] = {"direct", "nat", NULL};
  static const char *const starts[] = {"boot", "snapshot", NULL};
  ms->uk_net = OAKUK_UKNET_DIRECT;
  ms->uk_start = OAKUK_UKSTART_BOOT;
  JsonObject *u = get_object(ctx, obj, prefix, "unikernel");
  if (u == NULL)
    return;
  g_autofree char *path = path_key(prefix, "unikernel");
  int flavor = get_choice(ctx, u, path, "flavor", flavors, "unikraft, linux", -1);
  if (flavor >= 0)
    ms->uk_flavor = g_strdup(flavors[flavor]);
  const char *version = get_string(ctx, u, path, "version", false);
  if (version && !version_is_valid(version)) {
    g_autofree char *vpath = path_key(path, "version");
    g_autofree char *q = quote(version);
    oakuk_problems_add(&ctx->problems, vpath, "must be X.Y.Z with decimal digits (like \"0.16.3\"), got %s",
                       q);
  } else if (version) {
    ms->uk_version = g_strdup(version);
  }
  int start = get_choice(ctx, u, path, "start", starts, "boot, snapshot", OAKUK_UKSTART_BOOT);
  ms->uk_start = start < 0 ? OAKUK_UKSTART_BOOT : start;
  /* Snapshot start restores every instance from one saved guest: the guest's address must be
   * the same in each, which the NAT layout gives (and is the default with it). */
  int net = get_choice(ctx, u, path, "net", nets, "direct, nat",
                       ms->uk_start == OAKUK_UKSTART_SNAPSHOT ? OAKUK_UKNET_NAT : OAKUK_UKNET_DIRECT);
  ms->uk_net = net < 0 ? OAKUK_UKNET_DIRECT : net;
  if (ms->uk_start == OAKUK_UKSTART_SNAPSHOT && net == OAKUK_UKNET_DIRECT) {
    g_autofree char *npath = path_key(path, "net");
    oakuk_problems_add(
        &ctx->problems, npath,
        "start \"snapshot\" needs net \"nat\" (its default): every instance is restored from one "
        "saved guest, so each must have the guest at the same address");
  }
  get_int(ctx, u, path, "graceful_stop_s", false, 0, 3600, " (seconds)", &ms->uk_graceful);
  get_int(ctx, u, path, "warm_pool", false, 0, OAKUK_UK_WARM_POOL_MAX, " (QEMUs kept started per node)",
          &ms->uk_warm_pool);
  if (ms->uk_warm_pool > 0 && ms->uk_start != OAKUK_UKSTART_SNAPSHOT) {
    g_autofree char *wpath = path_key(path, "warm_pool");
    oakuk_problems_add(&ctx->problems, wpath,
                       "needs start \"snapshot\": pooled QEMUs wait to restore the service's snapshot");
  }
  warn_unknown_keys(ctx, u, path, known, NULL);
}

#define READY_SERIAL_MAX 256

/* readiness: {tcp: <guest port, 0 = no probe>, serial: "<text the console shows when ready>"}. */
static void parse_readiness(Ctx *ctx, oakuk_microservice *ms, JsonObject *obj, const char *prefix) {
  static const char *const known[] = {"tcp", "serial", NULL};
  ms->ready_tcp = -1;
  JsonObject *r = get_object(ctx, obj, prefix, "readiness");
  if (r == NULL)
    return;
  g_autofree char *path = path_key(prefix, "readiness");
  if (json_object_has_member(r, "tcp"))
    get_int(ctx, r, path, "tcp", false, 0, 65535, " (a guest port; 0 = no TCP probe)", &ms->ready_tcp);
  const char *serial = get_string(ctx, r, path, "serial", false);
  gboolean bad = serial && (!*serial || strlen(serial) > READY_SERIAL_MAX);
  for (const char *p = serial; p && *p && !bad; p++)
    bad = (unsigned char)*p < 0x20 || *p == 0x7f;
  if (bad) {
    g_autofree char *spath = path_key(path, "serial");
    oakuk_problems_add(&ctx->problems, spath,
                       "must be 1 to %d characters without control characters (a console line is matched)",
                       READY_SERIAL_MAX);
  } else if (serial) {
    ms->ready_serial = g_strdup(serial);
  }
  warn_unknown_keys(ctx, r, path, known, NULL);
}

/* network: "none": nothing that needs a network may be asked for. */
static void check_no_network(Ctx *ctx, const oakuk_microservice *ms, JsonObject *obj, const char *prefix) {
  static const char why[] =
      "needs a network, and network is \"none\" (the instance has no network interface)";
  if (ms->ports->len > 0) {
    g_autofree char *path = path_key(prefix, "port");
    oakuk_problems_add(&ctx->problems, path, "a port mapping %s", why);
  }
  if (ms->rr_ip != NULL) {
    g_autofree char *path = path_key(prefix, "addresses.rr_ip");
    oakuk_problems_add(&ctx->problems, path, "a service IP %s", why);
  }
  if (ms->ready_tcp > 0) {
    g_autofree char *path = path_key(prefix, "readiness.tcp");
    oakuk_problems_add(&ctx->problems, path, "a TCP readiness probe %s; use readiness.serial", why);
  }
  JsonObject *u = json_object_get_member(obj, "unikernel") &&
                          JSON_NODE_HOLDS_OBJECT(json_object_get_member(obj, "unikernel"))
                      ? json_object_get_object_member(obj, "unikernel")
                      : NULL;
  if (u != NULL && json_object_has_member(u, "net")) {
    g_autofree char *path = path_key(prefix, "unikernel.net");
    oakuk_problems_add(&ctx->problems, path, "a unikernel network layout %s", why);
  }
}

static void parse_extensions(Ctx *ctx, oakuk_microservice *ms, JsonObject *obj, const char *prefix) {
  static const char *const emulations[] = {"forbid", "allow", NULL};
  static const char *const restarts[] = {"never", "on-failure", "always", NULL};
  int v = get_choice(ctx, obj, prefix, "emulation", emulations, "forbid, allow", OAKUK_EMULATION_FORBID);
  ms->emulation = v < 0 ? OAKUK_EMULATION_FORBID : v;
  v = get_choice(ctx, obj, prefix, "restart", restarts, "never, on-failure, always",
                 OAKUK_RESTART_ON_FAILURE);
  ms->restart = v < 0 ? OAKUK_RESTART_ON_FAILURE : v;
  parse_unikernel_ext(ctx, ms, obj, prefix);
  parse_readiness(ctx, ms, obj, prefix);
  static const char *const networks[] = {"overlay", "none", NULL};
  v = get_choice(ctx, obj, prefix, "network", networks, "overlay, none", OAKUK_NETWORK_OVERLAY);
  ms->network = v < 0 ? OAKUK_NETWORK_OVERLAY : v;
  if (ms->network == OAKUK_NETWORK_NONE)
    check_no_network(ctx, ms, obj, prefix);
  if (ms->uk_start == OAKUK_UKSTART_SNAPSHOT && oakuk_microservice_readiness_tcp(ms) <= 0 &&
      ms->ready_serial == NULL) {
    g_autofree char *path = path_key(prefix, "unikernel.start");
    oakuk_problems_add(
        &ctx->problems, path,
        "\"snapshot\" needs a readiness probe (readiness.tcp, a TCP port, or readiness.serial): "
        "the snapshot is taken when the guest is ready");
  }
  ms->reschedule_after_s = OAKUK_RESCHEDULE_AFTER_S_DEFAULT;
  if (json_object_has_member(obj, "reschedule_after_s"))
    get_int(ctx, obj, prefix, "reschedule_after_s", false, 0, 86400, " (seconds)", &ms->reschedule_after_s);
}

static void parse_resources(Ctx *ctx, oakuk_microservice *ms, JsonObject *obj, const char *prefix) {
  get_int(ctx, obj, prefix, "memory", true, 1, 1048576, " (MB)", &ms->memory);
  get_int(ctx, obj, prefix, "vcpus", true, 0, 1024, "", &ms->vcpus);
  if (ms->vcpus == 0 && json_object_has_member(obj, "vcpus")) {
    /* Oakestra's own SLAs ask for 0: accepted, and said what it becomes. */
    ms->vcpus = 1;
    g_autofree char *path = path_key(prefix, "vcpus");
    ctx_warn(ctx, path,
             "0 is taken as 1: every instance runs on at least one core (QEMU gets one vCPU), and the "
             "scheduler reserves it");
  }
  get_int(ctx, obj, prefix, "vgpus", false, 0, 64, "", &ms->vgpus);
  get_int(ctx, obj, prefix, "vtpus", false, 0, 64, "", &ms->vtpus);
  get_int(ctx, obj, prefix, "bandwidth_in", false, 0, 100000000, "", &ms->bw_in);
  get_int(ctx, obj, prefix, "bandwidth_out", false, 0, 100000000, "", &ms->bw_out);
  get_int(ctx, obj, prefix, "storage", false, 0, 100000000, "", &ms->storage);
}

static void parse_misc(Ctx *ctx, oakuk_microservice *ms, JsonObject *obj, const char *prefix) {
  get_array(ctx, obj, prefix, "added_files", "an array");
  get_array(ctx, obj, prefix, "connectivity", "an array");
  get_string(ctx, obj, prefix, "state", false);
  get_string(ctx, obj, prefix, "image", false);
  ms->one_shot = get_bool(ctx, obj, prefix, "one_shot");
  ms->privileged = get_bool(ctx, obj, prefix, "privileged");
  ms->target_node = g_strdup(get_string(ctx, obj, prefix, "target_node", false));
}

/* ---------------------------------------------------------------------------------------------
 * Keys that are accepted but not acted on: each non-default value is a warning at its path, so
 * nothing a user asks for is dropped silently. */

static void warn_count(Ctx *ctx, const char *prefix, const char *key, int64_t v, const char *why) {
  if (v == 0)
    return;
  g_autofree char *path = path_key(prefix, key);
  ctx_warnf(ctx, path, "accepted but not acted on: %s", why);
}

static void warn_accelerator(Ctx *ctx, const char *prefix, const char *key, int64_t v, const char *what) {
  if (v == 0)
    return;
  g_autofree char *path = path_key(prefix, key);
  ctx_warnf(ctx, path,
            "accepted but not acted on: no node reports %s (oakuk-node passes none to instances); the "
            "scheduler places the service only on a node reporting at least %" G_GINT64_FORMAT
            ", so it stays unplaced",
            what, v);
}

static void warn_address(Ctx *ctx, const char *prefix, const char *key, const char *v, const char *why) {
  if (v == NULL)
    return;
  g_autofree char *apath = path_key(prefix, "addresses");
  g_autofree char *path = path_key(apath, key);
  ctx_warnf(ctx, path, "accepted but not acted on: %s", why);
}

/* A service IP answers on one port (the first entry's guest port; docs/architecture.md §12):
 * entries with another guest port are mapped on the node but not behind addresses.rr_ip. */
static void warn_service_ports(Ctx *ctx, const oakuk_microservice *ms, const char *prefix) {
  if (ms->rr_ip == NULL || ms->ports->len < 2)
    return;
  const Port *first = &g_array_index(ms->ports, Port, 0);
  g_autoptr(GString) left = g_string_new(NULL);
  for (guint i = 1; i < ms->ports->len; i++) {
    const Port *p = &g_array_index(ms->ports, Port, i);
    if (p->guest != first->guest)
      g_string_append_printf(left, "%s%d:%d/%s", left->len ? ", " : "", p->host, p->guest,
                             p->proto == OAKUK_PROTO_UDP ? "udp" : "tcp");
  }
  if (left->len == 0)
    return;
  g_autofree char *path = path_key(prefix, "port");
  ctx_warnf(ctx, path,
            "accepted but not acted on: addresses.rr_ip answers only on guest port %d (the first entry); "
            "%s %s mapped on the node's host ports but not reachable through the service IP",
            first->guest, left->str, strchr(left->str, ',') ? "are" : "is");
}

static void warn_nonempty_array(Ctx *ctx, JsonObject *obj, const char *prefix, const char *key,
                                const char *why) {
  JsonNode *n = json_object_get_member(obj, key);
  if (n == NULL || !JSON_NODE_HOLDS_ARRAY(n) || json_array_get_length(json_node_get_array(n)) == 0)
    return;
  g_autofree char *path = path_key(prefix, key);
  ctx_warnf(ctx, path, "accepted but not acted on: %s", why);
}

static void warn_not_acted_on(Ctx *ctx, const oakuk_microservice *ms, JsonObject *obj, const char *prefix) {
  if (ctx->warnings == NULL)
    return;
  warn_accelerator(ctx, prefix, "vgpus", ms->vgpus, "GPUs");
  warn_accelerator(ctx, prefix, "vtpus", ms->vtpus, "TPUs");
  warn_count(ctx, prefix, "bandwidth_in", ms->bw_in, "no bandwidth is reserved or limited");
  warn_count(ctx, prefix, "bandwidth_out", ms->bw_out, "no bandwidth is reserved or limited");
  warn_count(ctx, prefix, "storage", ms->storage, "no storage is reserved or limited");
  if (ms->privileged) {
    g_autofree char *path = path_key(prefix, "privileged");
    ctx_warn(ctx, path, "accepted but not acted on: instances never run privileged");
  }
  warn_address(ctx, prefix, "closest_ip", ms->closest_ip,
               "only addresses.rr_ip is programmed (no closest-instance service IP)");
  warn_address(ctx, prefix, "rr_ip_v6", ms->rr_ip_v6, "service IPs are IPv4 only (addresses.rr_ip)");
  warn_address(ctx, prefix, "closest_ip_v6", ms->closest_ip_v6,
               "service IPs are IPv4 only (addresses.rr_ip)");
  warn_service_ports(ctx, ms, prefix);
  warn_nonempty_array(ctx, obj, prefix, "added_files", "no files are added to instances");
  warn_nonempty_array(ctx, obj, prefix, "connectivity", "connectivity is not scheduled on");
}

static void ms_set_identity(oakuk_microservice *ms, const char *app, const char *appns) {
  g_free(ms->app_name);
  g_free(ms->app_ns);
  g_clear_pointer(&ms->service_name, g_free);
  ms->app_name = g_strdup(app);
  ms->app_ns = g_strdup(appns);
  if (app && appns && ms->name && ms->ns)
    ms->service_name = g_strdup_printf("%s.%s.%s.%s", app, appns, ms->name, ms->ns);
}

/* Application identity of a standalone job document: app_name/app_ns, else job_name. */
static void parse_job_identity(Ctx *ctx, oakuk_microservice *ms, JsonObject *obj) {
  const char *app = get_name(ctx, obj, "", "app_name", false);
  const char *appns = get_name(ctx, obj, "", "app_ns", false);
  const char *job = get_string(ctx, obj, "", "job_name", false);
  get_string(ctx, obj, "", "service_name", false);
  get_string(ctx, obj, "", "service_ns", false);
  get_string(ctx, obj, "", "applicationID", false);
  if (app && appns) {
    ms_set_identity(ms, app, appns);
    return;
  }
  if (job == NULL)
    return;
  g_auto(GStrv) parts = g_strsplit(job, ".", -1);
  if (g_strv_length(parts) != 4 || !name_is_valid(parts[0]) || !name_is_valid(parts[1]) ||
      !name_is_valid(parts[2]) || !name_is_valid(parts[3])) {
    g_autofree char *q = quote(job);
    oakuk_problems_add(&ctx->problems, "job_name", "must be <app>.<appns>.<service>.<servicens>, got %s", q);
    return;
  }
  ms_set_identity(ms, parts[0], parts[1]);
}

static oakuk_microservice *ms_new(void) {
  oakuk_microservice *ms = g_new0(oakuk_microservice, 1);
  ms->refcount = 1;
  ms->arch = g_ptr_array_new_with_free_func(g_free);
  ms->uk_code = g_ptr_array_new_with_free_func(g_free);
  ms->cmd = g_ptr_array_new_with_free_func(g_free);
  ms->env = g_ptr_array_new_with_free_func(g_free);
  ms->ports = g_array_new(FALSE, TRUE, sizeof(Port));
  ms->constraints = g_ptr_array_new_with_free_func(constraint_free);
  ms->emulation = OAKUK_EMULATION_FORBID;
  ms->restart = OAKUK_RESTART_ON_FAILURE;
  ms->uk_net = OAKUK_UKNET_DIRECT;
  ms->uk_start = OAKUK_UKSTART_BOOT;
  ms->ready_tcp = -1;
  ms->reschedule_after_s = OAKUK_RESCHEDULE_AFTER_S_DEFAULT;
  return ms;
}

static void ms_free(oakuk_microservice *ms) {
  if (ms == NULL)
    return;
  g_free(ms->id);
  g_free(ms->name);
  g_free(ms->ns);
  g_free(ms->app_name);
  g_free(ms->app_ns);
  g_free(ms->service_name);
  g_ptr_array_unref(ms->arch);
  g_ptr_array_unref(ms->uk_code);
  if (ms->uk_sha)
    g_ptr_array_unref(ms->uk_sha);
  g_free(ms->ctr_code);
  g_free(ms->ctr_sha);
  g_ptr_array_unref(ms->cmd);
  g_ptr_array_unref(ms->env);
  g_array_unref(ms->ports);
  g_free(ms->rr_ip);
  g_free(ms->rr_ip_v6);
  g_free(ms->closest_ip);
  g_free(ms->closest_ip_v6);
  g_free(ms->target_node);
  g_ptr_array_unref(ms->constraints);
  g_free(ms->uk_flavor);
  g_free(ms->uk_version);
  g_free(ms->ready_serial);
  if (ms->root)
    json_node_unref(ms->root);
  g_free(ms);
}

static oakuk_microservice *ms_parse(Ctx *ctx, JsonObject *obj, const char *prefix, bool standalone) {
  oakuk_microservice *ms = ms_new();
  ms->obj = obj;
  ms->id = g_strdup(get_string(ctx, obj, prefix, "microserviceID", false));
  ms->name = g_strdup(get_name(ctx, obj, prefix, "microservice_name", true));
  ms->ns = g_strdup(get_name(ctx, obj, prefix, "microservice_namespace", true));
  bool virt_array = parse_virtualization(ctx, ms, obj, prefix);
  guint n_arch = parse_arch(ctx, ms, obj, prefix);
  parse_code(ctx, ms, obj, prefix, virt_array, n_arch);
  parse_code_sha256(ctx, ms, obj, prefix, virt_array);
  parse_resources(ctx, ms, obj, prefix);
  bool uk = ms_has_virt(ms, OAKUK_VIRT_UNIKERNEL);
  parse_strings(ctx, ms->cmd, obj, prefix, "cmd", uk, false);
  parse_strings(ctx, ms->env, obj, prefix, "environment", uk, true);
  parse_ports(ctx, ms, obj, prefix);
  parse_addresses(ctx, ms, obj, prefix);
  parse_misc(ctx, ms, obj, prefix);
  parse_constraints(ctx, ms, obj, prefix);
  parse_extensions(ctx, ms, obj, prefix);
  warn_not_acted_on(ctx, ms, obj, prefix);
  if (standalone)
    parse_job_identity(ctx, ms, obj);
  warn_unknown_keys(ctx, obj, prefix, ms_known_keys, standalone ? job_keys : NULL);
  return ms;
}

/* ---------------------------------------------------------------------------------------------
 * Loading raw text */

/* Every document passes oakuk_json_scan before json-glib sees it; a fault is a problem at the JSON
 * path where it was found. */
static JsonNode *load_json(const char *json, size_t len, OakukProblems *p) {
  if (len == (size_t)-1)
    len = strlen(json);
  if (len > OAKUK_DESCRIPTOR_MAX_BYTES) {
    oakuk_problems_add(p, "", "document is %zu bytes, the limit is %d", len, OAKUK_DESCRIPTOR_MAX_BYTES);
    return NULL;
  }
  size_t first = 0;
  while (first < len && strchr(" \t\r\n", json[first]) != NULL && json[first] != '\0')
    first++;
  if (first < len && json[first] != '{') {
    oakuk_problems_add(p, "", "the document must be a JSON object (starting with '{')");
    return NULL;
  }
  OakukJsonFault fault;
  if (!oakuk_json_scan(json, len, OAKUK_DESCRIPTOR_MAX_DEPTH, &fault)) {
    oakuk_problems_add(p, fault.path, "malformed JSON: <data>:%u:%u: %s", fault.line, fault.column,
                       fault.what);
    oakuk_json_fault_clear(&fault);
    return NULL;
  }
  g_autoptr(JsonParser) parser = json_parser_new();
  g_autoptr(GError) err = NULL;
  if (!json_parser_load_from_data(parser, json, (gssize)len, &err)) {
    oakuk_problems_add(p, "", "malformed JSON: %s", err->message);
    return NULL;
  }
  return json_parser_steal_root(parser);
}

static char *node_to_json(JsonNode *node, bool pretty) {
  return oakuk_json_node_to_string(node, pretty);
}

static char *object_to_json(JsonObject *obj, bool pretty) {
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), obj);
  return node_to_json(node, pretty);
}

/* ---------------------------------------------------------------------------------------------
 * Descriptor and application */

static void app_free(gpointer p) {
  oakuk_application *app = p;
  g_free(app->id);
  g_free(app->name);
  g_free(app->ns);
  g_free(app->desc);
  g_ptr_array_unref(app->services);
  g_free(app);
}

static void descriptor_free(oakuk_descriptor *d) {
  g_ptr_array_unref(d->apps);
  g_ptr_array_unref(d->warnings);
  g_free(d->sla_version);
  g_free(d->customer_id);
  if (d->root)
    json_node_unref(d->root);
  g_free(d);
}

/* seen maps "name/namespace" to the index of the first service with it. */
static void check_duplicate_service(Ctx *ctx, GHashTable *seen, const oakuk_microservice *ms,
                                    const char *prefix, guint index) {
  if (ms->name == NULL || ms->ns == NULL)
    return;
  char *key = g_strdup_printf("%s/%s", ms->name, ms->ns);
  gpointer first;
  if (g_hash_table_lookup_extended(seen, key, NULL, &first)) {
    g_autofree char *path = g_strdup_printf("%s.microservices[%u].microservice_name", prefix, index);
    oakuk_problems_add(&ctx->problems, path, "duplicate service %s.%s (also microservices[%u])", ms->name,
                       ms->ns, GPOINTER_TO_UINT(first));
    g_free(key);
    return;
  }
  g_hash_table_insert(seen, key, GUINT_TO_POINTER(index));
}

static oakuk_application *app_parse(Ctx *ctx, oakuk_descriptor *d, JsonObject *obj, const char *prefix) {
  static const char *const known[] = {"applicationID",    "application_name", "application_namespace",
                                      "application_desc", "microservices",    NULL};
  oakuk_application *app = g_new0(oakuk_application, 1);
  app->owner = d;
  app->obj = obj;
  app->services = g_ptr_array_new_with_free_func((GDestroyNotify)ms_free);
  app->id = g_strdup(get_string(ctx, obj, prefix, "applicationID", false));
  app->name = g_strdup(get_name(ctx, obj, prefix, "application_name", true));
  app->ns = g_strdup(get_name(ctx, obj, prefix, "application_namespace", true));
  app->desc = g_strdup(get_string(ctx, obj, prefix, "application_desc", false));
  g_autofree char *mpath = path_key(prefix, "microservices");
  JsonArray *a = get_array(ctx, obj, prefix, "microservices", "an array of objects");
  g_autoptr(GHashTable) seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  if (a == NULL && !json_object_has_member(obj, "microservices"))
    oakuk_problems_add(&ctx->problems, mpath, "required (an array of microservice objects)");
  for (guint i = 0; a && i < json_array_get_length(a); i++) {
    JsonNode *e = json_array_get_element(a, i);
    g_autofree char *epath = path_index(mpath, i);
    if (!JSON_NODE_HOLDS_OBJECT(e)) {
      oakuk_problems_add(&ctx->problems, epath, "must be an object, got %s", node_type_name(e));
      continue;
    }
    oakuk_microservice *ms = ms_parse(ctx, json_node_get_object(e), epath, false);
    ms->owner = d;
    ms_set_identity(ms, app->name, app->ns);
    check_duplicate_service(ctx, seen, ms, prefix, i);
    g_ptr_array_add(app->services, ms);
  }
  warn_unknown_keys(ctx, obj, prefix, known, NULL);
  return app;
}

static void descriptor_validate(Ctx *ctx, oakuk_descriptor *d) {
  static const char *const known[] = {"sla_version", "customerID", "applications", NULL};
  JsonObject *obj = json_node_get_object(d->root);
  const char *version = get_string(ctx, obj, "", "sla_version", true);
  if (version && strcmp(version, "v2.0") != 0) {
    g_autofree char *q = quote(version);
    oakuk_problems_add(&ctx->problems, "sla_version", "unsupported version %s (supported: \"v2.0\")", q);
  }
  d->sla_version = g_strdup(version);
  d->customer_id = g_strdup(get_string(ctx, obj, "", "customerID", false));
  JsonArray *a = get_array(ctx, obj, "", "applications", "an array of objects");
  if (a == NULL && !json_object_has_member(obj, "applications"))
    oakuk_problems_add(&ctx->problems, "applications", "required (an array of application objects)");
  for (guint i = 0; a && i < json_array_get_length(a); i++) {
    JsonNode *e = json_array_get_element(a, i);
    g_autofree char *epath = path_index("applications", i);
    if (!JSON_NODE_HOLDS_OBJECT(e)) {
      oakuk_problems_add(&ctx->problems, epath, "must be an object, got %s", node_type_name(e));
      continue;
    }
    g_ptr_array_add(d->apps, app_parse(ctx, d, json_node_get_object(e), epath));
  }
  warn_unknown_keys(ctx, obj, "", known, NULL);
}

OAKUK_API oakuk_descriptor *oakuk_descriptor_parse(const char *json, size_t len, oakuk_error **error) {
  g_return_val_if_fail(json != NULL, NULL);
  Ctx ctx = {0};
  oakuk_problems_init(&ctx.problems);
  JsonNode *root = load_json(json, len, &ctx.problems);
  if (root == NULL) {
    oakuk_problems_finish(&ctx.problems, error);
    return NULL;
  }
  oakuk_descriptor *d = g_new0(oakuk_descriptor, 1);
  d->refcount = 1;
  d->root = root;
  d->apps = g_ptr_array_new_with_free_func(app_free);
  d->warnings = g_ptr_array_new_with_free_func(warning_free);
  ctx.warnings = d->warnings;
  descriptor_validate(&ctx, d);
  if (!oakuk_problems_finish(&ctx.problems, error)) {
    descriptor_free(d);
    return NULL;
  }
  return d;
}

OAKUK_API oakuk_descriptor *oakuk_descriptor_parse_file(const char *path, oakuk_error **error) {
  g_return_val_if_fail(path != NULL, NULL);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int errsv = errno;
    oakuk_set_error(error, OAKUK_EIO, errsv, NULL, "open descriptor %s: %s", path, g_strerror(errsv));
    return NULL;
  }
  /* Read one byte past the limit so a larger file is recognised without reading all of it. */
  g_autofree char *buf = g_malloc(OAKUK_DESCRIPTOR_MAX_BYTES + 2);
  size_t len = 0;
  while (len < OAKUK_DESCRIPTOR_MAX_BYTES + 1) {
    ssize_t r = read(fd, buf + len, OAKUK_DESCRIPTOR_MAX_BYTES + 1 - len);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      int errsv = errno;
      close(fd);
      oakuk_set_error(error, OAKUK_EIO, errsv, NULL, "read descriptor %s: %s", path, g_strerror(errsv));
      return NULL;
    }
    if (r == 0)
      break;
    len += (size_t)r;
  }
  close(fd);
  if (len > OAKUK_DESCRIPTOR_MAX_BYTES) {
    oakuk_set_error(error, OAKUK_EINVAL, 0, "", "descriptor %s is larger than the limit of %d bytes", path,
                    OAKUK_DESCRIPTOR_MAX_BYTES);
    return NULL;
  }
  return oakuk_descriptor_parse(buf, len, error);
}

OAKUK_API oakuk_descriptor *oakuk_descriptor_ref(oakuk_descriptor *descriptor) {
  g_return_val_if_fail(descriptor != NULL, NULL);
  g_atomic_int_inc(&descriptor->refcount);
  return descriptor;
}

OAKUK_API void oakuk_descriptor_unref(oakuk_descriptor *descriptor) {
  if (descriptor && g_atomic_int_dec_and_test(&descriptor->refcount))
    descriptor_free(descriptor);
}

OAKUK_DEFINE_GETTER(const char *, oakuk_descriptor_sla_version, oakuk_descriptor, sla_version, NULL)

OAKUK_DEFINE_GETTER(const char *, oakuk_descriptor_customer_id, oakuk_descriptor, customer_id, NULL)

OAKUK_API size_t oakuk_descriptor_application_count(const oakuk_descriptor *descriptor) {
  g_return_val_if_fail(descriptor != NULL, 0);
  return descriptor->apps->len;
}

OAKUK_API oakuk_application *oakuk_descriptor_application(const oakuk_descriptor *descriptor, size_t i) {
  g_return_val_if_fail(descriptor != NULL, NULL);
  return i < descriptor->apps->len ? g_ptr_array_index(descriptor->apps, i) : NULL;
}

OAKUK_API size_t oakuk_descriptor_warning_count(const oakuk_descriptor *descriptor) {
  g_return_val_if_fail(descriptor != NULL, 0);
  return descriptor->warnings->len;
}

static const Warning *warning_at(const oakuk_descriptor *descriptor, size_t i) {
  return i < descriptor->warnings->len ? g_ptr_array_index(descriptor->warnings, i) : NULL;
}

OAKUK_API const char *oakuk_descriptor_warning(const oakuk_descriptor *descriptor, size_t i) {
  g_return_val_if_fail(descriptor != NULL, NULL);
  const Warning *w = warning_at(descriptor, i);
  return w ? w->text : NULL;
}

OAKUK_API const char *oakuk_descriptor_warning_path(const oakuk_descriptor *descriptor, size_t i) {
  g_return_val_if_fail(descriptor != NULL, NULL);
  const Warning *w = warning_at(descriptor, i);
  return w ? w->path : NULL;
}

OAKUK_API const char *oakuk_descriptor_warning_message(const oakuk_descriptor *descriptor, size_t i) {
  g_return_val_if_fail(descriptor != NULL, NULL);
  const Warning *w = warning_at(descriptor, i);
  return w ? w->message : NULL;
}

OAKUK_API char *oakuk_descriptor_to_json(const oakuk_descriptor *descriptor, bool pretty,
                                         oakuk_error **error) {
  g_return_val_if_fail(descriptor != NULL, NULL);
  return node_to_json(descriptor->root, pretty);
}

/* Applications share their descriptor's reference count: a reference on one keeps the whole
 * document (and so every borrowed pointer into it) alive. */
OAKUK_API oakuk_application *oakuk_application_ref(oakuk_application *app) {
  g_return_val_if_fail(app != NULL, NULL);
  oakuk_descriptor_ref(app->owner);
  return app;
}

OAKUK_API void oakuk_application_unref(oakuk_application *app) {
  if (app)
    oakuk_descriptor_unref(app->owner);
}

OAKUK_DEFINE_GETTER(const char *, oakuk_application_id, oakuk_application, id, NULL)

/* Checks a new id; returns false after setting the error. */
static bool id_is_acceptable(const char *key, const char *id, oakuk_error **error) {
  if (id == NULL) {
    oakuk_set_error(error, OAKUK_EINVAL, 0, key, "%s: must not be NULL", key);
    return false;
  }
  if (!g_utf8_validate(id, -1, NULL)) {
    oakuk_set_error(error, OAKUK_EINVAL, 0, key, "%s: must be valid UTF-8", key);
    return false;
  }
  for (const unsigned char *p = (const unsigned char *)id; *p; p++)
    if (*p < 0x20 || *p == 0x7f) {
      oakuk_set_error(error, OAKUK_EINVAL, 0, key, "%s: control character 0x%02x is not allowed", key, *p);
      return false;
    }
  return true;
}

OAKUK_API int oakuk_application_set_id(oakuk_application *app, const char *id, oakuk_error **error) {
  g_return_val_if_fail(app != NULL, OAKUK_EINVAL);
  if (!id_is_acceptable("applicationID", id, error))
    return OAKUK_EINVAL;
  json_object_set_string_member(app->obj, "applicationID", id);
  g_free(app->id);
  app->id = g_strdup(id);
  return OAKUK_OK;
}

OAKUK_DEFINE_GETTER(const char *, oakuk_application_name, oakuk_application, name, NULL)

OAKUK_DEFINE_GETTER(const char *, oakuk_application_namespace, oakuk_application, ns, NULL)

OAKUK_DEFINE_GETTER(const char *, oakuk_application_desc, oakuk_application, desc, NULL)

OAKUK_API size_t oakuk_application_microservice_count(const oakuk_application *app) {
  g_return_val_if_fail(app != NULL, 0);
  return app->services->len;
}

OAKUK_API oakuk_microservice *oakuk_application_microservice(const oakuk_application *app, size_t i) {
  g_return_val_if_fail(app != NULL, NULL);
  return i < app->services->len ? g_ptr_array_index(app->services, i) : NULL;
}

OAKUK_API char *oakuk_application_to_json(const oakuk_application *app, bool pretty, oakuk_error **error) {
  g_return_val_if_fail(app != NULL, NULL);
  return object_to_json(app->obj, pretty);
}

/* ---------------------------------------------------------------------------------------------
 * Microservices */

OAKUK_API oakuk_microservice *oakuk_microservice_parse(const char *json, size_t len, oakuk_error **error) {
  g_return_val_if_fail(json != NULL, NULL);
  Ctx ctx = {0};
  oakuk_problems_init(&ctx.problems);
  JsonNode *root = load_json(json, len, &ctx.problems);
  oakuk_microservice *ms = NULL;
  if (root) {
    ms = ms_parse(&ctx, json_node_get_object(root), "", true);
    ms->root = root;
  }
  if (!oakuk_problems_finish(&ctx.problems, error)) {
    ms_free(ms);
    ms = NULL;
  }
  return ms;
}

/* A microservice of a descriptor shares the descriptor's reference count; a standalone one has
 * its own. */
OAKUK_API oakuk_microservice *oakuk_microservice_ref(oakuk_microservice *ms) {
  g_return_val_if_fail(ms != NULL, NULL);
  if (ms->owner)
    oakuk_descriptor_ref(ms->owner);
  else
    g_atomic_int_inc(&ms->refcount);
  return ms;
}

OAKUK_API void oakuk_microservice_unref(oakuk_microservice *ms) {
  if (ms == NULL)
    return;
  if (ms->owner)
    oakuk_descriptor_unref(ms->owner);
  else if (g_atomic_int_dec_and_test(&ms->refcount))
    ms_free(ms);
}

OAKUK_API char *oakuk_microservice_to_json(const oakuk_microservice *ms, bool pretty, oakuk_error **error) {
  g_return_val_if_fail(ms != NULL, NULL);
  return object_to_json(ms->obj, pretty);
}

OAKUK_DEFINE_GETTER(const char *, oakuk_microservice_id, oakuk_microservice, id, NULL)

OAKUK_API int oakuk_microservice_set_id(oakuk_microservice *ms, const char *id, oakuk_error **error) {
  g_return_val_if_fail(ms != NULL, OAKUK_EINVAL);
  if (!id_is_acceptable("microserviceID", id, error))
    return OAKUK_EINVAL;
  json_object_set_string_member(ms->obj, "microserviceID", id);
  g_free(ms->id);
  ms->id = g_strdup(id);
  return OAKUK_OK;
}

#define MS_GETTER(type, fn, expr, def)                                                                       \
  OAKUK_API type oakuk_microservice_##fn(const oakuk_microservice *ms) {                                     \
    g_return_val_if_fail(ms != NULL, def);                                                                   \
    return expr;                                                                                             \
  }

MS_GETTER(const char *, name, ms->name, NULL)
MS_GETTER(const char *, namespace, ms->ns, NULL)
MS_GETTER(const char *, app_name, ms->app_name, NULL)
MS_GETTER(const char *, app_namespace, ms->app_ns, NULL)
MS_GETTER(const char *, service_name, ms->service_name, NULL)
MS_GETTER(size_t, virt_count, ms->n_virt, 0)
MS_GETTER(size_t, arch_count, ms->arch->len, 0)
MS_GETTER(int64_t, memory_mb, ms->memory, 0)
MS_GETTER(int64_t, vcpus, ms->vcpus, 0)
MS_GETTER(int64_t, vgpus, ms->vgpus, 0)
MS_GETTER(int64_t, vtpus, ms->vtpus, 0)
MS_GETTER(int64_t, bandwidth_in, ms->bw_in, 0)
MS_GETTER(int64_t, bandwidth_out, ms->bw_out, 0)
MS_GETTER(int64_t, storage, ms->storage, 0)
MS_GETTER(size_t, cmd_count, ms->cmd->len, 0)
MS_GETTER(size_t, env_count, ms->env->len, 0)
MS_GETTER(size_t, port_count, ms->ports->len, 0)
MS_GETTER(const char *, rr_ip, ms->rr_ip, NULL)
MS_GETTER(const char *, rr_ip_v6, ms->rr_ip_v6, NULL)
MS_GETTER(const char *, closest_ip, ms->closest_ip, NULL)
MS_GETTER(const char *, closest_ip_v6, ms->closest_ip_v6, NULL)
MS_GETTER(bool, one_shot, ms->one_shot, false)
MS_GETTER(bool, privileged, ms->privileged, false)
MS_GETTER(const char *, target_node, ms->target_node, NULL)
MS_GETTER(size_t, constraint_count, ms->constraints->len, 0)
MS_GETTER(int32_t, emulation, ms->emulation, OAKUK_EMULATION_FORBID)
MS_GETTER(int32_t, restart, ms->restart, OAKUK_RESTART_ON_FAILURE)
MS_GETTER(const char *, uk_flavor, ms->uk_flavor, NULL)
MS_GETTER(const char *, uk_version, ms->uk_version, NULL)
MS_GETTER(int32_t, uk_net, ms->uk_net, OAKUK_UKNET_DIRECT)
MS_GETTER(int32_t, uk_start, ms->uk_start, OAKUK_UKSTART_BOOT)
MS_GETTER(int32_t, uk_warm_pool, (int32_t)ms->uk_warm_pool, 0)
MS_GETTER(int32_t, network, ms->network, OAKUK_NETWORK_OVERLAY)
MS_GETTER(int64_t, uk_graceful_stop_s, ms->uk_graceful, 0)

OAKUK_API int32_t oakuk_microservice_virt(const oakuk_microservice *ms, size_t i) {
  g_return_val_if_fail(ms != NULL, OAKUK_VIRT_NONE);
  return i < ms->n_virt ? ms->virt[i] : OAKUK_VIRT_NONE;
}

OAKUK_API bool oakuk_microservice_has_virt(const oakuk_microservice *ms, int32_t virt) {
  g_return_val_if_fail(ms != NULL, false);
  return ms_has_virt(ms, virt);
}

OAKUK_API const char *oakuk_microservice_arch(const oakuk_microservice *ms, size_t i) {
  g_return_val_if_fail(ms != NULL, NULL);
  return i < ms->arch->len ? g_ptr_array_index(ms->arch, i) : NULL;
}

OAKUK_API const char *oakuk_microservice_code(const oakuk_microservice *ms, int32_t virt, size_t arch_index) {
  g_return_val_if_fail(ms != NULL, NULL);
  if (!ms_has_virt(ms, virt))
    return NULL;
  if (virt == OAKUK_VIRT_CONTAINER)
    return ms->ctr_code;
  if (ms->uk_oci)
    return ms->uk_code->len ? g_ptr_array_index(ms->uk_code, 0) : NULL;
  return arch_index < ms->uk_code->len ? g_ptr_array_index(ms->uk_code, arch_index) : NULL;
}

OAKUK_API bool oakuk_microservice_code_is_oci(const oakuk_microservice *ms, int32_t virt) {
  g_return_val_if_fail(ms != NULL, false);
  if (!ms_has_virt(ms, virt))
    return false;
  return virt == OAKUK_VIRT_CONTAINER ? ms->ctr_code != NULL : ms->uk_oci;
}

OAKUK_API const char *oakuk_microservice_code_sha256(const oakuk_microservice *ms, int32_t virt,
                                                     size_t arch_index) {
  g_return_val_if_fail(ms != NULL, NULL);
  if (!ms_has_virt(ms, virt))
    return NULL;
  if (virt == OAKUK_VIRT_CONTAINER)
    return ms->ctr_sha;
  return ms->uk_sha && arch_index < ms->uk_sha->len ? g_ptr_array_index(ms->uk_sha, arch_index) : NULL;
}

OAKUK_API const char *oakuk_microservice_cmd(const oakuk_microservice *ms, size_t i) {
  g_return_val_if_fail(ms != NULL, NULL);
  return i < ms->cmd->len ? g_ptr_array_index(ms->cmd, i) : NULL;
}

OAKUK_API const char *oakuk_microservice_env(const oakuk_microservice *ms, size_t i) {
  g_return_val_if_fail(ms != NULL, NULL);
  return i < ms->env->len ? g_ptr_array_index(ms->env, i) : NULL;
}

static const Port *port_at(const oakuk_microservice *ms, size_t i) {
  return i < ms->ports->len ? &g_array_index(ms->ports, Port, i) : NULL;
}

OAKUK_API int32_t oakuk_microservice_port_host(const oakuk_microservice *ms, size_t i) {
  g_return_val_if_fail(ms != NULL, 0);
  const Port *p = port_at(ms, i);
  return p ? p->host : 0;
}

OAKUK_API int32_t oakuk_microservice_port_guest(const oakuk_microservice *ms, size_t i) {
  g_return_val_if_fail(ms != NULL, 0);
  const Port *p = port_at(ms, i);
  return p ? p->guest : 0;
}

OAKUK_API int32_t oakuk_microservice_readiness_tcp(const oakuk_microservice *ms) {
  g_return_val_if_fail(ms != NULL, 0);
  if (ms->ready_tcp >= 0)
    return (int32_t)ms->ready_tcp;
  for (guint i = 0; i < ms->ports->len; i++)
    if (g_array_index(ms->ports, Port, i).proto == OAKUK_PROTO_TCP)
      return g_array_index(ms->ports, Port, i).guest;
  return 0;
}

MS_GETTER(const char *, readiness_serial, ms->ready_serial, NULL)
MS_GETTER(int64_t, reschedule_after_s, ms->reschedule_after_s, OAKUK_RESCHEDULE_AFTER_S_DEFAULT)

OAKUK_API int32_t oakuk_microservice_port_proto(const oakuk_microservice *ms, size_t i) {
  g_return_val_if_fail(ms != NULL, OAKUK_PROTO_TCP);
  const Port *p = port_at(ms, i);
  return p ? p->proto : OAKUK_PROTO_TCP;
}

static const Constraint *constraint_at(const oakuk_microservice *ms, size_t i) {
  return i < ms->constraints->len ? g_ptr_array_index(ms->constraints, i) : NULL;
}

OAKUK_API int32_t oakuk_microservice_constraint_type(const oakuk_microservice *ms, size_t i) {
  g_return_val_if_fail(ms != NULL, -1);
  const Constraint *c = constraint_at(ms, i);
  return c ? c->type : -1;
}

OAKUK_API const char *oakuk_microservice_constraint_cluster(const oakuk_microservice *ms, size_t i) {
  g_return_val_if_fail(ms != NULL, NULL);
  const Constraint *c = constraint_at(ms, i);
  return c ? c->cluster : NULL;
}

OAKUK_API size_t oakuk_microservice_constraint_value_count(const oakuk_microservice *ms, size_t i) {
  g_return_val_if_fail(ms != NULL, 0);
  const Constraint *c = constraint_at(ms, i);
  return c ? c->values->len : 0;
}

OAKUK_API const char *oakuk_microservice_constraint_value(const oakuk_microservice *ms, size_t i, size_t j) {
  g_return_val_if_fail(ms != NULL, NULL);
  const Constraint *c = constraint_at(ms, i);
  return c && j < c->values->len ? g_ptr_array_index(c->values, j) : NULL;
}

#include "model-private.h"

#include <math.h>
#include <string.h>

/* ---- instance identity and status ---- */

static const char *const status_names[] = {
    [OAKUK_STATUS_REQUESTED] = "REQUESTED",
    [OAKUK_STATUS_CLUSTER_SCHEDULED] = "CLUSTER_SCHEDULED",
    [OAKUK_STATUS_NODE_SCHEDULED] = "NODE_SCHEDULED",
    [OAKUK_STATUS_CREATING] = "CREATING",
    [OAKUK_STATUS_RUNNING] = "RUNNING",
    [OAKUK_STATUS_FAILED] = "FAILED",
    [OAKUK_STATUS_DEAD] = "DEAD",
    [OAKUK_STATUS_COMPLETED] = "COMPLETED",
    [OAKUK_STATUS_UNDEPLOYED] = "UNDEPLOYED",
    [OAKUK_STATUS_NO_ACTIVE_CLUSTER] = "NoActiveClusterWithCapacity",
    [OAKUK_STATUS_NO_QUALIFIED_WORKER] = "NO_QUALIFIED_WORKER_FOUND",
    [OAKUK_STATUS_NO_WORKER_CAPACITY] = "NO_WORKER_CAPACITY",
};

OAKUK_API const char *oakuk_instance_status_name(int32_t status) {
  if (status < 0 || (size_t)status >= G_N_ELEMENTS(status_names))
    return NULL;
  return status_names[status];
}

OAKUK_API int32_t oakuk_instance_status_from_name(const char *name) {
  if (name == NULL)
    return -1;
  for (size_t i = 0; i < G_N_ELEMENTS(status_names); i++)
    if (strcmp(name, status_names[i]) == 0)
      return (int32_t)i;
  return -1;
}

OAKUK_API char *oakuk_instance_name(const char *service_name, int64_t n) {
  if (service_name == NULL || n < 0)
    return NULL;
  return g_strdup_printf("%s.instance.%" G_GINT64_FORMAT, service_name, n);
}

/* ---- JSON reading helpers: every problem goes to an OakukProblems with its path ---- */

static char *join_path(const char *prefix, const char *key) {
  return (prefix && *prefix) ? g_strdup_printf("%s.%s", prefix, key) : g_strdup(key);
}

/* The member key of o, or NULL when it is absent or JSON null (null reads as "not given"). */
static JsonNode *member(JsonObject *o, const char *key) {
  JsonNode *n = json_object_get_member(o, key);
  return (n && !JSON_NODE_HOLDS_NULL(n)) ? n : NULL;
}

static bool node_is_number(JsonNode *n) {
  if (!JSON_NODE_HOLDS_VALUE(n))
    return false;
  GType t = json_node_get_value_type(n);
  return t == G_TYPE_INT64 || t == G_TYPE_DOUBLE;
}

/* Reads a string member. Returns true when present and valid. */
static bool read_string(JsonObject *o, const char *key, const char *prefix, bool required, bool nonempty,
                        char **out, OakukProblems *pr) {
  JsonNode *n = member(o, key);
  g_autofree char *path = join_path(prefix, key);
  if (n == NULL) {
    if (required)
      oakuk_problems_add(pr, path, "is required");
    return false;
  }
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING) {
    oakuk_problems_add(pr, path, "must be a string");
    return false;
  }
  const char *s = json_node_get_string(n);
  if (nonempty && *s == '\0') {
    oakuk_problems_add(pr, path, "must not be empty");
    return false;
  }
  g_free(*out);
  *out = g_strdup(s);
  return true;
}

/* Reads a non-negative integer; integral doubles (Python's 12.0) are accepted. */
static bool read_count(JsonObject *o, const char *key, const char *prefix, bool required, int64_t *out,
                       OakukProblems *pr) {
  JsonNode *n = member(o, key);
  g_autofree char *path = join_path(prefix, key);
  if (n == NULL) {
    if (required)
      oakuk_problems_add(pr, path, "is required");
    return false;
  }
  if (!node_is_number(n)) {
    oakuk_problems_add(pr, path, "must be a non-negative integer");
    return false;
  }
  int64_t v;
  if (json_node_get_value_type(n) == G_TYPE_INT64) {
    v = json_node_get_int(n);
  } else {
    double d = json_node_get_double(n);
    if (!isfinite(d) || d != floor(d) || d < -9.2e18 || d > 9.2e18) {
      oakuk_problems_add(pr, path, "must be a non-negative integer, not %g", d);
      return false;
    }
    v = (int64_t)d;
  }
  if (v < 0) {
    oakuk_problems_add(pr, path, "must not be negative (%" G_GINT64_FORMAT ")", v);
    return false;
  }
  *out = v;
  return true;
}

/* Reads a finite number in [min, max] (max may be INFINITY). */
static bool read_number(JsonObject *o, const char *key, const char *prefix, bool required, double min,
                        double max, double *out, OakukProblems *pr) {
  JsonNode *n = member(o, key);
  g_autofree char *path = join_path(prefix, key);
  if (n == NULL) {
    if (required)
      oakuk_problems_add(pr, path, "is required");
    return false;
  }
  if (!node_is_number(n)) {
    oakuk_problems_add(pr, path, "must be a number");
    return false;
  }
  double d =
      json_node_get_value_type(n) == G_TYPE_INT64 ? (double)json_node_get_int(n) : json_node_get_double(n);
  if (!isfinite(d) || d < min || d > max) {
    if (isinf(max))
      oakuk_problems_add(pr, path, "must be a finite number >= %g, not %g", min, d);
    else
      oakuk_problems_add(pr, path, "must be between %g and %g, not %g", min, max, d);
    return false;
  }
  *out = d;
  return true;
}

/* Returns the array member key, or NULL (with a problem if it has the wrong type). */
static JsonArray *read_array(JsonObject *o, const char *key, const char *prefix, OakukProblems *pr) {
  JsonNode *n = member(o, key);
  if (n == NULL)
    return NULL;
  if (!JSON_NODE_HOLDS_ARRAY(n)) {
    g_autofree char *path = join_path(prefix, key);
    oakuk_problems_add(pr, path, "must be an array");
    return NULL;
  }
  return json_node_get_array(n);
}

static JsonObject *read_object(JsonObject *o, const char *key, const char *prefix, OakukProblems *pr) {
  JsonNode *n = member(o, key);
  if (n == NULL)
    return NULL;
  if (!JSON_NODE_HOLDS_OBJECT(n)) {
    g_autofree char *path = join_path(prefix, key);
    oakuk_problems_add(pr, path, "must be an object");
    return NULL;
  }
  return json_node_get_object(n);
}

/* The string at a[i], or NULL with a problem "<key>[i]: must be a string". */
static const char *array_string(JsonArray *a, guint i, const char *path, OakukProblems *pr) {
  JsonNode *n = json_array_get_element(a, i);
  if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_STRING) {
    g_autofree char *p = g_strdup_printf("%s[%u]", path, i);
    oakuk_problems_add(pr, p, "must be a string");
    return NULL;
  }
  return json_node_get_string(n);
}

/* Reads virtualization[] into the two flags; "docker" is read as "container". */
static void read_virtualization(JsonObject *o, bool *container, bool *unikernel, OakukProblems *pr) {
  JsonArray *a = read_array(o, "virtualization", NULL, pr);
  if (a == NULL)
    return;
  for (guint i = 0; i < json_array_get_length(a); i++) {
    const char *s = array_string(a, i, "virtualization", pr);
    if (s == NULL)
      continue;
    int32_t v = oakuk_virt_from_name(s);
    if (v == OAKUK_VIRT_CONTAINER) {
      *container = true;
    } else if (v == OAKUK_VIRT_UNIKERNEL) {
      *unikernel = true;
    } else {
      g_autofree char *p = g_strdup_printf("virtualization[%u]", i);
      oakuk_problems_add(pr, p, "unknown virtualization \"%s\" (expected \"container\" or \"unikernel\")", s);
    }
  }
}

static void add_unknown_arch_problem(OakukProblems *pr, const char *path, const char *arch) {
  oakuk_problems_add(pr, path, "unknown architecture \"%s\" (expected amd64, arm64, arm or riscv64)", arch);
}

/* Reads an array of GOARCH names into out (distinct, in order). */
static void read_arch_list(JsonArray *a, const char *path, GPtrArray *out, OakukProblems *pr) {
  for (guint i = 0; i < json_array_get_length(a); i++) {
    const char *s = array_string(a, i, path, pr);
    if (s == NULL)
      continue;
    if (!oakuk_arch_is_known(s)) {
      g_autofree char *p = g_strdup_printf("%s[%u]", path, i);
      add_unknown_arch_problem(pr, p, s);
      continue;
    }
    if (!g_ptr_array_find_with_equal_func(out, s, g_str_equal, NULL))
      g_ptr_array_add(out, g_strdup(s));
  }
}

static bool read_accel(JsonObject *o, const char *prefix, int32_t *out, OakukProblems *pr) {
  g_autofree char *s = NULL;
  if (!read_string(o, "accel", prefix, false, false, &s, pr))
    return false;
  int32_t a = oakuk_accel_from_name(s);
  if (a == OAKUK_ACCEL_NONE) {
    g_autofree char *path = join_path(prefix, "accel");
    oakuk_problems_add(pr, path, "unknown accel \"%s\" (expected \"kvm\" or \"tcg\")", s);
    return false;
  }
  *out = a;
  return true;
}

/* Parses text into a JSON object after the size/depth precheck. what names the document. */
static JsonNode *parse_object(const char *text, size_t len, const char *what, oakuk_error **error) {
  if (len == (size_t)-1)
    len = strlen(text);
  GError *gerr = NULL;
  if (!oakuk_json_precheck(text, len, &gerr)) {
    oakuk_set_error(error, OAKUK_EINVAL, 0, NULL, "%s: %s", what, gerr->message);
    g_error_free(gerr);
    return NULL;
  }
  g_autoptr(JsonParser) parser = json_parser_new_immutable();
  if (!json_parser_load_from_data(parser, text, (gssize)len, &gerr)) {
    oakuk_set_error(error, OAKUK_EINVAL, 0, NULL, "%s: malformed JSON: %s", what, gerr->message);
    g_error_free(gerr);
    return NULL;
  }
  JsonNode *root = json_parser_get_root(parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT(root)) {
    oakuk_set_error(error, OAKUK_EINVAL, 0, NULL, "%s: the document must be a JSON object", what);
    return NULL;
  }
  return json_node_copy(root);
}

static char *generate(JsonNode *root, bool pretty) {
  return oakuk_json_node_to_string(root, pretty);
}

/* Copies the members of src whose names are not in known[] into a new object (NULL if none). */
static JsonObject *collect_extra(JsonObject *src, const char *const *known) {
  JsonObject *extra = NULL;
  JsonObjectIter it;
  const char *key;
  JsonNode *value;
  json_object_iter_init_ordered(&it, src);
  while (json_object_iter_next_ordered(&it, &key, &value)) {
    if (g_strv_contains(known, key))
      continue;
    if (extra == NULL)
      extra = json_object_new();
    json_object_set_member(extra, key, json_node_copy(value));
  }
  return extra;
}

static void emit_extra(JsonBuilder *b, JsonObject *extra) {
  if (extra == NULL)
    return;
  JsonObjectIter it;
  const char *key;
  JsonNode *value;
  json_object_iter_init_ordered(&it, extra);
  while (json_object_iter_next_ordered(&it, &key, &value)) {
    json_builder_set_member_name(b, key);
    json_builder_add_value(b, json_node_copy(value));
  }
}

/* ---- node report ---- */

typedef struct {
  char *name;
  int32_t status;
  double cpu_percent;
  int64_t memory_mb;
  int64_t generation;
} InstanceReport;

struct oakuk_node_report {
  gatomicrefcount ref;
  char *id;
  char *host;
  char *ip;
  char *arch;
  double cpu_percent;
  int64_t vcpus;
  int64_t memory_mb;
  int64_t memory_total_mb;
  double memory_percent;
  int64_t gpus; /* accelerators the node offers; 0 when the report has none (older nodes) */
  int64_t tpus;
  bool virt_container;
  bool virt_unikernel;
  bool has_unikernel_obj; /* "unikernel" was given: re-emitted by to_json */
  int32_t uk_accel;
  char *qemu_version;
  GPtrArray *emulated; /* char*, distinct */
  GArray *instances;   /* InstanceReport */
  int64_t received_at_ms;
};

static void instance_report_clear(gpointer p) {
  g_free(((InstanceReport *)p)->name);
}

static oakuk_node_report *node_report_new(void) {
  oakuk_node_report *r = g_new0(oakuk_node_report, 1);
  g_atomic_ref_count_init(&r->ref);
  r->emulated = g_ptr_array_new_with_free_func(g_free);
  r->instances = g_array_new(FALSE, TRUE, sizeof(InstanceReport));
  g_array_set_clear_func(r->instances, instance_report_clear);
  return r;
}

static void node_report_free(oakuk_node_report *r) {
  g_free(r->id);
  g_free(r->host);
  g_free(r->ip);
  g_free(r->arch);
  g_free(r->qemu_version);
  g_ptr_array_unref(r->emulated);
  g_array_unref(r->instances);
  g_free(r);
}

static void read_unikernel(JsonObject *o, oakuk_node_report *r, OakukProblems *pr) {
  JsonObject *uk = read_object(o, "unikernel", NULL, pr);
  if (uk == NULL)
    return;
  r->has_unikernel_obj = true;
  read_accel(uk, "unikernel", &r->uk_accel, pr);
  read_string(uk, "qemu_version", "unikernel", false, false, &r->qemu_version, pr);
  JsonArray *a = read_array(uk, "emulated_archs", "unikernel", pr);
  if (a)
    read_arch_list(a, "unikernel.emulated_archs", r->emulated, pr);
}

static void read_instances(JsonObject *o, oakuk_node_report *r, OakukProblems *pr) {
  JsonArray *a = read_array(o, "instances", NULL, pr);
  if (a == NULL)
    return;
  for (guint i = 0; i < json_array_get_length(a); i++) {
    g_autofree char *prefix = g_strdup_printf("instances[%u]", i);
    JsonNode *n = json_array_get_element(a, i);
    if (!JSON_NODE_HOLDS_OBJECT(n)) {
      oakuk_problems_add(pr, prefix, "must be an object");
      continue;
    }
    JsonObject *io = json_node_get_object(n);
    InstanceReport ir = {NULL, -1, 0, 0, 0};
    g_autofree char *status = NULL;
    bool ok = read_string(io, "name", prefix, true, true, &ir.name, pr);
    if (read_string(io, "status", prefix, true, false, &status, pr)) {
      ir.status = oakuk_instance_status_from_name(status);
      if (ir.status < 0) {
        g_autofree char *path = join_path(prefix, "status");
        oakuk_problems_add(pr, path, "unknown instance status \"%s\"", status);
      }
    }
    ok = ok && ir.status >= 0;
    read_number(io, "cpu_percent", prefix, false, 0, INFINITY, &ir.cpu_percent, pr);
    read_count(io, "memory_mb", prefix, false, &ir.memory_mb, pr);
    read_count(io, "generation", prefix, false, &ir.generation, pr);
    if (ok)
      g_array_append_val(r->instances, ir);
    else
      g_free(ir.name);
  }
}

static void read_node_report(JsonObject *o, oakuk_node_report *r, OakukProblems *pr) {
  read_string(o, "id", NULL, true, true, &r->id, pr);
  read_string(o, "host", NULL, false, false, &r->host, pr);
  read_string(o, "ip", NULL, false, false, &r->ip, pr);
  if (read_string(o, "architecture", NULL, true, true, &r->arch, pr) && !oakuk_arch_is_known(r->arch))
    add_unknown_arch_problem(pr, "architecture", r->arch);
  read_number(o, "cpu_percent", NULL, false, 0, INFINITY, &r->cpu_percent, pr);
  read_count(o, "vcpus", NULL, true, &r->vcpus, pr);
  read_count(o, "memory", NULL, true, &r->memory_mb, pr);
  read_count(o, "memory_total", NULL, false, &r->memory_total_mb, pr);
  read_number(o, "memory_percent", NULL, false, 0, 100, &r->memory_percent, pr);
  read_count(o, "gpus", NULL, false, &r->gpus, pr);
  read_count(o, "tpus", NULL, false, &r->tpus, pr);
  read_virtualization(o, &r->virt_container, &r->virt_unikernel, pr);
  read_unikernel(o, r, pr);
  read_instances(o, r, pr);
}

OAKUK_API oakuk_node_report *oakuk_node_report_from_json(const char *json, size_t len, oakuk_error **error) {
  g_return_val_if_fail(json != NULL, NULL);
  g_autoptr(JsonNode) root = parse_object(json, len, "node report", error);
  if (root == NULL)
    return NULL;
  oakuk_node_report *r = node_report_new();
  OakukProblems pr;
  oakuk_problems_init(&pr);
  read_node_report(json_node_get_object(root), r, &pr);
  if (!oakuk_problems_finish(&pr, error)) {
    node_report_free(r);
    return NULL;
  }
  return r;
}

static void add_string_member(JsonBuilder *b, const char *key, const char *value) {
  json_builder_set_member_name(b, key);
  json_builder_add_string_value(b, value);
}

static void add_int_member(JsonBuilder *b, const char *key, int64_t value) {
  json_builder_set_member_name(b, key);
  json_builder_add_int_value(b, value);
}

static void add_double_member(JsonBuilder *b, const char *key, double value) {
  json_builder_set_member_name(b, key);
  json_builder_add_double_value(b, value);
}

static void add_virtualization(JsonBuilder *b, bool container, bool unikernel) {
  json_builder_set_member_name(b, "virtualization");
  json_builder_begin_array(b);
  if (container)
    json_builder_add_string_value(b, "container");
  if (unikernel)
    json_builder_add_string_value(b, "unikernel");
  json_builder_end_array(b);
}

static void add_string_array(JsonBuilder *b, const char *key, GPtrArray *strings) {
  json_builder_set_member_name(b, key);
  json_builder_begin_array(b);
  for (guint i = 0; i < strings->len; i++)
    json_builder_add_string_value(b, g_ptr_array_index(strings, i));
  json_builder_end_array(b);
}

static void add_unikernel(JsonBuilder *b, const oakuk_node_report *r) {
  json_builder_set_member_name(b, "unikernel");
  json_builder_begin_object(b);
  if (r->uk_accel != OAKUK_ACCEL_NONE)
    add_string_member(b, "accel", oakuk_accel_name(r->uk_accel));
  if (r->qemu_version)
    add_string_member(b, "qemu_version", r->qemu_version);
  add_string_array(b, "emulated_archs", r->emulated);
  json_builder_end_object(b);
}

static void add_instances(JsonBuilder *b, const oakuk_node_report *r) {
  json_builder_set_member_name(b, "instances");
  json_builder_begin_array(b);
  for (guint i = 0; i < r->instances->len; i++) {
    const InstanceReport *ir = &g_array_index(r->instances, InstanceReport, i);
    json_builder_begin_object(b);
    add_string_member(b, "name", ir->name);
    add_string_member(b, "status", oakuk_instance_status_name(ir->status));
    add_double_member(b, "cpu_percent", ir->cpu_percent);
    add_int_member(b, "memory_mb", ir->memory_mb);
    add_int_member(b, "generation", ir->generation);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
}

OAKUK_API char *oakuk_node_report_to_json(const oakuk_node_report *r, bool pretty, oakuk_error **error) {
  g_return_val_if_fail(r != NULL, NULL);
  g_autoptr(JsonBuilder) b = json_builder_new_immutable();
  json_builder_begin_object(b);
  add_string_member(b, "id", r->id);
  add_string_member(b, "host", r->host ? r->host : "");
  add_string_member(b, "ip", r->ip ? r->ip : "");
  add_string_member(b, "architecture", r->arch);
  add_double_member(b, "cpu_percent", r->cpu_percent);
  add_int_member(b, "vcpus", r->vcpus);
  add_int_member(b, "memory", r->memory_mb);
  add_int_member(b, "memory_total", r->memory_total_mb);
  add_double_member(b, "memory_percent", r->memory_percent);
  add_int_member(b, "gpus", r->gpus);
  add_int_member(b, "tpus", r->tpus);
  add_virtualization(b, r->virt_container, r->virt_unikernel);
  if (r->has_unikernel_obj)
    add_unikernel(b, r);
  add_instances(b, r);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  return generate(root, pretty);
}

OAKUK_API oakuk_node_report *oakuk_node_report_ref(oakuk_node_report *r) {
  g_return_val_if_fail(r != NULL, NULL);
  g_atomic_ref_count_inc(&r->ref);
  return r;
}

OAKUK_API void oakuk_node_report_unref(oakuk_node_report *r) {
  if (r != NULL && g_atomic_ref_count_dec(&r->ref))
    node_report_free(r);
}

OAKUK_DEFINE_GETTER(const char *, oakuk_node_report_id, oakuk_node_report, id, NULL)

OAKUK_API const char *oakuk_node_report_host(const oakuk_node_report *r) {
  g_return_val_if_fail(r != NULL, NULL);
  return r->host ? r->host : "";
}

OAKUK_API const char *oakuk_node_report_ip(const oakuk_node_report *r) {
  g_return_val_if_fail(r != NULL, NULL);
  return r->ip ? r->ip : "";
}

OAKUK_DEFINE_GETTER(const char *, oakuk_node_report_architecture, oakuk_node_report, arch, NULL)

OAKUK_DEFINE_GETTER(double, oakuk_node_report_cpu_percent, oakuk_node_report, cpu_percent, 0)

OAKUK_DEFINE_GETTER(int64_t, oakuk_node_report_vcpus, oakuk_node_report, vcpus, 0)

OAKUK_DEFINE_GETTER(int64_t, oakuk_node_report_memory_mb, oakuk_node_report, memory_mb, 0)

OAKUK_DEFINE_GETTER(int64_t, oakuk_node_report_memory_total_mb, oakuk_node_report, memory_total_mb, 0)

OAKUK_DEFINE_GETTER(double, oakuk_node_report_memory_percent, oakuk_node_report, memory_percent, 0)

OAKUK_DEFINE_GETTER(int64_t, oakuk_node_report_gpus, oakuk_node_report, gpus, 0)

OAKUK_DEFINE_GETTER(int64_t, oakuk_node_report_tpus, oakuk_node_report, tpus, 0)

OAKUK_API bool oakuk_node_report_has_virt(const oakuk_node_report *r, int32_t virt) {
  g_return_val_if_fail(r != NULL, false);
  if (virt == OAKUK_VIRT_CONTAINER)
    return r->virt_container;
  if (virt == OAKUK_VIRT_UNIKERNEL)
    return r->virt_unikernel;
  return false;
}

OAKUK_API int32_t oakuk_node_report_unikernel_accel(const oakuk_node_report *r) {
  g_return_val_if_fail(r != NULL, OAKUK_ACCEL_NONE);
  return r->virt_unikernel ? r->uk_accel : OAKUK_ACCEL_NONE;
}

OAKUK_DEFINE_GETTER(const char *, oakuk_node_report_qemu_version, oakuk_node_report, qemu_version, NULL)

OAKUK_API size_t oakuk_node_report_emulated_arch_count(const oakuk_node_report *r) {
  g_return_val_if_fail(r != NULL, 0);
  return r->emulated->len;
}

OAKUK_API const char *oakuk_node_report_emulated_arch(const oakuk_node_report *r, size_t i) {
  g_return_val_if_fail(r != NULL, NULL);
  return i < r->emulated->len ? g_ptr_array_index(r->emulated, i) : NULL;
}

OAKUK_API int32_t oakuk_node_report_accel_for_arch(const oakuk_node_report *r, const char *arch) {
  g_return_val_if_fail(r != NULL, OAKUK_ACCEL_NONE);
  if (!r->virt_unikernel || arch == NULL)
    return OAKUK_ACCEL_NONE;
  if (strcmp(arch, r->arch) == 0)
    return r->uk_accel;
  if (g_ptr_array_find_with_equal_func(r->emulated, arch, g_str_equal, NULL))
    return OAKUK_ACCEL_TCG;
  return OAKUK_ACCEL_NONE;
}

OAKUK_API size_t oakuk_node_report_instance_count(const oakuk_node_report *r) {
  g_return_val_if_fail(r != NULL, 0);
  return r->instances->len;
}

static const InstanceReport *instance_at(const oakuk_node_report *r, size_t i) {
  return i < r->instances->len ? &g_array_index(r->instances, InstanceReport, i) : NULL;
}

OAKUK_API const char *oakuk_node_report_instance_name(const oakuk_node_report *r, size_t i) {
  g_return_val_if_fail(r != NULL, NULL);
  const InstanceReport *ir = instance_at(r, i);
  return ir ? ir->name : NULL;
}

OAKUK_API int32_t oakuk_node_report_instance_status(const oakuk_node_report *r, size_t i) {
  g_return_val_if_fail(r != NULL, -1);
  const InstanceReport *ir = instance_at(r, i);
  return ir ? ir->status : -1;
}

OAKUK_API double oakuk_node_report_instance_cpu_percent(const oakuk_node_report *r, size_t i) {
  g_return_val_if_fail(r != NULL, 0);
  const InstanceReport *ir = instance_at(r, i);
  return ir ? ir->cpu_percent : 0;
}

OAKUK_API int64_t oakuk_node_report_instance_memory_mb(const oakuk_node_report *r, size_t i) {
  g_return_val_if_fail(r != NULL, 0);
  const InstanceReport *ir = instance_at(r, i);
  return ir ? ir->memory_mb : 0;
}

OAKUK_API int64_t oakuk_node_report_instance_generation(const oakuk_node_report *r, size_t i) {
  g_return_val_if_fail(r != NULL, 0);
  const InstanceReport *ir = instance_at(r, i);
  return ir ? ir->generation : 0;
}

OAKUK_DEFINE_GETTER(int64_t, oakuk_node_report_received_at_ms, oakuk_node_report, received_at_ms, 0)

OAKUK_API void oakuk_node_report_set_received_at_ms(oakuk_node_report *r, int64_t ms) {
  g_return_if_fail(r != NULL);
  r->received_at_ms = ms;
}

/* ---- cluster aggregate ---- */

static void per_arch_free(gpointer p) {
  OakukPerArch *e = p;
  g_free(e->arch);
  if (e->extra)
    json_object_unref(e->extra);
  g_free(e);
}

oakuk_cluster_aggregate *oakuk_cluster_aggregate_new_empty(void) {
  oakuk_cluster_aggregate *agg = g_new0(oakuk_cluster_aggregate, 1);
  g_atomic_ref_count_init(&agg->ref);
  agg->archs = g_ptr_array_new_with_free_func(g_free);
  agg->per_arch = g_ptr_array_new_with_free_func(per_arch_free);
  agg->jobs = g_ptr_array_new_with_free_func(g_free);
  return agg;
}

OakukPerArch *oakuk_cluster_aggregate_add_per_arch(oakuk_cluster_aggregate *agg, const char *arch) {
  OakukPerArch *e = g_new0(OakukPerArch, 1);
  e->arch = g_strdup(arch);
  g_ptr_array_add(agg->per_arch, e);
  return e;
}

static gint per_arch_cmp(gconstpointer a, gconstpointer b) {
  const OakukPerArch *x = *(OakukPerArch *const *)a;
  const OakukPerArch *y = *(OakukPerArch *const *)b;
  return strcmp(x->arch, y->arch);
}

void oakuk_cluster_aggregate_sort_per_arch(oakuk_cluster_aggregate *agg) {
  g_ptr_array_sort(agg->per_arch, per_arch_cmp);
}

static void aggregate_free(oakuk_cluster_aggregate *agg) {
  g_free(agg->id);
  g_free(agg->name);
  g_ptr_array_unref(agg->archs);
  g_ptr_array_unref(agg->per_arch);
  g_ptr_array_unref(agg->jobs);
  if (agg->extra)
    json_object_unref(agg->extra);
  g_free(agg);
}

static const char *const per_arch_keys[] = {"cpu_percent",  "cpu_cores", "memory",
                                            "memory_in_mb", "accel",     NULL};

static void read_per_arch(JsonObject *o, oakuk_cluster_aggregate *agg, OakukProblems *pr) {
  JsonObject *pa = read_object(o, "aggregation_per_architecture", NULL, pr);
  if (pa == NULL)
    return;
  JsonObjectIter it;
  const char *arch;
  JsonNode *value;
  json_object_iter_init_ordered(&it, pa);
  while (json_object_iter_next_ordered(&it, &arch, &value)) {
    g_autofree char *prefix = join_path("aggregation_per_architecture", arch);
    if (!oakuk_arch_is_known(arch)) {
      add_unknown_arch_problem(pr, prefix, arch);
      continue;
    }
    if (!JSON_NODE_HOLDS_OBJECT(value)) {
      oakuk_problems_add(pr, prefix, "must be an object");
      continue;
    }
    JsonObject *eo = json_node_get_object(value);
    OakukPerArch *e = oakuk_cluster_aggregate_add_per_arch(agg, arch);
    read_number(eo, "cpu_percent", prefix, false, 0, INFINITY, &e->cpu_percent, pr);
    read_count(eo, "cpu_cores", prefix, true, &e->cpu_cores, pr);
    read_number(eo, "memory", prefix, false, 0, 100, &e->memory_percent, pr);
    read_count(eo, "memory_in_mb", prefix, true, &e->memory_mb, pr);
    read_accel(eo, prefix, &e->accel, pr);
    e->extra = collect_extra(eo, per_arch_keys);
  }
  oakuk_cluster_aggregate_sort_per_arch(agg);
}

static void read_jobs(JsonObject *o, oakuk_cluster_aggregate *agg, OakukProblems *pr) {
  JsonArray *a = read_array(o, "jobs", NULL, pr);
  if (a == NULL)
    return;
  for (guint i = 0; i < json_array_get_length(a); i++) {
    const char *s = array_string(a, i, "jobs", pr);
    if (s)
      g_ptr_array_add(agg->jobs, g_strdup(s));
  }
}

static const char *const aggregate_keys[] = {"cpu_percent",
                                             "memory_percent",
                                             "cpu_cores",
                                             "cumulative_memory_in_mb",
                                             "number_of_nodes",
                                             "active_nodes",
                                             "gpus",
                                             "tpus",
                                             "virtualization",
                                             "arch",
                                             "aggregation_per_architecture",
                                             "jobs",
                                             NULL};

static void read_aggregate(JsonObject *o, oakuk_cluster_aggregate *agg, OakukProblems *pr) {
  read_number(o, "cpu_percent", NULL, false, 0, INFINITY, &agg->cpu_percent, pr);
  read_number(o, "memory_percent", NULL, false, 0, 100, &agg->memory_percent, pr);
  read_count(o, "cpu_cores", NULL, true, &agg->cpu_cores, pr);
  read_count(o, "cumulative_memory_in_mb", NULL, true, &agg->memory_mb, pr);
  bool have_total = read_count(o, "number_of_nodes", NULL, true, &agg->number_of_nodes, pr);
  if (!read_count(o, "active_nodes", NULL, false, &agg->active_nodes, pr))
    agg->active_nodes = agg->number_of_nodes;
  else if (have_total && agg->active_nodes > agg->number_of_nodes)
    oakuk_problems_add(pr, "active_nodes",
                       "%" G_GINT64_FORMAT " exceeds number_of_nodes (%" G_GINT64_FORMAT ")",
                       agg->active_nodes, agg->number_of_nodes);
  read_count(o, "gpus", NULL, false, &agg->gpus, pr);
  read_count(o, "tpus", NULL, false, &agg->tpus, pr);
  read_virtualization(o, &agg->virt_container, &agg->virt_unikernel, pr);
  JsonArray *archs = read_array(o, "arch", NULL, pr);
  if (archs)
    read_arch_list(archs, "arch", agg->archs, pr);
  read_per_arch(o, agg, pr);
  read_jobs(o, agg, pr);
  agg->extra = collect_extra(o, aggregate_keys);
}

OAKUK_API oakuk_cluster_aggregate *oakuk_cluster_aggregate_from_json(const char *json, size_t len,
                                                                     oakuk_error **error) {
  g_return_val_if_fail(json != NULL, NULL);
  g_autoptr(JsonNode) root = parse_object(json, len, "cluster aggregate", error);
  if (root == NULL)
    return NULL;
  oakuk_cluster_aggregate *agg = oakuk_cluster_aggregate_new_empty();
  OakukProblems pr;
  oakuk_problems_init(&pr);
  read_aggregate(json_node_get_object(root), agg, &pr);
  if (!oakuk_problems_finish(&pr, error)) {
    aggregate_free(agg);
    return NULL;
  }
  return agg;
}

static void add_per_arch(JsonBuilder *b, const oakuk_cluster_aggregate *agg) {
  json_builder_set_member_name(b, "aggregation_per_architecture");
  json_builder_begin_object(b);
  for (guint i = 0; i < agg->per_arch->len; i++) {
    const OakukPerArch *e = g_ptr_array_index(agg->per_arch, i);
    json_builder_set_member_name(b, e->arch);
    json_builder_begin_object(b);
    add_double_member(b, "cpu_percent", e->cpu_percent);
    add_int_member(b, "cpu_cores", e->cpu_cores);
    add_double_member(b, "memory", e->memory_percent);
    add_int_member(b, "memory_in_mb", e->memory_mb);
    if (e->accel != OAKUK_ACCEL_NONE)
      add_string_member(b, "accel", oakuk_accel_name(e->accel));
    emit_extra(b, e->extra);
    json_builder_end_object(b);
  }
  json_builder_end_object(b);
}

OAKUK_API char *oakuk_cluster_aggregate_to_json(const oakuk_cluster_aggregate *agg, bool pretty,
                                                oakuk_error **error) {
  g_return_val_if_fail(agg != NULL, NULL);
  g_autoptr(JsonBuilder) b = json_builder_new_immutable();
  json_builder_begin_object(b);
  add_double_member(b, "cpu_percent", agg->cpu_percent);
  add_double_member(b, "memory_percent", agg->memory_percent);
  add_int_member(b, "cpu_cores", agg->cpu_cores);
  add_int_member(b, "cumulative_memory_in_mb", agg->memory_mb);
  add_int_member(b, "number_of_nodes", agg->number_of_nodes);
  add_int_member(b, "active_nodes", agg->active_nodes);
  add_int_member(b, "gpus", agg->gpus);
  add_int_member(b, "tpus", agg->tpus);
  add_virtualization(b, agg->virt_container, agg->virt_unikernel);
  add_string_array(b, "arch", agg->archs);
  add_per_arch(b, agg);
  add_string_array(b, "jobs", agg->jobs);
  emit_extra(b, agg->extra);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  return generate(root, pretty);
}

OAKUK_API oakuk_cluster_aggregate *oakuk_cluster_aggregate_ref(oakuk_cluster_aggregate *agg) {
  g_return_val_if_fail(agg != NULL, NULL);
  g_atomic_ref_count_inc(&agg->ref);
  return agg;
}

OAKUK_API void oakuk_cluster_aggregate_unref(oakuk_cluster_aggregate *agg) {
  if (agg != NULL && g_atomic_ref_count_dec(&agg->ref))
    aggregate_free(agg);
}

OAKUK_API void oakuk_cluster_aggregate_set_identity(oakuk_cluster_aggregate *agg, const char *id,
                                                    const char *name) {
  g_return_if_fail(agg != NULL);
  char *new_id = g_strdup(id);
  char *new_name = g_strdup(name);
  g_free(agg->id);
  g_free(agg->name);
  agg->id = new_id;
  agg->name = new_name;
}

OAKUK_DEFINE_GETTER(const char *, oakuk_cluster_aggregate_id, oakuk_cluster_aggregate, id, NULL)

OAKUK_DEFINE_GETTER(const char *, oakuk_cluster_aggregate_name, oakuk_cluster_aggregate, name, NULL)

OAKUK_DEFINE_GETTER(int64_t, oakuk_cluster_aggregate_received_at_ms, oakuk_cluster_aggregate, received_at_ms,
                    0)

OAKUK_API void oakuk_cluster_aggregate_set_received_at_ms(oakuk_cluster_aggregate *agg, int64_t ms) {
  g_return_if_fail(agg != NULL);
  agg->received_at_ms = ms;
}

OAKUK_DEFINE_GETTER(double, oakuk_cluster_aggregate_cpu_percent, oakuk_cluster_aggregate, cpu_percent, 0)

OAKUK_DEFINE_GETTER(double, oakuk_cluster_aggregate_memory_percent, oakuk_cluster_aggregate, memory_percent,
                    0)

OAKUK_DEFINE_GETTER(int64_t, oakuk_cluster_aggregate_cpu_cores, oakuk_cluster_aggregate, cpu_cores, 0)

OAKUK_DEFINE_GETTER(int64_t, oakuk_cluster_aggregate_memory_mb, oakuk_cluster_aggregate, memory_mb, 0)

OAKUK_DEFINE_GETTER(int64_t, oakuk_cluster_aggregate_number_of_nodes, oakuk_cluster_aggregate,
                    number_of_nodes, 0)

OAKUK_DEFINE_GETTER(int64_t, oakuk_cluster_aggregate_active_nodes, oakuk_cluster_aggregate, active_nodes, 0)

OAKUK_DEFINE_GETTER(int64_t, oakuk_cluster_aggregate_gpus, oakuk_cluster_aggregate, gpus, 0)

OAKUK_DEFINE_GETTER(int64_t, oakuk_cluster_aggregate_tpus, oakuk_cluster_aggregate, tpus, 0)

OAKUK_API bool oakuk_cluster_aggregate_has_virt(const oakuk_cluster_aggregate *agg, int32_t virt) {
  g_return_val_if_fail(agg != NULL, false);
  if (virt == OAKUK_VIRT_CONTAINER)
    return agg->virt_container;
  if (virt == OAKUK_VIRT_UNIKERNEL)
    return agg->virt_unikernel;
  return false;
}

OAKUK_API size_t oakuk_cluster_aggregate_arch_count(const oakuk_cluster_aggregate *agg) {
  g_return_val_if_fail(agg != NULL, 0);
  return agg->archs->len;
}

OAKUK_API const char *oakuk_cluster_aggregate_arch(const oakuk_cluster_aggregate *agg, size_t i) {
  g_return_val_if_fail(agg != NULL, NULL);
  return i < agg->archs->len ? g_ptr_array_index(agg->archs, i) : NULL;
}

OAKUK_API size_t oakuk_cluster_aggregate_per_arch_count(const oakuk_cluster_aggregate *agg) {
  g_return_val_if_fail(agg != NULL, 0);
  return agg->per_arch->len;
}

OAKUK_API const char *oakuk_cluster_aggregate_per_arch_name(const oakuk_cluster_aggregate *agg, size_t i) {
  g_return_val_if_fail(agg != NULL, NULL);
  if (i >= agg->per_arch->len)
    return NULL;
  return ((OakukPerArch *)g_ptr_array_index(agg->per_arch, i))->arch;
}

OAKUK_API bool oakuk_cluster_aggregate_per_arch(const oakuk_cluster_aggregate *agg, const char *arch,
                                                double *cpu_percent, int64_t *cpu_cores,
                                                double *memory_percent, int64_t *memory_mb, int32_t *accel) {
  g_return_val_if_fail(agg != NULL, false);
  if (arch == NULL)
    return false;
  for (guint i = 0; i < agg->per_arch->len; i++) {
    const OakukPerArch *e = g_ptr_array_index(agg->per_arch, i);
    if (strcmp(e->arch, arch) != 0)
      continue;
    if (cpu_percent)
      *cpu_percent = e->cpu_percent;
    if (cpu_cores)
      *cpu_cores = e->cpu_cores;
    if (memory_percent)
      *memory_percent = e->memory_percent;
    if (memory_mb)
      *memory_mb = e->memory_mb;
    if (accel)
      *accel = e->accel;
    return true;
  }
  return false;
}

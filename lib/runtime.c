/* The runtime interface (DESIGN §2): instance specs and the dispatch to an implementation
 * (qemu.c, later the container runtime), with ordered status delivery on the owner's context. */
#include "runtime-private.h"

#include <string.h>

/* ---- instance spec ---- */

OAKUK_API oakuk_instance_spec *oakuk_instance_spec_new(const char *name) {
  g_return_val_if_fail(name != NULL, NULL);
  oakuk_instance_spec *s = g_new0(oakuk_instance_spec, 1);
  s->refcount = 1;
  s->name = g_strdup(name);
  s->virt = OAKUK_VIRT_UNIKERNEL;
  s->memory_mb = 64;
  s->vcpus = 1;
  s->accel = OAKUK_ACCEL_TCG;
  s->args = g_ptr_array_new_with_free_func(g_free);
  s->env = g_ptr_array_new_with_free_func(g_free);
  return s;
}

OAKUK_API oakuk_instance_spec *oakuk_instance_spec_ref(oakuk_instance_spec *spec) {
  g_return_val_if_fail(spec != NULL, NULL);
  g_atomic_int_inc(&spec->refcount);
  return spec;
}

OAKUK_API void oakuk_instance_spec_unref(oakuk_instance_spec *s) {
  if (!s || !g_atomic_int_dec_and_test(&s->refcount))
    return;
  g_free(s->name);
  g_free(s->kernel);
  g_free(s->initrd);
  g_free(s->files_dir);
  g_free(s->bundle);
  g_free(s->rootfs);
  g_free(s->arch);
  g_ptr_array_unref(s->args);
  g_ptr_array_unref(s->env);
  g_free(s->flavor);
  g_free(s->version);
  g_free(s->cmdline_extra);
  g_free(s->netns_path);
  g_free(s->tap_name);
  g_free(s->ip);
  g_free(s->gateway);
  g_free(s->mac);
  g_free(s->image);
  g_free(s->registry_username);
  g_free(s->registry_password);
  g_free(s->workdir);
  g_free(s);
}

static GPtrArray *strv_copy(GPtrArray *a) {
  GPtrArray *c = g_ptr_array_new_with_free_func(g_free);
  for (guint i = 0; i < a->len; i++)
    g_ptr_array_add(c, g_strdup(a->pdata[i]));
  return c;
}

oakuk_instance_spec *oakuk_instance_spec_copy(const oakuk_instance_spec *s) {
  oakuk_instance_spec *c = g_new0(oakuk_instance_spec, 1);
  *c = *s;
  c->refcount = 1;
  c->name = g_strdup(s->name);
  c->kernel = g_strdup(s->kernel);
  c->initrd = g_strdup(s->initrd);
  c->files_dir = g_strdup(s->files_dir);
  c->bundle = g_strdup(s->bundle);
  c->rootfs = g_strdup(s->rootfs);
  c->arch = g_strdup(s->arch);
  c->args = strv_copy(s->args);
  c->env = strv_copy(s->env);
  c->flavor = g_strdup(s->flavor);
  c->version = g_strdup(s->version);
  c->cmdline_extra = g_strdup(s->cmdline_extra);
  c->netns_path = g_strdup(s->netns_path);
  c->tap_name = g_strdup(s->tap_name);
  c->ip = g_strdup(s->ip);
  c->gateway = g_strdup(s->gateway);
  c->mac = g_strdup(s->mac);
  c->image = g_strdup(s->image);
  c->registry_username = g_strdup(s->registry_username);
  c->registry_password = g_strdup(s->registry_password);
  c->workdir = g_strdup(s->workdir);
  return c;
}

#define STR_PROP(field)                                                                          \
  OAKUK_API void oakuk_instance_spec_set_##field(oakuk_instance_spec *spec, const char *value) { \
    g_return_if_fail(spec != NULL);                                                              \
    g_free(spec->field);                                                                         \
    spec->field = g_strdup(value);                                                               \
  }                                                                                              \
  OAKUK_API const char *oakuk_instance_spec_##field(const oakuk_instance_spec *spec) {           \
    g_return_val_if_fail(spec != NULL, NULL);                                                    \
    return spec->field;                                                                          \
  }

#define VAL_PROP(type, field)                                                               \
  OAKUK_API void oakuk_instance_spec_set_##field(oakuk_instance_spec *spec, type value) {  \
    g_return_if_fail(spec != NULL);                                                         \
    spec->field = value;                                                                    \
  }                                                                                         \
  OAKUK_API type oakuk_instance_spec_##field(const oakuk_instance_spec *spec) {             \
    g_return_val_if_fail(spec != NULL, 0);                                                  \
    return spec->field;                                                                     \
  }

STR_PROP(kernel)
STR_PROP(initrd)
STR_PROP(files_dir)
STR_PROP(bundle)
STR_PROP(rootfs)
STR_PROP(arch)
STR_PROP(flavor)
STR_PROP(version)
STR_PROP(cmdline_extra)
STR_PROP(image)
STR_PROP(workdir)
VAL_PROP(int32_t, virt)
VAL_PROP(int64_t, memory_mb)
VAL_PROP(int32_t, vcpus)
VAL_PROP(int32_t, accel)
VAL_PROP(bool, one_shot)
VAL_PROP(int32_t, graceful_stop_s)
VAL_PROP(bool, readonly_rootfs)

OAKUK_API void oakuk_instance_spec_set_registry_auth(oakuk_instance_spec *spec, const char *username,
                                                     const char *password) {
  g_return_if_fail(spec != NULL);
  g_free(spec->registry_username);
  if (spec->registry_password)
    memset(spec->registry_password, 0, strlen(spec->registry_password));
  g_free(spec->registry_password);
  spec->registry_username = g_strdup(username);
  spec->registry_password = g_strdup(password);
}

OAKUK_DEFINE_GETTER(const char *, oakuk_instance_spec_registry_username, oakuk_instance_spec, registry_username, NULL)

OAKUK_DEFINE_GETTER(const char *, oakuk_instance_spec_registry_password, oakuk_instance_spec, registry_password, NULL)

OAKUK_DEFINE_GETTER(const char *, oakuk_instance_spec_name, oakuk_instance_spec, name, NULL)

OAKUK_API void oakuk_instance_spec_add_arg(oakuk_instance_spec *spec, const char *arg) {
  g_return_if_fail(spec != NULL && arg != NULL);
  g_ptr_array_add(spec->args, g_strdup(arg));
}

OAKUK_API size_t oakuk_instance_spec_arg_count(const oakuk_instance_spec *spec) {
  g_return_val_if_fail(spec != NULL, 0);
  return spec->args->len;
}

OAKUK_API const char *oakuk_instance_spec_arg(const oakuk_instance_spec *spec, size_t i) {
  g_return_val_if_fail(spec != NULL, NULL);
  return i < spec->args->len ? spec->args->pdata[i] : NULL;
}

OAKUK_API void oakuk_instance_spec_add_env(oakuk_instance_spec *spec, const char *key_value) {
  g_return_if_fail(spec != NULL && key_value != NULL);
  g_ptr_array_add(spec->env, g_strdup(key_value));
}

OAKUK_API size_t oakuk_instance_spec_env_count(const oakuk_instance_spec *spec) {
  g_return_val_if_fail(spec != NULL, 0);
  return spec->env->len;
}

OAKUK_API const char *oakuk_instance_spec_env(const oakuk_instance_spec *spec, size_t i) {
  g_return_val_if_fail(spec != NULL, NULL);
  return i < spec->env->len ? spec->env->pdata[i] : NULL;
}

OAKUK_API void oakuk_instance_spec_set_network(oakuk_instance_spec *spec, const char *netns_path,
                                               const char *tap_name, const char *ip, int32_t prefix,
                                               const char *gateway, const char *mac) {
  g_return_if_fail(spec != NULL);
  g_free(spec->netns_path);
  g_free(spec->tap_name);
  g_free(spec->ip);
  g_free(spec->gateway);
  g_free(spec->mac);
  spec->netns_path = g_strdup(netns_path);
  spec->tap_name = g_strdup(tap_name);
  spec->ip = g_strdup(ip);
  spec->prefix = prefix;
  spec->gateway = g_strdup(gateway);
  spec->mac = g_strdup(mac);
}

OAKUK_DEFINE_GETTER(const char *, oakuk_instance_spec_netns_path, oakuk_instance_spec, netns_path, NULL)
OAKUK_DEFINE_GETTER(const char *, oakuk_instance_spec_tap_name, oakuk_instance_spec, tap_name, NULL)
OAKUK_DEFINE_GETTER(const char *, oakuk_instance_spec_ip, oakuk_instance_spec, ip, NULL)
OAKUK_DEFINE_GETTER(int32_t, oakuk_instance_spec_prefix, oakuk_instance_spec, prefix, 0)
OAKUK_DEFINE_GETTER(const char *, oakuk_instance_spec_gateway, oakuk_instance_spec, gateway, NULL)
OAKUK_DEFINE_GETTER(const char *, oakuk_instance_spec_mac, oakuk_instance_spec, mac, NULL)

gboolean oakuk_instance_name_is_valid(const char *name) {
  size_t n = name ? strlen(name) : 0;
  if (n == 0 || n > 200 || name[0] == '.')
    return FALSE;
  for (size_t i = 0; i < n; i++)
    if (!g_ascii_isalnum(name[i]) && !strchr("._-", name[i]))
      return FALSE;
  return TRUE;
}

/* ---- runtime ---- */

typedef struct {
  char *name;
  int32_t status;
  char *detail;
} StatusEvent;

static void status_event_free(StatusEvent *e) {
  g_free(e->name);
  g_free(e->detail);
  g_free(e);
}

oakuk_runtime *oakuk_runtime_alloc(const OakukRuntimeClass *klass, void *impl) {
  oakuk_runtime *rt = g_new0(oakuk_runtime, 1);
  rt->refcount = 1;
  rt->klass = klass;
  rt->impl = impl;
  rt->context = g_main_context_ref_thread_default();
  rt->status = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  rt->names = g_ptr_array_new_with_free_func(g_free);
  g_queue_init(&rt->pending);
  return rt;
}

OAKUK_API oakuk_runtime *oakuk_runtime_ref(oakuk_runtime *rt) {
  g_return_val_if_fail(rt != NULL, NULL);
  g_atomic_int_inc(&rt->refcount);
  return rt;
}

OAKUK_API void oakuk_runtime_unref(oakuk_runtime *rt) {
  if (!rt || !g_atomic_int_dec_and_test(&rt->refcount))
    return;
  rt->cb = NULL;
  rt->klass->finalize(rt);
  if (rt->idle) {
    g_source_destroy(rt->idle);
    g_source_unref(rt->idle);
  }
  g_queue_clear_full(&rt->pending, (GDestroyNotify)status_event_free);
  g_hash_table_unref(rt->status);
  g_ptr_array_unref(rt->names);
  g_main_context_unref(rt->context);
  g_free(rt);
}

OAKUK_API void oakuk_runtime_set_keep_instances(oakuk_runtime *rt, bool keep) {
  g_return_if_fail(rt != NULL);
  rt->keep_instances = keep;
}

OAKUK_API int32_t oakuk_runtime_virt(const oakuk_runtime *rt) {
  g_return_val_if_fail(rt != NULL, OAKUK_VIRT_NONE);
  return rt->klass->virt;
}

OAKUK_API void oakuk_runtime_set_status_callback(oakuk_runtime *rt, oakuk_runtime_status_cb cb,
                                                 void *user_data) {
  g_return_if_fail(rt != NULL);
  rt->cb = cb;
  rt->cb_data = user_data;
}

static gint cmp_names(gconstpointer a, gconstpointer b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

void oakuk_runtime_track(oakuk_runtime *rt, const char *name) {
  if (g_hash_table_contains(rt->status, name))
    return;
  g_hash_table_insert(rt->status, g_strdup(name), GINT_TO_POINTER(0));
  g_ptr_array_add(rt->names, g_strdup(name));
  g_ptr_array_sort(rt->names, cmp_names);
}

gboolean oakuk_runtime_knows(const oakuk_runtime *rt, const char *name) {
  return g_hash_table_contains(rt->status, name);
}

static void forget(oakuk_runtime *rt, const char *name) {
  g_hash_table_remove(rt->status, name);
  for (guint i = 0; i < rt->names->len; i++)
    if (strcmp(rt->names->pdata[i], name) == 0) {
      g_ptr_array_remove_index(rt->names, i);
      break;
    }
}

static gboolean deliver_pending(gpointer data) {
  oakuk_runtime *rt = data;
  /* Keep rt alive while user callbacks run: a callback may drop the caller's last reference. */
  oakuk_runtime_ref(rt);
  StatusEvent *e;
  while ((e = g_queue_pop_head(&rt->pending))) {
    if (rt->cb)
      rt->cb(e->name, e->status, e->detail, rt->cb_data);
    status_event_free(e);
  }
  g_source_unref(rt->idle);
  rt->idle = NULL;
  oakuk_runtime_unref(rt);
  return G_SOURCE_REMOVE;
}

void oakuk_runtime_emit(oakuk_runtime *rt, const char *name, int32_t status, const char *detail) {
  if (status == OAKUK_STATUS_UNDEPLOYED)
    forget(rt, name);
  else {
    oakuk_runtime_track(rt, name);
    g_hash_table_insert(rt->status, g_strdup(name), GINT_TO_POINTER(status + 1));
  }
  g_debug("instance %s: %s%s%s", name, oakuk_instance_status_name(status), detail ? ": " : "",
          detail ? detail : "");
  StatusEvent *e = g_new0(StatusEvent, 1);
  e->name = g_strdup(name);
  e->status = status;
  e->detail = g_strdup(detail);
  g_queue_push_tail(&rt->pending, e);
  if (!rt->idle) {
    rt->idle = g_idle_source_new();
    g_source_set_priority(rt->idle, G_PRIORITY_DEFAULT);
    g_source_set_callback(rt->idle, deliver_pending, rt, NULL);
    g_source_attach(rt->idle, rt->context);
  }
}

OAKUK_API int oakuk_runtime_deploy(oakuk_runtime *rt, const oakuk_instance_spec *spec, oakuk_error **error) {
  g_return_val_if_fail(rt != NULL && spec != NULL, OAKUK_EINVAL);
  GError *err = NULL;
  if (!oakuk_instance_name_is_valid(spec->name))
    return oakuk_set_error(error, OAKUK_EINVAL, 0, "name",
                           "instance name \"%s\": use 1-200 characters of A-Z a-z 0-9 . _ - (not starting with '.')",
                           spec->name);
  if (spec->virt != rt->klass->virt)
    return oakuk_set_error(error, OAKUK_EINVAL, 0, "virt", "instance %s: virtualization %s is not run by the %s runtime",
                           spec->name, oakuk_virt_name(spec->virt) ? oakuk_virt_name(spec->virt) : "none",
                           oakuk_virt_name(rt->klass->virt));
  if (oakuk_runtime_knows(rt, spec->name))
    return oakuk_set_error(error, OAKUK_EEXISTS, 0, "name", "instance %s exists already", spec->name);
  if (!rt->klass->deploy(rt, spec, &err))
    return oakuk_propagate_gerror(error, err);
  return 0;
}

OAKUK_API int oakuk_runtime_undeploy(oakuk_runtime *rt, const char *name, oakuk_error **error) {
  g_return_val_if_fail(rt != NULL && name != NULL, OAKUK_EINVAL);
  GError *err = NULL;
  if (!oakuk_runtime_knows(rt, name))
    return oakuk_set_error(error, OAKUK_ENOTFOUND, 0, "name", "instance %s: no such instance", name);
  if (!rt->klass->undeploy(rt, name, &err))
    return oakuk_propagate_gerror(error, err);
  return 0;
}

OAKUK_API int oakuk_runtime_stats(oakuk_runtime *rt, const char *name, double *cpu_percent, int64_t *rss_kb,
                                  oakuk_error **error) {
  g_return_val_if_fail(rt != NULL && name != NULL, OAKUK_EINVAL);
  GError *err = NULL;
  double cpu = 0;
  int64_t rss = 0;
  if (!oakuk_runtime_knows(rt, name))
    return oakuk_set_error(error, OAKUK_ENOTFOUND, 0, "name", "instance %s: no such instance", name);
  if (!rt->klass->stats(rt, name, &cpu, &rss, &err))
    return oakuk_propagate_gerror(error, err);
  if (cpu_percent)
    *cpu_percent = cpu;
  if (rss_kb)
    *rss_kb = rss;
  return 0;
}

OAKUK_API int oakuk_runtime_cgroup_memory_kb(oakuk_runtime *rt, const char *name, int64_t *kb,
                                             oakuk_error **error) {
  g_return_val_if_fail(rt != NULL && name != NULL, OAKUK_EINVAL);
  GError *err = NULL;
  int64_t v = 0;
  if (!oakuk_runtime_knows(rt, name))
    return oakuk_set_error(error, OAKUK_ENOTFOUND, 0, "name", "instance %s: no such instance", name);
  if (!rt->klass->cgroup_memory(rt, name, &v, &err))
    return oakuk_propagate_gerror(error, err);
  if (kb)
    *kb = v;
  return 0;
}

OAKUK_API int oakuk_runtime_adopt(oakuk_runtime *rt, oakuk_error **error) {
  g_return_val_if_fail(rt != NULL, OAKUK_EINVAL);
  GError *err = NULL;
  int n = rt->klass->adopt(rt, &err);
  if (n < 0)
    return oakuk_propagate_gerror(error, err);
  return n;
}

OAKUK_API size_t oakuk_runtime_instance_count(const oakuk_runtime *rt) {
  g_return_val_if_fail(rt != NULL, 0);
  return rt->names->len;
}

OAKUK_API const char *oakuk_runtime_instance_name(const oakuk_runtime *rt, size_t i) {
  g_return_val_if_fail(rt != NULL, NULL);
  return i < rt->names->len ? rt->names->pdata[i] : NULL;
}

OAKUK_API int32_t oakuk_runtime_instance_status(const oakuk_runtime *rt, const char *name) {
  g_return_val_if_fail(rt != NULL && name != NULL, -1);
  gpointer v;
  if (!g_hash_table_lookup_extended(rt->status, name, NULL, &v))
    return -1;
  return GPOINTER_TO_INT(v) - 1;
}

OAKUK_API int64_t oakuk_runtime_instance_pid(const oakuk_runtime *rt, const char *name) {
  g_return_val_if_fail(rt != NULL && name != NULL, 0);
  return rt->klass->pid((oakuk_runtime *)rt, name);
}

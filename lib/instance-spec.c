/* The instance spec (include/oakuk/runtime.h): what a runtime is asked to run. Plain data. */
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
  g_free(s->readiness_serial);
  g_free(s->readiness_address);
  g_free(s->snapshot_dir);
  g_free(s->snapshot_scope);
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
  c->readiness_serial = g_strdup(s->readiness_serial);
  c->readiness_address = g_strdup(s->readiness_address);
  c->snapshot_dir = g_strdup(s->snapshot_dir);
  c->snapshot_scope = g_strdup(s->snapshot_scope);
  return c;
}

#define STR_PROP(field)                                                                                      \
  OAKUK_API void oakuk_instance_spec_set_##field(oakuk_instance_spec *spec, const char *value) {             \
    g_return_if_fail(spec != NULL);                                                                          \
    g_free(spec->field);                                                                                     \
    spec->field = g_strdup(value);                                                                           \
  }                                                                                                          \
  OAKUK_API const char *oakuk_instance_spec_##field(const oakuk_instance_spec *spec) {                       \
    g_return_val_if_fail(spec != NULL, NULL);                                                                \
    return spec->field;                                                                                      \
  }

#define VAL_PROP(type, field)                                                                                \
  OAKUK_API void oakuk_instance_spec_set_##field(oakuk_instance_spec *spec, type value) {                    \
    g_return_if_fail(spec != NULL);                                                                          \
    spec->field = value;                                                                                     \
  }                                                                                                          \
  OAKUK_API type oakuk_instance_spec_##field(const oakuk_instance_spec *spec) {                              \
    g_return_val_if_fail(spec != NULL, 0);                                                                   \
    return spec->field;                                                                                      \
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
STR_PROP(readiness_serial)
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

OAKUK_DEFINE_GETTER(const char *, oakuk_instance_spec_registry_username, oakuk_instance_spec,
                    registry_username, NULL)

OAKUK_DEFINE_GETTER(const char *, oakuk_instance_spec_registry_password, oakuk_instance_spec,
                    registry_password, NULL)

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

OAKUK_API void oakuk_instance_spec_set_readiness_tcp(oakuk_instance_spec *spec, const char *address,
                                                     int32_t port) {
  g_return_if_fail(spec != NULL);
  g_free(spec->readiness_address);
  spec->readiness_address = g_strdup(address);
  spec->readiness_tcp = port;
}

OAKUK_DEFINE_GETTER(int32_t, oakuk_instance_spec_readiness_tcp_port, oakuk_instance_spec, readiness_tcp, 0)
OAKUK_DEFINE_GETTER(const char *, oakuk_instance_spec_readiness_tcp_address, oakuk_instance_spec,
                    readiness_address, NULL)

OAKUK_API void oakuk_instance_spec_set_snapshot(oakuk_instance_spec *spec, const char *dir,
                                                const char *scope) {
  g_return_if_fail(spec != NULL);
  g_free(spec->snapshot_dir);
  g_free(spec->snapshot_scope);
  spec->snapshot_dir = g_strdup(dir);
  spec->snapshot_scope = g_strdup(dir ? scope : NULL);
}

OAKUK_DEFINE_GETTER(const char *, oakuk_instance_spec_snapshot_dir, oakuk_instance_spec, snapshot_dir, NULL)
OAKUK_DEFINE_GETTER(const char *, oakuk_instance_spec_snapshot_scope, oakuk_instance_spec, snapshot_scope,
                    NULL)

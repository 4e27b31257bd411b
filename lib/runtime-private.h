/* The runtime interface seen from an implementation (qemu, container): a vtable plus shared
 * plumbing for status delivery. Not installed, not exported. */
#ifndef OAKUK_RUNTIME_PRIVATE_H
#define OAKUK_RUNTIME_PRIVATE_H

#include "oakuk-private.h"

G_BEGIN_DECLS

struct oakuk_instance_spec {
  gint refcount;
  char *name;
  int32_t virt;
  char *kernel, *initrd, *files_dir, *bundle, *rootfs;
  int64_t memory_mb;
  int32_t vcpus;
  char *arch;
  int32_t accel;
  GPtrArray *args; /* char* */
  GPtrArray *env;  /* char* */
  bool one_shot;
  int32_t graceful_stop_s;
  char *flavor, *version, *cmdline_extra;
  char *netns_path, *tap_name, *ip, *gateway, *mac;
  int32_t prefix;
  char *image, *registry_username, *registry_password, *workdir; /* container */
  bool readonly_rootfs;
};

/* A deep copy (refcount 1). */
oakuk_instance_spec *oakuk_instance_spec_copy(const oakuk_instance_spec *spec);

typedef struct {
  int32_t virt;
  gboolean (*deploy)(oakuk_runtime *rt, const oakuk_instance_spec *spec, GError **error);
  gboolean (*undeploy)(oakuk_runtime *rt, const char *name, GError **error);
  gboolean (*stats)(oakuk_runtime *rt, const char *name, double *cpu_percent, int64_t *rss_kb, GError **error);
  gboolean (*cgroup_memory)(oakuk_runtime *rt, const char *name, int64_t *kb, GError **error);
  int (*adopt)(oakuk_runtime *rt, GError **error);
  int64_t (*pid)(oakuk_runtime *rt, const char *name);
  /* Releases the implementation; stops instances unless rt->keep_instances. */
  void (*finalize)(oakuk_runtime *rt);
} OakukRuntimeClass;

struct oakuk_runtime {
  gint refcount;
  const OakukRuntimeClass *klass;
  void *impl;
  GMainContext *context; /* where callbacks run */
  bool keep_instances;
  oakuk_runtime_status_cb cb;
  void *cb_data;
  GHashTable *status;  /* name -> GINT_TO_POINTER(status + 1) */
  GPtrArray *names;    /* sorted, char* */
  GQueue pending;      /* StatusEvent*, delivered in order from one idle source */
  GSource *idle;
};

/* Allocates a runtime bound to the thread-default GMainContext. */
oakuk_runtime *oakuk_runtime_alloc(const OakukRuntimeClass *klass, void *impl);
/* Records the status and queues the callback (delivered on rt->context, in order). UNDEPLOYED
 * forgets the instance. Must be called on rt->context's thread. */
void oakuk_runtime_emit(oakuk_runtime *rt, const char *name, int32_t status, const char *detail);
/* Registers a name as known (status unknown yet). */
void oakuk_runtime_track(oakuk_runtime *rt, const char *name);
gboolean oakuk_runtime_knows(const oakuk_runtime *rt, const char *name);

/* Instance names become directory, cgroup and QMP socket names: 1..200 of [A-Za-z0-9._-], not
 * starting with '.'. */
gboolean oakuk_instance_name_is_valid(const char *name);

G_END_DECLS

#endif

/* The runtime interface seen from an implementation (qemu, container). runtime.c owns every
 * instance and its lifecycle (states, stop sequence, exit judgement, readiness, records, adoption);
 * a backend plugs in through a handler table and only prepares, spawns, signals, releases and
 * reports stats, as crun plugs its handlers into one lifecycle. Not installed, not exported. */
#ifndef OAKUK_RUNTIME_PRIVATE_H
#define OAKUK_RUNTIME_PRIVATE_H

#include "oakuk-private.h"
#include "sysutil-private.h"

#include <gio/gio.h>
#include <json-glib/json-glib.h>

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
  int32_t readiness_tcp;
  char *readiness_address, *readiness_serial;
  char *snapshot_dir, *snapshot_scope;
};

/* A deep copy (refcount 1). */
oakuk_instance_spec *oakuk_instance_spec_copy(const oakuk_instance_spec *spec);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(oakuk_instance_spec, oakuk_instance_spec_unref)

/* Where an instance is in its life. A deploy starts PREPARING; the process exists from STARTING
 * on; STOPPING is an undeploy of a live process; EXITED means its end has been reported (or the
 * start failed) and only its files may remain. */
typedef enum {
  OAKUK_INST_PREPARING,
  OAKUK_INST_STARTING,
  OAKUK_INST_RUNNING,
  OAKUK_INST_STOPPING,
  OAKUK_INST_EXITED,
} OakukInstState;

/* Stop phases, in order; a backend acts in those it can and skips the others. */
typedef enum {
  OAKUK_STOP_GRACEFUL, /* ask the workload to end (ACPI power button, SIGTERM); wait grace_s */
  OAKUK_STOP_QUIT,     /* end the process itself (QMP quit); wait a few seconds */
  OAKUK_STOP_KILL,     /* SIGKILL */
} OakukStopPhase;

typedef struct OakukInstance OakukInstance;
typedef struct OakukRuntimeClass OakukRuntimeClass;

struct OakukInstance {
  gint refcount;
  oakuk_runtime *rt; /* NULL once the runtime let go of it */
  const OakukRuntimeClass *klass;
  GMainContext *context; /* the runtime's */
  char *name, *dir;
  oakuk_instance_spec *spec; /* NULL for adopted instances */
  OakukInstState state;
  gboolean undeploy;       /* an undeploy was asked for: the instance ends in UNDEPLOYED */
  gboolean releasing;      /* a release task is in flight */
  gboolean release_remove; /* ... and it removes the directory */
  gboolean orphan_keep;    /* the runtime went away keeping its instances */
  int32_t status;          /* last status reported, -1 before the first */
  GPid pid;
  guint64 start_time;
  OakukProcWatch watch;
  gboolean one_shot;
  guint grace_s;
  int stop_phase;
  GSource *timer;    /* the next stop phase */
  char *fail_reason; /* why the runtime killed a process that never ran */
  /* What the backend saw of the end (QEMU: QMP SHUTDOWN's reason, GUEST_PANICKED). */
  char *shutdown_reason;
  gboolean panicked;
  gboolean ended_unwatched; /* found ended at adoption: how it ended is unknown */
  gboolean draining;        /* reaped; the backend reads its last words before the end is judged */
  int drain_status;         /* the wait status meanwhile */
  int32_t exit_kind;
  char *end_detail; /* the end's status and detail, reported once its release is done */
  int32_t end_status;
  /* Readiness (runtime-ready.c). */
  gint64 deploy_us; /* monotonic time of the deploy call; 0 for adopted instances */
  int32_t ready_port;
  char *ready_text, *ready_ip;
  char *uk_address, *uk_version; /* the address a Unikraft guest must configure, and its version */
  gboolean ready;
  gint64 ready_ms;
  struct OakukProbe *probe;
  int32_t start_kind; /* OAKUK_START_* */
  char *start_note;   /* RUNNING's first detail (a snapshot restore that failed), or NULL */
  void *data;         /* the backend's */
};

/* The handlers a backend provides. Those marked (thread) run in a worker thread and must touch
 * neither the runtime nor the instance's state fields; all others run on the runtime's context. */
struct OakukRuntimeClass {
  int32_t virt;
  const char *console;     /* the console's file name in the instance directory */
  const char *process;     /* how details name the process: "QEMU", "the container" */
  gboolean console_judges; /* crash lines on the console make an exit a crash (unikernels) */
  /* Makes i->data for a new instance (deployed, adopted, or a leftover to release). */
  void (*init)(OakukInstance *i);
  /* Validates the spec and prepares i for a deploy (grace_s, readiness facts). */
  gboolean (*check)(OakukInstance *i, GError **error);
  /* (thread) Everything a start needs; may start the process itself (sets i->pid). */
  gboolean (*prepare)(OakukInstance *i, GError **error);
  /* Starts the process unless prepare did; NULL when prepare always does. */
  gboolean (*spawn)(OakukInstance *i, GError **error);
  /* The process runs: TRUE when it counts as RUNNING now, FALSE when the backend calls
   * oakuk_instance_running later (QEMU, once QMP answers). */
  gboolean (*started)(OakukInstance *i);
  /* One stop phase: TRUE when the backend acted on it. */
  gboolean (*signal)(OakukInstance *i, OakukStopPhase phase);
  /* The process is gone, reaped: TRUE when the backend still has to read what it said before it
   * went (QEMU's SHUTDOWN reason may be on its way through QMP when the exit is seen), and calls
   * oakuk_instance_drained once it has, or soon. May be NULL. */
  gboolean (*drain)(OakukInstance *i);
  /* The process ended before it counted as RUNNING (wait_status as for judge): TRUE when the
   * backend started another one in its place (a failed snapshot restore, booted cold), which the
   * runtime then watches as it did the first. May be NULL. */
  gboolean (*retry)(OakukInstance *i, int wait_status);
  /* The instance's probes all succeeded: TRUE when the backend first has work to do (saving a
   * snapshot) and calls oakuk_instance_ready again once it is done. May be NULL. */
  gboolean (*before_ready)(OakukInstance *i);
  /* The process is gone: drop connections to it. May be NULL. */
  void (*exited)(OakukInstance *i);
  /* (thread) Releases what the instance holds outside its directory; with remove, the directory
   * too. Also used, blocking, on shutdown and for leftovers found at adoption. */
  void (*release)(OakukInstance *i, gboolean remove);
  /* Extra lines for a status detail (QEMU's own error output), or NULL. */
  char *(*extra_detail)(OakukInstance *i);
  /* Adds the backend's members to instance.json. */
  void (*record)(OakukInstance *i, JsonBuilder *b);
  /* Adoption: reads the backend's members from instance.json and returns the live process, or
   * 0 when it is gone (the runtime then judges its end). */
  GPid (*adopt)(OakukInstance *i, JsonObject *record);
  gboolean (*stats)(OakukInstance *i, double *cpu_percent, int64_t *rss_kb, GError **error);
  gboolean (*cgroup_memory)(OakukInstance *i, int64_t *kb, GError **error);
  void (*free_data)(void *data);
  /* Releases the backend's runtime-wide state (rt->impl). */
  void (*finalize)(oakuk_runtime *rt);
};

struct oakuk_runtime {
  gint refcount;
  const OakukRuntimeClass *klass;
  void *impl;
  char *instances_dir;
  GMainContext *context; /* where callbacks run */
  bool keep_instances;
  oakuk_runtime_status_cb cb;
  void *cb_data;
  oakuk_runtime_ready_cb ready_cb;
  void *ready_cb_data;
  GHashTable *instances; /* name -> OakukInstance* (owned reference) */
  GPtrArray *names;      /* sorted, char* */
  GQueue pending;        /* StatusEvent*, delivered in order from one idle source */
  GSource *idle;
};

/* Allocates a runtime bound to the thread-default GMainContext, keeping its instances in
 * instances_dir (created). NULL with error when the directory cannot be made. */
oakuk_runtime *oakuk_runtime_alloc(const OakukRuntimeClass *klass, void *impl, const char *instances_dir,
                                   GError **error);

/* For backends: the process counts as RUNNING from now on (QEMU after QMP's handshake). */
void oakuk_instance_running(OakukInstance *i);
/* The backend read what the reaped process said last (drain): its end is judged now. */
void oakuk_instance_drained(OakukInstance *i);
/* For backends: the start failed after the process was made; kills it (the exit is then reported
 * as FAILED, with why). */
void oakuk_instance_fail(OakukInstance *i, const char *why);
/* For backends: a CREATING status with a progress detail (may be called from any thread). */
void oakuk_instance_progress(OakukInstance *i, const char *detail);
/* A new instance object of rt that is not one of its instances (not listed, no statuses): the
 * QEMU backend's pooled processes. */
OakukInstance *oakuk_instance_new_detached(oakuk_runtime *rt, const char *name);
OakukInstance *oakuk_instance_ref(OakukInstance *i);
void oakuk_instance_unref(OakukInstance *i);
/* The instance's console file (free with g_free). */
char *oakuk_instance_console_path(const OakukInstance *i);

/* Instance names become directory, cgroup and QMP socket names: 1..200 of [A-Za-z0-9._-], not
 * starting with '.'. */
gboolean oakuk_instance_name_is_valid(const char *name);

/* Readiness (runtime-ready.c): starts probing a RUNNING instance, stops it. Calls
 * oakuk_instance_ready when every probe the instance has succeeded. */
void oakuk_probe_start(OakukInstance *i);
void oakuk_probe_stop(OakukInstance *i);
/* The instance's process ended while it was RUNNING and not yet ready: reads the console one last
 * time, and reports it ready (before its end) when that completes what it waited for — a guest that
 * prints its ready text and powers off at once ends before the next probe tick. */
void oakuk_probe_final(OakukInstance *i);
void oakuk_instance_ready(OakukInstance *i);
/* A RUNNING status with a detail (NULL clears it), from the probes. */
void oakuk_instance_note(OakukInstance *i, const char *detail);

G_END_DECLS

#endif

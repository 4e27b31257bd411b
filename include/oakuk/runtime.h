#ifndef OAKUK_RUNTIME_H
#define OAKUK_RUNTIME_H

#include <oakuk/error.h>

OAKUK_BEGIN_DECLS

/* The runtime interface (docs/architecture.md §5.4, §10, §11): what the node asks of a unikernel
 * (QEMU) or container runtime. A runtime runs named instances described by an oakuk_instance_spec
 * and reports their status (OAKUK_STATUS_* from <oakuk/model.h>) through one callback, always
 * invoked on the GMainContext that was the thread-default context when the runtime was created. */

/* ---- instance spec ---- */

/* What to run: identity, resources, payload and network. Opaque, reference-counted; every string
 * is copied by the setters; getters return borrowed strings (NULL when unset). */
typedef struct oakuk_instance_spec oakuk_instance_spec;

/* name: the instance name (docs/architecture.md §5.1). Allowed characters: A-Z a-z 0-9 . _ -
 * (checked at deploy).
 * Defaults: virt OAKUK_VIRT_UNIKERNEL, memory 64 MB, 1 vcpu, arch = the host's, accel TCG,
 * not one-shot, graceful stop 0 s, flavor/version detected from the kernel. */
OAKUK_API oakuk_instance_spec *oakuk_instance_spec_new(const char *name);
OAKUK_API oakuk_instance_spec *oakuk_instance_spec_ref(oakuk_instance_spec *spec);
OAKUK_API void oakuk_instance_spec_unref(oakuk_instance_spec *spec);

OAKUK_API const char *oakuk_instance_spec_name(const oakuk_instance_spec *spec);
OAKUK_API void oakuk_instance_spec_set_virt(oakuk_instance_spec *spec, int32_t virt);
OAKUK_API int32_t oakuk_instance_spec_virt(const oakuk_instance_spec *spec);

/* Unikernel payload: kernel image, optional initrd, optional directory shared by 9p (tag fs0;
 * copied per instance). */
OAKUK_API void oakuk_instance_spec_set_kernel(oakuk_instance_spec *spec, const char *path);
OAKUK_API const char *oakuk_instance_spec_kernel(const oakuk_instance_spec *spec);
OAKUK_API void oakuk_instance_spec_set_initrd(oakuk_instance_spec *spec, const char *path);
OAKUK_API const char *oakuk_instance_spec_initrd(const oakuk_instance_spec *spec);
OAKUK_API void oakuk_instance_spec_set_files_dir(oakuk_instance_spec *spec, const char *path);
OAKUK_API const char *oakuk_instance_spec_files_dir(const oakuk_instance_spec *spec);
/* Container payload: OCI bundle directory and its rootfs. */
OAKUK_API void oakuk_instance_spec_set_bundle(oakuk_instance_spec *spec, const char *path);
OAKUK_API const char *oakuk_instance_spec_bundle(const oakuk_instance_spec *spec);
OAKUK_API void oakuk_instance_spec_set_rootfs(oakuk_instance_spec *spec, const char *path);
OAKUK_API const char *oakuk_instance_spec_rootfs(const oakuk_instance_spec *spec);
/* Container image: an OCI reference ("registry/name:tag", "name@sha256:...") or "oci-archive:<url>"
 * (an OCI image layout tarball over http/https/file). When set, the runtime pulls it and builds
 * the bundle itself; bundle/rootfs are then ignored. */
OAKUK_API void oakuk_instance_spec_set_image(oakuk_instance_spec *spec, const char *reference);
OAKUK_API const char *oakuk_instance_spec_image(const oakuk_instance_spec *spec);
/* Registry credentials for the image (basic auth, or the credentials sent to a bearer-token
 * endpoint); NULL = anonymous. */
OAKUK_API void oakuk_instance_spec_set_registry_auth(oakuk_instance_spec *spec, const char *username,
                                                     const char *password);
OAKUK_API const char *oakuk_instance_spec_registry_username(const oakuk_instance_spec *spec);
OAKUK_API const char *oakuk_instance_spec_registry_password(const oakuk_instance_spec *spec);
/* Mount the container's root filesystem read-only (default false). */
OAKUK_API void oakuk_instance_spec_set_readonly_rootfs(oakuk_instance_spec *spec, bool readonly);
OAKUK_API bool oakuk_instance_spec_readonly_rootfs(const oakuk_instance_spec *spec);
/* Working directory of the container's process; NULL = the image's WorkingDir, else "/". */
OAKUK_API void oakuk_instance_spec_set_workdir(oakuk_instance_spec *spec, const char *path);
OAKUK_API const char *oakuk_instance_spec_workdir(const oakuk_instance_spec *spec);

OAKUK_API void oakuk_instance_spec_set_memory_mb(oakuk_instance_spec *spec, int64_t memory_mb);
OAKUK_API int64_t oakuk_instance_spec_memory_mb(const oakuk_instance_spec *spec);
OAKUK_API void oakuk_instance_spec_set_vcpus(oakuk_instance_spec *spec, int32_t vcpus);
OAKUK_API int32_t oakuk_instance_spec_vcpus(const oakuk_instance_spec *spec);
/* GOARCH name of the guest ("amd64", "arm64", ...); NULL = the host's architecture. */
OAKUK_API void oakuk_instance_spec_set_arch(oakuk_instance_spec *spec, const char *arch);
OAKUK_API const char *oakuk_instance_spec_arch(const oakuk_instance_spec *spec);
/* OAKUK_ACCEL_KVM or OAKUK_ACCEL_TCG. */
OAKUK_API void oakuk_instance_spec_set_accel(oakuk_instance_spec *spec, int32_t accel);
OAKUK_API int32_t oakuk_instance_spec_accel(const oakuk_instance_spec *spec);

/* Arguments placed after "--" on the guest command line, and environment entries "KEY=VALUE". */
OAKUK_API void oakuk_instance_spec_add_arg(oakuk_instance_spec *spec, const char *arg);
OAKUK_API size_t oakuk_instance_spec_arg_count(const oakuk_instance_spec *spec);
OAKUK_API const char *oakuk_instance_spec_arg(const oakuk_instance_spec *spec, size_t i);
OAKUK_API void oakuk_instance_spec_add_env(oakuk_instance_spec *spec, const char *key_value);
OAKUK_API size_t oakuk_instance_spec_env_count(const oakuk_instance_spec *spec);
OAKUK_API const char *oakuk_instance_spec_env(const oakuk_instance_spec *spec, size_t i);

/* A one-shot instance that exits cleanly is COMPLETED instead of DEAD. */
OAKUK_API void oakuk_instance_spec_set_one_shot(oakuk_instance_spec *spec, bool one_shot);
OAKUK_API bool oakuk_instance_spec_one_shot(const oakuk_instance_spec *spec);
/* Seconds granted after an ACPI power-down request before the instance is stopped; 0 = none. */
OAKUK_API void oakuk_instance_spec_set_graceful_stop_s(oakuk_instance_spec *spec, int32_t seconds);
OAKUK_API int32_t oakuk_instance_spec_graceful_stop_s(const oakuk_instance_spec *spec);

/* Unikernel flavor ("unikraft" | "linux") and version ("0.16.3"); NULL = detect from the kernel. */
OAKUK_API void oakuk_instance_spec_set_flavor(oakuk_instance_spec *spec, const char *flavor);
OAKUK_API const char *oakuk_instance_spec_flavor(const oakuk_instance_spec *spec);
OAKUK_API void oakuk_instance_spec_set_version(oakuk_instance_spec *spec, const char *version);
OAKUK_API const char *oakuk_instance_spec_version(const oakuk_instance_spec *spec);
/* Extra kernel arguments placed before the network parameters (an image's oakuk.json
 * "cmdline_extra", e.g. "console=ttyS0 quiet panic=-1"). */
OAKUK_API void oakuk_instance_spec_set_cmdline_extra(oakuk_instance_spec *spec, const char *extra);
OAKUK_API const char *oakuk_instance_spec_cmdline_extra(const oakuk_instance_spec *spec);

/* Network: the instance runs inside the network namespace at netns_path (e.g. /run/netns/<name>)
 * and its NIC is the tap device tap_name there. ip/gateway are dotted IPv4, prefix 0..32, mac
 * "52:54:00:..". netns_path NULL = no network (the default). */
OAKUK_API void oakuk_instance_spec_set_network(oakuk_instance_spec *spec, const char *netns_path,
                                               const char *tap_name, const char *ip, int32_t prefix,
                                               const char *gateway, const char *mac);
OAKUK_API const char *oakuk_instance_spec_netns_path(const oakuk_instance_spec *spec);
OAKUK_API const char *oakuk_instance_spec_tap_name(const oakuk_instance_spec *spec);
OAKUK_API const char *oakuk_instance_spec_ip(const oakuk_instance_spec *spec);
OAKUK_API int32_t oakuk_instance_spec_prefix(const oakuk_instance_spec *spec);
OAKUK_API const char *oakuk_instance_spec_gateway(const oakuk_instance_spec *spec);
OAKUK_API const char *oakuk_instance_spec_mac(const oakuk_instance_spec *spec);

/* Readiness: RUNNING says the process (QEMU, the container's init) is up; ready says the service
 * answers. tcp: the runtime connects to address:port from its own network namespace; address NULL
 * = the guest's ip (set_network); port 0 = no TCP probe (the default). serial: a text the console
 * must show (cleaned as by <oakuk/console.h>); NULL = none. With neither, an instance is ready
 * when it is RUNNING; with both, when both have succeeded. */
OAKUK_API void oakuk_instance_spec_set_readiness_tcp(oakuk_instance_spec *spec, const char *address,
                                                     int32_t port);
OAKUK_API int32_t oakuk_instance_spec_readiness_tcp_port(const oakuk_instance_spec *spec);
OAKUK_API const char *oakuk_instance_spec_readiness_tcp_address(const oakuk_instance_spec *spec);
OAKUK_API void oakuk_instance_spec_set_readiness_serial(oakuk_instance_spec *spec, const char *text);
OAKUK_API const char *oakuk_instance_spec_readiness_serial(const oakuk_instance_spec *spec);

/* Snapshot start (unikernels; docs/unikernels.md "Snapshot start"): the instance is restored from
 * a snapshot in dir, keyed by everything that goes into the guest (QEMU and its arguments, the
 * kernel and initrd files, memory, vCPUs, accelerator, kernel command line, NIC) and by scope
 * (e.g. the service: instances of one scope never restore another's). When there is none yet, the
 * instance boots, is paused at its first readiness and saved there (mode 0600), and runs on. A
 * restore that fails boots cold, removes the bad snapshot and says so in RUNNING's detail. Every
 * instance restored from one snapshot shares the guest's memory, random state included: opt in
 * only for guests where that is acceptable. Needs instances that are alike on the network (the
 * NAT layout); refused at deploy for a spec with files_dir (QEMU cannot migrate a 9p share).
 * dir NULL: the instance boots (the default). */
OAKUK_API void oakuk_instance_spec_set_snapshot(oakuk_instance_spec *spec, const char *dir,
                                                const char *scope);
OAKUK_API const char *oakuk_instance_spec_snapshot_dir(const oakuk_instance_spec *spec);
OAKUK_API const char *oakuk_instance_spec_snapshot_scope(const oakuk_instance_spec *spec);

/* ---- runtime ---- */

typedef struct oakuk_runtime oakuk_runtime;

/* How an instance's process ended (oakuk_runtime_instance_exit). */
#define OAKUK_EXIT_NONE 0 /* it has not ended (or the runtime ended it on undeploy) */
#define OAKUK_EXIT_CLEAN                                                                                     \
  1 /* it ended by itself without a failure: exit code 0, or a guest that                                    \
     * powered off with no crash on its console */
#define OAKUK_EXIT_CRASH                                                                                     \
  2                         /* it ended by itself with a failure: a non-zero exit code, a guest              \
                             * panic or reset, crash lines on the console */
#define OAKUK_EXIT_KILLED 3 /* a signal or someone else (not this runtime) ended it */
#define OAKUK_EXIT_FAILED 4 /* it never ran: the start failed */

/* instance: the instance name; status: OAKUK_STATUS_*; detail: a sentence or NULL. */
typedef void (*oakuk_runtime_status_cb)(const char *instance, int32_t status, const char *detail,
                                        void *user_data);

OAKUK_API oakuk_runtime *oakuk_runtime_ref(oakuk_runtime *rt);
/* Dropping the last reference stops every instance (without waiting for status callbacks),
 * unless oakuk_runtime_set_keep_instances(rt, true) was called: then the instances keep running
 * and a later runtime on the same state directory can adopt them. */
OAKUK_API void oakuk_runtime_unref(oakuk_runtime *rt);
OAKUK_API void oakuk_runtime_set_keep_instances(oakuk_runtime *rt, bool keep);
/* Virtualization this runtime runs (OAKUK_VIRT_*). */
OAKUK_API int32_t oakuk_runtime_virt(const oakuk_runtime *rt);

OAKUK_API void oakuk_runtime_set_status_callback(oakuk_runtime *rt, oakuk_runtime_status_cb cb,
                                                 void *user_data);

/* instance: the instance name; ready_ms: milliseconds from its deploy call to ready, or -1 for an
 * adopted instance (deployed by an earlier runtime). Delivered in order with the statuses, after
 * RUNNING, on the same context. */
typedef void (*oakuk_runtime_ready_cb)(const char *instance, int64_t ready_ms, void *user_data);
OAKUK_API void oakuk_runtime_set_ready_callback(oakuk_runtime *rt, oakuk_runtime_ready_cb cb,
                                                void *user_data);

/* Validates spec, then starts the instance in the background and returns 0; statuses follow through
 * the callback (CREATING, then RUNNING or FAILED). An invalid spec (bad name, missing kernel, kernel of
 * another architecture, forbidden characters in args) fails here with OAKUK_EINVAL; a name already
 * running with OAKUK_EEXISTS. */
OAKUK_API int oakuk_runtime_deploy(oakuk_runtime *rt, const oakuk_instance_spec *spec, oakuk_error **error);
/* Stops the instance (if running) and removes its state; UNDEPLOYED follows through the callback.
 * OAKUK_ENOTFOUND when the runtime has no such instance. */
OAKUK_API int oakuk_runtime_undeploy(oakuk_runtime *rt, const char *name, oakuk_error **error);
/* CPU use in percent of one core since the previous call (or since start) and resident memory. */
OAKUK_API int oakuk_runtime_stats(oakuk_runtime *rt, const char *name, double *cpu_percent, int64_t *rss_kb,
                                  oakuk_error **error);
/* Memory charged to the instance's cgroup (includes page cache), in kB. */
OAKUK_API int oakuk_runtime_cgroup_memory_kb(oakuk_runtime *rt, const char *name, int64_t *kb,
                                             oakuk_error **error);
/* Re-adopts instances left in the state directory by a previous runtime (e.g. before a node restart).
 * Live ones report RUNNING again; those that died meanwhile report DEAD/COMPLETED. Returns the number
 * of live instances adopted, or a negative code. */
OAKUK_API int oakuk_runtime_adopt(oakuk_runtime *rt, oakuk_error **error);

/* Instances this runtime knows, sorted by name. */
OAKUK_API size_t oakuk_runtime_instance_count(const oakuk_runtime *rt);
OAKUK_API const char *oakuk_runtime_instance_name(const oakuk_runtime *rt, size_t i);
/* Last reported status (OAKUK_STATUS_*), or -1 when unknown. */
OAKUK_API int32_t oakuk_runtime_instance_status(const oakuk_runtime *rt, const char *name);
/* Host process id of the instance (QEMU or the container's init), or 0 when not running. */
OAKUK_API int64_t oakuk_runtime_instance_pid(const oakuk_runtime *rt, const char *name);
/* Whether the instance is ready, and the milliseconds from its deploy to ready (-1 when not ready
 * or adopted). Readiness ends with RUNNING. */
OAKUK_API bool oakuk_runtime_instance_ready(const oakuk_runtime *rt, const char *name);
OAKUK_API int64_t oakuk_runtime_instance_ready_ms(const oakuk_runtime *rt, const char *name);
/* How the instance started (oakuk_runtime_instance_start). */
#define OAKUK_START_BOOT 0           /* booted (no snapshot start, or not yet RUNNING) */
#define OAKUK_START_BOOT_SAVED 1     /* booted, and saved the snapshot at its first readiness */
#define OAKUK_START_RESTORED 2       /* restored from a snapshot */
#define OAKUK_START_RESTORE_FAILED 3 /* the restore failed: booted cold instead */
#define OAKUK_START_POOLED 4         /* restored by a QEMU of the pool (oakuk_runtime_pool_set) */
OAKUK_API int32_t oakuk_runtime_instance_start(const oakuk_runtime *rt, const char *name);

/* Snapshot start's pool (unikernels; docs/unikernels.md "Pool"): keeps n QEMUs started for
 * instances like spec (same snapshot: spec's snapshot must exist, saved by an instance before), each
 * paused before loading it (-incoming defer), its NIC on a tap of its own in the runtime's network
 * namespace. A deploy with the same snapshot then takes one instead of starting QEMU: its tap
 * replaces the instance's tap on the instance's bridge (the NAT layout's virbr0; an instance whose
 * tap is on no bridge gets a QEMU of its own), and the pool starts another. n 0 stops and removes
 * the pool's QEMUs; they also end with the runtime (they are not instances: not listed, never
 * adopted). n is 0..64. OAKUK_EINVAL for a spec without snapshot start, OAKUK_ENOTFOUND when its
 * snapshot does not exist yet. */
OAKUK_API int oakuk_runtime_pool_set(oakuk_runtime *rt, const oakuk_instance_spec *spec, int32_t n,
                                     oakuk_error **error);
/* The pooled QEMUs now, and the guest memory they hold ready (MB, summed); 0 for a container runtime. */
OAKUK_API int32_t oakuk_runtime_pool_count(const oakuk_runtime *rt, int64_t *memory_mb);
/* How the instance's process ended: OAKUK_EXIT_*; OAKUK_EXIT_NONE for unknown names. */
OAKUK_API int32_t oakuk_runtime_instance_exit(const oakuk_runtime *rt, const char *name);
/* Path of the instance's console (a unikernel's serial log, a container's output), which the
 * functions of <oakuk/console.h> read; NULL for unknown names. Free with oakuk_free. */
OAKUK_API char *oakuk_runtime_instance_console_path(const oakuk_runtime *rt, const char *name);

OAKUK_END_DECLS

#endif

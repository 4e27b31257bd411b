#ifndef OAKUK_DESCRIPTOR_H
#define OAKUK_DESCRIPTOR_H

#include <oakuk/error.h>

OAKUK_BEGIN_DECLS

/* Deployment descriptors (SLA), Oakestra v2.0 compatible plus extensions (docs/architecture.md §4).
 *
 * A parsed document is an oakuk_descriptor holding applications, each holding microservices.
 * Objects are reference counted; getters return borrowed pointers valid while the owning
 * descriptor lives (applications and microservices keep their descriptor alive while referenced).
 * Unknown keys are kept, round-tripped by *_to_json, and reported as warnings. */
typedef struct oakuk_descriptor oakuk_descriptor;
typedef struct oakuk_application oakuk_application;
typedef struct oakuk_microservice oakuk_microservice;

/* Limits enforced on every input document. */
#define OAKUK_DESCRIPTOR_MAX_BYTES (1024 * 1024)
#define OAKUK_DESCRIPTOR_MAX_DEPTH 64

/* Emulation policy (extension "emulation"). */
#define OAKUK_EMULATION_FORBID 0
#define OAKUK_EMULATION_ALLOW 1

/* Restart policy (extension "restart"). */
#define OAKUK_RESTART_NEVER 0
#define OAKUK_RESTART_ON_FAILURE 1
#define OAKUK_RESTART_ALWAYS 2

/* Unikernel networking (extension "unikernel.net"). */
#define OAKUK_UKNET_DIRECT 0
#define OAKUK_UKNET_NAT 1

/* How a unikernel's instances start (extension "unikernel.start"): booted, or restored from a
 * snapshot of the service's first instance (docs/unikernels.md "Snapshot start"). */
#define OAKUK_UKSTART_BOOT 0
#define OAKUK_UKSTART_SNAPSHOT 1
/* The largest unikernel.warm_pool: QEMUs a node keeps started per snapshot service. */
#define OAKUK_UK_WARM_POOL_MAX 16

/* Instance networking (extension "network"): the overlay (an instance IP, service IPs, port
 * mappings), or none: the instance has no network interface at all (loopback only for a container). */
#define OAKUK_NETWORK_OVERLAY 0
#define OAKUK_NETWORK_NONE 1

/* Port protocols. */
#define OAKUK_PROTO_TCP 0
#define OAKUK_PROTO_UDP 1

/* Constraint types. */
#define OAKUK_CONSTRAINT_DIRECT 0
#define OAKUK_CONSTRAINT_CLUSTERS 1
#define OAKUK_CONSTRAINT_ARCH 2
#define OAKUK_CONSTRAINT_LATENCY 3
#define OAKUK_CONSTRAINT_GEO 4

/* Parses and validates a whole SLA document. len may be (size_t)-1 for a NUL-terminated string.
 * On failure returns NULL and an OAKUK_EINVAL error listing every problem with its JSON path. */
OAKUK_API oakuk_descriptor *oakuk_descriptor_parse(const char *json, size_t len, oakuk_error **error);
/* Same, reading a file; I/O failures are OAKUK_EIO naming the file. */
OAKUK_API oakuk_descriptor *oakuk_descriptor_parse_file(const char *path, oakuk_error **error);
OAKUK_API oakuk_descriptor *oakuk_descriptor_ref(oakuk_descriptor *descriptor);
OAKUK_API void oakuk_descriptor_unref(oakuk_descriptor *descriptor);

OAKUK_API const char *oakuk_descriptor_sla_version(const oakuk_descriptor *descriptor);
OAKUK_API const char *oakuk_descriptor_customer_id(const oakuk_descriptor *descriptor);
OAKUK_API size_t oakuk_descriptor_application_count(const oakuk_descriptor *descriptor);
OAKUK_API oakuk_application *oakuk_descriptor_application(const oakuk_descriptor *descriptor, size_t i);
/* Warnings found while parsing, as "path: message"
 * ("applications[0].microservices[0].images: unknown key kept"): unknown keys, and keys accepted
 * but not acted on when they hold a non-default value ("...vgpus: accepted but not acted on: ...";
 * vgpus, vtpus, bandwidth_in, bandwidth_out, storage, privileged, addresses.closest_ip,
 * addresses.rr_ip_v6, addresses.closest_ip_v6, latency and geo constraints, port entries a service
 * IP does not answer on, added_files, connectivity). */
OAKUK_API size_t oakuk_descriptor_warning_count(const oakuk_descriptor *descriptor);
OAKUK_API const char *oakuk_descriptor_warning(const oakuk_descriptor *descriptor, size_t i);
/* The same warning in two parts: its JSON path ("applications[0].microservices[1].vgpus", "" for
 * the document itself) and its message ("accepted but not acted on: ..."). NULL when i is out of
 * range. Since ABI 0.4. */
OAKUK_API const char *oakuk_descriptor_warning_path(const oakuk_descriptor *descriptor, size_t i);
OAKUK_API const char *oakuk_descriptor_warning_message(const oakuk_descriptor *descriptor, size_t i);
/* Serializes the document back to JSON (pretty when pretty is true); free with oakuk_free. */
OAKUK_API char *oakuk_descriptor_to_json(const oakuk_descriptor *descriptor, bool pretty,
                                         oakuk_error **error);

/* Applications. */
OAKUK_API oakuk_application *oakuk_application_ref(oakuk_application *app);
OAKUK_API void oakuk_application_unref(oakuk_application *app);
OAKUK_API const char *oakuk_application_id(const oakuk_application *app);
OAKUK_API int oakuk_application_set_id(oakuk_application *app, const char *id, oakuk_error **error);
OAKUK_API const char *oakuk_application_name(const oakuk_application *app);
OAKUK_API const char *oakuk_application_namespace(const oakuk_application *app);
OAKUK_API const char *oakuk_application_desc(const oakuk_application *app);
OAKUK_API size_t oakuk_application_microservice_count(const oakuk_application *app);
OAKUK_API oakuk_microservice *oakuk_application_microservice(const oakuk_application *app, size_t i);
OAKUK_API char *oakuk_application_to_json(const oakuk_application *app, bool pretty, oakuk_error **error);

/* Parses and validates one microservice object on its own (a job as the cluster and node receive
 * it). Paths in errors are relative to the object ("arch", "code"). Keys "app_name", "app_ns" and
 * "job_name" (Oakestra job documents) give the service its application identity. */
OAKUK_API oakuk_microservice *oakuk_microservice_parse(const char *json, size_t len, oakuk_error **error);
OAKUK_API oakuk_microservice *oakuk_microservice_ref(oakuk_microservice *ms);
OAKUK_API void oakuk_microservice_unref(oakuk_microservice *ms);
OAKUK_API char *oakuk_microservice_to_json(const oakuk_microservice *ms, bool pretty, oakuk_error **error);

OAKUK_API const char *oakuk_microservice_id(const oakuk_microservice *ms);
OAKUK_API int oakuk_microservice_set_id(oakuk_microservice *ms, const char *id, oakuk_error **error);
OAKUK_API const char *oakuk_microservice_name(const oakuk_microservice *ms);
OAKUK_API const char *oakuk_microservice_namespace(const oakuk_microservice *ms);
/* Application name/namespace this service belongs to (NULL when unknown). */
OAKUK_API const char *oakuk_microservice_app_name(const oakuk_microservice *ms);
OAKUK_API const char *oakuk_microservice_app_namespace(const oakuk_microservice *ms);
/* "<app>.<appns>.<svc>.<svcns>" (Oakestra job_name); NULL when the application is unknown. */
OAKUK_API const char *oakuk_microservice_service_name(const oakuk_microservice *ms);

/* Virtualization variants in order of preference (1 for a plain string, more for an array). */
OAKUK_API size_t oakuk_microservice_virt_count(const oakuk_microservice *ms);
OAKUK_API int32_t oakuk_microservice_virt(const oakuk_microservice *ms, size_t i);
OAKUK_API bool oakuk_microservice_has_virt(const oakuk_microservice *ms, int32_t virt);

/* Architectures (GOARCH names) in descriptor order; 0 when arch[] is absent or empty. */
OAKUK_API size_t oakuk_microservice_arch_count(const oakuk_microservice *ms);
OAKUK_API const char *oakuk_microservice_arch(const oakuk_microservice *ms, size_t i);

/* Code for a variant. For unikernels: the URL matched by position with arch i, or the one OCI
 * reference that serves every architecture (arch_index is then ignored). For containers: the OCI
 * reference (arch_index is ignored). NULL when the service has no such variant.
 *
 * A unikernel's code is an OCI reference when it is "oci-archive:<url>" or one string without a
 * comma or "://" ("registry/name:tag", "name@sha256:<hex>"): arch may then be omitted (the
 * reference's platforms decide; see oakuk_oci_resolve), and restricts the architectures when given;
 * code_sha256 does not apply (pin with @sha256:). Comma-separated http(s)/file URLs, one per
 * architecture, are tarballs or bare kernels as before. */
OAKUK_API const char *oakuk_microservice_code(const oakuk_microservice *ms, int32_t virt, size_t arch_index);
/* Whether the variant's code is an OCI reference (always, for a container variant). */
OAKUK_API bool oakuk_microservice_code_is_oci(const oakuk_microservice *ms, int32_t virt);
/* Expected sha256 (64 lowercase hex digits) for the same variant/arch, or NULL. */
OAKUK_API const char *oakuk_microservice_code_sha256(const oakuk_microservice *ms, int32_t virt,
                                                     size_t arch_index);

OAKUK_API int64_t oakuk_microservice_memory_mb(const oakuk_microservice *ms);
OAKUK_API int64_t oakuk_microservice_vcpus(const oakuk_microservice *ms);
OAKUK_API int64_t oakuk_microservice_vgpus(const oakuk_microservice *ms);
OAKUK_API int64_t oakuk_microservice_vtpus(const oakuk_microservice *ms);
OAKUK_API int64_t oakuk_microservice_bandwidth_in(const oakuk_microservice *ms);
OAKUK_API int64_t oakuk_microservice_bandwidth_out(const oakuk_microservice *ms);
OAKUK_API int64_t oakuk_microservice_storage(const oakuk_microservice *ms);

OAKUK_API size_t oakuk_microservice_cmd_count(const oakuk_microservice *ms);
OAKUK_API const char *oakuk_microservice_cmd(const oakuk_microservice *ms, size_t i);
/* environment[] entries as given ("KEY=value"). */
OAKUK_API size_t oakuk_microservice_env_count(const oakuk_microservice *ms);
OAKUK_API const char *oakuk_microservice_env(const oakuk_microservice *ms, size_t i);

/* Port mappings parsed from "port" ("host:guest[/proto];..."). */
OAKUK_API size_t oakuk_microservice_port_count(const oakuk_microservice *ms);
OAKUK_API int32_t oakuk_microservice_port_host(const oakuk_microservice *ms, size_t i);
OAKUK_API int32_t oakuk_microservice_port_guest(const oakuk_microservice *ms, size_t i);
OAKUK_API int32_t oakuk_microservice_port_proto(const oakuk_microservice *ms, size_t i);

/* addresses{} — each NULL when absent. */
OAKUK_API const char *oakuk_microservice_rr_ip(const oakuk_microservice *ms);
OAKUK_API const char *oakuk_microservice_rr_ip_v6(const oakuk_microservice *ms);
OAKUK_API const char *oakuk_microservice_closest_ip(const oakuk_microservice *ms);
OAKUK_API const char *oakuk_microservice_closest_ip_v6(const oakuk_microservice *ms);

OAKUK_API bool oakuk_microservice_one_shot(const oakuk_microservice *ms);
OAKUK_API bool oakuk_microservice_privileged(const oakuk_microservice *ms);
OAKUK_API const char *oakuk_microservice_target_node(const oakuk_microservice *ms);

/* Constraints. For DIRECT: cluster (or NULL) and node names (split from "n1;n2").
 * For CLUSTERS and ARCH: the allowed list. LATENCY/GEO are kept but carry no typed fields and are
 * not scheduled on (a warning at parse time). */
OAKUK_API size_t oakuk_microservice_constraint_count(const oakuk_microservice *ms);
OAKUK_API int32_t oakuk_microservice_constraint_type(const oakuk_microservice *ms, size_t i);
OAKUK_API const char *oakuk_microservice_constraint_cluster(const oakuk_microservice *ms, size_t i);
OAKUK_API size_t oakuk_microservice_constraint_value_count(const oakuk_microservice *ms, size_t i);
OAKUK_API const char *oakuk_microservice_constraint_value(const oakuk_microservice *ms, size_t i, size_t j);

/* Extensions. */
OAKUK_API int32_t oakuk_microservice_emulation(const oakuk_microservice *ms);
OAKUK_API int32_t oakuk_microservice_restart(const oakuk_microservice *ms);
/* unikernel{}: flavor "unikraft"|"linux" or NULL (detect), version "0.16.3" or NULL,
 * net OAKUK_UKNET_*, graceful_stop_s (0 = no powerdown). */
OAKUK_API const char *oakuk_microservice_uk_flavor(const oakuk_microservice *ms);
OAKUK_API const char *oakuk_microservice_uk_version(const oakuk_microservice *ms);
OAKUK_API int32_t oakuk_microservice_uk_net(const oakuk_microservice *ms);
/* unikernel.start: OAKUK_UKSTART_*. */
OAKUK_API int32_t oakuk_microservice_uk_start(const oakuk_microservice *ms);
/* unikernel.warm_pool: 0..OAKUK_UK_WARM_POOL_MAX QEMUs each node running the service keeps started
 * for its next instances (needs start "snapshot"); 0 by default. */
OAKUK_API int32_t oakuk_microservice_uk_warm_pool(const oakuk_microservice *ms);
/* OAKUK_NETWORK_OVERLAY (the default) or OAKUK_NETWORK_NONE. */
OAKUK_API int32_t oakuk_microservice_network(const oakuk_microservice *ms);
OAKUK_API int64_t oakuk_microservice_uk_graceful_stop_s(const oakuk_microservice *ms);

/* Readiness (extension "readiness": {"tcp": <guest port>, "serial": "<text>"}): the guest port a
 * node probes over TCP to call the instance ready, by default the guest side of the first TCP
 * entry of "port" (0: no TCP probe, also when "tcp": 0); and the text its console shows when it is
 * ready, or NULL. */
OAKUK_API int32_t oakuk_microservice_readiness_tcp(const oakuk_microservice *ms);
OAKUK_API const char *oakuk_microservice_readiness_serial(const oakuk_microservice *ms);

/* Extension "reschedule_after_s" (0..86400): how long a silent node or cluster keeps the service's
 * instances before a copy is started elsewhere (docs/reconcile.md). */
#define OAKUK_RESCHEDULE_AFTER_S_DEFAULT 60
OAKUK_API int64_t oakuk_microservice_reschedule_after_s(const oakuk_microservice *ms);

OAKUK_END_DECLS

#endif

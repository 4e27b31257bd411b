#ifndef OAKUK_MODEL_H
#define OAKUK_MODEL_H

#include <oakuk/error.h>

OAKUK_BEGIN_DECLS

/* Instance status (docs/architecture.md §5.2). oakuk_instance_status_name gives the exact wire strings. */
#define OAKUK_STATUS_REQUESTED 0
#define OAKUK_STATUS_CLUSTER_SCHEDULED 1
#define OAKUK_STATUS_NODE_SCHEDULED 2
#define OAKUK_STATUS_CREATING 3
#define OAKUK_STATUS_RUNNING 4
#define OAKUK_STATUS_FAILED 5
#define OAKUK_STATUS_DEAD 6
#define OAKUK_STATUS_COMPLETED 7
#define OAKUK_STATUS_UNDEPLOYED 8
#define OAKUK_STATUS_NO_ACTIVE_CLUSTER 9    /* "NoActiveClusterWithCapacity" (root) */
#define OAKUK_STATUS_NO_QUALIFIED_WORKER 10 /* "NO_QUALIFIED_WORKER_FOUND" (cluster) */
#define OAKUK_STATUS_NO_WORKER_CAPACITY 11  /* "NO_WORKER_CAPACITY" (cluster) */

/* "REQUESTED", ..., "NoActiveClusterWithCapacity"; NULL for unknown values. */
OAKUK_API const char *oakuk_instance_status_name(int32_t status);
/* Inverse of the above; -1 for an unknown name. */
OAKUK_API int32_t oakuk_instance_status_from_name(const char *name);
/* "<service_name>.instance.<n>"; free with oakuk_free. NULL if service_name is NULL or n < 0. */
OAKUK_API char *oakuk_instance_name(const char *service_name, int64_t n);

/* A node report (docs/architecture.md §7.1 keys): what a node publishes every report_interval.
 * "vcpus" is the number of cores the node still has free for placement and "memory" the MB it
 * still has available (not its totals: those are "memory_total" and the host's core count). */
typedef struct oakuk_node_report oakuk_node_report;

/* Parses and validates a report; unknown keys are ignored, missing required keys (id,
 * architecture, vcpus, memory) or wrong types are OAKUK_EINVAL errors naming the key.
 * len may be (size_t)-1 for a NUL-terminated string. Documents over 1 MiB or nested deeper than
 * 64 levels are rejected. id must be a non-empty string, architecture a known GOARCH name,
 * vcpus/memory/memory_total/instances[].memory_mb non-negative integers (12.0 is accepted),
 * percentages finite and >= 0 (memory_percent at most 100), unikernel.accel "kvm" or "tcg",
 * emulated_archs known names, instances[].status a known status name, gpus/tpus (optional,
 * default 0) non-negative integers. Every problem is listed in the error with its path
 * ("instances[2].status"); JSON null reads as "not given".
 * to_json writes exactly the keys of docs/architecture.md §7.1 plus gpus and tpus ("container"
 * for "docker"; "unikernel" only when the input had it). */
OAKUK_API oakuk_node_report *oakuk_node_report_from_json(const char *json, size_t len, oakuk_error **error);
OAKUK_API char *oakuk_node_report_to_json(const oakuk_node_report *report, bool pretty, oakuk_error **error);
OAKUK_API oakuk_node_report *oakuk_node_report_ref(oakuk_node_report *report);
OAKUK_API void oakuk_node_report_unref(oakuk_node_report *report);

OAKUK_API const char *oakuk_node_report_id(const oakuk_node_report *report);
/* host and ip are "" when the report did not carry them. */
OAKUK_API const char *oakuk_node_report_host(const oakuk_node_report *report);
OAKUK_API const char *oakuk_node_report_ip(const oakuk_node_report *report);
OAKUK_API const char *oakuk_node_report_architecture(const oakuk_node_report *report);
OAKUK_API double oakuk_node_report_cpu_percent(const oakuk_node_report *report);
OAKUK_API int64_t oakuk_node_report_vcpus(const oakuk_node_report *report);
/* Available memory in MB ("memory"), total ("memory_total"), used percent ("memory_percent"). */
OAKUK_API int64_t oakuk_node_report_memory_mb(const oakuk_node_report *report);
OAKUK_API int64_t oakuk_node_report_memory_total_mb(const oakuk_node_report *report);
OAKUK_API double oakuk_node_report_memory_percent(const oakuk_node_report *report);
OAKUK_API bool oakuk_node_report_has_virt(const oakuk_node_report *report, int32_t virt);
/* Accelerators the node offers instances ("gpus", "tpus"; 0 when the report has no such key).
 * The scheduler places a service asking for vgpus/vtpus only where enough are reported.
 * Since ABI 0.4. */
OAKUK_API int64_t oakuk_node_report_gpus(const oakuk_node_report *report);
OAKUK_API int64_t oakuk_node_report_tpus(const oakuk_node_report *report);
/* unikernel{}: accel for the node's own architecture (OAKUK_ACCEL_NONE when the node cannot run
 * unikernels), QEMU version, and the other architectures it can emulate under TCG. */
OAKUK_API int32_t oakuk_node_report_unikernel_accel(const oakuk_node_report *report);
OAKUK_API const char *oakuk_node_report_qemu_version(const oakuk_node_report *report);
OAKUK_API size_t oakuk_node_report_emulated_arch_count(const oakuk_node_report *report);
OAKUK_API const char *oakuk_node_report_emulated_arch(const oakuk_node_report *report, size_t i);
/* Accel the node offers for unikernels of arch: KVM/TCG for its own arch per unikernel.accel,
 * TCG for an emulated arch, NONE otherwise (also when "unikernel" is not in virtualization[]). */
OAKUK_API int32_t oakuk_node_report_accel_for_arch(const oakuk_node_report *report, const char *arch);
OAKUK_API size_t oakuk_node_report_instance_count(const oakuk_node_report *report);
OAKUK_API const char *oakuk_node_report_instance_name(const oakuk_node_report *report, size_t i);
OAKUK_API int32_t oakuk_node_report_instance_status(const oakuk_node_report *report, size_t i);
OAKUK_API double oakuk_node_report_instance_cpu_percent(const oakuk_node_report *report, size_t i);
OAKUK_API int64_t oakuk_node_report_instance_memory_mb(const oakuk_node_report *report, size_t i);
/* The placement generation the node holds for the instance (docs/reconcile.md); 0 when the node
 * sent none. */
OAKUK_API int64_t oakuk_node_report_instance_generation(const oakuk_node_report *report, size_t i);
/* When the report was received, in milliseconds on the caller's clock (not part of the JSON);
 * 0 means "unknown" and such a report is always considered active. */
OAKUK_API int64_t oakuk_node_report_received_at_ms(const oakuk_node_report *report);
OAKUK_API void oakuk_node_report_set_received_at_ms(oakuk_node_report *report, int64_t ms);

/* A cluster aggregate (docs/architecture.md §7.2 keys, Oakestra-compatible), as the root receives it. */
typedef struct oakuk_cluster_aggregate oakuk_cluster_aggregate;

/* Parses an aggregate; extra keys (Oakestra's gpu_cores, more, ...) are kept for to_json
 * (also inside aggregation_per_architecture entries). "docker" in virtualization[] is read as
 * "container" and written back as "container". Required: cpu_cores, cumulative_memory_in_mb,
 * number_of_nodes (and cpu_cores, memory_in_mb in each per-arch entry, whose keys must be known
 * GOARCH names). A missing active_nodes equals number_of_nodes. Same input limits and len
 * convention as oakuk_node_report_from_json. "memory" in a per-arch entry is the used-memory
 * percent, "memory_in_mb" the available MB. */
OAKUK_API oakuk_cluster_aggregate *oakuk_cluster_aggregate_from_json(const char *json, size_t len,
                                                                     oakuk_error **error);
OAKUK_API char *oakuk_cluster_aggregate_to_json(const oakuk_cluster_aggregate *agg, bool pretty,
                                                oakuk_error **error);
OAKUK_API oakuk_cluster_aggregate *oakuk_cluster_aggregate_ref(oakuk_cluster_aggregate *agg);
OAKUK_API void oakuk_cluster_aggregate_unref(oakuk_cluster_aggregate *agg);

/* Identity is known to the receiver, not carried in the JSON. Used by constraints and results. */
OAKUK_API void oakuk_cluster_aggregate_set_identity(oakuk_cluster_aggregate *agg, const char *id,
                                                    const char *name);
OAKUK_API const char *oakuk_cluster_aggregate_id(const oakuk_cluster_aggregate *agg);
OAKUK_API const char *oakuk_cluster_aggregate_name(const oakuk_cluster_aggregate *agg);
OAKUK_API int64_t oakuk_cluster_aggregate_received_at_ms(const oakuk_cluster_aggregate *agg);
OAKUK_API void oakuk_cluster_aggregate_set_received_at_ms(oakuk_cluster_aggregate *agg, int64_t ms);

OAKUK_API double oakuk_cluster_aggregate_cpu_percent(const oakuk_cluster_aggregate *agg);
OAKUK_API double oakuk_cluster_aggregate_memory_percent(const oakuk_cluster_aggregate *agg);
OAKUK_API int64_t oakuk_cluster_aggregate_cpu_cores(const oakuk_cluster_aggregate *agg);
OAKUK_API int64_t
oakuk_cluster_aggregate_memory_mb(const oakuk_cluster_aggregate *agg); /* cumulative_memory_in_mb */
OAKUK_API int64_t oakuk_cluster_aggregate_number_of_nodes(const oakuk_cluster_aggregate *agg);
OAKUK_API int64_t oakuk_cluster_aggregate_active_nodes(const oakuk_cluster_aggregate *agg);
OAKUK_API bool oakuk_cluster_aggregate_has_virt(const oakuk_cluster_aggregate *agg, int32_t virt);
/* "gpus", "tpus": the sums over the cluster's active nodes (0 when absent: older clusters and
 * Oakestra's aggregates, whose gpu_cores is kept as an extra key). Since ABI 0.4. */
OAKUK_API int64_t oakuk_cluster_aggregate_gpus(const oakuk_cluster_aggregate *agg);
OAKUK_API int64_t oakuk_cluster_aggregate_tpus(const oakuk_cluster_aggregate *agg);
OAKUK_API size_t oakuk_cluster_aggregate_arch_count(const oakuk_cluster_aggregate *agg);
OAKUK_API const char *oakuk_cluster_aggregate_arch(const oakuk_cluster_aggregate *agg, size_t i);
/* aggregation_per_architecture: entries sorted by arch name. */
OAKUK_API size_t oakuk_cluster_aggregate_per_arch_count(const oakuk_cluster_aggregate *agg);
OAKUK_API const char *oakuk_cluster_aggregate_per_arch_name(const oakuk_cluster_aggregate *agg, size_t i);
/* Lookup by arch name; return false (and leave outputs alone) when the arch has no entry.
 * Any output pointer may be NULL. accel is OAKUK_ACCEL_NONE when the entry carried no "accel"
 * (aggregates from Oakestra's unikernel extension, e.g. the thesis's Listing 4.8): those clusters
 * only listed unikernel nodes with KVM, so the scheduler treats such an entry as "kvm". */
OAKUK_API bool oakuk_cluster_aggregate_per_arch(const oakuk_cluster_aggregate *agg, const char *arch,
                                                double *cpu_percent, int64_t *cpu_cores,
                                                double *memory_percent, int64_t *memory_mb, int32_t *accel);

OAKUK_END_DECLS

#endif

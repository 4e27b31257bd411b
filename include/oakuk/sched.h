#ifndef OAKUK_SCHED_H
#define OAKUK_SCHED_H

#include <oakuk/aggregate.h>
#include <oakuk/descriptor.h>
#include <oakuk/model.h>

OAKUK_BEGIN_DECLS

/* Scheduling (docs/architecture.md §6): pure functions over reports/aggregates, no I/O. */

#define OAKUK_SCHED_MOST_FREE 0 /* largest free memory, then free cores, then lowest cpu% */
#define OAKUK_SCHED_BEST_FIT 1  /* smallest sufficient free memory, then fewest free cores */

typedef struct oakuk_sched_options {
  unsigned int version; /* OAKUK_SCHED_OPTIONS_VERSION */
  int32_t policy;       /* OAKUK_SCHED_MOST_FREE (default) or OAKUK_SCHED_BEST_FIT */
  int64_t now_ms;       /* caller's clock, same as received_at_ms; 0 disables timeouts */
  int64_t timeout_ms;   /* a candidate older than this is inactive (default 10000) */
} oakuk_sched_options;

#define OAKUK_SCHED_OPTIONS_VERSION 1
#define OAKUK_SCHED_OPTIONS_INIT                                                                             \
  { OAKUK_SCHED_OPTIONS_VERSION, OAKUK_SCHED_MOST_FREE, 0, 10000 }
/* Fills opts with defaults; returns OAKUK_EINVAL for an unknown version. */
OAKUK_API int oakuk_sched_options_init(oakuk_sched_options *opts, unsigned int version);

/* Resources placed on targets but not yet reflected in their reports. The scheduler subtracts
 * them (no overcommit) and records each successful placement under the caller's key. */
typedef struct oakuk_reservations oakuk_reservations;
OAKUK_API oakuk_reservations *oakuk_reservations_new(void);
OAKUK_API oakuk_reservations *oakuk_reservations_ref(oakuk_reservations *res);
OAKUK_API void oakuk_reservations_unref(oakuk_reservations *res);
/* Adds (or replaces) the reservation called key (usually the instance name) on target. */
OAKUK_API void oakuk_reservations_add(oakuk_reservations *res, const char *key, const char *target_id,
                                      int64_t vcpus, int64_t memory_mb);
/* Drops a reservation (the report now reflects it, or the instance went away); false if unknown. */
OAKUK_API bool oakuk_reservations_remove(oakuk_reservations *res, const char *key);
/* Sum reserved on target. Either output may be NULL. */
OAKUK_API void oakuk_reservations_total(const oakuk_reservations *res, const char *target_id, int64_t *vcpus,
                                        int64_t *memory_mb);

/* The result of a selection: the chosen target and variant, and an explanation of every candidate.
 * Present both when a target was chosen and when none was. */
typedef struct oakuk_placement oakuk_placement;
OAKUK_API oakuk_placement *oakuk_placement_ref(oakuk_placement *p);
OAKUK_API void oakuk_placement_unref(oakuk_placement *p);
/* True when a target was chosen. */
OAKUK_API bool oakuk_placement_ok(const oakuk_placement *p);
/* Chosen node/cluster id and its index in the input array (-1 when none). */
OAKUK_API const char *oakuk_placement_target(const oakuk_placement *p);
OAKUK_API int64_t oakuk_placement_index(const oakuk_placement *p);
/* Chosen variant: virtualization, architecture, code (URL or OCI reference), sha256 or NULL,
 * and accel (KVM/TCG for unikernels, NONE for containers). */
OAKUK_API int32_t oakuk_placement_virt(const oakuk_placement *p);
OAKUK_API const char *oakuk_placement_arch(const oakuk_placement *p);
OAKUK_API const char *oakuk_placement_code(const oakuk_placement *p);
OAKUK_API const char *oakuk_placement_code_sha256(const oakuk_placement *p);
OAKUK_API int32_t oakuk_placement_accel(const oakuk_placement *p);
/* When not ok: OAKUK_STATUS_NO_QUALIFIED_WORKER (no candidate qualifies), _NO_WORKER_CAPACITY
 * (some qualify but lack free resources) or _NO_ACTIVE_CLUSTER (cluster selection).
 * When ok: OAKUK_STATUS_NODE_SCHEDULED or OAKUK_STATUS_CLUSTER_SCHEDULED. */
OAKUK_API int32_t oakuk_placement_status(const oakuk_placement *p);
/* One line per candidate, in input order: "node n3: arch arm64 has no kernel (service has amd64)",
 * "node n2: chosen (unikernel amd64 via kvm; most-free: 2048 MB, 4 vcpus free, cpu 3.0%)".
 * Lines are formatted on first use (the decision itself does not pay for them). */
OAKUK_API size_t oakuk_placement_explanation_count(const oakuk_placement *p);
OAKUK_API const char *oakuk_placement_explanation(const oakuk_placement *p, size_t i);
/* All lines joined by "\n"; free with oakuk_free. */
OAKUK_API char *oakuk_placement_explain(const oakuk_placement *p);

/* Selects a node for ms among nodes[0..n). reservations may be NULL; when it and reserve_key are
 * non-NULL, a successful placement is recorded under reserve_key. opts may be NULL (defaults).
 * Returns 0 when placed, OAKUK_ENOCAPACITY when not (error says why), OAKUK_EINVAL for bad
 * options. *out is set for 0 and OAKUK_ENOCAPACITY. */
OAKUK_API int oakuk_sched_select_node(oakuk_placement **out, const oakuk_microservice *ms,
                                      oakuk_node_report *const *nodes, size_t n,
                                      oakuk_reservations *reservations, const char *reserve_key,
                                      const oakuk_sched_options *opts, oakuk_error **error);

/* Same over cluster aggregates (root level). Unikernel variants use aggregation_per_architecture
 * for every arch the service has a kernel for; candidates are named "cluster <name>", and the
 * target (and reservation target) is the aggregate's id, or its name when it has no id. */
OAKUK_API int oakuk_sched_select_cluster(oakuk_placement **out, const oakuk_microservice *ms,
                                         oakuk_cluster_aggregate *const *clusters, size_t n,
                                         oakuk_reservations *reservations, const char *reserve_key,
                                         const oakuk_sched_options *opts, oakuk_error **error);

OAKUK_END_DECLS

#endif

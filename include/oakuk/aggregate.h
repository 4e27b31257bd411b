#ifndef OAKUK_AGGREGATE_H
#define OAKUK_AGGREGATE_H

#include <oakuk/model.h>

OAKUK_BEGIN_DECLS

/* Folds node reports into a cluster aggregate (docs/architecture.md §7.2).
 *
 * A report counts as active when node_timeout_ms <= 0, its received_at is 0, or
 * now_ms - received_at_ms <= node_timeout_ms; inactive reports count nowhere except
 * number_of_nodes. cpu_percent/memory_percent are averages over active nodes, cpu_cores and
 * cumulative_memory_in_mb are sums of available resources, gpus and tpus sums of the
 * accelerators the active nodes report. aggregation_per_architecture counts
 * only unikernel-capable active nodes: each under its own arch (accel as reported) and under every
 * arch it emulates (accel "tcg"); an entry's accel is "kvm" if any of its nodes offers KVM.
 * jobs[] lists the instance names the active nodes report. Reports with duplicate ids: the one
 * received last wins (the larger received_at_ms; on a tie the later one in reports[]).
 * arch[] and jobs[] keep the order of first appearance; per-arch cpu_percent and "memory"
 * (percent) are averages over the nodes counted in that entry, cpu_cores and memory_in_mb sums.
 * The result has no identity and received_at 0. Never fails for valid report objects (n may be 0;
 * reports may then be NULL). */
OAKUK_API oakuk_cluster_aggregate *oakuk_aggregate_fold(oakuk_node_report *const *reports, size_t n,
                                                        int64_t now_ms, int64_t node_timeout_ms,
                                                        oakuk_error **error);

OAKUK_END_DECLS

#endif

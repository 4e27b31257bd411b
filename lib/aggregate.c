#include "model-private.h"

#include <string.h>

static bool report_is_active(const oakuk_node_report *r, int64_t now_ms, int64_t node_timeout_ms) {
  int64_t at = oakuk_node_report_received_at_ms(r);
  return node_timeout_ms <= 0 || at == 0 || now_ms - at <= node_timeout_ms;
}

/* For each node id, the report received last (ties: the later one in the input). The result
 * keeps the position of each id's first appearance so the fold is deterministic. */
static GPtrArray *latest_per_id(oakuk_node_report *const *reports, size_t n) {
  GPtrArray *out = g_ptr_array_new();
  g_autoptr(GHashTable) index = g_hash_table_new(g_str_hash, g_str_equal); /* id -> position + 1 */
  for (size_t i = 0; i < n; i++) {
    oakuk_node_report *r = reports[i];
    gpointer pos = g_hash_table_lookup(index, oakuk_node_report_id(r));
    if (pos == NULL) {
      g_ptr_array_add(out, r);
      g_hash_table_insert(index, (gpointer)oakuk_node_report_id(r), GUINT_TO_POINTER(out->len));
      continue;
    }
    oakuk_node_report **slot = (oakuk_node_report **)&g_ptr_array_index(out, GPOINTER_TO_UINT(pos) - 1);
    if (oakuk_node_report_received_at_ms(r) >= oakuk_node_report_received_at_ms(*slot))
      *slot = r;
  }
  return out;
}

/* Running sums of one aggregation_per_architecture entry. */
typedef struct {
  OakukPerArch *entry;
  double cpu_sum;
  double mem_sum;
  guint nodes;
} PerArchSum;

static void add_to_arch(GHashTable *sums, oakuk_cluster_aggregate *agg, const char *arch, int32_t accel,
                        const oakuk_node_report *r) {
  PerArchSum *s = g_hash_table_lookup(sums, arch);
  if (s == NULL) {
    s = g_new0(PerArchSum, 1);
    s->entry = oakuk_cluster_aggregate_add_per_arch(agg, arch);
    s->entry->accel = OAKUK_ACCEL_TCG;
    g_hash_table_insert(sums, s->entry->arch, s);
  }
  s->cpu_sum += oakuk_node_report_cpu_percent(r);
  s->mem_sum += oakuk_node_report_memory_percent(r);
  s->nodes++;
  s->entry->cpu_cores += oakuk_node_report_vcpus(r);
  s->entry->memory_mb += oakuk_node_report_memory_mb(r);
  if (accel == OAKUK_ACCEL_KVM)
    s->entry->accel = OAKUK_ACCEL_KVM;
}

/* Counts r under its own arch and every arch it emulates, wherever it offers an accel. */
static void fold_unikernel(GHashTable *sums, oakuk_cluster_aggregate *agg, const oakuk_node_report *r) {
  if (!oakuk_node_report_has_virt(r, OAKUK_VIRT_UNIKERNEL))
    return;
  const char *own = oakuk_node_report_architecture(r);
  int32_t accel = oakuk_node_report_accel_for_arch(r, own);
  if (accel != OAKUK_ACCEL_NONE)
    add_to_arch(sums, agg, own, accel, r);
  for (size_t i = 0; i < oakuk_node_report_emulated_arch_count(r); i++) {
    const char *arch = oakuk_node_report_emulated_arch(r, i);
    if (strcmp(arch, own) != 0)
      add_to_arch(sums, agg, arch, OAKUK_ACCEL_TCG, r);
  }
}

static void fold_active(oakuk_cluster_aggregate *agg, GHashTable *sums, GHashTable *jobs_seen,
                        const oakuk_node_report *r) {
  agg->cpu_percent += oakuk_node_report_cpu_percent(r);
  agg->memory_percent += oakuk_node_report_memory_percent(r);
  agg->cpu_cores += oakuk_node_report_vcpus(r);
  agg->memory_mb += oakuk_node_report_memory_mb(r);
  agg->gpus += oakuk_node_report_gpus(r);
  agg->tpus += oakuk_node_report_tpus(r);
  agg->virt_container |= oakuk_node_report_has_virt(r, OAKUK_VIRT_CONTAINER);
  agg->virt_unikernel |= oakuk_node_report_has_virt(r, OAKUK_VIRT_UNIKERNEL);
  const char *arch = oakuk_node_report_architecture(r);
  if (!g_ptr_array_find_with_equal_func(agg->archs, arch, g_str_equal, NULL))
    g_ptr_array_add(agg->archs, g_strdup(arch));
  fold_unikernel(sums, agg, r);
  for (size_t i = 0; i < oakuk_node_report_instance_count(r); i++) {
    const char *name = oakuk_node_report_instance_name(r, i);
    if (g_hash_table_add(jobs_seen, (gpointer)name))
      g_ptr_array_add(agg->jobs, g_strdup(name));
  }
}

OAKUK_API oakuk_cluster_aggregate *oakuk_aggregate_fold(oakuk_node_report *const *reports, size_t n,
                                                        int64_t now_ms, int64_t node_timeout_ms,
                                                        oakuk_error **error) {
  g_return_val_if_fail(reports != NULL || n == 0, NULL);
  oakuk_cluster_aggregate *agg = oakuk_cluster_aggregate_new_empty();
  g_autoptr(GPtrArray) nodes = latest_per_id(reports, n);
  g_autoptr(GHashTable) sums = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, g_free);
  g_autoptr(GHashTable) jobs_seen = g_hash_table_new(g_str_hash, g_str_equal);

  agg->number_of_nodes = nodes->len;
  for (guint i = 0; i < nodes->len; i++) {
    const oakuk_node_report *r = g_ptr_array_index(nodes, i);
    if (!report_is_active(r, now_ms, node_timeout_ms))
      continue;
    agg->active_nodes++;
    fold_active(agg, sums, jobs_seen, r);
  }
  if (agg->active_nodes > 0) {
    agg->cpu_percent /= (double)agg->active_nodes;
    agg->memory_percent /= (double)agg->active_nodes;
  }

  GHashTableIter it;
  gpointer value;
  g_hash_table_iter_init(&it, sums);
  while (g_hash_table_iter_next(&it, NULL, &value)) {
    PerArchSum *s = value;
    s->entry->cpu_percent = s->cpu_sum / s->nodes;
    s->entry->memory_percent = s->mem_sum / s->nodes;
  }
  oakuk_cluster_aggregate_sort_per_arch(agg);
  return agg;
}

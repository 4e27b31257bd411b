/* The node report (docs/architecture.md §7.1): host resources minus what our instances hold, capabilities and
 * the instances with their use. */
#include "node.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* CPU busy percent of the whole machine since the previous call (0 on the first). */
static double cpu_percent(Node *n) {
  g_autofree char *text = NULL;
  if (!g_file_get_contents("/proc/stat", &text, NULL, NULL))
    return 0.0;
  guint64 v[8] = {0};
  if (sscanf(text,
             "cpu %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT
             " %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT,
             &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) < 4)
    return 0.0;
  guint64 total = 0;
  for (int k = 0; k < 8; k++)
    total += v[k];
  guint64 idle = v[3] + v[4];
  double pct = 0.0;
  if (n->prev_cpu_total != 0 && total > n->prev_cpu_total) {
    guint64 dt = total - n->prev_cpu_total, di = idle - n->prev_cpu_idle;
    pct = di <= dt ? 100.0 * (double)(dt - di) / (double)dt : 0.0;
  }
  n->prev_cpu_total = total;
  n->prev_cpu_idle = idle;
  return pct;
}

/* MemTotal and MemAvailable in MB. */
static void meminfo(gint64 *total_mb, gint64 *avail_mb) {
  *total_mb = *avail_mb = 0;
  g_autofree char *text = NULL;
  if (!g_file_get_contents("/proc/meminfo", &text, NULL, NULL))
    return;
  g_auto(GStrv) lines = g_strsplit(text, "\n", 0);
  for (char **l = lines; *l; l++) {
    gint64 kb = 0;
    if (sscanf(*l, "MemTotal: %" G_GINT64_FORMAT " kB", &kb) == 1)
      *total_mb = kb / 1024;
    else if (sscanf(*l, "MemAvailable: %" G_GINT64_FORMAT " kB", &kb) == 1)
      *avail_mb = kb / 1024;
  }
}

/* Whether the instance still holds its share of the node (running, or about to run). */
static gboolean holds_resources(const Inst *i) {
  if (i->phase == PHASE_FAILED)
    return FALSE;
  if (i->phase == PHASE_RUNTIME && (i->status == OAKUK_STATUS_DEAD || i->status == OAKUK_STATUS_COMPLETED ||
                                    i->status == OAKUK_STATUS_FAILED))
    return FALSE;
  return !(i->phase == PHASE_CLEANUP && i->then != THEN_RETRY);
}

static int by_name(gconstpointer a, gconstpointer b) {
  return strcmp(((const Inst *)a)->name, ((const Inst *)b)->name);
}

static JsonArray *instances_array(Node *n, gint64 *used_vcpus, gint64 *used_mb) {
  JsonArray *arr = json_array_new();
  g_autoptr(GList) all = g_list_sort(g_hash_table_get_values(n->insts), by_name);
  for (GList *l = all; l != NULL; l = l->next) {
    Inst *i = l->data;
    double cpu = 0.0;
    int64_t rss_kb = 0;
    oakuk_runtime *rt = i->virt == OAKUK_VIRT_CONTAINER ? n->ctr_rt : n->uk_rt;
    if (i->runtime_owned && rt != NULL && oakuk_runtime_stats(rt, i->name, &cpu, &rss_kb, NULL) != 0)
      cpu = 0.0, rss_kb = 0;
    if (holds_resources(i)) {
      *used_vcpus += MAX(oakuk_microservice_vcpus(i->ms), 1);
      *used_mb += MAX(oakuk_microservice_memory_mb(i->ms), 0);
    }
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "name", i->name);
    json_object_set_string_member(o, "status", oakuk_instance_status_name(i->status));
    json_object_set_int_member(o, "generation", i->generation);
    json_object_set_boolean_member(o, "restarting", i->restarting);
    json_object_set_double_member(o, "cpu_percent", cpu);
    json_object_set_int_member(o, "memory_mb", rss_kb / 1024);
    json_array_add_object_element(arr, o);
  }
  return arr;
}

char *node_report_json(Node *n) {
  gint64 total_mb = 0, avail_mb = 0, used_vcpus = 0, used_mb = 0;
  meminfo(&total_mb, &avail_mb);
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "id", n->id ? n->id : n->name);
  json_object_set_string_member(o, "host", g_get_host_name());
  json_object_set_string_member(o, "ip", n->underlay_ip ? n->underlay_ip : "");
  json_object_set_string_member(o, "architecture", oakuk_qemu_caps_host_arch(n->caps));
  json_object_set_double_member(o, "cpu_percent", cpu_percent(n));
  JsonArray *insts = instances_array(n, &used_vcpus, &used_mb);
  /* Pooled QEMUs (unikernel.warm_pool) hold their guests' memory ready: it is not free. */
  int64_t pool_mb = 0;
  if (n->uk_rt)
    oakuk_runtime_pool_count(n->uk_rt, &pool_mb);
  used_mb += pool_mb;
  json_object_set_int_member(o, "vcpus", MAX((gint64)(cores > 0 ? cores : 1) - used_vcpus, 0));
  json_object_set_int_member(o, "memory", MAX(avail_mb - used_mb, 0));
  json_object_set_int_member(o, "memory_total", total_mb);
  json_object_set_double_member(
      o, "memory_percent",
      total_mb > 0 ? CLAMP(100.0 * (double)(total_mb - avail_mb) / (double)total_mb, 0, 100) : 0.0);
  /* No runtime hands GPUs or TPUs to instances, so the node offers none, whatever the host has:
   * a service asking for them is refused by the scheduler instead of landing here silently. */
  json_object_set_int_member(o, "gpus", 0);
  json_object_set_int_member(o, "tpus", 0);
  JsonArray *virt = json_array_new();
  if (n->ctr_rt != NULL)
    json_array_add_string_element(virt, "container");
  gboolean uk = n->offer_unikernel && (oakuk_qemu_caps_accel(n->caps) != OAKUK_ACCEL_NONE ||
                                       oakuk_qemu_caps_emulated_arch_count(n->caps) > 0);
  if (uk)
    json_array_add_string_element(virt, "unikernel");
  json_object_set_array_member(o, "virtualization", virt);
  if (uk) {
    char *caps = oakuk_qemu_caps_to_json(n->caps);
    g_autoptr(JsonNode) cn = caps ? od_json_parse(caps, -1, NULL) : NULL;
    od_oakuk_free(caps);
    if (cn != NULL && JSON_NODE_HOLDS_OBJECT(cn))
      json_object_set_member(o, "unikernel", json_node_copy(cn));
  }
  json_object_set_array_member(o, "instances", insts);
  g_autoptr(JsonNode) root = json_node_init_object(json_node_alloc(), o);
  return od_json_to_string(root, FALSE);
}

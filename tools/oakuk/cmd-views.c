/* Read-only control-plane views: status (applications, services, instances), nodes, clusters. */
#include "client.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NO_ENTRY                                                                                             \
  { NULL, 0, 0, 0, NULL, NULL, NULL }

static JsonObject *object_member(JsonObject *o, const char *key) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  return n != NULL && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

/* "a,b" of a string array member (or the member itself when it is a string). */
static char *join_strings(JsonObject *o, const char *key) {
  if (oak_str(o, key, NULL) != NULL)
    return g_strdup(oak_str(o, key, NULL));
  JsonArray *a = oak_array_member(o, key);
  g_autoptr(GString) s = g_string_new(NULL);
  for (guint i = 0; a != NULL && i < json_array_get_length(a); i++) {
    JsonNode *e = json_array_get_element(a, i);
    if (JSON_NODE_HOLDS_VALUE(e) && json_node_get_value_type(e) == G_TYPE_STRING)
      g_string_append_printf(s, "%s%s", s->len ? "," : "", json_node_get_string(e));
  }
  return g_string_free(g_steal_pointer(&s), FALSE);
}

static char *ago(gint64 ms) {
  if (ms <= 0)
    return g_strdup("never");
  gint64 d = MAX(0, g_get_real_time() / 1000 - ms) / 1000;
  return d < 120    ? g_strdup_printf("%" G_GINT64_FORMAT "s ago", d)
         : d < 7200 ? g_strdup_printf("%" G_GINT64_FORMAT "m ago", d / 60)
                    : g_strdup_printf("%" G_GINT64_FORMAT "h ago", d / 3600);
}

/* ---- status ---- */

static void add_row(JsonArray *rows, JsonObject *s, JsonObject *in) {
  JsonObject *r = json_object_new();
  JsonObject *pl = object_member(in, "placement");
  json_object_set_string_member(r, "app", oak_str(s, "app_name", ""));
  json_object_set_string_member(r, "app_namespace", oak_str(s, "app_ns", ""));
  json_object_set_string_member(r, "service", oak_str(s, "service_name", ""));
  json_object_set_string_member(r, "service_id", oak_service_id(s));
  json_object_set_string_member(r, "job_name", oak_str(s, "job_name", ""));
  if (in != NULL)
    json_object_set_int_member(r, "instance", oak_int(in, "instance_number", 0));
  else
    json_object_set_null_member(r, "instance");
  json_object_set_string_member(r, "cluster", oak_str(in, "cluster_name", ""));
  json_object_set_string_member(r, "node", oak_str(in, "node_id", ""));
  json_object_set_string_member(r, "virtualization", oak_str(pl, "virtualization", ""));
  json_object_set_string_member(r, "arch", oak_str(pl, "arch", ""));
  json_object_set_string_member(r, "status", oak_str(in, "status", ""));
  json_object_set_string_member(r, "status_detail", oak_str(in, "status_detail", ""));
  /* as the root gives them: ready always, ready_ms once the instance is ready */
  if (in != NULL)
    json_object_set_boolean_member(r, "ready", oak_bool(in, "ready", FALSE));
  else
    json_object_set_null_member(r, "ready");
  if (oak_int(in, "ready_ms", -1) >= 0)
    json_object_set_int_member(r, "ready_ms", oak_int(in, "ready_ms", -1));
  json_array_add_object_element(rows, r);
}

/* One row per instance; a service without instances gets one row of its own. */
static JsonArray *status_rows(OakClient *cl, int *rc) {
  g_autoptr(JsonNode) all = oak_request(cl, "GET", "/api/v1/services", NULL, NULL, rc);
  if (all == NULL || !JSON_NODE_HOLDS_ARRAY(all))
    return NULL;
  JsonArray *rows = json_array_new();
  JsonArray *list = json_node_get_array(all);
  for (guint i = 0; i < json_array_get_length(list); i++) {
    JsonObject *s = json_array_get_object_element(list, i);
    JsonArray *insts = oak_array_member(s, "instance_list");
    if (insts == NULL || json_array_get_length(insts) == 0)
      add_row(rows, s, NULL);
    for (guint j = 0; insts != NULL && j < json_array_get_length(insts); j++)
      add_row(rows, s, json_array_get_object_element(insts, j));
  }
  return rows;
}

static void print_status(JsonArray *rows, gboolean wide) {
  static const char *const headers[] = {"APP",    "SERVICE", "INSTANCE", "NODE",   "VIRT", "ARCH",
                                        "STATUS", "READY",   "READY-MS", "DETAIL", NULL};
  static const char *const wide_headers[] = {"APP",      "NAMESPACE",  "SERVICE", "INSTANCE", "CLUSTER",
                                             "NODE",     "VIRT",       "ARCH",    "STATUS",   "READY",
                                             "READY-MS", "SERVICE-ID", "DETAIL",  NULL};
  g_autoptr(OakTable) t = oak_table_new(wide ? wide_headers : headers);
  for (guint i = 0; i < json_array_get_length(rows); i++) {
    JsonObject *r = json_array_get_object_element(rows, i);
    JsonNode *inst = json_object_get_member(r, "instance");
    g_autofree char *n = JSON_NODE_HOLDS_NULL(inst)
                             ? g_strdup("-")
                             : g_strdup_printf("%" G_GINT64_FORMAT, json_node_get_int(inst));
    const char *ready = JSON_NODE_HOLDS_NULL(inst) ? "-" : oak_bool(r, "ready", FALSE) ? "yes" : "no";
    g_autofree char *ready_ms = oak_int(r, "ready_ms", -1) >= 0
                                    ? g_strdup_printf("%" G_GINT64_FORMAT, oak_int(r, "ready_ms", -1))
                                    : NULL;
    const char *cells[] = {oak_str(r, "app", ""),
                           oak_str(r, "service", ""),
                           n,
                           oak_str(r, "node", ""),
                           oak_str(r, "virtualization", ""),
                           oak_str(r, "arch", ""),
                           oak_str(r, "status", ""),
                           ready,
                           ready_ms,
                           oak_str(r, "status_detail", "")};
    const char *wide_cells[] = {oak_str(r, "app", ""),
                                oak_str(r, "app_namespace", ""),
                                oak_str(r, "service", ""),
                                n,
                                oak_str(r, "cluster", ""),
                                oak_str(r, "node", ""),
                                oak_str(r, "virtualization", ""),
                                oak_str(r, "arch", ""),
                                oak_str(r, "status", ""),
                                ready,
                                ready_ms,
                                oak_str(r, "service_id", ""),
                                oak_str(r, "status_detail", "")};
    oak_table_add(t, wide ? wide_cells : cells);
  }
  oak_table_print(t, stdout);
}

/* One --watch round as a machine reads it: {"time", "rows"}, one JSON line or one YAML document. */
static void print_watched(OakOutput format, JsonArray *rows) {
  g_autoptr(GDateTime) now = g_date_time_new_now_utc();
  g_autofree char *stamp = g_date_time_format_iso8601(now);
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "time", stamp);
  json_object_set_array_member(o, "rows", json_array_ref(rows));
  g_autoptr(JsonNode) n = json_node_init_object(json_node_alloc(), o);
  if (format == OAK_OUTPUT_YAML) {
    g_autofree char *text = oak_yaml_text(n);
    printf("---\n%s", text);
  } else {
    g_autofree char *text = oak_json_text(n, FALSE);
    printf("%s\n", text);
  }
}

typedef JsonArray *(*RowsFn)(OakClient *cl, int *rc);
typedef void (*PrintFn)(JsonArray *rows, gboolean wide);

/* Shows the rows once, or with watch every 2 s until interrupted: a table redrawn under a title
 * line, or with -o json|yaml one document per round (print_watched). */
static int show_rows(OakClient *cl, const char *name, OakOutput format, gboolean watch, RowsFn rows_fn,
                     PrintFn print) {
  if (watch)
    oak_catch_interrupts();
  gboolean tty = isatty(STDOUT_FILENO);
  gboolean table = format == OAK_OUTPUT_TABLE || format == OAK_OUTPUT_WIDE;
  do {
    int rc = OAKUK_CLI_FAILED;
    g_autoptr(JsonArray) rows = rows_fn(cl, &rc);
    if (rows == NULL)
      return rc;
    if (watch && !table) {
      print_watched(format, rows);
    } else if (!table) {
      g_autoptr(JsonNode) n = json_node_init_array(json_node_alloc(), rows);
      oak_print_as(format, n);
    } else {
      if (watch) {
        g_autoptr(GDateTime) now = g_date_time_new_now_local();
        g_autofree char *stamp = g_date_time_format(now, "%H:%M:%S");
        printf("%sEvery 2s: oakuk %s (%s)  %s\n\n", tty ? "\033[H\033[2J" : "", name, cl->url, stamp);
      }
      print(rows, format == OAK_OUTPUT_WIDE);
    }
    fflush(stdout);
  } while (watch && oak_nap(2000));
  return OAKUK_CLI_OK;
}

/* A list command: the client's options, -o and --watch, no positional argument. */
static int list_command(const char *name, const char *summary, int argc, char **argv, RowsFn rows_fn,
                        PrintFn print) {
  g_autofree char *url = NULL, *output = NULL;
  gboolean json = FALSE, watch = FALSE;
  GOptionEntry entries[] = {
      OAKUK_CLIENT_OPTIONS(url, json),
      OAKUK_OUTPUT_OPTION(output),
      {"watch", 'w', 0, G_OPTION_ARG_NONE, &watch,
       "Redraw every 2 s until interrupted (with -o json: one JSON line per round)", NULL},
      NO_ENTRY,
  };
  OakOutput format;
  if (!oak_parse(name, "", summary, entries, &argc, &argv) || !oak_output_parse(name, output, json, &format))
    return OAKUK_CLI_USAGE;
  if (argc != 1) {
    fprintf(stderr, "oakuk %s: no positional arguments expected\n", name);
    return OAKUK_CLI_USAGE;
  }
  int rc = OAKUK_CLI_FAILED;
  g_autoptr(OakClient) cl = oak_client_new(name, url, format == OAK_OUTPUT_JSON, TRUE, &rc);
  return cl ? show_rows(cl, name, format, watch, rows_fn, print) : rc;
}

int oakuk_cmd_status(int argc, char **argv) {
  return list_command("status", "Show the applications, services and instances and where they run.", argc,
                      argv, status_rows, print_status);
}

/* ---- clusters and nodes ---- */

static JsonArray *get_clusters(OakClient *cl, int *rc) {
  g_autoptr(JsonNode) n = oak_request(cl, "GET", "/api/v1/clusters", NULL, NULL, rc);
  if (n == NULL)
    return NULL;
  if (!JSON_NODE_HOLDS_ARRAY(n)) {
    fprintf(stderr, "%s: GET /api/v1/clusters: expected a list\n", cl->cmd);
    *rc = OAKUK_CLI_FAILED;
    return NULL;
  }
  return json_array_ref(json_node_get_array(n));
}

static void print_clusters(JsonArray *list, gboolean wide) {
  static const char *const headers[] = {"ID",     "NAME", "LOCATION", "ACTIVE", "NODES",          "CPU%",
                                        "MEM-MB", "ARCH", "VIRT",     "SUBNET", "LAST-AGGREGATE", NULL};
  static const char *const wide_headers[] = {"ID",         "NAME",           "LOCATION", "ACTIVE", "NODES",
                                             "CPU%",       "MEM-MB",         "ARCH",     "VIRT",   "SUBNET",
                                             "REGISTERED", "LAST-AGGREGATE", "URL",      NULL};
  g_autoptr(OakTable) t = oak_table_new(wide ? wide_headers : headers);
  for (guint i = 0; i < json_array_get_length(list); i++) {
    JsonObject *c = json_array_get_object_element(list, i);
    JsonNode *act = json_object_get_member(c, "active");
    gboolean active = act != NULL && JSON_NODE_HOLDS_VALUE(act) && json_node_get_boolean(act);
    g_autofree char *nodes = g_strdup_printf("%" G_GINT64_FORMAT "/%" G_GINT64_FORMAT,
                                             oak_int(c, "active_nodes", 0), oak_int(c, "number_of_nodes", 0));
    g_autofree char *cpu = g_strdup_printf("%.1f", oak_num(c, "cpu_percent", 0));
    g_autofree char *mem = g_strdup_printf("%" G_GINT64_FORMAT, oak_int(c, "cumulative_memory_in_mb", 0));
    g_autofree char *arch = join_strings(c, "arch");
    g_autofree char *virt = join_strings(c, "virtualization");
    g_autofree char *last = ago(oak_int(c, "aggregate_received_at_ms", 0));
    g_autofree char *registered = ago(oak_int(c, "registered_at_ms", 0));
    const char *cells[] = {oak_str(c, "id", ""),
                           oak_str(c, "cluster_name", ""),
                           oak_str(c, "cluster_location", ""),
                           active ? "yes" : "no",
                           nodes,
                           cpu,
                           mem,
                           arch,
                           virt,
                           oak_str(c, "subnet", ""),
                           last};
    const char *wide_cells[] = {oak_str(c, "id", ""),
                                oak_str(c, "cluster_name", ""),
                                oak_str(c, "cluster_location", ""),
                                active ? "yes" : "no",
                                nodes,
                                cpu,
                                mem,
                                arch,
                                virt,
                                oak_str(c, "subnet", ""),
                                registered,
                                last,
                                oak_str(c, "url", "")};
    oak_table_add(t, wide ? wide_cells : cells);
  }
  oak_table_print(t, stdout);
}

int oakuk_cmd_clusters(int argc, char **argv) {
  return list_command("clusters", "List the clusters registered with the root and their last aggregate.",
                      argc, argv, get_clusters, print_clusters);
}

/* Every cluster's nodes, each with cluster_id and cluster_name. */
static JsonArray *node_rows(OakClient *cl, int *rc) {
  g_autoptr(JsonArray) list = get_clusters(cl, rc);
  if (list == NULL)
    return NULL;
  JsonArray *out = json_array_new();
  for (guint i = 0; i < json_array_get_length(list); i++) {
    JsonObject *c = json_array_get_object_element(list, i);
    JsonArray *nodes = oak_array_member(c, "nodes");
    for (guint j = 0; nodes != NULL && j < json_array_get_length(nodes); j++) {
      JsonObject *n = json_array_get_object_element(nodes, j);
      if (n == NULL)
        continue;
      JsonObject *copy = json_object_new();
      g_autoptr(GList) keys = json_object_get_members(n);
      for (GList *l = keys; l != NULL; l = l->next)
        json_object_set_member(copy, l->data, json_node_copy(json_object_get_member(n, l->data)));
      json_object_set_string_member(copy, "cluster_id", oak_str(c, "id", ""));
      json_object_set_string_member(copy, "cluster_name", oak_str(c, "cluster_name", ""));
      json_array_add_object_element(out, copy);
    }
  }
  return out;
}

static void print_nodes(JsonArray *out, gboolean wide) {
  static const char *const headers[] = {"CLUSTER",  "NODE",     "IP",     "ARCH",      "VIRT", "ACCEL",
                                        "CPU-FREE", "MEM-FREE", "ACTIVE", "LAST-SEEN", NULL};
  static const char *const wide_headers[] = {"CLUSTER", "CLUSTER-ID", "NODE",   "HOST",      "IP",
                                             "ARCH",    "VIRT",       "ACCEL",  "CPU%",      "CPU-FREE",
                                             "MEM%",    "MEM-FREE",   "ACTIVE", "LAST-SEEN", NULL};
  g_autoptr(OakTable) t = oak_table_new(wide ? wide_headers : headers);
  for (guint i = 0; i < json_array_get_length(out); i++) {
    JsonObject *n = json_array_get_object_element(out, i);
    JsonNode *act = json_object_get_member(n, "active");
    gboolean active = act != NULL && JSON_NODE_HOLDS_VALUE(act) && json_node_get_boolean(act);
    gint64 vcpus = oak_int(n, "vcpus", 0);
    g_autofree char *cpu = g_strdup_printf(
        "%.1f/%" G_GINT64_FORMAT, (double)vcpus * (100.0 - oak_num(n, "cpu_percent", 0)) / 100.0, vcpus);
    g_autofree char *mem = g_strdup_printf("%" G_GINT64_FORMAT "/%" G_GINT64_FORMAT " MB",
                                           oak_int(n, "memory", 0), oak_int(n, "memory_total", 0));
    g_autofree char *cpu_pc = g_strdup_printf("%.1f", oak_num(n, "cpu_percent", 0));
    g_autofree char *mem_pc = g_strdup_printf("%.1f", oak_num(n, "memory_percent", 0));
    g_autofree char *virt = join_strings(n, "virtualization");
    g_autofree char *last = ago(oak_int(n, "last_seen_ms", 0));
    const char *state = active ? (oak_bool(n, "drained", FALSE) ? "drained" : "yes") : "no";
    const char *accel = oak_str(object_member(n, "unikernel"), "accel", "");
    const char *cells[] = {oak_str(n, "cluster_name", ""),
                           oak_str(n, "id", ""),
                           oak_str(n, "ip", ""),
                           oak_str(n, "architecture", ""),
                           virt,
                           accel,
                           cpu,
                           mem,
                           state,
                           last};
    const char *wide_cells[] = {oak_str(n, "cluster_name", ""),
                                oak_str(n, "cluster_id", ""),
                                oak_str(n, "id", ""),
                                oak_str(n, "host", ""),
                                oak_str(n, "ip", ""),
                                oak_str(n, "architecture", ""),
                                virt,
                                accel,
                                cpu_pc,
                                cpu,
                                mem_pc,
                                mem,
                                state,
                                last};
    oak_table_add(t, wide ? wide_cells : cells);
  }
  oak_table_print(t, stdout);
}

int oakuk_cmd_nodes(int argc, char **argv) {
  return list_command("nodes", "List the nodes of every cluster (as of each cluster's last aggregate).", argc,
                      argv, node_rows, print_nodes);
}

/* ---- top ---- */

static gint by_cpu(gconstpointer a, gconstpointer b) {
  double x = oak_num(*(JsonObject *const *)a, "cpu_percent", 0),
         y = oak_num(*(JsonObject *const *)b, "cpu_percent", 0);
  return x < y ? 1 : x > y ? -1 : 0;
}

/* Nodes, then instances, each busiest first: {"kind": "node"|"instance", ...}. */
static JsonArray *top_rows(OakClient *cl, int *rc) {
  g_autoptr(JsonArray) nodes = node_rows(cl, rc);
  if (nodes == NULL)
    return NULL;
  g_autoptr(JsonNode) all = oak_request(cl, "GET", "/api/v1/services", NULL, NULL, rc);
  if (all == NULL || !JSON_NODE_HOLDS_ARRAY(all))
    return NULL;
  g_autoptr(GPtrArray) node_list = g_ptr_array_new_with_free_func((GDestroyNotify)json_object_unref);
  g_autoptr(GPtrArray) inst_list = g_ptr_array_new_with_free_func((GDestroyNotify)json_object_unref);
  for (guint i = 0; i < json_array_get_length(nodes); i++) {
    JsonObject *n = json_array_get_object_element(nodes, i);
    JsonObject *r = json_object_new();
    json_object_set_string_member(r, "kind", "node");
    json_object_set_string_member(r, "cluster", oak_str(n, "cluster_name", ""));
    json_object_set_string_member(r, "node", oak_str(n, "id", ""));
    json_object_set_double_member(r, "cpu_percent", oak_num(n, "cpu_percent", 0));
    json_object_set_double_member(r, "memory_percent", oak_num(n, "memory_percent", 0));
    json_object_set_int_member(r, "memory_total_mb", oak_int(n, "memory_total", 0));
    json_object_set_boolean_member(r, "active", oak_bool(n, "active", FALSE));
    g_ptr_array_add(node_list, r);
  }
  JsonArray *svcs = json_node_get_array(all);
  for (guint i = 0; i < json_array_get_length(svcs); i++) {
    JsonObject *s = json_array_get_object_element(svcs, i);
    JsonArray *insts = oak_array_member(s, "instance_list");
    for (guint j = 0; insts != NULL && j < json_array_get_length(insts); j++) {
      JsonObject *in = json_array_get_object_element(insts, j);
      JsonObject *r = json_object_new();
      json_object_set_string_member(r, "kind", "instance");
      json_object_set_string_member(r, "service", oak_str(s, "job_name", ""));
      json_object_set_int_member(r, "instance", oak_int(in, "instance_number", 0));
      json_object_set_string_member(r, "node", oak_str(in, "node_id", ""));
      json_object_set_string_member(r, "status", oak_str(in, "status", ""));
      json_object_set_double_member(r, "cpu_percent", oak_num(in, "cpu", 0));
      json_object_set_double_member(r, "memory_mb", oak_num(in, "memory", 0));
      g_ptr_array_add(inst_list, r);
    }
  }
  g_ptr_array_sort(node_list, by_cpu);
  g_ptr_array_sort(inst_list, by_cpu);
  JsonArray *out = json_array_new();
  for (guint i = 0; i < node_list->len; i++)
    json_array_add_object_element(out, json_object_ref(node_list->pdata[i]));
  for (guint i = 0; i < inst_list->len; i++)
    json_array_add_object_element(out, json_object_ref(inst_list->pdata[i]));
  return out;
}

static void print_top(JsonArray *rows, gboolean wide) {
  static const char *const node_headers[] = {"CLUSTER", "NODE", "CPU%", "MEM%", "MEM-TOTAL", "ACTIVE", NULL};
  static const char *const inst_headers[] = {"SERVICE", "INSTANCE", "NODE", "STATUS", "CPU%", "MEM-MB", NULL};
  g_autoptr(OakTable) nt = oak_table_new(node_headers);
  g_autoptr(OakTable) it = oak_table_new(inst_headers);
  (void)wide;
  for (guint i = 0; i < json_array_get_length(rows); i++) {
    JsonObject *r = json_array_get_object_element(rows, i);
    g_autofree char *cpu = g_strdup_printf("%.1f", oak_num(r, "cpu_percent", 0));
    if (strcmp(oak_str(r, "kind", ""), "node") == 0) {
      g_autofree char *mem = g_strdup_printf("%.1f", oak_num(r, "memory_percent", 0));
      g_autofree char *total = g_strdup_printf("%" G_GINT64_FORMAT " MB", oak_int(r, "memory_total_mb", 0));
      const char *cells[] = {oak_str(r, "cluster", ""),
                             oak_str(r, "node", ""),
                             cpu,
                             mem,
                             total,
                             oak_bool(r, "active", FALSE) ? "yes" : "no"};
      oak_table_add(nt, cells);
    } else {
      g_autofree char *n = g_strdup_printf("%" G_GINT64_FORMAT, oak_int(r, "instance", 0));
      g_autofree char *mem = g_strdup_printf("%.1f", oak_num(r, "memory_mb", 0));
      const char *cells[] = {oak_str(r, "service", ""), n,   oak_str(r, "node", ""),
                             oak_str(r, "status", ""),  cpu, mem};
      oak_table_add(it, cells);
    }
  }
  oak_table_print(nt, stdout);
  printf("\n");
  oak_table_print(it, stdout);
}

int oakuk_cmd_top(int argc, char **argv) {
  return list_command(
      "top",
      "Show CPU and memory of every node and instance, busiest first (as the nodes last reported "
      "them: instances' CPU in % of one core, memory their resident set).",
      argc, argv, top_rows, print_top);
}

/* `oakuk node drain|undrain|remove NODE` (docs/reconcile.md, "Drain and removal"). */
int oakuk_cmd_node(int argc, char **argv) {
  g_autofree char *url = NULL;
  gboolean json = FALSE;
  GOptionEntry entries[] = {OAKUK_CLIENT_OPTIONS(url, json), NO_ENTRY};
  if (!oak_parse(
          "node", "drain|undrain|remove NODE",
          "drain: move the node's instances to other nodes (each new copy runs before the old one goes) "
          "and place nothing new there; undrain: end that; remove: move its instances and forget the node "
          "(its subnet is released).",
          entries, &argc, &argv))
    return OAKUK_CLI_USAGE;
  static const struct {
    const char *verb, *method, *suffix, *done;
  } verbs[] = {{"drain", "POST", "/drain", "draining: its instances move to other nodes"},
               {"undrain", "DELETE", "/drain", "takes instances again"},
               {"remove", "DELETE", "", "removed: its instances move to other nodes"}};
  size_t v = G_N_ELEMENTS(verbs);
  for (size_t k = 0; argc == 3 && k < G_N_ELEMENTS(verbs); k++)
    if (strcmp(argv[1], verbs[k].verb) == 0)
      v = k;
  if (v == G_N_ELEMENTS(verbs)) {
    fprintf(stderr, "oakuk node: expected drain, undrain or remove and one NODE\n");
    return OAKUK_CLI_USAGE;
  }
  const char *node = argv[2];
  for (const char *p = node; *p; p++)
    if (!g_ascii_isalnum(*p) && !strchr("-_.", *p)) {
      fprintf(stderr, "oakuk node: \"%s\" is not a node id (letters, digits, -_.)\n", node);
      return OAKUK_CLI_USAGE;
    }
  int rc = OAKUK_CLI_FAILED;
  g_autoptr(OakClient) cl = oak_client_new("node", url, json, TRUE, &rc);
  if (cl == NULL)
    return rc;
  g_autofree char *path = g_strdup_printf("/api/v1/nodes/%s%s", node, verbs[v].suffix);
  g_autoptr(JsonNode) answer = oak_request(cl, verbs[v].method, path, NULL, NULL, &rc);
  if (answer == NULL)
    return rc;
  if (json)
    oak_print_json(answer);
  else
    printf("node %s %s\n", node, verbs[v].done);
  return OAKUK_CLI_OK;
}

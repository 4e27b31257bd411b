/* Records of the instances `oakuk run` started and the host settings it changed (run-state.h). */
#include "run-state.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <json-glib/json-glib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define CAP_NET_ADMIN_BIT 12
#define CAP_SYS_ADMIN_BIT 21

const char *oakuk_run_dir(void) {
  const char *dir = g_getenv("OAKUK_RUN_DIR");
  return dir && *dir ? dir : OAKUK_RUN_DEFAULT_DIR;
}

bool oakuk_run_privileged(void) {
  g_autofree char *status = NULL;
  if (!g_file_get_contents("/proc/self/status", &status, NULL, NULL))
    return geteuid() == 0;
  const char *cap = strstr(status, "\nCapEff:");
  if (!cap)
    return geteuid() == 0;
  guint64 eff = g_ascii_strtoull(cap + strlen("\nCapEff:"), NULL, 16);
  guint64 need = (G_GUINT64_CONSTANT(1) << CAP_NET_ADMIN_BIT) | (G_GUINT64_CONSTANT(1) << CAP_SYS_ADMIN_BIT);
  return (eff & need) == need;
}

char *oakuk_run_netns_id(void) {
  char *id = g_file_read_link("/proc/self/ns/net", NULL);
  return id ? id : g_strdup("net:[?]");
}

/* /proc/PID/stat: the fields after the command (which may hold spaces and parentheses). */
static char **proc_stat_fields(int64_t pid) {
  g_autofree char *path = g_strdup_printf("/proc/%" G_GINT64_FORMAT "/stat", pid);
  g_autofree char *text = NULL;
  if (pid <= 0 || !g_file_get_contents(path, &text, NULL, NULL))
    return NULL;
  const char *end = strrchr(text, ')');
  return end && end[1] == ' ' ? g_strsplit(end + 2, " ", -1) : NULL;
}

uint64_t oakuk_run_proc_start(int64_t pid) {
  g_auto(GStrv) f = proc_stat_fields(pid);
  /* f[0] is field 3 (state); starttime is field 22 */
  return f && g_strv_length(f) > 19 ? g_ascii_strtoull(f[19], NULL, 10) : 0;
}

bool oakuk_run_proc_alive(int64_t pid, uint64_t start) {
  g_auto(GStrv) f = proc_stat_fields(pid);
  if (!f || g_strv_length(f) <= 19 || strcmp(f[0], "Z") == 0 || strcmp(f[0], "X") == 0)
    return false;
  return start == 0 || g_ascii_strtoull(f[19], NULL, 10) == start;
}

bool oakuk_run_name_is_valid(const char *name) {
  size_t n = name ? strlen(name) : 0;
  if (n == 0 || n > 64 || name[0] == '.')
    return false;
  for (size_t i = 0; i < n; i++)
    if (!g_ascii_isalnum(name[i]) && !strchr("._-", name[i]))
      return false;
  return true;
}

static bool io_error(GError **error, int e, const char *what, const char *path) {
  g_set_error(error, G_IO_ERROR, g_io_error_from_errno(e), "%s %s: %s", what, path, g_strerror(e));
  return false;
}

int oakuk_run_lock(GError **error) {
  const char *dir = oakuk_run_dir();
  if (g_mkdir_with_parents(dir, 0755) != 0)
    return io_error(error, errno, "create", dir), -1;
  g_autofree char *path = g_build_filename(dir, "lock", NULL);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0)
    return io_error(error, errno, "open", path), -1;
  while (flock(fd, LOCK_EX) != 0)
    if (errno != EINTR) {
      io_error(error, errno, "lock", path);
      close(fd);
      return -1;
    }
  return fd;
}

/* ---- records ---- */

static char *record_path(const char *name) {
  return g_build_filename(oakuk_run_dir(), name, "run.json", NULL);
}

void oakuk_run_json_add_str(JsonBuilder *b, const char *key, const char *value) {
  json_builder_set_member_name(b, key);
  if (value)
    json_builder_add_string_value(b, value);
  else
    json_builder_add_null_value(b);
}

static void add_int(JsonBuilder *b, const char *key, int64_t value) {
  json_builder_set_member_name(b, key);
  json_builder_add_int_value(b, value);
}

static void add_bool(JsonBuilder *b, const char *key, bool value) {
  json_builder_set_member_name(b, key);
  json_builder_add_boolean_value(b, value);
}

bool oakuk_run_record_write(const OakukRunRecord *r, GError **error) {
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  oakuk_run_json_add_str(b, "name", r->name);
  oakuk_run_json_add_str(b, "image", r->image);
  oakuk_run_json_add_str(b, "ip", r->ip);
  oakuk_run_json_add_str(b, "subnet", r->subnet);
  add_bool(b, "nat", r->nat);
  json_builder_set_member_name(b, "ports");
  json_builder_begin_array(b);
  for (char **p = r->ports; p && *p; p++)
    json_builder_add_string_value(b, *p);
  json_builder_end_array(b);
  oakuk_run_json_add_str(b, "runtime_dir", r->runtime_dir);
  oakuk_run_json_add_str(b, "netns", r->netns);
  oakuk_run_json_add_str(b, "started", r->started);
  add_bool(b, "detached", r->detached);
  add_int(b, "cli_pid", r->cli_pid);
  add_int(b, "cli_start", (int64_t)r->cli_start);
  add_int(b, "pid", r->pid);
  add_int(b, "pid_start", (int64_t)r->pid_start);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autofree char *text = json_to_string(root, TRUE);
  g_autofree char *path = record_path(r->name);
  /* g_file_set_contents renames a temporary file over it: readers never see half a record. */
  return g_file_set_contents_full(path, text, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0644, error);
}

bool oakuk_run_record_create(const OakukRunRecord *r, GError **error) {
  g_autofree char *dir = g_build_filename(oakuk_run_dir(), r->name, NULL);
  if (g_mkdir_with_parents(oakuk_run_dir(), 0755) != 0)
    return io_error(error, errno, "create", oakuk_run_dir());
  if (mkdir(dir, 0755) != 0)
    return io_error(error, errno, "create", dir);
  return oakuk_run_record_write(r, error);
}

static char *obj_str(JsonObject *o, const char *key) {
  JsonNode *n = json_object_get_member(o, key);
  return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
             ? g_strdup(json_node_get_string(n))
             : NULL;
}

static int64_t obj_int(JsonObject *o, const char *key) {
  JsonNode *n = json_object_get_member(o, key);
  return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64 ? json_node_get_int(n)
                                                                                      : 0;
}

static char **obj_strv(JsonObject *o, const char *key) {
  JsonNode *n = json_object_get_member(o, key);
  JsonArray *a = n && JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n) : NULL;
  GPtrArray *out = g_ptr_array_new();
  for (guint i = 0; a && i < json_array_get_length(a); i++) {
    JsonNode *e = json_array_get_element(a, i);
    if (JSON_NODE_HOLDS_VALUE(e) && json_node_get_value_type(e) == G_TYPE_STRING)
      g_ptr_array_add(out, g_strdup(json_node_get_string(e)));
  }
  g_ptr_array_add(out, NULL);
  return (char **)g_ptr_array_free(out, FALSE);
}

OakukRunRecord *oakuk_run_record_load(const char *name, GError **error) {
  g_autofree char *path = record_path(name);
  g_autoptr(JsonParser) p = json_parser_new();
  if (!json_parser_load_from_file(p, path, error))
    return NULL;
  JsonNode *root = json_parser_get_root(p);
  JsonObject *o = root && JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  g_autofree char *rname = o ? obj_str(o, "name") : NULL;
  if (!rname || strcmp(rname, name) != 0) {
    g_set_error(error, G_IO_ERROR, G_IO_ERROR_INVALID_DATA, "%s: not a record of instance %s", path, name);
    return NULL;
  }
  OakukRunRecord *r = g_new0(OakukRunRecord, 1);
  r->name = g_steal_pointer(&rname);
  r->image = obj_str(o, "image");
  r->ip = obj_str(o, "ip");
  r->subnet = obj_str(o, "subnet");
  r->nat = json_object_get_boolean_member_with_default(o, "nat", FALSE);
  r->ports = obj_strv(o, "ports");
  r->runtime_dir = obj_str(o, "runtime_dir");
  r->netns = obj_str(o, "netns");
  r->started = obj_str(o, "started");
  r->detached = json_object_get_boolean_member_with_default(o, "detached", FALSE);
  r->cli_pid = obj_int(o, "cli_pid");
  r->cli_start = (uint64_t)obj_int(o, "cli_start");
  r->pid = obj_int(o, "pid");
  r->pid_start = (uint64_t)obj_int(o, "pid_start");
  return r;
}

void oakuk_run_record_free(OakukRunRecord *r) {
  if (!r)
    return;
  g_free(r->name);
  g_free(r->image);
  g_free(r->ip);
  g_free(r->subnet);
  g_strfreev(r->ports);
  g_free(r->runtime_dir);
  g_free(r->netns);
  g_free(r->started);
  g_free(r);
}

static int by_name(gconstpointer a, gconstpointer b) {
  return strcmp((*(OakukRunRecord *const *)a)->name, (*(OakukRunRecord *const *)b)->name);
}

GPtrArray *oakuk_run_records(GError **error) {
  GPtrArray *all = g_ptr_array_new_with_free_func((GDestroyNotify)oakuk_run_record_free);
  GError *err = NULL;
  g_autoptr(GDir) d = g_dir_open(oakuk_run_dir(), 0, &err);
  if (!d) {
    if (g_error_matches(err, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
      g_error_free(err);
      return all;
    }
    g_propagate_error(error, err);
    g_ptr_array_unref(all);
    return NULL;
  }
  const char *e;
  while ((e = g_dir_read_name(d))) {
    if (!oakuk_run_name_is_valid(e))
      continue;
    OakukRunRecord *r = oakuk_run_record_load(e, NULL);
    if (r)
      g_ptr_array_add(all, r);
  }
  g_ptr_array_sort(all, by_name);
  return all;
}

static void record_remove(const char *name) {
  g_autofree char *path = record_path(name);
  g_autofree char *dir = g_build_filename(oakuk_run_dir(), name, NULL);
  (void)unlink(path);
  (void)rmdir(dir);
}

const char *oakuk_run_record_state(const OakukRunRecord *r) {
  bool cli = !r->detached && oakuk_run_proc_alive(r->cli_pid, r->cli_start);
  if (r->pid > 0 && oakuk_run_proc_alive(r->pid, r->pid_start))
    return "RUNNING";
  if (cli)
    return r->pid > 0 ? "STOPPING" : "STARTING";
  return "DEAD";
}

/* ---- host settings ---- */

static char *host_path(void) {
  g_autofree char *id = oakuk_run_netns_id();
  GString *digits = g_string_new(NULL);
  for (const char *p = id; *p; p++)
    if (g_ascii_isdigit(*p))
      g_string_append_c(digits, *p);
  g_autofree char *file = g_strdup_printf("host-%s.json", digits->str);
  g_string_free(digits, TRUE);
  return g_build_filename(oakuk_run_dir(), file, NULL);
}

static char *read_setting(const char *path) {
  char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return NULL;
  return g_strstrip(text);
}

static bool write_setting(const char *path, const char *value) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return false;
  size_t len = strlen(value);
  bool ok = write(fd, value, len) == (ssize_t)len;
  close(fd);
  return ok;
}

static const char *default_bridge(void) {
  static oakuk_net_options o;
  oakuk_net_options_init(&o, OAKUK_NET_OPTIONS_VERSION);
  return o.bridge;
}

/* The cgroup directories the QEMU runtime puts instances under. */
static void cgroup_parents(GPtrArray *out) {
  if (g_file_test("/sys/fs/cgroup/cgroup.controllers", G_FILE_TEST_EXISTS)) {
    g_ptr_array_add(out, g_strdup("/sys/fs/cgroup/oakuk"));
    return;
  }
  const char *v1[] = {"/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu"};
  for (size_t i = 0; i < G_N_ELEMENTS(v1); i++)
    if (g_file_test(v1[i], G_FILE_TEST_IS_DIR))
      g_ptr_array_add(out, g_build_filename(v1[i], "oakuk", NULL));
}

/* {"bridge", "made_bridge", "sysctl": {PATH: VALUE}, "cgroup_dirs": [made], "cgroup_controllers": [added]} */
static JsonNode *host_snapshot(bool bridge_exists) {
  const char *bridge = default_bridge();
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  oakuk_run_json_add_str(b, "bridge", bridge);
  add_bool(b, "made_bridge", !bridge_exists);
  json_builder_set_member_name(b, "sysctl");
  json_builder_begin_object(b);
  g_autofree char *localnet = g_strdup_printf("/proc/sys/net/ipv4/conf/%s/route_localnet", bridge);
  const char *sysctls[] = {"/proc/sys/net/ipv4/ip_forward", bridge_exists ? localnet : NULL};
  for (size_t i = 0; i < G_N_ELEMENTS(sysctls); i++) {
    g_autofree char *v = sysctls[i] ? read_setting(sysctls[i]) : NULL;
    if (v)
      oakuk_run_json_add_str(b, sysctls[i], v);
  }
  json_builder_end_object(b);
  json_builder_set_member_name(b, "cgroup_dirs");
  json_builder_begin_array(b);
  g_autoptr(GPtrArray) dirs = g_ptr_array_new_with_free_func(g_free);
  cgroup_parents(dirs);
  for (guint i = 0; i < dirs->len; i++)
    if (!g_file_test(dirs->pdata[i], G_FILE_TEST_EXISTS))
      json_builder_add_string_value(b, dirs->pdata[i]);
  json_builder_end_array(b);
  /* cgroup v2: the runtime enables memory and cpu for the root's children. */
  json_builder_set_member_name(b, "cgroup_controllers");
  json_builder_begin_array(b);
  g_autofree char *ctl = read_setting("/sys/fs/cgroup/cgroup.subtree_control");
  if (ctl) {
    g_auto(GStrv) on = g_strsplit(ctl, " ", -1);
    const char *wanted[] = {"memory", "cpu"};
    for (size_t i = 0; i < G_N_ELEMENTS(wanted); i++)
      if (!g_strv_contains((const char *const *)on, wanted[i]))
        json_builder_add_string_value(b, wanted[i]);
  }
  json_builder_end_array(b);
  json_builder_end_object(b);
  return json_builder_get_root(b);
}

/* oakuk_net_list as a JSON object, or NULL (printed). */
static JsonNode *net_state(oakuk_net *net, const char *prog) {
  oakuk_error *err = NULL;
  char *text = oakuk_net_list(net, &err);
  if (!text) {
    fprintf(stderr, "%s: list the network state: %s\n", prog, oakuk_error_message(err));
    oakuk_error_free(err);
    return NULL;
  }
  JsonNode *n = json_from_string(text, NULL);
  oakuk_free(text);
  if (n && !JSON_NODE_HOLDS_OBJECT(n))
    g_clear_pointer(&n, json_node_unref);
  return n;
}

static guint array_len(JsonObject *o, const char *key) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  return n && JSON_NODE_HOLDS_ARRAY(n) ? json_array_get_length(json_node_get_array(n)) : 0;
}

bool oakuk_run_host_save(oakuk_net *net, GError **error) {
  g_autofree char *path = host_path();
  if (g_file_test(path, G_FILE_TEST_EXISTS))
    return true; /* an earlier run's: it holds the settings from before any run */
  g_autoptr(JsonNode) state = net_state(net, "oakuk run");
  if (!state)
    return g_set_error(error, G_IO_ERROR, G_IO_ERROR_FAILED, "cannot read the network state"), false;
  bool bridge = json_object_get_boolean_member_with_default(json_node_get_object(state), "bridge", FALSE);
  g_autoptr(JsonNode) snap = host_snapshot(bridge);
  g_autofree char *text = json_to_string(snap, TRUE);
  return g_file_set_contents_full(path, text, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0644, error);
}

static void host_restore(JsonObject *h) {
  JsonNode *sn = json_object_get_member(h, "sysctl");
  JsonObject *sysctl = sn && JSON_NODE_HOLDS_OBJECT(sn) ? json_node_get_object(sn) : NULL;
  g_autoptr(GList) keys = sysctl ? json_object_get_members(sysctl) : NULL;
  for (GList *k = keys; k; k = k->next) {
    const char *path = k->data;
    g_autofree char *want = obj_str(sysctl, path);
    g_autofree char *now = read_setting(path);
    /* Only /proc/sys files; a bridge removed meanwhile took its setting with it. */
    if (want && now && g_str_has_prefix(path, "/proc/sys/") && strcmp(want, now) != 0 &&
        !write_setting(path, want))
      fprintf(stderr, "oakuk: could not set %s back to %s: %s\n", path, want, g_strerror(errno));
  }
  /* cgroup v2 controllers first: they cannot be disabled while a child uses them; the
   * directories go only when empty (rmdir refuses otherwise). */
  g_auto(GStrv) dirs = obj_strv(h, "cgroup_dirs");
  for (char **d = dirs; *d; d++)
    if (g_str_has_prefix(*d, "/sys/fs/cgroup/"))
      (void)rmdir(*d);
  g_auto(GStrv) ctl = obj_strv(h, "cgroup_controllers");
  for (char **c = ctl; *c; c++) {
    g_autofree char *off = g_strconcat("-", *c, NULL);
    if (strcmp(*c, "memory") == 0 || strcmp(*c, "cpu") == 0)
      (void)write_setting("/sys/fs/cgroup/cgroup.subtree_control", off);
  }
}

/* Whether another run's record names this network namespace. */
static bool others_here(const char *name) {
  g_autofree char *netns = oakuk_run_netns_id();
  g_autoptr(GPtrArray) all = oakuk_run_records(NULL);
  for (guint i = 0; all && i < all->len; i++) {
    OakukRunRecord *r = all->pdata[i];
    if (strcmp(r->name, name) != 0 && g_strcmp0(r->netns, netns) == 0)
      return true;
  }
  return false;
}

void oakuk_run_release(oakuk_net *net, const char *name, bool have_net, const char *prog) {
  oakuk_error *err = NULL;
  if (have_net && oakuk_net_instance_teardown(net, name, &err) != 0) {
    fprintf(stderr, "%s: remove the network of instance %s: %s\n", prog, name, oakuk_error_message(err));
    g_clear_pointer(&err, oakuk_error_free);
  }
  record_remove(name);
  if (others_here(name))
    return;
  g_autofree char *path = host_path();
  g_autoptr(JsonParser) p = json_parser_new();
  if (!json_parser_load_from_file(p, path, NULL) || !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
    return;
  JsonObject *h = json_node_get_object(json_parser_get_root(p));
  g_autoptr(JsonNode) now = net_state(net, prog);
  JsonObject *o = now ? json_node_get_object(now) : NULL;
  if (!o)
    return;
  /* Someone else (oakuk-node) uses the bridge now: what it needs stays as it is. */
  if (array_len(o, "instances") || array_len(o, "ports") || array_len(o, "services") ||
      array_len(o, "peers")) {
    (void)unlink(path);
    return;
  }
  if (json_object_get_boolean_member_with_default(h, "made_bridge", FALSE) &&
      oakuk_net_teardown_node(net, &err) != 0) {
    fprintf(stderr, "%s: remove the bridge and nftables table: %s\n", prog, oakuk_error_message(err));
    g_clear_pointer(&err, oakuk_error_free);
  }
  host_restore(h);
  (void)unlink(path);
}

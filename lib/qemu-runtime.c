/* Unikernel runtime, part 2 (DESIGN §8, §11): QEMU instances. Each instance lives in
 * <state_dir>/instances/<name>/ (serial.log, qmp.sock, qemu.log, instance.json, files/), runs in
 * its netns (setns before exec) and in its own cgroups, and is driven over QMP. */
#include "qemu-private.h"
#include "sysutil-private.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <json-glib/json-glib.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

GPtrArray *oakuk_qemu_build_argv_internal(const oakuk_instance_spec *spec, const char *dir, const char *qemu_binary,
                                          GError **error);

#define QMP_WAIT_MS 30000  /* QEMU that opens no QMP socket within this is considered failed */
#define QUIT_GRACE_MS 3000 /* after QMP quit / SIGTERM, before SIGKILL */

typedef struct {
  char *v2;  /* unified hierarchy directory, or NULL */
  char *mem; /* v1 memory controller directory */
  char *cpu; /* v1 cpu controller directory */
} Cgroup;

typedef struct QemuRuntime QemuRuntime;

typedef struct {
  gint refcount;
  QemuRuntime *q; /* NULL once detached from the runtime */
  char *name, *dir;
  oakuk_instance_spec *spec; /* NULL for adopted instances */
  GPtrArray *argv;
  bool one_shot;
  int32_t graceful_stop_s;
  Cgroup cg;
  GPid pid;
  guint64 start_time;
  OakukProcWatch watch;
  bool preparing, running, exited, stopping;
  GCancellable *cancel;
  GSocketConnection *conn;
  GDataInputStream *in;
  gint64 qmp_deadline;
  GSource *timer;
  char *fail_reason; /* why we killed a QEMU that never became RUNNING */
  guint64 last_ticks;
  gint64 last_time_us;
} Instance;

struct QemuRuntime {
  oakuk_runtime *rt;
  char *instances_dir;
  oakuk_qemu_caps *caps;
  GHashTable *instances; /* name -> Instance* (owned ref) */
};

static void qmp_connect(Instance *i);
static void stop_step(Instance *i, int phase);

/* ---- small helpers ---- */

static Instance *inst_ref(Instance *i) {
  g_atomic_int_inc(&i->refcount);
  return i;
}

static void cgroup_clear(Cgroup *cg) {
  g_clear_pointer(&cg->v2, g_free);
  g_clear_pointer(&cg->mem, g_free);
  g_clear_pointer(&cg->cpu, g_free);
}

static void inst_unref(Instance *i) {
  if (!g_atomic_int_dec_and_test(&i->refcount))
    return;
  g_free(i->name);
  g_free(i->dir);
  oakuk_instance_spec_unref(i->spec);
  if (i->argv)
    g_ptr_array_unref(i->argv);
  cgroup_clear(&i->cg);
  g_free(i->fail_reason);
  g_clear_object(&i->cancel);
  g_free(i);
}

static gboolean set_io_error(GError **error, int errnum, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
static gboolean set_io_error(GError **error, int errnum, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  g_set_error(error, OAKUK_ERROR, -OAKUK_EIO, "%s: %s", msg, g_strerror(errnum));
  return FALSE;
}

static gboolean write_file(const char *path, const char *value, GError **error) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return set_io_error(error, errno, "open %s", path);
  ssize_t n = write(fd, value, strlen(value));
  int saved = errno;
  close(fd);
  if (n != (ssize_t)strlen(value))
    return set_io_error(error, n < 0 ? saved : EIO, "write \"%s\" to %s", value, path);
  return TRUE;
}

static gboolean copy_tree(const char *src, const char *dst, GError **error) {
  struct stat st;
  if (lstat(src, &st) != 0)
    return set_io_error(error, errno, "copy %s", src);
  if (S_ISDIR(st.st_mode)) {
    if (mkdir(dst, st.st_mode & 07777) != 0 && errno != EEXIST)
      return set_io_error(error, errno, "create %s", dst);
    g_autoptr(GDir) d = g_dir_open(src, 0, error);
    if (!d)
      return FALSE;
    const char *e;
    while ((e = g_dir_read_name(d))) {
      g_autofree char *s = g_build_filename(src, e, NULL);
      g_autofree char *t = g_build_filename(dst, e, NULL);
      if (!copy_tree(s, t, error))
        return FALSE;
    }
    return TRUE;
  }
  if (!S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode))
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EPERM, "copy %s: not a regular file, directory or link", src),
           FALSE;
  g_autoptr(GFile) fs = g_file_new_for_path(src);
  g_autoptr(GFile) fd = g_file_new_for_path(dst);
  return g_file_copy(fs, fd, G_FILE_COPY_NOFOLLOW_SYMLINKS | G_FILE_COPY_ALL_METADATA, NULL, NULL, NULL, error);
}

/* ---- cgroups ---- */

/* Mount point of the v1 hierarchy carrying controller (from /proc/self/mountinfo). */
/* Fills cg with the instance's cgroup directories (not created). */
static gboolean cgroup_paths(Cgroup *cg, const char *name, GError **error) {
  if (oakuk_cgroup_v2()) {
    cg->v2 = g_build_filename("/sys/fs/cgroup/oakuk", name, NULL);
    return TRUE;
  }
  g_autofree char *mem = oakuk_cgroup_v1_mount("memory");
  g_autofree char *cpu = oakuk_cgroup_v1_mount("cpu");
  if (!mem || !cpu)
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EUNSUPPORTED,
                       "instance %s: no cgroup v1 %s controller mounted (and no cgroup v2)", name,
                       !mem ? "memory" : "cpu"), FALSE;
  cg->mem = g_build_filename(mem, "oakuk", name, NULL);
  cg->cpu = g_build_filename(cpu, "oakuk", name, NULL);
  return TRUE;
}

static gboolean mkdir_parent_and(const char *dir, GError **error) {
  g_autofree char *parent = g_path_get_dirname(dir);
  if (mkdir(parent, 0755) != 0 && errno != EEXIST)
    return set_io_error(error, errno, "create cgroup %s", parent);
  if (mkdir(dir, 0755) != 0 && errno != EEXIST)
    return set_io_error(error, errno, "create cgroup %s", dir);
  return TRUE;
}

static gboolean cgroup_create(Cgroup *cg, int64_t limit_mb, int32_t vcpus, GError **error) {
  g_autofree char *bytes = g_strdup_printf("%" G_GINT64_FORMAT, limit_mb * 1024 * 1024);
  if (cg->v2) {
    /* Controllers must be enabled on every ancestor before a leaf can use them. */
    if (!write_file("/sys/fs/cgroup/cgroup.subtree_control", "+memory +cpu", error))
      return FALSE;
    if (!mkdir_parent_and(cg->v2, error))
      return FALSE;
    g_autofree char *parent = g_path_get_dirname(cg->v2);
    g_autofree char *ctl = g_build_filename(parent, "cgroup.subtree_control", NULL);
    g_autofree char *max = g_build_filename(cg->v2, "memory.max", NULL);
    g_autofree char *cpumax = g_build_filename(cg->v2, "cpu.max", NULL);
    g_autofree char *quota = g_strdup_printf("%d 100000", vcpus * 100000);
    return write_file(ctl, "+memory +cpu", error) && write_file(max, bytes, error) &&
           write_file(cpumax, quota, error);
  }
  if (!mkdir_parent_and(cg->mem, error) || !mkdir_parent_and(cg->cpu, error))
    return FALSE;
  g_autofree char *limit = g_build_filename(cg->mem, "memory.limit_in_bytes", NULL);
  g_autofree char *period = g_build_filename(cg->cpu, "cpu.cfs_period_us", NULL);
  g_autofree char *quota = g_build_filename(cg->cpu, "cpu.cfs_quota_us", NULL);
  g_autofree char *q = g_strdup_printf("%d", vcpus * 100000);
  return write_file(limit, bytes, error) && write_file(period, "100000", error) && write_file(quota, q, error);
}

static void cgroup_remove(Cgroup *cg) {
  const char *dirs[] = {cg->v2, cg->mem, cg->cpu};
  for (size_t k = 0; k < G_N_ELEMENTS(dirs); k++) {
    if (!dirs[k])
      continue;
    /* A task that just exited may still be accounted for a moment. */
    for (int attempt = 0; attempt < 50; attempt++) {
      if (rmdir(dirs[k]) == 0 || errno == ENOENT)
        break;
      if (errno != EBUSY) {
        g_warning("remove cgroup %s: %s", dirs[k], g_strerror(errno));
        break;
      }
      g_usleep(10000);
    }
  }
}

static int64_t cgroup_memory_bytes(const Cgroup *cg) {
  g_autofree char *path = cg->v2 ? g_build_filename(cg->v2, "memory.current", NULL)
                                 : g_build_filename(cg->mem, "memory.usage_in_bytes", NULL);
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return -1;
  return g_ascii_strtoll(text, NULL, 10);
}

/* ---- /proc ---- */

/* Fields after the ")" of /proc/<pid>/stat: index 0 is field 3 (state). */
static int64_t proc_rss_kb(GPid pid) {
  g_autofree char *path = g_strdup_printf("/proc/%d/status", (int)pid);
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return -1;
  const char *p = strstr(text, "\nVmRSS:");
  return p ? g_ascii_strtoll(p + strlen("\nVmRSS:"), NULL, 10) : 0;
}

/* ---- status ---- */

static void emit(Instance *i, int32_t status, const char *detail) {
  if (i->q)
    oakuk_runtime_emit(i->q->rt, i->name, status, detail);
}

static void clear_timer(Instance *i) {
  if (i->timer) {
    g_source_destroy(i->timer);
    g_source_unref(i->timer);
    i->timer = NULL;
  }
}

static GSource *add_timeout(Instance *i, guint ms, GSourceFunc fn) {
  GSource *s = g_timeout_source_new(ms);
  g_source_set_callback(s, fn, inst_ref(i), (GDestroyNotify)inst_unref);
  g_source_attach(s, i->q->rt->context);
  return s;
}

static void qmp_close(Instance *i) {
  if (i->cancel)
    g_cancellable_cancel(i->cancel);
  if (i->conn)
    g_io_stream_close(G_IO_STREAM(i->conn), NULL, NULL);
  g_clear_object(&i->in);
  g_clear_object(&i->conn);
}

/* Stops watching and forgets the instance (its process and files are left as they are). */
static void detach(Instance *i) {
  clear_timer(i);
  oakuk_proc_watch_clear(&i->watch);
  qmp_close(i);
  if (i->q)
    g_hash_table_remove(i->q->instances, i->name); /* drops the table's reference */
}

static void finish_undeploy(Instance *i) {
  GError *err = NULL;
  cgroup_remove(&i->cg);
  if (!oakuk_rm_rf(i->dir, &err)) {
    g_warning("instance %s: %s", i->name, err->message);
    g_clear_error(&err);
  }
  QemuRuntime *q = i->q;
  g_autofree char *name = g_strdup(i->name);
  detach(i);
  if (q)
    oakuk_runtime_emit(q->rt, name, OAKUK_STATUS_UNDEPLOYED, NULL);
}

static char *log_tail_detail(Instance *i, const char *what) {
  g_autofree char *serial = g_build_filename(i->dir, "serial.log", NULL);
  g_autofree char *qlog = g_build_filename(i->dir, "qemu.log", NULL);
  g_autofree char *tail = oakuk_qemu_serial_tail(serial, 10);
  g_autofree char *qtail = oakuk_qemu_serial_tail(qlog, 3);
  g_autofree char *crash = oakuk_qemu_serial_crash_line(serial);
  GString *d = g_string_new(what);
  if (*qtail)
    g_string_append_printf(d, "; qemu: %s", qtail);
  if (crash && !strstr(tail, crash))
    g_string_append_printf(d, "; crash: %s", crash);
  if (*tail)
    g_string_append_printf(d, "; last serial lines:\n%s", tail);
  else
    g_string_append(d, "; the serial log is empty");
  return g_string_free(d, FALSE);
}

/* wait_status: from waitpid, or -1 when unknown (an adopted process). */
static void on_exited(Instance *i, int wait_status) {
  if (i->exited)
    return;
  i->exited = true;
  i->pid = 0;
  clear_timer(i);
  oakuk_proc_watch_clear(&i->watch);
  qmp_close(i);
  cgroup_remove(&i->cg);
  if (i->stopping) {
    finish_undeploy(i);
    return;
  }
  g_autofree char *what = NULL;
  if (wait_status >= 0 && WIFSIGNALED(wait_status))
    what = g_strdup_printf("QEMU was killed by signal %d", WTERMSIG(wait_status));
  else if (wait_status >= 0)
    what = g_strdup_printf("QEMU exited with code %d", WEXITSTATUS(wait_status));
  else
    what = g_strdup("QEMU exited");
  if (i->fail_reason) {
    char *w = g_strdup_printf("%s (%s)", i->fail_reason, what);
    g_free(what);
    what = w;
  }
  g_autofree char *detail = log_tail_detail(i, what);
  g_autofree char *serial = g_build_filename(i->dir, "serial.log", NULL);
  g_autofree char *crash = oakuk_qemu_serial_crash_line(serial);
  /* QEMU exits 0 even when the guest failed: the serial log is the judge. */
  gboolean clean = (wait_status < 0 || (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0)) && !crash;
  int32_t status = !i->running ? OAKUK_STATUS_FAILED
                   : (i->one_shot && clean) ? OAKUK_STATUS_COMPLETED
                                            : OAKUK_STATUS_DEAD;
  i->running = false;
  emit(i, status, detail);
}

static void exited_cb(int wait_status, gpointer data) {
  on_exited(data, wait_status);
}

/* ---- QMP ---- */

static gboolean qmp_send(Instance *i, const char *command) {
  if (!i->conn)
    return FALSE;
  g_autofree char *line = g_strdup_printf("{\"execute\": \"%s\"}\n", command);
  GOutputStream *out = g_io_stream_get_output_stream(G_IO_STREAM(i->conn));
  g_autoptr(GError) err = NULL;
  if (!g_output_stream_write_all(out, line, strlen(line), NULL, NULL, &err)) {
    g_debug("instance %s: QMP %s: %s", i->name, command, err->message);
    return FALSE;
  }
  return TRUE;
}

static void qmp_read_next(Instance *i);

static void qmp_on_message(Instance *i, JsonObject *o) {
  if (json_object_has_member(o, "QMP")) {
    qmp_send(i, "qmp_capabilities");
    return;
  }
  if (json_object_has_member(o, "return") && !i->running && !i->exited) {
    i->running = true;
    oakuk_proc_stat(i->pid, NULL, &i->last_ticks, NULL);
    i->last_time_us = g_get_monotonic_time();
    if (!i->stopping)
      emit(i, OAKUK_STATUS_RUNNING, NULL);
    return;
  }
  if (json_object_has_member(o, "event"))
    g_debug("instance %s: QMP event %s", i->name, json_object_get_string_member_with_default(o, "event", "?"));
  else if (json_object_has_member(o, "error"))
    g_debug("instance %s: QMP error reply", i->name);
}

static void qmp_on_line(GObject *src, GAsyncResult *res, gpointer data) {
  Instance *i = data;
  g_autoptr(GError) err = NULL;
  gsize len = 0;
  g_autofree char *line = g_data_input_stream_read_line_finish_utf8(G_DATA_INPUT_STREAM(src), res, &len, &err);
  if (g_error_matches(err, G_IO_ERROR, G_IO_ERROR_CANCELLED) || !i->q || i->exited) {
    inst_unref(i);
    return;
  }
  if (!line) { /* QEMU closed QMP: it is exiting; the exit watch reports it */
    g_debug("instance %s: QMP closed%s%s", i->name, err ? ": " : "", err ? err->message : "");
    inst_unref(i);
    return;
  }
  g_autoptr(JsonParser) p = json_parser_new();
  if (len <= 65536 && json_parser_load_from_data(p, line, (gssize)len, NULL) &&
      JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
    qmp_on_message(i, json_node_get_object(json_parser_get_root(p)));
  else
    g_debug("instance %s: unparsable QMP line ignored", i->name);
  qmp_read_next(i);
  inst_unref(i);
}

static void qmp_read_next(Instance *i) {
  if (!i->in)
    return;
  g_data_input_stream_read_line_async(i->in, G_PRIORITY_DEFAULT, i->cancel, qmp_on_line, inst_ref(i));
}

static gboolean qmp_retry(gpointer data) {
  Instance *i = data;
  g_source_unref(i->timer);
  i->timer = NULL;
  qmp_connect(i);
  return G_SOURCE_REMOVE;
}

static void qmp_give_up(Instance *i) {
  g_warning("instance %s: QEMU opened no QMP socket within %d s, killing it", i->name, QMP_WAIT_MS / 1000);
  g_free(i->fail_reason);
  i->fail_reason = g_strdup_printf("QEMU opened no QMP socket within %d s", QMP_WAIT_MS / 1000);
  if (i->pid > 0)
    kill(i->pid, SIGKILL); /* the exit watch reports FAILED with the logs */
}

static void qmp_on_connected(GObject *src, GAsyncResult *res, gpointer data) {
  Instance *i = data;
  g_autoptr(GError) err = NULL;
  GSocketConnection *conn = g_socket_client_connect_finish(G_SOCKET_CLIENT(src), res, &err);
  if (!i->q || i->exited || g_error_matches(err, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
    g_clear_object(&conn);
    inst_unref(i);
    return;
  }
  if (!conn) {
    /* The socket appears once QEMU has parsed its options; the exit watch catches a dead QEMU. */
    if (g_get_monotonic_time() > i->qmp_deadline)
      qmp_give_up(i);
    else
      i->timer = add_timeout(i, 50, qmp_retry);
    inst_unref(i);
    return;
  }
  i->conn = conn;
  i->in = g_data_input_stream_new(g_io_stream_get_input_stream(G_IO_STREAM(conn)));
  g_data_input_stream_set_newline_type(i->in, G_DATA_STREAM_NEWLINE_TYPE_ANY);
  qmp_read_next(i);
  inst_unref(i);
}

static void qmp_connect(Instance *i) {
  g_autofree char *path = g_build_filename(i->dir, "qmp.sock", NULL);
  g_autoptr(GSocketClient) c = g_socket_client_new();
  g_autoptr(GSocketAddress) addr = g_unix_socket_address_new(path);
  g_socket_client_connect_async(c, G_SOCKET_CONNECTABLE(addr), i->cancel, qmp_on_connected, inst_ref(i));
}

/* ---- stop ---- */

static gboolean stop_phase2(gpointer data) {
  Instance *i = data;
  g_source_unref(i->timer);
  i->timer = NULL;
  stop_step(i, 2);
  return G_SOURCE_REMOVE;
}

static gboolean stop_phase3(gpointer data) {
  Instance *i = data;
  g_source_unref(i->timer);
  i->timer = NULL;
  stop_step(i, 3);
  return G_SOURCE_REMOVE;
}

/* 1: ACPI power-down with grace; 2: QMP quit (or SIGTERM); 3: SIGKILL. */
static void stop_step(Instance *i, int phase) {
  if (i->exited || i->pid <= 0)
    return;
  clear_timer(i);
  if (phase == 1 && i->graceful_stop_s > 0 && i->conn && qmp_send(i, "system_powerdown")) {
    i->timer = add_timeout(i, (guint)i->graceful_stop_s * 1000, stop_phase2);
    return;
  }
  if (phase <= 2) {
    if (!qmp_send(i, "quit"))
      kill(i->pid, SIGTERM);
    i->timer = add_timeout(i, QUIT_GRACE_MS, stop_phase3);
    return;
  }
  g_debug("instance %s: still alive after quit, SIGKILL", i->name);
  kill(i->pid, SIGKILL);
}

/* ---- instance.json ---- */

static gboolean write_instance_json(Instance *i, GError **error) {
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "name");
  json_builder_add_string_value(b, i->name);
  json_builder_set_member_name(b, "pid");
  json_builder_add_int_value(b, i->pid);
  json_builder_set_member_name(b, "start_time");
  json_builder_add_int_value(b, (gint64)i->start_time);
  json_builder_set_member_name(b, "qmp_socket");
  g_autofree char *sock = g_build_filename(i->dir, "qmp.sock", NULL);
  json_builder_add_string_value(b, sock);
  json_builder_set_member_name(b, "one_shot");
  json_builder_add_boolean_value(b, i->one_shot);
  json_builder_set_member_name(b, "graceful_stop_s");
  json_builder_add_int_value(b, i->graceful_stop_s);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autofree char *text = json_to_string(root, TRUE);
  g_autofree char *path = g_build_filename(i->dir, "instance.json", NULL);
  return g_file_set_contents(path, text, -1, error);
}

/* ---- deploy ---- */

typedef struct {
  int procs[3];
  int nprocs;
  int netns;
} ChildSetup;

/* Runs in the child between fork and exec: only async-signal-safe calls. Joins the cgroups
 * first so no QEMU thread ever runs outside them, then the network namespace. */
static void child_setup(gpointer data) {
  ChildSetup *c = data;
  for (int k = 0; k < c->nprocs; k++)
    if (write(c->procs[k], "0", 1) != 1) {
      static const char msg[] = "oakuk: cannot join the instance cgroup\n";
      (void)!write(2, msg, sizeof msg - 1);
      _exit(127);
    }
  if (c->netns >= 0 && setns(c->netns, CLONE_NEWNET) != 0) {
    static const char msg[] = "oakuk: setns into the instance network namespace failed\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(127);
  }
}

static void close_setup(ChildSetup *c) {
  for (int k = 0; k < c->nprocs; k++)
    close(c->procs[k]);
  if (c->netns >= 0)
    close(c->netns);
}

static gboolean open_setup(Instance *i, ChildSetup *c, GError **error) {
  c->nprocs = 0;
  c->netns = -1;
  const char *dirs[] = {i->cg.v2, i->cg.mem, i->cg.cpu};
  for (size_t k = 0; k < G_N_ELEMENTS(dirs); k++) {
    if (!dirs[k])
      continue;
    g_autofree char *p = g_build_filename(dirs[k], "cgroup.procs", NULL);
    int fd = open(p, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
      close_setup(c);
      return set_io_error(error, errno, "open %s", p);
    }
    c->procs[c->nprocs++] = fd;
  }
  const char *ns = i->spec->netns_path;
  if (ns && (c->netns = open(ns, O_RDONLY | O_CLOEXEC)) < 0) {
    int e = errno;
    close_setup(c);
    return set_io_error(error, e, "open network namespace %s", ns);
  }
  return TRUE;
}

static gboolean spawn_qemu(Instance *i, GError **error) {
  ChildSetup cs;
  if (!open_setup(i, &cs, error))
    return FALSE;
  g_autofree char *logpath = g_build_filename(i->dir, "qemu.log", NULL);
  int logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (logfd < 0) {
    close_setup(&cs);
    return set_io_error(error, errno, "create %s", logpath);
  }
  GPid pid = 0;
  gboolean ok = g_spawn_async_with_pipes_and_fds(
      NULL, (const char *const *)i->argv->pdata, NULL,
      G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDIN_FROM_DEV_NULL | G_SPAWN_STDOUT_TO_DEV_NULL, child_setup, &cs, -1, -1,
      logfd, NULL, NULL, 0, &pid, NULL, NULL, NULL, error);
  close(logfd);
  close_setup(&cs);
  if (!ok)
    return FALSE;
  i->pid = pid;
  oakuk_proc_stat(pid, NULL, NULL, &i->start_time);
  oakuk_proc_watch_child(&i->watch, pid, i->q->rt->context, exited_cb, inst_ref(i), (GDestroyNotify)inst_unref);
  return TRUE;
}

static void prepare_thread(GTask *task, gpointer src, gpointer data, GCancellable *cancel) {
  Instance *i = data;
  GError *err = NULL;
  g_autofree char *files = g_build_filename(i->dir, "files", NULL);
  if (oakuk_rm_rf(i->dir, &err) && g_mkdir_with_parents(i->dir, 0700) != 0)
    set_io_error(&err, errno, "create %s", i->dir);
  if (err || (i->spec->files_dir && !copy_tree(i->spec->files_dir, files, &err)) ||
      !cgroup_create(&i->cg, oakuk_qemu_memory_limit_mb(i->spec->memory_mb, i->spec->accel), i->spec->vcpus, &err)) {
    g_task_return_error(task, err);
    return;
  }
  g_task_return_boolean(task, TRUE);
}

static void prepared(GObject *src, GAsyncResult *res, gpointer data) {
  Instance *i = g_task_get_task_data(G_TASK(res));
  g_autoptr(GError) err = NULL;
  i->preparing = false;
  gboolean ok = g_task_propagate_boolean(G_TASK(res), &err);
  if (!i->q) { /* the runtime went away meanwhile */
    cgroup_remove(&i->cg);
    return;
  }
  if (i->stopping) {
    i->exited = true;
    finish_undeploy(i);
    return;
  }
  if (ok && spawn_qemu(i, &err) && write_instance_json(i, &err)) {
    i->qmp_deadline = g_get_monotonic_time() + QMP_WAIT_MS * 1000;
    qmp_connect(i);
    return;
  }
  g_autofree char *detail = g_strdup_printf("instance %s: %s", i->name, err->message);
  g_warning("%s", detail);
  if (i->pid > 0) {
    i->fail_reason = g_strdup(err->message);
    kill(i->pid, SIGKILL); /* the exit watch then reports FAILED with the logs */
    return;
  }
  i->exited = true;
  cgroup_remove(&i->cg);
  emit(i, OAKUK_STATUS_FAILED, detail);
}

static Instance *instance_new(QemuRuntime *q, const char *name) {
  Instance *i = g_new0(Instance, 1);
  i->refcount = 1;
  i->q = q;
  i->name = g_strdup(name);
  i->dir = g_build_filename(q->instances_dir, name, NULL);
  i->watch = (OakukProcWatch)OAKUK_PROC_WATCH_INIT;
  i->cancel = g_cancellable_new();
  g_hash_table_insert(q->instances, i->name, i);
  return i;
}

static gboolean q_deploy(oakuk_runtime *rt, const oakuk_instance_spec *spec, GError **error) {
  QemuRuntime *q = rt->impl;
  const char *arch = spec->arch ? spec->arch : oakuk_qemu_caps_host_arch(q->caps);
  int32_t accel = oakuk_qemu_caps_accel_for_arch(q->caps, arch);
  const char *path = oakuk_qemu_caps_qemu_path(q->caps, arch);
  if (!path)
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EUNSUPPORTED, "instance %s: no qemu-system-%s on this node",
                       spec->name, oakuk_qemu_arch_suffix(arch) ? oakuk_qemu_arch_suffix(arch) : arch), FALSE;
  if (accel < spec->accel || accel == OAKUK_ACCEL_NONE)
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EUNSUPPORTED,
                       "instance %s: %s guests with %s are not available here (KVM: %s; emulation %s)", spec->name,
                       arch, oakuk_accel_name(spec->accel) ? oakuk_accel_name(spec->accel) : "no accel",
                       oakuk_qemu_caps_kvm(q->caps) ? "usable" : oakuk_qemu_caps_kvm_reason(q->caps),
                       accel == OAKUK_ACCEL_TCG ? "allowed" : "not allowed"), FALSE;
  if (spec->netns_path && !g_file_test(spec->netns_path, G_FILE_TEST_EXISTS))
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "instance %s: network namespace %s does not exist",
                       spec->name, spec->netns_path), FALSE;
  g_autofree char *dir = g_build_filename(q->instances_dir, spec->name, NULL);
  GPtrArray *argv = oakuk_qemu_build_argv_internal(spec, dir, path, error);
  if (!argv)
    return FALSE;
  Instance *i = instance_new(q, spec->name);
  i->argv = argv;
  i->spec = oakuk_instance_spec_copy(spec);
  i->one_shot = spec->one_shot;
  i->graceful_stop_s = spec->graceful_stop_s;
  if (!cgroup_paths(&i->cg, i->name, error)) {
    detach(i);
    return FALSE;
  }
  i->preparing = true;
  oakuk_runtime_emit(rt, i->name, OAKUK_STATUS_CREATING, NULL);
  GTask *task = g_task_new(NULL, NULL, prepared, NULL);
  g_task_set_task_data(task, inst_ref(i), (GDestroyNotify)inst_unref);
  g_task_run_in_thread(task, prepare_thread);
  g_object_unref(task);
  return TRUE;
}

/* ---- undeploy, stats, adopt ---- */

static Instance *lookup(QemuRuntime *q, const char *name, GError **error) {
  Instance *i = g_hash_table_lookup(q->instances, name);
  if (!i)
    g_set_error(error, OAKUK_ERROR, -OAKUK_ENOTFOUND, "instance %s: not run by this runtime", name);
  return i;
}

static gboolean q_undeploy(oakuk_runtime *rt, const char *name, GError **error) {
  Instance *i = lookup(rt->impl, name, error);
  if (!i)
    return FALSE;
  if (i->stopping)
    return TRUE;
  i->stopping = true;
  if (i->preparing)
    return TRUE; /* prepared() finishes the undeploy */
  if (i->exited || i->pid <= 0) {
    i->exited = true;
    finish_undeploy(i);
    return TRUE;
  }
  stop_step(i, 1);
  return TRUE;
}

static gboolean q_stats(oakuk_runtime *rt, const char *name, double *cpu, int64_t *rss, GError **error) {
  Instance *i = lookup(rt->impl, name, error);
  if (!i)
    return FALSE;
  guint64 ticks = 0;
  if (i->pid <= 0 || !oakuk_proc_stat(i->pid, NULL, &ticks, NULL))
    return g_set_error(error, OAKUK_ERROR, -OAKUK_ENOTFOUND, "instance %s: not running", name), FALSE;
  gint64 now = g_get_monotonic_time();
  double secs = (double)(now - i->last_time_us) / 1e6;
  long hz = sysconf(_SC_CLK_TCK);
  *cpu = (secs > 0 && ticks >= i->last_ticks) ? (double)(ticks - i->last_ticks) / (double)hz / secs * 100.0 : 0.0;
  i->last_ticks = ticks;
  i->last_time_us = now;
  *rss = proc_rss_kb(i->pid);
  return TRUE;
}

static gboolean q_cgroup_memory(oakuk_runtime *rt, const char *name, int64_t *kb, GError **error) {
  Instance *i = lookup(rt->impl, name, error);
  if (!i)
    return FALSE;
  int64_t b = i->exited ? -1 : cgroup_memory_bytes(&i->cg);
  if (b < 0)
    return g_set_error(error, OAKUK_ERROR, -OAKUK_ENOTFOUND, "instance %s: no cgroup (not running)", name), FALSE;
  *kb = b / 1024;
  return TRUE;
}

static int64_t q_pid(oakuk_runtime *rt, const char *name) {
  Instance *i = g_hash_table_lookup(((QemuRuntime *)rt->impl)->instances, name);
  return i && !i->exited ? i->pid : 0;
}

/* Adopts the instance in dir; returns TRUE when its QEMU is still alive. */
static gboolean adopt_one(gpointer impl, const char *name) {
  QemuRuntime *q = impl;
  g_autofree char *dir = g_build_filename(q->instances_dir, name, NULL);
  g_autofree char *path = g_build_filename(dir, "instance.json", NULL);
  g_autoptr(JsonParser) p = json_parser_new();
  g_autoptr(GError) err = NULL;
  if (!oakuk_instance_name_is_valid(name) || !json_parser_load_from_file(p, path, &err) ||
      !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
    /* A deploy interrupted before QEMU started, or foreign files: nothing to adopt. */
    g_debug("instances/%s: no usable instance.json, removed", name);
    oakuk_rm_rf(dir, NULL);
    return FALSE;
  }
  JsonObject *o = json_node_get_object(json_parser_get_root(p));
  Instance *i = instance_new(q, name);
  i->pid = (GPid)json_object_get_int_member_with_default(o, "pid", 0);
  i->start_time = (guint64)json_object_get_int_member_with_default(o, "start_time", 0);
  i->one_shot = json_object_get_boolean_member_with_default(o, "one_shot", FALSE);
  i->graceful_stop_s = (int32_t)json_object_get_int_member_with_default(o, "graceful_stop_s", 0);
  cgroup_paths(&i->cg, name, NULL);
  oakuk_runtime_track(q->rt, name);
  guint64 start = 0;
  char state = 0;
  /* The start time guards against a recycled pid now belonging to another process. */
  if (i->pid > 0 && oakuk_proc_stat(i->pid, &state, NULL, &start) && start == i->start_time && state != 'Z') {
    i->running = false;
    oakuk_proc_watch_adopted(&i->watch, i->pid, i->start_time, i->q->rt->context, exited_cb, inst_ref(i),
                             (GDestroyNotify)inst_unref);
    i->qmp_deadline = g_get_monotonic_time() + QMP_WAIT_MS * 1000;
    qmp_connect(i);
    return TRUE;
  }
  i->running = true; /* it ran: judge its end like any other exit */
  i->pid = 0;
  on_exited(i, -1);
  return FALSE;
}

static int q_adopt(oakuk_runtime *rt, GError **error) {
  QemuRuntime *q = rt->impl;
  return oakuk_adopt_dir(q->instances_dir, q->instances, adopt_one, q, error);
}

static void q_finalize(oakuk_runtime *rt) {
  QemuRuntime *q = rt->impl;
  GList *all = g_hash_table_get_values(q->instances);
  for (GList *l = all; l; l = l->next) {
    Instance *i = inst_ref(l->data);
    gboolean stop = !rt->keep_instances && !i->exited && i->pid > 0;
    GPid pid = i->pid;
    gboolean own = oakuk_proc_watch_active(&i->watch) && i->watch.child;
    detach(i);
    i->q = NULL;
    if (stop)
      oakuk_proc_kill_wait(pid, own);
    if (!rt->keep_instances && !i->preparing) {
      cgroup_remove(&i->cg);
      oakuk_rm_rf(i->dir, NULL);
    }
    inst_unref(i);
  }
  g_list_free(all);
  g_hash_table_unref(q->instances);
  oakuk_qemu_caps_unref(q->caps);
  g_free(q->instances_dir);
  g_free(q);
}

static const OakukRuntimeClass qemu_class = {
    .virt = OAKUK_VIRT_UNIKERNEL,
    .deploy = q_deploy,
    .undeploy = q_undeploy,
    .stats = q_stats,
    .cgroup_memory = q_cgroup_memory,
    .adopt = q_adopt,
    .pid = q_pid,
    .finalize = q_finalize,
};

OAKUK_API oakuk_runtime *oakuk_qemu_runtime_new(const char *state_dir, const oakuk_qemu_options *opts,
                                                oakuk_error **error) {
  g_return_val_if_fail(state_dir != NULL, NULL);
  oakuk_qemu_caps *caps = NULL;
  if (oakuk_qemu_probe(&caps, opts, error) < 0)
    return NULL;
  QemuRuntime *q = g_new0(QemuRuntime, 1);
  q->caps = caps;
  q->instances_dir = g_build_filename(state_dir, "instances", NULL);
  q->instances = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, (GDestroyNotify)inst_unref);
  if (g_mkdir_with_parents(q->instances_dir, 0700) != 0) {
    oakuk_set_error(error, OAKUK_EIO, errno, "state_dir", "create %s: %s", q->instances_dir, g_strerror(errno));
    oakuk_qemu_caps_unref(caps);
    g_hash_table_unref(q->instances);
    g_free(q->instances_dir);
    g_free(q);
    return NULL;
  }
  q->rt = oakuk_runtime_alloc(&qemu_class, q);
  return q->rt;
}

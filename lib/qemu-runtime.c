/* Unikernel runtime, part 2 (docs/architecture.md §10.1, §13): the QEMU backend of the instance lifecycle in
 * runtime.c. Each instance lives in <state_dir>/instances/<name>/ (serial.log, qmp.sock, qemu.log,
 * instance.json, files/), runs in its netns (setns before exec) and in its own cgroups, starts
 * paused and is driven over QMP.
 *
 * Sandbox: QEMU runs under -sandbox (qemu-private.h) and, with run_as, as that unprivileged user
 * from its first instruction. QEMU 7.2 installs its seccomp filter before -runas would change the
 * uid, and elevateprivileges=deny then kills that change (SIGSYS); so the forked child takes the
 * user's identity itself, after joining the cgroups and the netns, and the runtime opens what
 * QEMU needs beforehand and passes descriptors (the kernel, initrd and files/ by /proc/self/fd,
 * the serial log by -add-fd, the QMP socket listening, the tap attached in the netns, vhost-net). */
#include "net-private.h"
#include "qemu-private.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <gio/gunixfdmessage.h>
#include <gio/gunixsocketaddress.h>
#include <glib/gstdio.h>
#include <grp.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <netlink/route/link.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#define QMP_WAIT_MS 30000 /* QEMU that has not let its guest run (QMP) within this is considered failed */
/* QEMU makes its QMP socket within a few ms of its start: look often, RUNNING waits for it. */
#define QMP_RETRY_MS 5

typedef struct {
  oakuk_qemu_caps *caps;
  char *run_as;     /* NULL: QEMU keeps the runtime's uid */
  GPtrArray *pools; /* Pool* (oakuk_runtime_pool_set) */
  guint64 pool_seq;
} QemuRuntime;

typedef struct {
  char *v2;  /* unified hierarchy directory, or NULL */
  char *mem; /* v1 memory controller directory */
  char *cpu; /* v1 cpu controller directory */
} Cgroup;

/* Snapshot start (oakuk_instance_spec_set_snapshot), in order. */
typedef enum {
  SNAP_NONE,    /* no snapshot start, or done with it */
  SNAP_RESTORE, /* QEMU restores the snapshot (-incoming): RUNNING once the guest resumes */
  SNAP_SAVE,    /* booted: saved at the first readiness */
  SNAP_SAVING,  /* paused and being saved */
  SNAP_CONT,    /* saved (or not), the guest is let run again */
} SnapMode;

#define SNAP_FDNAME "oakuk-snapshot"
#define SNAP_POLL_MS 2      /* query-migrate while saving */
#define SNAP_SAVE_MAX_S 120 /* a save still going after this is cancelled */

typedef struct {
  GPtrArray *argv;
  Cgroup cg;
  gboolean drop;      /* QEMU takes user's identity */
  OakukQemuUser user; /* with drop */
  gboolean adopted;   /* already running: no "cont" */
  GCancellable *cancel;
  GSocketConnection *conn;
  GDataInputStream *in;
  gint64 qmp_deadline;
  GSource *qmp_timer;
  GSource *handshake_timer; /* fails a QEMU that never lets its guest run */
  GSource *drain_timer;     /* bounds the wait for QMP's last lines after QEMU was reaped */
  guint64 last_ticks;
  gint64 last_time_us;
  SnapMode snap;
  char *snap_path;      /* the snapshot */
  char *snap_tmp;       /* while saving: the file QEMU writes, renamed to snap_path when complete */
  int snap_fd;          /* while saving: ours of snap_tmp, -1 otherwise */
  gint64 snap_deadline; /* while saving */
  GSource *snap_timer;  /* the next query-migrate */
  /* The pool (oakuk_runtime_pool_set). */
  gboolean pool_entry;          /* this is a pooled QEMU, not an instance */
  char *pool_tap;               /* a pooled QEMU's tap, in the runtime's network namespace */
  struct OakukInstance *pooled; /* an instance's: the pooled QEMU it takes over (check -> prepare) */
  gboolean from_pool;           /* an instance's: it took one over */
  gboolean swap_done;           /* ... and its tap is in the instance's namespace (pool_swap_done) */
  gboolean load_done;           /* the snapshot is loaded: the guest may run once swap_done */
} QemuData;

static QemuData *qd(OakukInstance *i) {
  return i->data;
}

static void cgroup_clear(Cgroup *cg) {
  g_clear_pointer(&cg->v2, g_free);
  g_clear_pointer(&cg->mem, g_free);
  g_clear_pointer(&cg->cpu, g_free);
}

static void pool_entry_release(OakukInstance *p, gboolean kill_it);

static void data_free(void *data) {
  QemuData *d = data;
  if (d->pooled) { /* taken over by an instance that never got to prepare */
    pool_entry_release(d->pooled, TRUE);
    oakuk_instance_unref(d->pooled);
  }
  g_free(d->pool_tap);
  if (d->argv)
    g_ptr_array_unref(d->argv);
  oakuk_qemu_user_clear(&d->user);
  cgroup_clear(&d->cg);
  g_clear_object(&d->cancel);
  if (d->snap_fd >= 0)
    close(d->snap_fd);
  g_free(d->snap_path);
  g_free(d->snap_tmp);
  g_free(d);
}

static gboolean cgroup_paths(Cgroup *cg, const char *name, GError **error);

static void q_init(OakukInstance *i) {
  QemuData *d = g_new0(QemuData, 1);
  d->cancel = g_cancellable_new();
  d->snap_fd = -1;
  cgroup_paths(&d->cg, i->name, NULL);
  i->data = d;
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
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EPERM, "copy %s: not a regular file, directory or link",
                       src),
           FALSE;
  g_autoptr(GFile) fs = g_file_new_for_path(src);
  g_autoptr(GFile) fd = g_file_new_for_path(dst);
  return g_file_copy(fs, fd, G_FILE_COPY_NOFOLLOW_SYMLINKS | G_FILE_COPY_ALL_METADATA, NULL, NULL, NULL,
                     error);
}

/* ---- the user QEMU runs as ---- */

gboolean oakuk_qemu_user_lookup(const char *run_as, OakukQemuUser *user, GError **error) {
  memset(user, 0, sizeof *user);
  long size = sysconf(_SC_GETPW_R_SIZE_MAX);
  g_autofree char *buf = g_malloc(size > 0 ? (gsize)size * 4 : 65536);
  gsize buflen = size > 0 ? (gsize)size * 4 : 65536;
  struct passwd pw, *found = NULL;
  char *end = NULL;
  guint64 num = g_ascii_strtoull(run_as, &end, 10);
  int rc = *run_as && end && *end == '\0' && num <= G_MAXUINT32
               ? getpwuid_r((uid_t)num, &pw, buf, buflen, &found)
               : getpwnam_r(run_as, &pw, buf, buflen, &found);
  if (rc != 0 || found == NULL)
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL,
                       "run_as: no user \"%s\" on this node: create an unprivileged one for QEMU (e.g. "
                       "useradd --system --no-create-home --shell /usr/sbin/nologin %s); QEMU never "
                       "falls back to root",
                       run_as, *run_as ? run_as : "oakuk-qemu"),
           FALSE;
  if (pw.pw_uid == 0)
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL,
                       "run_as: \"%s\" is root (uid 0): QEMU must run as an unprivileged user", run_as),
           FALSE;
  user->uid = pw.pw_uid;
  user->gid = pw.pw_gid;
  user->name = g_strdup(pw.pw_name);
  user->groups = g_array_new(FALSE, FALSE, sizeof(gid_t));
  int n = 32;
  for (;;) {
    g_array_set_size(user->groups, (guint)n);
    int got = n;
    if (getgrouplist(pw.pw_name, pw.pw_gid, (gid_t *)(void *)user->groups->data, &got) >= 0) {
      g_array_set_size(user->groups, (guint)got);
      break;
    }
    n = got > n ? got : n * 2;
  }
  return TRUE;
}

void oakuk_qemu_user_clear(OakukQemuUser *user) {
  g_clear_pointer(&user->groups, g_array_unref);
  g_clear_pointer(&user->name, g_free);
}

gboolean oakuk_qemu_user_can_read(const OakukQemuUser *user, const struct stat *st) {
  if (st->st_uid == user->uid)
    return (st->st_mode & S_IRUSR) != 0;
  gboolean member = st->st_gid == user->gid;
  for (guint k = 0; !member && user->groups && k < user->groups->len; k++)
    member = g_array_index(user->groups, gid_t, k) == st->st_gid;
  return (st->st_mode & (member ? S_IRGRP : S_IROTH)) != 0;
}

/* The files QEMU reads through /proc/self/fd must be readable by its user there. */
static gboolean check_readable(const char *name, const OakukQemuUser *user, const char *what,
                               const char *path, GError **error) {
  struct stat st;
  if (path == NULL)
    return TRUE;
  if (stat(path, &st) != 0)
    return set_io_error(error, errno, "instance %s: %s %s", name, what, path);
  if (!oakuk_qemu_user_can_read(user, &st))
    return g_set_error(
               error, OAKUK_ERROR, -OAKUK_EPERM,
               "instance %s: %s %s is not readable by user %s (run_as), as whom QEMU runs (mode %04o, "
               "owner %u:%u)",
               name, what, path, user->name, (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid,
               (unsigned)st.st_gid),
           FALSE;
  return TRUE;
}

static uid_t chown_uid;
static gid_t chown_gid;

static int chown_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  return lchown(path, chown_uid, chown_gid) == 0 ? 0 : -1;
}

/* The per-instance files/ copy belongs to QEMU's user: 9p with security_model=none reads and
 * writes it with QEMU's own uid. */
static gboolean chown_tree(const char *dir, const OakukQemuUser *user, GError **error) {
  static GMutex lock; /* nftw has no user data: the ids go through statics */
  g_mutex_lock(&lock);
  chown_uid = user->uid;
  chown_gid = user->gid;
  int rc = nftw(dir, chown_one, 32, FTW_PHYS);
  int e = errno;
  g_mutex_unlock(&lock);
  if (rc != 0)
    return set_io_error(error, e, "give %s to user %s", dir, user->name);
  return TRUE;
}

/* ---- cgroups ---- */

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
                       !mem ? "memory" : "cpu"),
           FALSE;
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
  return write_file(limit, bytes, error) && write_file(period, "100000", error) &&
         write_file(quota, q, error);
}

static void cgroup_remove(const Cgroup *cg) {
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

/* ---- QMP ---- */

static void qmp_connect(OakukInstance *i);

/* Sends one command: id names its answer; arguments is a JSON object's text or NULL; fd >= 0 goes
 * along in the same message (SCM_RIGHTS), for getfd. */
static gboolean qmp_send_full(OakukInstance *i, const char *id, const char *command, const char *arguments,
                              int fd) {
  QemuData *d = qd(i);
  if (!d->conn)
    return FALSE;
  g_autofree char *line = g_strdup_printf("{\"execute\": \"%s\", \"id\": \"%s\"%s%s}\n", command, id,
                                          arguments ? ", \"arguments\": " : "", arguments ? arguments : "");
  g_autoptr(GError) err = NULL;
  gboolean ok;
  if (fd >= 0) {
    g_autoptr(GSocketControlMessage) msg = g_unix_fd_message_new();
    GOutputVector v = {line, strlen(line)};
    ok = g_unix_fd_message_append_fd(G_UNIX_FD_MESSAGE(msg), fd, &err) &&
         g_socket_send_message(g_socket_connection_get_socket(d->conn), NULL, &v, 1, &msg, 1,
                               G_SOCKET_MSG_NONE, NULL, &err) == (gssize)v.size;
    if (ok == FALSE && err == NULL)
      g_set_error(&err, G_IO_ERROR, G_IO_ERROR_FAILED, "short write");
  } else {
    GOutputStream *out = g_io_stream_get_output_stream(G_IO_STREAM(d->conn));
    ok = g_output_stream_write_all(out, line, strlen(line), NULL, NULL, &err);
  }
  if (!ok)
    g_debug("instance %s: QMP %s: %s", i->name, command, err->message);
  return ok;
}

static gboolean qmp_send(OakukInstance *i, const char *command) {
  return qmp_send_full(i, command, command, NULL, -1);
}

static void qmp_close(OakukInstance *i) {
  QemuData *d = qd(i);
  if (!d)
    return;
  g_cancellable_cancel(d->cancel);
  GSource **timers[] = {&d->qmp_timer, &d->handshake_timer, &d->drain_timer, &d->snap_timer};
  for (size_t k = 0; k < G_N_ELEMENTS(timers); k++) {
    if (*timers[k]) {
      g_source_destroy(*timers[k]);
      g_source_unref(*timers[k]);
      *timers[k] = NULL;
    }
  }
  if (d->conn)
    g_io_stream_close(G_IO_STREAM(d->conn), NULL, NULL);
  g_clear_object(&d->in);
  g_clear_object(&d->conn);
}

static const char *qmp_str(JsonObject *o, const char *key) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
             ? json_node_get_string(n)
             : NULL;
}

void oakuk_qmp_message_parse(JsonObject *o, OakukQmpMessage *out) {
  memset(out, 0, sizeof *out);
  out->id = qmp_str(o, "id");
  if (json_object_has_member(o, "QMP")) {
    out->kind = OAKUK_QMP_GREETING;
  } else if (json_object_has_member(o, "event")) {
    out->kind = OAKUK_QMP_EVENT;
    out->event = qmp_str(o, "event");
    JsonNode *dn = json_object_get_member(o, "data");
    JsonObject *data = dn && JSON_NODE_HOLDS_OBJECT(dn) ? json_node_get_object(dn) : NULL;
    if (g_strcmp0(out->event, "SHUTDOWN") == 0)
      out->shutdown_reason = qmp_str(data, "reason");
  } else if (json_object_has_member(o, "error")) {
    out->kind = OAKUK_QMP_ERROR;
  } else if (json_object_has_member(o, "return")) {
    out->kind = OAKUK_QMP_RETURN;
  } else {
    out->kind = OAKUK_QMP_UNKNOWN;
  }
}

static void qmp_guest_runs(OakukInstance *i);

static void qmp_on_event(OakukInstance *i, const OakukQmpMessage *m) {
  g_debug("instance %s: QMP event %s", i->name, m->event ? m->event : "?");
  if (g_strcmp0(m->event, "RESUME") == 0 && qd(i)->snap == SNAP_RESTORE) {
    /* The snapshot is loaded (QEMU resumes a restored guest only then; "cont" before that only
     * asks it to). What the guest printed and configured before it was saved is on the
     * template's console, not this one: its serial readiness was met then. */
    qd(i)->snap = SNAP_NONE;
    i->start_kind = qd(i)->from_pool ? OAKUK_START_POOLED : OAKUK_START_RESTORED;
    g_clear_pointer(&i->ready_text, g_free);
    g_clear_pointer(&i->uk_address, g_free);
    qmp_guest_runs(i);
  } else if (g_strcmp0(m->event, "SHUTDOWN") == 0) {
    g_free(i->shutdown_reason);
    i->shutdown_reason = g_strdup(m->shutdown_reason ? m->shutdown_reason : "");
  } else if (g_strcmp0(m->event, "GUEST_PANICKED") == 0) {
    i->panicked = TRUE;
  }
}

static void snap_on_reply(OakukInstance *i, const OakukQmpMessage *m, JsonObject *o);

/* The handshake: qmp_capabilities, then "cont" for a guest that starts paused, both sent as soon as
 * the socket connects (QEMU reads them after its greeting, in order): one round trip, not three. */
static void qmp_on_message(OakukInstance *i, JsonObject *o) {
  QemuData *d = qd(i);
  OakukQmpMessage m;
  oakuk_qmp_message_parse(o, &m);
  if (m.kind == OAKUK_QMP_EVENT && g_strcmp0(m.event, "MIGRATION") == 0 && d->snap == SNAP_RESTORE) {
    JsonNode *dn = json_object_get_member(o, "data");
    const char *status =
        dn && JSON_NODE_HOLDS_OBJECT(dn) ? qmp_str(json_node_get_object(dn), "status") : NULL;
    g_debug("instance %s: snapshot load %s", i->name, status ? status : "?");
    if (g_strcmp0(status, "completed") == 0) {
      d->load_done = TRUE;
      /* A pooled QEMU's guest runs once its tap is the instance's (pool_swap_done). */
      if ((!d->from_pool || d->swap_done) && !qmp_send_full(i, "snap-resume", "cont", NULL, -1))
        oakuk_instance_fail(i, "QMP: could not let the restored guest run (cont)");
    }
    return;
  }
  if (m.kind == OAKUK_QMP_EVENT) {
    qmp_on_event(i, &m);
    return;
  }
  if (m.id != NULL && g_str_has_prefix(m.id, "snap-") &&
      (m.kind == OAKUK_QMP_RETURN || m.kind == OAKUK_QMP_ERROR)) {
    snap_on_reply(i, &m, o);
    return;
  }
  if (m.kind == OAKUK_QMP_ERROR) {
    g_debug("instance %s: QMP %s failed", i->name, m.id ? m.id : "?");
    return;
  }
  if (m.kind != OAKUK_QMP_RETURN || m.id == NULL)
    return;
  if (strcmp(m.id, "qmp_capabilities") == 0 && d->adopted)
    qmp_guest_runs(i);
  else if (strcmp(m.id, "cont") == 0 && d->snap != SNAP_RESTORE)
    qmp_guest_runs(i);
}

/* The guest runs: RUNNING. */
static void qmp_guest_runs(OakukInstance *i) {
  QemuData *d = qd(i);
  if (!d->adopted) {
    oakuk_proc_stat(i->pid, NULL, &d->last_ticks, NULL);
    d->last_time_us = g_get_monotonic_time();
  }
  if (d->handshake_timer) {
    g_source_destroy(d->handshake_timer);
    g_clear_pointer(&d->handshake_timer, g_source_unref);
  }
  oakuk_instance_running(i);
}

static void qmp_read_next(OakukInstance *i);

static void qmp_on_line(GObject *src, GAsyncResult *res, gpointer data) {
  OakukInstance *i = data;
  g_autoptr(GError) err = NULL;
  gsize len = 0;
  g_autofree char *line =
      g_data_input_stream_read_line_finish_utf8(G_DATA_INPUT_STREAM(src), res, &len, &err);
  if (g_error_matches(err, G_IO_ERROR, G_IO_ERROR_CANCELLED) || !i->rt || i->state == OAKUK_INST_EXITED) {
    oakuk_instance_unref(i);
    return;
  }
  if (!line) { /* QEMU closed QMP: it is exiting; the exit watch reports it */
    g_debug("instance %s: QMP closed%s%s", i->name, err ? ": " : "", err ? err->message : "");
    if (i->draining)
      oakuk_instance_drained(i); /* everything it said is read */
    oakuk_instance_unref(i);
    return;
  }
  g_autoptr(JsonNode) msg = len <= 65536 ? oakuk_json_parse(line, len, NULL) : NULL;
  if (msg && JSON_NODE_HOLDS_OBJECT(msg))
    qmp_on_message(i, json_node_get_object(msg));
  else
    g_debug("instance %s: unparsable QMP line ignored", i->name);
  qmp_read_next(i);
  oakuk_instance_unref(i);
}

static void qmp_read_next(OakukInstance *i) {
  QemuData *d = qd(i);
  if (!d->in)
    return;
  g_data_input_stream_read_line_async(d->in, G_PRIORITY_DEFAULT, d->cancel, qmp_on_line,
                                      oakuk_instance_ref(i));
}

static gboolean drain_timed_out(gpointer data) {
  OakukInstance *i = data;
  QemuData *d = qd(i);
  g_clear_pointer(&d->drain_timer, g_source_unref);
  oakuk_instance_drained(i);
  return G_SOURCE_REMOVE;
}

/* QEMU was reaped, and its last QMP lines (the SHUTDOWN event and its reason, which tells a
 * guest's reset or panic from a power-off) may not be read yet: the child watch and the socket
 * are separate sources, and under load the exit can come first. The read in flight goes on until
 * QMP's end of file (QEMU's socket closed with it), 500 ms at most. */
static gboolean q_drain(OakukInstance *i) {
  QemuData *d = qd(i);
  if (d == NULL || d->in == NULL)
    return FALSE;
  d->drain_timer = g_timeout_source_new(500);
  g_source_set_callback(d->drain_timer, drain_timed_out, oakuk_instance_ref(i),
                        (GDestroyNotify)oakuk_instance_unref);
  g_source_attach(d->drain_timer, i->context);
  return TRUE;
}

static gboolean qmp_retry(gpointer data) {
  OakukInstance *i = data;
  QemuData *d = qd(i);
  g_source_unref(d->qmp_timer);
  d->qmp_timer = NULL;
  qmp_connect(i);
  return G_SOURCE_REMOVE;
}

static void qmp_on_connected(GObject *src, GAsyncResult *res, gpointer data) {
  OakukInstance *i = data;
  QemuData *d = qd(i);
  g_autoptr(GError) err = NULL;
  GSocketConnection *conn = g_socket_client_connect_finish(G_SOCKET_CLIENT(src), res, &err);
  if (!i->rt || i->state == OAKUK_INST_EXITED || g_error_matches(err, G_IO_ERROR, G_IO_ERROR_CANCELLED)) {
    g_clear_object(&conn);
    oakuk_instance_unref(i);
    return;
  }
  if (!conn) {
    /* The socket appears once QEMU has parsed its options; the exit watch catches a dead QEMU. */
    if (g_get_monotonic_time() > d->qmp_deadline) {
      g_autofree char *why = g_strdup_printf("QEMU opened no QMP socket within %d s", QMP_WAIT_MS / 1000);
      oakuk_instance_fail(i, why);
    } else {
      d->qmp_timer = g_timeout_source_new(QMP_RETRY_MS);
      g_source_set_callback(d->qmp_timer, qmp_retry, oakuk_instance_ref(i),
                            (GDestroyNotify)oakuk_instance_unref);
      g_source_attach(d->qmp_timer, i->context);
    }
    oakuk_instance_unref(i);
    return;
  }
  d->conn = conn;
  d->in = g_data_input_stream_new(g_io_stream_get_input_stream(G_IO_STREAM(conn)));
  g_data_input_stream_set_newline_type(d->in, G_DATA_STREAM_NEWLINE_TYPE_ANY);
  if (d->snap == SNAP_RESTORE) {
    g_autofree char *uri = g_strdup_printf("{\"uri\": \"fd:%d\"}", OAKUK_QEMU_FD_SNAPSHOT);
    if (!qmp_send(i, "qmp_capabilities") ||
        !qmp_send_full(i, "snap-events", "migrate-set-capabilities",
                       "{\"capabilities\": [{\"capability\": \"events\", \"state\": true}]}", -1) ||
        !qmp_send_full(i, "snap-incoming", "migrate-incoming", uri, -1))
      oakuk_instance_fail(i, "QMP: could not ask QEMU to load the snapshot");
  } else if (!qmp_send(i, "qmp_capabilities") || (!d->adopted && !qmp_send(i, "cont"))) {
    oakuk_instance_fail(i, "QMP: could not negotiate and let the guest run (cont)");
  }
  qmp_read_next(i);
  oakuk_instance_unref(i);
}

static void qmp_connect(OakukInstance *i) {
  QemuData *d = qd(i);
  g_autofree char *path = g_build_filename(i->dir, "qmp.sock", NULL);
  g_autoptr(GSocketClient) c = g_socket_client_new();
  g_autoptr(GSocketAddress) addr = g_unix_socket_address_new(path);
  g_socket_client_connect_async(c, G_SOCKET_CONNECTABLE(addr), d->cancel, qmp_on_connected,
                                oakuk_instance_ref(i));
}

static char *q_extra_detail(OakukInstance *i);
static gboolean q_spawn(OakukInstance *i, GError **error);
static OakukInstance *pool_claim(oakuk_runtime *rt, const char *snap_path);
static gboolean pool_take_over(OakukInstance *i);

/* ---- snapshot start (docs/unikernels.md "Snapshot start") ---- */

/* The snapshot's name: everything that goes into the guest. The argv holds no path of the
 * instance (descriptors come by number) but its -name; the kernel and initrd are named by path
 * and identified by their file's identity, since -kernel gives their descriptor's number. */
static char *snap_key(const oakuk_instance_spec *s, GPtrArray *argv, const char *qemu_version,
                      GError **error) {
  g_autoptr(GChecksum) c = g_checksum_new(G_CHECKSUM_SHA256);
#define SNAP_ADD(str) g_checksum_update(c, (const guchar *)(str), (gssize)strlen(str) + 1)
  SNAP_ADD("oakuk snapshot 1");
  SNAP_ADD(s->snapshot_scope ? s->snapshot_scope : "");
  SNAP_ADD(qemu_version ? qemu_version : "");
  for (guint k = 0; k + 1 < argv->len; k++)
    if (k == 0 || strcmp(argv->pdata[k - 1], "-name") != 0)
      SNAP_ADD((const char *)argv->pdata[k]);
  const char *files[] = {s->kernel, s->initrd};
  for (size_t k = 0; k < G_N_ELEMENTS(files); k++) {
    struct stat st;
    if (!files[k])
      continue;
    if (stat(files[k], &st) != 0)
      return set_io_error(error, errno, "instance %s: snapshot start: %s", s->name, files[k]), NULL;
    g_autofree char *id =
        g_strdup_printf("%s %ju %ju %jd %jd.%09ld", files[k], (uintmax_t)st.st_dev, (uintmax_t)st.st_ino,
                        (intmax_t)st.st_size, (intmax_t)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
    SNAP_ADD(id);
  }
#undef SNAP_ADD
  return g_strdup(g_checksum_get_string(c));
}

/* At deploy: restore when the snapshot exists, else boot and save it at the first readiness. */
static gboolean snap_choose(OakukInstance *i, const char *qemu_version, GError **error) {
  QemuData *d = qd(i);
  const oakuk_instance_spec *s = i->spec;
  if (s->files_dir)
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL,
                       "instance %s: snapshot start: the image shares files/ with the guest over 9p, which "
                       "QEMU cannot save (a migration blocker); boot it instead",
                       s->name),
           FALSE;
  if (s->readiness_tcp <= 0 && !s->readiness_serial)
    return g_set_error(
               error, OAKUK_ERROR, -OAKUK_EINVAL,
               "instance %s: snapshot start needs a readiness probe (a TCP port or a serial text): the "
               "snapshot is taken when the guest is ready",
               s->name),
           FALSE;
  g_autofree char *key = snap_key(s, d->argv, qemu_version, error);
  if (!key)
    return FALSE;
  if (g_mkdir_with_parents(s->snapshot_dir, 0700) != 0)
    return set_io_error(error, errno, "instance %s: snapshot directory %s", s->name, s->snapshot_dir);
  g_free(d->snap_path);
  d->snap_path = g_strdup_printf("%s/%s.snap", s->snapshot_dir, key);
  if (g_file_test(d->snap_path, G_FILE_TEST_IS_REGULAR)) {
    d->snap = SNAP_RESTORE;
    /* "defer": loaded once QMP asked for migration events (a restored guest is let run only
     * when its load completed: "cont" before that is lost, since QEMU takes the saved guest's
     * state, paused, at the end of the load). */
    g_ptr_array_insert(d->argv, (gint)d->argv->len - 1, g_strdup("-incoming"));
    g_ptr_array_insert(d->argv, (gint)d->argv->len - 1, g_strdup("defer"));
  } else {
    d->snap = SNAP_SAVE;
  }
  return TRUE;
}

static void snap_tmp_drop(QemuData *d) {
  if (d->snap_fd >= 0)
    close(d->snap_fd);
  d->snap_fd = -1;
  if (d->snap_tmp)
    unlink(d->snap_tmp);
  g_clear_pointer(&d->snap_tmp, g_free);
}

/* The save ended (why NULL: saved): the guest runs again; ready once QEMU confirms. */
static void snap_end(OakukInstance *i, const char *why) {
  QemuData *d = qd(i);
  if (why) {
    g_message("instance %s: snapshot %s not saved: %s", i->name, d->snap_path, why);
    snap_tmp_drop(d);
    g_free(i->start_note);
    i->start_note = g_strdup_printf("snapshot not saved: %s", why);
  } else if (i->start_kind == OAKUK_START_BOOT) {
    i->start_kind = OAKUK_START_BOOT_SAVED; /* (a failed restore stays said) */
  }
  d->snap = SNAP_CONT;
  if (!qmp_send_full(i, "snap-cont", "cont", NULL, -1))
    oakuk_instance_fail(i, "QMP: could not let the guest run again after saving its snapshot");
}

static gboolean snap_poll(gpointer data) {
  OakukInstance *i = data;
  QemuData *d = qd(i);
  g_clear_pointer(&d->snap_timer, g_source_unref);
  if (g_get_monotonic_time() > d->snap_deadline) {
    qmp_send_full(i, "snap-cancel", "migrate_cancel", NULL, -1);
    snap_end(i, "the save took longer than " G_STRINGIFY(SNAP_SAVE_MAX_S) " s");
  } else if (!qmp_send_full(i, "snap-query", "query-migrate", NULL, -1)) {
    snap_end(i, "QMP query-migrate could not be sent");
  }
  return G_SOURCE_REMOVE;
}

static const char *qmp_error_desc(JsonObject *o) {
  JsonNode *n = json_object_get_member(o, "error");
  return n && JSON_NODE_HOLDS_OBJECT(n) ? qmp_str(json_node_get_object(n), "desc") : NULL;
}

/* stop -> getfd -> migrate -> query-migrate until completed -> rename -> cont -> ready. */
static void snap_on_reply(OakukInstance *i, const OakukQmpMessage *m, JsonObject *o) {
  QemuData *d = qd(i);
  if (d->snap == SNAP_RESTORE) {
    /* A load that fails ends QEMU: the exit brings the cold boot (q_retry). */
    if (m->kind == OAKUK_QMP_ERROR) {
      const char *desc = qmp_error_desc(o);
      g_autofree char *why = g_strdup_printf("QMP %s: %s", m->id + strlen("snap-"), desc ? desc : "failed");
      oakuk_instance_fail(i, why);
    }
    return;
  }
  if (strcmp(m->id, "snap-cancel") == 0)
    return;
  if (strcmp(m->id, "snap-cont") == 0) {
    d->snap = SNAP_NONE;
    if (m->kind == OAKUK_QMP_ERROR)
      oakuk_instance_fail(i, "QMP: the guest did not run again after its snapshot (cont failed)");
    else
      oakuk_instance_ready(i);
    return;
  }
  if (d->snap != SNAP_SAVING)
    return;
  if (m->kind == OAKUK_QMP_ERROR) {
    const char *desc = qmp_error_desc(o);
    g_autofree char *why = g_strdup_printf("QMP %s: %s", m->id + strlen("snap-"), desc ? desc : "failed");
    snap_end(i, why);
    return;
  }
  if (strcmp(m->id, "snap-stop") == 0) {
    if (!qmp_send_full(i, "snap-getfd", "getfd", "{\"fdname\": \"" SNAP_FDNAME "\"}", d->snap_fd))
      snap_end(i, "QMP getfd could not be sent");
  } else if (strcmp(m->id, "snap-getfd") == 0) {
    if (!qmp_send_full(i, "snap-migrate", "migrate", "{\"uri\": \"fd:" SNAP_FDNAME "\"}", -1))
      snap_end(i, "QMP migrate could not be sent");
  } else if (strcmp(m->id, "snap-migrate") == 0 || strcmp(m->id, "snap-query") == 0) {
    JsonNode *rn = json_object_get_member(o, "return");
    JsonObject *r = rn && JSON_NODE_HOLDS_OBJECT(rn) ? json_node_get_object(rn) : NULL;
    const char *status = qmp_str(r, "status");
    if (g_strcmp0(status, "completed") == 0) {
      close(d->snap_fd);
      d->snap_fd = -1;
      if (rename(d->snap_tmp, d->snap_path) != 0) {
        g_autofree char *why = g_strdup_printf("rename %s: %s", d->snap_tmp, g_strerror(errno));
        snap_end(i, why);
        return;
      }
      g_clear_pointer(&d->snap_tmp, g_free);
      g_message("instance %s: snapshot saved as %s", i->name, d->snap_path);
      snap_end(i, NULL);
    } else if (g_strcmp0(status, "failed") == 0 || g_strcmp0(status, "cancelled") == 0) {
      const char *desc = qmp_str(r, "error-desc");
      snap_end(i, desc ? desc : status);
    } else {
      d->snap_timer = g_timeout_source_new(SNAP_POLL_MS);
      g_source_set_callback(d->snap_timer, snap_poll, oakuk_instance_ref(i),
                            (GDestroyNotify)oakuk_instance_unref);
      g_source_attach(d->snap_timer, i->context);
    }
  }
}

/* The first readiness of an instance that saves the snapshot: pause and save it first. */
static gboolean q_before_ready(OakukInstance *i) {
  QemuData *d = qd(i);
  if (d->snap == SNAP_SAVING || d->snap == SNAP_CONT)
    return TRUE;
  if (d->snap != SNAP_SAVE)
    return FALSE;
  d->snap_tmp = g_strdup_printf("%s.%s.tmp", d->snap_path, i->name);
  d->snap_fd = open(d->snap_tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (d->snap_fd < 0) {
    g_warning("instance %s: snapshot not saved: create %s: %s", i->name, d->snap_tmp, g_strerror(errno));
    g_clear_pointer(&d->snap_tmp, g_free);
    d->snap = SNAP_NONE;
    return FALSE;
  }
  d->snap = SNAP_SAVING;
  d->snap_deadline = g_get_monotonic_time() + SNAP_SAVE_MAX_S * G_USEC_PER_SEC;
  if (!qmp_send_full(i, "snap-stop", "stop", NULL, -1)) {
    snap_tmp_drop(d);
    d->snap = SNAP_NONE;
    return FALSE;
  }
  return TRUE;
}

/* A restore that ended before its guest ran: remove the snapshot and boot cold (saving anew). */
static gboolean q_retry(OakukInstance *i, int wait_status) {
  QemuData *d = qd(i);
  if (d->snap != SNAP_RESTORE)
    return FALSE;
  g_autofree char *qemu = q_extra_detail(i);
  g_autofree char *why = g_strdup_printf("restore from snapshot %s failed (%s); booted cold", d->snap_path,
                                         qemu ? qemu : "QEMU ended");
  g_message("instance %s: %s", i->name, why);
  if (unlink(d->snap_path) != 0 && errno != ENOENT)
    g_warning("instance %s: remove %s: %s", i->name, d->snap_path, g_strerror(errno));
  for (guint k = 0; k + 1 < d->argv->len; k++)
    if (strcmp(d->argv->pdata[k], "-incoming") == 0) {
      g_ptr_array_remove_range(d->argv, k, 2);
      break;
    }
  d->snap = SNAP_SAVE;
  i->start_kind = OAKUK_START_RESTORE_FAILED;
  g_free(i->start_note);
  i->start_note = g_steal_pointer(&why);
  g_object_unref(d->cancel);
  d->cancel = g_cancellable_new();
  g_autoptr(GError) err = NULL;
  if (!q_spawn(i, &err)) {
    g_warning("instance %s: cold boot after the failed restore: %s", i->name, err->message);
    return FALSE;
  }
  return TRUE;
}

/* ---- handlers ---- */

static gboolean q_check(OakukInstance *i, GError **error) {
  QemuRuntime *q = i->rt->impl;
  const oakuk_instance_spec *spec = i->spec;
  const char *arch = spec->arch ? spec->arch : oakuk_qemu_caps_host_arch(q->caps);
  int32_t accel = oakuk_qemu_caps_accel_for_arch(q->caps, arch);
  const char *path = oakuk_qemu_caps_qemu_path(q->caps, arch);
  if (!path)
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EUNSUPPORTED, "instance %s: no qemu-system-%s on this node",
                       spec->name, oakuk_qemu_arch_suffix(arch) ? oakuk_qemu_arch_suffix(arch) : arch),
           FALSE;
  if (accel < spec->accel || accel == OAKUK_ACCEL_NONE)
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EUNSUPPORTED,
                       "instance %s: %s guests with %s are not available here (KVM: %s; emulation %s)",
                       spec->name, arch,
                       oakuk_accel_name(spec->accel) ? oakuk_accel_name(spec->accel) : "no accel",
                       oakuk_qemu_caps_kvm(q->caps) ? "usable" : oakuk_qemu_caps_kvm_reason(q->caps),
                       accel == OAKUK_ACCEL_TCG ? "allowed" : "not allowed"),
           FALSE;
  if (spec->netns_path && !g_file_test(spec->netns_path, G_FILE_TEST_EXISTS))
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "instance %s: network namespace %s does not exist",
                       spec->name, spec->netns_path),
           FALSE;
  QemuData *d = qd(i);
  if (q->run_as) {
    /* Looked up at every deploy: the user may have been removed since the runtime started. */
    oakuk_qemu_user_clear(&d->user);
    if (!oakuk_qemu_user_lookup(q->run_as, &d->user, error))
      return g_prefix_error(error, "instance %s: ", spec->name), FALSE;
    d->drop = TRUE;
    if (!check_readable(spec->name, &d->user, "kernel", spec->kernel, error) ||
        !check_readable(spec->name, &d->user, "initrd", spec->initrd, error))
      return FALSE;
  }
  g_autofree char *flavor = NULL, *version = NULL;
  GPtrArray *argv = oakuk_qemu_build_argv_internal(spec, i->dir, path, TRUE, TRUE, &flavor, &version, error);
  if (!argv)
    return FALSE;
  d->argv = argv;
  if (spec->snapshot_dir && !snap_choose(i, oakuk_qemu_caps_qemu_version(q->caps, arch), error))
    return FALSE;
  if (d->snap == SNAP_RESTORE && !d->pool_entry && spec->netns_path)
    d->pooled = pool_claim(i->rt, d->snap_path);
  if (!d->cg.v2 && !d->cg.mem && !cgroup_paths(&d->cg, i->name, error))
    return FALSE;
  i->grace_s = spec->graceful_stop_s > 0 ? (guint)spec->graceful_stop_s : 0;
  /* lwIP in a Unikraft guest says which address it configured: the runtime watches for it. */
  if (g_strcmp0(flavor, "unikraft") == 0 && spec->netns_path && spec->ip) {
    i->uk_address = g_strdup(spec->ip);
    i->uk_version = g_steal_pointer(&version);
  }
  return TRUE;
}

static gboolean q_prepare(OakukInstance *i, GError **error) {
  QemuData *d = qd(i);
  if (d->pooled && pool_take_over(i))
    return TRUE;
  g_autofree char *files = g_build_filename(i->dir, "files", NULL);
  if (!oakuk_rm_rf(i->dir, error))
    return FALSE;
  if (g_mkdir_with_parents(i->dir, 0700) != 0)
    return set_io_error(error, errno, "create %s", i->dir);
  if (i->spec->files_dir && !copy_tree(i->spec->files_dir, files, error))
    return FALSE;
  if (i->spec->files_dir && d->drop && !chown_tree(files, &d->user, error))
    return FALSE;
  return cgroup_create(&d->cg, oakuk_qemu_memory_limit_mb(i->spec->memory_mb, i->spec->accel), i->spec->vcpus,
                       error);
}

typedef struct {
  int procs[3];
  int nprocs;
  int netns;
  gboolean drop;
  uid_t uid;
  gid_t gid;
  const gid_t *groups;
  size_t ngroups;
} ChildSetup;

static void child_fail(const char *msg, size_t len) {
  (void)!write(2, msg, len);
  _exit(127);
}
#define CHILD_FAIL(m) child_fail(m, sizeof m - 1)

/* Runs in the child between fork and exec: only async-signal-safe calls. Joins the cgroups
 * first so no QEMU thread ever runs outside them, then the network namespace, then takes the
 * unprivileged user's identity (raw system calls: only this thread exists here, and glibc's
 * wrappers would try to signal the parent's others), and no_new_privs. */
static void child_setup(gpointer data) {
  ChildSetup *c = data;
  for (int k = 0; k < c->nprocs; k++)
    if (write(c->procs[k], "0", 1) != 1)
      CHILD_FAIL("oakuk: cannot join the instance cgroup\n");
  if (c->netns >= 0 && setns(c->netns, CLONE_NEWNET) != 0)
    CHILD_FAIL("oakuk: setns into the instance network namespace failed\n");
  if (c->drop && (syscall(SYS_setgroups, c->ngroups, c->groups) != 0 ||
                  syscall(SYS_setresgid, c->gid, c->gid, c->gid) != 0 ||
                  syscall(SYS_setresuid, c->uid, c->uid, c->uid) != 0))
    CHILD_FAIL("oakuk: cannot take the run_as user's identity\n");
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    CHILD_FAIL("oakuk: cannot set no_new_privs\n");
}

static void close_setup(ChildSetup *c) {
  for (int k = 0; k < c->nprocs; k++)
    close(c->procs[k]);
  if (c->netns >= 0)
    close(c->netns);
}

/* The child's setup runs after GLib has put QEMU's descriptors in place (OAKUK_QEMU_FD_*, 3..10):
 * the descriptors it still uses must be above them. */
static int above_qemu_fds(int fd) {
  if (fd < 0 || fd > OAKUK_QEMU_FD_LAST)
    return fd;
  int high = fcntl(fd, F_DUPFD_CLOEXEC, OAKUK_QEMU_FD_LAST + 1);
  int e = errno;
  close(fd);
  errno = e;
  return high;
}

static gboolean open_setup(OakukInstance *i, ChildSetup *c, GArray *groups, GError **error) {
  QemuData *d = qd(i);
  memset(c, 0, sizeof *c);
  c->netns = -1;
  const char *dirs[] = {d->cg.v2, d->cg.mem, d->cg.cpu};
  for (size_t k = 0; k < G_N_ELEMENTS(dirs); k++) {
    if (!dirs[k])
      continue;
    g_autofree char *p = g_build_filename(dirs[k], "cgroup.procs", NULL);
    int fd = above_qemu_fds(open(p, O_WRONLY | O_CLOEXEC));
    if (fd < 0) {
      close_setup(c);
      return set_io_error(error, errno, "open %s", p);
    }
    c->procs[c->nprocs++] = fd;
  }
  const char *ns = i->spec->netns_path;
  if (ns && (c->netns = above_qemu_fds(open(ns, O_RDONLY | O_CLOEXEC))) < 0) {
    int e = errno;
    close_setup(c);
    return set_io_error(error, e, "open network namespace %s", ns);
  }
  if (d->drop) {
    c->drop = TRUE;
    c->uid = d->user.uid;
    c->gid = d->user.gid;
    g_array_append_vals(groups, d->user.groups->data, d->user.groups->len);
    /* A KVM guest's QEMU opens /dev/kvm itself (QEMU 7.2 takes no descriptor for it). */
    struct stat st;
    if (i->spec->accel == OAKUK_ACCEL_KVM && stat("/dev/kvm", &st) == 0)
      g_array_append_val(groups, st.st_gid);
    c->groups = (const gid_t *)(const void *)groups->data;
    c->ngroups = groups->len;
  }
  return TRUE;
}

/* ---- descriptors QEMU gets instead of paths ---- */

typedef struct {
  int src[OAKUK_QEMU_FD_LAST];
  int dst[OAKUK_QEMU_FD_LAST];
  int n;
} FdMap;

static void fdmap_close(FdMap *m) {
  for (int k = 0; k < m->n; k++)
    close(m->src[k]);
  m->n = 0;
}

static gboolean fdmap_open(FdMap *m, int target, const char *path, int flags, mode_t mode, const char *what,
                           GError **error) {
  int fd = open(path, flags | O_CLOEXEC, mode);
  if (fd < 0)
    return set_io_error(error, errno, "open %s %s", what, path);
  m->src[m->n] = fd;
  m->dst[m->n++] = target;
  return TRUE;
}

typedef struct {
  int netns;
  const char *name;
  int fd;
  int err;
  const char *what;
} TapJob;

/* Attaches to the instance's tap from inside its network namespace: a thread of its own, since
 * setns changes the calling thread's namespace, and this thread ends afterwards. */
static gpointer tap_thread(gpointer data) {
  TapJob *t = data;
  t->fd = -1;
  if (setns(t->netns, CLONE_NEWNET) != 0) {
    t->err = errno;
    t->what = "setns into the instance network namespace";
    return NULL;
  }
  int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    t->err = errno;
    t->what = "open /dev/net/tun";
    return NULL;
  }
  /* The flags QEMU uses when it opens a tap by name itself. */
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  g_strlcpy(ifr.ifr_name, t->name, IFNAMSIZ);
  ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
  /* EBUSY: the tap is still attached to the descriptor that created it (oakuk_net_tap_create),
   * which a process forked meanwhile by another thread (a QEMU or runc of a parallel start) holds
   * until its exec; that takes milliseconds. */
  int r;
  for (int tries = 0; (r = ioctl(fd, TUNSETIFF, &ifr)) != 0 && errno == EBUSY && tries < 200; tries++)
    g_usleep(5000);
  if (r != 0) {
    t->err = errno;
    t->what = "attach to the tap (TUNSETIFF)";
    close(fd);
    return NULL;
  }
  t->fd = fd;
  return NULL;
}

static gboolean fdmap_tap(FdMap *m, int netns, const char *name, GError **error) {
  TapJob t = {.netns = netns, .name = name};
  g_thread_join(g_thread_new("oakuk-tap", tap_thread, &t));
  if (t.fd < 0)
    return set_io_error(error, t.err, "tap %s: %s", name, t.what);
  m->src[m->n] = t.fd;
  m->dst[m->n++] = OAKUK_QEMU_FD_TAP;
  return TRUE;
}

/* The QMP socket, bound and listening before QEMU starts (QEMU's user could not create it in the
 * instance directory). */
static gboolean fdmap_qmp(FdMap *m, const char *dir, GError **error) {
  g_autofree char *path = g_build_filename(dir, "qmp.sock", NULL);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof a.sun_path)
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "QMP socket path %s is longer than %zu bytes", path,
                       sizeof a.sun_path - 1),
           FALSE;
  g_strlcpy(a.sun_path, path, sizeof a.sun_path);
  unlink(path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, 4) != 0) {
    int e = errno;
    if (fd >= 0)
      close(fd);
    return set_io_error(error, e, "QMP socket %s", path);
  }
  m->src[m->n] = fd;
  m->dst[m->n++] = OAKUK_QEMU_FD_QMP;
  return TRUE;
}

static gboolean open_fds(OakukInstance *i, FdMap *m, int netns, GError **error) {
  const oakuk_instance_spec *s = i->spec;
  g_autofree char *serial = g_build_filename(i->dir, "serial.log", NULL);
  g_autofree char *files = g_build_filename(i->dir, "files", NULL);
  m->n = 0;
  gboolean ok =
      fdmap_open(m, OAKUK_QEMU_FD_KERNEL, s->kernel, O_RDONLY, 0, "kernel", error) &&
      (!s->initrd || fdmap_open(m, OAKUK_QEMU_FD_INITRD, s->initrd, O_RDONLY, 0, "initrd", error)) &&
      fdmap_open(m, OAKUK_QEMU_FD_SERIAL, serial, O_WRONLY | O_CREAT | O_TRUNC, 0600, "serial log", error) &&
      fdmap_qmp(m, i->dir, error) &&
      (!s->files_dir ||
       fdmap_open(m, OAKUK_QEMU_FD_FILES, files, O_RDONLY | O_DIRECTORY | O_NOFOLLOW, 0, "files", error)) &&
      (!s->netns_path || fdmap_tap(m, netns, s->tap_name, error)) &&
      (!s->netns_path || s->accel != OAKUK_ACCEL_KVM ||
       fdmap_open(m, OAKUK_QEMU_FD_VHOST, "/dev/vhost-net", O_RDWR, 0, "vhost-net", error)) &&
      (qd(i)->snap != SNAP_RESTORE ||
       fdmap_open(m, OAKUK_QEMU_FD_SNAPSHOT, qd(i)->snap_path, O_RDONLY, 0, "snapshot", error));
  if (!ok)
    fdmap_close(m);
  return ok;
}

static gboolean q_spawn(OakukInstance *i, GError **error) {
  ChildSetup cs;
  g_autoptr(GArray) groups = g_array_new(FALSE, FALSE, sizeof(gid_t));
  if (!open_setup(i, &cs, groups, error))
    return FALSE;
  FdMap m;
  if (!open_fds(i, &m, cs.netns, error)) {
    close_setup(&cs);
    return g_prefix_error(error, "instance %s: ", i->name), FALSE;
  }
  g_autofree char *logpath = g_build_filename(i->dir, "qemu.log", NULL);
  int logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (logfd < 0) {
    fdmap_close(&m);
    close_setup(&cs);
    return set_io_error(error, errno, "create %s", logpath);
  }
  GPid pid = 0;
  gboolean ok = g_spawn_async_with_pipes_and_fds(
      NULL, (const char *const *)qd(i)->argv->pdata, NULL,
      G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDIN_FROM_DEV_NULL | G_SPAWN_STDOUT_TO_DEV_NULL, child_setup, &cs,
      -1, -1, logfd, m.src, m.dst, (gsize)m.n, &pid, NULL, NULL, NULL, error);
  close(logfd);
  /* QEMU holds its own copies now; ours would keep the QMP socket listening after QEMU died. */
  fdmap_close(&m);
  close_setup(&cs);
  if (ok)
    i->pid = pid;
  return ok;
}

static gboolean handshake_timeout(gpointer data) {
  OakukInstance *i = data;
  QemuData *d = qd(i);
  g_clear_pointer(&d->handshake_timer, g_source_unref);
  if (i->state == OAKUK_INST_STARTING) {
    g_autofree char *why =
        g_strdup_printf("QEMU did not let the guest run (QMP) within %d s", QMP_WAIT_MS / 1000);
    oakuk_instance_fail(i, why);
  }
  return G_SOURCE_REMOVE;
}

static gboolean q_started(OakukInstance *i) {
  QemuData *d = qd(i);
  d->qmp_deadline = g_get_monotonic_time() + QMP_WAIT_MS * 1000;
  /* The socket listens from the start (the runtime made it): the deadline is for the answer. */
  d->handshake_timer = g_timeout_source_new(QMP_WAIT_MS);
  g_source_set_callback(d->handshake_timer, handshake_timeout, oakuk_instance_ref(i),
                        (GDestroyNotify)oakuk_instance_unref);
  g_source_attach(d->handshake_timer, i->context);
  qmp_connect(i);
  return FALSE; /* RUNNING once QMP has let the guest run */
}

/* GRACEFUL: the ACPI power button, when a grace period is asked for; QUIT: QMP quit (else
 * SIGTERM); KILL: SIGKILL. */
static gboolean q_signal(OakukInstance *i, OakukStopPhase phase) {
  switch (phase) {
  case OAKUK_STOP_GRACEFUL: return i->grace_s > 0 && qmp_send(i, "system_powerdown");
  case OAKUK_STOP_QUIT:
    if (!qmp_send(i, "quit") && i->pid > 0)
      kill(i->pid, SIGTERM);
    return TRUE;
  case OAKUK_STOP_KILL:
    g_debug("instance %s: still alive after quit, SIGKILL", i->name);
    if (i->pid > 0)
      kill(i->pid, SIGKILL);
    return TRUE;
  }
  return FALSE;
}

static void q_release(OakukInstance *i, gboolean remove) {
  cgroup_remove(&qd(i)->cg);
  snap_tmp_drop(qd(i)); /* a save QEMU did not finish */
  g_autoptr(GError) err = NULL;
  if (remove && !oakuk_rm_rf(i->dir, &err))
    g_warning("instance %s: %s", i->name, err->message);
}

static char *q_extra_detail(OakukInstance *i) {
  g_autofree char *qlog = g_build_filename(i->dir, "qemu.log", NULL);
  char *t = NULL;
  if (oakuk_console_tail(&t, qlog, 3, 4096, OAKUK_CONSOLE_SKIP_EMPTY | OAKUK_CONSOLE_STRIP, NULL) != 0 ||
      !*t) {
    oakuk_free(t);
    return NULL;
  }
  char *r = g_strdup_printf("qemu: %s", t);
  oakuk_free(t);
  return r;
}

static void q_record(OakukInstance *i, JsonBuilder *b) {
  QemuData *d = qd(i);
  g_autofree char *sock = g_build_filename(i->dir, "qmp.sock", NULL);
  json_builder_set_member_name(b, "qmp_socket");
  json_builder_add_string_value(b, sock);
  /* A QEMU taken from the pool keeps the pool's cgroups: their names are not the instance's. */
  const char *keys[] = {"cgroup_v2", "cgroup_memory", "cgroup_cpu"};
  const char *dirs[] = {d->cg.v2, d->cg.mem, d->cg.cpu};
  for (size_t k = 0; k < G_N_ELEMENTS(keys); k++) {
    if (dirs[k]) {
      json_builder_set_member_name(b, keys[k]);
      json_builder_add_string_value(b, dirs[k]);
    }
  }
}

static GPid q_adopt(OakukInstance *i, JsonObject *record) {
  QemuData *d = qd(i);
  d->adopted = TRUE;
  const char *mem = json_object_get_string_member_with_default(record, "cgroup_memory", NULL);
  const char *v2 = json_object_get_string_member_with_default(record, "cgroup_v2", NULL);
  if (mem || v2) {
    cgroup_clear(&d->cg);
    d->cg.v2 = g_strdup(v2);
    d->cg.mem = g_strdup(mem);
    d->cg.cpu = g_strdup(json_object_get_string_member_with_default(record, "cgroup_cpu", NULL));
  }
  return (GPid)json_object_get_int_member_with_default(record, "pid", 0);
}

static gboolean q_stats(OakukInstance *i, double *cpu, int64_t *rss, GError **error) {
  QemuData *d = qd(i);
  guint64 ticks = 0;
  if (!oakuk_proc_stat(i->pid, NULL, &ticks, NULL))
    return g_set_error(error, OAKUK_ERROR, -OAKUK_ENOTFOUND, "instance %s: not running", i->name), FALSE;
  gint64 now = g_get_monotonic_time();
  double secs = (double)(now - d->last_time_us) / 1e6;
  long hz = sysconf(_SC_CLK_TCK);
  *cpu = (d->last_time_us && secs > 0 && ticks >= d->last_ticks)
             ? (double)(ticks - d->last_ticks) / (double)hz / secs * 100.0
             : 0.0;
  d->last_ticks = ticks;
  d->last_time_us = now;
  g_autofree char *path = g_strdup_printf("/proc/%d/status", (int)i->pid);
  g_autofree char *text = NULL;
  const char *p = g_file_get_contents(path, &text, NULL, NULL) ? strstr(text, "\nVmRSS:") : NULL;
  *rss = p ? g_ascii_strtoll(p + strlen("\nVmRSS:"), NULL, 10) : 0;
  return TRUE;
}

static gboolean q_cgroup_memory(OakukInstance *i, int64_t *kb, GError **error) {
  int64_t b = cgroup_memory_bytes(&qd(i)->cg);
  if (b < 0)
    return g_set_error(error, OAKUK_ERROR, -OAKUK_ENOTFOUND, "instance %s: no cgroup (not running)", i->name),
           FALSE;
  *kb = b / 1024;
  return TRUE;
}

static void q_finalize(oakuk_runtime *rt) {
  QemuRuntime *q = rt->impl;
  if (q->pools)
    g_ptr_array_unref(q->pools); /* their QEMUs end with the runtime */
  oakuk_qemu_caps_unref(q->caps);
  g_free(q->run_as);
  g_free(q);
}

static const OakukRuntimeClass qemu_class = {
    .virt = OAKUK_VIRT_UNIKERNEL,
    .console = "serial.log",
    .process = "QEMU",
    .console_judges = TRUE,
    .init = q_init,
    .check = q_check,
    .prepare = q_prepare,
    .spawn = q_spawn,
    .started = q_started,
    .retry = q_retry,
    .before_ready = q_before_ready,
    .signal = q_signal,
    .drain = q_drain,
    .exited = qmp_close,
    .release = q_release,
    .extra_detail = q_extra_detail,
    .record = q_record,
    .adopt = q_adopt,
    .stats = q_stats,
    .cgroup_memory = q_cgroup_memory,
    .free_data = data_free,
    .finalize = q_finalize,
};

/* ---- the pool (oakuk_runtime_pool_set; docs/unikernels.md "Pool") ---- */

#define POOL_MAX 64
#define POOL_PREFIX ".pool-"
#define POOL_REFILL_MS 250

typedef struct {
  char *snap_path;           /* the key */
  oakuk_instance_spec *spec; /* the template, on "/proc/self/ns/net" and tap0 */
  int32_t want;
  GPtrArray *entries; /* OakukInstance* (detached), each a QEMU waiting, oldest first */
  int32_t pending;    /* QEMUs starting */
  oakuk_runtime *rt;
  GSource *refill; /* topping the pool up after a take-over */
} Pool;

static void pool_entry_free(gpointer data) {
  pool_entry_release(data, TRUE);
  oakuk_instance_unref(data);
}

static void pool_free(gpointer data) {
  Pool *pool = data;
  if (pool->refill) {
    g_source_destroy(pool->refill);
    g_source_unref(pool->refill);
  }
  g_ptr_array_unref(pool->entries);
  oakuk_instance_spec_unref(pool->spec);
  g_free(pool->snap_path);
  g_free(pool);
}

static gboolean tap_delete(const char *name, GError **error) {
  struct nl_sock *sk = oakuk_net_nl_open(error);
  if (!sk)
    return FALSE;
  gboolean ok = oakuk_net_link_del(sk, name, error);
  nl_socket_free(sk);
  return ok;
}

/* Ends a pooled QEMU (kill_it) and removes its directory, cgroups and tap. */
static void pool_entry_release(OakukInstance *p, gboolean kill_it) {
  QemuData *d = qd(p);
  oakuk_proc_watch_clear(&p->watch);
  if (kill_it && p->pid > 0)
    oakuk_proc_kill_wait(p->pid, TRUE);
  p->pid = 0;
  cgroup_remove(&d->cg);
  cgroup_clear(&d->cg);
  g_autoptr(GError) err = NULL;
  if (!oakuk_rm_rf(p->dir, &err))
    g_warning("pool: %s", err->message);
  if (d->pool_tap && !tap_delete(d->pool_tap, &err))
    g_warning("pool: %s", err->message);
  g_clear_pointer(&d->pool_tap, g_free);
}

static Pool *pool_find(QemuRuntime *q, const char *snap_path) {
  for (guint k = 0; q->pools && k < q->pools->len; k++) {
    Pool *pool = q->pools->pdata[k];
    if (strcmp(pool->snap_path, snap_path) == 0)
      return pool;
  }
  return NULL;
}

/* A pooled QEMU ended by itself: it leaves the pool (which the next pool_set tops up). */
static void pool_entry_exited(int wait_status, gpointer data) {
  OakukInstance *p = data;
  QemuRuntime *q = p->rt ? p->rt->impl : NULL;
  g_message("pool: a pooled QEMU (pid %d) ended by itself (wait status %d)", (int)p->pid, wait_status);
  p->pid = 0;
  for (guint k = 0; q && q->pools && k < q->pools->len; k++)
    if (g_ptr_array_remove(((Pool *)q->pools->pdata[k])->entries, p))
      return; /* (pool_entry_free released it) */
}

/* A pool asked to hold nothing and starting nothing goes. */
static void pool_drop_if_idle(QemuRuntime *q, Pool *pool) {
  if (pool->want == 0 && pool->pending == 0)
    g_ptr_array_remove(q->pools, pool);
}

static OakukInstance *pool_detached(oakuk_runtime *rt, const oakuk_instance_spec *tmpl, const char *name,
                                    const char *tap) {
  OakukInstance *p = oakuk_instance_new_detached(rt, name);
  QemuData *d = qd(p);
  d->pool_entry = TRUE;
  p->spec = oakuk_instance_spec_copy(tmpl);
  g_free(p->spec->name);
  /* QEMU's -name: a valid instance name (the directory, ".pool-N", is one no instance can have) */
  p->spec->name = g_strdup(name + 1);
  oakuk_instance_spec_set_network(p->spec, "/proc/self/ns/net", tap, tmpl->ip, tmpl->prefix, tmpl->gateway,
                                  tmpl->mac);
  d->pool_tap = g_strdup(tap);
  return p;
}

/* (thread) Starts one QEMU for a pool: a tap of its own in the runtime's namespace, paused before
 * the load; its check was done on the runtime's context. */
static void pool_spawn_thread(GTask *task, gpointer src, gpointer data, GCancellable *cancel) {
  OakukInstance *p = data;
  QemuData *d = qd(p);
  GError *err = NULL;
  if (oakuk_net_tap_create(d->pool_tap, &err) <= 0) {
    g_clear_pointer(&d->pool_tap, g_free); /* not ours to delete */
    g_task_return_error(task, err);
    return;
  }
  if (!q_prepare(p, &err) || !q_spawn(p, &err)) {
    g_task_return_error(task, err);
    return;
  }
  guint64 start = 0;
  oakuk_proc_stat(p->pid, NULL, NULL, &start);
  /* For a runtime after a crash: what to end (pool_clean_leftovers). */
  g_autofree char *rec = g_build_filename(p->dir, "pool.json", NULL);
  g_autofree char *text =
      g_strdup_printf("{\"pid\": %d, \"start_time\": %" G_GUINT64_FORMAT ", \"tap\": \"%s\"}\n", (int)p->pid,
                      start, d->pool_tap);
  g_file_set_contents(rec, text, -1, NULL);
  g_task_return_boolean(task, TRUE);
}

static void pool_fill(Pool *pool);

static void pool_spawned(GObject *src, GAsyncResult *res, gpointer data) {
  OakukInstance *p = g_task_get_task_data(G_TASK(res));
  oakuk_runtime *rt = data;
  g_autoptr(GError) err = NULL;
  gboolean ok = g_task_propagate_boolean(G_TASK(res), &err);
  Pool *pool = pool_find(rt->impl, qd(p)->snap_path);
  if (pool)
    pool->pending--;
  if (!ok)
    g_message("pool: a QEMU for %s could not start: %s", qd(p)->snap_path, err->message);
  if (ok && pool && (int32_t)pool->entries->len < pool->want) {
    oakuk_proc_watch_child(&p->watch, p->pid, p->context, pool_entry_exited, p, NULL);
    g_ptr_array_add(pool->entries, oakuk_instance_ref(p));
  } else {
    pool_entry_release(p, TRUE); /* a failed start, or a pool that shrank or went meanwhile */
  }
  if (pool)
    pool_drop_if_idle(rt->impl, pool);
  oakuk_runtime_unref(rt);
}

/* Starts what the pool lacks (in threads: a QEMU's start waits for its cgroup join), or ends what
 * it has too many of. */
static void pool_fill(Pool *pool) {
  QemuRuntime *q = pool->rt->impl;
  while ((int32_t)pool->entries->len > pool->want)
    g_ptr_array_remove_index(pool->entries, pool->entries->len - 1);
  while ((int32_t)pool->entries->len + pool->pending < pool->want) {
    guint64 seq = ++q->pool_seq;
    g_autofree char *name = g_strdup_printf(POOL_PREFIX "%" G_GUINT64_FORMAT, seq);
    g_autofree char *tap = g_strdup_printf("ukp%d-%" G_GUINT64_FORMAT, (int)getpid() % 10000, seq % 1000000);
    OakukInstance *p = pool_detached(pool->rt, pool->spec, name, tap);
    g_autoptr(GError) err = NULL;
    if (!q_check(p, &err) || qd(p)->snap != SNAP_RESTORE) {
      g_message("pool: a QEMU for %s cannot start: %s", pool->snap_path, err ? err->message : "no snapshot");
      g_clear_pointer(&qd(p)->pool_tap, g_free);
      oakuk_instance_unref(p);
      return;
    }
    pool->pending++;
    GTask *task = g_task_new(NULL, NULL, pool_spawned, oakuk_runtime_ref(pool->rt));
    g_task_set_task_data(task, p, (GDestroyNotify)oakuk_instance_unref);
    g_task_run_in_thread(task, pool_spawn_thread);
    g_object_unref(task);
  }
}

static gboolean pool_refill(gpointer data) {
  Pool *pool = data;
  g_clear_pointer(&pool->refill, g_source_unref);
  pool_fill(pool);
  return G_SOURCE_REMOVE;
}

/* At deploy (q_check): a waiting QEMU of the snapshot's pool for the instance, or NULL. */
static OakukInstance *pool_claim(oakuk_runtime *rt, const char *snap_path) {
  Pool *pool = rt ? pool_find(rt->impl, snap_path) : NULL;
  if (!pool || pool->entries->len == 0)
    return NULL;
  OakukInstance *p = g_ptr_array_steal_index(pool->entries, 0);
  oakuk_proc_watch_clear(&p->watch);
  if (!pool->refill) {
    /* After the deploy that took it has had the machine for its load. */
    pool->refill = g_timeout_source_new(POOL_REFILL_MS);
    g_source_set_callback(pool->refill, pool_refill, pool, NULL);
    g_source_attach(pool->refill, rt->context);
  }
  return p;
}

typedef struct {
  OakukInstance *i;
  char *pool_tap, *netns_path, *tap;
  GError *error;
} Swap;

static void swap_free(Swap *w) {
  oakuk_instance_unref(w->i);
  g_free(w->pool_tap);
  g_free(w->netns_path);
  g_free(w->tap);
  if (w->error)
    g_error_free(w->error);
  g_free(w);
}

/* On the runtime's context: the tap is the instance's; the guest runs if its load is done. */
static gboolean pool_swap_done(gpointer data) {
  Swap *w = data;
  OakukInstance *i = w->i;
  QemuData *d = qd(i);
  d->swap_done = TRUE;
  if (i->state == OAKUK_INST_STARTING || i->state == OAKUK_INST_RUNNING) {
    if (w->error) {
      g_autofree char *why = g_strdup_printf("the pooled QEMU's tap: %s", w->error->message);
      oakuk_instance_fail(i, why);
    } else if (d->load_done && !qmp_send_full(i, "snap-resume", "cont", NULL, -1)) {
      oakuk_instance_fail(i, "QMP: could not let the restored guest run (cont)");
    }
  }
  swap_free(w);
  return G_SOURCE_REMOVE;
}

static gboolean link_change(struct nl_sock *sk, int ifindex, struct rtnl_link *c, const char *what,
                            GError **error) {
  int r = oakuk_net_link_change(sk, ifindex, c);
  return r < 0 ? oakuk_net_fail_nl(error, r, "%s", what) : TRUE;
}

/* A thread of its own (setns), alongside the snapshot's load: the pooled QEMU's tap moves from the
 * runtime's namespace into the instance's and takes the place of its tap on its bridge. The
 * instance's tap is retired (down, off the bridge, renamed; it goes with the namespace) rather than
 * deleted, and only once the pooled one is in: deleting a link waits for an RCU grace period. */
static gpointer swap_thread(gpointer data) {
  Swap *w = data;
  struct nl_sock *host = oakuk_net_nl_open(&w->error), *inst = NULL;
  int fd = open(w->netns_path, O_RDONLY | O_CLOEXEC);
  int idx = host ? oakuk_net_ifindex(host, w->pool_tap) : 0;
  struct rtnl_link *old = NULL, *c;
  int master = 0, old_idx = 0, moved = 0;
  char retired[IFNAMSIZ];
  if (!host)
    goto out;
  if (fd < 0 || idx <= 0) {
    oakuk_net_fail_errno(&w->error, fd < 0 ? errno : ENODEV, "take %s into %s", w->pool_tap, w->netns_path);
    goto out;
  }
  if (!oakuk_net_enter_ns(fd, w->netns_path, &w->error) || !(inst = oakuk_net_nl_open(&w->error)))
    goto out;
  if (rtnl_link_get_kernel(inst, 0, w->tap, &old) >= 0) {
    master = rtnl_link_get_master(old);
    old_idx = rtnl_link_get_ifindex(old);
  }
  if (master <= 0) {
    g_set_error(&w->error, OAKUK_ERROR, -OAKUK_EINVAL,
                "the instance's %s is on no bridge (a pooled QEMU takes its place only in the NAT layout)",
                w->tap);
    goto out;
  }
  c = rtnl_link_alloc();
  rtnl_link_set_ns_fd(c, fd);
  if (!link_change(host, idx, c, "move the pooled tap into the instance's namespace", &w->error))
    goto out;
  moved = oakuk_net_ifindex(inst, w->pool_tap);
  g_snprintf(retired, sizeof retired, "%.6s-o%d", w->tap, old_idx);
  c = rtnl_link_alloc();
  rtnl_link_unset_flags(c, IFF_UP);
  rtnl_link_set_master(c, 0);
  rtnl_link_set_name(c, retired);
  if (!link_change(inst, old_idx, c, "retire the instance's tap", &w->error))
    goto out;
  c = rtnl_link_alloc();
  rtnl_link_set_name(c, w->tap);
  if (!link_change(inst, moved, c, "rename the pooled tap", &w->error))
    goto out;
  oakuk_net_link_up(inst, moved, NULL, master, &w->error);
out:
  if (old)
    rtnl_link_put(old);
  if (inst)
    nl_socket_free(inst);
  if (host)
    nl_socket_free(host);
  if (fd >= 0)
    close(fd);
  g_main_context_invoke(w->i->context, pool_swap_done, w);
  return NULL;
}

/* (thread: prepare) The instance takes over its pooled QEMU: directory, cgroups, process; its tap
 * follows in a thread of its own while the snapshot loads. FALSE when it cannot (the pooled QEMU
 * is then ended, and the instance starts its own). */
static gboolean pool_take_over(OakukInstance *i) {
  QemuData *d = qd(i);
  OakukInstance *p = g_steal_pointer(&d->pooled);
  QemuData *pd = qd(p);
  g_autoptr(GError) err = NULL;
  if (!oakuk_rm_rf(i->dir, &err) || rename(p->dir, i->dir) != 0) {
    if (!err)
      set_io_error(&err, errno, "move %s to %s", p->dir, i->dir);
    g_message("instance %s: the pooled QEMU could not be taken over (%s): starting one", i->name,
              err->message);
    pool_entry_release(p, TRUE);
    oakuk_instance_unref(p);
    return FALSE;
  }
  Swap *w = g_new0(Swap, 1);
  w->i = oakuk_instance_ref(i);
  w->pool_tap = g_steal_pointer(&pd->pool_tap); /* the instance's tap0 soon, removed with its namespace */
  w->netns_path = g_strdup(i->spec->netns_path);
  w->tap = g_strdup(i->spec->tap_name);
  cgroup_clear(&d->cg);
  d->cg = pd->cg;
  memset(&pd->cg, 0, sizeof pd->cg);
  g_autofree char *rec = g_build_filename(i->dir, "pool.json", NULL);
  unlink(rec);
  i->pid = p->pid;
  p->pid = 0;
  d->from_pool = TRUE;
  oakuk_instance_unref(p);
  g_thread_unref(g_thread_new("oakuk-pool-tap", swap_thread, w));
  return TRUE;
}

/* At runtime creation: pooled QEMUs a crashed runtime left (they are never adopted). */
static void pool_clean_leftovers(const char *instances_dir) {
  GDir *dir = g_dir_open(instances_dir, 0, NULL);
  for (const char *e; dir && (e = g_dir_read_name(dir));) {
    if (!g_str_has_prefix(e, POOL_PREFIX))
      continue;
    g_autofree char *path = g_build_filename(instances_dir, e, NULL);
    g_autofree char *rec = g_build_filename(path, "pool.json", NULL);
    g_autoptr(JsonNode) n = NULL;
    g_autofree char *text = NULL;
    gsize len = 0;
    if (g_file_get_contents(rec, &text, &len, NULL))
      n = oakuk_json_parse(text, len, NULL);
    JsonObject *o = n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
    GPid pid = o ? (GPid)json_object_get_int_member_with_default(o, "pid", 0) : 0;
    guint64 want = o ? (guint64)json_object_get_int_member_with_default(o, "start_time", 0) : 0, start = 0;
    if (pid > 0 && oakuk_proc_stat(pid, NULL, NULL, &start) && start == want)
      kill(pid, SIGKILL);
    const char *tap = o ? json_object_get_string_member_with_default(o, "tap", NULL) : NULL;
    g_autoptr(GError) err = NULL;
    if (tap && !tap_delete(tap, &err))
      g_warning("pool leftovers: %s", err->message);
    Cgroup cg = {0};
    if (cgroup_paths(&cg, e, NULL))
      cgroup_remove(&cg);
    cgroup_clear(&cg);
    oakuk_rm_rf(path, NULL);
  }
  if (dir)
    g_dir_close(dir);
}

OAKUK_API int oakuk_runtime_pool_set(oakuk_runtime *rt, const oakuk_instance_spec *spec, int32_t n,
                                     oakuk_error **error) {
  g_return_val_if_fail(rt != NULL && spec != NULL, OAKUK_EINVAL);
  if (rt->klass != &qemu_class)
    return oakuk_set_error(error, OAKUK_EINVAL, 0, NULL, "pool: only the unikernel runtime has one");
  if (!spec->snapshot_dir)
    return oakuk_set_error(error, OAKUK_EINVAL, 0, "snapshot", "pool for %s: needs snapshot start",
                           spec->name);
  if (n < 0 || n > POOL_MAX)
    return oakuk_set_error(error, OAKUK_EINVAL, 0, "n", "pool for %s: %d QEMUs is outside 0..%d", spec->name,
                           n, POOL_MAX);
  QemuRuntime *q = rt->impl;
  g_autoptr(oakuk_instance_spec) tmpl = oakuk_instance_spec_copy(spec);
  oakuk_instance_spec_set_network(tmpl, "/proc/self/ns/net", "tap0", spec->ip, spec->prefix, spec->gateway,
                                  spec->mac);
  /* The key, as an instance of spec would have it. */
  OakukInstance *probe = pool_detached(rt, tmpl, POOL_PREFIX "key", "tap0");
  GError *err = NULL;
  gboolean ok = q_check(probe, &err);
  g_autofree char *key = g_strdup(qd(probe)->snap_path);
  gboolean exists = qd(probe)->snap == SNAP_RESTORE;
  g_clear_pointer(&qd(probe)->pool_tap, g_free);
  oakuk_instance_unref(probe);
  if (!ok)
    return oakuk_propagate_gerror(error, err);
  Pool *pool = pool_find(q, key);
  if (n > 0 && !exists)
    return oakuk_set_error(error, OAKUK_ENOTFOUND, 0, "snapshot",
                           "pool for %s: no snapshot yet (an instance saves it at its first readiness)",
                           spec->name);
  if (!pool && n == 0)
    return 0;
  if (!pool) {
    pool = g_new0(Pool, 1);
    pool->snap_path = g_strdup(key);
    pool->entries = g_ptr_array_new_with_free_func(pool_entry_free);
    pool->rt = rt;
    if (!q->pools)
      q->pools = g_ptr_array_new_with_free_func(pool_free);
    g_ptr_array_add(q->pools, pool);
  }
  if (pool->spec)
    oakuk_instance_spec_unref(pool->spec);
  pool->spec = g_steal_pointer(&tmpl);
  pool->want = n;
  pool_fill(pool);
  pool_drop_if_idle(q, pool);
  return 0;
}

OAKUK_API int32_t oakuk_runtime_pool_count(const oakuk_runtime *rt, int64_t *memory_mb) {
  g_return_val_if_fail(rt != NULL, 0);
  int32_t count = 0;
  int64_t mb = 0;
  QemuRuntime *q = rt->klass == &qemu_class ? rt->impl : NULL;
  for (guint k = 0; q && q->pools && k < q->pools->len; k++) {
    Pool *pool = q->pools->pdata[k];
    count += (int32_t)pool->entries->len;
    mb += (int64_t)pool->entries->len * pool->spec->memory_mb;
  }
  if (memory_mb)
    *memory_mb = mb;
  return count;
}

OAKUK_API oakuk_runtime *oakuk_qemu_runtime_new(const char *state_dir, const oakuk_qemu_options *opts,
                                                oakuk_error **error) {
  g_return_val_if_fail(state_dir != NULL, NULL);
  oakuk_qemu_caps *caps = NULL;
  if (oakuk_qemu_probe(&caps, opts, error) < 0)
    return NULL;
  /* The probe accepted opts' version; run_as exists from version 2 on. */
  const char *run_as = opts && opts->version >= OAKUK_QEMU_OPTIONS_VERSION ? opts->run_as : NULL;
  if (run_as) {
    OakukQemuUser user;
    GError *uerr = NULL;
    if (!oakuk_qemu_user_lookup(run_as, &user, &uerr)) {
      oakuk_set_error(error, OAKUK_EINVAL, 0, "run_as", "unikernel runtime: %s", uerr->message);
      g_error_free(uerr);
      oakuk_qemu_caps_unref(caps);
      return NULL;
    }
    oakuk_qemu_user_clear(&user);
  } else if (geteuid() == 0) {
    g_message("unikernel runtime: QEMU runs as root: set oakuk_qemu_options.run_as to an unprivileged user");
  }
  QemuRuntime *q = g_new0(QemuRuntime, 1);
  q->caps = caps;
  q->run_as = g_strdup(run_as);
  g_autofree char *dir = g_build_filename(state_dir, "instances", NULL);
  pool_clean_leftovers(dir);
  GError *err = NULL;
  oakuk_runtime *rt = oakuk_runtime_alloc(&qemu_class, q, dir, &err);
  if (!rt) {
    oakuk_propagate_gerror(error, err);
    q_finalize(&(oakuk_runtime){.impl = q});
  }
  return rt;
}

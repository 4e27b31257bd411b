/* Container runtime (DESIGN §10, §11): pull (oci.c), an overlay of the shared unpacked image as the
 * bundle rootfs, config.json (OCI runtime spec), `runc run --detach` in the caller's netns (see
 * runc_start), exit codes through PR_SET_CHILD_SUBREAPER, stop with `runc kill TERM`, the grace
 * period, `runc kill KILL`, then `runc delete`. Each instance
 * lives in <state_dir>/instances/<name>/ (bundle/{config.json,rootfs}, upper/, work/, output.log,
 * instance.json); runc keeps its state in <state_dir>/runc. */
#include "oci-private.h"
#include "sysutil-private.h"
#include "qemu-private.h"

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define set_gerror(err, code, ...) g_set_error(err, OAKUK_ERROR, -(code), __VA_ARGS__)
#define OUTPUT_TAIL_LINES 10

typedef struct ContainerRuntime ContainerRuntime;

/* What threads need of the runtime, copied per instance so that they never touch the runtime
 * (which may be finalized while they run). */
typedef struct {
  char *runc, *root, *images_dir, *insecure;
  oakuk_container_options opts;
  GMainContext *context;
} Env;

typedef struct {
  gint refcount;
  ContainerRuntime *c; /* NULL once detached */
  char *name, *dir;
  oakuk_instance_spec *spec; /* NULL for adopted instances */
  bool one_shot;
  guint grace_s;
  GPid pid;
  guint64 start_time;
  OakukProcWatch watch;
  bool preparing, running, exited, stopping, cleaning;
  bool release_removes; /* the release in progress also removes the directory */
  GSource *timer;
  guint64 last_cpu_ns;
  gint64 last_time_us;
  Env env;
} Instance;

struct ContainerRuntime {
  oakuk_runtime *rt;
  char *instances_dir;
  Env env;
  GHashTable *instances; /* name -> Instance* */
};

static void env_copy(Env *dst, const Env *src) {
  dst->runc = g_strdup(src->runc);
  dst->root = g_strdup(src->root);
  dst->images_dir = g_strdup(src->images_dir);
  dst->insecure = g_strdup(src->insecure);
  dst->opts = src->opts;
  dst->opts.insecure_registries = dst->insecure;
  dst->context = src->context ? g_main_context_ref(src->context) : NULL;
}

static void env_clear(Env *e) {
  g_free(e->runc);
  g_free(e->root);
  g_free(e->images_dir);
  g_free(e->insecure);
  if (e->context)
    g_main_context_unref(e->context);
}

OAKUK_API int oakuk_container_options_init(oakuk_container_options *opts, unsigned int version) {
  g_return_val_if_fail(opts != NULL, OAKUK_EINVAL);
  if (version != OAKUK_CONTAINER_OPTIONS_VERSION)
    return OAKUK_EINVAL;
  oakuk_container_options d = OAKUK_CONTAINER_OPTIONS_INIT;
  *opts = d;
  return 0;
}

static Instance *inst_ref(Instance *i) {
  g_atomic_int_inc(&i->refcount);
  return i;
}

static void inst_unref(Instance *i) {
  if (!g_atomic_int_dec_and_test(&i->refcount))
    return;
  g_free(i->name);
  g_free(i->dir);
  oakuk_instance_spec_unref(i->spec);
  env_clear(&i->env);
  g_free(i);
}

/* ---- runc ---- */

/* Runs runc with args (NULL-terminated) and waits; output goes to out_fd (or is captured into
 * *output when out_fd < 0). Returns the exit status as from waitpid, or -1 with error set. */
static int runc_run(const Env *c, const char *const *args, int out_fd, char **output, GError **error) {
  g_autoptr(GPtrArray) argv = g_ptr_array_new();
  g_ptr_array_add(argv, c->runc);
  g_ptr_array_add(argv, (char *)"--root");
  g_ptr_array_add(argv, c->root);
  for (const char *const *a = args; *a; a++)
    g_ptr_array_add(argv, (char *)*a);
  g_ptr_array_add(argv, NULL);
  GPid pid;
  int out_pipe = -1;
  if (!g_spawn_async_with_pipes_and_fds(NULL, (const char *const *)argv->pdata, NULL,
                                        G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDIN_FROM_DEV_NULL |
                                            (out_fd < 0 ? G_SPAWN_STDERR_TO_DEV_NULL : 0),
                                        NULL, NULL, -1, out_fd, out_fd, NULL, NULL, 0, &pid, NULL,
                                        out_fd < 0 ? &out_pipe : NULL, NULL, error))
    return -1;
  if (out_pipe >= 0) {
    GString *s = g_string_new(NULL);
    char buf[4096];
    ssize_t n;
    while ((n = read(out_pipe, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
      if (n > 0)
        g_string_append_len(s, buf, n);
    close(out_pipe);
    if (output)
      *output = g_string_free(s, FALSE);
    else
      g_string_free(s, TRUE);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
    ;
  g_spawn_close_pid(pid);
  return status;
}

/* `runc state <name>`: status ("running", "stopped", "created", ...) and pid; FALSE when runc does
 * not know the container. */
static gboolean runc_state(const Env *c, const char *name, char **status, GPid *pid) {
  const char *args[] = {"state", name, NULL};
  g_autofree char *out = NULL;
  int st = runc_run(c, args, -1, &out, NULL);
  if (st != 0 || !out)
    return FALSE;
  g_autoptr(JsonParser) p = json_parser_new();
  if (!json_parser_load_from_data(p, out, -1, NULL) || !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
    return FALSE;
  JsonObject *o = json_node_get_object(json_parser_get_root(p));
  *status = g_strdup(json_object_get_string_member_with_default(o, "status", ""));
  *pid = (GPid)json_object_get_int_member_with_default(o, "pid", 0);
  return TRUE;
}

static void runc_delete(const Env *c, const char *name) {
  const char *args[] = {"delete", "--force", name, NULL};
  runc_run(c, args, -1, NULL, NULL);
}

/* ---- cgroups (runc creates them from cgroupsPath /oakuk/<name>) ---- */

/* The file of a cgroup controller for the instance, e.g. ("memory", "memory.usage_in_bytes"). */
static char *cgroup_file(const char *name, const char *v1_controller, const char *v1_file, const char *v2_file) {
  if (oakuk_cgroup_v2())
    return g_build_filename("/sys/fs/cgroup/oakuk", name, v2_file, NULL);
  g_autofree char *mnt = oakuk_cgroup_v1_mount(v1_controller);
  return mnt ? g_build_filename(mnt, "oakuk", name, v1_file, NULL) : NULL;
}

static gboolean read_int_file(const char *path, gint64 *out) {
  g_autofree char *text = NULL;
  if (!path || !g_file_get_contents(path, &text, NULL, NULL))
    return FALSE;
  *out = g_ascii_strtoll(text, NULL, 10);
  return TRUE;
}

/* A "key value" line of a stat file (memory.stat, cpu.stat). */
static gboolean read_stat_key(const char *path, const char *key, gint64 *out) {
  g_autofree char *text = NULL;
  if (!path || !g_file_get_contents(path, &text, NULL, NULL))
    return FALSE;
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  size_t kl = strlen(key);
  for (char **l = lines; *l; l++)
    if (strncmp(*l, key, kl) == 0 && (*l)[kl] == ' ') {
      *out = g_ascii_strtoll(*l + kl + 1, NULL, 10);
      return TRUE;
    }
  return FALSE;
}

/* ---- /proc ---- */

/* ---- config.json ---- */

static void add_strings(JsonBuilder *b, const char *const *v) {
  json_builder_begin_array(b);
  for (; *v; v++)
    json_builder_add_string_value(b, *v);
  json_builder_end_array(b);
}

static void add_mount(JsonBuilder *b, const char *dest, const char *type, const char *src, const char *const *opts) {
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "destination");
  json_builder_add_string_value(b, dest);
  json_builder_set_member_name(b, "type");
  json_builder_add_string_value(b, type);
  json_builder_set_member_name(b, "source");
  json_builder_add_string_value(b, src);
  json_builder_set_member_name(b, "options");
  add_strings(b, opts);
  json_builder_end_object(b);
}

static void add_namespace(JsonBuilder *b, const char *type, const char *path) {
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "type");
  json_builder_add_string_value(b, type);
  if (path) {
    json_builder_set_member_name(b, "path");
    json_builder_add_string_value(b, path);
  }
  json_builder_end_object(b);
}

/* uid:gid for the image's User ("", "uid", "uid:gid", "name" or "name:group" via the rootfs's
 * /etc/passwd and /etc/group). */
static gboolean resolve_user(const char *rootfs, const char *user, gint64 *uid, gint64 *gid, GError **error) {
  *uid = 0;
  *gid = 0;
  if (!user || !*user)
    return TRUE;
  g_auto(GStrv) ug = g_strsplit(user, ":", 2);
  const char *files[] = {"etc/passwd", "etc/group"};
  gint64 *outs[] = {uid, gid};
  for (int k = 0; k < 2 && ug[k]; k++) {
    char *end = NULL;
    gint64 v = g_ascii_strtoll(ug[k], &end, 10);
    if (end && *end == '\0' && end != ug[k]) {
      *outs[k] = v;
      if (k == 0)
        *gid = v;
      continue;
    }
    g_autofree char *path = g_build_filename(rootfs, files[k], NULL);
    g_autofree char *text = NULL;
    gboolean found = FALSE;
    if (g_file_get_contents(path, &text, NULL, NULL)) {
      g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
      for (char **l = lines; *l && !found; l++) {
        g_auto(GStrv) f = g_strsplit(*l, ":", -1);
        if (g_strv_length(f) >= 4 && strcmp(f[0], ug[k]) == 0) {
          *outs[k] = g_ascii_strtoll(f[2], NULL, 10);
          if (k == 0)
            *gid = g_ascii_strtoll(f[3], NULL, 10);
          found = TRUE;
        }
      }
    }
    if (!found)
      return set_gerror(error, OAKUK_EINVAL, "image User %s: %s is not in the image's /%s", user, ug[k], files[k]),
             FALSE;
  }
  return TRUE;
}

static char *build_config(const oakuk_instance_spec *spec, const OakukOciImage *img, const char *rootfs,
                          GError **error) {
  g_autoptr(GPtrArray) args = g_ptr_array_new();
  if (spec->args->len)
    for (guint k = 0; k < spec->args->len; k++)
      g_ptr_array_add(args, spec->args->pdata[k]);
  else if (img) {
    for (guint k = 0; k < img->entrypoint->len; k++)
      g_ptr_array_add(args, img->entrypoint->pdata[k]);
    for (guint k = 0; k < img->cmd->len; k++)
      g_ptr_array_add(args, img->cmd->pdata[k]);
  }
  if (args->len == 0)
    return set_gerror(error, OAKUK_EINVAL, "instance %s: no cmd given and the image has no Entrypoint or Cmd",
                      spec->name), NULL;
  g_ptr_array_add(args, NULL);
  /* Environment: the image's, then the spec's; a later KEY replaces an earlier one. */
  g_autoptr(GPtrArray) env = g_ptr_array_new();
  GPtrArray *sources[] = {img ? img->env : NULL, spec->env};
  for (int s = 0; s < 2; s++)
    for (guint k = 0; sources[s] && k < sources[s]->len; k++) {
      const char *kv = sources[s]->pdata[k];
      const char *eq = strchr(kv, '=');
      size_t kl = eq ? (size_t)(eq - kv) : strlen(kv);
      for (guint j = 0; j < env->len; j++)
        if (strncmp(env->pdata[j], kv, kl) == 0 && ((char *)env->pdata[j])[kl] == '=') {
          g_ptr_array_remove_index(env, j);
          break;
        }
      g_ptr_array_add(env, (char *)kv);
    }
  gboolean has_path = FALSE;
  for (guint j = 0; j < env->len; j++)
    has_path |= g_str_has_prefix(env->pdata[j], "PATH=");
  if (!has_path)
    g_ptr_array_add(env, (char *)"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  g_ptr_array_add(env, NULL);
  const char *cwd = spec->workdir ? spec->workdir : (img && img->workdir) ? img->workdir : "/";
  if (cwd[0] != '/')
    return set_gerror(error, OAKUK_EINVAL, "instance %s: working directory %s is not absolute", spec->name, cwd),
           NULL;
  gint64 uid, gid;
  if (!resolve_user(rootfs, img ? img->user : NULL, &uid, &gid, error))
    return NULL;

  static const char *const caps[] = {"CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", NULL};
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "ociVersion");
  json_builder_add_string_value(b, "1.0.2");
  json_builder_set_member_name(b, "process");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "terminal");
  json_builder_add_boolean_value(b, FALSE);
  json_builder_set_member_name(b, "user");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "uid");
  json_builder_add_int_value(b, uid);
  json_builder_set_member_name(b, "gid");
  json_builder_add_int_value(b, gid);
  json_builder_end_object(b);
  json_builder_set_member_name(b, "args");
  add_strings(b, (const char *const *)args->pdata);
  json_builder_set_member_name(b, "env");
  add_strings(b, (const char *const *)env->pdata);
  json_builder_set_member_name(b, "cwd");
  json_builder_add_string_value(b, cwd);
  json_builder_set_member_name(b, "capabilities");
  json_builder_begin_object(b);
  const char *sets[] = {"bounding", "effective", "permitted"};
  for (size_t k = 0; k < G_N_ELEMENTS(sets); k++) {
    json_builder_set_member_name(b, sets[k]);
    add_strings(b, caps);
  }
  json_builder_end_object(b);
  json_builder_set_member_name(b, "rlimits");
  json_builder_begin_array(b);
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "type");
  json_builder_add_string_value(b, "RLIMIT_NOFILE");
  json_builder_set_member_name(b, "hard");
  json_builder_add_int_value(b, 1024);
  json_builder_set_member_name(b, "soft");
  json_builder_add_int_value(b, 1024);
  json_builder_end_object(b);
  json_builder_end_array(b);
  json_builder_set_member_name(b, "noNewPrivileges");
  json_builder_add_boolean_value(b, TRUE);
  json_builder_end_object(b); /* process */

  json_builder_set_member_name(b, "root");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "path");
  json_builder_add_string_value(b, "rootfs");
  json_builder_set_member_name(b, "readonly");
  json_builder_add_boolean_value(b, spec->readonly_rootfs);
  json_builder_end_object(b);
  json_builder_set_member_name(b, "hostname");
  g_autofree char *host = g_strndup(spec->name, 63);
  json_builder_add_string_value(b, host);

  json_builder_set_member_name(b, "mounts");
  json_builder_begin_array(b);
  add_mount(b, "/proc", "proc", "proc", (const char *const[]){"nosuid", "noexec", "nodev", NULL});
  add_mount(b, "/dev", "tmpfs", "tmpfs", (const char *const[]){"nosuid", "strictatime", "mode=755", "size=65536k", NULL});
  add_mount(b, "/dev/pts", "devpts", "devpts",
            (const char *const[]){"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", NULL});
  add_mount(b, "/dev/shm", "tmpfs", "shm",
            (const char *const[]){"nosuid", "noexec", "nodev", "mode=1777", "size=65536k", NULL});
  add_mount(b, "/dev/mqueue", "mqueue", "mqueue", (const char *const[]){"nosuid", "noexec", "nodev", NULL});
  add_mount(b, "/sys", "sysfs", "sysfs", (const char *const[]){"nosuid", "noexec", "nodev", "ro", NULL});
  add_mount(b, "/sys/fs/cgroup", "cgroup", "cgroup",
            (const char *const[]){"nosuid", "noexec", "nodev", "relatime", "ro", NULL});
  if (spec->readonly_rootfs)
    add_mount(b, "/tmp", "tmpfs", "tmpfs", (const char *const[]){"nosuid", "nodev", "mode=1777", NULL});
  json_builder_end_array(b);

  json_builder_set_member_name(b, "linux");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "namespaces");
  json_builder_begin_array(b);
  add_namespace(b, "pid", NULL);
  add_namespace(b, "ipc", NULL);
  add_namespace(b, "uts", NULL);
  add_namespace(b, "mount", NULL);
  add_namespace(b, "network", spec->netns_path);
  json_builder_end_array(b);
  json_builder_set_member_name(b, "cgroupsPath");
  g_autofree char *cgpath = g_strdup_printf("/oakuk/%s", spec->name);
  json_builder_add_string_value(b, cgpath);
  json_builder_set_member_name(b, "resources");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "devices");
  json_builder_begin_array(b);
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "allow");
  json_builder_add_boolean_value(b, FALSE);
  json_builder_set_member_name(b, "access");
  json_builder_add_string_value(b, "rwm");
  json_builder_end_object(b);
  json_builder_end_array(b);
  json_builder_set_member_name(b, "memory");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "limit");
  json_builder_add_int_value(b, spec->memory_mb * 1024 * 1024);
  json_builder_end_object(b);
  json_builder_set_member_name(b, "cpu");
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "quota");
  json_builder_add_int_value(b, (gint64)spec->vcpus * 100000);
  json_builder_set_member_name(b, "period");
  json_builder_add_int_value(b, 100000);
  json_builder_end_object(b);
  json_builder_end_object(b); /* resources */
  json_builder_set_member_name(b, "maskedPaths");
  add_strings(b, (const char *const[]){"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                                       "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                                       "/proc/sched_debug", "/sys/firmware", "/proc/scsi", NULL});
  json_builder_set_member_name(b, "readonlyPaths");
  add_strings(b, (const char *const[]){"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
                                       NULL});
  json_builder_end_object(b); /* linux */
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  return json_to_string(root, TRUE);
}

/* ---- status ---- */

static void emit(Instance *i, int32_t status, const char *detail) {
  if (i->c)
    oakuk_runtime_emit(i->c->rt, i->name, status, detail);
}

static void clear_timer(Instance *i) {
  if (i->timer) {
    g_source_destroy(i->timer);
    g_source_unref(i->timer);
    i->timer = NULL;
  }
}

static void detach(Instance *i) {
  clear_timer(i);
  oakuk_proc_watch_clear(&i->watch);
  if (i->c)
    g_hash_table_remove(i->c->instances, i->name);
}

static char *output_detail(Instance *i, const char *what) {
  g_autofree char *log = g_build_filename(i->dir, "output.log", NULL);
  g_autofree char *tail = oakuk_qemu_serial_tail(log, OUTPUT_TAIL_LINES);
  return *tail ? g_strdup_printf("%s; last output lines:\n%s", what, tail)
               : g_strdup_printf("%s; the output log is empty", what);
}

/* Releases what runc and the overlay hold; with remove, also the instance directory. Blocking. */
static void release(const Env *c, const char *name, const char *dir, gboolean remove) {
  runc_delete(c, name);
  g_autofree char *rootfs = g_build_filename(dir, "bundle", "rootfs", NULL);
  if (umount2(rootfs, MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT)
    g_warning("instance %s: unmount %s: %s", name, rootfs, g_strerror(errno));
  if (remove)
    oakuk_rm_rf(dir, NULL);
}

static void release_thread(GTask *task, gpointer src, gpointer data, GCancellable *cancel) {
  Instance *i = data;
  release(&i->env, i->name, i->dir, i->release_removes);
  g_task_return_boolean(task, TRUE);
}

static void start_release(Instance *i);

static void released(GObject *src, GAsyncResult *res, gpointer data) {
  Instance *i = g_task_get_task_data(G_TASK(res));
  i->cleaning = false;
  if (!i->stopping || !i->c)
    return;
  if (!i->release_removes) { /* undeployed while the post-exit release ran */
    start_release(i);
    return;
  }
  ContainerRuntime *c = i->c;
  g_autofree char *name = g_strdup(i->name);
  detach(i);
  oakuk_runtime_emit(c->rt, name, OAKUK_STATUS_UNDEPLOYED, NULL);
}

/* Runs release() in a thread; with i->stopping, UNDEPLOYED follows. */
static void start_release(Instance *i) {
  i->cleaning = true;
  i->release_removes = i->stopping;
  GTask *task = g_task_new(NULL, NULL, released, NULL);
  g_task_set_task_data(task, inst_ref(i), (GDestroyNotify)inst_unref);
  g_task_run_in_thread(task, release_thread);
  g_object_unref(task);
}

/* wait_status from waitpid, or -1 when unknown (an adopted container that was not our child). */
static void on_exited(Instance *i, int wait_status) {
  if (i->exited)
    return;
  i->exited = true;
  i->pid = 0;
  clear_timer(i);
  oakuk_proc_watch_clear(&i->watch);
  if (i->stopping) {
    start_release(i);
    return;
  }
  g_autofree char *what = NULL;
  if (wait_status >= 0 && WIFSIGNALED(wait_status))
    what = g_strdup_printf("the container was killed by signal %d", WTERMSIG(wait_status));
  else if (wait_status >= 0)
    what = g_strdup_printf("the container exited with code %d", WEXITSTATUS(wait_status));
  else
    what = g_strdup("the container exited while no runtime watched it (exit code unknown)");
  g_autofree char *detail = output_detail(i, what);
  gboolean clean = wait_status < 0 || (WIFEXITED(wait_status) && WEXITSTATUS(wait_status) == 0);
  int32_t status = !i->running ? OAKUK_STATUS_FAILED
                   : (i->one_shot && clean) ? OAKUK_STATUS_COMPLETED
                                            : OAKUK_STATUS_DEAD;
  i->running = false;
  emit(i, status, detail);
  start_release(i); /* frees the cgroup and the overlay; the directory stays for the logs */
}

static void exited_cb(int wait_status, gpointer data) {
  on_exited(data, wait_status);
}

static void watch_child(Instance *i) {
  oakuk_proc_watch_child(&i->watch, i->pid, i->c->rt->context, exited_cb, inst_ref(i), (GDestroyNotify)inst_unref);
}

/* ---- stop ---- */

/* `runc kill <name> <sig>` in a thread (runc takes tens of ms: not on the main loop). Should runc
 * refuse (state gone, runc broken) while the process lives, the signal goes to the pid directly:
 * it is our child (or watched through its pidfd), so the pid has not been recycled. */
typedef struct {
  Instance *i;
  GPid pid;
  int sig;
} KillJob;

static void kill_job_free(gpointer data) {
  KillJob *k = data;
  inst_unref(k->i);
  g_free(k);
}

static void kill_thread(GTask *task, gpointer src, gpointer data, GCancellable *cancel) {
  KillJob *k = data;
  const char *args[] = {"kill", k->i->name, k->sig == SIGKILL ? "KILL" : "TERM", NULL};
  g_autofree char *out = NULL;
  int st = runc_run(&k->i->env, args, -1, &out, NULL);
  if (st != 0 && kill(k->pid, 0) == 0) {
    g_debug("instance %s: runc kill %s failed (%s), signalling pid %d", k->i->name, args[2],
            out ? g_strstrip(out) : "", (int)k->pid);
    kill(k->pid, k->sig);
  }
  g_task_return_boolean(task, TRUE);
}

static void signal_container(Instance *i, int sig) {
  if (i->pid <= 0 || i->exited)
    return;
  KillJob *k = g_new0(KillJob, 1);
  k->i = inst_ref(i);
  k->pid = i->pid;
  k->sig = sig;
  GTask *task = g_task_new(NULL, NULL, NULL, NULL);
  g_task_set_task_data(task, k, kill_job_free);
  g_task_run_in_thread(task, kill_thread);
  g_object_unref(task);
}

static gboolean stop_kill(gpointer data) {
  Instance *i = data;
  g_source_unref(i->timer);
  i->timer = NULL;
  g_debug("instance %s: still alive after SIGTERM, runc kill KILL", i->name);
  signal_container(i, SIGKILL);
  return G_SOURCE_REMOVE;
}

/* `runc kill TERM`, then `runc kill KILL` after the grace period; the exit is seen by the child
 * watch (or pidfd), then release() runs `runc delete`. */
static void stop(Instance *i) {
  signal_container(i, SIGTERM);
  clear_timer(i);
  i->timer = g_timeout_source_new_seconds(i->grace_s ? i->grace_s : 1);
  g_source_set_callback(i->timer, stop_kill, inst_ref(i), (GDestroyNotify)inst_unref);
  g_source_attach(i->timer, i->c->rt->context);
}

/* ---- deploy ---- */

typedef struct {
  Instance *i;
  char *detail;
} ProgressMsg;

static void progress_msg_free(gpointer data) {
  ProgressMsg *m = data;
  inst_unref(m->i);
  g_free(m->detail);
  g_free(m);
}

static gboolean progress_dispatch(gpointer data) {
  ProgressMsg *m = data;
  if (m->i->c && m->i->preparing && !m->i->stopping)
    emit(m->i, OAKUK_STATUS_CREATING, m->detail);
  return G_SOURCE_REMOVE;
}

static void on_progress(guint layer, guint layers, int percent, gpointer data) {
  Instance *i = data;
  ProgressMsg *m = g_new0(ProgressMsg, 1);
  m->i = inst_ref(i);
  m->detail = g_strdup_printf("pulling layer %u/%u: %d%%", layer, layers, percent);
  g_main_context_invoke_full(i->env.context, G_PRIORITY_DEFAULT, progress_dispatch, m, progress_msg_free);
}

static gboolean mount_overlay(const char *lower, const char *dir, GError **error) {
  g_autofree char *upper = g_build_filename(dir, "upper", NULL);
  g_autofree char *work = g_build_filename(dir, "work", NULL);
  g_autofree char *rootfs = g_build_filename(dir, "bundle", "rootfs", NULL);
  if (g_mkdir_with_parents(upper, 0755) != 0 || g_mkdir_with_parents(work, 0700) != 0 ||
      g_mkdir_with_parents(rootfs, 0755) != 0)
    return set_gerror(error, OAKUK_EIO, "create %s: %s", rootfs, g_strerror(errno)), FALSE;
  g_autofree char *opts = g_strdup_printf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work);
  if (mount("overlay", rootfs, "overlay", 0, opts) != 0)
    return set_gerror(error, OAKUK_EIO, "mount overlay on %s: %s", rootfs, g_strerror(errno)), FALSE;
  return TRUE;
}

static gboolean write_instance_json(Instance *i, const char *image_digest, GError **error) {
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "name");
  json_builder_add_string_value(b, i->name);
  json_builder_set_member_name(b, "pid");
  json_builder_add_int_value(b, i->pid);
  json_builder_set_member_name(b, "start_time");
  json_builder_add_int_value(b, (gint64)i->start_time);
  json_builder_set_member_name(b, "one_shot");
  json_builder_add_boolean_value(b, i->one_shot);
  json_builder_set_member_name(b, "grace_s");
  json_builder_add_int_value(b, i->grace_s);
  if (image_digest) {
    json_builder_set_member_name(b, "image_digest");
    json_builder_add_string_value(b, image_digest);
  }
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autofree char *text = json_to_string(root, TRUE);
  g_autofree char *path = g_build_filename(i->dir, "instance.json", NULL);
  return g_file_set_contents(path, text, -1, error);
}

/* Starts the container with `runc run --detach` (DESIGN §10 names `runc create` + `runc start`):
 * one runc process instead of two saves one Go runtime start (~25 ms of ~90 ms on the reference
 * node, bench/container-deploy), and nothing changes for exit codes: in both cases the container's
 * init is forked by runc, re-parented to us (PR_SET_CHILD_SUBREAPER) when runc exits, and stays
 * our unreaped child until watch_child() collects its status, even when it has already exited by
 * then (a zombie keeps its pid and /proc/<pid>/stat, so start_time is still right). Output: runc
 * passes its own stdio (no terminal) to the container, i.e. output.log. */
static gboolean runc_start(Instance *i, GError **error) {
  const Env *c = &i->env;
  g_autofree char *bundle = g_build_filename(i->dir, "bundle", NULL);
  g_autofree char *pidfile = g_build_filename(i->dir, "container.pid", NULL);
  g_autofree char *logpath = g_build_filename(i->dir, "output.log", NULL);
  int logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (logfd < 0)
    return set_gerror(error, OAKUK_EIO, "create %s: %s", logpath, g_strerror(errno)), FALSE;
  const char *run[] = {"run", "--detach", "--bundle", bundle, "--pid-file", pidfile, i->name, NULL};
  int st = runc_run(c, run, logfd, NULL, error);
  close(logfd);
  if (st < 0)
    return FALSE;
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    g_autofree char *tail = oakuk_qemu_serial_tail(logpath, 3);
    return set_gerror(error, OAKUK_EIO, "runc run failed (status %d): %s", st, tail), FALSE;
  }
  g_autofree char *pidtext = NULL;
  if (!g_file_get_contents(pidfile, &pidtext, NULL, error))
    return FALSE;
  i->pid = (GPid)g_ascii_strtoll(pidtext, NULL, 10);
  if (i->pid <= 0)
    return set_gerror(error, OAKUK_EIO, "runc run: %s holds no pid", pidfile), FALSE;
  oakuk_proc_stat(i->pid, NULL, NULL, &i->start_time);
  return TRUE;
}

static void prepare_thread(GTask *task, gpointer src, gpointer data, GCancellable *cancel) {
  Instance *i = data;
  const Env *c = &i->env;
  const oakuk_instance_spec *s = i->spec;
  GError *err = NULL;
  gint64 t_start = g_get_monotonic_time();
  oakuk_rm_rf(i->dir, NULL);
  if (g_mkdir_with_parents(i->dir, 0700) != 0) {
    set_gerror(&err, OAKUK_EIO, "create %s: %s", i->dir, g_strerror(errno));
    g_task_return_error(task, err);
    return;
  }
  g_autoptr(OakukOciImage) img = NULL;
  const char *lower = s->rootfs;
  if (s->image) {
    img = oakuk_oci_pull(c->images_dir, s->image, s->registry_username, s->registry_password, &c->opts, on_progress,
                         i, &err);
    if (!img) {
      g_prefix_error(&err, "pull %s: ", s->image);
      g_task_return_error(task, err);
      return;
    }
    lower = img->rootfs;
  }
  gint64 t_pull = g_get_monotonic_time();
  g_autofree char *config = NULL;
  g_autofree char *cfgpath = g_build_filename(i->dir, "bundle", "config.json", NULL);
  gint64 t_mount = 0, t_config = 0;
  if (!mount_overlay(lower, i->dir, &err) || !(t_mount = g_get_monotonic_time()) ||
      !(config = build_config(s, img, lower, &err)) || !g_file_set_contents(cfgpath, config, -1, &err) ||
      !(t_config = g_get_monotonic_time()) || !runc_start(i, &err) ||
      !write_instance_json(i, img ? img->manifest_digest : NULL, &err)) {
    release(c, i->name, i->dir, FALSE);
    if (i->pid > 0) {
      waitpid(i->pid, NULL, 0);
      i->pid = 0;
    }
    g_task_return_error(task, err);
    return;
  }
  gint64 t_end = g_get_monotonic_time();
  g_debug("instance %s: pull %.1f ms, overlay %.1f ms, config %.1f ms, runc %.1f ms", i->name,
          (t_pull - t_start) / 1e3, (t_mount - t_pull) / 1e3, (t_config - t_mount) / 1e3, (t_end - t_config) / 1e3);
  g_task_return_boolean(task, TRUE);
}

static void prepared(GObject *src, GAsyncResult *res, gpointer data) {
  Instance *i = g_task_get_task_data(G_TASK(res));
  g_autoptr(GError) err = NULL;
  i->preparing = false;
  gboolean ok = g_task_propagate_boolean(G_TASK(res), &err);
  if (!i->c)
    return;
  if (ok) {
    watch_child(i); /* runc run has exited: the container's init is our child (subreaper) */
    i->running = true;
    if (i->stopping) {
      stop(i);
      return;
    }
    emit(i, OAKUK_STATUS_RUNNING, NULL);
    return;
  }
  i->exited = true;
  if (i->stopping) {
    start_release(i);
    return;
  }
  g_autofree char *detail = g_strdup_printf("instance %s: %s", i->name, err->message);
  g_debug("%s", detail);
  emit(i, OAKUK_STATUS_FAILED, detail);
}

static Instance *instance_new(ContainerRuntime *c, const char *name) {
  Instance *i = g_new0(Instance, 1);
  i->refcount = 1;
  i->c = c;
  i->name = g_strdup(name);
  i->dir = g_build_filename(c->instances_dir, name, NULL);
  i->watch = (OakukProcWatch)OAKUK_PROC_WATCH_INIT;
  i->grace_s = c->env.opts.stop_grace_s;
  env_copy(&i->env, &c->env);
  g_hash_table_insert(c->instances, i->name, i);
  return i;
}

static gboolean c_deploy(oakuk_runtime *rt, const oakuk_instance_spec *spec, GError **error) {
  ContainerRuntime *c = rt->impl;
  if (!spec->image && !spec->rootfs)
    return set_gerror(error, OAKUK_EINVAL, "instance %s: image: no image reference (and no rootfs) given", spec->name),
           FALSE;
  if (spec->image && !g_str_has_prefix(spec->image, "oci-archive:")) {
    OakukOciRef ref;
    if (!oakuk_oci_ref_parse(spec->image, &ref, error))
      return g_prefix_error(error, "instance %s: image: ", spec->name), FALSE;
    oakuk_oci_ref_clear(&ref);
  }
  if (!spec->image && !g_file_test(spec->rootfs, G_FILE_TEST_IS_DIR))
    return set_gerror(error, OAKUK_EINVAL, "instance %s: rootfs %s is not a directory", spec->name, spec->rootfs),
           FALSE;
  if (spec->netns_path && !g_file_test(spec->netns_path, G_FILE_TEST_EXISTS))
    return set_gerror(error, OAKUK_EINVAL, "instance %s: network namespace %s does not exist", spec->name,
                      spec->netns_path), FALSE;
  if (spec->memory_mb < 4 || spec->vcpus < 1)
    return set_gerror(error, OAKUK_EINVAL, "instance %s: memory %" G_GINT64_FORMAT " MB / vcpus %d: need >= 4 MB and >= 1",
                      spec->name, spec->memory_mb, spec->vcpus), FALSE;
  Instance *i = instance_new(c, spec->name);
  i->spec = oakuk_instance_spec_copy(spec);
  i->one_shot = spec->one_shot;
  if (spec->graceful_stop_s > 0)
    i->grace_s = (guint)spec->graceful_stop_s;
  i->preparing = true;
  oakuk_runtime_emit(rt, i->name, OAKUK_STATUS_CREATING, NULL);
  GTask *task = g_task_new(NULL, NULL, prepared, NULL);
  g_task_set_task_data(task, inst_ref(i), (GDestroyNotify)inst_unref);
  g_task_run_in_thread(task, prepare_thread);
  g_object_unref(task);
  return TRUE;
}

/* ---- undeploy, stats, adopt ---- */

static Instance *lookup(ContainerRuntime *c, const char *name, GError **error) {
  Instance *i = g_hash_table_lookup(c->instances, name);
  if (!i)
    set_gerror(error, OAKUK_ENOTFOUND, "instance %s: not run by this runtime", name);
  return i;
}

static gboolean c_undeploy(oakuk_runtime *rt, const char *name, GError **error) {
  Instance *i = lookup(rt->impl, name, error);
  if (!i)
    return FALSE;
  if (i->stopping)
    return TRUE;
  i->stopping = true;
  if (i->preparing)
    return TRUE; /* prepared() continues */
  if (i->exited || i->pid <= 0) {
    i->exited = true;
    if (!i->cleaning)
      start_release(i);
    else
      g_debug("instance %s: undeploy after the release in progress", name);
    return TRUE;
  }
  stop(i);
  return TRUE;
}

static gboolean c_stats(oakuk_runtime *rt, const char *name, double *cpu, int64_t *rss, GError **error) {
  Instance *i = lookup(rt->impl, name, error);
  if (!i)
    return FALSE;
  gint64 usage = 0, mem = 0;
  g_autofree char *cpuf = oakuk_cgroup_v2() ? cgroup_file(name, "cpuacct", NULL, "cpu.stat")
                                      : cgroup_file(name, "cpuacct", "cpuacct.usage", NULL);
  gboolean ok = !i->exited && i->pid > 0 &&
                (oakuk_cgroup_v2() ? read_stat_key(cpuf, "usage_usec", &usage) : read_int_file(cpuf, &usage));
  if (!ok)
    return set_gerror(error, OAKUK_ENOTFOUND, "instance %s: not running (no cgroup)", name), FALSE;
  if (oakuk_cgroup_v2())
    usage *= 1000;
  gint64 now = g_get_monotonic_time();
  double secs = (double)(now - i->last_time_us) / 1e6;
  *cpu = (i->last_time_us && secs > 0 && (guint64)usage >= i->last_cpu_ns)
             ? (double)((guint64)usage - i->last_cpu_ns) / 1e9 / secs * 100.0
             : 0.0;
  i->last_cpu_ns = (guint64)usage;
  i->last_time_us = now;
  g_autofree char *memf = cgroup_file(name, "memory", "memory.stat", "memory.stat");
  if (!read_stat_key(memf, oakuk_cgroup_v2() ? "anon" : "total_rss", &mem))
    mem = 0;
  *rss = mem / 1024;
  return TRUE;
}

static gboolean c_cgroup_memory(oakuk_runtime *rt, const char *name, int64_t *kb, GError **error) {
  Instance *i = lookup(rt->impl, name, error);
  if (!i)
    return FALSE;
  g_autofree char *f = cgroup_file(name, "memory", "memory.usage_in_bytes", "memory.current");
  gint64 b = 0;
  if (i->exited || !read_int_file(f, &b))
    return set_gerror(error, OAKUK_ENOTFOUND, "instance %s: no cgroup (not running)", name), FALSE;
  *kb = b / 1024;
  return TRUE;
}

static int64_t c_pid(oakuk_runtime *rt, const char *name) {
  Instance *i = g_hash_table_lookup(((ContainerRuntime *)rt->impl)->instances, name);
  return i && !i->exited ? i->pid : 0;
}

static gboolean adopt_one(gpointer impl, const char *name) {
  ContainerRuntime *c = impl;
  g_autofree char *dir = g_build_filename(c->instances_dir, name, NULL);
  g_autofree char *path = g_build_filename(dir, "instance.json", NULL);
  g_autoptr(JsonParser) p = json_parser_new();
  if (!oakuk_instance_name_is_valid(name) || !json_parser_load_from_file(p, path, NULL) ||
      !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p))) {
    g_debug("instances/%s: no usable instance.json, removed", name);
    if (oakuk_instance_name_is_valid(name))
      release(&c->env, name, dir, TRUE);
    return FALSE;
  }
  JsonObject *o = json_node_get_object(json_parser_get_root(p));
  Instance *i = instance_new(c, name);
  i->start_time = (guint64)json_object_get_int_member_with_default(o, "start_time", 0);
  i->one_shot = json_object_get_boolean_member_with_default(o, "one_shot", FALSE);
  i->grace_s = (guint)json_object_get_int_member_with_default(o, "grace_s", c->env.opts.stop_grace_s);
  oakuk_runtime_track(c->rt, name);
  g_autofree char *status = NULL;
  GPid pid = 0;
  guint64 start = 0;
  char state = 0;
  i->running = true;
  if (runc_state(&c->env, name, &status, &pid) && strcmp(status, "running") == 0 && pid > 0 &&
      oakuk_proc_stat(pid, &state, NULL, &start) && start == i->start_time && state != 'Z') {
    i->pid = pid;
    oakuk_proc_watch_adopted(&i->watch, pid, start, c->rt->context, exited_cb, inst_ref(i),
                             (GDestroyNotify)inst_unref);
    emit(i, OAKUK_STATUS_RUNNING, NULL);
    return TRUE;
  }
  on_exited(i, -1);
  return FALSE;
}

static int c_adopt(oakuk_runtime *rt, GError **error) {
  ContainerRuntime *c = rt->impl;
  return oakuk_adopt_dir(c->instances_dir, c->instances, adopt_one, c, error);
}

static void c_finalize(oakuk_runtime *rt) {
  ContainerRuntime *c = rt->impl;
  GList *all = g_hash_table_get_values(c->instances);
  for (GList *l = all; l; l = l->next) {
    Instance *i = inst_ref(l->data);
    gboolean stop_it = !rt->keep_instances && !i->exited && i->pid > 0;
    GPid pid = i->pid;
    gboolean own = oakuk_proc_watch_active(&i->watch) && i->watch.child;
    detach(i);
    i->c = NULL;
    if (stop_it)
      oakuk_proc_kill_wait(pid, own);
    if (!rt->keep_instances && !i->preparing)
      release(&c->env, i->name, i->dir, TRUE);
    inst_unref(i);
  }
  g_list_free(all);
  g_hash_table_unref(c->instances);
  g_free(c->instances_dir);
  env_clear(&c->env);
  g_free(c);
}

static const OakukRuntimeClass container_class = {
    .virt = OAKUK_VIRT_CONTAINER,
    .deploy = c_deploy,
    .undeploy = c_undeploy,
    .stats = c_stats,
    .cgroup_memory = c_cgroup_memory,
    .adopt = c_adopt,
    .pid = c_pid,
    .finalize = c_finalize,
};

OAKUK_API oakuk_runtime *oakuk_container_runtime_new(const char *state_dir, const oakuk_container_options *opts,
                                                     oakuk_error **error) {
  g_return_val_if_fail(state_dir != NULL, NULL);
  if (opts && opts->version != OAKUK_CONTAINER_OPTIONS_VERSION)
    return oakuk_set_error(error, OAKUK_EINVAL, 0, "opts.version", "container options version %u is not %d",
                           opts->version, OAKUK_CONTAINER_OPTIONS_VERSION), NULL;
  const char *runc_name = opts && opts->runc_path ? opts->runc_path : "runc";
  g_autofree char *runc = g_find_program_in_path(runc_name);
  if (!runc)
    return oakuk_set_error(error, OAKUK_EUNSUPPORTED, 0, "runc_path", "runc (%s) not found", runc_name), NULL;
  ContainerRuntime *c = g_new0(ContainerRuntime, 1);
  oakuk_container_options d = OAKUK_CONTAINER_OPTIONS_INIT;
  c->env.opts = opts ? *opts : d;
  c->env.insecure = g_strdup(c->env.opts.insecure_registries);
  c->env.opts.insecure_registries = c->env.insecure;
  c->env.opts.runc_path = NULL;
  c->env.runc = g_steal_pointer(&runc);
  c->env.context = g_main_context_ref_thread_default();
  c->instances_dir = g_build_filename(state_dir, "instances", NULL);
  c->env.images_dir = g_build_filename(state_dir, "images", NULL);
  c->env.root = g_build_filename(state_dir, "runc", NULL);
  c->instances = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, (GDestroyNotify)inst_unref);
  const char *dirs[] = {c->instances_dir, c->env.images_dir, c->env.root};
  for (size_t k = 0; k < G_N_ELEMENTS(dirs); k++)
    if (g_mkdir_with_parents(dirs[k], 0700) != 0) {
      int e = errno;
      oakuk_set_error(error, OAKUK_EIO, e, "state_dir", "create %s: %s", dirs[k], g_strerror(e));
      c_finalize(&(oakuk_runtime){.impl = c});
      return NULL;
    }
  /* Container inits are re-parented to us when runc run exits: their exit codes become ours. */
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
    g_warning("PR_SET_CHILD_SUBREAPER: %s (container exit codes will be unknown)", g_strerror(errno));
  c->rt = oakuk_runtime_alloc(&container_class, c);
  return c->rt;
}

/* ---- pull and build (public, blocking) ---- */

OAKUK_API int oakuk_container_pull(const char *state_dir, const char *reference, const char *username,
                                   const char *password, const oakuk_container_options *opts, char **digest_out,
                                   oakuk_error **error) {
  g_return_val_if_fail(state_dir != NULL && reference != NULL, OAKUK_EINVAL);
  GError *err = NULL;
  g_autofree char *images = g_build_filename(state_dir, "images", NULL);
  g_autoptr(OakukOciImage) img = oakuk_oci_pull(images, reference, username, password, opts, NULL, NULL, &err);
  if (!img)
    return oakuk_propagate_gerror(error, err);
  if (digest_out)
    *digest_out = g_strdup(img->manifest_digest);
  return 0;
}

/* Container runtime (docs/architecture.md §11, §13): the runc backend of the instance lifecycle in runtime.c.
 * Pull (oci.c), an overlay of the shared unpacked image as the bundle rootfs, config.json (OCI
 * runtime spec), `runc run --detach` in the caller's netns (see runc_start), exit codes through
 * PR_SET_CHILD_SUBREAPER, stop with `runc kill TERM`, the grace period, `runc kill KILL`, then
 * `runc delete`. Each instance lives in <state_dir>/instances/<name>/ (bundle/{config.json,rootfs},
 * upper/, work/, output.log, instance.json); runc keeps its state in <state_dir>/runc. */
#include "archive-safe.h"
#include "oci-private.h"
#include "runtime-private.h"

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

/* What threads need of the runtime, copied per instance so that they never touch the runtime
 * (which may be finalized while they run). */
typedef struct {
  char *runc, *root, *images_dir, *insecure, *file_allowed;
  oakuk_container_options opts;
} Env;

typedef struct {
  Env env;
} ContainerRuntime;

typedef struct {
  Env env;
  char *image_digest;
  guint64 last_cpu_ns;
  gint64 last_time_us;
} CtrData;

static void env_copy(Env *dst, const Env *src) {
  dst->runc = g_strdup(src->runc);
  dst->root = g_strdup(src->root);
  dst->images_dir = g_strdup(src->images_dir);
  dst->insecure = g_strdup(src->insecure);
  dst->file_allowed = g_strdup(src->file_allowed);
  dst->opts = src->opts;
  dst->opts.insecure_registries = dst->insecure;
  dst->opts.file_allowed_dirs = dst->file_allowed;
}

static void env_clear(Env *e) {
  g_free(e->runc);
  g_free(e->root);
  g_free(e->images_dir);
  g_free(e->insecure);
  g_free(e->file_allowed);
}

/* How many bytes of the options struct version 1 has. */
#define OPTIONS_V1_SIZE G_STRUCT_OFFSET(oakuk_container_options, file_allowed_dirs)

OAKUK_API int oakuk_container_options_init(oakuk_container_options *opts, unsigned int version) {
  g_return_val_if_fail(opts != NULL, OAKUK_EINVAL);
  if (version != OAKUK_CONTAINER_OPTIONS_VERSION && version != OAKUK_CONTAINER_OPTIONS_VERSION_1)
    return OAKUK_EINVAL;
  oakuk_container_options d = OAKUK_CONTAINER_OPTIONS_INIT;
  d.version = version;
  /* A version-1 caller's struct ends before file_allowed_dirs: write only its part. */
  memcpy(opts, &d, version == OAKUK_CONTAINER_OPTIONS_VERSION_1 ? OPTIONS_V1_SIZE : sizeof d);
  return 0;
}

/* Reads opts of any known version (NULL: defaults) into a current-version *o; the strings stay
 * the caller's. */
int oakuk_container_options_read(oakuk_container_options *o, const oakuk_container_options *opts,
                                 oakuk_error **error) {
  oakuk_container_options d = OAKUK_CONTAINER_OPTIONS_INIT;
  *o = d;
  if (!opts)
    return 0;
  if (opts->version == OAKUK_CONTAINER_OPTIONS_VERSION_1) {
    memcpy(o, opts, OPTIONS_V1_SIZE);
    o->version = OAKUK_CONTAINER_OPTIONS_VERSION;
    return 0;
  }
  if (opts->version != OAKUK_CONTAINER_OPTIONS_VERSION)
    return oakuk_set_error(error, OAKUK_EINVAL, 0, "version", "container options version %u is not %d or %d",
                           opts->version, OAKUK_CONTAINER_OPTIONS_VERSION_1, OAKUK_CONTAINER_OPTIONS_VERSION);
  *o = *opts;
  g_autofree char *bad = NULL;
  g_auto(GStrv) dirs = oakuk_archive_local_dirs(o->file_allowed_dirs, &bad);
  if (bad)
    return oakuk_set_error(error, OAKUK_EINVAL, 0, "file_allowed_dirs",
                           "container options: file_allowed_dirs: \"%s\" is not an absolute directory", bad);
  return 0;
}

static CtrData *cd(OakukInstance *i) {
  return i->data;
}

static void data_free(void *data) {
  CtrData *d = data;
  env_clear(&d->env);
  g_free(d->image_digest);
  g_free(d);
}

static void c_init(OakukInstance *i) {
  CtrData *d = g_new0(CtrData, 1);
  env_copy(&d->env, &((ContainerRuntime *)i->rt->impl)->env);
  i->data = d;
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
  g_autoptr(JsonNode) root = oakuk_json_parse(out, strlen(out), NULL);
  if (!root || !JSON_NODE_HOLDS_OBJECT(root))
    return FALSE;
  JsonObject *o = json_node_get_object(root);
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
static char *cgroup_file(const char *name, const char *v1_controller, const char *v1_file,
                         const char *v2_file) {
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

static void add_mount(JsonBuilder *b, const char *dest, const char *type, const char *src,
                      const char *const *opts) {
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
      return set_gerror(error, OAKUK_EINVAL, "image User %s: %s is not in the image's /%s", user, ug[k],
                        files[k]),
             FALSE;
  }
  return TRUE;
}

/* ---- seccomp ---- */

/* The system calls a container never needs; they fail with EPERM. Names unknown on an
 * architecture are skipped by runc. */
static const char *const seccomp_denied[] = {
    /* kernel code and the machine */
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module", "create_module",
    "query_module", "get_kernel_syms", "reboot", "swapon", "swapoff", "iopl", "ioperm", "syslog", "acct",
    "quotactl", "quotactl_fd", "lookup_dcookie", "nfsservctl", "uselib", "_sysctl", "ustat", "vm86",
    "vm86old", "vhangup",
    /* mounts and namespaces (clone with namespace flags: below) */
    "mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick", "move_mount",
    "open_tree", "mount_setattr", "unshare", "setns",
    /* the kernel's attack surface */
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "keyctl", "add_key", "request_key",
    /* other processes and file handles */
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp", "open_by_handle_at",
    /* the clocks */
    "settimeofday", "stime", "clock_settime", "clock_settime64", "clock_adjtime", "clock_adjtime64",
    "adjtimex", NULL};

/* clone flags that make namespaces: clone with any of them fails with EPERM like unshare. */
static const guint64 seccomp_clone_ns_flags[] = {0x00020000 /* CLONE_NEWNS */,
                                                 0x02000000 /* CLONE_NEWCGROUP */,
                                                 0x04000000 /* CLONE_NEWUTS */,
                                                 0x08000000 /* CLONE_NEWIPC */,
                                                 0x10000000 /* CLONE_NEWUSER */,
                                                 0x20000000 /* CLONE_NEWPID */,
                                                 0x40000000 /* CLONE_NEWNET */};

/* libseccomp's names for the host's architectures: the native one and those its kernel also
 * runs (32-bit x86 and x32 on amd64, arm on arm64), so that the rules hold for their system
 * calls too. NULL when unknown (runc then filters the native one only). */
static const char *const *seccomp_arches(const char *goarch) {
  static const char *const amd64[] = {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", NULL};
  static const char *const arm64[] = {"SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM", NULL};
  static const char *const arm[] = {"SCMP_ARCH_ARM", NULL};
  static const char *const i386[] = {"SCMP_ARCH_X86", NULL};
  static const char *const riscv64[] = {"SCMP_ARCH_RISCV64", NULL};
  static const char *const ppc64le[] = {"SCMP_ARCH_PPC64LE", NULL};
  static const char *const s390x[] = {"SCMP_ARCH_S390X", "SCMP_ARCH_S390", NULL};
  const struct {
    const char *goarch;
    const char *const *arches;
  } table[] = {{"amd64", amd64},     {"arm64", arm64},     {"arm", arm},    {"386", i386},
               {"riscv64", riscv64}, {"ppc64le", ppc64le}, {"s390x", s390x}};
  for (size_t k = 0; k < G_N_ELEMENTS(table); k++)
    if (g_strcmp0(goarch, table[k].goarch) == 0)
      return table[k].arches;
  return NULL;
}

static void seccomp_rule(JsonBuilder *b, const char *const *names, int errno_ret) {
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "names");
  add_strings(b, names);
  json_builder_set_member_name(b, "action");
  json_builder_add_string_value(b, "SCMP_ACT_ERRNO");
  json_builder_set_member_name(b, "errnoRet");
  json_builder_add_int_value(b, errno_ret);
}

JsonNode *oakuk_container_seccomp_profile(const char *goarch) {
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "defaultAction");
  json_builder_add_string_value(b, "SCMP_ACT_ALLOW");
  const char *const *arches = seccomp_arches(goarch);
  if (arches) {
    json_builder_set_member_name(b, "architectures");
    add_strings(b, arches);
  }
  json_builder_set_member_name(b, "syscalls");
  json_builder_begin_array(b);
  seccomp_rule(b, seccomp_denied, EPERM);
  json_builder_end_object(b);
  /* s390 passes clone's flags second. */
  int flags_arg = g_strcmp0(goarch, "s390x") == 0 ? 1 : 0;
  for (size_t k = 0; k < G_N_ELEMENTS(seccomp_clone_ns_flags); k++) {
    seccomp_rule(b, (const char *const[]){"clone", NULL}, EPERM);
    json_builder_set_member_name(b, "args");
    json_builder_begin_array(b);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "index");
    json_builder_add_int_value(b, flags_arg);
    json_builder_set_member_name(b, "value");
    json_builder_add_int_value(b, (gint64)seccomp_clone_ns_flags[k]);
    json_builder_set_member_name(b, "valueTwo");
    json_builder_add_int_value(b, (gint64)seccomp_clone_ns_flags[k]);
    json_builder_set_member_name(b, "op");
    json_builder_add_string_value(b, "SCMP_CMP_MASKED_EQ");
    json_builder_end_object(b);
    json_builder_end_array(b);
    json_builder_end_object(b);
  }
  /* clone3 passes its flags in memory, out of a filter's reach: ENOSYS makes libcs use clone. */
  seccomp_rule(b, (const char *const[]){"clone3", NULL}, ENOSYS);
  json_builder_end_object(b);
  json_builder_end_array(b);
  json_builder_end_object(b);
  return json_builder_get_root(b);
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
                      spec->name),
           NULL;
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
    return set_gerror(error, OAKUK_EINVAL, "instance %s: working directory %s is not absolute", spec->name,
                      cwd),
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
  add_mount(b, "/dev", "tmpfs", "tmpfs",
            (const char *const[]){"nosuid", "strictatime", "mode=755", "size=65536k", NULL});
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
  json_builder_set_member_name(b, "seccomp");
  json_builder_add_value(b, oakuk_container_seccomp_profile(oakuk_container_platform_arch()));
  json_builder_set_member_name(b, "maskedPaths");
  add_strings(b, (const char *const[]){"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                                       "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                                       "/proc/sched_debug", "/sys/firmware", "/proc/scsi", NULL});
  json_builder_set_member_name(b, "readonlyPaths");
  add_strings(b, (const char *const[]){"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                       "/proc/sysrq-trigger", NULL});
  json_builder_end_object(b); /* linux */
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  return oakuk_json_node_to_string(root, TRUE);
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

/* Starts the container with `runc run --detach` (not `runc create` + `runc start`; see
 * docs/design-deviations.md, "Container runtime"):
 * one runc process instead of two saves one Go runtime start (~25 ms of ~90 ms on the reference
 * node, bench/container-deploy), and nothing changes for exit codes: in both cases the container's
 * init is forked by runc, re-parented to us (PR_SET_CHILD_SUBREAPER) when runc exits, and stays
 * our unreaped child until watch_child() collects its status, even when it has already exited by
 * then (a zombie keeps its pid and /proc/<pid>/stat, so start_time is still right). Output: runc
 * passes its own stdio (no terminal) to the container, i.e. output.log. */
static gboolean runc_start(OakukInstance *i, GError **error) {
  const Env *c = &cd(i)->env;
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
    char *tail = NULL;
    oakuk_console_tail(&tail, logpath, 3, 4096, OAKUK_CONSOLE_SKIP_EMPTY | OAKUK_CONSOLE_STRIP, NULL);
    set_gerror(error, OAKUK_EIO, "runc run failed (status %d): %s", st, tail ? tail : "");
    oakuk_free(tail);
    return FALSE;
  }
  g_autofree char *pidtext = NULL;
  if (!g_file_get_contents(pidfile, &pidtext, NULL, error))
    return FALSE;
  i->pid = (GPid)g_ascii_strtoll(pidtext, NULL, 10);
  if (i->pid <= 0)
    return set_gerror(error, OAKUK_EIO, "runc run: %s holds no pid", pidfile), FALSE;
  return TRUE;
}

/* ---- handlers ---- */

/* Releases what runc and the overlay hold; with remove, also the instance directory. Blocking. */
static void release(const Env *c, const char *name, const char *dir, gboolean remove) {
  runc_delete(c, name);
  g_autofree char *rootfs = g_build_filename(dir, "bundle", "rootfs", NULL);
  if (umount2(rootfs, MNT_DETACH) != 0 && errno != EINVAL && errno != ENOENT)
    g_warning("instance %s: unmount %s: %s", name, rootfs, g_strerror(errno));
  if (remove)
    oakuk_rm_rf(dir, NULL);
}

static gboolean c_check(OakukInstance *i, GError **error) {
  ContainerRuntime *c = i->rt->impl;
  const oakuk_instance_spec *spec = i->spec;
  if (!spec->image && !spec->rootfs)
    return set_gerror(error, OAKUK_EINVAL, "instance %s: image: no image reference (and no rootfs) given",
                      spec->name),
           FALSE;
  if (spec->image && !g_str_has_prefix(spec->image, "oci-archive:")) {
    OakukOciRef ref;
    if (!oakuk_oci_ref_parse(spec->image, &ref, error))
      return g_prefix_error(error, "instance %s: image: ", spec->name), FALSE;
    oakuk_oci_ref_clear(&ref);
  }
  if (!spec->image && !g_file_test(spec->rootfs, G_FILE_TEST_IS_DIR))
    return set_gerror(error, OAKUK_EINVAL, "instance %s: rootfs %s is not a directory", spec->name,
                      spec->rootfs),
           FALSE;
  if (spec->netns_path && !g_file_test(spec->netns_path, G_FILE_TEST_EXISTS))
    return set_gerror(error, OAKUK_EINVAL, "instance %s: network namespace %s does not exist", spec->name,
                      spec->netns_path),
           FALSE;
  if (spec->memory_mb < 4 || spec->vcpus < 1)
    return set_gerror(error, OAKUK_EINVAL,
                      "instance %s: memory %" G_GINT64_FORMAT " MB / vcpus %d: need >= 4 MB and >= 1",
                      spec->name, spec->memory_mb, spec->vcpus),
           FALSE;
  guint grace = spec->graceful_stop_s > 0 ? (guint)spec->graceful_stop_s : c->env.opts.stop_grace_s;
  i->grace_s = MAX(grace, 1);
  return TRUE;
}

static void on_progress(guint layer, guint layers, int percent, gpointer data) {
  g_autofree char *detail = g_strdup_printf("pulling layer %u/%u: %d%%", layer, layers, percent);
  oakuk_instance_progress(data, detail);
}

/* (thread) Pull, overlay, config.json, `runc run --detach`. */
static gboolean c_prepare(OakukInstance *i, GError **error) {
  CtrData *d = cd(i);
  const Env *c = &d->env;
  const oakuk_instance_spec *s = i->spec;
  gint64 t_start = g_get_monotonic_time();
  oakuk_rm_rf(i->dir, NULL);
  if (g_mkdir_with_parents(i->dir, 0700) != 0)
    return set_gerror(error, OAKUK_EIO, "create %s: %s", i->dir, g_strerror(errno)), FALSE;
  g_autoptr(OakukOciImage) img = NULL;
  const char *lower = s->rootfs;
  if (s->image) {
    img = oakuk_oci_pull(c->images_dir, s->image, s->registry_username, s->registry_password, &c->opts,
                         on_progress, i, error);
    if (!img)
      return g_prefix_error(error, "pull %s: ", s->image), FALSE;
    lower = img->rootfs;
    d->image_digest = g_strdup(img->manifest_digest);
  }
  gint64 t_pull = g_get_monotonic_time();
  g_autofree char *config = NULL;
  g_autofree char *cfgpath = g_build_filename(i->dir, "bundle", "config.json", NULL);
  gint64 t_mount = 0, t_config = 0;
  if (!mount_overlay(lower, i->dir, error) || !(t_mount = g_get_monotonic_time()) ||
      !(config = build_config(s, img, lower, error)) || !g_file_set_contents(cfgpath, config, -1, error) ||
      !(t_config = g_get_monotonic_time()) || !runc_start(i, error)) {
    release(c, i->name, i->dir, FALSE);
    if (i->pid > 0) {
      waitpid(i->pid, NULL, 0);
      i->pid = 0;
    }
    return FALSE;
  }
  gint64 t_end = g_get_monotonic_time();
  g_debug("instance %s: pull %.1f ms, overlay %.1f ms, config %.1f ms, runc %.1f ms", i->name,
          (t_pull - t_start) / 1e3, (t_mount - t_pull) / 1e3, (t_config - t_mount) / 1e3,
          (t_end - t_config) / 1e3);
  return TRUE;
}

static gboolean c_started(OakukInstance *i) {
  return TRUE; /* runc run has exited: the container's init runs, and is our child (subreaper) */
}

/* `runc kill <name> <sig>` in a thread (runc takes tens of ms: not on the main loop). Should runc
 * refuse (state gone, runc broken) while the process lives, the signal goes to the pid directly:
 * it is our child (or watched through its pidfd), so the pid has not been recycled. */
typedef struct {
  OakukInstance *i;
  GPid pid;
  int sig;
} KillJob;

static void kill_job_free(gpointer data) {
  KillJob *k = data;
  oakuk_instance_unref(k->i);
  g_free(k);
}

static void kill_thread(GTask *task, gpointer src, gpointer data, GCancellable *cancel) {
  KillJob *k = data;
  const char *args[] = {"kill", k->i->name, k->sig == SIGKILL ? "KILL" : "TERM", NULL};
  g_autofree char *out = NULL;
  int st = runc_run(&cd(k->i)->env, args, -1, &out, NULL);
  if (st != 0 && kill(k->pid, 0) == 0) {
    g_debug("instance %s: runc kill %s failed (%s), signalling pid %d", k->i->name, args[2],
            out ? g_strstrip(out) : "", (int)k->pid);
    kill(k->pid, k->sig);
  }
  g_task_return_boolean(task, TRUE);
}

/* GRACEFUL: `runc kill TERM`; KILL: `runc kill KILL`; containers have no QUIT phase. */
static gboolean c_signal(OakukInstance *i, OakukStopPhase phase) {
  if (phase == OAKUK_STOP_QUIT || i->pid <= 0)
    return FALSE;
  KillJob *k = g_new0(KillJob, 1);
  k->i = oakuk_instance_ref(i);
  k->pid = i->pid;
  k->sig = phase == OAKUK_STOP_KILL ? SIGKILL : SIGTERM;
  GTask *task = g_task_new(NULL, NULL, NULL, NULL);
  g_task_set_task_data(task, k, kill_job_free);
  g_task_run_in_thread(task, kill_thread);
  g_object_unref(task);
  return TRUE;
}

static void c_release(OakukInstance *i, gboolean remove) {
  release(&cd(i)->env, i->name, i->dir, remove);
}

static void c_record(OakukInstance *i, JsonBuilder *b) {
  if (cd(i)->image_digest) {
    json_builder_set_member_name(b, "image_digest");
    json_builder_add_string_value(b, cd(i)->image_digest);
  }
}

static GPid c_adopt(OakukInstance *i, JsonObject *record) {
  CtrData *d = cd(i);
  const char *digest = json_object_get_string_member_with_default(record, "image_digest", NULL);
  d->image_digest = g_strdup(digest);
  g_autofree char *status = NULL;
  GPid pid = 0;
  if (runc_state(&d->env, i->name, &status, &pid) && strcmp(status, "running") == 0)
    return pid;
  return 0;
}

static gboolean c_stats(OakukInstance *i, double *cpu, int64_t *rss, GError **error) {
  CtrData *d = cd(i);
  gint64 usage = 0, mem = 0;
  g_autofree char *cpuf = oakuk_cgroup_v2() ? cgroup_file(i->name, "cpuacct", NULL, "cpu.stat")
                                            : cgroup_file(i->name, "cpuacct", "cpuacct.usage", NULL);
  gboolean ok = oakuk_cgroup_v2() ? read_stat_key(cpuf, "usage_usec", &usage) : read_int_file(cpuf, &usage);
  if (!ok)
    return set_gerror(error, OAKUK_ENOTFOUND, "instance %s: not running (no cgroup)", i->name), FALSE;
  if (oakuk_cgroup_v2())
    usage *= 1000;
  gint64 now = g_get_monotonic_time();
  double secs = (double)(now - d->last_time_us) / 1e6;
  *cpu = (d->last_time_us && secs > 0 && (guint64)usage >= d->last_cpu_ns)
             ? (double)((guint64)usage - d->last_cpu_ns) / 1e9 / secs * 100.0
             : 0.0;
  d->last_cpu_ns = (guint64)usage;
  d->last_time_us = now;
  g_autofree char *memf = cgroup_file(i->name, "memory", "memory.stat", "memory.stat");
  if (!read_stat_key(memf, oakuk_cgroup_v2() ? "anon" : "total_rss", &mem))
    mem = 0;
  *rss = mem / 1024;
  return TRUE;
}

static gboolean c_cgroup_memory(OakukInstance *i, int64_t *kb, GError **error) {
  g_autofree char *f = cgroup_file(i->name, "memory", "memory.usage_in_bytes", "memory.current");
  gint64 b = 0;
  if (!read_int_file(f, &b))
    return set_gerror(error, OAKUK_ENOTFOUND, "instance %s: no cgroup (not running)", i->name), FALSE;
  *kb = b / 1024;
  return TRUE;
}

static void c_finalize(oakuk_runtime *rt) {
  ContainerRuntime *c = rt->impl;
  env_clear(&c->env);
  g_free(c);
}

static const OakukRuntimeClass container_class = {
    .virt = OAKUK_VIRT_CONTAINER,
    .console = "output.log",
    .process = "the container",
    .console_judges = FALSE,
    .init = c_init,
    .check = c_check,
    .prepare = c_prepare,
    .started = c_started,
    .signal = c_signal,
    .release = c_release,
    .record = c_record,
    .adopt = c_adopt,
    .stats = c_stats,
    .cgroup_memory = c_cgroup_memory,
    .free_data = data_free,
    .finalize = c_finalize,
};

OAKUK_API oakuk_runtime *
oakuk_container_runtime_new(const char *state_dir, const oakuk_container_options *opts, oakuk_error **error) {
  g_return_val_if_fail(state_dir != NULL, NULL);
  oakuk_container_options o;
  if (oakuk_container_options_read(&o, opts, error) < 0)
    return NULL;
  const char *runc_name = o.runc_path ? o.runc_path : "runc";
  g_autofree char *runc = g_find_program_in_path(runc_name);
  if (!runc)
    return oakuk_set_error(error, OAKUK_EUNSUPPORTED, 0, "runc_path", "runc (%s) not found", runc_name), NULL;
  ContainerRuntime *c = g_new0(ContainerRuntime, 1);
  c->env.opts = o;
  c->env.insecure = g_strdup(c->env.opts.insecure_registries);
  c->env.opts.insecure_registries = c->env.insecure;
  c->env.file_allowed = g_strdup(c->env.opts.file_allowed_dirs);
  c->env.opts.file_allowed_dirs = c->env.file_allowed;
  c->env.opts.runc_path = NULL;
  c->env.runc = g_steal_pointer(&runc);
  g_autofree char *instances = g_build_filename(state_dir, "instances", NULL);
  c->env.images_dir = g_build_filename(state_dir, "images", NULL);
  c->env.root = g_build_filename(state_dir, "runc", NULL);
  const char *dirs[] = {c->env.images_dir, c->env.root};
  for (size_t k = 0; k < G_N_ELEMENTS(dirs); k++)
    if (g_mkdir_with_parents(dirs[k], 0700) != 0) {
      int e = errno;
      oakuk_set_error(error, OAKUK_EIO, e, "state_dir", "create %s: %s", dirs[k], g_strerror(e));
      c_finalize(&(oakuk_runtime){.impl = c});
      return NULL;
    }
  GError *err = NULL;
  oakuk_runtime *rt = oakuk_runtime_alloc(&container_class, c, instances, &err);
  if (!rt) {
    oakuk_propagate_gerror(error, err);
    c_finalize(&(oakuk_runtime){.impl = c});
    return NULL;
  }
  /* Container inits are re-parented to us when runc run exits: their exit codes become ours. */
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
    g_warning("PR_SET_CHILD_SUBREAPER: %s (container exit codes will be unknown)", g_strerror(errno));
  return rt;
}

/* ---- pull and build (public, blocking) ---- */

OAKUK_API int oakuk_container_pull(const char *state_dir, const char *reference, const char *username,
                                   const char *password, const oakuk_container_options *opts,
                                   char **digest_out, oakuk_error **error) {
  g_return_val_if_fail(state_dir != NULL && reference != NULL, OAKUK_EINVAL);
  GError *err = NULL;
  oakuk_container_options o;
  int rc = oakuk_container_options_read(&o, opts, error);
  if (rc < 0)
    return rc;
  g_autofree char *images = g_build_filename(state_dir, "images", NULL);
  g_autoptr(OakukOciImage) img = oakuk_oci_pull(images, reference, username, password, &o, NULL, NULL, &err);
  if (!img)
    return oakuk_propagate_gerror(error, err);
  if (digest_out)
    *digest_out = g_strdup(img->manifest_digest);
  return 0;
}

/* `oakuk run`: composes liboakuk's image cache, QEMU probe, network plumber and QEMU runtime
 * into a foreground run, like `docker run` / `kraft run` without any control plane. */
#include "run-session.h"

#include "oakuk-cli.h"
#include "run-state.h"

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <json-glib/json-glib.h>
#include <oakuk/oakuk.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define CONSOLE_POLL_MS 100
#define STOP_TIMEOUT_S 20 /* give up waiting for UNDEPLOYED after this (the runtime then kills) */

typedef struct {
  const OakukRunOptions *o;
  GMainLoop *loop;
  char *name, *state_dir, *runtime_dir;
  oakuk_image *image;
  oakuk_qemu_caps *caps;
  char *arch;
  int32_t accel;
  oakuk_net *net;
  bool have_record; /* <run dir>/NAME is this run's: its end releases the network and the host settings */
  bool have_instance_net;
  bool detached; /* --detach succeeded: the instance and its network stay */
  OakukRunRecord *rec;
  oakuk_net_instance_info *ninfo;
  oakuk_runtime *rt;
  bool deployed, stopping, undeployed, running;
  int status;
  int32_t ready_port;
  gint64 started_us;
  char *last_detail; /* of RUNNING: what the runtime noticed (e.g. an address the guest did not take) */
  /* console */
  char *console_path;
  int console_fd;
  oakuk_console *cleaner;
  guint console_timer, stop_timer, ready_timer, sigint, sigterm;
} Run;

static void say(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  fflush(stdout);
  fprintf(stderr, "oakuk: %s\n", msg);
}

/* Prints "oakuk run: <context>: <error>" and returns OAKUK_CLI_FAILED. */
static int fail(oakuk_error *err, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static int fail(oakuk_error *err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *ctx = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  fflush(stdout);
  if (err)
    fprintf(stderr, "oakuk run: %s: %s\n", ctx, oakuk_error_message(err));
  else
    fprintf(stderr, "oakuk run: %s\n", ctx);
  oakuk_error_free(err);
  return OAKUK_CLI_FAILED;
}

static const char *qemu_suffix(const char *goarch) {
  static const char *map[][2] = {
      {"amd64", "x86_64"}, {"arm64", "aarch64"}, {"arm", "arm"}, {"riscv64", "riscv64"}};
  for (size_t i = 0; i < G_N_ELEMENTS(map); i++)
    if (strcmp(map[i][0], goarch) == 0)
      return map[i][1];
  return NULL;
}

/* ---- console ---- */

/* Copies what the guest added to its console to stdout, as text: liboakuk's console module drops
 * escape sequences (SeaBIOS clears the screen), NULs and other control bytes. */
static void console_pump(Run *r) {
  if (!r->console_path)
    return;
  if (r->console_fd < 0 && (r->console_fd = open(r->console_path, O_RDONLY | O_CLOEXEC)) < 0)
    return;
  char buf[8192];
  ssize_t n;
  while ((n = read(r->console_fd, buf, sizeof buf)) > 0) {
    char *text = oakuk_console_feed(r->cleaner, buf, (size_t)n);
    size_t len = strlen(text);
    gboolean ok = fwrite(text, 1, len, stdout) == len;
    oakuk_free(text);
    if (!ok)
      break;
  }
  fflush(stdout);
}

static gboolean on_console_tick(gpointer data) {
  console_pump(data);
  return G_SOURCE_CONTINUE;
}

/* ---- stopping ---- */

static void quit(Run *r) {
  if (g_main_loop_is_running(r->loop))
    g_main_loop_quit(r->loop);
}

static gboolean on_stop_timeout(gpointer data) {
  Run *r = data;
  r->stop_timer = 0;
  say("instance %s did not stop within %d s; killing it", r->name, STOP_TIMEOUT_S);
  quit(r);
  return G_SOURCE_REMOVE;
}

static void begin_stop(Run *r) {
  if (r->stopping)
    return;
  r->stopping = true;
  oakuk_error *err = NULL;
  if (!r->deployed || oakuk_runtime_instance_status(r->rt, r->name) < 0) {
    quit(r);
    return;
  }
  if (oakuk_runtime_undeploy(r->rt, r->name, &err) != 0) {
    fail(err, "stop instance %s", r->name);
    quit(r);
    return;
  }
  r->stop_timer = g_timeout_add_seconds(STOP_TIMEOUT_S, on_stop_timeout, r);
}

static gboolean on_signal(gpointer data) {
  Run *r = data;
  if (r->stopping) { /* a second Ctrl-C: stop waiting, the runtime kills QEMU on the way out */
    quit(r);
    return G_SOURCE_CONTINUE;
  }
  say("stopping instance %s", r->name);
  if (r->o->detach) /* it never ran on its own: that is a failure of `run --detach` */
    r->status = OAKUK_CLI_FAILED;
  begin_stop(r);
  return G_SOURCE_CONTINUE;
}

static char *ports_text(const OakukRunOptions *o) {
  if (!o->ports || !o->ports[0])
    return g_strdup("no ports");
  GString *s = g_string_new("ports ");
  for (char **p = o->ports; *p; p++) {
    const char *colon = strchr(*p, ':');
    if (p != o->ports)
      g_string_append(s, ", ");
    if (colon)
      g_string_append_printf(s, "%.*s->%s", (int)(colon - *p), *p, colon + 1);
    else
      g_string_append_printf(s, "%s->%s", *p, *p);
  }
  return g_string_free(s, FALSE);
}

static char *ready_text(Run *r) {
  GString *s = g_string_new(NULL);
  if (r->ready_port > 0)
    g_string_append_printf(s, "tcp port %d", r->ready_port);
  if (r->o->ready_serial)
    g_string_append_printf(s, "%s\"%s\" on the console", s->len ? " and " : "", r->o->ready_serial);
  return g_string_free(s, FALSE);
}

static gboolean on_ready_timeout(gpointer data) {
  Run *r = data;
  r->ready_timer = 0;
  console_pump(r);
  g_autofree char *what = ready_text(r);
  say("instance %s not ready after %" G_GINT64_FORMAT " s (no answer from %s)%s%s; stopping it", r->name,
      r->o->ready_timeout_s, what, r->last_detail ? ": " : "", r->last_detail ? r->last_detail : "");
  r->status = OAKUK_CLI_NOT_READY;
  begin_stop(r);
  return G_SOURCE_REMOVE;
}

/* --detach: the guest runs (and is ready): record so, print its name and leave it running. */
static void detach_now(Run *r) {
  if (r->detached || r->stopping)
    return;
  r->rec->detached = true;
  g_autoptr(GError) err = NULL;
  if (!oakuk_run_record_write(r->rec, &err)) {
    fail(NULL, "record of instance %s: %s", r->name, err->message);
    r->status = OAKUK_CLI_FAILED;
    begin_stop(r);
    return;
  }
  r->detached = true;
  oakuk_runtime_set_keep_instances(r->rt, true);
  say("instance %s runs detached; `oakuk stop %s` stops it", r->name, r->name);
  printf("%s\n", r->name);
  fflush(stdout);
  quit(r);
}

static void record_running(Run *r) {
  r->rec->pid = oakuk_runtime_instance_pid(r->rt, r->name);
  r->rec->pid_start = oakuk_run_proc_start(r->rec->pid);
  g_autoptr(GError) err = NULL;
  if (!oakuk_run_record_write(r->rec, &err))
    say("record of instance %s: %s", r->name, err->message);
}

static void on_ready(const char *instance, int64_t ready_ms, void *data) {
  Run *r = data;
  if (strcmp(instance, r->name) != 0 || r->stopping)
    return;
  if (r->ready_timer) {
    g_source_remove(r->ready_timer);
    r->ready_timer = 0;
  }
  console_pump(r);
  g_autofree char *what = ready_text(r);
  if (*what) /* without a probe, ready is RUNNING, said already */
    say("instance %s ready %" G_GINT64_FORMAT " ms after its start (%s)", r->name, ready_ms, what);
  if (r->o->detach)
    detach_now(r);
}

/* How the guest ended decides the exit status: 0 for a clean power-off, 3 for a crash or a kill. */
static void on_end(Run *r, int32_t status, const char *detail) {
  int32_t kind = oakuk_runtime_instance_exit(r->rt, r->name);
  const char *how = kind == OAKUK_EXIT_CLEAN    ? "exited cleanly"
                    : kind == OAKUK_EXIT_CRASH  ? "crashed"
                    : kind == OAKUK_EXIT_KILLED ? "was killed"
                                                : "failed to start";
  /* --detach promised a running guest: one that ended before is a failure, however it ended. */
  r->status = kind == OAKUK_EXIT_CLEAN && !r->o->detach ? OAKUK_CLI_OK : OAKUK_CLI_GUEST_DIED;
  if (kind == OAKUK_EXIT_CLEAN) /* the detail says so: "exited cleanly: the guest powered off; ..." */
    say("instance %s %s: %s", r->name, oakuk_instance_status_name(status),
        detail ? detail : "exited cleanly");
  else
    say("instance %s %s (%s): %s", r->name, how, oakuk_instance_status_name(status),
        detail ? detail : "(no detail)");
  begin_stop(r);
}

static void on_status(const char *instance, int32_t status, const char *detail, void *data) {
  Run *r = data;
  if (strcmp(instance, r->name) != 0)
    return;
  switch (status) {
  case OAKUK_STATUS_RUNNING: {
    if (r->running) { /* a note from the runtime while it runs */
      g_free(r->last_detail);
      r->last_detail = g_strdup(detail);
      if (detail) {
        console_pump(r);
        say("instance %s: %s", r->name, detail);
      }
      break;
    }
    r->running = true;
    record_running(r);
    g_autofree char *ports = ports_text(r->o);
    g_autofree char *what = ready_text(r);
    say("instance %s at %s, %s%s%s", r->name, oakuk_net_instance_info_ip(r->ninfo), ports,
        *what ? "; waiting until it is ready: " : "", what);
    if (*what && r->o->ready_timeout_s > 0)
      r->ready_timer = g_timeout_add_seconds((guint)r->o->ready_timeout_s, on_ready_timeout, r);
    break;
  }
  case OAKUK_STATUS_DEAD:
  case OAKUK_STATUS_FAILED:
  case OAKUK_STATUS_COMPLETED:
    console_pump(r);
    if (r->ready_timer) {
      g_source_remove(r->ready_timer);
      r->ready_timer = 0;
    }
    if (!r->stopping)
      on_end(r, status, detail);
    break;
  case OAKUK_STATUS_UNDEPLOYED:
    r->undeployed = true;
    quit(r);
    break;
  default: break;
  }
}

/* ---- setup steps; each returns OAKUK_CLI_OK or prints why and returns an exit status ---- */

static int resolve_state_dir(Run *r) {
  if (r->o->state_dir) {
    r->state_dir = g_canonicalize_filename(r->o->state_dir, NULL);
  } else if (getuid() == 0) {
    r->state_dir = g_strdup("/var/lib/oakuk/run");
  } else {
    const char *xdg = g_getenv("XDG_RUNTIME_DIR");
    if (!xdg)
      return fail(NULL, "no --state-dir given, not root and XDG_RUNTIME_DIR unset");
    r->state_dir = g_build_filename(xdg, "oakuk", "run", NULL);
  }
  if (g_mkdir_with_parents(r->state_dir, 0700) != 0) {
    fail(NULL, "%s %s: %s", r->o->state_dir ? "--state-dir" : "state dir", r->state_dir, g_strerror(errno));
    return r->o->state_dir ? OAKUK_CLI_USAGE : OAKUK_CLI_FAILED;
  }
  /* One runtime state directory per run: another run's runtime never adopts (or releases) it. */
  r->runtime_dir = g_build_filename(r->state_dir, "runs", r->name, NULL);
  g_autofree char *qmp = g_build_filename(r->runtime_dir, "instances", r->name, "qmp.sock", NULL);
  if (strlen(qmp) > 107) {
    fail(NULL, "--name %s with --state-dir %s: the QMP socket path %s is longer than 107 bytes", r->name,
         r->state_dir, qmp);
    return OAKUK_CLI_USAGE;
  }
  return OAKUK_CLI_OK;
}

static oakuk_image_cache *open_cache(Run *r, const char *allowed) {
  oakuk_image_cache_options opts;
  oakuk_image_cache_options_init(&opts, OAKUK_IMAGE_CACHE_OPTIONS_VERSION);
  opts.file_allowed_dirs = allowed;
  opts.insecure_registries = r->o->insecure_registries;
  g_autofree char *cache_dir = g_build_filename(r->state_dir, "images", NULL);
  oakuk_error *err = NULL;
  oakuk_image_cache *cache = oakuk_image_cache_new(cache_dir, &opts, &err);
  if (!cache)
    fail(err, "image cache %s", cache_dir);
  return cache;
}

/* An OCI reference or oci-archive: (docs/unikernels.md, "OCI images"): the platform of --arch, else
 * of this machine. "oci-archive:PATH" (no URL) names a local file, as IMAGE does. */
static int fetch_oci_image(Run *r) {
  const char *image = r->o->image;
  g_autofree char *reference = NULL, *allowed = NULL;
  if (g_str_has_prefix(image, "oci-archive:")) {
    const char *rest = image + strlen("oci-archive:");
    g_autofree char *local = NULL;
    if (strstr(rest, "://")) {
      reference = g_strdup(image);
      local = g_filename_from_uri(rest, NULL, NULL);
    } else {
      local = g_canonicalize_filename(rest, NULL);
      if (!g_file_test(local, G_FILE_TEST_IS_REGULAR)) {
        fail(NULL, "image %s: no such file %s", image, local);
        return OAKUK_CLI_USAGE;
      }
      g_autofree char *uri = g_filename_to_uri(local, NULL, NULL);
      reference = g_strconcat("oci-archive:", uri, NULL);
    }
    /* As for a local tarball: the file the user named is theirs to run, its directory only. */
    allowed = local ? g_path_get_dirname(local) : NULL;
  } else {
    reference = g_strdup(image);
  }
  oakuk_image_cache *cache = open_cache(r, allowed);
  if (!cache)
    return OAKUK_CLI_FAILED;
  oakuk_error *err = NULL;
  r->image = oakuk_image_cache_fetch_oci_sync(cache, reference, r->o->arch, r->o->username, r->o->password,
                                              NULL, NULL, &err);
  oakuk_image_cache_unref(cache);
  if (!r->image)
    return fail(err, "image %s", image);
  return OAKUK_CLI_OK;
}

static int fetch_image(Run *r) {
  const char *image = r->o->image;
  /* A bare word ("guest.tar.gz") is a file name here, not an image on Docker Hub: a reference names
   * its registry, repository path, tag or digest. */
  if (oakuk_image_code_is_oci(image) && !g_file_test(image, G_FILE_TEST_EXISTS) && strpbrk(image, "/:@"))
    return fetch_oci_image(r);
  if (r->o->username) {
    fail(NULL, "--username goes with an OCI reference as IMAGE, not %s", image);
    return OAKUK_CLI_USAGE;
  }
  g_autofree char *url = NULL;
  g_autofree char *local = NULL;
  if (strstr(image, "://")) {
    url = g_strdup(image);
    local = g_filename_from_uri(image, NULL, NULL);
  } else {
    local = g_canonicalize_filename(image, NULL);
    if (!g_file_test(local, G_FILE_TEST_IS_REGULAR)) {
      fail(NULL, "image %s: not a URL, an OCI reference or a file", image);
      return OAKUK_CLI_USAGE;
    }
    url = g_filename_to_uri(local, NULL, NULL);
  }
  /* The library refuses file:// by default; the file the user named on the command line is theirs
   * to run, so its directory (and only that) is allowed. */
  g_autofree char *allowed = local ? g_path_get_dirname(local) : NULL;
  oakuk_image_cache *cache = open_cache(r, allowed);
  if (!cache)
    return OAKUK_CLI_FAILED;
  oakuk_error *err = NULL;
  r->image = oakuk_image_cache_fetch_sync(cache, url, NULL, NULL, NULL, &err);
  oakuk_image_cache_unref(cache);
  if (!r->image)
    return fail(err, "image %s", image);
  return OAKUK_CLI_OK;
}

/* The guest architecture and acceleration; refuses what cannot run here before anything is made. */
static int choose_accel(Run *r) {
  const char *karch = oakuk_image_arch(r->image);
  const char *kernel = oakuk_image_kernel(r->image);
  oakuk_qemu_options qo = OAKUK_QEMU_OPTIONS_INIT;
  qo.allow_emulation = r->o->allow_emulation;
  oakuk_error *err = NULL;
  if (oakuk_qemu_probe(&r->caps, &qo, &err) != 0)
    return fail(err, "probe QEMU and KVM");
  const char *host = oakuk_qemu_caps_host_arch(r->caps);
  r->arch = g_strdup(r->o->arch ? r->o->arch : karch ? karch : host);
  if (!karch) {
    oakuk_error *why = NULL;
    oakuk_image_kernel_arch(kernel, &why);
    return fail(why, "image %s", r->o->image);
  }
  if (strcmp(karch, r->arch) != 0)
    return fail(NULL, "image %s: kernel is built for %s but --arch asks for %s", r->o->image, karch, r->arch);
  const char *suffix = qemu_suffix(r->arch);
  if (!suffix)
    return fail(NULL, "--arch %s: not one of amd64, arm64, arm, riscv64", r->arch);
  if (!oakuk_qemu_caps_qemu_path(r->caps, r->arch))
    return fail(NULL,
                "no qemu-system-%s found in $PATH for %s guests (install the Debian package qemu-system-%s)",
                suffix, r->arch,
                strcmp(r->arch, "amd64") == 0     ? "x86"
                : strcmp(r->arch, "riscv64") == 0 ? "misc"
                                                  : "arm");
  r->accel = oakuk_qemu_caps_accel_for_arch(r->caps, r->arch);
  if (r->accel == OAKUK_ACCEL_NONE) {
    if (strcmp(r->arch, host) == 0)
      return fail(NULL, "no KVM (%s); pass --allow-emulation to run under TCG",
                  oakuk_qemu_caps_kvm_reason(r->caps) ? oakuk_qemu_caps_kvm_reason(r->caps) : "unusable");
    return fail(NULL, "%s guests on this %s machine need emulation; pass --allow-emulation to run under TCG",
                r->arch, host);
  }
  return OAKUK_CLI_OK;
}

static OakukRunRecord *new_record(Run *r) {
  const OakukRunOptions *o = r->o;
  OakukRunRecord *rec = g_new0(OakukRunRecord, 1);
  rec->name = g_strdup(r->name);
  rec->image = g_strdup(o->image);
  rec->subnet = g_strdup(o->subnet);
  rec->nat = o->net_nat;
  rec->ports = o->ports ? g_strdupv(o->ports) : g_new0(char *, 1);
  rec->runtime_dir = g_strdup(r->runtime_dir);
  rec->netns = oakuk_run_netns_id();
  g_autoptr(GDateTime) now = g_date_time_new_now_utc();
  rec->started = g_date_time_format(now, "%Y-%m-%dT%H:%M:%SZ");
  rec->cli_pid = getpid();
  rec->cli_start = oakuk_run_proc_start(rec->cli_pid);
  return rec;
}

/* Under the run directory's lock: a name no other run has, the host settings as they are before
 * any run changes them, this run's record, then the node's and the instance's network. */
static int setup_network_locked(Run *r) {
  g_autoptr(OakukRunRecord) other = oakuk_run_record_load(r->name, NULL);
  if (other) {
    const char *state = oakuk_run_record_state(other);
    return fail(NULL, "an instance named %s exists already (%s, see oakuk ps): pick another --name%s",
                r->name, state, strcmp(state, "DEAD") == 0 ? " or remove it with oakuk stop" : "");
  }
  g_autofree char *nspath = g_build_filename("/run/netns", r->name, NULL);
  if (g_file_test(nspath, G_FILE_TEST_EXISTS))
    return fail(NULL, "network namespace %s exists already: pick another --name", nspath);
  oakuk_net_options no;
  oakuk_net_options_init(&no, OAKUK_NET_OPTIONS_VERSION);
  no.node_subnet = r->o->subnet;
  oakuk_error *err = NULL;
  r->net = oakuk_net_new(&no, &err);
  if (!r->net)
    return fail(err, "network (--subnet %s)", r->o->subnet);
  g_autoptr(GError) gerr = NULL;
  if (!oakuk_run_host_save(r->net, &gerr))
    return fail(NULL, "save the host settings: %s", gerr->message);
  r->rec = new_record(r);
  if (!oakuk_run_record_create(r->rec, &gerr))
    return fail(NULL, "record of instance %s: %s", r->name, gerr->message);
  r->have_record = true;
  if (oakuk_net_setup_node(r->net, &err) != 0)
    return fail(err, "set up the node network (bridge, nftables table oakuk)");
  r->have_instance_net = true;
  if (oakuk_net_instance_setup(r->net, r->name, NULL, r->o->net_nat ? OAKUK_NET_UK_NAT : OAKUK_NET_UK_DIRECT,
                               &r->ninfo, &err) != 0)
    return fail(err, "set up the network of instance %s", r->name);
  for (char **p = r->o->ports; p && *p; p++)
    if (oakuk_net_port_map_add(r->net, r->name, *p, &err) != 0)
      return fail(err, "port mapping -p %s", *p);
  r->rec->ip = g_strdup(oakuk_net_instance_info_ip(r->ninfo));
  if (!oakuk_run_record_write(r->rec, &gerr))
    return fail(NULL, "record of instance %s: %s", r->name, gerr->message);
  return OAKUK_CLI_OK;
}

static int setup_network(Run *r) {
  g_autoptr(GError) err = NULL;
  int lock = oakuk_run_lock(&err);
  if (lock < 0)
    return fail(NULL, "%s", err->message);
  int rc = setup_network_locked(r);
  close(lock);
  return rc;
}

/* What the run made: its network and record; the bridge, table and host settings with the last run. */
static void teardown_network(Run *r) {
  if (!r->have_record || r->detached)
    return;
  g_autoptr(GError) err = NULL;
  int lock = oakuk_run_lock(&err);
  if (lock < 0)
    fail(NULL, "%s", err->message);
  oakuk_run_release(r->net, r->name, r->have_instance_net, "oakuk run");
  if (lock >= 0)
    close(lock);
}

static oakuk_instance_spec *make_spec(Run *r) {
  const OakukRunOptions *o = r->o;
  oakuk_instance_spec *s = oakuk_instance_spec_new(r->name);
  oakuk_instance_spec_set_arch(s, r->arch);
  oakuk_instance_spec_set_accel(s, r->accel);
  oakuk_instance_spec_set_kernel(s, oakuk_image_kernel(r->image));
  oakuk_instance_spec_set_initrd(s, oakuk_image_initrd(r->image));
  oakuk_instance_spec_set_files_dir(s, o->files_dir ? o->files_dir : oakuk_image_files_dir(r->image));
  oakuk_instance_spec_set_memory_mb(s, o->memory_mb);
  oakuk_instance_spec_set_vcpus(s, o->vcpus);
  const char *flavor = o->flavor ? o->flavor : oakuk_image_flavor(r->image);
  if (flavor && strcmp(flavor, "unknown") != 0)
    oakuk_instance_spec_set_flavor(s, flavor);
  /* Only a Unikraft version selects a network convention; a Linux one ("6.1.0-56-amd64") does not. */
  if (o->uk_version)
    oakuk_instance_spec_set_version(s, o->uk_version);
  else if (g_strcmp0(flavor, "unikraft") == 0 && oakuk_image_version(r->image))
    oakuk_instance_spec_set_version(s, oakuk_image_version(r->image));
  oakuk_instance_spec_set_cmdline_extra(s, oakuk_image_cmdline_extra(r->image));
  oakuk_net_instance_info *n = r->ninfo;
  oakuk_instance_spec_set_network(
      s, oakuk_net_instance_info_netns_path(n), oakuk_net_instance_info_tap(n),
      oakuk_net_instance_info_guest_ip(n), (int32_t)oakuk_net_instance_info_guest_prefix(n),
      oakuk_net_instance_info_guest_gateway(n), oakuk_net_instance_info_guest_mac(n));
  for (char **a = o->args; a && *a; a++)
    oakuk_instance_spec_add_arg(s, *a);
  /* An OCI image's Cmd and Env (KraftKit's config, urunc's cmdline): the arguments when none are
   * given, as `kraft run` and `docker run` do. */
  for (size_t i = 0; !(o->args && *o->args) && i < oakuk_image_arg_count(r->image); i++)
    oakuk_instance_spec_add_arg(s, oakuk_image_arg(r->image, i));
  for (size_t i = 0; i < oakuk_image_env_count(r->image); i++)
    oakuk_instance_spec_add_env(s, oakuk_image_env(r->image, i));
  oakuk_instance_spec_set_readiness_tcp(s, oakuk_net_instance_info_ip(n), r->ready_port);
  oakuk_instance_spec_set_readiness_serial(s, o->ready_serial);
  return s;
}

/* The guest side of the first TCP port mapping ("8080:80" -> 80), or 0. */
static int32_t first_tcp_guest_port(char **ports) {
  for (char **p = ports; p && *p; p++) {
    if (g_str_has_suffix(*p, "/udp"))
      continue;
    const char *colon = strchr(*p, ':');
    gint64 v = g_ascii_strtoll(colon ? colon + 1 : *p, NULL, 10);
    if (v > 0 && v < 65536)
      return (int32_t)v;
  }
  return 0;
}

static int launch(Run *r) {
  oakuk_qemu_options qo = OAKUK_QEMU_OPTIONS_INIT;
  qo.allow_emulation = r->o->allow_emulation;
  oakuk_error *err = NULL;
  r->rt = oakuk_qemu_runtime_new(r->runtime_dir, &qo, &err);
  if (!r->rt)
    return fail(err, "QEMU runtime in %s", r->runtime_dir);
  oakuk_runtime_set_status_callback(r->rt, on_status, r);
  oakuk_runtime_set_ready_callback(r->rt, on_ready, r);
  r->ready_port = r->o->ready_port >= 0 ? r->o->ready_port : first_tcp_guest_port(r->o->ports);
  oakuk_instance_spec *s = make_spec(r);
  int rc = oakuk_runtime_deploy(r->rt, s, &err);
  oakuk_instance_spec_unref(s);
  if (rc != 0)
    return fail(err, "start instance %s", r->name);
  r->deployed = true;
  say("starting %s: %s guest under %s, %" G_GINT64_FORMAT " MB, %d vcpu%s, image %s", r->name, r->arch,
      oakuk_accel_name(r->accel), r->o->memory_mb, r->o->vcpus, r->o->vcpus == 1 ? "" : "s", r->o->image);
  if (r->o->detach) /* stdout is for the name; the console stays in the instance's serial.log */
    return OAKUK_CLI_OK;
  char *console = oakuk_runtime_instance_console_path(r->rt, r->name);
  r->console_path = g_strdup(console);
  oakuk_free(console);
  r->console_timer = g_timeout_add(CONSOLE_POLL_MS, on_console_tick, r);
  return OAKUK_CLI_OK;
}

static void run_free(Run *r) {
  if (r->console_timer)
    g_source_remove(r->console_timer);
  if (r->stop_timer)
    g_source_remove(r->stop_timer);
  if (r->ready_timer)
    g_source_remove(r->ready_timer);
  if (r->sigint)
    g_source_remove(r->sigint);
  if (r->sigterm)
    g_source_remove(r->sigterm);
  if (r->console_fd >= 0)
    close(r->console_fd);
  oakuk_console_free(r->cleaner);
  /* Dropping the runtime kills an instance that did not stop in time and removes its files
   * (unless detached: then it keeps running, with its files). */
  oakuk_runtime_unref(r->rt);
  if (!r->detached && r->runtime_dir) {
    g_autofree char *instances = g_build_filename(r->runtime_dir, "instances", NULL);
    (void)rmdir(instances);
    (void)rmdir(r->runtime_dir);
  }
  teardown_network(r);
  oakuk_run_record_free(r->rec);
  oakuk_net_instance_info_unref(r->ninfo);
  oakuk_net_unref(r->net);
  oakuk_qemu_caps_unref(r->caps);
  oakuk_image_unref(r->image);
  g_main_loop_unref(r->loop);
  g_free(r->name);
  g_free(r->state_dir);
  g_free(r->runtime_dir);
  g_free(r->arch);
  g_free(r->console_path);
  g_free(r->last_detail);
}

static volatile sig_atomic_t detach_child;

static void forward_signal(int sig) {
  if (detach_child > 0)
    kill((pid_t)detach_child, sig);
}

/* --detach: the run happens in a child in a session of its own, so QEMU, which stays behind, gets
 * no signal meant for the terminal or the script that ran `oakuk run`. The parent waits for the
 * child (which returns once the guest runs) and passes Ctrl-C and SIGTERM on to it. Returns the
 * parent's exit status, or -1 in the child. */
static int detach_fork(void) {
  fflush(NULL);
  pid_t child = fork();
  if (child < 0) {
    fprintf(stderr, "oakuk run: --detach: fork: %s\n", g_strerror(errno));
    return OAKUK_CLI_FAILED;
  }
  if (child == 0) {
    (void)setsid();
    return -1;
  }
  detach_child = child;
  struct sigaction sa = {.sa_handler = forward_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  int ws = 0;
  while (waitpid(child, &ws, 0) < 0)
    if (errno != EINTR)
      return OAKUK_CLI_FAILED;
  return WIFEXITED(ws) ? WEXITSTATUS(ws) : OAKUK_CLI_FAILED;
}

int oakuk_run_session(const OakukRunOptions *o) {
  if (!oakuk_run_privileged()) {
    fprintf(stderr, "oakuk run: needs root or CAP_NET_ADMIN (and CAP_SYS_ADMIN): it builds a network "
                    "namespace, a bridge and nftables rules for the guest; run it as root (sudo)\n");
    return OAKUK_RUN_NOT_PERMITTED;
  }
  /* Before any thread exists (GLib's signal and worker threads). */
  if (o->detach) {
    int rc = detach_fork();
    if (rc >= 0)
      return rc;
  }
  Run r = {.o = o, .console_fd = -1, .status = OAKUK_CLI_OK};
  r.cleaner = oakuk_console_new();
  r.loop = g_main_loop_new(NULL, FALSE);
  r.name = o->name ? g_strdup(o->name) : g_strdup_printf("run-%08x", g_random_int());
  /* Signals are only dispatched from the main loop: one that arrives while the image is fetched or
   * the network is built stops the instance as soon as the loop runs, and cleanup still happens. */
  r.sigint = g_unix_signal_add(SIGINT, on_signal, &r);
  r.sigterm = g_unix_signal_add(SIGTERM, on_signal, &r);
  int rc = resolve_state_dir(&r);
  if (rc == OAKUK_CLI_OK)
    rc = fetch_image(&r);
  if (rc == OAKUK_CLI_OK)
    rc = choose_accel(&r);
  if (rc == OAKUK_CLI_OK)
    rc = setup_network(&r);
  if (rc == OAKUK_CLI_OK)
    rc = launch(&r);
  if (rc == OAKUK_CLI_OK) {
    g_main_loop_run(r.loop);
    if (!o->detach) {
      console_pump(&r);
      char *rest = oakuk_console_finish(r.cleaner);
      fputs(rest, stdout);
      fflush(stdout);
      oakuk_free(rest);
    }
    rc = r.status;
    if (o->detach && !r.detached && rc == OAKUK_CLI_OK)
      rc = OAKUK_CLI_FAILED;
  }
  run_free(&r);
  return rc;
}

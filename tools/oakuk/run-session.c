/* `oakuk run`: composes liboakuk's image cache, QEMU probe, network plumber and QEMU runtime
 * into a foreground run, like `docker run` / `kraft run` without any control plane. */
#include "run-session.h"

#include "oakuk-cli.h"

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <json-glib/json-glib.h>
#include <oakuk/oakuk.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define CONSOLE_POLL_MS 100
#define STOP_TIMEOUT_S 20 /* give up waiting for UNDEPLOYED after this (the runtime then kills) */

typedef struct {
  const OakukRunOptions *o;
  GMainLoop *loop;
  char *name, *state_dir, *image_desc;
  oakuk_image *image;
  oakuk_qemu_caps *caps;
  char *arch;
  int32_t accel;
  oakuk_net *net;
  bool made_bridge;
  bool have_instance_net;
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
}

/* How the guest ended decides the exit status: 0 for a clean power-off, 3 for a crash or a kill. */
static void on_end(Run *r, int32_t status, const char *detail) {
  int32_t kind = oakuk_runtime_instance_exit(r->rt, r->name);
  const char *how = kind == OAKUK_EXIT_CLEAN    ? "exited cleanly"
                    : kind == OAKUK_EXIT_CRASH  ? "crashed"
                    : kind == OAKUK_EXIT_KILLED ? "was killed"
                                                : "failed to start";
  r->status = kind == OAKUK_EXIT_CLEAN ? OAKUK_CLI_OK : OAKUK_CLI_GUEST_DIED;
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
  if (g_mkdir_with_parents(r->state_dir, 0700) != 0)
    return fail(NULL, "state dir %s: %s", r->state_dir, g_strerror(errno));
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
      if (!g_file_test(local, G_FILE_TEST_IS_REGULAR))
        return fail(NULL, "image %s: no such file %s", image, local);
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
  if (r->o->username)
    return fail(NULL, "--username goes with an OCI reference as IMAGE, not %s", image);
  g_autofree char *url = NULL;
  g_autofree char *local = NULL;
  if (strstr(image, "://")) {
    url = g_strdup(image);
    local = g_filename_from_uri(image, NULL, NULL);
  } else {
    local = g_canonicalize_filename(image, NULL);
    if (!g_file_test(local, G_FILE_TEST_IS_REGULAR))
      return fail(NULL, "image %s: not a URL, an OCI reference or a file", image);
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

static gboolean json_bool(JsonObject *o, const char *key) {
  return o && json_object_get_boolean_member_with_default(o, key, FALSE);
}

/* oakuk_net_list as a JSON object, or NULL. */
static JsonNode *net_state(oakuk_net *net) {
  oakuk_error *err = NULL;
  char *text = oakuk_net_list(net, &err);
  if (!text) {
    fail(err, "list the network state");
    return NULL;
  }
  JsonNode *n = json_from_string(text, NULL);
  oakuk_free(text);
  if (n && !JSON_NODE_HOLDS_OBJECT(n))
    g_clear_pointer(&n, json_node_unref);
  return n;
}

static guint array_len(JsonObject *o, const char *key) {
  JsonArray *a = o && json_object_has_member(o, key) ? json_object_get_array_member(o, key) : NULL;
  return a ? json_array_get_length(a) : 0;
}

static int setup_network(Run *r) {
  oakuk_net_options no;
  oakuk_net_options_init(&no, OAKUK_NET_OPTIONS_VERSION);
  no.node_subnet = r->o->subnet;
  oakuk_error *err = NULL;
  r->net = oakuk_net_new(&no, &err);
  if (!r->net)
    return fail(err, "network (--subnet %s)", r->o->subnet);
  g_autoptr(JsonNode) before = net_state(r->net);
  if (!before)
    return OAKUK_CLI_FAILED;
  /* Whether this run makes the bridge decides whether it removes it (with the table) at the end. */
  r->made_bridge = !json_bool(json_node_get_object(before), "bridge");
  if (oakuk_net_setup_node(r->net, &err) != 0)
    return fail(err, "set up the node network (bridge, nftables table oakuk)");
  r->have_instance_net = true;
  if (oakuk_net_instance_setup(r->net, r->name, NULL, r->o->net_nat ? OAKUK_NET_UK_NAT : OAKUK_NET_UK_DIRECT,
                               &r->ninfo, &err) != 0)
    return fail(err, "set up the network of instance %s", r->name);
  for (char **p = r->o->ports; p && *p; p++)
    if (oakuk_net_port_map_add(r->net, r->name, *p, &err) != 0)
      return fail(err, "port mapping -p %s", *p);
  return OAKUK_CLI_OK;
}

static void teardown_network(Run *r) {
  if (!r->net)
    return;
  oakuk_error *err = NULL;
  if (r->have_instance_net && oakuk_net_instance_teardown(r->net, r->name, &err) != 0)
    fail(err, "remove the network of instance %s", r->name);
  if (!r->made_bridge)
    return;
  g_autoptr(JsonNode) now = net_state(r->net);
  JsonObject *o = now ? json_node_get_object(now) : NULL;
  if (!o)
    return;
  /* Someone else started using the bridge meanwhile: leave it to them. */
  if (array_len(o, "instances") || array_len(o, "ports") || array_len(o, "services") || array_len(o, "peers"))
    return;
  if (oakuk_net_teardown_node(r->net, &err) != 0)
    fail(err, "remove the bridge and nftables table");
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
  r->rt = oakuk_qemu_runtime_new(r->state_dir, &qo, &err);
  if (!r->rt)
    return fail(err, "QEMU runtime in %s", r->state_dir);
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
  /* Dropping the runtime kills an instance that did not stop in time and removes its files. */
  oakuk_runtime_unref(r->rt);
  teardown_network(r);
  oakuk_net_instance_info_unref(r->ninfo);
  oakuk_net_unref(r->net);
  oakuk_qemu_caps_unref(r->caps);
  oakuk_image_unref(r->image);
  g_main_loop_unref(r->loop);
  g_free(r->name);
  g_free(r->state_dir);
  g_free(r->arch);
  g_free(r->console_path);
  g_free(r->last_detail);
}

int oakuk_run_session(const OakukRunOptions *o) {
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
    console_pump(&r);
    char *rest = oakuk_console_finish(r.cleaner);
    fputs(rest, stdout);
    fflush(stdout);
    oakuk_free(rest);
    rc = r.status;
  }
  run_free(&r);
  return rc;
}

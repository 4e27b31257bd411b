/* Integration tests of the container runtime: a real registry (Debian's docker-registry, started
 * here on 127.0.0.1:<free port>, plus one with htpasswd auth) holding a busybox-static image
 * pushed by oakuk_container_build_rootfs_image, real runc, cgroups and a scratch netns + veth.
 * Needs root. Every registry process, netns, container and cgroup is removed even on failure. */
#include "oci-private.h"

#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <glib/gstdio.h>
#include <libsoup/soup.h>
#include <signal.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define USER "oakuk"
#define PASS "s3cret-pass"

typedef struct {
  GPid pid;
  char *dir;
  char *addr; /* 127.0.0.1:port */
} Registry;

static Registry reg_open, reg_auth;
static Registry reg_tmp; /* stopped by /container/pull/cached-resolution */
static char *work;       /* scratch dir for rootfs trees */
static char *ns_name;    /* scratch netns */
static char *veth;       /* host end */
static char *busybox;    /* "<reg_open>/test/busybox:1" */

/* ---- process helpers ---- */

static gboolean run(const char *cmdline) {
  g_auto(GStrv) argv = g_strsplit(cmdline, " ", -1);
  int status = 0;
  g_autofree char *err = NULL;
  if (!g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL, NULL,
                    &err, &status, NULL) ||
      !g_spawn_check_wait_status(status, NULL)) {
    g_test_message("%s: %s", cmdline, err ? err : "failed");
    return FALSE;
  }
  return TRUE;
}

static guint16 free_port(void) {
  g_autoptr(GSocket) s =
      g_socket_new(G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, NULL);
  g_autoptr(GInetAddress) lo = g_inet_address_new_loopback(G_SOCKET_FAMILY_IPV4);
  g_autoptr(GSocketAddress) a = g_inet_socket_address_new(lo, 0);
  g_assert_true(g_socket_bind(s, a, FALSE, NULL));
  g_autoptr(GSocketAddress) bound = g_socket_get_local_address(s, NULL);
  return g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(bound));
}

/* A bcrypt htpasswd line made with python3's crypt module (libxcrypt). */
static char *htpasswd_line(void) {
  const char *argv[] = {"python3",
                        "-W",
                        "ignore",
                        "-c",
                        "import crypt,sys; print('" USER ":' + crypt.crypt('" PASS
                        "', crypt.mksalt(crypt.METHOD_BLOWFISH)))",
                        NULL};
  g_autofree char *out = NULL;
  int status;
  g_assert_true(
      g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, NULL, &status, NULL));
  g_assert_true(g_spawn_check_wait_status(status, NULL));
  g_assert_true(strstr(out, ":$2"));
  return g_steal_pointer(&out);
}

static gboolean registry_answers(const char *addr) {
  g_autoptr(GSocketClient) c = g_socket_client_new();
  g_autoptr(GSocketConnection) conn = g_socket_client_connect_to_host(c, addr, 0, NULL, NULL);
  return conn != NULL;
}

static void registry_start(Registry *r, gboolean auth) {
  r->dir = g_build_filename(work, "registry-XXXXXX", NULL);
  g_assert_nonnull(g_mkdtemp(r->dir));
  r->addr = g_strdup_printf("127.0.0.1:%u", free_port());
  GString *y = g_string_new("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n");
  g_string_append_printf(y, "    rootdirectory: %s/data\nhttp:\n  addr: %s\n", r->dir, r->addr);
  if (auth) {
    g_autofree char *line = htpasswd_line();
    g_autofree char *pw = g_build_filename(r->dir, "htpasswd", NULL);
    g_assert_true(g_file_set_contents(pw, line, -1, NULL));
    g_string_append_printf(y, "auth:\n  htpasswd:\n    realm: oakuk-test\n    path: %s\n", pw);
  }
  g_autofree char *cfg = g_build_filename(r->dir, "config.yml", NULL);
  g_assert_true(g_file_set_contents(cfg, y->str, -1, NULL));
  g_string_free(y, TRUE);
  g_autofree char *logp = g_build_filename(r->dir, "registry.log", NULL);
  int logfd = open(logp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  const char *argv[] = {"/usr/bin/docker-registry", "serve", cfg, NULL};
  GError *err = NULL;
  gboolean ok = g_spawn_async_with_pipes_and_fds(
      NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDIN_FROM_DEV_NULL, NULL, NULL, -1, logfd, logfd,
      NULL, NULL, 0, &r->pid, NULL, NULL, NULL, &err);
  close(logfd);
  g_assert_no_error(err);
  g_assert_true(ok);
  for (int k = 0; k < 100 && !registry_answers(r->addr); k++)
    g_usleep(100000);
  g_assert_true(registry_answers(r->addr));
}

/* Whether pid is still a docker-registry (the reaper's copy of a pid may be stale). */
static gboolean is_registry(GPid pid) {
  g_autofree char *path = g_strdup_printf("/proc/%d/cmdline", (int)pid);
  g_autofree char *cmd = NULL;
  return g_file_get_contents(path, &cmd, NULL, NULL) && strcmp(cmd, "/usr/bin/docker-registry") == 0;
}

static void registry_stop(Registry *r) {
  if (r->pid > 0 && is_registry(r->pid)) {
    kill(r->pid, SIGTERM);
    waitpid(r->pid, NULL, 0); /* in the reaper: not its child, returns at once */
    for (int k = 0; k < 100 && kill(r->pid, 0) == 0; k++)
      g_usleep(20000);
    r->pid = 0;
  }
  if (r->dir) {
    g_autofree char *cmd = g_strdup_printf("rm -rf %s", r->dir);
    run(cmd);
  }
}

static void net_cleanup(void) {
  if (veth) {
    g_autofree char *sys = g_strdup_printf("/sys/class/net/%s", veth);
    g_autofree char *a = g_strdup_printf("ip link del %s", veth);
    if (g_file_test(sys, G_FILE_TEST_EXISTS))
      run(a);
  }
  if (ns_name) {
    g_autofree char *p = g_strdup_printf("/run/netns/%s", ns_name);
    g_autofree char *b = g_strdup_printf("ip netns del %s", ns_name);
    if (g_file_test(p, G_FILE_TEST_EXISTS))
      run(b);
  }
}

/* Cleanup that survives any failure of the test process (g_error aborts, signals): a forked
 * reaper waits for the test process to go away (its pipe reaches EOF) and then removes runc
 * containers, overlay mounts, the netns, the registries and the scratch directories. */
static void reap_containers(void) {
  g_autoptr(GDir) d = g_dir_open(work, 0, NULL);
  const char *e;
  while (d && (e = g_dir_read_name(d))) {
    g_autofree char *root = g_build_filename(work, e, "runc", NULL);
    g_autoptr(GDir) rd = g_dir_open(root, 0, NULL);
    const char *c;
    while (rd && (c = g_dir_read_name(rd))) {
      g_autofree char *cmd = g_strdup_printf("runc --root %s delete --force %s", root, c);
      run(cmd);
    }
    g_autofree char *inst = g_build_filename(work, e, "instances", NULL);
    g_autoptr(GDir) id = g_dir_open(inst, 0, NULL);
    while (id && (c = g_dir_read_name(id))) {
      g_autofree char *mnt = g_build_filename(inst, c, "bundle", "rootfs", NULL);
      umount2(mnt, MNT_DETACH);
    }
  }
}

static void start_reaper(void) {
  int fds[2];
  g_assert_cmpint(pipe(fds), ==, 0);
  pid_t parent = getpid();
  pid_t child = fork();
  g_assert_cmpint(child, >=, 0);
  if (child > 0) {
    close(fds[0]);
    return; /* fds[1] stays open until this process ends */
  }
  close(fds[1]);
  setsid();
  char b;
  while (read(fds[0], &b, 1) != 0 && errno == EINTR)
    ;
  ns_name = g_strdup_printf("oakuk-ct%d", (int)parent);
  veth = g_strdup_printf("ctv%d", (int)parent);
  net_cleanup();
  reap_containers();
  registry_stop(&reg_open);
  registry_stop(&reg_auth);
  registry_stop(&reg_tmp);
  g_autofree char *cmd = g_strdup_printf("rm -rf %s", work);
  run(cmd);
  _exit(0);
}

/* A busybox-static rootfs: /bin/busybox and applet links, /www/index.html, /arch. */
static char *make_rootfs(const char *name, const char *arch_text) {
  g_autofree char *root = g_build_filename(work, name, NULL);
  g_autofree char *bin = g_build_filename(root, "bin", NULL);
  g_autofree char *www = g_build_filename(root, "www", NULL);
  g_assert_cmpint(g_mkdir_with_parents(bin, 0755), ==, 0);
  g_assert_cmpint(g_mkdir_with_parents(www, 0755), ==, 0);
  for (const char *const *d = (const char *const[]){"tmp", "proc", "sys", "dev", "etc", NULL}; *d; d++) {
    g_autofree char *p = g_build_filename(root, *d, NULL);
    g_mkdir(p, 0755);
  }
  g_autofree char *bb = g_build_filename(bin, "busybox", NULL);
  g_autofree char *data = NULL;
  gsize n;
  g_assert_true(g_file_get_contents("/bin/busybox", &data, &n, NULL));
  g_assert_true(g_file_set_contents(bb, data, (gssize)n, NULL));
  g_assert_cmpint(chmod(bb, 0755), ==, 0);
  const char *applets[] = {"sh", "httpd", "wget", "nc", "cat", "echo", "sleep", "ls", "id", NULL};
  for (const char *const *a = applets; *a; a++) {
    g_autofree char *l = g_build_filename(bin, *a, NULL);
    g_assert_cmpint(symlink("busybox", l), ==, 0);
  }
  g_autofree char *idx = g_build_filename(www, "index.html", NULL);
  g_assert_true(g_file_set_contents(idx, "hello from the oakuk busybox container\n", -1, NULL));
  g_autofree char *archf = g_build_filename(root, "arch", NULL);
  g_assert_true(g_file_set_contents(archf, arch_text, -1, NULL));
  return g_steal_pointer(&root);
}

/* ---- fixture: a runtime on a fresh state dir ---- */

typedef struct {
  char *name;
  int32_t status;
  char *detail;
} Event;

typedef struct {
  char *state;
  GPtrArray *events;
  oakuk_runtime *rt;
} Fx;

static void event_free(Event *e) {
  g_free(e->name);
  g_free(e->detail);
  g_free(e);
}

static void on_status(const char *instance, int32_t status, const char *detail, void *data) {
  Fx *f = data;
  Event *e = g_new0(Event, 1);
  e->name = g_strdup(instance);
  e->status = status;
  e->detail = g_strdup(detail);
  g_ptr_array_add(f->events, e);
  g_test_message("%s: %s%s%s", instance, oakuk_instance_status_name(status), detail ? ": " : "",
                 detail ? detail : "");
}

static oakuk_runtime *new_runtime(Fx *f) {
  oakuk_error *err = NULL;
  oakuk_runtime *rt = oakuk_container_runtime_new(f->state, NULL, &err);
  if (!rt)
    g_error("runtime: %s", oakuk_error_message(err));
  oakuk_runtime_set_status_callback(rt, on_status, f);
  return rt;
}

static void fx_setup(Fx *f, gconstpointer data) {
  f->state = g_build_filename(work, "state-XXXXXX", NULL);
  g_assert_nonnull(g_mkdtemp(f->state));
  f->events = g_ptr_array_new_with_free_func((GDestroyNotify)event_free);
  f->rt = new_runtime(f);
}

static void fx_teardown(Fx *f, gconstpointer data) {
  oakuk_runtime_unref(f->rt); /* stops and removes whatever a failed test left */
  g_autofree char *cmd = g_strdup_printf("rm -rf %s", f->state);
  run(cmd);
  g_free(f->state);
  g_ptr_array_unref(f->events);
}

static Event *wait_status(Fx *f, const char *name, int32_t status, int timeout_s) {
  gint64 end = g_get_monotonic_time() + (gint64)timeout_s * G_USEC_PER_SEC;
  for (;;) {
    for (guint k = 0; k < f->events->len; k++) {
      Event *e = f->events->pdata[k];
      if (strcmp(e->name, name) == 0 && e->status == status)
        return e;
      if (strcmp(e->name, name) == 0 && e->status == OAKUK_STATUS_FAILED && status != OAKUK_STATUS_FAILED &&
          status != OAKUK_STATUS_UNDEPLOYED)
        g_error("%s: FAILED while waiting for %s: %s", name, oakuk_instance_status_name(status), e->detail);
    }
    if (g_get_monotonic_time() > end)
      g_error("%s: no %s within %d s", name, oakuk_instance_status_name(status), timeout_s);
    g_main_context_iteration(NULL, FALSE);
    g_usleep(2000);
  }
}

static char *iname(const char *what) {
  return g_strdup_printf("ct%d.%s.instance.0", (int)getpid(), what);
}

static void deploy(Fx *f, oakuk_instance_spec *s) {
  oakuk_error *err = NULL;
  int rc = oakuk_runtime_deploy(f->rt, s, &err);
  if (rc != 0)
    g_error("deploy: %s", oakuk_error_message(err));
}

static oakuk_instance_spec *ctr_spec(const char *name, const char *image) {
  oakuk_instance_spec *s = oakuk_instance_spec_new(name);
  oakuk_instance_spec_set_virt(s, OAKUK_VIRT_CONTAINER);
  oakuk_instance_spec_set_image(s, image);
  oakuk_instance_spec_set_memory_mb(s, 64);
  return s;
}

static void undeploy_and_check_gone(Fx *f, const char *name) {
  int64_t pid = oakuk_runtime_instance_pid(f->rt, name);
  g_assert_cmpint(oakuk_runtime_undeploy(f->rt, name, NULL), ==, 0);
  wait_status(f, name, OAKUK_STATUS_UNDEPLOYED, 30);
  if (pid > 0)
    g_assert_true(kill((pid_t)pid, 0) != 0 && errno == ESRCH);
  g_autofree char *dir = g_build_filename(f->state, "instances", name, NULL);
  g_assert_false(g_file_test(dir, G_FILE_TEST_EXISTS));
  g_autofree char *cg = g_build_filename("/sys/fs/cgroup/memory/oakuk", name, NULL);
  g_autofree char *cg2 = g_build_filename("/sys/fs/cgroup/oakuk", name, NULL);
  g_assert_false(g_file_test(cg, G_FILE_TEST_EXISTS));
  g_assert_false(g_file_test(cg2, G_FILE_TEST_EXISTS));
  g_autofree char *runc_state = g_build_filename(f->state, "runc", name, NULL);
  g_assert_false(g_file_test(runc_state, G_FILE_TEST_EXISTS));
  g_autofree char *mounts = NULL;
  g_assert_true(g_file_get_contents("/proc/self/mountinfo", &mounts, NULL, NULL));
  g_assert_null(strstr(mounts, dir));
}

static char *http_get(const char *ip, guint16 port) {
  g_autoptr(GSocketClient) c = g_socket_client_new();
  g_socket_client_set_timeout(c, 5);
  g_autoptr(GSocketConnection) conn = g_socket_client_connect_to_host(c, ip, port, NULL, NULL);
  if (!conn)
    return NULL;
  const char *req = "GET /index.html HTTP/1.0\r\n\r\n";
  if (!g_output_stream_write_all(g_io_stream_get_output_stream(G_IO_STREAM(conn)), req, strlen(req), NULL,
                                 NULL, NULL))
    return NULL;
  GString *resp = g_string_new(NULL);
  char buf[4096];
  gssize n;
  while ((n = g_input_stream_read(g_io_stream_get_input_stream(G_IO_STREAM(conn)), buf, sizeof buf, NULL,
                                  NULL)) > 0)
    g_string_append_len(resp, buf, n);
  return g_string_free(resp, FALSE);
}

/* ---- tests ---- */

static void test_httpd_in_netns(Fx *f, gconstpointer data) {
  int id = (int)getpid() % 200 + 20;
  ns_name = g_strdup_printf("oakuk-ct%d", (int)getpid());
  veth = g_strdup_printf("ctv%d", (int)getpid());
  g_autofree char *peer = g_strdup_printf("ctp%d", (int)getpid());
  g_autofree char *host_ip = g_strdup_printf("10.214.%d.1", id);
  g_autofree char *ctr_ip = g_strdup_printf("10.214.%d.2", id);
  char *cmds[] = {
      g_strdup_printf("ip netns add %s", ns_name),
      g_strdup_printf("ip link add %s type veth peer name %s", veth, peer),
      g_strdup_printf("ip link set %s netns %s", peer, ns_name),
      g_strdup_printf("ip addr add %s/24 dev %s", host_ip, veth),
      g_strdup_printf("ip link set %s up", veth),
      g_strdup_printf("ip -n %s link set %s name eth0", ns_name, peer),
      g_strdup_printf("ip -n %s addr add %s/24 dev eth0", ns_name, ctr_ip),
      g_strdup_printf("ip -n %s link set eth0 up", ns_name),
      g_strdup_printf("ip -n %s link set lo up", ns_name),
  };
  for (size_t k = 0; k < G_N_ELEMENTS(cmds); k++) {
    gboolean ok = run(cmds[k]);
    if (!ok)
      g_error("network setup failed at: %s", cmds[k]);
  }
  for (size_t k = 0; k < G_N_ELEMENTS(cmds); k++)
    g_free(cmds[k]);

  g_autofree char *name = iname("httpd");
  g_autofree char *nspath = g_strdup_printf("/run/netns/%s", ns_name);
  oakuk_instance_spec *s = ctr_spec(name, busybox);
  oakuk_instance_spec_set_network(s, nspath, NULL, ctr_ip, 24, host_ip, NULL);
  const char *args[] = {"httpd", "-f", "-p", "8080", "-h", "/www"};
  for (size_t k = 0; k < G_N_ELEMENTS(args); k++)
    oakuk_instance_spec_add_arg(s, args[k]);
  oakuk_instance_spec_add_env(s, "GREETING=hi");
  deploy(f, s);
  oakuk_instance_spec_unref(s);
  wait_status(f, name, OAKUK_STATUS_RUNNING, 60);

  /* The first pull reported its progress while CREATING. */
  gboolean saw_progress = FALSE;
  for (guint k = 0; k < f->events->len; k++) {
    Event *e = f->events->pdata[k];
    if (e->status == OAKUK_STATUS_CREATING && e->detail && g_str_has_prefix(e->detail, "pulling layer 1/1: "))
      saw_progress = TRUE;
  }
  g_assert_true(saw_progress);
  g_assert_cmpint(oakuk_runtime_instance_status(f->rt, name), ==, OAKUK_STATUS_RUNNING);
  g_assert_cmpint(oakuk_runtime_instance_pid(f->rt, name), >, 0);

  g_autofree char *resp = NULL;
  for (int k = 0; k < 50 && !(resp && strstr(resp, " 200 ")); k++) {
    g_free(resp);
    resp = http_get(ctr_ip, 8080);
    if (!resp)
      g_usleep(100000);
  }
  g_assert_nonnull(resp);
  g_assert_nonnull(strstr(resp, "hello from the oakuk busybox container"));

  /* Stats come from the container's cgroup. */
  int64_t kb = 0, rss = 0;
  double cpu = 0;
  g_assert_cmpint(oakuk_runtime_cgroup_memory_kb(f->rt, name, &kb, NULL), ==, 0);
  g_assert_cmpint(kb, >, 0);
  g_assert_cmpint(kb, <, 64 * 1024);
  g_assert_cmpint(oakuk_runtime_stats(f->rt, name, &cpu, &rss, NULL), ==, 0);
  g_assert_cmpfloat(cpu, >=, 0);
  g_autofree char *limit_path =
      g_build_filename("/sys/fs/cgroup/memory/oakuk", name, "memory.limit_in_bytes", NULL);
  g_autofree char *limit = NULL;
  if (g_file_get_contents(limit_path, &limit, NULL, NULL))
    g_assert_cmpint(g_ascii_strtoll(limit, NULL, 10), ==, 64 * 1024 * 1024);

  undeploy_and_check_gone(f, name);
  g_assert_null(http_get(ctr_ip, 8080));
  net_cleanup();
  g_autofree char *p = g_strdup_printf("/run/netns/%s", ns_name);
  g_assert_false(g_file_test(p, G_FILE_TEST_EXISTS));
  g_clear_pointer(&ns_name, g_free);
  g_clear_pointer(&veth, g_free);
}

static void test_one_shot(Fx *f, gconstpointer data) {
  g_autofree char *ok_name = iname("oneshot-ok");
  g_autofree char *bad_name = iname("oneshot-bad");
  oakuk_instance_spec *s = ctr_spec(ok_name, busybox);
  oakuk_instance_spec_set_one_shot(s, true);
  oakuk_instance_spec_add_arg(s, "sh");
  oakuk_instance_spec_add_arg(s, "-c");
  oakuk_instance_spec_add_arg(s, "echo job says $GREETING from $(cat /arch); exit 0");
  oakuk_instance_spec_add_env(s, "GREETING=hello");
  deploy(f, s);
  oakuk_instance_spec_unref(s);
  Event *e = wait_status(f, ok_name, OAKUK_STATUS_COMPLETED, 60);
  g_assert_nonnull(strstr(e->detail, "exited with code 0"));
  g_assert_nonnull(strstr(e->detail, "job says hello from amd64"));

  s = ctr_spec(bad_name, busybox);
  oakuk_instance_spec_set_one_shot(s, true);
  oakuk_instance_spec_add_arg(s, "sh");
  oakuk_instance_spec_add_arg(s, "-c");
  oakuk_instance_spec_add_arg(s, "echo broken >&2; exit 3");
  deploy(f, s);
  oakuk_instance_spec_unref(s);
  e = wait_status(f, bad_name, OAKUK_STATUS_DEAD, 60);
  g_assert_nonnull(strstr(e->detail, "exited with code 3"));
  g_assert_nonnull(strstr(e->detail, "broken"));
  undeploy_and_check_gone(f, ok_name);
  undeploy_and_check_gone(f, bad_name);
}

static void test_stop_and_adopt(Fx *f, gconstpointer data) {
  g_autofree char *name = iname("adopt");
  oakuk_instance_spec *s = ctr_spec(name, busybox);
  oakuk_instance_spec_add_arg(s, "sleep");
  oakuk_instance_spec_add_arg(s, "600");
  oakuk_instance_spec_set_readonly_rootfs(s, true);
  deploy(f, s);
  oakuk_instance_spec_unref(s);
  wait_status(f, name, OAKUK_STATUS_RUNNING, 60);
  int64_t pid = oakuk_runtime_instance_pid(f->rt, name);
  g_assert_cmpint(pid, >, 0);

  /* A node restart: the runtime goes, the container stays, a new runtime adopts it. */
  oakuk_runtime_set_keep_instances(f->rt, true);
  oakuk_runtime_unref(f->rt);
  g_assert_cmpint(kill((pid_t)pid, 0), ==, 0);
  g_ptr_array_set_size(f->events, 0);
  f->rt = new_runtime(f);
  oakuk_error *err = NULL;
  g_assert_cmpint(oakuk_runtime_adopt(f->rt, &err), ==, 1);
  wait_status(f, name, OAKUK_STATUS_RUNNING, 10);
  g_assert_cmpint(oakuk_runtime_instance_pid(f->rt, name), ==, pid);
  /* sleep ignores nothing: SIGTERM ends it; the full cleanup follows. */
  undeploy_and_check_gone(f, name);
}

static void expect_failed(Fx *f, const char *what, const char *image, const char *user, const char *pass,
                          const char *needle) {
  g_autofree char *name = iname(what);
  oakuk_instance_spec *s = ctr_spec(name, image);
  oakuk_instance_spec_add_arg(s, "true");
  if (user)
    oakuk_instance_spec_set_registry_auth(s, user, pass);
  deploy(f, s);
  oakuk_instance_spec_unref(s);
  Event *e = wait_status(f, name, OAKUK_STATUS_FAILED, 60);
  g_assert_nonnull(e->detail);
  if (!strstr(e->detail, needle))
    g_error("%s: detail \"%s\" lacks \"%s\"", what, e->detail, needle);
  undeploy_and_check_gone(f, name);
}

static void test_missing_tag(Fx *f, gconstpointer data) {
  g_autofree char *img = g_strdup_printf("%s/test/busybox:nope", reg_open.addr);
  expect_failed(f, "missing", img, NULL, NULL, "manifest unknown");
  g_autofree char *img2 = g_strdup_printf("%s/test/nothing:1", reg_open.addr);
  expect_failed(f, "norepo", img2, NULL, NULL, "HTTP 404");
}

static void test_unreachable(Fx *f, gconstpointer data) {
  g_autofree char *img = g_strdup_printf("127.0.0.1:%u/test/busybox:1", free_port());
  expect_failed(f, "unreach", img, NULL, NULL, "unreachable");
}

static void test_auth(Fx *f, gconstpointer data) {
  g_autofree char *tree = make_rootfs("authroot", "amd64");
  oakuk_error *err = NULL;
  /* Pushing without credentials is refused; with them it works. */
  g_assert_cmpint(oakuk_container_build_rootfs_image(tree, reg_auth.addr, "test/private", "1", NULL, NULL,
                                                     NULL, NULL, &err),
                  ==, OAKUK_EPERM);
  g_assert_nonnull(strstr(oakuk_error_message(err), "authentication required"));
  oakuk_error_free(err);
  err = NULL;
  char *digest = NULL;
  int rc = oakuk_container_build_rootfs_image(tree, reg_auth.addr, "test/private", "1", USER, PASS, NULL,
                                              &digest, &err);
  if (rc)
    g_error("push with credentials: %s", oakuk_error_message(err));
  g_autofree char *img = g_strdup_printf("%s/test/private:1", reg_auth.addr);
  expect_failed(f, "noauth", img, NULL, NULL, "authentication required (HTTP 401) and no credentials given");
  expect_failed(f, "badauth", img, USER, "wrong", "credentials refused");
  char *pulled = NULL;
  rc = oakuk_container_pull(f->state, img, USER, PASS, NULL, &pulled, &err);
  if (rc)
    g_error("pull with credentials: %s", oakuk_error_message(err));
  g_assert_cmpstr(pulled, ==, digest);
  oakuk_free(pulled);
  oakuk_free(digest);
}

static void test_multi_arch(Fx *f, gconstpointer data) {
  g_autofree char *amd = make_rootfs("multi-amd64", "amd64");
  g_autofree char *arm = make_rootfs("multi-arm64", "arm64");
  GError *gerr = NULL;
  g_autoptr(OakukOciClient) c = oakuk_oci_client_new(reg_open.addr, NULL, NULL, NULL, &gerr);
  g_assert_no_error(gerr);
  gint64 amd_size = 0, arm_size = 0;
  g_autofree char *amd_d = oakuk_oci_build_and_push(c, amd, "test/multi", "amd64", "amd64", &amd_size, &gerr);
  g_assert_no_error(gerr);
  g_autofree char *arm_d = oakuk_oci_build_and_push(c, arm, "test/multi", "arm64", "arm64", &arm_size, &gerr);
  g_assert_no_error(gerr);
  /* Put the foreign platform first: the pick must be by platform, not by position. */
  g_autofree char *index = g_strdup_printf(
      "{\"schemaVersion\":2,\"mediaType\":\"" OAKUK_OCI_MEDIA_INDEX "\",\"manifests\":["
      "{\"mediaType\":\"" OAKUK_OCI_MEDIA_MANIFEST "\",\"digest\":\"%s\",\"size\":%" G_GINT64_FORMAT
      ",\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\",\"variant\":\"v8\"}},"
      "{\"mediaType\":\"" OAKUK_OCI_MEDIA_MANIFEST "\",\"digest\":\"%s\",\"size\":%" G_GINT64_FORMAT
      ",\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}}]}",
      arm_d, arm_size, amd_d, amd_size);
  g_autoptr(GBytes) ib = g_bytes_new(index, strlen(index));
  g_autofree char *index_d =
      oakuk_oci_client_push_manifest(c, "test/multi", "multi", OAKUK_OCI_MEDIA_INDEX, ib, &gerr);
  g_assert_no_error(gerr);

  g_autofree char *ref = g_strdup_printf("%s/test/multi:multi", reg_open.addr);
  char *digest = NULL;
  oakuk_error *err = NULL;
  int rc = oakuk_container_pull(f->state, ref, NULL, NULL, NULL, &digest, &err);
  if (rc)
    g_error("pull %s: %s", ref, oakuk_error_message(err));
  g_assert_cmpstr(oakuk_container_platform_arch(), ==, "amd64");
  g_assert_cmpstr(digest, ==, amd_d);
  g_autofree char *archf =
      g_build_filename(f->state, "images", "unpacked", digest + 7, "rootfs", "arch", NULL);
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents(archf, &text, NULL, NULL));
  g_assert_cmpstr(text, ==, "amd64");
  oakuk_free(digest);

  /* An index without this platform names what it has. */
  g_autofree char *only_arm = g_strdup_printf(
      "{\"schemaVersion\":2,\"mediaType\":\"" OAKUK_OCI_MEDIA_INDEX "\",\"manifests\":["
      "{\"mediaType\":\"" OAKUK_OCI_MEDIA_MANIFEST "\",\"digest\":\"%s\",\"size\":%" G_GINT64_FORMAT
      ",\"platform\":{\"architecture\":\"arm64\",\"os\":\"linux\"}}]}",
      arm_d, arm_size);
  g_autoptr(GBytes) ob = g_bytes_new(only_arm, strlen(only_arm));
  g_autofree char *od =
      oakuk_oci_client_push_manifest(c, "test/multi", "armonly", OAKUK_OCI_MEDIA_INDEX, ob, &gerr);
  g_assert_no_error(gerr);
  g_autofree char *ref2 = g_strdup_printf("%s/test/multi:armonly", reg_open.addr);
  g_assert_cmpint(oakuk_container_pull(f->state, ref2, NULL, NULL, NULL, NULL, &err), ==, OAKUK_EUNSUPPORTED);
  g_assert_nonnull(strstr(oakuk_error_message(err), "no manifest for this node's platform linux/amd64"));
  g_assert_nonnull(strstr(oakuk_error_message(err), "linux/arm64"));
  oakuk_error_free(err);
}

/* Replaces the registry's stored copy of a blob with other bytes. */
static void tamper_blob(Registry *r, const char *digest) {
  g_autofree char *path =
      g_strdup_printf("%s/data/docker/registry/v2/blobs/sha256/%.2s/%s/data", r->dir, digest + 7, digest + 7);
  g_autofree char *data = NULL;
  gsize n;
  g_assert_true(g_file_get_contents(path, &data, &n, NULL));
  data[n / 2] ^= 0x5a;
  g_assert_true(g_file_set_contents(path, data, (gssize)n, NULL));
}

static void test_tampered(Fx *f, gconstpointer data) {
  g_autofree char *tree = make_rootfs("tamper", "tampered");
  GError *gerr = NULL;
  g_autoptr(OakukOciClient) c = oakuk_oci_client_new(reg_open.addr, NULL, NULL, NULL, &gerr);
  g_autofree char *mdigest = oakuk_oci_build_and_push(c, tree, "test/tamper", "1", "amd64", NULL, &gerr);
  g_assert_no_error(gerr);
  char *mt = NULL, *d = NULL;
  g_autoptr(GBytes) mb = oakuk_oci_client_get_manifest(c, "test/tamper", "1", &mt, &d, &gerr);
  g_assert_no_error(gerr);
  g_autoptr(JsonParser) p = json_parser_new();
  g_assert_true(
      json_parser_load_from_data(p, g_bytes_get_data(mb, NULL), (gssize)g_bytes_get_size(mb), NULL));
  JsonObject *m = json_node_get_object(json_parser_get_root(p));
  const char *layer = json_object_get_string_member(
      json_array_get_object_element(json_object_get_array_member(m, "layers"), 0), "digest");
  tamper_blob(&reg_open, layer);
  g_free(mt);
  g_free(d);

  g_autofree char *img = g_strdup_printf("%s/test/tamper:1", reg_open.addr);
  expect_failed(f, "tamper", img, NULL, NULL, "digest mismatch");
  /* Nothing of the tampered layer is cached (config may be: it was intact). */
  g_autofree char *cached = g_build_filename(f->state, "images", "blobs", "sha256", layer + 7, NULL);
  g_assert_false(g_file_test(cached, G_FILE_TEST_EXISTS));
  g_autofree char *blobs = g_build_filename(f->state, "images", "blobs", "sha256", NULL);
  g_autoptr(GDir) dir = g_dir_open(blobs, 0, NULL);
  const char *e;
  while (dir && (e = g_dir_read_name(dir)))
    g_assert_false(g_str_has_prefix(e, ".tmp-"));
  g_autofree char *unpacked = g_build_filename(f->state, "images", "unpacked", mdigest + 7, NULL);
  g_assert_false(g_file_test(unpacked, G_FILE_TEST_EXISTS));
}

static void test_oci_archive(Fx *f, gconstpointer data) {
  /* An OCI layout made from blobs already pulled: index.json, oci-layout, blobs/sha256/<hex>. */
  char *digest = NULL;
  oakuk_error *err = NULL;
  g_assert_cmpint(oakuk_container_pull(f->state, busybox, NULL, NULL, NULL, &digest, &err), ==, 0);
  g_autofree char *layout = g_build_filename(work, "layout", NULL);
  g_autofree char *lblobs = g_build_filename(layout, "blobs", "sha256", NULL);
  g_assert_cmpint(g_mkdir_with_parents(lblobs, 0755), ==, 0);
  g_autofree char *src = g_build_filename(f->state, "images", "blobs", "sha256", NULL);
  g_autoptr(GDir) d = g_dir_open(src, 0, NULL);
  const char *e;
  while ((e = g_dir_read_name(d))) {
    g_autofree char *a = g_build_filename(src, e, NULL);
    g_autofree char *b = g_build_filename(lblobs, e, NULL);
    g_autofree char *content = NULL;
    gsize n;
    g_assert_true(g_file_get_contents(a, &content, &n, NULL));
    g_assert_true(g_file_set_contents(b, content, (gssize)n, NULL));
  }
  /* The manifest itself: fetch it again to store it under its digest. */
  GError *gerr = NULL;
  g_autoptr(OakukOciClient) c = oakuk_oci_client_new(reg_open.addr, NULL, NULL, NULL, &gerr);
  char *mt = NULL, *md = NULL;
  g_autoptr(GBytes) mb = oakuk_oci_client_get_manifest(c, "test/busybox", "1", &mt, &md, &gerr);
  g_assert_no_error(gerr);
  g_autofree char *mpath = g_build_filename(lblobs, md + 7, NULL);
  g_assert_true(g_file_set_contents(mpath, g_bytes_get_data(mb, NULL), (gssize)g_bytes_get_size(mb), NULL));
  g_autofree char *index = g_strdup_printf(
      "{\"schemaVersion\":2,\"manifests\":[{\"mediaType\":\"" OAKUK_OCI_MEDIA_MANIFEST
      "\",\"digest\":\"%s\",\"size\":%zu,\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"}}]}",
      md, g_bytes_get_size(mb));
  g_autofree char *ip = g_build_filename(layout, "index.json", NULL);
  g_assert_true(g_file_set_contents(ip, index, -1, NULL));
  g_autofree char *lp = g_build_filename(layout, "oci-layout", NULL);
  g_assert_true(g_file_set_contents(lp, "{\"imageLayoutVersion\":\"1.0.0\"}", -1, NULL));
  g_autofree char *tarball = g_build_filename(work, "busybox-oci.tar", NULL);
  g_autofree char *cmd = g_strdup_printf("tar -C %s -cf %s .", layout, tarball);
  g_assert_true(run(cmd));
  g_free(mt);

  /* By default no oci-archive:file:// is read: the deploy fails naming the option. */
  g_autofree char *ref = g_strdup_printf("oci-archive:file://%s", tarball);
  expect_failed(f, "archive-refused", ref, NULL, NULL, "file_allowed_dirs names no directory");
  /* A runtime whose file_allowed_dirs holds the tarball: everything comes from the archive. */
  oakuk_runtime_unref(f->rt);
  oakuk_container_options o = OAKUK_CONTAINER_OPTIONS_INIT;
  o.file_allowed_dirs = work;
  oakuk_error *oerr = NULL;
  f->rt = oakuk_container_runtime_new(f->state, &o, &oerr);
  if (!f->rt)
    g_error("runtime: %s", oakuk_error_message(oerr));
  oakuk_runtime_set_status_callback(f->rt, on_status, f);
  g_autofree char *name = iname("archive");
  oakuk_instance_spec *s = ctr_spec(name, ref);
  oakuk_instance_spec_set_one_shot(s, true);
  oakuk_instance_spec_add_arg(s, "cat");
  oakuk_instance_spec_add_arg(s, "/www/index.html");
  deploy(f, s);
  oakuk_instance_spec_unref(s);
  Event *ev = wait_status(f, name, OAKUK_STATUS_COMPLETED, 60);
  g_assert_nonnull(strstr(ev->detail, "hello from the oakuk busybox container"));
  g_assert_cmpstr(md, ==, digest);
  g_free(md);
  oakuk_free(digest);
  undeploy_and_check_gone(f, name);
}

/* The seccomp profile holds in a real container: unshare(CLONE_NEWUSER), which an unprivileged
 * process may otherwise call (and does succeed in a runc container without the profile), fails
 * with EPERM; the process runs in seccomp filter mode; ordinary work goes on. */
static void test_seccomp(Fx *f, gconstpointer data) {
  g_autofree char *name = iname("seccomp");
  oakuk_instance_spec *s = ctr_spec(name, busybox);
  oakuk_instance_spec_set_one_shot(s, true);
  oakuk_instance_spec_add_arg(s, "sh");
  oakuk_instance_spec_add_arg(s, "-c");
  oakuk_instance_spec_add_arg(s, "m=$(busybox unshare -U echo inside 2>&1); u=$?; "
                                 "s=$(busybox awk '/^Seccomp:/ {print $2}' /proc/self/status); "
                                 "w=$(echo ok | cat); echo \"result unshare=$u seccomp=$s pipe=$w [$m]\"");
  deploy(f, s);
  oakuk_instance_spec_unref(s);
  Event *e = wait_status(f, name, OAKUK_STATUS_COMPLETED, 60);
  g_test_message("%s", e->detail);
  g_assert_nonnull(strstr(e->detail, "result unshare=1 seccomp=2 pipe=ok"));
  g_assert_nonnull(strstr(e->detail, "Operation not permitted"));
  g_assert_null(strstr(e->detail, "[inside]"));
  g_autofree char *cfg = g_build_filename(f->state, "instances", name, "bundle", "config.json", NULL);
  g_autofree char *text = NULL;
  g_assert_true(g_file_get_contents(cfg, &text, NULL, NULL));
  const char *native = strcmp(oakuk_container_platform_arch(), "arm64") == 0 ? "\"SCMP_ARCH_AARCH64\""
                                                                             : "\"SCMP_ARCH_X86_64\"";
  g_assert_nonnull(strstr(text, native));
  undeploy_and_check_gone(f, name);
}

/* ---- bearer token auth: a fake registry front (SoupServer on its own thread) ---- */

#define BEARER_TOKEN "tok-7f3a9c"

typedef struct {
  GThread *thread;
  GMainContext *context;
  GMainLoop *loop;
  SoupServer *server;
  SoupSession *upstream;
  guint16 port;
  GMutex lock;
  GCond ready;
  gboolean started;
  /* counters, read after the pulls (the pulls are synchronous) */
  gint challenges, token_ok, token_refused, authorized;
  char *last_scope, *last_service;
} BearerFront;

static void front_challenge(BearerFront *b, SoupServerMessage *msg) {
  g_autofree char *hdr = g_strdup_printf("Bearer realm=\"http://127.0.0.1:%u/token\",service=\"test\","
                                         "scope=\"repository:oakuk/busybox:pull\"",
                                         b->port);
  soup_message_headers_replace(soup_server_message_get_response_headers(msg), "WWW-Authenticate", hdr);
  const char *body = "{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"authentication required\"}]}";
  soup_server_message_set_status(msg, 401, NULL);
  soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_COPY, body, strlen(body));
  g_atomic_int_inc(&b->challenges);
}

static void front_handler(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                          gpointer data) {
  BearerFront *b = data;
  SoupMessageHeaders *req = soup_server_message_get_request_headers(msg);
  const char *auth = soup_message_headers_get_one(req, "Authorization");
  if (strcmp(path, "/token") == 0) {
    g_autofree char *up = g_strdup_printf("%s:%s", USER, PASS);
    g_autofree char *b64 = g_base64_encode((const guchar *)up, strlen(up));
    g_autofree char *want = g_strconcat("Basic ", b64, NULL);
    g_free(b->last_scope);
    g_free(b->last_service);
    b->last_scope = g_strdup(query ? g_hash_table_lookup(query, "scope") : NULL);
    b->last_service = g_strdup(query ? g_hash_table_lookup(query, "service") : NULL);
    if (!auth || strcmp(auth, want) != 0) {
      g_atomic_int_inc(&b->token_refused);
      soup_server_message_set_status(msg, 401, NULL);
      return;
    }
    g_atomic_int_inc(&b->token_ok);
    const char *tok = "{\"token\":\"" BEARER_TOKEN "\",\"expires_in\":300}";
    soup_server_message_set_status(msg, 200, NULL);
    soup_server_message_set_response(msg, "application/json", SOUP_MEMORY_COPY, tok, strlen(tok));
    return;
  }
  if (!g_str_has_prefix(path, "/v2/oakuk/busybox/")) {
    soup_server_message_set_status(msg, 404, NULL);
    return;
  }
  if (!auth || strcmp(auth, "Bearer " BEARER_TOKEN) != 0) {
    front_challenge(b, msg);
    return;
  }
  g_atomic_int_inc(&b->authorized);
  /* Proxied to the open registry's test/busybox. */
  g_autofree char *url =
      g_strdup_printf("http://%s/v2/test/busybox/%s", reg_open.addr, path + strlen("/v2/oakuk/busybox/"));
  g_autoptr(SoupMessage) up = soup_message_new(soup_server_message_get_method(msg), url);
  const char *accept = soup_message_headers_get_one(req, "Accept");
  if (accept)
    soup_message_headers_replace(soup_message_get_request_headers(up), "Accept", accept);
  g_autoptr(GBytes) body = soup_session_send_and_read(b->upstream, up, NULL, NULL);
  soup_server_message_set_status(msg, body ? soup_message_get_status(up) : 502, NULL);
  if (!body)
    return;
  SoupMessageHeaders *uh = soup_message_get_response_headers(up);
  const char *keep[] = {"Docker-Content-Digest", NULL};
  for (const char *const *k = keep; *k; k++)
    if (soup_message_headers_get_one(uh, *k))
      soup_message_headers_replace(soup_server_message_get_response_headers(msg), *k,
                                   soup_message_headers_get_one(uh, *k));
  const char *ct = soup_message_headers_get_content_type(uh, NULL);
  soup_server_message_set_response(msg, ct ? ct : "application/octet-stream", SOUP_MEMORY_COPY,
                                   g_bytes_get_data(body, NULL), g_bytes_get_size(body));
}

static gpointer front_thread(gpointer data) {
  BearerFront *b = data;
  g_main_context_push_thread_default(b->context);
  b->server = soup_server_new(NULL, NULL);
  b->upstream = soup_session_new();
  soup_server_add_handler(b->server, NULL, front_handler, b, NULL);
  GError *err = NULL;
  gboolean ok = soup_server_listen_local(b->server, 0, SOUP_SERVER_LISTEN_IPV4_ONLY, &err);
  if (ok) {
    GSList *uris = soup_server_get_uris(b->server);
    b->port = (guint16)g_uri_get_port(uris->data);
    g_slist_free_full(uris, (GDestroyNotify)g_uri_unref);
  }
  g_mutex_lock(&b->lock);
  b->started = TRUE;
  g_cond_signal(&b->ready);
  g_mutex_unlock(&b->lock);
  if (ok)
    g_main_loop_run(b->loop);
  g_clear_error(&err);
  soup_server_disconnect(b->server);
  g_object_unref(b->server);
  g_object_unref(b->upstream);
  g_main_context_pop_thread_default(b->context);
  return NULL;
}

static void front_start(BearerFront *b) {
  g_mutex_init(&b->lock);
  g_cond_init(&b->ready);
  b->context = g_main_context_new();
  b->loop = g_main_loop_new(b->context, FALSE);
  b->thread = g_thread_new("bearer-front", front_thread, b);
  g_mutex_lock(&b->lock);
  while (!b->started)
    g_cond_wait(&b->ready, &b->lock);
  g_mutex_unlock(&b->lock);
  g_assert_cmpuint(b->port, >, 0);
}

static void front_stop(BearerFront *b) {
  g_main_loop_quit(b->loop);
  g_thread_join(b->thread);
  g_main_loop_unref(b->loop);
  g_main_context_unref(b->context);
  g_free(b->last_scope);
  g_free(b->last_service);
  g_mutex_clear(&b->lock);
  g_cond_clear(&b->ready);
}

static void test_bearer(Fx *f, gconstpointer data) {
  BearerFront b = {0};
  front_start(&b);
  g_autofree char *img = g_strdup_printf("127.0.0.1:%u/oakuk/busybox:1", b.port);
  oakuk_error *err = NULL;

  /* Without credentials: the token endpoint refuses, the pull says so and caches nothing. */
  int rc = oakuk_container_pull(f->state, img, NULL, NULL, NULL, NULL, &err);
  g_assert_cmpint(rc, ==, OAKUK_EPERM);
  g_test_message("anonymous: %s", oakuk_error_message(err));
  g_assert_nonnull(strstr(oakuk_error_message(err), "authentication refused by token endpoint"));
  g_assert_nonnull(strstr(oakuk_error_message(err), "no credentials given"));
  oakuk_error_free(err);
  err = NULL;
  g_assert_cmpint(g_atomic_int_get(&b.challenges), ==, 1);
  g_assert_cmpint(g_atomic_int_get(&b.token_refused), ==, 1);
  g_assert_cmpint(g_atomic_int_get(&b.authorized), ==, 0);

  /* A wrong password: refused as well. */
  rc = oakuk_container_pull(f->state, img, USER, "wrong", NULL, NULL, &err);
  g_assert_cmpint(rc, ==, OAKUK_EPERM);
  g_assert_nonnull(strstr(oakuk_error_message(err), "authentication refused by token endpoint"));
  oakuk_error_free(err);
  err = NULL;

  /* With credentials: Basic at /token, then every manifest and blob request carries the token. */
  char *digest = NULL;
  rc = oakuk_container_pull(f->state, img, USER, PASS, NULL, &digest, &err);
  if (rc)
    g_error("bearer pull: %s", oakuk_error_message(err));
  g_assert_cmpint(g_atomic_int_get(&b.token_ok), ==, 1);
  g_assert_cmpstr(b.last_service, ==, "test");
  g_assert_cmpstr(b.last_scope, ==, "repository:oakuk/busybox:pull");
  g_assert_cmpint(g_atomic_int_get(&b.authorized), >=, 3); /* manifest, config, layer */
  char *open_digest = NULL;
  g_assert_cmpint(oakuk_container_pull(f->state, busybox, NULL, NULL, NULL, &open_digest, &err), ==, 0);
  g_assert_cmpstr(digest, ==, open_digest);
  g_autofree char *bb =
      g_build_filename(f->state, "images", "unpacked", digest + 7, "rootfs", "bin", "busybox", NULL);
  g_assert_true(g_file_test(bb, G_FILE_TEST_IS_REGULAR));

  /* The cached resolution of a private image is not handed to someone without the credentials. */
  gint before = g_atomic_int_get(&b.challenges);
  g_assert_cmpint(oakuk_container_pull(f->state, img, NULL, NULL, NULL, NULL, &err), ==, OAKUK_EPERM);
  oakuk_error_free(err);
  err = NULL;
  g_assert_cmpint(g_atomic_int_get(&b.challenges), ==, before + 1);
  oakuk_free(digest);
  oakuk_free(open_digest);
  front_stop(&b);
}

/* A deploy of a cached image skips the registry: always for a digest reference, within
 * OAKUK_OCI_TAG_TTL_S for a tag; an unknown tag still goes to the registry. */
static void test_cached_resolution(Fx *f, gconstpointer data) {
  Registry r = reg_tmp;
  g_autofree char *tree = make_rootfs("cachedroot", "amd64");
  oakuk_error *err = NULL;
  char *pushed = NULL;
  if (oakuk_container_build_rootfs_image(tree, r.addr, "test/cached", "1", NULL, NULL, NULL, &pushed, &err))
    g_error("push: %s", oakuk_error_message(err));
  g_autofree char *by_tag = g_strdup_printf("%s/test/cached:1", r.addr);
  g_autofree char *by_digest = g_strdup_printf("%s/test/cached@%s", r.addr, pushed);
  g_autofree char *other_tag = g_strdup_printf("%s/test/cached:2", r.addr);
  g_assert_cmpint(oakuk_container_pull(f->state, by_tag, NULL, NULL, NULL, NULL, &err), ==, 0);
  g_assert_cmpint(oakuk_container_pull(f->state, by_digest, NULL, NULL, NULL, NULL, &err), ==, 0);
  registry_stop(&reg_tmp);

  g_autofree char *tag_name = iname("cached-tag");
  g_autofree char *digest_name = iname("cached-digest");
  const char *refs[] = {by_tag, by_digest};
  const char *names[] = {tag_name, digest_name};
  for (int k = 0; k < 2; k++) {
    oakuk_instance_spec *s = ctr_spec(names[k], refs[k]);
    oakuk_instance_spec_set_one_shot(s, true);
    oakuk_instance_spec_add_arg(s, "cat");
    oakuk_instance_spec_add_arg(s, "/arch");
    deploy(f, s);
    oakuk_instance_spec_unref(s);
    Event *e = wait_status(f, names[k], OAKUK_STATUS_COMPLETED, 60);
    g_assert_nonnull(strstr(e->detail, "amd64"));
    undeploy_and_check_gone(f, names[k]);
  }
  g_assert_cmpint(oakuk_container_pull(f->state, other_tag, NULL, NULL, NULL, NULL, &err), ==, OAKUK_EIO);
  g_assert_nonnull(strstr(oakuk_error_message(err), "unreachable"));
  oakuk_error_free(err);
  oakuk_free(pushed);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  if (getuid() != 0) {
    g_test_skip("needs root (runc, cgroups, netns)");
    return g_test_run();
  }
  if (!g_file_test("/usr/bin/docker-registry", G_FILE_TEST_IS_EXECUTABLE) ||
      !g_file_test("/bin/busybox", G_FILE_TEST_IS_EXECUTABLE)) {
    g_test_skip("needs docker-registry and busybox-static");
    return g_test_run();
  }
  work = g_dir_make_tmp("oakuk-itest-ctr-XXXXXX", NULL);
  registry_start(&reg_open, FALSE);
  registry_start(&reg_auth, TRUE);
  registry_start(&reg_tmp, FALSE);
  start_reaper();
  g_autofree char *tree = make_rootfs("busybox", "amd64");
  oakuk_error *err = NULL;
  if (oakuk_container_build_rootfs_image(tree, reg_open.addr, "test/busybox", "1", NULL, NULL, NULL, NULL,
                                         &err))
    g_error("push busybox: %s", oakuk_error_message(err));
  busybox = g_strdup_printf("%s/test/busybox:1", reg_open.addr);

#define ADD(path, fn) g_test_add(path, Fx, NULL, fx_setup, fn, fx_teardown)
  ADD("/container/run/httpd-in-netns", test_httpd_in_netns);
  ADD("/container/run/one-shot", test_one_shot);
  ADD("/container/run/stop-and-adopt", test_stop_and_adopt);
  ADD("/container/run/seccomp", test_seccomp);
  ADD("/container/pull/missing-tag", test_missing_tag);
  ADD("/container/pull/unreachable", test_unreachable);
  ADD("/container/pull/auth", test_auth);
  ADD("/container/pull/multi-arch", test_multi_arch);
  ADD("/container/pull/tampered-blob", test_tampered);
  ADD("/container/pull/oci-archive", test_oci_archive);
  ADD("/container/pull/bearer-token", test_bearer);
  ADD("/container/pull/cached-resolution", test_cached_resolution);
  return g_test_run();
}

/* unikernel-deploy: what the orchestration adds to starting a unikernel, up to the moment it serves.
 * The two test guests under TCG, N times each, interleaved:
 *   the Linux test guest (cached image; HTTP on 8080):
 *     ours      — net instance setup (netns, veth, tap, mirred) + oakuk_runtime_deploy, timed to
 *                 RUNNING (QMP handshake done), to ready (the runtime's own TCP probe of port 8080)
 *                 and to the first HTTP 200 from the guest (this program's probe);
 *     reference — the very QEMU command oakuk_qemu_build_argv produces, spawned directly (setns into
 *                 an already prepared netns, no cgroup, no QMP client), timed to the first HTTP 200;
 *   the multiboot test kernel (Unikraft's x86 format; "ukguest: staying up" on its console):
 *     ours      — the same, timed to ready (the runtime's console probe for that line);
 *     reference — its QEMU command spawned directly, timed to the line in its serial log.
 * Everything happens inside a scratch "host" namespace, so the machine's own network is untouched.
 * Needs root. Prints medians:
 *   unikernel-deploy to-running: ours X ms
 *   unikernel-deploy to-http: ours X ms, reference Y ms, ratio Z
 *   unikernel-deploy to-ready linux-guest: ours X ms, reference Y ms, ratio Z
 *   unikernel-deploy to-ready multiboot-guest: ours X ms, reference Y ms, ratio Z */
#include <oakuk/oakuk.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define RUNS 5 /* default */
#define BOOT_TIMEOUT_S 120
#define SUBNET "10.18.254.0/24"
#define UK_READY_LINE "ukguest: staying up"

static char host_ns[64], host_ns_path[128];

static void die(const char *fmt, ...) G_GNUC_PRINTF(1, 2) G_GNUC_NORETURN;

static gboolean cmd(const char *const *argv) {
  int status = 0;
  g_autofree char *err = NULL;
  if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL,
                    NULL, &err, &status, NULL) ||
      !g_spawn_check_wait_status(status, NULL)) {
    fprintf(stderr, "unikernel-deploy: %s: %s", argv[0], err ? err : "failed\n");
    return FALSE;
  }
  return TRUE;
}

static void host_ns_remove(void) {
  if (host_ns[0]) {
    const char *del[] = {"ip", "netns", "del", host_ns, NULL};
    cmd(del);
    host_ns[0] = '\0';
  }
}

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "unikernel-deploy: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(1);
}

/* ---- HTTP probe: a thread in the host namespace polls GET / until it answers 200 ---- */

typedef struct {
  char ip[64];
  gint64 t0_us, done_us; /* done_us: when the first 200 arrived, -1 on timeout */
  gint finished;         /* atomic: done_us is set */
  GThread *thread;
} Probe;

static gboolean http_200(const char *ip) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0)
    return FALSE;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(8080)};
  inet_pton(AF_INET, ip, &sa.sin_addr);
  gboolean ok = FALSE;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 || errno == EINPROGRESS) {
    struct pollfd p = {fd, POLLOUT, 0};
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (poll(&p, 1, 200) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr == 0) {
      static const char req[] = "GET /cgi-bin/index.cgi HTTP/1.0\r\n\r\n";
      char buf[64] = "";
      p.events = POLLIN;
      if (write(fd, req, sizeof req - 1) == (ssize_t)sizeof req - 1 && poll(&p, 1, 3000) == 1 &&
          read(fd, buf, sizeof buf - 1) > 12)
        ok = strncmp(buf, "HTTP/1.0 200", 12) == 0 || strncmp(buf, "HTTP/1.1 200", 12) == 0;
    }
  }
  close(fd);
  return ok;
}

static gpointer probe_main(gpointer data) {
  Probe *p = data;
  int ns = open(host_ns_path, O_RDONLY | O_CLOEXEC);
  if (ns < 0 || setns(ns, CLONE_NEWNET) != 0)
    die("setns %s: %s", host_ns_path, g_strerror(errno));
  close(ns);
  gint64 end = p->t0_us + (gint64)BOOT_TIMEOUT_S * G_USEC_PER_SEC;
  while (g_get_monotonic_time() < end) {
    if (http_200(p->ip)) {
      p->done_us = g_get_monotonic_time();
      g_atomic_int_set(&p->finished, 1);
      return NULL;
    }
    g_usleep(20000);
  }
  p->done_us = -1;
  g_atomic_int_set(&p->finished, 1);
  return NULL;
}

static void probe_start(Probe *p, const char *ip, gint64 t0) {
  g_strlcpy(p->ip, ip, sizeof p->ip);
  p->t0_us = t0;
  p->done_us = 0;
  p->finished = 0;
  p->thread = g_thread_new("probe", probe_main, p);
}

static double probe_finish(Probe *p) {
  g_thread_join(p->thread);
  if (p->done_us < 0)
    die("guest at %s never answered HTTP within %d s", p->ip, BOOT_TIMEOUT_S);
  return (double)(p->done_us - p->t0_us) / 1000.0;
}

/* ---- shared state ---- */

typedef struct {
  char *state;
  oakuk_net *net;
  oakuk_image *image;
  oakuk_runtime *rt;
  const char *qemu;
  char *ukkernel; /* the multiboot test kernel, or NULL when not built */
  /* last statuses from the runtime */
  char *want;
  int32_t last_status;
  gint64 running_us, ready_us;
  char *detail;
} Bench;

static void on_ready(const char *instance, int64_t ready_ms, void *data) {
  Bench *b = data;
  if (b->want && strcmp(instance, b->want) == 0)
    b->ready_us = g_get_monotonic_time();
}

static void on_status(const char *instance, int32_t status, const char *detail, void *data) {
  Bench *b = data;
  if (!b->want || strcmp(instance, b->want) != 0)
    return;
  b->last_status = status;
  if (status == OAKUK_STATUS_RUNNING)
    b->running_us = g_get_monotonic_time();
  if (status == OAKUK_STATUS_FAILED || status == OAKUK_STATUS_DEAD) {
    g_free(b->detail);
    b->detail = g_strdup(detail);
  }
}

/* uk: the multiboot test kernel (ready by its console) instead of the Linux guest (ready on 8080). */
static oakuk_instance_spec *spec_for(Bench *b, const char *name, oakuk_net_instance_info *n, gboolean uk) {
  oakuk_instance_spec *s = oakuk_instance_spec_new(name);
  oakuk_instance_spec_set_arch(s, "amd64");
  oakuk_instance_spec_set_accel(s, OAKUK_ACCEL_TCG);
  oakuk_instance_spec_set_memory_mb(s, 128);
  oakuk_instance_spec_set_network(
      s, oakuk_net_instance_info_netns_path(n), oakuk_net_instance_info_tap(n),
      oakuk_net_instance_info_guest_ip(n), (int32_t)oakuk_net_instance_info_guest_prefix(n),
      oakuk_net_instance_info_guest_gateway(n), oakuk_net_instance_info_guest_mac(n));
  if (uk) {
    oakuk_instance_spec_set_kernel(s, b->ukkernel);
    oakuk_instance_spec_set_readiness_serial(s, UK_READY_LINE);
    oakuk_instance_spec_add_arg(s, "stay");
    return s;
  }
  oakuk_instance_spec_set_kernel(s, oakuk_image_kernel(b->image));
  oakuk_instance_spec_set_initrd(s, oakuk_image_initrd(b->image));
  oakuk_instance_spec_set_flavor(s, oakuk_image_flavor(b->image));
  oakuk_instance_spec_set_cmdline_extra(s, oakuk_image_cmdline_extra(b->image));
  oakuk_instance_spec_set_readiness_tcp(s, NULL, 8080);
  oakuk_instance_spec_add_arg(s, "bench");
  return s;
}

static oakuk_net_instance_info *net_instance(Bench *b, const char *name) {
  oakuk_error *err = NULL;
  oakuk_net_instance_info *n = NULL;
  if (oakuk_net_instance_setup(b->net, name, NULL, OAKUK_NET_UK_DIRECT, &n, &err) != 0)
    die("net instance %s: %s", name, oakuk_error_message(err));
  return n;
}

static void net_instance_remove(Bench *b, const char *name) {
  oakuk_error *err = NULL;
  if (oakuk_net_instance_teardown(b->net, name, &err) != 0)
    die("net teardown %s: %s", name, oakuk_error_message(err));
}

static void iterate_until(Bench *b, int32_t status, Probe *p, gboolean ready) {
  gint64 end = g_get_monotonic_time() + (gint64)BOOT_TIMEOUT_S * G_USEC_PER_SEC;
  while ((b->last_status != status || (p && !g_atomic_int_get(&p->finished)) || (ready && !b->ready_us)) &&
         g_get_monotonic_time() < end) {
    if (b->last_status == OAKUK_STATUS_FAILED || b->last_status == OAKUK_STATUS_DEAD)
      die("%s: %s", b->want, b->detail ? b->detail : "failed");
    g_main_context_iteration(NULL, FALSE);
    g_usleep(2000);
  }
  if (b->last_status != status || (ready && !b->ready_us))
    die("%s: no %s within %d s", b->want, ready ? "ready" : oakuk_instance_status_name(status),
        BOOT_TIMEOUT_S);
}

/* ours: net setup + deploy; ms to RUNNING, to ready and (Linux guest) to HTTP 200. */
static void run_ours(Bench *b, int k, gboolean uk, double *to_running, double *to_ready, double *to_http) {
  g_autofree char *name = g_strdup_printf("ukb%d-ours-%s%d", (int)getpid(), uk ? "mb" : "", k);
  g_free(b->want);
  b->want = g_strdup(name);
  b->last_status = -1;
  b->ready_us = 0;
  gint64 t0 = g_get_monotonic_time();
  oakuk_net_instance_info *n = net_instance(b, name);
  oakuk_instance_spec *s = spec_for(b, name, n, uk);
  Probe p;
  if (!uk)
    probe_start(&p, oakuk_net_instance_info_guest_ip(n), t0);
  oakuk_error *err = NULL;
  if (oakuk_runtime_deploy(b->rt, s, &err) != 0)
    die("deploy %s: %s", name, oakuk_error_message(err));
  oakuk_instance_spec_unref(s);
  iterate_until(b, OAKUK_STATUS_RUNNING, uk ? NULL : &p, TRUE);
  *to_running = (double)(b->running_us - t0) / 1000.0;
  *to_ready = (double)(b->ready_us - t0) / 1000.0;
  if (!uk)
    *to_http = probe_finish(&p);
  if (oakuk_runtime_undeploy(b->rt, name, &err) != 0)
    die("undeploy %s: %s", name, oakuk_error_message(err));
  iterate_until(b, OAKUK_STATUS_UNDEPLOYED, NULL, FALSE);
  net_instance_remove(b, name);
  oakuk_net_instance_info_unref(n);
}

/* Polls the serial log of a QEMU started by hand for the ready line; ms from t0, -1 on timeout. */
static double wait_serial(const char *path, gint64 t0) {
  gint64 end = t0 + (gint64)BOOT_TIMEOUT_S * G_USEC_PER_SEC;
  while (g_get_monotonic_time() < end) {
    g_autofree char *text = NULL;
    gsize len = 0;
    if (g_file_get_contents(path, &text, &len, NULL) &&
        memmem(text, len, UK_READY_LINE, strlen(UK_READY_LINE)))
      return (double)(g_get_monotonic_time() - t0) / 1000.0;
    g_usleep(5000);
  }
  return -1;
}

static void enter_netns(gpointer data) {
  int fd = GPOINTER_TO_INT(data);
  if (setns(fd, CLONE_NEWNET) != 0)
    _exit(127);
}

/* reference: the same argv spawned directly in a prepared netns; ms to HTTP 200 (Linux guest) or to
 * the ready line in the serial log (multiboot guest). */
static double run_reference(Bench *b, int k, gboolean uk) {
  g_autofree char *name = g_strdup_printf("ukb%d-ref-%s%d", (int)getpid(), uk ? "mb" : "", k);
  oakuk_net_instance_info *n = net_instance(b, name);
  oakuk_instance_spec *s = spec_for(b, name, n, uk);
  g_autofree char *dir = g_build_filename(b->state, "reference", name, NULL);
  if (g_mkdir_with_parents(dir, 0700) != 0)
    die("create %s: %s", dir, g_strerror(errno));
  char **argv = NULL;
  oakuk_error *err = NULL;
  if (oakuk_qemu_build_argv(&argv, NULL, s, dir, b->qemu, &err) != 0)
    die("build argv: %s", oakuk_error_message(err));
  int nsfd = open(oakuk_net_instance_info_netns_path(n), O_RDONLY | O_CLOEXEC);
  if (nsfd < 0)
    die("open %s: %s", oakuk_net_instance_info_netns_path(n), g_strerror(errno));
  Probe p;
  GPid pid = 0;
  GError *gerr = NULL;
  g_autofree char *serial = g_build_filename(dir, "serial.log", NULL);
  gint64 t0 = g_get_monotonic_time();
  if (!uk)
    probe_start(&p, oakuk_net_instance_info_guest_ip(n), t0);
  if (!g_spawn_async(NULL, argv, NULL,
                     G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDIN_FROM_DEV_NULL,
                     enter_netns, GINT_TO_POINTER(nsfd), &pid, &gerr))
    die("spawn %s: %s", argv[0], gerr->message);
  double ms = uk ? wait_serial(serial, t0) : probe_finish(&p);
  if (ms < 0)
    die("%s: no \"%s\" in %s within %d s", name, UK_READY_LINE, serial, BOOT_TIMEOUT_S);
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  close(nsfd);
  oakuk_qemu_argv_free(argv);
  oakuk_instance_spec_unref(s);
  g_autofree char *qmp = g_build_filename(dir, "qmp.sock", NULL);
  g_unlink(serial);
  g_unlink(qmp);
  g_rmdir(dir);
  net_instance_remove(b, name);
  oakuk_net_instance_info_unref(n);
  return ms;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
  /* Optional: the number of runs (bench/e2e-deploy asks for as many as it makes itself). */
  int runs = argc > 1 ? atoi(argv[1]) : RUNS;
  if (runs < 1 || runs > 100)
    die("runs: %s is not 1..100", argv[1]);
  if (getuid() != 0)
    die("needs root (netns, tap, cgroups)");
  const char *gd = g_getenv("OAKUK_GUESTS_DIR") ? g_getenv("OAKUK_GUESTS_DIR") : GUESTS_DIR;
  g_autofree char *tarball = g_build_filename(gd, "guest-amd64.tar.gz", NULL);
  if (!g_file_test(tarball, G_FILE_TEST_EXISTS))
    die("%s missing: build the test guests first (ninja tests/guests/guest-amd64.tar.gz, as root)", tarball);
  Bench b = {0};
  b.state = g_dir_make_tmp("oakuk-bench-ukdeploy-XXXXXX", NULL);
  oakuk_error *err = NULL;

  /* The whole bench lives in a scratch "host" namespace: the node network, the runtime (whose
   * readiness probes connect from its own namespace) and the probes. The machine's own network is
   * never touched, and no probe can leave it. */
  g_snprintf(host_ns, sizeof host_ns, "ukbench-%d", (int)getpid());
  g_snprintf(host_ns_path, sizeof host_ns_path, "/run/netns/%s", host_ns);
  const char *add[] = {"ip", "netns", "add", host_ns, NULL};
  const char *lo[] = {"ip", "-n", host_ns, "link", "set", "lo", "up", NULL};
  if (!cmd(add) || !cmd(lo)) {
    host_ns_remove();
    die("cannot create the scratch host namespace %s", host_ns);
  }
  atexit(host_ns_remove);
  int hostfd = open(host_ns_path, O_RDONLY | O_CLOEXEC);
  if (hostfd < 0 || setns(hostfd, CLONE_NEWNET) != 0)
    die("enter %s: %s", host_ns_path, g_strerror(errno));
  close(hostfd);

  /* Same cached image for every run. */
  g_autofree char *cache_dir = g_build_filename(b.state, "images", NULL);
  /* file:// only from the tarball's own directory (the cache refuses every file:// URL by default). */
  g_autofree char *tarball_dir = g_path_get_dirname(tarball);
  oakuk_image_cache_options copts = OAKUK_IMAGE_CACHE_OPTIONS_INIT;
  copts.file_allowed_dirs = tarball_dir;
  oakuk_image_cache *cache = oakuk_image_cache_new(cache_dir, &copts, &err);
  g_autofree char *url = g_filename_to_uri(tarball, NULL, NULL);
  if (!cache || !(b.image = oakuk_image_cache_fetch_sync(cache, url, NULL, NULL, NULL, &err)))
    die("image %s: %s", tarball, oakuk_error_message(err));

  oakuk_net_options no;
  oakuk_net_options_init(&no, OAKUK_NET_OPTIONS_VERSION);
  no.node_subnet = SUBNET;
  no.netns_path = host_ns_path;
  if (!(b.net = oakuk_net_new(&no, &err)) || oakuk_net_setup_node(b.net, &err) != 0)
    die("node network in %s: %s", host_ns, oakuk_error_message(err));
  /* The probe's first SYNs find no guest yet and the neighbour entry fails; ARP would retry only
   * every second, rounding both measurements up to whole seconds. Retry every 50 ms instead (in
   * the scratch namespace only). */
  const char *arp[] = {"ip",        "-n",  host_ns,  "ntable",  "change", "name",
                       "arp_cache", "dev", "oakuk0", "retrans", "50",     NULL};
  if (!cmd(arp))
    die("cannot shorten the ARP retry time in %s", host_ns);

  oakuk_qemu_options qo = OAKUK_QEMU_OPTIONS_INIT;
  qo.allow_emulation = true;
  oakuk_qemu_caps *caps = NULL;
  if (oakuk_qemu_probe(&caps, &qo, &err) != 0 || !oakuk_qemu_caps_qemu_path(caps, "amd64"))
    die("no qemu-system-x86_64: %s", err ? oakuk_error_message(err) : "not found");
  b.qemu = oakuk_qemu_caps_qemu_path(caps, "amd64");
  if (!(b.rt = oakuk_qemu_runtime_new(b.state, &qo, &err)))
    die("runtime: %s", oakuk_error_message(err));
  oakuk_runtime_set_status_callback(b.rt, on_status, &b);
  oakuk_runtime_set_ready_callback(b.rt, on_ready, &b);
  g_autofree char *uk = g_build_filename(gd, "ukguest-0.16.3.kernel", NULL);
  b.ukkernel = g_file_test(uk, G_FILE_TEST_EXISTS) ? g_strdup(uk) : NULL;

  g_autofree double *running = g_new(double, runs), *ours = g_new(double, runs), *ref = g_new(double, runs),
                    *ready = g_new(double, runs), *ukready = g_new(double, runs),
                    *ukref = g_new(double, runs);
  for (int k = 0; k < runs; k++) {
    run_ours(&b, k, FALSE, &running[k], &ready[k], &ours[k]);
    ref[k] = run_reference(&b, k, FALSE);
    fprintf(stderr, "run %d: ours running %.0f ms, ready %.0f ms, http %.0f ms; reference http %.0f ms\n",
            k + 1, running[k], ready[k], ours[k], ref[k]);
    if (b.ukkernel) {
      double unused;
      run_ours(&b, k, TRUE, &unused, &ukready[k], &unused);
      ukref[k] = run_reference(&b, k, TRUE);
      fprintf(stderr, "run %d: multiboot guest: ours ready %.0f ms; reference %.0f ms\n", k + 1, ukready[k],
              ukref[k]);
    }
  }
  double mr = median(running, runs), mo = median(ours, runs), mf = median(ref, runs),
         md = median(ready, runs);
  printf("unikernel-deploy to-running: ours %.0f ms\n", mr);
  printf("unikernel-deploy to-http: ours %.0f ms, reference %.0f ms, ratio %.3f\n", mo, mf, mo / mf);
  printf("unikernel-deploy to-ready linux-guest: ours %.0f ms, reference %.0f ms, ratio %.3f\n", md, mf,
         md / mf);
  if (b.ukkernel) {
    double mu = median(ukready, runs), mur = median(ukref, runs);
    printf("unikernel-deploy to-ready multiboot-guest: ours %.0f ms, reference %.0f ms, ratio %.3f\n", mu,
           mur, mu / mur);
  } else {
    printf("unikernel-deploy to-ready multiboot-guest: not measured (%s missing)\n", uk);
  }

  oakuk_runtime_unref(b.rt);
  if (oakuk_net_teardown_node(b.net, &err) != 0)
    fprintf(stderr, "unikernel-deploy: node teardown: %s\n", oakuk_error_message(err));
  oakuk_net_unref(b.net);
  oakuk_qemu_caps_unref(caps);
  oakuk_image_unref(b.image);
  oakuk_image_cache_unref(cache);
  host_ns_remove();
  const char *rm[] = {"rm", "-rf", b.state, NULL};
  cmd(rm);
  g_free(b.state);
  g_free(b.want);
  g_free(b.detail);
  g_free(b.ukkernel);
  return 0;
}

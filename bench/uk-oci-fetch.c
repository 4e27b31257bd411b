/* uk-oci-fetch: what pulling a unikernel as an OCI image costs against its Oakestra tarball over HTTP
 * (#11). The same amd64 test guest (kernel, initrd, files/) both ways:
 *   ours      — an OCI index in KraftKit's layout (made here with oakuk_oci_package_* from the
 *               tarball's contents) in a local docker-registry on loopback, fetched with
 *               oakuk_image_cache_fetch_oci_sync(reference, "amd64"): tag resolution, index,
 *               manifest, config, layers (digests checked), unpacked into the image cache;
 *   reference — guest-amd64.tar.gz served by python3's http.server on loopback, fetched with
 *               oakuk_image_cache_fetch_sync(url): download, unpack.
 * Cold: a new, empty cache each run. Warm: the same cache again (the tag resolved anew, the
 * tarball revalidated with If-Modified-Since). From the fetch on, deploying either image is the same
 * runtime path (bench/unikernel-deploy measures it). Needs /usr/bin/docker-registry and python3.
 * Prints medians:
 *   uk-oci-fetch cold: ours X ms, reference Y ms, ratio Z
 *   uk-oci-fetch warm: ours X ms, reference Y ms, ratio Z */
#include <oakuk/oakuk.h>

#include <gio/gio.h>
#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define RUNS 5

static char *work;
static GPid children[2];

static void cleanup(void) {
  for (size_t i = 0; i < G_N_ELEMENTS(children); i++)
    if (children[i] > 0) {
      kill(children[i], SIGTERM);
      waitpid(children[i], NULL, 0);
      children[i] = 0;
    }
  if (work) {
    const char *argv[] = {"rm", "-rf", work, NULL};
    g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL, NULL);
  }
}

static void die(const char *fmt, ...) G_GNUC_PRINTF(1, 2) G_GNUC_NORETURN;
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "uk-oci-fetch: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  cleanup();
  exit(1);
}

static guint16 free_port(void) {
  g_autoptr(GSocket) s =
      g_socket_new(G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, NULL);
  g_autoptr(GInetAddress) lo = g_inet_address_new_loopback(G_SOCKET_FAMILY_IPV4);
  g_autoptr(GSocketAddress) a = g_inet_socket_address_new(lo, 0);
  if (!s || !g_socket_bind(s, a, FALSE, NULL))
    die("no free port");
  g_autoptr(GSocketAddress) got = g_socket_get_local_address(s, NULL);
  return g_inet_socket_address_get_port(G_INET_SOCKET_ADDRESS(got));
}

static gboolean answers(guint16 port) {
  g_autoptr(GSocketClient) c = g_socket_client_new();
  g_autoptr(GSocketConnection) conn = g_socket_client_connect_to_host(c, "127.0.0.1", port, NULL, NULL);
  return conn != NULL;
}

static void spawn_server(int slot, const char *const *argv, guint16 port) {
  g_autoptr(GError) err = NULL;
  if (!g_spawn_async(NULL, (char **)argv, NULL,
                     G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                     NULL, NULL, &children[slot], &err))
    die("%s: %s", argv[0], err->message);
  for (int k = 0; k < 100 && !answers(port); k++)
    g_usleep(100000);
  if (!answers(port))
    die("%s did not start", argv[0]);
}

static oakuk_image_cache *new_cache(const char *name, const char *allowed) {
  g_autofree char *dir = g_build_filename(work, name, NULL);
  oakuk_image_cache_options o;
  oakuk_image_cache_options_init(&o, OAKUK_IMAGE_CACHE_OPTIONS_VERSION);
  o.file_allowed_dirs = allowed;
  oakuk_error *err = NULL;
  oakuk_image_cache *c = oakuk_image_cache_new(dir, &o, &err);
  if (!c)
    die("cache %s: %s", dir, oakuk_error_message(err));
  return c;
}

/* Milliseconds one fetch took (the image released at once). */
static double fetch_ms(oakuk_image_cache *c, const char *source, gboolean oci) {
  oakuk_error *err = NULL;
  gint64 t0 = g_get_monotonic_time();
  oakuk_image *img = oci ? oakuk_image_cache_fetch_oci_sync(c, source, "amd64", NULL, NULL, NULL, NULL, &err)
                         : oakuk_image_cache_fetch_sync(c, source, NULL, NULL, NULL, &err);
  double ms = (double)(g_get_monotonic_time() - t0) / 1000.0;
  if (!img)
    die("fetch %s: %s", source, oakuk_error_message(err));
  oakuk_image_unref(img);
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
  int runs = argc > 1 ? atoi(argv[1]) : RUNS;
  if (runs < 1)
    runs = RUNS;
  const char *guests = g_getenv("OAKUK_GUESTS_DIR") ? g_getenv("OAKUK_GUESTS_DIR") : GUESTS_DIR;
  g_autofree char *tarball = g_build_filename(guests, "guest-amd64.tar.gz", NULL);
  if (!g_file_test(tarball, G_FILE_TEST_IS_REGULAR) ||
      !g_file_test("/usr/bin/docker-registry", G_FILE_TEST_IS_EXECUTABLE)) {
    printf("uk-oci-fetch: skipped (needs %s and /usr/bin/docker-registry)\n", tarball);
    return 77;
  }
  work = g_dir_make_tmp("oakuk-bench-ukoci-XXXXXX", NULL);
  if (!work)
    die("no scratch directory");

  /* the registry and the file server */
  guint16 reg_port = free_port(), http_port = free_port();
  g_autofree char *cfg = g_build_filename(work, "registry.yml", NULL);
  g_autofree char *yml = g_strdup_printf("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                                         "    rootdirectory: %s/registry\nhttp:\n  addr: 127.0.0.1:%u\n",
                                         work, reg_port);
  if (!g_file_set_contents(cfg, yml, -1, NULL))
    die("write %s", cfg);
  const char *reg_argv[] = {"/usr/bin/docker-registry", "serve", cfg, NULL};
  spawn_server(0, reg_argv, reg_port);
  g_autofree char *port_text = g_strdup_printf("%u", http_port);
  const char *http_argv[] = {"python3",     "-m",   "http.server", "--bind", "127.0.0.1",
                             "--directory", guests, port_text,     NULL};
  /* g_spawn_async needs a path for python3: search it */
  g_autofree char *python = g_find_program_in_path("python3");
  if (!python)
    die("python3 not found");
  http_argv[0] = python;
  spawn_server(1, http_argv, http_port);

  /* the OCI image: the tarball's own contents, packed and pushed */
  oakuk_image_cache *scratch = new_cache("scratch", guests);
  g_autofree char *file_url = g_filename_to_uri(tarball, NULL, NULL);
  oakuk_error *err = NULL;
  oakuk_image *src = oakuk_image_cache_fetch_sync(scratch, file_url, NULL, NULL, NULL, &err);
  if (!src)
    die("unpack %s: %s", tarball, oakuk_error_message(err));
  oakuk_oci_package *pkg = oakuk_oci_package_new();
  if (oakuk_oci_package_add_kernel(pkg, "amd64", oakuk_image_kernel(src), oakuk_image_initrd(src), &err) !=
          0 ||
      (oakuk_image_files_dir(src) &&
       oakuk_oci_package_set_files_dir(pkg, oakuk_image_files_dir(src), &err) != 0) ||
      (oakuk_image_cmdline_extra(src) &&
       oakuk_oci_package_set_cmdline_extra(pkg, oakuk_image_cmdline_extra(src), &err) != 0))
    die("package: %s", oakuk_error_message(err));
  g_autofree char *ref = g_strdup_printf("127.0.0.1:%u/bench/guest:1", reg_port);
  if (oakuk_oci_package_push(NULL, pkg, ref, NULL, NULL, NULL, &err) != 0)
    die("push %s: %s", ref, oakuk_error_message(err));
  oakuk_oci_package_unref(pkg);
  oakuk_image_unref(src);
  oakuk_image_cache_unref(scratch);
  g_autofree char *url = g_strdup_printf("http://127.0.0.1:%u/guest-amd64.tar.gz", http_port);

  double *oci_cold = g_new0(double, runs), *tar_cold = g_new0(double, runs);
  double *oci_warm = g_new0(double, runs), *tar_warm = g_new0(double, runs);
  for (int k = 0; k < runs; k++) {
    /* interleaved, each in its own new cache */
    g_autofree char *on = g_strdup_printf("oci-%d", k), *tn = g_strdup_printf("tar-%d", k);
    oakuk_image_cache *oc = new_cache(on, NULL), *tc = new_cache(tn, NULL);
    oci_cold[k] = fetch_ms(oc, ref, TRUE);
    tar_cold[k] = fetch_ms(tc, url, FALSE);
    oci_warm[k] = fetch_ms(oc, ref, TRUE);
    tar_warm[k] = fetch_ms(tc, url, FALSE);
    oakuk_image_cache_unref(oc);
    oakuk_image_cache_unref(tc);
  }
  double oc = median(oci_cold, runs), tc = median(tar_cold, runs);
  double ow = median(oci_warm, runs), tw = median(tar_warm, runs);
  printf("uk-oci-fetch cold: ours %.1f ms, reference %.1f ms, ratio %.2f\n", oc, tc, oc / tc);
  printf("uk-oci-fetch warm: ours %.1f ms, reference %.1f ms, ratio %.2f\n", ow, tw, ow / tw);
  g_free(oci_cold);
  g_free(tar_cold);
  g_free(oci_warm);
  g_free(tar_warm);
  cleanup();
  g_free(work);
  return 0;
}

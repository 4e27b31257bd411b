/* Integration tests of unikernels as OCI images against a real registry (Debian's docker-registry on
 * 127.0.0.1:<free port>, and one with htpasswd auth): a two-architecture index packed from the amd64
 * and arm64 test guests and pulled per platform; images in KraftKit's layout and with urunc's
 * annotations written here, by hand, from the layouts' published descriptions (KraftKit's oci/
 * package; urunc's docs/package and pkg/unikontainers/config.go), not by the library's packer; wrong
 * platforms refused; a tag moved after resolution; credentials; an unreachable registry; eviction
 * with OCI blobs. Every registry and scratch file is removed even on failure (a forked reaper). */
#include "oakuk-private.h"
#include "oci-private.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <signal.h>
#include <string.h>
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

static Registry reg_open, reg_auth, reg_tmp;
static char *work; /* scratch dir */

/* ---- processes ---- */

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

static gboolean is_registry(GPid pid) {
  g_autofree char *path = g_strdup_printf("/proc/%d/cmdline", (int)pid);
  g_autofree char *cmd = NULL;
  return g_file_get_contents(path, &cmd, NULL, NULL) && strcmp(cmd, "/usr/bin/docker-registry") == 0;
}

static void registry_stop(Registry *r) {
  if (r->pid > 0 && is_registry(r->pid)) {
    kill(r->pid, SIGTERM);
    waitpid(r->pid, NULL, 0);
    for (int k = 0; k < 100 && kill(r->pid, 0) == 0; k++)
      g_usleep(20000);
    r->pid = 0;
  }
}

/* A forked reaper: once this process is gone (its pipe reaches EOF), the registries are stopped and
 * the scratch dir removed, however the tests ended. */
static void start_reaper(void) {
  int fds[2];
  g_assert_cmpint(pipe(fds), ==, 0);
  pid_t child = fork();
  g_assert_cmpint(child, >=, 0);
  if (child > 0) {
    close(fds[0]);
    return;
  }
  close(fds[1]);
  setsid();
  char b;
  while (read(fds[0], &b, 1) != 0 && errno == EINTR)
    ;
  registry_stop(&reg_open);
  registry_stop(&reg_auth);
  registry_stop(&reg_tmp);
  g_autofree char *cmd = g_strdup_printf("rm -rf %s", work);
  run(cmd);
  _exit(0);
}

/* ---- files ---- */

static const char *guests(void) {
  const char *d = g_getenv("OAKUK_GUESTS_DIR");
  return d && g_file_test(d, G_FILE_TEST_IS_DIR) ? d : NULL;
}

static GBytes *read_bytes(const char *path) {
  char *data;
  gsize n;
  g_assert_true(g_file_get_contents(path, &data, &n, NULL));
  return g_bytes_new_take(data, n);
}

static char *sha_of_file(const char *path) {
  g_autoptr(GBytes) b = read_bytes(path);
  return g_compute_checksum_for_bytes(G_CHECKSUM_SHA256, b);
}

/* A Unikraft-like x86 kernel: the test kernel of tests/guests (ukguest) imitating version v, else one
 * crafted here (a 32-bit ELF with a multiboot header and Unikraft's version string). */
static GBytes *unikraft_kernel(const char *v) {
  g_autofree char *name = g_strdup_printf("ukguest-%s.kernel", v);
  g_autofree char *p = guests() ? g_build_filename(guests(), name, NULL) : NULL;
  if (p && g_file_test(p, G_FILE_TEST_IS_REGULAR))
    return read_bytes(p);
  guint8 h[96] = {0x7f, 'E', 'L', 'F', 1, 1, 1, [16] = 2, [18] = 3};
  guint32 mb[3] = {0x1BADB002u, 3, (guint32) - (0x1BADB002u + 3)};
  memcpy(h + 64, mb, sizeof mb);
  GByteArray *k = g_byte_array_new();
  g_byte_array_append(k, h, sizeof h);
  g_autofree char *banner = g_strdup_printf("Unikraft Telesto %s", v);
  g_byte_array_append(k, (const guint8 *)banner, (guint)strlen(banner));
  return g_byte_array_free_to_bytes(k);
}

/* An arm64 kernel: the arm64 test guest's when built, else an AArch64 ELF header. */
static GBytes *arm64_kernel(void) {
  g_autofree char *p = guests() ? g_build_filename(guests(), "arm64-kernel", NULL) : NULL;
  if (p && g_file_test(p, G_FILE_TEST_IS_REGULAR))
    return read_bytes(p);
  guint8 h[64] = {0x7f, 'E', 'L', 'F', 2, 1, 1, [16] = 2, [18] = 183};
  return g_bytes_new(h, sizeof h);
}

/* ---- images written by hand ---- */

typedef struct {
  const char *path; /* inside the layer, no leading '/' */
  GBytes *data;     /* NULL: a directory */
} TarEntry;

static la_ssize_t to_bytes(struct archive *a, void *data, const void *buf, size_t n) {
  g_byte_array_append(data, buf, (guint)n);
  return (la_ssize_t)n;
}

/* A tar layer (gzip'd when gz) of entries, as Go's archive/tar writes them (KraftKit's TarFileTo). */
static GBytes *make_tar(const TarEntry *entries, gsize n, gboolean gz) {
  GByteArray *out = g_byte_array_new();
  struct archive *w = archive_write_new();
  archive_write_set_format_pax_restricted(w);
  if (gz)
    archive_write_add_filter_gzip(w);
  g_assert_cmpint(archive_write_open(w, out, NULL, to_bytes, NULL), ==, ARCHIVE_OK);
  for (gsize k = 0; k < n; k++) {
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, entries[k].path);
    archive_entry_set_filetype(e, entries[k].data ? AE_IFREG : AE_IFDIR);
    archive_entry_set_perm(e, entries[k].data ? 0644 : 0755);
    archive_entry_set_size(e, entries[k].data ? (la_int64_t)g_bytes_get_size(entries[k].data) : 0);
    g_assert_cmpint(archive_write_header(w, e), ==, ARCHIVE_OK);
    if (entries[k].data) {
      gsize len;
      const void *d = g_bytes_get_data(entries[k].data, &len);
      g_assert_cmpint(archive_write_data(w, d, len), ==, (la_ssize_t)len);
    }
    archive_entry_free(e);
  }
  g_assert_cmpint(archive_write_close(w), ==, ARCHIVE_OK);
  archive_write_free(w);
  return g_byte_array_free_to_bytes(out);
}

static char *digest_of(GBytes *b) {
  return oakuk_oci_digest_bytes(b);
}

/* Pushes blobs, manifests by digest, and top under tag, with the library's registry client. */
typedef struct {
  GPtrArray *blobs;     /* GBytes* */
  GPtrArray *manifests; /* GBytes*, pushed by digest before top */
} Upload;

static Upload *upload_new(void) {
  Upload *u = g_new0(Upload, 1);
  u->blobs = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
  u->manifests = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
  return u;
}

static void upload_free(Upload *u) {
  g_ptr_array_unref(u->blobs);
  g_ptr_array_unref(u->manifests);
  g_free(u);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(Upload, upload_free)

static char *blob(Upload *u, GBytes *b) {
  g_ptr_array_add(u->blobs, g_bytes_ref(b));
  return digest_of(b);
}

static char *push(Registry *r, const char *repo, const char *tag, Upload *u, GBytes *top,
                  const char *top_media, const char *user, const char *pass) {
  GError *err = NULL;
  g_autoptr(OakukOciClient) c = oakuk_oci_client_new(r->addr, user, pass, NULL, &err);
  g_assert_no_error(err);
  for (guint k = 0; k < u->blobs->len; k++) {
    g_autofree char *d = digest_of(u->blobs->pdata[k]);
    g_assert_true(oakuk_oci_client_push_blob(c, repo, d, u->blobs->pdata[k], &err));
    g_assert_no_error(err);
  }
  for (guint k = 0; k < u->manifests->len; k++) {
    g_autofree char *d = digest_of(u->manifests->pdata[k]);
    g_autofree char *got =
        oakuk_oci_client_push_manifest(c, repo, d, OAKUK_OCI_MEDIA_MANIFEST, u->manifests->pdata[k], &err);
    g_assert_no_error(err);
  }
  char *d = oakuk_oci_client_push_manifest(c, repo, tag, top_media, top, &err);
  g_assert_no_error(err);
  return d;
}

static GBytes *text_bytes(char *owned) {
  return g_bytes_new_take(owned, strlen(owned));
}

/* One manifest of KraftKit's layout (oci/pack.go, manifest.go, layer.go, wellknown.go,
 * annotations.go): the kernel alone in an uncompressed tar at unikraft/bin/kernel annotated
 * org.unikraft.kernel.image, the initrd likewise at unikraft/bin/initrd; a config with os (the
 * platform), architecture, os.version and Cmd/Env; the platform on the config descriptor;
 * org.unikraft.kernel.version and sh.kraftkit.version on the manifest. files (may be NULL) is an
 * extra layer of the rootfs. Returns the manifest; its platform is os/arch. */
static GBytes *kraftkit_manifest(Upload *u, const char *os, const char *arch, const char *version,
                                 GBytes *kernel, GBytes *initrd, GBytes *files, const char *cmd_json,
                                 const char *env_json) {
  TarEntry ke[] = {{"unikraft/bin/kernel", kernel}};
  g_autoptr(GBytes) kl = make_tar(ke, 1, FALSE);
  g_autofree char *kd = blob(u, kl);
  g_autoptr(GBytes) il = NULL;
  g_autofree char *id = NULL;
  if (initrd) {
    TarEntry ie[] = {{"unikraft/bin/initrd", initrd}};
    il = make_tar(ie, 1, FALSE);
    id = blob(u, il);
  }
  g_autofree char *fd = files ? blob(u, files) : NULL;
  g_autoptr(GString) diff = g_string_new(NULL);
  g_string_append_printf(diff, "\"%s\"", kd); /* uncompressed layers: the digest is the diff id */
  if (id)
    g_string_append_printf(diff, ", \"%s\"", id);
  g_autoptr(GBytes) config = text_bytes(g_strdup_printf(
      "{\"architecture\": \"%s\", \"os\": \"%s\", \"os.version\": \"%s\", \"config\": {\"Cmd\": %s, \"Env\": "
      "%s}, \"rootfs\": {\"type\": \"layers\", \"diff_ids\": [%s]}}",
      arch, os, version, cmd_json, env_json, diff->str));
  g_autofree char *cd = blob(u, config);
  g_autoptr(GString) layers = g_string_new(NULL);
  g_string_append_printf(layers,
                         "{\"mediaType\": \"application/vnd.oci.image.layer.v1.tar\", \"digest\": \"%s\", "
                         "\"size\": %zu, \"annotations\": {\"org.unikraft.kernel.image\": "
                         "\"/unikraft/bin/kernel\"}}",
                         kd, g_bytes_get_size(kl));
  if (id)
    g_string_append_printf(
        layers,
        ", {\"mediaType\": \"application/vnd.oci.image.layer.v1.tar\", \"digest\": \"%s\", "
        "\"size\": %zu, \"annotations\": {\"org.unikraft.kernel.initrd\": "
        "\"/unikraft/bin/initrd\"}}",
        id, g_bytes_get_size(il));
  if (fd)
    g_string_append_printf(layers,
                           ", {\"mediaType\": \"application/vnd.oci.image.layer.v1.tar+gzip\", \"digest\": "
                           "\"%s\", \"size\": %zu}",
                           fd, g_bytes_get_size(files));
  return text_bytes(g_strdup_printf(
      "{\"schemaVersion\": 2, \"mediaType\": \"application/vnd.oci.image.manifest.v1+json\", \"config\": "
      "{\"mediaType\": \"application/vnd.oci.image.config.v1+json\", \"digest\": \"%s\", \"size\": %zu, "
      "\"platform\": {\"architecture\": \"%s\", \"os\": \"%s\", \"os.version\": \"%s\"}}, \"layers\": [%s], "
      "\"annotations\": {\"org.opencontainers.image.ref.name\": \"unikraft.org/helloworld\", "
      "\"org.unikraft.image.name\": \"unikraft.org/helloworld\", \"org.unikraft.kernel.version\": \"%s\", "
      "\"sh.kraftkit.version\": \"0.11.6\"}}",
      cd, g_bytes_get_size(config), arch, os, version, layers->str, version));
}

/* KraftKit's index (oci/index.go): one entry per manifest with its platform and annotations. */
static GBytes *kraftkit_index(Upload *u, GBytes *const *manifests, const char *const *platforms, gsize n) {
  g_autoptr(GString) entries = g_string_new(NULL);
  for (gsize k = 0; k < n; k++) {
    g_ptr_array_add(u->manifests, g_bytes_ref(manifests[k]));
    g_autofree char *d = digest_of(manifests[k]);
    g_auto(GStrv) p = g_strsplit(platforms[k], "/", 3); /* os/arch/os.version */
    g_string_append_printf(
        entries,
        "%s{\"mediaType\": \"application/vnd.oci.image.manifest.v1+json\", \"digest\": \"%s\", "
        "\"size\": %zu, \"platform\": {\"architecture\": \"%s\", \"os\": \"%s\", "
        "\"os.version\": \"%s\"}, \"annotations\": {\"sh.kraftkit.version\": \"0.11.6\"}}",
        k ? ", " : "", d, g_bytes_get_size(manifests[k]), p[1], p[0], p[2] ? p[2] : "");
  }
  return text_bytes(g_strdup_printf("{\"schemaVersion\": 2, \"mediaType\": "
                                    "\"application/vnd.oci.image.index.v1+json\", \"manifests\": [%s], "
                                    "\"annotations\": {\"sh.kraftkit.version\": \"0.11.6\"}}",
                                    entries->str));
}

/* ---- the cache ---- */

static oakuk_image_cache *new_cache(const char *name, uint64_t max_bytes) {
  g_autofree char *dir = g_build_filename(work, name, NULL);
  oakuk_image_cache_options o = OAKUK_IMAGE_CACHE_OPTIONS_INIT;
  o.max_cache_bytes = max_bytes;
  o.file_allowed_dirs = work;
  oakuk_error *err = NULL;
  oakuk_image_cache *c = oakuk_image_cache_new(dir, &o, &err);
  g_assert_null(err);
  return c;
}

static oakuk_image *fetch(oakuk_image_cache *c, const char *ref, const char *arch, const char *user,
                          const char *pass) {
  oakuk_error *err = NULL;
  oakuk_image *img = oakuk_image_cache_fetch_oci_sync(c, ref, arch, user, pass, NULL, NULL, &err);
  if (!img)
    g_error("fetch %s for %s: %s", ref, arch, oakuk_error_message(err));
  return img;
}

/* Fetches ref for arch expecting failure with code and a message containing needle1 and needle2. */
static void fetch_fails(oakuk_image_cache *c, const char *ref, const char *arch, int32_t code,
                        const char *needle1, const char *needle2) {
  oakuk_error *err = NULL;
  oakuk_image *img = oakuk_image_cache_fetch_oci_sync(c, ref, arch, NULL, NULL, NULL, NULL, &err);
  if (img)
    g_error("fetch %s for %s succeeded", ref, arch);
  g_test_message("%s", oakuk_error_message(err));
  g_assert_cmpstr(oakuk_status_name(oakuk_error_code(err)), ==, oakuk_status_name(code));
  if (needle1 && !strstr(oakuk_error_message(err), needle1))
    g_error("\"%s\" lacks \"%s\"", oakuk_error_message(err), needle1);
  if (needle2 && !strstr(oakuk_error_message(err), needle2))
    g_error("\"%s\" lacks \"%s\"", oakuk_error_message(err), needle2);
  oakuk_error_free(err);
}

static char *read_text(const char *dir, const char *name) {
  g_autofree char *p = g_build_filename(dir, name, NULL);
  char *t = NULL;
  if (!g_file_get_contents(p, &t, NULL, NULL))
    g_error("cannot read %s", p);
  return t;
}

/* ---------------------------------------------------------------------------------------------- */
/* The packer: two architectures from the test guests */

static void test_pack_two_arch(void) {
  if (!guests()) {
    g_test_skip("the test guests are not built (OAKUK_GUESTS_DIR)");
    return;
  }
  g_autofree char *k64 = g_build_filename(guests(), "amd64-kernel", NULL);
  g_autofree char *i64 = g_build_filename(guests(), "amd64-initrd", NULL);
  g_autofree char *karm = g_build_filename(guests(), "arm64-kernel", NULL);
  g_autofree char *iarm = g_build_filename(guests(), "arm64-initrd", NULL);
  g_autofree char *files = g_build_filename(work, "guest-files", NULL);
  g_assert_cmpint(g_mkdir_with_parents(files, 0755), ==, 0);
  g_autofree char *hello = g_build_filename(files, "hello.txt", NULL);
  g_assert_true(g_file_set_contents(hello, "hello from the image\n", -1, NULL));

  oakuk_oci_package *p = oakuk_oci_package_new();
  oakuk_error *err = NULL;
  g_assert_cmpint(oakuk_oci_package_add_kernel(p, "amd64", k64, i64, &err), ==, 0);
  g_assert_cmpint(oakuk_oci_package_add_kernel(p, "arm64", karm, iarm, &err), ==, 0);
  g_assert_cmpint(oakuk_oci_package_set_files_dir(p, files, &err), ==, 0);
  g_assert_cmpint(oakuk_oci_package_set_cmdline_extra(p, "console=ttyS0 quiet", &err), ==, 0);
  g_assert_cmpint(oakuk_oci_package_add_arg(p, "serve", &err), ==, 0);
  g_autofree char *ref = g_strdup_printf("%s/guests/linux:1", reg_open.addr);
  g_autofree char *digest = NULL;
  g_assert_cmpint(oakuk_oci_package_push(&digest, p, ref, NULL, NULL, NULL, &err), ==, 0);
  g_assert_null(err);
  g_autofree char *amd64_manifest = g_strdup(oakuk_oci_package_manifest_digest(p, 0));
  g_autofree char *arm64_manifest = g_strdup(oakuk_oci_package_manifest_digest(p, 1));
  /* The same package as an OCI layout tarball: the same index. */
  g_autofree char *tarball = g_build_filename(work, "guests.tar", NULL);
  g_autofree char *digest2 = NULL;
  g_assert_cmpint(oakuk_oci_package_write_archive(&digest2, p, ref, tarball, &err), ==, 0);
  g_assert_cmpstr(digest2, ==, digest);
  oakuk_oci_package_unref(p);

  /* Resolution lists both platforms without pulling a layer, pinned to the index. */
  oakuk_oci_resolution *res = oakuk_oci_resolve(ref, NULL, NULL, NULL, &err);
  g_assert_null(err);
  g_assert_cmpstr(oakuk_oci_resolution_digest(res), ==, digest);
  g_autofree char *pinned = g_strdup_printf("%s/guests/linux@%s", reg_open.addr, digest);
  g_assert_cmpstr(oakuk_oci_resolution_pinned(res), ==, pinned);
  g_assert_cmpuint(oakuk_oci_resolution_arch_count(res), ==, 2);
  g_assert_cmpstr(oakuk_oci_resolution_arch(res, 0), ==, "amd64");
  g_assert_cmpstr(oakuk_oci_resolution_arch(res, 1), ==, "arm64");
  g_assert_cmpstr(oakuk_oci_resolution_platform_os(res, 0), ==, "qemu");
  g_assert_cmpstr(oakuk_oci_resolution_platform_architecture(res, 0), ==, "x86_64");
  g_assert_cmpstr(oakuk_oci_resolution_platform_digest(res, 0), ==, amd64_manifest);
  oakuk_oci_resolution_unref(res);

  oakuk_image_cache *c = new_cache("cache-guests", 0);
  const char *archs[] = {"amd64", "arm64"};
  const char *kernels[] = {k64, karm}, *initrds[] = {i64, iarm},
             *manifests[] = {amd64_manifest, arm64_manifest};
  for (int k = 0; k < 2; k++) {
    oakuk_image *img = fetch(c, ref, archs[k], NULL, NULL);
    g_assert_cmpstr(oakuk_image_arch(img), ==, archs[k]);
    g_assert_cmpstr(oakuk_image_digest(img), ==, manifests[k]);
    g_assert_cmpstr(oakuk_image_flavor(img), ==, "linux");
    g_assert_cmpstr(oakuk_image_cmdline_extra(img), ==, "console=ttyS0 quiet");
    g_assert_cmpuint(oakuk_image_arg_count(img), ==, 1);
    g_assert_cmpstr(oakuk_image_arg(img, 0), ==, "serve");
    g_autofree char *ks = sha_of_file(oakuk_image_kernel(img)), *kw = sha_of_file(kernels[k]);
    g_assert_cmpstr(ks, ==, kw);
    g_autofree char *is = sha_of_file(oakuk_image_initrd(img)), *iw = sha_of_file(initrds[k]);
    g_assert_cmpstr(is, ==, iw);
    g_autofree char *h = read_text(oakuk_image_files_dir(img), "hello.txt");
    g_assert_cmpstr(h, ==, "hello from the image\n");
    oakuk_image_unref(img);
  }
  /* The tarball's arm64 platform, from the same blobs: the same entry. */
  g_autofree char *archive_ref = g_strconcat("oci-archive:file://", tarball, NULL);
  oakuk_image *a = fetch(c, archive_ref, "arm64", NULL, NULL);
  g_assert_cmpstr(oakuk_image_digest(a), ==, arm64_manifest);
  oakuk_image_unref(a);
  oakuk_image_cache_unref(c);
  unlink(tarball);
}

/* ---------------------------------------------------------------------------------------------- */
/* KraftKit's layout */

static void test_kraftkit(void) {
  g_autoptr(Upload) u = upload_new();
  g_autoptr(GBytes) kernel = unikraft_kernel("0.16.3");
  g_autoptr(GBytes) initrd = g_bytes_new_static("070701-initrd", 13);
  g_autoptr(GBytes) page = g_bytes_new_static("<h1>hi</h1>\n", 12);
  TarEntry fe[] = {{"www", NULL}, {"www/index.html", page}};
  g_autoptr(GBytes) files = make_tar(fe, 2, TRUE);
  g_autoptr(GBytes) qemu = kraftkit_manifest(u, "qemu", "x86_64", "0.16.1", kernel, initrd, files,
                                             "[\"-p\", \"8080\"]", "[\"GREETING=hi\"]");
  g_autoptr(GBytes) fc = kraftkit_manifest(u, "fc", "x86_64", "0.16.1", kernel, NULL, NULL, "[]", "[]");
  GBytes *ms[] = {fc, qemu};
  const char *platforms[] = {"fc/x86_64/0.16.1", "qemu/x86_64/0.16.1"};
  g_autoptr(GBytes) index = kraftkit_index(u, ms, platforms, 2);
  g_autofree char *d =
      push(&reg_open, "unikraft.org/helloworld", "latest", u, index, OAKUK_OCI_MEDIA_INDEX, NULL, NULL);
  g_autofree char *ref = g_strdup_printf("%s/unikraft.org/helloworld:latest", reg_open.addr);
  oakuk_image_cache *c = new_cache("cache-kraftkit", 0);
  oakuk_image *img = fetch(c, ref, "amd64", NULL, NULL);
  g_autofree char *qd = digest_of(qemu);
  g_assert_cmpstr(oakuk_image_digest(img), ==, qd); /* the qemu entry, not fc's */
  g_assert_cmpstr(oakuk_image_arch(img), ==, "amd64");
  g_assert_cmpstr(oakuk_image_flavor(img), ==, "unikraft");
  g_assert_cmpstr(oakuk_image_version(img), ==, "0.16.1"); /* os.version says so, over the kernel */
  g_assert_cmpuint(oakuk_image_arg_count(img), ==, 2);
  g_assert_cmpstr(oakuk_image_arg(img, 1), ==, "8080");
  g_assert_cmpuint(oakuk_image_env_count(img), ==, 1);
  g_assert_cmpstr(oakuk_image_env(img, 0), ==, "GREETING=hi");
  g_autofree char *ird = read_text(oakuk_image_initrd(img), "");
  g_assert_cmpstr(ird, ==, "070701-initrd");
  g_autofree char *html = read_text(oakuk_image_files_dir(img), "www/index.html");
  g_assert_cmpstr(html, ==, "<h1>hi</h1>\n");
  g_autofree char *k = g_build_filename(oakuk_image_files_dir(img), "unikraft", NULL);
  g_assert_false(g_file_test(k, G_FILE_TEST_EXISTS));
  g_autoptr(GBytes) got = read_bytes(oakuk_image_kernel(img));
  g_assert_true(g_bytes_equal(got, kernel));
  oakuk_image_unref(img);
  /* No arm64 platform at all. */
  fetch_fails(c, ref, "arm64", OAKUK_EUNSUPPORTED, "no kernel for arm64", "qemu/x86_64");

  /* An index of Firecracker and Xen images only: refused, naming them. */
  g_autoptr(Upload) u2 = upload_new();
  g_autoptr(GBytes) fc2 = kraftkit_manifest(u2, "fc", "x86_64", "0.16.1", kernel, NULL, NULL, "[]", "[]");
  g_autoptr(GBytes) xen = kraftkit_manifest(u2, "xen", "x86_64", "0.16.1", kernel, NULL, NULL, "[]", "[]");
  GBytes *ms2[] = {fc2, xen};
  const char *platforms2[] = {"fc/x86_64", "xen/x86_64"};
  g_autoptr(GBytes) index2 = kraftkit_index(u2, ms2, platforms2, 2);
  g_autofree char *d2 =
      push(&reg_open, "unikraft.org/fconly", "1", u2, index2, OAKUK_OCI_MEDIA_INDEX, NULL, NULL);
  g_autofree char *ref2 = g_strdup_printf("%s/unikraft.org/fconly:1", reg_open.addr);
  fetch_fails(c, ref2, "amd64", OAKUK_EUNSUPPORTED, "Firecracker image (platform fc)", "Xen image");
  /* The fc manifest named by its digest (no index to choose from): its config refuses it. */
  g_autofree char *fcd = digest_of(fc2);
  g_autofree char *ref3 = g_strdup_printf("%s/unikraft.org/fconly@%s", reg_open.addr, fcd);
  fetch_fails(c, ref3, "amd64", OAKUK_EUNSUPPORTED, "fc/x86_64", "Firecracker");
  oakuk_image_cache_unref(c);
}

/* A platform whose kernel is another architecture's: the kernel's content decides. */
static void test_wrong_platform(void) {
  g_autoptr(Upload) u = upload_new();
  g_autoptr(GBytes) x86 = unikraft_kernel("0.16.3");
  g_autoptr(GBytes) arm = arm64_kernel();
  /* "arm64" on the outside, an x86 kernel inside; and the other way round. */
  g_autoptr(GBytes) liar = kraftkit_manifest(u, "qemu", "arm64", "0.16.3", x86, NULL, NULL, "[]", "[]");
  g_autoptr(GBytes) liar2 = kraftkit_manifest(u, "qemu", "x86_64", "0.16.3", arm, NULL, NULL, "[]", "[]");
  GBytes *ms[] = {liar, liar2};
  const char *platforms[] = {"qemu/arm64", "qemu/x86_64"};
  g_autoptr(GBytes) index = kraftkit_index(u, ms, platforms, 2);
  g_autofree char *d = push(&reg_open, "bad/liar", "1", u, index, OAKUK_OCI_MEDIA_INDEX, NULL, NULL);
  g_autofree char *ref = g_strdup_printf("%s/bad/liar:1", reg_open.addr);
  oakuk_image_cache *c = new_cache("cache-wrong", 0);
  fetch_fails(c, ref, "arm64", OAKUK_EINVAL, "its platform is arm64", "an amd64 kernel");
  fetch_fails(c, ref, "amd64", OAKUK_EINVAL, "its platform is amd64", "an arm64 kernel");
  /* Nothing of them stays in the cache but blobs, which prune removes. */
  oakuk_error *err = NULL;
  g_assert_cmpint(oakuk_image_cache_prune(NULL, c, 0, &err), ==, 0);
  g_assert_cmpuint(oakuk_image_cache_size(c), ==, 0);
  oakuk_image_cache_unref(c);
}

/* ---------------------------------------------------------------------------------------------- */
/* urunc's layout */

/* A single manifest (no index), platform linux/amd64, the unikernel somewhere in a gzip'd rootfs,
 * urunc's keys as manifest annotations (bunny writes LABELs there) or in /urunc.json (base64 values,
 * "b64:" or bare). */
static GBytes *urunc_manifest(Upload *u, const char *annotations_json, GBytes *urunc_json, GBytes *kernel) {
  g_autoptr(GBytes) initrd = g_bytes_new_static("URUNC-INITRD", 12);
  g_autoptr(GBytes) conf = g_bytes_new_static("worker_processes 1;\n", 20);
  TarEntry e[] = {{"unikernel", NULL}, {"unikernel/kernel", kernel}, {"unikernel/initrd", initrd},
                  {"conf", NULL},      {"conf/app.conf", conf},      {"urunc.json", urunc_json}};
  g_autoptr(GBytes) layer = make_tar(e, urunc_json ? 6 : 5, TRUE);
  g_autofree char *ld = blob(u, layer);
  g_autoptr(GBytes) config = text_bytes(g_strdup(
      "{\"architecture\": \"amd64\", \"os\": \"linux\", \"config\": {\"Env\": [\"PATH=/bin\"], \"Cmd\": "
      "[\"ignored\"]}, \"rootfs\": {\"type\": \"layers\", \"diff_ids\": []}}"));
  g_autofree char *cd = blob(u, config);
  return text_bytes(g_strdup_printf(
      "{\"schemaVersion\": 2, \"mediaType\": \"application/vnd.oci.image.manifest.v1+json\", \"config\": "
      "{\"mediaType\": \"application/vnd.oci.image.config.v1+json\", \"digest\": \"%s\", \"size\": %zu}, "
      "\"layers\": [{\"mediaType\": \"application/vnd.oci.image.layer.v1.tar+gzip\", \"digest\": \"%s\", "
      "\"size\": %zu}], \"annotations\": %s}",
      cd, g_bytes_get_size(config), ld, g_bytes_get_size(layer), annotations_json));
}

static void test_urunc(void) {
  g_autoptr(GBytes) kernel = unikraft_kernel("0.16.3");
  oakuk_image_cache *c = new_cache("cache-urunc", 0);
  /* Annotations on the manifest. */
  g_autoptr(Upload) u = upload_new();
  g_autoptr(GBytes) m = urunc_manifest(
      u,
      "{\"com.urunc.unikernel.unikernelType\": \"unikraft\", \"com.urunc.unikernel.hypervisor\": \"qemu\", "
      "\"com.urunc.unikernel.binary\": \"/unikernel/kernel\", \"com.urunc.unikernel.initrd\": "
      "\"/unikernel/initrd\", \"com.urunc.unikernel.cmdline\": \"nginx -c /conf/app.conf\", "
      "\"com.urunc.unikernel.unikernelVersion\": \"0.15.0\"}",
      NULL, kernel);
  g_autofree char *d = push(&reg_open, "urunc/nginx", "1", u, m, OAKUK_OCI_MEDIA_MANIFEST, NULL, NULL);
  g_autofree char *ref = g_strdup_printf("%s/urunc/nginx:1", reg_open.addr);
  oakuk_image *img = fetch(c, ref, "amd64", NULL, NULL);
  g_assert_cmpstr(oakuk_image_flavor(img), ==, "unikraft");
  g_assert_cmpstr(oakuk_image_version(img), ==, "0.15.0");
  g_assert_cmpuint(oakuk_image_arg_count(img), ==, 3);
  g_assert_cmpstr(oakuk_image_arg(img, 0), ==, "nginx");
  g_assert_cmpstr(oakuk_image_arg(img, 2), ==, "/conf/app.conf");
  g_assert_cmpstr(oakuk_image_env(img, 0), ==, "PATH=/bin");
  g_autofree char *ird = read_text(oakuk_image_initrd(img), "");
  g_assert_cmpstr(ird, ==, "URUNC-INITRD");
  g_autofree char *conf = read_text(oakuk_image_files_dir(img), "conf/app.conf");
  g_assert_cmpstr(conf, ==, "worker_processes 1;\n");
  g_autofree char *left = g_build_filename(oakuk_image_files_dir(img), "unikernel", NULL);
  g_assert_false(g_file_test(left, G_FILE_TEST_EXISTS)); /* the kernel moved out, its dir with it */
  oakuk_image_unref(img);

  /* The same keys in /urunc.json only, base64 as urunc wants them ("b64:" or bare). */
  g_autoptr(Upload) u2 = upload_new();
  g_autofree char *t = g_base64_encode((const guchar *)"unikraft", 8);
  g_autofree char *h = g_base64_encode((const guchar *)"qemu", 4);
  g_autofree char *b = g_base64_encode((const guchar *)"/unikernel/kernel", 17);
  g_autoptr(GBytes) json = text_bytes(g_strdup_printf(
      "{\"com.urunc.unikernel.unikernelType\": \"b64:%s\", \"com.urunc.unikernel.hypervisor\": \"%s\", "
      "\"com.urunc.unikernel.binary\": \"b64:%s\"}",
      t, h, b));
  g_autoptr(GBytes) m2 = urunc_manifest(u2, "{}", json, kernel);
  g_autofree char *d2 = push(&reg_open, "urunc/json", "1", u2, m2, OAKUK_OCI_MEDIA_MANIFEST, NULL, NULL);
  g_autofree char *ref2 = g_strdup_printf("%s/urunc/json:1", reg_open.addr);
  img = fetch(c, ref2, "amd64", NULL, NULL);
  g_autoptr(GBytes) got = read_bytes(oakuk_image_kernel(img));
  g_assert_true(g_bytes_equal(got, kernel));
  g_assert_cmpstr(oakuk_image_version(img), ==, "0.16.3"); /* from the kernel: no unikernelVersion */
  g_assert_cmpuint(oakuk_image_arg_count(img), ==, 1);     /* no cmdline: the config's Cmd */
  g_autofree char *uj = g_build_filename(oakuk_image_files_dir(img), "urunc.json", NULL);
  g_assert_false(g_file_test(uj, G_FILE_TEST_EXISTS));
  oakuk_image_unref(img);

  /* Another monitor, another unikernel type: refused, naming them. */
  g_autoptr(Upload) u3 = upload_new();
  g_autoptr(GBytes) m3 = urunc_manifest(
      u3,
      "{\"com.urunc.unikernel.unikernelType\": \"rumprun\", \"com.urunc.unikernel.hypervisor\": "
      "\"hvt\", \"com.urunc.unikernel.binary\": \"/unikernel/kernel\"}",
      NULL, kernel);
  g_autofree char *d3 = push(&reg_open, "urunc/hvt", "1", u3, m3, OAKUK_OCI_MEDIA_MANIFEST, NULL, NULL);
  g_autofree char *ref3 = g_strdup_printf("%s/urunc/hvt:1", reg_open.addr);
  fetch_fails(c, ref3, "amd64", OAKUK_EUNSUPPORTED, "hypervisor is \"hvt\"", "QEMU");
  /* A binary that is not in the image. */
  g_autoptr(Upload) u4 = upload_new();
  g_autoptr(GBytes) m4 = urunc_manifest(u4,
                                        "{\"com.urunc.unikernel.unikernelType\": \"unikraft\", "
                                        "\"com.urunc.unikernel.hypervisor\": \"qemu\", "
                                        "\"com.urunc.unikernel.binary\": \"/../../etc/passwd\"}",
                                        NULL, kernel);
  g_autofree char *d4 = push(&reg_open, "urunc/escape", "1", u4, m4, OAKUK_OCI_MEDIA_MANIFEST, NULL, NULL);
  g_autofree char *ref4 = g_strdup_printf("%s/urunc/escape:1", reg_open.addr);
  fetch_fails(c, ref4, "amd64", OAKUK_EPERM, "com.urunc.unikernel.binary", "not a path inside the image");
  /* A urunc image for amd64 asked for arm64: cached already, and from a cache without it. */
  fetch_fails(c, ref, "arm64", OAKUK_EUNSUPPORTED, "amd64", "not arm64");
  oakuk_image_cache *fresh = new_cache("cache-urunc-fresh", 0);
  fetch_fails(fresh, ref, "arm64", OAKUK_EUNSUPPORTED, "architecture is \"amd64\"", "not arm64");
  oakuk_image_cache_unref(fresh);
  oakuk_image_cache_unref(c);
}

/* ---------------------------------------------------------------------------------------------- */
/* Tags move; digests do not */

static char *push_package(Registry *r, const char *ref, const char *version, const char *user,
                          const char *pass) {
  g_autoptr(GBytes) k = unikraft_kernel(version);
  g_autofree char *name = g_strdup_printf("kernel-%s", version);
  g_autofree char *path = g_build_filename(work, name, NULL);
  g_assert_true(g_file_set_contents(path, g_bytes_get_data(k, NULL), (gssize)g_bytes_get_size(k), NULL));
  oakuk_oci_package *p = oakuk_oci_package_new();
  oakuk_error *err = NULL;
  g_assert_cmpint(oakuk_oci_package_add_kernel(p, NULL, path, NULL, &err), ==, 0);
  char *digest = NULL;
  if (oakuk_oci_package_push(&digest, p, ref, user, pass, NULL, &err) != 0)
    g_error("push %s: %s", ref, oakuk_error_message(err));
  oakuk_oci_package_unref(p);
  return digest;
}

static void test_tag_moved(void) {
  g_autofree char *ref = g_strdup_printf("%s/moving/app:stable", reg_open.addr);
  g_autofree char *first = push_package(&reg_open, ref, "0.16.3", NULL, NULL);
  oakuk_error *err = NULL;
  oakuk_oci_resolution *res = oakuk_oci_resolve(ref, NULL, NULL, NULL, &err);
  g_assert_null(err);
  g_assert_cmpstr(oakuk_oci_resolution_digest(res), ==, first);
  g_autofree char *pinned = g_strdup(oakuk_oci_resolution_pinned(res));
  oakuk_oci_resolution_unref(res);
  oakuk_image_cache *c = new_cache("cache-moved", 0);
  oakuk_image *before = fetch(c, ref, "amd64", NULL, NULL);
  g_assert_cmpstr(oakuk_image_version(before), ==, "0.16.3");
  /* The tag moves to another image. */
  g_autofree char *second = push_package(&reg_open, ref, "0.15.0", NULL, NULL);
  g_assert_cmpstr(second, !=, first);
  res = oakuk_oci_resolve(ref, NULL, NULL, NULL, &err);
  g_assert_cmpstr(oakuk_oci_resolution_digest(res), ==, second);
  oakuk_oci_resolution_unref(res);
  /* The pinned reference still yields the first image, from a fresh cache too; the tag the second. */
  oakuk_image_cache *fresh = new_cache("cache-moved-fresh", 0);
  oakuk_image *pinned_img = fetch(fresh, pinned, "amd64", NULL, NULL);
  g_assert_cmpstr(oakuk_image_version(pinned_img), ==, "0.16.3");
  g_assert_cmpstr(oakuk_image_digest(pinned_img), ==, oakuk_image_digest(before));
  oakuk_image *after = fetch(c, ref, "amd64", NULL, NULL);
  g_assert_cmpstr(oakuk_image_version(after), ==, "0.15.0");
  oakuk_image *again = fetch(c, pinned, "amd64", NULL, NULL);
  g_assert_cmpstr(oakuk_image_dir(again), ==, oakuk_image_dir(before));
  oakuk_image_unref(again);
  oakuk_image_unref(after);
  oakuk_image_unref(pinned_img);
  oakuk_image_unref(before);
  oakuk_image_cache_unref(fresh);
  oakuk_image_cache_unref(c);
}

/* ---------------------------------------------------------------------------------------------- */
/* Credentials, an unreachable registry */

static void test_auth(void) {
  g_autofree char *ref = g_strdup_printf("%s/private/app:1", reg_auth.addr);
  g_autofree char *d = push_package(&reg_auth, ref, "0.16.3", USER, PASS);
  oakuk_image_cache *c = new_cache("cache-auth", 0);
  oakuk_image *img = fetch(c, ref, "amd64", USER, PASS);
  g_assert_cmpstr(oakuk_image_version(img), ==, "0.16.3");
  /* Neither by tag nor by digest does the cache hand it to a fetch without the credentials. */
  fetch_fails(c, ref, "amd64", OAKUK_EPERM, "authentication required", NULL);
  g_autofree char *by_digest = g_strdup_printf("%s/private/app@%s", reg_auth.addr, d);
  fetch_fails(c, by_digest, "amd64", OAKUK_EPERM, "authentication required", NULL);
  oakuk_error *err = NULL;
  g_assert_null(oakuk_image_cache_fetch_oci_sync(c, ref, "amd64", USER, "wrong", NULL, NULL, &err));
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_EPERM);
  g_clear_pointer(&err, oakuk_error_free);
  oakuk_oci_resolution *res = oakuk_oci_resolve(ref, USER, PASS, NULL, &err);
  g_assert_null(err);
  g_assert_cmpstr(oakuk_oci_resolution_digest(res), ==, d);
  oakuk_oci_resolution_unref(res);
  oakuk_image_unref(img);
  oakuk_image_cache_unref(c);
}

typedef struct {
  GMainLoop *loop;
  oakuk_image *image;
  gint64 last_bytes;
  int progress;
} Async;

static void on_progress(int64_t bytes, int64_t total, void *data) {
  Async *a = data;
  g_assert_cmpint(bytes, >=, a->last_bytes);
  g_assert_cmpint(bytes, <=, total);
  a->last_bytes = bytes;
  a->progress++;
}

static void on_done(oakuk_image *image, oakuk_error *error, void *data) {
  Async *a = data;
  if (error)
    g_error("%s", oakuk_error_message(error));
  a->image = oakuk_image_ref(image);
  g_main_loop_quit(a->loop);
}

static void test_unreachable(void) {
  g_autofree char *ref = g_strdup_printf("%s/gone/app:1", reg_tmp.addr);
  g_autofree char *d = push_package(&reg_tmp, ref, "0.16.3", NULL, NULL);
  oakuk_image_cache *c = new_cache("cache-unreachable", 0);
  /* Asynchronously, with progress, on this thread's context. */
  Async a = {g_main_loop_new(NULL, FALSE), NULL, 0, 0};
  oakuk_error *err = NULL;
  oakuk_image_fetch *f = NULL;
  g_assert_cmpint(
      oakuk_image_cache_fetch_oci_start(&f, c, ref, "amd64", NULL, NULL, on_progress, on_done, &a, &err), ==,
      0);
  g_main_loop_run(a.loop);
  g_main_loop_unref(a.loop);
  oakuk_image_fetch_unref(f);
  g_assert_cmpint(a.progress, >, 0);
  g_autofree char *dir = g_strdup(oakuk_image_dir(a.image));
  oakuk_image_unref(a.image);
  registry_stop(&reg_tmp);
  /* The registry is gone: the tag's last resolution serves. */
  oakuk_image *img = fetch(c, ref, "amd64", NULL, NULL);
  g_assert_cmpstr(oakuk_image_dir(img), ==, dir);
  oakuk_image_unref(img);
  /* Never resolved here: nothing to fall back to. */
  g_autofree char *other = g_strdup_printf("%s/gone/other:1", reg_tmp.addr);
  fetch_fails(c, other, "amd64", OAKUK_EIO, "unreachable", NULL);
  oakuk_image_cache_unref(c);
}

/* ---------------------------------------------------------------------------------------------- */
/* Eviction with OCI images */

static void test_eviction(void) {
  g_autoptr(GBytes) k = unikraft_kernel("0.16.3");
  const gsize one = g_bytes_get_size(k);
  oakuk_image_cache *c = new_cache("cache-evict", 1); /* nothing unused may stay */
  g_autofree char *r1 = g_strdup_printf("%s/evict/one:1", reg_open.addr);
  g_autofree char *r2 = g_strdup_printf("%s/evict/two:1", reg_open.addr);
  g_autofree char *d1 = push_package(&reg_open, r1, "0.16.3", NULL, NULL);
  g_autofree char *d2 = push_package(&reg_open, r2, "0.15.0", NULL, NULL);
  oakuk_image *held = fetch(c, r1, "amd64", NULL, NULL);
  g_assert_cmpuint(oakuk_image_cache_size(c), >=, one);
  oakuk_image *two = fetch(c, r2, "amd64", NULL, NULL);
  g_autofree char *two_dir = g_strdup(oakuk_image_dir(two));
  oakuk_image_unref(two);
  oakuk_image *three = fetch(c, r1, "amd64", NULL, NULL); /* the first again: in use, kept */
  g_assert_cmpstr(oakuk_image_dir(three), ==, oakuk_image_dir(held));
  g_assert_false(g_file_test(two_dir, G_FILE_TEST_EXISTS)); /* unused: evicted with its blobs */
  g_autofree char *held_dir = g_strdup(oakuk_image_dir(held));
  oakuk_image_unref(three);
  oakuk_image_unref(held);
  oakuk_error *err = NULL;
  uint64_t freed = 0;
  g_assert_cmpint(oakuk_image_cache_prune(&freed, c, 0, &err), ==, 0);
  g_assert_cmpuint(freed, >=, one);
  g_assert_false(g_file_test(held_dir, G_FILE_TEST_EXISTS));
  g_assert_cmpuint(oakuk_image_cache_size(c), ==, 0);
  oakuk_image_cache_unref(c);
}

static void skip_all(void) {
  g_test_skip("needs root and /usr/bin/docker-registry (Debian's docker-registry)");
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  if (geteuid() != 0 || !g_file_test("/usr/bin/docker-registry", G_FILE_TEST_IS_EXECUTABLE)) {
    g_test_add_func("/uk-oci/skipped", skip_all);
    return g_test_run();
  }
  work = g_dir_make_tmp("oakuk-uk-oci-XXXXXX", NULL);
  registry_start(&reg_open, FALSE);
  registry_start(&reg_auth, TRUE);
  registry_start(&reg_tmp, FALSE); /* stopped by /uk-oci/unreachable */
  start_reaper();                  /* after the registries: it stops them by their pids */
  g_test_add_func("/uk-oci/pack/two-arch", test_pack_two_arch);
  g_test_add_func("/uk-oci/kraftkit", test_kraftkit);
  g_test_add_func("/uk-oci/urunc", test_urunc);
  g_test_add_func("/uk-oci/wrong-platform", test_wrong_platform);
  g_test_add_func("/uk-oci/tag-moved", test_tag_moved);
  g_test_add_func("/uk-oci/auth", test_auth);
  g_test_add_func("/uk-oci/unreachable", test_unreachable);
  g_test_add_func("/uk-oci/cache/eviction", test_eviction);
  int rc = g_test_run();
  registry_stop(&reg_open);
  registry_stop(&reg_auth);
  registry_stop(&reg_tmp);
  return rc;
}

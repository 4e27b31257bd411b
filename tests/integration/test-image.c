/* Integration tests of the image module over real HTTP (tests/lib's libsoup server on loopback):
 * HTTP errors, redirects, truncated and slow bodies, progress, concurrent fetches, cache reuse,
 * and the test guests built by tests/guests when present. */
#include "oakuk-private.h"
#include "test-http-server.h"

#include <ftw.h>
#include <stdio.h>
#include <string.h>

typedef struct {
  char *root;  /* files the server serves */
  char *cache; /* image cache dir */
  OakukTestHttpServer *server;
  GBytes *image; /* a small valid image: tar.gz with kernel + files/hello.txt */
  char *image_sha;
} Fixture;

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  return remove(path);
}

/* A small valid image made by tar-ing a multiboot kernel. */
static GBytes *make_image(const char *dir, gsize padding) {
  g_autofree char *src = g_build_filename(dir, "src", NULL);
  g_autofree char *files = g_build_filename(src, "files", NULL);
  g_assert_cmpint(g_mkdir_with_parents(files, 0755), ==, 0);
  GByteArray *k = g_byte_array_new();
  /* A 32-bit ELF with a multiboot v1 header, as Unikraft's x86 kernels for QEMU. */
  guint8 h[96] = {0x7f, 'E', 'L', 'F', 1, 1, 1, [16] = 2, [18] = 3};
  guint32 mb[3] = {0x1BADB002u, 3, (guint32) - (0x1BADB002u + 3)};
  memcpy(h + 64, mb, sizeof mb);
  g_byte_array_append(k, h, sizeof h);
  GRand *r = g_rand_new_with_seed(42); /* incompressible, so the download has a real size */
  for (gsize i = 0; i < padding; i++) {
    guint8 b = (guint8)g_rand_int(r);
    g_byte_array_append(k, &b, 1);
  }
  g_rand_free(r);
  const char *banner = "Unikraft Helene 0.16.1";
  g_byte_array_append(k, (const guint8 *)banner, strlen(banner));
  g_autofree char *kpath = g_build_filename(src, "kernel", NULL);
  g_assert_true(g_file_set_contents(kpath, (const char *)k->data, k->len, NULL));
  g_byte_array_unref(k);
  g_autofree char *hello = g_build_filename(files, "hello.txt", NULL);
  g_assert_true(g_file_set_contents(hello, "hello\n", -1, NULL));
  g_autofree char *out = g_build_filename(dir, "image.tar.gz", NULL);
  const char *argv[] = {"tar", "-C", src, "-czf", out, "kernel", "files", NULL};
  int status = 0;
  g_assert_true(
      g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, &status, NULL));
  g_assert_true(g_spawn_check_wait_status(status, NULL));
  char *data;
  gsize len;
  g_assert_true(g_file_get_contents(out, &data, &len, NULL));
  return g_bytes_new_take(data, len);
}

static void fixture_setup(Fixture *f, gconstpointer data) {
  char *tmp = g_dir_make_tmp("oakuk-image-it-XXXXXX", NULL);
  f->root = tmp;
  f->cache = g_build_filename(tmp, "cache", NULL);
  f->image = make_image(tmp, 2 * 1024 * 1024);
  f->image_sha = g_compute_checksum_for_bytes(G_CHECKSUM_SHA256, f->image);
  f->server = oakuk_test_http_server_new(f->root);
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
  oakuk_test_http_server_free(f->server);
  nftw(f->root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  g_free(f->root);
  g_free(f->cache);
  g_bytes_unref(f->image);
  g_free(f->image_sha);
}

static oakuk_image_cache *new_cache(Fixture *f, const oakuk_image_cache_options *o) {
  oakuk_error *err = NULL;
  oakuk_image_cache *c = oakuk_image_cache_new(f->cache, o, &err);
  g_assert_null(err);
  return c;
}

static void assert_cache_empty(const char *cache) {
  GDir *d = g_dir_open(cache, 0, NULL);
  g_assert_nonnull(d);
  const char *name = g_dir_read_name(d);
  if (name != NULL)
    g_error("cache %s not empty after a failed fetch: %s", cache, name);
  g_dir_close(d);
}

static oakuk_error *fetch_error(Fixture *f, const oakuk_image_cache_options *o, const char *path) {
  g_autofree char *url = oakuk_test_http_server_url_for(f->server, path);
  oakuk_image_cache *c = new_cache(f, o);
  oakuk_error *err = NULL;
  oakuk_image *img = oakuk_image_cache_fetch_sync(c, url, NULL, NULL, NULL, &err);
  g_assert_null(img);
  g_assert_nonnull(err);
  g_assert_nonnull(strstr(oakuk_error_message(err), url));
  if (g_test_verbose())
    g_test_message("%s", oakuk_error_message(err));
  assert_cache_empty(f->cache);
  oakuk_image_cache_unref(c);
  return err;
}

static void test_http_ok(Fixture *f, gconstpointer data) {
  g_autofree char *url = oakuk_test_http_server_url_for(f->server, "/redirect/2/image.tar.gz");
  oakuk_image_cache *c = new_cache(f, NULL);
  oakuk_error *err = NULL;
  oakuk_image *img = oakuk_image_cache_fetch_sync(c, url, f->image_sha, NULL, NULL, &err);
  g_assert_null(err);
  g_assert_cmpstr(oakuk_image_sha256(img), ==, f->image_sha);
  g_assert_cmpstr(oakuk_image_flavor(img), ==, "unikraft");
  g_assert_cmpstr(oakuk_image_version(img), ==, "0.16.1");
  g_assert_cmpstr(oakuk_image_arch(img), ==, "amd64");
  g_assert_nonnull(oakuk_image_files_dir(img));
  /* Two redirects followed, one download. */
  g_assert_cmpuint(oakuk_test_http_server_request_count(f->server, "/redirect/2/image.tar.gz"), ==, 1);
  g_assert_cmpuint(oakuk_test_http_server_request_count(f->server, "/redirect/0/image.tar.gz"), ==, 1);
  oakuk_image_unref(img);
  oakuk_image_cache_unref(c);
}

static void test_http_404(Fixture *f, gconstpointer data) {
  oakuk_error *err = fetch_error(f, NULL, "/no-such-image.tar.gz");
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_ENOTFOUND);
  g_assert_nonnull(strstr(oakuk_error_message(err), "HTTP 404"));
  oakuk_error_free(err);
  err = fetch_error(f, NULL, "/status/500");
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_EIO);
  g_assert_nonnull(strstr(oakuk_error_message(err), "HTTP 500"));
  oakuk_error_free(err);
}

static void test_redirect_loop(Fixture *f, gconstpointer data) {
  oakuk_image_cache_options o = OAKUK_IMAGE_CACHE_OPTIONS_INIT;
  o.max_redirects = 3;
  oakuk_error *err = fetch_error(f, &o, "/redirect-loop/0");
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_EIO);
  g_assert_nonnull(strstr(oakuk_error_message(err), "too many redirects (more than 3)"));
  oakuk_error_free(err);
  /* The limit is exact: 3 redirects were followed, the 4th refused. */
  g_assert_cmpuint(oakuk_test_http_server_total_requests(f->server), ==, 4);
  /* Within the limit, redirects work. */
  err = fetch_error(f, &o, "/redirect/4/image.tar.gz");
  oakuk_error_free(err);
  err = NULL;
  oakuk_image_cache *c = new_cache(f, &o);
  g_autofree char *url = oakuk_test_http_server_url_for(f->server, "/redirect/3/image.tar.gz");
  oakuk_image *img = oakuk_image_cache_fetch_sync(c, url, NULL, NULL, NULL, &err);
  g_assert_null(err);
  oakuk_image_unref(img);
  oakuk_image_cache_unref(c);
}

static void test_truncated(Fixture *f, gconstpointer data) {
  oakuk_error *err = fetch_error(f, NULL, "/truncated/image.tar.gz");
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_EIO);
  oakuk_error_free(err);
}

static void test_timeout_and_limit(Fixture *f, gconstpointer data) {
  oakuk_test_http_server_set_slow(f->server, 1024, 2500);
  oakuk_image_cache_options o = OAKUK_IMAGE_CACHE_OPTIONS_INIT;
  o.timeout_s = 1;
  oakuk_error *err = fetch_error(f, &o, "/slow/image.tar.gz");
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_ETIMEOUT);
  oakuk_error_free(err);
  /* The size limit is enforced from Content-Length before the body is read. */
  oakuk_image_cache_options small = OAKUK_IMAGE_CACHE_OPTIONS_INIT;
  small.max_download_bytes = 1000;
  err = fetch_error(f, &small, "/image.tar.gz");
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_EINVAL);
  g_assert_nonnull(strstr(oakuk_error_message(err), "exceeds the limit of 1000 bytes"));
  oakuk_error_free(err);
}

typedef struct {
  GMainLoop *loop;
  int pending;
  int progress_calls[2];
  int64_t last_bytes[2];
  int64_t total[2];
  oakuk_image *image[2];
  char *error[2];
} Concurrent;

typedef struct {
  Concurrent *c;
  int i;
} Slot;

static void slot_progress(int64_t bytes, int64_t total, void *user_data) {
  Slot *s = user_data;
  g_assert_cmpint(bytes, >=, s->c->last_bytes[s->i]);
  s->c->progress_calls[s->i]++;
  s->c->last_bytes[s->i] = bytes;
  s->c->total[s->i] = total;
}

static void slot_done(oakuk_image *image, oakuk_error *error, void *user_data) {
  Slot *s = user_data;
  s->c->image[s->i] = image ? oakuk_image_ref(image) : NULL;
  s->c->error[s->i] = error ? g_strdup(oakuk_error_message(error)) : NULL;
  if (--s->c->pending == 0)
    g_main_loop_quit(s->c->loop);
}

static void test_concurrent_and_progress(Fixture *f, gconstpointer data) {
  /* A slow body (about 1.5 s) so the second fetch starts while the first downloads. */
  oakuk_test_http_server_set_slow(f->server, 256 * 1024, 150);
  g_autofree char *url = oakuk_test_http_server_url_for(f->server, "/slow/image.tar.gz");
  oakuk_image_cache *cache = new_cache(f, NULL);
  Concurrent c = {.loop = g_main_loop_new(NULL, FALSE), .pending = 2};
  Slot slots[2] = {{&c, 0}, {&c, 1}};
  for (int i = 0; i < 2; i++)
    g_assert_cmpint(
        oakuk_image_cache_fetch(cache, url, f->image_sha, slot_progress, slot_done, &slots[i], NULL), ==, 0);
  g_main_loop_run(c.loop);
  for (int i = 0; i < 2; i++) {
    g_assert_null(c.error[i]);
    g_assert_nonnull(c.image[i]);
    g_assert_cmpint(c.progress_calls[i], >=, 3);
    g_assert_cmpint(c.last_bytes[i], ==, (int64_t)g_bytes_get_size(f->image));
    g_assert_cmpint(c.total[i], ==, (int64_t)g_bytes_get_size(f->image));
  }
  g_assert_cmpstr(oakuk_image_dir(c.image[0]), ==, oakuk_image_dir(c.image[1]));
  g_assert_cmpuint(oakuk_test_http_server_request_count(f->server, "/slow/image.tar.gz"), ==, 1);
  for (int i = 0; i < 2; i++)
    oakuk_image_unref(c.image[i]);
  g_main_loop_unref(c.loop);
  oakuk_image_cache_unref(cache);
}

static void test_cache_reuse(Fixture *f, gconstpointer data) {
  g_autofree char *url = oakuk_test_http_server_url_for(f->server, "/image.tar.gz");
  oakuk_image_cache *c = new_cache(f, NULL);
  oakuk_error *err = NULL;
  oakuk_image *img = oakuk_image_cache_fetch_sync(c, url, f->image_sha, NULL, NULL, &err);
  g_assert_null(err);
  g_autofree char *dir = g_strdup(oakuk_image_dir(img));
  oakuk_image_unref(img);
  oakuk_image_cache_unref(c);
  g_assert_cmpuint(oakuk_test_http_server_request_count(f->server, "/image.tar.gz"), ==, 1);

  c = new_cache(f, NULL); /* as after a restart */
  img = oakuk_image_cache_fetch_sync(c, url, f->image_sha, NULL, NULL, &err);
  g_assert_null(err);
  g_assert_cmpstr(oakuk_image_dir(img), ==, dir);
  g_assert_cmpuint(oakuk_test_http_server_request_count(f->server, "/image.tar.gz"), ==, 1);
  oakuk_image_unref(img);
  oakuk_image_cache_unref(c);
}

/* The guests built by tests/guests are valid images for this module. */
static void test_guests(Fixture *f, gconstpointer data) {
  const char *dir = g_getenv("OAKUK_GUESTS_DIR");
  if (dir == NULL) {
    g_test_skip("OAKUK_GUESTS_DIR not set: test guests not built (build as root)");
    return;
  }
  const char *arches[] = {"amd64", "arm64"};
  oakuk_image_cache *c = new_cache(f, NULL);
  for (gsize i = 0; i < G_N_ELEMENTS(arches); i++) {
    g_autofree char *path = g_strdup_printf("%s/guest-%s.tar.gz", dir, arches[i]);
    g_autofree char *url = g_filename_to_uri(path, NULL, NULL);
    oakuk_error *err = NULL;
    oakuk_image *img = oakuk_image_cache_fetch_sync(c, url, NULL, NULL, NULL, &err);
    if (err)
      g_error("%s", oakuk_error_message(err));
    g_assert_cmpstr(oakuk_image_arch(img), ==, arches[i]);
    g_assert_cmpstr(oakuk_image_flavor(img), ==, "linux");
    g_assert_nonnull(oakuk_image_initrd(img));
    g_assert_nonnull(oakuk_image_files_dir(img));
    g_assert_nonnull(strstr(oakuk_image_cmdline_extra(img), "console="));
    oakuk_image_unref(img);
  }
  oakuk_image_cache_unref(c);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
  ADD("/image/http/ok-with-redirects", test_http_ok);
  ADD("/image/http/404", test_http_404);
  ADD("/image/http/redirect-loop", test_redirect_loop);
  ADD("/image/http/truncated", test_truncated);
  ADD("/image/http/timeout-and-limit", test_timeout_and_limit);
  ADD("/image/http/concurrent-and-progress", test_concurrent_and_progress);
  ADD("/image/http/cache-reuse", test_cache_reuse);
  ADD("/image/guests", test_guests);
  return g_test_run();
}

/* Integration tests of the image module over real HTTP (tests/lib's libsoup server on loopback):
 * HTTP errors, redirects, truncated and slow bodies, progress, concurrent fetches, cache reuse,
 * and the test guests built by tests/guests when present. */
#include "oakuk-private.h"
#include "test-http-server.h"

#include <libsoup/soup.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* A cache with opts (NULL: defaults) whose file:// URLs may read the fixture's root and the test
 * guests unless opts names its own file_allowed_dirs. */
static oakuk_image_cache *new_cache(Fixture *f, const oakuk_image_cache_options *opts) {
  oakuk_image_cache_options o = OAKUK_IMAGE_CACHE_OPTIONS_INIT;
  if (opts)
    o = *opts;
  g_autofree char *allowed = g_strdup_printf(
      "%s:%s", f->root, g_getenv("OAKUK_GUESTS_DIR") ? g_getenv("OAKUK_GUESTS_DIR") : "/nonexistent");
  if (o.file_allowed_dirs == NULL)
    o.file_allowed_dirs = allowed;
  oakuk_error *err = NULL;
  oakuk_image_cache *c = oakuk_image_cache_new(f->cache, &o, &err);
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

/* ---- a raw TCP server that misbehaves on purpose, in its own threads ---- */

typedef enum {
  RAW_TRICKLE, /* answers 200 with a Content-Length, then one byte per interval */
  RAW_SILENT,  /* reads the request, never answers */
  RAW_MUTE,    /* accepts, never reads nor writes (a TLS client waits for the handshake forever) */
} RawMode;

typedef struct {
  int listen_fd;
  int port;
  RawMode mode;
  guint interval_ms;
  guint64 length;
  int stop[2];
  GThread *thread;
  GPtrArray *handlers; /* GThread*, joined at the end; guarded by lock */
  GMutex lock;
  gint accepted;    /* connections accepted (atomic) */
  gint peer_closed; /* connections the client closed (atomic) */
} RawServer;

typedef struct {
  RawServer *s;
  int fd;
} RawConn;

/* Waits for fd to be readable, the stop pipe, or timeout_ms: 1 readable, 0 timeout, -1 stop. */
static int raw_wait(RawServer *s, int fd, int timeout_ms) {
  struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = s->stop[0], .events = POLLIN}};
  int n = poll(p, 2, timeout_ms);
  if (n > 0 && p[1].revents)
    return -1;
  return n > 0 ? 1 : 0;
}

static gpointer raw_conn_main(gpointer data) {
  RawConn *c = data;
  RawServer *s = c->s;
  char buf[4096];
  gsize got = 0;
  gboolean closed = FALSE;
  if (s->mode != RAW_MUTE) {
    /* The request, up to its blank line. */
    while (!closed && !g_strstr_len(buf, (gssize)got, "\r\n\r\n") && got < sizeof buf - 1) {
      int w = raw_wait(s, c->fd, -1);
      if (w < 0)
        goto out;
      ssize_t n = read(c->fd, buf + got, sizeof buf - 1 - got);
      closed = n <= 0;
      got += n > 0 ? (gsize)n : 0;
    }
  }
  if (!closed && s->mode == RAW_TRICKLE) {
    g_autofree char *head = g_strdup_printf("HTTP/1.1 200 OK\r\nContent-Length: %" G_GUINT64_FORMAT
                                            "\r\nContent-Type: application/octet-stream\r\n\r\n",
                                            s->length);
    closed = send(c->fd, head, strlen(head), MSG_NOSIGNAL) < 0;
  }
  while (!closed) {
    int w = raw_wait(s, c->fd, s->mode == RAW_TRICKLE ? (int)s->interval_ms : -1);
    if (w < 0)
      goto out;
    if (w > 0) {
      closed = read(c->fd, buf, sizeof buf) <= 0;
    } else if (send(c->fd, "x", 1, MSG_NOSIGNAL) < 0) {
      closed = TRUE;
    }
  }
  g_atomic_int_inc(&s->peer_closed);
out:
  close(c->fd);
  g_free(c);
  return NULL;
}

static gpointer raw_accept_main(gpointer data) {
  RawServer *s = data;
  for (;;) {
    if (raw_wait(s, s->listen_fd, -1) < 0)
      return NULL;
    int fd = accept(s->listen_fd, NULL, NULL);
    if (fd < 0)
      continue;
    g_atomic_int_inc(&s->accepted);
    RawConn *c = g_new0(RawConn, 1);
    c->s = s;
    c->fd = fd;
    g_mutex_lock(&s->lock);
    g_ptr_array_add(s->handlers, g_thread_new("raw-conn", raw_conn_main, c));
    g_mutex_unlock(&s->lock);
  }
}

static RawServer *raw_server_new(RawMode mode, guint interval_ms, guint64 length) {
  RawServer *s = g_new0(RawServer, 1);
  s->mode = mode;
  s->interval_ms = interval_ms;
  s->length = length;
  s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  g_assert_cmpint(bind(s->listen_fd, (struct sockaddr *)&a, sizeof a), ==, 0);
  g_assert_cmpint(listen(s->listen_fd, 16), ==, 0);
  g_assert_cmpint(getsockname(s->listen_fd, (struct sockaddr *)&a, &len), ==, 0);
  s->port = ntohs(a.sin_port);
  g_assert_cmpint(pipe2(s->stop, O_CLOEXEC), ==, 0);
  g_mutex_init(&s->lock);
  s->handlers = g_ptr_array_new();
  s->thread = g_thread_new("raw-accept", raw_accept_main, s);
  return s;
}

static void raw_server_free(RawServer *s) {
  g_assert_cmpint(write(s->stop[1], "x", 1), ==, 1);
  g_thread_join(s->thread);
  for (guint k = 0; k < s->handlers->len; k++)
    g_thread_join(s->handlers->pdata[k]);
  g_ptr_array_unref(s->handlers);
  close(s->listen_fd);
  close(s->stop[0]);
  close(s->stop[1]);
  g_mutex_clear(&s->lock);
  g_free(s);
}

static char *raw_url(RawServer *s, const char *scheme) {
  return g_strdup_printf("%s://127.0.0.1:%d/image.tar.gz", scheme, s->port);
}

/* Fetches url expecting OAKUK_ETIMEOUT naming option, between min_s and max_s seconds. */
static void expect_timeout(Fixture *f, const oakuk_image_cache_options *o, const char *url,
                           const char *option, double min_s, double max_s) {
  oakuk_image_cache *c = new_cache(f, o);
  oakuk_error *err = NULL;
  gint64 t0 = g_get_monotonic_time();
  oakuk_image *img = oakuk_image_cache_fetch_sync(c, url, NULL, NULL, NULL, &err);
  double took = (double)(g_get_monotonic_time() - t0) / 1e6;
  g_assert_null(img);
  g_assert_nonnull(err);
  g_test_message("%s after %.2f s: %s", option, took, oakuk_error_message(err));
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_ETIMEOUT);
  g_autofree char *needle = g_strdup_printf("(%s)", option);
  if (!strstr(oakuk_error_message(err), needle) || !strstr(oakuk_error_message(err), url))
    g_error("\"%s\" lacks \"%s\" or the URL", oakuk_error_message(err), needle);
  g_assert_cmpfloat(took, >=, min_s);
  g_assert_cmpfloat(took, <=, max_s);
  oakuk_error_free(err);
  assert_cache_empty(f->cache);
  oakuk_image_cache_unref(c);
}

/* The server: one byte every 2 s. The stall timeout ends it, not a 300 s inactivity wait. */
static void test_stall_timeout(Fixture *f, gconstpointer data) {
  RawServer *s = raw_server_new(RAW_TRICKLE, 2000, 1000);
  g_autofree char *url = raw_url(s, "http");
  oakuk_image_cache_options o = OAKUK_IMAGE_CACHE_OPTIONS_INIT;
  o.stall_timeout_s = 1;
  expect_timeout(f, &o, url, "stall_timeout_s", 0.9, 4.0);
  /* A server that takes the request and never answers stalls too. */
  RawServer *silent = raw_server_new(RAW_SILENT, 0, 0);
  g_autofree char *url2 = raw_url(silent, "http");
  expect_timeout(f, &o, url2, "stall_timeout_s", 0.9, 4.0);
  raw_server_free(silent);
  raw_server_free(s);
}

/* A byte every 300 ms never stalls for a second, but the whole download has a deadline. */
static void test_total_deadline(Fixture *f, gconstpointer data) {
  RawServer *s = raw_server_new(RAW_TRICKLE, 300, 100000);
  g_autofree char *url = raw_url(s, "http");
  oakuk_image_cache_options o = OAKUK_IMAGE_CACHE_OPTIONS_INIT;
  o.stall_timeout_s = 1;
  o.timeout_s = 2;
  expect_timeout(f, &o, url, "timeout_s", 1.9, 5.0);
  raw_server_free(s);
}

/* https to a server that accepts and never speaks TLS: the connection is never established. */
static void test_connect_timeout(Fixture *f, gconstpointer data) {
  RawServer *s = raw_server_new(RAW_MUTE, 0, 0);
  g_autofree char *url = raw_url(s, "https");
  oakuk_image_cache_options o = OAKUK_IMAGE_CACHE_OPTIONS_INIT;
  o.connect_timeout_s = 1;
  o.stall_timeout_s = 20;
  expect_timeout(f, &o, url, "connect_timeout_s", 0.9, 4.0);
  raw_server_free(s);
}

typedef struct {
  gboolean done;
  gint64 done_us;
  int32_t code;
  char *message;
  oakuk_image *image;
  int progress;
} FetchResult;

static void result_done(oakuk_image *image, oakuk_error *error, void *user_data) {
  FetchResult *r = user_data;
  g_assert_false(r->done);
  r->done = TRUE;
  r->done_us = g_get_monotonic_time();
  r->code = error ? oakuk_error_code(error) : 0;
  r->message = error ? g_strdup(oakuk_error_message(error)) : NULL;
  r->image = image ? oakuk_image_ref(image) : NULL;
}

static void result_progress(int64_t bytes, int64_t total, void *user_data) {
  FetchResult *r = user_data;
  g_assert_false(r->done);
  r->progress++;
}

static void result_clear(FetchResult *r) {
  g_free(r->message);
  oakuk_image_unref(r->image);
  memset(r, 0, sizeof *r);
}

static gboolean tick(gpointer data) {
  return G_SOURCE_CONTINUE;
}

/* Runs the default context until cond(data) or timeout_s; returns whether cond held. */
static gboolean run_until(gboolean (*cond)(gpointer), gpointer data, double timeout_s) {
  gint64 end = g_get_monotonic_time() + (gint64)(timeout_s * 1e6);
  guint t = g_timeout_add(10, tick, NULL);
  while (!cond(data) && g_get_monotonic_time() < end)
    g_main_context_iteration(NULL, TRUE);
  g_source_remove(t);
  return cond(data);
}

static gboolean is_done(gpointer data) {
  return ((FetchResult *)data)->done;
}

static gboolean peer_closed(gpointer data) {
  return g_atomic_int_get(&((RawServer *)data)->peer_closed) > 0;
}

/* The fetch has joined a download: its progress callback ran. */
static gboolean has_progress(gpointer data) {
  return ((FetchResult *)data)->progress > 0;
}

static gboolean accepted_one(gpointer data) {
  return g_atomic_int_get(&((RawServer *)data)->accepted) > 0;
}

static gboolean cache_is_empty(gpointer data) {
  GDir *d = g_dir_open(data, 0, NULL);
  gboolean empty = d && g_dir_read_name(d) == NULL;
  if (d)
    g_dir_close(d);
  return empty;
}

static gboolean no_work_dirs(gpointer data) {
  GDir *d = g_dir_open(data, 0, NULL);
  const char *name;
  gboolean none = d != NULL;
  while (d && (name = g_dir_read_name(d)))
    none = none && !g_str_has_prefix(name, ".tmp-");
  if (d)
    g_dir_close(d);
  return none;
}

static gboolean nothing(gpointer data) {
  return FALSE;
}

/* Cancelling a fetch stuck on a slow server: done says OAKUK_ECANCELLED within a second, the
 * connection is dropped and nothing stays in the cache. */
static void test_cancel(Fixture *f, gconstpointer data) {
  RawServer *s = raw_server_new(RAW_TRICKLE, 2000, 1000);
  g_autofree char *url = raw_url(s, "http");
  oakuk_image_cache *c = new_cache(f, NULL);
  FetchResult r = {0};
  oakuk_image_fetch *fetch = NULL;
  g_assert_cmpint(oakuk_image_cache_fetch_start(&fetch, c, url, NULL, result_progress, result_done, &r, NULL),
                  ==, 0);
  g_assert_nonnull(fetch);
  g_assert_true(run_until(accepted_one, s, 5));
  run_until(nothing, NULL, 0.3);
  g_assert_false(r.done);
  gint64 t0 = g_get_monotonic_time();
  oakuk_image_fetch_cancel(fetch);
  g_assert_true(run_until(is_done, &r, 1.0));
  g_test_message("cancelled: done after %.3f s: %s", (double)(r.done_us - t0) / 1e6, r.message);
  g_assert_cmpint(r.code, ==, OAKUK_ECANCELLED);
  g_assert_nonnull(strstr(r.message, url));
  g_assert_null(r.image);
  /* The download stops: the server sees its connection closed; the work dir goes. */
  g_assert_true(run_until(peer_closed, s, 3.0));
  g_assert_true(run_until(cache_is_empty, f->cache, 3.0));
  /* Cancelling again, or after done, does nothing. */
  oakuk_image_fetch_cancel(fetch);
  run_until(nothing, NULL, 0.2);
  oakuk_image_fetch_unref(fetch);
  result_clear(&r);
  oakuk_image_cache_unref(c);
  raw_server_free(s);
}

/* Two fetches share one download: cancelling one leaves the other's intact (here it completes);
 * cancelling both stops the download; a fetch after that starts a new download. */
static void test_cancel_shared(Fixture *f, gconstpointer data) {
  oakuk_test_http_server_set_slow(f->server, 256 * 1024, 150);
  g_autofree char *slow = oakuk_test_http_server_url_for(f->server, "/slow/image.tar.gz");
  oakuk_image_cache *c = new_cache(f, NULL);
  FetchResult a = {0}, b = {0};
  oakuk_image_fetch *fa = NULL, *fb = NULL;
  g_assert_cmpint(
      oakuk_image_cache_fetch_start(&fa, c, slow, f->image_sha, result_progress, result_done, &a, NULL), ==,
      0);
  g_assert_cmpint(
      oakuk_image_cache_fetch_start(&fb, c, slow, f->image_sha, result_progress, result_done, &b, NULL), ==,
      0);
  run_until(nothing, NULL, 0.3);
  gint64 t0 = g_get_monotonic_time();
  oakuk_image_fetch_cancel(fa);
  g_assert_true(run_until(is_done, &a, 1.0));
  g_assert_cmpint(a.code, ==, OAKUK_ECANCELLED);
  g_test_message("first cancelled after %.3f s", (double)(a.done_us - t0) / 1e6);
  g_assert_true(run_until(is_done, &b, 20));
  if (b.message)
    g_error("the other fetch failed: %s", b.message);
  g_assert_nonnull(b.image);
  g_assert_cmpuint(oakuk_test_http_server_request_count(f->server, "/slow/image.tar.gz"), ==, 1);
  oakuk_image_fetch_unref(fa);
  oakuk_image_fetch_unref(fb);
  result_clear(&a);
  result_clear(&b);

  RawServer *s = raw_server_new(RAW_TRICKLE, 500, 1000);
  g_autofree char *url = raw_url(s, "http");
  g_assert_cmpint(oakuk_image_cache_fetch_start(&fa, c, url, NULL, result_progress, result_done, &a, NULL),
                  ==, 0);
  g_assert_cmpint(oakuk_image_cache_fetch_start(&fb, c, url, NULL, result_progress, result_done, &b, NULL),
                  ==, 0);
  g_assert_true(run_until(accepted_one, s, 5));
  /* Both fetches are on the download before one is cancelled: each waits on a worker thread, and on
   * a busy machine the second may start only after the first was cancelled (it then downloads on its
   * own, which is right but not what this test looks at). */
  g_assert_true(run_until(has_progress, &a, 5) && run_until(has_progress, &b, 5));
  oakuk_image_fetch_cancel(fa);
  g_assert_true(run_until(is_done, &a, 1.0));
  g_assert_cmpint(a.code, ==, OAKUK_ECANCELLED);
  /* One fetch still wants it: the download goes on. */
  run_until(nothing, NULL, 1.5);
  g_assert_false(b.done);
  g_assert_cmpint(g_atomic_int_get(&s->peer_closed), ==, 0);
  g_assert_cmpint(b.progress, >, 0);
  t0 = g_get_monotonic_time();
  oakuk_image_fetch_cancel(fb);
  g_assert_true(run_until(is_done, &b, 1.0));
  g_assert_cmpint(b.code, ==, OAKUK_ECANCELLED);
  g_assert_true(run_until(peer_closed, s, 3.0));
  g_test_message("last cancelled: download dropped after %.3f s",
                 (double)(g_get_monotonic_time() - t0) / 1e6);
  /* A new fetch of the same URL is not handed the cancelled download. */
  FetchResult n = {0};
  oakuk_image_fetch *fn = NULL;
  g_assert_cmpint(oakuk_image_cache_fetch_start(&fn, c, url, NULL, NULL, result_done, &n, NULL), ==, 0);
  run_until(nothing, NULL, 0.7);
  g_assert_false(n.done);
  g_assert_cmpint(g_atomic_int_get(&s->accepted), ==, 2);
  oakuk_image_fetch_cancel(fn);
  g_assert_true(run_until(is_done, &n, 1.0));
  g_assert_cmpint(n.code, ==, OAKUK_ECANCELLED);
  g_assert_true(run_until(no_work_dirs, f->cache, 3.0));
  oakuk_image_fetch_unref(fa);
  oakuk_image_fetch_unref(fb);
  oakuk_image_fetch_unref(fn);
  result_clear(&a);
  result_clear(&b);
  result_clear(&n);
  oakuk_image_cache_unref(c);
  raw_server_free(s);
}

/* A fifo behind file:// (in an allowed directory) is refused without blocking: no writer ever
 * comes. */
static void test_file_fifo(Fixture *f, gconstpointer data) {
  g_autofree char *fifo = g_build_filename(f->root, "image.fifo", NULL);
  g_assert_cmpint(mkfifo(fifo, 0644), ==, 0);
  g_autofree char *url = g_filename_to_uri(fifo, NULL, NULL);
  oakuk_image_cache *c = new_cache(f, NULL);
  FetchResult r = {0};
  g_assert_cmpint(oakuk_image_cache_fetch(c, url, NULL, NULL, result_done, &r, NULL), ==, 0);
  g_assert_true(run_until(is_done, &r, 2.0));
  g_assert_cmpint(r.code, ==, OAKUK_EPERM);
  g_assert_nonnull(strstr(r.message, "is a fifo"));
  result_clear(&r);
  /* Outside file_allowed_dirs, refused before anything is opened. */
  oakuk_image_cache_options o = OAKUK_IMAGE_CACHE_OPTIONS_INIT;
  o.file_allowed_dirs = "/nonexistent-oakuk";
  oakuk_image_cache *c2 = new_cache(f, &o);
  oakuk_error *err = NULL;
  g_assert_cmpint(oakuk_image_cache_fetch(c2, url, NULL, NULL, result_done, &r, &err), ==, OAKUK_EPERM);
  g_assert_nonnull(strstr(oakuk_error_message(err), "file_allowed_dirs"));
  oakuk_error_free(err);
  oakuk_image_cache_unref(c2);
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

/* ---- revalidation: a server with validators (ETag, Last-Modified) ---- */

typedef struct {
  GMainContext *ctx;
  GMainLoop *loop;
  GThread *thread;
  char *url;
  GMutex lock;
  GCond cond;
  gboolean started;
  GBytes *body;  /* guarded by lock */
  char *version; /* the body's ETag and Last-Modified derive from it */
  gboolean gone; /* answer 404 */
  guint full, not_modified;
} ValServer;

static void val_handler(SoupServer *server, SoupServerMessage *msg, const char *path, GHashTable *query,
                        gpointer data) {
  ValServer *v = data;
  SoupMessageHeaders *req = soup_server_message_get_request_headers(msg);
  SoupMessageHeaders *resp = soup_server_message_get_response_headers(msg);
  g_mutex_lock(&v->lock);
  gboolean by_etag = g_str_has_prefix(path, "/etag/");
  g_autofree char *etag = g_strdup_printf("\"v-%s\"", v->version);
  /* Version n was last modified on day n of 2024. */
  g_autofree char *lm = g_strdup_printf("Mon, %02d Jan 2024 10:00:00 GMT", atoi(v->version));
  const char *inm = soup_message_headers_get_one(req, "If-None-Match");
  const char *ims = soup_message_headers_get_one(req, "If-Modified-Since");
  if (v->gone) {
    soup_server_message_set_status(msg, SOUP_STATUS_NOT_FOUND, NULL);
  } else if (by_etag ? g_strcmp0(inm, etag) == 0 : g_strcmp0(ims, lm) == 0) {
    v->not_modified++;
    soup_server_message_set_status(msg, SOUP_STATUS_NOT_MODIFIED, NULL);
  } else {
    v->full++;
    soup_message_headers_replace(resp, by_etag ? "ETag" : "Last-Modified", by_etag ? etag : lm);
    soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
    soup_server_message_set_response(msg, "application/octet-stream", SOUP_MEMORY_COPY,
                                     g_bytes_get_data(v->body, NULL), g_bytes_get_size(v->body));
  }
  g_mutex_unlock(&v->lock);
}

static gpointer val_thread(gpointer data) {
  ValServer *v = data;
  g_main_context_push_thread_default(v->ctx);
  g_autoptr(SoupServer) server = soup_server_new(NULL, NULL);
  soup_server_add_handler(server, NULL, val_handler, v, NULL);
  g_autoptr(GError) err = NULL;
  if (!soup_server_listen_local(server, 0, SOUP_SERVER_LISTEN_IPV4_ONLY, &err))
    g_error("validator server: %s", err->message);
  GSList *uris = soup_server_get_uris(server);
  g_mutex_lock(&v->lock);
  v->url = g_strdup_printf("http://127.0.0.1:%d", g_uri_get_port(uris->data));
  v->started = TRUE;
  g_cond_signal(&v->cond);
  g_mutex_unlock(&v->lock);
  g_slist_free_full(uris, (GDestroyNotify)g_uri_unref);
  g_main_loop_run(v->loop);
  soup_server_disconnect(server);
  g_main_context_pop_thread_default(v->ctx);
  return NULL;
}

static ValServer *val_server_new(GBytes *body) {
  ValServer *v = g_new0(ValServer, 1);
  v->ctx = g_main_context_new();
  v->loop = g_main_loop_new(v->ctx, FALSE);
  v->body = g_bytes_ref(body);
  v->version = g_strdup("1");
  g_mutex_init(&v->lock);
  g_cond_init(&v->cond);
  v->thread = g_thread_new("val-server", val_thread, v);
  g_mutex_lock(&v->lock);
  while (!v->started)
    g_cond_wait(&v->cond, &v->lock);
  g_mutex_unlock(&v->lock);
  return v;
}

static gboolean val_quit(gpointer loop) {
  g_main_loop_quit(loop);
  return G_SOURCE_REMOVE;
}

static void val_server_stop(ValServer *v) {
  if (v->thread == NULL)
    return;
  g_main_context_invoke(v->ctx, val_quit, v->loop);
  g_thread_join(v->thread);
  v->thread = NULL;
}

static void val_server_free(ValServer *v) {
  val_server_stop(v);
  g_main_loop_unref(v->loop);
  g_main_context_unref(v->ctx);
  g_bytes_unref(v->body);
  g_free(v->version);
  g_free(v->url);
  g_mutex_clear(&v->lock);
  g_cond_clear(&v->cond);
  g_free(v);
}

static void val_set(ValServer *v, GBytes *body, const char *version, gboolean gone) {
  g_mutex_lock(&v->lock);
  if (body) {
    g_bytes_unref(v->body);
    v->body = g_bytes_ref(body);
  }
  if (version) {
    g_free(v->version);
    v->version = g_strdup(version);
  }
  v->gone = gone;
  g_mutex_unlock(&v->lock);
}

static void val_counts(ValServer *v, guint full, guint not_modified) {
  g_mutex_lock(&v->lock);
  guint a = v->full, b = v->not_modified;
  g_mutex_unlock(&v->lock);
  g_assert_cmpuint(a, ==, full);
  g_assert_cmpuint(b, ==, not_modified);
}

/* Without a sha256, a cached http(s) image is revalidated at every fetch: a 304 keeps it, a new body
 * replaces it (the old one stays while in use), an unreachable server keeps it, a 404 fails. */
static void test_revalidate(Fixture *f, gconstpointer data) {
  g_autofree char *other_dir = g_build_filename(f->root, "other", NULL);
  g_assert_cmpint(g_mkdir_with_parents(other_dir, 0755), ==, 0);
  g_autoptr(GBytes) other = make_image(other_dir, 4096);
  ValServer *v = val_server_new(f->image);
  oakuk_image_cache *c = new_cache(f, NULL);
  const char *modes[] = {"etag", "lm"};
  for (int m = 0; m < 2; m++) {
    val_set(v, f->image, "1", FALSE);
    g_mutex_lock(&v->lock);
    v->full = v->not_modified = 0;
    g_mutex_unlock(&v->lock);
    g_autofree char *url = g_strdup_printf("%s/%s/image.tar.gz", v->url, modes[m]);
    oakuk_error *err = NULL;
    oakuk_image *one = oakuk_image_cache_fetch_sync(c, url, NULL, NULL, NULL, &err);
    g_assert_null(err);
    g_assert_cmpstr(oakuk_image_sha256(one), ==, f->image_sha);
    val_counts(v, 1, 0);
    oakuk_image *same = oakuk_image_cache_fetch_sync(c, url, NULL, NULL, NULL, &err);
    g_assert_null(err);
    g_assert_cmpstr(oakuk_image_dir(same), ==, oakuk_image_dir(one));
    val_counts(v, 1, 1);
    oakuk_image_unref(same);
    val_set(v, other, "2", FALSE);
    oakuk_image *changed = oakuk_image_cache_fetch_sync(c, url, NULL, NULL, NULL, &err);
    g_assert_null(err);
    val_counts(v, 2, 1);
    g_assert_cmpstr(oakuk_image_dir(changed), !=, oakuk_image_dir(one));
    g_assert_true(g_file_test(oakuk_image_kernel(one), G_FILE_TEST_IS_REGULAR)); /* still in use */
    /* Gone (404): refused, not served from the cache. */
    val_set(v, NULL, NULL, TRUE);
    g_assert_null(oakuk_image_cache_fetch_sync(c, url, NULL, NULL, NULL, &err));
    g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_ENOTFOUND);
    g_clear_pointer(&err, oakuk_error_free);
    val_set(v, NULL, NULL, FALSE);
    oakuk_image_unref(changed);
    oakuk_image_unref(one);
  }
  /* The server down: the last image is kept. */
  g_autofree char *url = g_strdup_printf("%s/etag/image.tar.gz", v->url);
  val_server_stop(v);
  oakuk_error *err = NULL;
  oakuk_image *kept = oakuk_image_cache_fetch_sync(c, url, NULL, NULL, NULL, &err);
  g_assert_null(err);
  g_autofree char *other_sha = g_compute_checksum_for_bytes(G_CHECKSUM_SHA256, other);
  g_assert_cmpstr(oakuk_image_sha256(kept), ==, other_sha);
  oakuk_image_unref(kept);
  oakuk_image_cache_unref(c);
  val_server_free(v);
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
  ADD("/image/http/stall-timeout", test_stall_timeout);
  ADD("/image/http/total-deadline", test_total_deadline);
  ADD("/image/http/connect-timeout", test_connect_timeout);
  ADD("/image/cancel/prompt", test_cancel);
  ADD("/image/cancel/shared-download", test_cancel_shared);
  ADD("/image/file/fifo", test_file_fifo);
  ADD("/image/guests", test_guests);
  ADD("/image/http/revalidate", test_revalidate);
  return g_test_run();
}

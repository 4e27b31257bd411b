#include "sysutil-private.h"

#include "oakuk-private.h"

#include <gio/gio.h>
#include <libsoup/soup.h>

#include <errno.h>
#include <glib-unix.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static gboolean remove_failed(GError **error, const char *path) {
  int errnum = errno;
  g_set_error(error, OAKUK_ERROR, -OAKUK_EIO, "remove %s: %s", path, g_strerror(errnum));
  return FALSE;
}

gboolean oakuk_rm_rf(const char *path, GError **error) {
  struct stat st;
  if (lstat(path, &st) != 0)
    return errno == ENOENT ? TRUE : remove_failed(error, path);
  if (S_ISDIR(st.st_mode)) {
    /* Removes as much as it can (cleanup paths rely on that) and reports the first failure. */
    gboolean ok = TRUE;
    g_autoptr(GDir) d = g_dir_open(path, 0, NULL);
    const char *e;
    while (d != NULL && (e = g_dir_read_name(d)) != NULL) {
      g_autofree char *child = g_build_filename(path, e, NULL);
      ok = oakuk_rm_rf(child, ok ? error : NULL) && ok;
    }
    if (rmdir(path) != 0)
      return ok ? remove_failed(error, path) : FALSE;
    return ok;
  } else if (unlink(path) != 0) {
    return remove_failed(error, path);
  }
  return TRUE;
}

gboolean oakuk_cgroup_v2(void) {
  return g_file_test("/sys/fs/cgroup/cgroup.controllers", G_FILE_TEST_EXISTS);
}

char *oakuk_cgroup_v1_mount(const char *controller) {
  g_autofree char *text = NULL;
  if (!g_file_get_contents("/proc/self/mountinfo", &text, NULL, NULL))
    return NULL;
  g_auto(GStrv) lines = g_strsplit(text, "\n", -1);
  for (char **l = lines; *l; l++) {
    const char *sep = strstr(*l, " - ");
    if (!sep)
      continue;
    g_auto(GStrv) pre = g_strsplit(*l, " ", 6);
    g_auto(GStrv) post = g_strsplit(sep + 3, " ", 3);
    if (g_strv_length(pre) < 5 || g_strv_length(post) < 3 || strcmp(post[0], "cgroup") != 0)
      continue;
    g_auto(GStrv) opts = g_strsplit(post[2], ",", -1);
    if (g_strv_contains((const char *const *)opts, controller))
      return g_strdup(pre[4]);
  }
  return NULL;
}

gboolean oakuk_proc_stat(GPid pid, char *state, guint64 *ticks, guint64 *start_time) {
  g_autofree char *path = g_strdup_printf("/proc/%d/stat", (int)pid);
  g_autofree char *text = NULL;
  if (!g_file_get_contents(path, &text, NULL, NULL))
    return FALSE;
  /* The command name may contain spaces and parentheses: fields start after the last ')'. */
  const char *p = strrchr(text, ')');
  if (!p || p[1] == '\0')
    return FALSE;
  g_auto(GStrv) f = g_strsplit(p + 2, " ", -1);
  if (g_strv_length(f) < 20)
    return FALSE;
  if (state)
    *state = f[0][0];
  if (ticks)
    *ticks = g_ascii_strtoull(f[11], NULL, 10) + g_ascii_strtoull(f[12], NULL, 10);
  if (start_time)
    *start_time = g_ascii_strtoull(f[19], NULL, 10);
  return TRUE;
}

typedef struct {
  OakukProcWatch *w;
  OakukExitFunc fn;
  gpointer data;
  GDestroyNotify destroy;
} Watcher;

static void watcher_free(gpointer p) {
  Watcher *x = p;
  if (x->destroy)
    x->destroy(x->data);
  g_free(x);
}

static Watcher *watcher_new(OakukProcWatch *w, OakukExitFunc fn, gpointer data, GDestroyNotify destroy) {
  Watcher *x = g_new0(Watcher, 1);
  *x = (Watcher){w, fn, data, destroy};
  return x;
}

static void attach(OakukProcWatch *w, GSource *source, GSourceFunc cb, Watcher *x, GMainContext *ctx) {
  w->source = source;
  g_source_set_callback(source, cb, x, watcher_free);
  g_source_attach(source, ctx);
}

/* The source is finishing: drop our reference (destroying it from its own callback is wrong). */
static void finish(Watcher *x, int wait_status) {
  g_clear_pointer(&x->w->source, g_source_unref);
  x->fn(wait_status, x->data);
}

/* An exited process that happens to be our child still needs reaping. */
static int reap(GPid pid) {
  int ws;
  return waitpid(pid, &ws, WNOHANG) == pid ? ws : -1;
}

static void on_child(GPid pid, gint wait_status, gpointer p) {
  g_spawn_close_pid(pid);
  finish(p, wait_status);
}

static gboolean on_pidfd(gint fd, GIOCondition cond, gpointer p) {
  Watcher *x = p;
  finish(x, reap(x->w->pid));
  return G_SOURCE_REMOVE;
}

static gboolean on_poll(gpointer p) {
  Watcher *x = p;
  guint64 start = 0;
  char state = 0;
  if (oakuk_proc_stat(x->w->pid, &state, NULL, &start) && start == x->w->start_time && state != 'Z')
    return G_SOURCE_CONTINUE;
  finish(x, reap(x->w->pid));
  return G_SOURCE_REMOVE;
}

void oakuk_proc_watch_child(OakukProcWatch *w, GPid pid, GMainContext *ctx, OakukExitFunc fn, gpointer data,
                            GDestroyNotify destroy) {
  oakuk_proc_watch_clear(w);
  w->pid = pid;
  w->child = TRUE;
  attach(w, g_child_watch_source_new(pid), G_SOURCE_FUNC(on_child), watcher_new(w, fn, data, destroy), ctx);
}

void oakuk_proc_watch_adopted(OakukProcWatch *w, GPid pid, guint64 start_time, GMainContext *ctx,
                              OakukExitFunc fn, gpointer data, GDestroyNotify destroy) {
  oakuk_proc_watch_clear(w);
  w->pid = pid;
  w->start_time = start_time;
  Watcher *x = watcher_new(w, fn, data, destroy);
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd >= 0) {
    w->pidfd = fd;
    attach(w, g_unix_fd_source_new(fd, G_IO_IN), G_SOURCE_FUNC(on_pidfd), x, ctx);
  } else {
    attach(w, g_timeout_source_new(100), on_poll, x, ctx);
  }
}

gboolean oakuk_proc_watch_active(const OakukProcWatch *w) {
  return w->source != NULL;
}

void oakuk_proc_watch_clear(OakukProcWatch *w) {
  if (w->source) {
    g_source_destroy(w->source);
    g_clear_pointer(&w->source, g_source_unref);
  }
  if (w->pidfd >= 0) {
    close(w->pidfd);
    w->pidfd = -1;
  }
  w->child = FALSE;
}

void oakuk_proc_kill_wait(GPid pid, gboolean own_child) {
  kill(pid, SIGKILL);
  if (own_child)
    waitpid(pid, NULL, 0);
  else
    for (int k = 0; k < 200 && kill(pid, 0) == 0; k++)
      g_usleep(10000);
}

int oakuk_adopt_dir(const char *dir, GHashTable *known, gboolean (*adopt)(gpointer impl, const char *name),
                    gpointer impl, GError **error) {
  g_autoptr(GDir) d = g_dir_open(dir, 0, error);
  if (!d)
    return -1;
  int n = 0;
  const char *e;
  while ((e = g_dir_read_name(d)))
    if (!g_hash_table_contains(known, e) && adopt(impl, e))
      n++;
  return n;
}

static const char *env_either(const char *lower, const char *upper) {
  const char *v = g_getenv(lower);
  return v && *v ? v : (g_getenv(upper) && *g_getenv(upper) ? g_getenv(upper) : NULL);
}

void oakuk_session_use_env_proxy(gpointer soup_session) {
  const char *http = env_either("http_proxy", "HTTP_PROXY");
  const char *https = env_either("https_proxy", "HTTPS_PROXY");
  if (http == NULL && https == NULL) {
    soup_session_set_proxy_resolver(soup_session, NULL);
    return;
  }
  const char *no = env_either("no_proxy", "NO_PROXY");
  g_auto(GStrv) ignore = no ? g_strsplit(no, ",", -1) : NULL;
  for (char **p = ignore; p && *p; p++)
    g_strstrip(*p);
  g_autoptr(GProxyResolver) r = g_simple_proxy_resolver_new(NULL, ignore);
  if (http)
    g_simple_proxy_resolver_set_uri_proxy(G_SIMPLE_PROXY_RESOLVER(r), "http", http);
  if (https)
    g_simple_proxy_resolver_set_uri_proxy(G_SIMPLE_PROXY_RESOLVER(r), "https", https);
  soup_session_set_proxy_resolver(soup_session, r);
}

/* Readiness of RUNNING instances (include/oakuk/runtime.h): a TCP connect to the instance's IP and
 * guest port, from the runtime's own network namespace (the node's bridge is on the instance's
 * subnet: the path service traffic takes), and/or a text on the console. For a Unikraft guest with
 * a network, the console also shows whether lwIP configured the address the runtime gave it. */
#include "runtime-private.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* Between probes: a unikernel is often ready within a few hundred ms of RUNNING (Unikraft under
 * TCG: 0.1-0.5 s), so the first seconds are probed closely; a slow one is not probed for long so. */
#define PROBE_FASTEST_MS 10
#define PROBE_FAST_MS 50
#define PROBE_SLOW_MS 500
#define PROBE_FAST_AFTER_US (2 * G_USEC_PER_SEC)
#define PROBE_SLOW_AFTER_US (30 * G_USEC_PER_SEC)
#define CONNECT_TIMEOUT_S 1
#define CONSOLE_CHUNK 16384
#define LINE_MAX_BYTES 4096
/* lwIP prints the address it set before Unikraft's banner; this long after the banner without it,
 * the guest has not configured its address. Without a banner, this long after RUNNING. */
#define ADDR_AFTER_BANNER_US (2 * G_USEC_PER_SEC)
#define ADDR_WITHOUT_BANNER_US (10 * G_USEC_PER_SEC)

struct OakukProbe {
  OakukInstance *i; /* not a reference: the probe lives inside the instance */
  gboolean stopped;
  GSource *timer;
  gint64 started_us;
  /* tcp */
  GSocketClient *client;
  GCancellable *cancel;
  gboolean connecting, tcp_ok;
  /* console */
  int fd;
  oakuk_console *cleaner;
  GString *line;
  gboolean serial_ok;
  /* Unikraft address */
  gint64 banner_us;
  gboolean addr_seen, warned;
};

static gboolean tcp_wanted(const OakukInstance *i) {
  return i->ready_port > 0 && i->ready_ip;
}

static gboolean ready_done(const struct OakukProbe *p) {
  const OakukInstance *i = p->i;
  return (!tcp_wanted(i) || p->tcp_ok) && (!i->ready_text || p->serial_ok);
}

/* The address is watched for only while the instance is not ready: an instance that answers has
 * its address (musl-linked Unikraft images never show lwIP's line: their stdout is buffered). */
static gboolean addr_pending(const struct OakukProbe *p) {
  return p->i->uk_address && !p->addr_seen && !p->i->ready;
}

static void probe_free(struct OakukProbe *p) {
  if (p->fd >= 0)
    close(p->fd);
  if (p->cleaner)
    oakuk_console_free(p->cleaner);
  if (p->line)
    g_string_free(p->line, TRUE);
  g_clear_object(&p->client);
  g_clear_object(&p->cancel);
  g_free(p);
}

void oakuk_probe_stop(OakukInstance *i) {
  struct OakukProbe *p = i->probe;
  if (!p)
    return;
  i->probe = NULL;
  p->stopped = TRUE;
  if (p->timer) {
    g_source_destroy(p->timer);
    g_source_unref(p->timer);
    p->timer = NULL;
  }
  g_cancellable_cancel(p->cancel);
  if (!p->connecting)
    probe_free(p); /* else the connect callback frees it */
}

/* "Telesto 0.16.3~e453b74a": the codename and version Unikraft prints under its logo. */
static gboolean is_banner(const char *line) {
  return g_regex_match_simple("^\\s*[A-Z][a-z]+ [0-9]+\\.[0-9]+\\.[0-9]+(~\\S*)?\\s*$", line, 0, 0);
}

static void on_line(struct OakukProbe *p, const char *line) {
  OakukInstance *i = p->i;
  if (!i->uk_address)
    return;
  if (!p->banner_us && is_banner(line))
    p->banner_us = g_get_monotonic_time();
  /* lwIP: "en1: Set IPv4 address 10.18.0.5 mask 255.255.255.0 gw 10.18.0.1" */
  const char *set = strstr(line, "Set IPv4 address ");
  if (set) {
    set += strlen("Set IPv4 address ");
    size_t n = strlen(i->uk_address);
    if (strncmp(set, i->uk_address, n) == 0 && (set[n] == ' ' || set[n] == '\0')) {
      p->addr_seen = TRUE;
      if (p->warned)
        oakuk_instance_note(i, NULL);
    }
  }
}

/* Reads what the console gained since the last look. */
static void read_console(struct OakukProbe *p) {
  OakukInstance *i = p->i;
  if (p->fd < 0) {
    g_autofree char *path = oakuk_instance_console_path(i);
    if ((p->fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
      return;
  }
  char buf[CONSOLE_CHUNK];
  ssize_t n;
  while ((n = read(p->fd, buf, sizeof buf)) > 0) {
    char *text = oakuk_console_feed(p->cleaner, buf, (size_t)n);
    for (const char *c = text; c && *c; c++) {
      if (*c != '\n') {
        if (p->line->len < LINE_MAX_BYTES)
          g_string_append_c(p->line, *c);
        continue;
      }
      on_line(p, p->line->str);
      if (i->ready_text && strstr(p->line->str, i->ready_text))
        p->serial_ok = TRUE;
      g_string_truncate(p->line, 0);
    }
    oakuk_free(text);
  }
  /* A ready line may come without its newline yet (a prompt). */
  if (i->ready_text && strstr(p->line->str, i->ready_text))
    p->serial_ok = TRUE;
}

static void check_address(struct OakukProbe *p) {
  OakukInstance *i = p->i;
  if (!addr_pending(p) || p->warned)
    return;
  gint64 now = g_get_monotonic_time();
  gboolean late =
      p->banner_us ? now - p->banner_us > ADDR_AFTER_BANNER_US : now - p->started_us > ADDR_WITHOUT_BANNER_US;
  if (!late)
    return;
  p->warned = TRUE;
  g_autofree char *d =
      g_strdup_printf("guest did not configure %s (wrong netdev parameters for Unikraft%s%s?)", i->uk_address,
                      i->uk_version ? " " : "", i->uk_version ? i->uk_version : "");
  g_debug("instance %s: %s", i->name, d);
  oakuk_instance_note(i, d);
}

static void schedule(struct OakukProbe *p);

static void connected(GObject *src, GAsyncResult *res, gpointer data) {
  struct OakukProbe *p = data;
  g_autoptr(GError) err = NULL;
  g_autoptr(GSocketConnection) conn = g_socket_client_connect_finish(G_SOCKET_CLIENT(src), res, &err);
  p->connecting = FALSE;
  if (p->stopped) {
    probe_free(p);
    return;
  }
  if (conn) {
    p->tcp_ok = TRUE;
    g_io_stream_close(G_IO_STREAM(conn), NULL, NULL);
  }
}

static void start_connect(struct OakukProbe *p) {
  OakukInstance *i = p->i;
  g_autoptr(GInetAddress) a = g_inet_address_new_from_string(i->ready_ip);
  if (!a)
    return;
  g_autoptr(GSocketAddress) sa = g_inet_socket_address_new(a, (guint16)i->ready_port);
  p->connecting = TRUE;
  g_socket_client_connect_async(p->client, G_SOCKET_CONNECTABLE(sa), p->cancel, connected, p);
}

static gboolean tick(gpointer data) {
  struct OakukProbe *p = data;
  OakukInstance *i = p->i;
  g_source_unref(p->timer);
  p->timer = NULL;
  if (i->ready_text || i->uk_address)
    read_console(p);
  check_address(p);
  if (!i->ready && ready_done(p))
    oakuk_instance_ready(i);
  if (i->ready) {
    oakuk_probe_stop(i);
    return G_SOURCE_REMOVE;
  }
  if (!i->ready && tcp_wanted(i) && !p->tcp_ok && !p->connecting)
    start_connect(p);
  schedule(p);
  return G_SOURCE_REMOVE;
}

static void schedule(struct OakukProbe *p) {
  gint64 age = g_get_monotonic_time() - p->started_us;
  p->timer = g_timeout_source_new(age > PROBE_SLOW_AFTER_US   ? PROBE_SLOW_MS
                                  : age > PROBE_FAST_AFTER_US ? PROBE_FAST_MS
                                                              : PROBE_FASTEST_MS);
  g_source_set_callback(p->timer, tick, p, NULL);
  g_source_attach(p->timer, p->i->context);
}

void oakuk_probe_final(OakukInstance *i) {
  struct OakukProbe *p = i->probe;
  if (!p || i->ready)
    return;
  if (i->ready_text)
    read_console(p);
  if (ready_done(p))
    oakuk_instance_ready(i);
}

void oakuk_probe_start(OakukInstance *i) {
  oakuk_probe_stop(i);
  if (!tcp_wanted(i) && !i->ready_text) {
    oakuk_instance_ready(i); /* nothing to wait for (nor an address to watch: see addr_pending) */
    return;
  }
  struct OakukProbe *p = g_new0(struct OakukProbe, 1);
  p->i = i;
  p->fd = -1;
  p->started_us = g_get_monotonic_time();
  p->cancel = g_cancellable_new();
  p->client = g_socket_client_new();
  g_socket_client_set_timeout(p->client, CONNECT_TIMEOUT_S);
  /* A probe of an address on the node's own bridge never goes through a proxy (and GIO's proxy
   * lookup would load libproxy into the node for good). */
  g_socket_client_set_enable_proxy(p->client, FALSE);
  p->cleaner = oakuk_console_new();
  p->line = g_string_new(NULL);
  i->probe = p;
  if (tcp_wanted(i))
    start_connect(p);
  schedule(p);
}

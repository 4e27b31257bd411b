/* Login hashing on a pool of worker threads and the per-source limit of failed logins. The
 * workers run below the main loop's priority (nice 10): under a flood of logins the main loop,
 * which answers /healthz, aggregates and status reports, still gets the CPU when it needs it. */
#include "guard.h"

#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

typedef struct {
  gint64 fails[GUARD_FAILURES]; /* times of the failures within the window, oldest first */
  guint n;
  gint64 blocked_until;
  gint64 next_block_ms; /* 0: never blocked since its last success; else the next block's length */
  gint64 last_ms;
} Source;

struct Guard {
  GThreadPool *pool;
  GMainContext *context;
  guint in_flight;
  GHashTable *sources; /* address -> Source */
  guint sweep;
};

typedef struct {
  Guard *g;
  GuardWork work;
  GuardDone done;
  gpointer data;
} Job;

static GPrivate lowered = G_PRIVATE_INIT(NULL);

static gboolean job_done(gpointer data) {
  Job *j = data;
  j->g->in_flight--;
  j->done(j->data);
  g_free(j);
  return G_SOURCE_REMOVE;
}

static void worker(gpointer data, gpointer pool_data) {
  Job *j = data;
  if (g_private_get(&lowered) == NULL) {
    /* Linux: a thread's nice value is its own. */
    if (setpriority(PRIO_PROCESS, (id_t)gettid(), 10) != 0)
      od_log(G_LOG_LEVEL_DEBUG, "guard", "msg", "could not lower the worker's priority", NULL);
    g_private_set(&lowered, GINT_TO_POINTER(1));
  }
  j->work(j->data);
  /* A source, never g_main_context_invoke: that would run done on this thread whenever the main
   * context happens to be free (at shutdown). */
  GSource *src = g_idle_source_new();
  g_source_set_callback(src, job_done, j, NULL);
  g_source_attach(src, j->g->context);
  g_source_unref(src);
}

/* Forgets sources that are neither blocked nor remembered for a block or recent failures. */
static gboolean forgettable(const Source *s, gint64 now_ms) {
  if (now_ms < s->blocked_until)
    return FALSE;
  if (s->next_block_ms > 0)
    return now_ms - MAX(s->blocked_until, s->last_ms) > GUARD_FORGET_MS;
  return now_ms - s->last_ms > GUARD_WINDOW_MS;
}

static gboolean sweep(gpointer data) {
  Guard *g = data;
  gint64 now = root_now_ms();
  GHashTableIter it;
  gpointer value;
  g_hash_table_iter_init(&it, g->sources);
  while (g_hash_table_iter_next(&it, NULL, &value))
    if (forgettable(value, now))
      g_hash_table_iter_remove(&it);
  return G_SOURCE_CONTINUE;
}

Guard *guard_new(void) {
  Guard *g = g_new0(Guard, 1);
  g->pool = g_thread_pool_new(worker, g, GUARD_THREADS, FALSE, NULL);
  g->context = g_main_context_ref_thread_default();
  g->sources = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  g->sweep = g_timeout_add_seconds(60, sweep, g);
  return g;
}

void guard_free(Guard *g) {
  if (g == NULL)
    return;
  /* Waits for the hashes under way; queued ones are dropped with their requests (shutdown). */
  g_thread_pool_free(g->pool, TRUE, TRUE);
  g_source_remove(g->sweep);
  g_hash_table_unref(g->sources);
  g_main_context_unref(g->context);
  g_free(g);
}

gboolean guard_run(Guard *g, GuardWork work, GuardDone done, gpointer data) {
  if (g->in_flight >= GUARD_THREADS + GUARD_QUEUE)
    return FALSE;
  Job *j = g_new0(Job, 1);
  j->g = g;
  j->work = work;
  j->done = done;
  j->data = data;
  g->in_flight++;
  g_thread_pool_push(g->pool, j, NULL);
  return TRUE;
}

/* What is counted: an IPv4 address, or the /64 of an IPv6 address (one host usually has all of
 * it). */
static char *source_key(const char *address) {
  g_autoptr(GInetAddress) ia = address ? g_inet_address_new_from_string(address) : NULL;
  if (ia == NULL || g_inet_address_get_family(ia) != G_SOCKET_FAMILY_IPV6)
    return g_strdup(address ? address : "");
  guint8 bytes[16];
  memcpy(bytes, g_inet_address_to_bytes(ia), sizeof bytes);
  /* GLib shows IPv4 clients of a dual-stack socket as IPv4 already; should one come as ::ffff:a.b.c.d,
   * it must not share the /64 ::/64 with every other IPv4 client. */
  static const guint8 v4_mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (memcmp(bytes, v4_mapped, sizeof v4_mapped) == 0)
    return g_strdup_printf("%u.%u.%u.%u", bytes[12], bytes[13], bytes[14], bytes[15]);
  memset(bytes + 8, 0, 8);
  g_autoptr(GInetAddress) net = g_inet_address_new_from_bytes(bytes, G_SOCKET_FAMILY_IPV6);
  g_autofree char *text = g_inet_address_to_string(net);
  return g_strconcat(text, "/64", NULL);
}

/* The source's entry, forgotten first when it may be; NULL when unknown. */
static Source *lookup(Guard *g, const char *key, gint64 now_ms) {
  Source *s = g_hash_table_lookup(g->sources, key);
  if (s != NULL && forgettable(s, now_ms)) {
    g_hash_table_remove(g->sources, key);
    s = NULL;
  }
  return s;
}

gint64 guard_blocked_ms(Guard *g, const char *source, gint64 now_ms) {
  g_autofree char *key = source_key(source);
  Source *s = lookup(g, key, now_ms);
  return s != NULL && now_ms < s->blocked_until ? s->blocked_until - now_ms : 0;
}

gint64 guard_failure(Guard *g, const char *source, gint64 now_ms) {
  g_autofree char *key = source_key(source);
  Source *s = lookup(g, key, now_ms);
  if (s == NULL) {
    if (g_hash_table_size(g->sources) >= GUARD_MAX_SOURCES)
      sweep(g);
    if (g_hash_table_size(g->sources) >= GUARD_MAX_SOURCES)
      return 0;
    s = g_new0(Source, 1);
    g_hash_table_insert(g->sources, g_strdup(key), s);
  }
  s->last_ms = now_ms;
  /* An attempt let in before the block began that fails now does not lengthen it. */
  if (now_ms < s->blocked_until)
    return 0;
  if (s->next_block_ms == 0) {
    guint keep = 0;
    for (guint k = 0; k < s->n; k++)
      if (now_ms - s->fails[k] < GUARD_WINDOW_MS)
        s->fails[keep++] = s->fails[k];
    s->n = keep;
    s->fails[s->n++] = now_ms;
    if (s->n < GUARD_FAILURES)
      return 0;
  }
  gint64 block = s->next_block_ms ? s->next_block_ms : GUARD_BLOCK_MS;
  s->blocked_until = now_ms + block;
  s->next_block_ms = MIN(block * 2, GUARD_BLOCK_MAX_MS);
  s->n = 0;
  return block;
}

void guard_success(Guard *g, const char *source) {
  g_autofree char *key = source_key(source);
  g_hash_table_remove(g->sources, key);
}

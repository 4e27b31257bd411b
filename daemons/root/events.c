/* Live views for the dashboard (docs/api.md "Events"): GET /api/v1/events answers a stream of
 * server-sent events, one per topic (applications, services with their instances, clusters with
 * their nodes) whenever what the user may see of it changed, each the whole list as the list
 * endpoints answer it. Nothing polls the store per client: a tick looks at SQLite's change
 * counter (every row written counts) and rebuilds the topics only when it moved, or every 2 s for
 * what the root keeps in memory only (instance usage, cluster liveness, status details); a topic is
 * sent only when its text differs from the last one that stream got. */
#include "events.h"

#include "api.h"
#include "loop.h"
#include "store.h"
#include "views.h"

#include <string.h>

#define TICK_MS 250
#define FULL_EVERY_MS 2000
#define KEEPALIVE_MS 15000
#define MAX_STREAMS 32
#define MAX_STREAM_S 300

enum { TOPIC_APPLICATIONS, TOPIC_SERVICES, TOPIC_CLUSTERS, TOPICS };
static const char *const topic_names[TOPICS] = {"applications", "services", "clusters"};

typedef struct {
  Root *r;
  SoupServerMessage *msg;
  char *user;
  gboolean sees_all;
  char *role;         /* the user's role when the stream opened: a change ends it */
  char *sent[TOPICS]; /* the last text sent per topic */
  gint64 written_ms;  /* last write, for keep-alives */
  gint64 ends_ms;     /* a stream lives at most MAX_STREAM_S, or the token's time (docs/api.md) */
  gulong finished_id, disconnected_id;
} Stream;

static GPtrArray *streams; /* Stream*, owned */
static guint tick_source;
static gint64 seen_changes = -1, full_at_ms;

static void stream_free(gpointer data) {
  Stream *s = data;
  g_signal_handler_disconnect(s->msg, s->finished_id);
  g_signal_handler_disconnect(s->msg, s->disconnected_id);
  g_object_unref(s->msg);
  for (int t = 0; t < TOPICS; t++)
    g_free(s->sent[t]);
  g_free(s->user);
  g_free(s->role);
  g_free(s);
}

static void stream_gone(SoupServerMessage *msg, gpointer data) {
  g_ptr_array_remove(streams, data);
}

static void stream_write(Stream *s, const char *text) {
  SoupMessageBody *body = soup_server_message_get_response_body(s->msg);
  soup_message_body_append(body, SOUP_MEMORY_COPY, text, strlen(text));
  soup_server_message_unpause(s->msg);
  s->written_ms = g_get_monotonic_time() / 1000;
}

/* The text of a topic as this user sees it: the documents of the list endpoints (without the
 * usage histories, which only Oakestra's dashboard charts read). */
static char *topic_text(Root *r, int topic, const char *user, gboolean all) {
  g_autoptr(JsonArray) out = json_array_new();
  if (topic == TOPIC_APPLICATIONS) {
    g_autoptr(GPtrArray) apps =
        all ? store_applications_all(r->store) : store_applications_of_user(r->store, user);
    for (guint k = 0; k < apps->len; k++)
      json_array_add_object_element(out, view_application(apps->pdata[k]));
  } else if (topic == TOPIC_SERVICES) {
    g_autoptr(GPtrArray) svcs = all ? store_services_all(r->store) : store_services_of_user(r->store, user);
    for (guint k = 0; k < svcs->len; k++) {
      JsonObject *o = view_service(r, svcs->pdata[k], TRUE, FALSE);
      JsonArray *list = json_object_get_array_member(o, "instance_list");
      for (guint i = 0; list != NULL && i < json_array_get_length(list); i++) {
        JsonObject *in = json_array_get_object_element(list, i);
        json_object_remove_member(in, "cpu_history");
        json_object_remove_member(in, "memory_history");
      }
      json_array_add_object_element(out, o);
    }
  } else {
    g_autoptr(GPtrArray) all_clusters = store_clusters_all(r->store);
    for (guint k = 0; k < all_clusters->len; k++)
      json_array_add_object_element(out, view_cluster(r, all_clusters->pdata[k]));
  }
  g_autoptr(JsonNode) node = json_node_init_array(json_node_alloc(), out);
  return od_json_to_string(node, FALSE);
}

/* Sends every topic whose text changed for this stream; texts are built once per tick per view (a
 * user's own, or everyone's) and kept in cache. */
static void stream_update(Stream *s, GHashTable *cache) {
  for (int t = 0; t < TOPICS; t++) {
    g_autofree char *key = g_strdup_printf("%d/%s", t,
                                           t == TOPIC_CLUSTERS ? ""
                                           : s->sees_all       ? "*"
                                                               : s->user);
    const char *text = g_hash_table_lookup(cache, key);
    if (text == NULL) {
      text = topic_text(s->r, t, s->user, s->sees_all);
      g_hash_table_insert(cache, g_steal_pointer(&key), (gpointer)text);
    }
    if (g_strcmp0(text, s->sent[t]) == 0)
      continue;
    g_free(s->sent[t]);
    s->sent[t] = g_strdup(text);
    g_autofree char *event = g_strdup_printf("event: %s\ndata: %s\n\n", topic_names[t], text);
    stream_write(s, event);
  }
}

/* Ends a stream with an "end" event saying why; the client opens a new one (with a new token). */
static void stream_end(guint k, const char *reason) {
  Stream *s = streams->pdata[k];
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "reason", reason);
  g_autoptr(JsonNode) node = json_node_init_object(json_node_alloc(), o);
  g_autofree char *text = od_json_to_string(node, FALSE);
  g_autofree char *event = g_strdup_printf("event: end\ndata: %s\n\n", text);
  stream_write(s, event);
  soup_message_body_complete(soup_server_message_get_response_body(s->msg));
  soup_server_message_unpause(s->msg);
  g_ptr_array_remove_index(streams, k);
}

/* Why a stream's user may no longer have it (removed, or another role), or NULL. */
static const char *user_changed(Root *r, const Stream *s) {
  g_autoptr(StoreUser) u = store_user_get(r->store, s->user);
  if (u == NULL)
    return "the user no longer exists";
  return g_strcmp0(u->role, s->role) != 0 ? "the user's role changed: log in again" : NULL;
}

static gboolean tick(gpointer data) {
  Root *r = data;
  gint64 now = g_get_monotonic_time() / 1000;
  gint64 changes = store_changes(r->store);
  gboolean moved = changes != seen_changes;
  for (guint k = streams->len; k > 0; k--) {
    Stream *s = streams->pdata[k - 1];
    const char *why = moved ? user_changed(r, s) : NULL;
    if (why != NULL)
      stream_end(k - 1, why);
    else if (now >= s->ends_ms)
      stream_end(k - 1, "the stream's time is over (its token expires or 300 s passed): open a new one");
  }
  if (streams->len == 0) {
    tick_source = 0;
    return G_SOURCE_REMOVE;
  }
  if (moved || now >= full_at_ms) {
    seen_changes = changes;
    full_at_ms = now + FULL_EVERY_MS;
    g_autoptr(GHashTable) cache = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
    for (guint k = 0; k < streams->len; k++)
      stream_update(streams->pdata[k], cache);
  }
  for (guint k = 0; k < streams->len; k++) {
    Stream *s = streams->pdata[k];
    if (now - s->written_ms >= KEEPALIVE_MS)
      stream_write(s, ": keep-alive\n\n");
  }
  return G_SOURCE_CONTINUE;
}

void events_open(Root *r, SoupServerMessage *msg, const char *user, guint role, gboolean sees_all,
                 gint64 token_left_s) {
  if (streams == NULL)
    streams = g_ptr_array_new_with_free_func(stream_free);
  if (streams->len >= MAX_STREAMS) {
    soup_message_headers_replace(soup_server_message_get_response_headers(msg), "Retry-After", "5");
    od_http_reply_error(msg, SOUP_STATUS_SERVICE_UNAVAILABLE, "busy", "",
                        "%d event streams are open, the most this root serves", MAX_STREAMS);
    return;
  }
  SoupMessageHeaders *h = soup_server_message_get_response_headers(msg);
  soup_message_headers_set_encoding(h, SOUP_ENCODING_CHUNKED);
  soup_message_headers_replace(h, "Content-Type", "text/event-stream; charset=utf-8");
  soup_message_headers_replace(h, "Cache-Control", "no-store");
  soup_message_headers_replace(h, "X-Content-Type-Options", "nosniff");
  soup_message_body_set_accumulate(soup_server_message_get_response_body(msg), FALSE);
  soup_server_message_set_status(msg, SOUP_STATUS_OK, NULL);
  Stream *s = g_new0(Stream, 1);
  s->r = r;
  s->msg = g_object_ref(msg);
  s->user = g_strdup(user);
  s->sees_all = sees_all;
  s->role = g_strdup(api_role_name(role));
  gint64 now = g_get_monotonic_time() / 1000;
  s->ends_ms = now + 1000 * CLAMP(token_left_s, 1, MAX_STREAM_S);
  s->finished_id = g_signal_connect(msg, "finished", G_CALLBACK(stream_gone), s);
  s->disconnected_id = g_signal_connect(msg, "disconnected", G_CALLBACK(stream_gone), s);
  g_ptr_array_add(streams, s);
  /* What the stream starts with: every topic, then changes. */
  stream_write(s, "retry: 2000\n\n");
  g_autoptr(GHashTable) cache = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  stream_update(s, cache);
  if (tick_source == 0)
    tick_source = g_timeout_add(TICK_MS, tick, r);
}

guint events_count(void) {
  return streams ? streams->len : 0;
}

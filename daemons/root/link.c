/* Root -> cluster HTTP: the deploys and deletes the loop sends, and the requests the user API
 * passes on; over https only to a certificate the root's CA signed for the host dialled. Answers
 * become LinkResult outcomes; what to do about them is the loop's business. */
#include "link.h"

#include <string.h>

struct Link {
  SoupSession *session; /* trusts no CA by itself: each https message trusts only ca */
  GTlsCertificate *ca;
  GCancellable *cancel; /* cancelled by link_free: no callback runs after it */
};

typedef struct {
  GCancellable *link_cancel; /* a reference: the call may outlive the link by a main-loop turn */
  SoupMessage *msg;
  gboolean invalid_url;
  gboolean is_deploy;
  LinkDone done;
  LinkReplyDone reply_done;
  gpointer data;
  GCancellable *cancel; /* per call for time limits; chained to the link's */
  gulong chained;
  guint timer, timeout_s;
} Call;

Link *link_new(GTlsCertificate *ca) {
  Link *l = g_new0(Link, 1);
  l->session = od_tls_session_new();
  g_object_set(l->session, "timeout", 10, "idle-timeout", 30, "user-agent", "oakuk-root", NULL);
  l->ca = g_object_ref(ca);
  /* Control-plane peers are reached directly: no system proxy lookup (which also keeps GIO's proxy
   * modules and libproxy out of the daemon). */
  soup_session_set_proxy_resolver(l->session, NULL);
  l->cancel = g_cancellable_new();
  return l;
}

void link_free(Link *l) {
  if (l == NULL)
    return;
  g_cancellable_cancel(l->cancel);
  soup_session_abort(l->session);
  g_object_unref(l->session);
  g_object_unref(l->ca);
  g_object_unref(l->cancel);
  g_free(l);
}

static const char *str_member(JsonObject *o, const char *key) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  return n != NULL && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
             ? json_node_get_string(n)
             : NULL;
}

static void cancel_call(GCancellable *link_cancel, gpointer data) {
  g_cancellable_cancel(data);
}

static gboolean call_timeout(gpointer data) {
  Call *c = data;
  c->timer = 0;
  g_cancellable_cancel(c->cancel);
  return G_SOURCE_REMOVE;
}

static void call_free(Call *c) {
  if (c->timer != 0)
    g_source_remove(c->timer);
  if (c->chained != 0)
    g_cancellable_disconnect(c->link_cancel, c->chained);
  g_clear_object(&c->link_cancel);
  g_clear_object(&c->msg);
  g_clear_object(&c->cancel);
  g_free(c);
}

/* The cluster's {"error": {"message"}} or the first 200 bytes of the answer. */
static char *answer_text(JsonNode *body, GBytes *bytes) {
  JsonObject *o = body && JSON_NODE_HOLDS_OBJECT(body) ? json_node_get_object(body) : NULL;
  JsonNode *e = o ? json_object_get_member(o, "error") : NULL;
  const char *m = e && JSON_NODE_HOLDS_OBJECT(e) ? str_member(json_node_get_object(e), "message") : NULL;
  if (m != NULL)
    return g_strdup(m);
  gsize len = 0;
  const char *data = bytes ? g_bytes_get_data(bytes, &len) : NULL;
  return g_strndup(data ? data : "", MIN(len, 200));
}

/* Outcome of a deploy or delete answer (docs/reconcile.md "Messages"). */
static void classify(Call *c, LinkResult *res, JsonNode *body) {
  guint st = res->http_status;
  JsonObject *o = body && JSON_NODE_HOLDS_OBJECT(body) ? json_node_get_object(body) : NULL;
  if (SOUP_STATUS_IS_SUCCESSFUL(st)) {
    int32_t s = oakuk_instance_status_from_name(str_member(o, "status"));
    res->outcome = LINK_DONE;
    if (c->is_deploy && (s == OAKUK_STATUS_NO_QUALIFIED_WORKER || s == OAKUK_STATUS_NO_WORKER_CAPACITY)) {
      const char *d =
          str_member(o, "status_detail") ? str_member(o, "status_detail") : str_member(o, "detail");
      res->outcome = LINK_REFUSED;
      res->refusal = s;
      res->detail = d ? d : "";
    }
  } else if (st == SOUP_STATUS_NOT_FOUND && !c->is_deploy) {
    res->outcome = LINK_GONE;
  } else if (st == SOUP_STATUS_CONFLICT) {
    res->outcome = LINK_STALE;
  } else if (st >= 400 && st < 500 && st != 408 && st != 429) {
    res->outcome = LINK_REJECTED;
  } else {
    res->outcome = LINK_RETRY;
  }
}

static void call_finish(GObject *src, GAsyncResult *result, gpointer data) {
  Call *c = data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) bytes = soup_session_send_and_read_finish(SOUP_SESSION(src), result, &error);
  if (g_cancellable_is_cancelled(c->link_cancel)) {
    call_free(c); /* shutting down: whatever was pending is resumed on the next start */
    return;
  }
  guint status = error == NULL ? soup_message_get_status(c->msg) : 0;
  gsize len = 0;
  const char *text = bytes ? g_bytes_get_data(bytes, &len) : NULL;
  g_autoptr(JsonNode) body = len > 0 ? od_json_parse(text, (gssize)len, NULL) : NULL;
  g_autofree char *why = NULL;
  if (c->invalid_url)
    why = g_strdup("the cluster's URL is not valid");
  else if (error != NULL)
    why = g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED)
              ? g_strdup_printf("no answer within %u s", c->timeout_s)
              : g_strdup(error->message);
  if (c->reply_done != NULL) {
    c->reply_done(c->data, status, body, why);
  } else {
    g_autofree char *answer = error == NULL ? answer_text(body, bytes) : NULL;
    if (why == NULL)
      why = g_strdup_printf("HTTP %u%s%s", status, answer && *answer ? ": " : "", answer ? answer : "");
    LinkResult res = {.http_status = status, .why = why, .detail = ""};
    if (error != NULL)
      res.outcome = LINK_RETRY;
    else
      classify(c, &res, body);
    c->done(c->data, &res);
  }
  call_free(c);
}

static void call_start(Link *l, Call *c, const char *base, const char *token, const char *method,
                       const char *path, const char *body) {
  g_autofree char *trimmed = g_strdup(base ? base : "");
  while (g_str_has_suffix(trimmed, "/"))
    trimmed[strlen(trimmed) - 1] = '\0';
  g_autofree char *url = g_strconcat(trimmed, path, NULL);
  g_autoptr(GUri) uri = g_uri_parse(url, SOUP_HTTP_URI_FLAGS, NULL);
  c->link_cancel = g_object_ref(l->cancel);
  c->cancel = g_cancellable_new();
  c->chained = g_cancellable_connect(l->cancel, G_CALLBACK(cancel_call), c->cancel, NULL);
  c->msg = uri ? soup_message_new_from_uri(method, uri) : NULL;
  if (c->msg == NULL) {
    /* Answered like an unreachable cluster, later, as every other outcome. */
    c->msg = soup_message_new("GET", "http://invalid.invalid/");
    c->invalid_url = TRUE;
    g_cancellable_cancel(c->cancel);
  }
  if (!c->invalid_url && g_strcmp0(g_uri_get_scheme(uri), "https") == 0)
    od_tls_pin_message(c->msg, l->ca, NULL); /* the cluster's certificate is the one our CA signed */
  g_autofree char *auth = g_strconcat("Bearer ", token ? token : "", NULL);
  soup_message_headers_replace(soup_message_get_request_headers(c->msg), "Authorization", auth);
  if (body != NULL && *body != '\0') {
    g_autoptr(GBytes) b = g_bytes_new(body, strlen(body));
    soup_message_set_request_body_from_bytes(c->msg, "application/json", b);
  }
  if (c->timeout_s > 0)
    c->timer = g_timeout_add_seconds(c->timeout_s, call_timeout, c);
  soup_session_send_and_read_async(l->session, c->msg, G_PRIORITY_DEFAULT, c->cancel, call_finish, c);
}

void link_deploy(Link *l, const char *base, const char *token, const char *job_id, gint64 n, const char *job,
                 LinkDone done, gpointer data) {
  Call *c = g_new0(Call, 1);
  c->is_deploy = TRUE;
  c->done = done;
  c->data = data;
  g_autofree char *path = g_strdup_printf("/api/service/%s/%" G_GINT64_FORMAT, job_id, n);
  call_start(l, c, base, token, "POST", path, job);
}

void link_delete(Link *l, const char *base, const char *token, const char *job_id, gint64 n,
                 gint64 generation, LinkDone done, gpointer data) {
  Call *c = g_new0(Call, 1);
  c->done = done;
  c->data = data;
  g_autofree char *path =
      generation > 0 ? g_strdup_printf("/api/service/%s/%" G_GINT64_FORMAT "?generation=%" G_GINT64_FORMAT,
                                       job_id, n, generation)
                     : g_strdup_printf("/api/service/%s/%" G_GINT64_FORMAT, job_id, n);
  call_start(l, c, base, token, "DELETE", path, NULL);
}

void link_request(Link *l, const char *base, const char *token, const char *method, const char *path,
                  JsonNode *body, guint timeout_s, LinkReplyDone done, gpointer data) {
  Call *c = g_new0(Call, 1);
  c->reply_done = done;
  c->data = data;
  c->timeout_s = timeout_s;
  g_autofree char *text = body ? od_json_to_string(body, FALSE) : NULL;
  call_start(l, c, base, token, method, path, text);
}

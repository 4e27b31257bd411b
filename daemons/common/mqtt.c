/* An MQTT 3.1.1 client on GIO: the connection (TCP, or TLS through GIO's TLS backend, the same
 * GnuTLS the daemons' HTTPS uses), packets and timers all live on the GMainContext that created
 * the client; no thread of its own. What the daemons need and nothing more: one persistent session
 * (clean session off) with user name, password and a last will, QoS 1 subscriptions renewed on
 * every connect, QoS 1 publishes acknowledged to the caller, QoS 0 and 1 deliveries, keepalive,
 * and reconnection 1 s .. 8 s apart. */
#include "mqtt.h"
#include "daemon-common.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>

/* Larger packets from the broker end the connection (the cluster's broker bounds messages at
 * 1 MiB; node logs and net tables are well below). */
#define MAX_PACKET (8 * 1024 * 1024)
#define CONNECT_TIMEOUT_S 5

enum {
  CONNECT = 1,
  CONNACK = 2,
  PUBLISH = 3,
  PUBACK = 4,
  PUBREC = 5,
  PUBREL = 6,
  PUBCOMP = 7,
  SUBSCRIBE = 8,
  SUBACK = 9,
  PINGREQ = 12,
  PINGRESP = 13,
  DISCONNECT = 14
};

typedef struct {
  OdMqttDoneFunc done;
  gpointer done_data;
} Pending;

struct OdMqtt {
  gint refs;
  gboolean closed;    /* od_mqtt_free was called: no callback runs any more */
  gboolean connected; /* the broker accepted the session (CONNACK 0) */
  GMainContext *context;
  char *host, *client_id, *username, *password, *will_topic, *will_payload;
  char *ca_file; /* TLS: the only CA the broker's certificate may chain to; NULL: plain TCP */
  char **subscriptions;
  guint keepalive_s;
  guint16 port;
  OdMqttMessageFunc on_message;
  OdMqttStateFunc on_state;
  gpointer user_data;
  OdHistogram *durations; /* NULL without metrics_name */

  /* The current connection (all NULL/0 between connections). */
  GCancellable *cancel;
  GIOStream *stream;
  GSocket *sock; /* the stream's socket */
  GByteArray *in;
  guint8 buf[16384];
  GQueue out;      /* GBytes, the first one being written while writing */
  gsize out_bytes; /* their size */
  gboolean writing;
  GHashTable *inflight; /* packet id -> Pending: publishes waiting for their PUBACK */
  guint16 next_id;
  gboolean ping_outstanding;
  GSource *timer;  /* connect timeout, then keepalive */
  GSource *retry;  /* the next connection attempt */
  guint backoff_s; /* of the next retry: 1, 2, 4, 8 */
};

static OdMqtt *mqtt_ref(OdMqtt *m) {
  m->refs++;
  return m;
}

static void mqtt_unref(OdMqtt *m) {
  if (--m->refs > 0)
    return;
  g_main_context_unref(m->context);
  g_free(m->host);
  g_free(m->client_id);
  g_free(m->username);
  g_free(m->password);
  g_free(m->ca_file);
  g_free(m->will_topic);
  g_free(m->will_payload);
  g_strfreev(m->subscriptions);
  g_clear_pointer(&m->durations, od_histogram_free);
  g_free(m);
}

static GSource *add_timeout(OdMqtt *m, guint seconds, GSourceFunc fn) {
  GSource *s = g_timeout_source_new_seconds(seconds);
  g_source_set_callback(s, fn, m, NULL);
  g_source_attach(s, m->context);
  return s;
}

static void clear_source(GSource **s) {
  if (*s != NULL) {
    g_source_destroy(*s);
    g_source_unref(*s);
    *s = NULL;
  }
}

/* ---- encoding ---- */

static void put_u16(GByteArray *b, guint v) {
  guint8 x[2] = {(guint8)(v >> 8), (guint8)v};
  g_byte_array_append(b, x, 2);
}

static void put_str(GByteArray *b, const char *s, gsize len) {
  put_u16(b, (guint)len);
  g_byte_array_append(b, (const guint8 *)s, (guint)len);
}

/* The fixed header (type, flags, remaining length) in front of body. */
static GBytes *packet(guint8 first, GByteArray *body) {
  GByteArray *p = g_byte_array_sized_new(body->len + 5);
  g_byte_array_append(p, &first, 1);
  gsize n = body->len;
  do {
    guint8 d = n % 128;
    n /= 128;
    if (n > 0)
      d |= 0x80;
    g_byte_array_append(p, &d, 1);
  } while (n > 0);
  g_byte_array_append(p, body->data, body->len);
  return g_byte_array_free_to_bytes(p);
}

/* ---- the connection ---- */

static void start_write(OdMqtt *m);
static void lost(OdMqtt *m, const char *reason);
static void do_connect(OdMqtt *m);
static gboolean retry_connect(gpointer data);

static void send_packet(OdMqtt *m, guint8 first, GByteArray *body) {
  GBytes *b = packet(first, body);
  m->out_bytes += g_bytes_get_size(b);
  g_queue_push_tail(&m->out, b);
  start_write(m);
}

/* Drops the packet at the head of the queue (written, or the connection ended). */
static void out_pop(OdMqtt *m) {
  GBytes *b = g_queue_pop_head(&m->out);
  m->out_bytes -= g_bytes_get_size(b);
  g_bytes_unref(b);
}

static void written(GObject *source, GAsyncResult *res, gpointer data) {
  OdMqtt *m = data;
  g_autoptr(GError) error = NULL;
  gboolean ok = g_output_stream_write_all_finish(G_OUTPUT_STREAM(source), res, NULL, &error);
  if (!g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED) && m->stream != NULL &&
      G_OUTPUT_STREAM(source) == g_io_stream_get_output_stream(m->stream)) {
    m->writing = FALSE;
    out_pop(m);
    if (ok)
      start_write(m);
    else
      lost(m, error->message);
  }
  mqtt_unref(m);
}

static void start_write(OdMqtt *m) {
  if (m->writing || m->stream == NULL || g_queue_is_empty(&m->out))
    return;
  GBytes *b = g_queue_peek_head(&m->out);
  gsize len = 0;
  const void *data = g_bytes_get_data(b, &len);
  m->writing = TRUE;
  g_output_stream_write_all_async(g_io_stream_get_output_stream(m->stream), data, len, G_PRIORITY_DEFAULT,
                                  m->cancel, written, mqtt_ref(m));
}

static void fail_pending(OdMqtt *m, const char *reason) {
  if (m->inflight == NULL)
    return;
  GHashTable *was = g_steal_pointer(&m->inflight);
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, was);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    Pending *p = v;
    if (p->done && !m->closed)
      p->done(FALSE, reason, p->done_data);
  }
  g_hash_table_unref(was);
}

/* Ends the connection (or the attempt) and schedules the next one. */
static void lost(OdMqtt *m, const char *reason) {
  gboolean was_up = m->connected;
  m->connected = FALSE;
  m->writing = FALSE;
  m->ping_outstanding = FALSE;
  clear_source(&m->timer);
  if (m->cancel != NULL)
    g_cancellable_cancel(m->cancel);
  g_clear_object(&m->cancel);
  if (m->stream != NULL)
    g_io_stream_close_async(m->stream, G_PRIORITY_DEFAULT, NULL, NULL, NULL);
  g_clear_object(&m->stream);
  g_clear_object(&m->sock);
  g_clear_pointer(&m->in, g_byte_array_unref);
  g_queue_clear_full(&m->out, (GDestroyNotify)g_bytes_unref);
  m->out_bytes = 0;
  mqtt_ref(m);
  fail_pending(m, reason);
  if (m->closed) {
    mqtt_unref(m);
    return;
  }
  if (was_up) {
    if (m->on_state)
      m->on_state(FALSE, reason, m->user_data);
  } else {
    od_log(G_LOG_LEVEL_DEBUG, "mqtt", "msg", "connect failed, retrying", "reason", reason, NULL);
  }
  if (!m->closed && m->retry == NULL) {
    guint delay = was_up ? 1 : m->backoff_s;
    m->backoff_s = MIN(m->backoff_s * 2, 8);
    m->retry = add_timeout(m, delay, retry_connect);
  }
  mqtt_unref(m);
}

static gboolean retry_connect(gpointer data) {
  do_connect(data);
  return G_SOURCE_REMOVE;
}

static gboolean keepalive(gpointer data) {
  OdMqtt *m = data;
  if (m->ping_outstanding) {
    lost(m, "the broker did not answer the keepalive ping");
    return G_SOURCE_REMOVE;
  }
  m->ping_outstanding = TRUE;
  g_autoptr(GByteArray) body = g_byte_array_new();
  send_packet(m, PINGREQ << 4, body);
  return G_SOURCE_CONTINUE;
}

static void subscribe_all(OdMqtt *m) {
  if (m->subscriptions == NULL || m->subscriptions[0] == NULL)
    return;
  g_autoptr(GByteArray) body = g_byte_array_new();
  put_u16(body, 1); /* the one SUBSCRIBE of a connection; its SUBACK is not waited for */
  for (char **s = m->subscriptions; *s; s++) {
    put_str(body, *s, strlen(*s));
    guint8 qos = 1;
    g_byte_array_append(body, &qos, 1);
  }
  send_packet(m, (SUBSCRIBE << 4) | 0x2, body);
}

static const char *connack_reason(guint8 rc) {
  switch (rc) {
  case 1: return "the broker refused the protocol version";
  case 2: return "the broker refused the client id";
  case 3: return "the broker is unavailable";
  case 4: return "the broker refused the user name or password";
  case 5: return "not authorized by the broker";
  default: return "the broker refused the connection";
  }
}

/* The topic's last segment names the message's kind (job, information, deploy...); anything else
 * than lower-case letters and '_' counts as "other", so that no peer can add label values. */
static void observe(OdMqtt *m, const char *topic, gint64 arrived_us) {
  if (m->durations == NULL)
    return;
  const char *kind = strrchr(topic, '/') ? strrchr(topic, '/') + 1 : topic;
  gboolean plain = *kind != '\0' && strlen(kind) <= 32;
  for (const char *p = kind; *p && plain; p++)
    plain = g_ascii_islower(*p) || *p == '_';
  g_autofree char *labels = g_strdup_printf("topic=\"%s\"", plain ? kind : "other");
  od_histogram_observe(m->durations, labels, (double)(g_get_monotonic_time() - arrived_us) / G_USEC_PER_SEC);
}

/* One packet from the broker. FALSE (with the reason) ends the connection. */
static gboolean handle(OdMqtt *m, guint8 first, const guint8 *p, gsize len, gint64 arrived_us,
                       const char **reason) {
  guint type = first >> 4;
  switch (type) {
  case CONNACK:
    if (m->connected || len < 2) {
      *reason = "unexpected CONNACK";
      return FALSE;
    }
    if (p[1] != 0) {
      *reason = connack_reason(p[1]);
      return FALSE;
    }
    m->connected = TRUE;
    m->backoff_s = 1;
    clear_source(&m->timer);
    m->timer = add_timeout(m, m->keepalive_s, keepalive);
    subscribe_all(m);
    if (m->on_state)
      m->on_state(TRUE, NULL, m->user_data);
    return TRUE;
  case PUBLISH: {
    guint qos = (first >> 1) & 3;
    if (!m->connected || qos > 1 || len < 2) {
      *reason = qos > 1 ? "a QoS 2 delivery, never subscribed to" : "malformed PUBLISH";
      return FALSE;
    }
    gsize tlen = ((gsize)p[0] << 8) | p[1];
    gsize off = 2 + tlen + (qos ? 2 : 0);
    if (off > len || tlen == 0 || memchr(p + 2, '\0', tlen) != NULL) {
      *reason = "malformed PUBLISH";
      return FALSE;
    }
    g_autofree char *topic = g_strndup((const char *)p + 2, tlen);
    g_autoptr(GBytes) payload = g_bytes_new(p + off, len - off);
    guint id = qos ? ((guint)p[2 + tlen] << 8) | p[3 + tlen] : 0;
    m->on_message(topic, payload, m->user_data);
    observe(m, topic, arrived_us);
    if (qos == 1 && !m->closed && m->stream != NULL) {
      g_autoptr(GByteArray) body = g_byte_array_new();
      put_u16(body, id);
      send_packet(m, PUBACK << 4, body);
    }
    return TRUE;
  }
  case PUBACK: {
    if (len < 2) {
      *reason = "malformed PUBACK";
      return FALSE;
    }
    guint id = ((guint)p[0] << 8) | p[1];
    Pending *pend = m->inflight ? g_hash_table_lookup(m->inflight, GUINT_TO_POINTER(id)) : NULL;
    if (pend != NULL) {
      g_hash_table_steal(m->inflight, GUINT_TO_POINTER(id));
      if (pend->done)
        pend->done(TRUE, NULL, pend->done_data);
      g_free(pend);
    }
    return TRUE;
  }
  case SUBACK: {
    /* One return code per filter of our one SUBSCRIBE; a broker sending more names no filter. */
    guint n = m->subscriptions ? g_strv_length(m->subscriptions) : 0;
    for (gsize i = 2; i < len; i++)
      if (p[i] == 0x80)
        od_log(G_LOG_LEVEL_WARNING, "mqtt", "topic", i - 2 < n ? m->subscriptions[i - 2] : "?", "msg",
               "the broker refused a subscription", NULL);
    return TRUE;
  }
  case PINGRESP: m->ping_outstanding = FALSE; return TRUE;
  default: *reason = "unexpected packet from the broker"; return FALSE;
  }
}

/* Handles the complete packets at the front of m->in and drops them from it. FALSE when a
 * handler freed the client or ended the connection (nothing more to do here); TRUE otherwise, with
 * reason set when a packet must end the connection. */
static gboolean take_packets(OdMqtt *m, gint64 now, const char **reason) {
  GIOStream *stream = m->stream;
  gsize used = 0;
  while (*reason == NULL) {
    const guint8 *d = m->in->data + used;
    gsize avail = m->in->len - used, rem = 0, k = 1;
    guint mult = 1;
    gboolean complete = FALSE;
    for (; k < avail && k <= 4; k++) {
      rem += (gsize)(d[k] & 0x7f) * mult;
      mult *= 128;
      if (!(d[k] & 0x80)) {
        complete = TRUE;
        break;
      }
    }
    if (!complete) {
      if (k > 4)
        *reason = "malformed packet length";
      break;
    }
    if (rem > MAX_PACKET) {
      *reason = "a packet over 8 MiB from the broker";
      break;
    }
    if (avail < k + 1 + rem)
      break;
    if (!handle(m, d[0], d + k + 1, rem, now, reason))
      break;
    if (m->closed || m->stream != stream || m->in == NULL)
      return FALSE;
    used += k + 1 + rem;
  }
  if (*reason == NULL)
    g_byte_array_remove_range(m->in, 0, (guint)used);
  return TRUE;
}

static void start_read(OdMqtt *m);

static void on_read(GObject *source, GAsyncResult *res, gpointer data) {
  OdMqtt *m = data;
  g_autoptr(GError) error = NULL;
  gssize n = g_input_stream_read_finish(G_INPUT_STREAM(source), res, &error);
  if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED) || m->stream == NULL ||
      G_INPUT_STREAM(source) != g_io_stream_get_input_stream(m->stream)) {
    mqtt_unref(m);
    return;
  }
  if (n <= 0) {
    lost(m, n == 0 ? "the broker closed the connection" : error->message);
    mqtt_unref(m);
    return;
  }
  g_byte_array_append(m->in, m->buf, (guint)n);
  const char *reason = NULL;
  if (take_packets(m, g_get_monotonic_time(), &reason)) {
    if (reason != NULL)
      lost(m, reason);
    else
      start_read(m);
  }
  mqtt_unref(m);
}

static void start_read(OdMqtt *m) {
  g_input_stream_read_async(g_io_stream_get_input_stream(m->stream), m->buf, sizeof m->buf,
                            G_PRIORITY_DEFAULT, m->cancel, on_read, mqtt_ref(m));
}

static gboolean connect_timed_out(gpointer data) {
  OdMqtt *m = data;
  g_source_unref(m->timer);
  m->timer = NULL;
  lost(m, "no answer from the broker within 5 s");
  return G_SOURCE_REMOVE;
}

/* TCP (and TLS) are up: CONNECT, then the broker's CONNACK. */
static void session_start(OdMqtt *m, GIOStream *stream) {
  m->stream = stream;
  m->in = g_byte_array_new();
  m->inflight = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
  g_autoptr(GByteArray) body = g_byte_array_new();
  put_str(body, "MQTT", 4);
  guint8 level = 4; /* 3.1.1 */
  guint8 flags = 0; /* clean session off: the broker keeps the session and its subscriptions */
  if (m->will_topic)
    flags |= 0x04 | (1 << 3); /* will, QoS 1, not retained */
  if (m->username)
    flags |= 0x80;
  if (m->password)
    flags |= 0x40;
  g_byte_array_append(body, &level, 1);
  g_byte_array_append(body, &flags, 1);
  put_u16(body, m->keepalive_s);
  put_str(body, m->client_id, strlen(m->client_id));
  if (m->will_topic) {
    put_str(body, m->will_topic, strlen(m->will_topic));
    put_str(body, m->will_payload, strlen(m->will_payload));
  }
  if (m->username)
    put_str(body, m->username, strlen(m->username));
  if (m->password)
    put_str(body, m->password, strlen(m->password));
  send_packet(m, CONNECT << 4, body);
  start_read(m);
}

static void on_handshake(GObject *source, GAsyncResult *res, gpointer data) {
  OdMqtt *m = data;
  g_autoptr(GError) error = NULL;
  gboolean ok = g_tls_connection_handshake_finish(G_TLS_CONNECTION(source), res, &error);
  if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED) || m->closed) {
    g_object_unref(source);
    mqtt_unref(m);
    return;
  }
  if (!ok) {
    g_object_unref(source);
    g_autofree char *reason = g_strdup_printf("TLS: %s", error->message);
    lost(m, reason);
  } else {
    session_start(m, G_IO_STREAM(source));
  }
  mqtt_unref(m);
}

static void on_tcp(GObject *source, GAsyncResult *res, gpointer data) {
  OdMqtt *m = data;
  g_autoptr(GError) error = NULL;
  GSocketConnection *conn = g_socket_client_connect_to_host_finish(G_SOCKET_CLIENT(source), res, &error);
  if (g_error_matches(error, G_IO_ERROR, G_IO_ERROR_CANCELLED) || m->closed) {
    g_clear_object(&conn);
    mqtt_unref(m);
    return;
  }
  if (conn == NULL) {
    lost(m, error->message);
    mqtt_unref(m);
    return;
  }
  GSocket *sock = g_socket_connection_get_socket(conn);
  m->sock = g_object_ref(sock);
  /* Each packet goes out at once: without it, a publish that follows a packet the broker has not
   * acknowledged yet waits for the broker's delayed ACK, 40 ms. */
  g_socket_set_option(sock, IPPROTO_TCP, TCP_NODELAY, 1, NULL);
  if (m->ca_file == NULL) {
    session_start(m, G_IO_STREAM(conn));
    mqtt_unref(m);
    return;
  }
  /* Our CA only, never the system's, and the certificate must name the host we dial. */
  od_tls_no_system_trust();
  g_autoptr(GTlsDatabase) db = g_tls_file_database_new(m->ca_file, &error);
  g_autoptr(GSocketConnectable) id = db ? g_network_address_new(m->host, m->port) : NULL;
  GIOStream *tls =
      db ? g_initable_new(g_tls_backend_get_client_connection_type(g_tls_backend_get_default()), NULL, &error,
                          "base-io-stream", conn, "server-identity", id, "database", db, NULL)
         : NULL;
  g_object_unref(conn);
  if (tls == NULL) {
    g_autofree char *reason = g_strdup_printf("TLS: %s", error->message);
    lost(m, reason);
    mqtt_unref(m);
    return;
  }
  g_tls_connection_handshake_async(G_TLS_CONNECTION(tls), G_PRIORITY_DEFAULT, m->cancel, on_handshake,
                                   mqtt_ref(m));
  mqtt_unref(m);
}

static void do_connect(OdMqtt *m) {
  clear_source(&m->retry);
  if (m->closed || m->cancel != NULL)
    return;
  m->cancel = g_cancellable_new();
  m->timer = add_timeout(m, CONNECT_TIMEOUT_S, connect_timed_out);
  g_autoptr(GSocketClient) client = g_socket_client_new();
  g_socket_client_set_enable_proxy(client, FALSE); /* the broker is reached directly, as in tls.c */
  g_autofree char *hostport = strchr(m->host, ':') ? g_strdup_printf("[%s]:%u", m->host, m->port)
                                                   : g_strdup_printf("%s:%u", m->host, m->port);
  g_socket_client_connect_to_host_async(client, hostport, m->port, m->cancel, on_tcp, mqtt_ref(m));
}

/* ---- API ---- */

static void fuzz_message(const char *topic, GBytes *payload, gpointer user_data) {
  g_assert(topic != NULL && *topic != '\0' && payload != NULL);
}

OdMqtt *od_mqtt_new(const OdMqttOptions *opts, OdMqttMessageFunc on_message, OdMqttStateFunc on_state,
                    gpointer user_data, GError **error) {
  g_return_val_if_fail(opts != NULL && opts->host != NULL && opts->client_id != NULL && on_message != NULL,
                       NULL);
  if (*opts->client_id == '\0' || strlen(opts->client_id) > 65535 || *opts->host == '\0') {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "mqtt client for %s:%u: %s", opts->host, opts->port,
                *opts->host ? "the client id must be 1 to 65535 bytes" : "no broker host");
    return NULL;
  }
  OdMqtt *m = g_new0(OdMqtt, 1);
  m->refs = 1;
  m->context = g_main_context_ref_thread_default();
  m->host = g_strdup(opts->host);
  m->client_id = g_strdup(opts->client_id);
  m->username = g_strdup(opts->username);
  m->password = g_strdup(opts->password);
  m->ca_file = g_strdup(opts->ca_file);
  m->will_topic = g_strdup(opts->will_topic);
  m->will_payload = g_strdup(opts->will_payload ? opts->will_payload : "");
  m->subscriptions = g_strdupv((char **)opts->subscriptions);
  m->keepalive_s = opts->keepalive_s ? opts->keepalive_s : 10;
  m->port = opts->port;
  m->on_message = on_message;
  m->on_state = on_state;
  m->user_data = user_data;
  m->backoff_s = 1;
  g_queue_init(&m->out);
  if (opts->metrics_name != NULL)
    m->durations =
        od_histogram_new(opts->metrics_name,
                         "Time from an MQTT message's arrival to the end of its handling (the wait "
                         "for the main loop included), by topic",
                         od_http_duration_bounds, od_http_duration_bounds_len);
  return m;
}

void od_mqtt_start(OdMqtt *m) {
  do_connect(m);
}

gboolean od_mqtt_is_connected(OdMqtt *m) {
  return m->connected;
}

gsize od_mqtt_queued_bytes(OdMqtt *m) {
  return m->out_bytes;
}

gboolean od_mqtt_publish(OdMqtt *m, const char *topic, const void *payload, gsize len, gboolean retain,
                         OdMqttDoneFunc done, gpointer done_data, GError **error) {
  if (!m->connected) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "publish %s: not connected to the broker", topic);
    return FALSE;
  }
  gsize tlen = strlen(topic);
  if (tlen == 0 || tlen > 65535 || len > MAX_PACKET) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "publish %s: %s", topic,
                len > MAX_PACKET ? "the payload is over 8 MiB" : "the topic must be 1 to 65535 bytes");
    return FALSE;
  }
  /* Packet ids 1..65535, skipping those still waiting for their PUBACK. */
  guint id = 0;
  for (guint tries = 0; tries < 65535 && id == 0; tries++) {
    m->next_id = m->next_id == 65535 ? 1 : m->next_id + 1;
    if (!g_hash_table_contains(m->inflight, GUINT_TO_POINTER(m->next_id)))
      id = m->next_id;
  }
  if (id == 0) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "publish %s: 65535 publishes wait for the broker", topic);
    return FALSE;
  }
  g_autoptr(GByteArray) body = g_byte_array_sized_new((guint)(tlen + len + 4));
  put_str(body, topic, tlen);
  put_u16(body, id);
  g_byte_array_append(body, payload, (guint)len);
  Pending *p = g_new0(Pending, 1);
  p->done = done;
  p->done_data = done_data;
  g_hash_table_insert(m->inflight, GUINT_TO_POINTER(id), p);
  send_packet(m, (PUBLISH << 4) | (1 << 1) | (retain ? 1 : 0), body);
  return TRUE;
}

void od_mqtt_write_metrics(OdMqtt *m, GString *out) {
  if (m != NULL && m->durations != NULL)
    od_histogram_write(m->durations, out);
}

void od_mqtt_free(OdMqtt *m) {
  if (m == NULL)
    return;
  m->closed = TRUE;
  clear_source(&m->retry);
  /* A clean DISCONNECT (the broker then drops the last will) when nothing else is being written;
   * at most 1 s. */
  if (m->connected && m->stream != NULL && !m->writing && g_queue_is_empty(&m->out)) {
    static const guint8 disconnect[2] = {DISCONNECT << 4, 0};
    /* Blocking, bounded by the socket's timeout; nothing else writes (the read in flight is
     * cancelled below). */
    g_socket_set_timeout(m->sock, 1);
    g_output_stream_write_all(g_io_stream_get_output_stream(m->stream), disconnect, sizeof disconnect, NULL,
                              NULL, NULL);
  }
  lost(m, "closed");
  mqtt_unref(m);
}

/* The fuzz harness (tests/fuzz/fuzz-mqtt.c): what a broker sends, in pieces of the sizes given,
 * to a client that believes it is connecting; no socket. */
void od_mqtt_feed_for_fuzzing(const guint8 *data, gsize len, const gsize *cuts, gsize n_cuts) {
  static const char *const subs[] = {"nodes/+/job", "t/#", NULL};
  OdMqttOptions o = {.host = "fuzz",
                     .port = 1883,
                     .client_id = "fuzz",
                     .subscriptions = subs,
                     .metrics_name = "oakuk_fuzz_mqtt_seconds"};
  OdMqtt *m = od_mqtt_new(&o, fuzz_message, NULL, NULL, NULL);
  m->in = g_byte_array_new();
  m->inflight = g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, g_free);
  gsize off = 0;
  for (gsize c = 0; c <= n_cuts && off < len && m->in != NULL; c++) {
    gsize piece = c < n_cuts ? MIN(cuts[c], len - off) : len - off;
    g_byte_array_append(m->in, data + off, (guint)piece);
    off += piece;
    const char *reason = NULL;
    if (!take_packets(m, g_get_monotonic_time(), &reason) || reason != NULL)
      break;
  }
  if (m->connected) {
    g_autoptr(GError) error = NULL;
    od_mqtt_publish(m, "t/x", "y", 1, FALSE, NULL, NULL, &error);
  }
  od_mqtt_free(m);
}

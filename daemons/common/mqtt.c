/* paho.mqtt.c (async API) bound to a GMainContext. Every paho callback copies what it was given
 * into an Event and hands it to the owner's context; user callbacks only ever run there. */
#include "mqtt.h"
#include "daemon-common.h"

#include <MQTTAsync.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct OdMqtt {
  gint refs;
  gint closed;    /* atomic: set by od_mqtt_free; queued events are then dropped */
  gint connected; /* atomic */
  MQTTAsync client;
  GMainContext *context;
  char *username, *password, *will_topic, *will_payload;
  char *ca_file; /* TLS: the only CA the broker's certificate may chain to; NULL: plain TCP */
  char **subscriptions;
  guint keepalive_s;
  guint16 port; /* the broker's */
  OdMqttMessageFunc on_message;
  OdMqttStateFunc on_state;
  gpointer user_data;
  guint retry_source;
  OdHistogram *durations; /* NULL without metrics_name; used on the main context only */
};

typedef enum { EV_MESSAGE, EV_UP, EV_DOWN, EV_CONNECT_FAILED, EV_PUBLISHED } EventKind;

typedef struct {
  OdMqtt *m;
  EventKind kind;
  char *topic;
  GBytes *payload;
  gboolean ok;
  char *reason;
  OdMqttDoneFunc done;
  gpointer done_data;
  gint64 arrived_us; /* EV_MESSAGE: monotonic time paho handed it over */
} Event;

typedef struct {
  OdMqtt *m;
  OdMqttDoneFunc done;
  gpointer done_data;
} PubCtx;

static OdMqtt *mqtt_ref(OdMqtt *m) {
  g_atomic_int_inc(&m->refs);
  return m;
}

static void mqtt_unref(OdMqtt *m) {
  if (!g_atomic_int_dec_and_test(&m->refs))
    return;
  g_main_context_unref(m->context);
  g_free(m->username);
  g_free(m->password);
  g_free(m->ca_file);
  g_free(m->will_topic);
  g_free(m->will_payload);
  g_strfreev(m->subscriptions);
  g_clear_pointer(&m->durations, od_histogram_free);
  g_free(m);
}

static void event_free(gpointer data) {
  Event *e = data;
  g_free(e->topic);
  g_clear_pointer(&e->payload, g_bytes_unref);
  g_free(e->reason);
  mqtt_unref(e->m);
  g_free(e);
}

static void do_connect(OdMqtt *m);

static gboolean retry_connect(gpointer data) {
  OdMqtt *m = data;
  m->retry_source = 0;
  if (!g_atomic_int_get(&m->closed))
    do_connect(m);
  return G_SOURCE_REMOVE;
}

static void subscribe_all(OdMqtt *m) {
  int n = m->subscriptions ? (int)g_strv_length(m->subscriptions) : 0;
  if (n == 0)
    return;
  g_autofree int *qos = g_new(int, n);
  for (int i = 0; i < n; i++)
    qos[i] = 1;
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  int rc = MQTTAsync_subscribeMany(m->client, n, m->subscriptions, qos, &ro);
  if (rc != MQTTASYNC_SUCCESS)
    od_log(G_LOG_LEVEL_WARNING, "mqtt", "msg", "subscribe failed", "code", MQTTAsync_strerror(rc), NULL);
}

/* The topic's last segment names the message's kind (job, information, deploy...); anything else
 * than lower-case letters and '_' counts as "other", so that no peer can add label values. */
static void observe(OdMqtt *m, const Event *e) {
  if (m->durations == NULL)
    return;
  const char *kind = strrchr(e->topic, '/') ? strrchr(e->topic, '/') + 1 : e->topic;
  gboolean plain = *kind != '\0' && strlen(kind) <= 32;
  for (const char *p = kind; *p && plain; p++)
    plain = g_ascii_islower(*p) || *p == '_';
  g_autofree char *labels = g_strdup_printf("topic=\"%s\"", plain ? kind : "other");
  od_histogram_observe(m->durations, labels,
                       (double)(g_get_monotonic_time() - e->arrived_us) / G_USEC_PER_SEC);
}

/* Runs on the owner's context. */
static gboolean dispatch(gpointer data) {
  Event *e = data;
  OdMqtt *m = e->m;
  if (g_atomic_int_get(&m->closed))
    return G_SOURCE_REMOVE;
  switch (e->kind) {
  case EV_MESSAGE:
    m->on_message(e->topic, e->payload, m->user_data);
    observe(m, e);
    break;
  case EV_UP:
    subscribe_all(m);
    if (m->on_state)
      m->on_state(TRUE, NULL, m->user_data);
    break;
  case EV_DOWN:
    if (m->on_state)
      m->on_state(FALSE, e->reason, m->user_data);
    break;
  case EV_CONNECT_FAILED:
    od_log(G_LOG_LEVEL_DEBUG, "mqtt", "msg", "connect failed, retrying", "reason", e->reason, NULL);
    if (m->retry_source == 0)
      m->retry_source = g_timeout_add_seconds(1, retry_connect, m);
    break;
  case EV_PUBLISHED:
    if (e->done)
      e->done(e->ok, e->reason, e->done_data);
    break;
  }
  return G_SOURCE_REMOVE;
}

/* Called on paho's threads. */
static void post(OdMqtt *m, Event *e) {
  e->m = mqtt_ref(m);
  g_main_context_invoke_full(m->context, G_PRIORITY_DEFAULT, dispatch, e, event_free);
}

static int on_arrived(void *context, char *topic, int topic_len, MQTTAsync_message *message) {
  OdMqtt *m = context;
  Event *e = g_new0(Event, 1);
  e->kind = EV_MESSAGE;
  e->arrived_us = g_get_monotonic_time();
  e->topic = topic_len > 0 ? g_strndup(topic, topic_len) : g_strdup(topic);
  e->payload = g_bytes_new(message->payload, message->payloadlen > 0 ? (gsize)message->payloadlen : 0);
  MQTTAsync_freeMessage(&message);
  MQTTAsync_free(topic);
  post(m, e);
  return 1;
}

static void on_lost(void *context, char *cause) {
  OdMqtt *m = context;
  g_atomic_int_set(&m->connected, 0);
  Event *e = g_new0(Event, 1);
  e->kind = EV_DOWN;
  e->reason = g_strdup(cause ? cause : "connection lost");
  post(m, e);
}

/* paho.mqtt.c neither sets TCP_NODELAY nor exposes its socket. Without it, a publish that follows
 * a packet the broker has not acknowledged yet (the PUBACK of a message just received, or a publish
 * right before) waits for the broker's delayed ACK: 40 ms on a hop, seen by bench/e2e-deploy as
 * deploy and first status each arriving 40 ms late. The client's socket is the TCP socket whose
 * peer is the broker's port; the daemons hold no other connection to that port. */
static void set_nodelay_towards(guint16 port) {
  GDir *dir = g_dir_open("/proc/self/fd", 0, NULL);
  if (dir == NULL)
    return;
  for (const char *name; (name = g_dir_read_name(dir)) != NULL;) {
    int fd = atoi(name), type = 0, one = 1;
    socklen_t tl = sizeof type;
    struct sockaddr_storage peer;
    socklen_t pl = sizeof peer;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) != 0 || type != SOCK_STREAM ||
        getpeername(fd, (struct sockaddr *)&peer, &pl) != 0)
      continue;
    guint16 p = peer.ss_family == AF_INET    ? ntohs(((struct sockaddr_in *)&peer)->sin_port)
                : peer.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&peer)->sin6_port)
                                             : 0;
    if (p == port)
      (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  g_dir_close(dir);
}

static void on_connected(void *context, char *cause) {
  OdMqtt *m = context;
  set_nodelay_towards(m->port);
  g_atomic_int_set(&m->connected, 1);
  Event *e = g_new0(Event, 1);
  e->kind = EV_UP;
  post(m, e);
}

static void on_connect_failure(void *context, MQTTAsync_failureData *response) {
  OdMqtt *m = context;
  Event *e = g_new0(Event, 1);
  e->kind = EV_CONNECT_FAILED;
  e->reason = g_strdup_printf("%s (code %d)", response && response->message ? response->message : "no answer",
                              response ? response->code : 0);
  post(m, e);
}

static void pub_result(PubCtx *pc, gboolean ok, const char *reason) {
  Event *e = g_new0(Event, 1);
  e->kind = EV_PUBLISHED;
  e->ok = ok;
  e->reason = g_strdup(reason);
  e->done = pc->done;
  e->done_data = pc->done_data;
  post(pc->m, e);
  mqtt_unref(pc->m);
  g_free(pc);
}

static void on_pub_success(void *context, MQTTAsync_successData *response) {
  pub_result(context, TRUE, NULL);
}

static void on_pub_failure(void *context, MQTTAsync_failureData *response) {
  pub_result(context, FALSE, response && response->message ? response->message : "publish failed");
}

static void do_connect(OdMqtt *m) {
  MQTTAsync_connectOptions co = MQTTAsync_connectOptions_initializer;
  MQTTAsync_willOptions will = MQTTAsync_willOptions_initializer;
  co.keepAliveInterval = (int)m->keepalive_s;
  co.cleansession = 0;
  co.automaticReconnect = 1;
  co.minRetryInterval = 1;
  co.maxRetryInterval = 8;
  co.connectTimeout = 5;
  co.username = m->username;
  co.password = m->password;
  MQTTAsync_SSLOptions ssl = MQTTAsync_SSLOptions_initializer;
  if (m->ca_file != NULL) {
    ssl.trustStore = m->ca_file;
    ssl.disableDefaultTrustStore = 1; /* our CA only, never the system's */
    ssl.enableServerCertAuth = 1;
    ssl.verify = 1; /* and the certificate must name the host we dial */
    ssl.sslVersion = MQTT_SSL_VERSION_TLS_1_2;
    co.ssl = &ssl;
  }
  if (m->will_topic != NULL) {
    will.topicName = m->will_topic;
    will.message = m->will_payload;
    will.qos = 1;
    will.retained = 0;
    co.will = &will;
  }
  co.onFailure = on_connect_failure;
  co.context = m;
  int rc = MQTTAsync_connect(m->client, &co);
  if (rc != MQTTASYNC_SUCCESS && m->retry_source == 0) {
    od_log(G_LOG_LEVEL_WARNING, "mqtt", "msg", "connect request refused, retrying", "code",
           MQTTAsync_strerror(rc), NULL);
    m->retry_source = g_timeout_add_seconds(1, retry_connect, m);
  }
}

OdMqtt *od_mqtt_new(const OdMqttOptions *opts, OdMqttMessageFunc on_message, OdMqttStateFunc on_state,
                    gpointer user_data, GError **error) {
  g_return_val_if_fail(opts != NULL && opts->host != NULL && opts->client_id != NULL && on_message != NULL,
                       NULL);
  OdMqtt *m = g_new0(OdMqtt, 1);
  m->refs = 1;
  m->context = g_main_context_ref_thread_default();
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
  if (opts->metrics_name != NULL)
    m->durations =
        od_histogram_new(opts->metrics_name,
                         "Time from an MQTT message's arrival to the end of its handling (the wait "
                         "for the main loop included), by topic",
                         od_http_duration_bounds, od_http_duration_bounds_len);
  const char *scheme = opts->ca_file ? "ssl" : "tcp";
  g_autofree char *uri = strchr(opts->host, ':')
                             ? g_strdup_printf("%s://[%s]:%u", scheme, opts->host, opts->port)
                             : g_strdup_printf("%s://%s:%u", scheme, opts->host, opts->port);
  MQTTAsync_createOptions cr = MQTTAsync_createOptions_initializer;
  cr.MQTTVersion = MQTTVERSION_3_1_1;
  int rc =
      MQTTAsync_createWithOptions(&m->client, uri, opts->client_id, MQTTCLIENT_PERSISTENCE_NONE, NULL, &cr);
  if (rc == MQTTASYNC_SUCCESS)
    rc = MQTTAsync_setCallbacks(m->client, m, on_lost, on_arrived, NULL);
  if (rc == MQTTASYNC_SUCCESS)
    rc = MQTTAsync_setConnected(m->client, m, on_connected);
  if (rc != MQTTASYNC_SUCCESS) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "mqtt client for %s (client id %s): %s", uri,
                opts->client_id, MQTTAsync_strerror(rc));
    if (m->client != NULL)
      MQTTAsync_destroy(&m->client);
    mqtt_unref(m);
    return NULL;
  }
  return m;
}

void od_mqtt_start(OdMqtt *m) {
  do_connect(m);
}

gboolean od_mqtt_is_connected(OdMqtt *m) {
  return g_atomic_int_get(&m->connected) != 0;
}

gboolean od_mqtt_publish(OdMqtt *m, const char *topic, const void *payload, gsize len, gboolean retain,
                         OdMqttDoneFunc done, gpointer done_data, GError **error) {
  if (!od_mqtt_is_connected(m)) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "publish %s: not connected to the broker", topic);
    return FALSE;
  }
  PubCtx *pc = g_new0(PubCtx, 1);
  pc->m = mqtt_ref(m);
  pc->done = done;
  pc->done_data = done_data;
  MQTTAsync_responseOptions ro = MQTTAsync_responseOptions_initializer;
  ro.onSuccess = on_pub_success;
  ro.onFailure = on_pub_failure;
  ro.context = pc;
  int rc = MQTTAsync_send(m->client, topic, (int)len, payload, 1, retain ? 1 : 0, &ro);
  if (rc != MQTTASYNC_SUCCESS) {
    mqtt_unref(pc->m);
    g_free(pc);
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "publish %s: %s", topic, MQTTAsync_strerror(rc));
    return FALSE;
  }
  return TRUE;
}

void od_mqtt_write_metrics(OdMqtt *m, GString *out) {
  if (m != NULL && m->durations != NULL)
    od_histogram_write(m->durations, out);
}

void od_mqtt_free(OdMqtt *m) {
  if (m == NULL)
    return;
  g_atomic_int_set(&m->closed, 1);
  g_clear_handle_id(&m->retry_source, g_source_remove);
  if (MQTTAsync_isConnected(m->client)) {
    MQTTAsync_disconnectOptions d = MQTTAsync_disconnectOptions_initializer;
    d.timeout = 1000;
    MQTTAsync_disconnect(m->client, &d);
    for (int i = 0; i < 20 && MQTTAsync_isConnected(m->client); i++)
      g_usleep(50 * 1000);
  }
  MQTTAsync_destroy(&m->client);
  mqtt_unref(m);
}

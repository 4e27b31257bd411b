/* MQTT glue shared by the daemons (oakuk-cluster, oakuk-node): an MQTT 3.1.1 client on GIO (TLS
 * through GIO's backend, the GnuTLS the daemons' HTTPS uses) whose connection, timers and callbacks
 * all live on the GMainContext that created it. Internal to the daemons; not part of liboakuk's ABI. */
#ifndef OAKUK_DAEMON_MQTT_H
#define OAKUK_DAEMON_MQTT_H

#include <glib.h>

G_BEGIN_DECLS

typedef struct OdMqtt OdMqtt;

/* A message arrived on a subscribed topic (payload is not NUL-terminated). */
typedef void (*OdMqttMessageFunc)(const char *topic, GBytes *payload, gpointer user_data);
/* The connection came up (connected TRUE; subscriptions are already requested) or went down
 * (connected FALSE, reason says why). Reconnection is automatic. */
typedef void (*OdMqttStateFunc)(gboolean connected, const char *reason, gpointer user_data);
/* Outcome of one publish: ok is TRUE once the broker acknowledged it (QoS 1 PUBACK). */
typedef void (*OdMqttDoneFunc)(gboolean ok, const char *reason, gpointer user_data);

typedef struct {
  const char *host;                 /* broker host name or address */
  guint16 port;                     /* broker port */
  const char *client_id;            /* stable id: the broker keeps the session (clean session off) */
  const char *username;             /* may be NULL */
  const char *password;             /* may be NULL */
  const char *will_topic;           /* last will (QoS 1, not retained); NULL for none */
  const char *will_payload;         /* last will payload ("" when NULL) */
  const char *const *subscriptions; /* NULL-terminated topic filters, QoS 1, renewed on every connect */
  guint keepalive_s;                /* 0: 10 s */
  const char *ca_file;      /* TLS against this CA (PEM file) with the host name checked; NULL: plain TCP */
  const char *metrics_name; /* histogram of message handling (od_mqtt_write_metrics); NULL: none */
} OdMqttOptions;

/* Creates the client; nothing is sent until od_mqtt_start. The callbacks run on the thread-default
 * main context of the caller. */
OdMqtt *od_mqtt_new(const OdMqttOptions *opts, OdMqttMessageFunc on_message, OdMqttStateFunc on_state,
                    gpointer user_data, GError **error);
/* Connects, and keeps reconnecting (1 s .. 8 s apart) until od_mqtt_free. */
void od_mqtt_start(OdMqtt *m);
gboolean od_mqtt_is_connected(OdMqtt *m);
/* Bytes of packets waiting to be written to the broker (publishers pace themselves with it). */
gsize od_mqtt_queued_bytes(OdMqtt *m);
/* Publishes with QoS 1. Fails at once (FALSE, error) when not connected; otherwise done (may be
 * NULL) is called on the main context with the broker's acknowledgement or the failure. */
gboolean od_mqtt_publish(OdMqtt *m, const char *topic, const void *payload, gsize len, gboolean retain,
                         OdMqttDoneFunc done, gpointer done_data, GError **error);
/* Appends the histogram named by metrics_name in Prometheus text: per topic (its last segment),
 * the time from a message's arrival (its last bytes read) to the end of its handler,
 * waiting for the loop included. Nothing without metrics_name. */
void od_mqtt_write_metrics(OdMqtt *m, GString *out);
/* Disconnects (waiting at most 1 s for in-flight messages) and frees. No callback runs after. */
void od_mqtt_free(OdMqtt *m);
/* tests/fuzz only: what a broker sends (data, cut into pieces of the sizes in cuts) to a client
 * that is connecting; no socket, nothing sent. */
void od_mqtt_feed_for_fuzzing(const guint8 *data, gsize len, const gsize *cuts, gsize n_cuts);

G_END_DECLS

#endif

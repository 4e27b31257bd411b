/* MQTT over TLS as the daemons speak it (daemons/common/mqtt.c, on GIO and GnuTLS) against a real
 * mosquitto configured as oakuk-cluster configures it: a TLS listener with a certificate from our
 * CA, a password file written with od_mosquitto_password_line, client ids bound to user names, and a
 * packet size limit. */
#include "daemon-common.h"
#include "mqtt.h"

#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#define MOSQUITTO "/usr/sbin/mosquitto"
#define MAX_PACKET 65536

typedef struct {
  char *dir;
  guint16 port;
  GPid broker;
  char *ca_path;
  char *other_ca_path;
} Fixture;

static char *write_file(Fixture *f, const char *name, const char *text) {
  char *path = g_build_filename(f->dir, name, NULL);
  g_assert_true(od_tls_write_secret(path, text, NULL));
  return path;
}

static gboolean port_free(guint16 port) {
  g_autoptr(GSocket) s =
      g_socket_new(G_SOCKET_FAMILY_IPV4, G_SOCKET_TYPE_STREAM, G_SOCKET_PROTOCOL_TCP, NULL);
  g_autoptr(GInetAddress) lo = g_inet_address_new_loopback(G_SOCKET_FAMILY_IPV4);
  g_autoptr(GSocketAddress) a = g_inet_socket_address_new(lo, port);
  return g_socket_bind(s, a, FALSE, NULL);
}

static gboolean broker_listening(Fixture *f) {
  g_autoptr(GSocketClient) c = g_socket_client_new();
  g_autoptr(GSocketConnection) conn = g_socket_client_connect_to_host(c, "127.0.0.1", f->port, NULL, NULL);
  return conn != NULL;
}

static void setup(Fixture *f, gconstpointer data) {
  f->dir = g_dir_make_tmp("oakuk-mqtt-tls-XXXXXX", NULL);
  g_autofree char *ca_key = od_tls_key_new(NULL);
  g_autofree char *ca = od_tls_ca_new(ca_key, "test CA", NULL);
  g_autofree char *other_key = od_tls_key_new(NULL);
  g_autofree char *other = od_tls_ca_new(other_key, "other CA", NULL);
  g_autofree char *key = od_tls_key_new(NULL);
  const char *sans[] = {"127.0.0.1", NULL};
  g_autofree char *cert = od_tls_issue(ca, ca_key, key, "broker", sans, 30, NULL);
  f->ca_path = write_file(f, "ca.crt", ca);
  f->other_ca_path = write_file(f, "other-ca.crt", other);
  g_autofree char *cert_path = write_file(f, "broker.crt", cert);
  g_autofree char *key_path = write_file(f, "broker.key", key);
  g_autofree char *alice = od_mosquitto_password_line("alice", "alice-secret");
  g_autofree char *bob = od_mosquitto_password_line("bob", "bob-secret");
  g_autofree char *passwd = g_strdup_printf("%s\n%s\n", alice, bob);
  g_autofree char *passwd_path = write_file(f, "passwd", passwd);
  g_autofree char *acl_path = write_file(f, "acl", "pattern readwrite t/%u/#\nuser alice\ntopic read t/#\n");
  for (int i = 0; i < 100 && f->port == 0; i++) {
    guint16 p = (guint16)g_random_int_range(20000, 30000);
    if (port_free(p))
      f->port = p;
  }
  g_autofree char *conf = g_strdup_printf(
      "per_listener_settings false\nallow_anonymous false\npassword_file %s\nacl_file %s\n"
      "max_packet_size %d\npersistence false\nuser root\n"
      "log_dest file %s/mosquitto.log\nlistener %u 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n"
      "tls_version tlsv1.2\nuse_username_as_clientid true\n",
      passwd_path, acl_path, MAX_PACKET, f->dir, f->port, f->ca_path, cert_path, key_path);
  g_autofree char *conf_path = write_file(f, "mosquitto.conf", conf);
  char *argv[] = {(char *)MOSQUITTO, (char *)"-c", conf_path, NULL};
  g_assert_true(g_spawn_async(
      NULL, argv, NULL, G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
      NULL, NULL, &f->broker, NULL));
  for (int i = 0; i < 100 && !broker_listening(f); i++)
    g_usleep(50000);
  g_assert_true(broker_listening(f));
}

static void teardown(Fixture *f, gconstpointer data) {
  kill(f->broker, SIGTERM);
  waitpid(f->broker, NULL, 0);
  g_spawn_close_pid(f->broker);
  char *argv[] = {(char *)"rm", (char *)"-rf", f->dir, NULL};
  g_spawn_sync(NULL, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL, NULL, NULL);
  g_free(f->dir);
  g_free(f->ca_path);
  g_free(f->other_ca_path);
}

typedef struct {
  OdMqtt *m;
  gboolean up;
  guint ups, downs;
  GPtrArray *got; /* "topic payload" */
} Client;

static void on_message(const char *topic, GBytes *payload, gpointer data) {
  Client *c = data;
  gsize n;
  const char *p = g_bytes_get_data(payload, &n);
  g_ptr_array_add(c->got, g_strdup_printf("%s %.*s", topic, (int)n, p));
}

static void on_state(gboolean connected, const char *reason, gpointer data) {
  Client *c = data;
  c->up = connected;
  if (connected)
    c->ups++;
  else
    c->downs++;
}

static Client *client_new(Fixture *f, const char *user, const char *password, const char *client_id,
                          const char *ca_file, const char *const *subs) {
  Client *c = g_new0(Client, 1);
  c->got = g_ptr_array_new_with_free_func(g_free);
  OdMqttOptions o = {.host = "127.0.0.1",
                     .port = f->port,
                     .client_id = client_id,
                     .username = user,
                     .password = password,
                     .subscriptions = subs,
                     .ca_file = ca_file};
  g_autoptr(GError) err = NULL;
  c->m = od_mqtt_new(&o, on_message, on_state, c, &err);
  g_assert_no_error(err);
  od_mqtt_start(c->m);
  return c;
}

static void client_free(Client *c) {
  od_mqtt_free(c->m);
  g_ptr_array_unref(c->got);
  g_free(c);
}

static gboolean wait_for(gboolean (*cond)(gpointer), gpointer data, guint ms) {
  gint64 end = g_get_monotonic_time() + (gint64)ms * 1000;
  while (!cond(data) && g_get_monotonic_time() < end)
    if (!g_main_context_iteration(NULL, FALSE))
      g_usleep(5000);
  return cond(data);
}

static gboolean is_up(gpointer data) {
  return ((Client *)data)->up;
}

static gboolean got_one(gpointer data) {
  return ((Client *)data)->got->len > 0;
}

static void spin(guint ms) {
  gint64 end = g_get_monotonic_time() + (gint64)ms * 1000;
  while (g_get_monotonic_time() < end)
    if (!g_main_context_iteration(NULL, FALSE))
      g_usleep(5000);
}

static void test_roundtrip(Fixture *f, gconstpointer data) {
  const char *subs[] = {"t/#", NULL};
  Client *alice = client_new(f, "alice", "alice-secret", "alice", f->ca_path, subs);
  Client *bob = client_new(f, "bob", "bob-secret", "bob", f->ca_path, NULL);
  g_assert_true(wait_for(is_up, alice, 10000));
  g_assert_true(wait_for(is_up, bob, 10000));
  spin(300); /* alice's subscription */
  g_autoptr(GError) err = NULL;
  g_assert_true(od_mqtt_publish(bob->m, "t/bob/x", "hello", 5, FALSE, NULL, NULL, &err));
  g_assert_true(wait_for(got_one, alice, 5000));
  g_assert_cmpstr(g_ptr_array_index(alice->got, 0), ==, "t/bob/x hello");
  client_free(alice);
  client_free(bob);
}

static void test_refused(Fixture *f, gconstpointer data) {
  /* A client trusting another CA refuses the broker; a wrong password is refused by the broker. */
  Client *other_ca = client_new(f, "alice", "alice-secret", "alice", f->other_ca_path, NULL);
  Client *wrong_pw = client_new(f, "alice", "nope", "alice", f->ca_path, NULL);
  /* A plaintext client gets no MQTT session from the TLS listener. */
  Client *plain = client_new(f, "alice", "alice-secret", "alice", NULL, NULL);
  spin(4000);
  g_assert_cmpuint(other_ca->ups, ==, 0);
  g_assert_cmpuint(wrong_pw->ups, ==, 0);
  g_assert_cmpuint(plain->ups, ==, 0);
  client_free(other_ca);
  client_free(wrong_pw);
  client_free(plain);
}

static void test_client_id_takeover(Fixture *f, gconstpointer data) {
  const char *subs[] = {"t/#", NULL};
  Client *alice = client_new(f, "alice", "alice-secret", "alice", f->ca_path, subs);
  g_assert_true(wait_for(is_up, alice, 10000));
  /* bob connects claiming alice's client id: the broker binds ids to user names, so he is "bob"
   * and alice keeps her connection (without the binding she would be knocked off each time). */
  Client *bob = client_new(f, "bob", "bob-secret", "alice", f->ca_path, NULL);
  g_assert_true(wait_for(is_up, bob, 10000));
  spin(2000);
  g_assert_true(alice->up);
  g_assert_cmpuint(alice->downs, ==, 0);
  g_assert_true(od_mqtt_publish(bob->m, "t/bob/y", "still here", 10, FALSE, NULL, NULL, NULL));
  g_assert_true(wait_for(got_one, alice, 5000));
  client_free(alice);
  client_free(bob);
}

static void test_packet_limit(Fixture *f, gconstpointer data) {
  Client *bob = client_new(f, "bob", "bob-secret", "bob", f->ca_path, NULL);
  g_assert_true(wait_for(is_up, bob, 10000));
  g_autofree char *big = g_malloc0(MAX_PACKET * 2);
  od_mqtt_publish(bob->m, "t/bob/big", big, MAX_PACKET * 2, FALSE, NULL, NULL, NULL);
  /* The broker drops a client that sends a packet over its limit. */
  spin(2000);
  g_assert_cmpuint(bob->downs, >=, 1);
  client_free(bob);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  if (!g_file_test(MOSQUITTO, G_FILE_TEST_IS_EXECUTABLE)) {
    g_printerr("mosquitto is required (scripts/install-deps.sh)\n");
    return 1;
  }
  g_test_add("/mqtt-tls/roundtrip", Fixture, NULL, setup, test_roundtrip, teardown);
  g_test_add("/mqtt-tls/refused", Fixture, NULL, setup, test_refused, teardown);
  g_test_add("/mqtt-tls/client-id-takeover", Fixture, NULL, setup, test_client_id_takeover, teardown);
  g_test_add("/mqtt-tls/packet-limit", Fixture, NULL, setup, test_packet_limit, teardown);
  return g_test_run();
}

/* The cluster's mosquitto: configuration in the state dir, spawned with an argv array, restarted
 * when it dies. With TLS (docs/security.md) its only listener serves the cluster's certificate; the
 * password file is written here (od_mosquitto_password_line: no password on any command line) and
 * picked up, with the certificate and the ACL, on SIGHUP. */
#include "cluster.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define MQTT_MAX_PACKET (1024 * 1024)

static char *broker_path(Cluster *c, const char *file) {
  return cluster_path(c, "mosquitto", file);
}

static gboolean write_file(const char *path, const char *text, GError **error) {
  g_autoptr(GError) local = NULL;
  if (!g_file_set_contents_full(path, text, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, &local)) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "broker file %s: %s", path, local->message);
    return FALSE;
  }
  return TRUE;
}

/* A node may touch only nodes/<its user name>/#; the cluster's user may touch every node's topics.
 * Client ids are the user names (use_username_as_clientid): no login can take over another's
 * session, the cluster's included. */
static gboolean write_config(Cluster *c, GError **error) {
  g_autofree char *dir = g_build_filename(c->state_dir, "mosquitto", NULL);
  if (!od_state_dir_prepare(dir, error))
    return FALSE;
  g_autofree char *acl = broker_path(c, "acl");
  g_autofree char *conf = broker_path(c, "mosquitto.conf");
  g_autofree char *log = broker_path(c, "mosquitto.log");
  g_autofree char *acl_text = g_strdup_printf(
      "user %s\ntopic readwrite nodes/#\n\npattern readwrite nodes/%%u/#\n", CLUSTER_MQTT_USER);
  GString *cf = g_string_new("# Written by oakuk-cluster on every start; edits are lost.\n");
  g_string_append(cf, "per_listener_settings false\n");
  g_string_append(cf, "allow_anonymous false\n");
  g_string_append_printf(cf, "password_file %s\n", c->password_file);
  g_string_append_printf(cf, "acl_file %s\n", acl);
  g_string_append_printf(cf, "max_packet_size %d\n", MQTT_MAX_PACKET);
  g_string_append_printf(cf, "persistence true\npersistence_location %s/\nautosave_interval 5\n", dir);
  g_string_append_printf(cf, "log_dest file %s\nlog_type error\nlog_type warning\nlog_type notice\n", log);
  g_string_append(cf, "max_queued_messages 10000\n");
  /* Small control messages must not wait for Nagle + delayed ACK (measured: ~40 ms per hop). */
  g_string_append(cf, "set_tcp_nodelay true\n");
  /* Run as root, mosquitto would switch to user "mosquitto", which cannot read a 0700 state dir. */
  if (geteuid() == 0)
    g_string_append(cf, "user root\n");
  /* Listener options after the listener line: before it, mosquitto would also open a default
   * plaintext listener on 1883. */
  g_string_append_printf(cf, "listener %u 0.0.0.0\n", c->mqtt_port);
  if (!c->insecure) {
    g_autofree char *ca = cluster_path(c, "pki", "ca.crt");
    g_autofree char *cert = cluster_path(c, "pki", "cluster.crt");
    g_autofree char *key = cluster_path(c, "pki", "cluster.key");
    g_string_append_printf(cf, "cafile %s\ncertfile %s\nkeyfile %s\ntls_version tlsv1.2\n", ca, cert, key);
  }
  g_string_append(cf, "use_username_as_clientid true\n");
  g_autofree char *cf_text = g_string_free(cf, FALSE);
  return write_file(acl, acl_text, error) && write_file(conf, cf_text, error);
}

/* Sets user's line of the password file (password NULL: removes it), keeping every other line. */
static gboolean passwd_edit(Cluster *c, const char *user, const char *password, GError **error) {
  g_autofree char *text = NULL;
  g_autoptr(GError) local = NULL;
  if (!g_file_get_contents(c->password_file, &text, NULL, &local) &&
      !g_error_matches(local, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "password file %s: %s", c->password_file, local->message);
    return FALSE;
  }
  g_autofree char *prefix = g_strconcat(user, ":", NULL);
  g_auto(GStrv) lines = g_strsplit(text ? text : "", "\n", -1);
  GString *out = g_string_new(NULL);
  for (char **l = lines; *l; l++)
    if (**l != '\0' && !g_str_has_prefix(*l, prefix))
      g_string_append_printf(out, "%s\n", *l);
  if (password != NULL) {
    g_autofree char *line = od_mosquitto_password_line(user, password);
    if (line == NULL) {
      g_string_free(out, TRUE);
      g_set_error(error, OD_ERROR, OD_ERROR_IO, "password file %s: cannot hash the password of %s",
                  c->password_file, user);
      return FALSE;
    }
    g_string_append_printf(out, "%s\n", line);
  }
  g_autofree char *new_text = g_string_free(out, FALSE);
  return write_file(c->password_file, new_text, error);
}

gboolean broker_prepare(Cluster *c, GError **error) {
  if (c->mosquitto_bin == NULL)
    return TRUE; /* external broker: its files and our login come from the config */
  c->password_file = broker_path(c, "passwd");
  g_autofree char *dir = g_build_filename(c->state_dir, "mosquitto", NULL);
  if (!od_state_dir_prepare(dir, error))
    return FALSE;
  c->mqtt_password = store_kv_get(c->store, "mqtt_password");
  if (c->mqtt_password == NULL) {
    c->mqtt_password = od_password_generate();
    if (!store_kv_set(c->store, "mqtt_password", c->mqtt_password, error))
      return FALSE;
  }
  /* A password file of an older cluster (mosquitto_passwd's lines) is kept: the same format. */
  return passwd_edit(c, CLUSTER_MQTT_USER, c->mqtt_password, error);
}

gboolean broker_ready(Cluster *c) {
  return c->insecure || c->cert_pem != NULL;
}

static gboolean restart_broker(gpointer data) {
  Cluster *c = data;
  c->broker_restart_source = 0;
  g_autoptr(GError) error = NULL;
  if (!c->stopping && !broker_start(c, &error)) {
    od_log(G_LOG_LEVEL_WARNING, "broker", "msg", error->message, NULL);
    c->broker_restart_source = g_timeout_add_seconds(2, restart_broker, c);
  }
  return G_SOURCE_REMOVE;
}

static void broker_exited(GPid pid, gint status, gpointer data) {
  Cluster *c = data;
  g_spawn_close_pid(pid);
  c->broker_watch = 0;
  c->broker_pid = 0;
  if (c->stopping)
    return;
  g_autofree char *st = g_strdup_printf("%d", status);
  g_autofree char *log = broker_path(c, "mosquitto.log");
  od_log(G_LOG_LEVEL_WARNING, "broker", "status", st, "log", log, "msg", "mosquitto exited; restarting it",
         NULL);
  c->broker_restarts++;
  /* A broker that dies right after starting is restarted more slowly. */
  guint delay = cluster_now_ms() - c->broker_started_ms < 2000 ? 2000 : 200;
  c->broker_restart_source = g_timeout_add(delay, restart_broker, c);
}

static void child_setup(gpointer data) {
  /* The broker must not outlive a cluster that crashed: it would hold the port. */
  prctl(PR_SET_PDEATHSIG, SIGTERM);
}

gboolean broker_start(Cluster *c, GError **error) {
  if (c->mosquitto_bin == NULL || !broker_ready(c))
    return TRUE;
  if (!write_config(c, error))
    return FALSE;
  g_autofree char *conf = broker_path(c, "mosquitto.conf");
  const char *argv[] = {c->mosquitto_bin, "-c", conf, NULL};
  g_autoptr(GError) local = NULL;
  if (!g_spawn_async(NULL, (char **)argv, NULL,
                     G_SPAWN_DO_NOT_REAP_CHILD | G_SPAWN_STDOUT_TO_DEV_NULL | G_SPAWN_STDERR_TO_DEV_NULL,
                     child_setup, NULL, &c->broker_pid, &local)) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "start %s -c %s: %s", c->mosquitto_bin, conf, local->message);
    return FALSE;
  }
  c->broker_started_ms = cluster_now_ms();
  c->broker_watch = g_child_watch_add(c->broker_pid, broker_exited, c);
  g_autofree char *pid = g_strdup_printf("%d", (int)c->broker_pid);
  g_autofree char *port = g_strdup_printf("%u", c->mqtt_port);
  od_log(G_LOG_LEVEL_MESSAGE, "broker", "pid", pid, "port", port, "msg", "mosquitto started", NULL);
  return TRUE;
}

void broker_stop(Cluster *c) {
  g_clear_handle_id(&c->broker_restart_source, g_source_remove);
  g_clear_handle_id(&c->broker_reload_source, g_source_remove);
  g_clear_handle_id(&c->broker_watch, g_source_remove);
  if (c->broker_pid <= 0)
    return;
  kill(c->broker_pid, SIGTERM);
  for (int i = 0; i < 50; i++) {
    if (waitpid(c->broker_pid, NULL, WNOHANG) != 0)
      goto done;
    g_usleep(100 * 1000);
  }
  kill(c->broker_pid, SIGKILL);
  waitpid(c->broker_pid, NULL, 0);
done:
  g_spawn_close_pid(c->broker_pid);
  c->broker_pid = 0;
}

static void signal_reload(Cluster *c) {
  GPid pid = c->broker_pid;
  if (c->mosquitto_bin == NULL && c->broker_pid_file != NULL) {
    g_autofree char *text = NULL;
    if (g_file_get_contents(c->broker_pid_file, &text, NULL, NULL))
      pid = (GPid)g_ascii_strtoll(g_strstrip(text), NULL, 10);
  }
  if (pid > 0 && kill(pid, SIGHUP) != 0) {
    int e = errno;
    od_log(G_LOG_LEVEL_WARNING, "broker", "msg", "cannot make the broker reload its password file", "error",
           g_strerror(e), NULL);
  }
}

static gboolean trailing_reload(gpointer data) {
  Cluster *c = data;
  c->broker_reload_source = 0;
  signal_reload(c);
  return G_SOURCE_REMOVE;
}

/* mosquitto takes a SIGHUP that arrives while it is still reloading as handled: the node whose
 * password came with it stayed locked out until some later change reloaded the file (bench/scale
 * saw one or two of every ten nodes registering at once refused). One more SIGHUP, a second after
 * the last change, makes it read the final file. */
void broker_reload(Cluster *c) {
  signal_reload(c);
  g_clear_handle_id(&c->broker_reload_source, g_source_remove);
  c->broker_reload_source = g_timeout_add(1000, trailing_reload, c);
}

gboolean broker_set_password(Cluster *c, const char *user, const char *password, GError **error) {
  if (!passwd_edit(c, user, password, error))
    return FALSE;
  broker_reload(c);
  return TRUE;
}

gboolean broker_remove_login(Cluster *c, const char *user, GError **error) {
  if (!passwd_edit(c, user, NULL, error))
    return FALSE;
  broker_reload(c);
  return TRUE;
}

void broker_certificate_changed(Cluster *c) {
  g_autoptr(GError) error = NULL;
  if (c->mosquitto_bin != NULL && c->broker_pid > 0)
    broker_reload(c); /* mosquitto rereads its certificate files on SIGHUP */
  else if (c->mosquitto_bin != NULL && c->broker_restart_source == 0 && !broker_start(c, &error)) {
    od_log(G_LOG_LEVEL_WARNING, "broker", "msg", error->message, NULL);
    c->broker_restart_source = g_timeout_add_seconds(2, restart_broker, c);
  }
  if (c->mqtt == NULL)
    nodelink_start(c);
}

/* The cluster's mosquitto: configuration in the state dir, spawned with an argv array, restarted
 * when it dies; logins kept with mosquitto_passwd and picked up with SIGHUP. */
#include "cluster.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static char *broker_path(Cluster *c, const char *file) {
  return g_build_filename(c->state_dir, "mosquitto", file, NULL);
}

static gboolean write_file(const char *path, const char *text, GError **error) {
  g_autoptr(GError) local = NULL;
  if (!g_file_set_contents_full(path, text, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, &local)) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "broker file %s: %s", path, local->message);
    return FALSE;
  }
  return TRUE;
}

/* A node may touch only nodes/<its user name>/#; the cluster's user may touch every node's topics. */
static gboolean write_config(Cluster *c, GError **error) {
  g_autofree char *dir = g_build_filename(c->state_dir, "mosquitto", NULL);
  if (g_mkdir_with_parents(dir, 0700) != 0) {
    int e = errno;
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "broker dir %s: %s", dir, g_strerror(e));
    return FALSE;
  }
  g_autofree char *acl = broker_path(c, "acl");
  g_autofree char *conf = broker_path(c, "mosquitto.conf");
  g_autofree char *log = broker_path(c, "mosquitto.log");
  g_autofree char *acl_text = g_strdup_printf(
      "user %s\ntopic readwrite nodes/#\n\npattern readwrite nodes/%%u/#\n", CLUSTER_MQTT_USER);
  GString *cf = g_string_new("# Written by oakuk-cluster on every start; edits are lost.\n");
  g_string_append(cf, "per_listener_settings false\n");
  g_string_append_printf(cf, "listener %u 0.0.0.0\n", c->mqtt_port);
  g_string_append(cf, "allow_anonymous false\n");
  g_string_append_printf(cf, "password_file %s\n", c->password_file);
  g_string_append_printf(cf, "acl_file %s\n", acl);
  g_string_append_printf(cf, "persistence true\npersistence_location %s/\nautosave_interval 5\n", dir);
  g_string_append_printf(cf, "log_dest file %s\nlog_type error\nlog_type warning\nlog_type notice\n", log);
  g_string_append(cf, "max_queued_messages 10000\n");
  /* Small control messages must not wait for Nagle + delayed ACK (measured: ~40 ms per hop). */
  g_string_append(cf, "set_tcp_nodelay true\n");
  /* Run as root, mosquitto would switch to user "mosquitto", which cannot read a 0700 state dir. */
  if (geteuid() == 0)
    g_string_append(cf, "user root\n");
  g_autofree char *cf_text = g_string_free(cf, FALSE);
  return write_file(acl, acl_text, error) && write_file(conf, cf_text, error);
}

/* mosquitto_passwd -b FILE USER PASSWORD (set), or -D FILE USER (delete) when password is NULL. */
static gboolean run_passwd(Cluster *c, const char *user, const char *password, GError **error) {
  const char *set[] = {"mosquitto_passwd", "-b", c->password_file, user, password, NULL};
  const char *del[] = {"mosquitto_passwd", "-D", c->password_file, user, NULL};
  const char *const *argv = password ? set : del;
  g_autofree char *err = NULL;
  gint status = 0;
  g_autoptr(GError) local = NULL;
  if (!g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_STDOUT_TO_DEV_NULL, NULL, NULL,
                    NULL, &err, &status, &local)) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "mosquitto_passwd %s: %s", c->password_file, local->message);
    return FALSE;
  }
  if (!g_spawn_check_wait_status(status, NULL)) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "mosquitto_passwd %s (user %s): %s", c->password_file, user,
                err && *err ? g_strstrip(err) : "failed");
    return FALSE;
  }
  return TRUE;
}

gboolean broker_prepare(Cluster *c, GError **error) {
  if (c->mosquitto_bin == NULL)
    return TRUE; /* external broker: its files and our login come from the config */
  c->password_file = broker_path(c, "passwd");
  if (!write_config(c, error))
    return FALSE;
  if (!g_file_test(c->password_file, G_FILE_TEST_EXISTS) && !write_file(c->password_file, "", error))
    return FALSE;
  c->mqtt_password = store_kv_get(c->store, "mqtt_password");
  if (c->mqtt_password == NULL) {
    c->mqtt_password = od_password_generate();
    if (!store_kv_set(c->store, "mqtt_password", c->mqtt_password, error))
      return FALSE;
  }
  return run_passwd(c, CLUSTER_MQTT_USER, c->mqtt_password, error);
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
  if (c->mosquitto_bin == NULL)
    return TRUE;
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

void broker_reload(Cluster *c) {
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

gboolean broker_set_password(Cluster *c, const char *user, const char *password, GError **error) {
  if (!run_passwd(c, user, password, error))
    return FALSE;
  broker_reload(c);
  return TRUE;
}

gboolean broker_remove_login(Cluster *c, const char *user, GError **error) {
  if (!run_passwd(c, user, NULL, error))
    return FALSE;
  broker_reload(c);
  return TRUE;
}

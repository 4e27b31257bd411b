/* `oakuk stop NAME`: stops an instance `oakuk run` started. A foreground run is asked to stop
 * (SIGTERM to its `oakuk run`, which cleans up as on Ctrl-C); a detached one (or one whose
 * `oakuk run` is gone) is adopted by a QEMU runtime on its state directory and undeployed, then
 * its network and record are removed and, with the last run, the host settings put back. */
#include "oakuk-cli.h"
#include "run-session.h"
#include "run-state.h"

#include <errno.h>
#include <oakuk/oakuk.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define STOP_WAIT_S 60 /* for a foreground `oakuk run` to end, or a runtime's UNDEPLOYED */

typedef struct {
  GMainLoop *loop;
  const char *name;
  bool undeployed;
} Stop;

static void on_status(const char *instance, int32_t status, const char *detail, void *data) {
  (void)detail;
  Stop *s = data;
  if (strcmp(instance, s->name) == 0 && status == OAKUK_STATUS_UNDEPLOYED) {
    s->undeployed = true;
    g_main_loop_quit(s->loop);
  }
}

static gboolean on_timeout(gpointer data) {
  g_main_loop_quit(((Stop *)data)->loop);
  return G_SOURCE_REMOVE;
}

/* QEMU gone, its cgroups and instance directory removed: by the runtime, else by signals. */
static bool stop_qemu(const OakukRunRecord *r) {
  oakuk_qemu_options qo = OAKUK_QEMU_OPTIONS_INIT;
  qo.allow_emulation = true;
  oakuk_error *err = NULL;
  oakuk_runtime *rt = r->runtime_dir ? oakuk_qemu_runtime_new(r->runtime_dir, &qo, &err) : NULL;
  if (!rt) {
    fprintf(stderr, "oakuk stop: QEMU runtime in %s: %s\n", r->runtime_dir ? r->runtime_dir : "(none)",
            err ? oakuk_error_message(err) : "no state directory recorded");
    oakuk_error_free(err);
    if (oakuk_run_proc_alive(r->pid, r->pid_start))
      kill((pid_t)r->pid, SIGKILL);
    return !oakuk_run_proc_alive(r->pid, r->pid_start);
  }
  Stop s = {g_main_loop_new(NULL, FALSE), r->name, false};
  oakuk_runtime_set_status_callback(rt, on_status, &s);
  if (oakuk_runtime_adopt(rt, &err) < 0) {
    fprintf(stderr, "oakuk stop: adopt instance %s: %s\n", r->name, oakuk_error_message(err));
    g_clear_pointer(&err, oakuk_error_free);
  }
  if (oakuk_runtime_undeploy(rt, r->name, &err) == 0) {
    guint timer = g_timeout_add_seconds(STOP_WAIT_S, on_timeout, &s);
    g_main_loop_run(s.loop);
    if (!s.undeployed)
      g_source_remove(timer);
  } else {
    g_clear_pointer(&err, oakuk_error_free); /* no instance directory: QEMU never started */
  }
  /* Dropping the runtime kills what did not stop in time and removes the instance directory. */
  oakuk_runtime_unref(rt);
  g_main_loop_unref(s.loop);
  g_autofree char *instances = g_build_filename(r->runtime_dir, "instances", NULL);
  (void)rmdir(instances);
  (void)rmdir(r->runtime_dir);
  return true;
}

/* A foreground `oakuk run`: SIGTERM, as Ctrl-C, and wait until it has cleaned up. */
static bool stop_foreground(const OakukRunRecord *r) {
  if (kill((pid_t)r->cli_pid, SIGTERM) != 0)
    return errno == ESRCH;
  for (int i = 0; i < STOP_WAIT_S * 10 && oakuk_run_proc_alive(r->cli_pid, r->cli_start); i++)
    g_usleep(100000);
  return !oakuk_run_proc_alive(r->cli_pid, r->cli_start);
}

static int release(const OakukRunRecord *r) {
  oakuk_net_options no;
  oakuk_net_options_init(&no, OAKUK_NET_OPTIONS_VERSION);
  no.node_subnet = r->subnet ? r->subnet : OAKUK_RUN_DEFAULT_SUBNET;
  oakuk_error *err = NULL;
  oakuk_net *net = oakuk_net_new(&no, &err);
  if (!net) {
    fprintf(stderr, "oakuk stop: network (subnet %s): %s\n", no.node_subnet, oakuk_error_message(err));
    oakuk_error_free(err);
    return OAKUK_CLI_FAILED;
  }
  g_autoptr(GError) gerr = NULL;
  int lock = oakuk_run_lock(&gerr);
  if (lock < 0)
    fprintf(stderr, "oakuk stop: %s\n", gerr->message);
  oakuk_run_release(net, r->name, true, "oakuk stop");
  if (lock >= 0)
    close(lock);
  oakuk_net_unref(net);
  return OAKUK_CLI_OK;
}

static int stop_one(const char *name) {
  g_autoptr(GError) err = NULL;
  g_autoptr(OakukRunRecord) r = oakuk_run_record_load(name, &err);
  if (!r && g_error_matches(err, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
    fprintf(stderr, "oakuk stop: no instance %s started by oakuk run (see oakuk ps)\n", name);
    return OAKUK_RUN_NOT_FOUND;
  }
  if (!r) {
    fprintf(stderr, "oakuk stop: instance %s: %s\n", name, err->message);
    return OAKUK_CLI_FAILED;
  }
  g_autofree char *netns = oakuk_run_netns_id();
  if (g_strcmp0(r->netns, netns) != 0) {
    fprintf(stderr,
            "oakuk stop: instance %s was started in network namespace %s, this is %s: run oakuk stop there\n",
            name, r->netns ? r->netns : "(unknown)", netns);
    return OAKUK_CLI_FAILED;
  }
  if (!r->detached && oakuk_run_proc_alive(r->cli_pid, r->cli_start)) {
    if (!stop_foreground(r)) {
      fprintf(stderr,
              "oakuk stop: oakuk run of instance %s (pid %" G_GINT64_FORMAT ") did not end within %d s\n",
              name, r->cli_pid, STOP_WAIT_S);
      return OAKUK_CLI_FAILED;
    }
    g_autoptr(OakukRunRecord) left = oakuk_run_record_load(name, NULL);
    if (!left) {
      printf("%s\n", name);
      return OAKUK_CLI_OK;
    }
  }
  if (!stop_qemu(r)) {
    fprintf(stderr, "oakuk stop: QEMU of instance %s (pid %" G_GINT64_FORMAT ") is still running\n", name,
            r->pid);
    return OAKUK_CLI_FAILED;
  }
  int rc = release(r);
  if (rc == OAKUK_CLI_OK)
    printf("%s\n", name);
  return rc;
}

int oakuk_cmd_stop(int argc, char **argv) {
  GOptionEntry entries[] = {{NULL, 0, 0, 0, NULL, NULL, NULL}};
  g_autoptr(GOptionContext) ctx = g_option_context_new("NAME");
  g_option_context_set_summary(ctx, "Stop an instance `oakuk run` started, detached or not.");
  g_option_context_set_description(
      ctx, "Stops the guest, removes its network and state and, when it was the last instance of\n"
           "`oakuk run` here, the bridge and nftables table a run made, and puts back the host settings\n"
           "(net.ipv4.ip_forward, ...) the first run changed. Prints NAME when done.\n\n"
           "Exit status: 0, 1 when stopping failed, 2 on a bad command line, 4 without root or\n"
           "CAP_NET_ADMIN, 6 when no instance NAME was started by oakuk run (see oakuk ps).");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_autofree char *prgname = g_strdup("oakuk stop");
  argv[0] = prgname;
  g_autoptr(GError) err = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
    fprintf(stderr, "oakuk stop: %s (see oakuk stop --help)\n", err->message);
    return OAKUK_CLI_USAGE;
  }
  if (argc != 2) {
    fprintf(stderr, "oakuk stop: %s (see oakuk stop --help)\n",
            argc < 2 ? "NAME is missing" : "exactly one NAME expected");
    return OAKUK_CLI_USAGE;
  }
  if (!oakuk_run_name_is_valid(argv[1])) {
    fprintf(stderr, "oakuk stop: \"%s\" is not an instance name (1-64 of A-Z a-z 0-9 . _ -)\n", argv[1]);
    return OAKUK_CLI_USAGE;
  }
  if (!oakuk_run_privileged()) {
    fprintf(stderr, "oakuk stop: needs root or CAP_NET_ADMIN (and CAP_SYS_ADMIN) to remove the instance's "
                    "network; run it as root (sudo)\n");
    return OAKUK_RUN_NOT_PERMITTED;
  }
  return stop_one(argv[1]);
}

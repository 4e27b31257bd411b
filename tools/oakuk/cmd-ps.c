/* `oakuk ps`: the instances `oakuk run` started on this machine (detached or not), from their
 * records in the run directory (run-state.h). Reads only: it needs no privileges. */
#include "oakuk-cli.h"
#include "run-session.h"
#include "run-state.h"

#include <json-glib/json-glib.h>
#include <stdio.h>
#include <string.h>

static char *console_path(const OakukRunRecord *r) {
  return r->runtime_dir ? g_build_filename(r->runtime_dir, "instances", r->name, "serial.log", NULL) : NULL;
}

static void print_json(GPtrArray *all) {
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_array(b);
  for (guint i = 0; i < all->len; i++) {
    OakukRunRecord *r = all->pdata[i];
    const char *state = oakuk_run_record_state(r);
    g_autofree char *console = console_path(r);
    json_builder_begin_object(b);
    oakuk_run_json_add_str(b, "name", r->name);
    oakuk_run_json_add_str(b, "image", r->image);
    oakuk_run_json_add_str(b, "state", state);
    oakuk_run_json_add_str(b, "ip", r->ip);
    json_builder_set_member_name(b, "pid");
    json_builder_add_int_value(b, strcmp(state, "RUNNING") == 0 ? r->pid : 0);
    oakuk_run_json_add_str(b, "started", r->started);
    json_builder_set_member_name(b, "detached");
    json_builder_add_boolean_value(b, r->detached);
    json_builder_set_member_name(b, "ports");
    json_builder_begin_array(b);
    for (char **p = r->ports; *p; p++)
      json_builder_add_string_value(b, *p);
    json_builder_end_array(b);
    oakuk_run_json_add_str(b, "console", console);
    json_builder_end_object(b);
  }
  json_builder_end_array(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autofree char *text = json_to_string(root, TRUE);
  printf("%s\n", text);
}

static void print_table(GPtrArray *all) {
  int wname = 4, wimage = 5;
  for (guint i = 0; i < all->len; i++) {
    OakukRunRecord *r = all->pdata[i];
    wname = MAX(wname, (int)strlen(r->name));
    wimage = MAX(wimage, r->image ? (int)strlen(r->image) : 1);
  }
  printf("%-*s  %-*s  %-8s  %-15s  %-8s  %-20s  %s\n", wname, "NAME", wimage, "IMAGE", "STATE", "IP", "PID",
         "STARTED", "MODE");
  for (guint i = 0; i < all->len; i++) {
    OakukRunRecord *r = all->pdata[i];
    const char *state = oakuk_run_record_state(r);
    g_autofree char *pid =
        strcmp(state, "RUNNING") == 0 ? g_strdup_printf("%" G_GINT64_FORMAT, r->pid) : g_strdup("-");
    printf("%-*s  %-*s  %-8s  %-15s  %-8s  %-20s  %s\n", wname, r->name, wimage, r->image ? r->image : "-",
           state, r->ip ? r->ip : "-", pid, r->started ? r->started : "-",
           r->detached ? "detached" : "foreground");
  }
}

int oakuk_cmd_ps(int argc, char **argv) {
  gboolean json = FALSE;
  GOptionEntry entries[] = {
      {"json", 0, 0, G_OPTION_ARG_NONE, &json, "Print JSON instead of a table", NULL},
      {NULL, 0, 0, 0, NULL, NULL, NULL},
  };
  g_autoptr(GOptionContext) ctx = g_option_context_new(NULL);
  g_option_context_set_summary(ctx, "List the instances `oakuk run` started on this machine.");
  g_option_context_set_description(
      ctx, "STATE is RUNNING (QEMU runs), STARTING, STOPPING, or DEAD (the guest ended while detached, or\n"
           "its `oakuk run` was killed: `oakuk stop NAME` removes what is left). Records are in\n"
           "$OAKUK_RUN_DIR (default " OAKUK_RUN_DEFAULT_DIR ").\n\n"
           "Exit status: 0, 1 when the records cannot be read, 2 on a bad command line.");
  g_option_context_add_main_entries(ctx, entries, NULL);
  g_autofree char *prgname = g_strdup("oakuk ps");
  argv[0] = prgname;
  g_autoptr(GError) err = NULL;
  if (!g_option_context_parse(ctx, &argc, &argv, &err)) {
    fprintf(stderr, "oakuk ps: %s (see oakuk ps --help)\n", err->message);
    return OAKUK_CLI_USAGE;
  }
  if (argc != 1) {
    fprintf(stderr, "oakuk ps: unexpected argument \"%s\" (see oakuk ps --help)\n", argv[1]);
    return OAKUK_CLI_USAGE;
  }
  g_autoptr(GPtrArray) all = oakuk_run_records(&err);
  if (!all) {
    fprintf(stderr, "oakuk ps: %s: %s\n", oakuk_run_dir(), err->message);
    return OAKUK_CLI_FAILED;
  }
  if (json)
    print_json(all);
  else
    print_table(all);
  return OAKUK_CLI_OK;
}

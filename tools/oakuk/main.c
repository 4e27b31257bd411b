/* `oakuk`: dispatches to the subcommand named by the first argument. */
#include "oakuk-cli.h"
#include "run-session.h"

#include <glib.h>
#include <locale.h>
#include <stdio.h>
#include <string.h>

typedef struct {
  const char *name;
  oakuk_cli_command fn;
  const char *summary;
} Command;

static const Command commands[] = {
    {"run", oakuk_cmd_run, "run a unikernel image on this machine, without a control plane"},
    {"ps", oakuk_cmd_ps, "list the instances `oakuk run` started here (--json)"},
    {"stop", oakuk_cmd_stop, "stop an instance `oakuk run` started (--detach or not)"},
    {"pkg", oakuk_cmd_pkg, "package unikernels as a multi-architecture OCI image (as kraft pkg)"},
    {"login", oakuk_cmd_login, "log in to the root and store the credentials"},
    {"apply", oakuk_cmd_apply, "create or update applications from an SLA descriptor (rolling update)"},
    {"deploy", oakuk_cmd_deploy, "deploy an instance of a service (--wait: until it runs)"},
    {"undeploy", oakuk_cmd_undeploy, "remove one or all instances of a service"},
    {"status", oakuk_cmd_status, "applications, services and instances (--watch)"},
    {"describe", oakuk_cmd_describe, "a service in full: spec, revision, instances, placement"},
    {"top", oakuk_cmd_top, "CPU and memory of nodes and instances (--watch)"},
    {"logs", oakuk_cmd_logs, "console or output of a service's instances (-f: follow)"},
    {"explain", oakuk_cmd_explain, "why the scheduler placed or refused a service"},
    {"nodes", oakuk_cmd_nodes, "nodes of every cluster (--watch)"},
    {"node", oakuk_cmd_node, "drain, undrain or remove a node"},
    {"clusters", oakuk_cmd_clusters, "clusters registered with the root (--watch)"},
    {"token", oakuk_cmd_token, "create a join token for a cluster or a node"},
    {"user", oakuk_cmd_user, "create, list or remove the root's users"},
    {"delete", oakuk_cmd_delete, "delete applications or services with their instances"},
    {"scale", oakuk_cmd_scale, "bring a service to N instances (--wait: until they run)"},
    {"version", oakuk_cmd_version, "the client's version and the root's"},
    {"context", oakuk_cmd_context, "list, show, switch or forget the roots logged in to"},
    {"completion", oakuk_cmd_completion, "print a bash completion script"},
};

const char *oakuk_cli_command_name(size_t i) {
  return i < G_N_ELEMENTS(commands) ? commands[i].name : NULL;
}

static void usage(FILE *to) {
  fprintf(to, "Usage: oakuk COMMAND [OPTIONS...]\n\nCommands:\n");
  for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
    fprintf(to, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(to, "\n`oakuk COMMAND --help` describes a command's options.\n");
}

int main(int argc, char **argv) {
  setlocale(LC_ALL, "");
  /* oakuk --context NAME COMMAND ...: as COMMAND --context NAME, for this one command. */
  while (argc >= 2 && (strcmp(argv[1], "--context") == 0 || strncmp(argv[1], "--context=", 10) == 0)) {
    gboolean joined = argv[1][9] == '=';
    if (!joined && argc < 3) {
      fprintf(stderr, "oakuk: --context needs a NAME\n");
      return OAKUK_CLI_USAGE;
    }
    oak_context_option = g_strdup(joined ? argv[1] + 10 : argv[2]);
    argv[joined ? 1 : 2] = argv[0];
    argv += joined ? 1 : 2;
    argc -= joined ? 1 : 2;
  }
  if (argc < 2) {
    usage(stderr);
    return OAKUK_CLI_USAGE;
  }
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return OAKUK_CLI_OK;
  }
  if (strcmp(argv[1], "--version") == 0) {
    printf("oakuk %s\n", OAKUK_CLI_VERSION);
    return OAKUK_CLI_OK;
  }
  for (size_t i = 0; i < G_N_ELEMENTS(commands); i++)
    if (strcmp(argv[1], commands[i].name) == 0)
      return commands[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "oakuk: unknown command \"%s\"\n\n", argv[1]);
  usage(stderr);
  return OAKUK_CLI_USAGE;
}

/* The `oakuk` command: shared declarations of the subcommands. */
#ifndef OAKUK_CLI_H
#define OAKUK_CLI_H

#include <stddef.h>

/* Exit statuses of every subcommand. */
#define OAKUK_CLI_OK 0
#define OAKUK_CLI_FAILED 1     /* the operation failed (message on stderr) */
#define OAKUK_CLI_USAGE 2      /* bad command line */
#define OAKUK_CLI_GUEST_DIED 3 /* the instance crashed, was killed or failed after it was started */
#define OAKUK_CLI_NOT_READY 7  /* oakuk run: the guest was not ready within the timeout (and was stopped) */

/* A subcommand: argv[0] is the subcommand's name. Returns the exit status. */
typedef int (*oakuk_cli_command)(int argc, char **argv);

int oakuk_cmd_run(int argc, char **argv);
/* `oakuk pkg` (cmd-pkg.c): unikernels packaged as an OCI image. */
int oakuk_cmd_pkg(int argc, char **argv);

/* Control-plane commands (cmd-api.c, cmd-views.c; docs/cli.md). */
int oakuk_cmd_login(int argc, char **argv);
int oakuk_cmd_apply(int argc, char **argv);
int oakuk_cmd_deploy(int argc, char **argv);
int oakuk_cmd_undeploy(int argc, char **argv);
int oakuk_cmd_status(int argc, char **argv);
int oakuk_cmd_logs(int argc, char **argv);
int oakuk_cmd_explain(int argc, char **argv);
int oakuk_cmd_nodes(int argc, char **argv);
int oakuk_cmd_top(int argc, char **argv);
int oakuk_cmd_describe(int argc, char **argv);
int oakuk_cmd_node(int argc, char **argv);
int oakuk_cmd_clusters(int argc, char **argv);
/* Administration (cmd-admin.c): join tokens and users. */
int oakuk_cmd_token(int argc, char **argv);
int oakuk_cmd_user(int argc, char **argv);
/* Day-2 commands (cmd-ops.c): delete, scale, version, context, completion. */
int oakuk_cmd_delete(int argc, char **argv);
int oakuk_cmd_scale(int argc, char **argv);
int oakuk_cmd_version(int argc, char **argv);
int oakuk_cmd_context(int argc, char **argv);
int oakuk_cmd_completion(int argc, char **argv);

/* --context NAME, before the command (main.c) or among its options (client.c); NULL when absent. */
extern char *oak_context_option;
/* The name of the i-th command of main.c's table; NULL past the last. */
const char *oakuk_cli_command_name(size_t i);

#endif

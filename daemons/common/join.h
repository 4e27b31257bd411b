/* `oakuk-cluster join` and `oakuk-node join` (docs/deploy.md): the first start of a cluster or a
 * node on a new machine, as `k3s agent --server URL --token TOKEN` does it. */
#ifndef OAKUK_DAEMON_JOIN_H
#define OAKUK_DAEMON_JOIN_H

#include <glib.h>

G_BEGIN_DECLS

/* What differs between the daemons that join: the program, its config group and keys, its unit. */
typedef struct {
  const char *program;           /* "oakuk-cluster" */
  const char *group;             /* its config group: "cluster" */
  const char *url_key;           /* the key naming whom it joins: "root_url" */
  const char *url_name;          /* in messages and --help: "ROOT_URL" */
  const char *token_key;         /* the key naming the token file */
  gboolean token_key_at;         /* TRUE: token_key = @FILE (cluster); FALSE: token_key = FILE (node) */
  const char *const *stale_keys; /* other token keys, removed from an existing config (they would win) */
  const char *default_state_dir; /* the daemon's default, and its unit's StateDirectory */
  const char *config_name;       /* "cluster.conf", in <sysconfdir>/oakuk/ */
  gboolean system_user;          /* the unit runs as a system user (sysusers.d): create it first */
} OdJoinKind;

/* Runs `PROGRAM join URL TOKEN [options]`; argv[0] is "join". Returns the exit status, or does not
 * return when the daemon is started in the foreground (exec). */
int od_join_main(const OdJoinKind *kind, int argc, char **argv);

G_END_DECLS

#endif

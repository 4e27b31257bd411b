/* What `oakuk run`, `oakuk ps` and `oakuk stop` share: the records of the instances `oakuk run`
 * started (one directory per instance under the run directory, /run/oakuk/run by default), a lock
 * that orders their network changes, and the host settings the first of them changed, put back
 * when the last one of a network namespace ends. */
#ifndef OAKUK_RUN_STATE_H
#define OAKUK_RUN_STATE_H

#include <glib.h>
#include <json-glib/json-glib.h>
#include <oakuk/oakuk.h>
#include <stdbool.h>
#include <stdint.h>

#define OAKUK_RUN_DEFAULT_DIR "/run/oakuk/run"

/* Exit statuses of run, ps and stop beyond oakuk-cli.h's (the same numbers as client.h's). */
#define OAKUK_RUN_NOT_PERMITTED 4 /* not root and without CAP_NET_ADMIN and CAP_SYS_ADMIN */
#define OAKUK_RUN_NOT_FOUND 6     /* oakuk stop: no instance of that name */

/* <run dir>/NAME/run.json */
typedef struct {
  char *name;
  char *image;       /* IMAGE as given */
  char *ip;          /* instance IP */
  char *subnet;      /* --subnet of the run: what oakuk stop builds its oakuk_net with */
  bool nat;          /* --net nat */
  char **ports;      /* -p specs, NULL-terminated (never NULL) */
  char *runtime_dir; /* the QEMU runtime's state directory (instances/NAME below it) */
  char *netns;       /* the node network namespace of the run, "net:[INODE]" */
  char *started;     /* ISO 8601 UTC, when the run began */
  bool detached;     /* the CLI left; the instance runs on its own */
  int64_t cli_pid;   /* the `oakuk run` process (while not detached) */
  uint64_t cli_start;
  int64_t pid; /* QEMU, 0 until RUNNING */
  uint64_t pid_start;
} OakukRunRecord;

/* $OAKUK_RUN_DIR, else OAKUK_RUN_DEFAULT_DIR. */
const char *oakuk_run_dir(void);
/* Whether this process may build networks: root, or CAP_NET_ADMIN and CAP_SYS_ADMIN. */
bool oakuk_run_privileged(void);
/* "net:[4026531840]": the network namespace this process is in. */
char *oakuk_run_netns_id(void);
/* Start time of process pid (clock ticks after boot, /proc/PID/stat field 22), 0 when there is none. */
uint64_t oakuk_run_proc_start(int64_t pid);
/* Whether pid is alive and still the process that started at start (not a recycled pid). */
bool oakuk_run_proc_alive(int64_t pid, uint64_t start);
/* A valid instance name: 1-64 of A-Z a-z 0-9 . _ -, not starting with ".". */
bool oakuk_run_name_is_valid(const char *name);

/* An exclusive lock on the run directory (created); returns the descriptor to close, or -1. */
int oakuk_run_lock(GError **error);

/* Creates <run dir>/NAME for a new run (G_IO_ERROR_EXISTS when it exists) and writes r. */
bool oakuk_run_record_create(const OakukRunRecord *r, GError **error);
/* Replaces the record (atomically). */
bool oakuk_run_record_write(const OakukRunRecord *r, GError **error);
/* The record of name; NULL with G_FILE_ERROR_NOENT when there is none. */
OakukRunRecord *oakuk_run_record_load(const char *name, GError **error);
/* Every record, sorted by name (those that cannot be read are skipped). */
GPtrArray *oakuk_run_records(GError **error);
void oakuk_run_record_free(OakukRunRecord *r);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(OakukRunRecord, oakuk_run_record_free)

/* "RUNNING", "STARTING", "STOPPING" or "DEAD", from the processes the record names. */
const char *oakuk_run_record_state(const OakukRunRecord *r);

/* Under the lock, before a run changes the node network: records the host settings it may change
 * (net.ipv4.ip_forward, the bridge's route_localnet, cgroup directories and controllers) unless a
 * record of them exists already for this network namespace. */
bool oakuk_run_host_save(oakuk_net *net, GError **error);

/* Under the lock, when a run ends: removes instance name's network (when have_net) and record, then,
 * when no other run of this network namespace is left and nothing else uses the bridge, removes the
 * bridge and table if a run made them and puts the saved host settings back. Problems are printed
 * prefixed with prog. */
void oakuk_run_release(oakuk_net *net, const char *name, bool have_net, const char *prog);

/* Sets member key of the object being built to value, or to null when value is NULL. */
void oakuk_run_json_add_str(JsonBuilder *b, const char *key, const char *value);

#endif

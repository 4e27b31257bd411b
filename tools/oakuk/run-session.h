/* `oakuk run` without its argument parsing: fetch an image, build the instance's network, run
 * it with the QEMU runtime in the foreground, stream its console, and remove everything it made
 * when the guest ends or the user interrupts. */
#ifndef OAKUK_RUN_SESSION_H
#define OAKUK_RUN_SESSION_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct {
  const char *image; /* URL, local tar(.gz) or bare kernel file, OCI reference or oci-archive: */
  const char *name;  /* instance name; NULL = "run-<random>" */
  const char *arch;  /* GOARCH; NULL = the kernel's */
  int64_t memory_mb;
  int32_t vcpus;
  char **ports; /* "HOST:GUEST[/tcp|udp]", NULL-terminated, may be NULL */
  bool allow_emulation;
  const char *flavor;              /* "unikraft" | "linux" | NULL (the image's) */
  const char *uk_version;          /* NULL = the image's */
  const char *files_dir;           /* NULL = the image's files/ */
  const char *state_dir;           /* NULL = /var/lib/oakuk/run (root) or $XDG_RUNTIME_DIR/oakuk/run */
  const char *subnet;              /* the local bridge's subnet */
  bool net_nat;                    /* the thesis layout (virbr0 + DNAT in the netns) instead of direct */
  char **args;                     /* guest arguments (after "--"), NULL-terminated, may be NULL */
  int32_t ready_port;              /* guest port probed for readiness; -1 = the guest side of the first TCP
                                    * port mapping (none without one); 0 = no TCP probe */
  const char *ready_serial;        /* console text that says ready; NULL = none */
  int64_t ready_timeout_s;         /* stop the guest when it is not ready after this; 0 = wait for good */
  const char *insecure_registries; /* OCI registries reached over plain http; NULL = loopback only */
  const char *username, *password; /* OCI registry credentials; NULL = anonymous */
  bool detach;                     /* return once the guest runs (is ready, with a probe), leave it running */
} OakukRunOptions;

#define OAKUK_RUN_DEFAULT_SUBNET "10.18.255.0/24"
#define OAKUK_RUN_DEFAULT_MEMORY_MB 128
#define OAKUK_RUN_DEFAULT_READY_TIMEOUT_S 120

/* Runs until the guest ends or SIGINT/SIGTERM (with detach: until it runs or is ready); returns the
 * process exit status (OAKUK_CLI_*, OAKUK_RUN_* of run-state.h). */
int oakuk_run_session(const OakukRunOptions *o);

/* `oakuk ps` (cmd-ps.c) and `oakuk stop` (cmd-stop.c): the instances `oakuk run` started. */
int oakuk_cmd_ps(int argc, char **argv);
int oakuk_cmd_stop(int argc, char **argv);

#endif

#ifndef OAKUK_CONTAINER_H
#define OAKUK_CONTAINER_H

#include <oakuk/error.h>
#include <oakuk/runtime.h>

OAKUK_BEGIN_DECLS

/* The container runtime (docs/architecture.md §11): OCI images pulled over the distribution API (or
 * read from an `oci-archive:` layout tarball), verified by digest, unpacked into a shared per-image
 * rootfs, and run with runc in the network namespace prepared by the caller.
 *
 * State layout: <state_dir>/images/blobs/sha256/<hex> (content-addressed blobs shared by every
 * image), <state_dir>/images/unpacked/<manifest hex>/rootfs (the flattened layers),
 * <state_dir>/instances/<name>/ (bundle/, upper/, output.log, instance.json) and
 * <state_dir>/runc (runc's --root). */

/* Options of the runtime, pull and push. Initialise with OAKUK_CONTAINER_OPTIONS_INIT or
 * oakuk_container_options_init(). */
typedef struct {
  unsigned int version;
  /* The runc binary; NULL = "runc" from $PATH. */
  const char *runc_path;
  /* Registries reached over plain http, comma-separated "host" or "host:port"; every other
   * registry is reached over https. NULL = loopback only (localhost, 127.0.0.0/8, ::1). */
  const char *insecure_registries;
  /* Network inactivity timeout in seconds (default 300; 0 = none). */
  uint32_t timeout_s;
  /* Seconds between SIGTERM and SIGKILL when an instance's graceful_stop_s is 0 (default 3). */
  uint32_t stop_grace_s;
  /* ---- version 2 ---- */
  /* The directories `oci-archive:file://` references may read: absolute paths separated by ':'
   * (copied). A tarball is read only when its path, symlinks resolved, lies inside one of them and
   * it is a regular file (a fifo or device is refused without blocking). NULL or "" (the default)
   * refuses every oci-archive:file:// reference; oci-archive:http(s):// is not affected. */
  const char *file_allowed_dirs;
} oakuk_container_options;

/* Version 1 ends at stop_grace_s: a version-1 caller's shorter struct is read (and filled by
 * oakuk_container_options_init) only up to there; file_allowed_dirs then takes its default. */
#define OAKUK_CONTAINER_OPTIONS_VERSION_1 1
#define OAKUK_CONTAINER_OPTIONS_VERSION 2
#define OAKUK_CONTAINER_OPTIONS_INIT                                                                         \
  { OAKUK_CONTAINER_OPTIONS_VERSION, NULL, NULL, 300, 3, NULL }
/* Fills opts (a struct of that version's size) with defaults; OAKUK_EINVAL for an unknown version. */
OAKUK_API int oakuk_container_options_init(oakuk_container_options *opts, unsigned int version);

/* A container runtime keeping its state under state_dir (created if missing). opts may be NULL.
 * Must be created on the thread owning the GMainContext that will run it. The process becomes a
 * child subreaper (PR_SET_CHILD_SUBREAPER) so that container processes, once runc has started
 * them, are its children and their exit codes are known. OAKUK_EUNSUPPORTED when runc is missing.
 *
 * Deploy: the spec's image (oakuk_instance_spec_set_image) is pulled, statuses CREATING (with
 * "pulling layer 2/3: 45%" details) then RUNNING, or FAILED with the reason (e.g. "manifest
 * unknown", "authentication required", "digest mismatch", "unreachable"). Arguments come from the
 * spec's args (else the image's Entrypoint + Cmd), environment from the image's Env plus the
 * spec's env, working directory from the spec (else the image's WorkingDir). stdout and stderr go
 * to <state_dir>/instances/<name>/output.log; its last lines are the detail of DEAD/COMPLETED.
 *
 * Confinement (config.json): namespaces pid, ipc, uts, mount and the given network; capabilities
 * AUDIT_WRITE, KILL and NET_BIND_SERVICE only; noNewPrivileges; no devices; masked and read-only
 * /proc and /sys paths; and a seccomp profile (default allow, for the host's architectures and
 * their 32-bit compat ones) under which the system calls a container never needs fail with EPERM:
 * module and kexec loading, mount and the new mount API, pivot_root, swap, reboot, bpf,
 * perf_event_open, the kernel keyring, ptrace and cross-process memory access, open_by_handle_at,
 * userfaultfd, unshare, setns and clone with namespace flags (clone3 fails with ENOSYS, so libcs
 * fall back to clone), io_uring, acct, quotactl, lookup_dcookie, iopl/ioperm, syslog, clock
 * and time setting, and obsolete ones (the full list: oakuk_container_seccomp_syscalls in
 * lib/container.c). */
OAKUK_API oakuk_runtime *
oakuk_container_runtime_new(const char *state_dir, const oakuk_container_options *opts, oakuk_error **error);

/* Pulls reference (as oakuk_instance_spec_set_image) into <state_dir>/images for this node's
 * platform, blocking. username/password may be NULL (anonymous). On success *digest_out (may be
 * NULL) is the chosen platform manifest's digest "sha256:<hex>" (free with oakuk_free). Errors:
 * OAKUK_EINVAL (bad reference, malformed manifest or layer), OAKUK_ENOTFOUND (unknown repository,
 * tag or blob), OAKUK_EPERM (authentication required or refused, unsafe layer entry, http to a
 * registry not marked insecure), OAKUK_EVERIFY (digest mismatch; nothing is cached),
 * OAKUK_EUNSUPPORTED (no manifest for this platform), OAKUK_EIO (unreachable, I/O). */
OAKUK_API int oakuk_container_pull(const char *state_dir, const char *reference, const char *username,
                                   const char *password, const oakuk_container_options *opts,
                                   char **digest_out, oakuk_error **error);

/* Packs directory dir as a single-layer OCI image for this node's platform (tar+gzip layer keeping
 * modes, owners and links; image config with PATH in Env; OCI manifest) and pushes it to the
 * registry at registry ("host:port", reached as for pulls) as name:tag (blob upload POST + monolithic
 * PUT, manifest PUT). username/password may be NULL. *digest_out (may be NULL) receives the
 * manifest digest "sha256:<hex>" (free with oakuk_free). */
OAKUK_API int oakuk_container_build_rootfs_image(const char *dir, const char *registry, const char *name,
                                                 const char *tag, const char *username, const char *password,
                                                 const oakuk_container_options *opts, char **digest_out,
                                                 oakuk_error **error);

/* GOARCH of this node as used for platform selection ("amd64", "arm64", "arm", ...), and the
 * variant ("v7" for armv7l, NULL otherwise). Static strings. */
OAKUK_API const char *oakuk_container_platform_arch(void);
OAKUK_API const char *oakuk_container_platform_variant(void);

OAKUK_END_DECLS

#endif

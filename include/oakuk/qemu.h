#ifndef OAKUK_QEMU_H
#define OAKUK_QEMU_H

#include <oakuk/error.h>
#include <oakuk/runtime.h>

OAKUK_BEGIN_DECLS

/* The unikernel runtime (docs/architecture.md §10.1): capability probe, command builder, QEMU instances. */

/* Options of the probe and of the runtime. Initialise with OAKUK_QEMU_OPTIONS_INIT or
 * oakuk_qemu_options_init(). */
typedef struct {
  unsigned int version;
  /* Advertise and allow TCG (emulation) when KVM is unusable or for foreign architectures. */
  bool allow_emulation;
  /* Directories searched for qemu-system-<arch>, ':'-separated; NULL = $PATH. */
  const char *search_path;
  /* ---- version 2 ---- */
  /* The unprivileged user every QEMU of the runtime runs as: a name or a numeric uid (copied).
   * The runtime opens what QEMU needs itself (kernel, initrd, serial log, QMP socket, tap,
   * vhost-net, the files/ copy, which it gives to the user) and passes the descriptors; the forked
   * child joins the cgroups and the network namespace, takes the user's uid, gid and groups (plus
   * /dev/kvm's group for KVM guests) and sets no_new_privs before it executes QEMU, so QEMU never
   * runs with privileges, not even while it parses the kernel. The kernel and initrd must be
   * readable by the user (the image cache makes them world-readable). oakuk_qemu_runtime_new
   * fails (OAKUK_EINVAL, path "run_as") when the user does not exist or is root, and a deploy fails
   * when it has gone. NULL (the default) keeps the caller's uid: only for callers that are not root
   * themselves; a root caller then gets a logged message. Every QEMU also runs under
   * -sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny. */
  const char *run_as;
} oakuk_qemu_options;

/* Version 1 ends at search_path: a version-1 caller's shorter struct is read (and filled by
 * oakuk_qemu_options_init) only up to there; run_as then takes its default. */
#define OAKUK_QEMU_OPTIONS_VERSION_1 1
#define OAKUK_QEMU_OPTIONS_VERSION 2
#define OAKUK_QEMU_OPTIONS_INIT                                                                              \
  { OAKUK_QEMU_OPTIONS_VERSION, false, NULL, NULL }
/* Fills opts (a struct of that version's size) with defaults; OAKUK_EINVAL for an unknown version. */
OAKUK_API int oakuk_qemu_options_init(oakuk_qemu_options *opts, unsigned int version);

/* ---- probe ---- */

typedef struct oakuk_qemu_caps oakuk_qemu_caps;

/* Probes this machine: host architecture, qemu-system-* binaries and versions, KVM usability.
 * opts may be NULL (defaults). Never fails because QEMU or KVM is missing: that is what the caps say. */
OAKUK_API int oakuk_qemu_probe(oakuk_qemu_caps **out, const oakuk_qemu_options *opts, oakuk_error **error);
OAKUK_API oakuk_qemu_caps *oakuk_qemu_caps_ref(oakuk_qemu_caps *caps);
OAKUK_API void oakuk_qemu_caps_unref(oakuk_qemu_caps *caps);

/* GOARCH name of the host ("amd64", "arm64", ...). */
OAKUK_API const char *oakuk_qemu_caps_host_arch(const oakuk_qemu_caps *caps);
/* True when /dev/kvm opens, KVM_GET_API_VERSION is 12 and (x86) the cpu has vmx or svm. */
OAKUK_API bool oakuk_qemu_caps_kvm(const oakuk_qemu_caps *caps);
/* Why KVM is unusable (e.g. "cpu flags have no vmx/svm (nested virtualization?)"), or NULL. */
OAKUK_API const char *oakuk_qemu_caps_kvm_reason(const oakuk_qemu_caps *caps);
/* Path and version ("7.2.22") of qemu-system-<arch> for a GOARCH, or NULL when absent. */
OAKUK_API const char *oakuk_qemu_caps_qemu_path(const oakuk_qemu_caps *caps, const char *arch);
OAKUK_API const char *oakuk_qemu_caps_qemu_version(const oakuk_qemu_caps *caps, const char *arch);
/* Acceleration available for guests of arch: KVM for the host arch with usable KVM, TCG when
 * emulation is allowed and the binary exists, NONE otherwise. */
OAKUK_API int32_t oakuk_qemu_caps_accel_for_arch(const oakuk_qemu_caps *caps, const char *arch);
/* The node's unikernel acceleration (that of the host arch), OAKUK_ACCEL_*. */
OAKUK_API int32_t oakuk_qemu_caps_accel(const oakuk_qemu_caps *caps);
/* Foreign architectures runnable under TCG (only with allow_emulation), sorted. Only
 * architectures the command builder runs (amd64, arm64) are probed and listed. */
OAKUK_API size_t oakuk_qemu_caps_emulated_arch_count(const oakuk_qemu_caps *caps);
OAKUK_API const char *oakuk_qemu_caps_emulated_arch(const oakuk_qemu_caps *caps, size_t i);
/* The node report's "unikernel" object: {"accel": "kvm"|"tcg" (absent when none),
 * "qemu_version": "...", "emulated_archs": [...]}. Free with oakuk_free. */
OAKUK_API char *oakuk_qemu_caps_to_json(const oakuk_qemu_caps *caps);

/* ---- command builder ---- */

/* Builds the QEMU argv for spec (docs/architecture.md §10.1) with instance_dir as the per-instance directory
 * (serial.log, qmp.sock, files/). qemu_binary NULL = "qemu-system-<arch>". Checks the kernel
 * exists and matches the spec's architecture, detects flavor/version when unset, refuses
 * arguments with spaces, quotes, backslashes or control characters. On success *argv_out is a
 * NULL-terminated array (free with oakuk_qemu_argv_free) and *argc_out its length. The command
 * names its files by path, for a caller that runs it as it is; it carries the runtime's -sandbox
 * option but not the runtime's privilege drop (no -runas: QEMU 7.2 installs its seccomp filter
 * before -runas changes the uid, so with elevateprivileges=deny the change is killed). */
OAKUK_API int oakuk_qemu_build_argv(char ***argv_out, size_t *argc_out, const oakuk_instance_spec *spec,
                                    const char *instance_dir, const char *qemu_binary, oakuk_error **error);
OAKUK_API void oakuk_qemu_argv_free(char **argv);

/* ---- runtime ---- */

/* A unikernel runtime keeping its instances under <state_dir>/instances/<name>/. opts may be NULL.
 * Must be created on the thread owning the GMainContext that will run it. */
OAKUK_API oakuk_runtime *oakuk_qemu_runtime_new(const char *state_dir, const oakuk_qemu_options *opts,
                                                oakuk_error **error);

OAKUK_END_DECLS

#endif

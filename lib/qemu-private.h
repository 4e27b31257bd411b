/* Internals of the unikernel runtime shared between qemu.c (probe, command builder) and
 * qemu-runtime.c (instances), and seen by tests/unit/test-qemu.c. Not installed. */
#ifndef OAKUK_QEMU_PRIVATE_H
#define OAKUK_QEMU_PRIVATE_H

#include "runtime-private.h"

#include <sys/stat.h>
#include <sys/types.h>

G_BEGIN_DECLS

/* "x86_64" -> "amd64", "aarch64" -> "arm64", ...; NULL when unknown. Static strings. */
const char *oakuk_qemu_goarch_from_machine(const char *machine);
/* "amd64" -> "x86_64" (the qemu-system-* suffix); NULL when unknown. */
const char *oakuk_qemu_arch_suffix(const char *goarch);

/* Dotted IPv4 netmask <-> prefix length. mask_to_prefix returns -1 for a non-contiguous or
 * malformed mask; prefix_to_mask returns NULL outside 0..32 (free with g_free). */
int oakuk_qemu_mask_to_prefix(const char *mask);
char *oakuk_qemu_prefix_to_mask(int prefix);

/* Compares dotted versions "0.15.0" < "0.16.1": <0, 0, >0; malformed parts count as 0. */
int oakuk_qemu_version_cmp(const char *a, const char *b);

/* The guest network parameters for a flavor/version ("unikraft" + "0.15.0" -> ipv4_* form). */
char *oakuk_qemu_net_params(const char *flavor, const char *version, const char *ip, int prefix,
                            const char *gateway);

/* True when /proc/cpuinfo-style text has a "flags" line with vmx or svm. */
gboolean oakuk_qemu_cpuinfo_has_virt(const char *cpuinfo);

/* Guest memory plus QEMU's own overhead: 64 MB + 10% with KVM; under TCG the translation cache
 * (measured ~90 MB resident after a Linux boot) adds another 192 MB. */
int64_t oakuk_qemu_memory_limit_mb(int64_t guest_mb, int32_t accel);

/* The seccomp sandbox every QEMU runs under (-sandbox). */
#define OAKUK_QEMU_SANDBOX "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

/* The descriptors the runtime opens and passes, with the numbers QEMU sees them under: QEMU then
 * opens nothing by path that its (unprivileged) user could not. */
#define OAKUK_QEMU_FD_KERNEL 3    /* read-only: -kernel /proc/self/fd/3 */
#define OAKUK_QEMU_FD_INITRD 4    /* read-only: -initrd /proc/self/fd/4 */
#define OAKUK_QEMU_FD_SERIAL 5    /* serial.log, write-only: -add-fd fd=5,set=1 -serial file:/dev/fdset/1 */
#define OAKUK_QEMU_FD_QMP 6       /* qmp.sock, bound and listening: -chardev socket,fd=6,server=on */
#define OAKUK_QEMU_FD_TAP 7       /* the tap, attached in the instance's netns: -netdev tap,fd=7 */
#define OAKUK_QEMU_FD_VHOST 8     /* /dev/vhost-net (KVM): vhostfd=8 */
#define OAKUK_QEMU_FD_FILES 9     /* the files/ copy, a directory: -fsdev local,path=/proc/self/fd/9 */
#define OAKUK_QEMU_FD_SNAPSHOT 10 /* a snapshot to restore, read-only: -incoming fd:10 */
#define OAKUK_QEMU_FD_LAST OAKUK_QEMU_FD_SNAPSHOT

/* The command builder for the runtime: with paused, QEMU starts with -S (the runtime lets the
 * guest run once QMP listens, so no event of a quick guest is missed); with pass_fds, the
 * command takes the OAKUK_QEMU_FD_* descriptors instead of paths; flavor and version are what the
 * builder resolved (from the spec, else from the kernel); free both with g_free. */
GPtrArray *oakuk_qemu_build_argv_internal(const oakuk_instance_spec *spec, const char *dir,
                                          const char *qemu_binary, gboolean paused, gboolean pass_fds,
                                          char **flavor, char **version, GError **error);

/* The identity QEMU takes: a user's uid, primary gid and supplementary groups. */
typedef struct {
  uid_t uid;
  gid_t gid;
  GArray *groups; /* gid_t */
  char *name;
} OakukQemuUser;

/* Looks up run_as (a user name or a numeric uid with a passwd entry) into *user; refuses a
 * missing user and root (uid 0) with OAKUK_EINVAL naming the option "run_as". */
gboolean oakuk_qemu_user_lookup(const char *run_as, OakukQemuUser *user, GError **error);
void oakuk_qemu_user_clear(OakukQemuUser *user);
/* Whether the file st describes can be read by user (owner, group or other bits). */
gboolean oakuk_qemu_user_can_read(const OakukQemuUser *user, const struct stat *st);

/* One QMP line from QEMU, classified; strings borrowed from the JSON object. */
typedef enum {
  OAKUK_QMP_UNKNOWN,
  OAKUK_QMP_GREETING,
  OAKUK_QMP_EVENT,
  OAKUK_QMP_RETURN,
  OAKUK_QMP_ERROR
} OakukQmpKind;

typedef struct {
  OakukQmpKind kind;
  const char *id;              /* the command's id, or NULL */
  const char *event;           /* EVENT: its name, or NULL */
  const char *shutdown_reason; /* SHUTDOWN: data.reason, or NULL */
} OakukQmpMessage;

void oakuk_qmp_message_parse(JsonObject *o, OakukQmpMessage *out);

G_END_DECLS

#endif

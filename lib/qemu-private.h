/* Internals of the unikernel runtime shared between qemu.c (probe, command builder) and
 * qemu-runtime.c (instances), and seen by tests/unit/test-qemu.c. Not installed. */
#ifndef OAKUK_QEMU_PRIVATE_H
#define OAKUK_QEMU_PRIVATE_H

#include "runtime-private.h"

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

/* The command builder for the runtime: with paused, QEMU starts with -S (the runtime lets the
 * guest run once QMP listens, so no event of a quick guest is missed); flavor and version are
 * what the builder resolved (from the spec, else from the kernel); free both with g_free. */
GPtrArray *oakuk_qemu_build_argv_internal(const oakuk_instance_spec *spec, const char *dir,
                                          const char *qemu_binary, gboolean paused, char **flavor,
                                          char **version, GError **error);

G_END_DECLS

#endif

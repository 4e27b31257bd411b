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

/* The last max_lines non-empty lines of a serial log, control characters dropped, joined by
 * '\n'; "" when the log is missing or empty. */
char *oakuk_qemu_serial_tail(const char *path, guint max_lines);
/* The line of a serial log that best names a crash: the last "Kernel panic" line, else the last
 * line showing a crash; NULL when none (or no log). Looks at the last 64 KiB. */
char *oakuk_qemu_serial_crash_line(const char *path);
/* True when a serial log shows a crash (panic, Oops, CRIT, crash, segfault, ...). */
gboolean oakuk_qemu_serial_shows_crash(const char *text);

G_END_DECLS

#endif

/* Small operating-system helpers shared by the runtimes, the image cache and the OCI code:
 * removing trees, finding cgroup hierarchies, reading /proc/<pid>/stat. Not exported. */
#ifndef OAKUK_SYSUTIL_PRIVATE_H
#define OAKUK_SYSUTIL_PRIVATE_H

#include <glib.h>

G_BEGIN_DECLS

/* Removes path and everything below it without following symlinks; a missing path is success.
 * Goes on past failures, then reports the first as an OAKUK_EIO error naming the entry
 * ("remove <path>: <strerror>"). */
gboolean oakuk_rm_rf(const char *path, GError **error);

/* TRUE on a unified (v2) cgroup hierarchy. */
gboolean oakuk_cgroup_v2(void);
/* Mount point of the cgroup v1 hierarchy that holds controller ("memory", "cpu"), or NULL.
 * Read from /proc/self/mountinfo: hybrid systems mount cpu and cpuacct apart or together. */
char *oakuk_cgroup_v1_mount(const char *controller);

/* Reads /proc/<pid>/stat: state letter, utime+stime in clock ticks and start time in ticks since
 * boot (which, with the pid, names a process uniquely). Any output may be NULL. */
gboolean oakuk_proc_stat(GPid pid, char *state, guint64 *ticks, guint64 *start_time);

G_END_DECLS

#endif

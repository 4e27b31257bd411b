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

/* Points a download session at the proxies the environment names (http_proxy, https_proxy,
 * no_proxy, also upper case), or at none. GIO's default resolver would do the same through
 * libproxy and its modules, which a node would then carry in memory for good. */
void oakuk_session_use_env_proxy(gpointer soup_session);

/* TRUE on a unified (v2) cgroup hierarchy. */
gboolean oakuk_cgroup_v2(void);
/* Mount point of the cgroup v1 hierarchy that holds controller ("memory", "cpu"), or NULL.
 * Read from /proc/self/mountinfo: hybrid systems mount cpu and cpuacct apart or together. */
char *oakuk_cgroup_v1_mount(const char *controller);

/* Reads /proc/<pid>/stat: state letter, utime+stime in clock ticks and start time in ticks since
 * boot (which, with the pid, names a process uniquely). Any output may be NULL. */
gboolean oakuk_proc_stat(GPid pid, char *state, guint64 *ticks, guint64 *start_time);

/* Watches one process for its end, on a GMainContext: a child of ours through g_child_watch (which
 * reaps it and gives its wait status), a process we did not spawn through its pidfd, or where
 * pidfd_open is missing a 100 ms liveness poll guarded by the start time (against pid reuse).
 * fn runs once with the wait status (-1 when unknown); data is released with destroy afterwards.
 * The struct is embedded in its owner and must stay at the same address while watched. */
typedef void (*OakukExitFunc)(int wait_status, gpointer data);

typedef struct {
  GSource *source;
  int pidfd;
  GPid pid;
  guint64 start_time;
  gboolean child;
} OakukProcWatch;

#define OAKUK_PROC_WATCH_INIT                                                                                \
  { NULL, -1, 0, 0, FALSE }

void oakuk_proc_watch_child(OakukProcWatch *w, GPid pid, GMainContext *ctx, OakukExitFunc fn, gpointer data,
                            GDestroyNotify destroy);
void oakuk_proc_watch_adopted(OakukProcWatch *w, GPid pid, guint64 start_time, GMainContext *ctx,
                              OakukExitFunc fn, gpointer data, GDestroyNotify destroy);
/* TRUE while a watch is attached and has not fired. */
gboolean oakuk_proc_watch_active(const OakukProcWatch *w);
/* Stops watching (fn will not run) and closes the pidfd. */
void oakuk_proc_watch_clear(OakukProcWatch *w);

/* SIGKILLs pid and waits for it to be gone: reaped when it is our child, else (not ours to reap)
 * until it disappears, for at most 2 s. For shutdown paths that cannot return to a main loop. */
void oakuk_proc_kill_wait(GPid pid, gboolean own_child);

/* Calls adopt(impl, name) for every entry of dir not already in known (name -> anything); returns
 * how many adopt calls returned TRUE, or -1 with error when dir cannot be read. */
int oakuk_adopt_dir(const char *dir, GHashTable *known, gboolean (*adopt)(gpointer impl, const char *name),
                    gpointer impl, GError **error);

G_END_DECLS

#endif

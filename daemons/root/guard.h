/* The login guard (docs/security.md, "Login"): password hashing on worker threads, never on the
 * main loop, at most GUARD_THREADS at once with GUARD_QUEUE more waiting; and failed logins counted
 * per source address, which is then refused for a while. Everything but the work itself runs on
 * the main context. */
#ifndef OAKUK_ROOT_GUARD_H
#define OAKUK_ROOT_GUARD_H

#include "root.h"

G_BEGIN_DECLS

#define GUARD_THREADS 4
#define GUARD_QUEUE 64
/* GUARD_FAILURES failed logins within GUARD_WINDOW_MS block the source for GUARD_BLOCK_MS; every
 * further failure before a success doubles the block, up to GUARD_BLOCK_MAX_MS. A source quiet for
 * GUARD_FORGET_MS after its block is forgotten. */
#define GUARD_FAILURES 5
#define GUARD_WINDOW_MS 60000
#define GUARD_BLOCK_MS 30000
#define GUARD_BLOCK_MAX_MS (15 * 60000)
#define GUARD_FORGET_MS (15 * 60000)
/* Sources tracked at most: beyond, new sources are not counted (the queue still bounds the work). */
#define GUARD_MAX_SOURCES 16384

typedef void (*GuardWork)(gpointer data); /* on a worker thread */
typedef void (*GuardDone)(gpointer data); /* then on the main context */

Guard *guard_new(void);
void guard_free(Guard *g);

/* Runs work(data) on a worker and then done(data) on the main context; FALSE (nothing runs) when
 * GUARD_THREADS + GUARD_QUEUE jobs are in flight. */
gboolean guard_run(Guard *g, GuardWork work, GuardDone done, gpointer data);

/* source is the client's address; IPv6 addresses count by their /64. */
/* Milliseconds until source may try to log in again; 0 when it may now. */
gint64 guard_blocked_ms(Guard *g, const char *source, gint64 now_ms);
/* A failed login of source; the length of the block it starts (ms), or 0. */
gint64 guard_failure(Guard *g, const char *source, gint64 now_ms);
/* A successful login: source starts afresh. */
void guard_success(Guard *g, const char *source);

G_END_DECLS

#endif

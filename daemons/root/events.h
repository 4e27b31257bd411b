/* The dashboard's live views: server-sent events of what a user may see (events.c). */
#ifndef OAKUK_ROOT_EVENTS_H
#define OAKUK_ROOT_EVENTS_H

#include "root.h"

G_BEGIN_DECLS

/* Answers msg with an event stream for user of role (every user's applications and services when
 * sees_all), ended within token_left_s seconds (at most 300) or as soon as the user is removed or
 * gets another role; 503 when 32 are open. */
void events_open(Root *r, SoupServerMessage *msg, const char *user, guint role, gboolean sees_all,
                 gint64 token_left_s);
/* Streams open now. */
guint events_count(void);

G_END_DECLS

#endif

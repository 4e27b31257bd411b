/* The documents the root shows and sends, built from stored rows: Oakestra's service document with
 * its instance_list, application and cluster documents, and the job a cluster receives. */
#ifndef OAKUK_ROOT_VIEWS_H
#define OAKUK_ROOT_VIEWS_H

#include "root.h"
#include "store.h"

G_BEGIN_DECLS

/* The service document: the stored one plus next_instance_progressive_number, status and (unless
 * with_instances is FALSE) instance_list. compat leaves out instances being deleted (Oakestra
 * drops an instance from instance_list when it accepts the DELETE). */
JsonObject *view_service(Root *r, const StoreService *sv, gboolean with_instances, gboolean compat);
/* One instance_list entry (Oakestra's keys plus ours, docs/api.md). */
JsonObject *view_instance(Root *r, const StoreInstance *i);
JsonObject *view_application(const StoreApplication *a);
JsonObject *view_cluster(Root *r, const StoreCluster *c);
/* The job sent to a cluster: the service document of the revision instance n runs, without
 * instance_list, plus instance_number and generation (docs/reconcile.md "Messages"); NULL when
 * that revision is not stored. */
char *view_job(Root *r, const StoreService *sv, gint64 revision, gint64 n, gint64 generation);
/* Parses stored JSON text into an object (a new reference), or NULL. */
JsonObject *view_parse_object(const char *text);
char *view_object_text(JsonObject *o);

G_END_DECLS

#endif

/* Resolution of unikernel OCI references at registration (docs/unikernels.md, "OCI images"): the
 * registry is asked on a worker thread, never on the main loop, and the answers come back on it. */
#ifndef OAKUK_ROOT_RESOLVE_H
#define OAKUK_ROOT_RESOLVE_H

#include "root.h"

G_BEGIN_DECLS

/* Seconds a registry may stay silent during one resolution before it counts as unreachable. */
#define RESOLVE_TIMEOUT_S 10

typedef struct {
  char *reference;
  oakuk_oci_resolution *res; /* NULL when it failed */
  int32_t code;              /* when it failed: the liboakuk error code */
  char *error;               /* when it failed: why */
} Resolved;

/* Called on the main context with one Resolved per reference, in their order (borrowed). */
typedef void (*ResolveDone)(GPtrArray *resolved, gpointer data);

/* Resolves every reference (a GPtrArray of strings, taken) with oakuk_oci_resolve off the main loop;
 * insecure_registries as the node's option (NULL: loopback only). */
void resolve_references(GPtrArray *references, const char *insecure_registries, ResolveDone done,
                        gpointer data);

G_END_DECLS

#endif

/* Internal layout of the model objects, shared by model.c (parse/serialize/getters) and
 * aggregate.c (which builds aggregates). Not installed, not exported. */
#ifndef OAKUK_MODEL_PRIVATE_H
#define OAKUK_MODEL_PRIVATE_H

#include "oakuk-private.h"

#include <json-glib/json-glib.h>

G_BEGIN_DECLS

/* One aggregation_per_architecture entry. */
typedef struct {
  char *arch;
  double cpu_percent;    /* average over the contributing nodes */
  int64_t cpu_cores;     /* sum of free cores */
  double memory_percent; /* "memory": average used-memory percent */
  int64_t memory_mb;     /* "memory_in_mb": sum of available MB */
  int32_t accel;         /* OAKUK_ACCEL_*; NONE when the JSON entry carried no accel */
  JsonObject *extra;     /* keys this library does not know, re-emitted by to_json; may be NULL */
} OakukPerArch;

struct oakuk_cluster_aggregate {
  gatomicrefcount ref;
  char *id;
  char *name;
  int64_t received_at_ms;
  double cpu_percent;
  double memory_percent;
  int64_t cpu_cores;
  int64_t memory_mb;
  int64_t number_of_nodes;
  int64_t active_nodes;
  int64_t gpus; /* sum over the active nodes; 0 when the aggregate has none (older clusters) */
  int64_t tpus;
  bool virt_container;
  bool virt_unikernel;
  GPtrArray *archs;    /* char*, distinct, in the order read or folded */
  GPtrArray *per_arch; /* OakukPerArch*, sorted by arch name */
  GPtrArray *jobs;     /* char* instance names */
  JsonObject *extra;   /* unknown top-level keys (Oakestra's gpu_cores, more, ...); may be NULL */
};

/* A zeroed aggregate with empty arrays and refcount 1. */
oakuk_cluster_aggregate *oakuk_cluster_aggregate_new_empty(void);
/* Appends a zeroed entry for arch (copied) and returns it; the caller keeps entries sorted by
 * calling oakuk_cluster_aggregate_sort_per_arch once it is done adding. */
OakukPerArch *oakuk_cluster_aggregate_add_per_arch(oakuk_cluster_aggregate *agg, const char *arch);
void oakuk_cluster_aggregate_sort_per_arch(oakuk_cluster_aggregate *agg);

G_END_DECLS

#endif

/* Instances on this node: control/deploy and control/delete, the deploy pipeline (image, network,
 * port mappings, runtime), status events on nodes/<id>/job, the local restart policy and the
 * job records (<state_dir>/jobs/<name>.json) that let a restarted node re-adopt what runs.
 *
 * Each instance moves through phases; every asynchronous step holds a reference and re-checks
 * the instance when it returns, so a delete (or failure) arriving meanwhile is honoured there. */
#include "node.h"

#include <errno.h>
#include <glib/gstdio.h>
#include <string.h>

static void start_deploy(Inst *i);
static void cleanup(Inst *i, Then then);

static Inst *inst_ref(Inst *i) {
  g_atomic_int_inc(&i->refs);
  return i;
}

void inst_unref(Inst *i) {
  if (i == NULL || !g_atomic_int_dec_and_test(&i->refs))
    return;
  g_free(i->name);
  g_free(i->job_name);
  g_clear_pointer(&i->job, json_object_unref);
  oakuk_microservice_unref(i->ms);
  g_free(i->arch);
  g_free(i->code);
  g_free(i->code_sha256);
  g_free(i->ip);
  g_free(i->detail);
  oakuk_image_unref(i->image);
  oakuk_image_fetch_cancel(i->fetch);
  oakuk_image_fetch_unref(i->fetch);
  oakuk_net_instance_info_unref(i->ninfo);
  if (i->replacement)
    inst_unref(i->replacement);
  g_free(i);
}

/* unikernel.warm_pool (docs/unikernels.md "Pool"): the runtime's pool for a service, kept while
 * the node runs instances of it and for POOL_LINGER_S after its last one left. */
#define POOL_LINGER_S 60

typedef struct {
  Node *node;
  char *job_name;
  oakuk_instance_spec *spec; /* an instance's: the template */
  guint linger;
} NodePool;

static void node_pool_free(gpointer data) {
  NodePool *p = data;
  if (p->linger)
    g_source_remove(p->linger);
  if (p->node->uk_rt)
    oakuk_runtime_pool_set(p->node->uk_rt, p->spec, 0, NULL);
  oakuk_instance_spec_unref(p->spec);
  g_free(p->job_name);
  g_free(p);
}

void insts_init(Node *n) {
  n->insts = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, (GDestroyNotify)inst_unref);
  n->pools = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, node_pool_free);
}

static gboolean pool_linger_done(gpointer data) {
  NodePool *p = data;
  p->linger = 0;
  od_log(G_LOG_LEVEL_MESSAGE, "pool", "job", p->job_name, "msg",
         "no instance of the service for " G_STRINGIFY(POOL_LINGER_S) " s: its pooled QEMUs stopped", NULL);
  g_hash_table_remove(p->node->pools, p->job_name);
  return G_SOURCE_REMOVE;
}

/* An instance left: the service's pool lingers when it was the last one here. */
static void pool_on_instance_gone(Node *n, const char *job_name) {
  NodePool *p = g_hash_table_lookup(n->pools, job_name);
  if (p == NULL || p->linger)
    return;
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, n->insts);
  while (g_hash_table_iter_next(&it, NULL, &v))
    if (strcmp(((Inst *)v)->job_name, job_name) == 0 && !((Inst *)v)->gone)
      return;
  p->linger = g_timeout_add_seconds(POOL_LINGER_S, pool_linger_done, p);
}

/* ---- records ---- */

static char *record_path(Node *n, const char *name) {
  g_autofree char *leaf = g_strdup_printf("%s.json", name);
  return g_build_filename(n->state_dir, "jobs", leaf, NULL);
}

static void record_write(Inst *i) {
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_object_member(o, "job", json_object_ref(i->job));
  json_object_set_boolean_member(o, "failed", i->phase == PHASE_FAILED);
  g_autoptr(JsonNode) root = json_node_init_object(json_node_alloc(), o);
  g_autofree char *text = od_json_to_string(root, TRUE);
  g_autofree char *path = record_path(i->node, i->name);
  g_autoptr(GError) error = NULL;
  if (!g_file_set_contents(path, text, -1, &error))
    od_log(G_LOG_LEVEL_WARNING, "state", "instance", i->name, "msg", error->message, NULL);
}

static void record_remove(Inst *i) {
  g_autofree char *path = record_path(i->node, i->name);
  if (g_unlink(path) != 0 && errno != ENOENT)
    od_log(G_LOG_LEVEL_WARNING, "state", "file", path, "msg", g_strerror(errno), NULL);
}

/* ---- status events ---- */

/* The instance status event (docs/architecture.md §7.3; ready and ready_ms: docs/cluster.md). */
static void publish_status(Node *n, const char *job_name, gint64 number, gint64 generation, int32_t status,
                           const char *detail, gboolean ready, gint64 ready_ms, gboolean restarting) {
  g_autoptr(JsonObject) o = json_object_new();
  json_object_set_string_member(o, "job_name", job_name);
  json_object_set_int_member(o, "instance", number);
  json_object_set_int_member(o, "generation", generation);
  json_object_set_string_member(o, "status", oakuk_instance_status_name(status));
  json_object_set_string_member(o, "status_detail", detail ? detail : "");
  json_object_set_boolean_member(o, "ready", ready && status == OAKUK_STATUS_RUNNING);
  if (ready && status == OAKUK_STATUS_RUNNING && ready_ms >= 0)
    json_object_set_int_member(o, "ready_ms", ready_ms);
  /* The node restarts it itself (CrashLoopBackOff): a FAILED or DEAD then is not for the cluster to move. */
  json_object_set_boolean_member(o, "restarting", restarting);
  g_autoptr(JsonNode) root = json_node_init_object(json_node_alloc(), o);
  g_autofree char *text = od_json_to_string(root, FALSE);
  node_publish(n, "job", text);
}

static void set_status(Inst *i, int32_t status, const char *detail) {
  i->status = status;
  if (status != OAKUK_STATUS_RUNNING)
    i->ready = FALSE;
  g_free(i->detail);
  i->detail = g_strdup(detail ? detail : "");
  od_log(status == OAKUK_STATUS_FAILED || status == OAKUK_STATUS_DEAD ? G_LOG_LEVEL_WARNING
                                                                      : G_LOG_LEVEL_MESSAGE,
         "status", "instance", i->name, "status", oakuk_instance_status_name(status), "msg", i->detail, NULL);
  publish_status(i->node, i->job_name, i->number, i->generation, status, i->detail, i->ready, i->ready_ms,
                 i->restarting);
}

void insts_republish(Node *n) {
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, n->insts);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    Inst *i = v;
    publish_status(n, i->job_name, i->number, i->generation, i->status, i->detail, i->ready, i->ready_ms,
                   i->restarting);
  }
}

/* ---- the job ---- */

/* Builds an instance from a deploy payload; NULL with *problem when the payload is not a job. */
/* The end, at at_us, of one timed phase of a deploy and the start of the next: "fetch" (the download,
 * or the cache's answer when nothing was downloaded), "unpack" (unpacking and checking what was
 * downloaded), "network", "boot" (the runtime to RUNNING) and "ready" (RUNNING to the readiness
 * probe's first success). Only a deploy's own phases are timed, and each once: a restart starts
 * timing again from its own beginning, a re-adopted instance has none. */
static void phase_done_at(Inst *i, const char *phase, const char *next, gint64 at_us) {
  if (i->timing == NULL || strcmp(i->timing, phase) != 0)
    return;
  node_api_observe_phase(i->node, i->virt, phase, (double)(at_us - i->timing_since_us) / G_USEC_PER_SEC);
  i->timing = next;
  i->timing_since_us = at_us;
}

static void phase_done(Inst *i, const char *phase, const char *next) {
  phase_done_at(i, phase, next, g_get_monotonic_time());
}

static Inst *inst_from_job(Node *n, JsonObject *job, char **problem) {
  g_autoptr(NodeJob) j = node_job_parse(job, n->caps, problem);
  if (j == NULL)
    return NULL;
  Inst *i = g_new0(Inst, 1);
  i->refs = 1;
  i->node = n;
  i->ms = g_steal_pointer(&j->ms);
  i->job = g_steal_pointer(&j->job);
  i->job_name = g_steal_pointer(&j->job_name);
  i->number = j->number;
  char *name = oakuk_instance_name(i->job_name, i->number);
  i->name = g_strdup(name);
  od_oakuk_free(name);
  i->virt = j->virt;
  i->arch = g_steal_pointer(&j->arch);
  i->code = g_steal_pointer(&j->code);
  i->code_sha256 = g_steal_pointer(&j->code_sha256);
  i->ip = g_steal_pointer(&j->ip);
  i->restart = j->restart;
  i->generation = j->generation;
  i->ready_ms = -1;
  i->status = OAKUK_STATUS_NODE_SCHEDULED;
  i->detail = g_strdup("");
  return i;
}

/* ---- failure, cleanup, restart ---- */

/* An instance ended or its deploy failed, and its restart policy restarts it: here, after a
 * delay that doubles with every restart (CrashLoopBackOff) and starts over once it ran for
 * NODE_STABLE_S. A failure a restart cannot mend here (no_retry) ends FAILED: the cluster moves it. */
static void fail(Inst *i, int32_t status, const char *detail) {
  if (i->delete_requested) {
    cleanup(i, THEN_DELETE);
    return;
  }
  gint64 now = g_get_monotonic_time();
  if (i->running_since_us > 0 && now - i->running_since_us >= NODE_STABLE_S * G_USEC_PER_SEC) {
    i->restarts = 0;
    i->backoff_s = 0;
  }
  i->running_since_us = 0;
  i->restarting = i->restart != OAKUK_RESTART_NEVER && !i->no_retry;
  if (i->restarting) {
    i->restarts++;
    i->backoff_s = i->backoff_s == 0 ? NODE_BACKOFF_FIRST_S : MIN(i->backoff_s * 2, NODE_BACKOFF_MAX_S);
    g_autofree char *d =
        g_strdup_printf("%s; restart %u in %u s (backoff)", detail, i->restarts, i->backoff_s);
    set_status(i, status, d);
    cleanup(i, THEN_RETRY);
    return;
  }
  if (status == OAKUK_STATUS_DEAD && i->restart == OAKUK_RESTART_NEVER) {
    set_status(i, status, detail); /* kept as it is (serial log, state) until deleted */
    return;
  }
  set_status(i, OAKUK_STATUS_FAILED, detail);
  cleanup(i, THEN_FAILED);
}

static gboolean on_backoff(gpointer data) {
  Inst *i = data;
  i->timer = 0;
  if (!i->gone && i->phase == PHASE_BACKOFF)
    start_deploy(i);
  return G_SOURCE_REMOVE;
}

static void cleanup_done(Inst *i) {
  Node *n = i->node;
  g_clear_pointer(&i->image, oakuk_image_unref);
  g_clear_pointer(&i->ninfo, oakuk_net_instance_info_unref);
  Then then = i->delete_requested ? THEN_DELETE : i->then;
  switch (then) {
  case THEN_RETRY:
    i->phase = PHASE_BACKOFF;
    i->timer = g_timeout_add_seconds_full(G_PRIORITY_DEFAULT, MAX(i->backoff_s, 1), on_backoff, inst_ref(i),
                                          (GDestroyNotify)inst_unref);
    break;
  case THEN_FAILED:
    i->phase = PHASE_FAILED;
    record_write(i);
    break;
  case THEN_DELETE:
    i->gone = TRUE;
    if (i->replacement != NULL) { /* a newer generation of another variant takes the name over */
      Inst *fresh = g_steal_pointer(&i->replacement);
      g_hash_table_replace(n->insts, fresh->name, fresh);
      record_write(fresh);
      start_deploy(fresh);
      break;
    }
    record_remove(i);
    set_status(i, OAKUK_STATUS_UNDEPLOYED, "");
    g_autofree char *job = g_strdup(i->job_name);
    g_hash_table_remove(n->insts, i->name);
    pool_on_instance_gone(n, job);
    break;
  }
}

static void on_net_teardown(int status, oakuk_error *error, void *data) {
  Inst *i = data;
  if (status != 0)
    od_log(G_LOG_LEVEL_WARNING, "cleanup", "instance", i->name, "msg", oakuk_error_message(error), NULL);
  if (!i->gone)
    cleanup_done(i);
  inst_unref(i);
}

static void cleanup_net(Inst *i) {
  oakuk_net_instance_teardown_async(i->node->net, i->name, on_net_teardown, inst_ref(i));
}

/* Whether rt has the instance (an adopted one may not have reported a status yet). */
static gboolean runtime_knows(oakuk_runtime *rt, const char *name) {
  for (size_t k = 0; rt != NULL && k < oakuk_runtime_instance_count(rt); k++)
    if (strcmp(oakuk_runtime_instance_name(rt, k), name) == 0)
      return TRUE;
  return FALSE;
}

static oakuk_runtime *runtime_of(Inst *i) {
  return i->virt == OAKUK_VIRT_CONTAINER ? i->node->ctr_rt : i->node->uk_rt;
}

/* Removes what the instance holds (runtime instance, then network), then does then. */
static void cleanup(Inst *i, Then then) {
  if (i->timer) {
    g_source_remove(i->timer);
    i->timer = 0;
  }
  i->then = then;
  if (i->phase == PHASE_CLEANUP)
    return; /* the cleanup in flight ends with the new then */
  i->phase = PHASE_CLEANUP;
  oakuk_runtime *rt = runtime_of(i);
  if (i->runtime_owned && runtime_knows(rt, i->name)) {
    oakuk_error *err = NULL;
    if (oakuk_runtime_undeploy(rt, i->name, &err) == 0)
      return; /* UNDEPLOYED from the runtime continues with the network */
    od_log(G_LOG_LEVEL_WARNING, "cleanup", "instance", i->name, "msg", oakuk_error_message(err), NULL);
    oakuk_error_free(err);
  }
  i->runtime_owned = FALSE;
  cleanup_net(i);
}

/* ---- the deploy pipeline ---- */

/* A container's code_sha256 (docs/architecture.md §4.3) is the digest of what its reference names
 * (an index or a manifest): the image is pulled by that digest, so the registry cannot hand over
 * other bits. NULL with *problem when code names another digest, or is an oci-archive: (no
 * registry digest to pull by). */
static char *container_reference(const Inst *i, char **problem) {
  if (i->code_sha256 == NULL || *i->code_sha256 == '\0')
    return g_strdup(i->code);
  if (g_str_has_prefix(i->code, "oci-archive:")) {
    *problem = g_strdup_printf("code_sha256: cannot be checked for %s (an OCI layout tarball has no registry "
                               "digest to pull by): publish it in a registry or leave code_sha256 out",
                               i->code);
    return NULL;
  }
  const char *slash = strrchr(i->code, '/');
  const char *last = slash ? slash + 1 : i->code;
  const char *at = strchr(last, '@');
  if (at != NULL) {
    if (g_str_has_prefix(at + 1, "sha256:") &&
        g_ascii_strcasecmp(at + 1 + strlen("sha256:"), i->code_sha256) == 0)
      return g_strdup(i->code);
    *problem = g_strdup_printf("code_sha256 %s: code %s names another digest", i->code_sha256, i->code);
    return NULL;
  }
  const char *colon = strchr(last, ':');
  g_autofree char *repo = colon ? g_strndup(i->code, (gsize)(colon - i->code)) : g_strdup(i->code);
  return g_strdup_printf("%s@sha256:%s", repo, i->code_sha256);
}

static oakuk_instance_spec *make_spec(Inst *i) {
  const oakuk_microservice *ms = i->ms;
  oakuk_instance_spec *s = oakuk_instance_spec_new(i->name);
  oakuk_instance_spec_set_virt(s, i->virt);
  if (oakuk_microservice_memory_mb(ms) > 0)
    oakuk_instance_spec_set_memory_mb(s, oakuk_microservice_memory_mb(ms));
  if (oakuk_microservice_vcpus(ms) > 0)
    oakuk_instance_spec_set_vcpus(s, (int32_t)oakuk_microservice_vcpus(ms));
  for (size_t k = 0; k < oakuk_microservice_cmd_count(ms); k++)
    oakuk_instance_spec_add_arg(s, oakuk_microservice_cmd(ms, k));
  for (size_t k = 0; k < oakuk_microservice_env_count(ms); k++)
    oakuk_instance_spec_add_env(s, oakuk_microservice_env(ms, k));
  oakuk_instance_spec_set_one_shot(s, oakuk_microservice_one_shot(ms));
  oakuk_net_instance_info *ni = i->ninfo;
  if (i->virt == OAKUK_VIRT_CONTAINER) {
    g_autofree char *problem = NULL;
    g_autofree char *ref = container_reference(i, &problem);
    oakuk_instance_spec_set_image(s, ref ? ref : i->code); /* NULL: refused by precheck */
    const NodeRegistryAuth *ra = node_registry_auth(i->node, i->code);
    if (ra)
      oakuk_instance_spec_set_registry_auth(s, ra->username, ra->password);
  } else {
    /* An OCI image's Cmd and Env (docs/unikernels.md): the arguments when the service has no cmd. */
    for (size_t k = 0; oakuk_microservice_cmd_count(ms) == 0 && k < oakuk_image_arg_count(i->image); k++)
      oakuk_instance_spec_add_arg(s, oakuk_image_arg(i->image, k));
    for (size_t k = 0; k < oakuk_image_env_count(i->image); k++)
      oakuk_instance_spec_add_env(s, oakuk_image_env(i->image, k));
    oakuk_instance_spec_set_arch(s, i->arch);
    oakuk_instance_spec_set_accel(s, i->accel);
    oakuk_instance_spec_set_kernel(s, oakuk_image_kernel(i->image));
    oakuk_instance_spec_set_initrd(s, oakuk_image_initrd(i->image));
    oakuk_instance_spec_set_files_dir(s, oakuk_image_files_dir(i->image));
    oakuk_instance_spec_set_graceful_stop_s(s, (int32_t)oakuk_microservice_uk_graceful_stop_s(ms));
    const char *flavor =
        oakuk_microservice_uk_flavor(ms) ? oakuk_microservice_uk_flavor(ms) : oakuk_image_flavor(i->image);
    if (flavor && strcmp(flavor, "unknown") != 0)
      oakuk_instance_spec_set_flavor(s, flavor);
    /* Only a Unikraft version selects a network convention; a Linux one does not. */
    if (oakuk_microservice_uk_version(ms))
      oakuk_instance_spec_set_version(s, oakuk_microservice_uk_version(ms));
    else if (g_strcmp0(flavor, "unikraft") == 0 && oakuk_image_version(i->image))
      oakuk_instance_spec_set_version(s, oakuk_image_version(i->image));
    oakuk_instance_spec_set_cmdline_extra(s, oakuk_image_cmdline_extra(i->image));
    /* Snapshots live with their image (removed with it) and belong to one service. */
    if (oakuk_microservice_uk_start(ms) == OAKUK_UKSTART_SNAPSHOT) {
      g_autofree char *dir = g_build_filename(oakuk_image_dir(i->image), "snapshots", NULL);
      oakuk_instance_spec_set_snapshot(s, dir, i->job_name);
    }
  }
  if (ni != NULL) { /* none for network: "none": no namespace of ours, no interface, no TCP probe */
    oakuk_instance_spec_set_network(
        s, oakuk_net_instance_info_netns_path(ni), oakuk_net_instance_info_tap(ni),
        oakuk_net_instance_info_guest_ip(ni), (int32_t)oakuk_net_instance_info_guest_prefix(ni),
        oakuk_net_instance_info_guest_gateway(ni), oakuk_net_instance_info_guest_mac(ni));
    /* The runtime probes the instance's IP on the guest port (the service port, by default). */
    oakuk_instance_spec_set_readiness_tcp(s, oakuk_net_instance_info_ip(ni),
                                          oakuk_microservice_readiness_tcp(ms));
  }
  oakuk_instance_spec_set_readiness_serial(s, oakuk_microservice_readiness_serial(ms));
  return s;
}

/* An instance of this node being removed that maps host port `port`/proto. The cluster confirms a
 * delete as it sends it, so the next instance of a service with a host port can arrive here while
 * the old one's QEMU or container is still stopping: it waits for the port (docs/node.md). */
static Inst *leaving_holder(Inst *i, int32_t port, int32_t proto) {
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, i->node->insts);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    Inst *o = v;
    /* Also an instance of the same service not (yet) being removed: the cluster places a service's
     * next instance on a host port only once it has sent the delete of the one holding it, and the
     * delete (control/delete) may arrive after the deploy (control/deploy). */
    gboolean leaving = o->phase == PHASE_CLEANUP && o->delete_requested;
    if (o == i || o->ms == NULL || o->gone || (!leaving && g_strcmp0(o->job_name, i->job_name) != 0))
      continue;
    for (size_t k = 0; k < oakuk_microservice_port_count(o->ms); k++)
      if (oakuk_microservice_port_host(o->ms, k) == port && oakuk_microservice_port_proto(o->ms, k) == proto)
        return o;
  }
  return NULL;
}

#define PORT_WAIT_S 60

static void launch(Inst *i);

static gboolean on_port_wait(gpointer data) {
  Inst *i = data;
  i->timer = 0;
  if (!i->gone && i->phase == PHASE_PORT_WAIT)
    launch(i);
  return G_SOURCE_REMOVE;
}

static void launch(Inst *i) {
  const oakuk_microservice *ms = i->ms;
  for (size_t k = 0; k < oakuk_microservice_port_count(ms); k++) {
    Inst *holder =
        leaving_holder(i, oakuk_microservice_port_host(ms, k), oakuk_microservice_port_proto(ms, k));
    if (holder == NULL)
      continue;
    gint64 now = g_get_monotonic_time();
    if (i->phase != PHASE_PORT_WAIT) {
      i->port_wait_until_us = now + PORT_WAIT_S * G_USEC_PER_SEC;
      g_autofree char *d = g_strdup_printf("waiting for instance %s, being removed, to release host port %d",
                                           holder->name, oakuk_microservice_port_host(ms, k));
      od_log(G_LOG_LEVEL_MESSAGE, "deploy", "instance", i->name, "msg", d, NULL);
      set_status(i, OAKUK_STATUS_CREATING, d);
    }
    if (now < i->port_wait_until_us) {
      i->phase = PHASE_PORT_WAIT;
      i->timer =
          g_timeout_add_full(G_PRIORITY_DEFAULT, 50, on_port_wait, inst_ref(i), (GDestroyNotify)inst_unref);
      return;
    }
    break; /* waited long enough: the mapping below fails and says by whom */
  }
  for (size_t k = 0; k < oakuk_microservice_port_count(ms); k++) {
    g_autofree char *spec =
        g_strdup_printf("%d:%d/%s", oakuk_microservice_port_host(ms, k), oakuk_microservice_port_guest(ms, k),
                        oakuk_microservice_port_proto(ms, k) == OAKUK_PROTO_UDP ? "udp" : "tcp");
    oakuk_error *err = NULL;
    if (oakuk_net_port_map_add(i->node->net, i->name, spec, &err) != 0) {
      g_autofree char *d = g_strdup_printf("port mapping %s: %s", spec, oakuk_error_message(err));
      oakuk_error_free(err);
      fail(i, OAKUK_STATUS_FAILED, d);
      return;
    }
  }
  oakuk_instance_spec *s = make_spec(i);
  oakuk_error *err = NULL;
  i->phase = PHASE_RUNTIME;
  int rc = oakuk_runtime_deploy(runtime_of(i), s, &err);
  oakuk_instance_spec_unref(s);
  if (rc != 0) {
    g_autofree char *d =
        g_strdup_printf("%s runtime: %s", oakuk_virt_name(i->virt), oakuk_error_message(err));
    oakuk_error_free(err);
    fail(i, OAKUK_STATUS_FAILED, d);
    return;
  }
  i->runtime_owned = TRUE;
}

static void on_net_setup(int status, oakuk_net_instance_info *info, oakuk_error *error, void *data) {
  Inst *i = data;
  if (i->gone) {
    inst_unref(i);
    return;
  }
  if (i->delete_requested) {
    cleanup(i, THEN_DELETE);
  } else if (status != 0) {
    g_autofree char *d = g_strdup_printf("network: %s", oakuk_error_message(error));
    fail(i, OAKUK_STATUS_FAILED, d);
  } else {
    i->ninfo = oakuk_net_instance_info_ref(info);
    phase_done(i, "network", "boot");
    launch(i);
  }
  inst_unref(i);
}

static void setup_net(Inst *i) {
  if (oakuk_microservice_network(i->ms) == OAKUK_NETWORK_NONE) {
    /* No network (docs/unikernels.md "network"): QEMU gets no NIC, runc a namespace of its own
     * with loopback only. */
    phase_done(i, "network", "boot");
    launch(i);
    return;
  }
  i->phase = PHASE_NET;
  int32_t mode = i->virt == OAKUK_VIRT_CONTAINER                       ? OAKUK_NET_CONTAINER
                 : oakuk_microservice_uk_net(i->ms) == OAKUK_UKNET_NAT ? OAKUK_NET_UK_NAT
                                                                       : OAKUK_NET_UK_DIRECT;
  oakuk_net_instance_setup_async(i->node->net, i->name, i->ip, mode, on_net_setup, inst_ref(i));
}

static void on_progress(int64_t bytes, int64_t total, void *data) {
  Inst *i = data;
  if (i->gone || i->phase != PHASE_FETCH)
    return;
  gint64 now = g_get_monotonic_time();
  /* The image library reports the end of every download: the last report ends the fetch phase. */
  i->downloaded_us = now;
  int pct = total > 0 ? (int)(bytes * 100 / total) : -1;
  /* At most one event a second, or on every 10% step. */
  if (now - i->last_progress_us < G_USEC_PER_SEC && (pct < 0 || pct - i->last_progress_pct < 10))
    return;
  i->last_progress_us = now;
  i->last_progress_pct = pct;
  g_autofree char *d = pct >= 0 ? g_strdup_printf("downloading %d%% of %.1f MB", pct, (double)total / 1e6)
                                : g_strdup_printf("downloading %.1f MB", (double)bytes / 1e6);
  set_status(i, OAKUK_STATUS_CREATING, d);
}

static void on_fetched(oakuk_image *image, oakuk_error *error, void *data) {
  Inst *i = data;
  g_clear_pointer(&i->fetch, oakuk_image_fetch_unref);
  if (i->gone) {
    inst_unref(i);
    return;
  }
  const char *karch = image ? oakuk_image_arch(image) : NULL;
  if (i->delete_requested) {
    cleanup(i, THEN_DELETE);
  } else if (image == NULL) {
    /* A refusal by policy (file:// outside --image-file-dirs or not a regular file, an unsafe
     * archive) does not change by retrying here. */
    i->no_retry = oakuk_error_code(error) == OAKUK_EPERM ||
                  oakuk_error_code(error) == OAKUK_EUNSUPPORTED; /* an OCI image without our platform */
    g_autofree char *d = g_strdup_printf("image %s: %s", i->code, oakuk_error_message(error));
    fail(i, OAKUK_STATUS_FAILED, d);
  } else if (oakuk_microservice_uk_start(i->ms) == OAKUK_UKSTART_SNAPSHOT && oakuk_image_files_dir(image)) {
    i->no_retry = TRUE;
    g_autofree char *d =
        g_strdup_printf("unikernel.start \"snapshot\": image %s shares files/ with the guest "
                        "over 9p, which QEMU cannot save; use start \"boot\"",
                        i->code);
    fail(i, OAKUK_STATUS_FAILED, d);
  } else if (g_strcmp0(karch, i->arch) != 0) {
    i->no_retry = TRUE; /* the same image will not change its architecture */
    g_autofree char *d = g_strdup_printf("image %s: the kernel is built for %s, not for %s", i->code,
                                         karch ? karch : "an unknown architecture", i->arch);
    fail(i, OAKUK_STATUS_FAILED, d);
  } else {
    i->image = oakuk_image_ref(image);
    if (i->downloaded_us > 0)
      phase_done_at(i, "fetch", "unpack", i->downloaded_us);
    phase_done(i, i->downloaded_us > 0 ? "unpack" : "fetch", "network");
    set_status(i, OAKUK_STATUS_CREATING, "preparing the network");
    setup_net(i);
  }
  inst_unref(i);
}

/* What this node refuses before making anything: no runtime for the virtualization, no way to
 * run the architecture, no code. */
static char *precheck(Inst *i) {
  Node *n = i->node;
  if (i->virt == OAKUK_VIRT_CONTAINER && n->ctr_rt == NULL)
    return g_strdup(n->offer_container ? "placement: this node has no container runtime (runc not found)"
                                       : "placement: this node does not offer containers (--virtualization)");
  if (i->virt == OAKUK_VIRT_UNIKERNEL && !n->offer_unikernel)
    return g_strdup("placement: this node does not offer unikernels (--virtualization)");
  if (i->code == NULL || *i->code == '\0')
    return g_strdup_printf("placement: the job has no %s code for %s", oakuk_virt_name(i->virt), i->arch);
  if (i->virt == OAKUK_VIRT_CONTAINER) {
    char *problem = NULL;
    g_autofree char *ref = container_reference(i, &problem);
    if (ref == NULL)
      return problem;
  }
  if (i->virt == OAKUK_VIRT_UNIKERNEL) {
    i->accel = oakuk_qemu_caps_accel_for_arch(n->caps, i->arch);
    if (i->accel == OAKUK_ACCEL_NONE)
      return g_strdup_printf("placement: this %s node cannot run %s unikernels (%s)",
                             oakuk_qemu_caps_host_arch(n->caps), i->arch,
                             n->allow_emulation ? "no QEMU for that architecture"
                                                : "no usable KVM and emulation is not allowed here");
  }
  return NULL;
}

static void start_deploy(Inst *i) {
  i->restarting = FALSE;
  i->runtime_owned = FALSE;
  i->last_progress_us = 0;
  i->last_progress_pct = -100;
  i->downloaded_us = 0;
  /* A container's image is the runtime's business: its deploy starts with the network. */
  i->timing = i->virt == OAKUK_VIRT_CONTAINER ? "network" : "fetch";
  i->timing_since_us = g_get_monotonic_time();
  g_autofree char *problem = precheck(i);
  if (problem != NULL) {
    i->phase = PHASE_FETCH;
    i->no_retry = TRUE; /* retrying here cannot help */
    fail(i, OAKUK_STATUS_FAILED, problem);
    return;
  }
  if (i->virt == OAKUK_VIRT_CONTAINER) {
    set_status(i, OAKUK_STATUS_CREATING, "preparing the network");
    setup_net(i);
    return;
  }
  i->phase = PHASE_FETCH;
  g_autofree char *d = g_strdup_printf("fetching image %s", i->code);
  set_status(i, OAKUK_STATUS_CREATING, d);
  oakuk_error *err = NULL;
  int rc;
  if (oakuk_image_code_is_oci(i->code)) {
    /* The reference as the cluster forwarded it (pinned to a digest by the root when it could
     * resolve it), the platform of the architecture placed here. */
    const NodeRegistryAuth *ra = node_registry_auth(i->node, i->code);
    rc = oakuk_image_cache_fetch_oci_start(&i->fetch, i->node->images, i->code, i->arch,
                                           ra ? ra->username : NULL, ra ? ra->password : NULL, on_progress,
                                           on_fetched, inst_ref(i), &err);
  } else {
    rc = oakuk_image_cache_fetch_start(&i->fetch, i->node->images, i->code, i->code_sha256, on_progress,
                                       on_fetched, inst_ref(i), &err);
  }
  if (rc != 0) {
    inst_unref(i);
    g_autofree char *fd = g_strdup_printf("image %s: %s", i->code, oakuk_error_message(err));
    oakuk_error_free(err);
    i->no_retry = TRUE;
    fail(i, OAKUK_STATUS_FAILED, fd);
  }
}

/* ---- control topics ---- */

/* What runs, and how: a newer generation with the same of these is the same instance. */
static gboolean same_instance(const Inst *a, const Inst *b) {
  return a->virt == b->virt && g_strcmp0(a->arch, b->arch) == 0 && g_strcmp0(a->code, b->code) == 0 &&
         g_strcmp0(a->code_sha256, b->code_sha256) == 0 && g_strcmp0(a->ip, b->ip) == 0;
}

/* A deploy for an instance this node has (docs/reconcile.md): an older generation is stale; the
 * same one re-publishes the status; a newer one of the same instance is adopted without a restart
 * (the cluster placed it here again after a partition); a newer one of another variant replaces it
 * once the old one is cleaned up. Takes fresh; returns TRUE when the deploy is dealt with. */
static gboolean on_deploy_of_known(Inst *old, Inst *fresh) {
  Node *n = old->node;
  g_autofree char *gens =
      g_strdup_printf("%" G_GINT64_FORMAT " -> %" G_GINT64_FORMAT, old->generation, fresh->generation);
  if (fresh->generation < old->generation || old->delete_requested) {
    od_log(G_LOG_LEVEL_INFO, "deploy", "instance", old->name, "generation", gens, "msg",
           old->delete_requested ? "being deleted; deploy ignored"
                                 : "stale deploy (older generation) ignored",
           NULL);
    inst_unref(fresh);
    return TRUE;
  }
  if (fresh->generation > old->generation && same_instance(old, fresh)) {
    old->generation = fresh->generation;
    g_clear_pointer(&old->job, json_object_unref);
    old->job = json_object_ref(fresh->job);
    old->restart = fresh->restart;
    record_write(old);
    od_log(G_LOG_LEVEL_MESSAGE, "deploy", "instance", old->name, "generation", gens, "msg",
           "adopted the new generation (no restart)", NULL);
  } else if (fresh->generation > old->generation) {
    od_log(G_LOG_LEVEL_MESSAGE, "deploy", "instance", old->name, "generation", gens, "msg",
           "another variant: replacing the instance", NULL);
    if (old->replacement)
      inst_unref(old->replacement);
    old->replacement = fresh;
    if (old->phase != PHASE_FETCH && old->phase != PHASE_NET)
      cleanup(old, THEN_DELETE);
    else
      old->delete_requested = TRUE; /* the step in flight ends in the cleanup */
    return TRUE;
  } else {
    od_log(G_LOG_LEVEL_INFO, "deploy", "instance", old->name, "msg", "already here; status re-published",
           NULL);
  }
  publish_status(n, old->job_name, old->number, old->generation, old->status, old->detail, old->ready,
                 old->ready_ms, old->restarting);
  inst_unref(fresh);
  return TRUE;
}

void insts_on_deploy(Node *n, const char *topic, GBytes *payload) {
  g_autoptr(JsonNode) job_node = node_parse_payload(topic, payload, JSON_NODE_OBJECT);
  JsonObject *job = job_node ? json_node_get_object(job_node) : NULL;
  if (job == NULL)
    return;
  g_autofree char *problem = NULL;
  Inst *fresh = inst_from_job(n, job, &problem);
  if (fresh == NULL) {
    node_reject(topic, problem);
    return;
  }
  Inst *old = g_hash_table_lookup(n->insts, fresh->name);
  if (old != NULL && old->phase != PHASE_FAILED && on_deploy_of_known(old, fresh))
    return;
  if (old != NULL) {
    old->gone = TRUE;
    g_hash_table_remove(n->insts, old->name);
  }
  fresh->received_us = g_get_monotonic_time();
  g_hash_table_replace(n->insts, fresh->name, fresh);
  od_log(G_LOG_LEVEL_MESSAGE, "deploy", "instance", fresh->name, "virtualization",
         oakuk_virt_name(fresh->virt), "arch", fresh->arch, "code", fresh->code ? fresh->code : "", NULL);
  record_write(fresh);
  start_deploy(fresh);
}

void insts_on_delete(Node *n, const char *topic, GBytes *payload) {
  g_autoptr(JsonNode) o_node = node_parse_payload(topic, payload, JSON_NODE_OBJECT);
  JsonObject *o = o_node ? json_node_get_object(o_node) : NULL;
  if (o == NULL)
    return;
  const char *job_name = node_str_member(o, "job_name");
  gint64 number = -1;
  if (job_name == NULL || *job_name == '\0') {
    node_reject(topic, "job_name: missing or not a string");
    return;
  }
  if (!node_int_member(o, "instance_number", &number) || number < 0) {
    node_reject(topic, "instance_number: missing or not a non-negative integer");
    return;
  }
  gint64 generation = G_MAXINT64; /* absent: any generation */
  if (json_object_has_member(o, "generation") &&
      (!node_int_member(o, "generation", &generation) || generation < 0)) {
    node_reject(topic, "generation: not a non-negative integer");
    return;
  }
  char *iname = oakuk_instance_name(job_name, number);
  g_autofree char *name = g_strdup(iname);
  od_oakuk_free(iname);
  Inst *i = g_hash_table_lookup(n->insts, name);
  od_log(G_LOG_LEVEL_MESSAGE, "delete", "instance", name, "msg", i ? "undeploying" : "unknown here", NULL);
  if (i == NULL) {
    publish_status(n, job_name, number, generation == G_MAXINT64 ? 0 : generation, OAKUK_STATUS_UNDEPLOYED,
                   "", FALSE, -1, FALSE);
    return;
  }
  if (i->generation > generation) {
    g_autofree char *gens =
        g_strdup_printf("%" G_GINT64_FORMAT " < %" G_GINT64_FORMAT, generation, i->generation);
    od_log(G_LOG_LEVEL_INFO, "delete", "instance", name, "generation", gens, "msg",
           "stale delete (older generation) ignored", NULL);
    publish_status(n, i->job_name, i->number, i->generation, i->status, i->detail, i->ready, i->ready_ms,
                   i->restarting);
    return;
  }
  i->delete_requested = TRUE;
  switch (i->phase) {
  case PHASE_FETCH:
    /* A slow or stuck download must not hold the instance (and its place on this node): cancelled,
     * on_fetched runs at once and cleans up. */
    oakuk_image_fetch_cancel(i->fetch);
    break;
  case PHASE_NET: break; /* the step in flight ends in the cleanup */
  case PHASE_CLEANUP: i->then = THEN_DELETE; break;
  default: cleanup(i, THEN_DELETE);
  }
}

/* ---- runtime events ---- */

void insts_on_runtime_status(const char *instance, int32_t status, const char *detail, void *user_data) {
  Node *n = user_data;
  Inst *i = g_hash_table_lookup(n->insts, instance);
  if (i == NULL) {
    if (status != OAKUK_STATUS_UNDEPLOYED)
      od_log(G_LOG_LEVEL_INFO, "runtime", "instance", instance, "status", oakuk_instance_status_name(status),
             "msg", "event for an instance without a job here; ignored", NULL);
    return;
  }
  if (status == OAKUK_STATUS_UNDEPLOYED) {
    i->runtime_owned = FALSE;
    if (i->phase == PHASE_CLEANUP)
      cleanup_net(i);
    return;
  }
  if (i->phase != PHASE_RUNTIME)
    return;
  /* A clean end (exit code 0, a guest that powered off) is no failure: "on-failure" leaves it as it
   * is, "always" starts it again; a crash, a kill or a failed start is one for both. */
  gboolean clean = status == OAKUK_STATUS_COMPLETED ||
                   (status == OAKUK_STATUS_DEAD &&
                    oakuk_runtime_instance_exit(runtime_of(i), instance) == OAKUK_EXIT_CLEAN);
  gboolean ended =
      status == OAKUK_STATUS_FAILED || status == OAKUK_STATUS_DEAD || status == OAKUK_STATUS_COMPLETED;
  if (status == OAKUK_STATUS_RUNNING && i->running_since_us == 0)
    i->running_since_us = g_get_monotonic_time();
  if (status == OAKUK_STATUS_RUNNING)
    phase_done(i, "boot", "ready");
  else if (ended)
    i->timing = NULL;
  /* Once per deploy: a restart's RUNNING is not a deploy's, and a re-adopted one has no arrival. */
  if (status == OAKUK_STATUS_RUNNING && i->received_us > 0 && !i->running_observed) {
    i->running_observed = TRUE;
    node_api_observe_deploy(n, i->virt, (double)(i->running_since_us - i->received_us) / G_USEC_PER_SEC);
  }
  if (ended && (!clean || i->restart == OAKUK_RESTART_ALWAYS))
    fail(i, status, detail ? detail : "");
  else
    set_status(i, status, detail);
}

/* The service's snapshot exists (an instance of it is ready): its pool is (re)filled from this
 * instance's spec. */
static void pool_keep(Node *n, Inst *i) {
  NodePool *p = g_hash_table_lookup(n->pools, i->job_name);
  if (p == NULL) {
    p = g_new0(NodePool, 1);
    p->node = n;
    p->job_name = g_strdup(i->job_name);
    g_hash_table_replace(n->pools, p->job_name, p);
  }
  if (p->linger) {
    g_source_remove(p->linger);
    p->linger = 0;
  }
  if (p->spec)
    oakuk_instance_spec_unref(p->spec);
  p->spec = make_spec(i);
  oakuk_error *err = NULL;
  int32_t want = oakuk_microservice_uk_warm_pool(i->ms);
  if (oakuk_runtime_pool_set(n->uk_rt, p->spec, want, &err) != 0) {
    od_log(G_LOG_LEVEL_WARNING, "pool", "job", i->job_name, "msg", oakuk_error_message(err), NULL);
    oakuk_error_free(err);
  }
}

void insts_on_runtime_ready(const char *instance, int64_t ready_ms, void *user_data) {
  Node *n = user_data;
  Inst *i = g_hash_table_lookup(n->insts, instance);
  if (i == NULL || i->phase != PHASE_RUNTIME || i->status != OAKUK_STATUS_RUNNING)
    return;
  i->ready = TRUE;
  phase_done(i, "ready", NULL);
  /* From the deploy's arrival here: the image fetch and the network count too. */
  i->ready_ms = i->received_us > 0 ? (g_get_monotonic_time() - i->received_us) / 1000 : -1;
  g_autofree char *ms = g_strdup_printf("%" G_GINT64_FORMAT, i->ready_ms);
  g_autofree char *rms = g_strdup_printf("%" G_GINT64_FORMAT, ready_ms);
  static const char *const starts[] = {"booted", "booted, saved as the service's snapshot",
                                       "restored from the service's snapshot", "restore failed, booted",
                                       "restored by a pooled QEMU"};
  int32_t start = i->virt == OAKUK_VIRT_UNIKERNEL ? oakuk_runtime_instance_start(runtime_of(i), i->name) : -1;
  if (start >= 0 && start < (int32_t)G_N_ELEMENTS(n->uk_starts))
    n->uk_starts[start]++;
  const char *how = start >= 0 && start < (int32_t)G_N_ELEMENTS(starts) ? starts[start] : NULL;
  if (start > OAKUK_START_BOOT && oakuk_microservice_uk_warm_pool(i->ms) > 0)
    pool_keep(n, i);
  od_log(G_LOG_LEVEL_MESSAGE, "ready", "instance", i->name, "ready_ms", ms, "runtime_ready_ms", rms,
         how ? "start" : NULL, how, NULL);
  publish_status(n, i->job_name, i->number, i->generation, i->status, i->detail, TRUE, i->ready_ms, FALSE);
}

/* ---- startup ---- */

static void drop_orphans(Node *n, oakuk_runtime *rt) {
  if (rt == NULL)
    return;
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
  for (size_t k = 0; k < oakuk_runtime_instance_count(rt); k++)
    g_ptr_array_add(names, g_strdup(oakuk_runtime_instance_name(rt, k)));
  for (guint k = 0; k < names->len; k++) {
    if (g_hash_table_contains(n->insts, names->pdata[k]))
      continue;
    od_log(G_LOG_LEVEL_MESSAGE, "reconcile", "instance", (char *)names->pdata[k], "msg",
           "running without a job record; removed", NULL);
    oakuk_runtime_undeploy(rt, names->pdata[k], NULL);
  }
}

static void adopt(Node *n, oakuk_runtime *rt) {
  if (rt == NULL)
    return;
  oakuk_error *err = NULL;
  int live = oakuk_runtime_adopt(rt, &err);
  if (live < 0) {
    od_log(G_LOG_LEVEL_WARNING, "adopt", "virtualization", oakuk_virt_name(oakuk_runtime_virt(rt)), "msg",
           oakuk_error_message(err), NULL);
    oakuk_error_free(err);
    return;
  }
  g_autofree char *count = g_strdup_printf("%d", live);
  od_log(G_LOG_LEVEL_MESSAGE, "adopt", "virtualization", oakuk_virt_name(oakuk_runtime_virt(rt)), "live",
         count, NULL);
}

static void restore_record(Node *n, const char *path, GPtrArray *keep) {
  g_autofree char *text = NULL;
  g_autoptr(JsonNode) root =
      g_file_get_contents(path, &text, NULL, NULL) ? od_json_parse(text, -1, NULL) : NULL;
  JsonObject *o = root && JSON_NODE_HOLDS_OBJECT(root) ? json_node_get_object(root) : NULL;
  JsonNode *jn = o ? json_object_get_member(o, "job") : NULL;
  g_autofree char *problem = NULL;
  Inst *i = jn && JSON_NODE_HOLDS_OBJECT(jn) ? inst_from_job(n, json_node_get_object(jn), &problem) : NULL;
  if (i == NULL) {
    od_log(G_LOG_LEVEL_WARNING, "restore", "file", path, "msg",
           problem ? problem : "not a job record; removed", NULL);
    g_unlink(path);
    return;
  }
  g_hash_table_replace(n->insts, i->name, i);
  g_ptr_array_add(keep, g_strdup(i->name));
  oakuk_runtime *rt = runtime_of(i);
  int32_t st = rt ? oakuk_runtime_instance_status(rt, i->name) : -1;
  gboolean known = runtime_knows(rt, i->name);
  if (json_object_get_boolean_member_with_default(o, "failed", FALSE)) {
    i->phase = PHASE_FAILED;
    i->status = OAKUK_STATUS_FAILED;
    g_free(i->detail);
    i->detail = g_strdup("failed before the node restarted");
  } else if (known) {
    /* Adopted: the runtime reports RUNNING (or how it ended) through the callback. */
    i->phase = PHASE_RUNTIME;
    i->runtime_owned = TRUE;
    gboolean alive = rt != NULL && oakuk_runtime_instance_pid(rt, i->name) > 0;
    i->status = st >= 0 ? st : alive ? OAKUK_STATUS_RUNNING : OAKUK_STATUS_CREATING;
    od_log(G_LOG_LEVEL_MESSAGE, "restore", "instance", i->name, "msg", "re-adopted", NULL);
  } else {
    /* Lost while the node was down (or never started): deploy it again. */
    od_log(G_LOG_LEVEL_MESSAGE, "restore", "instance", i->name, "msg", "not running; deploying again", NULL);
    i->phase = PHASE_BACKOFF;
    i->timer = g_timeout_add_seconds_full(G_PRIORITY_DEFAULT, 0, on_backoff, inst_ref(i),
                                          (GDestroyNotify)inst_unref);
  }
}

void insts_restore(Node *n) {
  adopt(n, n->uk_rt);
  adopt(n, n->ctr_rt);
  g_autofree char *dir = g_build_filename(n->state_dir, "jobs", NULL);
  g_mkdir_with_parents(dir, 0700);
  g_autoptr(GPtrArray) keep = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  const char *e;
  while (d != NULL && (e = g_dir_read_name(d)) != NULL) {
    if (!g_str_has_suffix(e, ".json"))
      continue;
    g_autofree char *path = g_build_filename(dir, e, NULL);
    restore_record(n, path, keep);
  }
  drop_orphans(n, n->uk_rt);
  drop_orphans(n, n->ctr_rt);
  g_autoptr(GPtrArray) services = netsync_saved_services(n);
  g_autoptr(GPtrArray) peers = netsync_saved_peers(n);
  oakuk_error *err = NULL;
  if (oakuk_net_reconcile(n->net, (const char *const *)keep->pdata, keep->len,
                          (const char *const *)services->pdata, services->len,
                          (const char *const *)peers->pdata, peers->len, &err) != 0) {
    od_log(G_LOG_LEVEL_WARNING, "reconcile", "msg", oakuk_error_message(err), NULL);
    oakuk_error_free(err);
  }
}

/* ---- shutdown ---- */

void insts_shutdown(Node *n) {
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, n->insts);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    Inst *i = v;
    i->gone = TRUE;
    if (i->timer) {
      g_source_remove(i->timer);
      i->timer = 0;
    }
  }
  gboolean keep = !n->stop_instances;
  if (n->uk_rt)
    oakuk_runtime_set_keep_instances(n->uk_rt, keep);
  if (n->ctr_rt)
    oakuk_runtime_set_keep_instances(n->ctr_rt, keep);
}

void insts_forget(Node *n) {
  GHashTableIter it;
  gpointer v;
  g_hash_table_iter_init(&it, n->insts);
  while (g_hash_table_iter_next(&it, NULL, &v)) {
    Inst *i = v;
    oakuk_error *err = NULL;
    if (n->net && oakuk_net_instance_teardown(n->net, i->name, &err) != 0) {
      od_log(G_LOG_LEVEL_WARNING, "shutdown", "instance", i->name, "msg", oakuk_error_message(err), NULL);
      oakuk_error_free(err);
    }
    record_remove(i);
  }
}

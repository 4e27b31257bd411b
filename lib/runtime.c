/* The runtime interface (docs/architecture.md §3.2, §5.4): the runtime object and every instance's
 * lifecycle, written once for both runtimes: states, the stop sequence, how an end is judged,
 * instance records and adoption, statuses delivered in order on the owner's context. The backends
 * (qemu-runtime.c, container.c) plug in through OakukRuntimeClass; readiness probes live in
 * runtime-ready.c. */
#include "runtime-private.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#define QUIT_GRACE_MS 3000 /* after the QUIT phase, before SIGKILL */
#define DETAIL_LINES 10    /* console lines in the detail of an ended instance */
#define DETAIL_BYTES (16 * 1024)
#define READY_TEXT_MAX 256

gboolean oakuk_instance_name_is_valid(const char *name) {
  size_t n = name ? strlen(name) : 0;
  if (n == 0 || n > 200 || name[0] == '.')
    return FALSE;
  for (size_t i = 0; i < n; i++)
    if (!g_ascii_isalnum(name[i]) && !strchr("._-", name[i]))
      return FALSE;
  return TRUE;
}

/* ---- events, delivered in order ---- */

typedef struct {
  char *name;
  int32_t status; /* -1: a ready event */
  char *detail;
  int64_t ready_ms;
} Event;

static void event_free(Event *e) {
  g_free(e->name);
  g_free(e->detail);
  g_free(e);
}

static gboolean deliver_pending(gpointer data) {
  oakuk_runtime *rt = data;
  /* Keep rt alive while user callbacks run: a callback may drop the caller's last reference. */
  oakuk_runtime_ref(rt);
  Event *e;
  while ((e = g_queue_pop_head(&rt->pending))) {
    if (e->status >= 0 && rt->cb)
      rt->cb(e->name, e->status, e->detail, rt->cb_data);
    else if (e->status < 0 && rt->ready_cb)
      rt->ready_cb(e->name, e->ready_ms, rt->ready_cb_data);
    event_free(e);
  }
  g_source_unref(rt->idle);
  rt->idle = NULL;
  oakuk_runtime_unref(rt);
  return G_SOURCE_REMOVE;
}

static void queue_event(oakuk_runtime *rt, const char *name, int32_t status, const char *detail,
                        int64_t ready_ms) {
  Event *e = g_new0(Event, 1);
  e->name = g_strdup(name);
  e->status = status;
  e->detail = g_strdup(detail);
  e->ready_ms = ready_ms;
  g_queue_push_tail(&rt->pending, e);
  if (!rt->idle) {
    rt->idle = g_idle_source_new();
    g_source_set_priority(rt->idle, G_PRIORITY_DEFAULT);
    g_source_set_callback(rt->idle, deliver_pending, rt, NULL);
    g_source_attach(rt->idle, rt->context);
  }
}

static void emit(OakukInstance *i, int32_t status, const char *detail) {
  i->status = status;
  if (!i->rt)
    return;
  g_debug("instance %s: %s%s%s", i->name, oakuk_instance_status_name(status), detail ? ": " : "",
          detail ? detail : "");
  queue_event(i->rt, i->name, status, detail, 0);
}

/* ---- instances ---- */

OakukInstance *oakuk_instance_ref(OakukInstance *i) {
  g_atomic_int_inc(&i->refcount);
  return i;
}

void oakuk_instance_unref(OakukInstance *i) {
  if (!i || !g_atomic_int_dec_and_test(&i->refcount))
    return;
  if (i->data && i->klass->free_data)
    i->klass->free_data(i->data);
  g_free(i->name);
  g_free(i->dir);
  oakuk_instance_spec_unref(i->spec);
  g_free(i->fail_reason);
  g_free(i->shutdown_reason);
  g_free(i->end_detail);
  g_free(i->ready_text);
  g_free(i->ready_ip);
  g_free(i->uk_address);
  g_free(i->uk_version);
  g_free(i->start_note);
  g_main_context_unref(i->context);
  g_free(i);
}

static OakukInstance *instance_new(oakuk_runtime *rt, const char *name) {
  OakukInstance *i = g_new0(OakukInstance, 1);
  i->refcount = 1;
  i->rt = rt;
  i->klass = rt->klass;
  i->context = g_main_context_ref(rt->context);
  i->name = g_strdup(name);
  i->dir = g_build_filename(rt->instances_dir, name, NULL);
  i->status = -1;
  i->watch = (OakukProcWatch)OAKUK_PROC_WATCH_INIT;
  i->ready_ms = -1;
  rt->klass->init(i);
  return i;
}

OakukInstance *oakuk_instance_new_detached(oakuk_runtime *rt, const char *name) {
  return instance_new(rt, name);
}

static gint cmp_names(gconstpointer a, gconstpointer b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The table takes a reference. */
static void add_instance(oakuk_runtime *rt, OakukInstance *i) {
  g_hash_table_insert(rt->instances, i->name, oakuk_instance_ref(i));
  g_ptr_array_add(rt->names, g_strdup(i->name));
  g_ptr_array_sort(rt->names, cmp_names);
}

static OakukInstance *lookup(const oakuk_runtime *rt, const char *name) {
  return g_hash_table_lookup(rt->instances, name);
}

char *oakuk_instance_console_path(const OakukInstance *i) {
  return g_build_filename(i->dir, i->klass->console, NULL);
}

static void clear_timer(OakukInstance *i) {
  if (i->timer) {
    g_source_destroy(i->timer);
    g_source_unref(i->timer);
    i->timer = NULL;
  }
}

static GSource *add_timeout(OakukInstance *i, guint ms, GSourceFunc fn) {
  GSource *s = g_timeout_source_new(ms);
  g_source_set_callback(s, fn, oakuk_instance_ref(i), (GDestroyNotify)oakuk_instance_unref);
  g_source_attach(s, i->context);
  return s;
}

/* The runtime lets go of the instance: no more timers, watches, probes or connections, and out of
 * the table. The process and the files stay as they are. The caller holds a reference. */
static void detach(OakukInstance *i) {
  clear_timer(i);
  oakuk_proc_watch_clear(&i->watch);
  oakuk_probe_stop(i);
  if (i->klass->exited)
    i->klass->exited(i);
  oakuk_runtime *rt = i->rt;
  i->rt = NULL;
  if (!rt)
    return;
  for (guint k = 0; k < rt->names->len; k++)
    if (strcmp(rt->names->pdata[k], i->name) == 0) {
      g_ptr_array_remove_index(rt->names, k);
      break;
    }
  g_hash_table_remove(rt->instances, i->name);
}

/* ---- records (instance.json), for adoption ---- */

static void add_str(JsonBuilder *b, const char *key, const char *value) {
  if (!value)
    return;
  json_builder_set_member_name(b, key);
  json_builder_add_string_value(b, value);
}

static void add_int(JsonBuilder *b, const char *key, gint64 value) {
  json_builder_set_member_name(b, key);
  json_builder_add_int_value(b, value);
}

static gboolean write_record(OakukInstance *i, GError **error) {
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  add_str(b, "name", i->name);
  add_int(b, "pid", i->pid);
  add_int(b, "start_time", (gint64)i->start_time);
  json_builder_set_member_name(b, "one_shot");
  json_builder_add_boolean_value(b, i->one_shot);
  add_int(b, "grace_s", i->grace_s);
  if (i->ready_port > 0)
    add_int(b, "ready_port", i->ready_port);
  add_str(b, "ready_text", i->ready_text);
  add_str(b, "ready_ip", i->ready_ip);
  add_str(b, "uk_address", i->uk_address);
  add_str(b, "uk_version", i->uk_version);
  if (i->klass->record)
    i->klass->record(i, b);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autofree char *text = oakuk_json_node_to_string(root, TRUE);
  g_autofree char *path = g_build_filename(i->dir, "instance.json", NULL);
  return g_file_set_contents(path, text, -1, error);
}

static char *rec_str(JsonObject *o, const char *key) {
  JsonNode *n = json_object_get_member(o, key);
  return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
             ? g_strdup(json_node_get_string(n))
             : NULL;
}

static void read_record(OakukInstance *i, JsonObject *o) {
  i->start_time = (guint64)json_object_get_int_member_with_default(o, "start_time", 0);
  i->one_shot = json_object_get_boolean_member_with_default(o, "one_shot", FALSE);
  /* Records of 0.1 named the grace "graceful_stop_s" (unikernels). */
  i->grace_s = (guint)json_object_get_int_member_with_default(
      o, "grace_s", json_object_get_int_member_with_default(o, "graceful_stop_s", 0));
  i->ready_port = (int32_t)json_object_get_int_member_with_default(o, "ready_port", 0);
  i->ready_text = rec_str(o, "ready_text");
  i->ready_ip = rec_str(o, "ready_ip");
  i->uk_address = rec_str(o, "uk_address");
  i->uk_version = rec_str(o, "uk_version");
}

/* ---- how an end is judged ---- */

static char *console_tail(OakukInstance *i) {
  g_autofree char *path = oakuk_instance_console_path(i);
  char *t = NULL;
  if (oakuk_console_tail(&t, path, DETAIL_LINES, DETAIL_BYTES, OAKUK_CONSOLE_SKIP_EMPTY | OAKUK_CONSOLE_STRIP,
                         NULL) != 0)
    return g_strdup("");
  char *r = g_strdup(t);
  oakuk_free(t);
  return r;
}

/* QEMU exits 0 whatever became of its guest: QMP's shutdown reason, a panic notice and the
 * console tell a clean power-off from a crash. */
static int32_t judge(OakukInstance *i, int ws, gboolean ran, char **what_out, char **crash_out) {
  const char *proc = i->klass->process;
  const char *reason = i->shutdown_reason ? i->shutdown_reason : "";
  int32_t crash = OAKUK_CONSOLE_CRASH_NONE;
  if (i->klass->console_judges) {
    g_autofree char *path = oakuk_instance_console_path(i);
    char *line = NULL;
    crash = oakuk_console_crash(&line, path);
    *crash_out = line ? g_strdup(line) : NULL;
    oakuk_free(line);
  }
  int32_t kind;
  char *what;
  if (ws >= 0 && WIFSIGNALED(ws)) {
    kind = OAKUK_EXIT_KILLED;
    what = g_strdup_printf("%s was killed by signal %d", proc, WTERMSIG(ws));
  } else if (ws >= 0 && WEXITSTATUS(ws) != 0) {
    kind = OAKUK_EXIT_CRASH;
    what = g_strdup_printf("%s exited with code %d", proc, WEXITSTATUS(ws));
  } else if (i->panicked || strcmp(reason, "guest-panic") == 0) {
    kind = OAKUK_EXIT_CRASH;
    what = g_strdup("the guest panicked");
  } else if (crash != OAKUK_CONSOLE_CRASH_NONE) {
    kind = OAKUK_EXIT_CRASH; /* a Linux panic with panic=-1 ends in a reset: the panic names it */
    what = g_strdup("the guest crashed");
  } else if (strcmp(reason, "guest-reset") == 0) {
    kind = OAKUK_EXIT_CRASH;
    what = g_strdup("the guest reset itself (a triple fault or a reboot; it runs with -no-reboot)");
  } else if (g_str_has_prefix(reason, "host-")) {
    kind = OAKUK_EXIT_KILLED;
    what = g_strdup_printf("%s was ended from outside (%s)", proc, reason);
  } else if (i->ended_unwatched && i->klass->console_judges) {
    kind = OAKUK_EXIT_KILLED; /* for the restart policy: not a clean end, as far as anyone knows */
    what = g_strdup_printf("%s exited while no runtime watched it (how is unknown)", proc);
  } else if (ws < 0 && i->klass->console_judges) {
    /* QEMU says why it ends (SHUTDOWN) before it ends by itself: without a word, it was killed. */
    kind = OAKUK_EXIT_KILLED;
    what = g_strdup_printf("%s ended without a shutdown (killed?) while no runtime was its parent", proc);
  } else if (ws < 0) {
    kind = OAKUK_EXIT_CLEAN;
    what = g_strdup_printf("%s exited while no runtime watched it (exit code unknown)", proc);
  } else {
    kind = OAKUK_EXIT_CLEAN;
    what = i->klass->console_judges ? g_strdup("the guest powered off")
                                    : g_strdup_printf("%s exited with code 0", proc);
  }
  if (!ran) {
    kind = OAKUK_EXIT_FAILED;
    if (i->fail_reason) {
      char *w = g_strdup_printf("%s (%s)", i->fail_reason, what);
      g_free(what);
      what = w;
    }
  }
  *what_out = what;
  return kind;
}

static char *end_detail(OakukInstance *i, int32_t kind, const char *what, const char *crash) {
  GString *d = g_string_new(NULL);
  if (kind == OAKUK_EXIT_CLEAN)
    g_string_append_printf(d, "exited cleanly: %s", what);
  else
    g_string_append(d, what);
  g_autofree char *extra = i->klass->extra_detail ? i->klass->extra_detail(i) : NULL;
  if (extra && *extra)
    g_string_append_printf(d, "; %s", extra);
  g_autofree char *tail = console_tail(i);
  if (crash && !strstr(tail, crash))
    g_string_append_printf(d, "; crash: %s", crash);
  const char *log = i->klass->console_judges ? "serial" : "output";
  if (*tail)
    g_string_append_printf(d, "; last %s lines:\n%s", log, tail);
  else
    g_string_append_printf(d, "; the %s log is empty", log);
  return g_string_free(d, FALSE);
}

/* ---- release (thread) ---- */

static void release_thread(GTask *task, gpointer src, gpointer data, GCancellable *cancel) {
  OakukInstance *i = data;
  i->klass->release(i, i->release_remove);
  g_task_return_boolean(task, TRUE);
}

static void start_release(OakukInstance *i);

static void finish_undeploy(OakukInstance *i) {
  oakuk_runtime *rt = i->rt;
  g_autofree char *name = g_strdup(i->name);
  oakuk_instance_ref(i);
  i->status = OAKUK_STATUS_UNDEPLOYED;
  detach(i);
  queue_event(rt, name, OAKUK_STATUS_UNDEPLOYED, NULL, 0);
  oakuk_instance_unref(i);
}

static void released(GObject *src, GAsyncResult *res, gpointer data) {
  OakukInstance *i = g_task_get_task_data(G_TASK(res));
  i->releasing = FALSE;
  if (i->end_detail) { /* the end is reported once its cgroups, mounts and runc state are gone */
    g_autofree char *detail = g_steal_pointer(&i->end_detail);
    emit(i, i->end_status, detail);
  }
  if (!i->rt || !i->undeploy)
    return; /* an ended instance keeps its directory (the console) until it is undeployed */
  if (!i->release_remove) {
    start_release(i); /* undeployed while the release after its end ran */
    return;
  }
  finish_undeploy(i);
}

/* Releases what the instance holds in a thread; when it is undeployed, its directory too, and
 * UNDEPLOYED follows. */
static void start_release(OakukInstance *i) {
  if (i->releasing)
    return; /* released() looks again */
  i->releasing = TRUE;
  i->release_remove = i->undeploy;
  GTask *task = g_task_new(NULL, NULL, released, NULL);
  g_task_set_task_data(task, oakuk_instance_ref(i), (GDestroyNotify)oakuk_instance_unref);
  g_task_run_in_thread(task, release_thread);
  g_object_unref(task);
}

/* ---- the process's end ---- */

static void watch(OakukInstance *i, gboolean child);

/* wait_status: from waitpid, or -1 when unknown (a process we did not spawn). */
static void on_exited(OakukInstance *i, int wait_status) {
  if (i->state == OAKUK_INST_EXITED || (i->draining && wait_status != i->drain_status))
    return;
  if (!i->draining && i->klass->drain != NULL) {
    i->draining = TRUE;
    i->drain_status = wait_status;
    i->pid = 0; /* reaped: its number may be another process's soon */
    if (i->klass->drain(i))
      return;
  }
  if (i->state == OAKUK_INST_STARTING && !i->undeploy && i->klass->retry != NULL) {
    if (i->klass->exited)
      i->klass->exited(i);
    if (i->klass->retry(i, wait_status)) {
      i->draining = FALSE;
      g_clear_pointer(&i->fail_reason, g_free);
      oakuk_proc_watch_clear(&i->watch);
      oakuk_proc_stat(i->pid, NULL, NULL, &i->start_time);
      watch(i, TRUE);
      g_autoptr(GError) err = NULL;
      if (!write_record(i, &err))
        g_warning("instance %s: %s", i->name, err->message);
      if (i->klass->started(i))
        oakuk_instance_running(i);
      return;
    }
  }
  gboolean ran = i->state == OAKUK_INST_RUNNING;
  if (ran)
    oakuk_probe_final(i); /* its ready text may be the last thing it printed */
  i->state = OAKUK_INST_EXITED;
  i->pid = 0;
  i->ready = FALSE;
  clear_timer(i);
  oakuk_proc_watch_clear(&i->watch);
  oakuk_probe_stop(i);
  if (i->klass->exited)
    i->klass->exited(i);
  if (i->undeploy) {
    start_release(i);
    return;
  }
  g_autofree char *what = NULL, *crash = NULL;
  i->exit_kind = judge(i, wait_status, ran, &what, &crash);
  i->end_status = i->exit_kind == OAKUK_EXIT_FAILED                   ? OAKUK_STATUS_FAILED
                  : (i->exit_kind == OAKUK_EXIT_CLEAN && i->one_shot) ? OAKUK_STATUS_COMPLETED
                                                                      : OAKUK_STATUS_DEAD;
  i->end_detail = end_detail(i, i->exit_kind, what, crash);
  start_release(i); /* cgroups, mounts, runc state; the directory stays for the console */
}

static void exited_cb(int wait_status, gpointer data) {
  on_exited(data, wait_status);
}

void oakuk_instance_drained(OakukInstance *i) {
  if (i->draining && i->state != OAKUK_INST_EXITED)
    on_exited(i, i->drain_status);
}

void oakuk_instance_running(OakukInstance *i) {
  if (i->state != OAKUK_INST_STARTING)
    return; /* stopping, or gone meanwhile */
  i->state = OAKUK_INST_RUNNING;
  emit(i, OAKUK_STATUS_RUNNING, i->start_note);
  oakuk_probe_start(i);
}

void oakuk_instance_fail(OakukInstance *i, const char *why) {
  g_debug("instance %s: %s", i->name, why);
  g_free(i->fail_reason);
  i->fail_reason = g_strdup(why);
  if (i->pid > 0)
    kill(i->pid, SIGKILL); /* the exit watch then reports FAILED with the logs */
}

void oakuk_instance_ready(OakukInstance *i) {
  if (i->state != OAKUK_INST_RUNNING || i->ready)
    return;
  if (i->klass->before_ready != NULL && i->klass->before_ready(i))
    return;
  i->ready = TRUE;
  i->ready_ms = i->deploy_us > 0 ? (g_get_monotonic_time() - i->deploy_us) / 1000 : -1;
  g_debug("instance %s: ready (%" G_GINT64_FORMAT " ms after deploy)", i->name, i->ready_ms);
  if (i->rt)
    queue_event(i->rt, i->name, -1, NULL, i->ready_ms);
}

void oakuk_instance_note(OakukInstance *i, const char *detail) {
  if (i->state == OAKUK_INST_RUNNING)
    emit(i, OAKUK_STATUS_RUNNING, detail);
}

typedef struct {
  OakukInstance *i;
  char *detail;
} Progress;

static void progress_free(gpointer data) {
  Progress *p = data;
  oakuk_instance_unref(p->i);
  g_free(p->detail);
  g_free(p);
}

static gboolean progress_dispatch(gpointer data) {
  Progress *p = data;
  if (p->i->rt && p->i->state == OAKUK_INST_PREPARING && !p->i->undeploy)
    emit(p->i, OAKUK_STATUS_CREATING, p->detail);
  return G_SOURCE_REMOVE;
}

void oakuk_instance_progress(OakukInstance *i, const char *detail) {
  Progress *p = g_new0(Progress, 1);
  p->i = oakuk_instance_ref(i);
  p->detail = g_strdup(detail);
  g_main_context_invoke_full(i->context, G_PRIORITY_DEFAULT, progress_dispatch, p, progress_free);
}

/* ---- stop ---- */

static void stop_step(OakukInstance *i);

static gboolean stop_next(gpointer data) {
  OakukInstance *i = data;
  g_source_unref(i->timer);
  i->timer = NULL;
  stop_step(i);
  return G_SOURCE_REMOVE;
}

/* Runs the next stop phase the backend acts on, and arms the wait before the one after. */
static void stop_step(OakukInstance *i) {
  clear_timer(i);
  if (i->draining)
    return; /* already gone: its end is being judged */
  while (i->state == OAKUK_INST_STOPPING && i->stop_phase <= OAKUK_STOP_KILL) {
    OakukStopPhase phase = (OakukStopPhase)i->stop_phase++;
    if (!i->klass->signal(i, phase))
      continue;
    if (phase != OAKUK_STOP_KILL)
      i->timer = add_timeout(i, phase == OAKUK_STOP_GRACEFUL ? i->grace_s * 1000 : QUIT_GRACE_MS, stop_next);
    return;
  }
}

static void begin_stop(OakukInstance *i) {
  i->state = OAKUK_INST_STOPPING;
  i->ready = FALSE;
  i->stop_phase = OAKUK_STOP_GRACEFUL;
  oakuk_probe_stop(i);
  stop_step(i);
}

/* ---- deploy ---- */

static void watch(OakukInstance *i, gboolean child) {
  if (child)
    oakuk_proc_watch_child(&i->watch, i->pid, i->context, exited_cb, oakuk_instance_ref(i),
                           (GDestroyNotify)oakuk_instance_unref);
  else
    oakuk_proc_watch_adopted(&i->watch, i->pid, i->start_time, i->context, exited_cb, oakuk_instance_ref(i),
                             (GDestroyNotify)oakuk_instance_unref);
}

static void prepare_thread(GTask *task, gpointer src, gpointer data, GCancellable *cancel) {
  OakukInstance *i = data;
  GError *err = NULL;
  if (i->klass->prepare(i, &err))
    g_task_return_boolean(task, TRUE);
  else
    g_task_return_error(task, err);
}

/* The runtime went away while the instance was being prepared. */
static void prepared_orphan(OakukInstance *i) {
  if (i->orphan_keep)
    return; /* left for a later runtime: adoption finds no record and releases it */
  if (i->pid > 0)
    oakuk_proc_kill_wait(i->pid, TRUE);
  i->klass->release(i, TRUE);
}

static void prepared(GObject *src, GAsyncResult *res, gpointer data) {
  OakukInstance *i = g_task_get_task_data(G_TASK(res));
  g_autoptr(GError) err = NULL;
  gboolean ok = g_task_propagate_boolean(G_TASK(res), &err);
  if (!i->rt) {
    prepared_orphan(i);
    return;
  }
  if (ok && i->pid <= 0 && !i->undeploy && i->klass->spawn)
    ok = i->klass->spawn(i, &err);
  if (i->pid > 0) {
    oakuk_proc_stat(i->pid, NULL, NULL, &i->start_time);
    watch(i, TRUE);
    i->state = OAKUK_INST_STARTING;
  }
  if (ok && !i->undeploy)
    ok = write_record(i, &err);
  if (i->undeploy) {
    if (i->pid > 0)
      begin_stop(i);
    else {
      i->state = OAKUK_INST_EXITED;
      start_release(i);
    }
    return;
  }
  if (!ok) {
    if (i->pid > 0) {
      oakuk_instance_fail(i, err->message);
      return;
    }
    i->state = OAKUK_INST_EXITED;
    i->exit_kind = OAKUK_EXIT_FAILED;
    i->end_status = OAKUK_STATUS_FAILED;
    i->end_detail = g_strdup_printf("instance %s: %s", i->name, err->message);
    start_release(i);
    return;
  }
  if (i->klass->started(i))
    oakuk_instance_running(i);
}

/* Readiness facts of the spec, checked where they enter. */
static gboolean check_readiness(const oakuk_instance_spec *s, GError **error) {
  if (s->readiness_tcp < 0 || s->readiness_tcp > 65535)
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL,
                       "instance %s: readiness tcp port %d is outside 1..65535", s->name, s->readiness_tcp),
           FALSE;
  if (s->readiness_tcp > 0 && !s->ip && !s->readiness_address)
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL,
                       "instance %s: readiness tcp port %d needs an address (the instance has no network)",
                       s->name, s->readiness_tcp),
           FALSE;
  g_autoptr(GInetAddress) a =
      s->readiness_address ? g_inet_address_new_from_string(s->readiness_address) : NULL;
  if (s->readiness_address && (!a || g_inet_address_get_family(a) != G_SOCKET_FAMILY_IPV4))
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL,
                       "instance %s: readiness address \"%s\" is not an IPv4 address", s->name,
                       s->readiness_address),
           FALSE;
  const char *t = s->readiness_serial;
  if (t && (!*t || strlen(t) > READY_TEXT_MAX || !g_utf8_validate(t, -1, NULL)))
    return g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL,
                       "instance %s: readiness serial text must be 1-%d bytes of UTF-8", s->name,
                       READY_TEXT_MAX),
           FALSE;
  for (const char *p = t; p && *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f)
      return g_set_error(
                 error, OAKUK_ERROR, -OAKUK_EINVAL,
                 "instance %s: readiness serial text has a control character (a console line is matched)",
                 s->name),
             FALSE;
  return TRUE;
}

OAKUK_API int oakuk_runtime_deploy(oakuk_runtime *rt, const oakuk_instance_spec *spec, oakuk_error **error) {
  g_return_val_if_fail(rt != NULL && spec != NULL, OAKUK_EINVAL);
  GError *err = NULL;
  if (!oakuk_instance_name_is_valid(spec->name))
    return oakuk_set_error(
        error, OAKUK_EINVAL, 0, "name",
        "instance name \"%s\": use 1-200 characters of A-Z a-z 0-9 . _ - (not starting with '.')",
        spec->name);
  if (spec->virt != rt->klass->virt)
    return oakuk_set_error(error, OAKUK_EINVAL, 0, "virt",
                           "instance %s: virtualization %s is not run by the %s runtime", spec->name,
                           oakuk_virt_name(spec->virt) ? oakuk_virt_name(spec->virt) : "none",
                           oakuk_virt_name(rt->klass->virt));
  if (lookup(rt, spec->name))
    return oakuk_set_error(error, OAKUK_EEXISTS, 0, "name", "instance %s exists already", spec->name);
  if (!check_readiness(spec, &err))
    return oakuk_propagate_gerror(error, err);
  OakukInstance *i = instance_new(rt, spec->name);
  i->spec = oakuk_instance_spec_copy(spec);
  i->one_shot = spec->one_shot;
  i->deploy_us = g_get_monotonic_time();
  i->ready_port = spec->readiness_tcp;
  i->ready_text = g_strdup(spec->readiness_serial);
  i->ready_ip = g_strdup(spec->readiness_address ? spec->readiness_address : spec->ip);
  if (!rt->klass->check(i, &err)) {
    oakuk_instance_unref(i);
    return oakuk_propagate_gerror(error, err);
  }
  add_instance(rt, i);
  i->state = OAKUK_INST_PREPARING;
  emit(i, OAKUK_STATUS_CREATING, NULL);
  GTask *task = g_task_new(NULL, NULL, prepared, NULL);
  g_task_set_task_data(task, i, (GDestroyNotify)oakuk_instance_unref); /* takes our reference */
  g_task_run_in_thread(task, prepare_thread);
  g_object_unref(task);
  return 0;
}

OAKUK_API int oakuk_runtime_undeploy(oakuk_runtime *rt, const char *name, oakuk_error **error) {
  g_return_val_if_fail(rt != NULL && name != NULL, OAKUK_EINVAL);
  OakukInstance *i = lookup(rt, name);
  if (!i)
    return oakuk_set_error(error, OAKUK_ENOTFOUND, 0, "name", "instance %s: no such instance", name);
  if (i->undeploy)
    return 0;
  i->undeploy = TRUE;
  switch (i->state) {
  case OAKUK_INST_PREPARING: break; /* prepared() goes on with the undeploy */
  case OAKUK_INST_STARTING:
  case OAKUK_INST_RUNNING:
    if (i->pid > 0) {
      begin_stop(i);
      break;
    }
    i->state = OAKUK_INST_EXITED;
    start_release(i);
    break;
  case OAKUK_INST_STOPPING: break;
  case OAKUK_INST_EXITED: start_release(i); break;
  }
  return 0;
}

/* ---- adoption ---- */

static JsonObject *load_record(const char *dir, JsonParser *p) {
  g_autofree char *path = g_build_filename(dir, "instance.json", NULL);
  if (!json_parser_load_from_file(p, path, NULL) || !JSON_NODE_HOLDS_OBJECT(json_parser_get_root(p)))
    return NULL;
  return json_node_get_object(json_parser_get_root(p));
}

/* Adopts the instance directory name; TRUE when its process still lives. */
static gboolean adopt_one(oakuk_runtime *rt, const char *name) {
  if (!oakuk_instance_name_is_valid(name))
    return FALSE; /* not a name this runtime gives: not ours to touch */
  OakukInstance *i = instance_new(rt, name);
  g_autoptr(JsonParser) p = json_parser_new();
  JsonObject *o = load_record(i->dir, p);
  if (!o) {
    /* A deploy interrupted before its process started: release what it made. */
    g_debug("instances/%s: no usable instance.json, released", name);
    rt->klass->release(i, TRUE);
    oakuk_instance_unref(i);
    return FALSE;
  }
  read_record(i, o);
  add_instance(rt, i);
  oakuk_instance_unref(i);
  GPid pid = rt->klass->adopt(i, o);
  guint64 start = 0;
  char state = 0;
  /* The start time guards against a recycled pid now belonging to another process. */
  if (pid > 0 && oakuk_proc_stat(pid, &state, NULL, &start) && start == i->start_time && state != 'Z') {
    i->pid = pid;
    watch(i, FALSE);
    i->state = OAKUK_INST_STARTING;
    if (rt->klass->started(i))
      oakuk_instance_running(i);
    return TRUE;
  }
  i->state = OAKUK_INST_RUNNING; /* it ran: judge its end like any other */
  i->ended_unwatched = TRUE;
  on_exited(i, -1);
  return FALSE;
}

OAKUK_API int oakuk_runtime_adopt(oakuk_runtime *rt, oakuk_error **error) {
  g_return_val_if_fail(rt != NULL, OAKUK_EINVAL);
  GError *err = NULL;
  g_autoptr(GDir) d = g_dir_open(rt->instances_dir, 0, &err);
  if (!d)
    return oakuk_propagate_gerror(error, err);
  int live = 0;
  const char *e;
  while ((e = g_dir_read_name(d)))
    if (!lookup(rt, e) && adopt_one(rt, e))
      live++;
  return live;
}

/* ---- the runtime object ---- */

oakuk_runtime *oakuk_runtime_alloc(const OakukRuntimeClass *klass, void *impl, const char *instances_dir,
                                   GError **error) {
  if (g_mkdir_with_parents(instances_dir, 0700) != 0) {
    int e = errno;
    g_set_error(error, OAKUK_ERROR, -OAKUK_EIO, "create %s: %s", instances_dir, g_strerror(e));
    return NULL;
  }
  oakuk_runtime *rt = g_new0(oakuk_runtime, 1);
  rt->refcount = 1;
  rt->klass = klass;
  rt->impl = impl;
  rt->instances_dir = g_strdup(instances_dir);
  rt->context = g_main_context_ref_thread_default();
  rt->instances = g_hash_table_new_full(g_str_hash, g_str_equal, NULL, (GDestroyNotify)oakuk_instance_unref);
  rt->names = g_ptr_array_new_with_free_func(g_free);
  g_queue_init(&rt->pending);
  return rt;
}

OAKUK_API oakuk_runtime *oakuk_runtime_ref(oakuk_runtime *rt) {
  g_return_val_if_fail(rt != NULL, NULL);
  g_atomic_int_inc(&rt->refcount);
  return rt;
}

/* Lets go of every instance: stops and removes them unless rt->keep_instances. Blocking. */
static void drop_instances(oakuk_runtime *rt) {
  GList *all = g_hash_table_get_values(rt->instances);
  for (GList *l = all; l; l = l->next) {
    OakukInstance *i = oakuk_instance_ref(l->data);
    gboolean alive = i->state != OAKUK_INST_PREPARING && i->state != OAKUK_INST_EXITED && i->pid > 0;
    gboolean own = oakuk_proc_watch_active(&i->watch) && i->watch.child;
    GPid pid = i->pid;
    gboolean preparing = i->state == OAKUK_INST_PREPARING;
    i->orphan_keep = rt->keep_instances;
    detach(i);
    if (!rt->keep_instances && alive)
      oakuk_proc_kill_wait(pid, own);
    if (!rt->keep_instances && !preparing) /* a preparing one is released when its thread ends */
      rt->klass->release(i, TRUE);
    oakuk_instance_unref(i);
  }
  g_list_free(all);
}

OAKUK_API void oakuk_runtime_unref(oakuk_runtime *rt) {
  if (!rt || !g_atomic_int_dec_and_test(&rt->refcount))
    return;
  rt->cb = NULL;
  rt->ready_cb = NULL;
  drop_instances(rt);
  rt->klass->finalize(rt);
  if (rt->idle) {
    g_source_destroy(rt->idle);
    g_source_unref(rt->idle);
  }
  g_queue_clear_full(&rt->pending, (GDestroyNotify)event_free);
  g_hash_table_unref(rt->instances);
  g_ptr_array_unref(rt->names);
  g_main_context_unref(rt->context);
  g_free(rt->instances_dir);
  g_free(rt);
}

OAKUK_API void oakuk_runtime_set_keep_instances(oakuk_runtime *rt, bool keep) {
  g_return_if_fail(rt != NULL);
  rt->keep_instances = keep;
}

OAKUK_API int32_t oakuk_runtime_virt(const oakuk_runtime *rt) {
  g_return_val_if_fail(rt != NULL, OAKUK_VIRT_NONE);
  return rt->klass->virt;
}

OAKUK_API void oakuk_runtime_set_status_callback(oakuk_runtime *rt, oakuk_runtime_status_cb cb,
                                                 void *user_data) {
  g_return_if_fail(rt != NULL);
  rt->cb = cb;
  rt->cb_data = user_data;
}

OAKUK_API void oakuk_runtime_set_ready_callback(oakuk_runtime *rt, oakuk_runtime_ready_cb cb,
                                                void *user_data) {
  g_return_if_fail(rt != NULL);
  rt->ready_cb = cb;
  rt->ready_cb_data = user_data;
}

static gboolean has_process(const OakukInstance *i) {
  return i->state != OAKUK_INST_PREPARING && i->state != OAKUK_INST_EXITED && i->pid > 0;
}

static OakukInstance *lookup_live(oakuk_runtime *rt, const char *name, oakuk_error **error) {
  OakukInstance *i = lookup(rt, name);
  if (!i)
    oakuk_set_error(error, OAKUK_ENOTFOUND, 0, "name", "instance %s: no such instance", name);
  else if (!has_process(i)) {
    oakuk_set_error(error, OAKUK_ENOTFOUND, 0, "name", "instance %s: not running", name);
    i = NULL;
  }
  return i;
}

OAKUK_API int oakuk_runtime_stats(oakuk_runtime *rt, const char *name, double *cpu_percent, int64_t *rss_kb,
                                  oakuk_error **error) {
  g_return_val_if_fail(rt != NULL && name != NULL, OAKUK_EINVAL);
  OakukInstance *i = lookup_live(rt, name, error);
  if (!i)
    return OAKUK_ENOTFOUND;
  GError *err = NULL;
  double cpu = 0;
  int64_t rss = 0;
  if (!rt->klass->stats(i, &cpu, &rss, &err))
    return oakuk_propagate_gerror(error, err);
  if (cpu_percent)
    *cpu_percent = cpu;
  if (rss_kb)
    *rss_kb = rss;
  return 0;
}

OAKUK_API int oakuk_runtime_cgroup_memory_kb(oakuk_runtime *rt, const char *name, int64_t *kb,
                                             oakuk_error **error) {
  g_return_val_if_fail(rt != NULL && name != NULL, OAKUK_EINVAL);
  OakukInstance *i = lookup_live(rt, name, error);
  if (!i)
    return OAKUK_ENOTFOUND;
  GError *err = NULL;
  int64_t v = 0;
  if (!rt->klass->cgroup_memory(i, &v, &err))
    return oakuk_propagate_gerror(error, err);
  if (kb)
    *kb = v;
  return 0;
}

OAKUK_API size_t oakuk_runtime_instance_count(const oakuk_runtime *rt) {
  g_return_val_if_fail(rt != NULL, 0);
  return rt->names->len;
}

OAKUK_API const char *oakuk_runtime_instance_name(const oakuk_runtime *rt, size_t i) {
  g_return_val_if_fail(rt != NULL, NULL);
  return i < rt->names->len ? rt->names->pdata[i] : NULL;
}

OAKUK_API int32_t oakuk_runtime_instance_status(const oakuk_runtime *rt, const char *name) {
  g_return_val_if_fail(rt != NULL && name != NULL, -1);
  OakukInstance *i = lookup(rt, name);
  return i ? i->status : -1;
}

OAKUK_API int64_t oakuk_runtime_instance_pid(const oakuk_runtime *rt, const char *name) {
  g_return_val_if_fail(rt != NULL && name != NULL, 0);
  OakukInstance *i = lookup(rt, name);
  return i && has_process(i) ? i->pid : 0;
}

OAKUK_API bool oakuk_runtime_instance_ready(const oakuk_runtime *rt, const char *name) {
  g_return_val_if_fail(rt != NULL && name != NULL, false);
  OakukInstance *i = lookup(rt, name);
  return i && i->ready;
}

OAKUK_API int64_t oakuk_runtime_instance_ready_ms(const oakuk_runtime *rt, const char *name) {
  g_return_val_if_fail(rt != NULL && name != NULL, -1);
  OakukInstance *i = lookup(rt, name);
  return i && i->ready ? i->ready_ms : -1;
}

OAKUK_API int32_t oakuk_runtime_instance_start(const oakuk_runtime *rt, const char *name) {
  g_return_val_if_fail(rt != NULL && name != NULL, OAKUK_START_BOOT);
  OakukInstance *i = lookup(rt, name);
  return i ? i->start_kind : OAKUK_START_BOOT;
}

OAKUK_API int32_t oakuk_runtime_instance_exit(const oakuk_runtime *rt, const char *name) {
  g_return_val_if_fail(rt != NULL && name != NULL, OAKUK_EXIT_NONE);
  OakukInstance *i = lookup(rt, name);
  return i ? i->exit_kind : OAKUK_EXIT_NONE;
}

OAKUK_API char *oakuk_runtime_instance_console_path(const oakuk_runtime *rt, const char *name) {
  g_return_val_if_fail(rt != NULL && name != NULL, NULL);
  OakukInstance *i = lookup(rt, name);
  if (!i)
    return NULL;
  g_autofree char *p = oakuk_instance_console_path(i);
  return strdup(p);
}

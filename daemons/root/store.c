/* The root's state store: schema, version, migrations and every SQL statement of oakuk-root. */
#include "store.h"

#include <oakuk/oakuk.h>
#include <string.h>

struct Store {
  sqlite3 *db;
  GHashTable *stmts; /* SQL text (a literal, by address) -> prepared statement */
};

/* ---- schema ---- */

static const char schema_v2[] =
    "CREATE TABLE users (name TEXT PRIMARY KEY, password TEXT NOT NULL);"
    "CREATE TABLE applications (id TEXT PRIMARY KEY, user TEXT NOT NULL, name TEXT NOT NULL,"
    "  namespace TEXT NOT NULL, doc TEXT NOT NULL, created INTEGER NOT NULL);"
    "CREATE TABLE services (id TEXT PRIMARY KEY,"
    "  app_id TEXT NOT NULL REFERENCES applications(id) ON DELETE CASCADE, user TEXT NOT NULL,"
    "  doc TEXT NOT NULL, ms TEXT NOT NULL, explain TEXT NOT NULL DEFAULT '', seq INTEGER NOT NULL DEFAULT 0,"
    "  next_instance INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL DEFAULT 'REQUESTED');"
    "CREATE TABLE clusters (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, location TEXT NOT NULL,"
    "  url TEXT NOT NULL, token TEXT NOT NULL, subnet_index INTEGER NOT NULL UNIQUE, subnet TEXT NOT NULL,"
    "  aggregate TEXT, received_at INTEGER NOT NULL DEFAULT 0, registered_at INTEGER NOT NULL);"
    "CREATE TABLE join_tokens (hash TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);";

/* What version 2 adds to version 1 (and to nothing: a new database gets schema_v2 first). */
static const char instances_v2[] =
    "CREATE TABLE instances (service_id TEXT NOT NULL REFERENCES services(id) ON DELETE CASCADE,"
    "  number INTEGER NOT NULL, desired TEXT NOT NULL DEFAULT 'run' CHECK (desired IN ('run', 'delete')),"
    "  generation INTEGER NOT NULL DEFAULT 0, cluster_id TEXT NOT NULL DEFAULT '',"
    "  assigned_at INTEGER NOT NULL DEFAULT 0, status TEXT NOT NULL DEFAULT 'REQUESTED',"
    "  status_detail TEXT NOT NULL DEFAULT '', note TEXT NOT NULL DEFAULT '', node TEXT NOT NULL DEFAULT '',"
    "  publicip TEXT NOT NULL DEFAULT '', cpu REAL NOT NULL DEFAULT 0, memory REAL NOT NULL DEFAULT 0,"
    "  ready INTEGER NOT NULL DEFAULT 0, ready_ms INTEGER, node_ready_ms INTEGER, requested_at INTEGER,"
    "  placement TEXT, next_try_at INTEGER NOT NULL DEFAULT 0, backoff_ms INTEGER NOT NULL DEFAULT 0,"
    "  moved_from TEXT NOT NULL DEFAULT '', moved_generation INTEGER NOT NULL DEFAULT 0,"
    "  moved_at INTEGER NOT NULL DEFAULT 0, deploy_pending INTEGER NOT NULL DEFAULT 0,"
    "  deploy_attempts INTEGER NOT NULL DEFAULT 0, deploy_next_at INTEGER NOT NULL DEFAULT 0,"
    "  deploy_done_at INTEGER NOT NULL DEFAULT 0, deploy_error TEXT NOT NULL DEFAULT '', extra TEXT,"
    "  PRIMARY KEY (service_id, number));"
    "CREATE INDEX instances_cluster ON instances(cluster_id);"
    "CREATE TABLE refusals (service_id TEXT NOT NULL, number INTEGER NOT NULL, cluster_id TEXT NOT NULL,"
    "  kind INTEGER NOT NULL, reason TEXT NOT NULL, since INTEGER NOT NULL, until INTEGER NOT NULL,"
    "  PRIMARY KEY (service_id, number, cluster_id),"
    "  FOREIGN KEY (service_id, number) REFERENCES instances(service_id, number) ON DELETE CASCADE);"
    "CREATE TABLE deletes (id INTEGER PRIMARY KEY AUTOINCREMENT, cluster_id TEXT NOT NULL,"
    "  service_id TEXT NOT NULL, number INTEGER NOT NULL, generation INTEGER NOT NULL,"
    "  attempts INTEGER NOT NULL DEFAULT 0, next_at INTEGER NOT NULL DEFAULT 0,"
    "  last_error TEXT NOT NULL DEFAULT '', created_at INTEGER NOT NULL,"
    "  last_deploy_at INTEGER NOT NULL DEFAULT 0, UNIQUE (cluster_id, service_id, number, generation));";

/* ---- statements ---- */

/* The prepared statement of sql, reset and unbound; kept for the store's lifetime. Every caller
 * steps it to its end or resets it before returning, so no statement keeps a read open. */
static sqlite3_stmt *stmt(Store *s, const char *sql, GError **error) {
  g_autoptr(GError) local = NULL;
  sqlite3_stmt *st = od_db_stmt(s->db, s->stmts, sql, &local);
  if (st == NULL) {
    od_log(G_LOG_LEVEL_WARNING, "store", "msg", local->message, NULL);
    g_propagate_error(error, g_steal_pointer(&local));
  }
  return st;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v) {
  if (v == NULL)
    sqlite3_bind_null(st, i);
  else
    sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
}

/* -1 stands for "absent" in the typed rows: stored as NULL. */
static void bind_opt_int(sqlite3_stmt *st, int i, gint64 v) {
  if (v < 0)
    sqlite3_bind_null(st, i);
  else
    sqlite3_bind_int64(st, i, v);
}

/* Steps a statement that returns no rows the caller wants. */
static gboolean run(Store *s, sqlite3_stmt *st, GError **error) {
  int rc = sqlite3_step(st);
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "sqlite: %s", sqlite3_errmsg(s->db));
    sqlite3_reset(st);
    return FALSE;
  }
  sqlite3_reset(st);
  return TRUE;
}

static char *col_dup(sqlite3_stmt *st, int i) {
  return sqlite3_column_type(st, i) == SQLITE_NULL ? NULL
                                                   : g_strdup((const char *)sqlite3_column_text(st, i));
}

static char *col_str(sqlite3_stmt *st, int i) {
  const char *v = (const char *)sqlite3_column_text(st, i);
  return g_strdup(v ? v : "");
}

static gint64 col_opt_int(sqlite3_stmt *st, int i) {
  return sqlite3_column_type(st, i) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, i);
}

/* The text in column 0 of the first row (NULL when none); resets the statement. */
static char *first_text(sqlite3_stmt *st) {
  char *v = st != NULL && sqlite3_step(st) == SQLITE_ROW ? col_dup(st, 0) : NULL;
  if (st != NULL)
    sqlite3_reset(st);
  return v;
}

static gint64 first_int(sqlite3_stmt *st, gint64 none) {
  gint64 v = st != NULL && sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : none;
  if (st != NULL)
    sqlite3_reset(st);
  return v;
}

gboolean store_begin(Store *s, GError **error) {
  return od_db_exec(s->db, "BEGIN IMMEDIATE", error);
}

gboolean store_commit(Store *s, GError **error) {
  return od_db_exec(s->db, "COMMIT", error);
}

void store_rollback(Store *s) {
  if (!sqlite3_get_autocommit(s->db))
    od_db_exec(s->db, "ROLLBACK", NULL);
}

/* ---- users, join tokens ---- */

void store_user_free(StoreUser *u) {
  if (u == NULL)
    return;
  g_free(u->name);
  g_free(u->role);
  g_free(u->password);
  g_free(u);
}

static GPtrArray *users_query(Store *s, const char *sql, const char *arg) {
  GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)store_user_free);
  sqlite3_stmt *st = stmt(s, sql, NULL);
  if (st == NULL)
    return out;
  if (arg != NULL)
    bind_text(st, 1, arg);
  while (sqlite3_step(st) == SQLITE_ROW) {
    StoreUser *u = g_new0(StoreUser, 1);
    u->name = col_str(st, 0);
    u->role = col_str(st, 1);
    u->password = col_str(st, 2);
    g_ptr_array_add(out, u);
  }
  sqlite3_reset(st);
  return out;
}

StoreUser *store_user_get(Store *s, const char *name) {
  g_autoptr(GPtrArray) one = users_query(s, "SELECT name, role, password FROM users WHERE name = ?1", name);
  return one->len ? g_ptr_array_steal_index(one, 0) : NULL;
}

GPtrArray *store_users_all(Store *s) {
  return users_query(s, "SELECT name, role, password FROM users ORDER BY rowid", NULL);
}

char *store_user_password(Store *s, const char *name) {
  sqlite3_stmt *st = stmt(s, "SELECT password FROM users WHERE name = ?1", NULL);
  if (st == NULL)
    return NULL;
  bind_text(st, 1, name);
  return first_text(st);
}

gboolean store_user_exists(Store *s, const char *name) {
  g_autofree char *p = store_user_password(s, name);
  return p != NULL;
}

gboolean store_user_set_password(Store *s, const char *name, const char *hash, GError **error) {
  sqlite3_stmt *st = stmt(s,
                          "INSERT INTO users (name, password, role) VALUES (?1, ?2, 'Admin')"
                          " ON CONFLICT (name) DO UPDATE SET password = excluded.password",
                          error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, name);
  bind_text(st, 2, hash);
  return run(s, st, error);
}

gboolean store_user_insert(Store *s, const char *name, const char *hash, const char *role, GError **error) {
  sqlite3_stmt *st = stmt(s, "INSERT INTO users (name, password, role) VALUES (?1, ?2, ?3)", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, name);
  bind_text(st, 2, hash);
  bind_text(st, 3, role);
  return run(s, st, error);
}

gboolean store_user_set_role(Store *s, const char *name, const char *role, GError **error) {
  sqlite3_stmt *st = stmt(s, "UPDATE users SET role = ?2 WHERE name = ?1", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, name);
  bind_text(st, 2, role);
  return run(s, st, error);
}

gboolean store_user_delete(Store *s, const char *name, GError **error) {
  sqlite3_stmt *st = stmt(s, "DELETE FROM users WHERE name = ?1", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, name);
  return run(s, st, error);
}

gint64 store_user_count_role(Store *s, const char *role) {
  sqlite3_stmt *st = stmt(s, "SELECT COUNT(*) FROM users WHERE role = ?1", NULL);
  if (st == NULL)
    return 0;
  bind_text(st, 1, role);
  return first_int(st, 0);
}

gboolean store_join_token_add(Store *s, const char *hash, gint64 expires_at_s, gint64 uses, GError **error) {
  sqlite3_stmt *st = stmt(s, "INSERT INTO join_tokens (hash, expires_at, uses) VALUES (?1, ?2, ?3)", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, hash);
  sqlite3_bind_int64(st, 2, expires_at_s);
  sqlite3_bind_int64(st, 3, uses);
  return run(s, st, error);
}

gboolean store_join_token_valid(Store *s, const char *hash, gint64 now_s) {
  sqlite3_stmt *st =
      stmt(s, "SELECT hash FROM join_tokens WHERE hash = ?1 AND expires_at >= ?2 AND uses > 0", NULL);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, hash);
  sqlite3_bind_int64(st, 2, now_s);
  g_autofree char *found = first_text(st);
  return found != NULL;
}

gboolean store_join_token_consume(Store *s, const char *hash, GError **error) {
  sqlite3_stmt *st = stmt(s, "UPDATE join_tokens SET uses = uses - 1 WHERE hash = ?1", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, hash);
  if (!run(s, st, error))
    return FALSE;
  st = stmt(s, "DELETE FROM join_tokens WHERE hash = ?1 AND uses <= 0", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, hash);
  return run(s, st, error);
}

gboolean store_join_tokens_expire(Store *s, gint64 now_s, GError **error) {
  sqlite3_stmt *st = stmt(s, "DELETE FROM join_tokens WHERE expires_at < ?1", error);
  if (st == NULL)
    return FALSE;
  sqlite3_bind_int64(st, 1, now_s);
  return run(s, st, error);
}

/* ---- applications ---- */

void store_application_free(StoreApplication *a) {
  if (a == NULL)
    return;
  g_free(a->id);
  g_free(a->user);
  g_free(a->name);
  g_free(a->namespace_);
  g_free(a->doc);
  g_free(a);
}

#define APP_COLUMNS "SELECT id, user, name, namespace, doc FROM applications"

static StoreApplication *app_row(sqlite3_stmt *st) {
  StoreApplication *a = g_new0(StoreApplication, 1);
  a->id = col_str(st, 0);
  a->user = col_str(st, 1);
  a->name = col_str(st, 2);
  a->namespace_ = col_str(st, 3);
  a->doc = col_str(st, 4);
  return a;
}

StoreApplication *store_application_get(Store *s, const char *id) {
  sqlite3_stmt *st = stmt(s, APP_COLUMNS " WHERE id = ?1", NULL);
  if (st == NULL)
    return NULL;
  bind_text(st, 1, id);
  StoreApplication *a = sqlite3_step(st) == SQLITE_ROW ? app_row(st) : NULL;
  sqlite3_reset(st);
  return a;
}

GPtrArray *store_applications_of_user(Store *s, const char *user) {
  GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)store_application_free);
  sqlite3_stmt *st = stmt(s, APP_COLUMNS " WHERE user = ?1 ORDER BY created, rowid", NULL);
  if (st == NULL)
    return out;
  bind_text(st, 1, user);
  while (sqlite3_step(st) == SQLITE_ROW)
    g_ptr_array_add(out, app_row(st));
  sqlite3_reset(st);
  return out;
}

GPtrArray *store_applications_all(Store *s) {
  GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)store_application_free);
  sqlite3_stmt *st = stmt(s, APP_COLUMNS " ORDER BY created, rowid", NULL);
  if (st == NULL)
    return out;
  while (sqlite3_step(st) == SQLITE_ROW)
    g_ptr_array_add(out, app_row(st));
  sqlite3_reset(st);
  return out;
}

char *store_application_find(Store *s, const char *user, const char *name, const char *namespace_) {
  sqlite3_stmt *st =
      stmt(s, "SELECT id FROM applications WHERE user = ?1 AND name = ?2 AND namespace = ?3", NULL);
  if (st == NULL)
    return NULL;
  bind_text(st, 1, user);
  bind_text(st, 2, name);
  bind_text(st, 3, namespace_);
  return first_text(st);
}

gboolean store_application_insert(Store *s, const StoreApplication *a, gint64 created_ms, GError **error) {
  sqlite3_stmt *st = stmt(s,
                          "INSERT INTO applications (id, user, name, namespace, doc, created)"
                          " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                          error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, a->id);
  bind_text(st, 2, a->user);
  bind_text(st, 3, a->name);
  bind_text(st, 4, a->namespace_);
  bind_text(st, 5, a->doc);
  sqlite3_bind_int64(st, 6, created_ms);
  return run(s, st, error);
}

gboolean store_application_set_doc(Store *s, const char *id, const char *doc, GError **error) {
  sqlite3_stmt *st = stmt(s, "UPDATE applications SET doc = ?2 WHERE id = ?1", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, id);
  bind_text(st, 2, doc);
  return run(s, st, error);
}

gboolean store_application_delete(Store *s, const char *id, GError **error) {
  sqlite3_stmt *st = stmt(s, "DELETE FROM applications WHERE id = ?1", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, id);
  return run(s, st, error);
}

gint64 store_application_count(Store *s) {
  return first_int(stmt(s, "SELECT COUNT(*) FROM applications", NULL), 0);
}

/* ---- services ---- */

void store_service_free(StoreService *sv) {
  if (sv == NULL)
    return;
  g_free(sv->id);
  g_free(sv->app_id);
  g_free(sv->user);
  g_free(sv->doc);
  g_free(sv->ms);
  g_free(sv->explain);
  g_free(sv->status);
  g_free(sv);
}

#define SERVICE_COLUMNS                                                                                      \
  "SELECT id, app_id, user, doc, ms, explain, next_instance, status, revision FROM services"

static StoreService *service_row(sqlite3_stmt *st) {
  StoreService *sv = g_new0(StoreService, 1);
  sv->id = col_str(st, 0);
  sv->app_id = col_str(st, 1);
  sv->user = col_str(st, 2);
  sv->doc = col_str(st, 3);
  sv->ms = col_str(st, 4);
  sv->explain = col_str(st, 5);
  sv->next_instance = sqlite3_column_int64(st, 6);
  sv->status = col_str(st, 7);
  sv->revision = sqlite3_column_int64(st, 8);
  return sv;
}

static GPtrArray *services_query(Store *s, const char *sql, const char *arg) {
  GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)store_service_free);
  sqlite3_stmt *st = stmt(s, sql, NULL);
  if (st == NULL)
    return out;
  if (arg != NULL)
    bind_text(st, 1, arg);
  while (sqlite3_step(st) == SQLITE_ROW)
    g_ptr_array_add(out, service_row(st));
  sqlite3_reset(st);
  return out;
}

StoreService *store_service_get(Store *s, const char *id) {
  g_autoptr(GPtrArray) one = services_query(s, SERVICE_COLUMNS " WHERE id = ?1", id);
  return one->len ? g_ptr_array_steal_index(one, 0) : NULL;
}

char *store_service_resolve(Store *s, const char *job_id) {
  sqlite3_stmt *st = stmt(s, "SELECT id FROM services WHERE id = ?1", NULL);
  if (st == NULL)
    return NULL;
  bind_text(st, 1, job_id);
  char *id = first_text(st);
  if (id != NULL)
    return id;
  st = stmt(s, "SELECT id FROM services WHERE json_extract(doc, '$.job_name') = ?1", NULL);
  if (st == NULL)
    return NULL;
  bind_text(st, 1, job_id);
  return first_text(st);
}

GPtrArray *store_services_of_app(Store *s, const char *app_id) {
  return services_query(s, SERVICE_COLUMNS " WHERE app_id = ?1 ORDER BY rowid", app_id);
}

GPtrArray *store_services_of_user(Store *s, const char *user) {
  return services_query(s, SERVICE_COLUMNS " WHERE user = ?1 ORDER BY rowid", user);
}

GPtrArray *store_services_all(Store *s) {
  return services_query(s, SERVICE_COLUMNS " ORDER BY rowid", NULL);
}

gboolean store_service_insert(Store *s, const StoreService *sv, GError **error) {
  sqlite3_stmt *st = stmt(s,
                          "INSERT INTO services (id, app_id, user, doc, ms, explain, next_instance, status,"
                          " revision) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                          error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, sv->id);
  bind_text(st, 2, sv->app_id);
  bind_text(st, 3, sv->user);
  bind_text(st, 4, sv->doc);
  bind_text(st, 5, sv->ms);
  bind_text(st, 6, sv->explain ? sv->explain : "");
  sqlite3_bind_int64(st, 7, sv->next_instance);
  bind_text(st, 8, sv->status ? sv->status : "REQUESTED");
  sqlite3_bind_int64(st, 9, sv->revision > 0 ? sv->revision : 1);
  return run(s, st, error);
}

gboolean store_service_set_explain(Store *s, const char *id, const char *explain, GError **error) {
  sqlite3_stmt *st = stmt(s, "UPDATE services SET explain = ?2 WHERE id = ?1", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, id);
  bind_text(st, 2, explain);
  return run(s, st, error);
}

gboolean store_service_set_status(Store *s, const char *id, const char *status, GError **error) {
  sqlite3_stmt *st = stmt(s, "UPDATE services SET status = ?2 WHERE id = ?1", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, id);
  bind_text(st, 2, status);
  return run(s, st, error);
}

gboolean store_service_take_number(Store *s, const char *id, gint64 *n, GError **error) {
  sqlite3_stmt *st = stmt(s, "SELECT next_instance FROM services WHERE id = ?1", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, id);
  *n = first_int(st, -1);
  if (*n < 0) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "service %s: not found", id);
    return FALSE;
  }
  st = stmt(s, "UPDATE services SET next_instance = next_instance + 1 WHERE id = ?1", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, id);
  return run(s, st, error);
}

gboolean store_service_delete(Store *s, const char *id, GError **error) {
  sqlite3_stmt *st = stmt(s, "DELETE FROM services WHERE id = ?1", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, id);
  return run(s, st, error);
}

/* Revisions that no instance runs any more, other than the current one, are dropped. */
static gboolean revisions_prune(Store *s, const char *id, GError **error) {
  sqlite3_stmt *st = stmt(s,
                          "DELETE FROM service_revisions WHERE service_id = ?1 AND revision NOT IN"
                          " (SELECT revision FROM instances WHERE service_id = ?1)",
                          error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, id);
  return run(s, st, error);
}

gboolean store_service_spec(Store *s, const char *id, gint64 revision, char **doc, char **ms) {
  sqlite3_stmt *st = stmt(s,
                          "SELECT doc, ms FROM services WHERE id = ?1 AND revision = ?2 UNION ALL"
                          " SELECT doc, ms FROM service_revisions WHERE service_id = ?1 AND revision = ?2",
                          NULL);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, id);
  sqlite3_bind_int64(st, 2, revision);
  gboolean found = sqlite3_step(st) == SQLITE_ROW;
  if (found) {
    if (doc != NULL)
      *doc = col_str(st, 0);
    if (ms != NULL)
      *ms = col_str(st, 1);
  }
  sqlite3_reset(st);
  return found;
}

gint64 store_service_revision_max(Store *s, const char *id) {
  sqlite3_stmt *st = stmt(s,
                          "SELECT MAX(r) FROM (SELECT revision_seq AS r FROM services WHERE id = ?1 UNION ALL"
                          " SELECT revision FROM service_revisions WHERE service_id = ?1 UNION ALL"
                          " SELECT revision FROM instances WHERE service_id = ?1)",
                          NULL);
  if (st == NULL)
    return 0;
  bind_text(st, 1, id);
  return first_int(st, 0);
}

GArray *store_service_revisions(Store *s, const char *id) {
  GArray *out = g_array_new(FALSE, FALSE, sizeof(gint64));
  sqlite3_stmt *st =
      stmt(s, "SELECT revision FROM service_revisions WHERE service_id = ?1 ORDER BY revision", NULL);
  if (st == NULL)
    return out;
  bind_text(st, 1, id);
  while (sqlite3_step(st) == SQLITE_ROW) {
    gint64 r = sqlite3_column_int64(st, 0);
    g_array_append_val(out, r);
  }
  sqlite3_reset(st);
  return out;
}

gboolean store_service_set_spec(Store *s, const char *id, gint64 revision, const char *doc, const char *ms,
                                GError **error) {
  /* The current spec is kept as a revision while instances run it (or a rollback may want it). */
  sqlite3_stmt *st = stmt(s,
                          "INSERT OR REPLACE INTO service_revisions (service_id, revision, doc, ms)"
                          " SELECT id, revision, doc, ms FROM services WHERE id = ?1",
                          error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, id);
  if (!run(s, st, error))
    return FALSE;
  st = stmt(s,
            "UPDATE services SET doc = ?2, ms = ?3, revision = ?4, revision_seq = MAX(revision_seq, ?4)"
            " WHERE id = ?1",
            error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, id);
  bind_text(st, 2, doc);
  bind_text(st, 3, ms);
  sqlite3_bind_int64(st, 4, revision);
  if (!run(s, st, error))
    return FALSE;
  st = stmt(s, "DELETE FROM service_revisions WHERE service_id = ?1 AND revision = ?2", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, id);
  sqlite3_bind_int64(st, 2, revision);
  return run(s, st, error) && revisions_prune(s, id, error);
}

gint64 store_service_count(Store *s) {
  return first_int(stmt(s, "SELECT COUNT(*) FROM services", NULL), 0);
}

/* ---- instances ---- */

StoreInstance *store_instance_new(const char *service_id, gint64 number) {
  StoreInstance *i = g_new0(StoreInstance, 1);
  i->service_id = g_strdup(service_id);
  i->number = number;
  i->cluster_id = g_strdup("");
  i->status = g_strdup("REQUESTED");
  i->status_detail = g_strdup("");
  i->note = g_strdup("");
  i->node = g_strdup("");
  i->publicip = g_strdup("");
  i->ready_ms = i->node_ready_ms = i->requested_at = -1;
  i->moved_from = g_strdup("");
  i->deploy_error = g_strdup("");
  return i;
}

void store_instance_free(StoreInstance *i) {
  if (i == NULL)
    return;
  g_free(i->service_id);
  g_free(i->cluster_id);
  g_free(i->status);
  g_free(i->status_detail);
  g_free(i->note);
  g_free(i->node);
  g_free(i->publicip);
  g_free(i->placement);
  g_free(i->moved_from);
  g_free(i->deploy_error);
  g_free(i->extra);
  g_free(i);
}

#define INSTANCE_COLUMNS                                                                                     \
  "service_id, number, desired, generation, cluster_id, assigned_at, status, status_detail, note, node,"     \
  " publicip, cpu, memory, ready, ready_ms, node_ready_ms, requested_at, placement, next_try_at,"            \
  " backoff_ms, moved_from, moved_generation, moved_at, deploy_pending, deploy_attempts, deploy_next_at,"    \
  " deploy_done_at, deploy_error, extra, revision"
#define INSTANCE_SELECT "SELECT " INSTANCE_COLUMNS " FROM instances"

static StoreInstance *instance_row(sqlite3_stmt *st) {
  StoreInstance *i = g_new0(StoreInstance, 1);
  i->service_id = col_str(st, 0);
  i->number = sqlite3_column_int64(st, 1);
  i->deleting = g_strcmp0((const char *)sqlite3_column_text(st, 2), "delete") == 0;
  i->generation = sqlite3_column_int64(st, 3);
  i->cluster_id = col_str(st, 4);
  i->assigned_at = sqlite3_column_int64(st, 5);
  i->status = col_str(st, 6);
  i->status_detail = col_str(st, 7);
  i->note = col_str(st, 8);
  i->node = col_str(st, 9);
  i->publicip = col_str(st, 10);
  i->cpu = sqlite3_column_double(st, 11);
  i->memory = sqlite3_column_double(st, 12);
  i->ready = sqlite3_column_int64(st, 13) != 0;
  i->ready_ms = col_opt_int(st, 14);
  i->node_ready_ms = col_opt_int(st, 15);
  i->requested_at = col_opt_int(st, 16);
  i->placement = col_dup(st, 17);
  i->next_try_at = sqlite3_column_int64(st, 18);
  i->backoff_ms = sqlite3_column_int64(st, 19);
  i->moved_from = col_str(st, 20);
  i->moved_generation = sqlite3_column_int64(st, 21);
  i->moved_at = sqlite3_column_int64(st, 22);
  i->deploy_pending = sqlite3_column_int64(st, 23) != 0;
  i->deploy_attempts = sqlite3_column_int64(st, 24);
  i->deploy_next_at = sqlite3_column_int64(st, 25);
  i->deploy_done_at = sqlite3_column_int64(st, 26);
  i->deploy_error = col_str(st, 27);
  i->extra = col_dup(st, 28);
  i->revision = sqlite3_column_int64(st, 29);
  return i;
}

static GPtrArray *instances_query(Store *s, const char *sql, const char *arg, gint64 num) {
  GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)store_instance_free);
  sqlite3_stmt *st = stmt(s, sql, NULL);
  if (st == NULL)
    return out;
  if (sqlite3_bind_parameter_count(st) >= 1)
    bind_text(st, 1, arg);
  if (sqlite3_bind_parameter_count(st) >= 2)
    sqlite3_bind_int64(st, 2, num);
  while (sqlite3_step(st) == SQLITE_ROW)
    g_ptr_array_add(out, instance_row(st));
  sqlite3_reset(st);
  return out;
}

StoreInstance *store_instance_get(Store *s, const char *service_id, gint64 number) {
  g_autoptr(GPtrArray) one =
      instances_query(s, INSTANCE_SELECT " WHERE service_id = ?1 AND number = ?2", service_id, number);
  return one->len ? g_ptr_array_steal_index(one, 0) : NULL;
}

gboolean store_instance_put(Store *s, const StoreInstance *i, GError **error) {
  /* An upsert, not INSERT OR REPLACE: replacing would delete the row and cascade to its refusals. */
  sqlite3_stmt *st = stmt(
      s,
      "INSERT INTO instances (" INSTANCE_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11,"
      " ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30)"
      " ON CONFLICT (service_id, number) DO UPDATE SET desired = excluded.desired,"
      " generation = excluded.generation, cluster_id = excluded.cluster_id,"
      " assigned_at = excluded.assigned_at, status = excluded.status, status_detail = excluded.status_detail,"
      " note = excluded.note, node = excluded.node, publicip = excluded.publicip, cpu = excluded.cpu,"
      " memory = excluded.memory, ready = excluded.ready, ready_ms = excluded.ready_ms,"
      " node_ready_ms = excluded.node_ready_ms, requested_at = excluded.requested_at,"
      " placement = excluded.placement, next_try_at = excluded.next_try_at, backoff_ms = excluded.backoff_ms,"
      " moved_from = excluded.moved_from, moved_generation = excluded.moved_generation,"
      " moved_at = excluded.moved_at, deploy_pending = excluded.deploy_pending,"
      " deploy_attempts = excluded.deploy_attempts, deploy_next_at = excluded.deploy_next_at,"
      " deploy_done_at = excluded.deploy_done_at, deploy_error = excluded.deploy_error,"
      " extra = excluded.extra, revision = excluded.revision",
      error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, i->service_id);
  sqlite3_bind_int64(st, 2, i->number);
  bind_text(st, 3, i->deleting ? "delete" : "run");
  sqlite3_bind_int64(st, 4, i->generation);
  bind_text(st, 5, i->cluster_id ? i->cluster_id : "");
  sqlite3_bind_int64(st, 6, i->assigned_at);
  bind_text(st, 7, i->status ? i->status : "REQUESTED");
  bind_text(st, 8, i->status_detail ? i->status_detail : "");
  bind_text(st, 9, i->note ? i->note : "");
  bind_text(st, 10, i->node ? i->node : "");
  bind_text(st, 11, i->publicip ? i->publicip : "");
  sqlite3_bind_double(st, 12, i->cpu);
  sqlite3_bind_double(st, 13, i->memory);
  sqlite3_bind_int64(st, 14, i->ready ? 1 : 0);
  bind_opt_int(st, 15, i->ready_ms);
  bind_opt_int(st, 16, i->node_ready_ms);
  bind_opt_int(st, 17, i->requested_at);
  bind_text(st, 18, i->placement);
  sqlite3_bind_int64(st, 19, i->next_try_at);
  sqlite3_bind_int64(st, 20, i->backoff_ms);
  bind_text(st, 21, i->moved_from ? i->moved_from : "");
  sqlite3_bind_int64(st, 22, i->moved_generation);
  sqlite3_bind_int64(st, 23, i->moved_at);
  sqlite3_bind_int64(st, 24, i->deploy_pending ? 1 : 0);
  sqlite3_bind_int64(st, 25, i->deploy_attempts);
  sqlite3_bind_int64(st, 26, i->deploy_next_at);
  sqlite3_bind_int64(st, 27, i->deploy_done_at);
  bind_text(st, 28, i->deploy_error ? i->deploy_error : "");
  bind_text(st, 29, i->extra);
  sqlite3_bind_int64(st, 30, i->revision > 0 ? i->revision : 1);
  return run(s, st, error);
}

gboolean store_instance_delete(Store *s, const char *service_id, gint64 number, GError **error) {
  sqlite3_stmt *st = stmt(s, "DELETE FROM instances WHERE service_id = ?1 AND number = ?2", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, service_id);
  sqlite3_bind_int64(st, 2, number);
  return run(s, st, error);
}

GPtrArray *store_instances_of_service(Store *s, const char *service_id) {
  return instances_query(s, INSTANCE_SELECT " WHERE service_id = ?1 ORDER BY number", service_id, 0);
}

GPtrArray *store_instances_unplaced(Store *s) {
  return instances_query(
      s, INSTANCE_SELECT " WHERE desired = 'run' AND cluster_id = '' ORDER BY service_id, number", NULL, 0);
}

GPtrArray *store_instances_on_cluster(Store *s, const char *cluster_id) {
  return instances_query(s, INSTANCE_SELECT " WHERE cluster_id = ?1 ORDER BY service_id, number", cluster_id,
                         0);
}

GPtrArray *store_instances_deploy_pending(Store *s) {
  return instances_query(
      s, INSTANCE_SELECT " WHERE deploy_pending = 1 AND desired = 'run' AND cluster_id != ''", NULL, 0);
}

GPtrArray *store_instances_moved_from(Store *s, const char *cluster_id) {
  return instances_query(s, INSTANCE_SELECT " WHERE moved_from = ?1 AND desired = 'run'", cluster_id, 0);
}

GPtrArray *store_instance_status_counts(Store *s) {
  GPtrArray *out = g_ptr_array_new_with_free_func(g_free);
  sqlite3_stmt *st = stmt(s, "SELECT status, COUNT(*) FROM instances GROUP BY 1 ORDER BY 1", NULL);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW)
    g_ptr_array_add(
        out, g_strdup_printf("%s\t%lld", sqlite3_column_text(st, 0), (long long)sqlite3_column_int64(st, 1)));
  if (st != NULL)
    sqlite3_reset(st);
  return out;
}

gint64 store_instance_count_deploy_pending(Store *s) {
  return first_int(stmt(s, "SELECT COUNT(*) FROM instances WHERE deploy_pending = 1", NULL), 0);
}

/* ---- refusals ---- */

void store_refusal_free(StoreRefusal *r) {
  if (r == NULL)
    return;
  g_free(r->service_id);
  g_free(r->cluster_id);
  g_free(r->reason);
  g_free(r);
}

gboolean store_refusal_put(Store *s, const StoreRefusal *r, GError **error) {
  sqlite3_stmt *st =
      stmt(s,
           "INSERT OR REPLACE INTO refusals (service_id, number, cluster_id, kind, reason, since,"
           " until) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
           error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, r->service_id);
  sqlite3_bind_int64(st, 2, r->number);
  bind_text(st, 3, r->cluster_id);
  sqlite3_bind_int64(st, 4, r->kind);
  bind_text(st, 5, r->reason);
  sqlite3_bind_int64(st, 6, r->since);
  sqlite3_bind_int64(st, 7, r->until);
  return run(s, st, error);
}

gboolean store_refusal_drop(Store *s, const char *service_id, gint64 number, const char *cluster_id,
                            GError **error) {
  sqlite3_stmt *st =
      stmt(s, "DELETE FROM refusals WHERE service_id = ?1 AND number = ?2 AND cluster_id = ?3", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, service_id);
  sqlite3_bind_int64(st, 2, number);
  bind_text(st, 3, cluster_id);
  return run(s, st, error);
}

gboolean store_refusals_expire(Store *s, gint64 now_ms, GError **error) {
  sqlite3_stmt *st = stmt(s, "DELETE FROM refusals WHERE until <= ?1", error);
  if (st == NULL)
    return FALSE;
  sqlite3_bind_int64(st, 1, now_ms);
  return run(s, st, error);
}

static GPtrArray *refusals_query(Store *s, const char *sql, const char *text, gint64 num, gint64 now_ms) {
  GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)store_refusal_free);
  sqlite3_stmt *st = stmt(s, sql, NULL);
  if (st == NULL)
    return out;
  bind_text(st, 1, text);
  sqlite3_bind_int64(st, 2, num);
  sqlite3_bind_int64(st, 3, now_ms);
  while (sqlite3_step(st) == SQLITE_ROW) {
    StoreRefusal *r = g_new0(StoreRefusal, 1);
    r->service_id = col_str(st, 0);
    r->number = sqlite3_column_int64(st, 1);
    r->cluster_id = col_str(st, 2);
    r->kind = (RefusalKind)sqlite3_column_int64(st, 3);
    r->reason = col_str(st, 4);
    r->since = sqlite3_column_int64(st, 5);
    r->until = sqlite3_column_int64(st, 6);
    g_ptr_array_add(out, r);
  }
  sqlite3_reset(st);
  return out;
}

GPtrArray *store_refusals_of_instance(Store *s, const char *service_id, gint64 number, gint64 now_ms) {
  return refusals_query(s,
                        "SELECT service_id, number, cluster_id, kind, reason, since, until FROM refusals"
                        " WHERE service_id = ?1 AND number = ?2 AND until > ?3 ORDER BY since, cluster_id",
                        service_id, number, now_ms);
}

GPtrArray *store_refusals_by_cluster(Store *s, const char *cluster_id, gint64 now_ms) {
  return refusals_query(s,
                        "SELECT service_id, number, cluster_id, kind, reason, since, until FROM refusals"
                        " WHERE cluster_id = ?1 AND ?2 = ?2 AND until > ?3 ORDER BY service_id, number",
                        cluster_id, 0, now_ms);
}

/* ---- pending deletes ---- */

void store_delete_free(StoreDelete *d) {
  if (d == NULL)
    return;
  g_free(d->cluster_id);
  g_free(d->service_id);
  g_free(d->last_error);
  g_free(d);
}

#define DELETE_SELECT                                                                                        \
  "SELECT id, cluster_id, service_id, number, generation, attempts, next_at, created_at, last_deploy_at,"    \
  " last_error FROM deletes"

static StoreDelete *delete_row(sqlite3_stmt *st) {
  StoreDelete *d = g_new0(StoreDelete, 1);
  d->id = sqlite3_column_int64(st, 0);
  d->cluster_id = col_str(st, 1);
  d->service_id = col_str(st, 2);
  d->number = sqlite3_column_int64(st, 3);
  d->generation = sqlite3_column_int64(st, 4);
  d->attempts = sqlite3_column_int64(st, 5);
  d->next_at = sqlite3_column_int64(st, 6);
  d->created_at = sqlite3_column_int64(st, 7);
  d->last_deploy_at = sqlite3_column_int64(st, 8);
  d->last_error = col_str(st, 9);
  return d;
}

static GPtrArray *deletes_query(Store *s, const char *sql, const char *arg, gint64 id) {
  GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)store_delete_free);
  sqlite3_stmt *st = stmt(s, sql, NULL);
  if (st == NULL)
    return out;
  if (arg != NULL)
    bind_text(st, 1, arg);
  else if (sqlite3_bind_parameter_count(st) >= 1)
    sqlite3_bind_int64(st, 1, id);
  while (sqlite3_step(st) == SQLITE_ROW)
    g_ptr_array_add(out, delete_row(st));
  sqlite3_reset(st);
  return out;
}

gboolean store_delete_add(Store *s, const char *cluster_id, const char *service_id, gint64 number,
                          gint64 generation, gint64 last_deploy_at, gint64 now_ms, GError **error) {
  sqlite3_stmt *st = stmt(s,
                          "INSERT OR IGNORE INTO deletes (cluster_id, service_id, number, generation,"
                          " created_at, last_deploy_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                          error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, cluster_id);
  bind_text(st, 2, service_id);
  sqlite3_bind_int64(st, 3, number);
  sqlite3_bind_int64(st, 4, generation);
  sqlite3_bind_int64(st, 5, now_ms);
  sqlite3_bind_int64(st, 6, last_deploy_at);
  return run(s, st, error);
}

StoreDelete *store_delete_get(Store *s, gint64 id) {
  g_autoptr(GPtrArray) one = deletes_query(s, DELETE_SELECT " WHERE id = ?1", NULL, id);
  return one->len ? g_ptr_array_steal_index(one, 0) : NULL;
}

gboolean store_delete_covers(Store *s, const char *cluster_id, const char *service_id, gint64 number,
                             gint64 generation) {
  sqlite3_stmt *st =
      stmt(s,
           "SELECT COUNT(*) FROM deletes WHERE cluster_id = ?1 AND service_id = ?2 AND number = ?3"
           " AND (generation >= ?4 OR generation = 0)",
           NULL);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, cluster_id);
  bind_text(st, 2, service_id);
  sqlite3_bind_int64(st, 3, number);
  sqlite3_bind_int64(st, 4, generation);
  return first_int(st, 0) > 0;
}

gboolean store_delete_remove(Store *s, gint64 id, GError **error) {
  sqlite3_stmt *st = stmt(s, "DELETE FROM deletes WHERE id = ?1", error);
  if (st == NULL)
    return FALSE;
  sqlite3_bind_int64(st, 1, id);
  return run(s, st, error);
}

gboolean store_delete_remove_for(Store *s, const char *cluster_id, const char *service_id, gint64 number,
                                 gint64 generation, GError **error) {
  sqlite3_stmt *st = stmt(s,
                          "DELETE FROM deletes WHERE cluster_id = ?1 AND service_id = ?2 AND number = ?3"
                          " AND (generation = ?4 OR ?4 < 0)",
                          error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, cluster_id);
  bind_text(st, 2, service_id);
  sqlite3_bind_int64(st, 3, number);
  sqlite3_bind_int64(st, 4, generation);
  return run(s, st, error);
}

gboolean store_delete_retry(Store *s, gint64 id, gint64 attempts, gint64 next_at, const char *why,
                            GError **error) {
  sqlite3_stmt *st =
      stmt(s, "UPDATE deletes SET attempts = ?2, next_at = ?3, last_error = ?4 WHERE id = ?1", error);
  if (st == NULL)
    return FALSE;
  sqlite3_bind_int64(st, 1, id);
  sqlite3_bind_int64(st, 2, attempts);
  sqlite3_bind_int64(st, 3, next_at);
  bind_text(st, 4, why);
  return run(s, st, error);
}

GPtrArray *store_deletes_all(Store *s) {
  return deletes_query(s, DELETE_SELECT " ORDER BY id", NULL, 0);
}

GPtrArray *store_deletes_of_cluster(Store *s, const char *cluster_id) {
  return deletes_query(s, DELETE_SELECT " WHERE cluster_id = ?1 ORDER BY id", cluster_id, 0);
}

gint64 store_delete_count(Store *s) {
  return first_int(stmt(s, "SELECT COUNT(*) FROM deletes", NULL), 0);
}

/* ---- clusters ---- */

void store_cluster_free(StoreCluster *c) {
  if (c == NULL)
    return;
  g_free(c->id);
  g_free(c->name);
  g_free(c->location);
  g_free(c->url);
  g_free(c->token);
  g_free(c->cred_salt);
  g_free(c->cred_hash);
  g_free(c->subnet);
  g_free(c->aggregate);
  g_free(c);
}

#define CLUSTER_SELECT                                                                                       \
  "SELECT id, name, location, url, token, subnet_index, subnet, aggregate, received_at, registered_at,"      \
  " cred_salt, cred_hash FROM clusters"

static GPtrArray *clusters_query(Store *s, const char *sql, const char *arg) {
  GPtrArray *out = g_ptr_array_new_with_free_func((GDestroyNotify)store_cluster_free);
  sqlite3_stmt *st = stmt(s, sql, NULL);
  if (st == NULL)
    return out;
  if (arg != NULL)
    bind_text(st, 1, arg);
  while (sqlite3_step(st) == SQLITE_ROW) {
    StoreCluster *c = g_new0(StoreCluster, 1);
    c->id = col_str(st, 0);
    c->name = col_str(st, 1);
    c->location = col_str(st, 2);
    c->url = col_str(st, 3);
    c->token = col_str(st, 4);
    c->subnet_index = sqlite3_column_int64(st, 5);
    c->subnet = col_str(st, 6);
    c->aggregate = col_dup(st, 7);
    c->received_at = sqlite3_column_int64(st, 8);
    c->registered_at = sqlite3_column_int64(st, 9);
    c->cred_salt = col_str(st, 10);
    c->cred_hash = col_str(st, 11);
    g_ptr_array_add(out, c);
  }
  sqlite3_reset(st);
  return out;
}

StoreCluster *store_cluster_get(Store *s, const char *id) {
  g_autoptr(GPtrArray) one = clusters_query(s, CLUSTER_SELECT " WHERE id = ?1", id ? id : "");
  return one->len ? g_ptr_array_steal_index(one, 0) : NULL;
}

char *store_cluster_id_by_name(Store *s, const char *name) {
  sqlite3_stmt *st = stmt(s, "SELECT id FROM clusters WHERE name = ?1", NULL);
  if (st == NULL)
    return NULL;
  bind_text(st, 1, name);
  return first_text(st);
}

GPtrArray *store_clusters_all(Store *s) {
  return clusters_query(s, CLUSTER_SELECT " ORDER BY registered_at, rowid", NULL);
}

GPtrArray *store_clusters_with_jwt(Store *s) {
  return clusters_query(s, CLUSTER_SELECT " WHERE token != '' ORDER BY rowid", NULL);
}

gint64 store_changes(Store *s) {
  return sqlite3_total_changes64(s->db);
}

gint64 store_cluster_count(Store *s) {
  return first_int(stmt(s, "SELECT COUNT(*) FROM clusters", NULL), 0);
}

gint64 store_cluster_free_subnet_index(Store *s, gint64 slots) {
  sqlite3_stmt *st = stmt(s, "SELECT subnet_index FROM clusters ORDER BY subnet_index", NULL);
  if (st == NULL)
    return -1;
  gint64 want = 0;
  while (sqlite3_step(st) == SQLITE_ROW) {
    gint64 used = sqlite3_column_int64(st, 0);
    if (used > want)
      break;
    if (used == want)
      want++;
  }
  sqlite3_reset(st);
  return want < slots ? want : -1;
}

gboolean store_cluster_insert(Store *s, const StoreCluster *c, GError **error) {
  sqlite3_stmt *st =
      stmt(s,
           "INSERT INTO clusters (id, name, location, url, token, subnet_index, subnet,"
           " registered_at, cred_salt, cred_hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
           error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, c->id);
  bind_text(st, 2, c->name);
  bind_text(st, 3, c->location);
  bind_text(st, 4, c->url);
  bind_text(st, 5, c->token ? c->token : "");
  sqlite3_bind_int64(st, 6, c->subnet_index);
  bind_text(st, 7, c->subnet);
  sqlite3_bind_int64(st, 8, c->registered_at);
  bind_text(st, 9, c->cred_salt ? c->cred_salt : "");
  bind_text(st, 10, c->cred_hash ? c->cred_hash : "");
  return run(s, st, error);
}

gboolean store_cluster_update_link(Store *s, const char *id, const char *url, const char *location,
                                   const char *cred_salt, const char *cred_hash, GError **error) {
  sqlite3_stmt *st = stmt(s,
                          "UPDATE clusters SET token = '', url = ?2, location = ?3, cred_salt = ?4,"
                          " cred_hash = ?5 WHERE id = ?1",
                          error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, id);
  bind_text(st, 2, url);
  bind_text(st, 3, location);
  bind_text(st, 4, cred_salt);
  bind_text(st, 5, cred_hash);
  return run(s, st, error);
}

gboolean store_cluster_set_aggregate(Store *s, const char *id, const char *aggregate, gint64 received_at,
                                     GError **error) {
  sqlite3_stmt *st = stmt(s, "UPDATE clusters SET aggregate = ?2, received_at = ?3 WHERE id = ?1", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, id);
  bind_text(st, 2, aggregate);
  sqlite3_bind_int64(st, 3, received_at);
  return run(s, st, error);
}

gboolean store_cluster_delete(Store *s, const char *id, GError **error) {
  sqlite3_stmt *st = stmt(s, "DELETE FROM deletes WHERE cluster_id = ?1", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, id);
  if (!run(s, st, error))
    return FALSE;
  st = stmt(s, "DELETE FROM refusals WHERE cluster_id = ?1", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, id);
  if (!run(s, st, error))
    return FALSE;
  st = stmt(s, "DELETE FROM clusters WHERE id = ?1", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, id);
  return run(s, st, error);
}

/* ---- opening and migrations ---- */

static gint64 user_version(Store *s) {
  g_autoptr(sqlite3_stmt) st = od_db_prepare(s->db, "PRAGMA user_version", NULL);
  return st != NULL && sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
}

static gboolean table_exists(Store *s, const char *name) {
  g_autoptr(sqlite3_stmt) st =
      od_db_prepare(s->db, "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1", NULL);
  if (st == NULL)
    return FALSE;
  sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
  return sqlite3_step(st) == SQLITE_ROW;
}

static const char *str_member(JsonObject *o, const char *key) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  return n != NULL && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
             ? json_node_get_string(n)
             : NULL;
}

static gint64 int_member(JsonObject *o, const char *key, gint64 def) {
  JsonNode *n = json_object_get_member(o, key);
  return n != NULL && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_INT64
             ? json_node_get_int(n)
             : def;
}

static double num_member(JsonObject *o, const char *key) {
  JsonNode *n = json_object_get_member(o, key);
  if (n == NULL || !JSON_NODE_HOLDS_VALUE(n))
    return 0;
  GType t = json_node_get_value_type(n);
  return t == G_TYPE_DOUBLE || t == G_TYPE_INT64 ? json_node_get_double(n) : 0;
}

static char *object_text(JsonObject *o) {
  g_autoptr(JsonNode) n = json_node_init_object(json_node_alloc(), o);
  return od_json_to_string(n, FALSE);
}

/* The keys of a version-1 instance entry that version 2 keeps in columns or derives. */
static const char *const v1_instance_keys[] = {"instance_number",
                                               "cluster_id",
                                               "cluster_location",
                                               "cluster_name",
                                               "node_id",
                                               "publicip",
                                               "cpu",
                                               "memory",
                                               "status",
                                               "status_detail",
                                               "cluster_refusals",
                                               "requested_at",
                                               "ready",
                                               "ready_ms",
                                               "node_ready_ms",
                                               "placement"};

/* One instance_list entry of a version-1 service document as a version-2 row. A placed instance
 * gets generation 1 (the clusters of version 1 knew none: they hold it as "any generation"). */
static StoreInstance *migrate_entry(const char *sid, JsonObject *e, gint64 now_ms) {
  StoreInstance *i = store_instance_new(sid, int_member(e, "instance_number", 0));
  const char *cid = str_member(e, "cluster_id");
  const char *status = str_member(e, "status");
  g_free(i->cluster_id);
  i->cluster_id = g_strdup(cid ? cid : "");
  i->generation = *i->cluster_id ? 1 : 0;
  i->assigned_at = *i->cluster_id ? now_ms : 0;
  g_free(i->status);
  i->status = g_strdup(status && oakuk_instance_status_from_name(status) >= 0 ? status : "REQUESTED");
  g_free(i->status_detail);
  i->status_detail = g_strdup(str_member(e, "status_detail") ? str_member(e, "status_detail") : "");
  g_free(i->node);
  i->node = g_strdup(str_member(e, "node_id") ? str_member(e, "node_id") : "");
  g_free(i->publicip);
  i->publicip = g_strdup(str_member(e, "publicip") ? str_member(e, "publicip") : "");
  i->cpu = num_member(e, "cpu");
  i->memory = num_member(e, "memory");
  i->ready = json_object_get_boolean_member_with_default(e, "ready", FALSE);
  i->ready_ms = int_member(e, "ready_ms", -1);
  i->node_ready_ms = int_member(e, "node_ready_ms", -1);
  i->requested_at = int_member(e, "requested_at", -1);
  JsonNode *pl = json_object_get_member(e, "placement");
  if (pl != NULL && JSON_NODE_HOLDS_OBJECT(pl))
    i->placement = object_text(json_node_get_object(pl));
  /* Version 1 showed a removal it waited for as UNDEPLOYED on its cluster. */
  i->deleting = *i->cluster_id && g_strcmp0(status, "UNDEPLOYED") == 0;
  g_autoptr(JsonObject) extra = json_object_new();
  g_autoptr(GList) keys = json_object_get_members(e);
  for (GList *l = keys; l != NULL; l = l->next) {
    gboolean known = FALSE;
    for (gsize k = 0; k < G_N_ELEMENTS(v1_instance_keys) && !known; k++)
      known = strcmp(l->data, v1_instance_keys[k]) == 0;
    if (!known)
      json_object_set_member(extra, l->data, json_node_copy(json_object_get_member(e, l->data)));
  }
  if (json_object_get_size(extra) > 0)
    i->extra = object_text(extra);
  return i;
}

/* Refusals of version 1 were kept forever; they become refusals that expire 30 s from now. */
static gboolean migrate_refusals(Store *s, const StoreInstance *i, JsonObject *e, gint64 now_ms,
                                 GError **error) {
  JsonNode *rn = json_object_get_member(e, "cluster_refusals");
  if (rn == NULL || !JSON_NODE_HOLDS_OBJECT(rn))
    return TRUE;
  JsonObject *ro = json_node_get_object(rn);
  g_autoptr(GList) ids = json_object_get_members(ro);
  for (GList *l = ids; l != NULL; l = l->next) {
    const char *reason = str_member(ro, l->data) ? str_member(ro, l->data) : "refused";
    StoreRefusal r = {.service_id = i->service_id,
                      .number = i->number,
                      .cluster_id = l->data,
                      .kind = g_str_has_prefix(reason, "NO_QUALIFIED_WORKER_FOUND") ? REFUSAL_UNQUALIFIED
                              : g_str_has_prefix(reason, "FAILED")                  ? REFUSAL_FAILED
                                                                                    : REFUSAL_CAPACITY,
                      .reason = (char *)reason,
                      .since = now_ms,
                      .until = now_ms + 30000};
    if (!store_refusal_put(s, &r, error))
      return FALSE;
  }
  return TRUE;
}

static gboolean migrate_service(Store *s, const char *sid, const char *doc_text, gint64 now_ms,
                                GError **error) {
  g_autoptr(JsonNode) node = od_json_parse(doc_text, -1, NULL);
  if (node == NULL || !JSON_NODE_HOLDS_OBJECT(node)) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "migration: service %s: its document is not a JSON object",
                sid);
    return FALSE;
  }
  JsonObject *doc = json_node_get_object(node);
  JsonNode *ln = json_object_get_member(doc, "instance_list");
  JsonArray *list = ln && JSON_NODE_HOLDS_ARRAY(ln) ? json_node_get_array(ln) : NULL;
  for (guint k = 0; list != NULL && k < json_array_get_length(list); k++) {
    JsonNode *en = json_array_get_element(list, k);
    if (!JSON_NODE_HOLDS_OBJECT(en))
      continue;
    JsonObject *e = json_node_get_object(en);
    g_autoptr(StoreInstance) i = migrate_entry(sid, e, now_ms);
    if (i->deleting) {
      g_free(i->status_detail);
      i->status_detail = g_strdup_printf("waiting for cluster %s to confirm the removal", i->cluster_id);
      if (!store_delete_add(s, i->cluster_id, sid, i->number, i->generation, 0, now_ms, error))
        return FALSE;
    }
    if (!store_instance_put(s, i, error) || !migrate_refusals(s, i, e, now_ms, error))
      return FALSE;
  }
  gint64 next = int_member(doc, "next_instance_progressive_number", 0);
  g_autofree char *status = g_strdup(str_member(doc, "status") ? str_member(doc, "status") : "REQUESTED");
  json_object_remove_member(doc, "instance_list");
  json_object_remove_member(doc, "next_instance_progressive_number");
  json_object_remove_member(doc, "status");
  g_autofree char *text = object_text(doc);
  sqlite3_stmt *st =
      stmt(s, "UPDATE services SET doc = ?2, next_instance = ?3, status = ?4 WHERE id = ?1", error);
  if (st == NULL)
    return FALSE;
  bind_text(st, 1, sid);
  bind_text(st, 2, text);
  sqlite3_bind_int64(st, 3, next);
  bind_text(st, 4, status);
  return run(s, st, error);
}

/* A version-1 forward still waiting: a DELETE becomes a pending delete; a POST (deploy) makes the
 * instance's deploy pending again, when the instance is still on that cluster. */
static gboolean migrate_forward(Store *s, const char *cid, const char *method, const char *path,
                                gint64 now_ms, GError **error) {
  g_auto(GStrv) seg = od_path_split(path);
  gint64 n = -1;
  if (g_strv_length(seg) != 4 || strcmp(seg[0], "api") != 0 || strcmp(seg[1], "service") != 0 ||
      !g_ascii_string_to_signed(seg[3], 10, 0, G_MAXINT64, &n, NULL))
    return TRUE;
  g_autoptr(StoreInstance) i = store_instance_get(s, seg[2], n);
  if (strcmp(method, "DELETE") == 0)
    return store_delete_add(s, cid, seg[2], n, i && strcmp(i->cluster_id, cid) == 0 ? i->generation : 1, 0,
                            now_ms, error);
  if (i == NULL || i->deleting || strcmp(i->cluster_id, cid) != 0)
    return TRUE;
  i->deploy_pending = TRUE;
  return store_instance_put(s, i, error);
}

static gboolean migrate_forwards(Store *s, gint64 now_ms, GError **error) {
  g_autoptr(sqlite3_stmt) st =
      od_db_prepare(s->db, "SELECT cluster_id, method, path FROM forwards ORDER BY id", error);
  if (st == NULL)
    return FALSE;
  while (sqlite3_step(st) == SQLITE_ROW)
    if (!migrate_forward(s, (const char *)sqlite3_column_text(st, 0),
                         (const char *)sqlite3_column_text(st, 1), (const char *)sqlite3_column_text(st, 2),
                         now_ms, error))
      return FALSE;
  return od_db_exec(s->db, "DROP TABLE forwards", error);
}

/* Version 1 -> 2: instance_list entries leave the service documents for the instances table. */
/* instances.revision (version 4), added here already when version 1 is migrated: its instances
 * are written with this version's statements. */
static gboolean instances_add_revision(Store *s, GError **error) {
  g_autoptr(sqlite3_stmt) has = od_db_prepare(s->db, "SELECT revision FROM instances LIMIT 0", NULL);
  return has != NULL ||
         od_db_exec(s->db, "ALTER TABLE instances ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;", error);
}

static gboolean migrate_1_to_2(Store *s, gint64 now_ms, GError **error) {
  if (!od_db_exec(s->db,
                  "ALTER TABLE services ADD COLUMN next_instance INTEGER NOT NULL DEFAULT 0;"
                  "ALTER TABLE services ADD COLUMN status TEXT NOT NULL DEFAULT 'REQUESTED';",
                  error) ||
      !od_db_exec(s->db, instances_v2, error) || !instances_add_revision(s, error))
    return FALSE;
  g_autoptr(GPtrArray) ids = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(GPtrArray) docs = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(sqlite3_stmt) st = od_db_prepare(s->db, "SELECT id, doc FROM services ORDER BY rowid", error);
  if (st == NULL)
    return FALSE;
  while (sqlite3_step(st) == SQLITE_ROW) {
    g_ptr_array_add(ids, g_strdup((const char *)sqlite3_column_text(st, 0)));
    g_ptr_array_add(docs, g_strdup((const char *)sqlite3_column_text(st, 1)));
  }
  g_clear_pointer(&st, sqlite3_finalize);
  for (guint k = 0; k < ids->len; k++)
    if (!migrate_service(s, ids->pdata[k], docs->pdata[k], now_ms, error))
      return FALSE;
  if (table_exists(s, "forwards") && !migrate_forwards(s, now_ms, error))
    return FALSE;
  od_log(G_LOG_LEVEL_MESSAGE, "migrate", "from", "1", "to", "2", "msg",
         "instances moved out of the service documents", NULL);
  return TRUE;
}

/* Version 2 -> 3: users get roles (the existing ones are Admins), join tokens a number of uses
 * (those of version 2 were single-use), clusters a credential (the salt it is derived with and the
 * SHA-256 of its secret). A cluster of version 2 keeps its JWT in `token` and is accepted with it
 * until it registers again, which gives it a credential and empties `token`. */
static gboolean migrate_2_to_3(Store *s, GError **error) {
  return od_db_exec(s->db,
                    "ALTER TABLE users ADD COLUMN role TEXT NOT NULL DEFAULT 'Admin';"
                    "ALTER TABLE join_tokens ADD COLUMN uses INTEGER NOT NULL DEFAULT 1;"
                    "ALTER TABLE clusters ADD COLUMN cred_salt TEXT NOT NULL DEFAULT '';"
                    "ALTER TABLE clusters ADD COLUMN cred_hash TEXT NOT NULL DEFAULT '';",
                    error);
}

/* Version 3 -> 4: services get revisions. The current spec stays in services (doc, ms) with its
 * number (revision_seq: the highest number given, never reused); each instance records the revision it runs (every existing one: 1, the only one there
 * was), and earlier specs still run by an instance are kept in service_revisions. */
static gboolean migrate_3_to_4(Store *s, GError **error) {
  return instances_add_revision(s, error) &&
         od_db_exec(s->db,
                    "ALTER TABLE services ADD COLUMN revision INTEGER NOT NULL DEFAULT 1;"
                    "ALTER TABLE services ADD COLUMN revision_seq INTEGER NOT NULL DEFAULT 1;"
                    "CREATE TABLE service_revisions (service_id TEXT NOT NULL REFERENCES services(id)"
                    "  ON DELETE CASCADE, revision INTEGER NOT NULL, doc TEXT NOT NULL, ms TEXT NOT NULL,"
                    "  PRIMARY KEY (service_id, revision));",
                    error);
}

static gboolean set_version(Store *s, gint64 v, GError **error) {
  g_autofree char *sql = g_strdup_printf("PRAGMA user_version = %" G_GINT64_FORMAT, v);
  return od_db_exec(s->db, sql, error);
}

/* Brings the schema to STORE_SCHEMA_VERSION in one transaction. A database without a version is
 * empty (version 0) or was made by the code before versions (version 1: it has services). */
static gboolean migrate(Store *s, gint64 now_ms, GError **error) {
  gint64 v = user_version(s);
  if (v == STORE_SCHEMA_VERSION)
    return TRUE;
  if (v > STORE_SCHEMA_VERSION || v < 0) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO,
                "root.db has schema version %" G_GINT64_FORMAT ", this oakuk-root knows up to %d", v,
                STORE_SCHEMA_VERSION);
    return FALSE;
  }
  if (!store_begin(s, error))
    return FALSE;
  if (v == 0 && table_exists(s, "services"))
    v = 1;
  gboolean ok = TRUE;
  if (v == 0)
    ok = od_db_exec(s->db, schema_v2, error) && od_db_exec(s->db, instances_v2, error);
  else if (v == 1)
    ok = migrate_1_to_2(s, now_ms, error);
  if (ok && v > 0 && v < 3)
    od_log(G_LOG_LEVEL_MESSAGE, "migrate", "to", "3", "msg",
           "users get roles, join tokens uses, clusters credentials (registered clusters keep their token "
           "until they register again)",
           NULL);
  ok = ok && (v >= 3 || migrate_2_to_3(s, error));
  if (ok && v == 3)
    od_log(G_LOG_LEVEL_MESSAGE, "migrate", "from", "3", "to", "4", "msg",
           "services get revisions (every existing instance runs revision 1)", NULL);
  ok = ok && migrate_3_to_4(s, error);
  if (!ok || !set_version(s, STORE_SCHEMA_VERSION, error) || !store_commit(s, error)) {
    store_rollback(s);
    return FALSE;
  }
  return TRUE;
}

Store *store_open(const char *path, gint64 now_ms, GError **error) {
  sqlite3 *db = od_db_open(path, error);
  if (db == NULL)
    return NULL;
  Store *s = g_new0(Store, 1);
  s->db = db;
  s->stmts = od_db_stmt_cache_new();
  if (!migrate(s, now_ms, error)) {
    g_prefix_error(error, "%s: ", path);
    store_free(s);
    return NULL;
  }
  return s;
}

void store_free(Store *s) {
  if (s == NULL)
    return;
  g_hash_table_unref(s->stmts);
  sqlite3_close(s->db);
  g_free(s);
}

/* cluster.db: the schema, its migrations and every statement oakuk-cluster runs. */
#include "store.h"

#include "daemon-common.h"

#include <oakuk/oakuk.h>
#include <stdarg.h>
#include <string.h>

struct Store {
  sqlite3 *db;
  GHashTable *stmts; /* SQL text (a literal, by address) -> prepared statement (od_db_stmt) */
};

/* A statement of the cache, reset when its holder is done with it (no read stays open). */
typedef sqlite3_stmt StoreStmt;
static void stmt_done(StoreStmt *st) {
  sqlite3_reset(st);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(StoreStmt, stmt_done)

/* ---- schema ---- */

/* Version 1: the schema of oakuk-cluster before generations (user_version 0). A cluster.db of it
 * may lack the ready columns, added later with ALTER TABLE (v1_added_columns). */
static const char schema_v1[] =
    "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS join_tokens (hash TEXT PRIMARY KEY, created INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS nodes (id TEXT PRIMARY KEY, cred_hash TEXT NOT NULL, subnet_index INTEGER "
    "NOT NULL UNIQUE, subnet TEXT NOT NULL, ip TEXT NOT NULL DEFAULT '', report TEXT, registered_at INTEGER "
    "NOT NULL);"
    "CREATE TABLE IF NOT EXISTS instances (name TEXT PRIMARY KEY, job_id TEXT NOT NULL, job_name TEXT NOT "
    "NULL, instance INTEGER NOT NULL, node TEXT NOT NULL DEFAULT '', ip TEXT NOT NULL DEFAULT '',"
    "  status TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', job TEXT NOT NULL, restart INTEGER NOT NULL,"
    "  failures INTEGER NOT NULL DEFAULT 0, avoid TEXT NOT NULL DEFAULT '[]',"
    "  ready INTEGER NOT NULL DEFAULT 0, ready_ms INTEGER, UNIQUE (job_id, instance));"
    "CREATE TABLE IF NOT EXISTS explanations (job_id TEXT PRIMARY KEY, job_name TEXT NOT NULL,"
    "  instance INTEGER NOT NULL, lines TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS deliveries (id INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT NOT NULL,"
    "  instance TEXT NOT NULL, topic TEXT NOT NULL, payload TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS status_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL,"
    "  instance INTEGER NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL, node TEXT NOT NULL,"
    "  ready INTEGER NOT NULL DEFAULT 0, ready_ms INTEGER);";

static const struct {
  const char *table, *column, *decl;
} v1_added_columns[] = {
    {"instances", "ready", "INTEGER NOT NULL DEFAULT 0"},
    {"instances", "ready_ms", "INTEGER"},
    {"status_outbox", "ready", "INTEGER NOT NULL DEFAULT 0"},
    {"status_outbox", "ready_ms", "INTEGER"},
};

/* Version 3 (docs/security.md): version 2 (docs/reconcile.md: generations, the chosen variant, old
 * copies, expiring avoid entries, drained nodes) with node join tokens that expire and are used up. */
static const char schema_v3[] =
    "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE join_tokens (hash TEXT PRIMARY KEY, created INTEGER NOT NULL,"
    "  expires_at INTEGER NOT NULL DEFAULT 0, uses INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE nodes (id TEXT PRIMARY KEY, cred_hash TEXT NOT NULL, subnet_index INTEGER NOT NULL UNIQUE,"
    "  subnet TEXT NOT NULL, ip TEXT NOT NULL DEFAULT '', report TEXT, registered_at INTEGER NOT NULL,"
    "  drained INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE instances (name TEXT PRIMARY KEY, job_id TEXT NOT NULL, job_name TEXT NOT NULL,"
    "  instance INTEGER NOT NULL, node TEXT NOT NULL DEFAULT '', ip TEXT NOT NULL DEFAULT '',"
    "  status TEXT NOT NULL, detail TEXT NOT NULL DEFAULT '', job TEXT NOT NULL, restart INTEGER NOT NULL,"
    "  ready INTEGER NOT NULL DEFAULT 0, ready_ms INTEGER, generation INTEGER NOT NULL DEFAULT 0,"
    "  node_generation INTEGER NOT NULL DEFAULT 0, placement TEXT NOT NULL DEFAULT '{}',"
    "  reschedule_after_s INTEGER NOT NULL DEFAULT 60, UNIQUE (job_id, instance));"
    "CREATE TABLE explanations (job_id TEXT PRIMARY KEY, job_name TEXT NOT NULL, instance INTEGER NOT NULL,"
    "  lines TEXT NOT NULL);"
    "CREATE TABLE deliveries (id INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT NOT NULL,"
    "  instance TEXT NOT NULL, topic TEXT NOT NULL, payload TEXT NOT NULL);"
    "CREATE TABLE status_outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL,"
    "  instance INTEGER NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL, node TEXT NOT NULL,"
    "  ready INTEGER NOT NULL DEFAULT 0, ready_ms INTEGER, generation INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE avoid (name TEXT NOT NULL, node TEXT NOT NULL, until_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (name, node));"
    "CREATE TABLE old_copies (name TEXT NOT NULL, node TEXT NOT NULL, generation INTEGER NOT NULL,"
    "  job_name TEXT NOT NULL, instance INTEGER NOT NULL, ip TEXT NOT NULL DEFAULT '',"
    "  placement TEXT NOT NULL DEFAULT '{}', kind TEXT NOT NULL, hold INTEGER NOT NULL DEFAULT 0,"
    "  since_ms INTEGER NOT NULL, PRIMARY KEY (name, node));";

/* From version 1 to 2. Avoid lists had no expiry: each entry now expires avoid_ms (?2) after the
 * upgrade (?1). The stored job kept the root's chosen variant as "placement": it becomes the
 * instance's placement (what its node runs). Nodes hold generation 0 of what they got before. */
static const char migrate_v1_v2[] =
    "ALTER TABLE nodes ADD COLUMN drained INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE instances ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE instances ADD COLUMN node_generation INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE instances ADD COLUMN placement TEXT NOT NULL DEFAULT '{}';"
    "ALTER TABLE instances ADD COLUMN reschedule_after_s INTEGER NOT NULL DEFAULT 60;"
    "ALTER TABLE status_outbox ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE avoid (name TEXT NOT NULL, node TEXT NOT NULL, until_ms INTEGER NOT NULL,"
    "  PRIMARY KEY (name, node));"
    "CREATE TABLE old_copies (name TEXT NOT NULL, node TEXT NOT NULL, generation INTEGER NOT NULL,"
    "  job_name TEXT NOT NULL, instance INTEGER NOT NULL, ip TEXT NOT NULL DEFAULT '',"
    "  placement TEXT NOT NULL DEFAULT '{}', kind TEXT NOT NULL, hold INTEGER NOT NULL DEFAULT 0,"
    "  since_ms INTEGER NOT NULL, PRIMARY KEY (name, node));"
    "UPDATE instances SET placement = json_extract(job, '$.placement')"
    "  WHERE json_valid(job) AND json_type(job, '$.placement') = 'object';"
    "UPDATE instances SET reschedule_after_s = json_extract(job, '$.reschedule_after_s')"
    "  WHERE json_valid(job) AND json_type(job, '$.reschedule_after_s') = 'integer';"
    "UPDATE instances SET job = json_remove(job, '$.placement') WHERE json_valid(job);";

static const char migrate_v1_v2_avoid[] =
    "INSERT OR IGNORE INTO avoid (name, node, until_ms)"
    " SELECT i.name, j.value, ?1 + ?2 FROM instances i, json_each(i.avoid) j"
    " WHERE json_valid(i.avoid) AND j.type = 'text'";

static const char migrate_v1_v2_drop[] = "ALTER TABLE instances DROP COLUMN avoid;"
                                         "ALTER TABLE instances DROP COLUMN failures;";

/* From version 2 to 3. The node join tokens of before never expired and were printed in the log:
 * they come out expired (expires_at 0) and are deleted; new ones are made with their expiry. */
static const char migrate_v2_v3[] =
    "ALTER TABLE join_tokens ADD COLUMN expires_at INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE join_tokens ADD COLUMN uses INTEGER NOT NULL DEFAULT 0;"
    "DELETE FROM join_tokens;";

/* ---- statements ---- */

/* Binds args by types: 's' text (NULL binds NULL), 'i' integer, 'n' integer or NULL when < 0,
 * 'b' boolean. (daemon-common's od_db_run binds text only.) */
static sqlite3_stmt *prepare_v(Store *s, GError **error, const char *sql, const char *types, va_list ap) {
  sqlite3_stmt *st = od_db_stmt(s->db, s->stmts, sql, error);
  if (st == NULL)
    return NULL;
  for (int i = 0; types != NULL && types[i] != '\0'; i++) {
    switch (types[i]) {
    case 's': {
      const char *v = va_arg(ap, const char *);
      if (v == NULL)
        sqlite3_bind_null(st, i + 1);
      else
        sqlite3_bind_text(st, i + 1, v, -1, SQLITE_TRANSIENT);
      break;
    }
    case 'i': sqlite3_bind_int64(st, i + 1, va_arg(ap, gint64)); break;
    case 'n': {
      gint64 v = va_arg(ap, gint64);
      if (v < 0)
        sqlite3_bind_null(st, i + 1);
      else
        sqlite3_bind_int64(st, i + 1, v);
      break;
    }
    case 'b': sqlite3_bind_int(st, i + 1, va_arg(ap, gboolean) ? 1 : 0); break;
    default: g_assert_not_reached();
    }
  }
  return st;
}

static sqlite3_stmt *query(Store *s, const char *sql, const char *types, ...) {
  va_list ap;
  va_start(ap, types);
  sqlite3_stmt *st = prepare_v(s, NULL, sql, types, ap);
  va_end(ap);
  return st;
}

static gboolean run(Store *s, GError **error, const char *sql, const char *types, ...) {
  va_list ap;
  va_start(ap, types);
  g_autoptr(StoreStmt) st = prepare_v(s, error, sql, types, ap);
  va_end(ap);
  if (st == NULL)
    return FALSE;
  int rc = sqlite3_step(st);
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "sqlite: %s", sqlite3_errmsg(s->db));
    return FALSE;
  }
  return TRUE;
}

static char *col_text(sqlite3_stmt *st, int i) {
  const char *t = (const char *)sqlite3_column_text(st, i);
  return g_strdup(t ? t : "");
}

static gint64 col_int_or(sqlite3_stmt *st, int i, gint64 none) {
  return sqlite3_column_type(st, i) == SQLITE_NULL ? none : sqlite3_column_int64(st, i);
}

static gint64 query_int(Store *s, gint64 none, const char *sql, const char *types, ...) {
  va_list ap;
  va_start(ap, types);
  g_autoptr(StoreStmt) st = prepare_v(s, NULL, sql, types, ap);
  va_end(ap);
  return st != NULL && sqlite3_step(st) == SQLITE_ROW ? col_int_or(st, 0, none) : none;
}

/* ---- open and migrate ---- */

static gint64 user_version(Store *s) {
  return query_int(s, 0, "PRAGMA user_version", NULL);
}

static gboolean set_user_version(Store *s, gint64 v, GError **error) {
  /* PRAGMA takes no parameters; v is our own constant. */
  g_autofree char *sql = g_strdup_printf("PRAGMA user_version = %" G_GINT64_FORMAT, v);
  return od_db_exec(s->db, sql, error);
}

static gboolean has_table(Store *s, const char *table) {
  return query_int(s, 0, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1", "s",
                   table) > 0;
}

/* Version 1 databases got the ready columns by ALTER TABLE when pragma_table_info lacked them. */
static gboolean migrate_v1_columns(Store *s, GError **error) {
  for (gsize i = 0; i < G_N_ELEMENTS(v1_added_columns); i++) {
    if (query_int(s, 0, "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2", "ss",
                  v1_added_columns[i].table, v1_added_columns[i].column) > 0)
      continue;
    /* Table and column names cannot be bound: these come from the constant list above. */
    g_autofree char *sql = g_strdup_printf("ALTER TABLE %s ADD COLUMN %s %s", v1_added_columns[i].table,
                                           v1_added_columns[i].column, v1_added_columns[i].decl);
    if (!od_db_exec(s->db, sql, error))
      return FALSE;
    od_log(G_LOG_LEVEL_MESSAGE, "migrate", "table", v1_added_columns[i].table, "column",
           v1_added_columns[i].column, "msg", "column added to an existing cluster.db", NULL);
  }
  return TRUE;
}

static gboolean migrate_to_v2(Store *s, gint64 now_ms, gint64 avoid_ms, GError **error) {
  if (!od_db_exec(s->db, migrate_v1_v2, error) ||
      !run(s, error, migrate_v1_v2_avoid, "ii", now_ms, avoid_ms) ||
      !od_db_exec(s->db, migrate_v1_v2_drop, error))
    return FALSE;
  g_autofree char *n =
      g_strdup_printf("%" G_GINT64_FORMAT, query_int(s, 0, "SELECT COUNT(*) FROM instances", NULL));
  od_log(
      G_LOG_LEVEL_MESSAGE, "migrate", "from", "1", "to", "2", "instances", n, "msg",
      "cluster.db upgraded: generations, chosen variants, old copies, expiring avoid entries, drained nodes",
      NULL);
  return TRUE;
}

static gboolean migrate_to_v3(Store *s, GError **error) {
  g_autofree char *n =
      g_strdup_printf("%" G_GINT64_FORMAT, query_int(s, 0, "SELECT COUNT(*) FROM join_tokens", NULL));
  if (!od_db_exec(s->db, migrate_v2_v3, error))
    return FALSE;
  od_log(G_LOG_LEVEL_MESSAGE, "migrate", "from", "2", "to", "3", "join_tokens_dropped", n, "msg",
         "cluster.db upgraded: node join tokens expire and are used up (the old ones, which never expired, "
         "are dropped)",
         NULL);
  return TRUE;
}

static gboolean migrate(Store *s, gint64 now_ms, gint64 avoid_ms, GError **error) {
  gint64 v = user_version(s);
  if (v > STORE_SCHEMA_VERSION) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO,
                "cluster.db has schema version %" G_GINT64_FORMAT ", newer than this oakuk-cluster's (%d)", v,
                STORE_SCHEMA_VERSION);
    return FALSE;
  }
  if (v == STORE_SCHEMA_VERSION)
    return TRUE;
  if (!store_begin(s, error))
    return FALSE;
  gboolean ok;
  if (v == 0 && !has_table(s, "instances") && !has_table(s, "nodes") && !has_table(s, "kv")) {
    ok = od_db_exec(s->db, schema_v3, error); /* a new cluster.db */
  } else {
    /* Version 1 (user_version 0), possibly partial: its tables first, then each step. */
    ok = (v >= 2 || (od_db_exec(s->db, schema_v1, error) && migrate_v1_columns(s, error) &&
                     migrate_to_v2(s, now_ms, avoid_ms, error))) &&
         migrate_to_v3(s, error);
  }
  if (!ok || !set_user_version(s, STORE_SCHEMA_VERSION, error) || !store_commit(s, error)) {
    store_rollback(s);
    return FALSE;
  }
  return TRUE;
}

Store *store_open(const char *path, gint64 now_ms, gint64 avoid_ms, GError **error) {
  Store *s = g_new0(Store, 1);
  s->stmts = od_db_stmt_cache_new();
  s->db = od_db_open(path, error);
  if (s->db == NULL || !migrate(s, now_ms, avoid_ms, error)) {
    store_close(s);
    return NULL;
  }
  return s;
}

void store_close(Store *s) {
  if (s == NULL)
    return;
  g_hash_table_unref(s->stmts); /* its statements first: a database with statements does not close */
  if (s->db != NULL)
    sqlite3_close(s->db);
  g_free(s);
}

gint64 store_total_changes(Store *s) {
  return sqlite3_total_changes64(s->db);
}

gint64 store_schema_version(Store *s) {
  return user_version(s);
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

/* ---- kv, join tokens ---- */

char *store_kv_get(Store *s, const char *key) {
  g_autoptr(StoreStmt) st = query(s, "SELECT value FROM kv WHERE key = ?1", "s", key);
  return st != NULL && sqlite3_step(st) == SQLITE_ROW ? col_text(st, 0) : NULL;
}

gboolean store_kv_set(Store *s, const char *key, const char *value, GError **error) {
  return run(s, error, "INSERT OR REPLACE INTO kv (key, value) VALUES (?1, ?2)", "ss", key, value);
}

gboolean store_join_token_add(Store *s, const char *hash, gint64 now_s, gint64 expires_s, gint64 uses,
                              GError **error) {
  /* Expired and used-up tokens are of no use to anyone: they go when a new one comes. */
  return run(s, error, "DELETE FROM join_tokens WHERE expires_at < ?1 OR uses <= 0", "i", now_s) &&
         run(s, error, "INSERT INTO join_tokens (hash, created, expires_at, uses) VALUES (?1, ?2, ?3, ?4)",
             "siii", hash, now_s, expires_s, uses);
}

gboolean store_join_token_usable(Store *s, const char *hash, gint64 now_s) {
  return query_int(s, 0, "SELECT COUNT(*) FROM join_tokens WHERE hash = ?1 AND expires_at >= ?2 AND uses > 0",
                   "si", hash, now_s) > 0;
}

gboolean store_join_token_use(Store *s, const char *hash, gint64 now_s, GError **error) {
  if (!run(s, error,
           "UPDATE join_tokens SET uses = uses - 1 WHERE hash = ?1 AND expires_at >= ?2 AND uses > 0", "si",
           hash, now_s))
    return FALSE;
  if (sqlite3_changes(s->db) != 1) {
    g_set_error(error, OD_ERROR, OD_ERROR_AUTH, "join_token: expired or used up");
    return FALSE;
  }
  return TRUE;
}

/* ---- nodes ---- */

void store_node_free(StoreNode *n) {
  if (n == NULL)
    return;
  g_free(n->id);
  g_free(n->subnet);
  g_free(n->ip);
  g_free(n);
}

#define NODE_COLUMNS "id, subnet_index, subnet, ip, drained"

static StoreNode *node_row(sqlite3_stmt *st) {
  StoreNode *n = g_new0(StoreNode, 1);
  n->id = col_text(st, 0);
  n->subnet_index = sqlite3_column_int64(st, 1);
  n->subnet = col_text(st, 2);
  n->ip = col_text(st, 3);
  n->drained = sqlite3_column_int64(st, 4) != 0;
  return n;
}

char *store_node_cred_hash(Store *s, const char *id) {
  g_autoptr(StoreStmt) st = query(s, "SELECT cred_hash FROM nodes WHERE id = ?1", "s", id);
  return st != NULL && sqlite3_step(st) == SQLITE_ROW ? col_text(st, 0) : NULL;
}

StoreNode *store_node_get(Store *s, const char *id) {
  g_autoptr(StoreStmt) st = query(s, "SELECT " NODE_COLUMNS " FROM nodes WHERE id = ?1", "s", id);
  return st != NULL && sqlite3_step(st) == SQLITE_ROW ? node_row(st) : NULL;
}

GPtrArray *store_node_list(Store *s) {
  GPtrArray *a = g_ptr_array_new_with_free_func((GDestroyNotify)store_node_free);
  g_autoptr(StoreStmt) st = query(s, "SELECT " NODE_COLUMNS " FROM nodes ORDER BY id", NULL);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW)
    g_ptr_array_add(a, node_row(st));
  return a;
}

gboolean store_node_subnet_index_used(Store *s, gint64 index) {
  return query_int(s, 0, "SELECT COUNT(*) FROM nodes WHERE subnet_index = ?1", "i", index) > 0;
}

gboolean store_node_register(Store *s, const char *id, const char *cred_hash, gint64 subnet_index,
                             const char *subnet, const char *ip, gint64 now_ms, GError **error) {
  return run(s, error,
             "INSERT INTO nodes (id, cred_hash, subnet_index, subnet, ip, registered_at)"
             " VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
             " ON CONFLICT (id) DO UPDATE SET cred_hash = excluded.cred_hash, ip = excluded.ip",
             "ssissi", id, cred_hash, subnet_index, subnet, ip, now_ms);
}

gboolean store_node_set_ip(Store *s, const char *id, const char *ip, GError **error) {
  return run(s, error, "UPDATE nodes SET ip = ?2 WHERE id = ?1", "ss", id, ip);
}

gboolean store_node_reports_save(Store *s, GHashTable *reports, GError **error) {
  /* One transaction for all, committed with synchronous=NORMAL: in WAL mode that commit is atomic
   * but reaches the disk only with the next durable (FULL) commit or checkpoint, so a power failure
   * can take the last save, never leave half of one. Reports are soft state: the next ones come
   * within seconds. */
  if (g_hash_table_size(reports) == 0)
    return TRUE;
  if (!od_db_exec(s->db, "PRAGMA synchronous=NORMAL", error))
    return FALSE;
  gboolean ok = store_begin(s, error);
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, reports);
  while (ok && g_hash_table_iter_next(&it, &k, &v))
    ok = run(s, error, "UPDATE nodes SET report = ?2 WHERE id = ?1", "ss", (const char *)k, (const char *)v);
  ok = ok && store_commit(s, error);
  if (!ok)
    store_rollback(s);
  /* durable again for every other commit (a failure here leaves the connection unusable anyway) */
  return od_db_exec(s->db, "PRAGMA synchronous=FULL", ok ? error : NULL) && ok;
}

gboolean store_node_set_drained(Store *s, const char *id, gboolean drained, GError **error) {
  return run(s, error, "UPDATE nodes SET drained = ?2 WHERE id = ?1", "sb", id, drained);
}

GHashTable *store_node_reports(Store *s) {
  GHashTable *h = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  g_autoptr(StoreStmt) st = query(s, "SELECT id, report FROM nodes WHERE report IS NOT NULL", NULL);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW)
    g_hash_table_replace(h, col_text(st, 0), col_text(st, 1));
  return h;
}

gboolean store_node_delete(Store *s, const char *id, GError **error) {
  g_autofree char *last_ip = g_strdup_printf("last_ip:%s", id);
  return run(s, error, "DELETE FROM nodes WHERE id = ?1", "s", id) &&
         run(s, error, "DELETE FROM old_copies WHERE node = ?1", "s", id) &&
         run(s, error, "DELETE FROM deliveries WHERE node = ?1", "s", id) &&
         run(s, error, "DELETE FROM avoid WHERE node = ?1", "s", id) &&
         run(s, error, "DELETE FROM kv WHERE key = ?1", "s", last_ip);
}

/* ---- instances ---- */

void store_instance_free(StoreInstance *i) {
  if (i == NULL)
    return;
  char **strs[] = {&i->name, &i->job_id, &i->job_name, &i->node, &i->ip, &i->placement, &i->detail, &i->job};
  for (gsize k = 0; k < G_N_ELEMENTS(strs); k++)
    g_free(*strs[k]);
  g_free(i);
}

StoreInstance *store_instance_copy(const StoreInstance *i) {
  StoreInstance *c = g_memdup2(i, sizeof *i);
  char **strs[] = {&c->name, &c->job_id, &c->job_name, &c->node, &c->ip, &c->placement, &c->detail, &c->job};
  for (gsize k = 0; k < G_N_ELEMENTS(strs); k++)
    *strs[k] = g_strdup(*strs[k]);
  return c;
}

#define INSTANCE_COLUMNS                                                                                     \
  "name, job_id, job_name, instance, generation, node, node_generation, ip, placement, status, detail,"      \
  " ready, ready_ms, job, restart, reschedule_after_s, IFNULL(json_extract(job, '$.vcpus'), 0),"             \
  " IFNULL(json_extract(job, '$.memory'), 0)"

static StoreInstance *instance_row(sqlite3_stmt *st) {
  StoreInstance *i = g_new0(StoreInstance, 1);
  i->name = col_text(st, 0);
  i->job_id = col_text(st, 1);
  i->job_name = col_text(st, 2);
  i->number = sqlite3_column_int64(st, 3);
  i->generation = sqlite3_column_int64(st, 4);
  i->node = col_text(st, 5);
  i->node_generation = sqlite3_column_int64(st, 6);
  i->ip = col_text(st, 7);
  i->placement = col_text(st, 8);
  i->status = oakuk_instance_status_from_name((const char *)sqlite3_column_text(st, 9));
  i->detail = col_text(st, 10);
  i->ready = sqlite3_column_int64(st, 11) != 0;
  i->ready_ms = col_int_or(st, 12, -1);
  i->job = col_text(st, 13);
  i->restart = (int32_t)sqlite3_column_int64(st, 14);
  i->reschedule_after_s = sqlite3_column_int64(st, 15);
  i->vcpus = sqlite3_column_int64(st, 16);
  i->memory_mb = sqlite3_column_int64(st, 17);
  return i;
}

StoreInstance *store_instance_get(Store *s, const char *name) {
  g_autoptr(StoreStmt) st = query(s, "SELECT " INSTANCE_COLUMNS " FROM instances WHERE name = ?1", "s", name);
  return st != NULL && sqlite3_step(st) == SQLITE_ROW ? instance_row(st) : NULL;
}

StoreInstance *store_instance_find(Store *s, const char *job_id, gint64 number, gboolean by_name) {
  g_autoptr(StoreStmt) st =
      query(s,
            "SELECT " INSTANCE_COLUMNS " FROM instances WHERE (job_id = ?1 OR (?3 AND job_name = ?1))"
            " AND instance = ?2 ORDER BY job_id = ?1 DESC LIMIT 1",
            "sib", job_id, number, by_name);
  return st != NULL && sqlite3_step(st) == SQLITE_ROW ? instance_row(st) : NULL;
}

GPtrArray *store_instance_list(Store *s) {
  GPtrArray *a = g_ptr_array_new_with_free_func((GDestroyNotify)store_instance_free);
  g_autoptr(StoreStmt) st = query(s, "SELECT " INSTANCE_COLUMNS " FROM instances ORDER BY name", NULL);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW)
    g_ptr_array_add(a, instance_row(st));
  return a;
}

gboolean store_instance_put(Store *s, const StoreInstance *i, GError **error) {
  const char *status = oakuk_instance_status_name(i->status);
  return run(
      s, error,
      "INSERT OR REPLACE INTO instances (name, job_id, job_name, instance, generation, node,"
      " node_generation, ip, placement, status, detail, ready, ready_ms, job, restart,"
      " reschedule_after_s) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
      "sssiisissssbnsii", i->name, i->job_id, i->job_name, i->number, i->generation, i->node,
      i->node_generation, i->ip, i->placement ? i->placement : "{}", status ? status : "FAILED",
      i->detail ? i->detail : "", i->ready && i->status == OAKUK_STATUS_RUNNING,
      i->ready && i->status == OAKUK_STATUS_RUNNING ? i->ready_ms : (gint64)-1, i->job, (gint64)i->restart,
      i->reschedule_after_s);
}

gboolean store_instance_delete(Store *s, const char *name, GError **error) {
  return run(s, error, "DELETE FROM instances WHERE name = ?1", "s", name);
}

oakuk_microservice *store_instance_service(const StoreInstance *i, GError **error) {
  oakuk_error *err = NULL;
  oakuk_microservice *ms = oakuk_microservice_parse(i->job, (size_t)-1, &err);
  if (ms == NULL) {
    g_set_error(error, OD_ERROR, OD_ERROR_INVALID, "instance %s: stored job: %s", i->name,
                oakuk_error_message(err));
    oakuk_error_free(err);
  }
  return ms;
}

gint64 store_node_generation_max(Store *s, const char *name) {
  return query_int(s, 0,
                   "SELECT MAX(g) FROM (SELECT node_generation AS g FROM instances WHERE name = ?1"
                   " UNION ALL SELECT generation FROM old_copies WHERE name = ?1)",
                   "s", name);
}

gboolean store_ip_in_use(Store *s, const char *node, const char *ip) {
  return query_int(s, 0,
                   "SELECT (SELECT COUNT(*) FROM instances WHERE node = ?1 AND ip = ?2)"
                   " + (SELECT COUNT(*) FROM old_copies WHERE node = ?1 AND ip = ?2)",
                   "ss", node, ip) > 0;
}

/* ---- old copies ---- */

void store_old_copy_free(StoreOldCopy *o) {
  if (o == NULL)
    return;
  g_free(o->name);
  g_free(o->node);
  g_free(o->job_name);
  g_free(o->ip);
  g_free(o->placement);
  g_free(o->kind);
  g_free(o);
}

#define OLD_COPY_COLUMNS "name, node, generation, job_name, instance, ip, placement, kind, hold, since_ms"

static StoreOldCopy *old_copy_row(sqlite3_stmt *st) {
  StoreOldCopy *o = g_new0(StoreOldCopy, 1);
  o->name = col_text(st, 0);
  o->node = col_text(st, 1);
  o->generation = sqlite3_column_int64(st, 2);
  o->job_name = col_text(st, 3);
  o->number = sqlite3_column_int64(st, 4);
  o->ip = col_text(st, 5);
  o->placement = col_text(st, 6);
  o->kind = col_text(st, 7);
  o->hold = sqlite3_column_int64(st, 8) != 0;
  o->since_ms = sqlite3_column_int64(st, 9);
  return o;
}

gboolean store_old_copy_put(Store *s, const StoreOldCopy *o, GError **error) {
  return run(s, error,
             "INSERT INTO old_copies (" OLD_COPY_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
             " ON CONFLICT (name, node) DO UPDATE SET generation = MAX(generation, excluded.generation),"
             " ip = excluded.ip, placement = excluded.placement, kind = excluded.kind, hold = excluded.hold",
             "ssisisssbi", o->name, o->node, o->generation, o->job_name, o->number, o->ip,
             o->placement ? o->placement : "{}", o->kind, o->hold, o->since_ms);
}

StoreOldCopy *store_old_copy_get(Store *s, const char *name, const char *node) {
  g_autoptr(StoreStmt) st =
      query(s, "SELECT " OLD_COPY_COLUMNS " FROM old_copies WHERE name = ?1 AND node = ?2", "ss", name, node);
  return st != NULL && sqlite3_step(st) == SQLITE_ROW ? old_copy_row(st) : NULL;
}

GPtrArray *store_old_copy_list(Store *s, const char *name_or_null) {
  GPtrArray *a = g_ptr_array_new_with_free_func((GDestroyNotify)store_old_copy_free);
  g_autoptr(StoreStmt) st = query(
      s, "SELECT " OLD_COPY_COLUMNS " FROM old_copies WHERE ?1 IS NULL OR name = ?1 ORDER BY name, node", "s",
      name_or_null);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW)
    g_ptr_array_add(a, old_copy_row(st));
  return a;
}

gboolean store_old_copy_release(Store *s, const char *name, const char *node, GError **error) {
  return run(s, error, "UPDATE old_copies SET hold = 0 WHERE name = ?1 AND node = ?2", "ss", name, node);
}

gboolean store_old_copy_delete(Store *s, const char *name, const char *node, GError **error) {
  return run(s, error, "DELETE FROM old_copies WHERE name = ?1 AND node = ?2", "ss", name, node);
}

/* ---- avoid ---- */

gboolean store_avoid_add(Store *s, const char *name, const char *node, gint64 until_ms, GError **error) {
  return run(s, error, "INSERT OR REPLACE INTO avoid (name, node, until_ms) VALUES (?1, ?2, ?3)", "ssi", name,
             node, until_ms);
}

GHashTable *store_avoid_get(Store *s, const char *name, gint64 now_ms) {
  GHashTable *h = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  g_autoptr(StoreStmt) st =
      query(s, "SELECT node, until_ms FROM avoid WHERE name = ?1 AND until_ms > ?2", "si", name, now_ms);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
    gint64 *until = g_new(gint64, 1);
    *until = sqlite3_column_int64(st, 1);
    g_hash_table_replace(h, col_text(st, 0), until);
  }
  return h;
}

gboolean store_avoid_expire(Store *s, gint64 now_ms, GError **error) {
  return run(s, error, "DELETE FROM avoid WHERE until_ms <= ?1", "i", now_ms);
}

gboolean store_avoid_forget(Store *s, const char *name, GError **error) {
  return run(s, error, "DELETE FROM avoid WHERE name = ?1", "s", name);
}

/* ---- deliveries ---- */

void store_delivery_free(StoreDelivery *d) {
  if (d == NULL)
    return;
  g_free(d->node);
  g_free(d->instance);
  g_free(d->topic);
  g_free(d->payload);
  g_free(d);
}

static char *control_topic(const char *node, const char *kind) {
  return g_strdup_printf("nodes/%s/control/%s", node, kind);
}

gboolean store_delivery_add(Store *s, const char *node, const char *instance, const char *kind,
                            const char *payload, GError **error) {
  g_autofree char *topic = control_topic(node, kind);
  return run(s, error, "INSERT INTO deliveries (node, instance, topic, payload) VALUES (?1, ?2, ?3, ?4)",
             "ssss", node, instance, topic, payload);
}

GPtrArray *store_delivery_list(Store *s) {
  GPtrArray *a = g_ptr_array_new_with_free_func((GDestroyNotify)store_delivery_free);
  g_autoptr(StoreStmt) st =
      query(s, "SELECT id, node, instance, topic, payload FROM deliveries ORDER BY id", NULL);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
    StoreDelivery *d = g_new0(StoreDelivery, 1);
    d->id = sqlite3_column_int64(st, 0);
    d->node = col_text(st, 1);
    d->instance = col_text(st, 2);
    d->topic = col_text(st, 3);
    d->payload = col_text(st, 4);
    g_ptr_array_add(a, d);
  }
  return a;
}

void store_delivery_done(Store *s, gint64 id) {
  run(s, NULL, "DELETE FROM deliveries WHERE id = ?1", "i", id);
}

gboolean store_delivery_drop(Store *s, const char *node, const char *instance, const char *kind,
                             GError **error) {
  g_autofree char *topic = control_topic(node, kind);
  return run(s, error, "DELETE FROM deliveries WHERE node = ?1 AND instance = ?2 AND topic = ?3", "sss", node,
             instance, topic);
}

gboolean store_delivery_pending(Store *s, const char *node, const char *instance, const char *kind) {
  g_autofree char *topic = control_topic(node, kind);
  return query_int(s, 0, "SELECT COUNT(*) FROM deliveries WHERE node = ?1 AND instance = ?2 AND topic = ?3",
                   "sss", node, instance, topic) > 0;
}

/* ---- status outbox ---- */

void store_status_free(StoreStatus *st) {
  if (st == NULL)
    return;
  g_free(st->job_id);
  g_free(st->status);
  g_free(st->detail);
  g_free(st->node);
  g_free(st);
}

gboolean store_outbox_add(Store *s, const StoreStatus *e, GError **error) {
  return run(s, error,
             "INSERT INTO status_outbox (job_id, instance, generation, status, detail, node, ready, ready_ms)"
             " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
             "siisssbn", e->job_id, e->number, e->generation, e->status, e->detail ? e->detail : "",
             e->node ? e->node : "", e->ready, e->ready ? e->ready_ms : (gint64)-1);
}

GPtrArray *store_outbox_batch(Store *s, guint limit) {
  GPtrArray *a = g_ptr_array_new_with_free_func((GDestroyNotify)store_status_free);
  g_autoptr(StoreStmt) st = query(s,
                                  "SELECT id, job_id, instance, generation, status, detail, node, ready,"
                                  " ready_ms FROM status_outbox ORDER BY id LIMIT ?1",
                                  "i", (gint64)limit);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
    StoreStatus *e = g_new0(StoreStatus, 1);
    e->id = sqlite3_column_int64(st, 0);
    e->job_id = col_text(st, 1);
    e->number = sqlite3_column_int64(st, 2);
    e->generation = sqlite3_column_int64(st, 3);
    e->status = col_text(st, 4);
    e->detail = col_text(st, 5);
    e->node = col_text(st, 6);
    e->ready = sqlite3_column_int64(st, 7) != 0;
    e->ready_ms = col_int_or(st, 8, -1);
    g_ptr_array_add(a, e);
  }
  return a;
}

void store_outbox_drop_upto(Store *s, gint64 id) {
  run(s, NULL, "DELETE FROM status_outbox WHERE id <= ?1", "i", id);
}

/* ---- explanations ---- */

gboolean store_explanation_set(Store *s, const char *job_id, const char *job_name, gint64 number,
                               const char *lines_json, GError **error) {
  return run(
      s, error,
      "INSERT OR REPLACE INTO explanations (job_id, job_name, instance, lines) VALUES (?1, ?2, ?3, ?4)",
      "ssis", job_id, job_name, number, lines_json);
}

JsonObject *store_explanation_get(Store *s, const char *key) {
  g_autoptr(StoreStmt) st = query(
      s, "SELECT job_id, job_name, instance, lines FROM explanations WHERE job_id = ?1 OR job_name = ?1", "s",
      key);
  if (st == NULL || sqlite3_step(st) != SQLITE_ROW)
    return NULL;
  JsonObject *o = json_object_new();
  json_object_set_string_member(o, "service", (const char *)sqlite3_column_text(st, 0));
  json_object_set_string_member(o, "job_name", (const char *)sqlite3_column_text(st, 1));
  json_object_set_int_member(o, "instance", sqlite3_column_int64(st, 2));
  g_autoptr(JsonNode) lines = od_json_parse((const char *)sqlite3_column_text(st, 3), -1, NULL);
  json_object_set_member(o, "lines", lines ? json_node_copy(lines) : json_node_new(JSON_NODE_NULL));
  return o;
}

/* ---- views ---- */

JsonArray *store_peers_table(Store *s) {
  JsonArray *a = json_array_new();
  g_autoptr(StoreStmt) st = query(s, "SELECT id, ip, subnet FROM nodes ORDER BY id", NULL);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
    JsonObject *o = json_object_new();
    json_object_set_string_member(o, "id", (const char *)sqlite3_column_text(st, 0));
    json_object_set_string_member(o, "ip", (const char *)sqlite3_column_text(st, 1));
    json_object_set_string_member(o, "subnet", (const char *)sqlite3_column_text(st, 2));
    json_array_add_object_element(a, o);
  }
  return a;
}

/* One entry per service that has addresses.rr_ip, listing its RUNNING instances. */
JsonArray *store_services_table(Store *s) {
  JsonArray *a = json_array_new();
  g_autoptr(StoreStmt) st =
      query(s,
            "SELECT i.job_name, json_extract(i.job, '$.addresses.rr_ip'), json_extract(i.job, '$.port'),"
            " i.instance, i.ip, i.node, n.ip, n.subnet FROM instances i JOIN nodes n ON n.id = i.node"
            " WHERE i.status = 'RUNNING' AND json_extract(i.job, '$.addresses.rr_ip') IS NOT NULL"
            " ORDER BY i.job_name, i.instance",
            NULL);
  JsonObject *cur = NULL;
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW) {
    const char *job = (const char *)sqlite3_column_text(st, 0);
    if (cur == NULL || g_strcmp0(json_object_get_string_member(cur, "job_name"), job) != 0) {
      cur = json_object_new();
      json_object_set_string_member(cur, "job_name", job);
      json_object_set_string_member(cur, "rr_ip", (const char *)sqlite3_column_text(st, 1));
      if (sqlite3_column_type(st, 2) == SQLITE_TEXT)
        json_object_set_string_member(cur, "port", (const char *)sqlite3_column_text(st, 2));
      json_object_set_array_member(cur, "instances", json_array_new());
      json_array_add_object_element(a, cur);
    }
    JsonObject *i = json_object_new();
    json_object_set_int_member(i, "instance", sqlite3_column_int64(st, 3));
    json_object_set_string_member(i, "ip", (const char *)sqlite3_column_text(st, 4));
    json_object_set_string_member(i, "node", (const char *)sqlite3_column_text(st, 5));
    json_object_set_string_member(i, "node_ip", (const char *)sqlite3_column_text(st, 6));
    json_object_set_string_member(i, "node_subnet", (const char *)sqlite3_column_text(st, 7));
    json_array_add_object_element(json_object_get_array_member(cur, "instances"), i);
  }
  return a;
}

gint64 store_count(Store *s, StoreCount what) {
  static const char *const sql[] = {
      [STORE_COUNT_NODES] = "SELECT COUNT(*) FROM nodes",
      [STORE_COUNT_READY] = "SELECT COUNT(*) FROM instances WHERE ready != 0",
      [STORE_COUNT_DELIVERIES] = "SELECT COUNT(*) FROM deliveries",
      [STORE_COUNT_OUTBOX] = "SELECT COUNT(*) FROM status_outbox",
      [STORE_COUNT_OLD_COPIES] = "SELECT COUNT(*) FROM old_copies",
  };
  return query_int(s, 0, sql[what], NULL);
}

GPtrArray *store_status_counts(Store *s) {
  GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
  g_autoptr(StoreStmt) st =
      query(s, "SELECT status, COUNT(*) FROM instances GROUP BY status ORDER BY status", NULL);
  while (st != NULL && sqlite3_step(st) == SQLITE_ROW)
    g_ptr_array_add(a, g_strdup_printf("%s\t%" G_GINT64_FORMAT, sqlite3_column_text(st, 0),
                                       (gint64)sqlite3_column_int64(st, 1)));
  return a;
}

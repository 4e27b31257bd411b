/* SQLite helpers: WAL, durable commits, text-bound statements. */
#include "daemon-common.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* The database holds password hashes, join tokens and node credentials: it is created 0600 and an
 * existing one is made 0600 (SQLite gives its -wal and -shm files the database's permissions). */
static gboolean make_private(const char *path, GError **error) {
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0 || fchmod(fd, 0600) != 0) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "database %s: %s", path, g_strerror(errno));
    if (fd >= 0)
      close(fd);
    return FALSE;
  }
  close(fd);
  for (const char *suffix = "-wal"; suffix; suffix = strcmp(suffix, "-wal") == 0 ? "-shm" : NULL) {
    g_autofree char *side = g_strconcat(path, suffix, NULL);
    if (chmod(side, 0600) != 0 && errno != ENOENT) {
      g_set_error(error, OD_ERROR, OD_ERROR_IO, "database %s: %s", side, g_strerror(errno));
      return FALSE;
    }
  }
  return TRUE;
}

gboolean od_state_dir_prepare(const char *dir, GError **error) {
  if (g_mkdir_with_parents(dir, 0700) != 0 || chmod(dir, 0700) != 0) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "state directory %s: %s", dir, g_strerror(errno));
    return FALSE;
  }
  return TRUE;
}

sqlite3 *od_db_open(const char *path, GError **error) {
  sqlite3 *db = NULL;
  if (!make_private(path, error))
    return NULL;
  int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "database %s: %s", path,
                db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
    sqlite3_close(db);
    return NULL;
  }
  sqlite3_busy_timeout(db, 5000);
  g_autoptr(GError) local = NULL;
  /* synchronous=FULL: a reply is sent only after its commit reached the disk. */
  if (!od_db_exec(db,
                  "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;"
                  "PRAGMA cache_size=-512;",
                  &local)) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "database %s: %s", path, local->message);
    sqlite3_close(db);
    return NULL;
  }
  return db;
}

gboolean od_db_exec(sqlite3 *db, const char *sql, GError **error) {
  char *err = NULL;
  if (sqlite3_exec(db, sql, NULL, NULL, &err) != SQLITE_OK) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "sqlite: %s", err ? err : sqlite3_errmsg(db));
    sqlite3_free(err);
    return FALSE;
  }
  return TRUE;
}

sqlite3_stmt *od_db_prepare(sqlite3 *db, const char *sql, GError **error) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "sqlite: %s (in \"%s\")", sqlite3_errmsg(db), sql);
    return NULL;
  }
  return st;
}

static void stmt_finalize(gpointer st) {
  sqlite3_finalize(st);
}

GHashTable *od_db_stmt_cache_new(void) {
  return g_hash_table_new_full(g_direct_hash, g_direct_equal, NULL, stmt_finalize);
}

sqlite3_stmt *od_db_stmt(sqlite3 *db, GHashTable *cache, const char *sql, GError **error) {
  sqlite3_stmt *st = g_hash_table_lookup(cache, sql);
  if (st != NULL) {
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return st;
  }
  if (sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "sqlite: %s (in \"%s\")", sqlite3_errmsg(db), sql);
    return NULL;
  }
  g_hash_table_insert(cache, (gpointer)sql, st);
  return st;
}

static void bind_va(sqlite3_stmt *st, va_list ap) {
  int i = 1;
  int n = sqlite3_bind_parameter_count(st);
  for (; i <= n; i++) {
    const char *v = va_arg(ap, const char *);
    if (v == NULL)
      break;
    sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
  }
}

gboolean od_db_run(sqlite3 *db, GError **error, const char *sql, ...) {
  g_autoptr(sqlite3_stmt) st = od_db_prepare(db, sql, error);
  if (st == NULL)
    return FALSE;
  va_list ap;
  va_start(ap, sql);
  bind_va(st, ap);
  va_end(ap);
  int rc = sqlite3_step(st);
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
    g_set_error(error, OD_ERROR, OD_ERROR_IO, "sqlite: %s", sqlite3_errmsg(db));
    return FALSE;
  }
  return TRUE;
}

char *od_db_query_text(sqlite3 *db, const char *sql, ...) {
  g_autoptr(sqlite3_stmt) st = od_db_prepare(db, sql, NULL);
  if (st == NULL)
    return NULL;
  va_list ap;
  va_start(ap, sql);
  bind_va(st, ap);
  va_end(ap);
  if (sqlite3_step(st) != SQLITE_ROW || sqlite3_column_type(st, 0) == SQLITE_NULL)
    return NULL;
  return g_strdup((const char *)sqlite3_column_text(st, 0));
}

gint64 od_db_count(sqlite3 *db, const char *sql) {
  g_autofree char *v = od_db_query_text(db, sql, NULL);
  return v ? g_ascii_strtoll(v, NULL, 10) : 0;
}

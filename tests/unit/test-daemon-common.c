/* Pieces of daemons/common that guard secrets at rest: private state directories and databases,
 * and mosquitto password lines. */
#include "daemon-common.h"

#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>

static guint mode_of(const char *path) {
  GStatBuf st;
  g_assert_cmpint(g_stat(path, &st), ==, 0);
  return st.st_mode & 0777;
}

static void test_state_private(void) {
  g_autofree char *top = g_dir_make_tmp("oakuk-common-XXXXXX", NULL);
  g_autofree char *dir = g_build_filename(top, "state", NULL);
  /* An existing directory left open by a script is closed down. */
  g_assert_cmpint(g_mkdir(dir, 0755), ==, 0);
  g_assert_cmpint(g_chmod(dir, 0755), ==, 0);
  g_assert_true(od_state_dir_prepare(dir, NULL));
  g_assert_cmpuint(mode_of(dir), ==, 0700);
  /* A new database is 0600, an existing world-readable one becomes 0600, and so do its WAL files. */
  g_autofree char *db_path = g_build_filename(dir, "x.db", NULL);
  sqlite3 *db = od_db_open(db_path, NULL);
  g_assert_nonnull(db);
  g_assert_true(od_db_exec(db, "CREATE TABLE t (a TEXT); INSERT INTO t VALUES ('secret');", NULL));
  sqlite3_close(db);
  g_assert_cmpuint(mode_of(db_path), ==, 0600);
  g_assert_cmpint(g_chmod(db_path, 0644), ==, 0);
  db = od_db_open(db_path, NULL);
  g_assert_nonnull(db);
  g_assert_true(od_db_exec(db, "INSERT INTO t VALUES ('more');", NULL));
  g_assert_cmpuint(mode_of(db_path), ==, 0600);
  g_autofree char *wal = g_strconcat(db_path, "-wal", NULL);
  g_assert_cmpuint(mode_of(wal), ==, 0600);
  sqlite3_close(db);
  /* A path that cannot be made private is an error naming it. */
  g_autoptr(GError) err = NULL;
  g_assert_null(od_db_open("/proc/no/such/dir/x.db", &err));
  g_assert_nonnull(strstr(err->message, "/proc/no/such/dir/x.db"));
  g_autofree char *cmd = g_strdup_printf("rm -rf %s", top);
  g_assert_cmpint(system(cmd), ==, 0);
}

static void test_mosquitto_password_line(void) {
  g_autofree char *a = od_mosquitto_password_line("node-1", "s3cret");
  g_autofree char *b = od_mosquitto_password_line("node-1", "s3cret");
  g_assert_true(g_str_has_prefix(a, "node-1:$7$101$"));
  g_assert_cmpstr(a, !=, b); /* salted */
  g_auto(GStrv) parts = g_strsplit(a + strlen("node-1:"), "$", -1);
  g_assert_cmpuint(g_strv_length(parts), ==, 5);
  gsize n = 0;
  g_autofree guchar *salt = g_base64_decode(parts[3], &n);
  g_assert_cmpuint(n, ==, 12);
  g_autofree guchar *hash = g_base64_decode(parts[4], &n);
  g_assert_cmpuint(n, ==, 64);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/daemon-common/state-private", test_state_private);
  g_test_add_func("/daemon-common/mosquitto-password-line", test_mosquitto_password_line);
  return g_test_run();
}

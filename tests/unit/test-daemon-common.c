/* Pieces of daemons/common that guard secrets at rest and credentials: private state directories
 * and databases, mosquitto password lines, JWTs that always expire. */
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

/* Every JWT must carry an integer "exp": one without never expires and is refused. */
static void test_jwt_needs_exp(void) {
  guint8 key[32];
  od_random_bytes(key, sizeof key);
  const gint64 now = 1800000000;
  struct {
    const char *exp_json; /* the "exp" member as JSON, or NULL for none */
    const char *error;    /* NULL: accepted */
  } cases[] = {
      {NULL, "token has no expiry"},
      {"\"1800000060\"", "token has no expiry"},
      {"1800000060.5", "token has no expiry"},
      {"null", "token has no expiry"},
      {"true", "token has no expiry"},
      {"{}", "token has no expiry"},
      {"1799999999", "token has expired"},
      {"1800000000", NULL},
      {"1800000060", NULL},
  };
  for (gsize i = 0; i < G_N_ELEMENTS(cases); i++) {
    g_autofree char *text =
        g_strdup_printf("{\"sub\":\"Admin\",\"typ\":\"access\"%s%s}", cases[i].exp_json ? ",\"exp\":" : "",
                        cases[i].exp_json ? cases[i].exp_json : "");
    g_autoptr(JsonNode) node = od_json_parse(text, -1, NULL);
    g_assert_nonnull(node);
    g_autofree char *token = od_jwt_sign(key, sizeof key, json_node_get_object(node));
    g_autoptr(GError) err = NULL;
    g_autoptr(JsonObject) claims = od_jwt_verify(key, sizeof key, token, now, &err);
    if (cases[i].error == NULL) {
      g_assert_no_error(err);
      g_assert_nonnull(claims);
      g_assert_cmpstr(json_object_get_string_member(claims, "sub"), ==, "Admin");
    } else {
      g_assert_null(claims);
      g_assert_error(err, OD_ERROR, OD_ERROR_AUTH);
      g_assert_cmpstr(err->message, ==, cases[i].error);
    }
  }
  /* Another key's signature is refused before the claims are looked at. */
  g_autoptr(JsonObject) c = json_object_new();
  json_object_set_int_member(c, "exp", now + 60);
  g_autofree char *token = od_jwt_sign(key, sizeof key, c);
  guint8 other[32] = {0};
  g_autoptr(GError) err = NULL;
  g_assert_null(od_jwt_verify(other, sizeof other, token, now, &err));
  g_assert_cmpstr(err->message, ==, "token signature is invalid");
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/daemon-common/state-private", test_state_private);
  g_test_add_func("/daemon-common/mosquitto-password-line", test_mosquitto_password_line);
  g_test_add_func("/daemon-common/jwt-needs-exp", test_jwt_needs_exp);
  return g_test_run();
}

/* Pieces of daemons/common that guard secrets at rest and credentials: private state directories
 * and databases, mosquitto password lines, JWTs that always expire; and what operators rely on:
 * config files without unknown keys, Prometheus text that scrapers parse. */
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

static GKeyFile *key_file(const char *text) {
  GKeyFile *kf = g_key_file_new();
  g_assert_true(g_key_file_load_from_data(kf, text, -1, G_KEY_FILE_NONE, NULL));
  return kf;
}

static const char *const known_keys[] = {"listen", "state_dir", NULL};

static void test_config_unknown_key(void) {
  g_autoptr(GKeyFile) kf = key_file("[node]\nstate_dir = /x\nlistn = 127.0.0.1:1\n");
  g_autoptr(GError) err = NULL;
  g_assert_false(od_config_check_keys(kf, "/etc/oakuk/node.conf", "node", known_keys, NULL, NULL, &err));
  g_assert_cmpstr(err->message, ==,
                  "config /etc/oakuk/node.conf: [node] listn: unknown key (known keys: listen, state_dir)");
}

static void test_config_unknown_group(void) {
  g_autoptr(GKeyFile) kf = key_file("[node]\nlisten = 127.0.0.1:1\n[nod]\nlisten = 127.0.0.1:2\n");
  g_autoptr(GError) err = NULL;
  g_assert_false(od_config_check_keys(kf, "n.conf", "node", known_keys, NULL, NULL, &err));
  g_assert_cmpstr(err->message, ==, "config n.conf: unknown group [nod] (the only group is [node])");
}

/* The node's [registry HOST] groups: their own keys, checked as strictly; other groups still refused. */
static void test_config_other_groups(void) {
  static const char *const registry_keys[] = {"username", "password_file", NULL};
  g_autoptr(GKeyFile) ok =
      key_file("[node]\nlisten = 127.0.0.1:1\n[registry reg.example:5000]\nusername = u\n"
               "password_file = /p\n");
  g_assert_true(od_config_check_keys(ok, "n.conf", "node", known_keys, "registry ", registry_keys, NULL));
  g_autoptr(GKeyFile) bad_key = key_file("[registry reg.example]\nusername = u\npassword = secret\n");
  g_autoptr(GError) err = NULL;
  g_assert_false(
      od_config_check_keys(bad_key, "n.conf", "node", known_keys, "registry ", registry_keys, &err));
  g_assert_cmpstr(
      err->message, ==,
      "config n.conf: [registry reg.example] password: unknown key (known keys: username, password_file)");
  g_clear_error(&err);
  g_autoptr(GKeyFile) bad_group = key_file("[registri x]\nusername = u\n");
  g_assert_false(
      od_config_check_keys(bad_group, "n.conf", "node", known_keys, "registry ", registry_keys, &err));
  g_assert_cmpstr(err->message, ==,
                  "config n.conf: unknown group [registri x] (the groups are [node] and [registry ...])");
}

static void test_config_known_keys(void) {
  g_autoptr(GKeyFile) kf = key_file("# a comment\n[node]\nlisten = 127.0.0.1:1\n");
  g_assert_true(od_config_check_keys(kf, "n.conf", "node", known_keys, NULL, NULL, NULL));
  g_autoptr(GKeyFile) empty = g_key_file_new();
  g_assert_true(od_config_check_keys(empty, NULL, "node", known_keys, NULL, NULL, NULL));
}

/* The exact text: cumulative buckets, +Inf equal to _count, series sorted by labels, one HELP and
 * TYPE for all of them. */
static void test_histogram_text(void) {
  const double bounds[] = {0.1, 1};
  OdHistogram *h = od_histogram_new("t_seconds", "Test\\time\nsecond line", bounds, G_N_ELEMENTS(bounds));
  od_histogram_observe(h, "route=\"/b\"", 0.05);
  od_histogram_observe(h, "route=\"/b\"", 0.5);
  od_histogram_observe(h, "route=\"/b\"", 7);
  od_histogram_observe(h, "route=\"/a\"", 1);
  g_autoptr(GString) out = g_string_new(NULL);
  od_histogram_write(h, out);
  od_histogram_free(h);
  g_assert_cmpstr(out->str, ==,
                  "# HELP t_seconds Test\\\\time\\nsecond line\n"
                  "# TYPE t_seconds histogram\n"
                  "t_seconds_bucket{route=\"/a\",le=\"0.1\"} 0\n"
                  "t_seconds_bucket{route=\"/a\",le=\"1\"} 1\n"
                  "t_seconds_bucket{route=\"/a\",le=\"+Inf\"} 1\n"
                  "t_seconds_sum{route=\"/a\"} 1\n"
                  "t_seconds_count{route=\"/a\"} 1\n"
                  "t_seconds_bucket{route=\"/b\",le=\"0.1\"} 1\n"
                  "t_seconds_bucket{route=\"/b\",le=\"1\"} 2\n"
                  "t_seconds_bucket{route=\"/b\",le=\"+Inf\"} 3\n"
                  "t_seconds_sum{route=\"/b\"} 7.55\n"
                  "t_seconds_count{route=\"/b\"} 3\n");
}

static void test_metrics_labels_and_build_info(void) {
  g_autofree char *escaped = od_metrics_label_escape("a\"b\\c\nd");
  g_assert_cmpstr(escaped, ==, "a\\\"b\\\\c\\nd");
  g_autoptr(GString) out = g_string_new(NULL);
  od_metrics_build_info(out, "oakuk-node", "1.2.3");
  od_metrics_value(out, "x_total", "counter", "Things", 42);
  g_assert_cmpstr(out->str, ==,
                  "# HELP oakuk_build_info The daemon and its version; always 1\n"
                  "# TYPE oakuk_build_info gauge\n"
                  "oakuk_build_info{daemon=\"oakuk-node\",version=\"1.2.3\"} 1\n"
                  "# HELP x_total Things\n# TYPE x_total counter\nx_total 42\n");
}

/* Every process metric, each after its HELP and TYPE, with this process's values. */
static void test_metrics_process(void) {
  g_autoptr(GString) out = g_string_new(NULL);
  od_metrics_process(out);
  const char *names[] = {"process_cpu_seconds_total", "process_resident_memory_bytes",
                         "process_virtual_memory_bytes", "process_open_fds", "process_start_time_seconds"};
  for (gsize k = 0; k < G_N_ELEMENTS(names); k++) {
    g_autofree char *type = g_strdup_printf("\n# TYPE %s ", names[k]);
    g_autofree char *sample = g_strdup_printf("\n%s ", names[k]);
    g_assert_nonnull(strstr(out->str, type));
    g_assert_nonnull(strstr(out->str, sample));
  }
  const char *rss =
      strstr(out->str, "\nprocess_resident_memory_bytes ") + strlen("\nprocess_resident_memory_bytes ");
  g_assert_cmpint(g_ascii_strtoll(rss, NULL, 10), >, 1024 * 1024);
  const char *start =
      strstr(out->str, "\nprocess_start_time_seconds ") + strlen("\nprocess_start_time_seconds ");
  double now = (double)g_get_real_time() / G_USEC_PER_SEC;
  g_assert_cmpfloat(g_ascii_strtod(start, NULL), <=, now + 1);
  g_assert_cmpfloat(g_ascii_strtod(start, NULL), >, now - 600);
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/daemon-common/state-private", test_state_private);
  g_test_add_func("/daemon-common/mosquitto-password-line", test_mosquitto_password_line);
  g_test_add_func("/daemon-common/jwt-needs-exp", test_jwt_needs_exp);
  g_test_add_func("/daemon-common/config/unknown-key", test_config_unknown_key);
  g_test_add_func("/daemon-common/config/unknown-group", test_config_unknown_group);
  g_test_add_func("/daemon-common/config/known-keys", test_config_known_keys);
  g_test_add_func("/daemon-common/config/other-groups", test_config_other_groups);
  g_test_add_func("/daemon-common/metrics/histogram-text", test_histogram_text);
  g_test_add_func("/daemon-common/metrics/labels-and-build-info", test_metrics_labels_and_build_info);
  g_test_add_func("/daemon-common/metrics/process", test_metrics_process);
  return g_test_run();
}

/* Unit tests of the container module's pure parts: references, insecure registries, auth
 * challenges, layer unpacking (whiteouts, path safety) and layer packing. No network, no runc. */
#include "oci-private.h"

#include <archive.h>
#include <archive_entry.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void test_ref_parse(void) {
  OakukOciRef r;
  GError *err = NULL;
  g_assert_true(oakuk_oci_ref_parse("127.0.0.1:5000/test/busybox:1", &r, &err));
  g_assert_cmpstr(r.registry, ==, "127.0.0.1:5000");
  g_assert_cmpstr(r.repository, ==, "test/busybox");
  g_assert_cmpstr(r.tag, ==, "1");
  g_assert_null(r.digest);
  oakuk_oci_ref_clear(&r);
  g_assert_true(oakuk_oci_ref_parse("busybox", &r, &err));
  g_assert_cmpstr(r.registry, ==, "registry-1.docker.io");
  g_assert_cmpstr(r.repository, ==, "library/busybox");
  g_assert_cmpstr(r.tag, ==, "latest");
  oakuk_oci_ref_clear(&r);
  const char *d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  g_autofree char *withd = g_strdup_printf("localhost/app@%s", d);
  g_assert_true(oakuk_oci_ref_parse(withd, &r, &err));
  g_assert_cmpstr(r.registry, ==, "localhost");
  g_assert_cmpstr(r.digest, ==, d);
  g_assert_null(r.tag);
  oakuk_oci_ref_clear(&r);
  g_assert_false(oakuk_oci_ref_parse("reg.example/UPPER:1", &r, &err));
  g_assert_nonnull(strstr(err->message, "repository \"UPPER\""));
  g_clear_error(&err);
  g_assert_false(oakuk_oci_ref_parse("reg.example/a@sha256:xyz", &r, &err));
  g_assert_nonnull(strstr(err->message, "digest sha256:xyz"));
  g_clear_error(&err);
}

static void test_insecure(void) {
  g_assert_true(oakuk_oci_registry_is_insecure("127.0.0.1:5000", NULL));
  g_assert_true(oakuk_oci_registry_is_insecure("localhost:5000", NULL));
  g_assert_false(oakuk_oci_registry_is_insecure("10.0.0.5:5000", NULL));
  g_assert_true(oakuk_oci_registry_is_insecure("10.0.0.5:5000", "reg.lan, 10.0.0.5:5000"));
  g_assert_true(oakuk_oci_registry_is_insecure("reg.lan:443", "reg.lan"));
  /* An explicit list replaces the loopback default. */
  g_assert_false(oakuk_oci_registry_is_insecure("127.0.0.1:5000", "reg.lan"));
  GError *err = NULL;
  g_assert_null(oakuk_oci_client_new("http://10.0.0.5:5000", NULL, NULL, NULL, &err));
  g_assert_error(err, OAKUK_ERROR, -OAKUK_EPERM);
  g_assert_nonnull(strstr(err->message, "marked insecure"));
  g_clear_error(&err);
}

static void test_challenge(void) {
  g_autofree char *scheme = NULL;
  g_autoptr(GHashTable) p = oakuk_oci_parse_challenge(
      "Bearer realm=\"https://auth.example/token\",service=\"registry.example\",scope=\"repository:a/b:pull\"",
      &scheme);
  g_assert_nonnull(p);
  g_assert_cmpstr(scheme, ==, "Bearer");
  g_assert_cmpstr(g_hash_table_lookup(p, "realm"), ==, "https://auth.example/token");
  g_assert_cmpstr(g_hash_table_lookup(p, "service"), ==, "registry.example");
  g_assert_cmpstr(g_hash_table_lookup(p, "scope"), ==, "repository:a/b:pull");
  g_autofree char *s2 = NULL;
  g_autoptr(GHashTable) q = oakuk_oci_parse_challenge("Basic realm=\"oakuk\"", &s2);
  g_assert_cmpstr(s2, ==, "Basic");
  g_assert_cmpstr(g_hash_table_lookup(q, "realm"), ==, "oakuk");
  g_autofree char *s3 = NULL;
  g_assert_null(oakuk_oci_parse_challenge("Bearer realm=\"unterminated", &s3));
}

/* ---- layers ---- */

typedef struct {
  const char *name;
  char type; /* f file, d dir, l symlink, h hard link, c char device */
  const char *data;
} Entry;

static char *write_layer(const char *dir, const char *file, const Entry *entries) {
  char *path = g_build_filename(dir, file, NULL);
  struct archive *w = archive_write_new();
  archive_write_add_filter_gzip(w);
  archive_write_set_format_pax_restricted(w);
  g_assert_cmpint(archive_write_open_filename(w, path), ==, ARCHIVE_OK);
  for (const Entry *e = entries; e->name; e++) {
    struct archive_entry *ae = archive_entry_new();
    archive_entry_set_pathname(ae, e->name);
    archive_entry_set_uid(ae, 1234);
    archive_entry_set_gid(ae, 99);
    size_t len = 0;
    switch (e->type) {
    case 'd':
      archive_entry_set_filetype(ae, AE_IFDIR);
      archive_entry_set_perm(ae, 0755);
      break;
    case 'l':
      archive_entry_set_filetype(ae, AE_IFLNK);
      archive_entry_set_perm(ae, 0777);
      archive_entry_set_symlink(ae, e->data);
      break;
    case 'h':
      archive_entry_set_filetype(ae, AE_IFREG);
      archive_entry_set_hardlink(ae, e->data);
      break;
    case 'c':
      archive_entry_set_filetype(ae, AE_IFCHR);
      archive_entry_set_perm(ae, 0600);
      break;
    default:
      len = e->data ? strlen(e->data) : 0;
      archive_entry_set_filetype(ae, AE_IFREG);
      archive_entry_set_perm(ae, 0640);
      archive_entry_set_size(ae, (la_int64_t)len);
    }
    g_assert_cmpint(archive_write_header(w, ae), ==, ARCHIVE_OK);
    if (len)
      g_assert_cmpint(archive_write_data(w, e->data, len), ==, (la_ssize_t)len);
    archive_entry_free(ae);
  }
  archive_write_close(w);
  archive_write_free(w);
  return path;
}

static gboolean exists(const char *root, const char *rel) {
  g_autofree char *p = g_build_filename(root, rel, NULL);
  struct stat st;
  return lstat(p, &st) == 0;
}

static char *read_text(const char *root, const char *rel) {
  g_autofree char *p = g_build_filename(root, rel, NULL);
  char *t = NULL;
  g_file_get_contents(p, &t, NULL, NULL);
  return t;
}

static void test_whiteouts(void) {
  g_autofree char *tmp = g_dir_make_tmp("oakuk-ut-ctr-XXXXXX", NULL);
  g_autofree char *rootfs = g_build_filename(tmp, "rootfs", NULL);
  g_mkdir(rootfs, 0755);
  const Entry l1[] = {{"etc/", 'd', NULL},        {"etc/motd", 'f', "old"},      {"etc/keep", 'f', "keep"},
                      {"var/", 'd', NULL},        {"var/cache/", 'd', NULL},     {"var/cache/a", 'f', "a"},
                      {"var/cache/b", 'f', "b"}, {"bin/", 'd', NULL},           {"bin/busybox", 'f', "bb"},
                      {"bin/sh", 'l', "/bin/busybox"}, {NULL, 0, NULL}};
  /* Layer 2: a file removed, a directory made opaque (its new file survives, whichever order),
   * a file replaced. */
  const Entry l2[] = {{"etc/.wh.motd", 'f', ""},       {"var/cache/new", 'f', "new"},
                      {"var/cache/.wh..wh..opq", 'f', ""}, {"etc/keep", 'f', "replaced"},
                      {"bin/ln", 'h', "bin/busybox"},  {NULL, 0, NULL}};
  g_autofree char *p1 = write_layer(tmp, "l1.tar.gz", l1);
  g_autofree char *p2 = write_layer(tmp, "l2.tar.gz", l2);
  GError *err = NULL;
  g_assert_true(oakuk_oci_apply_layer(rootfs, p1, "layer 1", &err));
  g_assert_no_error(err);
  g_assert_true(oakuk_oci_apply_layer(rootfs, p2, "layer 2", &err));
  g_assert_no_error(err);
  g_assert_false(exists(rootfs, "etc/motd"));
  g_assert_false(exists(rootfs, "etc/.wh.motd"));
  g_autofree char *keep = read_text(rootfs, "etc/keep");
  g_assert_cmpstr(keep, ==, "replaced");
  g_assert_false(exists(rootfs, "var/cache/a"));
  g_assert_false(exists(rootfs, "var/cache/b"));
  g_assert_true(exists(rootfs, "var/cache/new"));
  g_assert_false(exists(rootfs, "var/cache/.wh..wh..opq"));
  /* Absolute symlinks are fine in a rootfs; ownership is kept. */
  g_autofree char *sh = g_build_filename(rootfs, "bin", "sh", NULL);
  g_autofree char *target = g_file_read_link(sh, NULL);
  g_assert_cmpstr(target, ==, "/bin/busybox");
  g_autofree char *bb = g_build_filename(rootfs, "bin", "busybox", NULL);
  g_autofree char *ln = g_build_filename(rootfs, "bin", "ln", NULL);
  struct stat a, b;
  g_assert_cmpint(stat(bb, &a), ==, 0);
  g_assert_cmpint(stat(ln, &b), ==, 0);
  g_assert_cmpint(a.st_ino, ==, b.st_ino);
  if (getuid() == 0) {
    g_assert_cmpint(a.st_uid, ==, 1234);
    g_assert_cmpint(a.st_gid, ==, 99);
  }
  g_autofree char *cmd = g_strdup_printf("rm -rf %s", tmp);
  g_assert_cmpint(system(cmd), ==, 0);
}

static void expect_refused(const Entry *entries, const Entry *first, const char *needle) {
  g_autofree char *tmp = g_dir_make_tmp("oakuk-ut-ctr-XXXXXX", NULL);
  g_autofree char *rootfs = g_build_filename(tmp, "rootfs", NULL);
  g_mkdir(rootfs, 0755);
  GError *err = NULL;
  if (first) {
    g_autofree char *p0 = write_layer(tmp, "l0.tar.gz", first);
    g_assert_true(oakuk_oci_apply_layer(rootfs, p0, "layer 0", &err));
  }
  g_autofree char *p = write_layer(tmp, "l.tar.gz", entries);
  g_assert_false(oakuk_oci_apply_layer(rootfs, p, "layer 1/1 (sha256:x)", &err));
  g_assert_error(err, OAKUK_ERROR, -OAKUK_EPERM);
  if (!strstr(err->message, needle))
    g_error("\"%s\" lacks \"%s\"", err->message, needle);
  g_assert_nonnull(strstr(err->message, "layer 1/1 (sha256:x)"));
  g_clear_error(&err);
  g_autofree char *outside = g_build_filename(tmp, "escaped", NULL);
  g_assert_false(g_file_test(outside, G_FILE_TEST_EXISTS));
  g_autofree char *cmd = g_strdup_printf("rm -rf %s", tmp);
  g_assert_cmpint(system(cmd), ==, 0);
}

static void test_unsafe(void) {
  expect_refused((const Entry[]){{"../escaped", 'f', "x"}, {NULL, 0, NULL}}, NULL, "path traversal");
  expect_refused((const Entry[]){{"/escaped", 'f', "x"}, {NULL, 0, NULL}}, NULL, "absolute path");
  expect_refused((const Entry[]){{"a/b/l", 'l', "../../../escaped"}, {NULL, 0, NULL}}, NULL, "leaves the image");
  expect_refused((const Entry[]){{"dev/null", 'c', NULL}, {NULL, 0, NULL}}, NULL, "character device");
  /* A lower layer's symlink to the host must never be written or whited out through. */
  const Entry lower[] = {{"up", 'l', "/"}, {NULL, 0, NULL}};
  expect_refused((const Entry[]){{"up/escaped", 'f', "x"}, {NULL, 0, NULL}}, lower, "through the symlink up");
  expect_refused((const Entry[]){{"up/.wh.etc", 'f', ""}, {NULL, 0, NULL}}, lower, "through the symlink up");
}

static void test_pack_roundtrip(void) {
  g_autofree char *tmp = g_dir_make_tmp("oakuk-ut-ctr-XXXXXX", NULL);
  g_autofree char *src = g_build_filename(tmp, "src", NULL);
  g_autofree char *bin = g_build_filename(src, "bin", NULL);
  g_mkdir_with_parents(bin, 0755);
  g_autofree char *tool = g_build_filename(bin, "tool", NULL);
  g_file_set_contents(tool, "#!/bin/sh\necho hi\n", -1, NULL);
  chmod(tool, 0750);
  g_autofree char *link = g_build_filename(bin, "alias", NULL);
  g_assert_cmpint(symlink("tool", link), ==, 0);
  g_autofree char *diff_id = NULL;
  GError *err = NULL;
  g_autoptr(GBytes) layer = oakuk_oci_pack_layer(src, &diff_id, &err);
  g_assert_no_error(err);
  g_assert_true(oakuk_oci_digest_is_valid(diff_id));
  g_autofree char *digest = oakuk_oci_digest_bytes(layer);
  g_assert_cmpstr(digest, !=, diff_id); /* compressed vs uncompressed */
  g_autofree char *lp = g_build_filename(tmp, "layer.tar.gz", NULL);
  g_file_set_contents(lp, g_bytes_get_data(layer, NULL), (gssize)g_bytes_get_size(layer), NULL);
  g_autofree char *dst = g_build_filename(tmp, "dst", NULL);
  g_mkdir(dst, 0755);
  g_assert_true(oakuk_oci_apply_layer(dst, lp, "packed", &err));
  g_autofree char *text = read_text(dst, "bin/tool");
  g_assert_cmpstr(text, ==, "#!/bin/sh\necho hi\n");
  g_autofree char *t2 = g_build_filename(dst, "bin", "tool", NULL);
  struct stat st;
  g_assert_cmpint(stat(t2, &st), ==, 0);
  g_assert_cmpint(st.st_mode & 07777, ==, 0750);
  g_autofree char *l2 = g_build_filename(dst, "bin", "alias", NULL);
  g_autofree char *target = g_file_read_link(l2, NULL);
  g_assert_cmpstr(target, ==, "tool");
  /* Packing is deterministic for an unchanged tree: same diff_id. */
  g_autofree char *again = NULL;
  g_autoptr(GBytes) layer2 = oakuk_oci_pack_layer(src, &again, &err);
  g_assert_cmpstr(again, ==, diff_id);
  g_assert_null(oakuk_oci_pack_layer("/nonexistent/oakuk", &again, &err));
  g_assert_error(err, OAKUK_ERROR, -OAKUK_ENOTFOUND);
  g_clear_error(&err);
  g_autofree char *cmd = g_strdup_printf("rm -rf %s", tmp);
  g_assert_cmpint(system(cmd), ==, 0);
}

static void test_options(void) {
  oakuk_container_options o;
  g_assert_cmpint(oakuk_container_options_init(&o, 99), ==, OAKUK_EINVAL);
  g_assert_cmpint(oakuk_container_options_init(&o, OAKUK_CONTAINER_OPTIONS_VERSION), ==, 0);
  g_assert_cmpuint(o.timeout_s, ==, 300);
  g_assert_cmpuint(o.stop_grace_s, ==, 3);
  g_assert_null(o.insecure_registries);
  g_assert_cmpstr(oakuk_container_platform_arch(), !=, "unknown");
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/container/ref/parse", test_ref_parse);
  g_test_add_func("/container/registry/insecure", test_insecure);
  g_test_add_func("/container/registry/challenge", test_challenge);
  g_test_add_func("/container/layer/whiteouts", test_whiteouts);
  g_test_add_func("/container/layer/unsafe", test_unsafe);
  g_test_add_func("/container/layer/pack-roundtrip", test_pack_roundtrip);
  g_test_add_func("/container/options", test_options);
  return g_test_run();
}

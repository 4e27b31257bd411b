/* Unit tests of the container module's pure parts: references, insecure registries, auth
 * challenges, layer unpacking (whiteouts, path safety) and layer packing. No network, no runc. */
#include "oci-private.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
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
  g_assert_nonnull(strstr(err->message, "path component \"UPPER\""));
  g_clear_error(&err);
  g_assert_false(oakuk_oci_ref_parse("reg.example/a@sha256:xyz", &r, &err));
  g_assert_nonnull(strstr(err->message, "digest sha256:xyz"));
  g_clear_error(&err);
}

static void expect_ref(const char *text, const char *registry, const char *repository, const char *tag,
                       const char *digest) {
  OakukOciRef r;
  GError *err = NULL;
  if (!oakuk_oci_ref_parse(text, &r, &err))
    g_error("%s: %s", text, err->message);
  g_assert_cmpstr(r.registry, ==, registry);
  g_assert_cmpstr(r.repository, ==, repository);
  g_assert_cmpstr(r.tag, ==, tag);
  g_assert_cmpstr(r.digest, ==, digest);
  oakuk_oci_ref_clear(&r);
}

static void expect_bad_ref(const char *text, const char *needle) {
  OakukOciRef r = {0};
  GError *err = NULL;
  if (oakuk_oci_ref_parse(text, &r, &err))
    g_error("%s: accepted as %s / %s : %s", text, r.registry, r.repository, r.tag);
  g_assert_error(err, OAKUK_ERROR, -OAKUK_EINVAL);
  if (!strstr(err->message, needle))
    g_error("%s: \"%s\" lacks \"%s\"", text, err->message, needle);
  g_assert_null(r.registry);
  g_assert_null(r.repository);
  g_clear_error(&err);
}

/* The distribution spec's reference grammar: what it allows parses, the rest is refused with the
 * part named, before any registry is asked. */
static void test_ref_grammar(void) {
  const char *d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
  g_autofree char *td = g_strdup_printf("reg.example:443/a/b:v1@%s", d);
  expect_ref(td, "reg.example:443", "a/b", "v1", d);
  expect_ref("my-registry.local/team_a/app.v2:1.0-rc_1", "my-registry.local", "team_a/app.v2", "1.0-rc_1",
             NULL);
  expect_ref("localhost:5000/a__b/c---d:_x", "localhost:5000", "a__b/c---d", "_x", NULL);
  expect_ref("[::1]:5000/app:1", "[::1]:5000", "app", "1", NULL);
  expect_ref("Reg.Example/app", "Reg.Example", "app", "latest", NULL);
  expect_ref("library/busybox:1.36", "registry-1.docker.io", "library/busybox", "1.36", NULL);
  g_autofree char *tag128 = g_strnfill(128, 't');
  g_autofree char *long_tag = g_strdup_printf("app:%s", tag128);
  expect_ref(long_tag, "registry-1.docker.io", "library/app", tag128, NULL);

  /* The request the issue saw reach a registry as a manifest GET. */
  expect_bad_ref("127.0.0.1:5000/../../v2/_catalog:1", "path component \"..\"");
  expect_bad_ref("127.0.0.1:5000/v2/_catalog:1", "path component \"_catalog\"");
  expect_bad_ref("reg.example/a/./b", "path component \".\"");
  expect_bad_ref("reg.example/a//b", "path component \"\"");
  expect_bad_ref("reg.example/a/", "path component \"\"");
  expect_bad_ref("reg.example/a.-b", "path component \"a.-b\"");
  expect_bad_ref("reg.example/a___b", "path component \"a___b\"");
  expect_bad_ref("reg.example/-a", "path component \"-a\"");
  expect_bad_ref("reg.example/a-", "path component \"a-\"");
  expect_bad_ref("reg.example/a%2f..", "path component \"a%2f..\"");
  expect_bad_ref("reg.example/a?x=1", "path component");
  expect_bad_ref("reg.example/a:-x", "tag \"-x\"");
  expect_bad_ref("reg.example/a:.x", "tag \".x\"");
  expect_bad_ref("reg.example/a:x/y", "tag \"x/y\"");
  g_autofree char *tag129 = g_strnfill(129, 't');
  g_autofree char *too_long_tag = g_strdup_printf("app:%s", tag129);
  expect_bad_ref(too_long_tag, "tag");
  expect_bad_ref("reg.example/a:", "tag \"\"");
  expect_bad_ref("reg_x.example/a", "registry \"reg_x.example\"");
  expect_bad_ref("-reg.example/a", "registry \"-reg.example\"");
  expect_bad_ref("reg..example/a", "registry \"reg..example\"");
  expect_bad_ref("reg.example:0/a", "port");
  expect_bad_ref("reg.example:65536/a", "port");
  expect_bad_ref("reg.example:5x/a", "port");
  expect_bad_ref("[::1/a", "closing ']'");
  expect_bad_ref("[zz::1]:5000/a", "IPv6");
  expect_bad_ref("reg.example/a@sha512:00", "only sha256");
  expect_bad_ref("reg.example/a@sha256:ABC", "digest");
  expect_bad_ref("reg.example/a b", "space");
  expect_bad_ref("reg.example/a\nb", "control");
  expect_bad_ref("", "empty");
  expect_bad_ref("reg.example/", "no repository");
  g_autofree char *comp = g_strnfill(250, 'a');
  g_autofree char *long_name = g_strdup_printf("reg.example/%s", comp);
  expect_bad_ref(long_name, "longer than 255");
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
      "Bearer "
      "realm=\"https://auth.example/token\",service=\"registry.example\",scope=\"repository:a/b:pull\"",
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
  const Entry l1[] = {{"etc/", 'd', NULL},
                      {"etc/motd", 'f', "old"},
                      {"etc/keep", 'f', "keep"},
                      {"var/", 'd', NULL},
                      {"var/cache/", 'd', NULL},
                      {"var/cache/a", 'f', "a"},
                      {"var/cache/b", 'f', "b"},
                      {"bin/", 'd', NULL},
                      {"bin/busybox", 'f', "bb"},
                      {"bin/sh", 'l', "/bin/busybox"},
                      {NULL, 0, NULL}};
  /* Layer 2: a file removed, a directory made opaque (its new file survives, whichever order),
   * a file replaced. */
  const Entry l2[] = {{"etc/.wh.motd", 'f', ""},           {"var/cache/new", 'f', "new"},
                      {"var/cache/.wh..wh..opq", 'f', ""}, {"etc/keep", 'f', "replaced"},
                      {"bin/ln", 'h', "bin/busybox"},      {NULL, 0, NULL}};
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
  expect_refused((const Entry[]){{"a/b/l", 'l', "../../../escaped"}, {NULL, 0, NULL}}, NULL,
                 "leaves the image");
  expect_refused((const Entry[]){{"dev/null", 'c', NULL}, {NULL, 0, NULL}}, NULL, "character device");
  /* A whiteout never acts through a symlink. */
  const Entry lower[] = {{"up", 'l', "/"}, {NULL, 0, NULL}};
  expect_refused((const Entry[]){{"up/.wh.etc", 'f', ""}, {NULL, 0, NULL}}, lower, "through the symlink up");
  /* Links resolved as the kernel does, through the links already there: a/b/c/d is the root, and
   * x -> a/b/c/d/../../.. (which reads as "a") names the directory above the rootfs. */
  expect_refused(
      (const Entry[]){{"a/b/c/", 'd', NULL},
                      {"a/b/c/d", 'l', "../../.."},
                      {"x", 'l', "a/b/c/d/../../.."},
                      {NULL, 0, NULL}},
      NULL,
      "symlink x -> a/b/c/d/../../.. leaves the image: it leads out of the tree through the link a/b/c/d");
  /* An absolute link is the rootfs's root, and ".." above it leaves. */
  expect_refused((const Entry[]){{"a", 'l', "/"}, {"x", 'l', "a/.."}, {NULL, 0, NULL}}, NULL,
                 "symlink x -> a/.. leaves the image");
  /* A link of a later layer that redirects a lower layer's harmless one: the rootfs is checked. */
  const Entry harmless[] = {{"x", 'l', "a/b/c/d/../../.."}, {NULL, 0, NULL}};
  expect_refused((const Entry[]){{"a/b/c/", 'd', NULL}, {"a/b/c/d", 'l', "../../.."}, {NULL, 0, NULL}},
                 harmless, "symlink x -> a/b/c/d/../../.. leaves the image");
  /* Nothing is written through such a link. */
  expect_refused((const Entry[]){{"a/b/c/", 'd', NULL},
                                 {"a/b/c/d", 'l', "../../.."},
                                 {"a/b/c/d/../escaped", 'f', "x"},
                                 {NULL, 0, NULL}},
                 NULL, "has a '..' component");
  expect_refused(
      (const Entry[]){
          {"a/b/c/", 'd', NULL}, {"a/b/c/d", 'l', "../../.."}, {"x/escaped", 'f', "x"}, {NULL, 0, NULL}},
      harmless, "entry x/escaped leads out of the tree through the link a/b/c/d");
}

/* Entries and hard links through a link that stays inside land where the kernel (in the
 * container) would put them: "/" is the rootfs. */
static void test_through_links(void) {
  g_autofree char *tmp = g_dir_make_tmp("oakuk-ut-ctr-XXXXXX", NULL);
  g_autofree char *rootfs = g_build_filename(tmp, "rootfs", NULL);
  g_mkdir(rootfs, 0755);
  const Entry l1[] = {{"usr/lib/", 'd', NULL}, {"lib", 'l', "usr/lib"}, {"up", 'l', "/"}, {NULL, 0, NULL}};
  const Entry l2[] = {{"lib/libc.so", 'f', "libc"},
                      {"up/escaped", 'f', "inside"},
                      {"lib/again.so", 'h', "lib/libc.so"},
                      {NULL, 0, NULL}};
  g_autofree char *p1 = write_layer(tmp, "l1.tar.gz", l1);
  g_autofree char *p2 = write_layer(tmp, "l2.tar.gz", l2);
  GError *err = NULL;
  g_assert_true(oakuk_oci_apply_layer(rootfs, p1, "layer 1", &err));
  g_assert_true(oakuk_oci_apply_layer(rootfs, p2, "layer 2", &err));
  g_assert_no_error(err);
  g_autofree char *libc = read_text(rootfs, "usr/lib/libc.so");
  g_assert_cmpstr(libc, ==, "libc");
  g_autofree char *esc = read_text(rootfs, "escaped");
  g_assert_cmpstr(esc, ==, "inside");
  g_autofree char *outside = g_build_filename(tmp, "escaped", NULL);
  g_assert_false(g_file_test(outside, G_FILE_TEST_EXISTS));
  g_autofree char *a = g_build_filename(rootfs, "usr/lib/libc.so", NULL);
  g_autofree char *b = g_build_filename(rootfs, "usr/lib/again.so", NULL);
  struct stat sa, sb;
  g_assert_cmpint(stat(a, &sa), ==, 0);
  g_assert_cmpint(stat(b, &sb), ==, 0);
  g_assert_cmpint(sa.st_ino, ==, sb.st_ino);
  g_autofree char *lib = g_build_filename(rootfs, "lib", NULL);
  g_autofree char *t = g_file_read_link(lib, NULL);
  g_assert_cmpstr(t, ==, "usr/lib");
  g_autofree char *cmd = g_strdup_printf("rm -rf %s", tmp);
  g_assert_cmpint(system(cmd), ==, 0);
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
  g_assert_null(o.file_allowed_dirs);
  g_assert_cmpstr(oakuk_container_platform_arch(), !=, "unknown");
  /* A version-1 struct is shorter: init writes only its part. */
  struct {
    unsigned int version;
    const char *runc_path, *insecure_registries;
    uint32_t timeout_s, stop_grace_s;
    guint8 guard[32];
  } v1;
  memset(&v1, 0x5a, sizeof v1);
  g_assert_cmpint(oakuk_container_options_init((oakuk_container_options *)&v1, 1), ==, 0);
  g_assert_cmpuint(v1.version, ==, 1);
  g_assert_cmpuint(v1.stop_grace_s, ==, 3);
  for (gsize k = 0; k < sizeof v1.guard; k++)
    g_assert_cmpuint(v1.guard[k], ==, 0x5a);
  /* oakuk_container_pull reads a version-1 struct (and refuses oci-archive:file:// then) and checks
   * file_allowed_dirs of a version-2 one. */
  g_autofree char *tmp = g_dir_make_tmp("oakuk-ut-ctr-XXXXXX", NULL);
  g_autofree char *tarball = g_build_filename(tmp, "img.tar", NULL);
  g_assert_true(g_file_set_contents(tarball, "not a tar", -1, NULL));
  g_autofree char *ref = g_strdup_printf("oci-archive:file://%s", tarball);
  oakuk_error *err = NULL;
  g_assert_cmpint(oakuk_container_pull(tmp, ref, NULL, NULL, (oakuk_container_options *)&v1, NULL, &err), ==,
                  OAKUK_EPERM);
  g_assert_nonnull(strstr(oakuk_error_message(err), "file_allowed_dirs"));
  g_clear_pointer(&err, oakuk_error_free);
  g_assert_cmpint(oakuk_container_pull(tmp, ref, NULL, NULL, NULL, NULL, &err), ==, OAKUK_EPERM);
  g_clear_pointer(&err, oakuk_error_free);
  oakuk_container_options_init(&o, OAKUK_CONTAINER_OPTIONS_VERSION);
  o.file_allowed_dirs = "not/absolute";
  g_assert_cmpint(oakuk_container_pull(tmp, ref, NULL, NULL, &o, NULL, &err), ==, OAKUK_EINVAL);
  g_assert_cmpstr(oakuk_error_path(err), ==, "file_allowed_dirs");
  g_clear_pointer(&err, oakuk_error_free);
  /* Allowed: the file is read (and found not to be a tar). */
  o.file_allowed_dirs = tmp;
  g_assert_cmpint(oakuk_container_pull(tmp, ref, NULL, NULL, &o, NULL, &err), ==, OAKUK_EINVAL);
  g_assert_null(strstr(oakuk_error_message(err), "file_allowed_dirs"));
  g_clear_pointer(&err, oakuk_error_free);
  /* A fifo in the allowed directory is refused at once, never opened for a writer to come. */
  g_autofree char *fifo = g_build_filename(tmp, "img.fifo", NULL);
  g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
  g_autofree char *fref = g_strdup_printf("oci-archive:file://%s", fifo);
  g_assert_cmpint(oakuk_container_pull(tmp, fref, NULL, NULL, &o, NULL, &err), ==, OAKUK_EPERM);
  g_assert_nonnull(strstr(oakuk_error_message(err), "is a fifo"));
  g_clear_pointer(&err, oakuk_error_free);
  g_autofree char *cmd = g_strdup_printf("rm -rf %s", tmp);
  g_assert_cmpint(system(cmd), ==, 0);
}

/* The seccomp object of config.json: default allow, the host's architectures with their compat
 * ones, the denied system calls with EPERM, clone with namespace flags, clone3 with ENOSYS. */
static void test_seccomp_profile(void) {
  g_autoptr(JsonNode) n = oakuk_container_seccomp_profile("amd64");
  JsonObject *o = json_node_get_object(n);
  g_assert_cmpstr(json_object_get_string_member(o, "defaultAction"), ==, "SCMP_ACT_ALLOW");
  JsonArray *arches = json_object_get_array_member(o, "architectures");
  g_assert_cmpuint(json_array_get_length(arches), ==, 3);
  g_assert_cmpstr(json_array_get_string_element(arches, 0), ==, "SCMP_ARCH_X86_64");
  g_assert_cmpstr(json_array_get_string_element(arches, 1), ==, "SCMP_ARCH_X86");
  g_assert_cmpstr(json_array_get_string_element(arches, 2), ==, "SCMP_ARCH_X32");
  JsonArray *rules = json_object_get_array_member(o, "syscalls");
  JsonObject *deny = json_array_get_object_element(rules, 0);
  g_assert_cmpstr(json_object_get_string_member(deny, "action"), ==, "SCMP_ACT_ERRNO");
  g_assert_cmpint(json_object_get_int_member(deny, "errnoRet"), ==, EPERM);
  g_assert_false(json_object_has_member(deny, "args"));
  JsonArray *names = json_object_get_array_member(deny, "names");
  g_autoptr(GHashTable) denied = g_hash_table_new(g_str_hash, g_str_equal);
  for (guint k = 0; k < json_array_get_length(names); k++)
    g_hash_table_add(denied, (gpointer)json_array_get_string_element(names, k));
  const char *must[] = {"kexec_load",
                        "kexec_file_load",
                        "init_module",
                        "finit_module",
                        "delete_module",
                        "mount",
                        "umount2",
                        "pivot_root",
                        "swapon",
                        "swapoff",
                        "reboot",
                        "bpf",
                        "perf_event_open",
                        "keyctl",
                        "add_key",
                        "request_key",
                        "ptrace",
                        "process_vm_readv",
                        "process_vm_writev",
                        "open_by_handle_at",
                        "userfaultfd",
                        "unshare",
                        "setns",
                        "acct",
                        "quotactl",
                        "lookup_dcookie",
                        "iopl",
                        "ioperm",
                        "fsopen",
                        "io_uring_setup",
                        "clock_settime"};
  for (gsize k = 0; k < G_N_ELEMENTS(must); k++)
    if (!g_hash_table_contains(denied, must[k]))
      g_error("%s is not denied", must[k]);
  /* What ordinary programs need stays allowed. */
  const char *allowed[] = {"clone", "clone3", "execve", "openat", "socket", "chroot", "setuid", "read"};
  for (gsize k = 0; k < G_N_ELEMENTS(allowed); k++)
    g_assert_false(g_hash_table_contains(denied, allowed[k]));
  guint64 ns_flags = 0;
  gboolean clone3 = FALSE;
  for (guint k = 1; k < json_array_get_length(rules); k++) {
    JsonObject *r = json_array_get_object_element(rules, k);
    const char *name = json_array_get_string_element(json_object_get_array_member(r, "names"), 0);
    if (strcmp(name, "clone3") == 0) {
      clone3 = json_object_get_int_member(r, "errnoRet") == ENOSYS && !json_object_has_member(r, "args");
      continue;
    }
    g_assert_cmpstr(name, ==, "clone");
    g_assert_cmpint(json_object_get_int_member(r, "errnoRet"), ==, EPERM);
    JsonObject *a = json_array_get_object_element(json_object_get_array_member(r, "args"), 0);
    g_assert_cmpint(json_object_get_int_member(a, "index"), ==, 0);
    g_assert_cmpstr(json_object_get_string_member(a, "op"), ==, "SCMP_CMP_MASKED_EQ");
    g_assert_cmpint(json_object_get_int_member(a, "value"), ==, json_object_get_int_member(a, "valueTwo"));
    ns_flags |= (guint64)json_object_get_int_member(a, "value");
  }
  g_assert_true(clone3);
  g_assert_cmphex(ns_flags, ==, 0x7E020000); /* every CLONE_NEW* flag */
  g_autoptr(JsonNode) arm = oakuk_container_seccomp_profile("arm64");
  JsonArray *aa = json_object_get_array_member(json_node_get_object(arm), "architectures");
  g_assert_cmpuint(json_array_get_length(aa), ==, 2);
  g_assert_cmpstr(json_array_get_string_element(aa, 0), ==, "SCMP_ARCH_AARCH64");
  g_assert_cmpstr(json_array_get_string_element(aa, 1), ==, "SCMP_ARCH_ARM");
  g_autoptr(JsonNode) unknown = oakuk_container_seccomp_profile("mips");
  g_assert_false(json_object_has_member(json_node_get_object(unknown), "architectures"));
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
  g_test_add_func("/container/ref/parse", test_ref_parse);
  g_test_add_func("/container/ref/grammar", test_ref_grammar);
  g_test_add_func("/container/registry/insecure", test_insecure);
  g_test_add_func("/container/registry/challenge", test_challenge);
  g_test_add_func("/container/layer/whiteouts", test_whiteouts);
  g_test_add_func("/container/layer/unsafe", test_unsafe);
  g_test_add_func("/container/layer/through-links", test_through_links);
  g_test_add_func("/container/layer/pack-roundtrip", test_pack_roundtrip);
  g_test_add_func("/container/options", test_options);
  g_test_add_func("/container/seccomp/profile", test_seccomp_profile);
  return g_test_run();
}

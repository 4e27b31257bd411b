/* Unit tests of the image module: offline (file:// URLs, archives crafted here with libarchive's
 * writer), plus kernel inspection on crafted headers and the host's Debian kernel. */
#include "archive-safe.h"
#include "oakuk-private.h"
#include "oci-private.h"

#include <archive.h>
#include <archive_entry.h>
#include <ftw.h>
#include <glib/gstdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
  char *tmp;   /* scratch dir for inputs */
  char *cache; /* cache dir */
} Fixture;

static void fixture_setup(Fixture *f, gconstpointer data) {
  f->tmp = g_dir_make_tmp("oakuk-image-XXXXXX", NULL);
  g_assert_nonnull(f->tmp);
  f->cache = g_build_filename(f->tmp, "cache", NULL);
}

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  return remove(path);
}

static void fixture_teardown(Fixture *f, gconstpointer data) {
  nftw(f->tmp, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  g_free(f->tmp);
  g_free(f->cache);
}

/* A fake kernel: an ELF header for `machine` (64-bit little endian) followed by text. */
static void put32(guint8 *p, guint32 v) {
  p[0] = v & 0xff;
  p[1] = (v >> 8) & 0xff;
  p[2] = (v >> 16) & 0xff;
  p[3] = v >> 24;
}

/* An x86 kernel as Unikraft builds them for QEMU: a 32-bit ELF (EM_386) with a multiboot v1 header
 * (magic, flags, checksum) 4-byte aligned in its first 8 KiB. */
static GBytes *fake_multiboot(const char *text) {
  GByteArray *b = g_byte_array_new();
  guint8 h[96] = {0x7f, 'E', 'L', 'F', 1, 1, 1};
  h[16] = 2; /* ET_EXEC */
  h[18] = 3; /* EM_386 */
  put32(h + 64, 0x1BADB002u);
  put32(h + 68, 3);
  put32(h + 72, (guint32) - (0x1BADB002u + 3));
  g_byte_array_append(b, h, sizeof h);
  if (text)
    g_byte_array_append(b, (const guint8 *)text, strlen(text));
  return g_byte_array_free_to_bytes(b);
}

static GBytes *fake_elf(guint16 machine, const char *text) {
  GByteArray *b = g_byte_array_new();
  guint8 h[64] = {0x7f, 'E', 'L', 'F', machine == 3 ? 1 : 2, 1, 1}; /* EM_386 is 32-bit */
  h[16] = 2;                                                        /* ET_EXEC */
  h[18] = machine & 0xff;
  h[19] = machine >> 8;
  g_byte_array_append(b, h, sizeof h);
  if (text)
    g_byte_array_append(b, (const guint8 *)text, strlen(text));
  return g_byte_array_free_to_bytes(b);
}

typedef enum { E_FILE, E_DIR, E_SYMLINK, E_HARDLINK, E_CHARDEV, E_FIFO } EntryType;

typedef struct {
  EntryType type;
  const char *name;
  const char *data; /* file content, symlink or hard link target */
  GBytes *bytes;    /* file content when not text */
} Entry;

/* Writes entries as a tar (gzip when gz) to dir/name; returns a file:// URL. */
static char *write_archive(const char *dir, const char *name, gboolean gz, const Entry *entries, size_t n) {
  g_autofree char *path = g_build_filename(dir, name, NULL);
  struct archive *a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  if (gz)
    archive_write_add_filter_gzip(a);
  g_assert_cmpint(archive_write_open_filename(a, path), ==, ARCHIVE_OK);
  for (size_t i = 0; i < n; i++) {
    const Entry *e = &entries[i];
    struct archive_entry *ae = archive_entry_new();
    archive_entry_set_pathname(ae, e->name);
    gconstpointer content = NULL;
    gsize len = 0;
    switch (e->type) {
    case E_FILE:
      if (e->bytes)
        content = g_bytes_get_data(e->bytes, &len);
      else if (e->data)
        content = e->data, len = strlen(e->data);
      archive_entry_set_filetype(ae, AE_IFREG);
      archive_entry_set_perm(ae, 0644);
      archive_entry_set_size(ae, (la_int64_t)len);
      break;
    case E_DIR:
      archive_entry_set_filetype(ae, AE_IFDIR);
      archive_entry_set_perm(ae, 0755);
      break;
    case E_SYMLINK:
      archive_entry_set_filetype(ae, AE_IFLNK);
      archive_entry_set_perm(ae, 0777);
      archive_entry_set_symlink(ae, e->data);
      break;
    case E_HARDLINK:
      archive_entry_set_filetype(ae, AE_IFREG);
      archive_entry_set_perm(ae, 0644);
      archive_entry_set_hardlink(ae, e->data);
      archive_entry_set_size(ae, 0);
      break;
    case E_CHARDEV:
      archive_entry_set_filetype(ae, AE_IFCHR);
      archive_entry_set_perm(ae, 0666);
      archive_entry_set_rdevmajor(ae, 1);
      archive_entry_set_rdevminor(ae, 3);
      break;
    case E_FIFO:
      archive_entry_set_filetype(ae, AE_IFIFO);
      archive_entry_set_perm(ae, 0644);
      break;
    }
    g_assert_cmpint(archive_write_header(a, ae), ==, ARCHIVE_OK);
    if (len)
      g_assert_cmpint(archive_write_data(a, content, len), ==, (la_ssize_t)len);
    archive_entry_free(ae);
  }
  g_assert_cmpint(archive_write_close(a), ==, ARCHIVE_OK);
  archive_write_free(a);
  return g_filename_to_uri(path, NULL, NULL);
}

static char *write_file(const char *dir, const char *name, GBytes *bytes) {
  g_autofree char *path = g_build_filename(dir, name, NULL);
  g_assert_true(
      g_file_set_contents(path, g_bytes_get_data(bytes, NULL), (gssize)g_bytes_get_size(bytes), NULL));
  return g_filename_to_uri(path, NULL, NULL);
}

static char *sha256_of_uri(const char *uri) {
  g_autofree char *path = g_filename_from_uri(uri, NULL, NULL);
  g_autofree char *data = NULL;
  gsize len;
  g_assert_true(g_file_get_contents(path, &data, &len, NULL));
  return g_compute_checksum_for_data(G_CHECKSUM_SHA256, (const guchar *)data, len);
}

/* The cache dir holds nothing: a failed fetch left no work dir and no entry. */
static void assert_cache_empty(const char *cache) {
  GDir *d = g_dir_open(cache, 0, NULL);
  g_assert_nonnull(d);
  const char *name = g_dir_read_name(d);
  if (name != NULL)
    g_error("cache %s not empty after a failed fetch: %s", cache, name);
  g_dir_close(d);
}

/* A cache with opts (NULL: defaults) whose file:// URLs may read the fixture's scratch dir unless
 * opts names its own file_allowed_dirs. */
static oakuk_image_cache *new_cache(Fixture *f, const oakuk_image_cache_options *opts) {
  oakuk_image_cache_options o = OAKUK_IMAGE_CACHE_OPTIONS_INIT;
  if (opts)
    o = *opts;
  if (o.file_allowed_dirs == NULL)
    o.file_allowed_dirs = f->tmp;
  oakuk_error *err = NULL;
  oakuk_image_cache *c = oakuk_image_cache_new(f->cache, &o, &err);
  g_assert_null(err);
  g_assert_nonnull(c);
  return c;
}

/* Fetches url expecting failure with code and a message containing each of the needles. */
static void expect_failure(Fixture *f, const oakuk_image_cache_options *o, const char *url, const char *sha,
                           int32_t code, const char *needle1, const char *needle2) {
  oakuk_image_cache *c = new_cache(f, o);
  oakuk_error *err = NULL;
  oakuk_image *img = oakuk_image_cache_fetch_sync(c, url, sha, NULL, NULL, &err);
  g_assert_null(img);
  g_assert_nonnull(err);
  if (g_test_verbose())
    g_test_message("%s", oakuk_error_message(err));
  g_assert_cmpstr(oakuk_status_name(oakuk_error_code(err)), ==, oakuk_status_name(code));
  if (needle1 && strstr(oakuk_error_message(err), needle1) == NULL)
    g_error("message \"%s\" lacks \"%s\"", oakuk_error_message(err), needle1);
  if (needle2 && strstr(oakuk_error_message(err), needle2) == NULL)
    g_error("message \"%s\" lacks \"%s\"", oakuk_error_message(err), needle2);
  oakuk_error_free(err);
  assert_cache_empty(f->cache);
  oakuk_image_cache_unref(c);
}

static char *read_text(const char *path) {
  char *data = NULL;
  g_assert_true(g_file_get_contents(path, &data, NULL, NULL));
  return data;
}

/* ---------------------------------------------------------------------------------------------- */

static void test_good(Fixture *f, gconstpointer data) {
  g_autoptr(GBytes) kernel = fake_multiboot("....Unikraft Helene 0.16.1 ....");
  Entry e[] = {
      {E_DIR, "./", NULL, NULL},
      {E_FILE, "./kernel", NULL, kernel},
      {E_FILE, "initrd", "INITRD", NULL},
      {E_DIR, "files", NULL, NULL},
      {E_FILE, "files/hello.txt", "hello\n", NULL},
      {E_SYMLINK, "files/link", "hello.txt", NULL},
      {E_SYMLINK, "files/up", "../initrd", NULL},
      {E_HARDLINK, "files/again.txt", "files/hello.txt", NULL},
      {E_FILE, "oakuk.json", "{\"cmdline_style\": \"new\", \"cmdline_extra\": \"console=ttyS0\"}", NULL},
  };
  g_autofree char *url = write_archive(f->tmp, "good.tar.gz", TRUE, e, G_N_ELEMENTS(e));
  g_autofree char *sha = sha256_of_uri(url);
  oakuk_image_cache *c = new_cache(f, NULL);
  oakuk_error *err = NULL;
  oakuk_image *img = oakuk_image_cache_fetch_sync(c, url, NULL, NULL, NULL, &err);
  g_assert_null(err);
  g_assert_nonnull(img);
  g_assert_true(g_str_has_prefix(oakuk_image_dir(img), oakuk_image_cache_dir(c)));
  g_assert_cmpstr(oakuk_image_flavor(img), ==, "unikraft");
  g_assert_cmpstr(oakuk_image_version(img), ==, "0.16.1");
  g_assert_cmpstr(oakuk_image_arch(img), ==, "amd64");
  g_assert_cmpstr(oakuk_image_sha256(img), ==, sha);
  g_assert_cmpstr(oakuk_image_url(img), ==, url);
  g_assert_cmpstr(oakuk_image_cmdline_style(img), ==, "new");
  g_assert_cmpstr(oakuk_image_cmdline_extra(img), ==, "console=ttyS0");
  g_autofree char *kdata = NULL;
  gsize klen;
  g_assert_true(g_file_get_contents(oakuk_image_kernel(img), &kdata, &klen, NULL));
  g_assert_cmpmem(kdata, klen, g_bytes_get_data(kernel, NULL), g_bytes_get_size(kernel));
  g_autofree char *initrd = read_text(oakuk_image_initrd(img));
  g_assert_cmpstr(initrd, ==, "INITRD");
  g_autofree char *hello = g_build_filename(oakuk_image_files_dir(img), "link", NULL);
  g_autofree char *hello_text = read_text(hello);
  g_assert_cmpstr(hello_text, ==, "hello\n");
  g_autofree char *again = g_build_filename(oakuk_image_files_dir(img), "again.txt", NULL);
  g_autofree char *again_text = read_text(again);
  g_assert_cmpstr(again_text, ==, "hello\n");
  g_autofree char *manifest = g_build_filename(oakuk_image_dir(img), "image.json", NULL);
  g_assert_true(g_file_test(manifest, G_FILE_TEST_IS_REGULAR));
  /* Nothing but the finished entry (and the record of what the URL led to) is left in the cache. */
  GDir *d = g_dir_open(f->cache, 0, NULL);
  const char *name;
  guint entries = 0;
  while ((name = g_dir_read_name(d)) != NULL) {
    if (strcmp(name, ".refs") == 0)
      continue;
    g_assert_cmpstr(name, ==, strrchr(oakuk_image_dir(img), '/') + 1);
    entries++;
  }
  g_assert_cmpuint(entries, ==, 1);
  g_dir_close(d);
  oakuk_image_unref(img);
  oakuk_image_cache_unref(c);
}

static void test_oakuk_json(Fixture *f, gconstpointer data) {
  g_autoptr(GBytes) kernel = fake_elf(183, "Linux version 6.1.0-test (x) #1");
  Entry e[] = {{E_FILE, "kernel", NULL, kernel},
               {E_FILE, "initramfs.cpio", "CPIO", NULL},
               {E_FILE, "oakuk.json", "{\"flavor\": \"unikraft\", \"version\": \"0.15.0\"}", NULL}};
  g_autofree char *url = write_archive(f->tmp, "meta.tar", FALSE, e, G_N_ELEMENTS(e));
  oakuk_image_cache *c = new_cache(f, NULL);
  oakuk_error *err = NULL;
  oakuk_image *img = oakuk_image_cache_fetch_sync(c, url, NULL, NULL, NULL, &err);
  g_assert_null(err);
  g_assert_cmpstr(oakuk_image_flavor(img), ==, "unikraft"); /* oakuk.json wins over the kernel scan */
  g_assert_cmpstr(oakuk_image_version(img), ==, "0.15.0");
  g_assert_cmpstr(oakuk_image_arch(img), ==, "arm64");
  g_assert_true(g_str_has_suffix(oakuk_image_initrd(img), "/initramfs.cpio"));
  g_assert_null(oakuk_image_files_dir(img));
  g_assert_null(oakuk_image_cmdline_extra(img));
  oakuk_image_unref(img);
  oakuk_image_cache_unref(c);

  nftw(f->cache, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
  Entry bad[] = {{E_FILE, "kernel", NULL, kernel}, {E_FILE, "oakuk.json", "{\"flavor\": \"windows\"}", NULL}};
  g_autofree char *url2 = write_archive(f->tmp, "badmeta.tar", FALSE, bad, G_N_ELEMENTS(bad));
  expect_failure(f, NULL, url2, NULL, OAKUK_EINVAL, "oakuk.json: flavor", "windows");
}

static void test_no_kernel(Fixture *f, gconstpointer data) {
  Entry e[] = {{E_FILE, "initrd", "x", NULL}, {E_DIR, "kernel.d", NULL, NULL}};
  g_autofree char *url = write_archive(f->tmp, "nokernel.tar.gz", TRUE, e, G_N_ELEMENTS(e));
  expect_failure(f, NULL, url, NULL, OAKUK_EINVAL, "no `kernel`", url);
}

/* An image whose kernel QEMU cannot boot is refused at fetch, with the reason, archived or bare. */
static void test_unbootable_kernel(Fixture *f, gconstpointer data) {
  g_autoptr(GBytes) dbg = fake_elf(62, "Unikraft Telesto 0.16.3");
  Entry e[] = {{E_FILE, "kernel", NULL, dbg}};
  g_autofree char *url = write_archive(f->tmp, "dbg.tar.gz", TRUE, e, G_N_ELEMENTS(e));
  expect_failure(f, NULL, url, NULL, OAKUK_EINVAL, "not the .dbg one", url);
  g_autoptr(GBytes) elf32 = fake_elf(3, NULL);
  g_autofree char *bare = write_file(f->tmp, "plain-elf32", elf32);
  expect_failure(f, NULL, bare, NULL, OAKUK_EINVAL, "neither a multiboot header nor a PVH note", bare);
}

static void test_traversal(Fixture *f, gconstpointer data) {
  g_autoptr(GBytes) kernel = fake_multiboot(NULL);
  Entry e[] = {{E_FILE, "kernel", NULL, kernel}, {E_FILE, "files/../../evil", "x", NULL}};
  g_autofree char *url = write_archive(f->tmp, "trav.tar.gz", TRUE, e, G_N_ELEMENTS(e));
  expect_failure(f, NULL, url, NULL, OAKUK_EPERM, "files/../../evil", "'..'");
  g_autofree char *outside = g_build_filename(f->tmp, "..", "evil", NULL);
  g_assert_false(g_file_test(outside, G_FILE_TEST_EXISTS));
}

static void test_absolute(Fixture *f, gconstpointer data) {
  g_autoptr(GBytes) kernel = fake_multiboot(NULL);
  g_autofree char *target = g_build_filename(f->tmp, "abs-evil", NULL);
  Entry e[] = {{E_FILE, "kernel", NULL, kernel}, {E_FILE, target, "x", NULL}};
  g_autofree char *url = write_archive(f->tmp, "abs.tar", FALSE, e, G_N_ELEMENTS(e));
  expect_failure(f, NULL, url, NULL, OAKUK_EPERM, target, "absolute path");
  g_assert_false(g_file_test(target, G_FILE_TEST_EXISTS));
}

static void test_symlink_escape(Fixture *f, gconstpointer data) {
  g_autoptr(GBytes) kernel = fake_multiboot(NULL);
  Entry rel[] = {{E_FILE, "kernel", NULL, kernel}, {E_SYMLINK, "files/x", "../../etc/passwd", NULL}};
  g_autofree char *url = write_archive(f->tmp, "sym.tar", FALSE, rel, G_N_ELEMENTS(rel));
  expect_failure(f, NULL, url, NULL, OAKUK_EPERM, "symlink files/x -> ../../etc/passwd", "leaves the image");
  Entry abs[] = {{E_FILE, "kernel", NULL, kernel}, {E_SYMLINK, "etc", "/etc", NULL}};
  g_autofree char *url2 = write_archive(f->tmp, "symabs.tar", FALSE, abs, G_N_ELEMENTS(abs));
  expect_failure(f, NULL, url2, NULL, OAKUK_EPERM, "symlink etc -> /etc", NULL);
}

/* Links are resolved against the tree as it is on disk, through the links already extracted:
 * each one checked alone would pass (a/b/c/d -> ../../.. is the root; x -> a/b/c/d/../../.. reads
 * as "a"), but the kernel follows a/b/c/d first, and x then names a directory three levels above
 * the image. */
static void test_symlink_chain(Fixture *f, gconstpointer data) {
  g_autoptr(GBytes) kernel = fake_multiboot(NULL);
  Entry chain[] = {{E_FILE, "kernel", NULL, kernel},
                   {E_DIR, "a/b/c", NULL, NULL},
                   {E_SYMLINK, "a/b/c/d", "../../..", NULL},
                   {E_SYMLINK, "x", "a/b/c/d/../../..", NULL}};
  g_autofree char *url = write_archive(f->tmp, "chain.tar", FALSE, chain, G_N_ELEMENTS(chain));
  expect_failure(f, NULL, url, NULL, OAKUK_EPERM, "symlink x -> a/b/c/d/../../.. leaves the image",
                 "through the link a/b/c/d");
  /* The same links the other way round: x is harmless when it arrives, and the later link makes it
   * leave the tree; the check of the finished tree names it. */
  Entry later[] = {{E_FILE, "kernel", NULL, kernel},
                   {E_SYMLINK, "x", "a/b/c/d/../../..", NULL},
                   {E_DIR, "a/b/c", NULL, NULL},
                   {E_SYMLINK, "a/b/c/d", "../../..", NULL}};
  g_autofree char *url2 = write_archive(f->tmp, "later.tar", FALSE, later, G_N_ELEMENTS(later));
  expect_failure(f, NULL, url2, NULL, OAKUK_EPERM, "symlink x -> a/b/c/d/../../.. leaves the image", NULL);
  /* An entry written through such a link is refused before anything is written. */
  Entry write[] = {{E_FILE, "kernel", NULL, kernel},
                   {E_SYMLINK, "x", "a/b/c/d/../../..", NULL},
                   {E_DIR, "a/b/c", NULL, NULL},
                   {E_SYMLINK, "a/b/c/d", "../../..", NULL},
                   {E_FILE, "x/evil", "x", NULL}};
  g_autofree char *url3 = write_archive(f->tmp, "write.tar", FALSE, write, G_N_ELEMENTS(write));
  expect_failure(f, NULL, url3, NULL, OAKUK_EPERM, "entry x/evil leads out of the tree",
                 "through the link a/b/c/d");
  g_autofree char *evil = g_build_filename(f->tmp, "evil", NULL);
  g_assert_false(g_file_test(evil, G_FILE_TEST_EXISTS));
  /* Loops are refused too (the kernel gives up after 40 links). */
  Entry loop[] = {{E_FILE, "kernel", NULL, kernel}, {E_SYMLINK, "p", "q", NULL}, {E_SYMLINK, "q", "p", NULL}};
  g_autofree char *url4 = write_archive(f->tmp, "loop.tar", FALSE, loop, G_N_ELEMENTS(loop));
  expect_failure(f, NULL, url4, NULL, OAKUK_EPERM, "levels of symbolic links", NULL);
}

/* Entries and hard links through a link that stays inside land where the kernel would put them. */
static void test_through_link(Fixture *f, gconstpointer data) {
  g_autoptr(GBytes) kernel = fake_multiboot(NULL);
  Entry through[] = {{E_FILE, "kernel", NULL, kernel},       {E_SYMLINK, "lnk", "files", NULL},
                     {E_DIR, "files", NULL, NULL},           {E_FILE, "lnk/x", "x", NULL},
                     {E_DIR, "a/b/c", NULL, NULL},           {E_SYMLINK, "a/b/c/d", "../../..", NULL},
                     {E_FILE, "a/b/c/d/files/y", "y", NULL}, {E_HARDLINK, "files/h", "lnk/x", NULL}};
  g_autofree char *url = write_archive(f->tmp, "through.tar", FALSE, through, G_N_ELEMENTS(through));
  oakuk_image_cache *c = new_cache(f, NULL);
  oakuk_error *err = NULL;
  oakuk_image *img = oakuk_image_cache_fetch_sync(c, url, NULL, NULL, NULL, &err);
  if (err)
    g_error("%s", oakuk_error_message(err));
  const char *files = oakuk_image_files_dir(img);
  g_autofree char *x = g_build_filename(files, "x", NULL);
  g_autofree char *y = g_build_filename(files, "y", NULL);
  g_autofree char *h = g_build_filename(files, "h", NULL);
  struct stat sx, sh, sl;
  g_assert_cmpint(lstat(x, &sx), ==, 0);
  g_assert_true(S_ISREG(sx.st_mode));
  g_assert_cmpint(lstat(h, &sh), ==, 0);
  g_assert_cmpint(sx.st_ino, ==, sh.st_ino);
  g_assert_true(g_file_test(y, G_FILE_TEST_IS_REGULAR));
  g_autofree char *lnk = g_build_filename(oakuk_image_dir(img), "tree", "lnk", NULL);
  g_assert_cmpint(lstat(lnk, &sl), ==, 0);
  g_assert_true(S_ISLNK(sl.st_mode));
  oakuk_image_unref(img);
  oakuk_image_cache_unref(c);
}

static gboolean table_has(GHashTable *t, const char *k) {
  return g_hash_table_contains(t, k);
}

static char *table_readlink(const char *rel, gpointer data) {
  return table_has(data, rel) ? g_strdup(g_hash_table_lookup(data, rel)) : NULL;
}

static void expect_resolve(GHashTable *links, const char *dir, const char *path, gboolean follow,
                           gboolean abs_inside, OakukArchiveResolve want, const char *want_path,
                           const char *want_via) {
  g_autofree char *got = NULL, *via = NULL;
  OakukArchiveResolve r =
      oakuk_archive_resolve(dir, path, follow, abs_inside, table_readlink, links, &got, &via);
  if (r != want || g_strcmp0(got, want_path) != 0 || g_strcmp0(via, want_via) != 0)
    g_error("resolve %s in \"%s\": got %d \"%s\" via %s, want %d \"%s\" via %s", path, dir, r, got, via, want,
            want_path, want_via);
}

/* The resolver alone, against a table of links: the kernel's walk, component by component. */
static void test_resolve(void) {
  g_autoptr(GHashTable) l = g_hash_table_new(g_str_hash, g_str_equal);
  g_hash_table_insert(l, "a/b", "..");
  g_hash_table_insert(l, "lib", "usr/lib");
  g_hash_table_insert(l, "abs", "/etc");
  g_hash_table_insert(l, "self", ".");
  g_hash_table_insert(l, "p", "q");
  g_hash_table_insert(l, "q", "p");
  g_hash_table_insert(l, "deep/up", "../..");
  expect_resolve(l, "", "a/b/c", FALSE, FALSE, OAKUK_ARCHIVE_RESOLVE_OK, "c", NULL);
  expect_resolve(l, "", "a/b/..", TRUE, FALSE, OAKUK_ARCHIVE_RESOLVE_ESCAPES, NULL, "a/b");
  expect_resolve(l, "x", "../lib/libc.so", TRUE, FALSE, OAKUK_ARCHIVE_RESOLVE_OK, "usr/lib/libc.so", NULL);
  expect_resolve(l, "x/y", "../lib/libc.so", TRUE, FALSE, OAKUK_ARCHIVE_RESOLVE_OK, "x/lib/libc.so", NULL);
  expect_resolve(l, "", "lib", FALSE, FALSE, OAKUK_ARCHIVE_RESOLVE_OK, "lib", NULL);
  expect_resolve(l, "", "lib", TRUE, FALSE, OAKUK_ARCHIVE_RESOLVE_OK, "usr/lib", NULL);
  expect_resolve(l, "", "abs/passwd", FALSE, FALSE, OAKUK_ARCHIVE_RESOLVE_ABSOLUTE, NULL, "abs");
  expect_resolve(l, "", "abs/passwd", FALSE, TRUE, OAKUK_ARCHIVE_RESOLVE_OK, "etc/passwd", NULL);
  expect_resolve(l, "", "/x", TRUE, FALSE, OAKUK_ARCHIVE_RESOLVE_ABSOLUTE, NULL, NULL);
  expect_resolve(l, "", "/../x", TRUE, TRUE, OAKUK_ARCHIVE_RESOLVE_ESCAPES, NULL, NULL);
  expect_resolve(l, "", "self/self/a", TRUE, FALSE, OAKUK_ARCHIVE_RESOLVE_OK, "a", NULL);
  expect_resolve(l, "", "p", TRUE, FALSE, OAKUK_ARCHIVE_RESOLVE_LOOP, NULL, "p");
  expect_resolve(l, "", "p", FALSE, FALSE, OAKUK_ARCHIVE_RESOLVE_OK, "p", NULL);
  expect_resolve(l, "", "deep/up", TRUE, FALSE, OAKUK_ARCHIVE_RESOLVE_ESCAPES, NULL, "deep/up");
  expect_resolve(l, "", "deep/x/../up/..", FALSE, FALSE, OAKUK_ARCHIVE_RESOLVE_ESCAPES, NULL, "deep/up");
}

static void test_hardlink_escape(Fixture *f, gconstpointer data) {
  g_autoptr(GBytes) kernel = fake_multiboot(NULL);
  Entry out[] = {{E_FILE, "kernel", NULL, kernel}, {E_HARDLINK, "files/h", "../../etc/shadow", NULL}};
  g_autofree char *url = write_archive(f->tmp, "hl.tar", FALSE, out, G_N_ELEMENTS(out));
  expect_failure(f, NULL, url, NULL, OAKUK_EPERM, "hard link files/h: target ../../etc/shadow", "'..'");
  Entry missing[] = {{E_FILE, "kernel", NULL, kernel}, {E_HARDLINK, "files/h", "nothere", NULL}};
  g_autofree char *url2 = write_archive(f->tmp, "hl2.tar", FALSE, missing, G_N_ELEMENTS(missing));
  expect_failure(f, NULL, url2, NULL, OAKUK_EPERM, "hard link files/h points to nothere", NULL);
}

static void test_device(Fixture *f, gconstpointer data) {
  g_autoptr(GBytes) kernel = fake_multiboot(NULL);
  Entry dev[] = {{E_FILE, "kernel", NULL, kernel}, {E_CHARDEV, "files/null", NULL, NULL}};
  g_autofree char *url = write_archive(f->tmp, "dev.tar", FALSE, dev, G_N_ELEMENTS(dev));
  expect_failure(f, NULL, url, NULL, OAKUK_EPERM, "files/null is a character device", NULL);
  Entry fifo[] = {{E_FILE, "kernel", NULL, kernel}, {E_FIFO, "files/pipe", NULL, NULL}};
  g_autofree char *url2 = write_archive(f->tmp, "fifo.tar", FALSE, fifo, G_N_ELEMENTS(fifo));
  expect_failure(f, NULL, url2, NULL, OAKUK_EPERM, "files/pipe is a fifo", NULL);
}

static void test_sha256(Fixture *f, gconstpointer data) {
  g_autoptr(GBytes) kernel = fake_multiboot(NULL);
  Entry e[] = {{E_FILE, "kernel", NULL, kernel}};
  g_autofree char *url = write_archive(f->tmp, "sha.tar.gz", TRUE, e, G_N_ELEMENTS(e));
  g_autofree char *sha = sha256_of_uri(url);
  const char *wrong = "0000000000000000000000000000000000000000000000000000000000000000";
  g_autofree char *msg = g_strdup_printf("sha256 mismatch for %s: expected %s, got %s", url, wrong, sha);
  expect_failure(f, NULL, url, wrong, OAKUK_EVERIFY, msg, NULL);
  expect_failure(f, NULL, url, "abc", OAKUK_EINVAL, "64 hexadecimal digits", NULL);

  /* The right digest (any case) is accepted. */
  g_autofree char *upper = g_ascii_strup(sha, -1);
  oakuk_image_cache *c = new_cache(f, NULL);
  oakuk_error *err = NULL;
  oakuk_image *img = oakuk_image_cache_fetch_sync(c, url, upper, NULL, NULL, &err);
  g_assert_null(err);
  g_assert_cmpstr(oakuk_image_sha256(img), ==, sha);
  oakuk_image_unref(img);
  oakuk_image_cache_unref(c);
}

static void test_oversize(Fixture *f, gconstpointer data) {
  g_autoptr(GBytes) kernel = fake_multiboot(NULL);
  g_autofree char *big = g_strnfill(10000, 'x');
  Entry e[] = {{E_FILE, "kernel", NULL, kernel}, {E_FILE, "files/big", big, NULL}};
  g_autofree char *url = write_archive(f->tmp, "big.tar.gz", TRUE, e, G_N_ELEMENTS(e));
  oakuk_image_cache_options o = OAKUK_IMAGE_CACHE_OPTIONS_INIT;
  o.max_unpacked_bytes = 5000;
  expect_failure(f, &o, url, NULL, OAKUK_EINVAL, "more than 5000 bytes", "files/big");
  oakuk_image_cache_options d = OAKUK_IMAGE_CACHE_OPTIONS_INIT;
  d.max_download_bytes = 100;
  expect_failure(f, &d, url, NULL, OAKUK_EINVAL, "exceeds the limit of 100 bytes", url);
}

static void test_too_many_entries(Fixture *f, gconstpointer data) {
  g_autoptr(GBytes) kernel = fake_multiboot(NULL);
  Entry e[] = {{E_FILE, "kernel", NULL, kernel},
               {E_FILE, "a", "1", NULL},
               {E_FILE, "b", "2", NULL},
               {E_FILE, "c", "3", NULL}};
  g_autofree char *url = write_archive(f->tmp, "many.tar", FALSE, e, G_N_ELEMENTS(e));
  oakuk_image_cache_options o = OAKUK_IMAGE_CACHE_OPTIONS_INIT;
  o.max_entries = 3;
  expect_failure(f, &o, url, NULL, OAKUK_EINVAL, "more than 3 entries", "(at c)");
}

static void test_truncated(Fixture *f, gconstpointer data) {
  g_autoptr(GBytes) kernel = fake_multiboot(NULL);
  /* Incompressible content so the gzip stream is long and cutting it loses data. */
  GByteArray *noise = g_byte_array_new();
  GRand *r = g_rand_new_with_seed(7);
  for (int i = 0; i < 200000; i++) {
    guint8 b = (guint8)g_rand_int(r);
    g_byte_array_append(noise, &b, 1);
  }
  g_rand_free(r);
  g_autoptr(GBytes) nb = g_byte_array_free_to_bytes(noise);
  Entry e[] = {{E_FILE, "kernel", NULL, kernel}, {E_FILE, "files/noise", NULL, nb}};
  g_autofree char *url = write_archive(f->tmp, "trunc.tar.gz", TRUE, e, G_N_ELEMENTS(e));
  g_autofree char *path = g_filename_from_uri(url, NULL, NULL);
  struct stat st;
  g_assert_cmpint(stat(path, &st), ==, 0);
  g_assert_cmpint(truncate(path, st.st_size / 2), ==, 0);
  expect_failure(f, NULL, url, NULL, OAKUK_EINVAL, "corrupt or truncated archive", "files/noise");

  g_autoptr(GBytes) junk = g_bytes_new_static("this is not an image at all, just text\n", 39);
  g_autofree char *url2 = write_file(f->tmp, "junk.bin", junk);
  expect_failure(f, NULL, url2, NULL, OAKUK_EINVAL, "corrupt or truncated archive", url2);
}

static void test_bare_kernel(Fixture *f, gconstpointer data) {
  g_autoptr(GBytes) kernel = fake_elf(183, "xx Unikraft Telesto 0.15.0 xx");
  g_autofree char *url = write_file(f->tmp, "kernel.elf", kernel);
  oakuk_image_cache *c = new_cache(f, NULL);
  oakuk_error *err = NULL;
  oakuk_image *img = oakuk_image_cache_fetch_sync(c, url, NULL, NULL, NULL, &err);
  g_assert_null(err);
  g_assert_cmpstr(oakuk_image_arch(img), ==, "arm64");
  g_assert_cmpstr(oakuk_image_flavor(img), ==, "unikraft");
  g_assert_cmpstr(oakuk_image_version(img), ==, "0.15.0");
  g_assert_null(oakuk_image_initrd(img));
  g_assert_null(oakuk_image_files_dir(img));
  g_assert_true(g_str_has_suffix(oakuk_image_kernel(img), "/kernel"));
  g_assert_true(g_file_test(oakuk_image_kernel(img), G_FILE_TEST_IS_REGULAR));
  /* Readable by QEMU's unprivileged user (the download itself was private). */
  struct stat st;
  g_assert_cmpint(stat(oakuk_image_kernel(img), &st), ==, 0);
  g_assert_cmpuint(st.st_mode & 0444, ==, 0444);
  oakuk_image_unref(img);
  oakuk_image_cache_unref(c);
}

static void test_missing_and_bad_url(Fixture *f, gconstpointer data) {
  g_autofree char *url = g_strdup_printf("file://%s/does-not-exist.tar", f->tmp);
  expect_failure(f, NULL, url, NULL, OAKUK_ENOTFOUND, url, NULL);
  expect_failure(f, NULL, "ftp://example.org/x.tar", NULL, OAKUK_EINVAL, "ftp://example.org/x.tar",
                 "http://");
  expect_failure(f, NULL, "not a url", NULL, OAKUK_EINVAL, "not a url", NULL);
}

static void count_progress(int64_t bytes, int64_t total, void *user_data) {
  int64_t *last = user_data;
  g_assert_cmpint(bytes, >=, last[0]);
  last[0] = bytes;
  last[1] = total;
  last[2]++;
}

static void test_reuse(Fixture *f, gconstpointer data) {
  g_autoptr(GBytes) kernel = fake_multiboot(NULL);
  Entry e[] = {{E_FILE, "kernel", NULL, kernel}, {E_FILE, "files/a", "a", NULL}};
  g_autofree char *url = write_archive(f->tmp, "reuse.tar.gz", TRUE, e, G_N_ELEMENTS(e));
  g_autofree char *sha = sha256_of_uri(url);
  g_autofree char *path = g_filename_from_uri(url, NULL, NULL);
  struct stat st;
  g_assert_cmpint(stat(path, &st), ==, 0);
  oakuk_image_cache *c = new_cache(f, NULL);
  int64_t prog[3] = {0, 0, 0};
  oakuk_error *err = NULL;
  oakuk_image *img = oakuk_image_cache_fetch_sync(c, url, sha, count_progress, prog, &err);
  g_assert_null(err);
  g_assert_cmpint(prog[2], >=, 2);
  g_assert_cmpint(prog[0], ==, st.st_size);
  g_assert_cmpint(prog[1], ==, st.st_size);
  g_autofree char *dir = g_strdup(oakuk_image_dir(img));
  oakuk_image_unref(img);
  oakuk_image_cache_unref(c);

  /* A stale work dir from a crash is removed, the finished entry is reused without reading the
   * source (now gone), and a different expected digest is a different entry. */
  g_autofree char *stale = g_build_filename(f->cache, ".tmp-crashed", NULL);
  g_assert_cmpint(g_mkdir(stale, 0700), ==, 0);
  g_assert_cmpint(g_unlink(path), ==, 0);
  c = new_cache(f, NULL);
  g_assert_false(g_file_test(stale, G_FILE_TEST_EXISTS));
  prog[2] = 0;
  img = oakuk_image_cache_fetch_sync(c, url, sha, count_progress, prog, &err);
  g_assert_null(err);
  g_assert_cmpstr(oakuk_image_dir(img), ==, dir);
  g_assert_cmpint(prog[2], ==, 0);
  oakuk_image_unref(img);
  img = oakuk_image_cache_fetch_sync(c, url, NULL, NULL, NULL, &err);
  g_assert_null(img);
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_ENOTFOUND);
  oakuk_error_free(err);
  oakuk_image_cache_unref(c);
}

typedef struct {
  GMainLoop *loop;
  GThread *main_thread;
  int progress_calls;
  gboolean done_seen;
  gboolean progress_after_done;
  oakuk_image *image;
  char *error;
} AsyncState;

static void async_progress(int64_t bytes, int64_t total, void *user_data) {
  AsyncState *s = user_data;
  g_assert_true(g_thread_self() == s->main_thread);
  s->progress_calls++;
  if (s->done_seen)
    s->progress_after_done = TRUE;
}

static void async_done(oakuk_image *image, oakuk_error *error, void *user_data) {
  AsyncState *s = user_data;
  g_assert_true(g_thread_self() == s->main_thread);
  s->done_seen = TRUE;
  s->image = image ? oakuk_image_ref(image) : NULL;
  s->error = error ? g_strdup(oakuk_error_message(error)) : NULL;
  g_main_loop_quit(s->loop);
}

static void async_never(oakuk_image *image, oakuk_error *error, void *user_data) {
  g_error("done called for a refused request");
}

static void test_async(Fixture *f, gconstpointer data) {
  g_autoptr(GBytes) kernel = fake_multiboot(NULL);
  Entry e[] = {{E_FILE, "kernel", NULL, kernel}};
  g_autofree char *url = write_archive(f->tmp, "async.tar.gz", TRUE, e, G_N_ELEMENTS(e));
  oakuk_image_cache *c = new_cache(f, NULL);
  AsyncState s = {.loop = g_main_loop_new(NULL, FALSE), .main_thread = g_thread_self()};
  oakuk_error *err = NULL;
  g_assert_cmpint(oakuk_image_cache_fetch(c, url, NULL, async_progress, async_done, &s, &err), ==, 0);
  g_main_loop_run(s.loop);
  g_assert_null(s.error);
  g_assert_nonnull(s.image);
  g_assert_cmpint(s.progress_calls, >=, 1);
  /* Let anything still queued run: no progress may follow done. */
  while (g_main_context_iteration(NULL, FALSE))
    ;
  g_assert_false(s.progress_after_done);
  oakuk_image_unref(s.image);

  /* An invalid request fails at once and never calls done. */
  g_assert_cmpint(oakuk_image_cache_fetch(c, "gopher://x/y", NULL, NULL, async_done, &s, &err), ==,
                  OAKUK_EINVAL);
  g_assert_nonnull(err);
  oakuk_error_free(err);

  /* A failing fetch reports through done with the error. */
  s.done_seen = FALSE;
  s.image = NULL;
  g_autofree char *missing = g_strdup_printf("file://%s/missing.tar", f->tmp);
  g_assert_cmpint(oakuk_image_cache_fetch(c, missing, NULL, NULL, async_done, &s, NULL), ==, 0);
  g_main_loop_run(s.loop);
  g_assert_null(s.image);
  g_assert_nonnull(s.error);
  g_assert_nonnull(strstr(s.error, missing));
  g_free(s.error);
  g_main_loop_unref(s.loop);
  oakuk_image_cache_unref(c);
}

/* file:// is off unless file_allowed_dirs names directories; inside them, only regular files are
 * read, after resolving symlinks, and a fifo never blocks the fetch. */
static void test_file_policy(Fixture *f, gconstpointer data) {
  g_autoptr(GBytes) kernel = fake_multiboot(NULL);
  g_autofree char *allowed = g_build_filename(f->tmp, "allowed", NULL);
  g_autofree char *elsewhere = g_build_filename(f->tmp, "elsewhere", NULL);
  g_assert_cmpint(g_mkdir(allowed, 0755), ==, 0);
  g_assert_cmpint(g_mkdir(elsewhere, 0755), ==, 0);
  g_autofree char *inside = write_file(allowed, "kernel", kernel);
  g_autofree char *outside = write_file(elsewhere, "kernel", kernel);

  /* The default: every file:// URL refused, at once, naming the option; done is never called. */
  oakuk_error *err = NULL;
  oakuk_image_cache *c = oakuk_image_cache_new(f->cache, NULL, &err);
  g_assert_nonnull(c);
  g_assert_null(oakuk_image_cache_fetch_sync(c, inside, NULL, NULL, NULL, &err));
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_EPERM);
  g_assert_nonnull(strstr(oakuk_error_message(err), inside));
  g_assert_nonnull(strstr(oakuk_error_message(err), "file_allowed_dirs"));
  g_clear_pointer(&err, oakuk_error_free);
  g_assert_cmpint(oakuk_image_cache_fetch(c, inside, NULL, NULL, async_never, NULL, &err), ==, OAKUK_EPERM);
  g_clear_pointer(&err, oakuk_error_free);
  oakuk_image_cache_unref(c);

  oakuk_image_cache_options o = OAKUK_IMAGE_CACHE_OPTIONS_INIT;
  g_autofree char *list = g_strdup_printf("/nonexistent-oakuk:%s", allowed);
  o.file_allowed_dirs = list;
  c = new_cache(f, &o);
  oakuk_image *img = oakuk_image_cache_fetch_sync(c, inside, NULL, NULL, NULL, &err);
  g_assert_null(err);
  oakuk_image_unref(img);
  struct {
    const char *url_or_name;
    const char *needle;
    int32_t code;
  } refused[] = {
      {"outside", "outside the directories file_allowed_dirs allows", OAKUK_EPERM},
      {"dotdot", "outside the directories", OAKUK_EPERM},
      {"symlink", "resolves to", OAKUK_EPERM},
      {"fifo", "is a fifo", OAKUK_EPERM},
      {"dir", "is a directory", OAKUK_EPERM},
      {"host", "a local file", OAKUK_EINVAL},
  };
  g_autofree char *fifo = g_build_filename(allowed, "pipe", NULL);
  g_assert_cmpint(mkfifo(fifo, 0600), ==, 0);
  g_autofree char *link = g_build_filename(allowed, "link", NULL);
  g_autofree char *outside_path = g_filename_from_uri(outside, NULL, NULL);
  g_assert_cmpint(symlink(outside_path, link), ==, 0);
  g_autofree char *sub = g_build_filename(allowed, "sub", NULL);
  g_assert_cmpint(g_mkdir(sub, 0755), ==, 0);
  for (gsize k = 0; k < G_N_ELEMENTS(refused); k++) {
    g_autofree char *url = NULL;
    const char *what = refused[k].url_or_name;
    if (strcmp(what, "outside") == 0)
      url = g_strdup(outside);
    else if (strcmp(what, "dotdot") == 0)
      url = g_strdup_printf("file://%s/../elsewhere/kernel", allowed);
    else if (strcmp(what, "symlink") == 0)
      url = g_filename_to_uri(link, NULL, NULL);
    else if (strcmp(what, "fifo") == 0)
      url = g_filename_to_uri(fifo, NULL, NULL);
    else if (strcmp(what, "dir") == 0)
      url = g_filename_to_uri(sub, NULL, NULL);
    else
      url = g_strdup_printf("file://otherhost%s/kernel", allowed);
    gint64 t0 = g_get_monotonic_time();
    g_assert_null(oakuk_image_cache_fetch_sync(c, url, NULL, NULL, NULL, &err));
    if (oakuk_error_code(err) != refused[k].code || !strstr(oakuk_error_message(err), refused[k].needle))
      g_error("%s: got %d \"%s\", want %d \"%s\"", what, oakuk_error_code(err), oakuk_error_message(err),
              refused[k].code, refused[k].needle);
    /* Refused at once: nothing waits for a writer on the fifo. */
    g_assert_cmpint(g_get_monotonic_time() - t0, <, G_USEC_PER_SEC);
    g_clear_pointer(&err, oakuk_error_free);
  }
  oakuk_image_cache_unref(c);

  o.file_allowed_dirs = "relative/dir";
  g_assert_null(oakuk_image_cache_new(f->cache, &o, &err));
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_EINVAL);
  g_assert_cmpstr(oakuk_error_path(err), ==, "file_allowed_dirs");
  oakuk_error_free(err);
}

/* A version-1 caller's struct is shorter: init fills only that much, and the cache reads only
 * that much (the version-2 fields take their defaults: file:// refused). */
typedef struct {
  unsigned int version;
  uint64_t max_download_bytes, max_unpacked_bytes, max_entries;
  uint32_t timeout_s, max_redirects;
} OptionsV1;

static void test_options_v1(Fixture *f, gconstpointer data) {
  struct {
    OptionsV1 o;
    guint8 guard[64];
  } v1;
  memset(&v1, 0xa5, sizeof v1);
  g_assert_cmpint(oakuk_image_cache_options_init((oakuk_image_cache_options *)&v1.o, 1), ==, 0);
  g_assert_cmpuint(v1.o.version, ==, 1);
  g_assert_cmpuint(v1.o.timeout_s, ==, 300);
  g_assert_cmpuint(v1.o.max_redirects, ==, 5);
  for (gsize k = 0; k < sizeof v1.guard; k++)
    g_assert_cmpuint(v1.guard[k], ==, 0xa5);
  v1.o.max_entries = 7;
  oakuk_error *err = NULL;
  oakuk_image_cache *c = oakuk_image_cache_new(f->cache, (oakuk_image_cache_options *)&v1.o, &err);
  g_assert_null(err);
  g_autoptr(GBytes) kernel = fake_multiboot(NULL);
  g_autofree char *url = write_file(f->tmp, "kernel", kernel);
  g_assert_null(oakuk_image_cache_fetch_sync(c, url, NULL, NULL, NULL, &err));
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_EPERM);
  oakuk_error_free(err);
  oakuk_image_cache_unref(c);
}

static void test_options(void) {
  oakuk_image_cache_options o;
  g_assert_cmpint(oakuk_image_cache_options_init(&o, 99), ==, OAKUK_EINVAL);
  g_assert_cmpint(oakuk_image_cache_options_init(&o, OAKUK_IMAGE_CACHE_OPTIONS_VERSION), ==, 0);
  g_assert_cmpuint(o.max_download_bytes, ==, G_GUINT64_CONSTANT(1) << 30);
  g_assert_cmpuint(o.max_unpacked_bytes, ==, G_GUINT64_CONSTANT(4) << 30);
  g_assert_cmpuint(o.max_entries, ==, 100000);
  g_assert_cmpuint(o.timeout_s, ==, 300);
  g_assert_cmpuint(o.max_redirects, ==, 5);
  g_assert_cmpuint(o.connect_timeout_s, ==, 10);
  g_assert_cmpuint(o.stall_timeout_s, ==, 30);
  g_assert_null(o.file_allowed_dirs);
  g_autofree char *tmp = g_dir_make_tmp("oakuk-image-opt-XXXXXX", NULL);
  o.max_entries = 0;
  oakuk_error *err = NULL;
  g_assert_null(oakuk_image_cache_new(tmp, &o, &err));
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_EINVAL);
  g_assert_nonnull(strstr(oakuk_error_message(err), "max_entries"));
  oakuk_error_free(err);
  g_rmdir(tmp);
}

/* ---------------------------------------------------------------------------------------------- */
/* Options: version 2 */

/* A version-2 caller's struct ends at file_allowed_dirs: the version-3 fields take their defaults. */
typedef struct {
  unsigned int version;
  uint64_t max_download_bytes, max_unpacked_bytes, max_entries;
  uint32_t timeout_s, max_redirects, connect_timeout_s, stall_timeout_s;
  const char *file_allowed_dirs;
} OptionsV2;

static void test_options_v2(Fixture *f, gconstpointer data) {
  struct {
    OptionsV2 o;
    guint8 guard[64];
  } v2;
  memset(&v2, 0xa5, sizeof v2);
  g_assert_cmpint(oakuk_image_cache_options_init((oakuk_image_cache_options *)&v2.o, 2), ==, 0);
  g_assert_cmpuint(v2.o.version, ==, 2);
  g_assert_cmpuint(v2.o.stall_timeout_s, ==, 30);
  g_assert_null(v2.o.file_allowed_dirs);
  for (gsize k = 0; k < sizeof v2.guard; k++)
    g_assert_cmpuint(v2.guard[k], ==, 0xa5);
  v2.o.file_allowed_dirs = f->tmp;
  oakuk_error *err = NULL;
  oakuk_image_cache *c = oakuk_image_cache_new(f->cache, (oakuk_image_cache_options *)&v2.o, &err);
  g_assert_null(err);
  g_autoptr(GBytes) kernel = fake_multiboot(NULL);
  g_autofree char *url = write_file(f->tmp, "kernel", kernel);
  oakuk_image *img = oakuk_image_cache_fetch_sync(c, url, NULL, NULL, NULL, &err);
  g_assert_null(err);
  oakuk_image_unref(img);
  oakuk_image_cache_unref(c);
  oakuk_image_cache_options o;
  g_assert_cmpint(oakuk_image_cache_options_init(&o, OAKUK_IMAGE_CACHE_OPTIONS_VERSION), ==, 0);
  g_assert_cmpuint(o.max_cache_bytes, ==, 0);
  g_assert_null(o.insecure_registries);
}

/* ---------------------------------------------------------------------------------------------- */
/* Housekeeping */

/* An image of about size bytes of incompressible files, different for every seed. */
static char *sized_image(Fixture *f, const char *name, guint32 seed, gsize size) {
  g_autoptr(GBytes) kernel = fake_multiboot(NULL);
  GByteArray *b = g_byte_array_sized_new((guint)size);
  GRand *r = g_rand_new_with_seed(seed);
  for (gsize k = 0; k < size; k++) {
    guint8 v = (guint8)g_rand_int(r);
    g_byte_array_append(b, &v, 1);
  }
  g_rand_free(r);
  g_autoptr(GBytes) blob = g_byte_array_free_to_bytes(b);
  Entry e[] = {{E_FILE, "kernel", NULL, kernel}, {E_FILE, "files/blob", NULL, blob}};
  return write_archive(f->tmp, name, FALSE, e, G_N_ELEMENTS(e));
}

static oakuk_image *fetch_ok(oakuk_image_cache *c, const char *url) {
  oakuk_error *err = NULL;
  oakuk_image *img = oakuk_image_cache_fetch_sync(c, url, NULL, NULL, NULL, &err);
  if (err)
    g_error("fetch %s: %s", url, oakuk_error_message(err));
  return img;
}

/* An image no one uses is evicted least recently used first; one in use never is; the end of a use
 * counts as a use. */
static void test_eviction(Fixture *f, gconstpointer data) {
  const gsize size = 100 * 1024;
  oakuk_image_cache_options o = OAKUK_IMAGE_CACHE_OPTIONS_INIT;
  o.max_cache_bytes = 5 * size / 2; /* two images fit, three do not */
  oakuk_image_cache *c = new_cache(f, &o);
  g_autofree char *ua = sized_image(f, "a.tar", 1, size), *ub = sized_image(f, "b.tar", 2, size);
  g_autofree char *uc = sized_image(f, "c.tar", 3, size), *ud = sized_image(f, "d.tar", 4, size);
  oakuk_image *a = fetch_ok(c, ua); /* held: in use */
  oakuk_image *b = fetch_ok(c, ub);
  g_autofree char *bdir = g_strdup(oakuk_image_dir(b));
  oakuk_image_unref(b);
  g_usleep(20000);
  oakuk_image *cc = fetch_ok(c, uc);
  g_autofree char *cdir = g_strdup(oakuk_image_dir(cc));
  /* A is the least recently used, but in use: B goes. */
  g_assert_false(g_file_test(bdir, G_FILE_TEST_EXISTS));
  g_assert_true(g_file_test(oakuk_image_dir(a), G_FILE_TEST_EXISTS));
  g_assert_true(g_file_test(cdir, G_FILE_TEST_EXISTS));
  g_assert_cmpuint(oakuk_image_cache_size(c), <=, o.max_cache_bytes);
  oakuk_image_unref(cc);
  g_usleep(20000);
  g_autofree char *adir = g_strdup(oakuk_image_dir(a));
  oakuk_image_unref(a); /* A's use ends after C's: C is now the least recently used */
  g_usleep(20000);
  oakuk_image *d = fetch_ok(c, ud);
  g_assert_false(g_file_test(cdir, G_FILE_TEST_EXISTS));
  g_assert_true(g_file_test(adir, G_FILE_TEST_EXISTS));
  g_assert_true(g_file_test(oakuk_image_dir(d), G_FILE_TEST_EXISTS));
  /* Over the limit with everything in use: nothing is evicted, the fetch still succeeds. */
  oakuk_image *a2 = fetch_ok(c, ua);
  oakuk_image *b2 = fetch_ok(c, ub);
  g_assert_true(g_file_test(oakuk_image_dir(d), G_FILE_TEST_EXISTS));
  g_assert_true(g_file_test(adir, G_FILE_TEST_EXISTS));
  g_assert_cmpuint(oakuk_image_cache_size(c), >, o.max_cache_bytes);
  /* prune: every unused image, not the ones in use. */
  oakuk_image_unref(b2);
  uint64_t freed = 0;
  oakuk_error *err = NULL;
  g_assert_cmpint(oakuk_image_cache_prune(&freed, c, 0, &err), ==, 0);
  g_assert_null(err);
  g_assert_cmpuint(freed, >=, size);
  g_assert_true(g_file_test(oakuk_image_dir(d), G_FILE_TEST_EXISTS));
  g_assert_true(g_file_test(oakuk_image_dir(a2), G_FILE_TEST_EXISTS));
  g_assert_cmpuint(oakuk_image_cache_size(c), <, 5 * size / 2);
  g_autofree char *ddir = g_strdup(oakuk_image_dir(d));
  oakuk_image_unref(d);
  oakuk_image_unref(a2);
  g_assert_cmpint(oakuk_image_cache_prune(NULL, c, 0, &err), ==, 0);
  g_assert_false(g_file_test(ddir, G_FILE_TEST_EXISTS));
  g_assert_cmpuint(oakuk_image_cache_size(c), ==, 0);
  oakuk_image_cache_unref(c);
}

/* A file:// image without sha256 is read again when the file changed, and only then. */
static void test_revalidate_file(Fixture *f, gconstpointer data) {
  g_autofree char *url = sized_image(f, "x.tar", 7, 1000);
  oakuk_image_cache *c = new_cache(f, NULL);
  int64_t prog[3] = {0, 0, 0};
  oakuk_error *err = NULL;
  oakuk_image *one = oakuk_image_cache_fetch_sync(c, url, NULL, count_progress, prog, &err);
  g_assert_null(err);
  g_assert_cmpint(prog[2], >, 0);
  memset(prog, 0, sizeof prog);
  oakuk_image *same = oakuk_image_cache_fetch_sync(c, url, NULL, count_progress, prog, &err);
  g_assert_null(err);
  g_assert_cmpint(prog[2], ==, 0); /* not read */
  g_assert_cmpstr(oakuk_image_dir(same), ==, oakuk_image_dir(one));
  oakuk_image_unref(same);
  g_autofree char *again = sized_image(f, "x.tar", 8, 1000);
  oakuk_image *changed = oakuk_image_cache_fetch_sync(c, url, NULL, count_progress, prog, &err);
  g_assert_null(err);
  g_assert_cmpint(prog[2], >, 0);
  g_assert_cmpstr(oakuk_image_dir(changed), !=, oakuk_image_dir(one));
  g_assert_cmpstr(oakuk_image_sha256(changed), ==, sha256_of_uri(url));
  /* The old image, still in use, is still there. */
  g_assert_true(g_file_test(oakuk_image_kernel(one), G_FILE_TEST_IS_REGULAR));
  oakuk_image_unref(changed);
  oakuk_image_unref(one);
  oakuk_image_cache_unref(c);
}

/* ---------------------------------------------------------------------------------------------- */
/* OCI images from oci-archive: tarballs written by the packer */

static char *write_bytes(const char *dir, const char *name, GBytes *b) {
  g_autofree char *uri = write_file(dir, name, b);
  return g_filename_from_uri(uri, NULL, NULL);
}

static oakuk_oci_package *test_package(Fixture *f) {
  g_autoptr(GBytes) kx = fake_multiboot("Unikraft Telesto 0.16.3 ... ");
  g_autoptr(GBytes) ka = fake_elf(183, "Linux version 6.1.0-test (x) #1");
  g_autoptr(GBytes) ir = g_bytes_new_static("INITRD", 6);
  g_autofree char *kxp = write_bytes(f->tmp, "k-x86", kx);
  g_autofree char *kap = write_bytes(f->tmp, "k-arm", ka);
  g_autofree char *irp = write_bytes(f->tmp, "initrd-x86", ir);
  g_autofree char *files = g_build_filename(f->tmp, "files", "sub", NULL);
  g_assert_cmpint(g_mkdir_with_parents(files, 0755), ==, 0);
  g_autofree char *hello = g_build_filename(files, "hello.txt", NULL);
  g_assert_true(g_file_set_contents(hello, "hello\n", -1, NULL));
  g_autofree char *link = g_build_filename(f->tmp, "files", "link", NULL);
  g_assert_cmpint(symlink("sub/hello.txt", link), ==, 0);
  oakuk_oci_package *p = oakuk_oci_package_new();
  oakuk_error *err = NULL;
  g_assert_cmpint(oakuk_oci_package_add_kernel(p, "amd64", kxp, irp, &err), ==, 0);
  g_assert_cmpint(oakuk_oci_package_add_kernel(p, NULL, kap, NULL, &err), ==, 0);
  g_autofree char *fdir = g_build_filename(f->tmp, "files", NULL);
  g_assert_cmpint(oakuk_oci_package_set_files_dir(p, fdir, &err), ==, 0);
  g_assert_cmpint(oakuk_oci_package_add_arg(p, "-c", &err), ==, 0);
  g_assert_cmpint(oakuk_oci_package_add_arg(p, "/etc/app.conf", &err), ==, 0);
  g_assert_cmpint(oakuk_oci_package_add_env(p, "MODE=fast", &err), ==, 0);
  g_assert_cmpint(oakuk_oci_package_set_cmdline_extra(p, "console=ttyS0", &err), ==, 0);
  g_assert_cmpint(oakuk_oci_package_set_kernel_cmdline_extra(p, "arm64", "console=ttyAMA0", &err), ==, 0);
  /* Refusals, each naming the field. */
  g_assert_cmpint(oakuk_oci_package_set_kernel_cmdline_extra(p, "riscv64", "x", &err), ==, OAKUK_EINVAL);
  g_assert_cmpstr(oakuk_error_path(err), ==, "arch");
  g_clear_pointer(&err, oakuk_error_free);
  g_assert_cmpint(oakuk_oci_package_set_kernel_cmdline_extra(p, "amd64", "a\"b", &err), ==, OAKUK_EINVAL);
  g_assert_cmpstr(oakuk_error_path(err), ==, "cmdline_extra");
  g_clear_pointer(&err, oakuk_error_free);
  g_assert_cmpint(oakuk_oci_package_add_kernel(p, "amd64", kxp, NULL, &err), ==, OAKUK_EINVAL);
  g_assert_nonnull(strstr(oakuk_error_message(err), "second kernel for amd64"));
  g_clear_pointer(&err, oakuk_error_free);
  g_assert_cmpint(oakuk_oci_package_add_kernel(p, "arm64", kxp, NULL, &err), ==, OAKUK_EINVAL);
  g_assert_cmpstr(oakuk_error_path(err), ==, "arch");
  g_clear_pointer(&err, oakuk_error_free);
  g_assert_cmpint(oakuk_oci_package_add_kernel(p, NULL, irp, NULL, &err), ==, OAKUK_EINVAL);
  g_assert_cmpstr(oakuk_error_path(err), ==, "kernel");
  g_clear_pointer(&err, oakuk_error_free);
  g_assert_cmpint(oakuk_oci_package_add_arg(p, "a b", &err), ==, OAKUK_EINVAL);
  g_assert_cmpstr(oakuk_error_path(err), ==, "args");
  g_clear_pointer(&err, oakuk_error_free);
  g_assert_cmpint(oakuk_oci_package_add_env(p, "1X=2", &err), ==, OAKUK_EINVAL);
  g_assert_cmpstr(oakuk_error_path(err), ==, "env");
  g_clear_pointer(&err, oakuk_error_free);
  g_assert_cmpint(oakuk_oci_package_set_version(p, "latest", &err), ==, OAKUK_EINVAL);
  g_assert_cmpstr(oakuk_error_path(err), ==, "version");
  g_clear_pointer(&err, oakuk_error_free);
  return p;
}

static oakuk_image *fetch_oci(oakuk_image_cache *c, const char *ref, const char *arch, oakuk_error **err) {
  return oakuk_image_cache_fetch_oci_sync(c, ref, arch, NULL, NULL, NULL, NULL, err);
}

static void test_oci_archive(Fixture *f, gconstpointer data) {
  oakuk_oci_package *p = test_package(f);
  g_autofree char *path = g_build_filename(f->tmp, "pkg.tar", NULL);
  g_autofree char *digest = NULL, *digest2 = NULL;
  oakuk_error *err = NULL;
  g_assert_cmpint(oakuk_oci_package_write_archive(&digest, p, "example.org/apps/app:1.0", path, &err), ==, 0);
  g_assert_null(err);
  g_assert_true(g_str_has_prefix(digest, "sha256:"));
  g_assert_cmpuint(oakuk_oci_package_manifest_count(p), ==, 2);
  g_assert_cmpstr(oakuk_oci_package_manifest_arch(p, 0), ==, "amd64");
  g_assert_cmpstr(oakuk_oci_package_manifest_arch(p, 1), ==, "arm64");
  g_autofree char *amd64 = g_strdup(oakuk_oci_package_manifest_digest(p, 0));
  /* Reproducible: the same inputs, the same digests. */
  g_assert_cmpint(oakuk_oci_package_write_archive(&digest2, p, "example.org/apps/app:1.0", path, &err), ==,
                  0);
  g_assert_cmpstr(digest, ==, digest2);
  oakuk_oci_package_unref(p);

  g_autofree char *ref = g_strconcat("oci-archive:file://", path, NULL);
  oakuk_image_cache *c = new_cache(f, NULL);
  oakuk_image *x = fetch_oci(c, ref, "amd64", &err);
  if (err)
    g_error("%s", oakuk_error_message(err));
  g_assert_cmpstr(oakuk_image_arch(x), ==, "amd64");
  g_assert_cmpstr(oakuk_image_flavor(x), ==, "unikraft");
  g_assert_cmpstr(oakuk_image_version(x), ==, "0.16.3");
  g_assert_cmpstr(oakuk_image_digest(x), ==, amd64);
  g_assert_cmpstr(oakuk_image_sha256(x), ==, amd64 + 7);
  g_assert_cmpstr(oakuk_image_url(x), ==, ref);
  g_assert_cmpstr(oakuk_image_cmdline_extra(x), ==, "console=ttyS0");
  g_assert_cmpuint(oakuk_image_arg_count(x), ==, 2);
  g_assert_cmpstr(oakuk_image_arg(x, 0), ==, "-c");
  g_assert_cmpstr(oakuk_image_arg(x, 1), ==, "/etc/app.conf");
  g_assert_null(oakuk_image_arg(x, 2));
  g_assert_cmpuint(oakuk_image_env_count(x), ==, 1);
  g_assert_cmpstr(oakuk_image_env(x, 0), ==, "MODE=fast");
  g_autofree char *ird = read_text(oakuk_image_initrd(x));
  g_assert_cmpstr(ird, ==, "INITRD");
  g_autofree char *hello = g_build_filename(oakuk_image_files_dir(x), "link", NULL);
  g_autofree char *hello_text = read_text(hello);
  g_assert_cmpstr(hello_text, ==, "hello\n");
  /* urunc's description of the image is not a file for the guest; neither is KraftKit's tree. */
  g_autofree char *uj = g_build_filename(oakuk_image_files_dir(x), "urunc.json", NULL);
  g_autofree char *uk = g_build_filename(oakuk_image_files_dir(x), "unikraft", NULL);
  g_assert_false(g_file_test(uj, G_FILE_TEST_EXISTS));
  g_assert_false(g_file_test(uk, G_FILE_TEST_EXISTS));

  oakuk_image *a = fetch_oci(c, ref, "arm64", &err);
  g_assert_null(err);
  g_assert_cmpstr(oakuk_image_arch(a), ==, "arm64");
  g_assert_cmpstr(oakuk_image_flavor(a), ==, "linux");
  g_assert_cmpstr(oakuk_image_cmdline_extra(a), ==, "console=ttyAMA0"); /* its own, over the package's */
  g_assert_null(oakuk_image_initrd(a));
  g_assert_cmpstr(oakuk_image_dir(a), !=, oakuk_image_dir(x));

  /* The archive unchanged: the same entry without reading it; a platform it lacks: refused. */
  oakuk_image *x2 = fetch_oci(c, ref, "amd64", &err);
  g_assert_cmpstr(oakuk_image_dir(x2), ==, oakuk_image_dir(x));
  oakuk_image_unref(x2);
  g_assert_null(fetch_oci(c, ref, "riscv64", &err));
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_EUNSUPPORTED);
  g_assert_nonnull(strstr(oakuk_error_message(err), "no kernel for riscv64"));
  g_clear_pointer(&err, oakuk_error_free);
  oakuk_image_unref(a);
  oakuk_image_unref(x);
  oakuk_image_cache_unref(c);
}

static void test_oci_refused(Fixture *f, gconstpointer data) {
  oakuk_image_cache *c = new_cache(f, NULL);
  oakuk_error *err = NULL;
  /* A URL to the OCI fetch and a reference to the URL fetch, each told which to use. */
  g_assert_null(oakuk_image_cache_fetch_sync(c, "example.org/app:1", NULL, NULL, NULL, &err));
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_EINVAL);
  g_assert_nonnull(strstr(oakuk_error_message(err), "oakuk_image_cache_fetch_oci"));
  g_clear_pointer(&err, oakuk_error_free);
  g_assert_null(fetch_oci(c, "http://example.org/k.tar.gz", "amd64", &err));
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_EINVAL);
  g_clear_pointer(&err, oakuk_error_free);
  g_assert_null(fetch_oci(c, "example.org/App:1", "amd64", &err));
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_EINVAL);
  g_clear_pointer(&err, oakuk_error_free);
  g_assert_null(fetch_oci(c, "example.org/app:1", "x86", &err));
  g_assert_nonnull(strstr(oakuk_error_message(err), "\"x86\""));
  g_clear_pointer(&err, oakuk_error_free);
  g_assert_null(fetch_oci(c, "oci-archive:ftp://x/y.tar", "amd64", &err));
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_EINVAL);
  g_clear_pointer(&err, oakuk_error_free);
  g_assert_null(fetch_oci(c, "oci-archive:file:///etc/passwd", "amd64", &err));
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_EPERM);
  g_assert_nonnull(strstr(oakuk_error_message(err), "file_allowed_dirs"));
  g_clear_pointer(&err, oakuk_error_free);
  assert_cache_empty(f->cache);
  g_assert_true(oakuk_image_code_is_oci("registry.example:5000/a/b:c"));
  g_assert_true(oakuk_image_code_is_oci("busybox"));
  g_assert_true(oakuk_image_code_is_oci("oci-archive:file:///x.tar"));
  g_assert_false(oakuk_image_code_is_oci("https://x/k.tar.gz"));
  g_assert_false(oakuk_image_code_is_oci("Not A Reference"));
  g_assert_false(oakuk_image_code_is_oci(""));
  oakuk_image_cache_unref(c);
}

/* The platform chosen in an index: QEMU's (KraftKit's "qemu") first, then urunc's "linux"; fc and xen
 * refused by name. */
static char *pick(const char *json, const char *arch, GError **error) {
  g_autoptr(JsonNode) n = oakuk_json_parse(json, strlen(json), NULL);
  g_assert_nonnull(n);
  return oakuk_oci_index_pick_unikernel(json_node_get_object(n), arch, "test", NULL, error);
}

#define D(c)                                                                                                 \
  "\"sha256:" c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c c  \
      c c c c c c c c c c c c c c c c c "\""

static void test_oci_pick(void) {
  const char *kk =
      "{\"manifests\": ["
      "{\"digest\": " D(
          "1") ", \"size\": 1, \"platform\": {\"os\": \"linux\", \"architecture\": \"amd64\"}},"
               "{\"digest\": " D(
                   "2") ", \"size\": 1, \"platform\": {\"os\": \"qemu\", \"architecture\": \"x86_64\"}},"
                        "{\"digest\": " D("3") ", \"size\": 1, \"platform\": {\"os\": \"fc\", "
                                               "\"architecture\": \"arm64\"}},"
                                               "{\"digest\": " D(
                                                   "4") ", \"size\": 1, \"platform\": {\"os\": \"xen\", "
                                                        "\"architecture\": \"arm64\"}}]}";
  GError *err = NULL;
  g_autofree char *x = pick(kk, "amd64", &err);
  g_assert_no_error(err);
  g_assert_true(g_str_has_prefix(x, "sha256:2222"));
  g_assert_null(pick(kk, "arm64", &err));
  g_assert_error(err, OAKUK_ERROR, -OAKUK_EUNSUPPORTED);
  g_assert_nonnull(strstr(err->message, "Firecracker"));
  g_assert_nonnull(strstr(err->message, "Xen"));
  g_clear_error(&err);
  g_assert_null(pick(kk, "riscv64", &err));
  g_assert_nonnull(strstr(err->message, "qemu/x86_64"));
  g_clear_error(&err);
  const char *urunc = "{\"manifests\": [{\"digest\": " D(
      "5") ", \"size\": 1, \"platform\": {\"os\": \"linux\", \"architecture\": \"arm64\"}}]}";
  g_autofree char *u = pick(urunc, "arm64", &err);
  g_assert_true(g_str_has_prefix(u, "sha256:5555"));
  const char *wrapper = "{\"manifests\": [{\"digest\": " D("6") ", \"size\": 1}]}";
  g_autofree char *w = pick(wrapper, "amd64", &err);
  g_assert_true(g_str_has_prefix(w, "sha256:6666"));
  /* The fuzz seeds of registries' documents (tests/fuzz/corpus/oci) through the unikernel choice:
   * a digest or an error, never a critical (fatal here) nor neither. */
  const char *root = g_getenv("OAKUK_SOURCE_ROOT");
  g_autofree char *corpus = root ? g_build_filename(root, "tests", "fuzz", "corpus", "oci", NULL) : NULL;
  g_autoptr(GDir) d = corpus ? g_dir_open(corpus, 0, NULL) : NULL;
  const char *name;
  guint seeds = 0;
  while (d && (name = g_dir_read_name(d))) {
    g_autofree char *path = g_build_filename(corpus, name, NULL);
    g_autofree char *text = NULL;
    gsize len;
    g_assert_true(g_file_get_contents(path, &text, &len, NULL));
    g_autoptr(JsonNode) n = oakuk_json_parse(text, len, NULL);
    if (!n || !JSON_NODE_HOLDS_OBJECT(n))
      continue;
    for (int k = 0; k < 2; k++) {
      GError *e = NULL;
      g_autofree char *got =
          oakuk_oci_index_pick_unikernel(json_node_get_object(n), k ? "arm64" : "amd64", name, NULL, &e);
      g_assert_true((got != NULL) != (e != NULL));
      g_assert_true(got == NULL || oakuk_oci_digest_is_valid(got));
      g_clear_error(&e);
    }
    seeds++;
  }
  if (corpus)
    g_assert_cmpuint(seeds, >=, 10);
  g_assert_cmpstr(oakuk_oci_unikernel_goarch("x86_64"), ==, "amd64");
  g_assert_cmpstr(oakuk_oci_unikernel_goarch("aarch64"), ==, "arm64");
  g_assert_null(oakuk_oci_unikernel_goarch("mips"));
}

/* ---------------------------------------------------------------------------------------------- */
/* Kernel inspection */

static void expect_arch(const char *dir, const char *name, GBytes *bytes, const char *arch,
                        const char *needle) {
  g_autofree char *uri = write_file(dir, name, bytes);
  g_autofree char *path = g_filename_from_uri(uri, NULL, NULL);
  oakuk_error *err = NULL;
  const char *got = oakuk_image_kernel_arch(path, &err);
  g_assert_cmpstr(got, ==, arch);
  if (arch == NULL) {
    g_assert_nonnull(err);
    g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_EINVAL);
    g_assert_nonnull(strstr(oakuk_error_message(err), path));
    if (needle && !strstr(oakuk_error_message(err), needle))
      g_error("%s: message \"%s\" lacks \"%s\"", name, oakuk_error_message(err), needle);
    oakuk_error_free(err);
  } else {
    g_assert_null(err);
  }
}

static GBytes *header_at(gsize size, gsize off, const char *magic, gsize mlen) {
  guint8 *b = g_malloc0(size);
  memcpy(b + off, magic, mlen);
  return g_bytes_new_take(b, size);
}

static void put64(guint8 *p, guint64 v) {
  put32(p, (guint32)v);
  put32(p + 4, (guint32)(v >> 32));
}

/* An ELF header of the given class and machine in a zeroed buffer of size bytes. */
static guint8 *elf_buf(gsize size, int elf_class, guint16 machine) {
  guint8 *b = g_malloc0(size);
  memcpy(b, "\177ELF", 4);
  b[4] = (guint8)elf_class;
  b[5] = 1;
  b[6] = 1;
  b[16] = 2;
  b[18] = machine & 0xff;
  b[19] = machine >> 8;
  return b;
}

static void put_multiboot(guint8 *b, gsize off, guint32 flags, gboolean good_sum) {
  put32(b + off, 0x1BADB002u);
  put32(b + off + 4, flags);
  put32(b + off + 8, (guint32) - (0x1BADB002u + flags) + (good_sum ? 0 : 1));
}

/* A 64-bit ELF whose one PT_NOTE segment holds a note of name/type (PVH: "Xen", 18). */
static GBytes *elf64_with_note(const char *name, guint32 type) {
  guint8 *b = elf_buf(4096, 2, 62);
  put64(b + 32, 64); /* e_phoff */
  b[54] = 56;        /* e_phentsize */
  b[56] = 1;         /* e_phnum */
  put32(b + 64, 4);  /* PT_NOTE */
  put64(b + 64 + 8, 200);
  put64(b + 64 + 32, 20);
  put32(b + 200, 4);
  put32(b + 204, 4);
  put32(b + 208, type);
  memcpy(b + 212, name, 4);
  return g_bytes_new_take(b, 4096);
}

static void expect_format(const char *dir, const char *name, GBytes *bytes, const char *arch,
                          const char *needle) {
  expect_arch(dir, name, bytes, arch, needle);
  if (arch && needle) {
    g_autofree char *path = g_build_filename(dir, name, NULL);
    g_assert_cmpstr(oakuk_image_kernel_format(path, NULL), ==, needle);
  }
}

static void test_kernel_arch_crafted(Fixture *f, gconstpointer data) {
  struct {
    guint16 machine;
    const char *arch;
  } elf[] = {{183, "arm64"}, {40, "arm"}, {243, "riscv64"}, {8, NULL}};
  for (gsize i = 0; i < G_N_ELEMENTS(elf); i++) {
    g_autoptr(GBytes) b = fake_elf(elf[i].machine, NULL);
    g_autofree char *name = g_strdup_printf("elf-%u", elf[i].machine);
    expect_arch(f->tmp, name, b, elf[i].arch, elf[i].arch ? NULL : "ELF machine 8");
  }
  /* x86: what QEMU's -kernel boots, by content. */
  g_autoptr(GBytes) mb = fake_multiboot(NULL);
  expect_format(f->tmp, "multiboot-elf32", mb, "amd64", "multiboot (32-bit ELF)");
  guint8 *b = elf_buf(16384, 1, 3);
  put_multiboot(b, 4096 + 12, 3, TRUE);
  g_autoptr(GBytes) mb_deep = g_bytes_new_take(b, 16384);
  expect_format(f->tmp, "multiboot-elf32-deep", mb_deep, "amd64", "multiboot (32-bit ELF)");
  b = elf_buf(16384, 1, 3);
  put_multiboot(b, 8192 + 4, 3, TRUE); /* past the 8 KiB QEMU searches */
  g_autoptr(GBytes) mb_far = g_bytes_new_take(b, 16384);
  expect_arch(f->tmp, "multiboot-far", mb_far, NULL,
              "a 32-bit x86 ELF with neither a multiboot header nor a PVH note");
  b = elf_buf(4096, 1, 3);
  put_multiboot(b, 66, 3, TRUE); /* not 4-byte aligned */
  g_autoptr(GBytes) mb_unaligned = g_bytes_new_take(b, 4096);
  expect_arch(f->tmp, "multiboot-unaligned", mb_unaligned, NULL, "neither a multiboot header nor a PVH note");
  b = elf_buf(4096, 1, 3);
  put_multiboot(b, 64, 3, FALSE);
  g_autoptr(GBytes) mb_badsum = g_bytes_new_take(b, 4096);
  expect_arch(f->tmp, "multiboot-badsum", mb_badsum, NULL, "neither a multiboot header nor a PVH note");
  g_autoptr(GBytes) elf32 = fake_elf(3, NULL);
  expect_arch(f->tmp, "elf32-plain", elf32, NULL,
              "a 32-bit x86 ELF with neither a multiboot header nor a PVH note");
  g_autoptr(GBytes) elf64 = fake_elf(62, NULL);
  expect_arch(f->tmp, "kernel.dbg", elf64, NULL, "not the .dbg one");
  b = elf_buf(4096, 2, 62);
  put_multiboot(b, 64, 3, TRUE);
  g_autoptr(GBytes) mb64 = g_bytes_new_take(b, 4096);
  expect_arch(f->tmp, "multiboot-elf64", mb64, NULL, "multiboot header but no load addresses");
  b = elf_buf(4096, 2, 62);
  put_multiboot(b, 64, 3 | (1u << 16), TRUE);
  g_autoptr(GBytes) mb64k = g_bytes_new_take(b, 4096);
  expect_format(f->tmp, "multiboot-elf64-kludge", mb64k, "amd64", "multiboot (load addresses)");
  b = g_malloc0(4096);
  put_multiboot(b, 0, 3 | (1u << 16), TRUE);
  g_autoptr(GBytes) raw = g_bytes_new_take(b, 4096);
  expect_format(f->tmp, "multiboot-raw", raw, "amd64", "multiboot (load addresses)");
  b = g_malloc0(4096);
  put_multiboot(b, 0, 3, TRUE);
  g_autoptr(GBytes) raw_noaddr = g_bytes_new_take(b, 4096);
  expect_arch(f->tmp, "multiboot-raw-noaddr", raw_noaddr, NULL, "without load addresses");
  b = elf_buf(4096, 1, 3);
  put32(b + 64, 0xE85250D6u);
  put32(b + 68, 0);
  put32(b + 72, 16);
  put32(b + 76, (guint32) - (0xE85250D6u + 16));
  g_autoptr(GBytes) mb2 = g_bytes_new_take(b, 4096);
  expect_arch(f->tmp, "multiboot2", mb2, NULL, "only a multiboot2 header");
  g_autoptr(GBytes) pvh = elf64_with_note("Xen", 18);
  expect_format(f->tmp, "pvh", pvh, "amd64", "PVH (64-bit ELF)");
  g_autoptr(GBytes) other_note = elf64_with_note("GNU", 3);
  expect_arch(f->tmp, "other-note", other_note, NULL, "neither a PVH note nor a multiboot header");
  g_autoptr(GBytes) image = header_at(4096, 56, "ARM\x64", 4);
  expect_format(f->tmp, "Image", image, "arm64", "arm64 Image");
  g_autoptr(GBytes) bz = header_at(4096, 0x202, "HdrS", 4);
  expect_format(f->tmp, "bzImage", bz, "amd64", "bzImage");
  g_autoptr(GBytes) junk = header_at(4096, 0, "MZ", 2);
  expect_arch(f->tmp, "junk", junk, NULL, "not a recognised kernel");
  oakuk_error *err = NULL;
  g_autofree char *missing = g_build_filename(f->tmp, "missing", NULL);
  g_assert_null(oakuk_image_kernel_arch(missing, &err));
  g_assert_cmpint(oakuk_error_code(err), ==, OAKUK_EIO);
  g_assert_nonnull(strstr(oakuk_error_message(err), missing));
  oakuk_error_free(err);
}

static const char *host_vmlinuz(void) {
  static char path[256];
  GDir *d = g_dir_open("/boot", 0, NULL);
  const char *name;
  path[0] = '\0';
  while (d && (name = g_dir_read_name(d)) != NULL)
    if (g_str_has_prefix(name, "vmlinuz-") && g_str_has_suffix(name, "-amd64"))
      g_snprintf(path, sizeof path, "/boot/%s", name);
  if (d)
    g_dir_close(d);
  return path[0] && access(path, R_OK) == 0 ? path : NULL;
}

static void test_kernel_real(void) {
  const char *path = host_vmlinuz();
  if (path == NULL) {
    g_test_skip("no readable /boot/vmlinuz-*-amd64 (Debian installs it mode 0600: run as root)");
    return;
  }
  oakuk_error *err = NULL;
  g_assert_cmpstr(oakuk_image_kernel_arch(path, &err), ==, "amd64");
  const char *flavor = NULL;
  char *version = NULL;
  g_assert_cmpint(oakuk_image_kernel_unikraft_version(&flavor, &version, path, &err), ==, 0);
  g_assert_cmpstr(flavor, ==, "linux");
  /* The bzImage header's version string starts with the release in the file name. */
  g_assert_nonnull(version);
  g_assert_true(g_str_has_prefix(path + strlen("/boot/vmlinuz-"), version) ||
                g_str_has_prefix(version, path + strlen("/boot/vmlinuz-")));
  oakuk_free(version);
}

static void expect_flavor(const char *dir, GBytes *b, const char *flavor, const char *version) {
  g_autofree char *uri = write_file(dir, "k", b);
  g_autofree char *path = g_filename_from_uri(uri, NULL, NULL);
  const char *fl = NULL;
  char *ver = NULL;
  g_assert_cmpint(oakuk_image_kernel_unikraft_version(&fl, &ver, path, NULL), ==, 0);
  g_assert_cmpstr(fl, ==, flavor);
  g_assert_cmpstr(ver, ==, version);
  oakuk_free(ver);
}

static void test_unikraft_version(Fixture *f, gconstpointer data) {
  g_autoptr(GBytes) helene = fake_multiboot("\nPowered by\nUnikraft Helene 0.16.1\n");
  expect_flavor(f->tmp, helene, "unikraft", "0.16.1");
  g_autoptr(GBytes) telesto = fake_multiboot("Unikraft Telesto 0.15.0~5a3b1c");
  expect_flavor(f->tmp, telesto, "unikraft", "0.15.0");
  /* A mention without a release is not a version; a later banner is still found. */
  g_autoptr(GBytes) two = fake_multiboot("Unikraft build system; Unikraft Atlas 0.13.10 ");
  expect_flavor(f->tmp, two, "unikraft", "0.13.10");
  g_autoptr(GBytes) linux_elf =
      fake_multiboot("Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)");
  expect_flavor(f->tmp, linux_elf, "linux", "6.1.0-56-amd64");
  g_autoptr(GBytes) plain = fake_multiboot("Unikraft is great but says no version here");
  expect_flavor(f->tmp, plain, "unknown", NULL);

  /* A banner straddling the 1 MiB read boundary. */
  gsize size = 1024 * 1024 + 4096;
  guint8 *big = g_malloc0(size);
  const char *banner = "Unikraft Helene 0.16.3";
  memcpy(big + 1024 * 1024 - 10, banner, strlen(banner));
  g_autoptr(GBytes) bb = g_bytes_new_take(big, size);
  expect_flavor(f->tmp, bb, "unikraft", "0.16.3");
}

int main(int argc, char **argv) {
  g_test_init(&argc, &argv, NULL);
#define ADD(path, fn) g_test_add(path, Fixture, NULL, fixture_setup, fn, fixture_teardown)
  ADD("/image/unpack/good", test_good);
  ADD("/image/unpack/oakuk-json", test_oakuk_json);
  ADD("/image/unpack/no-kernel", test_no_kernel);
  ADD("/image/unpack/unbootable-kernel", test_unbootable_kernel);
  ADD("/image/unpack/path-traversal", test_traversal);
  ADD("/image/unpack/absolute-path", test_absolute);
  ADD("/image/unpack/symlink-escape", test_symlink_escape);
  ADD("/image/unpack/symlink-chain", test_symlink_chain);
  ADD("/image/unpack/through-link", test_through_link);
  ADD("/image/unpack/hardlink-escape", test_hardlink_escape);
  ADD("/image/unpack/device-file", test_device);
  ADD("/image/unpack/truncated-gzip", test_truncated);
  ADD("/image/unpack/bare-kernel", test_bare_kernel);
  ADD("/image/verify/sha256", test_sha256);
  ADD("/image/limits/oversize", test_oversize);
  ADD("/image/limits/too-many-entries", test_too_many_entries);
  ADD("/image/fetch/missing-and-bad-url", test_missing_and_bad_url);
  ADD("/image/fetch/async", test_async);
  ADD("/image/cache/reuse", test_reuse);
  ADD("/image/fetch/file-policy", test_file_policy);
  ADD("/image/options-v1", test_options_v1);
  ADD("/image/options-v2", test_options_v2);
  ADD("/image/cache/eviction", test_eviction);
  ADD("/image/cache/revalidate-file", test_revalidate_file);
  ADD("/image/oci/archive", test_oci_archive);
  ADD("/image/oci/refused", test_oci_refused);
  g_test_add_func("/image/oci/pick", test_oci_pick);
  ADD("/image/kernel/arch-crafted", test_kernel_arch_crafted);
  ADD("/image/kernel/unikraft-version", test_unikraft_version);
  g_test_add_func("/image/kernel/arch-real", test_kernel_real);
  g_test_add_func("/image/options", test_options);
  g_test_add_func("/image/unpack/resolve", test_resolve);
  return g_test_run();
}

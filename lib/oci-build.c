/* OCI image building (docs/architecture.md §11): a directory packed into one gzip'd pax layer, and pushing it
 * with its config and manifest. Kept apart from oci.c so that programs which only pull and run
 * images (oakuk-node) do not link libarchive's writers: one writer pulls in every archive format,
 * xar's among them, and with it libxml2, ICU and libstdc++. */
#include "oakuk-private.h"
#include "oci-private.h"

#include "oakuk/container.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define set_gerror(err, code, ...) g_set_error(err, OAKUK_ERROR, -(code), __VA_ARGS__)

typedef struct {
  GChecksum *sum;
  GOutputStream *out; /* gzip converter over memory */
  GError *err;
} PackSink;

static la_ssize_t pack_write(struct archive *a, void *data, const void *buf, size_t n) {
  PackSink *s = data;
  g_checksum_update(s->sum, buf, n);
  if (!g_output_stream_write_all(s->out, buf, n, NULL, NULL, s->err ? NULL : &s->err)) {
    archive_set_error(a, EIO, "compress layer");
    return -1;
  }
  return (la_ssize_t)n;
}

static gint cmp_names(gconstpointer a, gconstpointer b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static gboolean pack_tree(struct archive *w, const char *root, const char *rel, GError **error) {
  g_autofree char *full = *rel ? g_build_filename(root, rel, NULL) : g_strdup(root);
  g_autoptr(GDir) d = g_dir_open(full, 0, error);
  if (!d)
    return FALSE;
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func(g_free);
  const char *n;
  while ((n = g_dir_read_name(d)))
    g_ptr_array_add(names, g_strdup(n));
  g_ptr_array_sort(names, cmp_names);
  for (guint k = 0; k < names->len; k++) {
    g_autofree char *r = *rel ? g_strconcat(rel, "/", names->pdata[k], NULL) : g_strdup(names->pdata[k]);
    g_autofree char *p = g_build_filename(root, r, NULL);
    struct stat st;
    if (lstat(p, &st) != 0)
      return set_gerror(error, OAKUK_EIO, "stat %s: %s", p, g_strerror(errno)), FALSE;
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode) && !S_ISLNK(st.st_mode))
      return set_gerror(error, OAKUK_EINVAL, "%s: only files, directories and symlinks can be packed", p),
             FALSE;
    struct archive_entry *e = archive_entry_new();
    archive_entry_copy_stat(e, &st);
    archive_entry_set_pathname(e, r);
    archive_entry_set_nlink(e, 1);
    if (S_ISLNK(st.st_mode)) {
      char target[4096];
      ssize_t tn = readlink(p, target, sizeof target - 1);
      if (tn < 0) {
        archive_entry_free(e);
        return set_gerror(error, OAKUK_EIO, "readlink %s: %s", p, g_strerror(errno)), FALSE;
      }
      target[tn] = '\0';
      archive_entry_set_symlink(e, target);
    }
    gboolean ok = archive_write_header(w, e) == ARCHIVE_OK;
    archive_entry_free(e);
    if (!ok)
      return set_gerror(error, OAKUK_EIO, "pack %s: %s", p, archive_error_string(w)), FALSE;
    if (S_ISREG(st.st_mode)) {
      g_autofree char *data = NULL;
      gsize len;
      if (!g_file_get_contents(p, &data, &len, error))
        return FALSE;
      if (archive_write_data(w, data, len) != (la_ssize_t)len)
        return set_gerror(error, OAKUK_EIO, "pack %s: %s", p, archive_error_string(w)), FALSE;
    } else if (S_ISDIR(st.st_mode) && !pack_tree(w, root, r, error)) {
      return FALSE;
    }
  }
  return TRUE;
}

GBytes *oakuk_oci_pack_layer(const char *dir, char **diff_id, GError **error) {
  if (!g_file_test(dir, G_FILE_TEST_IS_DIR))
    return set_gerror(error, OAKUK_ENOTFOUND, "rootfs directory %s does not exist", dir), NULL;
  g_autoptr(GOutputStream) mem = g_memory_output_stream_new_resizable();
  g_autoptr(GZlibCompressor) z = g_zlib_compressor_new(G_ZLIB_COMPRESSOR_FORMAT_GZIP, 6);
  PackSink s = {.sum = g_checksum_new(G_CHECKSUM_SHA256)};
  s.out = g_converter_output_stream_new(mem, G_CONVERTER(z));
  struct archive *w = archive_write_new();
  archive_write_set_format_pax_restricted(w);
  archive_write_set_bytes_in_last_block(w, 1);
  gboolean ok = archive_write_open(w, &s, NULL, pack_write, NULL) == ARCHIVE_OK;
  if (!ok)
    set_gerror(error, OAKUK_EIO, "pack %s: %s", dir, archive_error_string(w));
  ok = ok && pack_tree(w, dir, "", error);
  if (archive_write_close(w) != ARCHIVE_OK && ok)
    ok = (set_gerror(error, OAKUK_EIO, "pack %s: %s", dir, archive_error_string(w)), FALSE);
  archive_write_free(w);
  if (ok && !g_output_stream_close(s.out, NULL, error))
    ok = FALSE;
  if (s.err) {
    if (ok)
      set_gerror(error, OAKUK_EIO, "pack %s: %s", dir, s.err->message);
    ok = FALSE;
    g_error_free(s.err);
  }
  g_object_unref(s.out);
  if (ok)
    *diff_id = g_strconcat("sha256:", g_checksum_get_string(s.sum), NULL);
  g_checksum_free(s.sum);
  if (!ok)
    return NULL;
  g_output_stream_close(mem, NULL, NULL);
  return g_memory_output_stream_steal_as_bytes(G_MEMORY_OUTPUT_STREAM(mem));
}

static GBytes *json_bytes(JsonBuilder *b) {
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  char *text = oakuk_json_node_to_string(root, FALSE);
  return g_bytes_new_take(text, strlen(text));
}

static void add_descriptor(JsonBuilder *b, const char *media, const char *digest, gsize size) {
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "mediaType");
  json_builder_add_string_value(b, media);
  json_builder_set_member_name(b, "digest");
  json_builder_add_string_value(b, digest);
  json_builder_set_member_name(b, "size");
  json_builder_add_int_value(b, (gint64)size);
  json_builder_end_object(b);
}

char *oakuk_oci_build_and_push(OakukOciClient *c, const char *dir, const char *repo, const char *tag,
                               const char *arch, gint64 *manifest_size, GError **error) {
  g_autofree char *diff_id = NULL;
  g_autoptr(GBytes) layer = oakuk_oci_pack_layer(dir, &diff_id, error);
  if (!layer)
    return NULL;
  g_autofree char *layer_digest = oakuk_oci_digest_bytes(layer);

  g_autoptr(JsonBuilder) cb = json_builder_new();
  json_builder_begin_object(cb);
  json_builder_set_member_name(cb, "architecture");
  json_builder_add_string_value(cb, arch);
  json_builder_set_member_name(cb, "os");
  json_builder_add_string_value(cb, "linux");
  json_builder_set_member_name(cb, "config");
  json_builder_begin_object(cb);
  json_builder_set_member_name(cb, "Env");
  json_builder_begin_array(cb);
  json_builder_add_string_value(cb, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
  json_builder_end_array(cb);
  json_builder_end_object(cb);
  json_builder_set_member_name(cb, "rootfs");
  json_builder_begin_object(cb);
  json_builder_set_member_name(cb, "type");
  json_builder_add_string_value(cb, "layers");
  json_builder_set_member_name(cb, "diff_ids");
  json_builder_begin_array(cb);
  json_builder_add_string_value(cb, diff_id);
  json_builder_end_array(cb);
  json_builder_end_object(cb);
  json_builder_end_object(cb);
  g_autoptr(GBytes) config = json_bytes(cb);
  g_autofree char *config_digest = oakuk_oci_digest_bytes(config);

  g_autoptr(JsonBuilder) mb = json_builder_new();
  json_builder_begin_object(mb);
  json_builder_set_member_name(mb, "schemaVersion");
  json_builder_add_int_value(mb, 2);
  json_builder_set_member_name(mb, "mediaType");
  json_builder_add_string_value(mb, OAKUK_OCI_MEDIA_MANIFEST);
  json_builder_set_member_name(mb, "config");
  add_descriptor(mb, OAKUK_OCI_MEDIA_CONFIG, config_digest, g_bytes_get_size(config));
  json_builder_set_member_name(mb, "layers");
  json_builder_begin_array(mb);
  add_descriptor(mb, OAKUK_OCI_MEDIA_LAYER_GZIP, layer_digest, g_bytes_get_size(layer));
  json_builder_end_array(mb);
  json_builder_end_object(mb);
  g_autoptr(GBytes) manifest = json_bytes(mb);

  if (!oakuk_oci_client_push_blob(c, repo, layer_digest, layer, error) ||
      !oakuk_oci_client_push_blob(c, repo, config_digest, config, error))
    return NULL;
  if (manifest_size)
    *manifest_size = (gint64)g_bytes_get_size(manifest);
  return oakuk_oci_client_push_manifest(c, repo, tag, OAKUK_OCI_MEDIA_MANIFEST, manifest, error);
}

OAKUK_API int oakuk_container_build_rootfs_image(const char *dir, const char *registry, const char *name,
                                                 const char *tag, const char *username, const char *password,
                                                 const oakuk_container_options *opts, char **digest_out,
                                                 oakuk_error **error) {
  g_return_val_if_fail(dir != NULL && registry != NULL && name != NULL && tag != NULL, OAKUK_EINVAL);
  GError *err = NULL;
  g_autofree char *ref = g_strdup_printf("%s/%s:%s", registry, name, tag);
  OakukOciRef parsed;
  if (!oakuk_oci_ref_parse(ref, &parsed, &err))
    return oakuk_propagate_gerror(error, err);
  oakuk_oci_ref_clear(&parsed);
  g_autoptr(OakukOciClient) c = oakuk_oci_client_new(registry, username, password, opts, &err);
  if (!c)
    return oakuk_propagate_gerror(error, err);
  char *digest = oakuk_oci_build_and_push(c, dir, name, tag, oakuk_container_platform_arch(), NULL, &err);
  if (!digest)
    return oakuk_propagate_gerror(error, err);
  if (digest_out)
    *digest_out = digest;
  else
    g_free(digest);
  return 0;
}

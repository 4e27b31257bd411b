/* Packaging unikernels as OCI images in KraftKit's layout (docs/unikernels.md, "OCI images"; the
 * library side of `oakuk pkg`): one manifest per architecture in an index, written as an OCI layout
 * tarball or pushed to a registry. The layout follows KraftKit's oci/ package (pack.go,
 * manifest.go, index.go, layer.go, wellknown.go, annotations.go): uncompressed tar layers holding
 * one file each at /unikraft/bin/kernel and /unikraft/bin/initrd, annotated with their path; a
 * config with os "qemu", architecture "x86_64"/"arm64", os.version and Cmd; the manifest's
 * platform on the config descriptor and on the index entry; sh.kraftkit.version on the index and
 * manifests (what KraftKit checks to call an image its own). urunc's annotations and /urunc.json
 * are added, and an index entry linux/<GOARCH> per manifest (containerd selects by it), so urunc
 * can run the image too. Kept apart from oci.c like oci-build.c: it links libarchive's writers. */
#include "oakuk-private.h"
#include "oci-private.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define set_gerror(err, code, ...) g_set_error(err, OAKUK_ERROR, -(code), __VA_ARGS__)

#define MEDIA_LAYER_TAR "application/vnd.oci.image.layer.v1.tar"
#define KERNEL_PATH "/unikraft/bin/kernel"
#define INITRD_PATH "/unikraft/bin/initrd"

typedef struct {
  char *arch;          /* GOARCH */
  char *kernel;        /* path */
  char *initrd;        /* path or NULL */
  char *digest;        /* of its manifest, once written */
  char *cmdline_extra; /* this kernel's own, over the package's; or NULL */
} PkgKernel;

struct oakuk_oci_package {
  gatomicrefcount refcount;
  GPtrArray *kernels; /* PkgKernel*, in the order added */
  char *files_dir;
  GPtrArray *args, *env;
  char *version;
  char *cmdline_extra;
};

static void pkg_kernel_free(gpointer p) {
  PkgKernel *k = p;
  g_free(k->arch);
  g_free(k->kernel);
  g_free(k->initrd);
  g_free(k->digest);
  g_free(k->cmdline_extra);
  g_free(k);
}

OAKUK_API oakuk_oci_package *oakuk_oci_package_new(void) {
  oakuk_oci_package *p = g_new0(oakuk_oci_package, 1);
  g_atomic_ref_count_init(&p->refcount);
  p->kernels = g_ptr_array_new_with_free_func(pkg_kernel_free);
  p->args = g_ptr_array_new_with_free_func(g_free);
  p->env = g_ptr_array_new_with_free_func(g_free);
  return p;
}

OAKUK_API oakuk_oci_package *oakuk_oci_package_ref(oakuk_oci_package *pkg) {
  g_return_val_if_fail(pkg != NULL, NULL);
  g_atomic_ref_count_inc(&pkg->refcount);
  return pkg;
}

OAKUK_API void oakuk_oci_package_unref(oakuk_oci_package *pkg) {
  if (pkg == NULL || !g_atomic_ref_count_dec(&pkg->refcount))
    return;
  g_ptr_array_unref(pkg->kernels);
  g_ptr_array_unref(pkg->args);
  g_ptr_array_unref(pkg->env);
  g_free(pkg->files_dir);
  g_free(pkg->version);
  g_free(pkg->cmdline_extra);
  g_free(pkg);
}

/* KraftKit's architecture names (kraftkit.sh/unikraft/arch). */
static const char *kraftkit_arch(const char *goarch) {
  return strcmp(goarch, "amd64") == 0 ? "x86_64" : goarch;
}

OAKUK_API int oakuk_oci_package_add_kernel(oakuk_oci_package *pkg, const char *arch, const char *kernel_path,
                                           const char *initrd_path, oakuk_error **error) {
  g_return_val_if_fail(pkg != NULL && kernel_path != NULL, OAKUK_EINVAL);
  oakuk_error *kerr = NULL;
  const char *got = oakuk_image_kernel_arch(kernel_path, &kerr);
  if (!got) {
    int rc =
        oakuk_set_error(error, oakuk_error_code(kerr), 0, "kernel", "package: %s", oakuk_error_message(kerr));
    oakuk_error_free(kerr);
    return rc;
  }
  if (strcmp(got, "amd64") != 0 && strcmp(got, "arm64") != 0)
    return oakuk_set_error(error, OAKUK_EINVAL, 0, "kernel",
                           "package: kernel %s is an %s kernel; oakuk runs amd64 and arm64 guests",
                           kernel_path, got);
  if (arch && strcmp(arch, got) != 0)
    return oakuk_set_error(error, OAKUK_EINVAL, 0, "arch", "package: kernel %s is an %s kernel, not %s",
                           kernel_path, got, arch);
  for (guint k = 0; k < pkg->kernels->len; k++)
    if (strcmp(((PkgKernel *)pkg->kernels->pdata[k])->arch, got) == 0)
      return oakuk_set_error(error, OAKUK_EINVAL, 0, "arch", "package: a second kernel for %s (%s)", got,
                             kernel_path);
  struct stat st;
  if (initrd_path && (stat(initrd_path, &st) != 0 || !S_ISREG(st.st_mode)))
    return oakuk_set_error(error, OAKUK_EINVAL, 0, "initrd", "package: initrd %s is not a regular file",
                           initrd_path);
  PkgKernel *k = g_new0(PkgKernel, 1);
  k->arch = g_strdup(got);
  k->kernel = g_strdup(kernel_path);
  k->initrd = g_strdup(initrd_path);
  g_ptr_array_add(pkg->kernels, k);
  return 0;
}

OAKUK_API int oakuk_oci_package_set_files_dir(oakuk_oci_package *pkg, const char *dir, oakuk_error **error) {
  g_return_val_if_fail(pkg != NULL, OAKUK_EINVAL);
  if (dir && !g_file_test(dir, G_FILE_TEST_IS_DIR))
    return oakuk_set_error(error, OAKUK_EINVAL, 0, "files_dir", "package: %s is not a directory", dir);
  g_free(pkg->files_dir);
  pkg->files_dir = g_strdup(dir);
  return 0;
}

/* What the kernel command line can carry (the descriptor's rule for cmd and environment). */
static gboolean cmdline_safe(const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if (*p <= 0x20 || *p == 0x7f || *p == '"' || *p == '\'' || *p == '`' || *p == '\\')
      return FALSE;
  return TRUE;
}

OAKUK_API int oakuk_oci_package_add_arg(oakuk_oci_package *pkg, const char *arg, oakuk_error **error) {
  g_return_val_if_fail(pkg != NULL && arg != NULL, OAKUK_EINVAL);
  if (!*arg || !cmdline_safe(arg))
    return oakuk_set_error(error, OAKUK_EINVAL, 0, "args",
                           "package: argument \"%s\" is empty or has a space, quote, backslash or control "
                           "character the kernel command line cannot carry",
                           arg);
  g_ptr_array_add(pkg->args, g_strdup(arg));
  return 0;
}

OAKUK_API int oakuk_oci_package_add_env(oakuk_oci_package *pkg, const char *entry, oakuk_error **error) {
  g_return_val_if_fail(pkg != NULL && entry != NULL, OAKUK_EINVAL);
  const char *eq = strchr(entry, '=');
  gboolean key = eq && eq > entry && (g_ascii_isalpha(entry[0]) || entry[0] == '_');
  for (const char *p = entry; key && p < eq; p++)
    key = g_ascii_isalnum(*p) || *p == '_';
  if (!key || !cmdline_safe(entry))
    return oakuk_set_error(error, OAKUK_EINVAL, 0, "env",
                           "package: environment entry \"%s\" is not KEY=value without spaces, quotes, "
                           "backslashes or control characters",
                           entry);
  g_ptr_array_add(pkg->env, g_strdup(entry));
  return 0;
}

OAKUK_API int oakuk_oci_package_set_version(oakuk_oci_package *pkg, const char *version,
                                            oakuk_error **error) {
  g_return_val_if_fail(pkg != NULL, OAKUK_EINVAL);
  gboolean ok = !version || (g_ascii_isdigit(version[0]) && strlen(version) < 64);
  for (const char *p = version; ok && p && *p; p++)
    ok = g_ascii_isalnum(*p) || *p == '.' || *p == '-' || *p == '+';
  if (!ok)
    return oakuk_set_error(error, OAKUK_EINVAL, 0, "version", "package: version \"%s\" is not like 0.16.3",
                           version);
  g_free(pkg->version);
  pkg->version = g_strdup(version);
  return 0;
}

static gboolean cmdline_extra_ok(const char *extra, oakuk_error **error) {
  for (const unsigned char *p = (const unsigned char *)extra; p && *p; p++)
    if (*p < 0x20 || *p == 0x7f || *p == '"' || *p == '\'' || *p == '\\') {
      oakuk_set_error(error, OAKUK_EINVAL, 0, "cmdline_extra",
                      "package: cmdline_extra: control characters, quotes and backslashes are not allowed");
      return FALSE;
    }
  return TRUE;
}

OAKUK_API int oakuk_oci_package_set_cmdline_extra(oakuk_oci_package *pkg, const char *extra,
                                                  oakuk_error **error) {
  g_return_val_if_fail(pkg != NULL, OAKUK_EINVAL);
  if (!cmdline_extra_ok(extra, error))
    return OAKUK_EINVAL;
  g_free(pkg->cmdline_extra);
  pkg->cmdline_extra = extra && *extra ? g_strdup(extra) : NULL;
  return 0;
}

OAKUK_API int oakuk_oci_package_set_kernel_cmdline_extra(oakuk_oci_package *pkg, const char *arch,
                                                         const char *extra, oakuk_error **error) {
  g_return_val_if_fail(pkg != NULL && arch != NULL, OAKUK_EINVAL);
  if (!cmdline_extra_ok(extra, error))
    return OAKUK_EINVAL;
  for (guint i = 0; i < pkg->kernels->len; i++) {
    PkgKernel *k = pkg->kernels->pdata[i];
    if (strcmp(k->arch, arch) == 0) {
      g_free(k->cmdline_extra);
      k->cmdline_extra = extra && *extra ? g_strdup(extra) : NULL;
      return 0;
    }
  }
  return oakuk_set_error(error, OAKUK_EINVAL, 0, "arch", "package: cmdline_extra for %s: no %s kernel added",
                         arch, arch);
}

OAKUK_API size_t oakuk_oci_package_manifest_count(const oakuk_oci_package *pkg) {
  g_return_val_if_fail(pkg != NULL, 0);
  return pkg->kernels->len;
}

OAKUK_API const char *oakuk_oci_package_manifest_arch(const oakuk_oci_package *pkg, size_t i) {
  g_return_val_if_fail(pkg != NULL, NULL);
  return i < pkg->kernels->len ? ((PkgKernel *)pkg->kernels->pdata[i])->arch : NULL;
}

OAKUK_API const char *oakuk_oci_package_manifest_digest(const oakuk_oci_package *pkg, size_t i) {
  g_return_val_if_fail(pkg != NULL, NULL);
  return i < pkg->kernels->len ? ((PkgKernel *)pkg->kernels->pdata[i])->digest : NULL;
}

/* ---------------------------------------------------------------------------------------------- */
/* Tar writing, reproducible: sorted names, owner 0:0, times 0 */

static la_ssize_t to_bytes(struct archive *a, void *data, const void *buf, size_t n) {
  g_byte_array_append(data, buf, (guint)n);
  return (la_ssize_t)n;
}

static struct archive *tar_new(GByteArray *out) {
  struct archive *w = archive_write_new();
  archive_write_set_format_pax_restricted(w);
  archive_write_set_bytes_in_last_block(w, 1);
  archive_write_open(w, out, NULL, to_bytes, NULL);
  return w;
}

static struct archive_entry *entry_new(const char *path, mode_t type, mode_t perm, gint64 size) {
  struct archive_entry *e = archive_entry_new();
  archive_entry_set_pathname(e, path);
  archive_entry_set_filetype(e, type);
  archive_entry_set_perm(e, perm);
  archive_entry_set_size(e, size);
  archive_entry_set_uid(e, 0);
  archive_entry_set_gid(e, 0);
  archive_entry_set_mtime(e, 0, 0);
  return e;
}

static gboolean tar_data(struct archive *w, struct archive_entry *e, const void *data, gsize len,
                         const char *what, GError **error) {
  gboolean ok = archive_write_header(w, e) == ARCHIVE_OK &&
                (len == 0 || archive_write_data(w, data, len) == (la_ssize_t)len);
  archive_entry_free(e);
  if (!ok)
    set_gerror(error, OAKUK_EIO, "package: write %s: %s", what, archive_error_string(w));
  return ok;
}

static gboolean tar_file(struct archive *w, const char *path, const char *src, mode_t perm, GError **error) {
  g_autoptr(GMappedFile) m = g_mapped_file_new(src, FALSE, error);
  if (!m)
    return g_prefix_error(error, "package: "), FALSE;
  gsize len = g_mapped_file_get_length(m);
  return tar_data(w, entry_new(path, AE_IFREG, perm, (gint64)len), g_mapped_file_get_contents(m), len, src,
                  error);
}

static GBytes *tar_finish(struct archive *w, GByteArray *out, GError **error) {
  gboolean ok = archive_write_close(w) == ARCHIVE_OK;
  if (!ok)
    set_gerror(error, OAKUK_EIO, "package: finish a layer: %s", archive_error_string(w));
  archive_write_free(w);
  return ok ? g_byte_array_free_to_bytes(out) : (g_byte_array_unref(out), NULL);
}

/* A layer holding one file at path (KraftKit's NewLayerFromFile). */
static GBytes *file_layer(const char *path, const char *src, GError **error) {
  GByteArray *out = g_byte_array_new();
  struct archive *w = tar_new(out);
  struct stat st;
  mode_t perm = stat(src, &st) == 0 ? (st.st_mode & 0755) | 0444 : 0644;
  if (!tar_file(w, path + 1, src, perm, error)) {
    archive_write_free(w);
    g_byte_array_unref(out);
    return NULL;
  }
  return tar_finish(w, out, error);
}

static gint cmp_names(gconstpointer a, gconstpointer b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static gboolean tar_tree(struct archive *w, const char *root, const char *rel, GError **error) {
  g_autofree char *full = *rel ? g_build_filename(root, rel, NULL) : g_strdup(root);
  g_autoptr(GDir) d = g_dir_open(full, 0, error);
  if (!d)
    return g_prefix_error(error, "package: "), FALSE;
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
      return set_gerror(error, OAKUK_EIO, "package: stat %s: %s", p, g_strerror(errno)), FALSE;
    mode_t perm = st.st_mode & 0755;
    if (S_ISDIR(st.st_mode)) {
      if (!tar_data(w, entry_new(r, AE_IFDIR, perm | 0700, 0), NULL, 0, p, error) ||
          !tar_tree(w, root, r, error))
        return FALSE;
    } else if (S_ISREG(st.st_mode)) {
      if (!tar_file(w, r, p, perm | 0600, error))
        return FALSE;
    } else if (S_ISLNK(st.st_mode)) {
      char target[4096];
      ssize_t tn = readlink(p, target, sizeof target - 1);
      if (tn < 0)
        return set_gerror(error, OAKUK_EIO, "package: readlink %s: %s", p, g_strerror(errno)), FALSE;
      target[tn] = '\0';
      struct archive_entry *e = entry_new(r, AE_IFLNK, 0777, 0);
      archive_entry_set_symlink(e, target);
      if (!tar_data(w, e, NULL, 0, p, error))
        return FALSE;
    } else {
      return set_gerror(error, OAKUK_EINVAL,
                        "package: %s: only files, directories and symlinks can be packed", p),
             FALSE;
    }
  }
  return TRUE;
}

/* ---------------------------------------------------------------------------------------------- */
/* The image: blobs, manifests, index */

static GBytes *json_bytes(JsonBuilder *b) {
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  char *text = oakuk_json_node_to_string(root, FALSE);
  return g_bytes_new_take(text, strlen(text));
}

static void add_str(JsonBuilder *b, const char *key, const char *value) {
  if (!value)
    return;
  json_builder_set_member_name(b, key);
  json_builder_add_string_value(b, value);
}

static void add_list(JsonBuilder *b, const char *key, GPtrArray *list) {
  json_builder_set_member_name(b, key);
  json_builder_begin_array(b);
  for (guint k = 0; k < list->len; k++)
    json_builder_add_string_value(b, list->pdata[k]);
  json_builder_end_array(b);
}

/* The pairs of a NULL-terminated key, value list whose value is not NULL, as an object. */
static void add_map(JsonBuilder *b, const char *key, const char *const *kv) {
  json_builder_set_member_name(b, key);
  json_builder_begin_object(b);
  for (const char *const *p = kv; p[0]; p += 2)
    add_str(b, p[0], p[1]);
  json_builder_end_object(b);
}

static void add_platform(JsonBuilder *b, const char *os, const char *arch, const char *os_version) {
  json_builder_set_member_name(b, "platform");
  json_builder_begin_object(b);
  add_str(b, "architecture", arch);
  add_str(b, "os", os);
  add_str(b, "os.version", os_version);
  json_builder_end_object(b);
}

static void add_descriptor_head(JsonBuilder *b, const char *media, const char *digest, gsize size) {
  json_builder_begin_object(b);
  add_str(b, "mediaType", media);
  add_str(b, "digest", digest);
  json_builder_set_member_name(b, "size");
  json_builder_add_int_value(b, (gint64)size);
}

/* The blobs of a package, in the order they are written or pushed (layers and configs before the
 * manifests that name them, manifests before the index). */
typedef struct {
  GPtrArray *digests; /* char* */
  GHashTable *data;   /* digest -> GBytes */
  char *index_digest;
  GBytes *index;
} Blobs;

static void blobs_clear(Blobs *bl) {
  g_clear_pointer(&bl->digests, g_ptr_array_unref);
  g_clear_pointer(&bl->data, g_hash_table_unref);
  g_clear_pointer(&bl->index_digest, g_free);
  g_clear_pointer(&bl->index, g_bytes_unref);
}

/* Adds data as a blob (once per digest); returns its digest (owned by bl). */
static const char *blob_add(Blobs *bl, GBytes *data) {
  g_autofree char *d = oakuk_oci_digest_bytes(data);
  if (!g_hash_table_contains(bl->data, d)) {
    g_ptr_array_add(bl->digests, g_strdup(d));
    g_hash_table_insert(bl->data, g_strdup(d), g_bytes_ref(data));
  }
  for (guint k = 0; k < bl->digests->len; k++)
    if (strcmp(bl->digests->pdata[k], d) == 0)
      return bl->digests->pdata[k];
  g_assert_not_reached();
}

/* "b64:" + base64, as urunc.json's values are. */
static char *b64(const char *v) {
  g_autofree char *e = g_base64_encode((const guchar *)v, strlen(v));
  return g_strconcat("b64:", e, NULL);
}

/* Per architecture: what the kernel is. */
typedef struct {
  const char *flavor; /* "unikraft" or "linux" */
  char *version;      /* Unikraft's, or NULL */
} KernelKind;

static gboolean kernel_kind(const oakuk_oci_package *pkg, const PkgKernel *k, KernelKind *kind,
                            GError **error) {
  const char *flavor = NULL;
  char *version = NULL;
  oakuk_error *err = NULL;
  if (oakuk_image_kernel_unikraft_version(&flavor, &version, k->kernel, &err) < 0) {
    set_gerror(error, OAKUK_EIO, "package: %s", oakuk_error_message(err));
    oakuk_error_free(err);
    return FALSE;
  }
  kind->flavor = pkg->version || strcmp(flavor, "linux") != 0 ? "unikraft" : "linux";
  kind->version = pkg->version                      ? g_strdup(pkg->version)
                  : strcmp(flavor, "unikraft") == 0 ? g_strdup(version)
                                                    : NULL;
  oakuk_free(version);
  return TRUE;
}

/* The files layer: the files dir's tree at the image's root, and /urunc.json. */
static GBytes *files_layer(const oakuk_oci_package *pkg, const PkgKernel *k, const KernelKind *kind,
                           GError **error) {
  g_autoptr(GPtrArray) words = g_ptr_array_new();
  for (guint i = 0; i < pkg->args->len; i++)
    g_ptr_array_add(words, pkg->args->pdata[i]);
  g_ptr_array_add(words, NULL);
  g_autofree char *cmdline = g_strjoinv(" ", (char **)words->pdata);
  g_autofree char *t = b64(kind->flavor), *h = b64("qemu"), *bin = b64(KERNEL_PATH);
  g_autofree char *ini = k->initrd ? b64(INITRD_PATH) : NULL;
  g_autofree char *cmd = *cmdline ? b64(cmdline) : NULL;
  g_autofree char *ver = kind->version ? b64(kind->version) : NULL;
  g_autofree char *mount = pkg->files_dir ? b64("true") : NULL;
  const char *kv[] = {"com.urunc.unikernel.unikernelType",
                      t,
                      "com.urunc.unikernel.hypervisor",
                      h,
                      "com.urunc.unikernel.binary",
                      bin,
                      "com.urunc.unikernel.initrd",
                      ini,
                      "com.urunc.unikernel.cmdline",
                      cmd,
                      "com.urunc.unikernel.unikernelVersion",
                      ver,
                      "com.urunc.unikernel.mountRootfs",
                      mount,
                      NULL};
  g_autoptr(JsonBuilder) jb = json_builder_new();
  json_builder_begin_object(jb);
  for (const char *const *p = kv; p[0]; p += 2)
    add_str(jb, p[0], p[1]);
  json_builder_end_object(jb);
  g_autoptr(GBytes) urunc = json_bytes(jb);
  GByteArray *out = g_byte_array_new();
  struct archive *w = tar_new(out);
  gsize len;
  const void *data = g_bytes_get_data(urunc, &len);
  if ((pkg->files_dir && !tar_tree(w, pkg->files_dir, "", error)) ||
      !tar_data(w, entry_new("urunc.json", AE_IFREG, 0644, (gint64)len), data, len, "urunc.json", error)) {
    archive_write_free(w);
    g_byte_array_unref(out);
    return NULL;
  }
  return tar_finish(w, out, error);
}

/* One architecture's layers, config and manifest; returns the manifest's body, *size its size. */
static GBytes *build_manifest(const oakuk_oci_package *pkg, PkgKernel *k, const char *repo_name,
                              const char *full_name, Blobs *bl, KernelKind *kind, GError **error) {
  if (!kernel_kind(pkg, k, kind, error))
    return NULL;
  g_autoptr(GBytes) kl = file_layer(KERNEL_PATH, k->kernel, error);
  g_autoptr(GBytes) il = kl && k->initrd ? file_layer(INITRD_PATH, k->initrd, error) : NULL;
  g_autoptr(GBytes) fl = kl && (!k->initrd || il) ? files_layer(pkg, k, kind, error) : NULL;
  if (!fl)
    return NULL;
  GBytes *layers[] = {kl, il, fl};
  const char *paths[][2] = {
      {"org.unikraft.kernel.image", KERNEL_PATH}, {"org.unikraft.kernel.initrd", INITRD_PATH}, {NULL, NULL}};
  const char *arch = kraftkit_arch(k->arch);

  g_autoptr(JsonBuilder) cb = json_builder_new();
  json_builder_begin_object(cb);
  add_str(cb, "architecture", arch);
  add_str(cb, "os", "qemu");
  add_str(cb, "os.version", kind->version);
  json_builder_set_member_name(cb, "config");
  json_builder_begin_object(cb);
  if (pkg->env->len)
    add_list(cb, "Env", pkg->env);
  if (pkg->args->len)
    add_list(cb, "Cmd", pkg->args);
  json_builder_end_object(cb);
  json_builder_set_member_name(cb, "rootfs");
  json_builder_begin_object(cb);
  add_str(cb, "type", "layers");
  json_builder_set_member_name(cb, "diff_ids");
  json_builder_begin_array(cb);
  for (guint i = 0; i < G_N_ELEMENTS(layers); i++)
    if (layers[i]) {
      g_autofree char *d = oakuk_oci_digest_bytes(layers[i]);
      json_builder_add_string_value(cb, d); /* uncompressed: the diff id is the digest */
    }
  json_builder_end_array(cb);
  json_builder_end_object(cb);
  json_builder_end_object(cb);
  g_autoptr(GBytes) config = json_bytes(cb);

  g_autofree char *cmdline = NULL;
  {
    g_autoptr(GPtrArray) words = g_ptr_array_new();
    for (guint i = 0; i < pkg->args->len; i++)
      g_ptr_array_add(words, pkg->args->pdata[i]);
    g_ptr_array_add(words, NULL);
    cmdline = g_strjoinv(" ", (char **)words->pdata);
  }
  g_autofree char *kk = g_strdup_printf("oakuk %s", oakuk_version());
  const char *annotations[] = {"org.opencontainers.image.ref.name",
                               repo_name,
                               "io.containerd.image.name",
                               full_name,
                               "org.unikraft.image.name",
                               repo_name,
                               "org.unikraft.kernel.version",
                               kind->version,
                               "sh.kraftkit.version",
                               kk,
                               "com.urunc.unikernel.unikernelType",
                               kind->flavor,
                               "com.urunc.unikernel.hypervisor",
                               "qemu",
                               "com.urunc.unikernel.binary",
                               KERNEL_PATH,
                               "com.urunc.unikernel.initrd",
                               k->initrd ? INITRD_PATH : NULL,
                               "com.urunc.unikernel.cmdline",
                               *cmdline ? cmdline : NULL,
                               "com.urunc.unikernel.unikernelVersion",
                               kind->version,
                               "com.urunc.unikernel.mountRootfs",
                               pkg->files_dir ? "true" : NULL,
                               "org.oakestra.oakuk.cmdline-extra",
                               k->cmdline_extra ? k->cmdline_extra : pkg->cmdline_extra,
                               NULL};

  g_autoptr(JsonBuilder) mb = json_builder_new();
  json_builder_begin_object(mb);
  json_builder_set_member_name(mb, "schemaVersion");
  json_builder_add_int_value(mb, 2);
  add_str(mb, "mediaType", OAKUK_OCI_MEDIA_MANIFEST);
  json_builder_set_member_name(mb, "config");
  add_descriptor_head(mb, OAKUK_OCI_MEDIA_CONFIG, blob_add(bl, config), g_bytes_get_size(config));
  add_platform(mb, "qemu", arch, kind->version);
  json_builder_end_object(mb);
  json_builder_set_member_name(mb, "layers");
  json_builder_begin_array(mb);
  for (guint i = 0; i < G_N_ELEMENTS(layers); i++) {
    if (!layers[i])
      continue;
    add_descriptor_head(mb, MEDIA_LAYER_TAR, blob_add(bl, layers[i]), g_bytes_get_size(layers[i]));
    if (paths[i][0]) {
      const char *kv[] = {paths[i][0], paths[i][1], NULL};
      add_map(mb, "annotations", kv);
    }
    json_builder_end_object(mb);
  }
  json_builder_end_array(mb);
  add_map(mb, "annotations", annotations);
  json_builder_end_object(mb);
  return json_bytes(mb);
}

/* name "[registry/]repo[:tag]": the name without the tag, and the tag ("latest" when none). */
static gboolean split_name(const char *name, char **repo_name, char **tag, GError **error) {
  OakukOciRef ref;
  if (!oakuk_oci_ref_parse(name, &ref, error))
    return FALSE;
  gboolean digest = ref.digest != NULL;
  *tag = g_strdup(ref.tag);
  oakuk_oci_ref_clear(&ref);
  if (digest) {
    g_free(*tag);
    return set_gerror(error, OAKUK_EINVAL, "package name %s: a name to tag, not a digest", name), FALSE;
  }
  const char *slash = strrchr(name, '/');
  const char *colon = strrchr(slash ? slash : name, ':');
  *repo_name = colon ? g_strndup(name, (gsize)(colon - name)) : g_strdup(name);
  return TRUE;
}

static gboolean build(oakuk_oci_package *pkg, const char *name, Blobs *bl, char **tag_out, GError **error) {
  if (pkg->kernels->len == 0)
    return set_gerror(error, OAKUK_EINVAL, "package: no kernel added"), FALSE;
  g_autofree char *repo_name = NULL;
  if (!split_name(name, &repo_name, tag_out, error))
    return FALSE;
  bl->digests = g_ptr_array_new_with_free_func(g_free);
  bl->data = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, (GDestroyNotify)g_bytes_unref);
  g_autoptr(GPtrArray) manifests = g_ptr_array_new_with_free_func((GDestroyNotify)g_bytes_unref);
  g_autoptr(GPtrArray) versions = g_ptr_array_new_with_free_func(g_free);
  for (guint k = 0; k < pkg->kernels->len; k++) {
    PkgKernel *pk = pkg->kernels->pdata[k];
    KernelKind kind = {0};
    GBytes *m = build_manifest(pkg, pk, repo_name, name, bl, &kind, error);
    if (!m) {
      g_free(kind.version);
      return FALSE;
    }
    g_free(pk->digest);
    pk->digest = g_strdup(blob_add(bl, m));
    g_ptr_array_add(manifests, m);
    g_ptr_array_add(versions, kind.version);
  }
  g_autofree char *kk = g_strdup_printf("oakuk %s", oakuk_version());
  const char *annotations[] = {"org.opencontainers.image.ref.name",
                               repo_name,
                               "io.containerd.image.name",
                               name,
                               "sh.kraftkit.version",
                               kk,
                               NULL};
  g_autoptr(JsonBuilder) ib = json_builder_new();
  json_builder_begin_object(ib);
  json_builder_set_member_name(ib, "schemaVersion");
  json_builder_add_int_value(ib, 2);
  add_str(ib, "mediaType", OAKUK_OCI_MEDIA_INDEX);
  json_builder_set_member_name(ib, "manifests");
  json_builder_begin_array(ib);
  /* KraftKit's entries, then linux/<GOARCH> ones to the same manifests for urunc (containerd). */
  for (int alias = 0; alias < 2; alias++)
    for (guint k = 0; k < pkg->kernels->len; k++) {
      PkgKernel *pk = pkg->kernels->pdata[k];
      add_descriptor_head(ib, OAKUK_OCI_MEDIA_MANIFEST, pk->digest, g_bytes_get_size(manifests->pdata[k]));
      if (alias)
        add_platform(ib, "linux", pk->arch, NULL);
      else
        add_platform(ib, "qemu", kraftkit_arch(pk->arch), versions->pdata[k]);
      json_builder_end_object(ib);
    }
  json_builder_end_array(ib);
  add_map(ib, "annotations", annotations);
  json_builder_end_object(ib);
  bl->index = json_bytes(ib);
  bl->index_digest = oakuk_oci_digest_bytes(bl->index);
  return TRUE;
}

/* ---------------------------------------------------------------------------------------------- */
/* Output */

static gboolean write_layout(const char *path, Blobs *bl, const char *tag, GError **error) {
  g_autofree char *tmp = g_strconcat(path, ".tmp-XXXXXX", NULL);
  int fd = g_mkstemp_full(tmp, O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0)
    return set_gerror(error, OAKUK_EIO, "package: create %s: %s", tmp, g_strerror(errno)), FALSE;
  struct archive *w = archive_write_new();
  archive_write_set_format_pax_restricted(w);
  gboolean ok = archive_write_open_fd(w, fd) == ARCHIVE_OK;
  if (!ok)
    set_gerror(error, OAKUK_EIO, "package: write %s: %s", path, archive_error_string(w));
  const char *layout = "{\"imageLayoutVersion\":\"1.0.0\"}";
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  json_builder_set_member_name(b, "schemaVersion");
  json_builder_add_int_value(b, 2);
  add_str(b, "mediaType", OAKUK_OCI_MEDIA_INDEX);
  json_builder_set_member_name(b, "manifests");
  json_builder_begin_array(b);
  add_descriptor_head(b, OAKUK_OCI_MEDIA_INDEX, bl->index_digest, g_bytes_get_size(bl->index));
  const char *kv[] = {"org.opencontainers.image.ref.name", tag, NULL};
  add_map(b, "annotations", kv);
  json_builder_end_object(b);
  json_builder_end_array(b);
  json_builder_end_object(b);
  g_autoptr(GBytes) index_json = json_bytes(b);
  gsize n;
  const void *d;
  ok = ok && tar_data(w, entry_new("oci-layout", AE_IFREG, 0644, (gint64)strlen(layout)), layout,
                      strlen(layout), "oci-layout", error);
  d = g_bytes_get_data(index_json, &n);
  ok = ok && tar_data(w, entry_new("index.json", AE_IFREG, 0644, (gint64)n), d, n, "index.json", error);
  ok = ok && tar_data(w, entry_new("blobs", AE_IFDIR, 0755, 0), NULL, 0, "blobs", error) &&
       tar_data(w, entry_new("blobs/sha256", AE_IFDIR, 0755, 0), NULL, 0, "blobs", error);
  for (guint k = 0; ok && k <= bl->digests->len; k++) {
    const char *digest = k < bl->digests->len ? bl->digests->pdata[k] : bl->index_digest;
    GBytes *data = k < bl->digests->len ? g_hash_table_lookup(bl->data, digest) : bl->index;
    g_autofree char *name = g_strconcat("blobs/sha256/", digest + strlen("sha256:"), NULL);
    d = g_bytes_get_data(data, &n);
    ok = tar_data(w, entry_new(name, AE_IFREG, 0644, (gint64)n), d, n, name, error);
  }
  if (archive_write_close(w) != ARCHIVE_OK && ok)
    ok = (set_gerror(error, OAKUK_EIO, "package: write %s: %s", path, archive_error_string(w)), FALSE);
  archive_write_free(w);
  if (close(fd) != 0 && ok)
    ok = (set_gerror(error, OAKUK_EIO, "package: write %s: %s", path, g_strerror(errno)), FALSE);
  if (ok && rename(tmp, path) != 0)
    ok = (set_gerror(error, OAKUK_EIO, "package: rename to %s: %s", path, g_strerror(errno)), FALSE);
  if (!ok)
    unlink(tmp);
  return ok;
}

static int finish(oakuk_oci_package *pkg, gboolean ok, GError *err, Blobs *bl, char **digest_out,
                  oakuk_error **error) {
  if (ok && digest_out)
    *digest_out = g_strdup(bl->index_digest);
  blobs_clear(bl);
  if (!ok) {
    for (guint k = 0; k < pkg->kernels->len; k++)
      g_clear_pointer(&((PkgKernel *)pkg->kernels->pdata[k])->digest, g_free);
    return oakuk_propagate_gerror(error, err);
  }
  return 0;
}

OAKUK_API int oakuk_oci_package_write_archive(char **digest_out, oakuk_oci_package *pkg, const char *name,
                                              const char *path, oakuk_error **error) {
  g_return_val_if_fail(pkg != NULL && name != NULL && path != NULL, OAKUK_EINVAL);
  GError *err = NULL;
  Blobs bl = {0};
  g_autofree char *tag = NULL;
  gboolean ok = build(pkg, name, &bl, &tag, &err) && write_layout(path, &bl, tag, &err);
  return finish(pkg, ok, err, &bl, digest_out, error);
}

OAKUK_API int oakuk_oci_package_push(char **digest_out, oakuk_oci_package *pkg, const char *reference,
                                     const char *username, const char *password,
                                     const oakuk_container_options *opts, oakuk_error **error) {
  g_return_val_if_fail(pkg != NULL && reference != NULL, OAKUK_EINVAL);
  oakuk_container_options o;
  if (oakuk_container_options_read(&o, opts, error) < 0)
    return OAKUK_EINVAL;
  GError *err = NULL;
  Blobs bl = {0};
  g_autofree char *tag = NULL;
  OakukOciRef ref = {0};
  gboolean ok = build(pkg, reference, &bl, &tag, &err) && oakuk_oci_ref_parse(reference, &ref, &err);
  g_autoptr(OakukOciClient) c = ok ? oakuk_oci_client_new(ref.registry, username, password, &o, &err) : NULL;
  ok = ok && c;
  for (guint k = 0; ok && k < bl.digests->len; k++) {
    const char *d = bl.digests->pdata[k];
    GBytes *data = g_hash_table_lookup(bl.data, d);
    gboolean is_manifest = FALSE;
    for (guint i = 0; i < pkg->kernels->len; i++)
      is_manifest = is_manifest || g_strcmp0(((PkgKernel *)pkg->kernels->pdata[i])->digest, d) == 0;
    if (is_manifest) {
      g_autofree char *got =
          oakuk_oci_client_push_manifest(c, ref.repository, d, OAKUK_OCI_MEDIA_MANIFEST, data, &err);
      ok = got != NULL;
    } else {
      ok = oakuk_oci_client_push_blob(c, ref.repository, d, data, &err);
    }
  }
  if (ok) {
    g_autofree char *got =
        oakuk_oci_client_push_manifest(c, ref.repository, tag, OAKUK_OCI_MEDIA_INDEX, bl.index, &err);
    ok = got != NULL;
  }
  oakuk_oci_ref_clear(&ref);
  return finish(pkg, ok, err, &bl, digest_out, error);
}

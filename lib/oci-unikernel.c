/* Unikernel images in OCI form (docs/unikernels.md, "OCI images"): KraftKit's layout and urunc's,
 * pulled through the OCI client of oci.c and turned into the tree of an image cache entry (kernel,
 * initrd, files/) with its metadata; and the resolution of a reference to its platforms and pinned
 * digest without pulling layers. Everything here blocks: callers run it in a thread. */
#include "archive-safe.h"
#include "oci-private.h"
#include "sysutil-private.h"

#include <errno.h>
#include <gio/gio.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define set_gerror(err, code, ...) g_set_error(err, OAKUK_ERROR, -(code), __VA_ARGS__)

#define UK_CONFIG_MAX (4 * 1024 * 1024)
#define URUNC_JSON_MAX (64 * 1024)
#define ANNOTATIONS_MAX 512
#define INDEX_DEPTH_MAX 3

/* KraftKit's oci/ package: wellknown.go and annotations.go. */
#define KRAFTKIT_KERNEL "unikraft/bin/kernel"
#define KRAFTKIT_INITRD "unikraft/bin/initrd"
#define ANNOT_UK_KERNEL_PATH "org.unikraft.kernel.image"
#define ANNOT_UK_INITRD_PATH "org.unikraft.kernel.initrd"
#define ANNOT_UK_VERSION "org.unikraft.kernel.version"
/* urunc's pkg/unikontainers/config.go. */
#define URUNC_PREFIX "com.urunc.unikernel."
#define URUNC_JSON "urunc.json"
/* Ours: extra kernel arguments before the network parameters (oakuk.json's cmdline_extra). */
#define ANNOT_OAKUK_CMDLINE_EXTRA "org.oakestra.oakuk.cmdline-extra"

/* ---------------------------------------------------------------------------------------------- */
/* JSON from outside, by type */

/* The string members of o's object member key (annotations, Labels) added to t, the first value of
 * a key winning; at most ANNOTATIONS_MAX. */
static void string_map_add(GHashTable *t, JsonObject *o, const char *key) {
  JsonObject *m = object_of(o, key);
  if (!m)
    return;
  GList *members = json_object_get_members(m);
  for (GList *l = members; l && g_hash_table_size(t) < ANNOTATIONS_MAX; l = l->next) {
    const char *v = str_of(m, l->data);
    if (v && !g_hash_table_contains(t, l->data))
      g_hash_table_insert(t, g_strdup(l->data), g_strdup(v));
  }
  g_list_free(members);
}

static GHashTable *string_map_new(void) {
  return g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
}

static GPtrArray *string_list(JsonObject *o, const char *key) {
  GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
  JsonArray *arr = array_of(o, key);
  for (guint k = 0; arr && k < json_array_get_length(arr); k++) {
    JsonNode *e = json_array_get_element(arr, k);
    if (JSON_NODE_HOLDS_VALUE(e) && json_node_get_value_type(e) == G_TYPE_STRING)
      g_ptr_array_add(a, g_strdup(json_node_get_string(e)));
  }
  return a;
}

/* ---------------------------------------------------------------------------------------------- */
/* Choosing the platform manifest */

void oakuk_oci_uk_choice_free(OakukOciUkChoice *c) {
  if (!c)
    return;
  g_free(c->top_digest);
  g_free(c->manifest_digest);
  g_clear_pointer(&c->manifest, g_bytes_unref);
  g_clear_pointer(&c->entry_annotations, g_hash_table_unref);
  g_free(c->entry_os_version);
  g_free(c);
}

OakukOciUkChoice *oakuk_oci_uk_choose_from(OakukOciSession *s, const char *reference, GBytes *top,
                                           const char *top_digest, const char *arch, GError **error) {
  g_autoptr(OakukOciUkChoice) c = g_new0(OakukOciUkChoice, 1);
  c->top_digest = g_strdup(top_digest);
  c->entry_annotations = string_map_new();
  g_autofree char *what = g_strdup_printf("image %s: manifest", reference);
  g_autoptr(GBytes) body = g_bytes_ref(top);
  g_autofree char *digest = g_strdup(top_digest);
  for (int depth = 0;; depth++) {
    g_autoptr(JsonParser) p = NULL;
    JsonObject *o = oakuk_oci_parse_object(body, what, &p, error);
    if (!o)
      return NULL;
    if (!oakuk_oci_is_index(o))
      break;
    if (depth >= INDEX_DEPTH_MAX)
      return set_gerror(error, OAKUK_EINVAL, "image %s: indexes nested too deeply", reference), NULL;
    JsonObject *entry = NULL;
    g_autofree char *next = oakuk_oci_index_pick_unikernel(o, arch, reference, &entry, error);
    if (!next)
      return NULL;
    /* The annotations and os.version of the entry with a platform: a wrapping index (an OCI
     * layout's index.json) has none. */
    if (entry && object_of(entry, "platform")) {
      g_hash_table_remove_all(c->entry_annotations);
      string_map_add(c->entry_annotations, entry, "annotations");
      g_free(c->entry_os_version);
      c->entry_os_version = g_strdup(str_of(object_of(entry, "platform"), "os.version"));
    }
    g_clear_pointer(&body, g_bytes_unref);
    body = oakuk_oci_session_manifest(s, next, error);
    if (!body)
      return NULL;
    g_free(digest);
    digest = g_steal_pointer(&next);
  }
  c->manifest_digest = g_steal_pointer(&digest);
  c->manifest = g_steal_pointer(&body);
  return g_steal_pointer(&c);
}

OakukOciUkChoice *oakuk_oci_uk_choose(OakukOciSession *s, const char *reference, const char *arch,
                                      GError **error) {
  g_autofree char *digest = NULL;
  g_autoptr(GBytes) top = oakuk_oci_session_top(s, &digest, error);
  return top ? oakuk_oci_uk_choose_from(s, reference, top, digest, arch, error) : NULL;
}

/* ---------------------------------------------------------------------------------------------- */
/* urunc's metadata */

/* urunc's decodeConfigValue: "b64:" + base64, or (from older packagers) bare base64 that decodes to
 * text, or the value itself. Bare base64 is taken only when it decodes to printable text, so a
 * plain value that happens to use base64's alphabet ("qemu") stays what it is. NULL: bad "b64:". */
static char *urunc_decode(const char *v) {
  gboolean prefixed = g_str_has_prefix(v, "b64:");
  const char *b = prefixed ? v + 4 : v;
  size_t n = strlen(b);
  gboolean shape = n > 0 && n % 4 == 0;
  for (size_t k = 0; shape && k < n; k++)
    shape = g_ascii_isalnum(b[k]) || b[k] == '+' || b[k] == '/' || (b[k] == '=' && k >= n - 2);
  if (shape && n >= 2 && b[n - 2] == '=' && b[n - 1] != '=')
    shape = FALSE;
  if (!shape)
    return prefixed ? NULL : g_strdup(v);
  gsize len = 0;
  g_autofree guchar *d = g_base64_decode(b, &len);
  gboolean text = d && g_utf8_validate((const char *)d, (gssize)len, NULL);
  for (gsize k = 0; text && k < len; k++)
    text = d[k] >= 0x20 && d[k] != 0x7f;
  if (!text)
    return prefixed ? NULL : g_strdup(v);
  return g_strndup((const char *)d, len);
}

typedef struct {
  char *type, *hypervisor, *binary, *cmdline, *initrd, *version, *block;
  const char *source; /* where they were found, for messages */
} Urunc;

static void urunc_clear(Urunc *u) {
  g_free(u->type);
  g_free(u->hypervisor);
  g_free(u->binary);
  g_free(u->cmdline);
  g_free(u->initrd);
  g_free(u->version);
  g_free(u->block);
}

/* Reads urunc's keys from t; FALSE with an error for a bad "b64:" value. */
static gboolean urunc_from(Urunc *u, GHashTable *t, const char *source, const char *reference,
                           GError **error) {
  static const char *const keys[] = {"unikernelType", "hypervisor", "binary",          "cmdline",
                                     "initrd",        "block",      "unikernelVersion"};
  char **out[] = {&u->type, &u->hypervisor, &u->binary, &u->cmdline, &u->initrd, &u->block, &u->version};
  for (size_t k = 0; k < G_N_ELEMENTS(keys); k++) {
    g_autofree char *key = g_strconcat(URUNC_PREFIX, keys[k], NULL);
    const char *v = g_hash_table_lookup(t, key);
    if (!v || *out[k])
      continue;
    char *d = urunc_decode(v);
    if (!d)
      return set_gerror(error, OAKUK_EINVAL, "image %s: %s %s: \"b64:\" value is not base64 of text",
                        reference, source, key),
             FALSE;
    if (*d)
      *out[k] = d;
    else
      g_free(d);
  }
  if (u->binary && !u->source)
    u->source = source;
  return TRUE;
}

/* /urunc.json in the rootfs, a regular file at its top. */
static gboolean urunc_from_json(Urunc *u, const char *rootfs, const char *reference, GError **error) {
  g_autofree char *path = g_build_filename(rootfs, URUNC_JSON, NULL);
  struct stat st;
  if (lstat(path, &st) != 0)
    return TRUE;
  if (!S_ISREG(st.st_mode) || st.st_size > URUNC_JSON_MAX)
    return set_gerror(error, OAKUK_EINVAL, "image %s: /%s must be a regular file of at most %d bytes",
                      reference, URUNC_JSON, URUNC_JSON_MAX),
           FALSE;
  g_autofree char *text = NULL;
  gsize n;
  if (!g_file_get_contents(path, &text, &n, NULL))
    return set_gerror(error, OAKUK_EIO, "image %s: read /%s: %s", reference, URUNC_JSON, g_strerror(errno)),
           FALSE;
  g_autoptr(GBytes) b = g_bytes_new_take(g_steal_pointer(&text), n);
  g_autofree char *what = g_strdup_printf("image %s: /%s", reference, URUNC_JSON);
  g_autoptr(JsonParser) p = NULL;
  JsonObject *o = oakuk_oci_parse_object(b, what, &p, error);
  if (!o)
    return FALSE;
  g_autoptr(GHashTable) t = string_map_new();
  GList *members = json_object_get_members(o);
  for (GList *l = members; l; l = l->next)
    if (str_of(o, l->data))
      g_hash_table_insert(t, g_strdup(l->data), g_strdup(str_of(o, l->data)));
  g_list_free(members);
  return urunc_from(u, t, "/" URUNC_JSON, reference, error);
}

/* ---------------------------------------------------------------------------------------------- */
/* Pulling */

void oakuk_oci_uk_meta_clear(OakukOciUkMeta *m) {
  g_clear_pointer(&m->flavor, g_free);
  g_clear_pointer(&m->version, g_free);
  g_clear_pointer(&m->cmdline_extra, g_free);
  g_clear_pointer(&m->args, g_ptr_array_unref);
  g_clear_pointer(&m->env, g_ptr_array_unref);
}

typedef struct {
  const OakukOciUkLimits *lim;
  const OakukOciManifest *man;
  gint64 total;
} BytesProgress;

static void layer_progress(guint layer, guint layers, int percent, gpointer data) {
  BytesProgress *bp = data;
  gint64 got = 0;
  for (guint k = 0; k + 1 < layer && k < bp->man->n_layers; k++)
    got += bp->man->layers[k].size;
  if (layer >= 1 && layer <= bp->man->n_layers)
    got += bp->man->layers[layer - 1].size * percent / 100;
  bp->lim->progress(got, bp->total, bp->lim->data);
}

/* An argument or environment entry the kernel command line can carry (as the descriptor's cmd and
 * environment): no spaces, quotes, backslashes or control characters. */
static gboolean cmdline_safe(const char *s) {
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if (*p <= 0x20 || *p == 0x7f || *p == '"' || *p == '\'' || *p == '`' || *p == '\\')
      return FALSE;
  return TRUE;
}

static gboolean check_list(GPtrArray *a, const char *reference, const char *what, GError **error) {
  for (guint k = 0; k < a->len; k++)
    if (!cmdline_safe(a->pdata[k]))
      return set_gerror(error, OAKUK_EINVAL,
                        "image %s: %s[%u] \"%s\" has a space, quote, backslash or control character the "
                        "kernel command line cannot carry",
                        reference, what, k, (const char *)a->pdata[k]),
             FALSE;
  return TRUE;
}

/* Resolves the absolute or relative path p inside rootfs (through the image's own links, "/" being
 * the rootfs) to a regular file; returns its path relative to rootfs. */
static char *rootfs_file(const char *rootfs, const char *p, const char *reference, const char *what,
                         GError **error) {
  OakukArchivePathCheck why;
  const char *rel = p;
  while (*rel == '/')
    rel++;
  g_autofree char *norm = oakuk_archive_normalize_path(rel, &why);
  g_autofree char *resolved = NULL, *via = NULL;
  OakukArchiveResolve r = norm && *norm
                              ? oakuk_archive_resolve("", norm, TRUE, TRUE, oakuk_archive_readlink_disk,
                                                      (gpointer)rootfs, &resolved, &via)
                              : OAKUK_ARCHIVE_RESOLVE_ESCAPES;
  if (r != OAKUK_ARCHIVE_RESOLVE_OK)
    return set_gerror(error, OAKUK_EPERM, "image %s: %s %s is not a path inside the image", reference, what,
                      p),
           NULL;
  g_autofree char *full = g_build_filename(rootfs, resolved, NULL);
  struct stat st;
  if (lstat(full, &st) != 0 || !S_ISREG(st.st_mode))
    return set_gerror(error, OAKUK_EINVAL, "image %s: %s %s is not a regular file in the image", reference,
                      what, p),
           NULL;
  return g_steal_pointer(&resolved);
}

/* Moves rootfs/rel to dest and removes the directories it leaves empty. */
static gboolean move_out(const char *rootfs, const char *rel, const char *dest, GError **error) {
  g_autofree char *src = g_build_filename(rootfs, rel, NULL);
  if (rename(src, dest) != 0)
    return set_gerror(error, OAKUK_EIO, "move %s to %s: %s", src, dest, g_strerror(errno)), FALSE;
  g_autofree char *dir = g_path_get_dirname(rel);
  while (strcmp(dir, ".") != 0 && strcmp(dir, "/") != 0) {
    g_autofree char *full = g_build_filename(rootfs, dir, NULL);
    if (rmdir(full) != 0)
      break;
    char *up = g_path_get_dirname(dir);
    g_free(dir);
    dir = up;
  }
  return TRUE;
}

static gboolean dir_is_empty(const char *dir) {
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  return !d || g_dir_read_name(d) == NULL;
}

typedef struct {
  GHashTable *annotations; /* the manifest's, then the index entry's */
  GHashTable *labels;      /* the config's config.Labels */
  GHashTable *layer_paths; /* org.unikraft.kernel.image / .initrd of the layers */
  JsonParser *config_parser;
  JsonObject *config; /* the image config */
} Described;

static void described_clear(Described *d) {
  g_clear_pointer(&d->annotations, g_hash_table_unref);
  g_clear_pointer(&d->labels, g_hash_table_unref);
  g_clear_pointer(&d->layer_paths, g_hash_table_unref);
  g_clear_object(&d->config_parser);
}

/* The platform the config states must be arch's, and one QEMU runs. */
static gboolean check_platform(JsonObject *config, const char *arch, const char *reference, GError **error) {
  const char *a = str_of(config, "architecture");
  const char *os = str_of(config, "os");
  const char *why = oakuk_oci_unikernel_os_refusal(os);
  if (why)
    return set_gerror(
               error, OAKUK_EUNSUPPORTED,
               "image %s: the config's platform is %s/%s, %s: oakuk runs unikernels under QEMU (platform "
               "os \"qemu\", or \"linux\" for urunc images)",
               reference, os, a ? a : "", why),
           FALSE;
  if (a && g_strcmp0(oakuk_oci_unikernel_goarch(a), arch) != 0)
    return set_gerror(error, OAKUK_EUNSUPPORTED, "image %s: the config's architecture is \"%s\", not %s",
                      reference, a, arch),
           FALSE;
  return TRUE;
}

/* Reads the manifest's and config's descriptions of the image. */
static OakukOciManifest *describe(OakukOciSession *s, const char *reference, const OakukOciUkChoice *choice,
                                  const char *arch, Described *d, GError **error) {
  g_autofree char *what = g_strdup_printf("image %s: manifest", reference);
  g_autoptr(JsonParser) mp = NULL;
  JsonObject *m = oakuk_oci_parse_object(choice->manifest, what, &mp, error);
  if (!m)
    return NULL;
  g_autoptr(OakukOciManifest) man = oakuk_oci_manifest_parse(m, reference, error);
  if (!man)
    return NULL;
  d->annotations = string_map_new();
  string_map_add(d->annotations, m, "annotations");
  GHashTableIter it;
  gpointer k, v;
  g_hash_table_iter_init(&it, choice->entry_annotations);
  while (g_hash_table_iter_next(&it, &k, &v))
    if (!g_hash_table_contains(d->annotations, k) && g_hash_table_size(d->annotations) < ANNOTATIONS_MAX)
      g_hash_table_insert(d->annotations, g_strdup(k), g_strdup(v));
  d->layer_paths = string_map_new();
  JsonArray *layers = array_of(m, "layers");
  for (guint i = 0; layers && i < json_array_get_length(layers); i++) {
    JsonNode *ln = json_array_get_element(layers, i);
    JsonObject *a = JSON_NODE_HOLDS_OBJECT(ln) ? object_of(json_node_get_object(ln), "annotations") : NULL;
    if (str_of(a, ANNOT_UK_KERNEL_PATH) && !g_hash_table_contains(d->layer_paths, ANNOT_UK_KERNEL_PATH))
      g_hash_table_insert(d->layer_paths, g_strdup(ANNOT_UK_KERNEL_PATH),
                          g_strdup(str_of(a, ANNOT_UK_KERNEL_PATH)));
    if (str_of(a, ANNOT_UK_INITRD_PATH) && !g_hash_table_contains(d->layer_paths, ANNOT_UK_INITRD_PATH))
      g_hash_table_insert(d->layer_paths, g_strdup(ANNOT_UK_INITRD_PATH),
                          g_strdup(str_of(a, ANNOT_UK_INITRD_PATH)));
  }
  g_autoptr(GBytes) config =
      oakuk_oci_session_blob(s, man->config.digest, man->config.size, UK_CONFIG_MAX, error);
  if (!config)
    return NULL;
  g_autofree char *cwhat = g_strdup_printf("image %s: config", reference);
  d->config = oakuk_oci_parse_object(config, cwhat, &d->config_parser, error);
  if (!d->config || !check_platform(d->config, arch, reference, error))
    return NULL;
  d->labels = string_map_new();
  string_map_add(d->labels, object_of(d->config, "config"), "Labels");
  return g_steal_pointer(&man);
}

/* Downloads the layers into the blob store and applies them to rootfs, within the limits. */
static gboolean unpack_layers(OakukOciSession *s, const char *reference, const OakukOciManifest *man,
                              const OakukOciUkLimits *lim, const char *rootfs, GError **error) {
  gint64 total = 0;
  for (guint k = 0; k < man->n_layers; k++)
    total += man->layers[k].size;
  if ((guint64)total > lim->max_download_bytes)
    return set_gerror(error, OAKUK_EINVAL,
                      "image %s: its layers are %" G_GINT64_FORMAT
                      " bytes, over the limit of %" G_GUINT64_FORMAT " bytes (max_download_bytes)",
                      reference, total, lim->max_download_bytes),
           FALSE;
  BytesProgress bp = {lim, man, total};
  if (lim->progress)
    lim->progress(0, total, lim->data);
  guint64 entries = 0, bytes = 0;
  for (guint k = 0; k < man->n_layers; k++) {
    g_autofree char *w = g_strdup_printf("layer %u/%u", k + 1, man->n_layers);
    if (!oakuk_oci_session_fetch_blob(s, lim->blobs_dir, man->layers[k].digest, man->layers[k].size,
                                      lim->progress ? layer_progress : NULL, &bp, k + 1, man->n_layers, w,
                                      error))
      return FALSE;
    g_autofree char *path = g_build_filename(lim->blobs_dir, man->layers[k].digest + 7, NULL);
    g_autofree char *what =
        g_strdup_printf("image %s: layer %u/%u (%s)", reference, k + 1, man->n_layers, man->layers[k].digest);
    if (!oakuk_oci_apply_layer_limited(rootfs, path, what, &entries, lim->max_entries, &bytes,
                                       lim->max_unpacked_bytes, error))
      return FALSE;
  }
  if (lim->progress)
    lim->progress(total, total, lim->data);
  return TRUE;
}

static GPtrArray *split_words(const char *s) {
  GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
  g_auto(GStrv) w = g_strsplit_set(s, " \t", -1);
  for (char **p = w; *p; p++)
    if (**p)
      g_ptr_array_add(a, g_strdup(*p));
  return a;
}

/* urunc's image: its keys say where the kernel is and how to run it. */
static gboolean take_urunc(Urunc *u, Described *d, const char *rootfs, const char *reference, char **kernel,
                           char **initrd, OakukOciUkMeta *meta, GError **error) {
  if (!u->type || !u->hypervisor)
    return set_gerror(error, OAKUK_EINVAL, "image %s: %s names %sbinary but not %s", reference, u->source,
                      URUNC_PREFIX, u->type ? URUNC_PREFIX "hypervisor" : URUNC_PREFIX "unikernelType"),
           FALSE;
  if (strcmp(u->hypervisor, "qemu") != 0)
    return set_gerror(error, OAKUK_EUNSUPPORTED,
                      "image %s: %shypervisor is \"%s\": oakuk runs unikernels under QEMU only (\"qemu\")",
                      reference, URUNC_PREFIX, u->hypervisor),
           FALSE;
  if (strcmp(u->type, "unikraft") != 0 && strcmp(u->type, "linux") != 0)
    return set_gerror(error, OAKUK_EUNSUPPORTED,
                      "image %s: %sunikernelType is \"%s\": oakuk runs unikraft and linux guests", reference,
                      URUNC_PREFIX, u->type),
           FALSE;
  if (u->block)
    return set_gerror(error, OAKUK_EUNSUPPORTED,
                      "image %s: %sblock names a block image; oakuk shares files with the guest by 9p, not "
                      "block devices",
                      reference, URUNC_PREFIX),
           FALSE;
  if (!(*kernel = rootfs_file(rootfs, u->binary, reference, URUNC_PREFIX "binary", error)))
    return FALSE;
  if (u->initrd && !(*initrd = rootfs_file(rootfs, u->initrd, reference, URUNC_PREFIX "initrd", error)))
    return FALSE;
  meta->layout = "urunc";
  meta->flavor = g_strdup(u->type);
  meta->version = g_strdup(u->version);
  if (u->cmdline) {
    meta->args = split_words(u->cmdline);
  } else {
    JsonObject *c = object_of(d->config, "config");
    meta->args = string_list(c, "Entrypoint");
    g_autoptr(GPtrArray) cmd = string_list(c, "Cmd");
    for (guint k = 0; k < cmd->len; k++)
      g_ptr_array_add(meta->args, g_strdup(cmd->pdata[k]));
  }
  return TRUE;
}

/* KraftKit's image: the kernel at /unikraft/bin/kernel (or where a layer's annotation says), the
 * initrd at /unikraft/bin/initrd, Cmd the kernel arguments, os.version Unikraft's version. */
static gboolean take_kraftkit(Described *d, const OakukOciUkChoice *choice, const char *rootfs,
                              const char *reference, char **kernel, char **initrd, OakukOciUkMeta *meta,
                              GError **error) {
  const char *kp = g_hash_table_lookup(d->layer_paths, ANNOT_UK_KERNEL_PATH);
  g_autofree char *kfull = g_build_filename(rootfs, KRAFTKIT_KERNEL, NULL);
  if (!kp && !g_file_test(kfull, G_FILE_TEST_EXISTS))
    return set_gerror(error, OAKUK_EINVAL,
                      "image %s: no kernel: neither /" KRAFTKIT_KERNEL " (KraftKit's layout) nor a %sbinary "
                      "annotation or /%s (urunc's)",
                      reference, URUNC_PREFIX, URUNC_JSON),
           FALSE;
  if (!(*kernel = rootfs_file(rootfs, kp ? kp : "/" KRAFTKIT_KERNEL, reference, "kernel", error)))
    return FALSE;
  const char *ip = g_hash_table_lookup(d->layer_paths, ANNOT_UK_INITRD_PATH);
  g_autofree char *ifull = g_build_filename(rootfs, KRAFTKIT_INITRD, NULL);
  struct stat st;
  if (ip || (lstat(ifull, &st) == 0 && st.st_size > 0))
    if (!(*initrd = rootfs_file(rootfs, ip ? ip : "/" KRAFTKIT_INITRD, reference, "initrd", error)))
      return FALSE;
  meta->layout = "kraftkit";
  const char *v = str_of(d->config, "os.version");
  if (!v || !*v)
    v = g_hash_table_lookup(d->annotations, ANNOT_UK_VERSION);
  if (!v || !*v)
    v = choice->entry_os_version;
  meta->version = v && *v ? g_strdup(v) : NULL;
  meta->args = string_list(object_of(d->config, "config"), "Cmd");
  return TRUE;
}

/* A version as the runtime compares them (digits and dots), else dropped with the reason. */
static gboolean check_version(OakukOciUkMeta *meta, const char *reference, GError **error) {
  if (!meta->version)
    return TRUE;
  const char *v = meta->version[0] == 'v' ? meta->version + 1 : meta->version;
  gboolean ok = g_ascii_isdigit(*v) && strlen(v) < 64;
  for (const char *p = v; ok && *p; p++)
    ok = g_ascii_isalnum(*p) || *p == '.' || *p == '-' || *p == '+' || *p == '_';
  if (!ok)
    return set_gerror(error, OAKUK_EINVAL, "image %s: version \"%s\" is not a version (like 0.16.3)",
                      reference, meta->version),
           FALSE;
  if (v != meta->version) {
    char *t = g_strdup(v);
    g_free(meta->version);
    meta->version = t;
  }
  return TRUE;
}

gboolean oakuk_oci_uk_pull(OakukOciSession *s, const char *reference, const OakukOciUkChoice *choice,
                           const char *arch, const OakukOciUkLimits *lim, const char *work, const char *tree,
                           OakukOciUkMeta *meta, GError **error) {
  Described d = {0};
  Urunc u = {0};
  g_autofree char *kernel = NULL, *initrd = NULL;
  g_autofree char *rootfs = g_build_filename(work, "rootfs", NULL);
  g_autofree char *kdest = g_build_filename(tree, "kernel", NULL);
  g_autofree char *idest = g_build_filename(tree, "initrd", NULL);
  g_autofree char *files = g_build_filename(tree, "files", NULL);
  g_autofree char *urunc_json = g_build_filename(rootfs, URUNC_JSON, NULL);
  const char *extra = NULL;
  gboolean ok = FALSE;
  g_autoptr(OakukOciManifest) man = describe(s, reference, choice, arch, &d, error);
  if (!man)
    goto out;
  if (g_mkdir_with_parents(rootfs, 0755) != 0 || g_mkdir_with_parents(tree, 0755) != 0) {
    set_gerror(error, OAKUK_EIO, "create %s: %s", rootfs, g_strerror(errno));
    goto out;
  }
  if (!unpack_layers(s, reference, man, lim, rootfs, error))
    goto out;
  if (!urunc_from(&u, d.annotations, "the manifest's annotations", reference, error) ||
      !urunc_from(&u, d.labels, "the config's labels", reference, error) ||
      !urunc_from_json(&u, rootfs, reference, error))
    goto out;
  if (u.binary ? !take_urunc(&u, &d, rootfs, reference, &kernel, &initrd, meta, error)
               : !take_kraftkit(&d, choice, rootfs, reference, &kernel, &initrd, meta, error))
    goto out;
  meta->env = string_list(object_of(d.config, "config"), "Env");
  extra = g_hash_table_lookup(d.annotations, ANNOT_OAKUK_CMDLINE_EXTRA);
  if (extra) {
    for (const unsigned char *p = (const unsigned char *)extra; *p; p++)
      if (*p < 0x20 || *p == 0x7f || *p == '"' || *p == '\'' || *p == '\\') {
        set_gerror(error, OAKUK_EINVAL,
                   "image %s: annotation " ANNOT_OAKUK_CMDLINE_EXTRA
                   ": control characters, quotes and backslashes are not allowed",
                   reference);
        goto out;
      }
    meta->cmdline_extra = g_strdup(extra);
  }
  if (!check_list(meta->args, reference, meta->layout[0] == 'u' ? "the command line" : "Cmd", error) ||
      !check_list(meta->env, reference, "Env", error) || !check_version(meta, reference, error))
    goto out;
  if (!move_out(rootfs, kernel, kdest, error) || (initrd && !move_out(rootfs, initrd, idest, error)))
    goto out;
  meta->initrd = initrd != NULL;
  /* urunc.json describes the image to urunc; it is not a file for the guest. */
  unlink(urunc_json);
  if (!dir_is_empty(rootfs)) {
    if (rename(rootfs, files) != 0) {
      set_gerror(error, OAKUK_EIO, "move %s to %s: %s", rootfs, files, g_strerror(errno));
      goto out;
    }
    chmod(files, 0755);
    meta->files = TRUE;
  }
  ok = TRUE;
out:
  urunc_clear(&u);
  described_clear(&d);
  if (g_file_test(rootfs, G_FILE_TEST_EXISTS))
    oakuk_rm_rf(rootfs, NULL);
  return ok;
}

/* ---------------------------------------------------------------------------------------------- */
/* Resolution */

typedef struct {
  char *os, *architecture, *os_version, *digest;
} Platform;

static void platform_free(gpointer p) {
  Platform *pl = p;
  g_free(pl->os);
  g_free(pl->architecture);
  g_free(pl->os_version);
  g_free(pl->digest);
  g_free(pl);
}

struct oakuk_oci_resolution {
  gatomicrefcount refcount;
  char *digest;
  char *pinned;
  GPtrArray *archs;     /* char*, GOARCH */
  GPtrArray *platforms; /* Platform* */
};

OAKUK_API oakuk_oci_resolution *oakuk_oci_resolution_ref(oakuk_oci_resolution *res) {
  g_return_val_if_fail(res != NULL, NULL);
  g_atomic_ref_count_inc(&res->refcount);
  return res;
}

OAKUK_API void oakuk_oci_resolution_unref(oakuk_oci_resolution *res) {
  if (res == NULL || !g_atomic_ref_count_dec(&res->refcount))
    return;
  g_free(res->digest);
  g_free(res->pinned);
  g_ptr_array_unref(res->archs);
  g_ptr_array_unref(res->platforms);
  g_free(res);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(oakuk_oci_resolution, oakuk_oci_resolution_unref)

OAKUK_DEFINE_GETTER(const char *, oakuk_oci_resolution_digest, oakuk_oci_resolution, digest, NULL)
OAKUK_DEFINE_GETTER(const char *, oakuk_oci_resolution_pinned, oakuk_oci_resolution, pinned, NULL)

OAKUK_API size_t oakuk_oci_resolution_arch_count(const oakuk_oci_resolution *res) {
  g_return_val_if_fail(res != NULL, 0);
  return res->archs->len;
}

OAKUK_API const char *oakuk_oci_resolution_arch(const oakuk_oci_resolution *res, size_t i) {
  g_return_val_if_fail(res != NULL, NULL);
  return i < res->archs->len ? g_ptr_array_index(res->archs, i) : NULL;
}

OAKUK_API size_t oakuk_oci_resolution_platform_count(const oakuk_oci_resolution *res) {
  g_return_val_if_fail(res != NULL, 0);
  return res->platforms->len;
}

static const Platform *platform_at(const oakuk_oci_resolution *res, size_t i) {
  return i < res->platforms->len ? g_ptr_array_index(res->platforms, i) : NULL;
}

OAKUK_API const char *oakuk_oci_resolution_platform_os(const oakuk_oci_resolution *res, size_t i) {
  g_return_val_if_fail(res != NULL, NULL);
  return platform_at(res, i) ? platform_at(res, i)->os : NULL;
}

OAKUK_API const char *oakuk_oci_resolution_platform_architecture(const oakuk_oci_resolution *res, size_t i) {
  g_return_val_if_fail(res != NULL, NULL);
  return platform_at(res, i) ? platform_at(res, i)->architecture : NULL;
}

OAKUK_API const char *oakuk_oci_resolution_platform_os_version(const oakuk_oci_resolution *res, size_t i) {
  g_return_val_if_fail(res != NULL, NULL);
  return platform_at(res, i) ? platform_at(res, i)->os_version : NULL;
}

OAKUK_API const char *oakuk_oci_resolution_platform_digest(const oakuk_oci_resolution *res, size_t i) {
  g_return_val_if_fail(res != NULL, NULL);
  return platform_at(res, i) ? platform_at(res, i)->digest : NULL;
}

static void add_platform(oakuk_oci_resolution *res, JsonObject *p, const char *digest) {
  Platform *pl = g_new0(Platform, 1);
  pl->os = g_strdup(str_of(p, "os") ? str_of(p, "os") : "");
  pl->architecture = g_strdup(str_of(p, "architecture") ? str_of(p, "architecture") : "");
  pl->os_version = g_strdup(str_of(p, "os.version"));
  pl->digest = g_strdup(digest);
  g_ptr_array_add(res->platforms, pl);
  const char *goarch = oakuk_oci_unikernel_goarch(pl->architecture);
  if (goarch && !oakuk_oci_unikernel_os_refusal(*pl->os ? pl->os : NULL)) {
    for (guint k = 0; k < res->archs->len; k++)
      if (strcmp(res->archs->pdata[k], goarch) == 0)
        return;
    g_ptr_array_add(res->archs, g_strdup(goarch));
  }
}

/* A single manifest: its config says the platform. */
static gboolean resolve_manifest(OakukOciSession *s, const char *reference, JsonObject *m, const char *digest,
                                 oakuk_oci_resolution *res, GError **error) {
  g_autoptr(OakukOciManifest) man = oakuk_oci_manifest_parse(m, reference, error);
  if (!man)
    return FALSE;
  g_autoptr(GBytes) config =
      oakuk_oci_session_blob(s, man->config.digest, man->config.size, UK_CONFIG_MAX, error);
  if (!config)
    return FALSE;
  g_autofree char *what = g_strdup_printf("image %s: config", reference);
  g_autoptr(JsonParser) p = NULL;
  JsonObject *c = oakuk_oci_parse_object(config, what, &p, error);
  if (!c)
    return FALSE;
  add_platform(res, c, digest);
  return TRUE;
}

static gboolean resolve_from(OakukOciSession *s, const char *reference, GBytes *top, const char *top_digest,
                             oakuk_oci_resolution *res, GError **error) {
  g_autoptr(GBytes) body = g_bytes_ref(top);
  g_autofree char *digest = g_strdup(top_digest);
  g_autofree char *what = g_strdup_printf("image %s: manifest", reference);
  for (int depth = 0;; depth++) {
    g_autoptr(JsonParser) p = NULL;
    JsonObject *o = oakuk_oci_parse_object(body, what, &p, error);
    if (!o)
      return FALSE;
    if (!oakuk_oci_is_index(o))
      return resolve_manifest(s, reference, o, digest, res, error);
    if (depth >= INDEX_DEPTH_MAX)
      return set_gerror(error, OAKUK_EINVAL, "image %s: indexes nested too deeply", reference), FALSE;
    JsonArray *ms = array_of(o, "manifests");
    const char *only = NULL;
    guint valid = 0;
    for (guint k = 0; ms && k < json_array_get_length(ms) && k < 1024; k++) {
      JsonNode *n = json_array_get_element(ms, k);
      JsonObject *e = JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
      const char *d = str_of(e, "digest");
      if (!oakuk_oci_digest_is_valid(d))
        continue;
      valid++;
      only = d;
      if (object_of(e, "platform"))
        add_platform(res, object_of(e, "platform"), d);
    }
    if (res->platforms->len > 0)
      return TRUE;
    /* An index without platforms around a single image (an OCI layout's index.json): look inside. */
    if (valid != 1)
      return set_gerror(error, OAKUK_EINVAL, "image %s: an index of %u entries without platforms", reference,
                        valid),
             FALSE;
    g_autofree char *next = g_strdup(only);
    g_clear_pointer(&body, g_bytes_unref);
    if (!(body = oakuk_oci_session_manifest(s, next, error)))
      return FALSE;
    g_free(digest);
    digest = g_steal_pointer(&next);
  }
}

OAKUK_API oakuk_oci_resolution *oakuk_oci_resolve(const char *reference, const char *username,
                                                  const char *password, const oakuk_container_options *opts,
                                                  oakuk_error **error) {
  g_return_val_if_fail(reference != NULL, NULL);
  oakuk_container_options o;
  if (oakuk_container_options_read(&o, opts, error) < 0)
    return NULL;
  GError *err = NULL;
  g_autofree char *work = g_dir_make_tmp("oakuk-resolve-XXXXXX", &err);
  if (!work) {
    oakuk_set_error(error, OAKUK_EIO, 0, NULL, "resolve %s: %s", reference, err->message);
    g_error_free(err);
    return NULL;
  }
  g_autoptr(oakuk_oci_resolution) res = g_new0(oakuk_oci_resolution, 1);
  g_atomic_ref_count_init(&res->refcount);
  res->archs = g_ptr_array_new_with_free_func(g_free);
  res->platforms = g_ptr_array_new_with_free_func(platform_free);
  g_autofree char *digest = NULL;
  g_autoptr(GBytes) top = NULL;
  {
    g_autoptr(OakukOciSession) s =
        oakuk_oci_session_open(work, reference, username, password, &o, NULL, &err);
    if (s && (top = oakuk_oci_session_top(s, &digest, &err)) &&
        resolve_from(s, reference, top, digest, res, &err)) {
      res->digest = g_strdup(digest);
      res->pinned = oakuk_oci_session_registry(s) ? g_strdup_printf("%s/%s@%s", oakuk_oci_session_registry(s),
                                                                    oakuk_oci_session_repository(s), digest)
                                                  : g_strdup(reference);
    }
  }
  oakuk_rm_rf(work, NULL);
  if (err) {
    oakuk_propagate_gerror(error, err);
    return NULL;
  }
  return g_steal_pointer(&res);
}

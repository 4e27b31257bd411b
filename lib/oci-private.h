/* OCI images (docs/architecture.md §11): references, the distribution API client (pull and push), layer
 * unpacking with whiteouts, the shared blob cache and image building. Used by container.c and
 * seen by the container tests. Not installed, not exported. */
#ifndef OAKUK_OCI_PRIVATE_H
#define OAKUK_OCI_PRIVATE_H

#include "oakuk-private.h"

#include <json-glib/json-glib.h>

/* Members of JSON from outside, by type: NULL when absent or of another type (json-glib's own
 * getters emit criticals on a type mismatch). Shared by oci.c and oci-unikernel.c. */
static inline const char *str_of(JsonObject *o, const char *key) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  return n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_STRING
             ? json_node_get_string(n)
             : NULL;
}

static inline JsonObject *object_of(JsonObject *o, const char *key) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  return n && JSON_NODE_HOLDS_OBJECT(n) ? json_node_get_object(n) : NULL;
}

static inline JsonArray *array_of(JsonObject *o, const char *key) {
  JsonNode *n = o ? json_object_get_member(o, key) : NULL;
  return n && JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n) : NULL;
}

G_BEGIN_DECLS

#define OAKUK_OCI_MEDIA_INDEX "application/vnd.oci.image.index.v1+json"
#define OAKUK_OCI_MEDIA_MANIFEST "application/vnd.oci.image.manifest.v1+json"
#define OAKUK_OCI_MEDIA_CONFIG "application/vnd.oci.image.config.v1+json"
#define OAKUK_OCI_MEDIA_LAYER_GZIP "application/vnd.oci.image.layer.v1.tar+gzip"
#define OAKUK_DOCKER_MEDIA_LIST "application/vnd.docker.distribution.manifest.list.v2+json"
#define OAKUK_DOCKER_MEDIA_MANIFEST "application/vnd.docker.distribution.manifest.v2+json"

/* A parsed reference "[registry/]repository[:tag][@sha256:hex]". Docker Hub names without a
 * registry become registry-1.docker.io and library/<name>. */
typedef struct {
  char *registry;   /* "host" or "host:port" */
  char *repository; /* "library/busybox" */
  char *tag;        /* NULL when only a digest was given; "latest" when neither */
  char *digest;     /* "sha256:<hex>" or NULL */
} OakukOciRef;

gboolean oakuk_oci_ref_parse(const char *text, OakukOciRef *out, GError **error);
void oakuk_oci_ref_clear(OakukOciRef *ref);

/* True when registry ("host[:port]") may be reached over http: listed in insecure (comma-separated
 * host or host:port), or loopback when insecure is NULL. */
gboolean oakuk_oci_registry_is_insecure(const char *registry, const char *insecure);

/* WWW-Authenticate parsing: scheme ("Basic"/"Bearer") and its parameters (realm, service,
 * scope). Returns NULL for a malformed header; free with g_hash_table_unref. */
GHashTable *oakuk_oci_parse_challenge(const char *header, char **scheme);

/* "sha256:<64 lower-case hex>" */
gboolean oakuk_oci_digest_is_valid(const char *digest);

/* ---- distribution API client (blocking; one per thread) ---- */

typedef struct OakukOciClient OakukOciClient;

OakukOciClient *oakuk_oci_client_new(const char *registry, const char *username, const char *password,
                                     const oakuk_container_options *opts, GError **error);
void oakuk_oci_client_free(OakukOciClient *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(OakukOciClient, oakuk_oci_client_free)
/* Every later request of c (and the reading of its bodies) stops with OAKUK_ECANCELLED once cancel is
 * cancelled. */
void oakuk_oci_client_set_cancellable(OakukOciClient *c, GCancellable *cancel);

/* GET /v2/<repo>/manifests/<ref>. Returns the body; *media_type and *digest (computed, and checked
 * against ref when ref is a digest) are set. */
GBytes *oakuk_oci_client_get_manifest(OakukOciClient *c, const char *repo, const char *ref, char **media_type,
                                      char **digest, GError **error);
/* Uploads a blob (skipped when HEAD finds it) and a manifest; returns the manifest's digest. */
gboolean oakuk_oci_client_push_blob(OakukOciClient *c, const char *repo, const char *digest, GBytes *data,
                                    GError **error);
char *oakuk_oci_client_push_manifest(OakukOciClient *c, const char *repo, const char *tag,
                                     const char *media_type, GBytes *body, GError **error);

/* ---- images ---- */

/* Progress while pulling: layer (1-based) of layers, percent of that layer. */
typedef void (*OakukOciProgress)(guint layer, guint layers, int percent, gpointer data);

typedef struct {
  char *manifest_digest; /* "sha256:<hex>" of the platform manifest */
  char *rootfs;          /* <images>/unpacked/<hex>/rootfs */
  GPtrArray *entrypoint; /* char*, possibly empty */
  GPtrArray *cmd;        /* char*, possibly empty */
  GPtrArray *env;        /* char* "KEY=VALUE" */
  char *workdir;         /* NULL when unset */
  char *user;            /* NULL when unset */
} OakukOciImage;

void oakuk_oci_image_free(OakukOciImage *img);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(OakukOciImage, oakuk_oci_image_free)

/* Seconds a tag's resolution (tag -> manifest digest) is trusted without asking the registry. */
#define OAKUK_OCI_TAG_TTL_S 30

/* Pulls reference into images_dir (blobs/, unpacked/, refs/) for this platform. opts is NULL or
 * a version-2 struct (callers convert older ones); an oci-archive:file:// reference reads only
 * inside its file_allowed_dirs. progress may be NULL and is called on the calling thread. A digest reference
 * whose image is already unpacked, or a tag resolved by a pull less than OAKUK_OCI_TAG_TTL_S seconds ago, is
 * served from the cache without contacting the registry, unless that pull needed credentials and others (or
 * none) are given now. */
OakukOciImage *oakuk_oci_pull(const char *images_dir, const char *reference, const char *username,
                              const char *password, const oakuk_container_options *opts,
                              OakukOciProgress progress, gpointer data, GError **error);

/* Applies the layer tarball at layer_path (any compression libarchive detects) onto rootfs,
 * honouring whiteouts (.wh.<name>) and opaque whiteouts (.wh..wh..opq), with the path-safety rules
 * of archive-safe.h (absolute symlink targets allowed: they resolve inside the rootfs), ownership
 * and modes kept. what names the layer in errors. */
gboolean oakuk_oci_apply_layer(const char *rootfs, const char *layer_path, const char *what, GError **error);
/* The same, counting into *entries and *bytes (what earlier layers of the image used): more than
 * max_entries entries or max_bytes of file data in all is OAKUK_EINVAL. */
gboolean oakuk_oci_apply_layer_limited(const char *rootfs, const char *layer_path, const char *what,
                                       guint64 *entries, guint64 max_entries, guint64 *bytes,
                                       guint64 max_bytes, GError **error);

/* Packs dir as a tar (+gzip) layer. *diff_id is the digest of the uncompressed tar. */
GBytes *oakuk_oci_pack_layer(const char *dir, char **diff_id, GError **error);

/* Builds a single-layer image of dir for arch and pushes it as repo:tag with client c; returns
 * the manifest digest; *manifest_size (may be NULL) its size. */
char *oakuk_oci_build_and_push(OakukOciClient *c, const char *dir, const char *repo, const char *tag,
                               const char *arch, gint64 *manifest_size, GError **error);

/* Reads opts of any known version (NULL: defaults) into a current-version *o (strings stay the
 * caller's); OAKUK_EINVAL naming the field for an unknown version or a relative file_allowed_dirs. */
int oakuk_container_options_read(oakuk_container_options *o, const oakuk_container_options *opts,
                                 oakuk_error **error);

/* The seccomp object of a container's config.json for a host of GOARCH goarch (container.c): the
 * default allows, a list of system calls fails with EPERM, clone with namespace flags too, clone3
 * with ENOSYS. */
JsonNode *oakuk_container_seccomp_profile(const char *goarch);

/* ---- manifests and indexes (checked, typed) ---- */

#define OAKUK_OCI_MAX_LAYERS 256

typedef struct {
  char *digest; /* "sha256:<64 hex>" */
  gint64 size;
} OakukOciBlob;

typedef struct {
  OakukOciBlob config;
  OakukOciBlob *layers;
  guint n_layers;
} OakukOciManifest;

void oakuk_oci_manifest_free(OakukOciManifest *m);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(OakukOciManifest, oakuk_oci_manifest_free)
/* An image manifest's config and layers, each with a sha256 digest and a size; OAKUK_EINVAL naming
 * the first bad one (path "layers[2].digest"). reference names the image in messages. */
OakukOciManifest *oakuk_oci_manifest_parse(JsonObject *manifest, const char *reference, GError **error);
/* TRUE for an OCI index or a Docker manifest list (or a document with manifests and no layers). */
gboolean oakuk_oci_is_index(JsonObject *o);
/* The digest of the index entry for linux/arch[/variant] (or the only entry without a platform);
 * OAKUK_EUNSUPPORTED listing what the index has otherwise. */
char *oakuk_oci_index_pick(JsonObject *index, const char *arch, const char *variant, const char *reference,
                           GError **error);

/* The sha256 digest "sha256:<hex>" of data. */
char *oakuk_oci_digest_bytes(GBytes *data);

/* A JSON object from outside (oakuk_json_precheck first); the parser owning it goes to *keep. */
JsonObject *oakuk_oci_parse_object(GBytes *b, const char *what, JsonParser **keep, GError **error);

/* ---- sessions: one image source read document by document (unikernel images, resolution) ---- */

typedef struct OakukOciSession OakukOciSession;

/* Opens reference: a registry repository (username/password may be NULL), or an oci-archive: tarball
 * unpacked into a temporary directory under work_dir (file:// only inside opts->file_allowed_dirs).
 * opts is NULL or a version-2 struct. cancel (may be NULL) stops requests and blob transfers. */
OakukOciSession *oakuk_oci_session_open(const char *work_dir, const char *reference, const char *username,
                                        const char *password, const oakuk_container_options *opts,
                                        GCancellable *cancel, GError **error);
void oakuk_oci_session_free(OakukOciSession *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(OakukOciSession, oakuk_oci_session_free)
/* "host[:port]" and "library/x" of a registry source; NULL for an archive. */
const char *oakuk_oci_session_registry(OakukOciSession *s);
const char *oakuk_oci_session_repository(OakukOciSession *s);
/* Whether the registry asked for credentials (and accepted them). */
gboolean oakuk_oci_session_authenticated(OakukOciSession *s);
/* The document the reference names (the tag's or digest's manifest or index; an archive's
 * index.json) and its digest. */
GBytes *oakuk_oci_session_top(OakukOciSession *s, char **digest, GError **error);
/* A manifest or index by digest, checked against it. */
GBytes *oakuk_oci_session_manifest(OakukOciSession *s, const char *digest, GError **error);
/* A small blob (a config) in memory, checked against digest and size (-1: any up to max). */
GBytes *oakuk_oci_session_blob(OakukOciSession *s, const char *digest, gint64 size, gsize max,
                               GError **error);
/* Makes blob digest present in blobs_dir (the shared content-addressed store), verified. */
gboolean oakuk_oci_session_fetch_blob(OakukOciSession *s, const char *blobs_dir, const char *digest,
                                      gint64 size, OakukOciProgress cb, gpointer data, guint layer,
                                      guint layers, const char *what, GError **error);

/* ---- unikernel platforms ----
 * KraftKit's index entries and configs name the platform os "qemu", "fc" or "xen" and the
 * architecture "x86_64", "arm64" or "arm"; urunc images are linux/<GOARCH>. */

/* GOARCH of an image's architecture ("x86_64" and "amd64" -> "amd64", "arm64"/"aarch64" -> "arm64",
 * "arm", "riscv64"); NULL when unknown. */
const char *oakuk_oci_unikernel_goarch(const char *architecture);
/* NULL when QEMU runs a unikernel of platform os (NULL, "qemu" or "linux"); else what the platform is,
 * for a refusal ("a Firecracker image (platform fc)"). */
const char *oakuk_oci_unikernel_os_refusal(const char *os);
/* The digest of the index entry to run on arch (GOARCH): os "qemu" first, then "linux", or the only
 * entry of an index without platforms; *entry (may be NULL) is that entry (borrowed from index).
 * OAKUK_EUNSUPPORTED naming what the index has instead (fc and xen entries by name). */
char *oakuk_oci_index_pick_unikernel(JsonObject *index, const char *arch, const char *reference,
                                     JsonObject **entry, GError **error);

/* ---- unikernel images (oci-unikernel.c) ---- */

/* The platform manifest chosen for an architecture, and what led to it. */
typedef struct {
  char *top_digest;              /* the document the reference named (index or manifest) */
  char *manifest_digest;         /* the platform manifest */
  GBytes *manifest;              /* its body */
  GHashTable *entry_annotations; /* the index entry's annotations (string -> string), never NULL */
  char *entry_os_version;        /* that entry's platform os.version, or NULL */
} OakukOciUkChoice;

void oakuk_oci_uk_choice_free(OakukOciUkChoice *c);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(OakukOciUkChoice, oakuk_oci_uk_choice_free)
/* Reads s's top document and walks its indexes (oakuk_oci_index_pick_unikernel) to the manifest for
 * arch (GOARCH). _from starts from a top document already read. */
OakukOciUkChoice *oakuk_oci_uk_choose(OakukOciSession *s, const char *reference, const char *arch,
                                      GError **error);
OakukOciUkChoice *oakuk_oci_uk_choose_from(OakukOciSession *s, const char *reference, GBytes *top,
                                           const char *top_digest, const char *arch, GError **error);

/* What a pulled unikernel image says about itself. */
typedef struct {
  const char *layout;  /* "kraftkit" or "urunc" (static) */
  char *flavor;        /* urunc's unikernelType ("unikraft", "linux"), or NULL: from the kernel */
  char *version;       /* os.version / org.unikraft.kernel.version / unikernelVersion, or NULL */
  char *cmdline_extra; /* annotation org.oakestra.oakuk.cmdline-extra, or NULL */
  GPtrArray *args;     /* Cmd (KraftKit), the cmdline split at spaces (urunc) */
  GPtrArray *env;      /* the config's Env */
  gboolean initrd;     /* tree/initrd was written */
  gboolean files;      /* tree/files was written */
} OakukOciUkMeta;

void oakuk_oci_uk_meta_clear(OakukOciUkMeta *m);

typedef struct {
  const char *blobs_dir; /* the content-addressed store the layers are downloaded to */
  guint64 max_download_bytes, max_unpacked_bytes, max_entries;
  void (*progress)(gint64 bytes, gint64 total, gpointer data); /* may be NULL */
  gpointer data;
} OakukOciUkLimits;

/* Downloads choice's config and layers (verified, into lim->blobs_dir), applies the layers to
 * work/rootfs with the layer rules (whiteouts, links kept inside) within the limits, checks the
 * config's platform against arch (fc and xen refused by name), and moves the boot files into tree:
 * tree/kernel (KraftKit's /unikraft/bin/kernel or urunc's binary), tree/initrd (/unikraft/bin/initrd
 * or urunc's initrd) and tree/files (the rest of the rootfs, when not empty; /urunc.json dropped).
 * urunc's keys are read from the manifest's (and the index entry's) annotations, the config's
 * Labels, then /urunc.json; its hypervisor must be qemu, its unikernelType unikraft or linux. */
gboolean oakuk_oci_uk_pull(OakukOciSession *s, const char *reference, const OakukOciUkChoice *choice,
                           const char *arch, const OakukOciUkLimits *lim, const char *work, const char *tree,
                           OakukOciUkMeta *meta, GError **error);

G_END_DECLS

#endif

/* OCI images (DESIGN §10): references, the distribution API client (pull and push), layer
 * unpacking with whiteouts, the shared blob cache and image building. Used by container.c and
 * seen by the container tests. Not installed, not exported. */
#ifndef OAKUK_OCI_PRIVATE_H
#define OAKUK_OCI_PRIVATE_H

#include "oakuk-private.h"

#include <json-glib/json-glib.h>

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

/* Packs dir as a tar (+gzip) layer. *diff_id is the digest of the uncompressed tar. */
GBytes *oakuk_oci_pack_layer(const char *dir, char **diff_id, GError **error);

/* Builds a single-layer image of dir for arch and pushes it as repo:tag with client c; returns
 * the manifest digest; *manifest_size (may be NULL) its size. */
char *oakuk_oci_build_and_push(OakukOciClient *c, const char *dir, const char *repo, const char *tag,
                               const char *arch, gint64 *manifest_size, GError **error);

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

G_END_DECLS

#endif

#ifndef OAKUK_IMAGE_H
#define OAKUK_IMAGE_H

#include <oakuk/error.h>

OAKUK_BEGIN_DECLS

/* Unikernel images (docs/architecture.md §10.2): fetch over http/https/file, verify sha256, unpack safely,
 * cache by URL + expected sha256.
 *
 * An image is an Oakestra tar or tar.gz holding `kernel`, optional `files/`, optional `initrd`
 * (or `initramfs.cpio`) and optional `oakuk.json` ({flavor, version, cmdline_style, cmdline_extra}),
 * or a bare kernel file (ELF, arm64 Image or x86 bzImage), which becomes an image holding only
 * `kernel`. Unpacking refuses absolute paths, `..` components, device, fifo and socket files,
 * archives over the entry or size limits, and links leaving the tree: every entry's path and every
 * link's target is resolved like the kernel would, through the links already extracted, and the
 * links of the finished tree are checked again (a later link can redirect an earlier one). An
 * entry whose path goes through a link that stays inside is written where the link leads.
 *
 * Cache layout: <dir>/<sha256 of (url + "\n" + sha256 of the artifact)>/ (an OCI image: of "oci\n" +
 * its platform manifest digest) holds `image.json` (the manifest), `tree/` (the unpacked image) and
 * `used` (whose mtime is the last use); <dir>/.refs/ remembers what a URL without sha256, or an OCI
 * reference, last led to; <dir>/.oci/blobs/ holds OCI blobs. Work happens in <dir>/.tmp-XXXXXX and
 * is renamed into place when complete; a failed fetch leaves nothing behind. One process per cache
 * dir. */

typedef struct oakuk_image_cache_options {
  unsigned int version;        /* OAKUK_IMAGE_CACHE_OPTIONS_VERSION */
  uint64_t max_download_bytes; /* largest artifact accepted (default 1 GiB) */
  uint64_t max_unpacked_bytes; /* largest total of unpacked file data (default 4 GiB) */
  uint64_t max_entries;        /* most archive entries (default 100000) */
  /* Deadline of one download, start to last byte, in seconds (default 300; 0 = none). Version 1
   * documented it as an inactivity timeout: stall_timeout_s is that now. */
  uint32_t timeout_s;
  uint32_t max_redirects; /* most HTTP redirects followed (default 5) */
  /* ---- version 2 ---- */
  /* Seconds to establish each connection (TCP and TLS) of an http(s) download (default 10;
   * 0 = none). */
  uint32_t connect_timeout_s;
  /* Seconds a download may go without receiving a byte, once connected (default 30; 0 = none). */
  uint32_t stall_timeout_s;
  /* The directories file:// URLs may read from: absolute paths separated by ':', copied by
   * oakuk_image_cache_new. A file:// URL is fetched only when its path (after resolving symlinks)
   * lies inside one of them, and only when it is a regular file (a fifo, socket or device is
   * refused without blocking). NULL or "" (the default) refuses every file:// URL. */
  const char *file_allowed_dirs;
  /* ---- version 3 ---- */
  /* Most bytes the cache should hold: images (unpacked) and the OCI blobs they came from (default 0 =
   * no limit). After every fetch, images no one uses are removed, least recently used first, until
   * the cache fits; an image in use (an oakuk_image of it is alive in this process) is never removed,
   * so the cache may stay above the limit while they are used. */
  uint64_t max_cache_bytes;
  /* Registries of OCI references reached over plain http, comma-separated "host" or "host:port"
   * (copied); every other registry is reached over https. NULL = loopback only. */
  const char *insecure_registries;
} oakuk_image_cache_options;

/* Version 1 ends at max_redirects, version 2 at file_allowed_dirs: callers built against them pass
 * a struct of that size, which the library reads (and oakuk_image_cache_options_init fills) only up
 * to there; the newer fields then take their defaults. */
#define OAKUK_IMAGE_CACHE_OPTIONS_VERSION_1 1
#define OAKUK_IMAGE_CACHE_OPTIONS_VERSION_2 2
#define OAKUK_IMAGE_CACHE_OPTIONS_VERSION 3
#define OAKUK_IMAGE_CACHE_OPTIONS_INIT                                                                       \
  {                                                                                                          \
    OAKUK_IMAGE_CACHE_OPTIONS_VERSION, UINT64_C(1073741824), UINT64_C(4294967296), 100000, 300, 5, 10, 30,   \
        NULL, 0, NULL                                                                                        \
  }
/* Fills opts (a struct of that version's size) with defaults; returns OAKUK_EINVAL for an unknown
 * version. */
OAKUK_API int oakuk_image_cache_options_init(oakuk_image_cache_options *opts, unsigned int version);

/* An unpacked image in the cache. Opaque, refcounted; getters' strings are borrowed while the
 * image lives. */
typedef struct oakuk_image oakuk_image;
OAKUK_API oakuk_image *oakuk_image_ref(oakuk_image *image);
OAKUK_API void oakuk_image_unref(oakuk_image *image);
/* The image's cache directory (<dir>/<key>). */
OAKUK_API const char *oakuk_image_dir(const oakuk_image *image);
/* Absolute path of the kernel. The kernel and the initrd are readable by every user: a QEMU
 * running as an unprivileged user (oakuk_qemu_options.run_as) reads them. */
OAKUK_API const char *oakuk_image_kernel(const oakuk_image *image);
/* Absolute path of `initrd` or `initramfs.cpio`, or NULL. */
OAKUK_API const char *oakuk_image_initrd(const oakuk_image *image);
/* Absolute path of the `files/` directory, or NULL. */
OAKUK_API const char *oakuk_image_files_dir(const oakuk_image *image);
/* "unikraft", "linux" or "unknown": from oakuk.json, else from the kernel's contents. */
OAKUK_API const char *oakuk_image_flavor(const oakuk_image *image);
/* Flavor version ("0.16.1", "6.1.0-56-amd64"), or NULL when unknown. */
OAKUK_API const char *oakuk_image_version(const oakuk_image *image);
/* oakuk.json's cmdline_style and cmdline_extra (extra kernel arguments placed before the network
 * parameters, e.g. "console=ttyS0"), or NULL when absent. */
OAKUK_API const char *oakuk_image_cmdline_style(const oakuk_image *image);
OAKUK_API const char *oakuk_image_cmdline_extra(const oakuk_image *image);
/* GOARCH of the kernel ("amd64", "arm64", "arm", "riscv64"), or NULL when not recognised. */
OAKUK_API const char *oakuk_image_arch(const oakuk_image *image);
/* Lower-case hex sha256 of the downloaded artifact. */
OAKUK_API const char *oakuk_image_sha256(const oakuk_image *image);
/* The URL the image was fetched from (the OCI reference, for an OCI image). */
OAKUK_API const char *oakuk_image_url(const oakuk_image *image);
/* For an OCI image: the digest "sha256:<hex>" of its platform manifest (oakuk_image_sha256 is its
 * hex); NULL for an image fetched from a URL. */
OAKUK_API const char *oakuk_image_digest(const oakuk_image *image);
/* The image's own kernel arguments (placed after "--" when the deployment gives none): KraftKit's
 * Cmd, urunc's cmdline split at spaces; none for a tarball or bare kernel. */
OAKUK_API size_t oakuk_image_arg_count(const oakuk_image *image);
OAKUK_API const char *oakuk_image_arg(const oakuk_image *image, size_t i);
/* The image's environment ("KEY=value", its config's Env, for env.vars); none for a tarball. */
OAKUK_API size_t oakuk_image_env_count(const oakuk_image *image);
OAKUK_API const char *oakuk_image_env(const oakuk_image *image, size_t i);

/* A cache of images in a directory (created if missing). Stale .tmp-* work dirs are removed.
 * opts may be NULL (defaults: file:// refused); zero max_download_bytes, max_unpacked_bytes or
 * max_entries, and a file_allowed_dirs entry that is not an absolute path, are OAKUK_EINVAL (the
 * error names the field). The cache may be used from any thread. */
typedef struct oakuk_image_cache oakuk_image_cache;
OAKUK_API oakuk_image_cache *oakuk_image_cache_new(const char *dir, const oakuk_image_cache_options *opts,
                                                   oakuk_error **error);
OAKUK_API oakuk_image_cache *oakuk_image_cache_ref(oakuk_image_cache *cache);
OAKUK_API void oakuk_image_cache_unref(oakuk_image_cache *cache);
OAKUK_API const char *oakuk_image_cache_dir(const oakuk_image_cache *cache);

/* Download progress: bytes received so far and the total (-1 when the server did not say). */
typedef void (*oakuk_image_progress_cb)(int64_t bytes, int64_t total, void *user_data);
/* Completion: exactly one of image and error is non-NULL. Both are borrowed for the duration of
 * the call: oakuk_image_ref the image to keep it; the library frees the error afterwards. */
typedef void (*oakuk_image_done_cb)(oakuk_image *image, oakuk_error *error, void *user_data);

/* Fetches url (http://, https://, file://) into the cache, or reuses a finished entry. sha256
 * (64 hex digits) may be NULL; when given, a mismatch fails with OAKUK_EVERIFY, and a finished entry
 * is reused without asking the server. Without it, a cached http(s) image is revalidated at every
 * fetch (If-None-Match / If-Modified-Since with the ETag and Last-Modified it came with; a 304 reuses
 * it, a new body replaces it, an unreachable server keeps it), and a cached file:// image is read
 * again when the file's size, mtime or inode changed. Two fetches of the same url + sha256 at once
 * download once; both get the result. The work runs in a thread; progress (may be NULL) and done
 * are called on the GMainContext that is thread-default for the caller of this function, progress
 * never after done. Returns 0, or OAKUK_EINVAL (bad url or sha256; an OCI reference, which
 * oakuk_image_cache_fetch_oci_start fetches) or OAKUK_EPERM (a file:// URL outside
 * file_allowed_dirs); done is then not called. Downloads are bounded by connect_timeout_s,
 * stall_timeout_s and timeout_s (OAKUK_ETIMEOUT, naming the option). */
OAKUK_API int oakuk_image_cache_fetch(oakuk_image_cache *cache, const char *url, const char *sha256,
                                      oakuk_image_progress_cb progress, oakuk_image_done_cb done,
                                      void *user_data, oakuk_error **error);

/* One fetch in flight, which its caller may cancel. Opaque, refcounted. */
typedef struct oakuk_image_fetch oakuk_image_fetch;
/* oakuk_image_cache_fetch that also returns a handle to the fetch in *fetch_out (a reference
 * for the caller: oakuk_image_fetch_unref it, done called or not; unref does not cancel). On
 * failure (as for oakuk_image_cache_fetch) *fetch_out is NULL. */
OAKUK_API int oakuk_image_cache_fetch_start(oakuk_image_fetch **fetch_out, oakuk_image_cache *cache,
                                            const char *url, const char *sha256,
                                            oakuk_image_progress_cb progress, oakuk_image_done_cb done,
                                            void *user_data, oakuk_error **error);
/* Cancels the fetch, from any thread: unless done has already been called, it is called with
 * OAKUK_ECANCELLED on the fetch's context at the context's next iteration, whatever the server
 * or the file does, and never with an image; progress is not called any more. Other fetches of
 * the same image are not affected; the shared download itself stops once every fetch waiting for
 * it has been cancelled, and leaves nothing in the cache. A second cancel, or one after done, does
 * nothing. NULL is a no-op. */
OAKUK_API void oakuk_image_fetch_cancel(oakuk_image_fetch *fetch);
OAKUK_API oakuk_image_fetch *oakuk_image_fetch_ref(oakuk_image_fetch *fetch);
OAKUK_API void oakuk_image_fetch_unref(oakuk_image_fetch *fetch);

/* The same as oakuk_image_cache_fetch, blocking the calling thread; progress is called on the
 * calling thread. Returns a new reference, or NULL with *error set: OAKUK_EINVAL (bad url/sha256,
 * malformed or corrupt image, a size or entry limit exceeded), OAKUK_EVERIFY (sha256 mismatch),
 * OAKUK_EPERM (unsafe archive entry, HTTP 401/403, a file:// URL outside file_allowed_dirs or not
 * a regular file), OAKUK_ENOTFOUND (HTTP 404/410, missing file), OAKUK_ETIMEOUT (connect, stall or
 * total deadline), OAKUK_EIO (network or disk failure, too many redirects). */
OAKUK_API oakuk_image *oakuk_image_cache_fetch_sync(oakuk_image_cache *cache, const char *url,
                                                    const char *sha256, oakuk_image_progress_cb progress,
                                                    void *user_data, oakuk_error **error);

/* ---- OCI images ----
 *
 * A unikernel image may also be an OCI image, in KraftKit's layout or urunc's (docs/unikernels.md):
 * a registry reference ("registry/name:tag", "name@sha256:<hex>"; the registry's images at
 * "registry-1.docker.io" when it names none) or "oci-archive:<url>" (an OCI layout tarball over
 * http(s), or file:// inside file_allowed_dirs). It is pulled through the container runtime's OCI
 * client (auth, indexes, digests checked; blobs in <dir>/.oci/blobs), the platform for arch chosen
 * from its index (KraftKit's os "qemu" and architecture "x86_64"/"arm64", or urunc's linux/<GOARCH>;
 * "fc" and "xen" refused by name), and becomes an image like a tarball's: the kernel (checked by
 * content, and against arch), the initrd, and the rest of the image's files as `files/`; flavor,
 * version, arguments and environment from its config and annotations. Entries are keyed by the
 * platform manifest's digest. A tag is resolved by the registry at every fetch (an unreachable
 * registry falls back to its last resolution); a digest reference is served from the cache. An image
 * that needed credentials is served from the cache only to the same credentials. */

/* Whether code is an OCI reference ("oci-archive:..." or a registry reference) rather than an
 * http(s)/file URL. */
OAKUK_API bool oakuk_image_code_is_oci(const char *code);

/* oakuk_image_cache_fetch_start for an OCI reference: arch is the GOARCH whose platform to run
 * (NULL: this machine's), username/password the registry credentials (NULL: anonymous). progress
 * counts the bytes of the layers. Returns 0, or OAKUK_EINVAL (not an OCI reference, unknown arch) or
 * OAKUK_EPERM (an oci-archive:file:// outside file_allowed_dirs); done is then not called. done's
 * errors: those of oakuk_image_cache_fetch_sync, and OAKUK_EUNSUPPORTED (no platform for arch, a
 * Firecracker or Xen image, urunc's hypervisor not qemu, a unikernel type other than unikraft and
 * linux), OAKUK_EINVAL (no kernel in the image, a kernel of another architecture). */
OAKUK_API int oakuk_image_cache_fetch_oci_start(oakuk_image_fetch **fetch_out, oakuk_image_cache *cache,
                                                const char *reference, const char *arch, const char *username,
                                                const char *password, oakuk_image_progress_cb progress,
                                                oakuk_image_done_cb done, void *user_data,
                                                oakuk_error **error);
/* The same, blocking the calling thread; a new reference, or NULL with *error set. */
OAKUK_API oakuk_image *oakuk_image_cache_fetch_oci_sync(oakuk_image_cache *cache, const char *reference,
                                                        const char *arch, const char *username,
                                                        const char *password,
                                                        oakuk_image_progress_cb progress, void *user_data,
                                                        oakuk_error **error);

/* ---- housekeeping ---- */

/* Bytes the cache holds: its images (unpacked) and OCI blobs. */
OAKUK_API uint64_t oakuk_image_cache_size(oakuk_image_cache *cache);
/* Removes images no one uses, least recently used (fetched, or last released) first, until the cache
 * holds at most keep_bytes (0: every unused image), and the OCI blobs and resolutions no image needs
 * any more. *freed_out (may be NULL) receives the bytes freed. Returns 0 or OAKUK_EIO. */
OAKUK_API int oakuk_image_cache_prune(uint64_t *freed_out, oakuk_image_cache *cache, uint64_t keep_bytes,
                                      oakuk_error **error);

/* Kernel inspection (no cache involved), by content, never by file name. Recognised: x86 kernels
 * QEMU's -kernel boots (multiboot v1 headers in 32-bit ELF files, or with load addresses in any
 * file; PVH ELF notes; bzImage), arm64 Image files and AArch64 ELF files, and (recognised, but not
 * run by the unikernel runtime) ARM and RISC-V kernels. GOARCH of the kernel file at path; NULL
 * with *error set when unreadable (OAKUK_EIO) or not a kernel QEMU can boot (OAKUK_EINVAL, with
 * the reason: e.g. a 32-bit x86 ELF with neither a multiboot header nor a PVH note, a 64-bit x86
 * ELF without a PVH note, only a multiboot2 header). Static string. */
OAKUK_API const char *oakuk_image_kernel_arch(const char *path, oakuk_error **error);
/* How QEMU boots the kernel at path: "multiboot (32-bit ELF)", "PVH (64-bit ELF)", "bzImage",
 * "arm64 Image", "ELF (AArch64)", ...; NULL with *error set as for oakuk_image_kernel_arch. */
OAKUK_API const char *oakuk_image_kernel_format(const char *path, oakuk_error **error);
/* Scans the kernel file at path for "Unikraft <Codename> <x.y.z>". Sets *flavor to "unikraft"
 * (and *version to "x.y.z"), else "linux" when it looks like a Linux kernel (*version from the
 * bzImage header or "Linux version ", or NULL), else "unknown" (*version NULL). *flavor is static;
 * free *version with oakuk_free. Returns 0 or OAKUK_EIO. */
OAKUK_API int oakuk_image_kernel_unikraft_version(const char **flavor, char **version, const char *path,
                                                  oakuk_error **error);

OAKUK_END_DECLS

#endif

#ifndef OAKUK_OCI_H
#define OAKUK_OCI_H

#include <oakuk/container.h>
#include <oakuk/error.h>

OAKUK_BEGIN_DECLS

/* OCI references for unikernels (docs/unikernels.md, "OCI images"): what a reference's platforms
 * are and which digest it names now, without pulling layers (for scheduling), and packaging kernels
 * as a multi-architecture image in KraftKit's layout (the library side of `oakuk pkg`). Registry
 * options (insecure registries, timeout, file_allowed_dirs for oci-archive:file://) are the
 * container runtime's: opts may be NULL (defaults). Everything here blocks. */

/* ---- resolution ---- */

/* What a reference resolved to. Opaque, refcounted; strings borrowed while it lives. */
typedef struct oakuk_oci_resolution oakuk_oci_resolution;

/* Resolves reference ("registry/name:tag", "name@sha256:<hex>", "oci-archive:<url>") by reading its
 * index or manifest (and, for a manifest or an index entry without a platform, its config), never its
 * layers. username/password may be NULL. Errors as oakuk_container_pull's: OAKUK_EINVAL (bad
 * reference, malformed manifest), OAKUK_ENOTFOUND, OAKUK_EPERM, OAKUK_EVERIFY, OAKUK_EIO. */
OAKUK_API oakuk_oci_resolution *oakuk_oci_resolve(const char *reference, const char *username,
                                                  const char *password, const oakuk_container_options *opts,
                                                  oakuk_error **error);
OAKUK_API oakuk_oci_resolution *oakuk_oci_resolution_ref(oakuk_oci_resolution *res);
OAKUK_API void oakuk_oci_resolution_unref(oakuk_oci_resolution *res);
/* The digest "sha256:<hex>" of the document the reference names now (an index or a manifest; for
 * oci-archive:, of the layout's index.json). */
OAKUK_API const char *oakuk_oci_resolution_digest(const oakuk_oci_resolution *res);
/* The reference pinned to that digest ("registry/name@sha256:<hex>"): fetching it later yields the
 * same image even when the tag has moved. For oci-archive:, the reference as given (a file has no
 * digest to pin). */
OAKUK_API const char *oakuk_oci_resolution_pinned(const oakuk_oci_resolution *res);
/* The architectures (GOARCH: "amd64", "arm64", ...) of the platforms a node can run the image on:
 * KraftKit's os "qemu" and urunc's (or a container's) "linux"; in the index's order, each once. */
OAKUK_API size_t oakuk_oci_resolution_arch_count(const oakuk_oci_resolution *res);
OAKUK_API const char *oakuk_oci_resolution_arch(const oakuk_oci_resolution *res, size_t i);
/* Every platform, runnable or not: its os ("qemu", "fc", "xen", "linux"), architecture as written
 * ("x86_64", "amd64"), os.version (Unikraft's version in KraftKit's images, or NULL) and manifest
 * digest. */
OAKUK_API size_t oakuk_oci_resolution_platform_count(const oakuk_oci_resolution *res);
OAKUK_API const char *oakuk_oci_resolution_platform_os(const oakuk_oci_resolution *res, size_t i);
OAKUK_API const char *oakuk_oci_resolution_platform_architecture(const oakuk_oci_resolution *res, size_t i);
OAKUK_API const char *oakuk_oci_resolution_platform_os_version(const oakuk_oci_resolution *res, size_t i);
OAKUK_API const char *oakuk_oci_resolution_platform_digest(const oakuk_oci_resolution *res, size_t i);

/* ---- packaging ---- */

/* A unikernel package being assembled: one kernel per architecture, the same files, arguments and
 * environment for all. Opaque, refcounted. Written as an OCI index in KraftKit's layout: per
 * architecture a manifest (os "qemu", architecture "x86_64"/"arm64", os.version the Unikraft
 * version, Cmd the arguments, Env) whose uncompressed tar layers hold the kernel at
 * /unikraft/bin/kernel, the initrd at /unikraft/bin/initrd and the files at the image's root, with
 * KraftKit's annotations and urunc's (and /urunc.json), so KraftKit and urunc can run it too. The
 * output is reproducible: the same inputs give the same digests. */
typedef struct oakuk_oci_package oakuk_oci_package;

OAKUK_API oakuk_oci_package *oakuk_oci_package_new(void);
OAKUK_API oakuk_oci_package *oakuk_oci_package_ref(oakuk_oci_package *pkg);
OAKUK_API void oakuk_oci_package_unref(oakuk_oci_package *pkg);
/* Adds the kernel (and initrd, may be NULL) of one architecture. The kernel must be one QEMU boots
 * (recognised by content: OAKUK_EINVAL with the reason) of arch (GOARCH; NULL: the kernel's own);
 * a second kernel for an architecture is OAKUK_EINVAL. Files are read when the package is written. */
OAKUK_API int oakuk_oci_package_add_kernel(oakuk_oci_package *pkg, const char *arch, const char *kernel_path,
                                           const char *initrd_path, oakuk_error **error);
/* A directory whose tree becomes the image's files (the guest's 9p share fs0); NULL for none. */
OAKUK_API int oakuk_oci_package_set_files_dir(oakuk_oci_package *pkg, const char *dir, oakuk_error **error);
/* Kernel arguments (after "--"), and environment entries "KEY=value": no spaces, quotes, backslashes
 * or control characters (OAKUK_EINVAL). */
OAKUK_API int oakuk_oci_package_add_arg(oakuk_oci_package *pkg, const char *arg, oakuk_error **error);
OAKUK_API int oakuk_oci_package_add_env(oakuk_oci_package *pkg, const char *entry, oakuk_error **error);
/* The Unikraft version ("0.16.3"); NULL (the default): read from each kernel ("Unikraft <Codename>
 * x.y.z"), none for a kernel that is not Unikraft. */
OAKUK_API int oakuk_oci_package_set_version(oakuk_oci_package *pkg, const char *version, oakuk_error **error);
/* Extra kernel arguments before the network parameters ("console=ttyS0"), as oakuk.json's
 * cmdline_extra; NULL for none. */
OAKUK_API int oakuk_oci_package_set_cmdline_extra(oakuk_oci_package *pkg, const char *extra,
                                                  oakuk_error **error);
/* The same for the kernel of one architecture (added before; else OAKUK_EINVAL), over the package's:
 * a Linux guest's console differs by architecture (ttyS0, ttyAMA0). */
OAKUK_API int oakuk_oci_package_set_kernel_cmdline_extra(oakuk_oci_package *pkg, const char *arch,
                                                         const char *extra, oakuk_error **error);
/* Writes the package as an OCI layout tarball (for "oci-archive:file://<path>") at path, replacing it;
 * name ("registry/name:tag" or "name:tag") goes into the annotations and index.json's ref.name.
 * *digest_out (may be NULL) receives the index's digest "sha256:<hex>" (free with oakuk_free). */
OAKUK_API int oakuk_oci_package_write_archive(char **digest_out, oakuk_oci_package *pkg, const char *name,
                                              const char *path, oakuk_error **error);
/* Pushes the package to reference ("registry/name:tag"), blobs and manifests first, the index last
 * under the tag. username/password may be NULL. *digest_out as for write_archive. */
OAKUK_API int oakuk_oci_package_push(char **digest_out, oakuk_oci_package *pkg, const char *reference,
                                     const char *username, const char *password,
                                     const oakuk_container_options *opts, oakuk_error **error);
/* After a write or push: the architectures packed and each one's manifest digest. */
OAKUK_API size_t oakuk_oci_package_manifest_count(const oakuk_oci_package *pkg);
OAKUK_API const char *oakuk_oci_package_manifest_arch(const oakuk_oci_package *pkg, size_t i);
OAKUK_API const char *oakuk_oci_package_manifest_digest(const oakuk_oci_package *pkg, size_t i);

OAKUK_END_DECLS

#endif

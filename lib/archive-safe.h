/* What the unikernel image unpacker (image.c) and the OCI layer unpacker (oci.c) share: the
 * compressions they read, and path-safety checks for archive entries. Not installed, not exported. */
#ifndef OAKUK_ARCHIVE_SAFE_H
#define OAKUK_ARCHIVE_SAFE_H

#include <gio/gio.h>
#include <glib.h>
#include <oakuk/oakuk.h>

G_BEGIN_DECLS

struct archive;

/* Enables the compressions images and layers come in: gzip, zstd, xz and bzip2 (and none). Named
 * one by one, not archive_read_support_filter_all(): that one also enables filters run as external
 * programs (lrzip, lzop, grzip) and links liblz4, for formats no registry serves. */
void oakuk_archive_support_filters(struct archive *r);

typedef enum {
  OAKUK_ARCHIVE_PATH_OK = 0,
  OAKUK_ARCHIVE_PATH_ABSOLUTE, /* starts with '/' */
  OAKUK_ARCHIVE_PATH_DOTDOT,   /* has a ".." component */
  OAKUK_ARCHIVE_PATH_MISSING,  /* the entry has no name (a corrupt header) */
} OakukArchivePathCheck;

/* Normalises an archive path: drops "./" and empty components and a trailing "/". Returns the
 * normalised path ("" for the root itself), or NULL with *why set for absolute paths and ".."
 * components. */
char *oakuk_archive_normalize_path(const char *name, OakukArchivePathCheck *why);

/* ---- resolving paths through the symlinks of the tree being extracted ----
 *
 * A lexical check of each link on its own is not enough: with a/b -> .. in the tree, the link
 * x -> a/b/../.. looks like it stays inside, but the kernel resolves a/b first and x then names
 * the tree's parent. So every entry's path and every link's target is resolved the way the kernel
 * would, component by component, through the links already in the tree, and refused when it
 * leaves the root. As a later link can change what an earlier one resolves to (x first, a/b
 * later), the unpackers also check every link of the finished tree (oakuk_archive_check_tree). */

/* How many links one resolution may expand (the kernel's MAXSYMLINKS). */
#define OAKUK_ARCHIVE_MAX_LINKS 40

typedef enum {
  OAKUK_ARCHIVE_RESOLVE_OK = 0,
  OAKUK_ARCHIVE_RESOLVE_ESCAPES,  /* a ".." above the root */
  OAKUK_ARCHIVE_RESOLVE_ABSOLUTE, /* an absolute link target where those leave the tree */
  OAKUK_ARCHIVE_RESOLVE_LOOP,     /* more than OAKUK_ARCHIVE_MAX_LINKS links */
} OakukArchiveResolve;

/* The target of the symlink at rel (a normalised path of the tree whose parents are no symlinks),
 * or NULL when there is none there (nothing, a file, a directory). Free with g_free. */
typedef char *(*OakukArchiveReadlink)(const char *rel, gpointer data);

/* Resolves path relative to the tree directory dir ("" is the root; dir itself must hold no
 * symlinks) like the kernel: ".." pops a component, and each component naming a symlink (the last
 * one only with follow_last) is replaced by its target, an absolute target restarting at the
 * tree's root when absolute_is_inside (a container rootfs, where "/" is the rootfs) and leaving
 * the tree otherwise. Components that do not exist yet resolve as directories. On
 * OAKUK_ARCHIVE_RESOLVE_OK, *resolved (may be NULL) is the normalised path inside the tree, with
 * no symlink among its parents; otherwise *via (may be NULL) names the last link expanded (NULL
 * when none was). Free both with g_free. */
OakukArchiveResolve oakuk_archive_resolve(const char *dir, const char *path, gboolean follow_last,
                                          gboolean absolute_is_inside, OakukArchiveReadlink readlink_fn,
                                          gpointer data, char **resolved, char **via);

/* An OakukArchiveReadlink for a tree on disk: data is the tree's root directory. */
char *oakuk_archive_readlink_disk(const char *rel, gpointer root);

/* A sentence for a resolution that failed ("leaves the tree through the link a/b", ...), for
 * errors that name the entry themselves. */
char *oakuk_archive_resolve_describe(OakukArchiveResolve r, const char *via);

/* Resolves every symlink under root (on disk) with oakuk_archive_resolve. TRUE when all stay
 * inside; else FALSE with *link (normalised path), *target and *why (free *link and *target with
 * g_free; *via as for oakuk_archive_resolve, may be NULL) describing the first that does not, or
 * *link NULL and *target the I/O error's text when the tree cannot be read. */
gboolean oakuk_archive_check_tree(const char *root, gboolean absolute_is_inside, char **link, char **target,
                                  OakukArchiveResolve *why, char **via);

/* ---- file:// sources (unikernel images, oci-archive: tarballs) ----
 *
 * A node must not read any host path a deployment names. file:// URLs are read only inside the
 * directories an option names (file_allowed_dirs: absolute paths separated by ':'; none = every
 * file:// URL refused), only when the file is a regular file, and without ever blocking on a
 * fifo or opening a device. Errors are in OAKUK_ERROR (oakuk-private.h). */

/* The canonical directories of a file_allowed_dirs text; NULL when it names none. A non-absolute
 * entry: NULL with *bad set to it (free with g_free). */
char **oakuk_archive_local_dirs(const char *text, char **bad);

/* Checks a file:// URL before anything is opened: a local path (no other host) lexically inside
 * dirs. OAKUK_EINVAL (not a local file URL) or OAKUK_EPERM (file:// refused: dirs is NULL;
 * outside dirs), naming the URL and the option option (e.g. "file_allowed_dirs"). *path (may be
 * NULL) receives the path. */
gboolean oakuk_archive_local_check(const char *url, char **dirs, const char *option, char **path,
                                   GError **error);

/* Opens the local file of a checked file:// URL for reading: a regular file (stat first: a fifo,
 * socket, directory or device is refused without being opened), opened O_NONBLOCK, checked again
 * with fstat, and whose real path (symlinks resolved) lies inside dirs. Returns the fd (its size in
 * *size), or -1 with OAKUK_ENOTFOUND, OAKUK_EPERM or OAKUK_EIO. */
int oakuk_archive_local_open(const char *url, const char *path, char **dirs, const char *option, gint64 *size,
                             GError **error);

/* Unpacks the image tarball at archive_path into the existing empty directory tree (image.c) with
 * every rule above: entries and links resolved through the tree, the finished tree checked, no
 * special files, limits of o. Exposed for its fuzzer. */
gboolean oakuk_image_unpack_archive(const char *archive_path, const char *tree, const char *url,
                                    const oakuk_image_cache_options *o, GCancellable *cancel, GError **error);

G_END_DECLS

#endif

/* What the unikernel image unpacker (image.c) and the OCI layer unpacker (oci.c) share: the
 * compressions they read, and path-safety checks for archive entries. Not installed, not exported. */
#ifndef OAKUK_ARCHIVE_SAFE_H
#define OAKUK_ARCHIVE_SAFE_H

#include <glib.h>

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
} OakukArchivePathCheck;

/* Normalises an archive path: drops "./" and empty components and a trailing "/". Returns the
 * normalised path ("" for the root itself), or NULL with *why set for absolute paths and ".."
 * components. */
char *oakuk_archive_normalize_path(const char *name, OakukArchivePathCheck *why);

/* True when symlink `name` (normalised) -> target stays inside the tree, resolved lexically.
 * Absolute targets count as leaving the tree unless absolute_is_inside, which is right for a
 * container rootfs where "/" means the rootfs itself (the link is never followed on the host:
 * extraction uses ARCHIVE_EXTRACT_SECURE_SYMLINKS). */
gboolean oakuk_archive_symlink_stays_inside(const char *name, const char *target, gboolean absolute_is_inside);

G_END_DECLS

#endif

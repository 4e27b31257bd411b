/* Compressions and path-safety checks for archive entries (see archive-safe.h). */
#include "archive-safe.h"

#include <archive.h>
#include <string.h>

void oakuk_archive_support_filters(struct archive *r) {
  archive_read_support_filter_gzip(r);
  archive_read_support_filter_zstd(r);
  archive_read_support_filter_xz(r);
  archive_read_support_filter_bzip2(r);
}

char *oakuk_archive_normalize_path(const char *name, OakukArchivePathCheck *why) {
  *why = OAKUK_ARCHIVE_PATH_OK;
  if (name[0] == '/') {
    *why = OAKUK_ARCHIVE_PATH_ABSOLUTE;
    return NULL;
  }
  g_auto(GStrv) parts = g_strsplit(name, "/", -1);
  g_autoptr(GPtrArray) keep = g_ptr_array_new();
  for (char **p = parts; *p; p++) {
    if (**p == '\0' || strcmp(*p, ".") == 0)
      continue;
    if (strcmp(*p, "..") == 0) {
      *why = OAKUK_ARCHIVE_PATH_DOTDOT;
      return NULL;
    }
    g_ptr_array_add(keep, *p);
  }
  g_ptr_array_add(keep, NULL);
  return g_strjoinv("/", (char **)keep->pdata);
}

gboolean oakuk_archive_symlink_stays_inside(const char *name, const char *target, gboolean absolute_is_inside) {
  if (target[0] == '\0')
    return FALSE;
  int depth;
  if (target[0] == '/') {
    if (!absolute_is_inside)
      return FALSE;
    depth = 0;
  } else {
    g_auto(GStrv) base = g_strsplit(name, "/", -1);
    depth = (int)g_strv_length(base) - 1; /* components of the link's directory */
  }
  g_auto(GStrv) parts = g_strsplit(target, "/", -1);
  for (char **p = parts; *p; p++) {
    if (**p == '\0' || strcmp(*p, ".") == 0)
      continue;
    if (strcmp(*p, "..") == 0) {
      if (--depth < 0)
        return FALSE;
    } else {
      depth++;
    }
  }
  return TRUE;
}

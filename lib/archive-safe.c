/* Compressions and path-safety checks for archive entries (see archive-safe.h). */
#include "archive-safe.h"
#include "oakuk-private.h"

#include <archive.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void oakuk_archive_support_filters(struct archive *r) {
  archive_read_support_filter_gzip(r);
  archive_read_support_filter_zstd(r);
  archive_read_support_filter_xz(r);
  archive_read_support_filter_bzip2(r);
}

char *oakuk_archive_normalize_path(const char *name, OakukArchivePathCheck *why) {
  *why = OAKUK_ARCHIVE_PATH_OK;
  if (!name) {
    *why = OAKUK_ARCHIVE_PATH_MISSING;
    return NULL;
  }
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

/* Pushes path's components in front of what is still to resolve, in order. */
static void push_front_parts(GQueue *todo, const char *path) {
  g_auto(GStrv) parts = g_strsplit(path, "/", -1);
  for (guint n = g_strv_length(parts); n > 0; n--)
    g_queue_push_head(todo, g_strdup(parts[n - 1]));
}

static char *join_parts(GPtrArray *stack) {
  g_autoptr(GPtrArray) v = g_ptr_array_new();
  for (guint k = 0; k < stack->len; k++)
    g_ptr_array_add(v, stack->pdata[k]);
  g_ptr_array_add(v, NULL);
  return g_strjoinv("/", (char **)v->pdata);
}

OakukArchiveResolve oakuk_archive_resolve(const char *dir, const char *path, gboolean follow_last,
                                          gboolean absolute_is_inside, OakukArchiveReadlink readlink_fn,
                                          gpointer data, char **resolved, char **via) {
  g_autoptr(GPtrArray) stack = g_ptr_array_new_with_free_func(g_free);
  g_auto(GStrv) base = g_strsplit(dir, "/", -1);
  for (char **p = base; *p; p++)
    if (**p && strcmp(*p, ".") != 0)
      g_ptr_array_add(stack, g_strdup(*p));
  GQueue todo = G_QUEUE_INIT;
  g_autofree char *last_link = NULL;
  OakukArchiveResolve r = OAKUK_ARCHIVE_RESOLVE_OK;
  guint links = 0;
  if (path[0] == '/') {
    if (!absolute_is_inside)
      r = OAKUK_ARCHIVE_RESOLVE_ABSOLUTE;
    g_ptr_array_set_size(stack, 0);
  }
  if (r == OAKUK_ARCHIVE_RESOLVE_OK)
    push_front_parts(&todo, path);
  char *c;
  while (r == OAKUK_ARCHIVE_RESOLVE_OK && (c = g_queue_pop_head(&todo)) != NULL) {
    if (*c == '\0' || strcmp(c, ".") == 0) {
      g_free(c);
      continue;
    }
    if (strcmp(c, "..") == 0) {
      g_free(c);
      if (stack->len == 0)
        r = OAKUK_ARCHIVE_RESOLVE_ESCAPES;
      else
        g_ptr_array_remove_index(stack, stack->len - 1);
      continue;
    }
    g_ptr_array_add(stack, c);
    if (g_queue_is_empty(&todo) && !follow_last)
      continue;
    g_autofree char *here = join_parts(stack);
    g_autofree char *target = readlink_fn(here, data);
    if (target == NULL)
      continue;
    g_free(last_link);
    last_link = g_steal_pointer(&here);
    g_ptr_array_remove_index(stack, stack->len - 1);
    if (++links > OAKUK_ARCHIVE_MAX_LINKS) {
      r = OAKUK_ARCHIVE_RESOLVE_LOOP;
    } else if (target[0] == '/') {
      if (!absolute_is_inside)
        r = OAKUK_ARCHIVE_RESOLVE_ABSOLUTE;
      g_ptr_array_set_size(stack, 0);
    }
    if (r == OAKUK_ARCHIVE_RESOLVE_OK)
      push_front_parts(&todo, target);
  }
  g_queue_clear_full(&todo, g_free);
  if (r == OAKUK_ARCHIVE_RESOLVE_OK && resolved)
    *resolved = join_parts(stack);
  if (r != OAKUK_ARCHIVE_RESOLVE_OK && via)
    *via = g_steal_pointer(&last_link);
  return r;
}

char *oakuk_archive_readlink_disk(const char *rel, gpointer root) {
  g_autofree char *p = *rel ? g_build_filename(root, rel, NULL) : g_strdup(root);
  struct stat st;
  if (lstat(p, &st) != 0 || !S_ISLNK(st.st_mode))
    return NULL;
  char *t = g_file_read_link(p, NULL);
  /* A link that cannot be read must not pass for a directory: "/.." leaves any tree. */
  return t ? t : g_strdup("/..");
}

char *oakuk_archive_resolve_describe(OakukArchiveResolve r, const char *via) {
  switch (r) {
  case OAKUK_ARCHIVE_RESOLVE_OK: return g_strdup("stays inside");
  case OAKUK_ARCHIVE_RESOLVE_ESCAPES:
    return via ? g_strdup_printf("leads out of the tree through the link %s", via)
               : g_strdup("leads out of the tree");
  case OAKUK_ARCHIVE_RESOLVE_ABSOLUTE:
    return via ? g_strdup_printf("leads out of the tree through the absolute link %s", via)
               : g_strdup("is an absolute path");
  case OAKUK_ARCHIVE_RESOLVE_LOOP:
    return g_strdup_printf("has more than %d levels of symbolic links", OAKUK_ARCHIVE_MAX_LINKS);
  }
  return g_strdup("?");
}

/* The type of entry name in the directory open as dirfd, without following a link. */
static unsigned char entry_type(int dirfd, const struct dirent *de) {
  if (de->d_type != DT_UNKNOWN)
    return de->d_type;
  struct stat st;
  if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
    return DT_UNKNOWN;
  return S_ISDIR(st.st_mode) ? DT_DIR : S_ISLNK(st.st_mode) ? DT_LNK : DT_REG;
}

gboolean oakuk_archive_check_tree(const char *root, gboolean absolute_is_inside, char **link, char **target,
                                  OakukArchiveResolve *why, char **via) {
  GQueue dirs = G_QUEUE_INIT;
  g_queue_push_tail(&dirs, g_strdup(""));
  gboolean ok = TRUE;
  char *rel;
  while (ok && (rel = g_queue_pop_head(&dirs)) != NULL) {
    g_autofree char *dir_rel = rel;
    g_autofree char *path = *dir_rel ? g_build_filename(root, dir_rel, NULL) : g_strdup(root);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (d == NULL) {
      int e = errno;
      if (fd >= 0)
        close(fd);
      *link = NULL;
      *target = g_strdup_printf("%s: %s", path, g_strerror(e));
      *why = OAKUK_ARCHIVE_RESOLVE_OK;
      ok = FALSE;
      break;
    }
    struct dirent *de;
    while (ok && (de = readdir(d)) != NULL) {
      if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
        continue;
      g_autofree char *child = *dir_rel ? g_strconcat(dir_rel, "/", de->d_name, NULL) : g_strdup(de->d_name);
      unsigned char type = entry_type(dirfd(d), de);
      if (type == DT_DIR) {
        g_queue_push_tail(&dirs, g_steal_pointer(&child));
      } else if (type == DT_LNK) {
        g_autofree char *t = oakuk_archive_readlink_disk(child, (gpointer)root);
        OakukArchiveResolve r = oakuk_archive_resolve(dir_rel, t ? t : "/..", TRUE, absolute_is_inside,
                                                      oakuk_archive_readlink_disk, (gpointer)root, NULL, via);
        if (r != OAKUK_ARCHIVE_RESOLVE_OK) {
          *link = g_steal_pointer(&child);
          *target = g_steal_pointer(&t);
          *why = r;
          ok = FALSE;
        }
      }
    }
    closedir(d);
  }
  g_queue_clear_full(&dirs, g_free);
  return ok;
}

/* ---- file:// sources ---- */

char **oakuk_archive_local_dirs(const char *text, char **bad) {
  *bad = NULL;
  if (text == NULL || *text == '\0')
    return NULL;
  g_auto(GStrv) parts = g_strsplit(text, ":", -1);
  g_autoptr(GPtrArray) dirs = g_ptr_array_new_with_free_func(g_free);
  for (char **p = parts; *p; p++) {
    if (**p == '\0')
      continue;
    if (!g_path_is_absolute(*p)) {
      *bad = g_strdup(*p);
      return NULL;
    }
    g_ptr_array_add(dirs, g_canonicalize_filename(*p, "/"));
  }
  if (dirs->len == 0)
    return NULL;
  g_ptr_array_add(dirs, NULL);
  return (char **)g_ptr_array_steal(dirs, NULL);
}

/* Whether path (absolute, canonical) lies inside one of dirs (resolved with realpath first when
 * resolve; a directory that does not exist then holds nothing). */
static gboolean inside_dirs(const char *path, char **dirs, gboolean resolve) {
  for (char **d = dirs; d && *d; d++) {
    g_autofree char *real = resolve ? realpath(*d, NULL) : g_strdup(*d);
    if (real == NULL)
      continue;
    size_t n = strlen(real);
    if (strcmp(real, "/") == 0 || (strncmp(path, real, n) == 0 && (path[n] == '/' || path[n] == '\0')))
      return TRUE;
  }
  return FALSE;
}

static char *dirs_text(char **dirs) {
  return dirs ? g_strjoinv(":", dirs) : g_strdup("none");
}

gboolean oakuk_archive_local_check(const char *url, char **dirs, const char *option, char **path,
                                   GError **error) {
  g_autofree char *host = NULL;
  g_autofree char *p = g_filename_from_uri(url, &host, NULL);
  if (p == NULL || (host != NULL && *host && strcmp(host, "localhost") != 0)) {
    g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "%s: expected file:///absolute/path (a local file)", url);
    return FALSE;
  }
  if (dirs == NULL) {
    g_set_error(error, OAKUK_ERROR, -OAKUK_EPERM,
                "%s: file:// URLs are refused: the option %s names no directory", url, option);
    return FALSE;
  }
  g_autofree char *canon = g_canonicalize_filename(p, "/");
  if (!inside_dirs(canon, dirs, FALSE)) {
    g_autofree char *allowed = dirs_text(dirs);
    g_set_error(error, OAKUK_ERROR, -OAKUK_EPERM, "%s: %s is outside the directories %s allows (%s)", url,
                canon, option, allowed);
    return FALSE;
  }
  if (path)
    *path = g_steal_pointer(&canon);
  return TRUE;
}

static const char *file_kind(mode_t m) {
  return S_ISFIFO(m)   ? "a fifo"
         : S_ISSOCK(m) ? "a socket"
         : S_ISCHR(m)  ? "a character device"
         : S_ISBLK(m)  ? "a block device"
         : S_ISDIR(m)  ? "a directory"
                       : "not a regular file";
}

static int errno_code(int e) {
  return e == ENOENT || e == ENOTDIR ? OAKUK_ENOTFOUND : e == EACCES || e == EPERM ? OAKUK_EPERM : OAKUK_EIO;
}

int oakuk_archive_local_open(const char *url, const char *path, char **dirs, const char *option, gint64 *size,
                             GError **error) {
  struct stat st;
  if (stat(path, &st) != 0) {
    int e = errno;
    g_set_error(error, OAKUK_ERROR, -errno_code(e), "%s: %s: %s", url, path, g_strerror(e));
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    g_set_error(error, OAKUK_ERROR, -OAKUK_EPERM, "%s: %s is %s; file:// reads regular files only", url, path,
                file_kind(st.st_mode));
    return -1;
  }
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    g_set_error(error, OAKUK_ERROR, -errno_code(e), "%s: %s: %s", url, path, g_strerror(e));
    return -1;
  }
  g_autofree char *link = g_strdup_printf("/proc/self/fd/%d", fd);
  g_autofree char *real = g_file_read_link(link, NULL);
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    g_set_error(error, OAKUK_ERROR, -OAKUK_EPERM,
                "%s: %s is not a regular file; file:// reads regular files only", url, path);
  } else if (real == NULL || !inside_dirs(real, dirs, TRUE)) {
    g_autofree char *allowed = dirs_text(dirs);
    g_set_error(error, OAKUK_ERROR, -OAKUK_EPERM,
                "%s: %s resolves to %s, outside the directories %s allows (%s)", url, path, real ? real : "?",
                option, allowed);
  } else {
    /* Regular files never block; reads need no O_NONBLOCK. */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    if (size)
      *size = (gint64)st.st_size;
    return fd;
  }
  close(fd);
  return -1;
}

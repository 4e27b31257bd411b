/* Image fetching, verification, safe unpacking and caching (docs/architecture.md §10.2, §13): tarballs
 * and bare kernels over http(s)/file, OCI images through oci.c and oci-unikernel.c, revalidation,
 * and the cache's housekeeping (sizes, least-recently-used eviction of images no one uses, pruning). */
#include "archive-safe.h"
#include "oakuk-private.h"
#include "oci-private.h"
#include "sysutil-private.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <gio/gio.h>
#include <json-glib/json-glib.h>
#include <libsoup/soup.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define IMAGE_CHUNK (64 * 1024)
#define MANIFEST_MAX_BYTES (64 * 1024)
#define PROGRESS_STEP_BYTES (256 * 1024)
#define PROGRESS_STEP_US (100 * 1000)
#define SCAN_MAX_BYTES (512 * 1024 * 1024)

#define set_gerror(err, code, ...) g_set_error(err, OAKUK_ERROR, -(code), __VA_ARGS__)

/* ---------------------------------------------------------------------------------------------- */
/* oakuk_image */

struct oakuk_image {
  gatomicrefcount refcount;
  char *dir;
  char *kernel;
  char *initrd;
  char *files_dir;
  char *flavor;
  char *version;
  char *cmdline_style;
  char *cmdline_extra;
  char *arch;
  char *sha256;
  char *url;
  char *digest;           /* OCI: the platform manifest's digest */
  GPtrArray *args;        /* char*, never NULL */
  GPtrArray *env;         /* char*, never NULL */
  oakuk_image_cache *use; /* the cache counting this image as in use, or NULL */
  char *key;              /* its entry's name in that cache */
};

static void use_release(oakuk_image_cache *cache, const char *key);

oakuk_image *oakuk_image_ref(oakuk_image *image) {
  g_return_val_if_fail(image != NULL, NULL);
  g_atomic_ref_count_inc(&image->refcount);
  return image;
}

void oakuk_image_unref(oakuk_image *image) {
  if (image == NULL || !g_atomic_ref_count_dec(&image->refcount))
    return;
  if (image->use != NULL) {
    use_release(image->use, image->key);
    oakuk_image_cache_unref(image->use);
  }
  g_free(image->key);
  g_free(image->digest);
  g_ptr_array_unref(image->args);
  g_ptr_array_unref(image->env);
  g_free(image->dir);
  g_free(image->kernel);
  g_free(image->initrd);
  g_free(image->files_dir);
  g_free(image->flavor);
  g_free(image->version);
  g_free(image->cmdline_style);
  g_free(image->cmdline_extra);
  g_free(image->arch);
  g_free(image->sha256);
  g_free(image->url);
  g_free(image);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC(oakuk_image, oakuk_image_unref)

const char *oakuk_image_dir(const oakuk_image *image) {
  g_return_val_if_fail(image != NULL, NULL);
  return image->dir;
}
const char *oakuk_image_kernel(const oakuk_image *image) {
  g_return_val_if_fail(image != NULL, NULL);
  return image->kernel;
}
const char *oakuk_image_initrd(const oakuk_image *image) {
  g_return_val_if_fail(image != NULL, NULL);
  return image->initrd;
}
const char *oakuk_image_files_dir(const oakuk_image *image) {
  g_return_val_if_fail(image != NULL, NULL);
  return image->files_dir;
}
const char *oakuk_image_flavor(const oakuk_image *image) {
  g_return_val_if_fail(image != NULL, NULL);
  return image->flavor;
}
const char *oakuk_image_version(const oakuk_image *image) {
  g_return_val_if_fail(image != NULL, NULL);
  return image->version;
}
const char *oakuk_image_cmdline_style(const oakuk_image *image) {
  g_return_val_if_fail(image != NULL, NULL);
  return image->cmdline_style;
}
const char *oakuk_image_cmdline_extra(const oakuk_image *image) {
  g_return_val_if_fail(image != NULL, NULL);
  return image->cmdline_extra;
}
const char *oakuk_image_arch(const oakuk_image *image) {
  g_return_val_if_fail(image != NULL, NULL);
  return image->arch;
}
const char *oakuk_image_sha256(const oakuk_image *image) {
  g_return_val_if_fail(image != NULL, NULL);
  return image->sha256;
}
const char *oakuk_image_url(const oakuk_image *image) {
  g_return_val_if_fail(image != NULL, NULL);
  return image->url;
}
const char *oakuk_image_digest(const oakuk_image *image) {
  g_return_val_if_fail(image != NULL, NULL);
  return image->digest;
}
size_t oakuk_image_arg_count(const oakuk_image *image) {
  g_return_val_if_fail(image != NULL, 0);
  return image->args->len;
}
const char *oakuk_image_arg(const oakuk_image *image, size_t i) {
  g_return_val_if_fail(image != NULL, NULL);
  return i < image->args->len ? g_ptr_array_index(image->args, i) : NULL;
}
size_t oakuk_image_env_count(const oakuk_image *image) {
  g_return_val_if_fail(image != NULL, 0);
  return image->env->len;
}
const char *oakuk_image_env(const oakuk_image *image, size_t i) {
  g_return_val_if_fail(image != NULL, NULL);
  return i < image->env->len ? g_ptr_array_index(image->env, i) : NULL;
}

/* ---------------------------------------------------------------------------------------------- */
/* Kernel inspection */

static gssize read_head(const char *path, guint8 *buf, gsize len, GError **error) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    set_gerror(error, OAKUK_EIO, "open kernel %s: %s", path, g_strerror(e));
    return -1;
  }
  gsize got = 0;
  while (got < len) {
    ssize_t n = read(fd, buf + got, len - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      set_gerror(error, OAKUK_EIO, "read kernel %s: %s", path, g_strerror(e));
      return -1;
    }
    if (n == 0)
      break;
    got += (gsize)n;
  }
  close(fd);
  return (gssize)got;
}

static guint16 rd16(const guint8 *p, gboolean big_endian) {
  return big_endian ? (guint16)((p[0] << 8) | p[1]) : (guint16)(p[0] | (p[1] << 8));
}

static guint32 rd32(const guint8 *p, gboolean big_endian) {
  return big_endian ? ((guint32)p[0] << 24) | ((guint32)p[1] << 16) | ((guint32)p[2] << 8) | p[3]
                    : ((guint32)p[3] << 24) | ((guint32)p[2] << 16) | ((guint32)p[1] << 8) | p[0];
}

static guint64 rd64(const guint8 *p, gboolean big_endian) {
  guint64 a = rd32(p, big_endian), b = rd32(p + 4, big_endian);
  return big_endian ? (a << 32) | b : (b << 32) | a;
}

/* How far into a kernel its boot headers may be: multiboot v1 within 8 KiB (4-byte aligned),
 * multiboot2 within 32 KiB (8-byte aligned). */
#define MULTIBOOT_SEARCH 8192
#define MULTIBOOT2_SEARCH 32768
#define KERNEL_HEAD (MULTIBOOT2_SEARCH + 64)
#define MULTIBOOT_MAGIC 0x1BADB002u
#define MULTIBOOT2_MAGIC 0xE85250D6u
#define MULTIBOOT_AOUT_KLUDGE (1u << 16)
#define XEN_ELFNOTE_PHYS32_ENTRY 18 /* the PVH entry point note */

/* Offset of a valid multiboot v1 header (magic + flags + checksum == 0) and its flags; -1 if none. */
static gssize find_multiboot(const guint8 *b, gsize n, guint32 *flags) {
  for (gsize off = 0; off + 12 <= MIN(n, (gsize)MULTIBOOT_SEARCH); off += 4)
    if (rd32(b + off, FALSE) == MULTIBOOT_MAGIC &&
        (guint32)(MULTIBOOT_MAGIC + rd32(b + off + 4, FALSE) + rd32(b + off + 8, FALSE)) == 0) {
      *flags = rd32(b + off + 4, FALSE);
      return (gssize)off;
    }
  return -1;
}

/* A valid multiboot2 header: magic + architecture + header_length + checksum == 0. */
static gboolean has_multiboot2(const guint8 *b, gsize n) {
  for (gsize off = 0; off + 16 <= MIN(n, (gsize)MULTIBOOT2_SEARCH); off += 8)
    if (rd32(b + off, FALSE) == MULTIBOOT2_MAGIC &&
        (guint32)(MULTIBOOT2_MAGIC + rd32(b + off + 4, FALSE) + rd32(b + off + 8, FALSE) +
                  rd32(b + off + 12, FALSE)) == 0)
      return TRUE;
  return FALSE;
}

/* Whether the ELF file's PT_NOTE segments hold Xen's PHYS32_ENTRY note, which is how QEMU boots
 * an uncompressed x86 kernel (PVH). Reads the program headers and notes with pread. */
static gboolean elf_has_pvh_note(int fd, const guint8 *h, gsize n) {
  gboolean is64 = h[4] == 2, be = h[5] == 2;
  guint64 phoff = is64 ? rd64(h + 32, be) : rd32(h + 28, be);
  guint phentsize = rd16(h + (is64 ? 54 : 42), be), phnum = rd16(h + (is64 ? 56 : 44), be);
  if (n < (is64 ? 64u : 52u) || phnum == 0 || phnum > 128 || phentsize < (is64 ? 56u : 32u) ||
      phentsize > 256)
    return FALSE;
  for (guint k = 0; k < phnum; k++) {
    guint8 ph[256];
    if (pread(fd, ph, phentsize, (off_t)(phoff + (guint64)k * phentsize)) != (ssize_t)phentsize)
      return FALSE;
    if (rd32(ph, be) != 4 /* PT_NOTE */)
      continue;
    guint64 off = is64 ? rd64(ph + 8, be) : rd32(ph + 4, be);
    guint64 size = is64 ? rd64(ph + 32, be) : rd32(ph + 16, be);
    if (size == 0 || size > 65536)
      continue;
    g_autofree guint8 *notes = g_malloc(size);
    if (pread(fd, notes, size, (off_t)off) != (ssize_t)size)
      continue;
    /* Elf_Nhdr: namesz, descsz, type, then name and desc, each padded to 4 bytes. */
    for (guint64 p = 0; p + 12 <= size;) {
      guint32 namesz = rd32(notes + p, be), descsz = rd32(notes + p + 4, be), type = rd32(notes + p + 8, be);
      guint64 next = p + 12 + (((guint64)namesz + 3) & ~3ull) + (((guint64)descsz + 3) & ~3ull);
      if (next > size)
        break;
      if (type == XEN_ELFNOTE_PHYS32_ENTRY && namesz == 4 && memcmp(notes + p + 12, "Xen", 4) == 0)
        return TRUE;
      p = next;
    }
  }
  return FALSE;
}

typedef struct {
  const char *arch;   /* GOARCH */
  const char *format; /* what QEMU will boot it as */
} KernelInfo;

/* An x86 kernel that QEMU's -kernel can boot: multiboot v1 (32-bit ELF, or any file with the
 * header's address fields), PVH (an ELF note), or a bzImage handled elsewhere. */
static gboolean x86_elf(int fd, const guint8 *b, gsize n, KernelInfo *ki, const char *path, GError **error) {
  gboolean is64 = b[4] == 2;
  guint32 flags = 0;
  if (elf_has_pvh_note(fd, b, n)) {
    ki->format = is64 ? "PVH (64-bit ELF)" : "PVH (32-bit ELF)";
    return TRUE;
  }
  if (find_multiboot(b, n, &flags) >= 0) {
    if (!is64) {
      ki->format = "multiboot (32-bit ELF)";
      return TRUE;
    }
    if (flags & MULTIBOOT_AOUT_KLUDGE) {
      ki->format = "multiboot (load addresses)";
      return TRUE;
    }
    return set_gerror(error, OAKUK_EINVAL,
                      "kernel %s: a 64-bit x86 ELF with a multiboot header but no load addresses: QEMU's "
                      "multiboot loader takes 32-bit ELF files only",
                      path),
           FALSE;
  }
  if (has_multiboot2(b, n))
    return set_gerror(error, OAKUK_EINVAL,
                      "kernel %s: an x86 ELF with only a multiboot2 header: QEMU's -kernel boots multiboot "
                      "(v1), PVH and Linux kernels",
                      path),
           FALSE;
  if (is64)
    return set_gerror(
               error, OAKUK_EINVAL,
               "kernel %s: a 64-bit x86 ELF with neither a PVH note nor a multiboot header: QEMU cannot "
               "boot it (for Unikraft, use the *_qemu-x86_64 file, not the .dbg one)",
               path),
           FALSE;
  return set_gerror(error, OAKUK_EINVAL,
                    "kernel %s: a 32-bit x86 ELF with neither a multiboot header nor a PVH note: QEMU cannot "
                    "boot it",
                    path),
         FALSE;
}

static gboolean inspect_elf(int fd, const guint8 *b, gsize n, KernelInfo *ki, const char *path,
                            GError **error) {
  guint m = rd16(b + 18, b[5] == 2);
  switch (m) {
  case 3: /* EM_386 */
  case 62: /* EM_X86_64 */ ki->arch = "amd64"; return x86_elf(fd, b, n, ki, path, error);
  case 183: /* EM_AARCH64 */
    ki->arch = "arm64";
    ki->format = "ELF (AArch64)";
    return TRUE;
  case 40: /* EM_ARM */
    ki->arch = "arm";
    ki->format = "ELF (ARM)";
    return TRUE;
  case 243: /* EM_RISCV: only the 64-bit class is a known GOARCH */
    if (b[4] == 2) {
      ki->arch = "riscv64";
      ki->format = "ELF (RISC-V)";
      return TRUE;
    }
    break;
  default: break;
  }
  return set_gerror(error, OAKUK_EINVAL, "kernel %s: ELF machine %u is not a supported architecture", path,
                    m),
         FALSE;
}

/* Recognises a kernel by its content (never its name). */
static gboolean inspect_head(int fd, const guint8 *b, gsize n, KernelInfo *ki, const char *path,
                             GError **error) {
  *ki = (KernelInfo){NULL, NULL};
  if (n >= 20 && memcmp(b, "\177ELF", 4) == 0)
    return inspect_elf(fd, b, n, ki, path, error);
  if (n >= 64 && memcmp(b + 56, "ARM\x64", 4) == 0) {
    *ki = (KernelInfo){"arm64", "arm64 Image"};
    return TRUE;
  }
  if (n >= 64 && memcmp(b + 56, "RSC\x05", 4) == 0) {
    *ki = (KernelInfo){"riscv64", "RISC-V Image"};
    return TRUE;
  }
  if (n >= 0x206 && memcmp(b + 0x202, "HdrS", 4) == 0) {
    *ki = (KernelInfo){"amd64", "bzImage"};
    return TRUE;
  }
  if (n >= 0x28 && b[0x24] == 0x18 && b[0x25] == 0x28 && b[0x26] == 0x6f && b[0x27] == 0x01) {
    *ki = (KernelInfo){"arm", "ARM zImage"}; /* magic 0x016f2818 */
    return TRUE;
  }
  guint32 flags = 0;
  if (find_multiboot(b, n, &flags) >= 0) {
    if (flags & MULTIBOOT_AOUT_KLUDGE) {
      *ki = (KernelInfo){"amd64", "multiboot (load addresses)"};
      return TRUE;
    }
    return set_gerror(error, OAKUK_EINVAL,
                      "kernel %s: a multiboot header without load addresses in a file that is not ELF: QEMU "
                      "cannot place it",
                      path),
           FALSE;
  }
  if (has_multiboot2(b, n))
    return set_gerror(
               error, OAKUK_EINVAL,
               "kernel %s: only a multiboot2 header: QEMU's -kernel boots multiboot (v1), PVH and Linux "
               "kernels",
               path),
           FALSE;
  return set_gerror(
             error, OAKUK_EINVAL,
             "kernel %s: not a recognised kernel (no ELF, multiboot, bzImage or arm64/riscv Image header)",
             path),
         FALSE;
}

/* The compressions and tar formats an image archive may come in. */
static gboolean looks_like_archive(const guint8 *b, gsize n) {
  return (n >= 2 && b[0] == 0x1f && b[1] == 0x8b) ||
         (n >= 6 && memcmp(b,
                           "\xfd"
                           "7zXZ\0",
                           6) == 0) ||
         (n >= 4 && memcmp(b, "\x28\xb5\x2f\xfd", 4) == 0) || (n >= 3 && memcmp(b, "BZh", 3) == 0) ||
         (n >= 262 && memcmp(b + 257, "ustar", 5) == 0);
}

/* Whether the first bytes of a download are a bare kernel (else: an archive), bootable or not.
 * A tar is checked first: a kernel inside one puts its multiboot header in the first 8 KiB too. */
static gboolean looks_like_kernel(const guint8 *b, gsize n) {
  guint32 flags;
  KernelInfo ki;
  if (looks_like_archive(b, n))
    return FALSE;
  return (n >= 4 && memcmp(b, "\177ELF", 4) == 0) || inspect_head(-1, b, n, &ki, "", NULL) ||
         find_multiboot(b, n, &flags) >= 0 || has_multiboot2(b, n);
}

static gboolean kernel_inspect(const char *path, KernelInfo *ki, GError **error) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return set_gerror(error, OAKUK_EIO, "open kernel %s: %s", path, g_strerror(e)), FALSE;
  }
  g_autofree guint8 *head = g_malloc(KERNEL_HEAD);
  gsize got = 0;
  while (got < KERNEL_HEAD) {
    ssize_t r = pread(fd, head + got, KERNEL_HEAD - got, (off_t)got);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0) {
      int e = errno;
      close(fd);
      return set_gerror(error, OAKUK_EIO, "read kernel %s: %s", path, g_strerror(e)), FALSE;
    }
    if (r == 0)
      break;
    got += (gsize)r;
  }
  gboolean ok = inspect_head(fd, head, got, ki, path, error);
  close(fd);
  return ok;
}

static const char *kernel_arch(const char *path, GError **error) {
  KernelInfo ki;
  return kernel_inspect(path, &ki, error) ? ki.arch : NULL;
}

const char *oakuk_image_kernel_arch(const char *path, oakuk_error **error) {
  g_return_val_if_fail(path != NULL, NULL);
  GError *err = NULL;
  const char *arch = kernel_arch(path, &err);
  if (arch == NULL)
    oakuk_propagate_gerror(error, err);
  return arch;
}

const char *oakuk_image_kernel_format(const char *path, oakuk_error **error) {
  g_return_val_if_fail(path != NULL, NULL);
  GError *err = NULL;
  KernelInfo ki;
  if (!kernel_inspect(path, &ki, &err)) {
    oakuk_propagate_gerror(error, err);
    return NULL;
  }
  return ki.format;
}

/* Parses "<Codename> <x.y.z>" right after "Unikraft "; returns "x.y.z" or NULL. */
static char *parse_unikraft_banner(const guint8 *p, gsize avail) {
  gsize i = 0;
  if (i >= avail || !g_ascii_isupper(p[i]))
    return NULL;
  while (i < avail && g_ascii_isalpha(p[i]))
    i++;
  if (i >= avail || p[i] != ' ')
    return NULL;
  gsize start = ++i;
  for (int part = 0; part < 3; part++) {
    gsize digits = 0;
    while (i < avail && g_ascii_isdigit(p[i]) && digits < 6) {
      i++;
      digits++;
    }
    if (digits == 0)
      return NULL;
    if (part < 2) {
      if (i >= avail || p[i] != '.')
        return NULL;
      i++;
    }
  }
  return g_strndup((const char *)p + start, i - start);
}

/* The version token after "Linux version " (printable, up to a space). */
static char *parse_token(const guint8 *p, gsize avail) {
  gsize i = 0;
  while (i < avail && i < 64 && g_ascii_isgraph(p[i]))
    i++;
  return i > 0 ? g_strndup((const char *)p, i) : NULL;
}

static char *bzimage_version(const char *path, const guint8 *head, gsize n) {
  if (n < 0x210 || memcmp(head + 0x202, "HdrS", 4) != 0)
    return NULL;
  guint off = rd16(head + 0x20e, FALSE);
  if (off == 0)
    return NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return NULL;
  guint8 buf[128];
  ssize_t got = pread(fd, buf, sizeof buf, (off_t)off + 0x200);
  close(fd);
  return got > 0 ? parse_token(buf, (gsize)got) : NULL;
}

static int kernel_flavor(const char *path, const char **flavor, char **version, GError **error) {
  *flavor = "unknown";
  *version = NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    set_gerror(error, OAKUK_EIO, "open kernel %s: %s", path, g_strerror(e));
    return OAKUK_EIO;
  }
  const gsize overlap = 128;
  g_autofree guint8 *buf = g_malloc(1024 * 1024 + overlap);
  gsize keep = 0, total = 0;
  gboolean linux_seen = FALSE, is_bzimage = FALSE;
  g_autofree char *linux_version = NULL;
  g_autofree guint8 *head = NULL;
  gsize head_len = 0;
  for (;;) {
    ssize_t n = read(fd, buf + keep, 1024 * 1024);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      set_gerror(error, OAKUK_EIO, "read kernel %s: %s", path, g_strerror(e));
      return OAKUK_EIO;
    }
    if (head == NULL) {
      head_len = MIN((gsize)n, 1024);
      head = g_memdup2(buf, head_len);
      is_bzimage = head_len >= 0x206 && memcmp(head + 0x202, "HdrS", 4) == 0;
    }
    gsize len = keep + (gsize)n;
    const guint8 *p = buf;
    while ((p = memmem(p, len - (gsize)(p - buf), "Unikraft ", 9)) != NULL) {
      gsize off = (gsize)(p - buf) + 9;
      char *v = parse_unikraft_banner(buf + off, len - off);
      if (v != NULL) {
        close(fd);
        *flavor = "unikraft";
        *version = v;
        return 0;
      }
      p += 9;
    }
    const guint8 *l = memmem(buf, len, "Linux version ", 14);
    if (l != NULL && !linux_seen) {
      gsize off = (gsize)(l - buf) + 14;
      linux_seen = TRUE;
      linux_version = parse_token(buf + off, len - off);
    }
    total += (gsize)n;
    if (n == 0 || total >= SCAN_MAX_BYTES)
      break;
    keep = MIN(len, overlap);
    memmove(buf, buf + len - keep, keep);
  }
  close(fd);
  if (linux_seen || is_bzimage) {
    *flavor = "linux";
    *version = is_bzimage ? bzimage_version(path, head, head_len) : NULL;
    if (*version == NULL)
      *version = g_steal_pointer(&linux_version);
  }
  return 0;
}

int oakuk_image_kernel_unikraft_version(const char **flavor, char **version, const char *path,
                                        oakuk_error **error) {
  g_return_val_if_fail(flavor != NULL && version != NULL && path != NULL, OAKUK_EINVAL);
  GError *err = NULL;
  int rc = kernel_flavor(path, flavor, version, &err);
  if (rc != 0)
    return oakuk_propagate_gerror(error, err);
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Options and cache object */

/* How many bytes of the options struct each version has. */
#define OPTIONS_V1_SIZE G_STRUCT_OFFSET(oakuk_image_cache_options, connect_timeout_s)
#define OPTIONS_V2_SIZE G_STRUCT_OFFSET(oakuk_image_cache_options, max_cache_bytes)

static gsize options_size(unsigned int version) {
  switch (version) {
  case OAKUK_IMAGE_CACHE_OPTIONS_VERSION_1: return OPTIONS_V1_SIZE;
  case OAKUK_IMAGE_CACHE_OPTIONS_VERSION_2: return OPTIONS_V2_SIZE;
  case OAKUK_IMAGE_CACHE_OPTIONS_VERSION: return sizeof(oakuk_image_cache_options);
  default: return 0;
  }
}

int oakuk_image_cache_options_init(oakuk_image_cache_options *opts, unsigned int version) {
  g_return_val_if_fail(opts != NULL, OAKUK_EINVAL);
  gsize size = options_size(version);
  if (size == 0)
    return OAKUK_EINVAL;
  oakuk_image_cache_options def = OAKUK_IMAGE_CACHE_OPTIONS_INIT;
  def.version = version;
  /* An older caller's struct ends before the newer fields: write only its part. */
  memcpy(opts, &def, size);
  return 0;
}

/* A download in progress that fetches of the same key wait for. Guarded by cache->lock. It lives
 * as long as its owner (the thread downloading) or a waiter holds a reference. */
typedef struct {
  char *key;
  gboolean finished;
  oakuk_image *image;
  GError *error;
  guint64 progress_seq;
  gint64 bytes;
  gint64 total;
  guint refs;           /* the owner and the waiters still looking at it */
  guint active;         /* fetches (owner's included) not cancelled: at 0 the download stops */
  GCancellable *cancel; /* stops the download: every fetch was cancelled, or a timeout */
} Inflight;

/* One fetch's part in a download, for cancellation. Guarded by cache->lock. */
typedef struct {
  gboolean cancelled;
  Inflight *inflight; /* the download it waits for, or NULL */
} Waiter;

struct oakuk_image_cache {
  gatomicrefcount refcount;
  char *dir;
  char *refs_dir; /* <dir>/.refs: what a URL without sha256 or an OCI reference led to */
  char *oci_dir;  /* <dir>/.oci: the OCI client's work area and blobs */
  char *blobs_dir;
  oakuk_image_cache_options opts;
  char **allowed; /* file_allowed_dirs, canonical, or NULL */
  char *allowed_text;
  char *insecure_text;
  /* Entries are created, opened and removed only under lock (eviction must not remove an entry
   * between its rename into place and its first use). */
  GMutex lock;
  GCond cond;
  GHashTable *inflight; /* key → Inflight* */
  GMutex use_lock;      /* taken alone, or inside lock; never the other way round */
  GHashTable *uses;     /* entry key → number of live oakuk_image objects (GUINT_TO_POINTER) */
};

static void inflight_release(Inflight *in) {
  if (--in->refs > 0)
    return;
  oakuk_image_unref(in->image);
  g_clear_error(&in->error);
  g_clear_object(&in->cancel);
  g_free(in->key);
  g_free(in);
}

/* Reads opts of any known version into *o (defaults for the fields its version lacks). */
static gboolean options_read(oakuk_image_cache_options *o, const oakuk_image_cache_options *opts,
                             oakuk_error **error) {
  oakuk_image_cache_options def = OAKUK_IMAGE_CACHE_OPTIONS_INIT;
  *o = def;
  if (opts == NULL)
    return TRUE;
  gsize size = options_size(opts->version);
  if (size == 0) {
    oakuk_set_error(error, OAKUK_EINVAL, 0, "version", "image cache options: unknown version %u",
                    opts->version);
    return FALSE;
  }
  memcpy(o, opts, size);
  o->version = OAKUK_IMAGE_CACHE_OPTIONS_VERSION;
  return TRUE;
}

/* Leftovers of an interrupted process: work dirs, evicted entries not yet removed, unpacked OCI
 * archives and partial blobs. */
static void remove_leftovers(const char *dir, const char *const *prefixes) {
  g_autoptr(GDir) d = g_dir_open(dir, 0, NULL);
  const char *name;
  while (d != NULL && (name = g_dir_read_name(d)) != NULL)
    for (const char *const *p = prefixes; *p; p++)
      if (g_str_has_prefix(name, *p)) {
        g_autofree char *path = g_build_filename(dir, name, NULL);
        oakuk_rm_rf(path, NULL);
      }
}

oakuk_image_cache *oakuk_image_cache_new(const char *dir, const oakuk_image_cache_options *opts,
                                         oakuk_error **error) {
  g_return_val_if_fail(dir != NULL, NULL);
  oakuk_image_cache_options o;
  if (!options_read(&o, opts, error))
    return NULL;
  const char *zero = o.max_download_bytes == 0   ? "max_download_bytes"
                     : o.max_unpacked_bytes == 0 ? "max_unpacked_bytes"
                     : o.max_entries == 0        ? "max_entries"
                                                 : NULL;
  if (zero != NULL) {
    oakuk_set_error(error, OAKUK_EINVAL, 0, zero, "image cache options: %s must be greater than 0", zero);
    return NULL;
  }
  g_autofree char *bad = NULL;
  g_auto(GStrv) allowed = oakuk_archive_local_dirs(o.file_allowed_dirs, &bad);
  if (bad != NULL) {
    oakuk_set_error(error, OAKUK_EINVAL, 0, "file_allowed_dirs",
                    "image cache options: file_allowed_dirs: \"%s\" is not an absolute directory", bad);
    return NULL;
  }
  if (g_mkdir_with_parents(dir, 0755) != 0) {
    int e = errno;
    oakuk_set_error(error, OAKUK_EIO, e, NULL, "image cache %s: create: %s", dir, g_strerror(e));
    return NULL;
  }
  /* The real path has no symlinks, so libarchive's SECURE_SYMLINKS check only sees the image's. */
  g_autofree char *real = realpath(dir, NULL);
  if (real == NULL) {
    int e = errno;
    oakuk_set_error(error, OAKUK_EIO, e, NULL, "image cache %s: %s", dir, g_strerror(e));
    return NULL;
  }
  if (access(real, R_OK | W_OK | X_OK) != 0) {
    oakuk_set_error(error, OAKUK_EIO, errno, NULL, "image cache %s: cannot list the directory", dir);
    return NULL;
  }
  static const char *const top[] = {".tmp-", ".evict-", NULL};
  static const char *const oci[] = {".archive-", ".tmp-", NULL};
  remove_leftovers(real, top);
  oakuk_image_cache *c = g_new0(oakuk_image_cache, 1);
  g_atomic_ref_count_init(&c->refcount);
  c->dir = g_steal_pointer(&real);
  c->refs_dir = g_build_filename(c->dir, ".refs", NULL);
  c->oci_dir = g_build_filename(c->dir, ".oci", NULL);
  c->blobs_dir = g_build_filename(c->oci_dir, "blobs", "sha256", NULL);
  remove_leftovers(c->oci_dir, oci);
  remove_leftovers(c->blobs_dir, oci);
  c->opts = o;
  c->allowed = g_steal_pointer(&allowed);
  c->allowed_text = c->allowed ? g_strjoinv(":", c->allowed) : NULL;
  c->opts.file_allowed_dirs = c->allowed_text;
  c->insecure_text = g_strdup(o.insecure_registries);
  c->opts.insecure_registries = c->insecure_text;
  g_mutex_init(&c->lock);
  g_cond_init(&c->cond);
  c->inflight = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  g_mutex_init(&c->use_lock);
  c->uses = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  return c;
}

oakuk_image_cache *oakuk_image_cache_ref(oakuk_image_cache *cache) {
  g_return_val_if_fail(cache != NULL, NULL);
  g_atomic_ref_count_inc(&cache->refcount);
  return cache;
}

void oakuk_image_cache_unref(oakuk_image_cache *cache) {
  if (cache == NULL || !g_atomic_ref_count_dec(&cache->refcount))
    return;
  g_hash_table_unref(cache->inflight);
  g_hash_table_unref(cache->uses);
  g_mutex_clear(&cache->lock);
  g_mutex_clear(&cache->use_lock);
  g_cond_clear(&cache->cond);
  g_strfreev(cache->allowed);
  g_free(cache->allowed_text);
  g_free(cache->insecure_text);
  g_free(cache->refs_dir);
  g_free(cache->oci_dir);
  g_free(cache->blobs_dir);
  g_free(cache->dir);
  g_free(cache);
}

const char *oakuk_image_cache_dir(const oakuk_image_cache *cache) {
  g_return_val_if_fail(cache != NULL, NULL);
  return cache->dir;
}

/* ---------------------------------------------------------------------------------------------- */
/* Images in use, and when each entry was last used */

/* Marks the entry as used now: <entry>/used's mtime orders eviction. */
static void touch_used(const char *entry_dir) {
  g_autofree char *path = g_build_filename(entry_dir, "used", NULL);
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd >= 0) {
    futimens(fd, NULL);
    close(fd);
  }
}

/* One more live image of entry key (cache->use_lock not held). */
static void use_take(oakuk_image_cache *cache, oakuk_image *img, const char *key) {
  g_mutex_lock(&cache->use_lock);
  guint n = GPOINTER_TO_UINT(g_hash_table_lookup(cache->uses, key));
  g_hash_table_replace(cache->uses, g_strdup(key), GUINT_TO_POINTER(n + 1));
  g_mutex_unlock(&cache->use_lock);
  img->use = oakuk_image_cache_ref(cache);
  img->key = g_strdup(key);
}

static void use_release(oakuk_image_cache *cache, const char *key) {
  g_mutex_lock(&cache->use_lock);
  guint n = GPOINTER_TO_UINT(g_hash_table_lookup(cache->uses, key));
  if (n <= 1)
    g_hash_table_remove(cache->uses, key);
  else
    g_hash_table_replace(cache->uses, g_strdup(key), GUINT_TO_POINTER(n - 1));
  g_mutex_unlock(&cache->use_lock);
  if (n <= 1) {
    /* The end of a use is a use: an image that ran until now is recent. */
    g_autofree char *dir = g_build_filename(cache->dir, key, NULL);
    touch_used(dir);
  }
}

static gboolean in_use(oakuk_image_cache *cache, const char *key) {
  g_mutex_lock(&cache->use_lock);
  gboolean used = g_hash_table_contains(cache->uses, key);
  g_mutex_unlock(&cache->use_lock);
  return used;
}

/* ---------------------------------------------------------------------------------------------- */
/* Manifest */

static char *manifest_str(JsonObject *o, const char *key) {
  JsonNode *n = json_object_get_member(o, key);
  if (n == NULL || JSON_NODE_HOLDS_NULL(n) || !JSON_NODE_HOLDS_VALUE(n) ||
      json_node_get_value_type(n) != G_TYPE_STRING)
    return NULL;
  return g_strdup(json_node_get_string(n));
}

static GPtrArray *manifest_list(JsonObject *o, const char *key) {
  GPtrArray *a = g_ptr_array_new_with_free_func(g_free);
  JsonNode *n = json_object_get_member(o, key);
  JsonArray *arr = n && JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n) : NULL;
  for (guint k = 0; arr && k < json_array_get_length(arr); k++) {
    JsonNode *e = json_array_get_element(arr, k);
    if (JSON_NODE_HOLDS_VALUE(e) && json_node_get_value_type(e) == G_TYPE_STRING)
      g_ptr_array_add(a, g_strdup(json_node_get_string(e)));
  }
  return a;
}

static char *tree_path(const char *dir, const char *rel) {
  return rel ? g_build_filename(dir, "tree", rel, NULL) : NULL;
}

/* Makes a boot file readable by every user (QEMU may run as an unprivileged one). */
static void readable_by_all(const char *path) {
  struct stat st;
  if (path && lstat(path, &st) == 0 && S_ISREG(st.st_mode) && (st.st_mode & 0444) != 0444)
    chmod(path, (st.st_mode & 07777 & ~(mode_t)(S_ISUID | S_ISGID)) | 0444);
}

/* Reads <dir>/image.json: the parser owning its object goes to *keep. NULL without error when there
 * is none. */
static JsonObject *manifest_read(const char *dir, JsonParser **keep, GError **error) {
  g_autofree char *path = g_build_filename(dir, "image.json", NULL);
  g_autofree char *text = NULL;
  gsize len = 0;
  if (!g_file_test(path, G_FILE_TEST_IS_REGULAR))
    return NULL;
  g_autoptr(GError) err = NULL;
  if (!g_file_get_contents(path, &text, &len, &err)) {
    set_gerror(error, OAKUK_EIO, "read %s: %s", path, err->message);
    return NULL;
  }
  g_autoptr(JsonParser) parser = json_parser_new();
  if (!oakuk_json_precheck(text, len, &err) || !json_parser_load_from_data(parser, text, (gssize)len, &err)) {
    set_gerror(error, OAKUK_EIO, "%s: %s", path, err->message);
    return NULL;
  }
  JsonNode *root = json_parser_get_root(parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT(root)) {
    set_gerror(error, OAKUK_EIO, "%s: not a JSON object", path);
    return NULL;
  }
  *keep = g_steal_pointer(&parser);
  return json_node_get_object(root);
}

/* Loads <dir>/image.json of a finished entry; NULL (no error) when there is none. */
static oakuk_image *manifest_load(const char *dir, GError **error) {
  g_autoptr(JsonParser) parser = NULL;
  JsonObject *o = manifest_read(dir, &parser, error);
  if (o == NULL)
    return NULL;
  g_autofree char *kernel = manifest_str(o, "kernel");
  g_autofree char *initrd = manifest_str(o, "initrd");
  g_autofree char *files = manifest_str(o, "files");
  oakuk_image *img = g_new0(oakuk_image, 1);
  g_atomic_ref_count_init(&img->refcount);
  img->dir = g_strdup(dir);
  img->kernel = tree_path(dir, kernel);
  img->initrd = tree_path(dir, initrd);
  img->files_dir = tree_path(dir, files);
  img->flavor = manifest_str(o, "flavor");
  img->version = manifest_str(o, "version");
  img->cmdline_style = manifest_str(o, "cmdline_style");
  img->cmdline_extra = manifest_str(o, "cmdline_extra");
  img->arch = manifest_str(o, "arch");
  if (img->arch == NULL && img->kernel != NULL)
    img->arch = g_strdup(kernel_arch(img->kernel, NULL)); /* cached before multiboot kernels were known */
  img->sha256 = manifest_str(o, "sha256");
  img->url = manifest_str(o, "url");
  img->digest = manifest_str(o, "digest");
  img->args = manifest_list(o, "args");
  img->env = manifest_list(o, "env");
  /* Entries cached before the boot files were made readable by all (a bare kernel was 0600). */
  readable_by_all(img->kernel);
  readable_by_all(img->initrd);
  if (img->kernel == NULL || img->flavor == NULL || img->sha256 == NULL || img->url == NULL ||
      !g_file_test(img->kernel, G_FILE_TEST_IS_REGULAR)) {
    set_gerror(error, OAKUK_EIO,
               "%s/image.json: incomplete manifest (kernel, flavor, sha256 and url are required)", dir);
    oakuk_image_unref(img);
    return NULL;
  }
  return img;
}

static void builder_add(JsonBuilder *b, const char *key, const char *value) {
  json_builder_set_member_name(b, key);
  if (value)
    json_builder_add_string_value(b, value);
  else
    json_builder_add_null_value(b);
}

static void builder_add_list(JsonBuilder *b, const char *key, GPtrArray *list) {
  json_builder_set_member_name(b, key);
  json_builder_begin_array(b);
  for (guint k = 0; list && k < list->len; k++)
    json_builder_add_string_value(b, list->pdata[k]);
  json_builder_end_array(b);
}

/* What image.json says about an entry. */
typedef struct {
  const char *url;      /* the URL, or the OCI reference */
  const char *expected; /* the sha256 asked for, or NULL */
  const char *sha256;   /* of the artifact (an OCI image: of its platform manifest) */
  const char *digest;   /* OCI: "sha256:<hex>" of the platform manifest */
  const char *initrd;   /* "initrd", "initramfs.cpio" or NULL */
  gboolean files;
  const char *flavor, *version, *style, *extra, *arch;
  GPtrArray *args, *env; /* OCI: may be NULL */
  GPtrArray *blobs;      /* OCI: the blobs it came from ("sha256:<hex>"), may be NULL */
} Manifest;

/* Bytes of regular files below path (without following links). */
static guint64 tree_bytes(const char *path) {
  struct stat st;
  if (lstat(path, &st) != 0)
    return 0;
  if (!S_ISDIR(st.st_mode))
    return S_ISREG(st.st_mode) ? (guint64)st.st_size : 0;
  guint64 total = 0;
  g_autoptr(GDir) d = g_dir_open(path, 0, NULL);
  const char *name;
  while (d != NULL && (name = g_dir_read_name(d)) != NULL) {
    g_autofree char *p = g_build_filename(path, name, NULL);
    total += tree_bytes(p);
  }
  return total;
}

static gboolean manifest_write(const char *workdir, const Manifest *m, GError **error) {
  g_autofree char *tree = g_build_filename(workdir, "tree", NULL);
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  builder_add(b, "url", m->url);
  builder_add(b, "expected_sha256", m->expected);
  builder_add(b, "sha256", m->sha256);
  builder_add(b, "digest", m->digest);
  builder_add(b, "kernel", "kernel");
  builder_add(b, "initrd", m->initrd);
  builder_add(b, "files", m->files ? "files" : NULL);
  builder_add(b, "flavor", m->flavor);
  builder_add(b, "version", m->version);
  builder_add(b, "cmdline_style", m->style);
  builder_add(b, "cmdline_extra", m->extra);
  builder_add(b, "arch", m->arch);
  builder_add_list(b, "args", m->args);
  builder_add_list(b, "env", m->env);
  builder_add_list(b, "blobs", m->blobs);
  json_builder_set_member_name(b, "bytes");
  json_builder_add_int_value(b, (gint64)tree_bytes(tree));
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autofree char *text = oakuk_json_node_to_string(root, TRUE);
  g_autofree char *path = g_build_filename(workdir, "image.json", NULL);
  g_autoptr(GError) err = NULL;
  if (!g_file_set_contents(path, text, -1, &err)) {
    set_gerror(error, OAKUK_EIO, "write %s: %s", path, err->message);
    return FALSE;
  }
  touch_used(workdir);
  return TRUE;
}

/* ---------------------------------------------------------------------------------------------- */
/* Resolutions: what a URL without sha256, or an OCI reference, last led to */

typedef struct {
  char *dir;         /* the entry's name */
  char *credentials; /* OCI: "" (anonymous) or the sha256 of the credentials that were accepted */
  char *etag;        /* http(s): the validators the entry's download came with */
  char *last_modified;
  char *file_stat; /* file://: "size:mtime:inode" of the file read */
} Record;

static void record_clear(Record *r) {
  g_clear_pointer(&r->dir, g_free);
  g_clear_pointer(&r->credentials, g_free);
  g_clear_pointer(&r->etag, g_free);
  g_clear_pointer(&r->last_modified, g_free);
  g_clear_pointer(&r->file_stat, g_free);
}

static char *record_path(oakuk_image_cache *cache, const char *slot) {
  g_autofree char *name = g_strconcat(slot, ".json", NULL);
  return g_build_filename(cache->refs_dir, name, NULL);
}

static gboolean is_entry_name(const char *name) {
  if (strlen(name) != 64)
    return FALSE;
  for (const char *p = name; *p; p++)
    if (!g_ascii_isdigit(*p) && !(*p >= 'a' && *p <= 'f'))
      return FALSE;
  return TRUE;
}

static gboolean record_load(oakuk_image_cache *cache, const char *slot, Record *r) {
  memset(r, 0, sizeof *r);
  g_autofree char *path = record_path(cache, slot);
  g_autofree char *text = NULL;
  gsize len;
  if (!g_file_get_contents(path, &text, &len, NULL))
    return FALSE;
  g_autoptr(JsonNode) root = oakuk_json_parse(text, len, NULL);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT(root))
    return FALSE;
  JsonObject *o = json_node_get_object(root);
  r->dir = manifest_str(o, "dir");
  r->credentials = manifest_str(o, "credentials");
  r->etag = manifest_str(o, "etag");
  r->last_modified = manifest_str(o, "last_modified");
  r->file_stat = manifest_str(o, "file_stat");
  if (r->dir == NULL || !is_entry_name(r->dir)) {
    record_clear(r);
    return FALSE;
  }
  return TRUE;
}

static void record_store(oakuk_image_cache *cache, const char *slot, const char *source, const char *arch,
                         const Record *r) {
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  builder_add(b, "source", source);
  builder_add(b, "arch", arch);
  builder_add(b, "dir", r->dir);
  builder_add(b, "credentials", r->credentials);
  builder_add(b, "etag", r->etag);
  builder_add(b, "last_modified", r->last_modified);
  builder_add(b, "file_stat", r->file_stat);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autofree char *text = oakuk_json_node_to_string(root, FALSE);
  g_autofree char *path = record_path(cache, slot);
  GError *err = NULL;
  if (g_mkdir_with_parents(cache->refs_dir, 0700) != 0 ||
      !g_file_set_contents_full(path, text, -1, G_FILE_SET_CONTENTS_CONSISTENT, 0600, &err))
    g_debug("image cache %s: resolution of %s not recorded: %s", cache->dir, source,
            err ? err->message : g_strerror(errno));
  g_clear_error(&err);
}

/* ---------------------------------------------------------------------------------------------- */
/* Progress */

/* How one participant in a fetch receives progress: directly (sync) or posted to a context. */
typedef struct {
  void (*emit)(void *data, gint64 bytes, gint64 total);
  void *data;
} Listener;

typedef struct {
  oakuk_image_cache *cache;
  Inflight *inflight;
  Listener *listener;
  gint64 last_bytes;
  gint64 last_us;
} Progress;

static void progress_report(Progress *p, gint64 bytes, gint64 total, gboolean force) {
  gint64 now = g_get_monotonic_time();
  if (!force && bytes - p->last_bytes < PROGRESS_STEP_BYTES && now - p->last_us < PROGRESS_STEP_US)
    return;
  p->last_bytes = bytes;
  p->last_us = now;
  g_mutex_lock(&p->cache->lock);
  p->inflight->bytes = bytes;
  p->inflight->total = total;
  p->inflight->progress_seq++;
  g_cond_broadcast(&p->cache->cond);
  g_mutex_unlock(&p->cache->lock);
  if (p->listener && p->listener->emit)
    p->listener->emit(p->listener->data, bytes, total);
}

/* ---------------------------------------------------------------------------------------------- */
/* Download */

/* Why a download was stopped from outside. */
typedef enum { STOP_NONE, STOP_CONNECT, STOP_STALL, STOP_TOTAL } StopReason;

/* Bounds one download in time: a thread that cancels it (through the download's GCancellable,
 * which the blocking reads honour) once a connection takes longer than connect_timeout_s, no byte
 * arrives for stall_timeout_s, or the whole download passes timeout_s. */
typedef struct {
  GMutex lock;
  GCond cond;
  GCancellable *cancel;
  const oakuk_image_cache_options *o;
  gint64 start_us;
  gint64 since_us;    /* connecting since, or the last byte's time once connected */
  gboolean connected; /* else establishing a connection */
  gboolean done;
  StopReason reason;
  GThread *thread;
} Watchdog;

static gpointer watchdog_main(gpointer data) {
  Watchdog *w = data;
  g_mutex_lock(&w->lock);
  while (!w->done) {
    gint64 now = g_get_monotonic_time(), next = G_MAXINT64;
    StopReason r = STOP_NONE;
    if (w->o->timeout_s > 0) {
      gint64 d = w->start_us + (gint64)w->o->timeout_s * G_USEC_PER_SEC;
      r = now >= d ? STOP_TOTAL : r;
      next = MIN(next, d);
    }
    guint32 phase_s = w->connected ? w->o->stall_timeout_s : w->o->connect_timeout_s;
    if (r == STOP_NONE && phase_s > 0) {
      gint64 d = w->since_us + (gint64)phase_s * G_USEC_PER_SEC;
      r = now >= d ? (w->connected ? STOP_STALL : STOP_CONNECT) : r;
      next = MIN(next, d);
    }
    if (r != STOP_NONE) {
      w->reason = r;
      g_mutex_unlock(&w->lock);
      g_cancellable_cancel(w->cancel);
      return NULL;
    }
    if (next == G_MAXINT64)
      g_cond_wait(&w->cond, &w->lock);
    else
      g_cond_wait_until(&w->cond, &w->lock, next);
  }
  g_mutex_unlock(&w->lock);
  return NULL;
}

static void watchdog_start(Watchdog *w, const oakuk_image_cache_options *o, GCancellable *cancel,
                           gboolean connected) {
  g_mutex_init(&w->lock);
  g_cond_init(&w->cond);
  w->cancel = cancel;
  w->o = o;
  w->start_us = w->since_us = g_get_monotonic_time();
  w->connected = connected;
  w->done = FALSE;
  w->reason = STOP_NONE;
  w->thread = o->timeout_s || o->stall_timeout_s || o->connect_timeout_s
                  ? g_thread_new("oakuk-fetch-watchdog", watchdog_main, w)
                  : NULL;
}

static StopReason watchdog_stop(Watchdog *w) {
  g_mutex_lock(&w->lock);
  w->done = TRUE;
  g_cond_signal(&w->cond);
  g_mutex_unlock(&w->lock);
  if (w->thread)
    g_thread_join(w->thread);
  g_mutex_clear(&w->lock);
  g_cond_clear(&w->cond);
  return w->reason;
}

/* A byte arrived, or a connection is made (connected) or begun (!connected). */
static void watchdog_note(Watchdog *w, gboolean connected) {
  g_mutex_lock(&w->lock);
  /* A new phase has another timeout, maybe shorter than the one the watchdog sleeps for. */
  if (w->connected != connected)
    g_cond_signal(&w->cond);
  w->connected = connected;
  w->since_us = g_get_monotonic_time();
  g_mutex_unlock(&w->lock);
}

static StopReason watchdog_reason(Watchdog *w) {
  g_mutex_lock(&w->lock);
  StopReason r = w->reason;
  g_mutex_unlock(&w->lock);
  return r;
}

typedef struct {
  int fd;
  GChecksum *sum;
  guint64 bytes;
  guint64 max;
  const char *url;
  Watchdog *watch;
} Sink;

static gboolean sink_write(Sink *s, const guint8 *buf, gsize n, GError **error) {
  if (s->bytes + n > s->max) {
    set_gerror(error, OAKUK_EINVAL, "fetch %s: download exceeds the limit of %" G_GUINT64_FORMAT " bytes",
               s->url, s->max);
    return FALSE;
  }
  g_checksum_update(s->sum, buf, n);
  gsize off = 0;
  while (off < n) {
    ssize_t w = write(s->fd, buf + off, n - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0) {
      int e = errno;
      set_gerror(error, OAKUK_EIO, "fetch %s: write to cache: %s", s->url, g_strerror(e));
      return FALSE;
    }
    off += (gsize)w;
  }
  s->bytes += n;
  watchdog_note(s->watch, TRUE);
  return TRUE;
}

static int gio_code(const GError *e) {
  if (e->domain == G_IO_ERROR) {
    switch (e->code) {
    case G_IO_ERROR_TIMED_OUT: return OAKUK_ETIMEOUT;
    case G_IO_ERROR_NOT_FOUND: return OAKUK_ENOTFOUND;
    case G_IO_ERROR_PERMISSION_DENIED: return OAKUK_EPERM;
    case G_IO_ERROR_CANCELLED: return OAKUK_ECANCELLED;
    default: break;
    }
  }
  return OAKUK_EIO;
}

/* The error of a transfer that failed with err (NULL: stopped between reads): a timeout of the
 * watchdog, a cancellation, or err itself. */
static void transfer_failed(Sink *s, const GError *err, GError **error) {
  const oakuk_image_cache_options *o = s->watch->o;
  switch (watchdog_reason(s->watch)) {
  case STOP_CONNECT:
    set_gerror(error, OAKUK_ETIMEOUT, "fetch %s: no connection within %u s (connect_timeout_s)", s->url,
               o->connect_timeout_s);
    return;
  case STOP_STALL:
    set_gerror(error, OAKUK_ETIMEOUT,
               "fetch %s: no data for %u s after %" G_GUINT64_FORMAT " bytes (stall_timeout_s)", s->url,
               o->stall_timeout_s, s->bytes);
    return;
  case STOP_TOTAL:
    set_gerror(error, OAKUK_ETIMEOUT,
               "fetch %s: not complete within %u s (timeout_s), %" G_GUINT64_FORMAT " bytes received", s->url,
               o->timeout_s, s->bytes);
    return;
  case STOP_NONE: break;
  }
  if (err == NULL || g_error_matches(err, G_IO_ERROR, G_IO_ERROR_CANCELLED))
    set_gerror(error, OAKUK_ECANCELLED, "fetch %s: cancelled", s->url);
  else if (s->bytes == 0)
    set_gerror(error, gio_code(err), "fetch %s: %s", s->url, err->message);
  else
    set_gerror(error, gio_code(err), "fetch %s: %s after %" G_GUINT64_FORMAT " bytes", s->url, err->message,
               s->bytes);
}

static gboolean copy_stream(GInputStream *in, Sink *s, gint64 total, Progress *prog, GError **error) {
  g_autofree guint8 *buf = g_malloc(IMAGE_CHUNK);
  progress_report(prog, 0, total, TRUE);
  for (;;) {
    g_autoptr(GError) err = NULL;
    gssize n = g_input_stream_read(in, buf, IMAGE_CHUNK, s->watch->cancel, &err);
    if (n < 0) {
      transfer_failed(s, err, error);
      return FALSE;
    }
    if (n == 0)
      break;
    if (!sink_write(s, buf, (gsize)n, error))
      return FALSE;
    progress_report(prog, (gint64)s->bytes, total, FALSE);
  }
  if (total >= 0 && s->bytes != (guint64)total) {
    set_gerror(error, OAKUK_EIO,
               "fetch %s: truncated body: got %" G_GUINT64_FORMAT " of %" G_GINT64_FORMAT " bytes", s->url,
               s->bytes, total);
    return FALSE;
  }
  progress_report(prog, (gint64)s->bytes, total, TRUE);
  return TRUE;
}

/* Revalidation of what a URL led to before: the request's conditions and the answer's validators. */
typedef struct {
  const char *etag_in;          /* If-None-Match, or NULL */
  const char *last_modified_in; /* If-Modified-Since, or NULL */
  gboolean not_modified;        /* the server answered 304: nothing was written */
  char *etag;                   /* the answer's ETag and Last-Modified, or NULL */
  char *last_modified;
  char *file_stat; /* file://: "size:mtime:inode" of the file read */
} Validators;

static void validators_clear(Validators *v) {
  g_clear_pointer(&v->etag, g_free);
  g_clear_pointer(&v->last_modified, g_free);
  g_clear_pointer(&v->file_stat, g_free);
}

static char *stat_text(const struct stat *st) {
  return g_strdup_printf("%" G_GINT64_FORMAT ":%" G_GINT64_FORMAT ".%09ld:%" G_GUINT64_FORMAT,
                         (gint64)st->st_size, (gint64)st->st_mtim.tv_sec, (long)st->st_mtim.tv_nsec,
                         (guint64)st->st_ino);
}

/* A file:// download (archive-safe.h): a regular file inside file_allowed_dirs once its symlinks
 * are resolved, never blocking on a fifo, never opening a device. */
static gboolean download_file(const char *url, oakuk_image_cache *cache, Sink *s, Progress *prog,
                              Validators *v, GError **error) {
  g_autofree char *path = NULL;
  gint64 size = 0;
  int fd = -1;
  if (oakuk_archive_local_check(url, cache->allowed, "file_allowed_dirs", &path, error))
    fd = oakuk_archive_local_open(url, path, cache->allowed, "file_allowed_dirs", &size, error);
  if (fd < 0) {
    g_prefix_error(error, "fetch ");
    return FALSE;
  }
  gboolean ok = TRUE;
  struct stat st;
  if (v != NULL && fstat(fd, &st) == 0)
    v->file_stat = stat_text(&st);
  if ((guint64)size > s->max) {
    set_gerror(error, OAKUK_EINVAL,
               "fetch %s: %" G_GINT64_FORMAT " bytes exceeds the limit of %" G_GUINT64_FORMAT " bytes", url,
               size, s->max);
    ok = FALSE;
  }
  g_autofree guint8 *buf = g_malloc(IMAGE_CHUNK);
  if (ok)
    progress_report(prog, 0, size, TRUE);
  while (ok) {
    if (g_cancellable_is_cancelled(s->watch->cancel)) {
      transfer_failed(s, NULL, error);
      ok = FALSE;
      break;
    }
    ssize_t n = read(fd, buf, IMAGE_CHUNK);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      set_gerror(error, OAKUK_EIO, "fetch %s: read %s: %s", url, path, g_strerror(e));
      ok = FALSE;
    } else if (n == 0) {
      break;
    } else if (!sink_write(s, buf, (gsize)n, error)) {
      ok = FALSE;
    } else {
      progress_report(prog, (gint64)s->bytes, size, FALSE);
    }
  }
  close(fd);
  if (ok)
    progress_report(prog, (gint64)s->bytes, (gint64)s->bytes, TRUE);
  return ok;
}

static int http_status_code(guint status) {
  if (status == SOUP_STATUS_NOT_FOUND || status == SOUP_STATUS_GONE)
    return OAKUK_ENOTFOUND;
  if (status == SOUP_STATUS_UNAUTHORIZED || status == SOUP_STATUS_FORBIDDEN)
    return OAKUK_EPERM;
  return OAKUK_EIO;
}

/* Connection progress of a request, for the connect timeout: TCP (and TLS) done is "connected". */
static void on_network_event(SoupMessage *msg, GSocketClientEvent event, GIOStream *connection,
                             gpointer data) {
  if (event == G_SOCKET_CLIENT_RESOLVING)
    watchdog_note(data, FALSE);
  else if (event == G_SOCKET_CLIENT_COMPLETE)
    watchdog_note(data, TRUE);
}

static void on_wrote_headers(SoupMessage *msg, gpointer data) {
  watchdog_note(data, TRUE);
}

static gboolean download_http(const char *url, const oakuk_image_cache_options *o, Sink *s, Progress *prog,
                              Validators *v, GError **error) {
  /* A session per download, used from this thread only; redirects are followed by hand so the
   * limit is ours and every hop is checked for its scheme. The watchdog bounds time, not libsoup. */
  g_autoptr(SoupSession) session =
      soup_session_new_with_options("timeout", 0, "user-agent", "liboakuk", NULL);
  oakuk_session_use_env_proxy(session);
  g_autoptr(GUri) uri = g_uri_parse(url, G_URI_FLAGS_ENCODED, NULL);
  for (guint hops = 0;; hops++) {
    g_autoptr(SoupMessage) msg = soup_message_new_from_uri("GET", uri);
    soup_message_add_flags(msg, SOUP_MESSAGE_NO_REDIRECT);
    g_signal_connect(msg, "network-event", G_CALLBACK(on_network_event), s->watch);
    g_signal_connect(msg, "wrote-headers", G_CALLBACK(on_wrote_headers), s->watch);
    if (v != NULL && v->etag_in != NULL)
      soup_message_headers_replace(soup_message_get_request_headers(msg), "If-None-Match", v->etag_in);
    if (v != NULL && v->last_modified_in != NULL)
      soup_message_headers_replace(soup_message_get_request_headers(msg), "If-Modified-Since",
                                   v->last_modified_in);
    watchdog_note(s->watch, FALSE);
    g_autoptr(GError) err = NULL;
    g_autoptr(GInputStream) in = soup_session_send(session, msg, s->watch->cancel, &err);
    if (in == NULL) {
      transfer_failed(s, err, error);
      return FALSE;
    }
    watchdog_note(s->watch, TRUE);
    guint status = soup_message_get_status(msg);
    SoupMessageHeaders *h = soup_message_get_response_headers(msg);
    if (SOUP_STATUS_IS_REDIRECTION(status) && soup_message_headers_get_one(h, "Location")) {
      if (hops >= o->max_redirects) {
        set_gerror(error, OAKUK_EIO, "fetch %s: too many redirects (more than %u)", url, o->max_redirects);
        return FALSE;
      }
      g_autoptr(GUri) next =
          g_uri_parse_relative(uri, soup_message_headers_get_one(h, "Location"), G_URI_FLAGS_ENCODED, &err);
      const char *scheme = next ? g_uri_get_scheme(next) : NULL;
      if (next == NULL || (g_strcmp0(scheme, "http") != 0 && g_strcmp0(scheme, "https") != 0)) {
        set_gerror(error, OAKUK_EIO, "fetch %s: bad redirect to %s", url,
                   soup_message_headers_get_one(h, "Location"));
        return FALSE;
      }
      g_input_stream_close(in, NULL, NULL);
      g_uri_unref(uri);
      uri = g_steal_pointer(&next);
      continue;
    }
    if (status == SOUP_STATUS_NOT_MODIFIED && v != NULL &&
        (v->etag_in != NULL || v->last_modified_in != NULL)) {
      v->not_modified = TRUE;
      return TRUE;
    }
    if (status == SOUP_STATUS_OK && v != NULL) {
      v->etag = g_strdup(soup_message_headers_get_one(h, "ETag"));
      v->last_modified = g_strdup(soup_message_headers_get_one(h, "Last-Modified"));
    }
    if (status != SOUP_STATUS_OK) {
      set_gerror(error, http_status_code(status), "fetch %s: HTTP %u %s", url, status,
                 soup_message_get_reason_phrase(msg) ? soup_message_get_reason_phrase(msg) : "");
      return FALSE;
    }
    gint64 total = soup_message_headers_get_encoding(h) == SOUP_ENCODING_CONTENT_LENGTH
                       ? soup_message_headers_get_content_length(h)
                       : -1;
    if (total > 0 && (guint64)total > s->max) {
      set_gerror(error, OAKUK_EINVAL,
                 "fetch %s: %" G_GINT64_FORMAT " bytes exceeds the limit of %" G_GUINT64_FORMAT " bytes", url,
                 total, s->max);
      return FALSE;
    }
    return copy_stream(in, s, total, prog, error);
  }
}

/* Downloads url to path; returns the hex sha256 of what was written. cancel stops it (the
 * watchdog cancels it too, for a timeout). v (may be NULL) makes an http(s) download conditional:
 * NULL without error and v->not_modified when the server says nothing changed. */
static char *download(oakuk_image_cache *cache, const char *url, const char *path, Progress *prog,
                      GCancellable *cancel, Validators *v, GError **error) {
  const oakuk_image_cache_options *o = &cache->opts;
  Watchdog watch;
  Sink s = {.fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600),
            .max = o->max_download_bytes,
            .url = url,
            .watch = &watch};
  if (s.fd < 0) {
    int e = errno;
    set_gerror(error, OAKUK_EIO, "fetch %s: create %s: %s", url, path, g_strerror(e));
    return NULL;
  }
  gboolean is_file = g_str_has_prefix(url, "file:");
  watchdog_start(&watch, o, cancel, is_file);
  s.sum = g_checksum_new(G_CHECKSUM_SHA256);
  gboolean ok =
      is_file ? download_file(url, cache, &s, prog, v, error) : download_http(url, o, &s, prog, v, error);
  watchdog_stop(&watch);
  if (close(s.fd) != 0 && ok) {
    int e = errno;
    set_gerror(error, OAKUK_EIO, "fetch %s: close %s: %s", url, path, g_strerror(e));
    ok = FALSE;
  }
  char *hex = ok && !(v != NULL && v->not_modified) ? g_strdup(g_checksum_get_string(s.sum)) : NULL;
  g_checksum_free(s.sum);
  return hex;
}

/* ---------------------------------------------------------------------------------------------- */
/* Unpack */

/* Normalises an archive path (archive-safe.h); an OAKUK_EPERM error names the entry. */
static char *normalize_entry(const char *what, const char *name, const char *url, GError **error) {
  OakukArchivePathCheck why;
  char *norm = oakuk_archive_normalize_path(name, &why);
  if (why == OAKUK_ARCHIVE_PATH_ABSOLUTE)
    set_gerror(error, OAKUK_EPERM, "image %s: %s %s is an absolute path", url, what, name);
  else if (why == OAKUK_ARCHIVE_PATH_DOTDOT)
    set_gerror(error, OAKUK_EPERM, "image %s: %s %s has a '..' component (path traversal)", url, what, name);
  else if (why == OAKUK_ARCHIVE_PATH_MISSING)
    set_gerror(error, OAKUK_EINVAL, "image %s: an archive %s has no name (corrupt archive)", url, what);
  return norm;
}

typedef struct {
  const char *url;
  const char *tree;
  const oakuk_image_cache_options *o;
  GCancellable *cancel;
  struct archive *r;
  struct archive *w;
  GHashTable *files; /* normalised names of regular files extracted so far */
  guint64 entries;
  guint64 bytes;
} Unpack;

/* Resolves the normalised entry name through the symlinks already extracted (the last component is
 * not followed: the entry replaces it). */
static char *resolve_entry(Unpack *u, const char *what, const char *name, GError **error) {
  g_autofree char *via = NULL;
  char *resolved = NULL;
  OakukArchiveResolve r = oakuk_archive_resolve("", name, FALSE, FALSE, oakuk_archive_readlink_disk,
                                                (gpointer)u->tree, &resolved, &via);
  if (r != OAKUK_ARCHIVE_RESOLVE_OK) {
    g_autofree char *why = oakuk_archive_resolve_describe(r, via);
    set_gerror(error, OAKUK_EPERM, "image %s: %s %s %s", u->url, what, name, why);
  }
  return resolved;
}

/* Checks entry e (normalised name, resolved to rname) and returns, for a hard link, the resolved
 * path of its target. */
static gboolean check_entry(Unpack *u, struct archive_entry *e, const char *name, const char *rname,
                            char **link_out, GError **error) {
  const char *hardlink = archive_entry_hardlink(e);
  if (hardlink != NULL) {
    g_autofree char *what = g_strdup_printf("hard link %s: target", name);
    g_autofree char *t = normalize_entry(what, hardlink, u->url, error);
    if (t == NULL)
      return FALSE;
    g_autofree char *rt = resolve_entry(u, what, t, error);
    if (rt == NULL)
      return FALSE;
    if (!g_hash_table_contains(u->files, rt)) {
      set_gerror(error, OAKUK_EPERM,
                 "image %s: hard link %s points to %s, which is not a regular file earlier in the "
                 "archive",
                 u->url, name, hardlink);
      return FALSE;
    }
    *link_out = g_steal_pointer(&rt);
    return TRUE;
  }
  mode_t type = archive_entry_filetype(e);
  if (type == AE_IFLNK) {
    /* The target is resolved from the link's own (resolved) directory, through the links so far. */
    const char *target = archive_entry_symlink(e);
    g_autofree char *dir = g_path_get_dirname(rname);
    g_autofree char *via = NULL;
    OakukArchiveResolve r =
        target == NULL || *target == '\0'
            ? OAKUK_ARCHIVE_RESOLVE_ESCAPES
            : oakuk_archive_resolve(strcmp(dir, ".") == 0 ? "" : dir, target, TRUE, FALSE,
                                    oakuk_archive_readlink_disk, (gpointer)u->tree, NULL, &via);
    if (r != OAKUK_ARCHIVE_RESOLVE_OK) {
      g_autofree char *why = oakuk_archive_resolve_describe(r, via);
      set_gerror(error, OAKUK_EPERM, "image %s: symlink %s -> %s leaves the image (it %s)", u->url, name,
                 target ? target : "", why);
      return FALSE;
    }
    return TRUE;
  }
  if (type == AE_IFREG) {
    gint64 size = archive_entry_size(e);
    if (size > 0 && u->bytes + (guint64)size > u->o->max_unpacked_bytes) {
      set_gerror(error, OAKUK_EINVAL, "image %s: unpacks to more than %" G_GUINT64_FORMAT " bytes (at %s)",
                 u->url, u->o->max_unpacked_bytes, name);
      return FALSE;
    }
    return TRUE;
  }
  if (type == AE_IFDIR)
    return TRUE;
  const char *kind = type == AE_IFCHR    ? "a character device"
                     : type == AE_IFBLK  ? "a block device"
                     : type == AE_IFIFO  ? "a fifo"
                     : type == AE_IFSOCK ? "a socket"
                                         : "of an unsupported type";
  set_gerror(error, OAKUK_EPERM, "image %s: %s is %s; images may hold only files, directories and links",
             u->url, name, kind);
  return FALSE;
}

static gboolean corrupt(Unpack *u, const char *at, GError **error) {
  const char *msg = archive_error_string(u->r);
  set_gerror(error, OAKUK_EINVAL, "image %s: corrupt or truncated archive%s%s: %s", u->url, at ? " at " : "",
             at ? at : "", msg ? msg : "unknown error");
  return FALSE;
}

static gboolean copy_data(Unpack *u, const char *name, GError **error) {
  for (;;) {
    const void *buf;
    size_t size;
    la_int64_t offset;
    int r = archive_read_data_block(u->r, &buf, &size, &offset);
    if (r == ARCHIVE_EOF)
      return TRUE;
    if (r < ARCHIVE_WARN)
      return corrupt(u, name, error);
    u->bytes += size;
    if (u->bytes > u->o->max_unpacked_bytes) {
      set_gerror(error, OAKUK_EINVAL, "image %s: unpacks to more than %" G_GUINT64_FORMAT " bytes (at %s)",
                 u->url, u->o->max_unpacked_bytes, name);
      return FALSE;
    }
    if (archive_write_data_block(u->w, buf, size, offset) < ARCHIVE_WARN) {
      set_gerror(error, OAKUK_EIO, "image %s: write %s: %s", u->url, name, archive_error_string(u->w));
      return FALSE;
    }
  }
}

static gboolean unpack_entry(Unpack *u, struct archive_entry *e, GError **error) {
  g_autofree char *name = normalize_entry("entry", archive_entry_pathname(e), u->url, error);
  if (name == NULL)
    return FALSE;
  if (++u->entries > u->o->max_entries) {
    set_gerror(error, OAKUK_EINVAL, "image %s: more than %" G_GUINT64_FORMAT " entries (at %s)", u->url,
               u->o->max_entries, name);
    return FALSE;
  }
  if (name[0] == '\0')
    return TRUE; /* the archive's root directory */
  /* Written where the kernel would put it: through the links extracted so far, never outside. */
  g_autofree char *rname = resolve_entry(u, "entry", name, error);
  if (rname == NULL)
    return FALSE;
  g_autofree char *hardlink = NULL;
  if (!check_entry(u, e, name, rname, &hardlink, error))
    return FALSE;
  mode_t type = archive_entry_filetype(e);
  g_autofree char *dest = g_build_filename(u->tree, rname, NULL);
  struct stat st;
  if (lstat(dest, &st) == 0 && S_ISLNK(st.st_mode) && unlink(dest) != 0) {
    int en = errno;
    set_gerror(error, OAKUK_EIO, "image %s: replace the link %s: %s", u->url, name, g_strerror(en));
    return FALSE;
  }
  archive_entry_set_pathname(e, dest);
  if (hardlink != NULL) {
    g_autofree char *hl = g_build_filename(u->tree, hardlink, NULL);
    archive_entry_set_hardlink(e, hl);
  } else if (type == AE_IFDIR) {
    archive_entry_set_perm(e, (archive_entry_perm(e) & 0755) | 0700);
  } else if (type == AE_IFREG) {
    archive_entry_set_perm(e, (archive_entry_perm(e) & 0755) | 0600);
  }
  g_hash_table_remove(u->files, rname);
  if (archive_write_header(u->w, e) < ARCHIVE_WARN) {
    set_gerror(error, OAKUK_EPERM, "image %s: extract %s: %s", u->url, name, archive_error_string(u->w));
    return FALSE;
  }
  if (!copy_data(u, name, error))
    return FALSE;
  if (archive_write_finish_entry(u->w) < ARCHIVE_WARN) {
    set_gerror(error, OAKUK_EIO, "image %s: extract %s: %s", u->url, name, archive_error_string(u->w));
    return FALSE;
  }
  if (type == AE_IFREG && hardlink == NULL)
    g_hash_table_add(u->files, g_steal_pointer(&rname));
  return TRUE;
}

/* Every link of the finished tree still resolves inside it: a later link can change where an
 * earlier one leads (x -> a/b/../.. is harmless until a/b -> .. arrives). */
static gboolean check_links(Unpack *u, GError **error) {
  g_autofree char *link = NULL, *target = NULL, *via = NULL;
  OakukArchiveResolve why;
  if (oakuk_archive_check_tree(u->tree, FALSE, &link, &target, &why, &via))
    return TRUE;
  if (link == NULL) {
    set_gerror(error, OAKUK_EIO, "image %s: check the unpacked tree: %s", u->url, target);
    return FALSE;
  }
  g_autofree char *desc = oakuk_archive_resolve_describe(why, via);
  set_gerror(error, OAKUK_EPERM, "image %s: symlink %s -> %s leaves the image (it %s)", u->url, link, target,
             desc);
  return FALSE;
}

gboolean oakuk_image_unpack_archive(const char *archive_path, const char *tree, const char *url,
                                    const oakuk_image_cache_options *o, GCancellable *cancel,
                                    GError **error) {
  Unpack u = {.url = url, .tree = tree, .o = o, .cancel = cancel};
  u.r = archive_read_new();
  oakuk_archive_support_filters(u.r);
  archive_read_support_format_tar(u.r);
  u.w = archive_write_disk_new();
  /* No OWNER/PERM/XATTR/ACL/FFLAGS: nothing setuid, no ownership, no special metadata. */
  archive_write_disk_set_options(u.w, ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_SYMLINKS);
  u.files = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
  gboolean ok = TRUE;
  if (archive_read_open_filename(u.r, archive_path, IMAGE_CHUNK) != ARCHIVE_OK) {
    ok = corrupt(&u, NULL, error);
  } else {
    for (;;) {
      struct archive_entry *e;
      int r = archive_read_next_header(u.r, &e);
      if (r == ARCHIVE_EOF)
        break;
      if (r < ARCHIVE_WARN) {
        ok = corrupt(&u, NULL, error);
        break;
      }
      if (g_cancellable_is_cancelled(cancel)) {
        ok = FALSE;
        set_gerror(error, OAKUK_ECANCELLED, "image %s: cancelled", url);
        break;
      }
      if (!unpack_entry(&u, e, error)) {
        ok = FALSE;
        break;
      }
    }
  }
  archive_read_free(u.r);
  archive_write_free(u.w);
  g_hash_table_unref(u.files);
  return ok && check_links(&u, error);
}

/* ---------------------------------------------------------------------------------------------- */
/* oakuk.json */

typedef struct {
  char *flavor;
  char *version;
  char *cmdline_style;
  char *cmdline_extra;
} ImageMeta;

static void image_meta_clear(ImageMeta *m) {
  g_clear_pointer(&m->flavor, g_free);
  g_clear_pointer(&m->version, g_free);
  g_clear_pointer(&m->cmdline_style, g_free);
  g_clear_pointer(&m->cmdline_extra, g_free);
}

static gboolean meta_string(JsonObject *o, const char *key, char **out, const char *url, GError **error) {
  JsonNode *n = json_object_get_member(o, key);
  if (n == NULL || JSON_NODE_HOLDS_NULL(n))
    return TRUE;
  if (json_node_get_value_type(n) != G_TYPE_STRING) {
    set_gerror(error, OAKUK_EINVAL, "image %s: oakuk.json: %s: expected a string", url, key);
    return FALSE;
  }
  const char *s = json_node_get_string(n);
  for (const char *c = s; *c; c++) {
    if ((unsigned char)*c < 0x20 || *c == '"' || *c == '\'' || *c == '\\' || *c == 0x7f) {
      set_gerror(error, OAKUK_EINVAL,
                 "image %s: oakuk.json: %s: control characters, quotes and backslashes are not "
                 "allowed",
                 url, key);
      return FALSE;
    }
  }
  *out = g_strdup(s);
  return TRUE;
}

static gboolean read_meta(const char *tree, const char *url, ImageMeta *m, GError **error) {
  g_autofree char *path = g_build_filename(tree, "oakuk.json", NULL);
  struct stat st;
  if (lstat(path, &st) != 0)
    return TRUE;
  if (!S_ISREG(st.st_mode) || st.st_size > MANIFEST_MAX_BYTES) {
    set_gerror(error, OAKUK_EINVAL, "image %s: oakuk.json must be a regular file of at most %d bytes", url,
               MANIFEST_MAX_BYTES);
    return FALSE;
  }
  g_autofree char *text = NULL;
  gsize len;
  g_autoptr(GError) err = NULL;
  g_autoptr(JsonParser) parser = json_parser_new();
  if (!g_file_get_contents(path, &text, &len, &err) || !oakuk_json_precheck(text, len, &err) ||
      !json_parser_load_from_data(parser, text, (gssize)len, &err)) {
    set_gerror(error, OAKUK_EINVAL, "image %s: oakuk.json: %s", url, err->message);
    return FALSE;
  }
  JsonNode *root = json_parser_get_root(parser);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT(root)) {
    set_gerror(error, OAKUK_EINVAL, "image %s: oakuk.json: expected a JSON object", url);
    return FALSE;
  }
  JsonObject *o = json_node_get_object(root);
  if (!meta_string(o, "flavor", &m->flavor, url, error) ||
      !meta_string(o, "version", &m->version, url, error) ||
      !meta_string(o, "cmdline_style", &m->cmdline_style, url, error) ||
      !meta_string(o, "cmdline_extra", &m->cmdline_extra, url, error))
    return FALSE;
  if (m->flavor && strcmp(m->flavor, "unikraft") != 0 && strcmp(m->flavor, "linux") != 0) {
    set_gerror(error, OAKUK_EINVAL,
               "image %s: oakuk.json: flavor: expected \"unikraft\" or \"linux\", got \"%s\"", url,
               m->flavor);
    return FALSE;
  }
  return TRUE;
}

/* ---------------------------------------------------------------------------------------------- */
/* One fetch, start to finish, in a work dir */

static gboolean is_regular(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static gboolean is_dir(const char *path) {
  struct stat st;
  return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static gboolean place_artifact(const char *download_path, const char *tree, const char *url,
                               const oakuk_image_cache_options *o, GCancellable *cancel, GError **error) {
  g_autofree guint8 *head = g_malloc(KERNEL_HEAD);
  gssize n = read_head(download_path, head, KERNEL_HEAD, error);
  if (n < 0)
    return FALSE;
  if (looks_like_kernel(head, (gsize)n)) {
    g_autofree char *kernel = g_build_filename(tree, "kernel", NULL);
    if (rename(download_path, kernel) != 0) {
      int e = errno;
      set_gerror(error, OAKUK_EIO, "image %s: move kernel into place: %s", url, g_strerror(e));
      return FALSE;
    }
    return TRUE;
  }
  return oakuk_image_unpack_archive(download_path, tree, url, o, cancel, error);
}

/* A fetch: a URL (with the sha256 expected, or not) or an OCI reference for an architecture. */
typedef struct {
  gboolean oci;
  char *url;                 /* the URL, or the OCI reference */
  char *expected;            /* URL: lower-case hex sha256, or NULL */
  char *arch;                /* OCI: GOARCH */
  char *username, *password; /* OCI: NULL = anonymous */
} Request;

static void request_clear(Request *r) {
  g_clear_pointer(&r->url, g_free);
  g_clear_pointer(&r->expected, g_free);
  g_clear_pointer(&r->arch, g_free);
  g_clear_pointer(&r->username, g_free);
  if (r->password)
    memset(r->password, 0, strlen(r->password));
  g_clear_pointer(&r->password, g_free);
}

static char *cache_key(const char *url, const char *expected) {
  g_autofree char *s = g_strconcat(url, "\n", expected ? expected : "", NULL);
  return g_compute_checksum_for_string(G_CHECKSUM_SHA256, s, -1);
}

/* The entry of an OCI image: its platform manifest, whatever reference led to it. */
static char *oci_key(const char *manifest_digest) {
  g_autofree char *s = g_strconcat("oci\n", manifest_digest, NULL);
  return g_compute_checksum_for_string(G_CHECKSUM_SHA256, s, -1);
}

/* Fetches of one slot share a download and a resolution record: a URL and its sha256; an OCI
 * reference, its architecture and its credentials (a fetch never gets what others' credentials
 * opened). */
static char *request_slot(const Request *r) {
  if (!r->oci)
    return cache_key(r->url, r->expected);
  g_autofree char *creds = NULL;
  if (r->username && r->password) {
    g_autofree char *up = g_strdup_printf("%s\n%s", r->username, r->password);
    creds = g_compute_checksum_for_string(G_CHECKSUM_SHA256, up, -1);
    memset(up, 0, strlen(up));
  }
  g_autofree char *s = g_strconcat("oci\n", r->url, "\n", r->arch, "\n", creds ? creds : "", NULL);
  return g_compute_checksum_for_string(G_CHECKSUM_SHA256, s, -1);
}

/* The entry named key, opened and counted in use (cache->lock held); NULL without error when there
 * is none. A damaged entry no one uses is removed. */
static oakuk_image *entry_open_locked(oakuk_image_cache *cache, const char *key) {
  g_autofree char *dir = g_build_filename(cache->dir, key, NULL);
  GError *err = NULL;
  oakuk_image *img = manifest_load(dir, &err);
  if (err != NULL) {
    g_debug("image cache: dropping a damaged entry: %s", err->message);
    g_error_free(err);
    if (!in_use(cache, key))
      oakuk_rm_rf(dir, NULL);
    return NULL;
  }
  if (img != NULL) {
    use_take(cache, img, key);
    touch_used(dir);
  }
  return img;
}

static oakuk_image *entry_open(oakuk_image_cache *cache, const char *key) {
  g_mutex_lock(&cache->lock);
  oakuk_image *img = entry_open_locked(cache, key);
  g_mutex_unlock(&cache->lock);
  return img;
}

/* Moves the finished work dir into place as entry key (unless another process finished the same
 * entry first: then theirs is used) and opens it. */
static oakuk_image *entry_commit(oakuk_image_cache *cache, const char *work, const char *key,
                                 const char *what, GError **error) {
  g_autofree char *final = g_build_filename(cache->dir, key, NULL);
  g_mutex_lock(&cache->lock);
  if (rename(work, final) != 0 && errno != EEXIST && errno != ENOTEMPTY) {
    int e = errno;
    g_mutex_unlock(&cache->lock);
    set_gerror(error, OAKUK_EIO, "image %s: move into cache %s: %s", what, final, g_strerror(e));
    return NULL;
  }
  oakuk_image *img = entry_open_locked(cache, key);
  g_mutex_unlock(&cache->lock);
  if (img == NULL)
    set_gerror(error, OAKUK_EIO, "image %s: %s vanished from the cache", what, final);
  return img;
}

static void remove_work(const char *work) {
  if (work != NULL && g_file_test(work, G_FILE_TEST_EXISTS))
    oakuk_rm_rf(work, NULL);
}

static char *make_work(oakuk_image_cache *cache, GError **error) {
  char *work = g_build_filename(cache->dir, ".tmp-XXXXXX", NULL);
  if (g_mkdtemp(work) == NULL) {
    int e = errno;
    set_gerror(error, OAKUK_EIO, "image cache %s: create work dir: %s", cache->dir, g_strerror(e));
    g_free(work);
    return NULL;
  }
  return work;
}

/* Downloads url into a new work dir and unpacks it there (tree/, image.json); *work_out names the
 * work dir and *key_out the entry it becomes. With v, an http(s) download is conditional: when the
 * server says nothing changed, TRUE with *work_out NULL. */
static gboolean build_url(oakuk_image_cache *cache, const char *url, const char *expected, Validators *v,
                          Progress *prog, GCancellable *cancel, char **work_out, char **key_out,
                          GError **error) {
  *work_out = *key_out = NULL;
  g_autofree char *work = make_work(cache, error);
  if (work == NULL)
    return FALSE;
  g_autofree char *dl = g_build_filename(work, "download", NULL);
  g_autofree char *tree = g_build_filename(work, "tree", NULL);
  g_autofree char *sha = NULL;
  g_autofree char *version = NULL;
  g_autofree char *kernel = g_build_filename(tree, "kernel", NULL);
  g_autofree char *p_initrd = g_build_filename(tree, "initrd", NULL);
  g_autofree char *p_cpio = g_build_filename(tree, "initramfs.cpio", NULL);
  g_autofree char *p_files = g_build_filename(tree, "files", NULL);
  const char *initrd = NULL, *flavor = NULL, *arch = NULL;
  ImageMeta meta = {0};
  gboolean ok = FALSE;
  Manifest m = {0};

  sha = download(cache, url, dl, prog, cancel, v, error);
  if (sha == NULL) {
    ok = v != NULL && v->not_modified;
    goto out;
  }
  if (expected != NULL && strcmp(sha, expected) != 0) {
    set_gerror(error, OAKUK_EVERIFY, "sha256 mismatch for %s: expected %s, got %s", url, expected, sha);
    goto out;
  }
  if (mkdir(tree, 0755) != 0) {
    int e = errno;
    set_gerror(error, OAKUK_EIO, "image %s: create %s: %s", url, tree, g_strerror(e));
    goto out;
  }
  if (!place_artifact(dl, tree, url, &cache->opts, cancel, error))
    goto out;
  unlink(dl);
  if (!is_regular(kernel)) {
    set_gerror(error, OAKUK_EINVAL, "image %s: no `kernel` file at the top of the archive", url);
    goto out;
  }
  if (!read_meta(tree, url, &meta, error))
    goto out;
  initrd = is_regular(p_initrd) ? "initrd" : is_regular(p_cpio) ? "initramfs.cpio" : NULL;
  /* QEMU may run as an unprivileged user (oakuk_qemu_options.run_as) and reads them through a
   * descriptor: the boot files are readable by everyone, whatever the archive said. */
  readable_by_all(kernel);
  readable_by_all(initrd ? (strcmp(initrd, "initrd") == 0 ? p_initrd : p_cpio) : NULL);
  /* An image whose kernel QEMU cannot boot is refused here, with the reason, not at every deploy. */
  arch = kernel_arch(kernel, error);
  if (arch == NULL) {
    g_prefix_error(error, "image %s: ", url);
    goto out;
  }
  if (kernel_flavor(kernel, &flavor, &version, error) != 0)
    goto out;
  if (meta.flavor != NULL) {
    flavor = meta.flavor;
    g_free(version);
    version = g_strdup(meta.version);
  } else if (meta.version != NULL) {
    g_free(version);
    version = g_strdup(meta.version);
  }
  m = (Manifest){.url = url,
                 .expected = expected,
                 .sha256 = sha,
                 .initrd = initrd,
                 .files = is_dir(p_files),
                 .flavor = flavor,
                 .version = version,
                 .style = meta.cmdline_style,
                 .extra = meta.cmdline_extra,
                 .arch = arch};
  if (!manifest_write(work, &m, error))
    goto out;
  *key_out = cache_key(url, expected ? expected : sha);
  *work_out = g_steal_pointer(&work);
  ok = TRUE;
out:
  image_meta_clear(&meta);
  remove_work(work);
  return ok;
}

/* "size:mtime:inode" of a file:// URL's file as it is now (NULL when it cannot be read). */
static char *file_stat_now(oakuk_image_cache *cache, const char *url) {
  g_autofree char *path = NULL;
  struct stat st;
  if (!oakuk_archive_local_check(url, cache->allowed, "file_allowed_dirs", &path, NULL) ||
      stat(path, &st) != 0)
    return NULL;
  return stat_text(&st);
}

/* A cached copy is kept when the source cannot be asked: an unreachable server or registry. */
static gboolean source_unreachable(const GError *err) {
  return err != NULL && err->domain == OAKUK_ERROR &&
         (err->code == -OAKUK_EIO || err->code == -OAKUK_ETIMEOUT);
}

/* A URL without the sha256 expected: what it led to last time is revalidated (http(s): conditional
 * GET; file://: size, mtime and inode), then kept or replaced. With the sha256, the entry is
 * content-addressed and needs no revalidation. */
static oakuk_image *fetch_url(oakuk_image_cache *cache, const Request *req, const char *slot, Progress *prog,
                              GCancellable *cancel, GError **error) {
  g_autofree char *work = NULL, *key = NULL;
  if (req->expected != NULL) {
    if (!build_url(cache, req->url, req->expected, NULL, prog, cancel, &work, &key, error))
      return NULL;
    oakuk_image *img = entry_commit(cache, work, key, req->url, error);
    remove_work(work);
    return img;
  }
  Record rec;
  gboolean have = record_load(cache, slot, &rec);
  oakuk_image *old = have ? entry_open(cache, rec.dir) : NULL;
  gboolean legacy = FALSE;
  if (old == NULL && (old = entry_open(cache, slot)) != NULL) /* an entry of a version before 0.3 */
    legacy = TRUE;
  gboolean is_file = g_str_has_prefix(req->url, "file:");
  if (old != NULL && is_file && have && !legacy) {
    g_autofree char *now = file_stat_now(cache, req->url);
    if (now != NULL && g_strcmp0(now, rec.file_stat) == 0) {
      record_clear(&rec);
      return old;
    }
  }
  Validators v = {0};
  if (old != NULL && !is_file && have && !legacy) {
    v.etag_in = rec.etag;
    v.last_modified_in = rec.last_modified;
  }
  GError *err = NULL;
  oakuk_image *img = NULL;
  if (!build_url(cache, req->url, NULL, &v, prog, cancel, &work, &key, &err)) {
    if (old != NULL && !is_file && source_unreachable(err)) {
      g_message("image %s: could not revalidate the cached image, using it: %s", req->url, err->message);
      g_clear_error(&err);
      img = g_steal_pointer(&old);
    }
  } else if (work == NULL) {
    img = g_steal_pointer(&old); /* 304 Not Modified */
  } else if ((img = entry_commit(cache, work, key, req->url, &err)) != NULL) {
    Record nr = {.dir = key, .etag = v.etag, .last_modified = v.last_modified, .file_stat = v.file_stat};
    record_store(cache, slot, req->url, NULL, &nr);
  }
  if (err != NULL)
    g_propagate_error(error, err);
  remove_work(work);
  validators_clear(&v);
  record_clear(&rec);
  oakuk_image_unref(old);
  return img;
}

/* ---- OCI images ---- */

static void oci_progress(gint64 bytes, gint64 total, gpointer data) {
  progress_report(data, bytes, total, bytes == total);
}

/* Pulls choice's platform manifest into a work dir, checks its kernel against the platform and
 * commits it as entry key. */
static oakuk_image *build_oci(oakuk_image_cache *cache, const Request *req, OakukOciSession *s,
                              const OakukOciUkChoice *choice, const char *key, Progress *prog,
                              GError **error) {
  g_autofree char *work = make_work(cache, error);
  if (work == NULL)
    return NULL;
  g_autofree char *tree = g_build_filename(work, "tree", NULL);
  g_autofree char *kernel = g_build_filename(tree, "kernel", NULL);
  g_autofree char *initrd = g_build_filename(tree, "initrd", NULL);
  g_autofree char *cversion = NULL;
  g_autoptr(OakukOciManifest) man = NULL;
  g_autoptr(GPtrArray) blobs = g_ptr_array_new_with_free_func(g_free);
  const char *cflavor = NULL, *arch = NULL, *flavor = NULL, *version = NULL;
  const char *what = req->url;
  OakukOciUkMeta meta = {0};
  oakuk_image *img = NULL;
  OakukOciUkLimits lim = {cache->blobs_dir,
                          cache->opts.max_download_bytes,
                          cache->opts.max_unpacked_bytes,
                          cache->opts.max_entries,
                          oci_progress,
                          prog};
  if (!oakuk_oci_uk_pull(s, req->url, choice, req->arch, &lim, work, tree, &meta, error))
    goto out;
  readable_by_all(kernel);
  readable_by_all(meta.initrd ? initrd : NULL);
  if ((arch = kernel_arch(kernel, error)) == NULL) {
    g_prefix_error(error, "image %s: ", what);
    goto out;
  }
  if (strcmp(arch, req->arch) != 0) {
    KernelInfo ki;
    kernel_inspect(kernel, &ki, NULL);
    set_gerror(error, OAKUK_EINVAL, "image %s: its platform is %s, but its kernel is an %s kernel (%s)", what,
               req->arch, arch, ki.format ? ki.format : "?");
    goto out;
  }
  if (kernel_flavor(kernel, &cflavor, &cversion, error) != 0)
    goto out;
  /* The image's word first (urunc's unikernelType; KraftKit packs Unikraft), then the kernel's. */
  flavor = meta.flavor                       ? meta.flavor
           : strcmp(cflavor, "unknown") != 0 ? cflavor
           : meta.layout[0] == 'k'           ? "unikraft"
                                             : cflavor;
  version = meta.version ? meta.version : strcmp(flavor, cflavor) == 0 ? cversion : NULL;
  {
    g_autofree char *mwhat = g_strdup_printf("image %s: manifest", what);
    g_autoptr(JsonParser) p = NULL;
    JsonObject *mo = oakuk_oci_parse_object(choice->manifest, mwhat, &p, error);
    if (mo == NULL || (man = oakuk_oci_manifest_parse(mo, what, error)) == NULL)
      goto out;
    g_ptr_array_add(blobs, g_strdup(man->config.digest));
    for (guint k = 0; k < man->n_layers; k++)
      g_ptr_array_add(blobs, g_strdup(man->layers[k].digest));
  }
  Manifest m = {.url = req->url,
                .sha256 = choice->manifest_digest + strlen("sha256:"),
                .digest = choice->manifest_digest,
                .initrd = meta.initrd ? "initrd" : NULL,
                .files = meta.files,
                .flavor = flavor,
                .version = version,
                .extra = meta.cmdline_extra,
                .arch = arch,
                .args = meta.args,
                .env = meta.env,
                .blobs = blobs};
  if (manifest_write(work, &m, error))
    img = entry_commit(cache, work, key, what, error);
out:
  oakuk_oci_uk_meta_clear(&meta);
  remove_work(work);
  return img;
}

static gboolean is_pinned(const char *reference) {
  return !g_str_has_prefix(reference, "oci-archive:") && strstr(reference, "@sha256:") != NULL;
}

/* The container options the OCI client takes, from the cache's. */
static oakuk_container_options oci_options(oakuk_image_cache *cache) {
  oakuk_container_options o = OAKUK_CONTAINER_OPTIONS_INIT;
  o.insecure_registries = cache->opts.insecure_registries;
  o.file_allowed_dirs = cache->opts.file_allowed_dirs;
  o.timeout_s = cache->opts.stall_timeout_s;
  return o;
}

static oakuk_image *fetch_oci_inner(oakuk_image_cache *cache, const Request *req, const char *slot,
                                    Progress *prog, GCancellable *cancel, GError **error) {
  Record rec;
  gboolean have = record_load(cache, slot, &rec);
  const char *archive_file =
      g_str_has_prefix(req->url, "oci-archive:file:") ? req->url + strlen("oci-archive:") : NULL;
  g_autofree char *stat_now = archive_file ? file_stat_now(cache, archive_file) : NULL;
  oakuk_image *img = NULL;
  /* A digest names the same content forever; an archive file that did not change, too. */
  if (have && (is_pinned(req->url) || (stat_now && g_strcmp0(stat_now, rec.file_stat) == 0)) &&
      (img = entry_open(cache, rec.dir)) != NULL) {
    record_clear(&rec);
    return img;
  }
  oakuk_container_options copts = oci_options(cache);
  GError *err = NULL;
  g_autoptr(OakukOciSession) s =
      oakuk_oci_session_open(cache->oci_dir, req->url, req->username, req->password, &copts, cancel, &err);
  g_autoptr(OakukOciUkChoice) choice = s ? oakuk_oci_uk_choose(s, req->url, req->arch, &err) : NULL;
  if (choice == NULL) {
    if (have && source_unreachable(err) && (img = entry_open(cache, rec.dir)) != NULL) {
      g_message("image %s: the registry cannot be asked, using its last resolution: %s", req->url,
                err->message);
      g_clear_error(&err);
    }
    if (err != NULL)
      g_propagate_error(error, err);
    record_clear(&rec);
    return img;
  }
  g_autofree char *key = oci_key(choice->manifest_digest);
  img = entry_open(cache, key);
  /* A manifest without an index around it is the same entry whatever arch was asked for. */
  if (img != NULL && g_strcmp0(oakuk_image_arch(img), req->arch) != 0) {
    set_gerror(error, OAKUK_EUNSUPPORTED, "image %s: its only platform is %s (manifest %s), not %s", req->url,
               oakuk_image_arch(img), choice->manifest_digest, req->arch);
    g_clear_pointer(&img, oakuk_image_unref);
    record_clear(&rec);
    return NULL;
  }
  if (img == NULL)
    img = build_oci(cache, req, s, choice, key, prog, error);
  if (img != NULL) {
    Record nr = {.dir = key, .file_stat = stat_now};
    record_store(cache, slot, req->url, req->arch, &nr);
  }
  record_clear(&rec);
  return img;
}

/* An OCI reference, bounded by timeout_s as a whole (stall_timeout_s bounds each request's silence
 * in the registry client). */
static oakuk_image *fetch_oci(oakuk_image_cache *cache, const Request *req, const char *slot, Progress *prog,
                              GCancellable *cancel, GError **error) {
  oakuk_image_cache_options total = {.timeout_s = cache->opts.timeout_s};
  Watchdog watch;
  watchdog_start(&watch, &total, cancel, TRUE);
  GError *err = NULL;
  oakuk_image *img = fetch_oci_inner(cache, req, slot, prog, cancel, &err);
  if (watchdog_stop(&watch) == STOP_TOTAL && img == NULL) {
    g_clear_error(&err);
    set_gerror(&err, OAKUK_ETIMEOUT, "fetch %s: not complete within %u s (timeout_s)", req->url,
               cache->opts.timeout_s);
  }
  if (err != NULL)
    g_propagate_error(error, err);
  return img;
}

/* ---------------------------------------------------------------------------------------------- */
/* Housekeeping: sizes, eviction, pruning */

typedef struct {
  char *key;
  guint64 bytes;
  struct timespec used;
  GPtrArray *blobs; /* "sha256:<hex>" */
} EntryInfo;

static void entry_info_free(gpointer p) {
  EntryInfo *e = p;
  g_free(e->key);
  g_ptr_array_unref(e->blobs);
  g_free(e);
}

static gint entry_info_cmp(gconstpointer a, gconstpointer b) {
  const EntryInfo *x = *(EntryInfo *const *)a, *y = *(EntryInfo *const *)b;
  if (x->used.tv_sec != y->used.tv_sec)
    return x->used.tv_sec < y->used.tv_sec ? -1 : 1;
  if (x->used.tv_nsec != y->used.tv_nsec)
    return x->used.tv_nsec < y->used.tv_nsec ? -1 : 1;
  return strcmp(x->key, y->key);
}

/* The finished entries, least recently used first. */
static GPtrArray *entries_list(oakuk_image_cache *cache) {
  GPtrArray *list = g_ptr_array_new_with_free_func(entry_info_free);
  g_autoptr(GDir) d = g_dir_open(cache->dir, 0, NULL);
  const char *name;
  while (d != NULL && (name = g_dir_read_name(d)) != NULL) {
    if (!is_entry_name(name))
      continue;
    g_autofree char *dir = g_build_filename(cache->dir, name, NULL);
    g_autofree char *used = g_build_filename(dir, "used", NULL);
    g_autofree char *json = g_build_filename(dir, "image.json", NULL);
    struct stat st;
    if (!is_dir(dir))
      continue;
    EntryInfo *e = g_new0(EntryInfo, 1);
    e->key = g_strdup(name);
    if (stat(used, &st) == 0 || stat(json, &st) == 0 || stat(dir, &st) == 0)
      e->used = st.st_mtim;
    g_autoptr(JsonParser) p = NULL;
    JsonObject *o = manifest_read(dir, &p, NULL);
    JsonNode *bn = o ? json_object_get_member(o, "bytes") : NULL;
    if (bn != NULL && JSON_NODE_HOLDS_VALUE(bn) && json_node_get_value_type(bn) == G_TYPE_INT64 &&
        json_node_get_int(bn) >= 0) {
      e->bytes = (guint64)json_node_get_int(bn);
    } else {
      g_autofree char *tree = g_build_filename(dir, "tree", NULL);
      e->bytes = tree_bytes(tree);
    }
    e->blobs = o ? manifest_list(o, "blobs") : g_ptr_array_new_with_free_func(g_free);
    g_ptr_array_add(list, e);
  }
  g_ptr_array_sort(list, entry_info_cmp);
  return list;
}

/* The OCI blobs present: "sha256:<hex>" -> size (GUINT64 in a heap gint64). */
static GHashTable *blobs_list(oakuk_image_cache *cache, guint64 *total) {
  GHashTable *t = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, g_free);
  *total = 0;
  g_autoptr(GDir) d = g_dir_open(cache->blobs_dir, 0, NULL);
  const char *name;
  while (d != NULL && (name = g_dir_read_name(d)) != NULL) {
    if (!is_entry_name(name))
      continue;
    g_autofree char *path = g_build_filename(cache->blobs_dir, name, NULL);
    struct stat st;
    if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
      continue;
    guint64 *size = g_new(guint64, 1);
    *size = (guint64)st.st_size;
    *total += *size;
    g_hash_table_insert(t, g_strconcat("sha256:", name, NULL), size);
  }
  return t;
}

static guint64 cache_bytes_locked(oakuk_image_cache *cache) {
  g_autoptr(GPtrArray) entries = entries_list(cache);
  guint64 total = 0;
  g_autoptr(GHashTable) blobs = blobs_list(cache, &total);
  for (guint k = 0; k < entries->len; k++)
    total += ((EntryInfo *)entries->pdata[k])->bytes;
  return total;
}

uint64_t oakuk_image_cache_size(oakuk_image_cache *cache) {
  g_return_val_if_fail(cache != NULL, 0);
  g_mutex_lock(&cache->lock);
  guint64 total = cache_bytes_locked(cache);
  g_mutex_unlock(&cache->lock);
  return total;
}

/* Under cache->lock: moves unused entries aside (into trash, to be removed outside the lock), least
 * recently used first, until the cache holds at most target bytes; then, unless a fetch is running
 * (it may be using blobs no entry names yet), removes the blobs no remaining entry came from.
 * Returns the bytes freed; *left the bytes that stay. */
static guint64 shrink_locked(oakuk_image_cache *cache, guint64 target, GPtrArray *trash, guint64 *left) {
  g_autoptr(GPtrArray) entries = entries_list(cache);
  guint64 blob_total = 0, total = 0, freed = 0;
  g_autoptr(GHashTable) blobs = blobs_list(cache, &blob_total);
  g_autoptr(GHashTable) needed = g_hash_table_new(g_str_hash, g_str_equal);
  total = blob_total;
  for (guint k = 0; k < entries->len; k++)
    total += ((EntryInfo *)entries->pdata[k])->bytes;
  for (guint k = 0; k < entries->len && total > target; k++) {
    EntryInfo *e = entries->pdata[k];
    if (in_use(cache, e->key))
      continue;
    g_autofree char *dir = g_build_filename(cache->dir, e->key, NULL);
    g_autofree char *aside =
        g_strdup_printf("%s/.evict-%s-%" G_GINT64_FORMAT, cache->dir, e->key, g_get_monotonic_time());
    if (rename(dir, aside) != 0)
      continue;
    g_ptr_array_add(trash, g_steal_pointer(&aside));
    total -= e->bytes;
    freed += e->bytes;
    e->bytes = G_MAXUINT64; /* gone */
  }
  for (guint k = 0; k < entries->len; k++) {
    EntryInfo *e = entries->pdata[k];
    for (guint b = 0; e->bytes != G_MAXUINT64 && b < e->blobs->len; b++)
      g_hash_table_add(needed, e->blobs->pdata[b]);
  }
  if (g_hash_table_size(cache->inflight) == 0) {
    GHashTableIter it;
    gpointer digest, size;
    g_hash_table_iter_init(&it, blobs);
    while (g_hash_table_iter_next(&it, &digest, &size)) {
      if (g_hash_table_contains(needed, digest))
        continue;
      g_autofree char *path =
          g_build_filename(cache->blobs_dir, (const char *)digest + strlen("sha256:"), NULL);
      if (unlink(path) == 0) {
        total -= *(guint64 *)size;
        freed += *(guint64 *)size;
      }
    }
  }
  if (left != NULL)
    *left = total;
  return freed;
}

/* Removes resolution records whose entry is gone. */
static void prune_records(oakuk_image_cache *cache) {
  g_autoptr(GDir) d = g_dir_open(cache->refs_dir, 0, NULL);
  const char *name;
  while (d != NULL && (name = g_dir_read_name(d)) != NULL) {
    if (!g_str_has_suffix(name, ".json"))
      continue;
    g_autofree char *slot = g_strndup(name, strlen(name) - strlen(".json"));
    Record r;
    gboolean keep = FALSE;
    if (record_load(cache, slot, &r)) {
      g_autofree char *dir = g_build_filename(cache->dir, r.dir, NULL);
      keep = is_dir(dir);
      record_clear(&r);
    }
    if (!keep) {
      g_autofree char *path = g_build_filename(cache->refs_dir, name, NULL);
      unlink(path);
    }
  }
}

static void empty_trash(GPtrArray *trash) {
  for (guint k = 0; k < trash->len; k++)
    oakuk_rm_rf(trash->pdata[k], NULL);
}

/* After a fetch: back under max_cache_bytes, as far as images in use allow. */
static void shrink_to_limit(oakuk_image_cache *cache) {
  guint64 max = cache->opts.max_cache_bytes;
  if (max == 0)
    return;
  g_autoptr(GPtrArray) trash = g_ptr_array_new_with_free_func(g_free);
  guint64 left = 0;
  g_mutex_lock(&cache->lock);
  if (cache_bytes_locked(cache) > max)
    shrink_locked(cache, max, trash, &left);
  g_mutex_unlock(&cache->lock);
  empty_trash(trash);
  if (left > max)
    g_message("image cache %s: %" G_GUINT64_FORMAT " bytes, over max_cache_bytes (%" G_GUINT64_FORMAT
              "): the rest is in use",
              cache->dir, left, max);
}

int oakuk_image_cache_prune(uint64_t *freed_out, oakuk_image_cache *cache, uint64_t keep_bytes,
                            oakuk_error **error) {
  g_return_val_if_fail(cache != NULL, OAKUK_EINVAL);
  g_autoptr(GPtrArray) trash = g_ptr_array_new_with_free_func(g_free);
  g_mutex_lock(&cache->lock);
  guint64 freed = shrink_locked(cache, keep_bytes, trash, NULL);
  prune_records(cache);
  g_mutex_unlock(&cache->lock);
  empty_trash(trash);
  for (guint k = 0; k < trash->len; k++)
    if (g_file_test(trash->pdata[k], G_FILE_TEST_EXISTS))
      return oakuk_set_error(error, OAKUK_EIO, 0, NULL, "image cache %s: could not remove %s", cache->dir,
                             (const char *)trash->pdata[k]);
  if (freed_out != NULL)
    *freed_out = freed;
  return 0;
}

/* ---------------------------------------------------------------------------------------------- */
/* Fetches in flight */

/* Stops w's interest in its download (under cache->lock): the download stops when no fetch is
 * interested any more, and is then no longer found by new fetches of the key. Returns the
 * download's cancellable to cancel (outside the lock), or NULL. */
static GCancellable *waiter_leave(oakuk_image_cache *cache, Waiter *w) {
  Inflight *in = w->inflight;
  if (in == NULL || in->finished || --in->active > 0)
    return NULL;
  if (g_hash_table_lookup(cache->inflight, in->key) == in)
    g_hash_table_remove(cache->inflight, in->key);
  return g_object_ref(in->cancel);
}

/* Cancels w's fetch; FALSE when it already was. */
static gboolean waiter_cancel(oakuk_image_cache *cache, Waiter *w) {
  g_mutex_lock(&cache->lock);
  if (w->cancelled) {
    g_mutex_unlock(&cache->lock);
    return FALSE;
  }
  w->cancelled = TRUE;
  g_autoptr(GCancellable) stop = waiter_leave(cache, w);
  g_cond_broadcast(&cache->cond);
  g_mutex_unlock(&cache->lock);
  if (stop)
    g_cancellable_cancel(stop);
  return TRUE;
}

static void set_cancelled(const char *url, GError **error) {
  set_gerror(error, OAKUK_ECANCELLED, "fetch %s: cancelled", url);
}

/* Waits (cache->lock held) for a download another fetch runs, relaying its progress. */
static oakuk_image *wait_inflight(oakuk_image_cache *cache, Inflight *in, const char *url, Listener *l,
                                  Waiter *w, GError **error) {
  guint64 seen = 0;
  in->refs++;
  in->active++;
  w->inflight = in;
  while (!in->finished && !w->cancelled) {
    if (in->progress_seq != seen && l && l->emit) {
      seen = in->progress_seq;
      gint64 b = in->bytes, t = in->total;
      g_mutex_unlock(&cache->lock);
      l->emit(l->data, b, t);
      g_mutex_lock(&cache->lock);
      continue;
    }
    g_cond_wait(&cache->cond, &cache->lock);
  }
  oakuk_image *img = NULL;
  if (w->cancelled)
    set_cancelled(url, error);
  else if (in->image)
    img = oakuk_image_ref(in->image);
  else
    g_propagate_error(error, g_error_copy(in->error));
  w->inflight = NULL;
  inflight_release(in);
  g_mutex_unlock(&cache->lock);
  return img;
}

/* The whole fetch, blocking: a finished entry, or wait for a running download of the same slot,
 * or download it here. w (never NULL) is this fetch's part, for cancellation. */
static oakuk_image *fetch_blocking(oakuk_image_cache *cache, const Request *req, Listener *l, Waiter *w,
                                   GError **error) {
  g_autofree char *slot = request_slot(req);
  g_mutex_lock(&cache->lock);
  if (w->cancelled) {
    g_mutex_unlock(&cache->lock);
    set_cancelled(req->url, error);
    return NULL;
  }
  Inflight *in = g_hash_table_lookup(cache->inflight, slot);
  if (in != NULL)
    return wait_inflight(cache, in, req->url, l, w, error);
  /* A URL with its sha256 is content-addressed: a finished entry needs no one asked. */
  oakuk_image *img = !req->oci && req->expected ? entry_open_locked(cache, slot) : NULL;
  if (img != NULL) {
    g_mutex_unlock(&cache->lock);
    return img;
  }
  in = g_new0(Inflight, 1);
  in->key = g_strdup(slot);
  in->refs = 1;
  in->active = 1;
  in->cancel = g_cancellable_new();
  w->inflight = in;
  g_hash_table_insert(cache->inflight, g_strdup(slot), in);
  g_mutex_unlock(&cache->lock);

  Progress prog = {.cache = cache, .inflight = in, .listener = l, .last_us = 0};
  GError *err = NULL;
  img = req->oci ? fetch_oci(cache, req, slot, &prog, in->cancel, &err)
                 : fetch_url(cache, req, slot, &prog, in->cancel, &err);

  g_mutex_lock(&cache->lock);
  in->finished = TRUE;
  in->image = img ? oakuk_image_ref(img) : NULL;
  in->error = err ? g_error_copy(err) : NULL;
  if (g_hash_table_lookup(cache->inflight, slot) == in)
    g_hash_table_remove(cache->inflight, slot);
  g_cond_broadcast(&cache->cond);
  w->inflight = NULL;
  gboolean cancelled = w->cancelled;
  inflight_release(in);
  g_mutex_unlock(&cache->lock);
  if (img != NULL)
    shrink_to_limit(cache);
  if (cancelled) {
    /* The others waiting still got the result; this fetch's caller was told it was cancelled. */
    g_clear_pointer(&img, oakuk_image_unref);
    g_clear_error(&err);
    set_cancelled(req->url, &err);
  }
  if (err)
    g_propagate_error(error, err);
  return img;
}

/* ---------------------------------------------------------------------------------------------- */
/* Public fetch API */

bool oakuk_image_code_is_oci(const char *code) {
  if (code == NULL || *code == '\0')
    return false;
  if (g_str_has_prefix(code, "oci-archive:"))
    return true;
  if (strstr(code, "://") != NULL)
    return false;
  OakukOciRef ref;
  if (!oakuk_oci_ref_parse(code, &ref, NULL))
    return false;
  oakuk_oci_ref_clear(&ref);
  return true;
}

static gboolean validate_request(oakuk_image_cache *cache, const char *url, const char *sha256, Request *req,
                                 GError **error) {
  if (oakuk_image_code_is_oci(url)) {
    set_gerror(error, OAKUK_EINVAL,
               "image url %s: an OCI reference, not a URL: fetch it with oakuk_image_cache_fetch_oci", url);
    return FALSE;
  }
  g_autoptr(GUri) uri = g_uri_parse(url, G_URI_FLAGS_ENCODED, NULL);
  const char *scheme = uri ? g_uri_get_scheme(uri) : NULL;
  if (uri == NULL ||
      (g_strcmp0(scheme, "http") != 0 && g_strcmp0(scheme, "https") != 0 && g_strcmp0(scheme, "file") != 0)) {
    set_gerror(error, OAKUK_EINVAL, "image url %s: expected an http://, https:// or file:// URL", url);
    return FALSE;
  }
  if (g_strcmp0(scheme, "file") != 0 && (g_uri_get_host(uri) == NULL || *g_uri_get_host(uri) == '\0')) {
    set_gerror(error, OAKUK_EINVAL, "image url %s: no host", url);
    return FALSE;
  }
  /* file:// is checked before the cache is looked at: a cached image does not outlive the policy. */
  if (g_strcmp0(scheme, "file") == 0 &&
      !oakuk_archive_local_check(url, cache->allowed, "file_allowed_dirs", NULL, error)) {
    g_prefix_error(error, "image url ");
    return FALSE;
  }
  memset(req, 0, sizeof *req);
  if (sha256 != NULL && *sha256 != '\0') {
    gsize n = strlen(sha256);
    gboolean hex = n == 64;
    for (gsize i = 0; hex && i < n; i++)
      hex = g_ascii_isxdigit(sha256[i]);
    if (!hex) {
      set_gerror(error, OAKUK_EINVAL, "sha256 for %s: expected 64 hexadecimal digits, got \"%s\"", url,
                 sha256);
      return FALSE;
    }
    req->expected = g_ascii_strdown(sha256, -1);
  }
  req->url = g_strdup(url);
  return TRUE;
}

static gboolean validate_oci(oakuk_image_cache *cache, const char *reference, const char *arch,
                             const char *username, const char *password, Request *req, GError **error) {
  memset(req, 0, sizeof *req);
  for (const char *c = reference; *c; c++)
    if ((unsigned char)*c <= 0x20 || (unsigned char)*c == 0x7f) {
      set_gerror(error, OAKUK_EINVAL, "image reference \"%s\": has a space or control character", reference);
      return FALSE;
    }
  if (g_str_has_prefix(reference, "oci-archive:")) {
    const char *u = reference + strlen("oci-archive:");
    g_autoptr(GUri) uri = g_uri_parse(u, G_URI_FLAGS_ENCODED, NULL);
    const char *scheme = uri ? g_uri_get_scheme(uri) : NULL;
    if (g_strcmp0(scheme, "file") == 0) {
      if (!oakuk_archive_local_check(u, cache->allowed, "file_allowed_dirs", NULL, error)) {
        g_prefix_error(error, "image reference oci-archive:");
        return FALSE;
      }
    } else if ((g_strcmp0(scheme, "http") != 0 && g_strcmp0(scheme, "https") != 0) || !g_uri_get_host(uri) ||
               !*g_uri_get_host(uri)) {
      set_gerror(error, OAKUK_EINVAL,
                 "image reference %s: oci-archive: needs an http://, https:// or file:// URL", reference);
      return FALSE;
    }
  } else {
    OakukOciRef ref;
    if (!oakuk_oci_ref_parse(reference, &ref, error))
      return FALSE;
    oakuk_oci_ref_clear(&ref);
  }
  const char *a = arch ? arch : oakuk_container_platform_arch();
  if (!oakuk_arch_is_known(a)) {
    set_gerror(error, OAKUK_EINVAL,
               "image %s: arch \"%s\" is not a known architecture (amd64, arm64, arm, riscv64)", reference,
               a);
    return FALSE;
  }
  req->oci = TRUE;
  req->url = g_strdup(reference);
  req->arch = g_strdup(a);
  if (username != NULL && password != NULL) {
    req->username = g_strdup(username);
    req->password = g_strdup(password);
  }
  return TRUE;
}

typedef struct {
  oakuk_image_progress_cb cb;
  void *user_data;
} SyncProgress;

static void emit_sync(void *data, gint64 bytes, gint64 total) {
  SyncProgress *sp = data;
  sp->cb(bytes, total, sp->user_data);
}

static oakuk_image *fetch_sync(oakuk_image_cache *cache, Request *req, oakuk_image_progress_cb progress,
                               void *user_data, oakuk_error **error) {
  SyncProgress sp = {progress, user_data};
  Listener l = {emit_sync, &sp};
  Waiter w = {FALSE, NULL};
  GError *err = NULL;
  oakuk_image *img = fetch_blocking(cache, req, progress ? &l : NULL, &w, &err);
  request_clear(req);
  if (img == NULL)
    oakuk_propagate_gerror(error, err);
  return img;
}

oakuk_image *oakuk_image_cache_fetch_sync(oakuk_image_cache *cache, const char *url, const char *sha256,
                                          oakuk_image_progress_cb progress, void *user_data,
                                          oakuk_error **error) {
  g_return_val_if_fail(cache != NULL && url != NULL, NULL);
  GError *err = NULL;
  Request req;
  if (!validate_request(cache, url, sha256, &req, &err)) {
    oakuk_propagate_gerror(error, err);
    return NULL;
  }
  return fetch_sync(cache, &req, progress, user_data, error);
}

oakuk_image *oakuk_image_cache_fetch_oci_sync(oakuk_image_cache *cache, const char *reference,
                                              const char *arch, const char *username, const char *password,
                                              oakuk_image_progress_cb progress, void *user_data,
                                              oakuk_error **error) {
  g_return_val_if_fail(cache != NULL && reference != NULL, NULL);
  GError *err = NULL;
  Request req;
  if (!validate_oci(cache, reference, arch, username, password, &req, &err)) {
    oakuk_propagate_gerror(error, err);
    return NULL;
  }
  return fetch_sync(cache, &req, progress, user_data, error);
}

/* An asynchronous fetch; the public oakuk_image_fetch handle. An atomic rc box: the caller's
 * handle, the worker task and each queued message hold references. */
struct oakuk_image_fetch {
  oakuk_image_cache *cache;
  Request req;
  oakuk_image_progress_cb progress;
  oakuk_image_done_cb done;
  void *user_data;
  GMainContext *context;
  Waiter waiter;         /* guarded by cache->lock */
  gint cancel_requested; /* atomic */
  gboolean finished;     /* touched only on context: done was called */
};

typedef struct oakuk_image_fetch FetchOp;

static void fetch_op_free(FetchOp *op) {
  oakuk_image_cache_unref(op->cache);
  request_clear(&op->req);
  g_main_context_unref(op->context);
}

static void fetch_op_release(gpointer op) {
  g_atomic_rc_box_release_full(op, (GDestroyNotify)fetch_op_free);
}

oakuk_image_fetch *oakuk_image_fetch_ref(oakuk_image_fetch *fetch) {
  g_return_val_if_fail(fetch != NULL, NULL);
  return g_atomic_rc_box_acquire(fetch);
}

void oakuk_image_fetch_unref(oakuk_image_fetch *fetch) {
  if (fetch != NULL)
    fetch_op_release(fetch);
}

/* Calls op's done once, on its context; nothing after it. */
static void op_finish(FetchOp *op, oakuk_image *img, GError *err) {
  if (op->finished)
    return;
  op->finished = TRUE;
  if (img != NULL) {
    op->done(img, NULL, op->user_data);
  } else {
    oakuk_error *e = NULL;
    oakuk_propagate_gerror(&e, g_error_copy(err));
    op->done(NULL, e, op->user_data);
    oakuk_error_free(e);
  }
}

/* Runs fn(op) on op's context, holding a reference until then. */
static void op_post(FetchOp *op, GSourceFunc fn, gpointer data, GDestroyNotify free_data) {
  GSource *src = g_idle_source_new();
  g_source_set_priority(src, G_PRIORITY_DEFAULT);
  g_source_set_callback(src, fn, data, free_data);
  g_source_attach(src, op->context);
  g_source_unref(src);
}

typedef struct {
  FetchOp *op;
  gint64 bytes;
  gint64 total;
} ProgressMsg;

static void progress_msg_free(gpointer data) {
  ProgressMsg *m = data;
  fetch_op_release(m->op);
  g_free(m);
}

static gboolean progress_dispatch(gpointer data) {
  ProgressMsg *m = data;
  if (!m->op->finished && !g_atomic_int_get(&m->op->cancel_requested))
    m->op->progress(m->bytes, m->total, m->op->user_data);
  return G_SOURCE_REMOVE;
}

static void emit_async(void *data, gint64 bytes, gint64 total) {
  FetchOp *op = data;
  ProgressMsg *m = g_new0(ProgressMsg, 1);
  m->op = g_atomic_rc_box_acquire(op);
  m->bytes = bytes;
  m->total = total;
  op_post(op, progress_dispatch, m, progress_msg_free);
}

static gboolean cancel_dispatch(gpointer data) {
  FetchOp *op = data;
  g_autoptr(GError) err = NULL;
  set_cancelled(op->req.url, &err);
  op_finish(op, NULL, err);
  return G_SOURCE_REMOVE;
}

void oakuk_image_fetch_cancel(oakuk_image_fetch *op) {
  if (op == NULL)
    return;
  g_atomic_int_set(&op->cancel_requested, 1);
  /* done comes now, from the context, not when the worker thread gets to notice. */
  if (waiter_cancel(op->cache, &op->waiter))
    op_post(op, cancel_dispatch, g_atomic_rc_box_acquire(op), fetch_op_release);
}

static void fetch_thread(GTask *task, gpointer source, gpointer data, GCancellable *cancellable) {
  FetchOp *op = data;
  Listener l = {emit_async, op};
  GError *err = NULL;
  oakuk_image *img = fetch_blocking(op->cache, &op->req, op->progress ? &l : NULL, &op->waiter, &err);
  if (img)
    g_task_return_pointer(task, img, (GDestroyNotify)oakuk_image_unref);
  else
    g_task_return_error(task, err);
}

static void fetch_done(GObject *source, GAsyncResult *res, gpointer data) {
  FetchOp *op = g_task_get_task_data(G_TASK(res));
  g_autoptr(GError) err = NULL;
  g_autoptr(oakuk_image) img = g_task_propagate_pointer(G_TASK(res), &err);
  /* A cancelled fetch reports through cancel_dispatch, never with an image. */
  if (!g_atomic_int_get(&op->cancel_requested))
    op_finish(op, img, err);
}

/* Starts the fetch of req (taken over) in a thread. */
static void fetch_start(oakuk_image_fetch **fetch_out, oakuk_image_cache *cache, Request *req,
                        oakuk_image_progress_cb progress, oakuk_image_done_cb done, void *user_data) {
  FetchOp *op = g_atomic_rc_box_new0(FetchOp);
  op->cache = oakuk_image_cache_ref(cache);
  op->req = *req;
  memset(req, 0, sizeof *req);
  op->progress = progress;
  op->done = done;
  op->user_data = user_data;
  op->context = g_main_context_ref_thread_default();
  if (fetch_out)
    *fetch_out = g_atomic_rc_box_acquire(op);
  g_autoptr(GTask) task = g_task_new(NULL, NULL, fetch_done, NULL);
  g_task_set_source_tag(task, fetch_start);
  g_task_set_task_data(task, op, fetch_op_release);
  g_task_run_in_thread(task, fetch_thread);
}

int oakuk_image_cache_fetch_start(oakuk_image_fetch **fetch_out, oakuk_image_cache *cache, const char *url,
                                  const char *sha256, oakuk_image_progress_cb progress,
                                  oakuk_image_done_cb done, void *user_data, oakuk_error **error) {
  g_return_val_if_fail(cache != NULL && url != NULL && done != NULL, OAKUK_EINVAL);
  if (fetch_out)
    *fetch_out = NULL;
  GError *err = NULL;
  Request req;
  if (!validate_request(cache, url, sha256, &req, &err))
    return oakuk_propagate_gerror(error, err);
  fetch_start(fetch_out, cache, &req, progress, done, user_data);
  return 0;
}

int oakuk_image_cache_fetch_oci_start(oakuk_image_fetch **fetch_out, oakuk_image_cache *cache,
                                      const char *reference, const char *arch, const char *username,
                                      const char *password, oakuk_image_progress_cb progress,
                                      oakuk_image_done_cb done, void *user_data, oakuk_error **error) {
  g_return_val_if_fail(cache != NULL && reference != NULL && done != NULL, OAKUK_EINVAL);
  if (fetch_out)
    *fetch_out = NULL;
  GError *err = NULL;
  Request req;
  if (!validate_oci(cache, reference, arch, username, password, &req, &err))
    return oakuk_propagate_gerror(error, err);
  fetch_start(fetch_out, cache, &req, progress, done, user_data);
  return 0;
}

int oakuk_image_cache_fetch(oakuk_image_cache *cache, const char *url, const char *sha256,
                            oakuk_image_progress_cb progress, oakuk_image_done_cb done, void *user_data,
                            oakuk_error **error) {
  return oakuk_image_cache_fetch_start(NULL, cache, url, sha256, progress, done, user_data, error);
}

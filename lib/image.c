/* Image fetching, verification, safe unpacking and caching (DESIGN §8, §11). */
#include "archive-safe.h"
#include "oakuk-private.h"
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
};

oakuk_image *oakuk_image_ref(oakuk_image *image) {
  g_return_val_if_fail(image != NULL, NULL);
  g_atomic_ref_count_inc(&image->refcount);
  return image;
}

void oakuk_image_unref(oakuk_image *image) {
  if (image == NULL || !g_atomic_ref_count_dec(&image->refcount))
    return;
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

int oakuk_image_cache_options_init(oakuk_image_cache_options *opts, unsigned int version) {
  g_return_val_if_fail(opts != NULL, OAKUK_EINVAL);
  if (version != OAKUK_IMAGE_CACHE_OPTIONS_VERSION && version != OAKUK_IMAGE_CACHE_OPTIONS_VERSION_1)
    return OAKUK_EINVAL;
  oakuk_image_cache_options def = OAKUK_IMAGE_CACHE_OPTIONS_INIT;
  def.version = version;
  /* A version-1 caller's struct ends before the version-2 fields: write only its part. */
  memcpy(opts, &def, version == OAKUK_IMAGE_CACHE_OPTIONS_VERSION_1 ? OPTIONS_V1_SIZE : sizeof def);
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
  oakuk_image_cache_options opts;
  char **allowed; /* file_allowed_dirs, canonical, or NULL */
  char *allowed_text;
  GMutex lock;
  GCond cond;
  GHashTable *inflight; /* key → Inflight* */
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
  if (opts->version == OAKUK_IMAGE_CACHE_OPTIONS_VERSION_1) {
    memcpy(o, opts, OPTIONS_V1_SIZE);
    o->version = OAKUK_IMAGE_CACHE_OPTIONS_VERSION;
    return TRUE;
  }
  if (opts->version != OAKUK_IMAGE_CACHE_OPTIONS_VERSION) {
    oakuk_set_error(error, OAKUK_EINVAL, 0, "version", "image cache options: unknown version %u",
                    opts->version);
    return FALSE;
  }
  *o = *opts;
  return TRUE;
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
  GDir *d = g_dir_open(real, 0, NULL);
  if (d == NULL) {
    oakuk_set_error(error, OAKUK_EIO, errno, NULL, "image cache %s: cannot list the directory", dir);
    return NULL;
  }
  const char *name;
  while ((name = g_dir_read_name(d)) != NULL) {
    if (g_str_has_prefix(name, ".tmp-")) {
      g_autofree char *p = g_build_filename(real, name, NULL);
      oakuk_rm_rf(p, NULL);
    }
  }
  g_dir_close(d);
  oakuk_image_cache *c = g_new0(oakuk_image_cache, 1);
  g_atomic_ref_count_init(&c->refcount);
  c->dir = g_steal_pointer(&real);
  c->opts = o;
  c->allowed = g_steal_pointer(&allowed);
  c->allowed_text = c->allowed ? g_strjoinv(":", c->allowed) : NULL;
  c->opts.file_allowed_dirs = c->allowed_text;
  g_mutex_init(&c->lock);
  g_cond_init(&c->cond);
  c->inflight = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
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
  g_mutex_clear(&cache->lock);
  g_cond_clear(&cache->cond);
  g_strfreev(cache->allowed);
  g_free(cache->allowed_text);
  g_free(cache->dir);
  g_free(cache);
}

const char *oakuk_image_cache_dir(const oakuk_image_cache *cache) {
  g_return_val_if_fail(cache != NULL, NULL);
  return cache->dir;
}

/* ---------------------------------------------------------------------------------------------- */
/* Manifest */

static char *manifest_str(JsonObject *o, const char *key) {
  JsonNode *n = json_object_get_member(o, key);
  if (n == NULL || JSON_NODE_HOLDS_NULL(n) || json_node_get_value_type(n) != G_TYPE_STRING)
    return NULL;
  return g_strdup(json_node_get_string(n));
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

/* Loads <dir>/image.json of a finished entry; NULL (no error) when there is none. */
static oakuk_image *manifest_load(const char *dir, GError **error) {
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
  JsonObject *o = json_node_get_object(root);
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
  /* Entries cached before the boot files were made readable by all (a bare kernel was 0600). */
  readable_by_all(img->kernel);
  readable_by_all(img->initrd);
  if (img->kernel == NULL || img->flavor == NULL || img->sha256 == NULL || img->url == NULL ||
      !g_file_test(img->kernel, G_FILE_TEST_IS_REGULAR)) {
    set_gerror(error, OAKUK_EIO, "%s: incomplete manifest (kernel, flavor, sha256 and url are required)",
               path);
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

static gboolean manifest_write(const char *workdir, const char *url, const char *expected, const char *sha256,
                               const char *initrd, gboolean files, const char *flavor, const char *version,
                               const char *style, const char *extra, const char *arch, GError **error) {
  g_autoptr(JsonBuilder) b = json_builder_new();
  json_builder_begin_object(b);
  builder_add(b, "url", url);
  builder_add(b, "expected_sha256", expected);
  builder_add(b, "sha256", sha256);
  builder_add(b, "kernel", "kernel");
  builder_add(b, "initrd", initrd);
  builder_add(b, "files", files ? "files" : NULL);
  builder_add(b, "flavor", flavor);
  builder_add(b, "version", version);
  builder_add(b, "cmdline_style", style);
  builder_add(b, "cmdline_extra", extra);
  builder_add(b, "arch", arch);
  json_builder_end_object(b);
  g_autoptr(JsonNode) root = json_builder_get_root(b);
  g_autofree char *text = oakuk_json_node_to_string(root, TRUE);
  g_autofree char *path = g_build_filename(workdir, "image.json", NULL);
  g_autoptr(GError) err = NULL;
  if (!g_file_set_contents(path, text, -1, &err)) {
    set_gerror(error, OAKUK_EIO, "write %s: %s", path, err->message);
    return FALSE;
  }
  return TRUE;
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

/* A file:// download (archive-safe.h): a regular file inside file_allowed_dirs once its symlinks
 * are resolved, never blocking on a fifo, never opening a device. */
static gboolean download_file(const char *url, oakuk_image_cache *cache, Sink *s, Progress *prog,
                              GError **error) {
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
                              GError **error) {
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
 * watchdog cancels it too, for a timeout). */
static char *download(oakuk_image_cache *cache, const char *url, const char *path, Progress *prog,
                      GCancellable *cancel, GError **error) {
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
  gboolean ok = is_file ? download_file(url, cache, &s, prog, error) : download_http(url, o, &s, prog, error);
  watchdog_stop(&watch);
  if (close(s.fd) != 0 && ok) {
    int e = errno;
    set_gerror(error, OAKUK_EIO, "fetch %s: close %s: %s", url, path, g_strerror(e));
    ok = FALSE;
  }
  char *hex = ok ? g_strdup(g_checksum_get_string(s.sum)) : NULL;
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

static oakuk_image *build_image(oakuk_image_cache *cache, const char *key, const char *url,
                                const char *expected, Progress *prog, GCancellable *cancel, GError **error) {
  g_autofree char *work = g_build_filename(cache->dir, ".tmp-XXXXXX", NULL);
  if (g_mkdtemp(work) == NULL) {
    int e = errno;
    set_gerror(error, OAKUK_EIO, "image cache %s: create work dir: %s", cache->dir, g_strerror(e));
    return NULL;
  }
  g_autofree char *dl = g_build_filename(work, "download", NULL);
  g_autofree char *tree = g_build_filename(work, "tree", NULL);
  g_autofree char *final = g_build_filename(cache->dir, key, NULL);
  g_autofree char *sha = NULL;
  g_autofree char *version = NULL;
  g_autofree char *kernel = g_build_filename(tree, "kernel", NULL);
  g_autofree char *p_initrd = g_build_filename(tree, "initrd", NULL);
  g_autofree char *p_cpio = g_build_filename(tree, "initramfs.cpio", NULL);
  g_autofree char *p_files = g_build_filename(tree, "files", NULL);
  const char *initrd = NULL, *flavor = NULL, *arch = NULL;
  ImageMeta meta = {0};
  oakuk_image *img = NULL;

  sha = download(cache, url, dl, prog, cancel, error);
  if (sha == NULL)
    goto out;
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
  if (!manifest_write(work, url, expected, sha, initrd, is_dir(p_files), flavor, version, meta.cmdline_style,
                      meta.cmdline_extra, arch, error))
    goto out;
  if (rename(work, final) != 0) {
    int e = errno;
    if (e != EEXIST && e != ENOTEMPTY) {
      set_gerror(error, OAKUK_EIO, "image %s: move into cache %s: %s", url, final, g_strerror(e));
      goto out;
    }
    /* Another process finished the same image first: use theirs. */
  }
  img = manifest_load(final, error);
  if (img == NULL && error && *error == NULL)
    set_gerror(error, OAKUK_EIO, "image %s: %s vanished from the cache", url, final);
out:
  image_meta_clear(&meta);
  if (g_file_test(work, G_FILE_TEST_EXISTS))
    oakuk_rm_rf(work, NULL);
  return img;
}

static char *cache_key(const char *url, const char *expected) {
  g_autofree char *s = g_strconcat(url, "\n", expected ? expected : "", NULL);
  return g_compute_checksum_for_string(G_CHECKSUM_SHA256, s, -1);
}

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

/* The whole fetch, blocking: a finished entry, or wait for a running download of the same key,
 * or download it here. w (never NULL) is this fetch's part, for cancellation. */
static oakuk_image *fetch_blocking(oakuk_image_cache *cache, const char *url, const char *expected,
                                   Listener *l, Waiter *w, GError **error) {
  g_autofree char *key = cache_key(url, expected);
  g_autofree char *dir = g_build_filename(cache->dir, key, NULL);
  g_mutex_lock(&cache->lock);
  if (w->cancelled) {
    g_mutex_unlock(&cache->lock);
    set_cancelled(url, error);
    return NULL;
  }
  Inflight *in = g_hash_table_lookup(cache->inflight, key);
  if (in != NULL)
    return wait_inflight(cache, in, url, l, w, error);
  GError *err = NULL;
  oakuk_image *img = manifest_load(dir, &err);
  if (img != NULL || err != NULL) {
    g_mutex_unlock(&cache->lock);
    if (err != NULL) /* a damaged entry: drop it and fetch again */
      g_clear_error(&err);
    if (img != NULL)
      return img;
    oakuk_rm_rf(dir, NULL);
    g_mutex_lock(&cache->lock);
    if ((in = g_hash_table_lookup(cache->inflight, key)) != NULL)
      return wait_inflight(cache, in, url, l, w, error);
  }
  in = g_new0(Inflight, 1);
  in->key = g_strdup(key);
  in->refs = 1;
  in->active = 1;
  in->cancel = g_cancellable_new();
  w->inflight = in;
  g_hash_table_insert(cache->inflight, g_strdup(key), in);
  g_mutex_unlock(&cache->lock);

  Progress prog = {.cache = cache, .inflight = in, .listener = l, .last_us = 0};
  img = build_image(cache, key, url, expected, &prog, in->cancel, &err);

  g_mutex_lock(&cache->lock);
  in->finished = TRUE;
  in->image = img ? oakuk_image_ref(img) : NULL;
  in->error = err ? g_error_copy(err) : NULL;
  if (g_hash_table_lookup(cache->inflight, key) == in)
    g_hash_table_remove(cache->inflight, key);
  g_cond_broadcast(&cache->cond);
  w->inflight = NULL;
  gboolean cancelled = w->cancelled;
  inflight_release(in);
  g_mutex_unlock(&cache->lock);
  if (cancelled) {
    /* The others waiting still got the result; this fetch's caller was told it was cancelled. */
    g_clear_pointer(&img, oakuk_image_unref);
    g_clear_error(&err);
    set_cancelled(url, &err);
  }
  if (err)
    g_propagate_error(error, err);
  return img;
}

/* ---------------------------------------------------------------------------------------------- */
/* Public fetch API */

static gboolean validate_request(oakuk_image_cache *cache, const char *url, const char *sha256,
                                 char **expected, GError **error) {
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
  *expected = NULL;
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
    *expected = g_ascii_strdown(sha256, -1);
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

oakuk_image *oakuk_image_cache_fetch_sync(oakuk_image_cache *cache, const char *url, const char *sha256,
                                          oakuk_image_progress_cb progress, void *user_data,
                                          oakuk_error **error) {
  g_return_val_if_fail(cache != NULL && url != NULL, NULL);
  GError *err = NULL;
  g_autofree char *expected = NULL;
  if (!validate_request(cache, url, sha256, &expected, &err)) {
    oakuk_propagate_gerror(error, err);
    return NULL;
  }
  SyncProgress sp = {progress, user_data};
  Listener l = {emit_sync, &sp};
  Waiter w = {FALSE, NULL};
  oakuk_image *img = fetch_blocking(cache, url, expected, progress ? &l : NULL, &w, &err);
  if (img == NULL)
    oakuk_propagate_gerror(error, err);
  return img;
}

/* An asynchronous fetch; the public oakuk_image_fetch handle. An atomic rc box: the caller's
 * handle, the worker task and each queued message hold references. */
struct oakuk_image_fetch {
  oakuk_image_cache *cache;
  char *url;
  char *expected;
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
  g_free(op->url);
  g_free(op->expected);
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
  set_cancelled(op->url, &err);
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
  oakuk_image *img =
      fetch_blocking(op->cache, op->url, op->expected, op->progress ? &l : NULL, &op->waiter, &err);
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

int oakuk_image_cache_fetch_start(oakuk_image_fetch **fetch_out, oakuk_image_cache *cache, const char *url,
                                  const char *sha256, oakuk_image_progress_cb progress,
                                  oakuk_image_done_cb done, void *user_data, oakuk_error **error) {
  g_return_val_if_fail(cache != NULL && url != NULL && done != NULL, OAKUK_EINVAL);
  if (fetch_out)
    *fetch_out = NULL;
  GError *err = NULL;
  g_autofree char *expected = NULL;
  if (!validate_request(cache, url, sha256, &expected, &err))
    return oakuk_propagate_gerror(error, err);
  FetchOp *op = g_atomic_rc_box_new0(FetchOp);
  op->cache = oakuk_image_cache_ref(cache);
  op->url = g_strdup(url);
  op->expected = g_steal_pointer(&expected);
  op->progress = progress;
  op->done = done;
  op->user_data = user_data;
  op->context = g_main_context_ref_thread_default();
  if (fetch_out)
    *fetch_out = g_atomic_rc_box_acquire(op);
  g_autoptr(GTask) task = g_task_new(NULL, NULL, fetch_done, NULL);
  g_task_set_source_tag(task, oakuk_image_cache_fetch_start);
  g_task_set_task_data(task, op, fetch_op_release);
  g_task_run_in_thread(task, fetch_thread);
  return 0;
}

int oakuk_image_cache_fetch(oakuk_image_cache *cache, const char *url, const char *sha256,
                            oakuk_image_progress_cb progress, oakuk_image_done_cb done, void *user_data,
                            oakuk_error **error) {
  return oakuk_image_cache_fetch_start(NULL, cache, url, sha256, progress, done, user_data, error);
}

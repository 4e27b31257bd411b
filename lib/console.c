/* Instance consoles as text (include/oakuk/console.h): one cleaner for every reader of a serial
 * log or container output, and the crash judgement on a console's end. */
#include "oakuk-private.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CRASH_WINDOW (64 * 1024)
/* A string sequence (OSC, DCS, ...) longer than this is taken for garbage, not a sequence: text
 * after a stray ESC ] must not vanish for good. */
#define MAX_STRING_SEQUENCE 4096

typedef enum {
  ESC_NONE,       /* text */
  ESC_START,      /* after ESC */
  ESC_CSI,        /* ESC [ ... until a final byte 0x40..0x7e */
  ESC_STRING,     /* OSC, DCS, SOS, PM, APC: until BEL or ST (ESC \) */
  ESC_STRING_ESC, /* ESC inside a string sequence: ST if '\' follows */
  ESC_INTER,      /* ESC + intermediate bytes 0x20..0x2f, until a final byte 0x30..0x7e */
} EscState;

struct oakuk_console {
  EscState esc;
  guint esc_len;  /* bytes of the string sequence so far */
  gboolean cr;    /* a '\r' is pending: a following '\n' belongs to it */
  guint8 utf8[4]; /* an incomplete UTF-8 character */
  guint utf8_len, utf8_need;
};

OAKUK_API oakuk_console *oakuk_console_new(void) {
  return g_new0(oakuk_console, 1);
}

OAKUK_API void oakuk_console_free(oakuk_console *c) {
  g_free(c);
}

static void put_replacement(GString *out) {
  g_string_append(out, "\xef\xbf\xbd");
}

/* A complete code point: C1 controls are dropped like C0 ones. */
static void put_char(GString *out, const guint8 *bytes, guint len) {
  gunichar u = g_utf8_get_char_validated((const char *)bytes, len);
  if (u == (gunichar)-1 || u == (gunichar)-2) {
    put_replacement(out);
    return;
  }
  if (u >= 0x80 && u <= 0x9f)
    return;
  g_string_append_len(out, (const char *)bytes, len);
}

/* Expected length of a UTF-8 character from its lead byte; 0 for a byte that cannot lead. */
static guint utf8_length(guint8 b) {
  if (b >= 0xc2 && b <= 0xdf)
    return 2;
  if (b >= 0xe0 && b <= 0xef)
    return 3;
  if (b >= 0xf0 && b <= 0xf4)
    return 4;
  return 0;
}

static void flush_utf8(oakuk_console *c, GString *out) {
  if (c->utf8_len > 0)
    put_replacement(out);
  c->utf8_len = c->utf8_need = 0;
}

/* One byte after an ESC; returns TRUE when it belonged to the sequence (FALSE: it is text or a
 * control of its own, and the sequence has ended). */
static gboolean escape_byte(oakuk_console *c, guint8 b) {
  switch (c->esc) {
  case ESC_START:
    if (b == '[')
      c->esc = ESC_CSI;
    else if (b == ']' || b == 'P' || b == 'X' || b == '^' || b == '_') {
      c->esc = ESC_STRING;
      c->esc_len = 0;
    } else if (b >= 0x20 && b <= 0x2f) {
      c->esc = ESC_INTER;
    } else {
      c->esc = ESC_NONE; /* a two-byte sequence such as ESC c, or a stray ESC before a control */
      return b >= 0x30 && b <= 0x7e;
    }
    return TRUE;
  case ESC_CSI:
    if (b >= 0x40 && b <= 0x7e)
      c->esc = ESC_NONE;
    else if (b < 0x20 && b != 0x1b)
      return TRUE; /* terminals execute C0 controls inside CSI; here they are dropped */
    else if (b == 0x1b)
      c->esc = ESC_START;
    return TRUE;
  case ESC_STRING:
    if (++c->esc_len > MAX_STRING_SEQUENCE) {
      c->esc = ESC_NONE;
      return FALSE;
    }
    if (b == 0x07)
      c->esc = ESC_NONE;
    else if (b == 0x1b)
      c->esc = ESC_STRING_ESC;
    return TRUE;
  case ESC_STRING_ESC: c->esc = b == '\\' ? ESC_NONE : ESC_STRING; return TRUE;
  case ESC_INTER:
    if (b < 0x20 || b > 0x7e) {
      c->esc = ESC_NONE;
      return FALSE;
    }
    if (b >= 0x30)
      c->esc = ESC_NONE;
    return TRUE;
  case ESC_NONE: break;
  }
  return FALSE;
}

static void feed(oakuk_console *c, GString *out, const guint8 *p, size_t len) {
  for (size_t k = 0; k < len; k++) {
    guint8 b = p[k];
    if (c->esc != ESC_NONE && escape_byte(c, b))
      continue;
    if (c->utf8_need > 0) {
      if ((b & 0xc0) == 0x80) {
        c->utf8[c->utf8_len++] = b;
        if (c->utf8_len == c->utf8_need) {
          put_char(out, c->utf8, c->utf8_len);
          c->utf8_len = c->utf8_need = 0;
        }
        continue;
      }
      flush_utf8(c, out); /* the character was cut: this byte starts something new */
    }
    if (c->cr) {
      c->cr = FALSE;
      g_string_append_c(out, '\n');
      if (b == '\n')
        continue;
    }
    if (b == 0x1b) {
      c->esc = ESC_START;
    } else if (b == '\r') {
      c->cr = TRUE;
    } else if (b == '\n' || b == '\t' || (b >= 0x20 && b < 0x7f)) {
      g_string_append_c(out, (char)b);
    } else if (b >= 0x80) {
      guint need = utf8_length(b);
      if (need == 0) {
        put_replacement(out);
      } else {
        c->utf8[0] = b;
        c->utf8_len = 1;
        c->utf8_need = need;
      }
    }
    /* other C0 controls, DEL: dropped */
  }
}

static char *steal_malloced(GString *s) {
  /* oakuk_free is free(): hand out malloc'ed memory. */
  char *r = malloc(s->len + 1);
  if (r)
    memcpy(r, s->str, s->len + 1);
  g_string_free(s, TRUE);
  return r;
}

OAKUK_API char *oakuk_console_feed(oakuk_console *c, const char *data, size_t len) {
  g_return_val_if_fail(c != NULL && (data != NULL || len == 0), NULL);
  GString *out = g_string_sized_new(len + 4);
  feed(c, out, (const guint8 *)data, len);
  return steal_malloced(out);
}

OAKUK_API char *oakuk_console_finish(oakuk_console *c) {
  g_return_val_if_fail(c != NULL, NULL);
  GString *out = g_string_new(NULL);
  flush_utf8(c, out);
  if (c->cr)
    g_string_append_c(out, '\n');
  c->cr = FALSE;
  c->esc = ESC_NONE;
  return steal_malloced(out);
}

/* The clean text of the last max_bytes of a file; *cut tells whether the window starts inside it. */
static char *read_clean_tail(const char *path, guint64 max_bytes, gboolean *cut, GError **error) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) {
    int e = errno;
    g_set_error(error, OAKUK_ERROR, e == ENOENT ? -OAKUK_ENOTFOUND : -OAKUK_EIO, "open %s: %s", path,
                g_strerror(e));
    return NULL;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    int e = errno;
    close(fd);
    g_set_error(error, OAKUK_ERROR, -OAKUK_EIO, "%s: %s", path, e ? g_strerror(e) : "not a regular file");
    return NULL;
  }
  guint64 size = (guint64)st.st_size;
  guint64 want = MIN(size, max_bytes);
  /* One byte more, before the window: whether the window starts a line. */
  guint64 extra = size > want ? 1 : 0;
  off_t start = (off_t)(size - want - extra);
  g_autofree guint8 *buf = g_malloc(want + extra + 1);
  gsize got = 0;
  while (got < want + extra) {
    ssize_t n = pread(fd, buf + got, want + extra - got, start + (off_t)got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    got += (gsize)n;
  }
  close(fd);
  gsize skip = MIN(got, extra);
  *cut = skip > 0 && buf[0] != '\n';
  oakuk_console c = {0};
  GString *out = g_string_sized_new(got + 4);
  feed(&c, out, buf + skip, got - skip);
  flush_utf8(&c, out);
  if (c.cr)
    g_string_append_c(out, '\n');
  return g_string_free(out, FALSE);
}

static gboolean is_blank(const char *s) {
  for (; *s; s++)
    if (!g_ascii_isspace(*s))
      return FALSE;
  return TRUE;
}

/* The lines of a file's tail window, the one cut by the window and the empty piece after a final
 * newline left out. */
static char **tail_lines(const char *path, guint64 max_bytes, GError **error) {
  gboolean cut = FALSE;
  g_autofree char *text = read_clean_tail(path, max_bytes, &cut, error);
  if (!text)
    return NULL;
  char **lines = g_strsplit(text, "\n", -1);
  guint n = g_strv_length(lines);
  if (n > 0 && lines[n - 1][0] == '\0') {
    g_free(lines[n - 1]);
    lines[--n] = NULL;
  }
  if (cut && n > 0) {
    g_free(lines[0]);
    memmove(lines, lines + 1, n * sizeof(char *));
  }
  return lines;
}

OAKUK_API int oakuk_console_tail(char **text_out, const char *path, uint32_t max_lines, uint64_t max_bytes,
                                 uint32_t flags, oakuk_error **error) {
  g_return_val_if_fail(text_out != NULL && path != NULL, OAKUK_EINVAL);
  GError *err = NULL;
  g_auto(GStrv) lines = tail_lines(path, max_bytes, &err);
  if (!lines)
    return oakuk_propagate_gerror(error, err);
  g_autoptr(GPtrArray) keep = g_ptr_array_new();
  for (gint i = (gint)g_strv_length(lines) - 1; i >= 0 && keep->len < max_lines; i--) {
    if (flags & OAKUK_CONSOLE_STRIP)
      g_strstrip(lines[i]);
    if ((flags & OAKUK_CONSOLE_SKIP_EMPTY) && is_blank(lines[i]))
      continue;
    g_ptr_array_insert(keep, 0, lines[i]);
  }
  g_ptr_array_add(keep, NULL);
  GString *joined = g_string_new(NULL);
  for (guint i = 0; keep->pdata[i]; i++)
    g_string_append_printf(joined, "%s%s", i ? "\n" : "", (char *)keep->pdata[i]);
  *text_out = steal_malloced(joined);
  return *text_out ? 0 : oakuk_set_error(error, OAKUK_EGENERIC, ENOMEM, NULL, "out of memory");
}

/* ---- crash judgement ---- */

OAKUK_API int32_t oakuk_console_line_crash(const char *line) {
  g_return_val_if_fail(line != NULL, OAKUK_CONSOLE_CRASH_NONE);
  /* Unikraft prefixes every critical message with "CRIT:" (crashes, failed assertions, traps); an
   * error of libukboot ("Init function at 0x... returned error -1") ends the boot. */
  static const char *const unikraft[] = {"CRIT:", "Unhandled Trap", "Assertion failure", "ERR:  [libukboot]"};
  /* "panic" alone would match a kernel command line echoing "panic=-1". */
  static const char *const linux_markers[] = {"Kernel panic", "Oops:", "BUG: ", "general protection fault",
                                              "Unable to handle kernel"};
  for (size_t k = 0; k < G_N_ELEMENTS(unikraft); k++)
    if (strstr(line, unikraft[k]))
      return OAKUK_CONSOLE_CRASH_UNIKRAFT;
  for (size_t k = 0; k < G_N_ELEMENTS(linux_markers); k++)
    if (strstr(line, linux_markers[k]))
      return OAKUK_CONSOLE_CRASH_LINUX;
  return OAKUK_CONSOLE_CRASH_NONE;
}

/* Rank of a crash line as the one that names the crash: lower is better. */
static int crash_rank(const char *line) {
  if (strstr(line, "Kernel panic"))
    return 0;
  if (strstr(line, "Unhandled Trap") || strstr(line, "Assertion failure"))
    return 1;
  if (strstr(line, "CRIT:"))
    return 2;
  return 3;
}

OAKUK_API int32_t oakuk_console_crash(char **line_out, const char *path) {
  g_return_val_if_fail(path != NULL, OAKUK_CONSOLE_CRASH_NONE);
  if (line_out)
    *line_out = NULL;
  g_auto(GStrv) lines = tail_lines(path, CRASH_WINDOW, NULL);
  if (!lines)
    return OAKUK_CONSOLE_CRASH_NONE;
  int32_t kind = OAKUK_CONSOLE_CRASH_NONE;
  const char *best = NULL;
  int best_rank = 99;
  for (char **l = lines; *l; l++) {
    int32_t k = oakuk_console_line_crash(*l);
    if (k == OAKUK_CONSOLE_CRASH_NONE)
      continue;
    if (kind == OAKUK_CONSOLE_CRASH_NONE || k == OAKUK_CONSOLE_CRASH_LINUX)
      kind = k;
    int rank = crash_rank(*l);
    /* The first of the best rank, except that a later "Kernel panic" line is the final word. */
    if (rank < best_rank || (rank == 0 && best_rank == 0)) {
      best = *l;
      best_rank = rank;
    }
  }
  if (best && line_out) {
    g_autofree char *s = g_strstrip(g_strdup(best));
    *line_out = strdup(s);
  }
  return kind;
}

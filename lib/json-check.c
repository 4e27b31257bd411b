/* The one guard in front of every JSON parser (json-glib 1.6 recurses, accepts single quotes and
 * comments, leaks on lone surrogates and silently takes trailing data): a strict, iterative RFC 8259
 * scanner that names the line, column and JSON path of the first fault. */
#include "oakuk-private.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#define NUMBER_MAX_CHARS 255
#define KEY_SHOWN_MAX 48

typedef enum { FRAME_ARRAY, FRAME_OBJECT } FrameKind;

typedef struct {
  FrameKind kind;
  gboolean started; /* arrays: an element has begun; objects: a member name was read */
  guint32 index;    /* arrays: the current element */
  size_t key_at;    /* objects: the current member name as written, without its quotes */
  size_t key_len;
} Frame;

typedef enum {
  EXPECT_VALUE,
  EXPECT_FIRST_ELEMENT, /* after '[': a value or ']' */
  EXPECT_FIRST_MEMBER,  /* after '{': a name or '}' */
  EXPECT_MEMBER,        /* after ',' in an object: a name */
  EXPECT_COLON,
  AFTER_VALUE,
} State;

typedef struct {
  const char *s;
  size_t len;
  size_t i;
  GArray *stack; /* Frame */
  guint max_depth;
  OakukJsonFault *fault;
} Scan;

static Frame *top(Scan *sc) {
  return sc->stack->len ? &g_array_index(sc->stack, Frame, sc->stack->len - 1) : NULL;
}

static void append_key(GString *path, const char *key, size_t len) {
  if (path->len)
    g_string_append_c(path, '.');
  if (len <= KEY_SHOWN_MAX) {
    g_string_append_len(path, key, (gssize)len);
    return;
  }
  const char *end = key + KEY_SHOWN_MAX;
  while (end > key && ((guchar)*end & 0xC0) == 0x80)
    end--;
  g_string_append_len(path, key, end - key);
  g_string_append(path, "…");
}

static char *path_of(Scan *sc) {
  GString *path = g_string_new(NULL);
  for (guint d = 0; d < sc->stack->len; d++) {
    Frame *f = &g_array_index(sc->stack, Frame, d);
    if (!f->started)
      break;
    if (f->kind == FRAME_ARRAY)
      g_string_append_printf(path, "[%u]", f->index);
    else
      append_key(path, sc->s + f->key_at, f->key_len);
  }
  return g_string_free(path, FALSE);
}

static void where(const char *s, size_t offset, guint *line, guint *column) {
  *line = 1;
  *column = 1;
  for (size_t i = 0; i < offset; i++) {
    if (s[i] == '\n') {
      (*line)++;
      *column = 1;
    } else if (((guchar)s[i] & 0xC0) != 0x80) {
      (*column)++;
    }
  }
}

static gboolean fail(Scan *sc, size_t offset, const char *fmt, ...) G_GNUC_PRINTF(3, 4);

static gboolean fail(Scan *sc, size_t offset, const char *fmt, ...) {
  OakukJsonFault *f = sc->fault;
  va_list ap;
  va_start(ap, fmt);
  f->what = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  f->offset = offset;
  where(sc->s, MIN(offset, sc->len), &f->line, &f->column);
  f->path = path_of(sc);
  return FALSE;
}

static const char *expected_name(State st, Frame *f) {
  switch (st) {
  case EXPECT_VALUE: return "a value";
  case EXPECT_FIRST_ELEMENT: return "a value or ']'";
  case EXPECT_FIRST_MEMBER: return "a member name in double quotes or '}'";
  case EXPECT_MEMBER: return "a member name in double quotes";
  case EXPECT_COLON: return "':' after the member name";
  case AFTER_VALUE: return f && f->kind == FRAME_ARRAY ? "',' or ']'" : "',' or '}'";
  }
  return "";
}

static gboolean unexpected(Scan *sc, State st) {
  guchar c = (guchar)sc->s[sc->i];
  Frame *f = top(sc);
  if (c == '\'')
    return fail(sc, sc->i, "single quotes are not JSON");
  if (c == '/' || c == '#')
    return fail(sc, sc->i, "comments are not JSON");
  if (st == AFTER_VALUE && f == NULL)
    return fail(sc, sc->i, "unexpected data after the top-level %s",
                sc->s[sc->fault->offset] == '{' ? "object" : "value");
  if (c < 0x20 || c >= 0x7F)
    return fail(sc, sc->i, "unexpected byte 0x%02x, expected %s", c, expected_name(st, f));
  return fail(sc, sc->i, "unexpected '%c', expected %s", c, expected_name(st, f));
}

static int hex4(const char *s, size_t len, size_t at) {
  if (at + 4 > len)
    return -1;
  int v = 0;
  for (size_t k = at; k < at + 4; k++) {
    int d = g_ascii_xdigit_value(s[k]);
    if (d < 0)
      return -1;
    v = v * 16 + d;
  }
  return v;
}

/* A \u escape at s[i] (the backslash); returns the bytes it spans, 0 when malformed. */
static size_t unicode_escape(Scan *sc, size_t i, int *cp) {
  *cp = hex4(sc->s, sc->len, i + 2);
  if (*cp < 0 || (*cp >= 0xDC00 && *cp <= 0xDFFF))
    return 0;
  if (*cp < 0xD800 || *cp > 0xDBFF)
    return 6;
  if (i + 8 > sc->len || sc->s[i + 6] != '\\' || sc->s[i + 7] != 'u')
    return 0;
  int low = hex4(sc->s, sc->len, i + 8);
  return low >= 0xDC00 && low <= 0xDFFF ? 12 : 0;
}

static gboolean scan_string(Scan *sc) {
  size_t start = sc->i++;
  while (sc->i < sc->len) {
    guchar c = (guchar)sc->s[sc->i];
    if (c == '"') {
      sc->i++;
      return TRUE;
    }
    if (c < 0x20)
      return fail(sc, sc->i, "raw control character 0x%02x in a string (JSON writes it \\u%04x)", c, c);
    if (c != '\\') {
      sc->i++;
      continue;
    }
    if (sc->i + 1 >= sc->len)
      break;
    char e = sc->s[sc->i + 1];
    if (e == 'u') {
      int cp;
      size_t n = unicode_escape(sc, sc->i, &cp);
      if (n == 0)
        return fail(sc, sc->i, "invalid \\u escape (4 hex digits; a UTF-16 surrogate needs its pair)");
      if (cp == 0)
        return fail(sc, sc->i, "\\u0000 (NUL) in a string is refused: the string would end there");
      sc->i += n;
    } else if (strchr("\"\\/bfnrt", e) != NULL && e != '\0') {
      sc->i += 2;
    } else if ((guchar)e < 0x20 || (guchar)e >= 0x7F) {
      return fail(sc, sc->i, "invalid escape '\\' followed by byte 0x%02x", (guchar)e);
    } else {
      return fail(sc, sc->i, "invalid escape '\\%c'", e);
    }
  }
  return fail(sc, start, "string never ends");
}

static gboolean digits(Scan *sc) {
  size_t from = sc->i;
  while (sc->i < sc->len && g_ascii_isdigit(sc->s[sc->i]))
    sc->i++;
  return sc->i > from;
}

static gboolean scan_number(Scan *sc) {
  size_t start = sc->i;
  gboolean integer = TRUE;
  if (sc->s[sc->i] == '-')
    sc->i++;
  if (sc->i < sc->len && sc->s[sc->i] == '0')
    sc->i++;
  else if (!digits(sc))
    return fail(sc, start, "invalid number (a digit must follow '-')");
  if (sc->i < sc->len && sc->s[sc->i] == '.') {
    sc->i++;
    integer = FALSE;
    if (!digits(sc))
      return fail(sc, start, "invalid number (a digit must follow '.')");
  }
  if (sc->i < sc->len && (sc->s[sc->i] == 'e' || sc->s[sc->i] == 'E')) {
    sc->i++;
    integer = FALSE;
    if (sc->i < sc->len && (sc->s[sc->i] == '+' || sc->s[sc->i] == '-'))
      sc->i++;
    if (!digits(sc))
      return fail(sc, start, "invalid number (a digit must follow the exponent)");
  }
  size_t n = sc->i - start;
  if (n > NUMBER_MAX_CHARS)
    return fail(sc, start, "number longer than %d characters", NUMBER_MAX_CHARS);
  char buf[NUMBER_MAX_CHARS + 1];
  memcpy(buf, sc->s + start, n);
  buf[n] = '\0';
  errno = 0;
  if (integer) {
    g_ascii_strtoll(buf, NULL, 10);
    if (errno == ERANGE)
      return fail(sc, start, "integer %s is out of range (64 bits)", buf);
  } else if (!isfinite(g_ascii_strtod(buf, NULL))) {
    return fail(sc, start, "number out of range");
  }
  return TRUE;
}

static gboolean scan_literal(Scan *sc, State st) {
  static const char *const words[] = {"true", "false", "null"};
  for (guint w = 0; w < G_N_ELEMENTS(words); w++) {
    size_t n = strlen(words[w]);
    if (words[w][0] == sc->s[sc->i] && n <= sc->len - sc->i && memcmp(sc->s + sc->i, words[w], n) == 0) {
      sc->i += n;
      return TRUE;
    }
  }
  return unexpected(sc, st);
}

static gboolean push(Scan *sc, FrameKind kind) {
  if (sc->stack->len >= sc->max_depth)
    return fail(sc, sc->i, "nests arrays/objects deeper than %u levels", sc->max_depth);
  Frame f = {.kind = kind};
  g_array_append_val(sc->stack, f);
  sc->i++;
  return TRUE;
}

/* Starts the value at s[i]; *st becomes what follows it. */
static gboolean scan_value(Scan *sc, State *st) {
  char c = sc->s[sc->i];
  if (strchr("{[\"-0123456789tfn", c) == NULL)
    return unexpected(sc, *st);
  Frame *f = top(sc);
  if (f && f->kind == FRAME_ARRAY)
    f->started = TRUE;
  if (c == '{' || c == '[') {
    *st = c == '{' ? EXPECT_FIRST_MEMBER : EXPECT_FIRST_ELEMENT;
    return push(sc, c == '{' ? FRAME_OBJECT : FRAME_ARRAY);
  }
  *st = AFTER_VALUE;
  if (c == '"')
    return scan_string(sc);
  if (c == '-' || g_ascii_isdigit(c))
    return scan_number(sc);
  return scan_literal(sc, EXPECT_VALUE);
}

static gboolean close_frame(Scan *sc, State *st) {
  g_array_set_size(sc->stack, sc->stack->len - 1);
  sc->i++;
  *st = AFTER_VALUE;
  return TRUE;
}

static gboolean step(Scan *sc, State *st) {
  char c = sc->s[sc->i];
  Frame *f = top(sc);
  switch (*st) {
  case EXPECT_FIRST_ELEMENT:
    if (c == ']')
      return close_frame(sc, st);
    G_GNUC_FALLTHROUGH;
  case EXPECT_VALUE: return scan_value(sc, st);
  case EXPECT_FIRST_MEMBER:
    if (c == '}')
      return close_frame(sc, st);
    G_GNUC_FALLTHROUGH;
  case EXPECT_MEMBER:
    if (c != '"')
      return unexpected(sc, *st);
    f->key_at = sc->i + 1;
    if (!scan_string(sc))
      return FALSE;
    f->key_len = sc->i - 1 - f->key_at;
    f->started = TRUE;
    *st = EXPECT_COLON;
    return TRUE;
  case EXPECT_COLON:
    if (c != ':')
      return unexpected(sc, *st);
    sc->i++;
    *st = EXPECT_VALUE;
    return TRUE;
  case AFTER_VALUE:
    if (f == NULL)
      return unexpected(sc, *st);
    if (c == (f->kind == FRAME_ARRAY ? ']' : '}'))
      return close_frame(sc, st);
    if (c != ',')
      return unexpected(sc, *st);
    sc->i++;
    if (f->kind == FRAME_ARRAY) {
      f->index++;
      *st = EXPECT_VALUE;
    } else {
      f->started = FALSE;
      *st = EXPECT_MEMBER;
    }
    return TRUE;
  }
  return FALSE;
}

static gboolean scan_document(Scan *sc) {
  const char *nul = memchr(sc->s, '\0', sc->len);
  if (nul)
    return fail(sc, (size_t)(nul - sc->s), "NUL byte at offset %zu", (size_t)(nul - sc->s));
  const char *bad = NULL;
  if (!g_utf8_validate_len(sc->s, sc->len, &bad))
    return fail(sc, (size_t)(bad - sc->s), "not valid UTF-8 (at byte offset %zu)", (size_t)(bad - sc->s));
  State st = EXPECT_VALUE;
  gboolean any = FALSE;
  for (;;) {
    while (sc->i < sc->len && strchr(" \t\r\n", sc->s[sc->i]) != NULL)
      sc->i++;
    if (sc->i >= sc->len)
      break;
    if (!any) {
      any = TRUE;
      sc->fault->offset = sc->i; /* where the top-level value starts, for the trailing-data message */
    }
    if (!step(sc, &st))
      return FALSE;
  }
  if (!any)
    return fail(sc, sc->len, "empty document");
  if (st != AFTER_VALUE || sc->stack->len > 0) {
    if (st == AFTER_VALUE)
      top(sc)->started = FALSE; /* the last value is complete: the fault is the container's */
    return fail(sc, sc->len, "document ends inside %s",
                sc->stack->len == 0            ? "a value"
                : top(sc)->kind == FRAME_ARRAY ? "an array"
                                               : "an object");
  }
  return TRUE;
}

gboolean oakuk_json_scan(const char *text, size_t len, guint max_depth, OakukJsonFault *fault) {
  g_return_val_if_fail(text != NULL || len == 0, FALSE);
  g_return_val_if_fail(fault != NULL, FALSE);
  memset(fault, 0, sizeof *fault);
  Scan sc = {.s = text ? text : "",
             .len = len,
             .stack = g_array_sized_new(FALSE, FALSE, sizeof(Frame), 16),
             .max_depth = max_depth ? max_depth : OAKUK_JSON_DEPTH_DEFAULT,
             .fault = fault};
  gboolean ok = scan_document(&sc);
  g_array_unref(sc.stack);
  if (ok)
    memset(fault, 0, sizeof *fault);
  return ok;
}

void oakuk_json_fault_clear(OakukJsonFault *fault) {
  g_clear_pointer(&fault->path, g_free);
  g_clear_pointer(&fault->what, g_free);
}

char *oakuk_json_fault_message(const OakukJsonFault *fault) {
  if (fault->path && *fault->path)
    return g_strdup_printf("<data>:%u:%u: %s (at %s)", fault->line, fault->column, fault->what, fault->path);
  return g_strdup_printf("<data>:%u:%u: %s", fault->line, fault->column, fault->what);
}

gboolean oakuk_json_precheck(const char *text, size_t len, GError **error) {
  g_return_val_if_fail(text != NULL || len == 0, FALSE);
  if (len > OAKUK_JSON_MAX_BYTES) {
    g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "document is %zu bytes; the limit is %d bytes", len,
                OAKUK_JSON_MAX_BYTES);
    return FALSE;
  }
  OakukJsonFault fault;
  if (oakuk_json_scan(text, len, OAKUK_JSON_MAX_DEPTH, &fault))
    return TRUE;
  g_autofree char *msg = oakuk_json_fault_message(&fault);
  g_set_error(error, OAKUK_ERROR, -OAKUK_EINVAL, "malformed JSON: %s", msg);
  oakuk_json_fault_clear(&fault);
  return FALSE;
}

OAKUK_API int oakuk_json_check(const char *text, size_t len, uint32_t max_depth, oakuk_error **error) {
  g_return_val_if_fail(text != NULL || len == 0, OAKUK_EINVAL);
  OakukJsonFault fault;
  if (oakuk_json_scan(text, len, max_depth, &fault))
    return OAKUK_OK;
  g_autofree char *msg = oakuk_json_fault_message(&fault);
  int rc = oakuk_set_error(error, OAKUK_EINVAL, 0, fault.path, "%s", msg);
  oakuk_json_fault_clear(&fault);
  return rc;
}

OAKUK_API char *oakuk_json_repair(const char *json, size_t len) {
  g_return_val_if_fail(json != NULL || len == 0, NULL);
  GString *out = g_string_sized_new(len + 1);
  gboolean in_string = FALSE, in_exponent = FALSE;
  for (size_t i = 0; i < len; i++) {
    guchar c = (guchar)json[i];
    if (in_string) {
      if (c < 0x20) {
        g_string_append_printf(out, "\\u%04x", c);
        continue;
      }
      g_string_append_c(out, (char)c);
      if (c == '"')
        in_string = FALSE;
      else if (c == '\\' && i + 1 < len)
        g_string_append_c(out, json[++i]);
      continue;
    }
    if (c == '"') {
      in_string = TRUE;
    } else if ((c == 'e' || c == 'E') && out->len > 0 && g_ascii_isdigit(out->str[out->len - 1])) {
      in_exponent = TRUE;
    } else if (in_exponent && c == '.' && i + 1 < len && json[i + 1] == '0' &&
               (i + 2 == len || !g_ascii_isdigit(json[i + 2]))) {
      /* json-glib's "1e+308.0": a fraction cannot follow an exponent. */
      i++;
      in_exponent = FALSE;
      continue;
    } else if (!g_ascii_isdigit(c) && c != '+' && c != '-') {
      in_exponent = FALSE;
    }
    g_string_append_c(out, (char)c);
  }
  return g_string_free(out, FALSE);
}

char *oakuk_json_node_to_string(JsonNode *node, gboolean pretty) {
  g_autoptr(JsonGenerator) gen = json_generator_new();
  json_generator_set_pretty(gen, pretty);
  json_generator_set_root(gen, node);
  gsize len = 0;
  g_autofree char *raw = json_generator_to_data(gen, &len);
  return oakuk_json_repair(raw, len);
}

JsonNode *oakuk_json_parse(const char *text, size_t len, GError **error) {
  if (!oakuk_json_precheck(text, len, error))
    return NULL;
  g_autoptr(JsonParser) parser = json_parser_new_immutable();
  if (!json_parser_load_from_data(parser, text, (gssize)len, error))
    return NULL;
  return json_parser_steal_root(parser);
}

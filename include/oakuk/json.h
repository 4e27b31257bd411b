#ifndef OAKUK_JSON_H
#define OAKUK_JSON_H

#if !defined(OAKUK_INSIDE_OAKUK_H) && !defined(OAKUK_COMPILATION)
#error "Only <oakuk/oakuk.h> can be included directly."
#endif

#include <oakuk/common.h>
#include <oakuk/error.h>

OAKUK_BEGIN_DECLS

/* The nesting every JSON entry point of the project accepts (arrays and objects). */
#define OAKUK_JSON_DEPTH_DEFAULT 64

/* Checks that text[0..len) is one strict RFC 8259 JSON value before any parser sees it: UTF-8,
 * no NUL byte, no single-quoted strings or comments, no raw control characters in strings, only
 * JSON escapes (\uXXXX with 4 hex digits, surrogates in pairs), no \u0000 in a string (C strings
 * would silently end there), numbers that fit (integers in 64 bits, finite doubles), nothing after
 * the value, and arrays/objects nested at most max_depth deep (0: OAKUK_JSON_DEPTH_DEFAULT).
 * Iterative: any input is checked in constant stack. Returns OAKUK_OK, or OAKUK_EINVAL with a
 * message "<data>:LINE:COLUMN: what" (" (at PATH)" appended inside a value) and the error's path
 * naming the value ("a.b[2]", "" at the top). */
OAKUK_API int oakuk_json_check(const char *text, size_t len, uint32_t max_depth, oakuk_error **error);

/* Returns a copy of JSON text written by json-glib's generator, repaired where json-glib 1.6 writes
 * invalid JSON: every raw control character (0x00-0x1F) inside a string is written \u00XX (it
 * writes 0x1F raw) and the ".0" it appends to a number with an exponent is dropped ("1e+308.0").
 * Text that is valid JSON comes back unchanged. Free with oakuk_free. */
OAKUK_API char *oakuk_json_repair(const char *json, size_t len);

OAKUK_END_DECLS

#endif

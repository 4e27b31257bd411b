/* Internal helpers shared by every module: the GError domain, conversion to oakuk_error, and
 * the validation problem collector. Not installed, not exported. */
#ifndef OAKUK_PRIVATE_H
#define OAKUK_PRIVATE_H

#include <glib.h>
#include <oakuk/oakuk.h>

G_BEGIN_DECLS

/* GError domain of the library; error codes are the positive values of OAKUK_E* (-code). */
#define OAKUK_ERROR (oakuk_error_quark())
GQuark oakuk_error_quark(void);

/* Sets *out (if out and *out is NULL) from a GError in OAKUK_ERROR (other domains map to
 * OAKUK_EGENERIC) and frees err. Returns the negative code, for `return propagate(...)`. */
int oakuk_propagate_gerror(oakuk_error **out, GError *err);

/* Builds an oakuk_error directly. path may be NULL. */
oakuk_error *oakuk_error_new_literal(int32_t code, int32_t errnum, const char *path, const char *message);
oakuk_error *oakuk_error_new_printf(int32_t code, int32_t errnum, const char *path, const char *fmt, ...)
    G_GNUC_PRINTF(4, 5);
/* Sets *out to a new error unless out is NULL or already set; returns code. */
int oakuk_set_error(oakuk_error **out, int32_t code, int32_t errnum, const char *path, const char *fmt, ...)
    G_GNUC_PRINTF(5, 6);

/* A list of validation problems, each a JSON path and a sentence. */
typedef struct {
  GPtrArray *paths;    /* char* */
  GPtrArray *messages; /* char* */
} OakukProblems;

void oakuk_problems_init(OakukProblems *p);
void oakuk_problems_clear(OakukProblems *p);
void oakuk_problems_add(OakukProblems *p, const char *path, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
guint oakuk_problems_count(const OakukProblems *p);
/* Moves the problems into an OAKUK_EINVAL error whose message is "<path>: <msg>" for a single
 * problem, or "<n> problems; first: <path>: <msg>" for several. Leaves p empty. */
oakuk_error *oakuk_problems_to_error(OakukProblems *p);
/* Ends a validation: TRUE when no problem was found; otherwise sets *error (if error is non-NULL
 * and *error unset) from the problems and returns FALSE. Either way p is cleared. */
gboolean oakuk_problems_finish(OakukProblems *p, oakuk_error **error);

/* Limits on every JSON document the library parses (descriptors, node reports, aggregates). */
#define OAKUK_JSON_MAX_BYTES (1024 * 1024)
#define OAKUK_JSON_MAX_DEPTH 64

/* Checks text[0..len) against the limits above before it reaches json-glib (whose recursive
 * parser must never see hostile nesting): rejects documents over OAKUK_JSON_MAX_BYTES and
 * arrays/objects nested deeper than OAKUK_JSON_MAX_DEPTH (brackets inside strings do not count).
 * Sets an OAKUK_EINVAL GError and returns FALSE on failure. */
gboolean oakuk_json_precheck(const char *text, size_t len, GError **error);

/* Defines an exported getter of an opaque object's field; a NULL object is a programmer error that
 * returns fallback. */
#define OAKUK_DEFINE_GETTER(rtype, name, otype, field, fallback)                                             \
  OAKUK_API rtype name(const otype *obj) {                                                                   \
    g_return_val_if_fail(obj != NULL, fallback);                                                             \
    return obj->field;                                                                                       \
  }

G_END_DECLS

#endif

/* Internal helpers shared by every module: the GError domain, conversion to oakuk_error, and
 * the validation problem collector. Not installed, not exported. */
#ifndef OAKUK_PRIVATE_H
#define OAKUK_PRIVATE_H

#include <glib.h>
#include <json-glib/json-glib.h>
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
#define OAKUK_JSON_MAX_DEPTH OAKUK_JSON_DEPTH_DEFAULT

/* The first fault oakuk_json_scan found: where (byte offset, 1-based line and column in characters),
 * the JSON path of the value it is in ("a.b[2]", "" at the top) and what is wrong. */
typedef struct {
  size_t offset;
  guint line;
  guint column;
  char *path;
  char *what;
} OakukJsonFault;

/* The strict check behind oakuk_json_check (lib/json-check.c); on failure fills *fault, which the
 * caller clears with oakuk_json_fault_clear. */
gboolean oakuk_json_scan(const char *text, size_t len, guint max_depth, OakukJsonFault *fault);
void oakuk_json_fault_clear(OakukJsonFault *fault);
/* "<data>:LINE:COLUMN: what" with " (at PATH)" when the fault is inside a value. */
char *oakuk_json_fault_message(const OakukJsonFault *fault);

/* Every JSON document the library parses passes here first (json-glib's recursive, lenient parser
 * must never see hostile text): over OAKUK_JSON_MAX_BYTES or failing oakuk_json_scan at
 * OAKUK_JSON_MAX_DEPTH sets an OAKUK_EINVAL GError "malformed JSON: <fault message>". */
gboolean oakuk_json_precheck(const char *text, size_t len, GError **error);

/* oakuk_json_precheck, then json-glib: the document's root (owned), or NULL with error set. */
JsonNode *oakuk_json_parse(const char *text, size_t len, GError **error);

/* json-glib's generator followed by oakuk_json_repair: what the library writes is valid
 * JSON whatever its strings hold. */
char *oakuk_json_node_to_string(JsonNode *node, gboolean pretty);

/* Defines an exported getter of an opaque object's field; a NULL object is a programmer error that
 * returns fallback. */
#define OAKUK_DEFINE_GETTER(rtype, name, otype, field, fallback)                                             \
  OAKUK_API rtype name(const otype *obj) {                                                                   \
    g_return_val_if_fail(obj != NULL, fallback);                                                             \
    return obj->field;                                                                                       \
  }

G_END_DECLS

#endif

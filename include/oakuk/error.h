#ifndef OAKUK_ERROR_H
#define OAKUK_ERROR_H

#include <oakuk/common.h>

OAKUK_BEGIN_DECLS

/* Return codes: 0 is success, failures are negative and stable (bindings map them to exceptions). */
#define OAKUK_OK 0
#define OAKUK_EGENERIC -1     /* anything not covered below */
#define OAKUK_EINVAL -2       /* invalid input: malformed JSON, a field that fails validation */
#define OAKUK_ENOTFOUND -3    /* a named object does not exist */
#define OAKUK_EEXISTS -4      /* the object exists already / conflicts with an existing one */
#define OAKUK_EIO -5          /* operating-system or network I/O failed (errno is set) */
#define OAKUK_ENOCAPACITY -6  /* scheduling found no qualified target or no capacity */
#define OAKUK_EUNSUPPORTED -7 /* the machine or build cannot do this */
#define OAKUK_ECANCELLED -8   /* the operation was cancelled */
#define OAKUK_ETIMEOUT -9     /* the operation timed out */
#define OAKUK_EVERIFY -10     /* an integrity check failed (digest, signature) */
#define OAKUK_EPERM -11       /* not permitted (authentication, authorization, unsafe content) */

/* An error: code, errno (0 when none), message, optional JSON path, and for validation failures a
 * list of every problem found (each with its own path and message). Opaque; free with
 * oakuk_error_free. Functions that fail set `*error` only if error is non-NULL and *error is NULL. */
typedef struct oakuk_error oakuk_error;

OAKUK_API int32_t oakuk_error_code(const oakuk_error *error);
OAKUK_API int32_t oakuk_error_errno(const oakuk_error *error);
/* Whole message, e.g. "applications[0].microservices[1].arch: 2 architectures but 1 code URL".
 * When there are several items, the message names the first and the count. Borrowed. */
OAKUK_API const char *oakuk_error_message(const oakuk_error *error);
/* JSON path of the (first) offending field, or NULL. Borrowed. */
OAKUK_API const char *oakuk_error_path(const oakuk_error *error);
/* Number of individual problems (0 when the error is not a validation error). */
OAKUK_API size_t oakuk_error_item_count(const oakuk_error *error);
/* Path ("" for the document itself) and sentence of problem i; NULL when out of range. Borrowed. */
OAKUK_API const char *oakuk_error_item_path(const oakuk_error *error, size_t i);
OAKUK_API const char *oakuk_error_item_message(const oakuk_error *error, size_t i);
OAKUK_API void oakuk_error_free(oakuk_error *error);

/* Stable symbolic name of a return code: "OAKUK_EINVAL", ...; "OAKUK_EUNKNOWN" for others. */
OAKUK_API const char *oakuk_status_name(int32_t code);

OAKUK_END_DECLS

#endif

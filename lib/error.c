#include "oakuk-private.h"

#include <string.h>

struct oakuk_error {
  int32_t code;
  int32_t errnum;
  char *message;
  char *path;
  GPtrArray *item_paths;    /* char*, may be NULL */
  GPtrArray *item_messages; /* char*, may be NULL */
};

/* The quark's name is the macro argument's spelling. */
/* clang-format off */
G_DEFINE_QUARK(oakuk-error-quark, oakuk_error)
/* clang-format on */

oakuk_error *oakuk_error_new_literal(int32_t code, int32_t errnum, const char *path, const char *message) {
  oakuk_error *e = g_new0(oakuk_error, 1);
  e->code = code < 0 ? code : OAKUK_EGENERIC;
  e->errnum = errnum;
  e->message = g_strdup(message ? message : "unknown error");
  e->path = g_strdup(path);
  return e;
}

oakuk_error *oakuk_error_new_printf(int32_t code, int32_t errnum, const char *path, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  return oakuk_error_new_literal(code, errnum, path, msg);
}

int oakuk_set_error(oakuk_error **out, int32_t code, int32_t errnum, const char *path, const char *fmt, ...) {
  if (out == NULL || *out != NULL)
    return code;
  va_list ap;
  va_start(ap, fmt);
  g_autofree char *msg = g_strdup_vprintf(fmt, ap);
  va_end(ap);
  *out = oakuk_error_new_literal(code, errnum, path, msg);
  return code;
}

int oakuk_propagate_gerror(oakuk_error **out, GError *err) {
  int32_t code = OAKUK_EGENERIC;
  if (err == NULL)
    return OAKUK_OK;
  if (err->domain == OAKUK_ERROR && err->code > 0)
    code = -err->code;
  if (out != NULL && *out == NULL)
    *out = oakuk_error_new_literal(code, 0, NULL, err->message);
  g_error_free(err);
  return code;
}

void oakuk_problems_init(OakukProblems *p) {
  p->paths = g_ptr_array_new_with_free_func(g_free);
  p->messages = g_ptr_array_new_with_free_func(g_free);
}

void oakuk_problems_clear(OakukProblems *p) {
  g_clear_pointer(&p->paths, g_ptr_array_unref);
  g_clear_pointer(&p->messages, g_ptr_array_unref);
}

void oakuk_problems_add(OakukProblems *p, const char *path, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  g_ptr_array_add(p->messages, g_strdup_vprintf(fmt, ap));
  va_end(ap);
  g_ptr_array_add(p->paths, g_strdup(path ? path : ""));
}

guint oakuk_problems_count(const OakukProblems *p) {
  return p->paths ? p->paths->len : 0;
}

oakuk_error *oakuk_problems_to_error(OakukProblems *p) {
  g_return_val_if_fail(oakuk_problems_count(p) > 0, NULL);
  const char *path0 = g_ptr_array_index(p->paths, 0);
  const char *msg0 = g_ptr_array_index(p->messages, 0);
  g_autofree char *first = *path0 ? g_strdup_printf("%s: %s", path0, msg0) : g_strdup(msg0);
  oakuk_error *e;
  if (p->paths->len == 1)
    e = oakuk_error_new_literal(OAKUK_EINVAL, 0, path0, first);
  else
    e = oakuk_error_new_printf(OAKUK_EINVAL, 0, path0, "%u problems; first: %s", p->paths->len, first);
  e->item_paths = g_steal_pointer(&p->paths);
  e->item_messages = g_steal_pointer(&p->messages);
  oakuk_problems_init(p);
  return e;
}

OAKUK_DEFINE_GETTER(int32_t, oakuk_error_code, oakuk_error, code, OAKUK_EGENERIC)

OAKUK_DEFINE_GETTER(int32_t, oakuk_error_errno, oakuk_error, errnum, 0)

OAKUK_DEFINE_GETTER(const char *, oakuk_error_message, oakuk_error, message, NULL)

OAKUK_DEFINE_GETTER(const char *, oakuk_error_path, oakuk_error, path, NULL)

OAKUK_API size_t oakuk_error_item_count(const oakuk_error *error) {
  g_return_val_if_fail(error != NULL, 0);
  return error->item_paths ? error->item_paths->len : 0;
}

OAKUK_API const char *oakuk_error_item_path(const oakuk_error *error, size_t i) {
  g_return_val_if_fail(error != NULL, NULL);
  if (error->item_paths == NULL || i >= error->item_paths->len)
    return NULL;
  return g_ptr_array_index(error->item_paths, i);
}

OAKUK_API const char *oakuk_error_item_message(const oakuk_error *error, size_t i) {
  g_return_val_if_fail(error != NULL, NULL);
  if (error->item_messages == NULL || i >= error->item_messages->len)
    return NULL;
  return g_ptr_array_index(error->item_messages, i);
}

OAKUK_API void oakuk_error_free(oakuk_error *error) {
  if (error == NULL)
    return;
  g_free(error->message);
  g_free(error->path);
  if (error->item_paths)
    g_ptr_array_unref(error->item_paths);
  if (error->item_messages)
    g_ptr_array_unref(error->item_messages);
  g_free(error);
}

OAKUK_API const char *oakuk_status_name(int32_t code) {
  switch (code) {
  case OAKUK_OK: return "OAKUK_OK";
  case OAKUK_EGENERIC: return "OAKUK_EGENERIC";
  case OAKUK_EINVAL: return "OAKUK_EINVAL";
  case OAKUK_ENOTFOUND: return "OAKUK_ENOTFOUND";
  case OAKUK_EEXISTS: return "OAKUK_EEXISTS";
  case OAKUK_EIO: return "OAKUK_EIO";
  case OAKUK_ENOCAPACITY: return "OAKUK_ENOCAPACITY";
  case OAKUK_EUNSUPPORTED: return "OAKUK_EUNSUPPORTED";
  case OAKUK_ECANCELLED: return "OAKUK_ECANCELLED";
  case OAKUK_ETIMEOUT: return "OAKUK_ETIMEOUT";
  case OAKUK_EVERIFY: return "OAKUK_EVERIFY";
  case OAKUK_EPERM: return "OAKUK_EPERM";
  default: return "OAKUK_EUNKNOWN";
  }
}

gboolean oakuk_problems_finish(OakukProblems *p, oakuk_error **error) {
  gboolean ok = oakuk_problems_count(p) == 0;
  if (!ok) {
    oakuk_error *e = oakuk_problems_to_error(p);
    if (error != NULL && *error == NULL)
      *error = e;
    else
      oakuk_error_free(e);
  }
  oakuk_problems_clear(p);
  return ok;
}

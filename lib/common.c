#include "oakuk-private.h"

#include <string.h>

OAKUK_API void oakuk_free(void *ptr) {
  g_free(ptr);
}

OAKUK_API const char *oakuk_version(void) {
  return G_STRINGIFY(OAKUK_VERSION_MAJOR) "." G_STRINGIFY(OAKUK_VERSION_MINOR) "." G_STRINGIFY(
      OAKUK_VERSION_MICRO);
}

OAKUK_API const char *oakuk_virt_name(int32_t virt) {
  switch (virt) {
  case OAKUK_VIRT_CONTAINER: return "container";
  case OAKUK_VIRT_UNIKERNEL: return "unikernel";
  default: return NULL;
  }
}

OAKUK_API int32_t oakuk_virt_from_name(const char *name) {
  if (name == NULL)
    return OAKUK_VIRT_NONE;
  if (strcmp(name, "container") == 0 || strcmp(name, "docker") == 0)
    return OAKUK_VIRT_CONTAINER;
  if (strcmp(name, "unikernel") == 0)
    return OAKUK_VIRT_UNIKERNEL;
  return OAKUK_VIRT_NONE;
}

OAKUK_API const char *oakuk_accel_name(int32_t accel) {
  switch (accel) {
  case OAKUK_ACCEL_KVM: return "kvm";
  case OAKUK_ACCEL_TCG: return "tcg";
  default: return NULL;
  }
}

OAKUK_API int32_t oakuk_accel_from_name(const char *name) {
  if (name == NULL)
    return OAKUK_ACCEL_NONE;
  if (strcmp(name, "kvm") == 0)
    return OAKUK_ACCEL_KVM;
  if (strcmp(name, "tcg") == 0)
    return OAKUK_ACCEL_TCG;
  return OAKUK_ACCEL_NONE;
}

OAKUK_API bool oakuk_arch_is_known(const char *name) {
  static const char *const known[] = {"amd64", "arm64", "arm", "riscv64"};
  if (name == NULL)
    return false;
  for (size_t i = 0; i < G_N_ELEMENTS(known); i++)
    if (strcmp(name, known[i]) == 0)
      return true;
  return false;
}

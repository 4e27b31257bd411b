#ifndef OAKUK_COMMON_H
#define OAKUK_COMMON_H

#if !defined(OAKUK_INSIDE_OAKUK_H) && !defined(OAKUK_COMPILATION)
#error "Only <oakuk/oakuk.h> can be included directly."
#endif

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define OAKUK_BEGIN_DECLS extern "C" {
#define OAKUK_END_DECLS }
#else
#define OAKUK_BEGIN_DECLS
#define OAKUK_END_DECLS
#endif

#if defined(OAKUK_COMPILATION) && defined(__GNUC__)
#define OAKUK_API __attribute__((visibility("default")))
#else
#define OAKUK_API
#endif

#define OAKUK_VERSION_MAJOR 0
#define OAKUK_VERSION_MINOR 1
#define OAKUK_VERSION_MICRO 0

OAKUK_BEGIN_DECLS

/* Frees memory the library allocated and handed to the caller (strings, arrays). NULL is a no-op. */
OAKUK_API void oakuk_free(void *ptr);

/* The library's version as "major.minor.micro"; static storage. */
OAKUK_API const char *oakuk_version(void);

/* Virtualization kinds (docs/architecture.md §4.2). Passed as int32_t, never as enum parameters. */
#define OAKUK_VIRT_NONE 0
#define OAKUK_VIRT_CONTAINER 1
#define OAKUK_VIRT_UNIKERNEL 2

/* Returns "container", "unikernel" or NULL. */
OAKUK_API const char *oakuk_virt_name(int32_t virt);
/* Accepts "container", "docker" (alias) and "unikernel"; returns OAKUK_VIRT_NONE otherwise. */
OAKUK_API int32_t oakuk_virt_from_name(const char *name);

/* Unikernel acceleration a node offers for an architecture. */
#define OAKUK_ACCEL_NONE 0
#define OAKUK_ACCEL_TCG 1
#define OAKUK_ACCEL_KVM 2

/* Returns "kvm", "tcg" or NULL (for NONE). */
OAKUK_API const char *oakuk_accel_name(int32_t accel);
/* Accepts "kvm" and "tcg"; returns OAKUK_ACCEL_NONE otherwise. */
OAKUK_API int32_t oakuk_accel_from_name(const char *name);

/* True when name is a GOARCH name the project knows: amd64, arm64, arm, riscv64. */
OAKUK_API bool oakuk_arch_is_known(const char *name);

OAKUK_END_DECLS

#endif

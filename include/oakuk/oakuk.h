/* liboakuk — run microservices on heterogeneous edge clusters as containers or unikernels.
 *
 * This umbrella header is the only one applications include. Every declaration below uses C99
 * types only, so the same API is usable from Python ctypes/cffi and other FFIs.
 */
#ifndef OAKUK_OAKUK_H
#define OAKUK_OAKUK_H

#define OAKUK_INSIDE_OAKUK_H
/* Each header needs the ones above it: */
/* clang-format off */
#include <oakuk/common.h>
#include <oakuk/error.h>
#include <oakuk/json.h>
#include <oakuk/descriptor.h>
#include <oakuk/model.h>
#include <oakuk/aggregate.h>
#include <oakuk/sched.h>
#include <oakuk/runtime.h>
#include <oakuk/image.h>
#include <oakuk/net.h>
#include <oakuk/qemu.h>
#include <oakuk/container.h>
#include <oakuk/console.h>
#include <oakuk/oci.h>
/* clang-format on */
#undef OAKUK_INSIDE_OAKUK_H

#endif

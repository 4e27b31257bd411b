#ifndef OAKUK_QEMU_H
#define OAKUK_QEMU_H

#include <oakuk/error.h>

OAKUK_BEGIN_DECLS

OAKUK_END_DECLS

#endif

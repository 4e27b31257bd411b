#ifndef OAKUK_RUNTIME_H
#define OAKUK_RUNTIME_H

#include <oakuk/error.h>

OAKUK_BEGIN_DECLS

OAKUK_END_DECLS

#endif

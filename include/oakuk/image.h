#ifndef OAKUK_IMAGE_H
#define OAKUK_IMAGE_H

#include <oakuk/error.h>

OAKUK_BEGIN_DECLS

OAKUK_END_DECLS

#endif

#ifndef OAKUK_NET_H
#define OAKUK_NET_H

#include <oakuk/error.h>

OAKUK_BEGIN_DECLS

OAKUK_END_DECLS

#endif

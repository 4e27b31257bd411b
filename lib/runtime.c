#include "oakuk-private.h"

/* Stand-in for <sys/malloc.h> in the userland harness: everything is in mockkern.h. */
#include "mockkern.h"

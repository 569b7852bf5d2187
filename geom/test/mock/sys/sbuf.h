/* Stand-in for <sys/sbuf.h> in the userland harness: everything is in mockkern.h. */
#include "mockkern.h"

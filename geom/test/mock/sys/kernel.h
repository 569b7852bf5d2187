/* Stand-in for <sys/kernel.h> in the userland harness: everything is in mockkern.h. */
#include "mockkern.h"

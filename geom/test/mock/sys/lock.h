/* Stand-in for <sys/lock.h> in the userland harness: everything is in mockkern.h. */
#include "mockkern.h"

/* Stand-in for <sys/sched.h> in the userland harness: everything is in mockkern.h. */
#include "mockkern.h"

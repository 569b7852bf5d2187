/* Stand-in for <sys/limits.h> in the userland harness: everything is in mockkern.h. */
#include "mockkern.h"

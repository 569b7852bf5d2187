/* Stand-in for <sys/param.h> in the userland harness: everything is in mockkern.h. */
#include "mockkern.h"

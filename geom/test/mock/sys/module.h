/* Stand-in for <sys/module.h> in the userland harness: everything is in mockkern.h. */
#include "mockkern.h"

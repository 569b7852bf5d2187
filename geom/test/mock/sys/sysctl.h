/* Stand-in for <sys/sysctl.h> in the userland harness: everything is in mockkern.h. */
#include "mockkern.h"

/* Stand-in for <sys/callout.h> in the userland harness: everything is in mockkern.h. */
#include "mockkern.h"

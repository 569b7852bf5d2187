/* Stand-in for <sys/proc.h> in the userland harness: everything is in mockkern.h. */
#include "mockkern.h"

/* Stand-in for <sys/mutex.h> in the userland harness: everything is in mockkern.h. */
#include "mockkern.h"

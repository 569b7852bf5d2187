/* Stand-in for <sys/kthread.h> in the userland harness: everything is in mockkern.h. */
#include "mockkern.h"

/* Stand-in for <sys/sx.h> in the userland harness: everything is in mockkern.h. */
#include "mockkern.h"

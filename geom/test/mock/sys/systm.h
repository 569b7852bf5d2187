/* Stand-in for <sys/systm.h> in the userland harness: everything is in mockkern.h. */
#include "mockkern.h"

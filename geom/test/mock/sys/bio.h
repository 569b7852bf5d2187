/* Stand-in for <sys/bio.h> in the userland harness: everything is in mockkern.h. */
#include "mockkern.h"

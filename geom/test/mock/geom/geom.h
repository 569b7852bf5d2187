/* Stand-in for <geom/geom.h> in the userland harness: everything is in mockkern.h. */
#include "mockkern.h"

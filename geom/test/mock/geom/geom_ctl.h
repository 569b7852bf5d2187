/* Stand-in for <geom/geom_ctl.h> in the userland harness: everything is in mockkern.h. */
#include "mockkern.h"

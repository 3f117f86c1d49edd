// local: a new agent process on this machine, started through /bin/sh so the
// bootstrap is exactly the one remote methods use.
#include "methods/method.h"

namespace spore {

LaunchSpec build_local(const LaunchInput &in) {
    LaunchSpec spec;
    spec.argv = in.boot_argv();
    return spec;
}

}  // namespace spore

// lxc: `lxc-attach --clear-env --name <container> -- <boot>`. Plain stdio:
// lxc-attach's own pty proxy would cap messages at a few KiB.
#include "methods/method.h"

namespace spore {

LaunchSpec build_lxc(const LaunchInput &in) {
    const cJSON *o = in.options;
    LaunchSpec spec;
    spec.argv = {opt_str(o, "lxc_attach_path", "lxc-attach"), "--clear-env", "--name", opt_required(o, "container", "lxc"),
                 "--"};
    auto boot = in.boot_argv();
    spec.argv.insert(spec.argv.end(), boot.begin(), boot.end());
    return spec;
}

}  // namespace spore

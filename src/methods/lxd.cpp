// lxd: `lxc exec --mode=non-interactive <container> -- <boot>`.
#include "methods/method.h"

namespace spore {

LaunchSpec build_lxd(const LaunchInput &in) {
    const cJSON *o = in.options;
    LaunchSpec spec;
    spec.argv = {opt_str(o, "lxc_path", "lxc"), "exec", "--mode=non-interactive", opt_required(o, "container", "lxd"), "--"};
    auto boot = in.boot_argv();
    spec.argv.insert(spec.argv.end(), boot.begin(), boot.end());
    return spec;
}

}  // namespace spore

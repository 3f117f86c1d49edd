// jail (FreeBSD): `jexec [-U user] <jail> <boot>`.
#include "methods/method.h"

namespace spore {

LaunchSpec build_jail(const LaunchInput &in) {
    const cJSON *o = in.options;
    LaunchSpec spec;
    spec.argv = {opt_str(o, "jexec_path", "/usr/sbin/jexec")};
    std::string user = opt_str(o, "username");
    if (!user.empty()) spec.argv.insert(spec.argv.end(), {"-U", user});
    spec.argv.push_back(opt_required(o, "container", "jail"));
    auto boot = in.boot_argv();
    spec.argv.insert(spec.argv.end(), boot.begin(), boot.end());
    return spec;
}

}  // namespace spore

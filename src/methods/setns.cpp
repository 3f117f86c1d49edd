// setns: enter the namespaces of a running process (a container's leader,
// or any pid) and run the first stage there. The master is multi-threaded
// and may not call setns() itself, so a spore-agent executable on this
// machine does it in a helper mode (agent --setns, see agent/setns_helper.cpp)
// and then runs /bin/sh inside the target's namespaces.
#include "core/error.h"
#include "methods/method.h"

namespace spore {

namespace {
const char *const kKinds[] = {"pid", "docker", "podman", "lxc", "lxd", "machinectl"};
}

LaunchSpec build_setns(const LaunchInput &in) {
    const cJSON *o = in.options;
    std::string kind = opt_str(o, "kind", opt_int(o, "pid", 0) > 0 ? "pid" : "");
    bool known = false;
    for (auto *k : kKinds) known = known || kind == k;
    if (!known)
        throw Error(SPORE_EINVAL, "method setns needs option 'kind' (pid, docker, podman, lxc, lxd or machinectl)");
    if (in.local_agent.empty()) throw Error(SPORE_EINVAL, "method setns: no local spore-agent executable to enter the namespaces with");
    LaunchSpec spec;
    spec.argv = {in.local_agent, "--setns", "kind=" + kind};
    if (kind == "pid") {
        int64_t pid = opt_int(o, "pid", 0);
        if (pid <= 0) throw Error(SPORE_EINVAL, "method setns with kind pid needs option 'pid'");
        spec.argv.push_back("pid=" + std::to_string(pid));
    } else {
        spec.argv.push_back("container=" + opt_required(o, "container", "setns"));
        static const char *const tools[][2] = {{"docker", "docker_path"},     {"podman", "podman_path"},
                                               {"lxc", "lxc_info_path"},      {"lxd", "lxc_path"},
                                               {"machinectl", "machinectl_path"}};
        for (auto &t : tools)
            if (kind == t[0]) {
                std::string def = kind == "lxc" ? "lxc-info" : kind == "lxd" ? "lxc" : kind;
                spec.argv.push_back(std::string("tool=") + opt_str(o, t[1], def));
            }
    }
    std::string user = opt_str(o, "username");
    if (!user.empty()) spec.argv.push_back("user=" + user);
    spec.argv.push_back("--");
    auto boot = in.boot_argv();
    spec.argv.insert(spec.argv.end(), boot.begin(), boot.end());
    return spec;
}

}  // namespace spore

// kubectl: `kubectl [kubectl_args] [--namespace N] exec -i <pod> [-c container] -- <boot>`.
// -i without -t: a terminal would not be 8-bit clean.
#include "core/shlex.h"
#include "methods/method.h"

namespace spore {

LaunchSpec build_kubectl(const LaunchInput &in) {
    const cJSON *o = in.options;
    LaunchSpec spec;
    spec.argv = {opt_str(o, "kubectl_path", "kubectl")};
    auto extra = option_words(o, "kubectl_args");
    spec.argv.insert(spec.argv.end(), extra.begin(), extra.end());
    std::string ns = opt_str(o, "namespace");
    if (!ns.empty()) spec.argv.push_back("--namespace=" + ns);
    spec.argv.insert(spec.argv.end(), {"exec", "-i", opt_required(o, "pod", "kubectl")});
    std::string container = opt_str(o, "container");
    if (!container.empty()) spec.argv.insert(spec.argv.end(), {"-c", container});
    spec.argv.push_back("--");
    auto boot = in.boot_argv();
    spec.argv.insert(spec.argv.end(), boot.begin(), boot.end());
    return spec;
}

}  // namespace spore

#include "methods/method.h"

namespace spore {

const MethodInfo *find_method(std::string_view name) {
    static const MethodInfo methods[] = {
        {"local", &build_local, false, {}},
        {"fork", &build_fork, true, {}},
    };
    for (const auto &m : methods)
        if (m.name == name) return &m;
    return nullptr;
}

const std::vector<CommonOption> &common_options() {
    static const std::vector<CommonOption> opts = {
        {"name", 's'},           {"connect_timeout", 'i'}, {"remote_name", 's'},
        {"agent_cache", 'b'},    {"agent_compress", 'b'},
    };
    return opts;
}

}  // namespace spore

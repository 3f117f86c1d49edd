// fork: an agent starts a copy of itself. Agents run worker threads, so a
// plain fork() could inherit locked mutexes; the copy is started from its
// executable instead (vfork + exec), which needs no image transfer and no
// first stage and still works when the agent's file was unlinked
// (/proc/<pid>/exe stays valid).
#include "core/error.h"
#include "core/image.h"
#include "core/shlex.h"
#include "methods/method.h"

namespace spore {

LaunchSpec build_fork(const LaunchInput &in) {
    if (!in.in_agent) throw Error(SPORE_EINVAL, "method 'fork' is only possible through an agent (use via)");
    LaunchSpec spec;
    spec.agent_direct = true;
    std::vector<std::string> prefix = option_words(in.options, "command_prefix");
    if (prefix.empty()) {
        spec.argv = {"/proc/self/exe"};
        return spec;
    }
    // Through a prefix, /proc/self/exe would name the prefix's program.
    bool operators = false;
    for (auto &w : prefix) operators = operators || is_shell_operator(w);
    if (operators) {
        // The agent's own argument is appended by the caller: sh passes it on as "$1".
        spec.argv = {"/bin/sh", "-c", join_for_shell(prefix) + " exec " + shell_quote(in.local_agent) + " \"$1\"", "sh"};
    } else {
        spec.argv = prefix;
        spec.argv.push_back(in.local_agent);
    }
    return spec;
}

}  // namespace spore

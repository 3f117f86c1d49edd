// fork: an agent starts a copy of itself. Agents run worker threads, so a
// plain fork() could inherit locked mutexes; the copy is started from
// /proc/self/exe instead (vfork + exec), which needs no image transfer and no
// first stage and still works when the agent's file was unlinked.
#include "core/error.h"
#include "methods/method.h"

namespace spore {

LaunchSpec build_fork(const LaunchInput &in) {
    if (!in.in_agent) throw Error(SPORE_EINVAL, "method 'fork' is only possible through an agent (use via)");
    LaunchSpec spec;
    spec.argv = {"/proc/self/exe"};
    spec.agent_direct = true;
    return spec;
}

}  // namespace spore

#include "agent/builtins.h"
#include "spore/version.h"

namespace spore::agent {

const char *agent_version() { return SPORE_VERSION_STRING; }

}  // namespace spore::agent

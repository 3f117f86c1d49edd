// machinectl: setns into a systemd-nspawn machine, whose leader pid
// `machinectl show --property=Leader <machine>` names ("Leader=<pid>").
#include <cstring>

#include "core/json.h"
#include "methods/method.h"

namespace spore {

LaunchSpec build_machinectl(const LaunchInput &in) {
    Json o(cJSON_Duplicate(in.options, 1));
    cJSON_AddStringToObject(o.get(), "kind", "machinectl");
    LaunchInput copy = in;
    copy.options = o.get();
    return build_setns(copy);
}

}  // namespace spore

// doas: `doas -u user -- <boot>`; doas reads a password from /dev/tty
// (hybrid terminal, as for sudo).
#include "core/error.h"
#include "methods/method.h"

namespace spore {

LaunchSpec build_doas(const LaunchInput &in) {
    const cJSON *o = in.options;
    LaunchSpec spec;
    spec.tty = TtyMode::Hybrid;
    spec.argv = {opt_str(o, "doas_path", "doas"), "-u", opt_str(o, "username", "root"), "--"};
    auto boot = in.boot_argv();
    spec.argv.insert(spec.argv.end(), boot.begin(), boot.end());
    spec.secrets = {{"password", opt_str(o, "password")}};
    PromptTable &t = spec.prompts;
    add_user_prompts(t, o);
    t.add_failure("doas: (authentication|authorization) failed", SPORE_EAUTH, "doas: incorrect password");
    t.add_failure("doas: operation not permitted", SPORE_EDENIED, "doas: no rule permits this user change");
    t.add_failure("doas: a password is required", SPORE_EPASSREQ, "doas: a password is required");
    t.add_failure("doas: unknown user", SPORE_EDENIED, "doas: unknown user");
    std::string prompt = opt_str(o, "password_prompt");
    if (!prompt.empty()) t.add_prompt(prompt + "[[:space:]]*$", "password");
    t.add_prompt("password:[[:space:]]*$", "password");
    return spec;
}

}  // namespace spore

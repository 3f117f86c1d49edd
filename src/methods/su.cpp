// su: `su user -c '<boot>'`. su wants a terminal on all of stdin, stdout
// and stderr (BSD su refuses a socket), so the whole launcher runs on a pty
// in raw mode and the agent's stream is that pty.
#include "core/error.h"
#include "methods/method.h"

namespace spore {

LaunchSpec build_su(const LaunchInput &in) {
    const cJSON *o = in.options;
    LaunchSpec spec;
    spec.tty = TtyMode::Full;
    spec.argv = {opt_str(o, "su_path", "su"), opt_str(o, "username", "root"), "-c", in.boot_command_line()};
    spec.secrets = {{"password", opt_str(o, "password")}};
    PromptTable &t = spec.prompts;
    add_user_prompts(t, o);
    t.add_failure("su: (sorry|authentication failure|incorrect password|permission denied)", SPORE_EAUTH,
                  "su: incorrect password");
    t.add_failure("authentication is denied", SPORE_EAUTH, "su: incorrect password");
    t.add_failure("su: user [^ ]+ does not exist", SPORE_EDENIED, "su: no such user");
    std::string prompt = opt_str(o, "password_prompt");
    if (!prompt.empty()) t.add_prompt(prompt + "[[:space:]]*$", "password");
    t.add_prompt("(password|passwort|contrase.a|mot de passe|senha|пароль|密码)[^\n]*:[[:space:]]*$", "password");
    return spec;
}

}  // namespace spore

// sys.ping, sys.echo, sys.getenv, sys.info.
#include <sys/utsname.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "agent/builtins_util.h"

extern char **environ;

namespace spore::agent::detail {

void sys_ping(const CallRequest &, CallReply &reply, Services &) {
    reply.result.reset(check(cJSON_CreateTrue()));
}

void sys_echo(const CallRequest &req, CallReply &reply, Services &) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(req.args, "value");
    reply.result.reset(check(v ? cJSON_Duplicate(v, true) : cJSON_CreateNull()));
    reply.data.assign(req.data.data(), req.data.size());
}

void sys_getenv(const CallRequest &req, CallReply &reply, Services &) {
    if (auto name = arg_opt_str(req, "name")) {
        const char *v = getenv(name->c_str());
        reply.result.reset(v ? json_string(v) : check(cJSON_CreateNull()));
        return;
    }
    Json obj = json_object();
    for (char **e = environ; e && *e; ++e) {
        const char *eq = strchr(*e, '=');
        if (!eq || eq == *e) continue;
        std::string key = utf8_sanitize(std::string_view(*e, size_t(eq - *e)));
        // getenv() returns the first of duplicated names; do the same.
        if (cJSON_GetObjectItemCaseSensitive(obj.get(), key.c_str())) continue;
        add_str(obj.get(), key.c_str(), eq + 1);
    }
    reply.result = std::move(obj);
}

void sys_info(const CallRequest &, CallReply &reply, Services &services) {
    Json obj = json_object();
    cJSON *o = obj.get();
    struct utsname un {};
    bool have_uname = ::uname(&un) == 0;

    std::optional<std::string> user, home, shell;
    if (auto pw = passwd_by_uid(getuid())) {
        user = pw->name;
        home = pw->home;
        shell = pw->shell;
    }
    if (!user)
        if (const char *v = getenv("USER")) user = v;
    if (!home)
        if (const char *v = getenv("HOME")) home = v;
    if (!shell)
        if (const char *v = getenv("SHELL")) shell = v;

    std::optional<std::string> cwd;
    if (char *p = getcwd(nullptr, 0)) {
        cwd = p;
        free(p);
    }

    add_str_or_null(o, "hostname", have_uname ? std::optional<std::string>(un.nodename)
                                              : std::nullopt);
    add_num(o, "pid", getpid());
    add_num(o, "ppid", getppid());
    add_num(o, "uid", getuid());
    add_num(o, "gid", getgid());
    add_num(o, "euid", geteuid());
    add_num(o, "egid", getegid());
    add_str_or_null(o, "user", user);
    add_str_or_null(o, "home", home);
    add_str_or_null(o, "shell", shell);
    add_str_or_null(o, "cwd", cwd);
    add_str(o, "os", have_uname ? un.sysname : "");
    add_str(o, "release", have_uname ? un.release : "");
    add_str(o, "arch", have_uname ? un.machine : "");
    add_str(o, "version", agent_version());
    add_str(o, "context", services.context_name());
    reply.result = std::move(obj);
}

}  // namespace spore::agent::detail

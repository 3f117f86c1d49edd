#include "session.h"

#include <errno.h>
#include <poll.h>
#include <time.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "failure.h"
#include "signals.h"

namespace spore::cli {

OptionsPtr new_options() {
    spore_options *o = nullptr;
    if (spore_options_new(&o) != SPORE_OK) lib_failure(kExitRuntime);
    return OptionsPtr(o);
}

const std::string &environment_password() {
    static const std::string pw = [] {
        std::string v;
        if (const char *e = std::getenv("SPORE_PASSWORD")) {
            v = e;
            explicit_bzero(const_cast<char *>(e), std::strlen(e));
            unsetenv("SPORE_PASSWORD");
        }
        return v;
    }();
    return pw;
}

Session::Session(const Global &g, int log_level, bool pump, size_t log_queue) : g_(g) {
    OptionsPtr opts = new_options();
    spore_options *o = opts.get();
    if (!g.daemon_path.empty() && !g.agent_path.empty())
        usage_error("--agent has no effect with --daemon: the daemon ships its own agent");
    if (!g.agent_path.empty() && spore_options_set_str(o, "agent_path", g.agent_path.c_str()) != SPORE_OK)
        lib_failure(kExitRuntime);
    if (spore_options_set_int(o, "log_level", log_level) != SPORE_OK ||
        spore_options_set_int(o, "log_queue_size", int64_t(log_queue)) != SPORE_OK)
        lib_failure(kExitRuntime);
    spore_router *router = nullptr;
    if (g.daemon_path.empty()) {
        if (spore_router_new(&router, o) != SPORE_OK) lib_failure(kExitRuntime);
    } else if (spore_router_attach(&router, g.daemon_path.c_str(), o) != SPORE_OK) {
        throw Failure{kExitConnect, "cannot use the daemon: " + error_text(spore_last_error())};
    }
    router_.reset(router);
    if (pump) pump_ = std::make_unique<LogPump>(router, g.verbose);
}

Session::~Session() {
    pump_.reset();
    for (auto it = contexts_.rbegin(); it != contexts_.rend(); ++it) spore_context_free(*it);
}

OptionsPtr Session::connect_options(const Hop &hop) const {
    OptionsPtr opts = new_options();
    spore_options *o = opts.get();
    set_hop_options(o, hop);
    const std::string &password = environment_password();
    if (!hop.has_option("password") && !password.empty() &&
        (hop.method == "ssh" || hop.method == "sudo" || hop.method == "su" || hop.method == "doas"))
        if (spore_options_set_str(o, "password", password.c_str()) != SPORE_OK) lib_failure(kExitUsage);
    if (g_.connect_timeout_ms && !hop.has_option("connect_timeout"))
        set_option(o, "connect_timeout", std::to_string(*g_.connect_timeout_ms));
    // Through a daemon, the same target is the same connection for every
    // command (unless the target says otherwise).
    if (!g_.daemon_path.empty() && !hop.has_option("reuse") && spore_options_set_bool(o, "reuse", 1) != SPORE_OK)
        lib_failure(kExitRuntime);
    return opts;
}

spore_context *Session::open(const std::vector<Hop> &hops) {
    spore_context *via = nullptr;
    for (const Hop &hop : hops) {
        OptionsPtr opts = connect_options(hop);
        spore_context *ctx = nullptr;
        if (spore_connect(&ctx, router_.get(), hop.method.c_str(), opts.get(), via) != SPORE_OK) {
            const spore_error *e = spore_last_error();
            std::string where = via ? " through " + std::string(spore_context_name(via)) : "";
            throw Failure{exit_code_for_connect(e->code), "cannot open '" + hop.text + "'" + where + ": " + error_text(e)};
        }
        contexts_.push_back(ctx);
        via = ctx;
    }
    return via;
}

namespace {

int elapsed_ms(const timespec &since) {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    return int((now.tv_sec - since.tv_sec) * 1000 + (now.tv_nsec - since.tv_nsec) / 1000000);
}

}  // namespace

ResultPtr Session::call(spore_context *ctx, const char *fn, const std::string &args, const std::string &data) {
    spore_pending *pc = nullptr;
    if (spore_call_async(&pc, ctx, fn, args.c_str(), data.empty() ? nullptr : data.data(), data.size()) != SPORE_OK)
        lib_failure(exit_code_for_call(spore_last_error()->code));
    PendingPtr pending(pc);
    int cfd = spore_call_fd(pc);
    if (cfd < 0) lib_failure(kExitRuntime);

    SignalsReported reported;
    const int timeout = g_.call_timeout_ms;
    int left = timeout;
    for (;;) {
        pollfd p[2] = {{cfd, POLLIN, 0}, {interrupt_fd(), POLLIN, 0}};
        timespec t0{};
        clock_gettime(CLOCK_MONOTONIC, &t0);
        int n = poll(p, 2, timeout < 0 ? -1 : left);
        if (n < 0 && errno != EINTR) system_failure("poll");
        if (n > 0 && p[1].revents)
            if (int signo = take_interrupt()) throw Interrupted{signo};
        if (spore_call_done(pc)) break;
        if (timeout >= 0) {
            left -= elapsed_ms(t0);
            if (left <= 0)
                throw Failure{kExitTimeout, std::string("call of ") + fn + " in " + spore_context_name(ctx) +
                                                " timed out after " + std::to_string(timeout) + " ms"};
        }
    }
    spore_result *res = nullptr;
    if (spore_call_wait(pc, &res, 0) != SPORE_OK) lib_failure(exit_code_for_call(spore_last_error()->code));
    return ResultPtr(res);
}

}  // namespace spore::cli

// The extern "C" layer: argument checks, the exception firewall and the
// thread-local last error. Everything else lives in the core.
#include <atomic>
#include <cstdlib>
#include <thread>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include <climits>
#include <cmath>

#include "core/error.h"
#include "core/json.h"
#include "core/messages.h"
#include "core/options.h"
#include "controller/router.h"
#include "controller/process.h"
#include "controller/transfer.h"
#include "spore/spore.h"

using spore::Error;
using spore::ErrorInfo;

struct spore_router {
    std::shared_ptr<spore::Router> m;
    // Threads inside spore_router_next_log: spore_router_free wakes them and
    // waits for them to leave before the handle goes away.
    std::atomic<int> log_waiters{0};
};
struct spore_options {
    spore::Json j;
};
struct spore_process {
    std::shared_ptr<spore::Router> m;  // outlives the process handle's use of it
    std::unique_ptr<spore::RemoteProcess> p;
};
struct spore_context {
    std::shared_ptr<spore::Router> m;
    std::shared_ptr<spore::ContextState> c;
};
struct spore_pending {
    std::shared_ptr<spore::Router> m;
    std::shared_ptr<spore::PendingCall> pc;
    ErrorInfo err;
    spore_error view{};
    std::atomic<bool> finished{false};  // read by spore_call_done from any thread
};
struct spore_result {
    std::string json;
    std::string bin;
};
struct spore_chain {
    std::shared_ptr<spore::Router> m;
    std::shared_ptr<spore::ContextState> c;
    std::string id;
};
struct spore_log_record {
    spore::LogRecord r;
};

namespace {

struct LastError {
    ErrorInfo info;
    spore_error view{};
};

LastError &last_error() {
    thread_local LastError le;
    return le;
}

void fill_view(const ErrorInfo &info, spore_error &view) {
    view.code = info.code;
    view.message = info.message.c_str();
    view.remote_type = info.remote_type.c_str();
    view.context = info.context.c_str();
    view.function = info.function.c_str();
    view.traceback = info.traceback.c_str();
}

int set_error(ErrorInfo info) {
    auto &le = last_error();
    le.info = std::move(info);
    if (le.info.message.empty()) le.info.message = spore::error_code_text(le.info.code);
    fill_view(le.info, le.view);
    return le.info.code;
}

int set_error(int code, std::string msg) { return set_error(ErrorInfo{code, std::move(msg), "", "", ""}); }

// The exception firewall around every entry point.
template <typename Fn>
int guarded(Fn &&fn) noexcept {
    try {
        return fn();
    } catch (const Error &e) {
        return set_error(e.info());
    } catch (const std::bad_alloc &) {
        return set_error(SPORE_ENOMEM, "out of memory");
    } catch (const std::exception &e) {
        return set_error(SPORE_EINTERNAL, std::string("internal error: ") + e.what());
    } catch (...) {
        return set_error(SPORE_EUNKNOWN, "unknown internal error");
    }
}

#define SPORE_REQUIRE(cond, what) \
    do {                          \
        if (!(cond)) return set_error(SPORE_EINVAL, what); \
    } while (0)

// Every wait takes -1 (no limit) or a number of milliseconds; any other
// negative number is a mistake, not "forever".
int check_timeout(const char *function, int timeout_ms) {
    if (timeout_ms >= -1) return SPORE_OK;
    return set_error(SPORE_EINVAL, std::string(function) + ": timeout_ms must be -1 (no limit) or at least 0, not " +
                                       std::to_string(timeout_ms));
}

#define SPORE_REQUIRE_TIMEOUT(function, timeout_ms)                              \
    do {                                                                         \
        if (int rc_ = check_timeout(function, timeout_ms); rc_ != SPORE_OK) return rc_; \
    } while (0)

}  // namespace

namespace {
// Checks every key of opts against table (core/options.h) and hands each
// item to take(key, item). Errors: "<unknown> '<key>' (known: ...)" and
// "<scope> option '<key>' must be ...".
template <typename Take>
void take_options(const spore_options *opts, std::span<const spore::OptionSpec> table, const std::string &scope,
                  const std::string &unknown, Take &&take) {
    if (!opts) return;
    const cJSON *item;
    cJSON_ArrayForEach(item, opts->j.get()) {
        std::string key = item->string ? item->string : "";
        const spore::OptionSpec *spec = spore::find_option(table, key);
        if (!spec) {
            std::string known;
            for (const auto &s : table) known += (known.empty() ? "" : ", ") + std::string(s.key);
            throw spore::Error(SPORE_EINVAL, unknown + " '" + key + "' (known: " + known + ")");
        }
        spore::check_option(*spec, item, scope);
        take(key, item);
    }
}

// A list option's words: an array of strings, or one string as one word.
std::vector<std::string> string_list(const cJSON *item) {
    std::vector<std::string> out;
    if (cJSON_IsString(item)) {
        out.emplace_back(item->valuestring);
        return out;
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, item) {
        if (!cJSON_IsString(e)) throw spore::Error(SPORE_EINVAL, std::string("router option '") + item->string + "' must be a list of strings");
        out.emplace_back(e->valuestring);
    }
    return out;
}

// The log options of both spore_router_new and spore_router_attach;
// false for another key.
bool take_log_option(const std::string &key, const cJSON *item, spore::Router::Options &mo) {
    if (key == "log_level") mo.log_level = int(item->valuedouble);
    else if (key == "log_queue_size") mo.log_queue_size = size_t(item->valuedouble);
    else if (key == "log_queue_bytes") mo.log_queue_bytes = size_t(item->valuedouble);
    else return false;
    return true;
}
}  // namespace

extern "C" {

void spore_version(int *major, int *minor, int *patch) noexcept {
    if (major) *major = SPORE_VERSION_MAJOR;
    if (minor) *minor = SPORE_VERSION_MINOR;
    if (patch) *patch = SPORE_VERSION_PATCH;
}

const char *spore_version_string(void) noexcept { return SPORE_VERSION_STRING; }

const char *spore_strerror(int code) noexcept { return spore::error_code_text(code); }

const spore_error *spore_last_error(void) noexcept {
    auto &le = last_error();
    fill_view(le.info, le.view);
    return &le.view;
}

void spore_free(void *ptr) noexcept { std::free(ptr); }

// ---------------------------------------------------------------- options

int spore_options_new(spore_options **out) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(out, "spore_options_new: out is NULL");
        *out = nullptr;
        auto o = std::make_unique<spore_options>();
        o->j = spore::json_object();
        *out = o.release();
        return SPORE_OK;
    });
}

static int options_set(spore_options *opts, const char *key, cJSON *value) {
    spore::Json owned(value);
    SPORE_REQUIRE(opts && key && *key, "spore_options_set: options and a non-empty key are required");
    if (!owned) throw std::bad_alloc();
    cJSON_DeleteItemFromObjectCaseSensitive(opts->j.get(), key);
    cJSON_AddItemToObject(opts->j.get(), key, owned.release());
    return SPORE_OK;
}

int spore_options_set_str(spore_options *opts, const char *key, const char *value) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(value, "spore_options_set_str: value is NULL");
        return options_set(opts, key, cJSON_CreateString(value));
    });
}

int spore_options_add_str(spore_options *opts, const char *key, const char *value) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(opts && key && *key, "spore_options_add_str: options and a non-empty key are required");
        SPORE_REQUIRE(value, "spore_options_add_str: value is NULL");
        cJSON *list = cJSON_GetObjectItemCaseSensitive(opts->j.get(), key);
        if (!cJSON_IsArray(list)) {
            spore::Json fresh(cJSON_CreateArray());
            if (!fresh) throw std::bad_alloc();
            cJSON_DeleteItemFromObjectCaseSensitive(opts->j.get(), key);
            list = fresh.get();
            cJSON_AddItemToObject(opts->j.get(), key, fresh.release());
        }
        cJSON *item = cJSON_CreateString(value);
        if (!item) throw std::bad_alloc();
        cJSON_AddItemToArray(list, item);
        return SPORE_OK;
    });
}

int spore_options_set_int(spore_options *opts, const char *key, int64_t value) noexcept {
    return guarded([&]() -> int { return options_set(opts, key, cJSON_CreateNumber(double(value))); });
}

int spore_options_set_bool(spore_options *opts, const char *key, int value) noexcept {
    return guarded([&]() -> int { return options_set(opts, key, cJSON_CreateBool(value != 0)); });
}

void spore_options_free(spore_options *opts) noexcept { delete opts; }

namespace {
// The C view of one table (core/options.h): its strings are literals, so
// the pointers stay valid for the life of the process.
std::vector<spore_option_info> c_option_table(std::span<const spore::OptionSpec> table) {
    std::vector<spore_option_info> out;
    for (const auto &s : table) {
        const char *type = s.type == spore::OptionType::kString    ? "string"
                           : s.type == spore::OptionType::kInteger ? "integer"
                           : s.type == spore::OptionType::kBoolean ? "boolean"
                           : s.type == spore::OptionType::kList    ? "list"
                                                                   : "boolean or string";
        // A default-constructed string_view has no data: give C an empty string.
        out.push_back(spore_option_info{s.key.data(), type, s.min, s.max, s.fallback.empty() ? "" : s.fallback.data(),
                                        s.doc.empty() ? "" : s.doc.data()});
    }
    return out;
}
}  // namespace

size_t spore_option_table(const char *kind, const spore_option_info **out) noexcept {
    if (out) *out = nullptr;
    if (!kind || !out) return 0;
    try {
        static const std::vector<std::pair<std::string, std::vector<spore_option_info>>> tables = {
            {"router", c_option_table(spore::router_option_table())},
            {"attach", c_option_table(spore::attach_option_table())},
            {"connect", c_option_table(spore::connect_option_table())},
            {"transfer", c_option_table(spore::transfer_option_table())},
            {"process", c_option_table(spore::process_option_table())},
        };
        for (const auto &t : tables)
            if (t.first == kind) {
                *out = t.second.data();
                return t.second.size();
            }
    } catch (...) {
    }
    return 0;
}

// ----------------------------------------------------------------- router

int spore_router_new(spore_router **out, const spore_options *opts) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(out, "spore_router_new: out is NULL");
        *out = nullptr;
        spore::Router::Options mo;
        take_options(opts, spore::router_option_table(), "router", "unknown router option", [&](const std::string &key, const cJSON *item) {
            if (key == "agent_path") mo.agent_path = item->valuestring;
            else if (key == "max_message_size") mo.max_message_size = uint64_t(item->valuedouble);
            else if (key == "liveness_interval") mo.keepalive.interval_ms = int(item->valuedouble);
            else if (key == "liveness_count") mo.keepalive.count = int(item->valuedouble);
            else if (key == "module_path") mo.module_path = string_list(item);
            else if (key == "module_deny") mo.module_deny = string_list(item);
            else take_log_option(key, item, mo);
        });
        auto r = std::make_unique<spore_router>();
        r->m = spore::Router::create(std::move(mo));
        *out = r.release();
        return SPORE_OK;
    });
}

void spore_router_free(spore_router *router) noexcept {
    if (!router) return;
    try {
        router->m->close();
    } catch (...) {
    }
    while (router->log_waiters.load() > 0) std::this_thread::yield();
    delete router;
}

void spore_router_close(spore_router *router) noexcept {
    if (!router) return;
    try {
        router->m->close();
    } catch (...) {
    }
}

int spore_router_listen(spore_router *router, const char *path) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(router && path, "spore_router_listen: router and path are required");
        router->m->listen(path);
        return SPORE_OK;
    });
}

int spore_router_attach(spore_router **out, const char *path, const spore_options *opts) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(out && path, "spore_router_attach: out and path are required");
        *out = nullptr;
        spore::Router::Options mo;
        int timeout_ms = 10000;
        if (opts) {
            // The listener's own settings are named as such, not as unknown.
            for (const char *key : {"agent_path", "max_message_size", "liveness_interval", "liveness_count"})
                if (cJSON_GetObjectItemCaseSensitive(opts->j.get(), key))
                    return set_error(SPORE_EINVAL,
                                     "option '" + std::string(key) + "' is the listener's: an attached router has none");
        }
        take_options(opts, spore::attach_option_table(), "attach", "unknown attach option", [&](const std::string &key, const cJSON *item) {
            if (key == "connect_timeout") timeout_ms = int(item->valuedouble);
            else take_log_option(key, item, mo);
        });
        auto r = std::make_unique<spore_router>();
        r->m = spore::Router::attach(path, std::move(mo), timeout_ms);
        *out = r.release();
        return SPORE_OK;
    });
}

int spore_router_set_log_level(spore_router *router, int level) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(router, "spore_router_set_log_level: router is NULL");
        SPORE_REQUIRE(level >= 0 && level <= 100, "spore_router_set_log_level: level must be from 0 to 100");
        router->m->set_log_level(level);
        return SPORE_OK;
    });
}

int spore_router_next_log(spore_router *router, spore_log_record **out, int timeout_ms) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(router && out, "spore_router_next_log: router and out are required");
        SPORE_REQUIRE_TIMEOUT("spore_router_next_log", timeout_ms);
        *out = nullptr;
        spore::LogRecord r;
        router->log_waiters.fetch_add(1);
        int rc;
        try {
            rc = router->m->next_log(r, timeout_ms);
        } catch (...) {
            router->log_waiters.fetch_sub(1);
            throw;
        }
        router->log_waiters.fetch_sub(1);
        if (rc == SPORE_ETIMEDOUT) return set_error(rc, "no log record arrived within " + std::to_string(timeout_ms) + " ms");
        if (rc != SPORE_OK) return set_error(rc, "the router was freed and no log records remain");
        auto rec = std::make_unique<spore_log_record>();
        rec->r = std::move(r);
        *out = rec.release();
        return SPORE_OK;
    });
}

int spore_router_log_fd(spore_router *router) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(router, "spore_router_log_fd: router is NULL");
        return router->m->log_fd();
    });
}

uint64_t spore_router_dropped_logs(const spore_router *router) noexcept {
    return router ? router->m->dropped_logs() : 0;
}

// --------------------------------------------------------- Python modules

int spore_router_add_module(spore_router *router, const char *name, const char *filename, const void *data,
                            size_t len, int is_package) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(router && name, "spore_router_add_module: router and name are required");
        SPORE_REQUIRE(data || len == 0, "spore_router_add_module: data is NULL");
        std::string n = name;
        SPORE_REQUIRE(n == "__main__" || spore::valid_module_name(n),
                      "spore_router_add_module: '" + n.substr(0, 200) + "' is not a module name");
        std::string source(static_cast<const char *>(data), len);
        SPORE_REQUIRE(spore::valid_utf8(source), "spore_router_add_module: the source of " + n + " is not UTF-8");
        router->m->modules().add_module(n, filename ? filename : "", std::move(source), is_package != 0);
        return SPORE_OK;
    });
}

int spore_router_add_module_path(spore_router *router, const char *dir, int flags) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(router && dir && *dir, "spore_router_add_module_path: router and a directory are required");
        SPORE_REQUIRE((flags & ~SPORE_MODULE_PATH_ON_DEMAND) == 0, "spore_router_add_module_path: unknown flags");
        router->m->modules().add_path(dir, (flags & SPORE_MODULE_PATH_ON_DEMAND) == 0);
        return SPORE_OK;
    });
}

int spore_router_deny_module(spore_router *router, const char *name) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(router && name && *name, "spore_router_deny_module: router and a name are required");
        router->m->modules().deny(name);
        return SPORE_OK;
    });
}

uint64_t spore_router_module_stat(const spore_router *router, int which) noexcept {
    if (!router) return 0;
    auto st = router->m->modules().stats();
    switch (which) {
    case SPORE_MODULE_REQUESTS: return st.requests;
    case SPORE_MODULE_SENT: return st.modules_sent;
    case SPORE_MODULE_BYTES_SENT: return st.bytes_sent;
    case SPORE_MODULE_REFUSED: return st.refused;
    case SPORE_MODULE_WORKERS: return router->m->worker_sources_sent();
    default: return 0;
    }
}

// ------------------------------------------------------------ log records

const char *spore_log_record_context(const spore_log_record *rec) noexcept { return rec ? rec->r.context.c_str() : ""; }
uint32_t spore_log_record_context_id(const spore_log_record *rec) noexcept { return rec ? rec->r.context_id : 0; }
const char *spore_log_record_logger(const spore_log_record *rec) noexcept { return rec ? rec->r.logger.c_str() : ""; }
const char *spore_log_record_message(const spore_log_record *rec) noexcept { return rec ? rec->r.message.c_str() : ""; }
int spore_log_record_level(const spore_log_record *rec) noexcept { return rec ? rec->r.level : 0; }
double spore_log_record_time(const spore_log_record *rec) noexcept { return rec ? rec->r.time : 0.0; }
void spore_log_record_free(spore_log_record *rec) noexcept { delete rec; }

// --------------------------------------------------------------- contexts

int spore_connect(spore_context **out, spore_router *router, const char *method, const spore_options *opts,
                  spore_context *via) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(out && router && method, "spore_connect: out, router and method are required");
        *out = nullptr;
        if (via && via->m != router->m) return set_error(SPORE_EINVAL, "spore_connect: via belongs to another router");
        spore::Json o(opts ? cJSON_Duplicate(opts->j.get(), 1) : cJSON_CreateObject());
        if (!o) throw std::bad_alloc();
        auto c = router->m->connect(method, std::move(o), via ? via->c : nullptr);
        auto ctx = std::make_unique<spore_context>();
        ctx->m = router->m;
        ctx->c = std::move(c);
        *out = ctx.release();
        return SPORE_OK;
    });
}

int spore_context_find(spore_context **out, spore_router *router, const char *name) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(out && router && name, "spore_context_find: out, router and name are required");
        *out = nullptr;
        auto c = router->m->find_context_named(name);
        if (!c) return set_error(ErrorInfo{SPORE_ENOENT, std::string("no live context is named '") + name + "'", "", name, ""});
        auto ctx = std::make_unique<spore_context>();
        ctx->m = router->m;
        ctx->c = std::move(c);
        *out = ctx.release();
        return SPORE_OK;
    });
}

uint32_t spore_context_id(const spore_context *ctx) noexcept { return ctx ? ctx->c->id : 0; }
const char *spore_context_name(const spore_context *ctx) noexcept { return ctx ? ctx->c->name.c_str() : ""; }
int spore_context_alive(const spore_context *ctx) noexcept { return ctx && ctx->c->alive.load() ? 1 : 0; }

int spore_context_shutdown(spore_context *ctx, int timeout_ms) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(ctx, "spore_context_shutdown: ctx is NULL");
        SPORE_REQUIRE_TIMEOUT("spore_context_shutdown", timeout_ms);
        int rc = ctx->m->shutdown_context(ctx->c, timeout_ms);
        if (rc != SPORE_OK)
            return set_error(ErrorInfo{rc, ctx->c->name + " did not shut down within " + std::to_string(timeout_ms) + " ms",
                                       "", ctx->c->name, ""});
        return SPORE_OK;
    });
}

void spore_context_free(spore_context *ctx) noexcept { delete ctx; }

// ------------------------------------------------------------------ calls

static int make_result(spore_result **out, std::string json, std::string bin) {
    if (!out) return SPORE_OK;
    auto r = std::make_unique<spore_result>();
    r->json = json.empty() ? "null" : std::move(json);
    r->bin = std::move(bin);
    *out = r.release();
    return SPORE_OK;
}

int spore_call(spore_result **out, spore_context *ctx, const char *function, const char *args_json, const void *data,
               size_t len, int timeout_ms) noexcept {
    return guarded([&]() -> int {
        if (out) *out = nullptr;
        SPORE_REQUIRE(out && ctx && function, "spore_call: out, ctx and function are required");
        SPORE_REQUIRE_TIMEOUT("spore_call", timeout_ms);
        SPORE_REQUIRE(data || len == 0, "spore_call: data is NULL but len is not 0");
        auto r = ctx->m->call(ctx->c, function, args_json, data, len, "", timeout_ms);
        return make_result(out, std::move(r.first), std::move(r.second));
    });
}

namespace {
spore::TransferOptions transfer_options(const spore_options *opts) {
    return spore::parse_transfer_options(opts ? opts->j.get() : nullptr);
}
}  // namespace

int spore_put_file(spore_context *ctx, const char *local_path, const char *remote_path,
                   const spore_options *opts) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(ctx && local_path && remote_path && *local_path && *remote_path,
                      "spore_put_file: ctx, local_path and remote_path are required");
        spore::put_file(*ctx->m, ctx->c, local_path, remote_path, transfer_options(opts));
        return SPORE_OK;
    });
}

int spore_put_bytes(spore_context *ctx, const void *data, size_t len, const char *remote_path,
                    const spore_options *opts) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(ctx && remote_path && *remote_path, "spore_put_bytes: ctx and remote_path are required");
        SPORE_REQUIRE(data || len == 0, "spore_put_bytes: data is NULL but len is not 0");
        spore::put_bytes(*ctx->m, ctx->c, std::string_view(static_cast<const char *>(data), len), remote_path,
                         transfer_options(opts));
        return SPORE_OK;
    });
}

int spore_get_file(spore_context *ctx, const char *remote_path, const char *local_path,
                   const spore_options *opts) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(ctx && local_path && remote_path && *local_path && *remote_path,
                      "spore_get_file: ctx, remote_path and local_path are required");
        spore::get_file(*ctx->m, ctx->c, remote_path, local_path, transfer_options(opts));
        return SPORE_OK;
    });
}

int spore_put_tree(spore_context *ctx, const char *local_dir, const char *remote_dir,
                   const spore_options *opts) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(ctx && local_dir && remote_dir && *local_dir && *remote_dir,
                      "spore_put_tree: ctx, local_dir and remote_dir are required");
        spore::put_tree(*ctx->m, ctx->c, local_dir, remote_dir, transfer_options(opts));
        return SPORE_OK;
    });
}

int spore_get_tree(spore_context *ctx, const char *remote_dir, const char *local_dir,
                   const spore_options *opts) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(ctx && local_dir && remote_dir && *local_dir && *remote_dir,
                      "spore_get_tree: ctx, remote_dir and local_dir are required");
        spore::get_tree(*ctx->m, ctx->c, remote_dir, local_dir, transfer_options(opts));
        return SPORE_OK;
    });
}

int spore_get_bytes(spore_result **out, spore_context *ctx, const char *remote_path,
                    const spore_options *opts) noexcept {
    return guarded([&]() -> int {
        if (out) *out = nullptr;
        SPORE_REQUIRE(out && ctx && remote_path && *remote_path, "spore_get_bytes: out, ctx and remote_path are required");
        auto r = spore::get_bytes(*ctx->m, ctx->c, remote_path, transfer_options(opts));
        return make_result(out, std::move(r.first), std::move(r.second));
    });
}

int spore_proc_start(spore_process **out, spore_context *ctx, const char *args_json,
                     const spore_options *opts) noexcept {
    return guarded([&]() -> int {
        if (out) *out = nullptr;
        SPORE_REQUIRE(out && ctx, "spore_proc_start: out and ctx are required");
        uint64_t window = spore::kChanDefaultWindow;
        int timeout_ms = 60000;
        take_options(opts, spore::process_option_table(), "spore_proc_start", "spore_proc_start: unknown option",
                     [&](const std::string &key, const cJSON *item) {
                         if (key == "window") window = uint64_t(item->valuedouble);
                         else timeout_ms = int(item->valuedouble);
                     });
        auto h = std::make_unique<spore_process>();
        h->m = ctx->m;
        h->p = spore::RemoteProcess::start(*ctx->m, ctx->c, args_json, window, timeout_ms);
        *out = h.release();
        return SPORE_OK;
    });
}

int spore_process_write(spore_process *p, const void *data, size_t len, int timeout_ms) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(p && (data || len == 0), "spore_process_write: p is required, and data unless len is 0");
        SPORE_REQUIRE_TIMEOUT("spore_process_write", timeout_ms);
        spore::ErrorInfo e;
        int rc = p->p->write(static_cast<const char *>(data), len, timeout_ms, e);
        return rc == SPORE_OK ? rc : set_error(e);
    });
}

int spore_process_close_stdin(spore_process *p) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(p, "spore_process_close_stdin: p is NULL");
        spore::ErrorInfo e;
        int rc = p->p->close_stdin(e);
        return rc == SPORE_OK ? rc : set_error(e);
    });
}

int spore_process_read(spore_process *p, int fd, void *buf, size_t cap, int timeout_ms) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(p && (buf || cap == 0), "spore_process_read: p and buf are required");
        SPORE_REQUIRE_TIMEOUT("spore_process_read", timeout_ms);
        spore::ErrorInfo e;
        long n = p->p->read(fd, static_cast<char *>(buf), std::min<size_t>(cap, INT_MAX), timeout_ms, e);
        return n >= 0 ? int(n) : set_error(e);
    });
}

int spore_process_signal(spore_process *p, int signum) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(p, "spore_process_signal: p is NULL");
        spore::ErrorInfo e;
        int rc = p->p->signal(signum, e);
        return rc == SPORE_OK ? rc : set_error(e);
    });
}

int spore_process_resize(spore_process *p, int rows, int cols) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(p, "spore_process_resize: p is NULL");
        spore::ErrorInfo e;
        int rc = p->p->resize(rows, cols, e);
        return rc == SPORE_OK ? rc : set_error(e);
    });
}

int spore_process_wait(spore_process *p, int *exit_code, int *signal, int timeout_ms) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(p, "spore_process_wait: p is NULL");
        SPORE_REQUIRE_TIMEOUT("spore_process_wait", timeout_ms);
        spore::ErrorInfo e;
        int rc = p->p->wait(exit_code, signal, timeout_ms, e);
        return rc == SPORE_OK ? rc : set_error(e);
    });
}

long spore_process_pid(const spore_process *p) noexcept { return p ? p->p->pid() : -1; }

void spore_process_free(spore_process *p) noexcept {
    try {
        delete p;
    } catch (...) {
    }
}

int spore_call_async(spore_pending **out, spore_context *ctx, const char *function, const char *args_json,
                     const void *data, size_t len) noexcept {
    return guarded([&]() -> int {
        if (out) *out = nullptr;
        SPORE_REQUIRE(out && ctx && function, "spore_call_async: out, ctx and function are required");
        SPORE_REQUIRE(data || len == 0, "spore_call_async: data is NULL but len is not 0");
        auto call = std::make_unique<spore_pending>();
        call->m = ctx->m;
        call->pc = ctx->m->call_async(ctx->c, function, args_json, data, len, "", false);
        fill_view(call->err, call->view);
        *out = call.release();
        return SPORE_OK;
    });
}

int spore_call_no_reply(spore_context *ctx, const char *function, const char *args_json, const void *data,
                        size_t len) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(ctx && function, "spore_call_no_reply: ctx and function are required");
        SPORE_REQUIRE(data || len == 0, "spore_call_no_reply: data is NULL but len is not 0");
        ctx->m->call_async(ctx->c, function, args_json, data, len, "", true);
        return SPORE_OK;
    });
}

int spore_call_wait(spore_pending *call, spore_result **out, int timeout_ms) noexcept {
    return guarded([&]() -> int {
        if (out) *out = nullptr;
        SPORE_REQUIRE(call, "spore_call_wait: call is NULL");
        SPORE_REQUIRE_TIMEOUT("spore_call_wait", timeout_ms);
        if (call->finished) {
            if (call->err.code != SPORE_OK) return set_error(call->err);
            return set_error(SPORE_EINVAL, "spore_call_wait: the result was already taken");
        }
        bool timed_out = false;
        ErrorInfo e = spore::Router::wait_error(*call->pc, timeout_ms, &timed_out);
        if (timed_out) return set_error(e);
        call->finished = true;
        call->err = e;
        fill_view(call->err, call->view);
        if (e.code != SPORE_OK) return set_error(e);
        return make_result(out, call->pc->take_json(), call->pc->take_bin());
    });
}

int spore_call_done(const spore_pending *call) noexcept { return call && (call->finished || call->pc->done()) ? 1 : 0; }

int spore_call_fd(spore_pending *call) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(call, "spore_call_fd: call is NULL");
        int fd = call->pc->fd();
        if (fd < 0) return set_error(SPORE_EINTERNAL, std::string("eventfd: ") + std::strerror(errno));
        return fd;
    });
}

const spore_error *spore_call_error(const spore_pending *call) noexcept {
    static const spore_error none = {SPORE_EINVAL, "call is NULL", "", "", "", ""};
    if (!call) return &none;
    auto *c = const_cast<spore_pending *>(call);
    if (!c->finished.load() && c->pc->done()) c->err = c->pc->error();
    fill_view(c->err, c->view);
    return &c->view;
}

void spore_call_free(spore_pending *call) noexcept {
    if (!call) return;
    if (!call->pc->done()) call->m->forget(*call->pc);
    delete call;
}

// ----------------------------------------------------------------- chains

int spore_chain_new(spore_chain **out, spore_context *ctx) noexcept {
    return guarded([&]() -> int {
        if (out) *out = nullptr;
        SPORE_REQUIRE(out && ctx, "spore_chain_new: out and ctx are required");
        auto ch = std::make_unique<spore_chain>();
        ch->m = ctx->m;
        ch->c = ctx->c;
        ch->id = ctx->m->new_chain_id();
        *out = ch.release();
        return SPORE_OK;
    });
}

int spore_chain_call_no_reply(spore_chain *chain, const char *function, const char *args_json, const void *data,
                              size_t len) noexcept {
    return guarded([&]() -> int {
        SPORE_REQUIRE(chain && function, "spore_chain_call_no_reply: chain and function are required");
        SPORE_REQUIRE(data || len == 0, "spore_chain_call_no_reply: data is NULL but len is not 0");
        chain->m->call_async(chain->c, function, args_json, data, len, chain->id, true);
        return SPORE_OK;
    });
}

int spore_chain_call(spore_result **out, spore_chain *chain, const char *function, const char *args_json,
                     const void *data, size_t len, int timeout_ms) noexcept {
    return guarded([&]() -> int {
        if (out) *out = nullptr;
        SPORE_REQUIRE(out && chain && function, "spore_chain_call: out, chain and function are required");
        SPORE_REQUIRE_TIMEOUT("spore_chain_call", timeout_ms);
        SPORE_REQUIRE(data || len == 0, "spore_chain_call: data is NULL but len is not 0");
        auto r = chain->m->call(chain->c, function, args_json, data, len, chain->id, timeout_ms);
        return make_result(out, std::move(r.first), std::move(r.second));
    });
}

void spore_chain_free(spore_chain *chain) noexcept {
    if (!chain) return;
    try {
        if (chain->c->alive.load() && !chain->m->closing())
            chain->m->call_async(chain->c, "spore.forget_chain", nullptr, nullptr, 0, chain->id, true);
    } catch (...) {
        // The context is gone: its chain state went with it.
    }
    delete chain;
}

// ---------------------------------------------------------------- results

const char *spore_result_json(const spore_result *res) noexcept { return res ? res->json.c_str() : "null"; }

const void *spore_result_bytes(const spore_result *res, size_t *len) noexcept {
    if (!res || res->bin.empty()) {
        if (len) *len = 0;
        return nullptr;
    }
    if (len) *len = res->bin.size();
    return res->bin.data();
}

void spore_result_free(spore_result *res) noexcept { delete res; }

}  // extern "C"

#include "core/messages.h"

#include "core/error.h"

namespace spore {

std::optional<uint32_t> json_context_id(const cJSON *obj, const char *key) {
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : nullptr;
    if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > double(UINT32_MAX) ||
        v->valuedouble != double(uint32_t(v->valuedouble)))
        return std::nullopt;
    return uint32_t(v->valuedouble);
}

std::string InitMessage::encode() const {
    Json j = json_object();
    cJSON_AddNumberToObject(j.get(), "id", id);
    cJSON *pids = cJSON_AddArrayToObject(j.get(), "parent_ids");
    for (uint32_t p : parent_ids) cJSON_AddItemToArray(pids, cJSON_CreateNumber(p));
    cJSON_AddStringToObject(j.get(), "name", name.c_str());
    cJSON_AddNumberToObject(j.get(), "log_level", log_level);
    cJSON_AddNumberToObject(j.get(), "max_message_size", double(max_message_size));
    cJSON_AddBoolToObject(j.get(), "unidirectional", unidirectional);
    cJSON_AddNumberToObject(j.get(), "liveness_interval", liveness.interval_ms);
    cJSON_AddNumberToObject(j.get(), "liveness_count", liveness.count);
    if (!python_path.empty()) {
        cJSON *pp = cJSON_AddArrayToObject(j.get(), "python_path");
        for (const auto &w : python_path) cJSON_AddItemToArray(pp, cJSON_CreateString(w.c_str()));
    }
    return json_print(j.get());
}

std::optional<InitMessage> InitMessage::decode(std::string_view json, std::string *why) {
    std::string err;
    Json j = json_parse(json, kDefaultMaxJsonDepth, &err);
    auto id = j ? json_context_id(j.get()) : std::nullopt;
    if (!id) {
        *why = "malformed init message";
        return std::nullopt;
    }
    InitMessage m;
    m.id = *id;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j.get(), "parent_ids")) {
        if (cJSON_IsNumber(e) && e->valuedouble >= 0 && e->valuedouble <= double(UINT32_MAX))
            m.parent_ids.push_back(uint32_t(e->valuedouble));
    }
    if (m.parent_ids.empty()) {
        *why = "init message without parent ids";
        return std::nullopt;
    }
    m.name = json_str(j.get(), "name", "agent");
    m.log_level = int(json_int(j.get(), "log_level", m.log_level));
    int64_t max = json_int(j.get(), "max_message_size", int64_t(kDefaultMaxMessageSize));
    m.max_message_size = max < 4096 ? 4096 : uint64_t(max);
    m.unidirectional = json_bool(j.get(), "unidirectional", true);
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j.get(), "python_path")) {
        if (cJSON_IsString(e) && e->valuestring[0]) m.python_path.emplace_back(e->valuestring);
    }
    try {
        m.liveness = keepalive_from_options(j.get(), KeepaliveSettings{});
    } catch (const Error &) {
        // A parent's bad value leaves the default: liveness is never turned off by accident.
    }
    return m;
}

std::string RouteAdded::encode() const {
    Json j = json_object();
    cJSON_AddNumberToObject(j.get(), "id", id);
    cJSON_AddStringToObject(j.get(), "name", name.c_str());
    return json_print(j.get());
}

std::optional<RouteAdded> RouteAdded::decode(std::string_view json) {
    std::string err;
    Json j = json_parse(json, kDefaultMaxJsonDepth, &err);
    auto id = j ? json_context_id(j.get()) : std::nullopt;
    if (!id) return std::nullopt;
    return RouteAdded{*id, json_str(j.get(), "name")};
}

std::string LossNotice::encode() const {
    Json j = json_object();
    cJSON_AddNumberToObject(j.get(), "id", id);
    cJSON_AddStringToObject(j.get(), "reason", reason.c_str());
    if (code == SPORE_EUNRESPONSIVE) cJSON_AddStringToObject(j.get(), "code", "EUNRESPONSIVE");
    return json_print(j.get());
}

std::optional<LossNotice> LossNotice::decode(std::string_view json) {
    std::string err;
    Json j = json_parse(json, kDefaultMaxJsonDepth, &err);
    auto id = j ? json_context_id(j.get()) : std::nullopt;
    if (!id) return std::nullopt;
    LossNotice n;
    n.id = *id;
    n.reason = json_str(j.get(), "reason", "disconnected");
    n.code = json_str(j.get(), "code") == "EUNRESPONSIVE" ? SPORE_EUNRESPONSIVE : SPORE_EDISCONNECTED;
    return n;
}

bool valid_request_name(std::string_view name) {
    return name == "__main__" || name == kWorkerSourceName || valid_module_name(name);
}

bool valid_module_name(std::string_view name) {
    if (name.empty() || name.size() > 200) return false;
    bool part_start = true;
    for (char c : name) {
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        bool digit = c >= '0' && c <= '9';
        if (c == '.') {
            if (part_start) return false;
            part_start = true;
        } else if (alpha || (digit && !part_start)) {
            part_start = false;
        } else {
            return false;
        }
    }
    return !part_start;
}

std::string ModuleRequest::encode() const {
    Json j = json_object();
    cJSON *arr = cJSON_AddArrayToObject(j.get(), "names");
    for (const auto &n : names) cJSON_AddItemToArray(arr, cJSON_CreateString(n.c_str()));
    return json_print(j.get());
}

std::optional<ModuleRequest> ModuleRequest::decode(std::string_view json) {
    std::string err;
    Json j = json_parse(json, kDefaultMaxJsonDepth, &err);
    const cJSON *arr = j ? cJSON_GetObjectItemCaseSensitive(j.get(), "names") : nullptr;
    if (!cJSON_IsArray(arr)) return std::nullopt;
    ModuleRequest r;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        if (!cJSON_IsString(e) || r.names.size() >= kMaxModuleNames) return std::nullopt;
        r.names.emplace_back(e->valuestring);
    }
    if (r.names.empty()) return std::nullopt;
    return r;
}

void ModuleAnswer::encode(std::string &json, std::string &bin) const {
    Json j = json_object();
    cJSON *arr = cJSON_AddArrayToObject(j.get(), "modules");
    for (const auto &m : modules) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddItemToArray(arr, o);
        cJSON_AddStringToObject(o, "name", m.name.c_str());
        cJSON_AddBoolToObject(o, "found", m.found);
        if (!m.found) {
            cJSON_AddStringToObject(o, "reason", m.reason.c_str());
            continue;
        }
        cJSON_AddBoolToObject(o, "package", m.package);
        cJSON_AddStringToObject(o, "file", m.file.c_str());
        cJSON_AddStringToObject(o, "hash", m.hash.c_str());
        cJSON_AddNumberToObject(o, "offset", double(bin.size()));
        cJSON_AddNumberToObject(o, "length", double(m.source.size()));
        bin += m.source;
    }
    json = json_print(j.get());
}

std::optional<ModuleAnswer> ModuleAnswer::decode(std::string_view json, std::string_view bin, size_t max_entries) {
    std::string err;
    Json j = json_parse(json, kDefaultMaxJsonDepth, &err);
    const cJSON *arr = j ? cJSON_GetObjectItemCaseSensitive(j.get(), "modules") : nullptr;
    if (!cJSON_IsArray(arr)) return std::nullopt;
    ModuleAnswer a;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        if (!cJSON_IsObject(e) || a.modules.size() >= max_entries) return std::nullopt;
        ModuleEntry m;
        m.name = json_str(e, "name");
        if (!valid_request_name(m.name)) return std::nullopt;
        m.found = json_bool(e, "found", false);
        if (!m.found) {
            m.reason = json_str(e, "reason", "not found");
            a.modules.push_back(std::move(m));
            continue;
        }
        m.package = json_bool(e, "package", false);
        m.file = json_str(e, "file");
        m.hash = json_str(e, "hash");
        int64_t off = json_int(e, "offset", -1), len = json_int(e, "length", -1);
        if (off < 0 || len < 0 || uint64_t(off) > bin.size() || uint64_t(len) > bin.size() - uint64_t(off))
            return std::nullopt;
        m.source.assign(bin.substr(size_t(off), size_t(len)));
        a.modules.push_back(std::move(m));
    }
    return a;
}

}  // namespace spore

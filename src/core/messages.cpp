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

}  // namespace spore

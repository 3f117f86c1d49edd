#include "core/json.h"

#include <cmath>
#include <cstdlib>

namespace spore {

int json_depth(std::string_view text, int limit) {
    int depth = 0, max_depth = 0;
    bool in_string = false, escaped = false;
    for (char c : text) {
        if (in_string) {
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
            continue;
        }
        switch (c) {
        case '"': in_string = true; break;
        case '[': case '{':
            if (++depth > max_depth) {
                max_depth = depth;
                if (max_depth > limit) return limit + 1;
            }
            break;
        case ']': case '}': if (depth > 0) --depth; break;
        default: break;
        }
    }
    return max_depth;
}

Json json_parse(std::string_view text, int max_depth, std::string *err) {
    if (json_depth(text, max_depth) > max_depth) {
        if (err) *err = "JSON nested deeper than " + std::to_string(max_depth) + " levels";
        return nullptr;
    }
    const char *end = nullptr;
    Json j(cJSON_ParseWithLengthOpts(text.data(), text.size(), &end, 0));
    if (!j) {
        if (err) {
            size_t at = end ? size_t(end - text.data()) : 0;
            *err = "malformed JSON near byte " + std::to_string(at);
        }
        return nullptr;
    }
    // Only whitespace may follow the value.
    for (const char *p = end; p && p < text.data() + text.size(); ++p) {
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t' && *p != '\0') {
            if (err) *err = "trailing data after JSON value";
            return nullptr;
        }
    }
    return j;
}

std::string json_print(const cJSON *j) {
    if (!j) return "null";
    char *s = cJSON_PrintUnformatted(j);
    if (!s) throw std::bad_alloc();
    std::string out(s);
    cJSON_free(s);
    return out;
}

std::string json_str(const cJSON *obj, const char *key, std::string_view fallback) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (cJSON_IsString(v) && v->valuestring) return v->valuestring;
    return std::string(fallback);
}

int64_t json_int(const cJSON *obj, const char *key, int64_t fallback) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    // Casting a double outside the int64_t range is undefined behaviour, so
    // out-of-range numbers (e.g. 1e300 from a peer) get the fallback too.
    if (cJSON_IsNumber(v) && std::isfinite(v->valuedouble) && v->valuedouble >= -0x1p63 &&
        v->valuedouble < 0x1p63)
        return int64_t(v->valuedouble);
    return fallback;
}

bool json_bool(const cJSON *obj, const char *key, bool fallback) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (cJSON_IsBool(v)) return cJSON_IsTrue(v);
    return fallback;
}

Json json_object() {
    Json j(cJSON_CreateObject());
    if (!j) throw std::bad_alloc();
    return j;
}

}  // namespace spore

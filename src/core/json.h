// RAII ownership of cJSON documents and parsing with the protocol's limits.
#pragma once

#include <cjson/cJSON.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace spore {

struct JsonDeleter {
    void operator()(cJSON *j) const noexcept { cJSON_Delete(j); }
};
using Json = std::unique_ptr<cJSON, JsonDeleter>;

inline constexpr int kDefaultMaxJsonDepth = 64;

// The checks every JSON text that crosses a stream passes before anyone
// parses it, in one linear scan: well-formed UTF-8 (no overlong forms, no
// surrogates, nothing above U+10FFFF), no NUL either raw or escaped
// (\u0000, which C strings and cJSON would silently cut short), no lone
// escaped surrogate, and nesting at most max_depth deep. So no binding's
// parser can be crashed or misled by what a child sends. Returns an empty
// string when the text passes, else the reason.
std::string json_text_problem(std::string_view text, int max_depth);

// True if s is well-formed UTF-8 without NUL bytes.
bool valid_utf8(std::string_view s);

// Parses text as one JSON value, after json_text_problem (so hostile input
// such as "[[[[..." never recurses). Returns null and sets *err on failure.
Json json_parse(std::string_view text, int max_depth, std::string *err);

// Deepest nesting of arrays/objects in text (strings are skipped); stops
// counting once limit is exceeded and returns limit + 1.
int json_depth(std::string_view text, int limit);

// Compact text of a value.
std::string json_print(const cJSON *j);
// Compact text with the members of every object sorted by name: equal for
// documents that differ only in member order.
std::string json_canonical(const cJSON *j);

// Typed getters that return a fallback when the member is missing or has
// another type.
std::string json_str(const cJSON *obj, const char *key, std::string_view fallback = {});
int64_t json_int(const cJSON *obj, const char *key, int64_t fallback);
bool json_bool(const cJSON *obj, const char *key, bool fallback);

Json json_object();

}  // namespace spore

// JSON through cJSON: reading arguments and results, building arguments,
// and printing a result the way the tool always has.
#pragma once

#include <cjson/cJSON.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace spore::cli {

struct JsonDeleter {
    void operator()(cJSON *j) const { cJSON_Delete(j); }
};
using JsonPtr = std::unique_ptr<cJSON, JsonDeleter>;

// Parses text as one JSON value (RFC 8259, not the more that cJSON takes)
// with nothing but white space after it; null with *error set when it is not.
JsonPtr parse_json(std::string_view text, std::string *error);

// The text of v: on one line, or (pretty) a member or item a line indented
// by two spaces a level. Numbers are printed as libspore prints them, so a
// result comes out with the digits it was sent with.
std::string format_json(const cJSON *v, bool pretty);

// The member key of an object when it is an integral number.
std::optional<int64_t> json_integer_member(const cJSON *object, const char *key);

// Builders that throw std::bad_alloc instead of returning null.
JsonPtr new_json_object();
cJSON *add_json_object(cJSON *object, const char *key);
cJSON *add_json_array(cJSON *object, const char *key);
void add_json_string(cJSON *object, const char *key, const std::string &value);
void add_json_number(cJSON *object, const char *key, double value);
void add_json_bool(cJSON *object, const char *key, bool value);
void append_json_string(cJSON *array, const std::string &value);

}  // namespace spore::cli

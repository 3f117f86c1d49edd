// Every option of the C API in one place (curl's options.h is the model):
// for each kind of options object, a table of the keys it takes with their
// type, accepted range, default and a one-line description. Validation,
// the error messages and docs/c-api.md all follow these tables (a unit test
// holds the docs to them).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "core/json.h"

namespace spore {

enum class OptionType {
    kString,
    kInteger,          // a whole number within [min, max]
    kBoolean,
    kList,             // a JSON array of strings, or one string split like a shell does
    kBooleanOrString,  // agent_compress: true/false or a codec name
};

struct OptionSpec {
    std::string_view key;
    OptionType type;
    int64_t min = 0, max = 0;     // kInteger: the accepted range (both 0: any integer)
    std::string_view fallback = {};  // the default as the docs print it ("" when there is none)
    std::string_view doc = {};       // one line
};

// What a value of the option must be: "a string", "an integer from 0 to
// 100", "a boolean", "a list of strings or a string", "a boolean or a string".
std::string option_type_text(const OptionSpec &spec);
// Throws spore::Error(SPORE_EINVAL) "[<scope> ]option '<key>' must be <type
// text>" unless item has the spec's type (and range).
void check_option(const OptionSpec &spec, const cJSON *item, std::string_view scope);
// The spec of key in table, or null.
const OptionSpec *find_option(std::span<const OptionSpec> table, std::string_view key);

std::span<const OptionSpec> router_option_table();    // spore_router_new
std::span<const OptionSpec> attach_option_table();    // spore_router_attach
std::span<const OptionSpec> connect_option_table();   // spore_connect, every method
std::span<const OptionSpec> transfer_option_table();  // spore_put_file and the other transfers
std::span<const OptionSpec> process_option_table();   // spore_proc_start

}  // namespace spore

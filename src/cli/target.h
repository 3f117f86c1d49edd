// Targets: the chain of hops a command opens, as written on the command line.
//
//   target := hop ( '/' hop )*
//   hop    := method [ '://' authority | ':' argument ] [ '?' key[=value] ( '&' key[=value] )* ]
//
// The argument forms set a method's main option: "ssh://user@host:port",
// "sudo:user", "docker:container", "kubectl:pod", "setns:pid" and so on.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "spore/spore.h"

namespace spore::cli {

struct Hop {
    std::string text;  // the hop as written, for messages
    std::string method;
    enum ArgKind { kNone, kColon, kAuthority } arg_kind = kNone;
    std::string arg;
    std::vector<std::pair<std::string, std::string>> options;  // decoded, in order

    bool has_option(std::string_view key) const;
};

// The hops of a target; a usage error when it is malformed.
std::vector<Hop> parse_target(std::string_view target);

// Sets key=value with the type the text looks like: integer, true/false, or
// string; "\"...\"" forces a string.
void set_option(spore_options *opts, const std::string &key, const std::string &value);

// The hop's ?options, then what its argument form says.
void set_hop_options(spore_options *opts, const Hop &hop);

}  // namespace spore::cli

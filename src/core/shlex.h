// Command words given as one string (options such as command_prefix,
// ssh_args, sudo_args): split with a deliberately small shell-like syntax.
// Quotes and backslash escapes work as in sh; nothing is ever expanded, so
// characters that would expand or redirect ($ ` < > | ( ) * ? [ ] { } ~ and
// a lone &) are refused unless quoted. "&&" and ";" are kept as words of
// their own, so a prefix like "source /opt/env.sh &&" can be given.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "core/json.h"

namespace spore {

// Throws spore::Error(SPORE_EINVAL) naming the offending character and its
// position, prefixed by `what` (the option's name).
std::vector<std::string> split_words(std::string_view text, const std::string &what);

// A list-valued option: a JSON array of strings, or a string split with
// split_words. Missing means empty. Throws on any other type.
std::vector<std::string> option_words(const cJSON *options, const char *key);

// True for the words that are shell operators rather than arguments.
bool is_shell_operator(const std::string &word);

// Joins words into one sh command line: each quoted for sh, except the
// operators, which stay literal.
std::string join_for_shell(const std::vector<std::string> &words);

// Quotes only when needed: for debug logs that stay readable.
std::string quote_for_log(const std::vector<std::string> &argv);

}  // namespace spore

#include "core/shlex.h"

#include "core/error.h"
#include "core/image.h"

namespace spore {

bool is_shell_operator(const std::string &word) { return word == "&&" || word == ";" || word == "||"; }

std::vector<std::string> split_words(std::string_view text, const std::string &what) {
    std::vector<std::string> words;
    std::string cur;
    bool in_word = false;
    auto refuse = [&](size_t pos, const std::string &why) {
        throw Error(SPORE_EINVAL, what + ": " + why + " at position " + std::to_string(pos + 1) + " of '" +
                                      std::string(text.substr(0, 200)) + "'");
    };
    auto end_word = [&] {
        if (in_word) words.push_back(cur);
        cur.clear();
        in_word = false;
    };
    for (size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (c == ' ' || c == '\t' || c == '\n') {
            end_word();
        } else if (c == '\'') {
            size_t close = text.find('\'', i + 1);
            if (close == std::string_view::npos) refuse(i, "unterminated single quote");
            cur.append(text.substr(i + 1, close - i - 1));
            in_word = true;
            i = close;
        } else if (c == '"') {
            in_word = true;
            size_t j = i + 1;
            for (;; ++j) {
                if (j >= text.size()) refuse(i, "unterminated double quote");
                char d = text[j];
                if (d == '"') break;
                if (d == '$' || d == '`') refuse(j, std::string("'") + d + "' would expand (use single quotes)");
                if (d == '\\' && j + 1 < text.size() && std::string_view("\"\\$`\n").find(text[j + 1]) != std::string_view::npos) {
                    if (text[j + 1] != '\n') cur.push_back(text[j + 1]);
                    ++j;
                    continue;
                }
                cur.push_back(d);
            }
            i = j;
        } else if (c == '\\') {
            if (i + 1 >= text.size()) refuse(i, "trailing backslash");
            if (text[i + 1] != '\n') cur.push_back(text[i + 1]);
            in_word = true;
            ++i;
        } else if (c == '&' && i + 1 < text.size() && text[i + 1] == '&') {
            end_word();
            words.push_back("&&");
            ++i;
        } else if (c == '|' && i + 1 < text.size() && text[i + 1] == '|') {
            end_word();
            words.push_back("||");
            ++i;
        } else if (c == ';') {
            end_word();
            words.push_back(";");
        } else if (std::string_view("$`<>|&()*?[]{}~#").find(c) != std::string_view::npos) {
            if (c == '#' && in_word) {
                cur.push_back(c);  // only a word-initial # starts a comment in sh
                continue;
            }
            if (c == '~' && in_word) {
                cur.push_back(c);
                continue;
            }
            refuse(i, std::string("'") + c + "' is not allowed unquoted (nothing is expanded or redirected)");
        } else {
            cur.push_back(c);
            in_word = true;
        }
    }
    end_word();
    return words;
}

std::vector<std::string> option_words(const cJSON *options, const char *key) {
    const cJSON *v = options ? cJSON_GetObjectItemCaseSensitive(options, key) : nullptr;
    if (!v || cJSON_IsNull(v)) return {};
    if (cJSON_IsString(v)) return split_words(v->valuestring, key);
    if (!cJSON_IsArray(v)) throw Error(SPORE_EINVAL, std::string("option '") + key + "' must be a list of strings or a string");
    std::vector<std::string> out;
    const cJSON *item;
    cJSON_ArrayForEach(item, v) {
        if (!cJSON_IsString(item))
            throw Error(SPORE_EINVAL, std::string("option '") + key + "' must be a list of strings");
        out.emplace_back(item->valuestring);
    }
    return out;
}

std::string join_for_shell(const std::vector<std::string> &words) {
    std::string out;
    for (const auto &w : words) {
        if (!out.empty()) out += ' ';
        out += is_shell_operator(w) ? w : shell_quote(w);
    }
    return out;
}

std::string quote_for_log(const std::vector<std::string> &argv) {
    std::string out;
    for (const auto &w : argv) {
        if (!out.empty()) out += ' ';
        bool plain = !w.empty();
        for (char c : w)
            if (!(isalnum(static_cast<unsigned char>(c)) || std::string_view("-_./=:,@%+").find(c) != std::string_view::npos))
                plain = false;
        if (plain || is_shell_operator(w)) {
            out += w;
        } else if (w.find('\n') != std::string::npos && w.size() > 120) {
            out += "'<" + std::to_string(w.size()) + "-byte script>'";
        } else {
            out += shell_quote(w);
        }
    }
    return out;
}

}  // namespace spore

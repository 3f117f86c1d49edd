#include "json.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <new>

namespace spore::cli {

namespace {

// As libspore prints a number: %.15g, or %.17g where that would not read
// back as the same double. Printing the double parsed from its text by the
// same rule gives back that text, digit for digit.
void append_number(double d, std::string &out) {
    if (!std::isfinite(d)) {
        out += "null";  // as cJSON prints it; JSON has nothing better
        return;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, "%1.15g", d);
    if (std::strtod(buf, nullptr) != d) std::snprintf(buf, sizeof buf, "%1.17g", d);
    out += buf;
}

// Escaped as cJSON escapes: short forms where JSON has them, \u00XX for the
// other control characters, every other byte as it is.
void append_string(const char *s, std::string &out) {
    out += '"';
    for (; *s; ++s) {
        unsigned char c = static_cast<unsigned char>(*s);
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += char(c);
                }
        }
    }
    out += '"';
}

void append_value(const cJSON *v, bool pretty, int level, std::string &out);

void append_container(const cJSON *v, bool pretty, int level, std::string &out) {
    const bool object = cJSON_IsObject(v);
    if (!v->child) {
        out += object ? "{}" : "[]";
        return;
    }
    auto newline = [&](int indent) {
        if (!pretty) return;
        out += '\n';
        out.append(size_t(indent) * 2, ' ');
    };
    out += object ? '{' : '[';
    for (const cJSON *item = v->child; item; item = item->next) {
        if (item != v->child) out += ',';
        newline(level + 1);
        if (object) {
            append_string(item->string ? item->string : "", out);
            out += pretty ? ": " : ":";
        }
        append_value(item, pretty, level + 1, out);
    }
    newline(level);
    out += object ? '}' : ']';
}

void append_value(const cJSON *v, bool pretty, int level, std::string &out) {
    if (cJSON_IsArray(v) || cJSON_IsObject(v)) append_container(v, pretty, level, out);
    else if (cJSON_IsString(v)) append_string(v->valuestring ? v->valuestring : "", out);
    else if (cJSON_IsNumber(v)) append_number(v->valuedouble, out);
    else if (cJSON_IsTrue(v)) out += "true";
    else if (cJSON_IsFalse(v)) out += "false";
    else if (cJSON_IsRaw(v) && v->valuestring) out += v->valuestring;
    else out += "null";
}

// -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?, the whole of s.
bool is_json_number(std::string_view s) {
    size_t i = 0;
    auto digits = [&] {
        size_t from = i;
        while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
        return i > from;
    };
    if (i < s.size() && s[i] == '-') ++i;
    if (i < s.size() && s[i] == '0') ++i;
    else if (!digits()) return false;
    if (i < s.size() && s[i] == '.' && (++i, !digits())) return false;
    if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
        ++i;
        if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
        if (!digits()) return false;
    }
    return i == s.size();
}

// cJSON reads more than RFC 8259 allows: numbers such as 01 and 1.,
// control characters in strings, any control character as white space and
// a leading byte order mark. Those are refused here, before cJSON sees the
// text; what is left to find wrong is in its structure, which cJSON checks.
std::optional<std::string> beyond_rfc8259(std::string_view text) {
    auto at = [](const char *what, size_t i) { return what + std::string(" at offset ") + std::to_string(i); };
    bool in_string = false, escaped = false;
    for (size_t i = 0; i < text.size(); ++i) {
        unsigned char c = static_cast<unsigned char>(text[i]);
        if (in_string) {
            if (c < 0x20) return at("control character in string", i);
            if (escaped) escaped = false;
            else if (c == '\\') escaped = true;
            else if (c == '"') in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t end = text.find_first_not_of("0123456789+-.eE", i);
            if (end == std::string_view::npos) end = text.size();
            if (!is_json_number(text.substr(i, end - i))) return at("bad number", i);
            i = end - 1;
        } else if (c < 0x20 ? c != '\t' && c != '\n' && c != '\r' : c >= 0x7f) {
            return at("unexpected character", i);
        }
    }
    return std::nullopt;
}

template <typename T>
T *checked(T *p) {
    if (!p) throw std::bad_alloc();
    return p;
}

}  // namespace

JsonPtr parse_json(std::string_view text, std::string *error) {
    if (auto lax = beyond_rfc8259(text)) {
        *error = *lax;
        return nullptr;
    }
    const char *end = nullptr;
    JsonPtr v(cJSON_ParseWithLengthOpts(text.data(), text.size(), &end, false));
    size_t at = end ? size_t(end - text.data()) : 0;
    if (!v) {
        *error = "parse error near offset " + std::to_string(at);
        return nullptr;
    }
    at = text.find_first_not_of(" \t\n\r", at);
    if (at != std::string_view::npos) {
        *error = "unexpected text after the JSON value at offset " + std::to_string(at);
        return nullptr;
    }
    return v;
}

std::string format_json(const cJSON *v, bool pretty) {
    std::string out;
    append_value(v, pretty, 0, out);
    return out;
}

std::optional<int64_t> json_integer_member(const cJSON *object, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(object, key);
    if (!cJSON_IsNumber(v)) return std::nullopt;
    double d = v->valuedouble;
    // 2^63 itself is out of range; everything below it converts exactly.
    if (d != std::trunc(d) || d < -0x1p63 || d >= 0x1p63) return std::nullopt;
    return int64_t(d);
}

JsonPtr new_json_object() { return JsonPtr(checked(cJSON_CreateObject())); }

cJSON *add_json_object(cJSON *object, const char *key) { return checked(cJSON_AddObjectToObject(object, key)); }

cJSON *add_json_array(cJSON *object, const char *key) { return checked(cJSON_AddArrayToObject(object, key)); }

void add_json_string(cJSON *object, const char *key, const std::string &value) {
    checked(cJSON_AddStringToObject(object, key, value.c_str()));
}

void add_json_number(cJSON *object, const char *key, double value) {
    checked(cJSON_AddNumberToObject(object, key, value));
}

void add_json_bool(cJSON *object, const char *key, bool value) {
    checked(cJSON_AddBoolToObject(object, key, value));
}

void append_json_string(cJSON *array, const std::string &value) {
    JsonPtr item(checked(cJSON_CreateString(value.c_str())));
    if (!cJSON_AddItemToArray(array, item.get())) throw std::bad_alloc();
    item.release();  // the array owns it now
}

}  // namespace spore::cli

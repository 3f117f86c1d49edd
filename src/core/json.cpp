#include "core/json.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

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

namespace {

// Length of the well-formed UTF-8 sequence starting at p[0] (of n bytes
// left), or 0 if it is not one. ASCII NUL counts as not well-formed.
size_t utf8_sequence(const unsigned char *p, size_t n) {
    unsigned char c = p[0];
    if (c < 0x80) return c ? 1 : 0;
    size_t len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (!len || len > n) return 0;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c == 0xE0) lo = 0xA0;       // overlong
    else if (c == 0xED) hi = 0x9F;  // surrogates
    else if (c == 0xF0) lo = 0x90;  // overlong
    else if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t k = 2; k < len; ++k)
        if ((p[k] & 0xC0) != 0x80) return 0;
    return len;
}

int hex4(const unsigned char *p, size_t n) {
    if (n < 4) return -1;
    int v = 0;
    for (size_t k = 0; k < 4; ++k) {
        int d = std::isxdigit(p[k]) ? (std::isdigit(p[k]) ? p[k] - '0' : (p[k] | 0x20) - 'a' + 10) : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

// Checks a \u escape at p (just after the backslash-u); returns the bytes it
// spans after "\u" (4, or 10 for a surrogate pair), or 0 with *why set.
size_t check_unicode_escape(const unsigned char *p, size_t n, std::string *why) {
    int v = hex4(p, n);
    if (v < 0) return *why = "malformed \\u escape", 0;
    if (v == 0) return *why = "a \\u0000 (NUL) inside a string", 0;
    if (v >= 0xDC00 && v <= 0xDFFF) return *why = "a lone low surrogate escape", 0;
    if (v < 0xD800 || v > 0xDBFF) return 4;
    int lo = n >= 10 && p[4] == '\\' && p[5] == 'u' ? hex4(p + 6, n - 6) : -1;
    if (lo < 0xDC00 || lo > 0xDFFF) return *why = "a lone high surrogate escape", 0;
    return 10;
}

}  // namespace

bool valid_utf8(std::string_view s) {
    const auto *p = reinterpret_cast<const unsigned char *>(s.data());
    for (size_t i = 0, n = s.size(); i < n;) {
        size_t len = utf8_sequence(p + i, n - i);
        if (!len) return false;
        i += len;
    }
    return true;
}

std::string json_text_problem(std::string_view text, int max_depth) {
    const auto *p = reinterpret_cast<const unsigned char *>(text.data());
    size_t n = text.size();
    while (n > 0 && p[n - 1] == 0) --n;  // a C string's terminator after the value is harmless
    int depth = 0;
    bool in_string = false;
    for (size_t i = 0; i < n;) {
        unsigned char c = p[i];
        if (c >= 0x80 || c == 0) {
            size_t len = utf8_sequence(p + i, n - i);
            if (!len) return (c ? "invalid UTF-8" : "a NUL byte") + std::string(" at byte ") + std::to_string(i);
            i += len;
            continue;
        }
        if (in_string) {
            if (c == '"') in_string = false;
            if (c == '\\' && i + 1 < n) {
                if (p[i + 1] != 'u') {
                    i += 2;
                    continue;
                }
                std::string why;
                size_t span = check_unicode_escape(p + i + 2, n - i - 2, &why);
                if (!span) return why + " at byte " + std::to_string(i);
                i += 2 + span;
                continue;
            }
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > max_depth) return "JSON nested deeper than " + std::to_string(max_depth) + " levels";
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
        ++i;
    }
    return {};
}

Json json_parse(std::string_view text, int max_depth, std::string *err) {
    if (std::string why = json_text_problem(text, max_depth); !why.empty()) {
        if (err) *err = std::move(why);
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

namespace {

// cJSON prints a number with %.15g and keeps that text when it reads back
// within a relative DBL_EPSILON, which changes integers above about 2^50
// (2^53 comes out as 9007199254740990) and the last digit of doubles such
// as 0.1 + 0.2. Such numbers are printed here with %.17g instead, which
// always reads back as the same double.
bool prints_inexactly(double d) {
    if (!std::isfinite(d)) return false;  // cJSON prints null; nothing better exists in JSON
    if (d == std::floor(d) && std::fabs(d) < 0x1p49) return false;  // at most 15 digits
    char buf[32];
    std::snprintf(buf, sizeof buf, "%1.15g", d);
    return std::strtod(buf, nullptr) != d;
}

bool has_inexact_number(const cJSON *j) {
    for (; j; j = j->next) {
        if (cJSON_IsNumber(j) && prints_inexactly(j->valuedouble)) return true;
        if (j->child && has_inexact_number(j->child)) return true;
    }
    return false;
}

std::string exact_number(double d) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%1.17g", d);
    return buf;
}

// Replaces the inexact numbers below parent by raw nodes with their exact text.
void make_numbers_exact(cJSON *parent) {
    for (cJSON *c = parent->child; c;) {
        cJSON *next = c->next;
        if (cJSON_IsNumber(c) && prints_inexactly(c->valuedouble)) {
            cJSON *raw = cJSON_CreateRaw(exact_number(c->valuedouble).c_str());
            if (raw && c->string) {  // the member's name, which replacing by pointer does not carry over
                size_t n = std::strlen(c->string) + 1;
                raw->string = static_cast<char *>(cJSON_malloc(n));
                if (raw->string) std::memcpy(raw->string, c->string, n);
                else {
                    cJSON_Delete(raw);
                    raw = nullptr;
                }
            }
            if (!raw || !cJSON_ReplaceItemViaPointer(parent, c, raw)) {
                cJSON_Delete(raw);
                throw std::bad_alloc();
            }
        } else if (c->child) {
            make_numbers_exact(c);
        }
        c = next;
    }
}

}  // namespace

std::string json_print(const cJSON *j) {
    if (!j) return "null";
    if (cJSON_IsNumber(j) && prints_inexactly(j->valuedouble)) return exact_number(j->valuedouble);
    if (j->child && has_inexact_number(j->child)) {
        // Rare (large integers, long fractions): print a copy with raw nodes.
        Json copy(cJSON_Duplicate(j, 1));
        if (!copy) throw std::bad_alloc();
        make_numbers_exact(copy.get());
        char *s = cJSON_PrintUnformatted(copy.get());
        if (!s) throw std::bad_alloc();
        std::string out(s);
        cJSON_free(s);
        return out;
    }
    char *s = cJSON_PrintUnformatted(j);
    if (!s) throw std::bad_alloc();
    std::string out(s);
    cJSON_free(s);
    return out;
}

namespace {

void sort_members(cJSON *j) {
    if (!cJSON_IsObject(j) && !cJSON_IsArray(j)) return;
    std::vector<cJSON *> items;
    for (cJSON *c = j->child; c; c = c->next) {
        sort_members(c);
        items.push_back(c);
    }
    if (!cJSON_IsObject(j) || items.size() < 2) return;
    std::stable_sort(items.begin(), items.end(),
                     [](const cJSON *a, const cJSON *b) { return std::strcmp(a->string, b->string) < 0; });
    // Relink in order (cJSON's list: next forward, prev of the head points at the tail).
    for (size_t i = 0; i < items.size(); ++i) {
        items[i]->next = i + 1 < items.size() ? items[i + 1] : nullptr;
        items[i]->prev = i ? items[i - 1] : items.back();
    }
    j->child = items.front();
}

}  // namespace

std::string json_canonical(const cJSON *j) {
    Json copy(cJSON_Duplicate(j, 1));
    if (!copy) throw std::bad_alloc();
    sort_members(copy.get());
    return json_print(copy.get());
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

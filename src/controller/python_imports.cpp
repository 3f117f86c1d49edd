#include "controller/python_imports.h"

#include <algorithm>
#include <cstdint>
#include <unordered_set>

namespace spore {

namespace {

bool ascii_ident_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool ascii_ident_char(char c) { return ascii_ident_start(c) || (c >= '0' && c <= '9'); }

// Python identifiers may hold any non-ASCII letter; treating every byte
// above 0x7f as one keeps such a word in one token (a module name made of
// it is refused later by valid_module_name).
bool ident_start(char c) { return ascii_ident_start(c) || static_cast<unsigned char>(c) >= 0x80; }
bool ident_char(char c) { return ident_start(c) || (c >= '0' && c <= '9'); }

bool is_quote(char c) { return c == '\'' || c == '"'; }

// r, b, u, f, t in any case, one or two of them. Sloppier than Python (it
// takes "ub" too), which only matters for text Python itself would refuse:
// a quote right after a word starts a string whatever the word.
bool string_prefix(std::string_view w, bool &raw, bool &fmt) {
    if (w.empty() || w.size() > 2) return false;
    raw = fmt = false;
    for (char c : w) {
        switch (c) {
        case 'r': case 'R': raw = true; break;
        case 'f': case 'F': case 't': case 'T': fmt = true; break;
        case 'b': case 'B': case 'u': case 'U': break;
        default: return false;
        }
    }
    return true;
}

enum class Tok { End, Name, Dot, Comma, LParen, RParen, Star, Semi, Colon, Newline, Other };

struct Token {
    Tok type = Tok::End;
    std::string_view text;
    int depth = 0;  // bracket depth at the token
};

// Turns source into the few tokens an import statement is made of. Strings
// (every prefix, triple quotes, escapes, and f-string replacement fields,
// which may themselves hold strings since Python 3.12) and comments are
// skipped whole; newlines inside brackets or after a backslash do not end
// a line. Every step moves forward, so the whole scan is linear.
class Lexer {
public:
    explicit Lexer(std::string_view s) : s_(s) {}

    Token next() {
        const size_t n = s_.size();
        while (pos_ < n) {
            const char c = s_[pos_];
            const size_t start = pos_;
            if (c == ' ' || c == '\t' || c == '\f' || c == '\v') {
                ++pos_;
                continue;
            }
            if (c == '\\') {
                ++pos_;
                if (pos_ < n && (s_[pos_] == '\n' || s_[pos_] == '\r')) {
                    skip_newline();
                    continue;
                }
                return make(Tok::Other, start);
            }
            if (c == '\n' || c == '\r') {
                skip_newline();
                if (depth_ == 0) return make(Tok::Newline, start);
                continue;
            }
            if (c == '#') {
                skip_comment();
                continue;
            }
            if (ident_start(c)) {
                while (pos_ < n && ident_char(s_[pos_])) ++pos_;
                std::string_view word = s_.substr(start, pos_ - start);
                bool raw = false, fmt = false;
                if (pos_ < n && is_quote(s_[pos_]) && string_prefix(word, raw, fmt)) {
                    skip_string(raw, fmt);
                    return make(Tok::Other, start);
                }
                return make(Tok::Name, start);
            }
            if (is_quote(c)) {
                skip_string(false, false);
                return make(Tok::Other, start);
            }
            if (c >= '0' && c <= '9') {
                while (pos_ < n && (ascii_ident_char(s_[pos_]) || s_[pos_] == '.')) ++pos_;
                return make(Tok::Other, start);
            }
            ++pos_;
            switch (c) {
            case '(': ++depth_; return make(Tok::LParen, start);
            case '[': case '{': ++depth_; return make(Tok::Other, start);
            case ')': close(); return make(Tok::RParen, start);
            case ']': case '}': close(); return make(Tok::Other, start);
            case '.': return make(Tok::Dot, start);
            case ',': return make(Tok::Comma, start);
            case '*': return make(Tok::Star, start);
            case ';': return make(Tok::Semi, start);
            case ':': return make(Tok::Colon, start);
            default: return make(Tok::Other, start);
            }
        }
        return Token{Tok::End, {}, depth_};
    }

private:
    // Python allows about 150 nested f-strings; past this the rest of the
    // input is given up rather than tracked.
    static constexpr size_t kMaxNesting = 64;

    // Str: literal text of a string. Expr: a replacement field of an
    // f-string (code, with its own bracket depth). Spec: the format spec
    // after a field's ':' (literal text, but '{' opens a nested field).
    struct Frame {
        enum Kind : uint8_t { Str, Expr, Spec } kind;
        char quote;
        bool triple;
        bool raw;
        bool fmt;
        int depth;
    };

    Token make(Tok t, size_t start) const { return Token{t, s_.substr(start, pos_ - start), depth_}; }

    void close() {
        if (depth_ > 0) --depth_;
    }

    void skip_newline() {
        if (pos_ < s_.size() && s_[pos_] == '\r') ++pos_;
        if (pos_ < s_.size() && s_[pos_] == '\n') ++pos_;
    }

    void skip_comment() {
        while (pos_ < s_.size() && s_[pos_] != '\n' && s_[pos_] != '\r') ++pos_;
    }

    bool at_triple(char q) const {
        return pos_ + 2 < s_.size() && s_[pos_] == q && s_[pos_ + 1] == q && s_[pos_ + 2] == q;
    }

    // pos_ is at an opening quote.
    void push_string(bool raw, bool fmt) {
        if (stack_.size() >= kMaxNesting) {
            pos_ = s_.size();
            return;
        }
        const char q = s_[pos_];
        const bool triple = at_triple(q);
        pos_ += triple ? 3 : 1;
        stack_.push_back(Frame{Frame::Str, q, triple, raw, fmt, 0});
    }

    void push_field(const Frame &enclosing) {
        if (stack_.size() >= kMaxNesting) {
            pos_ = s_.size();
            return;
        }
        Frame f = enclosing;
        f.kind = Frame::Expr;
        f.depth = 0;
        stack_.push_back(f);
    }

    // Leaves the innermost string along with the fields and specs open in it.
    void end_string() {
        while (!stack_.empty()) {
            const bool was_str = stack_.back().kind == Frame::Str;
            stack_.pop_back();
            if (was_str) return;
        }
    }

    // pos_ is at the opening quote; returns past the closing one (or at the
    // newline that ends an unterminated one-line string, or at the end).
    void skip_string(bool raw, bool fmt) {
        stack_.clear();
        push_string(raw, fmt);
        const size_t n = s_.size();
        while (!stack_.empty() && pos_ < n) {
            Frame &f = stack_.back();
            const char c = s_[pos_];
            if (f.kind == Frame::Expr) {
                if (c == '#') {
                    skip_comment();
                } else if (ident_start(c)) {
                    const size_t start = pos_;
                    while (pos_ < n && ident_char(s_[pos_])) ++pos_;
                    bool r = false, fm = false;
                    if (pos_ < n && is_quote(s_[pos_]) && string_prefix(s_.substr(start, pos_ - start), r, fm))
                        push_string(r, fm);
                } else if (is_quote(c)) {
                    push_string(false, false);
                } else if (c == '(' || c == '[' || c == '{') {
                    ++f.depth;
                    ++pos_;
                } else if (c == ')' || c == ']') {
                    if (f.depth > 0) --f.depth;
                    ++pos_;
                } else if (c == '}') {
                    ++pos_;
                    if (f.depth > 0)
                        --f.depth;
                    else
                        stack_.pop_back();
                } else if (c == ':' && f.depth == 0) {
                    // Lambdas and walruses need brackets inside a field, so a
                    // bare colon starts the format spec.
                    f.kind = Frame::Spec;
                    ++pos_;
                } else {
                    ++pos_;
                }
                continue;
            }
            // Literal text: a string's body or a format spec.
            if (c == '\\') {
                if (f.fmt && !f.raw && f.kind == Frame::Str && pos_ + 2 < n && s_[pos_ + 1] == 'N' &&
                    s_[pos_ + 2] == '{') {
                    // \N{NAME} is an escape, not a field.
                    pos_ += 3;
                    while (pos_ < n && s_[pos_] != '}' && s_[pos_] != '\n' && s_[pos_] != f.quote) ++pos_;
                    if (pos_ < n && s_[pos_] == '}') ++pos_;
                } else if (f.fmt && pos_ + 1 < n && (s_[pos_ + 1] == '{' || s_[pos_ + 1] == '}')) {
                    // A brace after a backslash still opens or closes a field.
                    ++pos_;
                } else {
                    // Even in a raw string a backslash keeps the next quote
                    // from closing it; a backslash-newline continues the line.
                    pos_ = std::min(pos_ + 2, n);
                    if (pos_ < n && s_[pos_ - 1] == '\r' && s_[pos_] == '\n') ++pos_;
                }
                continue;
            }
            if (c == f.quote) {
                if (!f.triple) {
                    ++pos_;
                    end_string();
                } else if (at_triple(c)) {
                    pos_ += 3;
                    end_string();
                } else {
                    ++pos_;
                }
                continue;
            }
            if ((c == '\n' || c == '\r') && !f.triple) {
                // Unterminated: Python refuses the file; ending the string at
                // the line keeps the rest of the file scannable.
                end_string();
                continue;
            }
            if (f.fmt && c == '{') {
                if (f.kind == Frame::Str && pos_ + 1 < n && s_[pos_ + 1] == '{') {
                    pos_ += 2;
                } else {
                    ++pos_;
                    push_field(f);
                }
                continue;
            }
            if (f.fmt && c == '}') {
                if (f.kind == Frame::Spec) {
                    ++pos_;
                    stack_.pop_back();
                } else {
                    pos_ += (pos_ + 1 < n && s_[pos_ + 1] == '}') ? 2 : 1;
                }
                continue;
            }
            ++pos_;
        }
        stack_.clear();
    }

    std::string_view s_;
    size_t pos_ = 0;
    int depth_ = 0;
    std::vector<Frame> stack_;
};

class Parser {
public:
    explicit Parser(std::string_view s) : lex_(s) {}

    std::vector<ImportRef> run() {
        bool statement_start = true;
        advance();
        while (tok_.type != Tok::End && !full()) {
            if (statement_start && is_name("import")) {
                parse_import();
                statement_start = false;
                continue;
            }
            if (statement_start && is_name("from")) {
                parse_from();
                statement_start = false;
                continue;
            }
            // A colon at depth 0 ends an `if x:`, `try:`, `def f():` header,
            // so a statement may follow on the same line.
            statement_start = tok_.type == Tok::Newline ||
                              ((tok_.type == Tok::Semi || tok_.type == Tok::Colon) && tok_.depth == 0);
            advance();
        }
        return std::move(out_);
    }

private:
    enum class Dotted { None, Ok, Bad };

    void advance() { tok_ = lex_.next(); }
    bool is_name(std::string_view w) const { return tok_.type == Tok::Name && tok_.text == w; }
    bool full() const { return out_.size() >= kMaxImportRefs || names_ >= kMaxImportNames; }

    void add(ImportRef ref) {
        if (full()) return;
        names_ += ref.names.empty() ? 1 : ref.names.size();
        out_.push_back(std::move(ref));
    }

    // NAME ('.' NAME)*. Bad when it is malformed or too long to be a module
    // name: consumed, but no ref is made of it. The text kept is bounded
    // whatever the input.
    Dotted dotted(std::string &name) {
        if (tok_.type != Tok::Name) return Dotted::None;
        bool ok = tok_.text.size() <= kMaxModuleNameLength;
        if (ok) name.assign(tok_.text);
        advance();
        while (tok_.type == Tok::Dot) {
            advance();
            if (tok_.type != Tok::Name) return Dotted::Bad;
            if (ok && name.size() + 1 + tok_.text.size() <= kMaxModuleNameLength) {
                name += '.';
                name += tok_.text;
            } else {
                ok = false;
            }
            advance();
        }
        return ok ? Dotted::Ok : Dotted::Bad;
    }

    void skip_alias() {
        if (!is_name("as")) return;
        advance();
        if (tok_.type == Tok::Name) advance();
    }

    void parse_import() {
        advance();
        for (;;) {
            std::string module;
            const Dotted d = dotted(module);
            if (d == Dotted::None) return;
            if (d == Dotted::Ok) add(ImportRef{0, std::move(module), {}});
            skip_alias();
            if (tok_.type != Tok::Comma) return;
            advance();
        }
    }

    void parse_from() {
        advance();
        int level = 0;
        // Capped so a hostile run of dots cannot overflow; such a level is
        // beyond any package anyway.
        while (tok_.type == Tok::Dot) {
            if (level < 1000) ++level;
            advance();
        }
        std::string module;
        Dotted d = Dotted::None;
        if (!is_name("import")) {
            d = dotted(module);
            if (d == Dotted::None) return;
        }
        if (!is_name("import")) return;
        advance();
        std::vector<std::string> names;
        if (tok_.type == Tok::Star) {
            names.emplace_back("*");
            advance();
        } else {
            const bool paren = tok_.type == Tok::LParen;
            if (paren) advance();
            while (tok_.type == Tok::Name && names_ + names.size() < kMaxImportNames) {
                if (tok_.text.size() <= kMaxModuleNameLength) names.emplace_back(tok_.text);
                advance();
                skip_alias();
                if (tok_.type != Tok::Comma) break;
                advance();
            }
            if (paren && tok_.type == Tok::RParen) advance();
        }
        if (d == Dotted::Bad || (level == 0 && module.empty()) || names.empty()) return;
        add(ImportRef{level, std::move(module), std::move(names)});
    }

    Lexer lex_;
    Token tok_;
    std::vector<ImportRef> out_;
    size_t names_ = 0;
};

}  // namespace

std::vector<ImportRef> scan_python_imports(std::string_view source) { return Parser(source).run(); }

std::vector<std::string> import_candidates(const std::vector<ImportRef> &refs, const std::string &importer,
                                           bool importer_is_package) {
    std::vector<std::string> out;
    std::unordered_set<std::string> seen;
    auto add = [&](std::string name) {
        if (valid_module_name(name) && seen.insert(name).second) out.push_back(std::move(name));
    };
    std::string package = importer;
    if (!importer_is_package) {
        const size_t dot = package.rfind('.');
        package = dot == std::string::npos ? std::string() : package.substr(0, dot);
    }
    size_t package_parts = 0;
    if (!package.empty()) {
        package_parts = 1;
        for (char c : package)
            if (c == '.') ++package_parts;
    }
    for (const ImportRef &ref : refs) {
        std::string full;
        if (ref.level <= 0) {
            full = ref.module;
        } else {
            // Level 1 is the package itself, each further dot its parent.
            if (size_t(ref.level) > package_parts) continue;
            full = package;
            for (int i = 1; i < ref.level; ++i) full.resize(full.rfind('.'));
            if (!ref.module.empty()) full += "." + ref.module;
        }
        if (full.empty()) continue;
        for (size_t dot = full.find('.'); dot != std::string::npos; dot = full.find('.', dot + 1))
            add(full.substr(0, dot));
        add(full);
        for (const std::string &name : ref.names)
            if (name != "*") add(full + "." + name);
    }
    return out;
}

}  // namespace spore

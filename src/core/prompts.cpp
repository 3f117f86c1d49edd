#include "core/prompts.h"

#include <string.h>

#include "core/error.h"

namespace spore {

Pattern::Pattern(const std::string &expr) : text_(expr) {
    int rc = regcomp(&re_, expr.c_str(), REG_EXTENDED | REG_ICASE | REG_NOSUB | REG_NEWLINE);
    if (rc != 0) {
        char buf[256];
        regerror(rc, &re_, buf, sizeof buf);
        throw Error(SPORE_EINVAL, "bad prompt pattern '" + expr + "': " + buf);
    }
}

Pattern::~Pattern() { regfree(&re_); }

bool Pattern::search(const std::string &text) const { return regexec(&re_, text.c_str(), 0, nullptr, 0) == 0; }

void PromptTable::add_prompt(const std::string &expr, const std::string &secret) {
    PromptRule r;
    r.pattern = std::make_shared<Pattern>(expr);
    r.action = PromptAction::SendSecret;
    r.partial = true;
    r.secret = secret;
    rules.push_back(std::move(r));
}

void PromptTable::add_answer(const std::string &expr, const std::string &text) {
    PromptRule r;
    r.pattern = std::make_shared<Pattern>(expr);
    r.action = PromptAction::SendText;
    r.partial = true;
    r.text = text;
    rules.push_back(std::move(r));
}

void PromptTable::add_failure(const std::string &expr, int code, const std::string &message, bool partial) {
    PromptRule r;
    r.pattern = std::make_shared<Pattern>(expr);
    r.action = PromptAction::Fail;
    r.partial = partial;
    r.code = code;
    r.message = message;
    rules.push_back(std::move(r));
}

void PromptTable::add_note(const std::string &expr) {
    PromptRule r;
    r.pattern = std::make_shared<Pattern>(expr);
    r.action = PromptAction::Note;
    rules.push_back(std::move(r));
}

void PromptTable::add_denied(const std::string &expr, const std::string &message) {
    PromptRule r;
    r.pattern = std::make_shared<Pattern>(expr);
    r.action = PromptAction::Denied;
    r.code = SPORE_EAUTH;
    r.message = message;
    rules.push_back(std::move(r));
}

void wipe(std::string &s) noexcept {
    if (!s.empty()) explicit_bzero(s.data(), s.size());
    s.clear();
}

PromptMatcher::PromptMatcher(const PromptTable &table, std::vector<std::pair<std::string, std::string>> secrets)
    : table_(table), secrets_(std::move(secrets)) {}

PromptMatcher::~PromptMatcher() {
    for (auto &s : secrets_) wipe(s.second);
    wipe(tail_);
}

const std::string *PromptMatcher::secret(const std::string &name) const {
    for (auto &s : secrets_)
        if (s.first == name && !s.second.empty()) return &s.second;
    return nullptr;
}

std::string PromptMatcher::mask(std::string text) const {
    for (auto &s : secrets_) {
        if (s.second.size() < 1) continue;
        size_t pos = 0;
        while ((pos = text.find(s.second, pos)) != std::string::npos) text.replace(pos, s.second.size(), "******");
    }
    return text;
}

PromptMatcher::Outcome PromptMatcher::act(const PromptRule &rule, const std::string &subject) {
    Outcome out;
    switch (rule.action) {
    case PromptAction::Note:
        notes_.push_back(mask(subject));
        break;
    case PromptAction::Fail:
        out.code = rule.code;
        out.message = rule.message;
        break;
    case PromptAction::Denied: {
        std::string lower;
        for (char c : subject) lower.push_back(char(tolower(static_cast<unsigned char>(c))));
        if (sent_ > 0) {
            out.code = SPORE_EAUTH;
            out.message = "incorrect " + (answered_.empty() ? std::string("password") : answered_.back());
        } else if (lower.find("password") != std::string::npos && !secret("password")) {
            out.code = SPORE_EPASSREQ;
            out.message = "password required, but none was given (" + mask(subject) + ")";
        } else {
            out.code = rule.code;
            out.message = rule.message + " (" + mask(subject) + ")";
        }
        break;
    }
    case PromptAction::SendText:
        out.reply = rule.text + "\n";
        break;
    case PromptAction::SendSecret: {
        const std::string *value = secret(rule.secret);
        bool again = false;
        for (auto &a : answered_) again = again || a == rule.secret;
        if (again) {
            // Asked a second time: the first answer was refused.
            out.code = SPORE_EAUTH;
            out.message = "incorrect " + rule.secret;
        } else if (!value) {
            out.code = SPORE_EPASSREQ;
            out.message = rule.secret + " required, but none was given";
        } else {
            answered_.push_back(rule.secret);
            out.reply = *value + "\n";
            ++sent_;
        }
        break;
    }
    }
    return out;
}

PromptMatcher::Outcome PromptMatcher::on_line(const std::string &raw) {
    std::string line = raw;
    while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
    for (const auto &r : table_.rules) {
        if (r.partial) continue;
        if (r.pattern->search(line)) return act(r, line);
    }
    return {};
}

PromptMatcher::Outcome PromptMatcher::feed(std::string_view bytes, std::vector<std::string> &lines) {
    Outcome out;
    tail_.append(bytes);
    size_t pos;
    while ((pos = tail_.find('\n')) != std::string::npos) {
        std::string line = tail_.substr(0, pos);
        tail_.erase(0, pos + 1);
        Outcome o = on_line(line);
        if (!line.empty() && line != "\r") lines.push_back(mask(line));
        // The first failure counts; the lines after it are still read (for
        // notes such as a fingerprint, and for the error's last output).
        if (o.code && !out.code) {
            out.code = o.code;
            out.message = o.message;
        }
        if (!o.reply.empty() && !out.code) out.reply += o.reply;
    }
    if (out.code) {
        out.reply.clear();
        return out;
    }
    // Terminals may end a prompt with "\r" only; keep the tail bounded.
    if (tail_.size() > 4096) tail_.erase(0, tail_.size() - 4096);
    pending_ = -1;
    for (size_t i = 0; i < table_.rules.size(); ++i) {
        const auto &r = table_.rules[i];
        if (!r.partial) continue;
        // A prompt is the end of the output: "...password: " with at most
        // trailing blanks. Rules anchor themselves with `$`.
        if (r.pattern->search(tail_)) {
            pending_ = int(i);
            break;
        }
    }
    return out;
}

PromptMatcher::Outcome PromptMatcher::settle() {
    if (pending_ < 0) return {};
    const PromptRule &r = table_.rules[size_t(pending_)];
    pending_ = -1;
    std::string subject = tail_;
    // The prompt is consumed: a second identical prompt must be new output.
    tail_.clear();
    return act(r, subject);
}

}  // namespace spore

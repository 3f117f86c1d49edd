// What a connect says to the programs it starts before their agent answers:
// password and passphrase prompts are answered, and the lines by which ssh,
// sudo, su and doas report failure become distinct errors (DESIGN §4.7).
//
// The output of the launcher (its pty, or stderr without one) is fed in as
// it arrives. Failure patterns are matched against complete lines; prompts
// only against the unterminated tail of the output, and only when the tail
// ends with the prompt: a login banner line that merely contains the word
// "password" is terminated by a newline and never answered.
#pragma once

#include <regex.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace spore {

// A POSIX extended regular expression, case-insensitive (regex.h keeps the
// static agent small; <regex> would add ~200 KB).
class Pattern {
public:
    // Throws spore::Error(SPORE_EINVAL) naming the pattern when it does not compile.
    explicit Pattern(const std::string &expr);
    ~Pattern();
    Pattern(const Pattern &) = delete;
    Pattern &operator=(const Pattern &) = delete;
    bool search(const std::string &text) const;
    const std::string &text() const { return text_; }

private:
    regex_t re_{};
    std::string text_;
};

enum class PromptAction {
    SendSecret,   // answer with the secret named by `secret` (once)
    SendText,     // answer with fixed text (e.g. "yes" to a host key question)
    Fail,         // the connect fails with `code` and `message`
    Note,         // only remembered for the error message (e.g. a fingerprint)
    Denied,       // authentication refused: "incorrect password" when one was
                  // sent, "password required" when the line asks for one and
                  // none was given, otherwise `code` and `message`
};

struct PromptRule {
    std::shared_ptr<Pattern> pattern;
    PromptAction action = PromptAction::Fail;
    bool partial = false;    // matched against the unterminated tail (a prompt)
    std::string secret;      // SendSecret: which secret ("password", "passphrase")
    std::string text;        // SendText: what to send (a newline is added)
    int code = 0;            // Fail
    std::string message;     // Fail: the error's reason
};

// The rules of one launcher, most specific first.
struct PromptTable {
    std::vector<PromptRule> rules;
    void add_prompt(const std::string &expr, const std::string &secret);
    void add_answer(const std::string &expr, const std::string &text);
    void add_failure(const std::string &expr, int code, const std::string &message, bool partial = false);
    void add_note(const std::string &expr);
    void add_denied(const std::string &expr, const std::string &message);
    bool empty() const { return rules.empty(); }
};

class PromptMatcher {
public:
    struct Outcome {
        // Bytes to write to the launcher's terminal (a secret and "\n"), or empty.
        std::string reply;
        // Non-zero: the connect fails with this code and message.
        int code = 0;
        std::string message;
    };

    // secrets: name -> value; a value that is empty means "not given".
    PromptMatcher(const PromptTable &table, std::vector<std::pair<std::string, std::string>> secrets);
    ~PromptMatcher();
    PromptMatcher(const PromptMatcher &) = delete;
    PromptMatcher &operator=(const PromptMatcher &) = delete;

    // Feeds output; complete lines are matched, then the tail. Lines that
    // match nothing are appended to `lines` (secrets masked) for the error
    // message of a failed connect.
    Outcome feed(std::string_view bytes, std::vector<std::string> &lines);
    // A prompt seen in the tail is acted on only once nothing more arrives
    // for a moment; the caller calls this when that moment has passed.
    Outcome settle();
    // True when the tail currently ends in a prompt that settle() would answer.
    bool prompt_pending() const { return pending_ >= 0; }
    // Notes (e.g. "ED25519 key fingerprint is SHA256:...") seen so far.
    const std::vector<std::string> &notes() const { return notes_; }
    // Masks every secret in text.
    std::string mask(std::string text) const;
    size_t secrets_sent() const { return sent_; }

private:
    Outcome on_line(const std::string &line);
    Outcome act(const PromptRule &rule, const std::string &subject);
    const std::string *secret(const std::string &name) const;

    const PromptTable &table_;
    std::vector<std::pair<std::string, std::string>> secrets_;
    std::string tail_;
    int pending_ = -1;           // index of the prompt rule the tail ends with
    std::vector<std::string> answered_;  // secrets already sent once
    std::vector<std::string> notes_;
    size_t sent_ = 0;
};

// Wipes a string's bytes before it is freed (secrets).
void wipe(std::string &s) noexcept;

}  // namespace spore

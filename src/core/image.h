// The agent image shipped to new contexts: the bytes of a spore-agent
// executable, its SHA-256 (which names it in the target's cache) and, made
// lazily, its gzip form for targets that have gzip.
#pragma once

#include <memory>
#include <mutex>
#include <string>

namespace spore {

class AgentImage {
public:
    // Reads the executable at path; throws spore::Error(SPORE_ECONNECT) when
    // it cannot be read.
    static std::shared_ptr<AgentImage> load(const std::string &path);

    const std::string &raw() const { return raw_; }
    const std::string &sha256() const { return sha256_; }
    // The gzip form (computed once, thread-safe).
    const std::string &gzipped() const;

private:
    std::string raw_;
    std::string sha256_;
    mutable std::once_flag gz_once_;
    mutable std::string gz_;
};

std::string sha256_hex(const std::string &data);
std::string gzip_compress(const std::string &data);

// The POSIX sh first stage (DESIGN §4): runs a cached agent named by its
// hash, or receives the image on stdin, checks it and runs it.
// agent_args are appended to the agent's argv (already safe words).
// With compress false the script asks for the raw image even when the target
// has gzip.
std::string first_stage_script(const std::string &sha256, bool cache, const std::string &agent_args,
                               bool compress = true);

// Quotes a word for a POSIX shell (single quotes).
std::string shell_quote(const std::string &word);

inline constexpr const char *kReadyMarker = "SPORE-READY";
inline constexpr const char *kHelloMarker = "SPORE-HELLO";

}  // namespace spore

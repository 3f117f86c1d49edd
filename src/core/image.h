// The agent image shipped to new contexts: the bytes of a spore-agent
// executable, its SHA-256 (which names it in the target's cache) and, made
// lazily, its compressed forms for targets that can unpack them.
#pragma once

#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <cjson/cJSON.h>

namespace spore {

// How the image travels. The first stage names the ones the target can
// unpack on its SPORE-READY line ("xz", "zstd", "gz"; "raw" always), and the
// parent names the one it chose after the byte count.
enum class ImageCodec { raw, gzip, zstd, xz };
inline constexpr int kImageCodecs = 4;

// The word for codec on the bootstrap lines.
const char *codec_word(ImageCodec codec);
// Whether this process can compress with codec: the library has xz, zstd and
// gzip; the static agent only gzip (see docs/architecture.md, Deviations).
bool can_compress(ImageCodec codec);
// data in codec's form (raw: a copy). Throws spore::Error(SPORE_EINTERNAL)
// when the compressor fails or is not built in.
std::string compress_image(const std::string &data, ImageCodec codec);

// The agent_compress connect option.
enum class CompressOption { automatic, none, gzip, zstd, xz };
// Reads agent_compress from a connect's options: absent, true or "auto" is
// automatic, false or "none" is none, else a codec's name ("xz", "zstd",
// "gzip"). Throws spore::Error(SPORE_EINVAL) for anything else.
CompressOption parse_agent_compress(const cJSON *options);
// The option's canonical string, as an agent is handed it.
const char *agent_compress_name(CompressOption option);
// The compressed codecs the first stage should look for on the target,
// strongest first (empty: raw only). Throws spore::Error(SPORE_EINVAL) when
// the option names a codec this process cannot make.
std::vector<ImageCodec> codecs_to_offer(CompressOption option);
// Picks the codec to send from the target's SPORE-READY line: the first of
// offered that the line names, else raw. Throws spore::Error(SPORE_ECONNECT)
// when the option named a codec and the target does not have it.
ImageCodec choose_codec(std::string_view ready_line, const std::vector<ImageCodec> &offered, CompressOption option);

struct ImageForms;

class AgentImage {
public:
    // Reads the executable at path; throws spore::Error(SPORE_ECONNECT) when
    // it cannot be read.
    static std::shared_ptr<AgentImage> load(const std::string &path);

    const std::string &raw() const { return raw_; }
    const std::string &sha256() const { return sha256_; }
    // The image in codec's form. Made once per process and codec (thread-safe,
    // shared by every AgentImage with the same hash); xz and zstd take most
    // of a second, so the first call for a codec belongs off the I/O loop.
    const std::string &encoded(ImageCodec codec) const;
    // True once encoded(codec) returns at once.
    bool is_encoded(ImageCodec codec) const;
    // How long making codec's form took (0 for raw or before it is made).
    double encode_seconds(ImageCodec codec) const;

private:
    std::string raw_;
    std::string sha256_;
    std::shared_ptr<ImageForms> forms_;
};

std::string sha256_hex(const std::string &data);
std::string gzip_compress(const std::string &data);

// The POSIX sh first stage (DESIGN §4): runs a cached agent named by its
// hash, or announces the decompressors of `codecs` the target has, receives
// the image on stdin, checks it and runs it. agent_args are appended to the
// agent's argv (already safe words). With codecs empty the image comes raw.
std::string first_stage_script(const std::string &sha256, bool cache, const std::string &agent_args,
                               const std::vector<ImageCodec> &codecs = {ImageCodec::gzip});

// Quotes a word for a POSIX shell (single quotes).
std::string shell_quote(const std::string &word);

inline constexpr const char *kReadyMarker = "SPORE-READY";
inline constexpr const char *kHelloMarker = "SPORE-HELLO";
// What the first stage says (on stderr, after "spore: ") when the image it
// received does not run in a directory that does execute programs: it is not
// a program for the target's machine.
inline constexpr const char *kImageDoesNotRun = "the agent image does not run on this machine";

}  // namespace spore

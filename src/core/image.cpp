#include "core/image.h"

#include <cstdio>
#include <random>

#include <fcntl.h>
#include <nettle/sha2.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cerrno>
#include <cstring>

#ifdef SPORE_IMAGE_XZ
#include <lzma.h>
#endif
#ifdef SPORE_IMAGE_ZSTD
#include <zstd.h>
#endif

#include "core/error.h"
#include "core/loop.h"

namespace spore {

namespace {

// The compressed forms of the image last loaded, made at most once per process
// and codec: xz or zstd take ~0.4 s of a core on the 1.5 MB agent, which a
// router freed and made anew (as tests and short-lived tools do) would
// otherwise pay again.
struct FormsOfLastImage {
    std::mutex mu;
    std::string sha256;
    std::shared_ptr<ImageForms> forms;
};

// An executable program starts with an ELF header or a "#!" line. Anything
// else would be run by the target's sh as a script.
bool looks_executable(const std::string &data) {
    return data.compare(0, 4, "\x7f" "ELF") == 0 || data.compare(0, 2, "#!") == 0;
}

}  // namespace

struct ImageForms {
    std::once_flag once[kImageCodecs];
    std::string form[kImageCodecs];
    double seconds[kImageCodecs] = {};
    std::atomic<bool> made[kImageCodecs] = {};
};

std::shared_ptr<AgentImage> AgentImage::load(const std::string &path) {
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw Error(SPORE_ECONNECT, "cannot read agent image " + path + ": " + std::strerror(errno));
    struct stat st;
    if (fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode))
        throw Error(SPORE_ECONNECT, "agent image " + path + " is not a regular file");
    auto img = std::make_shared<AgentImage>();
    img->raw_.resize(size_t(st.st_size));
    size_t off = 0;
    while (off < img->raw_.size()) {
        ssize_t n = ::read(fd.get(), img->raw_.data() + off, img->raw_.size() - off);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw Error(SPORE_ECONNECT, "cannot read agent image " + path);
        off += size_t(n);
    }
    if (!looks_executable(img->raw_))
        throw Error(SPORE_ECONNECT, "agent image " + path + " is not an executable program (no ELF header, no #! line)");
    img->sha256_ = sha256_hex(img->raw_);
    static FormsOfLastImage last;
    std::lock_guard<std::mutex> lk(last.mu);
    if (!last.forms || last.sha256 != img->sha256_) {
        last.forms = std::make_shared<ImageForms>();
        last.sha256 = img->sha256_;
    }
    img->forms_ = last.forms;
    return img;
}

const std::string &AgentImage::encoded(ImageCodec codec) const {
    if (codec == ImageCodec::raw) return raw_;
    auto i = size_t(codec);
    std::call_once(forms_->once[i], [this, codec, i] {
        auto start = std::chrono::steady_clock::now();
        forms_->form[i] = compress_image(raw_, codec);
        forms_->seconds[i] = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        forms_->made[i].store(true, std::memory_order_release);
    });
    return forms_->form[i];
}

double AgentImage::encode_seconds(ImageCodec codec) const {
    return is_encoded(codec) ? forms_->seconds[size_t(codec)] : 0.0;
}

bool AgentImage::is_encoded(ImageCodec codec) const {
    return codec == ImageCodec::raw || forms_->made[size_t(codec)].load(std::memory_order_acquire);
}

std::string sha256_hex(const std::string &data) {
    sha256_ctx ctx;
    sha256_init(&ctx);
    sha256_update(&ctx, data.size(), reinterpret_cast<const uint8_t *>(data.data()));
    uint8_t digest[SHA256_DIGEST_SIZE];
    sha256_digest(&ctx, sizeof digest, digest);
    static const char hex[] = "0123456789abcdef";
    std::string out;
    for (uint8_t b : digest) {
        out.push_back(hex[b >> 4]);
        out.push_back(hex[b & 15]);
    }
    return out;
}

std::string gzip_compress(const std::string &data) {
    z_stream zs{};
    // windowBits 15 + 16: gzip framing, which `gzip -dc` understands. Level 6
    // is within 0.5% of level 9 on the agent and three times faster.
    if (deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) throw std::bad_alloc();
    std::string out;
    out.resize(deflateBound(&zs, uLong(data.size())));
    zs.next_in = reinterpret_cast<Bytef *>(const_cast<char *>(data.data()));
    zs.avail_in = uInt(data.size());
    zs.next_out = reinterpret_cast<Bytef *>(out.data());
    zs.avail_out = uInt(out.size());
    int rc = deflate(&zs, Z_FINISH);
    out.resize(zs.total_out);
    deflateEnd(&zs);
    if (rc != Z_STREAM_END) throw Error(SPORE_EINTERNAL, "gzip of the agent image failed");
    return out;
}

namespace {

#ifdef SPORE_IMAGE_XZ
// x86 machine code compresses ~5% better after the x86 branch filter, which
// every xz decoder has.
bool is_x86_elf(const std::string &data) {
    if (data.size() < 20 || data.compare(0, 4, "\x7f" "ELF") != 0) return false;
    unsigned machine = uint8_t(data[18]) | unsigned(uint8_t(data[19])) << 8;
    return machine == 62 /* EM_X86_64 */ || machine == 3 /* EM_386 */;
}

std::string xz_compress(const std::string &data) {
    lzma_options_lzma lzma2;
    if (lzma_lzma_preset(&lzma2, 6)) throw Error(SPORE_EINTERNAL, "xz of the agent image failed: no preset 6");
    // A dictionary as large as the image finds every match; a larger one only
    // costs memory, here and in `xz -dc` on the target. Presets above 6 and
    // "extreme" gain nothing on the agent (measured: same size, twice the time).
    uint32_t dict = LZMA_DICT_SIZE_MIN;
    while (dict < data.size() && dict < lzma2.dict_size) dict *= 2;
    lzma2.dict_size = dict;
    lzma_filter filters[3];
    size_t n = 0;
    if (is_x86_elf(data)) filters[n++] = {LZMA_FILTER_X86, nullptr};
    filters[n++] = {LZMA_FILTER_LZMA2, &lzma2};
    filters[n] = {LZMA_VLI_UNKNOWN, nullptr};
    std::string out(lzma_stream_buffer_bound(data.size()), '\0');
    size_t used = 0;
    // CRC32: the check every xz decoder (busybox's too) knows; sha256 is checked after.
    lzma_ret rc = lzma_stream_buffer_encode(filters, LZMA_CHECK_CRC32, nullptr,
                                            reinterpret_cast<const uint8_t *>(data.data()), data.size(),
                                            reinterpret_cast<uint8_t *>(out.data()), &used, out.size());
    if (rc != LZMA_OK) throw Error(SPORE_EINTERNAL, "xz of the agent image failed: liblzma error " + std::to_string(rc));
    out.resize(used);
    return out;
}
#endif

#ifdef SPORE_IMAGE_ZSTD
std::string zstd_compress(const std::string &data) {
    std::string out(ZSTD_compressBound(data.size()), '\0');
    // Level 19, the strongest without --ultra (whose larger windows the
    // target's zstd would need --long or more memory to read).
    size_t n = ZSTD_compress(out.data(), out.size(), data.data(), data.size(), 19);
    if (ZSTD_isError(n)) throw Error(SPORE_EINTERNAL, std::string("zstd of the agent image failed: ") + ZSTD_getErrorName(n));
    out.resize(n);
    return out;
}
#endif

// The target's command that unpacks codec from stdin to stdout.
const char *decompress_command(ImageCodec codec) {
    switch (codec) {
    case ImageCodec::xz: return "xz -dc";
    case ImageCodec::zstd: return "zstd -qdc";
    case ImageCodec::gzip: return "gzip -dc";
    case ImageCodec::raw: break;
    }
    return "cat";
}

// The command whose presence (command -v) says the target can unpack codec.
const char *decompress_program(ImageCodec codec) {
    switch (codec) {
    case ImageCodec::xz: return "xz";
    case ImageCodec::zstd: return "zstd";
    case ImageCodec::gzip: return "gzip";
    case ImageCodec::raw: break;
    }
    return "cat";
}

// Strongest first: xz is ~11% smaller than zstd -19 on the agent and ~22%
// smaller than gzip -6 (docs/architecture.md, The static agent).
constexpr ImageCodec kStrongestFirst[] = {ImageCodec::xz, ImageCodec::zstd, ImageCodec::gzip};

}  // namespace

const char *codec_word(ImageCodec codec) {
    switch (codec) {
    case ImageCodec::xz: return "xz";
    case ImageCodec::zstd: return "zstd";
    case ImageCodec::gzip: return "gz";
    case ImageCodec::raw: break;
    }
    return "raw";
}

bool can_compress(ImageCodec codec) {
    switch (codec) {
    case ImageCodec::raw:
    case ImageCodec::gzip: return true;
#ifdef SPORE_IMAGE_XZ
    case ImageCodec::xz: return true;
#endif
#ifdef SPORE_IMAGE_ZSTD
    case ImageCodec::zstd: return true;
#endif
    default: return false;
    }
}

std::string compress_image(const std::string &data, ImageCodec codec) {
    switch (codec) {
    case ImageCodec::raw: return data;
    case ImageCodec::gzip: return gzip_compress(data);
#ifdef SPORE_IMAGE_XZ
    case ImageCodec::xz: return xz_compress(data);
#endif
#ifdef SPORE_IMAGE_ZSTD
    case ImageCodec::zstd: return zstd_compress(data);
#endif
    default: break;
    }
    throw Error(SPORE_EINTERNAL, std::string("this program cannot compress with ") + codec_word(codec));
}

CompressOption parse_agent_compress(const cJSON *options) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(options, "agent_compress");
    if (!item) return CompressOption::automatic;
    if (cJSON_IsBool(item)) return cJSON_IsTrue(item) ? CompressOption::automatic : CompressOption::none;
    if (cJSON_IsString(item) && item->valuestring) {
        std::string_view v = item->valuestring;
        if (v == "auto") return CompressOption::automatic;
        if (v == "none") return CompressOption::none;
        if (v == "gzip") return CompressOption::gzip;
        if (v == "zstd") return CompressOption::zstd;
        if (v == "xz") return CompressOption::xz;
        throw Error(SPORE_EINVAL, "option 'agent_compress' must be true, false, \"auto\", \"xz\", \"zstd\", \"gzip\" or "
                                  "\"none\", not \"" + std::string(v.substr(0, 64)) + "\"");
    }
    throw Error(SPORE_EINVAL, "option 'agent_compress' must be a boolean or a string (auto, xz, zstd, gzip, none)");
}

const char *agent_compress_name(CompressOption option) {
    switch (option) {
    case CompressOption::automatic: return "auto";
    case CompressOption::none: return "none";
    case CompressOption::gzip: return "gzip";
    case CompressOption::zstd: return "zstd";
    case CompressOption::xz: return "xz";
    }
    return "auto";
}

namespace {
ImageCodec codec_of(CompressOption option) {
    switch (option) {
    case CompressOption::gzip: return ImageCodec::gzip;
    case CompressOption::zstd: return ImageCodec::zstd;
    case CompressOption::xz: return ImageCodec::xz;
    default: return ImageCodec::raw;
    }
}
}  // namespace

std::vector<ImageCodec> codecs_to_offer(CompressOption option) {
    std::vector<ImageCodec> out;
    if (option == CompressOption::none) return out;
    if (option == CompressOption::automatic) {
        for (ImageCodec c : kStrongestFirst)
            if (can_compress(c)) out.push_back(c);
        return out;
    }
    ImageCodec only = codec_of(option);
    if (!can_compress(only))
        throw Error(SPORE_EINVAL, std::string("agent_compress \"") + agent_compress_name(option) +
                                      "\" is not available here: this program compresses the agent image with gzip "
                                      "only (use \"auto\" or \"gzip\")");
    out.push_back(only);
    return out;
}

ImageCodec choose_codec(std::string_view ready_line, const std::vector<ImageCodec> &offered, CompressOption option) {
    std::string_view rest = ready_line.substr(std::min(ready_line.size(), std::string_view(kReadyMarker).size()));
    auto target_has = [rest](ImageCodec c) {
        std::string_view word = codec_word(c);
        for (size_t pos = rest.find(word); pos != std::string_view::npos; pos = rest.find(word, pos + 1)) {
            bool starts = pos > 0 && rest[pos - 1] == ' ';
            bool ends = pos + word.size() == rest.size() || rest[pos + word.size()] == ' ';
            if (starts && ends) return true;
        }
        return false;
    };
    for (ImageCodec c : offered)
        if (target_has(c)) return c;
    if (option != CompressOption::automatic && option != CompressOption::none)
        throw Error(SPORE_ECONNECT, std::string("agent_compress is \"") + agent_compress_name(option) +
                                        "\" but the target has no " + decompress_program(codec_of(option)) +
                                        " command (it offered:" + std::string(rest) + ")");
    return ImageCodec::raw;
}

std::string shell_quote(const std::string &word) {
    std::string out = "'";
    for (char c : word) {
        if (c == '\'') out += "'\\''";
        else out.push_back(c);
    }
    out.push_back('\'');
    return out;
}

std::string first_stage_script(const std::string &sha256, bool cache, const std::string &agent_args,
                               const std::vector<ImageCodec> &codecs) {
    // Kept short and strictly POSIX: it runs under dash, bash, busybox sh.
    // x: run a cached agent from dir $1 if that dir is ours and the file is
    //    executable there (test -x fails on noexec mounts).
    // m: mkdir $1 and any missing parents, noting each one made in M (newest
    //    first) so that a failure can take back those it leaves empty.
    // p: make dir $1 private (0700, ours, not a symlink).
    // f: fail with message $1, removing the empty directories made here.
    std::string s;
    // T makes the temp file's name unique even where $$ is not (first
    // stages in different pid namespaces sharing a directory).
    std::random_device rd;
    char nonce[17];
    std::snprintf(nonce, sizeof nonce, "%08x%08x", rd(), rd());
    // The login's umask goes to the agent (SPORE_UMASK), which takes it
    // back once running: 077 is for the private files made here only, and
    // what the agent and its programs create gets the account's usual modes.
    s += "SPORE_UMASK=$(umask);export SPORE_UMASK;umask 077;H=" + sha256 + ";T=" + nonce + ";A=\"" + agent_args + "\";M=\n";
    s += "x(){ [ -x \"$1/spore-agent-$H\" ]&&[ -O \"$1\" ]&&[ ! -L \"$1\" ]&&exec \"$1/spore-agent-$H\" $A; }\n";
    s += "m(){ case $1 in /?*);;*)return 1;;esac;[ -d \"${1%/*}\" ]||m \"${1%/*}\"||return 1;mkdir \"$1\" 2>/dev/null&&M=\"$1\n$M\"; }\n";
    s += "p(){ [ -n \"$1\" ]||return 1;[ -d \"$1\" ]||m \"$1\";[ -d \"$1\" ]&&[ ! -L \"$1\" ]&&[ -O \"$1\" ]&&chmod 700 \"$1\" 2>/dev/null&&[ -w \"$1\" ]; }\n";
    s += "f(){ printf '%s\\n' \"$M\"|while IFS= read -r c;do [ -z \"$c\" ]||rmdir \"$c\" 2>/dev/null;done;printf 'spore: %s\\n' \"$1\" >&2;exit 1; }\n";
    s += "D1=;D2=;[ -n \"${XDG_RUNTIME_DIR:-}\" ]&&D1=\"$XDG_RUNTIME_DIR/spore\";[ -n \"${HOME:-}\" ]&&D2=\"$HOME/.cache/spore\"\n";
    if (cache) {
        s += "[ -n \"$D1\" ]&&x \"$D1\";[ -n \"$D2\" ]&&x \"$D2\"\n";
    }
    s += "U=$(id -u 2>/dev/null||echo x)\n";
    if (cache) {
        s += "for d in /dev/shm /tmp /var/tmp;do x \"$d/spore-$U\";done\n";
    }
    // The decompressors the target has, strongest first; raw always works.
    s += "Z=\n";
    for (ImageCodec c : codecs)
        s += std::string("command -v ") + decompress_program(c) + " >/dev/null 2>&1&&Z=\"$Z " + codec_word(c) + "\"\n";
    // The parent answers with the byte count and the codec it chose.
    s += "echo \"SPORE-READY$Z raw\";read N Z||exit 1;G=\ncase $Z in ";
    for (ImageCodec c : codecs) s += std::string(codec_word(c)) + ")D='" + decompress_command(c) + "';;";
    s += "raw|'')D=cat;;*)f \"unknown image encoding '$Z'\";;esac\n";
    s += "for d in \"$D1\" \"$D2\" /dev/shm/spore-$U /tmp/spore-$U /var/tmp/spore-$U;do\n";
    s += " p \"$d\"||continue;t=\"$d/.spore-agent-$H.$$.$T\"\n";
    s += " if [ -z \"$G\" ];then\n";
    s += "  head -c \"$N\"|$D >\"$t\"||{ rm -f \"$t\";f \"cannot receive the agent image\"; }\n";
    s += "  G=$t\n";
    s += "  if command -v sha256sum >/dev/null 2>&1;then set -- $(sha256sum \"$t\");[ \"$1\" = \"$H\" ]||{ rm -f \"$t\";f \"agent image hash mismatch\"; };fi\n";
    s += " else cp \"$G\" \"$t\" 2>/dev/null||{ rm -f \"$t\";continue; };fi\n";
    s += " chmod 700 \"$t\";o=$(\"$t\" --version 2>&1)&&{\n";
    if (cache) {
        s += "  F=\"$d/spore-agent-$H\";mv -f \"$t\" \"$F\";[ \"$G\" = \"$t\" ]||rm -f \"$G\";exec \"$F\" $A\n";
    } else {
        s += "  [ \"$G\" = \"$t\" ]||rm -f \"$G\";exec \"$t\" --unlink $A\n";
    }
    // The probe failed. If a trivial script runs in this directory, the
    // directory executes programs and the image is what does not run here
    // (another machine's binary, a truncated file): trying further
    // directories would only end in "no writable directory". Else the
    // directory is mounted noexec: try the next one.
    s += " };S=$?;o=${o%%\"\n\"*};e=\"$d/.spore-probe.$$.$T\"\n";
    s += " echo '#!/bin/sh' >\"$e\"&&chmod 700 \"$e\"&&\"$e\" 2>/dev/null&&{ rm -f \"$e\" \"$t\" \"$G\";f \"" +
         std::string(kImageDoesNotRun) + " (exit status $S${o:+: $o})\"; }\n";
    s += " rm -f \"$e\";[ \"$G\" = \"$t\" ]||rm -f \"$t\"\n";
    s += "done\n";
    s += "[ -n \"$G\" ]&&rm -f \"$G\";f \"no writable directory allows executing the agent\"\n";
    return s;
}

}  // namespace spore

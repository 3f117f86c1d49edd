// The master's half of file transfers (docs/protocol.md, "File transfers"):
// put and get of files and of bytes in memory, to and from any context,
// through any number of hops. Everything runs on the caller's thread: it
// reads or writes the local file and sends chunks or acknowledgements
// itself; the broker thread only moves channel messages to it.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "core/json.h"
#include "controller/router.h"

namespace spore {

struct TransferOptions {
    std::optional<uint32_t> mode;  // permission bits for the destination (default: the source's)
    bool preserve_owner = false;   // set the source's uid/gid where permitted
    bool preserve_mtime = true;
    bool sync = true;              // fsync the destination before the rename
    uint64_t window = kChanDefaultWindow;
    uint64_t max_size = 128u << 20;  // get_bytes: the largest content taken into memory
    int timeout_ms = -1;           // the whole transfer; -1 none
};

// Reads the options object of spore_put_file and friends: "mode" (int),
// "preserve_owner", "preserve_mtime", "sync" (bools), "window", "max_size",
// "timeout" (ints). Unknown keys and wrong types throw EINVAL.
TransferOptions parse_transfer_options(const cJSON *opts);

// Each throws spore::Error and returns the destination side's JSON result
// ({"size": N, ...}).
std::string put_file(Router &m, const std::shared_ptr<ContextState> &ctx, const std::string &local_path,
                     const std::string &remote_path, const TransferOptions &o);
std::string put_bytes(Router &m, const std::shared_ptr<ContextState> &ctx, std::string_view data,
                      const std::string &remote_path, const TransferOptions &o);
std::string get_file(Router &m, const std::shared_ptr<ContextState> &ctx, const std::string &remote_path,
                     const std::string &local_path, const TransferOptions &o);
// Directory trees: remote_dir (or local_dir) is created if missing and
// receives every directory, regular file and symlink of the source tree
// (other file types are skipped); what it held before and the source lacks
// is kept. Returns {"files", "dirs", "links", "bytes"}.
std::string put_tree(Router &m, const std::shared_ptr<ContextState> &ctx, const std::string &local_dir,
                     const std::string &remote_dir, const TransferOptions &o);
std::string get_tree(Router &m, const std::shared_ptr<ContextState> &ctx, const std::string &remote_dir,
                     const std::string &local_dir, const TransferOptions &o);
// {json metadata, content}.
std::pair<std::string, std::string> get_bytes(Router &m, const std::shared_ptr<ContextState> &ctx,
                                              const std::string &remote_path, const TransferOptions &o);

}  // namespace spore

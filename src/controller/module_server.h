// The master's source of Python modules for remote workers
// (docs/protocol.md, "Module messages"): modules a program registered,
// then the directories of the router option module_path, minus the names
// of module_deny. An answer carries what was asked for plus the modules
// those import, so a worker usually needs one round trip per call.
//
// What it may read is narrow on purpose, since the names come from remote
// contexts: only paths built from a valid module name (plain identifier
// components) under a served directory, only files ending ".py", at most
// kMaxModuleSourceBytes each. "spore:worker" is the caller's business.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "controller/python_imports.h"
#include "core/messages.h"

namespace spore {

inline constexpr size_t kMaxModuleSourceBytes = 8u << 20;

struct ModuleStats {
    uint64_t requests = 0;      // names asked for
    uint64_t modules_sent = 0;  // found entries answered, asked for or not
    uint64_t bytes_sent = 0;    // their source bytes
    uint64_t refused = 0;       // names asked for that the deny list refused
};

class ModuleServer {
public:
    // Appended to the search order; a directory already present is ignored.
    // Trailing slashes are dropped; an empty string is ignored. Modules of
    // a directory that is not `proactive` are served when asked for by
    // name, never as extras of an answer: installed packages, which the
    // target may have itself.
    void add_path(const std::string &dir, bool proactive = true);
    // Refuses the name and everything under it ("secret" also refuses
    // "secret.x", not "secrets").
    void deny(const std::string &name_or_prefix);
    // Served before anything in the directories; "__main__" is only ever
    // served from here. Replaces an earlier registration of the name.
    // Throws Error(SPORE_EINVAL) for an invalid name, a source that is not
    // UTF-8 or is larger than kMaxModuleSourceBytes.
    void add_module(const std::string &name, const std::string &file, std::string source, bool package);

    // Not found, with a reason, for: an invalid name ("not a module name"),
    // a denied one ("refused by the controller's deny list"), a name
    // nothing serves ("no module named 'x' in the controller", "... ('a' is
    // not a package)"), a file that cannot be read, is larger than
    // kMaxModuleSourceBytes or is not UTF-8 (the reason names the file).
    // A submodule is looked for only where its parent package lives, as
    // Python does; a directory without __init__.py is a namespace package
    // (found, empty source, file = the directory) only when no served
    // directory holds a module or regular package of that name.
    ModuleEntry find(const std::string &name);

    // An entry for each distinct name of `names`, in order, found or not
    // and whether or not already sent; then, while extra_budget_bytes of
    // source allow, the modules the found ones import (transitively) that
    // can be served (registered, or in a proactive directory) and are
    // neither asked for nor in already_sent. Imports
    // that cannot be served are left out. Every found entry returned is
    // added to already_sent.
    std::vector<ModuleEntry> answer(const std::vector<std::string> &names, std::set<std::string> &already_sent,
                                    size_t extra_budget_bytes);

    ModuleStats stats() const;

private:
    // One mutex for everything, held across the file reads of a lookup:
    // answers are rare (one per module-request) and the reads are cached.
    struct Registered {
        std::string file;
        std::string source;
        std::string hash;
        bool package = false;
    };

    // A file read once; reused while its identity, size and mtime stay.
    struct CachedFile {
        dev_t dev = 0;
        ino_t ino = 0;
        uint64_t size = 0;
        int64_t mtime_sec = 0;
        int64_t mtime_nsec = 0;
        bool ok = false;
        std::string source;
        std::string hash;
        std::string reason;
    };

    struct Location;

    bool denied(const std::string &name) const;
    // proactive (if given) is set when the entry may travel as an extra.
    ModuleEntry find_locked(const std::string &name, bool *refused, bool *proactive = nullptr);
    Location locate(const std::string &name, const std::vector<size_t> &dirs) const;
    const CachedFile &read_source(const std::string &path);
    const std::vector<ImportRef> &imports_of(const ModuleEntry &e);

    mutable std::mutex mu_;
    std::vector<std::string> paths_;
    std::vector<bool> proactive_;  // per entry of paths_
    std::vector<std::string> deny_;
    std::map<std::string, Registered> registered_;
    std::unordered_map<std::string, CachedFile> files_;
    size_t cached_bytes_ = 0;
    std::unordered_map<std::string, std::vector<ImportRef>> scans_;  // file + '\0' + hash
    ModuleStats stats_;
};

}  // namespace spore

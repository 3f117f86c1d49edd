#include "controller/module_server.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstring>
#include <deque>
#include <unordered_set>

#include "core/error.h"
#include "core/file_io.h"
#include "core/image.h"
#include "core/json.h"
#include "core/loop.h"

namespace spore {

namespace {

// Past these the caches start over: they only save rereading and
// rescanning, and a long-lived router must not grow without bound.
constexpr size_t kMaxCachedSourceBytes = 256u << 20;
constexpr size_t kMaxCachedScans = 16384;
// Lookups of imported names per answer (most of them miss: standard
// library and third-party names the served directories do not hold).
constexpr size_t kMaxExtraLookups = 4096;

std::string not_here(const std::string &name) { return "no module named '" + name + "' in the controller"; }

std::string join_path(const std::string &dir, const std::string &rel) {
    return dir == "/" ? "/" + rel : dir + "/" + rel;
}

bool stat_is(const std::string &path, bool want_dir, struct stat &st) {
    if (::stat(path.c_str(), &st) != 0) return false;
    return want_dir ? S_ISDIR(st.st_mode) : S_ISREG(st.st_mode);
}

}  // namespace

struct ModuleServer::Location {
    enum Kind { None, Module, Package, Namespace } kind = None;
    std::string path;             // the .py file, or the first portion's directory
    size_t dir = 0;               // the served directory holding a module or package
    std::vector<size_t> portions; // the served directories holding a namespace package
    struct stat st {};
};

void ModuleServer::add_path(const std::string &dir, bool proactive) {
    std::string d = dir;
    while (d.size() > 1 && d.back() == '/') d.pop_back();
    if (d.empty()) return;
    std::lock_guard<std::mutex> lk(mu_);
    for (const std::string &p : paths_)
        if (p == d) return;
    paths_.push_back(std::move(d));
    proactive_.push_back(proactive);
}

void ModuleServer::deny(const std::string &name_or_prefix) {
    std::string p = name_or_prefix;
    while (!p.empty() && p.back() == '.') p.pop_back();
    if (p.empty()) return;
    std::lock_guard<std::mutex> lk(mu_);
    for (const std::string &d : deny_)
        if (d == p) return;
    deny_.push_back(std::move(p));
}

void ModuleServer::add_module(const std::string &name, const std::string &file, std::string source, bool package) {
    if (!valid_module_name(name)) throw Error(SPORE_EINVAL, "not a module name: '" + name + "'");
    if (source.size() > kMaxModuleSourceBytes)
        throw Error(SPORE_EINVAL, "the source of module '" + name + "' is larger than 8 MiB");
    if (!valid_utf8(source))
        throw Error(SPORE_EINVAL, "the source of module '" + name + "' is not UTF-8 text without NUL bytes");
    Registered r;
    r.file = file;
    r.hash = sha256_hex(source);
    r.source = std::move(source);
    r.package = package;
    std::lock_guard<std::mutex> lk(mu_);
    registered_[name] = std::move(r);
}

ModuleEntry ModuleServer::find(const std::string &name) {
    std::lock_guard<std::mutex> lk(mu_);
    return find_locked(name, nullptr);
}

ModuleStats ModuleServer::stats() const {
    std::lock_guard<std::mutex> lk(mu_);
    return stats_;
}

bool ModuleServer::denied(const std::string &name) const {
    for (const std::string &p : deny_) {
        if (name.size() < p.size() || name.compare(0, p.size(), p) != 0) continue;
        if (name.size() == p.size() || name[p.size()] == '.') return true;
    }
    return false;
}

ModuleServer::Location ModuleServer::locate(const std::string &name, const std::vector<size_t> &dirs) const {
    Location loc;
    std::string rel = name;
    for (char &c : rel)
        if (c == '.') c = '/';
    // A valid module name has only identifier parts, so rel cannot climb out
    // of the served directory; checked anyway since that is the whole point.
    assert(plain_relative(rel));
    if (!plain_relative(rel)) return loc;
    // Python's order within one directory: a package, then a module, and a
    // bare directory only when no directory holds either.
    for (size_t d : dirs) {
        const std::string base = join_path(paths_[d], rel);
        struct stat st {};
        if (stat_is(base + "/__init__.py", false, st)) {
            loc.kind = Location::Package;
            loc.path = base + "/__init__.py";
        } else if (stat_is(base + ".py", false, st)) {
            loc.kind = Location::Module;
            loc.path = base + ".py";
        } else {
            if (stat_is(base, true, st)) loc.portions.push_back(d);
            continue;
        }
        loc.dir = d;
        loc.st = st;
        loc.portions.clear();
        return loc;
    }
    if (!loc.portions.empty()) {
        loc.kind = Location::Namespace;
        loc.path = join_path(paths_[loc.portions.front()], rel);
    }
    return loc;
}

const ModuleServer::CachedFile &ModuleServer::read_source(const std::string &path) {
    struct stat st {};
    auto same = [](const CachedFile &c, const struct stat &s) {
        return c.dev == s.st_dev && c.ino == s.st_ino && c.size == uint64_t(s.st_size) &&
               c.mtime_sec == int64_t(s.st_mtim.tv_sec) && c.mtime_nsec == int64_t(s.st_mtim.tv_nsec);
    };
    auto it = files_.find(path);
    if (it != files_.end() && ::stat(path.c_str(), &st) == 0 && same(it->second, st)) return it->second;

    CachedFile c;
    // O_NONBLOCK: a FIFO swapped in after the lookup's stat must not hang
    // the caller; fstat below turns it away.
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
    if (!fd || ::fstat(fd.get(), &st) != 0) {
        c.reason = "cannot read " + path + ": " + std::strerror(errno);
    } else if (!S_ISREG(st.st_mode)) {
        c.reason = path + " is not a regular file";
    } else if (uint64_t(st.st_size) > kMaxModuleSourceBytes) {
        c.reason = path + " is larger than the 8 MiB the controller serves";
    } else {
        std::string data;
        data.resize(size_t(st.st_size) + 1);
        size_t got = 0;
        int err = 0;
        for (;;) {
            if (got == data.size()) {
                if (data.size() > kMaxModuleSourceBytes) break;
                data.resize(std::min(data.size() * 2, kMaxModuleSourceBytes + 1));
            }
            ssize_t r = ::read(fd.get(), &data[got], data.size() - got);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) {
                err = errno;
                break;
            }
            if (r == 0) break;
            got += size_t(r);
        }
        data.resize(got);
        if (err) {
            c.reason = "cannot read " + path + ": " + std::strerror(err);
        } else if (got > kMaxModuleSourceBytes) {
            c.reason = path + " is larger than the 8 MiB the controller serves";
        } else if (!valid_utf8(data)) {
            c.reason = path + " is not UTF-8 text (module sources travel as UTF-8)";
        } else {
            c.ok = true;
            c.hash = sha256_hex(data);
            c.source = std::move(data);
        }
    }
    c.dev = st.st_dev;
    c.ino = st.st_ino;
    c.size = uint64_t(st.st_size);
    c.mtime_sec = int64_t(st.st_mtim.tv_sec);
    c.mtime_nsec = int64_t(st.st_mtim.tv_nsec);

    if (it != files_.end()) {
        cached_bytes_ -= it->second.source.size();
        files_.erase(it);
    }
    if (cached_bytes_ + c.source.size() > kMaxCachedSourceBytes) {
        files_.clear();
        cached_bytes_ = 0;
    }
    cached_bytes_ += c.source.size();
    return files_[path] = std::move(c);
}

ModuleEntry ModuleServer::find_locked(const std::string &name, bool *refused, bool *proactive) {
    bool ignored;
    if (!proactive) proactive = &ignored;
    *proactive = false;
    ModuleEntry e;
    e.name = name;
    if (!valid_module_name(name)) {
        e.reason = "not a module name";
        return e;
    }
    if (denied(name)) {
        e.reason = "refused by the controller's deny list";
        if (refused) *refused = true;
        return e;
    }
    if (auto r = registered_.find(name); r != registered_.end()) {
        e.found = true;
        e.package = r->second.package;
        e.file = r->second.file;
        e.source = r->second.source;
        e.hash = r->second.hash;
        *proactive = true;
        return e;
    }
    if (name == "__main__" || name.starts_with("__main__.")) {
        e.reason = not_here(name);
        return e;
    }

    // Python looks for a submodule only where its parent package lives
    // (its __path__), so each parent narrows the directories searched.
    std::vector<size_t> dirs(paths_.size());
    for (size_t i = 0; i < dirs.size(); ++i) dirs[i] = i;
    for (size_t dot = name.find('.'); dot != std::string::npos; dot = name.find('.', dot + 1)) {
        const std::string parent = name.substr(0, dot);
        if (auto r = registered_.find(parent); r != registered_.end()) {
            if (!r->second.package) {
                e.reason = not_here(name) + " ('" + parent + "' is not a package)";
                return e;
            }
            // A registered package's own directory is not served: its
            // submodules come from the served directories.
            dirs.resize(paths_.size());
            for (size_t i = 0; i < dirs.size(); ++i) dirs[i] = i;
            continue;
        }
        Location p = locate(parent, dirs);
        switch (p.kind) {
        case Location::None:
            e.reason = not_here(name);
            return e;
        case Location::Module:
            e.reason = not_here(name) + " ('" + parent + "' is not a package)";
            return e;
        case Location::Package:
            dirs.assign(1, p.dir);
            break;
        case Location::Namespace:
            dirs = std::move(p.portions);
            break;
        }
    }

    Location loc = locate(name, dirs);
    switch (loc.kind) {
    case Location::None:
        e.reason = not_here(name);
        return e;
    case Location::Namespace:
        e.found = true;
        e.package = true;
        e.file = loc.path;
        e.hash = sha256_hex("");
        *proactive = proactive_[loc.portions.front()];
        return e;
    case Location::Module:
    case Location::Package:
        break;
    }
    const CachedFile &c = read_source(loc.path);
    e.file = loc.path;
    if (!c.ok) {
        e.reason = c.reason;
        return e;
    }
    e.found = true;
    *proactive = proactive_[loc.dir];
    e.package = loc.kind == Location::Package;
    e.source = c.source;
    e.hash = c.hash;
    return e;
}

const std::vector<ImportRef> &ModuleServer::imports_of(const ModuleEntry &e) {
    std::string key = e.file;
    key += '\0';
    key += e.hash;
    if (auto it = scans_.find(key); it != scans_.end()) return it->second;
    if (scans_.size() >= kMaxCachedScans) scans_.clear();
    return scans_[std::move(key)] = scan_python_imports(e.source);
}

std::vector<ModuleEntry> ModuleServer::answer(const std::vector<std::string> &names,
                                              std::set<std::string> &already_sent, size_t extra_budget_bytes) {
    std::lock_guard<std::mutex> lk(mu_);
    std::vector<ModuleEntry> out;
    std::unordered_set<std::string> considered;
    for (const std::string &name : names) {
        ++stats_.requests;
        if (!considered.insert(name).second) continue;
        bool refused = false;
        out.push_back(find_locked(name, &refused));
        if (refused) ++stats_.refused;
    }

    // Breadth first, so the modules nearest to what was asked for come
    // first when the budget runs out.
    std::deque<size_t> queue;
    for (size_t i = 0; i < out.size(); ++i)
        if (out[i].found) queue.push_back(i);
    size_t spent = 0, lookups = 0;
    while (!queue.empty() && spent < extra_budget_bytes && lookups < kMaxExtraLookups) {
        const size_t i = queue.front();
        queue.pop_front();
        const std::vector<std::string> candidates =
            import_candidates(imports_of(out[i]), out[i].name, out[i].package);
        for (const std::string &cand : candidates) {
            if (spent >= extra_budget_bytes || lookups >= kMaxExtraLookups) break;
            if (!considered.insert(cand).second || already_sent.count(cand) || denied(cand)) continue;
            ++lookups;
            bool proactive = false;
            ModuleEntry e = find_locked(cand, nullptr, &proactive);
            // A module that does not fit is left for the worker to ask for;
            // smaller ones after it may still fit.
            if (!e.found || !proactive || e.source.size() > extra_budget_bytes - spent) continue;
            spent += e.source.size();
            out.push_back(std::move(e));
            queue.push_back(out.size() - 1);
        }
    }

    for (const ModuleEntry &e : out) {
        if (!e.found) continue;
        already_sent.insert(e.name);
        ++stats_.modules_sent;
        stats_.bytes_sent += e.source.size();
    }
    return out;
}

}  // namespace spore

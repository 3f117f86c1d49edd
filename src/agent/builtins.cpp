// The table of built-in functions: the name a call gives, what runs it, and
// whether it blocks (and so runs on a worker thread).
#include "agent/builtins_util.h"

namespace spore::agent {

namespace {

using namespace detail;

constexpr Builtin kBuiltins[] = {
    {"sys.ping", sys_ping, false},
    {"sys.echo", sys_echo, false},
    {"sys.getenv", sys_getenv, false},
    {"sys.info", sys_info, false},
    {"proc.run", proc_run, true},
    {"fs.stat", fs_stat, true},
    {"fs.read", fs_read, true},
    {"fs.write", fs_write, true},
    {"fs.put", fs_put, true, fs_put_prepare},
    {"fs.get", fs_get, true},
    {"fs.put_batch", fs_put_batch, true},
    {"proc.start", proc_start, true, proc_start_prepare},
    {"proc.signal", proc_signal, false},
    {"proc.resize", proc_resize, false},
    {"fs.get_batch", fs_get_batch, true},
    {"fs.walk", fs_walk, true},
    {"fs.list", fs_list, true},
    {"fs.mkdir", fs_mkdir, true},
    {"fs.remove", fs_remove, true},
    {"fs.rename", fs_rename, true},
    {"fs.chmod", fs_chmod, true},
    {"fs.chown", fs_chown, true},
    {"fs.readlink", fs_readlink, true},
    {"fs.symlink", fs_symlink, true},
    {"fs.mktemp", fs_mktemp, true},
};

}  // namespace

const Builtin *find_builtin(std::string_view name) {
    for (const Builtin &b : kBuiltins)
        if (b.name == name) return &b;
    return nullptr;
}

}  // namespace spore::agent

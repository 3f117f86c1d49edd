// What the module server needs to know about Python source without running
// Python: whether a string is a module name, and which modules a source
// file might import, so an answer can carry them before the worker asks
// (docs/protocol.md, "Module messages"). The scanner reads tokens,
// not a grammar: it may miss an import hidden in unusual syntax, which only
// costs the worker a round trip, but it never takes text inside a string or
// a comment for an import, and it is linear and bounded on any input,
// since the input is whatever files sit in the served directories.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "core/messages.h"

namespace spore {

inline constexpr size_t kMaxModuleNameLength = 200;
// The scanner stops after this many statements, or this many imported
// names in all, so a generated file cannot make an answer unbounded.
inline constexpr size_t kMaxImportRefs = 4096;
inline constexpr size_t kMaxImportNames = 16384;

// valid_module_name (core/messages.h) says what a module name is.

// One import statement. `import a.b as c, d` gives two refs {0, "a.b", {}}
// and {0, "d", {}}; `from ..pkg import (x, y as z)` gives {2, "pkg", {"x",
// "y"}}; `from . import x` gives {1, "", {"x"}}; `from m import *` gives
// {0, "m", {"*"}}. Aliases are dropped: only what is imported matters.
struct ImportRef {
    int level = 0;                   // leading dots of a from-import
    std::string module;              // may be empty for `from . import x`
    std::vector<std::string> names;  // empty for a plain `import`
};

std::vector<ImportRef> scan_python_imports(std::string_view source);

// The absolute names that the refs of module `importer` may load as
// modules: `import a.b.c` -> a, a.b, a.b.c; `from X import y` -> X's
// parents, X, and X.y (y may be a submodule or just an attribute).
// Relative levels are resolved against the importer's package (the importer
// itself when it is a package); a ref with more dots than that package has
// parts is dropped, as Python would refuse it. Deduplicated in first-seen
// order, invalid names left out.
std::vector<std::string> import_candidates(const std::vector<ImportRef> &refs, const std::string &importer,
                                           bool importer_is_package);

}  // namespace spore

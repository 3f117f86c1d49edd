// The controller's side of module serving: the import scanner, the names it
// leads to, and ModuleServer's lookups and answers on a real temp directory.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "controller/module_server.h"
#include "controller/python_imports.h"
#include "core/error.h"
#include "core/image.h"

using namespace spore;
namespace fsys = std::filesystem;

namespace {

using V = std::vector<std::string>;

// Each ref as "level:module" or "level:module:name,name".
V scan(std::string_view src) {
    V out;
    for (const ImportRef &r : scan_python_imports(src)) {
        std::string s = std::to_string(r.level) + ":" + r.module;
        for (size_t i = 0; i < r.names.size(); ++i) s += (i ? "," : ":") + r.names[i];
        out.push_back(s);
    }
    return out;
}

V cands(std::string_view src, const std::string &importer, bool is_package = false) {
    return import_candidates(scan_python_imports(src), importer, is_package);
}

}  // namespace

// ------------------------------------------------------------ module names

TEST(ModuleName, Valid) {
    for (const char *n : {"a", "a.b", "_x.y_1", "__main__", "A.B9._", "os.path"}) EXPECT_TRUE(valid_module_name(n)) << n;
    std::string longest;
    while (longest.size() < kMaxModuleNameLength) longest += longest.empty() ? "a" : ".a";
    longest.resize(kMaxModuleNameLength);
    if (longest.back() == '.') longest.back() = 'b';
    EXPECT_TRUE(valid_module_name(longest));
    EXPECT_FALSE(valid_module_name(longest + "x"));
}

TEST(ModuleName, Invalid) {
    for (const char *n : {"", ".", "a.", ".a", "a..b", "1a", "a.1b", "a-b", "a/b", "../etc/passwd", "/etc/shadow",
                          "os.path/../x", "a b", "caf\xc3\xa9", "spore:worker", "a\\b", "..", "a.b.", "~root"})
        EXPECT_FALSE(valid_module_name(n)) << n;
    EXPECT_FALSE(valid_module_name(std::string("a\0b", 3)));
}

// ----------------------------------------------------------------- scanner

TEST(ImportScan, PlainAndFrom) {
    EXPECT_EQ(scan("import os\nimport a.b, c as d\nfrom x.y import z, w as q\n"),
              (V{"0:os", "0:a.b", "0:c", "0:x.y:z,w"}));
    EXPECT_EQ(scan("import a . b as c"), (V{"0:a.b"}));
    EXPECT_EQ(scan("from m import *\n"), (V{"0:m:*"}));
    EXPECT_EQ(scan("import a\r\nimport b\rimport c"), (V{"0:a", "0:b", "0:c"}));
}

TEST(ImportScan, StringsAreNotCode) {
    EXPECT_EQ(scan("s = \"import evil\"\nt = 'from evil import x'\n"), V{});
    EXPECT_EQ(scan("x = \"a\\\"; import evil\"\nimport good\n"), (V{"0:good"}));
    // In a raw string a backslash still keeps the quote from closing it.
    EXPECT_EQ(scan("x = r\"\\\"; import evil\"\nimport good\n"), (V{"0:good"}));
    EXPECT_EQ(scan("x = 'it''s'; import good"), (V{"0:good"}));
    for (const char *prefix : {"r", "b", "f", "u", "rb", "Rb", "bR", "BR", "fr", "Rf", "F", "U", "t"}) {
        std::string src = std::string("x = ") + prefix + "'import evil'; y = " + prefix + "\"from e import v\"\n" +
                          prefix + "'''\nimport evil\n'''\nimport good\n";
        EXPECT_EQ(scan(src), (V{"0:good"})) << prefix;
    }
    // A word that is not a prefix is a name followed by a string.
    EXPECT_EQ(scan("print'import evil'\nimport good"), (V{"0:good"}));
}

TEST(ImportScan, TripleQuotes) {
    EXPECT_EQ(scan("\"\"\"\nimport evil\n\"\"\"\nimport good\n'''\nfrom evil import x\n'''\n"), (V{"0:good"}));
    EXPECT_EQ(scan("x = \"\"\" a \" b \"\" c ' ''' \\\"\"\" import evil\"\"\"\nimport good"), (V{"0:good"}));
    EXPECT_EQ(scan("x = ''''''\nimport good"), (V{"0:good"}));
    EXPECT_EQ(scan("def f():\n    \"\"\"Doc.\n\n    import evil\n    \"\"\"\n    import good\n"), (V{"0:good"}));
}

TEST(ImportScan, FStrings) {
    // Replacement fields may hold strings, nested f-strings (with the same
    // quote since 3.12), format specs with nested fields, and escaped braces.
    EXPECT_EQ(scan("x = f\"{d[\"import evil\"]} {{import evil}} {a!r:>{w}} {b['k']:{'<'}10}\"\nimport good\n"),
              (V{"0:good"}));
    EXPECT_EQ(scan("x = f'''{\"\"\"\nimport evil\n\"\"\"}'''\nimport good\n"), (V{"0:good"}));
    EXPECT_EQ(scan("x = f\"{f'{f\"{1}\"}'} import evil\"\nimport good"), (V{"0:good"}));
    EXPECT_EQ(scan("x = f\"\\N{EM DASH} {y} import evil\"\nimport good"), (V{"0:good"}));
    EXPECT_EQ(scan("x = rf\"\\{y} import evil\"\nimport good"), (V{"0:good"}));
    EXPECT_EQ(scan("x = f\"{x:'>10} import evil\"\nimport good"), (V{"0:good"}));
    // A format spec that never closes ends with its string.
    EXPECT_EQ(scan("x = f\"{x:>10\"\nimport good"), (V{"0:good"}));
    // Comments inside a multi-line field (3.12).
    EXPECT_EQ(scan("x = f'''{\n  y  # }'''; import evil\n}'''\nimport good"), (V{"0:good"}));
}

TEST(ImportScan, Comments) {
    EXPECT_EQ(scan("# import evil\nimport good  # from evil import x\n#!/usr/bin/env python\n"), (V{"0:good"}));
    EXPECT_EQ(scan("x = 1 # a string starts here ' and never ends\nimport good"), (V{"0:good"}));
}

TEST(ImportScan, Continuations) {
    EXPECT_EQ(scan("import a, \\\n    b\nfrom c \\\n  import d\nfrom e import f, \\\n  g\n"),
              (V{"0:a", "0:b", "0:c:d", "0:e:f,g"}));
    EXPECT_EQ(scan("x = 1 + \\\nimport_me\n"), V{});
    EXPECT_EQ(scan("x = \"abc\\\nimport evil\"\nimport good"), (V{"0:good"}));
    EXPECT_EQ(scan("import a, \\\r\n b"), (V{"0:a", "0:b"}));
}

TEST(ImportScan, ParenthesisedLists) {
    EXPECT_EQ(scan("from p import (a,\n  b as c,  # a comment\n\n  d,\n)\nimport e"), (V{"0:p:a,b,d", "0:e"}));
    EXPECT_EQ(scan("from . import (x, y)"), (V{"1::x,y"}));
    // A newline inside brackets does not start a statement.
    EXPECT_EQ(scan("call(a,\nimport_me, [\nimport x])\nimport good"), (V{"0:good"}));
}

TEST(ImportScan, Relative) {
    EXPECT_EQ(scan("from . import x\nfrom .. import (y, z)\nfrom ..pkg.sub import w\nfrom ...up import *\n"
                   "from .import q\nfrom .mod import r"),
              (V{"1::x", "2::y,z", "2:pkg.sub:w", "3:up:*", "1::q", "1:mod:r"}));
}

TEST(ImportScan, Placement) {
    EXPECT_EQ(scan("x = 1; import a\ndef f():\n    import b\n    if x:\n        from c import d\n"
                   "try: import e\nexcept ImportError: import f\nclass K: import g\n"
                   "if TYPE_CHECKING:\n\tfrom h import (i)\n@dec\ndef g(x: int = 1) -> None: import j\n"),
              (V{"0:a", "0:b", "0:c:d", "0:e", "0:f", "0:g", "0:h:i", "0:j"}));
}

TEST(ImportScan, NotStatements) {
    EXPECT_EQ(scan("def f():\n    yield from gen()\n    raise E from err\nimport_thing = 1\nmy.import_ = 2\n"
                   "x = importlib.import_module('m')\nfrom_ = 3\n"),
              V{});
    // Half statements make no ref and do not stop the scan.
    EXPECT_EQ(scan("import\nfrom\nfrom x\nfrom x import\nimport a.\nfrom import y\nimport ok"), (V{"0:ok"}));
}

TEST(ImportScan, UnterminatedAndGarbage) {
    // An unterminated one-line string ends at its line.
    EXPECT_EQ(scan("x = \"abc\nimport good\n"), (V{"0:good"}));
    // An unterminated triple-quoted one swallows the rest, as in Python.
    EXPECT_EQ(scan("x = '''never closed\nimport evil\n"), V{});
    const char binary[] = "import a\0b\n\xff\xfe import c\nimport d";
    EXPECT_EQ(scan(std::string(binary, sizeof binary - 1)), (V{"0:a", "0:d"}));

    std::mt19937 rng(12345);
    const char alpha[] = "import from as . , ( ) [ ] { } ; : \\ \n \r # ' \" f r b x y \t \0 \xff";
    const std::string alphabet(alpha, sizeof alpha - 1);
    for (int round = 0; round < 300; ++round) {
        std::string junk(size_t(rng() % 4000), '\0');
        for (char &c : junk) c = (round % 2) ? char(rng()) : alphabet[rng() % alphabet.size()];
        auto refs = scan_python_imports(junk);
        EXPECT_LE(refs.size(), kMaxImportRefs);
        for (const auto &r : refs) EXPECT_LE(r.module.size(), kMaxModuleNameLength);
    }
}

TEST(ImportScan, HugeInputsAreBounded) {
    auto t0 = std::chrono::steady_clock::now();
    std::string many;
    while (many.size() < (4u << 20)) many += "import a\n";
    EXPECT_EQ(scan_python_imports(many).size(), kMaxImportRefs);

    std::string names = "from x import ";
    for (int i = 0; i < 100000; ++i) names += "n" + std::to_string(i) + ", ";
    auto refs = scan_python_imports(names + "z");
    ASSERT_EQ(refs.size(), 1u);
    EXPECT_LE(refs[0].names.size(), kMaxImportNames);

    // A dotted name too long to be a module name makes no ref.
    std::string dotted = "import a";
    for (int i = 0; i < 500000; ++i) dotted += ".a";
    EXPECT_EQ(scan(dotted + "\nimport ok"), (V{"0:ok"}));

    EXPECT_EQ(scan(std::string(1 << 20, '(') + "\nimport x"), V{});
    EXPECT_EQ(scan("from " + std::string(1 << 20, '.') + " import x")[0], "1000::x");

    // f-strings nested past any real use are given up, not recursed into.
    std::string nested;
    for (int i = 0; i < 100000; ++i) nested += "f\"{";
    EXPECT_EQ(scan("import a\n" + nested + "\nimport b"), (V{"0:a"}));
    EXPECT_EQ(scan(std::string(1 << 20, '"')), V{});
    EXPECT_EQ(scan(std::string(1 << 20, '\\')), V{});
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20));
}

// -------------------------------------------------------------- candidates

TEST(ImportCandidates, Absolute) {
    EXPECT_EQ(cands("import a.b.c", "m"), (V{"a", "a.b", "a.b.c"}));
    EXPECT_EQ(cands("from X.Y import z, w", "m"), (V{"X", "X.Y", "X.Y.z", "X.Y.w"}));
    EXPECT_EQ(cands("from x import *", "m"), (V{"x"}));
    EXPECT_EQ(cands("import a.b\nimport a\nfrom a import b\nimport c", "m"), (V{"a", "a.b", "c"}));
}

TEST(ImportCandidates, Relative) {
    EXPECT_EQ(cands("from . import x", "pkg.mod"), (V{"pkg", "pkg.x"}));
    EXPECT_EQ(cands("from . import x", "pkg", true), (V{"pkg", "pkg.x"}));
    EXPECT_EQ(cands("from .sub import y", "pkg", true), (V{"pkg", "pkg.sub", "pkg.sub.y"}));
    EXPECT_EQ(cands("from .. import x", "a.b.c"), (V{"a", "a.x"}));
    EXPECT_EQ(cands("from ..s import x", "a.b", true), (V{"a", "a.s", "a.s.x"}));
    EXPECT_EQ(cands("from ... import x", "a.b.c.d"), (V{"a", "a.x"}));
}

TEST(ImportCandidates, TooManyDotsAndInvalidNames) {
    EXPECT_EQ(cands("from .. import x", "a.mod"), V{});
    EXPECT_EQ(cands("from . import x", "mod"), V{});
    EXPECT_EQ(cands("from . import x", "__main__"), V{});
    EXPECT_EQ(cands("from ... import x\nimport ok", "a.b", true), (V{"ok"}));
    EXPECT_EQ(cands("import caf\xc3\xa9\nfrom x import \xc3\xbc, y", "m"), (V{"x", "x.y"}));
}

// ------------------------------------------------------------ ModuleServer

class ModuleServerTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/spore-modsrv-XXXXXX";
        ASSERT_NE(mkdtemp(tmpl), nullptr);  // 0700
        root = tmpl;
    }
    void TearDown() override {
        std::error_code ec;
        fsys::permissions(root, fsys::perms::owner_all, ec);
        fsys::remove_all(root, ec);
    }

    std::string put(const std::string &rel, const std::string &content) {
        const std::string path = root + "/" + rel;
        fsys::create_directories(fsys::path(path).parent_path());
        std::ofstream(path, std::ios::binary) << content;
        return path;
    }
    std::string mkdir(const std::string &rel) {
        fsys::create_directories(root + "/" + rel);
        return root + "/" + rel;
    }

    static V names_of(const std::vector<ModuleEntry> &es) {
        V out;
        for (const auto &e : es) out.push_back(e.name);
        return out;
    }

    std::string root;
};

TEST_F(ModuleServerTest, ModulePackageNamespaceMissing) {
    put("srv/top.py", "import os\n");
    put("srv/pkg/__init__.py", "X = 1\n");
    put("srv/pkg/util.py", "Y = 2\n");
    put("srv/ns/inner.py", "Z = 3\n");
    ModuleServer s;
    s.add_path(root + "/srv/");

    ModuleEntry e = s.find("top");
    EXPECT_TRUE(e.found);
    EXPECT_FALSE(e.package);
    EXPECT_EQ(e.file, root + "/srv/top.py");
    EXPECT_EQ(e.source, "import os\n");
    EXPECT_EQ(e.hash, sha256_hex("import os\n"));

    e = s.find("pkg");
    EXPECT_TRUE(e.found && e.package);
    EXPECT_EQ(e.file, root + "/srv/pkg/__init__.py");
    e = s.find("pkg.util");
    EXPECT_TRUE(e.found && !e.package);
    EXPECT_EQ(e.source, "Y = 2\n");

    e = s.find("ns");
    EXPECT_TRUE(e.found && e.package);
    EXPECT_EQ(e.file, root + "/srv/ns");
    EXPECT_EQ(e.source, "");
    EXPECT_EQ(e.hash, sha256_hex(""));
    EXPECT_TRUE(s.find("ns.inner").found);

    e = s.find("nothere");
    EXPECT_FALSE(e.found);
    EXPECT_EQ(e.reason, "no module named 'nothere' in the controller");
    EXPECT_FALSE(s.find("pkg.nothere").found);
    EXPECT_FALSE(s.find("nothere.sub").found);
    e = s.find("top.sub");
    EXPECT_FALSE(e.found);
    EXPECT_NE(e.reason.find("'top' is not a package"), std::string::npos) << e.reason;
}

TEST_F(ModuleServerTest, SearchOrderFollowsPython) {
    put("d1/m.py", "one");
    put("d2/m.py", "two");
    put("d2/first.py", "two");
    put("d1/both/__init__.py", "package");
    put("d1/both.py", "module");
    put("d1/nsmod/x.py", "");
    put("d2/nsmod.py", "module beats namespace");
    put("d1/ns/a.py", "a");
    put("d2/ns/b.py", "b");
    put("d1/reg/__init__.py", "regular");
    put("d2/reg/x.py", "not in reg's __path__");
    ModuleServer s;
    s.add_path(root + "/d1");
    s.add_path(root + "/d2");
    s.add_path(root + "/d1");  // ignored: d1 stays first
    s.add_path("");
    EXPECT_EQ(s.find("m").source, "one");
    EXPECT_EQ(s.find("first").source, "two");
    EXPECT_EQ(s.find("both").source, "package");
    EXPECT_EQ(s.find("nsmod").source, "module beats namespace");
    EXPECT_EQ(s.find("ns").file, root + "/d1/ns");
    EXPECT_EQ(s.find("ns.a").source, "a");
    EXPECT_EQ(s.find("ns.b").source, "b");
    EXPECT_FALSE(s.find("reg.x").found);
}

TEST_F(ModuleServerTest, InvalidNamesNeverReachTheFileSystem) {
    put("secret.py", "outside");
    put("srv/inside.py", "inside");
    put("srv/data", "import x\n");      // not .py
    put("srv/data.txt", "import x\n");
    put("srv/.hidden.py", "hidden");
    ModuleServer s;
    s.add_path(root + "/srv");
    for (const char *n : {"../secret", "..secret", "...secret", "a..b", "/etc/shadow", "os.path/../x", "",
                          "srv/../secret", ".hidden", "spore:worker", "a b", "1x", "inside/", "~/x"}) {
        ModuleEntry e = s.find(n);
        EXPECT_FALSE(e.found) << n;
        EXPECT_EQ(e.reason, "not a module name") << n;
        EXPECT_EQ(e.name, n);
        EXPECT_TRUE(e.source.empty() && e.file.empty()) << n;
    }
    // Valid names, looked up as data/txt.py and inside/py.py.
    EXPECT_FALSE(s.find("data.txt").found);
    EXPECT_FALSE(s.find("inside.py").found);
    EXPECT_FALSE(s.find("data").found);
    EXPECT_FALSE(s.find("secret").found);
    EXPECT_TRUE(s.find("inside").found);

    // With "/" served, a name maps to <name as path>.py only: nothing that
    // is not a .py file is read.
    ModuleServer all;
    all.add_path("/");
    EXPECT_FALSE(all.find("etc.shadow").found);
    EXPECT_FALSE(all.find("etc.passwd").found);
    ModuleEntry etc = all.find("etc");
    EXPECT_TRUE(etc.source.empty());
    EXPECT_EQ(etc.file, etc.found ? "/etc" : "");
}

TEST_F(ModuleServerTest, NonRegularFilesAreNotRead) {
    ASSERT_EQ(mkfifo((root + "/fifo.py").c_str(), 0600), 0);
    mkdir("dir.py");
    ModuleServer s;
    s.add_path(root);
    EXPECT_FALSE(s.find("fifo").found);  // and it did not hang
    ModuleEntry e = s.find("dir");
    EXPECT_FALSE(e.found);
}

TEST_F(ModuleServerTest, DenyList) {
    put("secret/__init__.py", "");
    put("secret/x.py", "");
    put("secrets.py", "ok");
    ModuleServer s;
    s.add_path(root);
    s.deny("secret");
    for (const char *n : {"secret", "secret.x", "secret.nothere"}) {
        ModuleEntry e = s.find(n);
        EXPECT_FALSE(e.found) << n;
        EXPECT_EQ(e.reason, "refused by the controller's deny list") << n;
    }
    EXPECT_TRUE(s.find("secrets").found);
    s.add_module("secret.reg", "/x/reg.py", "registered", false);
    EXPECT_FALSE(s.find("secret.reg").found);  // the deny list wins over registration
}

TEST_F(ModuleServerTest, RegisteredModulesAndMain) {
    put("mod.py", "from disk");
    put("__main__.py", "never served from disk");
    put("__main__/__init__.py", "");
    put("regpkg/sub.py", "sub");
    ModuleServer s;
    s.add_path(root);
    EXPECT_FALSE(s.find("__main__").found);
    EXPECT_FALSE(s.find("__main__.x").found);
    EXPECT_EQ(s.find("mod").source, "from disk");

    s.add_module("mod", "/elsewhere/mod.py", "registered", false);
    ModuleEntry e = s.find("mod");
    EXPECT_TRUE(e.found);
    EXPECT_EQ(e.source, "registered");
    EXPECT_EQ(e.file, "/elsewhere/mod.py");
    EXPECT_EQ(e.hash, sha256_hex("registered"));

    s.add_module("__main__", "/home/me/script.py", "print(1)\n", false);
    e = s.find("__main__");
    EXPECT_TRUE(e.found);
    EXPECT_EQ(e.source, "print(1)\n");
    EXPECT_FALSE(s.find("__main__.x").found);

    // A registered package's submodules come from the served directories.
    s.add_module("regpkg", "/elsewhere/regpkg/__init__.py", "", true);
    EXPECT_EQ(s.find("regpkg.sub").source, "sub");

    EXPECT_THROW(s.add_module("../x", "f", "", false), Error);
    EXPECT_THROW(s.add_module("bad", "f", "\xff", false), Error);
    EXPECT_THROW(s.add_module("big", "f", std::string(kMaxModuleSourceBytes + 1, 'a'), false), Error);
}

TEST_F(ModuleServerTest, SourcesMustBeUtf8AndSmall) {
    put("latin.py", "# caf\xe9\n");
    put("nul.py", std::string("a\0b", 3));
    put("big.py", std::string(kMaxModuleSourceBytes + 1, '#'));
    put("edge.py", std::string(kMaxModuleSourceBytes, '#'));
    put("bom.py", "\xef\xbb\xbfx = '\xc3\xa9'\n");
    ModuleServer s;
    s.add_path(root);
    ModuleEntry e = s.find("latin");
    EXPECT_FALSE(e.found);
    EXPECT_NE(e.reason.find("UTF-8"), std::string::npos) << e.reason;
    EXPECT_FALSE(s.find("nul").found);
    e = s.find("big");
    EXPECT_FALSE(e.found);
    EXPECT_NE(e.reason.find("8 MiB"), std::string::npos) << e.reason;
    EXPECT_TRUE(s.find("edge").found);
    EXPECT_TRUE(s.find("bom").found);
}

TEST_F(ModuleServerTest, ReadsAreCachedUntilTheFileChanges) {
    const std::string path = put("m.py", "first\n");
    ModuleServer s;
    s.add_path(root);
    EXPECT_EQ(s.find("m").source, "first\n");
    // Unreadable now, but size and mtime are the same: served from the cache
    // (the test also holds as root, whom the mode does not stop).
    ASSERT_EQ(chmod(path.c_str(), 0), 0);
    EXPECT_EQ(s.find("m").source, "first\n");
    ASSERT_EQ(chmod(path.c_str(), 0600), 0);

    put("m.py", "second, longer\n");
    EXPECT_EQ(s.find("m").source, "second, longer\n");
    // Same size, different mtime.
    put("m.py", "third,  longer\n");
    timespec times[2] = {{0, UTIME_OMIT}, {1000000000, 0}};
    ASSERT_EQ(utimensat(AT_FDCWD, path.c_str(), times, 0), 0);
    EXPECT_EQ(s.find("m").source, "third,  longer\n");
}

class ModuleAnswerTest : public ModuleServerTest {
protected:
    void SetUp() override {
        ModuleServerTest::SetUp();
        put("app.py",
            "import helper\nfrom pkg import util\nimport os, json\nfrom . import nothing\n"
            "s = 'import notreal'\n");
        put("helper.py", "import deep\n");
        put("deep.py", "X = 1\n");
        put("pkg/__init__.py", "");
        put("pkg/util.py", "from .sibling import thing\n");
        put("pkg/sibling.py", "thing = 1\n");
        put("notreal.py", "never\n");
        s.add_path(root);
    }
    ModuleServer s;
};

TEST_F(ModuleAnswerTest, ClosureAndAlreadySent) {
    std::set<std::string> sent;
    auto out = s.answer({"app"}, sent, 1 << 20);
    EXPECT_EQ(names_of(out), (V{"app", "helper", "pkg", "pkg.util", "deep", "pkg.sibling"}));
    for (const auto &e : out) EXPECT_TRUE(e.found) << e.name;
    EXPECT_EQ(sent, (std::set<std::string>{"app", "helper", "pkg", "pkg.util", "deep", "pkg.sibling"}));

    // Asked-for names come back anyway; what was sent is not repeated.
    out = s.answer({"app", "pkg.util"}, sent, 1 << 20);
    EXPECT_EQ(names_of(out), (V{"app", "pkg.util"}));
    EXPECT_EQ(out[0].source, s.find("app").source);
}

TEST_F(ModuleAnswerTest, MissingAndRefusedAreAnsweredWhenAsked) {
    s.deny("helper");
    std::set<std::string> sent;
    auto out = s.answer({"nothere", "../x", "app", "helper", "app"}, sent, 1 << 20);
    ASSERT_GE(out.size(), 4u);
    EXPECT_EQ(names_of(out), (V{"nothere", "../x", "app", "helper", "pkg", "pkg.util", "pkg.sibling"}));
    EXPECT_FALSE(out[0].found);
    EXPECT_EQ(out[1].reason, "not a module name");
    EXPECT_TRUE(out[2].found);
    EXPECT_EQ(out[3].reason, "refused by the controller's deny list");
    EXPECT_EQ(sent, (std::set<std::string>{"app", "pkg", "pkg.util", "pkg.sibling"}));

    ModuleStats st = s.stats();
    EXPECT_EQ(st.requests, 5u);
    EXPECT_EQ(st.refused, 1u);
    EXPECT_EQ(st.modules_sent, 4u);
    uint64_t bytes = 0;
    for (const auto &e : out) bytes += e.source.size();
    EXPECT_EQ(st.bytes_sent, bytes);
}

TEST_F(ModuleAnswerTest, Budget) {
    std::set<std::string> sent;
    auto out = s.answer({"app"}, sent, 0);
    EXPECT_EQ(names_of(out), (V{"app"}));

    // Room for helper.py ("import deep\n", 12 bytes) and the empty pkg
    // package, not for pkg/util.py (27 bytes).
    sent.clear();
    out = s.answer({"app"}, sent, 12);
    EXPECT_EQ(names_of(out), (V{"app", "helper"}));
    sent.clear();
    out = s.answer({"app"}, sent, 13);
    EXPECT_EQ(names_of(out), (V{"app", "helper", "pkg"}));
    sent.clear();
    out = s.answer({"app"}, sent, 20);
    // pkg.util does not fit, deep (6 bytes) does.
    EXPECT_EQ(names_of(out), (V{"app", "helper", "pkg", "deep"}));
    size_t extra = 0;
    for (size_t i = 1; i < out.size(); ++i) extra += out[i].source.size();
    EXPECT_LE(extra, 20u);
}

TEST_F(ModuleAnswerTest, ConcurrentCallers) {
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([this] {
            for (int i = 0; i < 50; ++i) {
                std::set<std::string> sent;
                auto out = s.answer({"app"}, sent, 1 << 20);
                EXPECT_EQ(out.size(), 6u);
                EXPECT_TRUE(s.find("deep").found);
            }
        });
    for (auto &t : threads) t.join();
    EXPECT_EQ(s.stats().requests, 200u);
    EXPECT_EQ(s.stats().modules_sent, 1200u);
}

namespace spore {
namespace {

// Installed packages (on-demand directories) are served when asked for,
// never sent ahead: the target may have them itself.
TEST_F(ModuleServerTest, OnDemandDirectoriesAreNeverExtras) {
    const std::string mine = mkdir("mine"), site = mkdir("site");
    put("mine/app.py", "import helper\nimport yaml_like\n");
    put("mine/helper.py", "X = 1\n");
    put("site/yaml_like.py", "Y = 2\n");
    ModuleServer s;
    s.add_path(mine);
    s.add_path(site, false);
    std::set<std::string> sent;
    auto out = s.answer({"app"}, sent, 1 << 20);
    EXPECT_EQ(names_of(out), (V{"app", "helper"}));
    auto asked = s.answer({"yaml_like"}, sent, 1 << 20);
    ASSERT_EQ(asked.size(), 1u);
    EXPECT_TRUE(asked[0].found);
}

}  // namespace
}  // namespace spore

// Unit tests of the JSON helpers (parsing with limits, typed getters) and of
// the error code names.
#include "core/error.h"
#include "core/json.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

namespace spore {
namespace {

std::string nest(int depth, char open, char close, std::string_view inner = "") {
    std::string s;
    for (int i = 0; i < depth; ++i) {
        s.push_back(open);
        if (open == '{') s += "\"k\":";
    }
    s += inner.empty() ? (open == '{' ? "1" : "") : std::string(inner);
    s.append(size_t(depth), close);
    return s;
}

Json parse_ok(std::string_view text, int depth = kDefaultMaxJsonDepth) {
    std::string err;
    Json j = json_parse(text, depth, &err);
    EXPECT_TRUE(j) << "text: " << text << " err: " << err;
    EXPECT_TRUE(!j || err.empty()) << err;
    return j;
}

std::string parse_err(std::string_view text, int depth = kDefaultMaxJsonDepth) {
    std::string err;
    Json j = json_parse(text, depth, &err);
    EXPECT_FALSE(j) << "unexpectedly parsed: " << text;
    EXPECT_FALSE(err.empty()) << "no error for: " << text;
    return err;
}

// ---------------------------------------------------------------------------
// json_parse

TEST(JsonCanonical, MemberOrderDoesNotMatter) {
    std::string err;
    Json a = json_parse(R"({"b":1,"a":{"y":[3,{"q":1,"p":2}],"x":"s"},"c":null})", 64, &err);
    Json b = json_parse(R"({"c":null,"a":{"x":"s","y":[3,{"p":2,"q":1}]},"b":1})", 64, &err);
    ASSERT_TRUE(a && b);
    EXPECT_EQ(json_canonical(a.get()), json_canonical(b.get()));
    EXPECT_EQ(json_canonical(a.get()), R"({"a":{"x":"s","y":[3,{"p":2,"q":1}]},"b":1,"c":null})");
    // Array order does matter, and the original is left as it was.
    Json c = json_parse(R"({"a":{"x":"s","y":[{"p":2,"q":1},3]},"b":1,"c":null})", 64, &err);
    EXPECT_NE(json_canonical(a.get()), json_canonical(c.get()));
    EXPECT_EQ(json_print(a.get()), R"({"b":1,"a":{"y":[3,{"q":1,"p":2}],"x":"s"},"c":null})");
}

TEST(JsonParse, ValidDocuments) {
    const char *docs[] = {
        "{}",
        "[]",
        "null",
        "true",
        "false",
        "0",
        "-12.5e3",
        "\"text\"",
        R"({"a":1,"b":[true,false,null],"c":{"d":"e"}})",
        R"(["\u00e9\n\t\"\\", "[{not brackets}]"])",
        " \t\r\n{ \"spaced\" : [ 1 , 2 ] } \n",
        R"({"fn":"spore.echo","args":[1,"two",{"three":3}],"kwargs":{}})",
    };
    for (const char *d : docs) parse_ok(d);
}

TEST(JsonParse, ParsedValuesAreRight) {
    Json j = parse_ok(R"({"s":"x\"y","n":42,"f":1.5,"t":true,"a":[1,2,3]})");
    ASSERT_TRUE(j);
    EXPECT_EQ(json_str(j.get(), "s"), "x\"y");
    EXPECT_EQ(json_int(j.get(), "n", -1), 42);
    EXPECT_TRUE(json_bool(j.get(), "t", false));
    EXPECT_EQ(cJSON_GetArraySize(cJSON_GetObjectItem(j.get(), "a")), 3);
}

TEST(JsonParse, NotNullTerminatedInput) {
    // The view ends before the buffer does; nothing past it is read.
    std::string buf = R"({"a":1}GARBAGE)";
    Json j = parse_ok(std::string_view(buf.data(), 7));
    EXPECT_EQ(json_int(j.get(), "a", 0), 1);
    // A heap copy of exactly the text, so ASan catches any over-read.
    std::vector<char> exact(buf.begin(), buf.begin() + 7);
    parse_ok(std::string_view(exact.data(), exact.size()));
}

TEST(JsonParse, Malformed) {
    const char *docs[] = {
        "{",          "}",           "[1,]",        R"({"a":1,})", R"({"a":})",
        R"({a:1})",   R"({'a':1})",  "[1 2]",       "tru",         "nul",
        "nan",        "+1",          ".5",          "-",           R"("\x")",
        R"({"a" 1})", "[\"a\"",      "{\"a\":[}",   "\x01",
    };
    for (const char *d : docs) {
        std::string err = parse_err(d);
        EXPECT_NE(err.find("malformed JSON"), std::string::npos) << d << " -> " << err;
    }
}

TEST(JsonParse, InvalidUtf8IsRefused) {
    // Raw bytes that are not UTF-8, overlong forms, encoded surrogates and
    // code points above U+10FFFF, inside and outside strings.
    const char *docs[] = {"\xff\xfe", "\"\xff\"", "[\"a\xc0\x80\"]", "\"\xed\xa0\x80\"",
                          "\"\xf4\x90\x80\x80\"", "\"\xe2\x82\"", "{\"\x80\":1}"};
    for (const char *d : docs) {
        std::string err = parse_err(d);
        EXPECT_NE(err.find("invalid UTF-8"), std::string::npos) << d << " -> " << err;
    }
    parse_ok("\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x8d\x84\"");
}

TEST(JsonParse, NulInsideAStringIsRefused) {
    // cJSON would cut the string at the NUL and every C caller with it.
    EXPECT_NE(parse_err(R"({"s":"a\u0000b"})").find("NUL"), std::string::npos);
    EXPECT_NE(parse_err(std::string_view("{\"s\":\"a\0b\"}", 10)).find("NUL"), std::string::npos);
    EXPECT_NE(parse_err(R"(["\u0000"])").find("NUL"), std::string::npos);
    parse_ok(R"(["\u0001", "\\u0000"])");  // an escaped backslash, then text
}

TEST(JsonParse, LoneSurrogateEscapesAreRefused) {
    EXPECT_NE(parse_err(R"(["\ud800"])").find("lone high surrogate"), std::string::npos);
    EXPECT_NE(parse_err(R"(["\ud800\u0041"])").find("lone high surrogate"), std::string::npos);
    EXPECT_NE(parse_err(R"(["\udc00"])").find("lone low surrogate"), std::string::npos);
    EXPECT_NE(parse_err(R"(["\u12"])").find("malformed"), std::string::npos);
    parse_ok(R"(["\ud83c\udf44", "\u00e9"])");
}

TEST(JsonTextProblem, DepthAndPassingText) {
    EXPECT_EQ(json_text_problem(R"({"a":[1,{"b":"]]]]"}]})", 3), "");
    EXPECT_NE(json_text_problem(std::string(65, '[') + std::string(65, ']'), 64).find("deeper than 64"),
              std::string::npos);
    EXPECT_EQ(json_text_problem(std::string(64, '[') + std::string(64, ']'), 64), "");
    EXPECT_TRUE(valid_utf8("plain \xc3\xa9"));
    EXPECT_FALSE(valid_utf8(std::string_view("a\0b", 3)));
    EXPECT_FALSE(valid_utf8("\xc3"));
}

TEST(JsonParse, MalformedReportsAPosition) {
    std::string err = parse_err(R"({"a":1,"b":})");
    EXPECT_NE(err.find("near byte"), std::string::npos) << err;
}

TEST(JsonParse, TruncatedDocuments) {
    std::string doc = R"({"fn":"f","args":[1,"two",{"x":null}],"ok":true,"s":"a\"b"})";
    parse_ok(doc);
    for (size_t len = 0; len < doc.size(); ++len) {
        std::string err;
        Json j = json_parse(std::string_view(doc.data(), len), 64, &err);
        EXPECT_FALSE(j) << "prefix of length " << len << " parsed";
        EXPECT_FALSE(err.empty());
    }
}

TEST(JsonParse, TrailingGarbage) {
    const char *docs[] = {"{} x", "{}{}", "1 2", "[]]", "null,", "\"a\"\"b\"", "{}//", "[] \x01"};
    for (const char *d : docs) {
        std::string err;
        Json j = json_parse(d, 64, &err);
        EXPECT_FALSE(j) << d;
        EXPECT_FALSE(err.empty()) << d;
    }
    EXPECT_EQ(parse_err("{} x"), "trailing data after JSON value");
    EXPECT_EQ(parse_err("[1]   ,"), "trailing data after JSON value");
}

TEST(JsonParse, TrailingWhitespaceAndNulAreAccepted) {
    parse_ok("{} \t\r\n");
    parse_ok(std::string_view("{}\0\0", 4));
    parse_ok(std::string_view("[1]\n\0", 5));
}

TEST(JsonParse, EmptyInput) {
    parse_err("");
    parse_err(std::string_view());
    parse_err("   \n\t");
    parse_err(std::string_view("\0", 1));
}

TEST(JsonParse, NullErrPointerIsAllowed) {
    EXPECT_FALSE(json_parse("{", 64, nullptr));
    EXPECT_FALSE(json_parse("[[[]]]", 2, nullptr));
    EXPECT_FALSE(json_parse("{} x", 64, nullptr));
    EXPECT_TRUE(json_parse("{}", 64, nullptr));
}

TEST(JsonParse, ErrorIsOverwrittenOnlyOnFailure) {
    std::string err = "untouched";
    EXPECT_TRUE(json_parse("[]", 64, &err));
    EXPECT_EQ(err, "untouched");
}

TEST(JsonParse, Depth64AcceptedDepth65Rejected) {
    for (char open : {'[', '{'}) {
        char close = open == '[' ? ']' : '}';
        std::string ok = nest(64, open, close);
        EXPECT_EQ(json_depth(ok, 64), 64);
        parse_ok(ok, 64);

        std::string deep = nest(65, open, close);
        EXPECT_EQ(json_depth(deep, 64), 65);
        std::string err = parse_err(deep, 64);
        EXPECT_EQ(err, "JSON nested deeper than 64 levels");
    }
    // Mixed nesting counts both kinds.
    std::string mixed;
    for (int i = 0; i < 65; ++i) mixed += i % 2 ? "{\"k\":" : "[";
    for (int i = 64; i >= 0; --i) mixed += i % 2 ? "}" : "]";
    EXPECT_EQ(json_depth(mixed, 64), 65);
    parse_err(mixed, 64);
    EXPECT_TRUE(json_parse(mixed, 65, nullptr));
}

TEST(JsonParse, DeepNestingRejectedQuicklyWithoutRecursion) {
    using clock = std::chrono::steady_clock;
    for (char open : {'[', '{'}) {
        char close = open == '[' ? ']' : '}';
        for (int depth : {10000, 1000000}) {
            std::string full = nest(depth, open, close);
            std::string unclosed(size_t(depth), open);  // "[[[[..." never closed
            for (const std::string &text : {full, unclosed}) {
                auto t0 = clock::now();
                std::string err;
                Json j = json_parse(text, 64, &err);
                auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - t0)
                              .count();
                EXPECT_FALSE(j);
                EXPECT_EQ(err, "JSON nested deeper than 64 levels");
                EXPECT_LT(ms, 1000) << "depth " << depth;
            }
        }
    }
}

TEST(JsonParse, BracketsInsideStringsDoNotCount) {
    std::string brackets(200, '[');
    brackets += std::string(200, '{');
    parse_ok("[\"" + brackets + "\"]", 2);
    parse_ok("{\"" + brackets + "\":\"" + std::string(100, '}') + "\"}", 1);

    // An escaped quote does not end the string: the brackets after it are
    // still string content.
    parse_ok("[\"\\\"" + brackets + "\"]", 1);
    parse_ok("[\"a\\\\\\\"" + brackets + "\"]", 1);  // \\ then \" then brackets

    // But an escaped backslash right before the quote does end it, so what
    // follows counts.
    std::string text = "[\"\\\\\"," + nest(70, '[', ']') + "]";
    EXPECT_EQ(json_depth(text, 64), 65);
    parse_err(text, 64);
    EXPECT_TRUE(json_parse(text, 71, nullptr));
}

// ---------------------------------------------------------------------------
// json_depth

TEST(JsonDepth, EdgeCases) {
    EXPECT_EQ(json_depth("", 64), 0);
    EXPECT_EQ(json_depth("1", 64), 0);
    EXPECT_EQ(json_depth("\"[[[\"", 64), 0);
    EXPECT_EQ(json_depth("[]", 64), 1);
    EXPECT_EQ(json_depth("{}", 64), 1);
    EXPECT_EQ(json_depth("[][][]", 64), 1);
    EXPECT_EQ(json_depth("[[]][[[]]]", 64), 3);
    EXPECT_EQ(json_depth("[{\"a\":[{}]}]", 64), 4);
    // Unbalanced closers never go below zero, so they cannot hide depth.
    EXPECT_EQ(json_depth("]]]]]][[", 64), 2);
    EXPECT_EQ(json_depth("}}}}{{{", 2), 3);
    // Unterminated string: everything after the quote is string content.
    EXPECT_EQ(json_depth("[\"[[[[[[", 64), 1);
    // A backslash outside a string is not an escape.
    EXPECT_EQ(json_depth("\\\"[", 64), 0);
    EXPECT_EQ(json_depth("[\\\"[", 64), 1);  // the quote opens a string
    // Escapes inside strings.
    EXPECT_EQ(json_depth("\"\\\"[\"[", 64), 1);
    EXPECT_EQ(json_depth("\"\\\\\"[", 64), 1);
    // Stops at limit + 1.
    EXPECT_EQ(json_depth(std::string(100, '['), 5), 6);
    EXPECT_EQ(json_depth(std::string(5, '['), 5), 5);
    EXPECT_EQ(json_depth("[", 0), 1);
    EXPECT_EQ(json_depth("1", 0), 0);
    // Embedded NULs are just bytes.
    EXPECT_EQ(json_depth(std::string_view("[\0[", 3), 64), 2);
}

TEST(JsonParse, DepthZeroAllowsOnlyScalars) {
    parse_ok("1", 0);
    parse_ok("\"[\"", 0);
    parse_err("[]", 0);
    parse_err("{}", 0);
}

// ---------------------------------------------------------------------------
// Typed getters

TEST(JsonGetters, StringFallbacks) {
    Json j = parse_ok(R"({"s":"v","n":1,"b":true,"z":null,"e":"","S":"upper"})");
    const cJSON *o = j.get();
    EXPECT_EQ(json_str(o, "s"), "v");
    EXPECT_EQ(json_str(o, "e", "fb"), "");
    EXPECT_EQ(json_str(o, "missing"), "");
    EXPECT_EQ(json_str(o, "missing", "fb"), "fb");
    EXPECT_EQ(json_str(o, "n", "fb"), "fb");
    EXPECT_EQ(json_str(o, "b", "fb"), "fb");
    EXPECT_EQ(json_str(o, "z", "fb"), "fb");
    EXPECT_EQ(json_str(o, "S", "fb"), "upper");
    EXPECT_EQ(json_str(o, "s", "fb"), "v");
    // Case-sensitive lookups.
    Json k = parse_ok(R"({"Key":"v"})");
    EXPECT_EQ(json_str(k.get(), "key", "fb"), "fb");
    // Not an object / null object.
    Json arr = parse_ok(R"(["s"])");
    EXPECT_EQ(json_str(arr.get(), "s", "fb"), "fb");
    EXPECT_EQ(json_str(nullptr, "s", "fb"), "fb");
}

TEST(JsonGetters, IntFallbacks) {
    Json j = parse_ok(
        R"({"n":42,"neg":-7,"f":3.9,"nf":-3.9,"big":9007199254740992,"s":"5","b":true,)"
        R"("z":null,"a":[1],"huge":1e300,"nhuge":-1e300,"inf":1e400,"edge":9223372036854775807})");
    const cJSON *o = j.get();
    EXPECT_EQ(json_int(o, "n", -1), 42);
    EXPECT_EQ(json_int(o, "neg", 0), -7);
    EXPECT_EQ(json_int(o, "f", 0), 3);    // truncated toward zero
    EXPECT_EQ(json_int(o, "nf", 0), -3);
    EXPECT_EQ(json_int(o, "big", 0), 9007199254740992LL);
    EXPECT_EQ(json_int(o, "s", -1), -1);
    EXPECT_EQ(json_int(o, "b", -1), -1);
    EXPECT_EQ(json_int(o, "z", -1), -1);
    EXPECT_EQ(json_int(o, "a", -1), -1);
    EXPECT_EQ(json_int(o, "missing", 123), 123);
    EXPECT_EQ(json_int(nullptr, "n", 5), 5);
    // Out of the int64_t range (1e400 parses as infinity): the fallback, and
    // no undefined float-to-int conversion.
    EXPECT_EQ(json_int(o, "huge", -1), -1);
    EXPECT_EQ(json_int(o, "nhuge", -1), -1);
    EXPECT_EQ(json_int(o, "inf", -1), -1);
    // 2^63-1 is not representable as a double; it rounds to 2^63, out of range.
    EXPECT_EQ(json_int(o, "edge", -1), -1);
    Json lo = parse_ok(R"({"min":-9223372036854775808})");
    EXPECT_EQ(json_int(lo.get(), "min", 0), INT64_MIN);
}

TEST(JsonGetters, BoolFallbacks) {
    Json j = parse_ok(R"({"t":true,"f":false,"n":1,"s":"true","z":null})");
    const cJSON *o = j.get();
    EXPECT_TRUE(json_bool(o, "t", false));
    EXPECT_FALSE(json_bool(o, "f", true));
    EXPECT_TRUE(json_bool(o, "n", true));
    EXPECT_FALSE(json_bool(o, "n", false));
    EXPECT_TRUE(json_bool(o, "s", true));
    EXPECT_FALSE(json_bool(o, "s", false));
    EXPECT_TRUE(json_bool(o, "z", true));
    EXPECT_FALSE(json_bool(o, "missing", false));
    EXPECT_TRUE(json_bool(o, "missing", true));
    EXPECT_TRUE(json_bool(nullptr, "t", true));
}

// ---------------------------------------------------------------------------
// json_print / json_object

TEST(JsonPrint, CompactOutput) {
    Json j = parse_ok(" { \"a\" : 1 , \"b\" : [ true , null , \"x\" ] , \"c\" : { } } ");
    EXPECT_EQ(json_print(j.get()), R"({"a":1,"b":[true,null,"x"],"c":{}})");
}

TEST(JsonPrint, EscapesStrings) {
    Json j(cJSON_CreateString("q\"b\\n\n\x01"));
    ASSERT_TRUE(j);
    EXPECT_EQ(json_print(j.get()), R"("q\"b\\n\n\u0001")");
}

TEST(JsonPrint, NullPrintsNull) { EXPECT_EQ(json_print(nullptr), "null"); }

TEST(JsonPrint, RoundTripsThroughParse) {
    std::string text = R"({"fn":"m.f","args":[1,-2.5,"s",[],{}],"kw":{"x":false}})";
    Json j = parse_ok(text);
    EXPECT_EQ(json_print(j.get()), text);
    Json again = parse_ok(json_print(j.get()));
    EXPECT_EQ(json_print(again.get()), text);
}

TEST(JsonObject, StartsEmpty) {
    Json o = json_object();
    ASSERT_TRUE(o);
    EXPECT_TRUE(cJSON_IsObject(o.get()));
    EXPECT_EQ(json_print(o.get()), "{}");
    cJSON_AddStringToObject(o.get(), "k", "v");
    cJSON_AddNumberToObject(o.get(), "n", 3);
    cJSON_AddBoolToObject(o.get(), "b", true);
    EXPECT_EQ(json_str(o.get(), "k"), "v");
    EXPECT_EQ(json_int(o.get(), "n", 0), 3);
    EXPECT_TRUE(json_bool(o.get(), "b", false));
    EXPECT_EQ(json_print(o.get()), R"({"k":"v","n":3,"b":true})");
}

// ---------------------------------------------------------------------------
// Error codes

struct CodeEntry {
    const char *name;
    int num;
    const char *text;
};

const std::vector<CodeEntry> &all_codes() {
    static const std::vector<CodeEntry> codes = {
#define SPORE__ENTRY(name, num, text) {#name, num, text},
        SPORE_ERROR_MAP(SPORE__ENTRY)
#undef SPORE__ENTRY
    };
    return codes;
}

TEST(ErrorCodes, MapIsComplete) {
    const auto &codes = all_codes();
    EXPECT_EQ(codes.size(), size_t(-SPORE__ERROR_LAST));
    for (size_t i = 0; i < codes.size(); ++i) {
        EXPECT_EQ(codes[i].num, -int(i) - 1) << codes[i].name;  // dense, never reused
        EXPECT_EQ(codes[i].name[0], 'E');
    }
}

TEST(ErrorCodes, NameRoundTripForEveryCode) {
    for (const auto &c : all_codes()) {
        const char *name = error_code_name(c.num);
        ASSERT_NE(name, nullptr);
        EXPECT_STREQ(name, c.name);
        EXPECT_EQ(error_code_from_name(name), c.num) << c.name;
        EXPECT_EQ(error_code_from_name(std::string(c.name).c_str()), c.num);
        EXPECT_STREQ(error_code_text(c.num), c.text);
    }
    EXPECT_EQ(error_code_from_name("ETIMEDOUT"), SPORE_ETIMEDOUT);
    EXPECT_STREQ(error_code_name(SPORE_ETOOBIG), "ETOOBIG");
}

TEST(ErrorCodes, Ok) {
    EXPECT_STREQ(error_code_name(SPORE_OK), "OK");
    EXPECT_STREQ(error_code_text(SPORE_OK), "success");
}

TEST(ErrorCodes, UnknownNamesAndNumbers) {
    const char *names[] = {"", "nope", "einval", "EINVAL ", " EINVAL", "EINVALX", "E", "SPORE_EINVAL"};
    for (const char *n : names) EXPECT_EQ(error_code_from_name(n), SPORE_EUNKNOWN) << '"' << n << '"';
    EXPECT_EQ(error_code_from_name(nullptr), SPORE_EUNKNOWN);
    for (int num : {1, 2, SPORE__ERROR_LAST - 1, -100, 12345, INT32_MIN, INT32_MAX}) {
        EXPECT_STREQ(error_code_name(num), "EUNKNOWN") << num;
        EXPECT_STREQ(error_code_text(num), "unknown error") << num;
    }
}

TEST(ErrorType, CarriesCodeAndMessage) {
    Error e(SPORE_ENOROUTE, "no route to 42");
    EXPECT_EQ(e.code(), SPORE_ENOROUTE);
    EXPECT_STREQ(e.what(), "no route to 42");
    EXPECT_EQ(e.info().message, "no route to 42");

    ErrorInfo info;
    info.code = SPORE_EREMOTE;
    info.message = "boom";
    info.remote_type = "ValueError";
    info.context = "ctx";
    info.function = "m.f";
    Error r(info);
    EXPECT_EQ(r.code(), SPORE_EREMOTE);
    EXPECT_STREQ(r.what(), "boom");
    EXPECT_EQ(r.info().remote_type, "ValueError");
    r.info().message = "changed";
    EXPECT_STREQ(r.what(), "changed");
    try {
        throw Error(SPORE_ETIMEDOUT, "late");
    } catch (const std::exception &ex) {
        EXPECT_STREQ(ex.what(), "late");
    }
}

}  // namespace
}  // namespace spore

// cJSON alone prints 2^53 as 9007199254740990 and 0.1 + 0.2 as 0.3.
TEST(JsonPrint, NumbersReadBackAsTheSameDouble) {
    const double values[] = {0x1p53, -0x1p53, 0x1p53 - 1, 1e15 + 1, 123456789012345678.0, 0.1 + 0.2,
                             1.0 / 3.0, 5e-324, 1.7976931348623157e308, 0.0, -1.5, 42.0};
    for (double v : values) {
        std::string err;
        auto printed = spore::json_print(spore::Json(cJSON_CreateNumber(v)).get());
        auto back = spore::json_parse(printed, 8, &err);
        ASSERT_TRUE(back) << printed << ": " << err;
        EXPECT_EQ(back->valuedouble, v) << printed;
    }
    EXPECT_EQ(spore::json_print(spore::Json(cJSON_CreateNumber(0x1p53)).get()), "9007199254740992");
    EXPECT_EQ(spore::json_print(spore::Json(cJSON_CreateNumber(42)).get()), "42");
}

TEST(JsonPrint, NestedNumbersAreExactAndTheInputIsUntouched) {
    std::string err;
    auto j = spore::json_parse(R"({"a":[1,9007199254740992,{"b":0.30000000000000004}],"c":"x","d":2.5})", 16, &err);
    ASSERT_TRUE(j) << err;
    EXPECT_EQ(spore::json_print(j.get()), R"({"a":[1,9007199254740992,{"b":0.30000000000000004}],"c":"x","d":2.5})");
    // the document itself still holds numbers, not raw text
    const cJSON *a = cJSON_GetObjectItem(j.get(), "a");
    EXPECT_TRUE(cJSON_IsNumber(cJSON_GetArrayItem(a, 1)));
}

#include "core/error.h"

#include <cstring>

namespace spore {

const char *error_code_name(int code) noexcept {
    switch (code) {
    case SPORE_OK: return "OK";
#define SPORE__NAME(name, num, text) case num: return #name;
        SPORE_ERROR_MAP(SPORE__NAME)
#undef SPORE__NAME
    default: return "EUNKNOWN";
    }
}

int error_code_from_name(const char *name) noexcept {
    if (!name) return SPORE_EUNKNOWN;
#define SPORE__FROM(n, num, text) if (std::strcmp(name, #n) == 0) return num;
    SPORE_ERROR_MAP(SPORE__FROM)
#undef SPORE__FROM
    return SPORE_EUNKNOWN;
}

const char *error_code_text(int code) noexcept {
    switch (code) {
    case SPORE_OK: return "success";
#define SPORE__TEXT(name, num, text) case num: return text;
        SPORE_ERROR_MAP(SPORE__TEXT)
#undef SPORE__TEXT
    default: return "unknown error";
    }
}

}  // namespace spore

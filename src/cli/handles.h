// Owners of the C API's handles, each freed by its own spore_*_free.
#pragma once

#include <memory>

#include "spore/spore.h"

namespace spore::cli {

template <typename T, void (*Free)(T *)>
struct HandleDeleter {
    void operator()(T *p) const { Free(p); }
};

using OptionsPtr = std::unique_ptr<spore_options, HandleDeleter<spore_options, spore_options_free>>;
using RouterPtr = std::unique_ptr<spore_router, HandleDeleter<spore_router, spore_router_free>>;
using PendingPtr = std::unique_ptr<spore_pending, HandleDeleter<spore_pending, spore_call_free>>;
using ResultPtr = std::unique_ptr<spore_result, HandleDeleter<spore_result, spore_result_free>>;
using ProcessPtr = std::unique_ptr<spore_process, HandleDeleter<spore_process, spore_process_free>>;

// New, empty options; a Failure (exit 1) when there is no memory for them.
OptionsPtr new_options();

}  // namespace spore::cli

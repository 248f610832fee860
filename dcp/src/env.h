// The Env (public: dcp/env.h) and what the storage code shares about paths.
#pragma once

#include <string>

#include "dcp/env.h"

namespace dcp {
namespace internal {
// The directory that holds `p` (trailing slashes ignored): "a/b" -> "a",
// "/a" -> "/", "a" -> ".".
std::string parent_path(const std::string& p);

std::string join_path(const std::string& dir, const std::string& name);

}  // namespace internal
}  // namespace dcp

// The geometry of saved chunks: what the global plan checks of them.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dcp/metadata.h"

namespace dcp {

// The number of elements of a box of `sizes`.
int64_t volume(const std::vector<int64_t>& sizes);

// "[2, 0, 3]".
std::string shape_str(const std::vector<int64_t>& v);

// Checks that the chunks of tensor `fqn` lie inside it, do not overlap and
// cover it; throws InvalidArgumentError naming the key.
void validate_chunks(const std::string& fqn, const TensorStorageMetadata& t);

}  // namespace dcp

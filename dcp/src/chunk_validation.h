// What a save must refuse: the chunks the load path could not read back.
//
// The load path (DefaultLoadPlanner, the file-system reader) assumes of
// every tensor entry of the metadata: a supported dtype; a global size with
// no negative dimension; chunks with as many offsets and sizes as the tensor
// has dimensions, none negative, inside the tensor; one chunk per offset
// (the offsets name the stored item); no two chunks sharing an element; and
// every element in some chunk. The global plan checks each item
// (check_write_item) and then each tensor's chunks together
// (validate_chunks); every error is an InvalidArgumentError naming the key
// and the rank(s).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "dcp/metadata.h"
#include "dcp/planner.h"

namespace dcp {
namespace internal {

// "[2, 0, 3]".
std::string shape_str(const std::vector<int64_t>& v);

// The number of elements of a box of non-negative `sizes`, or -1 when it
// does not fit in int64.
int64_t checked_volume(const std::vector<int64_t>& sizes);

// Checks one item of rank `rank`'s plan on its own.
void check_write_item(const WriteItem& item, size_t rank);

// Checks the chunks of one tensor together (after check_write_item of each);
// `plans` (the final plans) name the ranks in messages.
void validate_chunks(const std::string& fqn, const TensorStorageMetadata& t,
                     const std::vector<SavePlan>& plans);

}  // namespace internal
}  // namespace dcp

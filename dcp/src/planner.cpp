#include "dcp/planner.h"

#include <c10/core/ScalarType.h>

#include "dcp/storage.h"

namespace dcp {

const char* to_string(WriteItemType type) {
  switch (type) {
    case WriteItemType::kTensor:
      return "tensor";
    case WriteItemType::kShard:
      return "shard";
    case WriteItemType::kByteIO:
      return "bytes";
  }
  return "unknown";
}

std::optional<int64_t> WriteItem::tensor_storage_size() const {
  if (!tensor_data) return std::nullopt;
  int64_t numel = 1;
  for (int64_t s : tensor_data->chunk.sizes) numel *= s;
  return numel * static_cast<int64_t>(c10::elementSize(tensor_data->properties.dtype));
}

std::vector<ReplicaDigest> SavePlanner::replica_digests(const std::vector<WriteResult>&) {
  return {};
}

void SavePlanner::check_replicas(const std::vector<std::vector<ReplicaDigest>>&) {}

}  // namespace dcp

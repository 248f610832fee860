// The Metadata of a save, from its final plans (DefaultSavePlanner).
#pragma once

#include <optional>
#include <vector>

#include "dcp/metadata.h"
#include "dcp/planner.h"

namespace dcp {
namespace internal {

// The Metadata part of DefaultSavePlanner::create_global_plan: the plans
// (after dedup, as the final plans are; their planner_data the flattening
// maps) checked and folded into the checkpoint's entries. Throws what
// create_global_plan throws for inconsistent plans (`dedup_replicated`: a
// plain value may come from several ranks). It only reads the plans, so it
// may run while they are written: save() runs it on a thread of its own
// during write_data at one rank, where a DefaultSavePlanner's global plan
// is its local plan.
Metadata global_metadata(const std::vector<SavePlan>& all_plans, bool dedup_replicated,
                         const std::optional<StorageMeta>& storage_meta);

}  // namespace internal
}  // namespace dcp

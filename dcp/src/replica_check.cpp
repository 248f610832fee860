// The replica check of DefaultSavePlanner (dcp/replicas.h).
//
// Dedup keeps one copy of an item that several ranks save under one key and
// chunk. The global plan then asks every holder for the XXH3-64 checksum of
// its copy (ReplicaRequest, in the final plan's planner_data): the rank that
// writes it answers with its write result's checksum when storage computed
// one (no second pass over the bytes), the others hash their dropped copies
// while the writer writes. The coordinator compares them before the
// metadata is written, so a checkpoint whose ranks disagree never commits.
#include <spdlog/spdlog.h>
#include <tbb/parallel_for.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <map>

#include "dcp/default_planner.h"
#include "dcp/error.h"
#include "dcp/logging.h"
#include "dcp/storage.h"
#include "xxh3.h"

namespace dcp {

using internal::xxh3_64;

namespace {

// The checksum of the bytes storage writes for `data`.
uint64_t digest_of(const WriteData& data) {
  if (const auto* b = std::get_if<Bytes>(&data)) return xxh3_64(b->data.data(), b->data.size());
  at::Tensor t = std::get<at::Tensor>(data);
  if (!t.is_contiguous()) t = t.contiguous();
  return xxh3_64(t.data_ptr(), t.numel() * t.element_size());
}

std::string ranks_text(const std::vector<int>& ranks) {
  std::string s = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < ranks.size(); ++i) s += (i ? ", " : "") + std::to_string(ranks[i]);
  return s;
}

}  // namespace

std::vector<ReplicaDigest> DefaultSavePlanner::replica_digests(
    const std::vector<WriteResult>& written) {
  std::vector<ReplicaDigest> out(replica_requests_.size());
  if (out.empty()) return out;
  std::map<MetadataIndex, const StorageInfo*> checksums;
  for (const auto& r : written)
    if (r.storage_data.checksum_type == ChecksumType::kXXH3_64)
      checksums.emplace(r.index, &r.storage_data);
  tbb::parallel_for(size_t{0}, out.size(), [&](size_t i) {
    const ReplicaRequest& q = replica_requests_[i];
    out[i].index = q.item.index;
    out[i].written = q.written;
    if (q.written) {
      auto it = checksums.find(q.item.index);
      if (it != checksums.end()) {
        out[i].digest = it->second->checksum;
        return;
      }
    }
    out[i].digest = digest_of(resolve_data(q.item));
  });
  return out;
}

void DefaultSavePlanner::check_replicas(const std::vector<std::vector<ReplicaDigest>>& all) {
  if (options_.check_replicas == ReplicaCheck::kOff) return;
  // index -> (rank, digest, written) of every holder.
  struct Copy {
    int rank;
    uint64_t digest;
    bool written;
  };
  std::map<MetadataIndex, std::vector<Copy>> copies;
  for (size_t r = 0; r < all.size(); ++r)
    for (const auto& d : all[r])
      copies[d.index].push_back(Copy{static_cast<int>(r), d.digest, d.written});
  std::vector<std::string> differing;
  for (const auto& [index, list] : copies) {
    // The holders grouped by the value they hold, in rank order.
    std::vector<std::pair<uint64_t, std::vector<const Copy*>>> groups;
    for (const auto& c : list) {
      auto g = std::find_if(groups.begin(), groups.end(),
                            [&](const auto& x) { return x.first == c.digest; });
      if (g == groups.end()) g = groups.insert(groups.end(), {c.digest, {}});
      g->second.push_back(&c);
    }
    if (groups.size() < 2) continue;
    std::string line = to_string(index) + ": the copies of ";
    for (size_t k = 0; k < groups.size(); ++k) {
      std::vector<int> ranks;
      bool written = false;
      for (const Copy* c : groups[k].second) {
        ranks.push_back(c->rank);
        written = written || c->written;
      }
      line += (k == 0                   ? ""
               : k + 1 == groups.size() ? " and of "
                                        : ", of ") +
              ranks_text(ranks) + (written ? " (written)" : "");
    }
    differing.push_back(line + " differ");
  }
  if (differing.empty()) return;
  constexpr size_t kShown = 10;
  std::string msg =
      std::to_string(differing.size()) +
      (differing.size() == 1 ? " replicated item differs" : " replicated items differ") +
      " between the ranks that save it (checkpoint.storage.check_replicas / "
      "SavePlannerOptions::check_replicas):";
  for (size_t i = 0; i < differing.size() && i < kShown; ++i) msg += "\n    " + differing[i];
  if (differing.size() > kShown)
    msg += "\n    ... and " + std::to_string(differing.size() - kShown) + " more";
  if (options_.check_replicas == ReplicaCheck::kWarn) {
    logger().warn("{} (check_replicas: warn: the written copies are kept)", msg);
    return;
  }
  throw PlanMismatchError(msg);
}

}  // namespace dcp

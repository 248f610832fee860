// Encodings of what travels between ranks: plans, write results, failures.
// Used only by DistWrapper; the metadata has its own (metadata.cpp).
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "dcp/default_planner.h"
#include "dcp/error.h"
#include "dcp/metadata.h"
#include "dcp/planner.h"
#include "dcp/storage.h"

namespace dcp {
namespace internal {
namespace wire {

// What a rank reports after writing: its write results and the digests of
// its copies of replicated items.
struct WriteReport {
  std::vector<WriteResult> results;
  std::vector<ReplicaDigest> digests;
};

// What the coordinator broadcasts when a save commits: the committed
// metadata (whole when `whole`; otherwise only its header travels: version,
// world_size, storage_meta, library_version) and the checkpoint's bytes and
// items, which the header no longer tells.
struct CommitSummary {
  Metadata metadata;
  bool whole = false;
  uint64_t bytes = 0;
  uint64_t items = 0;
};

std::string encode(const SavePlan& plan);
std::string encode(const LoadPlan& plan);
std::string encode(const std::vector<WriteResult>& results);
std::string encode(const WriteReport& report);
// An empty list encodes as no bytes.
std::string encode(const std::vector<ReplicaRequest>& requests);
std::string encode(const Metadata& metadata);
std::string encode(const CommitSummary& summary);
std::string encode(int value);
std::string encode(const std::string& value);
std::string encode(const std::vector<std::string>& values);
std::string encode(const std::vector<RankFailure>& failures);

// `bounds`, when given, gets where each item's bytes begin and end: item i
// is bytes[bounds[i], bounds[i + 1]).
void decode(std::string_view bytes, SavePlan& out, std::vector<size_t>* bounds = nullptr);
void decode(std::string_view bytes, LoadPlan& out, std::vector<size_t>* bounds = nullptr);
void decode(std::string_view bytes, std::vector<WriteResult>& out);
void decode(std::string_view bytes, WriteReport& out);
void decode(std::string_view bytes, std::vector<ReplicaRequest>& out);
void decode(std::string_view bytes, Metadata& out);
void decode(std::string_view bytes, CommitSummary& out);
void decode(std::string_view bytes, int& out);
void decode(std::string_view bytes, std::string& out);
void decode(std::string_view bytes, std::vector<std::string>& out);
void decode(std::string_view bytes, std::vector<RankFailure>& out);

// The coordinator's reply of the first round. A rank keeps its local plan;
// the reply names the runs of its items that the final plan keeps, by
// position, and carries only the items the local plan does not have (an
// item is "kept" when its encoding is byte for byte the same). A rank then
// rebuilds its final plan by moving its own items instead of decoding them
// all. `local_bytes` and `bounds` are the rank's encoded local plan and its
// item bounds (decode(..., &bounds)).
std::string encode_reply(const SavePlan& final_plan, std::string_view local_bytes,
                         const std::vector<size_t>& bounds);
std::string encode_reply(const LoadPlan& final_plan, std::string_view local_bytes,
                         const std::vector<size_t>& bounds);
// Builds `out` from a reply and `local` (whose kept items are moved from).
void decode_reply(std::string_view bytes, SavePlan& local, SavePlan& out);
void decode_reply(std::string_view bytes, LoadPlan& local, LoadPlan& out);

}  // namespace wire
}  // namespace internal
}  // namespace dcp

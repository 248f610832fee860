// The encodings of what travels between ranks (dcp/src/wire.h): plans round
// trip, and a reply rebuilds the final plan from the rank's own items.
#include "wire.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

namespace dcp {
namespace internal {
namespace {

WriteItem shard(const std::string& key, int64_t row) {
  WriteItem it;
  it.index = MetadataIndex(key, {row, 0});
  it.type = WriteItemType::kShard;
  it.tensor_data =
      TensorWriteData{ChunkStorageMetadata{{row, 0}, {4, 8}}, {at::kFloat, false}, {16, 8}};
  return it;
}

SavePlan local_plan(int n) {
  SavePlan p;
  for (int i = 0; i < n; ++i) p.items.push_back(shard("model.layer" + std::to_string(i), 4));
  WriteItem bytes;
  bytes.index = MetadataIndex("step");
  bytes.type = WriteItemType::kByteIO;
  p.items.push_back(bytes);
  p.planner_data = "map";
  return p;
}

// Sends `local` as a rank does, answers with `final_plan` as the coordinator
// does and rebuilds on the rank; returns the rebuilt plan and the reply size.
template <typename Plan>
std::pair<Plan, size_t> round_trip(Plan local, const Plan& final_plan) {
  const std::string sent = wire::encode(local);
  Plan decoded;
  std::vector<size_t> bounds;
  wire::decode(sent, decoded, &bounds);
  EXPECT_EQ(wire::encode(decoded), sent);
  EXPECT_EQ(bounds.size(), local.items.size() + 1);
  const std::string reply = wire::encode_reply(final_plan, sent, bounds);
  Plan out;
  wire::decode_reply(reply, local, out);
  return {std::move(out), reply.size()};
}

TEST(WireTest, UnchangedPlanComesBackAsOneRun) {
  SavePlan local = local_plan(1000);
  SavePlan final_plan = local;
  final_plan.storage_data = "__1_";
  auto [out, reply_bytes] = round_trip(local, final_plan);
  EXPECT_EQ(wire::encode(out), wire::encode(final_plan));
  EXPECT_LT(reply_bytes, 32u);  // count, flag, one run, the tail: not 1000 items
}

TEST(WireTest, RemovedItemsAreSkippedRuns) {
  SavePlan local = local_plan(1000);
  SavePlan final_plan = local;
  final_plan.items.clear();
  for (size_t i = 0; i < local.items.size(); ++i)
    if (i % 3 != 1) final_plan.items.push_back(local.items[i]);  // as dedup removes
  final_plan.usable = false;
  auto [out, reply_bytes] = round_trip(local, final_plan);
  EXPECT_EQ(wire::encode(out), wire::encode(final_plan));
  EXPECT_LT(reply_bytes, wire::encode(final_plan).size() / 4);
}

TEST(WireTest, ChangedAddedReorderedAndRepeatedItemsAreExact) {
  SavePlan local = local_plan(200);
  local.items.push_back(local.items[5]);  // the same item twice in the local plan
  SavePlan final_plan;
  for (int i = 199; i >= 0; i -= 2) final_plan.items.push_back(local.items[i]);  // reordered
  for (int i = 0; i < 200; i += 7) {
    WriteItem changed = local.items[i];
    changed.tensor_data->properties.dtype = at::kHalf;  // as a planner that stores fp16
    final_plan.items.push_back(changed);
  }
  final_plan.items.push_back(shard("added", 0));
  for (int k = 0; k < 3; ++k) final_plan.items.push_back(local.items[5]);  // more than it had
  final_plan.planner_data = "changed";
  auto [out, reply_bytes] = round_trip(local, final_plan);
  EXPECT_EQ(wire::encode(out), wire::encode(final_plan));
}

TEST(WireTest, EmptyPlans) {
  auto [out, bytes] = round_trip(SavePlan{}, SavePlan{});
  EXPECT_TRUE(out.items.empty());
  auto [out2, bytes2] = round_trip(SavePlan{}, local_plan(3));
  EXPECT_EQ(wire::encode(out2), wire::encode(local_plan(3)));
  auto [out3, bytes3] = round_trip(local_plan(3), SavePlan{});
  EXPECT_TRUE(out3.items.empty());
}

TEST(WireTest, LoadPlanReplies) {
  LoadPlan local;
  for (int i = 0; i < 100; ++i) {
    ReadItem r;
    r.dest_index = MetadataIndex("w" + std::to_string(i), {0, 0});
    r.storage_index = MetadataIndex("w" + std::to_string(i), {i % 4, 0});
    r.dest_offsets = {0, 0};
    r.storage_offsets = {i % 4, 0};
    r.lengths = {1, 8};
    local.items.push_back(r);
  }
  LoadPlan final_plan = local;
  final_plan.items.erase(final_plan.items.begin() + 10, final_plan.items.begin() + 20);
  final_plan.items[50].lengths = {2, 8};
  final_plan.storage_data = "s";
  auto [out, reply_bytes] = round_trip(local, final_plan);
  EXPECT_EQ(wire::encode(out), wire::encode(final_plan));
}

TEST(WireTest, BadRepliesAreCorruptionErrors) {
  SavePlan local = local_plan(10);
  const std::string sent = wire::encode(local);
  SavePlan decoded;
  std::vector<size_t> bounds;
  wire::decode(sent, decoded, &bounds);
  const std::string reply = wire::encode_reply(local, sent, bounds);
  // Truncated anywhere.
  for (size_t n = 0; n < reply.size(); ++n) {
    SavePlan copy = local, out;
    EXPECT_THROW(wire::decode_reply(reply.substr(0, n), copy, out), CorruptionError) << n;
  }
  // A run past the end of the local plan (the rank has fewer items).
  SavePlan shorter = local_plan(5), out;
  EXPECT_THROW(wire::decode_reply(reply, shorter, out), CorruptionError);
  // A local item named twice: count 2, any order, run (1, 0), run (1, 0).
  const std::string twice{2, 0, 2, 0, 2, 0, 0, 0, 0};
  SavePlan copy = local;
  EXPECT_THROW(wire::decode_reply(twice, copy, out), CorruptionError);
  // Runs said to be in order that overlap: (2 from 2), then (1 from 3).
  const std::string overlapping{3, 1, 4, 2, 2, 3, 0, 0, 0};
  copy = local;
  EXPECT_THROW(wire::decode_reply(overlapping, copy, out), CorruptionError);
  // The same, or runs going back, said to be in order.
  const std::string back{2, 1, 2, 1, 2, 0, 0, 0, 0};
  copy = local;
  EXPECT_THROW(wire::decode_reply(back, copy, out), CorruptionError);
}

// What the replica check sends: the requests in a final plan, the digests
// with the write results; and the failures (with their retryable bit).
TEST(WireTest, ReplicaRequestsDigestsAndFailuresRoundTrip) {
  EXPECT_EQ(wire::encode(std::vector<ReplicaRequest>{}), "");  // the usual final plan
  std::vector<ReplicaRequest> asked{
      {shard("w", 4), false}, {WriteItem{MetadataIndex("step"), WriteItemType::kByteIO, {}}, true}};
  std::vector<ReplicaRequest> back;
  wire::decode(wire::encode(asked), back);
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(wire::encode(back), wire::encode(asked));
  EXPECT_FALSE(back[0].written);
  EXPECT_EQ(back[0].item.tensor_data->chunk.sizes, (std::vector<int64_t>{4, 8}));
  EXPECT_TRUE(back[1].written);
  EXPECT_EQ(back[1].item.type, WriteItemType::kByteIO);
  EXPECT_THROW(wire::decode(std::string("\x05"), back), CorruptionError);

  wire::WriteReport report;
  report.results.push_back(WriteResult{MetadataIndex("w", {4, 0}), 128,
                                       StorageInfo{"__0_0", 64, 128, ChecksumType::kXXH3_64, 9}});
  report.digests.push_back(ReplicaDigest{MetadataIndex("step"), 0x1234567890abcdefULL, true});
  wire::WriteReport report_back;
  wire::decode(wire::encode(report), report_back);
  ASSERT_EQ(report_back.results.size(), 1u);
  EXPECT_EQ(report_back.results[0].storage_data, report.results[0].storage_data);
  ASSERT_EQ(report_back.digests.size(), 1u);
  EXPECT_EQ(report_back.digests[0].digest, 0x1234567890abcdefULL);
  EXPECT_TRUE(report_back.digests[0].written);

  std::vector<RankFailure> failures{{2, "write:local", ErrorCode::kStorage, "ENOSPC", true},
                                    {0, "plan:local", ErrorCode::kInvalidArgument, "bad", false}};
  std::vector<RankFailure> failures_back;
  wire::decode(wire::encode(failures), failures_back);
  ASSERT_EQ(failures_back.size(), 2u);
  EXPECT_TRUE(failures_back[0].retryable);
  EXPECT_FALSE(failures_back[1].retryable);
  EXPECT_TRUE(CheckpointError("save", {failures_back[0]}).retryable());
  EXPECT_FALSE(CheckpointError("save", failures_back).retryable());
}

}  // namespace
}  // namespace internal
}  // namespace dcp

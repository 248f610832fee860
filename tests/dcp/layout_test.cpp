// What commits must load: random layouts of tiny tensors (dimensions of
// size zero, row/column/block splits, several shards, copies of a shard)
// saved in one process and loaded into other random layouts, bit for bit;
// and random broken layouts, which the save must refuse exactly when the
// load could not read them back.
#include <gtest/gtest.h>

#include <algorithm>

#include "common/layouts.h"
#include "common/test_util.h"

namespace dcp {
namespace {

using testing::Box;
using testing::Rng;

std::shared_ptr<StorageWriter> writer(const std::string& path) {
  FileSystemWriterOptions o;
  o.sync_files = false;  // thousands of tiny saves
  return make_filesystem_writer(path, o);
}

Metadata save_to(const StateDict& sd, const std::string& path) {
  SaveOptions o;
  o.storage_writer = writer(path);
  return save(sd, o);
}

// One key of a random case: the global tensor and how it is saved.
struct Case {
  std::string key;
  at::Tensor full;
  std::vector<Box> saved;  // empty: saved as a plain tensor
  std::string describe() const {
    return key + " " + dtype_name(full.scalar_type()) + testing::dims_str(full.sizes().vec()) +
           " saved as " + (saved.empty() ? "a tensor" : testing::boxes_str(saved));
  }
};

Case random_case(Rng& rng, const std::string& key, int64_t seed) {
  Case c;
  c.key = key;
  const auto shape = testing::random_shape(rng);
  c.full = testing::make_tensor(testing::random_dtype(rng), shape, seed);
  if (testing::chance(rng, 0.8)) {
    c.saved = testing::random_tiling(rng, shape);
    // Copies of a shard (as a rank of a replica group holds), in any order.
    if (testing::chance(rng, 0.3))
      c.saved.push_back(c.saved[testing::uniform(rng, 0, c.saved.size() - 1)]);
    std::shuffle(c.saved.begin(), c.saved.end(), rng);
  }
  return c;
}

Value saved_value(const Case& c) {
  if (c.saved.empty()) return c.full.clone();
  return testing::sharded(c.full, c.saved, false);
}

// A destination for `full`: a tensor or random boxes, holding other bytes.
Value random_destination(Rng& rng, const at::Tensor& full) {
  if (testing::chance(rng, 0.25)) return testing::scrambled_like(full);
  return testing::sharded(full, testing::random_boxes(rng, full.sizes().vec()), true);
}

std::string destination_str(const Value& v) {
  if (v.is_tensor()) return "a tensor";
  std::vector<Box> boxes;
  for (const Shard& s : v.sharded().local_shards)
    boxes.push_back({s.offsets, s.tensor.sizes().vec()});
  return testing::boxes_str(boxes);
}

// The exact case of the report: [4, 0, 3] in two row blocks, committed,
// then loaded whole, in other blocks and into an empty sharded destination.
TEST(LayoutTest, ZeroElementsInSeveralChunksLoad) {
  testing::TempDir dir;
  const at::Tensor full = at::empty({4, 0, 3});
  save_to({{"t", testing::sharded(full, {{{0, 0, 0}, {2, 0, 3}}, {{2, 0, 0}, {2, 0, 3}}}, false)},
           {"u", testing::sharded(at::empty({0, 2}, at::kLong),
                                  {{{0, 0}, {0, 1}}, {{0, 1}, {0, 1}}}, false)}},
          dir.sub("ck"));
  StateDict whole{{"t", at::empty({4, 0, 3})}, {"u", at::empty({0, 2}, at::kLong)}};
  EXPECT_NO_THROW(load(whole, dir.sub("ck")));
  StateDict blocks{
      {"t", testing::sharded(full, {{{0, 0, 0}, {1, 0, 3}}, {{1, 0, 0}, {3, 0, 3}}}, true)},
      {"u", testing::sharded(at::empty({0, 2}, at::kLong), {{{0, 0}, {0, 2}}}, true)}};
  EXPECT_NO_THROW(load(blocks, dir.sub("ck")));
  StateDict all = load_all(dir.sub("ck"));
  EXPECT_EQ(all.at("t").tensor().sizes(), full.sizes());
}

// Valid layouts: each round saves a dozen random keys and loads them into
// random other layouts (and with load_all), comparing bits.
TEST(LayoutTest, RandomLayoutsLoadIntoRandomLayoutsBitExact) {
  testing::TempDir dir;
  int empty_in_chunks = 0, copies = 0;  // cases of the kinds that failed before
  for (int round = 0; round < 40; ++round) {
    Rng rng(1000 + round);
    std::vector<Case> cases;
    StateDict sd;
    for (int k = 0; k < 12; ++k) {
      cases.push_back(random_case(rng, "k" + std::to_string(k), round * 100 + k));
      sd[cases.back().key] = saved_value(cases.back());
      const auto& saved = cases.back().saved;
      empty_in_chunks += cases.back().full.numel() == 0 && saved.size() > 1;
      for (size_t i = 0; i < saved.size(); ++i)
        copies += std::count(saved.begin(), saved.begin() + i, saved[i]) > 0;
    }
    const std::string path = dir.sub("r" + std::to_string(round));
    std::string all_cases;
    for (const auto& c : cases) all_cases += "\n  " + c.describe();
    try {
      save_to(sd, path);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "round " << round << ": " << e.what() << all_cases;
      continue;
    }
    for (int attempt = 0; attempt < 3; ++attempt) {
      StateDict dest;
      for (const auto& c : cases) dest[c.key] = random_destination(rng, c.full);
      std::string dests;
      for (const auto& c : cases) dests += "\n  " + c.key + " into " + destination_str(dest[c.key]);
      try {
        load(dest, path);
      } catch (const std::exception& e) {
        ADD_FAILURE() << "round " << round << ": " << e.what() << all_cases << dests;
        continue;
      }
      for (const auto& c : cases)
        EXPECT_EQ(testing::compare_loaded(dest[c.key], c.full), "")
            << "round " << round << ": " << c.describe() << " into "
            << destination_str(dest[c.key]);
    }
    StateDict all = load_all(path);
    for (const auto& c : cases)
      EXPECT_TRUE(testing::same_bits(all.at(c.key).tensor(), c.full)) << c.describe();
  }
  EXPECT_GT(empty_in_chunks, 20);
  EXPECT_GT(copies, 20);
}

// Broken layouts: the save refuses exactly the layouts that are not a
// tiling (naming the key), commits nothing then, and whatever it commits
// loads back.
TEST(LayoutTest, SaveRefusesExactlyWhatLoadCouldNotReadBack) {
  testing::TempDir dir;
  int refused = 0, accepted = 0;
  for (int n = 0; n < 400; ++n) {
    Rng rng(50000 + n);
    const auto shape = testing::random_shape(rng);
    const at::Tensor full = testing::make_tensor(testing::random_dtype(rng), shape, n);
    std::string what;
    const std::vector<Box> boxes =
        testing::perturbed(rng, testing::random_tiling(rng, shape), shape, what);
    const bool valid = testing::is_valid_layout(boxes, shape);
    const std::string desc = "case " + std::to_string(n) + ": " + dtype_name(full.scalar_type()) +
                             testing::dims_str(shape) + " as " + testing::boxes_str(boxes) + " (" +
                             what + ")";
    const std::string path = dir.sub("c" + std::to_string(n));
    try {
      save_to({{"key", testing::sharded(full, boxes, false)}}, path);
    } catch (const CheckpointError& e) {
      ++refused;
      EXPECT_FALSE(valid) << desc << ": refused: " << e.what();
      EXPECT_EQ(e.root_code(), ErrorCode::kInvalidArgument) << desc << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find("'key'"), std::string::npos) << desc << ": " << e.what();
      EXPECT_FALSE(is_committed_checkpoint(path)) << desc;
      continue;
    }
    ++accepted;
    EXPECT_TRUE(valid) << desc << ": accepted";
    StateDict dest{{"key", random_destination(rng, full)}};
    try {
      load(dest, path);
      EXPECT_EQ(testing::compare_loaded(dest["key"], full), "") << desc;
    } catch (const std::exception& e) {
      ADD_FAILURE() << desc << ": committed, then the load failed: " << e.what();
    }
  }
  // Both outcomes were exercised.
  EXPECT_GT(refused, 100);
  EXPECT_GT(accepted, 100);
}

}  // namespace
}  // namespace dcp

// Random layouts across real ranks: tiny tensors, most with a dimension of
// size zero, tiled at random; each tile saved by one rank, by two (a
// replica) or twice by one. Saved at 2 or 3 ranks, loaded at 3 or 2 into
// random boxes per rank, bit for bit.
#include <gtest/gtest.h>

#include "common/layouts.h"
#include "common/multiproc.h"
#include "common/test_util.h"
#include "dcp/dcp.h"

namespace dcp {
namespace {

using testing::Box;
using testing::Rng;

testing::RunOptions opts(std::vector<std::string> args) {
  testing::RunOptions o;
  o.args = std::move(args);
  o.timeout = std::chrono::seconds(60);
  return o;
}

struct RankCase {
  std::string key;
  at::Tensor full;
  bool plain = false;                      // a tensor every rank saves whole
  std::vector<std::vector<Box>> per_rank;  // the boxes each rank saves
};

// The same cases on every rank (drawn from `seed` alone).
std::vector<RankCase> rank_cases(uint64_t seed, int world) {
  Rng rng(seed);
  std::vector<RankCase> cases;
  for (int k = 0; k < 24; ++k) {
    RankCase c;
    c.key = "k" + std::to_string(k);
    auto shape = testing::random_shape(rng);
    if (!shape.empty() && testing::chance(rng, 0.7))
      shape[testing::uniform(rng, 0, shape.size() - 1)] = 0;
    c.full = testing::make_tensor(testing::random_dtype(rng), shape, seed * 100 + k);
    c.plain = testing::chance(rng, 0.15);
    c.per_rank.resize(world);
    for (const Box& b : testing::random_tiling(rng, shape)) {
      const int r = testing::uniform(rng, 0, world - 1);
      c.per_rank[r].push_back(b);
      if (testing::chance(rng, 0.25)) c.per_rank[(r + 1) % world].push_back(b);  // a replica
      if (testing::chance(rng, 0.1)) c.per_rank[r].push_back(b);  // twice on one rank
    }
    cases.push_back(std::move(c));
  }
  return cases;
}

DCP_REGISTER_WORKER(layout_save) {
  StateDict sd;
  for (const RankCase& c : rank_cases(std::stoull(args.at(1)), ctx.world_size()))
    sd[c.key] = c.plain ? Value(c.full.clone())
                        : Value(testing::sharded(c.full, c.per_rank[ctx.rank()], false));
  SaveOptions so;
  so.checkpoint_id = args.at(0);
  so.collectives = ctx.collectives(std::chrono::seconds(20));
  save(sd, so);
  return 0;
}

DCP_REGISTER_WORKER(layout_load) {
  const uint64_t seed = std::stoull(args.at(1));
  const int saved_world = std::stoi(args.at(2));
  Rng rng(seed * 7919 + 1000 * ctx.world_size() + ctx.rank());
  const std::vector<RankCase> cases = rank_cases(seed, saved_world);
  StateDict dest;
  for (const RankCase& c : cases)
    dest[c.key] = testing::chance(rng, 0.2)
                      ? Value(testing::scrambled_like(c.full))
                      : Value(testing::sharded(
                            c.full, testing::random_boxes(rng, c.full.sizes().vec()), true));
  LoadOptions lo;
  lo.checkpoint_id = args.at(0);
  lo.collectives = ctx.collectives(std::chrono::seconds(20));
  load(dest, lo);
  for (const RankCase& c : cases)
    EXPECT_EQ(testing::compare_loaded(dest[c.key], c.full), "")
        << c.key << " " << testing::dims_str(c.full.sizes().vec()) << " on rank " << ctx.rank();
  return 0;
}

TEST(LayoutTest, ZeroSizeLayoutsAcrossRanksLoadAtAnotherWorldSize) {
  for (auto [saved, loaded] : std::vector<std::pair<int, int>>{{2, 3}, {3, 2}}) {
    testing::TempDir dir;
    const std::string seed = std::to_string(saved * 10 + loaded);
    auto s = testing::run_ranks(saved, "layout_save", opts({dir.sub("ck"), seed}));
    ASSERT_TRUE(s.ok()) << "save at " << saved << "\n" << s.summary();
    auto l = testing::run_ranks(loaded, "layout_load",
                                opts({dir.sub("ck"), seed, std::to_string(saved)}));
    EXPECT_TRUE(l.ok()) << "load at " << loaded << "\n" << l.summary();
    // And whole, in this process.
    StateDict all = load_all(dir.sub("ck"));
    for (const RankCase& c : rank_cases(std::stoull(seed), saved))
      EXPECT_TRUE(testing::same_bits(all.at(c.key).tensor(), c.full)) << c.key;
  }
}

}  // namespace
}  // namespace dcp

// dcp::libtorch::ResumableSampler and dcp::libtorch::Progress, through real checkpoints:
// a resumed sampler yields exactly the batches of an uninterrupted one (also
// across epoch boundaries), ranks split each global batch without overlap,
// and a checkpoint taken at one world size continues at another with every
// sample of the epoch seen exactly once.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>

#include "common/test_util.h"
#include "dcp/dcp.h"
#include "dcp/libtorch/progress.h"
#include "dcp/libtorch/sampler.h"

namespace {

using dcp::libtorch::Progress;
using dcp::libtorch::ResumableSampler;
using dcp::libtorch::SamplerOptions;
using dcp::testing::TempDir;

SamplerOptions options(int64_t size, int64_t batch, uint64_t seed, int rank = 0, int world = 1) {
  SamplerOptions o;
  o.dataset_size = size;
  o.batch_size = batch;
  o.seed = seed;
  o.rank = rank;
  o.world_size = world;
  return o;
}

struct Batch {
  int64_t epoch;
  std::vector<int64_t> indices;
  bool operator==(const Batch& o) const { return epoch == o.epoch && indices == o.indices; }
};

// The documented loop, for `epochs` epochs, stopping after `limit` batches
// (-1: no limit). Starts wherever the sampler is.
std::vector<Batch> run(ResumableSampler& s, int64_t epochs, int64_t limit = -1) {
  std::vector<Batch> out;
  for (; s.epoch() < epochs; s.next_epoch()) {
    while (limit < 0 || static_cast<int64_t>(out.size()) < limit) {
      auto b = s.next_batch();
      if (!b) break;
      out.push_back({s.epoch(), *b});
    }
    if (limit >= 0 && static_cast<int64_t>(out.size()) >= limit) break;
  }
  return out;
}

bool is_permutation_of_range(std::vector<int64_t> v, int64_t n) {
  std::sort(v.begin(), v.end());
  std::vector<int64_t> want(n);
  std::iota(want.begin(), want.end(), int64_t{0});
  return v == want;
}

TEST(TorchSampler, EpochOrders) {
  ResumableSampler s(options(100, 10, 42));
  const auto e0 = s.epoch_order(0), e1 = s.epoch_order(1);
  EXPECT_TRUE(is_permutation_of_range(e0, 100));
  EXPECT_TRUE(is_permutation_of_range(e1, 100));
  EXPECT_NE(e0, e1);
  EXPECT_EQ(e0, ResumableSampler(options(100, 3, 42)).epoch_order(0));  // batch size is irrelevant
  EXPECT_NE(e0, ResumableSampler(options(100, 10, 43)).epoch_order(0));
  SamplerOptions in_order = options(5, 2, 42);
  in_order.shuffle = false;
  EXPECT_EQ(ResumableSampler(in_order).epoch_order(3), (std::vector<int64_t>{0, 1, 2, 3, 4}));
  // Fixed by the algorithm (std::mt19937_64 + Fisher-Yates), not by the
  // platform or LibTorch: a change here breaks the resumption of every
  // checkpoint saved before it.
  EXPECT_EQ(ResumableSampler(options(8, 1, 0)).epoch_order(0),
            (std::vector<int64_t>{7, 4, 0, 1, 5, 2, 3, 6}));
}

TEST(TorchSampler, BatchesOfAnEpoch) {
  ResumableSampler s(options(10, 4, 1));
  EXPECT_EQ(s.batches_per_epoch(), 3);
  const auto order = s.epoch_order(0);
  auto b = run(s, 1);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[0].indices, std::vector<int64_t>(order.begin(), order.begin() + 4));
  EXPECT_EQ(b[2].indices, std::vector<int64_t>(order.begin() + 8, order.end()));  // short last
  EXPECT_EQ(s.epoch(), 1);
  EXPECT_EQ(s.position(), 0);

  SamplerOptions o = options(10, 4, 1);
  o.drop_last = true;
  ResumableSampler d(o);
  EXPECT_EQ(d.batches_per_epoch(), 2);
  EXPECT_EQ(run(d, 1).size(), 2u);
}

TEST(TorchSampler, RanksSplitEachGlobalBatch) {
  // 3 ranks, 2 samples each: global batches of 6 from 10 samples: 6, then 4
  // split 2, 1, 1.
  std::vector<std::vector<Batch>> per_rank;
  for (int r = 0; r < 3; ++r) {
    ResumableSampler s(options(10, 2, 9, r, 3));
    EXPECT_EQ(s.batches_per_epoch(), 2);
    per_rank.push_back(run(s, 2));
  }
  for (int64_t epoch = 0; epoch < 2; ++epoch) {
    std::vector<int64_t> all;
    for (int r = 0; r < 3; ++r) {
      ASSERT_EQ(per_rank[r].size(), 4u);
      const Batch& first = per_rank[r][2 * epoch];
      const Batch& last = per_rank[r][2 * epoch + 1];
      EXPECT_EQ(first.indices.size(), 2u);
      EXPECT_EQ(last.indices.size(), r == 0 ? 2u : 1u);
      all.insert(all.end(), first.indices.begin(), first.indices.end());
      all.insert(all.end(), last.indices.begin(), last.indices.end());
    }
    EXPECT_TRUE(is_permutation_of_range(all, 10)) << "epoch " << epoch;
  }
  // Fewer samples left than ranks: some ranks get an empty batch, not the
  // end of the epoch.
  ResumableSampler last(options(7, 2, 9, 3, 4));  // 8 per global batch: 7 -> 2,2,2,1
  auto b = last.next_batch();
  ASSERT_TRUE(b);
  EXPECT_EQ(b->size(), 1u);
  ResumableSampler tiny(options(2, 1, 9, 2, 3));  // 2 samples, 3 ranks
  b = tiny.next_batch();
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->empty());
  EXPECT_FALSE(tiny.next_batch());
}

// Resume after every possible batch of three epochs (mid-epoch, at the last
// batch of an epoch, at the first of the next): the rest equals the rest of
// the uninterrupted run.
TEST(TorchSampler, ResumeGivesTheSameBatches) {
  TempDir dir;
  ResumableSampler ref_sampler(options(23, 5, 77));
  const std::vector<Batch> ref = run(ref_sampler, 3);
  ASSERT_EQ(ref.size(), 15u);
  for (size_t stop = 0; stop <= ref.size(); ++stop) {
    auto s = std::make_shared<ResumableSampler>(options(23, 5, 77));
    std::vector<Batch> got = run(*s, 3, static_cast<int64_t>(stop));
    const std::string ckpt = dir.sub("ckpt" + std::to_string(stop));
    dcp::save({{"sampler", s}}, ckpt);

    // A new process: another seed in its options (the checkpoint's wins).
    auto resumed = std::make_shared<ResumableSampler>(options(23, 5, 1));
    dcp::StateDict sd{{"sampler", resumed}};
    dcp::load(sd, ckpt);
    const std::vector<Batch> rest = run(*resumed, 3);
    got.insert(got.end(), rest.begin(), rest.end());
    ASSERT_EQ(got.size(), ref.size()) << "stopped after " << stop;
    for (size_t i = 0; i < ref.size(); ++i)
      ASSERT_TRUE(got[i] == ref[i]) << "stopped after " << stop << ", batch " << i;
  }
}

// Saved at 4 ranks of 2 samples, resumed at 2 ranks of 3: the rest of the
// epoch is every sample not yet seen, each once; later epochs are the same
// permutations as before.
TEST(TorchSampler, WorldSizeChangeKeepsThePositionInSamples) {
  TempDir dir;
  const int64_t n = 50;
  std::vector<std::shared_ptr<ResumableSampler>> four;
  for (int r = 0; r < 4; ++r)
    four.push_back(std::make_shared<ResumableSampler>(options(n, 2, 5, r, 4)));
  std::vector<int64_t> seen;
  for (int step = 0; step < 3; ++step)
    for (auto& s : four) {
      auto b = s->next_batch();
      ASSERT_TRUE(b);
      seen.insert(seen.end(), b->begin(), b->end());
    }
  EXPECT_EQ(seen.size(), 24u);
  // Every rank holds the same state; rank 0's is what a 4-rank save keeps.
  for (auto& s : four)
    EXPECT_TRUE(dcp::Value(s->state_dict()).equals(dcp::Value(four[0]->state_dict())));
  dcp::save({{"sampler", four[0]}}, dir.sub("ckpt"));

  std::vector<std::shared_ptr<ResumableSampler>> two;
  for (int r = 0; r < 2; ++r) {
    two.push_back(std::make_shared<ResumableSampler>(options(n, 3, 5, r, 2)));
    dcp::StateDict sd{{"sampler", two.back()}};
    dcp::load(sd, dir.sub("ckpt"));
    EXPECT_EQ(two.back()->position(), 24);
  }
  EXPECT_EQ(two[0]->batches_left(), 5);  // 26 samples in global batches of 6
  for (int step = 0; step < 5; ++step)
    for (auto& s : two) {
      auto b = s->next_batch();
      ASSERT_TRUE(b);
      seen.insert(seen.end(), b->begin(), b->end());
    }
  for (auto& s : two) EXPECT_FALSE(s->next_batch());
  EXPECT_TRUE(is_permutation_of_range(seen, n));
  // The remainder is the same stretch of the same permutation.
  const auto order = four[0]->epoch_order(0);
  std::vector<int64_t> tail(seen.begin() + 24, seen.end());
  EXPECT_EQ(tail, std::vector<int64_t>(order.begin() + 24, order.end()));

  two[0]->next_epoch();
  const auto order1 = four[0]->epoch_order(1);
  EXPECT_EQ(two[0]->next_batch(), std::vector<int64_t>(order1.begin(), order1.begin() + 3));
}

TEST(TorchSampler, Mismatches) {
  TempDir dir;
  auto s = std::make_shared<ResumableSampler>(options(23, 5, 77));
  dcp::save({{"sampler", s}}, dir.sub("ckpt"));
  dcp::StateDict sd{{"sampler", std::make_shared<ResumableSampler>(options(24, 5, 77))}};
  try {
    dcp::load(sd, dir.sub("ckpt"));
    FAIL() << "loaded the position of another dataset";
  } catch (const dcp::CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("the checkpoint's dataset has 23 samples"),
              std::string::npos)
        << e.what();
  }
  EXPECT_THROW(ResumableSampler(options(0, 1, 0)), dcp::InvalidArgumentError);
  EXPECT_THROW(ResumableSampler(options(10, 0, 0)), dcp::InvalidArgumentError);
  EXPECT_THROW(ResumableSampler(options(10, 1, 0, 2, 2)), dcp::InvalidArgumentError);
}

TEST(TorchProgress, RoundTrip) {
  TempDir dir;
  auto p = std::make_shared<Progress>();
  p->advance(32);
  p->advance(32);
  p->set_epoch(3);
  p->set("best_loss", 0.125);
  p->set("best_step", 17);
  p->set("run", "baseline");
  p->set("warm", true);
  dcp::save({{"progress", p}}, dir.sub("ckpt"));

  auto q = std::make_shared<Progress>();
  q->set("stale", 1);
  q->set_step(999);
  dcp::StateDict sd{{"progress", q}};
  dcp::load(sd, dir.sub("ckpt"));
  EXPECT_EQ(q->step(), 2);
  EXPECT_EQ(q->epoch(), 3);
  EXPECT_EQ(q->samples_seen(), 64);
  EXPECT_EQ(q->values().size(), 4u);
  EXPECT_FALSE(q->contains("stale"));
  EXPECT_EQ(q->get("best_loss").to_double(), 0.125);
  EXPECT_EQ(q->get("best_step").to_int(), 17);
  EXPECT_EQ(q->get("run").to_string(), "baseline");
  EXPECT_TRUE(q->get("warm").to_bool());

  // A checkpoint without named values loads into a Progress that has some.
  auto empty = std::make_shared<Progress>();
  dcp::save({{"progress", empty}}, dir.sub("empty"));
  dcp::load(sd, dir.sub("empty"));
  EXPECT_TRUE(q->values().empty());
  EXPECT_EQ(q->step(), 0);

  EXPECT_THROW(q->set("t", at::zeros({1})), dcp::InvalidArgumentError);
  EXPECT_THROW(q->set("", 1), dcp::InvalidArgumentError);
  EXPECT_THROW(q->get("nope"), dcp::NotFoundError);
}

}  // namespace

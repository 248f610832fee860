#include <gtest/gtest.h>

#include "dcp/manager/manager.h"

namespace dcp {
namespace manager {
namespace {

std::vector<CheckpointInfo> ckpts(std::vector<std::tuple<int64_t, double, double>> v) {
  std::vector<CheckpointInfo> out;
  for (auto [step, time, loss] : v) {
    CheckpointInfo c;
    c.step = step;
    c.wall_time = time;
    if (loss >= 0) c.metrics["loss"] = loss;
    out.push_back(c);
  }
  return out;
}

TEST(RetentionTest, LastN) {
  KeepPolicy p;
  p.last = 2;
  auto c = ckpts({{10, 0, -1}, {20, 0, -1}, {30, 0, -1}, {40, 0, -1}});
  EXPECT_EQ(steps_to_keep(c, p), (std::set<int64_t>{30, 40}));
  p.last = 0;  // keep all
  EXPECT_EQ(steps_to_keep(c, p).size(), 4u);
  EXPECT_TRUE(steps_to_keep({}, p).empty());
}

TEST(RetentionTest, EveryKSteps) {
  KeepPolicy p;
  p.last = 1;
  p.every_steps = 20;
  auto c = ckpts({{10, 0, -1}, {20, 0, -1}, {30, 0, -1}, {40, 0, -1}, {50, 0, -1}});
  EXPECT_EQ(steps_to_keep(c, p), (std::set<int64_t>{20, 40, 50}));
}

TEST(RetentionTest, OnePerTSeconds) {
  KeepPolicy p;
  p.last = 1;
  p.every_seconds = 100;
  auto c = ckpts({{1, 0, -1}, {2, 50, -1}, {3, 120, -1}, {4, 150, -1}, {5, 230, -1}, {6, 260, -1}});
  EXPECT_EQ(steps_to_keep(c, p), (std::set<int64_t>{1, 3, 5, 6}));
}

TEST(RetentionTest, BestKByMetricNeverEvictsTheNewest) {
  KeepPolicy p;
  p.last = 1;
  p.best = {"loss", false, 2};
  auto c = ckpts({{1, 0, 0.9}, {2, 0, 0.1}, {3, 0, 0.5}, {4, 0, 0.2}, {5, 0, 0.8}});
  EXPECT_EQ(steps_to_keep(c, p), (std::set<int64_t>{2, 4, 5}));  // best two + newest
  p.best.maximize = true;
  EXPECT_EQ(steps_to_keep(c, p), (std::set<int64_t>{1, 5}));  // 0.9 and 0.8 (step 5 is also newest)
  // Checkpoints without the metric are not ranked.
  auto d = ckpts({{1, 0, -1}, {2, 0, 0.3}, {3, 0, -1}});
  p.best = {"loss", false, 5};
  EXPECT_EQ(steps_to_keep(d, p), (std::set<int64_t>{2, 3}));
}

TEST(RetentionTest, RulesAddUp) {
  KeepPolicy p;
  p.last = 2;
  p.every_steps = 100;
  p.every_seconds = 1000;
  p.best = {"loss", false, 1};
  auto c = ckpts({{100, 0, 0.5},
                  {150, 10, 0.05},
                  {200, 20, 0.9},
                  {250, 1500, 0.9},
                  {300, 1510, 0.9},
                  {350, 1520, 0.9}});
  // last 2: 300, 350; every 100: 100, 200, 300; per 1000 s: 100, 250; best: 150.
  EXPECT_EQ(steps_to_keep(c, p), (std::set<int64_t>{100, 150, 200, 250, 300, 350}));
  p.every_steps = 0;
  p.every_seconds = 0;
  EXPECT_EQ(steps_to_keep(c, p), (std::set<int64_t>{150, 300, 350}));
}

}  // namespace
}  // namespace manager
}  // namespace dcp

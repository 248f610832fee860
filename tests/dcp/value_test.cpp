#include <gtest/gtest.h>

#include <utility>

#include "common/test_util.h"

namespace dcp {
namespace {

TEST(ValueTest, KindsAndAccessors) {
  EXPECT_TRUE(Value().is_none());
  EXPECT_EQ(Value(true).to_bool(), true);
  EXPECT_EQ(Value(3).to_int(), 3);
  EXPECT_EQ(Value(int64_t{1} << 40).to_int(), int64_t{1} << 40);
  EXPECT_DOUBLE_EQ(Value(2.5).to_double(), 2.5);
  EXPECT_DOUBLE_EQ(Value(7).to_double(), 7.0);
  EXPECT_EQ(Value("abc").to_string(), "abc");
  EXPECT_EQ(Value(Bytes{"\x01\x02"}).to_bytes().data, "\x01\x02");
  EXPECT_TRUE(Value(at::ones({2})).is_tensor());
  EXPECT_TRUE(Value(List{1, 2}).is_list());
  EXPECT_TRUE(Value(Dict{{"a", 1}}).is_dict());
  EXPECT_TRUE(Value(std::make_shared<testing::Counter>()).is_stateful());
}

TEST(ValueTest, WrongKindNamesBoth) {
  try {
    Value(3).to_string();
    FAIL() << "expected an error";
  } catch (const InvalidArgumentError& e) {
    EXPECT_NE(std::string(e.what()).find("int"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("string"), std::string::npos);
  }
}

TEST(ValueTest, EqualsIsStructuralAndBitExact) {
  at::Tensor t = testing::make_tensor(at::kFloat, {3, 4}, 1);
  EXPECT_TRUE(Value(t).equals(Value(t.clone())));
  EXPECT_FALSE(Value(t).equals(Value(t + 1)));
  EXPECT_FALSE(Value(t).equals(Value(t.to(at::kDouble))));
  at::Tensor nan = at::full({2}, std::nan(""));
  EXPECT_TRUE(Value(nan).equals(Value(nan.clone())));
  Dict a{{"x", List{1, "s", 2.0}}, {"y", Dict{{"z", t}}}};
  Dict b{{"x", List{1, "s", 2.0}}, {"y", Dict{{"z", t.clone()}}}};
  EXPECT_TRUE(Value(a).equals(Value(b)));
  b["x"].list()[1] = "other";
  EXPECT_FALSE(Value(a).equals(Value(b)));
  EXPECT_FALSE(Value(1).equals(Value(1.0)));
}

// Copies of a Value share a sharded tensor until one is asked for it
// mutably; then each behaves as an independent copy (tensors alias, as a
// copied at::Tensor does).
TEST(ValueTest, CopiesOfAShardedTensorAreIndependent) {
  at::Tensor t = testing::make_tensor(at::kFloat, {2, 4}, 1);
  const Value a(ShardedTensor{{4, 4}, {Shard{t, {0, 0}}}});
  Value b = a;
  EXPECT_EQ(&a.sharded(), &b.sharded());  // shared: no copy made
  b.mutable_sharded().local_shards.push_back(
      Shard{testing::make_tensor(at::kFloat, {2, 4}, 2), {2, 0}});
  b.mutable_sharded().global_size[1] = 8;
  EXPECT_EQ(a.sharded().local_shards.size(), 1u);
  EXPECT_EQ(a.sharded().global_size, (std::vector<int64_t>{4, 4}));
  EXPECT_EQ(b.sharded().local_shards.size(), 2u);
  EXPECT_EQ(b.sharded().local_shards[0].tensor.data_ptr(), t.data_ptr());  // tensors alias
  Value c = b;
  c = Value(1);  // dropping a copy leaves the other whole
  EXPECT_EQ(b.sharded().local_shards.size(), 2u);
  EXPECT_FALSE(a.equals(b));
  Value d = a;
  d.mutable_sharded().local_shards[0].offsets = {2, 0};
  EXPECT_EQ(a.sharded().local_shards[0].offsets, (std::vector<int64_t>{0, 0}));
}

// A load fills the caller's sharded tensors in place and leaves the
// ShardedTensor objects themselves where they were: references into the
// state dict stay valid (a load reads them through const access, so its
// working copy never takes a copy of its own).
TEST(ValueTest, LoadKeepsTheCallersShardedTensorObjects) {
  testing::TempDir dir;
  at::Tensor full = testing::make_tensor(at::kFloat, {4, 4}, 1);
  save({{"w",
         ShardedTensor{{4, 4},
                       {Shard{full.narrow(0, 0, 2), {0, 0}}, Shard{full.narrow(0, 2, 2), {2, 0}}}}},
        {"nested", Dict{{"s", ShardedTensor{{4, 4}, {Shard{full, {0, 0}}}}}}},
        {"step", 3}},
       dir.sub("ck"));
  StateDict sd{
      {"w",
       ShardedTensor{{4, 4}, {Shard{at::zeros({2, 4}), {0, 0}}, Shard{at::zeros({2, 4}), {2, 0}}}}},
      {"nested", Dict{{"s", ShardedTensor{{4, 4}, {Shard{at::zeros({4, 4}), {0, 0}}}}}}},
      {"step", 0}};
  const ShardedTensor* w = &std::as_const(sd["w"]).sharded();
  const ShardedTensor* s = &std::as_const(sd["nested"].dict()["s"]).sharded();
  const Shard& first = w->local_shards[0];
  load(sd, dir.sub("ck"));
  EXPECT_EQ(&std::as_const(sd["w"]).sharded(), w);
  EXPECT_EQ(&std::as_const(sd["nested"].dict()["s"]).sharded(), s);
  EXPECT_TRUE(at::equal(first.tensor, full.narrow(0, 0, 2)));
  EXPECT_TRUE(at::equal(s->local_shards[0].tensor, full));
  EXPECT_EQ(sd["step"].to_int(), 3);
}

}  // namespace
}  // namespace dcp

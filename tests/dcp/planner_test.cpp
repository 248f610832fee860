// The planner extension points, proven with the two planners of DCP's docs:
// one that renames keys, one that saves float32 as float16.
#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "common/test_util.h"

namespace dcp {
namespace {

using testing::make_tensor;

// Write items as a rank's local plan has them. A [total, 4] tensor: whole,
// or the shard of `rows` rows at `row`.
WriteItem row_item(const std::string& key, int64_t row, int64_t rows, int64_t total,
                   at::ScalarType dtype = at::kFloat) {
  WriteItem it;
  it.index = MetadataIndex(key, {row, 0});
  it.type = rows == total ? WriteItemType::kTensor : WriteItemType::kShard;
  it.tensor_data = TensorWriteData{ChunkStorageMetadata{{row, 0}, {rows, 4}}, {dtype}, {total, 4}};
  return it;
}

// A plain value.
WriteItem value_item(const std::string& key) {
  WriteItem it;
  it.index = MetadataIndex(key);
  it.type = WriteItemType::kByteIO;
  return it;
}

// Saves every top-level key with a "foo_" prefix.
class RenameSavePlanner : public DefaultSavePlanner {
 public:
  void set_up_planner(const StateDict& sd, const std::optional<StorageMeta>& meta,
                      bool is_coordinator) override {
    StateDict renamed;
    for (const auto& [k, v] : sd) renamed.emplace("foo_" + k, v);
    DefaultSavePlanner::set_up_planner(renamed, meta, is_coordinator);
  }
};

// Loads keys saved with the "foo_" prefix into unprefixed destinations.
class RenameLoadPlanner : public DefaultLoadPlanner {
 public:
  void set_up_planner(StateDict& sd, const Metadata& md, bool is_coordinator) override {
    DefaultLoadPlanner::set_up_planner(sd, md, is_coordinator);
    std::map<std::string, Value*> renamed;
    for (auto& [k, v] : flat_) renamed.emplace("foo_" + k, v);
    flat_ = std::move(renamed);
  }
};

// Stores float32 tensors as float16 (halving the checkpoint).
class Fp16SavePlanner : public DefaultSavePlanner {
 public:
  SavePlan create_local_plan() override {
    SavePlan plan = DefaultSavePlanner::create_local_plan();
    for (auto& item : plan.items)
      if (item.tensor_data && item.tensor_data->properties.dtype == at::kFloat)
        item.tensor_data->properties.dtype = at::kHalf;
    return plan;
  }
  WriteData resolve_data(const WriteItem& item) override {
    WriteData d = DefaultSavePlanner::resolve_data(item);
    if (auto* t = std::get_if<at::Tensor>(&d))
      if (t->scalar_type() == at::kFloat) return t->to(at::kHalf);
    return d;
  }
};

TEST(PlannerTest, RenameKeys) {
  testing::TempDir dir;
  at::Tensor w = make_tensor(at::kFloat, {3, 3}, 1);
  SaveOptions so;
  so.checkpoint_id = dir.sub("ck");
  so.planner = std::make_shared<RenameSavePlanner>();
  Metadata md = save({{"w", w}, {"step", 5}}, so);
  EXPECT_TRUE(md.state_dict_metadata.count("foo_w"));
  EXPECT_TRUE(md.state_dict_metadata.count("foo_step"));
  EXPECT_FALSE(md.state_dict_metadata.count("w"));

  // The renamed keys load as they are...
  StateDict prefixed{{"foo_w", at::zeros({3, 3})}, {"foo_step", 0}};
  load(prefixed, dir.sub("ck"));
  EXPECT_TRUE(at::equal(prefixed["foo_w"].tensor(), w));
  EXPECT_EQ(prefixed["foo_step"].to_int(), 5);

  // ...and a renaming load planner maps them back.
  StateDict plain{{"w", at::zeros({3, 3})}, {"step", 0}};
  LoadOptions lo;
  lo.checkpoint_id = dir.sub("ck");
  lo.planner = std::make_shared<RenameLoadPlanner>();
  load(plain, lo);
  EXPECT_TRUE(at::equal(plain["w"].tensor(), w));
  EXPECT_EQ(plain["step"].to_int(), 5);
}

// Records which dict the default planner plans, and whether it holds a
// reference to a tensor of its own.
class ProbeSavePlanner : public DefaultSavePlanner {
 public:
  SavePlan create_local_plan() override {
    planned = &flat();
    w_refs = flat().at("w").tensor().use_count();
    return DefaultSavePlanner::create_local_plan();
  }
  const Dict* planned = nullptr;
  size_t w_refs = 0;
};

// save() lends the planner the state dict it plans (alive and unchanged
// until save() returns): the default planner plans it as it is, without a
// copy (a node and a tensor reference per key). A dict it is handed by
// anyone else, a subclass's renamed one, is copied (RenameSavePlanner's
// temporary is gone before create_local_plan).
TEST(PlannerTest, TheDefaultPlannerPlansSavesDictWithoutACopy) {
  testing::TempDir dir;
  at::Tensor w = make_tensor(at::kFloat, {8}, 1);
  const StateDict sd{{"w", w}, {"step", 5}};
  auto probe = std::make_shared<ProbeSavePlanner>();
  SaveOptions so;
  so.checkpoint_id = dir.sub("ck");
  so.planner = probe;
  save(sd, so);
  EXPECT_EQ(probe->planned, &sd);
  EXPECT_EQ(probe->w_refs, 2u);  // `w` and sd's

  ProbeSavePlanner direct;  // not from save(): a copy
  direct.set_up_planner(sd, std::nullopt, true);
  direct.create_local_plan();
  EXPECT_NE(direct.planned, &sd);
  EXPECT_EQ(direct.w_refs, 3u);
}

TEST(PlannerTest, SaveFloat32AsFloat16) {
  testing::TempDir dir;
  at::Tensor w = make_tensor(at::kFloat, {64, 64}, 2);
  at::Tensor ids = make_tensor(at::kLong, {10}, 3);
  SaveOptions so;
  so.checkpoint_id = dir.sub("ck");
  so.planner = std::make_shared<Fp16SavePlanner>();
  Metadata md = save({{"w", w}, {"ids", ids}}, so);
  const auto& wm = std::get<TensorStorageMetadata>(md.state_dict_metadata.at("w"));
  EXPECT_EQ(wm.properties.dtype, at::kHalf);
  EXPECT_EQ(md.storage_data.at(MetadataIndex("w", {0, 0})).length, 64u * 64u * 2u);

  // A float16 destination loads it as is.
  StateDict half{{"w", at::zeros({64, 64}, at::kHalf)}, {"ids", at::zeros({10}, at::kLong)}};
  load(half, dir.sub("ck"));
  EXPECT_TRUE(at::equal(half["w"].tensor(), w.to(at::kHalf)));
  EXPECT_TRUE(at::equal(half["ids"].tensor(), ids));

  // A float32 destination is a dtype mismatch by default...
  StateDict full{{"w", at::zeros({64, 64})}, {"ids", at::zeros({10}, at::kLong)}};
  EXPECT_THROW(load(full, dir.sub("ck")), CheckpointError);
  // ...and loads with conversion when asked (resolve_tensor / commit_tensor).
  LoadPlannerOptions po;
  po.allow_dtype_conversion = true;
  LoadOptions lo;
  lo.checkpoint_id = dir.sub("ck");
  lo.planner = std::make_shared<DefaultLoadPlanner>(po);
  load(full, lo);
  EXPECT_TRUE(at::equal(full["w"].tensor(), w.to(at::kHalf).to(at::kFloat)));
  EXPECT_TRUE(at::equal(full["ids"].tensor(), ids));
}

TEST(PlannerTest, GlobalPlanValidatesChunks) {
  DefaultSavePlanner planner;
  auto plan_with = [](std::vector<std::pair<std::vector<int64_t>, std::vector<int64_t>>> chunks) {
    SavePlan p;
    for (auto& [off, size] : chunks) {
      WriteItem it;
      it.index = MetadataIndex("t", off);
      it.type = WriteItemType::kShard;
      it.tensor_data = TensorWriteData{ChunkStorageMetadata{off, size}, {}, {4, 4}};
      p.items.push_back(it);
    }
    return p;
  };
  // Two ranks, rows: fine.
  EXPECT_NO_THROW(
      planner.create_global_plan({plan_with({{{0, 0}, {2, 4}}}), plan_with({{{2, 0}, {2, 4}}})}));
  // Overlap.
  EXPECT_THROW(
      planner.create_global_plan({plan_with({{{0, 0}, {3, 4}}}), plan_with({{{2, 0}, {2, 4}}})}),
      InvalidArgumentError);
  // A hole.
  EXPECT_THROW(
      planner.create_global_plan({plan_with({{{0, 0}, {1, 4}}}), plan_with({{{2, 0}, {2, 4}}})}),
      InvalidArgumentError);
  // Out of bounds.
  EXPECT_THROW(
      planner.create_global_plan({plan_with({{{0, 0}, {2, 4}}}), plan_with({{{2, 1}, {2, 4}}})}),
      InvalidArgumentError);
}

TEST(PlannerTest, DedupSpreadsReplicatedItems) {
  // Four equal tensors replicated on two ranks: each written once, two per rank.
  SavePlan p;
  for (int i = 0; i < 4; ++i) {
    WriteItem it;
    it.index = MetadataIndex("t" + std::to_string(i), {0});
    it.type = WriteItemType::kTensor;
    it.tensor_data = TensorWriteData{ChunkStorageMetadata{{0}, {100}}, {}, {100}};
    p.items.push_back(it);
  }
  DefaultSavePlanner balanced;
  auto [plans, md] = balanced.create_global_plan({p, p});
  EXPECT_EQ(plans[0].items.size(), 2u);
  EXPECT_EQ(plans[1].items.size(), 2u);
  SavePlannerOptions lowest;
  lowest.dedup_to_lowest_rank = true;
  DefaultSavePlanner low(lowest);
  auto [plans2, md2] = low.create_global_plan({p, p});
  EXPECT_EQ(plans2[0].items.size(), 4u);
  EXPECT_EQ(plans2[1].items.size(), 0u);
}

// The metadata entries the global plan builds: keys on some ranks only,
// several shards of one key on one rank, values; in key order or not. And
// what ranks disagree on is an error naming the key and both ranks.
TEST(PlannerTest, GlobalPlanEntriesAndDisagreements) {
  // Shards of 2 rows of an [8, 4] tensor; whole [2, 4] tensors; values.
  auto shard = [](const std::string& key, int64_t row, at::ScalarType dtype = at::kFloat) {
    return row_item(key, row, 2, 8, dtype);
  };
  auto whole = [](const std::string& key) { return row_item(key, 0, 2, 2); };
  auto value = value_item;
  auto plan = [](std::vector<WriteItem> items) {
    SavePlan p;
    p.items = std::move(items);
    return p;
  };
  // "b": rows 0-1 and 2-3 on rank 0, 4-5 and 6-7 on rank 1; "a" and "d" on
  // rank 0 only, "c" on rank 1 only, "e" on both (replicated value).
  std::vector<SavePlan> plans = {
      plan({whole("a"), shard("b", 0), shard("b", 2), whole("d"), value("e")}),
      plan({shard("b", 4), shard("b", 6), value("c"), value("e")})};
  for (bool reversed : {false, true}) {
    if (reversed)
      for (auto& p : plans) std::reverse(p.items.begin(), p.items.end());
    DefaultSavePlanner planner;
    auto [out, md] = planner.create_global_plan(plans);
    std::vector<std::string> keys;
    for (const auto& [k, e] : md.state_dict_metadata) keys.push_back(k);
    EXPECT_EQ(keys, (std::vector<std::string>{"a", "b", "c", "d", "e"}));
    const auto& b = std::get<TensorStorageMetadata>(md.state_dict_metadata.at("b"));
    std::set<int64_t> rows;
    for (const auto& c : b.chunks) rows.insert(c.offsets[0]);
    EXPECT_EQ(rows, (std::set<int64_t>{0, 2, 4, 6}));
    EXPECT_TRUE(std::holds_alternative<BytesStorageMetadata>(md.state_dict_metadata.at("c")));
  }
  auto error = [&](std::vector<SavePlan> in, SavePlannerOptions o = {}) {
    DefaultSavePlanner planner(o);
    try {
      planner.create_global_plan(std::move(in));
    } catch (const InvalidArgumentError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(error({plan({shard("x", 0)}), plan({value("x")})}),
            "key 'x' is a tensor on rank 0 but a plain value on rank 1");
  EXPECT_EQ(error({plan({value("x")}), plan({shard("x", 0)})}),
            "key 'x' is a plain value on rank 0 but a tensor on rank 1");
  const std::string differs = error({plan({shard("x", 0)}), plan({shard("x", 2, at::kDouble)})});
  EXPECT_NE(differs.find("key 'x' differs between ranks"), std::string::npos) << differs;
  EXPECT_NE(differs.find("on rank 1"), std::string::npos) << differs;
  SavePlannerOptions no_dedup;
  no_dedup.dedup_replicated = false;
  EXPECT_EQ(error({plan({value("v")}), plan({value("v")})}, no_dedup), "key 'v' is saved twice");
}

// Plans that list keys in order take a merge through the plans; plans in
// any other order (a subclass's) take a hash map. Both decide the same.
TEST(PlannerTest, DedupDecidesTheSameForSortedAndUnsortedPlans) {
  // 3 ranks: rank 0 alone holds a large tensor; replicated tensors of
  // different sizes on all ranks or on two; shards of "s" (rows 0-3 on
  // ranks 0 and 1 both, rows 4-7 on rank 2); a value on every rank.
  std::vector<SavePlan> plans(3);
  for (int r = 0; r < 3; ++r) {
    for (int i = 0; i < 6; ++i)
      if (i < 3 || i % 3 != r)
        plans[r].items.push_back(row_item("rep" + std::to_string(i), 0, 8 * (i + 1), 8 * (i + 1)));
    plans[r].items.push_back(r < 2 ? row_item("s", 0, 4, 8) : row_item("s", 4, 4, 8));
    plans[r].items.push_back(value_item("step"));
    const int64_t unique_rows = r == 0 ? 1000 : 8;
    plans[r].items.push_back(row_item("u" + std::to_string(r), 0, unique_rows, unique_rows));
  }
  auto decide = [](std::vector<SavePlan> in) {
    DefaultSavePlanner planner;
    auto [out, md] = planner.create_global_plan(std::move(in));
    std::vector<std::set<std::string>> kept(out.size());
    for (size_t r = 0; r < out.size(); ++r)
      for (const auto& it : out[r].items) kept[r].insert(to_string(it.index));
    return kept;
  };
  const auto sorted = decide(plans);
  // Rank 0 is loaded by its large tensor: everything replicated goes elsewhere.
  EXPECT_EQ(sorted[0], (std::set<std::string>{"'u0' chunk at [0, 0]"}));
  EXPECT_EQ(sorted[2].count("'s' chunk at [4, 0]"), 1u);
  size_t written = 0;
  for (const auto& k : sorted) written += k.size();
  EXPECT_EQ(written, 12u);  // 6 replicated, 2 shards, the value, 3 unique: each once
  for (auto& p : plans) std::reverse(p.items.begin(), p.items.end());
  EXPECT_EQ(decide(plans), sorted);
}

}  // namespace
}  // namespace dcp

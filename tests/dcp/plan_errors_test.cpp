// Errors a person can act on: the global plan refuses what the load could
// not read back, naming the key and the rank; the reader's and the load
// planner's errors name the key and the file; no message carries a C++
// backtrace (c10::Error::what() has one).
#include <gtest/gtest.h>

#include "common/test_util.h"

namespace dcp {
namespace {

using testing::make_tensor;

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

// No backtrace of c10's in a message.
void expect_no_backtrace(const std::string& msg) {
  EXPECT_FALSE(contains(msg, "Exception raised from")) << msg;
  EXPECT_FALSE(contains(msg, "frame #")) << msg;
}

// ---------------------------------------------------------------------------
// The global plan

// A tensor item of a [4, 4] float tensor (unless changed by `edit`).
WriteItem tensor_item(std::vector<int64_t> offsets, std::vector<int64_t> sizes,
                      const std::function<void(WriteItem&)>& edit = nullptr) {
  WriteItem it;
  it.index = MetadataIndex("t", offsets);
  it.type = WriteItemType::kShard;
  it.tensor_data = TensorWriteData{ChunkStorageMetadata{offsets, sizes}, {}, {4, 4}};
  if (edit) edit(it);
  return it;
}

SavePlan plan_of(std::vector<WriteItem> items) {
  SavePlan p;
  p.items = std::move(items);
  return p;
}

// The message of the global plan's InvalidArgumentError, or "no error".
std::string global_error(std::vector<SavePlan> plans) {
  DefaultSavePlanner planner;
  try {
    planner.create_global_plan(std::move(plans));
  } catch (const InvalidArgumentError& e) {
    return e.what();
  }
  return "no error";
}

TEST(PlanErrorsTest, GlobalPlanRefusesWhatTheLoadCannotReadBack) {
  const WriteItem top = tensor_item({0, 0}, {2, 4});
  // Rank 1's item is broken in one way; each error names the key and rank 1.
  const std::vector<std::pair<WriteItem, std::string>> broken = {
      {tensor_item({2, 1}, {2, 4}), "lies outside the tensor [4, 4]"},
      {tensor_item({2, 0}, {3, 4}), "lies outside the tensor [4, 4]"},
      {tensor_item({-1, 0}, {2, 4}), "lies outside"},
      {tensor_item({2, 0}, {-2, 4}), "lies outside"},
      {tensor_item({2, 0}, {2}), "the chunk has offsets [2, 0] and sizes [2]"},
      {tensor_item({2}, {2, 4}), "has 2 dimension(s)"},
      {tensor_item({2, 0}, {2, 4},
                   [](WriteItem& it) {
                     it.index.offset = {3, 0};
                   }),
       "named by offsets [3, 0] but its chunk starts at [2, 0]"},
      {tensor_item({2, 0}, {2, 4}, [](WriteItem& it) { it.tensor_data.reset(); }),
       "no tensor data"},
      {tensor_item({2, 0}, {2, 4},
                   [](WriteItem& it) { it.tensor_data->properties.dtype = at::kQInt8; }),
       "not supported"},
      {tensor_item({2, 0}, {2, 4},
                   [](WriteItem& it) {
                     it.tensor_data->size = {4, -4};
                   }),
       "is negative"},
  };
  for (const auto& [item, expected] : broken) {
    const std::string msg = global_error({plan_of({top}), plan_of({item})});
    EXPECT_TRUE(contains(msg, "key 't' on rank 1: ")) << msg;
    EXPECT_TRUE(contains(msg, expected)) << msg;
  }
  // A global size whose element count overflows int64 (the chunk is empty).
  const std::string huge = global_error({plan_of({tensor_item({0, 0}, {0, 0}, [](WriteItem& it) {
    it.tensor_data->size = {int64_t{1} << 40, int64_t{1} << 40};
  })})});
  EXPECT_TRUE(contains(huge, "more elements than int64 counts")) << huge;
  WriteItem value;
  value.index = MetadataIndex("v", {1});
  value.type = WriteItemType::kByteIO;
  EXPECT_EQ(global_error({plan_of({value})}),
            "key 'v' on rank 0: a plain value item has chunk offsets [1]");
}

TEST(PlanErrorsTest, GlobalPlanNamesTheRanksOfChunksThatClash) {
  // Overlap, with the ranks of both chunks.
  std::string msg = global_error(
      {plan_of({tensor_item({0, 0}, {3, 4})}), plan_of({tensor_item({2, 0}, {2, 4})})});
  EXPECT_EQ(msg,
            "key 't': chunk at [0, 0] of size [3, 4] (rank 0) and chunk at [2, 0] of size [2, 4] "
            "(rank 1) overlap");
  // A hole.
  msg = global_error(
      {plan_of({tensor_item({0, 0}, {1, 4})}), plan_of({tensor_item({2, 0}, {2, 4})})});
  EXPECT_TRUE(contains(msg, "key 't': the saved chunks cover 12 of 16 elements")) << msg;
  // An empty chunk where another starts: one stored item for two chunks.
  msg = global_error({plan_of({tensor_item({0, 0}, {4, 4}), tensor_item({0, 0}, {0, 4})})});
  EXPECT_EQ(msg, "key 't': two chunks start at [0, 0] (sizes [0, 4] and [4, 4], rank 0)");
  // A 0-dim tensor saved twice.
  auto scalar = [] {
    WriteItem it;
    it.index = MetadataIndex("s", {});
    it.type = WriteItemType::kTensor;
    it.tensor_data = TensorWriteData{ChunkStorageMetadata{{}, {}}, {}, {}};
    return it;
  };
  msg = global_error({plan_of({scalar(), scalar()})});
  EXPECT_TRUE(contains(msg, "key 's': a 0-dim tensor saved twice (rank 0)")) << msg;
}

// Many chunks per tensor (pytorch/pytorch#163548: 1,024 ranks, DCP's
// pairwise check took 200 s): 65,536 rows from 1,024 ranks and a 128 x 128
// grid of blocks validate (a sort and a sweep, not every pair), and one
// overlap among them is found with both ranks named.
TEST(PlanErrorsTest, ManyChunksPerTensorAreSweptNotCheckedPairwise) {
  constexpr int kRanks = 1024, kRowsPerRank = 64, kGrid = 128;
  auto item = [](const std::string& fqn, std::vector<int64_t> off, std::vector<int64_t> sizes,
                 std::vector<int64_t> global) {
    WriteItem it;
    it.index = MetadataIndex(fqn, off);
    it.type = WriteItemType::kShard;
    it.tensor_data = TensorWriteData{ChunkStorageMetadata{off, sizes}, {}, global};
    return it;
  };
  auto plans = [&](int64_t doubled_row) {  // that row's chunk covers the next row too
    std::vector<SavePlan> out(kRanks);
    const std::vector<int64_t> rows_size = {int64_t{kRanks} * kRowsPerRank, 8};
    const std::vector<int64_t> grid_size = {2 * kGrid, 2 * kGrid};
    for (int r = 0; r < kRanks; ++r) {
      for (int k = 0; k < kRowsPerRank; ++k) {
        const int64_t row = int64_t{r} * kRowsPerRank + k;
        out[r].items.push_back(item("rows", {row, 0}, {row == doubled_row ? 2 : 1, 8}, rows_size));
      }
      for (int b = r; b < kGrid * kGrid; b += kRanks)
        out[r].items.push_back(item("grid", {2 * (b / kGrid), 2 * (b % kGrid)}, {2, 2}, grid_size));
    }
    return out;
  };
  DefaultSavePlanner planner;
  auto [final_plans, md] = planner.create_global_plan(plans(-1));
  EXPECT_EQ(std::get<TensorStorageMetadata>(md.state_dict_metadata.at("rows")).chunks.size(),
            size_t{kRanks} * kRowsPerRank);
  EXPECT_EQ(std::get<TensorStorageMetadata>(md.state_dict_metadata.at("grid")).chunks.size(),
            size_t{kGrid} * kGrid);
  // Rank 624's last row, 39,999, also covers row 40,000 (rank 625's first).
  const std::string msg = global_error(plans(39999));
  EXPECT_EQ(msg,
            "key 'rows': chunk at [39999, 0] of size [2, 8] (rank 624) and chunk at [40000, 0] of "
            "size [1, 8] (rank 625) overlap")
      << msg;
}

// ---------------------------------------------------------------------------
// The local save plan and the writer

TEST(PlanErrorsTest, ShardsGivenTwiceAreSavedOnceOrRefused) {
  testing::TempDir dir;
  const at::Tensor top = make_tensor(at::kFloat, {2, 4}, 1),
                   bottom = make_tensor(at::kFloat, {2, 4}, 2);
  // The same shard twice (a replica): saved once.
  ShardedTensor twice{{4, 4},
                      {Shard{top, {0, 0}}, Shard{bottom, {2, 0}}, Shard{top.clone(), {0, 0}}}};
  Metadata md = save({{"t", twice}}, dir.sub("twice"));
  EXPECT_EQ(std::get<TensorStorageMetadata>(md.state_dict_metadata.at("t")).chunks.size(), 2u);
  StateDict back = load_all(dir.sub("twice"));
  EXPECT_TRUE(at::equal(back["t"].tensor(), at::cat({top, bottom})));
  // Copies that differ, or shards of other shapes at the same offsets: refused.
  auto error = [&](ShardedTensor st, const std::string& name, SavePlannerOptions po = {}) {
    SaveOptions o;
    o.checkpoint_id = dir.sub(name);
    o.planner = std::make_shared<DefaultSavePlanner>(po);
    try {
      save({{"t", st}}, o);
    } catch (const CheckpointError& e) {
      EXPECT_FALSE(is_committed_checkpoint(dir.sub(name)));
      return std::string(e.what());
    }
    return std::string("no error");
  };
  ShardedTensor differ{{4, 4}, {Shard{top, {0, 0}}, Shard{bottom, {2, 0}}, Shard{bottom, {0, 0}}}};
  EXPECT_TRUE(contains(error(differ, "differ"),
                       "key 't': two local shards start at [0, 0] and hold different values"));
  SavePlannerOptions off;
  off.check_replicas = ReplicaCheck::kOff;
  EXPECT_EQ(error(differ, "differ_off", off), "no error");
  ShardedTensor shapes{
      {4, 4}, {Shard{top, {0, 0}}, Shard{bottom, {2, 0}}, Shard{top.narrow(0, 0, 1), {0, 0}}}};
  EXPECT_TRUE(contains(error(shapes, "shapes"),
                       "key 't': two local shards start at [0, 0], of tensor float32[2, 4] and "
                       "tensor float32[1, 4]"));
}

// Gives the data of every tensor transposed: the same bytes count, another shape.
class TransposingSavePlanner : public DefaultSavePlanner {
 public:
  WriteData resolve_data(const WriteItem& item) override {
    WriteData d = DefaultSavePlanner::resolve_data(item);
    if (auto* t = std::get_if<at::Tensor>(&d)) return t->t().contiguous();
    return d;
  }
};

TEST(PlanErrorsTest, DataOfAnotherShapeThanItsChunkIsNotCommitted) {
  testing::TempDir dir;
  SaveOptions o;
  o.checkpoint_id = dir.sub("ck");
  o.planner = std::make_shared<TransposingSavePlanner>();
  try {
    save({{"w", make_tensor(at::kFloat, {2, 3}, 1)}}, o);
    FAIL() << "saved data of another shape";
  } catch (const CheckpointError& e) {
    EXPECT_EQ(e.root_code(), ErrorCode::kInvalidArgument);
    EXPECT_TRUE(contains(e.what(),
                         "resolve_data gave tensor float32[3, 2] for 'w' chunk at [0, 0], "
                         "but the plan expects float32[2, 3] (24 bytes)"))
        << e.what();
  }
  EXPECT_FALSE(is_committed_checkpoint(dir.sub("ck")));
}

// ---------------------------------------------------------------------------
// The load planner and the reader

class LoadErrorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.sub("ck");
    save({{"w", make_tensor(at::kFloat, {4, 3}, 1)}, {"step", 3}}, path_);
  }
  // The message of the load's CheckpointError; fails the test when there is none.
  std::string load_error(StateDict& dest, std::shared_ptr<LoadPlanner> planner = nullptr) {
    LoadOptions o;
    o.checkpoint_id = path_;
    o.planner = std::move(planner);
    try {
      load(dest, o);
    } catch (const CheckpointError& e) {
      expect_no_backtrace(e.what());
      return e.what();
    }
    ADD_FAILURE() << "the load succeeded";
    return "";
  }
  std::string data_file() const { return testing::data_files(path_).at(0); }

  testing::TempDir dir_;
  std::string path_;
};

TEST_F(LoadErrorsTest, DestinationShardsOutsideTheTensorOrTwiceAreRefused) {
  StateDict outside{{"w", ShardedTensor{{4, 3}, {Shard{at::zeros({2, 3}), {3, 0}}}}}, {"step", 0}};
  std::string msg = load_error(outside);
  EXPECT_TRUE(contains(msg,
                       "'w': destination shard at [3, 0] of shape [2, 3] lies outside the tensor "
                       "[4, 3]"))
      << msg;
  StateDict twice{
      {"w",
       ShardedTensor{{4, 3}, {Shard{at::zeros({2, 3}), {0, 0}}, Shard{at::zeros({1, 3}), {0, 0}}}}},
      {"step", 0}};
  msg = load_error(twice);
  EXPECT_TRUE(contains(msg, "'w': two destination shards start at [0, 0]")) << msg;
}

// resolve_tensor narrows out of range: ATen throws a c10::Error.
class NarrowingLoadPlanner : public DefaultLoadPlanner {
 public:
  at::Tensor resolve_tensor(const ReadItem& item) override {
    return DefaultLoadPlanner::resolve_tensor(item).narrow(0, 0, 100);
  }
};

// Reads a box of the saved chunk that is not there.
class OutOfChunkLoadPlanner : public DefaultLoadPlanner {
 public:
  LoadPlan create_local_plan() override {
    LoadPlan plan = DefaultLoadPlanner::create_local_plan();
    for (auto& item : plan.items)
      if (item.type == LoadItemType::kTensor) item.storage_offsets[0] = 3;
    return plan;
  }
};

// Reads into a box outside its destination.
class OutOfDestinationLoadPlanner : public DefaultLoadPlanner {
 public:
  LoadPlan create_local_plan() override {
    LoadPlan plan = DefaultLoadPlanner::create_local_plan();
    for (auto& item : plan.items)
      if (item.type == LoadItemType::kTensor) item.dest_offsets[0] = 3;
    return plan;
  }
};

// Hands out a tensor of another shape than the read's.
class WrongShapeLoadPlanner : public DefaultLoadPlanner {
 public:
  at::Tensor resolve_tensor(const ReadItem& item) override {
    return DefaultLoadPlanner::resolve_tensor(item).narrow(0, 0, 1);
  }
};

TEST_F(LoadErrorsTest, ReaderErrorsNameTheItemAndTheFile) {
  StateDict dest{{"w", at::zeros({4, 3})}, {"step", 0}};
  std::string msg = load_error(dest, std::make_shared<NarrowingLoadPlanner>());
  EXPECT_TRUE(contains(msg, "loading 'w' chunk at [0, 0] from '" + data_file() + "': ")) << msg;
  EXPECT_TRUE(contains(msg, "exceeds dimension size")) << msg;  // ATen's own words, no backtrace

  msg = load_error(dest, std::make_shared<OutOfChunkLoadPlanner>());
  EXPECT_TRUE(contains(msg, "loading 'w' chunk at [0, 0] from '" + data_file() +
                                "': the plan reads "
                                "the box at [3, 0] of size [4, 3] from a chunk of size [4, 3]"))
      << msg;

  msg = load_error(dest, std::make_shared<OutOfDestinationLoadPlanner>());
  EXPECT_TRUE(contains(msg, "loading 'w' chunk at [0, 0] from '" + data_file() +
                                "': the read for 'w' chunk at [0, 0] of the box at [3, 0] of size "
                                "[4, 3] does not fit its destination, a tensor float32[4, 3]"))
      << msg;

  msg = load_error(dest, std::make_shared<WrongShapeLoadPlanner>());
  EXPECT_TRUE(contains(msg, "loading 'w' chunk at [0, 0] from '" + data_file() +
                                "': resolve_tensor gave tensor float32[1, 3] for a read of size "
                                "[4, 3]"))
      << msg;
}

// create_local_plan makes a bad view: a c10::Error in a protocol step.
class BadViewLoadPlanner : public DefaultLoadPlanner {
 public:
  LoadPlan create_local_plan() override {
    at::ones({2}).view({3});
    return DefaultLoadPlanner::create_local_plan();
  }
};

class BadViewSavePlanner : public DefaultSavePlanner {
 public:
  WriteData resolve_data(const WriteItem& item) override {
    at::ones({2}).view({3});
    return DefaultSavePlanner::resolve_data(item);
  }
};

TEST_F(LoadErrorsTest, NoBacktraceInAnyStep) {
  StateDict dest{{"w", at::zeros({4, 3})}, {"step", 0}};
  const std::string msg = load_error(dest, std::make_shared<BadViewLoadPlanner>());
  EXPECT_TRUE(contains(msg, "rank 0 in plan:local (internal): shape '[3]' is invalid")) << msg;
  SaveOptions so;
  so.checkpoint_id = dir_.sub("save");
  so.planner = std::make_shared<BadViewSavePlanner>();
  try {
    save({{"w", at::ones({2})}}, so);
    ADD_FAILURE() << "the save succeeded";
  } catch (const CheckpointError& e) {
    EXPECT_TRUE(contains(e.what(), "shape '[3]' is invalid")) << e.what();
    expect_no_backtrace(e.what());
  }
}

// ---------------------------------------------------------------------------
// Strict loads

// A global plan of its own (the plans as they are): each rank judges its keys.
class OwnGlobalPlanLoadPlanner : public DefaultLoadPlanner {
 public:
  using DefaultLoadPlanner::DefaultLoadPlanner;
  std::vector<LoadPlan> create_global_plan(std::vector<LoadPlan> all) override { return all; }
};

TEST_F(LoadErrorsTest, StrictWithoutTheDefaultGlobalPlanStillChecksKeys) {
  StateDict dest{{"w", at::zeros({4, 3})}, {"other", at::zeros({1})}};
  const std::string msg = load_error(dest, std::make_shared<OwnGlobalPlanLoadPlanner>());
  EXPECT_TRUE(contains(msg, "missing from the checkpoint: 'other'")) << msg;
  EXPECT_TRUE(contains(msg, "in the checkpoint but not in the state dict: 'step'")) << msg;
  LoadPlannerOptions lax;
  lax.strict = false;
  LoadOptions o;
  o.checkpoint_id = path_;
  o.planner = std::make_shared<OwnGlobalPlanLoadPlanner>(lax);
  LoadResult r = load(dest, o);
  EXPECT_EQ(r.missing_keys, std::vector<std::string>{"other"});
  EXPECT_EQ(r.unexpected_keys, std::vector<std::string>{"step"});
}

}  // namespace
}  // namespace dcp

// The conformance suite every storage backend passes: round trips of every
// kind of value through save() and load(), parameterised over backends and
// their options.
#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <mutex>

#include "common/test_util.h"

namespace dcp {
namespace {

using testing::make_tensor;
using testing::scrambled_like;

struct BackendCase {
  std::string name;
  bool memory;
  FileSystemWriterOptions writer;
  FileSystemReaderOptions reader;
};

// gtest prints this in test names and failures (instead of the struct's bytes).
void PrintTo(const BackendCase& c, std::ostream* os) { *os << c.name; }

std::vector<BackendCase> cases() {
  std::vector<BackendCase> v;
  v.push_back({"fs", false, {}, {}});
  BackendCase one{"fs_one_thread_file_per_item", false, {}, {}};
  one.writer.threads = 1;
  one.writer.file_per_thread = false;
  one.reader.threads = 1;
  v.push_back(one);
  BackendCase nosum{"fs_no_checksums_no_sync", false, {}, {}};
  nosum.writer.checksums = false;
  nosum.writer.sync_files = false;
  nosum.reader.verify_checksums = false;
  v.push_back(nosum);
  BackendCase tiny{"fs_tiny_buffers", false, {}, {}};
  tiny.writer.coalesce_below_bytes = 100;
  tiny.writer.buffer_bytes = 256;
  tiny.reader.coalesce_bytes = 512;
  tiny.writer.threads = 3;
  v.push_back(tiny);
  v.push_back({"memory", true, {}, {}});
  BackendCase mem4{"memory_four_threads", true, {}, {}};
  mem4.writer.threads = 4;
  mem4.reader.threads = 4;
  v.push_back(mem4);
  return v;
}

class ConformanceTest : public ::testing::TestWithParam<BackendCase> {
 protected:
  std::string id(const std::string& name) {
    if (GetParam().memory) return "memory://" + unique_ + "/" + name;
    return dir_.sub(name);
  }
  std::shared_ptr<StorageWriter> writer(const std::string& name, bool overwrite = false) {
    auto opt = GetParam().writer;
    opt.overwrite = overwrite;
    return GetParam().memory ? make_memory_writer(id(name), opt)
                             : make_filesystem_writer(id(name), opt);
  }
  std::shared_ptr<StorageReader> reader(const std::string& name) {
    return GetParam().memory ? make_memory_reader(id(name), GetParam().reader)
                             : make_filesystem_reader(id(name), GetParam().reader);
  }
  Metadata save_to(const StateDict& sd, const std::string& name,
                   std::shared_ptr<SavePlanner> planner = nullptr, bool overwrite = false) {
    SaveOptions o;
    o.storage_writer = writer(name, overwrite);
    o.planner = std::move(planner);
    return save(sd, o);
  }
  LoadResult load_from(StateDict& sd, const std::string& name, bool strict = true,
                       std::shared_ptr<LoadPlanner> planner = nullptr) {
    LoadOptions o;
    o.storage_reader = reader(name);
    o.strict = strict;
    o.planner = std::move(planner);
    return load(sd, o);
  }
  // Saves `sd`, loads into a scrambled copy of it, and checks they are equal.
  void round_trip(const StateDict& sd, const std::string& name) {
    save_to(sd, name);
    StateDict dest;
    for (const auto& [k, v] : sd)
      dest[k] = v.is_tensor() ? Value(scrambled_like(v.tensor())) : Value();
    load_from(dest, name);
    for (const auto& [k, v] : sd) EXPECT_TRUE(v.equals(dest.at(k))) << "key " << k;
  }

  testing::TempDir dir_;
  std::string unique_ = "conf" + std::to_string(counter_++);
  static std::atomic<int> counter_;
};
std::atomic<int> ConformanceTest::counter_{0};

TEST_P(ConformanceTest, EveryDtype) {
  StateDict sd;
  int i = 0;
  for (at::ScalarType dt : testing::all_dtypes()) sd[dtype_name(dt)] = make_tensor(dt, {3, 5}, i++);
  round_trip(sd, "dtypes");
}

TEST_P(ConformanceTest, ViewsAndStrides) {
  at::Tensor base = make_tensor(at::kFloat, {6, 8}, 1);
  StateDict sd{{"transposed", base.t()},
               {"narrowed", base.narrow(0, 2, 3)},
               {"strided", base.slice(1, 0, 8, 3)},
               {"expanded", make_tensor(at::kDouble, {1, 4}, 2).expand({5, 4})},
               {"column", base.select(1, 3)},
               {"storage_offset", base.view(-1).narrow(0, 7, 20)}};
  ASSERT_FALSE(sd["transposed"].tensor().is_contiguous());
  ASSERT_GT(sd["storage_offset"].tensor().storage_offset(), 0);
  round_trip(sd, "views");
}

TEST_P(ConformanceTest, LoadsIntoNonContiguousDestination) {
  at::Tensor src = make_tensor(at::kFloat, {4, 6}, 3);
  save_to({{"w", src}}, "noncontig");
  at::Tensor backing = at::zeros({6, 4});
  StateDict dest{{"w", backing.t()}};  // a transposed view
  load_from(dest, "noncontig");
  EXPECT_TRUE(at::equal(backing.t(), src));
}

// Keys saved with different values loaded into one tensor (tied weights in
// the destination, e.g. an embedding and the output layer): the load is no
// checksum error, the other keys load as usual, and the tensor holds the
// last key's value. Small items are read straight into their destinations
// (one vectored read for the run) and checked there afterwards, when later
// items have landed on the same memory: each is read again privately and
// checked there instead. One writer and one reader thread here, so that the
// items share one file and one run and the order is known (with several
// reader threads, reads into one tensor race and its value is unspecified).
TEST_P(ConformanceTest, TiedDestinationsAreNoChecksumError) {
  for (int64_t n : {16, 300000}) {  // 64 B each (one run), 1.2 MB each (read one by one)
    const std::string name = "tied" + std::to_string(n);
    StateDict sd;
    for (int i = 0; i < 6; ++i) sd["k" + std::to_string(i)] = make_tensor(at::kFloat, {n}, i);
    FileSystemWriterOptions wo = GetParam().writer;
    wo.threads = 1;
    wo.file_per_thread = true;
    FileSystemReaderOptions ro = GetParam().reader;
    ro.threads = 1;
    SaveOptions so;
    so.storage_writer =
        GetParam().memory ? make_memory_writer(id(name), wo) : make_filesystem_writer(id(name), wo);
    save(sd, so);
    at::Tensor tied = at::zeros({n});
    StateDict dest;
    for (int i = 0; i < 6; ++i)
      dest["k" + std::to_string(i)] = i % 2 ? Value(tied) : Value(at::zeros({n}));
    LoadOptions lo;
    lo.storage_reader =
        GetParam().memory ? make_memory_reader(id(name), ro) : make_filesystem_reader(id(name), ro);
    ASSERT_NO_THROW(load(dest, lo)) << name;
    EXPECT_TRUE(at::equal(tied, sd.at("k5").tensor())) << name;
    for (int i = 0; i < 6; i += 2)
      EXPECT_TRUE(at::equal(dest.at("k" + std::to_string(i)).tensor(),
                            sd.at("k" + std::to_string(i)).tensor()))
          << name << " k" << i;
  }
}

// Storage asks resolve_tensor once per read and commits what it gave, also
// when the tensor cannot take the saved bytes as they are (a transposed
// view, another dtype with conversion on) and is filled through a buffer:
// small items of one run and large ones, whole and in rows.
TEST_P(ConformanceTest, ResolveAndCommitComeInPairs) {
  class Counting : public DefaultLoadPlanner {
   public:
    using DefaultLoadPlanner::DefaultLoadPlanner;
    at::Tensor resolve_tensor(const ReadItem& item) override {
      at::Tensor t = DefaultLoadPlanner::resolve_tensor(item);
      std::lock_guard<std::mutex> lock(mu);
      ++resolved[to_string(item.dest_index)];
      return t;
    }
    void commit_tensor(const ReadItem& item, at::Tensor& tensor) override {
      {
        std::lock_guard<std::mutex> lock(mu);
        ++committed[to_string(item.dest_index)];
      }
      DefaultLoadPlanner::commit_tensor(item, tensor);
    }
    std::mutex mu;
    std::map<std::string, int> resolved, committed;
  };
  StateDict sd;
  for (int i = 0; i < 8; ++i) sd["small" + std::to_string(i)] = make_tensor(at::kFloat, {4, 6}, i);
  sd["large"] = make_tensor(at::kFloat, {512, 768}, 20);  // 1.5 MiB: read on its own
  save_to(sd, "pairs");
  StateDict dest;
  std::vector<at::Tensor> backing;
  for (const auto& [k, v] : sd) {
    const at::Tensor& t = v.tensor();
    if (k == "small1" || k == "large") {  // transposed views: through a buffer
      backing.push_back(at::zeros({t.size(1), t.size(0)}));
      dest[k] = backing.back().t();
    } else if (k == "small2") {  // another dtype, converted
      dest[k] = at::zeros(t.sizes(), at::kDouble);
    } else {
      dest[k] = at::zeros_like(t);
    }
  }
  auto planner = std::make_shared<Counting>(LoadPlannerOptions{true, true});
  load_from(dest, "pairs", true, planner);
  for (const auto& [k, v] : sd) {
    const std::string item = to_string(MetadataIndex(k, {0, 0}));
    EXPECT_EQ(planner->resolved[item], 1) << item;
    EXPECT_EQ(planner->committed[item], 1) << item;
    EXPECT_TRUE(at::equal(dest.at(k).tensor().to(at::kFloat), v.tensor())) << k;
  }
}

TEST_P(ConformanceTest, ZeroDimAndEmpty) {
  StateDict sd{{"scalar_f", at::scalar_tensor(3.5)},
               {"scalar_i", at::scalar_tensor(7, at::kLong)},
               {"scalar_b", at::scalar_tensor(true, at::kBool)},
               {"empty", at::empty({0})},
               {"empty2d", at::empty({3, 0}, at::kInt)}};
  round_trip(sd, "zerodim");
}

TEST_P(ConformanceTest, LargeAndSmallItemsTogether) {
  StateDict sd;
  for (int i = 0; i < 50; ++i)
    sd["small" + std::to_string(i)] = make_tensor(at::kFloat, {i + 1}, i);
  sd["big"] = make_tensor(at::kFloat, {1024, 768}, 99);  // 3 MiB: written directly
  sd["big_bf16"] = make_tensor(at::kBFloat16, {1024, 1024}, 98);
  round_trip(sd, "mixed");
}

TEST_P(ConformanceTest, NestedDictsAndPlainValuesInPlace) {
  at::Tensor w = make_tensor(at::kFloat, {2, 3}, 4);
  at::Tensor m = make_tensor(at::kFloat, {2, 3}, 5);
  StateDict sd{
      {"model", Dict{{"layer", Dict{{"weight", w}}}}},
      {"optim", Dict{{"state", List{m}},
                     {"param_groups", List{Dict{{"lr", 0.01}, {"betas", List{0.9, 0.99}}}}}}},
      {"step", 42},
      {"epoch_fraction", 0.25},
      {"done", false},
      {"tag", "run-7"},
      {"blob", Bytes{std::string("\0\1\2", 3)}},
      {"nothing", Value()},
      {"empty", Dict{}}};
  save_to(sd, "nested");

  at::Tensor w2 = at::zeros({2, 3}), m2 = at::zeros({2, 3});
  void* w2_ptr = w2.data_ptr();
  StateDict dest{{"model", Dict{{"layer", Dict{{"weight", w2}}}}},
                 {"optim", Dict{{"state", List{m2}}, {"param_groups", List{}}}},
                 {"step", 0},
                 {"epoch_fraction", 0.0},
                 {"done", true},
                 {"tag", ""},
                 {"blob", Bytes{}},
                 {"nothing", 1},
                 {"empty", Dict{}}};
  load_from(dest, "nested");
  EXPECT_TRUE(Value(dest).equals(Value(sd)));
  // Tensors were filled in place, not replaced.
  EXPECT_EQ(dest["model"].dict()["layer"].dict()["weight"].tensor().data_ptr(), w2_ptr);
  EXPECT_TRUE(at::equal(w2, w));
  EXPECT_TRUE(at::equal(m2, m));
}

TEST_P(ConformanceTest, StatefulObjects) {
  auto c = std::make_shared<testing::Counter>();
  c->weight = make_tensor(at::kFloat, {4, 3}, 6);
  c->step = 99;
  c->name = "saved";
  auto inner = std::make_shared<testing::Counter>();
  inner->step = 5;
  save_to({{"counter", c}, {"nested", Dict{{"inner", inner}}}, {"x", 1}}, "stateful");

  auto c2 = std::make_shared<testing::Counter>();
  auto inner2 = std::make_shared<testing::Counter>();
  void* ptr = c2->weight.data_ptr();
  StateDict dest{{"counter", c2}, {"nested", Dict{{"inner", inner2}}}, {"x", 0}};
  load_from(dest, "stateful");
  EXPECT_TRUE(at::equal(c2->weight, c->weight));
  EXPECT_EQ(c2->weight.data_ptr(), ptr);
  EXPECT_EQ(c2->step, 99);
  EXPECT_EQ(c2->name, "saved");
  EXPECT_EQ(inner2->step, 5);
  EXPECT_TRUE(dest["counter"].is_stateful());
  EXPECT_EQ(dest["x"].to_int(), 1);
}

TEST_P(ConformanceTest, LoadWithoutTemplate) {
  StateDict sd{{"model", Dict{{"a", make_tensor(at::kHalf, {3, 2}, 7)},
                              {"b", make_tensor(at::kLong, {4}, 8)}}},
               {"list", List{make_tensor(at::kFloat, {1}, 9), make_tensor(at::kFloat, {2}, 10)}},
               {"meta", Dict{{"step", 3}, {"names", List{"a", "b"}}}}};
  save_to(sd, "notemplate");
  LoadOptions o;
  o.storage_reader = reader("notemplate");
  StateDict loaded = load_all(o);
  EXPECT_TRUE(Value(loaded).equals(Value(sd)));
}

TEST_P(ConformanceTest, ShardedTensorsReshardInProcess) {
  at::Tensor full = make_tensor(at::kFloat, {8, 6}, 11);
  ShardedTensor rows{{8, 6}, {}};
  for (int r = 0; r < 4; ++r)
    rows.local_shards.push_back(Shard{full.narrow(0, 2 * r, 2).clone(), {2 * r, 0}});
  save_to({{"w", rows}}, "sharded");

  // Sharded by rows -> one full tensor.
  StateDict as_full{{"w", at::zeros({8, 6})}};
  load_from(as_full, "sharded");
  EXPECT_TRUE(at::equal(as_full["w"].tensor(), full));

  // Sharded by rows -> uneven column shards.
  ShardedTensor cols{{8, 6}, {Shard{at::zeros({8, 1}), {0, 0}}, Shard{at::zeros({8, 5}), {0, 1}}}};
  StateDict as_cols{{"w", cols}};
  load_from(as_cols, "sharded");
  EXPECT_TRUE(at::equal(as_cols["w"].sharded().local_shards[0].tensor, full.narrow(1, 0, 1)));
  EXPECT_TRUE(at::equal(as_cols["w"].sharded().local_shards[1].tensor, full.narrow(1, 1, 5)));

  // Full -> 2-D blocks.
  save_to({{"w", full}}, "full");
  ShardedTensor blocks{{8, 6}, {}};
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j)
      blocks.local_shards.push_back(Shard{at::zeros({4, 3}), {4 * i, 3 * j}});
  StateDict as_blocks{{"w", blocks}};
  load_from(as_blocks, "full");
  for (const auto& s : as_blocks["w"].sharded().local_shards)
    EXPECT_TRUE(at::equal(s.tensor, full.narrow(0, s.offsets[0], 4).narrow(1, s.offsets[1], 3)));
}

TEST_P(ConformanceTest, StrictAndNonStrictKeys) {
  save_to({{"a", at::ones({2})}, {"b", at::ones({2})}, {"s", 1}}, "keys");
  StateDict dest{{"a", at::zeros({2})}, {"c", at::zeros({2})}};
  try {
    load_from(dest, "keys");
    FAIL() << "strict load should fail";
  } catch (const CheckpointError& e) {
    const std::string msg = e.what();
    EXPECT_EQ(e.root_code(), ErrorCode::kPlanMismatch);
    EXPECT_NE(msg.find("missing from the checkpoint: 'c'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'b'"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'s'"), std::string::npos) << msg;
  }
  LoadResult r = load_from(dest, "keys", /*strict=*/false);
  EXPECT_EQ(r.missing_keys, std::vector<std::string>{"c"});
  EXPECT_EQ(r.unexpected_keys, (std::vector<std::string>{"b", "s"}));
  EXPECT_TRUE(at::equal(dest["a"].tensor(), at::ones({2})));
  EXPECT_TRUE(at::equal(dest["c"].tensor(), at::zeros({2})));
}

TEST_P(ConformanceTest, ExcludedKeysAreNeitherLoadedNorReported) {
  save_to({{"model", Dict{{"w", at::ones({2})}, {"b", at::ones({3})}}}, {"rng", at::ones({4})}},
          "exclude");
  // "rng" has another shape here: excluded, it is no mismatch; "model.b" stays as it is.
  StateDict dest{{"model", Dict{{"w", at::zeros({2})}, {"b", at::zeros({3})}}},
                 {"rng", at::zeros({9})}};
  LoadOptions o;
  o.storage_reader = reader("exclude");
  o.exclude = {"rng", "model.b"};
  LoadResult r = load(dest, o);
  EXPECT_TRUE(r.missing_keys.empty());
  EXPECT_TRUE(r.unexpected_keys.empty());
  EXPECT_TRUE(at::equal(dest["model"].dict()["w"].tensor(), at::ones({2})));
  EXPECT_TRUE(at::equal(dest["model"].dict()["b"].tensor(), at::zeros({3})));
  EXPECT_TRUE(at::equal(dest["rng"].tensor(), at::zeros({9})));
  EXPECT_TRUE(key_matches("model.b", {"model"}));
  EXPECT_FALSE(key_matches("modelx.b", {"model"}));
}

TEST_P(ConformanceTest, ShapeAndDtypeMismatchNameTheKey) {
  save_to({{"layer.w", at::ones({2, 3})}, {"layer.b", at::ones({3})}, {"n", 1}}, "mismatch");
  StateDict dest{{"layer.w", at::zeros({3, 2})},
                 {"layer.b", at::zeros({3}, at::kDouble)},
                 {"n", at::zeros({1})}};
  try {
    load_from(dest, "mismatch");
    FAIL();
  } catch (const CheckpointError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'layer.w': shape mismatch: checkpoint float32[2, 3], destination [3, 2]"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("'layer.b': dtype mismatch: checkpoint float32[3], destination float64[3]"),
              std::string::npos)
        << msg;
    EXPECT_NE(msg.find("'n': the checkpoint holds a plain value"), std::string::npos) << msg;
  }
  // Nothing was loaded.
  EXPECT_TRUE(at::equal(dest["layer.w"].tensor(), at::zeros({3, 2})));
}

TEST_P(ConformanceTest, CommittedCheckpointIsNotOverwrittenUnlessAsked) {
  save_to({{"v", at::ones({3})}}, "ow");
  try {
    save_to({{"v", at::zeros({3})}}, "ow");
    FAIL();
  } catch (const CheckpointError& e) {
    EXPECT_EQ(e.root_code(), ErrorCode::kAlreadyExists);
    EXPECT_NE(std::string(e.what()).find("refusing to overwrite"), std::string::npos);
  }
  StateDict dest{{"v", at::zeros({3})}};
  load_from(dest, "ow");
  EXPECT_TRUE(at::equal(dest["v"].tensor(), at::ones({3})));

  save_to({{"v", at::full({3}, 2.0)}}, "ow", nullptr, /*overwrite=*/true);
  load_from(dest, "ow");
  EXPECT_TRUE(at::equal(dest["v"].tensor(), at::full({3}, 2.0)));
}

TEST_P(ConformanceTest, MetadataDescribesTheCheckpoint) {
  Metadata md = save_to({{"w", at::ones({4, 4})}, {"step", 3}}, "md");
  ASSERT_EQ(md.state_dict_metadata.size(), 2u);
  const auto& w = std::get<TensorStorageMetadata>(md.state_dict_metadata.at("w"));
  EXPECT_EQ(w.size, (std::vector<int64_t>{4, 4}));
  EXPECT_EQ(w.properties.dtype, at::kFloat);
  ASSERT_EQ(w.chunks.size(), 1u);
  EXPECT_EQ(md.storage_data.at(MetadataIndex("w", {0, 0})).length, 64u);
  EXPECT_TRUE(std::holds_alternative<BytesStorageMetadata>(md.state_dict_metadata.at("step")));
  ASSERT_TRUE(md.storage_meta);
  EXPECT_FALSE(md.storage_meta->save_id.empty());
  Metadata read = reader("md")->read_metadata();
  EXPECT_EQ(read.storage_data, md.storage_data);
}

TEST_P(ConformanceTest, Checkpointer) {
  Checkpointer cp(writer("cp"), reader("cp"));
  at::Tensor t = make_tensor(at::kFloat, {5}, 12);
  cp.save({{"t", t}, {"k", "v"}});
  StateDict dest{{"t", at::zeros({5})}, {"k", ""}};
  cp.load(dest);
  EXPECT_TRUE(at::equal(dest["t"].tensor(), t));
  EXPECT_EQ(dest["k"].to_string(), "v");
}

INSTANTIATE_TEST_SUITE_P(Backends, ConformanceTest, ::testing::ValuesIn(cases()),
                         [](const auto& info) { return info.param.name; });

TEST(CheckpointIdTest, RegistryPicksBackendByScheme) {
  testing::TempDir dir;
  save({{"a", at::ones({2})}}, dir.sub("by_path"));
  EXPECT_TRUE(is_committed_checkpoint(dir.sub("by_path")));
  save({{"a", at::ones({2})}}, "memory://registry_test/x");
  StateDict d{{"a", at::zeros({2})}};
  load(d, "memory://registry_test/x");
  EXPECT_TRUE(at::equal(d["a"].tensor(), at::ones({2})));
  StateDict d2{{"a", at::zeros({2})}};
  load(d2, "fs://" + dir.sub("by_path"));
  EXPECT_TRUE(at::equal(d2["a"].tensor(), at::ones({2})));
  try {
    save({{"a", 1}}, "s3://bucket/x");
    FAIL();
  } catch (const CheckpointError& e) {  // save() throws one type, whatever failed
    EXPECT_EQ(e.root_code(), ErrorCode::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("no storage backend 's3'"), std::string::npos);
  }
}

}  // namespace
}  // namespace dcp

// Reading what PyTorch writes, against the real thing: checkpoints made at
// test time by Debian's python3-torch 1.13 (DCP at 1 and 2 ranks, both file
// layouts; torch.save files) and 2.x-flavoured DCP directories pickled by
// CPython over stand-ins of the 2.x classes (tests/interop/py). Every leaf
// the fixture's manifest lists is compared, element by element and value by
// value, after dcp::load_all and after an in-place dcp::load; the 2-rank
// checkpoints are also loaded at 2 and 3 ranks into sharded destinations.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <cmath>
#include <map>
#include <mutex>

#include "common/layouts.h"
#include "common/multiproc.h"
#include "common/python_fixtures.h"
#include "common/safetensors_writer.h"
#include "common/test_util.h"
#include "dcp/dcp.h"

namespace dcp {
namespace {

using testing::ExpectedCheckpoint;
using testing::ExpectedLeaf;
using testing::FixtureManifest;

void fsys_mkdir(const std::string& path) {
  ASSERT_EQ(std::system(("mkdir -p '" + path + "'").c_str()), 0);
}

// Each fixture kind made once for the build (shared_python_fixture), its
// manifest read once per process.
const FixtureManifest& fixture(const std::string& kind) {
  static std::map<std::string, FixtureManifest> made;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  auto it = made.find(kind);
  if (it == made.end())
    it = made.emplace(kind, testing::load_fixture_manifest(testing::shared_python_fixture(kind)))
             .first;
  return it->second;
}

std::string hex(const std::string& b) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (unsigned char c : b) s += {d[c >> 4], d[c & 15]};
  return s;
}

// "" when the plain value `v` equals the manifest's JSON value `j`.
std::string json_mismatch(const Value& v, const nlohmann::json& j, const std::string& kind) {
  auto bad = [&] { return describe(v) + " != " + j.dump(); };
  switch (v.kind()) {
    case Value::Kind::kNone:
      return j.is_null() ? "" : bad();
    case Value::Kind::kBool:
      return j.is_boolean() && j.get<bool>() == v.to_bool() ? "" : bad();
    case Value::Kind::kInt:
      return j.is_number_integer() && j.get<int64_t>() == v.to_int() ? "" : bad();
    case Value::Kind::kDouble: {
      if (j.is_string()) {  // nan / inf as strings
        const double d = v.to_double();
        const std::string s = j.get<std::string>();
        if ((s == "nan" && std::isnan(d)) || (s == "inf" && d > 0 && std::isinf(d)) ||
            (s == "-inf" && d < 0 && std::isinf(d)))
          return "";
        return bad();
      }
      return j.is_number() && j.get<double>() == v.to_double() ? "" : bad();
    }
    case Value::Kind::kString:
      return j.is_string() && j.get<std::string>() == v.to_string() ? "" : bad();
    case Value::Kind::kBytes:
      return j.is_string() && j.get<std::string>() == hex(v.to_bytes().data) ? "" : bad();
    case Value::Kind::kList: {
      if (!j.is_array() || j.size() != v.list().size()) return bad();
      for (size_t i = 0; i < j.size(); ++i) {
        std::string m = json_mismatch(v.list()[i], j[i], "");
        if (!m.empty()) return "[" + std::to_string(i) + "]: " + m;
      }
      return "";
    }
    case Value::Kind::kDict: {
      if (!j.is_object() || j.size() != v.dict().size()) return bad();
      for (const auto& [k, x] : v.dict()) {
        if (!j.contains(k)) return "key '" + k + "' not expected";
        std::string m = json_mismatch(x, j[k], "");
        if (!m.empty()) return "['" + k + "']: " + m;
      }
      return "";
    }
    default:
      return bad();
  }
}

// "" when `v` is the leaf.
std::string leaf_mismatch(const Value& v, const ExpectedLeaf& leaf) {
  if (leaf.kind == "tensor") {
    if (!v.is_tensor() && !v.is_sharded()) return "not a tensor: " + describe(v);
    return testing::compare_loaded(v, leaf.tensor);
  }
  if (leaf.kind == "bytes") {
    if (v.kind() != Value::Kind::kBytes) return "not bytes: " + describe(v);
    return v.to_bytes().data == leaf.bytes ? "" : "other bytes";
  }
  return json_mismatch(v, leaf.value, leaf.kind);
}

const Value* at_key(const StateDict& sd, const ExpectedLeaf& leaf) {
  const Value* node = nullptr;
  for (size_t i = 0; i < leaf.path.size(); ++i) {
    const nlohmann::json& e = leaf.path[i];
    if (i == 0) {
      auto it = sd.find(e.get<std::string>());
      if (it == sd.end()) return nullptr;
      node = &it->second;
    } else if (e.is_number_integer()) {
      const auto idx = e.get<size_t>();
      if (!node->is_list() || node->list().size() <= idx) return nullptr;
      node = &node->list()[idx];
    } else {
      if (!node->is_dict()) return nullptr;
      auto it = node->dict().find(e.get<std::string>());
      if (it == node->dict().end()) return nullptr;
      node = &it->second;
    }
  }
  return node;
}

// Every leaf of the checkpoint is in `sd` (nested as saved) with its value;
// the unsupported ones are left out.
void expect_leaves(const ExpectedCheckpoint& ck, const StateDict& sd) {
  for (const ExpectedLeaf& leaf : ck.leaves) {
    if (leaf.kind == "unsupported") {
      EXPECT_EQ(at_key(sd, leaf), nullptr) << ck.path << ": unsupported '" << leaf.key << "'";
      continue;
    }
    const Value* v = at_key(sd, leaf);
    if (!v) {
      ADD_FAILURE() << ck.path << ": leaf '" << leaf.key << "' not loaded";
      continue;
    }
    EXPECT_EQ(leaf_mismatch(*v, leaf), "") << ck.path << ": leaf '" << leaf.key << "'";
  }
}

// A destination for an in-place load: zero tensors of each tensor leaf's
// dtype and shape, placeholders for plain values (flat keys: the load
// flattens the destination the same way).
StateDict destination(const ExpectedCheckpoint& ck) {
  StateDict flat;
  for (const ExpectedLeaf& leaf : ck.leaves) {
    if (leaf.kind == "unsupported") continue;
    flat[leaf.key] =
        leaf.kind == "tensor" ? Value(at::zeros_like(leaf.tensor)) : Value(std::string("?"));
  }
  return flat;
}

class PyTorchRead : public ::testing::TestWithParam<std::string> {};

TEST_P(PyTorchRead, LoadAllGivesEveryLeaf) {
  const FixtureManifest& m = fixture(GetParam());
  for (const ExpectedCheckpoint& ck : m.checkpoints) {
    if (ck.must_refuse) continue;
    LoadOptions lo;
    lo.checkpoint_id = ck.path;
    lo.skip_unreadable_values = true;
    expect_leaves(ck, load_all(lo));
  }
}

TEST_P(PyTorchRead, InPlaceLoadGivesEveryLeaf) {
  const FixtureManifest& m = fixture(GetParam());
  for (const ExpectedCheckpoint& ck : m.checkpoints) {
    if (ck.must_refuse) continue;
    StateDict flat = destination(ck);
    LoadOptions lo;
    lo.checkpoint_id = ck.path;
    lo.skip_unreadable_values = true;
    const LoadResult r = load(flat, lo);
    EXPECT_TRUE(r.missing_keys.empty()) << ck.path;
    EXPECT_TRUE(r.unexpected_keys.empty()) << ck.path;
    // Flat destination: every leaf at its flat key.
    size_t unsupported = 0;
    for (const ExpectedLeaf& leaf : ck.leaves) {
      if (leaf.kind == "unsupported") {
        ++unsupported;
        continue;
      }
      EXPECT_EQ(leaf_mismatch(flat.at(leaf.key), leaf), "") << ck.path << " '" << leaf.key << "'";
    }
    EXPECT_EQ(r.skipped_keys.size(), unsupported) << ck.path;
    for (const ExpectedLeaf& leaf : ck.leaves) {
      if (leaf.kind != "unsupported") continue;
      bool listed = false;
      for (const auto& k : r.skipped_keys)
        listed |= k.compare(0, leaf.key.size() + 1, leaf.key + ":") == 0;
      EXPECT_TRUE(listed) << ck.path << ": unsupported '" << leaf.key << "' not in skipped_keys";
    }
  }
}

TEST_P(PyTorchRead, UnsupportedValuesAreAnErrorNamingTheKey) {
  const FixtureManifest& m = fixture(GetParam());
  for (const ExpectedCheckpoint& ck : m.checkpoints) {
    const ExpectedLeaf* bad = nullptr;
    for (const ExpectedLeaf& leaf : ck.leaves)
      if (leaf.kind == "unsupported") bad = &leaf;
    if (ck.must_refuse || !bad) continue;
    StateDict flat = destination(ck);
    flat[bad->key] = Value(std::string("?"));
    LoadOptions lo;
    lo.checkpoint_id = ck.path;
    lo.strict = false;  // the other unsupported leaves are not in the destination
    try {
      load(flat, lo);
      ADD_FAILURE() << ck.path << ": loading '" << bad->key << "' succeeded";
    } catch (const CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find("'" + bad->key + "'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("skip_unreadable_values"), std::string::npos)
          << e.what();
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, PyTorchRead,
                         ::testing::Values("dcp113_1rank_per_item", "dcp113_1rank_per_rank",
                                           "dcp113_2rank_per_item", "dcp113_2rank_per_rank",
                                           "dcp2_flavour", "dcp2_flavour_per_rank_metadata",
                                           "dcp2_flavour_zstd", "torchsave_model",
                                           "torchsave_optim_adam", "torchsave_shared",
                                           "torchsave_2x_records"),
                         [](const auto& info) { return info.param; });

TEST(PyTorchReadErrors, TheLegacyTorchSaveFormatIsRefusedSayingSo) {
  const FixtureManifest& m = fixture("torchsave_legacy");
  try {
    load_all(m.main().path);
    FAIL() << "the legacy format loaded";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("legacy"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(m.main().path), std::string::npos) << e.what();
  }
}

TEST(PyTorchRead, FormatsAreDetected) {
  EXPECT_EQ(checkpoint_format(fixture("dcp113_1rank_per_rank").main().path), "PyTorch DCP");
  EXPECT_EQ(checkpoint_format(fixture("dcp2_flavour_per_rank_metadata").main().path),
            "PyTorch DCP");
  EXPECT_EQ(checkpoint_format(fixture("torchsave_model").main().path), "torch.save");
  testing::TempDir d;
  save({{"w", at::ones({2})}}, d.sub("native"));
  EXPECT_EQ(checkpoint_format(d.sub("native")), "dcp++");
}

// --- safetensors: written by the spec (Debian has no Python safetensors) -------

TEST(SafetensorsRead, AFileAndAHuggingFaceDirectoryLoadInPlaceAndWhole) {
  testing::TempDir d;
  const StateDict want{{"model.embed.weight", testing::make_tensor(at::kBFloat16, {6, 4}, 1)},
                       {"model.norm.weight", testing::make_tensor(at::kFloat, {4}, 2)},
                       {"model.head.bias", testing::make_tensor(at::kHalf, {3}, 3)},
                       {"step_mask", testing::make_tensor(at::kBool, {5}, 4)},
                       {"counts", testing::make_tensor(at::kLong, {}, 5)},
                       {"empty", testing::make_tensor(at::kFloat, {0, 2}, 6)}};
  std::vector<testing::T> all, first, second;
  for (const auto& [k, v] : want) {
    all.push_back(testing::tensor(k, v.tensor()));
    (first.size() < 3 ? first : second).push_back(testing::tensor(k, v.tensor()));
  }
  testing::write_file(d.sub("model.safetensors"), testing::safetensors(all));
  fsys_mkdir(d.sub("hf"));
  testing::write_file(d.sub("hf/model-00001-of-00002.safetensors"), testing::safetensors(first));
  testing::write_file(d.sub("hf/model-00002-of-00002.safetensors"), testing::safetensors(second));
  std::string index = "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {";
  for (size_t i = 0; i < all.size(); ++i)
    index += (i ? ", \"" : "\"") + all[i].name + "\": \"model-0000" +
             (i < first.size() ? "1" : "2") + "-of-00002.safetensors\"";
  testing::write_file(d.sub("hf/model.safetensors.index.json"), index + "}}");
  for (const std::string& path : {d.sub("model.safetensors"), d.sub("hf")}) {
    EXPECT_EQ(checkpoint_format(path), "safetensors");
    const StateDict got = load_all(path);
    ASSERT_EQ(got.size(), want.size()) << path;
    for (const auto& [k, v] : want)
      EXPECT_TRUE(testing::same_bits(got.at(k).tensor(), v.tensor())) << path << " " << k;
    StateDict dst;
    for (const auto& [k, v] : want) dst[k] = testing::scrambled_like(v.tensor());
    load(dst, path);
    for (const auto& [k, v] : want)
      EXPECT_TRUE(testing::same_bits(dst.at(k).tensor(), v.tensor())) << path << " " << k;
  }
}

TEST(SafetensorsRead, DcpShardingInfoChunksReshardIntoAnyDestination) {
  // HuggingFaceStorageWriter(save_distributed=True): each rank's file holds
  // its piece of "w" at the offsets DCP_SHARDING_INFO gives.
  testing::TempDir d;
  const at::Tensor w = testing::make_tensor(at::kFloat, {7, 5}, 9);
  fsys_mkdir(d.sub("st"));
  for (int r = 0; r < 2; ++r) {
    const int64_t lo = r == 0 ? 0 : 4, n = r == 0 ? 4 : 3;
    testing::Meta meta{
        {{"format", "pt"},
         {"DCP_VERSION", "1.0"},
         {"DCP_SHARDING_INFO", "{\"w\": {\"saved_offsets\": [" + std::to_string(lo) + ", 0]}}"}}};
    testing::write_file(
        d.sub("st/shard-0000" + std::to_string(r + 1) + "-model-00001-of-00001.safetensors"),
        testing::safetensors({testing::tensor("w", w.narrow(0, lo, n))}, meta));
  }
  EXPECT_TRUE(testing::same_bits(load_all(d.sub("st")).at("w").tensor(), w));
  // Columns 1..3 only, as a rank of another layout would.
  StateDict dst{{"w", testing::sharded(w, {testing::Box{{0, 1}, {7, 3}}}, true)}};
  load(dst, d.sub("st"));
  EXPECT_EQ(testing::compare_loaded(dst.at("w"), w), "");
}

// --- resharding: the 2-rank checkpoints at 2 and 3 ranks ---------------------

// Loads args[0] (a checkpoint saved by Python at 2 ranks) into row-split,
// column-split or whole destinations (args[1]: "rows", "cols", "whole") and
// compares each piece with the manifest in args[2].
DCP_REGISTER_WORKER(pytorch_reshard) {
  const std::string layout = args.at(1);
  const FixtureManifest m = testing::load_fixture_manifest(args.at(2));
  const ExpectedCheckpoint& ck = m.main();
  StateDict flat;
  for (const ExpectedLeaf& leaf : ck.leaves) {
    if (leaf.kind == "unsupported") continue;
    if (leaf.kind != "tensor") {
      flat[leaf.key] = Value(std::string("?"));
      continue;
    }
    const at::Tensor& full = leaf.tensor;
    if (layout == "whole" || full.dim() < 1 || (layout == "cols" && full.dim() < 2)) {
      flat[leaf.key] = at::zeros_like(full);
      continue;
    }
    const int64_t d = layout == "rows" ? 0 : 1;
    const int64_t n = full.size(d), w = ctx.world_size(), r = ctx.rank();
    // Uneven pieces: rank r takes [r*n/w, (r+1)*n/w).
    testing::Box box{std::vector<int64_t>(full.dim(), 0), full.sizes().vec()};
    box.offsets[d] = r * n / w;
    box.sizes[d] = (r + 1) * n / w - r * n / w;
    flat[leaf.key] = testing::sharded(full, {box}, /*blank=*/true);
  }
  LoadOptions lo;
  lo.checkpoint_id = args.at(0);
  lo.skip_unreadable_values = true;
  lo.collectives = ctx.collectives(std::chrono::seconds(20));
  load(flat, lo);
  for (const ExpectedLeaf& leaf : ck.leaves)
    if (leaf.kind != "unsupported")
      EXPECT_EQ(leaf_mismatch(flat.at(leaf.key), leaf), "")
          << "'" << leaf.key << "' (" << layout << ") on rank " << ctx.rank();
  return 0;
}

TEST(PyTorchReshard, TwoRankCheckpointsLoadAtTwoAndThreeRanksInAnyLayout) {
  for (const char* kind : {"dcp113_2rank_per_item", "dcp113_2rank_per_rank", "dcp2_flavour"}) {
    const FixtureManifest& m = fixture(kind);
    for (int ranks : {2, 3})
      for (const char* layout : {"rows", "cols", "whole"}) {
        testing::RunOptions o;
        o.args = {m.main().path, layout, m.out_dir};
        auto run = testing::run_ranks(ranks, "pytorch_reshard", o);
        EXPECT_TRUE(run.ok()) << kind << " at " << ranks << " ranks, " << layout << ":\n"
                              << run.summary();
      }
  }
}

}  // namespace
}  // namespace dcp

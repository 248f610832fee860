// The Python fixtures work on this machine: every kind of
// tests/interop/py/make_fixtures.py runs under /usr/bin/python3, and its
// manifest loads and agrees with itself and with the files it names. (The
// readers' own tests, which compare what dcp++ reads with the manifest, live
// with the readers.)
#include <gtest/gtest.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <set>
#include <string>
#include <vector>

#include "common/python_fixtures.h"
#include "common/test_util.h"

namespace dcp {
namespace testing {
namespace {

const std::vector<std::string> kKinds = {
    "dcp113_1rank_per_item",   "dcp113_1rank_per_rank", "dcp113_2rank_per_item",
    "dcp113_2rank_per_rank",   "dcp2_flavour",          "dcp2_flavour_per_rank_metadata",
    "dcp2_flavour_zstd",       "torchsave_model",       "torchsave_shared",
    "torchsave_2x_records",    "torchsave_legacy",      "torchsave_optim_adam",
    "torchsave_optim_adamw",   "torchsave_optim_sgd",   "torchsave_optim_rmsprop",
    "torchsave_optim_adagrad",
};

std::string real(const std::string& path) {
  char buf[PATH_MAX];
  return ::realpath(path.c_str(), buf) ? std::string(buf) : path;
}

bool is_dir(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& p) {
  struct stat st;
  return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string joined(const nlohmann::json& path) {
  std::string s;
  for (const auto& e : path) {
    if (!s.empty()) s += '.';
    s += e.is_string() ? e.get<std::string>() : std::to_string(e.get<int64_t>());
  }
  return s;
}

std::vector<int64_t> ints(const nlohmann::json& j) { return j.get<std::vector<int64_t>>(); }

// Each chunk lies inside the tensor, the chunks' elements add up to the
// tensor's, and each names a byte range of a data file that holds a zip (or
// a zstd frame, when transformed).
void check_chunks(const ExpectedCheckpoint& c, const ExpectedLeaf& leaf) {
  const auto& chunks = leaf.entry.at("chunks");
  ASSERT_FALSE(chunks.empty()) << leaf.key;
  int64_t elements = 0;
  for (const auto& chunk : chunks) {
    const auto offsets = ints(chunk.at("offsets"));
    const auto sizes = ints(chunk.at("sizes"));
    ASSERT_EQ(offsets.size(), static_cast<size_t>(leaf.tensor.dim())) << leaf.key;
    ASSERT_EQ(sizes.size(), offsets.size()) << leaf.key;
    int64_t n = 1;
    for (size_t d = 0; d < sizes.size(); ++d) {
      EXPECT_GE(offsets[d], 0) << leaf.key;
      EXPECT_LE(offsets[d] + sizes[d], leaf.tensor.size(static_cast<int64_t>(d))) << leaf.key;
      n *= sizes[d];
    }
    elements += n;
    const std::string file = c.path + "/" + chunk.at("file").get<std::string>();
    ASSERT_TRUE(is_file(file)) << file;
    const std::string data = read_file(file);
    const uint64_t offset = chunk.at("offset").get<uint64_t>();
    const uint64_t length = chunk.at("length").get<uint64_t>();
    ASSERT_LE(offset + length, data.size()) << leaf.key;
    ASSERT_GE(length, 4u) << leaf.key;
    const std::string magic = data.substr(offset, 4);
    if (chunk.contains("transform_descriptors")) {
      EXPECT_EQ(chunk.at("transform_descriptors"), nlohmann::json::array({"stream.zstd/1"}));
      EXPECT_EQ(magic, std::string("\x28\xb5\x2f\xfd", 4)) << leaf.key << ": not a zstd frame";
    } else {
      EXPECT_EQ(magic, std::string("PK\x03\x04", 4)) << leaf.key << ": not a zip";
    }
  }
  EXPECT_EQ(elements, leaf.tensor.numel()) << leaf.key;
}

// The stored view (storage offset and strides) stays inside its storage.
void check_stored(const ExpectedLeaf& leaf) {
  const auto& s = leaf.entry.at("stored");
  const auto stride = ints(s.at("stride"));
  ASSERT_EQ(stride.size(), static_cast<size_t>(leaf.tensor.dim())) << leaf.key;
  if (leaf.tensor.numel() == 0) return;
  int64_t last = s.at("storage_offset").get<int64_t>();
  for (int64_t d = 0; d < leaf.tensor.dim(); ++d) last += (leaf.tensor.size(d) - 1) * stride[d];
  EXPECT_LT(last, s.at("storage_numel").get<int64_t>()) << leaf.key;
}

void check_leaf(const ExpectedCheckpoint& c, const ExpectedLeaf& leaf) {
  SCOPED_TRACE("leaf " + leaf.key);
  EXPECT_FALSE(leaf.key.empty());
  EXPECT_EQ(joined(leaf.path), leaf.key);
  EXPECT_FALSE(leaf.py_type.empty());
  if (leaf.kind == "tensor") {
    ASSERT_TRUE(leaf.tensor.defined());
    EXPECT_EQ(leaf.tensor.scalar_type(), fixture_dtype(leaf.entry.at("dtype").get<std::string>()));
    EXPECT_EQ(leaf.tensor.sizes().vec(), ints(leaf.entry.at("shape")));
    if (leaf.entry.contains("chunks")) check_chunks(c, leaf);
    if (leaf.entry.contains("stored")) check_stored(leaf);
  } else {
    EXPECT_TRUE(leaf.entry.at("dtype").is_null());
    EXPECT_TRUE(leaf.entry.at("shape").is_null());
  }
  if (leaf.kind == "unsupported") EXPECT_FALSE(leaf.why.empty());
  if (leaf.kind == "bytes") EXPECT_EQ(leaf.bytes.size() * 2, leaf.value.get<std::string>().size());
  if (leaf.kind == "int") EXPECT_TRUE(leaf.value.is_number_integer());
  if (leaf.kind == "float") EXPECT_TRUE(leaf.value.is_number_float());
  if (leaf.kind == "str") EXPECT_TRUE(leaf.value.is_string());
  if (leaf.kind == "bool") EXPECT_TRUE(leaf.value.is_boolean());
  if (leaf.kind == "none") EXPECT_TRUE(leaf.value.is_null());
  if (leaf.kind == "list") EXPECT_TRUE(leaf.value.is_array());
  if (leaf.kind == "dict") EXPECT_EQ(leaf.value, nlohmann::json::object());
}

void check_checkpoint(const ExpectedCheckpoint& c) {
  SCOPED_TRACE("checkpoint " + c.name + " (" + c.path + ")");
  ASSERT_FALSE(c.leaves.empty());
  std::set<std::string> keys;
  for (const auto& leaf : c.leaves) {
    EXPECT_TRUE(keys.insert(leaf.key).second) << "duplicate key " << leaf.key;
    check_leaf(c, leaf);
  }
  if (c.format == "pytorch_dcp") {
    ASSERT_TRUE(is_dir(c.path));
    EXPECT_TRUE(c.flavour == "1.13" || c.flavour == "2.x") << c.flavour;
    EXPECT_TRUE(c.layout == "per_item" || c.layout == "per_rank") << c.layout;
    EXPECT_GE(c.world_size, 1);
    ASSERT_FALSE(c.metadata_files.empty());
    for (const auto& f : c.metadata_files) EXPECT_TRUE(is_file(c.path + "/" + f)) << f;
    EXPECT_EQ(is_file(c.path + "/.metadata"),
              c.metadata_files == std::vector<std::string>{".metadata"});
    EXPECT_FALSE(data_files(c.path).empty());
    EXPECT_FALSE(c.must_refuse);
  } else {
    ASSERT_TRUE(is_file(c.path));
    const std::string head = read_file(c.path).substr(0, 4);
    if (c.format == "torch_save") {
      EXPECT_EQ(head, std::string("PK\x03\x04", 4));
      EXPECT_FALSE(c.must_refuse);
    } else {
      EXPECT_EQ(c.format, "torch_save_legacy");
      EXPECT_NE(head, std::string("PK\x03\x04", 4));
      EXPECT_TRUE(c.must_refuse);
    }
  }
}

// Optimizer state: state.<i>.* names parameter i of the "model" checkpoint,
// and the per-parameter tensors have its shape; step is 3 (3 steps).
void check_param_names(const FixtureManifest& m) {
  const ExpectedCheckpoint& optim = m.main();
  const ExpectedCheckpoint& model = m.checkpoint("model");
  ASSERT_EQ(optim.param_names.size(), 6u);
  int per_param = 0;
  for (const auto& leaf : optim.leaves) {
    if (leaf.path.at(0) != "state") continue;
    const size_t i = std::stoul(leaf.path.at(1).get<std::string>());
    ASSERT_LT(i, optim.param_names.size()) << leaf.key;
    const ExpectedLeaf& param = model.leaf(optim.param_names[i]);
    if (leaf.path.at(2) == "step") {
      if (m.kind == "torchsave_optim_rmsprop") {
        // 1.13's RMSprop keeps a Python int; Adam, AdamW and Adagrad a 0-d float tensor.
        EXPECT_EQ(leaf.kind, "int") << leaf.key;
        EXPECT_EQ(leaf.value, 3) << leaf.key;
        continue;
      }
      ASSERT_EQ(leaf.kind, "tensor") << leaf.key;
      EXPECT_EQ(leaf.tensor.dim(), 0) << leaf.key;
      EXPECT_EQ(leaf.tensor.scalar_type(), at::kFloat) << leaf.key;
      EXPECT_EQ(leaf.tensor.item<float>(), 3.0f) << leaf.key;
    } else {
      ASSERT_EQ(leaf.kind, "tensor") << leaf.key;
      EXPECT_EQ(leaf.tensor.sizes(), param.tensor.sizes()) << leaf.key;
      ++per_param;
    }
  }
  EXPECT_GE(per_param, 6);
  EXPECT_EQ(optim.leaf("param_groups").kind, "list");
}

// A few values the manifests must hold, checked against tensors built here
// (so the .bin files are in C order, whatever the saved strides).
void check_known_values(const FixtureManifest& m) {
  const ExpectedCheckpoint& c = m.main();
  if (m.kind.rfind("dcp113_1rank", 0) == 0) {
    const at::Tensor base = at::arange(12, at::kFloat).reshape({3, 4});
    EXPECT_TRUE(at::equal(c.leaf("t_transposed").tensor, base.t()));
    EXPECT_EQ(c.leaf("t_transposed").entry.at("stored").at("stride"), nlohmann::json({1, 4}));
    EXPECT_TRUE(at::equal(c.leaf("t_offset_view").tensor, base.slice(0, 1)));
    EXPECT_EQ(c.leaf("t_scalar").tensor.dim(), 0);
    EXPECT_EQ(c.leaf("t_scalar").tensor.item<float>(), 2.5f);
    EXPECT_EQ(c.leaf("t_empty").tensor.numel(), 0);
    EXPECT_EQ(c.leaf("t_bool").tensor.scalar_type(), at::kBool);
    EXPECT_EQ(c.leaf("v_big_int").kind, "unsupported");
    EXPECT_EQ(c.leaf("v_object").kind, "unsupported");
    EXPECT_EQ(c.leaf("v_bytes").bytes, std::string("\x00\x01\xfe\xff", 4));
    EXPECT_EQ(c.leaf("v_ordered.2").value, "b");
    EXPECT_EQ(c.leaf("v_tuple").py_type, "tuple");
    EXPECT_EQ(c.leaf("nested.b.c").tensor.scalar_type(), at::kLong);
    EXPECT_EQ(c.leaf("nested.lst.1").value, 5);
    EXPECT_EQ(c.find("nested"), nullptr);
  }
  if (m.kind.rfind("dcp113_2rank", 0) == 0) {
    EXPECT_EQ(c.world_size, 2);
    EXPECT_TRUE(at::equal(c.leaf("st_cols").tensor, at::arange(35, at::kDouble).reshape({7, 5})));
    EXPECT_EQ(c.leaf("st_rows").entry.at("chunks").size(), 2u);
    EXPECT_EQ(c.leaf("st_cols").entry.at("chunks").size(), 2u);
  }
  if (m.kind.rfind("dcp2_flavour", 0) == 0) {
    const auto& chunks = c.leaf("model.proj.weight").entry.at("chunks");
    ASSERT_EQ(chunks.size(), 2u);
    EXPECT_EQ(chunks[0].at("file"), "__0_0.distcp");
    EXPECT_EQ(chunks[1].at("file"), "__1_0.distcp");
    EXPECT_EQ(c.leaf("layers.2").value, 4);
    EXPECT_EQ(c.leaf("optim.state.0.step").tensor.dim(), 0);
    EXPECT_EQ(c.leaf("big").kind, "unsupported");
    const std::vector<std::string> per_rank{"__0.metadata", "__1.metadata"};
    EXPECT_EQ(c.metadata_files == per_rank, m.kind == "dcp2_flavour_per_rank_metadata");
  }
  if (m.kind == "torchsave_shared") {
    const at::Tensor t = at::arange(12, at::kFloat).reshape({3, 4});
    EXPECT_TRUE(at::equal(c.leaf("view").tensor, t.slice(0, 1)));
    EXPECT_TRUE(at::equal(c.leaf("transposed").tensor, t.t()));
    EXPECT_TRUE(at::equal(c.leaf("nested.lst.2.deep").tensor, t.select(1, 1)));
    EXPECT_EQ(c.leaf("view").entry.at("stored").at("storage_offset"), 4);
    EXPECT_EQ(c.leaf("tied_a").entry.at("stored"), c.leaf("tied_b").entry.at("stored"));
  }
  if (m.kind == "torchsave_model") {
    EXPECT_EQ(c.leaf("bn.num_batches_tracked").tensor.scalar_type(), at::kLong);
    EXPECT_EQ(c.leaf("bn.num_batches_tracked").tensor.item<int64_t>(), 3);
    EXPECT_EQ(c.leaves.size(), 9u);
  }
}

TEST(PythonFixtures, ListsEveryKind) { EXPECT_EQ(python_fixture_kinds(), kKinds); }

TEST(PythonFixtures, FailureCarriesStderr) {
  TempDir dir;
  try {
    make_python_fixture("no_such_kind", dir.sub("fx"));
    FAIL() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("usage:"), std::string::npos) << e.what();
  }
}

class PythonFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(PythonFixture, ManifestLoadsAndIsSelfConsistent) {
  TempDir dir;
  const std::string out = dir.sub("fx");
  const std::string ckpt = make_python_fixture(GetParam(), out);
  const FixtureManifest m = load_fixture_manifest(out);
  EXPECT_EQ(m.kind, GetParam());
  EXPECT_EQ(real(m.main().path), real(ckpt));
  for (const auto& c : m.checkpoints) check_checkpoint(c);
  if (!m.main().param_names.empty()) check_param_names(m);
  check_known_values(m);
}

INSTANTIATE_TEST_SUITE_P(Kinds, PythonFixture, ::testing::ValuesIn(kKinds),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

}  // namespace
}  // namespace testing
}  // namespace dcp

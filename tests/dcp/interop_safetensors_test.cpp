// The catalog of safetensors files and Hugging Face directories
// (dcp/src/interop/safetensors.cpp): files written here as the format's
// reference writer does (safetensors/src/tensor.rs `prepare`: entries by
// descending dtype alignment, then name; the header padded with spaces to a
// multiple of 8; "__metadata__" {"format": "pt"}), the format's own example
// bytes, the layouts of Hugging Face (an index and shards) and of DCP's
// HuggingFaceStorageWriter (chunks of a tensor in several files), and each
// header the format forbids, as an error naming the file and the tensor.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/safetensors_writer.h"
#include "dcp/default_planner.h"
#include "dcp/env.h"
#include "dcp/error.h"
#include "interop/catalog.h"

namespace dcp {
namespace internal {
namespace {

using testing::bytes_of;
using testing::dtype_str;
using testing::escape;
using testing::kDtypeOrder;
using testing::le64;
using testing::Meta;
using testing::raw_file;
using testing::safetensors;
using testing::shape_json;
using testing::T;
using testing::tensor;

// DCP_SHARDING_INFO as DCP's writer puts it in __metadata__.
std::map<std::string, std::string> dcp_meta(
    const std::map<std::string, std::vector<int64_t>>& offsets) {
  std::string s = "{";
  for (const auto& [fqn, o] : offsets)
    s += (s.size() > 1 ? ", " : "") + std::string("\"") + escape(fqn) +
         "\": {\"saved_offsets\": " + shape_json(o) + "}";
  s += "}";
  return {{"DCP_SHARDING_INFO", s}, {"DCP_VERSION", "1.0"}, {"format", "pt"}};
}

// Counts the reads of the files it opens.
class ReadCountingEnv : public EnvWrapper {
 public:
  using EnvWrapper::EnvWrapper;
  std::atomic<int> reads{0};
  std::atomic<uint64_t> bytes{0};

  std::unique_ptr<RandomAccessFile> new_random_access_file(const std::string& p) override {
    class Counted : public RandomAccessFile {
     public:
      Counted(std::unique_ptr<RandomAccessFile> f, ReadCountingEnv* env)
          : f_(std::move(f)), env_(env) {}
      size_t read(uint64_t off, size_t n, void* dst) const override {
        ++env_->reads;
        env_->bytes += n;
        return f_->read(off, n, dst);
      }
      uint64_t size() const override { return f_->size(); }
      const std::string& path() const override { return f_->path(); }

     private:
      std::unique_ptr<RandomAccessFile> f_;
      ReadCountingEnv* env_;
    };
    return std::make_unique<Counted>(EnvWrapper::new_random_access_file(p), this);
  }
};

template <typename E = CorruptionError, typename F>
void expect_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one with '" << parts.front() << "'";
  } catch (const E& e) {
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "'" << p << "' not in: " << e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "an error of another type: " << e.what();
  }
}

class InteropSafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::string("safetensors_test/") +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    env().remove_dir_recursively(dir_);
    env().create_dirs(dir_);
  }
  void TearDown() override { env().remove_dir_recursively(dir_); }

  Env& env() { return *memory_env(); }
  // Writes `bytes` to `name` under the test's directory; returns its path.
  std::string put(const std::string& name, const std::string& bytes) {
    const std::string path = dir_ + "/" + name;
    const size_t slash = path.rfind('/');
    env().create_dirs(path.substr(0, slash));
    env().write_file(path, bytes, false);
    return path;
  }
  Catalog catalog(const std::string& path) { return safetensors_catalog(env(), path, path); }
  Catalog catalog_of_bytes(const std::string& bytes) {
    return catalog(put("model.safetensors", bytes));
  }

  // The bytes a catalog entry points at.
  std::string read_source(const Catalog& c, const MetadataIndex& index) {
    const auto& raw = std::get<RawTensor>(c.sources.at(index));
    auto f = env().new_random_access_file(raw.file);
    std::string s(raw.storage_bytes, '\0');
    EXPECT_EQ(f->read(raw.offset, s.size(), s.data()), s.size());
    return s;
  }

  std::string dir_;
};

const TensorStorageMetadata& tensor_md(const Catalog& c, const std::string& key) {
  return std::get<TensorStorageMetadata>(c.metadata.state_dict_metadata.at(key));
}

// safetensors/src/tensor.rs's doc test: one I32 [2, 2] tensor, a 60-byte
// header without padding or metadata.
TEST_F(InteropSafetensorsTest, TheFormatsOwnExample) {
  const std::string example(
      "<\x00\x00\x00\x00\x00\x00\x00"
      "{\"test\":{\"dtype\":\"I32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}"
      "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
      8 + 60 + 16);
  const std::string path = put("example.safetensors", example);
  const Catalog c = safetensors_catalog(env(), path, "memory://" + path);
  EXPECT_EQ(c.format, "safetensors");
  ASSERT_EQ(c.metadata.state_dict_metadata.size(), 1u);
  const auto& t = tensor_md(c, "test");
  EXPECT_EQ(t.properties.dtype, at::kInt);
  EXPECT_FALSE(t.properties.requires_grad);
  EXPECT_EQ(t.size, (std::vector<int64_t>{2, 2}));
  ASSERT_EQ(t.chunks.size(), 1u);
  EXPECT_EQ(t.chunks[0], (ChunkStorageMetadata{{0, 0}, {2, 2}}));
  const MetadataIndex index("test", {0, 0});
  const StorageInfo& info = c.metadata.storage_data.at(index);
  EXPECT_EQ(info.relative_path, "example.safetensors");
  EXPECT_EQ(info.offset, 68u);
  EXPECT_EQ(info.length, 16u);
  EXPECT_EQ(info.checksum_type, ChecksumType::kNone);
  const auto& raw = std::get<RawTensor>(c.sources.at(index));
  EXPECT_EQ(raw.file, path);
  EXPECT_EQ(raw.offset, 68u);
  EXPECT_EQ(raw.storage_bytes, 16u);
  EXPECT_EQ(raw.dtype, at::kInt);
  EXPECT_EQ(raw.sizes, (std::vector<int64_t>{2, 2}));
  EXPECT_TRUE(raw.strides.empty());
  EXPECT_EQ(raw.storage_offset, 0);
  EXPECT_FALSE(raw.crc);
  EXPECT_EQ(raw.what, "tensor 'test' in 'memory://" + path + "'");
  EXPECT_EQ(c.metadata.world_size, 1);
  ASSERT_TRUE(c.metadata.storage_meta);
  EXPECT_EQ(c.metadata.storage_meta->checkpoint_id, "memory://" + path);
  const FlattenMapping m = decode_flatten_mapping(c.metadata.planner_data);
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m.at("test"), (ObjectPath{PathElement{false, "test", 0}}));
}

TEST_F(InteropSafetensorsTest, AFileOfTheReferenceWriter) {
  const at::Tensor w = torch::randn({4, 3});
  const at::Tensor b = torch::arange(4, torch::kInt64);
  const at::Tensor h = torch::ones({2, 2}, torch::kHalf);
  const std::string bytes =
      safetensors({tensor("model.layers.0.weight", w), tensor("model.bias", b), tensor("half", h)});
  ASSERT_EQ(le64(0).size(), 8u);
  const Catalog c = catalog_of_bytes(bytes);
  EXPECT_EQ(c.metadata.state_dict_metadata.size(), 3u);
  EXPECT_EQ(c.sources.size(), 3u);
  EXPECT_EQ(c.metadata.storage_data.size(), 3u);
  // The header is padded to a multiple of 8 and the buffer follows it.
  const uint64_t n = static_cast<unsigned char>(bytes[0]) | static_cast<unsigned char>(bytes[1])
                                                                << 8;
  EXPECT_EQ(n % 8, 0u);
  // I64 first (most aligned), then F32, then F16.
  EXPECT_EQ(c.metadata.storage_data.at(MetadataIndex("model.bias", {0})).offset, 8 + n);
  EXPECT_EQ(c.metadata.storage_data.at(MetadataIndex("model.layers.0.weight", {0, 0})).offset,
            8 + n + 32);
  EXPECT_EQ(c.metadata.storage_data.at(MetadataIndex("half", {0, 0})).offset, 8 + n + 32 + 48);
  EXPECT_EQ(read_source(c, MetadataIndex("model.layers.0.weight", {0, 0})), bytes_of(w));
  EXPECT_EQ(read_source(c, MetadataIndex("model.bias", {0})), bytes_of(b));
  EXPECT_EQ(read_source(c, MetadataIndex("half", {0, 0})), bytes_of(h));
  EXPECT_EQ(tensor_md(c, "half").properties.dtype, at::kHalf);
  // Names stay flat: a dotted name is one key.
  const FlattenMapping m = decode_flatten_mapping(c.metadata.planner_data);
  EXPECT_EQ(m.at("model.layers.0.weight"),
            (ObjectPath{PathElement{false, "model.layers.0.weight", 0}}));
  EXPECT_EQ(m.size(), 3u);
}

TEST_F(InteropSafetensorsTest, EveryDtypeLibTorchHas) {
  std::vector<T> ts;
  const std::vector<at::ScalarType> types = {
      at::kDouble, at::kFloat, at::kHalf, at::kBFloat16, at::kLong,        at::kInt,
      at::kShort,  at::kChar,  at::kByte, at::kBool,     at::kComplexFloat};
  std::map<std::string, at::Tensor> made;
  for (auto type : types) {
    const at::Tensor t =
        type == at::kBool ? torch::tensor({true, false, true}) : torch::ones({3}, type);
    made[dtype_str(type)] = t;
    ts.push_back(tensor("t_" + dtype_str(type), t));
  }
  const Catalog c = catalog_of_bytes(safetensors(ts));
  for (const auto& [name, t] : made) {
    SCOPED_TRACE(name);
    EXPECT_EQ(tensor_md(c, "t_" + name).properties.dtype, t.scalar_type());
    EXPECT_EQ(read_source(c, MetadataIndex("t_" + name, {0})), bytes_of(t));
    EXPECT_EQ(std::get<RawTensor>(c.sources.at(MetadataIndex("t_" + name, {0}))).dtype,
              t.scalar_type());
  }
}

TEST_F(InteropSafetensorsTest, DtypesLibTorch113LacksAreErrors) {
  const std::vector<std::pair<std::string, size_t>> others = {
      {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E4M3FNUZ", 1}, {"F8_E5M2FNUZ", 1},
      {"F8_E8M0", 1}, {"U16", 2},     {"U32", 4},         {"U64", 8}};
  for (const auto& [dtype, size] : others) {
    SCOPED_TRACE(dtype);
    const std::string path =
        put("model.safetensors", safetensors({T{"ok", "F32", {1}, std::string(4, '\0')},
                                              T{"odd", dtype, {2}, std::string(2 * size, '\0')}}));
    expect_error<InvalidArgumentError>(
        [&] { catalog(path); },
        {"tensor 'odd'", "'" + path + "'", dtype, "LibTorch 1.13 has no such dtype"});
  }
  // Not a dtype at all.
  const std::string path =
      put("model.safetensors", safetensors({T{"w", "F17", {1}, std::string(4, '\0')}}));
  expect_error([&] { catalog(path); }, {"tensor 'w'", path, "\"F17\"", "not a safetensors dtype"});
}

TEST_F(InteropSafetensorsTest, ScalarsAndZeroSizeTensors) {
  const at::Tensor scalar = torch::tensor(3.5, torch::kFloat64);
  ASSERT_EQ(scalar.dim(), 0);
  const Catalog c = catalog_of_bytes(safetensors(
      {tensor("scalar", scalar), tensor("empty", torch::ones({0, 3})),
       tensor("empty2", torch::ones({5, 0}, torch::kInt8)), tensor("x", torch::ones({2})),
       T{"zero_dims", "F32", {0, 4611686018427387904, 4611686018427387904}, ""}}));
  const auto& s = tensor_md(c, "scalar");
  EXPECT_TRUE(s.size.empty());
  ASSERT_EQ(s.chunks.size(), 1u);
  EXPECT_TRUE(s.chunks[0].offsets.empty());
  EXPECT_TRUE(s.chunks[0].sizes.empty());
  EXPECT_EQ(read_source(c, MetadataIndex("scalar", {})), bytes_of(scalar));
  EXPECT_EQ(c.metadata.storage_data.at(MetadataIndex("scalar", {})).length, 8u);
  const auto& e = tensor_md(c, "empty");
  EXPECT_EQ(e.size, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(c.metadata.storage_data.at(MetadataIndex("empty", {0, 0})).length, 0u);
  EXPECT_EQ(c.metadata.storage_data.at(MetadataIndex("empty2", {0, 0})).length, 0u);
  EXPECT_EQ(tensor_md(c, "zero_dims").size[1], 4611686018427387904);
  EXPECT_EQ(read_source(c, MetadataIndex("x", {0})), bytes_of(torch::ones({2})));

  // A file of empty tensors only: an empty buffer.
  const Catalog c2 = catalog_of_bytes(safetensors({tensor("a", torch::ones({0}))}));
  EXPECT_EQ(c2.metadata.storage_data.at(MetadataIndex("a", {0})).length, 0u);
  // No tensors at all.
  EXPECT_TRUE(catalog_of_bytes(safetensors({})).metadata.state_dict_metadata.empty());
}

// DCP's consolidation writes headers without __metadata__ and without padding.
TEST_F(InteropSafetensorsTest, AnUnpaddedHeaderWithoutMetadata) {
  const at::Tensor w = torch::randn({3, 3});
  const std::string bytes = safetensors(
      {tensor("w", w), tensor("i", torch::ones({1}, torch::kInt8))}, std::nullopt, false);
  ASSERT_NE(bytes.size() % 8, 0u);
  const Catalog c = catalog_of_bytes(bytes);
  EXPECT_EQ(read_source(c, MetadataIndex("w", {0, 0})), bytes_of(w));
  EXPECT_EQ(c.metadata.storage_data.at(MetadataIndex("i", {0})).offset, bytes.size() - 1);
}

// The header takes one read (with the length) when small, two when not,
// and the tensors none.
TEST_F(InteropSafetensorsTest, TheHeaderTakesOneOrTwoSmallReads) {
  ReadCountingEnv counting(&env());
  const std::string small =
      put("small.safetensors", safetensors({tensor("w", torch::randn({512, 512}))}));
  safetensors_catalog(counting, small, small);
  EXPECT_EQ(counting.reads, 1);
  EXPECT_LE(counting.bytes, 16u * 1024);

  std::vector<T> many;
  for (int i = 0; i < 1000; ++i)
    many.push_back(tensor("model.layers." + std::to_string(i) + ".self_attn.q_proj.weight",
                          torch::ones({4, 4})));
  const std::string big_bytes = safetensors(many);
  const std::string big = put("big.safetensors", big_bytes);
  counting.reads = 0;
  counting.bytes = 0;
  const Catalog c = safetensors_catalog(counting, big, big);
  EXPECT_EQ(c.metadata.state_dict_metadata.size(), 1000u);
  EXPECT_EQ(counting.reads, 2);
  EXPECT_LT(counting.bytes, big_bytes.size() - 1000 * 64 + 1);  // no tensor bytes
}

TEST_F(InteropSafetensorsTest, AHuggingFaceIndexWithTwoShards) {
  const at::Tensor a = torch::randn({2, 3}), b = torch::randn({5}),
                   e = torch::ones({2}, torch::kBFloat16);
  put("hf/model-00001-of-00002.safetensors", safetensors({tensor("a", a), tensor("b", b)}));
  put("hf/model-00002-of-00002.safetensors", safetensors({tensor("lm_head.weight", e)}));
  put("hf/stray.safetensors", safetensors({tensor("not_in_the_index", a)}));  // ignored
  put("hf/model.safetensors.index.json",
      "{\n  \"metadata\": {\"total_size\": 48},\n  \"weight_map\": {\n"
      "    \"a\": \"model-00001-of-00002.safetensors\",\n"
      "    \"b\": \"model-00001-of-00002.safetensors\",\n"
      "    \"lm_head.weight\": \"model-00002-of-00002.safetensors\"\n  }\n}\n");
  const std::string dir = dir_ + "/hf";
  const Catalog c = safetensors_catalog(env(), dir, "memory://" + dir);
  EXPECT_EQ(c.format, "Hugging Face safetensors directory");
  EXPECT_EQ(c.metadata.state_dict_metadata.size(), 3u);
  EXPECT_EQ(c.metadata.storage_data.at(MetadataIndex("a", {0, 0})).relative_path,
            "model-00001-of-00002.safetensors");
  EXPECT_EQ(c.metadata.storage_data.at(MetadataIndex("lm_head.weight", {0})).relative_path,
            "model-00002-of-00002.safetensors");
  EXPECT_EQ(std::get<RawTensor>(c.sources.at(MetadataIndex("lm_head.weight", {0}))).file,
            dir + "/model-00002-of-00002.safetensors");
  EXPECT_EQ(std::get<RawTensor>(c.sources.at(MetadataIndex("b", {0}))).what,
            "tensor 'b' in 'memory://" + dir + "/model-00001-of-00002.safetensors'");
  EXPECT_EQ(read_source(c, MetadataIndex("a", {0, 0})), bytes_of(a));
  EXPECT_EQ(read_source(c, MetadataIndex("b", {0})), bytes_of(b));
  EXPECT_EQ(read_source(c, MetadataIndex("lm_head.weight", {0})), bytes_of(e));
  EXPECT_EQ(c.metadata.storage_meta->checkpoint_id, "memory://" + dir);
}

TEST_F(InteropSafetensorsTest, TheIndexMustMatchTheFiles) {
  put("hf/model-1.safetensors", safetensors({tensor("a", torch::ones({1}))}));
  put("hf/model-2.safetensors", safetensors({tensor("b", torch::ones({1}))}));
  const std::string dir = dir_ + "/hf";
  auto index = [&](const std::string& weight_map) {
    put("hf/model.safetensors.index.json",
        "{\"metadata\": {}, \"weight_map\": {" + weight_map + "}}");
  };
  const std::string idx = "'" + dir + "/model.safetensors.index.json'";
  index("\"a\": \"model-1.safetensors\", \"b\": \"model-3.safetensors\"");
  expect_error([&] { catalog(dir); }, {idx, "'model-3.safetensors'", "not in '" + dir + "'"});
  index("\"a\": \"model-2.safetensors\", \"b\": \"model-2.safetensors\"");
  expect_error([&] { catalog(dir); },
               {idx, "tensor 'a'", "'" + dir + "/model-2.safetensors'", "does not hold it"});
  index("\"a\": \"model-1.safetensors\", \"c\": \"model-2.safetensors\"");
  expect_error([&] { catalog(dir); }, {"tensor 'c'", "does not hold it"});
  index("\"a\": \"model-1.safetensors\"");
  put("hf/model-1.safetensors",
      safetensors({tensor("a", torch::ones({1})), tensor("extra", torch::ones({1}))}));
  expect_error([&] { catalog(dir); },
               {"tensor 'extra'", dir + "/model-1.safetensors", "not in the weight_map", idx});
  index("\"a\": \"../elsewhere.safetensors\"");
  expect_error([&] { catalog(dir); }, {idx, "tensor 'a'", "'../elsewhere.safetensors'"});
  index("\"a\": \"model-1.safetensors\", \"a\": \"model-2.safetensors\"");
  expect_error([&] { catalog(dir); }, {idx, "'a' twice"});
  index("\"a\": 3");
  expect_error([&] { catalog(dir); }, {idx, "tensor 'a'"});
  put("hf/model.safetensors.index.json", "{\"weight_map\": ");
  expect_error([&] { catalog(dir); }, {idx, "not valid JSON"});
  put("hf/model.safetensors.index.json", "{\"metadata\": {}}");
  expect_error([&] { catalog(dir); }, {idx, "weight_map"});
}

// Without an index: every *.safetensors file, as DCP's HuggingFaceStorageReader.
TEST_F(InteropSafetensorsTest, ADirectoryWithoutAnIndex) {
  put("d/model-00001-of-00002.safetensors", safetensors({tensor("a", torch::ones({1}))}));
  put("d/model-00002-of-00002.safetensors", safetensors({tensor("b", torch::ones({2}))}));
  put("d/config.json", "{}");
  put("d/sub/c.safetensors", safetensors({tensor("c", torch::ones({2}))}));  // not taken
  const Catalog c = catalog(dir_ + "/d");
  EXPECT_EQ(c.metadata.state_dict_metadata.size(), 2u);
  EXPECT_EQ(c.metadata.storage_data.at(MetadataIndex("b", {0})).relative_path,
            "model-00002-of-00002.safetensors");

  // A name in two files that do not say they hold chunks of it.
  put("d/model-00002-of-00002.safetensors",
      safetensors({tensor("b", torch::ones({2})), tensor("a", torch::ones({1}))}));
  expect_error([&] { catalog(dir_ + "/d"); },
               {"tensor 'a'", dir_ + "/d/model-00001-of-00002.safetensors",
                dir_ + "/d/model-00002-of-00002.safetensors", "DCP_SHARDING_INFO"});

  env().create_dirs(dir_ + "/empty");
  put("empty/readme.txt", "");
  expect_error<NotFoundError>([&] { catalog(dir_ + "/empty"); }, {dir_ + "/empty"});
  expect_error<NotFoundError>([&] { catalog(dir_ + "/nothing"); }, {dir_ + "/nothing"});
}

// DCP's HuggingFaceStorageWriter: each file holds one chunk of a tensor,
// where DCP_SHARDING_INFO says.
TEST_F(InteropSafetensorsTest, DcpShardingInfoChunksAcrossFiles) {
  const at::Tensor w = torch::randn({4, 6});
  const at::Tensor bias = torch::randn({6});
  put("dcp/shard-00001-model-00001-of-00001.safetensors",
      safetensors({tensor("w", w.slice(0, 0, 3)), tensor("bias", bias)},
                  dcp_meta({{"w", {0, 0}}, {"bias", {0}}})));
  put("dcp/shard-00002-model-00001-of-00001.safetensors",
      safetensors({tensor("w", w.slice(0, 3, 4).slice(1, 0, 2))}, dcp_meta({{"w", {3, 0}}})));
  put("dcp/shard-00003-model-00001-of-00001.safetensors",
      safetensors({tensor("w", w.slice(0, 3, 4).slice(1, 2, 6))}, dcp_meta({{"w", {3, 2}}})));
  const Catalog c = catalog(dir_ + "/dcp");
  const auto& t = tensor_md(c, "w");
  EXPECT_EQ(t.size, (std::vector<int64_t>{4, 6}));
  EXPECT_EQ(t.properties.dtype, at::kFloat);
  ASSERT_EQ(t.chunks.size(), 3u);
  EXPECT_EQ(t.chunks[0], (ChunkStorageMetadata{{0, 0}, {3, 6}}));
  EXPECT_EQ(t.chunks[1], (ChunkStorageMetadata{{3, 0}, {1, 2}}));
  EXPECT_EQ(t.chunks[2], (ChunkStorageMetadata{{3, 2}, {1, 4}}));
  EXPECT_EQ(c.metadata.storage_data.at(MetadataIndex("w", {3, 2})).relative_path,
            "shard-00003-model-00001-of-00001.safetensors");
  EXPECT_EQ(read_source(c, MetadataIndex("w", {0, 0})), bytes_of(w.slice(0, 0, 3)));
  EXPECT_EQ(read_source(c, MetadataIndex("w", {3, 2})), bytes_of(w.slice(0, 3, 4).slice(1, 2, 6)));
  EXPECT_EQ(std::get<RawTensor>(c.sources.at(MetadataIndex("w", {3, 0}))).sizes,
            (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(tensor_md(c, "bias").size, (std::vector<int64_t>{6}));
  EXPECT_EQ(c.metadata.storage_data.size(), 4u);
  EXPECT_EQ(decode_flatten_mapping(c.metadata.planner_data).size(), 2u);

  // With the index DCP's writer adds (one file per name in its weight_map).
  put("dcp/model.safetensors.index.json",
      "{\"metadata\": {\"total_size\": 120}, \"weight_map\": {"
      "\"w\": \"shard-00003-model-00001-of-00001.safetensors\", "
      "\"bias\": \"shard-00001-model-00001-of-00001.safetensors\"}}");
  // The index lists only the files it names: the other chunks of w are missing.
  expect_error([&] { catalog(dir_ + "/dcp"); }, {"tensor 'w'", "cover 22 of the 24", "missing"});
}

TEST_F(InteropSafetensorsTest, DcpShardingInfoViolations) {
  const std::string dir = dir_ + "/dcp";
  const std::string f1 = dir + "/a.safetensors", f2 = dir + "/b.safetensors";
  auto files = [&](std::vector<T> a, std::map<std::string, std::vector<int64_t>> ao,
                   std::vector<T> b, std::map<std::string, std::vector<int64_t>> bo) {
    put("dcp/a.safetensors", safetensors(std::move(a), dcp_meta(ao)));
    put("dcp/b.safetensors", safetensors(std::move(b), dcp_meta(bo)));
  };
  const at::Tensor half = torch::ones({2, 4});
  // Overlapping chunks.
  files({tensor("w", half)}, {{"w", {0, 0}}}, {tensor("w", half)}, {{"w", {1, 0}}});
  expect_error([&] { catalog(dir); }, {"tensor 'w'", f1, f2, "overlap"});
  // The same offsets.
  files({tensor("w", half)}, {{"w", {0, 0}}}, {tensor("w", half)}, {{"w", {0, 0}}});
  expect_error([&] { catalog(dir); }, {"tensor 'w'", f1, f2, "same offsets"});
  // Different dtypes.
  files({tensor("w", half)}, {{"w", {0, 0}}}, {tensor("w", half.to(at::kDouble))}, {{"w", {2, 0}}});
  expect_error([&] { catalog(dir); }, {"tensor 'w'", "F32", "F64", f1, f2});
  // Different ranks.
  files({tensor("w", half)}, {{"w", {0, 0}}}, {tensor("w", torch::ones({8}))}, {{"w", {2}}});
  expect_error([&] { catalog(dir); }, {"tensor 'w'", "dimension", f1, f2});
  // A hole: a chunk is missing.
  files({tensor("w", half)}, {{"w", {0, 0}}}, {tensor("w", half)}, {{"w", {4, 0}}});
  expect_error([&] { catalog(dir); }, {"tensor 'w'", "cover 16 of the 24", "[6, 4]"});
  // One file says it holds a chunk, the other does not.
  files({tensor("w", half)}, {{"w", {0, 0}}}, {tensor("w", half), tensor("x", half)},
        {{"x", {0, 0}}});
  expect_error([&] { catalog(dir); }, {"tensor 'w'", f1, f2, "does not say"});
  // Offsets of another rank than the shape.
  files({tensor("w", half)}, {{"w", {0}}}, {}, {});
  expect_error([&] { catalog(dir); }, {"tensor 'w'", f1, "offsets [0]", "[2, 4]"});
  // A name the file does not hold.
  files({tensor("w", half)}, {{"w", {0, 0}}, {"ghost", {0}}}, {}, {});
  expect_error([&] { catalog(dir); }, {"'ghost'", f1, "not in the file"});
  // Offsets that are not non-negative integers.
  files({tensor("w", half)}, {{"w", {-1, 0}}}, {}, {});
  expect_error([&] { catalog(dir); }, {"tensor 'w'", f1, "saved_offsets"});
  // Not JSON.
  put("dcp/a.safetensors",
      safetensors({tensor("w", half)},
                  std::map<std::string, std::string>{{"DCP_SHARDING_INFO", "{\"w\": "}}));
  expect_error([&] { catalog(dir); }, {"DCP_SHARDING_INFO", f1, "not valid JSON"});
  put("dcp/a.safetensors",
      safetensors({tensor("w", half)},
                  std::map<std::string, std::string>{
                      {"DCP_SHARDING_INFO", "{\"w\": {\"saved_offsets\": [0, 0]}, \"w\": {}}"}}));
  expect_error([&] { catalog(dir); }, {"DCP_SHARDING_INFO", f1, "tensor 'w' twice"});
}

// Each rule of the format, broken: an error naming the file (and the
// tensor, when there is one).
TEST_F(InteropSafetensorsTest, HeaderViolations) {
  const std::string f = "'" + dir_ + "/model.safetensors'";
  struct Case {
    std::string label;
    std::string bytes;
    std::vector<std::string> parts;
  };
  const std::string four(4, '\0'), eight(8, '\0');
  auto one = [](const std::string& entry) { return "{\"w\":" + entry + "}"; };
  const std::vector<Case> cases = {
      {"shorter than the length", std::string(5, '\0'), {f, "5 bytes", "too short"}},
      {"length over the limit", le64(100'000'001) + "{}", {f, "100000001", "limit of 100000000"}},
      {"length past the end", le64(1000) + std::string(50, ' '), {f, "1000", "past the end"}},
      {"not an object", raw_file("[1, 2]  ", ""), {f, "does not start with '{'"}},
      {"space first", raw_file(" {}     ", ""), {f, "does not start with '{'"}},
      {"empty header", raw_file("", ""), {f, "does not start with '{'"}},
      {"not JSON", raw_file("{\"w\": ", ""), {f, "not valid UTF-8 JSON"}},
      {"not UTF-8",
       raw_file("{\"w\xff\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1]}}", "x"),
       {f, "not valid UTF-8 JSON"}},
      {"NUL padding", raw_file(std::string("{}\0\0\0\0\0\0", 8), ""), {f, "not valid", "NUL"}},
      {"NUL then more",
       raw_file(std::string("{}\0{\"w\":1}", 10), ""),
       {f, "not valid", "NUL byte at byte 2"}},
      {"a tensor twice",
       raw_file("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                "xy"),
       {f, "tensor 'w' twice"}},
      {"a key twice in an entry",
       raw_file(one("{\"dtype\":\"U8\",\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}"),
                "x"),
       {f, "'dtype' twice", "tensor 'w'"}},
      {"a key twice in __metadata__",
       raw_file("{\"__metadata__\":{\"format\":\"pt\",\"format\":\"np\"}}", ""),
       {f, "'format' twice", "__metadata__"}},
      {"no dtype",
       raw_file(one("{\"shape\":[1],\"data_offsets\":[0,4]}"), four),
       {f, "tensor 'w'", "no \"dtype\""}},
      {"no shape",
       raw_file(one("{\"dtype\":\"F32\",\"data_offsets\":[0,4]}"), four),
       {f, "tensor 'w'", "no \"shape\""}},
      {"no data_offsets",
       raw_file(one("{\"dtype\":\"F32\",\"shape\":[1]}"), four),
       {f, "tensor 'w'", "no \"data_offsets\""}},
      {"entry not an object", raw_file(one("[1]"), ""), {f, "tensor 'w'", "not an object"}},
      {"dtype not a string",
       raw_file(one("{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}"), four),
       {f, "tensor 'w'", "dtype is not a string"}},
      {"negative dimension",
       raw_file(one("{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}"), four),
       {f, "tensor 'w'", "[-1]"}},
      {"fractional dimension",
       raw_file(one("{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}"), four),
       {f, "tensor 'w'", "[1.0]"}},
      {"shape not a list",
       raw_file(one("{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}"), four),
       {f, "tensor 'w'", "shape is not a list"}},
      {"shape too large",
       raw_file(one("{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}"),
                four),
       {f, "tensor 'w'", "2^64"}},
      {"three data_offsets",
       raw_file(one("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}"), four),
       {f, "tensor 'w'", "[0,4,8]"}},
      {"negative data_offsets",
       raw_file(one("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}"), four),
       {f, "tensor 'w'", "[-4,0]"}},
      {"end before begin",
       raw_file(one("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}"), four),
       {f, "tensor 'w'", "[4,0]", "end before they begin"}},
      {"bytes not of the shape",
       raw_file(one("{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}"), eight),
       {f, "tensor 'w'", "[0,8]", "hold 8 bytes", "need 12"}},
      {"a hole at the start",
       raw_file(one("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}"), eight),
       {f, "tensor 'w'", "starts at buffer offset 4", "hole of 4 bytes"}},
      {"a hole between",
       raw_file("{\"v\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
                eight + four),
       {f, "tensor 'w'", "tensor 'v' ends at 4", "hole of 4 bytes"}},
      {"an overlap",
       raw_file("{\"v\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
                eight + four),
       {f, "tensor 'w'", "overlaps tensor 'v'", "[4, 12)"}},
      {"the same bytes twice",
       raw_file("{\"v\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                "\"w\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
                four),
       {f, "tensor 'w'", "overlaps tensor 'v'"}},
      {"bytes after the last tensor",
       raw_file(one("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}"), eight),
       {f, "'w'", "bytes after the last tensor", "ends at buffer offset 4"}},
      {"truncated buffer",
       raw_file(one("{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}"), four),
       {f, "'w'", "truncated"}},
      {"__metadata__ value not a string",
       raw_file("{\"__metadata__\":{\"format\":1}}", ""),
       {f, "__metadata__", "'format'", "not a string"}},
      {"__metadata__ not an object",
       raw_file("{\"__metadata__\":[\"pt\"]}", ""),
       {f, "__metadata__", "not an object"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.label);
    const std::string path = put("model.safetensors", c.bytes);
    expect_error([&] { catalog(path); }, c.parts);
  }
}

// Trailing spaces after the JSON are the padding the writer adds: fine,
// however many.
TEST_F(InteropSafetensorsTest, TrailingSpacesAreAllowed) {
  const Catalog c = catalog_of_bytes(raw_file(
      "{\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}" + std::string(37, ' '),
      "ab"));
  EXPECT_EQ(c.metadata.storage_data.at(MetadataIndex("w", {0})).length, 2u);
}

TEST_F(InteropSafetensorsTest, PosixFiles) {
  char tmpl[] = "/tmp/dcp_safetensors_test.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  const at::Tensor w = torch::randn({3, 2});
  posix_env()->write_file(dir + "/model.safetensors", safetensors({tensor("w", w)}), false);
  const Catalog file = safetensors_catalog(*posix_env(), dir + "/model.safetensors", "m");
  EXPECT_EQ(file.metadata.storage_data.at(MetadataIndex("w", {0, 0})).relative_path,
            "model.safetensors");
  const Catalog d = safetensors_catalog(*posix_env(), dir, dir);
  EXPECT_EQ(d.format, "Hugging Face safetensors directory");
  const auto& raw = std::get<RawTensor>(d.sources.at(MetadataIndex("w", {0, 0})));
  EXPECT_EQ(raw.file, dir + "/model.safetensors");
  EXPECT_EQ(posix_env()->read_file(raw.file).substr(raw.offset, raw.storage_bytes), bytes_of(w));
  posix_env()->remove_dir_recursively(dir);
}

}  // namespace
}  // namespace internal
}  // namespace dcp

#include <gtest/gtest.h>

#include <chrono>

#include "common/test_util.h"

namespace dcp {
namespace {

Metadata sample_metadata(int n) {
  Metadata md;
  md.world_size = 4;
  md.storage_meta = StorageMeta{"/ckpt/step_10", "abc"};
  md.planner_data = "planner bytes";
  for (int i = 0; i < n; ++i) {
    const std::string key = "model.layer" + std::to_string(i) + ".weight";
    TensorStorageMetadata t;
    t.properties.dtype = i % 2 ? at::kBFloat16 : at::kFloat;
    t.properties.requires_grad = i % 3 == 0;
    t.size = {128, 64};
    t.chunks = {ChunkStorageMetadata{{0, 0}, {64, 64}}, ChunkStorageMetadata{{64, 0}, {64, 64}}};
    md.state_dict_metadata[key] = t;
    for (const auto& c : t.chunks)
      md.storage_data[MetadataIndex(key, c.offsets)] =
          StorageInfo{"__" + std::to_string(i % 4) + "_0.distcp", uint64_t(i) * 4096, 8192,
                      ChecksumType::kXXH3_64, uint64_t(i) * 7919};
  }
  md.state_dict_metadata["step"] = BytesStorageMetadata{};
  md.storage_data[MetadataIndex("step")] =
      StorageInfo{"__0_0.distcp", 1, 2, ChecksumType::kNone, 0};
  return md;
}

void expect_same(const Metadata& a, const Metadata& b) {
  EXPECT_EQ(a.world_size, b.world_size);
  ASSERT_TRUE(b.storage_meta);
  EXPECT_EQ(a.storage_meta->checkpoint_id, b.storage_meta->checkpoint_id);
  EXPECT_EQ(a.storage_meta->save_id, b.storage_meta->save_id);
  EXPECT_EQ(a.planner_data, b.planner_data);
  ASSERT_EQ(a.state_dict_metadata.size(), b.state_dict_metadata.size());
  for (const auto& [k, v] : a.state_dict_metadata) {
    const auto& w = b.state_dict_metadata.at(k);
    ASSERT_EQ(v.index(), w.index()) << k;
    if (auto* t = std::get_if<TensorStorageMetadata>(&v)) {
      const auto& u = std::get<TensorStorageMetadata>(w);
      EXPECT_EQ(t->properties, u.properties);
      EXPECT_EQ(t->size, u.size);
      EXPECT_EQ(t->chunks, u.chunks);
    }
  }
  EXPECT_EQ(a.storage_data, b.storage_data);
}

TEST(MetadataTest, RoundTrip) {
  Metadata md = sample_metadata(10);
  Metadata back = deserialize_metadata(serialize_metadata(md), "test");
  expect_same(md, back);
  EXPECT_EQ(back.version, kFormatVersion);
}

TEST(MetadataTest, HundredThousandEntries) {
  Metadata md = sample_metadata(100000);
  auto t0 = std::chrono::steady_clock::now();
  std::string bytes = serialize_metadata(md);
  auto t1 = std::chrono::steady_clock::now();
  Metadata back = deserialize_metadata(bytes, "test");
  auto t2 = std::chrono::steady_clock::now();
  expect_same(md, back);
  // Reported, not asserted: speed belongs to benchmarks.
  std::printf("100k entries: %zu bytes, serialize %.1f ms, deserialize %.1f ms\n", bytes.size(),
              std::chrono::duration<double, std::milli>(t1 - t0).count(),
              std::chrono::duration<double, std::milli>(t2 - t1).count());
}

void expect_corruption(const std::string& bytes, const std::string& fragment) {
  try {
    deserialize_metadata(bytes, "/x/.metadata");
    FAIL() << "expected an error containing '" << fragment << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("/x/.metadata"), std::string::npos) << e.what();
  }
}

TEST(MetadataTest, DamageIsDetected) {
  const std::string good = serialize_metadata(sample_metadata(3));
  expect_corruption("", "empty");
  expect_corruption("garbage that is long enough to hold a header", "not a dcp++ metadata");
  expect_corruption(good.substr(0, good.size() - 5), "truncated");
  for (size_t pos : {size_t{40}, good.size() / 2, good.size() - 1}) {
    std::string bad = good;
    bad[pos] ^= 0x10;
    expect_corruption(bad, "checksum mismatch");
  }
  std::string newer = good;
  newer[8] = static_cast<char>(kFormatVersion + 1);
  expect_corruption(newer, "format version");
}

TEST(MetadataTest, ReservedFlagsMustBeZero) {
  const std::string good = serialize_metadata(sample_metadata(3));
  ASSERT_EQ(good.substr(12, 4), std::string(4, '\0'));  // written as 0
  // Any bit of the flags word (bytes 12-15, outside the body checksum).
  for (size_t byte = 12; byte < 16; ++byte)
    for (unsigned bit : {0u, 7u}) {
      std::string bad = good;
      bad[byte] = static_cast<char>(1u << bit);
      try {
        deserialize_metadata(bad, "/x/.metadata");
        FAIL() << "flags byte " << byte << " bit " << bit << " was accepted";
      } catch (const CorruptionError& e) {
        EXPECT_NE(std::string(e.what()).find("/x/.metadata"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find("reserved flags"), std::string::npos) << e.what();
      }
    }
  EXPECT_NO_THROW(deserialize_metadata(good, "/x/.metadata"));
}

TEST(MetadataTest, ReservedFlagsOnDiskAreCorruptionNamingTheFile) {
  testing::TempDir dir;
  const std::string ck = dir.sub("ck");
  SaveOptions so;
  so.checkpoint_id = ck;
  save({{"w", at::ones({4, 4})}}, so);
  const std::string md = ck + "/" + kMetadataFileName;
  std::string bytes = testing::read_file(md);
  bytes[13] = 2;
  testing::write_file(md, bytes);
  try {
    read_metadata(ck);
    FAIL() << "a metadata file with flags 0x200 was read";
  } catch (const CorruptionError& e) {
    EXPECT_NE(std::string(e.what()).find(md), std::string::npos) << e.what();
  }
}

TEST(MetadataTest, DtypeNamesRoundTrip) {
  for (at::ScalarType dt : testing::all_dtypes()) EXPECT_EQ(dtype_from_name(dtype_name(dt)), dt);
  EXPECT_THROW(dtype_from_name("float8"), InvalidArgumentError);
  EXPECT_THROW(check_supported_dtype(at::kQInt8, "key 'q'"), InvalidArgumentError);
}

}  // namespace
}  // namespace dcp

// Bad input: each case gives a clear error naming what is wrong, never a
// crash or a silently wrong tensor; a failed save leaves no metadata.
#include <gtest/gtest.h>

#include <algorithm>
#include <future>

#include "common/test_util.h"

namespace dcp {
namespace {

using testing::make_tensor;

class BadInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    sd_ = {{"model.w", make_tensor(at::kFloat, {256, 64}, 1)},
           {"model.b", make_tensor(at::kFloat, {64}, 2)},
           {"big", make_tensor(at::kFloat, {512, 1024}, 3)},  // 2 MiB, read directly
           {"step", 10}};
    path_ = dir_.sub("ck");
    save(sd_, path_);
  }
  StateDict fresh() {
    return {{"model.w", at::zeros({256, 64})},
            {"model.b", at::zeros({64})},
            {"big", at::zeros({512, 1024})},
            {"step", 0}};
  }
  // Loads and returns the error message; fails the test when there is none.
  std::string load_error(const std::string& path, ErrorCode expected_code) {
    StateDict d = fresh();
    try {
      load(d, path);
    } catch (const CheckpointError& e) {
      EXPECT_EQ(e.root_code(), expected_code) << e.what();
      return e.what();
    }
    ADD_FAILURE() << "load of " << path << " succeeded";
    return "";
  }
  // The data file holding `key`, and the item's byte range.
  std::pair<std::string, StorageInfo> locate(const std::string& key, std::vector<int64_t> offset) {
    Metadata md = read_metadata(path_);
    const StorageInfo& info = md.storage_data.at(MetadataIndex(key, offset));
    return {path_ + "/" + info.relative_path, info};
  }

  testing::TempDir dir_;
  StateDict sd_;
  std::string path_;
};

TEST_F(BadInputTest, MissingDirectory) {
  std::string msg = load_error(dir_.sub("nope"), ErrorCode::kNotFound);
  EXPECT_NE(msg.find(dir_.sub("nope")), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
}

TEST_F(BadInputTest, TruncatedDataFile) {
  auto [file, info] = locate("big", {0, 0});
  std::string data = testing::read_file(file);
  testing::write_file(file, data.substr(0, info.offset + info.length / 2));
  std::string msg = load_error(path_, ErrorCode::kCorruption);
  EXPECT_NE(msg.find(file), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'big'"), std::string::npos) << msg;
}

TEST_F(BadInputTest, FlippedByteInSmallAndLargeItems) {
  for (auto [key, offset] : std::vector<std::pair<std::string, std::vector<int64_t>>>{
           {"model.b", {0}}, {"big", {0, 0}}, {"step", {}}}) {
    auto [file, info] = locate(key, offset);
    std::string data = testing::read_file(file);
    std::string bad = data;
    bad[info.offset + info.length / 2] ^= 0x01;
    testing::write_file(file, bad);
    std::string msg = load_error(path_, ErrorCode::kCorruption);
    EXPECT_NE(msg.find("checksum mismatch"), std::string::npos) << msg;
    EXPECT_NE(msg.find("'" + key + "'"), std::string::npos) << msg;
    EXPECT_NE(msg.find(file), std::string::npos) << msg;
    testing::write_file(file, data);
  }
  StateDict d = fresh();
  EXPECT_NO_THROW(load(d, path_));
}

TEST_F(BadInputTest, MissingEmptyOrCorruptMetadata) {
  const std::string md_path = path_ + "/.metadata";
  const std::string good = testing::read_file(md_path);

  testing::write_file(md_path, "");
  EXPECT_NE(load_error(path_, ErrorCode::kCorruption).find("metadata file is empty"),
            std::string::npos);

  std::string bad = good;
  bad[bad.size() / 2] ^= 0x40;
  testing::write_file(md_path, bad);
  std::string msg = load_error(path_, ErrorCode::kCorruption);
  EXPECT_NE(msg.find("checksum mismatch"), std::string::npos) << msg;
  EXPECT_NE(msg.find(md_path), std::string::npos) << msg;

  testing::write_file(md_path, good.substr(0, good.size() - 10));
  EXPECT_NE(load_error(path_, ErrorCode::kCorruption).find("truncated"), std::string::npos);

  std::remove(md_path.c_str());
  msg = load_error(path_, ErrorCode::kNotFound);
  EXPECT_NE(msg.find("not a committed checkpoint"), std::string::npos) << msg;
  EXPECT_FALSE(is_committed_checkpoint(path_));
}

TEST_F(BadInputTest, MissingDataFile) {
  auto [file, info] = locate("big", {0, 0});
  std::remove(file.c_str());
  std::string msg = load_error(path_, ErrorCode::kCorruption);
  EXPECT_NE(msg.find("missing data file"), std::string::npos) << msg;
}

TEST_F(BadInputTest, FailedSaveLeavesNoMetadata) {
  for (int fail_after : {0, 1, 2, 3}) {
    const std::string path = dir_.sub("failing" + std::to_string(fail_after));
    SaveOptions o;
    o.storage_writer =
        std::make_shared<testing::FailingWriter>(make_filesystem_writer(path), fail_after);
    try {
      save(sd_, o);
      FAIL() << "save should fail";
    } catch (const CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find("injected failure"), std::string::npos) << e.what();
      EXPECT_EQ(e.failures().at(0).step, "write:local");
    }
    EXPECT_FALSE(is_committed_checkpoint(path));
    std::string msg = load_error(path, ErrorCode::kNotFound);
    EXPECT_NE(msg.find("not a committed checkpoint"), std::string::npos) << msg;
  }
  // The earlier checkpoint is untouched.
  StateDict d = fresh();
  load(d, path_);
  EXPECT_TRUE(Value(d).equals(Value(sd_)));
}

// A writer whose write_data loses the result of one item (a storage bug).
class LosingWriter : public StorageWriterWrapper {
 public:
  LosingWriter(std::shared_ptr<StorageWriter> w, std::string key)
      : StorageWriterWrapper(std::move(w)), key_(std::move(key)) {}
  std::future<std::vector<WriteResult>> write_data(const SavePlan& plan,
                                                   SavePlanner& planner) override {
    std::vector<WriteResult> results = StorageWriterWrapper::write_data(plan, planner).get();
    results.erase(std::remove_if(results.begin(), results.end(),
                                 [&](const WriteResult& r) { return r.index.fqn == key_; }),
                  results.end());
    std::promise<std::vector<WriteResult>> p;
    p.set_value(std::move(results));
    return p.get_future();
  }

 private:
  std::string key_;
};

TEST_F(BadInputTest, AnItemWithoutDataIsNeverCommitted) {
  StateDict sd = sd_;
  sd["sharded"] = ShardedTensor{{8, 4},
                                {Shard{make_tensor(at::kFloat, {4, 4}, 4), {0, 0}},
                                 Shard{make_tensor(at::kFloat, {4, 4}, 5), {4, 0}}}};
  for (const std::string key : {"model.b", "step", "sharded"}) {
    const std::string path = dir_.sub("losing_" + key);
    SaveOptions o;
    o.storage_writer = std::make_shared<LosingWriter>(make_filesystem_writer(path), key);
    try {
      save(sd, o);
      ADD_FAILURE() << "save without " << key << "'s data succeeded";
    } catch (const CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find("no data was written for '" + key + "'"),
                std::string::npos)
          << e.what();
    }
    EXPECT_FALSE(is_committed_checkpoint(path));
  }
}

// At one rank the default planner's metadata is built while the data is
// written: shards it refuses (they overlap, or leave a hole) fail the save in
// its write step, before anything commits (with their error, not that of a
// write that fails too), and a later save of good data to the same
// directory commits (the stale data files go).
TEST_F(BadInputTest, PlanRefusedDuringTheWriteNeverCommits) {
  const std::vector<std::pair<ShardedTensor, std::string>> cases = {
      {ShardedTensor{{8, 4},
                     {Shard{make_tensor(at::kFloat, {5, 4}, 4), {0, 0}},
                      Shard{make_tensor(at::kFloat, {4, 4}, 5), {4, 0}}}},
       "overlap"},
      {ShardedTensor{{8, 4}, {Shard{make_tensor(at::kFloat, {4, 4}, 4), {0, 0}}}},
       "the saved chunks cover 16 of 32 elements"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string path = dir_.sub("refused" + std::to_string(i));
    StateDict sd = sd_;
    sd["sharded"] = cases[i].first;
    for (bool sync : {true, false}) {
      FileSystemWriterOptions wo;
      wo.sync_files = sync;
      SaveOptions o;
      o.storage_writer = make_filesystem_writer(path, wo);
      try {
        save(sd, o);
        ADD_FAILURE() << "save of case " << i << " succeeded";
      } catch (const CheckpointError& e) {
        EXPECT_NE(std::string(e.what()).find("key 'sharded'"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(cases[i].second), std::string::npos) << e.what();
        EXPECT_EQ(e.failures().at(0).step, "write:local");
        EXPECT_EQ(e.root_code(), ErrorCode::kInvalidArgument);
      }
      EXPECT_FALSE(is_committed_checkpoint(path));
    }
    // A write that fails too: the plan's error is the one reported.
    SaveOptions o;
    o.storage_writer = std::make_shared<testing::FailingWriter>(make_filesystem_writer(path), 0);
    try {
      save(sd, o);
      ADD_FAILURE() << "save of case " << i << " with a failing writer succeeded";
    } catch (const CheckpointError& e) {
      EXPECT_NE(std::string(e.what()).find(cases[i].second), std::string::npos) << e.what();
      EXPECT_EQ(std::string(e.what()).find("injected failure"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(is_committed_checkpoint(path));
    save(sd_, path);
    StateDict d = fresh();
    load(d, path);
    EXPECT_TRUE(Value(d).equals(Value(sd_)));
  }
}

TEST_F(BadInputTest, FailedSaveIntoSameDirectoryKeepsCommittedCheckpoint) {
  // Without overwrite a save into a committed checkpoint is refused before
  // anything is written.
  SaveOptions o;
  o.storage_writer = std::make_shared<testing::FailingWriter>(make_filesystem_writer(path_), 1);
  EXPECT_THROW(save(sd_, o), CheckpointError);
  StateDict d = fresh();
  load(d, path_);
  EXPECT_TRUE(Value(d).equals(Value(sd_)));
}

TEST_F(BadInputTest, UnsupportedValues) {
  EXPECT_THROW(
      save({{"q", at::quantize_per_tensor(at::ones({2}), 0.1, 0, at::kQInt8)}}, dir_.sub("q")),
      CheckpointError);
  EXPECT_THROW(save({{"u", at::Tensor()}}, dir_.sub("u")), CheckpointError);
  EXPECT_FALSE(is_committed_checkpoint(dir_.sub("q")));
}

}  // namespace
}  // namespace dcp

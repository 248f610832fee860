// FaultInjectionEnv on real files: what a power cut loses and keeps, and the
// errors it injects.
#include <gtest/gtest.h>

#include <cerrno>
#include <filesystem>
#include <set>

#include "common/test_util.h"
#include "dcp/error.h"
#include "dcp/fault_injection_env.h"

namespace dcp {
namespace {

namespace fs = std::filesystem;

class FaultEnvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = tmp_.path();
    dir_ = root_ + "/d";
    fs::create_directories(dir_);
    env_ = std::make_unique<FaultInjectionEnv>(posix_env(), root_ + "/trash");
  }
  testing::TempDir tmp_;
  std::string root_, dir_;
  std::unique_ptr<FaultInjectionEnv> env_;
};

TEST_F(FaultEnvTest, UnsyncedBytesAndEntriesAreLost) {
  env_->write_file(dir_ + "/durable", "abc", true);
  env_->sync_dir(dir_);
  auto f = env_->new_writable_file(dir_ + "/durable2");
  f->append("12345", 5);
  f->sync();
  f->append("678", 3);  // never synced
  f->close();
  env_->sync_dir(dir_);
  env_->write_file(dir_ + "/synced_no_dir", "xyz", true);  // its entry is not durable
  env_->power_cut();
  EXPECT_THROW(env_->file_exists(dir_ + "/durable"), StorageError);
  const auto r = env_->reboot();
  EXPECT_EQ(testing::read_file(dir_ + "/durable"), "abc");
  EXPECT_EQ(testing::read_file(dir_ + "/durable2"), "12345");
  EXPECT_FALSE(fs::exists(dir_ + "/synced_no_dir"));
  EXPECT_EQ(r.bytes_dropped, 3u);
  EXPECT_EQ(r.entries_undone, 1u);
  EXPECT_TRUE(env_->file_exists(dir_ + "/durable"));  // works again
}

TEST_F(FaultEnvTest, RenameAndRemoveUndoneWithoutDirectorySync) {
  testing::write_file(dir_ + "/a", "old a");  // existed before: durable
  testing::write_file(dir_ + "/b", "old b");
  testing::write_file(dir_ + "/c", "old c");
  env_->rename_file(dir_ + "/a", dir_ + "/b");  // replaces b
  env_->remove_file(dir_ + "/c");
  EXPECT_FALSE(fs::exists(dir_ + "/c"));
  env_->power_cut();
  env_->reboot();
  EXPECT_EQ(testing::read_file(dir_ + "/a"), "old a");
  EXPECT_EQ(testing::read_file(dir_ + "/b"), "old b");
  EXPECT_EQ(testing::read_file(dir_ + "/c"), "old c");
  EXPECT_TRUE(fs::is_empty(root_ + "/trash"));

  env_->rename_file(dir_ + "/a", dir_ + "/b");
  env_->remove_file(dir_ + "/c");
  env_->sync_dir(dir_);
  env_->power_cut();
  env_->reboot();
  EXPECT_FALSE(fs::exists(dir_ + "/a"));
  EXPECT_EQ(testing::read_file(dir_ + "/b"), "old a");
  EXPECT_FALSE(fs::exists(dir_ + "/c"));
}

TEST_F(FaultEnvTest, DirectoriesAreFollowedByIdentity) {
  // mkdir tmp, write tmp/f durably, rename tmp -> final, sync the parent
  // only after the rename: everything is durable, under the new name.
  env_->create_dirs(dir_ + "/tmp");
  env_->write_file(dir_ + "/tmp/f", "data", true);
  env_->rename_file(dir_ + "/tmp", dir_ + "/final");
  env_->sync_dir(dir_ + "/final");  // covers the create of tmp/f
  env_->sync_dir(dir_);             // covers mkdir tmp and the rename
  env_->power_cut();
  EXPECT_EQ(env_->reboot().entries_undone, 0u);
  EXPECT_EQ(testing::read_file(dir_ + "/final/f"), "data");

  // Without the parent's sync the directory, and what it holds, is lost.
  env_->create_dirs(dir_ + "/x/y");
  env_->write_file(dir_ + "/x/y/f", "data", true);
  env_->sync_dir(dir_ + "/x/y");
  env_->sync_dir(dir_ + "/x");
  env_->power_cut();
  env_->reboot();
  EXPECT_FALSE(fs::exists(dir_ + "/x"));
}

TEST_F(FaultEnvTest, RecursiveRemovalIsUndoneEntryByEntry) {
  fs::create_directories(dir_ + "/t/sub");
  testing::write_file(dir_ + "/t/one", "1");
  testing::write_file(dir_ + "/t/sub/two", "22");
  env_->remove_dir_recursively(dir_ + "/t");
  EXPECT_FALSE(fs::exists(dir_ + "/t"));
  env_->power_cut();
  env_->reboot();
  EXPECT_EQ(testing::read_file(dir_ + "/t/one"), "1");
  EXPECT_EQ(testing::read_file(dir_ + "/t/sub/two"), "22");
}

TEST_F(FaultEnvTest, CutAtOperationFailsItAndEverythingAfter) {
  int cuts = 0;
  env_->set_on_cut([&] { ++cuts; });
  const uint64_t k = env_->operations() + 2;
  env_->power_cut_at(k);
  env_->file_exists(dir_ + "/a");  // k - 2
  env_->file_exists(dir_ + "/a");  // k - 1
  try {
    env_->write_file(dir_ + "/a", "x", true);
    FAIL() << "no power cut";
  } catch (const StorageError& e) {
    EXPECT_EQ(e.error_number(), EIO);
    EXPECT_NE(std::string(e.what()).find("power cut before operation " + std::to_string(k)),
              std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find(dir_ + "/a"), std::string::npos) << e.what();
  }
  EXPECT_THROW(env_->list_dir(dir_), StorageError);
  EXPECT_EQ(cuts, 1);
  EXPECT_TRUE(env_->is_cut());
  EXPECT_EQ(env_->operation(k), "create " + dir_ + "/a");
  env_->reboot();
  EXPECT_FALSE(env_->is_cut());
  EXPECT_FALSE(fs::exists(dir_ + "/a"));
}

TEST_F(FaultEnvTest, InjectedErrorsNameThePathAndErrno) {
  for (int err : {EIO, ENOSPC, EDQUOT, EINTR}) {
    env_->fail_nth(FaultOp::kAppend, 1, err);
    auto f = env_->new_writable_file(dir_ + "/f");
    f->append("first", 5);
    try {
      f->append("second", 6);
      FAIL() << "no fault";
    } catch (const StorageError& e) {
      EXPECT_EQ(e.error_number(), err);
      EXPECT_NE(std::string(e.what()).find(errno_text(err)), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(dir_ + "/f"), std::string::npos) << e.what();
    }
    f->append("third", 5);  // one fault only
    f->close();
    EXPECT_EQ(testing::read_file(dir_ + "/f"), "firstthird");
  }
  // A short write: half the bytes reach the file, then ENOSPC.
  env_->fail_nth(FaultOp::kAppend, 0, ENOSPC, /*short_write=*/true);
  auto f = env_->new_writable_file(dir_ + "/g");
  try {
    f->append("abcdef", 6);
    FAIL() << "no fault";
  } catch (const StorageError& e) {
    EXPECT_EQ(e.error_number(), ENOSPC);
  }
  f->close();
  EXPECT_EQ(testing::read_file(dir_ + "/g"), "abc");
  // A full disk: creates and appends fail until space is back; removals work.
  env_->set_disk_full(true);
  EXPECT_THROW(env_->write_file(dir_ + "/h", "x", false), StorageError);
  env_->remove_file(dir_ + "/g");
  env_->set_disk_full(false);
  env_->write_file(dir_ + "/h", "x", false);
}

TEST_F(FaultEnvTest, RandomRebootKeepsAConsistentPart) {
  // Create a, append and sync part, rename a -> b: after a random reboot b
  // holds a prefix of what was written that includes the synced part, or a
  // is back, or nothing is there. Never both names, never another content.
  std::set<std::string> states;
  for (uint64_t seed = 0; seed < 64; ++seed) {
    auto f = env_->new_writable_file(dir_ + "/a");
    f->append("0123", 4);
    f->sync();
    f->append("4567", 4);
    f->close();
    env_->rename_file(dir_ + "/a", dir_ + "/b");
    env_->power_cut();
    env_->reboot(RebootMode::kRandom, seed);
    const bool a = fs::exists(dir_ + "/a"), b = fs::exists(dir_ + "/b");
    ASSERT_FALSE(a && b) << seed;
    std::string content = a   ? testing::read_file(dir_ + "/a")
                          : b ? testing::read_file(dir_ + "/b")
                              : "";
    if (a || b) {
      ASSERT_GE(content.size(), 4u) << seed;
      ASSERT_EQ(content, std::string("01234567").substr(0, content.size())) << seed;
    }
    states.insert(std::string(a ? "a:" : b ? "b:" : "none:") + content);
    fs::remove(dir_ + "/a");
    fs::remove(dir_ + "/b");
  }
  EXPECT_GE(states.size(), 4u);  // random, not always the same
}

}  // namespace
}  // namespace dcp

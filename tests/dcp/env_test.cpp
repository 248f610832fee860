// The public Env (dcp/env.h): the same behaviour from posix_env() and
// memory_env(), and an EnvWrapper that forwards every call.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <map>
#include <mutex>

#include "common/counting_env.h"
#include "common/test_util.h"
#include "dcp/dcp.h"
#include "dcp/env.h"
#include "dcp/error.h"
#include "dcp/filesystem.h"
#include "dcp/memory_storage.h"

namespace dcp {
namespace {

std::vector<std::string> sorted(std::vector<std::string> v) {
  std::sort(v.begin(), v.end());
  return v;
}

class EnvTest : public ::testing::TestWithParam<bool> {
 protected:
  Env* env() { return GetParam() ? memory_env() : posix_env(); }
  std::string root() {
    if (!GetParam()) return tmp_.path();
    static int n = 0;
    return "env_test_" + std::to_string(::getpid()) + "_" + std::to_string(n++);
  }
  void TearDown() override {
    if (GetParam()) clear_memory_checkpoints("env_test_");
  }
  testing::TempDir tmp_;
};

TEST_P(EnvTest, FilesAndDirectories) {
  const std::string r = root();
  env()->create_dirs(r + "/a/b");
  EXPECT_TRUE(env()->dir_exists(r + "/a/b"));
  env()->write_file(r + "/a/f", "hello", true);
  EXPECT_TRUE(env()->file_exists(r + "/a/f"));
  EXPECT_FALSE(env()->dir_exists(r + "/a/f"));
  EXPECT_EQ(env()->read_file(r + "/a/f"), "hello");
  EXPECT_EQ(sorted(env()->list_dir(r + "/a")), (std::vector<std::string>{"b", "f"}));
  env()->sync_dir(r + "/a");
  // A file in the way of a directory.
  EXPECT_THROW(env()->create_dirs(r + "/a/f/c"), StorageError);
  EXPECT_THROW(env()->create_dirs(r + "/a/f"), StorageError);
  env()->remove_file(r + "/a/f");
  env()->remove_file(r + "/a/f");  // fine when missing
  EXPECT_FALSE(env()->file_exists(r + "/a/f"));
  EXPECT_THROW(env()->new_random_access_file(r + "/a/f"), NotFoundError);
  EXPECT_THROW(env()->new_writable_file(r + "/nowhere/f"), NotFoundError);
}

TEST_P(EnvTest, ListDirErrors) {
  const std::string r = root();
  env()->create_dirs(r);
  EXPECT_THROW(env()->list_dir(r + "/missing"), NotFoundError);
  env()->write_file(r + "/file", "x", false);
  try {
    env()->list_dir(r + "/file");
    FAIL() << "listed a file";
  } catch (const StorageError& e) {
    EXPECT_EQ(e.error_number(), ENOTDIR);
    EXPECT_NE(std::string(e.what()).find(r + "/file"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Not a directory"), std::string::npos) << e.what();
  }
}

TEST_P(EnvTest, RenameAndRemoveDirectories) {
  const std::string r = root();
  env()->create_dirs(r + "/src/sub");
  env()->write_file(r + "/src/sub/x", "1", false);
  env()->write_file(r + "/src/y", "2", false);
  env()->rename_file(r + "/src", r + "/dst");
  EXPECT_FALSE(env()->dir_exists(r + "/src"));
  EXPECT_EQ(env()->read_file(r + "/dst/sub/x"), "1");
  EXPECT_EQ(env()->read_file(r + "/dst/y"), "2");
  EXPECT_EQ(sorted(env()->list_dir(r)), (std::vector<std::string>{"dst"}));
  // Onto a non-empty directory: refused.
  env()->create_dirs(r + "/full");
  env()->write_file(r + "/full/z", "3", false);
  EXPECT_THROW(env()->rename_file(r + "/dst", r + "/full"), StorageError);
  EXPECT_THROW(env()->rename_file(r + "/none", r + "/x"), NotFoundError);
  // A file replaces a file.
  env()->rename_file(r + "/dst/y", r + "/full/z");
  EXPECT_EQ(env()->read_file(r + "/full/z"), "2");
  env()->remove_dir_recursively(r + "/dst");
  env()->remove_dir_recursively(r + "/dst");  // fine when missing
  EXPECT_FALSE(env()->dir_exists(r + "/dst"));
  EXPECT_FALSE(env()->file_exists(r + "/dst/sub/x"));
  EXPECT_EQ(sorted(env()->list_dir(r)), (std::vector<std::string>{"full"}));
}

TEST_P(EnvTest, LockIsExclusiveUntilReleased) {
  const std::string r = root();
  env()->create_dirs(r);
  auto lock = env()->lock_file(r + "/.lock");
  ASSERT_NE(lock, nullptr);
  EXPECT_TRUE(env()->file_exists(r + "/.lock"));
  EXPECT_EQ(env()->lock_file(r + "/.lock"), nullptr);  // this process too
  lock.reset();
  auto again = env()->lock_file(r + "/.lock");
  EXPECT_NE(again, nullptr);
  EXPECT_THROW(env()->lock_file(r + "/nowhere/.lock"), NotFoundError);
}

// read_vectored() reads consecutive bytes into the slices as read() would:
// more slices than one preadv takes, empty ones, and a short read at the
// end of the file (the last slices get only what the file holds).
TEST_P(EnvTest, VectoredReadsFillTheSlicesInTurn) {
  const std::string r = root();
  env()->create_dirs(r);
  std::string data(5000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 7 + i / 256);
  env()->write_file(r + "/f", data, false);
  auto f = env()->new_random_access_file(r + "/f");
  // 2,500 slices of 0-3 bytes from offset 100: more than IOV_MAX (1024).
  std::vector<std::string> bufs;
  std::vector<ReadSlice> slices;
  size_t total = 0;
  for (int i = 0; i < 2500; ++i) bufs.emplace_back(static_cast<size_t>(i % 4), '?');
  for (auto& b : bufs) {
    slices.push_back({b.data(), b.size()});
    total += b.size();
  }
  ASSERT_LT(100 + total, data.size());
  EXPECT_EQ(f->read_vectored(100, slices.data(), slices.size()), total);
  std::string got;
  for (const auto& b : bufs) got += b;
  EXPECT_EQ(got, data.substr(100, total));
  // Past the end: only what is there, into the first slices.
  std::string a(10, '?'), b(10, '?');
  ReadSlice two[] = {{a.data(), a.size()}, {b.data(), b.size()}};
  EXPECT_EQ(f->read_vectored(data.size() - 15, two, 2), 15u);
  EXPECT_EQ(a, data.substr(data.size() - 15, 10));
  EXPECT_EQ(b.substr(0, 5), data.substr(data.size() - 5));
  EXPECT_EQ(f->read_vectored(data.size(), two, 2), 0u);
}

INSTANTIATE_TEST_SUITE_P(Envs, EnvTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "memory" : "posix"; });

using testing::CountingEnv;

TEST(EnvWrapperTest, ForwardsAndSeesTheCallsOfTheStorageBackend) {
  CountingEnv env(memory_env());
  EXPECT_EQ(env.target(), memory_env());
  env.create_dirs("env_wrapper_test");
  env.write_file("env_wrapper_test/f", "abc", true);
  EXPECT_EQ(memory_env()->read_file("env_wrapper_test/f"), "abc");
  EXPECT_EQ(env.read_file("env_wrapper_test/f"), "abc");
  EXPECT_EQ(env.calls["new_writable_file"], 1);
  EXPECT_EQ(env.calls["new_random_access_file"], 1);

  // A save and a load through the file-system writer and reader given it.
  FileSystemWriterOptions wo;
  wo.env = &env;
  FileSystemReaderOptions ro;
  ro.env = &env;
  StateDict sd{{"t", at::arange(10, at::kFloat)}};
  SaveOptions so;
  so.storage_writer = make_filesystem_writer("memory://env_wrapper_test/ckpt", wo);
  save(sd, so);
  EXPECT_GE(env.calls["rename_file"], 1);  // .metadata.tmp -> .metadata
  EXPECT_TRUE(memory_env()->file_exists("env_wrapper_test/ckpt/.metadata"));
  EXPECT_TRUE(is_committed_checkpoint("memory://env_wrapper_test/ckpt"));
  const int reads = env.calls["new_random_access_file"];
  StateDict back{{"t", at::zeros({10})}};
  LoadOptions lo;
  lo.storage_reader = make_filesystem_reader("memory://env_wrapper_test/ckpt", ro);
  load(back, lo);
  EXPECT_TRUE(at::equal(back.at("t").tensor(), sd.at("t").tensor()));
  EXPECT_GT(env.calls["new_random_access_file"], reads);
  clear_memory_checkpoints("env_wrapper_test");
}

TEST(EnvWrapperTest, NeedsATarget) { EXPECT_THROW(EnvWrapper(nullptr), InvalidArgumentError); }

TEST(EnvForTest, SchemeNamesTheEnv) {
  EXPECT_EQ(env_for("memory://a/b"), memory_env());
  EXPECT_EQ(env_for("/tmp/a"), posix_env());
  EXPECT_EQ(env_path("memory://a/b"), "a/b");
  EXPECT_EQ(env_path("/tmp/a"), "/tmp/a");
}

// ---- Env::new_direct_writable_file (POSIX: O_DIRECT) ----------------------------

namespace direct {

// 4 KiB-aligned memory holding a pattern.
struct AlignedBytes {
  explicit AlignedBytes(size_t n) : size(n) {
    void* p = nullptr;
    EXPECT_EQ(::posix_memalign(&p, 4096, n), 0);
    data = static_cast<char*>(p);
    for (size_t i = 0; i < n; ++i) data[i] = static_cast<char>((i * 131 + i / 4096) & 0xff);
  }
  ~AlignedBytes() { std::free(data); }
  char* data;
  size_t size;
};

// Pages of `path` in the page cache.
size_t resident_pages(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  EXPECT_GE(fd, 0);
  struct stat st;
  EXPECT_EQ(::fstat(fd, &st), 0);
  const size_t len = static_cast<size_t>(st.st_size);
  void* m = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0);
  EXPECT_NE(m, MAP_FAILED);
  std::vector<unsigned char> vec((len + 4095) / 4096);
  EXPECT_EQ(::mincore(m, len, vec.data()), 0);
  ::munmap(m, len);
  ::close(fd);
  size_t n = 0;
  for (unsigned char c : vec) n += c & 1;
  return n;
}

// Appends of every kind of alignment (memory and file position), across the
// 8 MiB buffer, an append after sync(): the file holds exactly the bytes.
void write_mixed(Env* env, const std::string& path) {
  AlignedBytes src(size_t{40} << 20);
  std::string expected;
  auto f = env->new_direct_writable_file(path);
  auto add = [&](size_t off, size_t n) {
    f->append(src.data + off, n);
    expected.append(src.data + off, n);
  };
  add(0, size_t{8} << 20);             // aligned memory at an aligned position
  add(1, 100);                         // small, off the block
  add(4096, (size_t{9} << 20) + 123);  // aligned memory, unaligned position
  add(3, size_t{5} << 20);
  // Back on a block boundary of the file, aligned memory again.
  const size_t pad = 4096 - expected.size() % 4096;
  add(7, pad);
  add(size_t{16} << 20, (size_t{3} << 20) + 5);
  add(11, 4095);
  f->start_writeback();
  f->sync();
  add(13, 77777);  // after the unaligned tail went out
  EXPECT_EQ(f->size(), expected.size());
  f->sync();
  f->close();
  EXPECT_EQ(env->read_file(path), expected);
}

class ScopedEnvVar {
 public:
  ScopedEnvVar(const char* name, const char* value) : name_(name) { ::setenv(name, value, 1); }
  ~ScopedEnvVar() { ::unsetenv(name_); }

 private:
  const char* name_;
};

}  // namespace direct

TEST(DirectWritableFileTest, SameBytesWhateverTheAlignment) {
  testing::TempDir tmp;
  direct::write_mixed(posix_env(), tmp.sub("f"));
  direct::write_mixed(memory_env(), "env_test_direct_" + std::to_string(::getpid()));
  clear_memory_checkpoints("env_test_direct_");
}

TEST(DirectWritableFileTest, AlignedBytesBypassThePageCache) {
  testing::TempDir tmp;
  direct::AlignedBytes src(size_t{16} << 20);
  const std::string path = tmp.sub("f");
  auto f = posix_env()->new_direct_writable_file(path);
  f->append(src.data, src.size);
  f->append(src.data + 1, 100);  // the tail: written without O_DIRECT
  f->sync();
  f->close();
  const size_t pages = (src.size + 100 + 4095) / 4096;
  // Only the tail's page went through the page cache (where the file system
  // takes O_DIRECT, as /tmp's ext4 here does).
  EXPECT_LE(direct::resident_pages(path), 2u) << "of " << pages;
  std::string expected(src.data, src.size);
  expected.append(src.data + 1, 100);
  EXPECT_EQ(posix_env()->read_file(path), expected);
}

TEST(DirectWritableFileTest, FileSystemThatRefusesODirectAtOpenOrAtAWrite) {
  for (const char* when : {"open", "write"}) {
    SCOPED_TRACE(when);
    direct::ScopedEnvVar refuse("DCP_TEST_DIRECT_IO_REFUSE", when);
    testing::TempDir tmp;
    direct::write_mixed(posix_env(), tmp.sub("f"));
    // Written through the page cache instead.
    direct::AlignedBytes src(size_t{4} << 20);
    auto f = posix_env()->new_direct_writable_file(tmp.sub("g"));
    f->append(src.data, src.size);
    f->sync();
    f->close();
    EXPECT_GT(direct::resident_pages(tmp.sub("g")), src.size / 4096 / 2);
    EXPECT_EQ(posix_env()->read_file(tmp.sub("g")), std::string(src.data, src.size));
  }
}

}  // namespace
}  // namespace dcp

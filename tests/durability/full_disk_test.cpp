// Full disks and I/O errors (issue 15, part 3).
//
// Every write operation of a save (creates, appends, fdatasyncs, closes,
// mkdirs, renames, directory syncs: counted by a dry run through a
// FaultInjectionEnv) is failed in turn with ENOSPC, EIO, a short write and
// EDQUOT, for sync and async manager saves and for dcp::save alone. Each
// failure must be a CheckpointError whose message names the path of the
// failed operation and the errno text; the checkpoints committed before
// must still be listed and load bit-exact, untouched; nothing of the failed
// save may pass for committed; and the same save, retried with the fault
// gone, must commit. Then on_error (warn: logged, training goes on; raise:
// thrown at the call, or at the next on_step for an async save) with a
// disk that stays full, and once a real full disk: a 4 MiB tmpfs the test
// mounts (skipped where mounting is not allowed).
//
// Prints `write_faults=N errors_named=N previous_intact=N retried=N` per
// mode, and `dcp::save: ...` likewise.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/mount.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/test_util.h"
#include "dcp/checkpoint.h"
#include "dcp/error.h"
#include "dcp/fault_injection_env.h"
#include "dcp/filesystem.h"
#include "dcp/logging.h"
#include "dcp/manager/manager.h"
#include "power_cut_series.h"

namespace dcp {
namespace manager {
namespace {

namespace fs = std::filesystem;
using power_cut::loads_exact;
using power_cut::series_options;
using power_cut::SeriesState;
using power_cut::step_dir;
using power_cut::tree_hash;

// What writing a checkpoint does to the file system.
constexpr FaultOp kWriteOps =
    FaultOp::kWrites | FaultOp::kMkdir | FaultOp::kRename | FaultOp::kSyncDir;

CheckpointManagerOptions disk_options(const std::string& dir, Env* env, bool async,
                                      OnError on_error, bool fsync = true) {
  CheckpointManagerOptions o = series_options(dir, env, async, fsync);
  o.keep.last = 100;  // retention deletes nothing here
  o.on_error = on_error;
  return o;
}

// A manager over a FaultInjectionEnv with steps 1 and 2 committed.
struct DiskRun {
  testing::TempDir tmp;
  std::string dir;
  FaultInjectionEnv env;
  std::shared_ptr<SeriesState> state = std::make_shared<SeriesState>(0);
  std::unique_ptr<CheckpointManager> m;
  std::map<int64_t, size_t> hashes;  // what steps 1 and 2 held once committed

  explicit DiskRun(bool async, OnError on_error = OnError::kRaise, Env* target = posix_env())
      : dir(tmp.sub("run")), env(target, tmp.sub("trash")) {
    env.set_forward_syncs(false);  // the syncs are counted and may fail; the disk is not cut
    m = std::make_unique<CheckpointManager>(disk_options(dir, &env, async, on_error));
    m->register_stateful("state", state);
    for (int64_t step : {1, 2}) {
      state->set(step);
      m->save(step);
      m->on_step(step);
    }
    m->wait();
    for (int64_t step : {1, 2}) hashes[step] = tree_hash(step_dir(dir, step));
  }
};

// How one save ended.
struct Attempt {
  bool thrown = false;
  bool checkpoint_error = false;
  std::string where;  // "save", "on_step" or "wait"
  std::string what;
};

// Saves `step` as a training loop does: save(), then on_step() and wait(),
// which surface an async save's failure.
Attempt save_step(CheckpointManager& m, SeriesState& state, int64_t step) {
  state.set(step);
  Attempt a;
  auto call = [&](const char* where, const std::function<void()>& fn) {
    if (a.thrown) return;
    try {
      fn();
    } catch (const CheckpointError& e) {
      a = {true, true, where, e.what()};
    } catch (const std::exception& e) {
      a = {true, false, where, e.what()};
    }
  };
  call("save", [&] { m.save(step); });
  call("on_step", [&] { m.on_step(step); });
  call("wait", [&] { m.wait(); });
  return a;
}

// The paths an operation's record names ("a -> b" for a rename).
std::vector<std::string> record_paths(const FaultRecord& r) {
  const auto arrow = r.path.find(" -> ");
  if (arrow == std::string::npos) return {r.path};
  return {r.path.substr(0, arrow), r.path.substr(arrow + 4)};
}

bool names_any(const std::string& what, const std::vector<std::string>& paths) {
  return std::any_of(paths.begin(), paths.end(),
                     [&](const std::string& p) { return what.find(p) != std::string::npos; });
}

// The n-th operation among `ops` of the records (the one fail_nth failed).
FaultRecord nth_op(const std::vector<FaultRecord>& records, FaultOp ops, uint64_t n) {
  for (const auto& r : records)
    if (any_of(ops, r.op) && n-- == 0) return r;
  return {};
}

uint64_t count_ops(const std::vector<FaultRecord>& records, FaultOp ops) {
  return std::count_if(records.begin(), records.end(),
                       [&](const FaultRecord& r) { return any_of(ops, r.op); });
}

std::string steps_of(const std::vector<CheckpointInfo>& committed) {
  std::string s;
  for (const auto& c : committed) s += (s.empty() ? "" : " ") + std::to_string(c.step);
  return "[" + s + "]";
}

// "" when steps 1 and 2 are listed committed, untouched and load bit-exact,
// and nothing of step 3 is in step_3's place; else what is wrong.
std::string previous_problem(const std::string& dir, const std::map<int64_t, size_t>& hashes) {
  std::ostringstream why;
  std::vector<int64_t> steps;
  for (const auto& c : list_committed(dir)) steps.push_back(c.step);
  if (steps != std::vector<int64_t>{1, 2})
    why << "committed: " << steps_of(list_committed(dir)) << ", expected [1 2]; ";
  for (const auto& [step, hash] : hashes) {
    std::string w;
    if (!loads_exact(step_dir(dir, step), step, 1, w))
      why << "step " << step << " does not load exact: " << w << "; ";
    if (tree_hash(step_dir(dir, step)) != hash) why << "step " << step << "'s files changed; ";
  }
  if (fs::exists(step_dir(dir, 3))) why << step_dir(dir, 3) << " exists; ";
  return why.str();
}

// True once `dir` holds no entry whose name starts with `prefix` (the
// manager deletes a failed save's .tmp directory in the background).
bool no_leftover(const std::string& dir, const std::string& prefix) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (;;) {
    bool found = false;
    for (const auto& e : fs::directory_iterator(dir))
      found = found || e.path().filename().string().rfind(prefix, 0) == 0;
    if (!found) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

std::string one_line(std::string s) {
  for (size_t i = 0; (i = s.find('\n', i)) != std::string::npos;) s.replace(i, 1, " | ");
  return s;
}

struct Totals {
  uint64_t faults = 0, named = 0, intact = 0, discarded = 0, retried = 0;
};

// One fault of the save of step 3.
void one_fault(bool async, FaultOp ops, uint64_t n, int err, bool short_write, Totals& t) {
  const std::string label = std::string(async ? "async" : "sync") + " " +
                            (short_write ? "short write" : errno_text(err)) + " at write op " +
                            std::to_string(n) + (ops == FaultOp::kAppend ? " (appends)" : "");
  DiskRun r(async);
  r.env.clear_records();
  r.env.fail_nth(ops, n, err, short_write);
  const Attempt a = save_step(*r.m, *r.state, 3);
  const auto records = r.env.records();
  r.env.disarm();
  const FaultRecord failed = nth_op(records, ops, n);
  t.faults++;
  ASSERT_FALSE(failed.path.empty()) << label << ": the save has fewer operations than the dry run";
  const std::string what = label + ", failed " + fault_op_name(failed.op) + " " + failed.path;
  EXPECT_TRUE(a.thrown) << what << ": the save did not fail";
  EXPECT_TRUE(a.checkpoint_error) << what << ": not a CheckpointError: " << a.what;
  if (!async) EXPECT_EQ(a.where, "save") << what;
  const int expect_err = short_write ? ENOSPC : err;
  const bool named = a.checkpoint_error && names_any(a.what, record_paths(failed)) &&
                     a.what.find(errno_text(expect_err)) != std::string::npos;
  EXPECT_TRUE(named) << what << ": the error does not name the path and '" << errno_text(expect_err)
                     << "': " << a.what;
  t.named += named;
  const std::string problem = previous_problem(r.dir, r.hashes);
  EXPECT_EQ(problem, "") << what;
  t.intact += problem.empty();
  const bool discarded = no_leftover(r.dir, ".tmp.step_0000000003.");
  EXPECT_TRUE(discarded) << what << ": the failed save's .tmp directory is still there";
  t.discarded += discarded;
  // The same save again, with the fault gone.
  const Attempt retry = save_step(*r.m, *r.state, 3);
  std::string why;
  const bool ok = !retry.thrown && steps_of(list_committed(r.dir)) == "[1 2 3]" &&
                  loads_exact(step_dir(r.dir, 3), 3, 1, why);
  EXPECT_TRUE(ok) << what << ": the retry of step 3: " << retry.what << " " << why
                  << " committed: " << steps_of(list_committed(r.dir));
  t.retried += ok;
}

class ManagerWriteFaultTest : public ::testing::TestWithParam<bool> {};

TEST_P(ManagerWriteFaultTest, EveryWriteOpFailsNamedAndLeavesPreviousCheckpointsIntact) {
  const bool async = GetParam();
  uint64_t count = 0, appends = 0;
  {
    DiskRun dry(async);
    dry.env.clear_records();
    const Attempt a = save_step(*dry.m, *dry.state, 3);
    ASSERT_FALSE(a.thrown) << a.what;
    const auto records = dry.env.records();
    count = count_ops(records, kWriteOps);
    appends = count_ops(records, FaultOp::kAppend);
  }
  ASSERT_GT(count, 10u);
  ASSERT_GT(appends, 0u);
  Totals t;
  for (uint64_t n = 0; n < count && !HasFatalFailure(); ++n)
    for (int err : {ENOSPC, EIO}) one_fault(async, kWriteOps, n, err, false, t);
  for (uint64_t n = 0; n < appends; ++n) one_fault(async, FaultOp::kAppend, n, ENOSPC, true, t);
  for (uint64_t n : {uint64_t{0}, count - 1}) one_fault(async, kWriteOps, n, EDQUOT, false, t);
  std::cout << (async ? "async" : "sync") << ": write_ops=" << count << " write_faults=" << t.faults
            << " errors_named=" << t.named << " previous_intact=" << t.intact
            << " tmp_discarded=" << t.discarded << " retried=" << t.retried << std::endl;
}

INSTANTIATE_TEST_SUITE_P(Modes, ManagerWriteFaultTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Async" : "Sync"; });

// Captures what dcp's logger writes while it lives.
class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(out_)) {
    dcp::logger().sinks().push_back(sink_);
  }
  ~LogCapture() {
    auto& sinks = dcp::logger().sinks();
    sinks.erase(std::remove(sinks.begin(), sinks.end(), sink_), sinks.end());
  }
  std::string text() {
    sink_->flush();
    return out_.str();
  }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

class OnErrorTest : public ::testing::TestWithParam<bool> {};

TEST_P(OnErrorTest, WarnLogsTrainingGoesOnAndTheNextSaveCommitsOnceSpaceIsBack) {
  const bool async = GetParam();
  DiskRun r(async, OnError::kWarn);
  LogCapture log;
  r.env.set_disk_full(true);
  const Attempt a = save_step(*r.m, *r.state, 3);
  EXPECT_FALSE(a.thrown) << a.where << ": " << a.what;
  for (int64_t step = 4; step <= 6; ++step) EXPECT_NO_THROW(r.m->on_step(step));
  const std::string text = log.text();
  EXPECT_NE(text.find("checkpoint of step 3 failed"), std::string::npos) << text;
  EXPECT_NE(text.find(errno_text(ENOSPC)), std::string::npos) << text;
  EXPECT_NE(text.find(r.dir), std::string::npos) << text;
  EXPECT_EQ(previous_problem(r.dir, r.hashes), "");
  r.env.set_disk_full(false);
  const Attempt next = save_step(*r.m, *r.state, 7);
  EXPECT_FALSE(next.thrown) << next.what;
  EXPECT_EQ(steps_of(list_committed(r.dir)), "[1 2 7]");
  std::string why;
  EXPECT_TRUE(loads_exact(step_dir(r.dir, 7), 7, 1, why)) << why;
}

TEST_P(OnErrorTest, RaiseThrowsAtTheCallOrTheNextOnStep) {
  const bool async = GetParam();
  DiskRun r(async, OnError::kRaise);
  r.env.set_disk_full(true);
  r.state->set(3);
  std::string where, what;
  try {
    r.m->save(3);
    // An async save fails in the background; the next on_step that finds
    // it finished throws.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    for (int64_t step = 4; std::chrono::steady_clock::now() < deadline; ++step) {
      where = "on_step";
      r.m->on_step(step);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    where = "nowhere";
  } catch (const CheckpointError& e) {
    if (where.empty()) where = "save";
    what = e.what();
  }
  EXPECT_EQ(where, async ? "on_step" : "save") << what;
  EXPECT_NE(what.find(errno_text(ENOSPC)), std::string::npos) << what;
  EXPECT_NE(what.find(r.dir), std::string::npos) << what;
  EXPECT_NO_THROW(r.m->wait());  // surfaced once
  EXPECT_EQ(previous_problem(r.dir, r.hashes), "");
  r.env.set_disk_full(false);
  const Attempt next = save_step(*r.m, *r.state, 3);
  EXPECT_FALSE(next.thrown) << next.what;
  EXPECT_EQ(steps_of(list_committed(r.dir)), "[1 2 3]");
  std::string why;
  EXPECT_TRUE(loads_exact(step_dir(r.dir, 3), 3, 1, why)) << why;
}

INSTANTIATE_TEST_SUITE_P(Modes, OnErrorTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Async" : "Sync"; });

// dcp::save alone, through a FileSystemWriter over the fault env.
TEST(DcpSaveWriteFaultTest, EveryWriteOpFailsNamedAndLeavesNoMetadata) {
  auto save_into = [](const std::string& path, Env* env, int64_t step) {
    auto s = std::make_shared<SeriesState>(0);
    s->set(step);
    StateDict sd{{"state", Value(std::static_pointer_cast<Stateful>(s))}};
    FileSystemWriterOptions wo;
    wo.env = env;
    SaveOptions so;
    so.checkpoint_id = path;
    so.storage_writer = make_filesystem_writer(path, wo);
    dcp::save(sd, so);
  };
  uint64_t count = 0;
  {
    testing::TempDir tmp;
    FaultInjectionEnv env(posix_env(), tmp.sub("trash"));
    env.set_forward_syncs(false);
    save_into(tmp.sub("ckpt"), &env, 3);
    count = count_ops(env.records(), kWriteOps);
  }
  ASSERT_GT(count, 5u);
  Totals t;
  uint64_t no_metadata = 0;
  for (uint64_t n = 0; n < count; ++n)
    for (int err : {ENOSPC, EIO}) {
      testing::TempDir tmp;
      const std::string path = tmp.sub("ckpt");
      FaultInjectionEnv env(posix_env(), tmp.sub("trash"));
      env.set_forward_syncs(false);
      env.fail_nth(kWriteOps, n, err);
      std::string what;
      bool checkpoint_error = false;
      try {
        save_into(path, &env, 3);
      } catch (const CheckpointError& e) {
        checkpoint_error = true;
        what = e.what();
      } catch (const std::exception& e) {
        what = e.what();
      }
      const FaultRecord failed = nth_op(env.records(), kWriteOps, n);
      env.disarm();
      const std::string label = errno_text(err) + " at write op " + std::to_string(n) + " (" +
                                fault_op_name(failed.op) + " " + failed.path + ")";
      t.faults++;
      EXPECT_TRUE(checkpoint_error) << label << ": " << what;
      const bool named = checkpoint_error && names_any(what, record_paths(failed)) &&
                         what.find(errno_text(err)) != std::string::npos;
      EXPECT_TRUE(named) << label << ": " << what;
      t.named += named;
      const bool clean = !fs::exists(path + "/.metadata") && !is_committed_checkpoint(path);
      EXPECT_TRUE(clean) << label << ": a .metadata is left: the failed save passes for committed";
      no_metadata += clean;
      // The same save again, fault gone, into the same directory.
      std::string why;
      try {
        save_into(path, &env, 3);
      } catch (const std::exception& e) {
        why = e.what();
      }
      const bool ok = why.empty() && loads_exact(path, 3, 1, why);
      EXPECT_TRUE(ok) << label << ": the retry: " << why;
      t.retried += ok;
    }
  std::cout << "dcp::save: write_ops=" << count << " write_faults=" << t.faults
            << " errors_named=" << t.named << " no_metadata_left=" << no_metadata
            << " retried=" << t.retried << std::endl;
}

// A real full disk: a 4 MiB tmpfs mounted by the test, filled up.
class SmallFileSystem {
 public:
  explicit SmallFileSystem(const std::string& path) : path_(path) {
    fs::create_directories(path_);
    if (::mount("tmpfs", path_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0700") != 0)
      error_ = errno;
  }
  ~SmallFileSystem() {
    if (error_ != 0) return;
    if (::umount2(path_.c_str(), 0) != 0) ::umount2(path_.c_str(), MNT_DETACH);
  }
  int error() const { return error_; }

  // Writes `file` until the file system has no space left; returns the errno
  // that stopped it.
  int fill(const std::string& file) {
    const int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return errno;
    std::vector<char> buf(64 << 10, 'x');
    int err = 0;
    for (;;) {
      const ssize_t n = ::write(fd, buf.data(), buf.size());
      if (n < 0) {
        err = errno;
        break;
      }
    }
    ::close(fd);
    return err;
  }
  // Bytes free for an unprivileged writer.
  uint64_t free_bytes() const {
    struct statvfs st {};
    if (::statvfs(path_.c_str(), &st) != 0) return 0;
    return static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  }

 private:
  std::string path_;
  int error_ = 0;
};

class RealFullDiskTest : public ::testing::TestWithParam<bool> {};

TEST_P(RealFullDiskTest, SaveFailsNamedPreviousIntactNextSaveCommitsWhenSpaceIsBack) {
  const bool async = GetParam();
  testing::TempDir tmp;
  const std::string small = tmp.sub("small");
  SmallFileSystem disk(small);  // unmounted before tmp is removed
  if (disk.error() != 0)
    GTEST_SKIP() << "cannot mount a 4 MiB tmpfs on " << small << ": " << errno_text(disk.error())
                 << " (mounting needs root with CAP_SYS_ADMIN, which this machine or container "
                    "does not give)";
  const std::string dir = small + "/run";
  CheckpointManager m(disk_options(dir, nullptr, async, OnError::kRaise));
  auto state = std::make_shared<SeriesState>(0);
  m.register_stateful("state", state);
  std::map<int64_t, size_t> hashes;
  for (int64_t step : {1, 2}) {
    const Attempt a = save_step(m, *state, step);
    ASSERT_FALSE(a.thrown) << a.what;
    hashes[step] = tree_hash(step_dir(dir, step));
  }
  const std::string filler = small + "/filler";
  ASSERT_EQ(disk.fill(filler), ENOSPC);
  // Two pages left: the save writes some of its files before it fails.
  fs::resize_file(filler, fs::file_size(filler) - 8192);
  const uint64_t free_before = disk.free_bytes();
  ASSERT_GT(free_before, 0u);
  const Attempt a = save_step(m, *state, 3);
  EXPECT_TRUE(a.thrown) << "the save fitted on a full disk";
  EXPECT_TRUE(a.checkpoint_error) << a.what;
  if (!async) EXPECT_EQ(a.where, "save");
  EXPECT_NE(a.what.find("No space left on device"), std::string::npos) << a.what;
  EXPECT_NE(a.what.find(dir + "/"), std::string::npos) << a.what;
  EXPECT_EQ(previous_problem(dir, hashes), "");
  // What the failed save wrote does not hold the space until the next start.
  EXPECT_TRUE(no_leftover(dir, ".tmp.step_0000000003."));
  const uint64_t free_after = disk.free_bytes();
  EXPECT_EQ(free_after, free_before) << "the failed save's files still hold the space";
  fs::remove(filler);
  const Attempt next = save_step(m, *state, 3);
  EXPECT_FALSE(next.thrown) << next.what;
  EXPECT_EQ(steps_of(list_committed(dir)), "[1 2 3]");
  std::string why;
  EXPECT_TRUE(loads_exact(step_dir(dir, 3), 3, 1, why)) << why;
  std::cout << (async ? "async" : "sync") << ": real full disk (4 MiB tmpfs): free before "
            << free_before << " B, after the failed save " << free_after
            << " B; error: " << one_line(a.what) << std::endl;
  m.close();
}

INSTANTIATE_TEST_SUITE_P(Modes, RealFullDiskTest, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "Async" : "Sync"; });

}  // namespace
}  // namespace manager
}  // namespace dcp

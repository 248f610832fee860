// Crash tests that really kill: the child (crash_child.cpp) trains and saves
// on a short interval; it is SIGKILLed at random moments across the phases
// of its saves, and a fresh process must then resume from the newest
// committed checkpoint, which loads and holds the state of its step.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <map>
#include <random>
#include <sstream>
#include <thread>

#include "common/test_util.h"
#include "dcp/manager/manager.h"

namespace dcp {
namespace manager {
namespace {

// A child process whose stdout lines are collected as they come.
class Child {
 public:
  explicit Child(std::vector<std::string> args) {
    int fds[2];
    if (::pipe(fds) != 0) throw std::runtime_error("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(fds[1], 1);
      ::close(fds[0]);
      ::close(fds[1]);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      std::_Exit(127);
    }
    ::close(fds[1]);
    fd_ = fds[0];
    ::fcntl(fd_, F_SETFL, O_NONBLOCK);
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      wait();
    }
    if (fd_ >= 0) ::close(fd_);
  }
  // Reads what is there (up to `ms` of waiting).
  void pump(int ms) {
    struct pollfd p {
      fd_, POLLIN, 0
    };
    if (::poll(&p, 1, ms) <= 0) return;
    char buf[4096];
    for (ssize_t n; (n = ::read(fd_, buf, sizeof buf)) > 0;) out_.append(buf, n);
  }
  // Pumps until a line starting with `prefix` is seen or `ms` pass.
  bool wait_for(const std::string& prefix, int ms) {
    for (int waited = 0; waited < ms; waited += 10) {
      if (has(prefix)) return true;
      pump(10);
    }
    return has(prefix);
  }
  bool has(const std::string& prefix) const {
    return out_.rfind(prefix, 0) == 0 || out_.find("\n" + prefix) != std::string::npos;
  }
  void signal(int s) { ::kill(pid_, s); }
  int wait() {
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    pump(0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  // Where the child was: the phase of its last "PHASE" line (an async save
  // goes on while "STEP" lines continue), or "train" between saves.
  std::string last_phase() const {
    std::istringstream in(out_);
    std::string line, phase = "start";
    while (std::getline(in, line)) {
      if (line.rfind("PHASE ", 0) == 0)
        phase = line.substr(6, line.find(' ', 6) - 6);
      else if (line.rfind("STEP ", 0) == 0 && phase == "retention")
        phase = "train";
    }
    return phase;
  }
  const std::string& output() const { return out_; }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  std::string out_;
};

// The newest committed checkpoint loads and holds its step's state.
void expect_resumable(const std::string& dir) {
  auto committed = list_committed(dir);
  ASSERT_FALSE(committed.empty()) << "no committed checkpoint survived";
  Child verify({DCP_CRASH_CHILD, dir, "1000", "0", "0", "0", "sync"});
  const int code = verify.wait();
  ASSERT_EQ(code, 0) << verify.output();
  EXPECT_TRUE(verify.has("RESUMED " + std::to_string(committed.back().step))) << verify.output();
}

TEST(CrashTest, SigkillAtRandomMomentsNeverLosesTheLastCommit) {
  testing::TempDir dir;
  const std::string ck = dir.sub("run");
  std::mt19937 rng(12345);
  std::map<std::string, int> kills_per_phase;
  const int kills = 32;
  for (int i = 0; i < kills; ++i) {
    // Saves every 2 steps; each save phase sleeps 15 ms, each step 3 ms.
    const bool had_commit = !list_committed(ck).empty();
    Child child({DCP_CRASH_CHILD, ck, "2", "15", "3", "100000"});
    ASSERT_TRUE(child.wait_for("RESUMED", 20000)) << child.output();
    if (had_commit) EXPECT_FALSE(child.has("RESUMED 0")) << "run " << i << " started over";
    // Three kills in four aim at a phase of a save (in turn: stage, write,
    // metadata, rename, retention), a random 0-12 ms after the child entered
    // it; the fourth comes at a random moment.
    static const char* kPhases[] = {"stage", "write", "metadata", "rename", "retention"};
    if (i % 4 != 3) {
      const std::string target = std::string("PHASE ") + kPhases[(i - i / 4) % 5];
      const size_t seen = child.output().size();
      for (int t = 0; t < 20000 && child.output().find(target, seen) == std::string::npos; t += 5)
        child.pump(5);
      const int delay = std::uniform_int_distribution<int>(0, 12)(rng);
      std::this_thread::sleep_for(std::chrono::milliseconds(delay));
    } else {
      const int delay = std::uniform_int_distribution<int>(30, 450)(rng);
      for (int t = 0; t < delay; t += 5) child.pump(5);
    }
    child.signal(SIGKILL);
    EXPECT_EQ(child.wait(), 128 + SIGKILL);
    kills_per_phase[child.last_phase()]++;
    if (!had_commit && list_committed(ck).empty()) continue;  // killed before the first commit
    expect_resumable(ck);
    ASSERT_FALSE(HasFailure()) << "after kill " << i << " in phase " << child.last_phase();
  }
  std::string report;
  for (const auto& [phase, n] : kills_per_phase) report += " " + phase + "=" + std::to_string(n);
  std::printf("kills per phase:%s\n", report.c_str());
  RecordProperty("kills_per_phase", report);
  // Every save phase was hit at least once.
  for (const char* phase : {"stage", "write", "metadata", "rename", "retention"})
    EXPECT_GE(kills_per_phase[phase], 1) << phase << " never hit:" << report;
}

TEST(CrashTest, SigtermSavesExitsCleanlyAndTheNextRunResumesThere) {
  testing::TempDir dir;
  const std::string ck = dir.sub("run");
  Child child({DCP_CRASH_CHILD, ck, "1000", "0", "20", "100000"});
  ASSERT_TRUE(child.wait_for("STEP 8", 20000)) << child.output();
  child.signal(SIGTERM);
  EXPECT_EQ(child.wait(), 0) << child.output();
  const std::string out = child.output();
  const auto pos = out.find("STOPPED ");
  ASSERT_NE(pos, std::string::npos) << out;
  const int64_t stopped = std::stoll(out.substr(pos + 8));
  EXPECT_GE(stopped, 8);
  auto committed = list_committed(ck);
  ASSERT_EQ(committed.size(), 1u);
  EXPECT_EQ(committed.back().step, stopped);
  Child next({DCP_CRASH_CHILD, ck, "1000", "0", "0", std::to_string(stopped + 3)});
  EXPECT_EQ(next.wait(), 0) << next.output();
  EXPECT_TRUE(next.has("RESUMED " + std::to_string(stopped))) << next.output();
  EXPECT_TRUE(next.has("DONE " + std::to_string(stopped + 3))) << next.output();
}

}  // namespace
}  // namespace manager
}  // namespace dcp

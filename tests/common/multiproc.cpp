// The multi-process harness: the parent side (run_ranks) and the child side
// (a GoogleTest listener that runs the worker named by DCP_WORKER).
#include "common/multiproc.h"

#include <torch/csrc/distributed/c10d/Store.hpp>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <stdexcept>
#include <thread>

extern char** environ;

namespace dcp {
namespace testing {

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr const char* kWorkerVar = "DCP_WORKER";
constexpr const char* kTimeoutVar = "DCP_WORKER_PG_TIMEOUT_MS";
constexpr const char* kArgCountVar = "DCP_WORKER_NARGS";
constexpr const char* kArgVarPrefix = "DCP_WORKER_ARG_";
constexpr const char* kMarkPrefix = "DCP_MARK ";
constexpr const char* kDoneKey = "dcp_harness/done";

std::map<std::string, WorkerFn>& registry() {
  static std::map<std::string, WorkerFn> workers;
  return workers;
}

// ---- child side --------------------------------------------------------------

std::string env_or(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : fallback;
}

// Every rank says its worker returned; rank 0 (the TCPStore server) waits,
// at most `timeout`, until all have, so that it does not take the store down
// under a rank that still uses it. Ranks that died never arrive.
void finish_together(dcp::dist::DistContext& ctx, milliseconds timeout, bool wait) {
  try {
    ctx.store()->add(kDoneKey, 1);
    if (ctx.rank() != 0 || !wait) return;
    const auto deadline = Clock::now() + timeout;
    while (ctx.store()->add(kDoneKey, 0) < ctx.world_size() && Clock::now() < deadline)
      std::this_thread::sleep_for(milliseconds(10));
  } catch (const std::exception&) {
    // The store is gone (rank 0 died): nothing to wait for.
  }
}

int run_worker_process(const std::string& name) {
  // Children write into pipes: line-buffer so output and marks appear live.
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const auto it = registry().find(name);
  if (it == registry().end()) {
    std::string known;
    for (const auto& kv : registry()) known += " " + kv.first;
    std::fprintf(stderr, "multiproc: %s='%s' is not a registered worker; registered:%s\n",
                 kWorkerVar, name.c_str(), known.empty() ? " (none)" : known.c_str());
    return kExitNoSuchWorker;
  }
  std::vector<std::string> args(std::stoi(env_or(kArgCountVar, "0")));
  for (size_t i = 0; i < args.size(); ++i)
    args[i] = env_or((kArgVarPrefix + std::to_string(i)).c_str(), "");

  dcp::dist::ProcessGroupOptions options;
  options.timeout = milliseconds(std::stoll(env_or(kTimeoutVar, "10000")));
  std::unique_ptr<dcp::dist::DistContext> ctx;
  try {
    ctx = dcp::dist::DistContext::init(dcp::dist::detect_environment(), options);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "multiproc: DistContext::init failed: %s\n", e.what());
    return kExitInitFailed;
  }

  int code;
  try {
    code = it->second(*ctx, args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "multiproc: worker '%s' threw: %s\n", name.c_str(), e.what());
    code = kExitWorkerThrew;
  } catch (...) {
    std::fprintf(stderr, "multiproc: worker '%s' threw a non-std exception\n", name.c_str());
    code = kExitWorkerThrew;
  }
  if (code == 0 && ::testing::UnitTest::GetInstance()->ad_hoc_test_result().Failed()) {
    std::fprintf(stderr, "multiproc: worker '%s' returned 0 but an EXPECT_* failed\n",
                 name.c_str());
    code = kExitExpectFailed;
  }
  finish_together(*ctx, options.timeout, code == 0);
  ctx.reset();
  return code;
}

// Runs in every process that links this file; in a worker child it takes
// over before the first test and never returns.
class WorkerDispatch : public ::testing::EmptyTestEventListener {
 public:
  void OnTestProgramStart(const ::testing::UnitTest&) override {
    const char* name = std::getenv(kWorkerVar);
    if (name == nullptr) return;
    const int code = run_worker_process(name);
    std::fflush(nullptr);
    // _Exit: skip static destructors (LibTorch's thread pools, gtest's own
    // report) in a process whose only product is its exit code and output.
    std::_Exit(code);
  }
};

[[maybe_unused]] const bool kDispatchInstalled = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new WorkerDispatch);
  return true;
}();

// ---- parent side -------------------------------------------------------------

std::string self_exe() {
  char buf[4096];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) throw std::runtime_error("multiproc: readlink(/proc/self/exe) failed");
  return std::string(buf, static_cast<size_t>(n));
}

// Environment of one child: ours, minus stale harness variables, plus `set`.
std::vector<std::string> child_environment(const std::map<std::string, std::string>& set) {
  std::vector<std::string> out;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    if (set.count(key) != 0 || key.rfind(kWorkerVar, 0) == 0) continue;
    out.push_back(kv);
  }
  for (const auto& kv : set) out.push_back(kv.first + "=" + kv.second);
  return out;
}

struct Child {
  RankResult result;
  int fd = -1;          // read end of the child's stdout+stderr pipe, -1 once closed
  std::string partial;  // output after the last newline
  bool reaped = false;
  Clock::time_point kill_at = Clock::time_point::max();
};

pid_t spawn(const std::string& exe, const std::vector<std::string>& environment, int& out_fd) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0)
    throw std::runtime_error(std::string("multiproc: pipe2: ") + std::strerror(errno));
  // Everything the child touches after fork is prepared here: between fork and
  // exec only async-signal-safe calls are allowed.
  std::vector<char*> argv{const_cast<char*>(exe.c_str()), nullptr};
  std::vector<char*> envp;
  for (const auto& kv : environment) envp.push_back(const_cast<char*>(kv.c_str()));
  envp.push_back(nullptr);
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("multiproc: fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);  // the parent died before prctl
    const int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, 0);
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    ::execve(exe.c_str(), argv.data(), envp.data());
    static const char msg[] = "multiproc: execve failed\n";
    [[maybe_unused]] auto ignored = ::write(2, msg, sizeof msg - 1);
    ::_exit(127);
  }
  ::close(fds[1]);
  ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  out_fd = fds[0];
  return pid;
}

void emit_line(Child& c, const std::string& line, const RunOptions& options) {
  std::string text = "[rank " + std::to_string(c.result.rank) + "] " + line + "\n";
  std::fputs(text.c_str(), stderr);
  c.result.output += line + "\n";
  if (c.result.rank == options.kill_rank && !options.kill_at_mark.empty() &&
      line == kMarkPrefix + options.kill_at_mark && c.kill_at == Clock::time_point::max())
    c.kill_at = Clock::now() + options.kill_delay;
}

// Reads what is available; closes the fd at end of file.
void drain(Child& c, const RunOptions& options) {
  char buf[65536];
  for (;;) {
    const ssize_t n = ::read(c.fd, buf, sizeof buf);
    if (n > 0) {
      c.partial.append(buf, static_cast<size_t>(n));
      size_t nl;
      while ((nl = c.partial.find('\n')) != std::string::npos) {
        emit_line(c, c.partial.substr(0, nl), options);
        c.partial.erase(0, nl + 1);
      }
      continue;
    }
    if (n < 0 && (errno == EINTR)) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    // End of file (or an error: treat it alike).
    if (!c.partial.empty()) emit_line(c, c.partial, options);
    c.partial.clear();
    ::close(c.fd);
    c.fd = -1;
    return;
  }
}

void reap(Child& c, int status, Clock::time_point start) {
  c.reaped = true;
  c.result.elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
  if (WIFEXITED(status)) {
    c.result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    c.result.exit_code = -1;
    c.result.term_signal = WTERMSIG(status);
  }
}

void kill_child(Child& c) {
  if (c.reaped) return;
  ::kill(c.result.pid, SIGKILL);
  c.result.killed_by_harness = true;
}

bool port_conflict(const Child& c) {
  return c.reaped && c.result.exit_code == kExitInitFailed &&
         c.result.output.find("ddress already in use") != std::string::npos;
}

// One attempt; `conflict` is set when rank 0 lost its port and the rest were stopped.
RunResult run_once(int world_size, const std::string& worker, const RunOptions& options,
                   bool stop_on_conflict, bool& conflict) {
  conflict = false;
  RunResult run;
  run.master_port = free_port();
  const std::string exe = self_exe();
  const auto start = Clock::now();
  const auto deadline = start + options.timeout;

  std::vector<Child> children(static_cast<size_t>(world_size));
  for (int r = 0; r < world_size; ++r) {
    std::map<std::string, std::string> vars{
        {"RANK", std::to_string(r)},
        {"WORLD_SIZE", std::to_string(world_size)},
        {"LOCAL_RANK", std::to_string(r)},
        {"MASTER_ADDR", "127.0.0.1"},
        {"MASTER_PORT", std::to_string(run.master_port)},
        {kWorkerVar, worker},
        {kTimeoutVar, std::to_string(options.pg_timeout.count())},
        {kArgCountVar, std::to_string(options.args.size())},
    };
    for (size_t i = 0; i < options.args.size(); ++i)
      vars[kArgVarPrefix + std::to_string(i)] = options.args[i];
    for (const auto& kv : options.env) vars[kv.first] = kv.second;
    Child& c = children[static_cast<size_t>(r)];
    c.result.rank = r;
    c.result.pid = spawn(exe, child_environment(vars), c.fd);
    if (r == options.kill_rank && options.kill_at_mark.empty())
      c.kill_at = start + options.kill_delay;
  }

  for (;;) {
    std::vector<pollfd> pfds;
    std::vector<Child*> owners;
    for (auto& c : children)
      if (c.fd >= 0) {
        pfds.push_back({c.fd, POLLIN, 0});
        owners.push_back(&c);
      }
    if (!pfds.empty()) {
      ::poll(pfds.data(), pfds.size(), 20);
      for (size_t i = 0; i < pfds.size(); ++i)
        if (pfds[i].revents != 0) drain(*owners[i], options);
    } else {
      std::this_thread::sleep_for(milliseconds(5));
    }

    bool all_reaped = true;
    for (auto& c : children) {
      if (c.reaped) continue;
      int status = 0;
      if (::waitpid(c.result.pid, &status, WNOHANG) == c.result.pid) {
        reap(c, status, start);
        if (c.fd >= 0) drain(c, options);
      } else {
        all_reaped = false;
      }
    }
    const auto now = Clock::now();
    for (auto& c : children)
      if (!c.reaped && now >= c.kill_at) {
        kill_child(c);
        c.kill_at = Clock::time_point::max();
      }
    if (stop_on_conflict && !conflict && port_conflict(children[0])) {
      conflict = true;
      for (auto& c : children) kill_child(c);
    }
    if (!run.timed_out && now >= deadline && !all_reaped) {
      run.timed_out = true;
      std::fprintf(stderr, "multiproc: deadline of %lld s reached; killing every rank\n",
                   static_cast<long long>(options.timeout.count()));
      for (auto& c : children) kill_child(c);
    }
    if (all_reaped) {
      // A grandchild may still hold a pipe open: give it a moment, then stop reading.
      const auto grace = now + milliseconds(500);
      for (auto& c : children)
        while (c.fd >= 0) {
          pollfd p{c.fd, POLLIN, 0};
          ::poll(&p, 1, 20);
          drain(c, options);
          if (Clock::now() > grace && c.fd >= 0) {
            ::close(c.fd);
            c.fd = -1;
          }
        }
      break;
    }
  }
  run.elapsed = std::chrono::duration_cast<milliseconds>(Clock::now() - start);
  for (auto& c : children) run.ranks.push_back(std::move(c.result));
  return run;
}

}  // namespace

bool register_worker(const char* name, WorkerFn fn) {
  if (!registry().emplace(name, fn).second) {
    std::fprintf(stderr, "multiproc: worker '%s' is registered twice\n", name);
    std::abort();
  }
  return true;
}

void mark(const std::string& tag) {
  std::fprintf(stdout, "%s%s\n", kMarkPrefix, tag.c_str());
  std::fflush(stdout);
}

bool RunResult::ok() const {
  if (timed_out || ranks.empty()) return false;
  for (const auto& r : ranks)
    if (!r.ok()) return false;
  return true;
}

std::string RunResult::summary() const {
  std::string s = std::to_string(ranks.size()) + " ranks on port " + std::to_string(master_port) +
                  ", " + std::to_string(elapsed.count()) + " ms" +
                  (timed_out ? ", DEADLINE REACHED" : "") + "\n";
  for (const auto& r : ranks) {
    s += "  rank " + std::to_string(r.rank) + " (pid " + std::to_string(r.pid) + "): ";
    if (r.term_signal != 0)
      s += std::string("killed by signal ") + std::to_string(r.term_signal) + " (" +
           strsignal(r.term_signal) + ")" + (r.killed_by_harness ? " from the harness" : "");
    else
      s += "exit " + std::to_string(r.exit_code);
    s += " after " + std::to_string(r.elapsed.count()) + " ms\n";
    if (!r.ok()) {
      // The last lines say why.
      std::vector<std::string> lines;
      size_t pos = 0;
      while (pos < r.output.size()) {
        const size_t nl = r.output.find('\n', pos);
        lines.push_back(r.output.substr(pos, nl == std::string::npos ? nl : nl - pos));
        if (nl == std::string::npos) break;
        pos = nl + 1;
      }
      const size_t keep = 15;
      for (size_t i = lines.size() > keep ? lines.size() - keep : 0; i < lines.size(); ++i)
        s += "    | " + lines[i] + "\n";
    }
  }
  return s;
}

RunResult run_ranks(int world_size, const std::string& worker, const RunOptions& options) {
  if (std::getenv(kWorkerVar) != nullptr)
    throw std::logic_error(
        "multiproc: run_ranks called inside worker process (DCP_WORKER is set): the "
        "worker dispatch did not run; is RUN_ALL_TESTS() called?");
  if (world_size < 1)
    throw std::invalid_argument("multiproc: world_size=" + std::to_string(world_size) +
                                " must be at least 1");
  bool conflict = false;
  RunResult run = run_once(world_size, worker, options, options.retry_port_conflict, conflict);
  if (conflict) {
    std::fprintf(stderr, "multiproc: port %d was taken before rank 0 bound it; once more\n",
                 run.master_port);
    run = run_once(world_size, worker, options, false, conflict);
  }
  return run;
}

int run_ranks(int world_size, const std::string& worker, std::chrono::seconds timeout,
              std::vector<std::string> extra_args) {
  RunOptions options;
  options.timeout = timeout;
  options.args = std::move(extra_args);
  const RunResult run = run_ranks(world_size, worker, options);
  if (run.ok()) return 0;
  std::fprintf(stderr, "multiproc: worker '%s' failed:\n%s", worker.c_str(), run.summary().c_str());
  if (run.timed_out) return 124;
  for (const auto& r : run.ranks)
    if (!r.ok()) return r.term_signal != 0 ? 128 + r.term_signal : r.exit_code;
  return 1;
}

int free_port() {
  // A port below the kernel's ephemeral range is never handed out to an
  // outgoing connection or a bind(0) (Gloo binds its pairs that way), so
  // only another harness picking the same number at random can race us.
  int eph_lo = 32768, eph_hi = 60999;
  std::ifstream range("/proc/sys/net/ipv4/ip_local_port_range");
  range >> eph_lo >> eph_hi;
  std::mt19937 rng(static_cast<unsigned>(::getpid()) ^
                   static_cast<unsigned>(Clock::now().time_since_epoch().count()));
  std::uniform_int_distribution<int> pick(20000, 32000);
  const auto try_bind = [](int port) {
    const int s = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0) return -1;
    const int one = 1;
    ::setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);  // as TCPStore does
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_ANY);  // the TCPStore server binds every address
    addr.sin_port = htons(static_cast<uint16_t>(port));
    int got = -1;
    if (::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      socklen_t len = sizeof addr;
      if (::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len) == 0)
        got = ntohs(addr.sin_port);
    }
    ::close(s);
    return got;
  };
  for (int i = 0; i < 200; ++i) {
    const int port = pick(rng);
    if (port >= eph_lo && port <= eph_hi) continue;
    if (try_bind(port) == port) return port;
  }
  const int port = try_bind(0);
  if (port <= 0) throw std::runtime_error("multiproc: no free TCP port on 127.0.0.1");
  return port;
}

}  // namespace testing
}  // namespace dcp

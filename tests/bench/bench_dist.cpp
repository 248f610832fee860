// Distributed benchmark, from one run:
//   - aggregate save throughput with 2 ranks against 1 rank on the same data
//     (the same global tensors; at 2 ranks each rank holds half of every one),
//     in alternating order (virtual disks favour whoever writes first);
//   - planning cost with --tensors tensors (default 100,000) sharded over 4
//     ranks: the first round (local plans, gather, global plan, scatter) and
//     the commit round (results, metadata), --repeats times (medians).
//
//   dcp_bench_dist [--dir D] [--mib N] [--tensors N] [--repeats N]
//
// The program starts its own ranks (itself, with RANK/WORLD_SIZE/MASTER_* set,
// over Gloo on loopback) and ends with one `name=value` line per figure.
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "dcp/dcp.h"
#include "dcp/torch/process_group.h"

namespace {

using Clock = std::chrono::steady_clock;

double secs_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void run(const std::string& cmd) {
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "command failed: %s\n", cmd.c_str());
    std::exit(1);
  }
}

// ---- the ranks -------------------------------------------------------------

int rank_main(const std::string& role, const std::string& dir, int64_t mib, int64_t tensors) {
  spdlog::set_level(spdlog::level::warn);
  dcp::logger().set_level(spdlog::level::warn);
  auto ctx = dcp::dist::DistContext::init(dcp::dist::detect_environment());
  auto coll = ctx->collectives();
  const int rank = ctx->rank(), world = ctx->world_size();
  auto barrier = [&] { coll->broadcast("", 0); };

  if (role == "throughput") {
    // 64 global tensors of mib/64 MiB; this rank holds rows [r*n/w, (r+1)*n/w).
    const int64_t rows = 1024, cols = mib * (int64_t{1} << 20) / 4 / 64 / rows;
    dcp::StateDict sd;
    for (int i = 0; i < 64; ++i) {
      const int64_t lo = rows * rank / world, hi = rows * (rank + 1) / world;
      sd["layer" + std::to_string(i)] =
          dcp::ShardedTensor{{rows, cols}, {dcp::Shard{at::rand({hi - lo, cols}), {lo, 0}}}};
    }
    double timed = 0;
    for (int i = 0; i < 2; ++i) {  // the first save warms up (threads, page cache)
      const std::string ck = dir + "/tp" + std::to_string(i);
      barrier();
      auto t0 = Clock::now();
      dcp::SaveOptions so;
      so.checkpoint_id = ck;
      so.collectives = coll;
      dcp::save(sd, so);
      barrier();
      timed = secs_since(t0);
      if (rank == 0) run("rm -rf '" + ck + "'");
    }
    if (rank == 0) std::printf("RESULT save_seconds=%.6f\n", timed);
  } else {
    // `tensors` global [4, 8] float tensors, each sharded by rows over the ranks.
    dcp::StateDict sd;
    for (int64_t i = 0; i < tensors; ++i)
      sd["model.block" + std::to_string(i / 100) + ".param" + std::to_string(i % 100)] =
          dcp::ShardedTensor{{4 * world, 8}, {dcp::Shard{at::rand({4, 8}), {4 * rank, 0}}}};
    dcp::SaveStats stats;
    dcp::SaveOptions so;
    so.checkpoint_id = dir + "/plan";
    so.collectives = coll;
    so.stats = &stats;
    barrier();
    dcp::Metadata md = dcp::save(sd, so);
    // Payloads grow with items, not bytes: the metadata per item.
    if (rank == 0) {
      std::string bytes = dcp::serialize_metadata(md);
      std::printf(
          "RESULT plan_seconds=%.6f\nRESULT finish_seconds=%.6f\nRESULT write_seconds=%.6f\n"
          "RESULT items=%zu\nRESULT metadata_bytes=%zu\n",
          stats.plan_seconds, stats.finish_seconds, stats.write_seconds, md.storage_data.size(),
          bytes.size());
      run("rm -rf '" + dir + "/plan'");
    }
    barrier();
  }
  return 0;
}

// ---- the driver ------------------------------------------------------------

int free_port() {
  static int next = 20000 + static_cast<int>(::getpid() % 20000);
  return next++;
}

// Starts `world` ranks of this program with `role`; returns rank 0's RESULT lines.
std::map<std::string, double> launch(int world, const std::string& role,
                                     const std::vector<std::string>& args) {
  const int port = free_port();
  std::vector<pid_t> pids;
  int pipefd[2];
  if (::pipe(pipefd) != 0) std::exit(1);
  for (int r = 0; r < world; ++r) {
    pid_t pid = ::fork();
    if (pid == 0) {
      if (r == 0) ::dup2(pipefd[1], 1);
      ::close(pipefd[0]);
      ::close(pipefd[1]);
      ::setenv("RANK", std::to_string(r).c_str(), 1);
      ::setenv("LOCAL_RANK", std::to_string(r).c_str(), 1);
      ::setenv("WORLD_SIZE", std::to_string(world).c_str(), 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      ::setenv("DCP_BENCH_ROLE", role.c_str(), 1);
      std::vector<char*> argv{const_cast<char*>("/proc/self/exe")};
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv("/proc/self/exe", argv.data());
      std::_Exit(127);
    }
    pids.push_back(pid);
  }
  ::close(pipefd[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(pipefd[0], buf, sizeof buf)) > 0;) out.append(buf, n);
  ::close(pipefd[0]);
  for (pid_t p : pids) {
    int status = 0;
    ::waitpid(p, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::fprintf(stderr, "a rank of '%s' failed\n", role.c_str());
      std::exit(1);
    }
  }
  std::map<std::string, double> results;
  std::istringstream in(out);
  for (std::string line; std::getline(in, line);)
    if (line.rfind("RESULT ", 0) == 0) {
      auto eq = line.find('=');
      results[line.substr(7, eq - 7)] = std::stod(line.substr(eq + 1));
    }
  return results;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "/tmp/dcp_bench_dist";
  int64_t mib = 1024, tensors = 100000;
  int repeats = 3;
  std::vector<std::string> passthrough;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    passthrough.push_back(k);
    passthrough.push_back(v);
    if (k == "--dir")
      dir = v;
    else if (k == "--mib")
      mib = std::stoll(v);
    else if (k == "--tensors")
      tensors = std::stoll(v);
    else if (k == "--repeats")
      repeats = std::stoi(v);
    else {
      std::fprintf(stderr,
                   "usage: dcp_bench_dist [--dir D] [--mib N] [--tensors N] [--repeats N]\n");
      return 2;
    }
  }
  if (const char* role = std::getenv("DCP_BENCH_ROLE")) return rank_main(role, dir, mib, tensors);

  run("rm -rf '" + dir + "' && mkdir -p '" + dir + "'");
  std::printf(
      "dcp++ distributed benchmark: %lld MiB, %d repeats (medians); %lld tensors on 4 ranks\n",
      static_cast<long long>(mib), repeats, static_cast<long long>(tensors));
  std::vector<double> one, two;
  for (int r = 0; r < repeats; ++r) {
    for (int world : (r % 2 == 0 ? std::vector<int>{1, 2} : std::vector<int>{2, 1})) {
      double s = launch(world, "throughput", passthrough).at("save_seconds");
      (world == 1 ? one : two).push_back(s);
    }
  }
  const double gb = mib * 1048576.0 / 1e9;
  const double t1 = gb / median(one), t2 = gb / median(two);
  // The planning save, `repeats` times (fresh processes each): medians.
  std::map<std::string, std::vector<double>> runs;
  for (int r = 0; r < repeats; ++r)
    for (const auto& [k, v] : launch(4, "plan", passthrough)) runs[k].push_back(v);
  std::map<std::string, double> plan;
  for (const auto& [k, v] : runs) plan[k] = median(v);
  std::printf("  save, 1 rank:  %.3f GB/s\n  save, 2 ranks: %.3f GB/s aggregate (%.2fx)\n", t1, t2,
              t2 / t1);
  std::printf(
      "  %lld tensors x 4 shards on 4 ranks: plan %.3f s, write %.3f s, commit %.3f s; "
      "metadata %.1f MiB (%.0f bytes per item)\n",
      static_cast<long long>(tensors), plan.at("plan_seconds"), plan.at("write_seconds"),
      plan.at("finish_seconds"), plan.at("metadata_bytes") / 1048576.0,
      plan.at("metadata_bytes") / plan.at("items"));
  std::printf("\nsave_gbps_1rank=%.3f\nsave_gbps_2ranks=%.3f\nsave_2ranks_vs_1rank=%.3f\n", t1, t2,
              t2 / t1);
  std::printf(
      "plan_seconds_100k_4ranks=%.3f\ncommit_seconds_100k_4ranks=%.3f\nitems_100k_4ranks=%.0f\n",
      plan.at("plan_seconds"), plan.at("finish_seconds"), plan.at("items"));
  run("rm -rf '" + dir + "'");
  return 0;
}

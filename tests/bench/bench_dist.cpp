// Distributed benchmark, from one run:
//   - aggregate save throughput with 2 ranks against 1 rank on the same data
//     (the same global tensors; at 2 ranks each rank holds half of every one),
//     in alternating order (virtual disks favour whoever writes first);
//   - planning cost with --tensors tensors (default 100,000) sharded over 4
//     ranks: the first round (local plans, gather, global plan, scatter) and
//     the commit round (results, metadata), until the slowest rank is
//     through; for the first save of fresh processes, for a second save
//     in the same processes, for a third that returns the whole metadata on
//     every rank (SaveOptions::metadata_on_every_rank; by default only the
//     coordinator gets it), and for a first save with glibc's malloc on
//     transparent huge pages; --repeats times (medians);
//   - the replica check's cost: 2 ranks that hold the same state (data
//     parallel: --mib MiB in 64 tensors and 10,000 small ones) save with
//     check_replicas error and off, alternating (medians).
//
//   dcp_bench_dist [--dir D] [--mib N] [--tensors N] [--repeats N] [--debug 1]
//
// --debug 1 logs each rank's time in each phase of the collective rounds.
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
#include "dcp/dist/process_group.h"

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

int rank_main(const std::string& role, const std::string& dir, int64_t mib, int64_t tensors,
              bool debug) {
  spdlog::set_level(spdlog::level::warn);
  dcp::logger().set_level(debug ? spdlog::level::debug : spdlog::level::warn);
  auto ctx = dcp::dist::DistContext::init(dcp::dist::detect_environment());
  auto coll = ctx->collectives();
  const int rank = ctx->rank(), world = ctx->world_size();
  auto barrier = [&] { coll->broadcast("", 0); };
  // Saves `sd` twice (the first warms up threads and the page cache); the
  // second's seconds, until every rank is through.
  auto timed_save = [&](const dcp::StateDict& sd, const std::string& prefix,
                        std::shared_ptr<dcp::SavePlanner> planner) {
    double timed = 0;
    for (int i = 0; i < 2; ++i) {
      const std::string ck = prefix + std::to_string(i);
      barrier();
      auto t0 = Clock::now();
      dcp::SaveOptions so;
      so.checkpoint_id = ck;
      so.collectives = coll;
      so.planner = planner;
      dcp::save(sd, so);
      barrier();
      timed = secs_since(t0);
      if (rank == 0) run("rm -rf '" + ck + "'");
    }
    return timed;
  };

  if (role == "replicas") {
    // Data parallel: every rank holds the same 64 tensors of mib/64 MiB and
    // 10,000 small ones; dedup writes each once, the replica check compares
    // the copies (DCP_BENCH_CHECK: error or off).
    at::manual_seed(1);  // the same values on every rank
    dcp::StateDict sd;
    const int64_t numel = mib * (int64_t{1} << 20) / 4 / 64;
    for (int i = 0; i < 64; ++i) sd["layer" + std::to_string(i)] = at::rand({numel});
    for (int i = 0; i < 10000; ++i) sd["small" + std::to_string(i)] = at::rand({16});
    dcp::SavePlannerOptions po;
    po.check_replicas = dcp::replica_check_from_name(std::getenv("DCP_BENCH_CHECK"));
    const double timed =
        timed_save(sd, dir + "/rep", std::make_shared<dcp::DefaultSavePlanner>(po));
    if (rank == 0) std::printf("RESULT save_seconds=%.6f\n", timed);
  } else if (role == "throughput") {
    // 64 global tensors of mib/64 MiB; this rank holds rows [r*n/w, (r+1)*n/w).
    const int64_t rows = 1024, cols = mib * (int64_t{1} << 20) / 4 / 64 / rows;
    dcp::StateDict sd;
    for (int i = 0; i < 64; ++i) {
      const int64_t lo = rows * rank / world, hi = rows * (rank + 1) / world;
      sd["layer" + std::to_string(i)] =
          dcp::ShardedTensor{{rows, cols}, {dcp::Shard{at::rand({hi - lo, cols}), {lo, 0}}}};
    }
    const double timed = timed_save(sd, dir + "/tp", nullptr);
    if (rank == 0) std::printf("RESULT save_seconds=%.6f\n", timed);
  } else {
    // `tensors` global [4, 8] float tensors, each sharded by rows over the ranks.
    dcp::StateDict sd;
    for (int64_t i = 0; i < tensors; ++i)
      sd["model.block" + std::to_string(i / 100) + ".param" + std::to_string(i % 100)] =
          dcp::ShardedTensor{{4 * world, 8}, {dcp::Shard{at::rand({4, 8}), {4 * rank, 0}}}};
    // Twice in this process: the first save pays for fresh memory (page
    // faults are most of it here); later saves of a training run reuse it.
    // A phase ends when the slowest rank is through it: the maxima over ranks.
    // A third save has every rank return the whole metadata
    // (SaveOptions::metadata_on_every_rank), as the second save otherwise.
    for (int i = 0; i < 3; ++i) {
      dcp::SaveStats stats;
      dcp::SaveOptions so;
      so.checkpoint_id = dir + "/plan" + std::to_string(i);
      so.collectives = coll;
      so.stats = &stats;
      so.metadata_on_every_rank = i == 2;
      barrier();
      dcp::Metadata md = dcp::save(sd, so);
      std::vector<std::string> all = coll->gather(
          std::to_string(stats.plan_seconds) + " " + std::to_string(stats.finish_seconds), 0);
      if (rank == 0) {
        double plan = 0, commit = 0;
        for (const auto& s : all) {
          std::istringstream in(s);
          double p = 0, c = 0;
          in >> p >> c;
          plan = std::max(plan, p);
          commit = std::max(commit, c);
        }
        const char* when = i == 0 ? "first" : i == 1 ? "second" : "every_rank";
        std::printf("RESULT plan_seconds_%s=%.6f\nRESULT finish_seconds_%s=%.6f\n", when, plan,
                    when, commit);
        // Payloads grow with items, not bytes: the metadata per item.
        std::printf("RESULT items=%zu\nRESULT metadata_bytes=%zu\n", md.storage_data.size(),
                    dcp::serialize_metadata(md).size());
        run("rm -rf '" + so.checkpoint_id + "'");
      }
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
                                     const std::vector<std::string>& args,
                                     const char* glibc_tunables = nullptr,
                                     const char* check = "error") {
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
      if (glibc_tunables) ::setenv("GLIBC_TUNABLES", glibc_tunables, 1);
      ::setenv("DCP_BENCH_CHECK", check, 1);
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
  bool debug = false;
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
    else if (k == "--debug")
      debug = v == "1";
    else {
      std::fprintf(stderr,
                   "usage: dcp_bench_dist [--dir D] [--mib N] [--tensors N] [--repeats N] "
                   "[--debug 1]\n");
      return 2;
    }
  }
  if (const char* role = std::getenv("DCP_BENCH_ROLE"))
    return rank_main(role, dir, mib, tensors, debug);

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
  // The replica check on 2 ranks that hold the same state: with and without.
  std::vector<double> checked, unchecked;
  for (int r = 0; r < repeats; ++r)
    for (const char* check : (r % 2 == 0 ? std::vector<const char*>{"error", "off"}
                                         : std::vector<const char*>{"off", "error"})) {
      double s = launch(2, "replicas", passthrough, nullptr, check).at("save_seconds");
      (std::string(check) == "error" ? checked : unchecked).push_back(s);
    }
  // The planning save, `repeats` times (fresh processes each): medians. And
  // the same with glibc's malloc asking for transparent huge pages (what a
  // user can set, GLIBC_TUNABLES=glibc.malloc.hugetlb=1): a first save is
  // mostly page faults of fresh memory here.
  std::map<std::string, std::vector<double>> runs, thp_runs;
  for (int r = 0; r < repeats; ++r) {
    for (const auto& [k, v] : launch(4, "plan", passthrough)) runs[k].push_back(v);
    for (const auto& [k, v] : launch(4, "plan", passthrough, "glibc.malloc.hugetlb=1"))
      thp_runs[k].push_back(v);
  }
  std::map<std::string, double> plan, thp;
  for (const auto& [k, v] : runs) plan[k] = median(v);
  for (const auto& [k, v] : thp_runs) thp[k] = median(v);
  std::printf("  save, 1 rank:  %.3f GB/s\n  save, 2 ranks: %.3f GB/s aggregate (%.2fx)\n", t1, t2,
              t2 / t1);
  std::printf(
      "  %lld tensors x 4 shards on 4 ranks: plan %.3f s, commit %.3f s (first save of the "
      "processes);\n    plan %.3f s, commit %.3f s (second save); metadata %.1f MiB (%.0f bytes "
      "per item)\n",
      static_cast<long long>(tensors), plan.at("plan_seconds_first"),
      plan.at("finish_seconds_first"), plan.at("plan_seconds_second"),
      plan.at("finish_seconds_second"), plan.at("metadata_bytes") / 1048576.0,
      plan.at("metadata_bytes") / plan.at("items"));
  std::printf(
      "    commit %.3f s with the whole metadata returned on every rank "
      "(metadata_on_every_rank, a third save)\n",
      plan.at("finish_seconds_every_rank"));
  std::printf(
      "    with GLIBC_TUNABLES=glibc.malloc.hugetlb=1: plan %.3f s, commit %.3f s (first save)\n",
      thp.at("plan_seconds_first"), thp.at("finish_seconds_first"));
  std::printf(
      "  replicated state on 2 ranks (%lld MiB in 64 tensors + 10,000 small, each written once): "
      "save %.3f s with the replica check, %.3f s without\n",
      static_cast<long long>(mib), median(checked), median(unchecked));
  std::printf("\nsave_gbps_1rank=%.3f\nsave_gbps_2ranks=%.3f\nsave_2ranks_vs_1rank=%.3f\n", t1, t2,
              t2 / t1);
  std::printf(
      "replicated_save_seconds_checked=%.3f\nreplicated_save_seconds_unchecked=%.3f\n"
      "replica_check_cost_ratio=%.3f\n",
      median(checked), median(unchecked), median(checked) / median(unchecked));
  std::printf(
      "plan_seconds_100k_4ranks=%.3f\ncommit_seconds_100k_4ranks=%.3f\n"
      "plan_seconds_100k_4ranks_second_save=%.3f\ncommit_seconds_100k_4ranks_second_save=%.3f\n"
      "commit_seconds_100k_4ranks_metadata_on_every_rank=%.3f\n"
      "plan_seconds_100k_4ranks_malloc_thp=%.3f\ncommit_seconds_100k_4ranks_malloc_thp=%.3f\n"
      "items_100k_4ranks=%.0f\n",
      plan.at("plan_seconds_first"), plan.at("finish_seconds_first"),
      plan.at("plan_seconds_second"), plan.at("finish_seconds_second"),
      plan.at("finish_seconds_every_rank"), thp.at("plan_seconds_first"),
      thp.at("finish_seconds_first"), plan.at("items"));
  run("rm -rf '" + dir + "'");
  return 0;
}

// Async save benchmark, for the 2 GiB "large" state dict by default:
//   - a synchronous dcp::save (fsync on), the reference for the rest;
//   - the reservation of the staging buffers (AsyncSaver::reserve, done
//     before the first save, as CheckpointManager::resume() does), then the
//     blocking time of the first AsyncSaver::save() and of later ones (warm
//     buffers), against a plain parallel memcpy of the same bytes into warm
//     memory; the background save's own duration (save() returned ->
//     committed, nothing else running);
//   - peak extra memory (peak RSS over the state dict's own) while saving;
//   - train_loop_slowdown: a compute loop (matmuls on --compute-threads
//     threads, default 2: the trainer uses both cores of this machine) runs
//     for a fixed window of --window x the synchronous save's time; one
//     async save starts at the window's beginning (its blocking part counts
//     as lost loop time) and must commit inside it. The slowdown is
//     1 - iterations in the window / iterations in the same window without
//     a save (median over --windows pairs). Pacing cannot hide lost work.
//
//   dcp_bench_async [--dir D] [--mib N] [--repeats N] [--threads N]
//                   [--async-writer-threads N] [--direct 0|1]
//                   [--priority normal|low|idle] [--reserve 0|1]
//                   [--checksums 0|1] [--fold-checksums 0|1]
//                   [--compute-threads N] [--window X]
//                   [--windows N]
// --threads: the synchronous save's writer threads and the stager's;
// --async-writer-threads (default 1), --direct (default 1), --priority
// (default normal): the background save's writer threads, O_DIRECT and thread
// priority; --fold-checksums (default 0): 1, the stager takes the checksums
// as it copies (StagerOptions::checksums) instead of the writer (the levers
// of docs/DESIGN.md "Async save").
// Ends with one `name=value` line per figure.
#include <spdlog/spdlog.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "dcp/dcp.h"

namespace {

using Clock = std::chrono::steady_clock;

double secs_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// Resident set and its peak, in bytes (/proc/self/status).
uint64_t status_kib(const char* field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind(field, 0) == 0)
      return std::strtoull(line.c_str() + std::strlen(field), nullptr, 10);
  return 0;
}
void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

void run(const std::string& cmd) {
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "command failed: %s\n", cmd.c_str());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "/tmp/dcp_bench_async";
  int64_t mib = 2048;
  int repeats = 5, threads = 2, async_writer_threads = 1, compute_threads = 2, windows = 3;
  bool direct = true, reserve = true, checksums = true, fold = false;
  double window_factor = 3.0;
  std::string priority = "normal";
  auto usage = [] {
    std::fprintf(stderr,
                 "usage: dcp_bench_async [--dir D] [--mib N] [--repeats N] [--threads N]\n"
                 "  [--async-writer-threads N] [--direct 0|1] [--priority normal|low|idle]\n"
                 "  [--reserve 0|1] [--checksums 0|1] [--fold-checksums 0|1]\n"
                 "  [--compute-threads N] [--window X]\n"
                 "  [--windows N]\n");
    return 2;
  };
  for (int i = 1; i < argc; i += 2) {
    if (i + 1 >= argc) return usage();
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--dir")
      dir = v;
    else if (k == "--mib")
      mib = std::stoll(v);
    else if (k == "--repeats")
      repeats = std::stoi(v);
    else if (k == "--threads")
      threads = std::stoi(v);
    else if (k == "--async-writer-threads")
      async_writer_threads = std::stoi(v);
    else if (k == "--direct")
      direct = v != "0";
    else if (k == "--priority")
      priority = v;
    else if (k == "--reserve")
      reserve = v != "0";
    else if (k == "--checksums")
      checksums = v != "0";
    else if (k == "--fold-checksums")
      fold = v != "0";
    else if (k == "--compute-threads")
      compute_threads = std::stoi(v);
    else if (k == "--window")
      window_factor = std::stod(v);
    else if (k == "--windows")
      windows = std::stoi(v);
    else
      return usage();
  }
  dcp::BackgroundPriority prio;
  if (priority == "normal")
    prio = dcp::BackgroundPriority::kNormal;
  else if (priority == "low")
    prio = dcp::BackgroundPriority::kLow;
  else if (priority == "idle")
    prio = dcp::BackgroundPriority::kIdle;
  else
    return usage();
  spdlog::set_level(spdlog::level::warn);
  dcp::logger().set_level(spdlog::level::warn);
  run("rm -rf '" + dir + "' && mkdir -p '" + dir + "'");

  // The "large" state dict: 64 float32 tensors.
  dcp::StateDict sd;
  std::vector<at::Tensor> tensors;
  uint64_t bytes = 0;
  for (int i = 0; i < 64; ++i) {
    at::Tensor t = at::rand({mib * (int64_t{1} << 20) / 4 / 64});
    sd["layer" + std::to_string(i) + ".weight"] = t;
    tensors.push_back(t);
    bytes += t.nbytes();
  }
  std::printf(
      "dcp++ async save benchmark: %.0f MiB in 64 tensors, %d threads, %d repeats (medians)\n"
      "  background saves: %d writer thread(s), direct_io %s, priority %s, reserve %s, "
      "checksums %s\n"
      "  compute loop: %d thread(s), window %.1f x the synchronous save, %d windows\n",
      bytes / 1048576.0, threads, repeats, async_writer_threads, direct ? "on" : "off",
      priority.c_str(), reserve ? "on" : "off", checksums ? "on" : "off", compute_threads,
      window_factor, windows);

  dcp::FileSystemWriterOptions wopt;
  wopt.threads = threads;
  wopt.checksums = checksums;
  dcp::FileSystemWriterOptions async_wopt = wopt;
  async_wopt.threads = async_writer_threads;
  async_wopt.direct_io = direct;
  auto opts = [&](const std::string& name, const dcp::FileSystemWriterOptions& w) {
    dcp::SaveOptions o;
    o.storage_writer = dcp::make_filesystem_writer(dir + "/" + name, w);
    return o;
  };

  // The synchronous save first: the window below is a multiple of it.
  std::vector<double> sync_times;
  for (int r = 0; r < std::max(2, repeats / 2); ++r) {
    auto t = Clock::now();
    dcp::save(sd, opts("sync" + std::to_string(r), wopt));
    sync_times.push_back(secs_since(t));
    run("rm -rf '" + dir + "/sync" + std::to_string(r) + "'");
  }
  const double sync = median(sync_times);

  // The memcpy reference: the best plain parallel copy of the same bytes into
  // warm memory (32 MiB pieces over a warm arena), timed next to each async
  // save so that both see the same machine. Its memory is allocated before
  // the baseline of the peak-memory figure.
  std::vector<at::Tensor> dst;
  for (const auto& t : tensors) dst.push_back(at::empty_like(t).fill_(0));
  struct Piece {
    size_t i;
    size_t begin, end;
  };
  std::vector<Piece> pieces;
  for (size_t i = 0; i < tensors.size(); ++i)
    for (size_t b = 0; b < tensors[i].nbytes(); b += size_t{32} << 20)
      pieces.push_back({i, b, std::min(tensors[i].nbytes(), b + (size_t{32} << 20))});
  tbb::task_arena arena(threads);
  auto reference_copy = [&] {
    auto t = Clock::now();
    arena.execute([&] {
      tbb::parallel_for(size_t{0}, pieces.size(), [&](size_t p) {
        const Piece& c = pieces[p];
        std::memcpy(static_cast<char*>(dst[c.i].data_ptr()) + c.begin,
                    static_cast<const char*>(tensors[c.i].data_ptr()) + c.begin, c.end - c.begin);
      });
    });
    return secs_since(t);
  };
  reference_copy();  // warms the arena
  std::vector<double> copy_times;

  const uint64_t rss_before = status_kib("VmRSS:") * 1024;
  reset_peak_rss();
  dcp::AsyncSaverOptions aopt;
  aopt.stager.threads = threads;
  aopt.priority = prio;
  aopt.stager.checksums = checksums && fold;
  dcp::AsyncSaver saver(aopt);
  double reserve_secs = 0;
  if (reserve) {
    auto t = Clock::now();
    saver.reserve(sd);
    reserve_secs = secs_since(t);
  }
  // The first save: with the reservation its buffers are ready; without it
  // it allocates them.
  auto t0 = Clock::now();
  dcp::AsyncSaveHandle first = saver.save(sd, opts("first", async_wopt));
  const double cold_block = secs_since(t0);
  first.get();
  run("rm -rf '" + dir + "/first'");
  std::vector<double> blocking, background;
  for (int r = 0; r < repeats; ++r) {
    copy_times.push_back(reference_copy());
    auto t = Clock::now();
    dcp::AsyncSaveHandle h = saver.save(sd, opts("async" + std::to_string(r), async_wopt));
    blocking.push_back(secs_since(t));
    auto tb = Clock::now();
    h.get();
    background.push_back(secs_since(tb));
    run("rm -rf '" + dir + "/async" + std::to_string(r) + "'");
  }
  const uint64_t peak = status_kib("VmHWM:") * 1024;
  const double extra = static_cast<double>(peak > rss_before ? peak - rss_before : 0) / bytes;

  // Training-loop slowdown over fixed windows (see the top of the file).
  at::set_num_threads(compute_threads);
  // Fixed inputs: feeding the product back would shrink the values into
  // denormals, which are ~100x slower and swamp what is measured.
  at::Tensor a = at::rand({384, 384}), b = at::rand({384, 384}), c = at::empty({384, 384});
  auto step = [&] { at::mm_out(c, a, b); };
  for (int i = 0; i < 20; ++i) step();
  const double window = window_factor * sync;
  std::vector<double> slowdowns, alone_rates, during_rates, in_window_background;
  int committed_in_window = 0;
  for (int w = 0; w < windows; ++w) {
    int alone = 0;
    auto ta = Clock::now();
    while (secs_since(ta) < window) {
      step();
      ++alone;
    }
    int during = 0;
    double committed_at = -1;
    auto td = Clock::now();
    dcp::AsyncSaveHandle h = saver.save(sd, opts("during" + std::to_string(w), async_wopt));
    const double returned_at = secs_since(td);
    for (double now = secs_since(td); now < window; now = secs_since(td)) {
      if (committed_at < 0 && h.ready()) committed_at = now;
      step();
      ++during;
    }
    if (committed_at < 0 && h.ready()) committed_at = secs_since(td);
    h.get();
    if (committed_at >= 0 && committed_at <= window) ++committed_in_window;
    in_window_background.push_back((committed_at >= 0 ? committed_at : secs_since(td)) -
                                   returned_at);
    run("rm -rf '" + dir + "/during" + std::to_string(w) + "'");
    slowdowns.push_back(1.0 - static_cast<double>(during) / alone);
    std::printf(
        "  window %d: %d iterations alone, %d with the save (blocked %.3f s, committed "
        "%s%.2f s)\n",
        w, alone, during, returned_at, committed_at < 0 ? "after " : "at ",
        committed_at < 0 ? secs_since(td) : committed_at);
    alone_rates.push_back(alone / window);
    during_rates.push_back(during / window);
  }

  const double block = median(blocking), copy = median(copy_times), bg = median(background);
  std::printf("  synchronous save (fsync)           %8.3f s  (%.2f GB/s)\n", sync,
              bytes / sync / 1e9);
  std::printf("  reserve (staging buffers)          %8.3f s\n", reserve_secs);
  std::printf("  async_save blocking, first         %8.3f s\n", cold_block);
  std::printf("  async_save blocking, warm buffers  %8.3f s  (%.2f GB/s)\n", block,
              bytes / block / 1e9);
  std::printf("  parallel memcpy, warm memory       %8.3f s  (%.2f GB/s)\n", copy,
              bytes / copy / 1e9);
  std::printf("  background save (alone)            %8.3f s  (%.2f GB/s)\n", bg, bytes / bg / 1e9);
  std::printf("  background save (in the window)    %8.3f s\n", median(in_window_background));
  std::printf("  peak extra memory                  %8.2f x the state dict\n", extra);
  std::printf(
      "  compute loop: %.1f it/s alone, %.1f it/s in a %.2f s window with a save; "
      "committed inside %d of %d windows\n",
      median(alone_rates), median(during_rates), window, committed_in_window, windows);
  std::printf("\nsync_save_seconds=%.4f\n", sync);
  std::printf("async_reserve_seconds=%.4f\n", reserve_secs);
  std::printf("async_block_seconds=%.4f\n", block);
  std::printf("async_block_cold_seconds=%.4f\n", cold_block);
  std::printf("async_block_cold_vs_warm=%.3f\n", cold_block / block);
  std::printf("async_background_seconds=%.4f\n", bg);
  std::printf("async_background_in_window_seconds=%.4f\n", median(in_window_background));
  std::printf("memcpy_seconds=%.4f\n", copy);
  std::printf("async_block_vs_memcpy=%.3f\n", block / copy);
  std::printf("async_block_vs_sync_save=%.3f\n", block / sync);
  std::printf("peak_extra_memory_ratio=%.3f\n", extra);
  std::printf("committed_in_window=%d/%d\n", committed_in_window, windows);
  std::printf("train_loop_slowdown=%.3f\n", median(slowdowns));
  run("rm -rf '" + dir + "'");
  return 0;
}

// Async save benchmark, for the 2 GiB "large" state dict by default:
//   - blocking time of AsyncSaver::save() with warm staging buffers, against
//     a plain parallel memcpy of the same bytes into warm memory and against
//     a synchronous dcp::save (fsync on, like the async save's);
//   - peak extra memory (peak RSS over the state dict's own) while saving;
//   - the slowdown of a compute loop (matmuls) while a background save runs.
//
//   dcp_bench_async [--dir D] [--mib N] [--repeats N] [--threads N]
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
  int repeats = 5, threads = 2;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i], v = argv[i + 1];
    if (k == "--dir")
      dir = v;
    else if (k == "--mib")
      mib = std::stoll(v);
    else if (k == "--repeats")
      repeats = std::stoi(v);
    else if (k == "--threads")
      threads = std::stoi(v);
    else {
      std::fprintf(stderr,
                   "usage: dcp_bench_async [--dir D] [--mib N] [--repeats N] [--threads N]\n");
      return 2;
    }
  }
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
      "dcp++ async save benchmark: %.0f MiB in 64 tensors, %d threads, %d repeats (medians)\n",
      bytes / 1048576.0, threads, repeats);

  dcp::FileSystemWriterOptions wopt;
  wopt.threads = threads;
  auto opts = [&](const std::string& name) {
    dcp::SaveOptions o;
    o.storage_writer = dcp::make_filesystem_writer(dir + "/" + name, wopt);
    return o;
  };

  // Async save: the first one allocates the staging buffers (measured apart),
  // the next ones reuse them.
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
  dcp::AsyncSaver saver(aopt);
  auto t0 = Clock::now();
  dcp::AsyncSaveHandle first = saver.save(sd, opts("warmup"));
  const double cold_block = secs_since(t0);
  first.get();
  run("rm -rf '" + dir + "/warmup'");
  std::vector<double> blocking;
  for (int r = 0; r < repeats; ++r) {
    copy_times.push_back(reference_copy());
    auto t = Clock::now();
    dcp::AsyncSaveHandle h = saver.save(sd, opts("async" + std::to_string(r)));
    blocking.push_back(secs_since(t));
    h.get();
    run("rm -rf '" + dir + "/async" + std::to_string(r) + "'");
  }
  const uint64_t peak = status_kib("VmHWM:") * 1024;
  const double extra = static_cast<double>(peak > rss_before ? peak - rss_before : 0) / bytes;

  // Training-loop slowdown: matmuls on one thread, alone and while a save runs.
  at::set_num_threads(1);
  at::Tensor a = at::rand({384, 384}), b = at::rand({384, 384});
  auto step = [&] { a = at::mm(a, b).div_(384.0); };
  for (int i = 0; i < 20; ++i) step();
  int alone_iters = 0;
  auto ta = Clock::now();
  while (secs_since(ta) < 2.0) {
    step();
    ++alone_iters;
  }
  const double alone_rate = alone_iters / secs_since(ta);
  double during_rate = 0;
  {
    dcp::AsyncSaveHandle h = saver.save(sd, opts("during"));
    int iters = 0;
    auto td = Clock::now();
    while (!h.ready()) {
      step();
      ++iters;
    }
    during_rate = iters / secs_since(td);
    h.get();
    run("rm -rf '" + dir + "/during'");
  }

  // A synchronous save, for reference.
  std::vector<double> sync_times;
  for (int r = 0; r < std::max(2, repeats / 2); ++r) {
    auto t = Clock::now();
    dcp::save(sd, opts("sync" + std::to_string(r)));
    sync_times.push_back(secs_since(t));
    run("rm -rf '" + dir + "/sync" + std::to_string(r) + "'");
  }

  const double block = median(blocking), copy = median(copy_times), sync = median(sync_times);
  std::printf("  async_save blocking, warm buffers  %8.3f s  (%.2f GB/s)\n", block,
              bytes / block / 1e9);
  std::printf("  async_save blocking, first (alloc) %8.3f s\n", cold_block);
  std::printf("  parallel memcpy, warm memory       %8.3f s  (%.2f GB/s)\n", copy,
              bytes / copy / 1e9);
  std::printf("  synchronous save (fsync)           %8.3f s\n", sync);
  std::printf("  peak extra memory                  %8.2f x the state dict\n", extra);
  std::printf("  compute loop: %.1f it/s alone, %.1f it/s during a background save\n", alone_rate,
              during_rate);
  std::printf("\nasync_block_seconds=%.4f\n", block);
  std::printf("async_block_cold_seconds=%.4f\n", cold_block);
  std::printf("memcpy_seconds=%.4f\n", copy);
  std::printf("sync_save_seconds=%.4f\n", sync);
  std::printf("async_block_vs_memcpy=%.3f\n", block / copy);
  std::printf("async_block_vs_sync_save=%.3f\n", block / sync);
  std::printf("peak_extra_memory_ratio=%.3f\n", extra);
  std::printf("train_loop_slowdown=%.3f\n", 1.0 - during_rate / alone_rate);
  run("rm -rf '" + dir + "'");
  return 0;
}

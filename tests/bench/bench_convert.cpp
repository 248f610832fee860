// `ckpt convert` of a native checkpoint to safetensors, the whole process
// timed, against a raw write + fdatasync of the same bytes, in one run:
//
//   dcp_bench_convert --ckpt PATH/TO/ckpt [--dir D] [--mib N] [--repeats N]
//
//   convert_safetensors   `ckpt convert NATIVE OUT --to safetensors` (fsync
//                         on, as by default), the source in the page cache
//                         (read once before), OUT removed and sync(2) run
//                         before each run (no write-back of the previous
//                         run's bytes left to compete with it)
//   raw_write             the output's size written to a new file from one
//                         reused, already touched 64 MiB buffer, then
//                         fdatasync (what `dd bs=64M conv=fdatasync` does),
//                         after the same unlink and sync(2)
// The native checkpoint: 16 float32 tensors, N MiB in all (default 2048).
// Medians of --repeats (default 3) after one warm-up; the last lines are
// `name=value`; convert_safetensors_vs_raw = raw / convert (1 = as fast as
// the raw write).
#include <fcntl.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "bench_state.h"
#include "dcp/dcp.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds(const std::function<void()>& fn) {
  const auto t0 = Clock::now();
  fn();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double median_of(int repeats, const std::function<void()>& before,
                 const std::function<void()>& fn) {
  before();
  fn();
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) {
    before();
    t.push_back(seconds(fn));
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void run(const std::string& cmd) {
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "failed: %s\n", cmd.c_str());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string ckpt, dir = "/tmp/dcp_bench_convert";
  int64_t mib = 2048;
  int repeats = 3;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i], v = argv[i + 1];
    if (k == "--ckpt")
      ckpt = v;
    else if (k == "--dir")
      dir = v;
    else if (k == "--mib")
      mib = std::stoll(v);
    else if (k == "--repeats")
      repeats = std::stoi(v);
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (ckpt.empty()) {
    std::fprintf(stderr,
                 "usage: dcp_bench_convert --ckpt PATH/TO/ckpt [--dir D] [--mib N] "
                 "[--repeats N]\n");
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  dcp::logger().set_level(spdlog::level::warn);
  const std::string native = dir + "/native", out = dir + "/out", raw = dir + "/raw.bin";
  run("rm -rf '" + dir + "' && mkdir -p '" + dir + "'");
  dcp::save(dcp_bench::sixteen_tensors(mib), native);
  const std::string convert =
      "'" + ckpt + "' convert '" + native + "' '" + out + "' --to safetensors > /dev/null";
  const std::string warm = "cat '" + native + "'/* > /dev/null";
  const double t_convert = median_of(
      repeats, [&] { run("rm -rf '" + out + "' && " + warm); }, [&] { run(convert); });
  uint64_t bytes = 0;
  {
    FILE* f = std::fopen((out + "/model.safetensors").c_str(), "rb");
    std::fseek(f, 0, SEEK_END);
    bytes = static_cast<uint64_t>(std::ftell(f));
    std::fclose(f);
  }
  const size_t kBuf = size_t{64} << 20;
  std::unique_ptr<char[]> buf(new char[kBuf]);
  std::memset(buf.get(), 1, kBuf);
  const double t_raw = median_of(
      repeats,
      [&] {
        ::unlink(raw.c_str());
        ::sync();
      },
      [&] {
        const int fd = ::open(raw.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        for (uint64_t done = 0; done < bytes;) {
          const size_t n = static_cast<size_t>(std::min<uint64_t>(kBuf, bytes - done));
          if (::write(fd, buf.get(), n) != static_cast<ssize_t>(n)) std::exit(1);
          done += n;
        }
        ::fdatasync(fd);
        ::close(fd);
      });
  const double gb = bytes / 1e9;
  std::printf(
      "ckpt convert to safetensors, %.2f GB: %.3f s (%.2f GB/s); raw write+fdatasync: "
      "%.3f s (%.2f GB/s)\n",
      gb, t_convert, gb / t_convert, t_raw, gb / t_raw);
  std::printf("convert_safetensors_seconds=%.3f\nraw_write_seconds=%.3f\n", t_convert, t_raw);
  std::printf("convert_safetensors_vs_raw=%.3f\n", t_raw / t_convert);
  run("rm -rf '" + dir + "'");
  return 0;
}

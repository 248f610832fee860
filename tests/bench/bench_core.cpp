// dcp++ core benchmark: save and load throughput against torch::save /
// torch::load of the same tensors and against the raw sequential write
// bandwidth of the same directory, from one run.
//
//   dcp_bench_core [--dir D] [--large-mib N] [--small-count N] [--repeats N]
//                  [--threads N] [--shape large|small|all] [--drop-caches]
//
// Defaults: 4 repeats (medians), 2 GiB large, 20,000 small tensors.
// Like is compared with like: dcp++ with fsync against a raw write of the
// same bytes in as many files as dcp++ writes data files (one per thread,
// --threads), each from its own thread in 8 MiB writes from a warm buffer
// and ended by fdatasync; dcp++ without fsync against torch::save (which
// never syncs). Loads read what the saves just wrote (page cache, both sides
// alike; --drop-caches drops it before each load, as root); the raw read
// reads the same data files in 8 MiB preads into a reused buffer, one
// thread per file (load_vs_raw_read_*). save_us_per_item_* is what the
// fsync'd save takes beyond the raw write, per item (microseconds). dcp++ loads in place
// into existing tensors, as a resuming trainer does; torch::load allocates,
// so the in-place and allocating figures are both printed.
// The last lines are `name=value`, one per figure; ratios > 1 mean dcp++ is faster.
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <torch/serialize.h>

#include <dirent.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <functional>
#include <map>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "dcp/dcp.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string dir = "/tmp/dcp_bench";
  int64_t large_mib = 2048;
  int64_t small_count = 20000;
  int repeats = 4;
  int threads = 2;
  std::string shape = "all";
  bool drop_caches = false;
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "error: %s\nusage: dcp_bench_core [--dir D] [--large-mib N] [--small-count N] "
               "[--repeats N] [--threads N] [--shape large|small|all] [--drop-caches]\n",
               msg);
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value for " + k).c_str());
      return argv[++i];
    };
    if (k == "--dir")
      a.dir = next();
    else if (k == "--large-mib")
      a.large_mib = std::stoll(next());
    else if (k == "--small-count")
      a.small_count = std::stoll(next());
    else if (k == "--repeats")
      a.repeats = std::stoi(next());
    else if (k == "--threads")
      a.threads = std::stoi(next());
    else if (k == "--shape")
      a.shape = next();
    else if (k == "--drop-caches")
      a.drop_caches = true;
    else
      usage(("unknown option " + k).c_str());
  }
  if (a.repeats < 1 || a.threads < 1 || a.large_mib < 64 || a.small_count < 1)
    usage("values out of range (repeats, threads >= 1; large-mib >= 64; small-count >= 1)");
  if (a.shape != "large" && a.shape != "small" && a.shape != "all") usage("bad --shape");
  return a;
}

void run(const std::string& cmd) {
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "command failed: %s\n", cmd.c_str());
    std::exit(1);
  }
}

void settle(bool drop) {
  ::sync();  // no dirty pages from one measurement slow the next
  if (drop) {
    int fd = ::open("/proc/sys/vm/drop_caches", O_WRONLY);
    if (fd < 0 || ::write(fd, "3", 1) != 1) {
      std::fprintf(stderr, "--drop-caches needs root\n");
      std::exit(1);
    }
    ::close(fd);
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

template <typename Fn>
double time_once(const Fn& fn) {
  auto t0 = Clock::now();
  fn();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// The raw bandwidth of the directory: `bytes` in `files` files written in
// parallel (one thread each, as dcp++ writes one data file per thread), 8 MiB
// writes from a warm buffer, each file ended by fdatasync.
double raw_write_seconds(const std::string& prefix, uint64_t bytes, int files) {
  static std::vector<std::vector<char>> bufs;
  if (bufs.size() < static_cast<size_t>(files))
    bufs.resize(files, std::vector<char>(size_t{8} << 20, 'x'));
  return time_once([&] {
    std::vector<std::thread> threads;
    for (int f = 0; f < files; ++f)
      threads.emplace_back([&, f] {
        const std::string path = prefix + std::to_string(f);
        const uint64_t share = bytes * (f + 1) / files - bytes * f / files;
        const std::vector<char>& buf = bufs[f];
        int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) usage(("cannot create " + path).c_str());
        for (uint64_t done = 0; done < share;) {
          size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), share - done));
          ssize_t w = ::write(fd, buf.data(), n);
          if (w <= 0) usage("raw write failed");
          done += static_cast<uint64_t>(w);
        }
        ::fdatasync(fd);
        ::close(fd);
      });
    for (auto& t : threads) t.join();
  });
}

// The data files of checkpoint directory `dir`.
std::vector<std::string> data_files(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) usage(("cannot list " + dir).c_str());
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() > 7 && name.compare(name.size() - 7, 7, ".distcp") == 0)
      out.push_back(dir + "/" + name);
  }
  ::closedir(d);
  return out;
}

// A raw read of `files`: one thread per file, 8 MiB preads into a reused
// buffer. Returns the seconds; `bytes` gets what was read.
double raw_read_seconds(const std::vector<std::string>& files, uint64_t& bytes) {
  static std::vector<std::vector<char>> bufs;
  if (bufs.size() < files.size()) bufs.resize(files.size(), std::vector<char>(size_t{8} << 20));
  std::vector<uint64_t> got(files.size(), 0);
  const double secs = time_once([&] {
    std::vector<std::thread> threads;
    for (size_t f = 0; f < files.size(); ++f)
      threads.emplace_back([&, f] {
        int fd = ::open(files[f].c_str(), O_RDONLY);
        if (fd < 0) usage(("cannot open " + files[f]).c_str());
        std::vector<char>& buf = bufs[f];
        for (ssize_t n; (n = ::pread(fd, buf.data(), buf.size(), got[f])) > 0;) got[f] += n;
        ::close(fd);
      });
    for (auto& t : threads) t.join();
  });
  bytes = 0;
  for (uint64_t g : got) bytes += g;
  return secs;
}

struct Workload {
  std::string name;
  dcp::StateDict sd;
  std::vector<at::Tensor> tensors;
  uint64_t bytes = 0;
};

Workload make_large(int64_t mib) {
  Workload w{"large", {}, {}, 0};
  const int64_t n = 64;
  const int64_t elems = mib * (int64_t{1} << 20) / 4 / n;
  for (int64_t i = 0; i < n; ++i) {
    at::Tensor t = at::rand({elems});
    w.sd["layer" + std::to_string(i) + ".weight"] = t;
    w.tensors.push_back(t);
    w.bytes += t.nbytes();
  }
  return w;
}

Workload make_small(int64_t count) {
  Workload w{"small", {}, {}, 0};
  std::mt19937 rng(42);
  std::uniform_int_distribution<int64_t> kib(1, 16);
  for (int64_t i = 0; i < count; ++i) {
    at::Tensor t = at::rand({kib(rng) * 256});  // 1-16 KiB of float32
    w.sd["block" + std::to_string(i / 100) + ".param" + std::to_string(i % 100)] = t;
    w.tensors.push_back(t);
    w.bytes += t.nbytes();
  }
  return w;
}

struct Figures {
  double raw = 0, save_sync = 0, save_nosync = 0, torch_save = 0, load = 0, load_alloc = 0,
         torch_load = 0, raw_read = 0;
  double save_us_per_item = 0;  // the fsync'd save's time beyond the raw write, per item
};

Figures measure(const Workload& w, const Args& a) {
  const std::string base = a.dir + "/" + w.name;
  run("rm -rf '" + base + "' && mkdir -p '" + base + "'");
  dcp::FileSystemWriterOptions sync_opt, nosync_opt;
  sync_opt.threads = nosync_opt.threads = a.threads;
  nosync_opt.sync_files = false;
  dcp::FileSystemReaderOptions ropt;
  ropt.threads = a.threads;

  // Destination for the in-place load: allocated and touched once, up front.
  dcp::StateDict dest;
  for (const auto& [k, v] : w.sd) dest[k] = at::zeros_like(v.tensor());

  std::map<std::string, std::vector<double>> t;
  for (int r = 0; r < a.repeats; ++r) {
    const std::string ck = base + "/ck";
    // The raw write and the fsync'd save run back to back, in alternating
    // order: on virtual disks a write-back cache in the host makes whichever
    // runs first after a pause faster, so neither side may always go first.
    auto raw = [&] {
      settle(false);
      t["raw"].push_back(raw_write_seconds(base + "/raw.bin.", w.bytes, a.threads));
      run("rm -f '" + base + "'/raw.bin.*");
    };
    auto save_sync = [&] {
      settle(false);
      t["save_sync"].push_back(time_once([&] {
        dcp::SaveOptions o;
        o.storage_writer = dcp::make_filesystem_writer(ck, sync_opt);
        dcp::save(w.sd, o);
      }));
      run("rm -rf '" + ck + "'");
    };
    if (r % 2 == 0) {
      raw();
      save_sync();
    } else {
      save_sync();
      raw();
    }
    settle(false);

    t["save_nosync"].push_back(time_once([&] {
      dcp::SaveOptions o;
      o.storage_writer = dcp::make_filesystem_writer(ck, nosync_opt);
      dcp::save(w.sd, o);
    }));
    settle(false);

    const std::string tf = base + "/torch.pt";
    t["torch_save"].push_back(time_once([&] { torch::save(w.tensors, tf); }));
    settle(a.drop_caches);

    t["torch_load"].push_back(time_once([&] {
      std::vector<at::Tensor> back;
      torch::load(back, tf);
      if (back.size() != w.tensors.size()) usage("torch::load returned the wrong count");
    }));
    settle(a.drop_caches);

    uint64_t read_bytes = 0;
    t["raw_read"].push_back(raw_read_seconds(data_files(ck), read_bytes));
    if (read_bytes < w.bytes) usage("the raw read got fewer bytes than were saved");
    settle(a.drop_caches);

    t["load"].push_back(time_once([&] {
      dcp::LoadOptions o;
      o.storage_reader = dcp::make_filesystem_reader(ck, ropt);
      dcp::load(dest, o);
    }));
    settle(a.drop_caches);

    t["load_alloc"].push_back(time_once([&] {
      dcp::LoadOptions o;
      o.storage_reader = dcp::make_filesystem_reader(ck, ropt);
      dcp::StateDict all = dcp::load_all(o);
      if (all.size() != w.sd.size()) usage("load_all returned the wrong count");
    }));
    run("rm -rf '" + ck + "' '" + tf + "'");
  }
  // Correctness, once: the in-place load got the saved values.
  for (const auto& [k, v] : w.sd)
    if (!at::equal(v.tensor(), dest.at(k).tensor()))
      usage(("loaded values differ at " + k).c_str());

  const double gb = w.bytes / 1e9;
  Figures f;
  f.raw = gb / median(t["raw"]);
  f.save_sync = gb / median(t["save_sync"]);
  f.save_nosync = gb / median(t["save_nosync"]);
  f.torch_save = gb / median(t["torch_save"]);
  f.load = gb / median(t["load"]);
  f.load_alloc = gb / median(t["load_alloc"]);
  f.torch_load = gb / median(t["torch_load"]);
  f.raw_read = gb / median(t["raw_read"]);
  f.save_us_per_item = (median(t["save_sync"]) - median(t["raw"])) / w.tensors.size() * 1e6;
  run("rm -rf '" + base + "'");
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  Args a = parse(argc, argv);
  spdlog::set_level(spdlog::level::warn);
  dcp::logger().set_level(spdlog::level::warn);
  std::printf("dcp++ core benchmark: dir=%s threads=%d repeats=%d (medians, GB/s = 1e9 bytes/s)\n",
              a.dir.c_str(), a.threads, a.repeats);

  std::vector<std::pair<std::string, std::string>> out;
  auto emit = [&](const std::string& k, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.3f", v);
    out.emplace_back(k, buf);
  };
  for (const std::string shape : {"large", "small"}) {
    if (a.shape != "all" && a.shape != shape) continue;
    Workload w = shape == "large" ? make_large(a.large_mib) : make_small(a.small_count);
    std::printf("\n%s: %zu tensors, %.1f MiB\n", shape.c_str(), w.tensors.size(),
                w.bytes / 1048576.0);
    Figures f = measure(w, a);
    std::printf("  raw write + fdatasync      %7.3f GB/s\n", f.raw);
    std::printf("  dcp++ save (fsync)         %7.3f GB/s   %.2fx raw\n", f.save_sync,
                f.save_sync / f.raw);
    std::printf("  dcp++ save (no fsync)      %7.3f GB/s   %.2fx torch::save\n", f.save_nosync,
                f.save_nosync / f.torch_save);
    std::printf("  torch::save                %7.3f GB/s\n", f.torch_save);
    std::printf("  dcp++ load (in place)      %7.3f GB/s   %.2fx torch::load\n", f.load,
                f.load / f.torch_load);
    std::printf("  dcp++ load_all (allocates) %7.3f GB/s   %.2fx torch::load\n", f.load_alloc,
                f.load_alloc / f.torch_load);
    std::printf("  torch::load (allocates)    %7.3f GB/s\n", f.torch_load);
    std::printf("  raw read (page cache)      %7.3f GB/s   dcp++ load in place %.2fx of it\n",
                f.raw_read, f.load / f.raw_read);
    std::printf("  save beyond the raw write  %7.2f us per item\n", f.save_us_per_item);
    emit("raw_write_gbps_" + shape, f.raw);
    emit("save_fsync_gbps_" + shape, f.save_sync);
    emit("save_nofsync_gbps_" + shape, f.save_nosync);
    emit("torch_save_gbps_" + shape, f.torch_save);
    emit("load_gbps_" + shape, f.load);
    emit("load_alloc_gbps_" + shape, f.load_alloc);
    emit("torch_load_gbps_" + shape, f.torch_load);
    emit("save_vs_raw_" + shape, f.save_sync / f.raw);
    emit("save_vs_torch_" + shape, f.save_nosync / f.torch_save);
    emit("load_vs_torch_" + shape, f.load / f.torch_load);
    emit("load_alloc_vs_torch_" + shape, f.load_alloc / f.torch_load);
    emit("raw_read_gbps_" + shape, f.raw_read);
    emit("load_vs_raw_read_" + shape, f.load / f.raw_read);
    emit("save_us_per_item_" + shape, f.save_us_per_item);
  }
  std::printf("\n");
  for (const auto& [k, v] : out) std::printf("%s=%s\n", k.c_str(), v.c_str());
  return 0;
}

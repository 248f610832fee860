// dcp++ reading PyTorch's formats, against Python reading them, in one run
// (scripts/bench-peers.sh runs Python's side first and passes its figures):
//
//   dcp_bench_interop --dir D [--pydcp DIR --python-dcp-load S]
//                     [--torchsave FILE --python-torch-load S]
//                     [--safetensors-mib N] [--save-mib N [--python-dcp-save S]]
//                     [--vs-python-dcp-mib N --vs-python-dcp-small N
//                      --python-dcp-save-large S --python-dcp-load-large S
//                      --python-dcp-save-small S --python-dcp-load-small S]
//                     [--repeats N] [--threads N]
//
//   load_pytorch_dcp      DIR (written by Python DCP 1.13, one file per rank)
//                         loaded in place into preallocated tensors,
//                         checksums on; against Python DCP's load_state_dict
//                         into preallocated tensors of the same directory
//   load_torchsave        FILE (torch.save) with load_all (allocating),
//                         against Python's torch.load
//   load_safetensors      a safetensors file this program writes by the spec,
//                         loaded in place; against dcp++'s native in-place
//                         load of the same tensors (both from the page cache)
//   save_pytorch_format   N MiB saved in PyTorch's DCP format (fsync), against
//                         the native format in the same run (the same tensors,
//                         alternating order); with --python-dcp-save, against
//                         Python DCP 1.13 saving the same bytes
//   vs_python_dcp         dcp++'s native format against Python DCP 1.13
//                         (py_peers.py dcp113_{save,load}_{large,small}, the
//                         same dicts): the large dict (16 float32 tensors of
//                         N/16 MiB) and the small one (N tensors of 1-16 KiB)
//                         saved with fsync into a fresh directory (after a
//                         sync; median of --repeats, no warm-up, as Python's)
//                         and loaded in place into preallocated tensors from
//                         the page cache (one warm-up, median), checksums on
// (ckpt convert against a raw write: dcp_bench_convert.)
// Medians of --repeats (default 3) after one warm-up; the last lines are
// `name=value`, ratios > 1 mean dcp++ is faster.
#include <spdlog/spdlog.h>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "bench_state.h"
#include "common/safetensors_writer.h"
#include "dcp/dcp.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string dir = "/tmp/dcp_bench_interop";
  std::string pydcp, torchsave;
  double python_dcp_load = 0, python_torch_load = 0;
  int64_t safetensors_mib = 2048;
  int64_t save_mib = 0;
  double python_dcp_save = 0;
  int repeats = 3;
  int threads = 2;
  int64_t vs_mib = 0, vs_small = 0;
  double py_save_large = 0, py_load_large = 0, py_save_small = 0, py_load_small = 0;
};

[[noreturn]] void usage(const char* msg) {
  std::fprintf(
      stderr,
      "error: %s\nusage: dcp_bench_interop --dir D [--pydcp DIR --python-dcp-load S] "
      "[--torchsave FILE --python-torch-load S] [--safetensors-mib N] "
      "[--save-mib N [--python-dcp-save S]] [--vs-python-dcp-mib N --vs-python-dcp-small N "
      "--python-dcp-{save,load}-{large,small} S] [--repeats N] "
      "[--threads N]\n",
      msg);
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) usage(("missing value after " + k).c_str());
    const std::string v = argv[++i];
    if (k == "--dir")
      a.dir = v;
    else if (k == "--pydcp")
      a.pydcp = v;
    else if (k == "--torchsave")
      a.torchsave = v;
    else if (k == "--python-dcp-load")
      a.python_dcp_load = std::stod(v);
    else if (k == "--python-torch-load")
      a.python_torch_load = std::stod(v);
    else if (k == "--safetensors-mib")
      a.safetensors_mib = std::stoll(v);
    else if (k == "--save-mib")
      a.save_mib = std::stoll(v);
    else if (k == "--python-dcp-save")
      a.python_dcp_save = std::stod(v);
    else if (k == "--vs-python-dcp-mib")
      a.vs_mib = std::stoll(v);
    else if (k == "--vs-python-dcp-small")
      a.vs_small = std::stoll(v);
    else if (k == "--python-dcp-save-large")
      a.py_save_large = std::stod(v);
    else if (k == "--python-dcp-load-large")
      a.py_load_large = std::stod(v);
    else if (k == "--python-dcp-save-small")
      a.py_save_small = std::stod(v);
    else if (k == "--python-dcp-load-small")
      a.py_load_small = std::stod(v);
    else if (k == "--repeats")
      a.repeats = std::stoi(v);
    else if (k == "--threads")
      a.threads = std::stoi(v);
    else
      usage(("unknown option " + k).c_str());
  }
  if (a.repeats < 1) usage("--repeats must be >= 1");
  return a;
}

double seconds(const std::function<void()>& fn) {
  const auto t0 = Clock::now();
  fn();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// One warm-up, then the median of `repeats`.
double median_of(int repeats, const std::function<void()>& fn) {
  fn();
  std::vector<double> t;
  for (int i = 0; i < repeats; ++i) t.push_back(seconds(fn));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

dcp::LoadOptions load_options(const std::string& id, int threads) {
  dcp::FileSystemReaderOptions ro;
  ro.threads = threads;
  ro.verify_checksums = true;
  dcp::LoadOptions lo;
  lo.checkpoint_id = id;
  lo.storage_reader = dcp::make_filesystem_reader(id, ro);
  return lo;
}

uint64_t bytes_of(const dcp::StateDict& sd) {
  uint64_t n = 0;
  for (const auto& [k, v] : sd)
    if (v.is_tensor()) n += v.tensor().nbytes();
  return n;
}

// Fresh destinations like `sd`'s tensors, touched (so the load measures I/O,
// not page faults).
dcp::StateDict like(const dcp::StateDict& sd) {
  dcp::StateDict out;
  for (const auto& [k, v] : sd) out[k] = v.is_tensor() ? dcp::Value(at::zeros_like(v.tensor())) : v;
  return out;
}

// A safetensors file of `sd`'s tensors (the spec's writer).
void write_safetensors(const dcp::StateDict& sd, const std::string& path) {
  std::vector<dcp::testing::T> ts;
  for (const auto& [k, v] : sd) ts.push_back(dcp::testing::tensor(k, v.tensor()));
  std::ofstream f(path, std::ios::binary);
  const std::string bytes = dcp::testing::safetensors(std::move(ts));
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

void run(const std::string& cmd) {
  if (std::system(cmd.c_str()) != 0) {
    std::fprintf(stderr, "dcp_bench_interop: '%s' failed\n", cmd.c_str());
    std::exit(1);
  }
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

// Runs a then b, or b then a on odd rounds: on virtual disks whichever write
// runs first after a pause can be faster, so neither may always go first.
void alternate(int round, const std::function<void()>& a, const std::function<void()>& b) {
  ::sync();
  if (round % 2 == 0) {
    a();
    ::sync();
    b();
  } else {
    b();
    ::sync();
    a();
  }
}

// py_peers.py's large dict: 16 float32 tensors "layerNN.weight" of
// mib/16 MiB, tensor i holding i.
dcp::StateDict python_large(int64_t mib) {
  const int64_t n = mib * (int64_t{1} << 20) / 16 / 4;
  dcp::StateDict sd;
  for (int i = 0; i < 16; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "layer%02d.weight", i);
    sd[name] = at::full({n}, static_cast<float>(i));
  }
  return sd;
}

// py_peers.py's small dict: "block{i/100}.param{i%100}" of 1 + (7i mod 16)
// KiB, tensor i holding i.
dcp::StateDict python_small(int64_t count) {
  dcp::StateDict sd;
  for (int64_t i = 0; i < count; ++i)
    sd["block" + std::to_string(i / 100) + ".param" + std::to_string(i % 100)] =
        at::full({(1 + (7 * i) % 16) * 256}, static_cast<float>(i));
  return sd;
}

// Each tensor of `dst` equals the one of `src` (the loads' check).
void check_equal(const dcp::StateDict& src, const dcp::StateDict& dst, const char* what) {
  for (const auto& [k, v] : src)
    if (!v.tensor().equal(dst.at(k).tensor())) {
      std::fprintf(stderr, "dcp_bench_interop: %s: '%s' did not load back\n", what, k.c_str());
      std::exit(1);
    }
}

// One file of `bytes`, 8 MiB writes from a warm buffer, fdatasync: the
// directory's raw write bandwidth, the cap of a large save.
double raw_write_seconds(const std::string& path, uint64_t bytes) {
  static std::vector<char> buf(size_t{8} << 20, 'x');
  return seconds([&] {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) usage(("cannot create " + path).c_str());
    for (uint64_t done = 0; done < bytes;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), bytes - done));
      const ssize_t w = ::write(fd, buf.data(), n);
      if (w <= 0) usage("raw write failed");
      done += static_cast<uint64_t>(w);
    }
    ::fdatasync(fd);
    ::close(fd);
  });
}

struct NativeTimes {
  double save = 0, load = 0, raw = 0;  // raw: 0 unless asked for
};

// dcp++'s save (median of `repeats` into a fresh `dir`, each after a sync,
// no warm-up: as py_peers.py times Python DCP) and in-place load (warm-up,
// then the median) of `sd`; with `with_raw`, a raw write of as many bytes
// next to each save (alternating which goes first).
NativeTimes native_save_load(const dcp::StateDict& sd, const std::string& dir, const Args& a,
                             const char* what, bool with_raw) {
  dcp::FileSystemWriterOptions wo;  // sync_files and checksums: the defaults
  wo.threads = a.threads;
  std::vector<double> saves, raws;
  const std::string raw_file = dir + ".raw";
  for (int r = 0; r < a.repeats; ++r) {
    run("rm -rf '" + dir + "'");
    auto save = [&] {
      dcp::SaveOptions so;
      so.checkpoint_id = dir;
      so.storage_writer = dcp::make_filesystem_writer(dir, wo);
      saves.push_back(seconds([&] { dcp::save(sd, so); }));
    };
    auto raw = [&] {
      raws.push_back(raw_write_seconds(raw_file, bytes_of(sd)));
      run("rm -f '" + raw_file + "'");
    };
    if (with_raw) {
      alternate(r, save, raw);
    } else {
      ::sync();
      save();
    }
  }
  dcp::StateDict dst = like(sd);
  NativeTimes t;
  t.load = median_of(a.repeats, [&] { dcp::load(dst, load_options(dir, a.threads)); });
  check_equal(sd, dst, what);
  run("rm -rf '" + dir + "'");
  t.save = median(saves);
  if (with_raw) t.raw = median(raws);
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
  spdlog::set_level(spdlog::level::warn);
  dcp::logger().set_level(spdlog::level::warn);
  at::set_num_threads(a.threads);
  std::system(("mkdir -p '" + a.dir + "'").c_str());
  std::vector<std::pair<std::string, double>> figures;

  if (!a.pydcp.empty()) {
    dcp::StateDict sd = dcp::load_all(load_options(a.pydcp, a.threads));
    dcp::StateDict dst = like(sd);
    const double t =
        median_of(a.repeats, [&] { dcp::load(dst, load_options(a.pydcp, a.threads)); });
    const double gb = bytes_of(sd) / 1e9;
    std::printf("PyTorch DCP 1.13 directory, %.2f GB in place: %.3f s (%.2f GB/s)\n", gb, t,
                gb / t);
    figures.emplace_back("load_pytorch_dcp_seconds", t);
    if (a.python_dcp_load > 0)
      figures.emplace_back("load_pytorch_dcp_vs_python", a.python_dcp_load / t);
  }
  if (!a.torchsave.empty()) {
    uint64_t bytes = 0;
    const double t = median_of(a.repeats, [&] {
      dcp::StateDict sd = dcp::load_all(load_options(a.torchsave, a.threads));
      bytes = bytes_of(sd);
    });
    std::printf("torch.save file, %.2f GB with load_all (allocating): %.3f s (%.2f GB/s)\n",
                bytes / 1e9, t, bytes / 1e9 / t);
    figures.emplace_back("load_torchsave_seconds", t);
    if (a.python_torch_load > 0)
      figures.emplace_back("load_torchsave_vs_python", a.python_torch_load / t);
  }
  if (a.safetensors_mib > 0) {
    // 16 float32 tensors of equal size.
    dcp::StateDict sd = dcp_bench::sixteen_tensors(a.safetensors_mib);
    const std::string st = a.dir + "/model.safetensors", native = a.dir + "/native";
    write_safetensors(sd, st);
    std::system(("rm -rf '" + native + "'").c_str());
    dcp::save(sd, native);
    dcp::StateDict dst = like(sd);
    const double t_st = median_of(a.repeats, [&] { dcp::load(dst, load_options(st, a.threads)); });
    const double t_native =
        median_of(a.repeats, [&] { dcp::load(dst, load_options(native, a.threads)); });
    const double gb = bytes_of(sd) / 1e9;
    std::printf("safetensors %.2f GB in place: %.3f s; native: %.3f s\n", gb, t_st, t_native);
    figures.emplace_back("load_safetensors_seconds", t_st);
    figures.emplace_back("load_native_seconds", t_native);
    figures.emplace_back("load_safetensors_vs_native", t_native / t_st);
    std::system(("rm -rf '" + native + "' '" + st + "'").c_str());
  }
  if (a.save_mib > 0) {
    const dcp::StateDict sd = dcp_bench::sixteen_tensors(a.save_mib);
    const std::string native = a.dir + "/save_native", pt = a.dir + "/save_pytorch";
    auto save_in = [&](const std::string& dir, bool pytorch) {
      dcp::FileSystemWriterOptions wo;
      wo.threads = a.threads;
      if (pytorch) wo.format = dcp::StorageFormat::kPyTorchDcp;
      dcp::SaveOptions so;
      so.checkpoint_id = dir;
      so.storage_writer = dcp::make_filesystem_writer(dir, wo);
      run("rm -rf '" + dir + "'");
      return seconds([&] { dcp::save(sd, so); });
    };
    save_in(native, false);  // warm-up: buffers, first-touch of the writer's memory
    save_in(pt, true);
    std::vector<double> t_native, t_pt;
    for (int r = 0; r < a.repeats; ++r)
      alternate(
          r, [&] { t_native.push_back(save_in(native, false)); },
          [&] { t_pt.push_back(save_in(pt, true)); });
    run("rm -rf '" + native + "' '" + pt + "'");
    const double gb = bytes_of(sd) / 1e9, n = median(t_native), p = median(t_pt);
    std::printf(
        "save %.2f GB (fsync): native %.3f s (%.2f GB/s), PyTorch DCP format %.3f s "
        "(%.2f GB/s)\n",
        gb, n, gb / n, p, gb / p);
    figures.emplace_back("save_native_seconds", n);
    figures.emplace_back("save_pytorch_format_seconds", p);
    figures.emplace_back("save_pytorch_format_vs_native", n / p);
    if (a.python_dcp_save > 0)
      figures.emplace_back("save_pytorch_format_vs_python", a.python_dcp_save / p);
  }
  if (a.vs_mib > 0 || a.vs_small > 0) {
    auto ratio = [&](const char* name, double python, double native) {
      if (python > 0) figures.emplace_back(name, python / native);
    };
    if (a.vs_mib > 0) {
      const dcp::StateDict sd = python_large(a.vs_mib);
      const NativeTimes t = native_save_load(sd, a.dir + "/vs_large", a, "large", true);
      const double save = t.save, load = t.load, gb = bytes_of(sd) / 1e9;
      std::printf(
          "large dict, %.2f GB: dcp++ save %.3f s (%.2f GB/s), load %.3f s (%.2f GB/s); raw "
          "write + fdatasync %.3f s (%.2f GB/s); Python DCP 1.13 save %.3f s, load %.3f s\n",
          gb, save, gb / save, load, gb / load, t.raw, gb / t.raw, a.py_save_large,
          a.py_load_large);
      figures.emplace_back("dcp_save_large_seconds", save);
      figures.emplace_back("dcp_load_large_seconds", load);
      figures.emplace_back("raw_write_large_seconds", t.raw);
      // What the disk allows: Python DCP against a raw write of the same bytes.
      ratio("save_large_raw_vs_python_dcp", a.py_save_large, t.raw);
      ratio("save_large_vs_python_dcp", a.py_save_large, save);
      ratio("load_large_vs_python_dcp", a.py_load_large, load);
    }
    if (a.vs_small > 0) {
      const dcp::StateDict sd = python_small(a.vs_small);
      const NativeTimes t = native_save_load(sd, a.dir + "/vs_small", a, "small", false);
      const double save = t.save, load = t.load;
      std::printf(
          "small dict, %lld tensors (%.1f MB): dcp++ save %.3f s, load %.3f s; Python DCP 1.13 "
          "save %.3f s, load %.3f s\n",
          static_cast<long long>(a.vs_small), bytes_of(sd) / 1e6, save, load, a.py_save_small,
          a.py_load_small);
      figures.emplace_back("dcp_save_small_seconds", save);
      figures.emplace_back("dcp_load_small_seconds", load);
      ratio("save_small_vs_python_dcp", a.py_save_small, save);
      ratio("load_small_vs_python_dcp", a.py_load_small, load);
    }
  }
  for (const auto& [name, v] : figures) std::printf("%s=%.3f\n", name.c_str(), v);
  return 0;
}

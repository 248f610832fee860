// ckpt: look inside a checkpoint: dcp++'s, or PyTorch's (a DCP directory, a
// torch.save file, safetensors; docs/INTEROP.md).
//
//   ckpt show   DIR [--items]   what the checkpoint holds: keys, dtypes, shapes,
//                               chunks, bytes, files (--items: every item's place)
//   ckpt verify DIR [--threads N]
//                               read every item and check its checksum
//                               (exit 0: intact; 1: damaged, naming file and key);
//                               a CheckpointManager's checkpoint must also have a
//                               valid dcp_manager.record of its step
//   ckpt convert SRC DST --to dcp++|pytorch-dcp|torch|safetensors
//                [--only PREFIX]... [--dtype bf16|float16|float32|float64]
//                [--max-shard-size 5GB] [--pytorch-version 2|1.13]
//                [--optimizer-layout as-saved|pytorch] [--overwrite] [--no-sync]
//                               write the checkpoint in another format (dcp/convert.h,
//                               docs/INTEROP.md "ckpt convert")
//   ckpt ls RUN_DIR [--json] [--verify]
//                               a run directory's checkpoints, one row each (run_dir.cpp)
//   ckpt diff A B [--values] [--json]
//                               keys added, removed, changed (diff.cpp)
//   ckpt stats RUN_DIR [--json] what each save cost (stats.cpp)
//
// DIR is a checkpoint directory or file (or memory://, fs:// ids for tests). It is a
// CheckpointManager's when it holds a dcp_manager.record or is named like the
// manager's step directories (step_ and at least 10 digits).
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include <ATen/ATen.h>

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <set>

#include "dcp/dcp.h"
#include "dcp/manager/manager.h"
#include "run_dir.h"

namespace {

std::string shape(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

bool file_exists(const std::string& path) { return std::ifstream(path).good(); }

// DIR names a CheckpointManager's checkpoint: it has a record, or its name
// is the manager's step_<10+ digits>.
bool is_manager_checkpoint(std::string dir) {
  if (file_exists(dir + "/dcp_manager.record")) return true;
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  const std::string name = dir.substr(dir.rfind('/') == std::string::npos ? 0 : dir.rfind('/') + 1);
  return name.rfind("step_", 0) == 0 && name.size() >= 15 &&
         name.find_first_not_of("0123456789", 5) == std::string::npos;
}

std::string describe(const dcp::manager::CheckpointInfo& r) {
  std::string s = "step " + std::to_string(r.step) + ", world size " + std::to_string(r.world_size);
  for (const auto& [k, v] : r.metrics) s += ", " + k + " " + std::to_string(v);
  return s;
}

int show(const std::string& dir, bool items) {
  dcp::Metadata md = dcp::read_metadata(dir);
  std::map<std::string, uint64_t> per_file;
  for (const auto& [index, info] : md.storage_data) per_file[info.relative_path] += info.length;
  std::printf("checkpoint %s\n", dir.c_str());
  const std::string format = dcp::checkpoint_format(dir);
  if (format == "dcp++")
    std::printf("  format version %u, written by dcp++ %s from %d rank(s)\n", md.version,
                md.library_version.c_str(), md.world_size);
  else
    std::printf("  format: %s, from %d rank(s)\n", md.library_version.c_str(), md.world_size);
  if (md.storage_meta && !md.storage_meta->save_id.empty())
    std::printf("  saved to %s (save id %s)\n", md.storage_meta->checkpoint_id.c_str(),
                md.storage_meta->save_id.c_str());
  if (is_manager_checkpoint(dir)) {
    try {
      std::printf("  manager record: %s\n",
                  describe(dcp::manager::read_checkpoint_record(dir)).c_str());
    } catch (const dcp::Error& e) {
      std::printf("  manager record: %s\n", e.what());
    }
  }
  std::printf("  %zu keys, %zu items, %s in %zu data files\n", md.state_dict_metadata.size(),
              md.storage_data.size(), ckpt::human_bytes(md.total_bytes()).c_str(), per_file.size());
  std::printf("\n%-48s %-10s %-20s %s\n", "key", "dtype", "shape", "chunks");
  for (const auto& [key, entry] : md.state_dict_metadata) {
    if (const auto* t = std::get_if<dcp::TensorStorageMetadata>(&entry))
      std::printf("%-48s %-10s %-20s %zu\n", key.c_str(), dcp::dtype_name(t->properties.dtype),
                  shape(t->size).c_str(), t->chunks.size());
    else
      std::printf("%-48s %-10s\n", key.c_str(), "bytes");
  }
  std::printf("\n%-32s %s\n", "file", "bytes");
  for (const auto& [file, bytes] : per_file)
    std::printf("%-32s %s\n", file.c_str(), ckpt::human_bytes(bytes).c_str());
  if (items) {
    std::printf("\n%-48s %-24s %-12s %-12s %s\n", "item", "file", "offset", "length", "checksum");
    for (const auto& [index, info] : md.storage_data)
      std::printf("%-48s %-24s %-12llu %-12llu %016llx\n", dcp::to_string(index).c_str(),
                  info.relative_path.c_str(), static_cast<unsigned long long>(info.offset),
                  static_cast<unsigned long long>(info.length),
                  static_cast<unsigned long long>(info.checksum));
  }
  return 0;
}

int verify(const std::string& dir, int threads) {
  const auto t0 = std::chrono::steady_clock::now();
  // A manager's checkpoint is committed only with a valid record of its step.
  std::string record;
  if (is_manager_checkpoint(dir))
    record = "; manager record: " + describe(dcp::manager::read_checkpoint_record(dir));
  dcp::Metadata md = dcp::read_metadata(dir);
  dcp::FileSystemReaderOptions ro;
  ro.threads = threads;
  ro.verify_checksums = true;
  dcp::LoadOptions lo;
  lo.storage_reader = dir.rfind("memory://", 0) == 0 ? dcp::make_memory_reader(dir, ro)
                                                     : dcp::make_filesystem_reader(dir, ro);
  auto planner = std::make_shared<ckpt::VerifyPlanner>(lo.storage_reader);
  lo.planner = planner;
  planner->show_progress(md.total_bytes());
  dcp::StateDict none;
  try {
    dcp::load(none, lo);
  } catch (...) {
    planner->end_progress();
    throw;
  }
  planner->end_progress();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::string format = dcp::checkpoint_format(dir);
  std::string note;
  if (format == "dcp++") {
    std::size_t unchecked = 0;
    for (const auto& [index, info] : md.storage_data)
      unchecked += info.checksum_type == dcp::ChecksumType::kNone;
    if (unchecked) note = " (" + std::to_string(unchecked) + " items have no checksum)";
  } else if (format == "safetensors") {
    note = " (" + format + ": no checksums in the format; its structure was checked)";
  } else {
    std::size_t with_xxh3 = 0;  // a PyTorch DCP checkpoint dcp++ wrote: its sidecar's checksums
    for (const auto& [index, info] : md.storage_data)
      with_xxh3 += info.checksum_type == dcp::ChecksumType::kXXH3_64;
    note = with_xxh3 ? " (" + format +
                           " written by dcp++: every item's XXH3-64 checksum from .metadata.dcp "
                           "was checked)"
                     : " (" + format + ": the CRC-32 of every zip record was checked)";
  }
  std::printf("%s: intact: %zu items, %s read in %.2f s%s%s\n", dir.c_str(),
              md.storage_data.size() - planner->unreadable().size(),
              ckpt::human_bytes(md.total_bytes()).c_str(), secs, note.c_str(), record.c_str());
  for (const auto& [key, why] : planner->unreadable())
    std::printf("  not read: '%s': %s\n", key.c_str(), why.c_str());
  return 0;
}

struct ConvertArgs {
  std::string src, dst, to, dtype, max_shard, pytorch_version = "2", optimizer_layout = "as-saved";
  std::vector<std::string> only;
  bool overwrite = false, no_sync = false;
  int threads = 2;
};

int convert(const ConvertArgs& a) {
  dcp::ConvertOptions o;
  o.to = dcp::convert_format_from_name(a.to);
  o.only = a.only;
  if (!a.dtype.empty()) o.dtype = dcp::parse_float_dtype(a.dtype);
  if (!a.max_shard.empty()) o.max_shard_bytes = dcp::parse_byte_size(a.max_shard);
  o.pytorch_version = a.pytorch_version;
  if (a.optimizer_layout == "pytorch")
    o.optimizer_layout = dcp::ConvertOptimizerLayout::kPyTorch;
  else if (a.optimizer_layout != "as-saved")
    throw dcp::InvalidArgumentError("--optimizer-layout is 'as-saved' or 'pytorch', not '" +
                                    a.optimizer_layout + "'");
  o.overwrite = a.overwrite;
  o.sync = !a.no_sync;
  o.threads = a.threads;
  // A progress line on a terminal: bytes written of all, and the rate.
  const bool tty = isatty(STDERR_FILENO) == 1;
  bool shown = false;
  if (tty)
    o.progress = [&](const dcp::ConvertProgress& p) {
      if (p.seconds < 1 && !shown) return;  // short conversions show nothing
      const double pct = p.bytes_total ? 100.0 * p.bytes_done / p.bytes_total : 100.0;
      std::fprintf(
          stderr, "\rckpt convert: %s of %s (%.0f%%), %s/s\x1b[K",
          ckpt::human_bytes(p.bytes_done).c_str(), ckpt::human_bytes(p.bytes_total).c_str(), pct,
          ckpt::human_bytes(static_cast<uint64_t>(p.bytes_done / std::max(p.seconds, 1e-9)))
              .c_str());
      shown = true;
    };
  const std::string from = dcp::checkpoint_format(a.src);
  dcp::ConvertResult r;
  try {
    r = dcp::convert(a.src, a.dst, o);
  } catch (...) {
    if (shown) std::fprintf(stderr, "\n");
    throw;
  }
  if (shown) std::fprintf(stderr, "\n");
  std::printf(
      "%s (%s) -> %s (%s): %zu tensors, %zu values, %s in %.2f s (%s/s)\n", a.src.c_str(),
      from.c_str(), a.dst.c_str(), a.to.c_str(), r.tensors, r.values,
      ckpt::human_bytes(r.bytes).c_str(), r.seconds,
      ckpt::human_bytes(static_cast<uint64_t>(r.bytes / std::max(r.seconds, 1e-9))).c_str());
  if (r.converted) std::printf("  %zu tensors converted to %s\n", r.converted, a.dtype.c_str());
  for (const auto& f : r.files) std::printf("  wrote %s\n", f.c_str());
  for (const auto& s : r.skipped) std::printf("  left out %s\n", s.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "ckpt: look inside a checkpoint (dcp++, PyTorch DCP, torch.save, safetensors), "
      "or convert it",
      "ckpt"};
  app.require_subcommand(1);
  std::string dir;
  bool items = false;
  int threads = 2;
  auto* show_cmd = app.add_subcommand("show", "print what a checkpoint holds");
  show_cmd
      ->add_option("dir", dir,
                   "checkpoint: a directory (dcp++, PyTorch DCP, Hugging Face) or a "
                   ".pt/.pth/.safetensors file")
      ->required();
  show_cmd->add_flag("--items", items, "also list every item's file, offset, length and checksum");
  auto* verify_cmd = app.add_subcommand("verify", "read every item and check its checksum");
  verify_cmd
      ->add_option("dir", dir,
                   "checkpoint: a directory (dcp++, PyTorch DCP, Hugging Face) or a "
                   ".pt/.pth/.safetensors file")
      ->required();
  verify_cmd->add_option("--threads", threads, "reader threads")->check(CLI::Range(1, 256));
  ConvertArgs ca;
  auto* convert_cmd = app.add_subcommand(
      "convert", "write a checkpoint in another format (dcp++, pytorch-dcp, torch, safetensors)");
  convert_cmd
      ->add_option("src", ca.src,
                   "checkpoint: a directory (dcp++, PyTorch DCP, Hugging Face) or a "
                   ".pt/.pth/.safetensors file")
      ->required();
  convert_cmd
      ->add_option(
          "dst", ca.dst,
          "where to write: a directory (dcp++, pytorch-dcp, safetensors) or a file (torch)")
      ->required();
  convert_cmd->add_option("--to", ca.to, "target format: dcp++, pytorch-dcp, torch, safetensors")
      ->required();
  convert_cmd->add_option("--only", ca.only,
                          "convert only these keys or key prefixes (\"model\" or \"model.\"); "
                          "repeatable");
  convert_cmd->add_option("--dtype", ca.dtype,
                          "convert floating tensors to this dtype (bf16, float16, float32, "
                          "float64); other tensors are kept as they are");
  convert_cmd->add_option("--max-shard-size", ca.max_shard,
                          "safetensors: split into files of at most this size (5GB, 500MB, 2GiB)");
  convert_cmd->add_option("--pytorch-version", ca.pytorch_version,
                          "pytorch-dcp: the PyTorch DCP flavour, 2 (default) or 1.13");
  convert_cmd->add_option("--optimizer-layout", ca.optimizer_layout,
                          "as-saved (default), or pytorch: optimizer state in dcp++'s layout comes "
                          "out as Python's optimizer.state_dict()");
  convert_cmd->add_flag("--overwrite", ca.overwrite, "replace DST when it exists");
  convert_cmd->add_flag("--no-sync", ca.no_sync, "do not fsync what is written");
  convert_cmd->add_option("--threads", ca.threads, "reader (and dcp++ writer) threads")
      ->check(CLI::Range(1, 256));
  ckpt::LsArgs ls_args;
  auto* ls_cmd = ckpt::add_ls(app, ls_args);
  ckpt::DiffArgs diff_args;
  auto* diff_cmd = ckpt::add_diff(app, diff_args);
  ckpt::StatsArgs stats_args;
  auto* stats_cmd = ckpt::add_stats(app, stats_args);
  // --help: the usage on stdout, exit 0 (CLI11). A bad command line: the
  // error, then the usage of the (sub)command it was for, exit 2.
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    const CLI::App* where = &app;
    for (const CLI::App* sub = &app; !sub->get_subcommands().empty();)
      where = sub = sub->get_subcommands().back();
    // CLI11 checks what is required before what is unknown: name the unknown first.
    std::string what = e.what();
    const std::vector<std::string> extra = where->remaining();
    if (!extra.empty()) {
      what = "unknown option or argument:";
      for (const auto& x : extra) what += " " + x;
    }
    std::fprintf(stderr, "ckpt: %s\n\n%s", what.c_str(),
                 (where == &app ? app.help() : where->help("ckpt")).c_str());
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  dcp::logger().set_level(spdlog::level::warn);
  try {
    if (*show_cmd) return show(dir, items);
    if (*convert_cmd) return convert(ca);
    if (*ls_cmd) return ckpt::run_ls(ls_args);
    if (*diff_cmd) return ckpt::run_diff(diff_args);
    if (*stats_cmd) return ckpt::run_stats(stats_args);
    return verify(dir, threads);
  } catch (const dcp::Error& e) {
    std::fprintf(stderr, "ckpt: %s\n", e.what());
    return 1;
  }
}
